"""CPU kernels of the LAPACK primitives (`jitgrad/primitives/lapack.py`): calls into the
LAPACKE and CBLAS entry points of the OpenBLAS that NumPy's wheel ships (ILP64: 64-bit
integers, `scipy_` prefix and `64_` suffix), the library `engine.Blas` loads for GEMM.

Each kernel loops over the batch and, per matrix, copies its operand where LAPACK
overwrites it (a result buffer or scratch), calls the routine, and checks `info`: any
failure (not positive definite, exactly singular, no convergence) fills that matrix's
result with NaN, the documented stand-in for NumPy's LinAlgError. Non-finite input is
not refused: like NumPy, which calls LAPACK itself, the routine runs on it (LAPACKE's
`_work` entry points, which skip LAPACKE's NaN scan), so NaN and inf come out where
NumPy's come out. Sizes are static, workspaces are sized by a LAPACK query at compile
time, so every pointer stays inside its buffer.

Complex matrices (complex64/complex128) call the c/z routines on NumPy's interleaved
(re, im) layout: `lower-complex` leaves these operands complex, so a kernel's buffers
hold pairs of floats; offsets count complex elements, scalars (trsm's alpha) are passed
by pointer as the complex CBLAS functions take them.

Layouts: LAPACKE's row-major entry points take jitgrad's row-major buffers as they are
(transposing internally where the routine needs it, O(n^2) against the O(n^3)
factorization); two kernels avoid that copy: Cholesky calls potrf in column-major layout
on the upper triangle, which is the row-major lower triangle, and the triangular solve
calls CBLAS trsm, which is row-major natively.
"""
from __future__ import annotations

import ctypes
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
_LETTERS = {DType.f32: "s", DType.f64: "d", DType.c64: "c", DType.c128: "z"}

# argument kinds of the entry points: "layout"/"flag" are C ints, "char" a C char,
# "int" a 64-bit lapack_int, "ptr" a pointer, "scalar" the element type. The LAPACKE
# routines are the `_work` variants: the others first scan their input for NaN and
# refuse it (info < 0), where NumPy, which calls LAPACK itself, runs the factorization
# and returns what it computes (NaN where NaN spreads, inf where a value overflows).
_SIGNATURES = {
    "potrf_work": ("LAPACKE", ["layout", "char", "int", "ptr", "int"]),
    "getrf_work": ("LAPACKE", ["layout", "int", "int", "ptr", "int", "ptr"]),
    "getrs_work": ("LAPACKE", ["layout", "char", "int", "int", "ptr", "int", "ptr", "ptr", "int"]),
    "syevd_work": ("LAPACKE", ["layout", "char", "char", "int", "ptr", "int", "ptr", "ptr", "int", "ptr", "int"]),
    "heevd_work": ("LAPACKE", ["layout", "char", "char", "int", "ptr", "int", "ptr", "ptr", "int", "ptr", "int",
                               "ptr", "int"]),
    "gesdd_work": ("LAPACKE", ["layout", "char", "int", "int", "ptr", "int", "ptr", "ptr", "int", "ptr", "int",
                               "ptr", "int", "ptr"]),
    "gesdd_work_complex": ("LAPACKE", ["layout", "char", "int", "int", "ptr", "int", "ptr", "ptr", "int", "ptr", "int",
                                       "ptr", "int", "ptr", "ptr"]),
    "geev_work": ("LAPACKE", ["layout", "char", "char", "int", "ptr", "int", "ptr", "ptr", "ptr", "int", "ptr", "int",
                              "ptr", "int"]),
    "geev_work_complex": ("LAPACKE", ["layout", "char", "char", "int", "ptr", "int", "ptr", "ptr", "int", "ptr",
                                      "int", "ptr", "int", "ptr"]),
    "geqrf_work": ("LAPACKE", ["layout", "int", "int", "ptr", "int", "ptr", "ptr", "int"]),
    "orgqr_work": ("LAPACKE", ["layout", "int", "int", "int", "ptr", "int", "ptr", "ptr", "int"]),
    "ungqr_work": ("LAPACKE", ["layout", "int", "int", "int", "ptr", "int", "ptr", "ptr", "int"]),
    "trsm": ("cblas", ["layout", "flag", "flag", "flag", "flag", "int", "int", "scalar", "ptr", "int", "ptr",
                       "int"]),
}
_CTYPES = {"layout": ctypes.c_int, "flag": ctypes.c_int, "char": ctypes.c_char, "int": ctypes.c_int64,
           "ptr": ctypes.c_void_p}


