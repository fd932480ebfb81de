"""Elementwise primitives: arithmetic, transcendental functions, comparisons, select.

Operands of an elementwise primitive have one shape and (except `select`'s predicate)
one dtype: NumPy's broadcasting and type promotion happen at trace time
(jitgrad.tracing.numpy_api), so rules here never broadcast. Each primitive's record
is declared together: shape rule, NumPy impl, JVP, transpose if linear, lowering.
"""
from __future__ import annotations

import numpy as np

from jitgrad.errors import DTypeError
from jitgrad.ir import DType, TensorType
from jitgrad.ir import Trait
from .base import (Elementwise, Primitive, Zero, UndefinedPrimal, check_same_dtypes, check_same_shapes,
                   defbilinear, defjvp, defjvp2, defjvp_zero, deftranspose, instantiate)
from .structural import full


def _same_type_rule(name: str, float_only: bool = False, numeric: bool = True):
    def infer(*types: TensorType, **attrs):
        check_same_shapes(name, *types)
        check_same_dtypes(name, *types)
        dtype = types[0].dtype
        if float_only and not dtype.is_inexact:
            raise DTypeError(f"{name} needs a floating-point operand, got {dtype}")
        if numeric and dtype == DType.bool:
            raise DTypeError(f"{name} is not defined for bool operands")
        return [types[0]]
    return infer


MATH_CALL_COST = 16     # a vector-math-library call, relative to an add


def _elementwise(name: str, impl, scalar, *, float_only=False, numeric=True, doc="", cost=1,
                 commutative=False) -> Primitive:
    traits = (Trait.PURE, Trait.COMMUTATIVE) if commutative else (Trait.PURE,)
    prim = Primitive(name, _same_type_rule(name, float_only, numeric), impl, doc=doc, traits=traits)
    prim.lowering = Elementwise(scalar)
    prim.cost = cost
    return prim


def _float_impl(fn):
    """NumPy impl that keeps the operand dtype (NumPy may not, e.g. for 0-d inputs)."""
    def impl(*args, **attrs):
        return np.asarray(fn(*args), dtype=args[0].dtype)
    return impl


# --------------------------------------------------------------------------- arithmetic

neg_p = _elementwise("neg", _float_impl(np.negative), lambda c, x: c.neg(x))
add_p = _elementwise("add", _float_impl(np.add), lambda c, a, b: c.add(a, b), commutative=True)
sub_p = _elementwise("sub", _float_impl(np.subtract), lambda c, a, b: c.sub(a, b))
mul_p = _elementwise("mul", _float_impl(np.multiply), lambda c, a, b: c.mul(a, b), commutative=True)
div_p = _elementwise("div", _float_impl(np.divide), lambda c, a, b: c.div(a, b), float_only=True)
# Not COMMUTATIVE: between +0 and -0 NumPy returns one operand by position (see the scalar contexts).
max_p = _elementwise("maximum", _float_impl(np.maximum), lambda c, a, b: c.maximum(a, b))
min_p = _elementwise("minimum", _float_impl(np.minimum), lambda c, a, b: c.minimum(a, b))
def _pow_scalar(c, a, b):
    return c.math("pow", a, b) if c.is_float(a) else c.int_power(a, b)


def _pow_np(a, b):
    if a.dtype.kind in "iu":     # NumPy raises for negative exponents; jitgrad gives 0
        return np.asarray(np.where(b < 0, 0, np.power(a, np.where(b < 0, 0, b))), dtype=a.dtype)
    return np.asarray(np.power(a, b), dtype=a.dtype)


pow_p = _elementwise("pow", _pow_np, _pow_scalar, cost=MATH_CALL_COST,
                     doc="a ** b; on integers wrap-around repeated squaring (a negative exponent gives 0).")


def neg(x): return neg_p.bind(x)
def add(a, b): return add_p.bind(a, b)
def sub(a, b): return sub_p.bind(a, b)
def mul(a, b): return mul_p.bind(a, b)
def div(a, b): return div_p.bind(a, b)
def maximum(a, b): return max_p.bind(a, b)
def minimum(a, b): return min_p.bind(a, b)
def power(a, b): return pow_p.bind(a, b)


