"""The primitive record: one object holding every rule of one primitive.

A `Primitive` is an `OpDef` (jitgrad.ir.core, which lists every rule slot and its
contract) with one result, declared `Trait.PURE` (the one exception, `index_check`,
declares `Trait.HAS_SIDE_EFFECT`: its effect is the error it raises for an index out of
bounds, which must happen even when nothing reads the indexing), and a NumPy reference
`impl`. Its other
rules are declared right after it, mostly through the helpers at the end of this module:

  defjvp(prim, rule_0, rule_1, ...)    per-operand JVP contributions rule_i(t_i, *primals)
  defjvp2(prim, rule_0, ...)           the same, with the primal output: rule_i(t_i, ans, *primals)
  defjvp_zero(prim)                    piecewise-constant: every tangent is zero
  deflinear(prim, transpose)           linear in all operands: the JVP applies prim to the
                                       tangents; declares `Trait.LINEAR`
  deftranspose(prim, transpose, ops)   a transpose for the operands it is linear in (div's
                                       numerator, select's branches); declares `Trait.LINEAR`
  defbilinear(prim, lhs, rhs)          linear in each operand separately (mul, dot_general):
                                       JVP and transpose from the two rules; `Trait.BILINEAR`

`lowering` is a target-neutral description of the generated code (`Elementwise`, `Gather`,
`Scatter`, `Alias`, `Reduction`, `Contraction`, `Constant`) that every backend turns into
loops. Reverse mode is linearize + transpose, so only linear primitives have `transpose`;
the tests fail for any primitive missing a rule it needs or declaring linearity it lacks.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from jitgrad.errors import DTypeError, MissingRuleError, ShapeError
from jitgrad.ir import DType, OpDef, TensorType, Trait, Value, current_builder, emit


class Primitive(OpDef):
    """A differentiable operation of the IR, with all its rules."""

    def __init__(self, name: str, infer, impl: Callable, *, doc: str = "",
                 traits: Iterable[Trait] = (Trait.PURE,), num_results: int = 1):
        super().__init__(name, _refusing_complex(self, infer) if infer is not None else None,
                         traits=traits, num_results=num_results, doc=doc)
        self.impl = impl
        self.complex_ready = False
        """Whether every rule of this primitive (shape/dtype, impl, lowering through
        `passes/lower_complex.py`) handles complex operands and results; until a module
        sets it, the shape/dtype rule refuses complex types with a `DTypeError` naming the
        primitive, so no rule ever meets a complex value it would get wrong."""

    def bind(self, *operands: Value, **attrs) -> Value | list[Value]:
        """Emit this primitive into the active builder and return its result (the list of
        them for a primitive with several)."""
        return emit(self, *operands, **attrs)


def _refusing_complex(prim: "Primitive", infer):
    """`infer`, raising a `DTypeError` for complex operand or result types while the
    primitive is not `complex_ready` (looked up at call time, so a module declaring complex
    support after the record is built takes effect)."""
    def checked(*types: TensorType, **attrs):
        results = infer(*types, **attrs)
        if not prim.complex_ready and any(
                t.dtype.is_complex for t in (*types, *results) if isinstance(t, TensorType)):
            raise DTypeError(f"{prim.name} does not support complex numbers yet (operand types "
                             f"{', '.join(str(t) for t in types)})")
        return results
    checked.__name__ = getattr(infer, "__name__", "infer")
    checked.__doc__ = infer.__doc__
    return checked


class _Primitives(Mapping):
    """`Primitive.all`: the primitives among `OpDef.registry` (the one registry), by name."""

    def __getitem__(self, name: str) -> Primitive:
        opdef = OpDef.registry[name]
        if not isinstance(opdef, Primitive):
            raise KeyError(name)
        return opdef

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, opdef in OpDef.registry.items() if isinstance(opdef, Primitive)])

    def __len__(self) -> int:
        return sum(isinstance(opdef, Primitive) for opdef in OpDef.registry.values())


Primitive.all = _Primitives()


# --------------------------------------------------------------------------- AD markers

@dataclass(frozen=True)
class Zero:
    """A symbolic zero tangent/cotangent of the given type: never materialized
    unless a rule needs it (`instantiate`)."""

    type: TensorType


@dataclass(frozen=True)
class UndefinedPrimal:
    """Marks the operand a linear op is being transposed with respect to."""

    type: TensorType


# --------------------------------------------------------------------------- lowering kinds

@dataclass(frozen=True)
class Elementwise:
    """`scalar(ctx, *scalars, **attrs)` computes one output element from the operands'
    elements at the same index; `ctx` is the backend's scalar emitter (the work of one
    element is the record's `cost`, not part of this description). An `indexed` rule also receives
    the element's row-major position in the result (a 64-bit integer, before the operands):
    `scalar(ctx, index, *scalars, **attrs)`, for values that are a function of where they
    are (counter-based random numbers); its operands must then be scalars (0-d)."""

    scalar: Callable
    indexed: bool = False


@dataclass(frozen=True)
class Gather:
    """out[i] = operand[index_map(ctx, i, in_type, out_type, **attrs)] for a one-operand
    data-movement op; `index_map` maps an output multi-index to an input multi-index."""

    index_map: Callable


@dataclass(frozen=True)
class Scatter:
    """out = zeros; then for each operand k and each of its indices j:
    out[place(ctx, k, j, operand_types, out_type, **attrs)] = operand_k[j]."""

    place: Callable


@dataclass(frozen=True)
class Alias:
    """The result is the operand's buffer reinterpreted (row-major reshape): no code."""


