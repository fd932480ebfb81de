"""NumPy's reductions, cumulative functions and differences, composed from primitives.

Nothing here has derivative rules of its own: every function is built at trace time from
primitives that do (slices, concatenation, adds, multiplies, selects, reductions).

- Products (`prod`) are a pairwise tree of multiplies: O(n) work, depth log2(n), and a
  gradient that is exact where elements are zero (the product rule, not prod / x).
- Cumulative sums are the `cumsum` primitive: NumPy's sequential order and per-step
  rounding exactly (float16 partial sums stagnate as NumPy's do).
- Cumulative products are a Hillis-Steele scan: log2(n) steps of "shift by 2^k and
  combine", O(n log n) work; each output is a tree product of its prefix (float16 and
  bfloat16 in float32, rounded once), within NumPy's sequential bound; integer results
  are exact (wrap-around as NumPy).
- NaN-ignoring reductions replace NaN by the operation's identity and count what is left.
"""
from __future__ import annotations

import math
from builtins import all as builtins_all, any as builtins_any

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import DTypeError, ShapeError, UnsupportedOperationError
from jitgrad.ir import DType, Value
from . import numpy_api as api
from .numpy_api import as_value, normalize_axes
from .numpy_elementwise import isclose
from .numpy_shape import diagonal

_NARROW = (DType.f16, DType.bf16)


def _reduce_axes(axis, ndim: int) -> tuple[int, ...]:
    """The reduced axes; as NumPy's ufunc reductions, a 0-d array also takes the integer
    axis 0 or -1 and reduces over nothing (np.prod(np.array(2.0), axis=0) is 2.0)."""
    if ndim == 0 and isinstance(axis, (int, np.integer)) and int(axis) in (0, -1):
        return ()
    return normalize_axes(axis, ndim)


def _refuse(name: str, what: str, instead: str):
    raise UnsupportedOperationError(f"numpy.{name}: {what} is not supported; {instead}")


def _no_out(name, out):
    if out is not None:
        _refuse(name, "out=", "traced arrays are immutable: use the returned value")


def _accumulator_dtype(x: Value, dtype) -> DType:
    """The dtype NumPy's add/multiply reductions accumulate in: `dtype` if given, the
    platform integer for bool and integers (uint64 for unsigned), else the input's."""
    if dtype is not None:
        return api._supported(np.dtype(dtype))
    if x.type.dtype == DType.bool or x.type.dtype.is_integer:
        return DType.u64 if x.type.dtype.is_unsigned else DType.i64
    return x.type.dtype


def _to_last_axis(x: Value, axes) -> Value:
    """`x` with the `axes` moved to the end and merged into one: shape (..., m)."""
    rest = [k for k in range(x.type.ndim) if k not in axes]
    moved = P.transpose(x, rest + list(axes))
    kept = tuple(x.type.shape[k] for k in rest)
    return P.reshape(moved, kept + (math.prod(x.type.shape[a] for a in axes),))


def _slice_last(x: Value, start: int, stop: int) -> Value:
    n = x.type.ndim
    return P.static_slice(x, (0,) * (n - 1) + (start,), x.type.shape[:-1] + (stop,))


def _slice_axis(x: Value, axis: int, start: int, stop: int) -> Value:
    starts = [0] * x.type.ndim
    limits = list(x.type.shape)
    starts[axis], limits[axis] = start, stop
    return P.static_slice(x, starts, limits)


def _keepdims(result: Value, shape, axes, keepdims: bool) -> Value:
    if not keepdims:
        return result
    return P.reshape(result, tuple(1 if k in axes else n for k, n in enumerate(shape)))


# --------------------------------------------------------------------------- prod

def _sequential_product(x: Value) -> Value:
    """The product over the last axis, one factor after another in index order, as
    NumPy's multiply.reduce computes it (a C-ordered operand's iteration order): the last
    running product of `cumprod`. The order decides more than rounding: a factor that
    overflows before a zero is reached gives inf * 0 = NaN in NumPy, where another order
    gives 0."""
    m = x.type.shape[-1]
    if m == 0:
        return P.full(1, x.type.with_shape(x.type.shape[:-1]))
    running = P.cumulative.cumprod(x, x.type.ndim - 1)
    return P.reshape(_slice_last(running, m - 1, m), x.type.shape[:-1])


