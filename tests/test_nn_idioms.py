"""The NumPy idioms for convolution and pooling compile to the nn primitives
(passes/nn_idioms.py): checked in the compiled IR, values against NumPy running the
same code, gradients against the same program with recognition switched off and against
central differences; programs that nearly match are left as written."""
import numpy as np
import pytest

import jitgrad
from jitgrad.passes import nn_idioms
from jitgrad.passes.nn_idioms import recognizing
from jitgrad.tracing.tracer import trace
from helpers import check_grads

swv = np.lib.stride_tricks.sliding_window_view
CONV = "conv_general_dilated"


def op_names(f, *args) -> set:
    return {op.name for op in jitgrad.jit(f).lower(*args).function.walk()}


# --------------------------------------------------------------------------- convolution idioms

def nchw(x, w):
    return np.einsum("nchwij,ocij->nohw", swv(x, (3, 3), axis=(2, 3)), w)


def nchw_strided_tensordot(x, w):
    return np.tensordot(swv(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2], w, axes=([1, 4, 5], [1, 2, 3]))


def nchw_padded_kernel_first(x, w):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 1)))
    return np.einsum("ocij,nchwij->nohw", w, swv(xp, (3, 3), axis=(2, 3)))


def nchw_dilated_cropped(x, w):
    return np.einsum("nchwij,ocij->nohw", swv(x, (5, 5), axis=(2, 3))[:, :, 1:, :, ::2, ::2], w)


def nhwc(x, w):
    return np.einsum("nhwcij,ijco->nhwo", swv(x, (3, 3), axis=(1, 2)), w)


def chw_no_batch(x, w):
    return np.einsum("chwij,ocij->ohw", swv(x[0], (3, 3), axis=(1, 2)), w)


def single_channel_2d(x, w):
    return np.einsum("hwij,ij->hw", swv(x[0, 0], (3, 3)), w[0, 0])


def conv1d_matmul(x, w):
    return swv(x[0, 0, 0], 3) @ w[0, 0, 0]


def conv1d_ncl(x, w):
    return np.einsum("ncli,oci->nol", swv(x[:, :, 0], 3, axis=2), w[:, :, 0])


def depthwise(x, w):
    return np.einsum("nchwij,cij->nchw", swv(x, (3, 3), axis=(2, 3)), w[0])


def grouped(x, w):
    xg = x.reshape(x.shape[0], 3, 1, *x.shape[2:])
    return np.einsum("ngchwij,gocij->ngohw", swv(xg, (3, 3), axis=(3, 4)), w.reshape(3, 4, 1, 3, 3)[:, :2])


def sum_over_offsets_single_channel(x, w):
    xp = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    return sum(w[0, 0, i, j] * xp[:, i:i + h, j:j + wd] for i in range(3) for j in range(3))


def sum_over_offsets_einsum(x, w):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    out = 0
    for i in range(3):
        for j in range(3):
            out = out + np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return out


def sum_over_offsets_plus_bias(x, w):
    return sum_over_offsets_single_channel(x, w) + w[1, 1, 1, 1] * x[:, 1] + 0.5


CONV_IDIOMS = [nchw, nchw_strided_tensordot, nchw_padded_kernel_first, nchw_dilated_cropped, nhwc, chw_no_batch,
               single_channel_2d, conv1d_matmul, conv1d_ncl, depthwise, grouped,
               sum_over_offsets_single_channel, sum_over_offsets_einsum, sum_over_offsets_plus_bias]


def conv_args(f, dtype=np.float64, seed=0):
    """(x, w) for an idiom: NCHW input (2, 3, 7, 6) and OIHW kernel (4, 3, 3, 3), or NHWC
    and HWIO for `nhwc`, or a 5x5 kernel for the dilated one."""
    rng = np.random.default_rng(seed)
    if f is nhwc:
        return rng.standard_normal((2, 7, 6, 3)).astype(dtype), rng.standard_normal((3, 3, 3, 4)).astype(dtype)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    if f is nchw_dilated_cropped:
        w = w[..., :3, :3]
    return x, w


@pytest.mark.parametrize("f", CONV_IDIOMS, ids=lambda f: f.__name__)
def test_convolution_idiom_compiles_to_the_primitive_with_numpys_values(f):
    x, w = conv_args(f)
    names = op_names(f, x, w)
    assert CONV in names, names
    assert not names & {"gather", "dot_general"}, names
    assert f is sum_over_offsets_plus_bias or "mul" not in names, names
    np.testing.assert_allclose(jitgrad.jit(f)(x, w), f(x, w), rtol=1e-12, atol=1e-12)


