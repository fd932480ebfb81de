"""Static graphs (jitgrad.graph) and the optimizers: graph runs and gradients against
jitgrad.grad / jitgrad.hvp and finite differences, the same model through every API,
placeholders with a None batch dimension, feed errors, and training a tiny MLP with
SGD and Adam on a graph, on a tape and on plain arrays.
"""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad
from jitgrad.eager.dual import DualTensor
from jitgrad.eager.tape import GradientTape
from jitgrad.errors import ArgumentError, ShapeError, TracerBoolConversionError, UnsupportedOperationError
from jitgrad.graph import Graph, Node, softmax_cross_entropy
from jitgrad.optimizers import SGD, Adam

N_IN, N_HIDDEN, N_OUT = 5, 8, 3


def mlp_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {"w1": (rng.standard_normal((N_IN, N_HIDDEN)) / np.sqrt(N_IN)).astype(dtype),
            "b1": np.zeros(N_HIDDEN, dtype),
            "w2": (rng.standard_normal((N_HIDDEN, N_OUT)) / np.sqrt(N_HIDDEN)).astype(dtype),
            "b2": np.zeros(N_OUT, dtype)}


def mlp_data(n=16, seed=1, dtype=np.float64):
    """Labels from a fixed random linear rule, so the MLP can fit them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_IN)).astype(dtype)
    rule = np.random.default_rng(99).standard_normal((N_IN, N_OUT))
    return x, np.eye(N_OUT, dtype=dtype)[np.argmax(x @ rule, axis=1)]


def mlp_loss(w1, b1, w2, b2, x, y):
    return softmax_cross_entropy(np.tanh(x @ w1 + b1) @ w2 + b2, y)


def build_mlp_graph(params):
    g = Graph()
    x = g.placeholder("x", (None, N_IN), params["w1"].dtype)
    y = g.placeholder("y", (None, N_OUT), params["w1"].dtype)
    v = {name: g.variable(name, value) for name, value in params.items()}
    logits = g.matmul(np.tanh(g.matmul(x, v["w1"]) + v["b1"]), v["w2"]) + v["b2"]
    loss = g.softmax_cross_entropy(logits, y)
    return g, x, y, v, loss


def numerical_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        g[idx] = (f(plus) - f(minus)) / (2 * eps)
    return g


# --------------------------------------------------------------------------- agreement

def test_the_same_model_through_every_api():
    params = mlp_params()
    x, y = mlp_data()
    names = list(params)
    args = [params[k] for k in names]
    expected = jitgrad.grad(mlp_loss, argnums=(0, 1, 2, 3))(*args, x, y)

    g, xp, yp, v, loss = build_mlp_graph(params)
    graph_grads = g.run(g.gradients(loss, [v[k] for k in names]), {xp: x, yp: y})

    tape = GradientTape()
    with tape:
        tracked = tape.watch(args)
        tape_loss = mlp_loss(*tracked, x, y)
    tape_grads = tape.gradient(tape_loss, tracked)

    value = g.run(loss, {xp: x, yp: y})
    np.testing.assert_allclose(value, mlp_loss(*args, x, y), rtol=1e-12)
    np.testing.assert_allclose(float(tape_loss), value, rtol=1e-12)
    for k, name in enumerate(names):
        np.testing.assert_allclose(graph_grads[k], expected[k], rtol=1e-10, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(tape_grads[k], expected[k], rtol=1e-10, atol=1e-13, err_msg=name)

    # forward mode along a random direction: <grad, t>
    rng = np.random.default_rng(2)
    tangents = [rng.standard_normal(a.shape) for a in args]
    dual = mlp_loss(*[DualTensor(a, t) for a, t in zip(args, tangents, strict=True)], x, y)
    _, jvp = jitgrad.jvp(lambda *p: mlp_loss(*p, x, y), args, tangents)
    directional = sum(np.sum(gr * t) for gr, t in zip(expected, tangents, strict=True))
    np.testing.assert_allclose(dual.tangent, jvp, rtol=1e-10)
    np.testing.assert_allclose(dual.tangent, directional, rtol=1e-10)

    # and central differences for one parameter
    fd = numerical_grad(lambda w2: mlp_loss(args[0], args[1], w2, args[3], x, y), args[2].copy())
    np.testing.assert_allclose(graph_grads[2], fd, rtol=1e-6, atol=1e-9)


def test_seed_graph_example_with_a_none_batch_dimension():
    rng = np.random.default_rng(0)
    graph = Graph()
    x = graph.placeholder("x", (None, 784))
    w = graph.variable("w", (0.01 * rng.standard_normal((784, 10))).astype(np.float32))
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 32)]
    logits = graph.matmul(x, w)
    loss = graph.softmax_cross_entropy(logits, labels[:32])
    grads = graph.gradients(loss, [w])
    assert isinstance(grads, list) and isinstance(grads[0], Node)
    batch = rng.standard_normal((32, 784)).astype(np.float32)
    value, dw = graph.run([loss, grads[0]], {x: batch})
    assert value.dtype == np.float32 and dw.dtype == np.float32 and dw.shape == (784, 10)
    ref_value, ref_dw = jitgrad.value_and_grad(lambda w_: softmax_cross_entropy(batch @ w_, labels))(w.value)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-4, atol=1e-6)
    SGD(learning_rate=0.5).apply_gradients([(w, grads[0])], feed_dict={x: batch})
    assert graph.run(loss, {x: batch}) < value


def test_placeholder_batch_sizes_specialize_the_compiled_program():
    g, x, y, v, loss = build_mlp_graph(mlp_params())
    for n in (4, 9, 4):
        xs, ys = mlp_data(n)
        np.testing.assert_allclose(g.run(loss, {"x": xs, "y": ys}),
                                   mlp_loss(*[v[k].value for k in ("w1", "b1", "w2", "b2")], xs, ys), rtol=1e-12)
    program = g._programs[(loss.index,)]
    assert program.compiled.cache_size == 2                        # batch 4 and batch 9


def test_gradients_of_intermediate_nodes_and_of_gradients():
    rng = np.random.default_rng(3)
    w0, x0, v0 = rng.standard_normal(4), rng.standard_normal((3, 4)), rng.standard_normal(4)

    def f(w, x):
        return np.sum(np.sin(x @ w) ** 2) + np.sum(w ** 4)

    g = Graph()
    x = g.placeholder("x", (3, 4), np.float64)
    w = g.variable("w", w0)
    h = x @ w
    loss = np.sum(np.sin(h) ** 2) + np.sum(w ** 4)
    dw, dh = g.gradients(loss, [w, h])
    assert g.gradients(loss, [w, h]) == [dw, dh]                     # the same request, the same nodes
    dw_value, dh_value = g.run((dw, dh), {x: x0})
    np.testing.assert_allclose(dw_value, jitgrad.grad(f)(w0, x0), rtol=1e-12)  # total derivative through h
    np.testing.assert_allclose(dh_value, 2 * np.sin(x0 @ w0) * np.cos(x0 @ w0), rtol=1e-12)
    hv = g.gradients(np.sum(dw * v0), w)                             # Hessian-vector product
    np.testing.assert_allclose(g.run(hv, {x: x0}), jitgrad.hvp(lambda w_: f(w_, x0), (w0,), (v0,)),
                               rtol=1e-10)
    as_dict = g.run(g.gradients(loss, {"w": w}), {x: x0})
    assert set(as_dict) == {"w"}


def test_graph_nodes_take_numpy_calls_operators_and_methods():
    rng = np.random.default_rng(4)
    a0, c = rng.standard_normal((2, 3)), rng.standard_normal(3)

    def f(a):
        z = np.concatenate([a, -a[:1]], axis=0).T.reshape(3, 3)
        return np.sum(np.where(z > 0, z, 0.0) ** 2) + (a * c).mean() + np.exp(a).max() + (1 - abs(a)).std()

    g = Graph()
    a = g.variable("a", a0)
    out = f(a)
    assert isinstance(out, Node)
    np.testing.assert_allclose(g.run(out), f(a0), rtol=1e-12)
    np.testing.assert_allclose(g.run(g.gradients(out, a)), jitgrad.grad(f)(a0), rtol=1e-12)
    sq = g.apply(lambda t: t @ t.T, a)
    np.testing.assert_allclose(g.run(sq), a0 @ a0.T, rtol=1e-12)
    assert g["a"] is a and g.variables == {"a": a} and "a" in repr(g)


def test_softmax_cross_entropy_is_stable():
    logits = np.array([[1000.0, -1000.0, 0.0], [5.0, 5.0, 5.0]])
    labels = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    g = Graph()
    lg = g.variable("logits", logits)
    loss = g.softmax_cross_entropy(lg, labels)
    value, grad = g.run([loss, g.gradients(loss, lg)])
    np.testing.assert_allclose(value, (2000.0 + np.log(3.0)) / 2, rtol=1e-12)
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(grad, (probs - labels) / 2, atol=1e-12)
    assert np.all(np.isfinite(grad))


# --------------------------------------------------------------------------- errors

def test_feed_errors():
    g, x, y, v, loss = build_mlp_graph(mlp_params())
    xs, ys = mlp_data(4)
    with pytest.raises(ArgumentError, match="placeholder 'y' needs a value"):
        g.run(loss, {x: xs})
    with pytest.raises(ShapeError, match=r"placeholder 'x' has shape \(None, 5\)"):
        g.run(loss, {x: xs[:, :4], y: ys})
    with pytest.raises(ArgumentError, match="not a placeholder"):
        g.run(loss, {"nope": xs, y: ys})
    with pytest.raises(ArgumentError, match="already has a node named 'x'"):
        g.placeholder("x", (1,))
    with pytest.raises(ArgumentError, match="nodes of this graph"):
        Graph().run(loss)
    fed = g.run(loss, {x: xs, y: ys, v["b2"]: np.ones(N_OUT)})       # feeding a variable overrides it
    assert np.isfinite(fed) and np.all(v["b2"].value == 0)


def test_graph_nodes_are_symbolic():
    g = Graph()
    a = g.placeholder("a", (2,), np.float64)
    with pytest.raises(TracerBoolConversionError, match="symbolic"):
        bool(a > 0)
    with pytest.raises(UnsupportedOperationError, match="no value outside graph.run"):
        np.asarray(a)
    with pytest.raises(ArgumentError, match="two different graphs"):
        a + Graph().placeholder("b", (2,))
    with pytest.raises(TypeError, match="not iterable"):
        list(a)
    with pytest.raises(UnsupportedOperationError, match="no jitgrad rule"):
        g.run(np.spacing(a), {a: np.ones(2)})


# --------------------------------------------------------------------------- training

@pytest.mark.parametrize("optimizer", [SGD(learning_rate=0.5, momentum=0.9), Adam(learning_rate=0.05)],
                         ids=["sgd-momentum", "adam"])
def test_training_a_tiny_mlp_on_a_graph(optimizer):
    g, x, y, v, loss = build_mlp_graph(mlp_params(dtype=np.float32))
    xs, ys = mlp_data(64, dtype=np.float32)
    feed = {x: xs, y: ys}
    variables = [v[k] for k in ("w1", "b1", "w2", "b2")]
    grads = g.gradients(loss, variables)
    first = g.run(loss, feed)
    for _ in range(60):
        optimizer.apply_gradients(zip(variables, grads), feed_dict=feed)
    last = g.run(loss, feed)
    assert last < 0.5 * first, (first, last)
    assert all(var.value.dtype == np.float32 for var in variables)


def test_training_with_a_tape_and_watched_arrays():
    params = mlp_params()
    xs, ys = mlp_data(64)
    arrays = list(params.values())
    optimizer = Adam(learning_rate=0.05)
    losses = []
    for _ in range(40):
        tape = GradientTape()
        with tape:
            tracked = tape.watch(arrays)          # shares the arrays: updates reach them
            loss = mlp_loss(*tracked, xs, ys)
        optimizer.apply_gradients(zip(tracked, tape.gradient(loss, tracked)))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    np.testing.assert_allclose(mlp_loss(*arrays, xs, ys), losses[-1], rtol=0.2)


def test_sgd_and_adam_updates_match_their_formulas():
    w = np.array([1.0, -2.0, 3.0])
    grads = [np.array([0.5, 0.1, -1.0]), np.array([-0.2, 0.4, 0.3]), np.array([1.0, 1.0, 1.0])]
    sgd, momentum, adam = np.array(w), np.array(w), np.array(w)
    opt_sgd, opt_mom = SGD(learning_rate=0.1), SGD(learning_rate=0.1, momentum=0.9)
    opt_adam = Adam(learning_rate=0.01, beta1=0.8, beta2=0.9, eps=1e-6)
    ref_sgd, ref_mom, ref_adam = w.copy(), w.copy(), w.copy()
    velocity, m, s = np.zeros(3), np.zeros(3), np.zeros(3)
    for t, grad in enumerate(grads, start=1):
        opt_sgd.apply_gradients([(sgd, grad)])
        opt_mom.apply_gradients([(momentum, grad)])
        opt_adam.apply_gradients([(adam, grad)])
        ref_sgd -= 0.1 * grad
        velocity = 0.9 * velocity + grad
        ref_mom -= 0.1 * velocity
        m, s = 0.8 * m + 0.2 * grad, 0.9 * s + 0.1 * grad ** 2
        ref_adam -= 0.01 * (m / (1 - 0.8 ** t)) / (np.sqrt(s / (1 - 0.9 ** t)) + 1e-6)
    np.testing.assert_allclose(sgd, ref_sgd, rtol=1e-15)
    np.testing.assert_allclose(momentum, ref_mom, rtol=1e-15)
    np.testing.assert_allclose(adam, ref_adam, rtol=1e-13)


def test_optimizer_errors():
    opt = SGD(learning_rate=0.1)
    with pytest.raises(ShapeError):
        opt.apply_gradients([(np.ones(3), np.ones(2))])
    with pytest.raises(ArgumentError, match="in place"):
        opt.apply_gradients([([1.0, 2.0], np.ones(2))])
    with pytest.raises(ArgumentError, match="floating-point"):
        opt.apply_gradients([(np.arange(3), np.ones(3))])
    with pytest.raises(ArgumentError, match="feed_dict is for gradients given as graph nodes"):
        opt.apply_gradients([(np.ones(3), np.ones(3))], feed_dict={})
    g, x, y, v, loss = build_mlp_graph(mlp_params())
    with pytest.raises(ArgumentError, match="placeholder 'x' needs a value"):
        opt.apply_gradients([(v["w2"], g.gradients(loss, v["w2"]))])


def test_compiled_functions_inside_a_graph():
    g = Graph()
    x = g.placeholder("x", (None, 3), np.float64)
    f = jitgrad.jit(lambda v: np.tanh(v) * 2)
    y = np.sum(f(x))
    (dx,) = g.gradients(y, [x])
    xv = np.arange(6.0).reshape(2, 3) / 5
    np.testing.assert_allclose(g.run(y, {x: xv}), np.sum(np.tanh(xv) * 2), rtol=1e-12)
    np.testing.assert_allclose(g.run(dx, {x: xv}), 2 * (1 - np.tanh(xv) ** 2), rtol=1e-12)
