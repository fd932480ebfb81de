"""Reverse-mode differentiation as an IR -> IR pass: linearize, partially evaluate, transpose.

1. `jvp_function` gives f_jvp(x, t) -> (y, t_y).
2. Partial evaluation (`partial_eval_function`) splits f_jvp, op by op, into a *known*
   function (the forward pass: everything computable from the primals, plus the
   residuals the rest reads) and a *staged* one (everything that depends on a tangent,
   which the JVP rules make linear in the tangents). Each op is split by its record's
   `partial_eval` rule; without one, an op with a tangent operand is staged whole. Ops
   with regions carry their own rule, so one JVP'd call computing both primal and
   tangent values becomes a primal call and a linear call, decided per value inside
   its body rather than "touches a tangent, so all of it is linear".
3. Transpose: the staged function is walked backwards; each op's `transpose` rule turns
   the cotangents of its results into cotangents of its linear operands, summed on
   fan-out.

The result, `f_vjp(*primals, *output_cotangents) -> (*outputs, *input_cotangents)`, is
ordinary IR: the pipeline optimizes it, the CLI prints it, and differentiating it again
gives higher-order derivatives.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from jitgrad.errors import GradientError
from jitgrad.ir import Block, Builder, Function, Operation, TensorType, Value, current_builder, new_function
from jitgrad.ir.clone import body_function, clone_op, function_region, inline_block
from jitgrad.ir.rewrite import Rewriter, free_values
from jitgrad.primitives import UndefinedPrimal, Zero, add_tangents, full, instantiate
from jitgrad.primitives.region_passes import PartialEval, TransposedOutput, stage_whole  # noqa: F401 - re-exported
from .jvp import jvp_function
from .simplify import DeadCodeElimination


class Cotangent(str, enum.Enum):
    """Where the cotangent of one output of a differentiated function comes from."""

    ARG = "arg"          # an argument of the derivative function
    ONE = "one"          # the constant 1: the gradient of a scalar loss
    NONE = "none"        # the output is not differentiated (aux data)


def vjp_function(fn: Function, wrt: Sequence[int], cotangents: Sequence[Cotangent | str] | None = None) -> Function:
    """Reverse mode. `cotangents` says, per output of `fn`, where its cotangent comes from
    (`Cotangent`; ARG for every output by default). Arguments of the result: the primals,
    then the ARG cotangents. Results: the outputs of `fn`, then one cotangent per input
    in `wrt`."""
    wrt = list(wrt)
    try:
        kinds = [Cotangent(k) for k in cotangents] if cotangents is not None else [Cotangent.ARG] * len(fn.outputs)
    except ValueError:
        kinds = []
    if len(kinds) != len(fn.outputs):
        raise ValueError(f"cotangents must give 'arg', 'one' or 'none' for each of {len(fn.outputs)} outputs")
    jfn = jvp_function(fn, wrt)
    n_in, n_out = len(fn.args), len(fn.outputs)
    outputs = [TransposedOutput.KEEP] * n_out + [TransposedOutput.DROP if k is Cotangent.NONE else TransposedOutput(k.value)
                                                 for k in kinds]
    out = transpose_function(jfn, range(n_in, n_in + len(wrt)), outputs)
    out.name = f"{fn.name}_vjp"
    return out


# --------------------------------------------------------------------------- partial evaluation

@dataclass(frozen=True)
class Split:
    """A function split by `partial_eval_function`: `known(*known args) -> (*known outputs,
    *residuals)` and `staged(*residuals, *unknown args) -> (*unknown outputs)`;
    `known_outputs[k]` says in which of the two output k of the original is."""

    known: Function
    staged: Function
    known_outputs: tuple[bool, ...]
    num_residuals: int


@dataclass(frozen=True)
class Unknown:
    """What partial evaluation's env holds for a value that depends on an unknown
    argument: only its type is known until the staged function computes it."""

    type: TensorType


class _PartialEvaluator(Rewriter):
    """The driver with known values (new values of the known function) and `Unknown`
    markers in its env. Known ops are copied by the default rule; `staged` collects the
    deferred work as (op to stage, the values its results stand for)."""

    def __init__(self):
        super().__init__()
        self.staged: list[tuple[Operation, list[Value]]] = []

    def rule_for(self, op: Operation):
        return _partial_eval_rule


def _reads(op: Operation) -> list[Value]:
    """The values `op` reads: its operands and what its regions capture from outside."""
    return [*op.operands, *(v for region in op.regions for block in region.blocks for v in free_values(block))]


def _partial_eval_rule(pe: _PartialEvaluator, op: Operation, inputs: list) -> Optional[list]:
    unknown = [isinstance(x, Unknown) for x in inputs]
    captures_unknown = any(isinstance(pe.env.get(v), Unknown) for v in _reads(op)[len(op.operands):])
    if not any(unknown) and not captures_unknown:
        return None
    rule = op.opdef.partial_eval if not captures_unknown else None
    split = (rule or stage_whole)(op, unknown)
    known_values: Iterator[Value] = iter(())
    if split.known is not None:
        new = clone_op(current_builder(), split.known, [pe.read(v) for v in split.known.operands], {})
        pe.write(split.known.results, new.results)
        known_values = iter(new.results)
    if split.staged is not None:
        pe.staged.append((split.staged, [r for r, k in zip(op.results, split.known_results, strict=True) if not k]))
    return [next(known_values) if k else Unknown(r.type) for r, k in zip(op.results, split.known_results, strict=True)]


def partial_eval_function(fn: Function, unknown: Sequence[bool]) -> Split:
    """Split `fn` into the part computable from its known arguments and the part that
    depends on the unknown ones (`unknown[k]` per argument), op by op through each op's
    `partial_eval` rule (`stage_whole` for ops without one), on the IR's driver."""
    unknown = list(unknown)
    unknown_args = [a for a, u in zip(fn.args, unknown, strict=True) if u]
    known_fn, builder = new_function(f"{fn.name}_known", [a.type for a, u in zip(fn.args, unknown, strict=True)
                                                           if not u])
    pe = _PartialEvaluator()
    known_args = iter(known_fn.args)
    with builder:
        outs = pe.run_block(fn.body, [Unknown(a.type) if u else next(known_args)
                                      for a, u in zip(fn.args, unknown, strict=True)])
        residuals = list(dict.fromkeys(x for op, _ in pe.staged for x in map(pe.read, _reads(op))
                                       if not isinstance(x, Unknown)))
        known_outputs = tuple(not isinstance(x, Unknown) for x in outs)
        with builder.at(fn.body.terminator.loc):
            builder.ret([x for x, k in zip(outs, known_outputs, strict=True) if k] + residuals)

    staged_fn, builder = new_function(f"{fn.name}_staged", [r.type for r in residuals] + [a.type for a in unknown_args])
    residual_arg = dict(zip(residuals, staged_fn.args, strict=False))
    copier = Rewriter()
    copier.write(unknown_args, staged_fn.args[len(residuals):])
    with builder:
        for op, results in pe.staged:
            for v in _reads(op):
                x = pe.read(v)
                if not isinstance(x, Unknown):
                    copier.env[v] = residual_arg[x]
            copier.eval_op(op)
            copier.write(results, [copier.read(r) for r in op.results])
        with builder.at(fn.body.terminator.loc):
            builder.ret([copier.read(v) for v, k in zip(fn.outputs, known_outputs, strict=True) if not k])
    return Split(known_fn, staged_fn, known_outputs, len(residuals))


