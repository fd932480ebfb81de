"""Accurate, deterministic reductions: wide accumulators and pairwise combination.

A float reduction accumulates in float64 whatever its dtype (float32 and float16 items
are widened exactly; max and min are unchanged by it, sums become far more accurate than
NumPy's float32 pairwise sum), and the result is rounded once at the end. The items are
cut into fixed chunks of `REDUCTION_CHUNK`: each chunk is one vectorized loop (its lanes
are independent partial sums), and the chunk results are combined pairwise by a binary
counter (`PairwiseCombiner`), so the rounding error of a sum grows like log(n), not n.
Chunks, parallel blocks and their combination order depend only on the shapes, never on
the number of threads: results are bit-identical for any thread count.
"""
from __future__ import annotations

from llvmlite import ir

from jitgrad.ir import DType
from .llvm_support import I64, alloca_in_entry, index, register_type

REDUCTION_CHUNK = 1 << 10     # items summed by one vectorized loop before a pairwise step


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

    def __init__(self, builder: ir.IRBuilder, ctx, dtype: DType, combine, init, max_items: int, name: str):
        self.builder, self.ctx, self.combine, self.init = builder, ctx, combine, init
        self.type = register_type(dtype)
        self.nlevels = levels_for(max_items)
        self.levels = alloca_in_entry(builder, self.type, f"{name}.levels", count=self.nlevels)
        self.count = alloca_in_entry(builder, I64, f"{name}.count")

    def _level(self, k):
        return self.builder.gep(self.levels, [k], inbounds=True, source_etype=self.type)

    def reset(self) -> None:
        b = self.builder
        b.store(index(0), self.count)
        for k in range(self.nlevels):
            b.store(self.init, self._level(index(k)))

    def push(self, value: ir.Value) -> None:
        b = self.builder
        count = b.load(self.count, typ=I64)
        entry = b.block
        header = b.append_basic_block("pairwise.carry")
        body = b.append_basic_block("pairwise.combine")
        done = b.append_basic_block("pairwise.store")
        b.branch(header)
        b.position_at_end(header)
        k = b.phi(I64, name="level")
        carry = b.phi(self.type, name="carry")
        k.add_incoming(index(0), entry)
        carry.add_incoming(value, entry)
        occupied = b.trunc(b.lshr(count, k), ir.IntType(1))
        b.cbranch(occupied, body, done)
        b.position_at_end(body)
        merged = self.combine(self.ctx, b.load(self._level(k), typ=self.type), carry)
        k.add_incoming(b.add(k, index(1)), body)
        carry.add_incoming(merged, body)
        b.branch(header)
        b.position_at_end(done)
        b.store(carry, self._level(k))
        b.store(b.add(count, index(1)), self.count)

    def total(self) -> ir.Value:
        """Occupied levels combined from the lowest (the latest partials) upward."""
        b = self.builder
        count = b.load(self.count, typ=I64)
        acc = None
        for k in range(self.nlevels):
            level = b.load(self._level(index(k)), typ=self.type)
            occupied = b.trunc(b.lshr(count, index(k)), ir.IntType(1))
            acc = b.select(occupied, level, self.init) if acc is None else \
                b.select(occupied, self.combine(self.ctx, level, acc), acc)
        return acc


class ReductionAccumulator:
    """One reduction's state in generated code: a register accumulator (in
    `accumulator_dtype`) for the current chunk, and the pairwise combiner of up to
    `max_pushes` chunk results. `add` runs inside the vectorized chunk loop, with
    reassociation allowed there only: the lanes become independent partial results."""

    def __init__(self, ctx, lowering, dtype: DType, max_pushes: int, name: str = "acc"):
        self.ctx, self.lowering, self.dtype = ctx, lowering, dtype
        self.accumulator_dtype = accumulator_dtype(dtype)
        self.type = register_type(self.accumulator_dtype)
        self.init = ctx.const_of(lowering.init(dtype), self.accumulator_dtype)
        self.acc = alloca_in_entry(ctx.builder, self.type, name)
        self.combiner = PairwiseCombiner(ctx.builder, ctx, self.accumulator_dtype, self._combine, self.init,
                                         max_pushes, name)
        self.combiner.reset()

    def _combine(self, ctx, a, b):
        saved, ctx.operand_dtype = ctx.operand_dtype, self.accumulator_dtype
        try:
            return self.lowering.combine(ctx, a, b)
        finally:
            ctx.operand_dtype = saved

    def start_chunk(self) -> None:
        self.ctx.builder.store(self.init, self.acc)

    def combine_item(self, acc: ir.Value, item: ir.Value) -> ir.Value:
        """acc combined with one item (widened to the accumulator's dtype)."""
        ctx = self.ctx
        saved, ctx.fastmath = ctx.fastmath, ("reassoc", "contract") if self.dtype.is_float else ()
        try:
            return self._combine(ctx, acc, ctx.convert(item, self.accumulator_dtype, source=self.dtype))
        finally:
            ctx.fastmath = saved

    def add(self, item: ir.Value) -> None:
        b = self.ctx.builder
        b.store(self.combine_item(b.load(self.acc, typ=self.type), item), self.acc)

    def end_chunk(self) -> None:
        self.combiner.push(self.ctx.builder.load(self.acc, typ=self.type))

    def push(self, partial: ir.Value) -> None:
        self.combiner.push(partial)

    def total(self) -> ir.Value:
        """The combination of everything pushed, in `accumulator_dtype`."""
        return self.combiner.total()

    def result(self) -> ir.Value:
        """The total rounded once to the reduction's dtype."""
        return self.ctx.convert(self.total(), self.dtype, source=self.accumulator_dtype)
