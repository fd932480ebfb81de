"""Zero cost when not recording: the W2 MLP forward pass (784 -> 256 -> 10 tanh MLP with
softmax cross-entropy, float32, batch 256, as in run.py) run three ways:

  plain     NumPy on plain arrays, in a process that never imports jitgrad
  imported  the same, in a process that imported jitgrad and loaded its tracer, eager
            layers and LLVM backend (any global hook would slow NumPy here)
  tracked   the parameters as TrackedTensors of a tape that is not recording (inside
            `tape.stop_recording()`), in the `imported` process

Times are CPU time (time.process_time) of `--inner` forward passes, so that other work
on a loaded machine counts less; each round starts a `plain` and an `imported` process
in alternating order (ABBA), and the `imported` process times plain arrays and tracked
tensors alternately. The headline ratios are medians over rounds of per-round ratios.

Run:  OPENBLAS_NUM_THREADS=1 python benchmarks/zero_cost.py [--rounds N] [--inner N]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

BATCH, D_IN, D_HIDDEN, D_OUT = 256, 784, 256, 10


def mlp_loss(W1, b1, W2, b2, x, y):
    """The W2 loss (the same code as benchmarks/run.py's)."""
    h = np.tanh(np.dot(x, W1) + b1)
    logits = np.dot(h, W2) + b2
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return np.mean(-np.sum(y * log_probs, axis=1))


def mlp_data(dtype=np.float32):
    rng = np.random.default_rng(1)
    W1 = (rng.standard_normal((D_IN, D_HIDDEN)) / np.sqrt(D_IN)).astype(dtype)
    b1 = (0.1 * rng.standard_normal(D_HIDDEN)).astype(dtype)
    W2 = (rng.standard_normal((D_HIDDEN, D_OUT)) / np.sqrt(D_HIDDEN)).astype(dtype)
    b2 = (0.1 * rng.standard_normal(D_OUT)).astype(dtype)
    x = rng.standard_normal((BATCH, D_IN)).astype(dtype)
    y = np.eye(D_OUT, dtype=dtype)[rng.integers(0, D_OUT, BATCH)]
    return (W1, b1, W2, b2), x, y


def cpu_time(params, x, y, inner: int) -> float:
    """CPU seconds per forward pass, over `inner` passes, garbage collector off."""
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(inner):
            mlp_loss(*params, x, y)
        return (time.process_time() - start) / inner
    finally:
        gc.enable()


def child(mode: str, inner: int) -> dict:
    params, x, y = mlp_data()
    mlp_loss(*params, x, y)                                   # warm up
    if mode == "plain":
        assert "jitgrad" not in sys.modules
        return {"plain": cpu_time(params, x, y, inner)}
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jitgrad
    from jitgrad.backends.cpu import backend as _backend      # noqa: F401 - the LLVM backend, loaded
    jitgrad.GradientTape, jitgrad.DualTensor, jitgrad.jit, jitgrad.ops   # noqa: B018 - load them
    jitgrad.jit(lambda a: a * 2.0)(np.ones(2))                 # and compile something
    tape = jitgrad.GradientTape()
    tracked = tape.watch(list(params))
    out: dict = {"imported": [], "tracked": []}
    with tape.stop_recording():
        result = mlp_loss(*tracked, x, y)
        assert type(result) is not jitgrad.TrackedTensor
        for _ in range(3):
            out["imported"].append(cpu_time(params, x, y, inner))
            out["tracked"].append(cpu_time(tracked, x, y, inner))
    return {k: statistics.median(v) for k, v in out.items()}


def run_child(mode: str, inner: int) -> dict:
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, "--inner", str(inner)],
                          capture_output=True, text=True, env=env, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--inner", type=int, default=200)
    parser.add_argument("--child", choices=("plain", "imported"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.inner)))
        return 0
    rows = []
    for r in range(args.rounds):
        order = ("plain", "imported") if r % 2 == 0 else ("imported", "plain")
        got = {}
        for mode in order:
            got.update(run_child(mode, args.inner))
        rows.append(got)
        print(f"round {r}: plain {got['plain'] * 1e3:.3f} ms, imported {got['imported'] * 1e3:.3f} ms, "
              f"tracked (not recording) {got['tracked'] * 1e3:.3f} ms", flush=True)

    def median(key):
        return statistics.median(row[key] for row in rows)

    def ratio(a, b):
        return statistics.median(row[a] / row[b] for row in rows)
    print(f"\nW2 MLP forward, CPU time per pass (median of {args.rounds} rounds x {args.inner} passes):")
    print(f"  plain NumPy (jitgrad never imported)   {median('plain') * 1e3:.3f} ms")
    print(f"  NumPy with jitgrad imported            {median('imported') * 1e3:.3f} ms   "
          f"ratio {ratio('imported', 'plain'):.3f}x")
    print(f"  TrackedTensors, tape not recording     {median('tracked') * 1e3:.3f} ms   "
          f"ratio {ratio('tracked', 'imported'):.3f}x (same process, interleaved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
