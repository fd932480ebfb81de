"""The convolution kernel (`conv_general_dilated`, jitgrad/primitives/convolution.py):
im2col into the matrix-product kernel.

Written against the backend-neutral kernel layer only (`KernelEmitter`: `ctx` loops,
index arithmetic, loads and stores, `scratch`, `matmuls`, which is BLAS's gemm on the CPU
where it is loaded), so another backend can name the same function for its device.

With the lhs viewed as (N, C, *spatial), the kernel as (O, I, *taps), C = G*I groups
and T taps, P output positions:
  1. the kernel is packed into a row-major (O, I*T) matrix (any rhs layout);
  2. the input is unfolded into one matrix per group: for each output position (n, p)
     the input elements under every tap, or 0 where a tap falls into the padding or
     between the elements of a dilated input (each index is clamped before it forms an
     address, so no load leaves the buffer); laid out (G, I*T, N*P) or (G, N*P, I*T),
     whichever lets the innermost loop run along the longer of the last output axis and
     the last kernel axis (a weight gradient's "kernel" is the whole image);
  3. per group, one large matrix product (BLAS is much faster on it than on N small
     ones): (N*P, O/G), which is the output itself when its layout is (N, *spatial, O)
     with one group, or (O/G, N*P) from (I*T, N*P) columns;
  4. otherwise the product is copied into the output's layout (for NCHW from
     (O/G, N*P), consecutive runs of P elements).
"""
from __future__ import annotations

import functools
import math

from jitgrad.ir import DType, Value


def _strides(shape) -> list[int]:
    strides, step = [0] * len(shape), 1
    for axis in range(len(shape) - 1, -1, -1):
        strides[axis] = step
        step *= shape[axis]
    return strides


def _offset(ctx, terms):
    """sum(index * stride) over (index, stride) pairs, as an index."""
    total = ctx.index_const(0)
    for i, stride in terms:
        if stride:
            total = ctx.index_add(total, ctx.index_mul(i, ctx.index_const(stride)))
    return total


