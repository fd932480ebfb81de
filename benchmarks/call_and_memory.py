"""W4 (call overhead) and W6 (gradient under a memory budget), used by benchmarks/run.py.

W4  grad of sum(x**2) on an 8-element float64 array, NumPy in and out: the whole cost is
    the call path. Timed as loops of many calls (a single call is below the timer's
    resolution), median over samples.
W6  64 layers h = tanh(h @ W + b_i), one shared W (256x256), a bias per layer, batch 256,
    f32, gradient w.r.t. W and every b_i: peak memory (arguments + outputs + planned
    workspace) and time without rematerialization and with memory_budget = 1/4 of that
    peak.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

import jitgrad

W6_LAYERS, W6_WIDTH, W6_BATCH = 64, 256, 256


def per_call(fn, calls: int, samples: int) -> float:
    """Median seconds per call over `samples` loops of `calls` calls."""
    fn()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def bench_w4(results, peers: dict, quick: bool) -> None:
    name = "W4 grad, 8 elements"
    x = np.linspace(-1.0, 1.0, 8)
    g = jitgrad.grad(lambda v: np.sum(v ** 2))
    np.testing.assert_array_equal(g(x), 2 * x)
    calls, samples = (2000, 5) if quick else (20000, 9)
    results.add(name, "numpy (hand-written)", per_call(lambda: 2 * x, calls, samples))
    results.add(name, "jitgrad grad", per_call(lambda: g(x), calls, samples))
    jax = peers.get("jax")
    if jax is not None:
        jg = jax.jit(jax.grad(lambda v: jax.numpy.sum(v ** 2)))
        np.testing.assert_allclose(np.asarray(jg(x)), 2 * x)
        results.add(name, "jax jit(grad)", per_call(lambda: np.asarray(jg(x)), calls // 10, samples))
    else:
        results.add(name, "jax jit(grad)", None, "not installed")
    torch = peers.get("torch")
    if torch is not None:
        def run_torch():
            t = torch.from_numpy(x).requires_grad_(True)
            (t ** 2).sum().backward()
            return t.grad.numpy()
        results.add(name, "torch (eager autograd)", per_call(run_torch, calls // 10, samples))
    else:
        results.add(name, "torch (eager autograd)", None, "not installed")


def deep_net(w, bs, x):
    h = x
    for b in bs:
        h = np.tanh(h @ w + b)
    return np.sum(h)


def deep_net_numpy_grad(w, bs, x):
    hs = [x]
    for b in bs:
        hs.append(np.tanh(hs[-1] @ w + b))
    ct, dw, dbs = np.ones_like(hs[-1]), np.zeros_like(w), []
    for i in reversed(range(len(bs))):
        da = ct * (1 - hs[i + 1] ** 2)
        dbs.append(da.sum(0))
        dw += hs[i].T @ da
        ct = da @ w.T
    return dw, dbs[::-1]


def bench_w6(results, quick: bool) -> None:
    name = "W6 64-layer grad f32"
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(W6_WIDTH, W6_WIDTH)) / np.sqrt(W6_WIDTH)).astype(np.float32)
    bs = [(rng.normal(size=W6_WIDTH) * 0.1).astype(np.float32) for _ in range(W6_LAYERS)]
    x = rng.normal(size=(W6_BATCH, W6_WIDTH)).astype(np.float32)
    ref_dw, ref_dbs = deep_net_numpy_grad(w, bs, x)
    plain = jitgrad.grad(deep_net, argnums=(0, 1))
    peak_plain = dict(plain.lower(w, bs, x).memory_report())["compiled"]
    budget = peak_plain // 4
    remat = jitgrad.grad(deep_net, argnums=(0, 1), memory_budget=budget)
    lowered = remat.lower(w, bs, x)
    for g in (plain, remat):
        dw, dbs = g(w, bs, x)
        np.testing.assert_allclose(dw, ref_dw, rtol=2e-3, atol=2e-3)
    samples = 3 if quick else 9
    t_numpy = per_call(lambda: deep_net_numpy_grad(w, bs, x), 1, samples)
    t_plain = per_call(lambda: plain(w, bs, x), 1, samples)
    t_remat = per_call(lambda: remat(w, bs, x), 1, samples)
    report = lowered.remat
    results.add(name, "numpy (hand-written)", t_numpy)
    results.add(name, "jitgrad grad, no remat", t_plain, f"peak {peak_plain / 2**20:.2f} MiB")
    results.add(name, "jitgrad grad, budget = peak/4", t_remat,
                f"peak {report.peak / 2**20:.2f} MiB, budget {budget / 2**20:.2f} MiB "
                f"({'met' if report.fits else 'NOT met'}), {report.segments} segments, "
                f"time {t_remat / t_plain:.2f}x no-remat")
