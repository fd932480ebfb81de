"""What a GradientTape remembers of the arrays it recorded, so that `gradient` never
differentiates at values the forward pass did not see.

The tape's replay reads its leaves and the plain arrays passed to recorded calls as they
are when `gradient` runs. Each such array is guarded once, when first recorded: a small
one by a copy (exact, bit for bit, and the user's array is left alone); a large one that
owns its memory by holding it read-only until the tape's next `gradient` (a copy of every
large operand would cost as much as the forward pass it records) — there a persistent
tape, which may replay it again, copies it and makes it writeable again. `gradient`
checks the arrays its replay reads and raises MutationError naming the array, the call
that read it and the user's line (PyTorch's "modified by an inplace operation").
"""
from __future__ import annotations

import hashlib
import operator
import sys

import numpy as np

from jitgrad.errors import MutationError
from jitgrad.ir import Location
from jitgrad.tracing.tracer import _display_path, _internal_dirs, user_location

# Arrays up to this size are guarded by a copy; larger ones that own their memory are held
# read-only (larger views, and arrays already read-only, whose owner may make them
# writeable again, are copied).
COPY_LIMIT = 1 << 16
# Past this size a copy is replaced by a BLAKE2 digest, which keeps memory flat.
DIGEST_LIMIT = 1 << 24
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _digest(array: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(array).reshape(-1).view(np.uint8)).digest()


