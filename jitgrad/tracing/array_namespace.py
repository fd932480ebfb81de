"""The Python Array API standard (2023.12) namespace of traced arrays.

`Tracer.__array_namespace__()` returns this module, so library code written against the
standard (SciPy's `scipy.special.logsumexp`/`softmax`/`log_softmax` under
`SCIPY_ARRAY_API=1`, scikit-learn's array-API paths) runs on traced values and compiles.
Every function is NumPy's own: NumPy 2's main namespace follows the standard, and on a
traced array each call dispatches through NumPy's protocols (`__array_ufunc__`,
`__array_function__`) to jitgrad's implementation, so values, dtypes and errors are those
of `jitgrad` on the NumPy function. Only where the standard's signature differs from
NumPy's (keyword names, `device=`, `copy=`, `descending=`, `correction=`) is there a
wrapper here. On NumPy arrays the functions compute with NumPy, so one code path serves
both. The module imports nothing of the tracer: it works through the NumPy protocols.
"""
from __future__ import annotations

import builtins
import sys

import numpy as np

__array_api_version__ = "2023.12"
SUPPORTED_VERSIONS = ("2021.12", "2022.12", "2023.12")
"""The standard's versions whose names and semantics this namespace provides."""

DEVICE = "cpu"
"""The one device: compiled code runs on the host."""

# --------------------------------------------------------------------------- constants and dtypes

e, inf, nan, pi, newaxis = np.e, np.inf, np.nan, np.pi, None
bool = np.bool_  # noqa: A001 - the standard's name
int8, int16, int32, int64 = np.int8, np.int16, np.int32, np.int64
uint8, uint16, uint32, uint64 = np.uint8, np.uint16, np.uint32, np.uint64
float32, float64 = np.float32, np.float64
complex64, complex128 = np.complex64, np.complex128

# --------------------------------------------------------------------------- element-wise (NumPy's ufuncs)

abs = np.abs  # noqa: A001
acos, acosh, asin, asinh, atan, atan2, atanh = np.acos, np.acosh, np.asin, np.asinh, np.atan, np.atan2, np.atanh
add, subtract, multiply, divide, pow = np.add, np.subtract, np.multiply, np.divide, np.pow  # noqa: A001
bitwise_and, bitwise_or, bitwise_xor, bitwise_invert = np.bitwise_and, np.bitwise_or, np.bitwise_xor, np.invert
bitwise_left_shift, bitwise_right_shift = np.left_shift, np.right_shift
ceil, floor, trunc, round = np.ceil, np.floor, np.trunc, np.round  # noqa: A001
clip, conj, copysign, real, imag = np.clip, np.conj, np.copysign, np.real, np.imag
cos, cosh, sin, sinh, tan, tanh = np.cos, np.cosh, np.sin, np.sinh, np.tan, np.tanh
exp, expm1, log, log1p, log2, log10, logaddexp = np.exp, np.expm1, np.log, np.log1p, np.log2, np.log10, np.logaddexp
equal, not_equal, less, less_equal, greater, greater_equal = (np.equal, np.not_equal, np.less, np.less_equal,
                                                              np.greater, np.greater_equal)
floor_divide, remainder, hypot, maximum, minimum = np.floor_divide, np.remainder, np.hypot, np.maximum, np.minimum
isfinite, isinf, isnan, signbit, sign = np.isfinite, np.isinf, np.isnan, np.signbit, np.sign
logical_and, logical_or, logical_xor, logical_not = np.logical_and, np.logical_or, np.logical_xor, np.logical_not
negative, positive, square, sqrt, reciprocal, nextafter = (np.negative, np.positive, np.square, np.sqrt,
                                                           np.reciprocal, np.nextafter)

# --------------------------------------------------------------------------- functions with NumPy's signature

take, take_along_axis = np.take, np.take_along_axis
matmul, matrix_transpose, tensordot, vecdot = np.matmul, np.matrix_transpose, np.tensordot, np.vecdot
broadcast_to, concat, expand_dims, flip = np.broadcast_to, np.concat, np.expand_dims, np.flip
moveaxis, permute_dims, repeat, roll, squeeze, stack, tile, unstack = (np.moveaxis, np.permute_dims, np.repeat,
                                                                       np.roll, np.squeeze, np.stack, np.tile,
                                                                       np.unstack)
argmax, argmin, count_nonzero, nonzero, searchsorted, where = (np.argmax, np.argmin, np.count_nonzero, np.nonzero,
                                                               np.searchsorted, np.where)
