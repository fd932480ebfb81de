"""The user-facing transformations, with JAX's conventions: jit, grad, value_and_grad,
vjp, and the `jit_grad` decorator.

Every transformation returns a `Compiled` callable. Called on arrays it looks up (or
builds) native code for the argument signature — pytree structure, shapes, dtypes and
static arguments — so a repeated call neither retraces nor recompiles. Values the function
reads from closures, globals and attributes are read at each call (`tracing/implicit.py`,
docs/semantics-closures.md). Called on traced values (inside another transformation) it
inlines its IR instead, which is how the transformations compose.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import operator
import os
import pickle
import sys
import threading
import types
import warnings
import weakref
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np

from jitgrad.errors import ArgumentError, JitgradError, RecompileWarning
from jitgrad.ir import DType, TensorType, is_float_dtype
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.tracing.random import same_key
from jitgrad.tracing.implicit import value_key
from jitgrad.tracing.tracer import abstract_leaf
from .backends import backend_for
from .config import COMPILE_SETTINGS, config
from .pipeline import Lowered, compile_signature
from .callback import has_callbacks, raise_pending
from .custom import eager_apply
from .staging import (Staged, call_inline, check_differentiable_dtypes, grad_transform, has_tracers,
                      jacobian_transform, jvp_transform, normalize_args, trace_transform, vjp_transform)


FAST_PATH_AFTER_CALLS = 2
"""A signature called this often gets the native call path (`backends/cpu/fastcall.py`,
~1 us): building it costs a small LLVM compile, not worth it for one-off calls."""


_LIVE: "weakref.WeakSet[Compiled]" = weakref.WeakSet()
"""Every Compiled object alive, for `clear_caches`."""


def _drop_native_call_paths() -> None:
    """A compile setting changed: the native call paths (which skip the signature
    lookup, and so the settings in its key) go; the next call looks up its key."""
    for compiled in list(_LIVE):
        with compiled._lock:
            compiled._fast, compiled._fast_lowered = None, None


config.on_compile_settings_change(_drop_native_call_paths)


class Compiled:
    """A transformed function compiled per argument signature.

    Signatures are kept in a least-recently-used cache of at most
    `config.max_signatures_per_function` entries. A key (pytree structure, leaf types,
    static arguments) can hold several entries when the function reads closure or global
    values: each entry checks its own (`Lowered.read_captures`). Compiling is once per
    key however many threads call at once (a lock per key; other keys compile in
    parallel up to the backend's LLVM lock)."""

    def __init__(self, fun: Callable, stage: Callable[[tuple], Staged], static_argnums: Sequence[int] = (),
                 name: str | None = None):
        self.fun = fun
        self.stage = stage
        self.static_argnums = tuple(static_argnums)
        self.name = name or getattr(fun, "__name__", "fn")
        self._lock = threading.Lock()     # guards the fields below
        self._cache: OrderedDict[Any, list[Lowered]] = OrderedDict()
        self._key_locks: dict[Any, threading.RLock] = {}
        self._calls: dict[int, int] = {}  # calls per entry (by id of its Lowered)
        self._fast = None                 # native call path for the hottest signature
        self._fast_lowered: Lowered | None = None   # keeps the fast path's code alive
        self._compiles = 0
        self._compiles_since_clear = 0    # what the recompile warning counts
        self._warned = False
        self._last_key = None
        functools.update_wrapper(self, fun, updated=())
        _LIVE.add(self)

    def _static(self, args: tuple) -> tuple[int, ...]:
        """static_argnums as non-negative positions for this call (negatives count from the end)."""
        return tuple(sorted({i % len(args) for i in self.static_argnums if -len(args) <= i < len(args)}))

    def _signature(self, args: tuple):
        static_argnums = self._static(args)
        try:
            static = tuple((i, value_key(args[i])) for i in static_argnums)
        except TypeError:
            raise ArgumentError(f"static arguments of {self.name} must be hashable") from None
        dynamic = tuple(a for i, a in enumerate(args) if i not in static_argnums)
        leaves, tree = tree_flatten(dynamic)
        settings = config.compile_settings()
        if self.device is not None:       # jit(f, device=...) overrides config.device for this function
            settings = (self.device, *settings[1:])
        return (tree, tuple(abstract_leaf(x) for x in leaves), static, settings), leaves

    def lower(self, *args) -> Lowered:
        """Trace, transform, optimize and compile for these arguments; every stage's IR is
        available as text (`.as_text(stage)`, `.stages`)."""
        args = normalize_args(args, self._static(args))
        key, _ = self._signature(args)
        return self._entry(key, args)[0]

    def __call__(self, *args, **kwargs):
        if kwargs:
            args = self._positional(args, kwargs)
        fast = self._fast
        if fast is not None:
            return fast(*args)            # falls back to _call for anything it does not take
        return self._call(*args)

    def _positional(self, args: tuple, kwargs: dict) -> tuple:
        """Keyword arguments bound to their positions (argnums and static_argnums count
        positions, as in JAX); keyword-only parameters are not supported."""
        try:
            bound = inspect.signature(self.fun).bind(*args, **kwargs)
        except (TypeError, ValueError) as err:
            raise ArgumentError(f"{self.name}: {err}") from None
        if bound.kwargs:
            raise ArgumentError(f"{self.name}: keyword-only arguments ({', '.join(bound.kwargs)}) are not supported "
                                "by compiled functions; make them positional or close over them")
        return bound.args

    _jitgrad_traceable = True       # eager tapes and dual numbers record a call as one call

    def _call(self, *args):
        if has_tracers(args):
            return call_inline(self.stage, args, self._static(args))
        eager = eager_apply(self, args)
        if eager is not None:
            return eager
        args = normalize_args(args, self._static(args))
        key, leaves = self._signature(args)
        lowered, implicit_arrays = self._entry(key, args)
        with self._lock:
            calls = self._calls[id(lowered)] = self._calls.get(id(lowered), 0) + 1
            install = (calls == FAST_PATH_AFTER_CALLS and not self.static_argnums and self._holds(key, lowered)
                       and not has_callbacks(lowered.function))   # a callback's error is raised on this path
        if install:
            fast = self._native_path(lowered, len(args))
            with self._lock:
                if self._holds(key, lowered):  # still cached: its code stays alive with the fast path
                    self._fast_lowered, self._fast = lowered, fast
        result = lowered.run(leaves, implicit_arrays)
        raise_pending()              # what a pure_callback's function raised during the run
        return result

    def _native_path(self, lowered: Lowered, n_args: int):
        """The native call function for `lowered`; where the function reads closure or
        global values, wrapped in a Python function that checks the guards and passes the
        implicit arrays after the arguments (the native code checks every buffer)."""
        if not lowered.captures:
            return lowered.fast_call(self._call)
        python_path = weakref.WeakMethod(self._call)   # no reference cycle through the native function

        def explicit_only(*both):
            return python_path()(*both[:n_args])
        native = lowered.fast_call(explicit_only)
        if native is None:
            return None
        read = lowered.captures.read

        def closure_reading_path(*args):
            arrays = read() if len(args) == n_args else None
            if arrays is None:
                return python_path()(*args)
            return native(*args, *arrays)
        return closure_reading_path

    # ----- the signature cache
    def _find(self, key) -> tuple[Lowered | None, list | None]:
        """A cached entry for `key` whose closure reads still hold, and its implicit arrays."""
        with self._lock:
            entries = self._cache.get(key)
            if not entries:
                return None, None
            self._cache.move_to_end(key)
            entries = list(entries)
        for lowered in entries:
            arrays = lowered.read_captures()
            if arrays is not None:
                return lowered, arrays
        return None, None

    def _entry(self, key, args: tuple) -> tuple[Lowered, list]:
        """The entry for this call: cached, or compiled once under the key's lock."""
        lowered, arrays = self._find(key)
        if lowered is not None:
            self._last_key = key
            return lowered, arrays
        with self._lock:
            # re-entrant: a trace that calls this function on the same signature recurses
            # (and fails as recursion does) instead of waiting for itself
            key_lock = self._key_locks.setdefault(key, threading.RLock())
        with key_lock:
            lowered, arrays = self._find(key)   # another thread may have compiled it meanwhile
            if lowered is not None:
                return lowered, arrays
            reason = self._why_compile(key)
            try:
                for _ in range(2):
                    backend = None if self.device is None else backend_for(self.device)
                    lowered = compile_signature(self.stage, args, self.name, backend)
                    arrays = lowered.read_captures()
                    if arrays is not None:
                        break
                else:
                    raise JitgradError(f"{self.name}: {lowered.captures.mismatch()} while it was being compiled; "
                                       "the values a compiled function reads from closures and globals must not "
                                       "change during its trace")
            except BaseException:
                with self._lock:
                    if key not in self._cache:
                        self._key_locks.pop(key, None)   # a signature that fails keeps no lock
                raise
            self._insert(key, lowered)
            self._last_key = key
        self._maybe_warn(reason)
        return lowered, arrays

    def _holds(self, key, lowered: Lowered) -> bool:
        return any(entry is lowered for entry in self._cache.get(key, ()))

    def _insert(self, key, lowered: Lowered) -> None:
        with self._lock:
            self._cache.setdefault(key, []).insert(0, lowered)
            self._cache.move_to_end(key)
            self._compiles += 1
            self._compiles_since_clear += 1
            limit = max(1, config.max_signatures_per_function)
            while self.cache_size > limit:
                oldest_key = next(iter(self._cache))
                entries = self._cache[oldest_key]
                self._drop(entries.pop())
                if not entries:
                    del self._cache[oldest_key]
                    if oldest_key != key:
                        self._key_locks.pop(oldest_key, None)

    def _drop(self, lowered: Lowered) -> None:
        """Forget an evicted entry (its machine code is freed once nothing refers to it)."""
        self._calls.pop(id(lowered), None)
        if self._fast_lowered is lowered:
            self._fast, self._fast_lowered = None, None

    def _why_compile(self, key) -> str:
        """What differs from what was compiled before, in words, for the recompile warning."""
        with self._lock:
            entries = list(self._cache.get(key, ()))
            last = self._last_key
        for lowered in entries:
            why = lowered.captures.mismatch()
            if why is not None:
                return why
        if last is None:
            return "it was called for the first time"
        return _describe_change(self.fun, last, key)

    def _maybe_warn(self, reason: str) -> None:
        limit = config.recompile_warning_after
        with self._lock:
            warn = limit and self._compiles_since_clear > limit and not self._warned
            self._warned = self._warned or bool(warn)
            count = self._compiles_since_clear
        if warn:
            warnings.warn(f"{self.name} has been compiled {count} times (more than "
                          f"config.recompile_warning_after = {limit}); the last time because {reason}. Each new "
                          "signature traces and compiles again: pass values that change as arguments (not "
                          "static ones, not closure constants), or keep shapes and dtypes fixed.",
                          RecompileWarning, stacklevel=_user_stacklevel())

    def clear_cache(self) -> None:
        """Drop every compiled signature of this function (and its native call path)."""
        with self._lock:
            self._fast, self._fast_lowered = None, None
            self._cache.clear()
            self._calls.clear()
            self._key_locks.clear()
            self._last_key = None
            self._compiles_since_clear = 0

    recipe: tuple | None = None
    device: str | None = None
    """The device this function compiles for (`jit(f, device=...)`); None: `config.device`."""
    """(factory name, keyword arguments) that rebuild this object from `fun` (`jit`,
    `grad`, ...), for pickling; None where it cannot be rebuilt that way."""

    def __reduce__(self):
        """Pickled by reference: the module and qualified name of the function and how it
        was transformed, so a process pool (fork or spawn) can send it; the receiver
        imports the module and compiles its own code."""
        module = getattr(self.fun, "__module__", None)
        qualname = getattr(self.fun, "__qualname__", "")
        if self.recipe is None or module is None or "<" in qualname:
            raise pickle.PicklingError(
                f"cannot pickle the compiled function {self.name}: only transformations of functions defined at "
                f"the top level of a module pickle (by reference), and {qualname or self.name} is not one")
        return _restore_compiled, (module, qualname, self.recipe)

    @property
    def cache_size(self) -> int:
        """Compiled signatures held now."""
        return sum(len(entries) for entries in self._cache.values())

    @property
    def compile_count(self) -> int:
        """Signatures compiled since creation (evicted ones included)."""
        return self._compiles


def _restore_compiled(module: str, qualname: str, recipe: tuple) -> Compiled:
    """Unpickle a Compiled object: the module's own object where it is that same
    transformation (`@jit def f`), else the transformation applied again."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    if isinstance(target, Compiled):
        if target.recipe == recipe:
            return target
        target = target.fun
    factory, kwargs = recipe
    return _FACTORIES[factory](target, **dict(kwargs))


def _remember(compiled: Compiled, factory: str, **kwargs) -> Compiled:
    compiled.recipe = (factory, tuple(sorted(kwargs.items())))
    return compiled


def _locks_after_fork_in_child() -> None:
    """A forked child has only the forking thread: a lock another thread held (a compile
    in progress, a cache update) would stay held there forever. Fresh locks; no compile
    is in progress in the child."""
    for compiled in list(_LIVE):
        compiled._lock = threading.Lock()
        compiled._key_locks = {}
    global _TRANSFORMS_LOCK
    _TRANSFORMS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_locks_after_fork_in_child)

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_stacklevel() -> int:
    """The `stacklevel` that points a warning at the user's line: the first frame outside
    jitgrad (the call may come through the native call path, which has no Python frame)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def clear_caches() -> None:
    """Drop the compiled code that every live compiled function keeps in memory (and the
    functions `vjp`/`jvp`/`linearize` keep per transformed function); the next call of
    each compiles again (from the disk cache when it is on)."""
    for compiled in list(_LIVE):
        compiled.clear_cache()
    with _TRANSFORMS_LOCK:
        _TRANSFORMS.clear()


def _describe_change(fun: Callable, old, new) -> str:
    """Which part of a signature key changed: the argument structure, a leaf's type
    (shape and dtype), or a static argument's value."""
    old_tree, old_types, old_static, old_settings = old
    new_tree, new_types, new_static, new_settings = new
    if old_settings != new_settings:
        changed = [f"config.{name} from {a!r} to {b!r}" for name, a, b in
                   zip(COMPILE_SETTINGS, old_settings, new_settings) if a != b]
        return f"the compile settings changed ({', '.join(changed)})"
    if old_tree != new_tree:
        return f"the structure of the arguments changed from {old_tree} to {new_tree}"
    static_positions = {i for i, _ in old_static}
    positions = [i for i in range(len(new_tree.children) + len(static_positions)) if i not in static_positions]
    leaf = 0
    for position, child in zip(positions, new_tree.children):
        for k in range(child.num_leaves):
            a, b = old_types[leaf + k], new_types[leaf + k]
            if a != b:
                within = f" (leaf {k} of its pytree)" if child.kind != "leaf" else ""
                return f"argument {_parameter(fun, position)}{within} changed from {a} to {b}"
        leaf += child.num_leaves
    for (i, a), (_, b) in zip(old_static, new_static, strict=True):
        if a != b:
            return (f"static argument {_parameter(fun, i)} changed from {a[1]!r} ({a[0].__name__}) to {b[1]!r} "
                    f"({b[0].__name__})")
    return "the closure values it reads changed"


def _parameter(fun: Callable, position: int) -> str:
    """`1 (n)`: a positional argument by position and, where known, by name."""
    try:
        names = list(inspect.signature(fun).parameters)
    except (TypeError, ValueError):
        names = []
    return f"{position} ({names[position]})" if position < len(names) else str(position)


def _static_positions(fun: Callable, static_argnums, static_argnames) -> tuple[int, ...]:
    """static_argnums and the positions of the parameters named in static_argnames (a
    static argument passed by keyword is bound to its position before the call)."""
    nums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    names = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames or ())
    if not names:
        return nums
    try:
        parameters = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        raise ArgumentError(f"static_argnames needs a function with a signature; {_name(fun)} has none") from None
    positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for name in names:
        if name not in positional:
            raise ArgumentError(f"static_argnames: {_name(fun)} has no positional parameter {name!r} "
                                f"(its positional parameters: {', '.join(positional) or 'none'})")
    return tuple(dict.fromkeys(nums + tuple(positional.index(n) for n in names)))


