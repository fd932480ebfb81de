"""What the eager tensors (`TrackedTensor`, `DualTensor`) share: they hold a concrete
NumPy `value` and answer Python's and NumPy's questions about it from that value."""
from __future__ import annotations

import numpy as np


class HoldsValue:
    """Array attributes and conversions read from `self.value`."""

    __slots__ = ()

    shape = property(lambda self: self.value.shape)
    ndim = property(lambda self: self.value.ndim)
    size = property(lambda self: self.value.size)
    dtype = property(lambda self: self.value.dtype)

    def __array__(self, dtype=None, copy=None):
        value = np.asarray(self.value, dtype=dtype)
        return value.copy() if copy else value

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self) -> bool:
        return bool(self.value)

    def __float__(self) -> float:
        return float(self.value)
