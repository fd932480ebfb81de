"""More of NumPy's API, written as NumPy programs on traced arrays.

Each function here follows NumPy's own Python implementation step by step, calling
NumPy functions on `Tracer`s (which dispatch to jitgrad), so dtypes, broadcasting and
rounding follow NumPy's and the derivatives come from the functions they call. What
NumPy decides from data (the output length of `bincount`, a `compress` mask) must be
static here: constants, not traced values; otherwise the call raises, naming what to
write instead.

The module registers its functions in `numpy_api.FUNCTIONS`/`UFUNCS` and its trace
context (`np.array`/`np.asarray`/`np.full` of traced values) in `tracer.TRACE_CONTEXTS`
when `jitgrad.tracing` is imported.
"""
from __future__ import annotations

import builtins
import operator

import numpy as np
from numpy.lib import _function_base_impl as numpy_function_base

from jitgrad.errors import DTypeError, ShapeError, UnsupportedOperationError
from jitgrad.ir import Value
from . import numpy_api as api
from jitgrad.primitives.bits import signbit as sign_bit_of
from jitgrad.primitives.complex_numbers import make_complex
from .module_patches import ModulePatches
from .tracer import TRACE_CONTEXTS, Tracer, apply

# --------------------------------------------------------------------------- Values <-> Tracers

def _weak_of(value: Value):
    return getattr(api._WEAK, "values", {}).get(value, False)


def _to_tracers(x):
    if isinstance(x, Value):
        return Tracer(x, weak=_weak_of(x))
    if isinstance(x, (list, tuple)):
        return type(x)(_to_tracers(item) for item in x)
    return x


def _to_values(x):
    if isinstance(x, Tracer):
        return x.value
    if isinstance(x, (list, tuple)):
        return type(x)(_to_values(item) for item in x)
    return x


def numpy_program(fn):
    """A FUNCTIONS entry (which receives IR values) from `fn`, written on Tracers."""
    def impl(*args, **kwargs):
        result = fn(*_to_tracers(args), **{k: _to_tracers(v) for k, v in kwargs.items()})
        return _to_values(result)
    impl.__name__ = fn.__name__
    impl.__doc__ = fn.__doc__
    return impl


def _traced(x) -> bool:
    if isinstance(x, Tracer):
        return True
    return isinstance(x, (list, tuple)) and builtins.any(_traced(item) for item in x)


def _static(x, name: str, what: str, instead: str) -> np.ndarray:
    """`x` as a NumPy array, or an error saying the traced value must be static."""
    if _traced(x):
        raise UnsupportedOperationError(f"numpy.{name} with a traced {what} has a result shape that depends on "
                                        f"the data; {instead}")
    return np.asarray(x)


# --------------------------------------------------------------------------- products

def vecdot(a, b, /, **kwargs):
    """sum(conj(a) * b) over the last axis: NumPy conjugates the first vector."""
    _no_gufunc_options("vecdot", kwargs)
    return np.matmul(np.expand_dims(_conjugated(a), -2), np.expand_dims(b, -1))[..., 0, 0]


def matvec(a, v, /, **kwargs):
    _no_gufunc_options("matvec", kwargs)
    return np.matmul(a, np.expand_dims(v, -1))[..., 0]


def vecmat(v, a, /, **kwargs):
    """conj(v) @ a: NumPy conjugates the vector (matvec conjugates nothing)."""
    _no_gufunc_options("vecmat", kwargs)
    return np.matmul(np.expand_dims(_conjugated(v), -2), a)[..., 0, :]


def _conjugated(x):
    """np.conj(x) for complex `x`; a real `x` as it is."""
    return np.conj(x) if np.iscomplexobj(x) else x


def _no_gufunc_options(name, kwargs):
    if kwargs:
        raise UnsupportedOperationError(f"numpy.{name}: arguments {sorted(kwargs)} are not supported")


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def einsum(*operands, out=None, optimize=False, **kwargs):
    """np.einsum with ellipses, repeated indices (diagonals) and the operand-list form,
    rewritten to the plain string form numpy_api.einsum computes."""
    if kwargs:
        raise UnsupportedOperationError(f"numpy.einsum: arguments {sorted(kwargs)} are not supported")
    if out is not None:
        raise UnsupportedOperationError("numpy.einsum(..., out=...) is not supported: traced arrays are immutable")
    subscripts, arrays = _einsum_string(operands)
    inputs, arrow, output = subscripts.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if len(terms) != len(arrays):
        raise ShapeError(f"einsum: {len(terms)} subscripts for {len(arrays)} operands")
    arrays = [x if isinstance(x, Tracer) else np.asarray(x) for x in arrays]
    ndims = [np.ndim(x) for x in arrays]
    used = set(subscripts)
    free = [c for c in _LETTERS if c not in used]
    widest = builtins.max([n - len(t.replace("...", "")) for t, n in zip(terms, ndims) if "..." in t] + [0])
    ellipsis = "".join(free[:widest])
    terms = [t.replace("...", ellipsis[widest - (n - len(t.replace("...", ""))):]) if "..." in t else t
             for t, n in zip(terms, ndims, strict=True)]
    if arrow:
        output = output.replace("...", ellipsis)
    else:
        letters = "".join(terms)
        named = "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ellipsis))
        output = ellipsis + named
    for k, (term, x) in enumerate(zip(terms, arrays, strict=True)):
        if len(term) != np.ndim(x):
            raise ValueError(f"einstein sum subscripts string contains too {'many' if len(term) > np.ndim(x) else 'few'}"
                             f" subscripts for operand {k}")
    arrays, terms = zip(*[_einsum_diagonals(x, t) for x, t in zip(arrays, terms, strict=True)])
    return api.einsum(",".join(terms) + "->" + output, *[_to_values(x) for x in arrays])


