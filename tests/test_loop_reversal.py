"""Reverse mode through loops whose trip count is known only at run time (while_loop,
fori_loop with traced bounds): the `reverse_fori` op and its two reversals, `stack`
(every state stored once, O(T) memory and work) and `revolve` (binomial checkpointing
over a fixed number of snapshots, chosen under memory_budget). The schedule against its
bounds, the compiled op against the reference interpreter, central differences and the
unrolled loop, to second order; memory measured in a child process."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import jitgrad
from helpers import check_grads
from jitgrad.backends.cpu import CPUBackend
from jitgrad.errors import VerificationError
from jitgrad.interpreter import evaluate
from jitgrad.ir import current_builder, verify
from jitgrad.ir.clone import clone_region
from jitgrad.ir.parser import parse_function
from jitgrad.passes.manager import rewrite_function
from jitgrad.passes.jvp import jvp_function
from jitgrad.passes.reverse import vjp_function
from jitgrad.primitives.control_flow import (REVOLVE, STACK, binomial_reach, fori_p, reverse_fori_p, run_reversal,
                                             scan_p, while_p)
from jitgrad.tracing.tracer import trace


# --------------------------------------------------------------------------- the schedule

def replay(trips, policy, snapshots):
    """run_reversal on integer states (state i is i): the steps reversed, in order, and
    how often each state was computed, with the most snapshots held at once."""
    advanced = [0] * max(trips, 1)
    reversed_steps = []

    def advance(i, state):
        assert state == i
        advanced[i + 1 if i + 1 < trips else i] += 1
        return i + 1

    def back(i, state, carry):
        assert state == i, f"step {i} got state {state}"
        reversed_steps.append(i)
        return carry + 1
    assert run_reversal(trips, policy, snapshots, 0, advance, back, 0) == max(trips, 0)
    return reversed_steps, advanced


@pytest.mark.parametrize("snapshots", [1, 2, 3, 4, 6])
def test_revolve_reverses_every_step_within_the_binomial_bound(snapshots):
    for trips in range(0, 90):
        steps, advanced = replay(trips, REVOLVE, snapshots)
        assert steps == list(range(trips - 1, -1, -1))
        if trips:
            repetitions = next(r for r in range(trips + 1) if binomial_reach(snapshots, r) >= trips)
            assert max(advanced) <= repetitions, (trips, snapshots, advanced)


def test_stack_computes_each_state_once():
    for trips in (0, 1, 2, 7, 50):
        steps, advanced = replay(trips, STACK, 0)
        assert steps == list(range(trips - 1, -1, -1))
        assert sum(advanced) == max(trips - 1, 0)


def test_revolve_holds_at_most_its_snapshots_and_stack_holds_every_state():
    for trips, snapshots in ((100, 3), (1000, 8), (5000, 40)):
        advances, held = [0], []

        def counted(i, state):
            advances[0] += 1
            return state + 1
        assert run_reversal(trips, REVOLVE, snapshots, 0, counted, lambda i, s, c: c + 1, 0, held) == trips
        assert max(held) == snapshots
        # at most r * T advances, r the least repetition count covering T
        r = next(r for r in range(trips) if binomial_reach(snapshots, r) >= trips)
        assert advances[0] <= r * trips
    held = []
    run_reversal(1000, STACK, 0, 0, lambda i, s: s + 1, lambda i, s, c: c, 0, held)
    assert max(held) == 1000


@functools.lru_cache(maxsize=None)
def optimal_advances(steps, free):
    """The fewest advances that reverse `steps` steps from a stored state with `free`
    snapshots (that one included): exhaustive search over every first split."""
    if steps == 1:
        return 0
    if free == 1:
        return steps * (steps - 1) // 2
    return min(m + optimal_advances(steps - m, free - 1) + optimal_advances(m, free) for m in range(1, steps))


def test_revolve_split_comes_near_the_optimal_schedule():
    for snapshots in (2, 3, 4):
        for trips in range(2, 70):
            count = [0]

            def advance(i, state):
                count[0] += 1
                return state
            run_reversal(trips, REVOLVE, snapshots, 0, advance, lambda i, s, c: c, 0)
            assert count[0] <= 1.05 * optimal_advances(trips, snapshots) + 1, (trips, snapshots)


# --------------------------------------------------------------------------- compiled against references

def body(i, v, x):
    return np.sin(v) * 0.5 + np.cos(x * (1 + 0.01 * i)) * v * 0.3


def fori_loss(x, n):
    return jitgrad.fori_loop(0, n, lambda i, v: body(i, v, x), x).sum()


def fori_python(x, n):
    v = x
    for i in range(n):
        v = body(i, v, x)
    return v.sum()


def with_reversal(fn, reversal, snapshots):
    """`fn` with each top-level loop set to `reversal` with `snapshots`."""
    def rewrite(op, operands):
        if op.opdef not in (while_p, fori_p):
            return None
        new = current_builder().create(op.opdef, list(operands), dict(op.attrs, reversal=reversal,
                                                                      snapshots=snapshots),
                                       regions=[clone_region(r, {}) for r in op.regions],
                                       result_types=[r.type for r in op.results])
        return list(new.results)
    return rewrite_function(fn, rewrite)


def central(f, x, eps=1e-6):
    return np.array([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(x.size)])


POLICIES = [(STACK, 0), (REVOLVE, 1), (REVOLVE, 2), (REVOLVE, 3), (REVOLVE, 8)]


@pytest.mark.parametrize("reversal,snapshots", POLICIES)
def test_compiled_reversal_matches_interpreter_and_central_differences(reversal, snapshots):
    x = np.array([0.3, -1.2])
    fn = with_reversal(trace(fori_loss, (x, np.int64(3))).function, reversal, snapshots)
    vjp = vjp_function(fn, [0], ["one"])
    verify(vjp)
    assert any(op.opdef is reverse_fori_p and op.attrs["reversal"] == reversal for op in vjp.body.ops)
    run = CPUBackend().compile(vjp)
    for n in (*range(0, 14), 40):
        args = [x, np.int64(n)]
        compiled = run(args)[1]
        np.testing.assert_allclose(compiled, evaluate(vjp, args)[1], rtol=1e-13, atol=1e-300, err_msg=f"n={n}")
        np.testing.assert_allclose(compiled, central(lambda y: fori_python(y, n), x), rtol=1e-6, atol=1e-9,
                                   err_msg=f"n={n}")


@pytest.mark.parametrize("reversal,snapshots", [(STACK, 0), (REVOLVE, 2)])
def test_second_order_through_each_reversal(reversal, snapshots):
    x = np.array([0.4, -0.3])
    fn = with_reversal(trace(fori_loss, (x, np.int64(5))).function, reversal, snapshots)
    check_grads(fn, [x, np.int64(5)], order=2)


def doublings(x):
    """A while loop whose trip count depends on the input (how many steps bring x past 50)."""
    v, _ = jitgrad.while_loop(lambda s: s[0].sum() < 50.0, lambda s: (s[0] * 1.5 + np.sin(s[0]) * s[1], s[1]),
                              (x, x[::-1] * 0.1))
    return (v * v).sum()


def doublings_unrolled(trips):
    """The same loop as straight-line code for a known trip count (traced, it is unrolled)."""
    def f(x):
        v, w = x, x[::-1] * 0.1
        for _ in range(trips):
            v = v * 1.5 + np.sin(v) * w
        return (v * v).sum()
    return f


def doublings_trips(x):
    v, trips = x, 0
    while v.sum() < 50.0:
        v, trips = v * 1.5 + np.sin(v) * x[::-1] * 0.1, trips + 1
    return trips


@pytest.mark.parametrize("budget", [None, "3KB"])
def test_while_gradient_matches_the_unrolled_loop_and_its_hessian(budget):
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # the budget is met: no MemoryBudgetWarning
        g = jitgrad.jit(jitgrad.grad(doublings, memory_budget=budget))
        g(np.array([0.3, 0.2, 0.1]))
    for x in (np.array([0.3, 0.2, 0.1]), np.array([2.0, 1.0, 0.5]), np.array([20.0, 10.0, 30.0])):
        trips = doublings_trips(x)
        unrolled = jitgrad.grad(doublings_unrolled(trips))(x)
        np.testing.assert_allclose(g(x), unrolled, rtol=1e-12, err_msg=f"trips={trips}")
    x = np.array([0.3, 0.2, 0.1])
    unrolled = doublings_unrolled(doublings_trips(x))
    h = jitgrad.hessian(doublings)(x)
    np.testing.assert_allclose(h, jitgrad.hessian(unrolled)(x), rtol=1e-10)
    # reverse over reverse, compiled: the gradient of the gradient's norm
    gg = jitgrad.jit(jitgrad.grad(lambda y: (jitgrad.grad(doublings, memory_budget=budget)(y) ** 2).sum()))
    np.testing.assert_allclose(gg(x), jitgrad.grad(lambda y: (jitgrad.grad(unrolled)(y) ** 2).sum())(x),
                               rtol=1e-10)


# --------------------------------------------------------------------------- memory_budget and memory

def while_loss(x, n):
    v, _ = jitgrad.while_loop(lambda s: s[1] < n, lambda s: (np.sin(s[0]) * 0.5 + x * 0.3, s[1] + 1), (x, 0))
    return v.sum()


def test_memory_budget_uses_revolve_reports_it_and_stays_under_the_budget():
    x = np.linspace(0.1, 1.0, 16)
    exact = jitgrad.grad(while_loss)
    for budget in (20_000, 6_000):
        g = jitgrad.grad(while_loss, memory_budget=budget)
        peaks = set()
        for n in (0, 1, 10, 3000):
            lowered = g.lower(x, np.int64(n))
            report = lowered.remat
            (loop,) = report.loops
            assert loop.snapshots >= 2 and loop.bytes <= budget and report.fits
            assert "revolve" in str(report) and f"{loop.snapshots} snapshots" in str(report)
            assert 'reversal = "revolve"' in lowered.as_text("remat")
            peak = dict(lowered.memory_report())["compiled"]
            assert peak <= budget
            peaks.add(peak)
            np.testing.assert_allclose(g(x, np.int64(n)), exact(x, np.int64(n)), rtol=1e-12)
        assert len(peaks) == 1                     # the same for every trip count


MEMORY_CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, jitgrad
    sys.path.insert(0, {tests!r})
    from test_loop_reversal import while_loss
    x = np.linspace(0.1, 1.0, 16)
    policy, trips = sys.argv[1], int(sys.argv[2])
    g = jitgrad.jit(jitgrad.grad(while_loss, memory_budget=None if policy == "stack" else "20KB"))
    g(x, np.int64(2))                              # compiled
    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    def peak():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                               # the peak resident size restarts from here
    before = resident()
    g(x, np.int64(trips))
    grown = peak() - before
    settled = resident()
    for _ in range(5):
        g(x, np.int64(trips))
    print(json.dumps({{"grown": grown, "leaked": resident() - settled}}))
""")


