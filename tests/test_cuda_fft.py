"""The CUDA kernels of fft_c2c, fft_r2c and fft_c2r (jitgrad/backends/cuda/fft_lines.py),
checked without a GPU: the grid emulator (3 blocks of 32 threads, a workspace full of
garbage) against numpy.fft and against the CPU backend (NumPy's pocketfft loops), on
every kind of length (1, 2-3-5 smooth, generic prime radices, Bluestein), every layout
(the axis first, in the middle, last; more lines than the grid has threads; empty
batches), both directions, scales, float64 and float32; the Hermitian rules of c2r; the
accuracy against an extended-precision DFT next to pocketfft's; gradients; and the PTX of
the adversarial programs through ptxas (in a subprocess: an LLVM abort fails a test, not
the run).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass

import mpmath
import numpy as np
import pytest

import jitgrad
from jitgrad.backends import backend_for
from jitgrad.backends.cuda import ptx as ptx_tools
from jitgrad.backends.cuda.fft_lines import bluestein_tables, exact_roots, line_plan, prime_factors
from jitgrad.ir import DType, TensorType
from jitgrad.primitives import Primitive
from jitgrad.primitives import fft as K
from jitgrad.tracing.tracer import apply

from helpers import build

EMULATOR = "cuda-emulator"
HERE = os.path.dirname(os.path.abspath(__file__))


def bind(name, *operands, **attrs):
    return Primitive.all[name].bind(*operands, **attrs)


# --------------------------------------------------------------------------- the plan and the tables

def test_line_plans_follow_pocketfft_and_cover_the_length():
    for n in [*range(1, 120), 1000, 1009, 2018, 4096, 7 * 7 * 11, 1009 * 1009]:
        plan = line_plan(n)
        assert math.prod(plan.radices) == plan.length
        if plan.bluestein:
            assert plan.length >= 2 * n - 1 and max(plan.radices) <= 5
            assert n >= 50 and max(prime_factors(n)) ** 2 > n
        else:
            assert plan.length == n
    assert not line_plan(47).bluestein and line_plan(47).radices == (47,)         # short: one generic stage
    assert line_plan(97).bluestein and line_plan(1009).bluestein                  # large primes
    assert line_plan(1009 * 1009).radices == (1009, 1009)                          # p * p <= n: generic stages
    assert line_plan(2 * 7 * 7).radices == (2, 7, 7)
    assert line_plan(1000).radices == (5, 5, 5, 2, 2, 2)


@pytest.mark.parametrize("n", [3, 5, 7, 12, 97, 200, 2025])
def test_roots_are_correctly_rounded_and_exactly_symmetric(n):
    """Within 0.501 ulp of the exact root: the wide evaluation is good to about 1e-4 ulp
    of float64, so only values within that of a rounding tie may go the other way."""
    mpmath.mp.prec = 120
    for dtype in (DType.f64, DType.f32):
        roots = exact_roots(n, dtype)
        for k in range(n):
            turns = mpmath.mpf(-2 * k) / n          # the angle over pi: quarter turns exact
            for part, exact in enumerate((mpmath.cospi(turns), mpmath.sinpi(turns))):
                value = roots[k, part]
                below, above = np.nextafter(value, -np.inf), np.nextafter(value, np.inf)
                ulp = min(float(value) - float(below), float(above) - float(value))
                # correctly rounded, but for ties closer than a thousandth of an ulp
                assert abs(mpmath.mpf(float(value)) - exact) <= 0.501 * ulp, (n, k, part, dtype)
        np.testing.assert_array_equal(roots[1:][::-1, 0], roots[1:, 0])
        np.testing.assert_array_equal(roots[1:][::-1, 1], -roots[1:, 1])


def test_bluestein_tables():
    chirp, kernel = bluestein_tables(97, 200)
    j = np.arange(97)
    np.testing.assert_allclose(chirp[:, 0] + 1j * chirp[:, 1], np.exp(-1j * np.pi * j * j / 97), atol=1e-13)
    # the kernel's inverse transform, times m, is conj(chirp) extended circularly
    back = np.fft.ifft(kernel[:, 0].astype(float) + 1j * kernel[:, 1].astype(float)) * 200
    c = chirp[:, 0].astype(float) + 1j * chirp[:, 1].astype(float)
    np.testing.assert_allclose(back[:97], np.conj(c), atol=1e-13)
    np.testing.assert_allclose(back[200 - 96:], np.conj(c[1:][::-1]), atol=1e-13)
    np.testing.assert_allclose(back[97:200 - 96], 0, atol=1e-13)


# --------------------------------------------------------------------------- the emulator vs numpy.fft and the CPU

@dataclass(frozen=True)
class Case:
    """One transform: `kind` (c2c forward or backward, r2c, c2r) of an operand of `shape`
    (the complex values' shape for complex operands) along `axis`, length `n`."""
    kind: str
    shape: tuple
    axis: int
    n: int
    scale: float = 1.0

    def in_type(self, dtype: DType) -> TensorType:
        return TensorType(self.shape if self.kind == "r2c" else (*self.shape, 2), dtype)

    def bind(self, x):
        if self.kind == "r2c":
            return bind("fft_r2c", x, axis=self.axis, scale=self.scale)
        if self.kind == "c2r":
            return bind("fft_c2r", x, axis=self.axis, n=self.n, scale=self.scale)
        return bind("fft_c2c", x, axis=self.axis, forward=self.kind == "forward", scale=self.scale)

    def numpy(self, x: np.ndarray) -> np.ndarray:
        """numpy.fft in float64 (complex results as pairs)."""
        x = x.astype(np.float64)
        if self.kind == "r2c":
            return _pairs(np.fft.rfft(x, axis=self.axis) * self.scale)
        z = x[..., 0] + 1j * x[..., 1]
        if self.kind == "c2r":
            return np.fft.irfft(z, n=self.n, axis=self.axis, norm="forward") * self.scale
        if self.kind == "forward":
            return _pairs(np.fft.fft(z, axis=self.axis) * self.scale)
        return _pairs(np.fft.ifft(z, axis=self.axis, norm="forward") * self.scale)


def _pairs(z):
    return np.stack([z.real, z.imag], axis=-1)


def _along(shape, axis, n):
    return tuple(n if k == axis else d for k, d in enumerate(shape))


LAYOUT_CASES = [
    Case("forward", (1009, 2), 0, 1009),                  # Bluestein, the axis first
    Case("backward", (5, 49, 21), 1, 49, 1 / 49),         # generic radix 7 x 7; 105 lines wrap the grid
    Case("forward", (121, 3), 0, 121, 0.5),               # generic 11 x 11, strided
    Case("backward", (100, 6), 1, 6),                     # many short lines, the axis last
    Case("forward", (3, 97), 1, 97, 1 / math.sqrt(97)),   # Bluestein, contiguous
    Case("forward", (4, 1), 1, 1),                        # length 1
    Case("forward", (0, 5), 1, 5),                        # no lines
    Case("r2c", (98, 4), 0, 98),                          # even, generic radices
    Case("r2c", (2, 97, 3), 1, 97, 0.25),                 # odd, Bluestein
    Case("r2c", (3, 1), 1, 1),
    Case("r2c", (7, 2), 1, 2),
    Case("c2r", (3, 7, 2), 1, 12, 1 / 12),                # even n: the Nyquist term
    Case("c2r", (49, 2), 0, 97),                          # odd n, Bluestein
    Case("c2r", (1, 4), 0, 1),
    Case("c2r", (2, 2), 1, 2),
    Case("c2r", (1000, 2), 0, 1998),                      # Bluestein from a half spectrum
    Case("c2r", (130, 4), 1, 7),                          # 130 lines wrap the grid
]


def _program(cases, dtype: DType):
    fn = build(f"fft_{dtype}", [case.in_type(dtype) for case in cases],
               lambda *xs: [case.bind(x) for case, x in zip(cases, xs, strict=True)])
    return fn


def _inputs(cases, dtype: DType, seed: int):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(case.in_type(dtype).shape).astype(dtype.numpy) for case in cases]


