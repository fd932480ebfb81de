"""NumPy's sorting, searching and order-statistics functions on traced arrays, composed
from the `sort`/`argsort` and `gather`/`scatter` primitives.

- `np.sort`/`np.argsort` sort along one axis (moved last for the primitives). jitgrad's
  sort is always stable (`kind` is accepted and ignored): values equal NumPy's for every
  kind; `argsort` of tied elements equals `kind='stable'`, which NumPy's default
  quicksort need not match (both are valid sorting permutations).
- `np.partition`/`np.argpartition`: NumPy's order of the elements on each side of kth is
  an implementation detail. The sorted array satisfies partition's contract, but is only
  provably NumPy's result when kth pins every position; otherwise a clear error asks for
  `np.sort`.
- quantiles (`median`, `percentile`, `quantile`, and their `nan*` forms) take NumPy's own
  index and weight computation (the positions are static for a static q; for the nan*
  forms, tabled for every possible count of numbers in a row), then read the sorted
  array there, so every `method=` NumPy has gives NumPy's numbers and dtypes.
- `searchsorted`, `digitize`, `interp` binary-search (the `searchsorted` primitive) and gather.
- `unique`, `nonzero`, `argwhere` have data-dependent shapes: they need a static `size=`
  (as in JAX), the result padded with `fill_value`.
"""
from __future__ import annotations

import functools
import math
import operator

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import DTypeError, IndexingError, ShapeError, UnsupportedOperationError
from jitgrad.ir import DType, TensorType, Value
from jitgrad.primitives.gather import gather, scatter, scatter_add
from jitgrad.primitives.sorting import (argsort as argsort_last, searchsorted as searchsorted_primitive,
                                        sort as sort_last, take_along_last)
from . import numpy_api as api
from .indexing import take
from .numpy_api import as_value
from .numpy_reductions import cumsum, nanmean

_np_quantile = np.lib._function_base_impl
"""NumPy's quantile machinery (virtual indices and weights per method), run at trace time
on the static q so that every method gives NumPy's positions and weights."""
_monotonicity = np._core.multiarray._monotonicity


def _i64(shape) -> TensorType:
    return TensorType(tuple(shape), DType.i64)


def _axis(axis, ndim: int, name: str) -> int:
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise ShapeError(f"numpy.{name}: axis {axis} is out of bounds for array of dimension {ndim}")
    return axis % ndim


def _to_last(x: Value, axis: int) -> Value:
    perm = [k for k in range(x.type.ndim) if k != axis] + [axis]
    return P.transpose(x, tuple(perm))


def _from_last(x: Value, axis: int) -> Value:
    ndim = x.type.ndim
    perm = list(range(ndim - 1))
    perm.insert(axis, ndim - 1)
    return P.transpose(x, tuple(perm))


def _along(fn, a, axis, name: str) -> Value:
    """fn applied along `axis` (None: the flattened array), via the last axis."""
    x = as_value(a)
    if axis is None:
        x, axis = P.reshape(x, (x.type.size,)), 0
    if x.type.ndim == 0:
        raise ShapeError(f"numpy.{name}: axis {axis} is out of bounds for array of dimension 0")
    axis = _axis(axis, x.type.ndim, name)
    return _from_last(fn(_to_last(x, axis)), axis)


def _check_sort_args(name, kind, order, stable=None):
    if order is not None:
        raise UnsupportedOperationError(f"numpy.{name}: order= (structured arrays) is not supported")
    if kind not in (None, "quicksort", "mergesort", "heapsort", "stable"):
        raise ValueError(f"numpy.{name}: sort kind must be one of 'quick', 'heap', or 'stable' (got {kind!r})")


def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    _check_sort_args("sort", kind, order, stable)
    return _along(sort_last, a, axis, "sort")


def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    _check_sort_args("argsort", kind, order, stable)
    return _along(argsort_last, a, axis, "argsort")


def _kth_pins_everything(kth, n: int, name: str) -> bool:
    positions = set()
    for k in np.atleast_1d(np.asarray(kth)).ravel():
        k = operator.index(k)
        if not -n <= k < n:
            raise ShapeError(f"numpy.{name}: kth(={k}) out of bounds ({n})")
        positions.add(k % n)
    return len(positions) >= n - 1


def partition(a, kth, axis=-1, kind="introselect", order=None):
    """np.partition when its result is fully determined: kth covering every position (or
    all but one) forces the sorted order, which NumPy's result then equals."""
    if isinstance(kth, Value):
        raise UnsupportedOperationError("numpy.partition: kth must be known at trace time")
    x = as_value(a)
    n = x.type.size if axis is None else x.type.shape[_axis(axis, max(x.type.ndim, 1), "partition")] \
        if x.type.ndim else 1
    if not _kth_pins_everything(kth, n, "partition"):
        raise UnsupportedOperationError(
            "numpy.partition: the order NumPy leaves on each side of kth is its implementation's detail, "
            "which jitgrad does not reproduce; use np.sort(a, axis) (its result satisfies partition's "
            "contract), or pass every position as kth")
    return sort(x, axis)


