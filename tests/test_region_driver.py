"""One op with a region and two results through every transformation built on the IR's
one driver (jitgrad.ir.rewrite): the reference interpreter, forward mode, reverse mode
(whose partial-eval step splits the JVP'd op into a primal op and a linear op), the
algebra/CSE/DCE passes (which now look inside regions), inlining and remat.

`PAIR` is a generic call-like op: its region's block receives the operands and yields
the two results; its rules are the generic ones for such ops (`jvp_call`,
`partial_eval_call`, `transpose_call`), so nothing here is special-cased for it.
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers import check_grads, numerical_jacobian
from jitgrad.backends.cpu import CPUBackend
from jitgrad.errors import JitgradError, VerificationError
from jitgrad.interpreter import evaluate
from jitgrad.ir import (Block, Builder, DType, OpDef, Region, TensorType, Trait, YIELD, current_builder, new_function,
                        verify)
from jitgrad.ir.rewrite import Evaluator, Rewriter, free_values, live_ops
from jitgrad.passes.inline import InlineCalls
from jitgrad.passes.jvp import jvp_call, jvp_function
from jitgrad.passes.pipeline import optimization_passes
from jitgrad.passes.remat import segment
from jitgrad.passes.reverse import (Cotangent, TransposedOutput, partial_eval_call, partial_eval_function,
                                    transpose_call, transpose_function, vjp_function)
from jitgrad.passes.simplify import AlgebraicSimplification, CommonSubexpressionElimination, DeadCodeElimination
from jitgrad.primitives import add, cos, exp, full, mul, sin
from jitgrad.primitives.calls import CallOp

F64 = TensorType((3,), DType.f64)

PAIR = CallOp("test_region_driver.pair", "A call-like test op: a region computing two values from its operands.")
PAIR.jvp_op = jvp_call
PAIR.partial_eval = partial_eval_call
PAIR.transpose_op = transpose_call


def pair(operands, body):
    """Emit a PAIR op whose region computes `body(*block_args)` (two values)."""
    inner = Builder(Block())
    args = [inner.add_arg(v.type) for v in operands]
    with inner:
        inner.create(YIELD, body(*args))
    return list(current_builder().create(PAIR, operands, regions=[Region([inner.block])],
                                         result_types=[F64, F64]).results)


def region_body(x, y):
    """u = sin(x) * y * 1 (an identity for algebra), v = exp(x) + sin(x) * y (a
    duplicate for CSE), and cos(y) that nothing reads (for DCE)."""
    u = mul(mul(sin(x), y), full(1.0, F64))
    v = add(exp(x), mul(sin(x), y))
    cos(y)
    return [u, v]


def build(outputs=lambda a, b, x: [mul(a, b), add(b, x)]):
    fn, builder = new_function("f", [F64, F64])
    with builder:
        x, y = fn.args
        a, b = pair([x, y], region_body)
        builder.ret(outputs(a, b, x))
    return fn


def reference(x, y):
    u = np.sin(x) * y
    v = np.exp(x) + np.sin(x) * y
    return [u * v, v + x]


def args(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=3), rng.normal(size=3)]


def pair_ops(fn):
    return [op for op in fn.walk() if op.opdef is PAIR]


def region_names(op):
    return [inner.name for inner in op.regions[0].block.ops]


# --------------------------------------------------------------------------- interpreter

def test_interpreter_runs_the_region_and_matches_numpy():
    fn = build()
    verify(fn)
    for got, expected in zip(evaluate(fn, args()), reference(*args()), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-14)


def test_evaluator_rule_table_applies_inside_regions():
    """A rule for `sin` in the driver's table is used for the op inside the region too."""
    fn = build()

    def fake_sin(evaluator, op, inputs):
        return [np.cos(inputs[0])]

    class Interp(Evaluator):
        def default_rule(self, op, inputs):
            if op.regions:
                block = op.regions[0].block
                return self.run_block(block, inputs)
            return [op.opdef.impl(*inputs, **op.attrs)]

    x, y = args()
    out = Interp(rules={"sin": fake_sin}).run_block(fn.body, [x, y])
    u, v = np.cos(x) * y, np.exp(x) + np.cos(x) * y
    np.testing.assert_allclose(out[0], u * v, rtol=1e-14)


# --------------------------------------------------------------------------- differentiation

