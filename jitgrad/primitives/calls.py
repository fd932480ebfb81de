"""Call-like ops: checkpoint regions and user-defined differentiation rules.

A call op holds its body as an isolated region (the block's arguments are the op's
operands, its `yield` gives the results), so a body converts to a `Function` and goes
through the same `jvp_function` / `vjp_function` passes as any program: there is no
second AD engine. Each `CallOp` record fills the whole-op slots of the op interface
(`OpDef` in jitgrad.ir.core), since its meaning is its region:
  - `impl_op`: how the reference interpreter runs it (its body),
  - `jvp_op(op, primals, tangents) -> (outputs, tangents)`, emitting into the active builder,
  - `transpose_op(op, cotangents, operands)` for ops linear in some operands,
  - `verify_op`: the region's arguments and yield match the operands and results.
The `inline` pass replaces call ops by their bodies before code generation.

  checkpoint       body = f. JVP: a primal `checkpoint` plus a `checkpoint_jvp`.
  checkpoint_jvp   body = jvp(f) returning only tangents; its operands are f's inputs
                   (the only residuals it keeps) and tangents, so it recomputes f's
                   intermediates. Transpose: a `checkpoint` whose body is vjp(f) — the
                   backward pass recomputes too. (The remat pass decides where
                   recomputation pays; here it is correct and visible.)
  custom_jvp_call  body = f; the JVP is the user's rule, traced where it is needed.
  custom_vjp_call  body = f; reverse mode only. Its JVP traces the user's `fwd` and emits
                   `custom_vjp_lin` (linear in the tangents), whose transpose traces `bwd`.
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence

from jitgrad.errors import GradientError, VerificationError
from jitgrad.ir import Function, OpDef, Trait, Value, current_builder, new_function
from jitgrad.ir.clone import body_function, clone_op, function_region, inline_block  # noqa: F401 - re-exported
from .base import UndefinedPrimal, Zero, instantiate
from .python_rules import traced, tree_flatten, tree_unflatten, value_of
from .region_passes import TransposedOutput, eliminate_dead_code, jvp_function, transpose_function

# --------------------------------------------------------------------------- Python rules

_rules: dict[str, Any] = {}
_rule_ids = itertools.count()


def register_rule(name: str, rule: Any) -> str:
    """Python rule objects live in this process; the IR names them by a string key."""
    key = f"{name}#{next(_rule_ids)}"
    _rules[key] = rule
    return key


def lookup_rule(key: str) -> Any:
    try:
        return _rules[key]
    except KeyError:
        raise GradientError(f"the rule {key!r} is not registered in this process (IR parsed from text "
                            "cannot carry Python rules)") from None


# --------------------------------------------------------------------------- bodies

def emit_call(opdef: "CallOp", body: Function, operands: Sequence[Value], **attrs) -> list[Value]:
    op = current_builder().create(opdef, operands, attrs, regions=[function_region(body)],
                                  result_types=body.output_types)
    return list(op.results)


def keep_outputs(fn: Function, start: int, positions: Sequence[int] | None = None) -> Function:
    """`fn` returning only its outputs from position `start` on (of those, only the ones
    at `positions` counted from `start`, when given), dead code removed."""
    new_fn, builder = new_function(fn.name, fn.input_types)
    with builder:
        results = inline_block(fn.body, new_fn.args)[start:]
        if positions is not None:
            results = [results[k] for k in positions]
        with builder.at(fn.body.terminator.loc):
            builder.ret(results)
    return eliminate_dead_code(new_fn)


# --------------------------------------------------------------------------- the op kind

def _types_from_body(*types, **attrs):
    raise TypeError("call ops take their result types from their body")


def _run_body(op, operands, run_block):
    """Reference interpreter: run the body on the operands."""
    block = op.regions[0].block
    return run_block(block, dict(zip(block.args, operands, strict=True)))


def _verify_body(op) -> None:
    block = op.regions[0].block
    if [a.type for a in block.args] != [v.type for v in op.operands]:
        raise VerificationError("the region's arguments don't match the operands")
    term = block.terminator
    if term is None or [v.type for v in term.operands] != [r.type for r in op.results]:
        raise VerificationError("the region yields types that differ from the op's results")


class CallOp(OpDef):
    """An op whose meaning is its region (plus, for custom rules, Python rules): as many
    results as its body returns, pure as its body is (traced NumPy code has no effects)."""

    def __init__(self, name: str, doc: str, num_regions: int = 1):
        super().__init__(name, _types_from_body, num_regions=num_regions, traits=(Trait.PURE,), doc=doc)
        self.impl_op = _run_body
        self.verify_op = _verify_body


def _copy_call(op, primals) -> list[Value]:
    return list(clone_op(current_builder(), op, primals, {}).results)


def _body_jvp(op, primals, tangents):
    """JVP of any call op through its body: a primal copy plus a checkpoint_jvp.

    Only float values have tangents: a bool or integer operand (a mask that crosses a
    checkpoint boundary) is a plain input of the tangent body, and a non-float result's
    tangent is a symbolic zero, so the next region never sees it as differentiable."""
    outs = _copy_call(op, primals)
    wrt = [k for k, t in enumerate(tangents) if not isinstance(t, Zero) and primals[k].type.dtype.is_inexact]
    if not wrt:
        return outs, [Zero(r.type) for r in op.results]
    fn = body_function(op)
    floats = [k for k, v in enumerate(fn.outputs) if v.type.dtype.is_inexact]
    tangent_fn = keep_outputs(jvp_function(fn, wrt), len(fn.outputs), floats)
    float_touts = iter(emit_call(checkpoint_jvp_p, tangent_fn, [*primals, *(tangents[k] for k in wrt)]))
    touts = [next(float_touts) if r.type.dtype.is_inexact else Zero(r.type) for r in op.results]
    return outs, touts


def _checkpoint_jvp_transpose(op, cotangents, operands):
    """The backward pass of a checkpoint: a checkpoint region holding the transpose of the
    body (which is linear in its tangent operands), run from the primal inputs, so the
    backward pass recomputes the primal values instead of reading stored ones."""
    fn = body_function(op)
    linear = [k for k, v in enumerate(operands) if isinstance(v, UndefinedPrimal)]
    grads_fn = transpose_function(fn, linear, [TransposedOutput.ARG] * len(fn.outputs))
    plain = [v for v in operands if not isinstance(v, UndefinedPrimal)]
    grads = emit_call(checkpoint_p, grads_fn, [*plain, *(instantiate(c) for c in cotangents)])
    out: list = [None] * len(operands)
    for k, g in zip(linear, grads, strict=True):
        out[k] = g
    return out


checkpoint_p = CallOp("checkpoint", "A region whose intermediates are recomputed in the backward pass.")
checkpoint_p.jvp_op = _body_jvp
checkpoint_jvp_p = CallOp("checkpoint_jvp", "Tangents of a checkpoint region; recomputes its primal values.")
checkpoint_jvp_p.jvp_op = _body_jvp
checkpoint_jvp_p.transpose_op = _checkpoint_jvp_transpose


# --------------------------------------------------------------------------- custom rules

def _as_values(tree, what: str, like: Sequence | None = None) -> list[Value]:
    leaves, _ = tree_flatten(tree)
    values = [value_of(x) for x in leaves]
    if like is not None:
        if len(values) != len(like):
            raise GradientError(f"{what} has {len(values)} arrays where {len(like)} are expected")
        for v, t in zip(values, like, strict=True):
            if v.type.shape != t.shape:
                raise GradientError(f"{what} has an array of shape {v.type.shape} where {t.shape} is expected")
    return values


def _tracers(values):
    return traced(values)


def _custom_jvp(op, primals, tangents):
    rule = lookup_rule(op.attrs["rule"])
    outs = _copy_call(op, primals)
    if rule.jvp_rule is None:
        raise GradientError(f"custom_jvp function {rule.name} has no JVP rule: call .defjvp(rule) first", op.loc)
    result = rule.jvp_rule(_tracers(primals), _tracers([instantiate(t) for t in tangents]))
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise GradientError(f"the JVP rule of {rule.name} must return (primal_out, tangent_out)", op.loc)
    return outs, _as_values(result[1], f"the tangent output of {rule.name}'s JVP rule", [r.type for r in op.results])


custom_jvp_call_p = CallOp("custom_jvp_call", "A function with a user-defined JVP rule (attr `rule`).")
custom_jvp_call_p.jvp_op = _custom_jvp


class _LinearizedCall:
    """What the transpose of one `custom_vjp_lin` needs: the user's rules and the pytree
    structures of the residuals and outputs that this call's `fwd` produced."""

    def __init__(self, rule, residual_tree, output_tree):
        self.rule, self.name = rule, rule.name
        self.residual_tree, self.output_tree = residual_tree, output_tree


