"""Complex elementary functions (trigonometric, hyperbolic and their inverses, exp2,
expm1, log2, log10, log1p, power with a non-integer or complex exponent, sign): compiled
values against NumPy on random samples of every magnitude and on a grid of special
values (infinities, NaNs, signed zeros, branch cuts, parts near the largest float), and
derivatives in JAX's convention against central differences, forward and reverse, to
second order."""
from __future__ import annotations

import warnings

import mpmath
import numpy as np
import pytest

import jitgrad
import jitgrad.primitives as P
from jitgrad.ir import DType, TensorType
from jitgrad.primitives import complex_numbers as C
from helpers import build, check_grads

COMPLEX = [np.complex64, np.complex128]

UNARY = {
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "arcsin": np.arcsin, "arccos": np.arccos, "arctan": np.arctan, "arcsinh": np.arcsinh,
    "arccosh": np.arccosh, "arctanh": np.arctanh, "exp2": np.exp2, "expm1": np.expm1, "log2": np.log2,
    "log10": np.log10, "log1p": np.log1p, "sign": np.sign,
}
"""The functions and the NumPy ufuncs they are checked against."""

ULP_BOUNDS = {name: 8 for name in UNARY}
"""Largest difference from NumPy in ulp of the result's magnitude (docs/complex.md)."""


def ulps(got, expected):
    """The larger part's difference in units of eps times the element's magnitude; equal
    values (infinities, NaN against NaN) count 0."""
    eps = np.finfo(expected.real.dtype).eps
    scale = np.maximum(np.abs(expected), np.finfo(expected.real.dtype).tiny)
    with np.errstate(all="ignore"):
        error = np.maximum(np.abs(got.real - expected.real), np.abs(got.imag - expected.imag)) / (eps * scale)
    same = ((got.real == expected.real) | (np.isnan(got.real) & np.isnan(expected.real))) & \
           ((got.imag == expected.imag) | (np.isnan(got.imag) & np.isnan(expected.imag)))
    return np.where(same, 0, np.nan_to_num(error, nan=np.inf))


def samples(dtype, seed=0):
    """Random points at magnitudes from 1e-8 to 1e3 in each part, points near the unit
    circle and near +-1 and +-i (the branch points)."""
    rng = np.random.default_rng(seed)
    parts = []
    for scale_re in (1e-8, 1e-2, 1, 30, 1e3):
        for scale_im in (1e-8, 1, 30):
            parts.append(rng.standard_normal(40) * scale_re + 1j * rng.standard_normal(40) * scale_im)
    parts.append(np.exp(1j * rng.uniform(-3.1, 3.1, 100)) * (1 + 1e-4 * rng.standard_normal(100)))
    for point in (1, -1, 1j, -1j):
        parts.append(point + 1e-3 * (rng.standard_normal(25) + 1j * rng.standard_normal(25)))
    return np.concatenate(parts).astype(dtype)


SPECIAL_PARTS = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0, 1e-300, 1e300, -1e300, 710.0, -710.0, 1.5e308,
                 np.inf, -np.inf, np.nan]


def special_grid(dtype):
    """Every pair of special parts (float32: the f64-only magnitudes become inf or 0, as NumPy casts)."""
    with np.errstate(all="ignore"):
        return np.array([complex(a, b) for a in SPECIAL_PARTS for b in SPECIAL_PARTS]).astype(dtype)


def all_functions(z):
    return {name: fn(z) for name, fn in UNARY.items()}


def same_special_values(got, expected):
    """Where NumPy's part is not finite, or is zero, the same value with the same sign bit."""
    for part in (np.real, np.imag):
        g, e = part(got), part(expected)
        exact = ~np.isfinite(e) | (e == 0)
        both_nan = np.isnan(g) & np.isnan(e)
        equal = (g == e) & (np.signbit(g) == np.signbit(e))
        assert np.all((both_nan | equal)[exact]), (g[exact & ~(both_nan | equal)], e[exact & ~(both_nan | equal)])


