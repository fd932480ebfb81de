"""NumPy's shape and data-movement functions, composed from structural primitives.

Every function here is a static rearrangement (slices, concatenation, padding, reshapes,
transposes, broadcasts and selects with constant masks): shapes are known at trace time and
derivatives come from the primitives' own rules.
"""
from __future__ import annotations

import operator

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import DTypeError, ShapeError, UnsupportedOperationError
from jitgrad.ir import DType, Value
from jitgrad.primitives.gather import gather
from . import numpy_api as api
from . import numpy_elementwise
from .numpy_api import as_value, normalize_axes


def _refuse(name: str, what: str, instead: str):
    raise UnsupportedOperationError(f"numpy.{name}: {what} is not supported; {instead}")


def _axis(axis, ndim) -> int:
    return normalize_axes(axis, ndim)[0]


def _slice_axis(x: Value, axis: int, start: int, stop: int) -> Value:
    starts, limits = [0] * x.type.ndim, list(x.type.shape)
    starts[axis], limits[axis] = start, stop
    return P.static_slice(x, starts, limits)


# --------------------------------------------------------------------------- rank

def _atleast(ndim: int, x) -> Value:
    v = as_value(x)
    shape = v.type.shape
    if len(shape) >= ndim:
        return v
    if ndim == 1:
        return P.reshape(v, (1,))
    if ndim == 2:
        return P.reshape(v, (1,) * (2 - len(shape)) + shape)
    return P.reshape(v, {0: (1, 1, 1), 1: (1,) + shape + (1,), 2: shape + (1,)}[len(shape)])


def _atleast_fn(ndim):
    def fn(*arys):
        out = [_atleast(ndim, a) for a in arys]
        return out[0] if len(out) == 1 else tuple(out)
    fn.__name__ = f"atleast_{ndim}d"
    return fn


def hstack(tup, *, dtype=None, casting="same_kind"):
    arrays = [_atleast(1, a) for a in tup]
    axis = 0 if arrays and arrays[0].type.ndim == 1 else 1
    return api.concatenate(arrays, axis=axis, dtype=dtype)


def vstack(tup, *, dtype=None, casting="same_kind"):
    return api.concatenate([_atleast(2, a) for a in tup], axis=0, dtype=dtype)


def dstack(tup):
    return api.concatenate([_atleast(3, a) for a in tup], axis=2)


def column_stack(tup):
    if isinstance(tup, Value):        # an array is a sequence of its rows, as in NumPy
        tup = [api.getitem(tup, i) for i in range(tup.type.shape[0])] if tup.type.ndim else [tup]
    arrays = []
    for a in tup:
        v = as_value(a)
        arrays.append(P.reshape(v, (v.type.size, 1)) if v.type.ndim < 2 else v)
    return api.concatenate(arrays, axis=1)


def append(arr, values, axis=None):
    if axis is None:
        return api.concatenate([api.ravel(arr), api.ravel(values)], axis=0)
    return api.concatenate([arr, values], axis=axis)


def broadcast_arrays(*args, subok=False):
    return tuple(api.broadcast_values(*[as_value(a) for a in args]))


# --------------------------------------------------------------------------- repetition

def tile(A, reps):
    x = as_value(A)
    reps = tuple(reps) if isinstance(reps, (tuple, list)) else (reps,)
    reps = tuple(operator.index(r) for r in reps)
    ndim = max(len(reps), x.type.ndim)
    reps = (1,) * (ndim - len(reps)) + reps
    shape = (1,) * (ndim - x.type.ndim) + x.type.shape
    x = P.reshape(x, shape)
    # (r0, n0, r1, n1, ...) broadcast, then merged pairwise
    expanded = tuple(d for r, n in zip(reps, shape) for d in (r, n))
    tiled = P.broadcast_in_dim(x, expanded, tuple(range(1, 2 * ndim, 2)))
    return P.reshape(tiled, tuple(r * n for r, n in zip(reps, shape)))


