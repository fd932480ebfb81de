"""Process-wide state that generated code reads, and the two events it reacts to: a
`fork` and a Ctrl-C.

Three words live in one small native module compiled once per process (and never
freed, since signal handlers and every kernel hold their addresses):

- `jitgrad_serial` (i32): set in a forked child. libgomp's thread pool does not survive
  `fork` (the child has one thread, but libgomp believes its workers exist and waits for
  them forever), so kernels in a child run all their fixed blocks on the calling thread
  instead of calling GOMP_parallel. Blocks are fixed whatever the thread count, so the
  results stay bit-identical.
- `jitgrad_interrupts` (i32): the number of SIGINTs seen. A C-level SIGINT handler
  (`jitgrad_sigint`, below) counts each one and then calls Python's own handler, so
  Python still raises KeyboardInterrupt — or runs the user's handler — as usual.
- `jitgrad_watched_thread` (i64): the thread (pthread_self) whose current kernel call
  may stop early. A kernel notes at entry whether it runs on that thread and the count
  of interrupts; at each block boundary of its blocked loops it loads the count, and
  once the count moved it skips its remaining blocks. `call` (the Python call path)
  watches its thread, compares the count before and after, and on a change runs the
  signal handlers (KeyboardInterrupt is raised from there) or, when a handler returns
  normally, runs the kernel again: kernels are pure functions of their inputs, so the
  function stays usable and never returns a half-computed result. The native call path
  (fastcall.py) watches from generated code (`KernelRuntime.watched_call`) and, when
  interrupted, hands the call to the Python path. A caller that does not watch its
  thread gets kernels that always run to the end.

Python sees a signal only between bytecodes, and a kernel is one long native call: this
is why the handler has to be native. It is installed only over Python's own C-level
handler (never over SIG_IGN, SIG_DFL or a third party's), and put back when
`signal.signal` replaced it (checked on each watched call, from Python or from the
native call path: `KernelRuntime.restore_hook`).
"""
from __future__ import annotations

import ctypes
import signal
import threading

import llvmlite.binding as llvm
from llvmlite import ir

from .llvm_support import I32, I64, PTR, VOID, declare

SERIAL = "jitgrad_serial"
INTERRUPTS = "jitgrad_interrupts"
WATCHED_THREAD = "jitgrad_watched_thread"
PYTHON_HANDLER = "jitgrad_python_sigint"
HOOK = "jitgrad_sigint"

_engine = None
_words: dict[str, ctypes._SimpleCData] = {}
_hook_address = 0
_python_handler = 0                     # Python's C-level SIGINT handler, once seen
_forked = False
_main_thread = threading.main_thread().ident


# --------------------------------------------------------------------------- the native module

def _build() -> ir.Module:
    module = ir.Module(name="jitgrad_runtime")
    for name, t in ((SERIAL, I32), (INTERRUPTS, I32), (WATCHED_THREAD, I64), (PYTHON_HANDLER, PTR)):
        gv = ir.GlobalVariable(module, t, name)
        gv.initializer = ir.Constant(t, None)
        gv.align = 8
    handler_type = ir.FunctionType(VOID, [I32])
    hook = ir.Function(module, handler_type, HOOK)
    b = ir.IRBuilder(hook.append_basic_block("entry"))
    b.atomic_rmw("add", module.get_global(INTERRUPTS), ir.Constant(I32, 1), "monotonic")
    previous = b.load(module.get_global(PYTHON_HANDLER), typ=handler_type.as_pointer())
    with b.if_then(b.icmp_unsigned("!=", previous, ir.Constant(handler_type.as_pointer(), None))):
        b.call(previous, [hook.args[0]])
    b.ret_void()
    return module


