"""CUDA kernels of eigh, svd and pinv (`jitgrad/primitives/lapack.py`): Jacobi methods,
one matrix of the batch per grid-stride iteration, run by one thread on the matrix's
working copy in the workspace.

Jacobi methods suit a thread that owns its matrix: they are short to write, need no
tridiagonal or bidiagonal reduction, and are accurate (backward stable, like LAPACK's
syevd and gesdd).

- eigh: cyclic Jacobi on the symmetric (Hermitian) matrix built from the lower (or
  upper) triangle only, as LAPACK reads it (the diagonal's imaginary parts ignored). Each
  rotation annihilates one off-diagonal pair (Rutishauser's formulas; for a complex
  a_pq = |a_pq| e, the real rotation of |a_pq| conjugated by diag(1, e)); sweeps end when
  the off-diagonal Frobenius norm is at most eps times the matrix's. Eigenvalues
  ascending; the eigenvectors are the accumulated rotations.
- svd: one-sided Jacobi (Hestenes) on the columns of B = A, or B = A^H for a wide
  matrix: pairs of columns are rotated (the rotation that diagonalizes their 2 x 2 Gram
  matrix) until every pair is orthogonal to `_svd_tolerance` relative to their norms (a
  sweep with no rotation). The singular values are the column norms (descending), U the
  normalized columns, V the accumulated rotations. Where U needs a column the rotations
  do not give (a zero singular value, or the extra columns of full_matrices=True), it is
  completed deterministically: the first unit vector e_i whose part orthogonal to the
  columns before it (Gram-Schmidt, applied twice) has a squared norm above 1/(2 rows),
  normalized.
- pinv (real matrices; NumPy's complex pinv goes through svd): V diag(1/s) U^T over the
  singular values above rcond * max(s) (compared in float64, as the CPU kernel does).

The matrix is divided by its largest magnitude first (and the values multiplied back),
so sums of squares neither overflow nor underflow in float32. A matrix holding NaN or
inf (in the triangle eigh reads) gives NaN in all its results without running the
iteration; one that has not converged after MAX_SWEEPS sweeps gives NaN too (the CPU
contract: a matrix that cannot be factored gives NaN in that matrix's results).

What is free, as with LAPACK: the sign (phase) of each eigenvector and of each singular
vector pair, the basis of an eigenspace of a repeated eigenvalue (of the singular
subspaces of a repeated singular value), the completion columns (any orthonormal basis
of the complement), and the rounding (results agree with LAPACK's to a small multiple of
eps times the matrix's norm, divided by the gap to the nearest other value for vectors).

Complex matrices are NumPy's interleaved (re, im) pairs (`lower-complex` leaves these
operands complex); the code is written once on elements that are tuples of one part
(real) or two (complex).
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
converges quadratically: random 16 x 16 and 64 x 64 matrices take 6 to 11 sweeps (svd's
last one only confirms that no pair needs a rotation), in float32 and float64."""

COMPLEX = ("eigh", "svd")
"""The primitives of this family with complex64/complex128 kernels."""

BIT = ir.IntType(1)


