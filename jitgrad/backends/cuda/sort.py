"""CUDA kernels of sort, argsort and searchsorted (`jitgrad/primitives/sorting.py`).

sort/argsort: one grid-stride loop over the rows; the thread of a row runs a stable
bottom-up merge sort of the row's (key, position) pairs in the row's own part of the
workspace (two key buffers and two position buffers of n entries each, ping-ponged;
the pass count, ceil(log2 n), is known when the code is generated, so the passes are
unrolled). The keys are the CPU's (`jitgrad.backends.cpu.sort.sort_key`): unsigned
integers whose order is NumPy's sort order (-0.0 equal to +0.0, every NaN after +inf).
A merge takes from the right run only when its key is strictly smaller, which keeps
ties in their original order: the permutation is NumPy's stable one, bit for bit the
CPU's. Every read stays inside the row: a merge clamps the positions it loads into its
runs (the loads of an exhausted run re-read its last element and are never chosen).

searchsorted: one grid-stride loop over the values, each a branchless binary search of
ceil(log2(n + 1)) halvings over the keys of the sorted operand.

One thread per row is the simple, correct first kernel: it is fast for many short rows
and slow for one long row (a block-cooperative merge would be the next step).
"""
from __future__ import annotations

import math

from jitgrad.ir import DType
from ..cpu.llvm_support import I64, alloca_in_entry, index
from ..cpu.sort import key_type, sort_key


def _rows(x):
    shape = x.type.shape
    return math.prod(shape[:-1]), shape[-1]


