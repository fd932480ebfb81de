"""Loop fusion decisions, shared by every backend: which values are computed where, and
which loops run together.

1. Materialization. A value is *materialized* (computed in a kernel, possibly stored) or
   *inlined* (recomputed inside each consumer's loop at the index the consumer needs).
   Inlining an elementwise or index-remapping op into its only consumer is loop fusion:
   the intermediate never reaches memory, and reductions absorb the expression they
   reduce. Values read by several consumers are materialized, except cheap ones
   (scalars broadcast to a shape), so no expensive work is duplicated; computed scalars
   are always materialized, and so are ops joining two computed arrays (which would
   otherwise keep both alive until a distant consumer).
2. Kernels. Consecutive materialized values that can be computed by one loop of the
   same trip count — elementwise maps, index maps and full reductions — form one *fused
   kernel* (multi-output fusion): each member is computed once per iteration and kept in
   a register for the members after it, and only members read outside the kernel are
   stored. The gradient of sum(f(x)) is then one pass over x that yields both the value
   and the gradient. Members that read through index maps (slices, reversals, zero
   paddings, concatenations, transposes, broadcasts) need a multi-index: their kernel
   gets an iteration `shape`, and backends run it as a nest whose last axis is the
   contiguous inner loop, still visiting the same flat positions in the same order.
   Other materialized values (contractions, partial reductions, scatters) are kernels of
   their own.
3. Index maps never read a member of their own kernel: a member is kept in a register
   only at the position being computed, so a later member that would read it at another
   position (through a slice, say) starts a new kernel and loads it from its buffer.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from jitgrad.ir import DType, Function, Operation, Value
from jitgrad.primitives.kernel_kind import KernelKind
from jitgrad.primitives import Alias, Constant, Contraction, Elementwise, Gather, Reduction, Scatter

_ALWAYS_MATERIALIZED = (Reduction, Contraction, Scatter, Alias)
MAX_INLINE_DEPTH = 48
"""The longest chain of inlined ops one element is computed through. A longer chain is
cut by materializing a value: fusion still covers each 48-op segment, and the
recursive walks over inlined expressions (here and in every backend) stay shallow
whatever the program's length."""


@dataclass
class Kernel:
    """One loop nest (or none, for constants and aliases). A fused kernel's members share
    one loop of `size` iterations over the flat positions 0 .. size - 1; `shape` is the
    iteration space whose multi-index members with index maps read (None: every member is
    flat-indexable, one flat loop suffices). `stored` are the members that need a buffer."""

    ops: list[Operation]
    fused: bool = False
    size: int = 0
    stored: set[Value] = field(default_factory=set)
    shape: tuple[int, ...] | None = None


@dataclass
class Schedule:
    """`materialized` holds every value with a buffer or a kernel of its own; `kernels`
    lists the loops in program order."""

    materialized: set[Value] = field(default_factory=set)
    uses: Counter = field(default_factory=Counter)
    kernels: list[Kernel] = field(default_factory=list)

    def is_materialized(self, value: Value) -> bool:
        return value in self.materialized

    def needs_multi_index(self, value: Value, compute: bool = False) -> bool:
        """Does computing `value` inline remap indices (so a flat loop would need div/mod)?"""
        if value in self.materialized and not compute:
            return False
        op = value.defining_op
        if op is None:
            return False
        if isinstance(op.opdef.lowering, Gather) or is_index_map_pad(op):
            return op.operands[0].type.ndim > 0
        if is_index_map_concatenate(op):
            return True
        return any(self.needs_multi_index(v) for v in op.operands)

    def reads(self, value: Value, compute: bool = False) -> set[Value]:
        """The materialized values that computing `value` inline loads."""
        if value in self.materialized and not compute:
            return {value}
        op = value.defining_op
        if op is None:
            return {value}
        out: set[Value] = set()
        for v in op.operands:
            out |= self.reads(v)
        return out


VIEW_OPS = frozenset({"transpose", "broadcast_in_dim"})
"""Index maps a contraction reads through strides (BLAS transposes, leading dimensions
and batch strides) instead of a kernel and buffer of their own."""


