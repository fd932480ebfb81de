"""CPU kernels of the control-flow region ops (jitgrad/primitives/control_flow.py).

Each region is compiled as an ordinary function of the same module — scheduled, fused
and memory-planned like any program, `void region(ptr args)` with the same argument
layout as the outer function (inputs, outputs, workspace, large constants) — and the
op's kernel is the loop or branch that calls it:

  cond   load the predicate; call the then- or the else-region into the result buffers.
  while  copy the initial carry into the result buffers; loop: call the test region, stop
         when it yields false, call the body into a second set of carry buffers, copy
         them back. Counts the trips (a result when the op asks for it).
  fori   the same with a trip count read from the operand and the index as an input;
         passive carries (not results) live in scratch buffers.
  scan   carry as for while; the i-th x slice is read in place (leading-axis slices of a
         row-major array are contiguous) and the body writes the i-th y slice in place.
  reverse_fori  stack: one heap block of trips states, filled by the advance region,
         read back from the last by the step region, freed on every way out (Ctrl-C
         included); revolve (or stack when the block cannot be had): the binomial
         schedule over snapshots in the workspace.

A region's workspace is a scratch area of the outer function's workspace, so nested
loops need no allocation at run time. Every loop iteration checks for Ctrl-C (the
runtime's interrupt count, as the outer function's long kernels do): a while loop that
never ends stays interruptible. Loop-invariant work stays outside: the values a body
reads from the enclosing function are operands computed once before the loop, and the
body's own work that reads only those (a transposed weight in a backward loop, say) is
moved into a prelude run once before the loop (`hoist_invariants`).
"""
from __future__ import annotations

from llvmlite import ir

from typing import Sequence

from jitgrad.config import config
from jitgrad.ir import DType, Function, Trait, new_function
from jitgrad.ir.rewrite import Rewriter
from jitgrad.passes.memory import plan_buffers
from jitgrad.passes.schedule import schedule
from jitgrad.passes.simplify import DeadCodeElimination
from jitgrad.primitives import Alias, Constant
from jitgrad.primitives.control_flow import (cond_p, fori_p, region_function, reverse_fori_p, reversed_scan_xs, scan_p,
                                             while_p)
from .llvm_support import (I64, I8, PTR, VOID, alloca_in_entry, declare, for_range, index, memory_type,
                           set_function_string_attribute)


def _nbytes(t) -> int:
    return t.size * t.dtype.itemsize


CHEAP_LOWERINGS = (Alias, Constant)
REPLICATED_OPS = ("broadcast_in_dim",)
"""Invariant ops cheaper to recompute inline (fused) than to read from a buffer: they are
copied into the hoisted prelude where it needs them but not taken out of the body."""


def hoist_invariants(fn: Function, invariant: Sequence[int]) -> tuple[Function, Function, int] | None:
    """Loop-invariant code motion for a region run many times: the ops of `fn` that read
    only the arguments at `invariant` (the loop's consts), constants and each other move
    to a `prelude(*invariant args) -> hoisted values`, run once before the loop; returns
    (prelude, body, number of hoisted values) where body takes fn's arguments followed by
    the hoisted values; None when there is nothing worth moving."""
    known = {fn.args[k] for k in invariant}
    closure, moved = [], []
    for op in fn.body.ops:
        if op.opdef.is_terminator or op.regions or not op.opdef.has(Trait.PURE) \
                or op.opdef.has(Trait.HAS_SIDE_EFFECT) or not all(v in known for v in op.operands):
            continue
        known.update(op.results)
        closure.append(op)
        if op.operands and not isinstance(op.opdef.lowering, CHEAP_LOWERINGS) and op.name not in REPLICATED_OPS:
            moved.append(op)
    moved_set = set(moved)
    read_by_rest = {v for op in fn.body.ops if op not in moved_set for v in op.operands}
    exported = [r for op in moved for r in op.results if r in read_by_rest]
    if not exported:
        return None
    args = [fn.args[k] for k in invariant]
    prelude, builder = new_function(f"{fn.name}_invariant", [a.type for a in args])
    with builder:
        copier = Rewriter(env=dict(zip(args, prelude.args, strict=True)))
        for op in closure:
            copier.eval_op(op)
        builder.ret([copier.read(v) for v in exported])
    body, builder = new_function(fn.name, [*fn.input_types, *(v.type for v in exported)])
    with builder:
        copier = Rewriter(env={**dict(zip(fn.args, body.args, strict=False)),
                               **dict(zip(exported, body.args[len(fn.args):], strict=True))})
        for op in fn.body.ops:
            if op.opdef.is_terminator:
                with builder.at(op.loc):
                    builder.ret([copier.read(v) for v in op.operands])
            elif op not in moved_set:
                copier.eval_op(op)
    dce = DeadCodeElimination()
    return dce.run(prelude), dce.run(body), len(exported)


