"""`signbit`: the sign bit of a float, exactly as IEEE 754 stores it (-0.0 and NaNs with
the sign set included), which no comparison can see (-0.0 == 0.0; NaN compares false).

The scalar rule reads the bit through memory: the register is stored into a one-element
private array as its float type and loaded back as the signed integer of the same width
(`ScalarContext.local_array`/`store`/`load`, so every backend can lower it; LLVM turns
the pair into a bit cast). float16 and bfloat16 live in float32 registers, whose sign bit
is theirs. NumPy's `np.signbit` is the reference; its derivative is zero.
"""
from __future__ import annotations

import numpy as np

from jitgrad.errors import DTypeError
from jitgrad.ir import DType, TensorType, Trait
from .base import Elementwise, Primitive, defjvp_zero


def _infer(x: TensorType):
    if not x.dtype.is_float:
        raise DTypeError(f"signbit needs a floating-point operand, got {x.dtype} (an integer's sign is x < 0)")
    return [TensorType(x.shape, DType.bool)]


def _signbit_scalar(c, x):
    float_type, bits_type = (DType.f64, DType.i64) if c.float_width(x) == 64 else (DType.f32, DType.i32)
    slot = c.local_array(float_type, 1, "signbit")
    zero = c.index_const(0)
    c.store(slot, zero, x, float_type)
    bits = c.load(slot, zero, bits_type)
    return c.cmp("<", bits, c.const_of(0, bits_type))


signbit_p = Primitive("signbit", _infer, lambda x: np.asarray(np.signbit(x)), traits=(Trait.PURE,),
                      doc="The IEEE sign bit of a float (True for -0.0 and negative NaNs).")
signbit_p.lowering = Elementwise(_signbit_scalar)
defjvp_zero(signbit_p)


def signbit(x): return signbit_p.bind(x)


__all__ = ["signbit", "signbit_p"]