class _RowMergeSort:
    """Emits, inside a grid-stride loop, the stable sort of one row's (key, position)
    pairs into `positions`, using the row's part of four workspace buffers."""

    def __init__(self, ec, x, rows: int, n: int):
        self.ec, self.b, self.ctx, self.n = ec, ec.builder, ec.ctx, n
        self.dtype = x.type.dtype
        self.key_dtype = DType.u64 if key_type(self.dtype).width == 64 else DType.u32
        key_bytes = self.key_dtype.itemsize
        self.keys = (ec.scratch(key_bytes * rows * n), ec.scratch(key_bytes * rows * n))
        self.positions = (ec.scratch(8 * rows * n), ec.scratch(8 * rows * n))
        self.x = ec.pointer(x)
        self.i_slot = alloca_in_entry(self.b, I64, "merge.i")
        self.j_slot = alloca_in_entry(self.b, I64, "merge.j")

    def sort_row(self, row):
        """Sorts row `row`; returns (buffer, base): the permutation is buffer[base + k]."""
        ctx, n = self.ctx, self.n
        base = ctx.index_mul(row, ctx.index_const(n))
        keys, positions = self.keys[0], self.positions[0]
        with ctx.loop(n, "sort.keys") as k:
            at = ctx.index_add(base, k)
            key = sort_key(ctx, self.b, ctx.load(self.x, at, self.dtype), self.dtype)
            ctx.store(keys, at, key, self.key_dtype)
            ctx.store(positions, at, k, DType.i64)
        source, target = 0, 1
        width = 1
        while width < n:
            self._merge_pass(base, source, target, width)
            source, target = target, source
            width *= 2
        return self.positions[source], base

    def _merge_pass(self, base, source: int, target: int, width: int) -> None:
        b, ctx, n = self.b, self.ctx, self.n
        c_ = ctx.index_const
        src_keys, src_positions = self.keys[source], self.positions[source]
        dst_keys, dst_positions = self.keys[target], self.positions[target]
        kd = self.key_dtype

        def minimum(a, c):
            return ctx.select(ctx.index_cmp("<", a, c), a, c)

        with ctx.loop(-(-n // (2 * width)), f"merge{width}.run") as r:
            lo = ctx.index_mul(r, c_(2 * width))
            mid = minimum(ctx.index_add(lo, c_(width)), c_(n))
            hi = minimum(ctx.index_add(lo, c_(2 * width)), c_(n))
            b.store(lo, self.i_slot)
            b.store(mid, self.j_slot)
            last_left, last_right = ctx.index_sub(mid, c_(1)), ctx.index_sub(hi, c_(1))
            with ctx.loop(ctx.index_sub(hi, lo), f"merge{width}.out") as step:
                i, j = b.load(self.i_slot, typ=I64), b.load(self.j_slot, typ=I64)
                li = ctx.index_add(base, minimum(i, last_left))
                rj = ctx.index_add(base, minimum(j, last_right))
                left_key, right_key = ctx.load(src_keys, li, kd), ctx.load(src_keys, rj, kd)
                left_open = ctx.index_cmp("<", i, mid)
                right_open = ctx.index_cmp("<", j, hi)
                right_first = b.icmp_unsigned("<", right_key, left_key)
                take_right = b.or_(b.not_(left_open), b.and_(right_open, right_first))
                out = ctx.index_add(base, ctx.index_add(lo, step))
                ctx.store(dst_keys, out, ctx.select(take_right, right_key, left_key), kd)
                position = ctx.select(take_right, ctx.load(src_positions, rj, DType.i64),
                                      ctx.load(src_positions, li, DType.i64))
                ctx.store(dst_positions, out, position, DType.i64)
                b.store(ctx.select(take_right, i, ctx.index_add(i, c_(1))), self.i_slot)
                b.store(ctx.select(take_right, ctx.index_add(j, c_(1)), j), self.j_slot)


def emit_argsort(ec, op) -> None:
    (x,), result = op.operands, op.results[0]
    rows, n = _rows(x)
    if result.type.size == 0:
        return
    ec.begin_launch(True, rows)
    ctx = ec.ctx
    sorter, out = _RowMergeSort(ec, x, rows, n), ec.pointer(result)
    with ctx.grid_loop(rows, "argsort.row") as row:
        permutation, base = sorter.sort_row(row)
        with ctx.loop(n, "argsort.out") as k:
            at = ctx.index_add(base, k)
            ctx.store(out, at, ctx.load(permutation, at, DType.i64), DType.i64)


def emit_sort(ec, op) -> None:
    """The row's values in sorted order, copied as their bits through the permutation
    (NaN payloads and zero signs are the operand's)."""
    (x,), result = op.operands, op.results[0]
    rows, n = _rows(x)
    if result.type.size == 0:
        return
    ec.begin_launch(True, rows)
    ctx = ec.ctx
    bits = DType(f"u{8 * x.type.dtype.itemsize}")
    sorter, out, src = _RowMergeSort(ec, x, rows, n), ec.pointer(result), ec.pointer(x)
    with ctx.grid_loop(rows, "sort.row") as row:
        permutation, base = sorter.sort_row(row)
        with ctx.loop(n, "sort.out") as k:
            at = ctx.index_add(base, k)
            source = ctx.index_add(base, ctx.load(permutation, at, DType.i64))
            ctx.store(out, at, ctx.load(src, source, bits), bits)


def emit_searchsorted(ec, op) -> None:
    """Per value: base, length = 0, n; halve [base, base + length) ceil(log2(n + 1))
    times, going right of the middle when a[middle] < v (left) or <= v (right)."""
    (a, v), result = op.operands, op.results[0]
    if result.type.size == 0:
        return
    ec.begin_launch(True, result.type.size)
    b, ctx = ec.builder, ec.ctx
    dtype, n = a.type.dtype, a.type.shape[0]
    a_ptr, v_ptr, out = ec.pointer(a), ec.pointer(v), ec.pointer(result)
    right = op.attrs["side"] == "right"
    c_ = ctx.index_const
    base_slot = alloca_in_entry(b, I64, "search.base")
    length_slot = alloca_in_entry(b, I64, "search.length")

    def key_at(ptr, k):
        return sort_key(ctx, b, ctx.load(ptr, k, dtype), dtype)

    with ctx.grid_loop(result.type.size, "search.value") as k:
        target = key_at(v_ptr, k)
        b.store(c_(0), base_slot)
        b.store(c_(n), length_slot)
        for _ in range(n.bit_length()):
            base, length = b.load(base_slot, typ=I64), b.load(length_slot, typ=I64)
            half = b.lshr(length, index(1))
            middle = ctx.index_add(base, half)
            probe = key_at(a_ptr, ctx.select(ctx.index_cmp("<", middle, c_(n - 1)), middle, c_(max(n - 1, 0))))
            go_right = b.icmp_unsigned("<=" if right else "<", probe, target)
            go_right = b.and_(go_right, ctx.index_cmp(">", length, c_(0)))
            b.store(ctx.select(go_right, ctx.index_add(middle, c_(1)), base), base_slot)
            b.store(ctx.select(go_right, ctx.index_sub(ctx.index_sub(length, half), c_(1)), half), length_slot)
        ctx.store(out, k, b.load(base_slot, typ=I64), DType.i64)
