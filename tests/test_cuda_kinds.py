"""The CUDA backend's kernels of the kernel kinds (gathers and scatters with runtime
indices, cumulative scans, sort/argsort/searchsorted, convolution and window ops, fft),
checked without a GPU: the grid emulator (3 blocks of 32 threads, a workspace full of
garbage) against the CPU backend on adversarial data — indices out of range on both
sides, repeated indices, ties, NaNs of both signs, signed zeros and infinities for the
sorts, float16/bfloat16 rounding orders, empty and 0-d operands, more items than the
grid has threads so every grid-stride loop wraps. Bit for bit wherever both backends
run the same arithmetic in the same order; the direct convolution to rounding (the CPU
multiplies through BLAS). Their PTX is assembled by ptxas and linked by nvJitLink in
tests/test_cuda_backend.py ("PTX of everything" builds every case below).

Also: the kinds the GPU cannot run (LAPACK, host callbacks) are
refused with the op, the reason and the user's line; and the disk cache of cubins
(keying, storage, integrity).
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Callable

import ml_dtypes
import numpy as np
import pytest

import jitgrad
from jitgrad.backends import backend_for
from jitgrad.errors import UnsupportedOperationError
from jitgrad.ir import DType, TensorType
from jitgrad import primitives as P
from jitgrad.primitives import Primitive
from jitgrad.primitives.fft import roots_of_unity

from helpers import build

EMULATOR = "cuda-emulator"
BF16 = ml_dtypes.bfloat16


def bind(name, *operands, **attrs):
    return Primitive.all[name].bind(*operands, **attrs)


def t(dtype: DType, *shape) -> TensorType:
    return TensorType(shape, dtype)


@dataclass
class KindCase:
    """One program of kernel-kind ops: its input types, body and adversarial inputs."""
    label: str
    in_types: list
    body: Callable
    inputs: Callable[[np.random.Generator], list]
    exact: bool = True

    def function(self):
        return build(self.label.replace("-", "_"), self.in_types, self.body)


def _indices(rng, n: int, shape):
    """int64 indices from -2n-3 to 2n+3: most out of range, on both sides, many repeated."""
    return rng.integers(-2 * n - 3, 2 * n + 4, shape).astype(np.int64)


def _awkward(rng, shape, dtype):
    """Ties, NaNs of both signs (a payload too), signed zeros, infinities, small integers."""
    values = rng.integers(-3, 4, shape).astype(np.float64)
    pick = rng.random(shape)
    values[pick < 0.1] = np.nan
    values[(pick >= 0.1) & (pick < 0.15)] = -np.nan
    values[(pick >= 0.15) & (pick < 0.2)] = -0.0
    values[(pick >= 0.2) & (pick < 0.25)] = np.inf
    values[(pick >= 0.25) & (pick < 0.3)] = -np.inf
    out = values.astype(dtype)
    if out.dtype == np.float64 and out.size:
        out.reshape(-1)[0] = np.frombuffer(np.uint64(0x7FF8000000000123).tobytes(), np.float64)[0]
    return out


def _normal(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def _gather_cases():
    f64, f16, i32 = DType.f64, DType.f16, DType.i32
    return [
        KindCase("gather-axis1-wraps", [t(f64, 3, 50, 4), t(DType.i64, 7, 9)],
                 lambda x, i: bind("gather", x, i, axis=1),
                 lambda rng: [_awkward(rng, (3, 50, 4), np.float64), _indices(rng, 50, (7, 9))]),
        KindCase("gather-f16", [t(f16, 20), t(DType.i64, 300)], lambda x, i: bind("gather", x, i, axis=0),
                 lambda rng: [_awkward(rng, 20, np.float16), _indices(rng, 20, 300)]),
        KindCase("gather-bf16-rows", [t(DType.bf16, 10, 3), t(DType.i64, 40)],
                 lambda x, i: bind("gather", x, i, axis=0),
                 lambda rng: [_awkward(rng, (10, 3), BF16), _indices(rng, 10, 40)]),
        KindCase("gather-bool-last-axis", [t(DType.bool, 4, 6), t(DType.i64, 33)],
                 lambda x, i: bind("gather", x, i, axis=1),
                 lambda rng: [rng.random((4, 6)) < 0.5, _indices(rng, 6, 33)]),
        KindCase("gather-0d-indices", [t(f64, 6, 3), t(DType.i64)], lambda x, i: bind("gather", x, i, axis=0),
                 lambda rng: [_normal(rng, (6, 3)), np.array(9, np.int64)]),
        KindCase("gather-empty-axis", [t(f64, 4, 0, 2), t(DType.i64, 5)], lambda x, i: bind("gather", x, i, axis=1),
                 lambda rng: [np.zeros((4, 0, 2)), _indices(rng, 3, 5)]),
        KindCase("gather-no-indices", [t(i32, 5, 2), t(DType.i64, 0)], lambda x, i: bind("gather", x, i, axis=0),
                 lambda rng: [rng.integers(-9, 9, (5, 2)).astype(np.int32), np.zeros(0, np.int64)]),
        KindCase("scatter_add-rows-repeats", [t(f64, 5, 4), t(DType.i64, 400), t(f64, 400, 4)],
                 lambda x, i, u: bind("scatter_add", x, i, u, axis=0),
                 lambda rng: [_normal(rng, (5, 4)), _indices(rng, 5, 400), _normal(rng, (400, 4)) * 1e3]),
        KindCase("scatter_add-f16-rounding-order", [t(f16, 7), t(DType.i64, 200), t(f16, 200)],
                 lambda x, i, u: bind("scatter_add", x, i, u, axis=0),
                 lambda rng: [_normal(rng, 7, np.float16), _indices(rng, 7, 200),
                              (rng.standard_normal(200) * 300).astype(np.float16)]),
        KindCase("scatter_add-bf16", [t(DType.bf16, 3, 4), t(DType.i64, 50), t(DType.bf16, 3, 50)],
                 lambda x, i, u: bind("scatter_add", x, i, u, axis=1),
                 lambda rng: [_normal(rng, (3, 4), BF16), _indices(rng, 4, 50), _normal(rng, (3, 50), BF16)]),
        KindCase("scatter_add-columns-wrap", [t(DType.f32, 3, 6, 40), t(DType.i64, 25), t(DType.f32, 3, 25, 40)],
                 lambda x, i, u: bind("scatter_add", x, i, u, axis=1),
                 lambda rng: [_normal(rng, (3, 6, 40), np.float32), _indices(rng, 6, 25),
                              _normal(rng, (3, 25, 40), np.float32)]),
        KindCase("scatter_add-i64", [t(DType.i64, 9), t(DType.i64, 3, 4), t(DType.i64, 3, 4)],
                 lambda x, i, u: bind("scatter_add", x, i, u, axis=0),
                 lambda rng: [rng.integers(-5, 5, 9), _indices(rng, 9, (3, 4)), rng.integers(-2**62, 2**62, (3, 4))]),
        KindCase("scatter_add-no-updates", [t(f64, 4, 2), t(DType.i64, 0), t(f64, 0, 2)],
                 lambda x, i, u: bind("scatter_add", x, i, u, axis=0),
                 lambda rng: [_awkward(rng, (4, 2), np.float64), np.zeros(0, np.int64), np.zeros((0, 2))]),
        KindCase("scatter-last-wins", [t(f64, 6, 3), t(DType.i64, 100), t(f64, 100, 3)],
                 lambda x, i, u: bind("scatter", x, i, u, axis=0),
                 lambda rng: [_normal(rng, (6, 3)), _indices(rng, 6, 100), _awkward(rng, (100, 3), np.float64)]),
        KindCase("scatter-axis1-f16", [t(f16, 2, 5, 3), t(DType.i64, 2, 4), t(f16, 2, 2, 4, 3)],
                 lambda x, i, u: bind("scatter", x, i, u, axis=1),
                 lambda rng: [_normal(rng, (2, 5, 3), np.float16), _indices(rng, 5, (2, 4)),
                              _awkward(rng, (2, 2, 4, 3), np.float16)]),
        KindCase("scatter-0d-index", [t(DType.u8, 4, 3), t(DType.i64), t(DType.u8, 3)],
                 lambda x, i, u: bind("scatter", x, i, u, axis=0),
                 lambda rng: [rng.integers(0, 255, (4, 3)).astype(np.uint8), np.array(-7, np.int64),
                              rng.integers(0, 255, 3).astype(np.uint8)]),
    ]


def _cumulative_cases():
    f64 = DType.f64

    def scans(axis, reverse):
        return lambda x: [bind("cumsum", x, axis=axis, reverse=reverse), bind("cumprod", x, axis=axis, reverse=reverse)]
    return [
        KindCase("cumulative-middle-axis", [t(f64, 7, 30, 5)], scans(1, False),
                 lambda rng: [_normal(rng, (7, 30, 5))]),
        KindCase("cumulative-reverse-lines-wrap", [t(f64, 50, 4, 3)], scans(2, True),
                 lambda rng: [_awkward(rng, (50, 4, 3), np.float64)]),
        KindCase("cumulative-long-axis0", [t(DType.f32, 200, 3)], scans(0, False),
                 lambda rng: [rng.uniform(0.5, 1.5, (200, 3)).astype(np.float32)]),
        KindCase("cumsum-f16-rounding", [t(DType.f16, 500)], lambda x: bind("cumsum", x, axis=0, reverse=False),
                 lambda rng: [(rng.standard_normal(500) * 10).astype(np.float16)]),
        KindCase("cumulative-bf16", [t(DType.bf16, 3, 40)], scans(1, True),
                 lambda rng: [rng.uniform(0.5, 1.5, (3, 40)).astype(BF16)]),
        KindCase("cumulative-i32-wraps", [t(DType.i32, 4, 60)], scans(1, False),
                 lambda rng: [rng.integers(-1000, 1000, (4, 60)).astype(np.int32)]),
        KindCase("cumsum-u8", [t(DType.u8, 300)], lambda x: bind("cumsum", x, axis=0, reverse=False),
                 lambda rng: [rng.integers(0, 255, 300).astype(np.uint8)]),
        KindCase("cumulative-empty", [t(f64, 0, 5), t(f64, 5, 0)],
                 lambda x, y: [bind("cumsum", x, axis=1, reverse=False), bind("cumprod", y, axis=1, reverse=True)],
                 lambda rng: [np.zeros((0, 5)), np.zeros((5, 0))]),
    ]


def _sort_cases():
    def both(x):
        return [bind("sort", x), bind("argsort", x)]

    def searches(a, v):
        s = bind("sort", a)
        return [bind("searchsorted", s, v, side="left"), bind("searchsorted", s, v, side="right")]
    cases = [
        KindCase("sort-f64-rows-wrap", [t(DType.f64, 130, 9)], both,
                 lambda rng: [_awkward(rng, (130, 9), np.float64)]),
        KindCase("sort-f32-long-rows", [t(DType.f32, 3, 1000)], both,
                 lambda rng: [_awkward(rng, (3, 1000), np.float32)]),
        KindCase("sort-f16", [t(DType.f16, 20, 17)], both, lambda rng: [_awkward(rng, (20, 17), np.float16)]),
        KindCase("sort-bf16", [t(DType.bf16, 5, 33)], both, lambda rng: [_awkward(rng, (5, 33), BF16)]),
        KindCase("sort-i64-extremes", [t(DType.i64, 4, 50)], both,
                 lambda rng: [rng.choice(np.array([np.iinfo(np.int64).min, -1, 0, 1, np.iinfo(np.int64).max]),
                                         (4, 50))]),
        KindCase("sort-u8", [t(DType.u8, 7, 31)], both, lambda rng: [rng.integers(0, 256, (7, 31)).astype(np.uint8)]),
        KindCase("sort-i8", [t(DType.i8, 2, 100)], both, lambda rng: [rng.integers(-128, 128, (2, 100)).astype(np.int8)]),
        KindCase("sort-bool", [t(DType.bool, 3, 20)], both, lambda rng: [rng.random((3, 20)) < 0.5]),
        KindCase("sort-rows-of-one", [t(DType.f64, 4, 1)], both, lambda rng: [_awkward(rng, (4, 1), np.float64)]),
        KindCase("sort-empty", [t(DType.f64, 0, 5), t(DType.f64, 5, 0)], lambda x, y: [*both(x), *both(y)],
                 lambda rng: [np.zeros((0, 5)), np.zeros((5, 0))]),
        KindCase("searchsorted-nans-ties", [t(DType.f64, 50), t(DType.f64, 200)], searches,
                 lambda rng: [_awkward(rng, 50, np.float64), _awkward(rng, 200, np.float64)]),
        KindCase("searchsorted-f16-2d-values", [t(DType.f16, 9), t(DType.f16, 3, 40)], searches,
                 lambda rng: [_awkward(rng, 9, np.float16), _awkward(rng, (3, 40), np.float16)]),
        KindCase("searchsorted-empty-sorted", [t(DType.i64, 0), t(DType.i64, 5)], searches,
                 lambda rng: [np.zeros(0, np.int64), rng.integers(-3, 3, 5)]),
        KindCase("searchsorted-0d-value", [t(DType.i32, 8), t(DType.i32)], searches,
                 lambda rng: [rng.integers(-3, 3, 8).astype(np.int32), np.array(1, np.int32)]),
    ]
    return cases


def _window_cases():
    f64 = DType.f64

    def windows(window, strides, padding):
        attrs = dict(window_dimensions=window, window_strides=strides, padding=padding)
        return lambda x, tangent, c: [bind("reduce_window_max", x, **attrs), bind("reduce_window_sum", x, **attrs),
                                      bind("select_and_gather_add", tangent, x, **attrs),
                                      bind("select_and_scatter_add", c, x, **attrs)]

    return [
        KindCase("windows-overlapping-padded", [t(f64, 2, 13, 11), t(f64, 2, 13, 11), t(f64, 2, 13, 6)],
                 windows((1, 3, 3), (1, 1, 2), ((0, 0), (1, 1), (1, 1))),
                 lambda rng: [_awkward(rng, (2, 13, 11), np.float64), _normal(rng, (2, 13, 11)),
                              _normal(rng, (2, 13, 6))]),
        KindCase("windows-large-window-loop", [t(f64, 3, 12, 12), t(f64, 3, 12, 12), t(f64, 3, 2, 3)],
                 windows((1, 5, 5), (1, 5, 5), ((0, 0), (0, 1), (2, 1))),
                 lambda rng: [_awkward(rng, (3, 12, 12), np.float64), _normal(rng, (3, 12, 12)),
                              _normal(rng, (3, 2, 3))]),
        KindCase("windows-disjoint-f32", [t(DType.f32, 4, 8, 8), t(DType.f32, 4, 8, 8), t(DType.f32, 4, 4, 4)],
                 windows((1, 2, 2), (1, 2, 2), ((0, 0), (0, 0), (0, 0))),
                 lambda rng: [_normal(rng, (4, 8, 8), np.float32), _normal(rng, (4, 8, 8), np.float32),
                              _normal(rng, (4, 4, 4), np.float32)]),
        KindCase("windows-empty-input", [t(f64, 0, 3), t(f64, 0, 3), t(f64, 1, 2)],
                 windows((2, 2), (1, 1), ((1, 1), (0, 0))),
                 lambda rng: [np.zeros((0, 3)), np.zeros((0, 3)), _normal(rng, (1, 2))]),
    ]


def _conv(lhs_shape, rhs_shape, dtype=DType.f64, **attrs):
    n = len(lhs_shape) - 2
    attrs.setdefault("window_strides", (1,) * n)
    attrs.setdefault("padding", ((0, 0),) * n)
    attrs.setdefault("lhs_dilation", (1,) * n)
    attrs.setdefault("rhs_dilation", (1,) * n)
    attrs.setdefault("dimension_numbers", (tuple(range(n + 2)),) * 3)
    attrs.setdefault("feature_group_count", 1)
    label = f"conv-{'x'.join(map(str, lhs_shape))}-{'x'.join(map(str, rhs_shape))}-{dtype}"
    return KindCase(label, [t(dtype, *lhs_shape), t(dtype, *rhs_shape)],
                    lambda a, b: bind("conv_general_dilated", a, b, **attrs),
                    lambda rng: [_normal(rng, lhs_shape, dtype.numpy), _normal(rng, rhs_shape, dtype.numpy)],
                    exact=False)


def _conv_cases():
    return [
        _conv((2, 4, 9, 8), (6, 2, 3, 2), window_strides=(2, 1), padding=((1, 0), (0, 1)), rhs_dilation=(1, 2),
              feature_group_count=2),
        _conv((1, 7, 5, 2), (2, 2, 2, 3), window_strides=(1, 2), padding=((1, 1), (-1, 1)), lhs_dilation=(2, 1),
              dimension_numbers=((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))),
        _conv((3, 2, 40), (5, 2, 4), DType.f32, padding=((2, 3),), window_strides=(3,)),
        _conv((1, 2, 4, 3, 5), (2, 2, 2, 1, 3), padding=((1, 0), (0, 0), (1, 1))),
        _conv((0, 2, 5), (3, 2, 2)),                 # an empty batch
        _conv((2, 0, 5), (3, 0, 2)),                 # no input features: zeros
    ]


def _fft_cases():
    def case(n, batch, dtype):
        roots = roots_of_unity(n, dtype)
        return KindCase(f"fft-n{n}-b{batch}-{dtype}", [t(dtype, batch, n, 2)],
                        lambda x: bind("fft", x, _constant(roots)),
                        lambda rng: [_normal(rng, (batch, n, 2), dtype.numpy)])
    return [case(1, 3, DType.f64), case(2, 5, DType.f32), case(8, 130, DType.f64), case(30, 7, DType.f32),
            case(45, 2, DType.f64), case(64, 100, DType.f32), case(4, 0, DType.f64)]


def _constant(array):
    return P.constant(array)


class TracedCase(KindCase):
    """A case written as a NumPy function (control flow), traced and optimized by `jit`."""

    def __init__(self, label: str, fun: Callable, inputs: Callable[[np.random.Generator], list], exact=True):
        super().__init__(label, [], None, inputs, exact)
        self.fun = fun

    def function(self):
        return jitgrad.jit(self.fun).lower(*self.inputs(np.random.default_rng(0))).function


def _doubling_with_sorts(x):
    return jitgrad.while_loop(lambda c: c[0] < 6, lambda c: (c[0] + 1, c[1] * 2 + np.sort(c[1])), (0, x))


def _fori_with_scans(x, n):
    return jitgrad.fori_loop(0, n, lambda i, c: c * 1.5 + np.cumsum(c) * 0.01 + i, x)


def _scan_of_rows(x, xs):
    def step(c, row):
        c = np.tanh(c + row.sum() + np.sort(c)[0])
        return c, c * 2
    return jitgrad.scan(step, x, xs)


def _scan_backwards_nested(x, xs):
    def step(c, row):
        inner = jitgrad.fori_loop(0, 3, lambda i, v: v * 0.5 + row[i], c)
        return inner, inner.sum()
    return jitgrad.scan(step, x, xs, reverse=True)


def _branches(x, p):
    return jitgrad.cond(p > 0, lambda v: np.sort(v)[::-1] * 2, lambda v: -np.cumsum(v), x)


def _gradient_through_a_while_loop(x):
    return jitgrad.grad(lambda x: np.sum(jitgrad.while_loop(lambda c: c[0] < 4, lambda c: (c[0] + 1, np.sin(c[1])),
                                                            (0, x))[1]))(x)


def _indexing_modes(x, i):
    """NumPy's index modes, which the tracer turns into clamped gathers and scatters."""
    added = x.copy()
    np.add.at(added, i % 7 - 3, 1.0)
    return (np.take(x, i, mode="clip"), np.take(x, i, mode="wrap"), x[i % 7 - 3], added,
            np.take_along_axis(x.reshape(2, 4), (i[:8] % 4).reshape(2, 4), axis=1))


