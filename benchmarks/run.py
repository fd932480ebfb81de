"""jitgrad benchmarks: compiled gradients vs hand-written NumPy vs JAX (and other AD
libraries when importable), all timed in one process.

Run:  python benchmarks/run.py [--quick]

Workloads
  W1  gradient of sum(sin(x) * exp(-x**2) + tanh(x)), x of 1e6 elements, f64 and f32
  W2  value and gradient (all four parameters) of a 784 -> 256 -> 10 tanh MLP with
      softmax cross-entropy, f32, batch 256
  W4  grad of sum(x**2) on 8 elements: the call path (benchmarks/call_and_memory.py)
  W6  gradient of a 64-layer tanh network, with and without a memory budget of 1/4 of
      the no-remat peak (benchmarks/call_and_memory.py)
  W9  value and gradient in x of ||A x - b||^2 + lam ||x||^2, A 50000x200 f64 (matrix-vector
      products both ways); NumPy by hand is A.T @ (A @ x - b)
  W10 value and gradient of a 2-D total-variation energy sum(sqrt(dx^2 + dy^2 + eps)),
      u 2000x2000 f64 (slices and paddings: index maps inside fused loops)
  first call: trace + autodiff + compile of the W2 gradient, fresh function objects

Every timed call includes what a NumPy user pays: NumPy arrays in, NumPy arrays out
(for JAX: device_put of the inputs, block_until_ready and np.asarray of the results).
Each jitgrad result is checked against the NumPy reference before it is timed.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import platform
import re
import statistics
import tempfile
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jitgrad  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from call_and_memory import bench_w4, bench_w6  # noqa: E402

try:
    from jitgrad.config import config as JITGRAD_CONFIG   # process-wide settings, set in code
except ImportError:                                        # older jitgrad: no settings
    JITGRAD_CONFIG = None

N_W1 = 1_000_000
BATCH, D_IN, D_HIDDEN, D_OUT = 256, 784, 256, 10
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


# --------------------------------------------------------------------------- jitgrad settings

@contextlib.contextmanager
def jitgrad_settings(**changes):
    """Temporarily change jitgrad's process-wide settings (those that exist); settings
    are read when a signature is compiled, so compile inside the block."""
    saved = {}
    for key, value in changes.items():
        if JITGRAD_CONFIG is not None and hasattr(JITGRAD_CONFIG, key):
            saved[key] = getattr(JITGRAD_CONFIG, key)
            setattr(JITGRAD_CONFIG, key, value)
    try:
        yield bool(saved) or not changes
    finally:
        for key, value in saved.items():
            setattr(JITGRAD_CONFIG, key, value)


def has_setting(name: str) -> bool:
    return JITGRAD_CONFIG is not None and hasattr(JITGRAD_CONFIG, name)


def compiled_single_thread(transform: Callable[[], Callable], *args):
    """A second compiled copy with jitgrad's parallel loops off (num_threads=1), called
    once inside the settings block so it compiles that way; None if there is no setting."""
    if not has_setting("num_threads"):
        return None
    fn = transform()
    with jitgrad_settings(num_threads=1):
        fn(*args)
    return fn


# --------------------------------------------------------------------------- timing

SETTLE_S = 0.005
ROUNDS = 5


def measure(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, float]:
    """Median wall time in seconds of each candidate over `repeats` timed calls, after
    `warmup` untimed calls each. The candidates take turns in ROUNDS rounds, each round
    timing a block of back-to-back calls of one candidate (as a loop in user code would
    call it), so background load on the machine hits all candidates alike and the ratios
    stay meaningful. An untimed pause of SETTLE_S between blocks lets worker threads that
    spin after a call (libgomp, OpenBLAS, XLA's pool) go idle, so one candidate's threads
    do not slow the next one. The garbage collector is off while timing."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    rounds = min(ROUNDS, repeats)
    blocks = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for block in blocks:
            for name, fn in candidates.items():
                time.sleep(SETTLE_S)
                fn()                                   # untimed: first call after the pause
                for _ in range(block):
                    start = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(ts) for name, ts in samples.items()}