def gradients(f, x, w, seed=1):
    """d/dx and d/dw of <f(x, w), c> for a fixed random c."""
    c = np.random.default_rng(seed).standard_normal(np.shape(f(x, w)))
    return jitgrad.grad(lambda a, b: np.sum(f(a, b) * c), argnums=(0, 1))(x, w)


@pytest.mark.parametrize("f", CONV_IDIOMS, ids=lambda f: f.__name__)
def test_convolution_idiom_gradients_equal_the_unrecognized_programs(f):
    x, w = conv_args(f)
    recognized = gradients(f, x, w)
    with recognizing(False):
        written = gradients(f, x, w)
        assert CONV not in op_names(f, x, w)
    for got, expected in zip(recognized, written, strict=True):
        assert np.any(expected != 0)
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)


def test_the_derivatives_of_a_recognized_convolution_are_convolutions():
    x, w = conv_args(nchw)
    g = jitgrad.jit(jitgrad.grad(lambda a, b: np.sum(np.tanh(nchw(a, b))), argnums=(0, 1)))
    names = {op.name for op in g.lower(x, w).function.walk()}
    assert CONV in names and not names & {"gather", "scatter_add", "dot_general"}, names


@pytest.mark.parametrize("f", [nchw_strided_tensordot, nchw_padded_kernel_first, grouped,
                               sum_over_offsets_einsum], ids=lambda f: f.__name__)
def test_recognized_program_against_central_differences(f):
    rng = np.random.default_rng(3)
    x, w = conv_args(f)
    x, w = x[:1, :, :6, :5], w[:, :, :, :]
    traced = trace(f, (x, w)).function
    assert CONV in {op.name for op in traced.walk()}
    check_grads(traced, [x, w], order=2 if f is nchw_strided_tensordot else 1, rng=rng)


def test_float32_idiom_within_the_kernels_accuracy():
    x, w = conv_args(nchw, np.float32)
    assert CONV in op_names(nchw, x, w)
    got = jitgrad.jit(nchw)(x, w)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, nchw(x.astype(np.float64), w.astype(np.float64)), rtol=2e-5, atol=2e-5)


def test_traced_stage_shows_the_convolution():
    x, w = conv_args(nchw)
    text = jitgrad.jit(nchw).lower(x, w).as_text("traced")
    assert "conv_general_dilated(" in text and "gather(" not in text


def test_sliding_window_view_alone_matches_numpy():
    x = np.random.default_rng(4).standard_normal((3, 7, 6))
    for window, axis in [((2, 3), (2, 1)), (3, None), ((2, 2, 2), None), (4, -1)]:
        if axis is None and np.ndim(window) == 0:
            f = lambda a: swv(a[0, 0], window)
        else:
            f = lambda a: swv(a, window, axis=axis)
        np.testing.assert_array_equal(jitgrad.jit(f)(x), f(x))
    with pytest.raises(ValueError, match="window shape cannot be larger"):
        jitgrad.jit(lambda a: swv(a, 8, axis=1))(x)


# --------------------------------------------------------------------------- pooling idioms

def max_pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def mean_pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 3, 3).mean(axis=(3, 5))


