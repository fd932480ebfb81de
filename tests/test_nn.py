"""jitgrad.nn and the convolution/window primitives.

Values against explicit-loop references written from the definitions (below), over a
grid of strides, paddings, dilations, groups and layouts in float32 and float64, eager
and compiled; derivatives by JVP/VJP checks to second order with the primitives' own
rules and with their decompositions; the same results from the four APIs (arrays and
jit/grad, the GradientTape, DualTensor forward mode, Graph methods); the layer
functions against their formulas."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import jitgrad
from jitgrad.backends.cpu.backend import CPUBackend
from jitgrad import nn
from jitgrad.errors import ArgumentError, DTypeError, ShapeError
from jitgrad.ir import DType, TensorType
from jitgrad.primitives import convolution as C
from helpers import build, check_grads
from jitgrad.passes.jvp import jvp_function
from jitgrad.passes.reverse import vjp_function

# --------------------------------------------------------------------------- explicit-loop references


def conv_loops(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, groups):
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    x = np.transpose(lhs, lhs_spec)              # N, C, spatial
    w = np.transpose(rhs, rhs_spec)              # O, I, taps
    n_spatial = x.ndim - 2
    in_sizes, taps = x.shape[2:], w.shape[2:]
    out_sizes = []
    for k in range(n_spatial):
        dilated = (in_sizes[k] - 1) * lhs_dilation[k] + 1 if in_sizes[k] else 0
        padded = dilated + padding[k][0] + padding[k][1]
        window = (taps[k] - 1) * rhs_dilation[k] + 1
        out_sizes.append(max(0, (padded - window) // strides[k] + 1) if padded >= window else 0)
    n_out, kernel_in = w.shape[0], w.shape[1]
    per_group = n_out // groups
    out = np.zeros((x.shape[0], n_out, *out_sizes), np.float64)
    for b, o, *pos in itertools.product(range(x.shape[0]), range(n_out), *(range(m) for m in out_sizes)):
        g = o // per_group
        total = 0.0
        for i, *tap in itertools.product(range(kernel_in), *(range(t) for t in taps)):
            index = []
            for k in range(n_spatial):
                dilated_pos = pos[k] * strides[k] + tap[k] * rhs_dilation[k] - padding[k][0]
                if dilated_pos < 0 or dilated_pos % lhs_dilation[k]:
                    break
                src = dilated_pos // lhs_dilation[k]
                if src >= in_sizes[k]:
                    break
                index.append(src)
            else:
                total += float(x[(b, g * kernel_in + i, *index)]) * float(w[(o, i, *tap)])
        out[(b, o, *pos)] = total
    return np.transpose(out, np.argsort(out_spec)).astype(lhs.dtype)


def _windows(shape, window, strides, padding):
    """(output index, list of input indices or None for padding) per window, row-major taps."""
    out_sizes = [max(0, (n + lo + hi - w) // s + 1) if n + lo + hi >= w else 0
                 for n, w, s, (lo, hi) in zip(shape, window, strides, padding)]
    for pos in itertools.product(*(range(m) for m in out_sizes)):
        members = []
        for tap in itertools.product(*(range(w) for w in window)):
            src = tuple(p * s + t - lo for p, s, t, (lo, _) in zip(pos, strides, tap, padding))
            inside = all(0 <= i < n for i, n in zip(src, shape))
            members.append(src if inside else None)
        yield pos, members, out_sizes


def reduce_window_loops(x, kind, window, strides, padding):
    results = {}
    sizes = None
    for pos, members, sizes in _windows(x.shape, window, strides, padding):
        values = [x[m] if m is not None else (-np.inf if kind == "max" else 0.0) for m in members]
        results[pos] = max(values, key=lambda v: (np.isnan(v), v)) if kind == "max" and np.isnan(values).any() \
            else (max(values) if kind == "max" else sum(values))
    out = np.zeros(sizes if sizes is not None else [0] * x.ndim, x.dtype)
    for pos, v in results.items():
        out[pos] = v
    return out


def _selected(x, members):
    """The window member selected: the first maximum (a NaN beats any number, first NaN)."""
    best, chosen = None, None
    for m in members:
        v = x[m] if m is not None else -np.inf
        if best is None or v > best or (np.isnan(v) and not np.isnan(best)):
            best, chosen = v, m
    return chosen


def select_and_scatter_loops(source, x, window, strides, padding):
    out = np.zeros(x.shape, source.dtype)
    for pos, members, _ in _windows(x.shape, window, strides, padding):
        chosen = _selected(x, members)
        if chosen is not None:
            out[chosen] += source[pos]
    return out


def select_and_gather_loops(t, x, window, strides, padding):
    results, sizes = {}, None
    for pos, members, sizes in _windows(x.shape, window, strides, padding):
        chosen = _selected(x, members)
        results[pos] = t[chosen] if chosen is not None else 0.0
    out = np.zeros(sizes if sizes is not None else [0] * x.ndim, t.dtype)
    for pos, v in results.items():
        out[pos] = v
    return out


# --------------------------------------------------------------------------- convolution values

def _layout_arrays(x_nchw, w_oihw, layout):
    """The same convolution's arrays in `layout` and its dimension numbers."""
    n = x_nchw.ndim - 2
    specs = nn._layouts(layout, n)
    if layout == "NCHW":
        return x_nchw, w_oihw, specs
    x = np.moveaxis(x_nchw, 1, -1)
    w = np.transpose(w_oihw, (*range(2, n + 2), 1, 0))
    return x, w, specs