class _Region:
    """One region compiled as a function of the module, and how to call it. With
    `invariant` (the positions of the loop's consts among its arguments) its
    loop-invariant work is compiled into a prelude that `prepare` runs once."""

    def __init__(self, kc, fn: Function, invariant: Sequence[int] = ()):
        self.prelude = None
        self.hoisted: list = []
        self.invariant = list(invariant)
        split = hoist_invariants(fn, invariant) if invariant else None
        if split is not None:
            prelude_fn, fn, n_hoisted = split
            self.prelude = _Region(kc, prelude_fn)
            self.hoisted = [kc.scratch(max(_nbytes(t), 1)) for t in prelude_fn.output_types]
        self._compile(kc, fn)

    def prepare(self, inputs) -> None:
        """Run the hoisted prelude on the region's invariant inputs (once, before the loop)."""
        if self.prelude is not None:
            self.prelude.call([inputs[k] for k in self.invariant], self.hoisted)

    def _compile(self, kc, fn: Function) -> None:
        from .codegen import CPUFunctionEmitter
        kc._region_count = getattr(kc, "_region_count", 0) + 1
        sched = schedule(fn, config.fusion)
        memory = plan_buffers(fn, sched)
        symbol = f"{kc.llfn.name}.region{kc._region_count}"
        nested = CPUFunctionEmitter(fn, sched, memory, kc.module, symbol, kc.ctx.vector_math, kc.blas,
                                    threads=kc.threads)
        nested.llfn.linkage = "internal"
        nested.emit()
        width = kc.ctx.vector_math.prefer_vector_width
        if width:
            set_function_string_attribute(nested.llfn, "prefer-vector-width", str(width))
        self.fn, self.llfn, self.kc = fn, nested.llfn, kc
        b = kc.builder
        self.workspace = kc.scratch(nested.workspace_bytes)
        self.constants = [kc._external_constant(c) for c in nested.constants]
        self.args = alloca_in_entry(b, PTR, f"{symbol}.args", count=len(fn.args) + len(fn.outputs) + 1
                                    + len(self.constants))

    def call(self, inputs, outputs) -> None:
        b = self.kc.builder
        items = [*inputs, *self.hoisted, *outputs, self.workspace, *self.constants]
        for k, item in enumerate(items):
            b.store(item, b.gep(self.args, [index(k)], inbounds=True, source_etype=PTR))
        b.call(self.llfn, [self.args])


def _offset(b, buffer, byte_offset):
    return b.gep(buffer, [byte_offset], inbounds=True, source_etype=I8)


def _copy_all(kc, dsts, srcs, types) -> None:
    for dst, src, t in zip(dsts, srcs, types, strict=True):
        if _nbytes(t):
            kc.memcpy(dst, src, _nbytes(t))


def _load_scalar(kc, value, dtype: DType):
    return kc.builder.load(kc.pointer(value), typ=memory_type(dtype))


def emit_region_op(kc, op) -> None:
    {cond_p: _emit_cond, while_p: _emit_while, fori_p: _emit_fori, scan_p: _emit_scan,
     reverse_fori_p: _emit_reverse_fori}[op.opdef](kc, op)


