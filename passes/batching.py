"""The vectorizing map (vmap) as an IR -> IR pass.

`batch_function(fn, in_dims, size)` builds the function that applies `fn` to every slice
of its mapped arguments at once: argument k of the result has `fn`'s argument type with
an extra axis of length `size` at `in_dims[k]` (None: not mapped, the same value for every
slice). It runs on the IR's one driver (`jitgrad.ir.rewrite.Rewriter`): the env maps each
value to its batched copy and `dims` to where its mapped axis is (None: the value is the
same for every slice). An op none of whose inputs is mapped is copied unchanged; any
other op goes to its record's `batch` rule (`op.rule("batch")`, so an op without one
raises `MissingRuleError` naming it and the user's line), with the contract of
`OpDef.batch`: `rule(operands, batch_dims, **attrs) -> (outputs, out_batch_dims)`.

The rules are JAX's (jax/_src/interpreters/batching.py), restated for jitgrad's ops:
most move the mapped axis to the front and shift the op's axis attributes by one; the
elementwise family broadcasts unmapped operands (`batch_elementwise`); dot_general turns
the mapped axis into a batch dimension (or a free one, when one side is unmapped);
gather and scatter fold the mapped axis into the indexed one with per-slice offsets.
`install_rules()` puts them on the records whose `batch` slot is empty; the elementwise
rule is derived from the op family (a non-indexed `Elementwise` lowering).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from jitgrad.ir import DType, Function, OpDef, Operation, TensorType, Value, current_builder, emit, new_function
from jitgrad.ir.clone import body_function, clone_op, function_region
from jitgrad.ir.errors import MissingRuleError
from jitgrad.ir.rewrite import Rewriter, free_values
from jitgrad.primitives import (Elementwise, add, broadcast_in_dim, concatenate, constant, full, maximum, minimum,
                                mul, reshape, static_slice, transpose)
from jitgrad.primitives.calls import CallOp

Dim = Optional[int]


# --------------------------------------------------------------------------- axis helpers

def move_axis(x: Value, src: int, dst: int) -> Value:
    """x with its axis `src` moved to position `dst` (the others keep their order)."""
    if src == dst:
        return x
    order = [a for a in range(x.ndim) if a != src]
    order.insert(dst, src)
    return transpose(x, tuple(order))


def to_front(x: Value, dim: Dim, size: int) -> Value:
    """x with its mapped axis first; an unmapped x is broadcast to `size` slices."""
    if dim is None:
        return broadcast_in_dim(x, (size, *x.shape), tuple(range(1, x.ndim + 1)))
    return move_axis(x, dim, 0)


def to_axis(x: Value, dim: Dim, size: int, dst: int) -> Value:
    """x with its mapped axis at `dst` (broadcast first when x is unmapped)."""
    return move_axis(to_front(x, dim, size), 0, dst)


def _size(operands: Sequence[Value], dims: Sequence[Dim]) -> int:
    return next(v.shape[d] for v, d in zip(operands, dims) if d is not None)


def _front_all(operands, dims):
    size = _size(operands, dims)
    return [to_front(v, d, size) for v, d in zip(operands, dims)], size


def _front_one(operands, dims):
    (x,), (d,) = operands, dims
    return move_axis(x, d, 0)


# --------------------------------------------------------------------------- the op family's rule

def batch_elementwise(opdef: OpDef):
    """The rule every elementwise op shares: each operand's mapped axis goes first, unmapped
    operands (and operands of lower rank, NumPy-style) are broadcast to the batched result
    shape, and the op runs once on the batched arrays."""
    def rule(operands, dims, **attrs):
        size = _size(operands, dims)
        rank = max(v.ndim - (d is not None) for v, d in zip(operands, dims))
        moved = []
        for v, d in zip(operands, dims):
            if d is not None:
                v = move_axis(v, d, 0)
            moved.append((v, d is not None))
        shape = [1] * rank
        for v, mapped in moved:
            own = v.shape[1:] if mapped else v.shape
            for k, n in enumerate(own):
                pos = rank - len(own) + k
                if n != 1:                  # NumPy's broadcast: a length other than 1 wins (0 too)
                    shape[pos] = n
        full_shape = (size, *shape)
        out = []
        for v, mapped in moved:
            own = v.ndim - mapped
            dims_map = (0,) * mapped + tuple(range(rank - own + 1, rank + 1))
            if v.shape != full_shape:
                v = broadcast_in_dim(v, full_shape, dims_map)
            out.append(v)
        result = emit(opdef, *out, **attrs)
        if isinstance(result, list):
            return result, [0] * len(result)
        return result, 0
    rule.__name__ = f"batch_{opdef.name}"
    return rule


# --------------------------------------------------------------------------- structural ops

def _batch_reshape(operands, dims, *, new_sizes):
    x = _front_one(operands, dims)
    return reshape(x, (x.shape[0], *new_sizes)), 0


def _batch_transpose(operands, dims, *, permutation):
    x = _front_one(operands, dims)
    return transpose(x, (0, *(p + 1 for p in permutation))), 0


def _batch_broadcast(operands, dims, *, shape, broadcast_dimensions):
    x = _front_one(operands, dims)
    return broadcast_in_dim(x, (x.shape[0], *shape), (0, *(d + 1 for d in broadcast_dimensions))), 0


def _batch_slice(operands, dims, *, start_indices, limit_indices, strides):
    x = _front_one(operands, dims)
    strides = strides if strides is not None else (1,) * len(start_indices)
    return static_slice(x, (0, *start_indices), (x.shape[0], *limit_indices), (1, *strides)), 0


def _batch_pad(operands, dims, *, low, high, interior):
    x = _front_one(operands, dims)
    return emit(OpDef.registry["pad"], x, low=(0, *low), high=(0, *high), interior=(0, *interior)), 0


def _batch_rev(operands, dims, *, dimensions):
    x = _front_one(operands, dims)
    return emit(OpDef.registry["rev"], x, dimensions=tuple(d + 1 for d in dimensions)), 0


def _batch_concatenate(operands, dims, *, axis):
    xs, _ = _front_all(operands, dims)
    return concatenate(xs, axis + 1), 0


def _batch_axes_op(name):
    """Ops with an `axes` tuple attribute (the reductions): mapped axis first, axes + 1."""
    def rule(operands, dims, *, axes):
        x = _front_one(operands, dims)
        return emit(OpDef.registry[name], x, axes=tuple(a + 1 for a in axes)), 0
    return rule


def _batch_cumsum(operands, dims, *, axis, reverse):
    x = _front_one(operands, dims)
    return emit(OpDef.registry["cumsum"], x, axis=axis + 1, reverse=reverse), 0


def _batch_last_axis(name):
    """sort/argsort work along the last axis: a mapped axis in front leaves it last."""
    def rule(operands, dims):
        x = _front_one(operands, dims)
        if x.ndim == 1:                     # each slice is a scalar: sorted already
            return (x if name == "sort" else full(0, TensorType(x.shape, DType.i64))), 0
        return emit(OpDef.registry[name], x), 0
    return rule


# --------------------------------------------------------------------------- dot_general

def _outer_product(lhs: Value, rhs: Value, contract, batch) -> Value:
    """dot_general whose contracted dimensions hold one element in all (none, or all of
    length 1), as broadcast multiplication in dot_general's layout: batch dimensions, lhs
    free ones, rhs free ones. Exact (each element is one product), and it keeps such
    products off the CPU backend's batched-matmul path, which recurses without end on
    them (k = 1 with a batch)."""
    (lc, rc), (lb, rb) = contract, batch
    lfree = [a for a in range(lhs.ndim) if a not in lb and a not in lc]
    rfree = [a for a in range(rhs.ndim) if a not in rb and a not in rc]
    nb, nl = len(lb), len(lfree)
    left = transpose(lhs, (*lb, *lfree, *lc))
    right = transpose(rhs, (*rb, *rfree, *rc))
    left = reshape(left, left.shape[:left.ndim - len(lc)])
    right = reshape(right, right.shape[:right.ndim - len(rc)])
    shape = (*left.shape, *right.shape[nb:])
    left = broadcast_in_dim(left, shape, tuple(range(nb + nl)))
    right = broadcast_in_dim(right, shape, (*range(nb), *range(nb + nl, len(shape))))
    return mul(left, right)


def _dot(lhs, rhs, contract, batch):
    if int(np.prod([lhs.shape[a] for a in contract[0]], dtype=np.int64)) == 1:
        return _outer_product(lhs, rhs, contract, batch)
    return emit(OpDef.registry["dot_general"], lhs, rhs, contract=contract, batch=batch)


def _batch_dot_general(operands, dims, *, contract, batch):
    """A mapped axis on both sides becomes a new leading batch dimension; on one side only
    it is a free dimension of that side, which dot_general places after the batch
    dimensions (lhs free dimensions before rhs ones)."""
    (lhs, rhs), (ld, rd) = operands, dims
    (lc, rc), (lb, rb) = contract, batch
    shift = lambda axes: tuple(a + 1 for a in axes)   # noqa: E731
    if ld is not None and rd is not None:
        lhs, rhs = move_axis(lhs, ld, 0), move_axis(rhs, rd, 0)
        out = _dot(lhs, rhs, (shift(lc), shift(rc)), ((0, *shift(lb)), (0, *shift(rb))))
        return out, 0
    if ld is not None:
        lhs = move_axis(lhs, ld, 0)
        out = _dot(lhs, rhs, (shift(lc), rc), (shift(lb), rb))
        return out, len(lb)
    rhs = move_axis(rhs, rd, 0)
    out = _dot(lhs, rhs, (lc, shift(rc)), (lb, shift(rb)))
    n_lhs_free = lhs.ndim - len(lc) - len(lb)
    return out, len(lb) + n_lhs_free


# --------------------------------------------------------------------------- gather / scatter

def _offset_indices(indices: Value, size: int, n: int) -> Value:
    """Batched indices (slice axis first) clamped into [0, n) as the ops clamp them, plus
    b * n for slice b: positions in the operand with the mapped axis folded into the
    indexed one."""
    i64 = indices.type
    clamped = minimum(maximum(indices, full(0, i64)), full(max(n - 1, 0), i64))
    starts = constant(np.arange(size, dtype=np.int64) * n, DType.i64)
    return add(clamped, broadcast_in_dim(starts, indices.shape, (0,)))


def _fold(operand: Value, axis: int) -> Value:
    """operand (slices first) with the slice axis folded into `axis` (of one slice)."""
    size, n = operand.shape[0], operand.shape[axis + 1]
    moved = move_axis(operand, 0, axis)
    shape = moved.shape
    return reshape(moved, (*shape[:axis], size * n, *shape[axis + 2:]))


def _batch_gather(operands, dims, *, axis):
    (operand, indices), (od, idim) = operands, dims
    if idim is None:                          # same indices for every slice: gather one axis over
        operand = move_axis(operand, od, 0)
        return emit(OpDef.registry["gather"], operand, indices, axis=axis + 1), 0
    size = _size(operands, dims)
    indices = to_front(indices, idim, size)
    if od is None:                            # one operand, batched indices: an ordinary gather
        out = emit(OpDef.registry["gather"], operand, indices, axis=axis)
        return out, axis
    operand = move_axis(operand, od, 0)
    n = operand.shape[axis + 1]
    out = emit(OpDef.registry["gather"], _fold(operand, axis), _offset_indices(indices, size, n), axis=axis)
    return out, axis


def _batch_scatter(name):
    def rule(operands, dims, *, axis):
        (operand, indices, updates), (od, idim, ud) = operands, dims
        size = _size(operands, dims)
        operand = to_front(operand, od, size)
        if idim is None:
            updates = to_axis(updates, ud, size, 0)
            return emit(OpDef.registry[name], operand, indices, updates, axis=axis + 1), 0
        indices = to_front(indices, idim, size)
        n = operand.shape[axis + 1]
        updates = to_axis(updates, ud, size, axis)       # (pre, B, I..., post): B beside the indices
        out = emit(OpDef.registry[name], _fold(operand, axis), _offset_indices(indices, size, n), updates, axis=axis)
        shape = out.shape
        out = reshape(out, (*shape[:axis], size, n, *shape[axis + 1:]))
        return out, axis
    return rule


# --------------------------------------------------------------------------- random numbers

def _batch_random_uniform(operands, dims, *, shape, stream, word, dtype):
    """Keys that differ per slice: one draw per slice (a counter-based generator takes its
    key as 0-d operands), stacked."""
    size = _size(operands, dims)
    keys = [to_front(v, d, size) for v, d in zip(operands, dims)]
    rows = []
    for b in range(size):
        k0, k1 = (reshape(static_slice(k, (b,), (b + 1,), (1,)), ()) for k in keys)
        draw = emit(OpDef.registry["random_uniform"], k0, k1, shape=shape, stream=stream, word=word, dtype=dtype)
        rows.append(reshape(draw, (1, *shape)))
    return (rows[0] if size == 1 else concatenate(rows, 0)), 0


# --------------------------------------------------------------------------- the pass

class _BatchRewriter(Rewriter):
    """The driver with one rule for every op; `dims` maps each source value to the mapped
    axis of its batched copy (absent or None: unmapped)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.dims: dict[Value, Dim] = {}

    def rule_for(self, op: Operation):
        return _batch_rule


