"""Reverse mode through `while`/`fori` loops on the GPU backend (the `reverse_fori` op),
checked without a GPU: the grid emulator (the CUDA launch functions compiled for the
host, a workspace full of garbage) against the CPU backend.

Both reversals run on the device over snapshots in the workspace: `revolve` with the
op's snapshot count (the CPU's schedule), `stack` as revolve with a static snapshot
area (jitgrad/backends/cuda/control_flow.py, `snapshot_count`). A state recomputed runs
the same advance function on the same bits, so every result here is compared bit for
bit: with the CPU where the loop bodies do arithmetic only, between the reversals and
snapshot counts on the emulator where they call libm (the emulator's math is the host's
scalar libm, the CPU's libmvec's vector variants: those agree with the CPU to
`LIBM_ULPS`). The PTX of these kernels is assembled by ptxas and linked by nvJitLink in
tests/test_cuda_backend.py ("PTX of everything").
"""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad
from jitgrad.backends import backend_for
from jitgrad.backends.cuda import control_flow as cuda_control_flow
from jitgrad.interpreter import evaluate
from jitgrad.ir import DType, TensorType, verify
from jitgrad.passes.reverse import vjp_function
from jitgrad.primitives.control_flow import REVOLVE, STACK, emit_reverse_fori, make_function, reverse_fori_p
from jitgrad.primitives.elementwise import add, mul, sin
from jitgrad.primitives.structural import constant
from jitgrad.tracing.tracer import trace

from helpers import build
from test_loop_reversal import with_reversal

EMULATOR = "cuda-emulator"
LIBM_ULPS = 16
"""How far (in units in the last place of the result's dtype) a gradient through a few
steps of a loop calling sin/cos may move between the emulator and the CPU: each call
differs by at most a few ulps between the host's scalar libm and libmvec, and the loop
carries the difference through its steps and the backward pass."""

POLICIES = [(STACK, 0), (REVOLVE, 1), (REVOLVE, 2), (REVOLVE, 3), (REVOLVE, 8)]
TRIPS = (-2, 0, 1, 2, 3, 7, 13, 40)


def _same_bits(got, expected, what="") -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype, what
    assert got.tobytes() == expected.tobytes(), f"{what}: not bit for bit\n{got}\n{expected}"


