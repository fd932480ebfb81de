"""The convolution kernel (`conv_general_dilated`, jitgrad/primitives/convolution.py):
the input's columns (im2col, or the input itself) times the kernel matrix.

Written against the backend-neutral kernel layer only (`KernelEmitter`: `ctx` loops,
index arithmetic, loads and stores, `scratch`, `contract`, which is BLAS's gemm on the
CPU where it is loaded), so another backend can name the same function for its device.

With the lhs viewed as (N, C, *spatial), the kernel as (O, I, *taps), C = G*I groups
and T taps, P output positions and depth K = I*T:
  1. the kernel matrix W, (O, K) row-major: the rhs itself when its layout is
     (O, I, *taps), else a packed copy;
  2. the columns B, (K, N*P) per group: for a 1x1 kernel at stride 1 without padding
     or dilation, the input itself (no copy: NCHW gives one (I, P) matrix per image,
     NHWC one (N*P, I) matrix); otherwise unfolded into scratch, laid out (K, N*P) or
     (N*P, K), whichever lets the innermost loop run along the longer of the last
     output axis and the last kernel axis (a weight gradient's "kernel" is the whole
     image). The unfolding copies runs: for one value of every other index, the run
     along that innermost axis reads the input at a constant step, and the part of it
     that falls into the padding is known before the run starts, so each run is a zero
     fill, a copy and a zero fill without a test per element (`_unfold_runs`; an input
     with lhs dilation goes through `_unfold_elements`, which tests each element);
  3. the products, written straight into the output where its layout allows: W_g @ B_g
     into an (O, N, *spatial) output (a weight gradient's), one W_g @ B_(g,n) per image
     into an (N, O, *spatial) output (NCHW), B^T @ W^T into an (N, *spatial, O) output
     with one group (NHWC); any other layout gets the (G, O/G, N*P) products in scratch
     and a copy into its layout. Where the products are per image and the columns
     unfolded by runs, each image is unfolded just before its products (`_per_image`),
     which read its columns from cache.
Every product is an ordinary matrix product (C = A @ B, no accumulation into C), so the
result is the one BLAS gives for these matrices; only the order of the depth's terms
inside BLAS differs between layouts, as between any two GEMM calls of other shapes.
"""
from __future__ import annotations

import copy
import itertools
import math

from jitgrad.ir import DType, Value
from jitgrad.backends.kernel import MatrixOperand


PER_IMAGE_MIN_POSITIONS = 1024
"""An (N, O, *spatial) output of at least this many positions per image is computed
by one product per image, written in place; a smaller one by one product over the
whole batch into scratch, then copied into its layout: BLAS splits a product among
its threads by blocks of the output, and a product of a few hundred columns per image
leaves them little to split (see the convolution profile in docs/benchmarks.md)."""




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


def _index_max(ctx, a, b):
    return ctx.select(ctx.index_cmp(">", a, b), a, b)


def _index_min(ctx, a, b):
    return ctx.select(ctx.index_cmp("<", a, b), a, b)


