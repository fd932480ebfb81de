"""Counter-based random numbers: uniform floats from Philox4x32-10.

`random_uniform(k0, k1; shape, stream, word, dtype)` gives every element of `shape` a
uniform number in [0, 1) computed from the element's own row-major position, so the
numbers need no state, no order and no communication between threads: any loop order,
blocking or fusion computes the same bits, and the interpreter (a vectorized NumPy
Philox) agrees with compiled code bit for bit.

Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011)
is a bijection of a 128-bit counter under a 64-bit key. Here
  key     = the 64 bits of `k0` (two 32-bit words, low word first),
  counter = (index low 32 bits, index high 32 bits, low word of k1 XOR stream, high word of k1),
so the 128 bits of per-call key (k0, k1) select the sequence, `stream` (one per call
site of a traced function) separates draws of one call, and distinct elements get
distinct counters. The four output words give two independent 64-bit words; `word`
picks one of them (Box–Muller uses both). Doubles take the word's top 53 bits
(u = bits * 2**-53), floats the top 24 bits of its low half, both exactly.

The key words are i64 scalars holding raw bits; every 32-bit quantity lives in a 64-bit
lane so that the 32 x 32 -> 64-bit products are plain 64-bit multiplies.
"""
from __future__ import annotations

import numpy as np

from jitgrad.errors import DTypeError, ShapeError
from jitgrad.ir import DType, TensorType
from .base import Elementwise, Primitive, defjvp_zero

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57      # round multipliers
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85      # key schedule (Weyl) increments
PHILOX_ROUNDS = 10
MASK32 = 0xFFFFFFFF
MAX_STREAM = 1 << 32


