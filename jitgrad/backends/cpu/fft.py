"""The CPU kernel of `fft` (jitgrad/primitives/fft.py): a mixed-radix Stockham transform.

The operand is a batch of rows of n complex numbers, stored as (real, imaginary) pairs.
For n = R_1 R_2 ... R_s (radices 5, 3, 2: `radix_plan`), stage t with radix R reads the
previous stage's row and writes the next (ping-pong between two scratch rows; the first
stage reads the operand, the last writes the result), without a bit-reversal pass:

    for j in 0 .. n/R - 1, with k = j mod N (N = R_1 ... R_{t-1}, the sub-transforms' size):
        v_r = x[j + r n/R] * w^(r k n/(N R))              r = 0 .. R-1, w = exp(-2 pi i / n)
        y[(j div N) N R + k + q N] = sum_r v_r exp(-2 pi i r q / R)      q = 0 .. R-1

Twiddle factors are read from the `roots` operand (w^m for m < n, exact to the dtype);
the butterflies' own roots of unity are compile-time constants (exactly -1 for radix 2).
Each (length, dtype) is one internal function of the module, written with the scalar-context
protocol and called by every op of that size.

The kernels of `fft_c2c`, `fft_r2c` and `fft_c2r` (`emit_library_transform`) call NumPy's
pocketfft gufunc loops instead (`jitgrad.primitives.fft.library_loops`), all rows of an op
in one call where the rows are evenly spaced, with strides doing the work of moving the
axis: no transposes. The loops are external symbols (`library_symbol`) that
`register_library_symbols` gives LLVM by address when the engine starts, so an object
from the disk cache resolves them in a fresh process as the JIT does.

A loop that fails (pocketfft's plan or buffer allocation) catches the C++ exception,
takes the GIL (PyGILState_Ensure) and sets a Python MemoryError or RuntimeError; the
kernels run on the thread that called the compiled function (never on a thread-pool
worker, whose GIL request would wait for the caller), so that call returns with the
exception set and CPython raises it (SystemError from it) instead of returning results.
"""
from __future__ import annotations

import math

from llvmlite import binding as llvm
from llvmlite import ir

from jitgrad.errors import UnsupportedOperationError
from jitgrad.ir import DType
from jitgrad.primitives.fft import LibraryLoops, library_loops, radix_plan
from .llvm_support import I8, I64, PTR, VOID, alloca_in_entry, declare, for_range, index, memory_type


def emit_fft(ec, op) -> None:
    """A call of the module's transform of this length and dtype (emitted once per module,
    never inlined: a program's transforms, its derivatives' and Bluestein's share them)."""
    (x, roots), result = op.operands, op.results[0]
    if result.type.size == 0:
        return
    n, dtype = x.type.shape[-2], x.type.dtype
    batch = math.prod(x.type.shape[:-2])
    scratch = ec.scratch(2 * 2 * n * dtype.itemsize)
    function = _transform(ec.module, ec.ctx, n, dtype)
    ec.builder.call(function, [ec.pointer(x), ec.pointer(result), ec.pointer(roots), scratch, index(batch)])


def _transform(module, like_ctx, n: int, dtype) -> ir.Function:
    """`void f(src, dst, roots, scratch, batch)`: `batch` rows of n pairs from src to dst."""
    name = f"jitgrad.fft.{dtype}.{n}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    function = ir.Function(module, ir.FunctionType(VOID, [PTR, PTR, PTR, PTR, I64]), name)
    function.linkage = "internal"
    function.attributes.add("noinline")
    function.attributes.add("optsize")      # strided butterflies: vectorizing them costs more compile time than it saves
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    ctx = type(like_ctx)(builder, module, like_ctx.vector_math)
    ctx.operand_dtype = dtype
    src, dst, table, scratch, batch = function.args
    plan = radix_plan(n)
    rows = [scratch, ctx.byte_offset(scratch, 2 * n * dtype.itemsize)]
    with ctx.loop(batch, "fft.batch") as b:
        base = ctx.index_mul(b, ctx.index_const(2 * n))
        if not plan:                      # n == 1: the transform is the identity
            for part in range(2):
                at = ctx.index_add(base, ctx.index_const(part))
                ctx.store(dst, at, ctx.load(src, at, dtype), dtype)
        size = 1
        for t, radix in enumerate(plan):
            reads = (src, base) if t == 0 else (rows[(t - 1) % 2], ctx.index_const(0))
            writes = (dst, base) if t == len(plan) - 1 else (rows[t % 2], ctx.index_const(0))
            _stage(ctx, dtype, table, n, radix, size, reads, writes)
            size *= radix
    builder.ret_void()
    return function


