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
from jitgrad.ir import Function, Operation, Value
from jitgrad.ir.clone import body_function, inline_block
from jitgrad.ir.rewrite import Rewriter
from jitgrad.primitives.calls import CallOp, custom_vjp_lin_p, lookup_rule
from .manager import FunctionPass
from .simplify import simplify_pipeline


CHECKPOINTS = ("checkpoint", "checkpoint_jvp")


class _Inliner(Rewriter):
    """The driver with one rule for call ops: replace the call by its body. Without
    `checkpoints`, checkpoint regions are copied (their bodies rewritten, so calls nested
    in them are inlined too)."""

    def __init__(self, checkpoints: bool):
        super().__init__()
        self.checkpoints = checkpoints

    def rule_for(self, op: Operation):
        if op.opdef is custom_vjp_lin_p:
            return _reject_forward_mode_custom_vjp
        if isinstance(op.opdef, CallOp) and (self.checkpoints or op.name not in CHECKPOINTS):
            return _inline_call
        return None


def _inline_call(inliner: _Inliner, op: Operation, inputs: list[Value]) -> list[Value]:
    if not inliner.checkpoints:
        return inliner.run_block(op.regions[0].block, inputs)     # nested calls go by the same rules
    body = InlineCheckpoints().run(body_function(op))
    for simplify in simplify_pipeline():                          # simplified on its own, then inlined
        body = simplify.run(body)
    return inline_block(body.body, inputs)


def _reject_forward_mode_custom_vjp(inliner: _Inliner, op: Operation, inputs: list[Value]):
    raise GradientError(f"{lookup_rule(op.attrs['rule']).name} is a jitgrad.custom_vjp function: it can be "
                        "differentiated in reverse mode only; forward mode (jvp, jacfwd) needs a "
                        "custom_jvp rule", op.loc)


@dataclass(frozen=True)
class InlineCalls(FunctionPass):
    """Inline custom-rule calls (and nested ones), keeping checkpoint regions."""

    name = "inline"

    def run(self, fn: Function) -> Function:
        if not any(_is_call(op) and op.name not in CHECKPOINTS for op in fn.walk()):
            return fn
        return _Inliner(checkpoints=False).rewrite_function(fn)


@dataclass(frozen=True)
class InlineCheckpoints(FunctionPass):
    """Inline checkpoint regions (after CSE, so recomputation stays recomputation)."""

    name = "inline-checkpoints"

    def run(self, fn: Function) -> Function:
        if not any(_is_call(op) for op in fn.walk()):
            return fn
        return _Inliner(checkpoints=True).rewrite_function(fn)


def _is_call(op) -> bool:
    return isinstance(op.opdef, CallOp) or op.opdef is custom_vjp_lin_p
