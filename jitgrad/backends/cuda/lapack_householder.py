"""Straight-line LAPACK code for one GPU thread: `Program` (variables, loops,
conditionals and float arithmetic on the scalar context), row-major `Matrix` and
`Vector` views of the workspace, and LAPACK's Householder reflectors (xLARFG, xLARF,
xORG2R) written on them. The CUDA qr and eig kernels (lapack_qr.py, lapack_eig.py) are
built from these; sizes are static or i64 values, every index stays inside its matrix.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

from llvmlite import ir

from jitgrad.ir import DType
from ..cpu.llvm_support import alloca_in_entry, for_range, index, memory_type


class Program:
    """Structured code on one thread: float and index variables (stack slots LLVM
    promotes to registers), loops over dynamic ranges, conditionals, and float
    arithmetic in the matrices' dtype, read and written through workspace pointers."""

    def __init__(self, ec, dtype: DType):
        self.ec, self.ctx, self.b = ec, ec.ctx, ec.builder
        self.dtype = dtype
        self.t = memory_type(dtype)

    # ----- values
    def f(self, x: float) -> ir.Constant:
        return ir.Constant(self.t, x)

    @staticmethod
    def i(n) -> ir.Value:
        return index(n) if isinstance(n, int) else n

    def var(self, init, name: str = "v"):
        """A float (or, for an i64/i1 initial value, index or flag) variable."""
        init = self.f(init) if isinstance(init, float) else self.i(init)
        slot = alloca_in_entry(self.b, init.type, name)
        self.b.store(init, slot)
        return Var(self.b, slot, init.type)

    # ----- memory
    def load(self, buffer, offset) -> ir.Value:
        return self.ctx.load(buffer, self.i(offset), self.dtype)

    def store(self, buffer, offset, x) -> None:
        self.ctx.store(buffer, self.i(offset), x, self.dtype)

    # ----- index arithmetic
    def iadd(self, a, c):
        return self.b.add(self.i(a), self.i(c))

    def isub(self, a, c):
        return self.b.sub(self.i(a), self.i(c))

    def imul(self, a, c):
        return self.b.mul(self.i(a), self.i(c))

    def icmp(self, op: str, a, c):
        return self.b.icmp_signed(op, self.i(a), self.i(c))

    def imin(self, a, c):
        return self.b.select(self.icmp("<", a, c), self.i(a), self.i(c))

    def imax(self, a, c):
        return self.b.select(self.icmp(">", a, c), self.i(a), self.i(c))

    # ----- float arithmetic
    def add(self, a, c):
        return self.b.fadd(a, c)

    def sub(self, a, c):
        return self.b.fsub(a, c)

    def mul(self, a, c):
        return self.b.fmul(a, c)

    def div(self, a, c):
        return self.b.fdiv(a, c)

    def neg(self, a):
        return self.b.fneg(a)

    def abs(self, a):
        return self.ctx.math("fabs", a)

    def sqrt(self, a):
        return self.ctx.math("sqrt", a)

    def copysign(self, magnitude, sign):
        return self.ctx._intrinsic("llvm.copysign", magnitude, sign)

    def fcmp(self, op: str, a, c):
        """Ordered comparison: false where either side is NaN."""
        return self.b.fcmp_ordered(op, a, c)

    def select(self, cond, a, c):
        return self.b.select(cond, a, c)

    def max(self, a, c):
        """The larger; NaN if either is NaN."""
        return self.ctx.maximum(a, c)

    def min(self, a, c):
        return self.ctx.minimum(a, c)

    def is_nan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def hypot(self, x, y):
        """xLAPY2: sqrt(x^2 + y^2) without overflow; NaN if either is NaN."""
        ax, ay = self.abs(x), self.abs(y)
        w, z = self.max(ax, ay), self.min(ax, ay)
        ratio = self.div(z, w)
        scaled = self.mul(w, self.sqrt(self.add(self.f(1.0), self.mul(ratio, ratio))))
        plain = self.b.or_(self.fcmp("==", z, self.f(0.0)), self.fcmp("==", w, self.f(math.inf)))
        return self.select(plain, w, scaled)

    # ----- control flow
    @contextmanager
    def range(self, start, stop, name: str = "loop"):
        """for i in range(start, stop): yields i (i64)."""
        start = self.i(start)
        count = self.imax(self.isub(stop, start), 0)
        with for_range(self.b, count, name) as k:
            yield self.iadd(start, k)

    @contextmanager
    def range_down(self, start, stop, name: str = "loop"):
        """for i in range(start, stop, -1): yields i (i64)."""
        start = self.i(start)
        count = self.imax(self.isub(start, stop), 0)
        with for_range(self.b, count, name) as k:
            yield self.isub(start, k)

    @contextmanager
    def if_(self, cond):
        with self.b.if_then(cond):
            yield

    def if_else(self, cond):
        return self.b.if_else(cond)

    @contextmanager
    def while_(self, condition, name: str = "while"):
        """while condition(): body. `condition` emits the test in the loop's header."""
        b = self.b
        header = b.append_basic_block(f"{name}.header")
        body = b.append_basic_block(f"{name}.body")
        exit_block = b.append_basic_block(f"{name}.exit")
        b.branch(header)
        b.position_at_end(header)
        b.cbranch(condition(), body, exit_block)
        b.position_at_end(body)
        yield
        b.branch(header)
        b.position_at_end(exit_block)


