"""Complex arithmetic and elementary functions on (real, imaginary) pairs of real IR values.

The `lower-complex` pass (passes/lower_complex.py) rewrites each complex op into the
functions here. Each computes what NumPy computes on Linux: NumPy's own loop formulas
where NumPy has them (`expm1`, `log1p`, `exp2`, `log2`, `log10`, the small-integer branch
of `power`, `sign`), and glibc's C99 functions where NumPy calls the C library (`csinh`,
`ccosh`, `ctanh` with their overflow scaling and their special values, `cpow` as
`cexp(w clog z)`). The inverse functions use Kahan's formulas ("Branch cuts for complex
elementary functions"), which need only the complex square root and real `asinh`/`atan2`
and are accurate to a few ulp on the whole plane, signed zeros choosing the side of a
branch cut as C99 does; their infinities and NaNs follow C99's Annex G tables as glibc
implements them. The circular functions are the hyperbolic ones rotated by i
(sin z = -i sinh(iz), cos z = cosh(iz), tan z = -i tanh(iz), and the same for the
inverses), which is how C99 defines their special values.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jitgrad import primitives as P
from jitgrad.ir import DType, Value
from jitgrad.primitives.bits import signbit


class Parts(NamedTuple):
    """A complex value as two real values of its part dtype."""

    re: Value
    im: Value


def zeros_like(x: Value) -> Value:
    return P.full(0, x.type)


def const(value, like: Value) -> Value:
    return P.full(value, like.type)


def parts(x) -> Parts:
    """Parts of a lowered operand: a real operand gets a zero imaginary part."""
    return x if isinstance(x, Parts) else Parts(x, zeros_like(x))


def _is_nan(x: Value) -> Value:
    return P.ne(x, x)


def _is_inf(x: Value) -> Value:
    return P.eq(P.absolute(x), const(np.inf, x))


def _is_finite(x: Value) -> Value:
    return P.lt(P.absolute(x), const(np.inf, x))


def _is_zero(x: Value) -> Value:
    return P.eq(x, zeros_like(x))


def copysign(magnitude: Value, sign_of: Value) -> Value:
    """|magnitude| with the sign bit of `sign_of` (C's copysign; NaNs' sign bits included)."""
    size = P.absolute(magnitude)
    return P.select(signbit(sign_of), P.neg(size), size)


def select_parts(pred: Value, a: Parts, b: Parts) -> Parts:
    return Parts(P.select(pred, a.re, b.re), P.select(pred, a.im, b.im))


def _times_i(z: Parts) -> Parts:
    return Parts(P.neg(z.im), z.re)


def _times_minus_i(z: Parts) -> Parts:
    return Parts(z.im, P.neg(z.re))


def _scaled(z: Parts, factor: float) -> Parts:
    return Parts(P.mul(z.re, const(factor, z.re)), P.mul(z.im, const(factor, z.im)))


def _overflow_threshold(x: Value) -> float:
    """The largest t with e^t finite, rounded down as glibc does (88 for float32, 709 for float64)."""
    return 88 if x.type.dtype == DType.f32 else 709


# --------------------------------------------------------------------------- arithmetic

def product(a: Parts, b: Parts) -> Parts:
    return Parts(P.sub(P.mul(a.re, b.re), P.mul(a.im, b.im)), P.add(P.mul(a.re, b.im), P.mul(a.im, b.re)))


def ufunc_product(a: Parts, b: Parts) -> Parts:
    """np.multiply of complex arrays. NumPy's SIMD loop (FMA hardware, contiguous data)
    computes re = fma(ar, br, -(ai bi)) and im = fma(ar, bi, ai br): a product inside the
    fma is never rounded, so where the other product overflowed to an infinity the part is
    that infinity, and where only the inner product overflows the exact difference may be
    finite; the plain formula gives inf - inf = NaN, or inf. Finite parts keep the plain
    formula's two roundings (a few ulps from NumPy's one); the infinities are the fma's:
    an overflowing addend is taken as it is, an overflowing inner product is formed at
    half scale (exact) and doubled."""
    def fused(x, y, addend, inner, added):
        factors_finite = P.logical_and(_is_finite(x), _is_finite(y))
        half = const(0.5, x)
        at_half_scale = P.add(P.mul(P.mul(x, half), y), P.mul(addend, half))
        part = P.select(P.logical_and(P.logical_and(_is_inf(inner), _is_finite(addend)), factors_finite),
                        P.mul(at_half_scale, const(2, x)), added)
        return P.select(P.logical_and(_is_inf(addend), factors_finite), addend, part)
    ac, bd, ad, bc = P.mul(a.re, b.re), P.mul(a.im, b.im), P.mul(a.re, b.im), P.mul(a.im, b.re)
    minus_bd = P.neg(bd)
    return Parts(fused(a.re, b.re, minus_bd, ac, P.sub(ac, bd)), fused(a.re, b.im, bc, ad, P.add(ad, bc)))


def c99_product(a: Parts, b: Parts) -> Parts:
    """C99's complex multiplication (Annex G, GCC's __muldc3): the plain product, except
    that where both of its parts are NaN and a factor is infinite (or a partial product
    overflowed), the infinities are recovered: infinite parts become +-1, NaN parts +-0,
    and the product of those is scaled by inf. glibc's cpow multiplies w log z this way."""
    ac, bd, ad, bc = P.mul(a.re, b.re), P.mul(a.im, b.im), P.mul(a.re, b.im), P.mul(a.im, b.re)
    plain = Parts(P.sub(ac, bd), P.add(ad, bc))
    zero, one = zeros_like(a.re), const(1, a.re)

    def unit(v):
        return copysign(P.select(_is_inf(v), one, zero), v)

    def zero_if_nan(v):
        return P.select(_is_nan(v), copysign(zero, v), v)
    a_inf = P.logical_or(_is_inf(a.re), _is_inf(a.im))
    b_inf = P.logical_or(_is_inf(b.re), _is_inf(b.im))
    overflowed = P.logical_or(P.logical_or(_is_inf(ac), _is_inf(bd)), P.logical_or(_is_inf(ad), _is_inf(bc)))
    overflowed = P.logical_and(overflowed, P.logical_not(P.logical_or(a_inf, b_inf)))
    ar = P.select(a_inf, unit(a.re), a.re)
    ai = P.select(a_inf, unit(a.im), a.im)
    br = P.select(b_inf, unit(b.re), b.re)
    bi = P.select(b_inf, unit(b.im), b.im)
    clear_b = P.logical_or(a_inf, overflowed)
    br = P.select(clear_b, zero_if_nan(br), br)
    bi = P.select(clear_b, zero_if_nan(bi), bi)
    clear_a = P.logical_or(b_inf, overflowed)
    ar = P.select(clear_a, zero_if_nan(ar), ar)
    ai = P.select(clear_a, zero_if_nan(ai), ai)
    inf = const(np.inf, a.re)
    recovered = Parts(P.mul(inf, P.sub(P.mul(ar, br), P.mul(ai, bi))), P.mul(inf, P.add(P.mul(ar, bi), P.mul(ai, br))))
    recalc = P.logical_and(P.logical_and(_is_nan(plain.re), _is_nan(plain.im)),
                           P.logical_or(P.logical_or(a_inf, b_inf), overflowed))
    return select_parts(recalc, recovered, plain)