@pytest.mark.parametrize("dtype", COMPLEX)
def test_functions_match_numpy_on_samples_and_special_values(dtype):
    compiled = jitgrad.jit(all_functions)
    for z in (samples(dtype), special_grid(dtype)):
        got = compiled(z)
        with np.errstate(all="ignore"):
            expected = all_functions(z)
        for name in UNARY:
            assert got[name].dtype == expected[name].dtype, name
            # NumPy's log1p, log(hypot(1 + x, y)), loses digits near 0 and overflows where
            # hypot does: checked against mpmath below.
            largest_part = np.maximum(np.abs(z.real), np.abs(z.imag))
            compared = ~((np.abs(z) < 0.5) | (largest_part > 1e300)) if name == "log1p" else np.ones(z.shape, bool)
            error = ulps(got[name][compared], expected[name][compared])
            assert error.max() <= ULP_BOUNDS[name], (name, z[compared][np.argmax(error)], error.max())
            same_special_values(got[name][compared], expected[name][compared])


@pytest.mark.parametrize("dtype", COMPLEX)
def test_log1p_near_zero_is_accurate_where_numpy_loses_digits(dtype):
    rng = np.random.default_rng(3)
    z = ((rng.standard_normal(60) + 1j * rng.standard_normal(60)) * 10.0 ** rng.uniform(-12, -0.5, 60)).astype(dtype)
    if dtype == np.complex128:
        z[:3] = [1.5e308 + 1.5e308j, -1e308 + 1e308j, 1e308 - 1e300j]      # |1 + z| beyond the largest float
    got = jitgrad.jit(np.log1p)(z)
    mpmath.mp.prec = 120
    exact = np.array([complex(mpmath.log1p(mpmath.mpc(complex(v)))) for v in z])
    assert ulps(got.astype(np.complex128), exact).max() <= (4 if dtype == np.complex128 else 4 * 2.0 ** 29)
    assert np.max(np.abs(got - exact) / np.abs(exact)) < 4 * np.finfo(z.real.dtype).eps


@pytest.mark.parametrize("dtype", COMPLEX)
def test_branch_cuts_follow_the_sign_of_zero(dtype):
    """On a branch cut the sign of a zero part picks the side, as C99 and NumPy do."""
    cut_points = np.array([complex(2, 0.0), complex(2, -0.0), complex(-2, 0.0), complex(-2, -0.0),
                           complex(0.0, 2), complex(-0.0, 2), complex(0.0, -2), complex(-0.0, -2),
                           complex(0.5, 0.0), complex(0.5, -0.0)], dtype)
    inverses = ("arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh")
    compiled = jitgrad.jit(lambda z: {name: UNARY[name](z) for name in inverses})(cut_points)
    for name in inverses:
        expected = UNARY[name](cut_points)
        assert ulps(compiled[name], expected).max() <= ULP_BOUNDS[name], name
        np.testing.assert_array_equal(np.signbit(compiled[name].imag), np.signbit(expected.imag), err_msg=name)
        np.testing.assert_array_equal(np.signbit(compiled[name].real), np.signbit(expected.real), err_msg=name)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_power_matches_numpy(dtype):
    """NumPy's npy_cpow: its integer exponents below 100 by binary powering (exact there),
    0 ** w, z ** 0 and the C library's cpow (exp(w log z), whose error grows with
    |w log z|) elsewhere; infinities and NaNs as glibc's cpow with C99's multiplication."""
    rng = np.random.default_rng(1)
    z = (rng.standard_normal(300) + 1j * rng.standard_normal(300)).astype(dtype)
    w = (3 * rng.standard_normal(300) + 1j * rng.standard_normal(300)).astype(dtype)
    w[:60] = rng.integers(-99, 100, 60)
    compiled = jitgrad.jit(lambda z, w: z ** w)
    got, expected = compiled(z, w), z ** w
    eps = np.finfo(z.real.dtype).eps
    with np.errstate(all="ignore"):
        condition = np.abs(w * np.log(z)).astype(np.float64)
    assert np.all(np.abs(got - expected) <= (8 + 2 * condition) * eps * np.abs(expected))
    parts = [0.0, -0.0, 0.5, -1.5, 1.0, 2.0, 3.0, -2.0, 7.0, -99.0, 100.0, 2.5, np.inf, np.nan]
    grid = np.array([complex(a, b) for a in parts for b in (0.0, -0.0, 1.0, -0.5, np.inf, np.nan)], dtype)
    a, b = (g.ravel() for g in np.meshgrid(grid, grid))
    with np.errstate(all="ignore"):
        expected = a ** b
        condition = np.nan_to_num(np.abs(b * np.log(a)).astype(np.float64), posinf=0)
    got = compiled(a, b)
    finite = np.isfinite(expected.real) & np.isfinite(expected.imag)
    assert np.all((ulps(got, expected) <= 8 + 2 * condition)[finite])
    same_special_values(got, expected)
    for exponent in (2.5, 0.5, -0.3, 1j, 2 + 1j):            # static exponents, complex Python scalars
        got = jitgrad.jit(lambda z: z ** exponent)(z)
        assert got.dtype == (z ** exponent).dtype
        assert ulps(got, z ** exponent).max() <= 16