unique_all, unique_counts, unique_inverse, unique_values = (np.unique_all, np.unique_counts, np.unique_inverse,
                                                            np.unique_values)
cumulative_sum, cumulative_prod, diff = np.cumulative_sum, np.cumulative_prod, np.diff
max, min, mean, prod, sum = np.max, np.min, np.mean, np.prod, np.sum  # noqa: A001
all, any = np.all, np.any  # noqa: A001
tril, triu, isdtype, from_dlpack = np.tril, np.triu, np.isdtype, np.from_dlpack


# --------------------------------------------------------------------------- where the standard differs

def meshgrid(*arrays, indexing="xy"):
    """A list (the standard's type; NumPy returns a tuple)."""
    return list(np.meshgrid(*arrays, indexing=indexing))


def broadcast_arrays(*arrays):
    return list(np.broadcast_arrays(*arrays))


def _check_device(device) -> None:
    if device is not None and device != DEVICE:
        raise ValueError(f"jitgrad's array namespace has one device, {DEVICE!r}; got {device!r}")


def _is_constant(x) -> builtins.bool:
    return isinstance(x, (np.ndarray, np.generic, builtins.bool, int, float, complex))


def _holds_traced(obj) -> builtins.bool:
    if isinstance(obj, (list, tuple)):
        return builtins.any(_holds_traced(item) for item in obj)
    return not _is_constant(obj)


def asarray(obj, /, *, dtype=None, device=None, copy=None):
    """An array for `obj`; a traced array stays traced (arrays are immutable while traced,
    so `copy=` changes nothing), and a list holding traced values is stacked."""
    _check_device(device)
    if isinstance(obj, (list, tuple)) and _holds_traced(obj):
        result = np.stack([asarray(item) for item in obj])
        return result if dtype is None else np.astype(result, dtype)
    if not _is_constant(obj) and not isinstance(obj, (list, tuple)):
        return obj if dtype is None or obj.dtype == np.dtype(dtype) else np.astype(obj, dtype)
    return np.asarray(obj, dtype=dtype, copy=copy)


def astype(x, dtype, /, *, copy=True, device=None):
    _check_device(device)
    return np.astype(x, dtype, copy=copy) if _is_constant(x) else np.astype(x, dtype)


def reshape(x, /, shape, *, copy=None):
    if copy is False and not _is_constant(x):
        return np.reshape(x, shape)
    return np.reshape(x, shape, copy=copy) if _is_constant(x) else np.reshape(x, shape)


def std(x, /, *, axis=None, correction=0.0, keepdims=False):
    return np.std(x, axis=axis, ddof=correction, keepdims=keepdims)


def var(x, /, *, axis=None, correction=0.0, keepdims=False):
    return np.var(x, axis=axis, ddof=correction, keepdims=keepdims)


def sort(x, /, *, axis=-1, descending=False, stable=True):
    if not descending:
        return np.sort(x, axis=axis, stable=stable or None)
    return np.flip(np.sort(np.flip(x, axis=axis), axis=axis, stable=True), axis=axis)


def argsort(x, /, *, axis=-1, descending=False, stable=True):
    """Indices that sort `x`; descending keeps equal elements in their original order
    (n - 1 - the reversed ascending order of the reversed array)."""
    if not descending:
        return np.argsort(x, axis=axis, stable=stable or None)
    n = np.shape(x)[axis]
    return (n - 1) - np.flip(np.argsort(np.flip(x, axis=axis), axis=axis, stable=True), axis=axis)


def arange(start, /, stop=None, step=1, *, dtype=None, device=None):
    _check_device(device)
    return np.arange(start, stop, step, dtype=dtype)


def empty(shape, *, dtype=None, device=None):
    _check_device(device)
    return np.empty(shape, dtype=dtype)


def zeros(shape, *, dtype=None, device=None):
    _check_device(device)
    return np.zeros(shape, dtype=dtype)


def ones(shape, *, dtype=None, device=None):
    _check_device(device)
    return np.ones(shape, dtype=dtype)


def eye(n_rows, n_cols=None, /, *, k=0, dtype=None, device=None):
    _check_device(device)
    return np.eye(n_rows, n_cols, k=k, dtype=dtype)


def full(shape, fill_value, *, dtype=None, device=None):
    """A constant array, or for a traced fill value its broadcast (NumPy's np.full cannot
    take a traced value: it converts it with np.array before any dispatch)."""
    _check_device(device)
    if _is_constant(fill_value):
        return np.full(shape, fill_value, dtype=dtype)
    return np.broadcast_to(asarray(fill_value, dtype=dtype), (shape,) if isinstance(shape, int) else tuple(shape))


