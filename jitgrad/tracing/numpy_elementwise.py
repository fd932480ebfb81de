"""NumPy's elementwise functions that are compositions of other ufuncs: rounding, float
classification, angle conversion, sinc, logaddexp2, nan_to_num, heaviside, isclose.

Rounding is exact without a primitive of its own: x - fmod(x, 1) is x truncated toward
zero (fmod is exact, and so is the subtraction, whose result is representable); floor,
ceil and rint adjust that by one. Zeros keep the sign of x, as in C. The gradient of every
rounding function is zero: each result passes through `stop_gradient`, since the
composition's own derivative (d(x - fmod(x, 1)) = dx - dx) is zero only in exact
arithmetic — a large cotangent added to another one and then subtracted again loses the
smaller one's digits, and an infinite one makes NaN.
"""
from __future__ import annotations

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import DTypeError, UnsupportedOperationError
from jitgrad.ir import DType, Value
from . import numpy_api as api
from .numpy_api import as_value


def _full(value, like: Value) -> Value:
    return P.full(value, like.type)


def _isinf(x: Value) -> Value:
    return P.eq(P.absolute(x), _full(np.inf, x))


def _trunc(x: Value) -> Value:
    if not x.type.dtype.is_float:
        return x
    whole = P.sub(x, P.fmod(x, _full(1, x)))
    whole = P.select(P.lt(P.absolute(x), _full(1, x)), P.mul(x, _full(0, x)), whole)   # ±0 as x's sign
    return P.select(_isinf(x), x, whole)


def _floor(x: Value) -> Value:
    if not x.type.dtype.is_float:
        return x
    t = _trunc(x)
    return P.sub(t, P.convert(P.gt(t, x), x.type.dtype))


def _ceil(x: Value) -> Value:
    if not x.type.dtype.is_float:
        return x
    t = _trunc(x)
    up = P.add(t, P.convert(P.lt(t, x), x.type.dtype))
    return P.select(P.eq(up, _full(0, x)), P.mul(x, _full(0, x)), up)      # ceil(-0.5) is -0.0


def _rint(x: Value) -> Value:
    """Round half to even: floor, plus one above the half and at the half of an odd floor."""
    if not x.type.dtype.is_float:
        return x
    low = _floor(x)
    frac = P.sub(x, low)
    half = _full(0.5, x)
    odd = P.ne(P.fmod(low, _full(2, x)), _full(0, x))
    up = P.logical_or(P.gt(frac, half), P.logical_and(P.eq(frac, half), odd))
    rounded = P.add(low, P.convert(up, x.type.dtype))
    rounded = P.select(P.eq(rounded, _full(0, x)), P.mul(x, _full(0, x)), rounded)
    return P.select(_isinf(x), x, rounded)


def _isnan(x: Value) -> Value:
    return P.ne(x, x) if x.type.dtype.is_float else P.full(False, x.type.with_dtype(DType.bool))


def _isinf_fn(x: Value) -> Value:
    return _isinf(x) if x.type.dtype.is_float else P.full(False, x.type.with_dtype(DType.bool))


def _isfinite(x: Value) -> Value:
    if not x.type.dtype.is_float:
        return P.full(True, x.type.with_dtype(DType.bool))
    return P.logical_not(P.logical_or(_isnan(x), _isinf(x)))


def _scale(numerator: float, denominator: float):
    """deg2rad/rad2deg: one multiply by numerator / denominator, a quotient NumPy's loops
    compute in the array's dtype (NPY_PIf / 180.0f for float32)."""
    def scale(x):
        dtype = x.type.dtype.numpy
        return P.mul(x, _full((dtype.type(numerator) / dtype.type(denominator)).item(), x))
    return scale


def _heaviside(x1, x2) -> Value:
    x1, x2 = api.broadcast_values(*api.promote(x1, x2))
    step = P.select(P.lt(x1, _full(0, x1)), _full(0, x1), P.select(P.gt(x1, _full(0, x1)), _full(1, x1), x2))
    return P.select(_isnan(x1), x1, step)


def _logaddexp2(a, b) -> Value:
    """max + log2(1 + 2^-|a - b|), as NumPy's npy_logaddexp2."""
    a, b = api.broadcast_values(*api.promote(a, b))
    diff = P.sub(a, b)
    diff = P.select(P.eq(a, b), _full(0, diff), diff)
    tail = P.mul(P.log1p(P.exp2(P.neg(P.absolute(diff)))), _full(1 / np.log(2), diff))
    return P.add(P.maximum(a, b), tail)


def _zero_gradient(rounding):
    def rounded(x: Value) -> Value:
        return P.stop_gradient(rounding(x)) if x.type.dtype.is_float else x
    return rounded


_IMPLS = {
    np.floor: _zero_gradient(_floor), np.ceil: _zero_gradient(_ceil), np.trunc: _zero_gradient(_trunc),
    np.rint: _zero_gradient(_rint),
    np.isnan: _isnan, np.isinf: _isinf_fn, np.isfinite: _isfinite,
    np.deg2rad: _scale(np.pi, 180), np.radians: _scale(np.pi, 180),
    np.rad2deg: _scale(180, np.pi), np.degrees: _scale(180, np.pi),
    np.heaviside: _heaviside, np.logaddexp2: _logaddexp2, np.conjugate: lambda x: x,
}

UFUNCS = {ufunc: api._numpy_loop(ufunc, impl) for ufunc, impl in _IMPLS.items()}


