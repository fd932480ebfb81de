"""BLAS for the CPU backend: the OpenBLAS that NumPy's wheels ship (ILP64, `scipy_` prefix).

Contractions call the same routine NumPy's `matmul` and `dot` call for the same shape —
level 1 (dot) for vector·vector, level 2 (gemv) for matrix·vector either way, level 3
(gemm) otherwise — with the same arguments, so results agree with NumPy bit for bit
where the routine and its transposition flags agree. Without this library the code
generator uses its own loop kernels.
"""
from __future__ import annotations

import glob
import os

import llvmlite.binding as llvm
from llvmlite import ir

from jitgrad.ir import DType
from .llvm_support import F32, F64, I32, I64, PTR, VOID, declare

CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112

_ROUTINES = {
    "gemm": {DType.f64: "scipy_cblas_dgemm64_", DType.f32: "scipy_cblas_sgemm64_"},
    "gemv": {DType.f64: "scipy_cblas_dgemv64_", DType.f32: "scipy_cblas_sgemv64_"},
    "dot": {DType.f64: "scipy_cblas_ddot64_", DType.f32: "scipy_cblas_sdot64_"},
}
_THREAD_CONTROL = ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_")


def library_candidates() -> list[str]:
    import numpy
    root = os.path.dirname(os.path.dirname(numpy.__file__))
    return (glob.glob(os.path.join(root, "numpy.libs", "libscipy_openblas64_*.so*"))
            + glob.glob(os.path.join(root, "scipy_openblas64", "lib", "libscipy_openblas64_*.so*")))


class Blas:
    """Declarations of the CBLAS routines the code generator calls (each returns None for
    a dtype BLAS does not serve: integers, float16 and bfloat16 use loop kernels)."""

    symbols: dict[DType, str] = {}                 # gemm, kept for kernel kinds that read it
    routines: dict[str, dict[DType, str]] = {}
    thread_control: tuple[str, str] | None = None

    @classmethod
    def load(cls) -> None:
        for path in library_candidates():
            try:
                llvm.load_library_permanently(path)
            except RuntimeError:
                continue
            found = {name: table for name, table in _ROUTINES.items()
                     if all(llvm.address_of_symbol(s) for s in table.values())}
            if "gemm" in found:
                cls.routines, cls.symbols = found, found["gemm"]
                if all(llvm.address_of_symbol(s) for s in _THREAD_CONTROL):
                    cls.thread_control = _THREAD_CONTROL
                return

    @classmethod
    def instance(cls) -> "Blas | None":
        return cls() if cls.symbols else None

    def serves(self, dtype: DType) -> bool:
        """Whether BLAS computes products of `dtype` (float32 and float64)."""
        return self._symbol("gemm", dtype) is not None

    def _symbol(self, routine: str, dtype: DType) -> str | None:
        return self.routines.get(routine, {}).get(dtype)

    def gemm(self, module: ir.Module, dtype: DType):
        """cblas_?gemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)."""
        symbol = self._symbol("gemm", dtype)
        if symbol is None:
            return None
        t = F64 if dtype == DType.f64 else F32
        return declare(module, symbol, VOID, [I32, I32, I32, I64, I64, I64, t, PTR, I64, PTR, I64, t, PTR, I64])

    def gemv(self, module: ir.Module, dtype: DType):
        """cblas_?gemv(order, trans, m, n, alpha, a, lda, x, incx, beta, y, incy)."""
        symbol = self._symbol("gemv", dtype)
        if symbol is None:
            return None
        t = F64 if dtype == DType.f64 else F32
        return declare(module, symbol, VOID, [I32, I32, I64, I64, t, PTR, I64, PTR, I64, t, PTR, I64])

    def dot(self, module: ir.Module, dtype: DType):
        """cblas_?dot(n, x, incx, y, incy) -> the sum in the dtype."""
        symbol = self._symbol("dot", dtype)
        if symbol is None:
            return None
        t = F64 if dtype == DType.f64 else F32
        return declare(module, symbol, t, [I64, PTR, I64, PTR, I64])
