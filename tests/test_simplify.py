"""Tests of the simplification passes and the pass manager.

Each pass test builds a small function, runs the pass, and checks three things: the ops
left (filecheck-style, as a list of op names), that the interpreter gives the same
values before and after, and that the input function was not changed.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import VerificationError
from jitgrad.interpreter import evaluate
from jitgrad.ir import Builder, Block, DType, Location, OpDef, Region, TensorType, YIELD, new_function
from jitgrad.passes.manager import FunctionPass, PassManager, Stage
from jitgrad.passes.simplify import (RULES, AlgebraicSimplification, CommonSubexpressionElimination,
                                     ConstantFolding, DeadCodeElimination, attr_key, simplify_pipeline, splat)
from jitgrad.passes.reverse import vjp_function
from jitgrad.primitives import (add, broadcast_in_dim, constant, convert, div, exp, full, integer_pow, log, mul,
                                neg, reduce_sum, reshape, select, sin, sub, transpose)
from jitgrad.primitives.elementwise import convert_p, gt
from jitgrad.primitives.structural import reshape_p, transpose_p
from jitgrad.tracing.tracer import trace

F64 = DType.f64
I64 = DType.i64


def f64(*shape):
    return TensorType(shape, F64)


def i64(*shape):
    return TensorType(shape, I64)


def build(input_types, body, name="f"):
    """A function whose outputs are `body(*args)` (one value or a list)."""
    fn, builder = new_function(name, input_types)
    with builder:
        outs = body(*fn.args)
        builder.ret(outs if isinstance(outs, (list, tuple)) else [outs])
    return fn


def names(fn):
    return [op.name for op in fn.body.ops]


def random_args(fn, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for t in fn.input_types:
        if t.dtype.is_float:
            out.append(rng.normal(size=t.shape).astype(t.dtype.numpy))
        elif t.dtype == DType.bool:
            out.append(rng.random(t.shape) < 0.5)
        else:
            out.append(rng.integers(-5, 5, size=t.shape))
    return out




def snapshot(fn):
    """What must not change when a pass runs on `fn`: its ops, and its text once the
    printer exists."""
    return [(op, op.name, list(op.operands), list(op.results)) for op in fn.walk()], str(fn)


def run_pass(passes, fn, expected):
    """Run `passes` (one or a list) on `fn`; check the ops left, the values, and that
    the input is unchanged. Returns the new function."""
    passes = passes if isinstance(passes, list) else [passes]
    before = snapshot(fn)
    out = PassManager(passes).run(fn)
    assert names(out) == expected
    assert snapshot(fn) == before
    assert out is not fn
    args = random_args(fn)
    for want, got in zip(evaluate(fn, args), evaluate(out, args), strict=True):
        assert want.dtype == got.dtype and want.shape == got.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    return out


def algebra_dce(fn, expected):
    return run_pass([AlgebraicSimplification(), DeadCodeElimination()], fn, expected)


def loss_gradient(fn):
    """Reverse mode of a scalar loss (seeded with 1). vjp_function's seeding argument
    is being renamed (seed_outputs=[0] -> cotangents=["one"]); accept either."""
    if "cotangents" in inspect.signature(vjp_function).parameters:
        return vjp_function(fn, [0], cotangents=["one"])
    return vjp_function(fn, [0], seed_outputs=[0])


def mlp_loss(w, x):
    return np.mean((np.tanh(x @ w) - 1.0) ** 2)


# --------------------------------------------------------------------------- DCE

def test_dce_drops_unused_chains_and_keeps_the_return():
    def body(x):
        used = sin(x)
        log(exp(x))        # a dead chain
        sin(x)             # a dead duplicate
        return used
    fn = build([f64(3)], body)
    run_pass(DeadCodeElimination(), fn, ["sin", "return"])


def test_dce_keeps_everything_used():
    fn = build([f64(3)], lambda x: mul(sin(x), exp(x)))
    run_pass(DeadCodeElimination(), fn, ["sin", "exp", "mul", "return"])


# --------------------------------------------------------------------------- CSE

def test_cse_merges_identical_ops():
    fn = build([f64(3), f64(3)], lambda x, y: mul(add(x, y), add(x, y)))
    out = run_pass([CommonSubexpressionElimination(), DeadCodeElimination()], fn, ["add", "mul", "return"])
    mul_op = out.body.ops[1]
    assert mul_op.operands[0] is mul_op.operands[1]


def test_cse_is_transitive():
    fn = build([f64(3)], lambda x: sub(exp(sin(x)), exp(sin(x))))
    run_pass([CommonSubexpressionElimination(), DeadCodeElimination()], fn, ["sin", "exp", "sub", "return"])


def test_cse_keeps_different_attrs_apart():
    fn = build([f64(3)], lambda x: add(integer_pow(x, 2), integer_pow(x, 3)))
    run_pass(CommonSubexpressionElimination(), fn, ["integer_pow", "integer_pow", "add", "return"])


def test_cse_compares_constants_by_value_bits_and_dtype():
    def body(x):
        ones = [full(1.0, f64(3)), full(1.0, f64(3))]
        zeros = [full(0.0, f64(3)), full(-0.0, f64(3))]
        return [add(add(x, ones[0]), ones[1]), add(zeros[0], zeros[1]), constant(np.arange(3)),
                constant(np.arange(3.0))]
    fn = build([f64(3)], body)
    out = run_pass([CommonSubexpressionElimination(), DeadCodeElimination()], fn,
                   ["constant", "broadcast_in_dim",            # 1.0 once
                    "constant", "broadcast_in_dim", "constant", "broadcast_in_dim",  # 0.0 and -0.0
                    "add", "add", "add", "constant", "constant", "return"])
    assert len([op for op in out.body.ops if op.name == "constant"]) == 5


def test_attr_key():
    assert attr_key(np.zeros(2)) == attr_key(np.zeros(2))
    assert attr_key(np.zeros(2)) != attr_key(np.zeros(2, np.float32))
    assert attr_key(np.zeros((2, 2))) != attr_key(np.zeros(4))
    assert attr_key(0.0) != attr_key(-0.0)
    assert attr_key(1) != attr_key(1.0)
    assert attr_key({"axes": (0, 1)}) == attr_key({"axes": (0, 1)})
    assert attr_key(F64) != attr_key(I64)
    hash(attr_key({"value": np.ones(3), "shape": (3,), "dtype": F64}))


# --------------------------------------------------------------------------- constant folding

def test_fold_scalar_arithmetic():
    fn = build([f64()], lambda x: mul(x, add(constant(2.0), constant(3.0))))
    out = run_pass([ConstantFolding(), DeadCodeElimination()], fn, ["constant", "mul", "return"])
    assert float(out.body.ops[0].attrs["value"]) == 5.0


def test_fold_keeps_big_splats_as_broadcasts():
    fn = build([f64(100, 100)], lambda x: mul(x, add(full(2.0, f64(100, 100)), full(3.0, f64(100, 100)))))
    out = run_pass([ConstantFolding(), DeadCodeElimination()], fn, ["constant", "broadcast_in_dim", "mul", "return"])
    assert out.body.ops[0].attrs["value"].shape == ()
    assert splat(out.body.ops[1].result) == 5.0


def test_fold_leaves_a_broadcast_scalar_alone():
    fn = build([], lambda: full(1.0, f64(2, 3)))
    run_pass(ConstantFolding(), fn, ["constant", "broadcast_in_dim", "return"])


def test_fold_small_arrays_only():
    small = build([], lambda: reduce_sum(constant(np.arange(6.0).reshape(2, 3)), (1,)))
    out = run_pass([ConstantFolding(), DeadCodeElimination()], small, ["constant", "return"])
    np.testing.assert_array_equal(out.body.ops[0].attrs["value"], [3.0, 12.0])
    big = build([], lambda: mul(constant(np.arange(100.0)), full(2.0, f64(100))))
    run_pass(ConstantFolding(), big, ["constant", "constant", "broadcast_in_dim", "mul", "return"])


def test_fold_does_not_touch_arguments():
    fn = build([f64(3)], lambda x: add(x, full(1.0, f64(3))))
    run_pass(ConstantFolding(), fn, ["constant", "broadcast_in_dim", "add", "return"])


def test_fold_integer_and_comparison_ops():
    fn = build([], lambda: [integer_pow(constant(3), 3), gt(constant(2.0), constant(1.0))])
    out = run_pass([ConstantFolding(), DeadCodeElimination()], fn, ["constant", "constant", "return"])
    assert out.body.ops[0].attrs["value"] == 27 and out.body.ops[1].attrs["value"].dtype == np.bool_


# --------------------------------------------------------------------------- algebraic simplification

def zeros(t):
    return full(0, t)


def ones(t):
    return full(1, t)


def negative_zeros(t):
    """-0.0: the additive identity of IEEE floats (x + -0.0 is x for every x)."""
    return full(-0.0, t)


ALGEBRA_CASES = {
    "x + -0": (lambda x: add(x, negative_zeros(x.type)), ["return"]),
    "-0 + x": (lambda x: add(negative_zeros(x.type), x), ["return"]),
    "float x + 0 stays": (lambda x: add(x, zeros(x.type)), ["constant", "broadcast_in_dim", "add", "return"]),
    "x - 0": (lambda x: sub(x, zeros(x.type)), ["return"]),
    "float x - -0 stays": (lambda x: sub(x, negative_zeros(x.type)), ["constant", "broadcast_in_dim", "sub", "return"]),
    "-0 - x": (lambda x: sub(negative_zeros(x.type), x), ["neg", "return"]),
    "float 0 - x stays": (lambda x: sub(zeros(x.type), x), ["constant", "broadcast_in_dim", "sub", "return"]),
    "-0 - neg(x)": (lambda x: sub(negative_zeros(x.type), neg(x)), ["return"]),
    "x * 1": (lambda x: mul(x, ones(x.type)), ["return"]),
    "1 * x": (lambda x: mul(ones(x.type), x), ["return"]),
    "float x * 0 stays": (lambda x: mul(x, zeros(x.type)), ["constant", "broadcast_in_dim", "mul", "return"]),
    "x / 1": (lambda x: div(x, ones(x.type)), ["return"]),
    "neg(neg(x))": (lambda x: neg(neg(x)), ["return"]),
    "x ** 1": (lambda x: integer_pow(x, 1), ["return"]),
    "x ** 0": (lambda x: integer_pow(x, 0), ["constant", "broadcast_in_dim", "return"]),
    "select(p, x, x)": (lambda x: select(gt(x, zeros(x.type)), x, x), ["return"]),
    "select(true, x, y)": (lambda x: select(full(True, x.type.with_dtype(DType.bool)), x, exp(x)), ["return"]),
    "transpose(transpose(x)) -> x": (lambda x: transpose(transpose(x, (1, 2, 0)), (2, 0, 1)), ["return"]),
    "transpose(transpose(x))": (lambda x: transpose(transpose(x, (1, 0, 2)), (0, 2, 1)), ["transpose", "return"]),
    "reshape(reshape(x))": (lambda x: reshape(reshape(x, (6, 4)), (4, 6)), ["reshape", "return"]),
    "reshape(reshape(x)) -> x": (lambda x: reshape(reshape(x, (24,)), (2, 3, 4)), ["return"]),
    "reshape to the same shape": (lambda x: reshape_p.bind(x, new_sizes=(2, 3, 4)), ["return"]),
    "convert to the same dtype": (lambda x: convert_p.bind(x, dtype=F64), ["return"]),
    "transpose by the identity": (lambda x: transpose_p.bind(x, permutation=(0, 1, 2)), ["return"]),
    "broadcast(broadcast(x))": (lambda x: broadcast_in_dim(broadcast_in_dim(x, (5, 2, 3, 4), (1, 2, 3)),
                                                            (6, 5, 2, 3, 4), (1, 2, 3, 4)),
                                ["broadcast_in_dim", "return"]),
    "sum(broadcast(x))": (lambda x: reduce_sum(broadcast_in_dim(x, (5, 2, 3, 6, 4), (1, 2, 4)), (0, 3)),
                          ["constant", "broadcast_in_dim", "mul", "return"]),
    "sum(broadcast(sum(x)))": (lambda x: reduce_sum(broadcast_in_dim(reduce_sum(x, (1,)), (2, 7, 4), (0, 2)), (1,)),
                               ["reduce_sum", "constant", "broadcast_in_dim", "mul", "return"]),
    "sum(stretched broadcast) stays": (
        lambda x: reduce_sum(broadcast_in_dim(reshape(reduce_sum(x, (1,)), (2, 1, 4)), (2, 7, 4), (0, 1, 2)), (1,)),
        ["reduce_sum", "reshape", "broadcast_in_dim", "reduce_sum", "return"]),
}


@pytest.mark.parametrize("case", list(ALGEBRA_CASES))
def test_algebra(case):
    body, expected = ALGEBRA_CASES[case]
    algebra_dce(build([f64(2, 3, 4)], body), expected)


def test_sum_of_a_broadcast_scalar():
    fn = build([f64()], lambda s: reduce_sum(broadcast_in_dim(s, (4, 5), ()), (0, 1)))
    out = algebra_dce(fn, ["constant", "mul", "return"])
    assert float(out.body.ops[0].attrs["value"]) == 20.0


def test_composed_transpose_permutation():
    fn = build([f64(2, 3, 4)], lambda x: transpose(transpose(x, (1, 2, 0)), (1, 2, 0)))
    out = algebra_dce(fn, ["transpose", "return"])
    assert out.body.ops[0].attrs["permutation"] == (2, 0, 1)


def test_integer_times_zero_is_zero():
    def body(x):
        zero = zeros(x.type)
        return [mul(x, zero), mul(zero, x)]
    fn = build([i64(3)], body)
    algebra_dce(fn, ["constant", "broadcast_in_dim", "return"])


def test_integer_convert_chain_is_kept():
    """f64 -> i64 -> f64 truncates: not an identity."""
    fn = build([f64(3)], lambda x: convert(convert(x, I64), F64))
    algebra_dce(fn, ["convert", "convert", "return"])


def test_rewritten_op_keeps_the_location():
    loc = Location("model.py", 7, "loss")
    fn, builder = new_function("f", [f64(3)])
    with builder, builder.at(loc):
        builder.ret([sub(negative_zeros(f64(3)), fn.args[0])])
    out = run_pass([AlgebraicSimplification(), DeadCodeElimination()], fn, ["neg", "return"])
    assert out.body.ops[0].loc == loc


def test_printed_result():
    fn = build([f64(3)], lambda x: mul(sub(negative_zeros(x.type), x), ones(x.type)))
    out = PassManager([AlgebraicSimplification(), DeadCodeElimination()]).run(fn)
    body = [line.split(" loc(")[0].strip() for line in str(out).splitlines()[1:-1]]
    assert body == ["%1 = neg(%0) : f64[3]", "return %1"]


def test_ill_typed_rewrites_are_skipped(monkeypatch):
    monkeypatch.setitem(RULES, "exp", [lambda x: constant(1.0)])   # f64[] for an f64[3] op
    fn = build([f64(3)], lambda x: exp(x))
    algebra_dce(fn, ["exp", "return"])


def test_algebra_reaches_the_fixpoint_in_one_walk():
    def body(x):
        y = mul(neg(neg(transpose(transpose(x, (1, 0)), (1, 0)))), ones(f64(2, 3)))
        return integer_pow(sub(y, zeros(f64(2, 3))), 1)
    fn = build([f64(2, 3)], body)
    out = AlgebraicSimplification().run(fn)
    assert out.outputs[0] is out.args[0]


# --------------------------------------------------------------------------- regions

WRAP = OpDef("test_simplify.wrap", lambda *types, **attrs: [types[0]], num_regions=1,
             doc="A test op with one region that uses a value of the enclosing block.")


def test_region_ops_are_copied_with_remapped_outer_values():
    fn, builder = new_function("f", [f64(3)])
    with builder:
        x = fn.args[0]
        captured = exp(x)
        dup = exp(x)
        dead = sin(x)
        inner = Builder(Block())
        arg = inner.add_arg(f64(3))
        with inner:
            inner.create(YIELD, [add(arg, captured)])
        result = builder.create(WRAP, [dup], regions=[Region([inner.block])]).result
        add(result, dead)
        builder.ret([result])
    for p in simplify_pipeline():
        out = p.run(fn)
        assert [op.name for op in out.walk()].count("yield") == 1
    out = PassManager(simplify_pipeline()).run(fn)
    assert [op.name for op in out.walk()] == ["exp", WRAP.name, "add", "yield", "return"]
    wrap = out.body.ops[1]
    inner_add = wrap.regions[0].block.ops[0]
    assert inner_add.operands[0] is wrap.regions[0].block.args[0]
    assert inner_add.operands[1] is out.body.ops[0].result
    assert wrap.operands[0] is out.body.ops[0].result
    assert [op.name for op in fn.walk()].count("exp") == 2


# --------------------------------------------------------------------------- pass manager

def test_pass_manager_records_stages():
    fn = build([f64(3)], lambda x: add(mul(x, ones(x.type)), exp(x)))
    pm = PassManager(simplify_pipeline())
    out = pm.run(fn)
    assert [s.name for s in pm.stages] == ["algebra", "fold", "cse", "dce"]
    assert all(isinstance(s, Stage) and s.seconds >= 0 for s in pm.stages)
    assert pm.stages[-1].function is out
    assert names(out) == ["exp", "add", "return"]
    assert "dce" in pm.report()


def test_passes_are_named_frozen_units():
    for p in simplify_pipeline():
        assert isinstance(p, FunctionPass) and p.name
        with pytest.raises(AttributeError):
            p.name = "other"  # type: ignore[misc]
    assert ConstantFolding(max_elements=8).max_elements == 8


class _Breaks(FunctionPass):
    name = "breaks"

    def run(self, fn):
        out = DeadCodeElimination().run(fn)
        out.name = "broken"
        return out


def _fake_verifier(monkeypatch):
    import jitgrad.passes.manager as manager

    def verify(fn):
        if fn.name == "broken":
            raise VerificationError("return operand 0 is not defined", Location("m.py", 3))
    monkeypatch.setattr(manager, "verify", verify)


def test_verification_names_the_failing_pass(monkeypatch):
    _fake_verifier(monkeypatch)
    fn = build([f64(3)], lambda x: exp(x))
    PassManager([DeadCodeElimination(), _Breaks()]).run(fn)       # not verified: no error
    with pytest.raises(VerificationError, match="after pass 'breaks': return operand 0") as info:
        PassManager([DeadCodeElimination(), _Breaks(), DeadCodeElimination()], verify=True).run(fn)
    assert info.value.location == Location("m.py", 3)
    fn.name = "broken"
    with pytest.raises(VerificationError, match="before the first pass"):
        PassManager([DeadCodeElimination()], verify=True).run(fn)


def test_pipeline_output_verifies():
    fn = trace(mlp_loss, (np.ones((3, 2)), np.ones((4, 3)))).function
    PassManager(simplify_pipeline(), verify=True).run(loss_gradient(fn))


# --------------------------------------------------------------------------- end to end

def test_pipeline_on_a_reverse_mode_gradient():
    traced = trace(mlp_loss, (np.ones((3, 2)), np.ones((4, 3))))
    grad = loss_gradient(traced.function)
    count = len(grad.body.ops)
    out = PassManager(simplify_pipeline()).run(grad)
    assert len(out.body.ops) < count
    assert len(grad.body.ops) == count
    assert names(out).count("tanh") == 1 and "integer_pow" in names(out)
    assert all(op.attrs.get("y") != 1 for op in out.body.ops if op.name == "integer_pow")
    for seed in range(3):
        args = random_args(grad, seed)
        for want, got in zip(evaluate(grad, args), evaluate(out, args), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12)


def test_traced_repeated_subexpression():
    fn = trace(lambda x: np.sin(x) * np.sin(x) - 0.0, (np.ones(4),)).function
    run_pass(simplify_pipeline(), fn, ["sin", "mul", "return"])


@pytest.mark.parametrize("program", [lambda x: x + 0.0, lambda x: 0.0 + x, lambda x: 0.0 - x,
                                     lambda x: x - (-0.0), lambda x: x + (-0.0), lambda x: -0.0 - x,
                                     lambda x: x - 0.0])
def test_adding_a_zero_keeps_numpys_sign(program):
    # -0.0 + 0.0 is +0.0: only x + (-0.0), x - 0.0 and -0.0 - x are identities
    x = np.array([-0.0, 0.0, 2.0, -3.0])
    got = jitgrad.jit(program)(x)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(program(x)))
    np.testing.assert_array_equal(got, program(x))


@pytest.mark.parametrize("zero, folds", [(complex(-0.0, -0.0), True), (complex(0.0, -0.0), False),
                                         (complex(-0.0, 0.0), False), (complex(0.0, 0.0), False)])
def test_a_complex_zero_is_the_additive_identity_only_with_both_parts_negative(zero, folds):
    """On complex IR (`jitgrad opt` runs the algebra before any lowering), x + z is x for
    every x only when both parts of z are -0.0."""
    x = np.array([complex(-0.0, -0.0), complex(0.0, -0.0), 1 + 2j])
    fn = trace(lambda x: x + np.complex128(zero), (x,)).function
    before = [op.name for op in fn.body.ops]
    after = [op.name for op in PassManager(simplify_pipeline()).run(fn).body.ops]
    assert ("add" not in after) == folds, (before, after)
