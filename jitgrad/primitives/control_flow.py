"""Structured control flow as region ops: `cond`, `while`, `fori`, `scan` and reverse
mode's `reverse_fori`.

Every region is isolated (its block receives everything it reads as arguments), so a
region converts to a `Function` and goes through the same forward-mode, partial-evaluation
and transpose passes as any program:

  cond    operands [pred (bool, 0-d), *args]; regions [then, else], each
          (*args) -> results. N-way `switch` is a chain of conds.
  while   operands [*consts, *carry]; regions [test (*consts, *carry) -> bool,
          body (*consts, *carry) -> carry]; results: the final carry, then the trip count
          (i64) when attribute `count_trips` is set (reverse mode records it this way).
  fori    operands [trips (i64, 0-d), *consts, *carry]; region body (i, *consts, *carry)
          -> carry, run for i = 0 .. trips-1 (none when trips <= 0): a loop whose trip
          count is known on entry but not at compile time.
  scan    operands [*consts, *carry, *xs]; region body (*consts, *carry, *x slices)
          -> (*carry, *y slices); attributes num_consts, num_carry, length, reverse;
          results: the final carry, then the ys stacked along a new leading axis. With
          num_passive (reverse mode's linear scan) the first carries are not results.
  reverse_fori  operands [trips, *consts, *state, *carry, *xs]; regions [advance (i,
          *consts, *state, *x slices) -> state, step (i, *consts, *state, *carry, *x
          slices) -> (carry, *y slices)]; runs step for i = trips-1 down to 0 on state_i
          (state_0 the operand, state_{i+1} advanced from state_i); attributes
          num_consts, num_passive (the state's length), reversal ("stack" | "revolve"),
          snapshots; reversing a scan also num_xs, length and reverse (x and y slices at
          index i, or length-1-i; the ys stacked after the carry in the results).

Differentiation. Forward mode (`jvp_op`) puts the JVP of the body in the same op kind,
tangents carried next to primals. Reverse mode splits a JVP'd loop per value
(`partial_eval`): for `scan` the forward scan stacks the per-iteration residuals as extra
outputs and the linear scan reads them as xs; its transpose is a scan running the other
way. For `while` and `fori` the trip count is only known at run time, so the forward loop
records it (`count_trips`) and the linear loop is a `fori` of that many trips carrying
the primal values next to the tangents (as passive carries); its transpose is a
`reverse_fori`, which runs the transposed body for i = T-1 down to 0 on the primal
states, stored once on a heap stack (`stack`: O(T) memory and steps) or recomputed
from a fixed number of snapshots by binomial checkpointing (`revolve`, chosen under
memory_budget). A scan set to revolve splits the same way (its linear scan carries the
primal carries as passive carries) and transposes into a `reverse_fori` that reads xs
and writes the xs' cotangents at each step's index. Forward mode through a
`reverse_fori` is a `reverse_fori` over tangent-extended states (O(trips)); reverse mode
through one splits its recomputing form (O(trips^1.5)).
`cond` splits each branch; residuals of both branches travel through one op (the branch
not taken yields zeros for the other's).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from jitgrad.errors import GradientError, VerificationError
from jitgrad.ir import (Block, Builder, DType, Function, OpDef, Operation, Region, TensorType, Trait, Value,
                        current_builder, new_function)
from jitgrad.ir.clone import function_region, inline_block
from jitgrad.ir.rewrite import Rewriter
from .base import UndefinedPrimal, Zero, instantiate
from .kernel_kind import KernelKind
from .region_passes import (PartialEval, TransposedOutput, eliminate_dead_code, jvp_function, partial_eval_function,
                            stage_whole, transpose_function)

BOOL = TensorType((), DType.bool)
I64 = TensorType((), DType.i64)


class LoopKernel(KernelKind):
    """A region op as a kernel of its own: the backend compiles each region as an ordinary
    kernel sequence (a function of its own, fused kernels inside) and emits the loop or
    branch around the calls."""

    emitters = {"cpu": "jitgrad.backends.cpu.control_flow:emit_region_op",
                "cuda": "jitgrad.backends.cuda.control_flow:emit_region_op"}
    cost = 16


def _types_from_regions(*types, **attrs):
    raise TypeError("control-flow ops take their result types from their regions")


class RegionOp(OpDef):
    """A control-flow op kind: pure (traced bodies have no effects), results from its regions."""

    def __init__(self, name: str, num_regions: int, doc: str):
        super().__init__(name, _types_from_regions, num_regions=num_regions, traits=(Trait.PURE,), doc=doc)
        self.lowering = LoopKernel()


# --------------------------------------------------------------------------- functions of regions

def region_function(op: Operation, k: int = 0, name: str | None = None) -> Function:
    """Region `k` of `op` as a standalone Function (its `yield` becomes `return`)."""
    block = op.regions[k].block
    fn, builder = new_function(name or f"{op.name}_region{k}", [a.type for a in block.args])
    with builder:
        outs = inline_block(block, fn.args)
        with builder.at(block.terminator.loc):
            builder.ret(outs)
    return fn


def make_function(name: str, input_types: Sequence[TensorType], build: Callable[[list[Value]], list[Value]]) -> Function:
    """A Function whose body is what `build(args)` emits; it returns build's values."""
    fn, builder = new_function(name, list(input_types))
    with builder:
        builder.ret(list(build(list(fn.args))))
    return fn


def call(fn: Function, args: Sequence[Value]) -> list[Value]:
    """`fn`'s body inlined into the active builder on `args`."""
    return inline_block(fn.body, list(args))


def _dce(fn: Function) -> Function:
    return eliminate_dead_code(fn)


def _create(opdef: OpDef, operands: Sequence[Value], regions: Sequence[Function], result_types, attrs=None,
            builder: Builder | None = None) -> Operation:
    return (builder or current_builder()).create(opdef, list(operands), dict(attrs or {}),
                                                 regions=[function_region(f) for f in regions],
                                                 result_types=list(result_types))


def _types(values) -> list[TensorType]:
    return [v.type for v in values]


def _block_types(op: Operation, k: int):
    block = op.regions[k].block
    return [a.type for a in block.args], [v.type for v in block.terminator.operands]


def _expect(what: str, got, expected) -> None:
    if list(got) != list(expected):
        raise VerificationError(f"{what}: ({', '.join(map(str, got))}) where ({', '.join(map(str, expected))}) "
                                "is expected")


# --------------------------------------------------------------------------- cond

cond_p = RegionOp("cond", 2, "if pred then region 0 else region 1, on the operands after pred.")


def _cond_verify(op: Operation) -> None:
    if not op.operands or op.operands[0].type != BOOL:
        raise VerificationError("cond's first operand must be a 0-d bool predicate")
    for k in range(2):
        args, outs = _block_types(op, k)
        _expect(f"cond's region {k} arguments", args, _types(op.operands[1:]))
        _expect(f"cond's region {k} yields", outs, _types(op.results))


def _cond_impl(op, operands, run_block):
    block = op.regions[0 if bool(operands[0]) else 1].block
    return run_block(block, dict(zip(block.args, operands[1:], strict=True)))


def _cond_jvp(op, primals, tangents):
    args = primals[1:]
    wrt = [k for k, t in enumerate(tangents[1:]) if not isinstance(t, Zero) and args[k].type.dtype.is_inexact]
    floats = [k for k, r in enumerate(op.results) if r.type.dtype.is_inexact]
    n = len(op.results)
    branches = [_select(jvp_function(region_function(op, k), wrt), [*range(n), *(n + j for j in floats)])
                for k in range(2)]
    new = _create(cond_p, [primals[0], *args, *(tangents[1 + k] for k in wrt)], branches,
                  branches[0].output_types)
    touts = iter(new.results[n:])
    return list(new.results[:n]), [next(touts) if r.type.dtype.is_inexact else Zero(r.type) for r in op.results]


def _select(fn: Function, positions: Sequence[int]) -> Function:
    """`fn` returning only its outputs at `positions`, dead code removed."""
    if list(positions) == list(range(len(fn.outputs))):
        return fn
    return _dce(make_function(fn.name, fn.input_types, lambda args: [call(fn, args)[k] for k in positions]))