class CpuShare:
    """How much of the machine other processes used while we timed: busy CPU time from
    /proc/stat minus this process's own (all threads), as a fraction of all cores. Near 0
    on a quiet machine; on this project's 2-core boxes concurrent test runs push it up and
    skew every figure (OpenBLAS and XLA threads spin while waiting for a busy core)."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)   # minus idle, iowait
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()
            mine = int(own[11]) + int(own[12])          # utime + stime, in clock ticks
            return time.perf_counter(), busy, mine
        except (OSError, ValueError, IndexError):
            return None

    def others(self) -> float | None:
        end = self._snapshot()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        wall = end[0] - self.start[0]
        other_ticks = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(0.0, other_ticks / hz / (wall * (os.cpu_count() or 1))) if wall > 0 else None


@dataclass
class Row:
    workload: str
    impl: str
    seconds: float | None          # None: not run (reason in `note`)
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    others: dict[str, float | None] = field(default_factory=dict)   # workload -> CpuShare.others()

    def add(self, workload: str, impl: str, seconds: float | None, note: str = "") -> None:
        self.rows.append(Row(workload, impl, seconds, note))
        shown = f"{fmt_time(seconds):>13}" if seconds is not None else f"{'-':>13}"
        print(f"  {workload:<22} {impl:<28} {shown}  {note}", flush=True)

    def time_of(self, workload: str, impl: str) -> float | None:
        for r in self.rows:
            if r.workload == workload and r.impl == impl:
                return r.seconds
        return None


# --------------------------------------------------------------------------- optional peers

def try_import(name: str):
    try:
        return __import__(name)
    except Exception:          # ImportError, or a broken install raising something else
        return None


def setup_jax():
    jax = try_import("jax")
    if jax is None:
        return None
    jax.config.update("jax_enable_x64", True)   # needed for the f64 rows; f32 arrays stay f32
    import jax.numpy  # noqa: F401
    return jax


# --------------------------------------------------------------------------- W1

def w1_f(x):
    return np.sum(np.sin(x) * np.exp(-x ** 2) + np.tanh(x))


def w1_numpy_grad(x):
    """d/dx sum(sin(x) e^{-x^2} + tanh(x)) = cos(x) e^{-x^2} - 2x sin(x) e^{-x^2} + 1 - tanh(x)^2,
    computed in the dtype of x."""
    e = np.exp(-x * x)
    t = np.tanh(x)
    return np.cos(x) * e - 2 * x * np.sin(x) * e + 1 - t * t


def w1_jax_f(jnp):
    def f(x):
        return jnp.sum(jnp.sin(x) * jnp.exp(-x ** 2) + jnp.tanh(x))
    return f


class Workload:
    """The implementations of one workload: verified callables to time, and rows for the
    peers that could not run (with the reason)."""

    def __init__(self, name: str):
        self.name = name
        self.order: list[str] = []
        self.candidates: dict[str, Callable[[], object]] = {}
        self.skipped: dict[str, str] = {}

    def add(self, impl: str, fn: Callable[[], object] | None, note: str = "") -> None:
        self.order.append(impl)
        if fn is None:
            self.skipped[impl] = note
        else:
            self.candidates[impl] = fn

    def run(self, results: Results, repeats: int, warmup: int) -> None:
        share = CpuShare()
        medians = measure(self.candidates, repeats, warmup)
        results.others[self.name] = share.others()
        for impl in self.order:
            if impl in medians:
                results.add(self.name, impl, medians[impl])
            else:
                results.add(self.name, impl, None, self.skipped[impl])


def verified(fn: Callable[[], object], check: Callable[[object], None]):
    """fn, after one call whose result passed `check`; None with a note if the peer fails
    (a broken optional install must not abort the run). jitgrad is never wrapped."""
    try:
        check(fn())
        return fn, ""
    except Exception as err:               # noqa: BLE001
        return None, f"failed: {type(err).__name__}: {str(err).splitlines()[0][:60] if str(err) else ''}"


def bench_w1(results: Results, peers: dict, repeats: int, warmup: int) -> dict:
    info = {}
    rng = np.random.default_rng(0)
    base = rng.standard_normal(N_W1)
    for dtype in (np.float64, np.float32):
        work = Workload(f"W1 grad {np.dtype(dtype).name}")
        x = base.astype(dtype)
        ref = w1_numpy_grad(x)
        assert ref.dtype == dtype

        def check(out, ref=ref, dtype=dtype):
            out = np.asarray(out)
            assert out.dtype == dtype, (out.dtype, dtype)
            np.testing.assert_allclose(out, ref, **TOLERANCE[dtype])

        # the reference itself against central differences of f (in float64)
        xs = base[:1000]
        eps = 1e-6
        fd = (np.sin(xs + eps) * np.exp(-(xs + eps) ** 2) + np.tanh(xs + eps)
              - np.sin(xs - eps) * np.exp(-(xs - eps) ** 2) - np.tanh(xs - eps)) / (2 * eps)
        np.testing.assert_allclose(w1_numpy_grad(xs), fd, rtol=1e-6, atol=1e-8)

        g = jitgrad.grad(w1_f)
        check(g(x))                       # jitgrad must be correct: failure aborts the run
        info[work.name] = g.lower(x)

        work.add("numpy (hand-written)", lambda x=x: w1_numpy_grad(x))
        work.add("jitgrad grad", lambda g=g, x=x: g(x))
        g1 = compiled_single_thread(lambda: jitgrad.grad(w1_f), x)
        if g1 is not None:
            check(g1(x))
            work.add("jitgrad grad, num_threads=1", lambda g1=g1, x=x: g1(x))

        jax = peers.get("jax")
        if jax is not None:
            jg = jax.jit(jax.grad(w1_jax_f(jax.numpy)))

            def run_jax(jg=jg, x=x):
                return np.asarray(jg(jax.device_put(x)).block_until_ready())
            work.add("jax jit(grad)", *verified(run_jax, check))
        else:
            work.add("jax jit(grad)", None, "not installed")

        torch = peers.get("torch")
        if torch is not None:
            def run_torch(x=x):
                t = torch.from_numpy(x).requires_grad_(True)
                (torch.sin(t) * torch.exp(-t ** 2) + torch.tanh(t)).sum().backward()
                return t.grad.numpy()
            work.add("torch (eager autograd)", *verified(run_torch, check))
        else:
            work.add("torch (eager autograd)", None, "not installed")

        drjit = peers.get("drjit")
        if drjit is not None:
            work.add("drjit (LLVM, AD)", *verified(w1_drjit(drjit, x, dtype), check))
        else:
            work.add("drjit (LLVM, AD)", None, "not installed")

        autograd = peers.get("autograd")
        if autograd is not None:
            import autograd.numpy as anp
            ag = autograd.grad(lambda v: anp.sum(anp.sin(v) * anp.exp(-v ** 2) + anp.tanh(v)))
            work.add("HIPS autograd", *verified(lambda ag=ag, x=x: ag(x), check))
        else:
            work.add("HIPS autograd", None, "not installed")
        work.run(results, repeats, warmup)
    return info


def w1_drjit(dr, x, dtype):
    """Dr.Jit's LLVM backend with AD arrays (best effort: its API moves between versions)."""
    def run():
        from drjit.llvm.ad import Float32, Float64
        t = (Float64 if dtype == np.float64 else Float32)(x)
        dr.enable_grad(t)
        y = dr.sum(dr.sin(t) * dr.exp(-t * t) + dr.tanh(t))
        dr.backward(y)
        return np.asarray(dr.grad(t))
    return run


