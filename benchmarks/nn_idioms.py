"""The NumPy convolution and pooling idioms, compiled with their recognition
(passes/nn_idioms.py) on and off: per-call time of the forward pass and of
value_and_grad, in one process.

    python benchmarks/nn_idioms.py [--repeats N] [--small] [--only NAME ...]

One thread (jitgrad's loops, BLAS and OpenMP; set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS
to override the latter two). Times are CPU time per call, the least of --repeats calls
made alternately with and without recognition: waiting for a core on a shared machine
does not stretch them, and both programs see the same machine.

Workloads (float32, batch 32, 32 -> 64 channels, 32x32, 3x3 kernel, zero padding 1):
- `window-einsum`: np.pad, sliding_window_view, np.einsum("nchwij,ocij->nohw");
- `offsets-einsum`: np.pad, then one einsum per kernel offset, summed;
- `single-channel`: np.pad, then sum(w[i, j] * xp[:, i:i+H, j:j+W]) (batch 32, 64x64);
- `max-pool` / `mean-pool`: x.reshape(N, C, H//2, 2, W//2, 2).max / .mean (32x64x32x32).
The recognized program's values and gradients are checked against the unrecognized
one's before anything is timed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")            # before NumPy loads its BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jitgrad  # noqa: E402
from jitgrad.config import config  # noqa: E402
from jitgrad.passes.nn_idioms import recognizing  # noqa: E402

swv = np.lib.stride_tricks.sliding_window_view


def window_einsum(x, w):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return np.einsum("nchwij,ocij->nohw", swv(xp, (3, 3), axis=(2, 3)), w)


def offsets_einsum(x, w):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    out = 0
    for i in range(3):
        for j in range(3):
            out = out + np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return out


def single_channel(x, w):
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[1:]
    return sum(w[i, j] * xp[:, i:i + h, j:j + wd] for i in range(3) for j in range(3))


def max_pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def mean_pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def workloads(rng, small: bool):
    f32 = np.float32
    n, c, o, s = (4, 8, 16, 16) if small else (32, 32, 64, 32)
    x, w = rng.standard_normal((n, c, s, s)).astype(f32), (rng.standard_normal((o, c, 3, 3)) * 0.1).astype(f32)
    x1, w1 = rng.standard_normal((n, 2 * s, 2 * s)).astype(f32), rng.standard_normal((3, 3)).astype(f32)
    xp = rng.standard_normal((n, 2 * c, s, s)).astype(f32)
    return [("window-einsum", window_einsum, (x, w)), ("offsets-einsum", offsets_einsum, (x, w)),
            ("single-channel", single_channel, (x1, w1)), ("max-pool", max_pool, (xp,)),
            ("mean-pool", mean_pool, (xp,))]


def compiled(f, n_args: int):
    """jit(f) and jit(value_and_grad(sum(tanh(f)))); compiled code is cached per function
    object, so each recognition setting gets its own pair."""
    forward = jitgrad.jit(f)
    backward = jitgrad.jit(jitgrad.value_and_grad(lambda *a: np.sum(np.tanh(f(*a))), argnums=tuple(range(n_args))))
    return forward, backward


def timed_pair(first, second, args, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Least CPU seconds of the process per call (`time.process_time`, all threads) of
    `first` and of `second`, called alternately, after `warmup` calls each (the first
    calls of a compiled function also set up its native call path)."""
    for _ in range(warmup):
        first(*args)
        second(*args)
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for k, fn in enumerate((first, second)):
            start = time.process_time()
            fn(*args)
            best[k] = min(best[k], time.process_time() - start)
    return best[0], best[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--small", action="store_true", help="small shapes (a quick smoke run)")
    parser.add_argument("--only", nargs="*", help="run only these workloads")
    args = parser.parse_args()
    config.num_threads = 1
    rng = np.random.default_rng(0)
    print("CPU ms per call")
    print(f"{'workload':<16} {'pass':<9} {'recognized ms':>14} {'as written ms':>14} {'speedup':>8}")
    for name, f, inputs in workloads(rng, args.small):
        if args.only and name not in args.only:
            continue
        programs = {}
        for enabled in (True, False):
            with recognizing(enabled):
                forward, backward = compiled(f, len(inputs))
                start = time.perf_counter()
                results = (forward(*inputs), backward(*inputs))
                programs[enabled] = (forward, backward, results, time.perf_counter() - start)
        (_, _, on, _), (_, _, off, _) = programs[True], programs[False]
        np.testing.assert_allclose(on[0], off[0], rtol=2e-4, atol=2e-4)
        for got, expected in zip(on[1][1], off[1][1], strict=True):
            scale = np.max(np.abs(expected))
            np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-4 * scale)
        for k, label in ((0, "forward"), (1, "grad")):
            t_on, t_off = timed_pair(programs[True][k], programs[False][k], inputs, args.repeats)
            print(f"{name:<16} {label:<9} {t_on * 1e3:14.2f} {t_off * 1e3:14.2f} {t_off / t_on:7.2f}x")
        print(f"{'':<16} {'compile':<9} {programs[True][3] * 1e3:14.0f} {programs[False][3] * 1e3:14.0f}")


if __name__ == "__main__":
    main()
