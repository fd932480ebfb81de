"""Data-movement primitives: constant, broadcast, reshape, transpose, slicing, padding,
reversal and concatenation. All but `constant` are linear; their transposes are each
other (slice <-> pad, broadcast <-> reduce_sum, concatenate <-> slices).
"""
from __future__ import annotations

import math

import numpy as np

from jitgrad.errors import ShapeError
from jitgrad.ir import DType, TensorType
from .base import Alias, Constant, Gather, Primitive, Scatter, Zero, deflinear, emit_named


# --------------------------------------------------------------------------- constant

def _constant_infer(*, value: np.ndarray):
    return [TensorType(value.shape, DType.from_numpy(value.dtype))]


constant_p = Primitive("constant", _constant_infer, lambda *, value: value,
                       doc="A compile-time array (closed-over arrays, Python scalars).")
constant_p.lowering = Constant()
constant_p.jvp = lambda primals, tangents, *, value: Zero(_constant_infer(value=value)[0])


def constant(value, dtype: DType | None = None):
    array = np.array(value, dtype=dtype.numpy if dtype is not None else None)
    array.setflags(write=False)
    return constant_p.bind(value=array)


def full(value, result_type: TensorType):
    """An array of `result_type` filled with `value`: a 0-d constant broadcast to the shape."""
    scalar = constant(value, result_type.dtype)
    if result_type.shape == ():
        return scalar
    return broadcast_in_dim(scalar, result_type.shape, ())


# --------------------------------------------------------------------------- broadcast_in_dim

def _broadcast_infer(x: TensorType, *, shape, broadcast_dimensions):
    shape, dims = tuple(shape), tuple(broadcast_dimensions)
    if len(dims) != x.ndim:
        raise ShapeError(f"broadcast_in_dim: operand of rank {x.ndim} needs {x.ndim} broadcast "
                         f"dimensions, got {dims}")
    if any(d >= len(shape) for d in dims) or list(dims) != sorted(set(dims)):
        raise ShapeError(f"broadcast_in_dim: broadcast dimensions {dims} are not increasing axes "
                         f"of the result shape {shape}")
    for k, d in enumerate(dims):
        if x.shape[k] not in (1, shape[d]):
            raise ShapeError(f"operands could not be broadcast together: dimension {k} of shape "
                             f"{x.shape} does not fit {shape}")
    return [TensorType(shape, x.dtype)]


def _broadcast_impl(x, *, shape, broadcast_dimensions):
    expanded = np.reshape(x, [x.shape[broadcast_dimensions.index(d)] if d in broadcast_dimensions else 1
                              for d in range(len(shape))])
    return np.broadcast_to(expanded, shape).copy()


def _broadcast_index(ctx, out_index, in_type, out_type, *, shape, broadcast_dimensions):
    return [ctx.index_const(0) if in_type.shape[k] == 1 and shape[d] != 1 else out_index[d]
            for k, d in enumerate(broadcast_dimensions)]


def _broadcast_transpose(ct, x, *, shape, broadcast_dimensions):
    in_shape = x.type.shape
    new_axes = [d for d in range(len(shape)) if d not in broadcast_dimensions]
    stretched = [d for k, d in enumerate(broadcast_dimensions) if in_shape[k] == 1 and shape[d] != 1]
    summed = emit_named("reduce_sum", ct, axes=tuple(sorted(new_axes + stretched))) if new_axes or stretched else ct
    return [reshape(summed, in_shape) if summed.type.shape != in_shape else summed]


broadcast_in_dim_p = Primitive("broadcast_in_dim", _broadcast_infer, _broadcast_impl,
                               doc="Broadcast to `shape`; operand axis k becomes result axis "
                                   "broadcast_dimensions[k] (size 1 axes stretch).")
broadcast_in_dim_p.lowering = Gather(_broadcast_index)
deflinear(broadcast_in_dim_p, _broadcast_transpose)


def broadcast_in_dim(x, shape, broadcast_dimensions):
    shape, dims = tuple(int(s) for s in shape), tuple(int(d) for d in broadcast_dimensions)
    if x.type.shape == shape and dims == tuple(range(len(shape))):
        return x
    return broadcast_in_dim_p.bind(x, shape=shape, broadcast_dimensions=dims)


# --------------------------------------------------------------------------- reshape

def _reshape_infer(x: TensorType, *, new_sizes):
    if math.prod(new_sizes) != x.size:
        raise ShapeError(f"cannot reshape array of size {x.size} into shape {tuple(new_sizes)}")
    return [TensorType(tuple(new_sizes), x.dtype)]


