"""From an LLVM module of launch functions to PTX, and checks of PTX without a GPU.

One module per compiled function: linked with libdevice (when it calls any), every
function but the kernels internalized (so that LLVM drops the hundreds of unused
libdevice functions before optimizing: 7x faster), optimized at O3 with the NVPTX
target machine (which runs NVVMReflect for libdevice's `__nvvm_reflect` queries), and
emitted as PTX for each configured architecture.

Checks: `ptxas_check` assembles PTX with `ptxas` (on PATH, or from the nvidia-cuda-nvcc
wheel) and reports warnings (spills among them); `nvjitlink_check` links it to a cubin
with nvJitLink (`cuda.bindings.nvjitlink`), where installed.
"""
from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import tempfile
import threading

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

from jitgrad.errors import CompilationError
from .errors import PTXToolError

DEFAULT_ARCHS = ("sm_80", "sm_90")
"""The architectures PTX is emitted for unless a backend is configured otherwise."""

PTX_FEATURES = "+ptx80"
TRIPLE = "nvptx64-nvidia-cuda"
LIBDEVICE_CANDIDATES = ("/usr/local/cuda/nvvm/libdevice/libdevice.10.bc",
                        "/opt/cuda/nvvm/libdevice/libdevice.10.bc")

_init_lock = threading.Lock()
_initialized = False


def initialize() -> None:
    """Initialize LLVM's NVPTX target (llvmlite carries it; `initialize_all_targets`
    registers it)."""
    global _initialized
    with _init_lock:
        if not _initialized:
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
            _initialized = True


def nvptx_available() -> bool:
    """Whether this llvmlite build has the NVPTX target."""
    initialize()
    try:
        llvm.Target.from_triple(TRIPLE)
        return True
    except RuntimeError:
        return False


@functools.cache
def libdevice_path() -> str | None:
    """libdevice.10.bc: CUDA's toolkit directory ($CUDA_HOME too), else the nvidia-nvvm
    wheel (found by cuda.pathfinder)."""
    homes = [os.environ.get(name) for name in ("CUDA_HOME", "CUDA_PATH")]
    candidates = [os.path.join(h, "nvvm", "libdevice", "libdevice.10.bc") for h in homes if h]
    candidates += list(LIBDEVICE_CANDIDATES)
    for path in candidates:
        if os.path.isfile(path):
            return path
    try:
        from cuda import pathfinder
        found = pathfinder.find_bitcode_lib("device")
        path = getattr(found, "abs_path", found)
        if path and os.path.isfile(str(path)):
            return str(path)
    except Exception:        # not installed, or no wheel with libdevice: None below
        pass
    return None


@functools.cache
def _libdevice_bytes() -> bytes:
    path = libdevice_path()
    if path is None:
        raise CompilationError("ptx", "libdevice.10.bc not found (CUDA's nvvm/libdevice directory, $CUDA_HOME, "
                               "or pip install nvidia-nvvm): it provides the GPU's math functions")
    with open(path, "rb") as f:
        return f.read()


def target_machine(arch: str):
    initialize()
    target = llvm.Target.from_triple(TRIPLE)
    return target.create_target_machine(cpu=arch, features=PTX_FEATURES, opt=3)


def prepare_module(module: ir.Module) -> None:
    """Triple, data layout and the libdevice flush-to-zero setting (off: NumPy's
    subnormals are kept) on a module of launch functions."""
    module.triple = TRIPLE
    flag = module.add_metadata([ir.Constant(ir.IntType(32), 4), "nvvm-reflect-ftz", ir.Constant(ir.IntType(32), 0)])
    module.add_named_metadata("llvm.module.flags", flag)