def test_jvp_keeps_one_region_op_with_primal_and_tangent_results():
    jfn = jvp_function(build(), [0, 1])
    verify(jfn)
    [op] = pair_ops(jfn)
    assert len(op.operands) == 4 and len(op.results) == 4       # (x, y, tx, ty) -> (u, v, tu, tv)


def test_vjp_splits_the_jvp_op_into_a_primal_op_and_a_linear_op():
    """Reverse mode's partial-eval step decides linearity per value inside the region: the
    forward op reads only primals, the transposed op reads residuals and cotangents."""
    fn = build()
    vfn = vjp_function(fn, [0, 1])
    verify(vfn)
    ops = pair_ops(vfn)
    assert len(ops) == 2
    forward, backward = ops
    assert forward.operands == vfn.args[:2]                     # primals only
    assert set(forward.results) & set(backward.operands)        # residuals (y itself is passed through)
    assert {"sin", "exp"} <= set(region_names(forward))
    assert not {"sin", "exp", "cos"} & set(region_names(backward))   # no primal work recomputed


def test_partial_eval_function_splits_known_from_staged_values():
    jfn = jvp_function(build(), [0, 1])
    split = partial_eval_function(jfn, [False, False, True, True])
    assert split.known_outputs == (True, True, False, False)
    assert len(split.known.args) == 2 and len(split.staged.args) == split.num_residuals + 2
    verify(split.known)
    verify(split.staged)
    x, y = args()
    tx, ty = args(1)
    known = evaluate(split.known, [x, y])
    staged = evaluate(split.staged, [*known[2:], tx, ty])
    np.testing.assert_allclose(known[:2], evaluate(jfn, [x, y, tx, ty])[:2], rtol=1e-14)
    np.testing.assert_allclose(staged, evaluate(jfn, [x, y, tx, ty])[2:], rtol=1e-12)


def test_derivatives_match_central_differences_to_second_order():
    check_grads(build(), args(), order=2)