def _emit_cond(kc, op) -> None:
    b = kc.builder
    then_region = _Region(kc, region_function(op, 0))
    else_region = _Region(kc, region_function(op, 1))
    pred = b.icmp_unsigned("!=", _load_scalar(kc, op.operands[0], DType.bool), ir.Constant(memory_type(DType.bool), 0))
    inputs = [kc.pointer(v) for v in op.operands[1:]]
    outputs = [kc.pointer(r) for r in op.results]
    with b.if_else(pred) as (then, otherwise):
        with then:
            then_region.call(inputs, outputs)
        with otherwise:
            else_region.call(inputs, outputs)


def _carry_buffers(kc, types):
    """Scratch buffers for the carry a body yields, before it is copied back."""
    return [kc.scratch(_nbytes(t)) for t in types]


def _emit_while(kc, op) -> None:
    b = kc.builder
    n = op.attrs["num_consts"]
    consts, inits = op.operands[:n], op.operands[n:]
    carry_types = [v.type for v in inits]
    test = _Region(kc, region_function(op, 0), range(n))
    body = _Region(kc, region_function(op, 1), range(n))
    const_ptrs = [kc.pointer(v) for v in consts]
    carry = [kc.pointer(r) for r in op.results[:len(inits)]]
    test.prepare(const_ptrs)
    body.prepare(const_ptrs)
    fresh = _carry_buffers(kc, carry_types)
    flag = kc.scratch(1)
    trips = alloca_in_entry(b, I64, "trips")
    _copy_all(kc, carry, [kc.pointer(v) for v in inits], carry_types)
    b.store(index(0), trips)
    header = b.append_basic_block("while.test")
    step = b.append_basic_block("while.body")
    done = b.append_basic_block("while.done")
    b.branch(header)
    b.position_at_end(header)
    kc._return_if_interrupted()
    test.call([*const_ptrs, *carry], [flag])
    go = b.icmp_unsigned("!=", b.load(flag, typ=memory_type(DType.bool)), ir.Constant(memory_type(DType.bool), 0))
    b.cbranch(go, step, done)
    b.position_at_end(step)
    body.call([*const_ptrs, *carry], fresh)
    _copy_all(kc, carry, fresh, carry_types)
    b.store(b.add(b.load(trips, typ=I64), index(1)), trips)
    b.branch(header)
    b.position_at_end(done)
    if op.attrs.get("count_trips"):
        b.store(b.load(trips, typ=I64), kc.pointer(op.results[-1]))


def _emit_fori(kc, op) -> None:
    b = kc.builder
    n, n_passive = op.attrs["num_consts"], op.attrs.get("num_passive", 0)
    consts, inits = op.operands[1:1 + n], op.operands[1 + n:]
    carry_types = [v.type for v in inits]
    body = _Region(kc, region_function(op, 0), range(1, 1 + n))
    const_ptrs = [kc.pointer(v) for v in consts]
    # passive carries are not results: they live in scratch buffers
    carry = [kc.scratch(max(_nbytes(t), 1)) for t in carry_types[:n_passive]] + [kc.pointer(r) for r in op.results]
    fresh = _carry_buffers(kc, carry_types)
    counter = kc.scratch(8)
    body.prepare([counter, *const_ptrs])
    _copy_all(kc, carry, [kc.pointer(v) for v in inits], carry_types)
    trips = _load_scalar(kc, op.operands[0], DType.i64)
    trips = b.select(b.icmp_signed("<", trips, index(0)), index(0), trips)
    with for_range(b, trips, "fori") as i:
        kc._return_if_interrupted()
        b.store(i, counter)
        body.call([counter, *const_ptrs, *carry], fresh)
        _copy_all(kc, carry, fresh, carry_types)