def quotient(a: Parts, b: Parts) -> Parts:
    """NumPy's complex `divide` loop: Smith's method scaled by a reciprocal, the branch
    chosen by the larger part of the divisor (NaN parts take the second), and a divisor of
    0 + 0i giving each part divided by 0 (inf or NaN as C's division)."""
    abs_re, abs_im = P.absolute(b.re), P.absolute(b.im)
    one = const(1, b.re)
    # |b.re| >= |b.im|: rat = b.im / b.re, scl = 1 / (b.re + b.im rat)
    rat1 = P.div(b.im, b.re)
    scl1 = P.div(one, P.add(b.re, P.mul(b.im, rat1)))
    re1 = P.mul(P.add(a.re, P.mul(a.im, rat1)), scl1)
    im1 = P.mul(P.sub(a.im, P.mul(a.re, rat1)), scl1)
    # otherwise: rat = b.re / b.im, scl = 1 / (b.im + b.re rat)
    rat2 = P.div(b.re, b.im)
    scl2 = P.div(one, P.add(b.im, P.mul(b.re, rat2)))
    re2 = P.mul(P.add(P.mul(a.re, rat2), a.im), scl2)
    im2 = P.mul(P.sub(P.mul(a.im, rat2), a.re), scl2)
    zero = zeros_like(b.re)
    by_zero = P.logical_and(P.eq(abs_re, zero), P.eq(abs_im, zero))
    re0, im0 = P.div(a.re, abs_re), P.div(a.im, abs_re)
    first = P.ge(abs_re, abs_im)
    re = P.select(by_zero, re0, P.select(first, re1, re2))
    im = P.select(by_zero, im0, P.select(first, im1, im2))
    return Parts(re, im)


def one_like(z: Parts) -> Parts:
    return Parts(const(1, z.re), zeros_like(z.re))


def integer_power(z: Parts, n: int, divide=quotient) -> Parts:
    """z ** n by binary powering (NumPy's small-integer complex power); n < 0 is 1 / z ** -n."""
    result, square, k = None, z, abs(n)
    while k:
        if k & 1:
            result = square if result is None else product(result, square)
        k >>= 1
        if k:
            square = product(square, square)
    if result is None:
        result = one_like(z)
    return divide(one_like(z), result) if n < 0 else result


# --------------------------------------------------------------------------- exp, log, sqrt

