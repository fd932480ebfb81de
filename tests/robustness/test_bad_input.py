"""Inputs at the edges — very deep programs, integers beyond int64, dict keys of mixed
types, shapes beyond 64-bit addressing — give the right answer or a clear JitgradError,
never a raw Python error, a hang or a crash."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import PytreeError
from jitgrad.ir import DType, TensorType

X = np.linspace(-1.0, 1.0, 5)


def chain(n: int):
    def f(x):
        for _ in range(n):
            x = x * 1.0001 + 0.1
        return x
    return f


@pytest.mark.parametrize("depth", [400, 5000])
def test_deep_elementwise_chains_compile(depth):
    f = chain(depth)
    np.testing.assert_allclose(jitgrad.jit(f)(X), f(X), rtol=1e-12)


def test_gradient_of_a_deep_chain():
    g = jitgrad.grad(lambda x: np.sum(np.tanh(chain(400)(x))))
    y = chain(400)(X)
    np.testing.assert_allclose(g(X), (1 - np.tanh(y) ** 2) * 1.0001 ** 400, rtol=1e-10)


def test_deep_chains_stay_one_fused_loop():
    """The chain of 800 ops is cut into segments whose ends are computed one after the
    other in the same loop iteration, kept in registers."""
    lowered = jitgrad.jit(chain(400)).lower(X)
    (kernel,) = lowered.executable.schedule.kernels
    assert kernel.fused and 800 // 48 <= len(kernel.ops) <= 800 // 24


@pytest.mark.parametrize("big", [2 ** 63, 2 ** 64, -2 ** 63 - 1, 10 ** 30])
def test_python_ints_beyond_int64_as_arguments(big):
    with pytest.raises(jitgrad.ArgumentError, match="int64"):
        jitgrad.jit(lambda a: a + 1)(big)


@pytest.mark.parametrize("big", [2 ** 63, 10 ** 30])
def test_python_ints_beyond_int64_as_constants(big):
    ints = np.arange(3)
    with pytest.raises(jitgrad.JitgradError):
        jitgrad.jit(lambda a: a + big)(ints)


def test_dict_keys_of_mixed_types():
    f = jitgrad.jit(lambda d: {1: d[1] * 2.0, "a": d["a"] + d[1]})
    for _ in range(3):
        out = f({"a": X, 1: X * 3.0})
        np.testing.assert_array_equal(out[1], X * 6.0)
        np.testing.assert_array_equal(out["a"], X * 4.0)
    grads = jitgrad.grad(lambda d: np.sum(d[1] * d["a"]))({1: X, "a": X * 2.0})
    np.testing.assert_array_equal(grads[1], X * 2.0)
    np.testing.assert_array_equal(grads["a"], X)


def test_dict_keys_without_an_order_are_a_clear_error():
    class Key:
        pass
    with pytest.raises(PytreeError, match="cannot be ordered"):
        jitgrad.jit(lambda d: 1.0)({Key(): X, Key(): X})
    assert issubclass(PytreeError, jitgrad.JitgradError)


def test_broadcast_beyond_64_bit_addressing_names_the_line():
    """Compiled, such a loop's trip count wraps around (the process spun forever): run in
    a subprocess with a timeout."""
    code = textwrap.dedent("""
        import numpy as np, jitgrad
        for shape in [(2 ** 40, 2 ** 40), (2 ** 31, 2 ** 31, 2 ** 31)]:
            f = jitgrad.jit(lambda a: np.sum(np.broadcast_to(a, shape)))
            try:
                f(np.ones(1))
            except jitgrad.ShapeError as err:
                print(type(err).__name__, err)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("ShapeError <string>:4: ") and "64-bit" in line
                                   for line in lines), lines


def test_argument_whose_byte_size_overflows():
    f = jitgrad.jit(lambda a: np.sum(a * 2.0))
    with pytest.raises(jitgrad.ShapeError, match="bytes"):
        f.lower(TensorType((2 ** 62, 4), DType.f64))


def test_huge_but_addressable_shapes_fold_without_a_loop():
    g = jitgrad.grad(lambda a: np.sum(np.broadcast_to(a, (2 ** 40, 2 ** 40))))
    np.testing.assert_array_equal(g(np.ones(1)), [2.0 ** 80])
