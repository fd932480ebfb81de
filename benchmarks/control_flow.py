"""RNN gradient through jitgrad.scan: compile time (first call) and run time per call
at T = 50 ... 10,000 steps, next to the same RNN written as a Python for loop (unrolled
when traced; small T only) and JAX's lax.scan when JAX is installed; then reverse mode
through a while_loop with a run-time trip count under each reversal policy.

    python3 benchmarks/control_flow.py [--steps 50,200,1000,10000] [--disk-cache]

The disk cache is off unless --disk-cache is given, so a first call compiles; the
process's first compile also initializes LLVM (the "LLVM start" line times that alone).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import jitgrad

HIDDEN = 16


def rnn_scan(w, xs):
    def step(h, x):
        h = np.tanh(h @ w + x)
        return h, None
    h, _ = jitgrad.scan(step, np.zeros(HIDDEN), xs)
    return (h * h).sum()


def rnn_unrolled(w, xs):
    h = np.zeros(HIDDEN)
    for x in xs:
        h = np.tanh(h @ w + x)
    return (h * h).sum()


def _time(fn, *args, repeat=5):
    start = time.perf_counter()
    fn(*args)
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        runs.append(time.perf_counter() - start)
    return first, min(runs)


def _jax_scan(T, w, xs):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    def loss(w, xs):
        def step(h, x):
            return jnp.tanh(h @ w + x), None
        h, _ = jax.lax.scan(step, jnp.zeros(HIDDEN), xs)
        return (h * h).sum()
    g = jax.jit(jax.grad(loss))
    return _time(lambda w, xs: g(w, xs).block_until_ready(), w, xs)


def while_loss(x, n):
    v, _ = jitgrad.while_loop(lambda s: s[1] < n, lambda s: (np.sin(s[0]) * 0.5 + x * 0.3, s[1] + 1), (x, 0))
    return v.sum()


def reversal_policies(steps) -> None:
    """Gradient of `while_loss` (16-element state) with the stack reversal and with
    revolve under two memory budgets: run time (best of 5) and compiled peak bytes."""
    import warnings
    x = np.linspace(0.1, 1.0, HIDDEN)
    print(f"\n{'T':>6} | {'policy':>22} | {'run':>9} | {'compiled peak':>13}")
    for budget in (None, "20KB", "6KB"):
        g = jitgrad.grad(while_loss, memory_budget=budget)
        for T in steps:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, run = _time(g, x, np.int64(T))
                lowered = g.lower(x, np.int64(T))
            remat = lowered.remat
            policy = "stack" if budget is None else f"revolve, {remat.loops[0].snapshots} snapshots"
            peak = dict(lowered.memory_report())["compiled"]
            print(f"{T:>6} | {policy:>22} | {run * 1e3:>6.2f} ms | {peak:>7} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="50,200,1000,10000")
    parser.add_argument("--unrolled-up-to", type=int, default=200)
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--disk-cache", action="store_true", help="keep compiled code on disk (off: every first "
                        "call compiles)")
    args = parser.parse_args()
    if not args.disk_cache:
        jitgrad.config.config.cache_dir = None
    start = time.perf_counter()
    jitgrad.jit(lambda v: v * 2.0)(np.ones(2))
    print(f"LLVM start and a one-op function: {time.perf_counter() - start:.3f} s")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)
    print(f"{'T':>6} | {'scan compile+1st':>16} | {'scan run':>10} | {'unrolled 1st':>12} | {'unrolled run':>12} | "
          f"{'jax 1st':>8} | {'jax run':>8}")
    for T in (int(t) for t in args.steps.split(",")):
        xs = rng.normal(size=(T, HIDDEN))
        jitgrad.clear_caches()
        first, run = _time(jitgrad.jit(jitgrad.grad(rnn_scan)), w, xs)
        unrolled = ("-", "-")
        if T <= args.unrolled_up_to:
            u_first, u_run = _time(jitgrad.jit(jitgrad.grad(rnn_unrolled)), w, xs, repeat=3)
            unrolled = (f"{u_first:.3f} s", f"{u_run * 1e3:.2f} ms")
        jax_times = None if args.no_jax else _jax_scan(T, w, xs)
        jax_cols = (f"{jax_times[0]:.3f} s", f"{jax_times[1] * 1e3:.2f} ms") if jax_times else ("-", "-")
        print(f"{T:>6} | {first:>14.3f} s | {run * 1e3:>7.2f} ms | {unrolled[0]:>12} | {unrolled[1]:>12} | "
              f"{jax_cols[0]:>8} | {jax_cols[1]:>8}")
    reversal_policies([int(t) for t in args.steps.split(",")])


if __name__ == "__main__":
    main()
