"""LLVM for the host CPU: target machines, external libraries (libmvec, BLAS), the
optimization pipeline and MCJIT.

LLVM's behaviour shapes this module: a TargetMachine is owned by the
engine it is given to (reusing one for a second engine crashed the process), so each engine gets a fresh one; libmvec's vector functions are
found only after `load_library_permanently`, and must be listed in
`@llvm.compiler.used` or the optimizer deletes their declarations before the
vectorizer can use them. Code is generated once, as a relocatable object that goes both
to the MCJIT engine and to the on-disk cache (`cache.py`). Every failure inside LLVM becomes a `CompilationError` that
names the stage; IR is verified before it reaches a pass that could crash.
"""
from __future__ import annotations

import contextlib
import ctypes.util
import os
import threading
import weakref
from dataclasses import dataclass, field

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

from jitgrad.errors import CompilationError
from jitgrad.ir import DType
from . import elf
from .blas import Blas, sleeping_gomp_workers
from . import runtime
from .cache import CacheEntry, DiskCache, cache_key
from .fft import register_library_symbols
from .llvm_support import F32, F64, I32, I64, PTR, VOID, declare

_init_lock = threading.Lock()
_initialized = False
LIBMVEC_PATHS = ("/lib/x86_64-linux-gnu/libmvec.so.1", "/usr/lib/x86_64-linux-gnu/libmvec.so.1",
                 "/lib64/libmvec.so.1", "/usr/lib64/libmvec.so.1")


def initialize() -> None:
    global _initialized
    with _init_lock:
        if _initialized:
            return
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        VectorMath.load()
        Blas.load()
        Threads.load()
        register_library_symbols()          # NumPy's pocketfft loops, which cached objects may call
        with _llvm_lock:
            runtime.load(create_target_machine())
        _initialized = True


def host_cpu() -> tuple[str, str]:
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def create_target_machine(opt: int = 3, reloc: str = "default") -> llvm.TargetMachine:
    name, features = host_cpu()
    target = llvm.Target.from_default_triple()
    codemodel = "default" if reloc == "pic" else "jitdefault"
    return target.create_target_machine(cpu=name, features=features, opt=opt, reloc=reloc, codemodel=codemodel)


# --------------------------------------------------------------------------- vector math

class VectorMath:
    """Which libmvec variants exist here and the attribute text naming them."""

    available = False
    isas: tuple[tuple[str, int], ...] = ()   # (ISA letter, vector bits), widest first

    @classmethod
    def load(cls) -> None:
        features = set(host_cpu()[1].split(","))
        isas = []
        if "+avx512f" in features:
            isas.append(("e", 512))
        if "+avx2" in features:
            isas.append(("d", 256))
        for path in LIBMVEC_PATHS:
            if os.path.exists(path) and isas:
                try:
                    llvm.load_library_permanently(path)
                except RuntimeError:
                    continue
                cls.available, cls.isas = True, tuple(isas)
                return

    def __init__(self):
        self.used: list[ir.Function] = []

    @property
    def prefer_vector_width(self) -> int | None:
        return self.isas[0][1] if self.available else None

    def variants(self, module: ir.Module, scalar_name: str, base: str, t, arity: int) -> list[str]:
        """`_ZGV<isa>N<lanes><v..>_<scalar>(<vector symbol>)` entries for the call-site
        attribute, declaring each vector function that the process can resolve."""
        if not self.available:
            return []
        out = []
        for isa, bits in self.isas:
            lanes = bits // (64 if t == F64 else 32)
            symbol = f"_ZGV{isa}N{lanes}{'v' * arity}_{base}{'' if t == F64 else 'f'}"
            if not llvm.address_of_symbol(symbol):
                continue
            vt = ir.VectorType(t, lanes)
            fn = declare(module, symbol, vt, [vt] * arity)
            if fn not in self.used:
                self.used.append(fn)
            out.append(f"_ZGV{isa}N{lanes}{'v' * arity}_{scalar_name}({symbol})")
        return out

    def finish(self, module: ir.Module) -> None:
        """Keep the vector declarations alive until the loop vectorizer has run."""
        if not self.used:
            return
        array_type = ir.ArrayType(PTR, len(self.used))
        gv = ir.GlobalVariable(module, array_type, "llvm.compiler.used")
        gv.linkage = "appending"
        gv.section = "llvm.metadata"
        gv.initializer = ir.Constant(array_type, self.used)