def exp(z: Parts) -> Parts:
    """e^re (cos im + i sin im) as C99's cexp in glibc: a real part above t = 88 (f32) or
    709 (f64) is brought down by up to two factors e^t multiplied into cos and sin first, so
    a result within range does not overflow on the way; a zero imaginary part stays exactly
    that zero (exp(inf + 0i) is inf + 0i, not inf + NaN i)."""
    dtype = z.re.type.dtype.numpy
    t = _overflow_threshold(z.re)
    threshold, e_t = const(t, z.re), const(np.exp(dtype.type(t)), z.re)
    one = const(1, z.re)
    cos, sin, re = P.cos(z.im), P.sin(z.im), z.re
    for _ in range(2):
        above = P.gt(re, threshold)
        re = P.select(above, P.sub(re, threshold), re)
        factor = P.select(above, e_t, one)
        cos, sin = P.mul(cos, factor), P.mul(sin, factor)
    scale = P.select(P.gt(re, threshold), const(np.finfo(dtype).max, z.re), P.exp(re))
    zero = zeros_like(z.im)
    im = P.select(P.eq(z.im, zero), z.im, P.mul(scale, sin))
    re = P.mul(scale, cos)
    # An infinite real part with an infinite or NaN imaginary part: C99 (glibc, so NumPy)
    # gives 0 + i copysign(0, im) for -inf and inf + i NaN for +inf, where cos and sin
    # of im are NaN.
    infinity = const(np.inf, z.re)
    im_not_finite = P.logical_not(_is_finite(z.im))
    to_zero = P.logical_and(P.eq(z.re, P.neg(infinity)), im_not_finite)
    to_infinity = P.logical_and(P.eq(z.re, infinity), im_not_finite)
    signed_zero = P.select(signbit(z.im), const(-0.0, z.im), zero)
    re = P.select(to_zero, zero, P.select(to_infinity, infinity, re))
    im = P.select(to_zero, signed_zero, P.select(to_infinity, const(np.nan, z.im), im))
    return Parts(re, im)


def log(z: Parts) -> Parts:
    """log|z| + i arg z, with log1p((re - 1)(re + 1) + im^2) / 2 for |z| in [0.5, 2], where
    log(hypot) would lose the digits of a modulus near 1 (C99's clog does the same)."""
    modulus = P.hypot(z.re, z.im)
    one = const(1, z.re)
    near_one = P.logical_and(P.ge(modulus, const(0.5, z.re)), P.le(modulus, const(2, z.re)))
    squares_minus_one = P.add(P.mul(P.sub(z.re, one), P.add(z.re, one)), P.mul(z.im, z.im))
    near = P.mul(const(0.5, z.re), P.log1p(squares_minus_one))
    # A modulus beyond the largest float with finite parts: log(|z| / 2) + log 2.
    overflows = P.logical_and(_is_inf(modulus), P.logical_and(_is_finite(z.re), _is_finite(z.im)))
    half = const(0.5, z.re)
    halved = P.add(P.log(P.hypot(P.mul(z.re, half), P.mul(z.im, half))), const(math.log(2), z.re))
    far = P.select(overflows, halved, P.log(modulus))
    return Parts(P.select(near_one, near, far), P.arctan2(z.im, z.re))


def sqrt(z: Parts) -> Parts:
    """The principal square root by C99's csqrt formulas: the larger part from
    sqrt((|re| + |z|) / 2), the other by a division, so no cancellation; sqrt(0 +- 0i) is
    0 +- 0i, an infinite imaginary part gives inf with that part."""
    half, zero = const(0.5, z.re), zeros_like(z.re)
    # Parts above a quarter of the largest float are scaled by 1/4 (the root by 2), so
    # |z| + |re| does not overflow.
    huge = P.gt(P.maximum(P.absolute(z.re), P.absolute(z.im)), const(float(np.finfo(z.re.type.dtype.numpy).max) / 4, z.re))
    scale = P.select(huge, const(0.25, z.re), const(1, z.re))
    modulus = P.hypot(P.mul(z.re, scale), P.mul(z.im, scale))
    big = P.sqrt(P.mul(half, P.add(modulus, P.absolute(P.mul(z.re, scale)))))
    big = P.mul(big, P.select(huge, const(2, z.re), const(1, z.re)))
    small = P.mul(half, P.div(z.im, big))
    negative_im = P.lt(P.div(const(1, z.im), z.im), zero)           # -0.0 counts as negative
    positive_re = P.ge(z.re, zero)
    re = P.select(positive_re, big, P.absolute(small))
    im = P.select(positive_re, small, P.select(negative_im, P.neg(big), big))
    is_zero = P.logical_and(P.eq(z.re, zero), P.eq(z.im, zero))
    infinite_im = _is_inf(z.im)
    re = P.select(infinite_im, const(np.inf, z.re), P.select(is_zero, zero, re))
    im = P.select(P.logical_or(infinite_im, is_zero), z.im, im)
    return Parts(re, im)


def _log_scaled(z: Parts, factor: float) -> Parts:
    """NumPy's log2 / log10: the natural logarithm's parts times log2(e) or log10(e)."""
    return _scaled(log(z), factor)


