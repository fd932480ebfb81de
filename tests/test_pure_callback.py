"""jitgrad.pure_callback: NumPy/SciPy functions called from compiled code (a ctypes
trampoline from the generated kernel), with derivatives through custom_vjp."""
import threading

import numpy as np
import pytest
import scipy.special as sc

import jitgrad
from jitgrad import CallbackError, GradientError, ShapeDtypeStruct, pure_callback
from jitgrad.tracing.tracer import trace
from jitgrad.interpreter import evaluate


def bessel(v, x):
    """J_v(x) by SciPy, callable from compiled code."""
    return pure_callback(lambda a: sc.jv(v, a), np.empty_like(x), x)


def _bessel_vjp():
    @jitgrad.custom_vjp
    def jv(x):
        return bessel(1.5, x)

    def fwd(x):
        return jv(x), x

    def bwd(x, ct):        # d/dx J_v(x) = (J_{v-1}(x) - J_{v+1}(x)) / 2
        return (ct * 0.5 * (bessel(0.5, x) - bessel(2.5, x)),)
    jv.defvjp(fwd, bwd)
    return jv


def test_scipy_jv_inside_jit_matches_scipy():
    def f(x):
        y = np.sin(x) * 2.0                     # fused code before the callback
        return bessel(1.5, y) * 3.0 + np.cos(x)  # and after it
    x = np.linspace(0.1, 3.0, 37)
    expected = sc.jv(1.5, np.sin(x) * 2.0) * 3.0 + np.cos(x)
    compiled = jitgrad.jit(f)
    for _ in range(3):                           # the third call runs on the native call path
        np.testing.assert_allclose(compiled(x), expected, rtol=1e-14)
    traced = trace(f, (x,))
    np.testing.assert_allclose(evaluate(traced.function, [x])[0], expected, rtol=1e-14)


def test_grad_through_custom_vjp_with_callbacks_in_the_rule():
    jv = _bessel_vjp()
    loss = jitgrad.grad(lambda x: np.sum(jv(x) ** 2))
    x = np.array([0.3, 1.1, 2.5, 4.0])
    expected = 2 * sc.jv(1.5, x) * sc.jvp(1.5, x)
    np.testing.assert_allclose(loss(x), expected, rtol=1e-12)
    h = 1e-6
    numeric = (np.sum(sc.jv(1.5, x + h) ** 2 - sc.jv(1.5, x - h) ** 2, keepdims=True)) / (2 * h)
    np.testing.assert_allclose(np.sum(loss(x)), numeric[0], rtol=1e-7)


def test_without_custom_rules_differentiation_is_refused():
    with pytest.raises(GradientError, match="pure_callback has no derivative rule.*custom_vjp"):
        jitgrad.grad(lambda x: np.sum(bessel(1.5, x)))(np.ones(3))


def test_several_results_in_a_pytree_and_integer_dtypes():
    def split(a):
        return {"floor": np.floor(a).astype(np.int32), "frac": a - np.floor(a)}
    spec = {"floor": ShapeDtypeStruct((4,), np.int32), "frac": ShapeDtypeStruct((4,), np.float64)}
    f = jitgrad.jit(lambda x: pure_callback(split, spec, x * 2.0))
    x = np.array([0.3, 1.6, -2.2, 7.9])
    out = f(x)
    np.testing.assert_array_equal(out["floor"], np.floor(2 * x).astype(np.int32))
    np.testing.assert_allclose(out["frac"], 2 * x - np.floor(2 * x))
    assert out["floor"].dtype == np.int32
    eager = pure_callback(split, spec, x * 2.0)
    np.testing.assert_array_equal(eager["floor"], out["floor"])


def test_errors_in_the_function_are_raised_by_the_compiled_call():
    def failing(a):
        raise ValueError("no good")
    f = jitgrad.jit(lambda x: pure_callback(failing, x, x) + 1.0)
    for _ in range(3):
        with pytest.raises(CallbackError, match="ValueError: no good"):
            f(np.ones(3))
    wrong_shape = jitgrad.jit(lambda x: pure_callback(lambda a: a[:2], x, x))
    with pytest.raises(CallbackError, match=r"shape \(2,\), \(3,\) was declared"):
        wrong_shape(np.ones(3))
    np.testing.assert_array_equal(jitgrad.jit(lambda x: x * 2.0)(np.ones(2)), [2.0, 2.0])   # nothing pending


def test_callbacks_from_several_threads():
    f = jitgrad.jit(lambda x: bessel(0.5, x) + 1.0)
    x = np.linspace(0.5, 2.0, 16)
    expected = sc.jv(0.5, x) + 1.0
    results = []

    def worker():
        for _ in range(20):
            results.append(np.allclose(f(x), expected, rtol=1e-14))
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 80 and all(results)
