"""The CUDA `ScalarContext` (jitgrad/backends/kernel.py): the CPU's LLVM scalar operations,
except where the NVPTX backend cannot lower them or lowers them inexactly.

- Math-library calls go to libdevice (`__nv_sin`, `__nv_expf`, ...): most of LLVM's math
  intrinsics are fatal in the NVPTX backend (the process dies, no exception), and the
  rest lower to approximate instructions.
- `fmod` and the float remainder use libdevice's exact `__nv_fmod`: NVPTX expands
  `frem` as x - y * trunc(x / y), which is not exact.
- `maximum`/`minimum` are selects with NumPy's NaN rule and LLVM's signed-zero rule
  (`llvm.maximum` on f64 is not lowered by every NVPTX version).
- Loops: `grid_next()` makes the next `loop` or `loop_nest` a grid-stride loop over the
  launch's threads (its iterations must be independent); every other loop is serial
  within one thread.

The grid emulator uses this same class with `HostMath`: math calls become the CPU's
libm calls and `fmod` LLVM's frem (exact on the host); everything else, including the
grid-stride loops, is the code the GPU runs.
"""
from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

from ..cpu.llvm_support import F64, I64, declare, for_nest
from ..cpu.scalar import MATH_FUNCTIONS, CPUScalarContext

LIBDEVICE_NAMES = {name: f"__nv_{name}" for name in MATH_FUNCTIONS}
"""jitgrad's math names -> libdevice's double-precision functions (float ones end in f)."""


class LibdeviceMath:
    """Math-library calls for the GPU: declarations of libdevice functions, resolved when
    the module is linked with libdevice."""

    device_code = True

    def call(self, ctx: "CUDAScalarContext", name: str, args):
        t = args[0].type
        base = LIBDEVICE_NAMES[name]
        callee = declare(ctx.module, base if t == F64 else base + "f", t, [t] * len(args))
        return ctx.builder.call(callee, list(args))

    def fmod(self, ctx: "CUDAScalarContext", a, b):
        return self.call(ctx, "fmod", [a, b])


class _NoVectorMath:
    """What CPUScalarContext.math asks of libmvec, answered with "no vector variants"."""

    def __init__(self):
        self.used: list = []

    def variants(self, *args):
        return []


class HostMath:
    """Math-library calls for the grid emulator: the CPU's scalar libm calls."""

    device_code = False

    def call(self, ctx: "CUDAScalarContext", name: str, args):
        return CPUScalarContext.math(ctx, name, *args)

    def fmod(self, ctx: "CUDAScalarContext", a, b):
        return ctx.builder.frem(a, b)


LIBDEVICE_NAMES["fmod"] = "__nv_fmod"