def _snapshot(array: np.ndarray):
    return array.copy(order="K") if array.nbytes <= DIGEST_LIMIT else _digest(array)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equality (NaN payloads and -0.0 included) of two arrays of one shape
    and dtype, whatever their strides."""
    unsigned = _UNSIGNED.get(a.dtype.itemsize)
    if unsigned is not None:
        return bool(np.array_equal(a.view(unsigned), b.view(unsigned)))
    return bool(np.array_equal(np.ascontiguousarray(a).reshape(-1).view(np.uint8),
                               np.ascontiguousarray(b).reshape(-1).view(np.uint8)))


_SKIP: tuple = ()      # the directories of jitgrad's and NumPy's own frames, once known


def recording_site(depth: int) -> tuple:
    """The user's frame that made the current record, as (code, instruction offset):
    `user_location` made cheap for the recording path. The search starts `depth` frames
    up (those below are known to be jitgrad's), so the frames it passes over are never
    materialized, and the line number is looked up only for an error message."""
    global _SKIP
    skip = _SKIP or _internal_dirs()
    _SKIP = skip
    frame = sys._getframe(depth)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back
    return (None, 0) if frame is None else (frame.f_code, frame.f_lasti)


def _site_location(site: tuple) -> Location:
    code, offset = site
    if code is None:
        return Location("<unknown>", 0)
    line = next((line for start, end, line in code.co_lines() if start <= offset < end), None)
    return Location(_display_path(code.co_filename), line or code.co_firstlineno, code.co_name)


class _Guard:
    """An array the replay will read again at `gradient`: its layout and its content as
    it was when the tape first recorded it (a copy or a digest in `content`; or `locked`:
    the array is held read-only), and who recorded it where."""

    __slots__ = ("array", "layout", "content", "locked", "fn", "position", "site", "changed_at")

    def __init__(self, array: np.ndarray, fn, position: int | str, site: tuple):
        self.array = array
        self.layout = (array.shape, array.strides, array.dtype)
        self.locked = array.nbytes > COPY_LIMIT and array.base is None and array.flags.writeable
        if self.locked:
            array.flags.writeable = False
            self.content = None
        else:
            self.content = array.copy(order="K") if array.nbytes <= DIGEST_LIMIT else _digest(array)
        self.fn = fn                  # the recorded callable, or None for a tracked leaf
        self.position = position      # its argument position, or how the leaf was made
        self.site = site
        self.changed_at = None        # a later record that read the array already modified

    def unchanged(self) -> bool:
        a = self.array
        if (a.shape, a.strides, a.dtype) != self.layout:
            return False
        if self.locked:
            return not a.flags.writeable
        if type(self.content) is bytes:
            return _digest(a) == self.content
        return _same_bits(a, self.content)

    def unlock(self, keep: bool) -> None:
        """Make a held array writeable again; with `keep`, remember its content by a copy."""
        if self.locked:
            self.locked = False
            if keep:
                self.content = _snapshot(self.array)
            self.array.flags.writeable = True

    def describe(self) -> str:
        a = self.array
        kind = f"a {a.dtype} array of shape {a.shape}"
        if self.fn is None:
            return f"the array given to {self.position} ({kind}) at {_site_location(self.site)}"
        name = getattr(self.fn, "__name__", None) or repr(self.fn)
        if isinstance(self.fn, np.ufunc) or getattr(np, name, None) is self.fn:
            name = f"numpy.{name}"
        elif getattr(operator, name, None) is self.fn:
            name = f"operator.{name}"
        return f"argument {self.position} of {name} ({kind}) recorded at {_site_location(self.site)}"


class Guards:
    """The arrays a tape has recorded, each guarded once (by identity: a guard keeps its
    array alive, so the id is not reused). A replay reads them live, so `gradient` first
    checks that none was modified in place since it was recorded — PyTorch's "modified
    by an inplace operation" — instead of differentiating at a point the forward pass
    never computed."""

    __slots__ = ("by_id", "held")

    def __init__(self):
        self.by_id: dict[int, _Guard] = {}
        self.held: list[_Guard] = []          # the guards holding their array read-only

    def operand(self, array: np.ndarray, fn, position: int | str, site: tuple | None = None,
                depth: int = 2) -> None:
        """Guard `array`, argument `position` of the recorded `fn` (None: a tracked leaf)
        recorded at the user's `site`; when not given, the search for it starts `depth`
        frames above this one."""
        guard = self.by_id.get(id(array))
        if guard is None:
            if not array.dtype.hasobject:
                guard = self.by_id[id(array)] = _Guard(array, fn, position, site or recording_site(depth + 1))
                if guard.locked:
                    self.held.append(guard)
        elif guard.changed_at is None and not guard.unchanged():
            guard.changed_at = user_location()     # read again, modified: two records saw different values

    def operands(self, fn, args, kwargs) -> None:
        """Guard every array among a record's arguments (nested lists, tuples, dicts)."""
        for position, a in enumerate(args):
            self._nested(a, fn, position)
        if kwargs:
            for key, a in kwargs.items():
                self._nested(a, fn, key)

    def _nested(self, a, fn, position) -> None:
        cls = type(a)
        if isinstance(a, np.ndarray):
            self.operand(a, fn, position)
        elif cls is tuple or cls is list:
            for item in a:
                self._nested(item, fn, position)
        elif cls is dict:
            for item in a.values():
                self._nested(item, fn, position)

    def check(self, arrays) -> None:
        """Raise MutationError if one of `arrays` (the inputs of a replay) was modified in
        place after the tape recorded it."""
        for a in arrays:
            guard = self.by_id.get(id(a))
            if guard is None:
                continue
            if guard.changed_at is not None:
                raise MutationError(
                    f"{guard.describe()} was modified in place before another operation read it at "
                    f"{guard.changed_at}, so the recorded operations saw different values and no replay can "
                    "reproduce them; modify a copy (np.array(a)) or record again after the change",
                    user_location())
            if not guard.unchanged():
                what = ("was made writeable again while the tape held it read-only, so the tape cannot tell "
                        "whether it changed" if guard.locked else "was modified in place after "
                        "the tape recorded it, so the gradient would be computed at values the forward pass "
                        "never saw")
                raise MutationError(
                    f"{guard.describe()} {what}; record the computation again after changing it (a new tape or "
                    "forward pass), or record a copy (tape.variable copies; np.array(a) for a constant)",
                    user_location())

    def unlock(self, keep: bool) -> None:
        """Give back every array held read-only (`keep`: remembered by copies from now on)."""
        for guard in self.held:
            guard.unlock(keep)
        self.held = []

    def __del__(self):
        if self.held:
            try:
                self.unlock(keep=False)
            except Exception:          # interpreter shutdown: modules may be gone already
                pass
