"""Exporting compiled functions as a C library: `libNAME.so`, `libNAME.a`, `NAME.h` and
`manifest.json` in one directory (docs/aot.md describes the C ABI).

Each function is traced and optimized by the ordinary pipeline (`Compiled.lower`), then
lowered again by the CPU backend's `CPUFunctionEmitter` into one LLVM module shared by all
the library's functions, for the chosen target (`targets.py`): its CPU, its features and
the libmvec variants its level allows. The module is optimized with the JIT's pipeline
and emitted as a position-independent object; `cc` compiles a small C file of entry
points (`cglue.py`) and links both, `ar` archives them.

What the JIT passes at run time is made part of the library:
- large constants and the arrays a function reads from closures or globals (its implicit
  arguments) become read-only data in the object, their values at export time;
- the runtime words kernels read (fork and Ctrl-C state, `runtime.py`) become private
  globals: Ctrl-C is never watched, and a fork handler makes kernels in a forked child
  run serially, as in the JIT;
- BLAS: for the host target, the OpenBLAS bundled with NumPy that the JIT calls, linked
  by path with an rpath (same code, same results to the bit); for portable targets, or
  with `blas="loops"`, the code generator's own GEMM loops and no BLAS dependency.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

from jitgrad.backends.cpu import runtime
from jitgrad.backends.cpu.backend import _check_addressable
from jitgrad.backends.cpu.codegen import CPUFunctionEmitter
from jitgrad.backends.cpu.engine import Blas, Threads, VectorMath, _llvm_lock, initialize
from jitgrad.backends.cpu.llvm_support import I32, I64, PTR, VOID, set_function_string_attribute
from jitgrad.config import config
from jitgrad.errors import JitgradError
from jitgrad.ir import Function
from jitgrad.tracing.numpy_fft import expand_library_transforms
from jitgrad.passes.lower_complex import LowerComplex
from jitgrad.passes.memory import plan_buffers
from jitgrad.passes.schedule import schedule
from . import cglue
from .loader import ABI_VERSION, FORMAT, manifest_digest
from .targets import Target, target_named

_C_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BLAS_CHOICES = ("openblas", "loops")


class ExportError(JitgradError):
    """An artifact could not be built: a name that is not a C identifier, arguments the
    C ABI cannot describe, a missing tool (cc, ar), a link that failed."""


@dataclass
class ExportedFunction:
    """One entry point: its name in C, the final IR function and what the C glue and the
    loader need to know about it."""

    name: str
    function: Function
    n_explicit: int
    implicit_arrays: list[np.ndarray]
    input_tree: dict
    output_tree: dict
    input_paths: list[str]
    output_paths: list[str]
    mode: str
    source: str
    kernel_symbol: str = ""
    workspace_bytes: int = 0
    baked: list[np.ndarray] = field(default_factory=list)


class Library:
    """Several compiled functions built into one C library.

        lib = jitgrad.aot.Library("mlp")
        lib.add("loss", jitgrad.jit(loss), W1, b1, W2, b2, x, y)
        lib.add("grad_loss", jitgrad.grad(loss, argnums=(0, 1, 2, 3)), W1, b1, W2, b2, x, y)
        lib.build("build/mlp", target="host")

    `add` traces and optimizes at once (errors show where the function is added); `build`
    generates code for the target and writes the directory."""

    def __init__(self, name: str):
        if not _C_NAME.match(name):
            raise ExportError(f"library name {name!r} is not a C identifier")
        self.name = name
        self.functions: list[ExportedFunction] = []

    def add(self, name: str, compiled: Callable, *example_args, mode: str | None = None) -> "Library":
        from jitgrad.api import Compiled, jit
        if not _C_NAME.match(name):
            raise ExportError(f"function name {name!r} is not a C identifier")
        if any(f.name == name for f in self.functions):
            raise ExportError(f"the library already has a function {name!r}")
        if not isinstance(compiled, Compiled):
            compiled, mode = jit(compiled), mode or "jit"
        if compiled.static_argnums:
            raise ExportError(f"{name}: static arguments cannot be exported (their values would be fixed): "
                              "close over them instead")
        self.functions.append(_prepare(name, compiled, example_args, mode or _mode_of(compiled)))
        return self

    def build(self, path: str, target: str = "host", blas: str | None = None) -> dict:
        """Write the artifact to directory `path` (created); returns the manifest."""
        if not self.functions:
            raise ExportError(f"library {self.name!r} has no functions to export")
        return _build(self, path, target_named(target), blas)


def export(functions, *example_args, path: str, name: str | None = None, target: str = "host",
           blas: str | None = None) -> dict:
    """Export one compiled function, or a list of (name, compiled) pairs that take the same
    example arguments, as the C library `name` in directory `path`; returns the manifest.

        jitgrad.aot.export(jitgrad.grad(loss), w, x, path="out")
        jitgrad.aot.export([("loss", jit(f)), ("grad_loss", grad(f))], w, x, path="out", name="model")
    """
    if callable(functions):
        default = getattr(functions, "name", None) or getattr(functions, "__name__", "fn")   # grad_f for grad(f)
        functions = [(re.sub(r"\W", "_", default), functions)]
    library = Library(name or functions[0][0])
    for function_name, compiled in functions:
        library.add(function_name, compiled, *example_args)
    return library.build(path, target=target, blas=blas)


# --------------------------------------------------------------------------- tracing

def _mode_of(compiled) -> str:
    """What the compiled function computes, as its name says (`grad_f`: grad)."""
    name = getattr(compiled, "name", "")
    for mode in ("value_and_grad", "grad", "vjp", "jvp"):
        if name.startswith(mode + "_"):
            return mode
    return "jit"


def _tree_json(tree) -> dict:
    """A TreeDef as JSON (the loader rebuilds pytrees from it)."""
    if tree.kind in ("leaf", "none"):
        return {"kind": tree.kind}
    node = {"kind": tree.kind, "children": [_tree_json(c) for c in tree.children]}
    if tree.kind == "dict":
        if not all(isinstance(k, str) for k in tree.keys):
            raise ExportError(f"dict keys in an exported signature must be strings, not {list(tree.keys)!r}")
        node["keys"] = list(tree.keys)
    return node


def _paths(tree, prefix: str) -> list[str]:
    """Each leaf's place in the pytree, e.g. `args[0]['W1']`."""
    if tree.kind == "leaf":
        return [prefix]
    if tree.kind == "none":
        return []
    keys = tree.keys if tree.kind == "dict" else range(len(tree.children))
    return [p for k, c in zip(keys, tree.children) for p in _paths(c, f"{prefix}[{k!r}]")]


