"""The CUDA backend ("cuda", alias "gpu") and the grid emulator ("cuda-emulator").

Both build the same launch functions (codegen.py). The CUDA backend emits PTX for each
configured architecture (ptx.py) at compile time, which needs no GPU: `Lowered.as_text
("ptx")` and the CLI's `--stage ptx` print it anywhere; calling the executable needs a
CUDA device (runtime.py) and raises `NoCUDADeviceError` without one. The emulator
compiles the launch functions for the host, thread indices coming from a host loop over
the grid, and runs them on NumPy arrays: the GPU's indexing, grid-stride loops and
two-pass reductions checked on every CI machine.
"""
from __future__ import annotations

import ctypes
import math
from typing import Sequence

import numpy as np
from llvmlite import ir

from jitgrad.config import config
from jitgrad.ir import Function
from jitgrad.passes.memory import MemoryPlan, plan_buffers
from jitgrad.passes.schedule import Schedule, schedule
from ..base import Backend, Executable
from ..cpu.backend import _check_addressable, _symbol
from .codegen import CUDAFunctionEmitter, HostGrid, Launch, PTXGrid
from .scalar import HostMath, LibdeviceMath
from . import ptx as ptx_tools

EMULATOR_THREADS_PER_BLOCK = 32
EMULATOR_MAX_BLOCKS = 3
"""The emulated grid: small, so that every grid-stride loop of more than 96 items wraps."""


def _build(fn: Function, kernels: Schedule | None, memory: MemoryPlan | None, grid, math_library,
           module: ir.Module | None = None, symbol: str | None = None):
    """(module, emitter, launches) for `fn`, into `module` if given (several functions in
    one module: the tests check the PTX of every primitive in one ptxas run)."""
    if kernels is None:
        kernels = schedule(fn, config.fusion)
    if memory is None:
        memory = plan_buffers(fn, kernels)
    _check_addressable(fn)
    module = module if module is not None else ir.Module(name=fn.name)
    symbol = symbol or _symbol(fn)
    emitter = CUDAFunctionEmitter(fn, kernels, memory, module, symbol, grid, math_library)
    launches = emitter.emit()
    return module, emitter, launches


class CUDAExecutable(Executable):
    """PTX for one IR function, per architecture, and its launch plan."""

    listing_names = ("kernels", "llvm", "ptx", "sass")

    def __init__(self, function: Function, emitter: CUDAFunctionEmitter, llvm_ir: str, launches: list[Launch],
                 ptx: dict[str, str]):
        self.function = function
        self.schedule = emitter.sched
        self.memory = emitter.memory
        self._workspace_bytes = emitter.workspace_bytes
        self.constants = emitter.constants
        self.launches = launches
        self.llvm_ir = llvm_ir
        self.ptx = ptx
        self._module = None          # runtime.LoadedModule, made at the first call

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        from . import runtime
        if self._module is None:
            self._module = runtime.load(self)
        return self._module.run(inputs)

    @property
    def workspace_bytes(self) -> int:
        return self._workspace_bytes

    def listing(self, name: str) -> str:
        if name == "llvm":
            return self.llvm_ir
        if name == "ptx":
            return "\n".join(f"// ===== {arch} =====\n{text}" for arch, text in self.ptx.items())
        if name == "sass":
            return sass_listing(self.ptx)
        return super().listing(name)


def sass_listing(ptx: dict[str, str]) -> str:
    """The machine code (SASS) of each architecture's cubin, through nvdisasm or
    cuobjdump where installed."""
    import shutil
    import subprocess
    import tempfile
    import os
    tool = shutil.which("nvdisasm") or shutil.which("cuobjdump")
    if tool is None or ptx_tools.ptxas_path() is None:
        return "// no SASS: needs ptxas and nvdisasm or cuobjdump (CUDA toolkit)"
    parts = []
    for arch, text in ptx.items():
        with tempfile.TemporaryDirectory() as tmp:
            source, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
            with open(source, "w") as f:
                f.write(text)
            subprocess.run([ptx_tools.ptxas_path(), f"-arch={arch}", "-o", cubin, source], check=True,
                           capture_output=True, timeout=120)
            args = [tool, cubin] if tool.endswith("nvdisasm") else [tool, "-sass", cubin]
            out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        parts.append(f"// ===== {arch} =====\n{out.stdout}")
    return "\n".join(parts)


