"""CUDA kernels of gather, scatter and scatter_add (`jitgrad/primitives/gather.py`).

As on the CPU (jitgrad/backends/cpu/gather.py) the operand is seen as (P, n, Q) and the
gathered/updates array as (P, m, Q); every index is clamped into [0, n - 1] before it
forms an address, so no data makes the code leave a buffer.

- gather: one grid-stride loop over the P*m*Q result elements (each independent),
  element by element as its bits (NaN payloads and zero signs kept);
- scatter and scatter_add: one grid-stride loop over the P*Q *columns* (p, q). The thread
  of a column copies its n operand elements into the result, then applies the m updates
  of that column in index order: the last write to a repeated index wins (scatter), and
  the adds happen in NumPy's order (`np.add.at`; float16/bfloat16 added in float and
  rounded after each add, as the CPU does). No two threads touch the same element, so
  the result is the CPU's bit for bit, whatever the grid.
"""
from __future__ import annotations

import math

from jitgrad.ir import DType

BITS = {1: DType.u8, 2: DType.u16, 4: DType.u32, 8: DType.u64}
"""The unsigned integer dtype of each item size: elements copied as their bits."""


def _geometry(op):
    operand, indices = op.operands[0], op.operands[1]
    shape, axis = operand.type.shape, op.attrs["axis"]
    return math.prod(shape[:axis]), shape[axis], indices.type.size, math.prod(shape[axis + 1:])


def clamped(ctx, indices, j, n: int):
    """indices[j] clamped into [0, n - 1] (n >= 1)."""
    k = ctx.load(indices, j, DType.i64)
    k = ctx.select(ctx.index_cmp("<", k, ctx.index_const(0)), ctx.index_const(0), k)
    return ctx.select(ctx.index_cmp(">", k, ctx.index_const(n - 1)), ctx.index_const(n - 1), k)


def emit_gather(ec, op) -> None:
    operand, indices = op.operands
    result = op.results[0]
    pre, n, m, post = _geometry(op)
    if result.type.size == 0:
        return
    ec.begin_launch(True, result.type.size)
    ctx, bits = ec.ctx, BITS[result.type.dtype.itemsize]
    out = ec.pointer(result)
    with ctx.grid_loop(result.type.size, "gather") as i:
        if n == 0:                   # nothing to gather from: zeros, as on the CPU
            ctx.store(out, i, ctx.const_of(0, bits), bits)
        else:
            q = ctx.index_rem(i, ctx.index_const(post))
            rows = ctx.index_div(i, ctx.index_const(post))
            j = ctx.index_rem(rows, ctx.index_const(m))
            p = ctx.index_div(rows, ctx.index_const(m))
            k = clamped(ctx, ec.pointer(indices), j, n)
            source = ctx.index_add(ctx.index_mul(ctx.index_add(ctx.index_mul(p, ctx.index_const(n)), k),
                                                 ctx.index_const(post)), q)
            ctx.store(out, i, ctx.load(ec.pointer(operand), source, bits), bits)


def emit_scatter(ec, op) -> None:
    _emit_columns(ec, op, accumulate=False)


def emit_scatter_add(ec, op) -> None:
    _emit_columns(ec, op, accumulate=True)


def _emit_columns(ec, op, accumulate: bool) -> None:
    """result = operand, then the updates of each column (p, q) in index order."""
    operand, indices, updates = op.operands
    result = op.results[0]
    if result.type.size == 0:
        return
    pre, n, m, post = _geometry(op)
    ec.begin_launch(True, pre * post)
    ctx, dtype = ec.ctx, result.type.dtype
    bits = BITS[dtype.itemsize]
    out, src = ec.pointer(result), ec.pointer(operand)
    c_ = ctx.index_const
    saved, ctx.operand_dtype = ctx.operand_dtype, dtype
    try:
        with ctx.grid_loop(pre * post, "scatter.column") as column:
            q = ctx.index_rem(column, c_(post))
            p = ctx.index_div(column, c_(post))
            out_base = ctx.index_add(ctx.index_mul(p, c_(n * post)), q)
            with ctx.loop(n, "scatter.copy") as k:
                at = ctx.index_add(out_base, ctx.index_mul(k, c_(post)))
                ctx.store(out, at, ctx.load(src, at, bits), bits)
            if updates.type.size:
                _apply_updates(ec, op, out, out_base, ctx.index_add(ctx.index_mul(p, c_(m * post)), q), accumulate)
    finally:
        ctx.operand_dtype = saved


def _apply_updates(ec, op, out, out_base, updates_base, accumulate: bool) -> None:
    """The m updates of one column, in index order, into the result's column at `out_base`."""
    operand, indices, updates = op.operands
    pre, n, m, post = _geometry(op)
    ctx, dtype = ec.ctx, updates.type.dtype
    bits, c_ = BITS[dtype.itemsize], ctx.index_const
    index_buffer, updates_buffer = ec.pointer(indices), ec.pointer(updates)
    with ctx.loop(m, "scatter.update") as j:
        target = ctx.index_add(out_base, ctx.index_mul(clamped(ctx, index_buffer, j, n), c_(post)))
        update_at = ctx.index_add(updates_base, ctx.index_mul(j, c_(post)))
        if accumulate:
            total = ctx.add(ctx.load(out, target, dtype), ctx.load(updates_buffer, update_at, dtype))
            ctx.store(out, target, total, dtype)
        else:
            ctx.store(out, target, ctx.load(updates_buffer, update_at, bits), bits)
