"""CUDA kernels of `cumsum` and `cumprod` (jitgrad/primitives/cumulative.py).

The operand is seen as (outer, n, inner), `n` the scanned axis. The outer*inner lines
along the axis are independent: one grid-stride loop gives each line to one thread,
which walks it in NumPy's sequential order (the first element copied, then element k =
result k-1 combined with operand k, stored in the result's dtype and read back, so each
partial result is rounded exactly as NumPy and the CPU backend round it). Adjacent
threads take adjacent inner positions, so their loads coalesce.
"""
from __future__ import annotations

import math


def emit_cumsum(ec, op) -> None:
    _emit_running(ec, op, lambda ctx, a, b: ctx.add(a, b))


def emit_cumprod(ec, op) -> None:
    _emit_running(ec, op, lambda ctx, a, b: ctx.mul(a, b))


def _emit_running(ec, op, combine) -> None:
    (x,), result = op.operands, op.results[0]
    if result.type.size == 0:
        return
    axis, reverse = op.attrs["axis"], op.attrs["reverse"]
    shape, dtype = x.type.shape, x.type.dtype
    n, inner = shape[axis], math.prod(shape[axis + 1:])
    lines = math.prod(shape[:axis]) * inner
    ec.begin_launch(True, lines)
    ctx = ec.ctx
    c_ = ctx.index_const
    src, dst = ec.pointer(x), ec.pointer(result)
    saved, ctx.operand_dtype = ctx.operand_dtype, dtype
    try:
        step = c_(-inner if reverse else inner)
        with ctx.grid_loop(lines, "cumulative.line") as line:
            i = ctx.index_rem(line, c_(inner))
            o = ctx.index_div(line, c_(inner))
            first = ctx.index_add(ctx.index_add(ctx.index_mul(o, c_(n * inner)), i),
                                  c_((n - 1) * inner if reverse else 0))
            ctx.store(dst, first, ctx.load(src, first, dtype), dtype)
            with ctx.loop(n - 1, "cumulative.step") as k:
                here = ctx.index_add(first, ctx.index_mul(ctx.index_add(k, c_(1)), step))
                before = ctx.index_sub(here, step)
                ctx.store(dst, here, combine(ctx, ctx.load(dst, before, dtype), ctx.load(src, here, dtype)), dtype)
    finally:
        ctx.operand_dtype = saved