class CUDAScalarContext(CPUScalarContext):
    """Implements `jitgrad.backends.kernel.ScalarContext` for CUDA kernels. `thread` and
    `threads` (i64 values set for each kernel function) are the global thread index
    (blockIdx.x * blockDim.x + threadIdx.x) and the grid's thread count."""

    def __init__(self, builder, module: ir.Module, math_library):
        super().__init__(builder, module, _NoVectorMath())
        self.math_library = math_library
        self.thread = None
        self.threads = None
        self._grid_next = False

    # ----- math
    def math(self, name: str, *args):
        return self.math_library.call(self, name, args)

    def fmod(self, a, b):
        if self.is_float(a):
            return self.math_library.fmod(self, a, b)
        return super().fmod(a, b)

    def _float_divmod(self, a, b):
        """(floor_divide, remainder) as NumPy's npy_divmod, with an exact fmod."""
        b_ = self.builder
        zero = self.const(0, a)
        mod = self.fmod(a, b)
        b_is_zero = b_.fcmp_ordered("==", b, zero)
        div = b_.fdiv(b_.fsub(a, mod), b)
        fix = b_.and_(b_.fcmp_unordered("!=", mod, zero),
                      b_.icmp_unsigned("!=", b_.fcmp_ordered("<", b, zero), b_.fcmp_ordered("<", mod, zero)))
        mod_fixed = b_.select(fix, b_.fadd(mod, b), mod)
        div = b_.select(fix, b_.fsub(div, self.const(1, a)), div)
        mod_fixed = b_.select(b_.fcmp_ordered("==", mod, zero), self._intrinsic("llvm.copysign", zero, b),
                              mod_fixed)
        floor = self._intrinsic("llvm.floor", div)
        floor = b_.select(b_.fcmp_ordered(">", b_.fsub(div, floor), self.const(0.5, a)),
                          b_.fadd(floor, self.const(1, a)), floor)
        quotient = b_.fdiv(a, b)
        floor = b_.select(b_.fcmp_ordered("==", div, zero), self._intrinsic("llvm.copysign", zero, quotient), floor)
        return b_.select(b_is_zero, quotient, floor), b_.select(b_is_zero, mod, mod_fixed)

    def maximum(self, a, b):
        """NumPy's maximum (NaN propagates); +0 above -0, as llvm.maximum on the CPU."""
        if not self.is_float(a):
            return super().maximum(a, b)
        return self._float_extremum(a, b, ">", "and")

    def minimum(self, a, b):
        if not self.is_float(a):
            return super().minimum(a, b)
        return self._float_extremum(a, b, "<", "or")

    def _float_extremum(self, a, b, order: str, equal_bits: str):
        """The larger (smaller) of a and b; NaN if either is NaN; of equal values the one
        whose bits are the and (or) of both: +0 for max(+0, -0), -0 for min."""
        b_ = self.builder
        bits = ir.IntType(self.float_width(a))
        combined = getattr(b_, equal_bits + "_")(b_.bitcast(a, bits), b_.bitcast(b, bits))
        chosen = b_.select(b_.fcmp_ordered(order, a, b), a, b)
        chosen = b_.select(b_.fcmp_ordered("==", a, b), b_.bitcast(combined, a.type), chosen)
        return b_.select(b_.fcmp_unordered("uno", a, b), b_.fadd(a, b), chosen)

    # ----- loops
    def grid_next(self) -> None:
        """Make the next `loop`/`loop_nest` a grid-stride loop."""
        self._grid_next = True

    def grid_pending(self) -> bool:
        """Whether a `grid_next()` is still waiting for its loop."""
        return self._grid_next

    def loop(self, count, name: str):
        if self._grid_next:
            self._grid_next = False
            return self.grid_loop(count, name)
        return super().loop(count, name)

    def loop_nest(self, shape, name: str):
        if self._grid_next:
            self._grid_next = False
            return self._grid_nest(shape, name)
        return for_nest(self.builder, shape, name)

    @contextmanager
    def grid_loop(self, count, name: str):
        """for (i = thread; i < count; i += threads): yields the i64 index."""
        b = self.builder
        count = ir.Constant(I64, count) if isinstance(count, int) else count
        preheader = b.block
        header = b.append_basic_block(f"{name}.grid.header")
        body = b.append_basic_block(f"{name}.grid.body")
        exit_block = b.append_basic_block(f"{name}.grid.exit")
        b.branch(header)
        b.position_at_end(header)
        i = b.phi(I64, name=f"{name}.grid.i")
        i.add_incoming(self.thread, preheader)
        b.cbranch(b.icmp_signed("<", i, count), body, exit_block)
        b.position_at_end(body)
        yield i
        i.add_incoming(b.add(i, self.threads, flags=["nsw"]), b.block)
        b.branch(header)
        b.position_at_end(exit_block)

    @contextmanager
    def _grid_nest(self, shape, name: str):
        """A grid-stride loop over the row-major positions of `shape`; yields the
        multi-index (the flat position divided out)."""
        size = 1
        for n in shape:
            size *= n
        with self.grid_loop(size, name) as flat:
            multi, rest = [], flat
            for k in range(len(shape) - 1, -1, -1):
                if k == 0:
                    multi.append(rest)
                else:
                    extent = self.index_const(shape[k])
                    multi.append(self.index_rem(rest, extent))
                    rest = self.index_div(rest, extent)
            yield multi[::-1]


__all__ = ["CUDAScalarContext", "LibdeviceMath", "HostMath"]