def _einsum_string(operands):
    if operands and isinstance(operands[0], str):
        return operands[0], list(operands[1:])
    items = list(operands)
    arrays, terms = [], []
    while len(items) >= 2:
        arrays.append(items.pop(0))
        terms.append(_sublist(items.pop(0)))
    output = "->" + _sublist(items.pop(0)) if items else ""
    return ",".join(terms) + output, arrays


def _sublist(indices) -> str:
    return "".join("..." if i is Ellipsis else _LETTERS[operator.index(i)] for i in indices)


def _einsum_diagonals(x, term: str):
    """Repeated indices in one operand select its diagonal (NumPy's `ii->i`)."""
    while len(set(term)) != len(term):
        c = next(c for c in term if term.count(c) > 1)
        i = term.index(c)
        j = term.index(c, i + 1)
        if np.shape(x)[i] != np.shape(x)[j]:
            raise ValueError(f"dimensions in single operand for collapsing index '{c}' don't match "
                             f"({np.shape(x)[i]} != {np.shape(x)[j]})")
        x = np.diagonal(x, axis1=i, axis2=j)
        term = "".join(ch for k, ch in enumerate(term) if k not in (i, j)) + c
    return x, term


# --------------------------------------------------------------------------- shapes

def block(arrays):
    """NumPy's block: the nesting depth of the lists gives the axes, innermost lists
    concatenated along the last axis; every array is first given the result's rank."""
    depth, result_ndim = _block_depth(arrays)

    def build(item, level):
        if isinstance(item, list):
            return np.concatenate([build(x, level + 1) for x in item], axis=-(depth - level))
        x = item if isinstance(item, Tracer) else np.asarray(item)
        return np.reshape(x, (1,) * (result_ndim - np.ndim(x)) + np.shape(x))
    return build(arrays, 0)


def _block_depth(arrays) -> tuple[int, int]:
    if isinstance(arrays, tuple):
        raise TypeError("numpy.block: tuples are not allowed as list items; use lists")
    if not isinstance(arrays, list):
        return 0, np.ndim(arrays)
    if not arrays:
        raise ValueError("numpy.block: lists cannot be empty")
    found = [_block_depth(x) for x in arrays]
    if len({d for d, _ in found}) != 1:
        raise ValueError("numpy.block: list depths are mismatched")
    depth = found[0][0] + 1
    return depth, builtins.max(depth, builtins.max(n for _, n in found))


def insert(arr, obj, values, axis=None):
    """NumPy's insert with static indices (an int, a slice, a sequence or a boolean mask):
    the result is concatenated from slices of `arr` and of the broadcast `values`."""
    arr = arr if isinstance(arr, Tracer) else np.asarray(arr)
    if axis is None:
        arr = np.ravel(arr)
        axis = 0
    ndim = np.ndim(arr)
    axis = axis + ndim if -ndim <= axis < 0 else axis
    if not 0 <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim)
    n = np.shape(arr)[axis]
    if isinstance(obj, slice):
        obj = np.arange(*obj.indices(n))
    obj = _static(obj, "insert", "index", "pass the positions as Python ints")
    if obj.dtype == bool:
        indices = np.flatnonzero(obj)
    else:
        indices = obj
    values = values if isinstance(values, Tracer) else np.asarray(values)
    if indices.size == 1:
        index = int(indices.item())
        if not -n <= index <= n:
            raise IndexError(f"index {index} is out of bounds for axis {axis} with size {n}")
        index += n if index < 0 else 0
        values = np.astype(np.reshape(values, (1,) * (ndim - np.ndim(values)) + np.shape(values)), arr.dtype)
        if indices.ndim == 0:
            values = np.moveaxis(values, 0, axis)
        count = np.shape(values)[axis]
        shape = list(np.shape(arr))
        shape[axis] = count
        values = np.broadcast_to(values, tuple(shape))
        return np.concatenate([_take_range(arr, 0, index, axis), values, _take_range(arr, index, n, axis)], axis=axis)
    indices = indices.astype(np.intp).ravel()
    if indices.size and (indices.min() < -n or indices.max() > n):
        raise IndexError(f"index array argument obj to insert out of bounds for axis {axis} with size {n}")
    indices = np.where(indices < 0, indices + n, indices)
    count = indices.size
    order = np.argsort(indices, kind="mergesort")
    positions = np.empty(count, np.intp)
    positions[order] = indices[order] + np.arange(count)
    shape = list(np.shape(arr))
    shape[axis] = count
    values = np.broadcast_to(np.astype(values, arr.dtype), tuple(shape))
    pieces, taken, position = [], 0, 0
    source_of = {int(p): k for k, p in enumerate(positions)}
    while position < n + count:
        if position in source_of:
            k = source_of[position]
            pieces.append(_take_range(values, k, k + 1, axis))
            position += 1
            continue
        run = 0
        while position + run < n + count and position + run not in source_of:
            run += 1
        pieces.append(_take_range(arr, taken, taken + run, axis))
        taken += run
        position += run
    return np.concatenate(pieces, axis=axis) if pieces else arr


