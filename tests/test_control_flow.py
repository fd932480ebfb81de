"""Control-flow region ops (cond, while, fori, scan) and jitgrad.cond/switch/while_loop/
fori_loop/scan: values against plain Python and the reference interpreter, compiled
against both, derivatives against central differences (forward, reverse, second order,
through the shared `check_grads` harness), loops whose trip count depends on the input,
nesting, empty loops, pytree carries, IR text round trips and error messages."""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad
from helpers import check_grads
from jitgrad.interpreter import evaluate
from jitgrad.ir import verify
from jitgrad.ir.parser import parse_function
from jitgrad.tracing.tracer import trace


def traced(f, *args):
    fn = trace(f, args).function
    verify(fn)
    return fn


def rnn(h0, xs, w):
    def step(h, x):
        h = np.tanh(w * h + x)
        return h, h * h
    h, ys = jitgrad.scan(step, h0, xs)
    return h.sum() + ys.sum()


def rnn_python(h0, xs, w):
    h, total = h0, 0.0
    for x in xs:
        h = np.tanh(w * h + x)
        total = total + (h * h).sum()
    return h.sum() + total


def newton_sqrt(a):
    """A while loop whose trip count depends on the input."""
    def body(state):
        x, k = state
        return 0.5 * (x + a / x), k + 1
    x, k = jitgrad.while_loop(lambda s: np.abs(s[0] * s[0] - a) > 1e-10 * a, body, (a + 1.0, 0))
    return x


def power_fori(x, n):
    return jitgrad.fori_loop(0, n, lambda i, v: v * np.sin(v) + x, x)


def branchy(x):
    return jitgrad.cond(x.sum() > 0, lambda v: np.sin(v) * v, lambda v: np.exp(v) - 1, x)


RNG = np.random.default_rng(0)
H0 = RNG.normal(size=3)
XS = RNG.normal(size=(5, 3))
W = np.array(0.7)


# --------------------------------------------------------------------------- values

@pytest.mark.parametrize("case", ["rnn", "newton", "fori", "cond_pos", "cond_neg", "switch", "reverse_scan"])
def test_values_match_python_interpreter_and_compiled(case):
    if case == "rnn":
        f, args, expected = rnn, (H0, XS, W), rnn_python(H0, XS, W)
    elif case == "newton":
        f, args, expected = newton_sqrt, (np.array(7.0),), np.sqrt(7.0)
    elif case == "fori":
        args = (np.array([0.3, -0.2]),)
        v = args[0]
        for _ in range(4):
            v = v * np.sin(v) + args[0]
        f, expected = (lambda x: power_fori(x, 4)), v
    elif case in ("cond_pos", "cond_neg"):
        x = np.array([0.5, 0.25]) * (1 if case == "cond_pos" else -1)
        f, args = branchy, (x,)
        expected = np.sin(x) * x if x.sum() > 0 else np.exp(x) - 1
    elif case == "switch":
        branches = [lambda v: v + 1, lambda v: v * 3, lambda v: -v]
        f = lambda i, v: jitgrad.switch(i, branches, v)     # noqa: E731
        for i in (-2, 0, 1, 2, 9):
            x = np.array([1.5, 2.0])
            got = jitgrad.jit(f)(np.int64(i), x)
            np.testing.assert_allclose(got, branches[min(max(i, 0), 2)](x))
            np.testing.assert_allclose(evaluate(traced(f, np.int64(i), x), [np.int64(i), x])[0], got)
        return
    else:
        def f(xs):
            return jitgrad.scan(lambda c, x: (c + x, c * x), 0.0, xs, reverse=True)
        args = (np.arange(4.0),)
        c, ys, acc = 0.0, np.zeros(4), 0.0
        for i in range(3, -1, -1):
            ys[i] = acc * args[0][i]
            acc = acc + args[0][i]
        got = jitgrad.jit(f)(*args)
        np.testing.assert_allclose(got[0], acc)
        np.testing.assert_allclose(got[1], ys)
        return
    np.testing.assert_allclose(jitgrad.jit(f)(*args), expected, rtol=1e-12)
    np.testing.assert_allclose(evaluate(traced(f, *args), list(args))[0], expected, rtol=1e-12)


def test_plain_arrays_run_the_python_loop():
    assert jitgrad.fori_loop(0, 3, lambda i, v: v + i, 10) == 13
    assert jitgrad.while_loop(lambda v: v < 5, lambda v: v + 2, 0) == 6
    c, ys = jitgrad.scan(lambda c, x: (c + x, 2 * x), 0.0, np.arange(3.0))
    assert c == 3.0 and list(ys) == [0.0, 2.0, 4.0]
    assert jitgrad.cond(False, lambda v: v, lambda v: -v, 2.0) == -2.0