def _prepare(name: str, compiled, example_args: tuple, mode: str) -> ExportedFunction:
    from jitgrad.staging import normalize_args
    from jitgrad.tracing.pytree import tree_flatten
    args = normalize_args(tuple(example_args))
    lowered = compiled.lower(*args)
    fn = _without_numpy_fft(lowered.function)
    leaves, in_tree = tree_flatten(args)
    implicit = lowered.read_captures() or []
    if len(leaves) + len(implicit) != len(fn.args):
        raise ExportError(f"{name}: the compiled function takes {len(fn.args)} arrays, the example arguments "
                          f"give {len(leaves)} and its closures {len(implicit)}")
    out_spec = lowered.staged.unflatten(list(range(len(fn.outputs))))
    _, out_tree = tree_flatten(out_spec)
    return ExportedFunction(name, fn, len(leaves), [np.asarray(a) for a in implicit], _tree_json(in_tree),
                            _tree_json(out_tree), _paths(in_tree, "args"), _paths(out_tree, "result"), mode,
                            f"{getattr(compiled.fun, '__module__', '?')}.{getattr(compiled.fun, '__qualname__', compiled.name)}")


def _without_numpy_fft(fn: Function) -> Function:
    """A library cannot link NumPy's pocketfft loops (they are not exported symbols of
    NumPy's extension module): its transforms use jitgrad's own FFT kernel instead."""
    expanded = expand_library_transforms(fn)
    return fn if expanded is fn else LowerComplex().run(expanded)


# --------------------------------------------------------------------------- code generation

class TargetVectorMath(VectorMath):
    """The libmvec variants the target's level allows (of those this process resolves)."""

    def __init__(self, target: Target):
        super().__init__()
        self.isas = target.vector_isas if VectorMath.available else ()
        self.available = bool(self.isas)