@dataclass(frozen=True)
class Reduction:
    """Reduce over `attrs['axes']`: acc = init(dtype); acc = combine(ctx, acc, x)."""

    init: Callable[[DType], float]
    combine: Callable


@dataclass(frozen=True)
class Contraction:
    """dot_general: a batched matrix product, lowered to a GEMM kernel or BLAS."""


@dataclass(frozen=True)
class Constant:
    """A compile-time array stored in the generated module."""


# --------------------------------------------------------------------------- rule helpers

def emit_named(name: str, *operands: Value, **attrs) -> Value | list[Value]:
    """Emit the op registered as `name` into the active builder.

    The helpers below emit `add` and zeros, and a family's rules emit ops of a family
    that builds on theirs (the transpose of a broadcast is a sum, that of a sum a
    broadcast): they name the op in the one registry instead of importing the module
    that defines it, which imports this one (or theirs). Rules run only after
    `jitgrad.primitives` has registered every op."""
    opdef = OpDef.registry.get(name)
    if opdef is None:
        raise MissingRuleError(f"a rule emits op {name!r}, which is not registered: import jitgrad.primitives "
                               "before running rules", op=name)
    return emit(opdef, *operands, **attrs)


def zeros(result_type: TensorType) -> Value:
    """An array of `result_type` filled with zeros: a 0-d constant broadcast to the shape
    (what structural.full(0, result_type) emits)."""
    array = np.zeros((), result_type.dtype.numpy)
    array.setflags(write=False)
    scalar = emit_named("constant", value=array)
    if result_type.shape == ():
        return scalar
    return emit_named("broadcast_in_dim", scalar, shape=tuple(result_type.shape), broadcast_dimensions=())


def instantiate(x) -> Value:
    """A concrete value for a tangent that may be symbolic `Zero`."""
    if isinstance(x, Zero):
        return zeros(x.type)
    return x


def add_tangents(a, b):
    """Sum of two tangents, skipping symbolic zeros."""
    if isinstance(a, Zero):
        return b
    if isinstance(b, Zero):
        return a
    return emit_named("add", a, b)


def _output_type(prim: OpDef, primals, attrs) -> TensorType:
    return prim.infer(*[p.type for p in primals], **attrs)[0]