def _take_range(x, start: int, stop: int, axis: int):
    index = [slice(None)] * np.ndim(x)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def compress(condition, a, axis=None, out=None):
    if out is not None:
        raise UnsupportedOperationError("numpy.compress(..., out=...) is not supported: traced arrays are immutable")
    condition = _static(condition, "compress", "condition", "use np.where(condition, a, 0) to keep the shape")
    if condition.ndim != 1:
        raise ValueError("condition must be a 1-d array")
    if axis is None:
        a, axis = np.ravel(a), 0
    n = np.shape(a)[axis]
    kept = np.flatnonzero(condition)
    if kept.size and kept.max() >= n:
        raise IndexError(f"index {kept.max()} is out of bounds for axis {axis} with size {n}")
    return np.take(a, kept, axis=axis)


def extract(condition, arr):
    condition = _static(condition, "extract", "condition", "use np.where(condition, arr, 0) to keep the shape")
    return np.take(np.ravel(arr), np.flatnonzero(np.ravel(condition)))


def piecewise(x, condlist, funclist, *args, **kw):
    """NumPy's piecewise as selects: each function is applied to every element and its
    results are kept where its condition holds (later conditions win, as NumPy's
    successive assignments do). The functions must be elementwise, as NumPy's results
    for them do not depend on which elements are passed."""
    x = x if isinstance(x, Tracer) else np.asarray(x)
    if np.isscalar(condlist) or (not isinstance(condlist[0], (list, np.ndarray, Tracer)) and np.ndim(x) != 0):
        condlist = [condlist]
    conditions = [np.astype(c, bool) if isinstance(c, Tracer) else np.asarray(c, dtype=bool) for c in condlist]
    if len(conditions) == len(funclist) - 1:
        conditions.append(~np.any(np.stack(conditions), axis=0))
    elif len(conditions) != len(funclist):
        raise ValueError(f"with {len(conditions)} condition(s), either {len(conditions)} or "
                         f"{len(conditions) + 1} functions are expected")
    y = np.zeros_like(x)
    for condition, func in zip(conditions, funclist, strict=True):
        value = func(x, *args, **kw) if callable(func) else func
        y = np.where(condition, np.astype(value, y.dtype) if isinstance(value, Tracer) else
                     np.asarray(value).astype(y.dtype), y)
    return y


# --------------------------------------------------------------------------- statistics

def cov(m, y=None, rowvar=True, bias=False, ddof=None, fweights=None, aweights=None, *, dtype=None):
    """NumPy's cov, step by step (weights are static: NumPy checks their values)."""
    if ddof is not None and ddof != int(ddof):
        raise ValueError("ddof must be integer")
    m = m if isinstance(m, Tracer) else np.asarray(m)
    if np.ndim(m) > 2:
        raise ValueError("m has more than 2 dimensions")
    if y is not None:
        y = y if isinstance(y, Tracer) else np.asarray(y)
        if np.ndim(y) > 2:
            raise ValueError("y has more than 2 dimensions")
    if dtype is None:
        dtype = np.result_type(m.dtype, np.float64) if y is None else np.result_type(m.dtype, y.dtype, np.float64)
    X = np.astype(np.atleast_2d(m), dtype)
    if not rowvar and np.ndim(m) != 1:
        X = X.T
    if np.shape(X)[0] == 0:
        return np.array([]).reshape(0, 0)
    if y is not None:
        Y = np.astype(np.atleast_2d(y), dtype)
        if not rowvar and np.shape(Y)[0] != 1:
            Y = Y.T
        X = np.concatenate((X, Y), axis=0)
    if ddof is None:
        ddof = 1 if bias == 0 else 0
    w = None
    if fweights is not None:
        fweights = _static(fweights, "cov", "fweights", "pass the weights as a NumPy array").astype(float)
        w = fweights
    if aweights is not None:
        aweights = _static(aweights, "cov", "aweights", "pass the weights as a NumPy array").astype(float)
        w = aweights if w is None else w * aweights
    samples = np.shape(X)[1]
    if w is not None and (w.ndim != 1 or w.shape[0] != samples):
        raise RuntimeError("incompatible numbers of samples and weights")
    avg = np.average(X, axis=1, weights=w)
    if w is None:
        fact = samples - ddof
    else:
        w_sum = np.average(np.zeros((1, samples), dtype), axis=1, weights=w, returned=True)[1][0]
        if ddof == 0:
            fact = w_sum
        elif aweights is None:
            fact = w_sum - ddof
        else:
            fact = w_sum - ddof * np.sum(w * aweights) / w_sum
    if fact <= 0:
        fact = 0.0
    X = X - avg[:, None]
    X_T = X.T if w is None else (X * w).T
    c = np.dot(X, _conjugated(X_T))
    c = np.astype(c * np.true_divide(1, fact), c.dtype)      # NumPy: c *= 1 / fact, in c's dtype
    return np.squeeze(c)


