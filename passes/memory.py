"""Memory planning: where each intermediate buffer lives, and how much memory a
program needs.

`plan_buffers` gives every buffer the kernels write (other than the caller's output
buffers) an offset in one workspace. Buffers whose lifetimes — from the kernel that
writes them to the last kernel that reads them, following aliases — do not overlap
share bytes (first fit, largest first), so a deep network's activations reuse memory;
an elementwise kernel whose operand dies there writes its result in place.

`peak_bytes` estimates the peak of any IR stage executed op by op (every value
materialized, freed after its last use): the numbers `jitgrad ir --memory` prints for
each stage, the seed's "memory diff between passes".
"""
from __future__ import annotations

from dataclasses import dataclass, field

from jitgrad.ir import Function, Value
from jitgrad.primitives import Alias, Constant, Elementwise, Gather
from .schedule import Schedule

ALIGN = 64


@dataclass
class MemoryPlan:
    offsets: dict[Value, int] = field(default_factory=dict)
    in_output: dict[Value, Value] = field(default_factory=dict)   # lives in that output's buffer
    workspace_bytes: int = 0
    unshared_bytes: int = 0          # what the same buffers would take without reuse


def _round(n: int) -> int:
    return -(-max(n, 1) // ALIGN) * ALIGN


def _alias_root(value: Value) -> Value:
    op = value.defining_op
    while op is not None and isinstance(op.opdef.lowering, Alias):
        value = op.operands[0]
        op = value.defining_op
    return value


def plan_buffers(fn: Function, sched: Schedule) -> MemoryPlan:
    outputs = set(fn.outputs)
    written: dict[Value, int] = {}            # buffer -> kernel position that writes it
    last_read: dict[Value, int] = {}
    for pos, kernel in enumerate(sched.kernels):
        for op in kernel.ops:
            result = op.results[0]
            lowering = op.opdef.lowering
            if isinstance(lowering, (Alias, Constant)):
                continue
            stored = result in kernel.stored if kernel.fused else True
            if stored and result not in outputs:
                written[result] = pos
            for v in sched.reads(result, compute=True):
                root = _alias_root(v)
                last_read[root] = max(last_read.get(root, pos), pos)
    for v in fn.outputs:                       # outputs copied from an alias are read at the end
        root = _alias_root(v)
        if root in written:
            last_read[root] = len(sched.kernels)
    # In-place updates: a one-op map kernel may write its result over an operand buffer of
    # the same size that it reads element by element (never through an index remapping)
    # and that nothing reads afterwards; the two then share one slot. Chains (a running
    # gradient sum) keep one slot, and when the chain ends in an output, the slot is the
    # caller's output buffer itself.
    shares: dict[Value, Value] = {}              # value -> the root buffer whose slot it uses
    holder: dict[Value, Value] = {}              # root -> the value holding its slot now
    homes: dict[Value, Value] = {}               # root -> the output whose buffer is the slot
    for pos, kernel in enumerate(sched.kernels):
        # The last member of a fused loop writes after every other member has read its
        # element; a lone map kernel reads before it writes. Either may work in place.
        last = kernel.ops[-1]
        if not isinstance(last.opdef.lowering, (Elementwise, Gather)) or (len(kernel.ops) > 1 and not kernel.fused):
            continue
        result = last.results[0]
        is_output = result in outputs and result not in homes.values()
        if result not in written and not is_output:
            continue
        for u in _same_index_reads(result, sched):
            root = shares.get(u, u)
            if (root in written and holder.get(root, root) is u and last_read.get(u) == pos
                    and u.type.nbytes == result.type.nbytes and root not in homes):
                if is_output:
                    homes[root] = result
                else:
                    shares[result] = root
                    last_read[root] = max(last_read.get(root, pos), last_read.get(result, pos))
                holder[root] = result
                break
    for v in shares:
        del written[v]
    for root in homes:
        del written[root]
    intervals = sorted(((_round(v.type.nbytes), written[v], last_read.get(v, written[v]), v) for v in written),
                       key=lambda item: (-item[0], item[1]))
    plan = MemoryPlan()
    placed: list[tuple[int, int, int, int]] = []   # (offset, size, start, end)
    for size, start, end, value in intervals:
        offset = 0
        for other_offset, other_size, other_start, other_end in sorted(placed):
            overlaps_in_time = not (end < other_start or other_end < start)
            if overlaps_in_time and offset < other_offset + other_size and other_offset < offset + size:
                offset = other_offset + other_size
        placed.append((offset, size, start, end))
        plan.offsets[value] = offset
        plan.workspace_bytes = max(plan.workspace_bytes, offset + size)
        plan.unshared_bytes += size
    for v, root in shares.items():
        if root in homes:
            plan.in_output[v] = homes[root]
        else:
            plan.offsets[v] = plan.offsets[root]
        plan.unshared_bytes += _round(v.type.nbytes)
    for root, output in homes.items():
        plan.in_output[root] = output
        plan.unshared_bytes += _round(root.type.nbytes)
    return plan


def _same_index_reads(value: Value, sched: Schedule) -> list[Value]:
    """Materialized values that computing `value` reads at its own index: through
    elementwise ops only, not through broadcasts, transposes or slices."""
    op = value.defining_op
    if op is None or not isinstance(op.opdef.lowering, Elementwise):
        return []
    out = []
    for v in op.operands:
        if v in sched.materialized:
            if v.type.shape == value.type.shape:
                out.append(v)
        else:
            out.extend(_same_index_reads(v, sched))
    return out


def peak_bytes(fn: Function) -> int:
    """Peak live bytes of `fn` run op by op: arguments and outputs included, every other
    value freed after its last use."""
    last_use: dict[Value, int] = {}
    ops = fn.body.ops
    for i, op in enumerate(ops):
        for v in op.operands:
            last_use[v] = i
    live = sum(v.type.nbytes for v in fn.args)
    peak = live
    for i, op in enumerate(ops):
        live += sum(r.type.nbytes for r in op.results)
        peak = max(peak, live)
        for v in set(op.operands):
            if last_use.get(v) == i and v not in fn.args and not op.opdef.is_terminator:
                live -= v.type.nbytes
    return peak
