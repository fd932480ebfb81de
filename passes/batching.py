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

Ops with regions (cond, while, fori, scan, reverse_fori, checkpoints, custom-rule calls)
have rules in `REGION_RULES` that batch their regions with this same function: a
mapped predicate or trip count runs every slice until the last one is done, freezing
the finished slices with select (see `_batch_cond`, `_batch_while`).

The rules are JAX's (jax/_src/interpreters/batching.py), restated for jitgrad's ops:
most move the mapped axis to the front and shift the op's axis attributes by one; the
elementwise family broadcasts unmapped operands (`batch_elementwise`); dot_general turns
the mapped axis into a batch dimension (or a free one, when one side is unmapped);
gather and scatter fold the mapped axis into the indexed one with per-slice offsets.
`install_rules()` puts them on the records whose `batch` slot is empty; the elementwise
rule is derived from the op family (a non-indexed `Elementwise` lowering).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from jitgrad.ir import DType, Function, OpDef, Operation, TensorType, Value, current_builder, emit, new_function
from jitgrad.ir.clone import body_function, clone_op, function_region
from jitgrad.ir.errors import MissingRuleError
from jitgrad.ir.rewrite import Rewriter, free_values
from jitgrad.primitives import (Elementwise, add, broadcast_in_dim, concatenate, constant, convert, full, gt,
                                logical_not, lt, maximum, minimum, mul, reduce_max, reduce_min, reshape, select,
                                static_slice, transpose)
from jitgrad.primitives.calls import lookup_rule, register_rule
from jitgrad.primitives.control_flow import call, emit_cond, fori_p, make_function, region_function
from jitgrad.primitives.gather import gather, scatter

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


def _batch_cumulative(name):
    def rule(operands, dims, *, axis, reverse):
        x = _front_one(operands, dims)
        return emit(OpDef.registry[name], x, axis=axis + 1, reverse=reverse), 0
    return rule


def _batch_trailing(name):
    """Ops that work on the trailing axes alone (view_as_real adds one, view_as_complex
    drops one): mapped axis first."""
    def rule(operands, dims):
        return emit(OpDef.registry[name], _front_one(operands, dims)), 0
    return rule


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


# --------------------------------------------------------------------------- LAPACK, windows, convolution

def _batch_leading(name):
    """The LAPACK ops work on every matrix of their leading axes: each operand's mapped axis
    goes first (an unmapped right-hand side is broadcast: a and b share their batch axes)."""
    def rule(operands, dims, **attrs):
        xs, _ = _front_all(operands, dims)
        return emit(OpDef.registry[name], *xs, **attrs), 0
    return rule


def _batch_window(name):
    """Window ops window every axis: the mapped axis goes first with a window of one."""
    def rule(operands, dims, *, window_dimensions, window_strides, padding):
        xs, _ = _front_all(operands, dims)
        return emit(OpDef.registry[name], *xs, window_dimensions=(1, *window_dimensions),
                    window_strides=(1, *window_strides), padding=((0, 0), *padding)), 0
    return rule


def _merge_into(x: Value, axis: int) -> Value:
    """x (slices first) with the slice axis merged into its axis `axis` (of one slice), slices
    outermost: element j of slice b lands at b * n + j."""
    moved = move_axis(x, 0, axis)
    shape = moved.shape
    return reshape(moved, (*shape[:axis], shape[axis] * shape[axis + 1], *shape[axis + 2:]))


