"""CPU kernels of the LAPACK primitives (`jitgrad/primitives/lapack.py`): calls into the
LAPACKE and CBLAS entry points of the OpenBLAS that NumPy's wheel ships (ILP64: 64-bit
integers, `scipy_` prefix and `64_` suffix), the library `engine.Blas` loads for GEMM.

Each kernel loops over the batch and, per matrix, copies its operand where LAPACK
overwrites it (a result buffer or scratch), calls the routine, and checks `info`: any
failure (not positive definite, exactly singular, no convergence, NaN rejected by
LAPACKE's input check) fills that matrix's result with NaN, the documented stand-in for
NumPy's LinAlgError. Sizes are static, so every pointer stays inside its buffer.

Layouts: LAPACKE's row-major entry points take jitgrad's row-major buffers as they are
(transposing internally where the routine needs it, O(n^2) against the O(n^3)
factorization); two kernels avoid that copy: Cholesky calls potrf in column-major layout
on the upper triangle, which is the row-major lower triangle, and the triangular solve
calls CBLAS trsm, which is row-major natively.
"""
from __future__ import annotations

import math

from llvmlite import binding as llvm
from llvmlite import ir

from jitgrad.errors import UnsupportedOperationError
from jitgrad.ir import DType
from jitgrad.primitives.lapack import qr_shapes, svd_shapes
from .llvm_support import F64, I32, I64, PTR, VOID, alloca_in_entry, declare, for_range, index, memory_type

I8 = ir.IntType(8)
ROW_MAJOR, COL_MAJOR = 101, 102                      # LAPACK_ROW_MAJOR / LAPACK_COL_MAJOR, CblasRowMajor
CBLAS_LEFT, CBLAS_UPPER, CBLAS_LOWER = 141, 121, 122
CBLAS_NO_TRANS, CBLAS_TRANS, CBLAS_NON_UNIT = 111, 112, 131

# argument kinds of the entry points: "layout"/"flag" are C ints, "char" a C char,
# "int" a 64-bit lapack_int, "ptr" a pointer, "scalar" the element type
_SIGNATURES = {
    "potrf": ("LAPACKE", ["layout", "char", "int", "ptr", "int"]),
    "getrf": ("LAPACKE", ["layout", "int", "int", "ptr", "int", "ptr"]),
    "getrs": ("LAPACKE", ["layout", "char", "int", "int", "ptr", "int", "ptr", "ptr", "int"]),
    "syevd": ("LAPACKE", ["layout", "char", "char", "int", "ptr", "int", "ptr"]),
    "gesdd": ("LAPACKE", ["layout", "char", "int", "int", "ptr", "int", "ptr", "ptr", "int", "ptr", "int"]),
    "geqrf": ("LAPACKE", ["layout", "int", "int", "ptr", "int", "ptr"]),
    "orgqr": ("LAPACKE", ["layout", "int", "int", "int", "ptr", "int", "ptr"]),
    "trsm": ("cblas", ["layout", "flag", "flag", "flag", "flag", "int", "int", "scalar", "ptr", "int", "ptr",
                       "int"]),
}


def symbol_name(routine: str, dtype: DType) -> str:
    family, _ = _SIGNATURES[routine]
    letter = "d" if dtype == DType.f64 else "s"
    return f"scipy_{family}_{letter}{routine}64_"


