"""Building IR: a `Builder` appends ops to a block, inferring result types.

Rules (JVP, transpose, NumPy-level functions) emit ops through `emit`, which targets
the innermost active builder (`with builder:`), so a rule reads like math:
`mul(t, cos(x))`. The builder's `loc` is stamped on every op it creates; the tracer
sets it to the user's source line, passes copy it from the op they rewrite.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Sequence

from .errors import JitgradError
from .core import Block, Function, Location, OpDef, Operation, Region, Value, UNKNOWN_LOCATION, RETURN
from .types import TensorType

class _ActiveBuilders(threading.local):
    """The stack of builders entered with `with builder:`, one per thread, so that two
    threads tracing at once never emit into each other's functions."""

    def __init__(self):
        self.stack: list["Builder"] = []


_active = _ActiveBuilders()


class Builder:
    """Appends ops to `block`; `loc` is the location given to new ops."""

    def __init__(self, block: Block | None = None, loc: Location = UNKNOWN_LOCATION):
        self.block = block if block is not None else Block()
        self.loc = loc

    def __enter__(self) -> "Builder":
        _active.stack.append(self)
        return self

    def __exit__(self, *exc) -> None:
        popped = _active.stack.pop()
        assert popped is self, "builders must be exited in the order they were entered"

    @contextmanager
    def at(self, loc: Location):
        """Temporarily stamp new ops with `loc`."""
        saved, self.loc = self.loc, loc
        try:
            yield self
        finally:
            self.loc = saved

    def add_arg(self, ty: TensorType) -> Value:
        return self.block.add_arg(ty)

    def create(self, opdef: OpDef, operands: Sequence[Value], attrs: dict[str, Any] | None = None,
               regions: Sequence[Region] = (), result_types: Sequence[TensorType] | None = None) -> Operation:
        """Append one op; its result types come from `opdef.infer` unless given."""
        attrs = dict(attrs or {})
        if result_types is None:
            try:
                result_types = opdef.infer(*[v.type for v in operands], **attrs)
            except JitgradError as err:
                raise err.with_location(self.loc if self.loc is not UNKNOWN_LOCATION else None) from None
        result_types = list(result_types)
        if opdef.num_results is not None and len(result_types) != opdef.num_results:
            raise JitgradError(f"op {opdef.name!r} declares {opdef.num_results} result(s), but is being created "
                               f"with {len(result_types)}", self.loc if self.loc is not UNKNOWN_LOCATION else None)
        op = Operation(opdef, list(operands), [], attrs, list(regions), self.loc)
        op.results = [Value(t, op, i) for i, t in enumerate(result_types)]
        for region in op.regions:
            region.parent = op
        return self.block.append(op)

    def ret(self, outputs: Sequence[Value]) -> Operation:
        return self.create(RETURN, outputs)


def current_builder() -> Builder:
    if not _active.stack:
        raise RuntimeError("no active jitgrad Builder: ops can only be emitted inside one")
    return _active.stack[-1]


def emit(opdef: OpDef, *operands: Value, **attrs) -> Value | list[Value]:
    """Emit an op into the active builder. An op kind declared with one result returns
    its Value and one declared with several the list of them, so callers can unpack it;
    an op kind whose count varies (`num_results` None) returns a Value when the instance
    has one result."""
    op = current_builder().create(opdef, operands, attrs)
    if opdef.num_results == 1 or (opdef.num_results is None and len(op.results) == 1):
        return op.results[0]
    return list(op.results)


def new_function(name: str, input_types: Sequence[TensorType], loc: Location = UNKNOWN_LOCATION):
    """A function with the given argument types and an empty body, and its builder."""
    builder = Builder(Block(), loc)
    for t in input_types:
        builder.add_arg(t)
    return Function(name, builder.block), builder
