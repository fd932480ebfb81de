"""Every primitive's rules, checked from one table of op specs (JAX's lax_autodiff_test).

A spec is a small IR function built around one primitive, its input types, a generator
of inputs inside the primitive's domain (positive for log/sqrt, away from kinks and
ties for abs/max/min/sign), and an independent NumPy reference. For every spec:
  - the interpreter's result equals the NumPy reference;
  - JVP (central differences) and VJP (inner-product identity) hold to second order, or,
    for piecewise-constant primitives, every tangent and cotangent is exactly zero.
The table must name every primitive in `Primitive.all`, so a new primitive without a
spec fails the suite.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import jitgrad.primitives as P
from jitgrad.errors import GradientError
from jitgrad.interpreter import evaluate
from jitgrad.ir import DType, TensorType
from jitgrad.passes.jvp import jvp_function
from jitgrad.passes.reverse import vjp_function
from jitgrad.primitives import Primitive, Zero
from jitgrad.primitives.kernel_kind import KernelKind
from jitgrad.primitives.base import Alias, Constant, Contraction, Elementwise, Gather, Reduction, Scatter
from jitgrad.tracing.tracer import trace

from test_random import reference_uniform
from test_nn import (conv_loops, distinct_values, reduce_window_loops, select_and_gather_loops,
                     select_and_scatter_loops)
from test_linalg import LAPACK_SPEC_ROWS
import scipy.special as scipy_special

from jitgrad.primitives import bits, special
from helpers import (build, check_grads, check_jvp, check_vjp, check_zero_derivative, numerical_jacobian,
                     run_traced)


def f64(*shape): return TensorType(shape, DType.f64)
def f32(*shape): return TensorType(shape, DType.f32)
def i64(*shape): return TensorType(shape, DType.i64)
def boolean(*shape): return TensorType(shape, DType.bool)


# --------------------------------------------------------------------------- input domains

def normal(rng, shape): return rng.standard_normal(shape)
def positive(rng, shape): return rng.uniform(0.5, 2.0, shape)
def small_ints(rng, shape): return rng.integers(-4, 5, shape).astype(np.int64)
def bools(rng, shape): return rng.random(shape) < 0.5


def signed_zeros_and_nans(rng, shape):
    """Normal values with +-0.0 and NaNs of both signs mixed in."""
    values = rng.standard_normal(shape)
    specials = np.array([0.0, -0.0, np.nan, -np.nan])
    mask = rng.random(shape) < 0.5
    return np.where(mask, specials[rng.integers(0, 4, shape)], values)


def not_near_integers(rng, shape):
    """Values in (-4, 4) at least 0.2 from every integer: away from the poles of the
    gamma family."""
    return rng.integers(-4, 4, shape) + rng.uniform(0.2, 0.8, shape)


def away_from_zero(rng, shape):
    """|x| in [0.3, 2]: no kink (abs) or jump (sign, comparisons) within a FD step."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)


def distinct(rng, shape):
    """Values at least 0.2 apart, in random order: no ties for max/min reductions."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.3 + rng.uniform(0, 0.1, n) - 0.15 * n).reshape(shape)


def with_zeros(rng, shape):
    """Normal values with every third one exactly zero: products through a zero factor."""
    x = rng.normal(size=shape)
    x.reshape(-1)[::3] = 0.0
    return x


def with_ties(rng, shape):
    """Small integers as floats: many exact ties, for comparisons' values."""
    return rng.integers(-2, 3, shape).astype(np.float64)


# --------------------------------------------------------------------------- op specs

@dataclass
class OpSpec:
    """One test case of one primitive.

    grad: "check"  - JVP/VJP checks to `order`;
          "zero"   - the derivative is exactly zero (piecewise-constant functions);
          "none"   - values only (no float inputs, or a value-only variant).
    """

    prim: str
    variant: str
    in_types: list[TensorType]
    body: Callable                     # (*Values) -> Value(s), emits the primitive
    ref: Callable                      # (*arrays) -> array(s), plain NumPy
    gens: list[Callable] | None = None  # per input: (rng, shape) -> array; default normal
    grad: str = "check"
    order: int = 2
    tol: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.prim}-{self.variant}" if self.variant else self.prim

    def function(self):
        return build(self.id.replace("-", "_"), self.in_types, self.body)

    def args(self, seed=0):
        rng = np.random.default_rng(seed)
        gens = self.gens or [None] * len(self.in_types)
        out = []
        for t, gen in zip(self.in_types, gens, strict=True):
            if gen is None:
                gen = {DType.bool: bools, DType.i64: small_ints}.get(t.dtype, normal)
            out.append(np.asarray(gen(rng, t.shape), dtype=t.dtype.numpy))
        return out


def unary(name, prim_fn, ref, gen=normal, grad="check", shape=(2, 3), variant="", dtype=f64):
    return OpSpec(name, variant, [dtype(*shape)], prim_fn, ref, [gen], grad)


def binary(name, prim_fn, ref, gen_a=normal, gen_b=normal, grad="check", shape=(2, 3), variant="", dtype=f64):
    return OpSpec(name, variant, [dtype(*shape), dtype(*shape)], prim_fn, ref, [gen_a, gen_b], grad)


def bind(name, *operands, **attrs):
    """Emit primitive `name` directly (independent of the wrapper functions' names)."""
    return Primitive.all[name].bind(*operands, **attrs)


def as_f64(x):
    """A bool/int Value as f64, so that piecewise-constant ops end in a float output."""
    return P.convert(x, DType.f64)


def distinct_pair_spec(name, prim_fn, ref):
    """max/min of a and b with |a - b| >= 0.2 everywhere: no ties within a FD step."""
    def body(a, d):
        return prim_fn(a, P.add(a, d))
    return OpSpec(name, "", [f64(2, 3), f64(2, 3)], body, lambda a, d: ref(a, a + d), [normal, away_from_zero])


def integer_pow_spec(y, gen=normal):
    return OpSpec("integer_pow", f"y={y}", [f64(2, 3)], lambda x: P.integer_pow(x, y),
                  lambda x: x ** float(y), [gen])


def pad_ref(x, low, high, interior):
    shape = tuple(lo + hi + n + max(n - 1, 0) * it for n, lo, hi, it in zip(x.shape, low, high, interior))
    out = np.zeros(shape, x.dtype)
    for index in np.ndindex(*x.shape):
        out[tuple(lo + i * (it + 1) for i, lo, it in zip(index, low, interior))] = x[index]
    return out