# --------------------------------------------------------------------------- W2

def mlp_loss_generic(xnp, W1, b1, W2, b2, x, y):
    """The W2 loss written once for any NumPy-like module (numpy, jax.numpy, autograd.numpy)."""
    h = xnp.tanh(xnp.dot(x, W1) + b1)
    logits = xnp.dot(h, W2) + b2
    shifted = logits - xnp.max(logits, axis=1, keepdims=True)
    log_probs = shifted - xnp.log(xnp.sum(xnp.exp(shifted), axis=1, keepdims=True))
    return xnp.mean(-xnp.sum(y * log_probs, axis=1))


def mlp_loss(W1, b1, W2, b2, x, y):
    return mlp_loss_generic(np, W1, b1, W2, b2, x, y)


def mlp_numpy_value_and_grad(W1, b1, W2, b2, x, y):
    """Hand-written forward + backward pass in the dtype of the inputs."""
    n = x.shape[0]
    h = np.tanh(x @ W1 + b1)
    logits = h @ W2 + b2
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(s)
    loss = -(y * log_probs).sum() / n
    # d loss / d logits = (softmax * sum(y) - y) / n; rows of y sum to one
    dlogits = (e / s * y.sum(axis=1, keepdims=True) - y) / n
    dW2 = h.T @ dlogits
    db2 = dlogits.sum(axis=0)
    dz = (dlogits @ W2.T) * (1 - h * h)
    dW1 = x.T @ dz
    db1 = dz.sum(axis=0)
    return loss, (dW1, db1, dW2, db2)


