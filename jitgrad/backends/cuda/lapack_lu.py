"""CUDA kernels of cholesky, triangular_solve, solve and slogdet: the `lapack_lu` family
of `jitgrad/backends/cuda/lapack.py`.

One matrix of the batch per grid-stride iteration, one thread per matrix; its working
copy lives in the matrix's own part of the workspace (or in its part of the result), so
no two threads touch one element and the results do not depend on the launch
configuration. The algorithms are those of the OpenBLAS routines the CPU calls
(`jitgrad/backends/cpu/lapack.py`), in the same order of operations where that decides an
outcome (which element is the pivot, whether a pivot is exactly zero), so the two agree
to rounding:

- cholesky: potf2's left-looking column Cholesky of the lower triangle,
  L[j,j] = sqrt(A[j,j] - sum_k<j |L[j,k]|^2), L[i,j] = (A[i,j] - sum_k<j L[i,k] conj(L[j,k]))
  * (1 / L[j,j]); the strict upper triangle is zero (only A's lower triangle and the real
  part of its diagonal are read). A value <= 0 under the square root is a matrix that is
  not positive definite: the whole factor is NaN. A NaN there is not a failure (potf2
  tests `ajj <= 0`): NaN spreads through the columns after it, as on the CPU.
- solve: getf2's left-looking LU with partial pivoting (column j: earlier row swaps, the
  unit lower solve and the update, then the pivot), then getrs (row swaps, unit lower
  and upper substitution; for transpose_a the transposed triangles and the swaps in
  reverse). The pivot is the first element of largest |re| + |im| (i?amax's measure);
  an exactly zero pivot is a singular matrix: the solution is NaN. Below the pivot the
  column is multiplied by 1 / pivot (divided by it, Smith's method for complex, when
  1 / pivot would overflow); substitution multiplies by 1 / diagonal, as trsm does.
  Complex reciprocals are OpenBLAS's (the ratio of the smaller part to the larger).
- slogdet: the same LU; the sign from the swaps' parity and the diagonal's signs (complex:
  the product of d / |d|, with |d| by hypot), log|det| the sum of the diagonal's log|d| in
  order; a zero pivot gives (0, -inf); the empty matrix (1, 0).
- triangular_solve: op(T) written out in full (zeros outside the triangle); forward or
  back substitution when op(T) is finite with no zero on its diagonal, else the LU solve
  above (the CPU's route through LU for such a triangle, which is NumPy's solve).

Where the matrix holds NaN the pivot search differs from the CPU's on purpose: a NaN
element wins it (the first NaN), so NaN reaches every pivot after it and the whole
solution and log|det| are NaN. OpenBLAS's vectorized pivot search treats NaN in a way
that depends on the vector's length and position, and its getf2 skips the row swap and
the scaling for a NaN pivot, which can leave entries of a solution finite that depend on
the NaN. The GPU's results are NaN wherever the CPU's are; the sign of slogdet of such
a matrix is left free.

Complex matrices (complex64, complex128) are NumPy's interleaved (re, im) pairs; the
transposes of `transpose_a` are plain transposes, as the CPU's getrs 'T' and trsm.

One thread does a matrix's O(n^3) work: fast for many small matrices, slow for a single
large one (a block-cooperative factorization, or cuSOLVER, would serve those).
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from jitgrad.ir import DType
from ..cpu.llvm_support import alloca_in_entry

COMPLEX = ("cholesky", "triangular_solve", "solve", "slogdet")
"""The primitives of this family whose complex64/complex128 kernels exist."""

BIT = ir.IntType(1)


class _Elements:
    """Arithmetic on one element of a real or complex matrix, a tuple of its parts
    ((re,) or (re, im)), and element access in buffers of interleaved parts."""

    def __init__(self, ctx, dtype: DType):
        self.ctx = ctx
        self.part = dtype.real_dtype
        self.parts = 2 if dtype.is_complex else 1
        self.tiny = float(np.finfo(self.part.numpy).tiny)

    @property
    def b(self) -> ir.IRBuilder:
        return self.ctx.builder

    def constant(self, re: float, im: float = 0.0) -> tuple:
        return tuple(self.ctx.const_of(v, self.part) for v in (re, im)[:self.parts])

    def real_constant(self, value: float):
        return self.ctx.const_of(value, self.part)

    def _offset(self, element, part: int):
        ctx = self.ctx
        if self.parts == 1:
            return element
        return ctx.index_add(ctx.index_mul(element, ctx.index_const(2)), ctx.index_const(part))

    def load(self, buffer, element) -> tuple:
        return tuple(self.ctx.load(buffer, self._offset(element, p), self.part) for p in range(self.parts))

    def store(self, buffer, element, value: tuple) -> None:
        for p, x in enumerate(value):
            self.ctx.store(buffer, self._offset(element, p), x, self.part)

    def add(self, a: tuple, c: tuple) -> tuple:
        return tuple(self.ctx.add(x, y) for x, y in zip(a, c, strict=True))

    def sub(self, a: tuple, c: tuple) -> tuple:
        return tuple(self.ctx.sub(x, y) for x, y in zip(a, c, strict=True))

    def mul(self, a: tuple, c: tuple, conjugate: bool = False) -> tuple:
        """a * c, or a * conj(c)."""
        ctx = self.ctx
        if self.parts == 1:
            return (ctx.mul(a[0], c[0]),)
        (ar, ai), (cr, ci) = a, c
        if conjugate:
            return ctx.add(ctx.mul(ar, cr), ctx.mul(ai, ci)), ctx.sub(ctx.mul(ai, cr), ctx.mul(ar, ci))
        return ctx.sub(ctx.mul(ar, cr), ctx.mul(ai, ci)), ctx.add(ctx.mul(ar, ci), ctx.mul(ai, cr))

    def divide(self, a: tuple, d: tuple) -> tuple:
        """a / d: a real division, or Smith's complex division (no overflow of |d|^2)."""
        ctx, b = self.ctx, self.b
        if self.parts == 1:
            return (ctx.div(a[0], d[0]),)
        (ar, ai), (dr, di) = a, d
        real_larger = b.fcmp_ordered(">=", self.fabs(dr), self.fabs(di))
        big, small = ctx.select(real_larger, dr, di), ctx.select(real_larger, di, dr)
        ratio = ctx.div(small, big)
        denominator = ctx.add(big, ctx.mul(small, ratio))
        # |dr| >= |di|: ((ar + ai r) + i (ai - ar r)) / den; else ((ar r + ai) + i (ai r - ar)) / den
        re = ctx.select(real_larger, ctx.add(ar, ctx.mul(ai, ratio)), ctx.add(ctx.mul(ar, ratio), ai))
        im = ctx.select(real_larger, ctx.sub(ai, ctx.mul(ar, ratio)), ctx.sub(ctx.mul(ai, ratio), ar))
        return ctx.div(re, denominator), ctx.div(im, denominator)

    def reciprocal(self, d: tuple) -> tuple:
        """1 / d as OpenBLAS forms it before multiplying by it (getf2's scaling, the
        inverted diagonal of trsm): 1 / d, or for complex d with r the ratio of the smaller
        part to the larger, (1 - i r) / (dr (1 + r^2)) or (r - i) / (di (1 + r^2))."""
        ctx, b = self.ctx, self.b
        one = self.real_constant(1.0)
        if self.parts == 1:
            return (ctx.div(one, d[0]),)
        dr, di = d
        real_larger = b.fcmp_ordered(">=", self.fabs(dr), self.fabs(di))
        big, small = ctx.select(real_larger, dr, di), ctx.select(real_larger, di, dr)
        ratio = ctx.div(small, big)
        den = ctx.div(one, ctx.mul(big, ctx.add(one, ctx.mul(ratio, ratio))))
        return (ctx.select(real_larger, den, ctx.mul(ratio, den)),
                ctx.select(real_larger, ctx.neg(ctx.mul(ratio, den)), ctx.neg(den)))

    def normal(self, d: tuple):
        """Some part of d is at least the smallest normal number: its reciprocal is finite."""
        tiny = self.real_constant(self.tiny)
        result = ir.Constant(BIT, 0)
        for x in d:
            result = self.b.or_(result, self.b.fcmp_ordered(">=", self.fabs(x), tiny))
        return result

    def fabs(self, x):
        return self.ctx.math("fabs", x)

    def magnitude(self, a: tuple):
        """|re| + |im|: the measure LAPACK's pivot search (i?amax) compares."""
        total = self.fabs(a[0])
        for x in a[1:]:
            total = self.ctx.add(total, self.fabs(x))
        return total

    def is_zero(self, a: tuple):
        zero = self.real_constant(0.0)
        result = ir.Constant(BIT, 1)
        for x in a:
            result = self.b.and_(result, self.b.fcmp_ordered("==", x, zero))
        return result

    def is_nan(self, x):
        return self.b.fcmp_unordered("uno", x, x)

    def not_finite(self, a: tuple):
        """Any part infinite or NaN (x - x is NaN exactly for those)."""
        result = ir.Constant(BIT, 0)
        for x in a:
            result = self.b.or_(result, self.is_nan(self.ctx.sub(x, x)))
        return result

    def select(self, condition, a: tuple, c: tuple) -> tuple:
        return tuple(self.ctx.select(condition, x, y) for x, y in zip(a, c, strict=True))

    def slot(self, name: str) -> "_Slot":
        return _Slot(self, name)


