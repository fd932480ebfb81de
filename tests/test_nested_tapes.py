"""Nested GradientTapes (TensorFlow's idiom for higher derivatives) and the tape's
bookkeeping methods: watch, stop_recording, reset, watched_variables,
unconnected_gradients."""
import numpy as np
import pytest

import jitgrad
from jitgrad import GradientTape, TrackedTensor
from jitgrad.errors import GradientError


def plain(t):
    return t.numpy() if isinstance(t, TrackedTensor) else np.asarray(t)


X0 = np.array([0.3, -1.2, 2.0])

# f, f', f'' (elementwise, summed for the target)
CASES = {
    "cube": (lambda x: x ** 3, lambda x: 3 * x ** 2, lambda x: 6 * x),
    "sin": (np.sin, np.cos, lambda x: -np.sin(x)),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    "exp_times_x": (lambda x: np.exp(x) * x, lambda x: np.exp(x) * (x + 1), lambda x: np.exp(x) * (x + 2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_derivative_by_nesting(name):
    f, df, d2f = CASES[name]
    with GradientTape() as t1:
        x = t1.watch(X0)
        with GradientTape() as t2:
            t2.watch(x)                     # TensorFlow's spelling: the return value is x itself
            y = np.sum(f(x))
        dy = t2.gradient(y, x)
    d2y = t1.gradient(dy, x)
    np.testing.assert_allclose(plain(dy), df(X0), rtol=1e-12)
    np.testing.assert_allclose(d2y, d2f(X0), rtol=1e-12, atol=1e-14)


def test_matches_jitgrad_hessian_on_a_coupled_function():
    W = np.array([[0.5, -1.0, 0.2], [1.5, 0.3, -0.7]])

    def f(x):
        return np.sum(np.tanh(W @ x) ** 2) + np.sum(x ** 3) * x[0]

    v = np.array([1.0, -2.0, 0.5])
    with GradientTape() as t1:
        x = t1.watch(X0)
        with GradientTape() as t2:
            t2.watch(x)
            y = f(x)
        g = t2.gradient(y, x)
    hv = t1.gradient(g, x, output_gradients=v)
    H = jitgrad.hessian(f)(X0)
    np.testing.assert_allclose(plain(g), jitgrad.grad(f)(X0), rtol=1e-12)
    np.testing.assert_allclose(hv, H @ v, rtol=1e-10)


def test_persistent_outer_tape_gives_several_derivatives():
    with GradientTape(persistent=True) as t1:
        x = t1.watch(X0)
        with GradientTape() as t2:
            t2.watch(x)
            y = np.sum(np.sin(x) * x)
        g = t2.gradient(y, x)
    np.testing.assert_allclose(plain(t1.gradient(y, x)), np.sin(X0) + X0 * np.cos(X0), rtol=1e-12)
    d2 = 2 * np.cos(X0) - X0 * np.sin(X0)
    np.testing.assert_allclose(plain(t1.gradient(g, x)), d2, rtol=1e-12)
    np.testing.assert_allclose(plain(t1.gradient(g, x)), d2, rtol=1e-12)      # again: the tape is kept
    # and the persistent outer tape differentiates its own gradient once more: the third derivative
    g2 = t1.gradient(g, x)
    np.testing.assert_allclose(plain(t1.gradient(g2, x)), -3 * np.sin(X0) - X0 * np.cos(X0), rtol=1e-12)


def test_third_order_by_three_tapes():
    with GradientTape() as t1:
        x = t1.watch(X0)
        with GradientTape() as t2:
            t2.watch(x)
            with GradientTape() as t3:
                t3.watch(x)
                y = np.sum(x ** 4)
            g1 = t3.gradient(y, x)
        g2 = t2.gradient(g1, x)
    g3 = t1.gradient(g2, x)
    np.testing.assert_allclose(plain(g1), 4 * X0 ** 3, rtol=1e-12)
    np.testing.assert_allclose(plain(g2), 12 * X0 ** 2, rtol=1e-12)
    np.testing.assert_allclose(g3, 24 * X0, rtol=1e-12)


def test_inner_tape_sees_only_what_it_watches():
    """Values computed before the inner tape watched x, or inside its stop_recording,
    are constants to it, and still functions of x to the outer tape."""
    with GradientTape() as t1:
        x = t1.watch(X0)
        a = x * 2.0                                     # before t2 watches x
        with GradientTape() as t2:
            t2.watch(x)
            with t2.stop_recording():
                c = x ** 2                              # recorded by t1 only
            y = np.sum(a * x + c * x)
        g = t2.gradient(y, x)                           # d/dx with a, c held: a + c
    np.testing.assert_allclose(plain(g), 2 * X0 + X0 ** 2, rtol=1e-12)
    np.testing.assert_allclose(t1.gradient(g, x), 2 + 2 * X0, rtol=1e-12)


def test_two_sources_and_a_tape_watching_one_of_them():
    b0 = np.array([0.5, 1.5, -0.5])
    with GradientTape(persistent=True) as t1:
        x, b = t1.watch([X0, b0])
        with GradientTape(persistent=True) as t2:
            t2.watch(x)
            y = np.sum(x ** 2 * b)
        gx, gb = t2.gradient(y, [x, b])
        gb_none = t2.gradient(y, b, unconnected_gradients="none")
    np.testing.assert_allclose(plain(gx), 2 * X0 * b0, rtol=1e-12)
    np.testing.assert_array_equal(plain(gb), np.zeros(3))          # t2 does not watch b
    assert gb_none is None
    np.testing.assert_allclose(plain(t1.gradient(gx, b)), 2 * X0, rtol=1e-12)
    np.testing.assert_allclose(plain(t1.gradient(gx, x)), 2 * b0, rtol=1e-12)


def test_nested_tape_watching_a_plain_array_makes_an_outer_leaf():
    with GradientTape() as t1:
        x = t1.watch(X0)
        with GradientTape() as t2:
            t2.watch(x)
            s = t2.watch(np.array(2.0))             # a new leaf, held by the outer tape
            y = np.sum(x * x * s)
        gx, gs = t2.gradient(y, [x, s])
    np.testing.assert_allclose(plain(gs), np.sum(X0 ** 2), rtol=1e-12)
    np.testing.assert_allclose(t1.gradient(gx, s), 2 * np.sum(X0), rtol=1e-12)     # d/ds sum(2 x s)


def test_watched_variables():
    tape = GradientTape(persistent=True)
    a, b = tape.watch([np.ones(2), np.zeros(3)])
    c = tape.variable(np.array(4.0))
    watched = tape.watched_variables()
    assert [w.shape for w in watched] == [(2,), (3,), ()]
    assert watched[0].value is a.value and watched[2].value is c.value
    np.testing.assert_array_equal(plain(tape.gradient(np.sum(a * 3.0), watched[0])), [3.0, 3.0])
    with GradientTape() as t1:
        x = t1.watch(X0)
        with GradientTape() as t2:
            assert t2.watched_variables() == ()
            t2.watch(x)
            assert t2.watched_variables() == (x,)
    assert len(t1.watched_variables()) == 1


def test_reset_forgets_the_records():
    tape = GradientTape(persistent=True)
    x = tape.watch(np.array([1.0, 2.0]))
    stale = x * 5.0
    tape.reset()
    assert tape.nodes == [] and tape.watched_variables() == ()
    x = tape.watch(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(plain(tape.gradient(np.sum(x * x), x)), [2.0, 4.0])
    with pytest.raises(GradientError, match="before tape.reset"):
        tape.gradient(np.sum(stale * x), x)


def test_unconnected_gradients_on_a_flat_tape():
    tape = GradientTape(persistent=True)
    x, u = tape.watch([np.ones(2), np.ones(2)])
    y = np.sum(x * 2.0)
    assert tape.gradient(y, [x, u], unconnected_gradients="none")[1] is None
    np.testing.assert_array_equal(plain(tape.gradient(y, [x, u])[1]), [0.0, 0.0])
    with pytest.raises(jitgrad.ArgumentError, match="unconnected_gradients"):
        tape.gradient(y, x, unconnected_gradients="nan")


def test_tape_outside_the_block_is_not_nested():
    outer = GradientTape()
    x = outer.watch(X0)
    other = GradientTape()                  # not entered inside outer's block
    y = np.sum(x ** 2)
    with pytest.raises(GradientError, match="another GradientTape.*with t1"):
        other.gradient(y, x)
    assert other.watch(x) is not x          # a new leaf of its own


def test_released_outer_tape_and_released_inner_tape():
    with GradientTape() as t1:
        x = t1.watch(X0)
        with GradientTape() as t2:
            t2.watch(x)
            y = np.sum(x ** 2)
    t1.gradient(y, x)                                   # releases t1
    with pytest.raises(GradientError, match="nested in was released"):
        t2.gradient(y, x)
    with GradientTape() as t1:
        x = t1.watch(X0)
        with GradientTape() as t2:
            t2.watch(x)
            y = np.sum(x ** 2)
        t2.gradient(y, x)
        with pytest.raises(GradientError, match="already called"):
            t2.gradient(y, x)
        np.testing.assert_allclose(plain(t1.gradient(y, x)), 2 * X0)     # the outer tape is untouched


def test_nested_tape_nodes_are_what_it_watches():
    with GradientTape(record_sites=True) as t1:
        x = t1.watch(X0)
        a = x * 2.0
        with GradientTape() as t2:
            t2.watch(x)
            y = np.sum(np.sin(x))
    assert [n.op for n in t1.nodes] == ["mul", "sin", "sum"]
    assert [n.op for n in t2.nodes] == ["sin", "sum"]
    assert all(n.location and "test_nested_tapes.py" in n.location for n in t1.nodes)
    del a, y


def test_nested_targets_and_sources_of_every_kind():
    with GradientTape(persistent=True) as t1:
        x, b = t1.watch([X0, X0 * 3.0])
        before = np.sum(x * 5.0)                        # computed before t2 watches x
        with GradientTape(persistent=True) as t2:
            t2.watch(x)
            z = x * 2.0
            y = np.sum(z ** 2)
            np.testing.assert_array_equal(plain(t2.gradient(x, x)), np.ones(3))
            np.testing.assert_array_equal(plain(t2.gradient(before, x)), np.zeros(3))
            assert t2.gradient(before, x, unconnected_gradients="none") is None
            assert t2.gradient(np.sum(b), [x], unconnected_gradients="none") == [None]
            gz = t2.gradient(y, z)                      # an intermediate source: z held, 2 z
            gx, gz2 = t2.gradient(y, [x, z])
    np.testing.assert_allclose(plain(gz), 4 * X0, rtol=1e-12)
    np.testing.assert_allclose(plain(gz2), 4 * X0, rtol=1e-12)
    np.testing.assert_allclose(plain(gx), 8 * X0, rtol=1e-12)
    np.testing.assert_allclose(plain(t1.gradient(gz, x)), np.full(3, 4.0), rtol=1e-12)
    np.testing.assert_allclose(plain(t1.gradient(gx, x)), np.full(3, 8.0), rtol=1e-12)
