"""Neural-network operations: convolutions, pooling, normalization, activations, losses.

Every function here takes NumPy arrays and runs eagerly, and takes every other kind of
array jitgrad has, with the same code:
  - tracers (inside `jit`, `grad`, `vmap`...): convolutions and pooling emit the
    primitives of `jitgrad.primitives.convolution`, the rest NumPy calls that trace;
  - `TrackedTensor`s of a `GradientTape` and `DualTensor`s (forward mode): a
    convolution or pooling call is recorded as one call (through the eager layers'
    `_jitgrad_apply`), the rest as the NumPy calls they are;
  - graph nodes (`jitgrad.graph`, which registers them in `DEFERRING_TYPES`): the whole
    function becomes one deferred node, also reachable as `g.conv2d(...)`,
    `g.max_pool2d(...)`, ....

Layouts follow PyTorch by default (NCHW inputs, OIHW kernels); `layout="NHWC"` takes
channels-last inputs with HWIO kernels (TensorFlow/JAX). Derivatives come from the
primitives' rules; nothing here has rules of its own except `erf` (a custom JVP:
2/sqrt(pi) exp(-x^2)).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from jitgrad.api import stop_gradient
from jitgrad.config import target_device
from jitgrad.custom import custom_jvp
from jitgrad.errors import ArgumentError, DTypeError, ShapeError
from jitgrad.tracing.scipy_special import ERF_ERX, ERF_PA, ERF_PP, ERF_QA, ERF_QQ, ERF_RA, ERF_RB, ERF_SA, ERF_SB
from jitgrad.ir import DType, Value
from jitgrad.primitives import convolution as C
from jitgrad.tracing.numpy_api import as_value
from jitgrad.tracing.tracer import Tracer, apply

__all__ = ["conv", "conv1d", "conv2d", "conv3d", "conv_transpose2d", "conv_general_dilated", "max_pool2d",
           "avg_pool2d", "max_pool", "avg_pool", "reduce_window", "batch_norm", "layer_norm", "group_norm", "dropout", "relu",
           "gelu", "silu", "sigmoid", "softmax", "log_softmax", "cross_entropy", "one_hot", "embedding", "erf",
           "resolve_padding"]


# --------------------------------------------------------------------------- dispatch

DEFERRING_TYPES: dict[type, Callable] = {}
"""Array-like classes whose values exist only later (graph nodes), each with
`defer(array, fn, args, kwargs)`: a call of a layer function on one of them becomes one
deferred call of the whole function. `jitgrad.graph` registers its nodes."""


def defer_calls_on(cls: type, defer: Callable) -> None:
    DEFERRING_TYPES[cls] = defer


def _deferring(args):
    """(first argument of a deferring type, in lists and tuples too; its `defer`), or None."""
    for a in args:
        for cls, defer in DEFERRING_TYPES.items():
            if isinstance(a, cls):
                return a, defer
        if type(a) in (list, tuple):
            found = _deferring(a)
            if found is not None:
                return found
    return None


def _layer(fn: Callable) -> Callable:
    """A deferred array among the arguments makes the whole call one deferred call."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        if DEFERRING_TYPES:
            deferred = _deferring((*args, *kwargs.values()))
            if deferred is not None:
                array, defer = deferred
                return defer(array, fn, args, kwargs)
        return fn(*args, **kwargs)
    return call


def _float_dtype(name: str, *arrays) -> np.dtype:
    dtype = np.result_type(*[np.asarray(a).dtype if not hasattr(a, "dtype") else _numpy_dtype(a) for a in arrays])
    if dtype.kind in "biu":
        dtype = np.dtype(np.float64)
    if dtype not in (np.float32, np.float64):
        raise DTypeError(f"{name} is defined for float32 and float64 arrays, not {dtype}")
    return dtype


def _numpy_dtype(a) -> np.dtype:
    dtype = a.dtype
    return dtype.numpy if isinstance(dtype, DType) else np.dtype(dtype)


