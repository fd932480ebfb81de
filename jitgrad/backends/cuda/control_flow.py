"""CUDA kernels of the control-flow region ops `cond`, `while`, `fori`, `scan` and reverse
mode's `reverse_fori` (jitgrad/primitives/control_flow.py): device-side loops in one launch.

The trip count of a loop and the branch of a `cond` are known only on the device, while
the launches of a compiled function are a sequence fixed on the host. So the whole op
runs in one launch, on one thread: each region is compiled, scheduled, fused and
memory-planned like any program, into an internal device function `void region(ptr
args)` (the outer function's argument layout: inputs, outputs, workspace, constants)
whose kernels all run on the calling thread, one after another (`SerialRegionEmitter`:
its grid-stride loops see a grid of one thread); the op's launch is the loop or branch
around the calls, as on the CPU (jitgrad/backends/cpu/control_flow.py):

  cond   the then- or the else-region into the result buffers;
  while  the initial carry copied into the result buffers; test region, body region into
         a second set of carry buffers, copied back; the trip count when asked for;
  fori   the same with the trip count read from the operand and the index as an input;
  scan   the i-th x slice read in place, the i-th y slice written in place;
  reverse_fori  the binomial schedule of `run_reversal` (jitgrad/primitives/control_flow.py)
         over snapshots in the workspace, the CPU's revolve loop step for step.

A region's workspace is part of the outer function's workspace; its constants are the
outer function's constants. Correct for any data, and slow for large arrays (one GPU
thread does all the work): a first step, which keeps loops on the device instead of
refusing them.

`reverse_fori` needs the loop's states from the last to the first. A kernel cannot grow
device memory here, so every reversal runs over a static snapshot area: `revolve` with
the op's snapshot count, as on the CPU; `stack` (whose heap block of trips states the
CPU allocates at run time) as revolve with as many snapshots as `STACK_SNAPSHOT_BYTES`
holds (2 to `MAX_STACK_SNAPSHOTS`). Where the trip count has a static bound (a reversed
scan's length, a constant trip operand) no more snapshots than that are kept, and a
bound within the budget is a whole stack: one advance per step, as the CPU's stack.
Recomputing a state runs the same advance function on the same bits, so every
reversal gives the same results; only the number of advances differs.
"""
from __future__ import annotations

from llvmlite import ir

from jitgrad.config import config
from jitgrad.ir import DType, Function
from jitgrad.passes.memory import plan_buffers
from jitgrad.passes.schedule import schedule
from jitgrad.primitives.control_flow import (REVOLVE, cond_p, fori_p, region_function, reverse_fori_p,
                                             reversed_scan_xs, scan_p, while_p)
from jitgrad.primitives.structural import constant_p
from ..cpu.control_flow import _States, _emit_revolve_split
from ..cpu.llvm_support import I64, I8, PTR, VOID, alloca_in_entry, for_range, index, memory_type
from .codegen import CUDAFunctionEmitter


class SerialRegionEmitter(CUDAFunctionEmitter):
    """Emits a whole IR function into one internal device function `void symbol(ptr
    args)` run by a single thread: every launch the kernels ask for is the same function
    (`begin_launch` opens it once), and grid-stride loops step by one."""

    def begin_launch(self, parallel: bool, items: int) -> None:
        if self._open is not None:
            self.ctx._grid_next = False
            return
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), self.symbol)
        fn.linkage = "internal"
        entry, setup, body, done = (fn.append_basic_block(n) for n in ("entry", "setup", "body", "done"))
        ir.IRBuilder(entry).branch(setup)
        self.entry_builder = ir.IRBuilder(setup)
        self.args = fn.args[0]
        self.ctx.thread, self.ctx.threads = index(0), index(1)
        self.buffers.new_function()
        self.ctx.builder = ir.IRBuilder(body)
        self.ctx._grid_next = False
        self._open = (fn, entry, body, done, True)
        self.function = fn

    def end_launch(self) -> None:
        """Kernels end here, the function does not: `finish` closes it."""

    def emit_function_serially(self) -> ir.Function:
        self.begin_launch(True, 1)
        self.emit_function()
        super().end_launch()
        return self.function