reshape_p = Primitive("reshape", _reshape_infer, lambda x, *, new_sizes: np.reshape(x, new_sizes).copy(),
                      doc="Row-major reshape; lowered as a view of the operand's buffer.")
reshape_p.lowering = Alias()
deflinear(reshape_p, lambda ct, x, *, new_sizes: [reshape(ct, x.type.shape)])


def reshape(x, new_sizes):
    new_sizes = tuple(int(s) for s in new_sizes)
    return x if x.type.shape == new_sizes else reshape_p.bind(x, new_sizes=new_sizes)


# --------------------------------------------------------------------------- transpose

def _transpose_infer(x: TensorType, *, permutation):
    if sorted(permutation) != list(range(x.ndim)):
        raise ShapeError(f"transpose: axes {tuple(permutation)} don't match array of rank {x.ndim}")
    return [TensorType(tuple(x.shape[p] for p in permutation), x.dtype)]


def _transpose_index(ctx, out_index, in_type, out_type, *, permutation):
    in_index = [None] * len(permutation)
    for k, p in enumerate(permutation):
        in_index[p] = out_index[k]
    return in_index


transpose_p = Primitive("transpose", _transpose_infer,
                        lambda x, *, permutation: np.transpose(x, permutation).copy(),
                        doc="Axis permutation: result axis k is operand axis permutation[k].")
transpose_p.lowering = Gather(_transpose_index)
deflinear(transpose_p, lambda ct, x, *, permutation: [transpose(ct, tuple(np.argsort(permutation)))])


def transpose(x, permutation):
    permutation = tuple(int(p) for p in permutation)
    return x if permutation == tuple(range(len(permutation))) else transpose_p.bind(x, permutation=permutation)


# --------------------------------------------------------------------------- slice / pad

