"""Values a traced function reads from outside its arguments, read again at every call.

A compiled function sees closure variables, globals, default arguments and attributes of
`self` (and of objects, lists, tuples and dicts reached from them) as Python does: at
call time. While a function is traced, a `Capture` scans what its code can name and
records a `Path` to every value it finds (`closure variable 'W' of f`, `global 'lr'`,
`self.W`, `params['b']`):

- an array that meets a traced value (`W * x`, `x @ W.T`) becomes an *implicit argument*:
  a trailing argument of the IR function that the caller fetches through its path on
  every call, so an in-place update (`W *= 2`) and a rebinding (`W = new`) are both
  seen without recompiling (a new shape or dtype is a new signature);
- everything else the code names is *guarded*: Python scalars, strings and None by
  value, containers by length and keys, functions by identity, arrays that were not
  used as arguments (only their shape, or NumPy computations on them before they met a
  traced value) by shape, dtype and contents (identity above `config.closure_snapshot_bytes`).
  A guard that fails makes the caller trace again.

Functions called from the traced one are scanned too (by name, through their own
closures and globals), and so are the methods of objects reached, to know which
attributes they read. What no name reaches (values produced by calls, module
attributes such as `config.W`) is a constant of the trace.
"""
from __future__ import annotations

import functools
import inspect
import os
import struct
import sys
import threading
import types
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

import jitgrad.ir as ir_package
from jitgrad.ir import Block, DType, TensorType, Value

MAX_DEPTH = 4
"""How many attribute/item steps a path may take from a closure cell, global or `self`."""
MAX_ITEMS = 256
"""Containers longer than this are guarded by length only, not scanned item by item."""
MAX_NODES = 4096
"""Values scanned per compile at most: scanning stays cheap next to compiling."""

_MISSING = object()


# --------------------------------------------------------------------------- paths

@dataclass(frozen=True)
class Path:
    """How to reach a value again: a root object and steps (`cell`, `item` key, `attr` name
    read from the instance `__dict__`, so no property or `__getattr__` runs)."""

    root: Any
    steps: tuple[tuple[str, Any], ...]
    label: str

    def fetch(self):
        """The value now at the end of the path, or _MISSING when the path is broken."""
        obj = self.root
        try:
            for kind, key in self.steps:
                if kind == "cell":
                    obj = obj.cell_contents
                elif kind == "item":
                    obj = obj[key]
                else:
                    obj = obj.__dict__[key]
        except (KeyError, IndexError, ValueError, AttributeError, TypeError):
            return _MISSING
        return obj

    def item(self, key) -> "Path":
        return Path(self.root, self.steps + (("item", key),), f"{self.label}[{key!r}]")

    def attr(self, name: str) -> "Path":
        return Path(self.root, self.steps + (("attr", name),), f"{self.label}.{name}")


def value_key(x) -> tuple:
    """A key that tells apart values Python calls equal: floats by bit pattern (so -0.0 is
    not 0.0 and nan is nan), bools from ints, NumPy scalars by dtype; tuples recursively."""
    kind = type(x)
    if isinstance(x, np.generic):
        return (kind, x.dtype.str, x.tobytes())
    if isinstance(x, float):
        return (kind, struct.pack("<d", x))
    if isinstance(x, complex):
        return (kind, struct.pack("<dd", x.real, x.imag))
    if isinstance(x, tuple):
        return (kind, tuple(value_key(v) for v in x))
    if isinstance(x, frozenset):
        return (kind, frozenset(value_key(v) for v in x))
    hash(x)                                   # TypeError for unhashable values
    return (kind, x)


def _is_plain_value(x) -> bool:
    return x is None or isinstance(x, (bool, int, float, complex, str, bytes, np.generic))


def _shown(x) -> str:
    if isinstance(x, np.ndarray):
        return f"an array {x.dtype}{list(x.shape)}"
    if x is _MISSING:
        return "nothing (the name is gone)"
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- guards and implicit arguments

class _Guard:
    path: Path

    def holds(self) -> bool:
        raise NotImplementedError

    def why(self) -> str:
        """What changed, for the recompile warning."""
        raise NotImplementedError


@dataclass
class _ValueGuard(_Guard):
    path: Path
    key: tuple
    shown: str

    def holds(self) -> bool:
        now = self.path.fetch()
        try:
            return _is_plain_value(now) and value_key(now) == self.key
        except TypeError:
            return False

    def why(self) -> str:
        return f"{self.path.label} changed from {self.shown} to {_shown(self.path.fetch())}"


