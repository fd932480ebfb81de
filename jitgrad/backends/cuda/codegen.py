"""CUDA kernels for one scheduled IR function, through the backend-neutral kernel layer.

Every kernel of the schedule becomes one or more *launches*: LLVM functions taking one
argument, `args`, the device address of a table holding the input buffers, the output
buffers, the workspace and the large constants (the CPU's layout, codegen.py there). A
launch is either

- *parallel*: its one grid-stride loop (`CUDAScalarContext.grid_loop`) spreads
  independent iterations over every thread of the grid: fused elementwise loops, maps,
  gathers, reductions over trailing axes (one output element per iteration), the first
  pass of full reductions (one fixed block of items per iteration), matrix products (one
  output element per iteration) and transposed operand copies; or
- *single*: thread 0 runs it alone (scatters, reductions over leading axes, the second
  pass of full reductions): correct for any launch configuration, slow for big ones.

Kernel kinds (sorts, scans, runtime-index gathers and scatters, convolution, fft,
control flow) open their own launches in their modules (gather.py, cumulative.py,
sort.py, convolution.py, fft.py, control_flow.py).

Launches run in order on one stream, so each sees everything the previous ones wrote.

Full reductions are deterministic two-pass reductions: pass one cuts the items into fixed
blocks of REDUCTION_BLOCK (whatever the grid), each reduced by one thread in chunks
combined pairwise (the kernel layer's `fused_iterations`); pass two combines the block
results pairwise in block order. The result depends only on the shapes: bit-identical
run to run and for any grid.

`GridTarget` says how a launch learns its thread index: `PTXGrid` reads NVPTX's special
registers, `HostGrid` (the grid emulator) takes them as arguments from a host loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from jitgrad.errors import UnsupportedOperationError
from jitgrad.ir import DType, Function, Value
from jitgrad.passes.memory import MemoryPlan
from jitgrad.passes.schedule import Kernel, Schedule
from jitgrad.primitives import Alias, Constant, Reduction
from jitgrad.primitives.kernel_kind import KernelKind
from ..kernel import Index, KernelEmitter, ReductionAccumulator
from ..cpu.llvm_support import I8, I32, I64, PTR, VOID, declare, for_range, index, memory_type
from .scalar import CUDAScalarContext

REFUSED_KINDS = {
    "LapackKernel": "the GPU has no LAPACK here (no cuSOLVER binding yet); compile this function for the CPU",
    "PureCallbackKernel": "a host Python callback cannot run inside a GPU kernel; compile this function for the CPU",
}
"""Kernel kinds the CUDA backend refuses, by class name, with the reason the error gives
(the generic "no kernel for device" message says what but not why)."""

REDUCTION_BLOCK = 1 << 13
"""Items per first-pass block of a full reduction (the CPU's parallel block: the same
partition, so the same partial sums)."""


@dataclass(frozen=True)
class Launch:
    """One kernel launch: the function's name, whether its grid-stride loop spreads over
    the grid (else thread 0 runs it alone), and its iteration count (grid sizing)."""
    name: str
    parallel: bool
    items: int


class PTXGrid:
    """Kernels for the GPU: `ptx_kernel` functions reading %tid, %ctaid, %ntid, %nctaid."""

    @staticmethod
    def kernel_function(module: ir.Module, name: str) -> ir.Function:
        fn = ir.Function(module, ir.FunctionType(VOID, [PTR]), name)
        fn.calling_convention = "ptx_kernel"
        return fn

    @staticmethod
    def position(builder: ir.IRBuilder, fn: ir.Function):
        module = fn.module
        tid, ctaid, ntid, nctaid = (
            builder.call(declare(module, f"llvm.nvvm.read.ptx.sreg.{r}.x", I32, []), [])
            for r in ("tid", "ctaid", "ntid", "nctaid"))
        return tid, ctaid, ntid, nctaid


class HostGrid:
    """Kernels for the grid emulator: internal functions taking (args, threadIdx.x,
    blockIdx.x, blockDim.x, gridDim.x), and per kernel an exported
    `<name>.launch(args, gridDim.x, blockDim.x)` that runs every thread of every block,
    blocks in reverse order and threads in order (no kernel here synchronizes threads,
    so one after another is a legal schedule of the grid)."""

    @staticmethod
    def kernel_function(module: ir.Module, name: str) -> ir.Function:
        fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I32, I32, I32, I32]), name)
        fn.linkage = "internal"
        launcher = ir.Function(module, ir.FunctionType(VOID, [PTR, I32, I32]), f"{name}.launch")
        b = ir.IRBuilder(launcher.append_basic_block("entry"))
        args, nctaid, ntid = launcher.args
        with for_range(b, b.zext(nctaid, I64), "block") as k:
            block = b.trunc(b.sub(b.sub(b.zext(nctaid, I64), k), index(1)), I32)
            with for_range(b, b.zext(ntid, I64), "thread") as t:
                b.call(fn, [args, b.trunc(t, I32), block, ntid, nctaid])
        b.ret_void()
        return fn

    @staticmethod
    def position(builder: ir.IRBuilder, fn: ir.Function):
        return tuple(fn.args[1:5])


@dataclass(frozen=True)
class _Deferred:
    """A buffer asked for between launches: its place, made a pointer by `translate`."""
    place: tuple


class _Buffers:
    """The emitter's `buffers`: each buffer is remembered by where it lives (a slot of
    the argument table, or an offset into the workspace), and made into a pointer in the
    entry block of whichever launch function uses it."""

    def __init__(self, emitter: "CUDAFunctionEmitter"):
        self.emitter = emitter
        self.places: dict[Value, tuple] = {}
        self.local: dict = {}          # place -> pointer in the current function
        self.place_of: dict[int, tuple] = {}   # id(pointer) -> place, for pointers handed out

    def new_function(self) -> None:
        self.local = {}

    def realize(self, place: tuple):
        if self.emitter._open is None:        # between launches: a place to translate later
            return _Deferred(place)
        pointer = self.local.get(place)
        if pointer is None:
            b = self.emitter.entry_builder
            kind, where = place
            if kind == "slot":
                slot = b.gep(self.emitter.args, [index(where)], inbounds=True, source_etype=PTR)
                pointer = b.load(slot, typ=PTR)
            else:
                pointer = b.gep(self.realize(("slot", self.emitter.workspace_slot)), [index(where)],
                                inbounds=True, source_etype=I8)
            self.local[place] = pointer
            self.place_of[id(pointer)] = place
        return pointer

    def translate(self, pointer):
        """A pointer made in an earlier launch function, made again in the current one."""
        place = pointer.place if isinstance(pointer, _Deferred) else self.place_of.get(id(pointer))
        return pointer if place is None else self.realize(place)

    def set_place(self, value: Value, place: tuple) -> None:
        self.places[value] = place

    def __getitem__(self, value: Value):
        return self.realize(self.places[value])

    def __setitem__(self, value: Value, pointer) -> None:
        place = pointer.place if isinstance(pointer, _Deferred) else self.place_of.get(id(pointer))
        if place is None:
            raise AssertionError(f"a buffer for {value} that lives nowhere the launches can find")
        self.places[value] = place

    def __contains__(self, value) -> bool:
        return value in self.places

    def get(self, value, default=None):
        return self[value] if value in self.places else default


class CUDAFunctionEmitter(KernelEmitter):
    """Builds the launch functions of one scheduled IR function into `module`.

    Also the emit context `KernelKind` emitters receive for device "cuda": `builder`,
    `module`, `ctx`, `pointer`, `scratch`, `load`, `store`, `memset_zero`, `memcpy`;
    `blas` is None. Such an emitter first opens its launches with `begin_launch(parallel,
    items)` (pointers and scratch are asked for after it) and, in a parallel launch, runs
    its independent items in `ctx.grid_loop`: every thread runs the rest of the launch."""

    device = "cuda"
    blas = None

    def __init__(self, fn: Function, sched: Schedule, memory: MemoryPlan, module: ir.Module, symbol: str,
                 grid, math_library):
        self.module = module
        self.symbol = symbol
        self.grid = grid
        super().__init__(fn, sched, memory, CUDAScalarContext(None, module, math_library))
        self.buffers = _Buffers(self)
        self.launches: list[Launch] = []
        self.constants: list[np.ndarray] = []
        self.workspace_slot = len(fn.args) + len(fn.outputs)
        self.output_places: dict[Value, tuple] = {}
        self.entry_builder: ir.IRBuilder | None = None
        self.args = None
        self._open = None
        self.region_count = 0
        """Control-flow regions compiled so far (their device functions' names count them)."""

    @property
    def builder(self) -> ir.IRBuilder:
        return self.ctx.builder

    # ------------------------------------------------------------------ launches
    def begin_launch(self, parallel: bool, items: int) -> None:
        """Close the current launch function and open the next one."""
        self.end_launch()
        name = f"{self.symbol}_k{len(self.launches)}"
        fn = self.grid.kernel_function(self.module, name)
        # entry: the allocas of private arrays (alloca_in_entry puts them first);
        # setup: thread indices and buffer pointers, made on first use by any block
        entry, setup, body, done = (fn.append_basic_block(n) for n in ("entry", "setup", "body", "done"))
        ir.IRBuilder(entry).branch(setup)
        self.entry_builder = eb = ir.IRBuilder(setup)
        self.args = fn.args[0]
        tid, ctaid, ntid, nctaid = self.grid.position(eb, fn)
        wide = [eb.zext(x, I64) for x in (tid, ctaid, ntid, nctaid)]
        self.ctx.thread = eb.add(eb.mul(wide[1], wide[2]), wide[0], name="thread")
        self.ctx.threads = eb.mul(wide[2], wide[3], name="threads")
        self.buffers.new_function()
        self.ctx.builder = ir.IRBuilder(body)
        self.ctx._grid_next = False
        self._open = (fn, entry, body, done, parallel)
        self.launches.append(Launch(name, parallel, max(int(items), 1)))

    def end_launch(self) -> None:
        if self._open is None:
            return
        fn, entry, body, done, parallel = self._open
        self.ctx.builder.branch(done)
        self.entry_builder.position_at_end(self.entry_builder.block)
        if parallel:
            self.entry_builder.branch(body)
        else:                    # thread 0 alone
            eb = self.entry_builder
            eb.cbranch(eb.icmp_unsigned("==", self.ctx.thread, index(0)), body, done)
        ir.IRBuilder(done).ret_void()
        self._open = None

    # ------------------------------------------------------------------ buffers
    def emit(self) -> list[Launch]:
        self.emit_function()
        self.end_launch()
        return self.launches

    def emit_function(self) -> None:
        fn = self.fn
        for k, v in enumerate(fn.args):
            self.buffers.set_place(v, ("slot", k))
        out_places = [("slot", len(fn.args) + k) for k in range(len(fn.outputs))]
        for v, place in zip(fn.outputs, out_places, strict=True):
            op = v.defining_op
            if op is not None and v not in self.output_places and not isinstance(op.opdef.lowering, (Alias, Constant)):
                self.output_places[v] = place
        for kernel in self.sched.kernels:
            if kernel.fused:
                self.emit_fused(kernel)
            else:
                self.emit_op(kernel.ops[0])
        for v, place in zip(fn.outputs, out_places, strict=True):
            if self.buffers.places[v] != place and v.type.nbytes:
                self.begin_launch(True, v.type.nbytes)
                dst, src = self.buffers.realize(place), self.buffers[v]
                with self.ctx.grid_loop(v.type.nbytes, "copy") as i:
                    self.ctx.store(dst, i, self.ctx.load(src, i, DType.u8), DType.u8)

    def allocate(self, value: Value):
        place = self.output_places.get(value)
        if place is None and value in self.memory.in_output:
            place = self.output_places[self.memory.in_output[value]]
        if place is None and value in self.memory.offsets:
            place = ("workspace", self.memory.offsets[value])
        if place is None:
            place = ("workspace", self._scratch_offset(value.type.nbytes))
        self.buffers.set_place(value, place)
        return self.buffers[value]

    def _scratch_offset(self, nbytes: int) -> int:
        offset = self.workspace_bytes
        self.workspace_bytes += -(-max(nbytes, 1) // 64) * 64
        return offset

    def scratch(self, nbytes: int):
        return self.buffers.realize(("workspace", self._scratch_offset(nbytes)))

    def constant_buffer(self, array):
        """Every constant is passed by address (argument slots after the workspace): the
        executable copies it to the device once."""
        copy = np.array(array, dtype=array.dtype.newbyteorder("<"), order="C", copy=True)
        copy.flags.writeable = False
        slot = self.workspace_slot + 1 + len(self.constants)
        self.constants.append(copy)
        return self.buffers.realize(("slot", slot))

    def element_offset(self, buffer, offset, dtype: DType):
        return self.builder.gep(buffer, [offset], inbounds=True, source_etype=memory_type(dtype))

    def memset_zero(self, dst, nbytes: int) -> None:
        self.ctx.zero_bytes(dst, nbytes)

    def memcpy(self, dst, src, nbytes: int) -> None:
        self.ctx.copy_bytes(dst, src, nbytes)

    # ------------------------------------------------------------------ kernels
    def emit_map(self, result: Value) -> None:
        self.begin_launch(True, result.type.size)
        self.ctx.grid_next()
        super().emit_map(result)

    def emit_fused(self, kernel: Kernel) -> None:
        reductions = [op for op in kernel.ops if isinstance(op.opdef.lowering, Reduction)]
        if not reductions:
            self.begin_launch(True, kernel.size)
            self.allocate_stored(kernel)
            self.ctx.grid_next()
            self.fused_loop(kernel, self.ctx.index_const(0), self.ctx.index_const(kernel.size), {})
            return
        self._emit_fused_reduction(kernel, reductions)

    def _emit_fused_reduction(self, kernel: Kernel, reductions) -> None:
        """Pass one: fixed blocks of REDUCTION_BLOCK items, one per grid-loop iteration,
        each writing its partial results; pass two: thread 0 combines them in order."""
        ctx = self.ctx
        nblocks = -(-kernel.size // REDUCTION_BLOCK)
        self.begin_launch(True, nblocks)
        self.allocate_stored(kernel)
        partials_offset = self._scratch_offset(len(reductions) * nblocks * 8)
        partials = self.buffers.realize(("workspace", partials_offset))
        with ctx.grid_loop(nblocks, "block") as blk:
            start = ctx.index_mul(blk, ctx.index_const(REDUCTION_BLOCK))
            remaining = ctx.index_sub(ctx.index_const(kernel.size), start)
            block = ctx.index_const(REDUCTION_BLOCK)
            count = ctx.select(ctx.index_cmp("<", remaining, block), remaining, block)
            accumulators = self.init_accumulators(kernel, min(REDUCTION_BLOCK, kernel.size))
            self.fused_iterations(kernel, start, count, accumulators)
            for r, op in enumerate(reductions):
                accumulator = accumulators[op.results[0]]
                slot = ctx.index_add(ctx.index_const(r * nblocks), blk)
                ctx.store(partials, slot, accumulator.total(), accumulator.accumulator_dtype)
        self.begin_launch(False, 1)
        partials = self.buffers.realize(("workspace", partials_offset))
        for r, op in enumerate(reductions):
            result = op.results[0]
            total = ReductionAccumulator(ctx, op.opdef.lowering, result.type.dtype, nblocks, "total")
            with ctx.loop(nblocks, "combine") as k:
                total.push(ctx.load(partials, ctx.index_add(ctx.index_const(r * nblocks), k),
                                    total.accumulator_dtype))
            self.store(result, Index(()), total.result())

    def emit_reduction(self, op, description: Reduction) -> None:
        x, axes = op.operands[0], op.attrs["axes"]
        trailing = tuple(axes) == tuple(range(x.type.ndim - len(axes), x.type.ndim))
        self.begin_launch(trailing, op.results[0].type.size)
        if trailing:         # one output element per grid-loop iteration
            self.ctx.grid_next()
        super().emit_reduction(op, description)

    def emit_scatter(self, op, description) -> None:
        self.begin_launch(False, 1)
        super().emit_scatter(op, description)

    def emit_kernel_kind(self, op, kind: KernelKind) -> None:
        """The kind's "cuda" emitter opens the launches it needs (`begin_launch`): a
        parallel one with a grid-stride loop over independent items, or one for thread 0
        alone. Kinds the GPU cannot run are refused with the reason (`REFUSED_KINDS`)."""
        reason = REFUSED_KINDS.get(type(kind).__name__)
        if reason is not None and "cuda" not in kind.emitters:
            raise UnsupportedOperationError(f"{op.name} has no kernel for device 'cuda': {reason}", op.loc)
        self.end_launch()
        kind.emit(self, op)

    # ------------------------------------------------------------------ contraction
    def permuted_copy(self, value: Value, perm):
        self.begin_launch(True, value.type.size)
        self.ctx.grid_next()
        return super().permuted_copy(value, perm)

    def emit_contraction(self, op) -> None:
        """dot_general as batched matrix products: operands presented as (batch, rows,
        columns), transposed copies made first where needed, then one launch computing
        each output element as a dot product in order of k."""
        lhs, rhs = op.operands
        result = op.results[0]
        (lc, rc), (lb, rb) = op.attrs["contract"], op.attrs["batch"]
        lf = [a for a in range(lhs.type.ndim) if a not in lc and a not in lb]
        rf = [a for a in range(rhs.type.ndim) if a not in rc and a not in rb]
        nb = math.prod(lhs.type.shape[a] for a in lb)
        m = math.prod(lhs.type.shape[a] for a in lf)
        k = math.prod(lhs.type.shape[a] for a in lc)
        n = math.prod(rhs.type.shape[a] for a in rf)
        self.allocate(result)
        a_buf, a_trans = self.operand_layout(lhs, lb, lf, lc)
        b_buf, b_trans = self.operand_layout(rhs, rb, rc, rf)
        if result.type.size == 0:
            return
        self.begin_launch(True, result.type.size)
        a_buf, b_buf = self.buffers.translate(a_buf), self.buffers.translate(b_buf)
        out = self.buffers[result]
        self.matmuls_parallel(nb, a_buf, a_trans, b_buf, b_trans, out, m, n, k, result.type.dtype)

    def matmuls_parallel(self, nb, a, a_trans, bm, b_trans, c, m, n, k, dtype: DType) -> None:
        ctx = self.ctx
        c_ = ctx.index_const
        with ctx.grid_loop(nb * m * n, "mm") as flat:
            j = ctx.index_rem(flat, c_(n))
            rows = ctx.index_div(flat, c_(n))
            i = ctx.index_rem(rows, c_(m))
            batch = ctx.index_div(rows, c_(m))
            a_base = ctx.index_mul(batch, c_(m * k))
            b_base = ctx.index_mul(batch, c_(k * n))
            acc = ctx.local_array(dtype, 1, "dot")
            ctx.store(acc, c_(0), ctx.const_of(0, dtype), dtype)
            with ctx.loop(k, "mm.k") as kk:
                a_off = (ctx.index_add(ctx.index_mul(kk, c_(m)), i) if a_trans
                         else ctx.index_add(ctx.index_mul(i, c_(k)), kk))
                b_off = (ctx.index_add(ctx.index_mul(j, c_(k)), kk) if b_trans
                         else ctx.index_add(ctx.index_mul(kk, c_(n)), j))
                product = ctx.mul(ctx.load(a, ctx.index_add(a_base, a_off), dtype),
                                  ctx.load(bm, ctx.index_add(b_base, b_off), dtype))
                ctx.store(acc, c_(0), ctx.add(ctx.load(acc, c_(0), dtype), product), dtype)
            ctx.store(c, flat, ctx.load(acc, c_(0), dtype), dtype)