def _cond_partial_eval(op, unknown):
    if unknown[0]:
        return stage_whole(op, unknown)
    arg_unknown = list(unknown[1:])
    splits = [partial_eval_function(region_function(op, k), arg_unknown) for k in range(2)]
    known_results = tuple(all(s.known_outputs[j] for s in splits) for j in range(len(op.results)))
    args = op.operands[1:]
    known_args = [v for v, u in zip(args, arg_unknown, strict=True) if not u]
    unknown_args = [v for v, u in zip(args, arg_unknown, strict=True) if u]
    # residuals of branch b: its split's residuals, then its known values of results
    # that are unknown overall (the other branch computes them in the staged part)
    extra = [[j for j, k in enumerate(s.known_outputs) if k and not known_results[j]] for s in splits]
    residual_types = []
    for s, ex in zip(splits, extra, strict=True):
        n_known = sum(s.known_outputs)
        residual_types.append([*(v.type for v in s.known.outputs[n_known:]), *(op.results[j].type for j in ex)])
    slots = [len(residual_types[0]), len(residual_types[1])]
    all_residual_types = residual_types[0] + residual_types[1]

    def known_branch(b):
        s = splits[b]

        def build(kargs):
            outs = call(s.known, kargs)
            n_known = sum(s.known_outputs)
            by_result = dict(zip([j for j, k in enumerate(s.known_outputs) if k], outs[:n_known], strict=True))
            own = [*outs[n_known:], *(by_result[j] for j in extra[b])]
            from .structural import full
            zeros = [full(0, t) for t in residual_types[1 - b]]
            residuals = own + zeros if b == 0 else zeros + own
            return [by_result[j] for j, k in enumerate(known_results) if k] + residuals
        return make_function(f"cond_known{b}", _types(known_args), build)

    def staged_branch(b):
        s = splits[b]

        def build(sargs):
            residuals, uargs = sargs[:sum(slots)], sargs[sum(slots):]
            own = residuals[:slots[0]] if b == 0 else residuals[slots[0]:]
            n_split = slots[b] - len(extra[b])
            staged_outs = iter(call(s.staged, [*own[:n_split], *uargs]))
            extra_outs = dict(zip(extra[b], own[n_split:], strict=True))
            out = []
            for j, known in enumerate(known_results):
                if known:
                    continue
                out.append(extra_outs[j] if j in extra_outs else next(staged_outs))
            return out
        return make_function(f"cond_staged{b}", [*all_residual_types, *_types(unknown_args)], build)

    builder = Builder(Block(), op.loc)
    known_fns = [known_branch(b) for b in range(2)]
    known = None
    residuals: tuple = ()
    if known_fns[0].outputs:
        known = _create(cond_p, [op.operands[0], *known_args], known_fns, known_fns[0].output_types, builder=builder)
        residuals = tuple(known.results[sum(known_results):])
    staged = None
    if not all(known_results):
        staged_fns = [staged_branch(b) for b in range(2)]
        staged = _create(cond_p, [op.operands[0], *residuals, *unknown_args], staged_fns, staged_fns[0].output_types,
                         builder=builder)
    return PartialEval(known, staged, residuals, known_results)


def _cond_transpose(op, cotangents, operands):
    if isinstance(operands[0], UndefinedPrimal):
        raise GradientError("cond's predicate cannot be a linear operand", op.loc)
    args = operands[1:]
    linear = [k for k, v in enumerate(args) if isinstance(v, UndefinedPrimal)]
    plain = [v for v in args if not isinstance(v, UndefinedPrimal)]
    branches = [transpose_function(region_function(op, b), linear, [TransposedOutput.ARG] * len(op.results))
                for b in range(2)]
    new = _create(cond_p, [operands[0], *plain, *(instantiate(c) for c in cotangents)], branches,
                  branches[0].output_types)
    out: list = [None] * len(operands)
    for k, g in zip(linear, new.results, strict=True):
        out[1 + k] = g
    return out


cond_p.verify_op = _cond_verify
cond_p.impl_op = _cond_impl
cond_p.jvp_op = _cond_jvp
cond_p.partial_eval = _cond_partial_eval
cond_p.transpose_op = _cond_transpose


# --------------------------------------------------------------------------- loops: shared pieces

def _loop_layout(op: Operation) -> tuple[list[Value], list[Value]]:
    """(consts, carry) of a while or fori op."""
    start = 1 if op.opdef is fori_p else 0
    n = op.attrs["num_consts"]
    return list(op.operands[start:start + n]), list(op.operands[start + n:])


def _verify_loop(op: Operation) -> None:
    consts, carry = _loop_layout(op)
    carry_types = _types(carry)
    if op.opdef is while_p:
        args, outs = _block_types(op, 0)
        _expect("while's test region arguments", args, _types(consts) + carry_types)
        _expect("while's test region yields", outs, [BOOL])
        args, outs = _block_types(op, 1)
        _expect("while's body arguments", args, _types(consts) + carry_types)
        _expect("while's results", _types(op.results), carry_types + ([I64] if op.attrs.get("count_trips") else []))
    else:
        if op.operands[0].type != I64:
            raise VerificationError("fori's trip count must be a 0-d i64")
        args, outs = _block_types(op, 0)
        _expect("fori's body arguments", args, [I64, *_types(consts), *carry_types])
        _expect("fori's results", _types(op.results), carry_types[op.attrs.get("num_passive", 0):])
    _expect(f"{op.name}'s body yields", outs, carry_types)


def _while_impl(op, operands, run_block):
    n = op.attrs["num_consts"]
    consts, carry = list(operands[:n]), list(operands[n:])
    test, body = op.regions[0].block, op.regions[1].block
    trips = 0
    while bool(run_block(test, dict(zip(test.args, consts + carry, strict=True)))[0]):
        carry = run_block(body, dict(zip(body.args, consts + carry, strict=True)))
        trips += 1
    return carry + ([np.int64(trips)] if op.attrs.get("count_trips") else [])


def _fori_impl(op, operands, run_block):
    n = op.attrs["num_consts"]
    trips, consts, carry = int(operands[0]), list(operands[1:1 + n]), list(operands[1 + n:])
    body = op.regions[0].block
    for i in range(max(trips, 0)):
        carry = run_block(body, dict(zip(body.args, [np.int64(i), *consts, *carry], strict=True)))
    return carry[op.attrs.get("num_passive", 0):]


def _permuted(fn: Function, input_types, order: Sequence[int], outputs: Sequence[int] | None = None) -> Function:
    """A function of `input_types` calling `fn` on its arguments at `order` (fn's argument
    j is the new argument order[j]), returning fn's outputs at `outputs` (all: None)."""
    def build(args):
        outs = call(fn, [args[k] for k in order])
        return outs if outputs is None else [outs[k] for k in outputs]
    return _dce(make_function(fn.name, input_types, build))


def _loop_jvp(op, primals, tangents):
    """A loop of the same kind carrying tangents next to primals: consts' = consts +
    their non-zero float tangents, carry' = carry + a tangent for every float carry."""
    from .structural import full
    if op.attrs.get("num_passive", 0):
        raise GradientError("a linearized loop (a fori with passive carries) is differentiated again only by "
                            "transposition; differentiate the original function instead", op.loc)
    start = 1 if op.opdef is fori_p else 0
    n_consts = op.attrs["num_consts"]
    consts = primals[start:start + n_consts]
    carry = primals[start + n_consts:]
    t_consts = tangents[start:start + n_consts]
    t_carry = tangents[start + n_consts:]
    c_wrt = [k for k, t in enumerate(t_consts) if not isinstance(t, Zero) and consts[k].type.dtype.is_inexact]
    x_wrt = [k for k, v in enumerate(carry) if v.type.dtype.is_inexact]
    nc, nx = len(consts), len(carry)
    body_index = 1 if op.opdef is while_p else 0
    body = region_function(op, body_index)
    # body args: [i?] consts carry; jvp args: those, then tangents of wrt (consts first)
    wrt = [start + k for k in c_wrt] + [start + nc + k for k in x_wrt]
    jbody = jvp_function(body, wrt)
    lead = list(range(start))
    # new block args: [i?], consts, t_consts, carry, t_carry
    base = start
    pos_consts = list(range(base, base + nc))
    pos_tc = list(range(base + nc, base + nc + len(c_wrt)))
    pos_carry = list(range(base + nc + len(c_wrt), base + nc + len(c_wrt) + nx))
    pos_tx = list(range(pos_carry[-1] + 1 if nx else base + nc + len(c_wrt),
                        (pos_carry[-1] + 1 if nx else base + nc + len(c_wrt)) + len(x_wrt)))
    new_types = ([I64] if start else []) + _types(consts) + [consts[k].type for k in c_wrt] + _types(carry) + \
        [carry[k].type for k in x_wrt]
    order = lead + pos_consts + pos_carry + pos_tc + pos_tx
    new_body = _permuted(jbody, new_types, order, [*range(nx), *(nx + k for k in x_wrt)])
    new_consts = [*consts, *(t_consts[k] for k in c_wrt)]
    new_carry = [*carry, *(instantiate(t_carry[k]) if not isinstance(t_carry[k], Zero) else full(0, carry[k].type)
                           for k in x_wrt)]
    attrs = dict(op.attrs, num_consts=len(new_consts))
    if op.opdef is while_p:
        test = region_function(op, 0)
        new_test = _permuted(test, new_types, pos_consts + pos_carry)
        new = _create(while_p, [*new_consts, *new_carry], [new_test, new_body],
                      [*_types(new_carry), *([I64] if op.attrs.get("count_trips") else [])], attrs)
        tail = list(new.results[len(new_carry):])
    else:
        new = _create(fori_p, [primals[0], *new_consts, *new_carry], [new_body], _types(new_carry), attrs)
        tail = []
    outs = list(new.results[:nx]) + tail
    t_out = iter(new.results[nx:nx + len(x_wrt)])
    touts = [next(t_out) if k in x_wrt else Zero(v.type) for k, v in enumerate(carry)] + [Zero(I64) for _ in tail]
    return outs, touts


