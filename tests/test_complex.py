"""Complex numbers: dtypes and NumPy's promotion, the IR text, the reference interpreter,
the lower-complex pass and the native call path against NumPy running the same code,
clear errors where complex support ends, and derivatives through complex intermediates
against central differences (to second order)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import DTypeError, GradientError
import jitgrad.primitives as P
from jitgrad.ir import DType, TensorType, parse_type
from jitgrad.ir.parser import parse_function
from jitgrad.ir.printer import print_function
from jitgrad.passes.lower_complex import LowerComplex
from jitgrad.interpreter import evaluate
from jitgrad.tracing.tracer import trace
from helpers import build

COMPLEX = [np.complex64, np.complex128]


def complex_array(rng, shape, dtype):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def with_special_values(a, b):
    """Divisors 0, NaN, inf and a shared element, the corners of NumPy's division loop."""
    b.flat[0], b.flat[1], b.flat[2] = 0, complex(np.nan, 1), complex(np.inf, -2)
    b.flat[3] = complex(0, 3)
    a.flat[4] = b.flat[4]
    return a, b


def same_bits(got, expected):
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def ulps(got, expected):
    """The largest difference of either part, in units of the part dtype's epsilon times
    the element's magnitude."""
    eps = np.finfo(expected.real.dtype).eps
    scale = np.maximum(np.abs(expected), np.finfo(expected.real.dtype).tiny)
    with np.errstate(all="ignore"):
        error = np.abs(got - expected) / (eps * scale)
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))      # infinities and NaNs included
    return float(np.max(np.where(same, 0, np.nan_to_num(error, nan=np.inf)), initial=0))


# --------------------------------------------------------------------------- dtypes

def test_complex_dtypes_are_jitgrad_dtypes():
    for dtype, part in ((DType.c64, DType.f32), (DType.c128, DType.f64)):
        assert DType.from_numpy(dtype.numpy) is dtype and dtype.is_complex and dtype.is_inexact
        assert not dtype.is_float and dtype.real_dtype is part and part.complex_dtype is dtype
        assert parse_type(f"{dtype}[2,3]").dtype is dtype


@pytest.mark.parametrize("fn, args", [
    (lambda x: x * 1j, (np.ones(3, np.float32),)),                 # weak Python complex: complex64
    (lambda x: x + 2j, (np.ones(3, np.float16),)),
    (lambda x, z: x + z, (np.arange(3), np.ones(3, np.complex64))),  # int64 + complex64: complex128
    (lambda x, z: x * z, (np.ones(3, np.float32), np.ones(3, np.complex128))),
    (lambda z: z + 1.5, (np.ones(3, np.complex64),)),
    (lambda x: x.astype(np.complex64), (np.arange(3, dtype=np.int16),)),
    (lambda z: z.astype(np.float32), (np.array([1.5 + 2j, -3j], np.complex128),)),
    (lambda z: z.astype(bool), (np.array([0j, 2j, 1 + 0j], np.complex64),)),
], ids=["f32*1j", "f16+2j", "i64+c64", "f32*c128", "c64+float", "i16->c64", "c128->f32", "c64->bool"])
def test_promotion_and_conversion_match_numpy(fn, args):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        expected = fn(*args)
        got = jitgrad.jit(fn)(*args)
    same_bits(np.asarray(got), np.asarray(expected))


# --------------------------------------------------------------------------- values against NumPy

EXACT = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "neg": lambda a, b: -a,
    "div": lambda a, b: a / b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "conj": lambda a, b: np.conj(a) + b.conj(), "real": lambda a, b: np.real(a) * b.imag,
    "select": lambda a, b: np.where(np.real(a) > 0, a, b), "slices": lambda a, b: np.concatenate([a.T[1:], b.T[:1]]),
    "broadcast": lambda a, b: a[:, None, :] + b[0], "scalar": lambda a, b: a[1, 2] - b[0, 0],
}
CLOSE = {     # NumPy's SIMD loops fuse a multiply-add, BLAS and pairwise sums round differently
    "mul": (lambda a, b: a * b, 2), "abs": (lambda a, b: np.abs(a) + abs(b), 2), "angle": (lambda a, b: np.angle(b), 2),
    "square": (lambda a, b: a ** 2, 2), "cube": (lambda a, b: a ** 3 - b ** -2, 8),
    "matmul": (lambda a, b: a @ b.T, 8), "sum": (lambda a, b: a.sum(0) + np.mean(b), 8),
}


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name", sorted(EXACT))
def test_compiled_matches_numpy_bit_for_bit(name, dtype):
    rng = np.random.default_rng(1)
    a, b = with_special_values(complex_array(rng, (6, 3), dtype), complex_array(rng, (6, 3), dtype))
    fn = EXACT[name]
    with np.errstate(all="ignore"):
        expected = fn(a, b)
        compiled = jitgrad.jit(fn)
        same_bits(compiled(a, b), expected)
        same_bits(compiled(a, b), expected)       # the native call path, second call
        same_bits(run_interpreter(fn, a, b), expected)


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name", sorted(CLOSE))
def test_compiled_matches_numpy_within_ulps(name, dtype):
    rng = np.random.default_rng(2)
    a, b = complex_array(rng, (6, 3), dtype), complex_array(rng, (6, 3), dtype)
    fn, bound = CLOSE[name]
    expected = fn(a, b)
    got = jitgrad.jit(fn)(a, b)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert ulps(got, expected) <= bound


