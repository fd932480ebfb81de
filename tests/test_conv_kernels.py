"""The CPU convolution kernel (jitgrad/backends/cpu/convolution.py) against the NumPy
reference, over its strategies: columns unfolded as runs or element by element, the
input used as its own columns (1x1 kernels), products written in place per image, over
the whole batch, or into scratch and copied into the output's layout.

Each case compiles one function returning a convolution and both of its transposes
(the vjp with respect to lhs and rhs, which are convolutions with other dimension
numbers, lhs dilations and paddings), and compares every output with the reference
interpreter running the same IR with the primitives' NumPy implementations."""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad
from jitgrad import nn
from jitgrad.config import config
from jitgrad.interpreter import evaluate
import jitgrad.backends.cpu.convolution as kernel

# (input NCHW, kernel OIHW, strides, padding, lhs dilation, rhs dilation, groups)
CASES = [
    ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1),      # CNN 3x3, pad 1
    ((2, 4, 7, 6), (6, 2, 3, 3), (2, 1), ((1, 2), (0, 1)), (1, 1), (1, 2), 2),      # strides, groups, atrous
    ((2, 2, 5, 5), (3, 2, 2, 3), (1, 2), ((2, 1), (-1, 2)), (2, 1), (1, 1), 1),     # lhs dilation, a crop
    ((1, 6, 6, 4), (6, 1, 3, 2), (3, 1), ((1, 1), (1, 0)), (1, 2), (2, 1), 6),      # depthwise
    ((2, 4, 5, 6), (6, 4, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), 1),      # 1x1: input as columns
    ((2, 4, 5, 3), (4, 2, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), 2),      # 1x1 grouped
    ((2, 3, 4, 4), (2, 3, 5, 5), (1, 1), ((3, 3), (4, 2)), (1, 1), (1, 1), 1),      # padding past the input
    ((1, 2, 3, 9), (2, 2, 2, 2), (2, 3), ((0, 0), (1, 1)), (1, 1), (1, 4), 1),      # stride > kernel run
    ((2, 1, 4, 3), (3, 1, 1, 1), (1, 2), ((0, 0), (1, 0)), (1, 1), (1, 1), 1),      # one-term products
    ((1, 2, 9), (3, 2, 3), (2,), ((1, 1),), (1,), (3,), 1),                         # 1-d
    ((1, 2, 4, 3, 3), (2, 1, 2, 2, 2), (1, 2, 1), ((0, 1), (1, 1), (0, 0)), (1, 1, 1), (1, 1, 2), 2),  # 3-d
    ((2, 2, 32, 32), (3, 2, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1),    # 1024 positions: per image
]

# layouts as (lhs, rhs, out) axis orders of the NCHW/OIHW arrays; the last two put
# the batch and feature axes where a weight gradient's convolution has them
LAYOUTS = {"NCHW": None, "NHWC": "channels_last", "CNHW": "feature_major"}


@pytest.fixture(autouse=True)
def no_disk_cache(monkeypatch):
    """Variants of the kernel are compiled from the same IR: none may reuse another's code."""
    monkeypatch.setattr(config, "cache_dir", None)


def _arrays(case: int, layout: str, dtype):
    shape, kshape, strides, padding, ld, rd, groups = CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(kshape).astype(dtype)
    n = len(shape) - 2
    spatial = tuple(range(2, n + 2))
    if layout == "NCHW":
        specs = ((0, 1, *spatial),) * 3
    elif layout == "NHWC":
        x = np.moveaxis(x, 1, -1)
        w = np.transpose(w, (*spatial, 1, 0))
        specs = ((0, n + 1, *range(1, n + 1)), (n + 1, n, *range(n)), (0, n + 1, *range(1, n + 1)))
    else:                                       # batch and feature swapped in lhs and output
        x = np.swapaxes(x, 0, 1).copy()
        specs = ((1, 0, *spatial), (0, 1, *spatial), (1, 0, *spatial))
    attrs = (strides, padding, ld, rd, specs, groups)
    out = nn.conv_general_dilated(x, w, *attrs)
    ct = np.random.default_rng(100 + case).standard_normal(out.shape).astype(dtype)
    return (x, w, ct), attrs


def _conv_and_transposes(attrs):
    def f(x, w, ct):
        out, pullback = jitgrad.vjp(lambda a, b: nn.conv_general_dilated(a, b, *attrs), x, w)
        return (out, *pullback(ct))
    return f


def _compiled_and_reference(case: int, layout: str, dtype):
    args, attrs = _arrays(case, layout, dtype)
    compiled = jitgrad.jit(_conv_and_transposes(attrs))
    got = compiled(*args)
    function = compiled.lower(*args).function
    reference = evaluate(function, args)
    # every term of a convolution and of its transposes is a product of one lhs and one
    # rhs element, so the same IR on absolute values bounds the sum of |terms|
    scale = evaluate(function, [np.abs(a) for a in args])
    return got, reference, scale


def _assert_close(got, reference, scale, dtype):
    eps = np.finfo(dtype).eps
    for g, r, s in zip(got, reference, scale, strict=True):
        assert g.dtype == dtype and g.shape == r.shape
        # BLAS orders each output's terms its own way: a few ulp of the terms' sum
        assert np.all(np.abs(g - r) <= 64 * eps * s + np.finfo(dtype).tiny), np.abs(g - r).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_convolution_and_its_transposes_match_numpy(case, layout, dtype):
    _assert_close(*_compiled_and_reference(case, layout, dtype), dtype)


@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("case", [0, 1, 4, 5])
def test_per_image_and_whole_batch_products_match_numpy(monkeypatch, case, per_image):
    """Both ways of multiplying for an (N, O, *spatial) output, whatever the size."""
    monkeypatch.setattr(kernel, "PER_IMAGE_MIN_POSITIONS", 0 if per_image else 10 ** 9)
    _assert_close(*_compiled_and_reference(case, "NCHW", np.float64), np.float64)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [0, 1, 3, 6, 7, 9, 10, 11])