def defjvp(prim: Primitive, *rules: Optional[Callable]) -> None:
    """Per-operand JVP rules: rule_i(t_i, *primals, **attrs) is the contribution of
    operand i's tangent; `None` marks an operand with no tangent contribution."""

    def jvp(primals, tangents, **attrs):
        out = Zero(_output_type(prim, primals, attrs))
        for rule, t in zip(rules, tangents, strict=True):
            if rule is not None and not isinstance(t, Zero):
                out = add_tangents(out, rule(t, *primals, **attrs))
        return out

    prim.jvp = jvp


def defjvp2(prim: Primitive, *rules: Optional[Callable]) -> None:
    """Per-operand JVP rules that read the primal output `ans` (exp, tanh, sqrt ...):
    rule_i(t_i, ans, *primals, **attrs). The rule emits the primal op itself (a `jvp_op`),
    so `ans` is the very value the differentiated program computes."""

    def jvp_op(op, primals, tangents):
        (ans,) = current_builder().create(prim, primals, op.attrs, result_types=[r.type for r in op.results]).results
        out = Zero(ans.type)
        for rule, t in zip(rules, tangents, strict=True):
            if rule is not None and not isinstance(t, Zero):
                out = add_tangents(out, rule(t, ans, *primals, **op.attrs))
        return [ans], [out]

    prim.jvp_op = jvp_op


def defjvp_zero(prim: Primitive) -> None:
    """The output does not change to first order (comparisons, sign, integer ops)."""

    def jvp(primals, tangents, **attrs):
        return Zero(_output_type(prim, primals, attrs))

    prim.jvp = jvp


def deftranspose(prim: Primitive, transpose: Callable, linear_operands: Optional[Sequence[int]] = None) -> None:
    """Declare `prim` linear in `linear_operands` (all when None), the others held fixed,
    with `transpose(ct, *operands, **attrs)` its transpose rule."""
    prim.transpose = transpose
    prim.linear_operands = tuple(linear_operands) if linear_operands is not None else None
    prim.declare(Trait.LINEAR)


def deflinear(prim: Primitive, transpose: Callable) -> None:
    """A primitive linear in all its operands: JVP applies it to the tangents."""

    def jvp(primals, tangents, **attrs):
        if all(isinstance(t, Zero) for t in tangents):
            return Zero(_output_type(prim, primals, attrs))
        return prim.bind(*[instantiate(t) for t in tangents], **attrs)

    prim.jvp = jvp
    deftranspose(prim, transpose)


def defbilinear(prim: Primitive, lhs_rule: Callable, rhs_rule: Callable,
                product: Optional[Callable] = None) -> None:
    """A primitive of two operands, linear in each while the other is held fixed (JAX's
    defbilinear). `lhs_rule(ct, x, y, **attrs)` is the cotangent of x for a given y, and
    `rhs_rule(ct, x, y, **attrs)` that of y; the JVP is product(t_x, y) + product(x, t_y),
    where `product(a, b, **attrs)` is the primitive itself unless given (mul's JVP uses
    the strong-zero product, so that 0 * inf stays 0 in tangents)."""
    product = product or prim.bind
    defjvp(prim, lambda t, x, y, **attrs: product(t, y, **attrs), lambda t, x, y, **attrs: product(x, t, **attrs))

    def transpose(ct, x, y, **attrs):
        if isinstance(x, UndefinedPrimal) and isinstance(y, UndefinedPrimal):
            raise ValueError(f"{prim.name} is not linear in both operands at once")
        if isinstance(x, UndefinedPrimal):
            return [lhs_rule(ct, x, y, **attrs), None]
        return [None, rhs_rule(ct, x, y, **attrs)]

    prim.transpose = transpose
    prim.declare(Trait.BILINEAR)


def check_same_shapes(name: str, *types: TensorType) -> None:
    shapes = {t.shape for t in types}
    if len(shapes) > 1:
        raise ShapeError(f"{name}: operand shapes {' and '.join(str(t.shape) for t in types)} differ")


def check_same_dtypes(name: str, *types: TensorType) -> None:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise DTypeError(f"{name}: operand dtypes {', '.join(str(t.dtype) for t in types)} differ")