def run_interpreter(fn, *args):
    traced = trace(fn, args)
    (out,) = evaluate(traced.function, list(args))
    return out


def test_zero_d_complex_arguments_and_results_on_the_native_call_path():
    fn = jitgrad.jit(lambda z, w: (z * w, np.conj(z)))
    for dtype in COMPLEX:
        z, w = np.asarray(1.5 - 2j, dtype), np.asarray(-0.5 + 4j, dtype)
        for _ in range(3):
            prod, conj = fn(z, w)
            same_bits(prod, np.asarray(z * w))
            same_bits(conj, np.conj(z))
    assert jitgrad.jit(lambda x: x * (1 + 2j))(2.0) == 2 + 4j        # Python float in, complex out


def test_lowered_function_computes_in_real_arithmetic_only():
    fn = trace(lambda a, b: (a * b) / (a - 1j), (np.ones(3, np.complex64), np.ones(3, np.complex64))).function
    lowered = LowerComplex().run(fn)
    kinds = {op.name for op in lowered.walk()} - {"view_as_real", "view_as_complex"}
    for op in lowered.walk():
        if op.name not in ("view_as_real", "view_as_complex"):
            assert not any(r.type.dtype.is_complex for r in op.results), op.name
    assert {"mul", "div", "select"} <= kinds
    rng = np.random.default_rng(3)
    args = [complex_array(rng, 3, np.complex64), complex_array(rng, 3, np.complex64)]
    assert ulps(evaluate(lowered, args)[0], evaluate(fn, args)[0]) <= 4     # NumPy's product fuses a multiply-add


def test_ir_text_round_trips_complex_constants():
    special = np.array([1.5 - 2j, complex(np.inf, -0.0), complex(np.nan, 1e-300)])
    fn = trace(lambda z: z * special + np.complex64(0.1 + 0.2j), (np.ones(3, np.complex128),)).function
    text = print_function(fn)
    assert "(0.1" in text and "c128[3]" in text
    assert print_function(parse_function(text)) == text


# --------------------------------------------------------------------------- where support ends