def repeat(a, repeats, axis=None):
    x = as_value(a)
    if isinstance(repeats, Value):
        _refuse("repeat", "traced repeats (the result's shape would depend on data)", "pass repeats as Python ints")
    if axis is None or x.type.ndim == 0:             # NumPy treats a 0-d array as 1-d here
        x, axis = P.reshape(x, (x.type.size,)), 0 if axis is None else axis
    axis = _axis(axis, x.type.ndim)
    n = x.type.shape[axis]
    counts = np.broadcast_to(np.asarray(repeats), (n,)) if np.ndim(repeats) else None
    if counts is None:
        r = operator.index(repeats)
        if r < 0:
            raise ShapeError("numpy.repeat: negative dimensions are not allowed")
        shape = x.type.shape[:axis + 1] + (r,) + x.type.shape[axis + 1:]
        dims = tuple(k if k <= axis else k + 1 for k in range(x.type.ndim))
        out = P.broadcast_in_dim(x, shape, dims)
        return P.reshape(out, x.type.shape[:axis] + (n * r,) + x.type.shape[axis + 1:])
    if len(np.asarray(repeats).ravel()) not in (1, n) or (counts < 0).any():
        raise ShapeError(f"numpy.repeat: repeats {repeats!r} do not fit an axis of length {n}")
    pieces = [repeat(_slice_axis(x, axis, i, i + 1), int(c), axis) for i, c in enumerate(counts) if c]
    if not pieces:
        return _slice_axis(x, axis, 0, 0)
    return P.concatenate(pieces, axis)


def roll(a, shift, axis=None):
    x = as_value(a)
    if axis is None:
        return P.reshape(roll(P.reshape(x, (x.type.size,)), shift, 0), x.type.shape)
    shifts = shift if isinstance(shift, (tuple, list)) else (shift,)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    if len(shifts) == 1:
        shifts = shifts * len(axes)
    if len(axes) == 1:
        axes = axes * len(shifts)
    if len(shifts) != len(axes):
        raise ShapeError("numpy.roll: 'shift' and 'axis' should be scalars or 1D sequences")
    total = {}
    for s, ax in zip(shifts, axes):
        ax = _axis(ax, x.type.ndim)
        total[ax] = total.get(ax, 0) + operator.index(s)
    for ax, s in total.items():
        n = x.type.shape[ax]
        if n == 0:
            continue
        s %= n
        if s:
            x = P.concatenate([_slice_axis(x, ax, n - s, n), _slice_axis(x, ax, 0, n - s)], ax)
    return x


