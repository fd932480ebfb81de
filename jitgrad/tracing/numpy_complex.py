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
from jitgrad.errors import DTypeError, UnsupportedOperationError
from jitgrad.ir import DType, Value
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


# --------------------------------------------------------------------------- functions built on the ones above

def _correlate(a, v, mode="valid"):
    """NumPy's correlate conjugates its second operand: sum_j a[k + j] conj(v[j])."""
    v = api.as_value(v)
    return _REAL_CORRELATE(a, C.conj(v) if v.type.dtype.is_complex else v, mode)


def _either_complex(complex_impl, real_impl):
    """`complex_impl` when any of the first two operands is complex."""
    def impl(a, b, *args, **kwargs):
        if _complex_value(a) is not None or _complex_value(b) is not None:
            return complex_impl(a, b, *args, **kwargs)
        return real_impl(a, b, *args, **kwargs)
    return impl


def _float_power(x, y):
    """NumPy's float_power of complex operands is their power computed in complex128."""
    def as_c128(operand):
        if isinstance(operand, (int, float, complex)):
            return complex(operand)
        return api.as_value(operand, DType.c128)
    return api.UFUNCS[np.power](as_c128(x), as_c128(y))


def _nan_extremum(name, reduce):
    """NumPy's nanmax/nanmin of complex numbers, an fmax/fmin reduction: the lexicographic
    extremum of the elements without a NaN part, or, where every element has one, the
    first element (fmax keeps its first operand when both hold a NaN)."""
    def extremum(z, axis=None, out=None, keepdims=False, initial=None, where=None):
        if out is not None or initial is not None or where is not None:
            raise UnsupportedOperationError(f"numpy.{name} of complex numbers: out=, initial= and where= are "
                                            "not supported")
        if z.type.ndim == 0:
            raise DTypeError(f"numpy.{name} of a zero-dimensional complex value: NumPy's answer for an all-NaN "
                             "value depends on whether it is a NumPy scalar (nan+0j) or a 0-d array (the value "
                             "itself), which tracing cannot tell apart; apply it to an array of one or more "
                             "dimensions")
        rows, kept_shape, axes = sorting._reduced_last(z, axis, name)
        if rows.type.shape[-1] == 0:
            raise ValueError(f"zero-size array to reduction operation {name[3:]}imum which has no identity")
        nan = P.ne(rows, rows)
        present = api.where(nan, P.full(complex(np.inf, np.inf) if name == "nanmin" else
                                        complex(-np.inf, -np.inf), rows.type), rows)
        result = reduce(present, axis=-1)
        all_nan = api.as_value(api.FUNCTIONS[np.all](nan, axis=-1))
        result = P.select(all_nan, api.getitem(rows, (Ellipsis, 0)), result)
        return sorting._keepdims(result, z.type.shape, axes, keepdims)
    return extremum


def _nanvar(z, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None, mean=None,
            correction=None):
    """NumPy's nanvar of complex numbers: the NaN-free elements' mean (their sum divided by
    their count as a complex division), then the sum of re² + im² of the deviations
    (the real part of d · conj(d)), divided by count − ddof; NaN where that is ≤ 0."""
    if out is not None or where is not None or mean is not None or correction is not None:
        raise UnsupportedOperationError("numpy.nanvar of complex numbers: out=, where=, mean= and correction= are "
                                        "not supported; use ddof= and np.where")
    if dtype is not None:
        if np.dtype(dtype).kind != "c":
            raise DTypeError(f"numpy.nanvar of complex numbers with dtype={np.dtype(dtype)}: NumPy discards the "
                             "imaginary part there; pass np.real(a) instead")
        z = api.as_value(z, DType.from_numpy(np.dtype(dtype)))
    axes = api.normalize_axes(axis, z.type.ndim)
    present = P.logical_not(P.ne(z, z))
    count = api.sum(present, axis=axes, keepdims=True)
    zero = P.full(0, z.type)
    total = api.sum(P.select(present, z, zero), axis=axes, keepdims=True)
    centre = P.div(total, P.convert(count, z.type.dtype))
    deviation = P.select(present, P.sub(z, api.broadcast_to(centre, z.type.shape)), zero)
    re, im = C.real(deviation), C.imag(deviation)
    squares = api.sum(P.add(P.mul(re, re), P.mul(im, im)), axis=axes, keepdims=keepdims)
    dof = P.sub(P.convert(api.sum(present, axis=axes, keepdims=keepdims), re.type.dtype),
                P.full(float(ddof), squares.type))
    return P.select(P.le(dof, P.full(0, dof.type)), P.full(np.nan, squares.type), P.div(squares, dof))