def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    x = as_value(a)
    if x.type.size > 1:
        raise UnsupportedOperationError(
            "numpy.argpartition: which of the tied or unordered elements NumPy's introselect puts where is "
            "its implementation's detail; use np.argsort(a, axis, kind='stable') (a valid argpartition)")
    return argsort(x, axis)


def lexsort(keys, axis=-1, *, argsort_row=argsort_last):
    """Indices sorting by the last key first: stable argsorts from the first key to the
    last, each applied to the order the previous ones left. `argsort_row` is the stable
    argsort along the last axis (complex_order's takes complex keys too)."""
    if isinstance(keys, Value):
        keys = [P.reshape(api.getitem(keys, (k,)), keys.type.shape[1:]) for k in range(keys.type.shape[0])]
    keys = [as_value(k) for k in keys]
    if not keys:
        raise TypeError("need sequence of keys with len > 0 in lexsort")
    shape = api.broadcast_shapes(*[k.type.shape for k in keys])
    keys = [api.broadcast_to(k, shape) for k in keys]
    if not shape:
        return P.constant(np.int64(0))
    axis = _axis(axis, len(shape), "lexsort")
    keys = [_to_last(k, axis) for k in keys]
    order = argsort_row(keys[0])
    for key in keys[1:]:
        order = take_along_last(order, argsort_row(take_along_last(key, order)))
    return _from_last(order, axis)


# --------------------------------------------------------------------------- searching

def _count(mask: Value) -> Value:
    return P.reduce_sum(P.convert(mask, DType.i64), (mask.type.ndim - 1,))


def search_operands(a, v, side, sorter):
    """searchsorted's checked operands: a 1-d `a` (through `sorter`) as a Value, and `v`
    as NumPy takes it (a Python scalar as a strong float64/int64/complex128, not at a's dtype)."""
    if side not in ("left", "right"):
        raise ValueError(f"numpy.searchsorted: side must be 'left' or 'right' (got {side!r})")
    a = as_value(a)
    if a.type.ndim != 1:
        raise ShapeError("numpy.searchsorted: a must be one-dimensional")
    if sorter is not None:
        a = take(a, sorter)
    return a, (v if isinstance(v, Value) else np.asarray(v))


def searchsorted(a, v, side="left", sorter=None):
    """Where each v would go in the sorted 1-d `a` (NaN sorts last): a binary search per
    value (the `searchsorted` primitive)."""
    a, v = search_operands(a, v, side, sorter)
    dtype = _search_dtype(a, v, side)
    return searchsorted_primitive(as_value(a, dtype), as_value(v, dtype), side)


def _search_dtype(a: Value, v, side: str) -> DType:
    """The dtype searchsorted compares in: NumPy's common dtype of a and v (for no common
    dtype, bfloat16 against float16 or integers wider than 8 bits, NumPy compares Python
    objects: exactly, in float64 here, which holds both up to 32-bit integers and the
    constants it holds exactly).

    Python objects, and bfloat16 under ml_dtypes' compare function, put NaN neither below
    nor above anything, so NumPy's answer can depend on its search path. It cannot for
    side='left' and integer values: `a[i] < v` is then exact and False for NaN, which is
    sorting NaN last, as jitgrad's search does. Other cases are refused."""
    v_dtype = v.type.dtype if isinstance(v, Value) else DType.from_numpy(v.dtype)
    a_dtype = a.type.dtype
    try:
        dtype = api.result_dtype(a, v)
    except DTypeError:
        dtype = None
    if dtype is not None and (dtype != DType.bf16 or _bfloat16_search_orders_nan()):
        return dtype
    nan_safe = side == "left" and (v_dtype.is_integer or v_dtype == DType.bool)
    if nan_safe and dtype is not None:
        return dtype
    if nan_safe and (v_dtype.numpy.itemsize <= 4 or not isinstance(v, Value) and _float64_holds(v)):
        return DType.f64
    what = f"numpy.searchsorted of {a_dtype.numpy.name} and {v_dtype.numpy.name} values (side={side!r})"
    if nan_safe:
        raise DTypeError(f"{what}: NumPy compares them exactly as Python objects, and no dtype jitgrad has holds "
                         "both exactly; convert both to one dtype first")
    how = "compares them as Python objects" if dtype is None else "compares bfloat16 with ml_dtypes' function"
    raise DTypeError(f"{what}: NumPy {how}, where NaN is neither below nor above anything and the answer depends "
                     "on NumPy's search path; convert both to float32 or float64 first")


def _float64_holds(values: np.ndarray) -> bool:
    return bool(np.all(values.astype(np.float64).astype(values.dtype) == values))


@functools.cache
def _bfloat16_search_orders_nan() -> bool:
    """Whether NumPy's searchsorted on bfloat16 puts NaN after every number (ml_dtypes'
    compare function; older versions call NaN equal to everything)."""
    bfloat16 = DType.bf16.numpy
    return int(np.searchsorted(np.array([0, 1], bfloat16), np.array([np.nan], bfloat16))[0]) == 2


