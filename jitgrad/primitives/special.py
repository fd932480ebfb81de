"""Special-function primitives: `lgamma` (log |Gamma(x)|), `digamma` (psi) and `zeta`
(Hurwitz's zeta(s, q), static order s), so that every derivative exists:
d lgamma = digamma, d digamma = zeta(2, x) (trigamma), d zeta(s, q)/dq = -s zeta(s + 1, q);
polygamma(n, x) = (-1)^(n+1) n! zeta(n + 1, x) is therefore defined to every order.

Each is computed in float64 by the algorithm SciPy runs (Cephes' `lgam`, `psi` with the
Taylor series about digamma's negative root that SciPy adds, and `zeta` by
Euler-Maclaurin summation), written once against the scalar-context API
(`jitgrad.backends.kernel.ScalarContext`: `c.add`, `c.select`, `c.math("log", x)` ...)
with its loops unrolled to their static bounds and early exits kept as masks, so the
same code lowers for the CPU and for CUDA. `NumpyScalars` runs that same code on NumPy
arrays: the reference implementation the interpreter uses. float32 (and float16,
bfloat16) operands are computed in float64 and rounded once, as SciPy's float32 loops do.

Where SciPy's zeta sums (q + k)^-s term by term for negative q (as many terms as |q|),
`zeta` uses the reflection formula of polygamma for integer s, and NaN for other s (as
SciPy): psi^(n)(q) = (-1)^n psi^(n)(1 - q) - pi^(n+1) cot^(n)(pi q).
"""
from __future__ import annotations

import math

import numpy as np

from jitgrad.errors import DTypeError, UnsupportedOperationError
from jitgrad.ir import DType, TensorType, Trait
from .base import Elementwise, Primitive, defjvp
from .elementwise import MATH_CALL_COST, _full_like, mul, tangent_mul

MACHEP = 1.11022302462515654042e-16
EULER = 0.5772156649015328606065120900824024310422
LOGPI = 1.14472988584940017414
LS2PI = 0.91893853320467274178
MAXLGM = 2.556348e305

# Cephes lgam: Stirling's series (A), and log Gamma on [2, 3] (B / C)
LGAM_A = (8.11614167470508450300E-4, -5.95061904284301438324E-4, 7.93650340457716943945E-4,
          -2.77777777730099687205E-3, 8.33333333333331927722E-2)
LGAM_B = (-1.37825152569120859100E3, -3.88016315134637840924E4, -3.31612992738871184744E5,
          -1.16237097492762307383E6, -1.72173700820839662146E6, -8.53555664245765465627E5)
LGAM_C = (-3.51815701436523470549E2, -1.70642106651881159223E4, -2.20528590553854454839E5,
          -1.13933444367982507207E6, -2.53252307177582951285E6, -2.01889141433532773231E6)

# Cephes psi: the asymptotic series (A), and Boost's rational approximation on [1, 2]
PSI_A = (8.33333333333333333333E-2, -2.10927960927960927961E-2, 7.57575757575757575758E-3,
         -4.16666666666666666667E-3, 3.96825396825396825397E-3, -8.33333333333333333333E-3,
         8.33333333333333333333E-2)
PSI_Y = float(np.float32(0.99558162689208984))
PSI_ROOT1 = 1569415565.0 / 1073741824.0
PSI_ROOT2 = (381566830.0 / 1073741824.0) / 1073741824.0
PSI_ROOT3 = 0.9016312093258695918615325266959189453125e-19
PSI_P = (-0.0020713321167745952, -0.045251321448739056, -0.28919126444774784, -0.65031853770896507,
         -0.32555031186804491, 0.25479851061131551)
PSI_Q = (-0.55789841321675513e-6, 0.0021284987017821144, 0.054151797245674225, 0.43593529692665969,
         1.4606242909763515, 2.0767117023730469, 1.0)
# SciPy's digamma near its first negative root: a Taylor series in zeta(n + 1, root)
DIGAMMA_NEGROOT = -0.504083008264455409
DIGAMMA_NEGROOTVAL = 7.2897639029768949e-17

# Euler-Maclaurin coefficients of Cephes zeta: (2k)! / B_2k
ZETA_A = (12.0, -720.0, 30240.0, -1209600.0, 47900160.0, -1.8924375803183791606e9, 7.47242496e10,
          -2.950130727918164224e12, 1.1646782814350067249e14, -4.5979787224074726105e15,
          1.8152105401943546773e17, -7.1661652561756670113e18)


