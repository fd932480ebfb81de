"""GP negative log marginal likelihood and its gradient (n = 1000, float64): jitgrad vs
NumPy/SciPy written by hand vs JAX (when importable), in one process.

The model (examples/gp_marginal_likelihood.py): an RBF kernel with three log-
hyperparameters, K = s^2 exp(-d^2 / 2 l^2) + noise^2 I, L = cholesky(K),
NLML = 1/2 |L^-1 y|^2 + sum(log diag L) + n/2 log 2 pi; value and gradient with respect
to the three hyperparameters.

  jitgrad            jitgrad.value_and_grad of the NumPy function (np.linalg.cholesky,
                     np.linalg.solve on the factor)
  numpy+scipy        by hand: cho_factor, cho_solve for alpha and K^-1, and the gradient
                     1/2 tr((K^-1 - alpha alpha^T) dK/dtheta)
  jax                jax.jit(jax.value_and_grad) of the same code on jax.numpy
  jax-triangular     the same with jax.scipy.linalg.solve_triangular for L^-1 y

Every timed call takes NumPy arrays and returns NumPy arrays; each result is checked
against the hand-written one before it is timed. Medians of `--repeats` calls.

Run: python benchmarks/linalg.py [--n 1000] [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import scipy.linalg

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jitgrad  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from gp_marginal_likelihood import make_data, negative_log_marginal_likelihood  # noqa: E402


def numpy_value_and_grad(log_params, x, y):
    """The hand-written reference: one Cholesky, two triangular solves with n columns."""
    length, signal, noise = np.exp(log_params)
    n = x.shape[0]
    squared_distances = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    shape = np.exp(-0.5 * squared_distances / length ** 2)
    k = signal ** 2 * shape + noise ** 2 * np.eye(n)
    factor = scipy.linalg.cho_factor(k, lower=True)
    alpha = scipy.linalg.cho_solve(factor, y)
    value = 0.5 * y @ alpha + np.sum(np.log(np.diagonal(factor[0]))) + 0.5 * n * np.log(2 * np.pi)
    weight = scipy.linalg.cho_solve(factor, np.eye(n)) - np.outer(alpha, alpha)     # 2 dNLML/dK
    d_length = signal ** 2 * shape * squared_distances / length ** 2                 # dK/dlog(length)
    grad = 0.5 * np.array([np.sum(weight * d_length), np.sum(weight * 2 * signal ** 2 * shape),
                           2 * noise ** 2 * np.trace(weight)])
    return value, grad


def jax_candidates():
    try:
        import jax
        import jax.numpy as jnp
        import jax.scipy.linalg as jsl
    except ImportError:
        return {}
    jax.config.update("jax_enable_x64", True)

    def nlml(log_params, x, y, triangular):
        length, signal, noise = jnp.exp(log_params[0]), jnp.exp(log_params[1]), jnp.exp(log_params[2])
        squared_distances = jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
        k = signal ** 2 * jnp.exp(-0.5 * squared_distances / length ** 2) + noise ** 2 * jnp.eye(x.shape[0])
        factor = jnp.linalg.cholesky(k)
        alpha = jsl.solve_triangular(factor, y, lower=True) if triangular else jnp.linalg.solve(factor, y)
        return 0.5 * alpha @ alpha + jnp.sum(jnp.log(jnp.diagonal(factor))) + 0.5 * x.shape[0] * jnp.log(2 * jnp.pi)

    out = {}
    for name, triangular in (("jax", False), ("jax-triangular", True)):
        compiled = jax.jit(jax.value_and_grad(lambda p, x, y, t=triangular: nlml(p, x, y, t)))

        def call(p, x, y, compiled=compiled):
            value, grad = compiled(jax.device_put(p), jax.device_put(x), jax.device_put(y))
            return float(value), np.asarray(grad)
        out[name] = call
    return out


def median_times(fn, args, repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time of the process (all threads): on a shared
    machine the CPU time is the steadier measure of the work done."""
    fn(*args)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(*args)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    x, y = make_data(args.n)
    params = np.log(np.array([0.7, 1.2, 0.2]))
    ref_value, ref_grad = numpy_value_and_grad(params, x, y)
    jitgrad_vg = jitgrad.value_and_grad(negative_log_marginal_likelihood)
    candidates = {"numpy+scipy": numpy_value_and_grad,
                  "jitgrad": lambda p, x, y: tuple(np.asarray(v) for v in jitgrad_vg(p, x, y)),
                  **jax_candidates()}
    start = time.perf_counter()
    jitgrad_vg(params, x, y)
    first_call = time.perf_counter() - start
    print(f"GP NLML value and gradient, n = {args.n}, float64, median of {args.repeats}")
    print(f"jitgrad first call (trace + differentiate + compile + run): {first_call:.2f} s")
    base = None
    print(f"  {'':16s} {'wall':>9s}      {'CPU':>9s}      wall / numpy+scipy")
    for name, fn in candidates.items():
        value, grad = fn(params, x, y)
        np.testing.assert_allclose(value, ref_value, rtol=1e-9)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-6, atol=1e-8)
        wall, cpu = median_times(fn, (params, x, y), args.repeats)
        base = wall if base is None else base
        print(f"  {name:16s} {wall * 1e3:9.2f} ms   {cpu * 1e3:9.2f} ms   {wall / base:5.2f}x")


if __name__ == "__main__":
    main()
