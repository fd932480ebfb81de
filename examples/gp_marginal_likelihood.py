"""Fit a Gaussian process's kernel hyperparameters by maximizing the marginal likelihood.

The negative log marginal likelihood of targets y under a GP with an RBF kernel,

    K = s^2 exp(-|x_i - x_j|^2 / (2 l^2)) + noise^2 I,   L = cholesky(K),
    NLML = 1/2 y^T K^-1 y + sum(log diag L) + n/2 log(2 pi),

is plain NumPy below (np.linalg.cholesky and np.linalg.solve on the factor). jitgrad
compiles its value and gradient with respect to the log-hyperparameters into one native
function, which SciPy's L-BFGS-B minimizes. The gradient is checked against central
differences of the same NumPy function before the fit.

Run: python examples/gp_marginal_likelihood.py [--n 200]
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import minimize

import jitgrad


def negative_log_marginal_likelihood(log_params, x, y):
    """log_params = log([length_scale, signal_std, noise_std])."""
    length, signal, noise = np.exp(log_params[0]), np.exp(log_params[1]), np.exp(log_params[2])
    squared_distances = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    k = signal ** 2 * np.exp(-0.5 * squared_distances / length ** 2) + noise ** 2 * np.eye(x.shape[0])
    factor = np.linalg.cholesky(k)
    alpha = np.linalg.solve(factor, y)                  # L^-1 y, so y^T K^-1 y = |alpha|^2
    return 0.5 * alpha @ alpha + np.sum(np.log(np.diagonal(factor))) + 0.5 * x.shape[0] * np.log(2 * np.pi)


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, (n, 1))
    y = np.sin(2 * x[:, 0]) + 0.3 * np.cos(5 * x[:, 0]) + 0.1 * rng.standard_normal(n)
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="number of training points")
    args = parser.parse_args()
    x, y = make_data(args.n)
    value_and_grad = jitgrad.value_and_grad(negative_log_marginal_likelihood)

    start = np.log(np.array([1.0, 1.0, 0.5]))
    value, grad = value_and_grad(start, x, y)
    eps = 1e-6
    numeric = np.array([(negative_log_marginal_likelihood(start + eps * e, x, y)
                         - negative_log_marginal_likelihood(start - eps * e, x, y)) / (2 * eps)
                        for e in np.eye(3)])
    print(f"NLML at the start: jitgrad {value:.10f}, NumPy {negative_log_marginal_likelihood(start, x, y):.10f}")
    print(f"max |gradient - central differences| = {np.max(np.abs(grad - numeric)):.2e}")

    result = minimize(lambda p: tuple(np.asarray(v, dtype=np.float64) for v in value_and_grad(p, x, y)),
                      start, jac=True, method="L-BFGS-B")
    length, signal, noise = np.exp(result.x)
    print(f"L-BFGS-B: {result.nit} iterations, {result.nfev} evaluations, converged: {result.success}")
    print(f"fitted length scale {length:.4f}, signal std {signal:.4f}, noise std {noise:.4f}")
    print(f"NLML: {value:.4f} -> {result.fun:.4f}")


if __name__ == "__main__":
    main()