@dataclass
class _StructureGuard(_Guard):
    path: Path
    kind: type
    layout: tuple

    @staticmethod
    def layout_of(x) -> tuple:
        return tuple(x.keys()) if isinstance(x, dict) else (len(x),)

    def holds(self) -> bool:
        now = self.path.fetch()
        return type(now) is self.kind and self.layout_of(now) == self.layout

    def why(self) -> str:
        now = self.path.fetch()
        if type(now) is not self.kind:
            return f"{self.path.label} changed from a {self.kind.__name__} to {_shown(now)}"
        return f"{self.path.label} changed its length or keys"


@dataclass
class _IdentityGuard(_Guard):
    path: Path
    ref: Any                                  # a weak reference where the object allows one

    def _target(self):
        return self.ref() if isinstance(self.ref, weakref.ref) else self.ref

    def holds(self) -> bool:
        target = self._target()
        return target is not None and self.path.fetch() is target

    def why(self) -> str:
        return f"{self.path.label} was rebound to another object ({_shown(self.path.fetch())})"


@dataclass
class _ArrayGuard(_Guard):
    """An array the code names but that is no implicit argument: its shape and dtype, and
    its contents (a snapshot) — or, above the snapshot size, its identity."""

    path: Path
    kind: type
    shape: tuple
    dtype: np.dtype
    contents: bytes | None
    ref: Any

    def holds(self) -> bool:
        now = self.path.fetch()
        if type(now) is not self.kind or now.shape != self.shape or now.dtype != self.dtype:
            return False
        if self.contents is not None:
            return now.tobytes() == self.contents
        return self.ref() is now

    def why(self) -> str:
        now = self.path.fetch()
        if type(now) is self.kind and now.shape == self.shape and now.dtype == self.dtype:
            return f"{self.path.label} changed its contents or was rebound (it is used by NumPy at trace time)"
        return f"{self.path.label} changed from an array {self.dtype}{list(self.shape)} to {_shown(now)}"


