"""CPU kernels of gather, scatter_add and scatter (`jitgrad/primitives/gather.py`).

Each op indexes one axis of an operand of shape (*pre, n, *post) with int64 indices of
shape I. The kernels view the operand as (P, n, Q) and the gathered/updates array as
(P, m, Q), with P = prod(pre), m = size(I), Q = prod(post), and move one row of Q
contiguous elements per (p, index) pair (a memcpy of Q * itemsize bytes, which LLVM
turns into vector moves).

Every index is clamped into [0, n - 1] in the kernel before it forms an address, so no
data can make the code read or write outside a buffer. scatter_add adds in index order,
as `np.add.at` does (float16 and bfloat16 are added in float and rounded after each
add, NumPy's order of roundings); scatter writes in index order, so the last write to a
repeated index is the one that stays.

index_check is where NumPy's IndexError comes from: it wraps negative indices once,
reports an index outside [-n, n) to the caller (index_errors.py), and clamps.
"""
from __future__ import annotations

import math

from llvmlite import ir

from . import index_errors
from .llvm_support import I64, I8, PTR, for_range, index, memory_type


def _geometry(operand, indices, axis: int):
    shape = operand.type.shape
    return math.prod(shape[:axis]), shape[axis], indices.type.size, math.prod(shape[axis + 1:])


def _element(b: ir.IRBuilder, ptr, offset, type: ir.Type):
    return b.gep(ptr, [offset], inbounds=True, source_etype=type)


def clamped_index(b: ir.IRBuilder, indices_ptr, j, n: int) -> ir.Value:
    """indices[j] clamped into [0, n - 1] (n >= 1)."""
    k = b.load(_element(b, indices_ptr, j, I64), typ=I64)
    k = b.select(b.icmp_signed("<", k, index(0)), index(0), k)
    return b.select(b.icmp_signed(">", k, index(n - 1)), index(n - 1), k)


def _rows(ec, op, body) -> None:
    """Calls body(p, j, k, row_offset_in_operand, row_offset_in_gathered) for every
    (p, j): k is the clamped index, offsets count elements."""
    operand, indices = op.operands[0], op.operands[1]
    pre, n, m, post = _geometry(operand, indices, op.attrs["axis"])
    b = ec.builder
    indices_ptr = ec.pointer(indices)
    with for_range(b, pre, "gather.pre") as p:
        with for_range(b, m, "gather.index") as j:
            k = clamped_index(b, indices_ptr, j, n)
            in_row = b.mul(b.add(b.mul(p, index(n), flags=["nsw"]), k, flags=["nsw"]), index(post), flags=["nsw"])
            out_row = b.mul(b.add(b.mul(p, index(m), flags=["nsw"]), j, flags=["nsw"]), index(post), flags=["nsw"])
            body(in_row, out_row)


def emit_gather(ec, op) -> None:
    operand, indices = op.operands
    result = op.results[0]
    pre, n, m, post = _geometry(operand, indices, op.attrs["axis"])
    if result.type.size == 0:
        return
    out = ec.pointer(result)
    if n == 0:
        ec.memset_zero(out, result.type.nbytes)
        return
    b, t = ec.builder, memory_type(result.type.dtype)
    src, itemsize = ec.pointer(operand), result.type.dtype.itemsize

    def copy_row(in_row, out_row):
        ec.memcpy(_element(b, out, out_row, t), _element(b, src, in_row, t), post * itemsize)
    _rows(ec, op, copy_row)


def _copy_operand(ec, op) -> bool:
    """result = operand; False when there is nothing to scatter into or from."""
    operand, indices, updates = op.operands
    result = op.results[0]
    if result.type.size == 0:
        return False
    ec.memcpy(ec.pointer(result), ec.pointer(operand), result.type.nbytes)
    return updates.type.size > 0


def emit_scatter(ec, op) -> None:
    if not _copy_operand(ec, op):
        return
    operand, indices, updates = op.operands
    result = op.results[0]
    b, t = ec.builder, memory_type(result.type.dtype)
    out, src = ec.pointer(result), ec.pointer(updates)
    post = _geometry(operand, indices, op.attrs["axis"])[3]

    def write_row(in_row, out_row):        # in_row indexes the result, out_row the updates
        ec.memcpy(_element(b, out, in_row, t), _element(b, src, out_row, t), post * result.type.dtype.itemsize)
    _rows(ec, op, write_row)


def emit_scatter_add(ec, op) -> None:
    if not _copy_operand(ec, op):
        return
    operand, indices, updates = op.operands
    result = op.results[0]
    dtype = result.type.dtype
    b, ctx, t = ec.builder, ec.ctx, memory_type(dtype)
    out, src = ec.pointer(result), ec.pointer(updates)
    post = _geometry(operand, indices, op.attrs["axis"])[3]

    def add_row(in_row, out_row):
        with for_range(b, post, "scatter_add.q") as q:
            target = _element(b, out, b.add(in_row, q, flags=["nsw"]), t)
            update = b.load(_element(b, src, b.add(out_row, q, flags=["nsw"]), t), typ=t)
            total = ctx.add(ctx.from_memory(b.load(target, typ=t), dtype), ctx.from_memory(update, dtype))
            b.store(ctx.to_memory(total, dtype), target)
    _rows(ec, op, add_row)


def _location_string(ec, op) -> ir.Value:
    """A pointer to the op's source location as a NUL-terminated string in the module
    (a null pointer when the op has none)."""
    text = str(op.loc) if op.loc is not None else ""
    if not text:
        return ir.Constant(PTR, None)
    data = bytearray(text.encode("utf-8")) + b"\0"
    array_type = ir.ArrayType(I8, len(data))
    site = ir.GlobalVariable(ec.module, array_type, name=ec.module.get_unique_name("jitgrad.index_site"))
    site.initializer = ir.Constant(array_type, data)
    site.global_constant = True
    site.linkage = "private"
    return site


def emit_index_check(ec, op) -> None:
    """result[j] = indices[j] wrapped once if negative, then clamped into [0, n - 1]; an
    index outside [-n, n) is reported first (NumPy's IndexError, raised by the caller)."""
    (indices,), result = op.operands, op.results[0]
    count, n = indices.type.size, op.attrs["size"]
    if count == 0:
        return
    b = ec.builder
    report = index_errors.report_function(ec.module)
    location = _location_string(ec, op)
    src, dst = ec.pointer(indices), ec.pointer(result)
    with for_range(b, count, "index_check") as j:
        k = b.load(_element(b, src, j, I64), typ=I64)
        wrapped = b.select(b.icmp_signed("<", k, index(0)), b.add(k, index(n)), k)
        outside = b.icmp_unsigned(">=", wrapped, index(n))     # negative or >= n
        with b.if_then(outside, likely=False):
            b.call(report, [k, index(op.attrs["axis"]), index(n), location])
        clamped = b.select(b.icmp_signed("<", wrapped, index(0)), index(0), wrapped)
        clamped = b.select(b.icmp_signed(">", clamped, index(max(n - 1, 0))), index(max(n - 1, 0)), clamped)
        b.store(clamped, _element(b, dst, j, I64))
