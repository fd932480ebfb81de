"""`scipy.special` ufuncs on traced arrays, composed from jitgrad's primitives.

SciPy's special functions are NumPy ufuncs, so a traced array reaches them through
`__array_ufunc__`; `lookup` finds the rule for one without importing SciPy (a SciPy ufunc
in the user's hands means scipy.special is loaded). The loop dtype is SciPy's own
(`ufunc.resolve_dtypes`: float16 and integers compute in float64).

- `expit`, `logit`, `xlogy`, `xlog1py`, `entr` follow SciPy's formulas operation for
  operation (including logit's two formulas around 0.5 and the zero/NaN cases).
- `erf`, `erfc`, `ndtr`: Cephes' rational approximations, the code SciPy runs, operation
  for operation (exp(-x*x) from the rounded square, as SciPy), in float64 (SciPy's
  float32 loops round the float64 result too).
- `log_ndtr`: SciPy's formula: log1p(-erfc(t) / 2) with Cephes' erfc above x = -1, and
  log(erfcx(-t) / 2) - t*t below, with erfcx(t) = exp(t*t) erfc(t) from Sun fdlibm's
  rational approximations of erfc without their exp(-t*t) factor (no overflow), and the
  asymptotic series beyond t = 28.
- The measured differences from SciPy over dense grids are in docs/array-api.md and
  asserted by tests/test_scipy_special.py; they come from jitgrad's exp and log, which
  are within 4 ulp of the correctly rounded value (glibc's are within 1).
- Derivatives come from the compositions; every branch a select discards is evaluated
  on an argument clamped into its own domain, so its zero cotangent stays zero.

- `gammaln`, `digamma` (`psi`) and `zeta(s, q)` (with `s` known at trace time) are the
  primitives of `jitgrad.primitives.special` (SciPy's Cephes algorithms, derivatives of
  every order). `scipy.special.polygamma(n, x)` is a Python function of `zeta` and `psi`
  that converts its arguments with the `numpy.asarray` SciPy imported; while a function is
  traced, `scipy.special.polygamma` is SciPy's same formula looking `asarray` up when
  called (so jitgrad's traced version is used), which works on traced `x` with a static
  `n` (a name imported with `from scipy.special import polygamma` before tracing keeps
  SciPy's function, which refuses traced arrays with an error).

Every other scipy.special ufunc raises `UnsupportedOperationError` naming
`scipy.special.<name>`.
"""
from __future__ import annotations

import sys

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import UnsupportedOperationError
from jitgrad.primitives import special
from jitgrad.ir import DType, Value
from . import numpy_api as api
from .module_patches import ModulePatches


def _c(value, like: Value) -> Value:
    return P.full(value, like.type)


def _horner(s: Value, coefficients) -> Value:
    """c0 + s*(c1 + s*(c2 + ...)), in that order of operations."""
    result = _c(coefficients[-1], s)
    for c in reversed(coefficients[:-1]):
        result = P.add(_c(c, s), P.mul(s, result))
    return result


def _isnan(x: Value) -> Value:
    return P.ne(x, x)


# --------------------------------------------------------------------------- SciPy's formulas

def _expit(x: Value) -> Value:
    return P.div(_c(1, x), P.add(_c(1, x), P.exp(P.neg(x))))


def _logit(x: Value) -> Value:
    """log(x / (1 - x)) away from 0.5; log1p(s) - log1p(-s), s = 2(x - 0.5), in [0.3, 0.65]."""
    plain = P.log(P.div(x, P.sub(_c(1, x), x)))
    s = P.mul(_c(2, x), P.sub(x, _c(0.5, x)))
    near_half = P.sub(P.log1p(s), P.log1p(P.neg(s)))
    outside = P.logical_or(P.lt(x, _c(0.3, x)), P.gt(x, _c(0.65, x)))
    return P.select(outside, plain, near_half)