def test_gradient_of_a_scalar_matches_central_differences():
    fn = build(lambda a, b, x: [mul(a, b)])
    x, y = args()
    vfn = vjp_function(fn, [0, 1], [Cotangent.ARG])
    ct = np.random.default_rng(3).normal(size=3)
    _, gx, gy = evaluate(vfn, [x, y, ct])
    for k, g in enumerate((gx, gy)):
        jac = numerical_jacobian(fn, [x, y], wrt=k)
        np.testing.assert_allclose(g, ct @ jac, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- cleanup passes

def test_algebra_simplifies_inside_the_region():
    fn = build()
    out = AlgebraicSimplification().run(fn)
    verify(out)
    [op] = pair_ops(out)
    u = op.regions[0].block.terminator.operands[0]
    assert u.defining_op.name == "mul" and not any(
        o.defining_op is not None and o.defining_op.name in ("constant", "broadcast_in_dim")
        for o in u.defining_op.operands)
    np.testing.assert_allclose(evaluate(out, args()), evaluate(fn, args()), rtol=1e-14)


def test_cse_shares_equal_ops_inside_the_region():
    fn = build()
    out = CommonSubexpressionElimination().run(fn)
    verify(out)
    [op] = pair_ops(out)
    assert region_names(op).count("sin") == 1
    assert region_names(pair_ops(fn)[0]).count("sin") == 2          # the input is unchanged
    np.testing.assert_allclose(evaluate(out, args()), evaluate(fn, args()), rtol=1e-14)


def test_cse_does_not_reuse_values_across_the_region_boundary():
    """A region is a scope of its own: an equal op outside does not replace the one inside."""
    fn, builder = new_function("f", [F64, F64])
    with builder:
        x, y = fn.args
        outside = sin(x)
        a, b = pair([x, y], lambda p, q: [sin(p), sin(p)])
        builder.ret([add(a, outside), b])
    out = CommonSubexpressionElimination().run(fn)
    verify(out)
    [op] = pair_ops(out)
    assert region_names(op) == ["sin", "yield"]
    assert all(v.owner is op.regions[0].block or v.defining_op.parent is op.regions[0].block
               for inner in op.regions[0].block.ops for v in inner.operands)


def test_dce_drops_dead_ops_inside_the_region_and_keeps_the_op_for_one_used_result():
    fn = build(lambda a, b, x: [add(b, x)])            # result a is unused; b is
    out = DeadCodeElimination().run(fn)
    verify(out)
    [op] = pair_ops(out)
    assert "cos" not in region_names(op)
    assert len(op.results) == 2
    np.testing.assert_allclose(evaluate(out, args()), evaluate(fn, args()), rtol=1e-14)


def test_dce_drops_a_region_op_whose_results_are_unused():
    fn = build(lambda a, b, x: [exp(x)])
    out = DeadCodeElimination().run(fn)
    verify(out)
    assert not pair_ops(out)
    assert len(live_ops(fn.body)) == 2          # exp and return


def test_rewriter_rule_table_reaches_ops_inside_regions():
    fn = build()
    rewriter = Rewriter(rules={"sin": lambda rw, op, inputs: [cos(inputs[0])]})
    out = rewriter.rewrite_function(fn)
    verify(out)
    assert "sin" not in [op.name for op in out.walk()]
    x, y = args()
    u, v = np.cos(x) * y, np.exp(x) + np.cos(x) * y
    np.testing.assert_allclose(evaluate(out, [x, y]), [u * v, v + x], rtol=1e-14)


def test_a_rule_giving_the_wrong_number_of_results_is_an_error():
    fn = build()
    rewriter = Rewriter(rules={PAIR: lambda rw, op, inputs: [inputs[0]]})
    with pytest.raises(VerificationError, match="2 values bound to 1"):
        rewriter.rewrite_function(fn)


# --------------------------------------------------------------------------- inline and remat

def test_inline_replaces_the_region_op_by_its_body():
    vfn = vjp_function(build(), [0, 1])
    out = InlineCalls().run(vfn)
    verify(out)
    assert not pair_ops(out)
    x, y = args()
    cts = args(2)
    np.testing.assert_allclose(evaluate(out, [x, y, *cts]), evaluate(vfn, [x, y, *cts]), rtol=1e-12)


def test_remat_segments_around_the_region_op_and_keeps_the_gradient():
    fn = build()
    segmented, crossing = segment(fn, 2)
    verify(segmented)
    assert [op.name for op in segmented.body.ops].count("checkpoint") >= 1
    assert len(pair_ops(segmented)) == 1
    x, y = args()
    cts = args(4)
    np.testing.assert_allclose(evaluate(segmented, [x, y]), evaluate(fn, [x, y]), rtol=1e-14)
    expected = evaluate(vjp_function(fn, [0, 1]), [x, y, *cts])
    got = evaluate(vjp_function(segmented, [0, 1]), [x, y, *cts])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_missing_impl_is_reported_with_the_op_name():
    opaque = OpDef("test_region_driver.opaque", lambda t: [t], doc="An op without an interpreter rule.")
    fn, builder = new_function("g", [F64])
    with builder:
        builder.ret(list(builder.create(opaque, [fn.args[0]]).results))
    with pytest.raises(JitgradError, match="test_region_driver.opaque"):
        evaluate(fn, [np.zeros(3)])


TICK = OpDef("test_region_driver.tick", lambda t: [t], traits=(Trait.HAS_SIDE_EFFECT,),
             doc="A test op with a declared side effect (as a stateful generator would have).")


def test_ops_with_a_side_effect_are_neither_dropped_nor_merged_inside_regions():
    fn, builder = new_function("f", [F64, F64])
    with builder:
        x, y = fn.args

        def body(p, q):
            current_builder().create(TICK, [p])                 # result unused
            current_builder().create(TICK, [p])                 # equal to the first
            return [sin(p), q]
        a, b = pair([x, y], body)
        builder.ret([a])
    out = DeadCodeElimination().run(CommonSubexpressionElimination().run(fn))
    verify(out)
    [op] = pair_ops(out)
    assert region_names(op).count(TICK.name) == 2


def test_free_values_finds_captures_inside_regions_in_order_of_first_use():
    outer, builder = new_function("outer", [F64, F64])
    with builder:
        x, y = outer.args
        s, c = sin(x), cos(y)
        inner, inner_builder = new_function("inner", [F64])
        with inner_builder:
            a, b = pair([inner.args[0], s], lambda p, q: [add(p, c), mul(q, s)])
            inner_builder.ret([add(a, b)])
        builder.ret([s])
    assert free_values(inner.body) == [s, c]
    assert free_values(outer.body) == []


def test_compiled_gradient_matches_the_interpreter_and_numpy():
    """The optimization pipeline (inline, algebra, fold, CSE, DCE) on the VJP, then the CPU
    backend: the same numbers as the interpreter on the unoptimized IR."""
    fn = build()
    vfn = vjp_function(fn, [0, 1])
    optimized = vfn
    for p in optimization_passes():
        optimized = p.run(optimized)
        verify(optimized)
    assert not pair_ops(optimized)
    x, y = args()
    cts = args(5)
    expected = evaluate(vfn, [x, y, *cts])
    got = CPUBackend().compile(optimized)([x, y, *cts])
    np.testing.assert_allclose(got[:2], reference(x, y), rtol=1e-12)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)


