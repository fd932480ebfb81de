"""The op interface: every rule slot declared on every record, one lookup with a clear
error, declared traits that hold, and ops with several results through the IR's layers.

The two test ops below are plain `OpDef`s (not `Primitive`s, so the primitive tables of
test_primitive_rules.py do not count them): `test_sincos` (x -> sin x, cos x) is
nonlinear with a per-result JVP rule, `test_scale2` (x -> 2x, 3x) is linear with a
`transpose_op` that sees both results' cotangents.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import jitgrad
import jitgrad.primitives as P
from jitgrad.errors import GradientError, JitgradError, MissingDerivativeRuleError, MissingRuleError
from jitgrad.interpreter import evaluate
from jitgrad.ir import (DType, Location, is_float_dtype, OpDef, RULE_SLOTS, TensorType, Trait, emit, new_function,
                        parse_function, verify)
from jitgrad.ir.errors import VerificationError, IRParseError
from jitgrad.passes.jvp import jvp_function
from jitgrad.passes.reverse import vjp_function
from jitgrad.primitives import Primitive, UndefinedPrimal, instantiate

from helpers import check_grads
from test_primitive_rules import SPECS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F64 = TensorType((3,), DType.f64)


# --------------------------------------------------------------------------- two-result test ops

def _same_type_twice(x: TensorType):
    return [x, x]


def _sincos_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return [P.mul(t, P.cos(x)), P.neg(P.mul(t, P.sin(x)))]


sincos_op = OpDef("test_sincos", _same_type_twice, num_results=2, traits=(Trait.PURE,),
                  doc="Test op: (sin x, cos x).")
sincos_op.impl = lambda x: [np.sin(x), np.cos(x)]
sincos_op.jvp = _sincos_jvp


def _scale2_transpose_op(op, cotangents, operands):
    ct2, ct3 = (instantiate(c) for c in cotangents)
    (x,) = operands
    assert isinstance(x, UndefinedPrimal)
    two, three = P.full(2.0, x.type), P.full(3.0, x.type)
    return [P.add(P.mul(ct2, two), P.mul(ct3, three))]


scale2_op = OpDef("test_scale2", _same_type_twice, num_results=2, traits=(Trait.PURE, Trait.LINEAR),
                  doc="Test op: (2 x, 3 x), linear.")
scale2_op.impl = lambda x: [2.0 * x, 3.0 * x]
scale2_op.jvp = lambda primals, tangents: emit(scale2_op, instantiate(tangents[0]))
scale2_op.transpose_op = _scale2_transpose_op


def _sincos_function():
    fn, builder = new_function("two_results", [F64])
    with builder, builder.at(Location("model.py", 7)):
        s, c = emit(sincos_op, fn.args[0])
        a, b = emit(scale2_op, s)
        builder.ret([P.add(a, c), b])
    return fn


# --------------------------------------------------------------------------- declared slots

def test_every_record_declares_every_slot():
    for name, opdef in OpDef.registry.items():
        rules = opdef.rules()
        assert list(rules) == list(RULE_SLOTS), name
        assert isinstance(opdef.traits, frozenset) and all(isinstance(t, Trait) for t in opdef.traits), name
        assert opdef.num_results is None or opdef.num_results >= 0, name


def test_primitive_all_is_a_view_of_the_one_registry():
    assert set(Primitive.all) == {n for n, d in OpDef.registry.items() if isinstance(d, Primitive)}
    assert all(Primitive.all[n] is OpDef.registry[n] for n in Primitive.all)
    assert "test_sincos" not in Primitive.all and "checkpoint" not in Primitive.all
    with pytest.raises(KeyError):
        Primitive.all["test_sincos"]


EFFECTFUL_PRIMITIVES = {"index_check"}
"""Primitives with an effect: index_check's is its IndexingError, which NumPy raises even
when nothing reads the indexing (dead-code elimination must keep it, CSE not merge it)."""


def test_every_primitive_is_pure_or_a_declared_effect_and_has_one_result():
    for name, prim in Primitive.all.items():
        if name in EFFECTFUL_PRIMITIVES:
            assert prim.has(Trait.HAS_SIDE_EFFECT) and not prim.has(Trait.PURE), name
        else:
            assert prim.has(Trait.PURE) and not prim.has(Trait.HAS_SIDE_EFFECT), name
        assert prim.num_results == 1, name


# --------------------------------------------------------------------------- the one lookup

def _one_op(opdef_fn, loc=Location("model.py", 12, "loss")):
    fn, builder = new_function("f", [F64])
    with builder, builder.at(loc):
        out = opdef_fn(fn.args[0])
        builder.ret([out])
    return fn.body.ops[-2]


def test_missing_derivative_rule_names_the_op_and_the_line():
    op = _one_op(P.exp)
    assert op.rule("impl") is P.exp_p.impl
    with pytest.raises(MissingDerivativeRuleError) as info:
        op.rule("transpose")
    err = info.value
    assert isinstance(err, GradientError) and isinstance(err, MissingRuleError) and isinstance(err, JitgradError)
    assert str(err).startswith("model.py:12: op 'exp' has no transpose rule: it is not linear")
    assert (err.op, err.slot) == ("exp", "transpose")


def test_missing_other_rule_is_not_a_gradient_error():
    op = _one_op(P.exp)
    with pytest.raises(MissingRuleError, match="model.py:12: op 'exp' has no verify_op rule") as info:
        op.rule("verify_op")
    assert not isinstance(info.value, GradientError)
    with pytest.raises(ValueError, match="not an op rule slot"):
        op.rule("jvpp")


def test_reverse_mode_through_a_nonlinear_tangent_rule_names_the_users_line():
    """A custom_jvp rule that is not linear in its tangents cannot be transposed: the
    error is the lookup's, a GradientError naming the op."""
    @jitgrad.custom_jvp
    def f(x):
        return np.sin(x)
    f.defjvp(lambda p, t: (np.sin(p[0]), np.sin(t[0])))
    with pytest.raises(GradientError, match="op 'sin' has no transpose rule"):
        jitgrad.grad(lambda x: np.sum(f(x)))(np.ones(3))