def dot_spec(variant, lhs, rhs, contract, batch, subscripts):
    return OpSpec("dot_general", variant, [f64(*lhs), f64(*rhs)],
                  lambda a, b: P.dot_general(a, b, contract, batch),
                  lambda a, b: np.einsum(subscripts, a, b))


def logistic_ref(x):
    return np.exp(-np.logaddexp(0.0, -x))


def clamped_take_ref(x, i, axis):
    return np.take(x, np.clip(i, 0, x.shape[axis] - 1), axis=axis)


def scatter_add_ref(x, i, u, axis):
    out = np.moveaxis(x.copy(), axis, 0)
    np.add.at(out, np.clip(i, 0, x.shape[axis] - 1), np.moveaxis(u, list(range(axis, axis + i.ndim)),
                                                                  list(range(i.ndim))))
    return np.moveaxis(out, 0, axis)


def scatter_last_wins_ref(x, i, u):
    """x[i[k]] = u[k] along axis 0, one k after another (the last write stays)."""
    out = x.copy()
    for k, position in enumerate(np.clip(i, 0, x.shape[0] - 1)):
        out[position] = u[k]
    return out


CONSTANT = np.array([[1.5, -2.0, 0.25], [3.0, 0.5, -1.0]])

def _z(x, y):
    return bind("complex", x, y)


def _zz(x, y):
    """(x + iy)(y + ix): a complex value whose parts depend on both inputs."""
    return P.mul(_z(x, y), _z(y, x))


def _zz_ref(x, y):
    return (x + 1j * y) * (y + 1j * x)


def _fft_spec(n):
    from jitgrad.primitives.fft import roots_of_unity
    roots = roots_of_unity(n, DType.f64)

    def ref(x):
        y = np.fft.fft(x[..., 0] + 1j * x[..., 1], axis=-1)
        return np.stack([y.real, y.imag], axis=-1)
    return OpSpec("fft", f"n{n}", [f64(2, n, 2)], lambda x: bind("fft", x, P.constant(roots)), ref)