class _Slot:
    """A private variable holding one element (registers once LLVM promotes it)."""

    def __init__(self, elements: _Elements, name: str):
        self.elements = elements
        self.slots = [elements.ctx.local_array(elements.part, 1, f"{name}.{p}") for p in range(elements.parts)]

    def get(self) -> tuple:
        ctx, c0 = self.elements.ctx, self.elements.ctx.index_const(0)
        return tuple(ctx.load(s, c0, self.elements.part) for s in self.slots)

    def set(self, value: tuple) -> None:
        ctx, c0 = self.elements.ctx, self.elements.ctx.index_const(0)
        for s, x in zip(self.slots, value, strict=True):
            ctx.store(s, c0, x, self.elements.part)


class _Matrix:
    """A row-major matrix of `cols` columns at element offset `base` of `buffer`."""

    def __init__(self, f: _Elements, buffer, base, cols: int):
        self.f, self.buffer, self.base, self.cols = f, buffer, base, cols

    def element(self, r, c):
        ctx = self.f.ctx
        return ctx.index_add(self.base, ctx.index_add(ctx.index_mul(r, ctx.index_const(self.cols)), c))

    def load(self, r, c) -> tuple:
        return self.f.load(self.buffer, self.element(r, c))

    def store(self, r, c, value: tuple) -> None:
        self.f.store(self.buffer, self.element(r, c), value)

    def swap(self, r1, c1, r2, c2) -> None:
        first, second = self.load(r1, c1), self.load(r2, c2)
        self.store(r1, c1, second)
        self.store(r2, c2, first)