def test_zero_trip_loops():
    x = np.array([1.0, 2.0])
    f = jitgrad.jit(lambda x: (jitgrad.fori_loop(3, 3, lambda i, v: v * 2, x),
                               jitgrad.fori_loop(5, 2, lambda i, v: v * 2, x),
                               jitgrad.while_loop(lambda v: v.sum() < 0, lambda v: v * 2, x),
                               jitgrad.scan(lambda c, x: (c * x, c), x, np.zeros((0, 2)))[0]))
    for out in f(x):
        np.testing.assert_array_equal(out, x)
    n = jitgrad.jit(lambda x, n: jitgrad.fori_loop(0, n, lambda i, v: v * 2, x))
    np.testing.assert_array_equal(n(x, np.int64(-3)), x)
    np.testing.assert_array_equal(n(x, np.int64(3)), x * 8)
    g = jitgrad.grad(lambda x: jitgrad.fori_loop(2, 2, lambda i, v: v * v, x).sum())(x)
    np.testing.assert_array_equal(g, np.ones(2))


def test_pytree_carries_and_ys():
    def f(x):
        def step(state, xs):
            a, b = xs["a"], xs["b"]
            return {"s": state["s"] + a * b, "n": state["n"] + 1}, (a - b, {"p": a * state["s"]})
        init = {"s": np.zeros(2), "n": np.int64(0)}
        final, (d, extra) = jitgrad.scan(step, init, {"a": x, "b": x[::-1] * 2})
        return final["s"].sum() + d.sum() + extra["p"].sum() + final["n"]
    x = RNG.normal(size=(4, 2))
    expected = 0.0
    s = np.zeros(2)
    for a, b in zip(x, x[::-1] * 2):
        expected += (a - b).sum() + (a * s).sum()
        s = s + a * b
    expected += s.sum() + 4
    np.testing.assert_allclose(jitgrad.jit(f)(x), expected)
    check_grads(traced(f, x), [x], order=1)


# --------------------------------------------------------------------------- derivatives

@pytest.mark.parametrize("case", ["rnn", "fori_static", "fori_traced", "newton", "cond", "while_counted"])
def test_derivatives_to_second_order(case):
    if case == "rnn":
        fn, args = traced(rnn, H0, XS, W), [H0, XS, W]
    elif case == "fori_static":
        x = np.array([0.3, -0.2])
        fn, args = traced(lambda x: power_fori(x, 3), x), [x]
    elif case == "fori_traced":
        x = np.array([0.3, -0.2])
        fn, args = traced(lambda x, n: power_fori(x, n), x, np.int64(3)), [x, np.int64(3)]
    elif case == "newton":
        fn, args = traced(newton_sqrt, np.array(3.0)), [np.array(3.0)]
    elif case == "cond":
        x = np.array([0.5, -0.2])
        fn, args = traced(branchy, x), [x]
    else:
        def f(x):
            return jitgrad.while_loop(lambda s: s[1] < 4, lambda s: (np.sin(s[0]) * s[0] + 1.0, s[1] + 1),
                                      (x, 0))[0].sum()
        x = np.array([0.4, 0.9])
        fn, args = traced(f, x), [x]
    check_grads(fn, args, order=2)


def test_reverse_mode_while_with_data_dependent_trip_count():
    grad = jitgrad.jit(jitgrad.grad(newton_sqrt))
    for a in (0.5, 2.0, 100.0, 1e6):
        np.testing.assert_allclose(grad(np.array(a)), 0.5 / np.sqrt(a), rtol=1e-8)

    def doublings(x):   # trip count: how many doublings bring x over 100
        return jitgrad.while_loop(lambda v: v < 100.0, lambda v: v * 2.0 + np.sin(v), x)
    g = jitgrad.jit(jitgrad.grad(doublings))
    for x in (0.3, 3.0, 60.0, 150.0):
        eps = 1e-6
        numeric = (doublings_python(x + eps) - doublings_python(x - eps)) / (2 * eps)
        np.testing.assert_allclose(g(np.array(x)), numeric, rtol=1e-6)


def doublings_python(x):
    while x < 100.0:
        x = x * 2.0 + np.sin(x)
    return x


