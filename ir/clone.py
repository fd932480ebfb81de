"""Copying IR: ops with their regions, regions, blocks inlined into another block.

Passes never mutate their input, so every transformation builds new IR by copying what
it does not change. These are the copy primitives they share. A `value_map` maps values
of the source IR to values of the copy: operands are looked up in it, and it receives
every value the copy defines (results, and the arguments and results inside copied
regions), so a caller can keep copying the ops that follow.
"""
from __future__ import annotations

from typing import Sequence

from .builder import Builder, new_function
from .core import YIELD, Block, Function, Operation, Region, Value
from .errors import VerificationError
from .rewrite import Rewriter


def clone_op(builder: Builder, op: Operation, operands: Sequence[Value],
             value_map: dict[Value, Value]) -> Operation:
    """Append a copy of `op` with the given operands to `builder`. Its regions are
    deep-copied; values they use from enclosing blocks are looked up in `value_map`
    (which also receives the copied regions' own values)."""
    regions = [clone_region(region, value_map) for region in op.regions]
    return builder.create(op.opdef, operands, op.attrs, regions=regions,
                          result_types=[r.type for r in op.results])


def clone_region(region: Region, value_map: dict[Value, Value]) -> Region:
    """A deep copy of `region`; its block arguments and op results go into `value_map`."""
    return Rewriter(env=value_map).rewrite_region(region.parent, region)


def inline_block(block: Block, operands: Sequence[Value], value_map: dict | None = None) -> list[Value]:
    """Copy `block`'s ops into the active builder with its arguments bound to `operands`
    (and other free values as `value_map` maps them); returns what its terminator passes on.
    The operands must have the arguments' types: a mismatch would give IR whose ops no
    longer type-check, found (if at all) far from its cause."""
    if len(operands) != len(block.args):
        raise VerificationError(f"inlining a block of {len(block.args)} arguments with {len(operands)} operands")
    for k, (operand, arg) in enumerate(zip(operands, block.args)):
        if operand.type != arg.type:
            raise VerificationError(f"inlining a block: operand {k} is {operand.type}, its argument {arg.type}")
    return Rewriter(env=dict(value_map or {})).run_block(block, operands)


def body_function(op: Operation, name: str | None = None) -> Function:
    """A copy of the body of an op with one region as a standalone Function (its `yield`
    becomes `return`)."""
    block = op.regions[0].block
    fn, builder = new_function(name or op.name, [a.type for a in block.args])
    with builder:
        results = inline_block(block, fn.args)
        with builder.at(block.terminator.loc):
            builder.ret(results)
    return fn


def function_region(fn: Function) -> Region:
    """A copy of `fn` as an isolated region ending in `yield` (the inverse of `body_function`)."""
    builder = Builder(Block())
    args = [builder.add_arg(a.type) for a in fn.args]
    with builder:
        results = inline_block(fn.body, args)
        with builder.at(fn.body.terminator.loc):
            builder.create(YIELD, results)
    return Region([builder.block])
