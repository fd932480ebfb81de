"""Eager reverse mode: a `GradientTape` that records NumPy calls and differentiates them
through jitgrad's IR.

A `TrackedTensor` holds a concrete NumPy value. Every NumPy call on it (ufuncs, array
functions, operators, methods, indexing) runs NumPy on the raw values at once and appends
one record (the NumPy callable, its arguments, its keyword arguments, the result's node
number) to the tape — nothing else, so the forward pass runs at NumPy speed. There are
no per-op backward rules here: `gradient` turns the records that lead to the target
into a Python function that replays the same NumPy calls and differentiates it with
`jitgrad.grad` — the replay is traced by the same `numpy_api` tables as any jitgrad
function, differentiated by the IR passes and compiled by the CPU backend.

The compiled gradient is cached by the *structure* of the records (callables, argument
layout, static scalars and keywords), and `jitgrad.grad` caches per shapes and dtypes, so
a training loop that records the same computation every step compiles once. Arrays and
NumPy float scalars in the records are inputs of the compiled program; Python scalars
(and NumPy integers) are part of its structure, as NumPy's weak scalars must be — a
Python float that changes every step recompiles every step (make it np.float32(v)).

The replay reads the recorded leaves and plain arrays as they are when `gradient` runs,
so each is guarded when first recorded (`guards.py`): `gradient` raises MutationError
for one modified in place since, instead of differentiating at values the forward pass
never saw.

Only floating-point results are recorded. Integer and boolean results (masks, indices)
have a zero derivative, so they come back as plain arrays and enter the replay as the
constants they are — `gradient` evaluates at the recorded point, where they are exact.
"""
from __future__ import annotations

import operator
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable

import numpy as np

from jitgrad.api import grad
from jitgrad.errors import ArgumentError, GradientError, UnsupportedOperationError
from jitgrad.ir import is_float_dtype
from jitgrad.tracing import numpy_api
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from .guards import Guards, recording_site
from .introspection import tape_nodes
from .methods import SeedMethods
from .records import BINARY_OPERATORS, COMPARISONS, UNARY_OPERATORS, _PREALLOCATED, _REFS, _Ref, _ref
from .value import ArgumentTemplates, HoldsValue

# --------------------------------------------------------------------------- shared NumPy protocol


def _method_call(name: str) -> Callable:
    def call(x, *args, **kwargs):
        return getattr(x, name)(*args, **kwargs)
    call.__name__ = call.__qualname__ = f"ndarray.{name}"
    return call


def _attribute(name: str) -> Callable:
    def get(x):
        return getattr(x, name)
    get.__name__ = get.__qualname__ = f"ndarray.{name}"
    return get


# ndarray methods and attributes, each as one callable that works the same on NumPy arrays
# (eager execution) and on jitgrad Tracers (replay), as the operators' (records.py) do:
# records store these callables.
METHODS = {name: _method_call(name) for name in (
    "sum", "mean", "var", "std", "max", "min", "dot", "transpose", "reshape", "ravel", "flatten", "squeeze",
    "swapaxes", "clip", "astype", "copy")}
ATTRIBUTES = {name: _attribute(name) for name in ("T", "mT")}

# Callables a replay can trace besides numpy_api's tables (the Tracer's operators,
# methods and ufunc reductions).
_TRACER_CALLABLES = frozenset(
    [np.add.reduce, np.maximum.reduce, np.minimum.reduce, operator.getitem]
    + [BINARY_OPERATORS[k] for k in ("add", "sub", "mul", "truediv", "pow", "matmul")]
    + [operator.neg, operator.pos, operator.abs] + list(METHODS.values()) + list(ATTRIBUTES.values()))
# A snapshot for the hot path; `traceable` also consults the live tables.
TRACEABLE: frozenset = _TRACER_CALLABLES | frozenset(numpy_api.UFUNCS) | frozenset(numpy_api.FUNCTIONS)


def traceable(fn: Callable) -> bool:
    """Whether a replay can trace `fn`: numpy_api implements it, the Tracer does, or it is
    a jitgrad custom-rule function (custom_jvp, custom_vjp, CustomOp)."""
    return (fn in TRACEABLE or fn in numpy_api.UFUNCS or fn in numpy_api.FUNCTIONS
            or getattr(fn, "_jitgrad_traceable", False))

# Array-like classes of jitgrad's eager layers (TrackedTensor, DualTensor, graph nodes);
# mixing two of them in one call is refused with NotImplemented.
WRAPPER_TYPES: set[type] = set()
# Argument types that `_apply`'s fast loop hands to `_apply_nested`.
_NESTED: set[type] = {tuple, list}


def register_array_type(cls: type) -> type:
    """Declare `cls` an eager array-like class: a tape does not mix it with its tensors."""
    WRAPPER_TYPES.add(cls)
    _NESTED.add(cls)
    return cls


