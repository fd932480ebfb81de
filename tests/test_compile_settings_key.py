"""The compile settings (`config.device`, `config.fusion`, `config.num_threads`) are part
of every signature's cache key: changing one between calls compiles again, with the
right answer, and code compiled under one setting is never reused under another."""
import warnings

import numpy as np
import pytest

import jitgrad
from jitgrad.config import COMPILE_SETTINGS, config
from jitgrad.errors import CompilationError


@pytest.fixture
def settings():
    saved = config.compile_settings()
    yield
    for name, value in zip(COMPILE_SETTINGS, saved, strict=True):
        setattr(config, name, value)


def _loss(x):
    return np.sum(np.sin(x) * np.exp(-x * x) + np.tanh(x))


def _reference_grad(x):
    return np.cos(x) * np.exp(-x * x) - 2 * x * np.sin(x) * np.exp(-x * x) + 1 - np.tanh(x) ** 2


def _fused_kernels(lowered) -> int:
    return sum(kernel.fused for kernel in lowered.executable.schedule.kernels)


def test_changing_fusion_between_calls_compiles_again(settings):
    g = jitgrad.grad(_loss)
    x = np.linspace(-2.0, 2.0, 1000)
    config.fusion = True
    for _ in range(3):                  # long enough to install the native call path
        np.testing.assert_allclose(g(x), _reference_grad(x), rtol=1e-12, atol=1e-14)
    fused = g.lower(x)
    assert _fused_kernels(fused) > 0
    config.fusion = False
    for _ in range(3):
        np.testing.assert_allclose(g(x), _reference_grad(x), rtol=1e-12, atol=1e-14)
    unfused = g.lower(x)
    assert unfused is not fused and _fused_kernels(unfused) == 0
    config.fusion = True
    assert g.lower(x) is fused          # both stay cached, each under its own key
    np.testing.assert_allclose(g(x), _reference_grad(x), rtol=1e-12, atol=1e-14)


def test_code_compiled_without_fusion_is_not_reused_with_fusion(settings):
    g = jitgrad.grad(_loss)
    x = np.linspace(-1.0, 1.0, 64)
    config.fusion = False
    g(x), g(x), g(x)
    config.fusion = True
    assert _fused_kernels(g.lower(x)) > 0
    np.testing.assert_allclose(g(x), _reference_grad(x), rtol=1e-12, atol=1e-14)


def test_changing_num_threads_compiles_again_with_the_same_bits(settings):
    f = jitgrad.jit(lambda x: np.sum(np.sin(x) ** 2))
    x = np.random.default_rng(0).standard_normal(1 << 20)      # large enough to run in parallel
    config.num_threads = 1
    one = f(x), f(x)
    single = f.lower(x)
    config.num_threads = 2
    two = f(x)
    assert f.lower(x) is not single
    assert one[0] == two                # fixed blocks: bit-identical for any thread count
    np.testing.assert_allclose(two, np.sum(np.sin(x) ** 2), rtol=1e-12)


def test_the_recompile_reason_names_the_setting(settings):
    config.fusion = True
    f = jitgrad.jit(lambda x: x * 2.0)
    x = np.ones(3)
    f(x)
    config.fusion = False
    assert f._why_compile(f._signature((x,))[0]) == "the compile settings changed (config.fusion from True to False)"


def test_an_unknown_device_is_a_clear_error(settings):
    f = jitgrad.jit(lambda x: x + 1.0)
    config.device = "no-such-device"
    with pytest.raises(CompilationError, match="no backend for device 'no-such-device'"):
        f(np.ones(2))