# (input NCHW, kernel OIHW, strides, padding, lhs dilation, rhs dilation, groups)
CONV_CASES = [
    ((2, 3, 6, 5), (4, 3, 3, 2), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), 1),
    ((1, 4, 7, 6), (6, 2, 3, 3), (2, 1), ((1, 2), (0, 1)), (1, 1), (1, 2), 2),
    ((2, 2, 5, 5), (3, 2, 2, 3), (1, 2), ((2, 1), (-1, 2)), (2, 1), (1, 1), 1),
    ((1, 6, 6, 4), (6, 1, 3, 2), (3, 1), ((1, 1), (1, 0)), (1, 2), (2, 1), 6),
    ((1, 2, 9), (3, 2, 3), (2,), ((1, 1),), (1,), (3,), 1),
    ((1, 2, 4, 3, 3), (2, 1, 2, 2, 2), (1, 2, 1), ((0, 1), (1, 1), (0, 0)), (1, 1, 1), (1, 1, 2), 2),
    ((2, 1, 4, 3), (3, 1, 1, 1), (1, 2), ((0, 0), (1, 0)), (1, 1), (1, 1), 1),       # one-term products
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_matches_loop_reference_eager_and_compiled(case, layout, dtype):
    shape, kshape, strides, padding, ld, rd, groups = CONV_CASES[case]
    rng = np.random.default_rng(case)
    x, w, specs = _layout_arrays(rng.standard_normal(shape).astype(dtype),
                                 rng.standard_normal(kshape).astype(dtype), layout)
    expected = conv_loops(x, w, strides, padding, ld, rd, specs, groups)
    args = (strides, padding, ld, rd, specs, groups)
    eager = nn.conv_general_dilated(x, w, *args)
    compiled = jitgrad.jit(lambda a, b: nn.conv_general_dilated(a, b, *args))(x, w)
    with C.decomposing():
        decomposed = jitgrad.jit(lambda a, b: nn.conv_general_dilated(a, b, *args) * 1.0)(x, w)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for got in (eager, compiled, decomposed):
        assert got.dtype == dtype and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, **tol)


@pytest.mark.parametrize("size,kernel,stride,dilation", [(7, 3, 1, 1), (7, 3, 2, 1), (8, 2, 3, 1), (9, 3, 2, 2),
                                                          (5, 4, 4, 1)])