class Var:
    """A mutable variable: `get()` reads it, `set(x)` writes it."""

    def __init__(self, builder, slot, type_):
        self.b, self.slot, self.type = builder, slot, type_

    def get(self):
        return self.b.load(self.slot, typ=self.type)

    def set(self, x) -> None:
        self.b.store(index(x) if isinstance(x, int) else x, self.slot)


class Matrix:
    """A row-major matrix in a buffer: element (r, c) at base + r * ld + c."""

    def __init__(self, p: Program, buffer, base, ld: int):
        self.p, self.buffer, self.base, self.ld = p, buffer, base, ld

    def at(self, r, c):
        p = self.p
        return p.iadd(self.base, p.iadd(p.imul(r, self.ld), c))

    def __getitem__(self, rc):
        return self.p.load(self.buffer, self.at(*rc))

    def __setitem__(self, rc, x) -> None:
        self.p.store(self.buffer, self.at(*rc), x)


class Vector:
    """A vector in a buffer: element k at base + k."""

    def __init__(self, p: Program, buffer, base):
        self.p, self.buffer, self.base = p, buffer, base

    def __getitem__(self, k):
        return self.p.load(self.buffer, self.p.iadd(self.base, k))

    def __setitem__(self, k, x) -> None:
        self.p.store(self.buffer, self.p.iadd(self.base, k), x)


# --------------------------------------------------------------------------- Householder reflectors

def reflector(p: Program, a: Matrix, r0, r1, col):
    """xLARFG on column `col`, rows [r0, r1): alpha = a[r0, col], x below it. Overwrites x
    with v (v_0 = 1 implied) and returns (beta, tau); beta is not stored (callers do).
    tau = 0 (H = I) where x is zero or the column has one row."""
    alpha = a[r0, col]
    scale = p.var(0.0, "larfg.scale")
    with p.range(p.iadd(r0, 1), r1, "larfg.scale") as r:
        scale.set(p.max(scale.get(), p.abs(a[r, col])))
    sum_squares = p.var(0.0, "larfg.ssq")
    s = scale.get()
    with p.range(p.iadd(r0, 1), r1, "larfg.ssq") as r:
        x = p.div(a[r, col], s)
        sum_squares.set(p.add(sum_squares.get(), p.mul(x, x)))
    xnorm = p.select(p.fcmp("==", s, p.f(math.inf)), s, p.mul(s, p.sqrt(sum_squares.get())))
    xnorm = p.select(p.fcmp("==", s, p.f(0.0)), p.f(0.0), xnorm)
    trivial = p.fcmp("==", xnorm, p.f(0.0))
    beta = p.select(trivial, alpha, p.neg(p.copysign(p.hypot(alpha, xnorm), alpha)))
    tau = p.select(trivial, p.f(0.0), p.div(p.sub(beta, alpha), beta))
    with p.if_(p.b.not_(trivial)):
        divisor = p.sub(alpha, beta)
        with p.range(p.iadd(r0, 1), r1, "larfg.scal") as r:
            a[r, col] = p.div(a[r, col], divisor)
    return beta, tau


def _last_nonzero_row(p: Program, a: Matrix, r0, r1, col):
    """One past the last row of [r0, r1) where a[row, col] is nonzero (r0 + 1 at least:
    v's leading 1 is at r0)."""
    last = p.var(p.iadd(r0, 1), "iladlr")
    with p.range(p.iadd(r0, 1), r1, "iladlr") as r:
        nonzero = p.b.fcmp_unordered("!=", a[r, col], p.f(0.0))
        last.set(p.select(nonzero, p.iadd(r, 1), last.get()))
    return last.get()


