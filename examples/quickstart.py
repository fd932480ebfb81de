"""jitgrad quickstart: compile the gradient of an ordinary NumPy function and show it.

Run:  python examples/quickstart.py
"""
import numpy as np

import jitgrad
from jitgrad import jit_grad


@jit_grad
def loss(w, x, y):
    return np.mean((np.tanh(x @ w) - y) ** 2)


def numerical_gradient(f, w, *args, eps=1e-6):
    g = np.zeros_like(w)
    for i in np.ndindex(w.shape):
        step = np.zeros_like(w)
        step[i] = eps
        g[i] = (f(w + step, *args) - f(w - step, *args)) / (2 * eps)
    return g


def main():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3))
    x = rng.normal(size=(8, 4))
    y = rng.normal(size=(8, 3))

    g = loss(w, x, y)                      # traced, differentiated, compiled to native code
    print("d loss / d w, computed by native code:")
    print(g)

    check = numerical_gradient(loss.__wrapped__, w, x, y)
    print(f"max |jitgrad - central differences| = {np.abs(g - check).max():.2e}")

    value, grads = jitgrad.value_and_grad(loss.__wrapped__, argnums=(0, 1))(w, x, y)
    print(f"loss = {float(value):.6f}; gradient shapes: {[gi.shape for gi in grads]}")

    print("\nThe optimized IR that was compiled (each op carries its source line):")
    print(loss.lower(w, x, y).as_text())


if __name__ == "__main__":
    main()
