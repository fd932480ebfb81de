"""CPU kernels of the control-flow region ops (jitgrad/primitives/control_flow.py).

Each region is compiled as an ordinary function of the same module — scheduled, fused
and memory-planned like any program, `void region(ptr args)` with the same argument
layout as the outer function (inputs, outputs, workspace, large constants) — and the
op's kernel is the loop or branch that calls it:

  cond   load the predicate; call the then- or the else-region into the result buffers.
  while  copy the initial carry into the result buffers; loop: call the test region, stop
         when it yields false, call the body into a second set of carry buffers, copy
         them back. Counts the trips (a result when the op asks for it).
  fori   the same with a trip count read from the operand and the index as an input;
         passive carries (not results) live in scratch buffers.
  scan   carry as for while; the i-th x slice is read in place (leading-axis slices of a
         row-major array are contiguous) and the body writes the i-th y slice in place.

A region's workspace is a scratch area of the outer function's workspace, so nested
loops need no allocation at run time. Every loop iteration checks for Ctrl-C (the
runtime's interrupt count, as the outer function's long kernels do): a while loop that
never ends stays interruptible. Loop-invariant work stays outside: the values a body
reads from the enclosing function are operands computed once before the loop, and the
body's own work that reads only those (a transposed weight in a backward loop, say) is
moved into a prelude run once before the loop (`hoist_invariants`).
"""
from __future__ import annotations

from llvmlite import ir

from typing import Sequence

from jitgrad.config import config
from jitgrad.ir import DType, Function, Trait, new_function
from jitgrad.ir.rewrite import Rewriter
from jitgrad.passes.memory import plan_buffers
from jitgrad.passes.schedule import schedule
from jitgrad.passes.simplify import DeadCodeElimination
from jitgrad.primitives import Alias, Constant
from jitgrad.primitives.control_flow import cond_p, fori_p, region_function, scan_p, while_p
from .llvm_support import I64, I8, PTR, alloca_in_entry, for_range, index, memory_type, set_function_string_attribute


def _nbytes(t) -> int:
    return t.size * t.dtype.itemsize


CHEAP_LOWERINGS = (Alias, Constant)
REPLICATED_OPS = ("broadcast_in_dim",)
"""Invariant ops cheaper to recompute inline (fused) than to read from a buffer: they are
copied into the hoisted prelude where it needs them but not taken out of the body."""


def hoist_invariants(fn: Function, invariant: Sequence[int]) -> tuple[Function, Function, int] | None:
    """Loop-invariant code motion for a region run many times: the ops of `fn` that read
    only the arguments at `invariant` (the loop's consts), constants and each other move
    to a `prelude(*invariant args) -> hoisted values`, run once before the loop; returns
    (prelude, body, number of hoisted values) where body takes fn's arguments followed by
    the hoisted values; None when there is nothing worth moving."""
    known = {fn.args[k] for k in invariant}
    closure, moved = [], []
    for op in fn.body.ops:
        if op.opdef.is_terminator or op.regions or not op.opdef.has(Trait.PURE) \
                or op.opdef.has(Trait.HAS_SIDE_EFFECT) or not all(v in known for v in op.operands):
            continue
        known.update(op.results)
        closure.append(op)
        if op.operands and not isinstance(op.opdef.lowering, CHEAP_LOWERINGS) and op.name not in REPLICATED_OPS:
            moved.append(op)
    moved_set = set(moved)
    read_by_rest = {v for op in fn.body.ops if op not in moved_set for v in op.operands}
    exported = [r for op in moved for r in op.results if r in read_by_rest]
    if not exported:
        return None
    args = [fn.args[k] for k in invariant]
    prelude, builder = new_function(f"{fn.name}_invariant", [a.type for a in args])
    with builder:
        copier = Rewriter(env=dict(zip(args, prelude.args, strict=True)))
        for op in closure:
            copier.eval_op(op)
        builder.ret([copier.read(v) for v in exported])
    body, builder = new_function(fn.name, [*fn.input_types, *(v.type for v in exported)])
    with builder:
        copier = Rewriter(env={**dict(zip(fn.args, body.args, strict=False)),
                               **dict(zip(exported, body.args[len(fn.args):], strict=True))})
        for op in fn.body.ops:
            if op.opdef.is_terminator:
                with builder.at(op.loc):
                    builder.ret([copier.read(v) for v in op.operands])
            elif op not in moved_set:
                copier.eval_op(op)
    dce = DeadCodeElimination()
    return dce.run(prelude), dce.run(body), len(exported)