# --------------------------------------------------------------------------- transposition

def transpose_function(fn: Function, linear_args: Sequence[int],
                       outputs: Sequence[TransposedOutput | str]) -> Function:
    """Transpose `fn` with respect to the arguments at `linear_args`, in which it must be
    linear (every op depending on them is a linear primitive or call, once partially
    evaluated). `outputs` gives per output of `fn` a `TransposedOutput`.
    Result: (*non-linear args, *ARG cotangents) -> (*kept outputs, *one cotangent per
    linear arg). The known part of `fn` forms the forward pass; the staged part, walked
    backwards through its transpose rules, the backward pass."""
    linear_args = list(linear_args)
    outputs = [TransposedOutput(k) for k in outputs]
    split = partial_eval_function(fn, [k in linear_args for k in range(len(fn.args))])
    n_plain = len(fn.args) - len(linear_args)
    ct_types = [v.type for v, kind in zip(fn.outputs, outputs, strict=True) if kind is TransposedOutput.ARG]
    new_fn, builder = new_function(f"{fn.name}_transpose", [v.type for v in split.known.args] + ct_types)
    ct_args = iter(new_fn.args[n_plain:])
    end_loc = fn.body.terminator.loc
    with builder:
        forward = inline_block(split.known.body, new_fn.args[:n_plain])
        n_known = sum(split.known_outputs)
        known_values, residuals = iter(forward[:n_known]), forward[n_known:]
        kept, cts = [], []
        with builder.at(end_loc):
            for kind, is_known, out in zip(outputs, split.known_outputs, fn.outputs, strict=True):
                value = next(known_values) if is_known else None
                ct = next(ct_args) if kind is TransposedOutput.ARG else None
                if kind is TransposedOutput.KEEP:
                    if not is_known:
                        raise GradientError(f"output of {fn.name} kept by the transpose depends on a linear argument")
                    kept.append(value)
                elif not is_known:        # a staged (linear) output: its cotangent seeds the backward pass
                    cts.append(full(1.0, out.type) if kind is TransposedOutput.ONE else ct)
        grads = backward_pass(split.staged, residuals, cts)       # in argument order
        grad_of = dict(zip(sorted(set(linear_args)), grads, strict=True))
        with builder.at(end_loc):
            builder.ret(kept + [grad_of[k] if grad_of[k] is not None else full(0, fn.args[k].type)
                                for k in linear_args])
    return new_fn