def _transpose_add(ct, a, b):
    return [ct if isinstance(a, UndefinedPrimal) else None,
            ct if isinstance(b, UndefinedPrimal) else None]


def _transpose_sub(ct, a, b):
    return [ct if isinstance(a, UndefinedPrimal) else None,
            neg(ct) if isinstance(b, UndefinedPrimal) else None]


# Backward products are *strong-zero*: the transposes of mul and div use safe_mul and
# safe_div, for which 0 * x = 0 and 0 / x = 0 for every x, inf and NaN included. A
# zero cotangent then contributes exactly zero, which keeps the untaken branch of
# `np.where(x > 0, np.sqrt(x), 0.0)` at x = 0 from poisoning the gradient (select sends
# that branch a zero cotangent, and 0 * inf would be NaN). Everywhere else they are
# ordinary products, with ordinary derivatives to any order.

def _safe_mul_scalar(c, a, b):
    zero = c.const(0, a)
    return c.select(c.or_(c.cmp("==", a, zero), c.cmp("==", b, zero)), zero, c.mul(a, b))


def _safe_div_scalar(c, a, b):
    zero = c.const(0, a)
    return c.select(c.cmp("==", a, zero), zero, c.div(a, b))


def _safe_mul_np(a, b):
    return np.asarray(np.where((a == 0) | (b == 0), 0, a * b), dtype=a.dtype)


def _safe_div_np(a, b):
    return np.asarray(np.where(a == 0, 0, a / np.where(a == 0, 1, b)), dtype=a.dtype)


safe_mul_p = _elementwise("safe_mul", _safe_mul_np, _safe_mul_scalar, float_only=True, commutative=True,
                          doc="a * b with 0 * x = 0 for every x (inf, NaN): backward products.")
safe_div_p = _elementwise("safe_div", _safe_div_np, _safe_div_scalar, float_only=True,
                          doc="a / b with 0 / x = 0 for every x (0, NaN): backward quotients.")


def safe_mul(a, b): return safe_mul_p.bind(a, b)
def safe_div(a, b): return safe_div_p.bind(a, b)


def _backward_mul(ct, factor):
    return safe_mul(ct, factor) if ct.type.dtype.is_float else mul(ct, factor)


# Forward products are strong-zero too: a JVP rule multiplies (or divides) a tangent by
# a local derivative with tangent_mul / tangent_div, so a zero tangent contributes
# exactly zero even where the local derivative is infinite or NaN (sqrt at 0, log at 0).
# Forward and reverse mode then agree everywhere (jacfwd == jacrev, DualTensor == tape).
# Transposed, tangent_mul and tangent_div give the backward products above, so reverse
# mode is unchanged.

def tangent_mul(t, factor):
    """t * factor for a tangent t, with 0 * x = 0 for every x."""
    return safe_mul(t, factor) if t.type.dtype.is_float else mul(t, factor)


def tangent_div(t, divisor):
    """t / divisor for a tangent t, with 0 / x = 0 for every x."""
    return safe_div(t, divisor) if t.type.dtype.is_float else div(t, divisor)


def _transpose_div(ct, a, b):
    if isinstance(b, UndefinedPrimal):
        raise ValueError("div is not linear in its denominator")
    return [safe_div(ct, b), None]


defbilinear(safe_mul_p, lambda ct, a, b: _backward_mul(ct, b), lambda ct, a, b: _backward_mul(ct, a))
defjvp(safe_div_p, lambda t, a, b: safe_div(t, b),
       lambda t, a, b: neg(safe_mul(t, safe_div(safe_div(a, b), b))))
deftranspose(safe_div_p, _transpose_div, linear_operands=(0,))


defjvp(neg_p, lambda t, x: neg(t))
deftranspose(neg_p, lambda ct, x: [neg(ct)])
defjvp(add_p, lambda t, a, b: t, lambda t, a, b: t)
deftranspose(add_p, _transpose_add)
defjvp(sub_p, lambda t, a, b: t, lambda t, a, b: neg(t))
deftranspose(sub_p, _transpose_sub)
defbilinear(mul_p, lambda ct, a, b: _backward_mul(ct, b), lambda ct, a, b: _backward_mul(ct, a), product=tangent_mul)
defjvp(div_p, lambda t, a, b: tangent_div(t, b), lambda t, a, b: neg(tangent_mul(t, div(div(a, b), b))))
deftranspose(div_p, _transpose_div, linear_operands=(0,))
defjvp(pow_p,
       lambda t, x, y: tangent_mul(t, mul(y, power(x, sub(y, _full_like(y, 1))))),
       lambda t, x, y: tangent_mul(t, mul(_log_or_zero(x), power(x, y))))