def load(target_machine: llvm.TargetMachine) -> None:
    """Compile the runtime module (once per process) and make its words resolvable by
    name for every module compiled after it. Called by `engine.initialize`."""
    global _engine, _hook_address
    if _engine is not None:
        return
    module = llvm.parse_assembly(str(_build()))
    module.verify()
    engine = llvm.create_mcjit_compiler(module, target_machine)
    engine.finalize_object()
    for name, ctype in ((SERIAL, ctypes.c_int32), (INTERRUPTS, ctypes.c_int32), (WATCHED_THREAD, ctypes.c_uint64),
                        (PYTHON_HANDLER, ctypes.c_void_p)):
        address = engine.get_global_value_address(name)
        llvm.add_symbol(name, address)
        _words[name] = ctype.from_address(address)
    _hook_address = engine.get_function_address(HOOK)
    llvm.add_symbol(HOOK, _hook_address)
    for name in ("PyOS_getsig", "PyOS_setsig"):
        function = getattr(ctypes.pythonapi, name, None)
        if function is not None:
            llvm.add_symbol(name, ctypes.cast(function, ctypes.c_void_p).value)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(engine))   # signal handlers may outlive any reference
    _engine = engine
    if _forked:
        _words[SERIAL].value = 1
    install_interrupt_hook()


# --------------------------------------------------------------------------- fork

def enter_forked_child() -> None:
    """After `fork`, in the child: from now on kernels run their blocks serially. The
    forking thread is the child's main thread (the one Python runs signal handlers on)."""
    global _forked, _main_thread
    _forked = True
    _main_thread = threading.get_ident()
    if _engine is not None:
        _words[SERIAL].value = 1


def runs_serially() -> bool:
    return bool(_engine is not None and _words[SERIAL].value)


# --------------------------------------------------------------------------- Ctrl-C

def _c_api(name: str, restype, *argtypes):
    """A function of the interpreter's C API, or None where this Python lacks it."""
    function = getattr(ctypes.pythonapi, name, None)
    if function is not None:
        function.restype, function.argtypes = restype, list(argtypes)
    return function


