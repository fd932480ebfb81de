"""An unmet memory budget is said: a MemoryBudgetWarning naming the budget and the peak
reached, or with strict=True a MemoryBudgetError, on grad, value_and_grad and jit_grad."""
import re
import warnings

import numpy as np
import pytest

import jitgrad

RNG = np.random.default_rng(5)
W = (RNG.normal(size=(16, 16)) / 4).astype(np.float32)
X = RNG.normal(size=(8, 16)).astype(np.float32)


def deep(w, x):
    h = x
    for _ in range(8):
        h = np.tanh(h @ w)
    return np.sum(h)


def _unflatten(transform, result):
    """The gradient out of each transform's result layout."""
    return result[1] if transform != "grad" else result


def _make(transform, budget, strict=False):
    if transform == "grad":
        return jitgrad.grad(deep, memory_budget=budget, strict=strict)
    if transform == "value_and_grad":
        return jitgrad.value_and_grad(deep, memory_budget=budget, strict=strict)
    return jitgrad.jit_grad(deep, with_value=True, memory_budget=budget, strict=strict)


TRANSFORMS = ["grad", "value_and_grad", "jit_grad"]


def _peaks():
    """(peak without remat, smallest peak any segmentation reaches) of deep's gradient."""
    report = jitgrad.grad(deep, memory_budget=1).lower(W, X).remat
    return report.peak_without, report.peak


@pytest.fixture(scope="module")
def peaks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jitgrad.MemoryBudgetWarning)
        return _peaks()


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_a_budget_that_cannot_be_met_warns_with_budget_and_peak(transform):
    reference = jitgrad.grad(deep)(W, X)
    budget = 1024
    compiled = _make(transform, budget)
    with pytest.warns(jitgrad.MemoryBudgetWarning) as caught:
        result = compiled(W, X)
        report = compiled.lower(W, X).remat
    assert not report.fits and report.peak > budget
    message = str(caught[0].message)
    assert f"{budget} bytes" in message and f"{report.peak} bytes" in message
    assert caught[0].filename.endswith("test_memory_budget_promise.py")        # the user's line
    np.testing.assert_allclose(_unflatten(transform, result), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_strict_raises_on_an_unmet_budget(transform):
    with pytest.raises(jitgrad.MemoryBudgetError, match=re.escape("1024 bytes")) as info:
        _make(transform, "1KiB", strict=True)(W, X)
    assert isinstance(info.value, jitgrad.JitgradError)
    assert "test_memory_budget_promise.py" in str(info.value)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_a_budget_that_can_be_met_is_silent_even_when_strict(transform, peaks):
    peak_without, smallest = peaks
    assert smallest < peak_without
    budget = (smallest + peak_without) // 2        # met only by recomputing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled = _make(transform, budget, strict=True)
        result = compiled(W, X)
    report = compiled.lower(W, X).remat
    assert report.fits and report.peak <= budget and report.segments > 1
    np.testing.assert_allclose(_unflatten(transform, result), jitgrad.grad(deep)(W, X), rtol=1e-5, atol=1e-6)


def test_strict_without_a_budget_is_an_argument_error():
    with pytest.raises(jitgrad.ArgumentError, match="memory_budget"):
        jitgrad.grad(deep, strict=True)