def digitize(x, bins, right=False):
    if isinstance(bins, Value):
        raise UnsupportedOperationError(
            "numpy.digitize with traced bins: whether they increase or decrease is decided by their values; "
            "use np.searchsorted(bins, x, side='left' if right else 'right') for increasing bins")
    bins = np.asarray(bins)
    if bins.ndim != 1:
        raise ValueError("object too deep for desired array" if bins.ndim > 1 else "object of too small depth")
    mono = _monotonicity(bins)
    if mono == 0:
        raise ValueError("bins must be monotonically increasing or decreasing")
    side = "left" if right else "right"
    if mono == -1:
        count = searchsorted(bins[::-1].copy(), x, side=side)
        return P.sub(P.full(len(bins), count.type), count)
    return searchsorted(bins, x, side=side)


def interp(x, xp, fp, left=None, right=None, period=None):
    """np.interp (float64, as NumPy computes it): the segment is found by counting the
    xp at or below x; NumPy's special cases (x on a knot, NaN slope) are kept."""
    x, xp, fp = (as_value(v, DType.f64) for v in (x, xp, fp))
    if xp.type.ndim != 1 or fp.type.ndim != 1:
        raise ValueError("numpy.interp: data points must be 1-D sequences")
    if xp.type.shape != fp.type.shape:
        raise ValueError("fp and xp are not of the same length")
    if xp.type.shape[0] == 0:
        raise ValueError("array of sample points is empty")
    if period is not None:
        if isinstance(period, Value):
            raise UnsupportedOperationError("numpy.interp: period must be known at trace time")
        if period == 0:
            raise ValueError("period must be a non-zero value")
        period = abs(period)
        left = right = None
        x = api.UFUNCS[np.remainder](x, period)
        xp = api.UFUNCS[np.remainder](xp, period)
        order = argsort_last(xp)
        xp, fp = take_along_last(xp, order), take_along_last(fp, order)
        xp = P.concatenate([P.sub(api.getitem(xp, slice(-1, None)), P.full(period, xp.type.with_shape((1,)))), xp,
                            P.add(api.getitem(xp, slice(0, 1)), P.full(period, xp.type.with_shape((1,))))], 0)
        fp = P.concatenate([api.getitem(fp, slice(-1, None)), fp, api.getitem(fp, slice(0, 1))], 0)
    n = xp.type.shape[0]
    shape = x.type.shape
    first, last = api.getitem(fp, 0), api.getitem(fp, n - 1)
    left_value = first if left is None else as_value(left, DType.f64)
    right_value = last if right is None else as_value(right, DType.f64)
    left_value, right_value = (api.broadcast_to(v, shape) for v in (left_value, right_value))
    j = P.sub(searchsorted_primitive(xp, x, "right"), P.full(1, _i64(shape)))   # the last xp <= x
    flat = P.reshape(j, (x.type.size,))
    lo = P.maximum(P.minimum(flat, P.full(n - 1, flat.type)), P.full(0, flat.type))
    hi = P.minimum(P.add(lo, P.full(1, flat.type)), P.full(n - 1, flat.type))
    x0, x1, y0, y1 = (P.reshape(gather(t, k, 0), shape) for t, k in ((xp, lo), (xp, hi), (fp, lo), (fp, hi)))
    slope = P.div(P.sub(y1, y0), P.sub(x1, x0))
    inner = P.add(P.mul(slope, P.sub(x, x0)), y0)
    isnan = lambda v: P.ne(v, v)  # noqa: E731
    retry = P.add(P.mul(slope, P.sub(x, x1)), y1)
    inner = P.select(isnan(inner), P.select(P.logical_and(isnan(retry), P.eq(y0, y1)), y0, retry), inner)
    xp_first, xp_last = (api.broadcast_to(api.getitem(xp, k), shape) for k in (0, n - 1))
    result = P.select(P.eq(x0, x), y0, inner)
    result = P.select(P.eq(j, P.full(n - 1, j.type)), api.broadcast_to(last, shape), result)
    result = P.select(P.gt(x, xp_last), right_value, result)
    result = P.select(P.lt(x, xp_first), left_value, result)
    return P.select(isnan(x), x, result)


# --------------------------------------------------------------------------- order statistics

def _reduced_last(a, axis, name: str):
    """(x with the reduced axes merged into one last axis, the kept shape, the reduced axes)."""
    x = as_value(a)
    axes = api.normalize_axes(axis, x.type.ndim)
    kept = [k for k in range(x.type.ndim) if k not in axes]
    x = P.transpose(x, tuple(kept + list(axes)))
    kept_shape = tuple(x.type.shape[:len(kept)])
    return P.reshape(x, kept_shape + (math.prod(x.type.shape[len(kept):]),)), kept_shape, axes


def _keepdims(result: Value, shape, axes, keepdims: bool, lead: int = 0) -> Value:
    if not keepdims:
        return result
    kept = tuple(1 if k in axes else n for k, n in enumerate(shape))
    return P.reshape(result, result.type.shape[:lead] + kept)


def _last_is_nan(sorted_x: Value) -> Value:
    last = api.getitem(sorted_x, (Ellipsis, -1))
    return P.ne(last, last), last