def _stage(ctx, dtype, table, n: int, radix: int, size: int, reads, writes) -> None:
    (src, src_base), (dst, dst_base) = reads, writes
    span = n // radix
    step = n // (size * radix)

    def load_pair(buffer, at):
        return ctx.load(buffer, at, dtype), ctx.load(buffer, ctx.index_add(at, ctx.index_const(1)), dtype)

    with ctx.loop(span, f"fft.radix{radix}") as j:
        k = ctx.index_rem(j, ctx.index_const(size)) if size > 1 else ctx.index_const(0)
        inputs = []
        for r in range(radix):
            at = ctx.index_add(src_base, ctx.index_mul(ctx.index_add(j, ctx.index_const(r * span)),
                                                       ctx.index_const(2)))
            re, im = load_pair(src, at)
            if r and size > 1:
                wr, wi = load_pair(table, ctx.index_mul(k, ctx.index_const(2 * r * step)))
                re, im = ctx.sub(ctx.mul(re, wr), ctx.mul(im, wi)), ctx.add(ctx.mul(re, wi), ctx.mul(im, wr))
            inputs.append((re, im))
        first = ctx.index_add(ctx.index_mul(ctx.index_div(j, ctx.index_const(size)), ctx.index_const(size * radix)), k)
        for q, (re, im) in enumerate(_butterfly(ctx, inputs)):
            at = ctx.index_add(dst_base, ctx.index_mul(ctx.index_add(first, ctx.index_const(q * size)),
                                                       ctx.index_const(2)))
            ctx.store(dst, at, re, dtype)
            ctx.store(dst, ctx.index_add(at, ctx.index_const(1)), im, dtype)


def _butterfly(ctx, v):
    """The DFT of the R values `v` (pairs of registers): y_q = sum_r v_r exp(-2 pi i r q / R)."""
    radix = len(v)
    out = []
    for q in range(radix):
        re, im = v[0]
        for r in range(1, radix):
            turn = (r * q) % radix
            xr, xi = v[r]
            if turn == 0:
                re, im = ctx.add(re, xr), ctx.add(im, xi)
            elif 2 * turn == radix:            # exp(-i pi) = -1 exactly
                re, im = ctx.sub(re, xr), ctx.sub(im, xi)
            else:
                c, s = math.cos(-2 * math.pi * turn / radix), math.sin(-2 * math.pi * turn / radix)
                c, s = ctx.const(c, xr), ctx.const(s, xr)
                re = ctx.add(re, ctx.sub(ctx.mul(xr, c), ctx.mul(xi, s)))
                im = ctx.add(im, ctx.add(ctx.mul(xr, s), ctx.mul(xi, c)))
        out.append((re, im))
    return out


# --------------------------------------------------------------------------- NumPy's pocketfft loops

def library_symbol(loop: str, dtype: DType) -> str:
    """The name generated code calls NumPy's `loop` (a `LibraryLoops` field) of `dtype` by."""
    return f"jitgrad.pocketfft.{loop}.{dtype}"


def register_library_symbols() -> None:
    """Make NumPy's pocketfft loops resolvable by `library_symbol` for every module
    compiled or loaded from now on (idempotent)."""
    for dtype in (DType.f32, DType.f64):
        loops = library_loops(dtype)
        if loops is not None:
            for loop in LibraryLoops.__dataclass_fields__:
                llvm.add_symbol(library_symbol(loop, dtype), getattr(loops, loop))