def _with_static(fun: Callable, argnums, static: tuple[int, ...], transform: Callable) -> Callable:
    """The stage of `transform(bound, argnums')` where `bound` is `fun` with the static
    arguments fixed to this call's values and argnums' counts the dynamic ones only."""
    if not static:
        return transform(fun, argnums)
    single = isinstance(argnums, int)

    def stage(args: tuple):
        fixed = {i % len(args) for i in static if -len(args) <= i < len(args)}
        dynamic = [i for i in range(len(args)) if i not in fixed]
        wanted = [operator.index(i) % len(args) if -len(args) <= i < len(args) else i
                  for i in ((argnums,) if single else argnums)]
        clash = [i for i in wanted if i in fixed]
        if clash:
            raise ArgumentError(f"{_name(fun)}: argument {clash[0]} is both differentiated (argnums) and static")
        renumbered = [dynamic.index(i) if i in dynamic else i for i in wanted]

        def bound(*dyn):
            it = iter(dyn)
            return fun(*[args[i] if i in fixed else next(it) for i in range(len(args))])
        bound.__name__ = _name(fun)
        bound.__wrapped__ = fun
        return transform(bound, renumbered[0] if single else tuple(renumbered))(tuple(args[i] for i in dynamic))
    return stage


def jit(fun: Callable | None = None, *, static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (), device: str | None = None):
    """Compile `fun` to native code (per argument signature). Static arguments (by
    position or by parameter name) are Python values fixed at trace time: each new
    value compiles again. `device` ("cpu", "gpu"/"cuda", any registered backend) compiles
    this function for that device whatever `config.device` says."""
    if fun is None:
        return lambda f: jit(f, static_argnums=static_argnums, static_argnames=static_argnames, device=device)
    static = _static_positions(fun, static_argnums, static_argnames)
    compiled = Compiled(fun, trace_transform(fun, static), static)
    if device is None:
        return _remember(compiled, "jit", static_argnums=static)
    backend_for(device)               # an unknown device fails here, not at the first call
    compiled.device = device
    return _remember(compiled, "jit", static_argnums=static, device=device)