def sum_pool_nhwc(x):
    n, h, w, c = x.shape
    return np.sum(x.reshape(n, h // 2, 2, w // 3, 3, c), axis=(2, 4))


POOLS = {max_pool: "reduce_window_max", mean_pool: "reduce_window_sum", sum_pool_nhwc: "reduce_window_sum"}


@pytest.mark.parametrize("f", list(POOLS), ids=lambda f: f.__name__)
def test_pooling_idiom_compiles_to_the_window_primitive(f):
    x = np.random.default_rng(5).standard_normal((2, 4, 6, 6))
    names = op_names(f, x)
    assert POOLS[f] in names and not names & {"reduce_max", "reduce_sum"}, names
    np.testing.assert_allclose(jitgrad.jit(f)(x), f(x), rtol=1e-14, atol=1e-15)
    loss = lambda a: np.sum(np.sin(f(a)))
    g = jitgrad.jit(jitgrad.grad(loss))
    assert POOLS[f] in {op.name for op in g.lower(x).function.walk()}
    with recognizing(False):
        expected = jitgrad.jit(jitgrad.grad(loss))(x)
    np.testing.assert_allclose(g(x), expected, rtol=1e-14, atol=1e-15)
    small = x[:1]
    np.testing.assert_allclose(g(small), central_differences(loss, small), rtol=1e-6, atol=1e-8)


def central_differences(f, x, eps=1e-6):
    """The gradient of the scalar NumPy function f at x, element by element."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        grad[index] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def test_max_pooling_idiom_keeps_the_even_split_of_tied_windows():
    """reduce_max shares a tied window's gradient evenly; the recognized program keeps
    that (it rewrites after differentiation), where reduce_window_max's own rule would
    give it all to the first maximum."""
    x = np.repeat(np.repeat(np.arange(6.0).reshape(1, 1, 2, 3), 2, axis=2), 2, axis=3)   # 2x2 ties
    g = jitgrad.jit(jitgrad.grad(lambda a: np.sum(max_pool(a) * np.arange(1.0, 7.0).reshape(1, 1, 2, 3))))
    assert "reduce_window_max" in {op.name for op in g.lower(x).function.walk()}
    expected = np.repeat(np.repeat(np.arange(1.0, 7.0).reshape(1, 1, 2, 3), 2, axis=2), 2, axis=3) / 4
    np.testing.assert_array_equal(g(x), expected)


# --------------------------------------------------------------------------- near misses

def taps_not_contracted(x, w):
    return np.einsum("nchwij,oc->nohwij", swv(x, (3, 3), axis=(2, 3)), w[:, :, 0, 0])


def window_over_channels(x, w):
    return np.einsum("nchwi,oi->nohw", swv(x, 3, axis=1), w[:, 0, 0])


def shuffled_gather(x, w):
    return np.einsum("nchw,oc->nohw", x[:, [2, 0, 1]], w[:, :, 0, 0])


def offsets_missing_one(x, w):
    xp = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    return sum(w[0, 0, i, j] * xp[:, i:i + h, j:j + wd] for i in range(3) for j in range(3) if (i, j) != (2, 2))


def offset_twice(x, w):
    xp = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    return sum(w[0, 0, i, j] * xp[:, min(i, 1):min(i, 1) + h, j:j + wd] for i in range(3) for j in range(3))


def two_sources(x, w):
    xp, yp = np.pad(x[:, 0], 1), np.pad(x[:, 1], 1)
    h, wd = x.shape[2:]
    return w[0, 0, 0, 0] * xp[1:1 + x.shape[0], 0:h, 0:wd] + w[0, 0, 0, 1] * yp[1:1 + x.shape[0], 0:h, 1:1 + wd]


def unweighted_stencil(x, w):
    return x[:, :, 2:] - 2.0 * x[:, :, 1:-1] + x[:, :, :-2]


def fixed_filter(x, w):
    xp = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    return sum((i + 2 * j - 1.5) * xp[:, i:i + h, j:j + wd] for i in range(3) for j in range(3))


def weighted_1d_stencil(x, w):
    return w[0, 0, 0, 0] * x[..., 2:] + w[0, 0, 0, 1] * x[..., 1:-1] + w[0, 0, 0, 2] * x[..., :-2]


NEAR_MISSES = [taps_not_contracted, window_over_channels, shuffled_gather, offsets_missing_one, offset_twice,
               two_sources, unweighted_stencil, fixed_filter, weighted_1d_stencil]


@pytest.mark.parametrize("f", NEAR_MISSES, ids=lambda f: f.__name__)
def test_near_miss_is_left_as_written(f):
    x, w = conv_args(nchw)
    assert CONV not in op_names(f, x, w)
    np.testing.assert_allclose(jitgrad.jit(f)(x, w), f(x, w), rtol=1e-13, atol=1e-13)


def test_integer_window_contraction_is_left_as_written():
    rng = np.random.default_rng(6)
    x, w = rng.integers(-5, 5, (2, 3, 7, 6)), rng.integers(-5, 5, (4, 3, 3, 3))
    assert CONV not in op_names(nchw, x, w)
    np.testing.assert_array_equal(jitgrad.jit(nchw)(x, w), nchw(x, w))


@pytest.mark.parametrize("f, dtype", [
    (lambda x: x.reshape(2, 3, 4, 2, 3, 2).max(axis=3), np.float64),          # one of the split axes
    (lambda x: x.reshape(6, 48).max(axis=1), np.float64),                     # merged, not split
    (lambda x: x.reshape(2, 3, 4, 2, 3, 2).max(axis=(2, 4)), np.float64),     # the outer factors
    (max_pool, np.int64), (max_pool, np.float16)], ids=["one-axis", "merged", "outer", "int64", "float16"])
def test_pooling_near_miss_is_left_as_written(f, dtype):
    x = np.random.default_rng(7).standard_normal((2, 3, 8, 6)) * 10
    x = x.astype(dtype)
    names = op_names(f, x)
    assert not names & {"reduce_window_max", "reduce_window_sum"}, names
    np.testing.assert_array_equal(jitgrad.jit(f)(x), f(x))


def test_recognition_switched_off_keeps_the_gathers():
    x, w = conv_args(nchw)
    with recognizing(False):
        names = op_names(nchw, x, w)
    assert "gather" in names and CONV not in names
    assert nn_idioms.RecognizeConvolutions.name == "nn-conv-idioms"
