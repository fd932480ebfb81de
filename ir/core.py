"""The IR's data structures: values, operations, blocks, regions and functions.

Shaped after MLIR/xDSL: an `Operation` has operands, results, attributes, a source
location and zero or more `Region`s; a region holds `Block`s; a block holds block
arguments and a list of operations ending in a terminator. A `Function` is a named
single-block region whose terminator is `return`. Regions exist from the start so that
checkpoint regions and structured control flow (cond, while, scan) are ordinary ops.

Values carry only a type; the printer gives them names. Passes are functional: they
build new functions with a `Builder` rather than mutating old ones, so a function
captured at one pipeline stage stays valid while later stages are built.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

from .errors import MissingDerivativeRuleError, MissingRuleError
from .printer import print_function
from .types import TensorType


@dataclass(frozen=True)
class Location:
    """Where an op came from in the user's program (file, line, function)."""

    file: str
    line: int
    function: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


UNKNOWN_LOCATION = Location("<unknown>", 0)


class Trait(enum.Enum):
    """Facts about an op kind that passes may rely on, declared on its record."""

    PURE = "pure"
    """The results depend only on the operands and attributes, and the op does nothing
    else: equal instances may be merged (CSE) and unused ones dropped (DCE)."""
    COMMUTATIVE = "commutative"
    """An op of two operands whose result does not change when they are swapped."""
    HAS_SIDE_EFFECT = "has_side_effect"
    """The op reads or changes state that is not among its operands (a random-number
    generator's hidden state, I/O): it is never merged, dropped or reordered. Counter-based
    random numbers (`random_uniform`) take their state as operands and are PURE."""
    LINEAR = "linear"
    """Linear, jointly, in the operands listed by the record's `linear_operands` (all
    operands when that is None) while the others are held fixed:
    f(a*x + b*y) = a*f(x) + b*f(y). The record has a transpose rule for those operands."""
    BILINEAR = "bilinear"
    """Linear in each of its two operands while the other is held fixed, but not in both
    at once (mul, dot_general). The record has a transpose rule for either operand."""


#: The rule slots every `OpDef` declares, in the order the docs list them.
RULE_SLOTS = ("infer", "impl", "impl_op", "jvp", "jvp_op", "transpose", "transpose_op", "partial_eval",
              "batch", "verify_op", "lowering", "cost")

#: Slots whose absence makes a differentiation request fail (`MissingDerivativeRuleError`).
DERIVATIVE_SLOTS = frozenset({"jvp", "jvp_op", "transpose", "transpose_op", "partial_eval"})

_SLOT_PURPOSE = {
    "infer": "the result types cannot be computed",
    "impl": "the reference interpreter cannot run it",
    "impl_op": "the reference interpreter cannot run it",
    "jvp": "it cannot be differentiated",
    "jvp_op": "it cannot be differentiated",
    "transpose": "it is not linear in its tangent operands, so reverse mode cannot transpose it "
                 "(a custom_jvp rule must be linear in its tangents for reverse mode)",
    "transpose_op": "it is not linear in its tangent operands, so reverse mode cannot transpose it",
    "partial_eval": "its forward and backward work cannot be separated",
    "batch": "it cannot be vectorized (vmap)",
    "verify_op": "its regions cannot be checked",
    "lowering": "no backend can generate code for it",
    "cost": "its work cannot be estimated",
}