# --------------------------------------------------------------------------- threads

class Threads:
    """libgomp's GOMP_parallel, called from generated code (1.4-1.9 us a region, measured
    on a 2-core machine); absent libgomp, kernels run on the calling thread."""

    available = False
    beside_blas = False
    """Whether loops may run on threads in programs calling BLAS (blas.sleeping_gomp_workers)."""
    claims_blocks = False
    """Threads run a per-thread entry that computes its share of the blocks (thread_pool's
    `PoolThreads` takes the blocks function itself)."""

    @classmethod
    def load(cls) -> None:
        path = ctypes.util.find_library("gomp")
        for candidate in filter(None, (path, "libgomp.so.1")):
            with sleeping_gomp_workers(candidate) as policy:
                try:
                    llvm.load_library_permanently(candidate)
                except RuntimeError:
                    continue
            cls.available = bool(llvm.address_of_symbol("GOMP_parallel"))
            cls.beside_blas = cls.available and policy.beside_blas
            return

    @classmethod
    def instance(cls, count: int = 0) -> "Threads | None":
        """`count` threads per parallel region (0: libgomp's default, all cores)."""
        return cls(count) if cls.available else None

    def __init__(self, count: int):
        self.count = count

    def parallel(self, module: ir.Module):
        return declare(module, "GOMP_parallel", VOID, [PTR, PTR, I32, I32])

    def thread_num(self, module: ir.Module):
        return declare(module, "omp_get_thread_num", I32, [])

    def num_threads(self, module: ir.Module):
        return declare(module, "omp_get_num_threads", I32, [])


# --------------------------------------------------------------------------- compile

@dataclass(eq=False)
class CompiledModule:
    """Machine code loaded into an MCJIT engine, which owns it: the code lives exactly as
    long as this object (and whatever holds it: an executable, a native call function).
    Nothing else in the process refers to it, so dropping the last reference frees the
    engine and its memory (`live_engine_count` counts the ones alive)."""

    engine: object
    optimized_ir: str
    from_cache: bool = False
    addresses: dict[str, int] = field(default_factory=dict)
    """The defined functions' addresses, each checked to be non-zero when loaded."""
    llvm_ir: str = ""
    """The module's LLVM IR as compiled (before optimization): printing an llvmlite
    module costs milliseconds, so the compile's own text is kept for the listings."""
    quick: bool = False
    """Machine code from the quick code generator (`compile_module(..., quick=True)`):
    the full code's results (QUICK_CODEGEN_LEVEL says the one exception), slower loops;
    `finish_code` makes the full code."""
    full_key: str = ""
    """The disk-cache key the full code is stored under ("" without a disk cache)."""
    cache_dir: str | None = None
    """The disk cache the full code goes to (None: none)."""

    def __post_init__(self):
        _live_modules.add(self)

    def address(self, symbol: str) -> int:
        address = self.addresses.get(symbol)
        if address is None:
            address = self.engine.get_function_address(symbol)
            if not address:
                raise CompilationError("llvm-load", f"the compiled code has no function {symbol}")
            self.addresses[symbol] = address
        return address

    def assembly(self) -> str:
        with _llvm_lock:
            module = llvm.parse_assembly(self.optimized_ir)
            return create_target_machine().emit_assembly(module)


_live_modules: "weakref.WeakSet[CompiledModule]" = weakref.WeakSet()


def live_engine_count() -> int:
    """How many MCJIT engines (compiled kernels and native call functions) are alive."""
    return len(_live_modules)


def compile_module(module: ir.Module, opt_level: int = 3, cache_dir: str | None = None,
                   quick: bool = False) -> CompiledModule:
    """Verify, optimize and generate code for `module` — or load the object code that an
    earlier compile of the same IR on the same CPU and versions left in `cache_dir`.

    `quick`: the optimized IR goes through LLVM's quick code generator
    (QUICK_CODEGEN_LEVEL), unless the disk cache already holds the full code; the
    result is marked `quick`, and `finish_code` makes its full code later."""
    initialize()
    with _llvm_lock:
        return _compile_locked(module, opt_level, cache_dir, quick)


