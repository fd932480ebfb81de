"""Inlining call ops, so that code generation sees one straight-line program.

`inline` replaces custom-rule calls by their bodies right after differentiation, which
needed them; a leftover `custom_vjp_lin` means a custom_vjp function was differentiated
in forward mode, which has no meaning, and is reported rather than miscompiled.

`inline-checkpoints` runs last, after CSE: a checkpoint region in the backward pass
recomputes values the forward pass also computed, and CSE across the region boundary
would merge the two and undo the rematerialization. Each region's body is simplified on
its own first.
"""
from __future__ import annotations

from dataclasses import dataclass

from jitgrad.errors import GradientError
from jitgrad.ir import Function
from jitgrad.primitives.calls import CallOp, custom_vjp_lin_p, inline_block, lookup_rule
from .manager import FunctionPass, rewrite_function
from .simplify import simplify_pipeline


CHECKPOINTS = ("checkpoint", "checkpoint_jvp")


@dataclass(frozen=True)
class InlineCalls(FunctionPass):
    """Inline custom-rule calls (and nested ones), keeping checkpoint regions."""

    name = "inline"

    def run(self, fn: Function) -> Function:
        if not any(_is_call(op) and op.name not in CHECKPOINTS for op in fn.walk()):
            return fn
        return rewrite_function(fn, lambda op, operands: _inline(op, operands, checkpoints=False))


@dataclass(frozen=True)
class InlineCheckpoints(FunctionPass):
    """Inline checkpoint regions (after CSE, so recomputation stays recomputation)."""

    name = "inline-checkpoints"

    def run(self, fn: Function) -> Function:
        if not any(_is_call(op) for op in fn.walk()):
            return fn
        return rewrite_function(fn, lambda op, operands: _inline(op, operands, checkpoints=True))


def _is_call(op) -> bool:
    return isinstance(op.opdef, CallOp) or op.opdef is custom_vjp_lin_p


def _inline(op, operands, checkpoints: bool):
    if op.opdef is custom_vjp_lin_p:
        raise GradientError(f"{lookup_rule(op.attrs['rule']).name} is a jitgrad.custom_vjp function: it can be "
                            "differentiated in reverse mode only; forward mode (jvp, jacfwd) needs a "
                            "custom_jvp rule", op.loc)
    if not isinstance(op.opdef, CallOp) or (op.name in CHECKPOINTS and not checkpoints):
        return None
    body = Function(op.name, op.regions[0].block)
    body = (InlineCheckpoints() if checkpoints else InlineCalls()).run(body)   # nested calls first
    if checkpoints:
        for simplify in simplify_pipeline():
            body = simplify.run(body)
    return inline_block(body.body, operands)