def log2(z: Parts) -> Parts:
    return _log_scaled(z, 1 / math.log(2))


def log10(z: Parts) -> Parts:
    return _log_scaled(z, 1 / math.log(10))


def exp2(z: Parts) -> Parts:
    """NumPy's exp2: exp of z ln 2."""
    return exp(_scaled(z, math.log(2)))


def expm1(z: Parts) -> Parts:
    """NumPy's loop: (expm1(re) cos(im) - 2 sin(im/2)^2) + i e^re sin(im)."""
    half_angle = P.sin(P.mul(z.im, const(0.5, z.im)))
    re = P.sub(P.mul(P.expm1(z.re), P.cos(z.im)), P.mul(const(2, z.re), P.mul(half_angle, half_angle)))
    return Parts(re, P.mul(P.exp(z.re), P.sin(z.im)))


def log1p(z: Parts) -> Parts:
    """log|1 + z| + i atan2(im, 1 + re), as NumPy's loop, except that for |1 + z| in
    [0.5, 2] the modulus is log1p(re (re + 2) + im^2) / 2: NumPy's log(hypot(1 + re, im))
    loses the digits of a small z there (up to 1e-8 relative at |z| = 1e-8), this does not."""
    one = const(1, z.re)
    shifted = P.add(z.re, one)
    modulus = P.hypot(shifted, z.im)
    near_one = P.logical_and(P.ge(modulus, const(0.5, z.re)), P.le(modulus, const(2, z.re)))
    near = P.mul(const(0.5, z.re), P.log1p(P.add(P.mul(z.re, P.add(z.re, const(2, z.re))), P.mul(z.im, z.im))))
    far = log(Parts(shifted, z.im)).re
    return Parts(P.select(near_one, near, far), P.arctan2(z.im, shifted))


def power(a: Parts, b: Parts) -> Parts:
    """NumPy's npy_cpow: 1 for a zero exponent; 0 for a zero base with a positive real
    exponent and NaN otherwise; binary powering for an integer exponent in (-100, 100)
    (the exponent's value is known only at run time: each of seven bits selects its
    square); else the C library's cpow, exp(b log a)."""
    zero = zeros_like(a.re)
    general = exp(c99_product(b, log(a)))
    n = b.re
    integral = P.logical_and(P.logical_and(_is_zero(b.im), P.eq(P.convert(P.convert(n, DType.i64), n.type.dtype), n)),
                             P.lt(P.absolute(n), const(100, n)))
    magnitude = P.convert(P.absolute(P.select(integral, n, zero)), DType.i64)
    accumulated, square = one_like(a), a
    for bit in range(7):
        bit_set = P.ne(P.bit_and(magnitude, P.full(1 << bit, magnitude.type)), P.full(0, magnitude.type))
        accumulated = select_parts(bit_set, product(accumulated, square), accumulated)
        if bit < 6:
            square = product(square, square)
    by_powers = select_parts(P.lt(n, zero), quotient(one_like(a), accumulated), accumulated)
    # n = 1, 2, 3 are unrolled in NumPy: a, a a, a (a a), where the loop would start from 1 * a.
    square_a = product(a, a)
    by_powers = select_parts(P.eq(n, const(1, n)), a, by_powers)
    by_powers = select_parts(P.eq(n, const(2, n)), square_a, by_powers)
    by_powers = select_parts(P.eq(n, const(3, n)), product(a, square_a), by_powers)
    result = select_parts(integral, by_powers, general)
    nan = const(np.nan, a.re)
    zero_base = P.logical_and(_is_zero(a.re), _is_zero(a.im))
    at_zero = select_parts(P.gt(b.re, zero), Parts(zero, zero), Parts(nan, nan))
    result = select_parts(zero_base, at_zero, result)
    zero_exponent = P.logical_and(_is_zero(b.re), _is_zero(b.im))
    return select_parts(zero_exponent, one_like(a), result)


def sign(z: Parts) -> Parts:
    """NumPy 2's complex sign, z / |z|: 0 at 0, NaN + NaN i when a part is NaN, and for an
    infinite |z| the unit vector of the infinite part (NaN + NaN i when both are)."""
    modulus = P.hypot(z.re, z.im)
    zero, nan, one = zeros_like(z.re), const(np.nan, z.re), const(1, z.re)
    re, im = P.div(z.re, modulus), P.div(z.im, modulus)
    re_inf, im_inf = _is_inf(z.re), _is_inf(z.im)
    infinite = Parts(P.select(re_inf, P.select(im_inf, nan, copysign(one, z.re)), zero),
                     P.select(re_inf, P.select(im_inf, nan, zero), copysign(one, z.im)))
    result = select_parts(_is_inf(modulus), infinite, Parts(re, im))
    result = select_parts(_is_zero(modulus), Parts(zero, zero), result)
    either_nan = P.logical_or(_is_nan(z.re), _is_nan(z.im))
    return select_parts(P.logical_and(either_nan, P.logical_not(_is_inf(modulus))), Parts(nan, nan), result)