def numpy_protocol(apply: Callable[[Callable, tuple, dict | None], Any]) -> dict[str, Callable]:
    """Operators, NumPy methods, indexing and the `__array_ufunc__`/`__array_function__`
    protocols of an array-like class, all routed to `apply(fn, args, kwargs)`, where `fn`
    is the NumPy callable (ufunc, array function, `operator` function, method caller)."""
    ns: dict[str, Callable] = {}

    def binary(fn):
        return (lambda self, other: apply(fn, (self, other), None),
                lambda self, other: apply(fn, (other, self), None))
    for name, fn in BINARY_OPERATORS.items():
        ns[f"__{name}__"], ns[f"__r{name}__"] = binary(fn)
    for name, fn in COMPARISONS.items():
        ns[f"__{name}__"] = binary(fn)[0]
    for name, fn in UNARY_OPERATORS.items():
        ns[f"__{name}__"] = (lambda f: lambda self: apply(f, (self,), None))(fn)
    for name, fn in METHODS.items():
        ns[name] = (lambda f: lambda self, *args, **kwargs: apply(f, (self, *args), kwargs))(fn)
    for name, fn in ATTRIBUTES.items():
        ns[name] = property((lambda f: lambda self: apply(f, (self,), None))(fn))
    ns["__getitem__"] = lambda self, index: apply(operator.getitem, (self, index), None)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if kwargs.get("out") is not None:
            raise UnsupportedOperationError(f"numpy.{ufunc.__name__}(..., out=...), or an in-place operator such as "
                                            f"a += t, would write a {type(self).__name__}'s result into an array "
                                            "and drop its derivative; use the returned value instead (a = a + t)")
        return apply(ufunc if method == "__call__" else getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return apply(func, args, kwargs)
    ns["__array_ufunc__"] = __array_ufunc__
    ns["__array_function__"] = __array_function__
    # jitgrad's custom-rule functions and CustomOps call this to be applied as one call
    ns["_jitgrad_apply"] = staticmethod(lambda fn, args: apply(fn, tuple(args), None))
    ns["__hash__"] = object.__hash__      # __eq__ is elementwise
    return ns


def check_traceable(fn: Callable, args: tuple, kwargs: dict | None) -> None:
    """Raise UnsupportedOperationError now (at the user's line) for a call whose float
    result a replay could not trace."""
    if not traceable(fn):
        name = getattr(fn, "__name__", repr(fn))
        raise UnsupportedOperationError(f"numpy.{name} has no jitgrad rule, so its result cannot be "
                                        "differentiated; compute it outside the tape (np.asarray(x)) if it "
                                        "should be a constant")
    unknown = sorted(set(kwargs or ()) - {"dtype", "casting"}) if isinstance(fn, np.ufunc) else []
    if unknown:
        raise UnsupportedOperationError(f"numpy.{fn.__name__}: arguments {unknown} are not supported on tracked "
                                        "values")
    if fn is operator.getitem and not _basic_index(args[1]):
        raise UnsupportedOperationError("indexing a tracked tensor with arrays or lists (advanced indexing) is "
                                        "not supported; use ints, slices, None and Ellipsis")


def _basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(item is None or item is Ellipsis or isinstance(item, slice)
               or isinstance(item, (int, np.integer)) and not isinstance(item, bool) for item in items)


def _is_float_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) and (is_float_dtype(x.dtype) or x.dtype.kind == "c")


# --------------------------------------------------------------------------- tracked tensors

# Dtypes of the results a tape records (the others have a zero derivative).
_TRACKED_DTYPES = frozenset(np.dtype(c) for c in "efdgFDG")


def _apply(fn: Callable, args: tuple, kwargs: dict | None):
    """Run `fn` on raw values; record it when a recording tape's tensor takes part.

    This is the hot path of eager execution, kept lean (one and two arguments are
    unrolled): flat arguments of one tape and keywords without tracked values are handled
    here; lists, tuples, tracked keyword values and tensors of two tapes by
    `_apply_nested`."""
    n = len(args)
    plain, at = None, 0     # the operand that is not tracked (it may be an array), and its position
    if n == 2:
        a, b = args
        if type(a) is TrackedTensor:
            tape = a._tape
            if type(b) is TrackedTensor:
                if b._tape is not tape:
                    return _apply_nested(fn, args, kwargs)
                raw, refs = (a.value, b.value), [a._ref, b._ref]
            elif type(b) in _NESTED:
                return _apply_nested(fn, args, kwargs)
            else:
                raw, refs = (a.value, b), [a._ref, b]
                plain, at = b, 1
        elif type(b) is TrackedTensor and type(a) not in _NESTED:
            tape = b._tape
            raw, refs = (a, b.value), [a, b._ref]
            plain = a
        else:
            return _apply_nested(fn, args, kwargs)
    elif n == 1 and type(args[0]) is TrackedTensor:
        a = args[0]
        tape = a._tape
        raw, refs = (a.value,), [a._ref]
    else:
        plain = args
        tape = None
        raw, refs = [], []
        for a in args:
            cls = type(a)
            if cls is TrackedTensor:
                if a._tape is not tape:
                    if tape is not None:
                        return _apply_nested(fn, args, kwargs)
                    tape = a._tape
                raw.append(a.value)
                refs.append(a._ref)
            elif cls in _NESTED:
                return _apply_nested(fn, args, kwargs)
            else:
                raw.append(a)
                refs.append(a)
        if tape is None:
            return _apply_nested(fn, args, kwargs)
    if kwargs:
        for v in kwargs.values():
            if type(v) in _NESTED or type(v) is TrackedTensor:
                return _apply_nested(fn, args, kwargs)
        result = fn(*raw, **kwargs)
    else:
        result = fn(*raw)
    if not tape._recording:
        return result
    if (type(result) is np.ndarray or isinstance(result, np.generic)) and result.dtype in _TRACKED_DTYPES:
        if fn not in TRACEABLE or fn is operator.getitem or kwargs and type(fn) is np.ufunc:
            check_traceable(fn, refs, kwargs)
        node = tape._count
        tape._count = node + 1
        ref = _REFS[node] if node < _PREALLOCATED else _ref(node)
        tape._records.append((fn, refs, kwargs, ref))
        if tape._hooks:
            tape._after_record(refs, kwargs, node)
        if plain is args:
            tape._guards.operands(fn, refs, kwargs)
        else:
            if plain is not None and isinstance(plain, np.ndarray):
                tape._guards.operand(plain, fn, at, depth=3)     # above _apply: a protocol method, then the user
            if kwargs:                      # flat here: nested values took _apply_nested
                for key, v in kwargs.items():
                    if isinstance(v, np.ndarray) or type(v) is dict:
                        tape._guards.operands(fn, (), {key: v})
        return TrackedTensor(result, tape, ref)
    return tape._record(fn, refs, kwargs, result)