def _emit_scan(kc, op) -> None:
    b = kc.builder
    nc, nx = op.attrs["num_consts"], op.attrs["num_carry"]
    length, reverse = op.attrs["length"], op.attrs["reverse"]
    consts, inits, xs = op.operands[:nc], op.operands[nc:nc + nx], op.operands[nc + nx:]
    carry_types = [v.type for v in inits]
    n_passive = op.attrs.get("num_passive", 0)
    body = _Region(kc, region_function(op, 0), range(nc))
    const_ptrs = [kc.pointer(v) for v in consts]
    # passive carries are not results: they live in scratch buffers
    carry = [kc.scratch(max(_nbytes(t), 1)) for t in carry_types[:n_passive]] + \
        [kc.pointer(r) for r in op.results[:nx - n_passive]]
    body.prepare(const_ptrs)
    fresh = _carry_buffers(kc, carry_types)
    x_ptrs = [kc.pointer(v) for v in xs]
    x_strides = [_nbytes(v.type) // length if length else 0 for v in xs]
    ys = op.results[nx - n_passive:]
    y_ptrs = [kc.pointer(r) for r in ys]
    y_strides = [_nbytes(r.type) // length if length else 0 for r in ys]
    _copy_all(kc, carry, [kc.pointer(v) for v in inits], carry_types)
    with for_range(b, index(length), "scan") as step:
        kc._return_if_interrupted()
        i = b.sub(index(length - 1), step) if reverse else step
        x_slices = [_offset(b, p, b.mul(i, index(s))) for p, s in zip(x_ptrs, x_strides, strict=True)]
        y_slices = [_offset(b, p, b.mul(i, index(s))) for p, s in zip(y_ptrs, y_strides, strict=True)]
        body.call([*const_ptrs, *carry, *x_slices], [*fresh, *y_slices])
        _copy_all(kc, carry, fresh, carry_types)



# --------------------------------------------------------------------------- reverse_fori

FALLBACK_SNAPSHOT_BYTES = 1 << 20
"""The static snapshot area of a `stack` reverse_fori, used when its stack cannot be
allocated (the loop then runs as revolve with as many snapshots as fit, 2 to 64)."""
I128 = ir.IntType(128)


class _States:
    """Packed copies of a reverse_fori's state (its passive values, one after another)."""

    def __init__(self, types):
        self.types = list(types)
        self.offsets, total = [], 0
        for t in self.types:
            self.offsets.append(total)
            total += _nbytes(t)
        self.bytes = total

    def at(self, b, base, k):
        """Pointers to the values of state number `k` (an i64) of the array at `base`."""
        start = b.mul(k, index(self.bytes))
        return [_offset(b, base, b.add(start, index(offset))) for offset in self.offsets]


def _emit_reverse_fori(kc, op) -> None:
    """carry = step(i, state_i, carry) for i = trips-1 .. 0. `stack`: the states are
    computed once into a heap block of trips states (freed before the kernel returns, on
    Ctrl-C too); when it cannot be had, and for `revolve`, a fixed number of snapshots in
    the workspace and the binomial schedule of `run_reversal`."""
    b = kc.builder
    n, n_passive, n_xs = op.attrs["num_consts"], op.attrs["num_passive"], op.attrs.get("num_xs", 0)
    length = op.attrs.get("length")
    consts = op.operands[1:1 + n]
    inits = op.operands[1 + n:1 + n + n_passive]
    carry_inits = op.operands[1 + n + n_passive:len(op.operands) - n_xs]
    xs = reversed_scan_xs(op)
    states = _States(v.type for v in inits)
    carry_types = [v.type for v in carry_inits]
    advance = _Region(kc, region_function(op, 0), range(1, 1 + n))
    back = _Region(kc, region_function(op, 1), range(1, 1 + n))
    const_ptrs = [kc.pointer(v) for v in consts]
    counter = kc.scratch(8)
    advance.prepare([counter, *const_ptrs])
    back.prepare([counter, *const_ptrs])
    carry = [kc.pointer(r) for r in op.results[:len(carry_inits)]]
    ys = op.results[len(carry_inits):]
    fresh = _carry_buffers(kc, carry_types)
    _copy_all(kc, carry, [kc.pointer(v) for v in carry_inits], carry_types)
    for y in ys:                       # slices past a short trip count stay zero
        if _nbytes(y.type):
            kc.memset_zero(kc.pointer(y), _nbytes(y.type))
    trips = _load_scalar(kc, op.operands[0], DType.i64)
    trips = b.select(b.icmp_signed("<", trips, index(0)), index(0), trips)
    if length is not None:             # a reversed scan never steps past its xs and ys
        trips = b.select(b.icmp_signed(">", trips, index(length)), index(length), trips)
    init_ptrs = [kc.pointer(v) for v in inits]
    x_ptrs, y_ptrs = [kc.pointer(v) for v in xs], [kc.pointer(r) for r in ys]
    x_strides = [_nbytes(v.type) // length if length else 0 for v in xs]
    y_strides = [_nbytes(r.type) // length if length else 0 for r in ys]

    def slices(i, ptrs, strides):
        k = b.sub(index(length - 1), i) if op.attrs.get("reverse") else i
        return [_offset(b, p, b.mul(k, index(stride))) for p, stride in zip(ptrs, strides, strict=True)]

    def step_back(i, state):
        b.store(i, counter)
        back.call([counter, *const_ptrs, *state, *carry, *slices(i, x_ptrs, x_strides)],
                  [*fresh, *slices(i, y_ptrs, y_strides)])
        _copy_all(kc, carry, fresh, carry_types)

    def step_forward(i, state, into):
        b.store(i, counter)
        advance.call([counter, *const_ptrs, *state, *slices(i, x_ptrs, x_strides)], into)

    if op.attrs["reversal"] == "revolve":
        _emit_revolve(kc, trips, op.attrs["snapshots"], states, init_ptrs, step_forward, step_back)
        return
    fallback = min(max(FALLBACK_SNAPSHOT_BYTES // max(states.bytes, 1), 2), 64)
    with b.if_then(b.icmp_signed(">", trips, index(0))):
        fits = b.icmp_unsigned("<=", trips, index((1 << 62) // max(states.bytes, 1)))
        nbytes = b.select(fits, b.mul(trips, index(max(states.bytes, 1))), index(0))
        malloc = declare(kc.module, "malloc", PTR, [I64])
        free = declare(kc.module, "free", VOID, [PTR])
        stack = b.select(fits, b.call(malloc, [nbytes]), ir.Constant(PTR, None))
        with b.if_else(b.icmp_unsigned("!=", stack, ir.Constant(PTR, None))) as (allocated, refused):
            with allocated:
                _copy_all(kc, states.at(b, stack, index(0)), init_ptrs, states.types)
                with for_range(b, b.sub(trips, index(1)), "stack.push") as i:
                    _return_if_interrupted_freeing(kc, free, stack)
                    step_forward(i, states.at(b, stack, i), states.at(b, stack, b.add(i, index(1))))
                with for_range(b, trips, "stack.pop") as k:
                    _return_if_interrupted_freeing(kc, free, stack)
                    i = b.sub(b.sub(trips, index(1)), k)
                    step_back(i, states.at(b, stack, i))
                b.call(free, [stack])
            with refused:
                _emit_revolve(kc, trips, fallback, states, init_ptrs, step_forward, step_back)


def _return_if_interrupted_freeing(kc, free, block) -> None:
    b = kc.builder
    with b.if_then(kc.runtime.interrupted(b, *kc._interrupt_watch()), likely=False):
        b.call(free, [block])
        b.ret_void()


def _emit_revolve(kc, trips, snapshots: int, states: _States, init_ptrs, step_forward, step_back) -> None:
    """Binomial checkpointing over `snapshots` packed states in the workspace: the loop
    of `run_reversal`'s revolve branch (primitives/control_flow.py), step for step."""
    b = kc.builder
    slots = kc.scratch(max(snapshots * states.bytes, 1))
    positions = kc.scratch(snapshots * 8)
    work = [kc.scratch(max(_nbytes(t), 1)) for t in states.types]
    # a region's outputs must not alias its inputs (it may write one output before it
    # reads an input for another), so each advance writes a second set, copied back
    advanced = [kc.scratch(max(_nbytes(t), 1)) for t in states.types]

    def advance_work(i):
        step_forward(i, work, advanced)
        _copy_all(kc, work, advanced, states.types)
    depth = alloca_in_entry(b, I64, "revolve.depth")
    end = alloca_in_entry(b, I64, "revolve.end")
    _copy_all(kc, states.at(b, slots, index(0)), init_ptrs, states.types)
    b.store(index(0), positions)
    b.store(index(1), depth)
    b.store(trips, end)
    header = b.append_basic_block("revolve.test")
    body = b.append_basic_block("revolve.body")
    done = b.append_basic_block("revolve.done")
    b.branch(header)
    b.position_at_end(header)
    b.cbranch(b.icmp_signed(">", b.load(end, typ=I64), index(0)), body, done)
    b.position_at_end(body)
    kc._return_if_interrupted()
    top = b.sub(b.load(depth, typ=I64), index(1))
    position_slot = lambda k: b.gep(positions, [k], inbounds=True, source_etype=I64)   # noqa: E731
    start = b.load(position_slot(top), typ=I64)
    stop = b.load(end, typ=I64)
    steps = b.sub(stop, start)
    with b.if_else(b.icmp_signed("==", steps, index(1))) as (last, more):
        with last:
            step_back(start, states.at(b, slots, top))
            b.store(start, end)
            d = b.load(depth, typ=I64)
            b.store(b.select(b.icmp_signed(">", d, index(1)), b.sub(d, index(1)), d), depth)
        with more:
            _copy_all(kc, work, states.at(b, slots, top), states.types)
            free = b.sub(index(snapshots + 1), b.load(depth, typ=I64))
            with b.if_else(b.icmp_signed("<=", free, index(1))) as (full, room):
                with full:
                    with for_range(b, b.sub(steps, index(1)), "revolve.redo") as j:
                        advance_work(b.add(start, j))
                    step_back(b.sub(stop, index(1)), work)
                    b.store(b.sub(stop, index(1)), end)
                with room:
                    m = _emit_revolve_split(b, steps, free)
                    with for_range(b, m, "revolve.advance") as j:
                        advance_work(b.add(start, j))
                    d = b.load(depth, typ=I64)
                    _copy_all(kc, states.at(b, slots, d), work, states.types)
                    b.store(b.add(start, m), position_slot(d))
                    b.store(b.add(d, index(1)), depth)
    b.branch(header)
    b.position_at_end(done)


def _emit_revolve_split(b, steps, free):
    """`revolve_split(steps, free)` in 128-bit integers (the binomial reach stays below
    steps * (free + r) / r, far inside them for snapshots <= 2**16)."""
    r = alloca_in_entry(b, I128, "revolve.r")
    reach = alloca_in_entry(b, I128, "revolve.reach")
    wide = lambda v: b.sext(v, I128)       # noqa: E731
    n, c = wide(steps), wide(free)
    b.store(ir.Constant(I128, 0), r)
    b.store(ir.Constant(I128, 1), reach)
    test = b.append_basic_block("split.test")
    grow = b.append_basic_block("split.grow")
    found = b.append_basic_block("split.found")
    b.branch(test)
    b.position_at_end(test)
    b.cbranch(b.icmp_signed("<", b.load(reach, typ=I128), n), grow, found)
    b.position_at_end(grow)
    r1 = b.add(b.load(r, typ=I128), ir.Constant(I128, 1))
    b.store(r1, r)
    b.store(b.sdiv(b.mul(b.load(reach, typ=I128), b.add(c, r1)), r1), reach)
    b.branch(test)
    b.position_at_end(found)
    rr, total = b.load(r, typ=I128), b.load(reach, typ=I128)
    low = b.sub(n, b.sdiv(b.mul(total, c), b.add(c, rr)))
    high = b.sdiv(b.mul(total, rr), b.add(c, rr))
    m = b.trunc(b.sdiv(b.add(low, high), ir.Constant(I128, 2)), I64)
    m = b.select(b.icmp_signed(">", m, b.sub(steps, index(1))), b.sub(steps, index(1)), m)
    return b.select(b.icmp_signed("<", m, index(1)), index(1), m)


__all__ = ["emit_region_op"]
