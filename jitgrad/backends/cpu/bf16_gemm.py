"""Native bfloat16 matrix products on CPUs with AVX-512 BF16 (`vdpbf16ps`).

OpenBLAS as NumPy ships it has no bfloat16 GEMM, so a product of bfloat16 operands would
otherwise be widened to float32 and go through `sgemm`. Where the CPU has `avx512bf16`,
`emit_bf16_gemm` computes C = A @ B from the bfloat16 operands directly:

- A (m, k) and B (k, n) are bfloat16, read in place (row-major or transposed, any
  leading dimension); C is float32, row-major (m, n).
- Both operands are packed into the layout `vdpbf16ps` reads: consecutive k come in
  pairs, each pair one 32-bit word (element 2q in the low half), zero-padded to whole
  tiles and to an even k, so the micro-kernel never reads outside the packed buffers
  and the packing never reads outside the operands.
- The micro-kernel holds an MR x NR tile of C in 2 * MR vector registers of 16 float32
  and, for each pair q, adds `a[i, 2q+1] * b[2q+1, j]` and then `a[i, 2q] * b[2q, j]`
  into a float32 accumulator for C[i, j] (one `vdpbf16ps` per 16 columns and 32
  products). Pairs are taken in k order, in blocks of KC_PAIRS: each block is summed
  from zero and added to C (as BLAS kernels block k), so a long sum's rounding error
  grows with KC + k / KC rather than k. The order depends on k alone, never on the tile
  position or the thread count.
- Rows are cut into blocks of MC rows that threads share (GOMP_parallel, the blocks of
  one thread contiguous); each element is computed by one thread, so results are
  bit-identical for any number of threads.

Numerics: a product of two bfloat16 numbers (8 significant bits each) is exact in
float32, so the only roundings are the float32 additions, one per product and one per
k-block, as in a float32 GEMM of the widened operands; the instruction treats denormal
inputs as zero and flushes denormal sums to zero (its DAZ/FTZ), which changes results
only where |values| < 2^-126. Elementwise, with b = ceil(k / (2 KC_PAIRS)) blocks:
|C - A@B| <= (min(k, 2 KC_PAIRS) + b) * 2^-24 * (|A| @ |B|) + k * 2^-126.
"""
from __future__ import annotations

import functools
import math

import llvmlite.binding as llvm
from llvmlite import ir

from .llvm_support import F32, I1, I16, I32, I64, PTR, VOID, alloca_in_entry, for_range, index

__all__ = ["BFLOAT", "MR", "NR", "KC_PAIRS", "MC", "host_has_native_bf16", "worth_native", "emit_bf16_gemm",
           "packed_bytes"]

MR = 8             # rows of the micro-tile: 2 * MR accumulators of 16 float32
NR = 32            # columns of the micro-tile: two vectors of 16 float32
KC_PAIRS = 128     # k-pairs per block: a packed B panel of 128 x 32 pairs is 16 KiB (L1)
MC = 64            # rows per block: the unit of work that threads share
PARALLEL_MIN_PRODUCTS = 1 << 22   # m * n * k from which a product runs on threads
MIN_COLUMNS = 16   # narrower products leave most of the 32-column tile empty


def worth_native(m: int, n: int, k: int) -> bool:
    """Whether the kernel takes an (m, k) @ (k, n) product: not outer products (k = 1:
    each element one exact product, the loop kernel's, which keeps NumPy's -0.0), nor
    vectors (m = 1: gemv, as NumPy), nor fewer than MIN_COLUMNS columns, where most of
    the 32-column tile would be empty and sgemm on the widened operands is as fast or
    faster (docs/mixed-precision.md gives the figures)."""
    return k > 1 and m > 1 and n >= MIN_COLUMNS


class BFloatType(ir.types._BaseFloatType):
    """LLVM's `bfloat`, which llvmlite's IR module does not spell (the intrinsic's operand)."""
    null = "0.0"
    intrinsic_name = "bf16"

    def __str__(self):
        return "bfloat"


BFloatType._create_instance()
BFLOAT = BFloatType()
F32X16 = ir.VectorType(F32, 16)
BF16X32 = ir.VectorType(BFLOAT, 32)
I32X16 = ir.VectorType(I32, 16)
DPBF16PS = "llvm.x86.avx512bf16.dpbf16ps.512"