QUICK_CODEGEN_LEVEL = 0
"""The code generation level of a first, quick compile. At level 0 LLVM selects
instructions one IR instruction at a time and allocates registers without a global
search: a quarter of the full level's time (6 against 21 ms for the W2 gradient of
benchmarks/run.py), with the same instructions' semantics, so the same results bit for
bit (tests/test_compile_tiers.py); loops keep the vectorizer's shape but spill more.
One thing may differ, as between any two register allocations: which of two NaN operands
of a commutative instruction x86 propagates, so a NaN made from two NaNs can change sign
and payload between the first call and later ones (NumPy's own do between layouts)."""


def finish_code(quick: CompiledModule) -> CompiledModule:
    """The full code of a quick compile: its optimized IR through the full code generator
    (the IR optimization is not repeated), stored in the disk cache it was compiled for."""
    initialize()
    with _llvm_lock:
        stage = "llvm-verify"
        try:
            parsed = llvm.parse_assembly(quick.optimized_ir)
            stage = "llvm-codegen"
            with codegen_options():
                entry = CacheEntry(create_target_machine(reloc="pic").emit_object(parsed), quick.optimized_ir)
            stage = "llvm-load"
            engine, addresses = _load(entry.object_code, list(quick.addresses))
        except (RuntimeError, ValueError, TypeError) as err:
            raise CompilationError(stage, str(err).strip().splitlines()[0] if str(err).strip() else repr(err)) from err
        if quick.full_key and quick.cache_dir:
            DiskCache(quick.cache_dir).store(quick.full_key, entry)
        return CompiledModule(engine, entry.optimized_ir, from_cache=False, addresses=addresses,
                              llvm_ir=quick.llvm_ir)


_llvm_lock = threading.Lock()
"""llvmlite parses into LLVM's global context, which is not thread-safe, and ctypes
releases the GIL during LLVM calls: one compile at a time."""


# --------------------------------------------------------------------------- fork safety

def _before_fork() -> None:
    """Wait for a compile in another thread to finish: the child gets only the forking
    thread, so a lock held (or LLVM state half-changed) by another thread would stay so
    in the child forever. Lock order as everywhere: initialization, then LLVM."""
    _init_lock.acquire()
    _llvm_lock.acquire()


def _after_fork_in_parent() -> None:
    _llvm_lock.release()
    _init_lock.release()


def _after_fork_in_child() -> None:
    """The locks are released, and kernels stop using libgomp (runtime.py): its thread
    pool does not exist in the child."""
    _llvm_lock.release()
    _init_lock.release()
    runtime.enter_forked_child()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


CODEGEN_OPTIONS = (("-disable-lsr", "-disable-lsr=0"),)
"""LLVM options (each as it is set, then as it is reset) in force while the CPU backend
generates machine code. Loop strength reduction rewrites only the integer arithmetic of
addresses and induction variables, so no result changes (tests/test_compile_tiers.py
compares outputs bit for bit; as for QUICK_CODEGEN_LEVEL, a NaN made from two NaNs may
take the other one's sign and payload); it cost about a third of code generation (10 of 31 ms
for the W2 gradient of benchmarks/run.py) and gained no measurable speed on the
vectorized loops jitgrad emits (docs/benchmarks.md)."""


@contextlib.contextmanager
def codegen_options():
    """CODEGEN_OPTIONS set around code generation and reset after it. LLVM's options are
    process-wide and shared with the PTX backend (whose addressing LSR does improve) and
    with any other llvmlite user in the process, so they must not outlive the call;
    the caller holds `_llvm_lock`, as every LLVM use in jitgrad does."""
    for option, _ in CODEGEN_OPTIONS:
        llvm.set_option("", option)
    try:
        yield
    finally:
        for _, reset in CODEGEN_OPTIONS:
            llvm.set_option("", reset)


