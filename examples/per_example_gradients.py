"""Per-example gradients with jitgrad.vmap(jitgrad.grad(loss)): the gradient of each
example's loss in one compiled, vectorized program, here used for DP-SGD-style clipping
(each example's gradient scaled to norm <= 1 before averaging) on a small MLP.

    python3 examples/per_example_gradients.py
"""
from __future__ import annotations

import numpy as np

import jitgrad


def loss(params, x, y):
    """Squared error of a one-hidden-layer MLP on ONE example (x: features, y: target)."""
    w1, b1, w2 = params
    hidden = np.tanh(x @ w1 + b1)
    return (hidden @ w2 - y) ** 2


per_example_grads = jitgrad.vmap(jitgrad.grad(loss), in_axes=(None, 0, 0))


def clipped_mean_gradient(params, xs, ys, max_norm=1.0):
    grads = per_example_grads(params, xs, ys)                 # each leaf: (batch, *param shape)
    norms = np.sqrt(sum(np.sum(g.reshape(len(xs), -1) ** 2, axis=1) for g in grads))
    scale = np.minimum(1.0, max_norm / np.maximum(norms, 1e-12))
    return [np.mean(g * scale.reshape(-1, *([1] * (g.ndim - 1))), axis=0) for g in grads]


def main():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((256, 4))
    ys = np.sin(xs @ np.array([1.0, -2.0, 0.5, 0.0]))
    params = [rng.standard_normal((4, 16)) * 0.5, np.zeros(16), rng.standard_normal(16) * 0.5]

    grads = per_example_grads(params, xs[:8], ys[:8])
    loop = [jitgrad.grad(loss)(params, xs[i], ys[i]) for i in range(8)]
    error = max(float(np.max(np.abs(g[i] - loop[i][k]))) for k, g in enumerate(grads) for i in range(8))
    print(f"per-example gradient shapes: {[g.shape for g in grads]}")
    print(f"max |vmap(grad) - loop of grad| = {error:.2e}")

    mean_loss = lambda p: float(np.mean([loss(p, x, y) for x, y in zip(xs, ys)]))   # noqa: E731
    start = mean_loss(params)
    for _ in range(200):
        params = [p - 0.5 * g for p, g in zip(params, clipped_mean_gradient(params, xs, ys))]
    print(f"mean loss with clipped per-example gradients: {start:.4f} -> {mean_loss(params):.4f}")


if __name__ == "__main__":
    main()