def _slice_infer(x: TensorType, *, start_indices, limit_indices, strides):
    if not (len(start_indices) == len(limit_indices) == len(strides) == x.ndim):
        raise ShapeError(f"slice: index tuples must have the operand's rank {x.ndim}")
    shape = []
    for lo, hi, st, n in zip(start_indices, limit_indices, strides, x.shape, strict=True):
        if not (0 <= lo <= hi <= n) or st < 1:
            raise ShapeError(f"slice [{lo}:{hi}:{st}] is out of bounds for a dimension of size {n}")
        shape.append(max(0, -(-(hi - lo) // st)))
    return [TensorType(tuple(shape), x.dtype)]


def _slice_impl(x, *, start_indices, limit_indices, strides):
    return x[tuple(slice(lo, hi, st) for lo, hi, st in zip(start_indices, limit_indices, strides,
                                                            strict=True))].copy()


def _slice_index(ctx, out_index, in_type, out_type, *, start_indices, limit_indices, strides):
    return [ctx.index_add(ctx.index_mul(i, ctx.index_const(st)), ctx.index_const(lo))
            for i, lo, st in zip(out_index, start_indices, strides, strict=True)]


def _slice_transpose(ct, x, *, start_indices, limit_indices, strides):
    out_shape = ct.type.shape
    high = [n - (lo + (m - 1) * st + 1) if m else n - lo
            for n, lo, st, m in zip(x.type.shape, start_indices, strides, out_shape, strict=True)]
    interior = [st - 1 if m else 0 for st, m in zip(strides, out_shape, strict=True)]
    return [pad(ct, tuple(start_indices), tuple(high), tuple(interior))]


slice_p = Primitive("slice", _slice_infer, _slice_impl,
                    doc="Static strided slice x[start:limit:stride] on every axis.")
slice_p.lowering = Gather(_slice_index)
deflinear(slice_p, _slice_transpose)


def static_slice(x, start_indices, limit_indices, strides=None):
    strides = tuple(strides) if strides is not None else (1,) * x.type.ndim
    if tuple(start_indices) == (0,) * x.type.ndim and tuple(limit_indices) == x.type.shape \
            and strides == (1,) * x.type.ndim:
        return x
    return slice_p.bind(x, start_indices=tuple(int(s) for s in start_indices),
                        limit_indices=tuple(int(s) for s in limit_indices), strides=tuple(int(s) for s in strides))


def _pad_infer(x: TensorType, *, low, high, interior):
    if not (len(low) == len(high) == len(interior) == x.ndim):
        raise ShapeError(f"pad: padding tuples must have the operand's rank {x.ndim}")
    if any(v < 0 for v in (*low, *high, *interior)):
        raise ShapeError("pad: padding amounts must be non-negative")
    shape = tuple(lo + hi + n + max(n - 1, 0) * it
                  for n, lo, hi, it in zip(x.shape, low, high, interior, strict=True))
    return [TensorType(shape, x.dtype)]


def _pad_impl(x, *, low, high, interior):
    out_type = _pad_infer(TensorType(x.shape, DType.from_numpy(x.dtype)), low=low, high=high,
                          interior=interior)[0]
    out = np.zeros(out_type.shape, x.dtype)
    out[tuple(slice(lo, lo + (n - 1) * (it + 1) + 1 if n else lo, it + 1)
              for lo, n, it in zip(low, x.shape, interior, strict=True))] = x
    return out


def _pad_place(ctx, k, index, in_types, out_type, *, low, high, interior):
    return [ctx.index_add(ctx.index_mul(i, ctx.index_const(it + 1)), ctx.index_const(lo))
            for i, lo, it in zip(index, low, interior, strict=True)]


def _pad_transpose(ct, x, *, low, high, interior):
    n_out = ct.type.shape
    limits = [m - hi for m, hi in zip(n_out, high, strict=True)]
    return [static_slice(ct, tuple(low), tuple(limits), tuple(it + 1 for it in interior))]


pad_p = Primitive("pad", _pad_infer, _pad_impl,
                  doc="Zero padding: `low`/`high` zeros at each end, `interior` zeros between elements.")
pad_p.lowering = Scatter(_pad_place)
deflinear(pad_p, _pad_transpose)


def pad(x, low, high, interior):
    return pad_p.bind(x, low=tuple(low), high=tuple(high), interior=tuple(interior))


# --------------------------------------------------------------------------- rev

def _rev_infer(x: TensorType, *, dimensions):
    if any(not 0 <= d < x.ndim for d in dimensions):
        raise ShapeError(f"rev: axes {dimensions} out of range for rank {x.ndim}")
    return [x]


def _rev_index(ctx, out_index, in_type, out_type, *, dimensions):
    return [ctx.index_sub(ctx.index_const(in_type.shape[k] - 1), i) if k in dimensions else i
            for k, i in enumerate(out_index)]


rev_p = Primitive("rev", _rev_infer, lambda x, *, dimensions: np.flip(x, dimensions).copy(),
                  doc="Reverse the order of elements along `dimensions`.")
rev_p.lowering = Gather(_rev_index)
deflinear(rev_p, lambda ct, x, *, dimensions: [rev(ct, dimensions)])


def rev(x, dimensions):
    return rev_p.bind(x, dimensions=tuple(int(d) for d in dimensions)) if dimensions else x


# --------------------------------------------------------------------------- concatenate

def _concatenate_infer(*types: TensorType, axis):
    first = types[0]
    if not 0 <= axis < first.ndim:
        raise ShapeError(f"concatenate: axis {axis} is out of bounds for arrays of rank {first.ndim}")
    for t in types[1:]:
        if t.dtype != first.dtype:
            raise ShapeError(f"concatenate: dtypes {first.dtype} and {t.dtype} differ")
        if t.ndim != first.ndim or any(a != b for k, (a, b) in enumerate(zip(t.shape, first.shape))
                                       if k != axis):
            raise ShapeError(f"all the input array dimensions except for the concatenation axis must "
                             f"match exactly, got shapes {first.shape} and {t.shape}")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in types)
    return [TensorType(tuple(shape), first.dtype)]


def _concatenate_place(ctx, k, index, in_types, out_type, *, axis):
    offset = sum(t.shape[axis] for t in in_types[:k])
    return [ctx.index_add(i, ctx.index_const(offset)) if d == axis else i for d, i in enumerate(index)]


def _concatenate_transpose(ct, *operands, axis):
    cts, start = [], 0
    for x in operands:
        size = x.type.shape[axis]
        lo = [0] * ct.type.ndim
        hi = list(ct.type.shape)
        lo[axis], hi[axis] = start, start + size
        cts.append(static_slice(ct, lo, hi))
        start += size
    return cts


concatenate_p = Primitive("concatenate", _concatenate_infer,
                          lambda *xs, axis: np.concatenate(xs, axis=axis),
                          doc="Join operands along `axis`.")
concatenate_p.lowering = Scatter(_concatenate_place)
deflinear(concatenate_p, _concatenate_transpose)


def concatenate(xs, axis: int):
    return xs[0] if len(xs) == 1 else concatenate_p.bind(*xs, axis=int(axis))


