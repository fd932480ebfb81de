"""Pytrees (namedtuples, registered dataclasses and classes), the public `jitgrad.tree`,
static_argnames / static_argnums on the gradient transformations, Jacobians over pytree
arguments, pickling compiled functions for process pools, and the Graph API's
cross-entropy with integer labels."""
import collections
import dataclasses
import multiprocessing
import pickle

import numpy as np
import pytest

import jitgrad
from jitgrad import tree
from jitgrad.errors import ArgumentError, PytreeError

Point = collections.namedtuple("Point", "x y")


@tree.register_dataclass
@dataclasses.dataclass
class Params:
    w: object
    b: object


@dataclasses.dataclass
class Layer:
    weight: object
    activation: str


tree.register_dataclass(Layer, data_fields=["weight"], meta_fields=["activation"])


class Box:
    """A class registered by hand: its `scale` is auxiliary (static) data."""

    def __init__(self, value, scale):
        self.value, self.scale = value, scale


tree.register_pytree_node(Box, lambda b: ((b.value,), b.scale), lambda scale, children: Box(children[0], scale))


# --------------------------------------------------------------------------- module-level functions to pickle

def squared_norm(x):
    return np.sum(x * x)


@jitgrad.jit
def decorated_double(x):
    return 2 * x


compiled_norm = jitgrad.jit(squared_norm)
gradient_of_norm = jitgrad.grad(squared_norm)


def _apply(job):
    fn, x = job
    return fn(x)


# --------------------------------------------------------------------------- jitgrad.tree

def test_flatten_unflatten_round_trip_over_every_node_kind():
    value = {"p": Point(1.0, [2.0, None]), "params": Params(np.ones(2), 3.0), "box": Box(4.0, 7),
             "layer": Layer(np.zeros(1), "relu")}
    leaves, treedef = tree.flatten(value)
    assert len(leaves) == treedef.num_leaves == 6
    rebuilt = tree.unflatten(treedef, leaves)
    assert isinstance(rebuilt["p"], Point) and rebuilt["p"].y[1] is None
    assert isinstance(rebuilt["params"], Params) and rebuilt["params"].b == 3.0
    assert rebuilt["box"].scale == 7 and rebuilt["layer"].activation == "relu"
    assert tree.structure(value) == treedef
    assert "Point(x=*, y=[*, None])" in str(treedef)


def test_map_over_several_trees_and_leaves():
    a, b = Point(1.0, 2.0), Point(10.0, 20.0)
    assert tree.map(lambda u, v: u + v, a, b) == Point(11.0, 22.0)
    assert tree.leaves({"b": 2, "a": (1, 3)}) == [1, 3, 2]
    with pytest.raises(PytreeError, match="different structures"):
        tree.map(lambda u, v: u, a, (1.0, 2.0))


def test_meta_fields_are_part_of_the_structure():
    assert tree.structure(Layer(1.0, "relu")) != tree.structure(Layer(1.0, "tanh"))
    with pytest.raises(PytreeError, match="hashable"):
        tree.flatten(Box(1.0, [1, 2]))


# --------------------------------------------------------------------------- traced pytrees

def test_jit_takes_and_returns_namedtuples_and_dataclasses():
    f = jitgrad.jit(lambda p, q: Point(p.x * q.w, p.y + q.b))
    out = f(Point(np.ones(2), np.arange(2.0)), Params(np.full(2, 3.0), 1.5))
    assert isinstance(out, Point)
    np.testing.assert_array_equal(out.x, [3.0, 3.0])
    np.testing.assert_array_equal(out.y, [1.5, 2.5])


def test_grad_over_a_dataclass_and_meta_fields_select_the_code():
    def loss(layer, x):
        z = x @ layer.weight
        return np.sum(np.tanh(z) if layer.activation == "tanh" else np.maximum(z, 0) ** 2)
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    w = np.array([[0.3, -0.1], [0.2, 0.4]])
    for activation in ("tanh", "relu"):
        g = jitgrad.grad(loss)(Layer(w, activation), x)
        assert isinstance(g, Layer) and g.activation == activation
        eps = 1e-6
        numeric = np.zeros_like(w)
        for i in np.ndindex(w.shape):
            d = np.zeros_like(w)
            d[i] = eps
            numeric[i] = (loss(Layer(w + d, activation), x) - loss(Layer(w - d, activation), x)) / (2 * eps)
        np.testing.assert_allclose(g.weight, numeric, rtol=1e-6, atol=1e-8)


def test_jacobians_and_hessian_over_dict_arguments():
    def f(p):
        return p["a"] * np.sin(p["b"])
    p = {"a": np.array([1.0, 2.0]), "b": np.array([0.5, -1.0])}
    for jac in (jitgrad.jacfwd(f), jitgrad.jacrev(f)):
        j = jac(p)
        np.testing.assert_allclose(j["a"], np.diag(np.sin(p["b"])))
        np.testing.assert_allclose(j["b"], np.diag(p["a"] * np.cos(p["b"])))

    def energy(p):
        return np.sum(p["a"] ** 2 * np.sin(p["b"]))
    h = jitgrad.hessian(energy)(p)
    np.testing.assert_allclose(h["a"]["a"], np.diag(2 * np.sin(p["b"])))
    np.testing.assert_allclose(h["a"]["b"], np.diag(2 * p["a"] * np.cos(p["b"])))
    np.testing.assert_allclose(h["b"]["b"], np.diag(-p["a"] ** 2 * np.sin(p["b"])))