class OpDef:
    """The definition of an op kind, shared by all its instances: its complete interface.

    Every rule a transformation may ask for is a declared slot, `None` when the op has
    no such rule; `op.rule(slot)` is the one lookup, and it raises `MissingRuleError`
    naming the op and the user's line when the slot is empty. The contracts:

    infer(*operand_types, **attrs) -> [result types]
        Abstract evaluation: shapes and dtypes of the results; raises `ShapeError` /
        `DTypeError` (jitgrad.errors) on bad input.
    impl(*arrays, **attrs) -> array or [arrays]
        The NumPy reference the interpreter and the tests use (region-free ops).
    impl_op(op, arrays, run_block) -> [arrays]
        The same for ops with regions: `run_block(block, env)` runs a region's block.
    jvp(primals, tangents, **attrs) -> tangent or [tangents]
        Forward mode for an op the driver has already copied onto `primals`: emits the
        tangent computation into the active builder. A tangent may be the symbolic `Zero`.
    jvp_op(op, primals, tangents) -> (outputs, tangents)
        Forward mode that emits the primal computation too: call ops, and rules that
        read the primal output (`defjvp2`). Used instead of `jvp` when present.
    transpose(ct, *operands, **attrs) -> [ct or None per operand]
        For ops linear in some operands (see `Trait.LINEAR`): the operands being
        transposed arrive as `UndefinedPrimal`, the others as values.
    transpose_op(op, cts, operands) -> [ct or None per operand]
        The same with every result's cotangent at once (multi-result and call ops).
    partial_eval(op, unknown) -> PartialEval
        Reverse mode's split of forward from backward work, for an op some of whose
        operands are unknown (`unknown[k]`: operand k depends on a tangent). Returns a
        `PartialEval(known, staged, residuals, known_results)` (jitgrad.primitives.region_passes):
        `known_results[k]` says whether result k is computed in the forward pass;
        `known` (a detached op on known operands, or None) computes those results, in
        order, then the `residuals`; `staged` (a detached op, or None) reads unknown
        operands, residuals and known operands and computes the other results, linearly
        in the unknown ones. Without a rule the op is staged whole (`stage_whole`). Ops
        with regions need their own rule, so that a loop or call carrying both primal
        and tangent values becomes a forward part saving residuals and a linear part
        that can be transposed.
    batch(operands, batch_dims, **attrs) -> (outputs, out_batch_dims)
        The vectorizing-map rule: `batch_dims[k]` is the axis of operand k that is
        mapped over (None: not mapped); returns the results and their mapped axes.
    verify_op(op)
        Checks beyond the type rule, mostly how an op's regions relate to its operands
        and results; raises `VerificationError`.
    lowering
        A target-neutral description of the generated code (jitgrad.primitives.base).
    cost
        The work of one result element relative to an add (a math-library call: 16),
        for backends that decide threading by estimated work; None counts as 1.

    Besides the rules: `traits` (a frozenset of `Trait`), `linear_operands` (the
    operands a LINEAR op is linear in; None: all), `num_results` (None when it varies
    by instance, as for call ops whose results are their body's), `is_terminator`,
    `num_regions` and `doc`.

    `OpDef.registry` maps every op name to its record; the parser looks ops up there.
    """

    registry: dict[str, "OpDef"] = {}

    impl: Optional[Callable] = None
    impl_op: Optional[Callable] = None
    jvp: Optional[Callable] = None
    jvp_op: Optional[Callable] = None
    transpose: Optional[Callable] = None
    transpose_op: Optional[Callable] = None
    partial_eval: Optional[Callable] = None
    batch: Optional[Callable] = None
    verify_op: Optional[Callable] = None
    lowering: Any = None
    cost: Optional[int] = None

    def __init__(self, name: str, infer: Optional[Callable[..., list[TensorType]]], *,
                 is_terminator: bool = False, num_regions: int = 0, num_results: Optional[int] = None,
                 traits: Iterable[Trait] = (), linear_operands: Optional[Sequence[int]] = None,
                 doc: str = ""):
        if name in OpDef.registry:
            raise ValueError(f"op {name!r} is defined twice")
        self.name = name
        self.infer = infer
        self.is_terminator = is_terminator
        self.num_regions = num_regions
        self.num_results = num_results
        self.traits = frozenset(traits)
        self.linear_operands = tuple(linear_operands) if linear_operands is not None else None
        self.doc = doc
        OpDef.registry[name] = self

    def has(self, trait: Trait) -> bool:
        return trait in self.traits

    def declare(self, *traits: Trait) -> None:
        """Add traits to the record (the rule helpers declare linearity this way)."""
        self.traits = self.traits | frozenset(traits)

    @property
    def is_linear(self) -> bool:
        """Linear in some operands (LINEAR or BILINEAR): it has a transpose rule."""
        return bool(self.traits & {Trait.LINEAR, Trait.BILINEAR})

    @property
    def differentiable(self) -> bool:
        """Whether forward mode has a rule for it (`jvp` or `jvp_op`)."""
        return self.jvp is not None or self.jvp_op is not None

    def rules(self) -> dict[str, Any]:
        """Every rule slot and what the record holds there (None where it has no rule)."""
        return {slot: getattr(self, slot) for slot in RULE_SLOTS}

    def rule(self, slot: str, location: "Location | None" = None) -> Any:
        """The rule in `slot`; `MissingRuleError` (naming this op and `location`) when
        the record leaves it empty."""
        if slot not in RULE_SLOTS:
            raise ValueError(f"{slot!r} is not an op rule slot; the slots are {', '.join(RULE_SLOTS)}")
        rule = getattr(self, slot)
        if rule is None:
            error = MissingDerivativeRuleError if slot in DERIVATIVE_SLOTS else MissingRuleError
            loc = location if location is not None and location is not UNKNOWN_LOCATION else None
            raise error(f"op {self.name!r} has no {slot} rule: {_SLOT_PURPOSE[slot]}", loc,
                        op=self.name, slot=slot)
        return rule

    def __repr__(self) -> str:
        return f"<op {self.name}>"


