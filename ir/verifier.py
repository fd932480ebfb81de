"""The IR's invariants, checked: run after every pass in tests, so a pass that builds
broken IR fails where it broke it rather than in the backend.

Checked: block structure (one terminator, last; `return` ends the function, `yield`
ends region blocks), region counts, SSA dominance (a value is used only after its
definition in the same block, or in an enclosing block before the op owning the
region), single definition, parent/owner links, and for region-free ops that the result
types are what the op's `infer` rule gives, and that an op has the number of results
its definition declares. Ops with regions are checked by their OpDef's own
`verify_op(op)`, if it has one, since only the op knows how its regions' types relate
to its results.
"""
from __future__ import annotations

from .errors import JitgradError, VerificationError
from .core import Block, Function, Operation, RETURN, YIELD, Value
from .printer import format_location, name_values


def verify(fn: Function) -> None:
    """Raise `VerificationError` naming the first broken op, its location and the problem."""
    _Verifier(fn).block(fn.body, terminator=RETURN, visible=set())


class _Verifier:
    def __init__(self, fn: Function):
        self.fn = fn
        self.names = name_values(fn)
        self.defined: set[Value] = set()

    def fail(self, op: Operation | None, problem: str) -> VerificationError:
        where = f"{op.name} at {format_location(op.loc)}: " if op is not None else ""
        return VerificationError(f"in function @{self.fn.name}: {where}{problem}")

    def name(self, value: Value) -> str:
        return self.names.get(value, "a value defined nowhere in the function")

    def define(self, value: Value, op: Operation | None, visible: set[Value]) -> None:
        if value in self.defined:
            raise self.fail(op, f"value {self.name(value)} is defined twice")
        self.defined.add(value)
        visible.add(value)

    def block(self, block: Block, terminator, visible: set[Value], owner: Operation | None = None) -> None:
        """Check `block`, seeing the values in `visible` (plus its own, removed after)."""
        added: list[Value] = []
        for i, arg in enumerate(block.args):
            if arg.owner is not block or arg.index != i:
                raise self.fail(owner, f"block argument {i} ({self.name(arg)}) does not point back to its block")
            self.define(arg, owner, visible)
            added.append(arg)
        for position, op in enumerate(block.ops):
            if op.parent is not block:
                raise self.fail(op, "op.parent is not the block that holds the op")
            if op.opdef.is_terminator and position != len(block.ops) - 1:
                raise self.fail(op, "terminator in the middle of a block")
            self.op(op, visible)
            added.extend(op.results)
        if not block.ops or not block.ops[-1].opdef.is_terminator:
            last = block.ops[-1] if block.ops else owner
            kind = "the function body" if owner is None else "a region block"
            raise self.fail(last, f"{kind} does not end with a terminator ({terminator.name})")
        if block.ops[-1].opdef is not terminator:
            raise self.fail(block.ops[-1], f"block ends with {block.ops[-1].name}, expected {terminator.name}")
        visible.difference_update(added)

    def op(self, op: Operation, visible: set[Value]) -> None:
        for k, value in enumerate(op.operands):
            if not isinstance(value, Value):
                raise self.fail(op, f"operand {k} is {type(value).__name__}, not a Value")
            if value not in visible:
                raise self.fail(op, f"operand {k} ({self.name(value)}) is used before it is defined "
                                    "or where its definition is not visible")
        if len(op.regions) != op.opdef.num_regions:
            raise self.fail(op, f"has {len(op.regions)} region(s), its definition says {op.opdef.num_regions}")
        for region in op.regions:
            if region.parent is not op:
                raise self.fail(op, "region.parent is not the op that holds the region")
            for block in region.blocks:
                if block.parent is not region:
                    raise self.fail(op, "block.parent is not the region that holds the block")
                self.block(block, YIELD, visible, owner=op)
        for i, result in enumerate(op.results):
            if result.owner is not op or result.index != i:
                raise self.fail(op, f"result {i} ({self.name(result)}) does not point back to its op")
        if op.opdef.num_results is not None and len(op.results) != op.opdef.num_results:
            raise self.fail(op, f"has {len(op.results)} result(s), its definition says {op.opdef.num_results}")
        if not op.regions:
            self.result_types(op)
        custom = op.opdef.verify_op
        if custom is not None:
            try:
                custom(op)
            except JitgradError as err:  # VerificationError included: add the op and location
                raise self.fail(op, err.message) from None
        for result in op.results:
            self.define(result, op, visible)

    def result_types(self, op: Operation) -> None:
        try:
            expected = list(op.opdef.infer(*[v.type for v in op.operands], **op.attrs))
        except JitgradError as err:
            raise self.fail(op, f"invalid operands or attributes: {err.message}") from None
        except (TypeError, ValueError, KeyError, IndexError) as err:
            # e.g. a missing or misspelt attribute, which the rule's signature rejects
            raise self.fail(op, f"its type rule failed: {type(err).__name__}: {err}") from None
        actual = [r.type for r in op.results]
        if actual != expected:
            raise self.fail(op, f"result types ({', '.join(map(str, actual))}) differ from the inferred "
                                f"({', '.join(map(str, expected))})")