def _zeta_python(x: float, q: float) -> float:
    """Cephes zeta(x, q) on Python floats, step for step (negative q summed term by term,
    as SciPy does); used once, for the constants of the series about the negative root."""
    s = q ** -x
    a, i, b = q, 0, 0.0
    while i < 9 or a <= 9.0:
        i += 1
        a += 1.0
        b = a ** -x
        s += b
        if abs(b / s) < MACHEP:
            return s
    w = a
    s += b * w / (x - 1.0)
    s -= 0.5 * b
    a, k = 1.0, 0.0
    for coefficient in ZETA_A:
        a *= x + k
        b /= w
        t = a * b / coefficient
        s = s + t
        if abs(t / s) < MACHEP:
            return s
        k += 1.0
        a *= x + k
        b /= w
        k += 1.0
    return s


NEGROOT_ZETAS = tuple(_zeta_python(n + 1.0, DIGAMMA_NEGROOT) for n in range(1, 100))
"""zeta(n + 1, digamma's negative root) for n = 1 .. 99."""


# --------------------------------------------------------------------------- scalar helpers

def _polevl(c, x, coefficients):
    """Cephes' polevl: ((c0 x + c1) x + c2) ..., in that order of operations."""
    result = c.const(coefficients[0], x)
    for k in coefficients[1:]:
        result = c.add(c.mul(result, x), c.const(k, x))
    return result


def _p1evl(c, x, coefficients):
    """Cephes' p1evl: polevl with an implicit leading coefficient 1."""
    result = c.add(x, c.const(coefficients[0], x))
    for k in coefficients[1:]:
        result = c.add(c.mul(result, x), c.const(k, x))
    return result


def _floor(c, x):
    """floor(x) of a finite float (NumPy's floor_divide by 1 is exact)."""
    return c.floor_divide(x, c.const(1, x))


def _is_finite(c, x):
    return c.cmp("<", c.math("fabs", x), c.const(math.inf, x))


def _where(c, pred, a, b):
    return c.select(pred, a, b)


def _cot_pi(c, r):
    """cot(pi r) for r in [-1/2, 1/2], accurate to a few ulp everywhere: 1/tan(pi r) in
    the middle, tan(pi (1/2 - r)) (or of -1/2 - r) towards the ends, where the shifted
    argument is exact and small, so cot(pi/2) is exactly 0."""
    quarter = c.const(0.25, r)
    half = c.const(0.5, r)
    pi = c.const(math.pi, r)
    middle = c.div(c.const(1, r), c.math("tan", c.mul(pi, r)))
    upper = c.math("tan", c.mul(pi, c.sub(half, r)))
    lower = c.math("tan", c.mul(pi, c.sub(c.neg(half), r)))
    return _where(c, c.cmp(">", r, quarter), upper, _where(c, c.cmp("<", r, c.neg(quarter)), lower, middle))


# --------------------------------------------------------------------------- lgamma (Cephes lgam)

def _stirling(c, s):
    """Cephes' log Gamma for s >= 13: (s - 1/2) log s - s + log sqrt(2 pi) + series / s."""
    q = c.add(c.sub(c.mul(c.sub(s, c.const(0.5, s)), c.math("log", s)), s), c.const(LS2PI, s))
    p = c.div(c.const(1, s), c.mul(s, s))
    series = c.div(_polevl(c, p, LGAM_A), s)
    large = c.div(c.add(c.mul(c.sub(c.mul(c.const(7.9365079365079365079365e-4, s), p),
                                    c.const(2.7777777777777777777778e-3, s)), p),
                        c.const(0.0833333333333333333333, s)), s)
    value = _where(c, c.cmp(">=", s, c.const(1000.0, s)),
                   _where(c, c.cmp(">", s, c.const(1.0e8, s)), q, c.add(q, large)), c.add(q, series))
    return _where(c, c.cmp(">", s, c.const(MAXLGM, s)), c.const(math.inf, s), value)


