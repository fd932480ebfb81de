"""Indexed data movement with indices known only at run time: gather, scatter-add and
scatter (set).

All three index one axis of `operand` (`axis`) with an int64 array `indices`; the other
axes are carried along, so for an operand of shape (*pre, n, *post) and indices of shape
I the gathered (and the scattered `updates`) shape is (*pre, *I, *post):

    gather:       out[p, i, q] = operand[p, c(indices[i]), q]
    scatter_add:  out = operand; out[p, c(indices[i]), q] += updates[p, i, q] for every i
    scatter:      out = operand; out[p, c(indices[i]), q]  = updates[p, i, q], i in row-major
                  order, so where an index repeats the last write wins

where c clamps an index into [0, n - 1]: the primitives never touch memory outside the
operand whatever the data (wrapping negative indices is the tracer's business, done with
elementwise ops before the gather). NumPy's integer-array indexing, `np.take`,
`take_along_axis`, item assignment and `np.add.at` all reduce to these three
(`jitgrad/tracing/indexing.py`).

Linearity: gather is linear in `operand`; scatter_add and scatter are linear in
(`operand`, `updates`) jointly; the indices are never differentiated. The transposes are
each other: gather <-> scatter_add, and scatter's transpose sends the cotangent of each
written position to the write that won it (the losing writes of a repeated index get 0)
and zero to the overwritten operand elements.

Each is a kernel of its own on every backend (`KernelKind`; the CPU code is in
`jitgrad/backends/cpu/gather.py`).
"""
from __future__ import annotations

import numpy as np

from .kernel_kind import KernelKind
from jitgrad.errors import DTypeError, IndexingError, ShapeError
from jitgrad.ir import DType, TensorType, Trait
from .base import Primitive, UndefinedPrimal, Zero, defjvp_zero, deftranspose, instantiate


class GatherKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.gather:emit_gather",
                "cuda": "jitgrad.backends.cuda.gather:emit_gather"}


class ScatterAddKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.gather:emit_scatter_add",
                "cuda": "jitgrad.backends.cuda.gather:emit_scatter_add"}


class IndexCheckKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.gather:emit_index_check",
                "cuda": "jitgrad.backends.cuda.index_check:emit_index_check"}


class ScatterKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.gather:emit_scatter",
                "cuda": "jitgrad.backends.cuda.gather:emit_scatter"}


# --------------------------------------------------------------------------- shapes

def indexed_shape(operand: TensorType, indices: TensorType, axis: int) -> tuple:
    """(*pre, *indices.shape, *post): the gathered shape, also that of scatter updates."""
    return operand.shape[:axis] + indices.shape + operand.shape[axis + 1:]


def _check_indices(name: str, operand: TensorType, indices: TensorType, axis: int) -> None:
    if not 0 <= axis < operand.ndim:
        raise ShapeError(f"{name}: axis {axis} is out of bounds for an operand of rank {operand.ndim}")
    if indices.dtype != DType.i64:
        raise DTypeError(f"{name}: indices must be int64, not {indices.dtype}")


def _gather_infer(operand: TensorType, indices: TensorType, *, axis):
    _check_indices("gather", operand, indices, axis)
    return [TensorType(indexed_shape(operand, indices, axis), operand.dtype)]


def _scatter_infer(name: str):
    def infer(operand: TensorType, indices: TensorType, updates: TensorType, *, axis):
        _check_indices(name, operand, indices, axis)
        expected = indexed_shape(operand, indices, axis)
        if updates.shape != expected:
            raise ShapeError(f"{name}: updates of shape {updates.shape} do not match the indexed shape {expected}")
        if updates.dtype != operand.dtype:
            raise DTypeError(f"{name}: updates dtype {updates.dtype} differs from the operand's {operand.dtype}")
        if name == "scatter_add" and operand.dtype == DType.bool:
            raise DTypeError("scatter_add: bool operands have no addition (use scatter, or an integer dtype)")
        return [operand]
    return infer


