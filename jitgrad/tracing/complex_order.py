"""NumPy's searching, set and order-statistics functions of complex arrays.

NumPy orders complex numbers lexicographically, real part first, with NaNs last:
[R + Rj, R + nanj, nan + Rj, nan + nanj] (`numpy_complex._sort_keys` gives three float
keys in that order). Each function here replaces the table entry of the real
implementation and hands real operands back to it, so only complex operands take these
paths:

- `searchsorted` and `isin` compare through *dense ranks*: the operands are concatenated
  and sorted once, and each element gets the number of distinct (untied) values before it,
  an integer whose order is NumPy's order of the complex values. The real `searchsorted`
  primitive then binary-searches the ranks, and `isin` looks its elements' ranks up among
  the test elements' ranks.
- `unique` (with jitgrad's static `size=`) keeps, of each group of equal elements, the one
  NumPy keeps: the first occurrence in the input for the values alone (NumPy's hash-set
  path), the first in the stable sorted order with `return_index` (NumPy's merge sort);
  with `equal_nan=True` all elements with a NaN part are one group.
- `lexsort` sorts a complex key by the three float keys.
- `nanmedian` follows NumPy's two paths: the median of the elements without a NaN part
  for a whole array or one dimension, the masked-array median (NaN parts replaced by
  inf+0j and sorted along) for one axis of a larger array.
- `histogram` takes complex `weights=` part by part, as NumPy's bincount does; a complex
  `a` is refused, as NumPy has no order to bin complex values by.
"""
from __future__ import annotations

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import DTypeError, ShapeError, UnsupportedOperationError
from jitgrad.ir import DType, TensorType, Value
from jitgrad.primitives import complex_numbers as C
from jitgrad.primitives.gather import gather, scatter, scatter_add
from jitgrad.primitives.sorting import argsort as argsort_last, searchsorted as searchsorted_primitive, take_along_last
from . import numpy_api as api
from . import numpy_complex as nc
from . import numpy_sorting as sorting
from .indexing import take
from .numpy_api import as_value
from .numpy_reductions import cumsum, nanmean


def _i64(shape) -> TensorType:
    return TensorType(tuple(shape), DType.i64)


def _has_nan(z: Value) -> Value:
    """True where either part is NaN (NumPy's isnan of complex numbers)."""
    return P.ne(z, z)


def _argsort_any(x: Value) -> Value:
    """The stable sorting permutation of each row, in NumPy's order for x's dtype."""
    return nc._argsort_last(x) if x.type.dtype.is_complex else argsort_last(x)


def _dense_ranks(z: Value) -> Value:
    """For a 1-d complex `z`, int64 ranks whose order is NumPy's order of the values: tied
    elements (equal values; elements with NaN parts in the same place of the order) share
    a rank, and each rank is the number of distinct values below it."""
    n = z.type.shape[0]
    order = nc._argsort_last(z)
    changed = None
    for key in nc._sort_keys(z):
        ordered = take_along_last(key, order)
        step = P.ne(api.getitem(ordered, slice(1, n)), api.getitem(ordered, slice(0, n - 1)))
        changed = step if changed is None else P.logical_or(changed, step)
    starts = P.concatenate([P.constant(np.array([False])), changed], 0)
    ranks_in_order = cumsum(P.convert(starts, DType.i64))
    return scatter(P.full(0, _i64((n,))), order, ranks_in_order, 0)


def _holds_complex(*operands) -> bool:
    return any(nc._holds_complex(x) for x in operands)


# --------------------------------------------------------------------------- searching

def searchsorted(a, v, side="left", sorter=None):
    """NumPy's binary search in the complex order: the dense ranks of a and v together,
    searched with the real primitive (a sorted a has nondecreasing ranks)."""
    a, v = sorting.search_operands(a, v, side, sorter)
    a, v = api.promote(a, v)
    n, m = a.type.shape[0], v.type.size
    if n == 0 or m == 0:
        return P.full(0, _i64(v.type.shape))
    ranks = _dense_ranks(P.concatenate([a, P.reshape(v, (m,))], 0))
    found = searchsorted_primitive(api.getitem(ranks, slice(0, n)), api.getitem(ranks, slice(n, n + m)), side)
    return P.reshape(found, v.type.shape)