def grad(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False, memory_budget=None,
         strict: bool = False, static_argnums: int | Sequence[int] = (),
         static_argnames: str | Sequence[str] = (), holomorphic: bool = False) -> Compiled:
    """d fun / d args[argnums] for a function with a scalar output (reverse mode).
    `memory_budget` (bytes, or a string like "64MB") makes the backward pass recompute
    forward values instead of storing them, as far as needed to fit (`passes/remat.py`);
    a budget no recomputation meets warns (`MemoryBudgetWarning`), or with `strict=True`
    raises `MemoryBudgetError`, when a signature is compiled. static_argnums and
    static_argnames as in `jit` (argnums still count every positional argument).
    holomorphic=True (as JAX): a complex scalar function of complex arguments; the result
    is the complex derivative f'(z), not the conjugate-Wirtinger gradient of a real loss."""
    static = _static_positions(fun, static_argnums, static_argnames)
    stage = _with_static(fun, argnums, static, lambda f, nums: grad_transform(
        f, nums, has_aux, "grad", memory_budget, strict, holomorphic))
    return _remember(Compiled(fun, stage, static, name=f"grad_{_name(fun)}"), "grad", argnums=argnums,
                     has_aux=has_aux, memory_budget=memory_budget, strict=strict, static_argnums=static,
                     holomorphic=holomorphic)


