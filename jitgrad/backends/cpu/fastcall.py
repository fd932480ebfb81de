"""A sub-microsecond call path: a CPython METH_FASTCALL function emitted in LLVM IR.

For the signature a `Compiled` object saw last, this wrapper takes the arguments
straight from the interpreter, checks each one through the buffer protocol — a
C-contiguous buffer with the expected number of dimensions, format, item size and
shape, in that order, so that no field is read before the fields that say it exists
(a 0-d buffer has no shape array) — allocates the outputs with `numpy.empty`, takes
the executable's shared workspace, calls the kernel and returns the array (or a nested
tuple of arrays). Anything else (another shape or dtype, a Python scalar, a traced
value, a non-contiguous array, the wrong argument count, a workspace in use or
released) goes to the Python path, which retraces, allocates or raises as usual, so
the fast path never reads the wrong memory. A failure while allocating results
releases everything acquired so far and propagates the exception.

A kernel with blocked loops (`stops_on_interrupt`) is called watched, as the Python
path calls it (runtime.py): Ctrl-C stops it at its next block boundary, and the wrapper
then discards the outputs it allocated, releases the workspace and the input views and
calls the Python path, whose first bytecode runs the pending SIGINT handler — raising
KeyboardInterrupt, or, when the handler returns, computing the call again. Kernels
without blocked loops (small arrays) are called directly: they finish quickly, and the
watch would cost them two atomic stores, a load and a `pthread_self` call.

The buffer protocol is used because NumPy's struct layout is not a stable ABI and
Py_buffer is. The C-API functions are given to LLVM by address; every other address
the wrapper holds (kernel, workspace slot, constants, numpy.empty, output shapes and
dtypes, the fallback) belongs to an object that the function's owner keeps alive.
"""
from __future__ import annotations

import ctypes
import inspect
import itertools
import weakref
from dataclasses import dataclass

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from jitgrad.errors import JitgradError
from . import index_errors
from .engine import compile_module, initialize
from .llvm_support import I8, I32, I64, PTR, VOID, for_range, index
from .runtime import KernelRuntime

PY_BUFFER_BYTES = 80                 # sizeof(Py_buffer) on 64-bit CPython
BUF, LEN, ITEMSIZE, NDIM, FORMAT, SHAPE = 0, 16, 24, 36, 40, 48   # field offsets in Py_buffer
PYBUF_READ = 0x3C                    # PyBUF_C_CONTIGUOUS | PyBUF_FORMAT
PYBUF_WRITE = 0x9                    # PyBUF_WRITABLE | PyBUF_ND
METH_FASTCALL = 0x80
_C_API = ("PyObject_GetBuffer", "PyBuffer_Release", "PyErr_Clear", "PyObject_Vectorcall", "PyTuple_New",
          "PyTuple_SetItem", "Py_DecRef")
_counter = itertools.count()
_registered = False


class _PyMethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p), ("ml_flags", ctypes.c_int),
                ("ml_doc", ctypes.c_char_p)]


def _register_c_api() -> None:
    global _registered
    if not _registered:
        for name in _C_API:
            llvm.add_symbol(name, ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value)
        _registered = True


class _WeakFallback:
    """Calls a bound method through a weak reference to its object. The compiled
    function object holds its native call function, which holds this: a strong
    reference back would make a cycle that only the garbage collector could free,
    keeping the machine code alive until it runs."""

    __slots__ = ("method", "__weakref__")

    def __init__(self, method):
        self.method = weakref.WeakMethod(method)

    def __call__(self, *args):
        method = self.method()
        if method is None:
            raise JitgradError("this native call function outlived the compiled function it belongs to")
        return method(*args)


class _Owner:
    """The native call function's `self`: owns its machine code and every object whose
    address the machine code holds."""

    def __init__(self, executable, fallback, allocate, out_specs, compiled, method):
        self.executable = executable       # kernel engine, workspace slot, constants
        self.fallback = fallback
        self.allocate = allocate
        self.out_specs = out_specs         # the (shape, dtype) objects passed to `allocate`
        self.compiled = compiled           # the wrapper's own engine
        self.method = method               # the PyMethodDef the function points to


