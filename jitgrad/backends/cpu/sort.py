"""CPU kernels of sort and argsort (`jitgrad/primitives/sorting.py`): a stable
O(n log n) merge sort of each row.

Each element's value is first turned into an unsigned integer *key* whose unsigned order
is NumPy's sort order, so the merge compares two integers loaded from a contiguous
buffer (never the operand through a position, which would be a random access):

- floats (float16/bfloat16 widened exactly to float32): -0.0 becomes +0.0 (NumPy's sort
  treats them as equal) and every NaN the positive quiet NaN (sorted after +inf, as
  NumPy does); then the IEEE bits with the sign bit flipped for positive numbers and all
  bits flipped for negative ones, which orders them as the numbers they encode;
- signed integers: the sign bit flipped; unsigned integers and bools: as they are.

Keys are 64 bits for 64-bit dtypes and 32 bits otherwise. The row's (key, position)
pairs are sorted by runs of RUN elements with insertion sort, then merged in passes of
run width RUN, 2 RUN, 4 RUN, ... between two pairs of buffers (the pass count is known
when the code is generated, so the passes are unrolled; the runs loop at run time). Both
take an element from the right only when its key is strictly smaller, which keeps equal
keys in their original order: the sort is stable, as NumPy's `kind='stable'`.

Every read is inside the row: a merge clamps the positions it reads into its runs (the
loads of an exhausted run re-read its last element and are never chosen), and insertion
sort tests its lower bound before it loads. `sort` then copies the row's values in the
sorted order through the positions (so NaN payloads and zero signs are the operand's);
`argsort` writes the positions.
"""
from __future__ import annotations

import math

from llvmlite import ir

from jitgrad.ir import DType
from .llvm_support import I32, I64, alloca_in_entry, for_range, index, memory_type

RUN = 16
"""Length of the runs sorted by insertion before merging (fewer merge passes)."""


def _minimum(b, a, c):
    return b.select(b.icmp_signed("<", a, c), a, c)


def key_type(dtype: DType) -> ir.IntType:
    return I64 if dtype.itemsize == 8 else I32


def sort_key(ctx, b: ir.IRBuilder, x, dtype: DType) -> ir.Value:
    """The unsigned integer whose order is NumPy's sort order of `x` (a register value)."""
    kt = key_type(dtype)
    width = kt.width
    sign = ir.Constant(kt, 1 << (width - 1))
    if dtype.is_float:
        zero = ir.Constant(x.type, 0.0)
        x = b.select(b.fcmp_ordered("==", x, zero), zero, x)                 # -0.0 -> +0.0
        x = b.select(b.fcmp_unordered("uno", x, x), ir.Constant(x.type, float("nan")), x)
        bits = b.bitcast(x, kt)
        flip = b.or_(b.ashr(bits, ir.Constant(kt, width - 1)), sign)        # negative: all bits; else the sign
        return b.xor(bits, flip)
    if dtype == DType.bool or dtype.is_unsigned:
        return b.zext(x, kt) if x.type.width < width else x
    wide = b.sext(x, kt) if x.type.width < width else x
    return b.xor(wide, sign)


