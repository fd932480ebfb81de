"""NumPy's in-place writers on traced arrays: `ndarray.put`/`np.put`, `ndarray.resize`,
`np.put_along_axis`, `np.putmask` and `np.place`.

Each function here takes the array's current IR value and returns the value the array
holds after NumPy's write; the `Tracer` then takes that value as its own (and its views
see it), so the write is a functional update with NumPy's in-place semantics. Writes go
through `indexing.setitem` (one scatter into the flattened array, the last of repeated
positions winning, as NumPy's sequential loops) or a select with a mask.

Index values known at trace time are checked as NumPy checks them (IndexError); traced
ones are wrapped when negative and clamped into range, jitgrad's convention for every
traced index (docs/indexing.md).
"""
from __future__ import annotations

import math

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import IndexingError, ShapeError, UnsupportedOperationError
from jitgrad.ir import DType, Value
from . import indexing
from . import numpy_api as api


def _flat_values(v, dtype: DType) -> Value:
    """`v` flattened and cast to the array's dtype (NumPy casts what it writes unsafely)."""
    value = v if isinstance(v, Value) else api.as_value(v)
    value = P.convert(value, dtype) if value.type.dtype != dtype else value
    return P.reshape(value, (value.type.size,))


def _cycled(values: Value, count: int) -> Value:
    """values[k % len(values)] for k < count: how NumPy's put, putmask and place repeat a
    shorter value array."""
    n = values.type.size
    if n == count:
        return values
    return indexing.getitem(values, np.arange(count, dtype=np.int64) % n)


def put(x: Value, ind, v, mode: str = "raise") -> Value:
    """The array after `x.put(ind, v, mode)`: x.flat[ind[k]] = v.flat[k % len(v)], in order."""
    if mode not in ("raise", "wrap", "clip"):
        raise ValueError(f"clipmode must be one of 'clip', 'raise', or 'wrap' (got {mode!r})")
    size = x.type.size
    if isinstance(ind, Value):
        positions = P.reshape(P.convert(ind, DType.i64) if ind.type.dtype != DType.i64 else ind, (ind.type.size,))
        count = positions.type.size
        if size and mode == "wrap":
            positions = P.remainder(positions, P.full(size, positions.type))
        elif size and mode == "clip":
            positions = P.minimum(P.maximum(positions, P.full(0, positions.type)), P.full(size - 1, positions.type))
    else:
        positions = np.asarray(ind).astype(np.int64).reshape(-1)      # NumPy force-casts the indices
        count = positions.size
        if size and mode == "wrap":
            positions = positions % size
        elif size and mode == "clip":
            positions = np.clip(positions, 0, size - 1)
        elif mode == "raise":
            outside = positions[(positions < -size) | (positions >= size)]
            if outside.size:
                raise IndexingError(f"index {outside[0]} is out of bounds for axis 0 with size {size}")
            positions = np.where(positions < 0, positions + size, positions)
    values = _flat_values(v, x.type.dtype)
    if count == 0 or values.type.size == 0:
        return x
    if size == 0:
        raise IndexingError("cannot replace elements of an empty array")
    flat = indexing.setitem(P.reshape(x, (size,)), positions, _cycled(values, count))
    return P.reshape(flat, x.type.shape)


def resize(x: Value, *new_shape) -> Value:
    """The array after `x.resize(new_shape)`: its elements in order, cut or followed by zeros."""
    if len(new_shape) == 1 and (new_shape[0] is None or isinstance(new_shape[0], (tuple, list))):
        new_shape = () if new_shape[0] is None else tuple(new_shape[0])
    if not new_shape:
        return x
    shape = tuple(int(n) for n in new_shape)
    if any(n < 0 for n in shape):
        raise ShapeError("negative dimensions not allowed (ndarray.resize)")
    count, size = math.prod(shape), x.type.size
    flat = P.reshape(x, (size,))
    if count < size:
        flat = P.static_slice(flat, (0,), (count,), (1,))
    elif count > size:
        flat = _zero_extended(flat, count)
    return P.reshape(flat, shape)