@dataclass
class _Implicit:
    """One implicit argument: the array at `path`, or a view of it (`view` = byte offset,
    shape and strides, valid while the base keeps its shape, strides and dtype)."""

    path: Path
    type: TensorType
    view: tuple | None = None
    base_layout: tuple | None = None

    def fetch(self):
        now = self.path.fetch()
        if type(now) is not np.ndarray:
            return None
        if self.view is None:
            if now.shape != self.type.shape or now.dtype != self.type.dtype.numpy:
                return None
            return now
        if (now.shape, now.strides, now.dtype) != self.base_layout or not _contiguous(now):
            return None
        offset, shape, strides = self.view
        flat = now.ravel(order="K")
        return np.lib.stride_tricks.as_strided(flat[offset // now.itemsize:], shape, strides, writeable=False)

    def why(self) -> str:
        now = self.path.fetch()
        expected = (f"an array {self.type}" if self.view is None
                    else f"an array {self.base_layout[2]}{list(self.base_layout[0])} (contiguous)")
        return f"{self.path.label} changed from {expected} to {_shown(now)}"


def _contiguous(a: np.ndarray) -> bool:
    return a.flags.c_contiguous or a.flags.f_contiguous


@dataclass
class CaptureSpec:
    """What one compiled signature reads from outside its arguments: the implicit
    arguments (in the order of the IR function's trailing arguments) and the guards."""

    implicit: list[_Implicit]
    guards: list[_Guard]

    def __bool__(self) -> bool:
        return bool(self.implicit or self.guards)

    def read(self) -> list[np.ndarray] | None:
        """The implicit arguments' current arrays, or None when a guard fails or an
        implicit argument changed shape or dtype (then the function must be traced again)."""
        for guard in self.guards:
            if not guard.holds():
                return None
        arrays = []
        for arg in self.implicit:
            array = arg.fetch()
            if array is None:
                return None
            arrays.append(array)
        return arrays

    def mismatch(self) -> str | None:
        """Why `read` fails (the first broken guard or argument), for warnings."""
        for guard in self.guards:
            if not guard.holds():
                return guard.why()
        for arg in self.implicit:
            if arg.fetch() is None:
                return arg.why()
        return None

    def labels(self) -> list[str]:
        return [a.path.label for a in self.implicit]


# --------------------------------------------------------------------------- scanning during a trace

class Capture:
    """The values reachable from the functions traced for one compile, and the implicit
    arguments created for those that met traced values."""

    def __init__(self):
        self.arrays: dict[int, tuple[np.ndarray, Path]] = {}
        self.paths: dict[int, list[Path]] = {}     # every path that reaches each array
        self.owners: dict[Value, list[np.ndarray]] = {}
        self.watched: list[tuple[Path, Any]] = []
        self.layouts: dict[int, tuple] = {}   # containers' length/keys when scanned
        self.implicit: dict[Value, _Implicit] = {}
        self._placeholders: dict[int, tuple[Any, Value]] = {}
        self._scanned: set[int] = set()
        self._keep: list = []                 # scanned objects stay alive: their ids stay unique
        self._nodes = 0

    # ----- scanning
    def scan(self, fn, depth: int = 0) -> None:
        """Record what `fn`'s code can name: its closure cells, the globals it mentions,
        its defaults, the attributes of its `self`."""
        fn = _unwrap(fn)
        if id(fn) in self._scanned or depth > MAX_DEPTH:
            return
        self._scanned.add(id(fn))
        self._keep.append(fn)
        if isinstance(fn, functools.partial):
            for i, v in enumerate(fn.args):
                self._visit(Path(fn.args, (("item", i),), f"partial argument {i}"), v, frozenset(), depth + 1)
            for k, v in (fn.keywords or {}).items():
                self._visit(Path(fn.keywords, (("item", k),), f"partial argument {k}"), v, frozenset(), depth + 1)
            self.scan(fn.func, depth + 1)
            return
        if isinstance(fn, types.MethodType):
            owner = fn.__self__
            self.scan(fn.__func__, depth)
            if not _internal(type(owner)):
                names = _code_names(fn.__func__.__code__) if hasattr(fn.__func__, "__code__") else frozenset()
                self._visit_object(Path(owner, (), "self"), owner, names | _class_names(type(owner)), depth + 1)
            return
        if not isinstance(fn, types.FunctionType):
            call = getattr(type(fn), "__call__", None)
            if isinstance(call, types.FunctionType) and not _internal(type(fn)):
                self.scan(types.MethodType(call, fn), depth)
            return
        code = fn.__code__
        if _internal_code(code):
            return
        names = _code_names(code)
        where = fn.__qualname__
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
            self._visit(Path(cell, (("cell", None),), f"closure variable '{name}' of {where}"),
                        _cell_value(cell), names, depth + 1)
        module_globals = fn.__globals__
        for name in names:
            if name in module_globals:
                self._visit(Path(module_globals, (("item", name),), f"global '{name}'"), module_globals[name],
                            names, depth + 1)
        for i, v in enumerate(fn.__defaults__ or ()):
            self._visit(Path(fn.__defaults__, (("item", i),), f"default argument {i} of {where}"),
                        v, names, depth + 1)
        for k, v in (fn.__kwdefaults__ or {}).items():
            self._visit(Path(fn.__kwdefaults__, (("item", k),), f"default argument '{k}' of {where}"), v,
                        names, depth + 1)

    def _visit(self, path: Path, value, names: frozenset, depth: int) -> None:
        if value is _MISSING or self._nodes >= MAX_NODES:
            return
        self._nodes += 1
        if isinstance(value, np.ndarray):
            self._keep.append(value)
            self.arrays.setdefault(id(value), (value, path))
            self.paths.setdefault(id(value), []).append(path)
            self.watched.append((path, value))
        elif _is_plain_value(value):
            self.watched.append((path, value))
        elif isinstance(value, types.ModuleType):
            return
        elif isinstance(value, (list, tuple, dict)):   # OrderedDict, namedtuple too
            self.watched.append((path, value))
            self.layouts.setdefault(id(value), _StructureGuard.layout_of(value))
            if depth >= MAX_DEPTH or len(value) > MAX_ITEMS or id(value) in self._scanned:
                return
            self._scanned.add(id(value))
            self._keep.append(value)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, (str, int)):
                    self._visit(path.item(key), item, names, depth + 1)
        elif isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
            self.watched.append((path, _Callable(value)))
            self.scan(value, depth)
        elif not isinstance(value, type) and not _internal(type(value)) and hasattr(value, "__dict__"):
            self._visit_object(path, value, names | _class_names(type(value)), depth)
        elif callable(value):
            self.watched.append((path, _Callable(value)))

    def _visit_object(self, path: Path, obj, names: frozenset, depth: int) -> None:
        attributes = getattr(obj, "__dict__", None)
        if not isinstance(attributes, dict) or depth >= MAX_DEPTH or id(obj) in self._scanned:
            return
        self._scanned.add(id(obj))
        self._keep.append(obj)
        for name, value in list(attributes.items()):
            if name in names:
                self._visit(path.attr(name), value, names, depth + 1)

    # ----- during the trace
    def value_for(self, array: np.ndarray) -> Value | None:
        """The implicit argument for an array from outside the trace (or a view of one),
        created on first use; None for arrays the trace made itself."""
        known = self._placeholders.get(id(array))
        if known is not None and known[0] is array:
            return known[1]
        try:
            dtype = DType.from_numpy(array.dtype)
        except KeyError:
            return None
        found = self.arrays.get(id(array))
        if found is not None and found[0] is array:
            implicit, owners = _Implicit(found[1], TensorType(array.shape, dtype)), [array]
        else:
            implicit = self._view_of_outside(array, dtype)
            if implicit is None:
                return None
            owners = self._containing(array)
        placeholder = Block().add_arg(implicit.type)
        self.implicit[placeholder] = implicit
        self.owners[placeholder] = owners
        self._placeholders[id(array)] = (array, placeholder)
        self._keep.append(array)
        return placeholder

    def _view_of_outside(self, array: np.ndarray, dtype: DType) -> _Implicit | None:
        """A view (`W.T`, `W[0]`, `W.reshape(...)`) into the memory of a contiguous outside
        array of the same dtype, re-derived from that array at each call."""
        if array.base is None or array.size == 0:
            return None
        low, high = _byte_bounds(array)
        for base, path in self.arrays.values():
            if base.dtype != array.dtype or not _contiguous(base) or base.size == 0:
                continue
            base_low, base_high = _byte_bounds(base)
            if base_low <= low and high <= base_high:
                offset = array.__array_interface__["data"][0] - base.__array_interface__["data"][0]
                layout = (base.shape, base.strides, base.dtype)
                return _Implicit(path, TensorType(array.shape, dtype),
                                 (offset, array.shape, array.strides), layout)
        return None

    def _containing(self, array: np.ndarray) -> list[np.ndarray]:
        """The outside arrays whose memory holds all of `array`'s (the arrays it may be a
        view of)."""
        low, high = _byte_bounds(array)
        found = []
        for base, _ in self.arrays.values():
            if base.size:
                base_low, base_high = _byte_bounds(base)
                if base_low <= low and high <= base_high:
                    found.append(base)
        return found

    def add_argument(self, placeholder: Value, argument) -> None:
        """An implicit argument that stands for no outside array (the random key of
        `tracing.random`, drawn at each call): `argument` has a `type`, a `path` with a
        `label`, `fetch()` giving the array for this call and `why()`."""
        self.implicit[placeholder] = argument
        self.owners[placeholder] = []

    # ----- after the trace
    def owns(self, value: Value) -> bool:
        return value in self.implicit

    def finish(self, captured: list[Value], snapshot_bytes: int) -> CaptureSpec:
        """The spec for a function whose trailing arguments are `captured` (implicit
        placeholders, in order): guards for everything scanned that is no implicit argument."""
        implicit = [self.implicit[v] for v in captured]
        used = {id(array) for v in captured for array in self.owners[v]}
        guards: list[_Guard] = []
        for v in captured:
            # An array that more than one name reaches (`self.W1` and `self.layers[0]`), or a
            # view that more than one outside array holds, is pinned by identity on every
            # name: which name the code read is unknown, so a rebinding of any traces again.
            reached = [(path, array) for array in self.owners[v] for path in self.paths[id(array)]]
            if len(reached) > 1:
                guards.extend(_IdentityGuard(path, weakref.ref(array)) for path, array in reached)
        layouts = self.layouts
        seen_paths: set[tuple] = set()
        for path, scanned in self.watched:
            where = (id(path.root), path.steps)
            if where in seen_paths:
                continue
            seen_paths.add(where)
            now = path.fetch()                    # values as the trace left them
            if isinstance(scanned, np.ndarray):
                if id(scanned) in used and now is scanned:
                    continue
                if not isinstance(now, np.ndarray):    # the trace itself rebound it
                    guards.append(_ValueGuard(path, value_key(now), _shown(now)) if _is_plain_value(now)
                                  else _IdentityGuard(path, _reference(now)))
                    continue
                plain = type(now) is np.ndarray          # subclasses (masked, matrix): by identity
                contents = now.tobytes() if plain and now.nbytes <= snapshot_bytes else None
                guards.append(_ArrayGuard(path, type(now), now.shape, now.dtype, contents, weakref.ref(now)))
            elif isinstance(scanned, _Callable):
                guards.append(_IdentityGuard(path, _reference(scanned.value)))
            elif isinstance(scanned, (list, tuple, dict)):
                if type(now) is not type(scanned):
                    guards.append(_ValueGuard(path, ("rebound",), _shown(now)))
                elif _holds_computation(now) and layouts.get(id(scanned)) == _StructureGuard.layout_of(now):
                    guards.append(_StructureGuard(path, type(now), _StructureGuard.layout_of(now)))
            elif _is_plain_value(now) and _same_value(scanned, now):
                guards.append(_ValueGuard(path, value_key(now), _shown(now)))
        return CaptureSpec(implicit, guards)


@dataclass
class _Callable:
    value: Any


def _reference(target):
    """A weak reference where the object allows one (functions, arrays), else the object."""
    try:
        return weakref.ref(target)
    except TypeError:
        return target


def _same_value(a, b) -> bool:
    """Is a scanned plain value unchanged at the end of the trace? A value the traced
    function itself changes (a call counter) is state it writes, not an input: no guard."""
    try:
        return value_key(a) == value_key(b)
    except TypeError:
        return False


def _holds_computation(container, depth: int = 0) -> bool:
    """Does a list, tuple or dict hold arrays or functions, directly or in nested
    containers (layers a loop may run over), as opposed to plain values only (a log that a
    function appends to)? Only the former are guarded by length and keys."""
    if depth > MAX_DEPTH or len(container) > MAX_ITEMS:
        return False
    items = container.values() if isinstance(container, dict) else container
    return any(isinstance(v, np.ndarray) or callable(v)
               or (isinstance(v, (list, tuple, dict)) and _holds_computation(v, depth + 1)) for v in items)


def _cell_value(cell):
    try:
        return cell.cell_contents
    except ValueError:
        return _MISSING


def _unwrap(fn):
    try:
        return inspect.unwrap(fn)
    except ValueError:
        return fn


def _byte_bounds(a: np.ndarray) -> tuple[int, int]:
    return np.lib.array_utils.byte_bounds(a)


@functools.lru_cache(maxsize=1024)
def _code_names(code: types.CodeType) -> frozenset:
    """Every global and attribute name the code (and the code of its nested functions,
    lambdas and comprehensions) mentions."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return frozenset(names)


@functools.lru_cache(maxsize=256)
def _class_names(cls: type) -> frozenset:
    """Names mentioned by the methods (and properties) of a class: the attributes its
    instances' methods may read."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or _internal(klass):
            continue
        for member in vars(klass).values():
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property):
                member = member.fget
            code = getattr(member, "__code__", None)
            if isinstance(code, types.CodeType):
                names |= _code_names(code)
    return frozenset(names)