def test_unfolding_by_runs_equals_unfolding_by_elements(monkeypatch, case, layout):
    """The run copies build the very columns the per-element unfolding builds (which
    tests every element for the padding): the results are bit-identical."""
    args, attrs = _arrays(case, layout, np.float32)
    by_runs = jitgrad.jit(_conv_and_transposes(attrs))(*args)
    monkeypatch.setattr(kernel, "_unfold_runs", kernel._unfold_elements)
    by_elements = jitgrad.jit(_conv_and_transposes(attrs))(*args)
    for a, b in zip(by_runs, by_elements, strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_finite_values_at_the_border_propagate_as_in_numpy():
    """An infinite kernel element meets the padding's zeros (0 * inf = NaN in both), and
    a NaN input element reaches exactly the outputs whose windows hold it."""
    args, attrs = _arrays(0, "NCHW", np.float64)
    x, w, ct = (a.copy() for a in args)
    x[0, 1, 0, 7] = np.nan
    w[2, 0, 0, 0] = np.inf
    compiled = jitgrad.jit(_conv_and_transposes(attrs))
    got = compiled(x, w, ct)
    reference = evaluate(compiled.lower(x, w, ct).function, [x, w, ct])
    for g, r in zip(got, reference, strict=True):
        assert np.array_equal(np.isnan(g), np.isnan(r)) and np.array_equal(np.isinf(g), np.isinf(r))
        finite = np.isfinite(r)
        np.testing.assert_allclose(g[finite], r[finite], rtol=1e-12, atol=1e-12)


def test_weight_gradient_of_a_cnn_layer_matches_numpy_in_float32():
    """The shapes of a CNN's second layer (a 16x16 "kernel" in the weight gradient, whose
    columns run along the kernel axis), forward and both transposes."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    ct = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
    attrs = ((1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), ((0, 1, 2, 3),) * 3, 1)
    compiled = jitgrad.jit(_conv_and_transposes(attrs))
    got = compiled(x, w, ct)
    function = compiled.lower(x, w, ct).function
    _assert_close(got, evaluate(function, [x, w, ct]), evaluate(function, [np.abs(x), np.abs(w), np.abs(ct)]),
                  np.float32)


# (input shape, window, strides, padding): disjoint windows (stride = window, no
# padding: the scatter writes each tap once), overlapping ones, padding, a window of
# more than UNROLLED_WINDOW_TAPS taps (a loop over the taps), an input that the windows
# do not cover to its end, and an empty input that only padding windows see
WINDOW_CASES = [
    ((2, 3, 8, 8), (1, 1, 2, 2), (1, 1, 2, 2), ((0, 0),) * 4),
    ((2, 3, 7, 9), (1, 1, 2, 3), (1, 1, 2, 3), ((0, 0),) * 4),
    ((2, 2, 7, 7), (1, 1, 3, 3), (1, 1, 2, 2), ((0, 0),) * 4),
    ((1, 2, 6, 5), (1, 1, 3, 2), (1, 1, 2, 1), ((0, 0), (0, 0), (1, 2), (1, 0))),
    ((1, 2, 9, 9), (1, 1, 5, 4), (1, 1, 3, 4), ((0, 0), (0, 0), (2, 1), (0, 3))),
    ((2, 0), (1, 2), (1, 1), ((0, 0), (1, 1))),
]


def _window_functions(window, strides, padding):
    def pools(x, t, c):
        value_max = nn.reduce_window(x, "max", window, strides, padding)
        value_sum = nn.reduce_window(x, "sum", window, strides, padding)
        _, tangent = jitgrad.jvp(lambda u: nn.reduce_window(u, "max", window, strides, padding), (x,), (t,))
        _, pullback = jitgrad.vjp(lambda u: nn.reduce_window(u, "max", window, strides, padding), x)
        return value_max, value_sum, tangent, pullback(c)[0]
    return pools


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(WINDOW_CASES)))
def test_window_kernels_equal_numpy_bit_for_bit(case, dtype):
    """Max pooling, sum pooling, and max pooling's JVP (select_and_gather_add) and VJP
    (select_and_scatter_add), with ties (values drawn from a few integers), a NaN, and
    -0.0 cotangents, equal to the NumPy reference exactly (the VJP of overlapping
    windows within the rounding of its sums)."""
    shape, window, strides, padding = WINDOW_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.integers(-2, 3, shape).astype(dtype)
    if x.size:
        x.flat[x.size // 3] = np.nan
    t = rng.standard_normal(shape).astype(dtype)
    out_shape = nn.reduce_window(x, "max", window, strides, padding).shape
    c = rng.standard_normal(out_shape).astype(dtype)
    if c.size:
        c.flat[0] = -0.0
    compiled = jitgrad.jit(_window_functions(window, strides, padding))
    got = compiled(x, t, c)
    reference = evaluate(compiled.lower(x, t, c).function, [x, t, c])
    overlapping = any(s < w for s, w in zip(strides, window, strict=True))
    for k, (g, r) in enumerate(zip(got, reference, strict=True)):
        assert g.dtype == r.dtype and g.shape == r.shape
        if k == 3 and overlapping:
            # an element selected by several windows sums their cotangents in window
            # order, the reference in tap order: the sums may differ in the last bit
            eps = np.finfo(dtype).eps
            np.testing.assert_allclose(g, r, rtol=8 * eps, atol=8 * eps * np.abs(c).max())
            continue
        np.testing.assert_array_equal(g, r)
        assert np.array_equal(np.signbit(g), np.signbit(r))
