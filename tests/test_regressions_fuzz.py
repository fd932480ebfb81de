"""Regression tests for failures the differential fuzzer (tests/fuzz.py) and its users found.

Each test reproduces one failure in its smallest form and asserts the right outcome
against NumPy (or against the other differentiation mode), so the bug cannot return
silently.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from ml_dtypes import bfloat16

import jitgrad
from jitgrad.config import config
from jitgrad.backends.cpu.codegen import PARALLEL_MIN_WORK


@pytest.fixture
def fusion_off():
    saved = config.fusion
    config.fusion = False
    try:
        yield
    finally:
        config.fusion = saved


# --------------------------------------------------------------------------- LLVM basic blocks

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_long_program_reduction_over_size_one_axis_compiles(dtype):
    """A program long enough to check for Ctrl-C between kernels (the interrupt watch is
    read at the top of the entry block) used to leave the main builder short of the end of
    that block: the check's branch landed mid-block and LLVM rejected the IR."""
    n = 1052676
    assert n >= PARALLEL_MIN_WORK
    x = np.random.default_rng(0).standard_normal(n).astype(dtype)

    def f(x):
        return np.mean(np.reshape(x, (n, 1)).max(axis=-1, keepdims=True))

    got = jitgrad.jit(f)(x)
    want = f(x)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps)


def test_unfused_large_matrix_product_compiles(fusion_off):
    """With fusion off, a matrix product of more than PARALLEL_MIN_WORK multiply-adds after
    an elementwise kernel makes the function watch for Ctrl-C between kernels."""
    a = np.random.default_rng(1).standard_normal((1026, 1026))
    assert a.shape[0] ** 3 >= PARALLEL_MIN_WORK
    got = jitgrad.jit(lambda a: (a * 2).T @ a)(a)
    np.testing.assert_allclose(got, (a * 2).T @ a, rtol=1e-12, atol=1e-9)


# --------------------------------------------------------------------------- checkpoints and non-float values

def _masked_chain(x):
    for _ in range(4):
        x = np.where(x > 0, x, 0) * np.tanh(x) + (x > 0.1).astype(np.int32) * x
    return np.sum(x)


def test_bool_and_int_values_cross_memory_budget_segments():
    """Cut into checkpoint segments, a mask (bool) or an integer intermediate may be an
    input or output of a segment: it has no tangent, and the gradient is unchanged."""
    x = np.random.default_rng(2).standard_normal(100_000)
    reference = jitgrad.grad(_masked_chain)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jitgrad.MemoryBudgetWarning)   # the budget is below any schedule
        budgeted = jitgrad.grad(_masked_chain, memory_budget="500KB")(x)
    np.testing.assert_array_equal(budgeted, reference)
    assert np.any(reference != 0)


def test_hessian_through_budgeted_segments_with_masks():
    """Forward over reverse through checkpoint segments that pass masks along."""
    x = np.random.default_rng(3).standard_normal(64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jitgrad.MemoryBudgetWarning)
        budgeted = jitgrad.jacfwd(jitgrad.grad(_masked_chain, memory_budget="1KB"))(x)
    np.testing.assert_array_equal(budgeted, jitgrad.jacfwd(jitgrad.grad(_masked_chain))(x))


def test_checkpoint_with_bool_input_and_output():
    """A user checkpoint taking and returning masks: reverse mode, forward mode and
    jacfwd agree, and the masked-out elements have gradient exactly 0."""
    @jitgrad.checkpoint
    def segment(x, mask):
        return np.where(mask, x, 0.0) * np.tanh(x), x > 0.5

    def f(x):
        y, big = segment(x, x > 0)
        return np.sum(np.where(big, y, 2 * y))

    x = np.linspace(-1, 1, 7)
    d = np.tanh(x) + x * (1 - np.tanh(x) ** 2)
    want = np.where(x > 0, np.where(x > 0.5, d, 2 * d), 0.0)
    np.testing.assert_allclose(jitgrad.grad(f)(x), want, rtol=1e-12)
    np.testing.assert_allclose(jitgrad.jacfwd(f)(x), want, rtol=1e-12)
    _, tangent = jitgrad.jvp(f, (x,), (np.ones_like(x),))
    np.testing.assert_allclose(tangent, want.sum(), rtol=1e-12)


# --------------------------------------------------------------------------- bfloat16 is a float

def _bf16_reference_derivative(x):
    """d/dx (tanh(x) x) in float64, rounded to bfloat16."""
    x = x.astype(np.float64)
    return (np.tanh(x) + x * (1 - np.tanh(x) ** 2)).astype(bfloat16)


