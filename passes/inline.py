"""The `inline` pass: replace every call op (checkpoint regions, custom-rule calls) by
its body, so that code generation sees one straight-line program.

It runs after differentiation, which needed the regions; a leftover `custom_vjp_lin`
means a custom_vjp function was differentiated in forward mode, which has no meaning,
and is reported as such rather than miscompiled.
"""
from __future__ import annotations

from dataclasses import dataclass

from jitgrad.errors import GradientError
from jitgrad.ir import Function
from jitgrad.primitives.calls import CallOp, custom_vjp_lin_p, inline_block, lookup_rule
from .manager import FunctionPass, rewrite_function


@dataclass(frozen=True)
class InlineCalls(FunctionPass):
    name = "inline"

    def run(self, fn: Function) -> Function:
        if not any(isinstance(op.opdef, CallOp) or op.opdef is custom_vjp_lin_p for op in fn.walk()):
            return fn
        return rewrite_function(fn, _inline)


def _inline(op, operands):
    if op.opdef is custom_vjp_lin_p:
        raise GradientError(f"{lookup_rule(op.attrs['rule']).name} is a jitgrad.custom_vjp function: it can be "
                            "differentiated in reverse mode only; forward mode (jvp, jacfwd) needs a "
                            "custom_jvp rule", op.loc)
    if not isinstance(op.opdef, CallOp):
        return None
    body = InlineCalls().run(Function(op.name, op.regions[0].block))   # nested calls first
    return inline_block(body.body, operands)
