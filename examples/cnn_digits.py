"""A small CNN on scikit-learn's 8x8 digits, trained with jitgrad.

conv3x3(16) - batch norm - relu - max pool 2 - conv3x3(32) - relu - max pool 2 - dropout -
dense(10), softmax cross-entropy, Adam; the train step is one compiled function
(`jitgrad.jit_grad`) returning the loss, the gradients and batch norm's updated running
statistics. Then the same model's gradient is computed on the GradientTape and in the
Graph API and compared with the compiled one.

    python examples/cnn_digits.py        # about 10-20 s on two cores, test accuracy >= 98%
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jitgrad
from jitgrad import nn

SEED = 0
EPOCHS = 20
BATCH = 64


def init_params(rng: np.random.Generator) -> dict:
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return {"conv1": he((16, 1, 3, 3), 9), "gamma1": np.ones(16, np.float32), "beta1": np.zeros(16, np.float32),
            "conv2": he((32, 16, 3, 3), 144), "bias2": np.zeros(32, np.float32),
            "dense": he((128, 10), 128), "bias3": np.zeros(10, np.float32)}


def forward(params, stats, images, training: bool, dropout: bool = True):
    """Logits and batch norm's running statistics (updated when training)."""
    h = nn.conv2d(images, params["conv1"], padding=1)
    if training:
        h, mean, var = nn.batch_norm(h, stats["mean"], stats["var"], params["gamma1"], params["beta1"],
                                     training=True)
        stats = {"mean": mean, "var": var}
    else:
        h = nn.batch_norm(h, stats["mean"], stats["var"], params["gamma1"], params["beta1"])
    h = nn.max_pool2d(nn.relu(h), 2)                                   # (N, 16, 4, 4)
    h = nn.max_pool2d(nn.relu(nn.conv2d(h, params["conv2"], params["bias2"], padding=1)), 2)   # (N, 32, 2, 2)
    h = np.reshape(h, (h.shape[0], -1))
    if training and dropout:
        h = nn.dropout(h, 0.25)
    return h @ params["dense"] + params["bias3"], stats


def loss_fn(params, stats, images, labels):
    logits, new_stats = forward(params, stats, images, training=True)
    return nn.cross_entropy(logits, labels), new_stats


def deterministic_loss(params, stats, images, labels):
    """The training loss without dropout: the same number from every API."""
    logits, _ = forward(params, stats, images, training=True, dropout=False)
    return nn.cross_entropy(logits, labels)


def load():
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]       # (1797, 1, 8, 8)
    return train_test_split(images, digits.target, test_size=0.3, random_state=SEED, stratify=digits.target)


def train(x_train, y_train):
    np.random.seed(SEED)                     # dropout masks: jitgrad's traced np.random follows NumPy's seed
    rng = np.random.default_rng(SEED)
    params = init_params(rng)
    stats = {"mean": np.zeros(16, np.float32), "var": np.ones(16, np.float32)}
    step = jitgrad.jit_grad(loss_fn, has_aux=True, with_value=True)
    optimizer = jitgrad.Adam(learning_rate=3e-3)
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order) - BATCH + 1, BATCH):
            batch = order[start:start + BATCH]
            (loss, stats), grads = step(params, stats, x_train[batch], y_train[batch])
            optimizer.apply_gradients([(params[k], grads[k]) for k in params])
    return params, stats, float(loss)


def accuracy(params, stats, images, labels) -> float:
    logits, _ = jitgrad.jit(lambda p, s, x: forward(p, s, x, training=False))(params, stats, images)
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def gradients_in_three_apis(params, stats, images, labels):
    """The compiled gradient, the tape's and the graph's, of the dropout-free loss."""
    names = sorted(params)
    compiled = jitgrad.grad(deterministic_loss)(params, stats, images, labels)

    with jitgrad.GradientTape() as tape:
        tracked = {k: tape.variable(params[k]) for k in names}
        loss = deterministic_loss(tracked, stats, images, labels)
    taped = dict(zip(names, tape.gradient(loss, [tracked[k] for k in names]), strict=True))

    g = jitgrad.Graph()
    x = g.placeholder("images", (None, 1, 8, 8), np.float32)
    y = g.placeholder("labels", (None,), np.int64)
    variables = {k: g.variable(k, params[k]) for k in names}
    loss_node = g.apply(deterministic_loss, variables, stats, x, y)
    graph_grads = g.run(g.gradients(loss_node, [variables[k] for k in names]), {x: images, y: labels})
    graphed = dict(zip(names, graph_grads, strict=True))
    return compiled, taped, graphed


def main():
    x_train, x_test, y_train, y_test = load()
    start = time.perf_counter()
    params, stats, last_loss = train(x_train, y_train)
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(params, stats, x_test, y_test)
    print(f"trained {EPOCHS} epochs in {seconds:.1f} s, last batch loss {last_loss:.4f}")
    print(f"test accuracy: {test_accuracy:.4f}")

    compiled, taped, graphed = gradients_in_three_apis(params, stats, x_test[:64], y_test[:64].astype(np.int64))
    worst = max(float(np.max(np.abs(other[k] - compiled[k])) / (np.max(np.abs(compiled[k])) + 1e-30))
                for other in (taped, graphed) for k in compiled)
    print(f"max relative difference of the tape's and the graph's gradients from jit_grad's: {worst:.2e}")


if __name__ == "__main__":
    main()