def corrcoef(x, y=None, rowvar=True, *, dtype=None):
    """NumPy's steps: the covariance divided by the square roots of the real parts of its
    diagonal, then each part clipped to [-1, 1] on its own."""
    c = cov(x, y, rowvar, dtype=dtype)
    if np.ndim(c) != 2:
        return c / c
    d = np.diagonal(c)
    stddev = np.sqrt(np.real(d))
    c = c / stddev[:, None]
    c = c / stddev[None, :]
    if np.iscomplexobj(c):
        return apply(make_complex, (np.clip(np.real(c), -1, 1), np.clip(np.imag(c), -1, 1)))
    return np.clip(c, -1, 1)


def histogram(a, bins=10, range=None, density=None, weights=None):  # noqa: A002 - NumPy's name
    """Counts (or weight sums) per bin from comparisons with the bin edges, which must be
    static: `bins` a number with `range=`, or an array of edges. The counts have no
    gradient; the weight sums do."""
    edges = _static_edges(a, bins, range, weights)
    x = np.ravel(a)
    w = None if weights is None else np.ravel(weights)
    count = edges.size - 1
    lower = edges[:-1]
    upper = edges[1:]
    in_bin = (x[:, None] >= lower) & np.concatenate([x[:, None] < upper[:-1], x[:, None] <= upper[-1:]], axis=1)
    if w is None:
        hist = np.sum(in_bin, axis=0, dtype=np.intp)
    elif np.ndim(bins) == 0:
        # equal bins: NumPy sums each bin's weights in float64 (bincount), cast to their dtype
        hist = np.astype(np.sum(np.where(in_bin, np.astype(w, np.float64)[:, None], 0.0), axis=0), w.dtype)
    else:
        # given edges: NumPy differences the cumulative weights below each edge (a NaN or
        # infinite weight reaches every later bin, as there)
        below = np.concatenate([x[:, None] < edges[:-1], x[:, None] <= edges[-1:]], axis=1)
        cumulative = np.sum(np.where(below, w[:, None], np.zeros((), w.dtype)), axis=0)
        hist = np.diff(np.astype(cumulative, w.dtype))        # NumPy accumulates into w's dtype
    if density:
        widths = np.diff(edges)
        return hist / widths / np.sum(hist), edges
    return hist, edges


def _static_edges(a, bins, range_, weights) -> np.ndarray:  # noqa: ARG001 - weights: NumPy's signature
    if isinstance(bins, str):
        raise UnsupportedOperationError(f"numpy.histogram with bins={bins!r} derives the bins from the data; "
                                        "pass a number of bins with range=, or the bin edges")
    bins = _static(bins, "histogram", "bins", "pass the bin edges as a NumPy array")
    if bins.ndim == 1:
        if np.any(bins[:-1] > bins[1:]):
            raise ValueError("`bins` must increase monotonically, when an array")
        return bins
    if range_ is None:
        raise UnsupportedOperationError("numpy.histogram of a traced array needs range=(low, high) or explicit bin "
                                        "edges: NumPy takes the range from the data's minimum and maximum")
    low, high = (r.item() for r in _static(range_, "histogram", "range", "pass the range as Python numbers"))
    data_dtype = a.dtype if isinstance(a, Tracer) else np.asarray(a).dtype
    return np.histogram_bin_edges(np.zeros(0, data_dtype), operator.index(bins), (low, high))   # NumPy's own


def bincount(x, weights=None, minlength=0):
    """Counts or weight sums per value of a static `x` (its length is x.max() + 1):
    traced weights are differentiable."""
    x = _static(x, "bincount", "x", "pass x as a NumPy array, or sum one-hot rows: "
                "np.sum(x[:, None] == np.arange(n), axis=0)")
    length = builtins.max(int(x.max()) + 1 if x.size else 0, operator.index(minlength))
    if x.size and x.min() < 0:
        raise ValueError("'list' argument must have no negative elements")
    onehot = x.ravel()[:, None] == np.arange(length)
    if weights is None or x.size == 0:          # NumPy counts in intp for an empty x, weights or not
        return np.sum(onehot, axis=0, dtype=np.intp)
    w = np.astype(np.ravel(weights), np.float64) if isinstance(weights, Tracer) else np.ravel(weights).astype(float)
    return np.sum(np.where(onehot, w[:, None], 0.0), axis=0)


# --------------------------------------------------------------------------- polynomials

def polyder(p, m=1):
    m = int(m)
    if m < 0:
        raise ValueError("Order of derivative must be positive (see polyint)")
    p = p if isinstance(p, Tracer) else np.asarray(p)
    for _ in builtins.range(m):
        n = len(p) - 1
        p = p[:-1] * np.arange(n, 0, -1)
    return p


def polyint(p, m=1, k=None):
    m = int(m)
    if m < 0:
        raise ValueError("Order of integral must be positive (see polyder)")
    k = np.zeros(m, float) if k is None else np.atleast_1d(k)
    if len(k) == 1 and m > 1:
        k = k[0] * np.ones(m, float)
    if len(k) < m:
        raise ValueError("k must be a scalar or a rank-1 array of length 1 or >m.")
    p = p if isinstance(p, Tracer) else np.asarray(p)
    for i in builtins.range(m):
        p = np.concatenate((p / np.arange(len(p), 0, -1), np.reshape(k[i], (1,))))
    return p