class _Thread:
    """Scalar code for the thread that owns one matrix: elements (tuples of one real
    part, or of a real and an imaginary part), slots (private scalars in registers),
    loads and stores at i64 element offsets of views into buffers, loops and sums."""

    def __init__(self, ec, dtype: DType):
        self.ec, self.ctx, self.b = ec, ec.ctx, ec.builder
        self.dtype = dtype.real_dtype if dtype.is_complex else dtype
        """The dtype of one part."""
        self.parts = 2 if dtype.is_complex else 1
        self.t = memory_type(self.dtype)
        self.eps = float(np.finfo(self.dtype.numpy).eps)

    # ----- values
    def const(self, value: float) -> ir.Constant:
        return ir.Constant(self.t, float(value))

    def element(self, re, im=None) -> tuple:
        """An element with real part `re` (a register) and imaginary part `im` (0 if None)."""
        return (re,) if self.parts == 1 else (re, self.const(0) if im is None else im)

    @staticmethod
    def as_index(x):
        """An i64 register from an int or an i64 register."""
        return index(x) if isinstance(x, int) else x

    def at(self, row, stride: int, col):
        """row * stride + col as an i64 offset."""
        b = self.b
        return b.add(b.mul(self.as_index(row), index(stride), flags=["nsw"]), self.as_index(col), flags=["nsw"])

    def _floats(self, offset):
        offset = self.as_index(offset)
        return offset if self.parts == 1 else self.b.mul(offset, index(2), flags=["nsw"])

    def view(self, buffer, offset):
        """The buffer from element `offset` on."""
        return self.b.gep(buffer, [self._floats(offset)], inbounds=True, source_etype=self.t)

    def get(self, view, offset) -> tuple:
        first = self._floats(offset)
        return tuple(self.ctx.load(view, self.b.add(first, index(k)) if k else first, self.dtype)
                     for k in range(self.parts))

    def put(self, view, offset, value: tuple) -> None:
        first = self._floats(offset)
        for k, part in enumerate(value):
            self.ctx.store(view, self.b.add(first, index(k)) if k else first, part, self.dtype)

    def slot(self, name: str, typ=None):
        return alloca_in_entry(self.b, typ or self.t, name)

    def read(self, slot):
        return self.b.load(slot, typ=slot.allocated_type)

    def write(self, slot, value) -> None:
        self.b.store(value, slot)

    # ----- arithmetic on real registers
    def sqrt(self, x):
        return self.ctx.math("sqrt", x)

    def fabs(self, x):
        return self.ctx.math("fabs", x)

    def cmp(self, op: str, a, c):
        return self.b.fcmp_ordered(op, a, c)

    def finite(self, x):
        """x - x == 0: false for inf and NaN."""
        return self.cmp("==", self.b.fsub(x, x), self.const(0))

    # ----- arithmetic on elements
    def mul(self, x: tuple, y: tuple) -> tuple:
        b = self.b
        if self.parts == 1:
            return (b.fmul(x[0], y[0]),)
        return (b.fsub(b.fmul(x[0], y[0]), b.fmul(x[1], y[1])), b.fadd(b.fmul(x[0], y[1]), b.fmul(x[1], y[0])))

    def conj(self, x: tuple) -> tuple:
        return x if self.parts == 1 else (x[0], self.b.fneg(x[1]))

    def sub(self, x: tuple, y: tuple) -> tuple:
        return tuple(self.b.fsub(p, q) for p, q in zip(x, y, strict=True))

    def add(self, x: tuple, y: tuple) -> tuple:
        return tuple(self.b.fadd(p, q) for p, q in zip(x, y, strict=True))

    def scale(self, x: tuple, real) -> tuple:
        return tuple(self.b.fmul(real, p) for p in x)

    def divide(self, x: tuple, real) -> tuple:
        return tuple(self.b.fdiv(p, real) for p in x)

    def abs2(self, x: tuple):
        """|x|^2, a real register."""
        b = self.b
        total = b.fmul(x[0], x[0])
        for part in x[1:]:
            total = b.fadd(total, b.fmul(part, part))
        return total

    def zero(self) -> tuple:
        return self.element(self.const(0))

    # ----- control flow
    def loop(self, count, name: str):
        return for_range(self.b, count, name)

    def when(self, condition):
        return self.b.if_then(condition)

    def total(self, count, name: str, term):
        """The sum over k < count of term(k), a real register, in order."""
        return self.sum_of(count, name, lambda k: (term(k),), 1)[0]

    def sum_of(self, count, name: str, term, parts: int) -> tuple:
        """The sum over k < count of term(k), a tuple of `parts` registers, in order."""
        accumulators = [self.slot(f"{name}.sum") for _ in range(parts)]
        for acc in accumulators:
            self.write(acc, self.const(0))
        with self.loop(count, name) as k:
            for acc, part in zip(accumulators, term(k), strict=True):
                self.write(acc, self.b.fadd(self.read(acc), part))
        return tuple(self.read(acc) for acc in accumulators)

    def dot(self, count, name: str, x, y) -> tuple:
        """sum_k conj(x(k)) y(k): an element."""
        return self.sum_of(count, name, lambda k: self.mul(self.conj(x(k)), y(k)), self.parts)

    def fill(self, view, count: int, value: float) -> None:
        """`value` in every part of `count` elements."""
        with self.loop(count, "jacobi.fill") as k:
            self.put(view, k, tuple(self.const(value) for _ in range(self.parts)))

    def rotate(self, view, count: int, first, second, c, sigma: tuple, tau: tuple) -> None:
        """x_k, y_k <- c x_k - sigma y_k, tau x_k + c y_k for the elements first(k),
        second(k) (c real; sigma, tau elements)."""
        with self.loop(count, "jacobi.rotate") as k:
            x, y = self.get(view, first(k)), self.get(view, second(k))
            self.put(view, first(k), self.sub(self.scale(x, c), self.mul(sigma, y)))
            self.put(view, second(k), self.add(self.mul(tau, x), self.scale(y, c)))