def _tie_weights(a, b):
    """Share of the tangent that flows to `a` in max(a, b): 1 where a wins, 0.5 on ties."""
    one, half, zero = (_full_like(a, v) for v in (1.0, 0.5, 0.0))
    return select(gt(a, b), one, select(eq(a, b), half, zero))


def _winner_jvp(first_wins):
    def rule_a(t, a, b):
        return tangent_mul(t, _tie_weights(a, b) if first_wins else _tie_weights(b, a))

    def rule_b(t, a, b):
        return tangent_mul(t, _tie_weights(b, a) if first_wins else _tie_weights(a, b))
    return rule_a, rule_b


defjvp(max_p, *_winner_jvp(True))
defjvp(min_p, *_winner_jvp(False))


def _integer_pow_infer(x: TensorType, *, y: int):
    if x.dtype == DType.bool:
        raise DTypeError("integer_pow is not defined for bool operands")
    if not isinstance(y, int):
        raise DTypeError(f"integer_pow exponent must be an int, got {y!r}")
    if y < 0 and not x.dtype.is_inexact:
        raise DTypeError("Integers to negative integer powers are not allowed.")
    return [x]


def _integer_pow_scalar(c, x, *, y: int):
    """Exponentiation by squaring: exact, and as fast as the multiplications it needs."""
    n = abs(y)
    acc = None
    base = x
    while n:
        if n & 1:
            acc = base if acc is None else c.mul(acc, base)
        n >>= 1
        if n:
            base = c.mul(base, base)
    if acc is None:
        acc = c.const(1, x)
    return c.div(c.const(1, x), acc) if y < 0 else acc


integer_pow_p = Primitive("integer_pow", _integer_pow_infer,
                          lambda x, *, y: np.asarray(np.power(x, y), dtype=x.dtype),
                          doc="x ** y for a static integer y (exact repeated multiplication).")
integer_pow_p.lowering = Elementwise(_integer_pow_scalar)


def integer_pow(x, y: int): return integer_pow_p.bind(x, y=y)


def _integer_pow_jvp(t, x, *, y):
    if y == 0:
        return Zero(t.type)
    if y == 1:
        return t
    factor = mul(_full_like(x, y), x if y == 2 else integer_pow(x, y - 1))
    return tangent_mul(t, factor)


defjvp(integer_pow_p, _integer_pow_jvp)


# --------------------------------------------------------------------------- transcendental

def _unary_math(name, np_fn, jvp_rule=None, scalar=None, doc="", cost=MATH_CALL_COST, jvp2_rule=None):
    """A float function of one operand; its JVP is `jvp_rule(t, x)`, or `jvp2_rule(t, ans, x)`
    when the derivative is best written with the function's own value."""
    prim = _elementwise(name, _float_impl(np_fn), scalar or (lambda c, x, _n=name: c.math(_n, x)),
                        float_only=True, doc=doc, cost=cost)
    if jvp2_rule is not None:
        defjvp2(prim, jvp2_rule)
    else:
        defjvp(prim, jvp_rule)
    return prim


