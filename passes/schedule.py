"""Loop fusion decisions, shared by every backend: which values get a buffer.

A value is *materialized* (computed by its own loop nest into a buffer) or *inlined*
(recomputed inside each consumer's loop at the index the consumer needs). Inlining an
elementwise or index-remapping op into its only consumer is loop fusion: the
intermediate never reaches memory, and reductions absorb the expression they reduce.
Values read by several consumers are materialized, except cheap ones (scalars broadcast
to a shape), so no expensive work is ever duplicated; computed scalars always get a buffer.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from jitgrad.ir import Function, Value
from jitgrad.primitives import Alias, Constant, Contraction, Elementwise, Gather, Reduction, Scatter

_ALWAYS_MATERIALIZED = (Reduction, Contraction, Scatter, Alias)


@dataclass
class Schedule:
    """`materialized` holds every value with a buffer (arguments, outputs, loop results)."""

    materialized: set[Value] = field(default_factory=set)
    uses: Counter = field(default_factory=Counter)

    def is_materialized(self, value: Value) -> bool:
        return value in self.materialized


def _is_cheap(value: Value) -> bool:
    """A scalar broadcast to a shape: recomputing it is one register read."""
    op = value.defining_op
    return op is not None and op.opdef.name == "broadcast_in_dim" and op.operands[0].type.ndim == 0


def schedule(fn: Function) -> Schedule:
    """Decide materialization for the straight-line body of `fn`."""
    sched = Schedule()
    for op in fn.walk():
        sched.uses.update(op.operands)
    sched.materialized.update(fn.args)
    sched.materialized.update(fn.outputs)
    for op in fn.body.ops:
        if op.opdef.is_terminator:
            continue
        lowering = op.opdef.lowering
        result = op.results[0]
        if isinstance(lowering, _ALWAYS_MATERIALIZED):
            sched.materialized.add(result)
        if isinstance(lowering, (Contraction, Alias)):
            sched.materialized.update(op.operands)
        if isinstance(lowering, Constant):
            if result.type.ndim > 0:
                sched.materialized.add(result)
        elif result.type.ndim == 0:
            sched.materialized.add(result)   # scalars: computed once, read by every iteration
        if isinstance(lowering, (Elementwise, Gather)) and sched.uses[result] > 1 and not _is_cheap(result):
            sched.materialized.add(result)
    return sched
