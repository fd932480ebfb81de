"""NumPy indexing and item assignment on traced arrays.

Reading (`x[index]`) follows NumPy's rules: basic indices (ints, slices, None, Ellipsis)
become static slices; advanced indices (integer arrays, lists, traced integers, boolean
masks known at trace time) select elements with a gather, and the advanced axes go where
NumPy puts them (in place when the advanced indices are adjacent, first otherwise).

Every advanced read becomes one `gather` of rows of a 2-d (rows, row-size) view, and
every write to advanced indices one `scatter` (or `scatter_add` for `np.add.at`) into the
flattened array (`jitgrad/primitives/gather.py`): work proportional to the elements
moved, with the JVP, transpose (gather <-> scatter-add) and kernels on those records.

Index values known at trace time are checked like NumPy (IndexError naming the line).
Traced index values are unknown until run time: they are wrapped when negative and an
index out of range makes the call raise IndexError, as NumPy does (or they are clamped,
as JAX does, under config.index_bounds="clamp"; docs/indexing.md).

Writing (`x[index] = v`) is a functional update of the traced array: the Tracer's value is
replaced by the updated array. NumPy's buffered semantics hold: where an index repeats, the
last write wins; `np.add.at` accumulates instead.
"""
from __future__ import annotations

import builtins
import functools
import math
import operator
import sys
import threading

import numpy as np

from jitgrad import primitives as P
from jitgrad.config import config, target_device
from jitgrad.errors import IndexingError, UnsupportedOperationError
from jitgrad.ir import DType, TensorType, Value
from jitgrad.primitives.gather import gather, index_check, scatter, scatter_add
from . import numpy_api as api
from .module_patches import ModulePatches


