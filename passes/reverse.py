"""Reverse-mode differentiation as an IR -> IR pass: linearize, then transpose.

1. `jvp_function` gives f_jvp(x, t) -> (y, t_y).
2. Linearize: every op of f_jvp that depends on a tangent argument is *linear* (the JVP
   rules only ever combine tangents linearly with primal values); every other op is
   primal work — the forward pass and the residuals the linear part needs.
3. Transpose: walk the linear ops backwards; each primitive's `transpose` rule turns the
   cotangent of its result into cotangents of its linear operands, summed on fan-out.

The result, `f_vjp(*primals, *output_cotangents) -> (*outputs, *input_cotangents)`, is
ordinary IR: the pipeline optimizes it, the CLI prints it, and differentiating it again
gives higher-order derivatives. This is JAX's linearize+transpose design on an SSA IR.
"""
from __future__ import annotations

from typing import Sequence

from jitgrad.errors import GradientError
from jitgrad.ir import Function, Value, new_function
from jitgrad.primitives import UndefinedPrimal, Zero, add_tangents, full
from .manager import copy_op
from .jvp import jvp_function


def vjp_function(fn: Function, wrt: Sequence[int], cotangents: Sequence[str] | None = None) -> Function:
    """Reverse mode. `cotangents` says, per output of `fn`, where its cotangent comes
    from: "arg" (an argument of the result; the default), "one" (the constant 1: the
    gradient of a scalar loss) or "none" (the output is not differentiated, e.g. aux
    data). Arguments of the result: the primals, then the "arg" cotangents. Results:
    the outputs of `fn`, then one cotangent per input in `wrt`."""
    wrt = list(wrt)
    cotangents = list(cotangents) if cotangents is not None else ["arg"] * len(fn.outputs)
    if len(cotangents) != len(fn.outputs) or set(cotangents) - {"arg", "one", "none"}:
        raise ValueError(f"cotangents must give 'arg', 'one' or 'none' for each of {len(fn.outputs)} outputs")
    jfn = jvp_function(fn, wrt)
    n_in, n_out = len(fn.args), len(fn.outputs)
    tangent_args = jfn.args[n_in:]
    linear: set[Value] = set(tangent_args)
    for op in jfn.body.ops:
        if any(v in linear for v in op.operands) and not op.opdef.is_terminator:
            linear.update(op.results)

    ct_types = [t for t, kind in zip(fn.output_types, cotangents, strict=True) if kind == "arg"]
    new_fn, builder = new_function(f"{fn.name}_vjp", fn.input_types + ct_types)
    env: dict[Value, Value] = dict(zip(jfn.args[:n_in], new_fn.args[:n_in], strict=True))
    ct_args = iter(new_fn.args[n_in:])
    jvp_outputs = jfn.outputs
    primal_outs, tangent_outs = jvp_outputs[:n_out], jvp_outputs[n_out:]
    linear_ops = []
    with builder:
        for op in jfn.body.ops:          # forward pass: primal ops and residuals
            if op.opdef.is_terminator:
                continue
            if op.results and op.results[0] in linear:
                linear_ops.append(op)
                continue
            with builder.at(op.loc):
                new_op = copy_op(builder, op, [env[v] for v in op.operands], {})
            env.update(zip(op.results, new_op.results, strict=True))

        cts: dict[Value, object] = {}
        for kind, t_out in zip(cotangents, tangent_outs, strict=True):
            if kind == "none":
                continue
            if kind == "one":
                with builder.at(fn.body.terminator.loc):
                    ct = full(1.0, t_out.type)
            else:
                ct = next(ct_args)
            if t_out in linear:
                cts[t_out] = add_tangents(cts[t_out], ct) if t_out in cts else ct

        for op in reversed(linear_ops):  # backward pass
            result_cts = [cts.pop(r, None) for r in op.results]
            if all(c is None for c in result_cts):
                continue
            operands = [UndefinedPrimal(v.type) if v in linear else env[v] for v in op.operands]
            with builder.at(op.loc):
                operand_cts = _transpose(op, result_cts, operands)
                for v, c in zip(op.operands, operand_cts, strict=True):
                    if c is not None and v in linear:
                        cts[v] = add_tangents(cts[v], c) if v in cts else c

        with builder.at(fn.body.terminator.loc):
            grads = [cts.get(t) if t in cts else full(0, t.type) for t in tangent_args]
            builder.ret([env[v] for v in primal_outs] + grads)
    return new_fn


def _transpose(op, result_cts, operands) -> list:
    """Cotangents of `op`'s operands from those of its results (None: no contribution)."""
    transpose_op = getattr(op.opdef, "transpose_op", None)
    if transpose_op is not None:      # call ops see all their results' cotangents at once
        return transpose_op(op, [c if c is not None else Zero(r.type) for c, r in zip(result_cts, op.results,
                                                                                       strict=True)], operands)
    rule = getattr(op.opdef, "transpose", None)
    if rule is None:
        raise GradientError(f"{op.name} is not linear in its tangent operands, so reverse mode cannot transpose it "
                            "(a custom_jvp rule must be linear in its tangents for reverse mode)", op.loc)
    return rule(result_cts[0], *operands, **op.attrs)