def value_and_grad(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False,
                   memory_budget=None, strict: bool = False, static_argnums: int | Sequence[int] = (),
                   static_argnames: str | Sequence[str] = (), holomorphic: bool = False) -> Compiled:
    """(fun(*args), grad(fun)(*args)) in one compiled function. memory_budget, strict,
    static_argnums, static_argnames, holomorphic: see `grad`."""
    static = _static_positions(fun, static_argnums, static_argnames)
    stage = _with_static(fun, argnums, static, lambda f, nums: grad_transform(
        f, nums, has_aux, "value_and_grad", memory_budget, strict, holomorphic))
    return _remember(Compiled(fun, stage, static, name=f"value_and_grad_{_name(fun)}"), "value_and_grad",
                     argnums=argnums, has_aux=has_aux, memory_budget=memory_budget, strict=strict,
                     static_argnums=static, holomorphic=holomorphic)


TRANSFORM_CACHE_SIZE = 64
"""Compiled objects `vjp`/`jvp`/`linearize` keep (least recently used dropped)."""

_TRANSFORMS: OrderedDict[tuple, Compiled] = OrderedDict()
_TRANSFORMS_LOCK = threading.Lock()


def _function_identity(fun: Callable) -> tuple:
    """What makes two callables the same program with the same outside values: a lambda
    made anew in every loop iteration has the same code, globals and closure cells, and a
    bound method the same function and object. Compiled code reads closure values at
    each call, so such callables can share one Compiled object."""
    if isinstance(fun, types.MethodType):
        return ("method", id(fun.__func__), id(fun.__self__))
    if isinstance(fun, types.FunctionType):
        return ("function", id(fun.__code__), id(fun.__globals__), tuple(map(id, fun.__closure__ or ())),
                id(fun.__defaults__), id(fun.__kwdefaults__))
    return ("object", id(fun))