def _nanstd(z, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None, mean=None,
            correction=None):
    return P.sqrt(_nanvar(z, axis, dtype, out, ddof, keepdims, where=where, mean=mean, correction=correction))


def _median(z, axis=None, out=None, overwrite_input=False, keepdims=False):
    """NumPy's median of complex numbers: the mean of the one or two middle elements in
    NumPy's (lexicographic, NaN-last) order; the last element where it has a NaN part."""
    if out is not None:
        raise UnsupportedOperationError("numpy.median: out= is not supported")
    rows, kept_shape, axes = sorting._reduced_last(z, axis, "median")
    n = rows.type.shape[-1]
    s = _sort_last(rows) if rows.type.size else rows
    half = n // 2
    middle = api.getitem(s, (Ellipsis, slice(half, half + 1) if n % 2 else slice(half - 1, half + 1)))
    result = api.mean(middle, axis=-1)
    if n > 0:
        has_nan, last = sorting._last_is_nan(s)
        result = P.select(has_nan, last, result)
    return sorting._keepdims(result, z.type.shape, axes, keepdims)


def _lexicographic_less(a: Value, b: Value) -> Value:
    """(a.re == b.re) ? a.im < b.im : a.re < b.re, NumPy's plain complex `<` without NaN rules."""
    a_re, a_im, b_re, b_im = C.real(a), C.imag(a), C.real(b), C.imag(b)
    return P.select(P.eq(a_re, b_re), P.lt(a_im, b_im), P.lt(a_re, b_re))


def _clip_between(x: Value, low: Value, high: Value) -> Value:
    """NumPy's clip ufunc for complex numbers: max then min, each keeping its first
    operand when it has a NaN part or is strictly beyond the bound, else taking the bound
    (a bound with a NaN part is taken whenever the plain comparison does not reject it)."""
    has_nan = _either_part(_is_nan)
    raised = P.select(P.logical_or(has_nan(x), _lexicographic_less(low, x)), x, low)
    return P.select(P.logical_or(has_nan(raised), _lexicographic_less(raised, high)), raised, high)


def _clip(x, a_min=None, a_max=None, out=None, **kwargs):
    """With both bounds NumPy runs its clip ufunc (`_clip_between`); with one it runs
    np.maximum or np.minimum, the real implementation's path."""
    low, high = kwargs.get("min", a_min), kwargs.get("max", a_max)
    if out is not None or low is None or high is None or set(kwargs) - {"min", "max"} or not any(
            _complex_value(v) is not None or isinstance(v, complex) for v in (x, low, high)):
        return _REAL_CLIP(x, a_min, a_max, out, **kwargs)
    values = api.promote(x, low, high)
    return _clip_between(*api.broadcast_values(*values))


def _refuse_like_numpy(name):
    def refuse(a, *args, **kwargs):
        raise DTypeError(f"numpy.{name} of complex numbers: a must be an array of real numbers "
                         "(NumPy raises TypeError)")
    return refuse


_REAL_CORRELATE = api.FUNCTIONS[np.correlate]
_REAL_CLIP = api.FUNCTIONS[np.clip]

_REPLACED_UFUNCS = {
    np.conjugate: C.conj, np.absolute: _absolute, np.reciprocal: _reciprocal,
    np.isnan: _either_part(_is_nan), np.isinf: _either_part(_is_inf), np.isfinite: _isfinite,
}
_REPLACED_FUNCTIONS = {
    np.real: C.real, np.imag: C.imag, np.angle: _angle,
    np.sort: _sort, np.argsort: _argsort, np.vdot: _vdot, np.median: _median,
    np.nanmax: _nan_extremum("nanmax", api.amax), np.nanmin: _nan_extremum("nanmin", api.amin),
    np.nanvar: _nanvar, np.nanstd: _nanstd,
    np.quantile: _refuse_like_numpy("quantile"), np.percentile: _refuse_like_numpy("percentile"),
    np.nanquantile: _refuse_like_numpy("nanquantile"), np.nanpercentile: _refuse_like_numpy("nanpercentile"),
    np.iscomplex: lambda z: P.ne(C.imag(z), P.full(0, C.imag(z).type)),
    np.isreal: lambda z: P.eq(C.imag(z), P.full(0, C.imag(z).type)),
}
_PER_PART = (np.rint,)
_PER_PART_FUNCTIONS = (np.round, np.around, np.nan_to_num)

for _ufunc, _impl in _REPLACED_UFUNCS.items():
    api.UFUNCS[_ufunc] = _on_complex(_impl, api.UFUNCS[_ufunc])