def rot90(m, k=1, axes=(0, 1)):
    x = as_value(m)
    if len(axes) != 2 or x.type.ndim < 2:
        raise ShapeError("numpy.rot90: axes must be two different axes of an array of at least 2 dimensions")
    a, b = _axis(axes[0], x.type.ndim), _axis(axes[1], x.type.ndim)
    if a == b:
        raise ShapeError("numpy.rot90: axes must be different")
    k = operator.index(k) % 4
    if k == 0:
        return x
    if k == 2:
        return P.rev(x, (a, b))
    perm = list(range(x.type.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    if k == 1:
        return P.transpose(P.rev(x, (b,)), perm)
    return P.rev(P.transpose(x, perm), (b,))


def flipud(m):
    x = as_value(m)
    if x.type.ndim < 1:
        raise ShapeError("numpy.flipud: input must be >= 1-d")
    return P.rev(x, (0,))


def fliplr(m):
    x = as_value(m)
    if x.type.ndim < 2:
        raise ShapeError("numpy.fliplr: input must be >= 2-d")
    return P.rev(x, (1,))


# --------------------------------------------------------------------------- pad

def _pad_widths(pad_width, ndim):
    widths = np.broadcast_to(np.asarray(pad_width, dtype=object), (ndim, 2)) if ndim else np.zeros((0, 2))
    out = []
    for lo, hi in widths:
        lo, hi = operator.index(lo), operator.index(hi)
        if lo < 0 or hi < 0:
            raise ShapeError("numpy.pad: index can't contain negative values")
        out.append((lo, hi))
    return out


def _reflected(x: Value, axis: int, count: int, at_start: bool, symmetric: bool) -> Value:
    """`count` elements mirrored at one end of `axis`: reflect excludes the edge element,
    symmetric repeats it."""
    n = x.type.shape[axis]
    if count > (n if symmetric else n - 1):
        _refuse("pad", "reflect/symmetric padding wider than the array",
                "pad in several steps, each narrower than the array")
    if at_start:
        start = 0 if symmetric else 1
        return P.rev(_slice_axis(x, axis, start, start + count), (axis,))
    stop = n if symmetric else n - 1
    return P.rev(_slice_axis(x, axis, stop - count, stop), (axis,))


def pad(array, pad_width, mode="constant", **kwargs):
    x = as_value(array)
    widths = _pad_widths(pad_width, x.type.ndim)
    if mode == "constant":
        value = kwargs.pop("constant_values", 0)
        if kwargs:
            _refuse("pad", f"arguments {sorted(kwargs)}", "use constant_values=")
        if np.ndim(value) or isinstance(value, Value):
            _refuse("pad", "per-axis or traced constant_values", "pad with 0 and add np.pad(mask) * value")
        padded = P.pad(x, [lo for lo, _ in widths], [hi for _, hi in widths], [0] * x.type.ndim)
        if value == 0:
            return padded
        mask = np.pad(np.zeros(x.type.shape, bool), widths, constant_values=True)
        fill = np.asarray(value).astype(x.type.dtype.numpy)
        return P.select(P.constant(mask, DType.bool), P.full(fill.item(), padded.type), padded)
    if kwargs:
        _refuse("pad", f"arguments {sorted(kwargs)} with mode={mode!r}", "use the default options")
    if mode not in ("edge", "reflect", "symmetric", "wrap"):
        _refuse("pad", f"mode={mode!r}", "use 'constant', 'edge', 'reflect', 'symmetric' or 'wrap'")
    for axis, (lo, hi) in enumerate(widths):
        n = x.type.shape[axis]
        if lo == hi == 0:
            continue
        if n == 0:
            raise ShapeError(f"numpy.pad: can't extend empty axis {axis} using modes other than 'constant'")
        if mode == "edge":
            before = api.broadcast_to(_slice_axis(x, axis, 0, 1), _with(x.type.shape, axis, lo))
            after = api.broadcast_to(_slice_axis(x, axis, n - 1, n), _with(x.type.shape, axis, hi))
        elif mode == "wrap":
            if lo > n or hi > n:
                _refuse("pad", "wrap padding wider than the array", "pad in several steps")
            before, after = _slice_axis(x, axis, n - lo, n), _slice_axis(x, axis, 0, hi)
        else:
            symmetric = mode == "symmetric"
            if n == 1 and not symmetric:
                before = api.broadcast_to(x, _with(x.type.shape, axis, lo))
                after = api.broadcast_to(x, _with(x.type.shape, axis, hi))
            else:
                before = _reflected(x, axis, lo, True, symmetric) if lo else None
                after = _reflected(x, axis, hi, False, symmetric) if hi else None
        x = P.concatenate([p for p in (before, x, after) if p is not None and p.type.shape[axis]], axis)
    return x


def _with(shape, axis, n):
    return shape[:axis] + (n,) + shape[axis + 1:]


# --------------------------------------------------------------------------- diagonals and triangles

def diagonal(a, offset=0, axis1=0, axis2=1):
    """The diagonal as a strided slice of the flattened matrix: element i of the
    diagonal of an (n, m) matrix is at i * (m + 1) + start."""
    x = as_value(a)
    if x.type.ndim < 2:
        raise ShapeError("numpy.diagonal: diag requires an array of at least two dimensions")
    a1, a2 = _axis(axis1, x.type.ndim), _axis(axis2, x.type.ndim)
    if a1 == a2:
        raise ShapeError("numpy.diagonal: axis1 and axis2 cannot be the same")
    offset = operator.index(offset)
    rest = [k for k in range(x.type.ndim) if k not in (a1, a2)]
    x = P.transpose(x, rest + [a1, a2])
    lead = x.type.shape[:-2]
    n, m = x.type.shape[-2:]
    count = max(0, min(n, m - offset) if offset >= 0 else min(n + offset, m))
    flat = P.reshape(x, lead + (n * m,))
    if count == 0:
        return P.static_slice(flat, (0,) * len(lead) + (0,), lead + (0,))
    start = offset if offset >= 0 else -offset * m
    limit = start + (count - 1) * (m + 1) + 1
    return P.static_slice(flat, (0,) * len(lead) + (start,), lead + (limit,), (1,) * len(lead) + (m + 1,))


def diag(v, k=0):
    x = as_value(v)
    k = operator.index(k)
    if x.type.ndim == 2:
        return diagonal(x, k)
    if x.type.ndim != 1:
        raise ShapeError("numpy.diag: input must be 1- or 2-d")
    n = x.type.shape[0]
    size = n + abs(k)
    if n == 0:
        return P.full(0, x.type.with_shape((size, size)))
    start = k if k >= 0 else -k * size
    flat = P.pad(x, (start,), (size * size - start - (n - 1) * (size + 1) - 1,), (size,))
    return P.reshape(flat, (size, size))


def diagflat(v, k=0):
    return diag(api.ravel(v), k)


def _triangle(name, keep_lower):
    def fn(m, k=0):
        x = as_value(m)
        if x.type.ndim < 2:
            if x.type.ndim == 0:
                raise ShapeError(f"numpy.{name}: input must be at least 1-d")
            x = api.broadcast_to(x, (x.type.shape[0],) + x.type.shape)
        rows, cols = x.type.shape[-2:]
        lower = np.tri(rows, cols, operator.index(k) - (0 if keep_lower else 1), dtype=bool)
        mask = api.broadcast_to(P.constant(lower if keep_lower else ~lower, DType.bool), x.type.shape)
        return P.select(mask, x, P.full(0, x.type))
    fn.__name__ = name
    return fn


tril = _triangle("tril", True)
triu = _triangle("triu", False)


# --------------------------------------------------------------------------- creation and copies

def copy(a, order="K", subok=False):
    return as_value(a)


def np_astype(x, dtype, /, *, copy=True, device=None):
    return api.astype(x, dtype)


def full(shape, fill_value, dtype=None, order="C", *, device=None, like=None):
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    shape = tuple(operator.index(n) for n in shape)
    value = as_value(fill_value) if dtype is None else as_value(fill_value, api._supported(np.dtype(dtype)))
    return api.broadcast_to(value, shape)


def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, *, device=None):
    x = as_value(a)
    target = api._supported(np.dtype(dtype)) if dtype is not None else x.type.dtype
    out_shape = x.type.shape if shape is None else tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if isinstance(fill_value, Value):
        return api.broadcast_to(P.convert(fill_value, target), out_shape)
    return P.full(np.asarray(fill_value).astype(target.numpy).item(), x.type.with_shape(out_shape).with_dtype(target))


def meshgrid(*xi, copy=True, sparse=False, indexing="xy"):
    if indexing not in ("xy", "ij"):
        raise ValueError("Valid values for `indexing` are 'xy' and 'ij'.")
    vectors = [api.ravel(x) for x in xi]
    ndim = len(vectors)
    out = []
    for k, v in enumerate(vectors):
        shape = [1] * ndim
        shape[k] = v.type.shape[0]
        out.append(P.reshape(v, tuple(shape)))
    if indexing == "xy" and ndim > 1:
        out = [P.transpose(o, [1, 0] + list(range(2, ndim))) for o in out]
    if not sparse:
        out = api.broadcast_values(*out)
    return tuple(out)


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *, device=None):
    """NumPy's own steps: y = arange(num) * step + start (y / div * delta where the step
    is 0), the last element set to `stop`; scalar endpoints only (for arrays NumPy picks
    the formula by `any(step == 0)` over all of them)."""
    num = operator.index(num)
    if num < 0:
        raise ShapeError(f"numpy.linspace: number of samples, {num}, must be non-negative")
    if any(np.ndim(v) if not isinstance(v, Value) else v.type.ndim for v in (start, stop)):
        raise UnsupportedOperationError("numpy.linspace with array endpoints is not supported; use "
                                        "start[..., None] + np.linspace(0, 1, num) * (stop - start)[..., None]")
    div = num - 1 if endpoint else num
    dt = api.result_dtype(start, stop, min_float=True)
    first, last = as_value(start, dt), as_value(stop, dt)
    delta = P.sub(last, first)
    y = P.constant(np.arange(num, dtype=dt.numpy), dt)
    if div > 0:
        step = P.div(delta, P.full(div, delta.type))
        spread = P.broadcast_in_dim(step, y.type.shape, ())
        scaled = P.mul(P.div(y, P.full(div, y.type)), P.broadcast_in_dim(delta, y.type.shape, ()))
        y = P.select(P.broadcast_in_dim(P.eq(step, P.full(0, step.type)), y.type.shape, ()), scaled,
                     P.mul(y, spread))
    else:
        step = P.full(np.nan, delta.type.with_dtype(DType.f64))     # NumPy's step is the Python float nan
        y = P.mul(y, P.broadcast_in_dim(delta, y.type.shape, ()))
    y = P.add(y, P.broadcast_in_dim(first, y.type.shape, ()))
    if endpoint and num > 1:
        y = P.concatenate([P.static_slice(y, (0,), (num - 1,)), P.reshape(last, (1,))], 0)
    if dtype is not None:
        target = api._supported(np.dtype(dtype))
        if target.is_integer and y.type.dtype.is_complex:
            raise DTypeError(f"numpy.linspace of complex endpoints with dtype={np.dtype(dtype)}: NumPy's floor has "
                             "no complex loop (it raises TypeError)")
        if target.is_integer:
            y = numpy_elementwise.UFUNCS[np.floor](y)
        y = P.convert(y, target)
    return (y, step) if retstep else y