def emit_conv_general_dilated(ec, op) -> None:
    lhs, rhs = op.operands
    result: Value = op.results[0]
    attrs = op.attrs
    ctx, dtype = ec.ctx, result.type.dtype
    if result.type.size == 0:
        return
    lhs_spec, rhs_spec, out_spec = attrs["dimension_numbers"]
    groups = attrs["feature_group_count"]
    n_batch, channels = lhs.type.shape[lhs_spec[0]], lhs.type.shape[lhs_spec[1]]
    n_out, kernel_in = rhs.type.shape[rhs_spec[0]], rhs.type.shape[rhs_spec[1]]
    in_sizes = [lhs.type.shape[a] for a in lhs_spec[2:]]
    taps = [rhs.type.shape[a] for a in rhs_spec[2:]]
    out_sizes = [result.type.shape[a] for a in out_spec[2:]]
    n_taps, positions, depth = math.prod(taps), math.prod(out_sizes), kernel_in * math.prod(taps)
    per_group = n_out // groups
    itemsize = dtype.itemsize
    if depth == 0:
        ctx.zero_bytes(ec.pointer(result), result.type.nbytes)
        return

    lhs_strides, rhs_strides, out_strides = (_strides(v.type.shape) for v in (lhs, rhs, result))
    rows = n_batch * positions
    packed = ec.scratch(n_out * depth * itemsize)
    columns = ec.scratch(groups * rows * depth * itemsize)
    channels_last = tuple(out_spec) == (0, result.type.ndim - 1, *range(1, result.type.ndim - 1))
    in_place = channels_last and groups == 1
    products = ec.pointer(result) if in_place else ec.scratch(result.type.size * itemsize)

    # 1. kernel -> (O, I, T) row-major
    rhs_buf = ec.pointer(rhs)
    with ctx.loop_nest([n_out, kernel_in, *taps], "conv.pack") as (o, i, *tap):
        src = _offset(ctx, [(o, rhs_strides[rhs_spec[0]]), (i, rhs_strides[rhs_spec[1]])]
                      + [(t, rhs_strides[a]) for t, a in zip(tap, rhs_spec[2:], strict=True)])
        dst = _offset(ctx, [(o, depth), (i, n_taps)] + list(zip(tap, _strides(taps), strict=True)))
        ctx.store(packed, dst, ctx.load(rhs_buf, src, dtype), dtype)

    # 2. input -> columns, as (G, I*T, N*P) when the innermost output axis is longer
    #    than the innermost kernel axis, else as (G, N*P, I*T): the innermost loop runs
    #    along the longer one (consecutive stores; consecutive loads at stride 1)
    positions_inner = (out_sizes[-1] if out_sizes else 1) >= (taps[-1] if taps else 1)
    row_step, depth_step = (1, rows) if positions_inner else (depth, 1)
    lhs_buf, zero = ec.pointer(lhs), ctx.const_of(0, dtype)

    def unfold(n, pos, g, i, tap) -> None:
        c = ctx.index_add(ctx.index_mul(g, ctx.index_const(kernel_in)), i)
        x = _tap_element(ctx, attrs, lhs_buf, lhs_strides, lhs_spec, in_sizes, n, c, pos, tap, dtype, zero)
        row = _offset(ctx, [(n, positions)] + list(zip(pos, _strides(out_sizes), strict=True)))
        column = _offset(ctx, [(i, n_taps)] + list(zip(tap, _strides(taps), strict=True)))
        offset = _offset(ctx, [(g, rows * depth), (row, row_step), (column, depth_step)])
        ctx.store(columns, offset, x, dtype)
    if positions_inner:
        with ctx.loop_nest([groups, kernel_in, *taps], "conv.unfold") as (g, i, *tap):
            with ctx.loop_nest([n_batch, *out_sizes], "conv.rows") as (n, *pos):
                unfold(n, pos, g, i, tap)
    else:
        with ctx.loop_nest([n_batch, *out_sizes], "conv.rows") as (n, *pos):
            with ctx.loop_nest([groups, kernel_in, *taps], "conv.unfold") as (g, i, *tap):
                unfold(n, pos, g, i, tap)

    # 3. one matrix product per group: the output itself, (N*P, O/G) = cols_g' @ W_g^T,
    #    for a channels-last output with one group; else (O/G, N*P) = W_g @ cols_g when
    #    the columns are (I*T, N*P), or (N*P, O/G) = cols_g @ W_g^T
    feature_major = positions_inner and not in_place
    with ctx.loop(groups, "conv.gemm") as g:
        weights = ec.element_offset(packed, ctx.index_mul(g, ctx.index_const(per_group * depth)), dtype)
        cols = ec.element_offset(columns, ctx.index_mul(g, ctx.index_const(rows * depth)), dtype)
        out = ec.element_offset(products, ctx.index_mul(g, ctx.index_const(rows * per_group)), dtype)
        # one-term products (depth 1) are outer products: the loop kernel
        product = ec.matmul if depth == 1 else functools.partial(ec.matmuls, 1)
        if feature_major:
            product(weights, False, cols, False, out, per_group, rows, depth, dtype)
        else:
            product(cols, positions_inner, weights, True, out, rows, per_group, depth, dtype)

    if in_place:
        return
    # 4. the products -> the output's layout
    out_buf = ec.pointer(result)
    o_step, row_step = (rows, 1) if feature_major else (1, per_group)
    with ctx.loop_nest([n_batch, groups, per_group, *out_sizes], "conv.layout") as (n, g, o, *pos):
        row = _offset(ctx, [(n, positions)] + list(zip(pos, _strides(out_sizes), strict=True)))
        src = _offset(ctx, [(g, per_group * rows), (o, o_step), (row, row_step)])
        feature = ctx.index_add(ctx.index_mul(g, ctx.index_const(per_group)), o)
        dst = _offset(ctx, [(n, out_strides[out_spec[0]]), (feature, out_strides[out_spec[1]])]
                      + [(p, out_strides[a]) for p, a in zip(pos, out_spec[2:], strict=True)])
        ctx.store(out_buf, dst, ctx.load(products, src, dtype), dtype)