def emit_library_transform(ec, op) -> None:
    """One loop call per kernel where the rows along `axis` are evenly spaced: a transform
    along the last complex axis (rows n apart), or along the first (rows one element
    apart, the axis's stride between elements); along another axis, one call per index of
    the axes before it, each over the rows of the axes after it."""
    x, result = op.operands[0], op.results[0]
    dtype, axis = x.type.dtype, op.attrs["axis"]
    loops = library_loops(dtype)
    if loops is None:
        raise UnsupportedOperationError(f"{op.name} needs NumPy's pocketfft loops, which this NumPy lacks", op.loc)
    if result.type.size == 0:
        return
    register_library_symbols()
    real = dtype.itemsize
    complex_in = op.name != "fft_r2c"
    complex_out = op.name != "fft_c2r"
    in_dims = x.type.shape[:-1] if complex_in else x.type.shape
    out_dims = result.type.shape[:-1] if complex_out else result.type.shape
    in_item, out_item = real * (2 if complex_in else 1), real * (2 if complex_out else 1)
    n_in, n_out = in_dims[axis], out_dims[axis]
    before, after = math.prod(in_dims[:axis]), math.prod(in_dims[axis + 1:])
    if op.name == "fft_c2c":
        loop, data = "c2c", _direction_flag(ec.module, op.attrs["forward"])
    elif op.name == "fft_r2c":
        loop, data = ("r2c_even" if n_in % 2 == 0 else "r2c_odd"), ir.Constant(PTR, None)
    else:
        loop, data = "c2r", ir.Constant(PTR, None)
    function = declare(ec.module, library_symbol(loop, dtype), VOID, [PTR, PTR, PTR, PTR])
    b = ec.builder
    factor = alloca_in_entry(b, memory_type(dtype), "fft.factor")
    b.store(ir.Constant(memory_type(dtype), op.attrs["scale"]), factor)
    if after == 1:
        rows, row_steps, element_steps = before, (n_in * in_item, n_out * out_item), (in_item, out_item)
    else:
        rows, row_steps, element_steps = after, (in_item, out_item), (after * in_item, after * out_item)
    dimensions = _i64_array(b, "fft.dimensions", (rows, n_in, n_out))
    steps = _i64_array(b, "fft.steps", (row_steps[0], 0, row_steps[1], *element_steps))
    arguments = alloca_in_entry(b, PTR, "fft.arguments", count=3)

    def call(source, target):
        for k, pointer in enumerate((source, factor, target)):
            b.store(pointer, b.gep(arguments, [index(k)], inbounds=True, source_etype=PTR))
        b.call(function, [arguments, dimensions, steps, data])

    source, target = ec.pointer(x), ec.pointer(result)
    if after == 1 or before == 1:
        call(source, target)
        return
    with for_range(b, before, "fft.outer") as i:
        call(b.gep(source, [b.mul(i, index(n_in * after * in_item))], inbounds=True, source_etype=I8),
             b.gep(target, [b.mul(i, index(n_out * after * out_item))], inbounds=True, source_etype=I8))


def _i64_array(b: ir.IRBuilder, name: str, values) -> ir.Value:
    slot = alloca_in_entry(b, I64, name, count=len(values))
    for k, value in enumerate(values):
        b.store(index(value), b.gep(slot, [index(k)], inbounds=True, source_etype=I64))
    return slot


def _direction_flag(module: ir.Module, forward: bool) -> ir.GlobalVariable:
    """The C++ bool the complex loop reads its direction from (true: forward)."""
    name = f"jitgrad.pocketfft.{'forward' if forward else 'backward'}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    flag = ir.GlobalVariable(module, I8, name)
    flag.initializer = ir.Constant(I8, int(forward))
    flag.global_constant = True
    flag.linkage = "private"
    return flag