@dataclass(frozen=True)
class _PrimitiveCall:
    """A call of one of the window/convolution primitives with its static attributes:
    a hashable callable, so the eager layers record (and cache) it as one call."""

    name: str
    attrs: tuple

    _jitgrad_traceable = True

    @property
    def __name__(self) -> str:
        return self.name

    def __call__(self, *operands):
        if any(isinstance(x, Tracer) for x in operands):
            return apply(self._emit, operands)
        for x in operands:
            eager = getattr(type(x), "_jitgrad_apply", None)
            if eager is not None:
                return eager(self, operands)
        dtype = _float_dtype(self.name, *operands)
        arrays = [np.asarray(x, dtype) for x in operands]
        return getattr(C, self.name + "_p").impl(*arrays, **dict(self.attrs))

    def _emit(self, *operands):
        dtype = DType.from_numpy(_float_dtype(self.name, *[_value_dtype(x) for x in operands]))
        values = [as_value(x, dtype) for x in operands]
        if C.has_kernel(self.name, target_device()):
            return getattr(C, self.name)(*values, **dict(self.attrs))
        with C.decomposing():      # a device without these kernels (the device is in every cache key)
            return getattr(C, self.name)(*values, **dict(self.attrs))


def _value_dtype(x):
    if isinstance(x, Value):
        return np.zeros((), x.type.dtype.numpy)
    return np.asarray(x)


def _call(name: str, *operands, **attrs):
    return _PrimitiveCall(name, tuple(sorted(attrs.items())))(*operands)


# --------------------------------------------------------------------------- convolution

def _tuple(value, n: int, what: str) -> tuple:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ArgumentError(f"{what} {value} needs {n} entries (one per spatial axis)")
    return value


def resolve_padding(padding, in_spatial: Sequence[int], window: Sequence[int], strides: Sequence[int],
                    dilation: Sequence[int]) -> tuple:
    """Explicit (lo, hi) pairs from "VALID", "SAME" (output size ceil(n / stride), the
    extra element at the end, as TensorFlow and JAX), an int, one int per axis, or pairs."""
    n = len(in_spatial)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * n
        if mode != "SAME":
            raise ArgumentError(f"padding {padding!r}: use 'SAME', 'VALID', an int, ints or (lo, hi) pairs")
        pads = []
        for size, k, s, d in zip(in_spatial, window, strides, dilation, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, (int, np.integer)):
        return ((int(padding), int(padding)),) * n
    padding = tuple(padding)
    if len(padding) != n:
        raise ArgumentError(f"padding {padding} needs {n} entries (one per spatial axis)")
    return tuple((int(p), int(p)) if isinstance(p, (int, np.integer)) else (int(p[0]), int(p[1])) for p in padding)


def _layouts(layout: str, n: int):
    """(lhs_spec, rhs_spec, out_spec) for channels-first (kernel O, I, spatial) or
    channels-last (kernel spatial, I, O) data."""
    if layout.upper() in ("NCHW", "NCH", "NCDHW", "NC", "CHANNELS_FIRST"):
        spec = (0, 1, *range(2, n + 2))
        return spec, spec, spec
    if layout.upper() in ("NHWC", "NWC", "NDHWC", "CHANNELS_LAST"):
        data = (0, n + 1, *range(1, n + 1))
        return data, (n + 1, n, *range(n)), data
    raise ArgumentError(f"layout {layout!r}: use 'NCHW' (channels first) or 'NHWC' (channels last)")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1):
    """XLA's convolution (JAX's `lax.conv_general_dilated`): `padding` is "SAME", "VALID"
    or (lo, hi) pairs; `dimension_numbers` three axis tuples (lhs: batch, feature,
    spatial...; rhs: out feature, in feature, spatial...; out: batch, feature, spatial...)."""
    deferred = _deferring((lhs, rhs)) if DEFERRING_TYPES else None
    if deferred is not None:
        array, defer = deferred
        return defer(array, conv_general_dilated, (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                                   dimension_numbers, feature_group_count), {})
    ndim = lhs.ndim if hasattr(lhs, "ndim") else np.ndim(lhs)
    n = ndim - 2
    specs = tuple(tuple(int(a) for a in s) for s in (dimension_numbers or [tuple(range(ndim))] * 3))
    lhs_dilation = _tuple(lhs_dilation or 1, n, "lhs_dilation")
    rhs_dilation = _tuple(rhs_dilation or 1, n, "rhs_dilation")
    window_strides = _tuple(window_strides, n, "window_strides")
    if isinstance(padding, str):
        in_spatial = [C.dilate_shape(lhs.shape[a], d) for a, d in zip(specs[0][2:], lhs_dilation, strict=True)]
        padding = resolve_padding(padding, in_spatial, [rhs.shape[a] for a in specs[1][2:]], window_strides,
                                  rhs_dilation)
    return _call("conv_general_dilated", lhs, rhs, window_strides=window_strides,
                 padding=resolve_padding(padding, [0] * n, [1] * n, [1] * n, [1] * n),
                 lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=specs,
                 feature_group_count=int(feature_group_count))