_getsig = _c_api("PyOS_getsig", ctypes.c_void_p, ctypes.c_int)
_setsig = _c_api("PyOS_setsig", ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
_check_signals = _c_api("PyErr_CheckSignals", ctypes.c_int)
"""Runs the pending Python signal handlers now; what they raise, it raises."""


def install_interrupt_hook() -> bool:
    """Put the counting handler in front of Python's SIGINT handler; True when it is
    in place. Python's handler is recognised as the one installed while Python's own
    SIGINT disposition is a Python callable; nothing else is ever chained to."""
    global _python_handler
    if _engine is None or _getsig is None or _setsig is None:
        return False
    current = _getsig(signal.SIGINT) or 0
    if current == _hook_address:
        return True
    if not callable(signal.getsignal(signal.SIGINT)) or current in (0, 1):    # SIG_DFL, SIG_IGN
        return False
    if _python_handler == 0:
        _python_handler = current
    if current != _python_handler:
        return False
    _words[PYTHON_HANDLER].value = _python_handler
    _setsig(signal.SIGINT, _hook_address)
    return True


def _hook_in_place() -> bool:
    """The counting handler is installed (re-installed if `signal.signal` replaced it)."""
    if _engine is None or _getsig is None:
        return False
    return _getsig(signal.SIGINT) == _hook_address or install_interrupt_hook()


def call(cfunc, pointers) -> None:
    """Run a kernel from Python so that Ctrl-C stops it at its next block boundary and
    raises KeyboardInterrupt here; if the SIGINT handler returns instead of raising,
    the kernel runs again, so a completed call always has complete results."""
    ident = threading.get_ident()
    if ident != _main_thread or not _hook_in_place():
        cfunc(pointers)                 # only the main thread gets KeyboardInterrupt
        return
    interrupts, watched = _words[INTERRUPTS], _words[WATCHED_THREAD]
    while True:
        before = interrupts.value
        watched.value = ident
        try:
            cfunc(pointers)
        finally:
            watched.value = 0
        if interrupts.value == before:
            return
        _check_signals()


# --------------------------------------------------------------------------- for generated code

class KernelRuntime:
    """What one generated module uses of the runtime: the words, declared as external
    globals that resolve to the runtime module at load time."""

    def __init__(self, module: ir.Module):
        self.module = module

    def word(self, name: str, t) -> ir.GlobalVariable:
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        gv = ir.GlobalVariable(self.module, t, name)
        gv.linkage = "external"
        gv.align = 8
        return gv

    def serial(self, builder: ir.IRBuilder) -> ir.Value:
        """i1: this process is a forked child, where GOMP_parallel must not be called."""
        flag = builder.load_atomic(self.word(SERIAL, I32), "monotonic", 4, typ=I32)
        return builder.icmp_unsigned("!=", flag, ir.Constant(I32, 0))

    def watch(self, builder: ir.IRBuilder) -> tuple[ir.Value, ir.Value]:
        """(armed: i64 0/1, baseline: i64) for a kernel entered now: armed when the
        caller watches this thread for interrupts, baseline the interrupt count."""
        watched = builder.load_atomic(self.word(WATCHED_THREAD, I64), "monotonic", 8, typ=I64)
        me = builder.call(declare(self.module, "pthread_self", I64, []), [])
        armed = builder.zext(builder.icmp_unsigned("==", watched, me), I64)
        count = builder.load_atomic(self.word(INTERRUPTS, I32), "monotonic", 4, typ=I32)
        return armed, builder.zext(count, I64)

    def restore_hook(self, builder: ir.IRBuilder) -> None:
        """What `_hook_in_place` does for a caller in generated code: where Python's own
        SIGINT handler is installed again (`signal.signal` with a callable puts it back
        over the counting handler), put the counting handler in front of it again. One
        `sigaction` call; nothing where this Python lacks PyOS_getsig/PyOS_setsig."""
        if _getsig is None or _setsig is None:
            return
        getsig = declare(self.module, "PyOS_getsig", PTR, [I32])
        setsig = declare(self.module, "PyOS_setsig", PTR, [I32, PTR])
        hook = declare(self.module, HOOK, VOID, [I32])
        python = builder.load(self.word(PYTHON_HANDLER, PTR), typ=PTR)
        current = builder.call(getsig, [ir.Constant(I32, int(signal.SIGINT))])
        known = builder.icmp_unsigned("!=", python, ir.Constant(PTR, None))
        with builder.if_then(builder.and_(known, builder.icmp_unsigned("==", current, python)), likely=False):
            builder.call(setsig, [ir.Constant(I32, int(signal.SIGINT)), hook])

    def watched_call(self, builder: ir.IRBuilder, kernel, args) -> ir.Value:
        """Call `kernel` as a caller that watches for Ctrl-C (what `call` does from Python,
        for a caller in generated code such as the native call path); i1: an interrupt
        arrived meanwhile, so the outputs may be incomplete — discard them and take the
        Python path, whose first bytecode runs the pending signal handler (raising
        KeyboardInterrupt, or, when the handler returns, computing the call again)."""
        count, watched = self.word(INTERRUPTS, I32), self.word(WATCHED_THREAD, I64)
        before = builder.load_atomic(count, "monotonic", 4, typ=I32)
        me = builder.call(declare(self.module, "pthread_self", I64, []), [])
        builder.store_atomic(me, watched, "monotonic", 8)
        builder.call(kernel, args)
        builder.store_atomic(ir.Constant(I64, 0), watched, "monotonic", 8)
        return builder.icmp_unsigned("!=", builder.load_atomic(count, "monotonic", 4, typ=I32), before)

    def interrupted(self, builder: ir.IRBuilder, armed: ir.Value, baseline: ir.Value) -> ir.Value:
        """i1: an interrupt arrived since the kernel was entered by a watching caller."""
        count = builder.zext(builder.load_atomic(self.word(INTERRUPTS, I32), "monotonic", 4, typ=I32), I64)
        moved = builder.icmp_unsigned("!=", count, baseline)
        return builder.and_(moved, builder.icmp_unsigned("!=", armed, ir.Constant(I64, 0)))