def is_index_map_pad(op: Operation) -> bool:
    """A zero padding without interior padding: computed inline as a bounds test and a
    load of the operand (an index map, `KernelEmitter.padded_element`) instead of a
    scatter kernel and a buffer of its own."""
    return (op.opdef.name == "pad" and op.operands[0].type.ndim > 0 and op.operands[0].type.size > 0
            and not any(op.attrs["interior"]))


def is_index_map_concatenate(op: Operation) -> bool:
    """A concatenation computed inline (`KernelEmitter.concatenated_element`): each element
    is a select among the operands' elements, each read at an index clamped into its own
    bounds, instead of a scatter kernel and a buffer of its own."""
    return op.opdef.name == "concatenate" and op.results[0].type.ndim > 0 and op.results[0].type.size > 0


def is_index_map(op: Operation) -> bool:
    """Does `op` compute its element from operand elements at remapped positions?"""
    return isinstance(op.opdef.lowering, Gather) or is_index_map_pad(op) or is_index_map_concatenate(op)


def _only_moves_data(value: Value, sched: Schedule) -> bool:
    """Is `value` a buffer, a constant, or computed from them through index maps only (one
    load per element, whatever the path)?"""
    op = value.defining_op
    if value in sched.materialized or op is None or isinstance(op.opdef.lowering, Constant):
        return True
    return is_index_map(op) and all(_only_moves_data(v, sched) for v in op.operands)


def strided_view(value: Value, sched: Schedule) -> tuple[Value, tuple[int, ...]] | None:
    """`value` as (materialized base, stride in elements of each of its axes over the
    base's row-major buffer; 0 along broadcast axes) when it is the base itself or a chain
    of `VIEW_OPS` of it that nothing else materializes; None otherwise."""
    if value in sched.materialized:
        shape, strides, step = value.type.shape, [], 1
        for extent in reversed(shape):
            strides.append(step)
            step *= extent
        return value, tuple(reversed(strides))
    op = value.defining_op
    if op is None or op.opdef.name not in VIEW_OPS:
        return None
    inner = strided_view(op.operands[0], sched)
    if inner is None:
        return None
    base, strides = inner
    if op.opdef.name == "transpose":
        return base, tuple(strides[p] for p in op.attrs["permutation"])
    in_shape, shape = op.operands[0].type.shape, op.attrs["shape"]
    out = [0] * len(shape)
    for k, d in enumerate(op.attrs["broadcast_dimensions"]):
        if in_shape[k] == shape[d]:
            out[d] = strides[k]
    return base, tuple(out)


def _is_cheap(value: Value, sched: Schedule) -> bool:
    """A scalar broadcast to a shape (recomputing it is one register read), or a slice of
    a materialized value (one load from that buffer, which each consumer makes itself
    instead of a copy kernel and a buffer)."""
    op = value.defining_op
    if op is None:
        return False
    if op.opdef.name == "broadcast_in_dim" and op.operands[0].type.ndim == 0:
        return True
    return op.opdef.name == "slice" and op.operands[0] in sched.materialized


def widened_bfloat16(value: Value) -> Value | None:
    """The bfloat16 value that `value` is the (exact) float32 widening of, else None.
    NumPy multiplies bfloat16 arrays by widening them to float32: a contraction reads
    such an operand's bfloat16 buffer instead (half the bytes), and a backend multiplies
    it natively or widens it itself."""
    op = value.defining_op
    if op is None or op.opdef.name != "convert" or value.type.dtype != DType.f32:
        return None
    return op.operands[0] if op.operands[0].type.dtype == DType.bf16 else None


def _joins_buffers(op: Operation, sched: Schedule, fn: Function) -> bool:
    """An elementwise op reading two or more computed arrays (a gradient accumulation
    `add(a, b)`, say) is computed where it stands: inlined into a distant consumer it
    would keep both arrays alive until then — with a chain of them, every partial sum."""
    arrays = [v for v in sched.reads(op.results[0], compute=True) if v.defining_op is not None and v.type.ndim > 0]
    return len(arrays) >= 2