def _batch_rule(rewriter: _BatchRewriter, op: Operation, inputs: list[Value]) -> list[Value]:
    dims = [rewriter.dims.get(v) for v in op.operands]
    captured_mapped = op.regions and any(
        rewriter.dims.get(v) is not None for region in op.regions for block in region.blocks
        for v in free_values(block))
    if all(d is None for d in dims) and not captured_mapped:
        if op.name == "random_uniform":
            return [_draw_per_slice(op, inputs, rewriter)]
        if op.regions:
            outs = list(rewriter.default_rule(op, inputs))
        else:
            outs = list(clone_op(current_builder(), op, inputs, {}).results)
        rewriter.dims.update((r, None) for r in op.results)
        return outs
    if captured_mapped:
        raise MissingRuleError(f"op {op.name!r} reads a mapped value from an enclosing block; vmap cannot "
                               "batch such a region yet (pass the value as an operand)", op.loc if op.loc.line else None,
                               op=op.name, slot="batch")
    if isinstance(op.opdef, CallOp) and op.name in ("checkpoint", "checkpoint_jvp"):
        outs, out_dims = _batch_call(op, inputs, dims, rewriter.size)
    else:
        rule = op.rule("batch")
        outs, out_dims = rule(inputs, dims, **op.attrs)
    outs, out_dims = op.per_result(outs, "batch rule"), op.per_result(out_dims, "batch rule")
    rewriter.dims.update(zip(op.results, out_dims, strict=True))
    return outs