def _tap_element(ctx, attrs, lhs_buf, lhs_strides, lhs_spec, in_sizes, n, c, pos, tap, dtype, zero):
    """The input element under kernel tap `tap` of output position `pos` of image n,
    feature c; 0 in the padding and between the elements of a dilated input (the index
    is clamped into the input before the load)."""
    strides, padding = attrs["window_strides"], attrs["padding"]
    lhs_dilation, rhs_dilation = attrs["lhs_dilation"], attrs["rhs_dilation"]
    valid, src = None, _offset(ctx, [(n, lhs_strides[lhs_spec[0]]), (c, lhs_strides[lhs_spec[1]])])
    for k, (p, t) in enumerate(zip(pos, tap, strict=True)):
        # dilated input coordinate under this tap: p * stride + t * rhs_dilation - pad_lo
        d = ctx.index_sub(ctx.index_add(ctx.index_mul(p, ctx.index_const(strides[k])),
                                        ctx.index_mul(t, ctx.index_const(rhs_dilation[k]))),
                          ctx.index_const(padding[k][0]))
        inside = ctx.index_cmp(">=", d, ctx.index_const(0))
        d = ctx.select(inside, d, ctx.index_const(0))
        if lhs_dilation[k] > 1:
            inside = ctx.and_(inside, ctx.index_cmp(
                "==", ctx.index_rem(d, ctx.index_const(lhs_dilation[k])), ctx.index_const(0)))
            d = ctx.index_div(d, ctx.index_const(lhs_dilation[k]))
        inside = ctx.and_(inside, ctx.index_cmp("<", d, ctx.index_const(in_sizes[k])))
        d = ctx.select(inside, d, ctx.index_const(0))
        valid = inside if valid is None else ctx.and_(valid, inside)
        src = ctx.index_add(src, ctx.index_mul(d, ctx.index_const(lhs_strides[lhs_spec[2 + k]])))
    x = ctx.load(lhs_buf, src, dtype)
    return x if valid is None else ctx.select(valid, x, zero)


# --------------------------------------------------------------------------- window kernels

def _window_taps(ec, op, x: Value, pos, body) -> None:
    """For each tap of the window at output position `pos` (row-major taps), calls
    body(valid, offset) with the tap's element offset in `x` (clamped to 0 where the tap
    falls into the padding, `valid` false there)."""
    ctx, attrs = ec.ctx, op.attrs
    window, strides, padding = attrs["window_dimensions"], attrs["window_strides"], attrs["padding"]
    x_strides = _strides(x.type.shape)
    with ctx.loop_nest(list(window), "window.taps") as tap:
        valid, offset = None, ctx.index_const(0)
        for k, (p, t) in enumerate(zip(pos, tap, strict=True)):
            d = ctx.index_sub(ctx.index_add(ctx.index_mul(p, ctx.index_const(strides[k])), t),
                              ctx.index_const(padding[k][0]))
            inside = ctx.and_(ctx.index_cmp(">=", d, ctx.index_const(0)),
                              ctx.index_cmp("<", d, ctx.index_const(x.type.shape[k])))
            d = ctx.select(inside, d, ctx.index_const(0))
            valid = inside if valid is None else ctx.and_(valid, inside)
            offset = ctx.index_add(offset, ctx.index_mul(d, ctx.index_const(x_strides[k])))
        body(ctx.const_of(True, DType.bool) if valid is None else valid, offset)


