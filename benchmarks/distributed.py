"""Allreduce throughput and the bf16 train step (docs/distributed.md, docs/mixed-precision.md).

    mpiexec -n 2 python benchmarks/distributed.py allreduce
    python benchmarks/distributed.py train-step

`allreduce`: jitgrad.distributed.allreduce (mean, deterministic, bucketed) of the W2 MLP's
gradient pytree (W1 784x256, b1 256, W2 256x10, b2 10; float32, 814 KB) against mpi4py's
`Allreduce` (sum) of one preallocated float32 buffer of the same total size, with and
without bf16 compression and top-k 1%. Each figure is the median over rounds of the time
of one reduction (rows take turns in 15 rounds of 20 calls, each after a barrier; best and
median round); throughput = payload bytes / time.

`train-step`: value and gradient of the W2 loss (batch 256) in float32 and under
`jitgrad.mixed_precision` (bfloat16, float16), one thread, taking turns in 15 rounds of 20
calls; the speed ratio is of process CPU time per call.
"""
from __future__ import annotations

import os
import sys
import time

# One BLAS thread per process: ranks share the cores, and a single-threaded train step's
# process CPU time is its cost, which other processes' load inflates far less than wall time.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

BATCH, D_IN, D_HIDDEN, D_OUT = 256, 784, 256, 10


def w2_params(dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    return {"W1": (rng.standard_normal((D_IN, D_HIDDEN)) / np.sqrt(D_IN)).astype(dtype),
            "b1": (0.1 * rng.standard_normal(D_HIDDEN)).astype(dtype),
            "W2": (rng.standard_normal((D_HIDDEN, D_OUT)) / np.sqrt(D_HIDDEN)).astype(dtype),
            "b2": (0.1 * rng.standard_normal(D_OUT)).astype(dtype)}


def w2_loss(params, x, y):
    h = np.tanh(x @ params["W1"] + params["b1"])
    logits = h @ params["W2"] + params["b2"]
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return np.mean(-np.sum(y * log_probs, axis=1))


def interleaved_times(rows, barrier, rounds=15, calls=20) -> list[tuple[str, float, float, float]]:
    """(name, best wall, median wall, median process CPU) seconds per call of each row. The
    rows take turns within each round, so a burst of load from other processes hits them
    alike; the best round is the wall figure least disturbed by it."""
    for _, fn in rows:
        fn()
    wall: dict[str, list[float]] = {name: [] for name, _ in rows}
    cpu: dict[str, list[float]] = {name: [] for name, _ in rows}
    for _ in range(rounds):
        for name, fn in rows:
            barrier()
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                fn()
            wall[name].append((time.perf_counter() - start) / calls)
            cpu[name].append((time.process_time() - start_cpu) / calls)
    return [(name, min(wall[name]), float(np.median(wall[name])), float(np.median(cpu[name]))) for name, _ in rows]


def bench_allreduce() -> None:
    from mpi4py import MPI

    from jitgrad import distributed as dist
    dist.init()
    comm = MPI.COMM_WORLD
    grads = w2_params(seed=dist.rank())
    nbytes = sum(g.nbytes for g in grads.values())
    send = np.random.default_rng(dist.rank()).standard_normal(nbytes // 4).astype(np.float32)
    recv = np.empty_like(send)
    topk = dist.TopK(0.01)
    rows = [("mpi4py Allreduce, one preallocated buffer", lambda: comm.Allreduce(send, recv, op=MPI.SUM)),
            ("jitgrad allreduce (mean, 1 bucket)", lambda: dist.allreduce(grads)),
            ("jitgrad allreduce (mean, 256 KiB buckets)", lambda: dist.allreduce(grads, bucket_bytes=256 << 10)),
            ("jitgrad allreduce, bfloat16 payload", lambda: dist.allreduce(grads, compression="bfloat16")),
            ("jitgrad allreduce, top-1% + error feedback", lambda: dist.allreduce(grads, compression=topk))]
    results = interleaved_times(rows, comm.Barrier)
    if dist.rank() == 0:
        print(f"{dist.size()} ranks, payload {nbytes} bytes (W2 gradients, float32), MPI: "
              f"{MPI.Get_library_version().splitlines()[0].strip()}")
        print("| reduction | best | median | throughput (best) | vs raw Allreduce (best) |")
        best_raw = results[0][1]
        for name, best, median, _ in results:
            print(f"| {name} | {best * 1e6:.0f} us | {median * 1e6:.0f} us | {nbytes / best / 1e9:.2f} GB/s "
                  f"| {best_raw / best:.2f}x |")


def bench_train_step() -> None:
    import jitgrad
    jitgrad.config.config.num_threads = 1
    params = w2_params()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, D_IN)).astype(np.float32)
    y = np.eye(D_OUT, dtype=np.float32)[rng.integers(0, D_OUT, BATCH)]
    f32 = jitgrad.value_and_grad(w2_loss)
    bf16 = jitgrad.value_and_grad(jitgrad.mixed_precision(w2_loss, compute="bfloat16"))
    f16 = jitgrad.value_and_grad(jitgrad.mixed_precision(w2_loss, compute="float16"))
    rows = [("float32", lambda: f32(params, x, y)), ("mixed bfloat16", lambda: bf16(params, x, y)),
            ("mixed float16", lambda: f16(params, x, y))]
    results = interleaved_times(rows, lambda: None)
    print("| W2 value+grad, 1 thread | best wall | median wall | median CPU | speed vs float32 (CPU) |")
    for name, best, median, cpu in results:
        print(f"| {name} | {best * 1e3:.3f} ms | {median * 1e3:.3f} ms | {cpu * 1e3:.3f} ms "
              f"| {results[0][3] / cpu:.2f}x |")


if __name__ == "__main__":
    {"allreduce": bench_allreduce, "train-step": bench_train_step}[sys.argv[1] if len(sys.argv) > 1 else "allreduce"]()
