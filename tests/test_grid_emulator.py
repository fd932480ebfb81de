"""The grid emulator (device "cuda-emulator") runs the CUDA backend's launch functions on
the host, thread indices coming from a loop over a small grid (3 blocks of 32 threads,
so every grid-stride loop over more than 96 items wraps; single-thread launches run on
2 blocks of 4 threads, where all but thread 0 must do nothing), with a workspace full
of garbage. Everything is compared with the CPU backend: every primitive's op spec,
fused programs, reductions over many blocks, matrix products, and the fuzzer's programs.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import jitgrad
from jitgrad.backends import backend_for
from jitgrad.backends.cuda import lapack as cuda_lapack
from jitgrad.errors import JitgradError, UnsupportedOperationError
from jitgrad.primitives.kernel_kind import KernelKind
from jitgrad.primitives.lapack import LAPACK_KERNEL
from jitgrad.passes.lower_complex import LowerComplex

from test_primitive_rules import SPECS

EMULATOR = "cuda-emulator"


def _has_no_cuda_kernel(fn) -> str | None:
    """The name of an op whose kernel kind has no CUDA emitter, if any."""
    for op in fn.walk():
        lowering = op.opdef.lowering
        if isinstance(lowering, KernelKind) and "cuda" not in type(lowering).emitters:
            return op.name
        if lowering is LAPACK_KERNEL and not cuda_lapack.has_kernel(op):
            return op.name
    return None


def assert_same(got, expected, dtype) -> None:
    """Integers and bools bit for bit; floats to a few ulp (the emulator calls scalar
    libm where the CPU calls libmvec's vector variants), NaN where NaN."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if np.issubdtype(got.dtype, np.inexact) or got.dtype.kind == "V":
        g, e = got.astype(np.float64), expected.astype(np.float64)
        tol = {8: 1e-13, 4: 1e-6}.get(got.dtype.itemsize, 1e-2)
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_every_primitive_agrees_with_the_cpu(spec):
    fn = LowerComplex().run(spec.function())        # backends compute complex values as real pairs
    missing = _has_no_cuda_kernel(fn)
    if missing is not None:
        with pytest.raises(UnsupportedOperationError, match=f"{missing} has no kernel for device 'cuda'"):
            backend_for(EMULATOR).compile(fn)
        return
    args = spec.args()
    expected = backend_for("cpu").compile(fn)(args)
    got = backend_for(EMULATOR).compile(fn)(args)
    lapack = next((op for op in fn.walk() if op.opdef.lowering is LAPACK_KERNEL), None)
    if lapack is not None:       # generated kernels, not LAPACK: each family says how they agree
        family = importlib.import_module(f"test_cuda_{cuda_lapack.FAMILIES[lapack.name]}")
        family.assert_agrees(lapack, got, expected)
        return
    for g, e, t in zip(got, expected, fn.output_types, strict=True):
        assert_same(g, e, t.dtype)


def _w1(x):
    return np.sum(np.sin(x) * np.exp(-x * x) + np.tanh(x))


def _both(fun, *args, **jit_kwargs):
    return jitgrad.jit(fun, **jit_kwargs)(*args), jitgrad.jit(fun, device=EMULATOR, **jit_kwargs)(*args)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_full_reduction_over_many_blocks_and_its_gradient(dtype):
    """20 000 items: three first-pass blocks of 8192 on 96 threads, then the second pass."""
    x = np.random.default_rng(0).standard_normal(20_000).astype(dtype)
    cpu, emulated = _both(_w1, x)
    assert_same(emulated, cpu, dtype)
    cpu_grad = jitgrad.grad(_w1)(x)
    emulated_grad = jitgrad.jit(jitgrad.grad(_w1), device=EMULATOR)(x)
    assert_same(emulated_grad, cpu_grad, dtype)


def test_reductions_are_bit_identical_run_to_run():
    x = np.random.default_rng(1).standard_normal(50_000)
    f = jitgrad.jit(lambda x: (np.sum(x * x), np.max(x), np.sum(x.reshape(50, 1000), axis=1)), device=EMULATOR)
    first, second = f(x), f(x.copy())
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()
    assert first[1] == np.max(x)
    np.testing.assert_allclose(first[2], x.reshape(50, 1000).sum(axis=1), rtol=1e-12)


def test_partial_reductions_trailing_and_leading_axes():
    x = np.random.default_rng(2).standard_normal((130, 7, 11))
    fun = lambda x: (np.sum(x, axis=(1, 2)), np.max(x, axis=0), np.sum(x, axis=1), np.min(x.T, axis=2))
    for c, e in zip(*_both(fun, x)):
        assert_same(e, c, np.float64)


def test_fused_maps_gathers_and_broadcasts_wrap_the_grid():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((40, 30)), rng.standard_normal(30)
    fun = lambda x, y: (np.maximum(x, y) * np.cos(x.T).T, x[::2, 1:] + 1.0, np.where(x > 0, x, y) ** 2,
                        np.concatenate([x, x[:3]], axis=0), np.pad(x, ((1, 2), (0, 3))))
    for c, e in zip(*_both(fun, x, y)):
        assert_same(e, c, np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matrix_products_plain_transposed_and_batched(dtype):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((37, 19)).astype(dtype), rng.standard_normal((19, 23)).astype(dtype)
    c = rng.standard_normal((3, 23, 19)).astype(dtype)
    fun = lambda a, b, c: (a @ b, b.T @ a.T, np.einsum("bij,kj->bik", c, a), np.einsum("ij,jk->", a, b))
    for got, want in zip(*_both(fun, a, b, c)):
        np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == np.float64 else 2e-5, atol=1e-12 if
                                   dtype == np.float64 else 1e-4)


def test_integer_and_narrow_float_programs():
    rng = np.random.default_rng(5)
    i = rng.integers(-50, 50, 500)
    h = rng.standard_normal(500).astype(np.float16)
    fun = lambda i, h: (i // 7, i % -3, np.sum(i), np.sum(h), np.exp(h), (i > 3) & (i < 40))
    for c, e in zip(*_both(fun, i, h)):
        assert_same(e, c, c.dtype)


def test_the_emulator_shows_its_llvm_and_launches():
    lowered = jitgrad.jit(_w1, device=EMULATOR).lower(np.ones(10))
    assert "llvm" in lowered.stage_names()
    text = lowered.as_text("llvm")
    assert ".launch" in text and "grid" in text


FUZZ_PROGRAMS = 12


def test_fuzzer_programs_agree_with_the_cpu():
    """Random programs of the differential fuzzer (seeded): the emulator gives the CPU's
    results, or the same error."""
    from fuzz import program_for
    compared = 0
    for index in range(FUZZ_PROGRAMS):
        program = program_for(20261201, index)
        fun = program.function()
        try:
            expected = jitgrad.jit(fun)(*program.inputs)
        except JitgradError as err:
            with pytest.raises(type(err)):
                jitgrad.jit(fun, device=EMULATOR)(*program.inputs)
            continue
        try:
            got = jitgrad.jit(fun, device=EMULATOR)(*program.inputs)
        except UnsupportedOperationError as err:
            assert "has no kernel for device 'cuda'" in str(err)
            continue
        for g, e in zip(jitgrad.tree.leaves(got), jitgrad.tree.leaves(expected), strict=True):
            assert_same(g, e, np.asarray(e).dtype)
        compared += 1
    assert compared >= FUZZ_PROGRAMS // 2
