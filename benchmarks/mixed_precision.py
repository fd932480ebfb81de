"""The mixed-precision (bfloat16) W2 train step against float32, and digits accuracy
(docs/mixed-precision.md, docs/benchmarks.md).

    python benchmarks/mixed_precision.py speed       # W2 value+grad, medians of interleaved rounds
    python benchmarks/mixed_precision.py accuracy    # W2 trained on scikit-learn's digits
    python benchmarks/mixed_precision.py profile     # where a bfloat16 step's time goes

`speed`: value and gradient of the W2 MLP (784 -> 256 -> 10 tanh, softmax cross-entropy,
batch 256, float32 master weights), one thread, in one process; the rows take turns in
each round (so a burst of load from other processes hits them alike), 30 rounds of 20
calls. Rows: float32; `mixed_precision(w2_loss)`, NumPy's rule (a bfloat16 product
returns float32, so only the first layer's forward product has two bfloat16 operands);
`mixed_precision(w2_loss_bf16)`, each product's result cast back to the compute dtype
(every product forward and backward has bfloat16 operands); and the latter with
`config.native_bf16 = False` (widened to float32, sgemm). The ratio is of medians of the
process CPU time per call, which other processes' load inflates far less than wall time.

`accuracy`: the same W2 network on scikit-learn's 8x8 digits upsampled to 28x28 (784
inputs), 1437 training / 360 test images, Adam 1e-3, batch 64, 15 epochs, in float32 and
under mixed precision (bfloat16, both losses): test accuracy of each.
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

import jitgrad  # noqa: E402
from jitgrad.config import config  # noqa: E402

BATCH, D_IN, D_HIDDEN, D_OUT = 256, 784, 256, 10
BF16 = np.dtype(ml_dtypes.bfloat16)


def w2_params(seed=1, d_in=D_IN):
    rng = np.random.default_rng(seed)
    return {"W1": (rng.standard_normal((d_in, D_HIDDEN)) / np.sqrt(d_in)).astype(np.float32),
            "b1": (0.1 * rng.standard_normal(D_HIDDEN)).astype(np.float32),
            "W2": (rng.standard_normal((D_HIDDEN, D_OUT)) / np.sqrt(D_HIDDEN)).astype(np.float32),
            "b2": (0.1 * rng.standard_normal(D_OUT)).astype(np.float32)}


def _softmax_cross_entropy(logits, y):
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return np.mean(-np.sum(y * log_probs, axis=1))


def w2_loss(params, x, y):
    h = np.tanh(x @ params["W1"] + params["b1"])
    return _softmax_cross_entropy(h @ params["W2"] + params["b2"], y)


def w2_loss_bf16(params, x, y):
    """w2_loss with each product's result in the inputs' dtype (PyTorch autocast's
    policy): under mixed precision the activations, and so the cotangents, stay
    bfloat16; in float32 the casts do nothing."""
    h = np.tanh((x @ params["W1"]).astype(x.dtype) + params["b1"])
    return _softmax_cross_entropy((h @ params["W2"]).astype(x.dtype) + params["b2"], y)


def interleaved(rows, rounds=30, calls=20):
    """{name: (median wall, median CPU)} seconds per call; rows take turns every round."""
    for _, fn in rows:
        fn()
    wall = {name: [] for name, _ in rows}
    cpu = {name: [] for name, _ in rows}
    for _ in range(rounds):
        for name, fn in rows:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                fn()
            wall[name].append((time.perf_counter() - start) / calls)
            cpu[name].append((time.process_time() - start_cpu) / calls)
    return {name: (float(np.median(wall[name])), float(np.median(cpu[name]))) for name, _ in rows}


def _batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, D_IN)).astype(np.float32)
    y = np.eye(D_OUT, dtype=np.float32)[rng.integers(0, D_OUT, BATCH)]
    return w2_params(), x, y


def bench_speed() -> None:
    config.num_threads = 1
    params, x, y = _batch()
    f32 = jitgrad.value_and_grad(w2_loss)
    numpy_rule = jitgrad.value_and_grad(jitgrad.mixed_precision(w2_loss, compute="bfloat16"))
    bf16 = jitgrad.value_and_grad(jitgrad.mixed_precision(w2_loss_bf16, compute="bfloat16"))
    rows = [("float32", lambda: f32(params, x, y)),
            ("mixed bfloat16, NumPy's rule (w2_loss)", lambda: numpy_rule(params, x, y)),
            ("mixed bfloat16, bfloat16 activations (w2_loss_bf16)", lambda: bf16(params, x, y))]
    times = interleaved(rows)
    # The setting is part of each call's signature: the widened path is a second run.
    config.native_bf16 = False
    widened = interleaved([rows[0], rows[2]])
    config.native_bf16 = True
    print(f"W2 value+grad, batch {BATCH}, 1 thread; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| W2 value+grad, 1 thread | median CPU per call | median wall | speed vs float32 (CPU) |")
    print("|---|---|---|---|")
    for name, (wall, cpu) in times.items():
        print(f"| {name} | {cpu * 1e3:.3f} ms | {wall * 1e3:.3f} ms | {times['float32'][1] / cpu:.2f}x |")
    for name, (wall, cpu) in widened.items():
        print(f"| {name}, native_bf16 = False (sgemm) | {cpu * 1e3:.3f} ms | {wall * 1e3:.3f} ms "
              f"| {widened['float32'][1] / cpu:.2f}x |")


def digits_784():
    """scikit-learn's digits, each 8x8 image upsampled (3x3 blocks) and padded to 28x28."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = np.kron(digits.images / 16.0, np.ones((3, 3)))
    images = np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(len(images), D_IN).astype(np.float32)
    images = (images - images.mean()) / images.std()
    return train_test_split(images, digits.target, test_size=0.2, random_state=0, stratify=digits.target)