def lgamma64(c, x):
    """log |Gamma(x)| as Cephes' lgam: reflection below -34, the recurrence into [2, 3]
    and a rational approximation there below 13, Stirling's series above; +inf at the
    poles (0 and the negative integers) and where the recurrence overflows, as SciPy."""
    inf = c.const(math.inf, x)
    one = c.const(1, x)
    finite = _is_finite(c, x)
    safe_x = _where(c, finite, x, one)
    magnitude = c.math("fabs", safe_x)
    stirling = _stirling(c, c.maximum(magnitude, c.const(13.0, x)))

    # x < -34: log(pi / (q sin(pi z))) - lgam(q), q = -x, z the distance to the nearest integer
    q = magnitude
    p = _floor(c, q)
    z = c.sub(q, p)
    upper = c.cmp(">", z, c.const(0.5, x))
    z = _where(c, upper, c.sub(c.add(p, one), q), z)
    z = c.mul(q, c.math("sin", c.mul(c.const(math.pi, x), z)))
    reflection = c.sub(c.sub(c.const(LOGPI, x), c.math("log", z)), stirling)
    reflection = _where(c, c.or_(c.cmp("==", p, q), c.cmp("==", z, c.const(0, x))), inf, reflection)

    # -34 <= x < 13: z = Gamma(x) / Gamma(u) by the recurrence, u in [2, 3)
    middle_x = c.minimum(c.maximum(safe_x, c.const(-34.0, x)), c.const(13.0, x))
    z, p, u = one, c.const(0, x), middle_x
    for _ in range(10):                              # while u >= 3
        going = c.cmp(">=", u, c.const(3.0, x))
        p = _where(c, going, c.sub(p, one), p)
        u = _where(c, going, c.add(middle_x, p), u)
        z = _where(c, going, c.mul(z, u), z)
    pole = c.cmp("!=", one, one)
    for _ in range(36):                              # while u < 2
        going = c.cmp("<", u, c.const(2.0, x))
        pole = c.or_(pole, c.and_(going, c.cmp("==", u, c.const(0, x))))
        z = _where(c, going, c.div(z, u), z)
        p = _where(c, going, c.add(p, one), p)
        u = _where(c, going, c.add(middle_x, p), u)
    z = c.math("fabs", z)
    shifted = c.add(middle_x, c.sub(p, c.const(2.0, x)))
    rational = c.div(c.mul(shifted, _polevl(c, shifted, LGAM_B)), _p1evl(c, shifted, LGAM_C))
    log_z = c.math("log", z)
    middle = _where(c, c.cmp("==", u, c.const(2.0, x)), log_z, c.add(log_z, rational))
    middle = _where(c, pole, inf, middle)

    value = _where(c, c.cmp("<", x, c.const(-34.0, x)), reflection,
                   _where(c, c.cmp("<", x, c.const(13.0, x)), middle, stirling))
    return _where(c, finite, value, x)


# --------------------------------------------------------------------------- digamma (Cephes psi)

def _digamma_1_2(c, x):
    """Boost's rational approximation on [1, 2]: (x - root) (Y + R(x - 1))."""
    g = c.sub(c.sub(c.sub(x, c.const(PSI_ROOT1, x)), c.const(PSI_ROOT2, x)), c.const(PSI_ROOT3, x))
    t = c.sub(x, c.const(1, x))
    r = c.div(_polevl(c, t, PSI_P), _polevl(c, t, PSI_Q))
    return c.add(c.mul(g, c.const(PSI_Y, x)), c.mul(g, r))


def _digamma_asymptotic(c, x):
    """log x - 1/(2x) - sum B_2k / (2k x^2k), the series dropped beyond 1e17."""
    z = c.div(c.const(1, x), c.mul(x, x))
    y = _where(c, c.cmp("<", x, c.const(1.0e17, x)), c.mul(z, _polevl(c, z, PSI_A)), c.const(0, x))
    return c.sub(c.sub(c.math("log", x), c.div(c.const(0.5, x), x)), y)