class _Geometry:
    """The sizes of one convolution, read from its operands and attributes."""

    def __init__(self, op):
        lhs, rhs = op.operands
        result = op.results[0]
        attrs = op.attrs
        self.lhs, self.rhs, self.result = lhs, rhs, result
        self.dtype = result.type.dtype
        self.lhs_spec, self.rhs_spec, self.out_spec = (tuple(s) for s in attrs["dimension_numbers"])
        self.groups = attrs["feature_group_count"]
        self.strides, self.padding = attrs["window_strides"], attrs["padding"]
        self.lhs_dilation, self.rhs_dilation = attrs["lhs_dilation"], attrs["rhs_dilation"]
        self.n_batch, self.channels = lhs.type.shape[self.lhs_spec[0]], lhs.type.shape[self.lhs_spec[1]]
        self.n_out, self.kernel_in = rhs.type.shape[self.rhs_spec[0]], rhs.type.shape[self.rhs_spec[1]]
        self.in_sizes = [lhs.type.shape[a] for a in self.lhs_spec[2:]]
        self.taps = [rhs.type.shape[a] for a in self.rhs_spec[2:]]
        self.out_sizes = [result.type.shape[a] for a in self.out_spec[2:]]
        self.n_taps, self.positions = math.prod(self.taps), math.prod(self.out_sizes)
        self.depth = self.kernel_in * self.n_taps
        self.per_group = self.n_out // self.groups
        self.rows = self.n_batch * self.positions
        self.lhs_strides = _strides(lhs.type.shape)
        self.rhs_strides = _strides(rhs.type.shape)
        self.out_strides = _strides(result.type.shape)
        ndim = result.type.ndim
        self.feature_major_out = self.out_spec == (1, 0, *range(2, ndim))
        self.batch_major_out = self.out_spec == (0, 1, *range(2, ndim))
        self.channels_last_out = self.out_spec == (0, ndim - 1, *range(1, ndim - 1))

    @property
    def pointwise(self) -> bool:
        """A 1x1 kernel at stride 1 with no padding and no dilation: every output
        position reads the input at the same position."""
        return (all(t == 1 for t in self.taps) and all(s == 1 for s in self.strides)
                and all(p == (0, 0) for p in self.padding) and all(d == 1 for d in self.lhs_dilation))


class _Columns:
    """The columns matrix B_g (K, N*P) of feature group g: element (k, n*P + p) of image
    n's block is at buffer + g*group_stride + n*image_stride + (p*ld + k if trans else
    k*ld + p). `whole` says whether the blocks of all images form one matrix of that
    layout (image n's block starts n*P columns in)."""

    def __init__(self, buffer, group_stride: int, image_stride: int, trans: bool, ld: int, positions: int):
        self.buffer, self.group_stride, self.image_stride = buffer, group_stride, image_stride
        self.trans, self.ld = trans, ld
        self.whole = image_stride == positions * (ld if trans else 1)


def emit_conv_general_dilated(ec, op) -> None:
    geo = _Geometry(op)
    ctx, dtype = ec.ctx, geo.dtype
    if geo.result.type.size == 0:
        return
    if geo.depth == 0:
        ctx.zero_bytes(ec.pointer(geo.result), geo.result.type.nbytes)
        return
    weights = _kernel_matrix(ec, geo)
    if _unfolds_per_image(geo):
        _per_image(ec, geo, weights)
        return
    columns = _input_columns(ec, geo)
    _products(ec, geo, weights, columns)


def _unfolds_per_image(geo: _Geometry) -> bool:
    """Whether the columns are unfolded one image at a time, each image's products
    following its unfolding while its columns are still in cache (11-16% faster on one
    thread than unfolding the whole batch first, and one image's columns of scratch):
    where the products are per image anyway (an (N, O, *spatial) output of at least
    PER_IMAGE_MIN_POSITIONS positions) and the columns are unfolded by runs."""
    return (geo.batch_major_out and geo.positions >= PER_IMAGE_MIN_POSITIONS and not geo.pointwise
            and geo.n_batch > 1 and all(d == 1 for d in geo.lhs_dilation) and bool(geo.out_sizes))


