"""Transcendental primitives that NumPy computes with one library call each: exp2, log2,
log10, sinh, cosh, cbrt and hypot.

Composing them from exp and log (exp2(x) = exp(x ln 2), log10(x) = log(x) / ln 10,
sinh(x) = (e^x - e^-x) / 2) rounds twice and loses exactness where NumPy has it
(exp2(3) = 8, log10(1000) = 3) and cancels catastrophically near 0 (sinh(1e-15)).
Each is therefore its own primitive lowered to the libm function of the operand's
precision (`exp2f` for float32, as NumPy calls) and, in vectorized loops, to glibc's
libmvec variant where that is as accurate (`backends/cpu/scalar.py` decides).

`ULP_BOUNDS` is the measured contract: the largest error, in units in the last place of
the float64/float32 result, that jitgrad's compiled code may have for each function,
measured by `benchmarks/ulp_table.py` against an mpmath reference (docs/numerics.md).
Differential tests and the fuzzer compare against NumPy within these bounds.
"""
from __future__ import annotations

import math

import numpy as np

from .elementwise import (MATH_CALL_COST, _elementwise, _float_impl, _full_like, add, div, integer_pow, mul, neg,
                          safe_div, sqrt, sub, tangent_div, tangent_mul)
from jitgrad.ir import DType
from .base import defjvp, defjvp2

# function (NumPy's name, and the primitive's where it differs) -> {dtype name: max ulp
# error of compiled code (vectorized or scalar)}, a margin
# above the largest error measured over the sample in docs/numerics.md. float16 and
# bfloat16 are computed in float32 and rounded once, as NumPy (and ml_dtypes) do: within
# one ulp of their precision.
ULP_BOUNDS: dict[str, dict[str, float]] = {
    "exp": {"f64": 4, "f32": 4}, "log": {"f64": 4, "f32": 4},
    "exp2": {"f64": 4, "f32": 4}, "log2": {"f64": 4, "f32": 4}, "log10": {"f64": 4, "f32": 4},
    "expm1": {"f64": 4, "f32": 4}, "log1p": {"f64": 4, "f32": 4},
    "sin": {"f64": 4, "f32": 4}, "cos": {"f64": 4, "f32": 4}, "tan": {"f64": 4, "f32": 4},
    "sinh": {"f64": 4, "f32": 4}, "cosh": {"f64": 4, "f32": 4}, "tanh": {"f64": 4, "f32": 4},
    "cbrt": {"f64": 4, "f32": 4}, "hypot": {"f64": 4, "f32": 4},
    "pow": {"f64": 4, "f32": 4}, "sqrt": {"f64": 0.5, "f32": 0.5},
    "arcsin": {"f64": 4, "f32": 4}, "arccos": {"f64": 4, "f32": 4}, "arctan": {"f64": 4, "f32": 4},
    "arcsinh": {"f64": 4, "f32": 4}, "arccosh": {"f64": 4, "f32": 4}, "arctanh": {"f64": 4, "f32": 4},
    "arctan2": {"f64": 4, "f32": 4},
}
for _bounds in ULP_BOUNDS.values():
    _bounds.update(f16=1, bf16=1)
# Primitives named as C's libm names them ("asin") share the bounds of the NumPy function.
ULP_BOUNDS.update({prim: ULP_BOUNDS[numpy_name] for prim, numpy_name in
                   [("asin", "arcsin"), ("acos", "arccos"), ("atan", "arctan"), ("asinh", "arcsinh"),
                    ("acosh", "arccosh"), ("atanh", "arctanh"), ("atan2", "arctan2")]})


def _math(name: str, np_fn, *, scalar=None, doc: str = ""):
    """A float-only elementwise primitive computed by the library function `name`
    (or by `scalar`, a rule around it)."""
    return _elementwise(name, _float_impl(np_fn), scalar or (lambda c, *xs, _n=name: c.math(_n, *xs)),
                        float_only=True, doc=doc, cost=MATH_CALL_COST)


exp2_p = _math("exp2", np.exp2, doc="2 ** x; exact for integer x.")
log2_p = _math("log2", np.log2, doc="Base-2 logarithm; exact at powers of two.")
log10_p = _math("log10", np.log10, doc="Base-10 logarithm; exact at powers of ten.")
sinh_p = _math("sinh", np.sinh, doc="Hyperbolic sine, accurate near 0.")
cosh_p = _math("cosh", np.cosh, doc="Hyperbolic cosine.")


