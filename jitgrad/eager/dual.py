"""Eager forward mode: dual numbers whose NumPy calls are differentiated through the IR.

A `DualTensor` carries a value and a tangent (the directional derivative of the value).
Every NumPy call on dual tensors (`np.sin(d)`, `d * 2`, `d @ W`, `np.sum(d, axis=0)`, ...)
is traced once per (callable, argument layout and types, keywords) into a small IR
function, which `jitgrad.passes.jvp.jvp_function` differentiates; the JVP function is
cached and evaluated by the reference interpreter on the concrete values and tangents.
So a dual-number step uses exactly the primitive JVP rules of `jitgrad.jvp`, and there is
no second set of derivative rules here.

`ForwardADContext` offers the same in the method style of TenfloweRS (`ctx.sin(x)`,
`ctx.mul(y, x)`), and `ctx.apply(fn, *args)` traces a whole NumPy function as one call.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from jitgrad.errors import ArgumentError, ShapeError
from jitgrad.ir import is_float_dtype
from jitgrad.interpreter import evaluate
from jitgrad.passes.jvp import jvp_function
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.tracing.tracer import trace
from .tape import WRAPPER_TYPES, numpy_protocol, register_array_type
from .methods import SeedMethods
from .value import ArgumentTemplates, HoldsValue, callable_array

# --------------------------------------------------------------------------- argument templates


class _Input(int):
    """In an argument template: input k of the traced function."""

    __slots__ = ()


def _fill(template, inputs):
    cls = type(template)
    if cls is _Input:
        return inputs[template]
    if cls is tuple or cls is list:
        return cls(_fill(x, inputs) for x in template)
    if cls is dict:
        return {k: _fill(v, inputs) for k, v in template.items()}
    return template


class _Layout(ArgumentTemplates):
    """Collects a call's inputs: dual tensors (differentiated) and arrays (constants)
    become inputs of the traced function; Python scalars and other hashables are static."""

    def __init__(self):
        super().__init__()
        self.values: list = []
        self.tangents: list = []
        self.wrt: list[int] = []

    def array_leaf(self, obj, cls):
        if cls is DualTensor or isinstance(obj, (np.ndarray, np.generic)):
            k = _Input(len(self.values))
            if cls is DualTensor:
                self.wrt.append(k)
                self.tangents.append(obj.tangent.view(np.ndarray))
                obj = obj.value.view(np.ndarray)
            self.values.append(obj)
            return k, ("in", int(k), cls is DualTensor, obj.shape, obj.dtype.str)
        if cls in WRAPPER_TYPES:
            raise _Foreign
        return None


class _Foreign(Exception):
    """A call mixes dual tensors with another eager array type."""


class _JVPCall:
    """One traced call, differentiated: the JVP function and how to read its results."""

    def __init__(self, fn: Callable, args_t, kwargs_t, values: list, wrt: list[int]):
        def body(*inputs):
            return fn(*_fill(args_t, inputs), **_fill(kwargs_t, inputs))
        body.__name__ = getattr(fn, "__name__", "call")
        traced = trace(body, tuple(values))
        self.function = jvp_function(traced.function, wrt)
        self.out_tree = traced.out_tree
        self.n_out = len(traced.function.outputs)
        self.float_out = [t.dtype.is_float for t in traced.function.output_types]

    def __call__(self, values: list, tangents: list):
        outs = evaluate(self.function, values + tangents)
        primals, out_tangents = outs[:self.n_out], outs[self.n_out:]
        results = [DualTensor._make(p, t) if is_float else p
                   for p, t, is_float in zip(primals, out_tangents, self.float_out, strict=True)]
        return tree_unflatten(self.out_tree, results)


_CALLS: OrderedDict = OrderedDict()
_CALLS_MAX = 1024

# Calls that only read metadata: answered from the value, nothing to differentiate.
_METADATA = frozenset([np.shape, np.ndim, np.size])


def _dual_apply(fn: Callable, args: tuple, kwargs: dict | None):
    """Evaluate `fn(*args, **kwargs)` with its dual tensors' values and tangents."""
    if fn in _METADATA:
        return fn(*[a.value if type(a) is DualTensor else a for a in args], **(kwargs or {}))
    layout = _Layout()
    try:
        args_t, args_k = layout.template(tuple(args))
        kwargs_t, kwargs_k = layout.template(dict(kwargs or {}))
    except _Foreign:
        return NotImplemented
    key = (fn, args_k, kwargs_k) if layout.hashable else None
    call = _CALLS.get(key) if key is not None else None
    if call is None:
        call = _JVPCall(fn, args_t, kwargs_t, layout.values, layout.wrt)
        if key is not None:
            _CALLS[key] = call
            if len(_CALLS) > _CALLS_MAX:
                _CALLS.popitem(last=False)         # the least recently used
    else:
        _CALLS.move_to_end(key)
    return call(layout.values, layout.tangents)


def cache_size() -> int:
    """The number of traced and differentiated calls held."""
    return len(_CALLS)


# --------------------------------------------------------------------------- dual tensors

