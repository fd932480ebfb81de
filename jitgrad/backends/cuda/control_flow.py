"""CUDA kernels of the control-flow region ops `cond`, `while`, `fori` and `scan`
(jitgrad/primitives/control_flow.py): device-side loops in one launch.

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
  scan   the i-th x slice read in place, the i-th y slice written in place.

A region's workspace is part of the outer function's workspace; its constants are the
outer function's constants. Correct for any data, and slow for large arrays (one GPU
thread does all the work): a first step, which keeps loops on the device instead of
refusing them. `reverse_fori` (reverse mode through `while`/`fori`, which keeps every
state of the loop) is refused.
"""
from __future__ import annotations

from llvmlite import ir

from jitgrad.config import config
from jitgrad.errors import UnsupportedOperationError
from jitgrad.ir import DType, Function
from jitgrad.passes.memory import plan_buffers
from jitgrad.passes.schedule import schedule
from jitgrad.primitives.control_flow import cond_p, fori_p, region_function, reverse_fori_p, scan_p, while_p
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
    if op.opdef is reverse_fori_p:
        raise UnsupportedOperationError(
            f"{op.name} has no kernel for device 'cuda': reverse mode through a while or fori loop keeps every "
            "state of the loop, which the GPU backend does not store yet; compile this function for the CPU, "
            "or differentiate a scan (or a Python for loop over a static range)", op.loc)
    ec.begin_launch(False, 1)
    {cond_p: _emit_cond, while_p: _emit_while, fori_p: _emit_fori, scan_p: _emit_scan}[op.opdef](ec, op)


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
