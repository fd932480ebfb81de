"""Static types of IR values: a tensor type is a shape and an element dtype.

Every SSA value carries one `TensorType`; scalars are 0-d tensors (`f64[]`). Shapes are
fully static: a new shape is a new signature, retraced and recompiled, as in JAX's jit.
"""
from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    """Element types. Floats are differentiable; i64 and bool carry indices and masks."""

    f32 = "f32"
    f64 = "f64"
    i64 = "i64"
    bool = "bool"

    @property
    def numpy(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.f32, DType.f64)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @staticmethod
    def from_numpy(dtype) -> "DType":
        """The jitgrad dtype of a NumPy dtype; raises `KeyError` for unsupported ones."""
        return _FROM_NUMPY[np.dtype(dtype)]

    def __str__(self) -> str:
        return self.value


_TO_NUMPY = {
    DType.f32: np.dtype(np.float32),
    DType.f64: np.dtype(np.float64),
    DType.i64: np.dtype(np.int64),
    DType.bool: np.dtype(np.bool_),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items()}
# Narrower integer inputs are widened to i64 by the tracer, never stored as such.
_FROM_NUMPY.update({np.dtype(t): DType.i64 for t in (np.int8, np.int16, np.int32,
                                                     np.uint8, np.uint16, np.uint32)})


@dataclass(frozen=True)
class TensorType:
    """The type of one SSA value: a static shape and an element dtype."""

    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise ValueError(f"negative dimension in shape {self.shape}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"


_TYPE_RE = re.compile(r"^\s*(f32|f64|i64|bool)\[([0-9,\s]*)\]\s*$")


def parse_type(text: str) -> TensorType:
    """Parse the printed form `f32[256,64]` (also used for the CLI's --args specs)."""
    match = _TYPE_RE.match(text)
    if not match:
        raise ValueError(f"not a tensor type: {text!r} (expected e.g. f32[16,8] or f64[])")
    dims = [d.strip() for d in match.group(2).split(",") if d.strip()]
    return TensorType(tuple(int(d) for d in dims), DType(match.group(1)))
