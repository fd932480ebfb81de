"""CUDA kernels of eigh, svd and pinv (`jitgrad/primitives/lapack.py`): Jacobi methods,
one matrix of the batch per grid-stride iteration, run by one thread on the matrix's
working copy in the workspace.

Jacobi methods suit a thread that owns its matrix: they are short to write, need no
tridiagonal or bidiagonal reduction, and are accurate (backward stable, like LAPACK's
syevd and gesdd).

- eigh: cyclic Jacobi on the symmetric matrix built from the lower (or upper) triangle
  only, as LAPACK reads it. Each rotation annihilates one off-diagonal pair (Rutishauser's
  formulas); sweeps end when the off-diagonal Frobenius norm is at most eps times the
  matrix's. Eigenvalues ascending; the eigenvectors are the accumulated rotations.
- svd: one-sided Jacobi (Hestenes) on the columns of A, or of A^T for a wide matrix:
  pairs of columns are rotated until every pair is orthogonal to `_svd_tolerance`
  relative to their norms (a sweep with no rotation). The singular values are the column
  norms (descending), U the normalized columns, V the accumulated rotations. Where U
  needs a column the rotations do not give (a zero singular value, or the extra columns
  of full_matrices=True), it is completed deterministically: the first unit vector e_i
  whose part orthogonal to the columns before it (Gram-Schmidt, applied twice) has a
  squared norm above 1/(2 rows), normalized.
- pinv: NumPy's pinv from that SVD: V diag(1/s) U^T over the singular values above
  rcond * max(s) (the comparison in float64, as the CPU kernel makes it).

The matrix is divided by its largest magnitude first (and the values multiplied back),
so sums of squares neither overflow nor underflow in float32. A matrix holding NaN or
inf (in the triangle eigh reads) gives NaN in all its results without running the
iteration; one that has not converged after MAX_SWEEPS sweeps gives NaN too (the CPU
contract: a matrix that cannot be factored gives NaN in that matrix's results).

What is free, as with LAPACK: the sign of each eigenvector and singular vector pair,
the basis of an eigenspace of a repeated eigenvalue (of the singular subspace of a
repeated singular value), the completion columns (any orthonormal basis of the
complement), and the rounding (results agree with LAPACK's to a small multiple of eps
times the matrix's norm, divided by the gap to the nearest other value for vectors).
Real float32 and float64 matrices only: complex ones are refused (`COMPLEX` is empty).
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from jitgrad.ir import DType
from jitgrad.primitives.lapack import svd_shapes
from ..cpu.llvm_support import F64, I64, alloca_in_entry, for_range, index, memory_type

MAX_SWEEPS = 60
"""Sweeps after which a matrix counts as not converged (NaN results). Cyclic Jacobi
converges quadratically; sizes jitgrad differentiates take well under 20."""

COMPLEX = ()
"""The primitives of this family with complex kernels (none yet)."""

BIT = ir.IntType(1)


class _Thread:
    """Scalar code for the thread that owns one matrix: float constants, slots (private
    scalars in registers), loads and stores at i64 offsets of views into buffers,
    loops and sums."""

    def __init__(self, ec, dtype: DType):
        self.ec, self.ctx, self.b = ec, ec.ctx, ec.builder
        self.dtype = dtype
        self.t = memory_type(dtype)
        info = np.finfo(dtype.numpy)
        self.eps = float(info.eps)

    # ----- values
    def const(self, value: float) -> ir.Constant:
        return ir.Constant(self.t, float(value))

    @staticmethod
    def i(x):
        return index(x) if isinstance(x, int) else x

    def at(self, row, stride: int, col):
        """row * stride + col as an i64 offset."""
        b = self.b
        return b.add(b.mul(self.i(row), index(stride), flags=["nsw"]), self.i(col), flags=["nsw"])

    def view(self, buffer, offset):
        """The buffer from element `offset` on."""
        return self.b.gep(buffer, [self.i(offset)], inbounds=True, source_etype=self.t)

    def get(self, view, offset):
        return self.ctx.load(view, self.i(offset), self.dtype)

    def put(self, view, offset, value) -> None:
        self.ctx.store(view, self.i(offset), value, self.dtype)

    def slot(self, name: str, typ=None):
        return alloca_in_entry(self.b, typ or self.t, name)

    def read(self, slot):
        return self.b.load(slot, typ=slot.allocated_type)

    def write(self, slot, value) -> None:
        self.b.store(value if isinstance(value, ir.Value) else ir.Constant(slot.allocated_type, value), slot)

    # ----- arithmetic
    def sqrt(self, x):
        return self.ctx.math("sqrt", x)

    def fabs(self, x):
        return self.ctx.math("fabs", x)

    def cmp(self, op: str, a, c):
        return self.b.fcmp_ordered(op, a, c)

    def finite(self, x):
        """x - x == 0: false for inf and NaN."""
        return self.cmp("==", self.b.fsub(x, x), self.const(0))

    # ----- control flow
    def loop(self, count, name: str):
        return for_range(self.b, count, name)

    def when(self, condition):
        return self.b.if_then(condition)

    def total(self, count, name: str, term):
        """The sum over k < count of term(k), in order."""
        acc = self.slot(f"{name}.sum")
        self.write(acc, self.const(0))
        with self.loop(count, name) as k:
            self.write(acc, self.b.fadd(self.read(acc), term(k)))
        return self.read(acc)

    def fill(self, view, count: int, value: float) -> None:
        with self.loop(count, "jacobi.fill") as k:
            self.put(view, k, self.const(value))

    def rotate(self, view, count: int, first, second, c, s) -> None:
        """x_k, y_k <- c x_k - s y_k, s x_k + c y_k for the elements first(k), second(k)."""
        b = self.b
        with self.loop(count, "jacobi.rotate") as k:
            x, y = self.get(view, first(k)), self.get(view, second(k))
            self.put(view, first(k), b.fsub(b.fmul(c, x), b.fmul(s, y)))
            self.put(view, second(k), b.fadd(b.fmul(s, x), b.fmul(c, y)))


def _largest_magnitude(th: _Thread, count: int, element):
    """(max |element(k)| over k < count, all finite): the scale and the NaN/inf check."""
    b = th.b
    largest, finite = th.slot("jacobi.largest"), th.slot("jacobi.finite", BIT)
    th.write(largest, th.const(0))
    th.write(finite, ir.Constant(BIT, 1))
    with th.loop(count, "jacobi.scan") as k:
        x = element(k)
        th.write(finite, b.and_(th.read(finite), th.finite(x)))
        magnitude, current = th.fabs(x), th.read(largest)
        th.write(largest, b.select(th.cmp(">", magnitude, current), magnitude, current))
    scale = th.read(largest)
    return b.select(th.cmp("==", scale, th.const(0)), th.const(1), scale), th.read(finite)


# --------------------------------------------------------------------------- eigh

def emit_eigh(ec, op) -> None:
    (a,), result = op.operands, op.results[0]
    n = a.type.shape[-1]
    batch = math.prod(a.type.shape[:-2])
    vectors, lower = op.attrs["vectors"], op.attrs["lower"]
    per_result = (n + 1) * n if vectors else n
    ec.begin_launch(True, batch)
    th = _Thread(ec, a.type.dtype)
    src, out = ec.pointer(a), ec.pointer(result)
    work = ec.scratch(batch * n * n * a.type.dtype.itemsize)
    with th.ctx.grid_loop(batch, "eigh.matrix") as m:
        matrix = th.view(src, th.at(m, n * n, 0))
        w = th.view(out, th.at(m, per_result, 0))
        _SymmetricJacobi(th, n, th.view(work, th.at(m, n * n, 0)), w,
                         th.view(w, n) if vectors else None).run(matrix, lower, per_result)


class _SymmetricJacobi:
    """Cyclic Jacobi on one symmetric n x n matrix `a` (row-major working copy): the
    eigenvalues into `w` (ascending), the eigenvectors into the columns of `v` (n x n,
    row-major; None for values only)."""

    def __init__(self, th: _Thread, n: int, a, w, v):
        self.th, self.b, self.n, self.a, self.w, self.v = th, th.b, n, a, w, v

    def run(self, source, lower: bool, per_result: int) -> None:
        th, b, n, a = self.th, self.b, self.n, self.a

        def symmetric(k):             # element k of the full matrix, read from one triangle
            row, col = b.udiv(k, index(n)), b.urem(k, index(n))
            below = b.icmp_unsigned(">=", row, col)
            high, low = b.select(below, row, col), b.select(below, col, row)
            x = th.get(source, th.at(high, n, low) if lower else th.at(low, n, high))
            th.put(a, k, x)
            return x
        scale, finite = _largest_magnitude(th, n * n, symmetric)
        ok = th.slot("eigh.ok", BIT)
        th.write(ok, ir.Constant(BIT, 0))
        with th.when(finite):
            with th.loop(n * n, "eigh.scale") as k:
                th.put(a, k, b.fdiv(th.get(a, k), scale))
            if self.v is not None:
                with th.loop(n * n, "eigh.identity") as k:
                    diagonal = b.icmp_unsigned("==", b.urem(k, index(n + 1)), index(0))
                    th.put(self.v, k, b.select(diagonal, th.const(1), th.const(0)))
            self._sweeps(ok)
            with th.when(th.read(ok)):
                with th.loop(n, "eigh.values") as j:
                    th.put(self.w, j, b.fmul(th.get(a, th.at(j, n + 1, 0)), scale))
                self._sort()
        with th.when(b.not_(th.read(ok))):
            th.fill(self.w, per_result, math.nan)

    def _sweeps(self, ok) -> None:
        """Sweeps until off(A)^2 <= (eps ||A||_F)^2, at most MAX_SWEEPS."""
        th, b, n, a = self.th, self.b, self.n, self.a
        square = lambda k: b.fmul(th.get(a, k), th.get(a, k))
        frobenius = th.total(n * n, "eigh.norm", square)
        tolerance = b.fmul(frobenius, th.const(th.eps * th.eps))
        with th.loop(MAX_SWEEPS + 1, "eigh.sweep"):
            with th.when(b.not_(th.read(ok))):
                def off_diagonal(k):
                    diagonal = b.icmp_unsigned("==", b.urem(k, index(n + 1)), index(0))
                    return b.select(diagonal, th.const(0), square(k))
                converged = th.cmp("<=", th.total(n * n, "eigh.off", off_diagonal), tolerance)
                th.write(ok, converged)
                with th.when(b.not_(converged)):
                    with th.loop(n, "eigh.p") as p:
                        with th.loop(b.sub(index(n - 1), p), "eigh.q") as q_from:
                            self._rotation(p, b.add(b.add(p, index(1)), q_from))

    def _rotation(self, p, q) -> None:
        """The rotation J with (J^T A J)_pq = 0 (Rutishauser: t = tan of its angle, the
        smaller root), applied to A's columns and rows p, q and to V's columns."""
        th, b, n, a = self.th, self.b, self.n, self.a
        apq = th.get(a, th.at(p, n, q))
        with th.when(th.cmp("!=", apq, th.const(0))):
            app, aqq = th.get(a, th.at(p, n, p)), th.get(a, th.at(q, n, q))
            theta = b.fdiv(b.fsub(aqq, app), b.fmul(th.const(2), apq))
            t = b.fdiv(th.const(1), b.fadd(th.fabs(theta), th.sqrt(b.fadd(b.fmul(theta, theta), th.const(1)))))
            t = b.select(th.cmp("<", theta, th.const(0)), b.fneg(t), t)
            c = b.fdiv(th.const(1), th.sqrt(b.fadd(b.fmul(t, t), th.const(1))))
            s = b.fmul(t, c)
            th.rotate(a, n, lambda r: th.at(r, n, p), lambda r: th.at(r, n, q), c, s)      # A J
            th.rotate(a, n, lambda r: th.at(p, n, r), lambda r: th.at(q, n, r), c, s)      # J^T (A J)
            th.put(a, th.at(p, n, p), b.fsub(app, b.fmul(t, apq)))
            th.put(a, th.at(q, n, q), b.fadd(aqq, b.fmul(t, apq)))
            th.put(a, th.at(p, n, q), th.const(0))
            th.put(a, th.at(q, n, p), th.const(0))
            if self.v is not None:
                th.rotate(self.v, n, lambda r: th.at(r, n, p), lambda r: th.at(r, n, q), c, s)

    def _sort(self) -> None:
        """Selection sort of the eigenvalues, ascending, the vectors' columns with them."""
        th, b, n = self.th, self.b, self.n
        best = th.slot("eigh.best", I64)
        with th.loop(n, "eigh.sort") as i:
            th.write(best, i)
            with th.loop(b.sub(index(n - 1), i), "eigh.min") as rest:
                j = b.add(b.add(i, index(1)), rest)
                smaller = th.cmp("<", th.get(self.w, j), th.get(self.w, th.read(best)))
                th.write(best, b.select(smaller, j, th.read(best)))
            other = th.read(best)
            x, y = th.get(self.w, i), th.get(self.w, other)
            th.put(self.w, i, y)
            th.put(self.w, other, x)
            if self.v is not None:
                with th.loop(n, "eigh.swap") as r:
                    x, y = th.get(self.v, th.at(r, n, i)), th.get(self.v, th.at(r, n, other))
                    th.put(self.v, th.at(r, n, i), y)
                    th.put(self.v, th.at(r, n, other), x)