class _Kernel:
    """What every LAPACK kernel needs: the builder, typed pointers, calls, NaN fills."""

    def __init__(self, ec, op):
        if ec.blas is None:
            raise UnsupportedOperationError(
                f"{op.name} needs LAPACK, and no OpenBLAS with LAPACK was found next to NumPy", op.loc)
        self.ec, self.op, self.b = ec, op, ec.builder
        self.dtype = op.operands[0].type.dtype
        self.t = memory_type(self.dtype)
        self.item = 8 if self.dtype == DType.f64 else 4

    def routine(self, name: str) -> ir.Function:
        symbol = symbol_name(name, self.dtype)
        if not llvm.address_of_symbol(symbol):
            raise UnsupportedOperationError(f"{self.op.name}: the OpenBLAS library has no {symbol}", self.op.loc)
        family, kinds = _SIGNATURES[name]
        types = {"layout": I32, "flag": I32, "char": I8, "int": I64, "ptr": PTR, "scalar": self.t}
        fn = declare(self.ec.module, symbol, VOID if family == "cblas" else I64, [types[k] for k in kinds])
        for arg, kind in zip(fn.args, kinds, strict=True):
            if kind == "char":
                arg.add_attribute("signext")
        return fn

    def call(self, name: str, *args) -> ir.Value:
        fn = self.routine(name)
        _, kinds = _SIGNATURES[name]
        converted = []
        for a, kind in zip(args, kinds, strict=True):
            if isinstance(a, ir.Value):
                converted.append(a)
            elif kind == "char":
                converted.append(ir.Constant(I8, ord(a)))
            elif kind in ("layout", "flag"):
                converted.append(ir.Constant(I32, a))
            elif kind == "scalar":
                converted.append(ir.Constant(self.t, a))
            else:
                converted.append(index(a))
        return self.b.call(fn, converted)

    def at(self, base, offset) -> ir.Value:
        """Pointer to element `offset` (an int or i64) of the buffer at `base`."""
        offset = index(offset) if isinstance(offset, int) else offset
        return self.b.gep(base, [offset], inbounds=True, source_etype=self.t)

    def batch(self):
        return for_range(self.b, math.prod(self.op.operands[0].type.shape[:-2]), "lapack.batch")

    def offset(self, i, count: int) -> ir.Value:
        return self.b.mul(i, index(count))

    def copy(self, dst, src, count: int) -> None:
        if count:
            self.ec.memcpy(dst, src, count * self.item)

    def fill(self, dst, count: int, value: float) -> None:
        with for_range(self.b, count, "lapack.fill") as k:
            self.b.store(ir.Constant(self.t, value), self.at(dst, k))

    def failed(self, info) -> ir.Value:
        return self.b.icmp_signed("!=", info, index(0))

    def nan_if(self, condition, dst, count: int) -> None:
        with self.b.if_then(condition, likely=False):
            self.fill(dst, count, math.nan)

    def scratch(self, count: int, item: int | None = None) -> ir.Value:
        return self.ec.scratch(max(count, 1) * (item or self.item))


# --------------------------------------------------------------------------- kernels

def _cholesky(k: _Kernel) -> None:
    """potrf on the upper triangle in column-major layout: the row-major lower one."""
    (a,), out = k.op.operands, k.ec.pointer(k.op.results[0])
    n = a.type.shape[-1]
    src = k.ec.pointer(a)
    with k.batch() as i:
        base = k.offset(i, n * n)
        matrix = k.at(out, base)
        k.copy(matrix, k.at(src, base), n * n)
        info = k.call("potrf", COL_MAJOR, "U", n, matrix, n)
        with for_range(k.b, n, "chol.row") as r:            # zero above the diagonal
            row = k.b.mul(r, index(n))
            with for_range(k.b, k.b.sub(index(n - 1), r), "chol.col") as c:
                column = k.b.add(k.b.add(r, index(1)), c)
                k.b.store(ir.Constant(k.t, 0.0), k.at(matrix, k.b.add(row, column)))
        k.nan_if(k.failed(info), matrix, n * n)


