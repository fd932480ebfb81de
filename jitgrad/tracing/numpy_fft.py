"""numpy.fft from the `fft` kernel (jitgrad/primitives/fft.py) and primitives.

Every transform is built from one complex-to-complex transform along the last axis
(`_transform_last`): axes are moved there and back, lengths cut or zero-padded (`n=`,
`s=`), and the result scaled for `norm=` as NumPy does ("backward": the inverse divides by
n; "ortho": both by sqrt(n); "forward": the forward transform divides by n). Lengths with
prime factors 2, 3 and 5 go to the kernel directly; every other length by Bluestein's
chirp transform (a convolution of two kernel-sized transforms: the chirp's transform is a
float64 constant). Inverse transforms are conj . fft . conj. Real transforms are complex
ones of real input (rfft keeps the first n // 2 + 1 outputs; irfft completes the
Hermitian spectrum and keeps the real part, which ignores the imaginary parts of the zero
and Nyquist terms as NumPy's C2R transform does). Every step has derivatives, so every
function here differentiates to any order, in forward and reverse mode.

On the CPU, where NumPy's pocketfft loops are available (`kernel.library_loops`), every
transform is instead one `fft_c2c`, `fft_r2c` or `fft_c2r` op per axis, along that axis
(no transposes), of any length (no Bluestein), with NumPy's normalization factor passed to
the loop as NumPy passes it (`_library_scale`): the same loop on the same numbers, so the
results are NumPy's to the bit. Several axes chain on (re, im) pairs without converting
back to complex between them.

Result dtypes are NumPy's (float32 input gives complex64, integers complex128), read from
NumPy on a sample of the input dtype.
"""
from __future__ import annotations

import functools
import math
import operator

import numpy as np

from jitgrad import primitives as P
from jitgrad.config import target_device
from jitgrad.errors import DTypeError, ShapeError, UnsupportedOperationError
from jitgrad.ir import DType, Function, Value
from jitgrad.ir.rewrite import Rewriter
from jitgrad.primitives import complex_numbers as C
from jitgrad.primitives import fft as kernel
from . import numpy_api as api

_NORMS = (None, "backward", "ortho", "forward")


# --------------------------------------------------------------------------- the transform along the last axis

def _pairs(z: Value) -> Value:
    """A complex array as (re, im) pairs on a new last axis: the same bytes."""
    return C.view_as_real(z)


def _from_pairs(x: Value) -> Value:
    """(re, im) pairs on the last axis as complex numbers: the same bytes."""
    return C.view_as_complex(x)


def _smooth_transform(z: Value) -> Value:
    """The kernel on the last axis (its length 2-3-5 smooth)."""
    part = z.type.dtype.real_dtype
    roots = P.constant(kernel.roots_of_unity(z.type.shape[-1], part), part)
    return _from_pairs(kernel.fft(_pairs(z), roots))


def _smooth_length_at_least(n: int) -> int:
    m = n
    while not kernel.is_smooth(m):
        m += 1
    return m