def _logistic_np(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def _logistic_scalar(c, x):
    """1 / (1 + exp(-x)), written to not overflow for large |x|."""
    e = c.math("exp", c.neg(c.math("fabs", x)))
    one = c.const(1, x)
    pos = c.div(one, c.add(one, e))
    return c.select(c.cmp(">=", x, c.const(0, x)), pos, c.div(e, c.add(one, e)))


exp_p = _unary_math("exp", np.exp, jvp2_rule=lambda t, ans, x: tangent_mul(t, ans))
log_p = _unary_math("log", np.log, lambda t, x: tangent_div(t, x))
log1p_p = _unary_math("log1p", np.log1p, lambda t, x: tangent_div(t, add(x, _full_like(x, 1))))
expm1_p = _unary_math("expm1", np.expm1, jvp2_rule=lambda t, ans, x: tangent_mul(t, add(ans, _full_like(x, 1))))
sin_p = _unary_math("sin", np.sin, lambda t, x: tangent_mul(t, cos(x)))
cos_p = _unary_math("cos", np.cos, lambda t, x: neg(tangent_mul(t, sin(x))))
tanh_p = _unary_math("tanh", np.tanh,
                     jvp2_rule=lambda t, ans, x: tangent_mul(t, sub(_full_like(x, 1), integer_pow(ans, 2))))
logistic_p = _unary_math("logistic", _logistic_np,
                         jvp2_rule=lambda t, ans, x: tangent_mul(t, mul(ans, sub(_full_like(x, 1), ans))),
                         scalar=_logistic_scalar)
sqrt_p = _unary_math("sqrt", np.sqrt, jvp2_rule=lambda t, ans, x: tangent_div(t, mul(_full_like(x, 2), ans)),
                     cost=1)   # a hardware instruction


def exp(x): return exp_p.bind(x)
def log(x): return log_p.bind(x)
def log1p(x): return log1p_p.bind(x)
def expm1(x): return expm1_p.bind(x)
def sin(x): return sin_p.bind(x)
def cos(x): return cos_p.bind(x)
def tanh(x): return tanh_p.bind(x)
def logistic(x): return logistic_p.bind(x)
def sqrt(x): return sqrt_p.bind(x)


def _log_or_zero(x):
    """log(x) where x > 0 (a complex x: x != 0), else 0: d(x**y)/dy at x = 0 is 0, not NaN."""
    positive = ne(x, _full_like(x, 0)) if x.type.dtype.is_complex else gt(x, _full_like(x, 0))
    safe = select(positive, x, _full_like(x, 1))
    return select(positive, log(safe), _full_like(x, 0))


def _abs_scalar(c, x):
    if c.is_float(x):
        return c.math("fabs", x)
    return c.select(c.cmp("<", x, c.const(0, x)), c.neg(x), x)


def _sign_scalar(c, x):
    zero, one = c.const(0, x), c.const(1, x)
    positive = c.select(c.cmp(">", x, zero), one, zero)
    signed = c.select(c.cmp("<", x, zero), c.neg(one), positive)
    # NumPy: sign(nan) is nan; x is returned unchanged when it is NaN (x != x).
    return c.select(c.cmp("!=", x, x), x, signed) if c.is_float(x) else signed


abs_p = _elementwise("abs", _float_impl(np.abs), _abs_scalar)
sign_p = _elementwise("sign", _float_impl(np.sign), _sign_scalar)


def absolute(x): return abs_p.bind(x)
def sign(x): return sign_p.bind(x)


defjvp(abs_p, lambda t, x: tangent_mul(t, sign(x)))
defjvp_zero(sign_p)


stop_gradient_p = Primitive("stop_gradient", _same_type_rule("stop_gradient", numeric=False),
                            lambda x: np.array(x), doc="The identity whose derivative is zero.")
stop_gradient_p.lowering = Elementwise(lambda c, x: x)
defjvp_zero(stop_gradient_p)


def stop_gradient(x): return stop_gradient_p.bind(x)


# --------------------------------------------------------------------------- comparisons, logic

def _compare_infer(name):
    def infer(a: TensorType, b: TensorType):
        check_same_shapes(name, a, b)
        check_same_dtypes(name, a, b)
        return [TensorType(a.shape, DType.bool)]
    return infer


def _comparison(name, np_fn, symbol) -> Primitive:
    traits = (Trait.PURE, Trait.COMMUTATIVE) if symbol in ("==", "!=") else (Trait.PURE,)
    prim = Primitive(name, _compare_infer(name), lambda a, b: np.asarray(np_fn(a, b)), traits=traits)
    prim.lowering = Elementwise(lambda c, a, b, _s=symbol: c.cmp(_s, a, b))
    defjvp_zero(prim)
    return prim


eq_p = _comparison("eq", np.equal, "==")
ne_p = _comparison("ne", np.not_equal, "!=")
lt_p = _comparison("lt", np.less, "<")
le_p = _comparison("le", np.less_equal, "<=")
gt_p = _comparison("gt", np.greater, ">")
ge_p = _comparison("ge", np.greater_equal, ">=")


def eq(a, b): return eq_p.bind(a, b)
def ne(a, b): return ne_p.bind(a, b)
def lt(a, b): return lt_p.bind(a, b)
def le(a, b): return le_p.bind(a, b)
def gt(a, b): return gt_p.bind(a, b)
def ge(a, b): return ge_p.bind(a, b)


def _logic_infer(name):
    def infer(*types: TensorType):
        check_same_shapes(name, *types)
        if any(t.dtype != DType.bool for t in types):
            raise DTypeError(f"{name} needs bool operands, got {', '.join(str(t.dtype) for t in types)}")
        return [types[0]]
    return infer


def _logical(name, np_fn, scalar, commutative=False) -> Primitive:
    traits = (Trait.PURE, Trait.COMMUTATIVE) if commutative else (Trait.PURE,)
    prim = Primitive(name, _logic_infer(name), lambda *args: np.asarray(np_fn(*args)), traits=traits)
    prim.lowering = Elementwise(scalar)
    defjvp_zero(prim)
    return prim


and_p = _logical("and", np.logical_and, lambda c, a, b: c.and_(a, b), commutative=True)
or_p = _logical("or", np.logical_or, lambda c, a, b: c.or_(a, b), commutative=True)
not_p = _logical("not", np.logical_not, lambda c, a: c.not_(a))


def logical_and(a, b): return and_p.bind(a, b)
def logical_or(a, b): return or_p.bind(a, b)
def logical_not(a): return not_p.bind(a)


# --------------------------------------------------------------------------- select, convert

def _select_infer(pred: TensorType, on_true: TensorType, on_false: TensorType):
    check_same_shapes("select", pred, on_true, on_false)
    check_same_dtypes("select", on_true, on_false)
    if pred.dtype != DType.bool:
        raise DTypeError(f"select needs a bool predicate, got {pred.dtype}")
    return [on_true]


select_p = Primitive("select", _select_infer, lambda p, a, b: np.asarray(np.where(p, a, b), dtype=a.dtype),
                     doc="select(pred, on_true, on_false): NumPy's where with equal shapes.")
select_p.lowering = Elementwise(lambda c, p, a, b: c.select(p, a, b))


def select(pred, on_true, on_false): return select_p.bind(pred, on_true, on_false)


def _select_jvp(primals, tangents):
    pred, a, b = primals
    _, ta, tb = tangents
    if isinstance(ta, Zero) and isinstance(tb, Zero):
        return Zero(a.type)
    return select(pred, instantiate(ta), instantiate(tb))


def _select_transpose(ct, pred, a, b):
    zeros = _full_like(ct, 0)
    return [None,
            select(pred, ct, zeros) if isinstance(a, UndefinedPrimal) else None,
            select(pred, zeros, ct) if isinstance(b, UndefinedPrimal) else None]


select_p.jvp = _select_jvp
deftranspose(select_p, _select_transpose, linear_operands=(1, 2))


def _convert_infer(x: TensorType, *, dtype: DType):
    return [TensorType(x.shape, dtype)]


convert_p = Primitive("convert", _convert_infer, lambda x, *, dtype: np.asarray(x).astype(dtype.numpy),
                      doc="Element type conversion (NumPy's astype).")
convert_p.lowering = Elementwise(lambda c, x, *, dtype: c.convert(x, dtype))


def convert(x, dtype: DType):
    return x if x.type.dtype == dtype else convert_p.bind(x, dtype=dtype)


def _convert_jvp(primals, tangents, *, dtype):
    (x,), (t,) = primals, tangents
    if isinstance(t, Zero) or not (x.type.dtype.is_inexact and dtype.is_inexact):
        return Zero(TensorType(x.type.shape, dtype))
    return convert_p.bind(t, dtype=dtype)


def _convert_transpose(ct, x, *, dtype):
    return [convert_p.bind(ct, dtype=x.type.dtype)]


convert_p.jvp = _convert_jvp
deftranspose(convert_p, _convert_transpose)


def _full_like(x, value):
    return full(value, x.type)
