"""Regression tests for the gradient disagreements the differential fuzzer (tests/fuzz.py)
found: forward and reverse mode checked against each other, against central differences
in float64, and the fuzzer's own gradient comparison replayed on the program it failed."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import jitgrad
from jitgrad.errors import ArgumentError
from tests import fuzz


def _gradient_mismatch(program, seed: int = 0):
    """The fuzzer's JVP/VJP (and finite-difference) comparison on `program`: the Mismatch
    it reports, or None."""
    ref = fuzz.numpy_reference(program, np.random.default_rng(seed))
    outcome = fuzz.Outcome()
    try:
        fuzz.check_gradients(program, program.function(), ref, np.random.default_rng(seed), outcome)
    except fuzz.Mismatch as mismatch:
        return mismatch
    assert outcome.checks["jvp-vjp"] == 1
    return None


def _inner_products(fun, primal, rng):
    """(<t, vjp(c)>, <jvp(t), c>, jvp(t), t, c) along random t and c."""
    tangent = rng.standard_normal(primal.shape)
    out, jvp_out = jitgrad.jvp(fun, (primal,), (tangent,))
    cotangent = rng.standard_normal(np.shape(out)).astype(np.asarray(out).dtype)
    (vjp_out,) = jitgrad.vjp(fun, primal)[1](cotangent)
    return float(np.sum(tangent * vjp_out)), float(np.sum(jvp_out * cotangent)), jvp_out, tangent, cotangent


# --------------------------------------------------------------------------- linalg on a singular matrix

COLUMN = np.array([[0.4855390192123984], [0.1595910049618589], [0.6337704667065778], [-1.572575841951725]])


def test_fuzzer_spd_matrix_of_a_column_is_well_conditioned():
    """M M^T + m I for an m x 1 operand M: the identity must be m x m. One of M's other
    side (1 x 1) broadcast to a matrix of ones, M M^T + 1 1^T, of rank 2: solving with it
    amplified rounding by 10^16, and forward and reverse mode disagreed in every digit."""
    spd = eval(fuzz.SPD.format("m"), {"np": np, "m": COLUMN})
    assert spd.shape == (4, 4)
    assert np.linalg.eigvalsh(spd).min() >= 4 - 1e-12
    assert np.linalg.cond(spd) < 10


def test_solve_with_the_fuzzers_spd_matrix_agrees_with_central_differences():
    def solve(m):
        return np.linalg.solve(eval(fuzz.SPD.format("m"), {"np": np, "m": m}), m)

    lhs, rhs, jvp_out, tangent, _ = _inner_products(solve, COLUMN, np.random.default_rng(0))
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + abs(rhs))
    h = 1e-6
    central = (solve(COLUMN + h * tangent) - solve(COLUMN - h * tangent)) / (2 * h)
    np.testing.assert_allclose(jvp_out, central, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(jitgrad.jit(solve)(COLUMN), solve(COLUMN), rtol=1e-13)


def test_fuzzer_solve_of_a_column_has_consistent_gradients():
    """Program 3467 of seed 20261208 (of an older operation table), shrunk: solve(SPD(m), m)."""
    for seed in range(4):
        assert _gradient_mismatch(fuzz._case("solve of a column", [("solve", (0,))], [COLUMN]), seed) is None


# --------------------------------------------------------------------------- bfloat16 rounding inside a statement

X0 = np.array([[[-0.4056984123063613, 2.6112739837217243, -4.011108306996218]],
               [[-0.18418036403677368, -2.3663387442552537, -7.142548053394963]],
               [[-1.9210574417517494, -0.7851158665475277, -2.0552988952327906]]])


def _bfloat16_product(x):
    v = np.take(x, [0, -1, 0], axis=1)
    return v[:1].astype("bfloat16") @ v.astype("bfloat16")


def test_bfloat16_matmul_derivatives_are_the_rounded_linear_map():
    """astype('bfloat16') passes tangents and cotangents through rounded to bfloat16 (as
    JAX's convert_element_type does), and the product's rules run in bfloat16: forward and
    reverse mode are each the derivative with the casts taken as the identity, within
    bfloat16's rounding, and so agree with each other only to that precision."""
    bf16 = ml_dtypes.bfloat16
    v = np.take(X0, [0, -1, 0], axis=1)
    a, b = v[:1].astype(bf16).astype(np.float64), v.astype(bf16).astype(np.float64)

    def linear(t):
        d = np.take(t, [0, -1, 0], axis=1)
        return d[:1] @ b + a @ d
    jacobian = np.stack([linear(e.reshape(X0.shape)).ravel() for e in np.eye(X0.size)], axis=1)
    lhs, rhs, jvp_out, tangent, cotangent = _inner_products(_bfloat16_product, X0, np.random.default_rng(1))
    (vjp_out,) = jitgrad.vjp(_bfloat16_product, X0)[1](cotangent)
    exact_jvp = (jacobian @ tangent.ravel()).reshape(jvp_out.shape)
    exact_vjp = (jacobian.T @ cotangent.astype(np.float64).ravel()).reshape(X0.shape)
    eps = float(ml_dtypes.finfo(bf16).eps)
    assert np.max(np.abs(jvp_out - exact_jvp)) <= 2 * eps * np.max(np.abs(exact_jvp))
    assert np.max(np.abs(vjp_out - exact_vjp)) <= 2 * eps * np.max(np.abs(exact_vjp))
    assert abs(lhs - rhs) <= 4 * eps * (abs(lhs) + abs(rhs))


def test_float32_matmul_derivatives_agree_to_float32_precision():
    """The same product without the bfloat16 casts: the two modes agree to float32's precision."""
    def product(x):
        v = np.take(x, [0, -1, 0], axis=1)
        return v[:1].astype(np.float32) @ v.astype(np.float32)
    lhs, rhs, *_ = _inner_products(product, X0, np.random.default_rng(1))
    assert abs(lhs - rhs) <= 1e-6 * (abs(lhs) + abs(rhs))


def _bfloat16_program():
    """Program 4722 of seed 20261208 (of an older operation table), shrunk: a float64
    result of a product of bfloat16 operands."""
    return fuzz._case("bfloat16 product", [("matmul_bfloat16", (0, 0)), ("logaddexp", (0, 1))], [X0[:, 0, :]])


def test_fuzzer_bfloat16_product_has_consistent_gradients():
    for seed in range(4):
        assert _gradient_mismatch(_bfloat16_program(), seed) is None


def test_fuzzer_still_catches_a_wrong_gradient_through_a_bfloat16_statement(monkeypatch):
    """The bfloat16 allowance (16 eps of the scale, 1/8) still reports reverse mode 1.5
    times too large on the same program."""
    right = jitgrad.vjp

    def wrong(fun, *primals):
        out, vjp_fn = right(fun, *primals)
        return out, lambda ct: tuple(1.5 * g for g in vjp_fn(ct))
    monkeypatch.setattr(jitgrad, "vjp", wrong)
    mismatch = _gradient_mismatch(_bfloat16_program())
    assert mismatch is not None and mismatch.kind == "jvp-vjp"


# --------------------------------------------------------------------------- tangent and cotangent dtypes

def test_a_cotangent_of_another_dtype_than_its_output_is_refused():
    """A float64 cotangent for the float32 product of bfloat16 operands was read as float32
    data (gradients of 10^27); other mismatches crashed in code generation."""
    with pytest.raises(ArgumentError, match=r"cotangent 0 has dtype float64 but the output .* f32\[3,3,3\]"):
        jitgrad.vjp(_bfloat16_product, X0)[1](np.ones((3, 3, 3)))
    with pytest.raises(ArgumentError, match=r"cotangent 0 has dtype float32 but the output .* f64\[2\]"):
        jitgrad.vjp(np.sin, np.ones(2))[1](np.ones(2, np.float32))
    with pytest.raises(ArgumentError, match=r"cotangent 0 has dtype int64 .*astype\(np.float64\)"):
        jitgrad.vjp(np.sin, np.ones(2))[1](np.ones(2, np.int64))


def test_a_tangent_of_another_dtype_than_its_primal_is_refused():
    with pytest.raises(ArgumentError, match=r"tangent 1 has dtype float64 but the primal .* f32\[2\]"):
        jitgrad.jvp(lambda a, b: a * b, (np.ones(2), np.ones(2, np.float32)), (np.ones(2), np.ones(2)))
    with pytest.raises(ArgumentError, match=r"tangent 0 has dtype complex128"):
        jitgrad.jvp(np.sin, (np.ones(2),), (np.ones(2, np.complex128),))


def test_python_scalar_tangents_and_cotangents_take_their_primals_dtype():
    """Python scalars are weak (NEP 50): a float or int cotangent of a float32 output is a
    float32 cotangent, as a float tangent of a float32 primal is a float32 tangent."""
    x = np.array([0.25, -1.5, 2.0], np.float32)
    (by_float,) = jitgrad.vjp(lambda v: np.sum(np.sin(v)), x)[1](1.0)
    (by_int,) = jitgrad.vjp(lambda v: np.sum(np.sin(v)), x)[1](2)
    assert by_float.dtype == by_int.dtype == np.float32
    np.testing.assert_allclose(by_float, np.cos(x), rtol=1e-6)
    np.testing.assert_allclose(by_int, 2 * np.cos(x), rtol=1e-6)
    _, tangent = jitgrad.jvp(lambda v: np.sin(v) * 3, (np.float32(0.5),), (2.0,))
    assert np.asarray(tangent).dtype == np.float32
    assert abs(float(tangent) - 6 * np.cos(0.5)) <= 1e-6


def test_integer_positions_accept_any_tangent_and_cotangent():
    """Integer primals and outputs have no derivative: what stands there is not read."""
    _, tangent = jitgrad.jvp(lambda k, v: v * k, (np.arange(3), np.ones(3)), (np.ones(3), np.ones(3)))
    np.testing.assert_array_equal(tangent, np.arange(3.0))
    (g,) = jitgrad.vjp(lambda v: (v > 0).astype(np.int64), np.ones(2))[1](np.ones(2))
    np.testing.assert_array_equal(g, np.zeros(2))


def test_fuzzer_compares_gradients_of_float32_and_bfloat16_outputs_too(monkeypatch):
    """Outputs narrower than float64 are in the JVP/VJP comparison, with cotangents in
    their own dtype; a reverse mode 1.5 times too large is reported there."""
    x = np.array([0.3, -0.7, 1.1])
    programs = [fuzz._case("narrow output", [("sin", (0,)), ("astype", (1,), {"dtype": dtype})], [x])
                for dtype in ("np.float32", "'bfloat16'")]
    assert [_gradient_mismatch(p) for p in programs] == [None, None]
    right = jitgrad.vjp

    def wrong(fun, *primals):
        out, vjp_fn = right(fun, *primals)
        return out, lambda ct: tuple(1.5 * g for g in vjp_fn(ct))
    monkeypatch.setattr(jitgrad, "vjp", wrong)
    assert [getattr(_gradient_mismatch(p), "kind", None) for p in programs] == ["jvp-vjp", "jvp-vjp"]