def _per_image(ec, geo: _Geometry, weights) -> None:
    """Per image n: its columns (G, K, P) into one scratch block, then per group
    W_g @ B_g into the output's (O/G, P) block of image n."""
    ctx, dtype = ec.ctx, geo.dtype
    one = copy.copy(geo)
    one.n_batch, one.rows = 1, geo.positions
    positions_inner = (geo.out_sizes[-1] if geo.out_sizes else 1) >= (geo.taps[-1] if geo.taps else 1)
    columns = ec.scratch(geo.groups * geo.positions * geo.depth * dtype.itemsize)
    lhs_buf, out = ec.pointer(geo.lhs), ec.pointer(geo.result)
    m, k, p = geo.per_group, geo.depth, geo.positions
    with ctx.loop(geo.n_batch, "conv.images") as n:
        image = ec.element_offset(lhs_buf, ctx.index_mul(n, ctx.index_const(geo.lhs_strides[geo.lhs_spec[0]])), dtype)
        _unfold_runs(ec, one, columns, positions_inner, image)
        with ctx.loop(geo.groups, "conv.groups") as g:
            a = MatrixOperand(ec.element_offset(weights, ctx.index_mul(g, ctx.index_const(m * k)), dtype), 0, False, k)
            b = MatrixOperand(ec.element_offset(columns, ctx.index_mul(g, ctx.index_const(k * p)), dtype), 0,
                              not positions_inner, p if positions_inner else k)
            c = ec.element_offset(out, ctx.index_add(ctx.index_mul(n, ctx.index_const(geo.n_out * p)),
                                                     ctx.index_mul(g, ctx.index_const(m * p))), dtype)
            ec.contract(1, a, b, c, m, p, k, dtype)


def _kernel_matrix(ec, geo: _Geometry):
    """W (O, I*T) row-major: the rhs itself in (O, I, *taps) layout, else packed."""
    ctx, dtype, rhs = ec.ctx, geo.dtype, geo.rhs
    if geo.rhs_spec == tuple(range(rhs.type.ndim)):
        return ec.pointer(rhs)
    packed = ec.scratch(geo.n_out * geo.depth * dtype.itemsize)
    rhs_buf, rhs_strides = ec.pointer(rhs), geo.rhs_strides
    with ctx.loop_nest([geo.n_out, geo.kernel_in, *geo.taps], "conv.pack") as (o, i, *tap):
        src = _offset(ctx, [(o, rhs_strides[geo.rhs_spec[0]]), (i, rhs_strides[geo.rhs_spec[1]])]
                      + [(t, rhs_strides[a]) for t, a in zip(tap, geo.rhs_spec[2:], strict=True)])
        dst = _offset(ctx, [(o, geo.depth), (i, geo.n_taps)] + list(zip(tap, _strides(geo.taps), strict=True)))
        ctx.store(packed, dst, ctx.load(rhs_buf, src, dtype), dtype)
    return packed


def _input_columns(ec, geo: _Geometry) -> _Columns:
    """The columns: the input itself for a pointwise convolution of an (N, C, *spatial)
    input into a batch-major output or of an (N, *spatial, C) input, else unfolded."""
    ndim = geo.lhs.type.ndim
    lhs_buf = ec.pointer(geo.lhs)
    if geo.pointwise and geo.lhs_spec == (0, 1, *range(2, ndim)) and geo.batch_major_out:
        return _Columns(lhs_buf, geo.kernel_in * geo.positions, geo.channels * geo.positions, False,
                        geo.positions, geo.positions)
    if geo.pointwise and geo.lhs_spec == (0, ndim - 1, *range(1, ndim - 1)):
        return _Columns(lhs_buf, geo.kernel_in, geo.positions * geo.channels, True, geo.channels, geo.positions)
    # (K, N*P) when the innermost output axis is longer than the innermost kernel axis,
    # else (N*P, K): the innermost loop runs along the longer one
    positions_inner = (geo.out_sizes[-1] if geo.out_sizes else 1) >= (geo.taps[-1] if geo.taps else 1)
    columns = ec.scratch(geo.groups * geo.rows * geo.depth * geo.dtype.itemsize)
    if geo.out_sizes and all(d == 1 for d in geo.lhs_dilation):
        _unfold_runs(ec, geo, columns, positions_inner)
    else:
        _unfold_elements(ec, geo, columns, positions_inner)
    if positions_inner:
        return _Columns(columns, geo.rows * geo.depth, geo.positions, False, geo.rows, geo.positions)
    return _Columns(columns, geo.rows * geo.depth, geo.positions * geo.depth, True, geo.depth, geo.positions)