def philox4x32(ops, counter, key):
    """Philox4x32-10 of `counter` (four 32-bit words) under `key` (two), written once
    over an integer-ops object `ops` with the backend scalar context's names
    (`mul`, `add`, `bit_and`, `bit_xor`, `shift_right_logical`, `const`), so the NumPy
    reference and every backend's lowering run the same arithmetic."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    mask = ops.const(MASK32, c0)
    shift32 = ops.const(32, c0)
    m0, m1 = ops.const(PHILOX_M0, c0), ops.const(PHILOX_M1, c0)
    w0, w1 = ops.const(PHILOX_W0, c0), ops.const(PHILOX_W1, c0)
    for r in range(PHILOX_ROUNDS):
        if r:
            k0 = ops.bit_and(ops.add(k0, w0), mask)
            k1 = ops.bit_and(ops.add(k1, w1), mask)
        p0, p1 = ops.mul(m0, c0), ops.mul(m1, c2)           # < 2**64: exact in a 64-bit lane
        hi0, lo0 = ops.shift_right_logical(p0, shift32), ops.bit_and(p0, mask)
        hi1, lo1 = ops.shift_right_logical(p1, shift32), ops.bit_and(p1, mask)
        c0, c1, c2, c3 = (ops.bit_xor(ops.bit_xor(hi1, c1), k0), lo1,
                          ops.bit_xor(ops.bit_xor(hi0, c3), k1), lo0)
    return c0, c1, c2, c3


def _uniform_from_counter(ops, index, k0, k1, *, stream: int, word: int, dtype: DType):
    """The element's uniform number: Philox of its counter, then the word's top bits
    scaled to [0, 1)."""
    mask, shift32 = ops.const(MASK32, index), ops.const(32, index)
    counter = (ops.bit_and(index, mask), ops.shift_right_logical(index, shift32),
               ops.bit_xor(ops.bit_and(k1, mask), ops.const(stream, index)),
               ops.shift_right_logical(k1, shift32))
    key = (ops.bit_and(k0, mask), ops.shift_right_logical(k0, shift32))
    out = philox4x32(ops, counter, key)
    lo, hi = out[2 * word], out[2 * word + 1]
    if dtype == DType.f64:
        bits = ops.bit_or(ops.shift_left(hi, ops.const(21, index)), ops.shift_right_logical(lo, ops.const(11, index)))
        return ops.mul(ops.convert(bits, dtype), ops.const_of(2.0 ** -53, dtype))
    bits = ops.shift_right_logical(lo, ops.const(8, index))
    return ops.mul(ops.convert(bits, dtype), ops.const_of(2.0 ** -24, dtype))


class _NumPyBits:
    """The integer ops `philox4x32` needs, on uint64 arrays (wrap-around arithmetic)."""

    @staticmethod
    def const(value, like):
        return np.uint64(value)

    @staticmethod
    def const_of(value, dtype: DType):
        return dtype.numpy.type(value)

    mul = staticmethod(np.multiply)
    add = staticmethod(np.add)
    bit_and = staticmethod(np.bitwise_and)
    bit_or = staticmethod(np.bitwise_or)
    bit_xor = staticmethod(np.bitwise_xor)
    shift_left = staticmethod(np.left_shift)
    shift_right_logical = staticmethod(np.right_shift)

    @staticmethod
    def convert(x, dtype: DType):
        return x.astype(dtype.numpy)


def _infer(k0: TensorType, k1: TensorType, *, shape, stream: int, word: int, dtype: DType):
    for k in (k0, k1):
        if k.shape != () or k.dtype != DType.i64:
            raise DTypeError(f"random_uniform: key words must be i64[] scalars, got {k}")
    if dtype not in (DType.f32, DType.f64):
        raise DTypeError(f"random_uniform draws f32 or f64 numbers, not {dtype}")
    if not 0 <= int(stream) < MAX_STREAM:
        raise ShapeError(f"random_uniform: stream {stream} is outside [0, 2**32)")
    if word not in (0, 1):
        raise ShapeError(f"random_uniform: word must be 0 or 1, got {word}")
    if any(int(d) < 0 for d in shape) or TensorType(tuple(shape), dtype).size >= 1 << 62:
        raise ShapeError(f"random_uniform: bad shape {tuple(shape)}")
    return [TensorType(tuple(shape), dtype)]


def _impl(k0, k1, *, shape, stream, word, dtype):
    with np.errstate(over="ignore"):
        index = np.arange(TensorType(tuple(shape), dtype).size, dtype=np.uint64)
        u = _uniform_from_counter(_NumPyBits, index, np.asarray(k0).astype(np.uint64),
                                  np.asarray(k1).astype(np.uint64), stream=stream, word=word, dtype=dtype)
    return np.asarray(u, dtype=dtype.numpy).reshape(shape)


def _scalar(ctx, index, k0, k1, *, shape, stream, word, dtype):
    return _uniform_from_counter(ctx, index, k0, k1, stream=stream, word=word, dtype=dtype)


# PURE: the generator's state is its operands (the key words), so equal operands draw
# equal numbers and an unused draw may be dropped.
random_uniform_p = Primitive(
    "random_uniform", _infer, _impl,
    doc="Uniform numbers in [0, 1) of `shape` from Philox4x32-10 keyed by (k0, k1, stream), "
        "counted by the element's row-major index; `word` 0/1 picks one of two independent draws.")
# Cost: ten rounds of two 32x32-bit products and six bit operations per element, vectorized
# (the key schedule is loop-invariant): about a vector-math call's work.
random_uniform_p.lowering = Elementwise(_scalar, indexed=True)
random_uniform_p.cost = 16
defjvp_zero(random_uniform_p)        # numbers drawn are constants with respect to every input


def random_uniform(k0, k1, shape, *, stream: int, word: int = 0, dtype: DType = DType.f64):
    """Emit one draw of uniform numbers of `shape` (see the module docstring)."""
    return random_uniform_p.bind(k0, k1, shape=tuple(int(d) for d in shape), stream=int(stream), word=int(word),
                                 dtype=dtype)