def schedule(fn: Function, fuse: bool = True) -> Schedule:
    """Decide materialization and kernels for the straight-line body of `fn`. With
    `fuse=False` every value gets its own loop and buffer (the reference the tests
    compare fused code against)."""
    sched = Schedule()
    for op in fn.walk():
        sched.uses.update(op.operands)
    sched.materialized.update(fn.args)
    sched.materialized.update(fn.outputs)
    if not fuse:
        sched.materialized.update(r for op in fn.body.ops for r in op.results)
        sched.kernels = [Kernel([op]) for op in fn.body.ops if not op.opdef.is_terminator]
        return sched
    depth: dict[Value, int] = {}        # length of the inlined chain ending at a value
    users = _users(fn)
    widened_for_products = {v for v, readers in users.items() if widened_bfloat16(v) is not None
                            and all(isinstance(r.opdef.lowering, Contraction) for r in readers)}
    for op in fn.body.ops:
        if op.opdef.is_terminator:
            continue
        lowering = op.opdef.lowering
        if isinstance(lowering, KernelKind):     # its own kernel, reading and writing buffers
            sched.materialized.update(op.results)
            sched.materialized.update(op.operands)
            continue
        result = op.results[0]
        depth[result] = 1 + max((depth.get(v, 0) for v in op.operands if v not in sched.materialized), default=0)
        if depth[result] >= MAX_INLINE_DEPTH:
            sched.materialized.add(result)
            depth[result] = 0
        index_map = is_index_map(op)
        if is_index_map_concatenate(op):
            # Every element evaluates each operand (and selects one): operands that
            # compute anything are materialized, so that no work is repeated.
            sched.materialized.update(v for v in op.operands if not _only_moves_data(v, sched))
        if isinstance(lowering, _ALWAYS_MATERIALIZED) and not index_map:
            sched.materialized.add(result)
        if isinstance(lowering, Alias):
            sched.materialized.update(op.operands)
        if isinstance(lowering, Contraction):      # transposes and broadcasts stay views
            read = [v if v in sched.materialized or widened_bfloat16(v) is None else widened_bfloat16(v)
                    for v in op.operands]
            sched.materialized.update(v for v in read if strided_view(v, sched) is None)
        if isinstance(lowering, Constant):
            if result.type.ndim > 0:
                sched.materialized.add(result)
        elif result.type.ndim == 0:
            sched.materialized.add(result)   # scalars: computed once, read by every iteration
        if (isinstance(lowering, Elementwise) or index_map) and sched.uses[result] > 1 \
                and not _is_cheap(result, sched) and result not in widened_for_products:
            sched.materialized.add(result)
        elif isinstance(lowering, Elementwise) and _joins_buffers(op, sched, fn):
            sched.materialized.add(result)
    sched.kernels = _plan_kernels(fn, sched)
    return sched


def _iteration_space(op: Operation, sched: Schedule) -> tuple[int, tuple[int, ...] | None] | None:
    """(trip count, shape of the multi-index it needs or None) of `op` as a member of a
    fused loop, or None if it can't be one."""
    lowering, result = op.opdef.lowering, op.results[0]
    if (isinstance(lowering, (Elementwise, Gather)) or is_index_map(op)) and result.type.size > 0:
        multi = sched.needs_multi_index(result, compute=True)
        return result.type.size, result.type.shape if multi else None
    if isinstance(lowering, Reduction) and result.type.ndim == 0 and op.operands[0].type.size > 0:
        x = op.operands[0]
        return x.type.size, x.type.shape if sched.needs_multi_index(x) else None
    return None


def _remaps_a_member(value: Value, members: set[Value], sched: Schedule, remapped: bool = False,
                     compute: bool = True) -> bool:
    """Does computing `value` read one of `members` (values kept in registers at the
    position being computed) through an index map?"""
    if value in members and not compute:
        return remapped
    if value in sched.materialized and not compute:
        return False
    op = value.defining_op
    if op is None:
        return False
    remapped = remapped or is_index_map(op)
    return any(_remaps_a_member(v, members, sched, remapped, compute=False) for v in op.operands)


