"""The CPU kernels of `cumsum` and `cumprod` (jitgrad/primitives/cumulative.py).

The operand is seen as (outer, n, inner): `n` is the summed axis, `inner` the elements
after it. For every outer index the first line along the axis is copied, then line k is
line k-1 of the result plus (times) line k of the operand — inner elements side by side, so the
innermost loop is contiguous and vectorizes, while every element's partial sums follow
NumPy's sequential order. Each partial result is stored in the result's dtype and read back
for the next step, which rounds it exactly as NumPy does (float16/bfloat16 included).
Only the scalar-context protocol is used, so any backend's context can run it.
"""
from __future__ import annotations

import math


def emit_cumsum(ec, op) -> None:
    _emit_running(ec, op, ec.ctx.add)


def emit_cumprod(ec, op) -> None:
    _emit_running(ec, op, ec.ctx.mul)


def _emit_running(ec, op, combine) -> None:
    """Line k of the result = combine(line k-1 of the result, line k of the operand)."""
    (x,), result = op.operands, op.results[0]
    if result.type.size == 0:
        return
    ctx = ec.ctx
    axis, reverse = op.attrs["axis"], op.attrs["reverse"]
    shape, dtype = x.type.shape, x.type.dtype
    n, inner = shape[axis], math.prod(shape[axis + 1:])
    line = n * inner
    src, dst = ec.pointer(x), ec.pointer(result)
    saved, ctx.operand_dtype = ctx.operand_dtype, dtype
    try:
        first = ctx.index_const((n - 1) * inner if reverse else 0)
        step = ctx.index_const(-inner if reverse else inner)
        with ctx.loop(math.prod(shape[:axis]), "cumsum.outer") as o:
            start = ctx.index_add(ctx.index_mul(o, ctx.index_const(line)), first)
            with ctx.loop(inner, "cumsum.first") as i:
                at = ctx.index_add(start, i)
                ctx.store(dst, at, ctx.load(src, at, dtype), dtype)
            with ctx.loop(n - 1, "cumsum.line") as k:
                here = ctx.index_add(start, ctx.index_mul(ctx.index_add(k, ctx.index_const(1)), step))
                before = ctx.index_sub(here, step)
                with ctx.loop(inner, "cumsum.inner") as i:
                    total = combine(ctx.load(dst, ctx.index_add(before, i), dtype),
                                    ctx.load(src, ctx.index_add(here, i), dtype))
                    ctx.store(dst, ctx.index_add(here, i), total, dtype)
    finally:
        ctx.operand_dtype = saved
