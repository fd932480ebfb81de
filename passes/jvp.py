"""Forward-mode differentiation as an IR -> IR pass.

`jvp_function(f, wrt)` builds `f_jvp(*primals, *tangents) -> (*outputs, *output_tangents)`
where there is one tangent argument per input index in `wrt`. Each op is copied, then its
primitive's `jvp` rule emits the tangent computation right after it. Tangents that are
known to be zero stay symbolic (`Zero`) and cost nothing. The result is ordinary IR, so
it can be differentiated again (any order) or transposed into reverse mode.
"""
from __future__ import annotations

from typing import Sequence

from jitgrad.errors import GradientError
from jitgrad.ir import Builder, Function, Operation, Value, new_function
from jitgrad.primitives import Zero, instantiate
from .manager import copy_op


def jvp_function(fn: Function, wrt: Sequence[int]) -> Function:
    wrt = list(wrt)
    for i in wrt:
        if not fn.args[i].type.dtype.is_float:
            raise GradientError(f"cannot differentiate with respect to argument {i} of {fn.name}: it has "
                                f"type {fn.args[i].type}; only float arguments have tangents")
    tangent_types = [fn.args[i].type for i in wrt]
    new_fn, builder = new_function(f"{fn.name}_jvp", fn.input_types + tangent_types)
    env: dict[Value, Value] = dict(zip(fn.args, new_fn.args[:len(fn.args)], strict=True))
    tangents: dict[Value, object] = {v: Zero(v.type) for v in fn.args}
    for i, t in zip(wrt, new_fn.args[len(fn.args):], strict=True):
        tangents[fn.args[i]] = t
    with builder:
        for op in fn.body.ops:
            if op.opdef.is_terminator:
                outs = [env[v] for v in op.operands]
                with builder.at(op.loc):
                    builder.ret(outs + [instantiate(tangents[v]) for v in op.operands])
                break
            _jvp_op(builder, op, env, tangents)
    return new_fn


def _jvp_op(builder: Builder, op: Operation, env: dict, tangents: dict) -> None:
    primals = [env[v] for v in op.operands]
    op_tangents = [tangents[v] for v in op.operands]
    with builder.at(op.loc):
        no_tangent = all(isinstance(t, Zero) for t in op_tangents) or not any(
            r.type.dtype.is_float for r in op.results)
        jvp_op = getattr(op.opdef, "jvp_op", None)
        if jvp_op is not None and not no_tangent:      # call ops: rules that see the whole op
            outs, touts = jvp_op(op, primals, op_tangents)
            env.update(zip(op.results, outs, strict=True))
            tangents.update(zip(op.results, touts, strict=True))
            return
        new_op = copy_op(builder, op, primals, {})
        env.update(zip(op.results, new_op.results, strict=True))
        if no_tangent:
            for r in op.results:
                tangents[r] = Zero(r.type)
            return
        rule = getattr(op.opdef, "jvp", None)
        if rule is None:
            raise GradientError(f"op {op.name!r} has no differentiation rule", op.loc)
        tangents[op.results[0]] = rule(primals, op_tangents, **op.attrs)