class _Pivots:
    """The row each LU step swapped in (0-based, i64), at offset `base` of `buffer`."""

    def __init__(self, ctx, buffer, base):
        self.ctx, self.buffer, self.base = ctx, buffer, base

    def load(self, k):
        return self.ctx.load(self.buffer, self.ctx.index_add(self.base, k), DType.i64)

    def store(self, k, row) -> None:
        self.ctx.store(self.buffer, self.ctx.index_add(self.base, k), row, DType.i64)


# --------------------------------------------------------------------------- building blocks

def _copy(f: _Elements, dst, dst_base, src, src_base, count: int) -> None:
    """`count` elements, part by part (bits unchanged)."""
    ctx = f.ctx
    dst_at = ctx.index_mul(dst_base, ctx.index_const(f.parts))
    src_at = ctx.index_mul(src_base, ctx.index_const(f.parts))
    with ctx.loop(count * f.parts, "lu.copy") as k:
        ctx.store(dst, ctx.index_add(dst_at, k), ctx.load(src, ctx.index_add(src_at, k), f.part), f.part)


def _fill_nan(f: _Elements, dst, base, count: int) -> None:
    ctx = f.ctx
    at = ctx.index_mul(base, ctx.index_const(f.parts))
    nan = f.real_constant(math.nan)
    with ctx.loop(count * f.parts, "lu.nan") as k:
        ctx.store(dst, ctx.index_add(at, k), nan, f.part)