class _Advanced:
    """An advanced index item: an integer array (constant or traced)."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array          # np.ndarray of integers, or an integer Value


def _is_int_scalar(item) -> bool:
    return isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_))


def _classify(x: Value, index) -> list:
    """The index as a list of None / slice / int / _Advanced, with the ellipsis expanded and
    boolean masks replaced by the integer arrays of their True positions."""
    if not isinstance(index, tuple):
        index = (index,)
    items = []
    for item in index:
        if item is None or item is Ellipsis or isinstance(item, builtins.slice) or _is_int_scalar(item):
            items.append(item)
        elif isinstance(item, Value):
            if item.type.dtype == DType.bool:
                raise IndexingError(
                    "indexing with a traced boolean mask gives an array whose shape depends on the data; "
                    "use np.where(mask, x, 0) (or a reduction with where=mask) instead of x[mask]")
            if not item.type.dtype.is_integer:
                raise IndexingError("arrays used as indices must be of integer (or boolean) type, "
                                    f"not {item.type.dtype}")
            items.append(_Advanced(item))
        else:
            array = np.asarray(item)
            if array.dtype == object:
                raise IndexingError(f"cannot index with an object of type {type(item).__name__}")
            if array.dtype == bool:
                items.append(("mask", array))
            elif np.issubdtype(array.dtype, np.integer) or array.size == 0:
                items.append(_Advanced(array.astype(np.int64)))
            else:
                raise IndexingError("arrays used as indices must be of integer (or boolean) type, "
                                    f"not {array.dtype}")
    if builtins.sum(item is Ellipsis for item in items) > 1:
        raise IndexingError("an index can only have a single ellipsis ('...')")
    n_real = builtins.sum(item[1].ndim if isinstance(item, tuple) else item is not None and item is not Ellipsis
                          for item in items)
    if n_real > x.type.ndim:
        raise IndexingError(f"too many indices for array: array is {x.type.ndim}-dimensional, "
                            f"but {n_real} were indexed")
    if Ellipsis in items:
        k = next(i for i, item in enumerate(items) if item is Ellipsis)
        items = items[:k] + [builtins.slice(None)] * (x.type.ndim - n_real) + items[k + 1:]
    else:
        items = items + [builtins.slice(None)] * (x.type.ndim - n_real)
    expanded, axis = [], 0
    for item in items:
        if isinstance(item, tuple):                 # a boolean mask covers mask.ndim axes
            mask = item[1]
            if mask.ndim == 0:
                raise IndexingError("indexing with a 0-d boolean (x[True]) is not supported by jitgrad; "
                                    "use x[None] or np.where")
            shape = x.type.shape[axis:axis + mask.ndim]
            if mask.shape != shape:
                raise IndexingError(f"boolean index did not match indexed array along axis {axis}; "
                                    f"size of axis is {shape} but size of boolean index is {mask.shape}")
            expanded.extend(_Advanced(positions.astype(np.int64)) for positions in np.nonzero(mask))
            axis += mask.ndim
        else:
            expanded.append(item)
            axis += item is not None
    return expanded


def has_advanced(x: Value, index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(not (item is None or item is Ellipsis or isinstance(item, builtins.slice) or _is_int_scalar(item))
               for item in items)


def getitem(x: Value, index) -> Value:
    """x[index] with NumPy's basic and advanced indexing."""
    if not has_advanced(x, index):
        return api.getitem(x, index)
    items = _classify(x, index)
    # Ints next to arrays are advanced indices too (they decide where the axes go).
    items = [_Advanced(np.asarray(item, np.int64)) if _is_int_scalar(item) else item for item in items]
    basic, adv_axes, axis_of_item = [], [], []
    out_axis = 0
    for item in items:
        if isinstance(item, _Advanced):
            basic.append(builtins.slice(None))
            adv_axes.append(out_axis)
        else:
            basic.append(item)
        out_axis += item is None or isinstance(item, (builtins.slice, _Advanced))
    adv_items = [item for item in items if isinstance(item, _Advanced)]
    real = [item for item in items if item is not None]          # one per axis of x
    source_axes = [k for k, item in enumerate(real) if isinstance(item, _Advanced)]
    positions = [k for k, item in enumerate(items) if isinstance(item, _Advanced)]
    adjacent = positions == list(range(positions[0], positions[0] + len(positions)))
    y = api.getitem(x, tuple(basic))
    sizes = [y.type.shape[a] for a in adv_axes]
    rest_axes = [a for a in range(y.type.ndim) if a not in adv_axes]
    y = P.transpose(y, tuple(adv_axes + rest_axes))
    rest_shape = tuple(y.type.shape[len(adv_axes):])
    rows = math.prod(sizes)
    flat, batch_shape = _flat_index([item.array for item in adv_items], sizes, source_axes)
    table = P.reshape(y, (rows, math.prod(rest_shape)))
    gathered = take_rows(table, flat)
    result = P.reshape(gathered, batch_shape + rest_shape)
    if adjacent and adv_axes[0] > 0:                  # the advanced axes replace the indexed ones
        nb, first = len(batch_shape), adv_axes[0]
        perm = list(range(nb, nb + first)) + list(range(nb)) + list(range(nb + first, result.type.ndim))
        result = P.transpose(result, tuple(perm))
    return result


def _flat_index(arrays, sizes, axes):
    """The row-major flat position (into the product of `sizes`) of each broadcast index
    tuple, as a 1-d index (a NumPy array when every index is known, else a Value), and the
    broadcast shape; `axes` are the indexed axes of the user's array, for messages. Known indices are checked like NumPy; traced ones wrap once and are
    checked when the call runs (`index_check`), or clamped under config.index_bounds="clamp"
    and on devices whose kernels do not report errors."""
    shapes = [a.shape if isinstance(a, np.ndarray) else a.type.shape for a in arrays]
    try:
        batch_shape = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise IndexingError("shape mismatch: indexing arrays could not be broadcast together with shapes "
                            + " ".join(str(s) for s in shapes)) from None
    if all(isinstance(a, np.ndarray) for a in arrays):
        flat = np.zeros(batch_shape, np.int64)
        for a, n, axis in zip(arrays, sizes, axes, strict=True):
            if a.size and (a.min() < -n or a.max() >= n):
                bad = a[(a < -n) | (a >= n)].flat[0]
                raise IndexingError(f"index {bad} is out of bounds for axis {axis} with size {n}")
            flat = flat * n + np.where(a < 0, a + n, a)
        return flat.reshape(-1), batch_shape
    flat = None
    checked = config.index_bounds == "raise" and target_device() == "cpu"
    for a, n, axis in zip(arrays, sizes, axes, strict=True):
        v = api.as_value(a, DType.i64)
        v = P.broadcast_in_dim(v, batch_shape, tuple(range(len(batch_shape) - v.type.ndim, len(batch_shape))))
        if checked and n == 0 and v.type.size:    # every index is out of range, whatever its value
            raise IndexingError(f"index is out of bounds for axis {axis} with size 0")
        if checked:                  # NumPy's IndexError, raised by the call (docs/indexing.md);
            v = index_check(v, n, axis)     # NumPy checks only the indices the broadcast keeps
        else:
            v = P.select(P.lt(v, P.full(0, v.type)), P.add(v, P.full(n, v.type)), v)
            v = P.minimum(P.maximum(v, P.full(0, v.type)), P.full(max(n - 1, 0), v.type))
        flat = v if flat is None else P.add(P.mul(flat, P.full(n, flat.type)), v)
    return P.reshape(flat, (math.prod(batch_shape),)), batch_shape


