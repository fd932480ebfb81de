"""The primitive record: one object holding every rule of one primitive.

A `Primitive` is an `OpDef` plus
  - `impl`: the NumPy reference implementation (the interpreter's oracle),
  - `jvp`: the forward-mode rule, `jvp(primals, tangents, **attrs) -> tangent`,
    where a tangent may be the symbolic `Zero`,
  - `transpose`: for primitives linear in some operands,
    `transpose(ct, *operands, **attrs) -> [ct_or_None per operand]`, where the linear
    operands arrive as `UndefinedPrimal` (JAX's convention),
  - `lowering`: a target-neutral description of the generated code (`Elementwise`,
    `Gather`, `Scatter`, `Alias`, `Reduction`, `Contraction`, `Constant`) that every backend
    (CPU now, PTX next) turns into loops.
Reverse mode is linearize + transpose, so only linear primitives need `transpose`;
the tests fail for any primitive missing a rule it needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from jitgrad.errors import DTypeError, ShapeError
from jitgrad.ir import DType, OpDef, TensorType, Value, emit


class Primitive(OpDef):
    """A differentiable operation of the IR, with all its rules."""

    all: dict[str, "Primitive"] = {}

    def __init__(self, name: str, infer, impl: Callable, *, doc: str = ""):
        super().__init__(name, infer, doc=doc)
        self.impl = impl
        self.jvp: Optional[Callable] = None
        self.transpose: Optional[Callable] = None
        self.lowering: Any = None
        Primitive.all[name] = self

    def bind(self, *operands: Value, **attrs) -> Value:
        """Emit this primitive into the active builder and return its result."""
        return emit(self, *operands, **attrs)


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
    elements at the same index; `ctx` is the backend's scalar emitter. `cost` is the work
    of one element relative to an add (a math-library call: 16), which backends use to
    decide when a loop is worth running on several cores. An `indexed` rule also receives
    the element's row-major position in the result (a 64-bit integer, before the operands):
    `scalar(ctx, index, *scalars, **attrs)`, for values that are a function of where they
    are (counter-based random numbers); its operands must then be scalars (0-d)."""

    scalar: Callable
    cost: int = 1
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

def instantiate(x) -> Value:
    """A concrete value for a tangent that may be symbolic `Zero`."""
    if isinstance(x, Zero):
        from .structural import full
        return full(0, x.type)
    return x


def add_tangents(a, b):
    """Sum of two tangents, skipping symbolic zeros."""
    if isinstance(a, Zero):
        return b
    if isinstance(b, Zero):
        return a
    from .elementwise import add
    return add(a, b)


def defjvp(prim: Primitive, *rules: Optional[Callable]) -> None:
    """Per-operand JVP rules: rule_i(t_i, *primals, **attrs) is the contribution of
    operand i's tangent; `None` marks an operand with no tangent contribution."""

    def jvp(primals, tangents, **attrs):
        out = Zero(prim.infer(*[p.type for p in primals], **attrs)[0])
        for rule, t in zip(rules, tangents, strict=True):
            if rule is not None and not isinstance(t, Zero):
                out = add_tangents(out, rule(t, *primals, **attrs))
        return out

    prim.jvp = jvp


def defjvp_zero(prim: Primitive) -> None:
    """The output does not change to first order (comparisons, sign, integer ops)."""

    def jvp(primals, tangents, **attrs):
        return Zero(prim.infer(*[p.type for p in primals], **attrs)[0])

    prim.jvp = jvp


def deflinear(prim: Primitive, transpose: Callable) -> None:
    """A primitive linear in all its operands: JVP applies it to the tangents."""

    def jvp(primals, tangents, **attrs):
        if all(isinstance(t, Zero) for t in tangents):
            return Zero(prim.infer(*[p.type for p in primals], **attrs)[0])
        return prim.bind(*[instantiate(t) for t in tangents], **attrs)

    prim.jvp = jvp
    prim.transpose = transpose


def check_same_shapes(name: str, *types: TensorType) -> None:
    shapes = {t.shape for t in types}
    if len(shapes) > 1:
        raise ShapeError(f"{name}: operand shapes {' and '.join(str(t.shape) for t in types)} differ")


def check_same_dtypes(name: str, *types: TensorType) -> None:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise DTypeError(f"{name}: operand dtypes {', '.join(str(t.dtype) for t in types)} differ")