def symbol_name(routine: str, dtype: DType) -> str:
    """The entry point's symbol; a `_complex` suffix names the complex routine's signature
    (an extra real workspace) under the routine's own name."""
    family, _ = _SIGNATURES[routine]
    return f"scipy_{family}_{_LETTERS[dtype]}{routine.removesuffix('_complex')}64_"


class _Kernel:
    """What every LAPACK kernel needs: the builder, typed pointers, calls, NaN fills."""

    def __init__(self, ec, op):
        if ec.blas is None:
            raise UnsupportedOperationError(
                f"{op.name} needs LAPACK, and no OpenBLAS with LAPACK was found next to NumPy", op.loc)
        self.ec, self.op, self.b = ec, op, ec.builder
        self.dtype = op.operands[0].type.dtype
        self.complex = self.dtype.is_complex
        self.t = memory_type(self.dtype.real_dtype)
        """The type of one float: an element, or one part of a complex element."""
        self.parts = 2 if self.complex else 1
        self.item = (8 if self.dtype.real_dtype == DType.f64 else 4) * self.parts

    def routine(self, name: str) -> ir.Function:
        symbol = symbol_name(name, self.dtype)
        if not llvm.address_of_symbol(symbol):
            raise UnsupportedOperationError(f"{self.op.name}: the OpenBLAS library has no {symbol}", self.op.loc)
        family, kinds = _SIGNATURES[name]
        types = {"layout": I32, "flag": I32, "char": I8, "int": I64, "ptr": PTR,
                 "scalar": PTR if self.complex else self.t}
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
            elif kind == "scalar" and self.complex:      # complex CBLAS scalars are passed by pointer
                slot = alloca_in_entry(self.b, ir.ArrayType(self.t, 2), "lapack.scalar")
                value = complex(a)
                self.b.store(ir.Constant(ir.ArrayType(self.t, 2), [value.real, value.imag]), slot)
                converted.append(slot)
            elif kind == "scalar":
                converted.append(ir.Constant(self.t, a))
            else:
                converted.append(index(a))
        return self.b.call(fn, converted)

    def workspace(self, name: str, *args, work: int, iwork: int | None = None,
                  rwork: int | None = None) -> tuple[int, ...]:
        """The optimal lengths of routine `name`'s `work` (and `iwork`) arrays for these static
        sizes, asked of LAPACK once at compile time: a query (lwork = -1) reads no matrix, so
        every pointer argument (given as None) is a small dummy, and `work`/`iwork` say which
        arguments' first elements receive the answers (`rwork`: the real workspace of a
        complex routine, whose length is then returned third). The workspace is then static
        scratch."""
        self.routine(name)                   # present in the library, else a clear error
        _, kinds = _SIGNATURES[name]
        element = ctypes.c_double if self.dtype.real_dtype == DType.f64 else ctypes.c_float
        dummies, converted = {}, []
        for position, (a, kind) in enumerate(zip(args, kinds, strict=True)):
            if kind == "ptr":
                dummies[position] = (ctypes.c_int64 * 8)() if position == iwork else (element * 16)()
                converted.append(ctypes.cast(dummies[position], ctypes.c_void_p))
            elif kind == "char":
                converted.append(a.encode())
            else:
                converted.append(a)
        address = llvm.address_of_symbol(symbol_name(name, self.dtype))
        query = ctypes.CFUNCTYPE(ctypes.c_int64, *(_CTYPES[kind] for kind in kinds))(address)
        info = query(*converted)
        if info != 0:
            raise UnsupportedOperationError(f"{self.op.name}: LAPACK's workspace query of {name} failed "
                                            f"(info {info})", self.op.loc)
        # a float32 answer may have been rounded down: a little more is always allowed
        def length(position):
            return max(1, math.ceil(float(dummies[position][0]) * (1 + 2.0 ** -20)))
        integers = max(1, int(dummies[iwork][0])) if iwork is not None else 0
        return (length(work), integers) if rwork is None else (length(work), integers, length(rwork))

    def at(self, base, offset) -> ir.Value:
        """Pointer to element `offset` (an int or i64) of the buffer at `base` (a complex
        element is two floats)."""
        offset = index(offset) if isinstance(offset, int) else offset
        if self.complex:
            offset = self.b.mul(offset, index(2))
        return self.b.gep(base, [offset], inbounds=True, source_etype=self.t)

    def part(self, pointer, k: int) -> ir.Value:
        """Pointer to float k of the element at `pointer` (0: real part, 1: imaginary)."""
        return self.b.gep(pointer, [index(k)], inbounds=True, source_etype=self.t) if k else pointer

    def batch(self):
        return for_range(self.b, math.prod(self.op.operands[0].type.shape[:-2]), "lapack.batch")

    def offset(self, i, count: int) -> ir.Value:
        return self.b.mul(i, index(count))

    def copy(self, dst, src, count: int) -> None:
        if count:
            self.ec.memcpy(dst, src, count * self.item)

    def fill(self, dst, count: int, value: float) -> None:
        """`value` in every float of `count` elements (both parts of complex ones)."""
        with for_range(self.b, count * self.parts, "lapack.fill") as k:
            self.b.store(ir.Constant(self.t, value), self.b.gep(dst, [k], inbounds=True, source_etype=self.t))

    def failed(self, info) -> ir.Value:
        return self.b.icmp_signed("!=", info, index(0))

    def nan_if(self, condition, dst, count: int) -> None:
        with self.b.if_then(condition, likely=False):
            self.fill(dst, count, math.nan)

    def finite(self, base, count: int) -> ir.Value:
        """An i1: all `count` elements at `base` are finite (x - x is 0 for them, NaN for inf and NaN)."""
        bit = ir.IntType(1)
        slot = alloca_in_entry(self.b, bit, "lapack.finite")
        self.b.store(ir.Constant(bit, 1), slot)
        with for_range(self.b, count * self.parts, "lapack.finite") as j:
            x = self.b.load(self.b.gep(base, [j], inbounds=True, source_etype=self.t), typ=self.t)
            ok = self.b.fcmp_ordered("==", self.b.fsub(x, x), ir.Constant(self.t, 0.0))
            self.b.store(self.b.and_(self.b.load(slot, typ=bit), ok), slot)
        return self.b.load(slot, typ=bit)

    def store_zero(self, pointer) -> None:
        """0 (0 + 0i) in the element at `pointer`."""
        for k in range(self.parts):
            self.b.store(ir.Constant(self.t, 0.0), self.part(pointer, k))

    def call_if(self, condition, name: str, *args) -> ir.Value:
        """The routine's info where `condition` holds; else -1, a failure, without calling it."""
        slot = alloca_in_entry(self.b, I64, "lapack.info")
        self.b.store(index(-1), slot)
        with self.b.if_then(condition):
            self.b.store(self.call(name, *args), slot)
        return self.b.load(slot, typ=I64)

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
        info = k.call("potrf_work", COL_MAJOR, "U", n, matrix, n)
        with for_range(k.b, n, "chol.row") as r:            # zero above the diagonal
            row = k.b.mul(r, index(n))
            with for_range(k.b, k.b.sub(index(n - 1), r), "chol.col") as c:
                column = k.b.add(k.b.add(r, index(1)), c)
                k.store_zero(k.at(matrix, k.b.add(row, column)))
        k.nan_if(k.failed(info), matrix, n * n)