def isin(element, test_elements, assume_unique=False, invert=False, *, kind=None):
    """NumPy's isin of complex numbers: an element is found where a test element equals it
    (==: never for a NaN part; -0.0 equals 0.0), in the operands' common dtype."""
    if kind not in (None, "sort"):
        raise ValueError(f"Invalid kind: '{kind}'. The 'table' method is only supported for boolean or integer "
                         "arrays. Please select 'sort' or None for kind.")
    element, tests = api.promote(as_value(element), as_value(test_elements))
    n, k = element.type.size, tests.type.size
    if n == 0 or k == 0:
        return P.full(bool(invert), element.type.with_dtype(DType.bool))
    ranks = _dense_ranks(P.concatenate([P.reshape(element, (n,)), P.reshape(tests, (k,))], 0))
    tested = scatter(P.full(False, TensorType((n + k,), DType.bool)), api.getitem(ranks, slice(n, n + k)),
                     P.full(True, TensorType((k,), DType.bool)), 0)
    found = P.reshape(gather(tested, api.getitem(ranks, slice(0, n)), 0), element.type.shape)
    found = P.logical_and(found, P.logical_not(_has_nan(element)))
    return P.logical_not(found) if invert else found


def lexsort(keys, axis=-1):
    """np.lexsort where some keys are complex: each key sorted in its own dtype's order."""
    return sorting.lexsort(keys, axis, argsort_row=_argsort_any)


# --------------------------------------------------------------------------- unique, with a static size

def unique(ar, return_index=False, return_inverse=False, return_counts=False, axis=None, *, equal_nan=True,
           sorted=True, size=None, fill_value=None):  # noqa: A002 - NumPy's name
    """NumPy's unique of complex numbers, `size` results padded with `fill_value` (default:
    the first unique value). Of each group of equal elements the values show the one NumPy
    keeps: the first occurrence for the values alone, the first in the stable order when
    indices, an inverse or counts are asked for."""
    x = as_value(ar)
    if size is None:
        raise sorting._need_size("unique", "sort with np.sort and compare neighbours")
    if axis is not None:
        raise UnsupportedOperationError("numpy.unique: axis= is not supported on traced arrays")
    size = sorting._static_size("unique", size)
    n = x.type.size
    if n == 0:
        raise UnsupportedOperationError("numpy.unique of an empty traced array with size=: nothing to fill from")
    flat = P.reshape(x, (n,))
    order = nc._argsort_last(flat)
    s = take_along_last(flat, order)
    nan = _has_nan(s)
    differs = P.ne(api.getitem(s, slice(1, n)), api.getitem(s, slice(0, n - 1)))
    if equal_nan:           # every element with a NaN part is one value
        differs = P.logical_and(differs, P.logical_not(P.logical_and(api.getitem(nan, slice(1, n)),
                                                                     api.getitem(nan, slice(0, n - 1)))))
    is_new = P.concatenate([P.constant(np.array([True])), differs], 0)
    if equal_nan and not (return_index or return_inverse or return_counts):
        s = P.select(nan, P.broadcast_in_dim(_first_with_nan(flat), (n,), ()), s)
    fill = api.getitem(s, 0) if fill_value is None else fill_value
    values = sorting._compact(is_new, s, size, fill)
    if not (return_index or return_inverse or return_counts):
        return values
    group = P.sub(cumsum(P.convert(is_new, DType.i64)), P.full(1, _i64((n,))))
    results = [values]
    if return_index:
        results.append(sorting._compact(is_new, order, size, 0))
    if return_inverse:
        results.append(P.reshape(scatter(P.full(0, _i64((n,))), order, group, 0), x.type.shape))
    if return_counts:
        clipped = P.minimum(group, P.full(size, group.type))
        counts = scatter_add(P.full(0, _i64((size + 1,))), clipped, P.full(1, _i64((n,))), 0)
        results.append(api.getitem(counts, slice(0, size)))
    return tuple(results)


def _first_with_nan(flat: Value) -> Value:
    """The first element (in input order) with a NaN part; element 0 where none has one.
    NumPy's hash set keeps the first element of each group it meets, and with equal_nan
    all elements with a NaN part are one group."""
    n = flat.type.shape[0]
    positions = P.constant(np.arange(n, dtype=np.int64))
    first = P.reduce_min(P.select(_has_nan(flat), positions, P.full(n, positions.type)), (0,))
    first = P.minimum(first, P.full(n - 1, first.type))
    return P.reshape(gather(flat, P.reshape(first, (1,)), 0), ())


