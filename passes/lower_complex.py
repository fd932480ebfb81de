"""`lower-complex`: every complex value becomes the pair of its real parts.

Backends compute in real arithmetic only. This pass, the last of the optimization
pipeline, rewrites each complex value into two real values of its part dtype (c64 ->
two f32, c128 -> two f64) and each op on complex values into real ops on those parts,
one rule per primitive in `RULES`, in NumPy's formulas (so results match NumPy's bits
where NumPy's loops compute the same expressions): products
`(ar br - ai bi, ar bi + ai br)`, quotients by Smith's method with a reciprocal as
NumPy's `divide` loop, equality of both parts. Fused, a complex value lives in two float
registers.

The function keeps its complex signature: a complex argument is reinterpreted as floats
with a trailing axis of two (`view_as_real`, the same interleaved bytes, no code) and
sliced into its parts; a complex result is the two parts interleaved again and
reinterpreted (`view_as_complex`). Complex values inside regions (control flow,
checkpoints) are refused with a clear error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import UnsupportedOperationError
from jitgrad.ir import DType, Function, Operation, Value, current_builder, new_function
from jitgrad.ir.rewrite import Rewriter
from jitgrad.primitives import complex_numbers as C
from jitgrad.primitives.bits import signbit
from .manager import FunctionPass


class Parts(NamedTuple):
    """A complex value as two real values of its part dtype."""

    re: Value
    im: Value


def _zeros_like(x: Value) -> Value:
    return P.full(0, x.type)


def _parts(x) -> Parts:
    """Parts of a lowered operand: real operands (a real select predicate aside, mixed
    operands do not occur: elementwise operands share a dtype) get a zero imaginary part."""
    return x if isinstance(x, Parts) else Parts(x, _zeros_like(x))


def _is_complex(v: Value) -> bool:
    return v.type.dtype.is_complex


# --------------------------------------------------------------------------- rules

def _same_op_on_parts(op: Operation, inputs) -> list[Parts]:
    """Linear data movement and sums (broadcast, reshape, slice, concatenate, reduce_sum,
    ...): the op applied to the real parts and to the imaginary parts."""
    parts = [_parts(x) for x in inputs]
    re = current_builder().create(op.opdef, [p.re for p in parts], op.attrs).results[0]
    im = current_builder().create(op.opdef, [p.im for p in parts], op.attrs).results[0]
    return [Parts(re, im)]


def _constant(op: Operation, inputs) -> list[Parts]:
    value = np.asarray(op.attrs["value"])
    return [Parts(P.constant(np.array(value.real)), P.constant(np.array(value.imag)))]


def _convert(op: Operation, inputs) -> list:
    (x,), target = inputs, op.attrs["dtype"]
    if isinstance(x, Parts):
        if target.is_complex:
            return [Parts(P.convert(x.re, target.real_dtype), P.convert(x.im, target.real_dtype))]
        if target == DType.bool:        # NumPy: nonzero when either part is
            zero = _zeros_like(x.re)
            return [P.logical_or(P.ne(x.re, zero), P.ne(x.im, zero))]
        return [P.convert(x.re, target)]       # NumPy's astype drops the imaginary part
    re = P.convert(x, target.real_dtype)
    return [Parts(re, _zeros_like(re))]


def _add(op, inputs):
    a, b = map(_parts, inputs)
    return [Parts(P.add(a.re, b.re), P.add(a.im, b.im))]


def _sub(op, inputs):
    a, b = map(_parts, inputs)
    return [Parts(P.sub(a.re, b.re), P.sub(a.im, b.im))]


def _neg(op, inputs):
    (a,) = map(_parts, inputs)
    return [Parts(P.neg(a.re), P.neg(a.im))]


def _mul(op, inputs):
    a, b = map(_parts, inputs)
    return [_product(a, b)]


def _div(op, inputs):
    """NumPy's complex `divide` loop: Smith's method scaled by a reciprocal, the branch
    chosen by the larger part of the divisor (NaN parts take the second), and a divisor of
    0 + 0i giving each part divided by 0 (inf or NaN as C's division)."""
    a, b = map(_parts, inputs)
    abs_re, abs_im = P.absolute(b.re), P.absolute(b.im)
    one = P.full(1, b.re.type)
    # |b.re| >= |b.im|: rat = b.im / b.re, scl = 1 / (b.re + b.im rat)
    rat1 = P.div(b.im, b.re)
    scl1 = P.div(one, P.add(b.re, P.mul(b.im, rat1)))
    re1 = P.mul(P.add(a.re, P.mul(a.im, rat1)), scl1)
    im1 = P.mul(P.sub(a.im, P.mul(a.re, rat1)), scl1)
    # otherwise: rat = b.re / b.im, scl = 1 / (b.im + b.re rat)
    rat2 = P.div(b.re, b.im)
    scl2 = P.div(one, P.add(b.im, P.mul(b.re, rat2)))
    re2 = P.mul(P.add(P.mul(a.re, rat2), a.im), scl2)
    im2 = P.mul(P.sub(P.mul(a.im, rat2), a.re), scl2)
    zero = _zeros_like(b.re)
    by_zero = P.logical_and(P.eq(abs_re, zero), P.eq(abs_im, zero))
    re0, im0 = P.div(a.re, abs_re), P.div(a.im, abs_re)
    first = P.ge(abs_re, abs_im)
    re = P.select(by_zero, re0, P.select(first, re1, re2))
    im = P.select(by_zero, im0, P.select(first, im1, im2))
    return [Parts(re, im)]


def _either_part_nonzero(x: Parts) -> Value:
    zero = _zeros_like(x.re)
    return P.logical_or(P.ne(x.re, zero), P.ne(x.im, zero))


def _strong_zero(product):
    """safe_mul / safe_div: 0 where the first factor (or, for safe_mul, either) is 0 + 0i,
    whatever the other is (inf, NaN): the backward products of jitgrad.primitives.elementwise."""
    def rule(op, inputs):
        a, b = map(_parts, inputs)
        live = _either_part_nonzero(a)
        if op.name == "safe_mul":
            live = P.logical_and(live, _either_part_nonzero(b))
        (out,) = product(op, inputs)
        zero = _zeros_like(out.re)
        return [Parts(P.select(live, out.re, zero), P.select(live, out.im, zero))]
    return rule


def _product(a: Parts, b: Parts) -> Parts:
    return Parts(P.sub(P.mul(a.re, b.re), P.mul(a.im, b.im)), P.add(P.mul(a.re, b.im), P.mul(a.im, b.re)))


def _integer_pow(op, inputs):
    """z ** n by binary powering (NumPy's small-integer complex power); n < 0 is 1 / z ** -n."""
    (z,), n = map(_parts, inputs), op.attrs["y"]
    result, square, k = None, z, abs(n)
    while k:
        if k & 1:
            result = square if result is None else _product(result, square)
        k >>= 1
        if k:
            square = _product(square, square)
    if result is None:
        result = Parts(P.full(1, z.re.type), _zeros_like(z.re))
    if n < 0:
        one = Parts(P.full(1, z.re.type), _zeros_like(z.re))
        (result,) = _div(op, [one, result])
    return [result]


def _exp(op, inputs):
    """e^re (cos im + i sin im) as C99's cexp in glibc: a real part above t = 88 (f32) or
    709 (f64) is brought down by up to two factors e^t multiplied into cos and sin first, so
    a result within range does not overflow on the way; a zero imaginary part stays exactly
    that zero (exp(inf + 0i) is inf + 0i, not inf + NaN i)."""
    (z,) = map(_parts, inputs)
    dtype = z.re.type.dtype.numpy
    t = 88 if z.re.type.dtype == DType.f32 else 709
    threshold, e_t = P.full(t, z.re.type), P.full(np.exp(dtype.type(t)), z.re.type)
    one = P.full(1, z.re.type)
    cos, sin, re = P.cos(z.im), P.sin(z.im), z.re
    for _ in range(2):
        above = P.gt(re, threshold)
        re = P.select(above, P.sub(re, threshold), re)
        factor = P.select(above, e_t, one)
        cos, sin = P.mul(cos, factor), P.mul(sin, factor)
    scale = P.select(P.gt(re, threshold), P.full(np.finfo(dtype).max, z.re.type), P.exp(re))
    zero = _zeros_like(z.im)
    im = P.select(P.eq(z.im, zero), z.im, P.mul(scale, sin))
    re = P.mul(scale, cos)
    # An infinite real part with an infinite or NaN imaginary part: C99 (glibc, so NumPy)
    # gives 0 + i copysign(0, im) for -inf and inf + i NaN for +inf, where cos and sin
    # of im are NaN.
    infinity = P.full(np.inf, z.re.type)
    im_not_finite = P.logical_not(P.lt(P.absolute(z.im), infinity))
    to_zero = P.logical_and(P.eq(z.re, P.neg(infinity)), im_not_finite)
    to_infinity = P.logical_and(P.eq(z.re, infinity), im_not_finite)
    signed_zero = P.select(signbit(z.im), P.full(-0.0, z.im.type), zero)
    re = P.select(to_zero, zero, P.select(to_infinity, infinity, re))
    im = P.select(to_zero, signed_zero, P.select(to_infinity, P.full(np.nan, z.im.type), im))
    return [Parts(re, im)]


def _log(op, inputs):
    """log|z| + i arg z, with log1p((re - 1)(re + 1) + im^2) / 2 for |z| in [0.5, 2], where
    log(hypot) would lose the digits of a modulus near 1 (C99's clog does the same)."""
    (z,) = map(_parts, inputs)
    modulus = P.hypot(z.re, z.im)
    one = P.full(1, z.re.type)
    near_one = P.logical_and(P.ge(modulus, P.full(0.5, z.re.type)), P.le(modulus, P.full(2, z.re.type)))
    squares_minus_one = P.add(P.mul(P.sub(z.re, one), P.add(z.re, one)), P.mul(z.im, z.im))
    near = P.mul(P.full(0.5, z.re.type), P.log1p(squares_minus_one))
    return [Parts(P.select(near_one, near, P.log(modulus)), P.arctan2(z.im, z.re))]


def _sqrt(op, inputs):
    """The principal square root by C99's csqrt formulas: the larger part from
    sqrt((|re| + |z|) / 2), the other by a division, so no cancellation; sqrt(0 +- 0i) is
    0 +- 0i, an infinite imaginary part gives inf with that part."""
    (z,) = map(_parts, inputs)
    half, zero = P.full(0.5, z.re.type), _zeros_like(z.re)
    modulus = P.hypot(z.re, z.im)
    big = P.sqrt(P.mul(half, P.add(modulus, P.absolute(z.re))))
    small = P.mul(half, P.div(z.im, big))
    negative_im = P.lt(P.div(P.full(1, z.im.type), z.im), zero)           # -0.0 counts as negative
    positive_re = P.ge(z.re, zero)
    re = P.select(positive_re, big, P.absolute(small))
    im = P.select(positive_re, small, P.select(negative_im, P.neg(big), big))
    is_zero = P.logical_and(P.eq(z.re, zero), P.eq(z.im, zero))
    infinite_im = P.eq(P.absolute(z.im), P.full(np.inf, z.im.type))
    re = P.select(infinite_im, P.full(np.inf, z.re.type), P.select(is_zero, zero, re))
    im = P.select(P.logical_or(infinite_im, is_zero), z.im, im)
    return [Parts(re, im)]


def _eq(op, inputs):
    a, b = map(_parts, inputs)
    return [P.logical_and(P.eq(a.re, b.re), P.eq(a.im, b.im))]


def _ne(op, inputs):
    a, b = map(_parts, inputs)
    return [P.logical_or(P.ne(a.re, b.re), P.ne(a.im, b.im))]


def _select(op, inputs):
    pred, on_true, on_false = inputs[0], _parts(inputs[1]), _parts(inputs[2])
    return [Parts(P.select(pred, on_true.re, on_false.re), P.select(pred, on_true.im, on_false.im))]


def _dot_general(op, inputs):
    """(ar + i ai)(br + i bi) summed: four real products (NumPy calls BLAS's zgemm, which
    rounds differently: a few ulp of the result's magnitude apart)."""
    a, b = map(_parts, inputs)

    def dot(x, y):
        return current_builder().create(op.opdef, [x, y], op.attrs).results[0]
    return [Parts(P.sub(dot(a.re, b.re), dot(a.im, b.im)), P.add(dot(a.re, b.im), dot(a.im, b.re)))]


def _real(op, inputs):
    return [inputs[0].re]


def _imag(op, inputs):
    return [inputs[0].im]


def _conj(op, inputs):
    return [Parts(inputs[0].re, P.neg(inputs[0].im))]


def _make_complex(op, inputs):
    return [Parts(inputs[0], inputs[1])]


def _view_as_real(op, inputs):
    return [_interleaved(inputs[0])]


def _view_as_complex(op, inputs):
    return [_sliced(inputs[0])]


RULES: dict[str, Callable] = {
    "constant": _constant, "convert": _convert, "add": _add, "sub": _sub, "neg": _neg, "mul": _mul,
    "div": _div, "integer_pow": _integer_pow, "exp": _exp, "log": _log, "sqrt": _sqrt, "safe_mul": _strong_zero(_mul), "safe_div": _strong_zero(_div), "eq": _eq, "ne": _ne, "select": _select, "dot_general": _dot_general,
    "real": _real, "imag": _imag, "conj": _conj, "complex": _make_complex,
    "view_as_real": _view_as_real, "view_as_complex": _view_as_complex,
    **{name: _same_op_on_parts for name in ("stop_gradient", "broadcast_in_dim", "reshape", "transpose", "slice",
                                            "pad", "rev", "concatenate", "reduce_sum")},
}
"""One rule per primitive that takes complex values: `rule(op, inputs)` with complex
inputs as `Parts`, returning one entry per result (`Parts` for a complex result)."""


# --------------------------------------------------------------------------- the boundary

def _split(x: Value) -> Parts:
    """A complex argument's parts, read from its bytes (view_as_real, then one slice each)."""
    return _sliced(C.view_as_real(x))


def _sliced(floats: Value) -> Parts:
    """The parts of (re, im) pairs on the last axis."""
    shape = floats.type.shape[:-1]
    ones = (1,) * len(shape)

    def part(k: int) -> Value:
        sliced = P.static_slice(floats, (0,) * len(shape) + (k,), shape + (k + 1,), ones + (1,))
        return P.reshape(sliced, shape)
    return Parts(part(0), part(1))


def _join(x: Parts) -> Value:
    """The complex value with these parts: interleaved, then reinterpreted."""
    return C.view_as_complex(_interleaved(x))


def _interleaved(x: Parts) -> Value:
    shape = x.re.type.shape
    return P.concatenate([P.reshape(x.re, shape + (1,)), P.reshape(x.im, shape + (1,))], len(shape))


class _ComplexLowering(Rewriter):
    def rule_for(self, op: Operation):
        touches = any(_is_complex(v) for v in (*op.operands, *op.results))
        if not touches:
            return None
        if op.regions:
            raise UnsupportedOperationError(
                f"complex values in {op.name} (control flow, checkpoints, calls) are not supported yet", op.loc)
        rule = RULES.get(op.name)
        if rule is None:
            raise UnsupportedOperationError(f"{op.name} has no complex-number lowering", op.loc)
        return lambda rewriter, op, inputs: rule(op, inputs)


@dataclass(frozen=True)
class LowerComplex(FunctionPass):
    """Complex values -> pairs of real values (see the module docstring)."""

    name = "lower-complex"

    def run(self, fn: Function) -> Function:
        if not any(_is_complex(v) for v in (*fn.args, *fn.outputs)) and not any(
                _is_complex(r) for op in fn.walk() for r in op.results):
            return fn
        new_fn, builder = new_function(fn.name, fn.input_types)
        rewriter = _ComplexLowering()
        with builder:
            args = [_split(a) if _is_complex(a) else a for a in new_fn.args]
            outs = rewriter.run_block(fn.body, args)
            with builder.at(fn.body.terminator.loc):
                builder.ret([_join(o) if isinstance(o, Parts) else o for o in outs])
        return new_fn