def _lu_solve(k: _Kernel, lu, pivots, x, n: int, cols: int, trans: str) -> None:
    """getrf on the n x n matrix at `lu` (overwritten), then getrs on the n x cols right-hand
    side at `x` (overwritten with the solution); NaN in `x` where either reports failure."""
    info = k.call("getrf_work", ROW_MAJOR, n, n, lu, n, pivots)
    with k.b.if_else(k.failed(info)) as (then, otherwise):
        with then:
            k.fill(x, n * cols, math.nan)
        with otherwise:
            solved = k.call("getrs_work", ROW_MAJOR, trans, n, cols, lu, n, pivots, x, cols)
            k.nan_if(k.failed(solved), x, n * cols)


def _triangular_solve(k: _Kernel) -> None:
    """trsm on a copy of B while the triangle is finite with no zero on its diagonal.
    Otherwise (NaN or inf in the triangle, or an exactly singular one) the route NumPy's
    solve takes, LU with partial pivoting of op(T) written out in full (zeros outside the
    triangle): substitution and elimination spread non-finite values differently, and a
    solve of a Cholesky factor must give NumPy's NaN and inf where NumPy's solve does."""
    a, rhs = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    n, cols = rhs.type.shape[-2:]
    lower, transpose = k.op.attrs["lower"], k.op.attrs["transpose_a"]
    a_ptr, b_ptr, b = k.ec.pointer(a), k.ec.pointer(rhs), k.b
    lu, pivots = k.scratch(n * n), k.scratch(n, 8)
    zero = ir.Constant(k.t, 0.0)
    bit = ir.IntType(1)
    irregular_slot = alloca_in_entry(b, bit, "trsm.irregular")
    with k.batch() as i:
        matrix = k.at(a_ptr, k.offset(i, n * n))
        x = k.at(out, k.offset(i, n * cols))
        k.copy(x, k.at(b_ptr, k.offset(i, n * cols)), n * cols)
        b.store(ir.Constant(bit, 0), irregular_slot)
        with for_range(b, n, "trsm.row") as r:          # lu = op(T) in full, flagging what trsm can't take
            with for_range(b, n, "trsm.col") as c:
                row, col = (c, r) if transpose else (r, c)
                in_triangle = b.icmp_signed("<=" if lower else ">=", col, row)
                source = k.at(matrix, b.add(b.mul(row, index(n)), col))
                target = k.at(lu, b.add(b.mul(r, index(n)), c))
                not_finite, is_zero = ir.Constant(bit, 0), ir.Constant(bit, 1)
                for part in range(k.parts):             # each float of the element
                    value = b.select(in_triangle, b.load(k.part(source, part), typ=k.t), zero)
                    not_finite = b.or_(not_finite, b.fcmp_unordered("uno", b.fsub(value, value), zero))
                    is_zero = b.and_(is_zero, b.fcmp_ordered("==", value, zero))
                    b.store(value, k.part(target, part))
                zero_pivot = b.and_(b.icmp_signed("==", r, c), is_zero)
                irregular = b.or_(b.load(irregular_slot, typ=bit), b.or_(not_finite, zero_pivot))
                b.store(irregular, irregular_slot)
        with b.if_else(b.load(irregular_slot, typ=bit)) as (then, otherwise):
            with then:
                _lu_solve(k, lu, pivots, x, n, cols, "N")
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
        _lu_solve(k, lu, pivots, x, n, cols, trans)