# --------------------------------------------------------------------------- splitting, axes, selection

def array_split(ary, indices_or_sections, axis=0):
    x = as_value(ary)
    ax = _axis(axis, x.type.ndim)
    n = x.type.shape[ax]
    if isinstance(indices_or_sections, Value):
        raise UnsupportedOperationError("numpy.array_split with traced indices is not supported (the shapes "
                                        "would depend on data); pass Python ints")
    if np.ndim(indices_or_sections) == 0:
        sections = operator.index(indices_or_sections)
        if sections <= 0:
            raise ShapeError("numpy.array_split: number sections must be larger than 0.")
        each, extra = divmod(n, sections)
        sizes = [each + 1] * extra + [each] * (sections - extra)
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    else:
        bounds = [0] + [operator.index(i) for i in indices_or_sections] + [n]
    pieces = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        start, stop = _python_slice_bounds(start, stop, n)
        pieces.append(_slice_axis(x, ax, start, max(start, stop)))
    return pieces


def _python_slice_bounds(start, stop, n):
    """What x[start:stop] selects, as NumPy's split does with its bounds."""
    start, stop, _ = slice(start, stop).indices(n)
    return start, stop


def split(ary, indices_or_sections, axis=0):
    x = as_value(ary)
    if np.ndim(indices_or_sections) == 0 and not isinstance(indices_or_sections, Value):
        n = x.type.shape[_axis(axis, x.type.ndim)]
        if n % operator.index(indices_or_sections):
            raise ShapeError("numpy.split: array split does not result in an equal division")
    return array_split(x, indices_or_sections, axis)