def measure(policy, trips):
    child = subprocess.run([sys.executable, "-c", MEMORY_CHILD.format(tests=str(__import__("pathlib").Path(
        __file__).parent)), policy, str(trips)], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_stack_memory_grows_with_trip_count_revolve_does_not_and_nothing_leaks():
    trips, state = 400_000, 16 * 8 + 8             # each state: the 16-element carry and the counter
    stack = measure("stack", trips)
    assert stack["grown"] >= 0.8 * trips * state   # the heap stack of every state
    assert stack["leaked"] < 0.1 * trips * state   # freed after each backward pass
    revolve = measure("revolve", trips)
    assert revolve["grown"] < 0.05 * trips * state
    assert revolve["leaked"] < 0.1 * trips * state


# --------------------------------------------------------------------------- IR

def test_reverse_fori_round_trips_and_the_verifier_checks_its_policy():
    x = np.array([0.3, -1.2])
    fn = with_reversal(trace(fori_loss, (x, np.int64(3))).function, REVOLVE, 3)
    text = str(vjp_function(fn, [0], ["one"]))
    assert 'reversal = "revolve", snapshots = 3' in text
    parsed = parse_function(text)
    verify(parsed)
    assert str(parsed) == text
    with pytest.raises(VerificationError, match="reversal must be one of stack, revolve"):
        verify(parse_function(text.replace('reversal = "revolve"', 'reversal = "sqrt"')))
    with pytest.raises(VerificationError, match="at least 1 for revolve and at most 65536, not 0"):
        verify(parse_function(text.replace("snapshots = 3", "snapshots = 0")))
    with pytest.raises(VerificationError, match="not 65537"):
        verify(parse_function(text.replace("snapshots = 3", "snapshots = 65537")))


INTERRUPTED_CHILD = textwrap.dedent("""
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)   # a runner started in the background of a non-interactive shell ignores SIGINT, and children inherit it
    import numpy as np, jitgrad
    def loss(x, n):
        v, _ = jitgrad.while_loop(lambda s: s[1] < n, lambda s: (np.sin(np.sin(s[0])) * 0.5 + x * 0.3, s[1] + 1),
                                  (x, 0))
        return v.sum()
    g = jitgrad.jit(jitgrad.grad(loss))
    x = np.linspace(0.1, 1.0, 16)
    g(x, np.int64(3)); g(x, np.int64(3))
    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    print(resident(), flush=True)
    try:
        g(x, np.int64(3_000_000))                 # a 408 MB stack, interrupted at 100 MB
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", resident(), flush=True)
""")


def test_ctrl_c_during_the_stack_reversal_frees_the_stack():
    """The child is interrupted once its stack holds over 100 MB (filled by the backward
    pass's replay); the block is freed on the way out."""
    import signal
    import time
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        baseline = int(child.stdout.readline())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(f"/proc/{child.pid}/statm") as f:
                if int(f.read().split()[1]) * 4096 > baseline + 100 * 2 ** 20:
                    break
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=60)
        word, after = out.split()
        assert word == "interrupted"
        assert int(after) < baseline + 20 * 2 ** 20
    finally:
        child.kill()