# --------------------------------------------------------------------------- hyperbolic

def _scaled_exponential(x_abs: Value, cos: Value, sin: Value) -> tuple[Value, Value]:
    """(e^|x| / 2) cos, (e^|x| / 2) sin for |x| above the overflow threshold t, as glibc's
    csinh/ccosh: e^t / 2 and up to one more e^t are multiplied into cos and sin before the
    remaining e^(|x| - k t), and a remainder still above t saturates at the largest float."""
    dtype = x_abs.type.dtype.numpy
    t = _overflow_threshold(x_abs)
    threshold = const(t, x_abs)
    e_t = float(np.exp(dtype.type(t)))
    rest = P.sub(x_abs, threshold)
    cos, sin = P.mul(cos, const(e_t / 2, cos)), P.mul(sin, const(e_t / 2, sin))
    above = P.gt(rest, threshold)
    factor = P.select(above, const(e_t, x_abs), const(1, x_abs))
    rest = P.select(above, P.sub(rest, threshold), rest)
    cos, sin = P.mul(cos, factor), P.mul(sin, factor)
    scale = P.select(P.gt(rest, threshold), const(np.finfo(dtype).max, x_abs), P.exp(rest))
    return P.mul(scale, cos), P.mul(scale, sin)


def _sin_cos(y: Value) -> tuple[Value, Value]:
    return P.sin(y), P.cos(y)


def sinh(z: Parts) -> Parts:
    """glibc's csinh: sinh(x) cos(y) + i cosh(x) sin(y), scaled above the overflow
    threshold, with C99's values for infinite and NaN parts."""
    x, y = z
    sin_y, cos_y = _sin_cos(y)
    x_abs = P.absolute(x)
    big = P.gt(x_abs, const(_overflow_threshold(x), x))
    big_re, big_im = _scaled_exponential(x_abs, cos_y, sin_y)
    re = P.select(big, P.select(signbit(x), P.neg(big_re), big_re), P.mul(P.sinh(x), cos_y))
    im = P.select(big, big_im, P.mul(P.cosh(x), sin_y))
    im = P.select(_is_zero(y), y, im)
    nan, inf = const(np.nan, x), const(np.inf, x)
    y_finite, x_finite = _is_finite(y), _is_finite(x)
    # A finite real part with an infinite or NaN imaginary part: +-0 + i NaN at x = +-0, else NaN + i NaN.
    re = P.select(y_finite, re, P.select(_is_zero(x), x, nan))
    im = P.select(y_finite, im, nan)
    # An infinite real part: +-inf with the signs of cos y and sin y for a finite nonzero y,
    # x + i y for a zero y, inf + i NaN otherwise.
    inf_re = P.select(y_finite, P.select(_is_zero(y), x, copysign(inf, P.mul(x, cos_y))), inf)
    inf_im = P.select(y_finite, P.select(_is_zero(y), y, copysign(inf, sin_y)), nan)
    x_inf = _is_inf(x)
    re, im = P.select(x_inf, inf_re, re), P.select(x_inf, inf_im, im)
    # A NaN real part: NaN + i y for a zero y, else NaN + i NaN.
    x_nan = P.logical_not(P.logical_or(x_finite, x_inf))
    return Parts(P.select(x_nan, nan, re), P.select(x_nan, P.select(_is_zero(y), y, nan), im))


def cosh(z: Parts) -> Parts:
    """glibc's ccosh: cosh(x) cos(y) + i sinh(x) sin(y), scaled above the overflow
    threshold, with C99's values for infinite and NaN parts."""
    x, y = z
    sin_y, cos_y = _sin_cos(y)
    x_abs = P.absolute(x)
    big = P.gt(x_abs, const(_overflow_threshold(x), x))
    big_re, big_im = _scaled_exponential(x_abs, cos_y, sin_y)
    re = P.select(big, big_re, P.mul(P.cosh(x), cos_y))
    im = P.select(big, P.select(signbit(x), P.neg(big_im), big_im), P.mul(P.sinh(x), sin_y))
    nan, inf, zero = const(np.nan, x), const(np.inf, x), zeros_like(x)
    y_finite, x_finite = _is_finite(y), _is_finite(x)
    # A finite real part with an infinite or NaN imaginary part: NaN + i 0 at x = 0, else NaN + i NaN.
    re = P.select(y_finite, re, nan)
    im = P.select(y_finite, im, P.select(_is_zero(x), zero, nan))
    # An infinite real part: inf with the signs of cos y and sign(x) sin y for a finite
    # nonzero y, inf + i sign(x) y for a zero y, inf + i NaN otherwise.
    inf_re = P.select(y_finite, copysign(inf, cos_y), inf)
    inf_im = P.select(y_finite, P.mul(copysign(const(1, x), x), P.select(_is_zero(y), y, copysign(inf, sin_y))), nan)
    x_inf = _is_inf(x)
    re, im = P.select(x_inf, inf_re, re), P.select(x_inf, inf_im, im)
    # A NaN real part: NaN + i y for a zero y, else NaN + i NaN.
    x_nan = P.logical_not(P.logical_or(x_finite, x_inf))
    return Parts(P.select(x_nan, nan, re), P.select(x_nan, P.select(_is_zero(y), y, nan), im))


