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
reinterpreted (`view_as_complex`). Complex values crossing the boundary of a region
(control flow, checkpoints) cross it packed the same way (see `_ComplexLowering`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import UnsupportedOperationError
from jitgrad.ir import (Block, Builder, DType, Function, Operation, Region, TensorType, Value, current_builder,
                        new_function)
from jitgrad.ir.rewrite import Rewriter
from jitgrad.primitives import complex_numbers as C
from jitgrad.primitives.cumulative import shift_along
from jitgrad.primitives.lapack import INTERLEAVED_COMPLEX
from . import complex_elementary as E
from .complex_elementary import Parts
from .manager import FunctionPass

_parts = E.parts
_zeros_like = E.zeros_like



def _is_complex(v: Value) -> bool:
    return v.type.dtype.is_complex


# --------------------------------------------------------------------------- rules

def _same_op_on_parts(op: Operation, inputs) -> list[Parts]:
    """Linear data movement and sums (broadcast, reshape, slice, concatenate, reduce_sum,
    ...): the op applied to the real parts and to the imaginary parts."""
    operands = [_parts(x) for x in inputs]
    re = current_builder().create(op.opdef, [p.re for p in operands], op.attrs).results[0]
    im = current_builder().create(op.opdef, [p.im for p in operands], op.attrs).results[0]
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
            return [_either_part_nonzero(x)]
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


def _elementwise(function: Callable[..., Parts]):
    """The rule of an elementwise op computed by `function` of the operands' parts."""
    def rule(op, inputs):
        return [function(*map(_parts, inputs))]
    return rule


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
        out = product(a, b)
        zero = _zeros_like(out.re)
        return [Parts(P.select(live, out.re, zero), P.select(live, out.im, zero))]
    return rule


def _integer_pow(op, inputs):
    """z ** n by binary powering (NumPy's small-integer complex power); n < 0 is 1 / z ** -n."""
    (z,) = map(_parts, inputs)
    return [E.integer_power(z, op.attrs["y"])]


def _eq(op, inputs):
    a, b = map(_parts, inputs)
    return [P.logical_and(P.eq(a.re, b.re), P.eq(a.im, b.im))]


def _ne(op, inputs):
    a, b = map(_parts, inputs)
    return [P.logical_or(P.ne(a.re, b.re), P.ne(a.im, b.im))]


def _ordered(a: Parts, b: Parts, name: str) -> Value:
    """NumPy's lexicographic order of complex numbers (its CLT/CLE/CGT/CGE macros): by the
    real parts where the imaginary parts are not NaN, then by the imaginary parts where the
    real parts are equal."""
    compare = {"lt": P.lt, "le": P.le, "gt": P.gt, "ge": P.ge}[name]
    strict = {"le": P.lt, "ge": P.gt}.get(name, compare)
    no_nan = P.logical_and(P.eq(a.im, a.im), P.eq(b.im, b.im))
    by_real = P.logical_and(strict(a.re, b.re), no_nan)
    return P.logical_or(by_real, P.logical_and(P.eq(a.re, b.re), compare(a.im, b.im)))


def _comparison(op, inputs):
    a, b = map(_parts, inputs)
    return [_ordered(a, b, op.name)]


def _extremum(op, inputs):
    """NumPy's complex maximum / minimum: the first operand where it is >= (<=) the second
    or has a NaN part, else the second (so a NaN in either operand propagates)."""
    a, b = map(_parts, inputs)
    keeps_first = _ordered(a, b, "ge" if op.name == "maximum" else "le")
    keeps_first = P.logical_or(keeps_first, P.logical_or(P.ne(a.re, a.re), P.ne(a.im, a.im)))
    return [Parts(P.select(keeps_first, a.re, b.re), P.select(keeps_first, a.im, b.im))]


def _reduce_extremum(op, inputs):
    """NumPy's complex max / min reduction (maximum.reduce, in order): the lexicographic
    extremum of the elements without NaN parts, or, where the reduced elements hold a NaN
    part, the first of those (whole, both parts), as the sequential reduction keeps it."""
    (z,), axes = map(_parts, inputs), op.attrs["axes"]
    largest = op.name == "reduce_max"
    reduce = P.reduce_max if largest else P.reduce_min
    shape = z.re.type.shape
    kept = tuple(k for k in range(len(shape)) if k not in axes)

    def spread(v):
        return P.broadcast_in_dim(v, shape, kept)
    fill = P.full(-np.inf if largest else np.inf, z.re.type)
    lowest = P.full(-np.inf, z.re.type)
    has_nan = P.logical_or(P.ne(z.re, z.re), P.ne(z.im, z.im))
    best_re = reduce(P.select(has_nan, fill, z.re), axes)
    candidate = P.logical_and(P.eq(z.re, spread(best_re)), P.logical_not(has_nan))
    best_im = reduce(P.select(candidate, z.im, fill), axes)
    reduced_shape = tuple(shape[a] for a in axes)
    count = int(np.prod(reduced_shape, dtype=np.int64))
    positions = P.broadcast_in_dim(P.constant(np.arange(count, dtype=np.int64).reshape(reduced_shape)), shape, axes)
    beyond = P.full(count, positions.type)
    first_nan = P.reduce_min(P.select(has_nan, positions, beyond), axes)
    at_first_nan = P.eq(positions, spread(first_nan))
    nan_re = P.reduce_max(P.select(at_first_nan, z.re, lowest), axes)
    nan_im = P.reduce_max(P.select(at_first_nan, z.im, lowest), axes)
    any_nan = P.lt(first_nan, P.full(count, first_nan.type))
    return [Parts(P.select(any_nan, nan_re, best_re), P.select(any_nan, nan_im, best_im))]


def _cumulative_product(op, inputs):
    """Running complex products by a Hillis-Steele scan: log2(n) steps, each multiplying
    an element by the running product `shift` places before it (NumPy multiplies one
    element at a time: a few ulp apart). Places with nothing before them keep their value
    (a product with 1 + 0i would turn an infinite part's partner into NaN)."""
    (z,), axis, reverse = map(_parts, inputs), op.attrs["axis"], op.attrs["reverse"]
    shape = z.re.type.shape
    n = shape[axis]
    positions = P.broadcast_in_dim(P.constant(np.arange(n, dtype=np.int64)), shape, (axis,))
    if reverse:
        positions = P.sub(P.full(n - 1, positions.type), positions)
    shift = 1
    while shift < n:
        before = Parts(shift_along(z.re, axis, shift, reverse, 1), shift_along(z.im, axis, shift, reverse, 0))
        has_before = P.ge(positions, P.full(shift, positions.type))
        z = E.select_parts(has_before, E.product(before, z), z)
        shift *= 2
    return [z]


def _linear_in_complex_operands(op, inputs):
    """Gathers, scatters and cumulative sums: the op applied to the real parts and to the
    imaginary parts of its complex operands, its index operands shared."""
    def operands(part):
        return [getattr(_parts(x), part) if isinstance(x, Parts) or x.type.dtype.is_inexact else x for x in inputs]
    re = current_builder().create(op.opdef, operands("re"), op.attrs).results[0]
    im = current_builder().create(op.opdef, operands("im"), op.attrs).results[0]
    return [Parts(re, im)]


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


def _interleaved_call(op, inputs):
    """A LAPACK call on complex matrices keeps them complex: LAPACK's z/c routines read and
    write NumPy's interleaved (re, im) layout, which no pair of real arrays can stand for
    without a copy, so the parts are interleaved before the call (the same bytes as the
    complex array, reinterpreted) and each complex result is read back as its parts. The
    kernel sees complex buffers only as memory it hands to LAPACK, never as arithmetic."""
    operands = [_join(x) if isinstance(x, Parts) else x for x in inputs]
    results = current_builder().create(op.opdef, operands, op.attrs).results
    return [_split(r) if _is_complex(r) else r for r in results]


RULES: dict[str, Callable] = {
    "constant": _constant, "convert": _convert, "add": _add, "sub": _sub, "neg": _neg,
    "mul": _elementwise(E.ufunc_product), "div": _elementwise(E.quotient), "integer_pow": _integer_pow,
    "safe_mul": _strong_zero(E.product), "safe_div": _strong_zero(E.quotient),
    "eq": _eq, "ne": _ne, "select": _select, "dot_general": _dot_general,
    **{name: _comparison for name in ("lt", "le", "gt", "ge")}, "maximum": _extremum, "minimum": _extremum,
    "reduce_max": _reduce_extremum, "reduce_min": _reduce_extremum, "cumprod": _cumulative_product,
    **{name: _linear_in_complex_operands for name in ("gather", "scatter_add", "scatter", "cumsum")},
    "real": _real, "imag": _imag, "conj": _conj, "complex": _make_complex,
    "view_as_real": _view_as_real, "view_as_complex": _view_as_complex,
    **{name: _interleaved_call for name in INTERLEAVED_COMPLEX},
    **{name: _elementwise(getattr(E, name)) for name in (
        "exp", "log", "sqrt", "exp2", "expm1", "log2", "log10", "log1p", "sin", "cos", "tan", "sinh", "cosh",
        "tanh", "sign")},
    "pow": _elementwise(E.power),
    **{prim: _elementwise(getattr(E, function)) for prim, function in (
        ("asin", "arcsin"), ("acos", "arccos"), ("atan", "arctan"), ("asinh", "arcsinh"), ("acosh", "arccosh"),
        ("atanh", "arctanh"))},
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


def _packed_type(t: TensorType) -> TensorType:
    """A complex type as its (re, im) pairs on a new last axis (c128[3] -> f64[3, 2])."""
    return TensorType((*t.shape, 2), t.dtype.real_dtype) if t.dtype.is_complex else t


def _packed(x):
    return _interleaved(x) if isinstance(x, Parts) else x


class _ComplexLowering(Rewriter):
    """The rules of `RULES`; an op with regions (control flow, checkpoints, calls) whose
    operands, results or block arguments are complex carries each complex value across
    its region boundaries packed as (re, im) pairs on a last axis of 2: its operands and
    its blocks' yields are packed, its block arguments and results unpacked into parts.
    Region ops relate operands, block arguments and results by position only (their
    attributes count them), so the packed op has the same structure in real types."""

    def rule_for(self, op: Operation):
        touches = any(_is_complex(v) for v in (*op.operands, *op.results))
        if op.regions:
            crosses = touches or any(_is_complex(a) for region in op.regions for block in region.blocks
                                     for a in (*block.args, *block.terminator.operands))
            return self._packed_region_op if crosses else None
        if not touches:
            return None
        rule = RULES.get(op.name)
        if rule is None:
            raise UnsupportedOperationError(f"{op.name} has no complex-number lowering", op.loc)
        return lambda rewriter, op, inputs: rule(op, inputs)

    def _packed_region_op(self, rewriter, op: Operation, inputs) -> list:
        regions = [self._packed_region(op, region) for region in op.regions]
        new = current_builder().create(op.opdef, [_packed(x) for x in inputs], op.attrs, regions=regions,
                                       result_types=[_packed_type(r.type) for r in op.results])
        return [_sliced(new_result) if _is_complex(old) else new_result
                for new_result, old in zip(new.results, op.results, strict=True)]

    def _packed_region(self, op: Operation, region: Region) -> Region:
        blocks = []
        with self.entering(op, region):
            for block in region.blocks:
                builder = Builder(Block())
                args = [builder.add_arg(_packed_type(a.type)) for a in block.args]
                with builder:
                    outs = self.run_block(block, [_sliced(new) if _is_complex(old) else new
                                                  for new, old in zip(args, block.args, strict=True)])
                    term = block.terminator
                    with builder.at(term.loc):
                        builder.create(term.opdef, [_packed(o) for o in outs], term.attrs)
                blocks.append(builder.block)
        return Region(blocks)


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