def _split_out(x: Value, axis: int, size: int) -> Value:
    """The inverse of `_merge_into`: axis `axis` split into (slices, rest); returns x with the
    slice axis at `axis`."""
    shape = x.shape
    return reshape(x, (*shape[:axis], size, shape[axis] // size, *shape[axis + 1:]))


def _batch_conv(operands, dims, *, dimension_numbers, feature_group_count, **attrs):
    """JAX's rule: a mapped input alone is folded into the batch axis; a mapped kernel turns
    the slices into feature groups (input features (slice, feature) merged, kernel output
    features (slice, feature) merged, slices x groups groups), so one convolution computes
    every slice's and the output features split back into (slice, feature)."""
    (lhs, rhs), (ld, rd) = operands, dims
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    conv = OpDef.registry["conv_general_dilated"]
    if rd is None:
        size = lhs.shape[ld]
        out = emit(conv, _merge_into(move_axis(lhs, ld, 0), lhs_spec[0]), rhs, dimension_numbers=dimension_numbers,
                   feature_group_count=feature_group_count, **attrs)
        return _split_out(out, out_spec[0], size), out_spec[0]
    (lhs, rhs), size = _front_all(operands, dims)
    out = emit(conv, _merge_into(lhs, lhs_spec[1]), _merge_into(rhs, rhs_spec[0]),
               dimension_numbers=dimension_numbers, feature_group_count=feature_group_count * size, **attrs)
    return _split_out(out, out_spec[1], size), out_spec[1]


# --------------------------------------------------------------------------- ops looped over slices

def loop_over_slices(opdef: OpDef, operands, dims, **attrs):
    """The op once per slice, in a `fori` loop that gathers slice i of every mapped operand
    and scatters the op's results into row i of each batched result: for ops whose slices
    cannot share one call (a callback into Python, a binary search in a per-slice table).
    Exactly what a loop over the slices computes, at one loop's cost in code size."""
    size = _size(operands, dims)
    mapped = [d is not None for d in dims]
    xs = [move_axis(v, d, 0) if m else v for v, d, m in zip(operands, dims, mapped, strict=True)]
    slice_types = [TensorType(v.shape[1:], v.type.dtype) if m else v.type for v, m in zip(xs, mapped, strict=True)]
    result_types = opdef.infer(*slice_types, **attrs)
    inits = [full(0, TensorType((size, *t.shape), t.dtype)) for t in result_types]
    n = len(xs)

    def body(args):
        i, ins, rows = args[0], args[1:1 + n], args[1 + n:]
        sliced = [gather(v, i, 0) if m else v for v, m in zip(ins, mapped, strict=True)]
        outs = emit(opdef, *sliced, **attrs)
        outs = outs if isinstance(outs, list) else [outs]
        return [scatter(row, i, out, 0) for row, out in zip(rows, outs, strict=True)]
    fn = make_function(f"{opdef.name}_per_slice", [I64, *(v.type for v in xs), *(v.type for v in inits)], body)
    outs = _emit_fori(constant(np.int64(size)), fn, xs, inits, num_passive=0)
    return outs, [0] * len(outs)


def _batch_searchsorted(operands, dims, *, side):
    """One sorted table for every slice: searchsorted is elementwise in v, so v keeps its
    mapped axis. A table per slice: one binary search per slice, in a loop."""
    (a, v), (ad, vd) = operands, dims
    if ad is None:
        return emit(OpDef.registry["searchsorted"], a, v, side=side), vd
    outs, out_dims = loop_over_slices(OpDef.registry["searchsorted"], operands, dims, side=side)
    return outs[0], 0


def _batch_fft(operands, dims):
    """fft transforms the last-but-one axis of every leading index: a mapped operand goes
    first. Roots that differ between slices (never traced so: they are constants) are
    transformed slice by slice."""
    (x, roots), (xd, rd) = operands, dims
    if rd is None:
        return emit(OpDef.registry["fft"], move_axis(x, xd, 0), roots), 0
    outs, _ = loop_over_slices(OpDef.registry["fft"], operands, dims)
    return outs[0], 0


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
                               "batch such a region yet (pass the value as an operand)",
                               op.loc if op.loc.line else None, op=op.name, slot="batch")
    if op.name in REGION_RULES:
        outs, out_dims = REGION_RULES[op.name](op, inputs, dims, rewriter.size)
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
    install_rules()
    new_fn, builder = new_function(name or f"{fn.name}_batched", types)
    rewriter = _BatchRewriter(size)
    rewriter.dims.update({v: d for v, d in zip(new_fn.args, in_dims)})
    rewriter.dims.update({v: d for v, d in zip(fn.args, in_dims)})
    with builder:
        outs = rewriter.run_block(fn.body, new_fn.args)
        with builder.at(fn.body.terminator.loc):
            builder.ret(outs)
    return new_fn, [rewriter.dims.get(v) for v in fn.outputs]


# --------------------------------------------------------------------------- region ops

I64 = TensorType((), DType.i64)


def _lift(v: Value, d: Dim, mapped: bool, size: int) -> Value:
    """v as a region operand: its mapped axis first when `mapped` (broadcast if v is the
    same for every slice), as it is otherwise."""
    return to_front(v, d, size) if mapped else v


def _out_mapped(fn: Function, in_mapped: Sequence[bool], size: int) -> list[bool]:
    """Which outputs of `fn` differ between slices when the arguments `in_mapped` do."""
    return [d is not None for d in batch_function(fn, [0 if m else None for m in in_mapped], size)[1]]


def _batched_region(fn: Function, in_mapped: Sequence[bool], size: int, out_mapped: Sequence[bool]) -> Function:
    """`fn` batched, its mapped arguments and outputs mapped along their first axis: output k
    is mapped when `out_mapped[k]` (broadcast if the body computes it the same for every
    slice), so a loop's carry keeps one type from iteration to iteration."""
    body, dims = batch_function(fn, [0 if m else None for m in in_mapped], size, name=f"{fn.name}_batched")
    for d, m in zip(dims, out_mapped, strict=True):
        if d is not None and not m:
            raise MissingRuleError(f"vmap: an output of region {fn.name} differs between slices where the op "
                                   "needs it the same", op=fn.name, slot="batch")

    def build(args):
        outs = call(body, args)
        return [to_front(v, d, size) if m else v for v, d, m in zip(outs, dims, out_mapped, strict=True)]
    return make_function(body.name, body.input_types, build)


def _carry_fixpoint(body: Function, fixed_mapped: list[bool], carry_mapped: list[bool], size: int,
                    after: Sequence[bool] = ()) -> list[bool]:
    """The carries that differ between slices: those mapped on entry, and every carry the
    body makes mapped from them, until nothing changes (JAX's fixpoint). The body takes
    (*fixed, *carry, *after) and yields the carry first."""
    while True:
        out = _out_mapped(body, [*fixed_mapped, *carry_mapped, *after], size)[:len(carry_mapped)]
        new = [a or b for a, b in zip(carry_mapped, out, strict=True)]
        if new == carry_mapped:
            return carry_mapped
        carry_mapped = new


def _any(active: Value) -> Value:
    """Whether any slice is active (active: a bool vector)."""
    return gt(reduce_max(convert(active, DType.i64), (0,)), full(0, I64))


def _mask(active: Value, like: Value) -> Value:
    return broadcast_in_dim(active, like.shape, (0,))


def _from_active_slice(values: Sequence[Value], mapped: Sequence[bool], active: Value, size: int) -> list[Value]:
    """Each mapped value with the rows of inactive slices replaced by those of the first
    active slice (at least one must be active). A branch or loop body run on every slice
    then only sees inputs some slice really gives it: the rows whose results are thrown
    away cannot divide by zero, loop without end or give infinite derivatives that turn
    zero cotangents into NaN (JAX's select-based rules have that flaw)."""
    positions = constant(np.arange(size, dtype=np.int64))
    first = reduce_min(select(active, positions, full(size, positions.type)), (0,))
    rows = broadcast_in_dim(first, (size,), ())
    out = []
    for v, m in zip(values, mapped, strict=True):
        out.append(select(_mask(active, v), v, gather(v, rows, 0)) if m else v)
    return out


def _emit_fori(trips: Value, body: Function, consts: Sequence[Value], carry: Sequence[Value],
               num_passive: int, attrs: Optional[dict] = None) -> list[Value]:
    """A fori op; `attrs` are the batched op's (its reversal policy), counts replaced."""
    attrs = {**(attrs or {}), "num_consts": len(consts)}
    if num_passive:
        attrs["num_passive"] = num_passive
    op = current_builder().create(fori_p, [trips, *consts, *carry], attrs, regions=[function_region(body)],
                                  result_types=[v.type for v in carry][num_passive:])
    return list(op.results)


def _batch_cond(op: Operation, operands, dims, size: int):
    """Predicate the same for every slice: a cond of the batched branches. Predicate mapped
    (JAX's rule): each branch runs for all slices, under a cond that skips it when no
    slice takes it, on inputs taken from a slice that does (`_from_active_slice`), and a
    select picks each slice's result."""
    pred, args = operands[0], operands[1:]
    arg_mapped = [d is not None for d in dims[1:]]
    args = [_lift(v, d, m, size) for v, d, m in zip(args, dims[1:], arg_mapped, strict=True)]
    branches = [region_function(op, k) for k in range(2)]
    if dims[0] is None:
        out_mapped = [a or b for a, b in zip(*(_out_mapped(f, arg_mapped, size) for f in branches), strict=True)]
        then_fn, else_fn = (_batched_region(f, arg_mapped, size, out_mapped) for f in branches)
        return emit_cond(pred, then_fn, else_fn, args), [0 if m else None for m in out_mapped]
    pred = move_axis(pred, dims[0], 0)
    taken = [pred, logical_not(pred)]
    results = []
    for fn, active in zip(branches, taken, strict=True):
        body = _batched_region(fn, arg_mapped, size, [True] * len(fn.outputs))
        run = make_function(f"{fn.name}_taken", [active.type, *(v.type for v in args)],
                            lambda a, body=body: call(body, _from_active_slice(a[1:], arg_mapped, a[0], size)))
        skip = make_function(f"{fn.name}_skipped", [active.type, *(v.type for v in args)],
                             lambda a, body=body: [full(0, t) for t in body.output_types])
        results.append(emit_cond(_any(active), run, skip, [active, *args]))
    outs = [select(_mask(pred, t), t, e) for t, e in zip(*results, strict=True)]
    return outs, [0] * len(outs)


def _batch_while(op: Operation, operands, dims, size: int):
    """Test the same for every slice: a while of the batched regions. Test mapped (JAX's
    rule): the loop runs while any slice's test holds, and each step keeps the carry of
    the slices whose test fails (every carry becomes mapped); a counted while
    (`count_trips`) counts each slice's own trips."""
    n, counted = op.attrs["num_consts"], bool(op.attrs.get("count_trips"))
    const_mapped = [d is not None for d in dims[:n]]
    test, body = region_function(op, 0), region_function(op, 1)
    carry_mapped = _carry_fixpoint(body, const_mapped, [d is not None for d in dims[n:]], size)
    pred_mapped = _out_mapped(test, const_mapped + carry_mapped, size)[0]
    if pred_mapped:
        carry_mapped = [True] * len(carry_mapped)
    in_mapped = const_mapped + carry_mapped
    lifted = [_lift(v, d, m, size) for v, d, m in zip(operands, dims, in_mapped, strict=True)]
    test_b = _batched_region(test, in_mapped, size, [pred_mapped])
    body_b = _batched_region(body, in_mapped, size, carry_mapped)
    if not pred_mapped:
        new = current_builder().create(op.opdef, lifted, dict(op.attrs), regions=[function_region(test_b),
                                                                                  function_region(body_b)],
                                       result_types=[*(v.type for v in lifted[n:]), *([I64] if counted else [])])
        return list(new.results), [0 if m else None for m in carry_mapped] + ([None] if counted else [])
    consts, carry = lifted[:n], lifted[n:]
    counts = [full(0, TensorType((size,), DType.i64))] if counted else []
    types = [v.type for v in (*consts, *carry, *counts)]

    def any_active(args):
        return [_any(call(test_b, args[:n + len(carry)])[0])]

    def step(args):
        state = args[:n + len(carry)]
        active = call(test_b, state)[0]
        moved = call(body_b, _from_active_slice(state, in_mapped, active, size))
        kept = [select(_mask(active, new), new, old) for new, old in zip(moved, state[n:], strict=True)]
        return kept + [add(c, convert(active, DType.i64)) for c in args[n + len(carry):]]
    attrs = {k: v for k, v in op.attrs.items() if k != "count_trips"}
    regions = [make_function("while_any_active", types, any_active), make_function("while_step", types, step)]
    outs = list(current_builder().create(op.opdef, [*consts, *carry, *counts], attrs,
                                         regions=[function_region(f) for f in regions],
                                         result_types=[*(v.type for v in carry), *(v.type for v in counts)]).results)
    return outs, [0] * len(outs)


def _batch_fori(op: Operation, operands, dims, size: int):
    """Trip count the same for every slice: a fori of the batched body. Trip counts mapped:
    max(trips) iterations, slice b's carry kept once i reaches its own count."""
    n, passive = op.attrs["num_consts"], op.attrs.get("num_passive", 0)
    trips, rest = operands[0], operands[1:]
    const_mapped = [d is not None for d in dims[1:1 + n]]
    body = region_function(op, 0)
    carry_mapped = _carry_fixpoint(body, [False, *const_mapped], [d is not None for d in dims[1 + n:]], size)
    if dims[0] is not None:
        carry_mapped = [True] * len(carry_mapped)
    in_mapped = const_mapped + carry_mapped
    lifted = [_lift(v, d, m, size) for v, d, m in zip(rest, dims[1:], in_mapped, strict=True)]
    body_b = _batched_region(body, [False, *in_mapped], size, carry_mapped)
    out_dims = [0 if m else None for m in carry_mapped[passive:]]
    if dims[0] is None:
        return _emit_fori(trips, body_b, lifted[:n], lifted[n:], passive, op.attrs), out_dims
    counts = move_axis(trips, dims[0], 0)
    consts, carry = lifted[:n], lifted[n:]

    def step(args):
        i, own, state = args[0], args[1], args[2:]
        active = lt(broadcast_in_dim(i, (size,), ()), own)
        moved = call(body_b, [i, *_from_active_slice(state, in_mapped, active, size)])
        return [select(_mask(active, new), new, old) for new, old in zip(moved, state[n:], strict=True)]
    fn = make_function("fori_step", [I64, counts.type, *(v.type for v in lifted)], step)
    return _emit_fori(reduce_max(counts, (0,)), fn, [counts, *consts], carry, passive, op.attrs), out_dims


def _batch_reverse_fori(op: Operation, operands, dims, size: int):
    """reverse_fori (region 1 run for i = trips-1 down to 0 on the states region 0
    advances; as a reversed scan it also reads x slices and stacks y slices): trip count
    the same for every slice, the same op on the batched regions (xs and ys mapped along
    their second axis, as in `_batch_scan`). Trip counts mapped: max(trips) steps, where
    slice b's state advances and its carry changes only while i is below its own count,
    as in `_batch_fori` (its ys stay zero at the steps it does not run)."""
    n, n_state, n_xs = op.attrs["num_consts"], op.attrs["num_passive"], op.attrs.get("num_xs", 0)
    end = len(operands) - n_xs
    mapped = [d is not None for d in dims]
    const_m, xs_m = mapped[1:1 + n], mapped[end:]
    advance, back = region_function(op, 0), region_function(op, 1)
    state_m = _carry_fixpoint(advance, [False, *const_m], mapped[1 + n:1 + n + n_state], size, xs_m)
    carry_m = _carry_fixpoint(back, [False, *const_m, *state_m], mapped[1 + n + n_state:end], size, xs_m)
    n_carry = len(carry_m)
    ys_m = _out_mapped(back, [False, *const_m, *state_m, *carry_m, *xs_m], size)[n_carry:]
    if dims[0] is not None:
        state_m, carry_m, ys_m = [True] * n_state, [True] * n_carry, [True] * len(ys_m)
    in_m = const_m + state_m + carry_m
    lifted = [_lift(v, d, m, size) for v, d, m in zip(operands[1:end], dims[1:end], in_m, strict=True)]
    xs = [move_axis(v, d, 1) if d is not None else v for v, d in zip(operands[end:], dims[end:], strict=True)]
    advance_b = _batched_region(advance, [False, *const_m, *state_m, *xs_m], size, state_m)
    back_b = _batched_region(back, [False, *in_m, *xs_m], size, carry_m + ys_m)
    out_dims = [0 if m else None for m in carry_m] + [1 if m else None for m in ys_m]
    result_types = [*(v.type for v in lifted[n + n_state:]),
                    *(TensorType((op.attrs["length"], *t.shape), t.dtype) for t in back_b.output_types[n_carry:])]
    if dims[0] is None:
        new = current_builder().create(op.opdef, [operands[0], *lifted, *xs], dict(op.attrs),
                                       regions=[function_region(advance_b), function_region(back_b)],
                                       result_types=result_types)
        return list(new.results), out_dims
    counts = move_axis(operands[0], dims[0], 0)

    def guarded_advance(args):
        i, own, rest = args[0], args[1], args[2:]
        active = lt(broadcast_in_dim(i, (size,), ()), own)
        moved = call(advance_b, [i, *_from_active_slice(rest, const_m + state_m + xs_m, active, size)])
        return [select(_mask(active, new), new, old) for new, old in zip(moved, rest[n:n + n_state], strict=True)]

    def guarded_back(args):
        i, own, rest = args[0], args[1], args[2:]
        active = lt(broadcast_in_dim(i, (size,), ()), own)
        moved = call(back_b, [i, *_from_active_slice(rest, in_m + xs_m, active, size)])
        old = rest[n + n_state:n + n_state + n_carry]
        kept = [select(_mask(active, new), new, prev) for new, prev in zip(moved[:n_carry], old, strict=True)]
        return kept + [select(_mask(active, y), y, full(0, y.type)) for y in moved[n_carry:]]
    regions = [make_function(f"{fn.name}_guarded", [I64, counts.type, *fn.input_types[1:]], build)
               for fn, build in ((advance_b, guarded_advance), (back_b, guarded_back))]
    new = current_builder().create(op.opdef, [reduce_max(counts, (0,)), counts, *lifted, *xs],
                                   {**op.attrs, "num_consts": n + 1},
                                   regions=[function_region(f) for f in regions], result_types=result_types)
    return list(new.results), out_dims


def _batch_scan(op: Operation, operands, dims, size: int):
    """The batched body over the same steps: xs get their mapped axis second (the first is
    the scanned one), so each step's slice is mapped first, and mapped ys are stacked with
    their mapped axis second."""
    nc, nx = op.attrs["num_consts"], op.attrs["num_carry"]
    const_mapped = [d is not None for d in dims[:nc]]
    xs_mapped = [d is not None for d in dims[nc + nx:]]
    body = region_function(op, 0)
    fixed = const_mapped
    carry_mapped = [d is not None for d in dims[nc:nc + nx]]
    while True:
        out = _out_mapped(body, fixed + carry_mapped + xs_mapped, size)
        new = [a or b for a, b in zip(carry_mapped, out[:nx], strict=True)]
        if new == carry_mapped:
            break
        carry_mapped = new
    ys_mapped = out[nx:]
    in_mapped = const_mapped + carry_mapped
    lifted = [_lift(v, d, m, size) for v, d, m in zip(operands[:nc + nx], dims[:nc + nx], in_mapped, strict=True)]
    xs = [move_axis(v, d, 1) if d is not None else v for v, d in zip(operands[nc + nx:], dims[nc + nx:], strict=True)]
    body_b = _batched_region(body, in_mapped + xs_mapped, size, carry_mapped + ys_mapped)
    length = op.attrs["length"]
    result_types = [*(v.type for v in lifted[nc:]),
                    *(TensorType((length, *t.shape), t.dtype) for t in body_b.output_types[nx:])]
    outs = list(current_builder().create(op.opdef, [*lifted, *xs], dict(op.attrs), regions=[function_region(body_b)],
                                         result_types=result_types).results)
    return outs, [0 if m else None for m in carry_mapped] + [1 if m else None for m in ys_mapped]


def _batch_checkpoint(op: Operation, operands, dims, size: int):
    """A call-like op (one region that takes the operands and yields the results): the same
    op around the batched body, every result mapped along its first axis."""
    body, out_dims = batch_function(body_function(op), dims, size)
    outs = [to_front(v, d, size) for v, d in zip(emit_body_outputs(op, body, operands), out_dims)]
    return outs, [0] * len(outs)


CUSTOM_RULE_BATCHERS: dict[str, Callable] = {}
"""For `custom_jvp_call` / `custom_vjp_call`: `batcher(user_rule, size) -> rule object`,
the user's Python rules applied to every slice at once. Registered by `jitgrad.vmap`
(which can trace Python functions; this pass cannot)."""


def _batch_custom_call(op: Operation, operands, dims, size: int):
    """A call with user rules: the same op around the batched body, every operand and
    result mapped along its first axis, naming a rule object that applies the user's
    rules to every slice at once (vmap of them), so derivatives of the batched call use the
    user's rules as the unbatched call does."""
    batcher = CUSTOM_RULE_BATCHERS.get(op.name)
    if batcher is None:
        raise MissingRuleError(f"{op.name}: no batcher for its user rules is registered (import jitgrad.vmap)",
                               op=op.name, slot="batch")
    args = [to_front(v, d, size) for v, d in zip(operands, dims, strict=True)]
    fn = body_function(op)
    body = _batched_region(fn, [True] * len(args), size, [True] * len(fn.outputs))
    rule = lookup_rule(op.attrs["rule"])
    key = register_rule(rule.name, batcher(rule, size))
    new = current_builder().create(op.opdef, args, {**op.attrs, "rule": key}, regions=[function_region(body)],
                                   result_types=body.output_types)
    return list(new.results), [0] * len(new.results)


REGION_RULES = {
    "cond": _batch_cond,
    "while": _batch_while,
    "fori": _batch_fori,
    "reverse_fori": _batch_reverse_fori,
    "scan": _batch_scan,
    "checkpoint": _batch_checkpoint,
    "checkpoint_jvp": _batch_checkpoint,
    "custom_jvp_call": _batch_custom_call,
    "custom_vjp_call": _batch_custom_call,
}
"""Rules for ops with regions, by op name: `rule(op, operands, batch_dims, size) ->
(outputs, out_batch_dims)`. They need the op itself (its regions), which the `batch` slot's
contract does not pass."""


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
    "cumsum": _batch_cumulative("cumsum"),
    "cumprod": _batch_cumulative("cumprod"),
    "view_as_real": _batch_trailing("view_as_real"),
    "view_as_complex": _batch_trailing("view_as_complex"),
    "sort": _batch_last_axis("sort"),
    "argsort": _batch_last_axis("argsort"),
    "dot_general": _batch_dot_general,
    "gather": _batch_gather,
    "scatter": _batch_scatter("scatter"),
    "scatter_add": _batch_scatter("scatter_add"),
    "random_uniform": _batch_random_uniform,
    **{name: _batch_leading(name) for name in ("cholesky", "triangular_solve", "solve", "slogdet", "eigh", "svd",
                                               "qr", "pinv", "eig")},
    **{name: _batch_window(name) for name in ("reduce_window_sum", "reduce_window_max", "select_and_gather_add",
                                              "select_and_scatter_add")},
    "conv_general_dilated": _batch_conv,
    "searchsorted": _batch_searchsorted,
    "fft": _batch_fft,
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