def _split_along(name, axis, min_ndim):
    def fn(ary, indices_or_sections):
        x = as_value(ary)
        if x.type.ndim < min_ndim:
            raise ShapeError(f"numpy.{name} only works on arrays of {min_ndim} or more dimensions")
        return split(x, indices_or_sections, 1 if name == "hsplit" and x.type.ndim > 1 else axis)
    fn.__name__ = name
    return fn


def rollaxis(a, axis, start=0):
    x = as_value(a)
    n = x.type.ndim
    axis = _axis(axis, n)
    if not -n <= start <= n:
        raise ShapeError(f"numpy.rollaxis: start {start} is out of bounds")
    start = start + n if start < 0 else start
    if axis < start:
        start -= 1
    if axis == start:
        return x
    return api.moveaxis(x, axis, start)


def unstack(x, /, *, axis=0):
    v = as_value(x)
    if v.type.ndim == 0:
        raise ShapeError("numpy.unstack: input array must be at least 1-d")
    ax = _axis(axis, v.type.ndim)
    shape = v.type.shape[:ax] + v.type.shape[ax + 1:]
    return tuple(P.reshape(_slice_axis(v, ax, i, i + 1), shape) for i in range(v.type.shape[ax]))


def matrix_transpose(x, /):
    v = as_value(x)
    if v.type.ndim < 2:
        raise ShapeError("numpy.matrix_transpose: input array must be at least 2-dimensional")
    return api.swapaxes(v, -1, -2)