# --------------------------------------------------------------------------- svd, pinv

def _svd_tolerance(th: _Thread, rows: int) -> float:
    """Columns p, q count as orthogonal when |w_p . w_q| <= tol |w_p| |w_q|: rows * eps,
    above the rounding of the dot product itself, which would otherwise keep rotating."""
    return rows * th.eps


class _OneSidedJacobi:
    """Hestenes' one-sided Jacobi SVD of the m x n matrix at `source`, per matrix.

    It works on B = A (m >= n) or B = A^T (m < n), r x c with r >= c: W, B's working copy
    stored by columns (column j at j * r, `columns` of them: c, or r when U (or V for a
    wide A) is completed to a square matrix), and Q, the accumulated c x c rotations, also
    by columns (None for values only). B = W Q^T throughout; at the end the columns of W
    are s_j u_j."""

    def __init__(self, th: _Thread, m: int, n: int, w, q, s, columns: int):
        self.th, self.b = th, th.b
        self.transposed = m < n
        self.r, self.c = max(m, n), min(m, n)
        self.m, self.n = m, n
        self.w, self.q, self.s, self.columns = w, q, s, columns

    def column(self, j, k):
        """Offset of element k of W's column j."""
        return self.th.at(j, self.r, k)

    def factor(self, source, ok) -> ir.Value:
        """Loads B, runs the sweeps, sorts: `s` holds the singular values of B divided by
        the returned scale (descending), W's columns s_j u_j, Q the right vectors of B.
        `ok` is set where all went well."""
        th, b, r, c, n = self.th, self.b, self.r, self.c, self.n

        def element(k):          # k = j * r + i: B[i, j] into W's column j
            j, i = b.udiv(k, index(r)), b.urem(k, index(r))
            x = th.get(source, th.at(j, n, i) if self.transposed else th.at(i, n, j))
            th.put(self.w, k, x)
            return x
        scale, finite = _largest_magnitude(th, r * c, element)
        th.write(ok, ir.Constant(BIT, 0))
        with th.when(finite):
            with th.loop(r * c, "svd.scale") as k:
                th.put(self.w, k, b.fdiv(th.get(self.w, k), scale))
            if self.q is not None:
                with th.loop(c * c, "svd.identity") as k:
                    diagonal = b.icmp_unsigned("==", b.urem(k, index(c + 1)), index(0))
                    th.put(self.q, k, b.select(diagonal, th.const(1), th.const(0)))
            self._sweeps(ok)
            with th.loop(c, "svd.norms") as j:
                square = lambda k: b.fmul(th.get(self.w, self.column(j, k)), th.get(self.w, self.column(j, k)))
                th.put(self.s, j, th.sqrt(th.total(r, "svd.norm", square)))
            self._sort()
        return scale

    def _sweeps(self, ok) -> None:
        th, b, c = self.th, self.b, self.c
        rotated = th.slot("svd.rotated", BIT)
        with th.loop(MAX_SWEEPS, "svd.sweep"):
            with th.when(b.not_(th.read(ok))):
                th.write(rotated, ir.Constant(BIT, 0))
                with th.loop(c, "svd.p") as p:
                    with th.loop(b.sub(index(c - 1), p), "svd.q") as q_from:
                        self._rotation(p, b.add(b.add(p, index(1)), q_from), rotated)
                th.write(ok, b.not_(th.read(rotated)))

    def _rotation(self, p, q, rotated) -> None:
        """The rotation making columns p, q orthogonal: with alpha, beta their squared
        norms and gamma their dot product, t = tan of its angle = sign(zeta) / (|zeta| +
        sqrt(1 + zeta^2)), zeta = (beta - alpha) / (2 gamma), written without zeta so
        that nothing overflows: 2|gamma| / (|d| + sqrt(d^2 + 4 gamma^2)), d = beta - alpha."""
        th, b, r = self.th, self.b, self.r
        wp, wq = (lambda k: th.get(self.w, self.column(p, k))), (lambda k: th.get(self.w, self.column(q, k)))
        alpha = th.total(r, "svd.alpha", lambda k: b.fmul(wp(k), wp(k)))
        beta = th.total(r, "svd.beta", lambda k: b.fmul(wq(k), wq(k)))
        gamma = th.total(r, "svd.gamma", lambda k: b.fmul(wp(k), wq(k)))
        bound = b.fmul(th.const(_svd_tolerance(th, r)), b.fmul(th.sqrt(alpha), th.sqrt(beta)))
        with th.when(th.cmp(">", th.fabs(gamma), bound)):
            d = b.fsub(beta, alpha)
            twice_gamma = b.fmul(th.const(2), gamma)
            root = th.sqrt(b.fadd(b.fmul(d, d), b.fmul(twice_gamma, twice_gamma)))
            t = b.fdiv(th.fabs(twice_gamma), b.fadd(th.fabs(d), root))
            positive = b.icmp_unsigned("==", th.cmp(">", gamma, th.const(0)), th.cmp(">=", d, th.const(0)))
            t = b.select(positive, t, b.fneg(t))
            with th.when(th.cmp("!=", t, th.const(0))):        # else the pair is as orthogonal as it gets
                th.write(rotated, ir.Constant(BIT, 1))
                c = b.fdiv(th.const(1), th.sqrt(b.fadd(b.fmul(t, t), th.const(1))))
                s = b.fmul(t, c)
                th.rotate(self.w, r, lambda k: self.column(p, k), lambda k: self.column(q, k), c, s)
                if self.q is not None:
                    cq = self.c
                    th.rotate(self.q, cq, lambda k: th.at(p, cq, k), lambda k: th.at(q, cq, k), c, s)

    def _sort(self) -> None:
        """Selection sort of the singular values, descending, W's and Q's columns with them."""
        th, b, c = self.th, self.b, self.c
        best = th.slot("svd.best", I64)
        with th.loop(c, "svd.sort") as i:
            th.write(best, i)
            with th.loop(b.sub(index(c - 1), i), "svd.max") as rest:
                j = b.add(b.add(i, index(1)), rest)
                larger = th.cmp(">", th.get(self.s, j), th.get(self.s, th.read(best)))
                th.write(best, b.select(larger, j, th.read(best)))
            other = th.read(best)
            pairs = [(self.s, 1, lambda k, col: col), (self.w, self.r, lambda k, col: self.column(col, k))]
            if self.q is not None:
                pairs.append((self.q, self.c, lambda k, col: th.at(col, self.c, k)))
            for view, length, offset in pairs:
                with th.loop(length, "svd.swap") as k:
                    x, y = th.get(view, offset(k, i)), th.get(view, offset(k, other))
                    th.put(view, offset(k, i), y)
                    th.put(view, offset(k, other), x)

    def normalize(self) -> None:
        """W's columns with a nonzero singular value divided by it: u_j."""
        th, b = self.th, self.b
        with th.loop(self.c, "svd.normalize") as j:
            sj = th.get(self.s, j)
            with th.when(th.cmp(">", sj, th.const(0))):
                with th.loop(self.r, "svd.divide") as k:
                    th.put(self.w, self.column(j, k), b.fdiv(th.get(self.w, self.column(j, k)), sj))

    def complete(self, ok) -> None:
        """Columns j < `columns` that have no vector (j >= c, or s_j == 0) get the first
        unit vector e_i whose part orthogonal to columns 0..j-1 (Gram-Schmidt twice) has
        a squared norm above 1/(2r), normalized. One exists: those parts' squared norms sum
        to r - j >= 1 over the r unit vectors."""
        th, b, r, c = self.th, self.b, self.r, self.c
        found = th.slot("svd.found", BIT)
        threshold = th.const(0.5 / r)
        with th.loop(self.columns, "svd.complete") as j:
            last = b.select(b.icmp_signed("<", j, index(c)), j, index(c - 1))
            missing = b.or_(b.icmp_signed(">=", j, index(c)), th.cmp("==", th.get(self.s, last), th.const(0)))
            with th.when(missing):
                th.write(found, ir.Constant(BIT, 0))
                with th.loop(r, "svd.candidate") as i:
                    with th.when(b.not_(th.read(found))):
                        with th.loop(r, "svd.unit") as k:
                            unit = b.icmp_unsigned("==", k, i)
                            th.put(self.w, self.column(j, k), b.select(unit, th.const(1), th.const(0)))
                        for _ in range(2):
                            self._orthogonalize(j)
                        norm2 = th.total(r, "svd.residual", lambda k: b.fmul(th.get(self.w, self.column(j, k)),
                                                                            th.get(self.w, self.column(j, k))))
                        with th.when(th.cmp(">", norm2, threshold)):
                            th.write(found, ir.Constant(BIT, 1))
                            norm = th.sqrt(norm2)
                            with th.loop(r, "svd.unitize") as k:
                                th.put(self.w, self.column(j, k), b.fdiv(th.get(self.w, self.column(j, k)), norm))
                th.write(ok, b.and_(th.read(ok), th.read(found)))

    def _orthogonalize(self, j) -> None:
        """Column j minus its projections on columns 0..j-1 (modified Gram-Schmidt)."""
        th, b, r = self.th, self.b, self.r
        with th.loop(j, "svd.against") as col:
            dot = th.total(r, "svd.projection", lambda k: b.fmul(th.get(self.w, self.column(col, k)),
                                                                 th.get(self.w, self.column(j, k))))
            with th.loop(r, "svd.subtract") as k:
                at = self.column(j, k)
                th.put(self.w, at, b.fsub(th.get(self.w, at), b.fmul(dot, th.get(self.w, self.column(col, k)))))


