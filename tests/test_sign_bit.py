"""np.signbit and np.copysign of traced floats: the IEEE sign bit, of -0.0 and of NaNs
too, in every float dtype, compiled for the CPU and the CUDA emulator, against NumPy."""
import ml_dtypes
import numpy as np
import pytest

import jitgrad

VALUES = np.array([0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324, 1e-40, -1e-40])
SIGNS = np.array([1.0, -1.0, np.nan, -np.nan, 0.0, -0.0, 2.0, 3.0, -4.0, np.inf, -np.inf, -0.0])
DTYPES = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16]


def _same_bits(got, expected):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if expected.dtype == bool:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))
        np.testing.assert_array_equal(got[~np.isnan(got)], expected[~np.isnan(expected)])


@pytest.mark.parametrize("device", ["cpu", "cuda-emulator"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_signbit_and_copysign_match_numpy_bit_for_bit(dtype, device):
    x, y = VALUES.astype(dtype), SIGNS.astype(dtype)

    def f(x, y):
        return (np.signbit(x), np.copysign(y, x), np.copysign(x, y), np.copysign(2.5, x),
                np.copysign(x, -1.0), np.copysign(x, np.int64(3)))

    with np.errstate(all="ignore"):
        expected = f(x, y)
    got = jitgrad.jit(f, device=device)(x, y)
    for g, e in zip(got, expected, strict=True):
        _same_bits(g, e)


def test_mixed_dtypes_follow_numpy_promotion():
    x = VALUES.astype(np.float32)
    y = SIGNS.astype(np.float16)
    _same_bits(jitgrad.jit(lambda a, b: np.copysign(a, b))(x, y), np.copysign(x, y))
    ints = np.array([3, -1, 0, -7, 2, 5, -2, 1, 0, -3, 4, -4])
    _same_bits(jitgrad.jit(lambda a, b: np.copysign(a, b))(ints, x), np.copysign(ints, x))


def test_copysign_gradient_is_the_product_of_signs_and_zero_for_the_sign():
    x = np.array([1.5, -2.0, 3.0, -0.5])
    y = np.array([-1.0, -3.0, 2.0, 4.0])
    gx, gy = jitgrad.grad(lambda a, b: np.sum(np.copysign(a, b) * np.arange(1.0, 5.0)), argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(gx, np.sign(x) * np.sign(y) * np.arange(1.0, 5.0))
    np.testing.assert_array_equal(gy, np.zeros(4))
    assert np.all(jitgrad.grad(lambda a: np.sum(np.signbit(a) * a))(x) == np.signbit(x))