def test_same_padding_gives_ceil_size_and_matches_explicit_pairs(size, kernel, stride, dilation):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, size, size)), rng.standard_normal((3, 2, kernel, kernel))
    same = nn.conv2d(x, w, stride=stride, padding="SAME", dilation=dilation)
    assert same.shape[2:] == (-(-size // stride),) * 2
    pads = nn.resolve_padding("SAME", (size, size), (kernel, kernel), (stride, stride), (dilation, dilation))
    np.testing.assert_allclose(same, nn.conv2d(x, w, stride=stride, padding=pads, dilation=dilation), rtol=1e-13)
    valid = nn.conv2d(x, w, stride=stride, padding="VALID", dilation=dilation)
    np.testing.assert_allclose(valid, conv_loops(x, w, (stride,) * 2, ((0, 0),) * 2, (1, 1), (dilation,) * 2,
                                                 ((0, 1, 2, 3),) * 3, 1), rtol=1e-12, atol=1e-12)


def test_conv1d_conv3d_and_bias():
    rng = np.random.default_rng(1)
    x1, w1, b1 = rng.standard_normal((2, 3, 8)), rng.standard_normal((4, 3, 3)), rng.standard_normal(4)
    expected = conv_loops(x1, w1, (2,), ((1, 1),), (1,), (1,), ((0, 1, 2),) * 3, 1) + b1[:, None]
    np.testing.assert_allclose(nn.conv1d(x1, w1, b1, stride=2, padding=1), expected, rtol=1e-12)
    x3, w3 = rng.standard_normal((1, 2, 3, 4, 3)), rng.standard_normal((2, 2, 2, 2, 2))
    np.testing.assert_allclose(nn.conv3d(x3, w3, padding="SAME"),
                               conv_loops(x3, w3, (1, 1, 1), ((0, 1),) * 3, (1, 1, 1), (1, 1, 1),
                                          ((0, 1, 2, 3, 4),) * 3, 1), rtol=1e-12)
    with pytest.raises(ShapeError, match="conv2d takes a 4-d input"):
        nn.conv2d(x1, w1)


@pytest.mark.parametrize("stride,padding,output_padding,groups,dilation",
                         [(1, 0, 0, 1, 1), (2, 1, 1, 1, 1), (3, 2, 0, 2, 1), (2, 0, 1, 2, 2)])
def test_conv_transpose2d_is_the_input_gradient_of_conv2d(stride, padding, output_padding, groups, dilation):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 6 // groups, 3, 3))           # conv2d: 6 -> 4 channels
    x = rng.standard_normal((2, 6, 9 + output_padding, 8 + output_padding))
    y_shape = nn.conv2d(x, w, stride=stride, padding=padding, groups=groups, dilation=dilation).shape
    # the input positions past the last window: what output_padding restores
    output_padding = tuple((n + 2 * padding - dilation * 2 - 1) % stride for n in x.shape[2:])
    ct = rng.standard_normal(y_shape)
    _, vjp = jitgrad.vjp(lambda a: nn.conv2d(a, w, stride=stride, padding=padding, groups=groups,
                                             dilation=dilation), x)
    (expected,) = vjp(ct)
    got = nn.conv_transpose2d(ct, w, stride=stride, padding=padding, output_padding=output_padding,
                              groups=groups, dilation=dilation)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)


# --------------------------------------------------------------------------- pooling values

WINDOW_CASES = [((1, 1, 2, 2), (1, 1, 2, 2), ((0, 0),) * 4),
                ((1, 1, 3, 3), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 1))),
                ((1, 2, 2, 3), (1, 1, 1, 2), ((0, 0), (0, 1), (1, 0), (0, 2)))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(WINDOW_CASES)))
