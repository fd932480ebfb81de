"""CPU kernel of `pure_callback` (jitgrad/callback.py): a call of the Python trampoline
with the op's key and an array of its operand and result buffer addresses."""
from __future__ import annotations

from llvmlite import ir

from .llvm_support import PTR, alloca_in_entry, index

I32 = ir.IntType(32)
I64 = ir.IntType(64)
TRAMPOLINE = ir.FunctionType(I32, [I64, PTR])
"""int32 trampoline(int64 key, void **buffers)"""


def emit_pure_callback(kc, op) -> None:
    """buffers = [operand pointers..., result pointers...]; trampoline(key, buffers).
    The trampoline writes every result (NaN or zero after an exception, which it keeps
    for the Python caller to raise)."""
    b = kc.builder
    values = list(op.operands) + list(op.results)
    buffers = alloca_in_entry(b, PTR, "callback_buffers", count=max(1, len(values)))
    for k, value in enumerate(values):
        slot = b.gep(buffers, [index(k)], inbounds=True, source_etype=PTR)
        b.store(kc.pointer(value), slot)
    trampoline = ir.Constant(I64, op.opdef.lowering.address).inttoptr(PTR)
    trampoline.function_type = TRAMPOLINE
    b.call(trampoline, [ir.Constant(I64, op.attrs["callback"]), buffers])