def _add_bias(out, bias, layout: str):
    if bias is None:
        return out
    n = out.ndim
    channels_last = _layouts(layout, n - 2)[2][1] == n - 1
    return out + (bias if channels_last else np.reshape(bias, (-1,) + (1,) * (n - 2)))


@_layer
def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1, layout: str = "NCHW"):
    """N-d convolution (cross-correlation, as PyTorch's conv2d): x (N, C, *spatial) and
    weight (O, C/groups, *kernel) channels first, or x (N, *spatial, C) and weight
    (*kernel, C/groups, O) with layout="NHWC". padding: int, ints, (lo, hi) pairs,
    "SAME" or "VALID"."""
    n = x.ndim - 2
    specs = _layouts(layout, n)
    strides, dilation = _tuple(stride, n, "stride"), _tuple(dilation, n, "dilation")
    pads = resolve_padding(padding, [x.shape[a] for a in specs[0][2:]], [weight.shape[a] for a in specs[1][2:]],
                           strides, dilation)
    out = _call("conv_general_dilated", x, weight, window_strides=strides, padding=pads,
                lhs_dilation=(1,) * n, rhs_dilation=dilation, dimension_numbers=specs,
                feature_group_count=int(groups))
    return _add_bias(out, bias, layout)


def _conv_nd(n: int, name: str):
    def conv_n(x, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1, layout: str = "NCHW"):
        if x.ndim != n + 2:
            raise ShapeError(f"{name} takes a {n + 2}-d input (batch, channels and {n} spatial axes), got "
                             f"{x.ndim} axes")
        return conv(x, weight, bias, stride, padding, dilation, groups, layout)
    conv_n.__name__ = conv_n.__qualname__ = name
    conv_n.__doc__ = f"{n}-d convolution: `conv` on a {n + 2}-d input."
    return _layer(conv_n)


conv1d = _conv_nd(1, "conv1d")
conv2d = _conv_nd(2, "conv2d")
conv3d = _conv_nd(3, "conv3d")


