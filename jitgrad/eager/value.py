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