def _transformed(kind: str, fun: Callable, param) -> Compiled:
    """One Compiled object per (transformation, function, parameter), so that calling
    jitgrad.vjp(f, x) or jitgrad.jvp(f, ...) in a loop compiles once, not every time.
    The entry refers to `fun`, which keeps every object in the identity alive (so no id
    is reused while the entry exists)."""
    key = (kind, param, _function_identity(fun))
    with _TRANSFORMS_LOCK:
        compiled = _TRANSFORMS.get(key)
        if compiled is not None:
            _TRANSFORMS.move_to_end(key)
            return compiled
    if kind == "jit":
        compiled = jit(fun)
    elif kind == "grad":
        compiled = grad(fun, argnums=param)
    elif kind == "vjp":
        compiled = Compiled(fun, vjp_transform(fun, param), name=f"vjp_{_name(fun)}")
    else:
        compiled = Compiled(fun, jvp_transform(fun, param), name=f"jvp_{_name(fun)}")
    with _TRANSFORMS_LOCK:
        compiled = _TRANSFORMS.setdefault(key, compiled)
        _TRANSFORMS.move_to_end(key)
        while len(_TRANSFORMS) > TRANSFORM_CACHE_SIZE:
            _TRANSFORMS.popitem(last=False)
    return compiled