class _Region:
    """One region compiled as a device function of the module, and how to call it from
    the launch (or region function) now being emitted by `ec`."""

    def __init__(self, ec, fn: Function):
        ec.region_count += 1
        count = ec.region_count
        sched = schedule(fn, config.fusion)
        memory = plan_buffers(fn, sched)
        nested = SerialRegionEmitter(fn, sched, memory, ec.module, f"{ec.symbol}_region{count}", ec.grid,
                                     ec.ctx.math_library)
        self.function = nested.emit_function_serially()
        self.workspace = ec.scratch(nested.workspace_bytes)
        self.constants = [ec.constant_buffer(c) for c in nested.constants]
        self.ec = ec
        self.table = alloca_in_entry(ec.builder, PTR, "region.args",
                                     count=len(fn.args) + len(fn.outputs) + 1 + len(self.constants))

    def call(self, inputs, outputs) -> None:
        b = self.ec.builder
        for k, item in enumerate([*inputs, *outputs, self.workspace, *self.constants]):
            b.store(item, b.gep(self.table, [index(k)], inbounds=True, source_etype=PTR))
        b.call(self.function, [self.table])


def _nbytes(t) -> int:
    return t.size * t.dtype.itemsize


def _copy_all(ec, dsts, srcs, types) -> None:
    for dst, src, t in zip(dsts, srcs, types, strict=True):
        if _nbytes(t):
            ec.memcpy(dst, src, _nbytes(t))


def _load_scalar(ec, value, dtype: DType):
    return ec.builder.load(ec.pointer(value), typ=memory_type(dtype))


def _is_true(b, flag):
    return b.icmp_unsigned("!=", flag, ir.Constant(memory_type(DType.bool), 0))


def _offset(b, buffer, byte_offset):
    return b.gep(buffer, [byte_offset], inbounds=True, source_etype=I8)


def emit_region_op(ec, op) -> None:
    ec.begin_launch(False, 1)
    {cond_p: _emit_cond, while_p: _emit_while, fori_p: _emit_fori, scan_p: _emit_scan,
     reverse_fori_p: _emit_reverse_fori}[op.opdef](ec, op)


def _emit_cond(ec, op) -> None:
    b = ec.builder
    then_region, else_region = _Region(ec, region_function(op, 0)), _Region(ec, region_function(op, 1))
    inputs = [ec.pointer(v) for v in op.operands[1:]]
    outputs = [ec.pointer(r) for r in op.results]
    with b.if_else(_is_true(b, _load_scalar(ec, op.operands[0], DType.bool))) as (then, otherwise):
        with then:
            then_region.call(inputs, outputs)
        with otherwise:
            else_region.call(inputs, outputs)


def _emit_while(ec, op) -> None:
    b = ec.builder
    n = op.attrs["num_consts"]
    consts, inits = op.operands[:n], op.operands[n:]
    carry_types = [v.type for v in inits]
    test, body = _Region(ec, region_function(op, 0)), _Region(ec, region_function(op, 1))
    const_ptrs = [ec.pointer(v) for v in consts]
    carry = [ec.pointer(r) for r in op.results[:len(inits)]]
    fresh = [ec.scratch(_nbytes(t)) for t in carry_types]
    flag = ec.scratch(1)
    trips = alloca_in_entry(b, I64, "trips")
    _copy_all(ec, carry, [ec.pointer(v) for v in inits], carry_types)
    b.store(index(0), trips)
    header, step, done = (b.append_basic_block(f"while.{name}") for name in ("test", "body", "done"))
    b.branch(header)
    b.position_at_end(header)
    test.call([*const_ptrs, *carry], [flag])
    b.cbranch(_is_true(b, b.load(flag, typ=memory_type(DType.bool))), step, done)
    b.position_at_end(step)
    body.call([*const_ptrs, *carry], fresh)
    _copy_all(ec, carry, fresh, carry_types)
    b.store(b.add(b.load(trips, typ=I64), index(1)), trips)
    b.branch(header)
    b.position_at_end(done)
    if op.attrs.get("count_trips"):
        b.store(b.load(trips, typ=I64), ec.pointer(op.results[-1]))


def _passive_and_results(ec, op, carry_types, n_passive: int, results):
    """The carry buffers: passive carries (not results) in scratch, then the results."""
    return [ec.scratch(max(_nbytes(t), 1)) for t in carry_types[:n_passive]] + [ec.pointer(r) for r in results]


