"""Recording overhead of the eager GradientTape: the forward pass of a 784 -> 256 -> 10
tanh MLP with softmax cross-entropy (float32, batch 256) under a tape, against the same
NumPy code on plain arrays. The target is a ratio of at most 1.05.

Run:  python benchmarks/tape_overhead.py [--repeats N]
      (on a busy machine, OPENBLAS_NUM_THREADS=1 makes the matrix products, and so both
      times, far less noisy; the overhead itself is single-threaded Python either way)

Each round times plain, taped, taped, plain (ABBA, so drift in machine speed hits both
alike) with the garbage collector off; the headline is the median over rounds of each
round's ratio, beside the medians of the two candidates' times.

The taped candidate includes everything a training step pays for recording: creating
the tape, watching the four parameters and recording every operation (not `gradient`).
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jitgrad.eager.tape import GradientTape  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import BATCH, D_HIDDEN, D_IN, D_OUT, mlp_loss, mlp_data as _mlp_data  # noqa: E402  (the W2 model)


def mlp_data(dtype=np.float32):
    """The W2 parameters, inputs and labels, as (params, x, y)."""
    *params, x, y = _mlp_data(dtype)
    return tuple(params), x, y


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args(argv)
    params, x, y = mlp_data()

    def plain():
        return mlp_loss(*params, x, y)

    def taped():
        tape = GradientTape()
        with tape:
            return mlp_loss(*tape.watch(params), x, y)

    reference = plain()
    loss = taped()
    np.testing.assert_allclose(loss.value, reference, rtol=1e-6)
    tape = GradientTape()
    tracked = tape.watch(params)
    grads = tape.gradient(mlp_loss(*tracked, x, y), tracked)   # the tape differentiates what it recorded
    assert all(g.shape == p.shape for g, p in zip(grads, params, strict=True))

    for _ in range(args.warmup):
        plain()
        taped()
    plain_times, tape_times, ratios = [], [], []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(args.repeats):    # ABBA order: a drift in machine speed hits both alike
            t0 = time.perf_counter()
            plain()
            t1 = time.perf_counter()
            taped()
            t2 = time.perf_counter()
            taped()
            t3 = time.perf_counter()
            plain()
            t4 = time.perf_counter()
            plain_times += [t1 - t0, t4 - t3]
            tape_times += [t2 - t1, t3 - t2]
            ratios.append((t3 - t1) / (t1 - t0 + t4 - t3))
    finally:
        if gc_was_enabled:
            gc.enable()
    plain_s, tape_s = statistics.median(plain_times), statistics.median(tape_times)
    print(f"MLP {D_IN}->{D_HIDDEN}->{D_OUT} tanh + softmax cross-entropy, float32, batch {BATCH}; "
          f"{args.repeats} rounds of 2 calls each")
    print(f"  plain NumPy forward, median : {plain_s * 1e3:8.3f} ms")
    print(f"  under GradientTape, median  : {tape_s * 1e3:8.3f} ms")
    print(f"  difference of the medians   : {(tape_s - plain_s) * 1e6:8.1f} us (15 recorded calls)")
    print(f"  ratio of the medians        : {tape_s / plain_s:8.3f}")
    print(f"ratio tape / numpy (median over rounds): {statistics.median(ratios):.3f}  (target <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