def _poly_combine(ufunc):
    def combine(a1, a2):
        a1, a2 = np.atleast_1d(a1), np.atleast_1d(a2)
        diff = len(a2) - len(a1)
        if diff > 0:
            a1 = np.concatenate((np.zeros(diff, a1.dtype), a1))
        elif diff < 0:
            a2 = np.concatenate((np.zeros(-diff, a2.dtype), a2))
        return ufunc(a1, a2)
    combine.__name__ = f"poly{ufunc.__name__[:3]}"
    return combine


def polymul(a1, a2):
    """np.convolve of the coefficients. NumPy first drops leading zero coefficients
    (poly1d), which changes the length with the values: traced coefficients keep theirs
    (the same polynomial, with leading zeros); NumPy arrays are trimmed as NumPy does."""
    a1, a2 = (np.trim_zeros(np.atleast_1d(np.asarray(a)), "f") if not isinstance(a, Tracer) else np.atleast_1d(a)
              for a in (a1, a2))
    a1 = a1 if len(a1) else np.zeros(1, a1.dtype)
    a2 = a2 if len(a2) else np.zeros(1, a2.dtype)
    return np.convolve(a1, a2)


def polyfit(x, y, deg, rcond=None, full=False, w=None, cov=False):  # noqa: A002 - NumPy's names
    """NumPy's polyfit (scaled Vandermonde matrix, np.linalg.lstsq), without the options
    that report diagnostics."""
    if full or cov or w is not None:
        raise UnsupportedOperationError("numpy.polyfit with full=, w= or cov= is not supported")
    order = operator.index(deg) + 1
    x = np.astype(x, np.float64) + 0.0 if isinstance(x, Tracer) else np.asarray(x) + 0.0
    y = np.astype(y, np.float64) + 0.0 if isinstance(y, Tracer) else np.asarray(y) + 0.0
    if np.ndim(x) != 1 or np.shape(x)[0] == 0 or np.ndim(y) not in (1, 2) or np.shape(x)[0] != np.shape(y)[0]:
        raise TypeError("numpy.polyfit: x must be a non-empty vector and y of the same length")
    if rcond is None:
        rcond = len(x) * np.finfo(np.float64).eps
    lhs = np.vander(x, order)
    scale = np.sqrt(np.sum(lhs * lhs, axis=0))
    lhs = lhs / scale
    c = np.linalg.lstsq(lhs, y, rcond)[0]
    return (c.T / scale).T


# --------------------------------------------------------------------------- elementwise

def i0(x):
    """NumPy's i0: two Chebyshev series (NumPy's coefficients and evaluation order)."""
    x = x if isinstance(x, Tracer) else np.asarray(x)
    if x.dtype.kind == "c":
        raise TypeError("i0 not supported for complex values")
    if x.dtype.kind != "f":
        x = np.astype(x, float)
    x = np.abs(x)
    small = np.exp(x) * _chbevl(x / 2.0 - 2, numpy_function_base._i0A)
    safe = np.where(x <= 8.0, 16.0, x)
    large = np.exp(safe) * _chbevl(32.0 / safe - 2.0, numpy_function_base._i0B) / np.sqrt(safe)
    return np.where(x <= 8.0, small, np.astype(large, small.dtype))


def _chbevl(x, vals):
    b0 = vals[0]
    b1 = 0.0
    b2 = 0.0
    for i in builtins.range(1, len(vals)):
        b2 = b1
        b1 = b0
        b0 = x * b1 - b2 + vals[i]
    return 0.5 * (b0 - b2)


def modf(x, /, **kwargs):
    """(fractional part, integral part), both with x's sign: C's modf."""
    _no_gufunc_options("modf", kwargs)
    (dtype,), _ = api.ufunc_dtypes(np.modf, _to_values(x))
    x = np.astype(x, dtype.numpy)
    whole = np.trunc(x)
    fraction = np.where(np.isinf(x), np.where(x < 0, -0.0, 0.0), x - whole)
    fraction = np.where(fraction == 0, x * 0, fraction)         # a zero fraction keeps x's sign
    fraction = np.where(np.isinf(x), np.where(x < 0, -0.0, 0.0), fraction)
    return np.astype(fraction, dtype.numpy), whole


def _finfo(dtype):
    """np.finfo, or ml_dtypes' for bfloat16 (which np.finfo does not know)."""
    import ml_dtypes
    return ml_dtypes.finfo(dtype) if np.dtype(dtype) == np.dtype(ml_dtypes.bfloat16) else np.finfo(dtype)


def _powers_of_two(dtype):
    info = _finfo(dtype)
    steps = [2 ** k for k in builtins.range(int(np.log2(info.maxexp)) - 1, -1, -1)]
    return info, steps