def tanh(z: Parts) -> Parts:
    """glibc's ctanh: (sinh x cosh x + i sin y cos y) / (sinh^2 x + cos^2 y); beyond
    t = (max exponent - 1) ln 2 / 2 the real part is sign(x) and the imaginary part
    4 sin y cos y e^(-2|x|), computed without overflow."""
    x, y = z
    sin_y, cos_y = _sin_cos(y)
    dtype = x.type.dtype.numpy
    t = float((np.finfo(dtype).maxexp - 1) * math.log(2) / 2)
    x_abs = P.absolute(x)
    one = const(1, x)
    sinh_x, cosh_x = P.sinh(x), P.cosh(x)
    sin_cos = P.mul(sin_y, cos_y)
    cos_squared = P.mul(cos_y, cos_y)
    tiny_sinh = P.le(P.absolute(sinh_x), P.mul(P.absolute(cos_y), const(np.finfo(dtype).eps, x)))
    denominator = P.select(tiny_sinh, cos_squared, P.add(P.mul(sinh_x, sinh_x), cos_squared))
    re = P.div(P.mul(sinh_x, cosh_x), denominator)
    im = P.div(sin_cos, denominator)
    exp_2t = const(float(np.exp(dtype.type(2 * t))), x)
    big_im = P.div(P.mul(const(4, x), sin_cos), exp_2t)
    rest = P.sub(x_abs, const(t, x))
    big_im = P.select(P.gt(rest, const(t, x)), P.div(big_im, exp_2t),
                      P.div(big_im, P.exp(P.mul(const(2, x), rest))))
    big = P.gt(x_abs, const(t, x))
    re = P.select(big, copysign(one, x), re)
    im = P.select(big, big_im, im)
    # Infinite or NaN parts (a zero real part stays: +-0 + i NaN for an infinite or NaN y).
    x_inf = _is_inf(x)
    inf_im = P.select(P.logical_and(_is_finite(y), P.gt(P.absolute(y), one)),
                      copysign(zeros_like(x), sin_cos), copysign(zeros_like(x), y))
    nan = const(np.nan, x)
    special = P.logical_not(P.logical_and(_is_finite(x), _is_finite(y)))
    special_re = P.select(x_inf, copysign(one, x), P.select(P.logical_or(_is_zero(y), _is_zero(x)), x, nan))
    special_im = P.select(x_inf, inf_im, P.select(_is_zero(y), y, nan))
    return Parts(P.select(special, special_re, re), P.select(special, special_im, im))


def sin(z: Parts) -> Parts:
    """-i sinh(iz); an infinite imaginary part with an infinite or NaN real part gives
    NaN + i inf whatever the signs (glibc's csin)."""
    result = _times_minus_i(sinh(_times_i(z)))
    both_special = P.logical_and(_is_inf(z.im), P.logical_not(_is_finite(z.re)))
    return select_parts(both_special, Parts(const(np.nan, z.re), const(np.inf, z.re)), result)


def cos(z: Parts) -> Parts:
    return cosh(_times_i(z))


def tan(z: Parts) -> Parts:
    return _times_minus_i(tanh(_times_i(z)))


# --------------------------------------------------------------------------- inverse functions

def _one_plus(z: Parts) -> Parts:
    return Parts(P.add(const(1, z.re), z.re), z.im)


def _one_minus(z: Parts) -> Parts:
    return Parts(P.sub(const(1, z.re), z.re), P.neg(z.im))


def _minus_one(z: Parts) -> Parts:
    return Parts(P.sub(z.re, const(1, z.re)), z.im)


def _halved_roots(z: Parts, first: Parts, second: Parts):
    """sqrt(first), sqrt(second) and the factor 1/4 their products carry: both roots are
    halved when a part of z is above a quarter of the largest float, so that products of
    the roots (about |z|) do not overflow."""
    huge = P.gt(P.maximum(P.absolute(z.re), P.absolute(z.im)),
                const(float(np.finfo(z.re.type.dtype.numpy).max) / 4, z.re))
    half = P.select(huge, const(0.5, z.re), const(1, z.re))
    s1, s2 = sqrt(first), sqrt(second)
    return Parts(P.mul(s1.re, half), P.mul(s1.im, half)), Parts(P.mul(s2.re, half), P.mul(s2.im, half)), huge


def _arcsinh_times_four(v: Value, huge: Value) -> Value:
    """asinh(4v) where `huge` (v then exceeds 1e150: asinh(4v) = asinh(v) + log 4 to within
    rounding), else asinh(v)."""
    size = P.absolute(v)
    scaled = copysign(P.add(P.arcsinh(size), const(math.log(4), v)), v)
    return P.select(huge, scaled, P.arcsinh(v))