# --------------------------------------------------------------------------- derivatives

PRIMITIVES = ["sin", "cos", "tan", "sinh", "cosh", "tanh", "asin", "acos", "atan", "asinh", "acosh", "atanh",
              "exp2", "expm1", "log2", "log10", "log1p"]


def _through(prim_name):
    """(x, y) -> (Re f(x + iy), Im f(x + iy)) for the primitive f."""
    def body(x, y):
        w = P.Primitive.all[prim_name].bind(C.make_complex(x, y))
        return C.real(w), C.imag(w)
    return body


@pytest.mark.parametrize("prim_name", PRIMITIVES)
def test_holomorphic_primitives_to_second_order(prim_name):
    """Forward and reverse mode of Re f and Im f in the real and imaginary parts of the
    argument, against central differences (the reference interpreter), to second order."""
    types = [TensorType((2, 3), DType.f64)] * 2
    fn = build(f"complex_{prim_name}", types, _through(prim_name))
    rng = np.random.default_rng(4)
    x, y = 0.4 * rng.standard_normal((2, 3)) + 0.2, 0.4 * rng.standard_normal((2, 3)) + 0.3
    check_grads(fn, [x, y], order=2)


def test_power_with_complex_exponent_to_second_order():
    types = [TensorType((2, 3), DType.f64)] * 4

    def body(a, b, c, d):
        w = P.power(C.make_complex(a, b), C.make_complex(c, d))
        return C.real(w), C.imag(w)
    fn = build("complex_pow", types, body)
    rng = np.random.default_rng(5)
    args = [rng.uniform(0.5, 1.5, (2, 3)), rng.standard_normal((2, 3)), rng.standard_normal((2, 3)),
            0.5 * rng.standard_normal((2, 3))]
    check_grads(fn, args, order=2)


def wirtinger_gradient(f, z, h=1e-6):
    """df/dx - i df/dy (JAX's convention) by central differences."""
    g = np.zeros_like(z)
    for k in range(z.size):
        e = np.zeros_like(z)
        e.flat[k] = h
        g.flat[k] = (f(z + e) - f(z - e)) / (2 * h) - 1j * (f(z + 1j * e) - f(z - 1j * e)) / (2 * h)
    return g


def loss(z):
    """A real function through complex functions of each family (compiled end to end;
    every primitive's rules are checked one by one above)."""
    w = np.sin(z) * np.cosh(z / 2) - np.arcsinh(z) * np.arctanh(z / 5) + np.log1p(z * 0.3) ** 1.5
    return np.real(w * np.conj(w)).sum() + np.imag(w).sum()