def _tolerance(dtype: DType, n: int) -> float:
    """Max error over max |reference|: a few eps per stage (log2 n), twice for Bluestein."""
    return 8 * np.finfo(dtype.numpy).eps * (2 + math.log2(max(line_plan(n).length, 2)))


@pytest.mark.parametrize("dtype", [DType.f64, DType.f32])
def test_emulator_matches_numpy_and_the_cpu_on_adversarial_layouts(dtype):
    fn = _program(LAYOUT_CASES, dtype)
    args = _inputs(LAYOUT_CASES, dtype, 7)
    got = backend_for(EMULATOR).compile(fn)(args)
    cpu = backend_for("cpu").compile(fn)(args)
    for case, x, g, c in zip(LAYOUT_CASES, args, got, cpu, strict=True):
        expected = case.numpy(x)
        assert g.dtype == dtype.numpy and g.shape == expected.shape == c.shape, case
        assert np.all(np.isfinite(g)), case
        scale = max(np.max(np.abs(expected), initial=0.0), 1e-300)
        tol = _tolerance(dtype, case.n)
        assert np.max(np.abs(g - expected), initial=0.0) <= tol * scale, case
        assert np.max(np.abs(g.astype(np.float64) - c), initial=0.0) <= tol * scale, case


def test_c2r_ignores_the_imaginary_parts_of_the_zero_and_nyquist_terms_only():
    cases = [Case("c2r", (3, 7, 2), 1, 12), Case("c2r", (3, 7, 2), 1, 13), Case("c2r", (2, 49), 1, 97)]
    fn = _program(cases, DType.f64)
    emulator = backend_for(EMULATOR).compile(fn)
    args = _inputs(cases, DType.f64, 3)
    base = emulator(args)
    for k, (case, x) in enumerate(zip(cases, args, strict=True)):
        last = case.shape[case.axis] - 1
        for position, ignored in ((0, True), (last, case.n % 2 == 0), (1, False)):
            changed = [a.copy() for a in args]
            index = [slice(None)] * x.ndim
            index[case.axis], index[-1] = position, 1
            changed[k][tuple(index)] += 1.0
            after = emulator(changed)[k]
            if ignored:
                np.testing.assert_array_equal(after, base[k])
            else:
                assert np.max(np.abs(after - base[k])) > 1e-3
            np.testing.assert_allclose(after, case.numpy(changed[k]), atol=1e-13 * max(1.0, np.abs(after).max()))