# --------------------------------------------------------------------------- nanmedian

def nanmedian(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """NumPy's nanmedian of complex numbers (NaN in either part counts as NaN). For the whole
    array, a 1-d one, or slices of 600 or more, NumPy takes np.median of the elements
    without NaN (an all-NaN slice gives its last element); along an axis of a larger array
    it takes np.ma.median with those elements masked: filled with inf+0j and sorted along,
    the two middle positions of the unmasked count read (a masked one replaced by
    inf+infj), summed and divided by 2 (an all-NaN slice gives nan+0j)."""
    if out is not None:
        raise UnsupportedOperationError("numpy.nanmedian: out= is not supported")
    x = as_value(a)
    if x.type.size == 0:            # NumPy: the nanmean of the empty array
        return nanmean(x, axis=axis, keepdims=keepdims)
    rows, kept_shape, axes = sorting._reduced_last(x, axis, "nanmedian")
    n = rows.type.shape[-1]
    if axis is not None and kept_shape and n < sorting.NANMEDIAN_MASKED_MAX_LENGTH:
        result = _masked_median(rows)
    else:
        result = _median_of_numbers(rows)
    return sorting._keepdims(result, x.type.shape, axes, keepdims)


def _middle(s: Value, count: Value, offset) -> Value:
    """s[..., (count - offset) // 2] per row (positions clamped into the row)."""
    position = P.floor_divide(P.sub(count, P.full(offset, count.type)), P.full(2, count.type))
    return sorting._at(s, position)


def _complex_constant(value: complex, like: Value) -> Value:
    return P.full(value, like.type)


def _numpy_sum(*terms: Value) -> Value:
    """np.sum of one or two elements as NumPy computes it: added to the reduction's
    initial +0 (so a sum of -0.0 parts is +0.0)."""
    total = terms[0] if len(terms) == 1 else P.add(*terms)
    return P.add(_complex_constant(0, total), total)


def _median_of_numbers(rows: Value) -> Value:
    """np.median of each row's elements without a NaN part (their one or two middle
    elements in NumPy's order, their mean as np.mean computes it: the sum divided by the
    count as a complex division); the row's last element where all have a NaN part."""
    s = nc._sort_last(rows)
    count = sorting._count(P.logical_not(_has_nan(rows)))
    low, high = _middle(s, count, 1), _middle(s, count, 0)
    odd = P.eq(P.remainder(count, P.full(2, count.type)), P.full(1, count.type))
    one = P.div(_numpy_sum(low), _complex_constant(1, low))
    two = P.div(_numpy_sum(low, high), _complex_constant(2, low))
    result = P.select(odd, one, two)
    last = api.getitem(rows, (Ellipsis, -1))
    return P.select(P.eq(count, P.full(0, count.type)), last, result)


def _masked_median(rows: Value) -> Value:
    """np.ma.median of each row with the elements with a NaN part masked (see nanmedian).
    The masked elements tie with unmasked inf+0j and inf-0j; NumPy's quicksort keeps ties
    in input order for rows of up to 16 elements, which the stable sort here reproduces."""
    nan = _has_nan(rows)
    filled = P.select(nan, _complex_constant(complex(np.inf, 0.0), rows), rows)
    order = nc._argsort_last(filled)
    s, s_masked = take_along_last(filled, order), take_along_last(nan, order)
    count = sorting._count(P.logical_not(nan))
    minimum_fill = complex(np.inf, np.inf)          # np.ma.minimum_fill_value of complex arrays

    def at(offset):
        value, was_masked = _middle(s, count, offset), _middle(s_masked, count, offset)
        return P.select(was_masked, _complex_constant(minimum_fill, value), value)

    low, high = at(1), at(0)        # the same element for an odd count
    result = P.div(_numpy_sum(low, high), _complex_constant(2, low))
    return P.select(P.eq(count, P.full(0, count.type)), _complex_constant(complex(np.nan, 0.0), result), result)


# --------------------------------------------------------------------------- histogram

def _refuse_complex_data(name: str):
    def refuse(*args, **kwargs):
        raise DTypeError(f"numpy.{name} of complex numbers: NumPy bins complex values by their real part after a "
                         "ComplexWarning for some bins= and raises for others; pass np.real(a) or np.abs(a)")
    return refuse


def _histogram_of_complex_weights(real_histogram):
    """np.histogram of real data with complex weights: NumPy sums the real and the
    imaginary parts of the weights separately (each as real weights are summed); a
    density divides the complex counts by the bin widths and their sum, as NumPy does."""
    def histogram(a, bins=10, range=None, density=None, weights=None):  # noqa: A002 - NumPy's name
        w = as_value(weights)
        re, edges = real_histogram(a, bins, range, None, C.real(w))
        im, _ = real_histogram(a, bins, range, None, C.imag(w))
        counts = C.make_complex(as_value(re), as_value(im))
        if not density:
            return counts, edges
        widths = np.array(np.diff(np.asarray(edges)), float)      # NumPy's bin widths, in float64
        divide = api.UFUNCS[np.true_divide]
        return divide(divide(counts, widths), api.sum(counts)), edges
    return histogram


def _histogram(real_histogram):
    refuse = _refuse_complex_data("histogram")
    with_complex_weights = _histogram_of_complex_weights(real_histogram)

    def histogram(a, bins=10, range=None, density=None, weights=None):  # noqa: A002 - NumPy's name
        if nc._holds_complex(a):
            refuse()
        if weights is not None and nc._holds_complex(weights):
            return with_complex_weights(a, bins, range, density, weights)
        return real_histogram(a, bins, range, density, weights)
    return histogram


# --------------------------------------------------------------------------- the tables

def _real_implementation(function):
    """The table's implementation of `function` for real operands (without the complex
    refusal that numpy_complex wraps around it)."""
    impl = api.FUNCTIONS[function]
    return getattr(impl, "__wrapped__", impl)


def _either_complex(complex_impl, real_impl):
    """`complex_impl` when any operand (positional or keyword) holds complex numbers."""
    def impl(*args, **kwargs):
        if _holds_complex(*args, *kwargs.values()):
            return complex_impl(*args, **kwargs)
        return real_impl(*args, **kwargs)
    impl.__name__ = getattr(real_impl, "__name__", "impl")
    return impl


def _refuse_like_numpy(name: str, numpy_says: str):
    def refuse(*args, **kwargs):
        raise DTypeError(f"numpy.{name} of complex numbers: {numpy_says} (NumPy raises TypeError)")
    return refuse


_COMPLEX_IMPLEMENTATIONS = {
    np.searchsorted: searchsorted, np.isin: isin, np.lexsort: lexsort, np.unique: unique, np.nanmedian: nanmedian,
    np.histogram_bin_edges: _refuse_complex_data("histogram_bin_edges"),
    np.digitize: _refuse_like_numpy("digitize", "x and bins may not be complex"),
    np.bincount: _refuse_like_numpy("bincount", "cannot cast complex values to float64 under the 'safe' rule"),
}
_SAME_AS_REAL = (np.unique_values, np.unique_counts, np.unique_inverse, np.unique_all,
                 np.intersect1d, np.union1d, np.setdiff1d, np.setxor1d)
"""Refused for real and complex operands alike (their shapes depend on the data)."""

COMPLEX_FUNCTIONS = frozenset({*_COMPLEX_IMPLEMENTATIONS, *_SAME_AS_REAL, np.histogram})
"""The NumPy functions here that take complex arrays, or refuse them as NumPy does
(tests/test_complex_ordering.py)."""

for _function, _impl in _COMPLEX_IMPLEMENTATIONS.items():
    api.FUNCTIONS[_function] = _either_complex(_impl, _real_implementation(_function))
for _function in _SAME_AS_REAL:
    api.FUNCTIONS[_function] = _real_implementation(_function)
api.FUNCTIONS[np.histogram] = _histogram(_real_implementation(np.histogram))


def unique_of_any(ar, return_index=False, return_inverse=False, return_counts=False, *, size, fill_value=None,
                  equal_nan=True):
    """`jitgrad.tracing.sized.unique`'s implementation: the complex one for complex arrays."""
    impl = unique if nc._holds_complex(ar) else sorting.unique
    return impl(ar, return_index, return_inverse, return_counts, size=size, fill_value=fill_value,
                equal_nan=equal_nan)
