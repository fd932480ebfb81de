"""Rematerialization under a memory budget: same gradients, less memory, visible decision."""
import numpy as np
import pytest

import jitgrad
from jitgrad.passes.remat import parse_bytes

RNG = np.random.default_rng(11)
L, B, H = 24, 32, 32
W = (RNG.normal(size=(H, H)) / np.sqrt(H)).astype(np.float32)
BS = [(RNG.normal(size=H) * 0.1).astype(np.float32) for _ in range(L)]
X = RNG.normal(size=(B, H)).astype(np.float32)


def deep(w, bs, x):
    h = x
    for b in bs:
        h = np.tanh(h @ w + b)
    return np.sum(h)


def peak(lowered):
    return dict(lowered.memory_report())["compiled"]


def test_budget_gives_same_gradients_with_less_memory():
    plain = jitgrad.grad(deep, argnums=(0, 1))
    baseline = peak(plain.lower(W, BS, X))
    budget = int(baseline * 0.6)
    remat = jitgrad.grad(deep, argnums=(0, 1), memory_budget=budget)
    lowered = remat.lower(W, BS, X)
    report = lowered.remat
    assert report is not None and report.segments > 1 and report.recomputed_ops > 0
    assert report.peak == peak(lowered) < baseline
    assert peak(lowered) <= budget and report.fits
    g_plain, g_remat = plain(W, BS, X), remat(W, BS, X)
    np.testing.assert_allclose(g_remat[0], g_plain[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(g_remat[1], g_plain[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert "checkpoint(" in lowered.as_text("remat")
    assert "recomputed" in str(report) and "saved across segments" in str(report)


def test_generous_budget_changes_nothing():
    lowered = jitgrad.grad(deep, argnums=0, memory_budget="1GB").lower(W, BS, X)
    assert lowered.remat.segments == 1 and lowered.remat.recomputed_ops == 0
    assert "checkpoint(" not in lowered.as_text("remat")


def test_impossible_budget_is_reported_not_hidden():
    lowered = jitgrad.grad(deep, argnums=0, memory_budget=1024).lower(W, BS, X)
    assert not lowered.remat.fits and "BUDGET NOT MET" in str(lowered.remat)
    np.testing.assert_allclose(jitgrad.grad(deep, argnums=0, memory_budget=1024)(W, BS, X),
                               jitgrad.grad(deep, argnums=0)(W, BS, X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("text, value", [("64MB", 64_000_000), ("1.5 KiB", 1536), ("4096", 4096), (123, 123),
                                         ("2gib", 2 * 2 ** 30)])
def test_budget_units(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("bad", ["lots", "-3MB", 0, -1, 1.5, "12 parsecs"])
def test_bad_budgets_are_argument_errors(bad):
    with pytest.raises(jitgrad.ArgumentError):
        parse_bytes(bad)


def test_jit_grad_accepts_a_budget_and_the_cli_shows_the_decision(tmp_path):
    import subprocess
    import sys
    g = jitgrad.jit_grad(deep, argnums=0, memory_budget="10KB", with_value=True)
    value, grad = g(W, BS, X)
    np.testing.assert_allclose(value, deep(W, BS, X), rtol=1e-5)
    (tmp_path / "net.py").write_text(
        "import numpy as np\n\n\ndef net(w, x):\n    h = x\n    for _ in range(6):\n"
        "        h = np.tanh(h @ w)\n    return np.sum(h)\n")
    result = subprocess.run([sys.executable, "-m", "jitgrad.tools.cli", "ir", "net.py:net", "--args", "f32[16,16]",
                             "f32[8,16]", "--memory-budget", "4KB", "--stage", "remat"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "checkpoint(" in result.stdout and "// remat: budget 4000 bytes" in result.stdout
