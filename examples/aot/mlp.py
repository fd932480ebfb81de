"""The W2 model (benchmarks/run.py): a 784 -> 256 -> 10 tanh MLP with softmax
cross-entropy, float32, batch 256, exported as the C library `libmlp`:

    mlp_loss(W1, b1, W2, b2, x, y)       -> loss
    mlp_grad_loss(W1, b1, W2, b2, x, y)  -> dW1, db1, dW2, db2

`python3 mlp.py DIR` writes the artifact and the starting parameters and data (raw
float32 files) that main.c trains from."""
import os
import sys

import numpy as np

import jitgrad
import jitgrad.aot

BATCH, INPUTS, HIDDEN, CLASSES = 256, 784, 256, 10
LEARNING_RATE = np.float32(0.1)
PARAMETERS = ("W1", "b1", "W2", "b2")


def loss(W1, b1, W2, b2, x, y):
    h = np.tanh(np.dot(x, W1) + b1)
    logits = np.dot(h, W2) + b2
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return np.mean(-np.sum(y * log_probs, axis=1))


def starting_point(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, INPUTS)).astype(np.float32)
    labels = rng.integers(0, CLASSES, BATCH)
    return {"W1": (rng.standard_normal((INPUTS, HIDDEN)) / np.sqrt(INPUTS)).astype(np.float32),
            "b1": np.zeros(HIDDEN, np.float32),
            "W2": (rng.standard_normal((HIDDEN, CLASSES)) / np.sqrt(HIDDEN)).astype(np.float32),
            "b2": np.zeros(CLASSES, np.float32),
            "x": x, "y": np.eye(CLASSES, dtype=np.float32)[labels]}


def sgd_in_python(arrays: dict[str, np.ndarray], steps: int) -> tuple[list[float], dict[str, np.ndarray]]:
    """What main.c does, with jitgrad's JIT: the losses seen and the final parameters."""
    grad_loss = jitgrad.grad(loss, argnums=(0, 1, 2, 3))
    value = jitgrad.jit(loss)
    params = [arrays[name].copy() for name in PARAMETERS]
    losses = []
    for _ in range(steps):
        losses.append(float(value(*params, arrays["x"], arrays["y"])))
        grads = grad_loss(*params, arrays["x"], arrays["y"])
        params = [p - LEARNING_RATE * g for p, g in zip(params, grads)]
    return losses, dict(zip(PARAMETERS, params))


def build(directory: str, target: str = "host") -> dict:
    arrays = starting_point()
    examples = [arrays[name] for name in (*PARAMETERS, "x", "y")]
    manifest = jitgrad.aot.export([("loss", jitgrad.jit(loss)),
                                   ("grad_loss", jitgrad.grad(loss, argnums=(0, 1, 2, 3)))],
                                  *examples, path=directory, name="mlp", target=target)
    for name, array in arrays.items():
        array.tofile(os.path.join(directory, f"{name}.f32"))
    return manifest


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "build/mlp"
    build(out)
    print(f"wrote the mlp artifact, parameters and data to {out}")