def _apply_nested(fn: Callable, args: tuple, kwargs: dict | None):
    """`_apply` for any arguments: nested lists and tuples, tracked keyword values,
    tensors of several tapes (those of tapes that do not record are constants)."""
    raw, refs, tape = _unwrap(args, None)
    if raw is NotImplemented:
        return NotImplemented
    if kwargs:
        values = list(kwargs.values())
        kraw, krefs, tape = _unwrap(values, tape)
        if kraw is NotImplemented:
            return NotImplemented
        keys = list(kwargs)
        result = fn(*raw, **dict(zip(keys, kraw, strict=True)))
        kwargs = dict(zip(keys, krefs, strict=True))
    else:
        result = fn(*raw)
    if tape is None:
        return result
    return tape._record(fn, refs, kwargs, result)


def _unwrap(args, tape):
    """(raw values, record arguments, recording tape) of a tuple or list of arguments."""
    raw, refs = [], []
    for a in args:
        cls = type(a)
        if cls is TrackedTensor:
            owner = a._tape
            if owner._recording:
                if tape is None:
                    tape = owner
                elif owner is not tape:
                    raise GradientError("an operation mixes tensors tracked by two recording tapes; watch the "
                                        "other tape's tensor on this tape (tape.watch(t)) or use one "
                                        "persistent tape")
                refs.append(a._ref)
            else:
                refs.append(a.value)
            raw.append(a.value)
        elif cls is tuple or cls is list:
            r, rf, tape = _unwrap(a, tape)
            if r is NotImplemented:
                return NotImplemented, None, None
            raw.append(cls(r))
            refs.append(cls(rf))
        elif cls in WRAPPER_TYPES:
            return NotImplemented, None, None
        else:
            raw.append(a)
            refs.append(a)
    return raw, refs, tape


class TrackedTensor(HoldsValue, SeedMethods):
    """A NumPy value whose computations a `GradientTape` records.

    It works with ordinary NumPy code: `np.sin(t)`, `t @ w`, `np.sum(t, axis=0)`, `t[1:]`,
    `t.reshape(...)` run NumPy at once and return tracked results. `.value` is the NumPy
    array; `np.asarray(t)` and `float(t)` give untracked values (constants to the tape)."""

    __slots__ = ("value", "_tape", "_ref")
    __array_priority__ = 1000

    def __init__(self, value, tape: "GradientTape", ref: _Ref):
        self.value = value
        self._tape = tape
        self._ref = ref

    @property
    def tape(self) -> "GradientTape":
        return self._tape

    def _jitgrad_stop_gradient(self):
        """jitgrad.stop_gradient: the plain value, which the tape treats as a constant."""
        return self.value

    def _carries_derivative(self) -> bool:
        return self._tape._recording and (is_float_dtype(self.value.dtype) or self.value.dtype.kind == "c")

    _detach_advice = ("read t.numpy() (a detached copy) or t.value, compute it inside `with "
                      "tape.stop_recording():`, or use jitgrad.stop_gradient(t)")

    def __setitem__(self, index, value):
        raise UnsupportedOperationError("a tracked tensor cannot be modified in place (the tape could not "
                                        "replay it); build a new value with np.where or np.concatenate")

    def __repr__(self) -> str:
        return f"TrackedTensor({self.value!r})"


def _tracked_array_ufunc(self, ufunc, method, *inputs, **kwargs):
    if method == "__call__" and not kwargs:       # the common case, one call shorter
        return _apply(ufunc, inputs, None)
    return _protocol_array_ufunc(self, ufunc, method, *inputs, **kwargs)


for _name, _fn in numpy_protocol(_apply).items():
    setattr(TrackedTensor, _name, _fn)
_protocol_array_ufunc = TrackedTensor.__array_ufunc__
TrackedTensor.__array_ufunc__ = _tracked_array_ufunc
register_array_type(TrackedTensor)


# --------------------------------------------------------------------------- replay programs

class _Slot(int):
    """In a program's argument template: the value in environment slot k."""

    __slots__ = ()


class _Const(int):
    """In a program's argument template: constant input k."""

    __slots__ = ()


def _fill(template, env: list, consts):
    cls = type(template)
    if cls is _Slot:
        return env[template]
    if cls is _Const:
        return consts[template]
    if cls is tuple or cls is list:
        return cls(_fill(x, env, consts) for x in template)
    if cls is dict:
        return {k: _fill(v, env, consts) for k, v in template.items()}
    return template


def _collect_nodes(args, needed: set) -> None:
    """Add the tape nodes that record arguments refer to."""
    for a in args:
        cls = type(a)
        if cls is _Ref:
            needed.add(int(a))
        elif cls is tuple or cls is list:
            _collect_nodes(a, needed)
        elif cls is dict:
            _collect_nodes(list(a.values()), needed)