def _unfold_runs(ec, geo: _Geometry, columns, positions_inner: bool, lhs_buf=None) -> None:
    """The columns (of the images of `geo`, read from `lhs_buf`, by default the lhs
    buffer), one run at a time along the innermost axis (the last output axis q
    when `positions_inner`, else the last kernel axis t). Along it the input coordinate
    of the last spatial axis is base + j * step (base = t * rhs_dilation - pad_lo and
    step = stride, or base = q * stride - pad_lo and step = rhs_dilation); the run's
    elements inside the input are j_lo <= j < j_hi, computed once per run, so the run is
    zeros, a copy at a constant step, zeros. A run whose other spatial coordinates fall
    outside the input is all zeros. No load leaves the input: only j_lo <= j < j_hi
    are read."""
    ctx, dtype = ec.ctx, geo.dtype
    lhs_buf = ec.pointer(geo.lhs) if lhs_buf is None else lhs_buf
    lhs_strides, spec = geo.lhs_strides, geo.lhs_spec
    last = len(geo.out_sizes) - 1
    zero = ctx.const_of(0, dtype)
    length = geo.out_sizes[last] if positions_inner else geo.taps[last]
    step = geo.strides[last] if positions_inner else geo.rhs_dilation[last]
    in_last, lhs_step = geo.in_sizes[last], lhs_strides[spec[2 + last]]

    def run(g, i, n, pos, tap) -> None:
        """pos and tap hold every spatial index but the innermost axis's (None there)."""
        c = ctx.index_add(ctx.index_mul(g, ctx.index_const(geo.kernel_in)), i)
        src = _offset(ctx, [(n, lhs_strides[spec[0]]), (c, lhs_strides[spec[1]])])
        valid = None
        for k in range(last):
            d = ctx.index_sub(ctx.index_add(ctx.index_mul(pos[k], ctx.index_const(geo.strides[k])),
                                            ctx.index_mul(tap[k], ctx.index_const(geo.rhs_dilation[k]))),
                              ctx.index_const(geo.padding[k][0]))
            inside = ctx.and_(ctx.index_cmp(">=", d, ctx.index_const(0)),
                              ctx.index_cmp("<", d, ctx.index_const(geo.in_sizes[k])))
            valid = inside if valid is None else ctx.and_(valid, inside)
            src = ctx.index_add(src, ctx.index_mul(ctx.select(inside, d, ctx.index_const(0)),
                                                   ctx.index_const(lhs_strides[spec[2 + k]])))
        other = tap[last] if positions_inner else pos[last]
        other_step = geo.rhs_dilation[last] if positions_inner else geo.strides[last]
        base = ctx.index_sub(ctx.index_mul(other, ctx.index_const(other_step)), ctx.index_const(geo.padding[last][0]))
        # j_lo = ceil(-base / step), j_hi = ceil((in_last - base) / step), both in [0, length]
        below = _index_max(ctx, ctx.index_sub(ctx.index_const(0), base), ctx.index_const(0))
        above = _index_max(ctx, ctx.index_sub(ctx.index_const(in_last), base), ctx.index_const(0))
        j_lo = ctx.index_div(ctx.index_add(below, ctx.index_const(step - 1)), ctx.index_const(step))
        j_hi = ctx.index_div(ctx.index_add(above, ctx.index_const(step - 1)), ctx.index_const(step))
        j_hi = _index_min(ctx, j_hi, ctx.index_const(length))
        if valid is not None:
            j_hi = ctx.select(valid, j_hi, ctx.index_const(0))
        j_lo = _index_min(ctx, j_lo, j_hi)
        if positions_inner:
            column = _offset(ctx, [(i, geo.n_taps)] + list(zip(tap, _strides(geo.taps), strict=True)))
            start = _offset(ctx, [(g, geo.rows * geo.depth), (column, geo.rows), (n, geo.positions)]
                            + list(zip(pos[:last], _strides(geo.out_sizes)[:last], strict=True)))
        else:
            row = _offset(ctx, [(n, geo.positions)] + list(zip(pos, _strides(geo.out_sizes), strict=True)))
            start = _offset(ctx, [(g, geo.rows * geo.depth), (row, geo.depth), (i, geo.n_taps)]
                            + list(zip(tap[:last], _strides(geo.taps)[:last], strict=True)))
        with ctx.loop(j_lo, "conv.zero_lo") as j:
            ctx.store(columns, ctx.index_add(start, j), zero, dtype)
        # first element read: input coordinate base + j_lo * step (inside the input)
        first = ctx.index_add(src, ctx.index_mul(ctx.index_add(base, ctx.index_mul(j_lo, ctx.index_const(step))),
                                                 ctx.index_const(lhs_step)))
        copied_start = ctx.index_add(start, j_lo)
        with ctx.loop(ctx.index_sub(j_hi, j_lo), "conv.copy") as j:
            x = ctx.load(lhs_buf, ctx.index_add(first, ctx.index_mul(j, ctx.index_const(step * lhs_step))), dtype)
            ctx.store(columns, ctx.index_add(copied_start, j), x, dtype)
        with ctx.loop(ctx.index_sub(ctx.index_const(length), j_hi), "conv.zero_hi") as j:
            ctx.store(columns, ctx.index_add(ctx.index_add(start, j_hi), j), zero, dtype)

    outer_taps, outer_out = geo.taps[:last], geo.out_sizes[:last]
    if positions_inner:
        with ctx.loop_nest([geo.groups, geo.kernel_in, *geo.taps], "conv.unfold") as (g, i, *tap):
            with ctx.loop_nest([geo.n_batch, *outer_out], "conv.rows") as (n, *pos):
                run(g, i, n, [*pos, None], tap)
    else:
        with ctx.loop_nest([geo.n_batch, *geo.out_sizes], "conv.rows") as (n, *pos):
            with ctx.loop_nest([geo.groups, geo.kernel_in, *outer_taps], "conv.unfold") as (g, i, *tap):
                run(g, i, n, pos, [*tap, None])