def mlp_jax_loss(jnp):
    return functools.partial(mlp_loss_generic, jnp)


def mlp_data(dtype=np.float32):
    rng = np.random.default_rng(1)
    W1 = (rng.standard_normal((D_IN, D_HIDDEN)) / np.sqrt(D_IN)).astype(dtype)
    b1 = (0.1 * rng.standard_normal(D_HIDDEN)).astype(dtype)
    W2 = (rng.standard_normal((D_HIDDEN, D_OUT)) / np.sqrt(D_HIDDEN)).astype(dtype)
    b2 = (0.1 * rng.standard_normal(D_OUT)).astype(dtype)
    x = rng.standard_normal((BATCH, D_IN)).astype(dtype)
    y = np.eye(D_OUT, dtype=dtype)[rng.integers(0, D_OUT, BATCH)]
    return W1, b1, W2, b2, x, y


def check_value_and_grads(value, grads, ref_value, ref_grads, dtype) -> None:
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(np.asarray(value), ref_value, **tol, err_msg="loss")
    for k, (g, r) in enumerate(zip(grads, ref_grads, strict=True)):
        g = np.asarray(g)
        assert g.shape == r.shape and g.dtype == r.dtype, (k, g.shape, g.dtype)
        # gradient entries near zero: compare with an absolute tolerance scaled to the array
        np.testing.assert_allclose(g, r, rtol=tol["rtol"] * 10, atol=tol["rtol"] * 10 * np.abs(r).max(),
                                   err_msg=f"grad {k}")