def _dot(f: _Elements, count, left, right, name: str, conjugate: bool = False) -> tuple:
    """The sum over s < count of left(s) * right(s) (times conj(right(s)) when
    `conjugate`), accumulated in order of s."""
    ctx = f.ctx
    total = f.slot(name)
    total.set(f.constant(0.0))
    with ctx.loop(count, name) as s:
        total.set(f.add(total.get(), f.mul(left(s), right(s), conjugate)))
    return total.get()


def _lu_factor(f: _Elements, lu: _Matrix, pivots: _Pivots, n: int):
    """getf2 on the n x n matrix `lu` in place (L below the diagonal with a unit diagonal,
    U on and above it); returns an i1: some pivot was exactly zero (singular)."""
    ctx, b = f.ctx, f.b
    c_ = ctx.index_const
    singular = alloca_in_entry(b, BIT, "lu.singular")
    b.store(ir.Constant(BIT, 0), singular)
    best_slot = ctx.local_array(f.part, 1, "lu.best")
    row_slot = ctx.local_array(DType.i64, 1, "lu.row")
    with ctx.loop(n, "lu.col") as j:
        with ctx.loop(j, "lu.swaps") as i:                    # the earlier steps' row swaps
            p = pivots.load(i)
            with b.if_then(b.icmp_signed("!=", p, i)):
                lu.swap(i, j, p, j)
        with ctx.loop(n, "lu.update") as i:                   # unit lower solve, then the update
            above = ctx.select(ctx.index_cmp("<", i, j), i, j)
            change = _dot(f, above, lambda k: lu.load(i, k), lambda k: lu.load(k, j), "lu.dot")
            lu.store(i, j, f.sub(lu.load(i, j), change))
        ctx.store(best_slot, c_(0), f.magnitude(lu.load(j, j)), f.part)
        ctx.store(row_slot, c_(0), j, DType.i64)
        with ctx.loop(ctx.index_sub(c_(n - 1), j), "lu.search") as t:
            i = ctx.index_add(j, ctx.index_add(t, c_(1)))
            value, best = f.magnitude(lu.load(i, j)), ctx.load(best_slot, c_(0), f.part)
            wins = b.or_(b.fcmp_ordered(">", value, best), b.and_(f.is_nan(value), b.not_(f.is_nan(best))))
            ctx.store(best_slot, c_(0), ctx.select(wins, value, best), f.part)
            ctx.store(row_slot, c_(0), ctx.select(wins, i, ctx.load(row_slot, c_(0), DType.i64)), DType.i64)
        p = ctx.load(row_slot, c_(0), DType.i64)
        pivots.store(j, p)
        pivot = lu.load(p, j)
        with b.if_else(f.is_zero(pivot)) as (zero, nonzero):
            with zero:
                b.store(ir.Constant(BIT, 1), singular)
            with nonzero:
                with b.if_then(b.icmp_signed("!=", p, j)):
                    with ctx.loop(ctx.index_add(j, c_(1)), "lu.swap") as c:
                        lu.swap(j, c, p, c)
                _scale_below(f, lu, j, n, pivot)
    return b.load(singular, typ=BIT)


def _scale_below(f: _Elements, lu: _Matrix, j, n: int, pivot: tuple) -> None:
    """Column j below the diagonal divided by the pivot: times its reciprocal (getf2),
    or divided by it where the reciprocal would overflow (a subnormal pivot)."""
    ctx = f.ctx
    c_ = ctx.index_const
    reciprocal, normal = f.reciprocal(pivot), f.normal(pivot)
    with ctx.loop(ctx.index_sub(c_(n - 1), j), "lu.scale") as t:
        i = ctx.index_add(j, ctx.index_add(t, c_(1)))
        x = lu.load(i, j)
        lu.store(i, j, f.select(normal, f.mul(x, reciprocal), f.divide(x, pivot)))


