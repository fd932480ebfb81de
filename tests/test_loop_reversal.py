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
from jitgrad.passes.reverse import vjp_function
from jitgrad.primitives.control_flow import (REVOLVE, STACK, binomial_reach, fori_p, reverse_fori_p, run_reversal,
                                             while_p)
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