def _x_times_log(log_fn):
    """x * log(y) (or log1p(y)), 0 where x is 0 and y is not NaN; the product is zero-safe,
    so at x = 0 the derivative in x is log(y), as the finite difference is."""
    def rule(x: Value, y: Value) -> Value:
        log_y = log_fn(y)
        zero_x = P.logical_and(P.eq(x, _c(0, x)), P.logical_not(_isnan(y)))
        return P.select(zero_x, P.safe_mul(x, log_y), P.mul(x, log_y))
    return rule


def _entr(x: Value) -> Value:
    """-x log x for x > 0, 0 at 0, -inf below, NaN for NaN."""
    positive = P.gt(x, _c(0, x))
    safe = P.select(positive, x, _c(1, x))
    value = P.neg(P.mul(safe, P.log(safe)))
    value = P.select(positive, value, P.select(P.eq(x, _c(0, x)), _c(0, x), _c(-np.inf, x)))
    return P.select(_isnan(x), x, value)


# --------------------------------------------------------------------------- erf and erfc (fdlibm)

# fdlibm's s_erf.c coefficients; jitgrad.nn's erf (for arrays, tapes and tracers) uses them too

ERF_ERX = 8.45062911510467529297e-01
ERF_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
       -5.77027029648944159157e-03, -2.37630166566501626084e-05)
ERF_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
       1.32494738004321644526e-04, -3.96022827877536812320e-06)
ERF_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
       3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
ERF_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
       1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
ERF_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
       -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
ERF_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
       6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
ERF_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
       -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
ERF_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
       3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)


def _small_ratio(x: Value) -> Value:
    """R(x^2) of |x| < 0.84375: erf(x) = x + x*R."""
    z = P.mul(x, x)
    return P.div(_horner(z, ERF_PP), _horner(z, ERF_QQ))


def _near_one(a: Value) -> Value:
    """P1/Q1 of s = |x| - 1 for |x| in [0.84375, 1.25]: erf(|x|) = erx + P1/Q1."""
    s = P.sub(a, _c(1, a))
    return P.div(_horner(s, ERF_PA), _horner(s, ERF_QA))


def _tail_ratio(a: Value) -> Value:
    """R/S for |x| in [1.25, 28]: erfc(|x|) = exp(-x*x - 0.5625 + R/S) / |x|."""
    s = P.div(_c(1, a), P.mul(a, a))
    middle = P.lt(a, _c(1 / 0.35, a))
    return P.select(middle, P.div(_horner(s, ERF_RA), _horner(s, ERF_SA)), P.div(_horner(s, ERF_RB), _horner(s, ERF_SB)))


def _clamped(a: Value, low: float, high: float) -> Value:
    """`a` held inside [low, high] for a formula valid there (selects discard it
    elsewhere; clamping keeps the unused lanes finite, so their zero cotangents stay zero)."""
    return P.minimum(P.maximum(a, _c(low, a)), _c(high, a))


def _erfcx_positive(t: Value) -> Value:
    """exp(t*t) erfc(t) for t >= 0, accurate for every t (no overflow): fdlibm's erfc
    with the exp(-t*t) factor left out, and the asymptotic series beyond 28."""
    small_t = P.minimum(t, _c(0.84375, t))
    small = P.mul(P.exp(P.mul(small_t, small_t)),
                  P.sub(_c(1, t), P.add(small_t, P.mul(small_t, _small_ratio(small_t)))))
    near_t = _clamped(t, 0.84375, 1.25)
    near = P.mul(P.exp(P.mul(near_t, near_t)), P.sub(_c(1 - ERF_ERX, t), _near_one(near_t)))
    tail_t = _clamped(t, 1.25, 28)
    scaled = P.div(P.exp(P.sub(_tail_ratio(tail_t), _c(0.5625, t))), tail_t)
    # beyond 28: erfcx(t) = (1 / (t sqrt(pi))) (1 - 1/(2t^2) + 3/(2t^2)^2 - 15/(2t^2)^3 + ...)
    far_t = P.maximum(t, _c(28, t))
    w = P.div(_c(1, t), P.mul(P.mul(_c(2, t), far_t), far_t))
    series = _horner(w, (1.0, -1.0, 3.0, -15.0, 105.0, -945.0, 10395.0))
    asymptotic = P.div(series, P.mul(far_t, _c(np.sqrt(np.pi), t)))
    return P.select(P.lt(t, _c(0.84375, t)), small,
                    P.select(P.lt(t, _c(1.25, t)), near, P.select(P.lt(t, _c(28, t)), scaled, asymptotic)))


