"""User-defined differentiation: custom_jvp, custom_vjp, CustomOp (and the shipped
ClipGradient), checkpoint regions, and the NaN-safety of gradients through np.where.

Custom rules here deliberately differ from the true derivative (a factor of 2, a clipped
or straight-through gradient), so a test passing proves the rule was used rather than the
body; references are closed forms and central finite differences in float64.
"""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad

X = np.array([-1.3, -0.2, 0.4, 2.1])
Y = np.array([0.7, 1.9, -0.6, 0.3])


def logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def finite_difference(f, x, eps=1e-6):
    """Central differences of the scalar function f at the float x."""
    return (f(x + eps) - f(x - eps)) / (2 * eps)


# --------------------------------------------------------------------------- custom_jvp

@jitgrad.custom_jvp
def softplus(x):
    return np.log(1.0 + np.exp(x))


@softplus.defjvp
def softplus_jvp(primals, tangents):
    """Twice the true derivative, so every test sees whether the rule was used."""
    (x,), (t,) = primals, tangents
    return softplus(x), 2.0 * t * logistic(x)


def test_custom_jvp_on_arrays_runs_the_plain_function():
    np.testing.assert_allclose(softplus(X), np.log1p(np.exp(X)), rtol=1e-14)


def test_custom_jvp_rule_is_used_in_forward_mode():
    t = np.array([1.0, -2.0, 0.5, 3.0])
    out, tout = jitgrad.jvp(softplus, (X,), (t,))
    np.testing.assert_allclose(out, np.log1p(np.exp(X)), rtol=1e-14)
    np.testing.assert_allclose(tout, 2.0 * t * logistic(X), rtol=1e-14)
    np.testing.assert_allclose(jitgrad.jacfwd(softplus)(X), np.diag(2.0 * logistic(X)), rtol=1e-14)


def test_custom_jvp_rule_is_used_in_reverse_mode():
    expected = 2.0 * logistic(X)
    np.testing.assert_allclose(jitgrad.grad(lambda x: np.sum(softplus(x)))(X), expected, rtol=1e-14)
    np.testing.assert_allclose(jitgrad.jacrev(softplus)(X), np.diag(expected), rtol=1e-14)
    _, vjp_fn = jitgrad.vjp(softplus, X)
    np.testing.assert_allclose(vjp_fn(Y)[0], Y * expected, rtol=1e-14)


def test_custom_jvp_inside_a_larger_function_and_under_jit():
    def loss(w):
        return np.sum(softplus(w * X) ** 2)
    w = 0.8
    expected = np.sum(2.0 * softplus(w * X) * 2.0 * logistic(w * X) * X)
    assert np.isclose(jitgrad.grad(loss)(w), expected, rtol=1e-13)
    assert np.isclose(jitgrad.jit(jitgrad.grad(loss))(w), expected, rtol=1e-13)
    assert np.isclose(jitgrad.grad(jitgrad.jit(loss))(w), expected, rtol=1e-13)
    jitted_softplus = jitgrad.jit(softplus)
    np.testing.assert_allclose(jitted_softplus(X), np.log1p(np.exp(X)), rtol=1e-14)
    np.testing.assert_allclose(jitgrad.jvp(jitted_softplus, (X,), (np.ones(4),))[1], 2.0 * logistic(X),
                               rtol=1e-14)


def test_custom_jvp_second_order_differentiates_the_rule():
    """d/dx of the rule's 2 logistic(x) is 2 logistic'(x), not softplus'' = logistic'."""
    def d_logistic(x):
        return logistic(x) * (1.0 - logistic(x))
    for x in (-1.3, 0.0, 0.4):
        expected = 2.0 * d_logistic(x)
        assert np.isclose(jitgrad.grad(jitgrad.grad(softplus))(x), expected, rtol=1e-13)
        assert np.isclose(jitgrad.hessian(softplus)(x), expected, rtol=1e-13)
        assert np.isclose(jitgrad.jacfwd(jitgrad.jacfwd(softplus))(x), expected, rtol=1e-13)
    assert np.isclose(jitgrad.jit(jitgrad.grad(jitgrad.grad(softplus)))(0.4), 2.0 * d_logistic(0.4), rtol=1e-13)