no_impl_op = OpDef("test_no_impl", lambda x: [x], num_results=1, doc="Test op: declares no rule but infer.")


def test_interpreter_reports_a_missing_impl():
    fn, builder = new_function("g", [F64])
    with builder, builder.at(Location("model.py", 3)):
        builder.ret([emit(no_impl_op, fn.args[0])])
    with pytest.raises(MissingRuleError, match="model.py:3: op 'test_no_impl' has no impl rule"):
        evaluate(fn, [np.ones(3)])


def test_no_rule_is_probed_with_getattr():
    """Rules are read from their declared slots or through `rule()`, never probed."""
    slots = "|".join(RULE_SLOTS)
    probe = re.compile(rf"""(getattr|hasattr)\([^,()]*(opdef|_p|prim)[^,()]*,\s*["']({slots})["']""")
    found = []
    for folder in ("ir", "jitgrad", "passes", "tools"):
        for dirpath, _, filenames in os.walk(os.path.join(ROOT, folder)):
            for filename in filenames:
                if filename.endswith(".py"):
                    path = os.path.join(dirpath, filename)
                    with open(path, encoding="utf-8") as f:
                        for n, line in enumerate(f, 1):
                            if probe.search(line):
                                found.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- several results

def test_two_result_op_infer_emit_print_parse_verify():
    fn = _sincos_function()
    verify(fn)
    sincos = fn.body.ops[0]
    assert len(sincos.results) == 2 and [r.index for r in sincos.results] == [0, 1]
    text = str(fn)
    assert re.search(r"%\w+, %\w+ = test_sincos\(%0\) : f64\[3\], f64\[3\]", text), text
    again = parse_function(text)
    verify(again)
    assert str(again) == text


def test_declared_result_count_is_enforced():
    fn, builder = new_function("bad", [F64])
    with builder:
        with pytest.raises(JitgradError, match="declares 2 result"):
            builder.create(sincos_op, [fn.args[0]], result_types=[F64])
    text = str(_sincos_function())
    one_name = re.sub(r"(%\w+), %\w+ = test_sincos\(%0\) : f64\[3\], f64\[3\]",
                      r"\1 = test_sincos(%0) : f64[3]", text)
    with pytest.raises(IRParseError, match="test_sincos has 2 result"):
        parse_function(one_name)
    good = _sincos_function()
    good.body.ops[0].results.pop()
    with pytest.raises(VerificationError, match="has 1 result"):
        verify(good)


def test_two_result_op_in_the_interpreter_and_both_modes():
    fn = _sincos_function()
    x = np.array([0.3, -1.2, 2.0])
    first, second = evaluate(fn, [x])
    np.testing.assert_allclose(first, 2 * np.sin(x) + np.cos(x), rtol=1e-15)
    np.testing.assert_allclose(second, 3 * np.sin(x), rtol=1e-15)
    check_grads(fn, [x], order=1)
    c1, c2 = np.array([1.0, 0.5, -2.0]), np.array([0.25, 1.0, 3.0])
    grad = evaluate(vjp_function(fn, [0]), [x, c1, c2])[-1]
    np.testing.assert_allclose(grad, c1 * (2 * np.cos(x) - np.sin(x)) + c2 * 3 * np.cos(x), rtol=1e-13)
    tangent = evaluate(jvp_function(fn, [0]), [x, np.ones(3)])
    np.testing.assert_allclose(tangent[2], 2 * np.cos(x) - np.sin(x), rtol=1e-13)


def test_emit_returns_a_value_for_one_result_and_a_list_for_two():
    fn, builder = new_function("h", [F64])
    with builder:
        one = P.exp(fn.args[0])
        two = emit(sincos_op, one)
        builder.ret([one, *two])
    assert not isinstance(one, list) and isinstance(two, list) and len(two) == 2