# Cephes' erf and erfc (the code SciPy's scipy.special.erf/erfc/ndtr run), operation for
# operation, so the results agree with SciPy's to a few ulp: SciPy computes exp(-x*x)
# from the rounded square, and so does this.
_CT = (9.60497373987051638749E0, 9.00260197203842689217E1, 2.23200534594684319226E3,
       7.00332514112805075473E3, 5.55923013010394962768E4)
_CU = (3.35617141647503099647E1, 5.21357949780152679795E2, 4.59432382970980127987E3,
       2.26290000613890934246E4, 4.92673942608635921086E4)
_CP = (2.46196981473530512524E-10, 5.64189564831068821977E-1, 7.46321056442269912687E0,
       4.86371970985681366614E1, 1.96520832956077098242E2, 5.26445194995477358631E2,
       9.34528527171957607540E2, 1.02755188689515710272E3, 5.57535335369399327526E2)
_CQ = (1.32281951154744992508E1, 8.67072140885989742329E1, 3.54937778887819891062E2,
       9.75708501743205489753E2, 1.82390916687909736289E3, 2.24633760818710981792E3,
       1.65666309194161350182E3, 5.57535340817727675546E2)
_CR = (5.64189583547755073984E-1, 1.27536670759978104416E0, 5.01905042251180477414E0,
       6.16021097993053585195E0, 7.40974269950448939160E0, 2.97886665372100240670E0)
_CS = (2.26052863220117276590E0, 9.39603524938001434673E0, 1.20489539808096656605E1,
       1.70814450747565897222E1, 9.60896809063285878198E0, 3.36907645100081516050E0)
_MAXLOG = 7.09782712893383996843E2


def _polevl(x: Value, coefficients) -> Value:
    """Cephes' polevl: ((c0 x + c1) x + c2) ... in that order."""
    result = _c(coefficients[0], x)
    for c in coefficients[1:]:
        result = P.add(P.mul(result, x), _c(c, x))
    return result


def _p1evl(x: Value, coefficients) -> Value:
    """Cephes' p1evl: polevl with a leading coefficient 1."""
    result = P.add(x, _c(coefficients[0], x))
    for c in coefficients[1:]:
        result = P.add(P.mul(result, x), _c(c, x))
    return result


def _erf_inner(x: Value) -> Value:
    """x T(x^2) / U(x^2), Cephes' erf for |x| <= 1 (odd: the same operations on -x)."""
    z = P.mul(x, x)
    return P.div(P.mul(x, _polevl(z, _CT)), _p1evl(z, _CU))


def _erfc_outer(a: Value) -> Value:
    """Cephes' erfc for |a| >= 1: exp(-a*a) P(|a|)/Q(|a|) (R/S beyond 8), 2 minus that
    for a < 0, 0 or 2 where exp(-a*a) underflows."""
    x = P.maximum(P.absolute(a), _c(1, a))
    z = P.exp(P.neg(P.mul(a, a)))
    middle = P.div(P.mul(z, _polevl(x, _CP)), _p1evl(x, _CQ))
    far = P.div(P.mul(z, _polevl(x, _CR)), _p1evl(x, _CS))
    y = P.select(P.lt(x, _c(8, a)), middle, far)
    negative = P.lt(a, _c(0, a))
    y = P.select(negative, P.sub(_c(2, a), y), y)
    under = P.lt(P.neg(P.mul(a, a)), _c(-_MAXLOG, a))
    return P.select(P.logical_or(under, P.eq(y, _c(0, a))), P.select(negative, _c(2, a), _c(0, a)), y)


