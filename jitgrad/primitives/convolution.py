"""Convolution and windowed reductions: `conv_general_dilated`, `reduce_window_sum`,
`reduce_window_max`, and the two selection ops that differentiate max pooling,
`select_and_gather_add` and `select_and_scatter_add` (XLA's and JAX's semantics).

conv_general_dilated(lhs, rhs)   N-d convolution (cross-correlation, as in every deep
    learning library) with window strides, explicit (lo, hi) padding per spatial axis
    (negative crops), lhs dilation (zeros between input elements: transposed
    convolution), rhs dilation (atrous), feature groups, and any layout through
    `dimension_numbers = (lhs_spec, rhs_spec, out_spec)`: lhs_spec lists the lhs axes
    (batch, feature, spatial...), rhs_spec (out feature, in feature, spatial...),
    out_spec (batch, feature, spatial...). Bilinear: its JVP is two convolutions, its
    transposes with respect to lhs and rhs are convolutions (JAX's
    `_conv_general_dilated_transpose_lhs/rhs`), so every derivative order is one.
reduce_window_sum(x)              sum over windows; linear, transpose = interior pad +
    reduce_window_sum with stride 1.
reduce_window_max(x)              max over windows (padding counts as -inf). Its JVP
    is select_and_gather_add(t, x): the tangent at the window's selected element.
select_and_gather_add(t, x)       for each window of x, t at the selected element.
    Linear in t; transpose = select_and_scatter_add.
select_and_scatter_add(c, x)      for each window of x, add c's element into the
    selected position. Linear in c; transpose = select_and_gather_add.

The selected element of a window is its FIRST maximum in row-major window order (XLA
selects with `>=`, keeping the earlier element on ties, so all of a tied window's
gradient goes to one element, as in JAX and PyTorch); a NaN counts as larger than any
number, and the first NaN is selected. Padding elements hold -inf with a zero tangent.

Lowering: each is a kernel of its own (`KernelKind`; jitgrad/backends/cpu/convolution.py,
written on the backend-neutral kernel layer): the convolution as im2col and one GEMM per
feature group, the window ops as loops over windows. Each also has an exact
decomposition into existing primitives (`pad`, strided `slice`, `concatenate`,
`dot_general`, `select`), emitted at trace time for the primitives named in `DECOMPOSED`
(none by default; `decomposing()` for a block); `jitgrad.nn` uses them on devices the
kernels have no emitter for (the CPU and CUDA backends, the grid emulator included, have
kernels for all of them).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import sys
import numpy as np

from jitgrad.errors import DTypeError, ShapeError
from jitgrad.ir import DType, TensorType
from .base import Primitive, Zero, defbilinear, defjvp, deflinear, deftranspose, instantiate
from .elementwise import add, gt, logical_and, logical_not, logical_or, ne, select
from .kernel_kind import KernelKind
from .linalg import dot_general
from .structural import concatenate, full, pad, reshape, rev, static_slice, transpose

ALL_NAMES = ("conv_general_dilated", "reduce_window_sum", "reduce_window_max", "select_and_gather_add",
             "select_and_scatter_add")
DECOMPOSED: set[str] = set()
"""Primitives emitted as their exact decomposition into existing primitives (`jitgrad.nn`
also decomposes them on devices their kernels have no emitter for)."""


def _decomposed(prim: Primitive) -> bool:
    """Whether `prim` is emitted as its decomposition (it is listed in `DECOMPOSED`)."""
    return prim.name in DECOMPOSED


def has_kernel(name: str, device: str) -> bool:
    """Whether the primitive `name` of this module has a kernel on `device` (a device
    name as `jit(device=...)` takes it: "gpu" and the grid emulator use the "cuda" kernels)."""
    from jitgrad.backends import backend_for
    return backend_for(device).kernel_device in getattr(sys.modules[__name__], name + "_p").lowering.emitters


@contextlib.contextmanager
def decomposing(names=ALL_NAMES):
    """Within this block the named primitives are emitted as their decompositions."""
    added = set(names) - DECOMPOSED
    DECOMPOSED.update(added)
    try:
        yield
    finally:
        DECOMPOSED.difference_update(added)


class ConvolutionKernel(KernelKind):
    """im2col and a matrix product per image and feature group
    (jitgrad/backends/cpu/convolution.py, written on the backend-neutral kernel layer)."""

    emitters = {"cpu": "jitgrad.backends.cpu.convolution:emit_conv_general_dilated",
                "cuda": "jitgrad.backends.cuda.convolution:emit_conv_general_dilated"}
    uses_blas = True


class WindowKernel(KernelKind):
    """A loop over the windows of one output (jitgrad/backends/cpu/convolution.py)."""

    emitters = {"cpu": "jitgrad.backends.cpu.convolution:emit_reduce_window",
                "cuda": "jitgrad.backends.cuda.convolution:emit_reduce_window"}


class GatherSelectedKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.convolution:emit_select_and_gather_add",
                "cuda": "jitgrad.backends.cuda.convolution:emit_select_and_gather_add"}


class ScatterSelectedKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.convolution:emit_select_and_scatter_add",
                "cuda": "jitgrad.backends.cuda.convolution:emit_select_and_scatter_add"}


@contextlib.contextmanager
def emitting_primitives(names=None):
    """Within this block the named primitives (default: all of this module's) are emitted
    as themselves, not decomposed: for the reference interpreter, which runs their NumPy
    `impl`, and for tests of their rules."""
    chosen = set(DECOMPOSED) if names is None else set(names) & DECOMPOSED
    DECOMPOSED.difference_update(chosen)
    try:
        yield
    finally:
        DECOMPOSED.update(chosen)


# --------------------------------------------------------------------------- shape helpers

def dilate_shape(n: int, dilation: int) -> int:
    """Length of an axis of length n with dilation-1 zeros inserted between elements."""
    return 0 if n == 0 else 1 + dilation * (n - 1)


def window_output_size(n: int, window: int, stride: int, lo: int, hi: int) -> int:
    padded = n + lo + hi
    return 0 if padded < window else (padded - window) // stride + 1


def _check_float(name: str, *types: TensorType) -> None:
    if len({t.dtype for t in types}) > 1:
        raise DTypeError(f"{name}: operand dtypes {', '.join(str(t.dtype) for t in types)} differ")
    if types[0].dtype not in (DType.f32, DType.f64):
        raise DTypeError(f"{name} is defined for float32 and float64 operands, not {types[0].dtype}")


def _check_spec(name: str, spec, ndim: int, what: str) -> None:
    if sorted(spec) != list(range(ndim)):
        raise ShapeError(f"{name}: {what} dimension numbers {tuple(spec)} are not a permutation of "
                         f"the {ndim} axes")


def _spatial_check(name: str, n_spatial: int, **tuples) -> None:
    for key, value in tuples.items():
        if len(value) != n_spatial:
            raise ShapeError(f"{name}: {key} {tuple(value)} needs one entry per spatial axis ({n_spatial})")


# --------------------------------------------------------------------------- conv_general_dilated

def _conv_infer(lhs: TensorType, rhs: TensorType, *, window_strides, padding, lhs_dilation, rhs_dilation,
                dimension_numbers, feature_group_count):
    name = "conv_general_dilated"
    _check_float(name, lhs, rhs)
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    if lhs.ndim != rhs.ndim or lhs.ndim < 2:
        raise ShapeError(f"{name}: lhs {lhs.shape} and rhs {rhs.shape} need the same rank, at least 2")
    for spec, what in ((lhs_spec, "lhs"), (rhs_spec, "rhs"), (out_spec, "output")):
        _check_spec(name, spec, lhs.ndim, what)
    n = lhs.ndim - 2
    _spatial_check(name, n, window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
                   rhs_dilation=rhs_dilation)
    if any(s < 1 for s in (*window_strides, *lhs_dilation, *rhs_dilation)):
        raise ShapeError(f"{name}: strides and dilations must be positive")
    groups = feature_group_count
    in_features, kernel_in, kernel_out = lhs.shape[lhs_spec[1]], rhs.shape[rhs_spec[1]], rhs.shape[rhs_spec[0]]
    if groups < 1 or in_features != kernel_in * groups or kernel_out % groups:
        raise ShapeError(f"{name}: {in_features} input features, a kernel of {kernel_in} input and {kernel_out} "
                         f"output features and {groups} feature group(s) do not fit (need input features = "
                         "kernel input features x groups, output features divisible by groups)")
    spatial = []
    for k in range(n):
        size = dilate_shape(lhs.shape[lhs_spec[2 + k]], lhs_dilation[k])
        window = dilate_shape(rhs.shape[rhs_spec[2 + k]], rhs_dilation[k])
        lo, hi = padding[k]
        if size + lo + hi < 0:
            raise ShapeError(f"{name}: padding {tuple(padding[k])} crops more than spatial axis {k} holds")
        spatial.append(window_output_size(size, window, window_strides[k], lo, hi))
    shape = [0] * lhs.ndim
    shape[out_spec[0]], shape[out_spec[1]] = lhs.shape[lhs_spec[0]], kernel_out
    for k in range(n):
        shape[out_spec[2 + k]] = spatial[k]
    return [TensorType(tuple(shape), lhs.dtype)]


def _np_dilate_pad(x: np.ndarray, dilation, padding, fill=0.0) -> np.ndarray:
    """x (leading axes, then spatial axes) with zeros between elements and (lo, hi) padding
    (negative: cropping) on the trailing len(dilation) axes."""
    lead = x.ndim - len(dilation)
    shape = list(x.shape[:lead]) + [dilate_shape(n, d) for n, d in zip(x.shape[lead:], dilation, strict=True)]
    out = np.full(shape, fill, x.dtype)
    out[(slice(None),) * lead + tuple(slice(None, None, d) for d in dilation)] = x
    widths = [(0, 0)] * lead + [(max(lo, 0), max(hi, 0)) for lo, hi in padding]
    out = np.pad(out, widths, constant_values=fill)
    crops = tuple(slice(max(-lo, 0), n - max(-hi, 0))
                  for (lo, hi), n in zip(padding, out.shape[lead:], strict=True))
    return out[(slice(None),) * lead + crops]


def _conv_impl(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
               feature_group_count):
    """Reference: dilate and pad the input, then for every kernel tap add the product of
    a strided view of the input with that tap's (groups x out x in) matrix."""
    out_type = _conv_infer(TensorType(lhs.shape, DType.from_numpy(lhs.dtype)),
                           TensorType(rhs.shape, DType.from_numpy(rhs.dtype)), window_strides=window_strides,
                           padding=padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                           dimension_numbers=dimension_numbers, feature_group_count=feature_group_count)[0]
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    x = _np_dilate_pad(np.transpose(lhs, lhs_spec), lhs_dilation, padding)
    w = np.transpose(rhs, rhs_spec)
    n_batch, groups = x.shape[0], feature_group_count
    out_spatial = tuple(out_type.shape[a] for a in out_spec[2:])
    x = x.reshape(n_batch, groups, x.shape[1] // groups, *x.shape[2:])
    w = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    acc = np.zeros((n_batch, groups, w.shape[1], *out_spatial), lhs.dtype)
    for tap in itertools.product(*(range(k) for k in w.shape[3:])):
        view = x[(slice(None),) * 3 + tuple(slice(t * d, t * d + (m - 1) * s + 1, s) if m else slice(0, 0)
                                            for t, d, m, s in zip(tap, rhs_dilation, out_spatial, window_strides,
                                                                  strict=True))]
        acc += np.einsum("ngi...,goi->ngo...", view, w[(slice(None),) * 3 + tap])
    acc = acc.reshape(n_batch, groups * w.shape[1], *out_spatial)      # no -1: the batch may be empty
    return np.transpose(acc, np.argsort(out_spec)).astype(lhs.dtype)


conv_general_dilated_p = Primitive(
    "conv_general_dilated", _conv_infer, _conv_impl,
    doc="N-d convolution with strides, padding, lhs/rhs dilation, feature groups and layouts.")
conv_general_dilated_p.lowering = ConvolutionKernel()


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1):
    """Emit a convolution (explicit padding pairs; `nn` resolves "SAME"/"VALID")."""
    n = lhs.type.ndim - 2
    attrs = dict(window_strides=tuple(int(s) for s in window_strides),
                 padding=tuple((int(lo), int(hi)) for lo, hi in padding),
                 lhs_dilation=tuple(int(d) for d in (lhs_dilation or (1,) * n)),
                 rhs_dilation=tuple(int(d) for d in (rhs_dilation or (1,) * n)),
                 dimension_numbers=tuple(tuple(int(a) for a in spec) for spec in
                                         (dimension_numbers or [tuple(range(n + 2))] * 3)),
                 feature_group_count=int(feature_group_count))
    if _decomposed(conv_general_dilated_p):
        _conv_infer(lhs.type, rhs.type, **attrs)
        return _conv_decomposed(lhs, rhs, **attrs)
    return conv_general_dilated_p.bind(lhs, rhs, **attrs)


def _spec_transpose(spec):
    return (spec[1], spec[0], *spec[2:])


def _vjp_lhs_padding(in_shape, window, strides, out_shape, padding, lhs_dilation, rhs_dilation):
    pads = []
    for n, k, s, m, (lo, _), ld, rd in zip(in_shape, window, strides, out_shape, padding, lhs_dilation,
                                           rhs_dilation, strict=True):
        before = dilate_shape(k, rd) - lo - 1
        after = dilate_shape(n, ld) + dilate_shape(k, rd) - 1 - dilate_shape(m, s) - before
        pads.append((before, after))
    return tuple(pads)


def _vjp_rhs_padding(in_shape, window, strides, out_shape, padding, lhs_dilation, rhs_dilation):
    pads = []
    for n, k, s, m, (lo, _), ld, rd in zip(in_shape, window, strides, out_shape, padding, lhs_dilation,
                                           rhs_dilation, strict=True):
        hi = (dilate_shape(m, s) - dilate_shape(n, ld)) + (dilate_shape(k, rd) - lo - 1)
        pads.append((lo, hi))
    return tuple(pads)


def _split_axis(x, axis: int, parts: int):
    """x with axis `axis` split into (parts, size // parts), the parts major."""
    shape = list(x.type.shape)
    shape[axis:axis + 1] = [parts, shape[axis] // parts]
    return reshape(x, tuple(shape))


def _merge_axis_into(x, src: int, dst: int):
    """Axis `src` merged into axis `dst` (numbered without src), src major."""
    perm = [a for a in range(x.type.ndim) if a != src]
    perm.insert(dst, src)
    moved = transpose(x, tuple(perm))
    shape = [x.type.shape[a] for a in range(x.type.ndim) if a != src]
    shape[dst] *= x.type.shape[src]
    return reshape(moved, tuple(shape))


def _conv_transpose_lhs(ct, lhs_type, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
                        dimension_numbers, feature_group_count):
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    if feature_group_count > 1:
        rhs = _merge_axis_into(_split_axis(rhs, rhs_spec[0], feature_group_count), rhs_spec[0], rhs_spec[1])
    window = [rhs.type.shape[a] for a in rhs_spec[2:]]
    pads = _vjp_lhs_padding([lhs_type.shape[a] for a in lhs_spec[2:]], window, window_strides,
                            [ct.type.shape[a] for a in out_spec[2:]], padding, lhs_dilation, rhs_dilation)
    return conv_general_dilated(ct, rev(rhs, tuple(rhs_spec[2:])), window_strides=lhs_dilation, padding=pads,
                                lhs_dilation=window_strides, rhs_dilation=rhs_dilation,
                                dimension_numbers=(out_spec, _spec_transpose(rhs_spec), lhs_spec),
                                feature_group_count=feature_group_count)


def _conv_transpose_rhs(ct, lhs, rhs_type, *, window_strides, padding, lhs_dilation, rhs_dilation,
                        dimension_numbers, feature_group_count):
    """One convolution of the input with the cotangent per feature group (the group's
    input features and output features), concatenated along the kernel's output axis."""
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    window = [rhs_type.shape[a] for a in rhs_spec[2:]]
    pads = _vjp_rhs_padding([lhs.type.shape[a] for a in lhs_spec[2:]], window, window_strides,
                            [ct.type.shape[a] for a in out_spec[2:]], padding, lhs_dilation, rhs_dilation)
    groups = feature_group_count
    parts = []
    for g in range(groups):
        lhs_g, ct_g = lhs, ct
        if groups > 1:
            lhs_g = _axis_part(lhs, lhs_spec[1], g, groups)
            ct_g = _axis_part(ct, out_spec[1], g, groups)
        parts.append(conv_general_dilated(lhs_g, ct_g, window_strides=rhs_dilation, padding=pads,
                                          lhs_dilation=lhs_dilation, rhs_dilation=window_strides,
                                          dimension_numbers=(_spec_transpose(lhs_spec), _spec_transpose(out_spec),
                                                             _spec_transpose(rhs_spec)),
                                          feature_group_count=1))
    return parts[0] if groups == 1 else concatenate(parts, rhs_spec[0])


def _axis_part(x, axis: int, part: int, parts: int):
    size = x.type.shape[axis] // parts
    start = [0] * x.type.ndim
    limit = list(x.type.shape)
    start[axis], limit[axis] = part * size, (part + 1) * size
    return static_slice(x, tuple(start), tuple(limit))


defbilinear(conv_general_dilated_p,
            lambda ct, lhs, rhs, **attrs: _conv_transpose_lhs(ct, lhs.type, rhs, **attrs),
            lambda ct, lhs, rhs, **attrs: _conv_transpose_rhs(ct, lhs, rhs.type, **attrs),
            product=lambda lhs, rhs, **attrs: conv_general_dilated(lhs, rhs, **attrs))


def _conv_decomposed(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                     feature_group_count):
    """im2col: one strided slice of the dilated, padded input per kernel tap, the slices
    concatenated into a (batch, groups, in features x taps, positions) patch matrix, and one
    dot_general with the kernel; then the output layout."""
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    n = lhs.type.ndim - 2
    x = _dilate_pad(transpose(lhs, lhs_spec), lhs_dilation, padding)
    w = transpose(rhs, rhs_spec)                                   # (O, I, taps...)
    n_batch, in_features = x.type.shape[:2]
    out_features, kernel_in, taps = w.type.shape[0], w.type.shape[1], w.type.shape[2:]
    groups = feature_group_count
    out_spatial = [window_output_size(x.type.shape[2 + k], dilate_shape(taps[k], rhs_dilation[k]),
                                      window_strides[k], 0, 0) for k in range(n)]
    positions = math.prod(out_spatial)
    n_taps = math.prod(taps)
    columns = []
    for tap in itertools.product(*(range(t) for t in taps)):
        view = _tap_slice(x, 2, tap, rhs_dilation, out_spatial, window_strides)
        columns.append(reshape(view, (n_batch, groups, kernel_in, 1, positions)))
    patches = columns[0] if n_taps == 1 else concatenate(columns, 3)   # (N, G, I, taps, P)
    kernel = reshape(w, (groups, out_features // groups, kernel_in, n_taps))
    if groups == 1:
        patches = reshape(patches, (n_batch, kernel_in, n_taps, positions))
        kernel = reshape(kernel, (out_features, kernel_in, n_taps))
        out = dot_general(patches, kernel, ((1, 2), (1, 2)))              # (N, P, O)
    else:
        out = dot_general(patches, kernel, ((2, 3), (2, 3)), ((1,), (0,)))  # (G, N, P, O/G)
        out = transpose(out, (1, 2, 0, 3))
    out = reshape(out, (n_batch, *out_spatial, out_features))           # batch, spatial..., feature
    canonical = {out_spec[0]: 0, out_spec[1]: n + 1, **{out_spec[2 + k]: 1 + k for k in range(n)}}
    return transpose(out, tuple(canonical[a] for a in range(n + 2)))


def _tap_slice(x, lead: int, tap, dilation, out_spatial, strides):
    """x[..., t*d : t*d + (m-1)*s + 1 : s] on each spatial axis: one kernel tap's inputs."""
    start = [0] * lead + [t * d for t, d in zip(tap, dilation, strict=True)]
    limit = list(x.type.shape[:lead]) + [t * d + (m - 1) * s + 1 if m else t * d
                                         for t, d, m, s in zip(tap, dilation, out_spatial, strides, strict=True)]
    return static_slice(x, tuple(start), tuple(limit), (1,) * lead + tuple(strides))


def _dilate_pad(x, dilation, padding, fill=None):
    """x with dilation-1 zeros between elements and (lo, hi) padding on its trailing
    spatial axes; negative padding crops. `fill` (a Python float) replaces the inserted
    and padded zeros (reduce_window_max pads with -inf)."""
    lead = x.type.ndim - len(dilation)
    low = (0,) * lead + tuple(max(lo, 0) for lo, _ in padding)
    high = (0,) * lead + tuple(max(hi, 0) for _, hi in padding)
    interior = (0,) * lead + tuple(d - 1 for d in dilation)
    if any(low) or any(high) or any(interior):
        padded = pad(x, low, high, interior)
        if fill is not None and fill != 0:
            inside = pad(full(True, TensorType(x.type.shape, DType.bool)), low, high, interior)
            padded = select(inside, padded, full(fill, padded.type))
        x = padded
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        start = (0,) * lead + tuple(max(-lo, 0) for lo, _ in padding)
        limit = tuple(x.type.shape[:lead]) + tuple(n - max(-hi, 0) for n, (_, hi)
                                                   in zip(x.type.shape[lead:], padding, strict=True))
        x = static_slice(x, start, limit)
    return x


# --------------------------------------------------------------------------- window attributes

def _window_infer(name: str, x: TensorType, window_dimensions, window_strides, padding) -> TensorType:
    _check_float(name, x)
    _spatial_check(name, x.ndim, window_dimensions=window_dimensions, window_strides=window_strides,
                   padding=padding)
    if any(w < 1 for w in window_dimensions) or any(s < 1 for s in window_strides):
        raise ShapeError(f"{name}: window dimensions and strides must be positive")
    for w, (lo, hi) in zip(window_dimensions, padding, strict=True):
        if not (0 <= lo < w and 0 <= hi < w):
            raise ShapeError(f"{name}: padding {(lo, hi)} must be non-negative and smaller than the window ({w})")
    return TensorType(tuple(window_output_size(n, w, s, lo, hi) for n, w, s, (lo, hi)
                            in zip(x.shape, window_dimensions, window_strides, padding, strict=True)), x.dtype)


def _window_attrs(window_dimensions, window_strides, padding):
    return dict(window_dimensions=tuple(int(w) for w in window_dimensions),
                window_strides=tuple(int(s) for s in window_strides),
                padding=tuple((int(lo), int(hi)) for lo, hi in padding))


def _np_pad(x: np.ndarray, padding, fill=0.0) -> np.ndarray:
    """np.pad with (lo, hi) pairs, also for 0-d arrays (which np.pad refuses)."""
    return np.pad(x, padding, constant_values=fill) if x.ndim else x.copy()


def _np_taps(padded: np.ndarray, window_dimensions, window_strides, out_shape):
    """(tap, strided view of `padded` holding that tap of every window), row-major taps."""
    for tap in itertools.product(*(range(w) for w in window_dimensions)):
        yield tap, padded[tuple(slice(t, t + (m - 1) * s + 1, s) if m else slice(0, 0)
                                for t, m, s in zip(tap, out_shape, window_strides, strict=True))]


# --------------------------------------------------------------------------- reduce_window_sum

def _sum_infer(x, *, window_dimensions, window_strides, padding):
    return [_window_infer("reduce_window_sum", x, window_dimensions, window_strides, padding)]


def _sum_impl(x, *, window_dimensions, window_strides, padding):
    out_shape = _sum_infer(TensorType(x.shape, DType.from_numpy(x.dtype)), window_dimensions=window_dimensions,
                           window_strides=window_strides, padding=padding)[0].shape
    acc = np.zeros(out_shape, x.dtype)
    for _, view in _np_taps(_np_pad(x, padding), window_dimensions, window_strides, out_shape):
        acc += view
    return acc


reduce_window_sum_p = Primitive("reduce_window_sum", _sum_infer, _sum_impl,
                                doc="Sum over strided, zero-padded windows (sum/average pooling).")
reduce_window_sum_p.lowering = WindowKernel()


def reduce_window_sum(x, window_dimensions, window_strides, padding):
    attrs = _window_attrs(window_dimensions, window_strides, padding)
    if _decomposed(reduce_window_sum_p):
        out_type = _sum_infer(x.type, **attrs)[0]
        return _sum_decomposed(x, out_type, **attrs)
    return reduce_window_sum_p.bind(x, **attrs)


def _sum_decomposed(x, out_type, *, window_dimensions, window_strides, padding):
    padded = _dilate_pad(x, (1,) * x.type.ndim, padding)
    acc = None
    for tap in itertools.product(*(range(w) for w in window_dimensions)):
        view = _tap_slice(padded, 0, tap, (1,) * x.type.ndim, out_type.shape, window_strides)
        acc = view if acc is None else add(acc, view)
    return acc


def _sum_transpose(ct, x, *, window_dimensions, window_strides, padding):
    pads = _vjp_lhs_padding(x.type.shape, window_dimensions, window_strides, ct.type.shape, padding,
                            (1,) * x.type.ndim, (1,) * x.type.ndim)
    spread = pad(ct, tuple(lo for lo, _ in pads), tuple(hi for _, hi in pads), tuple(s - 1 for s in window_strides))
    return [reduce_window_sum(spread, window_dimensions, (1,) * x.type.ndim, ((0, 0),) * x.type.ndim)]


deflinear(reduce_window_sum_p, _sum_transpose)


# --------------------------------------------------------------------------- reduce_window_max

def _max_infer(x, *, window_dimensions, window_strides, padding):
    return [_window_infer("reduce_window_max", x, window_dimensions, window_strides, padding)]


def _max_impl(x, *, window_dimensions, window_strides, padding):
    out_shape = _max_infer(TensorType(x.shape, DType.from_numpy(x.dtype)), window_dimensions=window_dimensions,
                           window_strides=window_strides, padding=padding)[0].shape
    acc = np.full(out_shape, -np.inf, x.dtype)
    for _, view in _np_taps(_np_pad(x, padding, -np.inf), window_dimensions, window_strides,
                            out_shape):
        acc = np.maximum(acc, view)
    return acc


reduce_window_max_p = Primitive("reduce_window_max", _max_infer, _max_impl,
                                doc="Max over strided, -inf-padded windows (max pooling).")
reduce_window_max_p.lowering = WindowKernel()


def reduce_window_max(x, window_dimensions, window_strides, padding):
    attrs = _window_attrs(window_dimensions, window_strides, padding)
    if _decomposed(reduce_window_max_p):
        # each window's selected element, picked by a chain of selects on comparison
        # masks: the value is the maximum, and the derivative flows to that one element
        # (a chain of `maximum`s would share it among ties)
        out_type = _max_infer(x.type, **attrs)[0]
        return _gather_decomposed(x, _selection_masks(x, out_type, **attrs), out_type, fill=-np.inf, **attrs)
    return reduce_window_max_p.bind(x, **attrs)


def _window_views(x, out_type, fill, *, window_dimensions, window_strides, padding):
    """The strided slice holding each tap of every window, row-major taps."""
    padded = _dilate_pad(x, (1,) * x.type.ndim, padding, fill=fill)
    for tap in itertools.product(*(range(w) for w in window_dimensions)):
        yield _tap_slice(padded, 0, tap, (1,) * x.type.ndim, out_type.shape, window_strides)


def _max_jvp(primals, tangents, **attrs):
    (x,), (t,) = primals, tangents
    if isinstance(t, Zero):
        return Zero(_max_infer(x.type, **attrs)[0])
    return select_and_gather_add(t, x, **attrs)


reduce_window_max_p.jvp = _max_jvp


# --------------------------------------------------------------------------- selection

def _np_selection(x, window_dimensions, window_strides, padding, out_shape):
    """Index (row-major tap number) of each window's selected element: its first
    maximum, a NaN counting as the largest value (the first NaN wins)."""
    padded = _np_pad(x, padding, -np.inf)
    best = np.full(out_shape, -np.inf, x.dtype)
    chosen = np.zeros(out_shape, np.int64)
    for k, (_, view) in enumerate(_np_taps(padded, window_dimensions, window_strides, out_shape)):
        take = (view > best) | (np.isnan(view) & ~np.isnan(best)) if k else np.ones(out_shape, bool)
        best = np.where(take, view, best)
        chosen = np.where(take, k, chosen)
    return chosen


def _gather_infer(t, x, *, window_dimensions, window_strides, padding):
    if t.shape != x.shape:
        raise ShapeError(f"select_and_gather_add: tangent shape {t.shape} differs from operand shape {x.shape}")
    _check_float("select_and_gather_add", t, x)
    return [_window_infer("select_and_gather_add", x, window_dimensions, window_strides, padding)]


def _gather_impl(t, x, *, window_dimensions, window_strides, padding):
    out_shape = _gather_infer(*[TensorType(a.shape, DType.from_numpy(a.dtype)) for a in (t, x)],
                              window_dimensions=window_dimensions, window_strides=window_strides,
                              padding=padding)[0].shape
    chosen = _np_selection(x, window_dimensions, window_strides, padding, out_shape)
    out = np.zeros(out_shape, t.dtype)
    for k, (_, view) in enumerate(_np_taps(_np_pad(t, padding), window_dimensions, window_strides, out_shape)):
        out = np.where(chosen == k, view, out)
    return out


def _scatter_infer(c, x, *, window_dimensions, window_strides, padding):
    _check_float("select_and_scatter_add", c, x)
    out = _window_infer("select_and_scatter_add", x, window_dimensions, window_strides, padding)
    if c.shape != out.shape:
        raise ShapeError(f"select_and_scatter_add: source shape {c.shape} differs from the window count "
                         f"{out.shape} of operand shape {x.shape}")
    return [TensorType(x.shape, x.dtype)]


def _scatter_impl(c, x, *, window_dimensions, window_strides, padding):
    chosen = _np_selection(x, window_dimensions, window_strides, padding, c.shape)
    padded = np.zeros(tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, padding, strict=True)), c.dtype)
    for k, (_, view) in enumerate(_np_taps(padded, window_dimensions, window_strides, c.shape)):
        view += np.where(chosen == k, c, 0)
    return padded[tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, padding, strict=True))].copy()