def _slogdet(k: _Kernel) -> None:
    """NumPy's slogdet from getrf's factors: the pivots' parity, then the diagonal's signs
    and the sum of its logs in order; an exactly singular matrix gives (0, -inf)."""
    if k.complex:
        _complex_slogdet(k)
        return
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
        info = k.call("getrf_work", ROW_MAJOR, n, n, lu, n, pivots)
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


def _complex_slogdet(k: _Kernel) -> None:
    """NumPy's complex slogdet from getrf's factors: the sign starts as the pivots' parity
    and is multiplied by each diagonal element over its modulus (hypot, NumPy's npy_cabs),
    log|det| sums the moduli's logs in order; an exactly singular matrix gives (0, -inf).
    The result is [sign, log|det| + 0i]."""
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    n = a.type.shape[-1]
    lu, pivots = k.scratch(n * n), k.scratch(n, 8)
    a_ptr, b, t = k.ec.pointer(a), k.b, k.t
    suffix = "f64" if t == F64 else "f32"
    log = declare(k.ec.module, f"llvm.log.{suffix}", t, [t])
    hypot = declare(k.ec.module, "hypot" if t == F64 else "hypotf", t, [t, t])
    one, zero = ir.Constant(t, 1.0), ir.Constant(t, 0.0)
    sign_re, sign_im = alloca_in_entry(b, t, "slogdet.sign.re"), alloca_in_entry(b, t, "slogdet.sign.im")
    log_slot = alloca_in_entry(b, t, "slogdet.log")

    def write(result, s_re, s_im, logdet):
        sign, logabs = result, k.at(result, 1)
        for pointer, value in ((k.part(sign, 0), s_re), (k.part(sign, 1), s_im), (k.part(logabs, 0), logdet),
                               (k.part(logabs, 1), zero)):
            b.store(value, pointer)
    if n == 0:                                   # the empty matrix: det 1, as NumPy
        with k.batch() as i:
            write(k.at(out, k.offset(i, 2)), one, zero, zero)
        return
    with k.batch() as i:
        result = k.at(out, k.offset(i, 2))
        k.copy(lu, k.at(a_ptr, k.offset(i, n * n)), n * n)
        info = k.call("getrf_work", ROW_MAJOR, n, n, lu, n, pivots)
        with b.if_else(b.icmp_signed(">", info, index(0))) as (singular, other):
            with singular:
                write(result, zero, zero, ir.Constant(t, -math.inf))
            with other:
                b.store(one, sign_re)
                b.store(zero, sign_im)
                b.store(zero, log_slot)
                with for_range(b, n, "slogdet.pivot") as p:
                    pivot = b.load(b.gep(pivots, [p], inbounds=True, source_etype=I64), typ=I64)
                    swapped = b.icmp_signed("!=", pivot, b.add(p, index(1)))
                    sign = b.load(sign_re, typ=t)
                    b.store(b.select(swapped, b.fneg(sign), sign), sign_re)
                with for_range(b, n, "slogdet.diag") as d:
                    element = k.at(lu, b.mul(d, index(n + 1)))
                    re, im = b.load(k.part(element, 0), typ=t), b.load(k.part(element, 1), typ=t)
                    modulus = b.call(hypot, [re, im])
                    unit_re, unit_im = b.fdiv(re, modulus), b.fdiv(im, modulus)
                    s_re, s_im = b.load(sign_re, typ=t), b.load(sign_im, typ=t)
                    b.store(b.fsub(b.fmul(s_re, unit_re), b.fmul(s_im, unit_im)), sign_re)
                    b.store(b.fadd(b.fmul(s_re, unit_im), b.fmul(s_im, unit_re)), sign_im)
                    b.store(b.fadd(b.load(log_slot, typ=t), b.call(log, [modulus])), log_slot)
                write(result, b.load(sign_re, typ=t), b.load(sign_im, typ=t), b.load(log_slot, typ=t))
                k.nan_if(b.icmp_signed("<", info, index(0)), result, 2)


