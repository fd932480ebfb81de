"""The discrete Fourier transform kernel: one primitive, `fft`, on pairs of floats.

`fft(x, roots)` transforms the last-but-one axis of `x: f[..., n, 2]` (complex numbers as
(real, imaginary) pairs, NumPy's memory layout) without normalization:
y[k] = sum_j x[j] exp(-2 pi i j k / n). `roots: f[n, 2]` holds exp(-2 pi i k / n), computed
in float64 at trace time (`roots_of_unity`) and rounded once to the operand's dtype, so the
kernel's twiddle factors are as exact as the dtype allows. `n` has no prime factor above 5
(`is_smooth`): the kernel is a mixed-radix (2, 3, 5) Stockham transform. Every other length,
the inverse, real transforms, norms and axes are built on it at trace time
(jitgrad/tracing/numpy_fft.py: Bluestein's chirp transform for other lengths), from
primitives with derivatives of their own.

The transform works on real pairs so that it is a real primitive like any other (the
lower-complex pass and the backends see floats only). It is linear in `x`; its transpose
is the transform with conjugated roots (the transpose of the real form of a complex
matrix F = A + iB is A - iB's: the DFT matrix is symmetric), written as conj . fft . conj.
"""
from __future__ import annotations

import functools

import numpy as np

from jitgrad.errors import DTypeError, ShapeError
from jitgrad.ir import DType, TensorType
from .base import Primitive, UndefinedPrimal, defjvp, deftranspose
from .kernel_kind import KernelKind
from .elementwise import mul
from .structural import broadcast_in_dim, constant


class FftKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.fft:emit_fft"}


RADICES = (5, 3, 2)
"""The butterflies of the kernel; a length is transformed directly when it is a product of them."""


def radix_plan(n: int) -> tuple[int, ...] | None:
    """The radices of the Stockham stages for length `n` (their product), or None when `n`
    has a prime factor above 5."""
    plan = []
    for radix in RADICES:
        while n % radix == 0:
            plan.append(radix)
            n //= radix
    return tuple(plan) if n == 1 else None


def is_smooth(n: int) -> bool:
    return n >= 1 and radix_plan(n) is not None


@functools.lru_cache(maxsize=64)
def _roots64(n: int) -> np.ndarray:
    """exp(-2 pi i k / n) in float64, each from the angle's exactly reduced fraction of a turn
    (k mod n, mirrored into the first octant), so the roots are symmetric to the last bit."""
    k = np.arange(n)
    angle = -2 * np.pi * k / n
    roots = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    # exact values where the angle is a multiple of a quarter turn
    for quarter, value in ((0, (1.0, 0.0)), (1, (0.0, -1.0)), (2, (-1.0, 0.0)), (3, (0.0, 1.0))):
        hits = (4 * k) == quarter * n
        roots[hits] = value
    roots.setflags(write=False)
    return roots


def roots_of_unity(n: int, dtype: DType) -> np.ndarray:
    """The `roots` operand of `fft` for length `n` and a float dtype."""
    return _roots64(n).astype(dtype.numpy)


def _fft_infer(x: TensorType, roots: TensorType):
    if x.dtype not in (DType.f32, DType.f64) or roots.dtype != x.dtype:
        raise DTypeError(f"fft needs float32 or float64 pairs and roots of the same dtype, got {x.dtype} "
                         f"and {roots.dtype}")
    if x.ndim < 2 or x.shape[-1] != 2:
        raise ShapeError(f"fft needs an operand of shape (..., n, 2), got {x.shape}")
    n = x.shape[-2]
    if roots.shape != (n, 2):
        raise ShapeError(f"fft of length {n} needs roots of shape ({n}, 2), got {roots.shape}")
    if not is_smooth(n):
        raise ShapeError(f"fft's kernel takes lengths whose prime factors are 2, 3 and 5, got {n}")
    return [x]


def _fft_impl(x, roots):
    z = x[..., 0].astype(np.float64) + 1j * x[..., 1].astype(np.float64)
    y = np.fft.fft(z, axis=-1)
    return np.stack([y.real, y.imag], axis=-1).astype(x.dtype)


fft_p = Primitive("fft", _fft_infer, _fft_impl,
                  doc="The unnormalized DFT of (real, imaginary) pairs along the last-but-one axis, "
                      "for lengths with prime factors 2, 3, 5; `roots` are exp(-2 pi i k / n).")
fft_p.lowering = FftKernel()


def fft(x, roots):
    return fft_p.bind(x, roots)


def conjugate_pairs(x):
    """(re, im) -> (re, -im) on the last axis."""
    signs = constant(np.array([1.0, -1.0], x.type.dtype.numpy))
    return mul(x, broadcast_in_dim(signs, x.type.shape, (x.type.ndim - 1,)))


def _fft_transpose(ct, x, roots):
    if isinstance(roots, UndefinedPrimal):
        raise ValueError("fft is not linear in its roots")
    return [conjugate_pairs(fft(conjugate_pairs(ct), roots)), None]


defjvp(fft_p, lambda t, x, roots: fft(t, roots), None)
deftranspose(fft_p, _fft_transpose, linear_operands=(0,))