def test_window_ops_match_loop_references_with_ties(case, dtype):
    window, strides, padding = WINDOW_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.integers(-2, 3, (2, 3, 7, 6)).astype(dtype)          # many ties
    x[0, 0, 0, 0] = np.nan
    attrs = dict(window_dimensions=window, window_strides=strides, padding=padding)
    out_max = nn._call("reduce_window_max", x, **attrs)
    out_sum = nn._call("reduce_window_sum", x, **attrs)
    np.testing.assert_array_equal(out_max, reduce_window_loops(x, "max", window, strides, padding))
    np.testing.assert_allclose(out_sum, reduce_window_loops(x, "sum", window, strides, padding), rtol=1e-6)
    c = rng.standard_normal(out_max.shape).astype(dtype)
    t = rng.standard_normal(x.shape).astype(dtype)
    scattered = nn._call("select_and_scatter_add", c, x, **attrs)
    gathered = nn._call("select_and_gather_add", t, x, **attrs)
    np.testing.assert_allclose(scattered, select_and_scatter_loops(c, x, window, strides, padding), rtol=1e-6)
    np.testing.assert_array_equal(gathered, select_and_gather_loops(t, x, window, strides, padding))
    compiled = jitgrad.jit(lambda a, b, u: [nn._call("reduce_window_max", a, **attrs),
                                            nn._call("reduce_window_sum", a, **attrs),
                                            nn._call("select_and_scatter_add", b, a, **attrs),
                                            nn._call("select_and_gather_add", u, a, **attrs)])(x, c, t)
    np.testing.assert_array_equal(compiled[0], out_max)
    np.testing.assert_allclose(compiled[1], out_sum, rtol=1e-6)
    np.testing.assert_allclose(compiled[2], scattered, rtol=1e-6)
    np.testing.assert_array_equal(compiled[3], gathered)
    with C.decomposing():
        decomposed = jitgrad.jit(lambda a, b, u: [nn._call("reduce_window_max", a * 1, **attrs),
                                                  nn._call("reduce_window_sum", a * 1, **attrs),
                                                  nn._call("select_and_scatter_add", b, a * 1, **attrs),
                                                  nn._call("select_and_gather_add", u, a * 1, **attrs)])(x, c, t)
    for got, expected in zip(decomposed, compiled, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_max_pool_gradient_goes_to_the_first_maximum_in_every_api():
    x = np.array([[[[1.0, 1.0, 0.0, 2.0], [1.0, 0.0, 2.0, 2.0], [3.0, 3.0, 5.0, 4.0], [3.0, 3.0, 5.0, 5.0]]]])
    expected = select_and_scatter_loops(np.ones((1, 1, 2, 2)), x, (1, 1, 2, 2), (1, 1, 2, 2), ((0, 0),) * 4)
    assert expected[0, 0].tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]

    def loss(a):
        return np.sum(nn.max_pool2d(a, 2))
    np.testing.assert_array_equal(jitgrad.grad(loss)(x), expected)
    with jitgrad.GradientTape() as tape:
        xt = tape.variable(x)
        value = loss(xt)
    np.testing.assert_array_equal(tape.gradient(value, xt), expected)
    direction = np.arange(16.0).reshape(x.shape)
    assert loss(jitgrad.DualTensor(x, direction)).tangent == np.sum(expected * direction)


def test_avg_pool_counts():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 5))
    sums = reduce_window_loops(x, "sum", (1, 1, 3, 3), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 1)))
    np.testing.assert_allclose(nn.avg_pool2d(x, 3, 2, 1), sums / 9, rtol=1e-13)
    counts = reduce_window_loops(np.ones_like(x), "sum", (1, 1, 3, 3), (1, 1, 2, 2),
                                 ((0, 0), (0, 0), (1, 1), (1, 1)))
    np.testing.assert_allclose(nn.avg_pool2d(x, 3, 2, 1, count_include_pad=False), sums / counts, rtol=1e-13)
    np.testing.assert_allclose(nn.avg_pool2d(np.moveaxis(x, 1, -1), 3, 2, 1, layout="NHWC"),
                               np.moveaxis(sums / 9, 1, -1), rtol=1e-13)


# --------------------------------------------------------------------------- rules to second order

def _f64(*shape):
    return TensorType(shape, DType.f64)