select_and_gather_add_p = Primitive(
    "select_and_gather_add", _gather_infer, _gather_impl,
    doc="For each window of x, t at the window's first maximum (max pooling's JVP).")
select_and_scatter_add_p = Primitive(
    "select_and_scatter_add", _scatter_infer, _scatter_impl,
    doc="Each window's source element added at the window's first maximum of x (max pooling's VJP).")
select_and_gather_add_p.lowering = GatherSelectedKernel()
select_and_scatter_add_p.lowering = ScatterSelectedKernel()


def select_and_gather_add(t, x, window_dimensions, window_strides, padding):
    attrs = _window_attrs(window_dimensions, window_strides, padding)
    if _decomposed(select_and_gather_add_p):
        out_type = _gather_infer(t.type, x.type, **attrs)[0]
        masks = _selection_masks(x, out_type, **attrs)
        return _gather_decomposed(t, masks, out_type, **attrs)
    return select_and_gather_add_p.bind(t, x, **attrs)


def select_and_scatter_add(c, x, window_dimensions, window_strides, padding):
    attrs = _window_attrs(window_dimensions, window_strides, padding)
    if _decomposed(select_and_scatter_add_p):
        _scatter_infer(c.type, x.type, **attrs)
        masks = _selection_masks(x, c.type, **attrs)
        return _scatter_decomposed(c, x.type, masks, **attrs)
    return select_and_scatter_add_p.bind(c, x, **attrs)