def _cbrt_scalar(c, x):
    """libm's cbrt (up to 2 ulp off, also on perfect cubes) refined by one Newton step
    whose residual y^3 - x is computed almost exactly with FMAs: the result is correctly
    rounded in practice and exact on cubes, as NumPy's is. The residual's pieces must be
    normal numbers, so x far from 1 is first scaled by 2^(+-600) (exact) and the root back
    by 2^(-+200). Float64 only: float32 libm is already as exact as NumPy's."""
    if c.float_width(x) != 64:
        return c.math("cbrt", x)
    magnitude = c.math("fabs", x)
    small = c.cmp("<", magnitude, c.const(2.0 ** -900, x))
    big = c.cmp(">", magnitude, c.const(2.0 ** 900, x))
    one = c.const(1, x)
    x = c.mul(x, c.select(small, c.const(2.0 ** 600, x), c.select(big, c.const(2.0 ** -600, x), one)))
    y = c.math("cbrt", x)
    y2 = c.mul(y, y)
    y2_error = c.math("fma", y, y, c.neg(y2))                # y*y = y2 + y2_error exactly
    y3 = c.mul(y2, y)
    y3_error = c.math("fma", y2, y, c.neg(y3))               # y2*y = y3 + y3_error exactly
    residual = c.add(c.add(c.sub(y3, x), y3_error), c.mul(y2_error, y))
    refined = c.sub(y, c.div(residual, c.mul(c.const(3, x), y2)))
    magnitude = c.math("fabs", x)
    finite_nonzero = c.and_(c.cmp(">", magnitude, c.const(0, x)), c.cmp("<", magnitude, c.const(float("inf"), x)))
    root = c.select(finite_nonzero, refined, y)
    return c.mul(root, c.select(small, c.const(2.0 ** -200, x), c.select(big, c.const(2.0 ** 200, x), one)))


def _hypot_scalar(c, a, b):
    """float32: sqrt(a^2 + b^2) in float64, where it cannot overflow and is exact enough to
    round correctly (glibc's vector hypotf is 1 ulp off on Pythagorean triples), and +inf
    when either operand is infinite, even with a NaN (C99, as libm's hypot); float64:
    libm's hypot."""
    if c.float_width(a) != 32:
        return c.math("hypot", a, b)
    wide_a, wide_b = c.convert(a, DType.f64, source=DType.f32), c.convert(b, DType.f64, source=DType.f32)
    wide = c.math("sqrt", c.add(c.mul(wide_a, wide_a), c.mul(wide_b, wide_b)))
    inf = c.const(float("inf"), a)
    infinite = c.or_(c.cmp("==", c.math("fabs", a), inf), c.cmp("==", c.math("fabs", b), inf))
    return c.select(infinite, inf, c.convert(wide, DType.f32, source=DType.f64))


cbrt_p = _math("cbrt", np.cbrt, scalar=_cbrt_scalar, doc="Real cube root (negative for negative x).")
hypot_p = _math("hypot", np.hypot, scalar=_hypot_scalar,
                doc="sqrt(a*a + b*b) without overflow or underflow.")


tan_p = _math("tan", np.tan, doc="Tangent, one library call (not sin / cos: two roundings).")
arcsin_p = _math("asin", np.arcsin, doc="Inverse sine; NaN outside [-1, 1].")
arccos_p = _math("acos", np.arccos, doc="Inverse cosine; NaN outside [-1, 1].")
arctan_p = _math("atan", np.arctan, doc="Inverse tangent.")
arcsinh_p = _math("asinh", np.arcsinh, doc="Inverse hyperbolic sine.")
arccosh_p = _math("acosh", np.arccosh, doc="Inverse hyperbolic cosine; NaN below 1.")
arctanh_p = _math("atanh", np.arctanh, doc="Inverse hyperbolic tangent; +-inf at +-1.")
arctan2_p = _math("atan2", np.arctan2, doc="arctan2(y, x): the angle of the point (x, y).")


