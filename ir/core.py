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

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

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


class OpDef:
    """The definition of an op kind, shared by all its instances.

    `Primitive` (jitgrad.primitives) subclasses it with the math rules; structural ops
    such as `return` and `yield` are plain OpDefs. `infer` maps operand types and
    attributes to result types and raises `ShapeError` on bad input.
    """

    registry: dict[str, "OpDef"] = {}

    def __init__(self, name: str, infer: Callable[..., list[TensorType]], *,
                 is_terminator: bool = False, num_regions: int = 0, doc: str = ""):
        if name in OpDef.registry:
            raise ValueError(f"op {name!r} is defined twice")
        self.name = name
        self.infer = infer
        self.is_terminator = is_terminator
        self.num_regions = num_regions
        self.doc = doc
        OpDef.registry[name] = self

    def __repr__(self) -> str:
        return f"<op {self.name}>"


class Value:
    """An SSA value: the result of an op or an argument of a block."""

    __slots__ = ("type", "owner", "index", "__weakref__")

    def __init__(self, type: TensorType, owner: "Operation | Block | None" = None, index: int = 0):
        self.type = type
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

    def __repr__(self) -> str:
        return f"<Operation {self.name} at {self.loc}>"


@dataclass(eq=False)
class Block:
    """A straight-line list of ops with typed arguments, ended by a terminator."""

    args: list[Value] = field(default_factory=list)
    ops: list[Operation] = field(default_factory=list)
    parent: Optional["Region"] = None

    def add_arg(self, type: TensorType) -> Value:
        value = Value(type, self, len(self.args))
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


RETURN = OpDef("return", lambda *types, **attrs: [], is_terminator=True,
               doc="Ends a function; its operands are the function's outputs.")
YIELD = OpDef("yield", lambda *types, **attrs: [], is_terminator=True,
              doc="Ends a region's block; its operands are the region's results.")
