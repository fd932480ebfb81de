"""Data-parallel training of a small MLP over MPI, optionally in mixed precision and with
gradient compression.

    mpiexec -n 2 python examples/train_data_parallel.py
    mpiexec -n 2 python examples/train_data_parallel.py --mixed bfloat16 --compression topk
    python examples/train_data_parallel.py          # one process: the same training

The data set is synthetic and digits-like (8x8 "images" of 10 classes: a fixed random
pattern per class, each sample brightened or dimmed and covered in noise), generated from
a seed, so every rank has it without any download. Every rank draws the same batch
indices, takes its half of each batch (`dist.shard`), computes the gradient of its half's
mean loss, and `data_parallel` averages the gradients: the mean over the ranks of the
halves' means is the whole batch's mean, so the update equals one process's on the whole
batch. Rank 0 broadcasts the initial parameters.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import jitgrad
from jitgrad import distributed as dist

N_FEATURES, N_HIDDEN, N_CLASSES = 64, 64, 10


def make_dataset(n_train: int = 2048, n_test: int = 1024, seed: int = 0, noise: float = 2.4):
    """(x_train, labels_train, x_test, labels_test), float32 features in about [-4, 4]."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((N_CLASSES, N_FEATURES))

    def draw(n):
        labels = rng.integers(0, N_CLASSES, n)
        brightness = rng.uniform(0.6, 1.4, (n, 1))
        x = patterns[labels] * brightness + noise * rng.standard_normal((n, N_FEATURES))
        return x.astype(np.float32), labels

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return x_train, y_train, x_test, y_test


def init_params(seed: int = 1, dtype=np.float32) -> dict:
    rng = np.random.default_rng(seed)
    return {"W1": (rng.standard_normal((N_FEATURES, N_HIDDEN)) / np.sqrt(N_FEATURES)).astype(dtype),
            "b1": np.zeros(N_HIDDEN, dtype),
            "W2": (rng.standard_normal((N_HIDDEN, N_CLASSES)) / np.sqrt(N_HIDDEN)).astype(dtype),
            "b2": np.zeros(N_CLASSES, dtype)}


def loss(params, x, onehot):
    """Mean softmax cross-entropy of a tanh MLP."""
    h = np.tanh(x @ params["W1"] + params["b1"])
    logits = h @ params["W2"] + params["b2"]
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return np.mean(-np.sum(onehot * log_probs, axis=1))


def accuracy(params, x, labels) -> float:
    h = np.tanh(x @ params["W1"] + params["b1"])
    return float(np.mean(np.argmax(h @ params["W2"] + params["b2"], axis=1) == labels))


def compression_option(name: str | None, ratio: float = 0.05):
    if name in (None, "none"):
        return None
    return dist.TopK(ratio) if name == "topk" else name


def train(steps: int = 150, batch: int = 64, learning_rate: float = 0.1, *, mixed: str | None = None,
          compression: str | None = None, dtype=np.float32, distributed: bool = True, seed: int = 0):
    """Train with SGD (momentum 0.9) and return (params, losses). `distributed=False` runs
    the same steps on the whole batch in this process alone (the reference the tests
    compare against)."""
    x_train, y_train, _, _ = make_dataset(seed=seed)
    x_train = x_train.astype(dtype)
    onehot = np.eye(N_CLASSES, dtype=dtype)[y_train]
    params = init_params(dtype=dtype)
    scaler = None
    objective = loss
    if mixed is not None:
        objective = jitgrad.mixed_precision(loss, compute=mixed)
        scaler = jitgrad.LossScaler(init_scale=2.0 ** 12, growth_interval=50)
        objective = scaler.scaled(objective)
    step = jitgrad.jit_grad(objective, with_value=True)
    if distributed:
        params = dist.broadcast(params)
        step = dist.data_parallel(step, compression=compression_option(compression))
    optimizer = jitgrad.SGD(learning_rate, momentum=0.9, loss_scaler=scaler)
    order = np.random.default_rng(seed + 1)           # the same batches on every rank
    losses = []
    for _ in range(steps):
        chosen = order.choice(len(x_train), batch, replace=False)
        xb, yb = x_train[chosen], onehot[chosen]
        if distributed:
            xb, yb = dist.shard((xb, yb))
        args = (params, xb, yb) if scaler is None else (params, xb, yb, scaler.scale)
        value, grads = step(*args)
        losses.append(float(value) / (1.0 if scaler is None else scaler.scale))
        optimizer.apply_gradients([(params[k], grads[k]) for k in sorted(params)])
    return params, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=64, help="global batch, split over the ranks")
    parser.add_argument("--mixed", choices=["bfloat16", "float16"], default=None)
    parser.add_argument("--compression", choices=["none", "bfloat16", "float16", "topk"], default="none")
    args = parser.parse_args()
    dist.init()
    # the ranks share the cores: each compiled loop gets its share of them
    jitgrad.config.config.num_threads = max(1, (os.cpu_count() or 1) // dist.size())
    params, losses = train(args.steps, args.batch, mixed=args.mixed, compression=args.compression)
    _, _, x_test, y_test = make_dataset()
    if dist.rank() == 0:
        print(f"{dist.size()} rank(s), mixed={args.mixed}, compression={args.compression}")
        for i in range(0, len(losses), max(1, len(losses) // 5)):
            print(f"step {i:4d}  loss {losses[i]:.4f}")
        print(f"final loss {losses[-1]:.4f}")
        print(f"test accuracy {accuracy(params, x_test, y_test):.4f}")


if __name__ == "__main__":
    main()
