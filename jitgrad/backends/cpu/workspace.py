"""The workspace of one executable: the scratch memory its kernel keeps intermediates in.

One buffer per executable, shared by the Python call path and the native one, allocated
on first use (not per call, so calls do not page-fault fresh memory) and dropped by
`release_all()` (`jitgrad.clear_caches()`), to be allocated again by the next call.

Who may use the shared buffer is decided by a busy flag in a small fixed slot,
`[busy, address]`, that the native call function reads by address: it takes the
buffer with an atomic compare-and-swap and, when the flag is set or the buffer has
been released, hands the call to the Python path. The Python path takes it with a
non-blocking lock and sets the flag while holding the GIL; the native function also
runs holding the GIL, so the two never see each other half-way. A caller that finds
the buffer in use (threads calling the same function at once, one of them inside a
kernel with the GIL released) gets a temporary buffer for that call only, so memory
grows with the calls that really overlap, not with the number of threads.
"""
from __future__ import annotations

import ctypes
import os
import threading
import weakref

import numpy as np

BUSY, ADDRESS = 0, 1
ALIGNMENT = 64
_no_workspace = np.zeros(ALIGNMENT, np.uint8)
"""A valid pointer for kernels that need no workspace (never written)."""
_live: "weakref.WeakSet[Workspace]" = weakref.WeakSet()


def _aligned(nbytes: int) -> tuple[np.ndarray, int]:
    buffer = np.empty(nbytes + ALIGNMENT, np.uint8)
    return buffer, (buffer.ctypes.data + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


class Workspace:
    """`nbytes` of scratch memory for one executable (none when `nbytes` is 0)."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.slot = (ctypes.c_int64 * 2)()
        self.slot_address = ctypes.addressof(self.slot)
        self._buffer: np.ndarray | None = None
        self._lock = threading.Lock()
        if nbytes:
            _live.add(self)

    @property
    def address(self) -> int:
        """For a workspace of no bytes: a valid pointer the kernel never writes."""
        return _no_workspace.ctypes.data if not self.nbytes else self.slot[ADDRESS]

    @property
    def allocated_bytes(self) -> int:
        return 0 if self._buffer is None else self._buffer.nbytes

    def acquire(self) -> tuple[int, np.ndarray | None]:
        """(address, temporary): the shared buffer, or a buffer for this call alone when
        the shared one is in use. Pass `temporary` to `release`."""
        if not self.nbytes:
            return _no_workspace.ctypes.data, _no_workspace
        if not self._lock.acquire(blocking=False):
            temporary, address = _aligned(self.nbytes)
            return address, temporary
        try:
            if self._buffer is None:
                self._buffer, self.slot[ADDRESS] = _aligned(self.nbytes)
        except BaseException:
            self._lock.release()
            raise
        self.slot[BUSY] = 1
        return self.slot[ADDRESS], None

    def release(self, temporary: np.ndarray | None) -> None:
        if temporary is None:
            self.slot[BUSY] = 0
            self._lock.release()

    def free(self) -> int:
        """Drop the shared buffer unless a call is using it; the bytes freed."""
        if not self._lock.acquire(blocking=False):
            return 0
        try:
            if self.slot[BUSY] or self._buffer is None:
                return 0
            freed = self._buffer.nbytes
            self.slot[ADDRESS] = 0
            self._buffer = None
            return freed
        finally:
            self._lock.release()


def _after_fork_in_child() -> None:
    """Only the forking thread exists in the child: a workspace that another thread was
    using is free there (its lock and busy flag would otherwise stay taken for good)."""
    for workspace in list(_live):
        workspace._lock = threading.Lock()
        workspace.slot[BUSY] = 0


os.register_at_fork(after_in_child=_after_fork_in_child)


def release_all() -> int:
    """Drop every idle workspace buffer; the bytes freed. The next call allocates again."""
    return sum(workspace.free() for workspace in list(_live))


def allocated_bytes() -> int:
    """Bytes held by shared workspace buffers now."""
    return sum(workspace.allocated_bytes for workspace in list(_live))