def _draw_per_slice(op: Operation, keys, rewriter: _BatchRewriter) -> Value:
    """A draw under vmap is one draw per slice, as a loop over the slices would make
    (NumPy's generator gives every call new numbers): one draw of `size` times the
    elements, slice b taking the b-th block of the counter range, so slice 0 holds what
    the unbatched draw holds."""
    attrs = dict(op.attrs)
    attrs["shape"] = (rewriter.size, *attrs["shape"])
    out = emit(op.opdef, *keys, **attrs)
    rewriter.dims[op.result] = 0
    return out


def _batch_call(op: Operation, operands, dims, size: int):
    """A call-like op (one region that takes the operands and yields the results): the same
    op around the batched body, every result mapped along its first axis."""
    body, out_dims = batch_function(body_function(op), dims, size)
    outs = [to_front(v, d, size) for v, d in zip(
        emit_body_outputs(op, body, operands), out_dims)]
    return outs, [0] * len(outs)


def emit_body_outputs(op: Operation, body: Function, operands) -> list[Value]:
    new = current_builder().create(op.opdef, list(operands), op.attrs, regions=[function_region(body)],
                                   result_types=body.output_types)
    return list(new.results)


def batch_function(fn: Function, in_dims: Sequence[Dim], size: int,
                   name: Optional[str] = None) -> tuple[Function, list[Dim]]:
    """`fn` batched: argument k gains an axis of length `size` at `in_dims[k]` (None: not
    mapped). Returns the new function and the mapped axis of each of its outputs (None
    for an output that is the same for every slice)."""
    in_dims = list(in_dims)
    if len(in_dims) != len(fn.args):
        raise ValueError(f"{len(in_dims)} batch dims for {len(fn.args)} arguments")
    types = []
    for arg, d in zip(fn.args, in_dims):
        t = arg.type
        types.append(t if d is None else TensorType((*t.shape[:d], size, *t.shape[d:]), t.dtype))
    new_fn, builder = new_function(name or f"{fn.name}_batched", types)
    rewriter = _BatchRewriter(size)
    rewriter.dims.update({v: d for v, d in zip(new_fn.args, in_dims)})
    rewriter.dims.update({v: d for v, d in zip(fn.args, in_dims)})
    with builder:
        outs = rewriter.run_block(fn.body, new_fn.args)
        with builder.at(fn.body.terminator.loc):
            builder.ret(outs)
    return new_fn, [rewriter.dims.get(v) for v in fn.outputs]