def nested(x, n, m):
    def outer(i, v):
        return jitgrad.fori_loop(0, m, lambda j, u: np.sin(u) * 0.7 + x * 0.1 * (i + 1), v)
    return jitgrad.fori_loop(0, n, outer, x).sum()


def nested_python(x, n, m):
    v = x
    for i in range(n):
        for _ in range(m):
            v = np.sin(v) * 0.7 + x * 0.1 * (i + 1)
    return v.sum()


@pytest.mark.parametrize("budget", [None, "8KB"])
def test_nested_loops_reverse_under_each_policy(budget):
    g = jitgrad.grad(nested, memory_budget=budget)
    x = np.array([0.3, 0.5])
    for n, m in ((0, 3), (3, 0), (4, 5), (13, 7)):
        np.testing.assert_allclose(g(x, np.int64(n), np.int64(m)), central(lambda y: nested_python(y, n, m), x),
                                   rtol=1e-6, atol=1e-9, err_msg=f"n={n}, m={m}")
    if budget:
        lowered = g.lower(x, np.int64(4), np.int64(5))
        assert len(lowered.remat.loops) == 2 and lowered.remat.fits
        assert lowered.as_text("remat").count('reversal = "revolve"') == 2


# --------------------------------------------------------------------------- scan under memory_budget

