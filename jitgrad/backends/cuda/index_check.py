"""CUDA kernel of `index_check` (jitgrad/primitives/gather.py): negative indices wrapped
once, then clamped into [0, n - 1]. Device kernels have no channel to report an index
out of range to the caller, so on GPUs such an index is clamped, as JAX does, rather than
raised (docs/gpu.md); the CPU kernel reports it (jitgrad/backends/cpu/gather.py)."""
from __future__ import annotations

from jitgrad.ir import DType


def emit_index_check(ec, op) -> None:
    (indices,), result = op.operands, op.results[0]
    count, n = indices.type.size, op.attrs["size"]
    if count == 0:
        return
    ec.begin_launch(True, count)
    ctx = ec.ctx
    source, out = ec.pointer(indices), ec.pointer(result)
    zero, last = ctx.index_const(0), ctx.index_const(max(n - 1, 0))
    with ctx.grid_loop(count, "index_check") as i:
        k = ctx.load(source, i, DType.i64)
        k = ctx.select(ctx.index_cmp("<", k, zero), ctx.index_add(k, ctx.index_const(n)), k)
        k = ctx.select(ctx.index_cmp("<", k, zero), zero, k)
        k = ctx.select(ctx.index_cmp(">", k, last), last, k)
        ctx.store(out, i, k, DType.i64)