def _unfold_elements(ec, geo: _Geometry, columns, positions_inner: bool, lhs_buf=None) -> None:
    """The columns one element at a time, each tested for the padding and for the
    zeros between the elements of a dilated input (any lhs dilation, no spatial axis);
    `lhs_buf` as for `_unfold_runs`."""
    ctx, dtype = ec.ctx, geo.dtype
    row_step, depth_step = (1, geo.rows) if positions_inner else (geo.depth, 1)
    lhs_buf = ec.pointer(geo.lhs) if lhs_buf is None else lhs_buf
    zero = ctx.const_of(0, dtype)

    def unfold(n, pos, g, i, tap) -> None:
        c = ctx.index_add(ctx.index_mul(g, ctx.index_const(geo.kernel_in)), i)
        x = _tap_element(ctx, geo, lhs_buf, n, c, pos, tap, zero)
        row = _offset(ctx, [(n, geo.positions)] + list(zip(pos, _strides(geo.out_sizes), strict=True)))
        column = _offset(ctx, [(i, geo.n_taps)] + list(zip(tap, _strides(geo.taps), strict=True)))
        offset = _offset(ctx, [(g, geo.rows * geo.depth), (row, row_step), (column, depth_step)])
        ctx.store(columns, offset, x, dtype)
    if positions_inner:
        with ctx.loop_nest([geo.groups, geo.kernel_in, *geo.taps], "conv.unfold") as (g, i, *tap):
            with ctx.loop_nest([geo.n_batch, *geo.out_sizes], "conv.rows") as (n, *pos):
                unfold(n, pos, g, i, tap)
    else:
        with ctx.loop_nest([geo.n_batch, *geo.out_sizes], "conv.rows") as (n, *pos):
            with ctx.loop_nest([geo.groups, geo.kernel_in, *geo.taps], "conv.unfold") as (g, i, *tap):
                unfold(n, pos, g, i, tap)


