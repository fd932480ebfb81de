"""The CUDA kernel of `fft` (jitgrad/primitives/fft.py): a mixed-radix Stockham transform
per row, one row per grid-stride loop iteration.

The operand is a batch of rows of n complex numbers stored as (real, imaginary) pairs.
For n = R_1 R_2 ... R_s (radices 5, 3, 2: `radix_plan`), stage t with radix R reads the
previous stage's row and writes the next, ping-ponging between the row's two scratch
rows in the workspace (the first stage reads the operand, the last writes the result;
the scratch rows of all rows are interleaved, `Row`):

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
from dataclasses import dataclass
from typing import Any

from jitgrad.primitives.fft import radix_plan
from jitgrad.backends.cpu.fft import _butterfly     # device-neutral: written on the scalar context


@dataclass(frozen=True)
class Row:
    """Complex values k = 0, 1, ... in `buffer`: the real part of value k at element
    base + 2 k stride, its imaginary part `stride` elements after it. Stride 1 is NumPy's
    (re, im) pairs; scratch rows use stride = the launch's row count, interleaving the
    rows element by element, so the threads of a warp (neighbouring rows) touch
    neighbouring addresses (coalesced) rather than addresses a row apart."""
    buffer: Any
    base: Any
    stride: int = 1

    def load(self, ctx, dtype, k):
        at = self._at(ctx, k)
        return ctx.load(self.buffer, at, dtype), ctx.load(self.buffer, ctx.index_add(at, ctx.index_const(self.stride)),
                                                          dtype)

    def store(self, ctx, dtype, k, re, im) -> None:
        at = self._at(ctx, k)
        ctx.store(self.buffer, at, re, dtype)
        ctx.store(self.buffer, ctx.index_add(at, ctx.index_const(self.stride)), im, dtype)

    def _at(self, ctx, k):
        return ctx.index_add(self.base, ctx.index_mul(k, ctx.index_const(2 * self.stride)))


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
        rows = (Row(scratch, row, batch), Row(scratch, ctx.index_add(row, c_(2 * n * batch)), batch))
        if not plan:                      # n == 1: the transform is the identity
            for part in range(2):
                at = ctx.index_add(base, c_(part))
                ctx.store(dst, at, ctx.load(src, at, dtype), dtype)
        size = 1
        for t, radix in enumerate(plan):
            reads = Row(src, base) if t == 0 else rows[(t - 1) % 2]
            writes = Row(dst, base) if t == len(plan) - 1 else rows[t % 2]
            _stage(ctx, dtype, Row(table, c_(0)), n, radix, size, reads, writes)
            size *= radix


def _stage(ctx, dtype, table: Row, n: int, radix: int, size: int, reads: Row, writes: Row,
           butterfly=_butterfly) -> None:
    """One Stockham stage of radix 2, 3 or 5 from row `reads` to row `writes`, twiddles
    from `table` (w^m for m < n); `butterfly(ctx, values)` is the R-point DFT of R
    (re, im) register pairs (the CPU kernel's by default, for bit-for-bit agreement
    with it)."""
    c_ = ctx.index_const
    span = n // radix
    step = n // (size * radix)
    with ctx.loop(span, f"fft.radix{radix}") as j:
        k = ctx.index_rem(j, c_(size)) if size > 1 else c_(0)
        inputs = []
        for r in range(radix):
            re, im = reads.load(ctx, dtype, ctx.index_add(j, c_(r * span)))
            if r and size > 1:
                wr, wi = table.load(ctx, dtype, ctx.index_mul(k, c_(r * step)))
                re, im = ctx.sub(ctx.mul(re, wr), ctx.mul(im, wi)), ctx.add(ctx.mul(re, wi), ctx.mul(im, wr))
            inputs.append((re, im))
        first = ctx.index_add(ctx.index_mul(ctx.index_div(j, c_(size)), c_(size * radix)), k)
        for q, (re, im) in enumerate(butterfly(ctx, inputs)):
            writes.store(ctx, dtype, ctx.index_add(first, c_(q * size)), re, im)
