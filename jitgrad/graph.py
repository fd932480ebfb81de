"""Static graphs, TensorFlow 1 style, compiled through jitgrad's pipeline.

    g = Graph()
    x = g.placeholder("x", (None, 784))
    labels = g.placeholder("labels", (None, 10))
    w = g.variable("w", np.zeros((784, 10), np.float32))
    loss = g.softmax_cross_entropy(g.matmul(x, w), labels)
    (dw,) = g.gradients(loss, [w])
    loss_value, dw_value = g.run([loss, dw], {x: batch, labels: onehot})

A graph node is a deferred NumPy call: nodes implement the NumPy protocols and
operators like jitgrad's tracers, and every NumPy call on them records its callable and
arguments as a new node. `run` replays the calls that lead to the requested outputs as
a Python function of the placeholders', variables' and constants' values and compiles it
with `jitgrad.jit` — once per set of outputs and input shapes, so a placeholder's `None`
dimension just specializes the compiled code to each batch size that is fed.

`gradients(loss, xs)` returns nodes too: their call is `jitgrad.grad` of the replay of
`loss`, which `run` inlines into the compiled program (the IR passes differentiate it),
so gradients of gradients work, and a gradient can be fetched with the loss in one run.
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Sequence

import numpy as np

from jitgrad.api import grad, jit, stop_gradient
from jitgrad.errors import ArgumentError, ShapeError, TracerBoolConversionError, UnsupportedOperationError
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.eager.tape import WRAPPER_TYPES, numpy_protocol, register_array_type
from jitgrad import nn


def softmax_cross_entropy(logits, labels):
    """mean over the batch of -sum(labels * log_softmax(logits), axis=-1), computed
    stably (the row maximum is subtracted, and carries no gradient). `labels` is either
    one probability row per example (logits' shape) or integer class indices (logits'
    shape without the last axis); an index outside [0, classes) makes the loss NaN."""
    shifted = logits - stop_gradient(np.max(logits, axis=-1, keepdims=True))
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    labels_dtype = labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype
    if np.issubdtype(labels_dtype, np.integer) and np.ndim(labels) == np.ndim(logits) - 1:
        onehot = labels[..., None] == np.arange(np.shape(logits)[-1])
        picked = np.sum(np.where(onehot, log_probs, 0), axis=-1)
        return np.mean(np.where(np.any(onehot, axis=-1), -picked, np.nan))
    return np.mean(-np.sum(labels * log_probs, axis=-1))


# --------------------------------------------------------------------------- nodes

class Node:
    """A symbolic array in a `Graph`: a placeholder, a variable, a constant, or a
    deferred NumPy call `fn(*args, **kwargs)` on other nodes. Its value exists only in
    `graph.run`."""

    __array_priority__ = 1000

    def __init__(self, graph: "Graph", fn: Callable | None = None, args: tuple = (), kwargs: dict | None = None,
                 name: str | None = None):
        self.graph = graph
        self.index = len(graph._nodes)
        self.fn = fn
        self.args = args
        self.kwargs = kwargs or {}
        self.name = name or f"{getattr(fn, '__name__', 'node')}_{self.index}"
        graph._nodes.append(self)

    is_leaf = False

    def _symbolic(self, what: str):
        raise TracerBoolConversionError(f"{what} needs a value, but graph node {self.name!r} is symbolic: it has "
                                        "a value only inside graph.run (use np.where to select values)")

    def __bool__(self):
        self._symbolic("bool() (an `if` or `while` test)")

    def __float__(self):
        self._symbolic("float()")

    def __int__(self):
        self._symbolic("int()")

    def __index__(self):
        self._symbolic("using a node as an index")

    def __iter__(self):
        raise TypeError(f"graph node {self.name!r} is not iterable; index it (node[i]) instead")

    def __array__(self, dtype=None, copy=None):
        raise UnsupportedOperationError(f"graph node {self.name!r} has no value outside graph.run; NumPy "
                                        "functions jitgrad cannot trace cannot take it")

    def __setitem__(self, index, value):
        raise UnsupportedOperationError("graph nodes are immutable; build a new value with np.where")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _defer(fn: Callable, args: tuple, kwargs: dict | None):
    """A new node for fn(*args, **kwargs); arrays among the arguments become constants."""
    graph = _find_graph((args, kwargs or {}))
    if graph is NotImplemented:
        return NotImplemented
    return graph._call(fn, args, kwargs)


def _find_graph(obj, graph=None):
    cls = type(obj)
    if isinstance(obj, Node):
        if graph is not None and obj.graph is not graph:
            raise ArgumentError("an operation mixes nodes of two different graphs")
        return obj.graph
    if cls is tuple or cls is list:
        for x in obj:
            graph = _find_graph(x, graph)
            if graph is NotImplemented:
                return graph
    elif cls is dict:
        return _find_graph(list(obj.values()), graph)
    elif cls in WRAPPER_TYPES:
        return NotImplemented
    return graph


for _name, _fn in numpy_protocol(_defer).items():
    setattr(Node, _name, _fn)
register_array_type(Node)
nn.defer_calls_on(Node, lambda node, fn, args, kwargs: node.graph.apply(fn, *args, **kwargs))


class Placeholder(Node):
    """An input fed at each `run`; `None` in its shape matches any size."""

    is_leaf = True

    def __init__(self, graph: "Graph", name: str, shape: Sequence[int | None], dtype):
        super().__init__(graph, name=name)
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)

    def check(self, value) -> np.ndarray:
        array = np.asarray(value, dtype=self.dtype)
        if array.ndim != len(self.shape) or any(
                d is not None and d != n for d, n in zip(self.shape, array.shape, strict=True)):
            shown = "(" + ", ".join("None" if d is None else str(d) for d in self.shape) + ")"
            raise ShapeError(f"placeholder {self.name!r} has shape {shown}, it was fed an array of shape "
                             f"{array.shape}")
        return array


class Variable(Node):
    """A value that persists across runs; optimizers update `.value` in place."""

    is_leaf = True

    def __init__(self, graph: "Graph", name: str, value):
        super().__init__(graph, name=name)
        self.value = np.array(value)

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)

    def assign(self, value) -> None:
        """Overwrite the value in place (same shape; cast to the variable's dtype)."""
        value = np.asarray(value)
        if value.shape != self.value.shape:
            raise ShapeError(f"cannot assign an array of shape {value.shape} to variable {self.name!r} of shape "
                             f"{self.value.shape}")
        self.value[...] = value


class Constant(Node):
    """A fixed array (arrays used in NumPy calls on nodes become constants)."""

    is_leaf = True

    def __init__(self, graph: "Graph", value, name: str | None = None):
        super().__init__(graph, name=name or f"const_{len(graph._nodes)}")
        self.value = value

    shape = property(lambda self: np.shape(self.value))
    dtype = property(lambda self: np.asarray(self.value).dtype)


# --------------------------------------------------------------------------- evaluation

def _fill(template, env: dict):
    if isinstance(template, Node):
        return env[template.index]
    cls = type(template)
    if cls is tuple or cls is list:
        return cls(_fill(x, env) for x in template)
    if cls is dict:
        return {k: _fill(v, env) for k, v in template.items()}
    return template


def _ancestors(outputs: Sequence[Node]) -> list[Node]:
    """Every node the outputs depend on, in creation (hence topological) order."""
    seen: dict[int, Node] = {}
    stack = list(outputs)
    while stack:
        node = stack.pop()
        if node.index in seen:
            continue
        seen[node.index] = node
        leaves, _ = tree_flatten((node.args, node.kwargs))
        stack.extend(x for x in leaves if isinstance(x, Node))
    return [seen[i] for i in sorted(seen)]


def _evaluate(order: Sequence[Node], env: dict, perturbations: dict | None = None) -> dict:
    """Run the deferred calls of `order` (leaves already in `env`); a perturbation is
    added to the value of its node."""
    for node in order:
        if not node.is_leaf:
            env[node.index] = node.fn(*_fill(node.args, env), **_fill(node.kwargs, env))
        if perturbations and node.index in perturbations:
            env[node.index] = env[node.index] + perturbations[node.index]
    return env


class _Program:
    """The compiled replay of the nodes that some outputs depend on."""

    def __init__(self, outputs: Sequence[Node]):
        self.outputs = list(outputs)
        self.order = _ancestors(self.outputs)
        self.leaves = [n for n in self.order if n.is_leaf]
        self.compiled = jit(self.replay)

    def replay(self, leaf_values):
        env = dict(zip([n.index for n in self.leaves], leaf_values, strict=True))
        _evaluate(self.order, env)
        return [env[n.index] for n in self.outputs]


class _Gradients:
    """The call of a gradients node: d loss / d xs, as `jitgrad.grad` of the replay of
    `loss` with a zero perturbation added to each x (so x may be any node, and the
    gradient is the total derivative through it). Called with the xs' values and the
    leaves' values; inside `Graph.run` these are tracers and the gradient's IR is
    inlined into the run's program."""

    def __init__(self, loss: Node, xs: Sequence[Node]):
        self.loss = loss
        self.xs = list(xs)
        self.order = _ancestors([loss])
        self.leaves = [n for n in self.order if n.is_leaf]
        self.compiled = grad(self.loss_of)
        self.__name__ = f"gradients_of_{loss.name}"

    def loss_of(self, perturbations, leaf_values):
        env = dict(zip([n.index for n in self.leaves], leaf_values, strict=True))
        deltas = {x.index: d for x, d in zip(self.xs, perturbations, strict=True)}
        loss = _evaluate(self.order, env, deltas)[self.loss.index]
        return np.sum(loss) if np.ndim(loss) else loss

    def __call__(self, xs_values, leaf_values):
        return self.compiled(tuple(np.zeros_like(x) for x in xs_values), tuple(leaf_values))


# --------------------------------------------------------------------------- the graph

class Graph:
    """A static computation graph: placeholders, variables and deferred NumPy calls,
    run through jitgrad's compiler."""

    def __init__(self):
        self._nodes: list[Node] = []
        self._names: dict[str, Node] = {}
        self._programs: dict[tuple, _Program] = {}
        self._gradients: dict[tuple, list[Node]] = {}

    def __repr__(self) -> str:
        return f"Graph({len(self._nodes)} nodes, variables {sorted(self.variables)})"

    # ----- leaves
    def _named(self, node: Node) -> Node:
        if node.name in self._names:
            self._nodes.pop()
            raise ArgumentError(f"the graph already has a node named {node.name!r}")
        self._names[node.name] = node
        return node

    def placeholder(self, name: str, shape: Sequence[int | None], dtype=np.float32) -> Placeholder:
        """An input of shape `shape` (None for a size given by each feed) and `dtype`."""
        return self._named(Placeholder(self, name, shape, dtype))

    def variable(self, name: str, value) -> Variable:
        """A variable holding a copy of `value`."""
        return self._named(Variable(self, name, value))

    def constant(self, value, name: str | None = None) -> Constant:
        node = Constant(self, np.asarray(value), name)
        return self._named(node) if name is not None else node

    @property
    def variables(self) -> dict[str, Variable]:
        return {n.name: n for n in self._nodes if isinstance(n, Variable)}

    @property
    def placeholders(self) -> dict[str, Placeholder]:
        return {n.name: n for n in self._nodes if isinstance(n, Placeholder)}

    def __getitem__(self, name: str) -> Node:
        return self._names[name]

    # ----- operations
    def _call(self, fn: Callable, args: tuple, kwargs: dict | None) -> Node:
        return Node(self, fn, self._constants(tuple(args)), self._constants(dict(kwargs or {})))

    def _constants(self, obj):
        if isinstance(obj, (np.ndarray, np.generic)):
            return Constant(self, obj)
        cls = type(obj)
        if cls is tuple or cls is list:
            return cls(self._constants(x) for x in obj)
        if cls is dict:
            return {k: self._constants(v) for k, v in obj.items()}
        return obj

    def apply(self, fn: Callable, *args, **kwargs) -> Node:
        """A node for fn(*args, **kwargs): any NumPy function jitgrad can trace, called on
        the arguments' values when the graph runs."""
        _find_graph((args, kwargs), self)
        return self._call(fn, args, kwargs)

    def matmul(self, a, b) -> Node:
        return self.apply(np.matmul, a, b)

    def softmax_cross_entropy(self, logits, labels) -> Node:
        """mean over the batch of -sum(labels * log_softmax(logits), axis=-1), stable;
        `labels` may also be integer class indices (a placeholder of an integer dtype)."""
        return self.apply(softmax_cross_entropy, logits, labels)

    def gradients(self, loss: Node, xs):
        """Nodes for d loss / d x for each x of `xs` (a node, or a list, tuple or dict of
        nodes: the result has the same structure). A non-scalar loss is summed. x may be
        any node of the graph; the same request returns the same nodes."""
        flat, tree = tree_flatten(xs)
        for node in [loss, *flat]:
            if not isinstance(node, Node) or node.graph is not self:
                raise ArgumentError(f"gradients takes nodes of this graph, got {node!r}")
        key = (loss.index, tuple(x.index for x in flat))
        nodes = self._gradients.get(key)
        if nodes is None:
            op = _Gradients(loss, flat)
            grads = Node(self, op, (tuple(flat), tuple(op.leaves)), name=op.__name__)
            nodes = [Node(self, operator.getitem, (grads, k), name=f"d{loss.name}_d{x.name}")
                     for k, x in enumerate(flat)]
            self._gradients[key] = nodes
        return tree_unflatten(tree, nodes)

    # ----- execution
    def run(self, outputs, feed_dict: dict | None = None):
        """The values of `outputs` (a node, or a list, tuple or dict of nodes) as NumPy
        arrays, for the placeholder values in `feed_dict` (keys: placeholders or their
        names; a variable may be fed too, overriding its value for this run)."""
        flat, tree = tree_flatten(outputs)
        for node in flat:
            if not isinstance(node, Node) or node.graph is not self:
                raise ArgumentError(f"run takes nodes of this graph, got {node!r}")
        key = tuple(n.index for n in flat)
        program = self._programs.get(key)
        if program is None:
            program = self._programs[key] = _Program(flat)
        feeds = self._feeds(feed_dict)
        values = []
        for leaf in program.leaves:
            if leaf.index in feeds:
                values.append(feeds[leaf.index])
            elif isinstance(leaf, Placeholder):
                raise ArgumentError(f"placeholder {leaf.name!r} needs a value in feed_dict")
            else:
                values.append(leaf.value)
        return tree_unflatten(tree, program.compiled(tuple(values)))

    def _feeds(self, feed_dict: dict | None) -> dict[int, Any]:
        feeds = {}
        for key, value in (feed_dict or {}).items():
            node = self._names.get(key) if isinstance(key, str) else key
            if not isinstance(node, (Placeholder, Variable)) or node.graph is not self:
                raise ArgumentError(f"feed_dict key {key!r} is not a placeholder or variable of this graph")
            if isinstance(node, Placeholder):
                feeds[node.index] = node.check(value)
            else:
                array = np.asarray(value, dtype=node.dtype)
                if array.shape != node.shape:
                    raise ShapeError(f"variable {node.name!r} has shape {node.shape}, it was fed {array.shape}")
                feeds[node.index] = array
        return feeds


# --------------------------------------------------------------------------- layer methods

LAYER_METHODS = ("conv1d", "conv2d", "conv3d", "conv_transpose2d", "conv_general_dilated", "max_pool2d",
                 "avg_pool2d", "batch_norm", "layer_norm", "group_norm", "dropout", "relu", "gelu", "silu",
                 "sigmoid", "softmax", "log_softmax", "cross_entropy", "embedding")
"""`jitgrad.nn` functions that are also Graph methods: `g.conv2d(x, w, padding=1)` is a node
for `nn.conv2d(x, w, padding=1)` evaluated when the graph runs."""


def _layer_method(name: str):
    layer = getattr(nn, name)

    def method(self, *args, **kwargs) -> Node:
        return self.apply(layer, *args, **kwargs)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"A node for `jitgrad.nn.{name}`: {(layer.__doc__ or '').strip().splitlines()[0]}"
    return method


for _name in LAYER_METHODS:
    setattr(Graph, _name, _layer_method(_name))