def _plan_kernels(fn: Function, sched: Schedule) -> list[Kernel]:
    kernels: list[Kernel] = []
    current: Kernel | None = None
    current_reductions: set[Value] = set()
    members: set[Value] = set()
    for op in fn.body.ops:
        if op.opdef.is_terminator or op.results[0] not in sched.materialized:
            continue
        if isinstance(op.opdef.lowering, Constant):
            kernels.append(Kernel([op]))          # no loop: a global, read where needed
            continue
        space = _iteration_space(op, sched)
        reads = sched.reads(op.results[0], compute=True)
        per_position = _reduced_or_result(op)
        computed_here = per_position is op.results[0] or per_position not in sched.materialized
        joins = (space is not None and current is not None and current.size == space[0]
                 and (space[1] is None or current.shape in (None, space[1]))
                 and not reads & current_reductions
                 and not _remaps_a_member(per_position, members, sched, compute=computed_here))
        if joins:
            current.ops.append(op)
            current.shape = current.shape or space[1]
        else:
            if current is not None:
                kernels.append(current)
            current, current_reductions, members = None, set(), set()
            if space is not None:
                current = Kernel([op], fused=True, size=space[0], shape=space[1])
            else:
                kernels.append(Kernel([op]))
        if current is not None:
            members.add(op.results[0])
            if isinstance(op.opdef.lowering, Reduction):
                current_reductions.add(op.results[0])
    if current is not None:
        kernels.append(current)
    users = _users(fn)
    outputs = set(fn.outputs)
    for kernel in kernels:
        if kernel.fused:
            members = {op.results[0] for op in kernel.ops}
            kernel.stored = {v for v in members if isinstance(v.defining_op.opdef.lowering, Reduction)
                             or v in outputs or _read_outside(v, members, users, sched)}
    return kernels


def _reduced_or_result(op: Operation) -> Value:
    """What a fused member computes per position: a reduction's operand, else its result."""
    return op.operands[0] if isinstance(op.opdef.lowering, Reduction) else op.results[0]


def _users(fn: Function) -> dict[Value, list[Operation]]:
    users: dict[Value, list[Operation]] = defaultdict(list)
    for op in fn.walk():
        for v in op.operands:
            users[v].append(op)
    return users


def _read_outside(value: Value, members: set[Value], users, sched: Schedule) -> bool:
    for op in users[value]:
        if op.opdef.is_terminator:
            return True
        result = op.results[0]
        if result in members:
            continue
        if result in sched.materialized or _read_outside(result, members, users, sched):
            return True
    return False


def describe(fn: Function, sched: Schedule, memory=None) -> str:
    """The fusion plan as text (the `kernels` listing of every backend): one line per kernel with its
    members, which of them are stored, and the values inlined into them."""
    from jitgrad.ir.printer import name_values
    names = name_values(fn)
    outputs = set(fn.outputs)

    def label(v: Value) -> str:
        op = v.defining_op
        where = "output" if v in outputs else "buffer"
        return f"{names[v]} = {op.name} : {v.type}" + (f"  [{where}]" if where == "output" else "")

    lines = [f"// fusion plan of @{fn.name}: {len(sched.kernels)} kernels"]
    for k, kernel in enumerate(sched.kernels):
        nest = "" if kernel.shape is None else f" over {'x'.join(map(str, kernel.shape))}"
        kind = (f"fused loop, {kernel.size} iterations{nest}" if kernel.fused
                else kernel.ops[0].opdef.lowering.__class__.__name__.lower())
        lines.append(f"kernel {k} ({kind}):")
        for op in kernel.ops:
            v = op.results[0]
            kept = "" if not kernel.fused else ("  stored" if v in kernel.stored else "  in registers")
            inlined = sorted((names[u] for u in _inlined_into(v, sched)), key=lambda n: int(n[1:]))
            extra = f"  (inlined: {', '.join(inlined)})" if inlined else ""
            lines.append(f"  {label(v)}{kept}{extra}")
    if memory is not None:
        lines.append(f"// workspace: {memory.workspace_bytes} bytes "
                     f"({memory.unshared_bytes} without buffer reuse)")
    return "\n".join(lines)


def _inlined_into(value: Value, sched: Schedule) -> set[Value]:
    op = value.defining_op
    out: set[Value] = set()
    for v in op.operands if op is not None else ():
        if v not in sched.materialized and v.defining_op is not None:
            out.add(v)
            out |= _inlined_into(v, sched)
    return out
