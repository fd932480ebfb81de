"""CUDA kernels of the convolution and window ops (jitgrad/primitives/convolution.py).

- conv_general_dilated: a direct convolution, one output element per grid-stride loop
  iteration: the dot product of the kernel's (input feature, tap) entries with the input
  elements under the taps (0 in the padding and between the elements of a dilated
  input; the index is clamped into the input before the load), accumulated in the
  dtype in (feature, row-major tap) order. The CPU multiplies the same matrices through
  BLAS, whose order of the depth's terms differs: results agree to rounding, not bit for
  bit. Any layout (dimension numbers), strides, padding (negative: cropping), lhs/rhs
  dilation and feature groups.
- reduce_window_sum/max and select_and_gather_add: each output element is independent,
  so the CPU's kernel (written on the backend-neutral kernel layer) runs with its loop
  over the outputs made a grid-stride loop: the same code per element, the CPU's results
  bit for bit.
- select_and_scatter_add: overlapping windows add into the same elements, in window
  order; the CPU's kernel runs on one thread (NumPy's order, bit for bit).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

from ..cpu import convolution as cpu_convolution


_strides = cpu_convolution._strides       # row-major element strides


def emit_conv_general_dilated(ec, op) -> None:
    lhs, rhs = op.operands
    result = op.results[0]
    if result.type.size == 0:
        return
    attrs = op.attrs
    lhs_spec, rhs_spec, out_spec = (tuple(s) for s in attrs["dimension_numbers"])
    groups = attrs["feature_group_count"]
    kernel_in, n_out = rhs.type.shape[rhs_spec[1]], rhs.type.shape[rhs_spec[0]]
    per_group = n_out // groups
    taps = [rhs.type.shape[a] for a in rhs_spec[2:]]
    in_sizes = [lhs.type.shape[a] for a in lhs_spec[2:]]
    lhs_strides, rhs_strides = _strides(lhs.type.shape), _strides(rhs.type.shape)
    dtype = result.type.dtype
    ec.begin_launch(True, result.type.size)
    ctx = ec.ctx
    c_ = ctx.index_const
    lhs_buf, rhs_buf, out = ec.pointer(lhs), ec.pointer(rhs), ec.pointer(result)
    zero = ctx.const_of(0, dtype)
    acc = ctx.local_array(dtype, 1, "conv.acc")
    with _grid_nest(ctx, list(result.type.shape), "conv.out") as (flat, multi):
        image, feature = multi[out_spec[0]], multi[out_spec[1]]
        positions = [multi[a] for a in out_spec[2:]]
        group = ctx.index_div(feature, c_(per_group))
        ctx.store(acc, c_(0), zero, dtype)
        if kernel_in and math.prod(taps):
            with ctx.loop_nest([kernel_in, *taps], "conv.depth") as (i, *tap):
                channel = ctx.index_add(ctx.index_mul(group, c_(kernel_in)), i)
                valid, offset = _input_offset(ctx, attrs, lhs_spec, lhs_strides, in_sizes, image, channel,
                                              positions, tap)
                x = ctx.load(lhs_buf, offset, dtype)
                if valid is not None:
                    x = ctx.select(valid, x, zero)
                w_offset = _linear(ctx, [(feature, rhs_strides[rhs_spec[0]]), (i, rhs_strides[rhs_spec[1]])]
                                   + [(t, rhs_strides[a]) for t, a in zip(tap, rhs_spec[2:], strict=True)])
                w = ctx.load(rhs_buf, w_offset, dtype)
                ctx.store(acc, c_(0), ctx.add(ctx.load(acc, c_(0), dtype), ctx.mul(x, w)), dtype)
        ctx.store(out, flat, ctx.load(acc, c_(0), dtype), dtype)


@contextmanager
def _grid_nest(ctx, shape, name: str):
    """A grid-stride loop over the row-major positions of `shape`: yields (flat, multi)."""
    with ctx.grid_loop(math.prod(shape), name) as flat:
        multi, rest = [], flat
        for k in range(len(shape) - 1, 0, -1):
            multi.append(ctx.index_rem(rest, ctx.index_const(shape[k])))
            rest = ctx.index_div(rest, ctx.index_const(shape[k]))
        yield flat, [rest, *multi[::-1]]


def _linear(ctx, terms):
    total = ctx.index_const(0)
    for i, stride in terms:
        if stride:
            total = ctx.index_add(total, ctx.index_mul(i, ctx.index_const(stride)))
    return total


def _input_offset(ctx, attrs, lhs_spec, lhs_strides, in_sizes, image, channel, positions, tap):
    """(valid or None when always inside, offset in the lhs) of the input element under
    `tap` at output `positions`: the dilated, padded coordinate p * stride + t *
    rhs_dilation - pad_lo, inside the input and on an element (not between two of a
    dilated input); the offset is clamped to the image's first element where invalid."""
    c_ = ctx.index_const
    valid = None
    offset = _linear(ctx, [(image, lhs_strides[lhs_spec[0]]), (channel, lhs_strides[lhs_spec[1]])])
    for k, (p, t) in enumerate(zip(positions, tap, strict=True)):
        d = ctx.index_sub(ctx.index_add(ctx.index_mul(p, c_(attrs["window_strides"][k])),
                                        ctx.index_mul(t, c_(attrs["rhs_dilation"][k]))),
                          c_(attrs["padding"][k][0]))
        dilation = attrs["lhs_dilation"][k]
        inside = ctx.index_cmp(">=", d, c_(0))
        d = ctx.select(inside, d, c_(0))
        if dilation > 1:
            inside = ctx.and_(inside, ctx.index_cmp("==", ctx.index_rem(d, c_(dilation)), c_(0)))
            d = ctx.index_div(d, c_(dilation))
        inside = ctx.and_(inside, ctx.index_cmp("<", d, c_(in_sizes[k])))
        d = ctx.select(inside, d, c_(0))
        valid = inside if valid is None else ctx.and_(valid, inside)
        offset = ctx.index_add(offset, ctx.index_mul(d, c_(lhs_strides[lhs_spec[2 + k]])))
    return valid, offset


def _per_output(cpu_emitter):
    """The CPU's kernel whose first loop is over the independent output elements, run
    with that loop made a grid-stride loop."""

    def emit(ec, op) -> None:
        result = op.results[0]
        if result.type.size == 0:
            return
        parallel = all(v.type.size for v in op.operands)
        ec.begin_launch(parallel, result.type.size)
        if not parallel:          # every window in the padding: a fill, on one thread
            cpu_emitter(ec, op)
            return
        ec.ctx.grid_next()
        cpu_emitter(ec, op)
        if ec.ctx.grid_pending():
            raise AssertionError(f"{op.name}: the CPU kernel no longer loops over its outputs first")
    emit.__name__ = cpu_emitter.__name__
    return emit


def emit_select_and_scatter_add(ec, op) -> None:
    if op.results[0].type.size == 0:
        return
    ec.begin_launch(False, 1)
    cpu_convolution.emit_select_and_scatter_add(ec, op)


emit_reduce_window = _per_output(cpu_convolution.emit_reduce_window)
emit_select_and_gather_add = _per_output(cpu_convolution.emit_select_and_gather_add)