def native_call(executable, fallback, result, allocate=np.empty):
    """A CPython function that runs `executable` with well under a microsecond of
    overhead, or calls `fallback(*args)` for arguments it does not take.

    `result`: the index of the output to return, or a (nested) tuple of indices for a
    tuple of outputs; outputs not returned are released. `allocate(shape, dtype)` makes
    each output (numpy.empty; tests pass one that fails)."""
    initialize()
    _register_c_api()
    fn = executable.function
    if inspect.ismethod(fallback):
        fallback = _WeakFallback(fallback)
    out_specs = [(tuple(t.shape), np.dtype(t.dtype.numpy)) for t in fn.output_types]
    inputs = [(t.ndim, tuple(t.shape), memoryview(np.empty(0, t.dtype.numpy)).format.encode()[0], t.dtype.itemsize)
              for t in fn.input_types]
    outputs = [(id(shape), id(dtype), int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
               for shape, dtype in out_specs]
    workspace = executable.workspace
    symbol = f"jitgrad_fastcall_{next(_counter)}"
    addresses = _Addresses(kernel=executable.kernel_address, fallback=id(fallback), allocate=id(allocate),
                           workspace_slot=workspace.slot_address if workspace.nbytes else 0,
                           no_workspace=workspace.address if not workspace.nbytes else 0,
                           constants=tuple(executable.constant_addresses),
                           index_reports=ctypes.addressof(index_errors.reports) if executable.checks_indices else 0)
    module = _build(symbol, inputs, outputs, addresses, result, executable.stops_on_interrupt)
    compiled = compile_module(module, opt_level=2, cache_dir=None)
    method = _PyMethodDef(symbol.encode(), compiled.address(symbol), METH_FASTCALL, None)
    owner = _Owner(executable, fallback, allocate, out_specs, compiled, method)
    new = ctypes.pythonapi.PyCFunction_NewEx
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.py_object, ctypes.py_object]
    return new(ctypes.addressof(method), owner, None)


@dataclass(frozen=True)
class _Addresses:
    """What the wrapper calls and reads, by address."""

    kernel: int
    fallback: int
    allocate: int
    workspace_slot: int          # [busy flag, buffer address]; 0: the kernel needs no workspace
    no_workspace: int            # a valid pointer for kernels that use no workspace
    constants: tuple[int, ...]
    index_reports: int           # index_errors.reports; 0: the kernel checks no indices


def _leaves(spec) -> list[int]:
    return [spec] if isinstance(spec, int) else [j for item in spec for j in _leaves(item)]


def _tuples(spec) -> list:
    """The tuple nodes of a result spec, parents before children."""
    if isinstance(spec, int):
        return []
    return [spec] + [t for item in spec for t in _tuples(item)]


def _address(value: int, function_type: ir.FunctionType | None = None) -> ir.Constant:
    """A pointer constant; given a function type, callable with `IRBuilder.call` (which
    reads the callee's `function_type`)."""
    pointer = ir.Constant(I64, value).inttoptr(PTR)
    if function_type is not None:
        pointer.function_type = function_type
    return pointer


