"""NumPy's functions of complex arrays: np.real, np.imag, np.conj, np.abs, np.angle.

Each replaces the table entry of the real-valued implementation and hands real operands
back to it, so only complex operands take the paths here. Arithmetic, comparisons for
equality, sums and products of complex arrays need nothing here: NumPy's promotion
(numpy_api) gives them complex operands and the primitives accept them
(jitgrad.primitives.complex_numbers).
"""
from __future__ import annotations

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import DTypeError
from jitgrad.ir import Value
from jitgrad.primitives import complex_numbers as C
from jitgrad.primitives.sorting import argsort as argsort_last, take_along_last
from . import numpy_api as api
from . import numpy_sorting as sorting
from .numpy_linalg import COMPLEX_FUNCTIONS as LINALG_COMPLEX_FUNCTIONS


def _complex_value(x) -> Value | None:
    """`x` as an IR value when it is complex (a traced value or a constant), else None."""
    if isinstance(x, Value):
        return x if x.type.dtype.is_complex else None
    if np.iscomplexobj(x):
        return api.as_value(x)
    return None


def _on_complex(complex_impl, real_impl):
    def impl(x, *args, **kwargs):
        z = _complex_value(x)
        return complex_impl(z, *args, **kwargs) if z is not None else real_impl(x, *args, **kwargs)
    return impl


def _absolute(z):
    """|z| = hypot(re, im), as NumPy's npy_cabs."""
    return P.hypot(C.real(z), C.imag(z))


def _angle(z, deg=False):
    """arctan2(im, re), as NumPy's np.angle; in degrees with deg=True."""
    result = P.arctan2(C.imag(z), C.real(z))
    return api.UFUNCS[np.multiply](result, 180 / np.pi) if deg else result


def _reciprocal(z):
    """NumPy's complex reciprocal loop: 1 / z scaled by the larger part of z."""
    re, im = C.real(z), C.imag(z)
    one = P.full(1, re.type)
    first = P.le(P.absolute(im), P.absolute(re))
    r1 = P.div(im, re)
    d1 = P.add(re, P.mul(im, r1))
    r2 = P.div(re, im)
    d2 = P.add(P.mul(re, r2), im)
    out_re = P.select(first, P.div(one, d1), P.div(r2, d2))
    out_im = P.select(first, P.neg(P.div(r1, d1)), P.neg(P.div(one, d2)))
    return C.make_complex(out_re, out_im)


def _either_part(test):
    def impl(z):
        return P.logical_or(test(C.real(z)), test(C.imag(z)))
    return impl


def _is_nan(x):
    return P.ne(x, x)


def _is_inf(x):
    return P.eq(P.absolute(x), P.full(np.inf, x.type))


def _isfinite(z):
    return P.logical_not(P.logical_or(_either_part(_is_nan)(z), _either_part(_is_inf)(z)))


def _per_part(real_impl):
    """A function NumPy applies to each part (rint, round)."""
    def impl(z, *args, **kwargs):
        return C.make_complex(api.as_value(real_impl(C.real(z), *args, **kwargs)),
                              api.as_value(real_impl(C.imag(z), *args, **kwargs)))
    return impl


def _sort_keys(z: Value) -> list[Value]:
    """Float keys whose lexicographic order is NumPy's order of complex numbers: finite
    and infinite values by (re, im), then those with only a NaN imaginary part (by re),
    then only a NaN real part (by im), then both NaN."""
    re, im = C.real(z), C.imag(z)
    zero = P.full(0, re.type)
    re_nan, im_nan = P.ne(re, re), P.ne(im, im)
    category = P.add(P.convert(re_nan, re.type.dtype), P.add(P.convert(re_nan, re.type.dtype),
                                                                P.convert(im_nan, re.type.dtype)))
    second = P.select(re_nan, P.select(im_nan, zero, im), re)
    third = P.select(P.logical_or(re_nan, im_nan), zero, im)
    return [category, second, third]


def _argsort_last(z: Value) -> Value:
    """The stable lexicographic permutation along the last axis: stable argsorts from the
    least significant key to the most, each applied to the permutation so far."""
    order = None
    for key in reversed(_sort_keys(z)):
        if order is not None:
            key = take_along_last(key, order)
        step = argsort_last(key)
        order = step if order is None else take_along_last(order, step)
    return order


def _sort_last(z: Value) -> Value:
    order = _argsort_last(z)
    return C.make_complex(take_along_last(C.real(z), order), take_along_last(C.imag(z), order))


def _sort(a, axis=-1, kind=None, order=None, *, stable=None):
    sorting._check_sort_args("sort", kind, order, stable)
    return sorting._along(_sort_last, a, axis, "sort")


def _argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    sorting._check_sort_args("argsort", kind, order, stable)
    return sorting._along(_argsort_last, a, axis, "argsort")


def _vdot(a, b):
    """np.vdot conjugates its first argument (a complex one) and flattens both."""
    a, b = api.as_value(a), api.as_value(b)
    return api.FUNCTIONS[np.dot](P.reshape(C.conj(a), (a.type.size,)), P.reshape(b, (b.type.size,)))


def _type_test(answer):
    def impl(x):
        return answer(_complex_value(x) is not None)
    return impl


