"""Gradient-descent optimizers: `SGD` (with momentum) and `Adam`.

`optimizer.apply_gradients([(variable, gradient), ...])` updates each variable in place:

  - a `Graph` variable (`graph.variable(...)`): its `.value`;
  - a tape's tracked tensor (`tape.watch(array)` shares the array, so the update reaches
    it; `tape.variable` holds a copy) or a plain NumPy array: the array itself.

A gradient is an array (NumPy, or a tracked tensor) or a gradient node of a graph
(`graph.gradients(...)`); graph nodes are evaluated together in one `graph.run` with the
`feed_dict` passed to `apply_gradients`. Optimizer state (momentum, Adam's moments) is
kept per variable. Updates are plain NumPy arithmetic on concrete arrays: they are not
differentiated, so they do not go through the tape or the compiler.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from jitgrad.errors import ArgumentError, ShapeError
from jitgrad.ir import is_float_dtype


def _storage(variable) -> np.ndarray:
    """The array an update writes into."""
    from jitgrad.eager.tape import TrackedTensor
    from jitgrad.graph import Variable
    if isinstance(variable, (Variable, TrackedTensor)):
        array = variable.value
    elif isinstance(variable, np.ndarray):
        array = variable
    else:
        raise ArgumentError(f"cannot update a {type(variable).__name__} in place: pass a graph variable, a "
                            "tracked tensor or a NumPy array")
    if not isinstance(array, np.ndarray) or not is_float_dtype(array.dtype) or not array.flags.writeable:
        raise ArgumentError("an optimizer updates writeable floating-point arrays in place; this variable holds "
                            f"{type(array).__name__} of dtype {np.asarray(array).dtype}")
    return array


class Optimizer:
    """Base class: `apply_gradients` resolves variables and gradients, `_update` is the
    rule. State is kept per variable array (`_state`)."""

    def __init__(self, learning_rate: float, loss_scaler=None):
        self.learning_rate = learning_rate
        self.loss_scaler = loss_scaler
        self._state: dict[int, tuple[np.ndarray, dict]] = {}

    def apply_gradients(self, grads_and_vars: Iterable, feed_dict: dict | None = None) -> bool:
        """Update each variable from its gradient: pairs (variable, gradient), the
        seed's order. Gradient nodes of a graph are run with `feed_dict`.

        With a `loss_scaler` (jitgrad.LossScaler) the gradients are those of the scaled
        loss: they are divided by the scale, and if any is inf or nan no variable is
        updated (the step is skipped) and the scale backs off. Returns whether the
        variables were updated."""
        from jitgrad.graph import Node
        pairs = [tuple(pair) for pair in grads_and_vars]
        for pair in pairs:
            if len(pair) != 2:
                raise ArgumentError("apply_gradients takes (variable, gradient) pairs")
        nodes = [g for _, g in pairs if isinstance(g, Node)]
        if nodes:
            graphs = {id(n.graph): n.graph for n in nodes}
            if len(graphs) > 1:
                raise ArgumentError("apply_gradients: the gradient nodes belong to different graphs")
            values = iter(next(iter(graphs.values())).run(nodes, feed_dict))
            pairs = [(v, next(values) if isinstance(g, Node) else g) for v, g in pairs]
        elif feed_dict is not None:
            raise ArgumentError("feed_dict is for gradients given as graph nodes; these are arrays")
        from jitgrad.eager.value import HoldsValue
        updates = []
        for variable, gradient in pairs:
            array = _storage(variable)
            if isinstance(gradient, HoldsValue):      # read on purpose: an update is not differentiated
                gradient = gradient.value
            gradient = np.asarray(gradient)
            if gradient.shape != array.shape:
                raise ShapeError(f"a gradient of shape {gradient.shape} for a variable of shape {array.shape}")
            updates.append((array, gradient))
        if self.loss_scaler is not None:
            # unscaled in the gradient's own dtype (exact: the scale is a power of two)
            unscaled, finite = self.loss_scaler.unscale([g for _, g in updates])
            self.loss_scaler.update(finite)
            if not finite:
                return False
            updates = [(array, g) for (array, _), g in zip(updates, unscaled, strict=True)]
        for array, gradient in updates:
            g = np.asarray(gradient, dtype=array.dtype)
            entry = self._state.get(id(array))
            if entry is None or entry[0] is not array:
                entry = self._state[id(array)] = (array, {})
            self._update(array, g, entry[1])
        return True

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """w -= learning_rate * v, with v = momentum * v + g (v = g without momentum)."""

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, loss_scaler=None):
        super().__init__(learning_rate, loss_scaler)
        self.momentum = momentum

    def _update(self, w, g, state):
        if self.momentum:
            velocity = state.get("velocity")
            velocity = g.copy() if velocity is None else velocity * self.momentum + g
            state["velocity"] = velocity
            g = velocity
        w -= self.learning_rate * g


class Adam(Optimizer):
    """Adam (Kingma & Ba): bias-corrected moving averages of g and g**2;
    w -= learning_rate * m_hat / (sqrt(v_hat) + eps)."""

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, loss_scaler=None):
        super().__init__(learning_rate, loss_scaler)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _update(self, w, g, state):
        t = state["t"] = state.get("t", 0) + 1
        m = state["m"] = self.beta1 * state.get("m", 0.0) + (1 - self.beta1) * g
        v = state["v"] = self.beta2 * state.get("v", 0.0) + (1 - self.beta2) * g * g
        m_hat = m / (1 - self.beta1 ** t)
        v_hat = v / (1 - self.beta2 ** t)
        w -= (self.learning_rate * m_hat / (np.sqrt(v_hat) + self.eps)).astype(w.dtype, copy=False)