class Value:
    """An SSA value: the result of an op or an argument of a block."""

    __slots__ = ("type", "owner", "index", "__weakref__")

    def __init__(self, ty: TensorType, owner: "Operation | Block | None" = None, index: int = 0):
        self.type = ty
        self.owner = owner      # defining Operation, or the Block for a block argument
        self.index = index      # result / argument position

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return self.type.ndim

    @property
    def defining_op(self) -> Optional["Operation"]:
        return self.owner if isinstance(self.owner, Operation) else None

    def __repr__(self) -> str:
        return f"<Value {self.type} #{id(self) & 0xffff:04x}>"


@dataclass(eq=False)
class Operation:
    """One op instance: `results = opdef(operands) {attrs} regions loc`."""

    opdef: OpDef
    operands: list[Value]
    results: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    regions: list["Region"] = field(default_factory=list)
    loc: Location = UNKNOWN_LOCATION
    parent: Optional["Block"] = None

    @property
    def name(self) -> str:
        return self.opdef.name

    @property
    def result(self) -> Value:
        """The single result of a one-result op."""
        if len(self.results) != 1:
            raise ValueError(f"{self.name} has {len(self.results)} results")
        return self.results[0]

    def rule(self, slot: str) -> Any:
        """This op's rule in `slot` (see `OpDef`); `MissingRuleError` naming the op and
        its source line when its record has none."""
        return self.opdef.rule(slot, self.loc)

    def per_result(self, outputs: Any, what: str = "rule") -> list:
        """A rule's answer as one entry per result: a one-result op's rules may return a
        bare value (or `Zero`), a multi-result op's rules return a sequence. Raises
        `ValueError` when the count is wrong, so that no result is silently left out."""
        if len(self.results) == 1 and not isinstance(outputs, (list, tuple)):
            return [outputs]
        outputs = list(outputs)
        if len(outputs) != len(self.results):
            raise ValueError(f"{self.name}'s {what} gave {len(outputs)} values for {len(self.results)} results")
        return outputs

    def __repr__(self) -> str:
        return f"<Operation {self.name} at {self.loc}>"


@dataclass(eq=False)
class Block:
    """A straight-line list of ops with typed arguments, ended by a terminator."""

    args: list[Value] = field(default_factory=list)
    ops: list[Operation] = field(default_factory=list)
    parent: Optional["Region"] = None

    def add_arg(self, ty: TensorType) -> Value:
        value = Value(ty, self, len(self.args))
        self.args.append(value)
        return value

    def append(self, op: Operation) -> Operation:
        op.parent = self
        self.ops.append(op)
        return op

    @property
    def terminator(self) -> Optional[Operation]:
        if self.ops and self.ops[-1].opdef.is_terminator:
            return self.ops[-1]
        return None


@dataclass(eq=False)
class Region:
    """A list of blocks owned by an op (one block for every op jitgrad has today)."""

    blocks: list[Block] = field(default_factory=list)
    parent: Optional[Operation] = None

    def __post_init__(self):
        for block in self.blocks:
            block.parent = self

    @property
    def block(self) -> Block:
        return self.blocks[0]


@dataclass(eq=False)
class Function:
    """A named function: one block whose arguments are the inputs and whose
    `return` terminator lists the outputs."""

    name: str
    body: Block

    @property
    def args(self) -> list[Value]:
        return self.body.args

    @property
    def outputs(self) -> list[Value]:
        term = self.body.terminator
        return list(term.operands) if term is not None else []

    @property
    def input_types(self) -> list[TensorType]:
        return [v.type for v in self.args]

    @property
    def output_types(self) -> list[TensorType]:
        return [v.type for v in self.outputs]

    def walk(self) -> "Sequence[Operation]":
        """All ops, nested regions included, in program order."""
        out: list[Operation] = []
        _walk_block(self.body, out)
        return out

    def __str__(self) -> str:
        return print_function(self)


def _walk_block(block: Block, out: list[Operation]) -> None:
    for op in block.ops:
        out.append(op)
        for region in op.regions:
            for inner in region.blocks:
                _walk_block(inner, out)


RETURN = OpDef("return", lambda *types, **attrs: [], is_terminator=True, num_results=0,
               doc="Ends a function; its operands are the function's outputs.")
YIELD = OpDef("yield", lambda *types, **attrs: [], is_terminator=True, num_results=0,
              doc="Ends a region's block; its operands are the region's results.")