def rnn(w, xs, reverse=False):
    """A scan with a carry, xs and ys, reading a closure."""
    def step(h, x):
        h = np.tanh(h * w + x)
        return h, (h * h).sum()
    h, ys = jitgrad.scan(step, w * 0.5, xs, reverse=reverse)
    return (h * h).sum() + (ys * np.arange(1.0, ys.shape[0] + 1)).sum()


def rnn_python(w, xs, reverse=False):
    h, ys = w * 0.5, np.zeros(xs.shape[0])
    for i in (reversed(range(xs.shape[0])) if reverse else range(xs.shape[0])):
        h = np.tanh(h * w + xs[i])
        ys[i] = (h * h).sum()
    return (h * h).sum() + (ys * np.arange(1.0, ys.shape[0] + 1)).sum()


def with_scan_reversal(fn, snapshots):
    """`fn` with each top-level scan set to revolve with `snapshots`."""
    def rewrite(op, operands):
        if op.opdef is not scan_p:
            return None
        new = current_builder().create(op.opdef, list(operands), dict(op.attrs, reversal=REVOLVE,
                                                                      snapshots=snapshots),
                                       regions=[clone_region(r, {}) for r in op.regions],
                                       result_types=[r.type for r in op.results])
        return list(new.results)
    return rewrite_function(fn, rewrite)