def backward_pass(fn: Function, residuals: Sequence[Value], output_cts: Sequence[Optional[Value]]) -> list:
    """Emit the transpose of a staged function `fn(*residuals, *linear args)` into the
    active builder: `output_cts` has one cotangent (or None) per output of `fn`; returns
    one cotangent (or None: no contribution) per linear argument."""
    forward = Rewriter(env=dict(zip(fn.args, residuals, strict=False)))
    env = forward.env
    linear: set[Value] = set(fn.args[len(residuals):])
    linear_ops = []
    for op in fn.body.ops:            # ops of the staged function that read no linear value: forward work
        if op.opdef.is_terminator:
            break
        if any(v in linear for v in _reads(op)):
            linear.update(op.results)
            linear_ops.append(op)
        else:
            forward.eval_op(op)
    builder = current_builder()
    cts: dict[Value, object] = {}
    for out, ct in zip(fn.outputs, output_cts, strict=True):
        if ct is not None and out in linear:
            cts[out] = add_tangents(cts[out], ct) if out in cts else ct
    for op in reversed(linear_ops):
        result_cts = [cts.pop(r, None) for r in op.results]
        if all(c is None for c in result_cts):
            continue
        operands = [UndefinedPrimal(v.type) if v in linear else env[v] for v in op.operands]
        with builder.at(op.loc):
            operand_cts = _transpose(op, result_cts, operands)
            for v, c in zip(op.operands, operand_cts, strict=True):
                if c is not None and v in linear:
                    cts[v] = add_tangents(cts[v], c) if v in cts else c
    return [cts.get(a) for a in fn.args[len(residuals):]]


def _transpose(op, result_cts, operands) -> list:
    """Cotangents of `op`'s operands from those of its results (None: no contribution)."""
    transpose_op = op.opdef.transpose_op
    if transpose_op is not None:      # rules that see every result's cotangent at once
        return transpose_op(op, [c if c is not None else Zero(r.type)
                                 for c, r in zip(result_cts, op.results, strict=True)], operands)
    # `transpose` takes one cotangent: an op with several results needs a `transpose_op`.
    rule = op.rule("transpose" if len(op.results) == 1 else "transpose_op")
    return rule(result_cts[0], *operands, **op.attrs)


# --------------------------------------------------------------------------- call-like ops

def partial_eval_call(op: Operation, unknown: Sequence[bool]) -> PartialEval:
    """Partial evaluation of a call-like op (one region whose block receives the operands
    and yields the results): its body is split by `partial_eval_function`, each half
    becoming an op of the same kind; the known one also yields the residuals, except
    those that are known operands passed through, which the staged op reads directly
    (so a wholly linear call gets no known op at all)."""
    split = partial_eval_function(body_function(op), unknown)
    known_operands = [v for v, u in zip(op.operands, unknown, strict=True) if not u]
    unknown_operands = [v for v, u in zip(op.operands, unknown, strict=True) if u]
    n_known_results = len(split.known.outputs) - split.num_residuals
    arg_position = {a: k for k, a in enumerate(split.known.args)}
    passed_through = [arg_position.get(v) for v in split.known.outputs[n_known_results:]]
    known_fn = _select_outputs(split.known, [*range(n_known_results),
                                             *(n_known_results + j for j, k in enumerate(passed_through) if k is None)])
    builder = Builder(Block(), op.loc)
    known = staged = None
    computed: list[Value] = []
    if known_fn.outputs:
        known = builder.create(op.opdef, known_operands, op.attrs, regions=[function_region(known_fn)],
                               result_types=known_fn.output_types)
        computed = list(known.results[n_known_results:])
    computed_residuals = iter(computed)
    residuals = tuple(known_operands[k] if k is not None else next(computed_residuals) for k in passed_through)
    if split.staged.outputs:
        staged = builder.create(op.opdef, [*residuals, *unknown_operands], op.attrs,
                                regions=[function_region(split.staged)], result_types=split.staged.output_types)
    return PartialEval(known, staged, residuals, split.known_outputs)


def _select_outputs(fn: Function, positions: Sequence[int]) -> Function:
    """`fn` returning only its outputs at `positions`, the work nothing needs removed."""
    if list(positions) == list(range(len(fn.outputs))):
        return fn
    new_fn, builder = new_function(fn.name, fn.input_types)
    with builder:
        outs = inline_block(fn.body, new_fn.args)
        with builder.at(fn.body.terminator.loc):
            builder.ret([outs[k] for k in positions])
    return DeadCodeElimination().run(new_fn)


def transpose_call(op: Operation, cotangents: Sequence, operands: Sequence) -> list:
    """Transpose of a call-like op linear in its `UndefinedPrimal` operands: an op of the
    same kind whose body is the transposed body, from the other operands and the
    cotangents of the results to the cotangents of the linear operands."""
    body = body_function(op)
    linear = [k for k, v in enumerate(operands) if isinstance(v, UndefinedPrimal)]
    grads_fn = transpose_function(body, linear, [TransposedOutput.ARG] * len(body.outputs))
    plain = [v for v in operands if not isinstance(v, UndefinedPrimal)]
    new = current_builder().create(op.opdef, [*plain, *(instantiate(c) for c in cotangents)], op.attrs,
                                   regions=[function_region(grads_fn)], result_types=grads_fn.output_types)
    out: list = [None] * len(operands)
    for k, g in zip(linear, new.results, strict=True):
        out[k] = g
    return out
