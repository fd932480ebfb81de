"""numpy.fft against NumPy running the same code (values, dtypes, shapes, every norm,
n=/s=/axes=, lengths with and without prime factors above 5), and its derivatives against
central differences to second order, for real and complex inputs."""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import DTypeError, JitgradError
from jitgrad.primitives.fft import is_smooth, radix_plan

ERROR_BOUND = 8
"""Largest difference from NumPy in units of the dtype's epsilon times the largest output
magnitude (measured: up to about 6 for float64 in 3-axis transforms of length 7, 10, 13)."""


def relative_error(got, expected) -> float:
    expected = np.asarray(expected)
    eps = np.finfo(expected.real.dtype).eps
    return float(np.max(np.abs(got - expected), initial=0) / (eps * max(np.max(np.abs(expected), initial=0), 1e-300)))


def check(fn, *args, bound=ERROR_BOUND):
    """`fn` (returning one array or a tuple of them) compiled, against NumPy running it."""
    expected = fn(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    compiled = jitgrad.jit(fn)
    for got in (compiled(*args), compiled(*args)):       # Python path, then the native call path
        got = got if isinstance(got, tuple) else (got,)
        for g, e in zip(got, expected, strict=True):
            assert g.dtype == e.dtype and g.shape == e.shape
            assert relative_error(g, e) <= bound


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 10))
    return x, x + 1j * rng.standard_normal(x.shape)


def test_radix_plan():
    assert radix_plan(1) == () and radix_plan(60) == (5, 3, 2, 2) and radix_plan(14) is None
    assert is_smooth(1000) and not is_smooth(7) and not is_smooth(0)


LENGTHS = {np.complex128: [1, 2, 7, 12, 97, 1000], np.complex64: [3, 11, 30, 243]}
"""The identity, radix 2, Bluestein (primes 7, 11, 97), mixed radices, radix 3 alone, 5^3 * 8."""


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_fft_and_ifft_of_every_kind_of_length(dtype):
    rng = np.random.default_rng(1)
    arrays = [(rng.standard_normal((2, n)) + 1j * rng.standard_normal((2, n))).astype(dtype) for n in LENGTHS[dtype]]
    check(lambda *zs: tuple(np.fft.fft(z) for z in zs) + (np.fft.ifft(zs[-1]),), *arrays)


@pytest.mark.parametrize("norm", ["ortho", "forward"])
def test_norms_lengths_and_axes(data, norm):
    x, z = data
    check(lambda x, z: (np.fft.fft(z, n=13, axis=1, norm=norm), np.fft.ifft(z, n=4, axis=0, norm=norm),
                        np.fft.rfft(x, n=9, axis=0, norm=norm), np.fft.irfft(z, n=11, axis=1, norm=norm),
                        np.fft.hfft(z, norm=norm), np.fft.ihfft(x, n=8, norm=norm)), x, z)


def test_multi_axis_transforms(data):
    x, z = data
    check(lambda x, z: (np.fft.fftn(z), np.fft.ifftn(z, s=(5, 12), axes=(0, 2), norm="ortho"),
                        np.fft.ifft2(z, s=(5, 12)), np.fft.rfftn(x), np.fft.irfftn(z), np.fft.irfft2(z, s=(6, 9))), x, z)
    check(lambda x, z: (np.fft.fft2(z, axes=(0, 2)), np.fft.rfft2(x, axes=(0, 1))), x[:, :4, :8], z[:, :4, :8])


def test_dtypes_round_trips_and_helpers(data):
    x, z = data
    check(lambda x, z: (np.fft.rfft2(x.astype(np.float32)), np.fft.fft(z.astype(np.complex64), n=17),
                        np.fft.fft((10 * x).astype(np.int32)), np.fft.irfft(z.astype(np.complex64)),
                        np.fft.ifft(np.fft.fft(z, axis=1), axis=1), np.fft.irfft(np.fft.rfft(x), n=x.shape[-1])), x, z)
    check(lambda x, z: (np.fft.fftshift(z, axes=(0, 2)) + np.fft.ifftshift(z),
                        np.fft.fftshift(x, axes=1) - np.fft.ifftshift(x, axes=-1),
                        x[0, 0] * np.fft.fftfreq(10, 0.5) + np.fft.rfftfreq(19)[:10]), x, z, bound=0)


def test_errors_match_numpys_refusals(data):
    x, z = data
    with pytest.raises(ValueError, match="Invalid norm"):
        jitgrad.jit(lambda z: np.fft.fft(z, norm="sideways"))(z)
    with pytest.raises(JitgradError, match="Invalid number of FFT data points"):
        jitgrad.jit(lambda z: np.fft.fft(z, n=0))(z)
    with pytest.raises(DTypeError, match="real input"):
        jitgrad.jit(np.fft.rfft)(z)


# --------------------------------------------------------------------------- derivatives

def wirtinger_gradient(f, a, h=1e-6):
    """df/dx - i df/dy (JAX's convention) by central differences; df/dx for real a."""
    g = np.zeros_like(a)
    for k in range(a.size):
        e = np.zeros_like(a)
        e.flat[k] = h
        g.flat[k] = (f(a + e) - f(a - e)) / (2 * h)
        if np.iscomplexobj(a):
            g.flat[k] -= 1j * (f(a + 1j * e) - f(a - 1j * e)) / (2 * h)
    return g


LOSSES = {
    "rfft-power": (lambda x: (np.abs(np.fft.rfft(x, n=7)) ** 2).sum(), False),
    "convolution": (lambda x: (np.fft.irfft2(np.fft.rfft2(x) * np.fft.rfft2(x[::-1]), s=x.shape) ** 2).sum(), False),
    "complex-bluestein": (lambda z: np.real(np.fft.ifft(z, axis=0, norm="ortho") * np.fft.fftn(z, s=(7, 6), axes=(0, 1))[:4]).sum(),
                          True),
    "hermitian": (lambda z: (np.fft.hfft(z) ** 2).sum() + np.abs(np.fft.ihfft(np.real(z))).sum(), True),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_to_second_order(name):
    f, is_complex = LOSSES[name]
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 6)) + (1j * rng.standard_normal((4, 6)) if is_complex else 0)
    v = rng.standard_normal(a.shape)
    grad = jitgrad.grad(f)
    np.testing.assert_allclose(grad(a), wirtinger_gradient(f, a), rtol=1e-6, atol=1e-6)

    def directional(a):
        return np.real(grad(a) * v).sum()
    np.testing.assert_allclose(jitgrad.grad(directional)(a), wirtinger_gradient(directional, a), rtol=1e-5, atol=1e-5)


def test_forward_mode_agrees_with_reverse():
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal(12), rng.standard_normal(12)

    def f(x):
        return (np.abs(np.fft.fft(x * (1 + 0.5j), n=14)) ** 2).sum()
    _, tangent = jitgrad.jvp(f, (x,), (t,))
    np.testing.assert_allclose(tangent, jitgrad.grad(f)(x) @ t, rtol=1e-12)