def _svd_scratch(ec, batch: int, m: int, n: int, dtype: DType, columns: int, with_q: bool):
    r, c = max(m, n), min(m, n)
    size = dtype.itemsize
    w = ec.scratch(batch * r * columns * size)
    q = ec.scratch(batch * c * c * size) if with_q else None
    s = ec.scratch(batch * c * size)
    return w, q, s, r, c


def emit_svd(ec, op) -> None:
    (a,), result = op.operands, op.results[0]
    m, n = a.type.shape[-2:]
    batch = math.prod(a.type.shape[:-2])
    full, vectors = op.attrs["full_matrices"], op.attrs["vectors"]
    (_, u_cols), k_, (vt_rows, _) = svd_shapes(m, n, full)
    per_result = m * u_cols + k_ + vt_rows * n if vectors else k_
    columns = (vt_rows if m < n else u_cols) if vectors else min(m, n)
    ec.begin_launch(True, batch)
    th = _Thread(ec, a.type.dtype)
    b = th.b
    src, out = ec.pointer(a), ec.pointer(result)
    w, q, s, r, c = _svd_scratch(ec, batch, m, n, a.type.dtype, columns, vectors)
    ok = th.slot("svd.ok", BIT)
    with th.ctx.grid_loop(batch, "svd.matrix") as mi:
        jacobi = _OneSidedJacobi(th, m, n, th.view(w, th.at(mi, r * columns, 0)),
                                 th.view(q, th.at(mi, c * c, 0)) if vectors else None,
                                 th.view(s, th.at(mi, c, 0)), columns)
        scale = jacobi.factor(th.view(src, th.at(mi, m * n, 0)), ok)
        res = th.view(out, th.at(mi, per_result, 0))
        values = th.view(res, m * u_cols) if vectors else res
        with th.when(th.read(ok)):
            if vectors:
                jacobi.normalize()
                jacobi.complete(ok)
            with th.loop(c, "svd.values") as j:
                th.put(values, j, b.fmul(th.get(jacobi.s, j), scale))
            if vectors:
                _write_svd_factors(th, jacobi, res, th.view(values, k_), u_cols, vt_rows)
        with th.when(b.not_(th.read(ok))):
            th.fill(res, per_result, math.nan)