def _refuse_bfloat16_selection(x: Value, name: str) -> None:
    """NumPy's median and quantiles do not look for NaN in bfloat16 (not np.inexact), and
    its partition with ml_dtypes' compare function, which calls NaN equal to everything,
    leaves a NaN wherever its selection algorithm happens to put it: with NaN in the data
    the answer is that algorithm's, not a function of the values."""
    if x.type.dtype == DType.bf16:
        raise DTypeError(f"numpy.{name} of bfloat16: NumPy's result for data holding NaN depends on where its "
                         "partition leaves the NaN (bfloat16 is not np.inexact, so NaN is not looked for); "
                         "convert to float32 first")


def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    if out is not None:
        raise UnsupportedOperationError("numpy.median: out= is not supported")
    x = as_value(a)
    _refuse_bfloat16_selection(x, "median")
    shape = x.type.shape
    rows, kept_shape, axes = _reduced_last(x, axis, "median")
    n = rows.type.shape[-1]
    s = sort_last(rows) if rows.type.size else rows
    half = n // 2
    middle = api.getitem(s, (Ellipsis, slice(half, half + 1) if n % 2 else slice(half - 1, half + 1)))
    result = api.mean(middle, axis=-1)
    if x.type.dtype.is_float and n > 0:
        has_nan, last = _last_is_nan(s)
        result = P.select(has_nan, P.convert(last, result.type.dtype), result)
    return _keepdims(result, shape, axes, keepdims)


def _static_q(q, name: str, scale):
    if isinstance(q, Value):
        raise UnsupportedOperationError(f"numpy.{name}: q must be known at trace time (a number or NumPy array)")
    weak = type(q) in (int, float)
    q = np.true_divide(q, 100) if scale else np.asanyarray(q)
    if not _np_quantile._quantile_is_valid(q):
        raise ValueError("Percentiles must be in the range [0, 100]" if scale
                         else "Quantiles must be in the range [0, 1]")
    if q.ndim > 2:
        raise ValueError("q must be a scalar or 1d")
    return q, weak


def _check_quantile_args(name, method, weights, out):
    if out is not None:
        raise UnsupportedOperationError(f"numpy.{name}: out= is not supported")
    if weights is not None:
        raise UnsupportedOperationError(f"numpy.{name}: weights= is not supported by jitgrad")
    if method not in _np_quantile._QuantileMethods:
        raise ValueError(f"{method!r} is not a valid method. Use one of: {list(_np_quantile._QuantileMethods)}")


def _take_static(s: Value, indices: np.ndarray) -> Value:
    """s[..., indices] with the indices' axes moved first (NumPy's quantile layout)."""
    picked = gather(s, P.constant(np.asarray(indices, np.int64) % s.type.shape[-1]), s.type.ndim - 1)
    lead = s.type.ndim - 1
    q_axes = list(range(lead, picked.type.ndim))
    return P.transpose(picked, tuple(q_axes + list(range(lead))))


def _lerp(a: Value, b: Value, t, one_minus_t, use_b) -> Value:
    """NumPy's _lerp: a + (b - a) * t, or b - (b - a) * (1 - t) where t >= 0.5."""
    ufunc = api.UFUNCS
    diff = ufunc[np.subtract](b, a)
    low = ufunc[np.add](a, ufunc[np.multiply](diff, t))
    high = ufunc[np.subtract](b, ufunc[np.multiply](diff, one_minus_t))
    high = P.convert(high, low.type.dtype) if high.type.dtype != low.type.dtype else high
    if isinstance(use_b, (bool, np.bool_)):
        return high if use_b else low
    return P.select(api.broadcast_to(use_b, low.type.shape), high, low)


def _as_gamma(gamma: np.ndarray, weak: bool, lead_shape, rest: int):
    """The weight as NumPy passes it to _lerp: a Python float for a scalar q given as a
    Python number, else an array of the q axes' shape followed by 1s."""
    if weak:
        return float(gamma), float(1 - float(gamma)), bool(float(gamma) >= 0.5)
    shaped = gamma.reshape(gamma.shape + (1,) * rest)
    return (P.constant(shaped), P.constant(np.subtract(1, shaped)), P.constant(shaped >= 0.5))


def _quantile(a, q, axis, method, keepdims, weak, name):
    x = as_value(a)
    _refuse_bfloat16_selection(x, name)
    shape = x.type.shape
    rows, kept_shape, axes = _reduced_last(x, axis, name)
    n = rows.type.shape[-1]
    if n == 0:
        raise IndexingError(f"numpy.{name} of an empty array: index -1 is out of bounds for axis 0 with size 0")
    s = sort_last(rows)
    props = _np_quantile._QuantileMethods[method]
    virtual = np.asanyarray(props["get_virtual_index"](n, q))
    integral = props["fix_gamma"] is None or method == "linear" and np.issubdtype(virtual.dtype, np.integer)
    if integral:
        result = _take_static(s, virtual)
    else:
        dummy = np.empty(0, x.type.dtype.numpy if x.type.dtype != DType.bf16 else np.float32)
        previous, following = _np_quantile._get_indexes(dummy, virtual, n)
        gamma = _np_quantile._get_gamma(virtual, previous, props)
        t, one_minus_t, use_b = _as_gamma(gamma, weak, virtual.shape, len(kept_shape))
        result = _lerp(_take_static(s, previous), _take_static(s, following), t, one_minus_t, use_b)
    if x.type.dtype.is_float:
        has_nan, last = _last_is_nan(s)
        last = api.broadcast_to(P.convert(last, result.type.dtype), result.type.shape)
        result = P.select(api.broadcast_to(has_nan, result.type.shape), last, result)
    return _keepdims(result, shape, axes, keepdims, lead=q.ndim)