def _tap_element(ctx, geo: _Geometry, lhs_buf, n, c, pos, tap, zero):
    """The input element under kernel tap `tap` of output position `pos` of image n,
    feature c; 0 in the padding and between the elements of a dilated input (the index
    is clamped into the input before the load)."""
    lhs_strides, lhs_spec = geo.lhs_strides, geo.lhs_spec
    valid, src = None, _offset(ctx, [(n, lhs_strides[lhs_spec[0]]), (c, lhs_strides[lhs_spec[1]])])
    for k, (p, t) in enumerate(zip(pos, tap, strict=True)):
        # dilated input coordinate under this tap: p * stride + t * rhs_dilation - pad_lo
        d = ctx.index_sub(ctx.index_add(ctx.index_mul(p, ctx.index_const(geo.strides[k])),
                                        ctx.index_mul(t, ctx.index_const(geo.rhs_dilation[k]))),
                          ctx.index_const(geo.padding[k][0]))
        inside = ctx.index_cmp(">=", d, ctx.index_const(0))
        d = ctx.select(inside, d, ctx.index_const(0))
        if geo.lhs_dilation[k] > 1:
            inside = ctx.and_(inside, ctx.index_cmp(
                "==", ctx.index_rem(d, ctx.index_const(geo.lhs_dilation[k])), ctx.index_const(0)))
            d = ctx.index_div(d, ctx.index_const(geo.lhs_dilation[k]))
        inside = ctx.and_(inside, ctx.index_cmp("<", d, ctx.index_const(geo.in_sizes[k])))
        d = ctx.select(inside, d, ctx.index_const(0))
        valid = inside if valid is None else ctx.and_(valid, inside)
        src = ctx.index_add(src, ctx.index_mul(d, ctx.index_const(lhs_strides[lhs_spec[2 + k]])))
    x = ctx.load(lhs_buf, src, geo.dtype)
    return x if valid is None else ctx.select(valid, x, zero)


