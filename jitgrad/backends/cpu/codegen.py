"""The CPU backend's kernels: one IR function becomes one LLVM function, built with
llvmlite's IR builder through the backend-neutral kernel layer (jitgrad/backends/kernel.py)
and the CPU's scalar context (scalar.py).

The generated function is `void f(ptr args)`: `args` holds the input buffers, the
output buffers (allocated by the caller), then one workspace buffer that holds every
intermediate at the offset the memory plan gave it (buffers with disjoint lifetimes
share bytes; `workspace.py`), then the addresses of large constants. What is CPU-only
lives here: the function's arguments and constants, large fused loops run on libgomp's
threads, matrix products through BLAS, and stopping long calls on Ctrl-C.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
from llvmlite import ir

from jitgrad.ir import DType, Function, Value
from jitgrad.passes.memory import MemoryPlan
from jitgrad.passes.schedule import (Kernel, Schedule, is_index_map_concatenate, is_index_map_pad,
                                     widened_bfloat16)
from jitgrad.primitives import Contraction, Elementwise, Reduction
from ..kernel import Index, KernelEmitter, MatrixOperand, ReductionAccumulator, expression_ops
from .bf16_gemm import contraction_sizes, emit_bf16_gemm, worth_native
from .blas import CBLAS_NO_TRANS, CBLAS_ROW_MAJOR, CBLAS_TRANS
from .llvm_support import I32, I64, I8, PTR, VOID, alloca_in_entry, for_range, index, memory_type
from .runtime import KernelRuntime
from .scalar import CPUScalarContext

__all__ = ["CPUFunctionEmitter", "Index", "PARALLEL_MIN_WORK"]

INLINE_CONSTANT_BYTES = 256   # larger constants are passed by address, never printed into the IR
PARALLEL_MIN_WORK = 1 << 20   # estimated element-ops from which a fused loop runs on all cores
PARALLEL_BLOCK = 1 << 13      # fixed work unit: a multiple of every vector width
WIDE_STACK_BYTES = 1 << 15    # float64 accumulators of a narrower reduction up to this size live on the stack
MAX_COLUMN_ZONES = 8          # a fused row is split where paddings and concatenations change operand, up to this


def _address_key(pointer: ir.Value):
    """What identifies the address `pointer` holds: a constant byte offset from a base
    pointer is keyed by the two, so an elementwise kernel writing in place over its
    operand (two GEPs of the same workspace offset) hands its outlined loop one pointer
    for both. LLVM then sees each element read and written at one address and
    vectorizes the loop; with two pointers of unknown relation, its run-time overlap
    check fails on the in-place buffer and every element takes the scalar loop (scalar
    libm calls instead of libmvec's vector functions)."""
    if isinstance(pointer, ir.GEPInstr) and len(pointer.indices) == 1 and isinstance(pointer.indices[0], ir.Constant):
        return id(pointer.pointer), str(pointer.source_etype), pointer.indices[0].constant
    return id(pointer)


class CPUFunctionEmitter(KernelEmitter):
    """Builds the LLVM function for one scheduled IR function.

    Also the emit context `KernelKind` emitters receive on the CPU
    (jitgrad/primitives/kernel_kind.py): `builder`, `module`, `ctx`, `pointer`, `scratch`,
    `load`, `store`, `memset_zero`, `memcpy`, `blas`."""

    device = "cpu"

    def __init__(self, fn: Function, sched: Schedule, memory: MemoryPlan, module: ir.Module, symbol: str,
                 vector_math, blas, threads=None):
        self.module = module
        self.blas = blas
        self.llfn = ir.Function(module, ir.FunctionType(VOID, [PTR]), symbol)
        self.llfn.args[0].name = "args"
        super().__init__(fn, sched, memory,
                         CPUScalarContext(ir.IRBuilder(self.llfn.append_basic_block("entry")), module, vector_math))
        self._constant_count = 0
        self.constants: list[np.ndarray] = []
        """Large constants, in the argument slots after the workspace (see `_external_constant`)."""
        self.runtime = KernelRuntime(module)    # fork and Ctrl-C state (runtime.py)
        self._watch: tuple[ir.Value, ir.Value] | None = None
        # A program that calls BLAS runs its loops on threads only where libgomp's idle
        # workers sleep (blas.sleeping_gomp_workers): spinning workers and OpenBLAS's
        # threads fight for the cores (a 40x slowdown measured on 2 cores).
        descriptions = [op.opdef.lowering for op in fn.body.ops]
        uses_blas = blas is not None and any(isinstance(d, Contraction) or getattr(d, "uses_blas", False)
                                             for d in descriptions)
        self.threads = None if uses_blas and not getattr(threads, "beside_blas", False) else threads
        self._kernel_count = 0
        self._stoppable = False
        self._column: tuple[ir.Value, int, int] | None = None
        """The inner counter of the fused row zone being emitted and its bounds (`index_range`)."""

    @property
    def builder(self) -> ir.IRBuilder:
        return self.ctx.builder

    # ------------------------------------------------------------------ the function
    def emit(self) -> ir.Function:
        """Emit the whole function; returns it."""
        self._stoppable = self._may_run_long()
        self.emit_function()
        self.builder.ret_void()
        return self.llfn

    def argument_buffer(self, k: int) -> ir.Value:
        return self._load_pointer(self.llfn.args[0], k, f"in{k}")

    def output_buffer(self, k: int) -> ir.Value:
        return self._load_pointer(self.llfn.args[0], len(self.fn.args) + k, f"out{k}")

    def workspace_buffer(self) -> ir.Value:
        return self._load_pointer(self.llfn.args[0], len(self.fn.args) + len(self.fn.outputs), "workspace")

    def before_kernel(self, position: int, kernel: Kernel) -> None:
        if self._stoppable and position:
            self._return_if_interrupted()

    def _load_pointer(self, args, k: int, name: str) -> ir.Value:
        slot = self.builder.gep(args, [index(k)], inbounds=True, source_etype=PTR)
        return self.builder.load(slot, name=name, typ=PTR)

    # ------------------------------------------------------------------ emit context of kernel kinds
    def memset_zero(self, dst, nbytes: int) -> None:
        self.ctx.zero_bytes(dst, nbytes)

    def memcpy(self, dst, src, nbytes: int) -> None:
        self.ctx.copy_bytes(dst, src, nbytes)

    # ------------------------------------------------------------------ constants
    def constant_buffer(self, array) -> ir.Value:
        return self._global_constant(array)

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
        digest = hashlib.sha256(copy.reshape(-1).view(np.uint8).data).hexdigest()   # bytes: bfloat16 has no buffer format
        self.module.add_named_metadata("jitgrad.constants",
                                       [ir.MetaDataString(self.module, f"{digest} {copy.dtype.str} {copy.shape}")])
        return self._load_pointer(self.llfn.args[0], slot, f"const{len(self.constants)}")

    def element_offset(self, buffer, offset, dtype: DType) -> ir.Value:
        return self.builder.gep(buffer, [offset], inbounds=True, source_etype=memory_type(dtype))

    def wide_buffer(self, dtype: DType, count: int) -> ir.Value:
        """Accumulators of a partial reduction: on the stack when small."""
        if count * dtype.itemsize <= WIDE_STACK_BYTES:
            return self.ctx.local_array(dtype, count, "wide")
        return self.scratch(count * dtype.itemsize)

    # ------------------------------------------------------------------ fused loops on threads
    def emit_fused(self, kernel: Kernel) -> None:
        """Large kernels run in parallel (`_emit_fused_parallel`)."""
        if kernel.size * self._work_per_element(kernel) >= PARALLEL_MIN_WORK:
            self.allocate_stored(kernel)
            self._emit_fused_parallel(kernel)
            return
        super().emit_fused(kernel)

    def fused_loop(self, kernel: Kernel, start, count, accumulators) -> None:
        """A kernel with an iteration shape (members with index maps: slices, reversals,
        paddings, concatenations) runs positions start .. start + count - 1 as row
        segments: an outer loop over the rows the range touches (the multi-index of the
        leading axes derived once per row) and an inner loop over the columns of that row
        inside the range. The inner counter is the last axis's index, so index maps are
        affine in it and the inner loop vectorizes. Where a padding or a concatenation
        along the last axis changes operand (`_column_zones`), the row is split into one
        inner loop per zone, inside which the emitter knows the column's bounds
        (`index_range`) and reads the one operand directly instead of selecting. The
        positions and their order are the flat loop's, so blocks, reduction chunks and
        results are unchanged."""
        if kernel.shape is None:
            super().fused_loop(kernel, start, count, accumulators)
            return
        b = self.builder
        width = kernel.shape[-1]
        end = b.add(start, count)
        first_row = b.sdiv(start, index(width))
        rows = b.sub(b.sdiv(b.add(end, index(width - 1)), index(width)), first_row)
        with for_range(b, rows, "rows") as r:
            row = b.add(first_row, r)
            row_start = b.mul(row, index(width))
            from_start, to_end = b.sub(start, row_start), b.sub(end, row_start)
            leading = Index(kernel.shape[:-1], flat=row).get_multi(self.ctx)
            for zone_start, zone_end in self._column_zones(kernel):
                low = b.select(b.icmp_signed(">", from_start, index(zone_start)), from_start, index(zone_start))
                high = b.select(b.icmp_signed("<", to_end, index(zone_end)), to_end, index(zone_end))
                with for_range(b, b.sub(high, low), "fused") as j:
                    column = b.add(low, j, flags=["nuw", "nsw"])
                    self._column = (column, zone_start, zone_end)
                    self.fused_position(kernel, b.add(row_start, column, flags=["nuw", "nsw"]), [*leading, column],
                                        accumulators)
                    self._column = None

    def index_range(self, i) -> tuple[int, int] | None:
        if self._column is not None and i is self._column[0]:
            return self._column[1], self._column[2]
        return None

    def _column_zones(self, kernel: Kernel) -> list[tuple[int, int]]:
        """The column ranges [start, end) of a row inside which no padding or concatenation
        along the last axis, read at the kernel's own index, changes operand; one zone for
        the whole row where there are none or more than MAX_COLUMN_ZONES (each zone repeats
        the loop body)."""
        width, last = kernel.shape[-1], len(kernel.shape) - 1
        cuts: set[int] = set()

        def visit(value: Value, compute: bool) -> None:
            if value.type.shape != kernel.shape or (value in self.sched.materialized and not compute):
                return
            op = value.defining_op
            if op is None:
                return
            if is_index_map_pad(op):
                low, n = op.attrs["low"][last], op.operands[0].type.shape[last]
                cuts.update((low, low + n))
            elif is_index_map_concatenate(op) and op.attrs["axis"] == last:
                offset = 0
                for operand in op.operands:
                    offset += operand.type.shape[last]
                    cuts.add(offset)
            elif isinstance(op.opdef.lowering, Elementwise):
                for v in op.operands:
                    visit(v, False)

        for op in kernel.ops:
            if isinstance(op.opdef.lowering, Reduction):
                visit(op.operands[0], op.operands[0] not in self.sched.materialized)
            else:
                visit(op.results[0], True)
        edges = sorted(c for c in cuts if 0 < c < width)
        if len(edges) >= MAX_COLUMN_ZONES:
            edges = []
        bounds = [0, *edges, width]
        return list(zip(bounds[:-1], bounds[1:]))

    def _work_per_element(self, kernel) -> int:
        """A cost estimate: the ops computed per iteration, each weighed by its record's
        `cost` (math-library calls 16, arithmetic 1, undeclared 1).
        Threads pay off only past ~1e6 element-ops: below that, waking the workers (and
        their spinning, which competes with BLAS threads) costs more than it saves."""
        ops = {op for member in kernel.ops for op in expression_ops(member, self.sched)}
        return sum(op.opdef.cost or 1 for op in ops)

    def _emit_fused_parallel(self, kernel) -> None:
        """The kernel cut into fixed blocks of PARALLEL_BLOCK elements whatever the thread
        count, outlined into `f.kernelN.blocks(ptr closure, i64 first, i64 last)`. libgomp's
        GOMP_parallel runs it through `f.kernelN(ptr closure)`, which gives each thread a
        contiguous range of blocks; jitgrad's own pool (`config.threads_pool = "jitgrad"`,
        thread_pool.py) takes the blocks function itself and lets threads claim blocks one
        at a time; without threads (a program calling BLAS beside spinning workers, no
        pool, or a forked child under libgomp, whose pool is gone: runtime.py) the calling
        thread runs all blocks. Each block writes its partial reductions to its own slot, and the
        slots are combined in block order afterwards, so the result is bit-identical for
        any number of threads. Each block starts with a check for Ctrl-C (runtime.py): once
        an interrupt arrived for a caller that watches for it, the remaining blocks are
        skipped and the caller discards the results."""
        b, ctx = self.builder, self.ctx
        nblocks = -(-kernel.size // PARALLEL_BLOCK)
        reductions = [op for op in kernel.ops if isinstance(op.opdef.lowering, Reduction)]
        partials = self.scratch(max(len(reductions), 1) * nblocks * 8)
        used = sorted({v for op in kernel.ops for v in self.sched.reads(op.results[0], compute=True)
                       if v in self.buffers} | kernel.stored, key=lambda v: id(v))
        armed, baseline = self._interrupt_watch()
        slot_of, pointers = {}, []              # one closure slot per distinct address
        for v in used:
            key = _address_key(self.buffers[v])
            if key not in slot_of:
                slot_of[key] = len(pointers)
                pointers.append(self.buffers[v])
        closure = alloca_in_entry(b, PTR, "closure", count=len(pointers) + 3)
        for k, item in enumerate([*pointers, partials, armed, baseline]):
            b.store(item, b.gep(closure, [index(k)], inbounds=True, source_etype=PTR))

        self._kernel_count += 1
        name = f"{self.llfn.name}.kernel{self._kernel_count}"
        blocks = ir.Function(self.module, ir.FunctionType(VOID, [PTR, I64, I64]), f"{name}.blocks")
        blocks.linkage = "internal"
        blocks.attributes.add("noinline")         # called twice (threads, serial): compiled once
        saved = ctx.builder, self.buffers
        ctx.builder = ob = ir.IRBuilder(blocks.append_basic_block("entry"))
        self.buffers = dict(self.buffers)
        closure_arg, first, last = blocks.args
        loaded = [self._load_pointer(closure_arg, k, "buf") for k in range(len(pointers))]
        for v in used:
            self.buffers[v] = loaded[slot_of[_address_key(self.buffers[v])]]
        block_partials = self._load_pointer(closure_arg, len(pointers), "partials")
        slot_armed, slot_baseline = (ob.gep(closure_arg, [index(len(pointers) + j)], inbounds=True,
                                            source_etype=PTR) for j in (1, 2))
        block_armed, block_baseline = ob.load(slot_armed, typ=I64), ob.load(slot_baseline, typ=I64)
        with for_range(ob, ob.sub(last, first), "block") as k:
            with ob.if_then(ob.not_(self.runtime.interrupted(ob, block_armed, block_baseline))):
                blk = ob.add(first, k)
                start = ob.mul(blk, index(PARALLEL_BLOCK))
                remaining = ob.sub(index(kernel.size), start)
                count = ob.select(ob.icmp_signed("<", remaining, index(PARALLEL_BLOCK)), remaining,
                                  index(PARALLEL_BLOCK))
                accumulators = self.init_accumulators(kernel, PARALLEL_BLOCK)
                self.fused_iterations(kernel, start, count, accumulators)
                for r, op in enumerate(reductions):
                    accumulator = accumulators[op.results[0]]
                    ctx.store(block_partials, ob.add(ob.mul(index(r), index(nblocks)), blk), accumulator.total(),
                              accumulator.accumulator_dtype)
        ob.ret_void()
        ctx.builder, self.buffers = saved

        all_blocks = [closure, index(0), index(nblocks)]
        if self.threads is None:
            b.call(blocks, all_blocks)
        elif self.threads.claims_blocks:
            self.threads.emit_run(b, self.module, blocks, closure, index(nblocks))
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
                total.push(ctx.load(partials, b.add(index(r * nblocks), k), total.accumulator_dtype))
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

    # ------------------------------------------------------------------ matrix products
    def emit_contraction(self, op) -> None:
        """An operand widened from bfloat16 that the schedule left unmaterialized is read
        from its bfloat16 buffer (`widened_bfloat16`): two such operands go to the native
        kernel (bf16_gemm.py) where the host has AVX-512 BF16 and the result is wide
        enough to fill its tiles (`worth_native`); otherwise each is copied to float32 in
        its own layout (exact) and the product is any float32 product's."""
        narrow = [self._bfloat16_source(v) for v in op.operands]
        result = op.results[0]
        if narrow == [None, None] or result.type.size == 0:
            super().emit_contraction(op)
            return
        (lb, lf, lc), (rb, rc, rf), nb, m, n, k = contraction_sizes(op)
        out = self.allocate(result)
        if k == 0:
            self.ctx.zero_bytes(out, result.type.nbytes)
            return
        lhs, rhs = (source or v for source, v in zip(narrow, op.operands, strict=True))
        a, b = self.matrix_operand(lhs, lb, lf, lc), self.matrix_operand(rhs, rb, rc, rf)
        if None not in narrow and self.blas is not None and self.blas.native_bf16 and worth_native(m, n, k):
            emit_bf16_gemm(self, a, b, out, m, n, k, nb)
            return
        a = self._widened(a, m, k, nb) if narrow[0] is not None else a
        b = self._widened(b, k, n, nb) if narrow[1] is not None else b
        self.contract(nb, a, b, out, m, n, k, DType.f32)

    def _bfloat16_source(self, value: Value) -> Value | None:
        source = widened_bfloat16(value)
        return source if source is not None and value not in self.sched.materialized else None

    def _widened(self, operand: MatrixOperand, rows: int, cols: int, nb: int) -> MatrixOperand:
        """A float32 copy, in the same layout, of the elements of the bfloat16 buffer
        behind `operand` (nb matrices of rows x cols) from the first to the last it reads."""
        stored_rows, stored_cols = (cols, rows) if operand.trans else (rows, cols)
        extent = (nb - 1) * operand.batch_stride + (stored_rows - 1) * operand.ld + stored_cols
        wide = self.scratch(extent * 4)
        with self.ctx.loop(extent, "widen") as i:
            self.ctx.store(wide, i, self.ctx.load(operand.buffer, i, DType.bf16), DType.f32)
        return MatrixOperand(wide, operand.batch_stride, operand.trans, operand.ld)

    def contract(self, nb, a, b, c, m, n, k, dtype) -> None:
        """Each product through the BLAS routine NumPy would call for its shape (blas.py):
        dot for vector·vector, gemv for matrix·vector either way, gemm otherwise, the
        operands' transposes, leading dimensions and batch strides passed as they are.
        An operand broadcast over the batch (batch stride 0) against consecutive rows
        makes one gemm of nb·m rows. Integers, float16/bfloat16, BLAS's absence and
        outer products (k = 1: each element one exact product) use the loop kernel."""
        blas = self.blas
        if self._uses_loops(dtype, k):
            super().contract(nb, a, b, c, m, n, k, dtype)
            return
        if nb > 1 and b.batch_stride == 0 and not a.trans and a.batch_stride == m * a.ld and n > 1:
            nb, m = 1, nb * m
        bld, t = self.builder, memory_type(dtype)
        one, zero = ir.Constant(t, 1.0), ir.Constant(t, 0.0)
        trans = {False: ir.Constant(I32, CBLAS_NO_TRANS), True: ir.Constant(I32, CBLAS_TRANS)}
        row_major = ir.Constant(I32, CBLAS_ROW_MAJOR)

        def vector_step(operand, along_rows: bool) -> int:
            """Element step along an operand's single row (along_rows False) or column."""
            return (1 if operand.trans else operand.ld) if along_rows else (operand.ld if operand.trans else 1)

        def product(a_i, b_i, c_i) -> None:
            if m == 1 and n == 1 and blas.dot(self.module, dtype) is not None:
                total = bld.call(blas.dot(self.module, dtype),
                                 [index(k), a_i, index(vector_step(a, False)), b_i, index(vector_step(b, True))])
                bld.store(total, c_i)
            elif n == 1 and blas.gemv(self.module, dtype) is not None:       # y = A x
                rows, cols = (k, m) if a.trans else (m, k)
                bld.call(blas.gemv(self.module, dtype),
                         [row_major, trans[a.trans], index(rows), index(cols), one, a_i, index(a.ld),
                          b_i, index(vector_step(b, True)), zero, c_i, index(1)])
            elif m == 1 and blas.gemv(self.module, dtype) is not None:       # y = Bᵀ x
                rows, cols = (n, k) if b.trans else (k, n)
                bld.call(blas.gemv(self.module, dtype),
                         [row_major, trans[not b.trans], index(rows), index(cols), one, b_i, index(b.ld),
                          a_i, index(vector_step(a, False)), zero, c_i, index(1)])
            else:
                bld.call(blas.gemm(self.module, dtype),
                         [row_major, trans[a.trans], trans[b.trans], index(m), index(n), index(k),
                          one, a_i, index(a.ld), b_i, index(b.ld), zero, c_i, index(n)])

        if nb == 1:
            product(a.buffer, b.buffer, c)
            return
        with for_range(bld, nb, "batch") as bi:
            product(bld.gep(a.buffer, [bld.mul(bi, index(a.batch_stride))], inbounds=True, source_etype=t),
                    bld.gep(b.buffer, [bld.mul(bi, index(b.batch_stride))], inbounds=True, source_etype=t),
                    bld.gep(c, [bld.mul(bi, index(m * n))], inbounds=True, source_etype=t))

    def _uses_loops(self, dtype, k: int) -> bool:
        """Products BLAS does not compute here: the loop kernel's."""
        return self.blas is None or not self.blas.serves(dtype) or k == 1

    def matmuls(self, nb, a, a_trans, bm, b_trans, c, m, n, k, dtype) -> None:
        """Dense batches (kernel kinds such as the convolution call this): `contract`, or
        the loop kernel (which `contract` itself falls back to) where BLAS does not serve."""
        if self._uses_loops(dtype, k):
            super().matmuls(nb, a, a_trans, bm, b_trans, c, m, n, k, dtype)
            return
        self.contract(nb, MatrixOperand(a, m * k, a_trans, m if a_trans else k),
                      MatrixOperand(bm, k * n, b_trans, k if b_trans else n), c, m, n, k, dtype)