def _ulps(a, b) -> int:
    """The most units in the last place between two float arrays of one dtype."""
    a, b = np.asarray(a), np.asarray(b)
    signed = {4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordered(x):
        bits = x.view(signed).astype(np.int64)
        return np.where(bits < 0, np.iinfo(signed).min - bits, bits)
    return int(np.max(np.abs(ordered(a) - ordered(b)), initial=0))


def _reverse_fori_ops(fn):
    return [op for op in fn.walk() if op.opdef is reverse_fori_p]


def _both(fn):
    """The CPU's and the emulator's executables of one IR function."""
    return backend_for("cpu").compile(fn), backend_for(EMULATOR).compile(fn)


# --------------------------------------------------------------------------- fori_loop with a traced trip count

def polynomial_loss(x, w, n):
    """Arithmetic only (no libm): the emulator must agree with the CPU bit for bit."""
    def body(i, v):
        return v * w + v * v * 0.125 - w * 0.25 + (i * 0.5).astype(x.dtype)
    return (jitgrad.fori_loop(0, n, body, x) ** 2).sum()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reversal,snapshots", POLICIES)
def test_fori_gradient_agrees_with_the_cpu_bit_for_bit(reversal, snapshots, dtype):
    x, w = np.array([0.3, -1.2, 0.7], dtype), np.array([0.9, -0.4, 0.5], dtype)
    fn = with_reversal(trace(polynomial_loss, (x, w, np.int64(3))).function, reversal, snapshots)
    vjp = vjp_function(fn, [0, 1], ["one"])
    verify(vjp)
    (loop,) = _reverse_fori_ops(vjp)
    assert loop.attrs["reversal"] == reversal
    cpu, emulated = _both(vjp)
    for n in TRIPS:
        args = [x, w, np.int64(n)]
        expected = cpu(args)
        got = emulated(args)
        for g, e in zip(got, expected, strict=True):
            _same_bits(g, e, f"n={n}")
        if dtype == np.float64:           # and the reference interpreter (NumPy sums in its own order)
            for g, e in zip(got, evaluate(vjp, args), strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-12, err_msg=f"n={n}")
    if n > 0:
        assert np.all(got[1] != 0) and np.all(got[2] != 0)      # the loop ran: a real gradient


def contracting_loss(x, w, n):
    """A loop that stays bounded over thousands of steps (|w| < 1), arithmetic only."""
    def body(i, v):
        return v * w + 0.25 / (1 + v * v) - (i % 7).astype(x.dtype) * 0.01
    return (jitgrad.fori_loop(0, n, body, x) ** 2).sum()


def test_more_trips_than_the_stack_has_snapshots():
    """A stack reversal past MAX_STACK_SNAPSHOTS recomputes states from its snapshots on
    the GPU, where the CPU stores them all: the same bits."""
    x, w = np.array([0.3, -1.2, 0.7]), np.array([0.9, -0.4, 0.5])
    g = jitgrad.grad(contracting_loss, argnums=(0, 1))
    (loop,) = _reverse_fori_ops(jitgrad.jit(g).lower(x, w, np.int64(3)).function)
    assert loop.attrs["reversal"] == STACK
    trips = 3 * cuda_control_flow.MAX_STACK_SNAPSHOTS
    got = jitgrad.jit(g, device=EMULATOR)(x, w, np.int64(trips))
    assert np.all(np.isfinite(got[0])) and np.all(np.isfinite(got[1])) and np.all(got[1] != 0)
    for a, b in zip(got, jitgrad.jit(g)(x, w, np.int64(trips)), strict=True):
        _same_bits(a, b)


# --------------------------------------------------------------------------- while_loop: a data-dependent trip count

def newton_sqrt(a):
    """Newton's iteration to a tolerance: its trip count depends on the data."""
    c, _ = jitgrad.while_loop(lambda s: (np.abs(s[0] * s[0] - a) > 1e-12 * a).any() & (s[1] < 60),
                              lambda s: (0.5 * (s[0] + a / s[0]), s[1] + 1), (a * 0 + 1.0, 0))
    return c.sum()


@pytest.mark.parametrize("budget", [None, "2KB"])
def test_while_gradient_with_a_data_dependent_trip_count(budget):
    g = jitgrad.grad(newton_sqrt, memory_budget=budget)
    (loop,) = _reverse_fori_ops(jitgrad.jit(g).lower(np.ones(4)).function)
    assert loop.attrs["reversal"] == (STACK if budget is None else REVOLVE)
    cpu, emulated = jitgrad.jit(g), jitgrad.jit(g, device=EMULATOR)
    for a in (np.array([2.0, 9.0, 0.25, 1e4]), np.array([3.0, 5e-3, 7e6, 11.0])):
        got = emulated(a)
        _same_bits(got, cpu(a), f"a={a}")
        np.testing.assert_allclose(got, 0.5 / np.sqrt(a), rtol=1e-9)
    # all ones: the test fails on entry, zero trips, and the gradient is that of the initial carry a * 0 + 1
    _same_bits(emulated(np.ones(4)), np.zeros(4))


# --------------------------------------------------------------------------- scan-like loops with xs

def scan_loss(c, xs, w):
    def step(carry, x):
        carry = carry * w + x * carry * 0.5 - x
        return carry, carry.sum() * x
    final, ys = jitgrad.scan(step, c, xs)
    return (final * final).sum() + (ys * ys).sum()


def scan_loss_reversed(c, xs, w):
    def step(carry, x):
        carry = carry * w - x * 0.25
        return carry, carry * x
    final, ys = jitgrad.scan(step, c, xs, reverse=True)
    return (final * final).sum() + (ys * ys).sum()


@pytest.mark.parametrize("loss", [scan_loss, scan_loss_reversed])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_scan_under_a_memory_budget_reads_xs_and_writes_their_cotangents(loss, dtype):
    rng = np.random.default_rng(3)
    c, xs, w = (rng.standard_normal(s).astype(dtype) * 0.5 for s in ((3,), (11, 3), (3,)))
    g = jitgrad.grad(loss, argnums=(0, 1, 2), memory_budget=1500)
    (loop,) = _reverse_fori_ops(jitgrad.jit(g).lower(c, xs, w).function)
    assert loop.attrs["reversal"] == REVOLVE and loop.attrs["length"] == 11 and loop.attrs["num_xs"] >= 1
    expected = jitgrad.jit(g)(c, xs, w)
    got = jitgrad.jit(g, device=EMULATOR)(c, xs, w)
    for a, b in zip(got, expected, strict=True):
        _same_bits(a, b)
    unbudgeted = jitgrad.jit(jitgrad.grad(loss, argnums=(0, 1, 2)))(c, xs, w)   # stacked residuals, no reverse_fori
    for a, b in zip(got, unbudgeted, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12 if dtype == np.float64 else 1e-5)


# --------------------------------------------------------------------------- nested loops

def while_in_fori(x, n):
    def outer(i, v):
        inner, _ = jitgrad.while_loop(lambda s: s[1] < i % 3 + 1, lambda s: (s[0] * 0.75 + v * 0.125, s[1] + 1),
                                      (v, 0))
        return inner * 1.25 + 0.5
    return (jitgrad.fori_loop(0, n, outer, x) ** 2).sum()


def fori_in_scan(x, xs, n):
    def step(c, row):
        inner = jitgrad.fori_loop(0, n, lambda i, v: v * row + 0.25 * v * v, c)
        return inner * 0.5, inner.sum()
    final, ys = jitgrad.scan(step, x, xs)
    return final.sum() + (ys * ys).sum()


@pytest.mark.parametrize("budget", [None, "3KB"])
def test_nested_loops(budget):
    x = np.array([0.4, -0.2, 0.3])
    g = jitgrad.grad(while_in_fori, memory_budget=budget)
    assert len(_reverse_fori_ops(jitgrad.jit(g).lower(x, np.int64(4)).function)) >= 2
    cpu, emulated = jitgrad.jit(g), jitgrad.jit(g, device=EMULATOR)
    for n in (0, 1, 4, 9):
        _same_bits(emulated(x, np.int64(n)), cpu(x, np.int64(n)), f"n={n}")
    xs = np.array([[0.9, 0.5, -0.3], [0.2, 0.8, 0.6], [-0.5, 0.7, 0.4], [0.3, -0.6, 0.9]])
    g = jitgrad.grad(fori_in_scan, argnums=(0, 1), memory_budget=budget)
    lowered = jitgrad.jit(g).lower(x, xs, np.int64(3)).function
    assert [op for op in _reverse_fori_ops(lowered) if op not in lowered.body.ops]    # one inside a region
    cpu, emulated = jitgrad.jit(g), jitgrad.jit(g, device=EMULATOR)
    for n in (0, 3, 6):
        for a, b in zip(emulated(x, xs, np.int64(n)), cpu(x, xs, np.int64(n)), strict=True):
            _same_bits(a, b, f"n={n}")


def complex_loss(z, n):
    return np.sum(np.abs(jitgrad.fori_loop(0, n, lambda i, c: c * c * 0.3 + z * 0.5, z)) ** 2)


def test_batched_trip_counts_and_complex_states():
    """vmap of the gradient with a trip count per slice (the batched reverse_fori), and a
    complex carry (computed as real pairs on both backends)."""
    g = jitgrad.vmap(jitgrad.grad(contracting_loss), in_axes=(0, None, 0))
    x, w, n = np.array([[0.3, -1.2, 0.7], [0.1, 0.2, 0.3], [0.5, 0.5, -0.5]]), np.array([0.9, -0.4, 0.5]), \
        np.array([3, 0, 7])
    assert _reverse_fori_ops(jitgrad.jit(g).lower(x, w, n).function)
    got = jitgrad.jit(g, device=EMULATOR)(x, w, n)
    _same_bits(got, jitgrad.jit(g)(x, w, n))
    _same_bits(got[1], 2 * x[1])                                 # no trips: the gradient of sum(x ** 2)
    z = np.array([0.3 + 0.2j, -0.4 + 0.1j])
    g = jitgrad.grad(complex_loss)
    for trips in (0, 4):
        _same_bits(jitgrad.jit(g, device=EMULATOR)(z, np.int64(trips)), jitgrad.jit(g)(z, np.int64(trips)))


# --------------------------------------------------------------------------- math through libm

def libm_loss(x, n):
    return jitgrad.fori_loop(0, n, lambda i, v: np.sin(v) * 0.5 + np.cos(x * (1 + 0.01 * i).astype(x.dtype)) * v * 0.3,
                            x).sum()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_reversal_gives_the_same_bits_where_libm_differs_from_the_cpu(dtype):
    x = np.array([0.3, -1.2, 2.1, 0.05], dtype)
    reference = None
    for reversal, snapshots in POLICIES:
        fn = with_reversal(trace(libm_loss, (x, np.int64(3))).function, reversal, snapshots)
        vjp = vjp_function(fn, [0], ["one"])
        cpu, emulated = _both(vjp)
        results = [emulated([x, np.int64(n)])[1] for n in TRIPS]
        if reference is None:
            reference = results
        for n, got, first in zip(TRIPS, results, reference, strict=True):
            _same_bits(got, first, f"{reversal} {snapshots} n={n}")
            assert _ulps(got, cpu([x, np.int64(n)])[1]) <= LIBM_ULPS, f"{reversal} {snapshots} n={n}"


# --------------------------------------------------------------------------- the snapshot area

def test_a_stack_reversal_with_few_snapshots_recomputes_the_same_bits(monkeypatch):
    """The GPU's stack is revolve over a static area: squeezed to 2 snapshots it
    recomputes most states, with the same results and a smaller workspace."""
    x, w = np.array([0.3, -1.2, 0.7]), np.array([0.9, -0.4, 0.5])
    vjp = vjp_function(trace(polynomial_loss, (x, w, np.int64(3))).function, [0, 1], ["one"])
    (loop,) = _reverse_fori_ops(vjp)
    assert loop.attrs["reversal"] == STACK
    roomy = backend_for(EMULATOR).compile(vjp)
    monkeypatch.setattr(cuda_control_flow, "MAX_STACK_SNAPSHOTS", 2)
    squeezed = backend_for(EMULATOR).compile(vjp)
    assert squeezed.workspace_bytes < roomy.workspace_bytes
    for n in TRIPS:
        args = [x, w, np.int64(n)]
        for a, b in zip(squeezed(args), roomy(args), strict=True):
            _same_bits(a, b, f"n={n}")


def test_the_snapshot_count_follows_the_reversal_the_state_and_a_static_trip_bound():
    f64 = TensorType((4,), DType.f64)                  # a 32-byte state
    advance = make_function("advance", [TensorType((), DType.i64), f64], lambda a: [add(mul(a[1], a[1]), a[1])])
    back = make_function("back", [TensorType((), DType.i64), f64, f64], lambda a: [mul(a[2], sin(a[1]))])

    def loop(trips, reversal, snapshots):
        def body(s, c, n):
            count = n if trips is None else constant(trips, DType.i64)
            return emit_reverse_fori(count, advance, back, [], [s], [c], reversal, snapshots)
        return build("loop", [f64, f64, TensorType((), DType.i64)], body)

    def count(fn):
        (op,) = _reverse_fori_ops(fn)
        return cuda_control_flow.snapshot_count(op, 32)
    assert count(loop(None, REVOLVE, 5)) == 5
    assert count(loop(None, STACK, 0)) == min(cuda_control_flow.STACK_SNAPSHOT_BYTES // 32,
                                              cuda_control_flow.MAX_STACK_SNAPSHOTS)
    assert count(loop(6, STACK, 0)) == 6                # a whole stack: one snapshot per step
    assert count(loop(6, REVOLVE, 2)) == 2
    assert count(loop(0, STACK, 0)) == 1
    assert count(loop(-3, REVOLVE, 4)) == 1
    # and each runs the op's semantics (the reference interpreter runs run_reversal)
    rng = np.random.default_rng(5)
    s, c = rng.standard_normal(4) * 0.5, rng.standard_normal(4)
    for trips, reversal, snapshots in [(None, REVOLVE, 1), (None, STACK, 0), (6, STACK, 0), (6, REVOLVE, 2),
                                       (0, STACK, 0), (-3, REVOLVE, 4)]:
        fn = loop(trips, reversal, snapshots)
        verify(fn)
        args = [s, c, np.int64(9)]
        expected = evaluate(fn, args)[0]
        cpu, emulated = _both(fn)
        got = emulated(args)[0]
        assert _ulps(got, cpu(args)[0]) <= LIBM_ULPS
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=f"{trips} {reversal} {snapshots}")


