"""Lowering one IR function to one LLVM function with llvmlite's IR builder.

The generated function is `void f(ptr args)`: `args` holds the input buffers, the
output buffers (allocated by the caller), then one workspace buffer that holds every
intermediate at the offset `jitgrad.passes.memory` planned (buffers with disjoint
lifetimes share bytes; `workspace.py`), then the addresses of large constants. Each
materialized value (see `jitgrad.passes.schedule`) becomes one loop nest; inlined values
are computed inside their consumer's loop body, which is loop fusion. Every primitive is lowered through the
target-neutral description in its record (`Elementwise`, `Gather`, `Scatter`,
`Reduction`, `Contraction`, `Alias`, `Constant`), so adding a primitive needs no change
here. All index maps come from static shapes checked by the shape rules, so no
generated access can leave its buffer.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
from llvmlite import ir

from jitgrad.ir import DType, Function, Value
from jitgrad.passes.memory import MemoryPlan
from jitgrad.passes.schedule import Schedule
from jitgrad.primitives.kernel_kind import KernelKind
from jitgrad.primitives import Alias, Constant, Contraction, Elementwise, Gather, Reduction, Scatter
from .llvm_support import (I1, I8, I32, I64, PTR, VOID, alloca_in_entry, declare, for_nest, for_range,
                           index, memory_type, register_type)
from .pairwise import REDUCTION_CHUNK, ReductionAccumulator, accumulator_dtype
from .runtime import KernelRuntime
from .scalar import CPUScalarContext

CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112
INLINE_CONSTANT_BYTES = 256   # larger constants are passed by address, never printed into the IR
PARALLEL_MIN_WORK = 1 << 20   # estimated element-ops from which a fused loop runs on all cores
PARALLEL_BLOCK = 1 << 13      # fixed work unit: a multiple of every vector width
WIDE_STACK_BYTES = 1 << 15    # float64 accumulators of a narrower reduction up to this size live on the stack


class Index:
    """A position inside an array of `shape`: a multi-index, a flat row-major offset, or
    both. Elementwise chains pass the flat offset through untouched (vectorizable flat
    loops); index-remapping ops need the multi-index, derived lazily when missing."""

    def __init__(self, shape, multi=None, flat=None):
        self.shape = tuple(shape)
        self.multi = multi
        self.flat = flat

    def get_multi(self, builder: ir.IRBuilder) -> list:
        if self.multi is None:
            rest, multi = self.flat, []
            for n in reversed(self.shape):
                multi.append(builder.urem(rest, index(n)))
                rest = builder.udiv(rest, index(n))
            self.multi = list(reversed(multi))
        return self.multi

    def offset_in(self, builder: ir.IRBuilder, shape) -> ir.Value:
        if self.flat is not None and tuple(shape) == self.shape:
            return self.flat
        return linearize(builder, self.get_multi(builder), shape)


def linearize(builder: ir.IRBuilder, multi, shape) -> ir.Value:
    offset = index(0)
    for i, n in zip(multi, shape, strict=True):
        offset = builder.add(builder.mul(offset, index(n), flags=["nsw"]), i, flags=["nsw"])
    return offset


class FunctionLowering:
    """Builds the LLVM function for one scheduled IR function."""

    def __init__(self, fn: Function, sched: Schedule, memory: MemoryPlan, module: ir.Module, symbol: str,
                 vector_math, blas, threads=None):
        self.fn, self.sched, self.module = fn, sched, module
        self.blas = blas
        self.llfn = ir.Function(module, ir.FunctionType(VOID, [PTR]), symbol)
        self.llfn.args[0].name = "args"
        self.builder = ir.IRBuilder(self.llfn.append_basic_block("entry"))
        self.ctx = CPUScalarContext(self.builder, module, vector_math)
        self.buffers: dict[Value, ir.Value] = {}
        self.output_slots: dict[Value, ir.Value] = {}
        self.workspace: ir.Value | None = None
        self.memory = memory
        self.workspace_bytes = self.memory.workspace_bytes
        self._constant_count = 0
        self.constants: list[np.ndarray] = []
        """Large constants, in the argument slots after the workspace (see `_external_constant`)."""
        self.memo: dict[Value, ir.Value] = {}   # fused-kernel members computed this iteration
        self.runtime = KernelRuntime(module)    # fork and Ctrl-C state (runtime.py)
        self._watch: tuple[ir.Value, ir.Value] | None = None
        # A program that calls BLAS keeps its loops on one thread: libgomp's workers spin
        # after a parallel loop and OpenBLAS's threads would then fight them for the cores
        # (a 40x slowdown measured on 2 cores; docs/benchmarks.md).
        descriptions = [op.opdef.lowering for op in fn.body.ops]
        uses_blas = blas is not None and any(isinstance(d, Contraction) or getattr(d, "uses_blas", False)
                                             for d in descriptions)
        self.threads = None if uses_blas else threads
        self._kernel_count = 0

    # ------------------------------------------------------------------ driver
    def lower(self) -> ir.Function:
        b, fn = self.builder, self.fn
        args = self.llfn.args[0]
        for k, v in enumerate(fn.args):
            self.buffers[v] = self._load_pointer(args, k, f"in{k}")
        out_ptrs = [self._load_pointer(args, len(fn.args) + k, f"out{k}") for k in range(len(fn.outputs))]
        self.workspace = self._load_pointer(args, len(fn.args) + len(fn.outputs), "workspace")
        for v, ptr in zip(fn.outputs, out_ptrs, strict=True):
            op = v.defining_op
            if op is not None and v not in self.output_slots and not isinstance(op.opdef.lowering, (Alias, Constant)):
                self.output_slots[v] = ptr
        stoppable = self._may_run_long()
        for position, kernel in enumerate(self.sched.kernels):
            if stoppable and position:
                self._return_if_interrupted()
            if kernel.fused:
                self._lower_fused(kernel)
            else:
                self._lower_op(kernel.ops[0])
        for v, ptr in zip(fn.outputs, out_ptrs, strict=True):
            if self.buffers[v] is not ptr and v.type.nbytes:
                self._memcpy(ptr, self.buffers[v], v.type.nbytes)
        b.ret_void()
        return self.llfn

    def _load_pointer(self, args, k: int, name: str) -> ir.Value:
        slot = self.builder.gep(args, [index(k)], inbounds=True, source_etype=PTR)
        return self.builder.load(slot, name=name, typ=PTR)

    def _lower_op(self, op) -> None:
        lowering = op.opdef.lowering
        result = op.results[0]
        if isinstance(lowering, Alias):
            self.buffers[result] = self.buffers[op.operands[0]]
        elif isinstance(lowering, Constant):
            self.buffers[result] = self._global_constant(op.attrs["value"])
        elif isinstance(lowering, (Elementwise, Gather)):
            self._lower_map(result)
        elif isinstance(lowering, Reduction):
            self._lower_reduction(op, lowering)
        elif isinstance(lowering, Contraction):
            self._lower_contraction(op)
        elif isinstance(lowering, Scatter):
            self._lower_scatter(op, lowering)
        elif isinstance(lowering, KernelKind):
            for result in op.results:
                self._allocate(result)
            lowering.emit(self, op)
        else:
            raise NotImplementedError(f"no CPU lowering for {op.name}")

    # ------------------------------------------------------------------ emit context of kernel kinds
    device = "cpu"
    """The device name `KernelKind.emit` selects its emitter by (jitgrad/primitives/kernel_kind.py)."""

    def pointer(self, value: Value) -> ir.Value:
        """The buffer of a materialized value: an operand or an allocated result."""
        return self.buffers[value]

    def scratch(self, nbytes: int) -> ir.Value:
        """`nbytes` of 64-byte aligned workspace for temporaries of the current kernel."""
        return self._scratch(nbytes)

    def memset_zero(self, dst, nbytes: int) -> None:
        self._memset_zero(dst, nbytes)

    def memcpy(self, dst, src, nbytes: int) -> None:
        self._memcpy(dst, src, nbytes)

    # ------------------------------------------------------------------ buffers
    def _allocate(self, value: Value) -> ir.Value:
        ptr = self.output_slots.get(value)
        if ptr is None and value in self.memory.in_output:      # an in-place chain ending in an output
            ptr = self.output_slots[self.memory.in_output[value]]
        if ptr is None and value in self.memory.offsets:
            ptr = self.builder.gep(self.workspace, [index(self.memory.offsets[value])], inbounds=True,
                                   source_etype=I8)
        if ptr is None:
            ptr = self._scratch(value.type.nbytes)
        self.buffers[value] = ptr
        return ptr

    def _scratch(self, nbytes: int) -> ir.Value:
        """A 64-byte aligned region of the workspace after the planned buffers, for
        temporaries of one kernel (transposed GEMM operands, partial sums)."""
        offset = self.workspace_bytes
        self.workspace_bytes += -(-max(nbytes, 1) // 64) * 64
        return self.builder.gep(self.workspace, [index(offset)], inbounds=True, source_etype=I8)

    def _global_constant(self, array) -> ir.Value:
        if array.nbytes > INLINE_CONSTANT_BYTES:
            return self._external_constant(array)
        data = bytearray(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()) or bytearray(1)
        self._constant_count += 1
        gv = ir.GlobalVariable(self.module, ir.ArrayType(I8, len(data)),
                               f"{self.llfn.name}.const{self._constant_count}")
        gv.initializer = ir.Constant(ir.ArrayType(I8, len(data)), data)
        gv.global_constant = True
        gv.linkage = "private"
        gv.align = 64
        return gv

    def _external_constant(self, array) -> ir.Value:
        """A large constant stays out of the LLVM IR (printed, a 10 MiB array is 24 MB of
        text and seconds of parsing): the executable keeps a private copy and passes its
        address in the argument slot after the workspace and the constants before it.
        The machine code holds no address, so it can be cached on disk; the module's
        `jitgrad.constants` metadata names the bytes' SHA-256, so the IR text that keys
        the cache still depends on them."""
        copy = np.array(array, dtype=array.dtype.newbyteorder("<"), order="C", copy=True)
        copy.flags.writeable = False
        slot = len(self.fn.args) + len(self.fn.outputs) + 1 + len(self.constants)
        self.constants.append(copy)
        digest = hashlib.sha256(copy.data).hexdigest()
        self.module.add_named_metadata("jitgrad.constants",
                                       [ir.MetaDataString(self.module, f"{digest} {copy.dtype.str} {copy.shape}")])
        return self._load_pointer(self.llfn.args[0], slot, f"const{len(self.constants)}")

    def _memcpy(self, dst, src, nbytes: int) -> None:
        memcpy = declare(self.module, "llvm.memcpy.p0.p0.i64", VOID, [PTR, PTR, I64, I1])
        self.builder.call(memcpy, [dst, src, index(nbytes), ir.Constant(I1, 0)])

    def _memset_zero(self, dst, nbytes: int) -> None:
        memset = declare(self.module, "llvm.memset.p0.i64", VOID, [PTR, I8, I64, I1])
        self.builder.call(memset, [dst, ir.Constant(I8, 0), index(nbytes), ir.Constant(I1, 0)])

    def load(self, value: Value, idx: Index) -> ir.Value:
        b, t = self.builder, memory_type(value.type.dtype)
        offset = index(0) if value.type.size == 1 else idx.offset_in(b, value.type.shape)
        x = b.load(b.gep(self.buffers[value], [offset], inbounds=True, source_etype=t), typ=t)
        return self.ctx.from_memory(x, value.type.dtype)

    def store(self, value: Value, idx: Index, x: ir.Value) -> None:
        b, t = self.builder, memory_type(value.type.dtype)
        x = self.ctx.to_memory(x, value.type.dtype)
        offset = index(0) if value.type.size == 1 else idx.offset_in(b, value.type.shape)
        b.store(x, b.gep(self.buffers[value], [offset], inbounds=True, source_etype=t))

    # ------------------------------------------------------------------ fused expressions
    def element(self, value: Value, idx: Index, compute: bool = False) -> ir.Value:
        """The element of `value` at `idx`: loaded if materialized (unless `compute`, used
        by the value's own loop), else computed here."""
        if value in self.memo and not compute:
            return self.memo[value]
        if value in self.sched.materialized and not compute:
            return self.load(value, idx)
        op = value.defining_op
        lowering = op.opdef.lowering
        if isinstance(lowering, Constant):
            return self.ctx.const_of(op.attrs["value"].item(), value.type.dtype)
        if isinstance(lowering, Elementwise):
            operands = [self.element(v, idx) for v in op.operands]
            if lowering.indexed:          # the element's row-major position comes first
                operands.insert(0, idx.offset_in(self.builder, value.type.shape))
            return self.elementwise(op, operands)
        if isinstance(lowering, Gather):
            operand = op.operands[0]
            if operand.type.ndim == 0:
                return self.element(operand, Index((), [], index(0)))
            mapped = lowering.index_map(self.ctx, idx.get_multi(self.builder), operand.type, value.type, **op.attrs)
            return self.element(operand, Index(operand.type.shape, mapped))
        raise AssertionError(f"{op.name} results are always materialized")

    def elementwise(self, op, operands: list) -> ir.Value:
        """An Elementwise rule applied to scalar operands. The rule learns its operands'
        dtype (`ctx.operand_dtype`: signedness is not in LLVM's integers), and an f16 or
        bf16 result is rounded to its dtype, as NumPy rounds every operation's result."""
        ctx = self.ctx
        saved, ctx.operand_dtype = ctx.operand_dtype, op.operands[-1].type.dtype if op.operands else None
        try:
            result = op.opdef.lowering.scalar(ctx, *operands, **op.attrs)
        finally:
            ctx.operand_dtype = saved
        return ctx.round_to(result, op.results[0].type.dtype)

    def _loop(self, shape, flat: bool, name: str):
        """Loops over `shape`, as one flat loop when possible; yields an Index."""
        return _FlatLoop(self, shape, name) if flat else _NestLoop(self, shape, name)

    # ------------------------------------------------------------------ kernels
    def _lower_map(self, result: Value) -> None:
        self._allocate(result)
        shape = result.type.shape
        with self._loop(shape, not self.sched.needs_multi_index(result, compute=True), "map") as idx:
            self.store(result, idx, self.element(result, idx, compute=True))

    def _lower_fused(self, kernel) -> None:
        """One flat loop computing every member; members read later in the same iteration
        come from registers (`memo`), full reductions accumulate in registers. Large
        kernels run in parallel (`_lower_fused_parallel`)."""
        for op in kernel.ops:
            if op.results[0] in kernel.stored:
                self._allocate(op.results[0])
        if kernel.size * self._work_per_element(kernel) >= PARALLEL_MIN_WORK:
            self._lower_fused_parallel(kernel)
            return
        accumulators = self._init_accumulators(kernel, kernel.size)
        self._fused_iterations(kernel, index(0), index(kernel.size), accumulators)
        for result, accumulator in accumulators.items():
            self.store(result, Index(()), accumulator.result())

    def _work_per_element(self, kernel) -> int:
        """A cost estimate: the ops computed per iteration, each weighed by its record's
        `cost` (math-library calls 16, arithmetic 1, undeclared 1).
        Threads pay off only past ~1e6 element-ops: below that, waking the workers (and
        their spinning, which competes with BLAS threads) costs more than it saves."""
        ops = {op for member in kernel.ops for op in _expression_ops(member, self.sched)}
        return sum(op.opdef.cost or 1 for op in ops)

    def _init_accumulators(self, kernel, max_items: int) -> dict:
        """For each full reduction of the kernel: a register accumulator for one chunk and
        a pairwise combiner of chunk results, for up to `max_items` items (pairwise.py)."""
        accumulators = {}
        for op in kernel.ops:
            result = op.results[0]
            if isinstance(op.opdef.lowering, Reduction):
                accumulators[result] = ReductionAccumulator(self.ctx, op.opdef.lowering, result.type.dtype,
                                                            -(-max_items // REDUCTION_CHUNK))
        return accumulators

    def _fused_iterations(self, kernel, start, count, accumulators) -> None:
        """The fused loop body for elements start .. start + count - 1; with reductions,
        in chunks of REDUCTION_CHUNK whose results go to the pairwise combiners."""
        b = self.builder
        if not accumulators:
            self._fused_loop(kernel, start, count, accumulators)
            return
        chunk = index(REDUCTION_CHUNK)
        full = b.udiv(count, chunk)

        def reduce_chunk(offset, size):
            for accumulator in accumulators.values():
                accumulator.start_chunk()
            self._fused_loop(kernel, b.add(start, offset, flags=["nsw"]), size, accumulators)
            for accumulator in accumulators.values():
                accumulator.end_chunk()

        with for_range(b, full, "chunk") as c:        # a constant trip count: no vector epilogue
            reduce_chunk(b.mul(c, chunk, flags=["nsw"]), chunk)
        tail = b.urem(count, chunk)
        with b.if_then(b.icmp_signed("!=", tail, index(0))):
            reduce_chunk(b.mul(full, chunk, flags=["nsw"]), tail)

    def _fused_loop(self, kernel, start, count, accumulators) -> None:
        b, ctx = self.builder, self.ctx
        with for_range(b, count, "fused") as j:
            i = b.add(start, j, flags=["nsw"])
            self.memo = {}
            for op in kernel.ops:
                result, lowering = op.results[0], op.opdef.lowering
                if isinstance(lowering, Reduction):
                    x = op.operands[0]
                    accumulators[result].add(self.element(x, Index(x.type.shape, flat=i)))
                    continue
                idx = Index(result.type.shape, flat=i)
                value = self.element(result, idx, compute=True)
                self.memo[result] = value
                if result in kernel.stored:
                    self.store(result, idx, value)
            self.memo = {}

    def _lower_fused_parallel(self, kernel) -> None:
        """The kernel cut into fixed blocks of PARALLEL_BLOCK elements whatever the thread
        count, outlined into `f.kernelN.blocks(ptr closure, i64 first, i64 last)`. libgomp's
        GOMP_parallel runs it through `f.kernelN(ptr closure)`, which gives each thread a
        contiguous range of blocks; without threads (a program calling BLAS, no libgomp,
        or a forked child, where libgomp's pool is gone: runtime.py) the calling thread
        runs all blocks. Each block writes its partial reductions to its own slot, and the
        slots are combined in block order afterwards, so the result is bit-identical for
        any number of threads. Each block starts with a check for Ctrl-C (runtime.py): once
        an interrupt arrived for a caller that watches for it, the remaining blocks are
        skipped and the caller discards the results."""
        b, ctx = self.builder, self.ctx
        nblocks = -(-kernel.size // PARALLEL_BLOCK)
        reductions = [op for op in kernel.ops if isinstance(op.opdef.lowering, Reduction)]
        partials = self._scratch(max(len(reductions), 1) * nblocks * 8)
        used = sorted({v for op in kernel.ops for v in self.sched.reads(op.results[0], compute=True)
                       if v in self.buffers} | kernel.stored, key=lambda v: id(v))
        armed, baseline = self._interrupt_watch()
        closure = alloca_in_entry(b, PTR, "closure", count=len(used) + 3)
        for k, item in enumerate([*(self.buffers[v] for v in used), partials, armed, baseline]):
            b.store(item, b.gep(closure, [index(k)], inbounds=True, source_etype=PTR))

        self._kernel_count += 1
        name = f"{self.llfn.name}.kernel{self._kernel_count}"
        blocks = ir.Function(self.module, ir.FunctionType(VOID, [PTR, I64, I64]), f"{name}.blocks")
        blocks.linkage = "internal"
        blocks.attributes.add("noinline")         # called twice (threads, serial): compiled once
        saved = self.builder, self.buffers
        self.builder = ctx.builder = ir.IRBuilder(blocks.append_basic_block("entry"))
        ob = self.builder
        self.buffers = dict(self.buffers)
        closure_arg, first, last = blocks.args
        for k, v in enumerate(used):
            self.buffers[v] = self._load_pointer(closure_arg, k, "buf")
        block_partials = self._load_pointer(closure_arg, len(used), "partials")
        slot_armed, slot_baseline = (ob.gep(closure_arg, [index(len(used) + j)], inbounds=True, source_etype=PTR)
                                     for j in (1, 2))
        block_armed, block_baseline = ob.load(slot_armed, typ=I64), ob.load(slot_baseline, typ=I64)
        with for_range(ob, ob.sub(last, first), "block") as k:
            with ob.if_then(ob.not_(self.runtime.interrupted(ob, block_armed, block_baseline))):
                blk = ob.add(first, k)
                start = ob.mul(blk, index(PARALLEL_BLOCK))
                remaining = ob.sub(index(kernel.size), start)
                count = ob.select(ob.icmp_signed("<", remaining, index(PARALLEL_BLOCK)), remaining,
                                  index(PARALLEL_BLOCK))
                accumulators = self._init_accumulators(kernel, PARALLEL_BLOCK)
                self._fused_iterations(kernel, start, count, accumulators)
                for r, op in enumerate(reductions):
                    accumulator = accumulators[op.results[0]]
                    slot = ob.gep(block_partials, [ob.add(ob.mul(index(r), index(nblocks)), blk)], inbounds=True,
                                  source_etype=accumulator.type)
                    ob.store(accumulator.total(), slot)
        ob.ret_void()
        self.builder, self.buffers = saved
        ctx.builder = self.builder

        all_blocks = [closure, index(0), index(nblocks)]
        if self.threads is None:
            b.call(blocks, all_blocks)
        else:
            with b.if_else(self.runtime.serial(b)) as (in_forked_child, threaded):
                with in_forked_child:
                    b.call(blocks, all_blocks)
                with threaded:
                    b.call(self.threads.parallel(self.module),
                           [self._thread_entry(name, blocks, nblocks), closure,
                            ir.Constant(I32, self.threads.count), ir.Constant(I32, 0)])
        for r, op in enumerate(reductions):          # combine block results pairwise, in block order
            result = op.results[0]
            total = ReductionAccumulator(ctx, op.opdef.lowering, result.type.dtype, nblocks, "total")
            with for_range(b, nblocks, "combine") as k:
                part = b.load(b.gep(partials, [b.add(index(r * nblocks), k)], inbounds=True, source_etype=total.type),
                              typ=total.type)
                total.push(part)
            self.store(result, Index(()), total.result())

    def _thread_entry(self, name: str, blocks: ir.Function, nblocks: int) -> ir.Function:
        """`name(ptr closure)`, run by every libgomp thread: its contiguous share of the blocks."""
        entry = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), name)
        entry.linkage = "internal"
        eb = ir.IRBuilder(entry.append_basic_block("entry"))
        thread = eb.sext(eb.call(self.threads.thread_num(self.module), []), I64)
        nthreads = eb.sext(eb.call(self.threads.num_threads(self.module), []), I64)
        first = eb.sdiv(eb.mul(thread, index(nblocks)), nthreads)
        last = eb.sdiv(eb.mul(eb.add(thread, index(1)), index(nblocks)), nthreads)
        eb.call(blocks, [entry.args[0], first, last])
        eb.ret_void()
        return entry

    @property
    def stops_on_interrupt(self) -> bool:
        """Whether the function has blocked loops that stop early for a watching caller."""
        return self._watch is not None

    def _may_run_long(self) -> bool:
        """Whether a call may run long enough to stop on Ctrl-C between kernels too: it
        has a blocked loop (which watches anyway) or a matrix product of at least
        PARALLEL_MIN_WORK multiply-adds (a BLAS call cannot be stopped inside)."""
        for kernel in self.sched.kernels:
            if kernel.fused and kernel.size * self._work_per_element(kernel) >= PARALLEL_MIN_WORK:
                return True
            op = kernel.ops[0]
            if not kernel.fused and isinstance(op.opdef.lowering, Contraction):
                lhs, (contracted, _) = op.operands[0], op.attrs["contract"]
                if op.results[0].type.size * math.prod(lhs.type.shape[a] for a in contracted) >= PARALLEL_MIN_WORK:
                    return True
        return False

    def _return_if_interrupted(self) -> None:
        """Return now if an interrupt arrived for a watching caller: the remaining kernels
        are skipped, and the caller discards the outputs."""
        b = self.builder
        with b.if_then(self.runtime.interrupted(b, *self._interrupt_watch()), likely=False):
            b.ret_void()

    def _interrupt_watch(self) -> tuple[ir.Value, ir.Value]:
        """(armed, baseline) of runtime.KernelRuntime.watch, read once at the top of the
        function, so that every blocked loop of one call compares with the same count."""
        if self._watch is None:
            entry = self.llfn.entry_basic_block
            entry_builder = ir.IRBuilder(entry)
            entry_builder.position_at_start(entry)
            self._watch = self.runtime.watch(entry_builder)
            if self.builder.block is entry:     # its position is an index, now short of the end
                self.builder.position_at_end(entry)
        return self._watch

    def _lower_reduction(self, op, lowering: Reduction) -> None:
        """A reduction on its own. Over trailing axes of a flat operand: per output
        element, chunks of REDUCTION_CHUNK combined pairwise (pairwise.py); over other
        axes: the result accumulates in place, one reduced index after another (NumPy's
        order for these), in a float64 buffer for narrower floats."""
        b = self.builder
        (x,), result, axes = op.operands, op.results[0], op.attrs["axes"]
        dtype = result.type.dtype
        self._allocate(result)
        kept = [k for k in range(x.type.ndim) if k not in axes]
        kept_shape = [x.type.shape[k] for k in kept]
        reduced_shape = [x.type.shape[k] for k in axes]
        size = math.prod(reduced_shape)
        if tuple(axes) == tuple(range(x.type.ndim - len(axes), x.type.ndim)):
            flat = not self.sched.needs_multi_index(x)
            with self._loop(kept_shape, flat, "outer") as out:
                acc = ReductionAccumulator(self.ctx, lowering, dtype, -(-size // REDUCTION_CHUNK) if flat else 1)
                if flat:
                    base = b.mul(out.flat, index(size), flags=["nsw"])
                    self._reduce_chunks(x, base, size, acc)
                else:
                    acc.start_chunk()
                    with for_nest(b, reduced_shape, "inner") as mr:
                        acc.add(self.element(x, Index(x.type.shape, [*out.get_multi(b), *mr])))
                    acc.end_chunk()
                self.store(result, out, acc.result())
            return
        acc_dtype = accumulator_dtype(dtype)
        buffer, buffer_type = self.buffers[result], register_type(acc_dtype)
        if acc_dtype != dtype:          # a float64 copy of the result: on the stack when small
            small = result.type.size * 8 <= WIDE_STACK_BYTES
            buffer = alloca_in_entry(b, buffer_type, "wide", count=result.type.size) if small else \
                self._scratch(result.type.size * 8)

        def slot(i):
            return b.gep(buffer, [i], inbounds=True, source_etype=buffer_type)

        acc = ReductionAccumulator(self.ctx, lowering, dtype, 1)
        with for_range(b, result.type.size, "init") as i:
            b.store(acc.init, slot(i))
        with for_nest(b, x.type.shape, "reduce") as m:
            out = slot(linearize(b, [m[k] for k in kept], result.type.shape))
            item = self.element(x, Index(x.type.shape, m))
            b.store(acc.combine_item(b.load(out, typ=buffer_type), item), out)
        if acc_dtype != dtype:
            with for_range(b, result.type.size, "narrow") as i:
                narrowed = self.ctx.convert(b.load(slot(i), typ=buffer_type), dtype, source=acc_dtype)
                self.store(result, Index(result.type.shape, flat=i), narrowed)

    def _reduce_chunks(self, x: Value, base, size: int, acc: ReductionAccumulator) -> None:
        """Elements base .. base + size - 1 of flat `x` into `acc`, one pairwise step per
        chunk of REDUCTION_CHUNK (static trip counts: each chunk loop vectorizes fully)."""
        b = self.builder
        full, rest = divmod(size, REDUCTION_CHUNK)

        def chunk(start, count: int) -> None:
            acc.start_chunk()
            with for_range(b, count, "inner") as j:
                acc.add(self.element(x, Index(x.type.shape, flat=b.add(start, j, flags=["nsw"]))))
            acc.end_chunk()

        if full:
            with for_range(b, full, "chunk") as c:
                chunk(b.add(base, b.mul(c, index(REDUCTION_CHUNK), flags=["nsw"]), flags=["nsw"]), REDUCTION_CHUNK)
        if rest or not full:
            chunk(b.add(base, index(full * REDUCTION_CHUNK), flags=["nsw"]), rest)

    def _lower_scatter(self, op, lowering: Scatter) -> None:
        result = op.results[0]
        self._memset_zero(self._allocate(result), result.type.nbytes)
        in_types = [v.type for v in op.operands]
        for k, operand in enumerate(op.operands):
            with for_nest(self.builder, operand.type.shape, f"scatter{k}.") as m:
                item = self.element(operand, Index(operand.type.shape, m))
                place = lowering.place(self.ctx, k, m, in_types, result.type, **op.attrs)
                self.store(result, Index(result.type.shape, place), item)

    def _permuted_copy(self, value: Value, perm) -> ir.Value:
        """A row-major copy of `value` with its axes in the order `perm`."""
        b, t = self.builder, memory_type(value.type.dtype)
        shape = [value.type.shape[p] for p in perm]
        dst = self._scratch(value.type.nbytes)
        with for_nest(b, shape, "perm") as m:
            src_multi = [None] * len(perm)
            for k, p in enumerate(perm):
                src_multi[p] = m[k]
            src = b.gep(self.buffers[value], [linearize(b, src_multi, value.type.shape)], inbounds=True, source_etype=t)
            dst_ptr = b.gep(dst, [linearize(b, m, shape)], inbounds=True, source_etype=t)
            b.store(b.load(src, typ=t), dst_ptr)
        return dst

    def _operand_layout(self, value: Value, batch, first, second):
        """Pointer and transposition flag that present `value` as (batch, first, second)."""
        ndim = value.type.ndim
        if [*batch, *first, *second] == list(range(ndim)):
            return self.buffers[value], False
        if [*batch, *second, *first] == list(range(ndim)):
            return self.buffers[value], True
        return self._permuted_copy(value, [*batch, *first, *second]), False

    def _lower_contraction(self, op) -> None:
        b = self.builder
        lhs, rhs = op.operands
        result = op.results[0]
        (lc, rc), (lb, rb) = op.attrs["contract"], op.attrs["batch"]
        lf = [a for a in range(lhs.type.ndim) if a not in lc and a not in lb]
        rf = [a for a in range(rhs.type.ndim) if a not in rc and a not in rb]
        nb = math.prod(lhs.type.shape[a] for a in lb)
        m = math.prod(lhs.type.shape[a] for a in lf)
        k = math.prod(lhs.type.shape[a] for a in lc)
        n = math.prod(rhs.type.shape[a] for a in rf)
        out = self._allocate(result)
        a_ptr, a_trans = self._operand_layout(lhs, lb, lf, lc)
        b_ptr, b_trans = self._operand_layout(rhs, rb, rc, rf)
        dtype = result.type.dtype
        if result.type.size == 0:
            return
        if k == 0:
            self._memset_zero(out, result.type.nbytes)
            return
        gemm = self.blas.gemm(self.module, dtype) if self.blas is not None else None
        t = memory_type(dtype)
        with for_range(b, nb, "batch") as bi:
            a_i = b.gep(a_ptr, [b.mul(bi, index(m * k))], inbounds=True, source_etype=t)
            b_i = b.gep(b_ptr, [b.mul(bi, index(k * n))], inbounds=True, source_etype=t)
            c_i = b.gep(out, [b.mul(bi, index(m * n))], inbounds=True, source_etype=t)
            if gemm is not None:
                one, zero = ir.Constant(t, 1.0), ir.Constant(t, 0.0)
                b.call(gemm, [ir.Constant(I32, CBLAS_ROW_MAJOR),
                              ir.Constant(I32, CBLAS_TRANS if a_trans else CBLAS_NO_TRANS),
                              ir.Constant(I32, CBLAS_TRANS if b_trans else CBLAS_NO_TRANS),
                              index(m), index(n), index(k), one, a_i, index(m if a_trans else k),
                              b_i, index(k if b_trans else n), zero, c_i, index(n)])
            else:
                self._naive_matmul(a_i, a_trans, b_i, b_trans, c_i, m, n, k, dtype)

    def _naive_matmul(self, a, a_trans, bm, b_trans, c, m, n, k, dtype) -> None:
        """C = A @ B with an i-k-j loop order (the inner loop is contiguous in C and B)."""
        b, ctx, t = self.builder, self.ctx, memory_type(dtype)
        zero = ctx.const_of(0, dtype)
        with for_range(b, m * n, "zero") as i:
            b.store(zero, b.gep(c, [i], inbounds=True, source_etype=t))
        with for_range(b, m, "mm.i") as i:
            with for_range(b, k, "mm.k") as kk:
                a_off = b.add(b.mul(kk, index(m)), i) if a_trans else b.add(b.mul(i, index(k)), kk)
                a_val = b.load(b.gep(a, [a_off], inbounds=True, source_etype=t), typ=t)
                with for_range(b, n, "mm.j") as j:
                    b_off = b.add(b.mul(j, index(k)), kk) if b_trans else b.add(b.mul(kk, index(n)), j)
                    b_val = b.load(b.gep(bm, [b_off], inbounds=True, source_etype=t), typ=t)
                    c_ptr = b.gep(c, [b.add(b.mul(i, index(n)), j)], inbounds=True, source_etype=t)
                    b.store(ctx.add(b.load(c_ptr, typ=t), ctx.mul(a_val, b_val)), c_ptr)


def _expression_ops(op, sched) -> set:
    """`op` and the inlined ops its value is computed from."""
    out = {op}
    for v in op.operands:
        if v not in sched.materialized and v.defining_op is not None:
            out |= _expression_ops(v.defining_op, sched)
    return out


class _FlatLoop:
    def __init__(self, lowering: FunctionLowering, shape, name):
        self.lowering, self.shape, self.name = lowering, tuple(shape), name

    def __enter__(self) -> Index:
        self._cm = for_range(self.lowering.builder, math.prod(self.shape), self.name)
        return Index(self.shape, flat=self._cm.__enter__())

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


class _NestLoop(_FlatLoop):
    def __enter__(self) -> Index:
        self._cm = for_nest(self.lowering.builder, self.shape, self.name)
        multi = self._cm.__enter__()
        return Index(self.shape, multi, linearize(self.lowering.builder, multi, self.shape))