def test_hessian_through_fori_and_scan_compiled():
    f = lambda x: power_fori(x, 3).sum() + rnn(x[:1] * 0 + 0.1, XS[:, :1] * x[0], x[1])   # noqa: E731
    x = np.array([0.3, 0.6])
    h = jitgrad.hessian(f)(x)
    g = jitgrad.grad(f)
    eps = 1e-5
    numeric = np.array([(g(x + eps * e) - g(x - eps * e)) / (2 * eps) for e in np.eye(2)])
    np.testing.assert_allclose(h, numeric, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(h, h.T, rtol=1e-10)


def test_nested_scan_inside_fori():
    def f(x):
        def outer(i, h):
            h, _ = jitgrad.scan(lambda c, xi: (np.tanh(c + xi * i), None), h, XS)
            return h
        return jitgrad.fori_loop(0, 3, outer, x).sum()

    def python(x):
        h = x
        for i in range(3):
            for xi in XS:
                h = np.tanh(h + xi * i)
        return h.sum()
    np.testing.assert_allclose(jitgrad.jit(f)(H0), python(H0), rtol=1e-12)
    check_grads(traced(f, H0), [H0], order=2)


def test_captured_values_are_operands_and_differentiated():
    w = np.array([0.5, -1.5])

    def f(w):
        return jitgrad.fori_loop(0, 3, lambda i, v: v * np.cos(w) + w, np.zeros(2)).sum()
    check_grads(traced(f, w), [w], order=2)
    eps = 1e-6
    numeric = np.array([(f(w + eps * e) - f(w - eps * e)) / (2 * eps) for e in np.eye(2)])
    np.testing.assert_allclose(jitgrad.grad(f)(w), numeric, rtol=1e-7)


# --------------------------------------------------------------------------- IR text, errors, compile time

def test_ir_text_round_trips_and_verifies():
    from jitgrad.passes.reverse import vjp_function
    fn = traced(rnn, H0, XS, W)
    for f in (fn, vjp_function(fn, [0, 1, 2]), traced(newton_sqrt, np.array(2.0)), traced(branchy, H0)):
        text = str(f)
        parsed = parse_function(text)
        verify(parsed)
        assert str(parsed) == text


def test_mismatched_carry_names_the_users_line():
    def f(x):
        return jitgrad.fori_loop(0, 3, lambda i, v: v.astype(np.float32), x)   # the offending line
    with pytest.raises(jitgrad.ControlFlowError, match=r"types \(f32\[2\]\) where the initial value has "
                                                       r"\(f64\[2\]\)") as info:
        jitgrad.jit(f)(np.zeros(2))
    assert "test_control_flow.py" in str(info.value)
    with pytest.raises(jitgrad.ControlFlowError, match="different structures or types"):
        jitgrad.jit(lambda x: jitgrad.cond(x.sum() > 0, lambda v: v, lambda v: (v, v), x))(np.zeros(2))
    with pytest.raises(jitgrad.ControlFlowError, match="structure"):
        jitgrad.jit(lambda x: jitgrad.while_loop(lambda s: s[0].sum() < 1, lambda s: s[0], (x, x)))(np.zeros(2))


def test_compile_time_does_not_grow_with_trip_count():
    import time
    times = {}
    for t in (50, 2000):
        xs = RNG.normal(size=(t, 3))
        g = jitgrad.jit(jitgrad.grad(rnn, argnums=2))
        start = time.perf_counter()
        g(H0, xs, W)
        times[t] = time.perf_counter() - start
    assert times[2000] < 3 * times[50] + 0.5, times


def test_while_that_never_ends_is_interruptible():
    """The compiled loop checks the interrupt count every iteration, so the executable
    is called through the path that watches for Ctrl-C."""
    f = jitgrad.jit(lambda x: jitgrad.while_loop(lambda v: v > 0, lambda v: v + 1.0, x))
    lowered = f.lower(np.array(-1.0))
    assert lowered.executable.stops_on_interrupt
    assert f(np.array(-1.0)) == -1.0


def test_loop_invariant_work_moves_out_of_the_body():
    from jitgrad.backends.cpu.control_flow import hoist_invariants
    from jitgrad.primitives.control_flow import region_function
    w = RNG.normal(size=(3, 3))

    def f(w, xs):
        return jitgrad.scan(lambda h, x: (np.tanh(h @ (w.T * 2.0) + x), None), np.zeros(3), xs)[0].sum()
    fn = traced(f, w, XS)
    scan_op = next(op for op in fn.body.ops if op.name == "scan")
    prelude, body, n_hoisted = hoist_invariants(region_function(scan_op), range(scan_op.attrs["num_consts"]))
    assert n_hoisted == 1
    assert {"transpose", "mul"} <= {op.name for op in prelude.body.ops}
    assert not {"transpose", "mul"} & {op.name for op in body.body.ops}
    for result in (jitgrad.jit(f)(w, XS), evaluate(fn, [w, XS])[0]):
        np.testing.assert_allclose(result, f(w, XS), rtol=1e-12)
    check_grads(fn, [w, XS], order=1)


def test_cond_and_switch_inside_scan_differentiate():
    def f(w, xs):
        def step(h, x):
            h = jitgrad.cond(x.sum() > 0, lambda a: np.sin(a * w), lambda a: a * w - 1.0, h + x)
            k = (x > 0).sum()
            h = jitgrad.switch(k, [lambda a: a, lambda a: a * a, lambda a: np.cos(a), lambda a: -a], h)
            return h, h.sum()
        h, ys = jitgrad.scan(step, np.zeros(3), xs)
        return h.sum() + ys.sum()

    def python(w, xs):
        h, total = np.zeros(3), 0.0
        for x in xs:
            a = h + x
            h = np.sin(a * w) if x.sum() > 0 else a * w - 1.0
            h = [lambda a: a, lambda a: a * a, lambda a: np.cos(a), lambda a: -a][min((x > 0).sum(), 3)](h)
            total += h.sum()
        return h.sum() + total
    w = np.array(0.8)
    np.testing.assert_allclose(jitgrad.jit(f)(w, XS), python(w, XS), rtol=1e-12)
    check_grads(traced(f, w, XS[:3]), [w, XS[:3]], order=1)


def test_while_loop_inside_cond_differentiates_to_second_order():
    """A data-dependent while loop in a branch: reverse mode linearizes the loop inside the
    branch, then partially evaluates the branch again, meeting the loop's linear half."""
    def f(x):
        def body(c):
            i, v = c
            return i + 1, v * 0.9 + np.sin(v)

        def loop(x):
            return jitgrad.while_loop(lambda c: c[1].sum() < 4.0, body, (0, x))[1].sum()
        return jitgrad.cond(x.sum() > 0, loop, lambda x: (x * x).sum(), x)

    def python(x):
        if x.sum() > 0:
            v = x
            while v.sum() < 4.0:
                v = v * 0.9 + np.sin(v)
            return v.sum()
        return (x * x).sum()
    for x in (np.array([0.5, 0.3]), np.array([-0.5, 0.2])):
        assert jitgrad.jit(f)(x) == pytest.approx(python(x), rel=1e-14)
        check_grads(traced(f, x), [x], order=1)
        h = 1e-6
        numeric = np.array([(python(x + h * e) - python(x - h * e)) / (2 * h) for e in np.eye(2)])
        np.testing.assert_allclose(jitgrad.grad(f)(x), numeric, rtol=1e-6)
        grad = jitgrad.grad(f)
        numeric_hessian = np.array([(grad(x + h * e) - grad(x - h * e)) / (2 * h) for e in np.eye(2)])
        np.testing.assert_allclose(jitgrad.hessian(f)(x), numeric_hessian, rtol=1e-5, atol=1e-8)


def test_compiled_gradient_matches_interpreter_and_native_path():
    from jitgrad.passes.reverse import vjp_function
    fn = traced(rnn, H0, XS, W)
    vjp = vjp_function(fn, [0, 1, 2], ["one"])
    expected = evaluate(vjp, [H0, XS, W])
    g = jitgrad.jit(jitgrad.grad(rnn, argnums=(0, 1, 2)))
    for _ in range(2):                       # the second call takes the native call path
        for got, want in zip(g(H0, XS, W), expected[1:], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12)


def test_forward_over_forward_through_while():
    def f(x):
        return jitgrad.while_loop(lambda s: s[1] < 3, lambda s: (s[0] * np.sin(s[0]) + 0.5, s[1] + 1), (x, 0))[0]
    x = np.array(0.7)
    d1 = lambda x: jitgrad.jvp(f, (x,), (np.array(1.0),))[1]     # noqa: E731
    d2 = jitgrad.jvp(d1, (x,), (np.array(1.0),))[1]
    eps = 1e-5
    np.testing.assert_allclose(d2, (d1(x + eps) - d1(x - eps)) / (2 * eps), rtol=1e-6)


def test_reverse_mode_of_loops_with_run_time_trip_counts_at_block_boundaries():
    """The backward pass reads the primal carries from its stack of states: every trip
    count from 0 to 20 and a long loop, compiled and in the reference interpreter."""
    def f(x, n):
        return jitgrad.fori_loop(0, n, lambda i, v: np.sin(v) * 0.5 + np.cos(x * (1 + 0.01 * i)) * v * 0.3, x).sum()

    def python(x, n):
        v = x
        for i in range(n):
            v = np.sin(v) * 0.5 + np.cos(x * (1 + 0.01 * i)) * v * 0.3
        return v.sum()
    g = jitgrad.jit(jitgrad.grad(f))
    x = np.array([0.3, -1.2])
    eps = 1e-6
    for n in [*range(21), 400]:
        numeric = np.array([(python(x + eps * e, n) - python(x - eps * e, n)) / (2 * eps) for e in np.eye(2)])
        np.testing.assert_allclose(g(x, np.int64(n)), numeric, rtol=1e-6, atol=1e-9, err_msg=f"n={n}")
    fn = traced(f, x, np.int64(7))
    from jitgrad.passes.reverse import vjp_function
    vjp = vjp_function(fn, [0], ["one"])
    np.testing.assert_allclose(evaluate(vjp, [x, np.int64(7)])[1], g(x, np.int64(7)), rtol=1e-12)


CHILD = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)   # a runner started in the background of a non-interactive shell ignores SIGINT, and children inherit it
import numpy as np, jitgrad
f = jitgrad.jit(lambda x: jitgrad.while_loop(lambda v: v > 0, lambda v: v + 1.0, x))
f(np.array(-1.0)); f(np.array(-1.0))         # compiled; the second call takes the native call path
print("ready", flush=True)
try:
    f(np.array(1.0))                          # never ends
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_a_while_loop_that_never_ends_stops_on_ctrl_c():
    import signal
    import subprocess
    import sys
    import time
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=60)
        assert out.strip() == "interrupted"
    finally:
        child.kill()