def _psi(c, x):
    """Cephes psi for finite nonzero x that is not a negative integer."""
    one = c.const(1, x)
    negative = c.cmp("<", x, c.const(0, x))
    # reflection: psi(x) = psi(1 - x) - pi cot(pi r), r = x - trunc(x), moved into
    # [-1/2, 1/2] (cot has period pi, and the shift is exact) so that it stays accurate
    # near the poles, where Cephes' tan(pi r) loses digits for r near -1
    r = c.sub(x, c.neg(_floor(c, c.neg(x))))
    r = _where(c, c.cmp("<", r, c.const(-0.5, x)), c.add(r, c.const(1, x)), r)
    y = _where(c, negative, c.neg(c.mul(c.const(math.pi, x), _cot_pi(c, r))), c.const(0, x))
    x = _where(c, negative, c.sub(one, x), x)
    # positive integers up to 10: -EULER + sum 1/i
    integer = c.and_(c.cmp("<=", x, c.const(10.0, x)), c.cmp("==", x, _floor(c, c.minimum(x, c.const(16.0, x)))))
    harmonic = y
    for i in range(1, 10):
        harmonic = _where(c, c.cmp("<", c.const(float(i), x), x), c.add(harmonic, c.const(1.0 / i, x)), harmonic)
    harmonic = c.sub(harmonic, c.const(EULER, x))
    # the recurrence into [1, 2]
    below_one = c.cmp("<", x, one)
    y = _where(c, below_one, c.sub(y, c.div(one, x)), y)
    x = _where(c, below_one, c.add(x, one), x)
    below_ten = c.cmp("<", x, c.const(10.0, x))
    for _ in range(8):                              # while x > 2
        going = c.and_(below_ten, c.cmp(">", x, c.const(2.0, x)))
        x = _where(c, going, c.sub(x, one), x)
        y = _where(c, going, c.add(y, c.div(one, x)), y)
    in_1_2 = c.and_(c.cmp(">=", x, one), c.cmp("<=", x, c.const(2.0, x)))
    small = c.minimum(c.maximum(x, one), c.const(2.0, x))
    large = c.maximum(x, c.const(2.0, x))
    y = c.add(y, _where(c, in_1_2, _digamma_1_2(c, small), _digamma_asymptotic(c, large)))
    return _where(c, integer, harmonic, y)


def _negative_root_series(c, x):
    """SciPy's Taylor series of digamma about its first negative root, |x - root| < 0.3."""
    z = c.sub(x, c.const(DIGAMMA_NEGROOT, x))
    result = c.const(DIGAMMA_NEGROOTVAL, x)
    coefficient = c.const(-1.0, x)
    done = c.cmp("!=", z, z)
    for zeta in NEGROOT_ZETAS:
        coefficient = c.mul(coefficient, c.neg(z))
        term = c.mul(coefficient, c.const(zeta, x))
        result = _where(c, done, result, c.add(result, term))
        done = c.or_(done, c.cmp("<", c.math("fabs", term), c.mul(c.const(np.finfo(np.float64).eps, x),
                                                                  c.math("fabs", result))))
    return result


def digamma64(c, x):
    """SciPy's digamma: the series about the negative root near it, Cephes psi elsewhere;
    -inf at +0, +inf at -0, NaN at the negative integers and -inf, as SciPy."""
    zero = c.const(0, x)
    inf = c.const(math.inf, x)
    finite = _is_finite(c, x)
    is_zero = c.cmp("==", x, zero)
    negative_integer = c.and_(c.cmp("<", x, zero), c.cmp("==", x, _floor(c, _where(c, finite, x, zero))))
    safe = _where(c, c.or_(c.not_(finite), c.or_(is_zero, negative_integer)), c.const(2.5, x), x)
    near_root = c.cmp("<", c.math("fabs", c.sub(safe, c.const(DIGAMMA_NEGROOT, x))), c.const(0.3, x))
    value = _where(c, near_root, _negative_root_series(c, safe), _psi(c, safe))
    nan = c.const(math.nan, x)
    value = _where(c, negative_integer, nan, value)
    # the sign of a zero: 1/x is -inf for -0.0
    value = _where(c, is_zero, _where(c, c.cmp("<", c.div(c.const(1, x), x), zero), inf, c.neg(inf)), value)
    return _where(c, finite, value, _where(c, c.cmp("==", x, inf), inf, nan))


# --------------------------------------------------------------------------- Hurwitz zeta

