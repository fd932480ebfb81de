"""CPU kernels of sort and argsort (`jitgrad/primitives/sorting.py`): a bottom-up merge
sort of each row's positions, stable and O(n log n).

For a row of n keys, the positions 0..n-1 are merged in ceil(log2 n) passes of run
width 1, 2, 4, ... between two int64 buffers (the pass count is known when the code is
generated, so the passes are unrolled and only the runs loop at run time). A merge takes
the right run's element only when its key is strictly less than the left one's, which
keeps equal keys in their original order (stability: ties and -0.0/+0.0 keep their
order, as NumPy's stable sort). "Less" puts NaN after every number, as NumPy does;
float16/bfloat16 keys are compared as the floats they widen to exactly, unsigned
integers and bools with unsigned comparisons.

Every position a merge reads is clamped into its runs (the loads of an exhausted run
re-read its last element and are never chosen), so no address leaves the row.
`sort` then gathers the row's values through the permutation; `argsort` merges directly
in its result buffer.
"""
from __future__ import annotations

import math

from llvmlite import ir

from jitgrad.ir import DType
from .llvm_support import I64, alloca_in_entry, for_range, index, memory_type


def _less(b: ir.IRBuilder, a, c, dtype: DType) -> ir.Value:
    """a < c in NumPy's sort order (NaN greatest)."""
    if dtype.is_float:
        ordered_less = b.fcmp_ordered("<", a, c)
        c_nan_a_not = b.and_(b.fcmp_unordered("uno", c, c), b.fcmp_ordered("ord", a, a))
        return b.or_(ordered_less, c_nan_a_not)
    if dtype == DType.bool or dtype.is_unsigned:
        return b.icmp_unsigned("<", a, c)
    return b.icmp_signed("<", a, c)


def _minimum(b, a, c):
    return b.select(b.icmp_signed("<", a, c), a, c)


class _RowSorter:
    """Emits the merge sort of one row's positions; `key(position)` loads a key."""

    def __init__(self, ec, x, n: int):
        self.ec, self.b, self.n = ec, ec.builder, n
        self.dtype, self.t = x.type.dtype, memory_type(x.type.dtype)
        self.x = ec.pointer(x)
        self.spare = ec.scratch(8 * n)
        self.i_slot = alloca_in_entry(self.b, I64, "merge.i")
        self.j_slot = alloca_in_entry(self.b, I64, "merge.j")

    def key(self, row_base, position) -> ir.Value:
        b = self.b
        ptr = b.gep(self.x, [b.add(row_base, position, flags=["nsw"])], inbounds=True, source_etype=self.t)
        return self.ec.ctx.from_memory(b.load(ptr, typ=self.t), self.dtype)

    def sort_row(self, row_base, positions) -> None:
        """positions[0..n) = the stable sorting permutation of the row at `row_base`."""
        b, n = self.b, self.n
        with for_range(b, n, "sort.init") as i:
            b.store(i, b.gep(positions, [i], inbounds=True, source_etype=I64))
        passes = math.ceil(math.log2(n)) if n > 1 else 0
        source, target = positions, self.spare
        for k in range(passes):
            self._merge_pass(row_base, source, target, 1 << k)
            source, target = target, source
        if source is not positions:
            self.ec.memcpy(positions, source, 8 * n)

    def _merge_pass(self, row_base, source, target, width: int) -> None:
        b, n = self.b, self.n
        runs = -(-n // (2 * width))
        with for_range(b, runs, f"merge{width}.run") as r:
            lo = b.mul(r, index(2 * width), flags=["nsw"])
            mid = _minimum(b, b.add(lo, index(width), flags=["nsw"]), index(n))
            hi = _minimum(b, b.add(lo, index(2 * width), flags=["nsw"]), index(n))
            b.store(lo, self.i_slot)
            b.store(mid, self.j_slot)
            with for_range(b, b.sub(hi, lo), f"merge{width}.out") as step:
                i, j = b.load(self.i_slot, typ=I64), b.load(self.j_slot, typ=I64)
                left = self._load(source, _minimum(b, i, b.sub(mid, index(1))))
                right = self._load(source, _minimum(b, j, b.sub(hi, index(1))))
                left_open = b.icmp_signed("<", i, mid)
                right_open = b.icmp_signed("<", j, hi)
                right_first = _less(b, self.key(row_base, right), self.key(row_base, left), self.dtype)
                take_right = b.or_(b.not_(left_open), b.and_(right_open, right_first))
                chosen = b.select(take_right, right, left)
                b.store(chosen, b.gep(target, [b.add(lo, step, flags=["nsw"])], inbounds=True, source_etype=I64))
                b.store(b.select(take_right, i, b.add(i, index(1))), self.i_slot)
                b.store(b.select(take_right, b.add(j, index(1)), j), self.j_slot)

    def _load(self, buffer, position):
        b = self.b
        return b.load(b.gep(buffer, [position], inbounds=True, source_etype=I64), typ=I64)


def _rows(x):
    shape = x.type.shape
    return math.prod(shape[:-1]), shape[-1]


def emit_argsort(ec, op) -> None:
    (x,), result = op.operands, op.results[0]
    rows, n = _rows(x)
    if result.type.size == 0:
        return
    b = ec.builder
    sorter, out = _RowSorter(ec, x, n), ec.pointer(result)
    with for_range(b, rows, "argsort.row") as r:
        base = b.mul(r, index(n), flags=["nsw"])
        sorter.sort_row(base, b.gep(out, [base], inbounds=True, source_etype=I64))


def emit_sort(ec, op) -> None:
    (x,), result = op.operands, op.results[0]
    rows, n = _rows(x)
    if result.type.size == 0:
        return
    b = ec.builder
    sorter, out = _RowSorter(ec, x, n), ec.pointer(result)
    positions = ec.scratch(8 * n)
    t = memory_type(x.type.dtype)
    with for_range(b, rows, "sort.row") as r:
        base = b.mul(r, index(n), flags=["nsw"])
        sorter.sort_row(base, positions)
        with for_range(b, n, "sort.gather") as k:
            p = b.load(b.gep(positions, [k], inbounds=True, source_etype=I64), typ=I64)
            value = b.load(b.gep(sorter.x, [b.add(base, p, flags=["nsw"])], inbounds=True, source_etype=t), typ=t)
            b.store(value, b.gep(out, [b.add(base, k, flags=["nsw"])], inbounds=True, source_etype=t))