class DualTensor(HoldsValue, SeedMethods):
    """A value and its tangent, for forward-mode differentiation of NumPy code.

        x = DualTensor(2.0, 1.0)          # dx/dx = 1
        y = np.sin(x) * x
        y.value, y.tangent                # 2 sin 2, sin 2 + 2 cos 2

    `value` and `tangent` are arrays that are also callable (`y.value()`, TenfloweRS's
    spelling, is `y.value`). Values are floating-point arrays or scalars (Python ints become float64); the
    tangent has the value's shape and dtype (a scalar tangent is broadcast; None: zero).
    Results that are not floating-point (comparisons, integer casts) are plain arrays."""

    __slots__ = ("value", "tangent")
    __array_priority__ = 1000

    def __init__(self, value, tangent=None):
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        value = np.asarray(value)
        if not is_float_dtype(value.dtype):
            raise ArgumentError(f"a DualTensor value must be floating-point, not {value.dtype}")
        if tangent is None:
            tangent = np.zeros_like(value)
        else:
            tangent = np.asarray(tangent, dtype=value.dtype)
            if tangent.shape != value.shape:
                if tangent.ndim:
                    raise ShapeError(f"a tangent of shape {tangent.shape} for a value of shape {value.shape}")
                tangent = np.full(value.shape, tangent, dtype=value.dtype)
        self.value = callable_array(value)
        self.tangent = callable_array(tangent)

    @classmethod
    def _make(cls, value, tangent) -> "DualTensor":
        dual = cls.__new__(cls)
        dual.value = callable_array(np.asarray(value))
        dual.tangent = callable_array(np.asarray(tangent))
        return dual

    def _jitgrad_stop_gradient(self):
        """jitgrad.stop_gradient: the same value with a zero tangent."""
        return DualTensor(self.value, np.zeros_like(self.tangent))

    def _carries_derivative(self) -> bool:
        return True

    _detach_advice = "read d.value (or d.numpy(), a copy) and d.tangent"

    def __setitem__(self, index, value):
        raise ArgumentError("a DualTensor cannot be modified in place; build a new one")

    def __repr__(self) -> str:
        return f"DualTensor(value={self.value!r}, tangent={self.tangent!r})"


for _name, _fn in numpy_protocol(_dual_apply).items():
    setattr(DualTensor, _name, _fn)
register_array_type(DualTensor)


# --------------------------------------------------------------------------- the method-style context

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _relu(x):
    return np.maximum(x, 0.0)


def _softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x, axis=-1):
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


class ForwardADContext:
    """Forward-mode operations in TenfloweRS's method style: `ctx.sin(x)`, `ctx.mul(y, x)`.

    Each method is the NumPy call it names, so it takes DualTensors and plain arrays
    alike; `apply(fn, *args)` runs a whole NumPy function on dual tensors as one traced
    and differentiated program (one evaluation instead of one per NumPy call)."""

    @staticmethod
    def dual(value, tangent=None) -> DualTensor:
        return DualTensor(value, tangent)

    @staticmethod
    def apply(fn: Callable, *args, **kwargs) -> Any:
        """fn(*args, **kwargs) with the values and tangents of its dual arguments."""
        leaves, _ = tree_flatten((args, kwargs))
        if not any(type(x) is DualTensor for x in leaves):
            return fn(*args, **kwargs)
        return _dual_apply(fn, args, kwargs)

    add = staticmethod(lambda a, b: np.add(a, b))
    sub = staticmethod(lambda a, b: np.subtract(a, b))
    mul = staticmethod(lambda a, b: np.multiply(a, b))
    div = staticmethod(lambda a, b: np.true_divide(a, b))
    pow = staticmethod(lambda a, b: np.power(a, b))
    neg = staticmethod(lambda x: np.negative(x))
    abs = staticmethod(lambda x: np.abs(x))
    square = staticmethod(lambda x: np.square(x))
    sqrt = staticmethod(lambda x: np.sqrt(x))
    exp = staticmethod(lambda x: np.exp(x))
    log = staticmethod(lambda x: np.log(x))
    sin = staticmethod(lambda x: np.sin(x))
    cos = staticmethod(lambda x: np.cos(x))
    tan = staticmethod(lambda x: np.tan(x))
    tanh = staticmethod(lambda x: np.tanh(x))
    maximum = staticmethod(lambda a, b: np.maximum(a, b))
    minimum = staticmethod(lambda a, b: np.minimum(a, b))
    matmul = staticmethod(lambda a, b: np.matmul(a, b))
    dot = staticmethod(lambda a, b: np.dot(a, b))
    transpose = staticmethod(lambda x, axes=None: np.transpose(x, axes))
    reshape = staticmethod(lambda x, shape: np.reshape(x, shape))
    sum = staticmethod(lambda x, axis=None, keepdims=False: np.sum(x, axis=axis, keepdims=keepdims))
    mean = staticmethod(lambda x, axis=None, keepdims=False: np.mean(x, axis=axis, keepdims=keepdims))
    max = staticmethod(lambda x, axis=None, keepdims=False: np.max(x, axis=axis, keepdims=keepdims))

    def sigmoid(self, x):
        return self.apply(_sigmoid, x)

    def relu(self, x):
        return self.apply(_relu, x)

    def softmax(self, x, axis: int = -1):
        return self.apply(_softmax, x, axis=axis)

    def log_softmax(self, x, axis: int = -1):
        return self.apply(_log_softmax, x, axis=axis)