_REPLACED_UFUNCS = {
    np.conjugate: C.conj, np.absolute: _absolute, np.reciprocal: _reciprocal,
    np.isnan: _either_part(_is_nan), np.isinf: _either_part(_is_inf), np.isfinite: _isfinite,
}
_REPLACED_FUNCTIONS = {
    np.real: C.real, np.imag: C.imag, np.angle: _angle,
    np.sort: _sort, np.argsort: _argsort, np.vdot: _vdot,
    np.iscomplex: lambda z: P.ne(C.imag(z), P.full(0, C.imag(z).type)),
    np.isreal: lambda z: P.eq(C.imag(z), P.full(0, C.imag(z).type)),
}
_PER_PART = (np.rint,)
_PER_PART_FUNCTIONS = (np.round, np.around)

for _ufunc, _impl in _REPLACED_UFUNCS.items():
    api.UFUNCS[_ufunc] = _on_complex(_impl, api.UFUNCS[_ufunc])
for _ufunc in _PER_PART:
    api.UFUNCS[_ufunc] = _on_complex(_per_part(api.UFUNCS[_ufunc]), api.UFUNCS[_ufunc])
for _function, _impl in _REPLACED_FUNCTIONS.items():
    api.FUNCTIONS[_function] = _on_complex(_impl, api.FUNCTIONS[_function])
for _function in _PER_PART_FUNCTIONS:
    if _function in api.FUNCTIONS:
        api.FUNCTIONS[_function] = _on_complex(_per_part(api.FUNCTIONS[_function]), api.FUNCTIONS[_function])
api.FUNCTIONS[np.iscomplexobj] = _type_test(lambda is_complex: is_complex)
api.FUNCTIONS[np.isrealobj] = _type_test(lambda is_complex: not is_complex)


# --------------------------------------------------------------------------- the reach of complex support

COMPLEX_UFUNCS = frozenset({
    np.add, np.subtract, np.multiply, np.true_divide, np.negative, np.positive, np.equal, np.not_equal,
    np.conjugate, np.absolute, np.reciprocal, np.square, np.power, np.matmul, np.isnan, np.isinf, np.isfinite,
    np.rint, np.exp, np.log, np.sqrt, np.exp2, np.expm1, np.log2, np.log10, np.log1p, np.sign,
    np.sin, np.cos, np.tan, np.sinh, np.cosh, np.tanh, np.arcsin, np.arccos, np.arctan, np.arcsinh, np.arccosh,
    np.arctanh, np.less, np.less_equal, np.greater, np.greater_equal, np.maximum, np.minimum, np.fmax, np.fmin,
})
"""The ufuncs checked against NumPy on complex operands (tests/test_complex.py); the
others refuse complex operands (`_refusing_complex`)."""

COMPLEX_FUNCTIONS = frozenset({
    np.real, np.imag, np.angle, np.conj, np.iscomplex, np.isreal, np.iscomplexobj, np.isrealobj, np.round,
    np.around, np.sum, np.mean, np.prod, np.dot, np.matmul, np.reshape, np.transpose, np.swapaxes, np.moveaxis,
    np.expand_dims, np.squeeze, np.ravel, np.broadcast_to, np.concatenate, np.stack, np.hstack, np.vstack,
    np.where, np.zeros_like, np.ones_like, np.copy, np.asarray, np.array, np.flip, np.shape, np.ndim, np.size,
    np.result_type, np.append, np.atleast_1d, np.atleast_2d, np.atleast_3d, np.column_stack, np.dstack,
    np.max, np.min, np.amax, np.amin, np.argmax, np.argmin, np.sort, np.argsort, np.cumsum, np.cumprod, np.take,
    np.take_along_axis, np.vdot, np.inner, np.outer, np.kron, np.tensordot, np.einsum,
    np.nansum, np.nanprod, np.nanmean, np.nancumsum, np.nancumprod, np.var, np.std, np.ptp,
})
"""The NumPy functions checked against NumPy on complex arrays; the others refuse them."""


def _holds_complex(x) -> bool:
    if isinstance(x, Value):
        return x.type.dtype.is_complex
    if isinstance(x, (list, tuple)):
        return any(_holds_complex(item) for item in x)
    if hasattr(x, "value") and isinstance(getattr(x, "value"), Value):      # a Tracer
        return x.value.type.dtype.is_complex
    return isinstance(x, (complex, np.complexfloating)) or (isinstance(x, np.ndarray) and x.dtype.kind == "c")


def _names_complex(dtype) -> bool:
    try:
        return dtype is not None and np.dtype(dtype).kind == "c"
    except TypeError:
        return False


def _refusing_complex(name: str, impl):
    """`impl`, raising a DTypeError when an operand is complex: the real implementations
    of NumPy functions branch on "float or not", and a complex array would take the
    integer branch and give a wrong number."""
    def checked(*args, **kwargs):
        if _holds_complex(args) or _holds_complex(tuple(kwargs.values())) or _names_complex(kwargs.get("dtype")):
            raise DTypeError(f"numpy.{name} of complex numbers is not supported by jitgrad yet")
        return impl(*args, **kwargs)
    checked.__wrapped__ = impl
    checked.__name__ = getattr(impl, "__name__", name)
    return checked


for _ufunc in list(api.UFUNCS):
    if _ufunc not in COMPLEX_UFUNCS:
        api.UFUNCS[_ufunc] = _refusing_complex(_ufunc.__name__, api.UFUNCS[_ufunc])
for _function in list(api.FUNCTIONS):
    if _function not in COMPLEX_FUNCTIONS and _function not in LINALG_COMPLEX_FUNCTIONS:
        api.FUNCTIONS[_function] = _refusing_complex(getattr(_function, "__name__", str(_function)),
                                                     api.FUNCTIONS[_function])