@functools.lru_cache(maxsize=32)
def _bluestein_constants(n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The chirp exp(-i pi j^2 / n) (j^2 reduced mod 2n, so the angle is exact) and the
    float64 transform of its conjugate's circular extension to the smooth length m >= 2n - 1."""
    m = _smooth_length_at_least(2 * n - 1)
    j = np.arange(n, dtype=np.int64)
    chirp = np.exp(-1j * np.pi * ((j * j) % (2 * n)) / n)
    extended = np.zeros(m, np.complex128)
    extended[:n] = np.conj(chirp)
    extended[m - n + 1:] = np.conj(chirp[1:][::-1])
    return chirp, np.fft.fft(extended), m


def _bluestein(z: Value) -> Value:
    """DFT of any length n by Bluestein: X_k = c_k sum_j (x_j c_j) conj(c_{k-j}), with the
    chirp c_j = exp(-i pi j^2 / n), a circular convolution of length m done by transforms."""
    n, shape = z.type.shape[-1], z.type.shape
    chirp, chirp_transform, m = _bluestein_constants(n)
    dtype = z.type.dtype

    def constant_along_last(values):
        return P.broadcast_in_dim(P.constant(values.astype(dtype.numpy), dtype), shape[:-1] + (len(values),),
                                  (len(shape) - 1,))
    a = P.mul(z, constant_along_last(chirp))
    padded = P.pad(a, (0,) * len(shape), (0,) * (len(shape) - 1) + (m - n,), (0,) * len(shape))
    spectrum = P.mul(_smooth_transform(padded), constant_along_last(chirp_transform / m))
    convolved = _inverse_unscaled(spectrum, _smooth_transform)
    head = P.static_slice(convolved, (0,) * len(shape), shape, (1,) * len(shape))
    return P.mul(head, constant_along_last(chirp))


def _forward_unscaled(z: Value) -> Value:
    n = z.type.shape[-1]
    if n == 0:
        raise ShapeError("an FFT of length 0 is not defined (NumPy raises ValueError)")
    return _smooth_transform(z) if kernel.is_smooth(n) else _bluestein(z)


def _inverse_unscaled(z: Value, forward=_forward_unscaled) -> Value:
    return C.conj(forward(C.conj(z)))


def _scale(z: Value, factor: float) -> Value:
    """z times a real factor, each part multiplied (as NumPy's transforms scale)."""
    if factor == 1:
        return z
    part = z.type.dtype.real_dtype
    scale = P.full(factor, z.type.with_dtype(part))
    return C.make_complex(P.mul(C.real(z), scale), P.mul(C.imag(z), scale))


def _factor(norm, n: int, inverse: bool) -> float:
    if norm not in _NORMS:
        raise ValueError(f'Invalid norm value {norm}; should be "backward", "ortho" or "forward".')
    if norm == "ortho":
        return 1 / math.sqrt(n)
    divides = (norm == "forward") != inverse if norm is not None else inverse
    return 1 / n if divides else 1.0


# --------------------------------------------------------------------------- axes, lengths, dtypes

def _complex_dtype(x: Value) -> DType:
    try:
        sample = np.fft.fft(np.zeros(1, x.type.dtype.numpy))
    except TypeError:
        raise DTypeError(f"numpy.fft does not transform {x.type.dtype.numpy} arrays") from None
    return DType.from_numpy(sample.dtype)


def _as_complex(a) -> Value:
    x = api.as_value(a)
    return P.convert(x, _complex_dtype(x))


def _real_input(a, name: str) -> Value:
    x = api.as_value(a)
    if x.type.dtype.is_complex:
        raise DTypeError(f"numpy.fft.{name} takes real input (NumPy has no loop for complex input)")
    target = DType.from_numpy(np.fft.irfft(np.zeros(2, _complex_dtype(x).numpy)).dtype)
    return P.convert(x, target)


def _axis(axis, ndim: int) -> int:
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise ShapeError(f"axis {axis} is out of bounds for array of dimension {ndim}")
    return axis % ndim


def _to_last(x: Value, axis: int) -> tuple[Value, tuple[int, ...]]:
    order = tuple(k for k in range(x.type.ndim) if k != axis) + (axis,)
    return (P.transpose(x, order) if order != tuple(range(x.type.ndim)) else x), order


def _from_last(x: Value, order: tuple[int, ...]) -> Value:
    inverse = tuple(np.argsort(order))
    return P.transpose(x, inverse) if inverse != tuple(range(x.type.ndim)) else x


def _resized_last(x: Value, n: int) -> Value:
    """Cut or zero-pad the last axis to `n` elements."""
    shape = x.type.shape
    if n < 1:
        raise ShapeError(f"Invalid number of FFT data points ({n}) specified.")
    if n < shape[-1]:
        return P.static_slice(x, (0,) * len(shape), shape[:-1] + (n,), (1,) * len(shape))
    if n > shape[-1]:
        zeros = (0,) * len(shape)
        return P.pad(x, zeros, zeros[:-1] + (n - shape[-1],), zeros)
    return x


def _along(x: Value, axis, transform) -> Value:
    axis = _axis(axis, x.type.ndim)
    last, order = _to_last(x, axis)
    return _from_last(transform(last), order)


def _check_out(out, name: str) -> None:
    if out is not None:
        raise UnsupportedOperationError(f"numpy.fft.{name}(..., out=...) is not supported: traced arrays are "
                                        "immutable")


# --------------------------------------------------------------------------- NumPy's pocketfft loops

def _library(dtype: DType) -> bool:
    """Whether the transforms of values of `dtype` (real or complex) are the any-length
    transform primitives (fft_c2c, fft_r2c, fft_c2r), whose results are NumPy's own: on
    devices with their kernels (the CPU calls NumPy's pocketfft loops, where this NumPy has
    them for the dtype's float type; CUDA generates pocketfft's plans), else the `fft`
    primitive with Bluestein built from primitives."""
    from jitgrad.backends import backend_for
    device = backend_for(target_device()).kernel_device
    return device in kernel.LibraryKernel.emitters and kernel.library_loops(dtype.real_dtype) is not None


def _library_scale(norm, n: int, inverse: bool, real: DType) -> float:
    """The `fct` NumPy's `_raw_fft` passes the loop: computed in the real dtype (a float32
    1/sqrt(n) for float32 data), so the loop multiplies by the same number."""
    _factor(norm, n, inverse)                        # NumPy's error for an unknown norm
    if inverse:
        norm = _SWAPPED[norm]
    if norm in (None, "backward"):
        return 1.0
    if norm == "ortho":
        return float(np.reciprocal(np.sqrt(n, dtype=real.numpy)))
    return float(np.reciprocal(n, dtype=real.numpy))


def _resized(x: Value, axis: int, n: int) -> Value:
    """Cut or zero-pad `axis` of `x` to `n` elements."""
    shape = x.type.shape
    if n < 1:
        raise ShapeError(f"Invalid number of FFT data points ({n}) specified.")
    zeros = (0,) * len(shape)
    if n < shape[axis]:
        return P.static_slice(x, zeros, shape[:axis] + (n,) + shape[axis + 1:], (1,) * len(shape))
    if n > shape[axis]:
        return P.pad(x, zeros, zeros[:axis] + (n - shape[axis],) + zeros[axis + 1:], zeros)
    return x


def _numpys_real_dtype(source: DType) -> DType:
    """The `real_dtype` NumPy's `_raw_fft` computes its factor in and gives a real result,
    for data of dtype `source`: result_type(real part, 1.0) (float16 stays float16,
    integers become float64)."""
    return DType.from_numpy(np.result_type(source.real_dtype.numpy if source.is_complex else source.numpy, 1.0))


def _in_numpys_precision(transform, x: Value, scale: float, source: DType, single_input: DType,
                         result: DType) -> Value:
    """`transform(x)` in the precision NumPy's loop computes it, rounded once to the
    `result` dtype. NumPy's loop lookup takes a float32 loop only when the data handed to
    it (`source`) is exactly the loop's input type (`single_input`: complex64, or float32
    for rfft) and the factor a float32 (a scale); everything else (no factor: the Python
    int 1; real float32 data for a complex transform; float16) matches the float64 loop."""
    single = source == single_input and scale != 1
    y = transform(x if single or x.type.dtype == DType.f64 else P.convert(x, DType.f64))
    return y if y.type.dtype == result else P.convert(y, result)


def _library_c2c(pairs: Value, n, axis: int, norm, inverse: bool, source: DType) -> Value:
    """The complex transform of (re, im) pairs along `axis` (an axis of the complex values)
    of NumPy data of dtype `source`."""
    length = pairs.type.shape[axis] if n is None else operator.index(n)
    pairs = _resized(pairs, axis, length)
    scale = _library_scale(norm, length, inverse, _numpys_real_dtype(source))
    return _in_numpys_precision(lambda p: kernel.fft_c2c(p, axis, not inverse, scale), pairs, scale, source,
                                DType.c64, pairs.type.dtype)


def _library_r2c(x: Value, n, axis: int, norm, source: DType) -> Value:
    """rfft of real `x` along `axis`, as (re, im) pairs."""
    length = x.type.shape[axis] if n is None else operator.index(n)
    x = _resized(x, axis, length)
    scale = _library_scale(norm, length, False, _numpys_real_dtype(source))
    return _in_numpys_precision(lambda y: kernel.fft_r2c(y, axis, scale), x, scale, source, DType.f32,
                                x.type.dtype)


def _library_c2r(pairs: Value, n, axis: int, norm, source: DType) -> Value:
    """irfft of (re, im) pairs along `axis`; the result has NumPy's real dtype."""
    length = 2 * (pairs.type.shape[axis] - 1) if n is None else operator.index(n)
    if length < 1:
        raise ShapeError(f"Invalid number of FFT data points ({length}) specified.")
    pairs = _resized(pairs, axis, length // 2 + 1)
    real = _numpys_real_dtype(source)
    scale = _library_scale(norm, length, True, real)
    return _in_numpys_precision(lambda p: kernel.fft_c2r(p, axis, length, scale), pairs, scale, source,
                                DType.c64, real)


# --------------------------------------------------------------------------- one axis

def _c2c(a, n, axis, norm, inverse: bool) -> Value:
    x = api.as_value(a)
    z = _as_complex(x)
    if _library(z.type.dtype):
        return _from_pairs(_library_c2c(_pairs(z), n, _axis(axis, z.type.ndim), norm, inverse, x.type.dtype))

    def transform(last):
        length = last.type.shape[-1] if n is None else operator.index(n)
        last = _resized_last(last, length)
        raw = _inverse_unscaled(last) if inverse else _forward_unscaled(last)
        return _scale(raw, _factor(norm, length, inverse))
    return _along(z, axis, transform)


def fft(a, n=None, axis=-1, norm=None, out=None):
    _check_out(out, "fft")
    return _c2c(a, n, axis, norm, inverse=False)


def ifft(a, n=None, axis=-1, norm=None, out=None):
    _check_out(out, "ifft")
    return _c2c(a, n, axis, norm, inverse=True)


def rfft(a, n=None, axis=-1, norm=None, out=None):
    _check_out(out, "rfft")
    x = _real_input(a, "rfft")
    if _library(x.type.dtype):
        return _from_pairs(_library_r2c(x, n, _axis(axis, x.type.ndim), norm, api.as_value(a).type.dtype))

    def transform(last):
        length = last.type.shape[-1] if n is None else operator.index(n)
        z = P.convert(_resized_last(last, length), last.type.dtype.complex_dtype)
        full = _scale(_forward_unscaled(z), _factor(norm, length, False))
        return _resized_last(full, length // 2 + 1)
    return _along(x, axis, transform)


def irfft(a, n=None, axis=-1, norm=None, out=None):
    _check_out(out, "irfft")
    source = api.as_value(a).type.dtype
    z = _as_complex(a)
    if _library(z.type.dtype):
        return _library_c2r(_pairs(z), n, _axis(axis, z.type.ndim), norm, source)

    def transform(last):
        length = 2 * (last.type.shape[-1] - 1) if n is None else operator.index(n)
        if length < 1:
            raise ShapeError(f"Invalid number of FFT data points ({length}) specified.")
        full = _scale(_inverse_unscaled(_hermitian_completion(last, length)), _factor(norm, length, True))
        return C.real(full)
    result, real = _along(z, axis, transform), _numpys_real_dtype(source)
    return result if result.type.dtype == real else P.convert(result, real)


def _hermitian_completion(last: Value, length: int) -> Value:
    """The `length` values of the Hermitian spectrum whose first length // 2 + 1 are
    `last`'s (cut or zero-padded) along its last axis: conj(X[n - k]) above them."""
    half = _resized_last(last, length // 2 + 1)
    mirrored = length - (length // 2 + 1)        # conj(X[n - k]) for k = n//2 + 1 .. n - 1
    if not mirrored:
        return half
    shape = half.type.shape
    tail = P.static_slice(half, (0,) * (len(shape) - 1) + (1,), shape[:-1] + (1 + mirrored,), (1,) * len(shape))
    return P.concatenate([half, C.conj(P.rev(tail, (len(shape) - 1,)))], len(shape) - 1)


_SWAPPED = {None: "forward", "backward": "forward", "ortho": "ortho", "forward": "backward"}


def hfft(a, n=None, axis=-1, norm=None, out=None):
    _check_out(out, "hfft")
    if norm not in _NORMS:
        _factor(norm, 1, False)
    x = api.as_value(a)
    return irfft(C.conj(x) if x.type.dtype.is_complex else x, n, axis, _SWAPPED[norm])


def ihfft(a, n=None, axis=-1, norm=None, out=None):
    _check_out(out, "ihfft")
    if norm not in _NORMS:
        _factor(norm, 1, False)
    return C.conj(rfft(a, n, axis, _SWAPPED[norm]))


# --------------------------------------------------------------------------- several axes

def _shape_and_axes(x: Value, s, axes, inverse_real: bool = False) -> tuple[list[int], list[int]]:
    """NumPy's `_cook_nd_args`."""
    ndim = x.type.ndim
    if axes is None:
        axes = list(range(-len(s), 0)) if s is not None else list(range(ndim))
    axes = [_axis(ax, ndim) for ax in axes]
    if s is None:
        s = [x.type.shape[ax] for ax in axes]
        if inverse_real and s:
            s[-1] = (s[-1] - 1) * 2
    s = [operator.index(d) for d in s]
    if len(s) != len(axes):
        raise ShapeError("Shape and axes have different lengths.")
    return s, axes


def _c2c_along(a, s, axes, norm, out, name, inverse):
    """The complex transform along each of `axes`, the last first (NumPy's order)."""
    _check_out(out, name)
    z = _as_complex(a)
    s, axes = _shape_and_axes(z, s, axes)
    if _library(z.type.dtype):
        pairs, source = _pairs(z), api.as_value(a).type.dtype
        for ii in reversed(range(len(axes))):
            pairs = _library_c2c(pairs, s[ii], axes[ii], norm, inverse, source)
            source = z.type.dtype                 # the next axes transform NumPy's complex result
        return _from_pairs(pairs)
    for ii in reversed(range(len(axes))):
        z = _c2c(z, s[ii], axes[ii], norm, inverse=inverse)
    return z


def fftn(a, s=None, axes=None, norm=None, out=None):
    return _c2c_along(a, s, axes, norm, out, "fftn", inverse=False)


def ifftn(a, s=None, axes=None, norm=None, out=None):
    return _c2c_along(a, s, axes, norm, out, "ifftn", inverse=True)


def rfftn(a, s=None, axes=None, norm=None, out=None):
    _check_out(out, "rfftn")
    x = _real_input(a, "rfftn")
    s, axes = _shape_and_axes(x, s, axes)
    if not axes:
        raise ShapeError("rfftn needs at least one axis")
    if _library(x.type.dtype):
        pairs = _library_r2c(x, s[-1], axes[-1], norm, api.as_value(a).type.dtype)
        for ii in range(len(axes) - 2, -1, -1):
            pairs = _library_c2c(pairs, s[ii], axes[ii], norm, False, x.type.dtype.complex_dtype)
        return _from_pairs(pairs)
    z = rfft(x, s[-1], axes[-1], norm)
    for ii in range(len(axes) - 2, -1, -1):
        z = _c2c(z, s[ii], axes[ii], norm, inverse=False)
    return z


def irfftn(a, s=None, axes=None, norm=None, out=None):
    _check_out(out, "irfftn")
    source = api.as_value(a).type.dtype
    z = _as_complex(a)
    s, axes = _shape_and_axes(z, s, axes, inverse_real=True)
    if not axes:
        raise ShapeError("irfftn needs at least one axis")
    if _library(z.type.dtype):
        pairs = _pairs(z)
        for ii in range(len(axes) - 1):
            pairs = _library_c2c(pairs, s[ii], axes[ii], norm, True, source)
            source = z.type.dtype                 # the next axes transform NumPy's complex result
        return _library_c2r(pairs, s[-1], axes[-1], norm, source)
    z = a if len(axes) == 1 else z                # one axis: irfft of the input itself (its real dtype)
    for ii in range(len(axes) - 1):
        z = _c2c(z, s[ii], axes[ii], norm, inverse=True)
    return irfft(z, s[-1], axes[-1], norm)


def fft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    return fftn(a, s, axes, norm, out)


def ifft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    return ifftn(a, s, axes, norm, out)


def rfft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    return rfftn(a, s, axes, norm, out)


def irfft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    return irfftn(a, s, axes, norm, out)


# --------------------------------------------------------------------------- without the library

def expand_library_transforms(fn: Function) -> Function:
    """`fn` with every `fft_c2c`, `fft_r2c` and `fft_c2r` op (NumPy's pocketfft loops)
    replaced by the same transform on jitgrad's own `fft` kernel (Bluestein for lengths
    with prime factors above 5): code that must not call into NumPy, such as an AOT
    library, is built from it. The result has complex values again (run `lower-complex`
    after it) and computes NumPy's values to rounding, not to the bit."""
    if not any(op.name in _EXPANSIONS for op in fn.walk()):
        return fn
    return Rewriter(_EXPANSIONS).rewrite_function(fn)


def _expanded_c2c(rewriter, op, inputs):
    axis, forward, scale = op.attrs["axis"], op.attrs["forward"], op.attrs["scale"]
    transform = _forward_unscaled if forward else _inverse_unscaled
    z = _along(_from_pairs(inputs[0]), axis, lambda last: _scale(transform(last), scale))
    return [_pairs(z)]


def _expanded_r2c(rewriter, op, inputs):
    (x,), axis, scale = inputs, op.attrs["axis"], op.attrs["scale"]

    def transform(last):
        full = _forward_unscaled(P.convert(last, last.type.dtype.complex_dtype))
        return _scale(_resized_last(full, last.type.shape[-1] // 2 + 1), scale)
    return [_pairs(_along(x, axis, transform))]


def _expanded_c2r(rewriter, op, inputs):
    axis, n, scale = op.attrs["axis"], op.attrs["n"], op.attrs["scale"]

    def transform(last):
        return C.real(_scale(_inverse_unscaled(_hermitian_completion(last, n)), scale))
    return [_along(_from_pairs(inputs[0]), axis, transform)]


_EXPANSIONS = {"fft_c2c": _expanded_c2c, "fft_r2c": _expanded_r2c, "fft_c2r": _expanded_c2r}


# --------------------------------------------------------------------------- helpers

def _roll(x: Value, shift: int, axis: int) -> Value:
    n = x.type.shape[axis]
    shift = shift % n if n else 0
    if not shift:
        return x
    shape, ones = x.type.shape, (1,) * x.type.ndim

    def piece(start, stop):
        starts = tuple(start if k == axis else 0 for k in range(len(shape)))
        limits = tuple(stop if k == axis else d for k, d in enumerate(shape))
        return P.static_slice(x, starts, limits, ones)
    return P.concatenate([piece(n - shift, n), piece(0, n - shift)], axis)


def _shifted(x, axes, direction: int):
    x = api.as_value(x)
    if axes is None:
        axes = tuple(range(x.type.ndim))
    elif isinstance(axes, int):
        axes = (axes,)
    for ax in axes:
        ax = _axis(ax, x.type.ndim)
        x = _roll(x, direction * (x.type.shape[ax] // 2), ax)
    return x


def fftshift(x, axes=None):
    return _shifted(x, axes, 1)


def ifftshift(x, axes=None):
    return _shifted(x, axes, -1)


def fftfreq(n, d=1.0, device=None):
    if isinstance(d, Value):
        counts = np.fft.fftfreq(operator.index(n), 1.0) * n
        return api.UFUNCS[np.multiply](counts, api.UFUNCS[np.true_divide](1.0, api.UFUNCS[np.multiply](n, d)))
    return P.constant(np.fft.fftfreq(n, d))


def rfftfreq(n, d=1.0, device=None):
    if isinstance(d, Value):
        counts = np.fft.rfftfreq(operator.index(n), 1.0) * n
        return api.UFUNCS[np.multiply](counts, api.UFUNCS[np.true_divide](1.0, api.UFUNCS[np.multiply](n, d)))
    return P.constant(np.fft.rfftfreq(n, d))


FUNCTIONS = {
    np.fft.fft: fft, np.fft.ifft: ifft, np.fft.rfft: rfft, np.fft.irfft: irfft, np.fft.hfft: hfft,
    np.fft.ihfft: ihfft, np.fft.fftn: fftn, np.fft.ifftn: ifftn, np.fft.rfftn: rfftn, np.fft.irfftn: irfftn,
    np.fft.fft2: fft2, np.fft.ifft2: ifft2, np.fft.rfft2: rfft2, np.fft.irfft2: irfft2,
    np.fft.fftshift: fftshift, np.fft.ifftshift: ifftshift, np.fft.fftfreq: fftfreq, np.fft.rfftfreq: rfftfreq,
}
api.FUNCTIONS.update(FUNCTIONS)