def _traced_cases():
    return [
        TracedCase("numpy-index-modes", _indexing_modes,
                   lambda rng: [_awkward(rng, 8, np.float64), _indices(rng, 8, 11)]),
        TracedCase("while-sorts", _doubling_with_sorts, lambda rng: [_normal(rng, 200)]),
        TracedCase("fori-runtime-trips", _fori_with_scans, lambda rng: [_normal(rng, 150), np.int64(5)]),
        TracedCase("fori-negative-trips", _fori_with_scans, lambda rng: [_normal(rng, 10), np.int64(-2)]),
        # tanh: the host's scalar libm on the emulator, libmvec's vector variants on the CPU
        TracedCase("scan-rows", _scan_of_rows, lambda rng: [_normal(rng, 40), _normal(rng, (30, 4))], exact=False),
        TracedCase("scan-reverse-nested-fori", _scan_backwards_nested,
                   lambda rng: [_normal(rng, 3), _normal(rng, (9, 3))]),
        TracedCase("scan-gradient", jitgrad.grad(lambda x, xs: np.sum(_scan_of_rows(x, xs)[1])),
                   lambda rng: [_normal(rng, 40), _normal(rng, (6, 4))], exact=False),
        # reverse mode through a while loop (reverse_fori; more in tests/test_cuda_reverse_loops.py)
        TracedCase("while-gradient", _gradient_through_a_while_loop, lambda rng: [_normal(rng, 130)], exact=False),
        TracedCase("cond-true", _branches, lambda rng: [_awkward(rng, 130, np.float64), np.float64(1.0)]),
        TracedCase("cond-false", _branches, lambda rng: [_awkward(rng, 130, np.float64), np.float64(-1.0)]),
    ]


