"""holomorphic=True for grad, value_and_grad, jacfwd, jacrev and jacobian (JAX's
convention): the result is the complex derivative f'(z), checked against the analytic
derivatives of holomorphic functions; real inputs or outputs give JAX's errors."""
import pickle

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import GradientError


def f(z):
    return np.exp(z) * z ** 2 / (z + 3) + np.sqrt(z + 4j) * np.log(z + 5)


def f_prime(z):
    return ((np.exp(z) * (z ** 2 + 2 * z) * (z + 3) - np.exp(z) * z ** 2) / (z + 3) ** 2
            + np.log(z + 5) / (2 * np.sqrt(z + 4j)) + np.sqrt(z + 4j) / (z + 5))


def f_second(z):
    """f'' by central differences along the real axis of the analytic f' (holomorphic, so
    any direction gives the same number)."""
    h = 1e-5
    return (f_prime(z + h) - f_prime(z - h)) / (2 * h)


POINTS = [0.3 + 0.7j, -1.2 - 0.4j, 2.0 + 1.5j]


@pytest.mark.parametrize("z", POINTS)
def test_grad_is_the_complex_derivative(z):
    z = np.complex128(z)
    np.testing.assert_allclose(jitgrad.grad(f, holomorphic=True)(z), f_prime(z), rtol=1e-12)
    value, derivative = jitgrad.value_and_grad(f, holomorphic=True)(z)
    np.testing.assert_allclose(value, f(z), rtol=1e-13)
    np.testing.assert_allclose(derivative, f_prime(z), rtol=1e-12)


def test_second_derivative_and_complex64():
    z = np.complex128(0.3 + 0.7j)
    second = jitgrad.grad(jitgrad.grad(f, holomorphic=True), holomorphic=True)(z)
    np.testing.assert_allclose(second, f_second(z), rtol=1e-8)
    z32 = np.complex64(z)
    g32 = jitgrad.grad(f, holomorphic=True)(z32)
    assert g32.dtype == np.complex64
    np.testing.assert_allclose(g32, f_prime(z), rtol=1e-5)


def test_has_aux_and_argnums():
    def two(w, z):
        return w * np.exp(z), np.abs(z)
    w, z = np.complex128(1 - 2j), np.complex128(0.5 + 0.25j)
    (gw, gz), aux = jitgrad.grad(two, argnums=(0, 1), has_aux=True, holomorphic=True)(w, z)
    np.testing.assert_allclose(gw, np.exp(z), rtol=1e-13)
    np.testing.assert_allclose(gz, w * np.exp(z), rtol=1e-13)
    np.testing.assert_allclose(aux, np.abs(z), rtol=1e-13)


def elementwise_mix(z):
    return np.exp(z) * z[::-1] + z ** 3


def analytic_jacobian(z):
    n = z.size
    jac = np.zeros((n, n), complex)
    jac[np.arange(n), np.arange(n)] += np.exp(z) * z[::-1] + 3 * z ** 2
    jac[np.arange(n), np.arange(n)[::-1]] += np.exp(z)
    return jac


@pytest.mark.parametrize("n", [3, 40], ids=["one-program", "per-direction"])
@pytest.mark.parametrize("name", ["jacfwd", "jacrev", "jacobian"])
def test_jacobians_are_complex_derivatives(name, n):
    z = np.random.default_rng(n).standard_normal(n) + 1j * np.random.default_rng(n + 1).standard_normal(n)
    jac = getattr(jitgrad, name)(elementwise_mix, holomorphic=True)(z)
    assert jac.dtype == np.complex128 and jac.shape == (n, n)
    np.testing.assert_allclose(jac, analytic_jacobian(z), rtol=1e-12, atol=1e-14)


def test_pickled_holomorphic_gradient_keeps_the_flag():
    restored = pickle.loads(pickle.dumps(jitgrad.grad(np.exp, holomorphic=True)))
    z = np.complex128(0.1 + 0.2j)
    np.testing.assert_allclose(restored(z), np.exp(z), rtol=1e-14)


@pytest.mark.parametrize("make, arg, message", [
    (lambda: jitgrad.grad(f, holomorphic=True), np.float64(0.5),
     "grad with holomorphic=True requires inputs with complex dtype, but got float64"),
    (lambda: jitgrad.grad(np.abs, holomorphic=True), np.complex128(1j),
     "grad with holomorphic=True requires outputs with complex dtype, but got float64"),
    (lambda: jitgrad.grad(f), np.complex128(1j), "grad requires real-valued outputs"),
    (lambda: jitgrad.jacfwd(elementwise_mix, holomorphic=True), np.ones(3),
     "jacfwd with holomorphic=True requires inputs with complex dtype, but got float64"),
    (lambda: jitgrad.jacrev(elementwise_mix, holomorphic=True), np.ones(3),
     "jacrev with holomorphic=True requires inputs with complex dtype"),
    (lambda: jitgrad.jacrev(lambda z: np.abs(z), holomorphic=True), np.ones(3) * 1j,
     "jacrev with holomorphic=True requires outputs with complex dtype"),
    (lambda: jitgrad.jacfwd(elementwise_mix), np.ones(40) * 1j, "jacfwd requires real-valued inputs"),
    (lambda: jitgrad.jacrev(elementwise_mix), np.ones(3) * 1j, "jacrev requires real-valued outputs"),
], ids=["grad-real-input", "grad-real-output", "grad-complex-output", "jacfwd-real-input",
        "jacrev-real-input", "jacrev-real-output", "jacfwd-complex-input", "jacrev-complex-output"])
def test_jax_errors(make, arg, message):
    with pytest.raises(GradientError, match=message.replace("(", r"\(")):
        make()(arg)


def test_real_gradient_of_complex_input_is_unchanged():
    """Without holomorphic, grad of a real function of z is JAX's df/dx - i df/dy."""
    z = np.complex128(3 + 4j)
    np.testing.assert_allclose(jitgrad.grad(lambda z: np.abs(z) ** 2)(z), 6 - 8j, rtol=1e-14)