def _products(ec, geo: _Geometry, weights, cols: _Columns) -> None:
    """The matrix products, into the output where its layout is the products' (module
    docstring, step 3), else into scratch and then copied into its layout."""
    ctx, dtype = ec.ctx, geo.dtype
    out = ec.pointer(geo.result)
    m, k, groups = geo.per_group, geo.depth, geo.groups

    def group_offset(buffer, g, stride):
        return ec.element_offset(buffer, ctx.index_mul(g, ctx.index_const(stride)), dtype)

    def kernel_of(g) -> MatrixOperand:
        return MatrixOperand(group_offset(weights, g, m * k), 0, False, k)

    def columns_of(g, image_stride=None) -> MatrixOperand:
        return MatrixOperand(group_offset(cols.buffer, g, cols.group_stride),
                             cols.image_stride if image_stride is None else image_stride, cols.trans, cols.ld)

    per_image = geo.batch_major_out and (geo.positions >= PER_IMAGE_MIN_POSITIONS or not cols.whole)
    if per_image and groups == 1:              # (N, O, P): W @ B_n per image
        first = ctx.index_const(0)
        ec.contract(geo.n_batch, kernel_of(first), columns_of(first), out, m, geo.positions, k, dtype)
        return
    if per_image:                              # (N, O, P): W_g @ B_(g,n) per image and group
        with ctx.loop(groups, "conv.groups") as g:
            with ctx.loop(geo.n_batch, "conv.images") as n:
                image = ec.element_offset(cols.buffer, ctx.index_mul(n, ctx.index_const(cols.image_stride)), dtype)
                b = MatrixOperand(group_offset(image, g, cols.group_stride), 0, cols.trans, cols.ld)
                c = ec.element_offset(out, ctx.index_add(ctx.index_mul(n, ctx.index_const(geo.n_out * geo.positions)),
                                                         ctx.index_mul(g, ctx.index_const(m * geo.positions))), dtype)
                ec.contract(1, kernel_of(g), b, c, m, geo.positions, k, dtype)
        return
    assert cols.whole, "per-image columns are made for batch-major outputs only"
    if geo.channels_last_out and groups == 1:  # (N*P, O) = B^T @ W^T
        b = MatrixOperand(cols.buffer, 0, not cols.trans, cols.ld)
        ec.contract(1, b, MatrixOperand(weights, 0, True, k), out, geo.rows, m, k, dtype)
        return
    products = out if geo.feature_major_out else ec.scratch(geo.result.type.size * dtype.itemsize)
    with ctx.loop(groups, "conv.groups") as g:    # (O/G, N*P) = W_g @ B_g
        ec.contract(1, kernel_of(g), columns_of(g, 0), group_offset(products, g, m * geo.rows), m, geo.rows, k,
                    dtype)
    if geo.feature_major_out:
        return
    out_strides, out_spec = geo.out_strides, geo.out_spec
    with ctx.loop_nest([geo.n_batch, groups, m, *geo.out_sizes], "conv.layout") as (n, g, o, *pos):
        row = _offset(ctx, [(n, geo.positions)] + list(zip(pos, _strides(geo.out_sizes), strict=True)))
        src = _offset(ctx, [(g, m * geo.rows), (o, geo.rows), (row, 1)])
        feature = ctx.index_add(ctx.index_mul(g, ctx.index_const(m)), o)
        dst = _offset(ctx, [(n, out_strides[out_spec[0]]), (feature, out_strides[out_spec[1]])]
                      + [(p, out_strides[a]) for p, a in zip(pos, out_spec[2:], strict=True)])
        ctx.store(out, dst, ctx.load(products, src, dtype), dtype)


# --------------------------------------------------------------------------- window kernels

UNROLLED_WINDOW_TAPS = 16
"""Windows of at most this many taps are visited by straight-line code (each tap's
offset a constant plus the window's), larger ones by a loop nest over the taps."""


def _window_taps(ec, op, x: Value, pos, body) -> None:
    """For each tap of the window at output position `pos` (row-major taps), calls
    body(valid, offset) with the tap's element offset in `x` (clamped to 0 where the tap
    falls into the padding, `valid` false there)."""
    ctx, attrs = ec.ctx, op.attrs
    window = attrs["window_dimensions"]

    def visit(tap) -> None:
        body(*_tap_offset(ctx, attrs, x, pos, tap))
    if math.prod(window) <= UNROLLED_WINDOW_TAPS:
        for tap in itertools.product(*(range(w) for w in window)):
            visit([ctx.index_const(t) for t in tap])
        return
    with ctx.loop_nest(list(window), "window.taps") as tap:
        visit(tap)


def _tap_offset(ctx, attrs, x: Value, pos, tap):
    """(valid, offset in x) of tap `tap` of the window at `pos`; offset 0 in the padding."""
    strides, padding = attrs["window_strides"], attrs["padding"]
    x_strides = _strides(x.type.shape)
    valid, offset = None, ctx.index_const(0)
    for k, (p, t) in enumerate(zip(pos, tap, strict=True)):
        d = ctx.index_sub(ctx.index_add(ctx.index_mul(p, ctx.index_const(strides[k])), t),
                          ctx.index_const(padding[k][0]))
        if tuple(padding[k]) != (0, 0):
            # without padding every tap is inside: the last window ends by the last element
            inside = ctx.and_(ctx.index_cmp(">=", d, ctx.index_const(0)),
                              ctx.index_cmp("<", d, ctx.index_const(x.type.shape[k])))
            d = ctx.select(inside, d, ctx.index_const(0))
            valid = inside if valid is None else ctx.and_(valid, inside)
        offset = ctx.index_add(offset, ctx.index_mul(d, ctx.index_const(x_strides[k])))
    return ctx.const_of(True, DType.bool) if valid is None else valid, offset