def test_registered_class_aux_data_is_static():
    f = jitgrad.jit(lambda box: box.value * box.scale)
    assert f(Box(np.float64(2.0), 3)) == 6.0
    assert f(Box(np.float64(2.0), 5)) == 10.0
    assert f.compile_count == 2


# --------------------------------------------------------------------------- static arguments

def test_static_argnames_by_keyword_and_position():
    def power(x, n):
        return x ** n if n > 0 else np.ones_like(x)
    f = jitgrad.jit(power, static_argnames="n")
    x = np.array([1.5, 2.0])
    np.testing.assert_array_equal(f(x, n=3), x ** 3)
    np.testing.assert_array_equal(f(x, 0), np.ones(2))
    assert f.compile_count == 2
    with pytest.raises(ArgumentError, match="no positional parameter 'm'"):
        jitgrad.jit(power, static_argnames=["m"])


@pytest.mark.parametrize("transform", ["grad", "value_and_grad", "jit_grad"])
def test_static_argnums_on_gradients(transform):
    def loss(mode, x, scale):
        return np.sum(np.sin(x) * scale) if mode == "sin" else np.sum(x ** 3 * scale)
    x = np.array([0.3, -1.2])
    if transform == "jit_grad":
        g = jitgrad.jit_grad(loss, argnums=1, static_argnums=0)
    else:
        g = getattr(jitgrad, transform)(loss, argnums=(1, 2), static_argnames="mode")
    out_sin, out_cube = g("sin", x, 2.0), g("cube", x, 2.0)
    grads_sin = out_sin[1] if transform == "value_and_grad" else out_sin
    grads_cube = out_cube[1] if transform == "value_and_grad" else out_cube
    dx_sin = grads_sin if transform == "jit_grad" else grads_sin[0]
    dx_cube = grads_cube if transform == "jit_grad" else grads_cube[0]
    np.testing.assert_allclose(dx_sin, 2 * np.cos(x))
    np.testing.assert_allclose(dx_cube, 6 * x ** 2)
    if transform != "jit_grad":
        np.testing.assert_allclose(grads_sin[1], np.sum(np.sin(x)))
    if transform == "value_and_grad":
        np.testing.assert_allclose(out_sin[0], 2 * np.sum(np.sin(x)))


def test_argnums_may_not_be_static():
    g = jitgrad.grad(lambda x, y: np.sum(x * y), argnums=0, static_argnums=0)
    with pytest.raises(ArgumentError, match="both differentiated"):
        g(1.0, np.ones(2))


# --------------------------------------------------------------------------- pickling

def test_compiled_functions_pickle_by_reference():
    for fn in (compiled_norm, gradient_of_norm, decorated_double):
        restored = pickle.loads(pickle.dumps(fn))
        x = np.array([1.0, -2.0])
        np.testing.assert_array_equal(restored(x), fn(x))
    assert pickle.loads(pickle.dumps(decorated_double)) is decorated_double
    assert pickle.loads(pickle.dumps(gradient_of_norm)).recipe == gradient_of_norm.recipe
    with pytest.raises(pickle.PicklingError, match="top level of a module"):
        pickle.dumps(jitgrad.jit(lambda x: x))


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_process_pools_run_compiled_functions(start_method):
    context = multiprocessing.get_context(start_method)
    x = np.array([1.0, 2.0, 3.0])
    jobs = [(compiled_norm, x), (gradient_of_norm, x), (decorated_double, x)]
    with context.Pool(2) as pool:
        results = pool.map_async(_apply, jobs).get(timeout=60)
    assert results[0] == 14.0
    np.testing.assert_array_equal(results[1], 2 * x)
    np.testing.assert_array_equal(results[2], 2 * x)


# --------------------------------------------------------------------------- Graph API

def test_graph_cross_entropy_with_integer_labels():
    g = jitgrad.Graph()
    x = g.placeholder("x", (None, 4), np.float64)
    labels = g.placeholder("labels", (None,), np.int64)
    onehot = g.placeholder("onehot", (None, 3), np.float64)
    w = g.variable("w", np.linspace(-0.5, 0.5, 12).reshape(4, 3))
    by_index = g.softmax_cross_entropy(g.matmul(x, w), labels)
    by_row = g.softmax_cross_entropy(g.matmul(x, w), onehot)
    (dw_index,) = g.gradients(by_index, [w])
    (dw_row,) = g.gradients(by_row, [w])
    xv = np.arange(8.0).reshape(2, 4)
    lv = np.array([2, 0])
    a, da = g.run([by_index, dw_index], {x: xv, labels: lv})
    b, db = g.run([by_row, dw_row], {x: xv, onehot: np.eye(3)[lv]})
    logits = xv @ w.value
    expected = np.mean(np.log(np.sum(np.exp(logits), axis=1)) - logits[np.arange(2), lv])
    np.testing.assert_allclose(a, expected, rtol=1e-12)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(da, db, rtol=1e-12)
    (bad,) = g.run([by_index], {x: xv, labels: np.array([3, 0])})
    assert np.isnan(bad)
