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

Where NumPy's own pocketfft loops are available (`library_loops`), the CPU uses three
more primitives instead, one NumPy gufunc call each, along any axis and of any length
(pocketfft plans every length itself): `fft_c2c` (complex to complex, either direction),
`fft_r2c` (real input, the n // 2 + 1 non-negative frequencies: half the work of a complex
transform) and `fft_c2r` (its inverse: a Hermitian half-spectrum to n real values). They
work on (real, imaginary) pairs too, carry NumPy's normalization factor as `scale` (the
`fct` NumPy passes the same loop, so results are NumPy's to the bit) and transpose into
each other (see `_c2c_transpose`, `_r2c_transpose`, `_c2r_transpose`).
"""
from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import numpy as np

from jitgrad.errors import DTypeError, ShapeError
from jitgrad.ir import DType, TensorType
from .base import Primitive, UndefinedPrimal, defjvp, deflinear, deftranspose
from .kernel_kind import KernelKind
from .elementwise import mul
from .structural import broadcast_in_dim, constant, transpose


class FftKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.fft:emit_fft", "cuda": "jitgrad.backends.cuda.fft:emit_fft"}


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


# --------------------------------------------------------------------------- NumPy's pocketfft loops

class LibraryKernel(KernelKind):
    """One call of a NumPy pocketfft gufunc loop per kernel (jitgrad/backends/cpu/fft.py);
    on CUDA devices generated transforms of any length (jitgrad/backends/cuda/fft_lines.py)."""
    emitters = {"cpu": "jitgrad.backends.cpu.fft:emit_library_transform",
                "cuda": "jitgrad.backends.cuda.fft_lines:emit_transform"}


@dataclass(frozen=True)
class LibraryLoops:
    """The C inner loops of NumPy's `numpy.fft._pocketfft_umath` gufuncs for one dtype:
    `void loop(char **args, npy_intp const *dimensions, npy_intp const *steps, void *data)`,
    NumPy's stable ufunc-loop ABI, with args (input, normalization factor, output),
    dimensions (rows, input length, output length) and steps (the three row strides, then
    the input's and output's element strides, in bytes). `c2c` reads the direction from
    `*(bool *)data` (true: forward); the real loops take no data."""
    c2c: int
    r2c_even: int
    r2c_odd: int
    c2r: int


_LOOP_UFUNCS = {"c2c": ("fft", "D", "d", "D"), "r2c_even": ("rfft_n_even", "d", "d", "D"),
                "r2c_odd": ("rfft_n_odd", "d", "d", "D"), "c2r": ("irfft", "D", "d", "d")}
"""Our name of each loop: NumPy's gufunc and its float64 type signature (float32's is the
same with f and F)."""


class _UfuncHeader(ctypes.Structure):
    """The head of NumPy's `PyUFuncObject` (numpy/ufuncobject.h, part of NumPy's C ABI) up
    to `types`, after the object header (`object.__basicsize__` bytes: 16 in a default
    build, more in a free-threaded one)."""
    _fields_ = [("object_head", ctypes.c_byte * object.__basicsize__), ("nin", ctypes.c_int),
                ("nout", ctypes.c_int), ("nargs", ctypes.c_int), ("identity", ctypes.c_int),
                ("functions", ctypes.c_void_p), ("data", ctypes.c_void_p), ("ntypes", ctypes.c_int),
                ("reserved1", ctypes.c_int), ("name", ctypes.c_char_p), ("types", ctypes.c_void_p)]


def _loop_address(ufunc, signature: str, expect_direction: bool | None) -> int | None:
    """The address of `ufunc`'s loop for `signature` (NumPy type characters, "Dd->D"), read
    from the ufunc object after checking that the struct read agrees with what Python sees
    (name, argument counts, every row of the type table) and, for the complex loop, that
    its data is the direction flag it should be; None when anything disagrees. The counts
    are compared first, so a layout that is not this one fails before any pointer in it
    is followed."""
    header = _UfuncHeader.from_address(id(ufunc))
    if (header.nin, header.nout, header.ntypes) != (2, 1, len(ufunc.types)) or \
            header.name != ufunc.__name__.encode() or not header.functions or not header.types:
        return None
    pointer = ctypes.sizeof(ctypes.c_void_p)
    table = (ctypes.c_char * (3 * header.ntypes)).from_address(header.types).raw
    for k, python_types in enumerate(ufunc.types):
        if list(table[3 * k: 3 * k + 3]) != [np.dtype(c).num for c in python_types.replace("->", "")]:
            return None
    if signature not in ufunc.types:
        return None
    k = ufunc.types.index(signature)
    if expect_direction is not None:
        flag = ctypes.c_void_p.from_address(header.data + pointer * k).value if header.data else None
        if not flag or ctypes.c_bool.from_address(flag).value != expect_direction:
            return None
    return ctypes.c_void_p.from_address(header.functions + pointer * k).value or None


@functools.lru_cache(maxsize=None)
def library_loops(dtype: DType) -> LibraryLoops | None:
    """NumPy's pocketfft loops for float32 or float64 (by their real dtype), or None where
    this NumPy has none (NumPy 1.x, or a layout that fails the checks): then every
    transform is built on the `fft` kernel."""
    if dtype not in (DType.f32, DType.f64):
        return None
    try:
        from numpy.fft import _pocketfft_umath as umath
    except ImportError:
        return None
    forward, backward = getattr(umath, "fft", None), getattr(umath, "ifft", None)
    if not isinstance(backward, np.ufunc) or backward.types != getattr(forward, "types", None):
        return None
    # fft and ifft share their loops; their data pointers are the direction flags
    if _loop_address(backward, "Dd->D" if dtype == DType.f64 else "Ff->F", False) is None:
        return None
    addresses = {}
    for name, (ufunc_name, *types) in _LOOP_UFUNCS.items():
        ufunc = getattr(umath, ufunc_name, None)
        signature = f"{types[0]}{types[1]}->{types[2]}"
        if dtype == DType.f32:
            signature = signature.translate(str.maketrans("dD", "fF"))
        one_axis = isinstance(ufunc, np.ufunc) and ufunc.signature in ("(n),()->(m)", "(m),()->(n)")
        address = _loop_address(ufunc, signature, True if name == "c2c" else None) if one_axis else None
        if address is None:
            return None
        addresses[name] = address
    return LibraryLoops(**addresses)


# --------------------------------------------------------------------------- the library's transforms

LIBRARY_KERNEL = LibraryKernel()


def _float_dtype(name: str, x: TensorType) -> None:
    if x.dtype not in (DType.f32, DType.f64):
        raise DTypeError(f"{name} needs float32 or float64 values, got {x.dtype}")


def _pairs_axis(name: str, x: TensorType, axis: int) -> None:
    """`x` holds (re, im) pairs on its last axis and `axis` is one of the others."""
    if x.ndim < 2 or x.shape[-1] != 2:
        raise ShapeError(f"{name} needs (real, imaginary) pairs, an operand of shape (..., 2), got {x.shape}")
    if not 0 <= axis < x.ndim - 1:
        raise ShapeError(f"{name}: axis {axis} is not an axis of the complex values of shape {x.shape[:-1]}")


def _c2c_infer(x: TensorType, *, axis: int, forward: bool, scale: float):
    _float_dtype("fft_c2c", x)
    _pairs_axis("fft_c2c", x, axis)
    if x.shape[axis] < 1:
        raise ShapeError("an FFT of length 0 is not defined (NumPy raises ValueError)")
    return [x]


def _r2c_infer(x: TensorType, *, axis: int, scale: float):
    _float_dtype("fft_r2c", x)
    if not 0 <= axis < x.ndim or x.shape[axis] < 1:
        raise ShapeError(f"fft_r2c: axis {axis} of shape {x.shape} is no axis of length 1 or more")
    shape = list(x.shape)
    shape[axis] = shape[axis] // 2 + 1
    return [TensorType((*shape, 2), x.dtype)]


def _c2r_infer(x: TensorType, *, axis: int, n: int, scale: float):
    _float_dtype("fft_c2r", x)
    _pairs_axis("fft_c2r", x, axis)
    if n < 1 or x.shape[axis] != n // 2 + 1:
        raise ShapeError(f"fft_c2r of length {n} needs {n // 2 + 1} complex values along axis {axis}, "
                         f"got {x.shape[axis]}")
    shape = list(x.shape[:-1])
    shape[axis] = n
    return [TensorType(tuple(shape), x.dtype)]


def _complex_of(x: np.ndarray) -> np.ndarray:
    return x[..., 0] + 1j * x[..., 1]


def _pairs_of(z: np.ndarray, dtype) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1).astype(dtype)


def _scaled(z: np.ndarray, scale: float) -> np.ndarray:
    return z if scale == 1 else z * z.real.dtype.type(scale)


def _c2c_impl(x, *, axis, forward, scale):
    z = _complex_of(x)
    y = np.fft.fft(z, axis=axis) if forward else np.fft.ifft(z, axis=axis, norm="forward")
    return _pairs_of(_scaled(y, scale), x.dtype)


def _r2c_impl(x, *, axis, scale):
    return _pairs_of(_scaled(np.fft.rfft(x, axis=axis), scale), x.dtype)


def _c2r_impl(x, *, axis, n, scale):
    return _scaled(np.fft.irfft(_complex_of(x), n=n, axis=axis, norm="forward"), scale).astype(x.dtype)


fft_c2c_p = Primitive("fft_c2c", _c2c_infer, _c2c_impl,
                      doc="The DFT of (real, imaginary) pairs along `axis` (forward: exp(-2 pi i jk/n), "
                          "else exp(+2 pi i jk/n)), times `scale`; any length; NumPy's pocketfft on the CPU.")
fft_r2c_p = Primitive("fft_r2c", _r2c_infer, _r2c_impl,
                      doc="The forward DFT of real values along `axis`, its n // 2 + 1 non-negative "
                          "frequencies as (real, imaginary) pairs, times `scale`.")
fft_c2r_p = Primitive("fft_c2r", _c2r_infer, _c2r_impl,
                      doc="The n real values whose Hermitian spectrum has these n // 2 + 1 non-negative "
                          "frequencies (the imaginary parts of the zero and even-n Nyquist terms ignored), "
                          "transformed backward along `axis`, times `scale`.")
for _p in (fft_c2c_p, fft_r2c_p, fft_c2r_p):
    _p.lowering = LIBRARY_KERNEL


def fft_c2c(x, axis: int, forward: bool, scale: float = 1.0):
    return fft_c2c_p.bind(x, axis=axis, forward=bool(forward), scale=float(scale))


def fft_r2c(x, axis: int, scale: float = 1.0):
    return fft_r2c_p.bind(x, axis=axis, scale=float(scale))


def fft_c2r(x, axis: int, n: int, scale: float = 1.0):
    return fft_c2r_p.bind(x, axis=axis, n=n, scale=float(scale))


def _half_spectrum_weights(x, axis: int, n: int, interior: float):
    """x times `interior` at the frequencies 1 .. (n - 1) // 2 along `axis` (both parts),
    which a Hermitian half-spectrum stands for twice; the zero and the even-n Nyquist
    frequencies stand for themselves (weight 1)."""
    m = n // 2 + 1
    weights = np.ones(m)
    weights[1:(n - 1) // 2 + 1] = interior
    if np.all(weights == 1):
        return x
    dtype = x.type.dtype
    return mul(x, broadcast_in_dim(constant(weights.astype(dtype.numpy)), x.type.shape, (axis,)))


# As linear maps of the real floats (the pairing sum(u * v) of the pairs): the transpose
# of the forward transform of pairs is the backward one (the real form of the symmetric
# DFT matrix F transposes to conj(F)); the forward real transform's transpose is the
# backward real one of the cotangent with its doubly counted frequencies halved
# (x_j = s * sum_k Re(ct_k w^-jk), which c2r computes once the interior terms, doubled
# by c2r, are halved), and the backward real transform's is the forward real one with
# those frequencies doubled.
def _c2c_transpose(ct, x, *, axis, forward, scale):
    return [fft_c2c(ct, axis, not forward, scale)]


def _r2c_transpose(ct, x, *, axis, scale):
    n = x.type.shape[axis]
    return [fft_c2r(_half_spectrum_weights(ct, axis, n, 0.5), axis, n, scale)]


def _c2r_transpose(ct, x, *, axis, n, scale):
    return [_half_spectrum_weights(fft_r2c(ct, axis, scale), axis, n, 2.0)]


deflinear(fft_c2c_p, _c2c_transpose)
deflinear(fft_r2c_p, _r2c_transpose)
deflinear(fft_c2r_p, _c2r_transpose)


def _batch_along_axis(prim: Primitive):
    """The vectorizing-map rule: the mapped axis goes first (ahead of the pairs axis, which
    must stay last), and the transform runs along its axis, now one further."""
    def rule(operands, dims, **attrs):
        (x,), (mapped,) = operands, dims
        if mapped != 0:
            x = transpose(x, (mapped, *(k for k in range(x.type.ndim) if k != mapped)))
        return prim.bind(x, **{**attrs, "axis": attrs["axis"] + 1}), 0
    return rule


for _p in (fft_c2c_p, fft_r2c_p, fft_c2r_p):
    _p.batch = _batch_along_axis(_p)