def _triangular_solve(k: _Kernel) -> None:
    """trsm on a copy of B; a zero on the diagonal (exactly singular) gives NaN."""
    a, rhs = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    n, cols = rhs.type.shape[-2:]
    lower, transpose = k.op.attrs["lower"], k.op.attrs["transpose_a"]
    a_ptr, b_ptr = k.ec.pointer(a), k.ec.pointer(rhs)
    zero = ir.Constant(k.t, 0.0)
    singular_slot = alloca_in_entry(k.b, ir.IntType(1), "trsm.singular")
    with k.batch() as i:
        matrix = k.at(a_ptr, k.offset(i, n * n))
        x = k.at(out, k.offset(i, n * cols))
        k.copy(x, k.at(b_ptr, k.offset(i, n * cols)), n * cols)
        k.b.store(ir.Constant(ir.IntType(1), 0), singular_slot)
        with for_range(k.b, n, "trsm.diag") as d:
            value = k.b.load(k.at(matrix, k.b.mul(d, index(n + 1))), typ=k.t)
            k.b.store(k.b.or_(k.b.load(singular_slot, typ=ir.IntType(1)), k.b.fcmp_ordered("==", value, zero)), singular_slot)
        with k.b.if_else(k.b.load(singular_slot, typ=ir.IntType(1))) as (then, otherwise):
            with then:
                k.fill(x, n * cols, math.nan)
            with otherwise:
                k.call("trsm", ROW_MAJOR, CBLAS_LEFT, CBLAS_LOWER if lower else CBLAS_UPPER,
                       CBLAS_TRANS if transpose else CBLAS_NO_TRANS, CBLAS_NON_UNIT, n, cols, 1.0, matrix, n, x,
                       cols)


def _solve(k: _Kernel) -> None:
    """getrf on a copy of A, then getrs on a copy of B."""
    a, rhs = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    n, cols = rhs.type.shape[-2:]
    lu, pivots = k.scratch(n * n), k.scratch(n, 8)
    a_ptr, b_ptr = k.ec.pointer(a), k.ec.pointer(rhs)
    trans = "T" if k.op.attrs["transpose_a"] else "N"
    with k.batch() as i:
        x = k.at(out, k.offset(i, n * cols))
        k.copy(lu, k.at(a_ptr, k.offset(i, n * n)), n * n)
        k.copy(x, k.at(b_ptr, k.offset(i, n * cols)), n * cols)
        info = k.call("getrf", ROW_MAJOR, n, n, lu, n, pivots)
        with k.b.if_else(k.failed(info)) as (then, otherwise):
            with then:
                k.fill(x, n * cols, math.nan)
            with otherwise:
                solved = k.call("getrs", ROW_MAJOR, trans, n, cols, lu, n, pivots, x, cols)
                k.nan_if(k.failed(solved), x, n * cols)


def _slogdet(k: _Kernel) -> None:
    """NumPy's slogdet from getrf's factors: the pivots' parity, then the diagonal's signs
    and the sum of its logs in order; an exactly singular matrix gives (0, -inf)."""
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    n = a.type.shape[-1]
    lu, pivots = k.scratch(n * n), k.scratch(n, 8)
    a_ptr, b = k.ec.pointer(a), k.b
    if n == 0:                                   # the empty matrix: det 1, as NumPy
        with k.batch() as i:
            b.store(ir.Constant(k.t, 1.0), k.at(out, k.offset(i, 2)))
            b.store(ir.Constant(k.t, 0.0), k.at(out, b.add(k.offset(i, 2), index(1))))
        return
    log = declare(k.ec.module, f"llvm.log.{'f64' if k.dtype == DType.f64 else 'f32'}", k.t, [k.t])
    sign_slot, log_slot = alloca_in_entry(b, k.t, "slogdet.sign"), alloca_in_entry(b, k.t, "slogdet.log")
    one, zero = ir.Constant(k.t, 1.0), ir.Constant(k.t, 0.0)
    with k.batch() as i:
        result = k.at(out, k.offset(i, 2))
        k.copy(lu, k.at(a_ptr, k.offset(i, n * n)), n * n)
        info = k.call("getrf", ROW_MAJOR, n, n, lu, n, pivots)
        with b.if_else(b.icmp_signed(">", info, index(0))) as (singular, other):
            with singular:
                b.store(zero, k.at(result, 0))
                b.store(ir.Constant(k.t, -math.inf), k.at(result, 1))
            with other:
                b.store(one, sign_slot)
                b.store(zero, log_slot)
                with for_range(b, n, "slogdet.pivot") as p:
                    pivot = b.load(b.gep(pivots, [p], inbounds=True, source_etype=I64), typ=I64)
                    swapped = b.icmp_signed("!=", pivot, b.add(p, index(1)))
                    sign = b.load(sign_slot, typ=k.t)
                    b.store(b.select(swapped, b.fneg(sign), sign), sign_slot)
                with for_range(b, n, "slogdet.diag") as d:
                    element = b.load(k.at(lu, b.mul(d, index(n + 1))), typ=k.t)
                    negative = b.fcmp_ordered("<", element, zero)
                    sign = b.load(sign_slot, typ=k.t)
                    b.store(b.select(negative, b.fneg(sign), sign), sign_slot)
                    magnitude = b.select(negative, b.fneg(element), element)
                    b.store(b.fadd(b.load(log_slot, typ=k.t), b.call(log, [magnitude])), log_slot)
                b.store(b.load(sign_slot, typ=k.t), k.at(result, 0))
                b.store(b.load(log_slot, typ=k.t), k.at(result, 1))
                k.nan_if(b.icmp_signed("<", info, index(0)), result, 2)