def apply_left(p: Program, v: Matrix, vcol, tau, a: Matrix, r0, r1, c0, c1) -> None:
    """xLARF from the left: a[r0:r1, c0:c1] -= tau v (v^T a[...]), v in column `vcol` of
    `v` with its leading element taken as 1. Nothing where tau is 0; rows past v's last
    nonzero and columns past the last one nonzero in those rows are left alone."""
    with p.if_(p.b.fcmp_unordered("!=", tau, p.f(0.0))):       # NaN applies (and spreads)
        rows_end = _last_nonzero_row(p, v, r0, r1, vcol)
        last_col = p.var(c0, "iladlc")
        with p.range(c0, c1, "iladlc.col") as c:
            with p.range(r0, rows_end, "iladlc.row") as r:
                with p.if_(p.b.fcmp_unordered("!=", a[r, c], p.f(0.0))):
                    last_col.set(p.iadd(c, 1))
        with p.range(c0, last_col.get(), "larf.col") as c:
            w = p.var(a[r0, c], "larf.w")
            with p.range(p.iadd(r0, 1), rows_end, "larf.dot") as r:
                w.set(p.add(w.get(), p.mul(v[r, vcol], a[r, c])))
            tw = p.mul(tau, w.get())
            a[r0, c] = p.sub(a[r0, c], tw)
            with p.range(p.iadd(r0, 1), rows_end, "larf.update") as r:
                a[r, c] = p.sub(a[r, c], p.mul(v[r, vcol], tw))


def apply_right(p: Program, v: Matrix, vcol, vrow0, tau, a: Matrix, r0, r1, c0, c1) -> None:
    """xLARF from the right: a[r0:r1, c0:c1] -= tau (a[...] v) v^T, v in column `vcol` of
    `v` from row `vrow0` (its leading element taken as 1, c1 - c0 elements). Nothing
    where tau is 0; v's trailing zeros and trailing zero rows of a are left alone."""
    with p.if_(p.b.fcmp_unordered("!=", tau, p.f(0.0))):       # NaN applies (and spreads)
        offset = p.isub(vrow0, c0)          # v's element for column c of a is v[c + offset, vcol]
        cols_end = p.isub(_last_nonzero_row(p, v, vrow0, p.iadd(vrow0, p.isub(c1, c0)), vcol), offset)
        last_row = p.var(r0, "iladlr.row")
        with p.range(r0, r1, "iladlr.rows") as r:
            with p.range(c0, cols_end, "iladlr.cols") as c:
                with p.if_(p.b.fcmp_unordered("!=", a[r, c], p.f(0.0))):
                    last_row.set(p.iadd(r, 1))
        with p.range(r0, last_row.get(), "larf.row") as r:
            w = p.var(a[r, c0], "larf.w")
            with p.range(p.iadd(c0, 1), cols_end, "larf.dot") as c:
                w.set(p.add(w.get(), p.mul(a[r, c], v[p.iadd(c, offset), vcol])))
            tw = p.mul(tau, w.get())
            a[r, c0] = p.sub(a[r, c0], tw)
            with p.range(p.iadd(c0, 1), cols_end, "larf.update") as c:
                a[r, c] = p.sub(a[r, c], p.mul(tw, v[p.iadd(c, offset), vcol]))


def form_q(p: Program, a: Matrix, taus: Vector, m, cols, reflectors) -> None:
    """xORG2R in place: the first `cols` columns of H_0 ... H_{k-1} (k = `reflectors`),
    reflector j's v below a[j, j] and its tau in taus[j]. Sizes are ints or i64 values."""
    with p.range(reflectors, cols, "orgqr.unit") as c:         # columns past the reflectors: unit vectors
        with p.range(0, m, "orgqr.unit.row") as r:
            a[r, c] = p.select(p.icmp("==", r, c), p.f(1.0), p.f(0.0))
    with p.range_down(p.isub(reflectors, 1), -1, "orgqr.reflector") as j:
        tau = taus[j]
        with p.if_(p.icmp("<", j, p.isub(cols, 1))):
            a[j, j] = p.f(1.0)
            apply_left(p, a, j, tau, a, j, m, p.iadd(j, 1), cols)
        with p.range(p.iadd(j, 1), m, "orgqr.scal") as r:
            a[r, j] = p.mul(p.neg(tau), a[r, j])
        a[j, j] = p.sub(p.f(1.0), tau)
        with p.range(0, j, "orgqr.zero") as r:
            a[r, j] = p.f(0.0)


def flag(value: bool) -> ir.Constant:
    """An i1 constant."""
    return ir.Constant(ir.IntType(1), int(value))


def fortran_sign(p: Program, x):
    """Fortran's SIGN(1, x)."""
    return p.copysign(p.f(1.0), x)