def vjp(fun: Callable, *primals):
    """(fun(*primals), vjp_fn) where vjp_fn(cotangent) returns a tuple with one cotangent
    per primal (zeros for integer inputs). vjp_fn recomputes the forward pass."""
    with same_key() as key:                 # vjp_fn sees the forward pass's random numbers
        out = _transformed("jit", fun, None)(*primals)

    def vjp_fn(cotangent):
        with same_key(key):
            return _transformed("vjp", fun, len(primals))(*primals, cotangent)[1]
    return out, vjp_fn


def jvp(fun: Callable, primals: Sequence, tangents: Sequence):
    """Forward mode: (fun(*primals), directional derivative along `tangents`)."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ArgumentError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    return _transformed("jvp", fun, len(primals))(*primals, *tangents)


def linearize(fun: Callable, *primals):
    """(fun(*primals), f_jvp) where f_jvp(*tangents) is the derivative at `primals`
    applied to `tangents` (compiled once; each call reruns the forward-mode program)."""
    with same_key() as key:                 # f_jvp sees the forward pass's random numbers
        out = _transformed("jit", fun, None)(*primals)

    def f_jvp(*tangents):
        with same_key(key):
            return jvp(fun, primals, tangents)[1]
    return out, f_jvp


INLINE_JACOBIAN_LIMIT = 32
"""Jacobians with at most this many basis directions compile into one program (a JVP or
VJP copy per direction, fused together); larger ones called on arrays run one compiled
JVP/VJP per direction instead, so the compile does not grow with the input."""


class Jacobian(Compiled):
    """jacfwd/jacrev: the Jacobian d out / d args[argnums], shaped out.shape + arg.shape."""

    def __init__(self, fun: Callable, argnums, mode: str, holomorphic: bool = False):
        super().__init__(fun, jacobian_transform(fun, argnums, mode, holomorphic), name=f"jac{mode}_{_name(fun)}")
        self.argnums, self.mode, self.holomorphic = argnums, mode, holomorphic

    def _call(self, *args):
        if has_tracers(args):
            return super()._call(*args)
        args = normalize_args(args)
        single = isinstance(self.argnums, int)
        nums = [i % len(args) for i in ((self.argnums,) if single else self.argnums)]
        if not all(isinstance(a, np.ndarray) for a in args):
            return super()._call(*args)               # pytrees: the one-program path
        with same_key():                              # one random draw for every direction
            return self._call_arrays(args, single, nums)

    def _call_arrays(self, args: tuple, single: bool, nums: list[int]):
        out_leaves, out_tree = tree_flatten(_transformed("jit", self.fun, None)(*args))
        check_differentiable_dtypes(f"jac{self.mode}", [_array_type(args[i]) for i in nums],
                                    [_array_type(np.asarray(o)) for o in out_leaves], self.holomorphic)
        directions = (sum(args[i].size for i in nums) if self.mode == "fwd"
                      else sum(np.size(o) for o in out_leaves))
        if directions <= INLINE_JACOBIAN_LIMIT:
            return super()._call(*args)
        blocks = self._by_directions(args, nums, out_leaves, out_tree)
        per_output = [blocks[k][0] if single else tuple(blocks[k]) for k in range(len(out_leaves))]
        return tree_unflatten(out_tree, per_output)

    def _by_directions(self, args, nums, out_leaves, out_tree) -> list[list[np.ndarray]]:
        """blocks[k][j]: d output k / d args[nums[j]], one compiled call per direction."""
        outs = [np.asarray(o) for o in out_leaves]
        if self.mode == "fwd":
            jvp_compiled = _transformed("jvp", self.fun, len(args))
            columns = [[[] for _ in nums] for _ in outs]
            for j, i in enumerate(nums):
                for e in _basis(args[i]):
                    tangents = [e if m == i else np.zeros_like(a) for m, a in enumerate(args)]
                    t_out = tree_flatten(jvp_compiled(*args, *tangents)[1])[0]
                    for k, t in enumerate(t_out):
                        columns[k][j].append(np.asarray(t).reshape(-1))
            return [[np.stack(columns[k][j], axis=-1).reshape(outs[k].shape + args[i].shape)
                     for j, i in enumerate(nums)] for k in range(len(outs))]
        vjp_compiled = _transformed("vjp", self.fun, len(args))
        blocks = []
        for k, out in enumerate(outs):
            rows = [[] for _ in nums]
            for e in _basis(out):
                cts = [e if m == k else np.zeros_like(o) for m, o in enumerate(outs)]
                grads = vjp_compiled(*args, tree_unflatten(out_tree, cts))[1]
                for j, i in enumerate(nums):
                    rows[j].append(np.asarray(grads[i]).reshape(-1))
            blocks.append([np.stack(rows[j]).reshape(out.shape + args[i].shape) for j, i in enumerate(nums)])
        return blocks


def _array_type(array: np.ndarray) -> TensorType:
    return TensorType(array.shape, DType.from_numpy(array.dtype))


def _basis(array: np.ndarray):
    """One-hot arrays of `array`'s shape and float or complex dtype, one per element."""
    dtype = array.dtype if is_float_dtype(array.dtype) or np.iscomplexobj(array) else np.float64
    for i in range(array.size):
        e = np.zeros(array.size, dtype)
        e[i] = 1
        yield e.reshape(array.shape)