def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *, weights=None,
             interpolation=None):
    _check_quantile_args("quantile", method, weights, out)
    q, weak = _static_q(q, "quantile", False)
    return _quantile(a, q, axis, method, keepdims, weak, "quantile")


def percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *, weights=None,
               interpolation=None):
    _check_quantile_args("percentile", method, weights, out)
    q, weak = _static_q(q, "percentile", True)
    return _quantile(a, q, axis, method, keepdims, weak, "percentile")


# ----- NaN-ignoring forms: the count of numbers per slice is known only at run time

def _nan_rows(a, axis, name):
    x = as_value(a)
    rows, kept_shape, axes = _reduced_last(x, axis, name)
    s = sort_last(rows) if rows.type.size else rows
    count = _count(P.eq(rows, rows)) if rows.type.shape[-1] else P.full(0, _i64(kept_shape))
    return x, s, count, kept_shape, axes


def _at(s: Value, positions: Value) -> Value:
    """s[..., positions[...]] for one position per row (clamped into the row)."""
    n = s.type.shape[-1]
    positions = P.maximum(P.minimum(positions, P.full(n - 1, positions.type)), P.full(0, positions.type))
    expanded = P.broadcast_in_dim(positions, s.type.shape, tuple(range(s.type.ndim - 1)))
    return api.getitem(take_along_last(s, expanded), (Ellipsis, 0))


