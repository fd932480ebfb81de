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
    kinds = ["keep"] * n_out + [("drop" if kind == "none" else kind) for kind in cotangents]
    out = transpose_function(jfn, range(n_in, n_in + len(wrt)), kinds)
    out.name = f"{fn.name}_vjp"
    return out


def transpose_function(fn: Function, linear_args: Sequence[int], outputs: Sequence[str]) -> Function:
    """Transpose `fn` with respect to the arguments at `linear_args`, in which it must be
    linear (every op depending on them is a linear primitive or call). `outputs` gives
    per output of `fn`: "keep" (a non-linear output, returned as is), "drop", "arg" (its
    cotangent is an argument of the result) or "one" (its cotangent is 1).
    Result: (*non-linear args, *"arg" cotangents) -> (*kept outputs, *one cotangent per
    linear arg). The non-linear ops form the forward pass; the linear ones, walked
    backwards through their transpose rules, the backward pass."""
    linear_args = list(linear_args)
    linear: set[Value] = {fn.args[k] for k in linear_args}
    for op in fn.body.ops:
        if any(v in linear for v in op.operands) and not op.opdef.is_terminator:
            linear.update(op.results)
    plain_args = [v for k, v in enumerate(fn.args) if k not in linear_args]
    ct_types = [v.type for v, kind in zip(fn.outputs, outputs, strict=True) if kind == "arg"]
    new_fn, builder = new_function(f"{fn.name}_transpose", [v.type for v in plain_args] + ct_types)
    env: dict[Value, Value] = dict(zip(plain_args, new_fn.args[:len(plain_args)], strict=True))
    ct_args = iter(new_fn.args[len(plain_args):])
    end_loc = fn.body.terminator.loc
    linear_ops = []
    with builder:
        for op in fn.body.ops:           # forward pass: non-linear ops, the residuals among them
            if op.opdef.is_terminator:
                continue
            if op.results and op.results[0] in linear:
                linear_ops.append(op)
                continue
            with builder.at(op.loc):
                new_op = copy_op(builder, op, [env[v] for v in op.operands], {})
            env.update(zip(op.results, new_op.results, strict=True))

        cts: dict[Value, object] = {}
        for kind, out in zip(outputs, fn.outputs, strict=True):
            if kind in ("keep", "drop"):
                continue
            with builder.at(end_loc):
                ct = full(1.0, out.type) if kind == "one" else next(ct_args)
            if out in linear:
                cts[out] = add_tangents(cts[out], ct) if out in cts else ct

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

        with builder.at(end_loc):
            kept = []
            for kind, out in zip(outputs, fn.outputs, strict=True):
                if kind == "keep":
                    if out in linear:
                        raise GradientError(f"output of {fn.name} kept by the transpose depends on a linear argument")
                    kept.append(env[out])
            grads = [cts.get(fn.args[k]) if fn.args[k] in cts else full(0, fn.args[k].type) for k in linear_args]
            builder.ret(kept + grads)
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