def _library_fft_specs():
    """NumPy's pocketfft transforms along a middle axis, both parities of n, with a scale."""
    def c2c(forward, scale):
        def ref(x):
            z = x[..., 0] + 1j * x[..., 1]
            y = (np.fft.fft(z, axis=1) if forward else np.fft.ifft(z, axis=1, norm="forward")) * scale
            return np.stack([y.real, y.imag], axis=-1)
        return OpSpec("fft_c2c", f"{'forward' if forward else 'backward'}", [f64(2, 5, 3, 2)],
                      lambda x: bind("fft_c2c", x, axis=1, forward=forward, scale=scale), ref)

    def r2c(n):
        def ref(x):
            y = np.fft.rfft(x, axis=1) * 0.5
            return np.stack([y.real, y.imag], axis=-1)
        return OpSpec("fft_r2c", f"n{n}", [f64(2, n, 3)], lambda x: bind("fft_r2c", x, axis=1, scale=0.5), ref)

    def c2r(n):
        return OpSpec("fft_c2r", f"n{n}", [f64(2, n // 2 + 1, 3, 2)],
                      lambda x: bind("fft_c2r", x, axis=1, n=n, scale=0.25),
                      lambda x: np.fft.irfft(x[..., 0] + 1j * x[..., 1], n=n, axis=1, norm="forward") * 0.25)
    return [c2c(True, 1.0), c2c(False, 0.5), r2c(6), r2c(7), c2r(6), c2r(7)]


COMPLEX_SPECS = [
    _fft_spec(30), _fft_spec(8), *_library_fft_specs(),
    OpSpec("complex", "", [f64(3), f64(3)], lambda x, y: bind("real", _zz(x, y)),
           lambda x, y: np.real(_zz_ref(x, y))),
    OpSpec("real", "", [f64(3), f64(3)], lambda x, y: bind("real", _zz(x, y)), lambda x, y: np.real(_zz_ref(x, y))),
    OpSpec("imag", "", [f64(3), f64(3)], lambda x, y: bind("imag", _zz(x, y)), lambda x, y: np.imag(_zz_ref(x, y))),
    OpSpec("conj", "", [f64(3), f64(3)], lambda x, y: bind("imag", P.mul(bind("conj", _zz(x, y)), _z(x, y))),
           lambda x, y: np.imag(np.conj(_zz_ref(x, y)) * (x + 1j * y))),
    OpSpec("view_as_real", "", [f64(3), f64(3)], lambda x, y: bind("view_as_real", _zz(x, y)),
           lambda x, y: np.stack([np.real(_zz_ref(x, y)), np.imag(_zz_ref(x, y))], -1)),
    OpSpec("view_as_complex", "", [f64(3, 2)],
           lambda p: bind("imag", P.mul(bind("view_as_complex", p), bind("view_as_complex", p))),
           lambda p: np.imag((p[:, 0] + 1j * p[:, 1]) ** 2)),
]

SPECS: list[OpSpec] = [
    # ----- arithmetic
    unary("neg", P.neg, np.negative),
    binary("add", P.add, np.add),
    binary("sub", P.sub, np.subtract),
    binary("mul", P.mul, np.multiply),
    binary("div", P.div, np.divide, normal, away_from_zero),
    distinct_pair_spec("maximum", P.maximum, np.maximum),
    distinct_pair_spec("minimum", P.minimum, np.minimum),
    binary("pow", lambda a, b: bind("pow", a, b), np.power, positive, normal),
    integer_pow_spec(0), integer_pow_spec(1), integer_pow_spec(2), integer_pow_spec(3),
    integer_pow_spec(-2, away_from_zero),
    # integer arithmetic: values only
    binary("add", P.add, np.add, variant="i64", dtype=i64, grad="none"),
    binary("mul", P.mul, np.multiply, variant="i64", dtype=i64, grad="none"),
    binary("maximum", P.maximum, np.maximum, variant="i64", dtype=i64, grad="none"),
    unary("abs", lambda x: bind("abs", x), np.abs, variant="i64", dtype=i64, grad="none"),
    unary("sign", P.sign, np.sign, variant="i64", dtype=i64, grad="none"),
    OpSpec("integer_pow", "i64-y=3", [i64(2, 3)], lambda x: P.integer_pow(x, 3), lambda x: x ** 3,
           grad="none"),
    # bitwise operations, shifts, floor division and remainders (integer.py)
    binary("bit_and", P.bit_and, np.bitwise_and, small_ints, small_ints, variant="i64", dtype=i64, grad="none"),
    binary("bit_or", P.bit_or, np.bitwise_or, bools, bools, variant="bool", dtype=boolean, grad="none"),
    binary("bit_xor", P.bit_xor, np.bitwise_xor, small_ints, small_ints, variant="i64", dtype=i64, grad="none"),
    unary("bit_not", P.bit_not, np.invert, small_ints, variant="i64", dtype=i64, grad="none"),
    OpSpec("shift_left", "u8", [TensorType((2, 3), DType.u8)] * 2, P.shift_left, np.left_shift,
           [lambda rng, s: rng.integers(0, 256, s), lambda rng, s: rng.integers(0, 10, s)], grad="none"),
    binary("shift_right", P.shift_right, np.right_shift, small_ints, lambda rng, s: rng.integers(0, 70, s),
           variant="i64", dtype=i64, grad="none"),
    binary("floor_divide", P.floor_divide, np.floor_divide, small_ints,
           lambda rng, s: rng.choice([-3, -2, -1, 1, 2, 3], s), variant="i64", dtype=i64, grad="none"),
    binary("floor_divide", lambda a, b: as_f64(P.floor_divide(a, b)), np.floor_divide, normal, away_from_zero,
           grad="zero"),
    *[unary(name, lambda x, _f=fn, _n=arity: as_f64(_f(*[P.convert(x, DType.i64)] * _n)),
            lambda x, _r=ref, _n=arity: _r(*[x.astype(np.int64)] * _n).astype(np.float64), variant="of-floats",
            grad="zero")
      for name, fn, ref, arity in [("bit_and", P.bit_and, np.bitwise_and, 2), ("bit_or", P.bit_or, np.bitwise_or, 2),
                                   ("bit_xor", P.bit_xor, np.bitwise_xor, 2), ("bit_not", P.bit_not, np.invert, 1),
                                   ("shift_left", P.shift_left, np.left_shift, 2),
                                   ("shift_right", P.shift_right, np.right_shift, 2)]],
    binary("remainder", P.remainder, np.remainder, lambda rng, s: rng.uniform(0.2, 1.8, s),
           lambda rng, s: rng.uniform(2.5, 3.0, s)),
    binary("fmod", P.fmod, np.fmod, lambda rng, s: rng.uniform(-1.8, -0.2, s),
           lambda rng, s: rng.uniform(2.5, 3.0, s)),
    # ----- transcendental
    unary("exp", P.exp, np.exp),
    unary("log", P.log, np.log, positive),
    unary("log1p", P.log1p, np.log1p, lambda rng, s: rng.uniform(-0.5, 2.0, s)),
    unary("expm1", P.expm1, np.expm1),
    unary("sin", P.sin, np.sin),
    unary("cos", P.cos, np.cos),
    unary("tanh", P.tanh, np.tanh),
    unary("sqrt", P.sqrt, np.sqrt, positive),
    unary("exp2", P.exp2, np.exp2),
    unary("log2", P.log2, np.log2, positive),
    unary("log10", P.log10, np.log10, positive),
    unary("sinh", P.sinh, np.sinh),
    unary("cosh", P.cosh, np.cosh),
    unary("cbrt", P.cbrt, np.cbrt, away_from_zero),
    binary("hypot", P.hypot, np.hypot, away_from_zero, normal),
    binary("hypot", P.hypot, np.hypot, variant="f32", dtype=f32, grad="none"),
    unary("cbrt", P.cbrt, np.cbrt, lambda rng, s: np.array([[-27.0, 0.0, 1e-310], [8e300, 1e-320, 64.0]]),
          variant="cubes", grad="none"),
    unary("tan", P.tan, np.tan, lambda rng, s: rng.uniform(-1.2, 1.2, s)),
    # the IEEE sign bit (bits.py): signed zeros and NaNs of both signs
    unary("signbit", bits.signbit, np.signbit, signed_zeros_and_nans, grad="zero"),
    unary("signbit", bits.signbit, np.signbit, signed_zeros_and_nans, variant="f32", dtype=f32, grad="zero"),
    # special functions (special.py), against SciPy, on both sides of the poles
    unary("lgamma", special.lgamma, lambda x: scipy_special.gammaln(x), not_near_integers),
    unary("digamma", special.digamma, lambda x: scipy_special.digamma(x), not_near_integers),
    OpSpec("zeta", "s=2", [f64(2, 3)], lambda q: special.zeta(q, 2.0), lambda q: scipy_special.zeta(2.0, q),
           [not_near_integers]),
    OpSpec("zeta", "s=3.5", [f64(2, 3)], lambda q: special.zeta(q, 3.5), lambda q: scipy_special.zeta(3.5, q),
           [positive]),
    unary("asin", P.arcsin, np.arcsin, lambda rng, s: rng.uniform(-0.9, 0.9, s)),
    unary("acos", P.arccos, np.arccos, lambda rng, s: rng.uniform(-0.9, 0.9, s)),
    unary("atan", P.arctan, np.arctan),
    unary("asinh", P.arcsinh, np.arcsinh),
    unary("acosh", P.arccosh, np.arccosh, lambda rng, s: rng.uniform(1.2, 3.0, s)),
    unary("atanh", P.arctanh, np.arctanh, lambda rng, s: rng.uniform(-0.9, 0.9, s)),
    binary("atan2", P.arctan2, np.arctan2, normal, away_from_zero),
    unary("logistic", P.logistic, lambda x: 1.0 / (1.0 + np.exp(-x)), lambda rng, s: rng.uniform(-6, 6, s)),
    unary("logistic", P.logistic, logistic_ref,
          lambda rng, s: np.array([[-800.0, -40.0, -1e-3], [0.0, 40.0, 800.0]]), variant="extreme", grad="none"),
    unary("abs", lambda x: bind("abs", x), np.abs, away_from_zero),
    unary("sign", P.sign, np.sign, away_from_zero, grad="zero"),
    unary("stop_gradient", P.stop_gradient, lambda x: x, grad="zero"),
    binary("safe_mul", P.safe_mul, np.multiply),
    binary("safe_div", P.safe_div, np.divide, gen_b=away_from_zero),
    unary("sign", P.sign, np.sign, lambda rng, s: np.array([[-2.0, -0.0, 0.0], [1e-300, 3.0, -1e-300]]),
          variant="zeros", grad="none"),
    # ----- comparisons and logic: zero derivative, both raw (bool output) and converted
    *[binary(name, fn, ref, with_ties, with_ties, grad="zero", variant="raw")
      for name, fn, ref in [("eq", P.eq, np.equal), ("ne", P.ne, np.not_equal), ("lt", P.lt, np.less),
                            ("le", P.le, np.less_equal), ("gt", P.gt, np.greater),
                            ("ge", P.ge, np.greater_equal)]],
    *[binary(name, lambda a, b, _fn=fn: as_f64(_fn(a, b)), lambda a, b, _ref=ref: _ref(a, b).astype(np.float64),
             away_from_zero, normal, grad="zero", variant="as-f64")
      for name, fn, ref in [("eq", P.eq, np.equal), ("ne", P.ne, np.not_equal), ("lt", P.lt, np.less),
                            ("le", P.le, np.less_equal), ("gt", P.gt, np.greater),
                            ("ge", P.ge, np.greater_equal)]],
    binary("and", P.logical_and, np.logical_and, dtype=boolean, grad="none", variant="raw"),
    binary("or", P.logical_or, np.logical_or, dtype=boolean, grad="none", variant="raw"),
    unary("not", P.logical_not, np.logical_not, dtype=boolean, grad="none", variant="raw"),
    binary("and", lambda a, b: as_f64(P.logical_and(P.gt(a, b), P.gt(b, P.neg(a)))),
           lambda a, b: np.logical_and(a > b, b > -a).astype(np.float64), away_from_zero, away_from_zero,
           grad="zero", variant="as-f64"),
    binary("or", lambda a, b: as_f64(P.logical_or(P.gt(a, b), P.gt(b, P.neg(a)))),
           lambda a, b: np.logical_or(a > b, b > -a).astype(np.float64), away_from_zero, away_from_zero,
           grad="zero", variant="as-f64"),
    unary("not", lambda x: as_f64(P.logical_not(P.gt(x, P.neg(x)))), lambda x: (~(x > -x)).astype(np.float64),
          away_from_zero, grad="zero", variant="as-f64"),
    # ----- select and convert
    OpSpec("select", "", [boolean(2, 3), f64(2, 3), f64(2, 3)], P.select, np.where),
    OpSpec("select", "pred-from-x", [f64(2, 3), f64(2, 3), f64(2, 3)],
           lambda p, a, b: P.select(P.gt(p, P.neg(p)), P.mul(p, a), b),
           lambda p, a, b: np.where(p > -p, p * a, b), [away_from_zero, normal, normal]),
    OpSpec("select", "predicate-only", [f64(2, 3)],
           lambda p: P.select(P.gt(p, P.neg(p)), P.constant(CONSTANT), P.constant(-CONSTANT)),
           lambda p: np.where(p > 0, CONSTANT, -CONSTANT), [away_from_zero], grad="zero"),
    OpSpec("convert", "f64-to-f32", [f64(2, 3)], lambda x: P.convert(x, DType.f32),
           lambda x: x.astype(np.float32), tol=dict(eps=1e-3, rtol=1e-3, atol=1e-3)),
    OpSpec("convert", "f32-to-f64", [f32(2, 3)], lambda x: P.convert(x, DType.f64),
           lambda x: x.astype(np.float64), tol=dict(eps=1e-3, rtol=1e-3, atol=1e-3)),
    OpSpec("convert", "f64-to-f64", [f64(2, 3)], lambda x: P.convert_p.bind(x, dtype=DType.f64),
           lambda x: x),
    OpSpec("convert", "f64-to-i64", [f64(2, 3)], lambda x: P.convert(x, DType.i64),
           lambda x: x.astype(np.int64), [lambda rng, s: rng.uniform(-5, 5, s)], grad="zero"),
    OpSpec("convert", "i64-to-f64-times-x", [i64(2, 3), f64(2, 3)],
           lambda n, x: P.mul(P.convert(n, DType.f64), x), lambda n, x: n * x),
    OpSpec("convert", "bool-to-f64", [boolean(2, 3)], lambda b: P.convert(b, DType.f64),
           lambda b: b.astype(np.float64), grad="none"),
    # ----- constant
    OpSpec("constant", "times-x", [f64(2, 3)], lambda x: P.mul(x, P.constant(CONSTANT)), lambda x: x * CONSTANT),
    OpSpec("constant", "no-inputs", [], lambda: P.constant(CONSTANT), lambda: CONSTANT, grad="none"),
    OpSpec("constant", "only-output", [f64(2, 3)], lambda x: [P.constant(CONSTANT), x],
           lambda x: [CONSTANT, x]),
    # ----- data movement
    OpSpec("broadcast_in_dim", "stretch-and-new-axis", [f64(3, 1)],
           lambda x: P.broadcast_in_dim(x, (2, 3, 4), (1, 2)), lambda x: np.broadcast_to(x[None], (2, 3, 4))),
    OpSpec("broadcast_in_dim", "new-middle-axes", [f64(3, 4)],
           lambda x: P.broadcast_in_dim(x, (3, 2, 4, 2), (0, 2)),
           lambda x: np.broadcast_to(x[:, None, :, None], (3, 2, 4, 2))),
    OpSpec("broadcast_in_dim", "scalar", [f64()], lambda x: P.broadcast_in_dim(x, (2, 3), ()),
           lambda x: np.full((2, 3), x)),
    OpSpec("broadcast_in_dim", "stretch-both", [f64(1, 1)], lambda x: P.broadcast_in_dim(x, (2, 3), (0, 1)),
           lambda x: np.broadcast_to(x, (2, 3))),
    OpSpec("reshape", "3d-to-2d", [f64(2, 3, 4)], lambda x: P.reshape(x, (4, 6)), lambda x: x.reshape(4, 6)),
    OpSpec("reshape", "add-unit-axes", [f64(6)], lambda x: P.reshape(x, (1, 2, 3, 1)),
           lambda x: x.reshape(1, 2, 3, 1)),
    OpSpec("reshape", "to-scalar", [f64(1, 1)], lambda x: P.reshape(x, ()), lambda x: x.reshape(())),
    OpSpec("transpose", "201", [f64(2, 3, 4)], lambda x: P.transpose(x, (2, 0, 1)),
           lambda x: np.einsum("abc->cab", x)),
    OpSpec("transpose", "120", [f64(2, 3, 4)], lambda x: P.transpose(x, (1, 2, 0)),
           lambda x: np.einsum("abc->bca", x)),
    OpSpec("transpose", "2d", [f64(2, 3)], lambda x: P.transpose(x, (1, 0)), lambda x: x.T),
    OpSpec("slice", "strided", [f64(7, 6)],
           lambda x: bind("slice", x, start_indices=(1, 0), limit_indices=(7, 5), strides=(2, 3)),
           lambda x: x[1:7:2, 0:5:3]),
    OpSpec("slice", "3d-unaligned-limit", [f64(4, 5, 6)],
           lambda x: bind("slice", x, start_indices=(0, 1, 2), limit_indices=(4, 4, 6), strides=(3, 1, 2)),
           lambda x: x[0:4:3, 1:4, 2:6:2]),
    OpSpec("slice", "contiguous", [f64(5)],
           lambda x: bind("slice", x, start_indices=(1,), limit_indices=(4,), strides=(1,)), lambda x: x[1:4]),
    OpSpec("pad", "low-high-interior", [f64(3, 2)], lambda x: P.pad(x, (1, 0), (2, 1), (1, 2)),
           lambda x: pad_ref(x, (1, 0), (2, 1), (1, 2))),
    OpSpec("pad", "interior-only", [f64(4)], lambda x: P.pad(x, (0,), (0,), (2,)),
           lambda x: pad_ref(x, (0,), (0,), (2,))),
    OpSpec("pad", "edges-only", [f64(2, 3)], lambda x: P.pad(x, (0, 2), (1, 0), (0, 0)),
           lambda x: np.pad(x, ((0, 1), (2, 0)))),
    OpSpec("rev", "two-axes", [f64(2, 3, 4)], lambda x: P.rev(x, (0, 2)), lambda x: x[::-1, :, ::-1]),
    OpSpec("rev", "1d", [f64(5)], lambda x: P.rev(x, (0,)), lambda x: x[::-1]),
    OpSpec("concatenate", "three-axis1", [f64(2, 1), f64(2, 3), f64(2, 2)],
           lambda a, b, c: P.concatenate([a, b, c], 1),
           lambda a, b, c: np.hstack([a, b, c])),
    OpSpec("concatenate", "three-axis0-3d", [f64(1, 2, 2), f64(2, 2, 2), f64(3, 2, 2)],
           lambda a, b, c: P.concatenate([a, b, c], 0),
           lambda a, b, c: np.vstack([a, b, c])),
    OpSpec("concatenate", "same-operand-twice", [f64(2, 3)], lambda a: P.concatenate([a, P.neg(a), a], 1),
           lambda a: np.hstack([a, -a, a])),
    # ----- reductions
    OpSpec("reduce_sum", "axes-0-2", [f64(2, 3, 4)], lambda x: P.reduce_sum(x, (0, 2)),
           lambda x: np.einsum("abc->b", x)),
    OpSpec("reduce_sum", "axis-1", [f64(2, 3, 4)], lambda x: P.reduce_sum(x, (1,)),
           lambda x: np.einsum("abc->ac", x)),
    OpSpec("reduce_sum", "all", [f64(2, 3, 4)], lambda x: P.reduce_sum(x, (0, 1, 2)),
           lambda x: np.einsum("abc->", x)),
    OpSpec("reduce_max", "axes-0-2", [f64(2, 3, 4)], lambda x: P.reduce_max(x, (0, 2)),
           lambda x: np.max(x, axis=(0, 2)), [distinct]),
    OpSpec("reduce_max", "all", [f64(5)], lambda x: P.reduce_max(x, (0,)), lambda x: np.max(x), [distinct]),
    OpSpec("reduce_min", "axes-0-2", [f64(2, 3, 4)], lambda x: P.reduce_min(x, (0, 2)),
           lambda x: np.min(x, axis=(0, 2)), [distinct]),
    OpSpec("reduce_min", "axis-1", [f64(3, 4)], lambda x: P.reduce_min(x, (1,)),
           lambda x: np.min(x, axis=1), [distinct]),
    # ----- contraction
    dot_spec("batch-and-contract", (2, 3, 4), (2, 4, 5), ((2,), (1,)), ((0,), (0,)), "bij,bjk->bik"),
    dot_spec("batch-moved", (3, 2, 4), (4, 5, 2), ((2,), (0,)), ((1,), (2,)), "ibj,jkb->bik"),
    dot_spec("two-batch-swapped", (2, 3, 4), (3, 2, 4), ((2,), (2,)), ((0, 1), (1, 0)), "abi,bai->ab"),
    dot_spec("two-contract-swapped", (2, 3, 4), (4, 3, 5), ((1, 2), (1, 0)), ((), ()), "aij,jib->ab"),
    dot_spec("matmul", (3, 4), (4, 5), ((1,), (0,)), ((), ()), "ij,jk->ik"),
    dot_spec("matvec", (3, 4), (4,), ((1,), (0,)), ((), ()), "ij,j->i"),
    dot_spec("vecmat", (4,), (4, 5), ((0,), (0,)), ((), ()), "j,jk->k"),
    dot_spec("inner", (4,), (4,), ((0,), (0,)), ((), ()), "j,j->"),
    dot_spec("outer", (3,), (2,), ((), ()), ((), ()), "i,j->ij"),
    dot_spec("contract-lhs-first", (4, 3), (4, 5), ((0,), (0,)), ((), ()), "ji,jk->ik"),
    # ----- gather / scatter with runtime indices (out-of-range indices clamp), sorting
    OpSpec("gather", "axis1", [f64(2, 4, 3), i64(3, 2)], lambda x, i: bind("gather", x, i, axis=1),
           lambda x, i: clamped_take_ref(x, i, 1)),
    OpSpec("gather", "rows", [f64(5, 2), i64(7)], lambda x, i: bind("gather", x, i, axis=0),
           lambda x, i: clamped_take_ref(x, i, 0)),
    OpSpec("scatter_add", "axis1", [f64(2, 4, 3), i64(3), f64(2, 3, 3)],
           lambda x, i, u: bind("scatter_add", x, i, u, axis=1), lambda x, i, u: scatter_add_ref(x, i, u, 1)),
    OpSpec("scatter_add", "repeats-2d-index", [f64(3, 2), i64(2, 3), f64(2, 3, 2)],
           lambda x, i, u: bind("scatter_add", x, i, u, axis=0), lambda x, i, u: scatter_add_ref(x, i, u, 0)),
    OpSpec("scatter", "repeats", [f64(4, 3), i64(6), f64(6, 3)],
           lambda x, i, u: bind("scatter", x, i, u, axis=0), scatter_last_wins_ref),
    OpSpec("scatter", "axis1", [f64(2, 5), i64(3), f64(2, 3)],
           lambda x, i, u: bind("scatter", x, i, u, axis=1),
           lambda x, i, u: np.swapaxes(scatter_last_wins_ref(x.T, i, u.T), 0, 1)),
    OpSpec("cumsum", "axis-1", [f64(3, 4, 2)], lambda x: bind("cumsum", x, axis=1, reverse=False),
           lambda x: np.cumsum(x, axis=1)),
    OpSpec("cumsum", "reverse", [f64(5)], lambda x: bind("cumsum", x, axis=0, reverse=True),
           lambda x: np.cumsum(x[::-1])[::-1]),
    OpSpec("cumprod", "axis-1", [f64(3, 4, 2)], lambda x: bind("cumprod", x, axis=1, reverse=False),
           lambda x: np.cumprod(x, axis=1)),
    OpSpec("cumprod", "reverse", [f64(6)], lambda x: bind("cumprod", x, axis=0, reverse=True),
           lambda x: np.cumprod(x[::-1])[::-1]),
    OpSpec("cumprod", "zeros", [f64(2, 7)], lambda x: bind("cumprod", x, axis=1, reverse=False),
           lambda x: np.cumprod(x, axis=1), [with_zeros]),
    OpSpec("sort", "", [f64(3, 5)], lambda x: bind("sort", x), lambda x: np.sort(x, axis=-1), [distinct]),
    OpSpec("sort", "1d", [f64(7)], lambda x: bind("sort", x), np.sort, [distinct]),
    OpSpec("searchsorted", "left", [f64(6), f64(2, 3)],
           lambda a, v: as_f64(bind("searchsorted", bind("sort", a), v, side="left")),
           lambda a, v: np.searchsorted(np.sort(a), v, side="left").astype(np.float64), [with_ties, with_ties],
           grad="zero"),
    OpSpec("searchsorted", "right", [f64(5), f64(4)],
           lambda a, v: as_f64(bind("searchsorted", bind("sort", a), v, side="right")),
           lambda a, v: np.searchsorted(np.sort(a), v, side="right").astype(np.float64), [with_ties, with_ties],
           grad="zero"),
    OpSpec("argsort", "", [f64(3, 5)], lambda x: as_f64(bind("argsort", x)),
           lambda x: np.argsort(x, axis=-1, kind="stable").astype(np.float64), [with_ties], grad="zero"),
    # ----- run-time index bounds (in-range indices here; out of range in test_index_bounds.py)
    OpSpec("index_check", "", [i64(3, 4)], lambda i: as_f64(bind("index_check", i, size=5, axis=0)),
           lambda i: np.where(i < 0, i + 5, i).astype(np.float64), [small_ints], grad="none"),
    OpSpec("index_check", "gathered", [f64(5, 3), i64(4)],
           lambda x, i: bind("gather", x, bind("index_check", i, size=5, axis=0), axis=0),
           lambda x, i: x[i], [normal, small_ints]),
    # ----- LAPACK factorizations and solves (rows in test_linalg.py)
    *[OpSpec(name, variant, types, body, ref) for name, variant, types, body, ref in LAPACK_SPEC_ROWS],
    # ----- convolution and windows (references: explicit loops over output elements, tests/test_nn.py)
    OpSpec("conv_general_dilated", "nchw-groups-strided-rhs-dilated", [f64(2, 4, 5, 4), f64(4, 2, 3, 2)],
           lambda a, b: bind("conv_general_dilated", a, b, window_strides=(2, 1), padding=((1, 0), (0, 1)),
                             lhs_dilation=(1, 1), rhs_dilation=(1, 2), dimension_numbers=((0, 1, 2, 3),) * 3,
                             feature_group_count=2),
           lambda a, b: conv_loops(a, b, (2, 1), ((1, 0), (0, 1)), (1, 1), (1, 2), ((0, 1, 2, 3),) * 3, 2)),
    OpSpec("conv_general_dilated", "nhwc-lhs-dilated-cropped", [f64(1, 4, 3, 2), f64(2, 2, 2, 3)],
           lambda a, b: bind("conv_general_dilated", a, b, window_strides=(1, 2), padding=((1, 1), (-1, 1)),
                             lhs_dilation=(2, 1), rhs_dilation=(1, 1),
                             dimension_numbers=((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2)), feature_group_count=1),
           lambda a, b: conv_loops(a, b, (1, 2), ((1, 1), (-1, 1)), (2, 1), (1, 1),
                                   ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2)), 1)),
    OpSpec("reduce_window_sum", "padded-strided", [f64(2, 5, 4)],
           lambda x: bind("reduce_window_sum", x, window_dimensions=(1, 2, 3), window_strides=(1, 2, 1),
                          padding=((0, 0), (1, 0), (1, 1))),
           lambda x: reduce_window_loops(x, "sum", (1, 2, 3), (1, 2, 1), ((0, 0), (1, 0), (1, 1)))),
    OpSpec("reduce_window_max", "padded-strided", [f64(2, 5, 4)],
           lambda x: bind("reduce_window_max", x, window_dimensions=(1, 2, 3), window_strides=(1, 2, 1),
                          padding=((0, 0), (1, 0), (1, 1))),
           lambda x: reduce_window_loops(x, "max", (1, 2, 3), (1, 2, 1), ((0, 0), (1, 0), (1, 1))),
           [distinct_values]),
    OpSpec("select_and_gather_add", "padded-strided", [f64(5, 4), f64(5, 4)],
           lambda t, x: bind("select_and_gather_add", t, x, window_dimensions=(2, 3), window_strides=(2, 1),
                             padding=((1, 0), (1, 1))),
           lambda t, x: select_and_gather_loops(t, x, (2, 3), (2, 1), ((1, 0), (1, 1))),
           [normal, distinct_values]),
    OpSpec("select_and_scatter_add", "padded-strided", [f64(3, 4), f64(5, 4)],
           lambda c, x: bind("select_and_scatter_add", c, x, window_dimensions=(2, 3), window_strides=(2, 1),
                             padding=((1, 0), (1, 1))),
           lambda c, x: select_and_scatter_loops(c, x, (2, 3), (2, 1), ((1, 0), (1, 1))),
           [normal, distinct_values]),
    # ----- complex numbers, between real inputs and outputs (a complex product in between)
    *COMPLEX_SPECS,
    # ----- random numbers: the reference is an independent scalar Philox4x32-10
    OpSpec("random_uniform", "f64", [i64(), i64()],
           lambda k0, k1: bind("random_uniform", k0, k1, shape=(2, 3), stream=5, word=1, dtype=DType.f64),
           lambda k0, k1: reference_uniform(k0, k1, (2, 3), 5, 1, DType.f64), grad="zero"),
    OpSpec("random_uniform", "f32", [i64(), i64()],
           lambda k0, k1: bind("random_uniform", k0, k1, shape=(4,), stream=0, word=0, dtype=DType.f32),
           lambda k0, k1: reference_uniform(k0, k1, (4,), 0, 0, DType.f32), grad="zero"),
]