def test_custom_jvp_with_two_inputs_and_two_outputs():
    @jitgrad.custom_jvp
    def polar(x, y):
        return x * y, x + y

    @polar.defjvp
    def polar_jvp(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        return polar(x, y), (3.0 * (tx * y + x * ty), tx - ty)   # deliberately not the true JVP

    tx, ty = np.ones(4), np.full(4, 2.0)
    (p, s), (tp, ts) = jitgrad.jvp(polar, (X, Y), (tx, ty))
    np.testing.assert_allclose(p, X * Y, rtol=1e-15)
    np.testing.assert_allclose(s, X + Y, rtol=1e-15)
    np.testing.assert_allclose(tp, 3.0 * (tx * Y + X * ty), rtol=1e-14)
    np.testing.assert_allclose(ts, tx - ty, rtol=1e-15)
    gx, gy = jitgrad.grad(lambda x, y: np.sum(sum(polar(x, y))), argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(gx, 3.0 * Y + 1.0, rtol=1e-14)
    np.testing.assert_allclose(gy, 3.0 * X - 1.0, rtol=1e-14)


def _custom_jvp_with_rule(rule):
    @jitgrad.custom_jvp
    def f(x):
        return np.sin(x)
    f.defjvp(rule)
    return f


@pytest.mark.parametrize("rule", [
    lambda p, t: (np.sin(p[0]), np.ones(3)),                       # wrong shape
    lambda p, t: (np.sin(p[0]), (t[0], t[0])),                     # two tangents for one output
    lambda p, t: np.cos(p[0]) * t[0],                              # not a (primal, tangent) pair
], ids=["shape", "count", "not_a_pair"])
def test_custom_jvp_rule_of_the_wrong_structure_is_a_gradient_error(rule):
    f = _custom_jvp_with_rule(rule)
    with pytest.raises(jitgrad.GradientError):
        jitgrad.jvp(f, (X,), (np.ones(4),))
    with pytest.raises(jitgrad.GradientError):
        jitgrad.grad(lambda x: np.sum(f(x)))(X)


def test_custom_jvp_without_a_rule_is_a_gradient_error():
    @jitgrad.custom_jvp
    def f(x):
        return np.sin(x)
    np.testing.assert_allclose(jitgrad.jit(f)(X), np.sin(X), rtol=1e-15)   # no derivative needed
    with pytest.raises(jitgrad.GradientError, match="defjvp"):
        jitgrad.grad(lambda x: np.sum(f(x)))(X)


# --------------------------------------------------------------------------- custom_vjp

@jitgrad.custom_vjp
def scaled_sin_mul(x, y):
    return np.sin(x) * y


def _ssm_fwd(x, y):
    return np.sin(x) * y, (np.cos(x), (np.sin(x), y))     # nested tuple residuals


def _ssm_bwd(residuals, g):
    """The x cotangent is twice the true one; the y cotangent is the true one."""
    cos_x, (sin_x, y) = residuals
    return 2.0 * cos_x * y * g, sin_x * g


scaled_sin_mul.defvjp(_ssm_fwd, _ssm_bwd)


def test_custom_vjp_on_arrays_runs_the_plain_function():
    np.testing.assert_allclose(scaled_sin_mul(X, Y), np.sin(X) * Y, rtol=1e-15)


def test_custom_vjp_rule_is_used_by_grad_and_vjp():
    gx, gy = jitgrad.grad(lambda x, y: np.sum(scaled_sin_mul(x, y)), argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(gx, 2.0 * np.cos(X) * Y, rtol=1e-14)
    np.testing.assert_allclose(gy, np.sin(X), rtol=1e-14)
    out, vjp_fn = jitgrad.vjp(scaled_sin_mul, X, Y)
    np.testing.assert_allclose(out, np.sin(X) * Y, rtol=1e-15)
    cx, cy = vjp_fn(np.array([1.0, -1.0, 2.0, 0.5]))
    np.testing.assert_allclose(cx, 2.0 * np.cos(X) * Y * [1.0, -1.0, 2.0, 0.5], rtol=1e-14)
    np.testing.assert_allclose(cy, np.sin(X) * [1.0, -1.0, 2.0, 0.5], rtol=1e-14)
    np.testing.assert_allclose(jitgrad.jacrev(scaled_sin_mul)(X, Y), np.diag(2.0 * np.cos(X) * Y), rtol=1e-14)


def test_custom_vjp_under_jit_in_both_orders():
    loss = lambda x, y: np.sum(scaled_sin_mul(x, y) ** 2)
    expected = 2.0 * np.sin(X) * Y * 2.0 * np.cos(X) * Y
    np.testing.assert_allclose(jitgrad.jit(jitgrad.grad(loss))(X, Y), expected, rtol=1e-14)
    np.testing.assert_allclose(jitgrad.grad(jitgrad.jit(loss))(X, Y), expected, rtol=1e-14)
    np.testing.assert_allclose(jitgrad.jit(scaled_sin_mul)(X, Y), np.sin(X) * Y, rtol=1e-15)


def test_custom_vjp_reverse_over_reverse_differentiates_bwd():
    """grad of x -> 2 cos(x) y (the bwd rule) is -2 sin(x) y."""
    for x in (0.3, -1.1):
        g2 = jitgrad.grad(jitgrad.grad(lambda x: scaled_sin_mul(x, 1.5)))(x)
        assert np.isclose(g2, -2.0 * np.sin(x) * 1.5, rtol=1e-13)
    mixed = jitgrad.grad(lambda y: jitgrad.grad(lambda x, y: scaled_sin_mul(x, y))(0.3, y))(1.5)
    assert np.isclose(mixed, 2.0 * np.cos(0.3), rtol=1e-13)
    jitted = jitgrad.jit(jitgrad.grad(jitgrad.jit(jitgrad.grad(lambda x: scaled_sin_mul(x, 1.5)))))
    assert np.isclose(jitted(0.3), -3.0 * np.sin(0.3), rtol=1e-13)


def test_custom_vjp_with_two_outputs_gets_a_tuple_of_cotangents():
    @jitgrad.custom_vjp
    def two(x):
        return np.exp(x), x ** 2

    def fwd(x):
        e = np.exp(x)
        return (e, x ** 2), (e, x)

    def bwd(residuals, cts):
        e, x = residuals
        g_exp, g_sq = cts
        return (e * g_exp + 4.0 * x * g_sq,)     # the square's part doubled

    two.defvjp(fwd, bwd)
    g = jitgrad.grad(lambda x: np.sum(two(x)[0]) + np.sum(two(x)[1] * Y))(X)
    np.testing.assert_allclose(g, np.exp(X) + 4.0 * X * Y, rtol=1e-14)


def test_custom_vjp_residuals_as_a_dict():
    @jitgrad.custom_vjp
    def cube(x):
        return x ** 3

    cube.defvjp(lambda x: (x ** 3, {"x": x, "sq": x * x}),
                lambda res, g: (3.0 * res["sq"] * g + 0.0 * res["x"] + 1.0,))   # true derivative + 1
    np.testing.assert_allclose(jitgrad.grad(lambda x: np.sum(cube(x)))(X), 3.0 * X ** 2 + 1.0, rtol=1e-14)


def test_custom_vjp_whose_fwd_calls_the_function_itself():
    """JAX's idiom (and this module's docstring): `def f_fwd(x): return f(x), residuals`."""
    @jitgrad.custom_vjp
    def f(x):
        return np.sin(x)

    f.defvjp(lambda x: (f(x), np.cos(x)), lambda c, g: (2.0 * c * g,))
    np.testing.assert_allclose(jitgrad.grad(lambda x: np.sum(f(x)))(X), 2.0 * np.cos(X), rtol=1e-14)


@pytest.mark.parametrize("transform", [
    lambda f: jitgrad.jvp(f, (X,), (np.ones(4),)),
    lambda f: jitgrad.jacfwd(f)(X),
    lambda f: jitgrad.jacrev(jitgrad.jacfwd(lambda x: np.sum(f(x))))(X),
    lambda f: jitgrad.jit(lambda x, t: jitgrad.jvp(f, (x,), (t,)))(X, X),
], ids=["jvp", "jacfwd", "rev_over_fwd", "jvp_under_jit"])
def test_custom_vjp_in_forward_mode_is_a_gradient_error(transform):
    f = lambda x: scaled_sin_mul(x, Y)
    with pytest.raises(jitgrad.GradientError, match="reverse mode only"):
        transform(f)


def test_custom_vjp_hessian_is_forward_over_the_bwd_rule():
    """hessian = jacfwd(jacrev(f)): reverse mode first replaces the call by the traced bwd
    rule, which forward mode then differentiates like any code."""
    loss = lambda x: np.sum(scaled_sin_mul(x, Y))
    expected = np.diag(-2.0 * np.sin(X) * Y)
    np.testing.assert_allclose(jitgrad.hessian(loss)(X), expected, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(jitgrad.jacrev(jitgrad.jacrev(loss))(X), expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("bwd", [
    lambda res, g: (g,),                       # one cotangent for two inputs
    lambda res, g: (g, g, g),                  # three
    lambda res, g: g,                          # not a tuple
    lambda res, g: (g, np.ones(3)),            # wrong shape
], ids=["too_few", "too_many", "not_a_tuple", "shape"])
def test_custom_vjp_bwd_of_the_wrong_structure_is_a_gradient_error(bwd):
    @jitgrad.custom_vjp
    def f(x, y):
        return x * y
    f.defvjp(lambda x, y: (x * y, (x, y)), bwd)
    with pytest.raises(jitgrad.GradientError):
        jitgrad.grad(lambda x, y: np.sum(f(x, y)))(X, Y)


def test_custom_vjp_without_defvjp_is_a_gradient_error():
    @jitgrad.custom_vjp
    def f(x):
        return np.sin(x)
    np.testing.assert_allclose(f(X), np.sin(X), rtol=1e-15)      # concrete calls need no rules
    with pytest.raises(jitgrad.GradientError, match="defvjp"):
        jitgrad.grad(lambda x: np.sum(f(x)))(X)
    with pytest.raises(jitgrad.GradientError, match="defvjp"):
        jitgrad.jit(f)(X)


# --------------------------------------------------------------------------- CustomOp

class StraightThroughSign(jitgrad.CustomOp):
    """sign(x) forward; the incoming gradient passed through unchanged backward."""

    def forward(self, inputs):
        return np.sign(inputs[0])

    def backward(self, grad_output, inputs):
        return [grad_output]


class ScaledProduct(jitgrad.CustomOp):
    """x * y forward; backward gives each input 10x its true gradient."""

    def forward(self, inputs):
        x, y = inputs
        return x * y

    def backward(self, grad_output, inputs):
        x, y = inputs
        return [10.0 * grad_output * y, 10.0 * grad_output * x]


def test_custom_op_subclass_forward_and_backward():
    sign = StraightThroughSign()
    np.testing.assert_array_equal(jitgrad.custom_op(sign, [X]), np.sign(X))
    np.testing.assert_array_equal(jitgrad.jit(lambda x: jitgrad.custom_op(sign, [x]))(X), np.sign(X))
    g = jitgrad.grad(lambda x: np.sum(jitgrad.custom_op(sign, [x]) * Y))(X)
    np.testing.assert_allclose(g, Y, rtol=1e-15)     # true gradient of sign would be 0


def test_custom_op_with_two_inputs():
    op = ScaledProduct()
    loss = lambda x, y: np.sum(jitgrad.custom_op(op, [x, y]) ** 2)
    gx, gy = jitgrad.grad(loss, argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(gx, 10.0 * 2.0 * X * Y * Y, rtol=1e-14)
    np.testing.assert_allclose(gy, 10.0 * 2.0 * X * Y * X, rtol=1e-14)
    gx_jit = jitgrad.jit(jitgrad.grad(loss))(X, Y)
    np.testing.assert_allclose(gx_jit, gx, rtol=1e-14)


@pytest.mark.parametrize("scale,expected", [(5.0, 1.0), (-5.0, -1.0), (0.3, 0.3), (-0.3, -0.3)])
def test_clip_gradient_clips_the_incoming_gradient(scale, expected):
    clip = jitgrad.ClipGradient()
    g = jitgrad.grad(lambda x: np.sum(scale * jitgrad.custom_op(clip, [x])))(X)
    np.testing.assert_array_equal(g, np.full(4, expected))


def test_clip_gradient_is_the_identity_forward_and_clips_per_element():
    clip = jitgrad.ClipGradient()
    np.testing.assert_array_equal(jitgrad.custom_op(clip, [X]), X)
    np.testing.assert_array_equal(jitgrad.jit(lambda x: jitgrad.custom_op(clip, [x]))(X), X)
    weights = np.array([-3.0, -0.5, 0.25, 7.0])
    g = jitgrad.jit(jitgrad.grad(lambda x: np.sum(weights * jitgrad.custom_op(clip, [x]))))(X)
    np.testing.assert_array_equal(g, np.clip(weights, -1.0, 1.0))
    g = jitgrad.grad(lambda x: np.sum(jitgrad.custom_op(clip, [x]) ** 2))(X)      # 2x, clipped
    np.testing.assert_allclose(g, np.clip(2.0 * X, -1.0, 1.0), rtol=1e-15)


# --------------------------------------------------------------------------- checkpoint

def block(x):
    return np.sin(x) ** 2 * np.exp(0.5 * x)


def plain_loss(x):
    return np.sum(block(block(x)) * X)


def checkpointed_loss(x):
    return np.sum(jitgrad.checkpoint(block)(jitgrad.checkpoint(block)(x)) * X)


@jitgrad.checkpoint
def decorated_block(x):
    return np.sin(x) ** 2 * np.exp(0.5 * x)


@jitgrad.checkpoint
def nested_block(x):
    """A checkpoint that calls a checkpoint."""
    return decorated_block(decorated_block(x))


def test_checkpoint_on_arrays_runs_the_plain_function():
    np.testing.assert_allclose(jitgrad.checkpoint(block)(Y), block(Y), rtol=1e-15)
    np.testing.assert_allclose(decorated_block(Y), block(Y), rtol=1e-15)
    assert decorated_block.__name__ == "decorated_block"


@pytest.mark.parametrize("loss", [checkpointed_loss, lambda x: np.sum(nested_block(x) * X),
                                  lambda x: np.sum(decorated_block(block(x)) * X)],
                         ids=["function_form", "nested", "decorator"])
def test_checkpoint_gradients_equal_the_plain_gradients(loss):
    expected = jitgrad.grad(plain_loss)(Y)
    np.testing.assert_allclose(jitgrad.grad(loss)(Y), expected, rtol=1e-13)
    np.testing.assert_allclose(jitgrad.jit(jitgrad.grad(loss))(Y), expected, rtol=1e-13)
    np.testing.assert_allclose(jitgrad.grad(jitgrad.jit(loss))(Y), expected, rtol=1e-13)
    np.testing.assert_allclose(jitgrad.hessian(loss)(Y), jitgrad.hessian(plain_loss)(Y), rtol=1e-12, atol=1e-13)
    t = np.array([0.5, -1.0, 2.0, 0.1])
    np.testing.assert_allclose(jitgrad.jvp(loss, (Y,), (t,))[1], jitgrad.jvp(plain_loss, (Y,), (t,))[1],
                               rtol=1e-13)


def test_checkpoint_gradient_vs_finite_differences_and_second_order():
    f = lambda x: np.sum(jitgrad.checkpoint(block)(x))
    for x in (0.3, -1.2):
        g = jitgrad.grad(f)(x)
        assert np.isclose(g, finite_difference(block, x), rtol=1e-8)
        g2 = jitgrad.grad(jitgrad.grad(f))(x)
        assert np.isclose(g2, jitgrad.grad(jitgrad.grad(block))(x), rtol=1e-13)
        assert np.isclose(g2, finite_difference(jitgrad.grad(block), x), rtol=1e-7)
        g3 = jitgrad.grad(jitgrad.grad(jitgrad.grad(f)))(x)
        assert np.isclose(g3, jitgrad.grad(jitgrad.grad(jitgrad.grad(block)))(x), rtol=1e-12)


def test_checkpoint_with_multiple_inputs_and_outputs():
    def region(x, y):
        return x * np.tanh(y), np.sin(x) + y ** 2

    def loss(region_fn, x, y):
        a, b = region_fn(x, y)
        return np.sum(a * b + a)

    plain = jitgrad.grad(lambda x, y: loss(region, x, y), argnums=(0, 1))(X, Y)
    ck = jitgrad.grad(lambda x, y: loss(jitgrad.checkpoint(region), x, y), argnums=(0, 1))(X, Y)
    for p, c in zip(plain, ck, strict=True):
        np.testing.assert_allclose(c, p, rtol=1e-13)
    # closed form: a = x tanh y, b = sin x + y^2; L = sum(a b + a)
    a, b = X * np.tanh(Y), np.sin(X) + Y ** 2
    np.testing.assert_allclose(ck[0], np.tanh(Y) * (b + 1.0) + a * np.cos(X), rtol=1e-13)
    np.testing.assert_allclose(ck[1], X * (1.0 - np.tanh(Y) ** 2) * (b + 1.0) + a * 2.0 * Y, rtol=1e-13)
    out = jitgrad.jit(jitgrad.checkpoint(region))(X, Y)
    assert isinstance(out, tuple) and len(out) == 2
    np.testing.assert_allclose(out[0], a, rtol=1e-15)
    np.testing.assert_allclose(out[1], b, rtol=1e-15)


def test_custom_jvp_inside_a_checkpoint_region_keeps_its_rule():
    f = lambda x: np.sum(jitgrad.checkpoint(softplus)(x))
    np.testing.assert_allclose(jitgrad.grad(f)(X), 2.0 * logistic(X), rtol=1e-14)
    np.testing.assert_allclose(jitgrad.jvp(f, (X,), (Y,))[1], np.sum(2.0 * logistic(X) * Y), rtol=1e-14)


def test_custom_vjp_inside_a_checkpoint_region_keeps_its_rule():
    clip = jitgrad.ClipGradient()
    f = lambda x: np.sum(5.0 * jitgrad.checkpoint(lambda y: jitgrad.custom_op(clip, [y]))(x))
    np.testing.assert_array_equal(jitgrad.grad(f)(X), np.ones(4))


def test_checkpoint_of_a_closure_over_a_traced_value():
    def loss(w):
        layer = jitgrad.checkpoint(lambda h: np.tanh(h * w))    # w is traced: closed over
        return np.sum(layer(layer(X)))
    h1 = np.tanh(X * 0.7)
    expected = np.sum((1 - np.tanh(h1 * 0.7) ** 2) * (h1 + 0.7 * (1 - h1 ** 2) * X))
    assert np.isclose(jitgrad.grad(loss)(0.7), expected, rtol=1e-13)


def test_checkpoint_region_is_visible_in_the_ir_until_inlined():
    lowered = jitgrad.grad(checkpointed_loss).lower(Y)
    assert "checkpoint(" in lowered.as_text("traced")
    assert "checkpoint(" in lowered.as_text("autodiff")
    assert "checkpoint(" in lowered.as_text("dce")          # kept through CSE: recomputation stays
    assert "checkpoint(" not in lowered.as_text("inline-checkpoints")
    jvp_text = jitgrad.jit(lambda x, t: jitgrad.jvp(checkpointed_loss, (x,), (t,))).lower(Y, Y).as_text("traced")
    assert "checkpoint_jvp(" in jvp_text
    assert "checkpoint(" not in jitgrad.grad(plain_loss).lower(Y).as_text("autodiff")


# --------------------------------------------------------------------------- NaN-safety of np.where

NAN_SAFE_CASES = {
    # name: (function, derivative where the branch is taken, derivative elsewhere)
    "sqrt": (lambda x: np.where(x > 0, np.sqrt(x), 0.0), lambda x: 0.5 / np.sqrt(x), lambda x: 0.0 * x),
    "log": (lambda x: np.where(x > 0, np.log(x), 0.0), lambda x: 1.0 / x, lambda x: 0.0 * x),
    "reciprocal": (lambda x: np.where(x != 0, 1.0 / x, 0.0), lambda x: -1.0 / x ** 2, lambda x: 0.0 * x),
    "shifted_sqrt": (lambda x: np.where(x > 1, np.sqrt(x - 1), 0), lambda x: 0.5 / np.sqrt(x - 1),
                     lambda x: 0.0 * x),
}
NAN_SAFE_POINTS = {
    "sqrt": (np.array([-1.0, 0.0, 0.25, 4.0]), np.array([False, False, True, True])),
    "log": (np.array([-1.0, 0.0, 0.5, 3.0]), np.array([False, False, True, True])),
    "reciprocal": (np.array([-2.0, 0.0, 0.5, 3.0]), np.array([True, False, True, True])),
    "shifted_sqrt": (np.array([0.0, 1.0, 1.25, 5.0]), np.array([False, False, True, True])),
}


@pytest.mark.parametrize("name", sorted(NAN_SAFE_CASES))
def test_gradient_through_where_is_exactly_zero_on_the_untaken_branch(name):
    f, d_taken, d_other = NAN_SAFE_CASES[name]
    x, taken = NAN_SAFE_POINTS[name]
    with np.errstate(all="ignore"):
        expected = np.where(taken, d_taken(x), d_other(x))
    g = jitgrad.grad(lambda x: np.sum(f(x)))(x)
    assert np.all(np.isfinite(g)), g
    np.testing.assert_array_equal(g[~taken], 0.0)
    np.testing.assert_allclose(g, expected, rtol=1e-14)
    # one scalar at the boundary, through the scalar path too
    boundary = float(x[~taken][-1])
    assert jitgrad.grad(f)(boundary) == 0.0
    # forward mode takes the taken branch's tangent
    _, t = jitgrad.jvp(f, (x,), (np.ones(4),))
    np.testing.assert_allclose(t, expected, rtol=1e-14)


@pytest.mark.parametrize("name", sorted(NAN_SAFE_CASES))
def test_second_derivative_through_where_is_finite(name):
    f = NAN_SAFE_CASES[name][0]
    x, taken = NAN_SAFE_POINTS[name]
    d1 = lambda x: jitgrad.grad(lambda x: np.sum(f(x)))(x)
    h = jitgrad.grad(lambda x: np.sum(jitgrad.grad(lambda x: np.sum(f(x)))(x)))(x)
    assert np.all(np.isfinite(h)), h
    np.testing.assert_array_equal(h[~taken], 0.0)
    for xi in x[taken]:     # the taken branch's second derivative, by differences of the first
        assert np.isclose(jitgrad.grad(jitgrad.grad(f))(float(xi)), finite_difference(d1, float(xi)), rtol=1e-6)
    hess = jitgrad.hessian(lambda x: np.sum(f(x)))(x)
    assert np.all(np.isfinite(hess)), hess
    np.testing.assert_allclose(np.diag(hess), h, rtol=1e-13)


def test_genuinely_infinite_derivatives_stay_infinite():
    assert jitgrad.grad(np.sqrt)(0.0) == np.inf
    g = jitgrad.grad(lambda x: np.sum(np.sqrt(x)))(np.array([0.0, 1.0]))
    assert g[0] == np.inf and g[1] == 0.5
    # the branch that is taken keeps its infinity
    assert jitgrad.grad(lambda x: np.where(x >= 0, np.sqrt(x), 0.0))(0.0) == np.inf
    assert jitgrad.jvp(np.sqrt, (0.0,), (1.0,))[1] == np.inf
    assert np.isnan(jitgrad.grad(np.sqrt)(-1.0))