def _apply_swaps(f: _Elements, x: _Matrix, pivots: _Pivots, n: int, cols: int, reverse: bool) -> None:
    """The LU's row swaps on the rows of x, in order (P x) or in reverse (P^T x)."""
    ctx, b = f.ctx, f.b
    with ctx.loop(n, "lu.permute") as step:
        k = ctx.index_sub(ctx.index_const(n - 1), step) if reverse else step
        p = pivots.load(k)
        with b.if_then(b.icmp_signed("!=", p, k)):
            with ctx.loop(cols, "lu.permute.col") as c:
                x.swap(k, c, p, c)


def _substitute(f: _Elements, t: _Matrix, x: _Matrix, n: int, cols: int, *, lower: bool, unit: bool,
                transposed: bool) -> None:
    """x := M^-1 x in place, M the lower (upper) triangle of t, or of t^T when
    `transposed`; a unit diagonal when `unit`. Row i of the solution is x[i] minus the
    dot product with the rows solved before it, in order of k, times 1 / M[i, i] (trsm's
    inverted diagonal)."""
    ctx = f.ctx
    c_ = ctx.index_const

    def m(i, k):
        return t.load(k, i) if transposed else t.load(i, k)
    with ctx.loop(n, "lu.substitute") as step:
        i = step if lower else ctx.index_sub(c_(n - 1), step)
        count = i if lower else step                     # k < i, or i < k < n
        first = c_(0) if lower else ctx.index_add(i, c_(1))
        inverse = None if unit else f.reciprocal(m(i, i))
        with ctx.loop(cols, "lu.substitute.col") as c:
            change = _dot(f, count, lambda s: m(i, ctx.index_add(first, s)),
                          lambda s: x.load(ctx.index_add(first, s), c), "lu.substitute.dot")
            value = f.sub(x.load(i, c), change)
            x.store(i, c, value if unit else f.mul(value, inverse))


def _lu_solve(f: _Elements, lu: _Matrix, pivots: _Pivots, x: _Matrix, n: int, cols: int, transposed: bool) -> None:
    """Factor `lu` in place and solve op(A) X = x in place; NaN in x if A is singular."""
    b = f.b
    singular = _lu_factor(f, lu, pivots, n)
    with b.if_else(singular) as (failed, factored):
        with failed:
            _fill_nan(f, x.buffer, x.base, n * cols)
        with factored:
            if transposed:            # A^T = U^T L^T P: U^T, then L^T, then the swaps in reverse
                _substitute(f, lu, x, n, cols, lower=True, unit=False, transposed=True)
                _substitute(f, lu, x, n, cols, lower=False, unit=True, transposed=True)
                _apply_swaps(f, x, pivots, n, cols, reverse=True)
            else:
                _apply_swaps(f, x, pivots, n, cols, reverse=False)
                _substitute(f, lu, x, n, cols, lower=True, unit=True, transposed=False)
                _substitute(f, lu, x, n, cols, lower=False, unit=False, transposed=False)


def _batch(x) -> int:
    return math.prod(x.type.shape[:-2])


def _open(ec, op):
    """Opens the launch over the batch's matrices: (ctx, elements, batch count)."""
    batch = _batch(op.operands[0])
    ec.begin_launch(True, batch)
    return ec.ctx, _Elements(ec.ctx, op.operands[0].type.dtype), batch


# --------------------------------------------------------------------------- kernels

