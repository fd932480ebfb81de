"""The CUDA kernel of `fft` (jitgrad/primitives/fft.py): a mixed-radix Stockham transform
per row, one row per grid-stride loop iteration.

The operand is a batch of rows of n complex numbers stored as (real, imaginary) pairs.
For n = R_1 R_2 ... R_s (radices 5, 3, 2: `radix_plan`), stage t with radix R reads the
previous stage's row and writes the next, ping-ponging between the row's two scratch
rows in the workspace (the first stage reads the operand, the last writes the result):

    for j in 0 .. n/R - 1, with k = j mod N (N = R_1 ... R_{t-1}):
        v_r = x[j + r n/R] * w^(r k n/(N R))              r = 0 .. R-1, w = exp(-2 pi i / n)
        y[(j div N) N R + k + q N] = sum_r v_r exp(-2 pi i r q / R)      q = 0 .. R-1

Twiddle factors come from the `roots` operand (exact to the dtype); the butterflies' own
roots of unity are compile-time constants (exactly -1 for radix 2). This is the
arithmetic of the CPU's kernel (jitgrad/backends/cpu/fft.py) in the same order, so the
two agree bit for bit wherever neither compiler contracts a multiply and an add into a
fused multiply-add.
"""
from __future__ import annotations

import math

from jitgrad.primitives.fft import radix_plan
from jitgrad.backends.cpu.fft import _butterfly     # device-neutral: written on the scalar context


def emit_fft(ec, op) -> None:
    (x, roots), result = op.operands, op.results[0]
    if result.type.size == 0:
        return
    n, dtype = x.type.shape[-2], x.type.dtype
    batch = math.prod(x.type.shape[:-2])
    ec.begin_launch(True, batch)
    ctx = ec.ctx
    c_ = ctx.index_const
    src, dst, table = ec.pointer(x), ec.pointer(result), ec.pointer(roots)
    scratch = ec.scratch(batch * 2 * 2 * n * dtype.itemsize)
    plan = radix_plan(n)
    with ctx.grid_loop(batch, "fft.row") as row:
        base = ctx.index_mul(row, c_(2 * n))
        rows = (ctx.index_mul(row, c_(4 * n)), ctx.index_add(ctx.index_mul(row, c_(4 * n)), c_(2 * n)))
        if not plan:                      # n == 1: the transform is the identity
            for part in range(2):
                at = ctx.index_add(base, c_(part))
                ctx.store(dst, at, ctx.load(src, at, dtype), dtype)
        size = 1
        for t, radix in enumerate(plan):
            reads = (src, base) if t == 0 else (scratch, rows[(t - 1) % 2])
            writes = (dst, base) if t == len(plan) - 1 else (scratch, rows[t % 2])
            _stage(ctx, dtype, table, n, radix, size, reads, writes)
            size *= radix


def _stage(ctx, dtype, table, n: int, radix: int, size: int, reads, writes, butterfly=_butterfly) -> None:
    """One Stockham stage of radix 2, 3 or 5 from `reads` to `writes` ((buffer, base)
    pairs); `butterfly(ctx, values)` is the R-point DFT of R (re, im) register pairs
    (the CPU kernel's by default, for bit-for-bit agreement with it)."""
    (src, src_base), (dst, dst_base) = reads, writes
    c_ = ctx.index_const
    span = n // radix
    step = n // (size * radix)

    def load_pair(buffer, at):
        return ctx.load(buffer, at, dtype), ctx.load(buffer, ctx.index_add(at, c_(1)), dtype)

    with ctx.loop(span, f"fft.radix{radix}") as j:
        k = ctx.index_rem(j, c_(size)) if size > 1 else c_(0)
        inputs = []
        for r in range(radix):
            at = ctx.index_add(src_base, ctx.index_mul(ctx.index_add(j, c_(r * span)), c_(2)))
            re, im = load_pair(src, at)
            if r and size > 1:
                wr, wi = load_pair(table, ctx.index_mul(k, c_(2 * r * step)))
                re, im = ctx.sub(ctx.mul(re, wr), ctx.mul(im, wi)), ctx.add(ctx.mul(re, wi), ctx.mul(im, wr))
            inputs.append((re, im))
        first = ctx.index_add(ctx.index_mul(ctx.index_div(j, c_(size)), c_(size * radix)), k)
        for q, (re, im) in enumerate(butterfly(ctx, inputs)):
            at = ctx.index_add(dst_base, ctx.index_mul(ctx.index_add(first, c_(q * size)), c_(2)))
            ctx.store(dst, at, re, dtype)
            ctx.store(dst, ctx.index_add(at, c_(1)), im, dtype)