class _Region:
    """One region compiled as a function of the module, and how to call it. With
    `invariant` (the positions of the loop's consts among its arguments) its
    loop-invariant work is compiled into a prelude that `prepare` runs once."""

    def __init__(self, kc, fn: Function, invariant: Sequence[int] = ()):
        self.prelude = None
        self.hoisted: list = []
        self.invariant = list(invariant)
        split = hoist_invariants(fn, invariant) if invariant else None
        if split is not None:
            prelude_fn, fn, n_hoisted = split
            self.prelude = _Region(kc, prelude_fn)
            self.hoisted = [kc.scratch(max(_nbytes(t), 1)) for t in prelude_fn.output_types]
        self._compile(kc, fn)

    def prepare(self, inputs) -> None:
        """Run the hoisted prelude on the region's invariant inputs (once, before the loop)."""
        if self.prelude is not None:
            self.prelude.call([inputs[k] for k in self.invariant], self.hoisted)

    def _compile(self, kc, fn: Function) -> None:
        from .codegen import CPUFunctionEmitter
        kc._region_count = getattr(kc, "_region_count", 0) + 1
        sched = schedule(fn, config.fusion)
        memory = plan_buffers(fn, sched)
        symbol = f"{kc.llfn.name}.region{kc._region_count}"
        nested = CPUFunctionEmitter(fn, sched, memory, kc.module, symbol, kc.ctx.vector_math, kc.blas,
                                    threads=kc.threads)
        nested.llfn.linkage = "internal"
        nested.emit()
        width = kc.ctx.vector_math.prefer_vector_width
        if width:
            set_function_string_attribute(nested.llfn, "prefer-vector-width", str(width))
        self.fn, self.llfn, self.kc = fn, nested.llfn, kc
        b = kc.builder
        self.workspace = kc.scratch(nested.workspace_bytes)
        self.constants = [kc._external_constant(c) for c in nested.constants]
        self.args = alloca_in_entry(b, PTR, f"{symbol}.args", count=len(fn.args) + len(fn.outputs) + 1
                                    + len(self.constants))

    def call(self, inputs, outputs) -> None:
        b = self.kc.builder
        items = [*inputs, *self.hoisted, *outputs, self.workspace, *self.constants]
        for k, item in enumerate(items):
            b.store(item, b.gep(self.args, [index(k)], inbounds=True, source_etype=PTR))
        b.call(self.llfn, [self.args])


def _offset(b, buffer, byte_offset):
    return b.gep(buffer, [byte_offset], inbounds=True, source_etype=I8)


def _copy_all(kc, dsts, srcs, types) -> None:
    for dst, src, t in zip(dsts, srcs, types, strict=True):
        if _nbytes(t):
            kc.memcpy(dst, src, _nbytes(t))


def _load_scalar(kc, value, dtype: DType):
    return kc.builder.load(kc.pointer(value), typ=memory_type(dtype))


def emit_region_op(kc, op) -> None:
    {cond_p: _emit_cond, while_p: _emit_while, fori_p: _emit_fori, scan_p: _emit_scan}[op.opdef](kc, op)


def _emit_cond(kc, op) -> None:
    b = kc.builder
    then_region = _Region(kc, region_function(op, 0))
    else_region = _Region(kc, region_function(op, 1))
    pred = b.icmp_unsigned("!=", _load_scalar(kc, op.operands[0], DType.bool), ir.Constant(memory_type(DType.bool), 0))
    inputs = [kc.pointer(v) for v in op.operands[1:]]
    outputs = [kc.pointer(r) for r in op.results]
    with b.if_else(pred) as (then, otherwise):
        with then:
            then_region.call(inputs, outputs)
        with otherwise:
            else_region.call(inputs, outputs)


def _carry_buffers(kc, types):
    """Scratch buffers for the carry a body yields, before it is copied back."""
    return [kc.scratch(_nbytes(t)) for t in types]