def prod(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    _no_out("prod", out)
    x = as_value(a)
    target = _accumulator_dtype(x, dtype)
    x = P.convert(x, target)
    if where is not None:
        x = P.select(api.broadcast_to(as_value(where, DType.bool), x.type.shape), x, P.full(1, x.type))
    axes = _reduce_axes(axis, x.type.ndim)
    # float16: NumPy's half loop accumulates in float32 and rounds once when its inner loop
    # is the reduction (the reduced axes are the trailing ones), else it multiplies element
    # by element, rounding at every step; bfloat16 rounds at every step (ml_dtypes' loop)
    trailing = sorted(axes) == list(range(x.type.ndim - len(axes), x.type.ndim))
    wide = P.convert(x, DType.f32) if target == DType.f16 and trailing else x
    result = P.convert(_sequential_product(_to_last_axis(wide, axes)), target)
    result = _keepdims(result, x.type.shape, axes, keepdims)
    if initial is not None:
        result = P.mul(result, _static_scalar("prod", "initial", initial, result))
    return result


def _static_scalar(name, arg, value, like: Value) -> Value:
    """A Python/NumPy scalar argument cast to the result's dtype, as NumPy casts it."""
    if isinstance(value, Value) or np.ndim(value) != 0:
        _refuse(name, f"a traced or array {arg}=", f"pass a Python number as {arg}=")
    if like.type.dtype.is_integer and isinstance(value, int) and not isinstance(value, bool):
        info = np.iinfo(like.type.dtype.numpy)
        if not info.min <= value <= info.max:          # NumPy 2 raises OverflowError
            raise DTypeError(f"numpy.{name}: Python integer {arg}={value} out of bounds for {like.type.dtype.numpy}")
    return P.full(np.asarray(value).astype(like.type.dtype.numpy).item(), like.type)


# --------------------------------------------------------------------------- sum / max / min with where= and initial=

def sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):  # noqa: A001
    """np.sum, with `where=` (masked elements count as 0) and a static `initial=`."""
    _no_out("sum", out)
    x = as_value(a)
    if where is not None:
        x = P.select(api.broadcast_to(as_value(where, DType.bool), x.type.shape), x, P.full(0, x.type))
    result = api.sum(x, axis=_reduce_axes(axis, x.type.ndim), dtype=dtype, keepdims=keepdims)
    if initial is not None:
        result = P.add(result, _static_scalar("sum", "initial", initial, result))
    return result


