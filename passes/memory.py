"""Memory planning: where each intermediate buffer lives, and how much memory a
program needs.

`plan_buffers` gives every buffer the kernels write (other than the caller's output
buffers) an offset in one workspace. Buffers whose lifetimes — from the kernel that
writes them to the last kernel that reads them, following aliases — do not overlap
share bytes (first fit, largest first), so a deep network's activations reuse memory;
an elementwise kernel whose operand dies there writes its result in place.

`peak_bytes` estimates the peak of any IR stage executed op by op (every value
materialized, freed after its last use): the numbers `jitgrad ir --memory` prints for
each stage, so that passes can be compared by the memory they save.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from jitgrad.ir import Function, Value
from jitgrad.primitives import Alias, Constant, Elementwise, Gather, Reduction
from .schedule import Kernel, Schedule

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
            lowering = op.opdef.lowering
            if isinstance(lowering, (Alias, Constant)):
                continue
            for result in op.results:
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
    # In-place updates: the last member of a map kernel may write its result over an
    # operand buffer of the same size when every read of that buffer in the kernel is at
    # the very index being written (`_in_place_candidates`) and nothing reads it
    # afterwards; the two then share one slot. Chains (a running gradient sum) keep one
    # slot, and when the chain ends in an output, the slot is the caller's output buffer.
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
        for u in _in_place_candidates(kernel, sched):
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


def _in_place_candidates(kernel: Kernel, sched: Schedule) -> list[Value]:
    """The buffers the kernel's last member may overwrite: those every read of which, by
    any member of the kernel, is at the index being written (`_same_index_reads`).
    Buffers read by the last member come first, in the order it reads them."""
    reads = _kernel_reads(kernel, sched)
    result = kernel.ops[-1].results[0]
    first = [root for root, _ in _member_reads(result, sched)]
    ordered = list(dict.fromkeys(first + list(reads)))
    return [root for root in ordered if _same_index_reads(root, reads, result, kernel)]


def _same_index_reads(root: Value, reads: dict, result: Value, kernel: Kernel) -> bool:
    """Does every read of buffer `root` in the kernel load the element the kernel writes
    at that iteration? A read qualifies when it is reached from a member through
    elementwise ops only (no broadcast, transpose, slice or reverse index map) and is of
    a value of the written shape — or, in a fused kernel, where every member is indexed
    by the one flat loop counter, of the written size. Reads through reshapes of `root`
    count as reads of `root`."""
    def same(value: Value, through_elementwise: bool) -> bool:
        if not through_elementwise:
            return False
        if value.type.shape == result.type.shape:
            return True
        return kernel.fused and value.type.size == result.type.size
    return all(same(value, direct) for value, direct in reads[root])


def _kernel_reads(kernel: Kernel, sched: Schedule) -> dict[Value, list[tuple[Value, bool]]]:
    """Every load the kernel performs, by buffer (the alias root of the value loaded):
    a list of (value loaded, reached through elementwise ops only)."""
    reads: dict[Value, list[tuple[Value, bool]]] = {}
    for op in kernel.ops:
        result = op.results[0]
        if isinstance(op.opdef.lowering, Reduction):
            # A member reduction loads its operand at the loop counter, like a map.
            pairs = _member_reads(op.operands[0], sched, compute=op.operands[0] not in sched.materialized)
        else:
            pairs = _member_reads(result, sched)
        for root, (value, direct) in pairs:
            reads.setdefault(root, []).append((value, direct))
    return reads


def _member_reads(value: Value, sched: Schedule, compute: bool = True, direct: bool = True):
    """(buffer, (value loaded, reached through elementwise ops only)) for every load made
    computing `value` inline (`compute`) or loading it."""
    if value in sched.materialized and not compute:
        return [(_alias_root(value), (value, direct))]
    op = value.defining_op
    if op is None:
        return [(value, (value, direct))]
    lowering = op.opdef.lowering
    if isinstance(lowering, Constant):
        return []
    keeps_index = isinstance(lowering, Elementwise)
    out = []
    for v in op.operands:
        out.extend(_member_reads(v, sched, compute=False, direct=direct and keeps_index))
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
