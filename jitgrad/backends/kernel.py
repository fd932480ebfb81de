"""The backend-neutral kernel layer: how a scheduled IR function becomes loops.

Everything here is written against `ScalarContext`, the scalar operations a target
provides (arithmetic, comparisons, casts, math calls, loads and stores, loops). The CPU
implements it by emitting LLVM IR (`backends/cpu/scalar.py`); another target implements
the same protocol and reuses:

- `Index` and `linearize`: positions in row-major arrays, flat or multi-dimensional;
- `KernelEmitter`: element access through the schedule (a materialized value is loaded,
  an inlined one computed in its consumer's loop: loop fusion), the fused-loop driver
  with its register accumulators, and one kernel per kind of lowering description
  (`Elementwise`, `Gather`, `Scatter`, `Reduction`, `Contraction`, `Alias`, `Constant`,
  and `KernelKind` for kernels of their own);
- `ReductionAccumulator`: accurate, deterministic reductions (below).

Reductions. A float reduction accumulates in float64 whatever its dtype (float32 and
float16 items are widened exactly; max and min are unchanged by it, sums become far
more accurate than NumPy's float32 pairwise sum), and the result is rounded once at the
end. Items are cut into fixed chunks of `REDUCTION_CHUNK` (items read through an index
map, such as a transpose, into blocks of whole rows of at most `GATHERED_CHUNK`:
`ReductionBlocks`): each chunk is one loop (its lanes are independent partial sums when
vectorized), and the chunk results are combined
pairwise by a binary counter (`PairwiseCombiner`), so the rounding error of a sum grows
like log(n), not n. Chunks, blocks and their combination order depend only on the
shapes, never on the number of threads: results are bit-identical for any thread count.

Index maps come from static shapes checked by the shape rules, so no generated access
leaves its buffer.
"""
from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from jitgrad.ir import DType, Function, Value
from jitgrad.passes.memory import MemoryPlan
from jitgrad.passes.schedule import Kernel, Schedule, is_index_map_concatenate, is_index_map_pad, strided_view
from jitgrad.primitives import Alias, Constant, Contraction, Elementwise, Gather, Reduction, Scatter
from jitgrad.primitives.kernel_kind import KernelKind

REDUCTION_CHUNK = 1 << 10     # items combined by one loop before a pairwise step
GATHERED_CHUNK = 1 << 7       # at most this many for items read through an index map (a
                              # transpose): no vector lanes split such a chunk's sum

Scalar = Any
"""A target's scalar value (an LLVM register, a Python number ...)."""
Buffer = Any
"""A target's handle to bytes of memory (a pointer, an array ...)."""