def _eigh(k: _Kernel) -> None:
    """syevd on the lower (upper) triangle; with vectors they overwrite rows 1..n of the result."""
    if k.complex:
        _complex_eigh(k)
        return
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    n = a.type.shape[-1]
    vectors = k.op.attrs["vectors"]
    per_result = (n + 1) * n if vectors else n
    copy = None if vectors else k.scratch(n * n)
    jobz, uplo = "V" if vectors else "N", "L" if k.op.attrs["lower"] else "U"
    lwork, liwork = k.workspace("syevd_work", ROW_MAJOR, jobz, uplo, n, None, n, None, None, -1, None, -1,
                                work=7, iwork=9)
    work, iwork = k.scratch(lwork), k.scratch(liwork, 8)
    a_ptr = k.ec.pointer(a)
    with k.batch() as i:
        result = k.at(out, k.offset(i, per_result))
        matrix = k.at(result, n) if vectors else copy
        k.copy(matrix, k.at(a_ptr, k.offset(i, n * n)), n * n)
        info = k.call("syevd_work", ROW_MAJOR, jobz, uplo, n, matrix, n, result, work, lwork, iwork, liwork)
        k.nan_if(k.failed(info), result, per_result)


def _complex_eigh(k: _Kernel) -> None:
    """heevd on the lower (upper) triangle of the Hermitian matrix: its real eigenvalues
    land in real scratch and are written as w + 0i (row 0 with vectors), the vectors
    overwrite rows 1..n of the result."""
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    n = a.type.shape[-1]
    vectors = k.op.attrs["vectors"]
    per_result = (n + 1) * n if vectors else n
    copy = None if vectors else k.scratch(n * n)
    jobz, uplo = "V" if vectors else "N", "L" if k.op.attrs["lower"] else "U"
    lwork, liwork, lrwork = k.workspace("heevd_work", ROW_MAJOR, jobz, uplo, n, None, n, None, None, -1, None, -1,
                                        None, -1, work=7, iwork=11, rwork=9)
    real_item = k.item // 2
    work, rwork, iwork = k.scratch(lwork), k.scratch(lrwork, real_item), k.scratch(liwork, 8)
    w = k.scratch(n, real_item)
    a_ptr, b = k.ec.pointer(a), k.b
    with k.batch() as i:
        result = k.at(out, k.offset(i, per_result))
        matrix = k.at(result, n) if vectors else copy
        k.copy(matrix, k.at(a_ptr, k.offset(i, n * n)), n * n)
        info = k.call("heevd_work", ROW_MAJOR, jobz, uplo, n, matrix, n, w, work, lwork, rwork, lrwork, iwork,
                      liwork)
        with for_range(b, n, "heevd.w") as j:
            value = b.load(b.gep(w, [j], inbounds=True, source_etype=k.t), typ=k.t)
            element = k.at(result, j)
            b.store(value, k.part(element, 0))
            b.store(ir.Constant(k.t, 0.0), k.part(element, 1))
        k.nan_if(k.failed(info), result, per_result)