def test_gradients_follow_jax_to_second_order_compiled():
    rng = np.random.default_rng(6)
    z = 0.5 * (rng.standard_normal(3) + 1j * rng.standard_normal(3))
    v = rng.standard_normal(3) + 1j * rng.standard_normal(3)
    grad = jitgrad.grad(loss)
    np.testing.assert_allclose(grad(z), wirtinger_gradient(loss, z), rtol=1e-6, atol=1e-7)

    def directional(z):
        return np.real(grad(z) * v).sum()
    np.testing.assert_allclose(jitgrad.grad(directional)(z), wirtinger_gradient(directional, z), rtol=1e-5, atol=1e-5)


DERIVATIVES = {
    np.sin: np.cos, np.arcsin: lambda z: 1 / np.sqrt(1 - z * z), np.arccosh: lambda z: 1 / (np.sqrt(z - 1) * np.sqrt(z + 1)),
    np.arctanh: lambda z: 1 / (1 - z * z), np.arcsinh: lambda z: 1 / np.sqrt(z * z + 1),
    np.log10: lambda z: 1 / (z * np.log(10)), np.exp2: lambda z: np.exp2(z) * np.log(2),
}


@pytest.mark.parametrize("fn", list(DERIVATIVES), ids=[f.__name__ for f in DERIVATIVES])
def test_holomorphic_derivatives_by_vjp_and_jvp(fn):
    z = np.array([0.3 + 0.2j, -0.5 + 1.5j, 2.0 - 0.7j, -1.2 - 0.4j])
    _, pullback = jitgrad.vjp(fn, z)
    np.testing.assert_allclose(pullback(np.ones_like(z))[0], DERIVATIVES[fn](z), rtol=1e-12)
    _, tangent = jitgrad.jvp(fn, (z,), (np.ones_like(z),))
    np.testing.assert_allclose(tangent, DERIVATIVES[fn](z), rtol=1e-12)


def test_sign_has_zero_derivative_as_in_jax():
    z = np.array([0.3 + 0.2j, -0.5 + 1.5j])
    g = jitgrad.grad(lambda z: np.real(np.sign(z) * (1 - 2j)).sum())(z)
    np.testing.assert_array_equal(g, np.zeros_like(z))


def test_reference_interpreter_agrees():
    """The staged program run by the reference interpreter (NumPy on complex values) and
    the compiled one give the same values."""
    from jitgrad.interpreter import evaluate
    from jitgrad.tracing.tracer import trace
    z = samples(np.complex128)[::7]
    def every_function(z):
        return tuple(fn(z) for fn in UNARY.values())
    fn = trace(every_function, (z,)).function
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreted = evaluate(fn, [z])
    compiled = jitgrad.jit(every_function)(z)
    for got, expected, name in zip(compiled, interpreted, UNARY, strict=True):
        compared = np.abs(z) >= 0.5 if name == "log1p" else np.ones(z.shape, bool)       # NumPy's log1p: see above
        assert ulps(got[compared], expected[compared]).max() <= ULP_BOUNDS[name], name


# --------------------------------------------------------------------------- ordering

def ordering_operands(dtype):
    parts = [0.0, -0.0, 1.0, -1.0, 2.0, np.inf, -np.inf, np.nan]
    grid = np.array([complex(a, b) for a in parts for b in parts])
    return tuple(g.ravel().astype(dtype) for g in np.meshgrid(grid, grid))


