"""The native call path: a repeated signature is served by a METH_FASTCALL function
that checks every argument and falls back to the Python path for anything else."""
import gc
import sys
import threading

import numpy as np
import pytest

import jitgrad

X = np.linspace(-1.0, 1.0, 8)


def square_sum(x):
    return np.sum(x ** 2)


def test_repeated_calls_use_the_native_path_and_stay_correct():
    g = jitgrad.grad(square_sum)
    for _ in range(5):
        np.testing.assert_array_equal(g(X), 2 * X)
    assert g._fast is not None and type(g._fast).__name__ == "builtin_function_or_method"


@pytest.mark.parametrize("other", [
    np.linspace(0, 1, 3),                       # another shape: retrace
    X.astype(np.float32),                      # another dtype: retrace
    np.linspace(-1, 1, 16)[::2],               # not contiguous
    0.5,                                       # a Python float
    np.arange(8),                              # integers: promoted by the Python path
])
def test_anything_else_falls_back_to_the_python_path(other):
    g = jitgrad.grad(square_sum) if not isinstance(other, np.ndarray) or other.dtype.kind == "f" \
        else jitgrad.jit(lambda x: x * 2)
    for _ in range(3):
        g(X)
    assert g._fast is not None
    got = g(other)
    want = 2 * np.asarray(other)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_array_equal(g(X), 2 * X)            # the fast path still works after


def test_wrong_argument_count_still_raises_argument_error():
    g = jitgrad.grad(square_sum)
    for _ in range(3):
        g(X)
    with pytest.raises(jitgrad.ArgumentError):
        g(X, X)


def test_tuple_results_and_several_arguments():
    f = jitgrad.jit(lambda a, b: (a * b, a + b, np.sum(a)))
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    for _ in range(4):
        out = f(a, b)
        assert isinstance(out, tuple) and len(out) == 3
        np.testing.assert_array_equal(out[0], a * b)
        np.testing.assert_array_equal(out[1], a + b)
        assert out[2] == 15.0 and out[2].shape == ()
    assert f._fast is not None


def test_no_reference_leaks():
    g = jitgrad.grad(square_sum)
    for _ in range(3):
        g(X)
    before = sys.getrefcount(X)
    results = [g(X) for _ in range(1000)]
    count = sys.getrefcount(results[0])          # held by the list and by getrefcount's argument
    assert count == 2
    del results
    gc.collect()
    assert sys.getrefcount(X) == before


def test_traced_calls_inline_instead_of_calling_native_code():
    g = jitgrad.grad(square_sum)
    for _ in range(3):
        g(X)
    second = jitgrad.grad(lambda x: np.sum(g(x) * x))
    np.testing.assert_allclose(second(X), 4 * X)


def test_threads_share_the_native_path_safely():
    f = jitgrad.jit(lambda x: np.tanh(x) * 2.0)
    data = [np.random.default_rng(k).normal(size=64) for k in range(4)]
    for _ in range(3):
        f(data[0])
    errors = []

    def work(x):
        for _ in range(500):
            if not np.allclose(f(x), np.tanh(x) * 2.0):
                errors.append(x)
    threads = [threading.Thread(target=work, args=(x,)) for x in data]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