def linspace(start, stop, /, num, *, dtype=None, device=None, endpoint=True):
    _check_device(device)
    return np.linspace(start, stop, num, dtype=dtype, endpoint=endpoint)


def empty_like(x, /, *, dtype=None, device=None):
    _check_device(device)
    return np.zeros_like(x, dtype=dtype) if not _is_constant(x) else np.empty_like(x, dtype=dtype)


def zeros_like(x, /, *, dtype=None, device=None):
    _check_device(device)
    return np.zeros_like(x, dtype=dtype)


def ones_like(x, /, *, dtype=None, device=None):
    _check_device(device)
    return np.ones_like(x, dtype=dtype)


def full_like(x, /, fill_value, *, dtype=None, device=None):
    _check_device(device)
    return np.full_like(x, fill_value, dtype=dtype)


def _dtype_of(x):
    return x.dtype if hasattr(x, "dtype") and not isinstance(x, type) else x


def finfo(type, /):  # noqa: A002 - the standard's parameter name
    return np.finfo(_dtype_of(type))


def iinfo(type, /):  # noqa: A002
    return np.iinfo(_dtype_of(type))


def result_type(*arrays_and_dtypes):
    return np.result_type(*(x if isinstance(x, (builtins.bool, int, float, complex)) else _dtype_of(x)
                            for x in arrays_and_dtypes))


def can_cast(from_, to, /):
    return np.can_cast(_dtype_of(from_), to)


# --------------------------------------------------------------------------- inspection

class _Info:
    """`__array_namespace_info__()`: what this namespace supports."""

    def capabilities(self) -> dict:
        # boolean-mask indexing and unique/nonzero have data-dependent result shapes,
        # which compiled code (static shapes) cannot produce
        return {"boolean indexing": False, "data-dependent shapes": False, "max dimensions": 64}

    def default_device(self):
        return DEVICE

    def devices(self) -> list:
        return [DEVICE]

    def default_dtypes(self, *, device=None) -> dict:
        _check_device(device)
        return {"real floating": np.dtype(np.float64), "complex floating": np.dtype(np.complex128),
                "integral": np.dtype(np.int64), "indexing": np.dtype(np.int64)}

    def dtypes(self, *, device=None, kind=None) -> dict:
        _check_device(device)
        names = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32",
                 "float64"]
        table = {name: np.dtype(name) for name in names}
        if kind is None:
            return table
        return {name: d for name, d in table.items() if np.isdtype(d, kind)}


def __array_namespace_info__() -> _Info:
    return _Info()


STANDARD_NAMES = tuple("""
    e inf nan newaxis pi bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64 complex64
    complex128 abs acos acosh add asin asinh atan atan2 atanh bitwise_and bitwise_left_shift bitwise_invert
    bitwise_or bitwise_right_shift bitwise_xor ceil clip conj copysign cos cosh divide equal exp expm1 floor
    floor_divide greater greater_equal hypot imag isfinite isinf isnan less less_equal log log1p log2 log10
    logaddexp logical_and logical_not logical_or logical_xor maximum minimum multiply negative not_equal
    positive pow real remainder round sign signbit sin sinh square sqrt subtract tan tanh trunc take matmul
    matrix_transpose tensordot vecdot broadcast_arrays broadcast_to concat expand_dims flip moveaxis
    permute_dims repeat reshape roll squeeze stack tile unstack argmax argmin nonzero searchsorted where
    unique_all unique_counts unique_inverse unique_values argsort sort cumulative_sum max mean min prod std sum
    var all any arange asarray empty empty_like eye from_dlpack full full_like linspace meshgrid ones ones_like
    tril triu zeros zeros_like astype can_cast finfo iinfo isdtype result_type __array_namespace_info__
""".split())
"""Every name of the 2023.12 standard."""

__all__ = [*STANDARD_NAMES, "__array_api_version__", "take_along_axis", "count_nonzero", "cumulative_prod",
           "diff", "nextafter", "reciprocal"]


def namespace_for(api_version: str | None):
    """This module, for a version of the standard it provides (`Tracer.__array_namespace__`)."""
    if api_version is not None and api_version not in SUPPORTED_VERSIONS:
        raise ValueError(f"jitgrad's array namespace provides the Array API standard "
                         f"{', '.join(SUPPORTED_VERSIONS)}; {api_version!r} was requested")
    return sys.modules[__name__]