def bench_w2(results: Results, peers: dict, repeats: int, warmup: int) -> None:
    work = Workload("W2 MLP value+grad f32")
    args = mlp_data(np.float32)
    ref_value, ref_grads = mlp_numpy_value_and_grad(*args)
    # the hand-written backward pass against the forward it differentiates
    check_reference_mlp(args, ref_value, ref_grads)

    def check(out):
        check_value_and_grads(*out, ref_value, ref_grads, np.float32)

    vg = jitgrad.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3))
    check(vg(*args))                      # jitgrad must be correct: failure aborts the run

    work.add("numpy (hand-written)", lambda: mlp_numpy_value_and_grad(*args))
    work.add("jitgrad value_and_grad", lambda: vg(*args))
    vg1 = compiled_single_thread(lambda: jitgrad.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3)), *args)
    if vg1 is not None:
        check(vg1(*args))
        work.add("jitgrad v_and_g, num_threads=1", lambda: vg1(*args))

    jax = peers.get("jax")
    if jax is not None:
        jvg = jax.jit(jax.value_and_grad(mlp_jax_loss(jax.numpy), argnums=(0, 1, 2, 3)))

        def run_jax():
            v, gs = jvg(*[jax.device_put(a) for a in args])
            jax.block_until_ready((v, gs))
            return np.asarray(v), [np.asarray(g) for g in gs]
        work.add("jax jit(value_and_grad)", *verified(run_jax, check))
    else:
        work.add("jax jit(value_and_grad)", None, "not installed")

    torch = peers.get("torch")
    if torch is not None:
        def run_torch():
            ps = [torch.from_numpy(a).requires_grad_(True) for a in args[:4]]
            xt, yt = torch.from_numpy(args[4]), torch.from_numpy(args[5])
            logits = torch.tanh(xt @ ps[0] + ps[1]) @ ps[2] + ps[3]
            loss = -(yt * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
            loss.backward()
            return loss.detach().numpy(), [p.grad.numpy() for p in ps]
        work.add("torch (eager autograd)", *verified(run_torch, check))
    else:
        work.add("torch (eager autograd)", None, "not installed")

    autograd = peers.get("autograd")
    if autograd is not None:
        import autograd.numpy as anp
        avg = autograd.value_and_grad(lambda p, x, y: mlp_loss_generic(anp, *p, x, y), 0)
        work.add("HIPS autograd", *verified(lambda: avg(list(args[:4]), *args[4:]), check))
    else:
        work.add("HIPS autograd", None, "not installed")
    work.run(results, repeats, warmup)


# --------------------------------------------------------------------------- W9

W9_ROWS, W9_COLS, W9_LAMBDA = 50_000, 200, 0.1


def w9_loss(A, x, b):
    e = A @ x - b
    return np.sum(e * e) + W9_LAMBDA * np.sum(x * x)


def w9_numpy_value_and_grad(A, x, b):
    e = A @ x - b
    return e @ e + W9_LAMBDA * (x @ x), 2 * (A.T @ e) + 2 * W9_LAMBDA * x


def bench_w9(results: Results, peers: dict, repeats: int, warmup: int) -> None:
    work = Workload("W9 least squares v+g f64")
    rng = np.random.default_rng(9)
    A = rng.standard_normal((W9_ROWS, W9_COLS))
    x, b = rng.standard_normal(W9_COLS), rng.standard_normal(W9_ROWS)
    ref_value, ref_grad = w9_numpy_value_and_grad(A, x, b)

    def check(out):
        value, grad = out
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-9 * np.abs(ref_grad).max())

    vg = jitgrad.jit(jitgrad.value_and_grad(w9_loss, argnums=1))
    check(vg(A, x, b))
    work.add("numpy (hand-written)", lambda: w9_numpy_value_and_grad(A, x, b))
    work.add("jitgrad value_and_grad", lambda: vg(A, x, b))
    jax = peers.get("jax")
    if jax is not None:
        jnp = jax.numpy

        def jax_loss(A, x, b):
            e = A @ x - b
            return jnp.sum(e * e) + W9_LAMBDA * jnp.sum(x * x)
        jvg = jax.jit(jax.value_and_grad(jax_loss, argnums=1))

        def run_jax():
            v, g = jvg(*[jax.device_put(a) for a in (A, x, b)])
            jax.block_until_ready((v, g))
            return np.asarray(v), np.asarray(g)
        work.add("jax jit(value_and_grad)", *verified(run_jax, check))
    else:
        work.add("jax jit(value_and_grad)", None, "not installed")
    work.run(results, repeats, warmup)


# --------------------------------------------------------------------------- W10

W10_SIZE, W10_EPS = 2000, 1e-6


def w10_energy_generic(xnp, u):
    dx = u[1:, :-1] - u[:-1, :-1]
    dy = u[:-1, 1:] - u[:-1, :-1]
    return xnp.sum(xnp.sqrt(dx * dx + dy * dy + W10_EPS))


def w10_energy(u):
    return w10_energy_generic(np, u)


def w10_numpy_value_and_grad(u):
    dx = u[1:, :-1] - u[:-1, :-1]
    dy = u[:-1, 1:] - u[:-1, :-1]
    s = np.sqrt(dx * dx + dy * dy + W10_EPS)
    gx, gy = dx / s, dy / s
    g = np.zeros_like(u)
    g[1:, :-1] += gx
    g[:-1, 1:] += gy
    g[:-1, :-1] -= gx + gy
    return s.sum(), g