class ScalarContext(Protocol):
    """The scalar operations a target provides: the `ctx` every `Elementwise` rule, index
    map, reduction combine and the kernel layer call. Values are scalars in *register*
    form: bool is a 1-bit truth value, float16 and bfloat16 are computed in float32
    (`round_to` rounds a result to its dtype), every other dtype is itself. Integer
    operations follow C on two's complement (wrapping), except where stated."""

    operand_dtype: DType | None
    """The dtype of the operands of the rule being emitted (set around each rule):
    integers may carry no sign in a target's registers, so unsigned division,
    comparison, max/min and conversion ask it. None reads as signed."""

    fastmath: tuple[str, ...]
    """Floating-point relaxations allowed for `add` now (the reduction loops allow
    reassociation, so that vector lanes become independent partial sums)."""

    # ----- types and constants
    def is_float(self, x: Scalar) -> bool:
        """Whether `x` is a floating-point scalar."""

    def float_width(self, x: Scalar) -> int:
        """Bits of the register holding float `x` (32 for float16/bfloat16 values)."""

    def const(self, value, like: Scalar) -> Scalar:
        """`value` in the register type of `like`."""

    def const_of(self, value, dtype: DType) -> Scalar:
        """`value` as a scalar of `dtype` (register form)."""

    # ----- arithmetic
    def neg(self, x: Scalar) -> Scalar: ...
    def add(self, a: Scalar, b: Scalar) -> Scalar: ...
    def sub(self, a: Scalar, b: Scalar) -> Scalar: ...
    def mul(self, a: Scalar, b: Scalar) -> Scalar: ...

    def div(self, a: Scalar, b: Scalar) -> Scalar:
        """a / b; integers: truncating, x / 0 = 0 and MIN / -1 = MIN."""

    def floor_divide(self, a: Scalar, b: Scalar) -> Scalar:
        """NumPy's floor_divide (integers: x // 0 = 0)."""

    def remainder(self, a: Scalar, b: Scalar) -> Scalar:
        """NumPy's remainder: the sign of the divisor (integers: x % 0 = 0)."""

    def fmod(self, a: Scalar, b: Scalar) -> Scalar:
        """C's fmod: the sign of the dividend."""

    def int_power(self, a: Scalar, b: Scalar) -> Scalar:
        """a ** b for integers, b >= 0 (wrapping)."""

    def maximum(self, a: Scalar, b: Scalar) -> Scalar:
        """NumPy's maximum (NaN propagates)."""

    def minimum(self, a: Scalar, b: Scalar) -> Scalar:
        """NumPy's minimum (NaN propagates)."""

    # ----- comparisons and logic
    def cmp(self, op: str, a: Scalar, b: Scalar) -> Scalar:
        """a `op` b for op in ==, !=, <, <=, >, >= as a bool (NaN compares unequal)."""

    def select(self, pred: Scalar, a: Scalar, b: Scalar) -> Scalar:
        """a where bool `pred` holds, else b."""

    def and_(self, a: Scalar, b: Scalar) -> Scalar: ...
    def or_(self, a: Scalar, b: Scalar) -> Scalar: ...
    def not_(self, a: Scalar) -> Scalar: ...

    # ----- bits (integers)
    def bit_and(self, a: Scalar, b: Scalar) -> Scalar: ...
    def bit_or(self, a: Scalar, b: Scalar) -> Scalar: ...
    def bit_xor(self, a: Scalar, b: Scalar) -> Scalar: ...
    def bit_not(self, a: Scalar) -> Scalar: ...

    def shift_left(self, a: Scalar, b: Scalar) -> Scalar:
        """a << b; a shift by the width or more gives 0."""

    def shift_right(self, a: Scalar, b: Scalar) -> Scalar:
        """NumPy's right_shift: arithmetic for signed, logical for unsigned `operand_dtype`."""

    def shift_right_logical(self, a: Scalar, b: Scalar) -> Scalar: ...
    def shift_right_arithmetic(self, a: Scalar, b: Scalar) -> Scalar: ...

    # ----- conversions
    def convert(self, x: Scalar, dtype: DType, source: DType | None = None) -> Scalar:
        """`x` (of dtype `source`, default `operand_dtype` or the register's) cast to
        `dtype` as NumPy's astype (float to integer: truncation; NaN and out of range
        give INT_MIN)."""

    def round_to(self, x: Scalar, dtype: DType) -> Scalar:
        """A float register rounded to `dtype`'s precision (float16, bfloat16), still in
        register form; other dtypes unchanged."""

    # ----- math library
    def math(self, name: str, *args: Scalar) -> Scalar:
        """A libm function on floats: exp, log, sin, cos, tanh, log1p, expm1, exp2, log2,
        log10, sinh, cosh, cbrt, hypot, tan, asin, acos, atan, asinh, acosh, atanh,
        atan2, pow, sqrt, fabs, fma."""

    # ----- index arithmetic (64-bit, non-negative, never overflowing: from static shapes)
    def index_const(self, n: int) -> Scalar: ...
    def index_add(self, a: Scalar, b: Scalar) -> Scalar: ...
    def index_sub(self, a: Scalar, b: Scalar) -> Scalar: ...
    def index_mul(self, a: Scalar, b: Scalar) -> Scalar: ...

    def index_div(self, a: Scalar, b: Scalar) -> Scalar:
        """Unsigned a // b."""

    def index_rem(self, a: Scalar, b: Scalar) -> Scalar:
        """Unsigned a % b."""

    def index_bit(self, a: Scalar, k: Scalar) -> Scalar:
        """Bit k of a, as a bool."""

    def index_cmp(self, op: str, a: Scalar, b: Scalar) -> Scalar:
        """Signed comparison of two indices, as a bool."""

    # ----- memory: buffers hold elements in NumPy's layout of `dtype`
    def load(self, buffer: Buffer, offset: Scalar, dtype: DType) -> Scalar:
        """Element `offset` (an index) of `buffer`, viewed as `dtype`, in register form."""

    def store(self, buffer: Buffer, offset: Scalar, x: Scalar, dtype: DType) -> None:
        """Store register-form `x` as element `offset` of `buffer` viewed as `dtype`."""

    def byte_offset(self, buffer: Buffer, nbytes: int) -> Buffer:
        """The buffer starting `nbytes` into `buffer`."""

    def copy_bytes(self, dst: Buffer, src: Buffer, nbytes: int) -> None: ...
    def zero_bytes(self, dst: Buffer, nbytes: int) -> None: ...

    def local_array(self, dtype: DType, count: int, name: str) -> Buffer:
        """Private storage for `count` elements of `dtype` for the current kernel (an
        accumulator, the levels of a pairwise combiner), used through load/store."""

    # ----- structured control flow
    def loop(self, count: int | Scalar, name: str) -> AbstractContextManager[Scalar]:
        """`for i in range(count)`: the body is what is emitted inside the `with`; yields i."""

    def loop_nest(self, shape, name: str) -> AbstractContextManager[list]:
        """Row-major nested loops over `shape`; yields the list of indices."""

    def if_then(self, cond: Scalar) -> AbstractContextManager[None]:
        """What is emitted inside the `with` runs only where bool `cond` holds."""


class Index:
    """A position inside an array of `shape`: a multi-index, a flat row-major offset, or
    both. Elementwise chains pass the flat offset through untouched (vectorizable flat
    loops); index-remapping ops need the multi-index, derived lazily when missing."""

    def __init__(self, shape, multi=None, flat=None):
        self.shape = tuple(shape)
        self.multi = multi
        self.flat = flat

    def get_multi(self, ctx: ScalarContext) -> list:
        if self.multi is None:
            rest, multi = self.flat, []
            for n in reversed(self.shape):
                multi.append(ctx.index_rem(rest, ctx.index_const(n)))
                rest = ctx.index_div(rest, ctx.index_const(n))
            self.multi = list(reversed(multi))
        return self.multi

    def offset_in(self, ctx: ScalarContext, shape) -> Scalar:
        if self.flat is not None and tuple(shape) == self.shape:
            return self.flat
        return linearize(ctx, self.get_multi(ctx), shape)


def linearize(ctx: ScalarContext, multi, shape) -> Scalar:
    """The row-major offset of multi-index `multi` in an array of `shape`."""
    offset = ctx.index_const(0)
    for i, n in zip(multi, shape, strict=True):
        offset = ctx.index_add(ctx.index_mul(offset, ctx.index_const(n)), i)
    return offset


# --------------------------------------------------------------------------- reductions

def accumulator_dtype(dtype: DType) -> DType:
    """The dtype a reduction of `dtype` accumulates in: float64 for every float."""
    return DType.f64 if dtype.is_float else dtype


def levels_for(max_items: int) -> int:
    """Levels of the binary counter that combines up to `max_items` partial results."""
    return max(int(max_items).bit_length(), 1)


