"""Plain Python `if`/`while`/`for i in range` on traced values, converted to region ops
(jitgrad.tracing.autograph): a corpus of iterative NumPy programs, each compared with
NumPy running the same function, and its gradient with central differences."""
import numpy as np
import pytest

import jitgrad
from jitgrad.tracing.tracer import trace

REGION_OPS = {"cond", "while", "fori", "scan"}


def region_ops(f, *args) -> set[str]:
    return {op.name for op in trace(f, args).function.body.ops} & REGION_OPS


def central_difference(f, args, argnum, eps=1e-6):
    x = np.array(args[argnum], dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[idx] += eps
        lo[idx] -= eps
        a_hi, a_lo = list(args), list(args)
        a_hi[argnum], a_lo[argnum] = hi, lo
        g[idx] = (f(*a_hi) - f(*a_lo)) / (2 * eps)
    return g


# --------------------------------------------------------------------------- the corpus

def newton_sqrt(a):
    x = a
    err = 1.0
    while err > 1e-12:
        new = 0.5 * (x + a / x)
        err = np.abs(new - x)
        x = new
    return x


def bisection_cube_root(c):
    lo = 0.0
    hi = np.maximum(c, 1.0)
    while hi - lo > 1e-10:
        mid = 0.5 * (lo + hi)
        if mid ** 3 > c:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def power_iteration(m, v):
    lam = 0.0
    diff = 1.0
    steps = 0
    while diff > 1e-10 and steps < 500:
        w = m @ v
        v = w / np.linalg.norm(w)
        new = v @ m @ v
        diff = np.abs(new - lam)
        lam = new
        steps += 1
    return lam


def rnn(w, xs, steps):
    h = np.zeros(w.shape[0])
    for t in range(steps):
        h = np.tanh(w @ h + xs[t])
    return (h * h).sum()


def first_above(xs, threshold):
    found = -1
    for i in range(xs.shape[0]):
        if xs[i] > threshold:
            found = i
            break
    return found


def sum_skipping_negatives(xs, n):
    total = 0.0
    for i in range(n):
        if xs[i] < 0:
            continue
        total = total + xs[i]
    return total


def piecewise(x):
    if x < -1.0:
        y = -2.0 * x - 1.0
    elif x < 1.0:
        y = x * x
    else:
        y = 2.0 * x - 1.0
    return y


def collatz_like(x):
    steps = 0
    while x > 1.0:
        if x > 10.0:
            x = x / 3.0
        else:
            x = x - 1.5
        steps = steps + 1
    return x + steps


def python_valued(x, n_iter=3, mode="square"):
    for _ in range(n_iter):
        if mode == "square":
            x = x * x
        else:
            x = x + 1.0
    while n_iter > 0:
        x = x * 0.5
        n_iter -= 1
    return x


def closure_factory(scale):
    def scaled_clip(x):
        if x.sum() > scale:
            x = x * (scale / x.sum())
        return x
    return scaled_clip


def not_in_both_branches(x):
    if x > 0:
        y = x
    return y


def temp_in_one_branch(x):
    if x > 0:
        t = x * 3.0
        x = t + 1.0
    return x


def early_return(x):
    y = x * 2.0
    if y > 4.0:
        return y
    elif y < 0:
        if y < -4.0:
            return -y
        y = y * 3.0
    return y + 1.0


def return_in_loop(x, n):
    for i in range(n):
        if x > 10.0:
            return x
        x = x * 2.0
    return x


def vector_test(x):
    if x > 0:
        x = -x
    return x


def traced_step(x, step):
    for i in range(0, 10, step):
        x = x + i
    return x


# --------------------------------------------------------------------------- values

@pytest.mark.parametrize("a", [2.0, 0.25, 9.0])
def test_newton_with_a_tolerance(a):
    f = jitgrad.jit(newton_sqrt)
    np.testing.assert_allclose(f(np.float64(a)), newton_sqrt(np.float64(a)), rtol=1e-14)
    assert region_ops(newton_sqrt, np.float64(a)) == {"while"}
    g = jitgrad.grad(newton_sqrt)(np.float64(a))
    np.testing.assert_allclose(g, 0.5 / np.sqrt(a), rtol=1e-8)


@pytest.mark.parametrize("c", [0.3, 2.0, 27.0])
def test_bisection_nested_if_in_while(c):
    f = jitgrad.jit(bisection_cube_root)
    np.testing.assert_allclose(f(np.float64(c)), bisection_cube_root(np.float64(c)), rtol=1e-12)
    np.testing.assert_allclose(f(np.float64(c)), np.cbrt(c), rtol=1e-8)


def test_power_iteration_with_and_in_the_test():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    m = a @ a.T + np.diag([5.0, 0, 0, 0])
    v = np.ones(4) / 2
    np.testing.assert_allclose(jitgrad.jit(power_iteration)(m, v), power_iteration(m, v), rtol=1e-9)
    np.testing.assert_allclose(power_iteration(m, v), np.linalg.eigvalsh(m)[-1], rtol=1e-6)


def test_rnn_over_traced_range_is_one_loop_and_differentiates():
    rng = np.random.default_rng(1)
    w, xs = rng.normal(size=(3, 3)) * 0.5, rng.normal(size=(6, 3))
    np.testing.assert_allclose(jitgrad.jit(rnn)(w, xs, np.int64(6)), rnn(w, xs, 6), rtol=1e-12)
    np.testing.assert_allclose(jitgrad.jit(rnn)(w, xs, np.int64(4)), rnn(w, xs, 4), rtol=1e-12)
    assert region_ops(rnn, w, xs, np.int64(6)) == {"fori"}
    g = jitgrad.grad(rnn)(w, xs, np.int64(5))
    np.testing.assert_allclose(g, central_difference(lambda w: rnn(w, xs, 5), [w], 0), rtol=1e-6, atol=1e-8)
    gx = jitgrad.grad(rnn, argnums=1)(w, xs, np.int64(5))
    np.testing.assert_allclose(gx, central_difference(lambda xs: rnn(w, xs, 5), [xs], 0), rtol=1e-6, atol=1e-8)


def test_rnn_over_python_range_stays_python():
    """A Python-int trip count unrolls at trace time as before: no region op."""
    rng = np.random.default_rng(2)
    w, xs = rng.normal(size=(3, 3)) * 0.5, rng.normal(size=(3, 3))
    f = jitgrad.jit(rnn, static_argnums=2)
    np.testing.assert_allclose(f(w, xs, 3), rnn(w, xs, 3), rtol=1e-12)
    assert region_ops(lambda w, xs: rnn(w, xs, 3), w, xs) == set()


@pytest.mark.parametrize("threshold", [0.05, 0.4, 0.6, 0.95])
def test_early_exit_search_with_break(threshold):
    xs = np.array([0.1, 0.5, 0.9, 0.3])
    assert jitgrad.jit(first_above)(xs, threshold) == first_above(xs, threshold)


@pytest.mark.parametrize("n", [0, 3, 5])
def test_continue_in_a_traced_for_range(n):
    xs = np.array([1.0, -2.0, 3.0, -4.0, 5.0])
    np.testing.assert_allclose(jitgrad.jit(sum_skipping_negatives)(xs, np.int64(n)), sum_skipping_negatives(xs, n))
    g = jitgrad.grad(sum_skipping_negatives)(xs, np.int64(n))
    np.testing.assert_allclose(g, central_difference(lambda xs: sum_skipping_negatives(xs, n), [xs], 0), atol=1e-8)


@pytest.mark.parametrize("x", [-3.0, -0.5, 0.5, 4.0])
def test_piecewise_if_elif_else(x):
    f = jitgrad.jit(piecewise)
    np.testing.assert_allclose(f(np.float64(x)), piecewise(x), rtol=1e-15)
    assert region_ops(piecewise, np.float64(x)) == {"cond"}
    np.testing.assert_allclose(jitgrad.grad(piecewise)(np.float64(x)),
                               central_difference(piecewise, [np.float64(x)], 0), rtol=1e-7)
    np.testing.assert_allclose(jitgrad.hessian(piecewise)(np.float64(x)), 2.0 if -1 <= x < 1 else 0.0, atol=1e-10)


@pytest.mark.parametrize("x", [0.5, 7.3, 40.0])
def test_if_inside_while(x):
    np.testing.assert_allclose(jitgrad.jit(collatz_like)(np.float64(x)), collatz_like(x), rtol=1e-14)
    np.testing.assert_allclose(jitgrad.grad(collatz_like)(np.float64(x)),
                               central_difference(collatz_like, [np.float64(x)], 0), rtol=1e-6)


def test_python_valued_control_flow_stays_python():
    x = np.array([1.5, 0.5])
    np.testing.assert_allclose(jitgrad.jit(python_valued)(x), python_valued(x), rtol=1e-15)
    assert region_ops(python_valued, x) == set()
    assert region_ops(lambda x: python_valued(x, 2, "add"), x) == set()


def test_closures_and_globals_survive_conversion():
    f = closure_factory(2.0)
    for x in (np.array([0.5, 0.25]), np.array([3.0, 1.0])):
        np.testing.assert_allclose(jitgrad.jit(f)(x), f(x), rtol=1e-15)


def test_helpers_called_by_a_converted_function_are_converted():
    """`loss` has no control flow of its own; the `if` is in the closure it calls."""
    f = closure_factory(2.0)

    def loss(x):
        y = f(x)
        return y.sum() + (y ** 2).sum()
    for x in (np.array([0.5, 0.25]), np.array([3.0, 1.0])):
        np.testing.assert_allclose(jitgrad.jit(loss)(x), loss(x), rtol=1e-15)
        np.testing.assert_allclose(jitgrad.grad(loss)(x), central_difference(loss, [x], 0), rtol=1e-6, atol=1e-9)


def test_temporary_bound_in_one_branch_is_fine_when_unused_after():
    for x in (-1.0, 2.0):
        np.testing.assert_allclose(jitgrad.jit(temp_in_one_branch)(np.float64(x)), temp_in_one_branch(x))


# --------------------------------------------------------------------------- refusals

def test_name_bound_in_one_branch_and_used_after_is_a_clear_error():
    with pytest.raises(jitgrad.AutographError, match=r"'y'.*only one branch.*test_autograph.py:\d+"):
        jitgrad.jit(not_in_both_branches)(np.float64(1.0))


@pytest.mark.parametrize("x", [3.0, 1.0, -1.0, -3.0])
def test_early_return_under_a_traced_if(x):
    np.testing.assert_allclose(jitgrad.jit(early_return)(np.float64(x)), early_return(x), rtol=1e-15)
    np.testing.assert_allclose(jitgrad.grad(early_return)(np.float64(x)),
                               central_difference(early_return, [np.float64(x)], 0), rtol=1e-7)


def test_return_inside_a_traced_loop_is_a_clear_error():
    with pytest.raises(jitgrad.AutographError, match=r"test_autograph.py:\d+.*`return`.*static_argnums"):
        jitgrad.jit(return_in_loop)(np.float64(1.0), np.int64(5))


def test_array_valued_test_is_a_clear_error():
    with pytest.raises(jitgrad.AutographError, match=r"test_autograph.py:\d+.*shape \(3,\).*np.all"):
        jitgrad.jit(vector_test)(np.ones(3))


def test_traced_range_step_is_a_clear_error():
    with pytest.raises(jitgrad.AutographError, match=r"test_autograph.py:\d+.*traced step"):
        jitgrad.jit(traced_step)(np.float64(1.0), np.int64(2))




def test_carry_changing_dtype_is_a_clear_error():
    def widen(x, n):
        acc = np.float32(0)
        for i in range(n):
            acc = acc + x
        return acc
    with pytest.raises(jitgrad.ControlFlowError, match="initial value"):
        jitgrad.jit(widen)(np.float64(1.0), np.int64(3))


# --------------------------------------------------------------------------- for over traced arrays

def rnn_rows(w, xs):
    h = np.zeros(w.shape[0])
    for x in xs:
        h = np.tanh(w @ h + x)
    return (h * h).sum()


def zipped_rows(xs, ys):
    acc = 0.0
    for a, b in zip(xs, ys):
        acc = acc + np.sin(a) * b
    return acc.sum()


def enumerated_rows(xs):
    acc = 0.0
    for i, x in enumerate(xs, 1):
        acc = acc + i * np.cos(x)
    return acc


def first_row_above(xs, threshold):
    found = 0.0 * xs[0]
    for x in xs:
        if x > threshold:
            found = x * x
            break
    return found


def sum_of_positive_rows(xs):
    total = 0.0
    for x in xs:
        if x < 0:
            continue
        total = total + np.exp(x)
    return total


def rows_into_a_list(xs):
    outs = []
    for x in xs:
        outs.append(x * 2.0)
    return np.stack(outs).sum()


def python_list_of_traced(a, b):
    total = a
    for x in [a, b, a * b]:
        total = total * x + 1.0
    return total


def break_in_a_python_list_loop(a, b):
    total = 0.0
    for x in [a, b, a + b]:
        if x > 1.0:
            break
        total = total + x
    return total


def test_for_over_a_traced_array_is_one_loop_and_differentiates():
    rng = np.random.default_rng(3)
    w, xs = rng.normal(size=(3, 3)) * 0.5, rng.normal(size=(7, 3))
    np.testing.assert_allclose(jitgrad.jit(rnn_rows)(w, xs), rnn_rows(w, xs), rtol=1e-13)
    assert region_ops(rnn_rows, w, xs) == {"scan"}
    np.testing.assert_allclose(jitgrad.grad(rnn_rows)(w, xs), central_difference(rnn_rows, [w, xs], 0),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(jitgrad.grad(rnn_rows, argnums=1)(w, xs), central_difference(rnn_rows, [w, xs], 1),
                               rtol=1e-6, atol=1e-9)


def test_zip_and_enumerate_over_traced_arrays():
    rng = np.random.default_rng(4)
    xs, ys = rng.normal(size=(5, 2)), rng.normal(size=(6, 2))
    np.testing.assert_allclose(jitgrad.jit(zipped_rows)(xs, ys), zipped_rows(xs, ys), rtol=1e-13)
    assert region_ops(zipped_rows, xs, ys) == {"scan"}
    np.testing.assert_allclose(jitgrad.grad(zipped_rows)(xs, ys), central_difference(zipped_rows, [xs, ys], 0),
                               rtol=1e-6, atol=1e-9)
    v = rng.normal(size=6)
    np.testing.assert_allclose(jitgrad.jit(enumerated_rows)(v), enumerated_rows(v), rtol=1e-13)
    assert region_ops(enumerated_rows, v) == {"scan"}
    np.testing.assert_allclose(jitgrad.grad(enumerated_rows)(v), central_difference(enumerated_rows, [v], 0),
                               rtol=1e-6, atol=1e-9)


def unpacked_pairs(points):
    total = 0.0
    for x, y in points:
        total = total + np.hypot(x, y)
    return total


def test_tuple_target_over_the_rows_of_a_traced_array():
    points = np.array([[3.0, 4.0], [1.0, 1.0], [0.5, -2.0]])
    np.testing.assert_allclose(jitgrad.jit(unpacked_pairs)(points), unpacked_pairs(points), rtol=1e-15)
    assert region_ops(unpacked_pairs, points) == {"scan"}
    np.testing.assert_allclose(jitgrad.grad(unpacked_pairs)(points), central_difference(unpacked_pairs, [points], 0),
                               rtol=1e-7)


@pytest.mark.parametrize("threshold", [-5.0, 0.3, 0.9, 5.0])
def test_break_in_a_for_over_a_traced_array(threshold):
    xs = np.array([0.1, 0.5, 0.95, 0.3, 2.0])
    np.testing.assert_allclose(jitgrad.jit(first_row_above)(xs, threshold), first_row_above(xs, threshold))
    assert "while" in region_ops(first_row_above, xs, np.float64(threshold))
    np.testing.assert_allclose(jitgrad.grad(first_row_above)(xs, threshold),
                               central_difference(first_row_above, [xs, threshold], 0), atol=1e-8)


def test_continue_in_a_for_over_a_traced_array():
    xs = np.array([1.0, -2.0, 0.5, -4.0, 0.25])
    np.testing.assert_allclose(jitgrad.jit(sum_of_positive_rows)(xs), sum_of_positive_rows(xs), rtol=1e-14)
    np.testing.assert_allclose(jitgrad.grad(sum_of_positive_rows)(xs),
                               central_difference(sum_of_positive_rows, [xs], 0), rtol=1e-7, atol=1e-9)


def test_loops_with_side_effects_or_over_python_lists_unroll():
    xs = np.arange(4.0)
    np.testing.assert_allclose(jitgrad.jit(rows_into_a_list)(xs), rows_into_a_list(xs))
    assert region_ops(rows_into_a_list, xs) == set()
    a, b = np.float64(0.5), np.float64(1.5)
    np.testing.assert_allclose(jitgrad.jit(python_list_of_traced)(a, b), python_list_of_traced(a, b))
    assert region_ops(python_list_of_traced, a, b) == set()


@pytest.mark.parametrize("a, b", [(0.5, 0.25), (0.5, 1.5), (2.0, 0.1), (0.2, 0.7)])
def test_break_under_a_traced_test_in_a_python_list_loop(a, b):
    """Every iteration after a possible traced `break` runs under a cond on the flag."""
    f = jitgrad.jit(break_in_a_python_list_loop)
    np.testing.assert_allclose(f(np.float64(a), np.float64(b)), break_in_a_python_list_loop(a, b))


# --------------------------------------------------------------------------- long Python ranges

def matmul_chain(w, x, n):
    h = x
    for i in range(n):
        h = np.tanh(w @ h) + 0.01 * i
    return h.sum() + i


def elementwise_chain(x, n):
    for _ in range(n):
        x = x * 0.999 + 0.01
    return x


def python_list_by_index(x, n):
    weights = [float(k % 3) for k in range(n)]
    for i in range(n):
        x = np.sin(x) * weights[i]
    return x


@pytest.mark.parametrize("n", [10, 65, 300])
def test_long_python_range_becomes_a_loop(n):
    rng = np.random.default_rng(5)
    w, x = rng.normal(size=(3, 3)) * 0.5, rng.normal(size=3)
    f = jitgrad.jit(lambda w, x: matmul_chain(w, x, n))
    np.testing.assert_allclose(f(w, x), matmul_chain(w, x, n), rtol=1e-13)
    regions = region_ops(lambda w, x: matmul_chain(w, x, n), w, x)
    assert regions == (set() if n <= 64 else {"scan"})
    g = jitgrad.grad(lambda w: matmul_chain(w, x, n))(w)
    np.testing.assert_allclose(g, central_difference(lambda w: matmul_chain(w, x, n), [w], 0), rtol=1e-6, atol=1e-7)


def test_long_range_traces_to_the_same_size_at_any_length():
    w, x = np.eye(3) * 0.5, np.ones(3)

    def size(n):
        return len(trace(lambda w, x: matmul_chain(w, x, n), (w, x)).function.body.ops)
    assert size(100) == size(5000) < 30


def test_long_elementwise_or_index_bound_ranges_unroll():
    x = np.linspace(-1.0, 1.0, 4)
    np.testing.assert_allclose(jitgrad.jit(lambda x: elementwise_chain(x, 100))(x), elementwise_chain(x, 100))
    assert region_ops(lambda x: elementwise_chain(x, 100), x) == set()
    np.testing.assert_allclose(jitgrad.jit(lambda x: python_list_by_index(x, 80))(x), python_list_by_index(x, 80))
    assert region_ops(lambda x: python_list_by_index(x, 80), x) == set()


# --------------------------------------------------------------------------- RK4 with an adaptive step

def rk4_adaptive(y0, p, t_end=2.0, tol=1e-7):
    """dy/dt = -p y + sin(t) by RK4 with step doubling: a step is accepted when a full
    step and two half steps agree to `tol`, and the step size follows the error."""
    def f(t, y):
        return -p * y + np.sin(t)

    def rk4_step(t, y, h):
        k1 = f(t, y)
        k2 = f(t + h / 2, y + h / 2 * k1)
        k3 = f(t + h / 2, y + h / 2 * k2)
        k4 = f(t + h, y + h * k3)
        return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    t, y, h = 0.0, y0, 0.5
    steps = 0
    while t < t_end:
        h = np.minimum(h, t_end - t)
        full = rk4_step(t, y, h)
        half = rk4_step(t + h / 2, rk4_step(t, y, h / 2), h / 2)
        err = np.abs(half - full).max()
        if err < tol:
            t = t + h
            y = half
        steps = steps + 1
        h = h * np.clip(0.9 * (tol / (err + 1e-300)) ** 0.2, 0.2, 2.0)
    return y, steps


def rk4_loss(y0, p):
    return rk4_adaptive(y0, p)[0].sum()


def rk4_exact(y0, p, t=2.0):
    return (y0 + 1 / (p * p + 1)) * np.exp(-p * t) + (p * np.sin(t) - np.cos(t)) / (p * p + 1)


def test_rk4_with_adaptive_step():
    """One compiled function and one compiled gradient serve inputs with different trip
    counts (the step count depends on p)."""
    y0 = np.array([1.0, -0.5])
    compiled = jitgrad.jit(rk4_adaptive)
    gradient = jitgrad.grad(rk4_loss, argnums=(0, 1))
    assert "while" in region_ops(rk4_loss, y0, np.float64(1.0))
    counts = set()
    for p in (0.5, 8.0):
        y, steps = compiled(y0, np.float64(p))
        y_ref, steps_ref = rk4_adaptive(y0, np.float64(p))
        assert steps == steps_ref
        counts.add(int(steps))
        np.testing.assert_allclose(y, y_ref, rtol=1e-12)
        np.testing.assert_allclose(y, rk4_exact(y0, p), rtol=1e-5)
        g_y0, g_p = gradient(y0, np.float64(p))
        np.testing.assert_allclose(g_p, central_difference(rk4_loss, [y0, np.float64(p)], 1), rtol=1e-5)
        np.testing.assert_allclose(g_y0, central_difference(rk4_loss, [y0, p], 0), rtol=1e-5, atol=1e-9)
    assert len(counts) == 2


# --------------------------------------------------------------------------- conditional expressions

def ifexp_in_a_def(x):
    y = np.sin(x) if x.sum() > 0 else np.cos(x) * 2.0
    return (y * x).sum()


@pytest.mark.parametrize("x", [np.array([0.5, 1.0]), np.array([-0.5, -1.0])])
def test_conditional_expression_becomes_a_cond(x):
    np.testing.assert_allclose(jitgrad.jit(ifexp_in_a_def)(x), ifexp_in_a_def(x), rtol=1e-15)
    assert region_ops(ifexp_in_a_def, x) == {"cond"}
    np.testing.assert_allclose(jitgrad.grad(ifexp_in_a_def)(x), central_difference(ifexp_in_a_def, [x], 0),
                               rtol=1e-7)


@pytest.mark.parametrize("x", [1.5, -1.5])
def test_lambdas_conditional_expressions(x):
    f = lambda x: x * x if x > 0 else -3.0 * x          # noqa: E731
    nested = lambda x: (lambda y: np.exp(y) if y > 1.0 else 1.0)(x) + 1.0  # noqa: E731
    np.testing.assert_allclose(jitgrad.jit(f)(np.float64(x)), f(x))
    np.testing.assert_allclose(jitgrad.grad(f)(np.float64(x)), 2 * x if x > 0 else -3.0)
    np.testing.assert_allclose(jitgrad.grad(jitgrad.grad(f))(np.float64(x)), 2.0 if x > 0 else 0.0)
    np.testing.assert_allclose(jitgrad.jit(nested)(np.float64(x)), nested(x))
    assert region_ops(f, np.float64(x)) == {"cond"}


def test_conditional_expression_on_a_python_value_stays_python():
    def g(x, flag):
        return x * 2.0 if flag else x
    assert region_ops(lambda x: g(x, True), np.ones(2)) == set()


def test_a_source_file_edited_after_import_is_not_converted(tmp_path, monkeypatch):
    """The converter reads the function's file as it is now on disk; if it no longer
    compiles to the code the program runs, converting it would compile a different
    function. It is refused instead: the traced `if` gives the usual clear error."""
    import importlib
    import os
    from jitgrad.errors import JitgradError
    path = tmp_path / "edited_module.py"
    path.write_text("import numpy as np\n\ndef f(x):\n    if x.sum() > 0:\n        return x * 2.0\n"
                    "    return -x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("edited_module")
    path.write_text("import numpy as np\n\ndef f(x):\n    if x.sum() > 0:\n        return x * 3.0\n"
                    "    return -x\n")
    os.utime(path, (1, 1))
    x = np.array([1.0, 2.0])
    with pytest.raises(JitgradError):
        jitgrad.jit(module.f)(x)
    path.write_text("import numpy as np\n\ndef f(x):\n    if x.sum() > 0:\n        return x * 2.0\n"
                    "    return -x\n")
    os.utime(path, (2, 2))
    fresh = importlib.reload(module)
    np.testing.assert_array_equal(jitgrad.jit(fresh.f)(x), x * 2.0)