def nanmedian(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    x = as_value(a)
    if x.type.size == 0:            # NumPy: the nanmean of the empty array (NaN, shaped by axis)
        return nanmean(x, axis=axis, keepdims=keepdims)
    if not x.type.dtype.is_float:
        return median(x, axis, out, overwrite_input, keepdims)
    if x.type.dtype == DType.bf16:
        raise DTypeError("numpy.nanmedian of bfloat16 raises TypeError in NumPy when the data holds NaN (and "
                         "ignores it otherwise), which compiled code cannot follow; convert to float32 first")
    if out is not None:
        raise UnsupportedOperationError("numpy.nanmedian: out= is not supported")
    x, s, count, kept_shape, axes = _nan_rows(x, axis, "nanmedian")
    n = s.type.shape[-1]
    if n == 0:
        return _keepdims(P.full(np.nan, x.type.with_shape(kept_shape)), x.type.shape, axes, keepdims)
    one = P.full(1, count.type)
    low = _at(s, P.floor_divide(P.sub(count, one), P.full(2, count.type)))
    high = _at(s, P.floor_divide(count, P.full(2, count.type)))
    if axis is not None and kept_shape and n < NANMEDIAN_MASKED_MAX_LENGTH:
        # NumPy: np.ma.median, (0 + (low + high)) / 2 in the array's dtype, even for one
        # middle element (its sum starts from +0); NaN for an all-NaN slice
        total = P.add(P.full(0, low.type), P.add(low, high))
        result = P.div(total, P.full(2, low.type))
        all_nan = P.full(np.nan, result.type)
    else:
        # NumPy: np.median of the numbers, the mean of one or two middle elements; an
        # all-NaN slice gives its last element
        odd = P.eq(P.remainder(count, P.full(2, count.type)), one)
        pair = api.mean(P.concatenate([P.reshape(v, kept_shape + (1,)) for v in (low, high)], len(kept_shape)),
                        axis=-1)
        result = P.select(odd, api.mean(P.reshape(low, kept_shape + (1,)), axis=-1), pair)
        all_nan = P.convert(api.getitem(_reduced_last(x, axis, "nanmedian")[0], (Ellipsis, -1)), result.type.dtype)
    result = P.select(P.eq(count, P.full(0, count.type)), all_nan, result)
    return _keepdims(result, x.type.shape, axes, keepdims)


NANMEDIAN_MASKED_MAX_LENGTH = 600
"""NumPy's nanmedian along some axes of an array of two or more dimensions takes a masked
median (np.ma.median) of slices shorter than this, and np.median of the numbers of longer
ones, of a whole array or of a 1-d one."""


def _check_nanquantile_dtype(x: Value, numpy_on_numbers, n: int, name: str, method: str) -> None:
    """NumPy computes a NaN-ignoring quantile row by row: a row of numbers gives the dtype
    of its quantile, an all-NaN row a NaN of the array's dtype, and np.apply_along_axis
    stores every row in the first row's dtype (a single row is its own result). Where the
    two dtypes differ, the result's dtype, and the rounding of every row, depend on the
    data; `numpy_on_numbers` runs NumPy's function on a row of numbers to find out."""
    dtype = x.type.dtype.numpy
    with np.errstate(all="ignore"):
        on_numbers = np.asarray(numpy_on_numbers(np.linspace(0, 1, n).astype(dtype))).dtype
    if on_numbers != dtype:
        raise DTypeError(
            f"numpy.{name} of {np.dtype(dtype).name} with method={method!r} and this q: NumPy's result is "
            f"{on_numbers.name} where the first row holds a number and {np.dtype(dtype).name} where it is all NaN "
            f"(np.apply_along_axis keeps the first row's dtype), so its dtype depends on the data; convert the "
            f"array to {on_numbers.name} first")


def _nanquantile(a, q, axis, method, keepdims, weak, name, numpy_on_numbers):
    x = as_value(a)
    if x.type.size == 0:            # NumPy: the nanmean of the empty array, whatever q is
        return nanmean(x, axis=axis, keepdims=keepdims)
    if not x.type.dtype.is_float:
        return _quantile(x, q, axis, method, keepdims, weak, name)
    x, s, count, kept_shape, axes = _nan_rows(x, axis, name)
    if s.type.shape[-1]:
        _check_nanquantile_dtype(x, numpy_on_numbers, s.type.shape[-1], name, method)
    n = s.type.shape[-1]
    if n == 0:
        return _keepdims(P.full(np.nan, x.type.with_shape(q.shape + kept_shape)), x.type.shape, axes, keepdims,
                         lead=q.ndim)
    tables = _QuantileTables(q, method, weak, n)
    rows = math.prod(kept_shape)
    flat_count = P.reshape(count, (rows,))

    def lookup(table: np.ndarray, k: int) -> Value:
        """table[count, k] for each row's count of numbers."""
        return P.reshape(gather(P.constant(np.ascontiguousarray(table[:, k])), flat_count, 0), kept_shape)

    results = []
    for k in range(q.size):
        low = _at(s, lookup(tables.previous, k))
        if tables.integral:
            result = low
        else:
            gamma, one_minus = lookup(tables.gamma, k), lookup(tables.one_minus, k)
            if weak:            # NumPy's weight is a Python float then: it takes the array's float dtype
                target = x.type.dtype if x.type.dtype.is_float else DType.f64
                gamma, one_minus = P.convert(gamma, target), P.convert(one_minus, target)
            result = _lerp(low, _at(s, lookup(tables.following, k)), gamma, one_minus, lookup(tables.use_b, k))
        empty = P.eq(count, P.full(0, count.type))
        results.append(P.select(empty, P.full(np.nan, result.type), result))
    if q.ndim == 0:
        result = results[0]
    else:
        result = P.reshape(P.concatenate([P.reshape(r, (1,) + kept_shape) for r in results], 0),
                           q.shape + kept_shape)
    return _keepdims(result, x.type.shape, axes, keepdims, lead=q.ndim)


class _QuantileTables:
    """NumPy's positions and weights for every possible count m = 1..n of numbers in a
    row (row m of each table; row 0 is unused): the NaN-ignoring quantile of a row with m
    numbers is NumPy's quantile of those m, so the tables come from NumPy's own code, run
    once per m at trace time, and the compiled code picks a row by each row's count."""

    def __init__(self, q: np.ndarray, method: str, weak: bool, n: int):
        props = _np_quantile._QuantileMethods[method]
        flat_q = q.reshape(-1)
        shape = (n + 1, flat_q.size)
        self.previous, self.following = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        self.gamma, self.one_minus = np.zeros(shape), np.ones(shape)
        self.use_b = np.zeros(shape, bool)
        virtual = np.asanyarray(props["get_virtual_index"](n, flat_q))
        self.integral = props["fix_gamma"] is None or method == "linear" and np.issubdtype(virtual.dtype, np.integer)
        dummy = np.empty(0)
        for m in range(1, n + 1):
            virtual = np.asanyarray(props["get_virtual_index"](m, flat_q))
            if self.integral:
                self.previous[m] = np.asarray(virtual, np.int64) % m
                continue
            previous, following = _np_quantile._get_indexes(dummy, virtual, m)
            gamma = np.asarray(_np_quantile._get_gamma(virtual, previous, props), np.float64)
            self.previous[m], self.following[m] = previous % m, following % m
            self.gamma[m] = gamma
            self.one_minus[m] = [1 - float(g) for g in gamma] if weak else np.subtract(1, gamma)
            self.use_b[m] = gamma >= 0.5


def nanquantile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *, weights=None,
                interpolation=None):
    _check_quantile_args("nanquantile", method, weights, out)
    numpy_on_numbers = lambda row, q=q: np.nanquantile(row, q, method=method)    # noqa: E731
    q, weak = _static_q(q, "nanquantile", False)
    return _nanquantile(a, q, axis, method, keepdims, weak, "nanquantile", numpy_on_numbers)


def nanpercentile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *,
                  weights=None, interpolation=None):
    _check_quantile_args("nanpercentile", method, weights, out)
    numpy_on_numbers = lambda row, q=q: np.nanpercentile(row, q, method=method)    # noqa: E731
    q, weak = _static_q(q, "nanpercentile", True)
    return _nanquantile(a, q, axis, method, keepdims, weak, "nanpercentile", numpy_on_numbers)


# --------------------------------------------------------------------------- data-dependent sizes

def _need_size(name: str, instead: str):
    return UnsupportedOperationError(
        f"numpy.{name} on a traced array has a shape that depends on the data; call "
        f"jitgrad.tracing.sized.{name}(x, size=n) instead (a static size, the result padded with fill_value, as "
        f"JAX's size=), or {instead}")