def bench_w10(results: Results, peers: dict, repeats: int, warmup: int) -> None:
    work = Workload("W10 total variation v+g f64")
    u = np.random.default_rng(10).standard_normal((W10_SIZE, W10_SIZE))
    ref_value, ref_grad = w10_numpy_value_and_grad(u)

    def check(out):
        value, grad = out
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)

    vg = jitgrad.jit(jitgrad.value_and_grad(w10_energy))
    check(vg(u))
    work.add("numpy (hand-written)", lambda: w10_numpy_value_and_grad(u))
    work.add("jitgrad value_and_grad", lambda: vg(u))
    jax = peers.get("jax")
    if jax is not None:
        jvg = jax.jit(jax.value_and_grad(functools.partial(w10_energy_generic, jax.numpy)))

        def run_jax():
            v, g = jvg(jax.device_put(u))
            jax.block_until_ready((v, g))
            return np.asarray(v), np.asarray(g)
        work.add("jax jit(value_and_grad)", *verified(run_jax, check))
    else:
        work.add("jax jit(value_and_grad)", None, "not installed")
    work.run(results, repeats, warmup)


def check_reference_mlp(args, ref_value, ref_grads) -> None:
    """The hand-written NumPy gradient against central differences of mlp_loss in float64,
    on a few entries of each parameter."""
    args64 = [a.astype(np.float64) for a in args]
    value64, grads64 = mlp_numpy_value_and_grad(*args64)
    np.testing.assert_allclose(ref_value, value64, rtol=1e-5)
    assert abs(mlp_loss(*args64) - value64) <= 1e-12 * abs(value64)
    rng = np.random.default_rng(2)
    eps = 1e-6
    for k in range(4):
        for flat in rng.integers(0, args64[k].size, 3):
            i = np.unravel_index(flat, args64[k].shape)
            plus = [a.copy() for a in args64]
            minus = [a.copy() for a in args64]
            plus[k][i] += eps
            minus[k][i] -= eps
            fd = (mlp_loss(*plus) - mlp_loss(*minus)) / (2 * eps)
            assert abs(fd - grads64[k][i]) <= 1e-6 + 1e-5 * abs(fd), (k, i, fd, grads64[k][i])
    for g, g64 in zip(ref_grads, grads64, strict=True):
        np.testing.assert_allclose(g, g64, rtol=1e-3, atol=1e-4 * np.abs(g64).max())


# --------------------------------------------------------------------------- first call

def fresh_mlp_loss():
    """A new function object each time (so no cache, ours or JAX's, can be reused)."""
    def loss(W1, b1, W2, b2, x, y):
        return mlp_loss(W1, b1, W2, b2, x, y)
    return loss


def bench_first_call(results: Results, peers: dict, samples: int) -> dict:
    """Wall time of the first call of a freshly created transformed function: trace,
    differentiate, optimize, compile and run once, with no compilation cache (jitgrad's
    on-disk cache off, JAX's persistent cache off by default). jitgrad and JAX samples
    alternate. A last row times jitgrad when its on-disk cache already holds the code."""
    name = "W2 first call"
    args = mlp_data(np.float32)
    jax = peers.get("jax")

    def jitgrad_first():
        vg = jitgrad.value_and_grad(fresh_mlp_loss(), argnums=(0, 1, 2, 3))
        start, cpu = time.perf_counter(), time.process_time()
        vg(*args)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        return elapsed, cpu, vg.lower(*args).timings       # cached: .lower just returns it

    def jax_first():
        jvg = jax.jit(jax.value_and_grad(mlp_jax_loss(jax.numpy), argnums=(0, 1, 2, 3)))
        start, cpu = time.perf_counter(), time.process_time()
        v, gs = jvg(*[jax.device_put(a) for a in args])
        jax.block_until_ready((v, gs))
        np.asarray(v), [np.asarray(g) for g in gs]
        return time.perf_counter() - start, time.process_time() - cpu

    share = CpuShare()
    times, cpus, timings, jtimes, jcpus = [], [], [], [], []
    with jitgrad_settings(cache_dir=None):
        for _ in range(samples):
            time.sleep(SETTLE_S)
            elapsed, cpu, stage_times = jitgrad_first()
            times.append(elapsed)
            cpus.append(cpu)
            timings.append(stage_times)
            if jax is not None:
                time.sleep(SETTLE_S)
                elapsed, cpu = jax_first()
                jtimes.append(elapsed)
                jcpus.append(cpu)
    results.others[name] = share.others()       # before the child processes, which it would count
    cached = first_call_from_disk_cache(samples) if has_setting("cache_dir") else []
    note = f"median of {samples} fresh functions"
    # process CPU time (all threads): the figure to compare on a loaded machine, where
    # wall time measures the load (XLA compiles on several threads, jitgrad on one)
    cpu_ratio = f" ({statistics.median(cpus) / statistics.median(jcpus):.2f}x JAX's)" if jcpus else ""
    results.add(name, "jitgrad value_and_grad", statistics.median(times),
                note + f", no disk cache; CPU {statistics.median(cpus) * 1e3:.1f} ms" + cpu_ratio)
    if jax is not None:
        results.add(name, "jax jit(value_and_grad)", statistics.median(jtimes),
                    note + f", no persistent cache; CPU {statistics.median(jcpus) * 1e3:.1f} ms")
    else:
        results.add(name, "jax jit(value_and_grad)", None, "not installed")
    if cached:
        results.add(name, "jitgrad, disk cache hit", statistics.median(cached),
                    f"median of {len(cached)} new processes, code from the on-disk cache")
    return {k: statistics.median(t[k] for t in timings) for k in timings[0]}


