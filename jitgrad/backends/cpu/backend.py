"""The CPU backend object and its executables: one native function per IR function,
called through ctypes with an array of pointers (inputs, outputs, the workspace, then
large constants; see codegen.py)."""
from __future__ import annotations

import ctypes
import hashlib
import re
import threading
from typing import Sequence

import numpy as np
from llvmlite import ir

from jitgrad.errors import CompilationError, ShapeError
from jitgrad.ir import Function
from jitgrad.ir.printer import print_function
from jitgrad.config import config
from jitgrad.passes.memory import MemoryPlan, plan_buffers
from jitgrad.passes.schedule import Schedule, schedule
from ..base import Backend, Executable
from .codegen import CPUFunctionEmitter
from .engine import Blas, VectorMath, compile_module, finish_code, initialize
from .thread_pool import threads_for
from . import index_errors, runtime
from .fastcall import native_call
from .llvm_support import set_function_string_attribute
from .workspace import Workspace

_CALL_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
MAX_ARRAY_BYTES = 2 ** 63 - 1
"""NumPy's limit too: byte offsets and trip counts are 64-bit signed integers."""


def _check_addressable(fn: Function) -> None:
    """A value larger than 64-bit offsets can address (a broadcast to (2**40, 2**40), say)
    would make loops whose trip counts wrap around: refuse it, naming where it was made."""
    for value, loc in [(v, None) for v in fn.args] + [(r, op.loc) for op in fn.walk() for r in op.results]:
        if value.type.nbytes > MAX_ARRAY_BYTES:
            raise ShapeError(f"an array of shape {value.type.shape} and dtype {value.type.dtype.name} would hold "
                             f"{value.type.nbytes} bytes, more than 64-bit addresses reach "
                             f"({MAX_ARRAY_BYTES} bytes, as NumPy)", loc)


_LOCATION_AT_LINE_END = re.compile(r' loc\("(?:[^"\\]|\\.)*":\d+(?: in (?:[A-Za-z_][A-Za-z0-9_.]*|"(?:[^"\\]|\\.)*"))?\)$',
                                   re.MULTILINE)


FULL_CODE_AT_CALL = 2
"""An executable first compiled with the quick code generator gets its full code at this
call (or when its native call path is built): a one-off call runs the quick code, and a
function called again pays the full code generation once, from the optimized IR."""


SYMBOL_ARRAY_BYTES = 4096
"""Array attributes larger than this are hashed, not printed, into a function's symbol."""


def _symbol(fn: Function) -> str:
    """A name that depends only on the program, so that the same program compiled again
    (in this process or another) has the same LLVM IR and hits the disk cache.

    Source locations are left out of the hash: they name files relative to the working
    directory, and they change no machine code, so one program run from several
    directories (or edited above the traced lines) shares one cache entry. The printer
    ends every op's line with its `loc(...)`, which is what the pattern removes.

    Array attributes above SYMBOL_ARRAY_BYTES enter the hash as their bytes' SHA-256
    (the printer's `digest_arrays_over`), so a 10 MiB constant costs one pass of
    SHA-256, not 21 MB of hex text, while any change of its bytes changes the name."""
    text = _LOCATION_AT_LINE_END.sub("", print_function(fn, digest_arrays_over=SYMBOL_ARRAY_BYTES))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"jitgrad_{re.sub(r'[^A-Za-z0-9_]', '_', fn.name)}_{digest}"