def test_verifier_checks_regions_against_operands_and_results():
    from jitgrad.errors import VerificationError
    text = str(traced(rnn, H0, XS, W))
    assert "length = 5" in text
    with pytest.raises(VerificationError, match="leading axis of the length 6"):
        verify(parse_function(text.replace("length = 5", "length = 6")))
    loop = str(traced(lambda x: jitgrad.while_loop(lambda v: v.sum() < 9, lambda v: v * 2.0, x), H0))
    assert "num_consts = 0" in loop
    with pytest.raises(VerificationError, match=r"while's results: \(f64\[3\]\) where \(\) is expected"):
        verify(parse_function(loop.replace("num_consts = 0", "num_consts = 1")))


# --------------------------------------------------------------------------- reverse mode: loops without consts

def central_gradient(f, x, eps=1e-6):
    """The gradient of scalar `f` at `x` by central differences, one entry at a time."""
    grad = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[k] = eps
        grad[k] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


REVERSE_LOOPS = {
    # the fuzzer's reproducer: a carry that is the argument itself, a body reading the index
    # and a literal, and no consts at all (the literal's residual is recomputed per iteration)
    "fori_index_in_body": lambda x: np.sum(jitgrad.fori_loop(0, 3, lambda i, v: v * 0.5 + i, x)),
    "fori_carry_is_argument": lambda x: np.sum(jitgrad.fori_loop(0, 3, lambda i, v: v * v * 0.5, x)),
    "fori_raveled_carry": lambda x: np.sum(jitgrad.fori_loop(0, 2, lambda i, v: np.sin(v) * 0.5 + i,
                                                             np.ravel(x))),
    "fori_reshaped_carry": lambda x: np.sum(jitgrad.fori_loop(0, 2, lambda i, v: v * np.cos(v) * 2.0,
                                                              np.reshape(x, (9,)))),
    "scan_with_consts": lambda x: np.sum(jitgrad.scan(lambda c, xi: (c * np.tanh(x[0]) * 0.5 + xi, c * 3.0),
                                                      x[1], x)[1]),
    "scan_without_consts": lambda x: np.sum(jitgrad.scan(lambda c, xi: (c * 0.5 + xi * 2.0, c * c), x[0], x)[0]),
    "while_loop": lambda x: np.sum(jitgrad.while_loop(lambda s: s[1] < 3, lambda s: (s[0] * s[0] * 0.5 + 1.0,
                                                                                     s[1] + 1), (x, 0))[0]),
}


@pytest.mark.parametrize("case", sorted(REVERSE_LOOPS))
def test_reverse_mode_of_loops_against_central_differences(case):
    f = REVERSE_LOOPS[case]
    x = np.random.default_rng(3).uniform(0.2, 0.9, size=(3, 3))
    np.testing.assert_allclose(jitgrad.grad(f)(x), central_gradient(f, x), rtol=1e-6, atol=1e-8)
    check_grads(traced(f, x), [x], order=2)
