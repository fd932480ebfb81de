"""New kinds of kernels (a sort, a scatter-add with runtime indices, a LAPACK call)
without editing any backend's dispatch.

A primitive whose generated code is none of the built-in descriptions (`Elementwise`,
`Gather`, `Scatter`, `Reduction`, `Contraction`, `Alias`, `Constant`) sets its record's
`lowering` to an instance of a `KernelKind` subclass. Every backend then treats the op as
a kernel of its own and hands it to the kind's emitter.

Contract:

* Scheduling (passes/schedule.py): the op is never fused and never inlined. Every
  result is materialized (has a buffer), and so is every operand, so the emitter reads
  operands through pointers to contiguous row-major buffers of exactly the operand's
  type. Ops may have several results.
* Memory (passes/memory.py): every result gets a buffer of its own, allocated before the
  emitter runs: a workspace slot or the caller's output buffer. A result never shares
  bytes with an operand (its lifetime starts in the kernel that reads the operands), so
  the emitter may read operands after writing results. The buffers hold garbage on
  entry: the emitter writes every element of every result (zero-fill first where the
  kernel accumulates).
* Emission: the backend calls `kind.emit(emit_context, op)` at the kernel's place in
  program order. `emit_context.device` names the backend ("cpu", ...). The default
  `emit` imports and calls the function named for that device in `emitters`
  ("package.module:function", imported on first use so that a primitive's module never
  loads a backend). A device without an entry raises `UnsupportedOperationError` naming
  the op and the user's line. Override `emit` instead to handle every device in one
  method.
* The generated code must never read or write out of bounds, whatever the input data
  (clamp or check runtime indices), and never crash the process.

What the CPU emit context offers (`jitgrad.backends.cpu.codegen.CPUFunctionEmitter`, a
`jitgrad.backends.kernel.KernelEmitter`; `Index` is `jitgrad.backends.kernel.Index`):
`builder` (llvmlite IRBuilder, positioned where the kernel goes), `module`, `ctx` (the
scalar context: `jitgrad.backends.kernel.ScalarContext`), `pointer(value)` (the buffer
of an operand or result, an `i8*`-like opaque pointer), `scratch(nbytes)` (64-byte
aligned temporary bytes for this kernel), `load(value, Index)`, `store(value, Index,
x)`, `memset_zero(ptr, nbytes)`, `memcpy(dst, src, nbytes)`, `blas` (the `Blas` loader or
None), and `jitgrad.backends.cpu.llvm_support` (`for_range`, `for_nest`, `index`,
`declare`, `memory_type`) for loops and types.

Backends without compiled code (the interpreting test backend) run the primitive's NumPy
reference `impl` instead.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, ClassVar, Mapping


class KernelKind:
    """Base class of lowering descriptions for ops that are kernels of their own.

    `emitters` maps a device name to "package.module:function" (or to the function
    itself) where `function(emit_context, op) -> None` writes the op's kernel for that
    device. The work estimate backends use for threading and interruption is the op
    record's own `cost` slot, not a property of the kernel kind."""

    emitters: ClassVar[Mapping[str, str | Callable]] = {}
    uses_blas: ClassVar[bool] = False
    """Set for kernels calling BLAS or LAPACK: as for matrix products, the CPU backend then
    runs the program's own loops on threads only where the thread pool's idle workers sleep
    between regions (`beside_blas`); spinning workers and BLAS's threads would compete for
    the cores."""

    def emit(self, emit_context: Any, op) -> None:
        self.emitter(emit_context.device, op)(emit_context, op)

    def emitter(self, device: str, op=None) -> Callable:
        """The emitting function for `device`, imported on first use."""
        target = self.emitters.get(device)
        if target is None:
            from jitgrad.errors import UnsupportedOperationError
            raise UnsupportedOperationError(
                f"{op.name if op is not None else type(self).__name__} has no kernel for device {device!r} "
                f"(it has: {', '.join(sorted(self.emitters)) or 'none'})", getattr(op, "loc", None))
        if callable(target):
            return target
        module_name, _, function_name = target.partition(":")
        return getattr(importlib.import_module(module_name), function_name)