def same_complex_values(got, expected):
    """Equal values with equal sign bits, NaN parts equal to NaN parts."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    for part in (np.real, np.imag):
        g, e = part(got), part(expected)
        np.testing.assert_array_equal(g, e)
        finite = ~np.isnan(e)
        np.testing.assert_array_equal(np.signbit(g)[finite], np.signbit(e)[finite])


ORDERING_UFUNCS = [np.less, np.less_equal, np.greater, np.greater_equal, np.maximum, np.minimum, np.fmax, np.fmin]


@pytest.mark.parametrize("dtype", COMPLEX)
def test_comparisons_and_extrema_follow_numpys_lexicographic_order(dtype):
    """(re, im) lexicographically, a NaN imaginary part making a real-part comparison
    false; maximum/minimum propagate the operand with a NaN part, fmax/fmin ignore it."""
    a, b = ordering_operands(dtype)
    got = jitgrad.jit(lambda a, b: tuple(f(a, b) for f in ORDERING_UFUNCS))(a, b)
    with np.errstate(all="ignore"):
        for f, g in zip(ORDERING_UFUNCS, got, strict=True):
            expected = f(a, b)
            if expected.dtype == bool:
                np.testing.assert_array_equal(g, expected, err_msg=f.__name__)
            else:
                same_complex_values(g, expected)
    assert jitgrad.jit(lambda a, b: a < b)(a, b).tolist() == (a < b).tolist()          # the operators too


def with_nans_and_ties(dtype):
    rng = np.random.default_rng(8)
    z = rng.standard_normal((4, 6)) + 1j * rng.standard_normal((4, 6))
    z[0, 1], z[0, 3], z[0, 4] = complex(np.nan, 2), complex(1, np.nan), complex(np.nan, np.nan)
    z[1, 2], z[1, 4] = complex(np.inf, 0), complex(np.inf, -1)
    z[2, 0] = z[2, 3]                                                        # a tie
    z[2, 5] = complex(z[2].real.max(), -5)                                   # a tie of real parts
    z[3, 2], z[3, 3] = complex(-0.0, 1.0), complex(0.0, 1.0)                 # signed zeros compare equal
    return z.astype(dtype)


EXTREMA = {
    "max": lambda z: np.max(z), "max-axis0": lambda z: np.max(z, axis=0), "min-axis1": lambda z: np.min(z, axis=1),
    "max-keepdims": lambda z: z[1:].max(axis=1, keepdims=True), "min-clean": lambda z: np.min(z[1:]),
    "argmax": lambda z: np.argmax(z, axis=1), "argmin": lambda z: np.argmin(z), "argmax-clean": lambda z: np.argmax(z[1:], 0),
    "max-initial": lambda z: np.max(z[1:], axis=1, initial=3 + 1j),
    "sort": lambda z: np.sort(z, axis=1), "sort-axis0": lambda z: np.sort(z, axis=0),
    "sort-flat": lambda z: np.sort(z, axis=None), "argsort": lambda z: np.argsort(z, axis=1, kind="stable"),
}


@pytest.mark.parametrize("dtype", COMPLEX)
def test_reductions_and_sorting_in_numpys_order(dtype):
    """max/min keep the first element with a NaN part (maximum.reduce in order); sort puts
    [R + Rj, R + nanj, nan + Rj, nan + nanj] in that order, each group sorted."""
    z = with_nans_and_ties(dtype)
    got = jitgrad.jit(lambda z: tuple(f(z) for f in EXTREMA.values()))(z)
    for name, g in zip(EXTREMA, got, strict=True):
        expected = np.asarray(EXTREMA[name](z))
        if np.iscomplexobj(expected):
            same_complex_values(np.asarray(g), expected)
        else:
            np.testing.assert_array_equal(g, expected, err_msg=name)


STRUCTURAL = {
    "cumsum": lambda z: np.cumsum(z, axis=1), "cumprod": lambda z: np.cumprod(z, axis=0),
    "prod": lambda z: np.prod(z, axis=1), "gather": lambda z: z[np.array([3, 0, 3, 1])],
    "gather-axis1": lambda z: z[:, np.array([5, 0, 5])], "take": lambda z: np.take(z, np.array([2, 2, 0]), axis=1),
    "take_along_axis": lambda z: np.take_along_axis(z, np.argsort(np.abs(z), axis=1), axis=1),
    "vdot": lambda z: np.vdot(z, z[::-1]), "inner": lambda z: np.inner(z, z), "outer": lambda z: np.outer(z[0], z[1]),
    "kron": lambda z: np.kron(z[:2, :2], z[2:, 2:4]), "tensordot": lambda z: np.tensordot(z, z, axes=([1], [1])),
    "einsum": lambda z: np.einsum("ij,kj->ik", z, z), "nansum": lambda z: np.nansum(z, axis=1),
    "nanprod": lambda z: np.nanprod(z, axis=0), "nanmean": lambda z: np.nanmean(z),
    "nancumsum": lambda z: np.nancumsum(z, axis=1), "nancumprod": lambda z: np.nancumprod(z, axis=1),
    "var": lambda z: np.var(z, axis=0), "std": lambda z: z.std(ddof=1), "ptp": lambda z: np.ptp(z, axis=1),
}


@pytest.mark.parametrize("dtype", COMPLEX)
def test_cumulative_indexing_contractions_and_nan_functions_match_numpy(dtype):
    """Finite values with NaNs sprinkled in (the nan-functions skip them); products and
    contractions within a few ulp of NumPy's magnitude (different summation orders)."""
    rng = np.random.default_rng(9)
    z = (rng.standard_normal((4, 6)) + 1j * rng.standard_normal((4, 6))).astype(dtype)
    z_nan = z.copy()
    z_nan[0, 1], z_nan[2, 3] = complex(np.nan, 1), complex(2, np.nan)
    compiled = jitgrad.jit(lambda z, z_nan: tuple(f(z_nan if name.startswith("nan") else z)
                                                  for name, f in STRUCTURAL.items()))
    for name, g in zip(STRUCTURAL, compiled(z, z_nan), strict=True):
        expected = np.asarray(STRUCTURAL[name](z_nan if name.startswith("nan") else z))
        assert np.asarray(g).dtype == expected.dtype, name
        scale = np.maximum(np.abs(expected), 1)
        assert np.all(np.abs(g - expected) <= 16 * np.finfo(z.real.dtype).eps * scale), name


