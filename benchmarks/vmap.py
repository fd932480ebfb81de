"""Per-example gradients of an MLP: jitgrad.vmap(jitgrad.grad(loss)) against a Python
loop of compiled jitgrad.grad calls (one per example), and JAX's
jax.jit(jax.vmap(jax.grad(loss))) when JAX is installed. Reports the first call (trace +
compile) and the best of several runs per batch size.

    python3 benchmarks/vmap.py [--batches 16,128,1024] [--hidden 64]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import jitgrad

FEATURES = 32


def loss(params, x, y):
    w1, b1, w2 = params
    return (np.tanh(x @ w1 + b1) @ w2 - y) ** 2


def _time(fn, repeat=5):
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return first, min(runs)


def _jax(params, xs, ys):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    def jloss(params, x, y):
        w1, b1, w2 = params
        return (jnp.tanh(x @ w1 + b1) @ w2 - y) ** 2
    f = jax.jit(jax.vmap(jax.grad(jloss), in_axes=(None, 0, 0)))
    return _time(lambda: [g.block_until_ready() for g in f(params, xs, ys)])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="16,128,1024")
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((FEATURES, args.hidden)) * 0.2, np.zeros(args.hidden),
              rng.standard_normal(args.hidden) * 0.2]
    grad = jitgrad.grad(loss)
    grad(params, np.zeros(FEATURES), 0.0)          # compile the per-example gradient once
    print(f"MLP {FEATURES}-{args.hidden}-1, float64; times: first call (trace+compile) / best of 5 runs")
    print(f"{'batch':>6} {'vmap(grad) first':>17} {'vmap(grad) run':>15} {'loop of grad':>13} {'speedup':>8} "
          f"{'jax vmap run':>13}")
    for batch in (int(b) for b in args.batches.split(",")):
        xs, ys = rng.standard_normal((batch, FEATURES)), rng.standard_normal(batch)
        per_example = jitgrad.vmap(grad, in_axes=(None, 0, 0))
        first, run = _time(lambda: per_example(params, xs, ys))
        _, looped = _time(lambda: [grad(params, xs[i], ys[i]) for i in range(batch)], repeat=3)
        batched = per_example(params, xs, ys)
        reference = [grad(params, xs[i], ys[i]) for i in range(batch)]
        error = max(float(np.max(np.abs(g[i] - reference[i][k]))) for k, g in enumerate(batched) for i in range(batch))
        assert error < 1e-10, error
        jax_times = _jax(params, xs, ys)
        jax_run = f"{jax_times[1] * 1e3:10.3f} ms" if jax_times else "  (no JAX)"
        print(f"{batch:>6} {first * 1e3:14.1f} ms {run * 1e3:12.3f} ms {looped * 1e3:10.2f} ms {looped / run:7.1f}x "
              f"{jax_run:>13}")


if __name__ == "__main__":
    main()
