"""jitgrad.mixed_precision and LossScaler, alone and inside SGD/Adam."""
from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import pytest

import jitgrad
from jitgrad.mixed_precision import mixed_precision

BF16 = np.dtype(ml_dtypes.bfloat16)


def mlp_loss(params, x, onehot):
    h = np.tanh(x @ params["W1"] + params["b1"])
    logits = h @ params["W2"] + params["b2"]
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return np.mean(-np.sum(onehot * log_probs, axis=1))


def mlp_data(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    params = {"W1": (rng.standard_normal((20, 16)) / 4).astype(dtype),
              "b1": (0.1 * rng.standard_normal(16)).astype(dtype),
              "W2": (rng.standard_normal((16, 5)) / 4).astype(dtype),
              "b2": (0.1 * rng.standard_normal(5)).astype(dtype)}
    x = rng.standard_normal((32, 20)).astype(dtype)
    onehot = np.eye(5, dtype=dtype)[rng.integers(0, 5, 32)]
    return params, x, onehot


@pytest.mark.parametrize("compute", ["bfloat16", "float16"])
def test_inputs_are_cast_and_results_come_back_in_float32(compute):
    seen = {}

    def probe(params, x, scale):
        seen["dtypes"] = (params["w"].dtype, x.dtype, type(scale))
        return np.sum(params["w"] * x) * scale

    f = mixed_precision(probe, compute=compute)
    w, x = np.linspace(-1, 1, 7, dtype=np.float32), np.linspace(0, 2, 7, dtype=np.float32)
    value = f({"w": w}, x, 0.5)                                     # plain NumPy: the same transformation
    assert seen["dtypes"] == (np.dtype(compute), np.dtype(compute), float) and value.dtype == np.float32
    compiled_value, grads = jitgrad.value_and_grad(f)({"w": w}, x, 0.5)
    assert compiled_value.dtype == np.float32 and grads["w"].dtype == np.float32
    assert compiled_value == value
    # d/dw of sum(w * x) * 0.5 in the narrow dtype: x rounded to it, times 0.5 (exact)
    np.testing.assert_array_equal(grads["w"], x.astype(compute).astype(np.float32) * 0.5)


@pytest.mark.parametrize("compute, rtol", [("bfloat16", 1.5e-2), ("float16", 3e-3)])
def test_mlp_value_and_gradients_match_numpy_and_float32(compute, rtol):
    params, x, onehot = mlp_data()
    f = mixed_precision(mlp_loss, compute=compute)
    value, grads = jitgrad.value_and_grad(f)(params, x, onehot)
    assert value.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    np.testing.assert_allclose(value, f(params, x, onehot), rtol=rtol)         # NumPy running the same code
    value32, grads32 = jitgrad.value_and_grad(mlp_loss)(params, x, onehot)
    np.testing.assert_allclose(value, value32, rtol=rtol)
    for k in grads32:
        scale = np.abs(grads32[k]).max()
        np.testing.assert_allclose(grads[k], grads32[k], rtol=0, atol=rtol * scale, err_msg=k)
        assert not np.array_equal(grads[k], grads32[k])                      # computed in another precision


def test_float64_master_weights_and_the_decorator_form():
    @mixed_precision(compute="float16", params="float64")
    def loss(w):
        return np.sum(w * w)

    value, grad = jitgrad.value_and_grad(loss)(np.array([0.1, 3.0]))
    assert value.dtype == np.float64 and grad.dtype == np.float64
    w16 = np.array([0.1, 3.0]).astype(np.float16)
    assert value == np.float64(np.sum(w16 * w16)) and np.array_equal(grad, 2 * w16.astype(np.float64))
    assert callable(jitgrad.mixed_precision) and jitgrad.mixed_precision(loss) is not None


def test_bad_dtypes_are_refused():
    with pytest.raises(jitgrad.ArgumentError, match="compute must be one of"):
        mixed_precision(mlp_loss, compute="int8")
    with pytest.raises(jitgrad.ArgumentError, match="params must be one of"):
        mixed_precision(mlp_loss, params="float16")
    with pytest.raises(jitgrad.ArgumentError, match="power of two"):
        jitgrad.LossScaler(init_scale=1000.0)


def test_loss_scaling_rescues_float16_gradients_that_underflow():
    def loss(w, x):
        return np.sum(w * x) * 1e-4            # d/dw = 1e-4 * x = 1e-8: below float16's smallest subnormal

    scaler = jitgrad.LossScaler(init_scale=2.0 ** 15)
    w = np.ones(4, np.float32)
    x = np.full(4, 1e-4, np.float32)
    plain = jitgrad.jit_grad(mixed_precision(loss, compute="float16"))(w, x)
    assert np.all(plain == 0)
    scaled = jitgrad.jit_grad(scaler.scaled(mixed_precision(loss, compute="float16")))(w, x, scaler.scale)
    grads, finite = scaler.unscale(scaled)
    assert finite
    np.testing.assert_allclose(grads, np.float16(1e-4).astype(np.float32) * 1e-4, rtol=2e-3)


def test_scaler_grows_backs_off_and_clamps():
    scaler = jitgrad.LossScaler(init_scale=8.0, growth_interval=3, min_scale=2.0, max_scale=16.0)
    for _ in range(3):
        scaler.update(True)
    assert scaler.scale == 16.0 and scaler.good_steps == 0
    for _ in range(6):
        scaler.update(True)
    assert scaler.scale == 16.0                                   # max_scale
    scaler.update(True)
    scaler.update(False)
    assert scaler.scale == 8.0 and scaler.good_steps == 0 and scaler.skipped_steps == 1
    for _ in range(5):
        scaler.update(False)
    assert scaler.scale == 2.0 and scaler.skipped_steps == 6      # min_scale
    grads, finite = scaler.unscale({"a": np.array([2.0, np.nan], np.float32)})
    assert not finite and grads["a"].dtype == np.float32


def test_changing_the_scale_does_not_recompile():
    scaler = jitgrad.LossScaler()
    params, x, onehot = mlp_data()
    step = jitgrad.jit_grad(scaler.scaled(mixed_precision(mlp_loss)))
    saved = jitgrad.config.config.recompile_warning_after
    jitgrad.config.config.recompile_warning_after = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", jitgrad.RecompileWarning)
            first = step(params, x, onehot, 2.0 ** 10)
            second = step(params, x, onehot, 2.0 ** 11)
    finally:
        jitgrad.config.config.recompile_warning_after = saved
    for k in first:
        np.testing.assert_array_equal(second[k], first[k] * 2)     # scaling by 2 is exact


@pytest.mark.parametrize("make", [lambda s: jitgrad.SGD(0.1, momentum=0.9, loss_scaler=s),
                                  lambda s: jitgrad.Adam(0.01, loss_scaler=s)], ids=["SGD", "Adam"])
def test_optimizers_with_a_scaler_take_the_unscaled_steps_bit_for_bit(make):
    """Scaling by a power of two is exact in float32: scaled training gives the same bits."""
    params, x, onehot = mlp_data()
    plain_params = {k: v.copy() for k, v in params.items()}
    scaler = jitgrad.LossScaler(init_scale=2.0 ** 12, growth_interval=2)
    scaled_step, plain_step = jitgrad.jit_grad(scaler.scaled(mlp_loss)), jitgrad.jit_grad(mlp_loss)
    scaled_opt, plain_opt = make(scaler), make(None)
    for _ in range(5):
        grads = scaled_step(params, x, onehot, scaler.scale)
        assert scaled_opt.apply_gradients([(params[k], grads[k]) for k in params]) is True
        grads = plain_step(plain_params, x, onehot)
        plain_opt.apply_gradients([(plain_params[k], grads[k]) for k in plain_params])
    assert scaler.scale == 2.0 ** 14                      # grew twice (growth_interval 2)
    for k in params:
        np.testing.assert_array_equal(params[k], plain_params[k])


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a_step_with_non_finite_gradients_is_skipped(bad):
    scaler = jitgrad.LossScaler(init_scale=2.0 ** 4)
    opt = jitgrad.Adam(0.1, loss_scaler=scaler)
    w, b = np.ones(3, np.float32), np.zeros(2, np.float32)
    assert opt.apply_gradients([(w, np.full(3, 16.0, np.float32)), (b, np.full(2, 16.0, np.float32))])
    after_one = w.copy(), b.copy(), {k: dict(v[1]) for k, v in opt._state.items()}
    assert not opt.apply_gradients([(w, np.array([16.0, bad, 16.0], np.float32)), (b, np.ones(2, np.float32))])
    assert np.array_equal(w, after_one[0]) and np.array_equal(b, after_one[1])       # neither variable moved
    assert all(opt._state[k][1]["t"] == 1 for k in opt._state)                        # nor Adam's step count
    assert scaler.scale == 2.0 ** 3 and scaler.skipped_steps == 1


def test_mixed_precision_training_reaches_float32_accuracy():
    """Margin: 1.5 points of training accuracy (512 samples) after 60 SGD steps."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((5, 20)) * 0.35
    labels = rng.integers(0, 5, 512)
    x = (centers[labels] + rng.standard_normal((512, 20))).astype(np.float32)
    onehot = np.eye(5, dtype=np.float32)[labels]
    accuracy = {}
    for compute in (None, "bfloat16", "float16"):
        params, _, _ = mlp_data()
        scaler = jitgrad.LossScaler(init_scale=2.0 ** 10) if compute else None
        objective = mlp_loss if compute is None else scaler.scaled(mixed_precision(mlp_loss, compute=compute))
        step = jitgrad.jit_grad(objective)
        opt = jitgrad.SGD(0.2, momentum=0.9, loss_scaler=scaler)
        for i in range(60):
            xb, yb = x[i % 8 * 64:(i % 8 + 1) * 64], onehot[i % 8 * 64:(i % 8 + 1) * 64]
            grads = step(params, xb, yb) if compute is None else step(params, xb, yb, scaler.scale)
            opt.apply_gradients([(params[k], grads[k]) for k in params])
        h = np.tanh(x @ params["W1"] + params["b1"])
        accuracy[compute] = np.mean(np.argmax(h @ params["W2"] + params["b2"], axis=1) == labels)
    assert accuracy[None] > 0.8               # overlapping classes: not every model gets 100%
    assert abs(accuracy["bfloat16"] - accuracy[None]) <= 0.015 and abs(accuracy["float16"] - accuracy[None]) <= 0.015