def _zeta_positive(c, s: float, q):
    """Cephes zeta(s, q) for q > 0: nine terms, then Euler-Maclaurin (early exits as masks)."""
    minus_s = c.const(-s, q)
    total = c.math("pow", q, minus_s)
    a, b = q, c.const(0, q)
    done = c.cmp("!=", q, q)
    for _ in range(9):
        a = c.add(a, c.const(1, q))
        b = c.math("pow", a, minus_s)
        total = _where(c, done, total, c.add(total, b))
        done = c.or_(done, c.cmp("<", c.math("fabs", c.div(b, total)), c.const(MACHEP, q)))
    w = a
    tail = c.sub(c.add(total, c.div(c.mul(b, w), c.const(s - 1.0, q))), c.mul(c.const(0.5, q), b))
    total = _where(c, done, total, tail)
    factor, k = 1.0, 0.0
    for coefficient in ZETA_A:
        factor *= s + k
        b = c.div(b, w)
        t = c.div(c.mul(c.const(factor, q), b), c.const(coefficient, q))
        total = _where(c, done, total, c.add(total, t))
        done = c.or_(done, c.cmp("<", c.math("fabs", c.div(t, total)), c.const(MACHEP, q)))
        k += 1.0
        factor *= s + k
        b = c.div(b, w)
        k += 1.0
    asymptotic = c.mul(c.add(c.const(1 / (s - 1), q), c.div(c.const(1, q), c.mul(c.const(2, q), q))),
                       c.math("pow", q, c.const(1 - s, q)))
    return _where(c, c.cmp(">", q, c.const(1e8, q)), asymptotic, total)


def cot_derivative_coefficients(n: int) -> list[float]:
    """P_n with d^n/dy^n cot(y) = P_n(cot y): P_0(c) = c, P_(k+1) = -(1 + c^2) P_k'(c);
    coefficients from the constant term up."""
    poly = [0, 1]
    for _ in range(n):
        derivative = [k * poly[k] for k in range(1, len(poly))] or [0]
        nxt = [0] * (len(derivative) + 2)
        for k, value in enumerate(derivative):
            nxt[k] -= value
            nxt[k + 2] -= value
        poly = nxt
    return [float(v) for v in poly]


def zeta64(c, q, *, s: float):
    """Hurwitz zeta(s, q) for a static s, as SciPy's zeta: +inf for s = 1 and at the
    poles q = 0, -1, -2, ...; NaN for s < 1 and for negative q with s not an integer.
    Negative q with integer s uses the reflection formula of polygamma (exact in form;
    SciPy sums |q| terms)."""
    if s == 1:
        return c.const(math.inf, q)
    if not s > 1:
        return c.const(math.nan, q)
    one = c.const(1, q)
    zero = c.const(0, q)
    negative = c.cmp("<", q, zero)
    finite = _is_finite(c, q)
    floor_q = _floor(c, _where(c, finite, q, zero))
    pole = c.and_(c.cmp("<=", q, zero), c.or_(c.cmp("==", q, floor_q), c.cmp("==", q, c.const(-math.inf, q))))
    positive_q = _where(c, negative, c.sub(one, _where(c, finite, q, zero)), _where(c, pole, one, q))
    value = _zeta_positive(c, s, positive_q)
    if float(s).is_integer():
        n = int(s) - 1
        r = c.sub(_where(c, finite, q, zero), floor_q)                     # in [0, 1), exact
        r = _where(c, c.cmp(">", r, c.const(0.5, q)), c.sub(r, one), r)    # in (-0.5, 0.5]
        cot = _cot_pi(c, r)
        scale = math.pi ** (n + 1) / math.factorial(n)
        poly = _polevl(c, cot, [v * scale for v in reversed(cot_derivative_coefficients(n))])
        reflected = c.add(value, poly)
        reflected = reflected if n % 2 == 0 else c.neg(reflected)
        value = _where(c, negative, reflected, value)
    else:
        value = _where(c, negative, c.const(math.nan, q), value)
    return _where(c, pole, c.const(math.inf, q), value)


# --------------------------------------------------------------------------- NumPy scalars