def select(condlist, choicelist, default=0):
    """NumPy's select: choices and default promoted together (Python scalars weak, as
    NumPy keeps them), the first true condition wins, shape from the first condition and
    choice."""
    if len(condlist) != len(choicelist):
        raise ShapeError("numpy.select: list of cases must be same length as list of conditions")
    if len(condlist) == 0:
        raise ShapeError("numpy.select: select with an empty condition list is not possible")
    choices = api.promote(*choicelist, default)
    conds = [as_value(c) for c in condlist]
    for i, c in enumerate(conds):
        if c.type.dtype != DType.bool:
            raise ShapeError(f"numpy.select: invalid entry {i} in condlist: should be boolean ndarray")
    conds = api.broadcast_values(*conds)
    choices = api.broadcast_values(*choices)
    shape = api.broadcast_shapes(conds[0].type.shape, choices[0].type.shape)
    result = api.broadcast_to(choices[-1], shape)
    for choice, cond in zip(choices[-2::-1], conds[::-1]):
        result = P.select(api.broadcast_to(cond, shape), api.broadcast_to(choice, shape), result)
    return result


def real(val):
    return as_value(val)


def imag(val):
    v = as_value(val)
    return P.full(0, v.type)


def logspace(start, stop, num=50, endpoint=True, base=10.0, dtype=None, axis=0):
    if isinstance(base, Value) or np.ndim(base) or axis != 0:
        raise UnsupportedOperationError("numpy.logspace: only a scalar Python base and axis=0 are supported; "
                                        "use base ** np.linspace(start, stop, num)")
    y = linspace(start, stop, num=num, endpoint=endpoint)
    with api.weak_scalars({}):
        # NumPy passes the base to np.power as given: a Python number is weak (the
        # result keeps y's precision), a NumPy scalar is not
        result = api.UFUNCS[np.power](base if type(base) in (int, float, complex) else np.asarray(base), y)
    return result if dtype is None else api.astype(result, dtype)


def delete(arr, obj, axis=None):
    """Static deletions: the kept positions (NumPy's own choice, computed on an index
    array) as contiguous slices, concatenated."""
    x = as_value(arr)
    if isinstance(obj, Value) or isinstance(obj, (list, tuple)) and any(isinstance(o, Value) for o in obj):
        raise UnsupportedOperationError("numpy.delete with traced indices is not supported (the shape would "
                                        "depend on data); pass Python ints, slices or a NumPy mask")
    if axis is None:
        x, axis = P.reshape(x, (x.type.size,)), 0
    ax = _axis(axis, x.type.ndim)
    n = x.type.shape[ax]
    try:
        kept = np.delete(np.arange(n), obj).tolist()
    except IndexError as err:
        raise ShapeError(f"numpy.delete: {err}") from None
    runs, start = [], None
    for k, i in enumerate(kept):
        if start is None:
            start = i
        if k + 1 == len(kept) or kept[k + 1] != i + 1:
            runs.append((start, i + 1))
            start = None
    if not runs:
        return _slice_axis(x, ax, 0, 0)
    pieces = [_slice_axis(x, ax, lo, hi) for lo, hi in runs]
    return pieces[0] if len(pieces) == 1 else P.concatenate(pieces, ax)