def emit_cholesky(ec, op) -> None:
    (a,), result = op.operands, op.results[0]
    n = a.type.shape[-1]
    ctx, f, batch = _open(ec, op)
    c_ = ctx.index_const
    src, out = ec.pointer(a), ec.pointer(result)
    b = ctx.builder
    failed = alloca_in_entry(b, BIT, "cholesky.failed")
    with ctx.grid_loop(batch, "cholesky.matrix") as m:
        base = ctx.index_mul(m, c_(n * n))
        a_m, l_m = _Matrix(f, src, base, n), _Matrix(f, out, base, n)
        b.store(ir.Constant(BIT, 0), failed)
        with ctx.loop(n, "cholesky.col") as j:
            squares = _dot(f, j, lambda k: l_m.load(j, k), lambda k: l_m.load(j, k), "cholesky.diag", True)
            # sum of L[j,k] conj(L[j,k]): its real part (the imaginary one is rounding)
            diagonal = ctx.sub(a_m.load(j, j)[0], squares[0])
            b.store(b.or_(b.load(failed, typ=BIT), b.fcmp_ordered("<=", diagonal, f.real_constant(0.0))), failed)
            root = ctx.math("sqrt", diagonal)
            l_m.store(j, j, (root,) + (f.real_constant(0.0),) * (f.parts - 1))
            # times 1 / L[j,j] as an element (zscal's complex product: inf becomes inf + NaN i, as on the CPU)
            scale = (ctx.div(f.real_constant(1.0), root),) + (f.real_constant(0.0),) * (f.parts - 1)
            with ctx.loop(ctx.index_sub(c_(n - 1), j), "cholesky.below") as t:
                i = ctx.index_add(j, ctx.index_add(t, c_(1)))
                change = _dot(f, j, lambda k: l_m.load(i, k), lambda k: l_m.load(j, k), "cholesky.dot", True)
                l_m.store(i, j, f.mul(f.sub(a_m.load(i, j), change), scale))
        zero = f.constant(0.0)
        with ctx.loop(n, "cholesky.upper") as r:
            with ctx.loop(ctx.index_sub(c_(n - 1), r), "cholesky.upper.col") as t:
                l_m.store(r, ctx.index_add(r, ctx.index_add(t, c_(1))), zero)
        with b.if_then(b.load(failed, typ=BIT), likely=False):
            _fill_nan(f, out, base, n * n)


def emit_solve(ec, op) -> None:
    """A copied into the matrix's workspace and factored there; B copied into the
    result and solved in place."""
    (a, rhs), result = op.operands, op.results[0]
    n, cols = rhs.type.shape[-2:]
    ctx, f, batch = _open(ec, op)
    c_ = ctx.index_const
    a_ptr, b_ptr, out = ec.pointer(a), ec.pointer(rhs), ec.pointer(result)
    work, pivot_rows = ec.scratch(batch * n * n * f.parts * f.part.itemsize), ec.scratch(batch * n * 8)
    with ctx.grid_loop(batch, "solve.matrix") as m:
        a_base, x_base = ctx.index_mul(m, c_(n * n)), ctx.index_mul(m, c_(n * cols))
        _copy(f, work, a_base, a_ptr, a_base, n * n)
        _copy(f, out, x_base, b_ptr, x_base, n * cols)
        _lu_solve(f, _Matrix(f, work, a_base, n), _Pivots(ctx, pivot_rows, ctx.index_mul(m, c_(n))),
                  _Matrix(f, out, x_base, cols), n, cols, op.attrs["transpose_a"])


def emit_triangular_solve(ec, op) -> None:
    """op(T) written out in full into the matrix's workspace, flagging a non-finite
    element or a zero on the diagonal; substitution on it, or the LU solve when flagged."""
    (a, rhs), result = op.operands, op.results[0]
    n, cols = rhs.type.shape[-2:]
    lower, transpose = op.attrs["lower"], op.attrs["transpose_a"]
    ctx, f, batch = _open(ec, op)
    c_ = ctx.index_const
    b = ctx.builder
    a_ptr, b_ptr, out = ec.pointer(a), ec.pointer(rhs), ec.pointer(result)
    work, pivot_rows = ec.scratch(batch * n * n * f.parts * f.part.itemsize), ec.scratch(batch * n * 8)
    irregular = alloca_in_entry(b, BIT, "trsm.irregular")
    zero = f.constant(0.0)
    with ctx.grid_loop(batch, "trsm.matrix") as m:
        a_base, x_base = ctx.index_mul(m, c_(n * n)), ctx.index_mul(m, c_(n * cols))
        source, full = _Matrix(f, a_ptr, a_base, n), _Matrix(f, work, a_base, n)
        x = _Matrix(f, out, x_base, cols)
        _copy(f, out, x_base, b_ptr, x_base, n * cols)
        b.store(ir.Constant(BIT, 0), irregular)
        with ctx.loop(n, "trsm.row") as r:
            with ctx.loop(n, "trsm.col") as c:
                row, col = (c, r) if transpose else (r, c)
                in_triangle = ctx.index_cmp("<=" if lower else ">=", col, row)
                value = f.select(in_triangle, source.load(row, col), zero)
                full.store(r, c, value)
                zero_pivot = b.and_(b.icmp_signed("==", r, c), f.is_zero(value))
                b.store(b.or_(b.load(irregular, typ=BIT), b.or_(f.not_finite(value), zero_pivot)), irregular)
        with b.if_else(b.load(irregular, typ=BIT)) as (through_lu, substitution):
            with through_lu:
                _lu_solve(f, full, _Pivots(ctx, pivot_rows, ctx.index_mul(m, c_(n))), x, n, cols, False)
            with substitution:
                _substitute(f, full, x, n, cols, lower=lower != transpose, unit=False, transposed=False)