def _carry_fixpoint(body: Function, arg_unknown: Callable[[list[bool]], list[bool]], n_carry_out: int,
                    carry_unknown: list[bool]):
    """Partially evaluate a loop body until the carries it treats as unknown are exactly
    those whose next value is unknown: a carry that starts known but is updated from an
    unknown value is unknown from the first iteration on."""
    carry_unknown = list(carry_unknown)
    while True:
        split = partial_eval_function(body, arg_unknown(carry_unknown))
        grown = [u or not split.known_outputs[k] for k, u in enumerate(carry_unknown)]
        if grown == carry_unknown:
            return split, carry_unknown
        carry_unknown = grown


def _loop_partial_eval(op, unknown):
    """While and fori with unknown (tangent) operands: a known loop over the known carries
    (a while also counts its trips), and a linear `fori` of that many trips whose body
    recomputes the known carries of iteration i from their initial values before running
    the unknown part of the body."""
    is_fori = op.opdef is fori_p
    start = 1 if is_fori else 0
    if is_fori and unknown[0]:
        raise GradientError("a fori loop's trip count cannot depend on a differentiated value", op.loc)
    if op.attrs.get("num_passive", 0):
        # Already the linear half of a split (it recomputes its passive carries from
        # known values): it stays whole on the staged side when an enclosing region is
        # partially evaluated again.
        return stage_whole(op, unknown)
    consts, carry = _loop_layout(op)
    nc, nx = len(consts), len(carry)
    c_unknown = list(unknown[start:start + nc])
    body = region_function(op, 1 if op.opdef is while_p else 0)
    lead = [False] * start
    split, x_unknown = _carry_fixpoint(body, lambda xu: lead + c_unknown + xu, nx, list(unknown[start + nc:]))
    if op.opdef is while_p:
        test = region_function(op, 0)
        test_split = partial_eval_function(test, c_unknown + x_unknown)
        if not test_split.known_outputs[0]:
            raise GradientError("a while loop's test depends on a differentiated value", op.loc)
    kc = [k for k in range(nc) if not c_unknown[k]]
    uc = [k for k in range(nc) if c_unknown[k]]
    kx = [k for k in range(nx) if not x_unknown[k]]
    ux = [k for k in range(nx) if x_unknown[k]]
    # the known step: ([i], known consts, known carries) -> known carries
    known_step_types = [I64] * start + [consts[k].type for k in kc] + [carry[k].type for k in kx]

    def known_step_build(args):
        outs = call(split.known, args)
        return outs[:len(kx)]
    known_step = _dce(make_function("known_step", known_step_types, known_step_build))
    # the same step as a fori body (which always receives the iteration index)
    recompute_step = known_step if is_fori else make_function(
        "recompute_step", [I64, *known_step_types], lambda args: call(known_step, args[1:]))
    builder = Builder(Block(), op.loc)
    known_consts = [consts[k] for k in kc]
    known_inits = [carry[k] for k in kx]
    if is_fori:
        known = _create(fori_p, [op.operands[0], *known_consts, *known_inits], [known_step], _types(known_inits),
                        {"num_consts": len(kc)}, builder=builder)
        trips = op.operands[0]
        residuals: tuple = ()
    else:
        known_test = _dce(make_function("known_test", [*(consts[k].type for k in kc), *(carry[k].type for k in kx)],
                                        lambda args: call(test_split.known, args)[:1]))
        known = _create(while_p, [*known_consts, *known_inits], [known_test, known_step],
                        [*_types(known_inits), I64], {"num_consts": len(kc), "count_trips": True}, builder=builder)
        trips = known.results[-1]
        # a loop that counts its trips already gives the count as its last result
        residuals = () if op.attrs.get("count_trips") else (trips,)
    known_results = tuple([not u for u in x_unknown] + ([True] if op.attrs.get("count_trips") else []))
    if not ux:
        return PartialEval(known, None, residuals, known_results)

    # the linear loop: fori(trips) carrying the known carries again (passive: recomputed
    # step by step, not results) next to the unknown ones; body (i, kc, uc, kx, ux)
    lin_types = [I64, *(consts[k].type for k in kc), *(consts[k].type for k in uc), *(carry[k].type for k in kx),
                 *(carry[k].type for k in ux)]

    def linear_build(args):
        i = args[0]
        groups = np.cumsum([1, len(kc), len(uc), len(kx), len(ux)]).tolist()
        a_kc, a_uc, a_kx, a_ux = (args[groups[g]:groups[g + 1]] for g in range(4))
        full_consts, full_carry = [None] * nc, [None] * nx
        for positions, values, target in ((kc, a_kc, full_consts), (uc, a_uc, full_consts), (kx, a_kx, full_carry),
                                          (ux, a_ux, full_carry)):
            for k, v in zip(positions, values, strict=True):
                target[k] = v
        outs = call(body, [*([i] if is_fori else []), *full_consts, *full_carry])
        return [*(outs[k] for k in kx), *(outs[k] for k in ux)]
    linear_body = _dce(make_function("linear_step", lin_types, linear_build))
    staged = _create(fori_p, [trips, *known_consts, *(consts[k] for k in uc), *known_inits, *(carry[k] for k in ux)],
                     [linear_body], [carry[k].type for k in ux],
                     {"num_consts": len(kc) + len(uc), "num_passive": len(kx),
                      **{k: op.attrs[k] for k in ("reversal", "snapshots") if k in op.attrs}}, builder=builder)
    return PartialEval(known, staged, residuals, known_results)


def _fori_transpose(op, cotangents, operands):
    """Transpose of a fori linear in its non-passive carries and some consts: the
    transposed body runs for i = trips-1 down to 0, accumulating the consts' cotangents.
    Passive carries (primal values the linear step reads) are the state of a
    `reverse_fori` op, which stores or recomputes them as its policy says (the loop's
    `reversal` and `snapshots` attributes; a stack of every step's state by default)."""
    from .elementwise import add, sub
    from .structural import constant, full
    if isinstance(operands[0], UndefinedPrimal):
        raise GradientError("a fori loop's trip count is not linear", op.loc)
    n, n_passive = op.attrs["num_consts"], op.attrs.get("num_passive", 0)
    consts, carry = list(operands[1:1 + n]), list(operands[1 + n:])
    passive, linear_carry = carry[:n_passive], carry[n_passive:]
    if any(isinstance(v, UndefinedPrimal) for v in passive):
        raise GradientError("a fori loop's recomputed (passive) carry is not linear", op.loc)
    nx = len(linear_carry)
    lin_c = [k for k, v in enumerate(consts) if isinstance(v, UndefinedPrimal)]
    plain_c = [k for k, v in enumerate(consts) if not isinstance(v, UndefinedPrimal)]
    body = region_function(op, 0)
    linear_args = [1 + k for k in lin_c] + [1 + n + n_passive + k for k in range(nx)]
    # the linear step (i, plain consts, passive carry, cts of the linear carry out) ->
    # (cts of linear consts, cts of the linear carry in)
    tbody = transpose_function(_select(body, range(n_passive, n_passive + nx)), linear_args,
                               [TransposedOutput.ARG] * nx)
    carry_types = [v.type for v in op.results]
    lin_types = [consts[k].type for k in lin_c]
    plain_types = [consts[k].type for k in plain_c]
    passive_types = [v.type for v in passive]
    inits = [instantiate(c) for c in cotangents] + [full(0, t) for t in lin_types]
    if not inits:
        return [None] * len(operands)
    plain_values = [consts[k] for k in plain_c]

    def step_back(i, plain, passive_i, ct_and_acc):
        ct, acc = ct_and_acc[:nx], ct_and_acc[nx:]
        cts = call(tbody, [i, *plain, *passive_i, *ct])
        return [*cts[len(lin_c):], *(add(a, c) for a, c in zip(acc, cts[:len(lin_c)], strict=True))]

    if not n_passive:
        def build(args):
            k, trips = args[0], args[1]
            plain, rest = args[2:2 + len(plain_c)], args[2 + len(plain_c):]
            return step_back(sub(sub(trips, constant(1, DType.i64)), k), plain, [], rest)
        new_body = make_function("transposed_step", [I64, I64, *plain_types, *carry_types, *lin_types], build)
        results = emit_fori(operands[0], new_body, [operands[0], *plain_values], inits)
    else:
        split = partial_eval_function(body, [False, *(k in lin_c for k in range(n)), *([False] * n_passive),
                                             *([True] * nx)])
        if not all(split.known_outputs[:n_passive]):
            raise GradientError("a fori loop's passive carry depends on its linear values", op.loc)
        advance = _select(split.known, range(n_passive))        # (i, plain consts, passive) -> passive
        back = make_function("step_back", [I64, *plain_types, *passive_types, *carry_types, *lin_types],
                             lambda a: step_back(a[0], a[1:1 + len(plain_c)],
                                                 a[1 + len(plain_c):1 + len(plain_c) + n_passive],
                                                 a[1 + len(plain_c) + n_passive:]))
        results = emit_reverse_fori(operands[0], advance, back, plain_values, passive, inits,
                                    op.attrs.get("reversal", STACK), op.attrs.get("snapshots", 0))
    out: list = [None] * len(operands)
    for k in range(nx):
        if isinstance(linear_carry[k], UndefinedPrimal):
            out[1 + n + n_passive + k] = results[k]
    for j, k in enumerate(lin_c):
        out[1 + k] = results[nx + j]
    return out