def _emit_fori(ec, op) -> None:
    b = ec.builder
    n, n_passive = op.attrs["num_consts"], op.attrs.get("num_passive", 0)
    consts, inits = op.operands[1:1 + n], op.operands[1 + n:]
    carry_types = [v.type for v in inits]
    body = _Region(ec, region_function(op, 0))
    const_ptrs = [ec.pointer(v) for v in consts]
    carry = _passive_and_results(ec, op, carry_types, n_passive, op.results)
    fresh = [ec.scratch(_nbytes(t)) for t in carry_types]
    counter = ec.scratch(8)
    _copy_all(ec, carry, [ec.pointer(v) for v in inits], carry_types)
    trips = _load_scalar(ec, op.operands[0], DType.i64)
    trips = b.select(b.icmp_signed("<", trips, index(0)), index(0), trips)
    with for_range(b, trips, "fori") as i:
        b.store(i, counter)
        body.call([counter, *const_ptrs, *carry], fresh)
        _copy_all(ec, carry, fresh, carry_types)


def _emit_scan(ec, op) -> None:
    b = ec.builder
    nc, nx = op.attrs["num_consts"], op.attrs["num_carry"]
    length, reverse = op.attrs["length"], op.attrs["reverse"]
    consts, inits, xs = op.operands[:nc], op.operands[nc:nc + nx], op.operands[nc + nx:]
    carry_types = [v.type for v in inits]
    n_passive = op.attrs.get("num_passive", 0)
    body = _Region(ec, region_function(op, 0))
    const_ptrs = [ec.pointer(v) for v in consts]
    carry = _passive_and_results(ec, op, carry_types, n_passive, op.results[:nx - n_passive])
    fresh = [ec.scratch(_nbytes(t)) for t in carry_types]
    x_ptrs = [ec.pointer(v) for v in xs]
    x_strides = [_nbytes(v.type) // length if length else 0 for v in xs]
    ys = op.results[nx - n_passive:]
    y_ptrs = [ec.pointer(r) for r in ys]
    y_strides = [_nbytes(r.type) // length if length else 0 for r in ys]
    _copy_all(ec, carry, [ec.pointer(v) for v in inits], carry_types)
    with for_range(b, index(length), "scan") as step:
        i = b.sub(index(length - 1), step) if reverse else step
        x_slices = [_offset(b, p, b.mul(i, index(s))) for p, s in zip(x_ptrs, x_strides, strict=True)]
        y_slices = [_offset(b, p, b.mul(i, index(s))) for p, s in zip(y_ptrs, y_strides, strict=True)]
        body.call([*const_ptrs, *carry, *x_slices], [*fresh, *y_slices])
        _copy_all(ec, carry, fresh, carry_types)


# --------------------------------------------------------------------------- reverse_fori

STACK_SNAPSHOT_BYTES = 8 << 20
"""The snapshot area of a `stack` reverse_fori on the GPU, which runs as revolve: the
states of a loop whose trip count is known only on the device cannot be stored whole
in the static workspace, and a kernel cannot allocate here. 8 MiB is little beside a
GPU's memory: it holds the most snapshots (1024) of states up to 8 KiB, and two of
states up to 4 MiB."""
MAX_STACK_SNAPSHOTS = 1024
"""The most snapshots a `stack` reverse_fori keeps on the GPU: with 1024, no step is
advanced more than twice beyond its first run up to 525,824 trips (binomial reach
C(1026, 2)), three times up to 1.8e8."""


def static_trip_bound(op) -> int | None:
    """A bound on the trips of a reverse_fori known at compile time: a reversed scan's
    length, or the value of a constant trip operand; None where the count is known only
    on the device (a `while` loop's recorded trip count)."""
    bounds = []
    if op.attrs.get("length") is not None:
        bounds.append(op.attrs["length"])
    trips_op = op.operands[0].defining_op
    if trips_op is not None and trips_op.opdef is constant_p:
        bounds.append(int(trips_op.attrs["value"]))
    return max(min(bounds), 0) if bounds else None


def snapshot_count(op, state_bytes: int) -> int:
    """The snapshots the GPU kernel of a reverse_fori keeps: the op's own for revolve,
    what `STACK_SNAPSHOT_BYTES` holds (2 to `MAX_STACK_SNAPSHOTS`) for stack; never more
    than a static bound on the trips (one snapshot per step is the whole stack)."""
    if op.attrs["reversal"] == REVOLVE:
        count = op.attrs["snapshots"]
    else:
        count = min(max(STACK_SNAPSHOT_BYTES // max(state_bytes, 1), 2), MAX_STACK_SNAPSHOTS)
    bound = static_trip_bound(op)
    return count if bound is None else max(min(count, bound), 1)


def _emit_reverse_fori(ec, op) -> None:
    """carry = step(i, state_i, carry) for i = trips-1 .. 0 over snapshots in the
    workspace (`snapshot_count`), the y slices of a reversed scan written at each step's
    index (slices past a short trip count stay zero)."""
    b = ec.builder
    n, n_passive, n_xs = op.attrs["num_consts"], op.attrs["num_passive"], op.attrs.get("num_xs", 0)
    length = op.attrs.get("length")
    consts = op.operands[1:1 + n]
    inits = op.operands[1 + n:1 + n + n_passive]
    carry_inits = op.operands[1 + n + n_passive:len(op.operands) - n_xs]
    xs = reversed_scan_xs(op)
    states = _States(v.type for v in inits)
    carry_types = [v.type for v in carry_inits]
    advance, back = _Region(ec, region_function(op, 0)), _Region(ec, region_function(op, 1))
    const_ptrs = [ec.pointer(v) for v in consts]
    counter = ec.scratch(8)
    carry = [ec.pointer(r) for r in op.results[:len(carry_inits)]]
    ys = op.results[len(carry_inits):]
    fresh = [ec.scratch(_nbytes(t)) for t in carry_types]
    _copy_all(ec, carry, [ec.pointer(v) for v in carry_inits], carry_types)
    for y in ys:
        if _nbytes(y.type):
            ec.memset_zero(ec.pointer(y), _nbytes(y.type))
    trips = _load_scalar(ec, op.operands[0], DType.i64)
    trips = b.select(b.icmp_signed("<", trips, index(0)), index(0), trips)
    if length is not None:             # a reversed scan never steps past its xs and ys
        trips = b.select(b.icmp_signed(">", trips, index(length)), index(length), trips)
    init_ptrs = [ec.pointer(v) for v in inits]
    x_ptrs, y_ptrs = [ec.pointer(v) for v in xs], [ec.pointer(r) for r in ys]
    x_strides = [_nbytes(v.type) // length if length else 0 for v in xs]
    y_strides = [_nbytes(r.type) // length if length else 0 for r in ys]

    def slices(i, ptrs, strides):
        k = b.sub(index(length - 1), i) if op.attrs.get("reverse") else i
        return [_offset(b, p, b.mul(k, index(stride))) for p, stride in zip(ptrs, strides, strict=True)]

    def step_back(i, state):
        b.store(i, counter)
        back.call([counter, *const_ptrs, *state, *carry, *slices(i, x_ptrs, x_strides)],
                  [*fresh, *slices(i, y_ptrs, y_strides)])
        _copy_all(ec, carry, fresh, carry_types)

    def step_forward(i, state, into):
        b.store(i, counter)
        advance.call([counter, *const_ptrs, *state, *slices(i, x_ptrs, x_strides)], into)

    _emit_revolve(ec, trips, snapshot_count(op, states.bytes), states, init_ptrs, step_forward, step_back)


def _emit_revolve(ec, trips, snapshots: int, states: _States, init_ptrs, step_forward, step_back) -> None:
    """Binomial checkpointing over `snapshots` packed states in the workspace: the loop
    of `run_reversal`'s revolve branch, step for step (the CPU's `_emit_revolve` less its
    Ctrl-C checks, which a device kernel has no way to receive)."""
    b = ec.builder
    slots = ec.scratch(max(snapshots * states.bytes, 1))
    positions = ec.scratch(snapshots * 8)
    work = [ec.scratch(max(_nbytes(t), 1)) for t in states.types]
    # a region's outputs must not alias its inputs (it may write one output before it
    # reads an input for another), so each advance writes a second set, copied back
    advanced = [ec.scratch(max(_nbytes(t), 1)) for t in states.types]

    def advance_work(i):
        step_forward(i, work, advanced)
        _copy_all(ec, work, advanced, states.types)
    depth = alloca_in_entry(b, I64, "revolve.depth")
    end = alloca_in_entry(b, I64, "revolve.end")
    _copy_all(ec, states.at(b, slots, index(0)), init_ptrs, states.types)
    b.store(index(0), positions)
    b.store(index(1), depth)
    b.store(trips, end)
    header, body, done = (b.append_basic_block(f"revolve.{name}") for name in ("test", "body", "done"))
    b.branch(header)
    b.position_at_end(header)
    b.cbranch(b.icmp_signed(">", b.load(end, typ=I64), index(0)), body, done)
    b.position_at_end(body)
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
            _copy_all(ec, work, states.at(b, slots, top), states.types)
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
                    _copy_all(ec, states.at(b, slots, d), work, states.types)
                    b.store(b.add(start, m), position_slot(d))
                    b.store(b.add(d, index(1)), depth)
    b.branch(header)
    b.position_at_end(done)