@functools.cache
def host_has_native_bf16() -> bool:
    """Whether this CPU has AVX-512 BF16 (and AVX-512F), as LLVM reports it."""
    features = set(llvm.get_host_cpu_features().flatten().split(","))
    return {"+avx512bf16", "+avx512f"} <= features


def packed_bytes(rows: int, k: int, width: int) -> int:
    """Bytes of one operand packed in tiles of `width` rows (or columns) and k-pairs."""
    return -(-rows // width) * width * -(-k // 2) * 4


# --------------------------------------------------------------------------- small helpers

def _function(module: ir.Module, name: str, args) -> tuple[ir.Function, ir.IRBuilder, bool]:
    """The module's internal function `name` and a builder at its entry; the bool says
    whether it still needs a body (each helper is emitted once per module)."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing, None, False
    fn = ir.Function(module, ir.FunctionType(VOID, list(args)), name)
    fn.linkage = "internal"
    fn.attributes.add("minsize")         # loops written with explicit vectors: LLVM's unrolling and
    fn.attributes.add("optsize")         # vectorizing them again would only cost compile time
    return fn, ir.IRBuilder(fn.append_basic_block("entry")), True


def _gep(b: ir.IRBuilder, base, offset, etype) -> ir.Value:
    return b.gep(base, [offset], inbounds=True, source_etype=etype)


def _min(b: ir.IRBuilder, x, y) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def _ceil_div(b: ir.IRBuilder, x, d: int) -> ir.Value:
    return b.sdiv(b.add(x, index(d - 1)), index(d))


def _declare_dpbf16ps(module: ir.Module) -> ir.Function:
    existing = module.globals.get(DPBF16PS)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(F32X16, [F32X16, BF16X32, BF16X32]), DPBF16PS)


# --------------------------------------------------------------------------- packing

def _pack_pairs_along_rows(module: ir.Module, width: int) -> ir.Function:
    """`pack(src, ld, rows, k, dst)` for an operand whose element (r, kk) is at
    src[r * ld + kk] (each pair of k is one unaligned 32-bit load): dst holds tiles of
    `width` rows, [tile][pair][row in tile] words, zero beyond `rows` and `k`."""
    fn, b, new = _function(module, f"jitgrad.bf16.pack_rows{width}", [PTR, I64, I64, I64, PTR])
    if not new:
        return fn
    src, ld, rows, k, dst = fn.args
    pairs = _ceil_div(b, k, 2)
    full_pairs = b.sdiv(k, index(2))
    tiles = _ceil_div(b, rows, width)
    with for_range(b, b.mul(tiles, index(width)), "row") as r:
        tile, lane = b.sdiv(r, index(width)), b.srem(r, index(width))
        out = _gep(b, dst, b.add(b.mul(b.mul(tile, pairs), index(width)), lane), I32)
        inside = b.icmp_signed("<", r, rows)
        row = _gep(b, src, b.mul(_min(b, r, b.sub(rows, index(1))), ld), I16)
        with b.if_else(inside) as (present, padding):
            with present:
                with for_range(b, full_pairs, "pair") as q:
                    word = b.load(_gep(b, row, b.mul(q, index(2)), I16), typ=I32, align=2)
                    b.store(word, _gep(b, out, b.mul(q, index(width)), I32))
                with b.if_then(b.icmp_signed("<", full_pairs, pairs)):        # odd k: the last pair's high half is 0
                    last = b.load(_gep(b, row, b.sub(k, index(1)), I16), typ=I16)
                    b.store(b.zext(last, I32), _gep(b, out, b.mul(full_pairs, index(width)), I32))
            with padding:
                with for_range(b, pairs, "zero") as q:
                    b.store(ir.Constant(I32, 0), _gep(b, out, b.mul(q, index(width)), I32))
    b.ret_void()
    return fn


def _pack_pairs_across_rows(module: ir.Module, width: int) -> ir.Function:
    """`pack(src, ld, rows, k, dst)` for an operand whose element (r, kk) is at
    src[kk * ld + r]: rows 2q and 2q+1 of the source interleaved, `width` at a time
    with two vector loads and a shuffle where the tile is whole, element by element at
    the edges (never loading outside the source). Same packed layout as above."""
    fn, b, new = _function(module, f"jitgrad.bf16.pack_cols{width}", [PTR, I64, I64, I64, PTR])
    if not new:
        return fn
    src, ld, rows, k, dst = fn.args
    pairs = _ceil_div(b, k, 2)
    tiles = _ceil_div(b, rows, width)
    vector = ir.VectorType(I16, width)
    interleave = [x for j in range(width) for x in (j, width + j)]
    with for_range(b, tiles, "tile") as tile:
        first_row = b.mul(tile, index(width))
        whole_tile = b.icmp_signed("<=", b.add(first_row, index(width)), rows)
        with for_range(b, pairs, "pair") as q:
            even = b.mul(q, index(2))
            odd = b.add(even, index(1))
            out = _gep(b, dst, b.mul(b.add(b.mul(tile, pairs), q), index(2 * width)), I16)
            with b.if_else(b.and_(whole_tile, b.icmp_signed("<", odd, k))) as (whole, edge):
                with whole:
                    low = b.load(_gep(b, src, b.add(b.mul(even, ld), first_row), I16), typ=vector, align=2)
                    high = b.load(_gep(b, src, b.add(b.mul(odd, ld), first_row), I16), typ=vector, align=2)
                    b.store(b.shuffle_vector(low, high, ir.Constant(
                        ir.VectorType(I32, 2 * width), interleave)), out, align=4)
                with edge:
                    for half, kk in enumerate((even, odd)):
                        with for_range(b, index(width), "lane") as lane:
                            r = b.add(first_row, lane)
                            inside = b.and_(b.icmp_signed("<", r, rows), b.icmp_signed("<", kk, k))
                            safe = b.select(inside, b.add(b.mul(kk, ld), r), index(0))
                            item = b.load(_gep(b, src, safe, I16), typ=I16)
                            b.store(b.select(inside, item, ir.Constant(I16, 0)),
                                    _gep(b, out, b.add(b.mul(lane, index(2)), index(half)), I16))
    b.ret_void()
    return fn


# --------------------------------------------------------------------------- micro-kernel

def _tile(module: ir.Module) -> ir.Function:
    """`tile(pa, pb, pairs, c, ldc, rows, cols, accumulate)`: the product of an A tile
    (MR rows) and a B panel (NR columns) over `pairs` k-pairs, summed from zero, stored
    to C[:rows, :cols] or (accumulate) added to it. Whole tiles read and write C
    directly; edge tiles go through an MR x NR buffer on the stack, copied element by
    element inside the bounds."""
    fn, b, new = _function(module, "jitgrad.bf16.tile", [PTR, PTR, I64, PTR, I64, I64, I64, I1])
    if not new:
        return fn
    fn.attributes.add("noinline")
    pa, pb, pairs, c, ldc, rows, cols, accumulate = fn.args
    dpbf16ps = _declare_dpbf16ps(module)
    halves = NR // 16
    accumulators = [[alloca_in_entry(b, F32X16, f"acc{i}.{h}") for h in range(halves)] for i in range(MR)]
    edge_tile = alloca_in_entry(b, F32, "edge", count=MR * NR)
    whole = b.and_(b.icmp_signed("==", rows, index(MR)), b.icmp_signed("==", cols, index(NR)))
    target = b.select(whole, c, edge_tile)
    target_ld = b.select(whole, ldc, index(NR))

    with b.if_then(b.not_(whole)):                       # the edge buffer: C inside the bounds, else 0
        with for_range(b, index(MR * NR), "edge.in") as e:
            i, j = b.sdiv(e, index(NR)), b.srem(e, index(NR))
            inside = b.and_(accumulate, b.and_(b.icmp_signed("<", i, rows), b.icmp_signed("<", j, cols)))
            safe = b.select(inside, b.add(b.mul(i, ldc), j), index(0))
            item = b.load(_gep(b, c, safe, F32), typ=F32)
            b.store(b.select(inside, item, ir.Constant(F32, 0.0)), _gep(b, edge_tile, e, F32))
    for row in accumulators:
        for accumulator in row:
            b.store(ir.Constant(F32X16, None), accumulator)

    with for_range(b, pairs, "k") as q:
        panel = [b.load(_gep(b, pb, b.add(b.mul(q, index(2 * NR)), index(32 * h)), I16), typ=BF16X32, align=4)
                 for h in range(halves)]
        for i in range(MR):
            word = b.load(_gep(b, pa, b.add(b.mul(q, index(MR)), index(i)), I32), typ=I32)
            splat = b.shuffle_vector(b.insert_element(ir.Constant(I32X16, None), word, ir.Constant(I32, 0)),
                                     ir.Constant(I32X16, None), ir.Constant(I32X16, None))
            a_pair = b.bitcast(splat, BF16X32)
            for h in range(halves):
                total = b.call(dpbf16ps, [b.load(accumulators[i][h], typ=F32X16), a_pair, panel[h]])
                b.store(total, accumulators[i][h])

    for i in range(MR):
        for h in range(halves):
            at = _gep(b, target, b.add(b.mul(index(i), target_ld), index(16 * h)), F32)
            block_sum = b.load(accumulators[i][h], typ=F32X16)
            earlier = b.load(at, typ=F32X16, align=4)        # in bounds; unused by the first block
            b.store(b.select(accumulate, b.fadd(earlier, block_sum), block_sum), at, align=4)
    with b.if_then(b.not_(whole)):
        with for_range(b, rows, "edge.row") as i:
            with for_range(b, cols, "edge.col") as j:
                item = b.load(_gep(b, edge_tile, b.add(b.mul(i, index(NR)), j), F32), typ=F32)
                b.store(item, _gep(b, c, b.add(b.mul(i, ldc), j), F32))
    b.ret_void()
    return fn


# --------------------------------------------------------------------------- blocked product

CLOSURE_SLOTS = ("packed_a", "packed_b", "c", "m", "n", "k")


def _row_blocks(module: ir.Module) -> ir.Function:
    """`blocks(closure, first, last)`: C's row blocks [first, last) of MC rows, each over
    k-blocks of KC_PAIRS pairs (C reloaded between them), B panels and A tiles."""
    fn, b, new = _function(module, "jitgrad.bf16.blocks", [PTR, I64, I64])
    if not new:
        return fn
    closure, first, last = fn.args
    slot = {name: _gep(b, closure, index(k), I64) for k, name in enumerate(CLOSURE_SLOTS)}
    packed_a, packed_b, c = (b.inttoptr(b.load(slot[name], typ=I64), PTR) for name in ("packed_a", "packed_b", "c"))
    m, n, k = (b.load(slot[name], typ=I64) for name in ("m", "n", "k"))
    pairs = _ceil_div(b, k, 2)
    tiles, panels = _ceil_div(b, m, MR), _ceil_div(b, n, NR)
    tile = _tile(module)
    with for_range(b, b.sub(last, first), "block") as block_offset:
        first_tile = b.mul(b.add(first, block_offset), index(MC // MR))
        block_tiles = b.sub(_min(b, b.add(first_tile, index(MC // MR)), tiles), first_tile)
        with for_range(b, _ceil_div(b, pairs, KC_PAIRS), "kblock") as kb:
            pair0 = b.mul(kb, index(KC_PAIRS))
            block_pairs = _min(b, index(KC_PAIRS), b.sub(pairs, pair0))
            accumulate = b.icmp_signed(">", kb, index(0))
            with for_range(b, panels, "panel") as p:
                b_panel = _gep(b, packed_b, b.mul(b.add(b.mul(p, pairs), pair0), index(NR)), I32)
                col0 = b.mul(p, index(NR))
                cols = _min(b, index(NR), b.sub(n, col0))
                with for_range(b, block_tiles, "tile") as t_offset:
                    t = b.add(first_tile, t_offset)
                    a_tile = _gep(b, packed_a, b.mul(b.add(b.mul(t, pairs), pair0), index(MR)), I32)
                    row0 = b.mul(t, index(MR))
                    rows = _min(b, index(MR), b.sub(m, row0))
                    c_tile = _gep(b, c, b.add(b.mul(row0, n), col0), F32)
                    b.call(tile, [a_tile, b_panel, block_pairs, c_tile, n, rows, cols, accumulate])
    b.ret_void()
    return fn


def _thread_entry(module: ir.Module, threads) -> ir.Function:
    """`entry(closure)`, run by every libgomp thread: a contiguous share of the row
    blocks, whose count is the closure's seventh slot."""
    fn, b, new = _function(module, "jitgrad.bf16.thread", [PTR])
    if not new:
        return fn
    closure = fn.args[0]
    blocks = b.load(_gep(b, closure, index(len(CLOSURE_SLOTS)), I64), typ=I64)
    thread = b.sext(b.call(threads.thread_num(module), []), I64)
    count = b.sext(b.call(threads.num_threads(module), []), I64)
    first = b.sdiv(b.mul(thread, blocks), count)
    last = b.sdiv(b.mul(b.add(thread, index(1)), blocks), count)
    b.call(_row_blocks(module), [closure, first, last])
    b.ret_void()
    return fn


def emit_bf16_gemm(emitter, a, b_operand, c, m: int, n: int, k: int, nb: int) -> None:
    """C_i = A_i @ B_i (i < nb) at the emitter's builder: `a` and `b_operand` are
    `MatrixOperand`s of bfloat16 buffers, `c` the float32 result (nb dense m x n
    matrices). Packing buffers come from the emitter's scratch space; with the emitter's
    threads, large products share their row blocks out (serially in a forked child)."""
    module, bld = emitter.module, emitter.builder
    packed_a = emitter.scratch(packed_bytes(m, k, MR))
    packed_b = emitter.scratch(packed_bytes(n, k, NR))
    pack_a = _pack_pairs_along_rows(module, MR) if not a.trans else _pack_pairs_across_rows(module, MR)
    pack_b = _pack_pairs_across_rows(module, NR) if not b_operand.trans else _pack_pairs_along_rows(module, NR)
    blocks = _row_blocks(module)
    row_blocks = -(-m // MC)
    closure = alloca_in_entry(bld, I64, "bf16.closure", count=len(CLOSURE_SLOTS) + 1)
    threads = emitter.threads if m * n * k >= PARALLEL_MIN_PRODUCTS and row_blocks > 1 else None

    def product(a_i, b_i, c_i) -> None:
        bld.call(pack_a, [a_i, index(a.ld), index(m), index(k), packed_a])
        bld.call(pack_b, [b_i, index(b_operand.ld), index(n), index(k), packed_b])
        for slot, item in enumerate([packed_a, packed_b, c_i, index(m), index(n), index(k), index(row_blocks)]):
            word = bld.ptrtoint(item, I64) if isinstance(item.type, ir.PointerType) else item
            bld.store(word, _gep(bld, closure, index(slot), I64))
        serial = [closure, index(0), index(row_blocks)]
        if threads is None:
            bld.call(blocks, serial)
            return
        if threads.claims_blocks:
            threads.emit_run(bld, module, blocks, closure, index(row_blocks))
            return
        with bld.if_else(emitter.runtime.serial(bld)) as (in_forked_child, threaded):
            with in_forked_child:
                bld.call(blocks, serial)
            with threaded:
                bld.call(threads.parallel(module), [_thread_entry(module, threads), closure,
                                                    ir.Constant(I32, threads.count), ir.Constant(I32, 0)])

    if nb == 1:
        product(a.buffer, b_operand.buffer, c)
        return
    with for_range(bld, nb, "bf16.batch") as bi:
        product(_gep(bld, a.buffer, bld.mul(bi, index(a.batch_stride)), I16),
                _gep(bld, b_operand.buffer, bld.mul(bi, index(b_operand.batch_stride)), I16),
                _gep(bld, c, bld.mul(bi, index(m * n)), F32))


def contraction_sizes(op) -> tuple[tuple, tuple, int, int, int, int]:
    """((lhs batch, free, contracted axes), (rhs batch, contracted, free axes), nb, m, n, k)
    of a dot_general, as the kernel layer's `emit_contraction` reads them."""
    lhs, rhs = op.operands
    (lc, rc), (lb, rb) = op.attrs["contract"], op.attrs["batch"]
    lf = [a for a in range(lhs.type.ndim) if a not in lc and a not in lb]
    rf = [a for a in range(rhs.type.ndim) if a not in rc and a not in rb]
    nb = math.prod(lhs.type.shape[a] for a in lb)
    m = math.prod(lhs.type.shape[a] for a in lf)
    k = math.prod(lhs.type.shape[a] for a in lc)
    n = math.prod(rhs.type.shape[a] for a in rf)
    return (lb, lf, lc), (rb, rc, rf), nb, m, n, k