class _ProgramBuilder(ArgumentTemplates):
    """Turns records into a replay program: node references become environment slots,
    arrays become constant inputs, and a hashable key describes the program's structure
    (callables, argument layout, static Python scalars and keywords)."""

    def __init__(self, slots: dict[int, int]):
        super().__init__()
        self.slots = slots
        self.consts: list = []

    def array_leaf(self, obj, cls):
        if cls is _Ref:
            slot = _Slot(self.slots[obj])
            return slot, ("s", int(slot))
        if isinstance(obj, (np.ndarray, np.generic)):
            self.consts.append(obj)
            k = _Const(len(self.consts) - 1)
            return k, ("c", int(k))
        return None


class _Program:
    """A replay of recorded NumPy calls as a function of its inputs, and its compiled
    gradient (`jitgrad.grad` of the replay with respect to its first argument).

    The replay takes (diff, others, consts, cotangents): the differentiated inputs (source
    leaves, and zero perturbations added to intermediate sources), the other leaves, the
    constant arrays of the records, and the output gradients (or ()). It returns the
    scalar sum over targets of sum(target * cotangent) (or sum(target))."""

    def __init__(self, n_slots: int, input_slots, steps, targets, with_cotangents: bool):
        self.n_slots = n_slots
        self.input_slots = input_slots    # (diff slots (None: a perturbation), other slots)
        self.steps = steps                # (fn, args template, kwargs template, out slot(s), perturbation)
        self.targets = targets
        self.with_cotangents = with_cotangents
        self.gradient = grad(self.replay)

    def replay(self, diff, others, consts, cotangents):
        env: list = [None] * self.n_slots
        diff_slots, other_slots = self.input_slots
        for slot, value in zip(diff_slots, diff, strict=True):
            if slot is not None:
                env[slot] = value
        for slot, value in zip(other_slots, others, strict=True):
            env[slot] = value
        for fn, args, kwargs, out, perturbation in self.steps:
            args = _fill(args, env, consts)
            result = fn(*args, **_fill(kwargs, env, consts)) if kwargs else fn(*args)
            if type(out) is tuple:
                for slot, value in zip(out, result, strict=True):
                    env[slot] = value
            else:
                env[out] = result if perturbation is None else result + diff[perturbation]
        total = None
        for k, slot in enumerate(self.targets):
            value = env[slot]
            if self.with_cotangents:
                value = np.sum(value * cotangents[k])
            elif np.ndim(value):
                value = np.sum(value)
            total = value if total is None else total + value
        return total


_PROGRAMS: OrderedDict = OrderedDict()
_PROGRAMS_MAX = 256


def cache_size() -> int:
    """The number of compiled gradient programs held (one per record structure and
    argument shapes)."""
    return sum(p.gradient.cache_size for p in _PROGRAMS.values())


def clear_cache() -> None:
    """Forget every compiled gradient program."""
    _PROGRAMS.clear()


def _cached_program(key, builder: _ProgramBuilder, make: Callable[[], _Program]) -> _Program:
    if not builder.hashable:
        return make()
    program = _PROGRAMS.get(key)
    if program is None:
        program = _PROGRAMS[key] = make()
        if len(_PROGRAMS) > _PROGRAMS_MAX:
            _PROGRAMS.popitem(last=False)
    else:
        _PROGRAMS.move_to_end(key)
    return program


# --------------------------------------------------------------------------- the tape

# Tapes whose `with` block is running, innermost last: a tape entered inside another
# tape's block nests in it when it watches that tape's tensors.
_ACTIVE: list = []


class _Worlds:
    """Slots of a nested tape's watched computation: a node it watches reads its watched
    value, any other node the constant one."""

    __slots__ = ("watched", "constant")

    def __init__(self, watched: dict, constant: dict):
        self.watched, self.constant = watched, constant

    def __getitem__(self, node: int) -> int:
        slot = self.watched.get(node)
        return self.constant[node] if slot is None else slot


def _outputs(record) -> tuple:
    out = record[3]
    return out if type(out) is tuple else (out,)


def _inputs(record) -> set:
    nodes: set = set()
    _collect_nodes(record[1], nodes)
    if record[2]:
        _collect_nodes(list(record[2].values()), nodes)
    return nodes