def test_is_float_dtype_counts_bfloat16():
    from jitgrad.ir import is_float_dtype
    assert np.dtype(bfloat16).kind == "V"       # why `kind == "f"` is not enough
    assert all(is_float_dtype(d) for d in (bfloat16, np.float16, np.float32, np.float64))
    assert not any(is_float_dtype(d) for d in (np.int8, np.uint64, np.bool_, np.complex128, np.dtype("V2")))


@pytest.mark.parametrize("transform", ["jacfwd", "jacrev"])
def test_jacobians_of_bfloat16_inputs(transform):
    x = np.array([0.5, 1.0, 2.0], bfloat16)
    jac = getattr(jitgrad, transform)(lambda x: np.tanh(x) * x)(x)
    assert jac.dtype == bfloat16
    want = np.diag(_bf16_reference_derivative(x).astype(np.float64))
    np.testing.assert_allclose(jac.astype(np.float64), want, rtol=2 ** -6)
    assert np.all(jac.astype(np.float64)[~np.eye(3, dtype=bool)] == 0)


def test_gradient_tape_and_dual_tensor_accept_bfloat16():
    from jitgrad.eager.dual import DualTensor
    from jitgrad.eager.tape import GradientTape
    x = np.array([0.5, 1.0, 2.0], bfloat16)
    want = _bf16_reference_derivative(x).astype(np.float64)
    with GradientTape() as tape:
        t = tape.watch(x)
        y = np.sum(np.tanh(t) * t)
    g = tape.gradient(y, t)
    assert g.dtype == bfloat16
    np.testing.assert_allclose(g.astype(np.float64), want, rtol=2 ** -6)
    d = DualTensor(x, np.ones_like(x))
    out = np.tanh(d) * d
    assert out.tangent.dtype == bfloat16
    np.testing.assert_allclose(out.tangent.astype(np.float64), want, rtol=2 ** -6)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_updates_bfloat16_variables(momentum):
    from jitgrad.optimizers import SGD
    w = np.array([0.5, 1.0, 2.0], bfloat16)
    g = np.array([1.0, 2.0, 3.0])
    expected, velocity = w.astype(np.float64), np.zeros(3)
    opt = SGD(0.5, momentum=momentum)
    for _ in range(2):
        opt.apply_gradients([(w, g)])
        velocity = momentum * velocity + g
        expected = expected - 0.5 * velocity
    assert w.dtype == bfloat16
    np.testing.assert_allclose(w.astype(np.float64), expected, rtol=2 ** -7, atol=2 ** -7)


# --------------------------------------------------------------------------- large constants

def test_large_bfloat16_constant_compiles():
    """A constant too large for the LLVM IR is kept outside it and named by the SHA-256 of
    its bytes; bfloat16 arrays have no buffer-protocol format, and hashing their buffer
    raised ValueError (seed 20261201 program 1901: np.polyadd of bfloat16 slices)."""
    table = (np.arange(100_000) % 7).astype(bfloat16)
    x = np.linspace(-1, 1, table.size).astype(bfloat16)
    got = jitgrad.jit(lambda x: x + table)(x)
    assert got.dtype == bfloat16
    assert np.array_equal(got.view(np.uint16), (x + table).view(np.uint16))


# --------------------------------------------------------------------------- rounding functions

@pytest.mark.parametrize("rounding", [np.floor, np.ceil, np.trunc, np.rint, np.round, np.fix])
def test_rounding_contributes_exactly_zero_to_a_gradient(rounding):
    """A rounding function's derivative is zero; built from x - fmod(x, 1), its cotangent
    was added and subtracted again, so a large cotangent through it (x^k with k the rounded
    value) cost the digits of the small one flowing beside it (seed 20261201 program 2755:
    a gradient 1e-4 off), and an infinite one made NaN."""
    x = np.array([-1.8322935091573826, 0.3, 2.5, -0.5, 7.9, 12.2])

    def f(x):
        k = rounding(-x)
        return np.sum(x * 1.25) + np.sum(np.power(np.sum(k) + 40.0, k) * 1e-3)

    g = jitgrad.grad(f)(x)
    assert np.array_equal(g, np.full_like(x, 1.25))
    huge = jitgrad.grad(lambda x: np.sum(x) + np.sum(np.exp(rounding(x) * 1e3)))(x)
    assert np.array_equal(huge, np.ones_like(x))


# --------------------------------------------------------------------------- empty convolutions

def test_convolution_of_an_empty_batch_in_the_interpreter():
    """The reference interpreter's convolution reshaped its result with -1, which NumPy
    cannot resolve for an empty batch (seed 20261202 program 16: a sliding_window_view +
    tensordot idiom over a (2, 0, 3) array, recognized as a convolution)."""
    from jitgrad.primitives.convolution import conv_general_dilated_p
    x = np.zeros((0, 3, 5, 5))
    w = np.ones((4, 3, 3, 3))
    out = conv_general_dilated_p.impl(x, w, window_strides=(1, 1), padding=((1, 1), (1, 1)),
                                      lhs_dilation=(1, 1), rhs_dilation=(1, 1),
                                      dimension_numbers=((0, 1, 2, 3), (0, 1, 2, 3), (0, 1, 2, 3)),
                                      feature_group_count=1)
    assert out.shape == (0, 4, 5, 5)