def central_all(f, args, eps=1e-6):
    """Central differences of scalar f with respect to each array of `args`."""
    grads = []
    for k, a in enumerate(args):
        def moved(step, k=k, a=a):
            return f(*args[:k], a + step.reshape(a.shape), *args[k + 1:])
        grads.append(np.array([(moved(eps * e) - moved(-eps * e)) / (2 * eps)
                               for e in np.eye(a.size)]).reshape(a.shape))
    return grads


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("snapshots", [1, 3])
def test_revolve_scan_compiled_matches_interpreter_and_central_differences(reverse, snapshots):
    rng = np.random.default_rng(4)
    w = np.array([0.5, -0.3, 0.8])
    for length in (1, 7, 30):
        xs = rng.normal(size=(length, 3)) * 0.5
        fn = with_scan_reversal(trace(functools.partial(rnn, reverse=reverse), (w, xs)).function, snapshots)
        vjp = vjp_function(fn, [0, 1], ["one"])
        verify(vjp)
        (loop,) = [op for op in vjp.body.ops if op.opdef is reverse_fori_p]
        assert loop.attrs["reversal"] == REVOLVE and loop.attrs["length"] == length and loop.attrs["num_xs"] >= 1
        assert not any(op.opdef is scan_p and len(op.results) > 1 and op.results[-1].type.shape[:1] == (length,)
                       and op.results[-1].type.ndim > 1 for op in vjp.body.ops)     # no stacked residuals
        compiled = CPUBackend().compile(vjp)([w, xs])
        interpreted = evaluate(vjp, [w, xs])
        stacked = evaluate(vjp_function(trace(functools.partial(rnn, reverse=reverse), (w, xs)).function, [0, 1],
                                        ["one"]), [w, xs])
        expected = central_all(lambda a, b: rnn_python(a, b, reverse), [w, xs])
        for got, ref, by_stack, exact in zip(compiled[1:], interpreted[1:], stacked[1:], expected, strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-300, err_msg=f"length={length}")
            np.testing.assert_allclose(got, by_stack, rtol=1e-12, atol=1e-14, err_msg=f"length={length}")
            np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-6, err_msg=f"length={length}")


def test_revolve_scan_to_second_order():
    """Forward over reverse through the revolve reversal of a scan (the tangent-extended
    reverse_fori), and the first-order rules of that function in both modes."""
    w = np.array([0.4, -0.3])
    xs = np.random.default_rng(5).normal(size=(6, 2)) * 0.5
    fn = with_scan_reversal(trace(rnn, (w, xs)).function, 2)
    check_grads(fn, [w, xs], order=2, modes=("fwd",))
    check_grads(fn, [w, xs], order=1, modes=("rev",))
    vjp = vjp_function(fn, [0, 1], ["one"])
    check_grads(vjp, [w, xs], order=1, modes=("fwd",))