def _erf64(x: Value) -> Value:
    a = P.absolute(x)
    inner = _erf_inner(P.minimum(P.maximum(x, _c(-1, x)), _c(1, x)))
    outer = P.sub(_c(1, x), _erfc_outer(a))
    outer = P.select(P.lt(x, _c(0, x)), P.neg(outer), outer)
    return P.select(_isnan(x), x, P.select(P.gt(a, _c(1, x)), outer, inner))


def _erfc64(x: Value) -> Value:
    inner = P.sub(_c(1, x), _erf_inner(P.minimum(P.maximum(x, _c(-1, x)), _c(1, x))))
    return P.select(_isnan(x), x, P.select(P.lt(P.absolute(x), _c(1, x)), inner, _erfc_outer(x)))


_SQRT1_2 = 0.70710678118654752440


def _ndtr64(x: Value) -> Value:
    """Cephes' ndtr: 0.5 + 0.5 erf(t) for |t| < 1/sqrt 2, else 0.5 erfc(|t|), reflected
    for t > 0 (t = x / sqrt 2, rounded as SciPy rounds it)."""
    t = P.mul(x, _c(_SQRT1_2, x))
    near = P.add(_c(0.5, x), P.mul(_c(0.5, x), _erf64(t)))
    half_tail = P.mul(_c(0.5, x), _erfc64(P.absolute(t)))
    far = P.select(P.gt(t, _c(0, x)), P.sub(_c(1, x), half_tail), half_tail)
    return P.select(_isnan(x), x, P.select(P.lt(P.absolute(t), _c(_SQRT1_2, x)), near, far))


def _log_ndtr64(x: Value) -> Value:
    """SciPy's log_ndtr (t = x / sqrt 2): log(erfcx(-t) / 2) - t*t below x = -1 (erfcx
    accurate for every t), else log1p(-erfc(t) / 2) with Cephes' erfc, as SciPy."""
    t = P.mul(x, _c(_SQRT1_2, x))
    low = P.lt(x, _c(-1, x))
    lower_t = P.minimum(P.maximum(P.neg(t), _c(_SQRT1_2, x)), _c(1e150, x))
    lower = P.sub(P.log(P.div(_erfcx_positive(lower_t), _c(2, x))), P.mul(t, t))
    upper_t = P.maximum(t, _c(-_SQRT1_2, x))
    upper = P.log1p(P.neg(P.div(_erfc64(upper_t), _c(2, x))))
    result = P.select(low, lower, upper)
    result = P.select(P.eq(x, _c(-np.inf, x)), _c(-np.inf, x), result)
    return P.select(_isnan(x), x, result)


def _in_float64(rule):
    """A rule computed in float64 and rounded to the loop's dtype (SciPy's float32 loops
    of these functions call the float64 code)."""
    def wrapped(x: Value) -> Value:
        if x.type.dtype == DType.f64:
            return rule(x)
        return P.convert(rule(P.convert(x, DType.f64)), x.type.dtype)
    return wrapped


# --------------------------------------------------------------------------- the table

RULES = {
    "expit": _expit, "logit": _logit, "xlogy": _x_times_log(P.log), "xlog1py": _x_times_log(P.log1p),
    "entr": _entr, "erf": _in_float64(_erf64), "erfc": _in_float64(_erfc64), "ndtr": _in_float64(_ndtr64),
    "log_ndtr": _in_float64(_log_ndtr64), "gammaln": special.lgamma, "psi": special.digamma,
}
"""scipy.special ufunc name -> rule on values already converted to the loop's dtype."""