def _byte_global(module: ir.Module, name: str, array: np.ndarray) -> ir.GlobalVariable:
    data = bytearray(np.ascontiguousarray(array).tobytes()) or bytearray(1)
    gv = ir.GlobalVariable(module, ir.ArrayType(ir.IntType(8), len(data)), name)
    gv.initializer = ir.Constant(ir.ArrayType(ir.IntType(8), len(data)), data)
    gv.global_constant = True
    gv.linkage = "private"
    gv.align = 64
    return gv


def _entry_kernel(module: ir.Module, library: str, exported: ExportedFunction, kernel: ir.Function) -> None:
    """`void LIB_FUNC_kernel(void **slots)`, slots = explicit inputs, outputs, workspace:
    calls the backend's kernel with the baked arrays in their slots."""
    fn = exported.function
    n_in, n_impl, n_out = exported.n_explicit, len(exported.implicit_arrays), len(fn.outputs)
    entry = ir.Function(module, ir.FunctionType(VOID, [PTR]), f"{library}_{exported.name}_kernel")
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    baked = [_byte_global(module, f"{library}_{exported.name}_baked{k}", a) for k, a in enumerate(exported.baked)]
    implicit, constants = baked[:n_impl], baked[n_impl:]
    total = n_in + n_impl + n_out + 1 + len(constants)
    full = b.alloca(PTR, size=ir.Constant(I64, total), name="slots")

    def slot(array, k):
        return b.gep(array, [ir.Constant(I64, k)], inbounds=True, source_etype=PTR)

    given = entry.args[0]
    for k in range(n_in):
        b.store(b.load(slot(given, k), typ=PTR), slot(full, k))
    for k, gv in enumerate(implicit):
        b.store(gv, slot(full, n_in + k))
    for k in range(n_out + 1):
        b.store(b.load(slot(given, n_in + k), typ=PTR), slot(full, n_in + n_impl + k))
    for k, gv in enumerate(constants):
        b.store(gv, slot(full, n_in + n_impl + n_out + 1 + k))
    b.call(kernel, [full])
    b.ret_void()


def _privatize_runtime(module: ir.Module, library: str) -> None:
    """Define the runtime words the kernels read as private zeros (no Ctrl-C watching),
    and `LIB_forked_child()`, which the C glue registers with pthread_atfork."""
    for name in (runtime.SERIAL, runtime.INTERRUPTS, runtime.WATCHED_THREAD, runtime.PYTHON_HANDLER):
        gv = module.globals.get(name)
        if gv is not None:
            gv.initializer = ir.Constant(gv.value_type, None)
            gv.linkage = "internal"
    child = ir.Function(module, ir.FunctionType(VOID, []), f"{library}_forked_child")
    b = ir.IRBuilder(child.append_basic_block("entry"))
    serial = module.globals.get(runtime.SERIAL)
    if serial is not None:
        b.store_atomic(ir.Constant(I32, 1), serial, "monotonic", 4)
    b.ret_void()