def frexp(x, /, **kwargs):
    """Mantissa in [0.5, 1) and exponent, by exact multiplications with powers of two
    (one halving step per exponent bit); x itself (and exponent 0) for 0, inf and NaN."""
    _no_gufunc_options("frexp", kwargs)
    (dtype,), _ = api.ufunc_dtypes(np.frexp, _to_values(x))
    dtype = dtype.numpy
    x = np.astype(x, dtype)
    info, steps = _powers_of_two(dtype)
    a = np.abs(x)
    subnormal = a < info.smallest_normal
    shift = info.nmant + 2
    m = np.where(subnormal, a * dtype.type(2.0 ** shift), a)
    e = np.where(subnormal, -shift, 0).astype(np.int32)
    for k in steps:
        big = m >= dtype.type(2.0 ** k)
        m = np.where(big, m * dtype.type(2.0 ** -k), m)
        e = e + np.where(big, k, 0).astype(np.int32)
    for k in steps:
        small = m < dtype.type(2.0 ** (1 - k))
        m = np.where(small, m * dtype.type(2.0 ** k), m)
        e = e - np.where(small, k, 0).astype(np.int32)
    special = (a == 0) | np.isinf(a) | np.isnan(a)
    mantissa = np.where(special, x, np.where(x < 0, -m, m) * dtype.type(0.5))
    exponent = np.where(special, 0, e + 1).astype(np.int32)
    return mantissa, exponent


def _float_sign_bit(x: Tracer) -> Tracer:
    """The IEEE sign bit of a traced float array (-0.0 and NaN signs included)."""
    return apply(sign_bit_of, (x,))


def copysign(x1, x2, /, **kwargs):
    """|x1| with the sign bit of x2 (of -0.0 and of a NaN too), in NumPy's loop dtype;
    a NaN x1 takes x2's sign like any other value (fabs clears it, negation sets it)."""
    _no_gufunc_options("copysign", kwargs)
    (d1, _), (out,) = api.ufunc_dtypes(np.copysign, _to_values(x1), _to_values(x2))
    if isinstance(x2, Tracer):
        negative = _float_sign_bit(x2) if x2.value.type.dtype.is_float else x2 < 0
    else:
        negative = np.signbit(np.asarray(x2))
    magnitude = np.abs(np.astype(x1, out.numpy) if isinstance(x1, Tracer) else np.asarray(x1, out.numpy))
    return np.where(negative, -magnitude, magnitude)


def signbit(x, /, **kwargs):
    _no_gufunc_options("signbit", kwargs)
    if x.value.type.dtype.is_float:         # bfloat16 too (NumPy's kind 'V')
        return _float_sign_bit(x)
    return x < 0


def _power_of_two(j, dtype):
    """2**j for integer j (a traced int64 array) where 2**j is representable: the
    product of 2**(+-2**bit) over j's bits, every partial product a power of two
    between 1 and 2**j, so each multiplication is exact."""
    info = _finfo(dtype)
    magnitude = np.abs(j)
    result = np.ones(np.shape(j), dtype)
    bits = int(np.ceil(np.log2(-(info.minexp - info.nmant)))) + 1
    for bit in builtins.range(bits):
        with np.errstate(over="ignore"):            # 2**(2**bit) beyond the range is never selected
            up, down = np.ldexp(dtype.type(1), 2 ** bit), np.ldexp(dtype.type(1), -(2 ** bit))
        factor = np.where(j < 0, down, up)
        result = result * np.where(((magnitude >> bit) & 1) == 1, factor, dtype.type(1))
    return result


def ldexp(x1, x2, /, **kwargs):
    """x1 * 2**x2 rounded once, as C's ldexp: frexp's mantissa m times 2**(e + x2) in two
    steps, the first exact (its result a normal number), the second rounding once."""
    _no_gufunc_options("ldexp", kwargs)
    (_, d2), (out,) = api.ufunc_dtypes(np.ldexp, _to_values(x1), _to_values(x2))
    dtype = out.numpy
    info = _finfo(dtype)
    x = np.astype(x1, dtype) if isinstance(x1, Tracer) else np.asarray(x1, dtype)
    n = np.astype(x2, np.int64) if isinstance(x2, Tracer) else np.asarray(x2).astype(np.int64)
    mantissa, exponent = frexp(x)
    low, high = info.minexp - info.nmant - 3, info.maxexp + 2
    k = np.clip(np.astype(exponent, np.int64) + np.clip(n, -(1 << 20), 1 << 20), low, high)
    first = np.where(k < info.minexp, info.minexp + 1, np.where(k > info.maxexp - 1, info.maxexp - 1, 0))
    return (mantissa * _power_of_two(first, dtype)) * _power_of_two(k - first, dtype)


# --------------------------------------------------------------------------- static facts, small compositions

def _dtype_stand_in(x):
    """What np.result_type sees for an argument: a traced array's dtype, a Python scalar
    for a weak (Python scalar) one."""
    if isinstance(x, Tracer):
        if x.weak:
            return {np.dtype(bool): False, np.dtype(np.int64): 0}.get(x.dtype, 0.0)
        return x.dtype
    return x


def result_type(*arrays_and_dtypes):
    return np.result_type(*(_dtype_stand_in(x) for x in arrays_and_dtypes))


def angle(z, deg=False):
    """The angle of a real number: arctan2(+0, x) (0, or pi for negatives and -0.0)."""
    z = z if isinstance(z, Tracer) else np.asarray(z)
    result = np.arctan2(np.zeros_like(z, dtype=np.result_type(z.dtype, np.float16)), z)
    return result * (180 / np.pi) if deg else result


