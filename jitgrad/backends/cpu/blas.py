"""BLAS for the CPU backend: the OpenBLAS that NumPy's wheels ship (ILP64, `scipy_` prefix),
and how jitgrad's loop threads (libgomp) share the cores with BLAS's own threads.

Contractions call the same routine NumPy's `matmul` and `dot` call for the same shape —
level 1 (dot) for vector·vector, level 2 (gemv) for matrix·vector either way, level 3
(gemm) otherwise — with the same arguments, so results agree with NumPy bit for bit
where the routine and its transposition flags agree. Without this library the code
generator uses its own loop kernels.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os

import llvmlite.binding as llvm
from llvmlite import ir

from jitgrad.config import config
from jitgrad.ir import DType
from .bf16_gemm import host_has_native_bf16
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

    def __init__(self):
        self.native_bf16 = config.native_bf16 and host_has_native_bf16()
        """Whether products of bfloat16 operands use bf16_gemm.py's vdpbf16ps kernel. The
        library describes this host: the JIT, and AOT artifacts built for the host (which
        require every CPU flag of the host), use it; portable AOT targets pass no Blas."""

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


# --------------------------------------------------------------------------- threads beside BLAS

GOMP_SPIN_BESIDE_BLAS = 0
"""Busy-wait iterations of an idle libgomp worker before it sleeps. libgomp's default
(300,000, about a millisecond) keeps a worker spinning on a core after every parallel
loop, and OpenBLAS's threads, starting the next matrix product, then get half a core each
(products ran up to 40x slower on 2 cores). Sleeping at once costs a parallel region a
few microseconds more to wake its workers; regions start at 2^20 element-ops
(`codegen.PARALLEL_MIN_WORK`), hundreds of microseconds of work. Measured on 2 loaded
cores, an MLP gradient with threads beside BLAS: libgomp's default spinning took 2x the
wall and CPU time of one thread; sleeping workers matched one thread's time exactly."""

GOMP_SPIN_BESIDE_BLAS_LIMIT = 10_000
"""The largest spin count (the user's, or ours) under which loops run on threads in
programs calling BLAS (10,000 iterations: tens of microseconds)."""


def _already_loaded(name: str) -> bool:
    try:
        ctypes.CDLL(name, mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
    except OSError:
        return False
    return True


def _spin_bound_by_environment() -> int | None:
    """The spin count the user's environment gives libgomp, None when it sets none."""
    if "GOMP_SPINCOUNT" in os.environ:
        text = os.environ["GOMP_SPINCOUNT"].strip().lower()
        if text == "infinite" or text == "infinity":
            return 1 << 62
        try:
            value = int(text.rstrip("kmgt") or "0")
        except ValueError:
            return 1 << 62
        return value * {"k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12}.get(text[-1:], 1)
    policy = os.environ.get("OMP_WAIT_POLICY", "").strip().lower()
    if policy == "passive":
        return 0
    if policy == "active":
        return 1 << 62
    return None


@contextlib.contextmanager
def sleeping_gomp_workers(library: str):
    """Load libgomp (`library`, inside the block) with workers that sleep when idle, so
    that jitgrad's parallel loops may run in programs that call BLAS. libgomp reads its
    wait policy from the environment once, when it is loaded: the spin count is set for
    that moment only (the environment is restored, so libraries loaded later, such as
    another copy of libgomp, keep their defaults). Yields a namespace whose
    `beside_blas` says, after the block, whether the policy holds: not when libgomp was
    already loaded by someone else, nor when the user's environment asks for spinning."""
    outcome = type("Outcome", (), {"beside_blas": False})()
    if _already_loaded(library):
        yield outcome
        return
    bound = _spin_bound_by_environment()
    saved = os.environ.get("GOMP_SPINCOUNT")
    if bound is None:
        os.environ["GOMP_SPINCOUNT"] = str(GOMP_SPIN_BESIDE_BLAS)
    try:
        yield outcome
    finally:
        if bound is None:
            if saved is None:
                os.environ.pop("GOMP_SPINCOUNT", None)
            else:
                os.environ["GOMP_SPINCOUNT"] = saved
    outcome.beside_blas = (bound if bound is not None else GOMP_SPIN_BESIDE_BLAS) <= GOMP_SPIN_BESIDE_BLAS_LIMIT

