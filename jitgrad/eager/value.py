"""What the eager tensors (`TrackedTensor`, `DualTensor`) share: they hold a concrete
NumPy `value` and answer Python's and NumPy's questions about it from that value.

Conversions that leave the differentiated world — `np.asarray(t)` (and every library
that calls it, such as scipy), `float(t)`, `math.exp(t)`, `t.item()`, `t.tolist()`,
assigning `t` into a NumPy array — would return a plain number or array and drop the
derivative without a word. While a derivative is being carried (a tensor of a recording
tape, any dual tensor) they raise `CutDerivativeError` instead. Reading the value on
purpose stays easy: `t.numpy()` is a detached copy, `t.value` the array itself. `bool`,
`int` and `operator.index` stay allowed: they are piecewise constant, so the zero
derivative a cut gives them is their true derivative.
"""
from __future__ import annotations

import numpy as np

from jitgrad.errors import CutDerivativeError
from jitgrad.tracing.tracer import user_location


class HoldsValue:
    """Array attributes and conversions read from `self.value`. Subclasses say when a
    conversion would cut a derivative (`_carries_derivative`) and how to avoid it."""

    __slots__ = ()

    shape = property(lambda self: self.value.shape)
    ndim = property(lambda self: self.value.ndim)
    size = property(lambda self: self.value.size)
    dtype = property(lambda self: self.value.dtype)

    def _carries_derivative(self) -> bool:
        """Whether a conversion to a plain value would now drop a derivative."""
        raise NotImplementedError

    # How to read the value on purpose, for the error message.
    _detach_advice = "read t.numpy() (a detached copy) or t.value"

    def _refuse_conversion(self, conversion: str):
        name = type(self).__name__
        raise CutDerivativeError(
            f"{conversion} of a {name} would give a plain value and silently drop its derivative; "
            f"{self._detach_advice} to use the value as a constant on purpose, or keep to the NumPy "
            "functions jitgrad differentiates", user_location())

    def numpy(self) -> np.ndarray:
        """A copy of the value as a plain NumPy array, detached on purpose (a constant)."""
        return np.array(self.value, copy=True)

    def __array__(self, dtype=None, copy=None):
        if self._carries_derivative():
            self._refuse_conversion("np.asarray/np.array (or a library calling it, such as scipy, or assigning "
                                    "it into a NumPy array)")
        value = np.asarray(self.value, dtype=dtype)
        return value.copy() if copy else value

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self) -> bool:
        return bool(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def __index__(self) -> int:
        return self.value.__index__()

    def __float__(self) -> float:
        if self._carries_derivative():
            self._refuse_conversion("float() (also math.* functions and assigning it to an element of a NumPy "
                                    "array)")
        return float(self.value)

    def __complex__(self) -> complex:
        if self._carries_derivative():
            self._refuse_conversion("complex()")
        return complex(self.value)

    def item(self, *args):
        if self._carries_derivative():
            self._refuse_conversion(".item()")
        return self.value.item(*args)

    def tolist(self):
        if self._carries_derivative():
            self._refuse_conversion(".tolist()")
        return np.asarray(self.value).tolist()


class ArgumentTemplates:
    """Turns call arguments into a template — the arrays replaced by placeholders — and a
    hashable key describing the call's structure (containers, static Python and NumPy
    scalars, slices, other hashable values), so traced programs can be cached by key.
    Subclasses decide what an array becomes in `array_leaf`."""

    def __init__(self):
        self.hashable = True

    def array_leaf(self, obj, cls):
        """(placeholder, key) for an array-like leaf, or None if `obj` is not one."""
        raise NotImplementedError

    def template(self, obj):
        """(template, key) of one argument."""
        cls = type(obj)
        if cls is tuple or cls is list:
            pairs = [self.template(x) for x in obj]
            return cls(p[0] for p in pairs), (cls.__name__,) + tuple(p[1] for p in pairs)
        if cls is dict:
            pairs = {k: self.template(v) for k, v in obj.items()}
            return ({k: p[0] for k, p in pairs.items()},
                    ("dict",) + tuple(sorted((k, p[1]) for k, p in pairs.items())))
        if isinstance(obj, (np.integer, np.bool_)):
            return obj, (cls, obj)        # static, like Python ints: indices, sizes, exponents
        leaf = self.array_leaf(obj, cls)
        if leaf is not None:
            return leaf
        if cls in (bool, int, float, complex):
            return obj, (cls, obj)        # 1, 1.0 and True trace differently
        if cls is slice:
            return obj, ("slice", self.template(obj.start)[1], self.template(obj.stop)[1],
                         self.template(obj.step)[1])
        try:
            hash(obj)
        except TypeError:
            self.hashable = False
            return obj, None
        return obj, obj


class CallableArray(np.ndarray):
    """A NumPy array that is also callable, returning itself: `d.value` and TenfloweRS's
    `d.value()` are the same array. Used for the value and tangent of a `DualTensor`,
    which are read either way. NumPy operations on it give plain arrays."""

    def __call__(self) -> "CallableArray":
        return self

    def __array_wrap__(self, array, context=None, return_scalar=False):
        if return_scalar:
            return array[()]
        return array.view(np.ndarray) if type(array) is not np.ndarray else array

    def __reduce__(self):
        return np.asarray(self).__reduce__()

    def __repr__(self) -> str:
        return repr(self.view(np.ndarray))

    def __str__(self) -> str:
        return str(self.view(np.ndarray))


def callable_array(array: np.ndarray) -> CallableArray:
    """`array` viewed as a CallableArray (no copy)."""
    return array.view(CallableArray)
