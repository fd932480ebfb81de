"""The real-GPU check: `python -m tools.gpu_check` (docs/gpu.md).

Runs, in well under 5 minutes on a GPU:
1. every primitive's op spec (tests/test_primitive_rules.py) compiled for the GPU and
   compared with the CPU backend (kernel kinds without a CUDA kernel are counted apart);
2. W1, the gradient of sum(sin(x) * exp(-x**2) + tanh(x)) for x of 1e8 float32 and
   float64: kernel time (CUDA events) and the fraction of the device's memory bandwidth
   it reaches (x read, the gradient written);
3. W2, one gradient step of a 2-layer MLP (batch 256, 784-256-10, float32);
4. the per-call latency of a small compiled function (NumPy in and out);
5. the same W1 in CuPy, JAX and PyTorch when they are installed with GPU support.
Prints one summary line (and details above it with -v). Without a GPU it prints why and
exits 0 ("skipped").
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
W1_SIZE = 10 ** 8


def _w1(x):
    return np.sum(np.sin(x) * np.exp(-x * x) + np.tanh(x))


def _mlp(w1, w2, x, y):
    h = np.tanh(x @ w1)
    return np.mean((h @ w2 - y) ** 2)


def check_primitives(log) -> tuple[int, int, int]:
    """(agree, disagree, without a CUDA kernel) over every op spec."""
    import jitgrad  # noqa: F401
    from jitgrad.backends import backend_for
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    from test_primitive_rules import SPECS
    from test_grid_emulator import _has_no_cuda_kernel, assert_same
    agree = disagree = missing = 0
    for spec in SPECS:
        fn = spec.function()
        if _has_no_cuda_kernel(fn):
            missing += 1
            continue
        args = spec.args()
        try:
            expected = backend_for("cpu").compile(fn)(args)
            got = backend_for("cuda").compile(fn)(args)
            for g, e, t in zip(got, expected, fn.output_types, strict=True):
                assert_same(g, e, t.dtype)
            agree += 1
        except Exception as err:        # counted and named: the check goes on
            disagree += 1
            log(f"  {spec.id}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    return agree, disagree, missing


def w1_bandwidth(dtype, log) -> tuple[float, float]:
    """(seconds, fraction of peak bandwidth) of W1's gradient kernels."""
    import jitgrad
    from jitgrad.backends.cuda import runtime
    x = np.random.default_rng(0).standard_normal(W1_SIZE).astype(dtype)
    lowered = jitgrad.jit(jitgrad.grad(_w1), device="gpu").lower(x)
    seconds = runtime.time_launches(lowered.executable, [x], repeats=5)
    moved = 2 * x.nbytes
    fraction = moved / seconds / runtime.peak_bandwidth()
    log(f"  W1 {np.dtype(dtype).name}: {seconds * 1e3:.2f} ms, {moved / seconds / 1e9:.0f} GB/s = {fraction:.0%} of peak")
    return seconds, fraction


def w2_step(log) -> float:
    import jitgrad
    from jitgrad.backends.cuda import runtime
    rng = np.random.default_rng(1)
    args = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in ((784, 256), (256, 10), (256, 784), (256, 10))]
    lowered = jitgrad.jit(jitgrad.grad(_mlp, argnums=(0, 1)), device="gpu").lower(*args)
    seconds = runtime.time_launches(lowered.executable, args, repeats=10)
    log(f"  W2 MLP step: {seconds * 1e6:.0f} us (kernels)")
    return seconds


def call_latency(log) -> float:
    import jitgrad
    f = jitgrad.jit(lambda x: x * 2.0 + 1.0, device="gpu")
    x = np.ones(8)
    f(x)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - start)
    latency = float(np.median(times))
    log(f"  call latency (8 elements, NumPy in/out): {latency * 1e6:.0f} us")
    return latency


def peers(log) -> list[str]:
    """W1's gradient in the libraries installed with GPU support: median seconds."""
    found = []
    try:
        import torch
        if torch.cuda.is_available():
            x = torch.randn(W1_SIZE, device="cuda", requires_grad=True)

            def step():
                x.grad = None
                (torch.sin(x) * torch.exp(-x * x) + torch.tanh(x)).sum().backward()
                torch.cuda.synchronize()
            found.append(("torch", _median(step)))
    except ImportError:
        pass
    try:
        import jax
        import jax.numpy as jnp
        if any(d.platform == "gpu" for d in jax.devices()):
            g = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(x) * jnp.exp(-x * x) + jnp.tanh(x))))
            x = jnp.asarray(np.random.default_rng(0).standard_normal(W1_SIZE, dtype=np.float32))
            found.append(("jax", _median(lambda: g(x).block_until_ready())))
    except ImportError:
        pass
    try:
        import cupy
        x = cupy.random.standard_normal(W1_SIZE, dtype=cupy.float32)

        def step():
            e = cupy.exp(-x * x)
            (cupy.cos(x) * e - 2 * x * cupy.sin(x) * e + 1 - cupy.tanh(x) ** 2)
            cupy.cuda.runtime.deviceSynchronize()
        found.append(("cupy", _median(step)))
    except ImportError:
        pass
    for name, seconds in found:
        log(f"  W1 f32 in {name}: {seconds * 1e3:.2f} ms")
    return [f"{name} {seconds * 1e3:.2f} ms" for name, seconds in found]


def _median(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="details above the summary line")
    args = parser.parse_args(argv)
    log = print if args.verbose else (lambda *a: None)
    from jitgrad.backends.cuda import runtime
    available, why = runtime.available()
    if not available:
        print(f"gpu_check: skipped: {why}")
        return 0
    start = time.perf_counter()
    agree, disagree, missing = check_primitives(log)
    w1_32, bw_32 = w1_bandwidth(np.float32, log)
    w1_64, bw_64 = w1_bandwidth(np.float64, log)
    w2 = w2_step(log)
    latency = call_latency(log)
    others = peers(log)
    print(f"gpu_check: {why}: primitives {agree}/{agree + disagree} agree with the CPU ({missing} without a CUDA "
          f"kernel); W1 f32 {w1_32 * 1e3:.2f} ms ({bw_32:.0%} of peak bandwidth), f64 {w1_64 * 1e3:.2f} ms "
          f"({bw_64:.0%}); W2 step {w2 * 1e6:.0f} us; call latency {latency * 1e6:.0f} us"
          + (f"; peers W1 f32: {', '.join(others)}" if others else "")
          + f"; {time.perf_counter() - start:.0f} s")
    return 0 if disagree == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