while_p = RegionOp("while", 2, "Runs region 1 on the carry while region 0 yields true.")
while_p.verify_op = _verify_loop
while_p.impl_op = _while_impl
while_p.jvp_op = _loop_jvp
while_p.partial_eval = _loop_partial_eval

fori_p = RegionOp("fori", 1, "Runs its body for i = 0 .. trips-1 (trips is the first operand).")
fori_p.verify_op = _verify_loop
fori_p.impl_op = _fori_impl
fori_p.jvp_op = _loop_jvp
fori_p.partial_eval = _loop_partial_eval
fori_p.transpose_op = _fori_transpose


# --------------------------------------------------------------------------- reverse_fori: a loop run backwards

STACK, REVOLVE = "stack", "revolve"
REVERSALS = (STACK, REVOLVE)
MAX_SNAPSHOTS = 1 << 16
"""The most snapshots a revolve reversal may hold (its code generator's 128-bit split
arithmetic is exact up to there)."""


def binomial_reach(snapshots: int, repetitions: int) -> int:
    """beta(s, r) = C(s + r, s): the most steps that `snapshots` stored states (the first
    one included) reverse when no step is run more than `repetitions` times beyond its
    first run (Griewank's binomial bound, which revolve attains)."""
    return math.comb(snapshots + repetitions, snapshots)