def test_ordering_derivatives_follow_the_selected_elements():
    """grad through max/maximum/sort of complex values goes to the elements they pick."""
    z = np.array([1 + 2j, 3 - 1j, 2.5 - 2j, -1 + 0.5j])

    def loss(z):
        return np.real(np.max(z) * (1 + 1j)) + np.imag(np.sort(z)[0] * (2 - 1j)) + \
            np.real(np.maximum(z, z[::-1]) * np.conj(z)).sum() + np.abs(np.cumprod(z)[-1]) + np.real(z[np.array([0, 0, 2])]).sum()
    np.testing.assert_allclose(jitgrad.grad(loss)(z), wirtinger_gradient(loss, z), rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------- control flow

def fori_reference(z):
    for _ in range(5):
        z = z * (0.9 + 0.1j) + np.sin(z) * 0.1
    return z


def while_reference(state):
    z, count = state
    while np.abs(z).sum() > 0.1:
        z, count = z * 0.5j, count + 1
    return z, count


def scan_reference(z, xs):
    ys = []
    for x in xs:
        ys.append(z.sum())
        z = z * np.exp(1j * x)
    return z, np.array(ys)


CONTROL_FLOW = {
    "cond": (lambda z: jitgrad.cond(np.real(z).sum() > 0, lambda z: z * (1 + 1j), lambda z: np.conj(z) - 2j, z),
             lambda z: z * (1 + 1j) if np.real(z).sum() > 0 else np.conj(z) - 2j),
    "fori_loop": (lambda z: jitgrad.fori_loop(0, 5, lambda i, w: w * (0.9 + 0.1j) + np.sin(w) * 0.1, z), fori_reference),
    "while_loop": (lambda z: jitgrad.while_loop(lambda s: np.abs(s[0]).sum() > 0.1, lambda s: (s[0] * 0.5j, s[1] + 1), (z, 0)),
                   lambda z: while_reference((z, 0))),
    "scan": (lambda z: jitgrad.scan(lambda h, x: (h * np.exp(1j * x), h.sum()), z, np.linspace(0, 1, 4)),
             lambda z: scan_reference(z, np.linspace(0, 1, 4))),
    "checkpoint": (lambda z: jitgrad.checkpoint(lambda z: np.sin(z) * z)(z), lambda z: np.sin(z) * z),
}


@pytest.mark.parametrize("name", list(CONTROL_FLOW))
def test_complex_values_carried_through_regions(name):
    """Complex carries, branch operands, scan outputs and checkpoint values cross region
    boundaries packed as (re, im) pairs and come back as NumPy computes them."""
    compiled, reference = CONTROL_FLOW[name]
    z = np.array([0.3 + 0.4j, -1.2 + 0.1j, 0.5 - 0.7j])
    for sample in (z, -z):
        got, expected = jitgrad.jit(compiled)(sample), reference(sample)
        for g, e in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,),
                        strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-13)
            assert np.asarray(g).dtype == np.asarray(e).dtype


