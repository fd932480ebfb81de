"""Cleanup passes: algebraic simplification, constant folding, CSE and dead-code elimination.

Differentiation leaves a lot to clean up: JVP rules multiply by instantiated ones
(`integer_pow(x, 1)`, `x * 1`), transposes chain (`transpose(transpose(x))`), the
reverse pass recomputes primal values its rules need (`tanh(x)` twice), and symbolic
zeros that had to be materialized feed `add`s. Each pass here removes one kind of
waste and returns a new function (the input is never mutated).

All primitives are pure, which is what makes CSE and DCE sound. Floating-point
rewrites are exact, the sign of a zero included: `x + 0 -> x` only for a -0.0 (or an
integer zero), since -0.0 + 0.0 is +0.0; `0 - x -> neg(x)` only for -0.0; `x - 0 -> x`
only for +0.0. Rewrites that are wrong for inf/NaN (`x * 0 -> 0`, `x - x -> 0`) are
applied to integers only, or not at all.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Optional, Sequence, Union

import numpy as np

from jitgrad.errors import JitgradError
from jitgrad.ir import Function, Operation, TensorType, Value, current_builder
from jitgrad.primitives import Elementwise, Primitive, constant, full
from jitgrad.primitives.elementwise import mul_p, neg_p
from jitgrad.primitives.structural import broadcast_in_dim_p, constant_p, reshape_p, transpose_p
from jitgrad.ir.rewrite import Rewriter, is_pure, live_ops
from .manager import FunctionPass, rewrite_function

# --------------------------------------------------------------------------- constants seen through views

_SPLAT_PRESERVING = ("broadcast_in_dim", "reshape", "transpose")


def _constant_elements(v: Value) -> Optional[np.ndarray]:
    """The elements of `v` when it is a `constant` op seen through broadcasts, reshapes and
    transposes (which keep a splat a splat), else None."""
    op = v.defining_op
    while op is not None and op.name in _SPLAT_PRESERVING:
        op = op.operands[0].defining_op
    return op.attrs["value"] if op is not None and op.name == "constant" else None


def splat(v: Value) -> Any:
    """The one value all elements of `v` hold, when `v` is a compile-time constant whose
    elements are all equal; otherwise None."""
    array = _constant_elements(v)
    if array is None or array.size == 0:
        return None
    first = array.flat[0]
    return first.item() if np.all(array == first) else None


def is_signed_zero(v: Value, negative: bool) -> bool:
    """Is `v` a constant zero of the given sign (any integer zero)? x + (-0.0) and
    x - (+0.0) are exactly x, and -0.0 - x exactly -x, for every x; with the other sign
    they are not (-0.0 + 0.0 is +0.0)."""
    if not is_const(v, 0):
        return False
    elements = _constant_elements(v)
    if v.dtype.is_complex:             # each part's sign matters: -0.0 + (+0.0 - 0j) is not -0.0 - 0j
        return bool(np.all(np.signbit(elements.real) == negative) and np.all(np.signbit(elements.imag) == negative))
    if not v.dtype.is_float:
        return True
    return bool(np.all(np.signbit(elements) == negative))


def is_const(v: Value, c) -> bool:
    """Is `v` a constant whose elements all equal `c`?"""
    s = splat(v)
    return s is not None and s == c


def producer(v: Value, name: str) -> Optional[Operation]:
    """The op that defines `v`, if it is a `name` op."""
    op = v.defining_op
    return op if op is not None and op.name == name else None


# --------------------------------------------------------------------------- algebraic simplification

@dataclass(eq=False)
class New:
    """An op a rule asks for instead of the one it rewrites. The driver simplifies it
    too before building it, so rules chain in one walk: 0 - neg(x) -> neg(neg(x)) -> x."""

    prim: Primitive
    operands: tuple
    attrs: dict


def new(prim: Primitive, *operands: "Value | New", **attrs) -> New:
    return New(prim, operands, attrs)


Replacement = Union[Value, New]
Rule = Callable[..., Optional[Replacement]]


def _full(value, t: TensorType) -> New:
    """`full(value, t)` as a request: a 0-d constant, broadcast unless t is 0-d."""
    scalar = new(constant_p, value=_frozen(np.array(value, dtype=t.dtype.numpy)))
    return scalar if t.shape == () else new(broadcast_in_dim_p, scalar, shape=t.shape, broadcast_dimensions=())


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _compose_transposes(x, *, permutation):
    """Result axis k of transpose(transpose(y, p), q) is axis p[q[k]] of y."""
    inner = producer(x, "transpose")
    if inner is None:
        return None
    p = inner.attrs["permutation"]
    return new(transpose_p, inner.operands[0], permutation=tuple(p[q] for q in permutation))


def _compose_broadcasts(x, *, shape, broadcast_dimensions):
    """Axis k of y goes to axis d1[k] of the inner result, then to axis d2[d1[k]]."""
    inner = producer(x, "broadcast_in_dim")
    if inner is None:
        return None
    d1 = inner.attrs["broadcast_dimensions"]
    return new(broadcast_in_dim_p, inner.operands[0], shape=tuple(shape),
               broadcast_dimensions=tuple(broadcast_dimensions[d] for d in d1))


def _compose_reshapes(x, *, new_sizes):
    """Reshapes are row-major, so only the last one counts."""
    inner = producer(x, "reshape")
    return new(reshape_p, inner.operands[0], new_sizes=tuple(new_sizes)) if inner is not None else None


def _is_identity_broadcast(x, *, shape, broadcast_dimensions) -> bool:
    return x.shape == tuple(shape) and tuple(broadcast_dimensions) == tuple(range(x.ndim))


def _sum_of_broadcast(x, *, axes):
    """Summing a broadcast over exactly the axes it added (none stretched from size 1)
    adds up `count` copies of its operand: multiply instead of materializing them."""
    inner = producer(x, "broadcast_in_dim")
    if inner is None:
        return None
    y, shape, dims = inner.operands[0], inner.attrs["shape"], inner.attrs["broadcast_dimensions"]
    added = tuple(d for d in range(len(shape)) if d not in dims)
    if tuple(sorted(axes)) != added or any(y.shape[k] != shape[d] for k, d in enumerate(dims)):
        return None
    return new(mul_p, y, _full(math.prod(shape[d] for d in added), y.type))


def _is_int(v: Value) -> bool:
    return not v.dtype.is_float


def _inner_operand(v: Value, name: str) -> Optional[Value]:
    op = producer(v, name)
    return op.operands[0] if op is not None else None


# One rule per line; a rule returns a replacement (an existing value or a `New` op) or
# None. Rules see operands that are already simplified; a replacement whose type differs
# from the rewritten op's is discarded by the driver.
RULES: dict[str, list[Rule]] = {
    "add": [
        lambda x, y: x if is_signed_zero(y, negative=True) else None,          # x + -0 -> x
        lambda x, y: y if is_signed_zero(x, negative=True) else None,          # -0 + x -> x
    ],
    "sub": [
        lambda x, y: x if is_signed_zero(y, negative=False) else None,         # x - +0 -> x
        lambda x, y: new(neg_p, y) if is_signed_zero(x, negative=True) else None,   # -0 - x -> neg(x)
    ],
    "mul": [
        lambda x, y: x if is_const(y, 1) else None,                            # x * 1 -> x
        lambda x, y: y if is_const(x, 1) else None,                            # 1 * x -> x
        lambda x, y: y if is_const(y, 0) and _is_int(x) else None,             # x * 0 -> 0 (ints: no inf/nan)
        lambda x, y: x if is_const(x, 0) and _is_int(y) else None,             # 0 * x -> 0 (ints)
    ],
    "div": [
        lambda x, y: x if is_const(y, 1) else None,                            # x / 1 -> x
    ],
    "safe_mul": [                                                              # strong zero: 0 * inf = 0
        lambda x, y: x if is_const(y, 1) else None,                            # x * 1 -> x
        lambda x, y: y if is_const(x, 1) else None,                            # 1 * x -> x
        lambda x, y: y if is_const(y, 0) else None,                            # x * 0 -> 0
        lambda x, y: x if is_const(x, 0) else None,                            # 0 * x -> 0
    ],
    "safe_div": [
        lambda x, y: x if is_const(y, 1) else None,                            # x / 1 -> x
        lambda x, y: x if is_const(x, 0) else None,                            # 0 / x -> 0
    ],
    "neg": [
        lambda x: _inner_operand(x, "neg"),                                    # neg(neg(x)) -> x
    ],
    "integer_pow": [
        lambda x, *, y: x if y == 1 else None,                                 # x ** 1 -> x
        lambda x, *, y: _full(1, x.type) if y == 0 else None,                  # x ** 0 -> 1 (nan ** 0 is 1 too)
    ],
    "select": [
        lambda p, x, y: x if x is y else None,                                 # select(p, x, x) -> x
        lambda p, x, y: x if is_const(p, True) else None,                      # select(true, x, y) -> x
        lambda p, x, y: y if is_const(p, False) else None,                     # select(false, x, y) -> y
    ],
    "convert": [
        lambda x, *, dtype: x if x.dtype == dtype else None,                   # convert(x: t, t) -> x
    ],
    "transpose": [
        lambda x, *, permutation: x if tuple(permutation) == tuple(range(x.ndim)) else None,  # transpose(x, id) -> x
        _compose_transposes,                                                   # transpose(transpose(x)) -> transpose(x)
    ],
    "reshape": [
        lambda x, *, new_sizes: x if tuple(new_sizes) == x.shape else None,    # reshape(x, x.shape) -> x
        _compose_reshapes,                                                     # reshape(reshape(x)) -> reshape(x)
    ],
    "broadcast_in_dim": [
        lambda x, **attrs: x if _is_identity_broadcast(x, **attrs) else None,  # broadcast(x, x.shape) -> x
        _compose_broadcasts,                                                   # broadcast(broadcast(x)) -> broadcast(x)
    ],
    "reduce_sum": [
        lambda x, *, axes: x if not axes else None,                            # sum(x, ()) -> x
        _sum_of_broadcast,                                                     # sum(broadcast(s)) -> s * count
    ],
}


def _type_of(x: Replacement) -> Optional[TensorType]:
    """The type `x` will have once built; None if the request is ill-typed."""
    if isinstance(x, Value):
        return x.type
    types = [_type_of(o) for o in x.operands]
    if any(t is None for t in types):
        return None
    try:
        return x.prim.infer(*types, **x.attrs)[0]
    except JitgradError:
        return None


def _apply_rules(name: str, operands: list[Value], attrs: dict, result_type: TensorType) -> Optional[Replacement]:
    for rule in RULES.get(name, ()):
        out = rule(*operands, **attrs)
        if out is not None and _type_of(out) == result_type:
            return out
    return None


def _build(x: Replacement) -> Value:
    """Emit a requested op into the active builder, simplifying it first."""
    if isinstance(x, Value):
        return x
    operands = [_build(o) for o in x.operands]
    result_type = x.prim.infer(*[v.type for v in operands], **x.attrs)[0]
    out = _apply_rules(x.prim.name, operands, x.attrs, result_type)
    if out is not None:
        return _build(out)
    return current_builder().create(x.prim, operands, x.attrs).result


def _simplify_op(op: Operation, operands: list[Value]) -> Optional[list[Value]]:
    if op.regions or len(op.results) != 1:
        return None
    out = _apply_rules(op.name, operands, op.attrs, op.result.type)
    return None if out is None else [_build(out)]


@dataclass(frozen=True)
class AlgebraicSimplification(FunctionPass):
    """Applies `RULES` in one forward walk, inside regions too. Values are defined before
    they are used and every rule sees already-simplified operands (and replacements are
    simplified before they are built), so one walk reaches the fixpoint. Ops it bypasses
    are left for DCE."""

    name: ClassVar[str] = "algebra"

    def run(self, fn: Function) -> Function:
        return rewrite_function(fn, _simplify_op)


# --------------------------------------------------------------------------- constant folding

def _is_folded(v: Value) -> bool:
    """Produced by a `constant`, or a broadcast of one: known at compile time."""
    op = v.defining_op
    while op is not None and op.name == "broadcast_in_dim":
        op = op.operands[0].defining_op
    return op is not None and op.name == "constant"


def _array(v: Value) -> np.ndarray:
    op = v.defining_op
    if op.name == "constant":
        return op.attrs["value"]
    return op.opdef.impl(_array(op.operands[0]), **op.attrs)


def _evaluate(prim: Primitive, arrays: list[np.ndarray], attrs: dict, t: TensorType) -> Optional[np.ndarray]:
    """The primitive's reference impl on constants (as the interpreter runs it), or None
    if it does not give exactly type `t`."""
    with np.errstate(all="ignore"):
        out = np.asarray(prim.impl(*arrays, **attrs))
    return out if out.shape == t.shape and out.dtype == t.dtype.numpy else None


@dataclass(frozen=True)
class ConstantFolding(FunctionPass):
    """Evaluates ops whose operands are all constants (or broadcasts of constants).

    An elementwise op on splats is folded at any size, to a broadcast 0-d constant.
    Anything else is folded only if its result has at most `max_elements` elements and
    its operands at most `max_input_elements`: folding must never put a big array into
    the compiled module, nor spend compile time computing one. A broadcast of a 0-d
    constant is the canonical splat and is never expanded. Ops with regions are copied,
    their bodies folded the same way.
    """

    name: ClassVar[str] = "fold"
    max_elements: int = 64
    max_input_elements: int = 4096

    def run(self, fn: Function) -> Function:
        return rewrite_function(fn, self._fold)

    def _fold(self, op: Operation, operands: list[Value]) -> Optional[list[Value]]:
        prim = op.opdef
        if op.regions or not operands or len(op.results) != 1 or not isinstance(prim, Primitive):
            return None
        if not all(_is_folded(v) for v in operands):
            return None
        out_type = op.result.type
        if isinstance(prim.lowering, Elementwise):
            scalars = [splat(v) for v in operands]
            if all(s is not None for s in scalars):
                arrays = [np.asarray(s, dtype=v.dtype.numpy) for s, v in zip(scalars, operands, strict=True)]
                value = _evaluate(prim, arrays, op.attrs, out_type.with_shape(()))
                if value is not None:
                    return [full(value, out_type)]
        if out_type.size > self.max_elements or any(v.type.size > self.max_input_elements for v in operands):
            return None
        if prim.name == "broadcast_in_dim" and operands[0].ndim == 0:
            return None
        value = _evaluate(prim, [_array(v) for v in operands], op.attrs, out_type)
        return None if value is None else [constant(value)]


# --------------------------------------------------------------------------- common subexpressions

def attr_key(x: Any) -> Any:
    """A hashable key, equal exactly when two attribute values are the same. Arrays
    compare by dtype, shape and bytes; floats by their bits (0.0 and -0.0 differ); the
    type is part of the key (1, 1.0 and True differ)."""
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, np.ascontiguousarray(x).tobytes())
    if isinstance(x, np.generic):
        return attr_key(np.asarray(x))
    if isinstance(x, dict):
        return ("dict", tuple(sorted((k, attr_key(v)) for k, v in x.items())))
    if isinstance(x, (tuple, list)):
        return (type(x).__name__, tuple(attr_key(v) for v in x))
    if isinstance(x, float):
        return ("float", x.hex())
    try:
        hash(x)
    except TypeError:
        return ("object", id(x))
    return (type(x).__name__, x)


class _SharingRewriter(Rewriter):
    """CSE on the driver: `available` maps an op's key to the results of the first op with
    that key in the current scope. Each region is a scope of its own, which starts empty:
    a region may be isolated from the values around it (a call's body), and a checkpoint
    body must recompute, not reuse, what the forward pass computed."""

    def __init__(self):
        super().__init__()
        self.available: dict[tuple, Sequence[Value]] = {}

    @contextmanager
    def entering(self, op: Operation, region) -> Iterator[None]:
        saved, self.available = self.available, {}
        try:
            yield
        finally:
            self.available = saved

    def rule_for(self, op: Operation):
        return None if op.regions or not is_pure(op) else _share


def _share(rewriter: _SharingRewriter, op: Operation, inputs: list[Value]) -> Sequence[Value]:
    key = (op.opdef, tuple(inputs), attr_key(op.attrs), tuple(r.type for r in op.results))
    if key not in rewriter.available:
        rewriter.available[key] = rewriter.default_rule(op, inputs)
    return rewriter.available[key]


@dataclass(frozen=True)
class CommonSubexpressionElimination(FunctionPass):
    """Reuses the first of several ops with the same opdef, operands and attributes, in
    every block (nested regions included, each its own scope). Sound because primitives
    are pure; ops with regions, without results or with a declared side effect are not
    merged themselves."""

    name: ClassVar[str] = "cse"

    def run(self, fn: Function) -> Function:
        return _SharingRewriter().rewrite_function(fn)


# --------------------------------------------------------------------------- dead code

@dataclass(frozen=True)
class DeadCodeElimination(FunctionPass):
    """Drops ops none of whose results are used, inside regions too. Primitives are pure,
    so an unused result is wasted work; terminators and ops without results (kept for
    their effects) stay. An op with regions stays when one of its results is used; its
    body is then swept the same way (its `yield` keeps what it passes on), and values
    the body reads from enclosing blocks count as used there."""

    name: ClassVar[str] = "dce"

    def run(self, fn: Function) -> Function:
        kept = live_ops(fn.body)
        return rewrite_function(fn, lambda op, operands: None, keep=kept.__contains__)


def simplify_pipeline() -> list[FunctionPass]:
    """The standard cleanup after differentiation: rewrite, fold, share, then sweep."""
    return [AlgebraicSimplification(), ConstantFolding(), CommonSubexpressionElimination(),
            DeadCodeElimination()]
