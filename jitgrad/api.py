"""The user-facing transformations, with JAX's conventions: jit, grad, value_and_grad,
vjp, and the `jit_grad` decorator.

Every transformation returns a `Compiled` callable. Called on arrays it looks up (or
builds) native code for the argument signature — pytree structure, shapes, dtypes and
static arguments — so a repeated call neither retraces nor recompiles. Called on traced
values (inside another transformation) it inlines its IR instead, which is how the
transformations compose.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Sequence

import numpy as np

from jitgrad.errors import ArgumentError
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.tracing.tracer import abstract_leaf
from .pipeline import Lowered, lower
from .custom import eager_apply
from .staging import (Staged, call_inline, grad_transform, has_tracers, jacobian_transform, jvp_transform,
                      normalize_args, trace_transform, vjp_transform)


FAST_PATH_AFTER_CALLS = 2
"""A signature called this often gets the native call path (`backends/cpu/fastcall.py`,
~1 us): building it costs a small LLVM compile, not worth it for one-off calls."""


class Compiled:
    """A transformed function compiled per argument signature."""

    def __init__(self, fun: Callable, stage: Callable[[tuple], Staged], static_argnums: Sequence[int] = (),
                 name: str | None = None):
        self.fun = fun
        self.stage = stage
        self.static_argnums = tuple(static_argnums)
        self.name = name or getattr(fun, "__name__", "fn")
        self._cache: dict[Any, Lowered] = {}
        self._fast = None                 # native call path for the hottest signature
        self._calls: dict[Any, int] = {}
        functools.update_wrapper(self, fun, updated=())

    def _static(self, args: tuple) -> tuple[int, ...]:
        """static_argnums as non-negative positions for this call (negatives count from the end)."""
        return tuple(sorted({i % len(args) for i in self.static_argnums if -len(args) <= i < len(args)}))

    def _signature(self, args: tuple):
        static_argnums = self._static(args)
        static = tuple((i, args[i]) for i in static_argnums)
        try:
            hash(static)
        except TypeError:
            raise ArgumentError(f"static arguments of {self.name} must be hashable") from None
        dynamic = tuple(a for i, a in enumerate(args) if i not in static_argnums)
        leaves, tree = tree_flatten(dynamic)
        return (tree, tuple(abstract_leaf(x) for x in leaves), static), leaves

    def lower(self, *args) -> Lowered:
        """Trace, transform, optimize and compile for these arguments; every stage's IR is
        available as text (`.as_text(stage)`, `.stages`)."""
        args = normalize_args(args, self._static(args))
        key, _ = self._signature(args)
        lowered = self._cache.get(key)
        if lowered is None:
            lowered = lower(self.stage, args, self.name)
            self._cache[key] = lowered
        return lowered

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
        lowered = self._cache.get(key)
        if lowered is None:
            lowered = self.lower(*args)
        calls = self._calls[key] = self._calls.get(key, 0) + 1
        if calls == FAST_PATH_AFTER_CALLS and not self.static_argnums:
            self._fast = lowered.fast_call(self._call)
        return lowered.run(leaves)

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def jit(fun: Callable | None = None, *, static_argnums: int | Sequence[int] = ()):
    """Compile `fun` to native code (per argument signature)."""
    static = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    if fun is None:
        return lambda f: jit(f, static_argnums=static)
    return Compiled(fun, trace_transform(fun, static), static)


def grad(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False, memory_budget=None,
         strict: bool = False) -> Compiled:
    """d fun / d args[argnums] for a function with a scalar output (reverse mode).
    `memory_budget` (bytes, or a string like "64MB") makes the backward pass recompute
    forward values instead of storing them, as far as needed to fit (`passes/remat.py`);
    a budget no recomputation meets warns (`MemoryBudgetWarning`), or with `strict=True`
    raises `MemoryBudgetError`, when a signature is compiled."""
    return Compiled(fun, grad_transform(fun, argnums, has_aux, "grad", memory_budget, strict),
                    name=f"grad_{_name(fun)}")


def value_and_grad(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False,
                   memory_budget=None, strict: bool = False) -> Compiled:
    """(fun(*args), grad(fun)(*args)) in one compiled function. memory_budget, strict:
    see `grad`."""
    return Compiled(fun, grad_transform(fun, argnums, has_aux, "value_and_grad", memory_budget, strict),
                    name=f"value_and_grad_{_name(fun)}")


@functools.lru_cache(maxsize=512)
def _cached(kind: str, fun: Callable, param) -> Compiled:
    """One Compiled object per (transformation, function, parameter), so that calling
    jitgrad.vjp(f, x) or jitgrad.jvp(f, ...) in a loop compiles once, not every time."""
    if kind == "jit":
        return jit(fun)
    if kind == "vjp":
        return Compiled(fun, vjp_transform(fun, param), name=f"vjp_{_name(fun)}")
    return Compiled(fun, jvp_transform(fun, param), name=f"jvp_{_name(fun)}")


def vjp(fun: Callable, *primals):
    """(fun(*primals), vjp_fn) where vjp_fn(cotangent) returns a tuple with one cotangent
    per primal (zeros for integer inputs). vjp_fn recomputes the forward pass."""
    out = _cached("jit", fun, None)(*primals)

    def vjp_fn(cotangent):
        return _cached("vjp", fun, len(primals))(*primals, cotangent)[1]
    return out, vjp_fn


def jvp(fun: Callable, primals: Sequence, tangents: Sequence):
    """Forward mode: (fun(*primals), directional derivative along `tangents`)."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ArgumentError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    return _cached("jvp", fun, len(primals))(*primals, *tangents)