# --------------------------------------------------------------------------- NumPy references

def _clamped(indices: np.ndarray, n: int) -> np.ndarray:
    return np.clip(np.asarray(indices, np.int64), 0, max(n - 1, 0))


def _gather_impl(operand, indices, *, axis):
    n = operand.shape[axis]
    shape = operand.shape[:axis] + indices.shape + operand.shape[axis + 1:]
    if n == 0:
        return np.zeros(shape, operand.dtype)
    return np.take(operand, _clamped(indices, n), axis=axis)


def _scatter_views(operand, indices, updates, axis):
    out = np.array(operand, copy=True)
    n = operand.shape[axis]
    pre = int(np.prod(operand.shape[:axis], dtype=np.int64))
    post = int(np.prod(operand.shape[axis + 1:], dtype=np.int64))
    flat = _clamped(indices, n).reshape(-1)
    return out, out.reshape(pre, n, post), flat, np.asarray(updates).reshape(pre, flat.size, post)


def _scatter_add_impl(operand, indices, updates, *, axis):
    out, out3, flat, updates3 = _scatter_views(operand, indices, updates, axis)
    if out.size and flat.size:
        np.add.at(out3, (slice(None), flat), updates3)
    return out


def _scatter_impl(operand, indices, updates, *, axis):
    out, out3, flat, updates3 = _scatter_views(operand, indices, updates, axis)
    if out.size and flat.size:
        writer = np.full(out3.shape[1], -1, np.int64)
        np.maximum.at(writer, flat, np.arange(flat.size, dtype=np.int64))
        written = writer >= 0
        out3[:, written, :] = updates3[:, writer[written], :]
    return out


# --------------------------------------------------------------------------- records

gather_p = Primitive("gather", _gather_infer, _gather_impl,
                     doc="operand[..., indices, ...] along `axis` (int64 indices clamped into range).")
gather_p.lowering = GatherKernel()

scatter_add_p = Primitive("scatter_add", _scatter_infer("scatter_add"), _scatter_add_impl,
                          doc="operand with updates added at indices along `axis`; repeated indices "
                              "accumulate (np.add.at).")
scatter_add_p.lowering = ScatterAddKernel()

scatter_p = Primitive("scatter", _scatter_infer("scatter"), _scatter_impl,
                      doc="operand with updates written at indices along `axis`; of repeated "
                          "indices the last write wins.")
scatter_p.lowering = ScatterKernel()


def gather(operand, indices, axis: int):
    return gather_p.bind(operand, indices, axis=int(axis))


def scatter_add(operand, indices, updates, axis: int):
    return scatter_add_p.bind(operand, indices, updates, axis=int(axis))


def scatter(operand, indices, updates, axis: int):
    return scatter_p.bind(operand, indices, updates, axis=int(axis))


def _zeros(type: TensorType):
    from .structural import full
    return full(0, type)


# ----- gather: linear in the operand
def _gather_jvp(primals, tangents, *, axis):
    operand, indices = primals
    if isinstance(tangents[0], Zero):
        return Zero(_gather_infer(operand.type, indices.type, axis=axis)[0])
    return gather(tangents[0], indices, axis)


def _gather_transpose(ct, operand, indices, *, axis):
    assert isinstance(operand, UndefinedPrimal) and not isinstance(indices, UndefinedPrimal)
    return [scatter_add(_zeros(operand.type), indices, instantiate(ct), axis), None]


gather_p.jvp = _gather_jvp
deftranspose(gather_p, _gather_transpose, linear_operands=(0,))


# ----- scatter_add: linear in (operand, updates)
def _scatter_add_jvp(primals, tangents, *, axis):
    operand, indices, updates = primals
    t_operand, _, t_updates = tangents
    if isinstance(t_operand, Zero) and isinstance(t_updates, Zero):
        return Zero(operand.type)
    if isinstance(t_updates, Zero):
        return t_operand
    return scatter_add(instantiate(t_operand), indices, t_updates, axis)