def test_primitives_without_complex_support_raise_a_clear_error():
    z = np.ones(3, np.complex128)
    with pytest.raises(DTypeError, match=r"numpy.floor of complex numbers is not supported") as info:
        jitgrad.jit(lambda z: np.floor(z))(z)
    assert "test_complex.py" in str(info.value)                       # the user's source line
    for refused in (np.percentile, np.quantile, np.histogram):
        with pytest.raises(DTypeError, match=f"numpy.{refused.__name__} of complex"):
            jitgrad.jit(lambda z: refused(z, 3) if refused is np.histogram else refused(z, 0.5))(z)
    with pytest.raises(DTypeError, match="numpy.floor_divide of complex"):          # operators too
        jitgrad.jit(lambda z: z // z)(z)
    with pytest.raises(DTypeError, match="floor_divide does not support complex numbers yet"):   # the primitives' gate
        build("floor_divide_of_complex", [TensorType((3,), DType.c128)] * 2, P.floor_divide)
    with pytest.raises(DTypeError, match="sort does not support complex"):
        build("sort_of_complex", [TensorType((3,), DType.c128)], P.sorting.sort)


@pytest.mark.parametrize("fn", [np.isnan, np.isinf, np.isfinite, np.iscomplex, np.isreal, np.rint,
                                lambda z: np.round(z, 1), np.reciprocal, lambda z: z * np.iscomplexobj(z)],
                         ids=["isnan", "isinf", "isfinite", "iscomplex", "isreal", "rint", "round", "reciprocal",
                              "iscomplexobj"])
def test_complex_aware_numpy_functions_match_numpy(fn):
    z = np.array([1 + 2j, complex(np.nan, 0), complex(0, np.inf), -2.5 - 0.5j, 2.5 + 1.5j, 0.1 - 1e-3j])
    with np.errstate(all="ignore"):
        same_bits(jitgrad.jit(fn)(z), fn(z))


def test_complex_values_in_control_flow_compile():
    """(Values and derivatives through regions: tests/test_complex_more.py.)"""
    def f(z):
        return jitgrad.control_flow.fori_loop(0, 3, lambda i, c: c * 2j, z)
    np.testing.assert_array_equal(jitgrad.jit(f)(np.ones(3, np.complex128)), np.full(3, -8j))


def test_grad_of_a_complex_output_is_refused():
    with pytest.raises(GradientError, match="floating-point output"):
        jitgrad.grad(lambda z: (z * z).sum())(np.ones(3, np.complex128))


# --------------------------------------------------------------------------- derivatives

def central_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


LOSSES = {
    "product": lambda x: np.real((x * (1 + 2j)) * (x - 0.5j)).sum(),
    "quotient": lambda x: np.abs(((x + 1j * x[::-1]) / (2.0 - 1j * x)).sum()),
    "matmul": lambda x: np.imag((x + 0.5j) @ (x[:, None] * (1 - 1j))).sum(),
    "conj-angle": lambda x: (np.angle(x + 1j) + np.real(np.conj(x * 1j + 2) * (x - 1j)) ** 2).sum(),
    "power": lambda x: np.real((x + 0.3j) ** 3 + (x - 2j) ** -2).sum(),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_through_complex_values_to_second_order(name):
    f = LOSSES[name]
    x = np.random.default_rng(4).standard_normal(4)
    grad = jitgrad.grad(f)
    np.testing.assert_allclose(grad(x), central_gradient(f, x), rtol=1e-6, atol=1e-7)

    def grad_sum(x):
        return grad(x).sum()
    np.testing.assert_allclose(jitgrad.grad(grad_sum)(x), central_gradient(grad_sum, x), rtol=1e-5, atol=1e-6)
    _, tangent = jitgrad.jvp(f, (x,), (np.ones_like(x),))
    np.testing.assert_allclose(tangent, grad(x).sum(), rtol=1e-12)


# JAX's convention: for real f of complex z = x + iy, grad f = df/dx - i df/dy.
COMPLEX_LOSSES = {
    "modulus-squared": lambda z: np.real(z * np.conj(z)).sum(),
    "abs-angle": lambda z: (np.abs(z) + np.angle(z) ** 2).sum(),
    "exp-log-sqrt": lambda z: np.imag(np.exp(z) * np.log(z + 3) / np.sqrt(z + 2j)).sum(),
    "matmul-reciprocal": lambda z: np.real((z[:, None] @ z[None, :]).sum() * (1 + 2j) + np.reciprocal(z) ** 3).sum(),
}


def wirtinger_gradient(f, z, h=1e-6):
    """df/dx - i df/dy by central differences along the real and imaginary directions."""
    g = np.zeros_like(z)
    for k in range(z.size):
        e = np.zeros_like(z)
        e.flat[k] = h
        dx = (f(z + e) - f(z - e)) / (2 * h)
        dy = (f(z + 1j * e) - f(z - 1j * e)) / (2 * h)
        g.flat[k] = dx - 1j * dy
    return g


@pytest.mark.parametrize("name", sorted(COMPLEX_LOSSES))
def test_gradients_of_complex_arguments_follow_jax_to_second_order(name):
    rng = np.random.default_rng(5)
    f = COMPLEX_LOSSES[name]
    z, v = complex_array(rng, 4, np.complex128), complex_array(rng, 4, np.complex128)
    grad = jitgrad.grad(f)
    assert grad(z).dtype == np.complex128
    np.testing.assert_allclose(grad(z), wirtinger_gradient(f, z), rtol=1e-6, atol=1e-7)

    def directional(z):           # a real function of the gradient, differentiated again
        return np.real(grad(z) * v).sum()
    np.testing.assert_allclose(jitgrad.grad(directional)(z), wirtinger_gradient(directional, z), rtol=1e-5, atol=1e-6)


def test_holomorphic_derivatives_by_vjp_and_jvp():
    """For holomorphic f, vjp with cotangent 1 and jvp with tangent 1 both give f'(z) (JAX's
    grad(..., holomorphic=True))."""
    z = complex_array(np.random.default_rng(6), 5, np.complex128)

    def f(z):
        return np.exp(z) * z ** 2 / (z + 3) + np.sqrt(z + 4j) * np.log(z + 5)

    def derivative(z):
        return (np.exp(z) * (z ** 2 + 2 * z) * (z + 3) - np.exp(z) * z ** 2) / (z + 3) ** 2 \
            + np.log(z + 5) / (2 * np.sqrt(z + 4j)) + np.sqrt(z + 4j) / (z + 5)
    _, pullback = jitgrad.vjp(f, z)
    np.testing.assert_allclose(pullback(np.ones_like(z))[0], derivative(z), rtol=1e-12)
    _, tangent = jitgrad.jvp(f, (z,), (np.ones_like(z),))
    np.testing.assert_allclose(tangent, derivative(z), rtol=1e-12)


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("fn", [np.exp, np.log, np.sqrt], ids=["exp", "log", "sqrt"])
def test_exp_log_sqrt_match_numpy_within_six_ulps(fn, dtype):
    """Vectorized real exp/sin/cos/log are within ~3 ulp each (libmvec); their compositions
    within 6 of NumPy's (glibc's cexp, clog, csqrt)."""
    rng = np.random.default_rng(7)
    magnitudes = np.exp(rng.uniform(-5, 5, (2, 2000)))
    z = (rng.standard_normal(2000) * magnitudes[0] + 1j * rng.standard_normal(2000) * magnitudes[1]).astype(dtype)
    near_unit_circle = (np.exp(1j * rng.uniform(-3, 3, 500)) * (1 + 1e-4 * rng.standard_normal(500))).astype(dtype)
    compiled = jitgrad.jit(fn)
    for sample in (z, near_unit_circle):
        assert ulps(compiled(sample), fn(sample)) <= 6
    special = np.array([0j, complex(-0.0, -0.0), complex(np.inf, 0), complex(-np.inf, 1), complex(1, np.inf),
                        complex(-1, -np.inf), -4 + 0j, complex(-4, -0.0)], dtype)
    if fn is np.sqrt:
        got, expected = compiled(special), fn(special)
        same_bits(got, expected)
        np.testing.assert_array_equal(np.signbit(got.imag), np.signbit(expected.imag))


@pytest.mark.parametrize("dtype", COMPLEX)
def test_exp_of_infinite_real_parts_gives_c99s_special_values(dtype):
    """An infinite real part with an infinite or NaN imaginary part: C99's cexp (glibc's,
    NumPy's) gives 0 + i copysign(0, im) for -inf and inf + i NaN for +inf; cos and sin of
    the imaginary part alone would make both parts NaN (a fuzzer finding)."""
    nan, inf = np.nan, np.inf
    z = np.array([complex(-inf, nan), complex(-inf, -nan), complex(-inf, inf), complex(-inf, -inf),
                  complex(inf, nan), complex(inf, inf), complex(inf, -inf), complex(-inf, 2.0),
                  complex(inf, 0.0), complex(inf, 2.0), complex(nan, 0.0)], dtype)
    with np.errstate(all="ignore"):
        expected = np.exp(z)
    got = jitgrad.jit(np.exp)(z)
    for part in (np.real, np.imag):
        np.testing.assert_array_equal(part(got), part(expected))
        finite = np.isfinite(part(expected))
        np.testing.assert_array_equal(np.signbit(part(got))[finite], np.signbit(part(expected))[finite])


def test_multiplication_overflows_to_numpys_infinities():
    """np.multiply of complex arrays runs NumPy's SIMD loop, whose fused multiply-adds never
    round the inner product: (4.6e228 - 3.7e228j) * (6.7e105 - 8.4e104j) is -inf - inf j
    there, where the plain formula gives inf - inf = NaN (fuzzer seed 20261202 #13). Every
    pair of parts from zeros to overflow, infinities and NaN gives NumPy's class (finite,
    +inf, -inf, NaN) in each part, and finite parts to rounding."""
    parts = np.array([0, 1, -1, 2.5, -0.0, 1e-300, 3e-160, 1e155, -3e154, 1e200, -1e200, 1.2e308, 1.5e308,
                      -1.7e308, np.inf, -np.inf, np.nan])
    z = (parts[:, None] + 1j * parts[None, :]).ravel()
    x, y = np.meshgrid(z, z)

    def kind(v):
        return np.where(np.isnan(v), 3, np.where(np.isinf(v), 1 + np.signbit(v), 0))
    with np.errstate(all="ignore"):
        expected = x * y
    got = jitgrad.jit(lambda a, b: a * b)(x, y)
    for g, e in ((got.real, expected.real), (got.imag, expected.imag)):
        np.testing.assert_array_equal(kind(g), kind(e))
        finite = np.isfinite(e)
        scale = np.abs(expected[finite]) + np.finfo(np.float64).tiny
        assert np.all(np.abs(g[finite] - e[finite]) <= 4 * np.finfo(np.float64).eps * scale)
    a = np.sinh(np.array([(8439.26548101775 + 3909.9571910091977j) / 16]))
    b = np.cosh(np.array([(3909.9571910091977 - 2j) / 16]))
    np.testing.assert_array_equal(jitgrad.jit(lambda a, b: a * b)(a, b), a * b)