# --------------------------------------------------------------------------- declared traits hold

def _operands_of(spec):
    """The spec's function, the op of its primitive, and that op's operand values on the
    spec's own inputs (so that fixed operands such as indices stay in their domain)."""
    fn = spec.function()
    env = dict(zip(fn.args, spec.args(), strict=True))
    for op in fn.body.ops:
        if op.name == spec.prim:
            return op, [env[v] for v in op.operands]
        outs = op.rule("impl")(*[env[v] for v in op.operands], **op.attrs)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        env.update(zip(op.results, [np.asarray(o) for o in outs], strict=True))
    raise AssertionError(f"{spec.id} does not emit {spec.prim}")


def _first_specs(predicate):
    seen, out = set(), []
    for spec in SPECS:
        prim = Primitive.all.get(spec.prim)
        if prim is not None and predicate(prim) and spec.prim not in seen:
            seen.add(spec.prim)
            out.append(spec)
    return out


LINEAR_SPECS = _first_specs(lambda p: p.is_linear)
COMMUTATIVE_SPECS = _first_specs(lambda p: p.has(Trait.COMMUTATIVE))


def _check_linear_in(op, operands, positions, rng):
    """f(a x + b y) == a f(x) + b f(y) in the operands at `positions`, the others fixed."""
    positions = [k for k in positions if np.asarray(operands[k]).dtype.kind == "f"]
    if not positions:
        return
    impl = op.rule("impl")
    xs, ys = list(operands), list(operands)
    for k in positions:
        shape, dtype = np.shape(operands[k]), np.asarray(operands[k]).dtype
        xs[k] = rng.standard_normal(shape).astype(dtype)
        ys[k] = rng.standard_normal(shape).astype(dtype)
    mixed = list(operands)
    for k in positions:
        mixed[k] = (0.75 * xs[k] - 1.5 * ys[k]).astype(xs[k].dtype)
    lhs = np.asarray(impl(*mixed, **op.attrs), dtype=np.float64)
    rhs = 0.75 * np.asarray(impl(*xs, **op.attrs), dtype=np.float64) - 1.5 * np.asarray(impl(*ys, **op.attrs),
                                                                                         dtype=np.float64)
    dtypes = [np.asarray(operands[k]).dtype for k in positions] + [r.type.dtype.numpy for r in op.results]
    rtol = min(1e-2, 1e4 * max(float(np.finfo(d).eps) for d in dtypes if is_float_dtype(d)))
    np.testing.assert_allclose(lhs, rhs, rtol=rtol, atol=rtol * (1 + np.max(np.abs(rhs), initial=0)))


def test_every_linear_primitive_has_a_spec_to_check_it():
    assert {s.prim for s in LINEAR_SPECS} == {n for n, p in Primitive.all.items() if p.is_linear}


@pytest.mark.parametrize("spec", LINEAR_SPECS, ids=[s.prim for s in LINEAR_SPECS])
def test_declared_linearity_holds(spec):
    op, operands = _operands_of(spec)
    prim = op.opdef
    rng = np.random.default_rng(11)
    if prim.has(Trait.LINEAR):
        positions = prim.linear_operands if prim.linear_operands is not None else range(len(operands))
        _check_linear_in(op, operands, list(positions), rng)
    if prim.has(Trait.BILINEAR):
        assert len(operands) == 2
        for k in range(2):
            _check_linear_in(op, operands, [k], rng)


@pytest.mark.parametrize("spec", COMMUTATIVE_SPECS, ids=[s.prim for s in COMMUTATIVE_SPECS])
def test_declared_commutativity_holds(spec):
    op, (a, b) = _operands_of(spec)
    impl = op.rule("impl")
    np.testing.assert_array_equal(impl(a, b, **op.attrs), impl(b, a, **op.attrs))


# --------------------------------------------------------------------------- rule helpers

def test_defjvp2_rules_read_the_primal_output():
    """exp's JVP multiplies by the exp the program computes: one exp, not two."""
    fn, builder = new_function("e", [F64])
    with builder:
        builder.ret([P.tanh(P.exp(fn.args[0]))])
    jfn = jvp_function(fn, [0])
    names = [op.name for op in jfn.body.ops]
    assert names.count("exp") == 1 and names.count("tanh") == 1, names
    x = np.array([0.1, -0.4, 0.9])
    np.testing.assert_allclose(evaluate(jfn, [x, np.ones(3)])[1], np.exp(x) * (1 - np.tanh(np.exp(x)) ** 2),
                               rtol=1e-14)


def test_bilinear_records_refuse_both_operands_undefined():
    fn, builder = new_function("m", [F64, F64])
    with builder:
        u = UndefinedPrimal(F64)
        with pytest.raises(ValueError, match="not linear in both operands"):
            P.mul_p.transpose(fn.args[0], u, u)
        builder.ret([fn.args[0]])