_INTERNAL_PREFIXES = ("jitgrad", "numpy", "builtins", "functools", "ir")


@functools.lru_cache(maxsize=1024)
def _internal(cls: type) -> bool:
    """Is `cls` jitgrad's, NumPy's, the standard library's or an installed package's? Its
    instances are opaque: not looked into, not guarded."""
    module = getattr(cls, "__module__", "") or ""
    if module.split(".")[0] in _INTERNAL_PREFIXES:
        return True
    path = getattr(sys.modules.get(module), "__file__", None)
    return isinstance(path, str) and os.path.abspath(path).startswith(_INTERNAL_DIRS)


_INTERNAL_DIRS = tuple(os.path.dirname(path) + os.sep for path in (
    os.path.dirname(os.path.abspath(__file__)), os.path.abspath(np.__file__), os.path.abspath(ir_package.__file__),
    os.path.abspath(functools.__file__)))
"""Code in jitgrad, NumPy, the IR package, the standard library and installed packages
(site-packages lies under the standard library's directory) is never scanned."""


def _internal_code(code: types.CodeType) -> bool:
    return code.co_filename.startswith(_INTERNAL_DIRS)


# --------------------------------------------------------------------------- the active capture

class _Active(threading.local):
    def __init__(self):
        self.stack: list[Capture] = []


_active = _Active()


@contextmanager
def capturing() -> Iterator[Capture]:
    """Traces run inside this block (nested ones included) read outside values through
    one `Capture`."""
    capture = Capture()
    _active.stack.append(capture)
    try:
        yield capture
    finally:
        _active.stack.pop()


def active() -> Capture | None:
    return _active.stack[-1] if _active.stack else None


def implicit_value(array) -> Value | None:
    """The implicit argument standing for an outside array in the trace being compiled,
    or None (no compile in progress, or an array the trace made itself)."""
    capture = active()
    if capture is None or type(array) is not np.ndarray:
        return None
    return capture.value_for(array)
