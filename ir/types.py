"""Static types of IR values: a tensor type is a shape and an element dtype.

Every SSA value carries one `TensorType`; scalars are 0-d tensors (`f64[]`). Shapes are
fully static: a new shape is a new signature, retraced and recompiled, as in JAX's jit.
"""
from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

import ml_dtypes
import numpy as np


class DType(enum.Enum):
    """Element types, in NumPy's order of kinds: bool, signed and unsigned integers of every
    width, floats (bf16 is `ml_dtypes.bfloat16`, the NumPy dtype JAX uses) and complex
    numbers (c64 and c128: two f32 or two f64, real part first, as NumPy stores them).
    Floats are differentiable; `list(DType)` is the authoritative list of what jitgrad
    supports."""

    bool = "bool"
    i8 = "i8"
    i16 = "i16"
    i32 = "i32"
    i64 = "i64"
    u8 = "u8"
    u16 = "u16"
    u32 = "u32"
    u64 = "u64"
    f16 = "f16"
    bf16 = "bf16"
    f32 = "f32"
    f64 = "f64"
    c64 = "c64"
    c128 = "c128"

    @property
    def numpy(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.f16, DType.bf16, DType.f32, DType.f64)

    @property
    def is_complex(self) -> bool:
        return self in (DType.c64, DType.c128)

    @property
    def is_inexact(self) -> bool:
        """A float or a complex type (NumPy's np.inexact)."""
        return self.is_float or self.is_complex

    @property
    def real_dtype(self) -> "DType":
        """The dtype of each part of a complex type (c64 -> f32); other types are their own."""
        return {DType.c64: DType.f32, DType.c128: DType.f64}.get(self, self)

    @property
    def complex_dtype(self) -> "DType":
        """The complex type whose parts are this float type (f32 -> c64, f64 -> c128);
        NumPy has no complex type for f16 and bf16 and computes them as c64."""
        if self.is_complex:
            return self
        return DType.c128 if self == DType.f64 else DType.c64

    @property
    def is_integer(self) -> bool:
        """A signed or unsigned integer (not bool)."""
        return self.value[0] in "iu"

    @property
    def is_signed(self) -> bool:
        """Signed integers and floats (bool and unsigned integers are not)."""
        return self.value[0] in "ifb" and self is not DType.bool

    @property
    def is_unsigned(self) -> bool:
        return self.value[0] == "u"

    @property
    def bits(self) -> int:
        return 1 if self is DType.bool else 8 * self.itemsize

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
    DType.bool: np.dtype(np.bool_),
    DType.i8: np.dtype(np.int8), DType.i16: np.dtype(np.int16),
    DType.i32: np.dtype(np.int32), DType.i64: np.dtype(np.int64),
    DType.u8: np.dtype(np.uint8), DType.u16: np.dtype(np.uint16),
    DType.u32: np.dtype(np.uint32), DType.u64: np.dtype(np.uint64),
    DType.f16: np.dtype(np.float16), DType.bf16: np.dtype(ml_dtypes.bfloat16),
    DType.f32: np.dtype(np.float32), DType.f64: np.dtype(np.float64),
    DType.c64: np.dtype(np.complex64), DType.c128: np.dtype(np.complex128),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items()}
# Platform aliases (np.intc, np.longlong, ...) compare equal to these dtypes and hash alike.


def is_float_dtype(dtype) -> bool:
    """Whether a NumPy dtype is a real floating-point type that has derivatives.

    ml_dtypes' bfloat16 reports `kind == "V"`, so `dtype.kind == "f"` misses it: code
    outside the IR asks this instead."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype == _TO_NUMPY[DType.bf16]


@dataclass(frozen=True)
class TensorType:
    """The type of one SSA value: a static shape and an element dtype."""

    shape: tuple[int, ...]
    dtype: DType
    weak: bool | frozenset = False
    """Only in call signatures: a Python scalar argument, which promotes like one (NEP 50:
    `f(x_f32, 2.0)` is float32). For a Python int, the integer dtypes that can hold its
    value (NumPy refuses to cast it to any other), so the signature tells them apart.
    Traced values are never weak; see `as_strong`."""

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

    def as_strong(self) -> "TensorType":
        return TensorType(self.shape, self.dtype) if self.weak else self

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def __str__(self) -> str:
        text = f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"
        return f"weak {text}" if self.weak else text


_TYPE_RE = re.compile(r"^\s*(" + "|".join(d.value for d in DType) + r")\[([0-9,\s]*)\]\s*$")


def parse_type(text: str) -> TensorType:
    """Parse the printed form `f32[256,64]` (also used for the CLI's --args specs)."""
    match = _TYPE_RE.match(text)
    if not match:
        raise ValueError(f"not a tensor type: {text!r} (expected e.g. f32[16,8] or f64[])")
    dims = [d.strip() for d in match.group(2).split(",") if d.strip()]
    return TensorType(tuple(int(d) for d in dims), DType(match.group(1)))