def _custom_vjp_jvp(op, primals, tangents):
    rule = lookup_rule(op.attrs["rule"])
    if rule.fwd is None:
        raise GradientError(f"custom_vjp function {rule.name} has no rules: call .defvjp(fwd, bwd) first", op.loc)
    result = rule.fwd(*_tracers(primals))
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise GradientError(f"the fwd rule of {rule.name} must return (output, residuals)", op.loc)
    outs = _as_values(result[0], f"the output of {rule.name}'s fwd rule", [r.type for r in op.results])
    residuals = _as_values(result[1], f"the residuals of {rule.name}'s fwd rule")
    linearized = _LinearizedCall(rule, tree_flatten(result[1])[1], tree_flatten(result[0])[1])
    lin = current_builder().create(custom_vjp_lin_p, [*residuals, *(instantiate(t) for t in tangents)],
                                   {"rule": register_rule(rule.name, linearized), "num_residuals": len(residuals),
                                    "out_types": tuple(r.type for r in op.results)})
    return outs, list(lin.results)


def _custom_vjp_lin_transpose(op, cotangents, operands):
    linearized = lookup_rule(op.attrs["rule"])
    n_res = op.attrs["num_residuals"]
    residuals, inputs = operands[:n_res], operands[n_res:]
    cts = tree_unflatten(linearized.output_tree, _tracers([instantiate(c) for c in cotangents]))
    result = linearized.rule.bwd(tree_unflatten(linearized.residual_tree, _tracers(residuals)), cts)
    if not isinstance(result, (tuple, list)):
        raise GradientError(f"the bwd rule of {linearized.name} must return a tuple with one cotangent per "
                            f"input, got {type(result).__name__}", op.loc)
    in_cts = _as_values(tuple(result), f"the result of {linearized.name}'s bwd rule", [v.type for v in inputs])
    return [None] * n_res + in_cts