_CHILD = """
import sys, time
sys.path.insert(0, {bench_dir!r})
import run
from jitgrad.config import config
config.cache_dir = {cache_dir!r}
args = run.mlp_data()
vg = run.jitgrad.value_and_grad(run.fresh_mlp_loss(), argnums=(0, 1, 2, 3))
start = time.perf_counter()
vg(*args)
elapsed = time.perf_counter() - start
compiled = getattr(vg.lower(*args).executable, "compiled", None)
print(elapsed, getattr(compiled, "from_cache", None))
"""


def first_call_from_disk_cache(samples: int) -> list[float]:
    """First-call times in new processes that find the code in jitgrad's on-disk cache
    (the case of rerunning a script). A first process fills a private cache directory;
    samples whose code did not come from the cache are dropped (and reported)."""
    import subprocess
    times = []
    with tempfile.TemporaryDirectory(prefix="jitgrad-bench-cache-") as tmp:
        code = _CHILD.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), cache_dir=tmp)
        misses = 0
        for k in range(samples + 1):
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                print("  (disk-cache child failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1] + ")")
                return []
            elapsed, from_cache = proc.stdout.split()[-2:]
            if k == 0:
                continue                                 # filled the cache
            if from_cache == "True":
                times.append(float(elapsed))
            else:
                misses += 1
        if misses:
            print(f"  (disk cache: {misses} of {samples} new processes missed the cache)")
    return times


# --------------------------------------------------------------------------- report

def machine_description(peers: dict) -> list[str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        import llvmlite.binding as llvm
        llvm.initialize_native_target()
        llvm_cpu = llvm.get_host_cpu_name()
    except Exception:          # noqa: BLE001
        llvm_cpu = "?"
    import llvmlite
    try:
        llvm_version = ".".join(map(str, llvm.llvm_version_info))
    except Exception:          # noqa: BLE001
        llvm_version = "?"
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}",
                f"llvmlite {llvmlite.__version__} (LLVM {llvm_version})"]
    for key in ("jax", "torch", "drjit", "autograd"):
        mod = peers.get(key)
        if mod is not None:
            versions.append(f"{key} {getattr(mod, '__version__', '?')}")
    if peers.get("jax") is not None:
        import jaxlib
        versions.append(f"jaxlib {jaxlib.__version__}")
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        versions.append(f"NumPy BLAS {blas.get('name', '?')} {blas.get('version', '')}".rstrip())
    except Exception:          # noqa: BLE001 - older NumPy: no dict mode
        pass
    return [
        f"CPU: {cpu} (LLVM host cpu: {llvm_cpu}), {os.cpu_count()} logical cores",
        f"OS: {platform.system()} {platform.release()} {platform.machine()}",
        "Versions: " + ", ".join(versions),
        "jitgrad: " + source_revision(),
        "Environment: " + environment(),
    ]