def _selection(ec, op, x: Value, pos):
    """(offset of the window's selected element in x, whether one is inside x): its
    first maximum in row-major tap order, a NaN beating any number (the first NaN wins);
    padding taps are -inf."""
    ctx, dtype = ec.ctx, x.type.dtype
    window = op.attrs["window_dimensions"]
    if math.prod(window) <= UNROLLED_WINDOW_TAPS:
        return _unrolled_selection(ec, op, x, pos)
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


def _unrolled_selection(ec, op, x: Value, pos):
    """`_selection` for a small window: one straight chain of selects over its taps."""
    ctx, dtype, x_buf = ec.ctx, x.type.dtype, ec.pointer(x)
    best = chosen = found = None
    for tap in itertools.product(*(range(w) for w in op.attrs["window_dimensions"])):
        valid, offset = _tap_offset(ctx, op.attrs, x, pos, [ctx.index_const(t) for t in tap])
        value = ctx.select(valid, ctx.load(x_buf, offset, dtype), ctx.const_of(float("-inf"), dtype))
        if best is None:
            best, chosen, found = value, offset, valid
            continue
        take = ctx.or_(ctx.cmp(">", value, best), ctx.and_(ctx.cmp("!=", value, value), ctx.cmp("==", best, best)))
        best, chosen, found = (ctx.select(take, value, best), ctx.select(take, offset, chosen),
                               ctx.select(take, valid, found))
    return chosen, found


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
    if x.type.size == 0:                      # every window lies in the padding: no load
        with ctx.loop(result.type.size, "window.out") as i:
            ctx.store(out_buf, i, fill, dtype)
        return
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
    if x.type.size == 0:                      # every window lies in the padding: no load
        ctx.zero_bytes(out_buf, result.type.nbytes)
        return
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
    attrs = op.attrs
    if all(tuple(p) == (0, 0) and s >= w for p, s, w in
           zip(attrs["padding"], attrs["window_strides"], attrs["window_dimensions"], strict=True)):
        _scatter_disjoint(ec, op, source, x, result)
        return
    with ctx.loop_nest(list(source.type.shape), "window.out") as pos:
        offset, found = _selection(ec, op, x, pos)
        with ctx.if_then(found):
            value = ctx.load(source_buf, _offset(ctx, list(zip(pos, _strides(source.type.shape), strict=True))),
                             dtype)
            ctx.store(out_buf, offset, ctx.add(ctx.load(out_buf, offset, dtype), value), dtype)


def _scatter_disjoint(ec, op, source: Value, x: Value, result: Value) -> None:
    """select_and_scatter_add for windows that neither overlap nor reach into padding
    (pooling with stride = window): each tap of each window is written once, 0 + source
    at the selected tap (as adding into the zeros: 0 + -0.0 is +0.0) and 0 at the
    others, with no load of the output; elements outside every window keep the zeros."""
    ctx, dtype = ec.ctx, result.type.dtype
    source_buf, out_buf, zero = ec.pointer(source), ec.pointer(result), ctx.const_of(0, dtype)
    with ctx.loop_nest(list(source.type.shape), "window.out") as pos:
        chosen, _ = _selection(ec, op, x, pos)
        value = ctx.load(source_buf, _offset(ctx, list(zip(pos, _strides(source.type.shape), strict=True))), dtype)
        placed = ctx.add(zero, value)

        def write(valid, offset) -> None:
            ctx.store(out_buf, offset, ctx.select(ctx.index_cmp("==", offset, chosen), placed, zero), dtype)
        _window_taps(ec, op, x, pos, write)