# --------------------------------------------------------------------------- polynomials

def polyval(p, x):
    """Horner's scheme in NumPy's order: y = zeros_like(x); y = y * x + c for each
    coefficient (the coefficients are array elements: strong dtypes)."""
    with api.weak_scalars({}):
        coefficients = as_value(np.asarray(p) if not isinstance(p, Value) else p)
        points = as_value(np.asarray(x) if api._is_weak(x) else x)
    if coefficients.type.ndim != 1:
        raise UnsupportedOperationError("numpy.polyval with coefficients of more than one dimension is not "
                                        "supported; evaluate each polynomial separately")
    mul, add = api.UFUNCS[np.multiply], api.UFUNCS[np.add]
    y = P.full(0, points.type)
    with api.weak_scalars({}):
        for i in range(coefficients.type.shape[0]):
            c = P.reshape(P.static_slice(coefficients, (i,), (i + 1,)), ())
            y = as_value(add(mul(y, points), c))
    return y


def vander(x, N=None, increasing=False):
    """Columns 1, x, x*x, (x*x)*x, ...: NumPy's multiply.accumulate order, in the dtype
    promote_types(x.dtype, int)."""
    v = as_value(x)
    if v.type.ndim != 1:
        raise ShapeError("numpy.vander: x must be a one-dimensional array or sequence.")
    n = v.type.shape[0]
    N = n if N is None else operator.index(N)
    if N < 0:
        raise ShapeError("numpy.vander: negative dimensions are not allowed")
    dtype = api._supported(np.promote_types(v.type.dtype.numpy, int))
    v = P.convert(v, dtype)
    columns = [P.full(1, v.type)] if N > 0 else []
    for _ in range(1, N):
        columns.append(v if len(columns) == 1 else P.mul(columns[-1], v))
    if not columns:
        return P.full(0, v.type.with_shape((n, 0)))
    if not increasing:
        columns = columns[::-1]
    return P.concatenate([P.reshape(c, (n, 1)) for c in columns], 1)


# --------------------------------------------------------------------------- products

def kron(a, b):
    with api.weak_scalars({}):     # np.asanyarray on each: nothing is weak, traced Python scalars too
        return _kron_strong(*(as_value(np.asarray(v) if api._is_weak(v) else v) for v in (a, b)))


def _kron_strong(x, y):
    """kron of two arrays, run with no operand weak, as np.multiply's loop sees them in NumPy."""
    ndim = max(x.type.ndim, y.type.ndim)
    x = P.reshape(x, (1,) * (ndim - x.type.ndim) + x.type.shape)
    y = P.reshape(y, (1,) * (ndim - y.type.ndim) + y.type.shape)
    shape = tuple(d for p, q in zip(x.type.shape, y.type.shape) for d in (p, q))
    xs = P.broadcast_in_dim(x, shape, tuple(range(0, 2 * ndim, 2)))
    ys = P.broadcast_in_dim(y, shape, tuple(range(1, 2 * ndim, 2)))
    product = api.UFUNCS[np.multiply](xs, ys)
    return P.reshape(product, tuple(p * q for p, q in zip(x.type.shape, y.type.shape)))


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    if axis is not None:
        axisa = axisb = axisc = axis
    x, y = as_value(a), as_value(b)
    x = api.moveaxis(x, axisa, -1)
    y = api.moveaxis(y, axisb, -1)
    if x.type.shape[-1] != 3 or y.type.shape[-1] != 3:
        _refuse("cross", "vectors of 2 components", "pad them to 3 components with a zero")

    def comp(v, i):
        return P.reshape(_slice_axis(v, v.type.ndim - 1, i, i + 1), v.type.shape[:-1])
    mul, sub = api.UFUNCS[np.multiply], api.UFUNCS[np.subtract]
    parts = [sub(mul(comp(x, 1), comp(y, 2)), mul(comp(x, 2), comp(y, 1))),
             sub(mul(comp(x, 2), comp(y, 0)), mul(comp(x, 0), comp(y, 2))),
             sub(mul(comp(x, 0), comp(y, 1)), mul(comp(x, 1), comp(y, 0)))]
    result = api.stack(parts, axis=-1)
    return api.moveaxis(result, -1, axisc)