def source_revision() -> str:
    """The commit being measured, and whether the working tree differs from it."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return f"{jitgrad.__version__} (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{jitgrad.__version__} at {head or '?'}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def environment() -> str:
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_", "XLA_"))}
    return ", ".join(f"{k}={v}" for k, v in sorted(env.items())) or "(no OPENBLAS_/OMP_/MKL_/XLA_ variables)"


def load_average() -> str:
    try:
        return "load average %.2f %.2f %.2f (1, 5, 15 min)" % os.getloadavg()
    except OSError:
        return "load average unknown"


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.3f} us"
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.3f} s"


def fmt_ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None:
        return "-"
    return f"{num / den:.2f}x"


def print_table(results: Results) -> None:
    header = ("workload", "implementation", "median", "jitgrad / numpy", "jitgrad / jax", "other CPU", "note")
    lines = []
    for r in results.rows:
        numpy_t = results.time_of(r.workload, "numpy (hand-written)")
        jax_t = next((x.seconds for x in results.rows if x.workload == r.workload and x.impl.startswith("jax")), None)
        if r.impl.startswith("jitgrad"):
            vs_np, vs_jax = fmt_ratio(r.seconds, numpy_t), fmt_ratio(r.seconds, jax_t)
        else:
            vs_np = vs_jax = ""
        median = fmt_time(r.seconds) if r.seconds is not None else r.note
        busy = results.others.get(r.workload)
        note = r.note if r.seconds is not None else ""
        lines.append((r.workload, r.impl, median, vs_np, vs_jax, "" if busy is None else f"{busy:.0%}", note))
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in lines:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, noisier medians)")
    parser.add_argument("--only", default="", help="comma-separated workloads to run (e.g. W2,W9); default all")
    opts = parser.parse_args(argv)
    repeats, warmup, first_samples = (7, 2, 3) if opts.quick else (40, 5, 7)

    peers = {"jax": setup_jax(), "torch": try_import("torch"), "drjit": try_import("drjit"),
             "autograd": try_import("autograd")}

    print("Machine")
    for line in machine_description(peers):
        print("  " + line)
    print("  Before: " + load_average())
    print(f"Repeats: {repeats} timed after {warmup} warm-up calls (median); first call: {first_samples} samples\n")

    results = Results()
    print("Running (results verified against the NumPy reference before timing)")
    # jitgrad's on-disk cache off: every compile in this process is a real one, and the
    # stage timings below are what compiling costs (the cache gets its own row).
    only = {w.strip().upper() for w in opts.only.split(",") if w.strip()}

    def chosen(name: str) -> bool:
        return not only or name.upper() in only

    w1_lowered, stage_medians = {}, {}
    with jitgrad_settings(cache_dir=None):
        if chosen("W1"):
            w1_lowered = bench_w1(results, peers, repeats, warmup)
        if chosen("W2"):
            bench_w2(results, peers, repeats, warmup)
        if chosen("W9"):
            bench_w9(results, peers, repeats, warmup)
        if chosen("W10"):
            bench_w10(results, peers, repeats, warmup)
        if chosen("W4"):
            bench_w4(results, peers, opts.quick)
        if chosen("W6"):
            bench_w6(results, opts.quick)
        if chosen("first"):
            stage_medians = bench_first_call(results, peers, first_samples)

    print("  After: " + load_average())
    print("\nResults (ratio = jitgrad time / peer time; below 1 means jitgrad is faster;\n"
          "other CPU = share of all cores that other processes used while the workload was timed)\n")
    print_table(results)
    busiest = max((v for v in results.others.values() if v is not None), default=0.0)
    if busiest > 0.10:
        print(f"\nWARNING: other processes used up to {busiest:.0%} of the CPUs during timing; "
              "figures are skewed (rerun on a quiet machine).")

    if stage_medians:
        print("\njitgrad compile stages, first call of W2 (median seconds):")
        print("  " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in stage_medians.items()))
    for name, lowered in w1_lowered.items():
        llvm_opt = lowered.as_text("llvm-opt")
        called = sorted(set(re.findall(r"call <\d+ x \w+> @(_ZGV\w+)\(", llvm_opt)))
        stages = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in lowered.timings.items())
        print(f"  {name}: {stages}")
        print(f"    vector math calls in llvm-opt: {', '.join(called) or 'none (loop not vectorized)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