def _openblas_path() -> str | None:
    """The OpenBLAS NumPy ships (what the JIT calls: `engine.Blas`)."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    found = sorted(glob.glob(os.path.join(root, "numpy.libs", "libscipy_openblas64_*.so*"))
                   + glob.glob(os.path.join(root, "scipy_openblas64", "lib", "libscipy_openblas64_*.so*")))
    return found[0] if found else None


def _generate(library: Library, target: Target, blas: str) -> ir.Module:
    initialize()
    module = ir.Module(name=library.name)
    vector_math = TargetVectorMath(target)
    for exported in library.functions:
        fn = exported.function
        _check_addressable(fn)
        symbol = f"{library.name}_{exported.name}_impl"
        kernels = schedule(fn, config.fusion)
        lowering = CPUFunctionEmitter(fn, kernels, plan_buffers(fn, kernels), module, symbol, vector_math,
                                    Blas.instance() if blas == "openblas" else None, Threads.instance(0))
        kernel = lowering.emit()
        kernel.linkage = "internal"
        if vector_math.prefer_vector_width:
            set_function_string_attribute(kernel, "prefer-vector-width", str(vector_math.prefer_vector_width))
        exported.workspace_bytes = lowering.workspace_bytes
        exported.baked = [np.ascontiguousarray(a, dtype=v.type.dtype.numpy).astype(
            v.type.dtype.numpy.newbyteorder("<"), copy=False)
            for a, v in zip(exported.implicit_arrays, fn.args[exported.n_explicit:])] + list(lowering.constants)
        _entry_kernel(module, library.name, exported, kernel)
        exported.kernel_symbol = f"{library.name}_{exported.name}_kernel"
    _privatize_runtime(module, library.name)
    vector_math.finish(module)
    return module


def _emit_object(module: ir.Module, target: Target) -> tuple[bytes, list[str]]:
    """(object code, the external functions it calls)."""
    with _llvm_lock:
        if not target.host:
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
        try:
            parsed = llvm.parse_assembly(str(module))
            parsed.verify()
            tm = llvm.Target.from_triple(target.triple).create_target_machine(
                cpu=target.cpu, features=target.features, opt=3, reloc="pic", codemodel="default")
            parsed.triple = tm.triple
            parsed.data_layout = str(tm.target_data)
            pto = llvm.create_pipeline_tuning_options(speed_level=3)
            pto.loop_unrolling = False      # as the JIT (engine.py): same code, same figures
            pto.loop_interleaving = False
            pass_builder = llvm.create_pass_builder(tm, pto)
            pass_builder.getModulePassManager().run(parsed, pass_builder)
            calls = sorted(f.name for f in parsed.functions if f.is_declaration and not f.name.startswith("llvm."))
            return tm.emit_object(parsed), calls
        except RuntimeError as err:
            raise ExportError(f"LLVM failed to generate code for {target.name}: {str(err).strip()}") from err


# --------------------------------------------------------------------------- files

def _run(command: list[str], what: str) -> None:
    tool = shutil.which(command[0])
    if tool is None:
        raise ExportError(f"{what} needs `{command[0]}` on PATH")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise ExportError(f"{what} failed ({' '.join(command)}):\n{done.stderr.strip()}")


def _link_libraries(calls: list[str], blas: str) -> tuple[list[str], list[str]]:
    """(linker arguments, their description for the manifest)."""
    flags, names = [], []
    if any(c.startswith("_ZGV") for c in calls):
        flags.append("-lmvec")
    if any(c.startswith(("GOMP_", "omp_")) for c in calls):
        flags.append("-lgomp")
    if any(c.startswith("scipy_") for c in calls):        # CBLAS, LAPACKE, OpenBLAS's thread control
        path = _openblas_path()
        if path is None:
            raise ExportError("the code calls OpenBLAS but NumPy's bundled OpenBLAS was not found; use blas='loops'")
        flags += [path, f"-Wl,-rpath,{os.path.dirname(path)}"]
        names.append(path)
    flags += ["-lm", "-lpthread"]
    return flags, [f for f in flags if f.startswith("-l")] + names


def _compiler_version() -> str:
    try:
        return subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _can_link_for(target: Target) -> bool:
    return target.arch == platform.machine()


def _build(library: Library, path: str, target: Target, blas: str | None) -> dict:
    if blas is None:
        blas = "openblas" if target.host and _openblas_path() else "loops"
    if blas not in BLAS_CHOICES:
        raise ExportError(f"blas must be one of {', '.join(BLAS_CHOICES)}, not {blas!r}")
    if blas == "openblas" and not target.host:
        raise ExportError(f"the bundled OpenBLAS is built for this machine; a {target.name} artifact uses blas='loops'")
    module = _generate(library, target, blas)
    object_code, calls = _emit_object(module, target)
    name = library.name
    os.makedirs(path, exist_ok=True)
    header = cglue.header(name, library.functions, target)
    files = {f"{name}.h": header, f"{name}_entry.c": cglue.source(name, library.functions)}
    for file_name, text in files.items():
        with open(os.path.join(path, file_name), "w") as f:
            f.write(text)
    object_name = f"{name}_kernels.o"
    with open(os.path.join(path, object_name), "wb") as f:
        f.write(object_code)
    link_flags, link_names = _link_libraries(calls, blas)
    produced = [f"{name}.h", f"{name}_entry.c", object_name]
    if _can_link_for(target):
        with tempfile.TemporaryDirectory() as scratch:
            entry_object = os.path.join(scratch, f"{name}_entry.o")
            version_script = os.path.join(scratch, "exports.map")
            with open(version_script, "w") as f:
                exported = [f"{name}_abi_version"] + [f"{name}_{f.name}{suffix}" for f in library.functions
                                                        for suffix in ("", "_workspace_size")]
                f.write(f"{{ global: {'; '.join(exported)}; local: *; }};\n")
            _run(["cc", "-std=c11", "-O2", "-fPIC", "-c", os.path.join(path, f"{name}_entry.c"), "-o", entry_object],
                 "compiling the entry points")
            shared = os.path.join(path, f"lib{name}.so")
            _run(["cc", "-shared", "-o", shared, entry_object, os.path.join(path, object_name),
                  f"-Wl,-soname,lib{name}.so", f"-Wl,--version-script={version_script}", "-Wl,-z,defs",
                  "-Wl,-z,noexecstack", *link_flags], "linking the shared library")
            static = os.path.join(path, f"lib{name}.a")
            if os.path.exists(static):
                os.remove(static)
            _run(["ar", "rcs", static, entry_object, os.path.join(path, object_name)], "archiving the static library")
        produced += [f"lib{name}.so", f"lib{name}.a"]
    manifest = {
        "format": FORMAT,
        "abi_version": ABI_VERSION,
        "name": name,
        "target": {"name": target.name, "triple": target.triple, "cpu": target.cpu, "llvm_features": target.features,
                   "arch": target.arch, "cpu_flags": list(target.cpu_flags),
                   "vector_math": ["avx512" if isa == "e" else "avx2" for isa, _ in target.vector_isas
                                   if any(c.startswith(f"_ZGV{isa}") for c in calls)]},
        "versions": {"jitgrad": _jitgrad_version(), "llvm": ".".join(map(str, llvm.llvm_version_info)),
                     "llvmlite": llvmlite.__version__, "numpy": np.__version__, "python": platform.python_version(),
                     "cc": _compiler_version()},
        "link": {"shared": f"lib{name}.so" if _can_link_for(target) else None,
                 "static": f"lib{name}.a" if _can_link_for(target) else None,
                 "libraries": link_names, "blas": blas, "threads": "-lgomp" in link_flags,
                 "external_symbols": calls},
        "functions": [_function_manifest(name, f) for f in library.functions],
        "files": {file_name: _sha256(os.path.join(path, file_name)) for file_name in produced},
    }
    manifest["checksum"] = manifest_digest(manifest)
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest


def _arrays(values, paths) -> list[dict]:
    return [{"dtype": v.type.dtype.numpy.str, "jitgrad_dtype": v.type.dtype.value, "shape": list(v.type.shape),
             "path": p} for v, p in zip(values, paths, strict=True)]


def _function_manifest(library: str, f: ExportedFunction) -> dict:
    fn = f.function
    return {"name": f.name, "symbol": f"{library}_{f.name}", "workspace_symbol": f"{library}_{f.name}_workspace_size",
            "workspace_bytes": f.workspace_bytes, "mode": f.mode, "source": f.source,
            "inputs": _arrays(fn.args[:f.n_explicit], f.input_paths),
            "outputs": _arrays(fn.outputs, f.output_paths),
            "baked_arrays": len(f.baked), "input_tree": f.input_tree, "output_tree": f.output_tree}


def _jitgrad_version() -> str:
    import jitgrad
    return jitgrad.__version__


# --------------------------------------------------------------------------- the command line's modes

MODES = ("grad", "value_and_grad", "jit", "vjp", "jvp")


def transformed(fun: Callable, mode: str, example_args: Sequence[np.ndarray], argnums=0,
                memory_budget=None) -> tuple[Callable, tuple]:
    """(compiled function, its example arguments) for `jitgrad aot --mode`: vjp takes the
    primals and a cotangent shaped as the output; jvp the primals and as many tangents."""
    import jitgrad
    from jitgrad.api import Compiled, _transformed
    from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
    fun = fun.fun if isinstance(fun, Compiled) else fun
    args = tuple(example_args)
    if mode == "jit":
        return jitgrad.jit(fun), args
    if mode == "grad":
        return jitgrad.grad(fun, argnums=argnums, memory_budget=memory_budget), args
    if mode == "value_and_grad":
        return jitgrad.value_and_grad(fun, argnums=argnums, memory_budget=memory_budget), args
    if mode == "jvp":
        return _transformed("jvp", fun, len(args)), args + tuple(np.zeros_like(a) for a in args)
    if mode == "vjp":
        lowered = jitgrad.jit(fun).lower(*args)
        zeros = [np.zeros(t.shape, t.dtype.numpy) for t in lowered.function.output_types]
        cotangent = lowered.staged.unflatten(zeros)
        return _transformed("vjp", fun, len(args)), args + (cotangent,)
    raise ExportError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