def test_scan_gradient_and_hessian_under_a_budget_match_the_unrolled_loop():
    rng = np.random.default_rng(6)
    w = np.array([0.5, -0.3, 0.8])
    for reverse in (False, True):
        xs = rng.normal(size=(12, 3)) * 0.5

        def unrolled(a, b):
            h, total = a * 0.5, 0.0
            for i in (reversed(range(b.shape[0])) if reverse else range(b.shape[0])):
                h = np.tanh(h * a + b[i])
                total = total + (h * h).sum() * (i + 1)
            return (h * h).sum() + total
        with warnings.catch_warnings():
            warnings.simplefilter("error")           # the budget is met
            g = jitgrad.jit(jitgrad.grad(functools.partial(rnn, reverse=reverse), argnums=(0, 1),
                                         memory_budget="3KB"))
            got = g(w, xs)
        for a, b in zip(got, jitgrad.grad(unrolled, argnums=(0, 1))(w, xs), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        lowered = jitgrad.grad(functools.partial(rnn, reverse=reverse), memory_budget="3KB").lower(w, xs)
        (loop,) = lowered.remat.loops
        assert loop.state_bytes == 24 and f"{loop.snapshots} snapshots" in str(lowered.remat)
        assert 'reversal = "revolve"' in lowered.as_text("remat")
        h = jitgrad.jacfwd(jitgrad.grad(lambda a: rnn(a, xs, reverse), memory_budget="3KB"))(w)
        np.testing.assert_allclose(h, jitgrad.hessian(lambda a: unrolled(a, xs))(w), rtol=1e-10, atol=1e-12)


def test_reverse_over_a_revolve_scan_gradient_is_refused_clearly():
    w, xs = np.array([0.5, -0.3]), np.ones((4, 2)) * 0.1
    inner = jitgrad.grad(rnn, memory_budget="2KB")
    with pytest.raises(jitgrad.GradientError, match="reverse mode over the gradient of a scan under memory_budget"):
        jitgrad.grad(lambda a: (inner(a, xs) ** 2).sum())(w)


def counted(x, trips):
    """fori_loop with Python-int bounds: a scan of `trips` steps with no xs."""
    return jitgrad.fori_loop(0, trips, lambda i, v: np.sin(v) * 0.5 + x * 0.3, x).sum()


def test_scan_peak_under_a_budget_does_not_grow_with_its_length():
    x = np.linspace(0.1, 1.0, 16)
    peaks, stacked = set(), []
    for trips in (10, 200, 3000):
        f = functools.partial(counted, trips=trips)
        lowered = jitgrad.grad(f, memory_budget="6KB").lower(x)
        peak = dict(lowered.memory_report())["compiled"]
        assert peak <= 6000 and lowered.remat.fits
        peaks.add(peak)
        stacked.append(dict(jitgrad.grad(f).lower(x).memory_report())["compiled"])
        v = x
        for _ in range(trips):
            v = np.sin(v) * 0.5 + x * 0.3
        np.testing.assert_allclose(jitgrad.grad(f, memory_budget="6KB")(x), jitgrad.grad(f)(x), rtol=1e-12)
    assert len(peaks) == 1                              # the same for every length
    assert stacked[2] > 3000 * 16 * 8                   # without a budget: a residual row per step
    # with xs (and no ys, which the program itself would hold whole): beyond the arguments
    # and outputs (xs and their cotangents), the same for every length when the budget
    # leaves the same room
    def final_state(w, xs):
        h, _ = jitgrad.scan(lambda h, x: (np.tanh(h * w + x), None), w * 0.5, xs)
        return (h * h).sum()
    w = np.array([0.5, -0.3, 0.8])
    extra = set()
    for length in (10, 400):
        xs = np.full((length, 3), 0.1)
        io = 2 * (w.nbytes + xs.nbytes)
        lowered = jitgrad.grad(final_state, argnums=(0, 1), memory_budget=io + 4000).lower(w, xs)
        assert lowered.remat.fits and lowered.remat.segments == 1
        extra.add(dict(lowered.memory_report())["compiled"] - io)
    assert len(extra) == 1 and extra.pop() <= 4000


def test_reversed_scan_round_trips_and_the_verifier_checks_it():
    w, xs = np.array([0.3, -1.2]), np.ones((5, 2)) * 0.1
    fn = with_scan_reversal(trace(rnn, (w, xs)).function, 3)
    text = str(vjp_function(fn, [0, 1], ["one"]))
    assert "length = 5" in text and "num_xs = " in text
    parsed = parse_function(text)
    verify(parsed)
    assert str(parsed) == text
    with pytest.raises(VerificationError, match="leading axis of the length 6"):
        verify(parse_function(text.replace("length = 5", "length = 6")))


def swapping(x, n):
    """A while loop whose next state reads the other state value: an advance writing one
    output over its input before reading it for the next would go wrong."""
    a, b, _ = jitgrad.while_loop(lambda s: s[2] < n, lambda s: (np.sin(s[1]) + s[0] * 0.1, s[0] * 1.1, s[2] + 1),
                                 (x, x * 0.5, 0))
    return (a * b).sum()


@pytest.mark.parametrize("snapshots", [1, 2, 5])
def test_revolve_advances_into_fresh_buffers(snapshots):
    x = np.array([0.3, -0.7])
    fn = with_reversal(trace(swapping, (x, np.int64(3))).function, REVOLVE, snapshots)
    vjp = vjp_function(fn, [0], ["one"])
    run = CPUBackend().compile(vjp)
    for n in range(0, 10):
        np.testing.assert_allclose(run([x, np.int64(n)])[1], evaluate(vjp, [x, np.int64(n)])[1], rtol=1e-13,
                                   atol=1e-300, err_msg=f"n={n}")


def test_forward_over_reverse_is_one_tangent_extended_backward_loop():
    """A hessian through a while/fori loop runs one backward loop over the states and
    their tangents (O(T) steps), not the recomputing form's nested loops."""
    x = np.array([0.3, -1.2])
    for reversal, snapshots in ((STACK, 0), (REVOLVE, 2)):
        fn = with_reversal(trace(fori_loss, (x, np.int64(3))).function, reversal, snapshots)
        vjp = vjp_function(fn, [0], ["one"])
        (first,) = [op for op in vjp.body.ops if op.opdef is reverse_fori_p]
        forward_over = jvp_function(vjp, [0])
        verify(forward_over)
        (loop,) = [op for op in forward_over.body.ops if op.opdef is reverse_fori_p]
        assert loop.attrs["reversal"] == reversal and loop.attrs["num_passive"] == 2 * first.attrs["num_passive"]
        assert not [op for region in loop.regions for op in region.block.ops if op.regions]
        run = CPUBackend().compile(forward_over)
        for n in (0, 1, 7, 20):
            args = [x, np.int64(n), np.array([0.7, -0.2])]
            np.testing.assert_allclose(run(args)[-1], evaluate(forward_over, args)[-1], rtol=1e-12, atol=1e-300)
            np.testing.assert_allclose(run(args)[-1], central(lambda y: evaluate(vjp, [y, np.int64(n)])[1], x).T
                                       @ args[2], rtol=1e-6, atol=1e-8)


def test_vmap_and_a_revolve_scan_gradient_compose():
    w = np.array([0.5, -0.3, 0.8])
    batch = np.random.default_rng(1).normal(size=(3, 6, 3)) * 0.3
    per_example = jitgrad.vmap(jitgrad.grad(rnn, argnums=(0, 1), memory_budget="3KB"), in_axes=(None, 0))(w, batch)
    for k in range(2):
        np.testing.assert_allclose(per_example[k], np.stack([jitgrad.grad(rnn, argnums=(0, 1))(w, xs)[k]
                                                             for xs in batch]), rtol=1e-12, atol=1e-14)
    batched = lambda a: jitgrad.vmap(rnn, in_axes=(None, 0))(a, batch).sum()      # noqa: E731
    np.testing.assert_allclose(jitgrad.grad(batched, memory_budget="3KB")(w), jitgrad.grad(batched)(w), rtol=1e-12)


def scan_of_scans(x, xs):
    """A scan whose step runs a fixed-length fori_loop (a scan too)."""
    def step(h, row):
        h = jitgrad.fori_loop(0, 3, lambda j, u: np.tanh(u * x + row), h)
        return h, h.sum()
    h, ys = jitgrad.scan(step, x, xs)
    return (h * h).sum() + ys.sum()


def test_nested_scans_reverse_by_revolve_under_a_budget():
    x, xs = np.array([0.3, 0.5]), np.random.default_rng(0).normal(size=(9, 2))
    lowered = jitgrad.grad(scan_of_scans, memory_budget="2KB").lower(x, xs)
    assert len(lowered.remat.loops) == 2 and lowered.as_text("remat").count('reversal = "revolve"') == 2
    for got, exact in zip(jitgrad.grad(scan_of_scans, argnums=(0, 1), memory_budget="2KB")(x, xs),
                          jitgrad.grad(scan_of_scans, argnums=(0, 1))(x, xs), strict=True):
        np.testing.assert_allclose(got, exact, rtol=1e-12, atol=1e-15)
    h = jitgrad.jacfwd(jitgrad.grad(lambda a: scan_of_scans(a, xs), memory_budget="2KB"))(x)
    np.testing.assert_allclose(h, jitgrad.hessian(lambda a: scan_of_scans(a, xs))(x), rtol=1e-11, atol=1e-14)
