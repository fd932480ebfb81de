"""CNN train step benchmark: jitgrad vs NumPy by hand vs PyTorch eager and JAX jit (each
when importable), in one process.

Workload (CIFAR-shaped, float32): batch 64 of 3x32x32 images,
conv3x3(32, pad 1) - relu - maxpool 2 - conv3x3(64, pad 1) - relu - maxpool 2 - dense(10),
softmax cross-entropy; one step = loss, gradients of all six parameters and an SGD
update. Also a single conv2d forward + backward at a ResNet-like shape
(batch 32, 64 -> 64 channels, 56x56, 3x3, pad 1).

    python benchmarks/cnn.py [--repeats N] [--threads T]

--threads T runs every library on T threads (BLAS through threadpoolctl, PyTorch's
intra-op pool, XLA's Eigen pool off for T = 1, jitgrad's loops): on a shared, loaded
machine one thread each compares the kernels rather than the thread pools' luck.

Every timed call takes NumPy arrays and returns NumPy arrays (JAX: device_put,
block_until_ready and np.asarray included). jitgrad's gradients are checked against the
NumPy implementation before anything is timed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jitgrad  # noqa: E402
from jitgrad import nn  # noqa: E402

BATCH, CLASSES, LEARNING_RATE = 64, 10, 0.01
NAMES = ("w1", "b1", "w2", "b2", "w3", "b3")


def init(rng):
    f32 = np.float32
    return {"w1": (rng.standard_normal((32, 3, 3, 3)) * 0.2).astype(f32), "b1": np.zeros(32, f32),
            "w2": (rng.standard_normal((64, 32, 3, 3)) * 0.06).astype(f32), "b2": np.zeros(64, f32),
            "w3": (rng.standard_normal((64 * 8 * 8, CLASSES)) * 0.02).astype(f32), "b3": np.zeros(CLASSES, f32)}


# --------------------------------------------------------------------------- jitgrad

def jitgrad_loss(p, x, y):
    h = nn.max_pool2d(nn.relu(nn.conv2d(x, p["w1"], p["b1"], padding=1)), 2)
    h = nn.max_pool2d(nn.relu(nn.conv2d(h, p["w2"], p["b2"], padding=1)), 2)
    return nn.cross_entropy(np.reshape(h, (h.shape[0], -1)) @ p["w3"] + p["b3"], y)


def jitgrad_step():
    value_and_grad = jitgrad.jit_grad(jitgrad_loss, with_value=True)

    def step(p, x, y):
        loss, grads = value_and_grad(p, x, y)
        for k in NAMES:
            p[k] -= LEARNING_RATE * grads[k]
        return loss, grads
    return step


# --------------------------------------------------------------------------- NumPy by hand

def _im2col(x, k=3, pad=1):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))    # n, c, h, w, k, k
    return np.ascontiguousarray(windows.transpose(0, 2, 3, 1, 4, 5)).reshape(n * h * w, c * k * k)


def _col2im(cols, shape, k=3, pad=1):
    n, c, h, w = shape
    cols = cols.reshape(n, h, w, c, k, k)
    out = np.zeros((n, c, h + 2 * pad, w + 2 * pad), cols.dtype)
    for i in range(k):
        for j in range(k):
            out[:, :, i:i + h, j:j + w] += cols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return out[:, :, pad:pad + h, pad:pad + w]


def _conv_forward(x, w, b):
    cols = _im2col(x)
    n, _, h, wd = x.shape
    out = cols @ w.reshape(w.shape[0], -1).T + b
    return out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), cols


def _conv_backward(dout, x_shape, cols, w):
    n, o, h, wd = dout.shape
    d = dout.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(axis=0)
    dx = _col2im(d @ w.reshape(o, -1), x_shape)
    return dx, dw, db


def _pool_forward(x):
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    first = np.argmax(blocks, axis=-1)
    return np.take_along_axis(blocks, first[..., None], -1)[..., 0], first


def _pool_backward(dout, first, shape):
    n, c, h, w = shape
    blocks = np.zeros((n, c, h // 2, w // 2, 4), dout.dtype)
    np.put_along_axis(blocks, first[..., None], dout[..., None], -1)
    return blocks.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)


def numpy_value_and_grad(p, x, y):
    c1, cols1 = _conv_forward(x, p["w1"], p["b1"])
    r1 = np.maximum(c1, 0)
    p1, first1 = _pool_forward(r1)
    c2, cols2 = _conv_forward(p1, p["w2"], p["b2"])
    r2 = np.maximum(c2, 0)
    p2, first2 = _pool_forward(r2)
    flat = p2.reshape(x.shape[0], -1)
    logits = flat @ p["w3"] + p["b3"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(len(y)), y])
    dlogits = np.exp(log_probs)
    dlogits[np.arange(len(y)), y] -= 1
    dlogits /= len(y)
    grads = {"w3": flat.T @ dlogits, "b3": dlogits.sum(axis=0)}
    dp2 = (dlogits @ p["w3"].T).reshape(p2.shape)
    dc2 = _pool_backward(dp2, first2, r2.shape) * (c2 > 0)
    dp1, grads["w2"], grads["b2"] = _conv_backward(dc2, p1.shape, cols2, p["w2"])
    dc1 = _pool_backward(dp1, first1, r1.shape) * (c1 > 0)
    _, grads["w1"], grads["b1"] = _conv_backward(dc1, x.shape, cols1, p["w1"])
    return loss, grads


def numpy_step(p, x, y):
    loss, grads = numpy_value_and_grad(p, x, y)
    for k in NAMES:
        p[k] -= LEARNING_RATE * grads[k]
    return loss, grads


# --------------------------------------------------------------------------- peers

THREADS = os.cpu_count() or 1


def torch_step():
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(THREADS)

    def step(p, x, y):
        tp = {k: torch.from_numpy(v).requires_grad_() for k, v in p.items()}
        h = F.max_pool2d(F.relu(F.conv2d(torch.from_numpy(x), tp["w1"], tp["b1"], padding=1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, tp["w2"], tp["b2"], padding=1)), 2)
        loss = F.cross_entropy(h.reshape(h.shape[0], -1) @ tp["w3"] + tp["b3"], torch.from_numpy(y))
        loss.backward()
        with torch.no_grad():
            for k in NAMES:
                tp[k] -= LEARNING_RATE * tp[k].grad
        return float(loss.detach()), {k: tp[k].grad.numpy() for k in NAMES}
    return step


def jax_step():
    import jax
    import jax.numpy as jnp
    from jax import lax

    def loss_fn(p, x, y):
        dn = ("NCHW", "OIHW", "NCHW")

        def pool(h):
            return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        h = pool(jax.nn.relu(lax.conv_general_dilated(x, p["w1"], (1, 1), "SAME", dimension_numbers=dn)
                             + p["b1"][:, None, None]))
        h = pool(jax.nn.relu(lax.conv_general_dilated(h, p["w2"], (1, 1), "SAME", dimension_numbers=dn)
                             + p["b2"][:, None, None]))
        logits = h.reshape(h.shape[0], -1) @ p["w3"] + p["b3"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])

    @jax.jit
    def update(p, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        return loss, grads, {k: p[k] - LEARNING_RATE * grads[k] for k in p}

    def step(p, x, y):
        loss, grads, new = update(jax.device_put(p), jax.device_put(x), jax.device_put(y))
        jax.block_until_ready(new)
        for k in NAMES:
            p[k][...] = np.asarray(new[k])
        return float(loss), {k: np.asarray(g) for k, g in grads.items()}
    return step


# --------------------------------------------------------------------------- single convolution

RESNET = dict(batch=32, channels=64, size=56)


def resnet_conv_cases(rng):
    x = rng.standard_normal((RESNET["batch"], RESNET["channels"], RESNET["size"], RESNET["size"])).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
    cases = {"jitgrad": jitgrad.jit_grad(lambda a, b: np.sum(nn.conv2d(a, b, padding=1) ** 2), argnums=(0, 1),
                                         with_value=True)}
    try:
        import torch
        import torch.nn.functional as F
        torch.set_num_threads(THREADS)

        def torch_conv(a, b):
            ta, tb = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
            loss = torch.sum(F.conv2d(ta, tb, padding=1) ** 2)
            loss.backward()
            return float(loss.detach()), (ta.grad.numpy(), tb.grad.numpy())
        cases["pytorch"] = torch_conv
    except ImportError:
        pass
    try:
        import jax
        from jax import lax
        f = jax.jit(jax.value_and_grad(lambda a, b: (lax.conv_general_dilated(a, b, (1, 1), "SAME") ** 2).sum(),
                                       argnums=(0, 1)))

        def jax_conv(a, b):
            loss, grads = f(jax.device_put(a), jax.device_put(b))
            return float(loss), tuple(np.asarray(g) for g in grads)
        cases["jax"] = jax_conv
    except ImportError:
        pass
    return x, w, cases


# --------------------------------------------------------------------------- timing

CPU_TIMES: dict[str, float] = {}
"""The median process CPU time of each timed call (all threads), by name: with one
thread per library it is the work done, whatever share of a loaded core it got."""


def timed(fn, args, repeats: int, name: str = "") -> float:
    fn(*args)                                   # compile / warm up
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(*args)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    CPU_TIMES[name] = statistics.median(cpu)
    return statistics.median(times)


def report(results: dict, tag: str) -> None:
    for name, seconds in results.items():
        cpu, cpu_jitgrad = CPU_TIMES[tag + name], CPU_TIMES[tag + "jitgrad"]
        print(f"  {name:18s} {seconds * 1e3:8.1f} ms   jitgrad / this = {results['jitgrad'] / seconds:5.2f}   "
              f"CPU {cpu * 1e3:8.1f} ms   jitgrad / this = {cpu_jitgrad / cpu:5.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="threads for every library (default: all cores)")
    args = parser.parse_args()
    if args.threads is None:
        run(args)
        return
    global THREADS
    THREADS = jitgrad.config.config.num_threads = args.threads
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    from threadpoolctl import threadpool_limits
    with threadpool_limits(args.threads):
        run(args)


def run(args):
    rng = np.random.default_rng(0)
    params = init(rng)
    x = rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH)

    steps = {"numpy (by hand)": numpy_step, "jitgrad": jitgrad_step()}
    for name, make in (("pytorch (eager)", torch_step), ("jax (jit)", jax_step)):
        try:
            steps[name] = make()
        except ImportError:
            print(f"{name}: not installed, skipped")

    reference_loss, reference = numpy_value_and_grad({k: v.copy() for k, v in params.items()}, x, y)
    start = time.perf_counter()
    loss, grads = steps["jitgrad"]({k: v.copy() for k, v in params.items()}, x, y)
    first_call = time.perf_counter() - start
    assert abs(loss - reference_loss) < 1e-4 * max(1.0, abs(reference_loss)), (loss, reference_loss)
    for k in NAMES:
        # float32: where two values of a pooling window are within float32's rounding of
        # each other, the two implementations may select different ones (each is right
        # for its own rounding), which moves one term of the weight gradients
        scale = np.abs(reference[k]).max()
        assert np.abs(grads[k] - reference[k]).max() <= 3e-3 * scale, k
    print(f"jitgrad first call (trace + differentiate + compile): {first_call:.2f} s")

    print(f"\nCIFAR-shaped train step (batch {BATCH}, f32), median of {args.repeats}:")
    results = {}
    for name, step in steps.items():
        state = {k: v.copy() for k, v in params.items()}
        results[name] = timed(step, (state, x, y), args.repeats, "step " + name)
    report(results, "step ")

    xr, wr, cases = resnet_conv_cases(rng)
    print(f"\nconv2d forward + backward, {RESNET['batch']}x64x56x56, 3x3, 64 -> 64, pad 1, f32:")
    conv_results = {name: timed(fn, (xr, wr), max(3, args.repeats // 3), "conv " + name)
                    for name, fn in cases.items()}
    report(conv_results, "conv ")


if __name__ == "__main__":
    main()