def _index_value(index) -> Value:
    """A 1-d int64 index (NumPy array or Value) as a Value."""
    if isinstance(index, np.ndarray):
        return P.constant(index.astype(np.int64))
    return index if index.type.dtype == DType.i64 else P.convert(index, DType.i64)


def take_rows(table: Value, index) -> Value:
    """table[index] for a 2-d `table` (rows, cols) and a 1-d index of in-range rows (NumPy
    array or i64 Value): the selected rows, shape (len(index), cols)."""
    rows, cols = table.type.shape
    count = index.shape[0] if isinstance(index, np.ndarray) else index.type.shape[0]
    if rows == 0 or count == 0:
        return P.full(0, table.type.with_shape((count, cols)))
    return gather(table, _index_value(index), 0)


# --------------------------------------------------------------------------- assignment

def _is_static(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return not any(isinstance(item, Value) for item in items)


def _broadcast_value(v, dtype: DType, shape) -> Value:
    """`v` cast to the array's dtype (NumPy casts the assigned value unsafely) and broadcast
    to the shape of the region it is written to."""
    v = api.as_value(v)
    if v.type.dtype != dtype:
        v = P.convert(v, dtype)
    try:
        out_shape = np.broadcast_shapes(v.type.shape, tuple(shape))
    except ValueError:
        out_shape = None
    if out_shape != tuple(shape):
        squeezed = tuple(v.type.shape)
        while squeezed and squeezed[0] == 1 and len(squeezed) > len(shape):   # NumPy drops leading 1s
            squeezed = squeezed[1:]
        if len(squeezed) < v.type.ndim:
            return _broadcast_value(P.reshape(v, squeezed), dtype, shape)
        raise IndexingError(f"could not broadcast input array from shape {v.type.shape} into shape {tuple(shape)}")
    return P.broadcast_in_dim(v, tuple(shape), tuple(range(len(shape) - v.type.ndim, len(shape))))


def setitem(x: Value, index, v) -> Value:
    """The array `x` after `x[index] = v` (NumPy's semantics; the last of repeated indices wins)."""
    items = index if isinstance(index, tuple) else (index,)
    if len(items) == 1 and isinstance(items[0], Value) and items[0].type.dtype == DType.bool:
        return _set_masked(x, items[0], v)
    if not has_advanced(x, index):
        return _set_basic(x, index, v)
    if _is_static(index):
        positions = np.arange(x.type.size, dtype=np.int64).reshape(x.type.shape)[index]
        value = _broadcast_value(v, x.type.dtype, positions.shape)
        return _set_positions(x, positions.reshape(-1), value)
    positions = getitem(P.constant(np.arange(x.type.size, dtype=np.int64).reshape(x.type.shape)), index)
    value = _broadcast_value(v, x.type.dtype, positions.type.shape)
    return _set_positions(x, P.reshape(positions, (positions.type.size,)), value)


def _set_masked(x: Value, mask: Value, v) -> Value:
    """x[mask] = v for a traced boolean mask: a select, when `v` broadcasts to one selected
    row (a scalar, or the trailing axes' shape)."""
    lead = mask.type.ndim
    if x.type.shape[:lead] != mask.type.shape:
        raise IndexingError(f"boolean index did not match indexed array: size of the indexed axes is "
                            f"{x.type.shape[:lead]} but size of boolean index is {mask.type.shape}")
    rest = x.type.shape[lead:]
    value = api.as_value(v)
    if value.type.ndim > len(rest) or np.broadcast_shapes(value.type.shape, rest) != rest:
        raise IndexingError(
            f"x[mask] = v with a traced mask needs v to broadcast to one selected row {rest} (got shape "
            f"{value.type.shape}): the number of selected rows depends on the data; use np.where(mask, v, x)")
    value = _broadcast_value(value, x.type.dtype, x.type.shape)
    return P.select(P.broadcast_in_dim(mask, x.type.shape, tuple(range(lead))), value, x)


def _set_basic(x: Value, index, v) -> Value:
    """x[index] = v for ints, slices, None and Ellipsis: `v` padded into place, selected by a
    constant mask (linear work, and the gradient is a slice)."""
    shape = x.type.shape
    probe = np.broadcast_to(np.empty((), bool), shape)
    try:
        region_shape = probe[index].shape
    except IndexError as err:
        raise IndexingError(str(err)) from None
    value = _broadcast_value(v, x.type.dtype, region_shape)
    mask = np.zeros(shape, bool)
    mask[index] = True
    if not mask.any():
        return x
    items = index if isinstance(index, tuple) else (index,)
    n_real = builtins.sum(item is not None and item is not Ellipsis for item in items)
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items = items[:k] + (builtins.slice(None),) * (len(shape) - n_real) + items[k + 1:]
    else:
        items = items + (builtins.slice(None),) * (len(shape) - n_real)
    low, high, interior, counts, reversed_axes = [], [], [], [], []
    axis = 0
    for item in items:
        if item is None:
            continue
        n = shape[axis]
        if isinstance(item, builtins.slice):
            start, stop, step = item.indices(n)
            count = len(range(start, stop, step))
            if step < 0:
                reversed_axes.append(axis)
                start, step = start + (count - 1) * step, -step
        else:
            start, count, step = operator.index(item) % n, 1, 1
        low.append(start)
        interior.append(step - 1)
        high.append(n - (start + (count - 1) * step + 1))
        counts.append(count)
        axis += 1
    region = P.rev(P.reshape(value, tuple(counts)), tuple(reversed_axes))
    placed = P.pad(region, low, high, interior)
    return P.select(P.constant(mask), placed, x)


def _set_positions(x: Value, positions, value: Value) -> Value:
    """x.flat[positions] = value.flat, with the last write to a repeated position winning."""
    size, count = x.type.size, math.prod(value.type.shape)
    if count == 0 or size == 0:
        return x
    flat = scatter(P.reshape(x, (size,)), _index_value(positions), P.reshape(value, (count,)), 0)
    return P.reshape(flat, x.type.shape)


def add_at(x: Value, index, v) -> Value:
    """np.add.at(x, index, v): every occurrence of a repeated index adds its value."""
    if _is_static(index):
        positions = np.arange(x.type.size, dtype=np.int64).reshape(x.type.shape)[index]
        count = positions.size
        flat_pos = positions.reshape(-1)
        shape = positions.shape
    else:
        positions = getitem(P.constant(np.arange(x.type.size, dtype=np.int64).reshape(x.type.shape)), index)
        count, shape = positions.type.size, positions.type.shape
        flat_pos = P.reshape(positions, (count,))
    value = _broadcast_value(v, x.type.dtype, shape)
    size = x.type.size
    if count == 0 or size == 0:
        return x
    flat_x, flat_v = P.reshape(x, (size,)), P.reshape(value, (count,))
    if x.type.dtype == DType.bool:          # NumPy adds booleans as a logical or
        total = scatter_add(P.convert(flat_x, DType.i64), _index_value(flat_pos), P.convert(flat_v, DType.i64), 0)
        return P.reshape(P.ne(total, P.full(0, total.type)), x.type.shape)
    return P.reshape(scatter_add(flat_x, _index_value(flat_pos), flat_v, 0), x.type.shape)


# --------------------------------------------------------------------------- functions

def take(a, indices, axis=None, out=None, mode=None):
    """np.take: indices along one axis (the flattened array when `axis` is None).
    mode='clip' clamps every index into the axis (negative ones to 0), 'wrap' takes it
    modulo the axis length; 'raise' checks indices known at trace time."""
    if out is not None:
        raise UnsupportedOperationError("numpy.take: out= is not supported")
    if mode not in (None, "raise", "clip", "wrap"):
        raise ValueError(f"clipmode must be one of 'clip', 'raise', or 'wrap' (got {mode!r})")
    a = api.as_value(a)
    if axis is None:
        a, axis = P.reshape(a, (a.type.size,)), 0
    axis = operator.index(axis)
    if not -a.type.ndim <= axis < a.type.ndim:
        raise IndexingError(f"axis {axis} is out of bounds for array of dimension {a.type.ndim}")
    axis %= a.type.ndim
    item = _index_item(indices)
    if mode in ("clip", "wrap"):
        item = _into_range(item, a.type.shape[axis], mode, "take")
    return getitem(a, (builtins.slice(None),) * axis + (item,))


def _into_range(indices, n: int, mode: str, name: str):
    """Indices brought into [0, n) as NumPy's clip/wrap modes do."""
    if n == 0:
        raise IndexingError(f"numpy.{name}: cannot do a non-empty take from an empty axis")
    if not isinstance(indices, Value):
        indices = np.asarray(indices, np.int64)
        return np.clip(indices, 0, n - 1) if mode == "clip" else np.mod(indices, n)
    v = api.as_value(indices, DType.i64)
    if mode == "clip":
        return P.minimum(P.maximum(v, P.full(0, v.type)), P.full(n - 1, v.type))
    return P.remainder(v, P.full(n, v.type))


def choose(a, choices, out=None, mode="raise"):
    """np.choose: out[s] = choices[a[s]][s] over the broadcast shape, one gather of the
    stacked choices. Traced entries outside [0, k) in mode="raise" make the call raise (docs/indexing.md)."""
    if out is not None:
        raise UnsupportedOperationError("numpy.choose: out= is not supported")
    if mode not in ("raise", "clip", "wrap"):
        raise ValueError(f"clipmode must be one of 'clip', 'raise', or 'wrap' (got {mode!r})")
    if isinstance(choices, Value):
        choices = [P.reshape(api.getitem(choices, (k,)), choices.type.shape[1:]) for k in range(choices.type.shape[0])]
    choices = api._promote_unsafely(choices)        # NumPy's choose casts a Python int unsafely (wraps)
    k = len(choices)
    index = a if isinstance(a, Value) else np.asarray(a)
    if not isinstance(index, Value) and index.dtype != object and not np.issubdtype(index.dtype, np.integer):
        raise IndexingError("numpy.choose: the index array must be of integer type")
    if mode != "raise":
        index = _into_range(index, k, mode, "choose")
    elif not isinstance(index, Value) and index.size and (index.min() < 0 or index.max() >= k):
        raise IndexingError("invalid entry in choice array")
    index = api.as_value(index, DType.i64)
    shape = api.broadcast_shapes(index.type.shape, *[c.type.shape for c in choices])
    size = math.prod(shape)
    stacked = P.reshape(P.concatenate([P.reshape(api.broadcast_to(c, shape), (1, size)) for c in choices], 0),
                        (k * size,))
    if size == 0:
        return P.reshape(api.getitem(stacked, builtins.slice(0, 0)), shape)
    row = api.broadcast_to(index, shape)
    if mode == "raise" and config.index_bounds == "raise" and target_device() == "cpu":
        # NumPy raises for any entry outside [0, k), negative ones too: a negative entry is
        # moved below -k, where the check (which wraps [-k, 0) once) reports it
        row = index_check(P.select(P.lt(row, P.full(0, row.type)), P.sub(row, P.full(k, row.type)), row), k, 0)
    row = P.maximum(P.minimum(row, P.full(k - 1, _i64(shape))), P.full(0, _i64(shape)))
    flat = P.add(P.mul(row, P.full(size, row.type)), P.constant(np.arange(size, dtype=np.int64).reshape(shape)))
    return P.reshape(gather(stacked, P.reshape(flat, (size,)), 0), shape)


def _i64(shape) -> TensorType:
    return TensorType(tuple(shape), DType.i64)


def _index_item(indices):
    if isinstance(indices, Value) or _is_int_scalar(indices):
        return indices
    return np.asarray(indices)


def take_along_axis(arr, indices, axis=-1):
    """np.take_along_axis: arr[..., indices, ...] with the other axes matched one to one."""
    arr = api.as_value(arr)
    ndim = arr.type.ndim
    if axis is None:
        return take(arr, indices)
    axis = operator.index(axis) % ndim if -ndim <= operator.index(axis) < ndim else None
    if axis is None:
        raise IndexingError(f"axis is out of bounds for array of dimension {ndim}")
    shape = indices.type.shape if isinstance(indices, Value) else np.shape(indices)
    if len(shape) != ndim:
        raise IndexingError("`indices` and `arr` must have the same number of dimensions")
    index = []
    for k in range(ndim):
        if k == axis:
            index.append(_index_item(indices))
        else:
            grid = [1] * ndim
            grid[k] = arr.type.shape[k]
            index.append(np.arange(arr.type.shape[k]).reshape(grid))
    return getitem(arr, tuple(index))


api.FUNCTIONS.setdefault(np.take, take)
api.FUNCTIONS.setdefault(np.take_along_axis, take_along_axis)
api.FUNCTIONS.setdefault(np.choose, choose)


# --------------------------------------------------------------------------- arrays created while tracing

class CreatedWhileTracing(np.ndarray):
    """What np.zeros/ones/empty/full (and their `_like` forms on NumPy arrays) return to the
    traced function: a NumPy array that refuses a traced value. NumPy would try to store a
    number, and a traced value has none until the compiled code runs; without this, NumPy
    reports a puzzling "setting an array element with a sequence"."""

    def __setitem__(self, index, value):
        tracer_type, user_location = _TRACING
        if _holds(value, tracer_type) or _holds(index, tracer_type):
            raise UnsupportedOperationError(
                "assigning a traced value into a NumPy array created inside the traced function (np.zeros, "
                "np.ones, np.empty, np.full): a NumPy array cannot hold it. Create the array from a traced "
                "one instead (y = np.zeros_like(x), np.full_like(x, v)), then assign into it",
                user_location())
        super().__setitem__(index, value)


def _holds(x, kind) -> bool:
    if isinstance(x, kind):
        return True
    return isinstance(x, (tuple, list)) and any(_holds(item, kind) for item in x)


CREATION_FUNCTIONS = ("zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like", "full_like")


_creation_depth = threading.local()
"""How many traces the current thread is inside."""


def _creation_replacement(name, original):
    """NumPy's creation function `original`: called from user code on a tracing thread it
    returns a `CreatedWhileTracing` array, elsewhere the original's result."""
    @functools.wraps(original)
    def replacement(*args, **kwargs):
        result = original(*args, **kwargs)
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if (getattr(_creation_depth, "depth", 0) and type(result) is np.ndarray
                and not caller.startswith(("jitgrad.", "numpy"))):
            return result.view(CreatedWhileTracing)
        return result
    return replacement


_creation_patches = ModulePatches(lambda: [(np, name) for name in CREATION_FUNCTIONS], _creation_replacement)


_TRACING: tuple = (type(None), lambda: None)
"""The tracer class and the function naming the user's line, given by `tracer.py`
(which imports this module) when it registers the guard."""


def guard_created_arrays(tracer_type, user_location):
    """The context entered around every trace (`tracer.TRACE_CONTEXTS`)."""
    import contextlib
    global _TRACING
    _TRACING = (tracer_type, user_location)

    @contextlib.contextmanager
    def guard(fn):
        _creation_patches.enter()
        _creation_depth.depth = getattr(_creation_depth, "depth", 0) + 1
        try:
            yield
        finally:
            _creation_depth.depth -= 1
            _creation_patches.exit()
    return guard