def _compact(flat_mask: Value, values: Value, size: int, fill) -> Value:
    """The `values` where `flat_mask` holds, in order, in an array of `size` padded with
    `fill`: each kept value is scattered to its rank; the rest go to a spare last slot."""
    count = flat_mask.type.shape[0]
    rank = P.sub(cumsum(P.convert(flat_mask, DType.i64)), P.full(1, _i64((count,))))
    keep = P.logical_and(flat_mask, P.lt(rank, P.full(size, rank.type)))
    target = P.select(keep, rank, P.full(size, rank.type))
    base = P.broadcast_in_dim(as_value(fill, values.type.dtype), (size + 1,), ()) \
        if not isinstance(fill, Value) or fill.type.ndim == 0 else None
    if base is None:
        raise ShapeError("fill_value must be a scalar")
    return api.getitem(scatter(base, target, values, 0), slice(0, size))


def _static_size(name, size) -> int:
    size = operator.index(size)
    if size < 0:
        raise ValueError(f"numpy.{name}: size must be non-negative")
    return size


def nonzero(a, *, size=None, fill_value=None):
    x = as_value(a)
    if size is None:
        raise _need_size("nonzero", "use np.where(x != 0, ...) to keep the shape")
    if x.type.ndim == 0:
        raise ValueError("Calling nonzero on 0d arrays is not allowed. Use np.atleast_1d(scalar).nonzero() instead.")
    size = _static_size("nonzero", size)
    flat = P.reshape(P.ne(x, P.full(0, x.type)), (x.type.size,))
    fills = fill_value if isinstance(fill_value, tuple) else (fill_value,) * x.type.ndim
    if len(fills) != x.type.ndim:
        raise ValueError(f"fill_value must be a scalar or a tuple of length {x.type.ndim}")
    out = []
    stride = x.type.size
    positions = P.constant(np.arange(x.type.size, dtype=np.int64))
    for dim, n in enumerate(x.type.shape):
        stride //= n if n else 1
        coordinate = P.remainder(P.floor_divide(positions, P.full(max(stride, 1), positions.type)),
                                 P.full(max(n, 1), positions.type))
        out.append(_compact(flat, coordinate, size, 0 if fills[dim] is None else fills[dim]))
    return tuple(out)


def argwhere(a, *, size=None, fill_value=None):
    x = as_value(a)
    if size is None:
        raise _need_size("argwhere", "use np.where(x != 0, ...) to keep the shape")
    if x.type.ndim == 0:
        raise UnsupportedOperationError("numpy.argwhere of a 0-d traced array: use np.atleast_1d first")
    columns = nonzero(x, size=size, fill_value=fill_value)
    return P.concatenate([P.reshape(c, (c.type.shape[0], 1)) for c in columns], 1)


def unique(ar, return_index=False, return_inverse=False, return_counts=False, axis=None, *, equal_nan=True,
           sorted=True, size=None, fill_value=None):
    x = as_value(ar)
    if size is None:
        raise _need_size("unique", "sort with np.sort and compare neighbours")
    if axis is not None:
        raise UnsupportedOperationError("numpy.unique: axis= is not supported on traced arrays")
    size = _static_size("unique", size)
    n = x.type.size
    if n == 0:
        raise UnsupportedOperationError("numpy.unique of an empty traced array with size=: nothing to fill from")
    flat = P.reshape(x, (n,))
    order = argsort_last(flat)
    s = take_along_last(flat, order)
    previous, current = api.getitem(s, slice(0, n - 1)), api.getitem(s, slice(1, n))
    differs = P.ne(current, previous)
    if x.type.dtype.is_float and equal_nan:        # NaNs are one value
        differs = P.logical_and(differs, P.logical_not(P.logical_and(P.ne(current, current),
                                                                     P.ne(previous, previous))))
    is_new = P.concatenate([P.constant(np.array([True])), differs], 0)
    fill = api.getitem(s, 0) if fill_value is None else fill_value
    values = _compact(is_new, s, size, fill)
    if not (return_index or return_inverse or return_counts):
        return values
    group = P.sub(cumsum(P.convert(is_new, DType.i64)), P.full(1, _i64((n,))))
    results = [values]
    if return_index:
        results.append(_compact(is_new, order, size, 0))
    if return_inverse:
        inverse = scatter(P.full(0, _i64((n,))), order, group, 0)
        results.append(P.reshape(inverse, x.type.shape))
    if return_counts:
        clipped = P.minimum(group, P.full(size, group.type))
        counts = scatter_add(P.full(0, _i64((size + 1,))), clipped, P.full(1, _i64((n,))), 0)
        results.append(api.getitem(counts, slice(0, size)))
    return tuple(results)


def flatnonzero(a, *, size=None, fill_value=None):
    if size is None:
        raise _need_size("flatnonzero", "use np.where(np.ravel(x) != 0, ...) to keep the shape")
    x = as_value(a)
    return nonzero(P.reshape(x, (x.type.size,)), size=size, fill_value=fill_value)[0]