def _write_svd_factors(th: _Thread, jacobi: _OneSidedJacobi, u, vt, u_cols: int, vt_rows: int) -> None:
    """U (m x u_cols) and V^T (vt_rows x n), row-major, from W's columns and Q: for A = B,
    U = W and V = Q; for A = B^T, U = Q and V = W."""
    m, n, r, c = jacobi.m, jacobi.n, jacobi.r, jacobi.c
    if jacobi.transposed:
        left, left_stride, right, right_stride = jacobi.q, c, jacobi.w, r
    else:
        left, left_stride, right, right_stride = jacobi.w, r, jacobi.q, c
    with th.loop(m, "svd.u.row") as i:               # U[i, j] = left's column j, element i
        with th.loop(u_cols, "svd.u.col") as j:
            th.put(u, th.at(i, u_cols, j), th.get(left, th.at(j, left_stride, i)))
    with th.loop(vt_rows, "svd.vt.row") as i:         # V^T[i, j] = right's column i, element j
        with th.loop(n, "svd.vt.col") as j:
            th.put(vt, th.at(i, n, j), th.get(right, th.at(i, right_stride, j)))


def emit_pinv(ec, op) -> None:
    """pinv[i, j] = sum over l with s_l > rcond * max(s) of V[i, l] (1 / s_l) U[j, l]."""
    (a,), result = op.operands, op.results[0]
    m, n = a.type.shape[-2:]
    batch = math.prod(a.type.shape[:-2])
    ec.begin_launch(True, batch)
    th = _Thread(ec, a.type.dtype)
    b = th.b
    src, out = ec.pointer(a), ec.pointer(result)
    w, q, s, r, c = _svd_scratch(ec, batch, m, n, a.type.dtype, min(m, n), True)
    ok = th.slot("pinv.ok", BIT)
    with th.ctx.grid_loop(batch, "pinv.matrix") as mi:
        jacobi = _OneSidedJacobi(th, m, n, th.view(w, th.at(mi, r * c, 0)), th.view(q, th.at(mi, c * c, 0)),
                                 th.view(s, th.at(mi, c, 0)), c)
        scale = jacobi.factor(th.view(src, th.at(mi, m * n, 0)), ok)
        res = th.view(out, th.at(mi, n * m, 0))
        with th.when(th.read(ok)):
            jacobi.normalize()
            with th.loop(c, "pinv.inverse") as j:      # s_j becomes 1 / s_j or 0
                value = b.fmul(th.get(jacobi.s, j), scale)
                largest = b.fmul(th.get(jacobi.s, 0), scale)
                cutoff = b.fmul(ir.Constant(F64, op.attrs["rcond"]), _as_f64(b, largest))
                kept = b.fcmp_ordered(">", _as_f64(b, value), cutoff)
                th.put(jacobi.s, j, b.select(kept, b.fdiv(th.const(1), value), th.const(0)))
            if jacobi.transposed:        # A = Q diag(s) W^T: V = W, U = Q
                left, left_stride, right, right_stride = jacobi.w, r, jacobi.q, c
            else:                        # A = W diag(s) Q^T: V = Q, U = W
                left, left_stride, right, right_stride = jacobi.q, c, jacobi.w, r
            with th.loop(n, "pinv.row") as i:
                with th.loop(m, "pinv.col") as j:
                    def term(l_):
                        inverse_times_u = b.fmul(th.get(jacobi.s, l_), th.get(right, th.at(l_, right_stride, j)))
                        return b.fmul(th.get(left, th.at(l_, left_stride, i)), inverse_times_u)
                    th.put(res, th.at(i, m, j), th.total(c, "pinv.sum", term))
        with th.when(b.not_(th.read(ok))):
            th.fill(res, n * m, math.nan)


def _as_f64(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return x if x.type == F64 else b.fpext(x, F64)