SPEC_IDS = [s.id for s in SPECS]
assert len(set(SPEC_IDS)) == len(SPEC_IDS), "op spec ids must be unique"
GRAD_SPECS = [s for s in SPECS if s.grad == "check"]
ZERO_SPECS = [s for s in SPECS if s.grad == "zero"]


# --------------------------------------------------------------------------- table-driven tests

def test_every_primitive_has_a_spec():
    covered = {s.prim for s in SPECS}
    assert covered == set(Primitive.all), (
        f"primitives without an op spec: {sorted(set(Primitive.all) - covered)}; "
        f"specs for unknown primitives: {sorted(covered - set(Primitive.all))}")


def test_every_primitive_has_a_derivative_check():
    """Each primitive appears in a gradient spec or a zero-derivative spec."""
    checked = {s.prim for s in SPECS if s.grad in ("check", "zero")}
    assert checked == set(Primitive.all), sorted(set(Primitive.all) - checked)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_value_matches_numpy(spec):
    fn = spec.function()
    assert spec.prim in {op.name for op in fn.walk()}, f"{spec.id} does not emit {spec.prim}"
    args = spec.args()
    got = evaluate(fn, args)
    with np.errstate(all="ignore"):
        expected = spec.ref(*args)
    expected = expected if isinstance(expected, list) else [expected]
    assert len(got) == len(expected)
    for g, e, t in zip(got, expected, fn.output_types, strict=True):
        e = np.asarray(e)
        assert g.shape == e.shape == t.shape
        assert g.dtype == t.dtype.numpy
        if t.dtype.is_float:
            np.testing.assert_allclose(g, e, rtol=1e-6 if t.dtype == DType.f32 else 1e-13, atol=0)
        else:
            np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("spec", GRAD_SPECS, ids=[s.id for s in GRAD_SPECS])