def _real_loss(name):
    compiled, reference = CONTROL_FLOW[name]

    def first(out):
        return out[0] if isinstance(out, tuple) else out

    def loss(z, fn):
        out = fn(z)
        value = np.abs(first(out)) ** 2 + np.imag(first(out) * (0.5 + 1j))
        if isinstance(out, tuple) and np.iscomplexobj(out[1]):
            value = value.sum() + np.real(out[1] * (1 - 1j)).sum()
        return np.sum(value)
    return (lambda z: loss(z, compiled)), (lambda z: loss(z, reference))


@pytest.mark.parametrize("name", list(CONTROL_FLOW))
def test_derivatives_through_regions_with_complex_values(name):
    """JAX-convention gradients through complex carries (first and second order) against
    central differences of the Python reference, and forward mode against reverse."""
    compiled_loss, reference_loss = _real_loss(name)
    z = np.array([0.3 + 0.4j, -1.2 + 0.1j, 0.5 - 0.7j])
    v = np.array([0.2 - 1j, 0.7 + 0.3j, -0.4 + 0.5j])
    grad = jitgrad.grad(compiled_loss)
    np.testing.assert_allclose(grad(z), wirtinger_gradient(reference_loss, z), rtol=1e-6, atol=1e-7)

    def directional(z):
        return np.real(grad(z) * v).sum()
    reference_grad = jitgrad.grad(reference_loss) if name in ("fori_loop", "checkpoint", "scan") else None
    if reference_grad is not None:           # the reference's own gradient, differenced again
        np.testing.assert_allclose(jitgrad.grad(directional)(z),
                                   wirtinger_gradient(lambda z: np.real(reference_grad(z) * v).sum(), z),
                                   rtol=1e-5, atol=1e-6)
    _, tangent = jitgrad.jvp(compiled_loss, (z,), (v,))
    np.testing.assert_allclose(tangent, np.real(grad(z) * v).sum(), rtol=1e-10)      # <grad, v> in JAX's pairing


def test_scan_over_complex_values_under_a_memory_budget():
    """Revolve checkpointing of a scan whose carry is complex gives the stored-residual gradient."""
    xs = np.linspace(0, 2, 40)

    def loss(z):
        h, ys = jitgrad.scan(lambda h, x: (np.tanh(h * np.exp(1j * x)) * 0.9, h.sum()), z, xs)
        return np.sum(np.abs(h) ** 2) + np.real(ys).sum()
    z = np.array([0.3 + 0.4j, -0.2 + 0.1j])
    np.testing.assert_allclose(jitgrad.grad(loss, memory_budget="1KB")(z), jitgrad.grad(loss)(z), rtol=1e-12)