RULE_CASES = {
    "conv-groups-strided": ([_f64(2, 4, 5, 4), _f64(4, 2, 3, 2)], lambda a, b: C.conv_general_dilated_p.bind(
        a, b, window_strides=(2, 1), padding=((1, 0), (0, 1)), lhs_dilation=(1, 1), rhs_dilation=(1, 2),
        dimension_numbers=((0, 1, 2, 3),) * 3, feature_group_count=2)),
    "conv-nhwc-lhs-dilated-cropped": ([_f64(1, 4, 3, 2), _f64(2, 2, 2, 3)], lambda a, b: C.conv_general_dilated_p.bind(
        a, b, window_strides=(1, 2), padding=((1, 1), (-1, 1)), lhs_dilation=(2, 1), rhs_dilation=(1, 1),
        dimension_numbers=((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2)), feature_group_count=1)),
    "max-pool-padded": ([_f64(2, 5, 4)], lambda x: C.reduce_window_max_p.bind(
        x, window_dimensions=(1, 2, 3), window_strides=(1, 2, 1), padding=((0, 0), (1, 0), (1, 1)))),
    "sum-pool-padded": ([_f64(2, 5, 4)], lambda x: C.reduce_window_sum_p.bind(
        x, window_dimensions=(1, 2, 3), window_strides=(1, 2, 1), padding=((0, 0), (1, 0), (1, 1)))),
    "gather": ([_f64(5, 4), _f64(5, 4)], lambda t, x: C.select_and_gather_add_p.bind(
        t, x, window_dimensions=(2, 3), window_strides=(2, 1), padding=((1, 0), (1, 1)))),
    "scatter": ([_f64(3, 4), _f64(5, 4)], lambda c, x: C.select_and_scatter_add_p.bind(
        c, x, window_dimensions=(2, 3), window_strides=(2, 1), padding=((1, 0), (1, 1)))),
}


def distinct_values(rng, shape):
    """Values at least 0.3 apart: no tie in any window within a finite-difference step."""
    n = math.prod(shape)
    return (rng.permutation(n) * 0.37 + rng.uniform(0, 0.1, n)).reshape(shape)


@pytest.mark.parametrize("emitted", ["primitives", "decomposed"])
@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_rules_to_second_order(name, emitted):
    """With the primitives' rules emitting primitives (the rules' own transposes are
    checked) and emitting decompositions (the fallback for backends without kernels)."""
    types, body = RULE_CASES[name]
    rng = np.random.default_rng(4)
    args = [distinct_values(rng, t.shape) for t in types]
    if emitted == "primitives":
        with C.emitting_primitives():
            fn = build(name.replace("-", "_"), types, body)
            check_grads(fn, args, order=2)
    else:
        with C.decomposing():
            check_grads(build(name.replace("-", "_"), types, body), args, order=2)


def test_conv_derivatives_are_convolutions():
    types, body = RULE_CASES["conv-groups-strided"]
    with C.emitting_primitives():
        fn = build("conv", types, body)
        for derived in (jvp_function(fn, [0, 1]), vjp_function(fn, [0, 1])):
            contractions = [op.name for op in derived.walk() if op.name in ("conv_general_dilated", "dot_general")]
            assert contractions and set(contractions) == {"conv_general_dilated"}


# --------------------------------------------------------------------------- layer functions

def test_batch_norm_training_and_inference():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 5, 2)) * 2 + 1
    mean0, var0, gamma, beta = rng.standard_normal(3), rng.uniform(0.5, 2, 3), rng.standard_normal(3), \
        rng.standard_normal(3)
    y, mean1, var1 = nn.batch_norm(x, mean0, var0, gamma, beta, training=True, momentum=0.2, eps=1e-3)
    batch_mean, batch_var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expected = ((x - batch_mean[:, None, None]) / np.sqrt(batch_var[:, None, None] + 1e-3)
                * gamma[:, None, None] + beta[:, None, None])
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    count = 4 * 5 * 2
    np.testing.assert_allclose(mean1, 0.8 * mean0 + 0.2 * batch_mean, rtol=1e-13)
    np.testing.assert_allclose(var1, 0.8 * var0 + 0.2 * batch_var * count / (count - 1), rtol=1e-13)
    inference = nn.batch_norm(x, mean1, var1, gamma, beta)
    np.testing.assert_allclose(inference, (x - mean1[:, None, None]) / np.sqrt(var1[:, None, None] + 1e-5)
                               * gamma[:, None, None] + beta[:, None, None], rtol=1e-12)
    channels_last = nn.batch_norm(np.moveaxis(x, 1, -1), mean0, var0, gamma, beta, training=True, momentum=0.2,
                                  eps=1e-3, axis=-1)
    np.testing.assert_allclose(channels_last[0], np.moveaxis(expected, 1, -1), rtol=1e-12, atol=1e-12)
    # the running statistics carry no derivative; y's gradient is the batch-norm formula's
    grads = jitgrad.grad(lambda a: np.sum(nn.batch_norm(a, mean0, var0, gamma, beta, training=True)[0] ** 3))(x)
    eps = 1e-6
    direction = rng.standard_normal(x.shape)
    f = lambda a: np.sum(nn.batch_norm(a, mean0, var0, gamma, beta, training=True)[0] ** 3)  # noqa: E731
    numeric = (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
    assert abs(np.sum(grads * direction) - numeric) < 1e-6 * max(1.0, abs(numeric))


def test_layer_norm_and_group_norm():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 6, 3, 4))
    w, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    mean, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(nn.layer_norm(x, (3, 4), w, b), (x - mean) / np.sqrt(var + 1e-5) * w + b,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nn.layer_norm(x), (x - x.mean(-1, keepdims=True)) / np.sqrt(
        x.var(-1, keepdims=True) + 1e-5), rtol=1e-12, atol=1e-12)
    gw, gb = rng.standard_normal(6), rng.standard_normal(6)
    grouped = x.reshape(2, 3, -1)
    expected = ((grouped - grouped.mean(-1, keepdims=True)) / np.sqrt(grouped.var(-1, keepdims=True) + 1e-5)
                ).reshape(x.shape) * gw[:, None, None] + gb[:, None, None]
    np.testing.assert_allclose(nn.group_norm(x, 3, gw, gb), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ShapeError, match="do not split into 4 groups"):
        nn.group_norm(x, 4)
    with pytest.raises(ShapeError, match="normalized_shape"):
        nn.layer_norm(x, (4, 3))