_PRIVATE_UFUNCS = {"_zeta": "zeta"}
"""SciPy ufuncs that a public scipy.special function calls under a private name."""


def scipy_name(ufunc) -> str | None:
    """`scipy.special.<name>` when `ufunc` is that SciPy ufunc, else None."""
    name = getattr(ufunc, "__name__", None)
    if name in _PRIVATE_UFUNCS:
        module = sys.modules.get("scipy.special._ufuncs")
        if module is not None and getattr(module, name, None) is ufunc:
            return f"scipy.special.{_PRIVATE_UFUNCS[name]}"
        return None
    module = sys.modules.get("scipy.special")
    if module is None or name is None or getattr(module, name, None) is not ufunc:
        return None
    return f"scipy.special.{name}"


def _zeta(ufunc):
    """scipy.special.zeta(s, q) for a traced q: s must be known at trace time (one value,
    or an array of them, each computed by its own `zeta` op and selected by position)."""
    def impl(s, q):
        if isinstance(s, Value):
            raise UnsupportedOperationError("scipy.special.zeta(s, q) needs the order s known at trace time "
                                            "(a Python number or NumPy array); only q may be traced")
        dtypes_in, dtypes_out = api.ufunc_dtypes(ufunc, s, q)
        orders = np.asarray(s, dtype=np.float64)
        value = api.as_value(q, dtypes_in[1])
        shape = api.broadcast_shapes(orders.shape, value.type.shape)
        value = api.broadcast_to(value, shape)
        orders = np.broadcast_to(orders, shape)
        result = None
        for order in np.unique(orders):
            part = special.zeta(value, float(order))
            result = part if result is None else P.select(P.constant(orders == order), part, result)
        if result is None:                          # an empty array
            result = value
        return P.convert(result, dtypes_out[0]) if result.type.dtype != dtypes_out[0] else result
    impl.__name__ = "zeta"
    return impl


def lookup(ufunc):
    """The traced implementation of a scipy.special ufunc (operands of any dtype), or None."""
    if scipy_name(ufunc) is None:
        return None
    if ufunc.__name__ == "_zeta":
        return _zeta(ufunc)
    rule = RULES.get(ufunc.__name__)
    if rule is None:
        return None

    def impl(*operands):
        dtypes_in, dtypes_out = api.ufunc_dtypes(ufunc, *operands)
        values = [api.as_value(x, d) for x, d in zip(operands, dtypes_in, strict=True)]
        if not dtypes_out[0].is_float:
            raise api.DTypeError(f"scipy.special.{ufunc.__name__}: loop {dtypes_in} -> {dtypes_out} not supported")
        values = api.broadcast_values(*values)
        return rule(*values)
    impl.__name__ = ufunc.__name__
    return impl


# --------------------------------------------------------------------------- Python functions

def _polygamma(n, x):
    """SciPy's polygamma, operation for operation, with `asarray` and `where` looked up
    when called (jitgrad's versions during a trace)."""
    module = sys.modules["scipy.special"]
    n, x = np.asarray(n), np.asarray(x)
    fac2 = (-1.0) ** (n + 1) * module.gamma(n + 1.0) * module.zeta(n + 1, x)
    return np.where(n == 0, module.psi(x), fac2)


PYTHON_FUNCTION_REPLACEMENTS = {"polygamma": _polygamma}
"""scipy.special's Python functions that cannot take traced arrays as SciPy wrote them,
replaced in scipy.special while any thread traces (when SciPy is loaded)."""


def _scipy_special_targets():
    module = sys.modules.get("scipy.special")
    return [] if module is None else [(module, name) for name in PYTHON_FUNCTION_REPLACEMENTS]


_patches = ModulePatches(_scipy_special_targets, lambda name, original: PYTHON_FUNCTION_REPLACEMENTS[name])


replacing_python_functions = _patches.trace_context()
"""Entered around every trace (`tracer.TRACE_CONTEXTS`)."""