def jacfwd(fun: Callable, argnums: int | Sequence[int] = 0, holomorphic: bool = False) -> Compiled:
    """The Jacobian by forward mode (one JVP per input element): shape out.shape + in.shape.
    Complex inputs need holomorphic=True (as JAX): the entries are then df_i/dz_j."""
    return _remember(Jacobian(fun, argnums, "fwd", holomorphic), "jacfwd", argnums=argnums, holomorphic=holomorphic)


def jacrev(fun: Callable, argnums: int | Sequence[int] = 0, holomorphic: bool = False) -> Compiled:
    """The Jacobian by reverse mode (one VJP per output element): shape out.shape + in.shape.
    Complex outputs need holomorphic=True (as JAX): the entries are then df_i/dz_j."""
    return _remember(Jacobian(fun, argnums, "rev", holomorphic), "jacrev", argnums=argnums, holomorphic=holomorphic)


def jacobian(fun: Callable, argnums: int | Sequence[int] = 0, holomorphic: bool = False) -> Compiled:
    """jacrev, JAX's `jacobian`."""
    return jacrev(fun, argnums, holomorphic)


def hessian(fun: Callable, argnums: int | Sequence[int] = 0) -> Compiled:
    """The Hessian, forward over reverse: jacfwd(jacrev(fun))."""
    return _remember(jacfwd(jacrev(fun, argnums), argnums), "hessian", argnums=argnums)