KIND_CASES = [*_gather_cases(), *_cumulative_cases(), *_sort_cases(), *_window_cases(), *_conv_cases(),
              *_fft_cases(), *_traced_cases()]
"""Every case, also built into tests/test_cuda_backend.py's "PTX of everything"."""


def _assert_agree(got, expected, exact: bool) -> None:
    """Bit for bit, except that a NaN computed by arithmetic may carry another sign or
    payload (NumPy promises neither; which operand's NaN an add propagates depends on the
    instruction). Data movement keeps NaN bits: sorts, gathers and scatters are compared
    as bytes by their cases' NaN-free checks below too."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if not exact:
        tol = 1e-12 if got.dtype == np.float64 else 2e-5
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
        return
    if got.dtype.kind == "f" or got.dtype == BF16:
        nan = np.isnan(expected.astype(np.float32))
        assert np.array_equal(nan, np.isnan(got.astype(np.float32))), f"NaNs differ:\n{got}\n{expected}"
        got, expected = got[~nan], expected[~nan]
    assert got.tobytes() == expected.tobytes(), f"not bit for bit:\n{got}\n{expected}"


@pytest.mark.parametrize("case", KIND_CASES, ids=[c.label for c in KIND_CASES])
def test_the_emulated_kernel_agrees_with_the_cpu(case):
    fn = case.function()
    inputs = case.inputs(np.random.default_rng(zlib.crc32(case.label.encode())))
    expected = backend_for("cpu").compile(fn)(inputs)
    got = backend_for(EMULATOR).compile(fn)(inputs)
    for g, e in zip(got, expected, strict=True):
        _assert_agree(g, e, case.exact)


# --------------------------------------------------------------------------- refused kinds

def _complex_qr(a):
    return np.linalg.qr(a * (1 + 1j))[1]


def _doubled_on_the_host(x):
    return jitgrad.pure_callback(lambda v: v * 2, jitgrad.ShapeDtypeStruct(x.shape, x.dtype), x)


@pytest.mark.parametrize("fun, op, reason, arg", [
    (_complex_qr, "qr", "no generated kernel for c128 operands", np.eye(3) + 0.5),
    (_doubled_on_the_host, "pure_callback", "host Python callback", np.ones(3)),
], ids=["lapack", "callback"])
@pytest.mark.parametrize("device", [EMULATOR, "gpu"])
def test_kinds_the_gpu_cannot_run_are_refused_with_the_reason_and_line(fun, op, reason, arg, device):
    line = fun.__code__.co_firstlineno + 1
    with pytest.raises(UnsupportedOperationError) as info:
        jitgrad.jit(fun, device=device).lower(arg)      # compiling is enough: no GPU needed
    message = str(info.value)
    assert f"{op} has no kernel for device 'cuda': " in message and reason in message
    assert f"test_cuda_kinds.py:{line}" in message
    np.testing.assert_allclose(jitgrad.jit(fun)(arg), fun(arg))        # the CPU runs it


# --------------------------------------------------------------------------- the disk cache of cubins

@pytest.fixture(scope="module")
def small_ptx():
    from jitgrad.backends.cuda import ptx as ptx_tools
    assert ptx_tools.nvjitlink_available(), "nvJitLink not found: the test extras install nvidia-nvjitlink"
    x = np.ones(300)
    executable = jitgrad.jit(lambda x: np.cumsum(np.sort(x)), device="gpu").lower(x).executable
    return executable.ptx


class _CountingLinker:
    def __init__(self):
        from jitgrad.backends.cuda.ptx import nvjitlink_cubin
        self.link, self.calls = nvjitlink_cubin, 0

    def __call__(self, ptx, arch):
        self.calls += 1
        return self.link(ptx, arch)


def _private_dir(tmp_path):
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    return str(directory)


def test_cubins_are_linked_once_then_loaded_from_the_disk_cache(small_ptx, tmp_path):
    from jitgrad.backends.cuda.cubin_cache import cubin_for, cubin_key
    directory, linker = _private_dir(tmp_path), _CountingLinker()
    first = cubin_for(small_ptx["sm_90"], "sm_90", 13000, directory, link=linker)
    assert first[:4] == b"\x7fELF" and linker.calls == 1
    entry = os.path.join(directory, cubin_key(small_ptx["sm_90"], "sm_90", 13000) + ".o")
    assert os.path.isfile(entry) and os.stat(entry).st_mode & 0o077 == 0
    assert cubin_for(small_ptx["sm_90"], "sm_90", 13000, directory, link=linker) == first
    assert linker.calls == 1
    # the key holds the PTX, the architecture and the driver's version: each change links again
    cubin_for(small_ptx["sm_90"], "sm_90", 13010, directory, link=linker)
    cubin_for(small_ptx["sm_80"], "sm_90", 13000, directory, link=linker)
    sm_80 = cubin_for(small_ptx["sm_80"], "sm_80", 13000, directory, link=linker)
    assert linker.calls == 4 and sm_80 != first
    assert len({cubin_key(small_ptx["sm_90"], "sm_90", 13000), cubin_key(small_ptx["sm_90"], "sm_90", 13010),
                cubin_key(small_ptx["sm_80"], "sm_90", 13000), cubin_key(small_ptx["sm_80"], "sm_80", 13000)}) == 4


def test_a_tampered_or_foreign_cubin_entry_is_never_loaded(small_ptx, tmp_path):
    from jitgrad.backends.cpu.cache import CacheEntry, DiskCache
    from jitgrad.backends.cuda.cubin_cache import cubin_for, cubin_key
    directory, linker = _private_dir(tmp_path), _CountingLinker()
    ptx, key = small_ptx["sm_90"], cubin_key(small_ptx["sm_90"], "sm_90", 1)
    good = cubin_for(ptx, "sm_90", 1, directory, link=linker)
    path = os.path.join(directory, key + ".o")
    data = bytearray(open(path, "rb").read())
    data[-100] ^= 0x01                                     # one flipped bit in the machine code
    with open(path, "wb") as f:
        f.write(bytes(data))
    assert cubin_for(ptx, "sm_90", 1, directory, link=linker) == good and linker.calls == 2
    assert open(path, "rb").read() != bytes(data)          # rebuilt
    # an authentic entry that is not a cubin (or not for this architecture) is not handed to the driver
    DiskCache(directory).store(key, CacheEntry(b"#!/bin/sh\n", "sm_90"))
    assert cubin_for(ptx, "sm_90", 1, directory, link=linker) == good and linker.calls == 3
    DiskCache(directory).store(key, CacheEntry(good, "sm_80"))
    assert cubin_for(ptx, "sm_90", 1, directory, link=linker) == good and linker.calls == 4
    # an entry from another cache (another key file) fails its HMAC
    (tmp_path / "other").mkdir()
    other, other_linker = _private_dir(tmp_path / "other"), _CountingLinker()
    with open(os.path.join(other, key + ".o"), "wb") as f:
        f.write(open(path, "rb").read())
    assert cubin_for(ptx, "sm_90", 1, other, link=other_linker) == good and other_linker.calls == 1


def test_without_a_private_directory_cubins_are_linked_every_time(small_ptx, tmp_path):
    from jitgrad.backends.cpu.cache import CacheSecurityWarning
    from jitgrad.backends.cuda.cubin_cache import cubin_for
    linker = _CountingLinker()
    for _ in range(2):
        assert cubin_for(small_ptx["sm_80"], "sm_80", 1, None, link=linker)[:4] == b"\x7fELF"
    assert linker.calls == 2
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.warns(CacheSecurityWarning, match="writable by group and others"):
        assert cubin_for(small_ptx["sm_80"], "sm_80", 1, str(shared), link=linker)[:4] == b"\x7fELF"
    assert linker.calls == 3 and os.listdir(shared) == []


def test_the_launch_path_loads_a_cubin_or_falls_back_to_ptx(small_ptx, tmp_path, monkeypatch):
    from jitgrad.backends.cuda import runtime
    from jitgrad.config import config
    monkeypatch.setattr(config, "cache_dir", _private_dir(tmp_path))
    assert runtime.module_image(small_ptx["sm_90"], "sm_90", 13000)[:4] == b"\x7fELF"
    assert runtime.module_image(small_ptx["sm_90"], "sm_1000", 13000) == small_ptx["sm_90"].encode() + b"\0"