def _compile_locked(module: ir.Module, opt_level: int, cache_dir: str | None, quick: bool) -> CompiledModule:
    stage = "llvm-ir"
    try:
        text = str(module)
        symbols = [f.name for f in module.functions if not f.is_declaration and f.linkage not in ("internal", "private")]
        cache = DiskCache(cache_dir) if cache_dir else None

        def key(codegen: str) -> str:
            return cache_key(text, str(opt_level), codegen, *host_cpu(), ".".join(map(str, llvm.llvm_version_info)),
                             llvmlite.__version__, _jitgrad_version()) if cache else ""

        full_key = key(" ".join(option for option, _ in CODEGEN_OPTIONS))
        quick_key = key(f"quick {QUICK_CODEGEN_LEVEL}") if quick else ""
        for found_key in (full_key, quick_key) if cache else ():
            entry = cache.load(found_key) if found_key else None
            if entry is None:
                continue
            try:
                engine, addresses = _load(entry.object_code, symbols)
                return CompiledModule(engine, entry.optimized_ir, from_cache=True, addresses=addresses,
                                      llvm_ir=text, quick=found_key == quick_key, full_key=full_key,
                                      cache_dir=cache_dir)
            except CompilationError:
                pass                        # not what it claims to be: compile it again
        stage = "llvm-verify"
        parsed = llvm.parse_assembly(text)
        parsed.verify()
        tm = create_target_machine(reloc="pic")
        parsed.triple = tm.triple
        parsed.data_layout = str(tm.target_data)
        stage = "llvm-optimize"
        if opt_level > 0:
            pto = llvm.create_pipeline_tuning_options(speed_level=opt_level)
            # Unrolling and interleaving cost half the compile time (205 -> 75 ms measured
            # for the W2 gradient of benchmarks/run.py) and gain little on loops of vector-library calls.
            pto.loop_unrolling = False
            pto.loop_interleaving = False
            pass_builder = llvm.create_pass_builder(tm, pto)
            pass_builder.getModulePassManager().run(parsed, pass_builder)
        stage = "llvm-codegen"
        if quick:
            codegen_tm = create_target_machine(opt=QUICK_CODEGEN_LEVEL, reloc="pic")
            entry = CacheEntry(codegen_tm.emit_object(parsed), str(parsed))
        else:
            with codegen_options():
                entry = CacheEntry(tm.emit_object(parsed), str(parsed))
        stage = "llvm-load"
        engine, addresses = _load(entry.object_code, symbols)
        if cache:
            cache.store(quick_key or full_key, entry)   # replaces an entry that did not load
        return CompiledModule(engine, entry.optimized_ir, from_cache=False, addresses=addresses, llvm_ir=text,
                              quick=quick, full_key=full_key, cache_dir=cache_dir)
    except (RuntimeError, ValueError, TypeError) as err:
        raise CompilationError(stage, str(err).strip().splitlines()[0] if str(err).strip() else repr(err)) from err


def _load(object_code: bytes, symbols: list[str]) -> tuple[object, dict[str, int]]:
    """(engine, {symbol: address}) for an object that passes the structural check, loads,
    and defines every symbol at a non-zero address; else a CompilationError saying why
    (for a cache entry, the caller compiles the IR again: an entry that is not what it
    claims to be costs a compile, not a crash)."""
    problem = elf.problem(object_code, symbols) if elf.applies() else None
    if problem is not None:
        raise CompilationError("llvm-load", f"the object code is unusable: {problem}")
    try:
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), create_target_machine())
        engine.add_object_file(llvm.ObjectFileRef.from_data(object_code))
        engine.finalize_object()
    except RuntimeError as err:
        raise CompilationError("llvm-load", str(err).strip() or repr(err)) from err
    addresses = {symbol: engine.get_function_address(symbol) for symbol in symbols}
    missing = [symbol for symbol, address in addresses.items() if not address]
    if missing:
        raise CompilationError("llvm-load", f"the loaded code has no function {', '.join(missing)}")
    return engine, addresses


def _jitgrad_version() -> str:
    import jitgrad
    return jitgrad.__version__