def linearize(fun: Callable, *primals):
    """(fun(*primals), f_jvp) where f_jvp(*tangents) is the derivative at `primals`
    applied to `tangents` (compiled once; each call reruns the forward-mode program)."""
    out = _cached("jit", fun, None)(*primals)

    def f_jvp(*tangents):
        return jvp(fun, primals, tangents)[1]
    return out, f_jvp


INLINE_JACOBIAN_LIMIT = 32
"""Jacobians with at most this many basis directions compile into one program (a JVP or
VJP copy per direction, fused together); larger ones called on arrays run one compiled
JVP/VJP per direction instead, so the compile does not grow with the input."""


class Jacobian(Compiled):
    """jacfwd/jacrev: the Jacobian d out / d args[argnums], shaped out.shape + arg.shape."""

    def __init__(self, fun: Callable, argnums, mode: str):
        super().__init__(fun, jacobian_transform(fun, argnums, mode), name=f"jac{mode}_{_name(fun)}")
        self.argnums, self.mode = argnums, mode

    def _call(self, *args):
        if has_tracers(args):
            return super()._call(*args)
        args = normalize_args(args)
        single = isinstance(self.argnums, int)
        nums = [i % len(args) for i in ((self.argnums,) if single else self.argnums)]
        if not all(isinstance(a, np.ndarray) for a in args):
            return super()._call(*args)               # pytrees: the one-program path
        out_leaves, out_tree = tree_flatten(_cached("jit", self.fun, None)(*args))
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
            jvp_compiled = _cached("jvp", self.fun, len(args))
            columns = [[[] for _ in nums] for _ in outs]
            for j, i in enumerate(nums):
                for e in _basis(args[i]):
                    tangents = [e if m == i else np.zeros_like(a) for m, a in enumerate(args)]
                    t_out = tree_flatten(jvp_compiled(*args, *tangents)[1])[0]
                    for k, t in enumerate(t_out):
                        columns[k][j].append(np.asarray(t).reshape(-1))
            return [[np.stack(columns[k][j], axis=-1).reshape(outs[k].shape + args[i].shape)
                     for j, i in enumerate(nums)] for k in range(len(outs))]
        vjp_compiled = _cached("vjp", self.fun, len(args))
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


def _basis(array: np.ndarray):
    """One-hot arrays of `array`'s shape and float dtype, one per element."""
    dtype = array.dtype if array.dtype.kind == "f" else np.float64
    for i in range(array.size):
        e = np.zeros(array.size, dtype)
        e[i] = 1
        yield e.reshape(array.shape)


def jacfwd(fun: Callable, argnums: int | Sequence[int] = 0) -> Compiled:
    """The Jacobian by forward mode (one JVP per input element): shape out.shape + in.shape."""
    return Jacobian(fun, argnums, "fwd")


def jacrev(fun: Callable, argnums: int | Sequence[int] = 0) -> Compiled:
    """The Jacobian by reverse mode (one VJP per output element): shape out.shape + in.shape."""
    return Jacobian(fun, argnums, "rev")


def hessian(fun: Callable, argnums: int | Sequence[int] = 0) -> Compiled:
    """The Hessian, forward over reverse: jacfwd(jacrev(fun))."""
    return jacfwd(jacrev(fun, argnums), argnums)


def hvp(fun: Callable, primals: Sequence, tangents: Sequence):
    """Hessian-vector product by forward-over-reverse: jvp(grad(fun), primals, tangents)[1]."""
    return jvp(grad(fun, argnums=tuple(range(len(primals))) if len(primals) > 1 else 0), primals, tangents)[1]


def stop_gradient(x):
    """x, with a derivative of zero: differentiation treats it as a constant."""
    from jitgrad import primitives as P
    from jitgrad.tracing.tracer import Tracer, apply
    if isinstance(x, Tracer):
        return apply(P.stop_gradient, (x,))
    detach = getattr(type(x), "_jitgrad_stop_gradient", None)   # tape and dual-number tensors
    return detach(x) if detach is not None else x


def jit_grad(fun: Callable | None = None, *, argnums: int | Sequence[int] = 0, has_aux: bool = False,
             with_value: bool = False, memory_budget=None, strict: bool = False):
    """Decorator: the compiled gradient of `fun` (`@jit_grad` or `@jit_grad(argnums=...)`).
    with_value=True returns (value, grads); with has_aux the value is (value, aux).
    memory_budget, strict: see `grad`."""
    if fun is None:
        return lambda f: jit_grad(f, argnums=argnums, has_aux=has_aux, with_value=with_value,
                                  memory_budget=memory_budget, strict=strict)
    mode = "value_and_grad" if with_value else "grad"
    return Compiled(fun, grad_transform(fun, argnums, has_aux, mode, memory_budget, strict),
                    name=f"grad_{_name(fun)}")


def _name(fun) -> str:
    return getattr(fun, "__name__", "fn")