def _svd(k: _Kernel) -> None:
    """gesdd (jobz A, S or N) on a copy of A, writing U, s and V^T where they are packed.
    A matrix holding inf or NaN gives NaN without calling gesdd: on it NumPy raises
    LinAlgError, returns NaN singular values with meaningless factors, or never returns
    (gesdd's iteration does not end on a square matrix with an infinite element)."""
    if k.complex:
        _complex_svd(k)
        return
    a, out, m, n, vectors, u_cols, kk, per_result, copy, spare, jobz, ldu, ldvt = _svd_layout(k)
    lwork, _ = k.workspace("gesdd_work", ROW_MAJOR, jobz, m, n, None, n, None, None, ldu, None, ldvt, None, -1,
                           None, work=11)
    work, iwork = k.scratch(lwork), k.scratch(8 * kk, 8)
    a_ptr = k.ec.pointer(a)
    with k.batch() as i:
        result = k.at(out, k.offset(i, per_result))
        k.copy(copy, k.at(a_ptr, k.offset(i, m * n)), m * n)
        finite = k.finite(copy, m * n)
        if vectors:
            s = k.at(result, m * u_cols)
            info = k.call_if(finite, "gesdd_work", ROW_MAJOR, jobz, m, n, copy, n, s, result, ldu, k.at(s, kk), ldvt,
                          work, lwork, iwork)
        else:
            info = k.call_if(finite, "gesdd_work", ROW_MAJOR, jobz, m, n, copy, n, result, spare, ldu, spare, ldvt,
                          work, lwork, iwork)
        k.nan_if(k.failed(info), result, per_result)


def _svd_layout(k: _Kernel) -> tuple:
    """What the real and complex gesdd kernels share: the operand and result pointer, the
    matrix order, the factor shapes and leading dimensions, the per-matrix result size,
    the scratch copy of A and jobz."""
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    m, n = a.type.shape[-2:]
    full, vectors = k.op.attrs["full_matrices"], k.op.attrs["vectors"]
    (_, u_cols), kk, (vt_rows, _) = svd_shapes(m, n, full)
    per_result = m * u_cols + kk + vt_rows * n if vectors else kk
    copy, spare = k.scratch(m * n), k.scratch(1)
    jobz = ("A" if full else "S") if vectors else "N"
    ldu, ldvt = (u_cols, n) if vectors else (1, 1)
    return a, out, m, n, vectors, u_cols, kk, per_result, copy, spare, jobz, ldu, ldvt