def _kahan_arcsin(z: Parts) -> Parts:
    """Kahan: atan(x / Re(sqrt(1 - z) sqrt(1 + z))) + i asinh(Im(conj(sqrt(1 - z)) sqrt(1 + z)))."""
    s1, s2, huge = _halved_roots(z, _one_minus(z), _one_plus(z))
    x = P.mul(z.re, P.select(huge, const(0.25, z.re), const(1, z.re)))
    re = P.arctan2(x, P.sub(P.mul(s1.re, s2.re), P.mul(s1.im, s2.im)))
    im = _arcsinh_times_four(P.sub(P.mul(s1.re, s2.im), P.mul(s1.im, s2.re)), huge)
    return Parts(re, im)


def arcsinh(z: Parts) -> Parts:
    """glibc's casinh on infinite and NaN parts and at 0; Kahan's arcsin of iz, rotated back, elsewhere."""
    x, y = z
    finite = _times_minus_i(_kahan_arcsin(_times_i(z)))
    inf, nan, zero = const(np.inf, x), const(np.nan, x), zeros_like(x)
    x_inf, y_inf, x_nan, y_nan = _is_inf(x), _is_inf(y), _is_nan(x), _is_nan(y)
    # An infinite imaginary part: +-inf (the sign of x) + i (pi/2 or pi/4 for an infinite x, NaN for a NaN x).
    angle = P.select(x_inf, const(math.pi / 4, x), const(math.pi / 2, x))
    y_inf_parts = Parts(copysign(inf, x), P.select(x_nan, nan, copysign(angle, y)))
    # An infinite or NaN real part (finite or NaN imaginary part): x + i (+-0 for an infinite x
    # with a finite y or a NaN x with a zero y, else NaN).
    signed_zero_im = P.logical_or(P.logical_and(x_inf, _is_finite(y)), P.logical_and(x_nan, _is_zero(y)))
    x_special_parts = Parts(x, P.select(signed_zero_im, copysign(zero, y), nan))
    result = select_parts(P.logical_and(_is_zero(x), _is_zero(y)), z, finite)
    result = select_parts(y_nan, Parts(nan, nan), result)
    result = select_parts(P.logical_or(x_inf, x_nan), x_special_parts, result)
    return select_parts(y_inf, y_inf_parts, result)


def arcsin(z: Parts) -> Parts:
    """-i asinh(iz), except NaN parts as glibc's casin: x + i y for a zero x, NaN +- i inf
    when the other part is infinite, else NaN + i NaN."""
    x, y = z
    result = _times_minus_i(arcsinh(_times_i(z)))
    nan, inf = const(np.nan, x), const(np.inf, x)
    either_nan = P.logical_or(_is_nan(x), _is_nan(y))
    either_inf = P.logical_or(_is_inf(x), _is_inf(y))
    nan_parts = select_parts(_is_zero(x), z, select_parts(either_inf, Parts(nan, copysign(inf, y)), Parts(nan, nan)))
    return select_parts(either_nan, nan_parts, result)


def arccos(z: Parts) -> Parts:
    """Kahan: 2 atan(Re sqrt(1 - z) / Re sqrt(1 + z)) + i asinh(Im(conj(sqrt(1 + z)) sqrt(1 - z)));
    glibc's pi/2 - casin(z) (a +0 real part, never -0) on infinite and NaN parts and at 0."""
    x, y = z
    s1, s2, huge = _halved_roots(z, _one_minus(z), _one_plus(z))
    finite = Parts(P.mul(const(2, x), P.arctan2(s1.re, s2.re)),
                   _arcsinh_times_four(P.sub(P.mul(s2.re, s1.im), P.mul(s2.im, s1.re)), huge))
    asin = arcsin(z)
    special_re = P.sub(const(math.pi / 2, x), asin.re)
    special_re = P.select(_is_zero(special_re), zeros_like(x), special_re)
    special = P.logical_not(P.logical_and(_is_finite(x), _is_finite(y)))
    special = P.logical_or(special, P.logical_and(_is_zero(x), _is_zero(y)))
    return select_parts(special, Parts(special_re, P.neg(asin.im)), finite)