def _eigh(k: _Kernel) -> None:
    """syevd on the lower (upper) triangle; with vectors they overwrite rows 1..n of the result."""
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    n = a.type.shape[-1]
    vectors = k.op.attrs["vectors"]
    per_result = (n + 1) * n if vectors else n
    work = None if vectors else k.scratch(n * n)
    a_ptr = k.ec.pointer(a)
    with k.batch() as i:
        result = k.at(out, k.offset(i, per_result))
        matrix = k.at(result, n) if vectors else work
        k.copy(matrix, k.at(a_ptr, k.offset(i, n * n)), n * n)
        info = k.call("syevd", ROW_MAJOR, "V" if vectors else "N", "L" if k.op.attrs["lower"] else "U", n, matrix,
                      n, result)
        k.nan_if(k.failed(info), result, per_result)


def _svd(k: _Kernel) -> None:
    """gesdd (jobz A, S or N) on a copy of A, writing U, s and V^T where they are packed."""
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    m, n = a.type.shape[-2:]
    full, vectors = k.op.attrs["full_matrices"], k.op.attrs["vectors"]
    (_, u_cols), kk, (vt_rows, _) = svd_shapes(m, n, full)
    per_result = m * u_cols + kk + vt_rows * n if vectors else kk
    work, spare = k.scratch(m * n), k.scratch(1)
    a_ptr = k.ec.pointer(a)
    with k.batch() as i:
        result = k.at(out, k.offset(i, per_result))
        k.copy(work, k.at(a_ptr, k.offset(i, m * n)), m * n)
        if vectors:
            s = k.at(result, m * u_cols)
            info = k.call("gesdd", ROW_MAJOR, "A" if full else "S", m, n, work, n, s, result, u_cols,
                          k.at(s, kk), n)
        else:
            info = k.call("gesdd", ROW_MAJOR, "N", m, n, work, n, result, spare, 1, spare, 1)
        k.nan_if(k.failed(info), result, per_result)


def _qr(k: _Kernel) -> None:
    """geqrf on A copied into an m x c work matrix (c = max(n, columns of Q)), R from its
    upper triangle, then orgqr forms Q's columns in place."""
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    m, n = a.type.shape[-2:]
    (_, q_cols), (r_rows, _) = qr_shapes(m, n, k.op.attrs["complete"])
    kk, c = min(m, n), max(n, q_cols)
    per_result = m * q_cols + r_rows * n
    work, tau = k.scratch(m * c), k.scratch(kk)
    a_ptr, b = k.ec.pointer(a), k.b
    with k.batch() as i:
        result = k.at(out, k.offset(i, per_result))
        r_out = k.at(result, m * q_cols)
        source = k.at(a_ptr, k.offset(i, m * n))
        if c > n:           # columns orgqr reads (LAPACKE checks them for NaN) beyond A's
            k.ec.memset_zero(work, m * c * k.item)
        with for_range(b, m, "qr.copy") as row:
            k.copy(k.at(work, b.mul(row, index(c))), k.at(source, b.mul(row, index(n))), n)
        info = k.call("geqrf", ROW_MAJOR, m, n, work, c, tau)
        with for_range(b, r_rows, "qr.r.row") as row:
            with for_range(b, n, "qr.r.col") as col:
                keep = b.and_(b.icmp_signed("<", row, index(kk)), b.icmp_signed(">=", col, row))
                value = b.load(k.at(work, b.add(b.mul(row, index(c)), col)), typ=k.t)
                b.store(b.select(keep, value, ir.Constant(k.t, 0.0)), k.at(r_out, b.add(b.mul(row, index(n)), col)))
        formed = k.call("orgqr", ROW_MAJOR, m, q_cols, kk, work, c, tau)
        with for_range(b, m, "qr.q") as row:
            k.copy(k.at(result, b.mul(row, index(q_cols))), k.at(work, b.mul(row, index(c))), q_cols)
        k.nan_if(b.or_(k.failed(info), k.failed(formed)), result, per_result)