def _largest_magnitude(th: _Thread, count: int, element):
    """(max over k < count of the parts' magnitudes of element(k), all finite): the scale
    and the NaN/inf check."""
    b = th.b
    largest, finite = th.slot("jacobi.largest"), th.slot("jacobi.finite", BIT)
    th.write(largest, th.const(0))
    th.write(finite, ir.Constant(BIT, 1))
    with th.loop(count, "jacobi.scan") as k:
        for x in element(k):
            th.write(finite, b.and_(th.read(finite), th.finite(x)))
            magnitude, current = th.fabs(x), th.read(largest)
            th.write(largest, b.select(th.cmp(">", magnitude, current), magnitude, current))
    scale = th.read(largest)
    return b.select(th.cmp("==", scale, th.const(0)), th.const(1), scale), th.read(finite)


def _unit_rotation(th: _Thread, t):
    """(c, s) = (1, t) / sqrt(1 + t^2)."""
    b = th.b
    c = b.fdiv(th.const(1), th.sqrt(b.fadd(b.fmul(t, t), th.const(1))))
    return c, b.fmul(t, c)


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
        _HermitianJacobi(th, n, th.view(work, th.at(m, n * n, 0)), w,
                         th.view(w, n) if vectors else None).run(matrix, lower, per_result)


