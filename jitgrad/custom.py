"""User-defined differentiation: `custom_jvp`, `custom_vjp`, TenfloweRS's `CustomOp`
(docs/porting-from-tenflowers.md), and `checkpoint` regions.

Called on arrays, each runs the plain Python function. Called on traced values (inside
jit/grad/...), it traces the function into a call op (`jitgrad.primitives.calls`) whose
rules reference the Python rules; differentiation then uses those rules instead of the
body. Arguments are positional arrays; results an array or a tuple of arrays.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from jitgrad.errors import GradientError
from jitgrad.primitives import calls
from jitgrad.tracing.pytree import tree_unflatten
from jitgrad.tracing.tracer import Tracer, trace, user_location
from .staging import has_tracers


def eager_apply(fn, args: tuple):
    """When eager tensors (tape, dual numbers) take part, the call is handed to their
    layer as one call, so that its custom rule is used; else None."""
    for a in args:
        apply = getattr(type(a), "_jitgrad_apply", None)
        if apply is not None:
            return apply(fn, args)
    return None


def _emit(opdef, fun: Callable, args: tuple, **attrs):
    """Trace `fun` on the traced `args` into a call op of kind `opdef`."""
    from jitgrad.ir import current_builder
    from jitgrad.tracing.numpy_api import as_value
    with current_builder().at(user_location()):
        operands = [x.value if isinstance(x, Tracer) else as_value(x) for x in args]
    traced = trace(fun, tuple(Tracer(v) for v in operands))
    with current_builder().at(user_location()):
        results = calls.emit_call(opdef, traced.function, [*operands, *traced.captured], **attrs)
    return tree_unflatten(traced.out_tree, [Tracer(v) for v in results]), traced


class _Rule:
    """What custom_jvp and custom_vjp share: the key that names them in the IR."""

    name: str
    _key: str | None = None

    @property
    def key(self) -> str:
        """The name call ops give this rule in the IR, registered at the first traced
        call: a rule only ever called on arrays (a `custom_op` applied eagerly in a
        loop, say, with a new op object each time) never enters the process-wide
        registry, so it does not grow with eager calls."""
        if self._key is None:
            self._key = calls.register_rule(self.name, self)
        return self._key


class custom_jvp(_Rule):
    """A function with a user-defined JVP rule (JAX's API):

        @jitgrad.custom_jvp
        def f(x): ...
        @f.defjvp
        def f_jvp(primals, tangents): return f(*primals), tangent_out

    Forward and reverse mode use the rule (reverse mode needs it linear in the tangents,
    as JAX does); higher orders work when the rule is itself differentiable."""

    def __init__(self, fun: Callable):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.name = getattr(fun, "__name__", "custom_jvp")
        self.jvp_rule = None

    _jitgrad_traceable = True

    def defjvp(self, rule: Callable) -> Callable:
        self.jvp_rule = rule
        return rule

    def __call__(self, *args):
        if not has_tracers(args):
            eager = eager_apply(self, args)
            return self.fun(*args) if eager is None else eager
        out, _ = _emit(calls.custom_jvp_call_p, self.fun, args, rule=self.key)
        return out


class custom_vjp(_Rule):
    """A function with user-defined reverse-mode rules (JAX's API):

        @jitgrad.custom_vjp
        def f(x): ...
        def f_fwd(x): return f(x), residuals
        def f_bwd(residuals, ct): return (ct_x,)        # one cotangent per input
        f.defvjp(f_fwd, f_bwd)

    Reverse mode only: forward mode (jvp, jacfwd) raises GradientError, since a VJP does
    not determine a JVP. Higher-order reverse mode works when bwd is differentiable."""

    def __init__(self, fun: Callable):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.name = getattr(fun, "__name__", "custom_vjp")
        self.fwd = self.bwd = None

    _jitgrad_traceable = True

    def defvjp(self, fwd: Callable, bwd: Callable) -> None:
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args):
        if not has_tracers(args):
            eager = eager_apply(self, args)
            return self.fun(*args) if eager is None else eager
        if self.fwd is None:
            raise GradientError(f"custom_vjp function {self.name} has no rules: call .defvjp(fwd, bwd)",
                                user_location())
        out, _ = _emit(calls.custom_vjp_call_p, self.fun, args, rule=self.key)
        return out


class CustomOp:
    """TenfloweRS's custom operation: subclass and define `forward(inputs)` and
    `backward(grad_output, inputs)` (a list with one gradient per input). Use it with
    `jitgrad.custom_op(op, [x, ...])` in traced code or `tape.custom_op(op, [x])`."""

    def forward(self, inputs: list) -> Any:
        raise NotImplementedError

    def backward(self, grad_output, inputs: list) -> list:
        raise NotImplementedError

    @functools.cached_property
    def as_custom_vjp(self) -> custom_vjp:
        def apply(*xs):
            return self.forward(list(xs))
        apply.__name__ = type(self).__name__
        fn = custom_vjp(apply)
        fn.defvjp(lambda *xs: (self.forward(list(xs)), xs),
                  lambda xs, g: tuple(self.backward(g, list(xs))))
        return fn


def custom_op(op: CustomOp, inputs) -> Any:
    """Apply a `CustomOp` to a list of arrays (traced or not)."""
    return op.as_custom_vjp(*inputs)


class ClipGradient(CustomOp):
    """TenfloweRS's example: identity forward, gradient clipped to [-1, 1] backward."""

    def forward(self, inputs):
        return inputs[0] * 1

    def backward(self, grad_output, inputs):
        import numpy as np
        return [np.clip(grad_output, -1.0, 1.0)]


def checkpoint(fun: Callable | None = None):
    """Mark `fun` as a checkpoint region (function or decorator): in the backward pass its
    intermediates are recomputed from its inputs rather than stored. The region is
    visible in the IR (`checkpoint`, `checkpoint_jvp` ops)."""
    if fun is None:
        return checkpoint

    @functools.wraps(fun)
    def wrapped(*args):
        if not has_tracers(args):
            return fun(*args)
        out, _ = _emit(calls.checkpoint_p, fun, args)
        return out
    return wrapped
