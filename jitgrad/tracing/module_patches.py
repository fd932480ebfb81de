"""Module attributes replaced while any thread traces.

Some library functions cannot be reached through NumPy's dispatch protocols: `np.array`
of a list holding traced values, `np.random`'s global functions, NumPy's creation
functions called by user code, SciPy's Python-level `polygamma`. jitgrad replaces them in
their modules for as long as at least one thread is tracing, and puts the originals back
when the last trace ends. Every replacement falls back to the original where it is not
concerned (another thread, plain arguments), so other threads see no difference.

This module is the one place that does the counting and the swapping, under one lock,
for each family of replacements.
"""
from __future__ import annotations

import contextlib
import threading
import types
from typing import Callable, Iterable


class ModulePatches:
    """Attributes `(module, name)` listed by `targets()` are replaced by
    `make(name, original)` while `enter` has been called more often than `exit`.

    `targets` is called when the first trace begins (a module imported later, such as
    scipy.special, is then included); `make` is called once per original object, and its
    result reused, so a replacement keeps its identity across traces."""

    def __init__(self, targets: Callable[[], Iterable[tuple[types.ModuleType, str]]],
                 make: Callable[[str, object], object]):
        self._targets = targets
        self._make = make
        self._lock = threading.Lock()
        self._users = 0
        self._saved: list[tuple[types.ModuleType, str, object]] = []
        self._made: dict[tuple[str, int], tuple[object, object]] = {}

    def enter(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = [(module, name, getattr(module, name)) for module, name in self._targets()
                               if hasattr(module, name)]
                for module, name, original in self._saved:
                    made = self._made.get((name, id(original)))
                    if made is None or made[0] is not original:     # (an id can be reused)
                        made = self._made[(name, id(original))] = (original, self._make(name, original))
                    setattr(module, name, made[1])
            self._users += 1

    def exit(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                for module, name, original in self._saved:
                    setattr(module, name, original)
                self._saved = []

    def trace_context(self) -> Callable:
        """A trace context (`tracer.TRACE_CONTEXTS`) holding the patches for one trace."""
        @contextlib.contextmanager
        def patched(fn):  # noqa: ARG001 - the trace context signature
            self.enter()
            try:
                yield
            finally:
                self.exit()
        return patched