def train(loss, epochs=15, batch=64, seed=0) -> tuple[float, np.ndarray]:
    """Test accuracy and predictions of the W2 network trained with Adam on the digits."""
    x_train, x_test, t_train, t_test = digits_784()
    params = w2_params(seed)
    step = jitgrad.jit_grad(loss)
    opt = jitgrad.Adam(1e-3)
    onehot = np.eye(D_OUT, dtype=np.float32)[t_train]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order) - batch + 1, batch):
            pick = order[start:start + batch]
            grads = step(params, x_train[pick], onehot[pick])
            opt.apply_gradients([(params[k], grads[k]) for k in params])
    h = np.tanh(x_test @ params["W1"] + params["b1"])
    predictions = np.argmax(h @ params["W2"] + params["b2"], axis=1)
    return float(np.mean(predictions == t_test)), predictions


def bench_accuracy() -> None:
    rows = [("float32", w2_loss),
            ("mixed bfloat16, NumPy's rule (w2_loss)", jitgrad.mixed_precision(w2_loss, compute="bfloat16")),
            ("mixed bfloat16, bfloat16 activations (w2_loss_bf16)",
             jitgrad.mixed_precision(w2_loss_bf16, compute="bfloat16"))]
    print("| W2 on digits (784 inputs, 360 test images), Adam 1e-3, 15 epochs | test accuracy, seeds 0 / 1 / 2 "
          "| test predictions differing from float32's |")
    print("|---|---|---|")
    reference = None
    for name, loss in rows:
        runs = [train(loss, seed=seed) for seed in range(3)]
        reference = reference or runs
        differing = sum(int(np.sum(p != r[1])) for (_, p), r in zip(runs, reference, strict=True))
        print(f"| {name} | " + " / ".join(f"{a:.4f}" for a, _ in runs) + f" | {differing} of {3 * len(runs[0][1])} |")


def bench_profile() -> None:
    """CPU time of each kind of kernel in the bfloat16-activation step, measured by
    compiling the step's pieces alone: the four products, and the rest."""
    config.num_threads = 1
    params, x, y = _batch()
    rng = np.random.default_rng(0)
    xb = x.astype(BF16)
    w1, g = params["W1"].astype(BF16), rng.standard_normal((BATCH, D_HIDDEN)).astype(BF16)
    h, w2, dl = g, params["W2"].astype(BF16), rng.standard_normal((BATCH, D_OUT)).astype(BF16)
    pieces = [("x @ W1 (256x784 @ 784x256)", jitgrad.jit(lambda a, b: a @ b), (xb, w1)),
              ("x.T @ g (784x256 @ 256x256)", jitgrad.jit(lambda a, b: a.T @ b), (xb, g)),
              ("h @ W2, h.T @ dl, dl @ W2.T", jitgrad.jit(lambda a, b, c: (a @ b, a.T @ c, c @ b.T)), (h, w2, dl)),
              ("W1 f32 -> bf16 (200704)", jitgrad.jit(lambda a: a.astype(BF16)), (params["W1"],)),
              ("x f32 -> bf16 (200704)", jitgrad.jit(lambda a: a.astype(BF16)), (x,)),
              ("dW1 bf16 -> f32 (200704)", jitgrad.jit(lambda a: a.astype(np.float32)), (w1,))]
    step = jitgrad.value_and_grad(jitgrad.mixed_precision(w2_loss_bf16, compute="bfloat16"))
    f32 = jitgrad.value_and_grad(w2_loss)
    rows = [(name, (lambda f=f, a=args: f(*a))) for name, f, args in pieces]
    rows += [("whole bfloat16 step", lambda: step(params, x, y)), ("whole float32 step", lambda: f32(params, x, y))]
    times = interleaved(rows, rounds=15)
    print("| piece | median CPU per call |")
    print("|---|---|")
    for name, (_, cpu) in times.items():
        print(f"| {name} | {cpu * 1e6:.0f} us |")


if __name__ == "__main__":
    {"speed": bench_speed, "accuracy": bench_accuracy, "profile": bench_profile}[
        sys.argv[1] if len(sys.argv) > 1 else "speed"]()