def emit_slogdet(ec, op) -> None:
    """[sign, log|det|] from the LU of a copy of A (complex: [sign, log|det| + 0i])."""
    (a,), result = op.operands, op.results[0]
    n = a.type.shape[-1]
    ctx, f, batch = _open(ec, op)
    c_ = ctx.index_const
    b = ctx.builder
    a_ptr, out = ec.pointer(a), ec.pointer(result)
    work, pivot_rows = ec.scratch(batch * n * n * f.parts * f.part.itemsize), ec.scratch(batch * n * 8)
    one, zero = f.real_constant(1.0), f.real_constant(0.0)
    sign, logdet = f.slot("slogdet.sign"), ctx.local_array(f.part, 1, "slogdet.log")
    with ctx.grid_loop(batch, "slogdet.matrix") as m:
        at = ctx.index_mul(m, c_(2))

        def write(sign_value: tuple, log_value) -> None:
            f.store(out, at, sign_value)
            f.store(out, ctx.index_add(at, c_(1)), (log_value,) + (zero,) * (f.parts - 1))
        if n == 0:                                   # the empty matrix: det 1, as NumPy
            write(f.constant(1.0), zero)
        else:
            base = ctx.index_mul(m, c_(n * n))
            lu, pivots = _Matrix(f, work, base, n), _Pivots(ctx, pivot_rows, ctx.index_mul(m, c_(n)))
            _copy(f, work, base, a_ptr, base, n * n)
            singular = _lu_factor(f, lu, pivots, n)
            with b.if_else(singular) as (zero_pivot, factored):
                with zero_pivot:
                    write(f.constant(0.0), f.real_constant(-math.inf))
                with factored:
                    _accumulate_slogdet(f, lu, pivots, n, sign, logdet)
                    write(sign.get(), ctx.load(logdet, c_(0), f.part))


def _accumulate_slogdet(f: _Elements, lu: _Matrix, pivots: _Pivots, n: int, sign: _Slot, logdet) -> None:
    """NumPy's slogdet from the factors: the sign starts as the swaps' parity and takes
    each diagonal element's sign (d / |d| for complex, |d| by hypot); log|det| is the sum
    of log|d| in order."""
    ctx, b = f.ctx, f.b
    c_ = ctx.index_const
    sign.set(f.constant(1.0))
    ctx.store(logdet, c_(0), f.real_constant(0.0), f.part)
    with ctx.loop(n, "slogdet.pivot") as k:
        swapped = b.icmp_signed("!=", pivots.load(k), k)
        current = sign.get()
        sign.set(f.select(swapped, tuple(ctx.neg(x) for x in current), current))
    with ctx.loop(n, "slogdet.diagonal") as k:
        d = lu.load(k, k)
        if f.parts == 1:
            negative = b.fcmp_ordered("<", d[0], f.real_constant(0.0))
            current = sign.get()
            sign.set(f.select(negative, (ctx.neg(current[0]),), current))
            modulus = ctx.select(negative, ctx.neg(d[0]), d[0])
        else:
            modulus = ctx.math("hypot", d[0], d[1])
            sign.set(f.mul(sign.get(), (ctx.div(d[0], modulus), ctx.div(d[1], modulus))))
        total = ctx.load(logdet, c_(0), f.part)
        ctx.store(logdet, c_(0), ctx.add(total, ctx.math("log", modulus)), f.part)