class _HermitianJacobi:
    """Cyclic Jacobi on one symmetric (Hermitian) n x n matrix `a` (row-major working
    copy): the eigenvalues into `w` (ascending), the eigenvectors into the columns of `v`
    (n x n, row-major; None for values only)."""

    def __init__(self, th: _Thread, n: int, a, w, v):
        self.th, self.b, self.n, self.a, self.w, self.v = th, th.b, n, a, w, v

    def run(self, source, lower: bool, per_result: int) -> None:
        th, b, n, a = self.th, self.b, self.n, self.a

        def hermitian(k):            # element k of the full matrix, read from one triangle
            row, col = b.udiv(k, index(n)), b.urem(k, index(n))
            direct = b.icmp_unsigned(">=" if lower else "<=", row, col)
            x = th.get(source, b.select(direct, th.at(row, n, col), th.at(col, n, row)))
            if th.parts == 2:        # the other triangle's conjugate; a real diagonal
                im = b.select(direct, x[1], b.fneg(x[1]))
                x = (x[0], b.select(b.icmp_unsigned("==", row, col), th.const(0), im))
            th.put(a, k, x)
            return x
        scale, finite = _largest_magnitude(th, n * n, hermitian)
        ok = th.slot("eigh.ok", BIT)
        th.write(ok, ir.Constant(BIT, 0))
        with th.when(finite):
            with th.loop(n * n, "eigh.scale") as k:
                th.put(a, k, th.divide(th.get(a, k), scale))
            if self.v is not None:
                with th.loop(n * n, "eigh.identity") as k:
                    diagonal = b.icmp_unsigned("==", b.urem(k, index(n + 1)), index(0))
                    th.put(self.v, k, th.element(b.select(diagonal, th.const(1), th.const(0))))
            self._sweeps(ok)
            with th.when(th.read(ok)):
                with th.loop(n, "eigh.values") as j:
                    th.put(self.w, j, th.element(b.fmul(th.get(a, th.at(j, n + 1, 0))[0], scale)))
                self._sort()
        with th.when(b.not_(th.read(ok))):
            th.fill(self.w, per_result, math.nan)

    def _sweeps(self, ok) -> None:
        """Sweeps until off(A)^2 <= (eps ||A||_F)^2, at most MAX_SWEEPS."""
        th, b, n, a = self.th, self.b, self.n, self.a
        frobenius = th.total(n * n, "eigh.norm", lambda k: th.abs2(th.get(a, k)))
        tolerance = b.fmul(frobenius, th.const(th.eps * th.eps))
        with th.loop(MAX_SWEEPS + 1, "eigh.sweep"):
            with th.when(b.not_(th.read(ok))):
                def off_diagonal(k):
                    diagonal = b.icmp_unsigned("==", b.urem(k, index(n + 1)), index(0))
                    return b.select(diagonal, th.const(0), th.abs2(th.get(a, k)))
                converged = th.cmp("<=", th.total(n * n, "eigh.off", off_diagonal), tolerance)
                th.write(ok, converged)
                with th.when(b.not_(converged)):
                    with th.loop(n, "eigh.p") as p:
                        with th.loop(b.sub(index(n - 1), p), "eigh.q") as q_from:
                            self._rotation(p, b.add(b.add(p, index(1)), q_from))

    def _rotation(self, p, q) -> None:
        """With a_pq = r e (r = |a_pq|, |e| = 1): the real rotation (c, s) annihilating r
        in [[a_pp, r], [r, a_qq]] (Rutishauser: t = tan of its angle, the smaller root of
        t^2 + 2 theta t - 1), made U = [[c, s e], [-s conj(e), c]] on rows and columns p, q
        (e = +-1 for a real matrix); A <- U^H A U and V <- V U."""
        th, b, n, a = self.th, self.b, self.n, self.a
        apq = th.get(a, th.at(p, n, q))
        r = th.sqrt(th.abs2(apq)) if th.parts == 2 else th.fabs(apq[0])
        with th.when(th.cmp("!=", r, th.const(0))):
            e = th.divide(apq, r)
            app, aqq = th.get(a, th.at(p, n, p))[0], th.get(a, th.at(q, n, q))[0]
            theta = b.fdiv(b.fsub(aqq, app), b.fmul(th.const(2), r))
            t = b.fdiv(th.const(1), b.fadd(th.fabs(theta), th.sqrt(b.fadd(b.fmul(theta, theta), th.const(1)))))
            t = b.select(th.cmp("<", theta, th.const(0)), b.fneg(t), t)
            c, s = _unit_rotation(th, t)
            s_e, s_conj_e = th.scale(e, s), th.scale(th.conj(e), s)
            th.rotate(a, n, lambda k: th.at(k, n, p), lambda k: th.at(k, n, q), c, s_conj_e, s_e)     # A U
            th.rotate(a, n, lambda k: th.at(p, n, k), lambda k: th.at(q, n, k), c, s_e, s_conj_e)     # U^H (A U)
            th.put(a, th.at(p, n, p), th.element(b.fsub(app, b.fmul(t, r))))
            th.put(a, th.at(q, n, q), th.element(b.fadd(aqq, b.fmul(t, r))))
            th.put(a, th.at(p, n, q), th.zero())
            th.put(a, th.at(q, n, p), th.zero())
            if self.v is not None:
                th.rotate(self.v, n, lambda k: th.at(k, n, p), lambda k: th.at(k, n, q), c, s_conj_e, s_e)

    def _sort(self) -> None:
        """Selection sort of the eigenvalues, ascending, the vectors' columns with them."""
        th, b, n = self.th, self.b, self.n
        best = th.slot("eigh.best", I64)
        with th.loop(n, "eigh.sort") as i:
            th.write(best, i)
            with th.loop(b.sub(index(n - 1), i), "eigh.min") as rest:
                j = b.add(b.add(i, index(1)), rest)
                smaller = th.cmp("<", th.get(self.w, j)[0], th.get(self.w, th.read(best))[0])
                th.write(best, b.select(smaller, j, th.read(best)))
            other = th.read(best)
            x, y = th.get(self.w, i), th.get(self.w, other)
            th.put(self.w, i, y)
            th.put(self.w, other, x)
            if self.v is not None:
                with th.loop(n, "eigh.swap") as k:
                    x, y = th.get(self.v, th.at(k, n, i)), th.get(self.v, th.at(k, n, other))
                    th.put(self.v, th.at(k, n, i), y)
                    th.put(self.v, th.at(k, n, other), x)