for _ufunc in _PER_PART:
    api.UFUNCS[_ufunc] = _on_complex(_per_part(api.UFUNCS[_ufunc]), api.UFUNCS[_ufunc])
for _function, _impl in _REPLACED_FUNCTIONS.items():
    api.FUNCTIONS[_function] = _on_complex(_impl, api.FUNCTIONS[_function])
for _function in _PER_PART_FUNCTIONS:
    if _function in api.FUNCTIONS:
        api.FUNCTIONS[_function] = _on_complex(_per_part(api.FUNCTIONS[_function]), api.FUNCTIONS[_function])
api.FUNCTIONS[np.clip] = _clip
api.FUNCTIONS[np.correlate] = _either_complex(_correlate, api.FUNCTIONS[np.correlate])
api.UFUNCS[np.float_power] = _either_complex(_float_power, api.UFUNCS[np.float_power])
api.FUNCTIONS[np.iscomplexobj] = _type_test(lambda is_complex: is_complex)
api.FUNCTIONS[np.isrealobj] = _type_test(lambda is_complex: not is_complex)


# --------------------------------------------------------------------------- the reach of complex support

COMPLEX_UFUNCS = frozenset({
    np.add, np.subtract, np.multiply, np.true_divide, np.negative, np.positive, np.equal, np.not_equal,
    np.conjugate, np.absolute, np.reciprocal, np.square, np.power, np.matmul, np.isnan, np.isinf, np.isfinite,
    np.rint, np.exp, np.log, np.sqrt, np.exp2, np.expm1, np.log2, np.log10, np.log1p, np.sign,
    np.sin, np.cos, np.tan, np.sinh, np.cosh, np.tanh, np.arcsin, np.arccos, np.arctan, np.arcsinh, np.arccosh,
    np.arctanh, np.less, np.less_equal, np.greater, np.greater_equal, np.maximum, np.minimum, np.fmax, np.fmin,
    np.float_power, np.vecdot, np.matvec, np.vecmat, np.logical_and, np.logical_or, np.logical_xor, np.logical_not,
})
"""The ufuncs checked against NumPy on complex operands (tests/test_complex.py,
tests/test_complex_surface.py); the others refuse complex operands (`_refusing_complex`)."""

COMPLEX_FUNCTIONS = frozenset({
    np.real, np.imag, np.angle, np.conj, np.iscomplex, np.isreal, np.iscomplexobj, np.isrealobj, np.round,
    np.around, np.sum, np.mean, np.prod, np.dot, np.matmul, np.reshape, np.transpose, np.swapaxes, np.moveaxis,
    np.expand_dims, np.squeeze, np.ravel, np.broadcast_to, np.concatenate, np.stack, np.hstack, np.vstack,
    np.where, np.zeros_like, np.ones_like, np.copy, np.asarray, np.array, np.flip, np.shape, np.ndim, np.size,
    np.result_type, np.append, np.atleast_1d, np.atleast_2d, np.atleast_3d, np.column_stack, np.dstack,
    np.max, np.min, np.amax, np.amin, np.argmax, np.argmin, np.sort, np.argsort, np.cumsum, np.cumprod, np.take,
    np.take_along_axis, np.vdot, np.inner, np.outer, np.kron, np.tensordot, np.einsum,
    np.nansum, np.nanprod, np.nanmean, np.nancumsum, np.nancumprod, np.var, np.std, np.ptp,
    np.median, np.nanmax, np.nanmin, np.nanvar, np.nanstd, np.diff, np.convolve, np.correlate, np.trace, np.clip,
    np.cumulative_sum, np.cumulative_prod, np.average, np.allclose, np.isclose,
    np.quantile, np.percentile, np.nanquantile, np.nanpercentile,
    np.diag, np.diagflat, np.diagonal, np.fliplr, np.flipud, np.roll, np.rot90, np.tril, np.triu,
    np.matrix_transpose, np.block, np.unstack, np.full_like, np.linalg.trace, np.any, np.all, np.count_nonzero,
    np.array_equal, np.nan_to_num,
    np.nonzero, np.flatnonzero, np.argwhere, np.extract, np.compress, np.ediff1d, np.gradient, np.trapezoid,
    np.cov, np.corrcoef, np.sinc, np.vander, np.poly, np.polyval, np.polyadd, np.polysub, np.polymul, np.polyder,
    np.polyint, np.linspace, np.logspace, np.meshgrid, np.broadcast_arrays, np.array_equiv, np.empty_like,
    np.linalg.vecdot, np.astype, np.cross,
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
