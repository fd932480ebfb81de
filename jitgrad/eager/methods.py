"""TenfloweRS's object-oriented interface: its operation list as methods of the eager
tensors (`x.mul(w)`, `x.pow(3)`, `y.sum()`, `x.relu()`), each the function of the same
name in `jitgrad.ops`, so the method and functional styles run the same NumPy calls."""
from __future__ import annotations

from jitgrad import ops


class SeedMethods:
    """The operations of TenfloweRS's list as methods. `sum`, `mean`, `max`,
    `transpose` and `reshape` are the ndarray methods of the same names (the NumPy
    protocol defines them, with ndarray's signatures)."""

    __slots__ = ()

    def add(self, other):
        return ops.add(self, other)

    def sub(self, other):
        return ops.sub(self, other)

    def mul(self, other):
        return ops.mul(self, other)

    def div(self, other):
        return ops.div(self, other)

    def pow(self, exponent):
        return ops.pow(self, exponent)

    def neg(self):
        return ops.neg(self)

    def matmul(self, other):
        return ops.matmul(self, other)

    def max_with_indices(self, axis=None, keepdims: bool = False):
        """(maximum, index of the maximum) over `axis`: `jitgrad.ops.max_with_indices`."""
        return ops.max_with_indices(self, axis, keepdims)

    def relu(self):
        return ops.relu(self)

    def sigmoid(self):
        return ops.sigmoid(self)

    def tanh(self):
        return ops.tanh(self)

    def softmax(self, axis: int = -1):
        return ops.softmax(self, axis)

    def conv2d(self, *args, **kwargs):
        return ops.conv2d(self, *args, **kwargs)

    def max_pool2d(self, *args, **kwargs):
        return ops.max_pool2d(self, *args, **kwargs)

    def batch_norm(self, *args, **kwargs):
        return ops.batch_norm(self, *args, **kwargs)