# --------------------------------------------------------------------------- svd, pinv

def _svd_tolerance(th: _Thread, rows: int) -> float:
    """Columns p, q count as orthogonal when |w_p^H w_q| <= tol |w_p| |w_q|: rows * eps,
    above the rounding of the dot product itself, which would otherwise keep rotating."""
    return rows * th.eps


class _OneSidedJacobi:
    """Hestenes' one-sided Jacobi SVD of the m x n matrix at `source`, per matrix.

    It works on B = A (m >= n) or B = A^H (m < n), r x c with r >= c: W, B's working copy
    stored by columns (column j at j * r, `columns` of them: c, or r when U (or V for a
    wide A) is completed to a square matrix), and Q, the accumulated c x c rotations, also
    by columns (None for values only). B = W Q^H throughout; at the end the columns of W
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
        """Loads B, runs the sweeps, sorts: `s` (real) holds the singular values of B
        divided by the returned scale (descending), W's columns s_j u_j, Q the right
        vectors of B. `ok` is set where all went well."""
        th, b, r, c, n = self.th, self.b, self.r, self.c, self.n

        def element(k):          # k = j * r + i: B[i, j] into W's column j
            j, i = b.udiv(k, index(r)), b.urem(k, index(r))
            x = th.conj(th.get(source, th.at(j, n, i))) if self.transposed else th.get(source, th.at(i, n, j))
            th.put(self.w, k, x)
            return x
        scale, finite = _largest_magnitude(th, r * c, element)
        th.write(ok, ir.Constant(BIT, 0))
        with th.when(finite):
            with th.loop(r * c, "svd.scale") as k:
                th.put(self.w, k, th.divide(th.get(self.w, k), scale))
            if self.q is not None:
                with th.loop(c * c, "svd.identity") as k:
                    diagonal = b.icmp_unsigned("==", b.urem(k, index(c + 1)), index(0))
                    th.put(self.q, k, th.element(b.select(diagonal, th.const(1), th.const(0))))
            self._sweeps(ok)
            with th.loop(c, "svd.norms") as j:
                squares = th.total(r, "svd.norm", lambda k: th.abs2(th.get(self.w, self.column(j, k))))
                th.write(self.s_slot(j), th.sqrt(squares))
            self._sort()
        return scale

    def s_slot(self, j):
        """Pointer to singular value j (the `s` buffer holds one real per value)."""
        return self.b.gep(self.s, [j], inbounds=True, source_etype=self.th.t)

    def value(self, j):
        return self.b.load(self.s_slot(j), typ=self.th.t)

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
        """The rotation diagonalizing the Gram matrix [[alpha, gamma], [conj(gamma), beta]]
        of columns p, q (alpha, beta their squared norms, gamma = w_p^H w_q = r e): as in
        eigh, t = sign(d) 2r / (|d| + sqrt(d^2 + 4 r^2)) with d = beta - alpha (the smaller
        root, written so that nothing overflows), U = [[c, s e], [-s conj(e), c]]."""
        th, b, r = self.th, self.b, self.r
        wp, wq = (lambda k: th.get(self.w, self.column(p, k))), (lambda k: th.get(self.w, self.column(q, k)))
        alpha = th.total(r, "svd.alpha", lambda k: th.abs2(wp(k)))
        beta = th.total(r, "svd.beta", lambda k: th.abs2(wq(k)))
        gamma = th.dot(r, "svd.gamma", wp, wq)
        size = th.sqrt(th.abs2(gamma)) if th.parts == 2 else th.fabs(gamma[0])
        bound = b.fmul(th.const(_svd_tolerance(th, r)), b.fmul(th.sqrt(alpha), th.sqrt(beta)))
        with th.when(th.cmp(">", size, bound)):
            d = b.fsub(beta, alpha)
            twice = b.fmul(th.const(2), size)
            t = b.fdiv(twice, b.fadd(th.fabs(d), th.sqrt(b.fadd(b.fmul(d, d), b.fmul(twice, twice)))))
            t = b.select(th.cmp("<", d, th.const(0)), b.fneg(t), t)
            with th.when(th.cmp("!=", t, th.const(0))):        # else the pair is as orthogonal as it gets
                th.write(rotated, ir.Constant(BIT, 1))
                c, s = _unit_rotation(th, t)
                e = th.divide(gamma, size)
                s_e, s_conj_e = th.scale(e, s), th.scale(th.conj(e), s)
                th.rotate(self.w, r, lambda k: self.column(p, k), lambda k: self.column(q, k), c, s_conj_e, s_e)
                if self.q is not None:
                    cq = self.c
                    th.rotate(self.q, cq, lambda k: th.at(p, cq, k), lambda k: th.at(q, cq, k), c, s_conj_e, s_e)

    def _sort(self) -> None:
        """Selection sort of the singular values, descending, W's and Q's columns with them."""
        th, b, c = self.th, self.b, self.c
        best = th.slot("svd.best", I64)
        with th.loop(c, "svd.sort") as i:
            th.write(best, i)
            with th.loop(b.sub(index(c - 1), i), "svd.max") as rest:
                j = b.add(b.add(i, index(1)), rest)
                larger = th.cmp(">", self.value(j), self.value(th.read(best)))
                th.write(best, b.select(larger, j, th.read(best)))
            other = th.read(best)
            x, y = self.value(i), self.value(other)
            b.store(y, self.s_slot(i))
            b.store(x, self.s_slot(other))
            swaps = [(self.w, self.r, lambda k, col: self.column(col, k))]
            if self.q is not None:
                swaps.append((self.q, self.c, lambda k, col: th.at(col, self.c, k)))
            for view, length, offset in swaps:
                with th.loop(length, "svd.swap") as k:
                    x, y = th.get(view, offset(k, i)), th.get(view, offset(k, other))
                    th.put(view, offset(k, i), y)
                    th.put(view, offset(k, other), x)

    def normalize(self) -> None:
        """W's columns with a nonzero singular value divided by it: u_j."""
        th = self.th
        with th.loop(self.c, "svd.normalize") as j:
            sj = self.value(j)
            with th.when(th.cmp(">", sj, th.const(0))):
                with th.loop(self.r, "svd.divide") as k:
                    th.put(self.w, self.column(j, k), th.divide(th.get(self.w, self.column(j, k)), sj))

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
            missing = b.or_(b.icmp_signed(">=", j, index(c)), th.cmp("==", self.value(last), th.const(0)))
            with th.when(missing):
                th.write(found, ir.Constant(BIT, 0))
                with th.loop(r, "svd.candidate") as i:
                    with th.when(b.not_(th.read(found))):
                        with th.loop(r, "svd.unit") as k:
                            unit = b.icmp_unsigned("==", k, i)
                            th.put(self.w, self.column(j, k), th.element(b.select(unit, th.const(1), th.const(0))))
                        for _ in range(2):
                            self._orthogonalize(j)
                        norm2 = th.total(r, "svd.residual", lambda k: th.abs2(th.get(self.w, self.column(j, k))))
                        with th.when(th.cmp(">", norm2, threshold)):
                            th.write(found, ir.Constant(BIT, 1))
                            norm = th.sqrt(norm2)
                            with th.loop(r, "svd.unitize") as k:
                                th.put(self.w, self.column(j, k), th.divide(th.get(self.w, self.column(j, k)), norm))
                th.write(ok, b.and_(th.read(ok), th.read(found)))

    def _orthogonalize(self, j) -> None:
        """Column j minus its projections on columns 0..j-1 (modified Gram-Schmidt)."""
        th, r = self.th, self.r
        with th.loop(j, "svd.against") as col:
            projection = th.dot(r, "svd.projection", lambda k: th.get(self.w, self.column(col, k)),
                                lambda k: th.get(self.w, self.column(j, k)))
            with th.loop(r, "svd.subtract") as k:
                at = self.column(j, k)
                th.put(self.w, at, th.sub(th.get(self.w, at), th.mul(projection, th.get(self.w, self.column(col, k)))))

    def sides(self):
        """((left, stride), (right, stride)): A = left diag(s) right^H, each stored by
        columns. For A = B: left = W, right = Q; for A = B^H: left = Q, right = W."""
        w, q = (self.w, self.r), (self.q, self.c)
        return (q, w) if self.transposed else (w, q)


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
                                 b.gep(s, [th.at(mi, c, 0)], inbounds=True, source_etype=th.t), columns)
        scale = jacobi.factor(th.view(src, th.at(mi, m * n, 0)), ok)
        res = th.view(out, th.at(mi, per_result, 0))
        values = th.view(res, m * u_cols) if vectors else res
        with th.when(th.read(ok)):
            if vectors:
                jacobi.normalize()
                jacobi.complete(ok)
            with th.loop(c, "svd.values") as j:
                th.put(values, j, th.element(b.fmul(jacobi.value(j), scale)))
            if vectors:
                _write_svd_factors(th, jacobi, res, th.view(values, k_), u_cols, vt_rows)
        with th.when(b.not_(th.read(ok))):
            th.fill(res, per_result, math.nan)