def test_gradients_to_second_order(spec):
    check_grads(spec.function(), spec.args(), order=spec.order, **spec.tol)


@pytest.mark.parametrize("spec", ZERO_SPECS, ids=[s.id for s in ZERO_SPECS])
def test_piecewise_constant_has_zero_derivative(spec):
    check_zero_derivative(spec.function(), spec.args())


ZERO_JVP_PRIMS = ["sign", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not"]


@pytest.mark.parametrize("name", ZERO_JVP_PRIMS)
def test_zero_jvp_rule_returns_symbolic_zero(name):
    """The rule itself answers `Zero` (no ops) even for a nonzero incoming tangent."""
    prim = Primitive.all[name]
    n_operands = 1 if name in ("sign", "not") else 2
    dtype = DType.bool if name in ("and", "or", "not") else DType.f64
    types = [TensorType((2, 3), dtype)] * n_operands
    captured = []

    def body(*vs):
        primals, tangents = list(vs[:n_operands]), list(vs[n_operands:])
        captured.append(prim.jvp(primals, tangents))
        return vs[0]
    build("zero_jvp", types + types, body)
    assert isinstance(captured[0], Zero), captured[0]
    assert captured[0].type == prim.infer(*types)[0]


# --------------------------------------------------------------------------- rules complete

LOWERING_KINDS = (Elementwise, Gather, Scatter, Alias, Reduction, Contraction, Constant, KernelKind)


@pytest.mark.parametrize("name", sorted(Primitive.all))
def test_rules_complete(name):
    prim = Primitive.all[name]
    assert callable(prim.impl), f"{name} has no NumPy impl"
    assert callable(prim.infer), f"{name} has no shape rule"
    assert prim.differentiable, f"{name} has no JVP rule"
    assert prim.lowering is not None, f"{name} has no lowering"
    assert isinstance(prim.lowering, LOWERING_KINDS), f"{name}: unknown lowering {prim.lowering!r}"


@pytest.mark.parametrize("name", sorted(Primitive.all))
def test_transpose_rule_exactly_when_declared_linear(name):
    """Linearity is declared on the record (Trait.LINEAR / BILINEAR, by deflinear,
    deftranspose or defbilinear); tests/test_op_interface.py checks the declarations hold."""
    prim = Primitive.all[name]
    if prim.is_linear:
        assert callable(prim.transpose), f"{name} is declared linear but has no transpose rule"
    else:
        assert prim.transpose is None, (f"{name} has a transpose rule but declares no linearity: declare it with "
                                        "deflinear, deftranspose or defbilinear (jitgrad.primitives.base)")


# --------------------------------------------------------------------------- AD edge cases

def test_fan_out():
    """x used many times: cotangents from every use are summed."""
    def f(x, y):
        z = x * y
        return np.sin(z) * x + z * z - x / (y * y + 1.0)
    fn = trace(f, (np.zeros(3), np.zeros(3))).function
    rng = np.random.default_rng(4)
    args = [rng.standard_normal(3), rng.standard_normal(3)]
    check_grads(fn, args, order=2)
    # Against the analytic gradient of sum(f) w.r.t. x.
    x, y = args
    grad_x = evaluate(vjp_function(fn, [0]), args + [np.ones(3)])[1]
    expected = np.cos(x * y) * y * x + np.sin(x * y) + 2 * x * y * y - 1.0 / (y * y + 1.0)
    np.testing.assert_allclose(grad_x, expected, rtol=1e-12)


def test_output_used_twice_and_input_returned_directly():
    fn = trace(lambda x: (x, x * 2.0, x), (np.zeros(3),)).function
    x = np.arange(3.0)
    cts = [np.ones(3), np.full(3, 10.0), np.full(3, 100.0)]
    grad = evaluate(vjp_function(fn, [0]), [x] + cts)[-1]
    np.testing.assert_array_equal(grad, np.full(3, 121.0))
    check_grads(fn, [x])


def test_unused_input_has_exactly_zero_gradient():
    fn = trace(lambda x, y, z: np.sin(x) * z, (np.zeros(3), np.zeros((2, 2)), np.zeros(3))).function
    rng = np.random.default_rng(5)
    args = [rng.standard_normal(3), rng.standard_normal((2, 2)), rng.standard_normal(3)]
    outs = evaluate(vjp_function(fn, [0, 1, 2]), args + [np.ones(3)])
    assert outs[2].shape == (2, 2) and outs[2].dtype == np.float64
    assert not np.any(outs[2])
    tangent = evaluate(jvp_function(fn, [1]), args + [np.ones((2, 2))])[1]
    assert not np.any(tangent)
    check_grads(fn, args)


def test_closed_over_constants():
    rng = np.random.default_rng(6)
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    scale = 0.5

    def f(x):
        return np.tanh(np.dot(w, x) + b) * scale  # `w @ x`: see test_tracing's matmul tests

    fn = trace(f, (np.zeros(4),)).function
    x = rng.standard_normal(4)
    np.testing.assert_allclose(evaluate(fn, [x])[0], f(x), rtol=1e-13)
    c = rng.standard_normal(3)
    grad = evaluate(vjp_function(fn, [0]), [x, c])[1]
    np.testing.assert_allclose(grad, w.T @ (c * scale * (1 - np.tanh(w @ x + b) ** 2)), rtol=1e-12)
    check_grads(fn, [x])


def test_broadcasting_gradients_sum_over_stretched_axes():
    fn = trace(lambda a, b: a * b + a, (np.zeros((3, 1)), np.zeros((1, 4)))).function
    rng = np.random.default_rng(7)
    a, b, c = rng.standard_normal((3, 1)), rng.standard_normal((1, 4)), rng.standard_normal((3, 4))
    _, grad_a, grad_b = evaluate(vjp_function(fn, [0, 1]), [a, b, c])
    assert grad_a.shape == (3, 1) and grad_b.shape == (1, 4)
    np.testing.assert_allclose(grad_a, np.sum(c * (b + 1), axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(grad_b, np.sum(c * a, axis=0, keepdims=True), rtol=1e-12)
    jac = numerical_jacobian(fn, [a, b], wrt=0)
    np.testing.assert_allclose(np.einsum("ij,ijkl->kl", c, jac), grad_a, rtol=1e-6)
    check_grads(fn, [a, b])


def test_broadcasting_scalar_and_vector_gradients():
    fn = trace(lambda s, v, m: s * m + v, (0.0, np.zeros(4), np.zeros((3, 4)))).function
    assert [str(t) for t in fn.input_types] == ["f64[]", "f64[4]", "f64[3,4]"]
    rng = np.random.default_rng(8)
    args = [np.float64(1.5), rng.standard_normal(4), rng.standard_normal((3, 4))]
    c = rng.standard_normal((3, 4))
    _, gs, gv, gm = evaluate(vjp_function(fn, [0, 1, 2]), args + [c])
    assert gs.shape == ()
    np.testing.assert_allclose(gs, np.sum(c * args[2]), rtol=1e-12)
    np.testing.assert_allclose(gv, c.sum(0), rtol=1e-12)
    np.testing.assert_allclose(gm, c * 1.5, rtol=1e-12)
    check_grads(fn, args)


def test_float32_gradients_are_float32():
    def f(x, w):
        return np.tanh(x @ w).sum() * 2.0 + np.exp(x).mean()
    rng = np.random.default_rng(9)
    x32, w32 = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    fn32 = trace(f, (x32, w32)).function
    fn64 = trace(f, (x32.astype(np.float64), w32.astype(np.float64))).function
    assert [t.dtype for t in fn32.output_types] == [DType.f32]
    outs32 = evaluate(vjp_function(fn32, [0, 1], cotangents=["one"]), [x32, w32])
    outs64 = evaluate(vjp_function(fn64, [0, 1], cotangents=["one"]), [x32.astype(np.float64),
                                                                    w32.astype(np.float64)])
    for o32, o64 in zip(outs32, outs64, strict=True):
        assert o32.dtype == np.float32
        np.testing.assert_allclose(o32, o64, rtol=1e-4, atol=1e-5)
    tangents = evaluate(jvp_function(fn32, [0, 1]), [x32, w32, np.ones_like(x32), np.ones_like(w32)])
    assert tangents[1].dtype == np.float32
    check_grads(fn32, [x32, w32], order=1)


def test_max_reduction_ties_share_the_gradient():
    """Documented convention: tied maxima split the cotangent evenly."""
    fn = build("max_ties", [f64(4)], lambda x: P.reduce_max(x, (0,)))
    grad = evaluate(vjp_function(fn, [0]), [np.array([1.0, 3.0, 3.0, -1.0]), np.float64(2.0)])[1]
    np.testing.assert_array_equal(grad, [0.0, 1.0, 1.0, 0.0])


def test_maximum_ties_split_the_tangent():
    fn = build("max_tie", [f64(2), f64(2)], P.maximum)
    _, ga, gb = evaluate(vjp_function(fn, [0, 1]), [np.array([1.0, 2.0]), np.array([1.0, 0.0]), np.ones(2)])
    np.testing.assert_array_equal(ga, [0.5, 1.0])
    np.testing.assert_array_equal(gb, [0.5, 0.0])


def test_seeded_scalar_output_gives_gradient():
    fn = trace(lambda x: np.sum(x ** 3), (np.zeros(4),)).function
    x = np.linspace(-1, 1, 4)
    vfn = vjp_function(fn, [0], cotangents=["one"])
    assert len(vfn.args) == 1
    loss, grad = evaluate(vfn, [x])
    np.testing.assert_allclose(loss, np.sum(x ** 3))
    np.testing.assert_allclose(grad, 3 * x ** 2, rtol=1e-13)


def test_differentiating_integer_argument_is_an_error():
    fn = build("int_arg", [i64(3), f64(3)], lambda n, x: P.mul(P.convert(n, DType.f64), x))
    with pytest.raises(GradientError, match="argument 0"):
        jvp_function(fn, [0])
    with pytest.raises(GradientError):
        vjp_function(fn, [0])


def test_third_order_through_tracing():
    """A composite function survives one more level than the table checks."""
    fn = trace(lambda x: np.sum(np.exp(np.sin(x)) * x), (np.zeros(3),)).function
    check_grads(fn, [np.array([0.3, -0.7, 1.1])], order=3)


def test_check_jvp_and_check_vjp_detect_a_wrong_rule(monkeypatch):
    """The checkers themselves fail on a broken rule (here: sin' = sin)."""
    from jitgrad.primitives import base, elementwise
    fn = build("sin_fn", [f64(3)], P.sin)
    args = [np.array([0.1, 0.5, 1.0])]
    original = elementwise.sin_p.jvp
    base.defjvp(elementwise.sin_p, lambda t, x: P.mul(t, P.sin(x)))
    try:
        with pytest.raises(AssertionError):
            check_jvp(fn, args)
    finally:
        elementwise.sin_p.jvp = original
    # A broken transpose (neg transposed as identity) is caught by the inner-product check.
    fn = build("neg_fn", [f64(3)], P.neg)
    original_t = elementwise.neg_p.transpose
    elementwise.neg_p.transpose = lambda ct, x: [ct]
    try:
        with pytest.raises(AssertionError):
            check_vjp(fn, args)
    finally:
        elementwise.neg_p.transpose = original_t
    check_grads(fn, args)


def test_float32_spec_values_keep_dtype():
    out = run_traced(lambda x: x * 2.0 + 1, np.ones(3, np.float32))
    assert out.dtype == np.float32