# --------------------------------------------------------------------------- second order

def test_forward_over_reverse_through_a_while_loop():
    """The hessian is forward mode over the gradient: a tangent-extended reverse_fori."""
    def loss(x):
        v, _ = jitgrad.while_loop(lambda s: s[1] < 5, lambda s: (s[0] * s[0] * 0.5 + s[0] * x[::-1], s[1] + 1),
                                  (x, 0))
        return (v * v).sum()
    x = np.array([0.3, -0.5, 0.2])
    h = jitgrad.hessian(loss)
    assert _reverse_fori_ops(jitgrad.jit(h).lower(x).function)
    _same_bits(jitgrad.jit(h, device=EMULATOR)(x), jitgrad.jit(h)(x))


# --------------------------------------------------------------------------- on a GPU

@pytest.mark.gpu
@pytest.mark.parametrize("budget", [None, "2KB"])
def test_a_gpu_runs_the_gradient_through_a_while_loop_as_the_cpu_does(budget):
    from test_cuda_backend import gpu_available
    available, why = gpu_available()
    if not available:
        pytest.skip(f"needs a CUDA GPU: {why}")
    g = jitgrad.grad(newton_sqrt, memory_budget=budget)
    a = np.array([2.0, 9.0, 0.25, 1e4])
    np.testing.assert_allclose(jitgrad.jit(g, device="gpu")(a), jitgrad.jit(g)(a), rtol=1e-12)
    x, w = np.array([0.3, -1.2, 0.7]), np.array([0.9, -0.4, 0.5])
    g = jitgrad.grad(contracting_loss, argnums=(0, 1), memory_budget=budget)
    for n in (0, 5, 3000):         # 3000 trips: more than the stack's snapshots, so states are recomputed
        for got, expected in zip(jitgrad.jit(g, device="gpu")(x, w, np.int64(n)),
                                 jitgrad.jit(g)(x, w, np.int64(n)), strict=True):
            _same_bits(got, expected, f"n={n}")