# --------------------------------------------------------------------------- functions built on the ufuncs

def round_(a, decimals=0, out=None):
    """NumPy's round: rint(x * 10^d) / 10^d (for d < 0: rint(x / 10^-d) * 10^-d), with the
    factor a Python float (weak), as NumPy's own implementation."""
    if out is not None:
        raise UnsupportedOperationError("numpy.round: out= is not supported; use the returned value")
    x = as_value(a)
    decimals = int(decimals)
    if x.type.dtype == DType.bool:
        if decimals == 0:                # NumPy's rint loop for bool: float16
            return UFUNCS[np.rint](x)
        raise DTypeError("numpy.round of a bool array with decimals is not supported (NumPy raises); "
                         "convert it with .astype(float) first")
    rint = UFUNCS[np.rint]
    if not x.type.dtype.is_float:
        if decimals >= 0:
            return x
        # NumPy: in float64, rint(x / 10^k) * 10^k, cast back to the integer dtype
        factor = P.full(float(10.0 ** -decimals), x.type.with_dtype(DType.f64))
        wide = P.div(P.convert(x, DType.f64), factor)
        return P.convert(P.mul(rint(wide), factor), x.type.dtype)
    if decimals == 0:
        return rint(x)
    mul, div = api.UFUNCS[np.multiply], api.UFUNCS[np.true_divide]

    def into_x(v):                   # NumPy writes each step into an array of x's dtype (bfloat16
        v = as_value(v)              # times a Python float is float32, rounded back to bfloat16)
        return v if v.type.dtype == x.type.dtype else P.convert(v, x.type.dtype)
    if decimals > 0:
        factor = float(10.0 ** decimals)
        return into_x(div(rint(into_x(mul(x, factor))), factor))
    factor = float(10.0 ** -decimals)
    return into_x(mul(rint(into_x(div(x, factor))), factor))


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    v = as_value(x)
    if not v.type.dtype.is_float or v.type.dtype == DType.bf16:
        return v                     # NumPy: bfloat16 is no np.inexact, returned unchanged
    for name, value in (("nan", nan), ("posinf", posinf), ("neginf", neginf)):
        if isinstance(value, Value):
            raise UnsupportedOperationError(f"numpy.nan_to_num: a traced {name}= is not supported; "
                                            "use np.where(np.isnan(x), value, x)")
    info = np.finfo(v.type.dtype.numpy)
    big = info.max if posinf is None else posinf
    small = info.min if neginf is None else neginf
    dtype = v.type.dtype.numpy
    v = P.select(_isnan(v), _full(np.asarray(nan).astype(dtype).item(), v), v)
    v = P.select(P.eq(v, _full(np.inf, v)), _full(np.asarray(big).astype(dtype).item(), v), v)
    return P.select(P.eq(v, _full(-np.inf, v)), _full(np.asarray(small).astype(dtype).item(), v), v)


def sinc(x):
    """NumPy's own formula: y = pi x, or where that is 0 the machine epsilon of a real
    dtype (1e-20 for a complex one, as NumPy); sin(y) / y."""
    y = as_value(api.UFUNCS[np.multiply](np.pi, as_value(x)))
    eps = 1e-20 if y.type.dtype.is_complex else np.finfo(y.type.dtype.numpy).eps.item()
    y = P.select(P.ne(y, _full(0, y)), y, _full(eps, y))
    return api.UFUNCS[np.true_divide](api.UFUNCS[np.sin](y), y)


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """NumPy's formula: |a - b| <= atol + rtol |b| where b is finite, or a == b."""
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, Value) or np.ndim(value):
            raise UnsupportedOperationError(f"numpy.isclose: a traced or array {name}= is not supported; "
                                            "pass a Python float")
    u = api.UFUNCS
    y = b
    if isinstance(y, Value) or isinstance(y, np.ndarray | np.generic):
        y = as_value(y)
        y = P.convert(y, api.result_dtype(y, 1.0))
    elif isinstance(y, int):            # a Python bool too (NumPy tests isinstance(y, int))
        y = float(y)
    x = a if isinstance(a, (Value, int, float, complex)) else as_value(np.asarray(a))
    diff = u[np.absolute](u[np.subtract](x, y))
    close = u[np.less_equal](diff, u[np.add](atol, u[np.multiply](rtol, u[np.absolute](y))))
    result = u[np.logical_or](u[np.logical_and](close, _classify(np.isfinite, y)), u[np.equal](x, y))
    if equal_nan:
        result = u[np.logical_or](result, u[np.logical_and](_classify(np.isnan, x), _classify(np.isnan, y)))
    return as_value(result)


def _classify(ufunc, v):
    """isnan/isfinite of a traced value (through NumPy's table, which holds their complex
    versions), or of a Python number (a constant)."""
    return api.UFUNCS[ufunc](v) if isinstance(v, Value) else bool(ufunc(v))


def fix(x):
    """NumPy's fix: ceil, then floor where x >= 0 (the dtypes of those ufuncs' loops)."""
    v = as_value(x)
    return api.where(api.UFUNCS[np.greater_equal](v, 0), UFUNCS[np.floor](v), UFUNCS[np.ceil](v))


FUNCTIONS = {np.fix: fix, np.round: round_, np.around: round_, np.nan_to_num: nan_to_num, np.sinc: sinc,
             np.isclose: isclose}