# --------------------------------------------------------------------------- the rules on the records

RULES = {
    "reshape": _batch_reshape,
    "transpose": _batch_transpose,
    "broadcast_in_dim": _batch_broadcast,
    "slice": _batch_slice,
    "pad": _batch_pad,
    "rev": _batch_rev,
    "concatenate": _batch_concatenate,
    "reduce_sum": _batch_axes_op("reduce_sum"),
    "reduce_max": _batch_axes_op("reduce_max"),
    "reduce_min": _batch_axes_op("reduce_min"),
    "cumsum": _batch_cumsum,
    "sort": _batch_last_axis("sort"),
    "argsort": _batch_last_axis("argsort"),
    "dot_general": _batch_dot_general,
    "gather": _batch_gather,
    "scatter": _batch_scatter("scatter"),
    "scatter_add": _batch_scatter("scatter_add"),
    "random_uniform": _batch_random_uniform,
}
"""The explicit rules, by op name; elementwise ops get `batch_elementwise` from their family."""


def install_rules() -> None:
    """Fill the empty `batch` slots: the explicit rules above, and the family rule for
    every op whose lowering is a plain (non-indexed) `Elementwise`."""
    for name, opdef in OpDef.registry.items():
        if opdef.batch is not None:
            continue
        if name in RULES:
            opdef.batch = RULES[name]
        elif isinstance(opdef.lowering, Elementwise) and not opdef.lowering.indexed:
            opdef.batch = batch_elementwise(opdef)


install_rules()