def _scatter_add_transpose(ct, operand, indices, updates, *, axis):
    assert not isinstance(indices, UndefinedPrimal)
    ct = instantiate(ct)
    return [ct if isinstance(operand, UndefinedPrimal) else None, None,
            gather(ct, indices, axis) if isinstance(updates, UndefinedPrimal) else None]


scatter_add_p.jvp = _scatter_add_jvp
deftranspose(scatter_add_p, _scatter_add_transpose, linear_operands=(0, 2))


# ----- scatter: linear in (operand, updates)
def _scatter_jvp(primals, tangents, *, axis):
    operand, indices, updates = primals
    t_operand, _, t_updates = tangents
    if isinstance(t_operand, Zero) and isinstance(t_updates, Zero):
        return Zero(operand.type)
    return scatter(instantiate(t_operand), indices, instantiate(t_updates), axis)


def winning_writes(indices, n: int):
    """A bool array of `indices`' shape: True where the write of `scatter` to that index is
    the last one to its (clamped) position, i.e. the write that survives."""
    from .elementwise import eq
    from .structural import constant, full, reshape
    count = indices.type.size
    flat = reshape(indices, (count,))
    order = constant(np.arange(count, dtype=np.int64))
    last = scatter(full(-1, TensorType((n,), DType.i64)), flat, order, 0)
    return reshape(eq(gather(last, flat, 0), order), indices.type.shape)


def _scatter_transpose(ct, operand, indices, updates, *, axis):
    assert not isinstance(indices, UndefinedPrimal)
    from .elementwise import select
    from .structural import broadcast_in_dim
    ct = instantiate(ct)
    operand_type = operand.type
    update_type = updates.type
    ct_operand = ct_updates = None
    if isinstance(operand, UndefinedPrimal):
        ct_operand = scatter(ct, indices, _zeros(update_type), axis)
    if isinstance(updates, UndefinedPrimal):
        n = operand_type.shape[axis]
        won = winning_writes(indices, n) if n else None
        picked = gather(ct, indices, axis)
        if won is not None and update_type.size:
            dims = tuple(range(axis, axis + indices.type.ndim))
            ct_updates = select(broadcast_in_dim(won, update_type.shape, dims), picked, _zeros(update_type))
        else:
            ct_updates = _zeros(update_type)
    return [ct_operand, None, ct_updates]


scatter_p.jvp = _scatter_jvp
deftranspose(scatter_p, _scatter_transpose, linear_operands=(0, 2))


# ----- index_check: NumPy's bounds check of run-time indices
def _index_check_infer(indices: TensorType, *, size, axis):
    if indices.dtype != DType.i64:
        raise DTypeError(f"index_check: indices must be int64, not {indices.dtype}")
    return [indices]


def _index_check_impl(indices, *, size, axis):
    indices = np.asarray(indices, np.int64)
    bad = (indices < -size) | (indices >= size)
    if bad.any():
        raise IndexingError(f"index {indices[bad].flat[0]} is out of bounds for axis {axis} with size {size}")
    return np.where(indices < 0, indices + size, indices)


index_check_p = Primitive("index_check", _index_check_infer, _index_check_impl, traits=(Trait.HAS_SIDE_EFFECT,),
                          doc="Run-time indices into an axis of length `size`, negative ones wrapped once: "
                              "an index outside [-size, size) makes the call raise IndexingError naming the "
                              "op's line (the result is then clamped, never used out of bounds).")
index_check_p.lowering = IndexCheckKernel()
defjvp_zero(index_check_p)


def _index_check_batch(operands, dims, **attrs):
    """Elementwise: the mapped axis stays where it is."""
    return index_check_p.bind(operands[0], **attrs), dims[0]


index_check_p.batch = _index_check_batch


def index_check(indices, size: int, axis: int):
    return index_check_p.bind(indices, size=int(size), axis=int(axis))