def _build(symbol, inputs, outputs, addresses: _Addresses, result, stops_on_interrupt: bool) -> ir.Module:
    module = ir.Module(name=symbol)
    fn = ir.Function(module, ir.FunctionType(PTR, [PTR, PTR, I64]), symbol)
    _, args, nargs = fn.args
    api = {
        "getbuffer": ir.Function(module, ir.FunctionType(I32, [PTR, PTR, I32]), "PyObject_GetBuffer"),
        "release": ir.Function(module, ir.FunctionType(VOID, [PTR]), "PyBuffer_Release"),
        "clear": ir.Function(module, ir.FunctionType(VOID, []), "PyErr_Clear"),
        "call": ir.Function(module, ir.FunctionType(PTR, [PTR, PTR, I64, PTR]), "PyObject_Vectorcall"),
        "tuple": ir.Function(module, ir.FunctionType(PTR, [I64]), "PyTuple_New"),
        "setitem": ir.Function(module, ir.FunctionType(I32, [PTR, I64, PTR]), "PyTuple_SetItem"),
        "decref": ir.Function(module, ir.FunctionType(VOID, [PTR]), "Py_DecRef"),
    }
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    n_in, n_out, n_const = len(inputs), len(outputs), len(addresses.constants)
    tuples = _tuples(result)
    views = b.alloca(I8, size=index(max(n_in, 1) * PY_BUFFER_BYTES), name="views")
    pointers = b.alloca(PTR, size=index(n_in + n_out + 1 + n_const), name="pointers")
    objects = b.alloca(PTR, size=index(max(n_out + len(tuples), 1)), name="objects")   # new references
    acquired = b.alloca(I64, name="acquired")          # input views acquired so far
    made = b.alloca(I64, name="made")                  # entries of `objects` made so far
    b.store(index(0), acquired)
    b.store(index(0), made)
    to_fallback = fn.append_basic_block("to_fallback")   # unwind, then the Python path
    to_error = fn.append_basic_block("to_error")         # unwind, then propagate the exception

    def field(base, offset, typ):
        return b.load(b.gep(base, [index(offset)], source_etype=I8), typ=typ)

    def view_of(k):
        return b.gep(views, [index(k * PY_BUFFER_BYTES)], source_etype=I8)

    def slot(array, k):
        return b.gep(array, [index(k)], source_etype=PTR)

    def then(condition, name, otherwise):
        """Continue in a new block when `condition` holds, else branch to `otherwise`."""
        block = fn.append_basic_block(name)
        b.cbranch(condition, block, otherwise)
        b.position_at_end(block)

    def is_null(pointer):
        return b.icmp_unsigned("==", pointer, ir.Constant(PTR, None))

    then(b.icmp_signed("==", nargs, index(n_in)), "inputs", to_fallback)
    for k, (ndim, shape, code, itemsize) in enumerate(inputs):
        view = view_of(k)
        obj = b.load(slot(args, k), typ=PTR)
        got = b.call(api["getbuffer"], [obj, view, ir.Constant(I32, PYBUF_READ)])
        no_buffer = fn.append_basic_block(f"nobuffer{k}")
        then(b.icmp_signed("==", got, ir.Constant(I32, 0)), f"acquired{k}", no_buffer)
        b.store(index(k + 1), acquired)
        fmt = field(view, FORMAT, PTR)
        ok = b.and_(b.icmp_signed("==", field(view, NDIM, I32), ir.Constant(I32, ndim)),
                    b.icmp_signed("==", field(view, ITEMSIZE, I64), index(itemsize)))
        then(b.and_(ok, b.icmp_unsigned("!=", fmt, ir.Constant(PTR, None))), f"format{k}", to_fallback)
        ok = b.and_(b.icmp_unsigned("==", b.load(fmt, typ=I8), ir.Constant(I8, code)),
                    b.icmp_unsigned("==", b.load(b.gep(fmt, [index(1)], source_etype=I8), typ=I8),
                                    ir.Constant(I8, 0)))
        if ndim:                                       # ndim matched: the shape array has ndim entries
            dims = field(view, SHAPE, PTR)
            then(b.and_(ok, b.icmp_unsigned("!=", dims, ir.Constant(PTR, None))), f"shape{k}", to_fallback)
            ok = ir.Constant(ir.IntType(1), 1)
            for d, n in enumerate(shape):
                dim = b.load(b.gep(dims, [index(d)], source_etype=I64), typ=I64)
                ok = b.and_(ok, b.icmp_signed("==", dim, index(n)))
        b.store(field(view, BUF, PTR), slot(pointers, k))
        then(ok, f"checked{k}", to_fallback)
        continue_block = b.block
        b.position_at_end(no_buffer)                   # not a buffer: the Python path decides
        b.call(api["clear"], [])
        b.branch(to_fallback)
        b.position_at_end(continue_block)

    out_view = b.alloca(I8, size=index(PY_BUFFER_BYTES), name="outview")
    no_out_buffer = fn.append_basic_block("no_out_buffer")   # an output without a buffer: the Python path
    call_args = b.alloca(PTR, size=index(2), name="emptyargs")
    for j, (shape_id, dtype_id, nbytes) in enumerate(outputs):
        b.store(_address(shape_id), call_args)
        b.store(_address(dtype_id), slot(call_args, 1))
        out = b.call(api["call"], [_address(addresses.allocate), call_args, index(2), ir.Constant(PTR, None)])
        then(b.not_(is_null(out)), f"allocated{j}", to_error)
        b.store(out, slot(objects, j))
        b.store(index(j + 1), made)
        got = b.call(api["getbuffer"], [out, out_view, ir.Constant(I32, PYBUF_WRITE)])
        then(b.icmp_signed("==", got, ir.Constant(I32, 0)), f"outbuffer{j}", no_out_buffer)
        size_ok = b.icmp_signed("==", field(out_view, LEN, I64), index(nbytes))
        b.store(field(out_view, BUF, PTR), slot(pointers, n_in + j))
        b.call(api["release"], [out_view])
        then(size_ok, f"outchecked{j}", to_fallback)
    for t, spec in enumerate(tuples):
        packed = b.call(api["tuple"], [index(len(spec))])
        then(b.not_(is_null(packed)), f"tuple{t}", to_error)
        b.store(packed, slot(objects, n_out + t))
        b.store(index(n_out + t + 1), made)

    for k, address in enumerate(addresses.constants):
        b.store(_address(address), slot(pointers, n_in + n_out + 1 + k))
    workspace_slot = None
    if addresses.workspace_slot:                      # take the shared workspace, if free
        workspace_slot = _address(addresses.workspace_slot)
        taken = b.cmpxchg(workspace_slot, index(0), index(1), "acquire", "monotonic")
        then(b.extract_value(taken, 1), "workspace_taken", to_fallback)
        buffer = b.load(b.gep(workspace_slot, [index(1)], source_etype=I64), typ=PTR)
        released = fn.append_basic_block("workspace_released")
        then(b.not_(is_null(buffer)), "workspace_ready", released)
        b.store(buffer, slot(pointers, n_in + n_out))
        continue_block = b.block
        b.position_at_end(released)                   # released by clear_caches: the Python path reallocates
        b.atomic_rmw("xchg", workspace_slot, index(0), "release")
        b.branch(to_fallback)
        b.position_at_end(continue_block)
    else:
        b.store(_address(addresses.no_workspace), slot(pointers, n_in + n_out))
    kernel = _address(addresses.kernel, ir.FunctionType(VOID, [PTR]))
    if addresses.index_reports:                       # out-of-range indices are counted here
        reports_before = b.load_atomic(_address(addresses.index_reports), "monotonic", 8, typ=I64)
    if stops_on_interrupt:                            # blocked loops: Ctrl-C may stop them early
        watcher = KernelRuntime(module)
        watcher.restore_hook(b)
        interrupted = watcher.watched_call(b, kernel, [pointers])
    else:
        b.call(kernel, [pointers])
    if workspace_slot is not None:
        b.atomic_rmw("xchg", workspace_slot, index(0), "release")
    if stops_on_interrupt:                            # outputs may be incomplete: discard them
        then(b.not_(interrupted), "completed", to_fallback)
    if addresses.index_reports:                       # an index was out of range: the Python path raises
        reports_after = b.load_atomic(_address(addresses.index_reports), "monotonic", 8, typ=I64)
        then(b.icmp_signed("==", reports_before, reports_after), "indices_in_range", to_fallback)
    with for_range(b, index(n_in), "release") as k:
        b.call(api["release"], [b.gep(views, [b.mul(k, index(PY_BUFFER_BYTES))], source_etype=I8)])
    outs = [b.load(slot(objects, j), typ=PTR) for j in range(n_out)]
    returned = set(_leaves(result))
    for j, out in enumerate(outs):
        if j not in returned:
            b.call(api["decref"], [out])

    numbering = itertools.count(n_out)                  # the tuples' slots, in `_tuples` order

    def pack(spec):
        """Fill the pre-made tuples; PyTuple_SetItem steals each reference."""
        if isinstance(spec, int):
            return outs[spec]
        packed = b.load(slot(objects, next(numbering)), typ=PTR)
        for position, item in enumerate(spec):
            b.call(api["setitem"], [packed, index(position), pack(item)])
        return packed
    b.ret(pack(result))

    def unwind():
        """Release the input views and the new references acquired so far."""
        with for_range(b, b.load(acquired, typ=I64), "unwind_views") as k:
            b.call(api["release"], [b.gep(views, [b.mul(k, index(PY_BUFFER_BYTES))], source_etype=I8)])
        with for_range(b, b.load(made, typ=I64), "unwind_objects") as k:
            b.call(api["decref"], [b.load(b.gep(objects, [k], source_etype=PTR), typ=PTR)])

    b.position_at_end(no_out_buffer)
    b.call(api["clear"], [])
    b.branch(to_fallback)
    b.position_at_end(to_fallback)
    unwind()
    b.ret(b.call(api["call"], [_address(addresses.fallback), args, nargs, ir.Constant(PTR, None)]))
    b.position_at_end(to_error)
    unwind()
    b.ret(ir.Constant(PTR, None))
    return module