def _selection(ec, op, x: Value, pos):
    """(offset of the window's selected element in x, whether one is inside x): its
    first maximum in row-major tap order, a NaN beating any number (the first NaN wins);
    padding taps are -inf."""
    ctx, dtype = ec.ctx, x.type.dtype
    best = ctx.local_array(dtype, 1, "window.best")
    chosen = ctx.local_array(DType.i64, 1, "window.chosen")
    found = ctx.local_array(DType.bool, 1, "window.found")
    first = ctx.local_array(DType.bool, 1, "window.first")
    zero = ctx.index_const(0)
    ctx.store(best, zero, ctx.const_of(float("-inf"), dtype), dtype)
    ctx.store(chosen, zero, ctx.index_const(0), DType.i64)
    ctx.store(found, zero, ctx.const_of(False, DType.bool), DType.bool)
    ctx.store(first, zero, ctx.const_of(True, DType.bool), DType.bool)
    x_buf = ec.pointer(x)

    def tap(valid, offset):
        value = ctx.select(valid, ctx.load(x_buf, offset, dtype), ctx.const_of(float("-inf"), dtype))
        current = ctx.load(best, zero, dtype)
        is_first = ctx.load(first, zero, DType.bool)
        take = ctx.or_(is_first, ctx.or_(ctx.cmp(">", value, current),
                                         ctx.and_(ctx.cmp("!=", value, value), ctx.cmp("==", current, current))))
        ctx.store(best, zero, ctx.select(take, value, current), dtype)
        ctx.store(chosen, zero, ctx.select(take, offset, ctx.load(chosen, zero, DType.i64)), DType.i64)
        ctx.store(found, zero, ctx.select(take, valid, ctx.load(found, zero, DType.bool)), DType.bool)
        ctx.store(first, zero, ctx.const_of(False, DType.bool), DType.bool)
    _window_taps(ec, op, x, pos, tap)
    return ctx.load(chosen, zero, DType.i64), ctx.load(found, zero, DType.bool)


def emit_reduce_window(ec, op) -> None:
    """reduce_window_sum (taps added in row-major order, as the NumPy reference) and
    reduce_window_max (NaN-propagating; padding is -inf)."""
    (x,), result = op.operands, op.results[0]
    ctx, dtype = ec.ctx, result.type.dtype
    if result.type.size == 0:
        return
    is_max = op.name == "reduce_window_max"
    acc = ctx.local_array(dtype, 1, "window.acc")
    zero, x_buf, out_buf = ctx.index_const(0), ec.pointer(x), ec.pointer(result)
    fill = ctx.const_of(float("-inf") if is_max else 0.0, dtype)
    with ctx.loop_nest(list(result.type.shape), "window.out") as pos:
        ctx.store(acc, zero, fill, dtype)

        def tap(valid, offset):
            value = ctx.select(valid, ctx.load(x_buf, offset, dtype), fill)
            current = ctx.load(acc, zero, dtype)
            if is_max:
                take = ctx.or_(ctx.cmp(">", value, current), ctx.cmp("!=", value, value))
                ctx.store(acc, zero, ctx.select(take, value, current), dtype)
            else:
                ctx.store(acc, zero, ctx.add(current, value), dtype)
        _window_taps(ec, op, x, pos, tap)
        ctx.store(out_buf, _offset(ctx, list(zip(pos, _strides(result.type.shape), strict=True))),
                  ctx.load(acc, zero, dtype), dtype)


def emit_select_and_gather_add(ec, op) -> None:
    """out[window] = t at the window's selected element of x (0 if it is padding)."""
    t, x = op.operands
    result = op.results[0]
    ctx, dtype = ec.ctx, result.type.dtype
    if result.type.size == 0:
        return
    t_buf, out_buf = ec.pointer(t), ec.pointer(result)
    with ctx.loop_nest(list(result.type.shape), "window.out") as pos:
        offset, found = _selection(ec, op, x, pos)
        value = ctx.select(found, ctx.load(t_buf, offset, dtype), ctx.const_of(0, dtype))
        ctx.store(out_buf, _offset(ctx, list(zip(pos, _strides(result.type.shape), strict=True))), value, dtype)


def emit_select_and_scatter_add(ec, op) -> None:
    """out = 0; out[selected element of each window of x] += source[window]."""
    source, x = op.operands
    result = op.results[0]
    ctx, dtype = ec.ctx, result.type.dtype
    if result.type.size == 0:
        return
    ctx.zero_bytes(ec.pointer(result), result.type.nbytes)
    if source.type.size == 0:
        return
    source_buf, out_buf = ec.pointer(source), ec.pointer(result)
    with ctx.loop_nest(list(source.type.shape), "window.out") as pos:
        offset, found = _selection(ec, op, x, pos)
        with ctx.if_then(found):
            value = ctx.load(source_buf, _offset(ctx, list(zip(pos, _strides(source.type.shape), strict=True))),
                             dtype)
            ctx.store(out_buf, offset, ctx.add(ctx.load(out_buf, offset, dtype), value), dtype)