class _RowSorter:
    """Emits the stable sort of one row's (key, position) pairs."""

    def __init__(self, ec, x, n: int):
        self.ec, self.b, self.n = ec, ec.builder, n
        self.dtype, self.t = x.type.dtype, memory_type(x.type.dtype)
        self.kt = key_type(self.dtype)
        self.x = ec.pointer(x)
        key_bytes = self.kt.width // 8
        self.keys = (ec.scratch(key_bytes * n), ec.scratch(key_bytes * n))
        self.spare_positions = ec.scratch(8 * n)
        self.i_slot = alloca_in_entry(self.b, I64, "merge.i")
        self.j_slot = alloca_in_entry(self.b, I64, "merge.j")

    def _slot(self, buffer, k, type):
        return self.b.gep(buffer, [k], inbounds=True, source_etype=type)

    def sort_row(self, row_base, positions) -> None:
        """positions[0..n) = the stable sorting permutation of the row at `row_base`."""
        b, n, ctx = self.b, self.n, self.ec.ctx
        keys = self.keys[0]
        with for_range(b, n, "sort.keys") as k:
            ptr = b.gep(self.x, [b.add(row_base, k, flags=["nsw"])], inbounds=True, source_etype=self.t)
            value = ctx.from_memory(b.load(ptr, typ=self.t), self.dtype)
            b.store(sort_key(ctx, b, value, self.dtype), self._slot(keys, k, self.kt))
            b.store(k, self._slot(positions, k, I64))
        self._insertion_sort_runs(keys, positions)
        source = (keys, positions)
        target = (self.keys[1], self.spare_positions)
        width = RUN
        while width < n:
            self._merge_pass(source, target, width)
            source, target = target, source
            width *= 2
        if source[1] is not positions:
            self.ec.memcpy(positions, source[1], 8 * n)

    def _insertion_sort_runs(self, keys, positions) -> None:
        b, n = self.b, self.n
        if n < 2:
            return
        with for_range(b, -(-n // RUN), "insertion.run") as r:
            lo = b.mul(r, index(RUN), flags=["nsw"])
            hi = _minimum(b, b.add(lo, index(RUN), flags=["nsw"]), index(n))
            with for_range(b, b.sub(b.sub(hi, lo), index(1)), "insertion.item") as step:
                i = b.add(b.add(lo, step, flags=["nsw"]), index(1), flags=["nsw"])
                key = b.load(self._slot(keys, i, self.kt), typ=self.kt)
                position = b.load(self._slot(positions, i, I64), typ=I64)
                b.store(i, self.j_slot)
                self._shift_greater(keys, positions, lo, key)
                j = b.load(self.j_slot, typ=I64)
                b.store(key, self._slot(keys, j, self.kt))
                b.store(position, self._slot(positions, j, I64))

    def _shift_greater(self, keys, positions, lo, key) -> None:
        """while j > lo and keys[j - 1] > key: move element j - 1 up one, j -= 1."""
        b = self.b
        check_bound = b.append_basic_block("shift.bound")
        check_key = b.append_basic_block("shift.key")
        move = b.append_basic_block("shift.move")
        done = b.append_basic_block("shift.done")
        b.branch(check_bound)
        b.position_at_end(check_bound)
        j = b.load(self.j_slot, typ=I64)
        b.cbranch(b.icmp_signed(">", j, lo), check_key, done)
        b.position_at_end(check_key)
        before = b.sub(j, index(1))
        before_key = b.load(self._slot(keys, before, self.kt), typ=self.kt)
        b.cbranch(b.icmp_unsigned(">", before_key, key), move, done)
        b.position_at_end(move)
        b.store(before_key, self._slot(keys, j, self.kt))
        b.store(b.load(self._slot(positions, before, I64), typ=I64), self._slot(positions, j, I64))
        b.store(before, self.j_slot)
        b.branch(check_bound)
        b.position_at_end(done)

    def _merge_pass(self, source, target, width: int) -> None:
        b, n, kt = self.b, self.n, self.kt
        (src_keys, src_positions), (dst_keys, dst_positions) = source, target
        runs = -(-n // (2 * width))
        with for_range(b, runs, f"merge{width}.run") as r:
            lo = b.mul(r, index(2 * width), flags=["nsw"])
            mid = _minimum(b, b.add(lo, index(width), flags=["nsw"]), index(n))
            hi = _minimum(b, b.add(lo, index(2 * width), flags=["nsw"]), index(n))
            b.store(lo, self.i_slot)
            b.store(mid, self.j_slot)
            last_left, last_right = b.sub(mid, index(1)), b.sub(hi, index(1))
            with for_range(b, b.sub(hi, lo), f"merge{width}.out") as step:
                i, j = b.load(self.i_slot, typ=I64), b.load(self.j_slot, typ=I64)
                li, rj = _minimum(b, i, last_left), _minimum(b, j, last_right)
                left_key = b.load(self._slot(src_keys, li, kt), typ=kt)
                right_key = b.load(self._slot(src_keys, rj, kt), typ=kt)
                left_open = b.icmp_signed("<", i, mid)
                right_open = b.icmp_signed("<", j, hi)
                right_first = b.icmp_unsigned("<", right_key, left_key)
                take_right = b.or_(b.not_(left_open), b.and_(right_open, right_first))
                out = b.add(lo, step, flags=["nsw"])
                b.store(b.select(take_right, right_key, left_key), self._slot(dst_keys, out, kt))
                left_position = b.load(self._slot(src_positions, li, I64), typ=I64)
                right_position = b.load(self._slot(src_positions, rj, I64), typ=I64)
                b.store(b.select(take_right, right_position, left_position), self._slot(dst_positions, out, I64))
                b.store(b.select(take_right, i, b.add(i, index(1))), self.i_slot)
                b.store(b.select(take_right, b.add(j, index(1)), j), self.j_slot)


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


def emit_searchsorted(ec, op) -> None:
    """A branchless binary search per value over the keys of the sorted operand: a fixed
    ceil(log2(n + 1)) halvings of the candidate range [base, base + length)."""
    (a, v), result = op.operands, op.results[0]
    if result.type.size == 0:
        return
    b, ctx = ec.builder, ec.ctx
    dtype, t = a.type.dtype, memory_type(a.type.dtype)
    n = a.type.shape[0]
    a_ptr, v_ptr, out = ec.pointer(a), ec.pointer(v), ec.pointer(result)
    right = op.attrs["side"] == "right"
    base_slot = alloca_in_entry(b, I64, "search.base")
    length_slot = alloca_in_entry(b, I64, "search.length")

    def key_at(ptr, k):
        value = b.load(b.gep(ptr, [k], inbounds=True, source_etype=t), typ=t)
        return sort_key(ctx, b, ctx.from_memory(value, dtype), dtype)

    with for_range(b, result.type.size, "search.value") as k:
        target = key_at(v_ptr, k)
        b.store(index(0), base_slot)
        b.store(index(n), length_slot)
        for _ in range(n.bit_length()):
            base, length = b.load(base_slot, typ=I64), b.load(length_slot, typ=I64)
            half = b.lshr(length, index(1))
            middle = b.add(base, half)
            probe = key_at(a_ptr, _minimum(b, middle, index(max(n - 1, 0))))
            # go right of the middle when a[middle] < v (left) or a[middle] <= v (right)
            go_right = b.icmp_unsigned("<=" if right else "<", probe, target)
            go_right = b.and_(go_right, b.icmp_signed(">", length, index(0)))
            b.store(b.select(go_right, b.add(middle, index(1)), base), base_slot)
            b.store(b.select(go_right, b.sub(b.sub(length, half), index(1)), half), length_slot)
        b.store(b.load(base_slot, typ=I64), b.gep(out, [k], inbounds=True, source_etype=I64))