def isin(element, test_elements, assume_unique=False, invert=False, *, kind=None):
    """np.isin: the shape is the element's, so it needs no size. The test elements are
    sorted once; each element is binary-searched and compared with what it found (NaN is
    never found, -0.0 finds 0.0, as with NumPy's ==)."""
    element, test_elements = as_value(element), as_value(test_elements)
    if _integers_without_exact_common_dtype(element, test_elements):
        return _isin_by_equality(element, test_elements, invert)
    try:
        element, tests = api.promote(element, test_elements)
    except DTypeError:
        element, tests = _isin_operands_without_common_dtype(as_value(element), as_value(test_elements))
    tests = P.reshape(tests, (tests.type.size,))
    if tests.type.size == 0 or element.type.size == 0:
        return P.full(bool(invert), element.type.with_dtype(DType.bool))
    ordered = sort_last(tests)
    position = searchsorted_primitive(ordered, element, "left")
    flat = P.reshape(position, (element.type.size,))
    last = tests.type.size - 1
    flat = P.minimum(flat, P.full(last, flat.type))
    found = P.eq(P.reshape(gather(ordered, flat, 0), element.type.shape), element)
    return P.logical_not(found) if invert else found


ISIN_EQUALITY_MAX_TESTS = 64
"""Test elements compared one by one when no dtype holds both operands exactly."""


def _integers_without_exact_common_dtype(a: Value, b: Value) -> bool:
    """int64 with uint64 (NumPy's common dtype float64 rounds above 2^53)."""
    da, db = a.type.dtype, b.type.dtype
    return da.is_integer and db.is_integer and not api.result_dtype(a, b).is_integer


def _isin_by_equality(element: Value, tests: Value, invert: bool) -> Value:
    """NumPy's isin of int64 and uint64 is exact; promoted to float64 (their common dtype)
    2^60 + 1 would find 2^60. np.equal's mixed-sign loop is exact, so each test element is
    compared with it."""
    k = tests.type.size
    if k > ISIN_EQUALITY_MAX_TESTS:
        raise DTypeError(f"numpy.isin of {element.type.dtype.numpy.name} and {tests.type.dtype.numpy.name}: no dtype "
                         f"holds both exactly, and jitgrad compares them exactly only for up to "
                         f"{ISIN_EQUALITY_MAX_TESTS} test elements ({k} here); convert both to one dtype first")
    found = P.full(False, element.type.with_dtype(DType.bool))
    flat = P.reshape(tests, (k,))
    for index in range(k):
        one = P.reshape(gather(flat, P.full(index, TensorType((1,), DType.i64)), 0), ())
        found = P.logical_or(found, api.UFUNCS[np.equal](element, one))
    return P.logical_not(found) if invert else found


def _isin_operands_without_common_dtype(element: Value, tests: Value) -> tuple[Value, Value]:
    """NumPy's isin picks its method by the sizes: for few test elements (fewer than
    10 n^0.145 for n elements) it compares with `element == t` for each test element t,
    in np.equal's loop, which exists for bfloat16 against the dtypes it has no common
    dtype with (float32 or float64); otherwise it concatenates the two, which raises."""
    n, k = element.type.size, tests.type.size
    if not k < 10 * n ** 0.145:
        raise DTypeError(f"numpy.isin of {element.type.dtype.numpy.name} and {tests.type.dtype.numpy.name}: no common "
                         f"dtype, and for {n} elements and {k} test elements NumPy's sorting method concatenates "
                         "them, which raises; convert both to one dtype first")
    (dtype, other), _ = api.ufunc_dtypes(np.equal, element, tests)
    return as_value(element, dtype), as_value(tests, other)


def _refuse_data_dependent(name: str, instead: str):
    def refuse(*args, **kwargs):
        raise UnsupportedOperationError(f"numpy.{name} on traced arrays has a shape that depends on the data; "
                                        f"{instead}")
    return refuse


_UNIQUE_INSTEAD = "use jitgrad.tracing.sized.unique(x, size=n, return_index=..., return_counts=...) (a static size)"
FUNCTIONS = {
    np.sort: sort, np.argsort: argsort, np.partition: partition, np.argpartition: argpartition,
    np.lexsort: lexsort, np.searchsorted: searchsorted, np.digitize: digitize, np.interp: interp,
    np.median: median, np.nanmedian: nanmedian, np.quantile: quantile, np.percentile: percentile,
    np.nanquantile: nanquantile, np.nanpercentile: nanpercentile,
    np.nonzero: nonzero, np.argwhere: argwhere, np.unique: unique, np.flatnonzero: flatnonzero, np.isin: isin,
    np.unique_values: _refuse_data_dependent("unique_values", _UNIQUE_INSTEAD),
    np.unique_counts: _refuse_data_dependent("unique_counts", _UNIQUE_INSTEAD),
    np.unique_inverse: _refuse_data_dependent("unique_inverse", _UNIQUE_INSTEAD),
    np.unique_all: _refuse_data_dependent("unique_all", _UNIQUE_INSTEAD),
    **{getattr(np, name): _refuse_data_dependent(name, "use np.isin (a mask of the static shape) and np.where")
       for name in ("intersect1d", "setdiff1d", "union1d", "setxor1d")},
}