@_layer
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups: int = 1,
                     dilation=1, layout: str = "NCHW"):
    """PyTorch's conv_transpose2d: weight (C_in, C_out/groups, kH, kW) (layout NCHW), the
    gradient of conv2d with respect to its input. It is a convolution of the input with
    stride-1 zeros between its elements, with the kernel flipped and its feature axes
    swapped, padded by dilation*(k-1) - padding (plus output_padding at the end)."""
    if layout.upper() != "NCHW":
        raise ArgumentError("conv_transpose2d takes layout='NCHW' (PyTorch's); transpose the arrays for NHWC")
    strides, dilation = _tuple(stride, 2, "stride"), _tuple(dilation, 2, "dilation")
    pads, extra = _tuple(padding, 2, "padding"), _tuple(output_padding, 2, "output_padding")
    c_in, c_out_g, kh, kw = weight.shape
    if any(e >= max(s, d) for e, s, d in zip(extra, strides, dilation, strict=True)):
        raise ArgumentError(f"output_padding {extra} must be smaller than the stride or the dilation")
    w = np.reshape(weight, (groups, c_in // groups, c_out_g, kh, kw))
    w = np.reshape(np.transpose(w, (0, 2, 1, 3, 4)), (groups * c_out_g, c_in // groups, kh, kw))
    w = np.flip(w, axis=(2, 3))
    conv_pads = tuple((d * (k - 1) - p, d * (k - 1) - p + e)
                      for k, p, d, e in zip((kh, kw), pads, dilation, extra, strict=True))
    spec = (0, 1, 2, 3)
    out = _call("conv_general_dilated", x, w, window_strides=(1, 1), padding=conv_pads, lhs_dilation=strides,
                rhs_dilation=dilation, dimension_numbers=(spec, spec, spec), feature_group_count=int(groups))
    return _add_bias(out, bias, "NCHW")


# --------------------------------------------------------------------------- pooling

def _window(x, kernel_size, stride, padding, layout: str, n: int):
    """Full-rank window dimensions, strides and padding for pooling the spatial axes."""
    kernel = _tuple(kernel_size, n, "kernel_size")
    strides = kernel if stride is None else _tuple(stride, n, "stride")
    first = _layouts(layout, n)[0]
    pads = resolve_padding(padding, [x.shape[a] for a in first[2:]], kernel, strides, (1,) * n)
    dims, steps, full_pads = [1] * x.ndim, [1] * x.ndim, [(0, 0)] * x.ndim
    for k, a in enumerate(first[2:]):
        dims[a], steps[a], full_pads[a] = kernel[k], strides[k], pads[k]
    return tuple(dims), tuple(steps), tuple(full_pads)


@_layer
def reduce_window(x, computation: str, window_dimensions, window_strides=None, padding="VALID"):
    """JAX's `lax.reduce_window` for "max" (padding counts as -inf) and "sum" over every
    axis of x: window_dimensions and window_strides (default 1) have one entry per axis;
    padding is "VALID", "SAME" or (lo, hi) pairs, each smaller than its window."""
    if computation not in ("max", "sum"):
        raise ArgumentError(f"reduce_window computation {computation!r}: use 'max' or 'sum'")
    dims = _tuple(window_dimensions, x.ndim, "window_dimensions")
    strides = _tuple(1 if window_strides is None else window_strides, x.ndim, "window_strides")
    pads = resolve_padding(padding, tuple(x.shape), dims, strides, (1,) * x.ndim)
    return _call(f"reduce_window_{computation}", x, window_dimensions=dims, window_strides=strides, padding=pads)


@_layer
def max_pool(x, kernel_size, stride=None, padding=0, layout: str = "NCHW"):
    """Max over windows of the spatial axes (padding counts as -inf). Its gradient goes to
    the first maximum of each window in row-major order (as JAX and PyTorch)."""
    dims, steps, pads = _window(x, kernel_size, stride, padding, layout, x.ndim - 2)
    return _call("reduce_window_max", x, window_dimensions=dims, window_strides=steps, padding=pads)


@_layer
def avg_pool(x, kernel_size, stride=None, padding=0, count_include_pad: bool = True, layout: str = "NCHW"):
    """Mean over windows of the spatial axes; with count_include_pad=False the padded
    positions are left out of each window's count (PyTorch's option)."""
    dims, steps, pads = _window(x, kernel_size, stride, padding, layout, x.ndim - 2)
    total = _call("reduce_window_sum", x, window_dimensions=dims, window_strides=steps, padding=pads)
    if count_include_pad or not any(lo or hi for lo, hi in pads):
        return total / math.prod(dims)
    ones = np.ones(x.shape, _float_dtype("avg_pool", x))
    counts = C.reduce_window_sum_p.impl(ones, window_dimensions=dims, window_strides=steps, padding=pads)
    return total / counts


@_layer
def max_pool2d(x, kernel_size, stride=None, padding=0, layout: str = "NCHW"):
    """2-d max pooling (PyTorch's max_pool2d; stride defaults to the kernel size)."""
    _check_rank("max_pool2d", x, 4)
    return max_pool(x, kernel_size, stride, padding, layout)


@_layer
def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad: bool = True, layout: str = "NCHW"):
    """2-d average pooling (PyTorch's avg_pool2d)."""
    _check_rank("avg_pool2d", x, 4)
    return avg_pool(x, kernel_size, stride, padding, count_include_pad, layout)


def _check_rank(name: str, x, ndim: int) -> None:
    if x.ndim != ndim:
        raise ShapeError(f"{name} takes a {ndim}-d input, got shape {tuple(x.shape)}")


# --------------------------------------------------------------------------- normalization

def _channel_shape(x, axis: int) -> tuple:
    return tuple(x.shape[a] if a == axis % x.ndim else 1 for a in range(x.ndim))


@_layer
def batch_norm(x, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, axis: int = 1):
    """Batch normalization over every axis but `axis` (the channels).

    training=True normalizes with the batch's mean and (biased) variance and returns
    (y, new_running_mean, new_running_var), the running statistics updated as PyTorch
    does: (1 - momentum) * running + momentum * batch statistic, with the unbiased
    variance. training=False normalizes with the running statistics and returns y."""
    axis = axis % x.ndim
    reduce_axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = _channel_shape(x, axis)
    if training:
        mean = np.mean(x, axis=reduce_axes, keepdims=True)
        centered = x - mean
        var = np.mean(centered * centered, axis=reduce_axes, keepdims=True)
        y = centered / np.sqrt(var + eps)
    else:
        y = (x - np.reshape(running_mean, shape)) / np.sqrt(np.reshape(running_var, shape) + eps)
    if weight is not None:
        y = y * np.reshape(weight, shape)
    if bias is not None:
        y = y + np.reshape(bias, shape)
    if not training:
        return y
    count = math.prod(x.shape[a] for a in reduce_axes)
    batch_mean = stop_gradient(np.reshape(mean, (-1,)))
    batch_var = stop_gradient(np.reshape(var, (-1,))) * (count / max(count - 1, 1))
    new_mean = (1 - momentum) * running_mean + momentum * batch_mean
    new_var = (1 - momentum) * running_var + momentum * batch_var
    return y, new_mean, new_var


@_layer
def layer_norm(x, normalized_shape=None, weight=None, bias=None, eps: float = 1e-5):
    """Normalization over the trailing axes `normalized_shape` (an int or tuple of sizes,
    default: the last axis), then weight * y + bias (arrays of that shape)."""
    if normalized_shape is None:
        normalized_shape = (x.shape[-1],)
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(
        normalized_shape)
    k = len(normalized_shape)
    if tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise ShapeError(f"layer_norm: normalized_shape {normalized_shape} is not the end of shape {tuple(x.shape)}")
    axes = tuple(range(x.ndim - k, x.ndim))
    mean = np.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=axes, keepdims=True)
    y = centered / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


@_layer
def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    """PyTorch's group_norm: x (N, C, *spatial) normalized over each group of C/num_groups
    channels and the spatial axes; weight and bias have shape (C,)."""
    n, c = x.shape[0], x.shape[1]
    if c % num_groups:
        raise ShapeError(f"group_norm: {c} channels do not split into {num_groups} groups")
    grouped = np.reshape(x, (n, num_groups, -1))
    mean = np.mean(grouped, axis=2, keepdims=True)
    centered = grouped - mean
    var = np.mean(centered * centered, axis=2, keepdims=True)
    y = np.reshape(centered / np.sqrt(var + eps), x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * np.reshape(weight, shape)
    if bias is not None:
        y = y + np.reshape(bias, shape)
    return y


@_layer
def dropout(x, rate: float, training: bool = True):
    """Zero each element with probability `rate` and scale the rest by 1/(1 - rate)
    (inverted dropout); the identity when not training. The mask comes from np.random
    (NumPy's global state; inside jit, jitgrad's traced random numbers, fresh each call)."""
    if not 0 <= rate < 1:
        raise ArgumentError(f"dropout rate {rate} must be in [0, 1)")
    if not training or rate == 0:
        return x
    keep = np.random.random(tuple(x.shape)) >= rate
    return np.where(keep, x / (1 - rate), 0)


# --------------------------------------------------------------------------- activations

@_layer
def relu(x):
    """max(x, 0)."""
    return np.maximum(x, 0)


@_layer
def sigmoid(x):
    """1 / (1 + exp(-x)), computed as (tanh(x/2) + 1) / 2 (no overflow)."""
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


@_layer
def silu(x):
    """x * sigmoid(x) (swish)."""
    return x * sigmoid(x)


# fdlibm's s_erf.c rational approximations (errors below 1 ulp in float64)
def _poly(coefficients, z):
    acc = coefficients[-1]
    for c in coefficients[-2::-1]:
        acc = acc * z + c
    return acc


@custom_jvp
def erf(x):
    """The error function, elementwise (fdlibm's piecewise rational approximations, all
    pieces evaluated and selected with np.where); derivative 2/sqrt(pi) exp(-x^2)."""
    a = np.abs(x)
    z = x * x
    small = x + x * (_poly(ERF_PP, z) / _poly(ERF_QQ, z))
    s = a - 1.0
    near_one = ERF_ERX + _poly(ERF_PA, s) / _poly(ERF_QA, s)
    safe = np.maximum(a, 1.25)
    w = 1.0 / (safe * safe)
    ratio = np.where(safe < 1 / 0.35, _poly(ERF_RA, w) / _poly(ERF_SA, w), _poly(ERF_RB, w) / _poly(ERF_SB, w))
    tail = 1.0 - np.exp(-safe * safe - 0.5625 + ratio) / safe
    large = np.where(a < 6.0, tail, 1.0)
    magnitude = np.where(a < 1.25, near_one, large)
    return np.where(a < 0.84375, small, np.where(x < 0, -magnitude, magnitude))


@erf.defjvp
def _erf_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return erf(x), t * ((2 / math.sqrt(math.pi)) * np.exp(-x * x))


@_layer
def gelu(x, approximate: str = "none"):
    """x * Phi(x): approximate="none" (exact, with erf) or "tanh" (PyTorch's and JAX's
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))))."""
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))))
    if approximate != "none":
        raise ArgumentError(f"gelu approximate={approximate!r}: use 'none' or 'tanh'")
    return 0.5 * x * (1.0 + erf(x * (1 / math.sqrt(2))))


