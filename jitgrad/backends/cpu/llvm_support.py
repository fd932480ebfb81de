"""Small llvmlite helpers shared by the CPU code generator: LLVM types for jitgrad dtypes,
loops, entry-block allocas, and string attributes llvmlite's builder does not know.

Loops and allocas hide behind context managers as in numba's cgutils, so the code
generator reads as loop nests rather than basic-block plumbing.
"""
from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir
from llvmlite.ir.instructions import CallInstrAttributes
from llvmlite.ir.values import FunctionAttributes

from jitgrad.ir import DType

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
HALF = ir.HalfType()
F32 = ir.FloatType()
F64 = ir.DoubleType()
PTR = ir.PointerType()
VOID = ir.VoidType()


def register_type(dtype: DType) -> ir.Type:
    """The type a scalar of `dtype` has in registers: bool is i1; f16 and bf16 are
    computed in float (each result is rounded to its dtype, as NumPy does)."""
    if dtype == DType.bool:
        return I1
    if dtype.is_integer:
        return ir.IntType(dtype.bits)
    return F64 if dtype == DType.f64 else F32


def memory_type(dtype: DType) -> ir.Type:
    """The type of an element in memory: bool is a byte (as in NumPy), f16 is LLVM's
    half, bf16 is its 16 bits as an integer."""
    if dtype == DType.bool:
        return I8
    if dtype == DType.f16:
        return HALF
    if dtype == DType.bf16:
        return I16
    return register_type(dtype)


def index(n: int) -> ir.Constant:
    return ir.Constant(I64, n)


@contextmanager
def for_range(builder: ir.IRBuilder, count, name: str = "loop"):
    """`for i in range(count)`: yields the i64 induction variable inside the body."""
    count = index(count) if isinstance(count, int) else count
    preheader = builder.block
    header = builder.append_basic_block(f"{name}.header")
    body = builder.append_basic_block(f"{name}.body")
    exit_block = builder.append_basic_block(f"{name}.exit")
    builder.branch(header)
    builder.position_at_end(header)
    i = builder.phi(I64, name=f"{name}.i")
    i.add_incoming(index(0), preheader)
    builder.cbranch(builder.icmp_signed("<", i, count), body, exit_block)
    builder.position_at_end(body)
    yield i
    latch = builder.block
    i.add_incoming(builder.add(i, index(1), flags=["nuw", "nsw"]), latch)
    builder.branch(header)
    builder.position_at_end(exit_block)


@contextmanager
def for_nest(builder: ir.IRBuilder, shape, name: str = "loop"):
    """Nested loops over `shape` (row-major); yields the list of induction variables."""
    if not shape:
        yield []
        return
    with for_range(builder, shape[0], f"{name}{len(shape)}") as i:
        with for_nest(builder, shape[1:], name) as rest:
            yield [i, *rest]


def alloca_in_entry(builder: ir.IRBuilder, type: ir.Type, name: str = "", count: int | None = None) -> ir.AllocaInstr:
    """An alloca (of `count` elements, if given) at the top of the entry block, where
    mem2reg can promote it."""
    saved = builder.block
    entry = builder.function.entry_basic_block
    builder.position_at_start(entry)
    slot = builder.alloca(type, size=None if count is None else index(count), name=name)
    builder.position_at_end(saved)
    return slot


class _StringAttributes(CallInstrAttributes):
    """Call-site attributes that also accept `"key"="value"` string attributes."""

    def add(self, name):
        if name.startswith('"'):
            return set.add(self, name)
        return super().add(name)


class _FunctionStringAttributes(FunctionAttributes):
    def add(self, name):
        if name.startswith('"'):
            return set.add(self, name)
        return super().add(name)


def set_call_string_attribute(call: ir.CallInstr, key: str, value: str) -> None:
    attrs = _StringAttributes(list(call.attributes))
    attrs.add(f'"{key}"="{value}"')
    call.attributes = attrs


def set_function_string_attribute(function: ir.Function, key: str, value: str) -> None:
    attrs = _FunctionStringAttributes(list(function.attributes))
    attrs.add(f'"{key}"="{value}"')
    function.attributes = attrs


def declare(module: ir.Module, name: str, ret: ir.Type, args) -> ir.Function:
    """The module's declaration of `name`, created on first use."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, list(args)), name)