def array_equal(a1, a2, equal_nan=False):
    if np.shape(a1) != np.shape(a2):
        return False
    same = a1 == a2
    if equal_nan:
        same = same | (np.isnan(a1) & np.isnan(a2))
    return np.all(same)


def array_equiv(a1, a2):
    try:
        np.broadcast_shapes(np.shape(a1), np.shape(a2))
    except ValueError:
        return False
    return np.all(a1 == a2)


def isneginf(x, out=None):
    _no_out("isneginf", out)
    return np.isinf(x) & (x < 0)


def isposinf(x, out=None):
    _no_out("isposinf", out)
    return np.isinf(x) & (x > 0)


def _no_out(name, out):
    if out is not None:
        raise UnsupportedOperationError(f"numpy.{name}(..., out=...) is not supported: traced arrays are immutable")


def iscomplex(x):
    return np.zeros(np.shape(x), bool)


def isreal(x):
    return np.ones(np.shape(x), bool)


def iscomplexobj(x):
    return False


def isrealobj(x):
    return True


def empty_like(prototype, dtype=None, order="K", subok=True, shape=None, *, device=None):
    """Zeros (NumPy's values are whatever memory held)."""
    if shape is None:
        return np.zeros_like(prototype, dtype=dtype)
    return np.zeros(shape, prototype.dtype if dtype is None else dtype)


def diag_indices_from(arr):
    if np.ndim(arr) < 2 or len(set(np.shape(arr))) != 1:
        raise ValueError("All dimensions of input must be of equal length")
    return np.diag_indices(np.shape(arr)[0], np.ndim(arr))


def tril_indices_from(arr, k=0):
    if np.ndim(arr) != 2:
        raise ValueError("input array must be 2-d")
    return np.tril_indices(np.shape(arr)[-2], k=k, m=np.shape(arr)[-1])


def triu_indices_from(arr, k=0):
    if np.ndim(arr) != 2:
        raise ValueError("input array must be 2-d")
    return np.triu_indices(np.shape(arr)[-2], k=k, m=np.shape(arr)[-1])


def histogram_bin_edges(a, bins=10, range=None, weights=None):  # noqa: A002 - NumPy's name
    return _static_edges(a, bins, range, weights)


def einsum_path(*operands, optimize="greedy", einsum_call=False):
    """Computed from the operands' shapes alone: NumPy's own, on zero arrays."""
    stand_ins = [np.zeros(x.shape, x.dtype) if isinstance(x, Tracer) else x for x in operands]
    return np.einsum_path(*stand_ins, optimize=optimize, einsum_call=einsum_call)