def _selection_masks(x, out_type, **attrs):
    """Per tap, a boolean array over the windows: is this tap the selected element."""
    views = list(_window_views(x, out_type, -np.inf, **attrs))
    best, takes = views[0], []
    for view in views[1:]:
        take = logical_or(gt(view, best), logical_and(ne(view, view), logical_not(ne(best, best))))
        takes.append(take)
        best = select(take, view, best)
    # tap k is selected when it was taken and no later tap was
    masks, later = [], None
    for k in range(len(views) - 1, -1, -1):
        taken = takes[k - 1] if k else None
        if taken is None:
            mask = logical_not(later) if later is not None else None
        else:
            mask = taken if later is None else logical_and(taken, logical_not(later))
            later = taken if later is None else logical_or(later, taken)
        masks.append(mask)
    return masks[::-1]


def _gather_decomposed(t, masks, out_type, fill=None, **attrs):
    out = None
    for mask, view in zip(masks, _window_views(t, out_type, fill, **attrs), strict=True):
        out = view if out is None or mask is None else select(mask, view, out)
    return out


def _scatter_decomposed(c, x_type, masks, *, window_dimensions, window_strides, padding):
    padded_shape = tuple(n + lo + hi for n, (lo, hi) in zip(x_type.shape, padding, strict=True))
    zero = full(0, c.type)
    acc = None
    for mask, tap in zip(masks, itertools.product(*(range(w) for w in window_dimensions)), strict=True):
        part = c if mask is None else select(mask, c, zero)
        high = tuple(n - (t + (m - 1) * s + 1) if m else n - t
                     for n, t, m, s in zip(padded_shape, tap, c.type.shape, window_strides, strict=True))
        interior = tuple(s - 1 if m else 0 for s, m in zip(window_strides, c.type.shape, strict=True))
        placed = pad(part, tap, high, interior) if any(tap) or any(high) or any(interior) else part
        acc = placed if acc is None else add(acc, placed)
    if any(lo or hi for lo, hi in padding):
        acc = static_slice(acc, tuple(lo for lo, _ in padding),
                           tuple(lo + n for n, (lo, _) in zip(x_type.shape, padding, strict=True)))
    return acc


def _gather_transpose(ct, t, x, **attrs):
    return [select_and_scatter_add(instantiate(ct), x, **attrs), None]


def _scatter_transpose(ct, c, x, **attrs):
    return [select_and_gather_add(instantiate(ct), x, **attrs), None]


defjvp(select_and_gather_add_p, lambda t, tangent, x, **attrs: select_and_gather_add(t, x, **attrs), None)
deftranspose(select_and_gather_add_p, _gather_transpose, (0,))
defjvp(select_and_scatter_add_p, lambda t, c, x, **attrs: select_and_scatter_add(t, x, **attrs), None)
deftranspose(select_and_scatter_add_p, _scatter_transpose, (0,))


__all__ = ["conv_general_dilated", "reduce_window_sum", "reduce_window_max", "select_and_gather_add",
           "select_and_scatter_add", "conv_general_dilated_p", "reduce_window_sum_p", "reduce_window_max_p",
           "select_and_gather_add_p", "select_and_scatter_add_p", "DECOMPOSED", "dilate_shape",
           "window_output_size"]