def _complex_svd(k: _Kernel) -> None:
    """The complex gesdd: as `_svd`, with the real singular values written as s + 0i and
    the real workspace sized by LAPACK's documented bound (it has no query)."""
    a, out, m, n, vectors, u_cols, kk, per_result, copy, spare, jobz, ldu, ldvt = _svd_layout(k)
    lwork, _ = k.workspace("gesdd_work_complex", ROW_MAJOR, jobz, m, n, None, n, None, None, ldu, None, ldvt, None,
                           -1, None, None, work=11)
    big = max(m, n)
    lrwork = max(7 * kk, 5 * kk * kk + 5 * kk, 2 * big * kk + 2 * kk * kk + kk)
    real_item = k.item // 2
    work, rwork, iwork = k.scratch(lwork), k.scratch(lrwork, real_item), k.scratch(8 * kk, 8)
    s = k.scratch(kk, real_item)
    a_ptr, b = k.ec.pointer(a), k.b
    with k.batch() as i:
        result = k.at(out, k.offset(i, per_result))
        k.copy(copy, k.at(a_ptr, k.offset(i, m * n)), m * n)
        finite = k.finite(copy, m * n)
        if vectors:
            s_out = k.at(result, m * u_cols)
            info = k.call_if(finite, "gesdd_work_complex", ROW_MAJOR, jobz, m, n, copy, n, s, result, ldu,
                             k.at(s_out, kk), ldvt, work, lwork, rwork, iwork)
        else:
            s_out = result
            info = k.call_if(finite, "gesdd_work_complex", ROW_MAJOR, jobz, m, n, copy, n, s, spare, ldu, spare,
                             ldvt, work, lwork, rwork, iwork)
        with for_range(b, kk, "gesdd.s") as j:
            element = k.at(s_out, j)
            b.store(b.load(b.gep(s, [j], inbounds=True, source_etype=k.t), typ=k.t), k.part(element, 0))
            b.store(ir.Constant(k.t, 0.0), k.part(element, 1))
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
    lwork_geqrf, _ = k.workspace("geqrf_work", ROW_MAJOR, m, n, None, c, None, None, -1, work=6)
    form_q = "ungqr_work" if k.complex else "orgqr_work"       # the complex routine's name
    lwork_orgqr, _ = k.workspace(form_q, ROW_MAJOR, m, q_cols, kk, None, c, None, None, -1, work=7)
    lwork = max(lwork_geqrf, lwork_orgqr)
    workspace = k.scratch(lwork)
    a_ptr, b = k.ec.pointer(a), k.b
    with k.batch() as i:
        result = k.at(out, k.offset(i, per_result))
        r_out = k.at(result, m * q_cols)
        source = k.at(a_ptr, k.offset(i, m * n))
        if c > n:           # columns orgqr reads beyond A's: zero, never stale scratch
            k.ec.memset_zero(work, m * c * k.item)
        with for_range(b, m, "qr.copy") as row:
            k.copy(k.at(work, b.mul(row, index(c))), k.at(source, b.mul(row, index(n))), n)
        info = k.call("geqrf_work", ROW_MAJOR, m, n, work, c, tau, workspace, lwork)
        with for_range(b, r_rows, "qr.r.row") as row:
            with for_range(b, n, "qr.r.col") as col:
                keep = b.and_(b.icmp_signed("<", row, index(kk)), b.icmp_signed(">=", col, row))
                source = k.at(work, b.add(b.mul(row, index(c)), col))
                target = k.at(r_out, b.add(b.mul(row, index(n)), col))
                for part in range(k.parts):
                    value = b.load(k.part(source, part), typ=k.t)
                    b.store(b.select(keep, value, ir.Constant(k.t, 0.0)), k.part(target, part))
        formed = k.call(form_q, ROW_MAJOR, m, q_cols, kk, work, c, tau, workspace, lwork)
        with for_range(b, m, "qr.q") as row:
            k.copy(k.at(result, b.mul(row, index(q_cols))), k.at(work, b.mul(row, index(c))), q_cols)
        k.nan_if(b.or_(k.failed(info), k.failed(formed)), result, per_result)