def _extremum(name, api_fn):
    def reduce(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        _no_out(name, out)
        x = as_value(a)
        axis = _reduce_axes(axis, x.type.ndim)
        if initial is None:
            if where is not None:
                raise ShapeError(f"numpy.{name}: reduction operation {name} does not have an identity, "
                                 "so to use a where mask one has to specify 'initial'")
            return api_fn(x, axis=axis, keepdims=keepdims)
        start = _static_scalar(name, "initial", initial, x)
        scalar = np.asarray(initial).astype(x.type.dtype.numpy).item()
        if where is not None:
            x = P.select(api.broadcast_to(as_value(where, DType.bool), x.type.shape), x, start)
        axes = _reduce_axes(axis, x.type.ndim)
        moved = _to_last_axis(x, axes)
        start = P.full(scalar, moved.type.with_shape(moved.type.shape[:-1] + (1,)))
        result = api_fn(P.concatenate([moved, start], moved.type.ndim - 1), axis=-1)
        return _keepdims(result, x.type.shape, axes, keepdims)
    reduce.__name__ = name
    return reduce


amax = _extremum("max", api.amax)
amin = _extremum("min", api.amin)


# --------------------------------------------------------------------------- logical reductions

def _nonzero(x: Value) -> Value:
    return x if x.type.dtype == DType.bool else P.ne(x, P.full(0, x.type))


def _logical_reduce(name, prim_fn):
    def reduce(a, axis=None, out=None, keepdims=False, where=None):
        _no_out(name, out)
        x = _nonzero(as_value(a))
        if where is not None:
            neutral = name == "all"
            x = P.select(api.broadcast_to(as_value(where, DType.bool), x.type.shape), x, P.full(neutral, x.type))
        axes = _reduce_axes(axis, x.type.ndim)
        if builtins_any(x.type.shape[a] == 0 for a in axes):      # empty: the identity
            kept = tuple(n for k, n in enumerate(x.type.shape) if k not in axes)
            return _keepdims(P.full(name == "all", x.type.with_shape(kept)), x.type.shape, axes, keepdims)
        small = P.convert(x, DType.u8)
        return _keepdims(P.convert(prim_fn(small, axes), DType.bool), x.type.shape, axes, keepdims)
    reduce.__name__ = name
    return reduce


all = _logical_reduce("all", P.reduce_min)  # noqa: A001
any = _logical_reduce("any", P.reduce_max)  # noqa: A001


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return all(isclose(a, b, rtol, atol, equal_nan))


def count_nonzero(a, axis=None, *, keepdims=False):
    x = _nonzero(as_value(a))
    axes = _reduce_axes(axis, x.type.ndim)
    return _keepdims(P.reduce_sum(P.convert(x, DType.i64), axes), x.type.shape, axes, keepdims)


def ptp(a, axis=None, out=None, keepdims=False):
    _no_out("ptp", out)
    x = as_value(a)
    axis = _reduce_axes(axis, x.type.ndim)
    if x.type.dtype == DType.bool:
        raise DTypeError("numpy.ptp of a bool array: NumPy's subtract has no bool loop (it raises TypeError)")
    return P.sub(api.amax(x, axis=axis, keepdims=keepdims), api.amin(x, axis=axis, keepdims=keepdims))


def average(a, axis=None, weights=None, returned=False, *, keepdims=False):
    x = as_value(a)
    if weights is None:
        avg = api.mean(x, axis=axis, keepdims=keepdims)
        if not returned:
            return avg
        axes = _reduce_axes(axis, x.type.ndim)
        count = float(math.prod(x.type.shape[k] for k in axes))
        return avg, P.full(count, avg.type)
    w = as_value(weights)
    dtype = np.result_type(x.type.dtype.numpy, w.type.dtype.numpy,
                           *(["f8"] if x.type.dtype == DType.bool or x.type.dtype.is_integer else []))
    target = api._supported(dtype)
    x, w = P.convert(x, target), P.convert(w, target)
    if w.type.shape != x.type.shape:
        if axis is None:
            raise ShapeError("numpy.average: axis must be specified when shapes of a and weights differ")
        if not isinstance(axis, (int, np.integer)) or w.type.ndim != 1:
            _refuse("average", "weights of another shape than a's, along several axes",
                    "broadcast the weights to a's shape")
        (ax,) = normalize_axes(axis, x.type.ndim)
        if w.type.shape[0] != x.type.shape[ax]:
            raise ShapeError("numpy.average: length of weights not compatible with specified axis")
        w = P.broadcast_in_dim(w, x.type.shape, (ax,))
    total = api.sum(P.mul(x, w), axis=axis, keepdims=keepdims)
    scale = api.sum(w, axis=axis, keepdims=keepdims)
    avg = P.div(total, scale)
    return (avg, scale) if returned else avg


def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    _no_out("trace", out)
    d = diagonal(a, offset, axis1, axis2)
    return api.sum(d, axis=-1, dtype=dtype)


# --------------------------------------------------------------------------- cumulative

def _scan(x: Value, axis: int, combine, identity) -> Value:
    """Hillis-Steele inclusive scan along `axis`: after step k every element holds the
    combination of the 2^k elements ending at it (exact for max, min and logical ops,
    whose result does not depend on the order)."""
    n = x.type.shape[axis]
    shift = 1
    while shift < n:
        fill_shape = list(x.type.shape)
        fill_shape[axis] = shift
        shifted = P.concatenate([P.full(identity, x.type.with_shape(tuple(fill_shape))),
                                 _slice_axis(x, axis, 0, n - shift)], axis)
        x = combine(x, shifted)
        shift *= 2
    return x


def _cumulative(name, scan):
    def cumulative(a, axis=None, dtype=None, out=None):
        _no_out(name, out)
        x = as_value(a)
        if axis is None or x.type.ndim == 0:         # NumPy treats a 0-d array as 1-d here
            x, axis = P.reshape(x, (x.type.size,)), 0 if axis is None else axis
        (axis,) = normalize_axes(axis, x.type.ndim)
        return scan(P.convert(x, _accumulator_dtype(x, dtype)), axis)
    cumulative.__name__ = name
    return cumulative


# NumPy's sequential sums and products, rounded at every step (kernels: primitives/cumulative.py)
cumsum = _cumulative("cumsum", lambda x, axis: P.cumulative.cumsum(x, axis))
cumprod = _cumulative("cumprod", lambda x, axis: P.cumulative.cumprod(x, axis))


def _cumulative_standard(name, fn):
    """The Array API's cumulative_sum/prod: axis required beyond 1-d, optional initial 0/1."""
    def cumulative(x, /, *, axis=None, dtype=None, out=None, include_initial=False):
        v = as_value(x)
        if axis is None:
            if v.type.ndim > 1:
                raise ShapeError(f"numpy.{name}: axis must be given for arrays of more than one dimension")
            axis = 0
        if v.type.ndim == 0:
            raise ShapeError(f"numpy.{name}: zero-dimensional arrays are not supported")
        result = fn(v, axis=axis, dtype=dtype, out=out)
        if include_initial:
            (ax,) = normalize_axes(axis, v.type.ndim)
            shape = list(result.type.shape)
            shape[ax] = 1
            start = P.full(0 if name == "cumulative_sum" else 1, result.type.with_shape(tuple(shape)))
            result = P.concatenate([start, result], ax)
        return result
    cumulative.__name__ = name
    return cumulative


cumulative_sum = _cumulative_standard("cumulative_sum", cumsum)
cumulative_prod = _cumulative_standard("cumulative_prod", cumprod)


# --------------------------------------------------------------------------- NaN-ignoring

def _isnan(x: Value) -> Value:
    return P.ne(x, x)


def _has_nans(x: Value) -> bool:
    """Do NumPy's nan-functions look for NaN in `x`? Only for np.inexact dtypes: bfloat16
    (an ml_dtypes type) is not one, so nansum of bfloat16 is its sum, NaN included."""
    return (x.type.dtype.is_float and x.type.dtype != DType.bf16) or x.type.dtype.is_complex


def _nan_as(x: Value, value) -> Value:
    if not _has_nans(x):
        return x
    return P.select(_isnan(x), P.full(value, x.type), x)


def nansum(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    return sum(_nan_as(as_value(a), 0), axis, dtype, out, keepdims, initial, where)


def nanprod(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    return prod(_nan_as(as_value(a), 1), axis, dtype, out, keepdims, initial, where)


def nancumsum(a, axis=None, dtype=None, out=None):
    return cumsum(_nan_as(as_value(a), 0), axis, dtype, out)


def nancumprod(a, axis=None, dtype=None, out=None):
    return cumprod(_nan_as(as_value(a), 1), axis, dtype, out)


def _nan_extremum(name, fn, fill):
    def reduce(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        x = as_value(a)
        if not x.type.dtype.is_float:
            return fn(x, axis, out, keepdims, initial, where)
        if initial is not None or where is not None:
            _refuse(name, "initial= and where=", f"use np.{name[3:]}(np.where(np.isnan(a), ..., a), ...)")
        _no_out(name, out)
        # NumPy's nanmax/nanmin are fmax/fmin reductions: NaN is skipped for bfloat16 too
        result = fn(P.select(_isnan(x), P.full(fill, x.type), x), axis, None, keepdims)
        all_nan = all(_isnan(x), axis=axis, keepdims=keepdims)
        return P.select(all_nan, P.full(np.nan, result.type), result)
    reduce.__name__ = name
    return reduce


nanmax = _nan_extremum("nanmax", amax, -np.inf)
nanmin = _nan_extremum("nanmin", amin, np.inf)


def _nan_count(x: Value, axis, keepdims) -> Value:
    nan_able = x.type.dtype.is_float or x.type.dtype.is_complex
    present = P.logical_not(_isnan(x)) if nan_able else P.full(True, x.type.with_dtype(DType.bool))
    return present, api.sum(present, axis=axis, keepdims=keepdims)


def nanmean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=None):
    _no_out("nanmean", out)
    if where is not None:
        _refuse("nanmean", "where=", "use np.where to set masked elements to NaN first")
    x = as_value(a)
    axis = _reduce_axes(axis, x.type.ndim)
    if not _has_nans(x):
        return api.mean(x, axis=axis, dtype=dtype, keepdims=keepdims)
    if dtype is not None:
        x = as_value(x, api._supported(np.dtype(dtype)))
    _, count = _nan_count(x, axis, keepdims)
    total = api.sum(_nan_as(x, 0), axis=axis, keepdims=keepdims)
    if x.type.dtype in _NARROW:     # NumPy: the sum rounded to the dtype, divided by the count in float64
        return P.convert(P.div(P.convert(total, DType.f64), P.convert(count, DType.f64)), x.type.dtype)
    return P.div(total, P.convert(count, total.type.dtype))


def nanvar(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None, mean=None,
           correction=None):
    _no_out("nanvar", out)
    if where is not None or mean is not None or correction is not None:
        _refuse("nanvar", "where=, mean= and correction=", "use ddof= and np.where")
    x = as_value(a)
    axis = _reduce_axes(axis, x.type.ndim)
    if not _has_nans(x):
        return api.var(x, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims)
    if dtype is not None:
        x = as_value(x, api._supported(np.dtype(dtype)))
    if x.type.dtype in _NARROW:
        return P.convert(nanvar(P.convert(x, DType.f32), axis=axis, ddof=ddof, keepdims=keepdims), x.type.dtype)
    present, count = _nan_count(x, axis, True)
    axes = _reduce_axes(axis, x.type.ndim)
    count_f = P.convert(count, x.type.dtype)
    centre = P.div(api.sum(_nan_as(x, 0), axis=axes, keepdims=True), count_f)
    centred = P.select(present, P.sub(x, api.broadcast_to(centre, x.type.shape)), P.full(0, x.type))
    total = api.sum(P.integer_pow(centred, 2), axis=axes, keepdims=True)
    dof = P.sub(count_f, P.full(float(ddof), count_f.type))
    result = P.select(P.le(dof, P.full(0, dof.type)), P.full(np.nan, total.type), P.div(total, dof))
    return _keepdims(P.reshape(result, tuple(n for k, n in enumerate(result.type.shape) if k not in axes)),
                     x.type.shape, axes, keepdims)


def nanstd(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None, mean=None,
           correction=None):
    return P.sqrt(nanvar(a, axis, dtype, out, ddof, keepdims, where=where, mean=mean, correction=correction))


# --------------------------------------------------------------------------- differences

def diff(a, n=1, axis=-1, prepend=np._NoValue, append=np._NoValue):
    x = as_value(a)
    if x.type.ndim == 0:
        raise ShapeError("numpy.diff requires input that is at least one dimensional")
    (axis,) = normalize_axes(axis, x.type.ndim)
    n = int(n)
    if n < 0:
        raise ShapeError(f"numpy.diff: order must be non-negative but got {n}")
    parts = []
    for extra in (prepend, append):
        if extra is np._NoValue:
            parts.append(None)
            continue
        e = as_value(extra)
        if e.type.ndim == 0:
            shape = list(x.type.shape)
            shape[axis] = 1
            e = api.broadcast_to(e, tuple(shape))
        parts.append(e)
    if parts[0] is not None or parts[1] is not None:
        x = api.concatenate([p for p in (parts[0], x, parts[1]) if p is not None], axis=axis)
    subtract = P.ne if x.type.dtype == DType.bool else P.sub
    for _ in range(n):
        m = x.type.shape[axis]
        if m == 0:
            break
        x = subtract(_slice_axis(x, axis, 1, m), _slice_axis(x, axis, 0, m - 1))
    return x


def ediff1d(ary, to_end=None, to_begin=None):
    if to_end is not None or to_begin is not None:
        _refuse("ediff1d", "to_begin=/to_end=", "use np.concatenate([begin, np.diff(np.ravel(a)), end])")
    x = as_value(ary)
    if x.type.dtype == DType.bool:
        raise DTypeError("numpy.ediff1d of a bool array: NumPy's subtract has no bool loop (it raises TypeError)")
    return diff(P.reshape(x, (x.type.size,)))


FUNCTIONS = {
    np.prod: prod, np.sum: sum, np.max: amax, np.amax: amax, np.min: amin, np.amin: amin,
    np.all: all, np.any: any, np.allclose: allclose, np.count_nonzero: count_nonzero, np.ptp: ptp, np.average: average,
    np.trace: trace, np.cumsum: cumsum, np.cumprod: cumprod,
    np.nansum: nansum, np.nanprod: nanprod, np.nancumsum: nancumsum, np.nancumprod: nancumprod,
    np.nanmax: nanmax, np.nanmin: nanmin, np.nanmean: nanmean, np.nanvar: nanvar, np.nanstd: nanstd,
    np.diff: diff, np.ediff1d: ediff1d,
}
for _name, _fn in (("cumulative_sum", cumulative_sum), ("cumulative_prod", cumulative_prod)):
    if hasattr(np, _name):
        FUNCTIONS[getattr(np, _name)] = _fn


def trapezoid(y, x=None, dx=1.0, axis=-1):
    """NumPy's formula step by step: sum(d * (y[1:] + y[:-1]) / 2.0) along `axis`."""
    u = api.UFUNCS
    values = as_value(y)
    if values.type.ndim == 0:
        raise ShapeError("numpy.trapezoid: y must be at least one-dimensional")
    (ax,) = normalize_axes(axis, values.type.ndim)
    if x is None:
        d = dx
    else:
        xs = as_value(x)
        if xs.type.ndim == 1:
            d = diff(xs)
            shape = [1] * values.type.ndim
            shape[ax] = d.type.shape[0]
            d = P.reshape(d, tuple(shape))
        else:
            d = diff(xs, axis=ax)
    n = values.type.shape[ax]
    pairs = u[np.add](_slice_axis(values, ax, min(1, n), n), _slice_axis(values, ax, 0, max(n - 1, 0)))
    return api.sum(u[np.true_divide](u[np.multiply](d, pairs), 2.0), axis=ax)


_MAX_KERNEL = 128


def _correlate_values(a: Value, v: Value, mode: str) -> Value:
    """out[k] = sum_j a[k + j - pad] v[j]: one shifted slice per kernel element, for
    len(a) >= len(v); NumPy's modes: full pads m - 1 zeros each side, same keeps len(a)."""
    n, m = a.type.shape[0], v.type.shape[0]
    low, high = {"full": (m - 1, m - 1), "same": (m // 2, m - 1 - m // 2), "valid": (0, 0)}[mode]
    padded = P.pad(a, (low,), (high,), (0,))
    length = n + low + high - m + 1
    mul, add = api.UFUNCS[np.multiply], api.UFUNCS[np.add]
    total = None
    positions = np.arange(length)
    for j in range(m):
        term = mul(P.static_slice(padded, (j,), (j + length,)),
                   P.broadcast_in_dim(P.reshape(P.static_slice(v, (j,), (j + 1,)), ()), (length,), ()))
        overlap = (positions + j - low >= 0) & (positions + j - low < n)
        if not overlap.all():
            # NumPy sums only the overlapping products: a padding zero times an infinite
            # kernel element must not add NaN.
            term = P.select(api.as_value(overlap), term, P.full(0, term.type))
        total = term if total is None else add(total, term)
    if total.type.dtype.is_float:
        total = add(total, P.full(0.0, total.type))     # NumPy's sums start at +0.0: never -0.0
    return total


def _as_vectors(name, a, v):
    with api.weak_scalars({}):
        a, v = api.promote(*(np.asarray(x) if api._is_weak(x) else x for x in (a, v)))
    a, v = (P.reshape(x, (1,)) if x.type.ndim == 0 else x for x in (a, v))
    if a.type.ndim != 1 or v.type.ndim != 1:
        raise ShapeError(f"numpy.{name}: object too deep for desired array (1-d inputs only)")
    if a.type.shape[0] == 0 or v.type.shape[0] == 0:
        raise ShapeError(f"numpy.{name}: inputs cannot be empty")
    if min(a.type.shape[0], v.type.shape[0]) > _MAX_KERNEL:
        raise UnsupportedOperationError(f"numpy.{name} of two sequences longer than {_MAX_KERNEL} is not supported "
                                        "(it unrolls one multiply per kernel element); use a matrix product "
                                        "with a sliding window of the signal")
    return a, v


def _mode(name, mode):
    if mode not in ("full", "same", "valid"):
        raise ShapeError(f"numpy.{name}: mode must be one of 'valid', 'same', or 'full' (got {mode!r})")
    return mode


def correlate(a, v, mode="valid"):
    if builtins_any(np.ndim(x) == 0 if not isinstance(x, Value) else x.type.ndim == 0 for x in (a, v)):
        raise ShapeError("numpy.correlate: object of too small depth for desired array (1-d inputs only)")
    a, v = _as_vectors("correlate", a, v)
    mode = _mode("correlate", mode)
    if v.type.shape[0] > a.type.shape[0]:      # NumPy swaps the inputs and reverses the result
        return P.rev(_correlate_values(v, a, mode), (0,))
    return _correlate_values(a, v, mode)


def convolve(a, v, mode="full"):
    a, v = _as_vectors("convolve", a, v)
    mode = _mode("convolve", mode)
    if v.type.shape[0] > a.type.shape[0]:
        a, v = v, a
    return _correlate_values(a, P.rev(v, (0,)), mode)


def gradient(f, *varargs, axis=None, edge_order=1):
    """NumPy's uniform-spacing formulas: central differences inside, one-sided differences
    of order `edge_order` at the ends, with the same operation order (so the same roundings)."""
    x = as_value(f)
    if x.type.dtype == DType.bool:
        raise DTypeError("numpy.gradient of a bool array: NumPy's subtract has no bool loop (it raises TypeError)")
    if x.type.dtype.is_integer:
        x = P.convert(x, DType.f64)
    # NumPy writes every piece into an array of f's dtype when it is a NumPy inexact type, and
    # into float64 otherwise: bfloat16 (an ml_dtypes type, not np.inexact) is differenced in
    # bfloat16 and stored as float64.
    out_dtype = DType.f64 if x.type.dtype == DType.bf16 else x.type.dtype
    axes = tuple(range(x.type.ndim)) if axis is None else tuple(
        normalize_axes(a, x.type.ndim)[0] for a in (axis if isinstance(axis, (tuple, list)) else (axis,)))
    if not varargs:
        spacing = [1.0] * len(axes)
    elif len(varargs) == 1 and np.ndim(varargs[0]) == 0:
        spacing = list(varargs) * len(axes)
    elif len(varargs) == len(axes) and builtins_all(np.ndim(d) == 0 for d in varargs):
        spacing = list(varargs)
    else:
        raise UnsupportedOperationError("numpy.gradient with coordinate arrays is not supported; pass scalar "
                                        "spacings (uniform grids)")
    if builtins_any(isinstance(d, Value) for d in spacing):
        raise UnsupportedOperationError("numpy.gradient with a traced spacing is not supported; pass a Python "
                                        "number, or divide the result of np.gradient(f) by it")
    if edge_order not in (1, 2):
        raise ShapeError("numpy.gradient: 'edge_order' greater than 2 not supported")
    u = api.UFUNCS
    mul, add, sub, div = u[np.multiply], u[np.add], u[np.subtract], u[np.true_divide]
    out = []
    for ax, dx in zip(axes, spacing):
        n = x.type.shape[ax]
        if n < edge_order + 1:
            raise ShapeError("numpy.gradient: shape of the array too small to calculate a numerical gradient, "
                             "at least (edge_order + 1) elements are required")

        def at(i, j=None, ax=ax, n=n):
            start = i + n if i < 0 else i
            return _slice_axis(x, ax, start, start + 1 if j is None else j)
        inner = div(sub(at(2, n), at(0, n - 2)), 2.0 * dx)
        if edge_order == 1:
            first = div(sub(at(1), at(0)), dx)
            last = div(sub(at(-1), at(-2)), dx)
        else:
            first = add(add(mul(-1.5 / dx, at(0)), mul(2.0 / dx, at(1))), mul(-0.5 / dx, at(2)))
            last = add(add(mul(0.5 / dx, at(-3)), mul(-2.0 / dx, at(-2))), mul(1.5 / dx, at(-1)))
        out.append(P.concatenate([P.convert(as_value(p), out_dtype) for p in (first, inner, last)], ax))
    return out[0] if len(out) == 1 else tuple(out)


# --------------------------------------------------------------------------- ufunc methods

def _extremum_identity(ufunc, dtype: DType):
    if dtype.is_float:
        return -np.inf if ufunc is np.maximum else np.inf
    info = np.iinfo(dtype.numpy)
    return info.min if ufunc is np.maximum else info.max


def _accumulate(ufunc):
    """`ufunc.accumulate` along axis 0 by default. add and multiply widen bool and small
    integers as cumsum does; maximum/minimum keep the dtype (on bool: or/and);
    logical_and/or work on truth values."""
    name = f"{ufunc.__name__}.accumulate"
    cumulative = {np.add: cumsum, np.multiply: cumprod}.get(ufunc)

    def accumulate(a, axis=0, dtype=None, out=None):
        _no_out(name, out)
        x = as_value(a)
        if x.type.ndim == 0:
            raise ShapeError(f"numpy.{name}: cannot accumulate on a scalar")
        if axis is None:
            raise ShapeError(f"numpy.{name}: accumulate does not allow multiple axes")
        (axis,) = normalize_axes(axis, x.type.ndim)
        if cumulative is not None:
            return cumulative(x, axis=axis, dtype=dtype)
        if dtype is not None:
            x = P.convert(x, api._supported(np.dtype(dtype)))
        if ufunc in (np.logical_and, np.logical_or):
            x = _nonzero(x)
        if x.type.dtype == DType.bool:
            conjunction = ufunc in (np.minimum, np.logical_and)
            return _scan(x, axis, P.logical_and if conjunction else P.logical_or, conjunction)
        combine = P.maximum if ufunc is np.maximum else P.minimum
        return _scan(x, axis, combine, _extremum_identity(ufunc, x.type.dtype))
    accumulate.__name__ = name
    return accumulate


def _reduce_axis_0(fn):
    """ufunc.reduce reduces axis 0 by default (np.prod, np.all: every axis)."""
    def reduce(a, axis=0, **kwargs):
        return fn(a, axis=axis, **kwargs)
    reduce.__name__ = fn.__name__
    return reduce


UFUNC_ACCUMULATE = {ufunc: _accumulate(ufunc)
                    for ufunc in (np.add, np.multiply, np.maximum, np.minimum, np.logical_and, np.logical_or)}
UFUNC_REDUCE = {np.add: _reduce_axis_0(sum), np.multiply: _reduce_axis_0(prod), np.maximum: _reduce_axis_0(amax),
                np.minimum: _reduce_axis_0(amin), np.logical_and: _reduce_axis_0(all),
                np.logical_or: _reduce_axis_0(any)}

if hasattr(np, "trapezoid"):
    FUNCTIONS[np.trapezoid] = trapezoid
FUNCTIONS[np.correlate] = correlate
FUNCTIONS[np.convolve] = convolve
FUNCTIONS[np.gradient] = gradient