def test_dropout_scales_kept_elements_and_draws_fresh_masks_when_compiled():
    x = np.ones((200, 100))
    np.random.seed(1)
    y = nn.dropout(x, 0.3)
    kept = y != 0
    assert 0.65 < kept.mean() < 0.75
    np.testing.assert_allclose(y[kept], 1 / 0.7)
    assert nn.dropout(x, 0.3, training=False) is x
    compiled = jitgrad.jit(lambda a: nn.dropout(a, 0.5))
    first, second = compiled(x), compiled(x)
    assert 0.45 < (first != 0).mean() < 0.55 and not np.array_equal(first, second)
    np.testing.assert_allclose(first[first != 0], 2.0)
    grad = jitgrad.grad(lambda a: np.sum(nn.dropout(a, 0.5) * 3.0))(x)
    assert set(np.unique(grad)) <= {0.0, 6.0} and 0.45 < (grad != 0).mean() < 0.55
    with pytest.raises(ArgumentError, match="rate"):
        nn.dropout(x, 1.0)


def test_activations_against_their_formulas():
    x = np.linspace(-7, 7, 281)
    erf_reference = np.array([math.erf(v) for v in x])
    assert np.max(np.abs(nn.erf(x) - erf_reference)) <= 4e-16
    np.testing.assert_allclose(jitgrad.jit(nn.erf)(x), erf_reference, rtol=0, atol=4e-16)
    np.testing.assert_allclose(jitgrad.grad(lambda a: np.sum(nn.erf(a)))(x), 2 / np.sqrt(np.pi) * np.exp(-x * x),
                               rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(nn.gelu(x), [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x], rtol=1e-13,
                               atol=1e-20)
    np.testing.assert_allclose(nn.gelu(x, approximate="tanh"),
                               0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))), rtol=1e-14)
    np.testing.assert_allclose(nn.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_allclose(nn.silu(x), x / (1 + np.exp(-x)), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(nn.relu(x), np.where(x > 0, x, 0))
    logits = np.random.default_rng(7).standard_normal((3, 5)) * 30
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    np.testing.assert_allclose(nn.softmax(logits), soft, rtol=1e-13)
    top = logits.max(axis=0, keepdims=True)
    np.testing.assert_allclose(nn.log_softmax(logits, axis=0),
                               logits - top - np.log(np.sum(np.exp(logits - top), axis=0, keepdims=True)),
                               rtol=1e-12)
    with pytest.raises(ArgumentError, match="approximate"):
        nn.gelu(x, approximate="fast")


def test_cross_entropy_integer_labels_equal_one_hot_and_embedding():
    rng = np.random.default_rng(8)
    logits, labels = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    expected = -np.mean(nn.log_softmax(logits)[np.arange(6), labels])
    assert abs(nn.cross_entropy(logits, labels) - expected) < 1e-14
    assert abs(nn.cross_entropy(logits, nn.one_hot(labels, 4)) - expected) < 1e-14
    np.testing.assert_allclose(nn.cross_entropy(logits, labels, reduction="none").sum(),
                               nn.cross_entropy(logits, labels, reduction="sum"), rtol=1e-14)
    grad = jitgrad.grad(nn.cross_entropy)(logits, labels)
    np.testing.assert_allclose(grad, (nn.softmax(logits) - nn.one_hot(labels, 4)) / 6, rtol=1e-12, atol=1e-15)
    with pytest.raises(ShapeError, match="neither integer classes"):
        nn.cross_entropy(logits, np.ones((6, 3)))
    table, ids = rng.standard_normal((5, 3)), np.array([[0, 4], [4, 2]])
    np.testing.assert_array_equal(nn.embedding(ids, table), table[ids])
    table_grad = jitgrad.grad(lambda t: np.sum(nn.embedding(ids, t) ** 2))(table)
    expected_grad = np.zeros_like(table)
    np.add.at(expected_grad, ids, 2 * table[ids])
    np.testing.assert_allclose(table_grad, expected_grad, rtol=1e-14)


def test_errors_name_the_problem():
    x, w = np.ones((1, 4, 5, 5)), np.ones((2, 3, 3, 3))
    with pytest.raises(ShapeError, match="feature group"):
        nn.conv2d(x, w)
    with pytest.raises(DTypeError, match="float32 and float64"):
        nn.conv2d(x.astype(np.float16), np.ones((2, 4, 3, 3), np.float16))
    with pytest.raises(ArgumentError, match="padding 'FULL'"):
        nn.conv2d(x, np.ones((2, 4, 3, 3)), padding="FULL")
    with pytest.raises(ShapeError, match="smaller than the window"):
        nn.max_pool2d(x, 2, padding=2)
    with pytest.raises(ShapeError, match="feature group"):
        jitgrad.jit(lambda a: nn.conv2d(a, w))(x)


# --------------------------------------------------------------------------- the four APIs

def _model(p, x, labels):
    """A small network through most layer functions (dropout aside: it is random)."""
    h = nn.conv2d(x, p["w1"], p["b1"], padding="SAME", stride=1)
    h = nn.batch_norm(h, np.zeros(4), np.ones(4), p["gamma"], p["beta"], training=True)[0]
    h = nn.max_pool2d(nn.gelu(h), 2)
    h = nn.group_norm(nn.conv2d(h, p["w2"], padding=1, groups=2), 2)
    h = nn.avg_pool2d(nn.silu(h), 2, padding=0)
    h = nn.layer_norm(np.reshape(h, (h.shape[0], -1)))
    return nn.cross_entropy(nn.sigmoid(h) @ p["w3"], labels)


def _model_inputs():
    rng = np.random.default_rng(9)
    p = {"w1": rng.standard_normal((4, 2, 3, 3)) * 0.5, "b1": rng.standard_normal(4),
         "gamma": rng.uniform(0.5, 1.5, 4), "beta": rng.standard_normal(4),
         "w2": rng.standard_normal((4, 2, 3, 3)) * 0.5, "w3": rng.standard_normal((16, 3))}
    return p, rng.standard_normal((3, 2, 8, 8)), rng.integers(0, 3, 3)


def test_the_four_apis_give_the_same_values_and_gradients():
    p, x, labels = _model_inputs()
    names = sorted(p)
    eager = _model(p, x, labels)
    compiled_value, compiled = jitgrad.value_and_grad(_model)(p, x, labels)
    assert abs(compiled_value - eager) < 1e-12

    with jitgrad.GradientTape() as tape:
        tracked = {k: tape.variable(p[k]) for k in names}
        taped_value = _model(tracked, x, labels)
    taped = tape.gradient(taped_value, [tracked[k] for k in names])

    g = jitgrad.Graph()
    xs, ys = g.placeholder("x", (None, 2, 8, 8), np.float64), g.placeholder("y", (None,), np.int64)
    variables = {k: g.variable(k, p[k]) for k in names}
    loss = g.apply(_model, variables, xs, ys)
    graph_value, *graphed = g.run([loss, *g.gradients(loss, [variables[k] for k in names])], {xs: x, ys: labels})
    assert abs(taped_value.numpy() - eager) < 1e-12 and abs(graph_value - eager) < 1e-12

    rng = np.random.default_rng(10)
    directions = {k: rng.standard_normal(p[k].shape) for k in names}
    dual = _model({k: jitgrad.DualTensor(p[k], directions[k]) for k in names}, x, labels)
    directional = sum(np.sum(compiled[k] * directions[k]) for k in names)
    assert abs(dual.tangent - directional) < 1e-10 * max(1.0, abs(directional))
    for k, t, gr in zip(names, taped, graphed, strict=True):
        np.testing.assert_allclose(t, compiled[k], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(gr, compiled[k], rtol=1e-10, atol=1e-13)


def test_graph_methods_and_tensor_methods():
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    g = jitgrad.Graph()
    xs, ws = g.placeholder("x", (None, 3, 6, 6), np.float64), g.variable("w", w)
    y = g.batch_norm(g.max_pool2d(g.relu(g.conv2d(xs, ws, padding=1)), 2), np.zeros(4), np.ones(4))
    loss = g.cross_entropy(np.reshape(y, (2, -1)), np.array([1, 0]))
    (dw,) = g.gradients(loss, [ws])
    expected = lambda v: nn.cross_entropy(np.reshape(nn.batch_norm(nn.max_pool2d(nn.relu(nn.conv2d(  # noqa: E731
        x, v, padding=1)), 2), np.zeros(4), np.ones(4)), (2, -1)), np.array([1, 0]))
    value, grad = g.run([loss, dw], {xs: x})
    assert abs(value - expected(w)) < 1e-12
    np.testing.assert_allclose(grad, jitgrad.grad(expected)(w), rtol=1e-11)
    assert nn.conv2d(xs, ws).graph is g
    d = jitgrad.DualTensor(x, np.ones_like(x))
    out = d.conv2d(w).max_pool2d(2)
    np.testing.assert_allclose(out.value, nn.max_pool2d(nn.conv2d(x, w), 2), rtol=1e-13)


class _CPUWithoutWindowKernels(CPUBackend):
    """The CPU backend under another device name whose kernel key has no convolution or
    window emitters: a device as a new backend without these kernels would be."""
    device = "cpu-without-window-kernels"
    kernel_device = "none"


@pytest.mark.parametrize("device, decomposed", [("cuda-emulator", False), ("cpu-without-window-kernels", True)])
def test_each_device_gets_its_kernels_or_the_decompositions(device, decomposed):
    """The grid emulator runs the CUDA backend's convolution and window kernels (device
    names "gpu" and "cuda-emulator" both use the "cuda" emitters); a device without them
    gets the ops' exact decompositions. Both give the CPU kernels' results."""
    from jitgrad.backends import register_backend, unregister_backend
    from jitgrad.config import config
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((6, 2, 3, 3))

    def f(a, b):
        return np.sum(nn.avg_pool2d(nn.max_pool2d(nn.conv2d(a, b, padding=1, groups=2), 2, 1, 1), 2) ** 2)
    on_cpu = jitgrad.value_and_grad(f, argnums=(0, 1))(x, w)
    saved = config.device
    register_backend("cpu-without-window-kernels", _CPUWithoutWindowKernels)
    config.device = device
    try:
        names = {op.name for op in jitgrad.jit(f).lower(x, w).function.walk()}
        on_device = jitgrad.value_and_grad(f, argnums=(0, 1))(x, w)
    finally:
        config.device = saved
        unregister_backend("cpu-without-window-kernels")
    if decomposed:
        assert not names & set(C.ALL_NAMES) and "dot_general" in names
    else:
        assert {"conv_general_dilated", "reduce_window_max"} <= names, names
    np.testing.assert_allclose(on_device[0], on_cpu[0], rtol=1e-13)
    for got, expected in zip(on_device[1], on_cpu[1], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)