def _write_svd_factors(th: _Thread, jacobi: _OneSidedJacobi, u, vt, u_cols: int, vt_rows: int) -> None:
    """U (m x u_cols) and V^H (vt_rows x n), row-major, from the sides' columns."""
    m, n = jacobi.m, jacobi.n
    (left, left_stride), (right, right_stride) = jacobi.sides()
    with th.loop(m, "svd.u.row") as i:               # U[i, j] = left's column j, element i
        with th.loop(u_cols, "svd.u.col") as j:
            th.put(u, th.at(i, u_cols, j), th.get(left, th.at(j, left_stride, i)))
    with th.loop(vt_rows, "svd.vt.row") as i:         # V^H[i, j] = conj(right's column i, element j)
        with th.loop(n, "svd.vt.col") as j:
            th.put(vt, th.at(i, n, j), th.conj(th.get(right, th.at(i, right_stride, j))))


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
                                 b.gep(s, [th.at(mi, c, 0)], inbounds=True, source_etype=th.t), c)
        scale = jacobi.factor(th.view(src, th.at(mi, m * n, 0)), ok)
        res = th.view(out, th.at(mi, n * m, 0))
        with th.when(th.read(ok)):
            jacobi.normalize()
            largest = b.fmul(jacobi.value(index(0)), scale)
            cutoff = b.fmul(ir.Constant(F64, op.attrs["rcond"]), _as_f64(b, largest))
            with th.loop(c, "pinv.inverse") as j:      # s_j becomes 1 / s_j or 0
                value = b.fmul(jacobi.value(j), scale)
                kept = b.fcmp_ordered(">", _as_f64(b, value), cutoff)
                b.store(b.select(kept, b.fdiv(th.const(1), value), th.const(0)), jacobi.s_slot(j))
            (u_side, u_stride), (v_side, v_stride) = jacobi.sides()
            with th.loop(n, "pinv.row") as i:
                with th.loop(m, "pinv.col") as j:
                    def term(l_):
                        inverse_times_u = th.scale(th.get(u_side, th.at(l_, u_stride, j)), jacobi.value(l_))
                        return th.mul(th.get(v_side, th.at(l_, v_stride, i)), th.conj(inverse_times_u))
                    th.put(res, th.at(i, m, j), th.sum_of(c, "pinv.sum", term, th.parts))
        with th.when(b.not_(th.read(ok))):
            th.fill(res, n * m, math.nan)


def _as_f64(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return x if x.type == F64 else b.fpext(x, F64)