def hvp(fun: Callable, primals: Sequence, tangents: Sequence):
    """Hessian-vector product by forward-over-reverse: jvp(grad(fun), primals, tangents)[1]."""
    argnums = tuple(range(len(primals))) if len(primals) > 1 else 0
    return jvp(_transformed("grad", fun, argnums), primals, tangents)[1]


def stop_gradient(x):
    """x, with a derivative of zero: differentiation treats it as a constant."""
    from jitgrad import primitives as P
    from jitgrad.tracing.tracer import Tracer, apply
    if isinstance(x, Tracer):
        return apply(P.stop_gradient, (x,))
    detach = getattr(type(x), "_jitgrad_stop_gradient", None)   # tape and dual-number tensors
    return detach(x) if detach is not None else x


def jit_grad(fun: Callable | None = None, *, argnums: int | Sequence[int] = 0, has_aux: bool = False,
             with_value: bool = False, memory_budget=None, strict: bool = False,
             static_argnums: int | Sequence[int] = (), static_argnames: str | Sequence[str] = ()):
    """Decorator: the compiled gradient of `fun` (`@jit_grad` or `@jit_grad(argnums=...)`).
    with_value=True returns (value, grads); with has_aux the value is (value, aux).
    memory_budget, strict, static_argnums, static_argnames: see `grad`."""
    if fun is None:
        return lambda f: jit_grad(f, argnums=argnums, has_aux=has_aux, with_value=with_value,
                                  memory_budget=memory_budget, strict=strict, static_argnums=static_argnums,
                                  static_argnames=static_argnames)
    mode = "value_and_grad" if with_value else "grad"
    static = _static_positions(fun, static_argnums, static_argnames)
    stage = _with_static(fun, argnums, static,
                         lambda f, nums: grad_transform(f, nums, has_aux, mode, memory_budget, strict))
    return _remember(Compiled(fun, stage, static, name=f"grad_{_name(fun)}"), "jit_grad", argnums=argnums,
                     has_aux=has_aux, with_value=with_value, memory_budget=memory_budget, strict=strict,
                     static_argnums=static)


def _name(fun) -> str:
    return getattr(fun, "__name__", "fn")


_FACTORIES: dict[str, Callable] = {"jit": jit, "grad": grad, "value_and_grad": value_and_grad, "jit_grad": jit_grad,
                                   "jacfwd": jacfwd, "jacrev": jacrev, "jacobian": jacobian, "hessian": hessian}
"""The transformations a pickled Compiled object is rebuilt with."""