class PairwiseCombiner:
    """Combines a sequence of partial results pairwise, as the sum of a balanced binary
    tree over them: `push` adds the next partial, `total` the combination of all pushed
    so far. Level k holds the combination of a run of 2^k partials; pushing carries like
    incrementing a binary counter. Older partials are always the left operand."""

    def __init__(self, ctx: ScalarContext, dtype: DType, combine: Callable, init, max_items: int, name: str):
        self.ctx, self.dtype, self.combine, self.init = ctx, dtype, combine, init
        self.nlevels = levels_for(max_items)
        self.levels = ctx.local_array(dtype, self.nlevels, f"{name}.levels")
        self.state = ctx.local_array(DType.i64, 1, f"{name}.count")
        self.carry = ctx.local_array(dtype, 1, f"{name}.carry")
        self.carrying = ctx.local_array(DType.bool, 1, f"{name}.carrying")

    def _count(self):
        return self.ctx.load(self.state, self.ctx.index_const(0), DType.i64)

    def reset(self) -> None:
        ctx = self.ctx
        ctx.store(self.state, ctx.index_const(0), ctx.index_const(0), DType.i64)
        for k in range(self.nlevels):
            ctx.store(self.levels, ctx.index_const(k), self.init, self.dtype)

    def push(self, value) -> None:
        """The carry moves up through the occupied levels (combining with each) and
        settles in the first free one."""
        ctx, zero = self.ctx, self.ctx.index_const(0)
        count = self._count()
        ctx.store(self.carry, zero, value, self.dtype)
        ctx.store(self.carrying, zero, ctx.const_of(True, DType.bool), DType.bool)
        with ctx.loop(self.nlevels, "pairwise.level") as k:
            carrying = ctx.load(self.carrying, zero, DType.bool)
            occupied = ctx.index_bit(count, k)
            carry = ctx.load(self.carry, zero, self.dtype)
            with ctx.if_then(ctx.and_(carrying, occupied)):
                ctx.store(self.carry, zero, self.combine(ctx, ctx.load(self.levels, k, self.dtype), carry), self.dtype)
            with ctx.if_then(ctx.and_(carrying, ctx.not_(occupied))):
                ctx.store(self.levels, k, carry, self.dtype)
                ctx.store(self.carrying, zero, ctx.const_of(False, DType.bool), DType.bool)
        ctx.store(self.state, zero, ctx.index_add(count, ctx.index_const(1)), DType.i64)

    def total(self):
        """Occupied levels combined from the lowest (the latest partials) upward."""
        ctx = self.ctx
        count = self._count()
        acc = None
        for k in range(self.nlevels):
            level = ctx.load(self.levels, ctx.index_const(k), self.dtype)
            occupied = ctx.index_bit(count, ctx.index_const(k))
            acc = ctx.select(occupied, level, self.init) if acc is None else \
                ctx.select(occupied, self.combine(ctx, level, acc), acc)
        return acc