class NumpyScalars:
    """The scalar-context operations the algorithms above use, on float64 NumPy arrays:
    the same code as the compiled kernels, run by the reference interpreter."""

    _MATH = {"log": np.log, "sin": np.sin, "tan": np.tan, "fabs": np.fabs, "pow": np.power}

    def const(self, value, like):
        return np.float64(value)

    def float_width(self, x):
        return 64

    def add(self, a, b): return np.add(a, b)
    def sub(self, a, b): return np.subtract(a, b)
    def mul(self, a, b): return np.multiply(a, b)
    def div(self, a, b): return np.divide(a, b)
    def neg(self, a): return np.negative(a)
    def maximum(self, a, b): return np.maximum(a, b)
    def minimum(self, a, b): return np.minimum(a, b)
    def floor_divide(self, a, b): return np.floor_divide(a, b)
    def select(self, pred, a, b): return np.where(pred, a, b)
    def and_(self, a, b): return np.logical_and(a, b)
    def or_(self, a, b): return np.logical_or(a, b)
    def not_(self, a): return np.logical_not(a)

    def cmp(self, op, a, b):
        return {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
                ">=": np.greater_equal}[op](a, b)

    def math(self, name, *args):
        return self._MATH[name](*args)


def _reference(algorithm):
    def impl(x, **attrs):
        with np.errstate(all="ignore"):
            result = algorithm(NumpyScalars(), np.asarray(x, dtype=np.float64), **attrs)
        return np.asarray(np.broadcast_to(result, np.shape(x))).astype(x.dtype)
    return impl


def _in_float64(algorithm):
    """The scalar rule: the algorithm in float64, rounded once to the operand's dtype."""
    def scalar(c, x, **attrs):
        if c.float_width(x) == 64:
            return algorithm(c, x, **attrs)
        dtype = c.operand_dtype or DType.f32
        wide = c.convert(x, DType.f64, source=DType.f32)
        return c.convert(algorithm(c, wide, **attrs), dtype, source=DType.f64)
    return scalar


def _float_rule(name: str):
    def infer(x: TensorType):
        if not x.dtype.is_float:
            raise DTypeError(f"{name} needs a floating-point operand, got {x.dtype}")
        return [x]
    return infer


MAX_INTEGER_ZETA_ORDER = 101
"""The largest integer order s (polygamma's n + 1) compiled: negative q takes the
reflection formula through the n-th derivative of cot, whose coefficients (about n!)
overflow float64 past n = 150; above this bound an error says so instead."""


def _zeta_infer(q: TensorType, *, s):
    if not isinstance(s, float):
        raise DTypeError(f"zeta's order s must be a static float, got {s!r}")
    if s.is_integer() and s > MAX_INTEGER_ZETA_ORDER:
        raise UnsupportedOperationError(
            f"scipy.special.zeta(s, q) / polygamma(n, x) of order s = n + 1 = {s:g} is not supported: integer "
            f"orders up to {MAX_INTEGER_ZETA_ORDER} are (the reflection jitgrad uses for negative arguments "
            "overflows float64 beyond); compute it outside the traced function (jitgrad.pure_callback)")
    return _float_rule("zeta")(q)


def _special(name: str, algorithm, doc: str, infer=None) -> Primitive:
    prim = Primitive(name, infer or _float_rule(name), _reference(algorithm), doc=doc, traits=(Trait.PURE,))
    prim.lowering = Elementwise(_in_float64(algorithm))
    prim.cost = 8 * MATH_CALL_COST
    return prim


lgamma_p = _special("lgamma", lgamma64, "log |Gamma(x)| (SciPy's gammaln; +inf at the poles).")
digamma_p = _special("digamma", digamma64, "psi(x) = d/dx log |Gamma(x)| (SciPy's digamma).")
zeta_p = _special("zeta", zeta64, "Hurwitz zeta(s, q) of q for a static order s (SciPy's zeta).",
                  infer=_zeta_infer)


def lgamma(x): return lgamma_p.bind(x)
def digamma(x): return digamma_p.bind(x)
def zeta(q, s: float): return zeta_p.bind(q, s=float(s))


def polygamma(n: int, x):
    """psi^(n)(x) = (-1)^(n+1) n! zeta(n + 1, x) for n >= 1; digamma for n = 0."""
    if n == 0:
        return digamma(x)
    return mul(_full_like(x, (-1.0) ** (n + 1) * math.factorial(n)), zeta(x, n + 1))


defjvp(lgamma_p, lambda t, x: tangent_mul(t, digamma(x)))
defjvp(digamma_p, lambda t, x: tangent_mul(t, zeta(x, 2.0)))
defjvp(zeta_p, lambda t, q, *, s: tangent_mul(t, mul(_full_like(q, -s), zeta(q, s + 1))))

__all__ = ["lgamma", "digamma", "zeta", "polygamma", "lgamma_p", "digamma_p", "zeta_p"]