def _as_f64(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return x if x.type == F64 else b.fpext(x, F64)


def _pinv(k: _Kernel) -> None:
    """NumPy's pinv: gesdd (jobz S) on a copy of A, 1/s where s > rcond * max(s) (0 else)
    scaling the rows of U^T, then V (k x n)^T times that with GEMM. NaN for a matrix
    holding inf or NaN, as `_svd`."""
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    m, n = a.type.shape[-2:]
    kk = min(m, n)
    gemm = k.ec.blas.gemm(k.ec.module, k.dtype)
    work, u, s, vt, scaled = k.scratch(m * n), k.scratch(m * kk), k.scratch(kk), k.scratch(kk * n), k.scratch(kk * m)
    lwork, _ = k.workspace("gesdd_work", ROW_MAJOR, "S", m, n, None, n, None, None, kk, None, n, None, -1, None,
                           work=11)
    workspace, iwork = k.scratch(lwork), k.scratch(8 * kk, 8)
    a_ptr, b = k.ec.pointer(a), k.b
    zero, one = ir.Constant(k.t, 0.0), ir.Constant(k.t, 1.0)
    largest_slot = alloca_in_entry(b, k.t, "pinv.largest")
    with k.batch() as i:
        result = k.at(out, k.offset(i, n * m))
        k.copy(work, k.at(a_ptr, k.offset(i, m * n)), m * n)
        info = k.call_if(k.finite(work, m * n), "gesdd_work", ROW_MAJOR, "S", m, n, work, n, s, u, kk, vt, n,
                         workspace, lwork, iwork)
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


def _eig(k: _Kernel) -> None:
    """geev as NumPy calls it (right eigenvectors only, no balancing option, the
    eigenvalues in LAPACK's order) into the complex result: eigenvalues, then with vectors
    the n x n eigenvector matrix below them. A real matrix goes through the real routine,
    whose conjugate pairs (w_j = wr_j +- i wi_j, columns re, im) are expanded as NumPy
    expands them: v_j = re + i im, v_j+1 = re - i im. A matrix holding inf or NaN gives
    NaN without calling geev (NumPy raises LinAlgError for it)."""
    (a,) = k.op.operands
    out = k.ec.pointer(k.op.results[0])
    n = a.type.shape[-1]
    vectors = k.op.attrs["vectors"]
    real_input = not k.complex
    part_item = k.item if real_input else k.item // 2
    element = _Kernel(k.ec, k.op)                 # addressing of the complex result
    element.complex, element.parts = True, 2
    per_result = (n + 1) * n if vectors else n
    jobvr, ldvr = ("V", n) if vectors else ("N", 1)
    copy, spare = k.scratch(n * n), k.scratch(1)
    a_ptr, b = k.ec.pointer(a), k.b
    zero = ir.Constant(k.t, 0.0)
    if real_input:
        lwork, _ = k.workspace("geev_work", ROW_MAJOR, "N", jobvr, n, None, n, None, None, None, 1, None, ldvr,
                               None, -1, work=12)
        work, wr, wi = k.scratch(lwork), k.scratch(n), k.scratch(n)
        vr = k.scratch(n * n) if vectors else spare
    else:
        lwork, _ = k.workspace("geev_work_complex", ROW_MAJOR, "N", jobvr, n, None, n, None, None, 1, None, ldvr,
                               None, -1, None, work=11)
        work, rwork = k.scratch(lwork), k.scratch(2 * n, part_item)

    def load(base, offset):
        return b.load(k.at(base, offset), typ=k.t)

    def store(base, offset, re, im):
        target = element.at(base, offset)
        b.store(re, element.part(target, 0))
        b.store(im, element.part(target, 1))
    with k.batch() as i:
        result = element.at(out, k.offset(i, per_result))
        k.copy(copy, k.at(a_ptr, k.offset(i, n * n)), n * n)
        finite = k.finite(copy, n * n)
        if not real_input:
            info = k.call_if(finite, "geev_work_complex", ROW_MAJOR, "N", jobvr, n, copy, n, result, spare, 1,
                             element.at(result, n) if vectors else spare, ldvr, work, lwork, rwork)
        else:
            info = k.call_if(finite, "geev_work", ROW_MAJOR, "N", jobvr, n, copy, n, wr, wi, spare, 1, vr, ldvr,
                             work, lwork)
            with for_range(b, n, "geev.w") as j:
                store(result, j, load(wr, j), load(wi, j))
            if vectors:
                with for_range(b, n, "geev.col") as col:
                    imaginary = load(wi, col)
                    first_of_pair = b.fcmp_ordered(">", imaginary, zero)
                    second_of_pair = b.fcmp_ordered("<", imaginary, zero)
                    previous = b.select(second_of_pair, b.sub(col, index(1)), col)
                    following = b.select(first_of_pair, b.add(col, index(1)), col)
                    with for_range(b, n, "geev.row") as row:
                        start = b.mul(row, index(n))
                        re = load(vr, b.add(start, previous))
                        im_column = load(vr, b.add(start, following))
                        im = b.select(first_of_pair, im_column, b.select(second_of_pair, b.fneg(im_column), zero))
                        store(result, b.add(index(n), b.add(start, col)), re, im)
        element.nan_if(k.failed(info), result, per_result)


_KERNELS = {"eig": _eig, "pinv": _pinv, "cholesky": _cholesky, "triangular_solve": _triangular_solve, "solve": _solve,
            "slogdet": _slogdet, "eigh": _eigh, "svd": _svd, "qr": _qr}


def emit(ec, op) -> None:
    """The CPU kernel of one LAPACK primitive (KernelKind emitter)."""
    if any(r.type.size == 0 for r in op.results):
        return
    _KERNELS[op.name](_Kernel(ec, op))