def _emit_while(kc, op) -> None:
    b = kc.builder
    n = op.attrs["num_consts"]
    consts, inits = op.operands[:n], op.operands[n:]
    carry_types = [v.type for v in inits]
    test = _Region(kc, region_function(op, 0), range(n))
    body = _Region(kc, region_function(op, 1), range(n))
    const_ptrs = [kc.pointer(v) for v in consts]
    carry = [kc.pointer(r) for r in op.results[:len(inits)]]
    test.prepare(const_ptrs)
    body.prepare(const_ptrs)
    fresh = _carry_buffers(kc, carry_types)
    flag = kc.scratch(1)
    trips = alloca_in_entry(b, I64, "trips")
    _copy_all(kc, carry, [kc.pointer(v) for v in inits], carry_types)
    b.store(index(0), trips)
    header = b.append_basic_block("while.test")
    step = b.append_basic_block("while.body")
    done = b.append_basic_block("while.done")
    b.branch(header)
    b.position_at_end(header)
    kc._return_if_interrupted()
    test.call([*const_ptrs, *carry], [flag])
    go = b.icmp_unsigned("!=", b.load(flag, typ=memory_type(DType.bool)), ir.Constant(memory_type(DType.bool), 0))
    b.cbranch(go, step, done)
    b.position_at_end(step)
    body.call([*const_ptrs, *carry], fresh)
    _copy_all(kc, carry, fresh, carry_types)
    b.store(b.add(b.load(trips, typ=I64), index(1)), trips)
    b.branch(header)
    b.position_at_end(done)
    if op.attrs.get("count_trips"):
        b.store(b.load(trips, typ=I64), kc.pointer(op.results[-1]))


def _emit_fori(kc, op) -> None:
    b = kc.builder
    n, n_passive = op.attrs["num_consts"], op.attrs.get("num_passive", 0)
    consts, inits = op.operands[1:1 + n], op.operands[1 + n:]
    carry_types = [v.type for v in inits]
    body = _Region(kc, region_function(op, 0), range(1, 1 + n))
    const_ptrs = [kc.pointer(v) for v in consts]
    # passive carries are not results: they live in scratch buffers
    carry = [kc.scratch(max(_nbytes(t), 1)) for t in carry_types[:n_passive]] + [kc.pointer(r) for r in op.results]
    fresh = _carry_buffers(kc, carry_types)
    counter = kc.scratch(8)
    body.prepare([counter, *const_ptrs])
    _copy_all(kc, carry, [kc.pointer(v) for v in inits], carry_types)
    trips = _load_scalar(kc, op.operands[0], DType.i64)
    trips = b.select(b.icmp_signed("<", trips, index(0)), index(0), trips)
    with for_range(b, trips, "fori") as i:
        kc._return_if_interrupted()
        b.store(i, counter)
        body.call([counter, *const_ptrs, *carry], fresh)
        _copy_all(kc, carry, fresh, carry_types)


def _emit_scan(kc, op) -> None:
    b = kc.builder
    nc, nx = op.attrs["num_consts"], op.attrs["num_carry"]
    length, reverse = op.attrs["length"], op.attrs["reverse"]
    consts, inits, xs = op.operands[:nc], op.operands[nc:nc + nx], op.operands[nc + nx:]
    carry_types = [v.type for v in inits]
    body = _Region(kc, region_function(op, 0), range(nc))
    const_ptrs = [kc.pointer(v) for v in consts]
    carry = [kc.pointer(r) for r in op.results[:nx]]
    body.prepare(const_ptrs)
    fresh = _carry_buffers(kc, carry_types)
    x_ptrs = [kc.pointer(v) for v in xs]
    x_strides = [_nbytes(v.type) // length if length else 0 for v in xs]
    y_ptrs = [kc.pointer(r) for r in op.results[nx:]]
    y_strides = [_nbytes(r.type) // length if length else 0 for r in op.results[nx:]]
    _copy_all(kc, carry, [kc.pointer(v) for v in inits], carry_types)
    with for_range(b, index(length), "scan") as step:
        kc._return_if_interrupted()
        i = b.sub(index(length - 1), step) if reverse else step
        x_slices = [_offset(b, p, b.mul(i, index(s))) for p, s in zip(x_ptrs, x_strides, strict=True)]
        y_slices = [_offset(b, p, b.mul(i, index(s))) for p, s in zip(y_ptrs, y_strides, strict=True)]
        body.call([*const_ptrs, *carry, *x_slices], [*fresh, *y_slices])
        _copy_all(kc, carry, fresh, carry_types)


__all__ = ["emit_region_op"]
