"""CUDA kernels of `qr` and `eig` (jitgrad/primitives/lapack.py): LAPACK's Householder
algorithms written out on the scalar context, one matrix per grid-stride iteration, run
by one thread on the matrix's working copy in the workspace.

qr follows xGEQR2 + xORG2R (the unblocked code LAPACK runs for these sizes):
reflector j is xLARFG's, beta = -sign(alpha) * ||(alpha, x)|| and tau = 0 where x is
zero, so R's diagonal has LAPACK's signs and Q is LAPACK's Q, to rounding. Applying a
reflector skips trailing zeros of v and trailing zero columns (xLARF's ILADLR/ILADLC),
so inf and NaN spread where LAPACK's spread.

eig (real float64 matrices, lapack_eig.py) follows xGEEV: xGEBAL's permutation and
scaling, Householder reduction to Hessenberg form (xGEHD2), Q formed (xORGHR),
Francis double-shift QR to real Schur form (xLAHQR, which LAPACK runs below order 75:
its deflation test, shifts, exceptional shifts every 10th iteration and iteration cap;
2 x 2 blocks standardized by xLANV2), eigenvectors by back substitution on the Schur
form times Q (xTREVC), balancing undone (xGEBAK), each vector scaled to unit 2-norm
and, for a complex pair, rotated so that its largest component is real with the sign of
its real part (xGEEV). The eigenvalues come out in the Schur form's diagonal order,
LAPACK's order on ordinary inputs, conjugate pairs with the positive imaginary part first. No convergence within the cap
gives NaN for that matrix, as does a matrix holding inf or NaN (the CPU's contract).
Left free where rounding decides, so not always LAPACK's: the order of eigenvalues
that are equal or nearly so (and above order 75, where LAPACK switches to xLAQR0); the
sign of a vector where a QR sweep near convergence takes its direction from rounding-sized entries; which vectors come out
for a repeated eigenvalue. The tests compare those as multisets and up to unit factors.
Overflow protection of xTREVC's back substitution is left out: a solve that overflows
gives inf or NaN in that vector.
"""
from __future__ import annotations

import math

from jitgrad.primitives.lapack import qr_shapes
from .lapack_eig import emit_eig
from .lapack_householder import Matrix, Program, Vector, apply_left, form_q, reflector

COMPLEX = ()
"""Primitives of this family with complex kernels: none yet (refused with the reason)."""

__all__ = ["COMPLEX", "emit_eig", "emit_qr"]


# --------------------------------------------------------------------------- qr

def emit_qr(ec, op) -> None:
    """xGEQR2 on A copied into an m x c work matrix (c = max(n, columns of Q)), R from its
    upper triangle, then xORG2R forms Q's columns in place."""
    (a,), result = op.operands, op.results[0]
    dtype = a.type.dtype
    m, n = a.type.shape[-2:]
    (_, q_cols), (r_rows, _) = qr_shapes(m, n, op.attrs["complete"])
    kk, c = min(m, n), max(n, q_cols)
    batch = math.prod(a.type.shape[:-2])
    per_result = m * q_cols + r_rows * n
    ec.begin_launch(True, batch)
    p = Program(ec, dtype)
    src, out = ec.pointer(a), ec.pointer(result)
    work = ec.scratch(batch * m * c * dtype.itemsize)
    taus = ec.scratch(batch * max(kk, 1) * dtype.itemsize)
    with ec.ctx.grid_loop(batch, "qr.matrix") as matrix:
        w = Matrix(p, work, p.imul(matrix, m * c), c)
        source = Matrix(p, src, p.imul(matrix, m * n), n)
        tau = Vector(p, taus, p.imul(matrix, max(kk, 1)))
        with p.range(0, m, "qr.copy.row") as r:
            with p.range(0, c, "qr.copy.col") as col:
                w[r, col] = p.select(p.icmp("<", col, n), source[r, p.imin(col, n - 1)], p.f(0.0))
        with p.range(0, kk, "geqr2") as j:
            beta, tau[j] = reflector(p, w, j, m, j)
            w[j, j] = p.f(1.0)
            apply_left(p, w, j, tau[j], w, j, m, p.iadd(j, 1), n)
            w[j, j] = beta
        r_out = Matrix(p, out, p.iadd(p.imul(matrix, per_result), m * q_cols), n)
        with p.range(0, r_rows, "qr.r.row") as r:
            with p.range(0, n, "qr.r.col") as col:
                keep = p.b.and_(p.icmp("<", r, kk), p.icmp(">=", col, r))
                r_out[r, col] = p.select(keep, w[p.imin(r, m - 1), col], p.f(0.0))
        form_q(p, w, tau, m, q_cols, kk)
        q_out = Matrix(p, out, p.imul(matrix, per_result), q_cols)
        with p.range(0, m, "qr.q.row") as r:
            with p.range(0, q_cols, "qr.q.col") as col:
                q_out[r, col] = w[r, col]