# --------------------------------------------------------------------------- isin across signedness

@pytest.mark.parametrize("signed, unsigned", [(np.int64, np.uint64), (np.int32, np.uint64), (np.int8, np.uint64)])
def test_isin_of_signed_and_unsigned_64_bit_integers_is_exact(signed, unsigned):
    """int64 and uint64 have float64 as their common dtype, where 2**60 + 1 rounds to 2**60:
    isin found elements NumPy does not (NumPy compares them exactly)."""
    big = np.iinfo(signed).max
    a = np.array([big, big - 1, 5, -3, 0], signed)
    t = np.array([big - 1 if big < 2**53 else big ^ 1, 5, 2**64 - 3, 0], unsigned)
    assert np.array_equal(jitgrad.jit(lambda a, t: np.isin(a, t))(a, t), np.isin(a, t))
    assert np.array_equal(jitgrad.jit(lambda a, t: np.isin(t, a, invert=True))(a, t), np.isin(t, a, invert=True))
    with pytest.raises(jitgrad.JitgradError, match="exactly"):
        jitgrad.jit(lambda a: np.isin(a, np.arange(100, dtype=unsigned)))(a)


def test_a_row_sum_written_as_a_reshape_stays_a_reduction():
    """`v.reshape(500, -1).sum(axis=1)` has the form of reshape-then-sum pooling; as a
    window kernel its 2,000-element windows were added one after another, less accurate
    than NumPy's pairwise sums in float32."""
    from jitgrad.passes.nn_idioms import MAX_POOL_WINDOW
    v = np.random.default_rng(3).random(500 * 2000).astype(np.float32)
    f = jitgrad.jit(lambda v: np.sum(v.reshape(500, -1), axis=1))
    assert "reduce_window" not in f.lower(v).as_text("kernels")
    exact = np.sum(v.reshape(500, -1).astype(np.float64), axis=1)
    assert np.all(np.abs(f(v) - exact) <= np.abs(np.sum(v.reshape(500, -1), axis=1) - exact) + 64 * np.spacing(np.float32(1000)))
    small = jitgrad.jit(lambda v: v.reshape(-1, MAX_POOL_WINDOW).sum(axis=1))
    assert "reduce_window" in small.lower(v[:8000]).as_text("kernels")


# --------------------------------------------------------------------------- per-function devices

def test_kernel_choices_follow_the_device_of_jit_not_config():
    """jit(f, device=...) overrides config.device for that function; the nn ops and the
    pooling recognizer asked config.device whether the device has a window kernel, and
    emitted reduce_window_max for a device without one (an error at compile time)."""
    from jitgrad import nn
    x = np.random.default_rng(0).random((2, 3, 8, 8))
    w = np.random.default_rng(1).random((4, 3, 3, 3))
    pooled = jitgrad.jit(lambda x: x.reshape(2, 3, 4, 2, 4, 2).max(axis=(3, 5)), device="cuda-emulator")
    assert np.array_equal(pooled(x), x.reshape(2, 3, 4, 2, 4, 2).max(axis=(3, 5)))
    conv = jitgrad.jit(lambda x, w: nn.max_pool2d(nn.conv2d(x, w, padding=1), 2), device="cuda-emulator")
    on_cpu = jitgrad.jit(lambda x, w: nn.max_pool2d(nn.conv2d(x, w, padding=1), 2))
    np.testing.assert_allclose(conv(x, w), on_cpu(x, w), rtol=1e-13)
    assert "reduce_window_max" in on_cpu.lower(x, w).as_text("kernels")


# --------------------------------------------------------------------------- counts of narrow means

@pytest.mark.parametrize("fn", [np.var, np.std, np.mean, lambda x: np.var(x, axis=-1), lambda x: np.std(x, axis=-1, ddof=1)])
def test_variance_of_more_float16_values_than_float16_can_count(fn):
    """np.var divided the sum of squares by the count as a float16 constant: 70,000 is
    beyond float16's largest value, so the variance was 0 (and inf / inf = NaN where the
    sum overflowed; seed 20261204 program 260). NumPy divides by the integer count."""
    x = (np.random.default_rng(0).random((2, 70_000)) * 0.5).astype(np.float16)
    got, want = jitgrad.jit(fn)(x), fn(x)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=2e-3)
    overflowing = np.tile(np.array([-2.0, 2.0], np.float16), 35_000)      # squares sum past float16's range
    assert np.isposinf(np.var(overflowing))
    assert np.isposinf(jitgrad.jit(np.var)(overflowing))