class GradientTape:
    """Records NumPy computations on tracked tensors; `gradient` differentiates them.

        tape = GradientTape()
        with tape:
            x = tape.variable(np.array([2.0, 3.0]))
            z = np.sum(x * x)
        dx = tape.gradient(z, x)        # 2 x

    While the tape records, every NumPy call with one of its tensors is recorded: from
    its creation until it is released (a non-persistent tape, after its one `gradient`
    call), except inside `with tape.stop_recording():`. Records refer to intermediate
    results by number, not value (the replay recomputes them), so intermediate arrays are
    freed when the program drops them.

    A persistent tape allows any number of `gradient` calls, and its gradients are
    themselves tracked tensors recorded on it: `tape.gradient(dx, x)` differentiates
    again (higher-order derivatives). A non-persistent tape, or a persistent one inside
    `stop_recording`, returns NumPy arrays.

    Tapes nest as in TensorFlow. A tape entered inside another tape's `with` block that
    watches one of the outer tape's tensors becomes a *nested* tape: it sees the outer
    tape's operations that depend on what it watches (from the moment it watches them),
    and its gradients are computed by one recorded call on the outer tape, so the outer
    tape differentiates them again:

        with t1:
            x = t1.watch(x0)
            with t2:
                t2.watch(x)
                y = x ** 3
            dy = t2.gradient(y, x)      # 3 x^2, recorded on t1
        d2y = t1.gradient(dy, x)        # 6 x

    Any number of tapes nest this way (third and higher derivatives). Only the outermost
    tape holds records; a nested tape holds the set of its nodes that it watches.
    `record_sites=True` keeps the user's source line of every record for `tape.nodes`
    (it costs a frame walk per recorded operation)."""

    def __init__(self, persistent: bool = False, record_sites: bool = False):
        self.persistent = persistent
        self._records: list | None = []
        self._leaves: dict[int, Any] | None = {}
        self._count = 0
        self._first = 0                 # nodes below it were recorded before the last reset()
        self._recording = True
        self._released = False
        self._guards: Guards | None = Guards()
        self._sites: dict | None = {} if record_sites else None
        self._nested: list[GradientTape] = []        # the tapes nested in this one
        self._hooks = record_sites                    # whether a record calls _after_record
        self._outer: GradientTape | None = None       # the tape this one is nested in
        self._watched: set[int] = set()               # (nested) the outer tape's nodes it watches
        self._watched_tensors: list = []

    def __enter__(self) -> "GradientTape":
        self._check_alive("record")
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        for k in range(len(_ACTIVE) - 1, -1, -1):
            if _ACTIVE[k] is self:
                del _ACTIVE[k]
                break
        return None

    def __repr__(self) -> str:
        if self._released:
            state = "released"
        elif self._outer is not None:
            state = f"nested, watching {len(self._watched)} nodes"
        else:
            state = f"{len(self._records)} records"
        return f"GradientTape(persistent={self.persistent}, {state})"

    # ----- tracked leaves
    def custom_op(self, op, inputs):
        """The seed's `tape.custom_op(op, [x, ...])`: apply a `jitgrad.CustomOp`; its
        `backward` gives the gradient (the call is recorded as one custom-rule call)."""
        return _apply_nested(op.as_custom_vjp, tuple(inputs), None)

    def variable(self, value):
        """A tracked tensor holding a copy of `value` (an array or a scalar; a list,
        tuple or dict of them gives the same structure of tensors)."""
        return self._leaves_of(value, True, recording_site(2))

    def watch(self, value):
        """A tracked tensor for an existing array, sharing its memory (a list, tuple or
        dict of arrays gives the same structure). Watching a tensor of this tape returns
        it. A tensor of a recording tape whose `with` block encloses this tape's makes this
        tape nested in that one, and is returned itself (TensorFlow's `t2.watch(x)`); a
        tensor of any other tape gives a new tracked tensor with the same value."""
        return self._leaves_of(value, False, recording_site(2))

    def _leaves_of(self, value, copy: bool, site: tuple):
        cls = type(value)
        if cls is tuple or cls is list:
            return cls([self._leaves_of(v, copy, site) for v in value])
        if cls is dict:
            return {k: self._leaves_of(v, copy, site) for k, v in value.items()}
        if self._outer is None and cls is TrackedTensor and not copy and self._can_nest_in(value._tape):
            self._outer = value._tape
            value._tape._nested.append(self)
            value._tape._hooks = True
        if self._outer is not None:
            return self._watch_outer(value, copy, site)
        if cls is TrackedTensor:
            if value._tape is self and not copy:
                return value
            value = value.value
        if self._released:
            self._check_alive("watch new tensors")
        array = np.array(value) if copy else value if cls is np.ndarray else np.asarray(value)
        if array.dtype.kind not in "biuf" and not is_float_dtype(array.dtype):
            raise ArgumentError(f"a tape tracks numeric arrays, not {type(value).__name__} of dtype {array.dtype}")
        node = self._count
        self._count = node + 1
        self._leaves[node] = array
        self._guards.operand(array, None, "tape.variable" if copy else "tape.watch", site)
        return TrackedTensor(array, self, _ref(node))

    def _can_nest_in(self, outer: "GradientTape") -> bool:
        """Whether this tape, holding nothing yet, runs inside `outer`'s `with` block."""
        if outer is self or not outer._recording or self._count or self._released:
            return False
        positions = {id(t): k for k, t in enumerate(_ACTIVE)}
        return id(self) in positions and positions.get(id(outer), len(_ACTIVE)) < positions[id(self)]

    def _watch_outer(self, value, copy: bool, site: tuple):
        """A nested tape's watch: its leaves are the outer tape's tensors."""
        self._check_alive("watch new tensors")
        outer = self._outer
        if type(value) is TrackedTensor and value._tape is outer and not copy:
            tensor = value
        else:
            tensor = outer._leaves_of(value, copy, site)
        self._watched.add(int(tensor._ref))
        self._watched_tensors.append(tensor)
        return tensor

    def _record(self, fn, args, kwargs, result):
        """Record a call whose result is of any kind (the general path of `_apply`)."""
        if not _is_float_array(result):
            if type(result) is tuple and any(_is_float_array(r) for r in result):
                raise UnsupportedOperationError(f"{getattr(fn, '__name__', fn)} returns several arrays; "
                                                "jitgrad cannot differentiate it")
            return result
        if kwargs or fn is operator.getitem or fn not in TRACEABLE:
            check_traceable(fn, args, kwargs)
        node = self._count
        self._count = node + 1
        self._records.append((fn, args, kwargs, node))
        if self._hooks:
            self._after_record(args, kwargs, node)
        self._guards.operands(fn, args, kwargs)
        return TrackedTensor(result, self, _ref(node))

    def _after_record(self, args, kwargs, out) -> None:
        """A record's work besides being appended, when this tape keeps source lines or
        has nested tapes: a nested tape that watches one of its inputs watches its
        outputs."""
        if self._sites is not None:
            self._sites[out[0] if type(out) is tuple else out] = recording_site(2)
        if self._nested:
            inputs: set = set()
            _collect_nodes(args, inputs)
            if kwargs:
                _collect_nodes(list(kwargs.values()), inputs)
            outs = out if type(out) is tuple else (out,)
            for tape in self._nested:
                if tape._recording and not tape._watched.isdisjoint(inputs):
                    tape._watched.update(outs)

    @contextmanager
    def stop_recording(self):
        """Within this block, operations on tracked tensors give plain (untracked) arrays;
        for a nested tape, its outer tape still records them but this tape does not watch
        their results (they are constants to it)."""
        previous = self._recording
        self._recording = False
        try:
            yield
        finally:
            self._recording = previous and not self._released

    def _check_alive(self, what: str) -> None:
        if self._released:
            raise GradientError(f"this non-persistent GradientTape was released by its gradient call and cannot "
                                f"{what}; use GradientTape(persistent=True) to reuse a tape")
        if self._outer is not None and self._outer._released:
            raise GradientError(f"the GradientTape this tape is nested in was released by its gradient call, so "
                                f"this one cannot {what}; make the outer tape persistent or use this one first")

    def release(self) -> None:
        """Drop all records (a non-persistent tape does this after its gradient call)."""
        if self._outer is not None:
            self._outer._nested = [t for t in self._outer._nested if t is not self]
        for tape in self._nested:
            tape._watched.clear()
        if self._guards is not None:
            self._guards.unlock(keep=False)
        self._records = self._leaves = self._guards = None
        self._watched, self._watched_tensors, self._nested = set(), [], []
        self._recording = False
        self._released = True

    def reset(self) -> None:
        """Forget everything recorded so far and record afresh, as a new tape would
        (TensorFlow's `tape.reset()`). Tensors made before are no longer tracked: using
        them in a new gradient raises GradientError."""
        self._check_alive("be reset")
        self._watched, self._watched_tensors = set(), []
        if self._outer is not None:
            return
        self._guards.unlock(keep=False)
        self._guards = Guards()
        self._records, self._leaves = [], {}
        if self._sites is not None:
            self._sites = {}
        self._first = self._count
        self._recording = True
        for tape in self._nested:
            tape._watched.clear()
            tape._watched_tensors.clear()

    def watched_variables(self) -> tuple:
        """The tensors this tape watches, in the order it was given them: its leaves
        (`variable`, `watch`), or for a nested tape the outer tape's tensors it watches."""
        if self._released:
            return ()
        if self._outer is not None:
            return tuple(self._watched_tensors)
        return tuple(TrackedTensor(array, self, _ref(node)) for node, array in self._leaves.items())

    # ----- differentiation
    def gradient(self, target, sources, output_gradients=None, unconnected_gradients: str = "zero"):
        """d target / d sources, in the structure of `sources` (a tensor, or a list, tuple
        or dict of them).

        A non-scalar target is summed (TensorFlow's convention) or, with
        `output_gradients` (arrays in the structure of `target`), weighted by them: the
        vector-Jacobian product. Several targets (a list) add their gradients. Sources the
        target does not depend on get zeros (None with unconnected_gradients='none').
        A source may be an intermediate result: its gradient holds the rest of the
        computation fixed, while the other sources' gradients flow through it.

        The gradients of a nested tape are recorded on the tape it is nested in (while
        that one records), as tensors of that tape."""
        if self._released:
            raise GradientError("GradientTape.gradient was already called on this non-persistent tape, which "
                                "then released its records; create it with GradientTape(persistent=True) to "
                                "compute several gradients")
        self._check_alive("compute gradients")
        if unconnected_gradients not in ("zero", "none"):
            raise ArgumentError(f"unconnected_gradients must be 'zero' or 'none', not {unconnected_gradients!r}")
        owner = self if self._outer is None else self._outer
        targets, target_tree = tree_flatten(target)
        if not targets:
            raise GradientError("gradient needs a target tensor")
        for t in targets:
            self._check_tracked(t, "the target")
        cotangents = None
        if output_gradients is not None:
            cotangents, ct_tree = tree_flatten(output_gradients)
            if ct_tree != target_tree:
                raise ArgumentError(f"output_gradients have structure {ct_tree}, the target has {target_tree}")
            for t, c in zip(targets, cotangents, strict=True):
                if np.shape(c) != t.shape:
                    raise ArgumentError(f"an output gradient of shape {np.shape(c)} for a target of shape "
                                        f"{t.shape}")
        sources_flat, source_tree = tree_flatten(sources)
        for s in sources_flat:
            self._check_tracked(s, "a source")
            if not is_float_dtype(s.dtype):
                raise GradientError(f"cannot differentiate with respect to a tensor of dtype {s.dtype}: only "
                                    "floating-point tensors have gradients")
        if not sources_flat:
            return tree_unflatten(source_tree, [])

        unique: dict[int, TrackedTensor] = {}
        for s in sources_flat:
            unique.setdefault(int(s._ref), s)
        target_nodes = [int(t._ref) for t in targets]
        if owner is self:
            program, inputs, connected, record_args = self._program(target_nodes, unique, cotangents)
        else:
            program, inputs, connected, record_args = owner._nested_program(target_nodes, unique, cotangents,
                                                                            self._watched)
        diff, others, consts, _ = inputs
        owner._guards.check((*diff, *others, *consts))
        if owner is self and self.persistent:      # it may replay them again: copies from now on
            self._guards.unlock(keep=True)
        grads = program.gradient(*inputs)

        if (owner is not self or self.persistent) and owner._recording:
            out_nodes = tuple(range(owner._count, owner._count + len(grads)))
            owner._count += len(grads)
            owner._records.append((program.gradient, record_args, None, out_nodes))
            if owner._hooks:
                owner._after_record(record_args, None, out_nodes)
            owner._guards.operands(program.gradient, record_args, None)
            grads = [TrackedTensor(g, owner, _ref(n)) for g, n in zip(grads, out_nodes, strict=True)]
        by_node = dict(zip(unique, grads, strict=True))
        result = [by_node[s._ref] if unconnected_gradients == "zero" or s._ref in connected else None
                  for s in sources_flat]
        if not self.persistent:
            self.release()
        return tree_unflatten(source_tree, result)

    def _check_tracked(self, t, what: str) -> None:
        if type(t) is not TrackedTensor:
            raise GradientError(f"{what} is a {type(t).__name__}, not a tensor tracked by this tape, so it was not "
                                "computed on the tape (tape.variable and tape.watch create tracked tensors; "
                                "operations inside tape.stop_recording() are not recorded)")
        owner = self if self._outer is None else self._outer
        if t._tape is not owner:
            hint = ""
            if self._outer is None and t._tape._recording:
                hint = ("; to differentiate the computations of an outer tape's tensors, enter this tape inside "
                        "the outer tape's `with` block and watch them on it (with t1: ... with t2: "
                        "t2.watch(x); y = f(x))")
            raise GradientError(f"{what} is tracked by another GradientTape{hint}")

    def _used_records(self, target_nodes) -> tuple[list, set]:
        """The records the targets depend on, in order, and the nodes they read."""
        needed = set(target_nodes)
        used = []
        for record in reversed(self._records):
            out = record[3]
            if not needed.isdisjoint(out) if type(out) is tuple else out in needed:
                used.append(record)
                _collect_nodes(record[1], needed)
                if record[2]:
                    _collect_nodes(list(record[2].values()), needed)
        used.reverse()
        if self._first:
            made = set(self._leaves).union(*(_outputs(r) for r in used))
            if not needed <= made:
                raise GradientError("the target depends on a tensor computed before tape.reset(), which the tape "
                                    "no longer tracks; recompute it after the reset")
        return used, needed

    def _program(self, target_nodes: list[int], sources: dict[int, TrackedTensor], cotangents):
        """The replay program of the records the targets depend on; its inputs; the
        source nodes the targets depend on; and the arguments that record its call."""
        used, needed = self._used_records(target_nodes)
        connected = needed.intersection(sources)

        # Inputs: differentiated leaves (or perturbations of intermediate sources), then other leaves.
        slots: dict[int, int] = {}
        diff_slots, diff_values, diff_args = [], [], []
        perturbed: dict[int, int] = {}
        for node, tensor in sources.items():
            if node in self._leaves:
                slots[node] = len(slots)
                diff_slots.append(slots[node])
                diff_values.append(self._leaves[node])
                diff_args.append(_ref(node))
            else:
                perturbed[node] = len(diff_slots)
                diff_slots.append(None)
                zeros = np.zeros_like(tensor.value)
                diff_values.append(zeros)
                diff_args.append(zeros)
        others = sorted(n for n in needed if n in self._leaves and n not in slots)
        other_slots = []
        for node in others:
            slots[node] = len(slots)
            other_slots.append(slots[node])

        builder = _ProgramBuilder(slots)
        steps, key_steps = [], []
        for fn, args, kwargs, out in used:
            args_t, args_k = builder.template(args)
            kwargs_t, kwargs_k = builder.template(kwargs) if kwargs else (None, None)
            if type(out) is tuple:
                for o in out:
                    slots[o] = len(slots)
                out_t = tuple(slots[o] for o in out)
                perturbation = None
            else:
                slots[out] = len(slots)
                out_t = slots[out]
                perturbation = perturbed.get(out)
            steps.append((fn, args_t, kwargs_t, out_t, perturbation))
            key_steps.append((fn, args_k, kwargs_k, out_t, perturbation))
        target_slots = tuple(slots[n] for n in target_nodes)
        with_ct = cotangents is not None
        input_slots = (tuple(diff_slots), tuple(other_slots))
        key = (tuple(key_steps), input_slots, target_slots, with_ct, len(slots))
        program = _cached_program(key, builder,
                                  lambda: _Program(len(slots), input_slots, tuple(steps), target_slots, with_ct))
        return program, *self._program_inputs(program, builder, diff_values, diff_args, others, cotangents,
                                              connected)

    def _program_inputs(self, program, builder, diff_values, diff_args, others, cotangents, connected):
        consts = tuple(builder.consts)
        with_ct = cotangents is not None
        ct_values = tuple(_value_of(c) for c in cotangents) if with_ct else ()
        inputs = (tuple(diff_values), tuple(self._leaves[n] for n in others), consts, ct_values)
        ct_args = tuple(c._ref if type(c) is TrackedTensor and c._tape is self else _value_of(c)
                        for c in cotangents) if with_ct else ()
        record_args = (tuple(diff_args), tuple(_ref(n) for n in others), consts, ct_args)
        return inputs, connected, record_args

    def _nested_program(self, target_nodes: list[int], sources: dict[int, TrackedTensor], cotangents,
                        watched: set[int]):
        """`_program` for a tape nested in this one, which watches `watched` of its nodes.

        The replay computes two worlds: the constant one, every needed record on the
        leaves as given (the `others` inputs), and the watched one, the records the nested
        tape watches, reading its sources from the differentiated inputs and the nodes it
        does not watch from the constant world. The replay's gradient follows the watched
        world alone, while this tape, which records the call with both inputs bound to
        its own tensors, differentiates through both."""
        used, needed = self._used_records(target_nodes)
        is_watched = [not watched.isdisjoint(_outputs(r)) for r in used]
        constant_needed = {n for n in target_nodes if n not in watched}
        watched_needed = {n for n in target_nodes if n in watched}
        for record, w in zip(reversed(used), reversed(is_watched)):
            inputs = _inputs(record)
            if w and not watched_needed.isdisjoint(_outputs(record)):
                watched_needed.update(n for n in inputs if n in watched)
            if w:
                constant_needed.update(n for n in inputs if n not in watched)
            if not constant_needed.isdisjoint(_outputs(record)):
                constant_needed.update(inputs)
        connected = watched_needed.intersection(sources)

        n_slots = 0
        constant: dict[int, int] = {}
        in_watch: dict[int, int] = {}
        diff_slots, diff_values, diff_args = [], [], []
        perturbed: dict[int, int] = {}
        for node, tensor in sources.items():
            if node in self._leaves:
                if node in watched:
                    in_watch[node] = n_slots
                diff_slots.append(n_slots)
                n_slots += 1
                diff_values.append(self._leaves[node])
                diff_args.append(_ref(node))
            else:
                if node in watched:
                    perturbed[node] = len(diff_slots)
                diff_slots.append(None)
                zeros = np.zeros_like(tensor.value)
                diff_values.append(zeros)
                diff_args.append(zeros)
        others = sorted(n for n in needed if n in self._leaves)
        other_slots = []
        for node in others:
            constant[node] = n_slots
            other_slots.append(n_slots)
            if node in watched:
                in_watch.setdefault(node, n_slots)
            n_slots += 1

        builder = _ProgramBuilder(constant)
        steps, key_steps = [], []
        plan = [(r, False) for r in used if not constant_needed.isdisjoint(_outputs(r))]
        plan += [(r, True) for r, w in zip(used, is_watched, strict=True) if w]
        worlds = _Worlds(in_watch, constant)
        for (fn, args, kwargs, out), in_watched_world in plan:
            builder.slots = worlds if in_watched_world else constant
            args_t, args_k = builder.template(args)
            kwargs_t, kwargs_k = builder.template(kwargs) if kwargs else (None, None)
            into = in_watch if in_watched_world else constant
            perturbation = None
            if type(out) is tuple:
                for o in out:
                    into[o] = n_slots
                    n_slots += 1
                out_t = tuple(into[o] for o in out)
            else:
                into[out] = n_slots
                n_slots += 1
                out_t = into[out]
                if in_watched_world:
                    perturbation = perturbed.get(out)
            steps.append((fn, args_t, kwargs_t, out_t, perturbation))
            key_steps.append((fn, args_k, kwargs_k, out_t, perturbation))
        target_slots = tuple(in_watch[n] if n in in_watch else constant[n] for n in target_nodes)
        with_ct = cotangents is not None
        input_slots = (tuple(diff_slots), tuple(other_slots))
        key = ("nested", tuple(key_steps), input_slots, target_slots, with_ct, n_slots)
        program = _cached_program(key, builder,
                                  lambda: _Program(n_slots, input_slots, tuple(steps), target_slots, with_ct))
        return program, *self._program_inputs(program, builder, diff_values, diff_args, others, cotangents,
                                              connected)

    # ----- introspection
    @property
    def nodes(self) -> list:
        """The recorded operations, in order, as `TapeNode`s (operation name, input and
        output shapes and dtypes, the user's source line where the tape keeps them). The
        shapes come from evaluating the records again with NumPy (the tape keeps no
        intermediate values). A nested tape lists the outer tape's records it watches."""
        owner = self if self._outer is None else self._outer
        if self._released or owner._released:
            return []
        return tape_nodes(owner, None if owner is self else self._watched)

    def to_ir(self, target, sources, stage: str | None = None) -> str:
        """The IR text of the program `gradient(target, sources)` compiles: the replay of
        the records the target depends on, differentiated (`stage` picks a stage of
        jitgrad's pipeline, as in `Compiled.lower(...).as_text(stage)`; default: the
        optimized IR)."""
        self._check_alive("show its IR")
        owner = self if self._outer is None else self._outer
        targets, _ = tree_flatten(target)
        for t in targets:
            self._check_tracked(t, "the target")
        sources_flat, _ = tree_flatten(sources)
        for s in sources_flat:
            self._check_tracked(s, "a source")
        unique: dict[int, TrackedTensor] = {}
        for s in sources_flat:
            unique.setdefault(int(s._ref), s)
        target_nodes = [int(t._ref) for t in targets]
        if owner is self:
            program, inputs, _, _ = self._program(target_nodes, unique, None)
        else:
            program, inputs, _, _ = owner._nested_program(target_nodes, unique, None, self._watched)
        return program.gradient.lower(*inputs).as_text(stage)


def _value_of(x):
    return x.value if type(x) is TrackedTensor else x