@_layer
def log_softmax(x, axis: int = -1):
    """x - logsumexp(x) over `axis`, shifted by the maximum (which carries no gradient)."""
    shifted = x - stop_gradient(np.max(x, axis=axis, keepdims=True))
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@_layer
def softmax(x, axis: int = -1):
    """exp(x) / sum(exp(x)) over `axis`, shifted by the maximum."""
    e = np.exp(x - stop_gradient(np.max(x, axis=axis, keepdims=True)))
    return e / np.sum(e, axis=axis, keepdims=True)


def one_hot(labels, num_classes: int, dtype=np.float64):
    """labels (integers) as one-hot rows of `num_classes` entries."""
    return (np.expand_dims(labels, -1) == np.arange(num_classes)).astype(dtype)


@_layer
def cross_entropy(logits, labels, reduction: str = "mean", axis: int = -1):
    """Softmax cross-entropy of `logits` with integer class `labels` (shape of logits
    without `axis`) or with probabilities / one-hot rows (the shape of logits).
    reduction: "mean" (over the examples), "sum" or "none"."""
    log_probs = log_softmax(logits, axis)
    labels_dtype = np.dtype(_numpy_dtype(labels)) if hasattr(labels, "dtype") else np.asarray(labels).dtype
    if labels_dtype.kind in "iu":
        labels = one_hot(labels, logits.shape[axis], np.dtype(_numpy_dtype(logits)))
        if axis % logits.ndim != logits.ndim - 1:
            labels = np.moveaxis(labels, -1, axis)
    elif tuple(labels.shape) != tuple(logits.shape):
        raise ShapeError(f"cross_entropy: labels of shape {tuple(labels.shape)} are neither integer classes nor "
                         f"probabilities of the logits' shape {tuple(logits.shape)}")
    losses = -np.sum(labels * log_probs, axis=axis)
    if reduction == "mean":
        return np.mean(losses)
    if reduction == "sum":
        return np.sum(losses)
    if reduction == "none":
        return losses
    raise ArgumentError(f"cross_entropy reduction={reduction!r}: use 'mean', 'sum' or 'none'")


@_layer
def embedding(indices, weight):
    """Rows of `weight` (num_embeddings, dim) at integer `indices` (any shape)."""
    return np.take(weight, indices, axis=0)