def _exact_dft(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The forward DFT along the last axis in extended precision (real, imaginary)."""
    n = z.shape[-1]
    wide = np.longdouble
    turns = ((np.arange(n)[:, None] * np.arange(n)[None, :]) % n).astype(wide) / wide(n)
    angle = -2 * wide("3.14159265358979323846264338327950288") * turns
    c, s = np.cos(angle), np.sin(angle)
    re, im = z.real.astype(wide), z.imag.astype(wide)
    return re @ c.T - im @ s.T, re @ s.T + im @ c.T


ACCURACY_LENGTHS = [1, 2, 7, 12, 97, 128, 1000, 1009]


def test_accuracy_is_pocketffts():
    """Relative rms error against an extended-precision DFT: at most (1 + log2 n) / 2
    eps, and at most twice pocketfft's on the same data plus half an eps, in float64
    and float32."""
    for n, plan, *errors in accuracy_table():
        for ours, pocketfft in (errors[0:2], errors[2:4]):
            assert ours <= (1 + math.log2(n)) / 2, (n, plan, ours)
            assert ours <= 2 * pocketfft + 0.5, (n, plan, ours, pocketfft)


def accuracy_table() -> list[tuple[int, str, float, float, float, float]]:
    """(n, plan, then the relative rms errors in eps of the CUDA kernel and of pocketfft
    in float64 and in float32) for ACCURACY_LENGTHS: `python tests/test_cuda_fft.py
    accuracy` prints it."""
    errors = {}
    for dtype in (DType.f64, DType.f32):
        cases = [Case("forward", (4, n), 1, n) for n in ACCURACY_LENGTHS]
        fn, args = _program(cases, dtype), _inputs(cases, dtype, 11)
        got, cpu = backend_for(EMULATOR).compile(fn)(args), backend_for("cpu").compile(fn)(args)
        eps = float(np.finfo(dtype.numpy).eps)
        for case, x, g, c in zip(cases, args, got, cpu, strict=True):
            re, im = _exact_dft(x[..., 0].astype(np.float64) + 1j * x[..., 1])
            norm = np.sqrt(np.mean(re ** 2 + im ** 2))
            errors[case.n, dtype] = [float(np.sqrt(np.mean((y[..., 0] - re) ** 2 + (y[..., 1] - im) ** 2)) / norm)
                                     / eps for y in (g, c)]
    rows = []
    for n in ACCURACY_LENGTHS:
        plan = line_plan(n)
        name = (f"Bluestein m={plan.length}: " if plan.bluestein else "") + "x".join(map(str, plan.radices))
        rows.append((n, name or "identity", *errors[n, DType.f64], *errors[n, DType.f32]))
    return rows


class _BoundsChecked:
    """While active, every load and store the CUDA emitters generate into a buffer of
    known size (an operand, a result, scratch, a constant table) is preceded by a check of
    its element offset; an offset outside the buffer calls back into Python, which
    records (buffer size in bytes, offset, element size)."""

    def __init__(self, monkeypatch):
        from llvmlite import binding as llvm
        from jitgrad.backends.cpu.llvm_support import I64, VOID, declare, index
        from jitgrad.backends.cuda.codegen import CUDAFunctionEmitter
        from jitgrad.backends.cuda.scalar import CUDAScalarContext
        self.violations: list[tuple[int, int, int]] = []
        self._callback = ctypes_callback(lambda size, offset, item: self.violations.append((size, offset, item)))
        llvm.add_symbol("test_cuda_fft.out_of_bounds", ctypes_address(self._callback))
        sizes: dict[int, int] = {}

        def remember(method, nbytes_of):
            def wrapped(self_, *args):
                pointer = method(self_, *args)
                sizes[id(pointer)] = nbytes_of(*args)
                return pointer
            return wrapped
        monkeypatch.setattr(CUDAFunctionEmitter, "pointer",
                            remember(CUDAFunctionEmitter.pointer, lambda value: value.type.nbytes))
        monkeypatch.setattr(CUDAFunctionEmitter, "scratch", remember(CUDAFunctionEmitter.scratch, lambda n: n))
        monkeypatch.setattr(CUDAFunctionEmitter, "constant_buffer",
                            remember(CUDAFunctionEmitter.constant_buffer, lambda array: array.nbytes))

        def check(ctx, buffer, offset, dtype) -> None:
            nbytes = sizes.get(id(buffer))
            if nbytes is None:                  # a private array of the kernel
                return
            b, item = ctx.builder, dtype.itemsize
            outside = b.or_(b.icmp_signed("<", offset, index(0)),
                            b.icmp_signed(">", b.mul(offset, index(item)), index(nbytes - item)))
            with b.if_then(outside, likely=False):
                report = declare(ctx.module, "test_cuda_fft.out_of_bounds", VOID, [I64, I64, I64])
                b.call(report, [index(nbytes), offset, index(item)])

        load, store = CUDAScalarContext.load, CUDAScalarContext.store

        def checked_load(ctx, buffer, offset, dtype):
            check(ctx, buffer, offset, dtype)
            return load(ctx, buffer, offset, dtype)

        def checked_store(ctx, buffer, offset, x, dtype):
            check(ctx, buffer, offset, dtype)
            return store(ctx, buffer, offset, x, dtype)
        monkeypatch.setattr(CUDAScalarContext, "load", checked_load)
        monkeypatch.setattr(CUDAScalarContext, "store", checked_store)


def ctypes_callback(fun):
    import ctypes
    return ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)(fun)


def ctypes_address(callback) -> int:
    import ctypes
    return ctypes.cast(callback, ctypes.c_void_p).value


def test_every_access_stays_inside_its_buffer(monkeypatch):
    cases = [Case("forward", (3, 97), 1, 97), Case("backward", (5, 49, 21), 1, 49), Case("r2c", (98, 4), 0, 98),
             Case("c2r", (3, 7, 2), 1, 12), Case("c2r", (49, 2), 0, 97), Case("c2r", (2, 4), 1, 7),
             Case("forward", (4, 1), 1, 1), Case("r2c", (100, 6), 1, 6)]
    checks = _BoundsChecked(monkeypatch)
    fn = _program(cases, DType.f32)
    args = _inputs(cases, DType.f32, 13)
    got = backend_for(EMULATOR).compile(fn)(args)
    assert checks.violations == []
    for case, x, g in zip(cases, args, got, strict=True):
        np.testing.assert_allclose(g, case.numpy(x), atol=1e-5 * max(1.0, np.abs(g).max()))
    # the check itself fires: an access one element past a result is reported
    from jitgrad.backends.cuda.scalar import CUDAScalarContext
    store = CUDAScalarContext.store
    monkeypatch.setattr(CUDAScalarContext, "store",
                        lambda ctx, buffer, offset, *rest: store(ctx, buffer, ctx.index_add(offset, ctx.index_const(1)),
                                                                 *rest))
    backend_for(EMULATOR).compile(_program(cases[-1:], DType.f32))(args[-1:])
    assert checks.violations


# --------------------------------------------------------------------------- gradients

def _loss(a, b, c, w):
    """Every transform and its transpose: c2c backward along the first axis, r2c along
    the middle one (odd, Bluestein), c2r along the last (even, generic radix 7)."""
    x = apply(K.fft_c2c, (a, 0, False, 0.5))
    y = apply(K.fft_r2c, (b, 1, 1.0))
    z = apply(K.fft_c2r, (c, 1, 14, 1 / 14))
    return np.sum(np.sin(x) * w) + np.sum(np.cos(y) * y) + np.sum(z * z * z)


def test_gradients_on_the_emulator_match_the_cpu():
    rng = np.random.default_rng(5)
    args = (rng.standard_normal((7, 3, 2)), rng.standard_normal((2, 97, 3)), rng.standard_normal((3, 8, 2)),
            rng.standard_normal((7, 3, 2)))
    grad = jitgrad.grad(_loss, argnums=(0, 1, 2))
    expected = jitgrad.jit(grad)(*args)
    got = jitgrad.jit(grad, device=EMULATOR)(*args)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-11, atol=1e-11 * np.abs(e).max())
    # and a second-order one: the Hessian-vector product of the loss in its first argument
    v = rng.standard_normal((7, 3, 2))
    hvp = lambda a: jitgrad.jvp(lambda a: jitgrad.grad(_loss)(a, *args[1:]), (a,), (v,))[1]  # noqa: E731
    np.testing.assert_allclose(jitgrad.jit(hvp, device=EMULATOR)(args[0]), jitgrad.jit(hvp)(args[0]),
                               rtol=1e-11, atol=1e-11)


# --------------------------------------------------------------------------- PTX

PTX_PROGRAMS = [
    (DType.f64, [Case("forward", (1009, 2), 0, 1009), Case("backward", (5, 49, 21), 1, 49, 1 / 49),
                 Case("c2r", (3, 7, 2), 1, 12, 1 / 12), Case("forward", (4, 1), 1, 1)]),
    (DType.f32, [Case("r2c", (2, 97, 3), 1, 97, 0.25), Case("c2r", (49, 2), 0, 97),
                 Case("forward", (121, 3), 0, 121, 0.5)]),
]
"""Every code path once: Bluestein, generic and unrolled radices, strided and contiguous
lines, each kind, length 1, both dtypes."""


def emit_ptx(out_dir: str) -> None:
    """(In a subprocess.) The adversarial programs' launches in one module, as PTX per
    architecture, and the kernels' names."""
    from llvmlite import ir
    backend = backend_for("cuda")
    module = ir.Module(name="fft")
    ptx_tools.prepare_module(module)
    names = []
    for k, (dtype, cases) in enumerate(PTX_PROGRAMS):
        _, _, launches = backend.build(_program(cases, dtype), module=module, symbol=f"fft_{k}")
        names.extend(launch.name for launch in launches)
    text = str(module)
    for arch in ptx_tools.DEFAULT_ARCHS:
        with open(os.path.join(out_dir, f"{arch}.ptx"), "w") as f:
            f.write(ptx_tools.emit_ptx(text, names, arch))
    with open(os.path.join(out_dir, "names.txt"), "w") as f:
        f.write("\n".join(names))


def test_ptxas_assembles_the_adversarial_programs_without_spills(tmp_path):
    run = subprocess.run([sys.executable, os.path.abspath(__file__), "emit", str(tmp_path)], cwd=HERE,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"PTX generation failed (exit {run.returncode}):\n{run.stderr[-4000:]}"
    names = (tmp_path / "names.txt").read_text().split()
    assert len(names) == sum(len(cases) for _, cases in PTX_PROGRAMS)
    for arch in ptx_tools.DEFAULT_ARCHS:
        ptx = (tmp_path / f"{arch}.ptx").read_text()
        for name in names:
            assert f".entry {name}(" in ptx
        assert ".extern .func" not in ptx
        assert ptx_tools.ptxas_check(ptx, arch) == []


if __name__ == "__main__" and sys.argv[1:2] == ["emit"]:
    sys.path.insert(0, HERE)
    emit_ptx(sys.argv[2])
elif __name__ == "__main__" and sys.argv[1:2] == ["accuracy"]:
    print("relative rms error / eps vs an extended-precision DFT (4 random complex lines)")
    print(f"{'n':>5}  {'plan':<28} {'f64 cuda':>9} {'pocketfft':>9} {'f32 cuda':>9} {'pocketfft':>9}")
    for n, name, *values in accuracy_table():
        print(f"{n:>5}  {name:<28}" + "".join(f"{v:>10.2f}" for v in values))