def test_nested_region_ops_differentiate_through_both_levels():
    """A pair op inside a pair op's region: partial evaluation splits the inner op inside
    the outer one's body, so both levels become a primal and a linear op."""
    fn, builder = new_function("nested", [F64, F64])
    with builder:
        x, y = fn.args

        def outer_body(p, q):
            a, b = pair([p, q], region_body)
            return [mul(a, q), exp(b)]
        u, v = pair([x, y], outer_body)
        builder.ret([add(u, v)])
    verify(fn)
    x0, y0 = args()
    expected = np.sin(x0) * y0 * y0 + np.exp(np.exp(x0) + np.sin(x0) * y0)
    np.testing.assert_allclose(evaluate(fn, [x0, y0])[0], expected, rtol=1e-13)
    check_grads(fn, [x0 * 0.3, y0 * 0.3], order=2)
    vfn = vjp_function(fn, [0, 1])
    forward, backward = [op for op in vfn.body.ops if op.opdef is PAIR]
    assert not {"sin", "exp", "cos"} & {op.name for op in backward.regions[0].block.ops}
    assert len(pair_ops(vfn)) == 4                 # each level split in two


def _run_body(op, inputs, run_block):
    block = op.regions[0].block
    return run_block(block, dict(zip(block.args, inputs, strict=True)))


WRAP = OpDef("test_region_driver.wrap", lambda t: [t], num_regions=1,
             doc="A test op whose region reads a value of the enclosing block (not isolated).")
WRAP.impl_op = _run_body


def test_partial_eval_stages_an_op_whose_region_captures_an_unknown_value():
    fn, builder = new_function("f", [F64, F64])
    with builder:
        x, t = fn.args
        inner = Builder(Block())
        arg = inner.add_arg(F64)
        with inner:
            inner.create(YIELD, [mul(arg, t)])                 # captures t, an unknown value
        [w] = builder.create(WRAP, [sin(x)], regions=[Region([inner.block])]).results
        builder.ret([cos(x), w])
    split = partial_eval_function(fn, [False, True])
    assert split.known_outputs == (True, False)
    assert not [op for op in split.known.walk() if op.opdef is WRAP]
    verify(split.known)
    verify(split.staged)
    x0, t0 = args()
    known = evaluate(split.known, [x0])
    staged = evaluate(split.staged, [*known[1:], t0])
    np.testing.assert_allclose([known[0], staged[0]], evaluate(fn, [x0, t0]), rtol=1e-14)


def test_transpose_returns_cotangents_in_the_order_of_linear_args():
    fn, builder = new_function("lin", [F64, F64, F64])
    with builder:
        p, a, b = fn.args
        builder.ret([add(mul(p, a), b)])                  # linear in a and b, p fixed
    p0 = args()[0]
    ct = np.arange(3.0)
    for order in ([1, 2], [2, 1]):
        t = transpose_function(fn, order, [TransposedOutput.ARG])
        grads = dict(zip(order, evaluate(t, [p0, ct]), strict=True))
        np.testing.assert_allclose(grads[1], p0 * ct, rtol=1e-15)
        np.testing.assert_allclose(grads[2], ct, rtol=1e-15)


def test_live_ops_rule_table_decides_per_op_which_operands_are_needed():
    """A DCE rule `(op, used results) -> (keep, used operands)`, as a rule table entry,
    overrides the default for its op, inside regions as elsewhere."""
    fn = build(lambda a, b, x: [add(b, x)])
    [op] = pair_ops(fn)
    body = op.regions[0].block
    default = live_ops(fn.body)
    assert {o.name for o in body.ops if o in default} >= {"exp", "sin", "mul", "add", "yield"}
    first_only = live_ops(fn.body, rules={"add": lambda op, used: (any(used), [True, False])})
    kept_in_body = [o.name for o in body.ops if o in first_only]
    assert "exp" in kept_in_body and "cos" not in kept_in_body
    assert kept_in_body.count("sin") == 1          # the one feeding u still counts: u is yielded