def _zero_extended(flat: Value, count: int) -> Value:
    zeros = api.as_value(np.zeros(count - flat.type.size, dtype=flat.type.dtype.numpy), flat.type.dtype)
    return P.concatenate([flat, zeros], 0) if flat.type.size else zeros


def putmask(x: Value, mask, values) -> Value:
    """The array after `np.putmask(x, mask, values)`: x.flat[n] = values.flat[n % len(values)]
    where mask.flat[n] holds (the value by position, not by count of True)."""
    mask_value = mask if isinstance(mask, Value) else api.as_value(np.asarray(mask, dtype=bool))
    if mask_value.type.shape != x.type.shape:
        raise ShapeError(f"putmask: mask and data must be the same size (mask {mask_value.type.shape}, "
                         f"data {x.type.shape})")
    if mask_value.type.dtype != DType.bool:
        mask_value = P.ne(mask_value, P.full(0, mask_value.type))
    flat_values = _flat_values(values, x.type.dtype)
    if flat_values.type.size == 0 or x.type.size == 0:
        return x
    filled = P.reshape(_cycled(flat_values, x.type.size), x.type.shape)
    return P.select(mask_value, filled, x)


def place(x: Value, mask, vals) -> Value:
    """The array after `np.place(x, mask, vals)`: the k-th True position takes
    vals.flat[k % len(vals)]. Which value lands where depends on how many Trues come
    before, so the mask must be known at trace time."""
    if isinstance(mask, Value):
        raise UnsupportedOperationError(
            "numpy.place with a traced mask puts the k-th value at the k-th True, a position that depends on the "
            "data; use np.putmask(a, mask, values) (values by position) or np.where(mask, values, a)")
    mask_array = np.asarray(mask, dtype=bool)
    if mask_array.size != x.type.size:
        raise ShapeError(f"place: mask and data must be the same size (mask {mask_array.size}, data {x.type.size})")
    count = int(mask_array.sum())
    flat_values = _flat_values(vals, x.type.dtype)
    if count == 0:
        return x
    if flat_values.type.size == 0:
        raise ValueError("Cannot insert from an empty array!")
    positions = np.flatnonzero(mask_array)
    flat = indexing.setitem(P.reshape(x, (x.type.size,)), positions, _cycled(flat_values, count))
    return P.reshape(flat, x.type.shape)


def put_along_axis(x: Value, indices, values, axis) -> Value:
    """The array after `np.put_along_axis(x, indices, values, axis)`: NumPy's own fancy
    index (indices along `axis`, aranges along the others) assigned with `values`."""
    if axis is None:
        flat = put_along_axis(P.reshape(x, (x.type.size,)), indices, values, 0)
        return P.reshape(flat, x.type.shape)
    ndim = x.type.ndim
    index_ndim = indices.type.ndim if isinstance(indices, Value) else np.ndim(indices)
    if index_ndim != ndim:
        raise ShapeError("`indices` and `arr` must have the same number of dimensions")
    axis = api.normalize_axes(axis, ndim)[0]
    items = []
    for dim in range(ndim):
        if dim == axis:
            items.append(indices if isinstance(indices, Value) else np.asarray(indices).astype(np.int64))
        else:
            shape = [1] * ndim
            shape[dim] = -1
            items.append(np.arange(x.type.shape[dim], dtype=np.int64).reshape(shape))
    return indexing.setitem(x, tuple(items), values)


def fill_diagonal(x: Value, val, wrap: bool = False) -> Value:
    """The array after `np.fill_diagonal(x, val, wrap)`: NumPy's strided flat write
    (`x.flat[:end:step] = val`, the values repeated), tall 2-d arrays wrapping with `wrap`."""
    shape = x.type.shape
    if len(shape) < 2:
        raise ShapeError("array must be at least 2-d")
    if len(shape) == 2:
        step, end = shape[1] + 1, None if wrap else shape[1] * shape[1]
    else:
        if any(n != shape[0] for n in shape):
            raise ShapeError("All dimensions of input must be of equal length")
        step, end = 1 + int(np.cumprod(shape[:-1]).sum()), None
    positions = np.arange(x.type.size, dtype=np.int64)[:end:step]
    return put(x, positions, val)