class CUDABackend(Backend):
    """Compiles IR functions to PTX launches (see module docstring)."""

    device = "cuda"

    def __init__(self, archs: Sequence[str] = ptx_tools.DEFAULT_ARCHS):
        self.archs = tuple(archs)

    def build(self, fn: Function, kernels: Schedule | None = None, memory: MemoryPlan | None = None,
              module: ir.Module | None = None, symbol: str | None = None):
        """(module, emitter, launches): the launch functions of `fn` as LLVM IR (into
        `module` if given; `ptx.prepare_module` readies a module for `ptx.emit_ptx`)."""
        fresh = module is None
        module, emitter, launches = _build(fn, kernels, memory, PTXGrid, LibdeviceMath(), module, symbol)
        if fresh:
            ptx_tools.prepare_module(module)
        return module, emitter, launches

    def compile(self, fn: Function, kernels: Schedule | None = None, memory: MemoryPlan | None = None
                ) -> CUDAExecutable:
        module, emitter, launches = self.build(fn, kernels, memory)
        text = str(module)
        names = [launch.name for launch in launches]
        ptx = {arch: ptx_tools.emit_ptx(text, names, arch) for arch in self.archs}
        return CUDAExecutable(fn, emitter, text, launches, ptx)


class EmulatedExecutable(Executable):
    """The launch functions compiled for the host, run over an emulated grid."""

    listing_names = ("kernels", "llvm")

    def __init__(self, function: Function, emitter: CUDAFunctionEmitter, llvm_ir: str, launches: list[Launch],
                 compiled):
        self.function = function
        self.schedule = emitter.sched
        self.memory = emitter.memory
        self._workspace_bytes = emitter.workspace_bytes
        self.constants = emitter.constants
        self.launches = launches
        self.llvm_ir = llvm_ir
        self.compiled = compiled
        call_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)
        self._calls = [(call_type(compiled.address(f"{launch.name}.launch")), emulated_grid(launch))
                       for launch in launches]
        self._out_specs = [(t.shape, t.dtype.numpy) for t in function.output_types]
        self._in_dtypes = [t.dtype.numpy for t in function.input_types]

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(a, dtype=d) for a, d in zip(inputs, self._in_dtypes, strict=True)]
        outputs = [np.empty(shape, dtype) for shape, dtype in self._out_specs]
        # garbage, not zeros, in the workspace: a launch that reads what it did not write shows
        workspace = np.full(self._workspace_bytes + 64, 0xA5, np.uint8)
        base = workspace.ctypes.data + (-workspace.ctypes.data) % 64
        pointers = [a.ctypes.data for a in arrays] + [o.ctypes.data for o in outputs] + [base] + \
                   [c.ctypes.data for c in self.constants]
        table = (ctypes.c_void_p * len(pointers))(*pointers)
        for call, (blocks, threads) in self._calls:
            call(table, blocks, threads)
        return outputs

    @property
    def workspace_bytes(self) -> int:
        return self._workspace_bytes

    def listing(self, name: str) -> str:
        if name == "llvm":
            return self.llvm_ir
        return super().listing(name)


def emulated_grid(launch: Launch) -> tuple[int, int]:
    """(blocks, threads per block) the emulator runs a launch with: a single-thread launch
    gets two blocks of four threads (all but thread 0 must do nothing)."""
    if not launch.parallel:
        return 2, 4
    return min(EMULATOR_MAX_BLOCKS, math.ceil(launch.items / EMULATOR_THREADS_PER_BLOCK)), EMULATOR_THREADS_PER_BLOCK


class GridEmulatorBackend(Backend):
    """Runs the CUDA backend's kernels on the host over an emulated grid."""

    device = "cuda-emulator"
    kernel_device = "cuda"

    def compile(self, fn: Function, kernels: Schedule | None = None, memory: MemoryPlan | None = None
                ) -> EmulatedExecutable:
        from ..cpu.engine import compile_module
        module, emitter, launches = _build(fn, kernels, memory, HostGrid, HostMath())
        compiled = compile_module(module, 2, config.cache_dir)
        return EmulatedExecutable(fn, emitter, str(module), launches, compiled)