def emit_ptx(module_text: str, kernels: list[str], arch: str) -> str:
    """PTX for `arch` of a module's text whose functions `kernels` are the entry points."""
    initialize()
    from ..cpu.engine import _llvm_lock        # one LLVM compile at a time, CPU or PTX (LLVM's global context)
    with _llvm_lock:
        try:
            parsed = llvm.parse_assembly(module_text)
            parsed.verify()
            tm = target_machine(arch)
            parsed.data_layout = str(tm.target_data)
            if any(f.is_declaration and f.name.startswith("__nv_") for f in parsed.functions):
                library = llvm.parse_bitcode(_libdevice_bytes())
                library.triple = TRIPLE
                library.data_layout = str(tm.target_data)
                parsed.link_in(library)
            entry_points = set(kernels)
            for f in parsed.functions:
                if not f.is_declaration and f.name not in entry_points:
                    f.linkage = llvm.Linkage.internal
            for g in parsed.global_variables:
                if not g.is_declaration:
                    g.linkage = llvm.Linkage.internal
            pto = llvm.create_pipeline_tuning_options(speed_level=3)
            pass_builder = llvm.create_pass_builder(tm, pto)
            pass_builder.getModulePassManager().run(parsed, pass_builder)
            return tm.emit_assembly(parsed)
        except RuntimeError as err:
            raise CompilationError("ptx", str(err).strip().splitlines()[0] if str(err).strip() else repr(err)) from err


# --------------------------------------------------------------------------- checks

@functools.cache
def ptxas_path() -> str | None:
    """ptxas on PATH, in $CUDA_HOME/bin, or in the nvidia-cuda-nvcc wheel."""
    found = shutil.which("ptxas")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.path.isfile(os.path.join(home, "bin", "ptxas")):
            return os.path.join(home, "bin", "ptxas")
    try:
        import nvidia
        for root in nvidia.__path__:
            for path in glob.glob(os.path.join(root, "**", "bin", "ptxas"), recursive=True):
                if os.access(path, os.X_OK):
                    return path
    except ImportError:
        pass
    return None


def ptxas_check(ptx: str, arch: str, timeout: float = 60) -> list[str]:
    """Assemble `ptx` for `arch` with ptxas; returns its warnings (`-warn-spills`,
    `-warn-lmem-usage` on); PTXToolError with ptxas's message if it fails."""
    ptxas = ptxas_path()
    if ptxas is None:
        raise PTXToolError("ptxas not found (CUDA toolkit, or pip install nvidia-cuda-nvcc)")
    with tempfile.TemporaryDirectory() as tmp:
        source, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(source, "w") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, f"-arch={arch}", "-warn-spills", "-o", cubin, source],
                             capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        raise PTXToolError(f"ptxas -arch={arch} failed: {(run.stderr or run.stdout).strip()[:2000]}")
    return [line for line in (run.stderr + run.stdout).splitlines() if "warning" in line.lower()]


def nvjitlink_available() -> bool:
    try:
        from cuda.bindings import nvjitlink
        nvjitlink.version()
        return True
    except Exception:        # not installed, or its library missing
        return False


def nvjitlink_cubin(ptx: str, arch: str) -> bytes:
    """A cubin for `arch` linked from `ptx` by nvJitLink (no GPU needed)."""
    from cuda.bindings import nvjitlink
    try:
        handle = nvjitlink.create(1, [f"-arch={arch}"])
    except nvjitlink.nvJitLinkError as err:
        raise PTXToolError(f"nvJitLink cannot link for {arch}: {err}") from err
    try:
        data = ptx.encode()
        try:
            nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "jitgrad")
            nvjitlink.complete(handle)
        except nvjitlink.nvJitLinkError as err:
            size = nvjitlink.get_error_log_size(handle)
            log = bytearray(size)
            nvjitlink.get_error_log(handle, log)
            raise PTXToolError(f"nvJitLink ({arch}): {err}: {log.decode(errors='replace').strip()[:2000]}") from err
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
        return bytes(cubin)
    finally:
        nvjitlink.destroy(handle)


def versions() -> str:
    return f"llvmlite {llvmlite.__version__}, LLVM {'.'.join(map(str, llvm.llvm_version_info))}"
