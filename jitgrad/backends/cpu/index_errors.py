"""Out-of-range run-time indices, reported from compiled code to the Python caller.

An `index_check` kernel (gather.py) that meets an index outside its axis calls the
external function `jitgrad_index_out_of_range(value, axis, size, location)` — only on
that path, so checked indices cost a compare and a branch each — and then clamps, so the
code never reads out of bounds. The function is this module's ctypes callback, bound to
the symbol before any code is loaded (`bind_symbol`); it keeps the first report of the
calling thread in a thread-local slot. The kernels that check indices run on the calling
thread (a KernelKind kernel is never split across the thread pool), so the slot is the
call's own: two threads calling one executable never see each other's report.

The Python call path brackets the call with `begin`/`finish` (`finish` raises
`IndexingError` naming the user's line); the saved slot makes a compiled call made from
inside another one (a pure_callback's function calling a jitted function) leave the outer
call's report alone. The native call path (fastcall.py) cannot read a thread-local:
it compares `reports`, a count of every report made in the process, before and after
the kernel, and on a change discards its outputs and calls the Python path, which
computes the call again and raises (or, when the report came from another thread,
returns the same results).

Why a callback and not a status word the kernels store into (in the workspace or the
argument table): a control-flow region is a function of its own whose workspace is a
scratch area of its caller's, placed after the region is emitted, so no fixed address
of a per-call word reaches its kernels; a thread-local slot reaches every kernel of the
call wherever it is emitted, and costs nothing on the path where indices are in range.
"""
from __future__ import annotations

import ctypes
import threading

import llvmlite.binding as llvm
from llvmlite import ir

from jitgrad.errors import IndexingError
from .llvm_support import I64, PTR, VOID, declare

SYMBOL = "jitgrad_index_out_of_range"
REPORT_TYPE = ir.FunctionType(VOID, [I64, I64, I64, PTR])
"""void report(int64 index, int64 axis, int64 size, const char *location)"""

reports = ctypes.c_int64(0)
"""Reports made in this process so far (read by the native call path, by address)."""
_count_lock = threading.Lock()
_state = threading.local()


def _report(value: int, axis: int, size: int, location) -> None:
    with _count_lock:          # no lost update: the count changes across every reporting call
        reports.value += 1
    if getattr(_state, "error", None) is None:
        where = location.decode("utf-8", "replace") if location else None
        _state.error = (int(value), int(axis), int(size), where or None)


_callback = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_char_p)(_report)
_bound = False


def bind_symbol() -> None:
    """Make `SYMBOL` resolve to the callback in code loaded from now on (idempotent)."""
    global _bound
    if not _bound:
        llvm.add_symbol(SYMBOL, ctypes.cast(_callback, ctypes.c_void_p).value)
        _bound = True


def report_function(module: ir.Module) -> ir.Function:
    """The module's declaration of the report function."""
    bind_symbol()
    return declare(module, SYMBOL, VOID, [I64, I64, I64, PTR])


def begin():
    """Clear this thread's slot for a call; returns what to pass to `finish`."""
    saved = getattr(_state, "error", None)
    _state.error = None
    return saved


def finish(saved, raise_error: bool = True) -> None:
    """Restore the slot `begin` saved; raise the call's report (if any) when asked."""
    error = getattr(_state, "error", None)
    _state.error = saved
    if error is not None and raise_error:
        value, axis, size, where = error
        raise IndexingError(f"index {value} is out of bounds for axis {axis} with size {size}", where)