def sliding_window_view(x, window_shape, axis=None, *, subok=False, writeable=False):
    """np.lib.stride_tricks.sliding_window_view: one gather per windowed axis with the
    constant indices (position + tap), then the tap axes moved to the end in `axis`
    order (NumPy's layout). passes/nn_idioms.py recognizes these gathers."""
    x = as_value(x)
    window = (operator.index(window_shape),) if np.ndim(window_shape) == 0 else \
        tuple(operator.index(w) for w in window_shape)
    if axis is None:
        if len(window) != x.type.ndim:
            raise ValueError(f"Since axis is `None`, must provide window_shape for all dimensions of `x`; got "
                             f"{len(window)} window_shape elements and `x.ndim` is {x.type.ndim}.")
        axes = tuple(range(x.type.ndim))
    else:
        axes = tuple(_axis(a, x.type.ndim) for a in ((axis,) if np.ndim(axis) == 0 else axis))
        if len(axes) != len(window):
            raise ValueError(f"Must provide matching length window_shape and axis; got {len(window)} "
                             f"window_shape elements and {len(axes)} axes elements.")
    if len(set(axes)) != len(axes):
        _refuse("lib.stride_tricks.sliding_window_view", "an axis windowed twice", "window it in two calls")
    if any(w < 0 for w in window):
        raise ValueError("`window_shape` cannot contain negative values")
    for a, w in zip(axes, window, strict=True):
        if x.type.shape[a] < w:
            raise ValueError("window shape cannot be larger than input array shape")
    out, tap_axes, where = x, [], list(range(x.type.ndim))     # where: each axis of x in `out`
    for a, w in zip(axes, window, strict=True):
        at = where[a]
        indices = np.arange(out.type.shape[at] - w + 1)[:, None] + np.arange(w)[None, :]
        out = gather(out, P.constant(indices, DType.i64), at)       # (..., positions, w, ...)
        tap_axes = [t + 1 if t > at else t for t in tap_axes] + [at + 1]
        where = [k + 1 if k > at else k for k in where]
    kept = [k for k in range(out.type.ndim) if k not in tap_axes]
    return P.transpose(out, tuple(kept + tap_axes))


FUNCTIONS = {
    np.atleast_1d: _atleast_fn(1), np.atleast_2d: _atleast_fn(2), np.atleast_3d: _atleast_fn(3),
    np.hstack: hstack, np.vstack: vstack, np.dstack: dstack, np.column_stack: column_stack,
    np.append: append, np.broadcast_arrays: broadcast_arrays, np.tile: tile, np.repeat: repeat,
    np.roll: roll, np.rot90: rot90, np.flipud: flipud, np.fliplr: fliplr, np.pad: pad,
    np.diagonal: diagonal, np.diag: diag, np.diagflat: diagflat, np.tril: tril, np.triu: triu,
    np.copy: copy, np.full_like: full_like, np.meshgrid: meshgrid, np.kron: kron,
    np.cross: cross, np.linspace: linspace,
    np.array_split: array_split, np.split: split, np.hsplit: _split_along("hsplit", 0, 1),
    np.vsplit: _split_along("vsplit", 0, 2), np.dsplit: _split_along("dsplit", 2, 3), np.rollaxis: rollaxis,
    np.select: select, np.real: real, np.imag: imag, np.logspace: logspace, np.polyval: polyval,
    np.vander: vander, np.delete: delete,
    np.lib.stride_tricks.sliding_window_view: sliding_window_view,
}
for _name, _fn in (("unstack", unstack), ("matrix_transpose", matrix_transpose)):
    if hasattr(np, _name):
        FUNCTIONS[getattr(np, _name)] = _fn
if hasattr(np, "astype"):
    FUNCTIONS[np.astype] = np_astype