def resize(a, new_shape):
    """NumPy's resize: the flattened array repeated (cyclically) to the new size."""
    shape = (new_shape,) if np.ndim(new_shape) == 0 else tuple(new_shape)
    flat = np.ravel(a)
    size = int(np.prod(shape, dtype=np.int64))
    if size == 0 or np.size(flat) == 0:
        return np.zeros(shape, flat.dtype)
    repeats = -(-size // np.size(flat))
    return np.reshape(np.concatenate([flat] * repeats)[:size], shape)


def apply_along_axis(func1d, axis, arr, *args, **kwargs):
    """func1d on every 1-d slice along `axis` (a static loop), stacked where that axis was."""
    ndim = np.ndim(arr)
    axis = axis + ndim if axis < 0 else axis
    moved = np.moveaxis(arr, axis, -1)
    outer = np.shape(moved)[:-1]
    results = [func1d(moved[index], *args, **kwargs) for index in np.ndindex(*outer)]
    if not results:
        raise ValueError("Cannot apply_along_axis when any iteration dimensions are 0")
    stacked = np.reshape(np.stack([r if isinstance(r, Tracer) else np.asarray(r) for r in results]),
                         outer + np.shape(results[0]))
    result_ndim = np.ndim(results[0])
    return np.moveaxis(stacked, list(builtins.range(len(outer), len(outer) + result_ndim)),
                       list(builtins.range(axis, axis + result_ndim))) if result_ndim else stacked


def apply_over_axes(func, a, axes):
    val = a
    ndim = np.ndim(a)
    for axis in ([axes] if np.ndim(axes) == 0 else axes):
        axis = axis + ndim if axis < 0 else axis
        res = func(val, axis)
        if np.ndim(res) == np.ndim(val):
            val = res
        else:
            res = np.expand_dims(res, axis)
            if np.ndim(res) != np.ndim(val):
                raise ValueError("function is not returning an array of the correct shape")
            val = res
    return val


def poly(seq_of_zeros):
    """The coefficients of the polynomial with the given (1-d) roots, NumPy's
    convolutions in NumPy's order."""
    zeros = np.atleast_1d(seq_of_zeros)
    if np.iscomplexobj(zeros):
        raise DTypeError("numpy.poly of complex roots: NumPy returns real coefficients when the roots come in "
                         "conjugate pairs and complex ones otherwise, a dtype that depends on the values; "
                         "multiply the factors with np.convolve(a, [1, -root]) instead")
    if np.ndim(zeros) != 1:
        raise UnsupportedOperationError("numpy.poly of a matrix needs its eigenvalues (numpy.linalg.eigvals), "
                                        "which jitgrad does not compute; pass the roots")
    dtype = zeros.dtype if zeros.dtype.kind == "f" else np.dtype(np.float64)
    zeros = np.astype(zeros, dtype)
    a = np.ones((1,), dtype)
    for k in builtins.range(np.shape(zeros)[0]):
        a = np.convolve(a, np.stack([np.ones((), dtype), -zeros[k]]), mode="full")
    return a


# --------------------------------------------------------------------------- np.array / np.asarray / np.full

class _ConversionPatches:
    """np.array, np.asarray, np.asanyarray and np.full replaced while any thread traces:
    given a traced array (or a list holding one) they build a traced array (a list is
    stacked as np.asarray would, a fill value is broadcast); anything else goes to the
    function they replaced."""

    NAMES = ("array", "asarray", "asanyarray", "full")

    @staticmethod
    def _replacement(name, original):
        if name == "full":
            def full(shape, fill_value, dtype=None, order="C", **kwargs):
                if not _traced(fill_value):
                    return original(shape, fill_value, dtype=dtype, order=order, **kwargs)
                value = _as_traced(fill_value, dtype)
                return np.broadcast_to(value, (shape,) if np.ndim(shape) == 0 else tuple(shape)).copy()
            full.__wrapped__ = original
            return full

        def convert(obj, dtype=None, *args, copy=True if name == "array" else None, **kwargs):
            if not _traced(obj):
                return original(obj, dtype, *args, copy=copy, **kwargs) if name == "array" else \
                    original(obj, dtype, *args, **({"copy": copy} if copy is not None else {}), **kwargs)
            ndmin = kwargs.pop("ndmin", 0)
            result = _as_traced(obj, dtype)
            if name == "array" and result is obj:
                result = Tracer(obj.value)                 # a copy: writes to it leave obj alone
            if np.ndim(result) < ndmin:
                result = np.reshape(result, (1,) * (ndmin - np.ndim(result)) + np.shape(result))
            return result
        convert.__wrapped__ = original
        return convert


def _as_traced(obj, dtype=None):
    """A traced array for a Tracer or a (nested) list holding traced values, as
    np.asarray makes it (strong promotion of the elements, as np.stack)."""
    if isinstance(obj, Tracer):
        result = obj
    else:
        result = np.stack([_as_traced(item) if _traced(item) else np.asarray(item) for item in obj])
    if dtype is not None and result.dtype != np.dtype(dtype):
        result = np.astype(result, dtype)
    return result


_conversion_patches = ModulePatches(lambda: [(np, name) for name in _ConversionPatches.NAMES],
                                    _ConversionPatches._replacement)


converting_traced_arrays = _conversion_patches.trace_context()
"""Entered around every trace (`tracer.TRACE_CONTEXTS`)."""


TRACE_CONTEXTS.append(converting_traced_arrays)


# --------------------------------------------------------------------------- the tables

FUNCTIONS = {
    np.einsum: numpy_program(einsum), np.block: numpy_program(block), np.insert: numpy_program(insert),
    np.compress: numpy_program(compress), np.extract: numpy_program(extract),
    np.piecewise: numpy_program(piecewise), np.cov: numpy_program(cov), np.corrcoef: numpy_program(corrcoef),
    np.histogram: numpy_program(histogram), np.bincount: numpy_program(bincount),
    np.polyder: numpy_program(polyder), np.polyint: numpy_program(polyint),
    np.polyadd: numpy_program(_poly_combine(np.add)), np.polysub: numpy_program(_poly_combine(np.subtract)),
    np.polymul: numpy_program(polymul), np.polyfit: numpy_program(polyfit), np.i0: numpy_program(i0),
    np.result_type: numpy_program(result_type), np.angle: numpy_program(angle),
    np.array_equal: numpy_program(array_equal), np.array_equiv: numpy_program(array_equiv),
    np.isneginf: numpy_program(isneginf), np.isposinf: numpy_program(isposinf),
    np.iscomplex: numpy_program(iscomplex), np.isreal: numpy_program(isreal),
    np.iscomplexobj: numpy_program(iscomplexobj), np.isrealobj: numpy_program(isrealobj),
    np.empty_like: numpy_program(empty_like), np.diag_indices_from: numpy_program(diag_indices_from),
    np.tril_indices_from: numpy_program(tril_indices_from), np.triu_indices_from: numpy_program(triu_indices_from),
    np.histogram_bin_edges: numpy_program(histogram_bin_edges), np.einsum_path: numpy_program(einsum_path),
    np.resize: numpy_program(resize), np.apply_along_axis: numpy_program(apply_along_axis),
    np.apply_over_axes: numpy_program(apply_over_axes), np.poly: numpy_program(poly),
}
UFUNCS = {
    np.vecdot: numpy_program(vecdot), np.matvec: numpy_program(matvec), np.vecmat: numpy_program(vecmat),
    np.modf: numpy_program(modf), np.frexp: numpy_program(frexp), np.ldexp: numpy_program(ldexp),
    np.copysign: numpy_program(copysign), np.signbit: numpy_program(signbit),
}
api.FUNCTIONS.update(FUNCTIONS)
for _ufunc, _impl in UFUNCS.items():
    api.UFUNCS.setdefault(_ufunc, _impl)