def _as_f64(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return x if x.type == F64 else b.fpext(x, F64)


def _pinv(k: _Kernel) -> None:
    """NumPy's pinv: gesdd (jobz S) on a copy of A, 1/s where s > rcond * max(s) (0 else)
    scaling the rows of U^T, then V (k x n)^T times that with GEMM."""
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    m, n = a.type.shape[-2:]
    kk = min(m, n)
    gemm = k.ec.blas.gemm(k.ec.module, k.dtype)
    work, u, s, vt, scaled = k.scratch(m * n), k.scratch(m * kk), k.scratch(kk), k.scratch(kk * n), k.scratch(kk * m)
    a_ptr, b = k.ec.pointer(a), k.b
    zero, one = ir.Constant(k.t, 0.0), ir.Constant(k.t, 1.0)
    largest_slot = alloca_in_entry(b, k.t, "pinv.largest")
    with k.batch() as i:
        result = k.at(out, k.offset(i, n * m))
        k.copy(work, k.at(a_ptr, k.offset(i, m * n)), m * n)
        info = k.call("gesdd", ROW_MAJOR, "S", m, n, work, n, s, u, kk, vt, n)
        b.store(b.load(k.at(s, 0), typ=k.t), largest_slot)
        with for_range(b, kk, "pinv.max") as j:           # NumPy takes amax(s), not s[0]
            value, largest = b.load(k.at(s, j), typ=k.t), b.load(largest_slot, typ=k.t)
            b.store(b.select(b.fcmp_ordered(">", value, largest), value, largest), largest_slot)
        # the cutoff in float64, as NumPy's float64 rcond times the float32 amax(s) is
        cutoff = b.fmul(ir.Constant(F64, k.op.attrs["rcond"]), _as_f64(b, b.load(largest_slot, typ=k.t)))
        with for_range(b, kk, "pinv.row") as r:
            value = b.load(k.at(s, r), typ=k.t)
            inverse = b.select(b.fcmp_ordered(">", _as_f64(b, value), cutoff), b.fdiv(one, value), zero)
            with for_range(b, m, "pinv.col") as c:
                element = b.load(k.at(u, b.add(b.mul(c, index(kk)), r)), typ=k.t)
                b.store(b.fmul(inverse, element), k.at(scaled, b.add(b.mul(r, index(m)), c)))
        b.call(gemm, [ir.Constant(I32, ROW_MAJOR), ir.Constant(I32, CBLAS_TRANS), ir.Constant(I32, CBLAS_NO_TRANS),
                      index(n), index(m), index(kk), one, vt, index(n), scaled, index(m), zero, result, index(m)])
        k.nan_if(k.failed(info), result, n * m)


_KERNELS = {"pinv": _pinv, "cholesky": _cholesky, "triangular_solve": _triangular_solve, "solve": _solve,
            "slogdet": _slogdet, "eigh": _eigh, "svd": _svd, "qr": _qr}


def emit(ec, op) -> None:
    """The CPU kernel of one LAPACK primitive (KernelKind emitter)."""
    if any(r.type.size == 0 for r in op.results):
        return
    _KERNELS[op.name](_Kernel(ec, op))