def arccosh(z: Parts) -> Parts:
    """Kahan: asinh(Re(conj(sqrt(z - 1)) sqrt(z + 1))) + 2i atan(Im sqrt(z - 1) / Re sqrt(z + 1));
    glibc's cacosh on infinite and NaN parts and at 0."""
    x, y = z
    s1, s2, huge = _halved_roots(z, _minus_one(z), _one_plus(z))
    finite = Parts(_arcsinh_times_four(P.add(P.mul(s1.re, s2.re), P.mul(s1.im, s2.im)), huge),
                   P.mul(const(2, x), P.arctan2(s1.im, s2.re)))
    inf, nan = const(np.inf, x), const(np.nan, x)
    x_inf, y_inf, x_nan, y_nan = _is_inf(x), _is_inf(y), _is_nan(x), _is_nan(y)
    negative_x = signbit(x)
    # An infinite imaginary part: inf + i (+-pi/2, +-pi/4 or +-3pi/4 by x, NaN for a NaN x).
    angle = P.select(x_inf, P.select(negative_x, const(3 * math.pi / 4, x), const(math.pi / 4, x)),
                     const(math.pi / 2, x))
    y_inf_parts = Parts(inf, P.select(x_nan, nan, copysign(angle, y)))
    # An infinite real part: inf + i (+-pi for -inf, +-0 for +inf, NaN for a NaN y).
    x_inf_parts = Parts(inf, P.select(y_nan, nan, copysign(P.select(negative_x, const(math.pi, x),
                                                                   zeros_like(x)), y)))
    at_zero = Parts(zeros_like(x), copysign(const(math.pi / 2, x), y))
    result = select_parts(P.logical_and(_is_zero(x), _is_zero(y)), at_zero, finite)
    nan_im = P.select(P.logical_and(_is_zero(x), y_nan), const(math.pi / 2, x), nan)      # NaN + i pi/2 at x = 0
    result = select_parts(P.logical_or(x_nan, y_nan), Parts(nan, nan_im), result)
    result = select_parts(x_inf, x_inf_parts, result)
    return select_parts(y_inf, y_inf_parts, result)


def arctanh(z: Parts) -> Parts:
    """glibc's catanh: the real part log(|1 + z|^2 / |1 - z|^2) / 4, by log where that
    ratio is below 1/2 and by log1p(4x / |1 - z|^2) above (no cancellation either way),
    (log 2 - log|y|) / 2 at x = +-1 with a y so small that |1 - z|^2 underflows; the
    imaginary part atan2(2y, (1 - x)(1 + x) - y^2) / 2; x / |z|^2 + i sign(y) pi/2 for |z|
    so large that the squares overflow; C99's values on infinite and NaN parts and at 0."""
    x, y = z
    one, zero, quarter = const(1, x), zeros_like(x), const(0.25, x)
    dtype = x.type.dtype.numpy
    eps = float(np.finfo(dtype).eps)
    y_squared = P.select(P.lt(P.absolute(y), const(eps * eps, x)), zero, P.mul(y, y))
    one_plus, one_minus = P.add(one, x), P.sub(one, x)
    numerator = P.add(P.mul(one_plus, one_plus), y_squared)
    denominator = P.add(P.mul(one_minus, one_minus), y_squared)
    ratio = P.div(numerator, denominator)
    re = P.select(P.lt(ratio, const(0.5, x)), P.mul(quarter, P.log(ratio)),
                  P.mul(quarter, P.log1p(P.div(P.mul(const(4, x), x), denominator))))
    at_one = P.logical_and(P.eq(P.absolute(x), one), P.lt(P.absolute(y), const(eps * eps, x)))
    re = P.select(at_one, P.mul(copysign(const(0.5, x), x), P.sub(const(math.log(2), x), P.log(P.absolute(y)))), re)
    im = P.mul(const(0.5, x), P.arctan2(P.mul(const(2, x), y), P.sub(P.mul(one_minus, one_plus), P.mul(y, y))))
    limit = const(float(np.sqrt(np.finfo(dtype).max)) / 4, x)
    huge = P.gt(P.maximum(P.absolute(x), P.absolute(y)), limit)
    half = const(0.5, x)
    half_modulus = P.hypot(P.mul(x, half), P.mul(y, half))
    huge_re = P.mul(P.div(P.div(P.mul(x, half), half_modulus), half_modulus), quarter)
    result = select_parts(huge, Parts(huge_re, copysign(const(math.pi / 2, x), y)), Parts(re, im))
    nan = const(np.nan, x)
    x_inf, y_inf, x_nan, y_nan = _is_inf(x), _is_inf(y), _is_nan(x), _is_nan(y)
    # An infinite imaginary part: +-0 + i +-pi/2. An infinite or zero real part with a NaN
    # or finite imaginary part: +-0 + i (+-pi/2, NaN for a NaN y). Other NaNs: NaN + i NaN.
    half_pi = copysign(const(math.pi / 2, x), y)
    special = Parts(P.select(P.logical_or(y_inf, P.logical_or(x_inf, _is_zero(x))), copysign(zero, x), nan),
                    P.select(y_inf, half_pi, P.select(P.logical_and(P.logical_or(x_inf, _is_zero(x)),
                                                                    P.logical_not(y_nan)), half_pi, nan)))
    result = select_parts(P.logical_or(P.logical_or(x_inf, y_inf), P.logical_or(x_nan, y_nan)), special, result)
    return select_parts(P.logical_and(_is_zero(x), _is_zero(y)), z, result)


def arctan(z: Parts) -> Parts:
    return _times_minus_i(arctanh(_times_i(z)))