def exp2(x): return exp2_p.bind(x)
def log2(x): return log2_p.bind(x)
def log10(x): return log10_p.bind(x)
def sinh(x): return sinh_p.bind(x)
def cosh(x): return cosh_p.bind(x)
def cbrt(x): return cbrt_p.bind(x)
def hypot(a, b): return hypot_p.bind(a, b)
def tan(x): return tan_p.bind(x)
def arcsin(x): return arcsin_p.bind(x)
def arccos(x): return arccos_p.bind(x)
def arctan(x): return arctan_p.bind(x)
def arcsinh(x): return arcsinh_p.bind(x)
def arccosh(x): return arccosh_p.bind(x)
def arctanh(x): return arctanh_p.bind(x)
def arctan2(y, x): return arctan2_p.bind(y, x)


defjvp2(exp2_p, lambda t, ans, x: tangent_mul(t, mul(ans, _full_like(x, math.log(2)))))
defjvp(log2_p, lambda t, x: tangent_div(t, mul(x, _full_like(x, math.log(2)))))
defjvp(log10_p, lambda t, x: tangent_div(t, mul(x, _full_like(x, math.log(10)))))
defjvp(sinh_p, lambda t, x: tangent_mul(t, cosh(x)))
defjvp(cosh_p, lambda t, x: tangent_mul(t, sinh(x)))
defjvp2(cbrt_p, lambda t, ans, x: tangent_div(t, mul(_full_like(x, 3), mul(ans, ans))))
# d hypot = (a da + b db) / hypot: strong-zero quotients keep the gradient at (0, 0) zero,
# the convention of jitgrad's other kinks (|x| at 0, norm at 0).
defjvp2(hypot_p,
        lambda t, ans, a, b: tangent_mul(t, safe_div(a, ans)),
        lambda t, ans, a, b: tangent_mul(t, safe_div(b, ans)))

defjvp2(tan_p, lambda t, ans, x: tangent_mul(t, add(_full_like(x, 1), integer_pow(ans, 2))))
defjvp(arcsin_p, lambda t, x: tangent_div(t, _one_minus_square_root(x)))
defjvp(arccos_p, lambda t, x: neg(tangent_div(t, _one_minus_square_root(x))))
defjvp(arctan_p, lambda t, x: tangent_div(t, add(_full_like(x, 1), integer_pow(x, 2))))
defjvp(arcsinh_p, lambda t, x: tangent_div(t, _square_plus_one_root(x)))
defjvp(arccosh_p, lambda t, x: tangent_div(t, mul(sqrt(sub(x, _full_like(x, 1))), sqrt(add(x, _full_like(x, 1))))))
defjvp(arctanh_p, lambda t, x: tangent_div(t, mul(sub(_full_like(x, 1), x), add(_full_like(x, 1), x))))
# d atan2(y, x) = (x dy - y dx) / (x^2 + y^2); strong-zero quotients keep (0, 0) at zero.
defjvp(arctan2_p,
       lambda t, y, x: tangent_mul(t, safe_div(x, _squared_norm(y, x))),
       lambda t, y, x: neg(tangent_mul(t, safe_div(y, _squared_norm(y, x)))))


def _one_minus_square_root(x):
    """sqrt(1 - x^2) as sqrt((1 - x)(1 + x)): accurate near |x| = 1."""
    one = _full_like(x, 1)
    return sqrt(mul(sub(one, x), add(one, x)))


def _square_plus_one_root(x):
    """sqrt(x^2 + 1): hypot(x, 1) for real x (no overflow); the principal root for complex x."""
    if x.type.dtype.is_complex:
        return sqrt(add(mul(x, x), _full_like(x, 1)))
    return hypot(x, _full_like(x, 1))


def _squared_norm(y, x):
    return add(integer_pow(x, 2), integer_pow(y, 2))


__all__ = ["ULP_BOUNDS", "exp2", "log2", "log10", "sinh", "cosh", "cbrt", "hypot", "tan", "arcsin", "arccos",
           "arctan", "arcsinh", "arccosh", "arctanh", "arctan2",
           "exp2_p", "log2_p", "log10_p", "sinh_p", "cosh_p", "cbrt_p", "hypot_p", "tan_p", "arcsin_p", "arccos_p",
           "arctan_p", "arcsinh_p", "arccosh_p", "arctanh_p", "arctan2_p"]