def _custom_vjp_lin_no_jvp(op, primals, tangents):
    raise GradientError(f"{lookup_rule(op.attrs['rule']).name} is a jitgrad.custom_vjp function: it can be "
                        "differentiated in reverse mode only (forward mode — jvp, jacfwd — needs a custom_jvp rule)", op.loc)


custom_vjp_call_p = CallOp("custom_vjp_call", "A function with user-defined fwd/bwd rules (attr `rule`).")
custom_vjp_call_p.jvp_op = _custom_vjp_jvp


def _custom_vjp_lin_impl(*operands, rule, **attrs):
    raise GradientError(f"{lookup_rule(rule).name} is a jitgrad.custom_vjp function: it can be "
                        "differentiated in reverse mode only; forward mode needs a custom_jvp rule")


# Residuals and tangents in, tangents out: linear in its tangent operands (those after
# `num_residuals`), which its transpose rule knows from the attribute. It has no lowering:
# reverse mode always transposes it away before code generation.
custom_vjp_lin_p = OpDef("custom_vjp_lin", lambda *types, rule, num_residuals, out_types: list(out_types),
                         traits=(Trait.PURE,), doc="Linearized custom_vjp call; its transpose runs the user's bwd rule.")
custom_vjp_lin_p.impl = _custom_vjp_lin_impl
custom_vjp_lin_p.jvp_op = _custom_vjp_lin_no_jvp
custom_vjp_lin_p.transpose_op = _custom_vjp_lin_transpose
