"""Forward-mode differentiation as an IR -> IR pass.

`jvp_function(f, wrt)` builds `f_jvp(*primals, *tangents) -> (*outputs, *output_tangents)`
where there is one tangent argument per input index in `wrt`. It runs on the IR's one
driver (`jitgrad.ir.rewrite.Rewriter`): its env maps each value to its primal copy and a
second map, `tangents`, to its tangent. Each op is copied, then its record's `jvp` rule
emits the tangent computation right after it (or its `jvp_op` rule emits both, for ops
that need to see the whole op: calls, ops with regions). Tangents that are known to be
zero stay symbolic (`Zero`) and cost nothing. The result is ordinary IR, so it can be
differentiated again (any order) or transposed into reverse mode.

`jvp_call` is the forward-mode rule of a call-like op (one region whose block receives
the operands and yields the results): the same op around the JVP of its body.
"""
from __future__ import annotations

from typing import Sequence

from jitgrad.errors import GradientError
from jitgrad.ir import Function, Operation, Value, current_builder, new_function
from jitgrad.ir.clone import body_function, clone_op, function_region
from jitgrad.ir.rewrite import Rewriter
from jitgrad.primitives import Primitive, Zero, instantiate


class _JvpRewriter(Rewriter):
    """The driver with one rule for every op, `_jvp_rule`; `tangents` maps each value of
    the source to its tangent (a Value or `Zero`)."""

    def __init__(self):
        super().__init__()
        self.tangents: dict[Value, object] = {}

    def rule_for(self, op: Operation):
        return _jvp_rule


def jvp_function(fn: Function, wrt: Sequence[int]) -> Function:
    wrt = list(wrt)
    for i in wrt:
        if not fn.args[i].type.dtype.is_inexact:
            raise GradientError(f"cannot differentiate with respect to argument {i} of {fn.name}: it has "
                                f"type {fn.args[i].type}; only float and complex arguments have tangents")
    tangent_types = [fn.args[i].type for i in wrt]
    new_fn, builder = new_function(f"{fn.name}_jvp", fn.input_types + tangent_types)
    rewriter = _JvpRewriter()
    rewriter.tangents.update({v: Zero(v.type) for v in fn.args})
    for i, t in zip(wrt, new_fn.args[len(fn.args):], strict=True):
        rewriter.tangents[fn.args[i]] = t
    with builder:
        outs = rewriter.run_block(fn.body, new_fn.args[:len(fn.args)])
        with builder.at(fn.body.terminator.loc):
            builder.ret(outs + [instantiate(rewriter.tangents[v]) for v in fn.outputs])
    return new_fn


def _refuse_complex(op: Operation) -> None:
    """An op on complex values differentiates only if its record says its rules handle
    them (`Primitive.complex_ready`) or it has regions (control flow, checkpoints, calls:
    their rules differentiate their bodies, whose ops are checked in turn); others are
    refused rather than given a wrong tangent."""
    ready = (isinstance(op.opdef, Primitive) and op.opdef.complex_ready) or bool(op.regions)
    if not ready and any(
            v.type.dtype.is_complex for v in (*op.operands, *op.results)):
        raise GradientError(f"cannot differentiate {op.name} on complex values yet", op.loc)


def _jvp_rule(rewriter: _JvpRewriter, op: Operation, primals: list[Value]) -> list[Value]:
    """Copy `op` onto its primal operands and record its results' tangents."""
    op_tangents = [rewriter.tangents[v] for v in op.operands]
    no_tangent = all(isinstance(t, Zero) for t in op_tangents) or not any(
        r.type.dtype.is_inexact for r in op.results)
    if not no_tangent:
        _refuse_complex(op)
    if no_tangent:
        outs = list(clone_op(current_builder(), op, primals, {}).results)
        touts = [Zero(r.type) for r in op.results]
    else:
        jvp_op = op.opdef.jvp_op
        if jvp_op is not None:       # rules that see the whole op: calls, ops with regions, defjvp2
            outs, touts = jvp_op(op, primals, op_tangents)
            outs, touts = op.per_result(outs, "jvp_op rule"), op.per_result(touts, "jvp_op rule")
        else:
            rule = op.rule("jvp")
            outs = list(clone_op(current_builder(), op, primals, {}).results)
            touts = op.per_result(rule(primals, op_tangents, **op.attrs), "jvp rule")
    rewriter.tangents.update(zip(op.results, touts, strict=True))
    return outs


# --------------------------------------------------------------------------- call-like ops

def jvp_call(op: Operation, primals: Sequence[Value], tangents: Sequence) -> tuple[list[Value], list]:
    """Forward mode of a call-like op: one op of the same kind whose body is the JVP of
    the original body, taking the primals and the non-zero float tangents and giving the
    outputs and their tangents (non-float outputs get symbolic zero tangents)."""
    wrt = [k for k, t in enumerate(tangents) if not isinstance(t, Zero) and primals[k].type.dtype.is_inexact]
    body = jvp_function(body_function(op), wrt)
    new = current_builder().create(op.opdef, [*primals, *(tangents[k] for k in wrt)], op.attrs,
                                   regions=[function_region(body)], result_types=body.output_types)
    n = len(op.results)
    outs, touts = list(new.results[:n]), list(new.results[n:])
    return outs, [t if r.type.dtype.is_inexact else Zero(r.type) for r, t in zip(op.results, touts, strict=True)]