@dataclass(frozen=True)
class ReductionBlocks:
    """How a reduction whose items are read through an index map (a transposed operand)
    is cut into pairwise steps without dividing item positions: a block is `group`
    consecutive indices of axis `axis` times every index of the axes after it, between
    GATHERED_CHUNK / 2 and GATHERED_CHUNK items (or all of them when fewer), so the
    rounding error grows like log(n), as for flat operands."""

    shape: tuple[int, ...]
    axis: int
    group: int

    @staticmethod
    def of(reduced_shape) -> ReductionBlocks:
        shape = tuple(reduced_shape) or (1,)
        big = [a for a in range(len(shape)) if math.prod(shape[a:]) > GATHERED_CHUNK]
        if not big:
            return ReductionBlocks(shape, 0, max(1, shape[0]))
        axis = big[-1]
        return ReductionBlocks(shape, axis, max(1, GATHERED_CHUNK // math.prod(shape[axis + 1:])))

    @property
    def count(self) -> int:
        """The number of blocks: pairwise steps."""
        full, rest = divmod(self.shape[self.axis], self.group)
        return math.prod(self.shape[:self.axis]) * (full + (1 if rest else 0))


class ReductionAccumulator:
    """One reduction's state in generated code: an accumulator (in `accumulator_dtype`)
    for the current chunk, and the pairwise combiner of up to `max_pushes` chunk
    results. `add` runs inside the chunk loop, with reassociation allowed there only."""

    def __init__(self, ctx: ScalarContext, description: Reduction, dtype: DType, max_pushes: int,
                 name: str = "acc"):
        self.ctx, self.description, self.dtype = ctx, description, dtype
        self.accumulator_dtype = accumulator_dtype(dtype)
        self.init = ctx.const_of(description.init(dtype), self.accumulator_dtype)
        self.acc = ctx.local_array(self.accumulator_dtype, 1, name)
        self.combiner = PairwiseCombiner(ctx, self.accumulator_dtype, self._combine, self.init, max_pushes, name)
        self.combiner.reset()

    def _combine(self, ctx, a, b):
        saved, ctx.operand_dtype = ctx.operand_dtype, self.accumulator_dtype
        try:
            return self.description.combine(ctx, a, b)
        finally:
            ctx.operand_dtype = saved

    def start_chunk(self) -> None:
        self.ctx.store(self.acc, self.ctx.index_const(0), self.init, self.accumulator_dtype)

    def combine_item(self, acc, item):
        """acc combined with one item (widened to the accumulator's dtype)."""
        ctx = self.ctx
        saved, ctx.fastmath = ctx.fastmath, ("reassoc", "contract") if self.dtype.is_float else ()
        try:
            return self._combine(ctx, acc, ctx.convert(item, self.accumulator_dtype, source=self.dtype))
        finally:
            ctx.fastmath = saved

    def add(self, item) -> None:
        ctx, zero = self.ctx, self.ctx.index_const(0)
        ctx.store(self.acc, zero, self.combine_item(ctx.load(self.acc, zero, self.accumulator_dtype), item),
                  self.accumulator_dtype)

    def end_chunk(self) -> None:
        self.combiner.push(self.ctx.load(self.acc, self.ctx.index_const(0), self.accumulator_dtype))

    def push(self, partial) -> None:
        self.combiner.push(partial)

    def total(self):
        """The combination of everything pushed, in `accumulator_dtype`."""
        return self.combiner.total()

    def result(self):
        """The total rounded once to the reduction's dtype."""
        return self.ctx.convert(self.total(), self.dtype, source=self.accumulator_dtype)


# --------------------------------------------------------------------------- kernels

def expression_ops(op, sched: Schedule) -> set:
    """`op` and the inlined ops its value is computed from."""
    out = {op}
    for v in op.operands:
        if v not in sched.materialized and v.defining_op is not None:
            out |= expression_ops(v.defining_op, sched)
    return out


class KernelEmitter:
    """Emits the kernels of one scheduled IR function through a `ScalarContext`.

    A target subclasses it and provides where buffers come from (`argument_buffer`,
    `output_buffer`, `workspace_buffer`, `constant_buffer`) and may replace any kernel
    (the CPU calls BLAS for contractions and runs large fused loops on threads). The
    driver `emit_function` emits every kernel of the schedule in program order into the
    function the target opened, then copies outputs that are views of other buffers."""

    device = ""
    """The device name `KernelKind.emit` picks its emitter by."""

    def __init__(self, fn: Function, sched: Schedule, memory: MemoryPlan, ctx: ScalarContext):
        self.fn, self.sched, self.memory, self.ctx = fn, sched, memory, ctx
        self.buffers: dict[Value, Buffer] = {}
        self.output_slots: dict[Value, Buffer] = {}
        self.workspace: Buffer | None = None
        self.workspace_bytes = memory.workspace_bytes
        """The planned buffers, then the temporaries of single kernels (`scratch`)."""
        self.memo: dict[Value, Scalar] = {}   # fused-kernel members computed this iteration

    # ------------------------------------------------------------------ target hooks
    def argument_buffer(self, k: int) -> Buffer:
        raise NotImplementedError

    def output_buffer(self, k: int) -> Buffer:
        raise NotImplementedError

    def workspace_buffer(self) -> Buffer:
        raise NotImplementedError

    def constant_buffer(self, array: np.ndarray) -> Buffer:
        raise NotImplementedError

    def before_kernel(self, position: int, kernel: Kernel) -> None:
        """Called before each kernel (the CPU checks for Ctrl-C here)."""

    # ------------------------------------------------------------------ driver
    def emit_function(self) -> None:
        fn = self.fn
        for k, v in enumerate(fn.args):
            self.buffers[v] = self.argument_buffer(k)
        out_buffers = [self.output_buffer(k) for k in range(len(fn.outputs))]
        self.workspace = self.workspace_buffer()
        for v, buffer in zip(fn.outputs, out_buffers, strict=True):
            op = v.defining_op
            if op is not None and v not in self.output_slots and not isinstance(op.opdef.lowering, (Alias, Constant)):
                self.output_slots[v] = buffer
        for position, kernel in enumerate(self.sched.kernels):
            self.before_kernel(position, kernel)
            if kernel.fused:
                self.emit_fused(kernel)
            else:
                self.emit_op(kernel.ops[0])
        for v, buffer in zip(fn.outputs, out_buffers, strict=True):
            if self.buffers[v] is not buffer and v.type.nbytes:
                self.ctx.copy_bytes(buffer, self.buffers[v], v.type.nbytes)

    def emit_op(self, op) -> None:
        """The kernel of one unfused op, by its lowering description."""
        description = op.opdef.lowering
        result = op.results[0]
        if isinstance(description, Alias):
            self.buffers[result] = self.buffers[op.operands[0]]
        elif isinstance(description, Constant):
            self.buffers[result] = self.constant_buffer(op.attrs["value"])
        elif isinstance(description, (Elementwise, Gather)):
            self.emit_map(result)
        elif isinstance(description, Reduction):
            self.emit_reduction(op, description)
        elif isinstance(description, Contraction):
            self.emit_contraction(op)
        elif isinstance(description, Scatter):
            self.emit_scatter(op, description)
        elif isinstance(description, KernelKind):
            for r in op.results:
                self.allocate(r)
            self.emit_kernel_kind(op, description)
        else:
            raise NotImplementedError(f"no {self.device} kernel for {op.name}")

    def emit_kernel_kind(self, op, kind: KernelKind) -> None:
        kind.emit(self, op)

    # ------------------------------------------------------------------ buffers
    def allocate(self, value: Value) -> Buffer:
        """The buffer `value` is written to: the caller's output buffer, its planned
        workspace slot, or scratch."""
        buffer = self.output_slots.get(value)
        if buffer is None and value in self.memory.in_output:      # an in-place chain ending in an output
            buffer = self.output_slots[self.memory.in_output[value]]
        if buffer is None and value in self.memory.offsets:
            buffer = self.ctx.byte_offset(self.workspace, self.memory.offsets[value])
        if buffer is None:
            buffer = self.scratch(value.type.nbytes)
        self.buffers[value] = buffer
        return buffer

    def scratch(self, nbytes: int) -> Buffer:
        """A 64-byte aligned region of the workspace after the planned buffers, for
        temporaries of one kernel (transposed matrix operands, partial results)."""
        offset = self.workspace_bytes
        self.workspace_bytes += -(-max(nbytes, 1) // 64) * 64
        return self.ctx.byte_offset(self.workspace, offset)

    def pointer(self, value: Value) -> Buffer:
        """The buffer of a materialized value: an operand or an allocated result."""
        return self.buffers[value]

    def load(self, value: Value, idx: Index) -> Scalar:
        ctx = self.ctx
        offset = ctx.index_const(0) if value.type.size == 1 else idx.offset_in(ctx, value.type.shape)
        return ctx.load(self.buffers[value], offset, value.type.dtype)

    def store(self, value: Value, idx: Index, x: Scalar) -> None:
        ctx = self.ctx
        offset = ctx.index_const(0) if value.type.size == 1 else idx.offset_in(ctx, value.type.shape)
        ctx.store(self.buffers[value], offset, x, value.type.dtype)

    # ------------------------------------------------------------------ fused expressions
    def element(self, value: Value, idx: Index, compute: bool = False) -> Scalar:
        """The element of `value` at `idx`: loaded if materialized (unless `compute`, used
        by the value's own loop), else computed here."""
        if value in self.memo and not compute:
            return self.memo[value]
        if value in self.sched.materialized and not compute:
            return self.load(value, idx)
        op = value.defining_op
        description = op.opdef.lowering
        ctx = self.ctx
        if isinstance(description, Constant):
            return ctx.const_of(op.attrs["value"].item(), value.type.dtype)
        if isinstance(description, Elementwise):
            operands = [self.element(v, idx) for v in op.operands]
            if description.indexed:          # the element's row-major position comes first
                operands.insert(0, idx.offset_in(ctx, value.type.shape))
            return self.elementwise(op, operands)
        if isinstance(description, Gather):
            operand = op.operands[0]
            if operand.type.ndim == 0:
                return self.element(operand, Index((), [], ctx.index_const(0)))
            mapped = description.index_map(ctx, idx.get_multi(ctx), operand.type, value.type, **op.attrs)
            return self.element(operand, Index(operand.type.shape, mapped))
        if is_index_map_pad(op):
            return self.padded_element(op, idx)
        if is_index_map_concatenate(op):
            return self.concatenated_element(op, idx)
        raise AssertionError(f"{op.name} results are always materialized")

    def padded_element(self, op, idx: Index) -> Scalar:
        """Element `idx` of a zero padding (`is_index_map_pad`): the operand's element
        where `idx` lies inside it, else zero. The operand is read at an index clamped
        into its bounds and the result selected, so no access leaves the buffer; along an
        axis whose index has known bounds (`index_range`) inside or outside the operand,
        the test is decided here instead."""
        ctx = self.ctx
        operand = op.operands[0]
        inside, mapped = None, []
        for r, low, n in zip(idx.get_multi(ctx), op.attrs["low"], operand.type.shape):
            known = self.index_range(r)
            if known is not None and (known[1] <= low or known[0] >= low + n):
                return ctx.const_of(0, value_dtype(op))
            if known is not None and low <= known[0] and known[1] <= low + n:
                mapped.append(ctx.index_sub(r, ctx.index_const(low)))
                continue
            lo, hi = ctx.index_const(low), ctx.index_const(low + n - 1)
            after_low, before_high = ctx.index_cmp(">=", r, lo), ctx.index_cmp("<=", r, hi)
            clamped = ctx.select(after_low, ctx.select(before_high, r, hi), lo)
            mapped.append(ctx.index_sub(clamped, lo))
            both = ctx.select(after_low, before_high, after_low)
            inside = both if inside is None else ctx.select(inside, both, inside)
        item = self.element(operand, Index(operand.type.shape, mapped))
        return item if inside is None else ctx.select(inside, item, ctx.const_of(0, value_dtype(op)))

    def concatenated_element(self, op, idx: Index) -> Scalar:
        """Element `idx` of a concatenation (`is_index_map_concatenate`): every operand is
        read at the index clamped into its own bounds along the axis, and the one whose
        range holds the index is selected, so no access leaves a buffer. Where the index
        has known bounds (`index_range`) inside one operand, only that one is read."""
        ctx, axis = self.ctx, op.attrs["axis"]
        multi = idx.get_multi(ctx)
        at, known = multi[axis], self.index_range(multi[axis])
        item, offset = None, 0
        for operand in op.operands:
            n = operand.type.shape[axis]
            if known is not None and offset <= known[0] and known[1] <= offset + n:
                mapped = [ctx.index_sub(at, ctx.index_const(offset)) if d == axis else i for d, i in enumerate(multi)]
                return self.element(operand, Index(operand.type.shape, mapped))
            if n == 0:
                continue
            lo, hi = ctx.index_const(offset), ctx.index_const(offset + n - 1)
            clamped = ctx.select(ctx.index_cmp(">=", at, lo), ctx.select(ctx.index_cmp("<=", at, hi), at, hi), lo)
            mapped = [ctx.index_sub(clamped, lo) if d == axis else i for d, i in enumerate(multi)]
            here = self.element(operand, Index(operand.type.shape, mapped))
            item = here if item is None else ctx.select(ctx.index_cmp("<", at, lo), item, here)
            offset += n
        return item

    def index_range(self, i) -> tuple[int, int] | None:
        """Static bounds [low, high) of index value `i` where the code being emitted runs,
        when the target knows them (the CPU splits a fused row at the columns where a
        padding or concatenation changes operand, `CPUFunctionEmitter.fused_loop`); None
        otherwise."""
        return None

    def elementwise(self, op, operands: list) -> Scalar:
        """An Elementwise rule applied to scalar operands. The rule learns its operands'
        dtype (`ctx.operand_dtype`), and a float16 or bfloat16 result is rounded to its
        dtype, as NumPy rounds every operation's result."""
        ctx = self.ctx
        saved, ctx.operand_dtype = ctx.operand_dtype, op.operands[-1].type.dtype if op.operands else None
        try:
            result = op.opdef.lowering.scalar(ctx, *operands, **op.attrs)
        finally:
            ctx.operand_dtype = saved
        return ctx.round_to(result, op.results[0].type.dtype)

    def loop_over(self, shape, flat: bool, name: str):
        """Loops over `shape`, as one flat loop when `flat`; yields an Index."""
        return _FlatLoop(self.ctx, shape, name) if flat else _NestLoop(self.ctx, shape, name)

    # ------------------------------------------------------------------ maps and fused loops
    def emit_map(self, result: Value) -> None:
        self.allocate(result)
        with self.loop_over(result.type.shape, not self.sched.needs_multi_index(result, compute=True), "map") as idx:
            self.store(result, idx, self.element(result, idx, compute=True))

    def emit_fused(self, kernel: Kernel) -> None:
        """One flat loop computing every member; members read later in the same iteration
        come from registers (`memo`), full reductions accumulate in registers."""
        self.allocate_stored(kernel)
        ctx = self.ctx
        accumulators = self.init_accumulators(kernel, kernel.size)
        self.fused_iterations(kernel, ctx.index_const(0), ctx.index_const(kernel.size), accumulators)
        for result, accumulator in accumulators.items():
            self.store(result, Index(()), accumulator.result())

    def allocate_stored(self, kernel: Kernel) -> None:
        for op in kernel.ops:
            if op.results[0] in kernel.stored:
                self.allocate(op.results[0])

    def init_accumulators(self, kernel: Kernel, max_items: int) -> dict:
        """For each full reduction of the kernel: an accumulator for one chunk and a
        pairwise combiner of chunk results, for up to `max_items` items."""
        accumulators = {}
        for op in kernel.ops:
            result = op.results[0]
            if isinstance(op.opdef.lowering, Reduction):
                accumulators[result] = ReductionAccumulator(self.ctx, op.opdef.lowering, result.type.dtype,
                                                            -(-max_items // REDUCTION_CHUNK))
        return accumulators

    def fused_iterations(self, kernel: Kernel, start, count, accumulators) -> None:
        """The fused loop body for elements start .. start + count - 1; with reductions,
        in chunks of REDUCTION_CHUNK whose results go to the pairwise combiners."""
        ctx = self.ctx
        if not accumulators:
            self.fused_loop(kernel, start, count, accumulators)
            return
        chunk = ctx.index_const(REDUCTION_CHUNK)
        full = ctx.index_div(count, chunk)

        def reduce_chunk(offset, size):
            for accumulator in accumulators.values():
                accumulator.start_chunk()
            self.fused_loop(kernel, ctx.index_add(start, offset), size, accumulators)
            for accumulator in accumulators.values():
                accumulator.end_chunk()

        with ctx.loop(full, "chunk") as c:        # a constant trip count: no vector epilogue
            reduce_chunk(ctx.index_mul(c, chunk), chunk)
        tail = ctx.index_rem(count, chunk)
        with ctx.if_then(ctx.index_cmp("!=", tail, ctx.index_const(0))):
            reduce_chunk(ctx.index_mul(full, chunk), tail)

    def fused_loop(self, kernel: Kernel, start, count, accumulators) -> None:
        """Positions start .. start + count - 1 in one flat loop; members with index maps
        derive their multi-index from the flat position (a target may loop over rows
        instead: the CPU's `fused_loop`)."""
        ctx = self.ctx
        with ctx.loop(count, "fused") as j:
            self.fused_position(kernel, ctx.index_add(start, j), None, accumulators)

    def fused_position(self, kernel: Kernel, flat, multi, accumulators) -> None:
        """Every member of `kernel` at flat position `flat` (and, when given, its
        multi-index `multi` in `kernel.shape`), each computed once and kept in `memo`."""
        self.memo = {}
        for op in kernel.ops:
            result, description = op.results[0], op.opdef.lowering
            value = op.operands[0] if isinstance(description, Reduction) else result
            idx = Index(value.type.shape, multi if value.type.shape == kernel.shape else None, flat)
            if isinstance(description, Reduction):
                accumulators[result].add(self.element(value, idx))
                continue
            item = self.element(result, idx, compute=True)
            self.memo[result] = item
            if result in kernel.stored:
                self.store(result, idx, item)
        self.memo = {}

    # ------------------------------------------------------------------ reductions
    def emit_reduction(self, op, description: Reduction) -> None:
        """A reduction on its own. Over trailing axes: per output element, chunks of
        REDUCTION_CHUNK combined pairwise (an operand read through an index map, such as a
        transpose, in blocks of whole rows: `ReductionBlocks`); over other axes: the result
        accumulates in place, one reduced index after another (NumPy's order for these),
        in a float64 buffer for narrower floats."""
        ctx = self.ctx
        (x,), result, axes = op.operands, op.results[0], op.attrs["axes"]
        dtype = result.type.dtype
        self.allocate(result)
        kept = [k for k in range(x.type.ndim) if k not in axes]
        kept_shape = [x.type.shape[k] for k in kept]
        reduced_shape = [x.type.shape[k] for k in axes]
        size = math.prod(reduced_shape)
        if tuple(axes) == tuple(range(x.type.ndim - len(axes), x.type.ndim)):
            flat = not self.sched.needs_multi_index(x)
            with self.loop_over(kept_shape, flat, "outer") as out:
                blocks = None if flat else ReductionBlocks.of(reduced_shape)
                acc = ReductionAccumulator(ctx, description, dtype, blocks.count if blocks else
                                           -(-size // REDUCTION_CHUNK))
                if flat:
                    base = ctx.index_mul(out.flat, ctx.index_const(size))
                    self.reduce_chunks(x, base, size, acc)
                else:
                    self.reduce_blocks(x, out.get_multi(ctx), blocks, acc)
                self.store(result, out, acc.result())
            return
        acc_dtype = accumulator_dtype(dtype)
        buffer = self.buffers[result]
        if acc_dtype != dtype:          # an accumulator-dtype copy of the result
            buffer = self.wide_buffer(acc_dtype, result.type.size)
        acc = ReductionAccumulator(ctx, description, dtype, 1)
        with ctx.loop(result.type.size, "init") as i:
            ctx.store(buffer, i, acc.init, acc_dtype)
        with ctx.loop_nest(x.type.shape, "reduce") as m:
            out = linearize(ctx, [m[k] for k in kept], result.type.shape)
            item = self.element(x, Index(x.type.shape, m))
            ctx.store(buffer, out, acc.combine_item(ctx.load(buffer, out, acc_dtype), item), acc_dtype)
        if acc_dtype != dtype:
            with ctx.loop(result.type.size, "narrow") as i:
                narrowed = ctx.convert(ctx.load(buffer, i, acc_dtype), dtype, source=acc_dtype)
                self.store(result, Index(result.type.shape, flat=i), narrowed)

    def wide_buffer(self, dtype: DType, count: int) -> Buffer:
        """Room for `count` accumulators of `dtype` during one kernel."""
        return self.scratch(count * dtype.itemsize)

    def reduce_chunks(self, x: Value, base, size: int, acc: ReductionAccumulator) -> None:
        """Elements base .. base + size - 1 of flat `x` into `acc`, one pairwise step per
        chunk of REDUCTION_CHUNK (static trip counts: each chunk loop vectorizes fully)."""
        ctx = self.ctx
        full, rest = divmod(size, REDUCTION_CHUNK)

        def chunk(start, count: int) -> None:
            acc.start_chunk()
            with ctx.loop(count, "inner") as j:
                acc.add(self.element(x, Index(x.type.shape, flat=ctx.index_add(start, j))))
            acc.end_chunk()

        if full:
            with ctx.loop(full, "chunk") as c:
                chunk(ctx.index_add(base, ctx.index_mul(c, ctx.index_const(REDUCTION_CHUNK))), REDUCTION_CHUNK)
        if rest or not full:
            chunk(ctx.index_add(base, ctx.index_const(full * REDUCTION_CHUNK)), rest)

    def reduce_blocks(self, x: Value, kept: list, blocks: ReductionBlocks, acc: ReductionAccumulator) -> None:
        """The elements of `x` at multi-indices (*kept, *m) for every m in the trailing
        axes `blocks.shape`, in row-major order, into `acc`, one pairwise step per block
        (`ReductionBlocks`): nested loops, no division per item."""
        ctx, shape, axis, group = self.ctx, blocks.shape, blocks.axis, blocks.group
        full, rest = divmod(shape[axis], group)

        def block(outer: list, first, count: int) -> None:
            acc.start_chunk()
            with ctx.loop_nest([count, *shape[axis + 1:]], "inner") as m:
                at = [ctx.index_add(first, m[0]), *m[1:]]
                acc.add(self.element(x, Index(x.type.shape, [*kept, *outer, *at])))
            acc.end_chunk()

        with ctx.loop_nest(shape[:axis], "outer") as outer:
            if full:
                with ctx.loop(full, "block") as c:
                    block(outer, ctx.index_mul(c, ctx.index_const(group)), group)
            if rest:
                block(outer, ctx.index_const(full * group), rest)

    # ------------------------------------------------------------------ scatter
    def emit_scatter(self, op, description: Scatter) -> None:
        ctx = self.ctx
        result = op.results[0]
        ctx.zero_bytes(self.allocate(result), result.type.nbytes)
        in_types = [v.type for v in op.operands]
        for k, operand in enumerate(op.operands):
            with ctx.loop_nest(operand.type.shape, f"scatter{k}.") as m:
                item = self.element(operand, Index(operand.type.shape, m))
                place = description.place(ctx, k, m, in_types, result.type, **op.attrs)
                self.store(result, Index(result.type.shape, place), item)

    # ------------------------------------------------------------------ contraction
    def permuted_copy(self, value: Value, perm) -> Buffer:
        """A row-major copy of `value` with its axes in the order `perm` (`value` loaded
        from its buffer, or computed where it is a view the schedule did not materialize)."""
        ctx, dtype = self.ctx, value.type.dtype
        shape = [value.type.shape[p] for p in perm]
        dst = self.scratch(value.type.nbytes)
        with ctx.loop_nest(shape, "perm") as m:
            src_multi = [None] * len(perm)
            for k, p in enumerate(perm):
                src_multi[p] = m[k]
            if value in self.buffers:
                item = ctx.load(self.buffers[value], linearize(ctx, src_multi, value.type.shape), dtype)
            else:
                item = self.element(value, Index(value.type.shape, src_multi))
            ctx.store(dst, linearize(ctx, m, shape), item, dtype)
        return dst

    def operand_layout(self, value: Value, batch, first, second):
        """Buffer and transposition flag that present `value` as (batch, first, second)."""
        ndim = value.type.ndim
        if value in self.buffers:
            if [*batch, *first, *second] == list(range(ndim)):
                return self.buffers[value], False
            if [*batch, *second, *first] == list(range(ndim)):
                return self.buffers[value], True
        return self.permuted_copy(value, [*batch, *first, *second]), False

    def matrix_operand(self, value: Value, batch, first, second) -> "MatrixOperand":
        """`value` as a batch of (first, second) matrices in a buffer: read in place
        through strides where it is a transpose or broadcast of a buffer that BLAS's
        layout can describe (`strided_view`), else a row-major copy."""
        shape = value.type.shape
        rows, cols = math.prod(shape[a] for a in first), math.prod(shape[a] for a in second)
        view = strided_view(value, self.sched)
        if view is not None:
            base, strides = view
            layout = _matrix_layout(shape, strides, batch, first, second, rows, cols)
            if layout is not None and base in self.buffers:
                return MatrixOperand(self.buffers[base], *layout)
        buffer, trans = self.operand_layout(value, batch, first, second)
        return MatrixOperand(buffer, rows * cols, trans, rows if trans else cols)

    def emit_contraction(self, op) -> None:
        """dot_general as batched matrix products of strided (possibly transposed)
        operands; `contract` computes them."""
        ctx = self.ctx
        lhs, rhs = op.operands
        result = op.results[0]
        (lc, rc), (lb, rb) = op.attrs["contract"], op.attrs["batch"]
        lf = [a for a in range(lhs.type.ndim) if a not in lc and a not in lb]
        rf = [a for a in range(rhs.type.ndim) if a not in rc and a not in rb]
        nb = math.prod(lhs.type.shape[a] for a in lb)
        m = math.prod(lhs.type.shape[a] for a in lf)
        k = math.prod(lhs.type.shape[a] for a in lc)
        n = math.prod(rhs.type.shape[a] for a in rf)
        out = self.allocate(result)
        dtype = result.type.dtype
        if result.type.size == 0:
            return
        if k == 0:
            ctx.zero_bytes(out, result.type.nbytes)
            return
        a = self.matrix_operand(lhs, lb, lf, lc)
        b = self.matrix_operand(rhs, rb, rc, rf)
        self.contract(nb, a, b, out, m, n, k, dtype)

    def contract(self, nb: int, a: "MatrixOperand", b: "MatrixOperand", c, m: int, n: int, k: int,
                 dtype: DType) -> None:
        """C_i = A_i @ B_i for i < nb, C row-major and contiguous: `matmuls` where both
        operands are consecutive matrices, else `matmul` per batch."""
        if a.is_dense(m, k) and b.is_dense(k, n):
            self.matmuls(nb, a.buffer, a.trans, b.buffer, b.trans, c, m, n, k, dtype)
            return
        ctx = self.ctx
        with ctx.loop(nb, "batch") as bi:
            self.matmul(self.element_offset(a.buffer, ctx.index_mul(bi, ctx.index_const(a.batch_stride)), dtype),
                        a.trans,
                        self.element_offset(b.buffer, ctx.index_mul(bi, ctx.index_const(b.batch_stride)), dtype),
                        b.trans,
                        self.element_offset(c, ctx.index_mul(bi, ctx.index_const(m * n)), dtype), m, n, k, dtype,
                        lda=a.ld, ldb=b.ld)

    def matmuls(self, nb: int, a, a_trans: bool, bm, b_trans: bool, c, m: int, n: int, k: int,
                dtype: DType) -> None:
        """C_i = A_i @ B_i for each of `nb` consecutive (m, k) @ (k, n) -> (m, n)
        products, A and B row-major or transposed."""
        ctx = self.ctx
        with ctx.loop(nb, "batch") as bi:
            self.matmul(self.element_offset(a, ctx.index_mul(bi, ctx.index_const(m * k)), dtype), a_trans,
                        self.element_offset(bm, ctx.index_mul(bi, ctx.index_const(k * n)), dtype), b_trans,
                        self.element_offset(c, ctx.index_mul(bi, ctx.index_const(m * n)), dtype), m, n, k, dtype)

    def element_offset(self, buffer: Buffer, offset, dtype: DType) -> Buffer:
        """The buffer starting `offset` (an index) elements of `dtype` into `buffer`."""
        raise NotImplementedError

    def matmul(self, a, a_trans, bm, b_trans, c, m, n, k, dtype, lda: int | None = None,
               ldb: int | None = None) -> None:
        """C = A @ B with an i-k-j loop order (the inner loop is contiguous in C and B);
        `lda`/`ldb` are the row pitches of the stored matrices (default: dense)."""
        ctx = self.ctx
        lda = lda if lda is not None else (m if a_trans else k)
        ldb = ldb if ldb is not None else (k if b_trans else n)
        zero = ctx.const_of(0, dtype)
        with ctx.loop(m * n, "zero") as i:
            ctx.store(c, i, zero, dtype)
        c_ = ctx.index_const
        with ctx.loop(m, "mm.i") as i:
            with ctx.loop(k, "mm.k") as kk:
                a_off = (ctx.index_add(ctx.index_mul(kk, c_(lda)), i) if a_trans
                         else ctx.index_add(ctx.index_mul(i, c_(lda)), kk))
                a_val = ctx.load(a, a_off, dtype)
                with ctx.loop(n, "mm.j") as j:
                    b_off = (ctx.index_add(ctx.index_mul(j, c_(ldb)), kk) if b_trans
                             else ctx.index_add(ctx.index_mul(kk, c_(ldb)), j))
                    b_val = ctx.load(bm, b_off, dtype)
                    c_off = ctx.index_add(ctx.index_mul(i, c_(n)), j)
                    ctx.store(c, c_off, ctx.add(ctx.load(c, c_off, dtype), ctx.mul(a_val, b_val)), dtype)


def value_dtype(op) -> DType:
    return op.results[0].type.dtype


class MatrixOperand:
    """A batch of matrices in `buffer`: matrix `i` starts `i * batch_stride` elements in
    (0 for an operand broadcast over the batch); element (r, c) of a matrix is at
    `r * ld + c`, or `c * ld + r` when `trans` (BLAS's row-major leading dimension)."""

    __slots__ = ("buffer", "batch_stride", "trans", "ld")

    def __init__(self, buffer, batch_stride: int, trans: bool, ld: int):
        self.buffer, self.batch_stride, self.trans, self.ld = buffer, batch_stride, trans, ld

    def is_dense(self, rows: int, cols: int) -> bool:
        """Consecutive, unpadded matrices (the layout `matmuls` takes)."""
        return self.batch_stride == rows * cols and self.ld == (rows if self.trans else cols)


def _matrix_layout(shape, strides, batch, first, second, rows: int, cols: int):
    """(batch_stride, trans, ld) presenting axes (batch, first, second) of a strided view
    as BLAS matrices, or None where no such layout exists (axes of a group that don't
    merge into one stride, rows overlapping, a broadcast row or column)."""
    unmergeable = object()

    def merged(axes):
        axes = [a for a in axes if shape[a] != 1]
        if not axes:
            return None                      # extent 1: any stride
        for x, y in zip(axes, axes[1:]):
            if strides[x] != strides[y] * shape[y]:
                return unmergeable
        return strides[axes[-1]]
    batch_stride, row_stride, col_stride = merged(batch), merged(first), merged(second)
    if any(s is unmergeable for s in (batch_stride, row_stride, col_stride)):
        return None
    batch_stride = batch_stride or 0
    if col_stride in (None, 1):                                   # rows of consecutive elements
        ld = row_stride if row_stride is not None else max(cols, 1)
        if ld >= max(cols, 1):
            return batch_stride, False, ld
    if row_stride in (None, 1):                                   # columns of consecutive elements
        ld = col_stride if col_stride is not None else max(rows, 1)
        if ld >= max(rows, 1):
            return batch_stride, True, ld
    return None


class _FlatLoop:
    def __init__(self, ctx: ScalarContext, shape, name):
        self.ctx, self.shape, self.name = ctx, tuple(shape), name

    def __enter__(self) -> Index:
        self._cm = self.ctx.loop(math.prod(self.shape), self.name)
        return Index(self.shape, flat=self._cm.__enter__())

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


class _NestLoop(_FlatLoop):
    def __enter__(self) -> Index:
        self._cm = self.ctx.loop_nest(self.shape, self.name)
        multi = self._cm.__enter__()
        return Index(self.shape, multi, linearize(self.ctx, multi, self.shape))