def revolve_split(steps: int, free: int) -> int:
    """How far to advance from the newest snapshot before storing the next one, when
    `steps` (>= 2) remain to reverse from it and `free` (>= 2) snapshots, that one
    included, may be held. With r the least repetition count whose binomial reach covers
    `steps`, any split m with m <= beta(free, r-1) and steps - m <= beta(free-1, r)
    keeps every step within r repetitions; the middle of that range comes within 6% of
    the optimal total (exhaustive search, T <= 150 and free <= 5)."""
    r, reach = 0, 1
    while reach < steps:
        r += 1
        reach = reach * (free + r) // r
    low = steps - reach * free // (free + r)          # steps - beta(free-1, r)
    high = reach * r // (free + r)                    # beta(free, r-1)
    return max(1, min((low + high) // 2, steps - 1))


def run_reversal(trips: int, policy: str, snapshots: int, init, advance, back, carry, held_counts=None):
    """The semantics of `reverse_fori`, and the schedule its code generators follow:
    carry = back(i, state_i, carry) for i = trips-1 down to 0, where state_0 = init and
    state_{i+1} = advance(i, state_i). `stack` stores every state (trips - 1 advances,
    trips states); `revolve` holds at most `snapshots` states and recomputes the others
    from the newest snapshot below them (binomial checkpointing). `held_counts`, a list,
    receives the number of states held after each one is stored."""
    if trips <= 0:
        return carry
    held_counts = [] if held_counts is None else held_counts
    if policy == STACK:
        states = [init]
        for i in range(trips - 1):
            states.append(advance(i, states[-1]))
            held_counts.append(len(states))
        for i in reversed(range(trips)):
            carry = back(i, states[i], carry)
        return carry
    held = [(0, init)]
    end = trips
    while end > 0:
        start, state = held[-1]
        steps = end - start
        if steps == 1:
            carry = back(start, state, carry)
            end = start
            if len(held) > 1:
                held.pop()
            continue
        free = snapshots - len(held) + 1
        if free <= 1:
            for i in range(start, end - 1):
                state = advance(i, state)
            carry = back(end - 1, state, carry)
            end -= 1
        else:
            m = revolve_split(steps, free)
            for i in range(start, start + m):
                state = advance(i, state)
            held.append((start + m, state))
            held_counts.append(len(held))
    return carry


def _reverse_layout(op: Operation):
    """(consts, passive initial state, carry) of a reverse_fori op."""
    n, n_passive = op.attrs["num_consts"], op.attrs["num_passive"]
    end = len(op.operands) - op.attrs.get("num_xs", 0)
    return (list(op.operands[1:1 + n]), list(op.operands[1 + n:1 + n + n_passive]),
            list(op.operands[1 + n + n_passive:end]))


def reversed_scan_xs(op: Operation) -> list[Value]:
    """The xs of a reverse_fori that reverses a scan (none for one that reverses a loop)."""
    return list(op.operands[len(op.operands) - op.attrs.get("num_xs", 0):])


def scan_index(op: Operation, i: int) -> int:
    """The slice of a reversed scan's xs and ys that step i reads and writes (its trips
    are at most its length)."""
    return op.attrs["length"] - 1 - i if op.attrs.get("reverse") else i


def _reverse_fori_verify(op: Operation) -> None:
    if not op.operands or op.operands[0].type != I64:
        raise VerificationError("reverse_fori's trip count must be a 0-d i64")
    if op.attrs.get("reversal") not in REVERSALS:
        raise VerificationError(f"reverse_fori's reversal must be one of {', '.join(REVERSALS)}, "
                                f"not {op.attrs.get('reversal')!r}")
    snapshots = op.attrs.get("snapshots")
    if not isinstance(snapshots, int) or not (op.attrs["reversal"] == REVOLVE) <= snapshots <= MAX_SNAPSHOTS:
        raise VerificationError(f"reverse_fori's snapshots must be an int, at least 1 for revolve and at most "
                                f"{MAX_SNAPSHOTS}, not {snapshots!r}")
    consts, passive, carry = _reverse_layout(op)
    xs = reversed_scan_xs(op)
    length = op.attrs.get("length")
    if length is None and ("num_xs" in op.attrs or "reverse" in op.attrs):
        raise VerificationError("reverse_fori's num_xs and reverse need its length (a reversed scan)")
    if length is not None:
        if not isinstance(length, int) or length < 0:
            raise VerificationError(f"reverse_fori's length must be a non-negative int, not {length!r}")
        for x in xs:
            if x.type.ndim == 0 or x.type.shape[0] != length:
                raise VerificationError(f"reverse_fori's xs must have a leading axis of the length {length}; one "
                                        f"has shape {x.type.shape}")
    slices = [_slice_type(x.type) for x in xs]
    args, outs = _block_types(op, 0)
    _expect("reverse_fori's advance arguments", args, [I64, *_types(consts), *_types(passive), *slices])
    _expect("reverse_fori's advance yields", outs, _types(passive))
    args, outs = _block_types(op, 1)
    _expect("reverse_fori's step arguments", args, [I64, *_types(consts), *_types(passive), *_types(carry), *slices])
    _expect("reverse_fori's step yields", outs[:len(carry)], _types(carry))
    ys = [] if length is None else [_stacked_type(t, length) for t in outs[len(carry):]]
    if length is None and len(outs) != len(carry):
        raise VerificationError("reverse_fori's step yields y slices only when it reverses a scan (has a length)")
    _expect("reverse_fori's results", _types(op.results), _types(carry) + ys)


def _reverse_fori_impl(op, operands, run_block):
    n, n_passive, n_xs = op.attrs["num_consts"], op.attrs["num_passive"], op.attrs.get("num_xs", 0)
    consts = list(operands[1:1 + n])
    xs = list(operands[len(operands) - n_xs:])
    carry_end = len(operands) - n_xs
    advance_block, back_block = op.regions[0].block, op.regions[1].block
    length = op.attrs.get("length")
    trips = int(operands[0]) if length is None else min(int(operands[0]), length)
    n_carry = carry_end - 1 - n - n_passive
    ys = [np.zeros(r.type.shape, r.type.dtype.numpy) for r in op.results[n_carry:]]

    def slices(i):
        return [x[scan_index(op, i)] for x in xs]

    def advance(i, state):
        return run_block(advance_block, dict(zip(advance_block.args, [np.int64(i), *consts, *state, *slices(i)],
                                                 strict=True)))

    def back(i, state, carry):
        outs = run_block(back_block, dict(zip(back_block.args, [np.int64(i), *consts, *state, *carry, *slices(i)],
                                              strict=True)))
        for y, out in zip(ys, outs[n_carry:], strict=True):
            y[scan_index(op, i)] = out
        return list(outs[:n_carry])
    carry = run_reversal(trips, op.attrs["reversal"], op.attrs["snapshots"],
                         list(operands[1 + n:1 + n + n_passive]), advance, back, list(operands[1 + n + n_passive:carry_end]))
    return list(carry) + ys


def _recomputing_form(op: Operation) -> Function:
    """reverse_fori as plain fori loops that recompute every state from the initial one,
    in blocks of B = floor(sqrt(trips)) + 1 steps: each block's first state by a loop
    from the start, each step's state by a loop from its block's first. O(1) memory and
    O(trips^1.5) steps, built only from ops every transformation handles: this is what
    reverse mode splits (a gradient differentiated again in reverse)."""
    from .elementwise import add, convert, maximum, minimum, mul, sqrt, sub
    from .integer import floor_divide
    from .structural import constant
    consts, passive, carry = _reverse_layout(op)
    const_types, passive_types, carry_types = _types(consts), _types(passive), _types(carry)
    nc, npas = len(consts), len(passive)
    advance, back = region_function(op, 0), region_function(op, 1)
    one = lambda: constant(1, DType.i64)        # noqa: E731
    shifted = make_function("shifted_advance", [I64, I64, *const_types, *passive_types],
                            lambda a: call(advance, [add(a[0], a[1]), *a[2:]]))

    def inner(a):             # (k, block start, block end, consts, block's first state | carry)
        k, s0, e, cs, first, ct = a[0], a[1], a[2], a[3:3 + nc], a[3 + nc:3 + nc + npas], a[3 + nc + npas:]
        i = sub(sub(e, one()), k)
        state = emit_fori(sub(i, s0), shifted, [s0, *cs], first)
        return call(back, [i, *cs, *state, *ct])
    inner_fn = make_function("block_back", [I64, I64, I64, *const_types, *passive_types, *carry_types], inner)

    def outer(a):             # (k, trips, B, number of blocks, consts, initial state | carry)
        k, trips, block, nb, cs, init, ct = (a[0], a[1], a[2], a[3], a[4:4 + nc], a[4 + nc:4 + nc + npas],
                                             a[4 + nc + npas:])
        s0 = mul(sub(sub(nb, one()), k), block)
        e = minimum(add(s0, block), trips)
        first = emit_fori(s0, advance, cs, init)
        return emit_fori(sub(e, s0), inner_fn, [s0, e, *cs, *first], ct)
    outer_fn = make_function("blocks_back", [I64, I64, I64, I64, *const_types, *passive_types, *carry_types], outer)

    def build(a):
        trips = maximum(a[0], constant(0, DType.i64))
        block = add(convert(sqrt(convert(trips, DType.f64)), DType.i64), one())
        nb = floor_divide(sub(add(trips, block), one()), block)
        return emit_fori(nb, outer_fn, [trips, block, nb, *a[1:1 + nc + npas]], a[1 + nc + npas:])
    return make_function("reverse_fori", _types(op.operands), build)


def _tangent_extended(op, primals, tangents):
    """Forward mode as a reverse_fori of the same reversal whose state, carry, consts and
    xs carry their tangents next to them, and whose regions are the JVPs of the op's:
    one backward loop, O(trips) steps, memory as the op's reversal says."""
    from .structural import full
    n, n_state, n_xs = op.attrs["num_consts"], op.attrs["num_passive"], op.attrs.get("num_xs", 0)
    groups = np.cumsum([1, n, n_state, len(primals) - 1 - n - n_state - n_xs, n_xs]).tolist()
    consts, state, carry, xs = (primals[groups[g]:groups[g + 1]] for g in range(4))
    t_consts, t_state, t_carry, t_xs = (tangents[groups[g]:groups[g + 1]] for g in range(4))
    moving = lambda ts, vs: [k for k, (t, v) in enumerate(zip(ts, vs, strict=True))    # noqa: E731
                             if not isinstance(t, Zero) and v.type.dtype.is_inexact]
    c_wrt, x_wrt = moving(t_consts, consts), moving(t_xs, xs)
    s_wrt = [k for k, v in enumerate(state) if v.type.dtype.is_inexact]
    k_wrt = [k for k, v in enumerate(carry) if v.type.dtype.is_inexact]
    nc, ns, nk, nxs = len(consts), len(state), len(carry), len(xs)
    slice_types = [_slice_type(x.type) for x in xs]
    sizes = [1, nc, len(c_wrt), ns, len(s_wrt), nk, len(k_wrt), nxs, len(x_wrt)]
    starts = np.cumsum([0] + sizes).tolist()
    pos = [list(range(starts[g], starts[g + 1])) for g in range(len(sizes))]
    i_, c_, tc_, s_, ts_, k_, tk_, x_, tx_ = pos
    new_state_types = [*_types(state), *(state[k].type for k in s_wrt)]
    const_types = [*_types(consts), *(consts[k].type for k in c_wrt)]
    x_types = [*slice_types, *(slice_types[k] for k in x_wrt)]

    advance = region_function(op, 0)              # (i, consts, state, x slices) -> state
    j_adv = jvp_function(advance, [*(1 + k for k in c_wrt), *(1 + nc + k for k in s_wrt),
                                   *(1 + nc + ns + k for k in x_wrt)])
    adv_types = [I64, *const_types, *new_state_types, *x_types]
    no_carry = lambda p: p if p < starts[5] else p - len(k_) - len(tk_)      # noqa: E731
    adv_order = [no_carry(p) for p in [*i_, *c_, *s_, *x_, *tc_, *ts_, *tx_]]
    new_advance = _permuted(j_adv, adv_types, adv_order, [*range(ns), *(ns + k for k in s_wrt)])

    back = region_function(op, 1)                 # (i, consts, state, carry, x slices) -> (carry, y slices)
    n_ys = len(back.outputs) - nk
    y_float = [k for k in range(n_ys) if back.outputs[nk + k].type.dtype.is_inexact]
    j_back = jvp_function(back, [*(1 + k for k in c_wrt), *(1 + nc + k for k in s_wrt),
                                 *(1 + nc + ns + k for k in k_wrt), *(1 + nc + ns + nk + k for k in x_wrt)])
    back_types = [I64, *const_types, *new_state_types, *_types(carry), *(carry[k].type for k in k_wrt), *x_types]
    n_out = nk + n_ys
    new_back = _permuted(j_back, back_types, [*i_, *c_, *s_, *k_, *x_, *tc_, *ts_, *tk_, *tx_],
                         [*range(nk), *(n_out + k for k in k_wrt), *range(nk, n_out), *(n_out + nk + k for k in y_float)])
    zero_or = lambda t, v: full(0, v.type) if isinstance(t, Zero) else instantiate(t)     # noqa: E731
    new = _create(reverse_fori_p, [primals[0], *consts, *(t_consts[k] for k in c_wrt), *state,
                                   *(zero_or(t_state[k], state[k]) for k in s_wrt), *carry,
                                   *(zero_or(t_carry[k], carry[k]) for k in k_wrt), *xs, *(t_xs[k] for k in x_wrt)],
                  [new_advance, new_back],
                  [*_types(carry), *(carry[k].type for k in k_wrt), *_types(op.results[nk:]),
                   *(op.results[nk + k].type for k in y_float)],
                  dict(op.attrs, num_consts=len(const_types), num_passive=len(new_state_types),
                       **({"num_xs": len(x_types)} if "length" in op.attrs else {})))
    res = list(new.results)
    t_k = iter(res[nk:nk + len(k_wrt)])
    ys, t_y = res[nk + len(k_wrt):nk + len(k_wrt) + n_ys], iter(res[nk + len(k_wrt) + n_ys:])
    touts = [next(t_k) if k in k_wrt else Zero(v.type) for k, v in enumerate(carry)]
    touts += [next(t_y) if k in y_float else Zero(op.results[nk + k].type) for k in range(n_ys)]
    return res[:nk] + ys, touts


def _reverse_fori_jvp(op, primals, tangents):
    """Forward mode (the policies differ in cost, not value): the tangent-extended op."""
    wrt = [k for k, t in enumerate(tangents) if not isinstance(t, Zero) and primals[k].type.dtype.is_inexact]
    if not wrt:
        new = _create(reverse_fori_p, primals, [region_function(op, 0), region_function(op, 1)], _types(op.results),
                      op.attrs)
        return list(new.results), [Zero(r.type) for r in op.results]
    return _tangent_extended(op, primals, tangents)


def _reverse_fori_partial_eval(op, unknown):
    """Reverse mode over a reverse_fori (a gradient through a loop differentiated in
    reverse again; the op is then the tangent-extended one). Its transpose would run the
    backward loop forwards, needing the backward carries in the reverse of the order
    they are computed in; instead the op is split as its recomputing form, wrapped in a
    one-step scan so that the split is one op on each side (O(1) memory, O(trips^1.5)
    steps). The scan is split as a revolve scan is, so that its linear body is the whole
    recomputing form, whose loops the transpose splits again as first-order loops. A
    reversed scan refuses: its xs and ys have no recomputing form yet."""
    if "length" in op.attrs:
        raise GradientError("reverse mode over the gradient of a scan under memory_budget is not supported: "
                            "differentiate the gradient in forward mode (jitgrad.hessian, jitgrad.jvp) or drop "
                            "memory_budget from the inner gradient", op.loc)
    n_carry = len(op.results)
    wrapper = _create(scan_p, op.operands, [_recomputing_form(op)], _types(op.results),
                      {"num_consts": len(op.operands) - n_carry, "num_carry": n_carry, "length": 1,
                       "reverse": False, "reversal": REVOLVE, "snapshots": 1}, builder=Builder(Block(), op.loc))
    return _scan_partial_eval(wrapper, unknown)


reverse_fori_p = RegionOp("reverse_fori", 2, "Runs region 1 for i = trips-1 down to 0 on the states region 0 "
                                             "advances, stored or recomputed as attribute `reversal` says.")
reverse_fori_p.verify_op = _reverse_fori_verify
reverse_fori_p.impl_op = _reverse_fori_impl
reverse_fori_p.jvp_op = _reverse_fori_jvp
reverse_fori_p.partial_eval = _reverse_fori_partial_eval


def emit_reverse_fori(trips: Value, advance: Function, back: Function, consts: Sequence[Value],
                      init: Sequence[Value], carry: Sequence[Value], reversal: str = STACK,
                      snapshots: int = 0, xs: Sequence[Value] = (), length: int | None = None,
                      reverse: bool = False) -> list[Value]:
    """carry = back(i, consts, state_i, carry) for i = trips-1 .. 0, state_0 = init and
    state_{i+1} = advance(i, consts, state_i). With `length` (a reversed scan), both
    regions also receive the slices of `xs` at the step's index, `back` yields y slices
    after the carry, and the results are the carry and the ys stacked."""
    attrs = {"num_consts": len(consts), "num_passive": len(init), "reversal": reversal, "snapshots": int(snapshots)}
    result_types = _types(carry)
    if length is not None:
        attrs.update(num_xs=len(xs), length=int(length), reverse=bool(reverse))
        result_types += [_stacked_type(t, length) for t in back.output_types[len(carry):]]
    return list(_create(reverse_fori_p, [trips, *consts, *init, *carry, *xs], [advance, back], result_types,
                        attrs).results)


# --------------------------------------------------------------------------- scan

def _scan_layout(op: Operation):
    nc, nx = op.attrs["num_consts"], op.attrs["num_carry"]
    return list(op.operands[:nc]), list(op.operands[nc:nc + nx]), list(op.operands[nc + nx:])


def _slice_type(t: TensorType) -> TensorType:
    return TensorType(t.shape[1:], t.dtype)


def _stacked_type(t: TensorType, length: int) -> TensorType:
    return TensorType((length, *t.shape), t.dtype)


def _scan_verify(op: Operation) -> None:
    consts, carry, xs = _scan_layout(op)
    length = op.attrs["length"]
    for x in xs:
        if x.type.ndim == 0 or x.type.shape[0] != length:
            raise VerificationError(f"scan's xs must have a leading axis of the length {length}; one has "
                                    f"shape {x.type.shape}")
    args, outs = _block_types(op, 0)
    _expect("scan's body arguments", args, _types(consts) + _types(carry) + [_slice_type(x.type) for x in xs])
    _expect("scan's body yields (carry)", outs[:len(carry)], _types(carry))
    n_passive = op.attrs.get("num_passive", 0)
    if not 0 <= n_passive <= len(carry):
        raise VerificationError(f"scan's num_passive ({n_passive}) must be between 0 and its carry count")
    _expect("scan's results", _types(op.results),
            _types(carry)[n_passive:] + [_stacked_type(t, length) for t in outs[len(carry):]])


def _scan_impl(op, operands, run_block):
    nc, nx = op.attrs["num_consts"], op.attrs["num_carry"]
    length, reverse = op.attrs["length"], op.attrs["reverse"]
    consts, carry, xs = list(operands[:nc]), list(operands[nc:nc + nx]), list(operands[nc + nx:])
    body = op.regions[0].block
    ys_types = [r.type for r in op.results[nx - op.attrs.get("num_passive", 0):]]
    ys = [np.empty(t.shape, t.dtype.numpy) for t in ys_types]
    for step in range(length):
        i = length - 1 - step if reverse else step
        outs = run_block(body, dict(zip(body.args, [*consts, *carry, *(x[i] for x in xs)], strict=True)))
        carry = list(outs[:nx])
        for y, out in zip(ys, outs[nx:], strict=True):
            y[i] = out
    return carry[op.attrs.get("num_passive", 0):] + ys


def _scan_jvp(op, primals, tangents):
    from .structural import full
    _reject_passive(op)
    nc, nx = op.attrs["num_consts"], op.attrs["num_carry"]
    consts, carry, xs = primals[:nc], primals[nc:nc + nx], primals[nc + nx:]
    t_consts, t_carry, t_xs = tangents[:nc], tangents[nc:nc + nx], tangents[nc + nx:]
    nxs = len(xs)
    c_wrt = [k for k, t in enumerate(t_consts) if not isinstance(t, Zero) and consts[k].type.dtype.is_inexact]
    x_wrt = [k for k, v in enumerate(carry) if v.type.dtype.is_inexact]
    s_wrt = [k for k, t in enumerate(t_xs) if not isinstance(t, Zero) and xs[k].type.dtype.is_inexact]
    body = region_function(op, 0)
    n_ys = len(body.outputs) - nx
    y_float = [k for k in range(n_ys) if body.outputs[nx + k].type.dtype.is_inexact]
    wrt = [k for k in c_wrt] + [nc + k for k in x_wrt] + [nc + nx + k for k in s_wrt]
    jbody = jvp_function(body, wrt)
    # new block args: consts, t_consts | carry, t_carry | xs, t_xs
    groups = [nc, len(c_wrt), nx, len(x_wrt), nxs, len(s_wrt)]
    starts = np.cumsum([0] + groups).tolist()
    pos = [list(range(starts[g], starts[g] + groups[g])) for g in range(6)]
    order = pos[0] + pos[2] + pos[4] + pos[1] + pos[3] + pos[5]
    new_types = [*_types(consts), *(consts[k].type for k in c_wrt), *_types(carry), *(carry[k].type for k in x_wrt),
                 *(_slice_type(x.type) for x in xs), *(_slice_type(xs[k].type) for k in s_wrt)]
    n_out = nx + n_ys
    outputs = [*range(nx), *(n_out + k for k in x_wrt), *range(nx, n_out), *(n_out + nx + k for k in y_float)]
    new_body = _permuted(jbody, new_types, order, outputs)
    new_carry = [*carry, *(instantiate(t_carry[k]) if not isinstance(t_carry[k], Zero) else full(0, carry[k].type)
                           for k in x_wrt)]
    operands = [*consts, *(t_consts[k] for k in c_wrt), *new_carry, *xs, *(t_xs[k] for k in s_wrt)]
    length = op.attrs["length"]
    result_types = [*_types(new_carry), *(_stacked_type(t, length) for t in new_body.output_types[len(new_carry):])]
    new = _create(scan_p, operands, [new_body], result_types,
                  dict(op.attrs, num_consts=nc + len(c_wrt), num_carry=len(new_carry)))
    res = list(new.results)
    carry_out, t_carry_out = res[:nx], iter(res[nx:nx + len(x_wrt)])
    ys, t_ys = res[nx + len(x_wrt):nx + len(x_wrt) + n_ys], iter(res[nx + len(x_wrt) + n_ys:])
    touts = [next(t_carry_out) if k in x_wrt else Zero(v.type) for k, v in enumerate(carry)]
    touts += [next(t_ys) if k in y_float else Zero(op.results[nx + k].type) for k in range(n_ys)]
    return carry_out + ys, touts


def _reject_passive(op: Operation) -> None:
    if op.attrs.get("num_passive", 0):
        raise GradientError("a linearized loop (a scan with passive carries) is differentiated again only by "
                            "transposition; differentiate the original function instead", op.loc)


def _scan_partial_eval_recomputing(op, body: Function, split, c_unknown, x_unknown, s_unknown):
    """The split of a scan set to the revolve reversal: no per-step residuals. The known
    scan computes only the known carries and ys; the linear scan carries the known
    carries again as passive carries next to the unknown ones (recomputed step by step,
    O(1) memory), reading the xs it needs, known or not, as its own xs. Its transpose
    is a `reverse_fori` over the passive carries (`_scan_transpose`)."""
    nc, nx = op.attrs["num_consts"], op.attrs["num_carry"]
    length = op.attrs["length"]
    consts, carry, xs = _scan_layout(op)
    n_known_outs = sum(split.known_outputs)
    kc, uc = [k for k in range(nc) if not c_unknown[k]], [k for k in range(nc) if c_unknown[k]]
    kx, ux = [k for k in range(nx) if not x_unknown[k]], [k for k in range(nx) if x_unknown[k]]
    ks, us = [k for k in range(len(xs)) if not s_unknown[k]], [k for k in range(len(xs)) if s_unknown[k]]
    n_ys = len(body.outputs) - nx
    known_ys = [k for k in range(n_ys) if split.known_outputs[nx + k]]
    unknown_ys = [k for k in range(n_ys) if not split.known_outputs[nx + k]]
    known_results = tuple([not u for u in x_unknown] + list(split.known_outputs[nx:]))
    builder = Builder(Block(), op.loc)
    known = None
    if n_known_outs:
        known_fn = _select(split.known, range(n_known_outs))
        known = _create(scan_p, [*(consts[k] for k in kc), *(carry[k] for k in kx), *(xs[k] for k in ks)],
                        [known_fn], [*(carry[k].type for k in kx),
                                     *(_stacked_type(body.output_types[nx + k], length) for k in known_ys)],
                        dict(op.attrs, num_consts=len(kc), num_carry=len(kx)), builder=builder)
    if all(known_results):
        return PartialEval(known, None, (), known_results)
    order = [*kc, *uc]
    carry_order = [*kx, *ux]
    xs_order = [*ks, *us]
    new_types = [*(consts[k].type for k in order), *(carry[k].type for k in carry_order),
                 *(_slice_type(xs[k].type) for k in xs_order)]

    def build(args):
        a_consts, rest = args[:nc], args[nc:]
        a_carry, a_xs = rest[:nx], rest[nx:]
        full_consts, full_carry, full_xs = [None] * nc, [None] * nx, [None] * len(xs)
        for positions, values, target in ((order, a_consts, full_consts), (carry_order, a_carry, full_carry),
                                          (xs_order, a_xs, full_xs)):
            for k, v in zip(positions, values, strict=True):
                target[k] = v
        outs = call(body, [*full_consts, *full_carry, *full_xs])
        return [*(outs[k] for k in carry_order), *(outs[nx + k] for k in unknown_ys)]
    linear_body = _dce(make_function("linear_scan_body", new_types, build))
    staged = _create(scan_p, [*(consts[k] for k in order), *(carry[k] for k in carry_order),
                              *(xs[k] for k in xs_order)],
                     [linear_body], [*(carry[k].type for k in ux),
                                     *(_stacked_type(body.output_types[nx + k], length) for k in unknown_ys)],
                     dict(op.attrs, num_consts=nc, num_carry=nx, num_passive=len(kx)), builder=builder)
    return PartialEval(known, staged, (), known_results)


def _scan_partial_eval(op, unknown):
    """A known scan (known carries and ys, plus the residuals each iteration needs,
    stacked as extra ys) and a linear scan reading those stacks as xs. Residuals that are
    known consts or known xs are read from the op's operands, and those computed from
    known consts alone are recomputed by the linear body: neither is stacked."""
    _reject_passive(op)
    nc, nx = op.attrs["num_consts"], op.attrs["num_carry"]
    length = op.attrs["length"]
    consts, carry, xs = _scan_layout(op)
    nxs = len(xs)
    c_unknown = list(unknown[:nc])
    s_unknown = list(unknown[nc + nx:])
    body = region_function(op, 0)
    n_ys = len(body.outputs) - nx
    split, x_unknown = _carry_fixpoint(body, lambda xu: c_unknown + xu + s_unknown, nx, list(unknown[nc:nc + nx]))
    if op.attrs.get("reversal") == REVOLVE:
        return _scan_partial_eval_recomputing(op, body, split, c_unknown, x_unknown, s_unknown)
    arg_unknown = c_unknown + x_unknown + s_unknown
    known_arg_pos = [k for k, u in enumerate(arg_unknown) if not u]       # body arg index of each known arg
    n_known_outs = sum(split.known_outputs)
    residual_values = split.known.outputs[n_known_outs:]
    arg_index = {a: known_arg_pos[j] for j, a in enumerate(split.known.args)}
    # residuals computed from known consts alone are loop-invariant: the linear body
    # recomputes them (the backend hoists what is not free) rather than stacking T copies
    invariant = {a for a, k in arg_index.items() if k < nc}
    invariant_ops = []
    for inner in split.known.body.ops:
        if not inner.opdef.is_terminator and not inner.regions and inner.opdef.has(Trait.PURE) \
                and not inner.opdef.has(Trait.HAS_SIDE_EFFECT) and all(v in invariant for v in inner.operands):
            invariant.update(inner.results)
            invariant_ops.append(inner)
    # each residual: ("const", k) / ("xs", k) read from the operands, ("recompute", value)
    # from the known consts, or ("stack", j)
    kinds, stacked = [], []
    for v in residual_values:
        k = arg_index.get(v)
        if k is not None and k < nc:
            kinds.append(("const", k))
        elif k is not None and k >= nc + nx:
            kinds.append(("xs", k - nc - nx))
        elif v in invariant:
            kinds.append(("recompute", v))
        else:
            kinds.append(("stack", len(stacked)))
            stacked.append(n_known_outs + len(kinds) - 1)
    known_fn = _select(split.known, [*range(n_known_outs), *stacked])
    builder = Builder(Block(), op.loc)
    kc = [k for k in range(nc) if not c_unknown[k]]
    kx = [k for k in range(nx) if not x_unknown[k]]
    ks = [k for k in range(nxs) if not s_unknown[k]]
    known_results = tuple([not u for u in x_unknown] + list(split.known_outputs[nx:]))
    known = None
    stacks: list[Value] = []
    if known_fn.outputs:
        n_known_ys = len(known_fn.outputs) - len(kx)
        result_types = [*(carry[k].type for k in kx),
                        *(_stacked_type(t, length) for t in known_fn.output_types[len(kx):])]
        known = _create(scan_p, [*(consts[k] for k in kc), *(carry[k] for k in kx), *(xs[k] for k in ks)],
                        [known_fn], result_types,
                        dict(op.attrs, num_consts=len(kc), num_carry=len(kx)), builder=builder)
        stacks = list(known.results[len(kx) + n_known_ys - len(stacked):])
    if all(known_results):
        return PartialEval(known, None, tuple(stacks), known_results)
    # the linear scan: consts = residual consts, unknown consts; carry = unknown carries;
    # xs = stacked residuals, residual xs, unknown xs
    res_consts = [k for kind, k in kinds if kind == "const"]
    res_xs = [k for kind, k in kinds if kind == "xs"]
    recomputes = any(kind == "recompute" for kind, _ in kinds)
    recompute_from = kc if recomputes else []
    uc = [k for k in range(nc) if c_unknown[k]]
    ux = [k for k in range(nx) if x_unknown[k]]
    us = [k for k in range(nxs) if s_unknown[k]]
    groups = [len(res_consts), len(recompute_from), len(uc), len(ux), len(stacked), len(res_xs), len(us)]
    starts = np.cumsum([0] + groups).tolist()
    new_types = [*(consts[k].type for k in res_consts), *(consts[k].type for k in recompute_from),
                 *(consts[k].type for k in uc), *(carry[k].type for k in ux),
                 *(_slice_type(v.type) for v in stacks), *(_slice_type(xs[k].type) for k in res_xs),
                 *(_slice_type(xs[k].type) for k in us)]

    def build(args):
        recomputed = Rewriter(env=dict(zip(split.known.args[:len(recompute_from)], args[starts[1]:starts[2]],
                                           strict=True)))
        # a residual built from constants alone (no consts at all) is recomputed too
        for inner in (invariant_ops if recomputes else []):
            recomputed.eval_op(inner)
        position = {"const": starts[0], "stack": starts[4], "xs": starts[5]}
        counters = {"const": 0, "stack": 0, "xs": 0}
        residual_args = []
        for kind, value in kinds:
            if kind == "recompute":
                residual_args.append(recomputed.read(value))
                continue
            residual_args.append(args[position[kind] + counters[kind]])
            counters[kind] += 1
        unknown_args = args[starts[2]:starts[4]] + args[starts[6]:]
        return call(split.staged, [*residual_args, *unknown_args])
    staged_body = _dce(make_function("linear_scan_body", new_types, build))
    staged = _create(scan_p, [*(consts[k] for k in res_consts), *(consts[k] for k in recompute_from),
                              *(consts[k] for k in uc), *(carry[k] for k in ux),
                              *stacks, *(xs[k] for k in res_xs), *(xs[k] for k in us)],
                     [staged_body], [*(carry[k].type for k in ux),
                                     *(_stacked_type(t, length) for t in staged_body.output_types[len(ux):])],
                     dict(op.attrs, num_consts=len(res_consts) + len(recompute_from) + len(uc), num_carry=len(ux)),
                     builder=builder)
    return PartialEval(known, staged, tuple(stacks), known_results)


def _scan_transpose(op, cotangents, operands):
    """A scan running the other way over the transposed body: the carries' cotangents
    are its carry, the linear consts' cotangents accumulate in the carry too, and the
    linear xs' cotangents are its stacked ys."""
    from .elementwise import add
    from .structural import full
    if op.attrs.get("num_passive", 0):
        return _passive_scan_transpose(op, cotangents, operands)
    nc, nx = op.attrs["num_consts"], op.attrs["num_carry"]
    length = op.attrs["length"]
    consts, carry, xs = operands[:nc], operands[nc:nc + nx], operands[nc + nx:]
    lin_c = [k for k, v in enumerate(consts) if isinstance(v, UndefinedPrimal)]
    plain_c = [k for k, v in enumerate(consts) if not isinstance(v, UndefinedPrimal)]
    lin_s = [k for k, v in enumerate(xs) if isinstance(v, UndefinedPrimal)]
    plain_s = [k for k, v in enumerate(xs) if not isinstance(v, UndefinedPrimal)]
    body = region_function(op, 0)
    n_ys = len(body.outputs) - nx
    linear_args = [*lin_c, *(nc + k for k in range(nx)), *(nc + nx + k for k in lin_s)]
    tbody = transpose_function(body, linear_args, [TransposedOutput.ARG] * (nx + n_ys))
    # tbody: (plain consts, plain x slices, ct carry out, ct y) -> (ct lin consts, ct carry, ct lin x slices)
    carry_types = [op.results[k].type for k in range(nx)]
    lin_types = [consts[k].type for k in lin_c]
    y_types = [_slice_type(op.results[nx + k].type) for k in range(n_ys)]
    new_types = [*(consts[k].type for k in plain_c), *carry_types, *lin_types,
                 *(_slice_type(xs[k].type) for k in plain_s), *y_types]

    def build(args):
        p = len(plain_c)
        plain = args[:p]
        ct_carry = args[p:p + nx]
        acc = args[p + nx:p + nx + len(lin_c)]
        rest = args[p + nx + len(lin_c):]
        plain_x, ct_y = rest[:len(plain_s)], rest[len(plain_s):]
        cts = call(tbody, [*plain, *plain_x, *ct_carry, *ct_y])
        ct_consts, ct_prev, ct_x = cts[:len(lin_c)], cts[len(lin_c):len(lin_c) + nx], cts[len(lin_c) + nx:]
        return [*ct_prev, *(add(a, c) for a, c in zip(acc, ct_consts, strict=True)), *ct_x]
    new_body = make_function("transposed_scan_body", new_types, build)
    inits = [instantiate(c) for c in cotangents[:nx]] + [full(0, t) for t in lin_types]
    new = current_builder().create(
        scan_p, [*(consts[k] for k in plain_c), *inits, *(xs[k] for k in plain_s),
                 *(instantiate(c) for c in cotangents[nx:])],
        dict(op.attrs, num_consts=len(plain_c), num_carry=nx + len(lin_c), reverse=not op.attrs["reverse"]),
        regions=[function_region(new_body)],
        result_types=[*carry_types, *lin_types, *(xs[k].type for k in lin_s)])
    out: list = [None] * len(operands)
    for k in range(nx):
        if isinstance(carry[k], UndefinedPrimal):
            out[nc + k] = new.results[k]
    for j, k in enumerate(lin_c):
        out[k] = new.results[nx + j]
    for j, k in enumerate(lin_s):
        out[nc + nx + k] = new.results[nx + len(lin_c) + j]
    return out


def _passive_scan_transpose(op, cotangents, operands):
    """Transpose of a linear scan that recomputes its known carries (passive carries):
    a `reverse_fori` of `length` trips whose state is the passive carries, reading the
    plain xs and the ys' cotangents at each step's index and writing the linear xs'
    cotangents there, with the loop's reversal (revolve: O(snapshots) memory)."""
    from .elementwise import add
    from .structural import constant, full
    nc, nx, n_passive = op.attrs["num_consts"], op.attrs["num_carry"], op.attrs["num_passive"]
    length = op.attrs["length"]
    consts, carry, xs = operands[:nc], operands[nc:nc + nx], operands[nc + nx:]
    passive = carry[:n_passive]
    n_lin = nx - n_passive
    if any(isinstance(v, UndefinedPrimal) for v in passive):
        raise GradientError("a scan's recomputed (passive) carry is not linear", op.loc)
    lin_c = [k for k, v in enumerate(consts) if isinstance(v, UndefinedPrimal)]
    plain_c = [k for k, v in enumerate(consts) if not isinstance(v, UndefinedPrimal)]
    lin_s = [k for k, v in enumerate(xs) if isinstance(v, UndefinedPrimal)]
    plain_s = [k for k, v in enumerate(xs) if not isinstance(v, UndefinedPrimal)]
    body = region_function(op, 0)
    n_ys = len(body.outputs) - nx
    arg_unknown = [*(k in lin_c for k in range(nc)), *([False] * n_passive), *([True] * n_lin),
                   *(k in lin_s for k in range(len(xs)))]
    split = partial_eval_function(body, arg_unknown)
    if not all(split.known_outputs[:n_passive]):
        raise GradientError("a scan's passive carry depends on its linear values", op.loc)
    linear_args = [k for k, u in enumerate(arg_unknown) if u]
    tbody = transpose_function(_select(body, range(n_passive, nx + n_ys)), linear_args,
                               [TransposedOutput.ARG] * (n_lin + n_ys))
    # tbody: (plain consts, passive, plain x slices, ct carry out, ct y) -> (ct lin consts, ct carry, ct lin x)
    plain_types = [consts[k].type for k in plain_c]
    passive_types = _types(passive)
    carry_types = [v.type for v in op.results[:n_lin]]
    lin_types = [consts[k].type for k in lin_c]
    slice_types = [*(_slice_type(xs[k].type) for k in plain_s), *(_slice_type(r.type) for r in op.results[n_lin:])]
    n_plain, n_px = len(plain_c), len(plain_s)

    def advance_build(a):          # (i, plain consts, passive, plain x slices, ct y slices)
        return call(split.known, [*a[1:1 + n_plain + n_passive], *a[1 + n_plain + n_passive:][:n_px]])[:n_passive]
    advance = _dce(make_function("scan_advance", [I64, *plain_types, *passive_types, *slice_types], advance_build))

    def step_build(a):             # (i, plain consts, passive, ct carry, acc, plain x slices, ct y slices)
        plain, state = a[1:1 + n_plain], a[1 + n_plain:1 + n_plain + n_passive]
        rest = a[1 + n_plain + n_passive:]
        ct, acc, slices = rest[:n_lin], rest[n_lin:n_lin + len(lin_c)], rest[n_lin + len(lin_c):]
        cts = call(tbody, [*plain, *state, *slices[:n_px], *ct, *slices[n_px:]])
        ct_consts, ct_prev, ct_x = cts[:len(lin_c)], cts[len(lin_c):len(lin_c) + n_lin], cts[len(lin_c) + n_lin:]
        return [*ct_prev, *(add(x, c) for x, c in zip(acc, ct_consts, strict=True)), *ct_x]
    step = make_function("scan_step_back", [I64, *plain_types, *passive_types, *carry_types, *lin_types,
                                            *slice_types], step_build)
    inits = [instantiate(c) for c in cotangents[:n_lin]] + [full(0, t) for t in lin_types]
    scan_xs = [*(xs[k] for k in plain_s), *(instantiate(c) for c in cotangents[n_lin:])]
    results = emit_reverse_fori(constant(length, DType.i64), advance, step, [consts[k] for k in plain_c], passive,
                                inits, op.attrs.get("reversal", STACK), op.attrs.get("snapshots", 0),
                                xs=scan_xs, length=length, reverse=op.attrs["reverse"])
    out: list = [None] * len(operands)
    for k in range(n_lin):
        if isinstance(carry[n_passive + k], UndefinedPrimal):
            out[nc + n_passive + k] = results[k]
    for j, k in enumerate(lin_c):
        out[k] = results[n_lin + j]
    for j, k in enumerate(lin_s):
        out[nc + nx + k] = results[n_lin + len(lin_c) + j]
    return out


scan_p = RegionOp("scan", 1, "A loop over the leading axis of its xs, with a carry; stacks its ys.")
scan_p.verify_op = _scan_verify
scan_p.impl_op = _scan_impl
scan_p.jvp_op = _scan_jvp
scan_p.partial_eval = _scan_partial_eval
scan_p.transpose_op = _scan_transpose


# --------------------------------------------------------------------------- emitting

def emit_cond(pred: Value, then_fn: Function, else_fn: Function, operands: Sequence[Value]) -> list[Value]:
    return list(_create(cond_p, [pred, *operands], [then_fn, else_fn], then_fn.output_types).results)


def emit_while(test_fn: Function, body_fn: Function, consts: Sequence[Value], carry: Sequence[Value]) -> list[Value]:
    return list(_create(while_p, [*consts, *carry], [test_fn, body_fn], _types(carry),
                        {"num_consts": len(consts)}).results)


def emit_fori(trips: Value, body_fn: Function, consts: Sequence[Value], carry: Sequence[Value]) -> list[Value]:
    return list(_create(fori_p, [trips, *consts, *carry], [body_fn], _types(carry),
                        {"num_consts": len(consts)}).results)


def emit_scan(body_fn: Function, consts: Sequence[Value], carry: Sequence[Value], xs: Sequence[Value], length: int,
              reverse: bool = False) -> list[Value]:
    nx = len(carry)
    result_types = [*_types(carry), *(_stacked_type(t, length) for t in body_fn.output_types[nx:])]
    return list(_create(scan_p, [*consts, *carry, *xs], [body_fn], result_types,
                        {"num_consts": len(consts), "num_carry": nx, "length": int(length),
                         "reverse": bool(reverse)}).results)


__all__ = ["cond_p", "while_p", "fori_p", "scan_p", "reverse_fori_p", "LoopKernel", "region_function", "emit_cond",
           "emit_while", "emit_fori", "emit_scan", "emit_reverse_fori", "run_reversal", "revolve_split",
           "binomial_reach", "STACK", "REVOLVE", "REVERSALS", "MAX_SNAPSHOTS"]