class CPUExecutable(Executable):
    """Compiled native code for one IR function. It owns everything the code reads by
    address — its engine (`compiled`), its workspace, its large constants — and nothing
    refers back to it, so it is freed with the last reference (the pipeline's `Lowered`,
    a native call function)."""

    listing_names = ("kernels", "llvm", "llvm-opt", "asm")

    def __init__(self, function: Function, llvm_ir: str, compiled, symbol: str, emitter: CPUFunctionEmitter):
        self.function = function
        self.schedule = emitter.sched
        self.memory = emitter.memory
        self._workspace_bytes = emitter.workspace_bytes
        self.workspace = Workspace(emitter.workspace_bytes)
        self.constants = emitter.constants
        self.constant_addresses = [c.ctypes.data for c in self.constants]
        self.llvm_ir = llvm_ir
        self._code = (compiled, _CALL_TYPE(compiled.address(symbol)))
        """(machine code, its entry point), read and replaced as one: a call holds the
        machine code it started in until it returns, so replacing quick code never frees
        code that a call in another thread is running."""
        self.symbol = symbol
        self.kernel_address = compiled.address(symbol)
        self.stops_on_interrupt = emitter.stops_on_interrupt
        self._calls = 0
        self._code_lock = threading.Lock()
        self._out_specs = [(t.shape, t.dtype.numpy) for t in function.output_types]
        self._in_dtypes = [t.dtype.numpy for t in function.input_types]
        self._n = len(function.args) + len(function.outputs) + 1 + len(self.constants)
        self.checks_indices = any(op.name == "index_check" for op in function.walk())
        """Whether the code reports out-of-range indices (index_errors.py): the calls check."""

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.compiled.quick:
            self._calls += 1
            if self._calls >= FULL_CODE_AT_CALL:
                self.use_full_code()
        compiled, cfunc = self._code          # `compiled` keeps the code alive during the call
        arrays = [np.ascontiguousarray(a, dtype=d) for a, d in zip(inputs, self._in_dtypes, strict=True)]
        outputs = [np.empty(shape, dtype) for shape, dtype in self._out_specs]
        workspace, temporary = self.workspace.acquire()
        saved = index_errors.begin() if self.checks_indices else None
        completed = False
        try:
            pointers = (ctypes.c_void_p * self._n)(*[a.ctypes.data for a in arrays],
                                                  *[o.ctypes.data for o in outputs], workspace,
                                                  *self.constant_addresses)
            if self.stops_on_interrupt:
                runtime.call(cfunc, pointers)  # Ctrl-C stops long kernels (runtime.py)
            else:
                cfunc(pointers)
            completed = True
        finally:
            self.workspace.release(temporary)
            if self.checks_indices:
                index_errors.finish(saved, raise_error=completed)   # an out-of-range index raises
        return outputs

    @property
    def compiled(self):
        """The machine code later calls run (engine.CompiledModule)."""
        return self._code[0]

    @property
    def workspace_bytes(self) -> int:
        return self._workspace_bytes

    def use_full_code(self) -> None:
        """Replace quick code by the full code (engine.finish_code); calls already running
        finish in the quick code, later ones run the full code. Where the full code
        cannot be made, the quick code (same results) stays."""
        with self._code_lock:
            if not self.compiled.quick:
                return
            try:
                full = finish_code(self.compiled)
            except CompilationError:
                self.compiled.quick = False      # not retried on every call
                return
            self.kernel_address = full.address(self.symbol)
            self._code = (full, _CALL_TYPE(self.kernel_address))

    def fast_call(self, fallback, result):
        """A CPython function running this executable with well under 1 us of overhead
        (fastcall.py), built on the full code (the address is part of its machine code).
        It holds this executable; this executable does not hold it."""
        self.use_full_code()
        return native_call(self, fallback, result)

    def listing(self, name: str) -> str:
        if name == "llvm":
            return self.llvm_ir
        if name == "llvm-opt":
            return self.compiled.optimized_ir
        if name == "asm":
            return self.compiled.assembly()
        return super().listing(name)


class CPUBackend(Backend):
    """Compiles IR functions to host machine code."""

    device = "cpu"

    def __init__(self, opt_level: int = 3):
        self.opt_level = opt_level

    def build_module(self, fn: Function, kernels: Schedule, memory: MemoryPlan
                     ) -> tuple[ir.Module, str, CPUFunctionEmitter]:
        _check_addressable(fn)
        initialize()
        module = ir.Module(name=fn.name)
        symbol = _symbol(fn)
        vector_math = VectorMath()
        emitter = CPUFunctionEmitter(fn, kernels, memory, module, symbol, vector_math, Blas.instance(),
                                    threads_for(config.num_threads, config.threads_pool))
        llfn = emitter.emit()
        if vector_math.prefer_vector_width:
            set_function_string_attribute(llfn, "prefer-vector-width", str(vector_math.prefer_vector_width))
        vector_math.finish(module)
        return module, symbol, emitter

    def compile(self, fn: Function, kernels: Schedule | None = None, memory: MemoryPlan | None = None
                ) -> CPUExecutable:
        """Native code for `fn`; without a schedule and memory plan (tests and tools
        compiling one IR function), they are made here with `config.fusion`."""
        if kernels is None:
            kernels = schedule(fn, config.fusion)
        if memory is None:
            memory = plan_buffers(fn, kernels)
        module, symbol, emitter = self.build_module(fn, kernels, memory)
        compiled = compile_module(module, self.opt_level, config.cache_dir, quick=True)
        return CPUExecutable(fn, compiled.llvm_ir, compiled, symbol, emitter)
