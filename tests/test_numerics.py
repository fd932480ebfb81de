"""jitgrad's numerics against NumPy and against exact values.

- transcendental functions: exact wherever NumPy is exact (exp2 of integers, log2/log10
  of powers of two/ten, cbrt of cubes, hypot of Pythagorean triples), no cancellation
  near 0, and within `jitgrad.primitives.ULP_BOUNDS` of an mpmath reference on a fixed
  sample (the one `benchmarks/ulp_table.py` measures, smaller) — each both in a long
  array (vectorized loop, libmvec) and one element at a time (scalar libm);
- special values: huge arguments of sin/cos/tan, exp's overflow and underflow edges,
  logarithms of subnormals, zeros and negative numbers, as NumPy;
- reductions: float32 sums at least as accurate as NumPy's pairwise summation (exact
  values from math.fsum), also for mean/var/std, sums fused into elementwise loops,
  sums inside gradients and over leading axes; bit-identical for any thread count.
"""
from __future__ import annotations

import math
import pathlib
import sys

import numpy as np
import pytest

import jitgrad
from jitgrad.primitives import ULP_BOUNDS

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import ulp_table  # noqa: E402

DTYPES = [np.float64, np.float32]
LONG = 96          # elements: the loop vectorizes (with libmvec's 8/16-lane functions)


def compiled_long_and_short(fn, *columns):
    """fn compiled on the whole arrays (tiled to at least LONG elements) and on each
    element alone: the vectorized and the scalar code paths."""
    reps = -(-LONG // len(columns[0]))
    long = np.asarray(jitgrad.jit(fn)(*[np.tile(c, reps) for c in columns]))[:len(columns[0])]
    short_fn = jitgrad.jit(fn)
    short = np.array([short_fn(*[c[i:i + 1] for c in columns])[0] for i in range(len(columns[0]))],
                     dtype=long.dtype)
    return long, short


# --------------------------------------------------------------------------- the reported cases

def test_exp2_of_integers_is_exact_as_numpy():
    out = jitgrad.jit(np.exp2)(np.array([3.0, 6.0, 9.0]))
    np.testing.assert_array_equal(out, [8.0, 64.0, 512.0])


def test_log10_of_a_power_of_ten_is_exact_as_numpy():
    assert jitgrad.jit(lambda v: np.log10(v))(np.array([1000.0]))[0] == 3.0


@pytest.mark.parametrize("fn", [np.sinh, np.tanh, np.expm1, np.log1p])
def test_no_cancellation_near_zero(fn):
    x = np.array([1e-15, -3e-12, 2e-300, 1e-8])
    exact = np.array([float(ulp_table.FUNCTIONS_BY_NAME[fn.__name__].exact(ulp_table.mpmath.mpf(v))) for v in x])
    for out in compiled_long_and_short(fn, x):
        np.testing.assert_allclose(out, exact, rtol=2.3e-16, atol=0)


def test_float32_sum_of_a_million_tenths_is_as_accurate_as_numpy():
    x = np.full(10 ** 6, np.float32(0.1))
    exact = math.fsum(x.astype(np.float64))
    got = float(jitgrad.jit(np.sum)(x))
    assert abs(got - exact) <= abs(float(np.sum(x)) - exact)
    assert got == np.float32(exact)          # accumulated in float64, rounded once


# --------------------------------------------------------------------------- exact where NumPy is

def _exact_cases(dtype):
    f64 = dtype == np.float64
    lo, hi = (-1074, 1024) if f64 else (-149, 128)
    step = 7 if f64 else 3
    ints = np.arange(lo, hi, step).astype(dtype)
    powers_of_ten = np.array([10.0 ** k for k in range(0, 23 if f64 else 11)], dtype)
    cubes = (np.arange(-200, 201, 3).astype(np.float64) ** 3).astype(dtype)
    m, n = np.meshgrid(np.arange(2, 40), np.arange(1, 40))
    keep = m > n
    legs = [(m ** 2 - n ** 2)[keep].astype(dtype), (2 * m * n)[keep].astype(dtype)]
    return [
        ("exp2", np.exp2, [ints], np.ldexp(np.ones_like(ints), ints.astype(int))),
        ("log2", np.log2, [np.ldexp(np.ones_like(ints), ints.astype(int))], ints),
        ("log10", np.log10, [powers_of_ten], np.arange(len(powers_of_ten)).astype(dtype)),
        ("cbrt", np.cbrt, [cubes], np.arange(-200, 201, 3).astype(dtype)),
        ("hypot", np.hypot, legs, (np.hypot(legs[0].astype(np.float64), legs[1].astype(np.float64))).astype(dtype)),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", range(5), ids=["exp2", "log2", "log10", "cbrt", "hypot"])
def test_exact_where_numpy_is_exact(case, dtype):
    """At every point where NumPy's result is exact, so is jitgrad's (float64: NumPy is
    exact at all of them; float32: NumPy misses some of log10, cbrt and exp2)."""
    name, fn, columns, exact = _exact_cases(dtype)[case]
    numpy_exact = fn(*columns) == exact
    if dtype == np.float64:
        assert numpy_exact.all()
    long, short = compiled_long_and_short(fn, *columns)
    np.testing.assert_array_equal(long[numpy_exact], exact[numpy_exact], err_msg=f"{name} vectorized")
    np.testing.assert_array_equal(short[numpy_exact], exact[numpy_exact], err_msg=f"{name} scalar")
    assert long.dtype == short.dtype == np.dtype(dtype)


# --------------------------------------------------------------------------- ulp bounds

@pytest.mark.parametrize("dtype", [*DTYPES, np.float16], ids=["f64", "f32", "f16"])
@pytest.mark.parametrize("name", [f.name for f in ulp_table.FUNCTIONS])
def test_max_ulp_error_within_bound(name, dtype):
    """Every transcendental on a fixed sample spanning its whole range: the vectorized
    and the scalar code both within the documented bound of the exact value."""
    fn = ulp_table.FUNCTIONS_BY_NAME[name]
    columns = ulp_table.sample(fn, dtype, points=96, seed=1)
    if len(columns[0]) > 160:             # long special lists (exp2, log2, log10): a fixed subset
        columns = [c[np.linspace(0, len(c) - 1, 160).astype(int)] for c in columns]
    exact = ulp_table.exact_values(fn, columns)
    bound = ULP_BOUNDS[name][np.dtype(dtype).name.replace("float", "f")]
    long, short = compiled_long_and_short(fn.numpy, *columns)
    for label, results in (("vectorized", long), ("scalar", short)):
        error, at = ulp_table.max_error(results, exact, dtype)
        assert error <= bound, (f"{name} {label}: {error:.3g} ulp at "
                                f"{[float(c[at]) for c in columns]} (bound {bound})")


def test_ulp_error_measure():
    """The measuring stick itself: 1 ulp off is 1, a wrong infinity or NaN is inf."""
    one = ulp_table.mpmath.mpf(1)
    assert ulp_table.ulp_error(1.0, one, np.float64) == 0
    assert ulp_table.ulp_error(float(np.nextafter(1.0, 2.0)), one, np.float64) == 1
    assert ulp_table.ulp_error(float(np.nextafter(np.float32(1), np.float32(2))), one, np.float32) == 1
    assert ulp_table.ulp_error(math.inf, ulp_table.mpmath.mpf("1e400"), np.float64) == 0
    assert ulp_table.ulp_error(math.inf, one, np.float64) == math.inf
    assert ulp_table.ulp_error(math.nan, None, np.float64) == 0
    assert ulp_table.ulp_error(1.0, None, np.float64) == math.inf
    assert ulp_table.ulp_error(5e-324, ulp_table.mpmath.mpf(0), np.float64) == 1


# --------------------------------------------------------------------------- special values

SPECIAL = {
    np.sin: [1e22, -1e22, 1e300, 2.0 ** 60, 0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324],
    np.cos: [1e22, -1e22, 1e300, 2.0 ** 60, 0.0, np.inf, np.nan],
    np.tan: [1e22, -1e22, 1e300, 2.0 ** 60, 1.5707963267948966, 0.0, -0.0, np.inf],
    np.exp: [709.782712893384, 709.7827128933841, 710.0, -745.1332191019411, -745.1332191019412,
             -746.0, -708.4, np.inf, -np.inf, np.nan],
    np.log: [5e-324, 1e-310, 2.2250738585072014e-308, 0.0, -0.0, -1.0, -np.inf, np.inf, np.nan],
    np.log2: [5e-324, 1e-310, 0.0, -1.0, np.inf],
    np.log10: [5e-324, 1e-310, 0.0, -1.0, np.inf],
    np.log1p: [-1.0, -2.0, -1e-310, 1e308, np.inf],
    np.expm1: [709.78, 710.0, -800.0, -np.inf, np.inf],
    np.sinh: [710.4758600739439, 711.0, -711.0, -0.0, np.inf],
    np.cosh: [710.4758600739439, 711.0, -711.0, np.inf],
    np.cbrt: [5e-324, -5e-324, np.inf, -np.inf, -0.0],
    np.arcsin: [1.0, -1.0, 1.5, -2.0, np.nan, -0.0],
    np.arccos: [1.0, -1.0, 1.5, np.inf],
    np.arctan: [np.inf, -np.inf, 1e300, -0.0],
    np.arcsinh: [1e300, -1e300, np.inf, -0.0],
    np.arccosh: [1.0, 0.5, np.inf, 1e300],
    np.arctanh: [1.0, -1.0, 1.5, -0.0],
}
SPECIAL_F32 = {
    np.exp: [88.72283, 88.72284, 89.0, -103.97208, -104.0, -87.33655],
    np.log: [1e-45, 1e-40, 1.1754944e-38, 0.0, -1.0],
    np.sin: [1e22, 1e30, -3e38, 1e5],
    np.cos: [1e22, 1e30, -3e38, 1e5],
}


def _check_special(fn, x):
    dtype = x.dtype
    with np.errstate(all="ignore"):
        expected = fn(x)
    bound = ULP_BOUNDS[{"power": "pow"}.get(fn.__name__, fn.__name__)]["f64" if dtype == np.float64 else "f32"]
    for label, got in zip(("vectorized", "scalar"), compiled_long_and_short(fn, x), strict=True):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{label}: NaN positions")
        np.testing.assert_array_equal(np.isinf(got) * np.sign(got), np.isinf(expected) * np.sign(expected),
                                      err_msg=f"{label}: infinities")
        finite = np.isfinite(expected)
        spacing = np.spacing(np.abs(expected[finite]).astype(dtype))
        np.testing.assert_array_less(np.abs(got[finite] - expected[finite]), (bound + 1) * spacing + 1e-300,
                                     err_msg=f"{label} {fn.__name__}({x[finite]})")


@pytest.mark.parametrize("fn", list(SPECIAL), ids=lambda f: f.__name__)
def test_special_values_match_numpy_f64(fn):
    _check_special(fn, np.array(SPECIAL[fn], dtype=np.float64))


@pytest.mark.parametrize("fn", list(SPECIAL_F32), ids=lambda f: f.__name__)
def test_special_values_match_numpy_f32(fn):
    _check_special(fn, np.array(SPECIAL_F32[fn], dtype=np.float32))


IDENTITY_POINTS = {
    np.exp: [0.0, -0.0], np.exp2: [0.0, -0.0], np.expm1: [0.0, -0.0], np.log: [1.0], np.log2: [1.0],
    np.log10: [1.0], np.log1p: [0.0, -0.0], np.sin: [0.0, -0.0], np.cos: [0.0], np.tan: [0.0, -0.0],
    np.sinh: [0.0, -0.0], np.cosh: [0.0], np.tanh: [0.0, -0.0, 25.0, -25.0], np.cbrt: [0.0, -0.0, 1.0, -1.0],
    np.sqrt: [0.0, -0.0, 4.0], np.arctan: [0.0, -0.0], np.arcsin: [0.0, -0.0], np.arccos: [1.0],
    np.arccosh: [1.0], np.arctanh: [0.0, -0.0],
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_identity_points_bit_exact(dtype):
    """exp(0) = 1, log(1) = 0, sin(-0) = -0, tanh(25) = 1, ...: bit for bit NumPy's."""
    for fn, points in IDENTITY_POINTS.items():
        x = np.array(points, dtype)
        for got in compiled_long_and_short(fn, x):
            assert got.tobytes() == fn(x).tobytes(), (fn.__name__, x, got, fn(x))
    pairs = [(2.0, 10.0), (3.0, 2.0), (1.0, 0.5), (7.0, 0.0), (0.5, -3.0), (10.0, 3.0)]
    a, b = (np.array(c, dtype) for c in zip(*pairs))
    for got in compiled_long_and_short(np.power, a, b):
        assert got.tobytes() == np.power(a, b).tobytes()


# --------------------------------------------------------------------------- reductions

SIZES = [0, 1, 2, 7, 31, 1000, 1023, 1024, 1025, 4097, 8193, 65537, 300001]


def _fsum_error(value, exact: float) -> float:
    return abs(float(value) - exact)


def _f32_ulp(x: float) -> float:
    return float(np.spacing(np.float32(abs(x)))) if x else float(np.spacing(np.float32(0)))


@pytest.mark.parametrize("n", SIZES)
def test_float32_sum_at_least_as_accurate_as_numpy(n):
    rng = np.random.default_rng(n)
    for x in (rng.standard_normal(n).astype(np.float32), rng.uniform(0, 1, n).astype(np.float32)):
        exact = math.fsum(x.astype(np.float64))
        got = jitgrad.jit(np.sum)(x)
        assert got.dtype == np.float32
        assert _fsum_error(got, exact) <= _fsum_error(np.sum(x), exact) + 0.5 * _f32_ulp(exact)


@pytest.mark.parametrize("n", [0, 1, 100, 1025, 10001, 70001])
def test_float16_sum_at_least_as_accurate_as_numpy(n):
    x = np.random.default_rng(n).uniform(0, 1, n).astype(np.float16)
    exact = math.fsum(x.astype(np.float64))
    for fn in (np.sum, lambda v: np.sum(v + 0.0)):
        got = jitgrad.jit(fn)(x)
        assert got.dtype == np.float16
        assert abs(float(got) - exact) <= abs(float(fn(x)) - exact) + 0.5 * float(np.spacing(np.float16(exact)))


@pytest.mark.parametrize("n", [1000, 65537, 300001])
def test_float64_sum_about_as_accurate_as_numpy(n):
    """float64: chunks of vector partial sums combined pairwise, error ~ log n like NumPy's."""
    x = np.random.default_rng(n).uniform(0, 1, n)
    exact = math.fsum(x)
    got = jitgrad.jit(np.sum)(x)
    assert _fsum_error(got, exact) <= _fsum_error(np.sum(x), exact) + 4 * np.spacing(exact)


FLOAT32_REDUCTIONS = {
    "mean": (lambda v: np.mean(v), lambda v: math.fsum(v) / len(v)),
    "var": (lambda v: np.var(v), None),
    "std": (lambda v: np.std(v), None),
    "fused-sum-of-squares": (lambda v: np.sum(v * v + 1.0), lambda v: math.fsum(v * v + 1.0)),
    "rows": (lambda v: np.sum(v.reshape(500, -1), axis=1), None),
    "columns": (lambda v: np.sum(v.reshape(500, -1), axis=0), None),
    "row-means": (lambda v: np.mean(v.reshape(-1, 500).T, axis=0), None),
    "many-columns": (lambda v: np.sum(v.reshape(20, -1), axis=0), None),     # a float64 buffer off the stack
}


def _exact_reduction(name, v64):
    if name == "var":
        m = math.fsum(v64) / len(v64)
        return math.fsum((v64 - m) ** 2) / len(v64)
    if name == "std":
        return math.sqrt(_exact_reduction("var", v64))
    if name == "rows":
        return np.array([math.fsum(r) for r in v64.reshape(500, -1)])
    if name == "columns":
        return np.array([math.fsum(c) for c in v64.reshape(500, -1).T])
    if name == "many-columns":
        return np.array([math.fsum(c) for c in v64.reshape(20, -1).T])
    if name == "row-means":
        return np.array([math.fsum(r) / 500 for r in v64.reshape(-1, 500)])
    return FLOAT32_REDUCTIONS[name][1](v64)


@pytest.mark.parametrize("name", list(FLOAT32_REDUCTIONS))
def test_float32_reductions_at_least_as_accurate_as_numpy(name):
    fn = FLOAT32_REDUCTIONS[name][0]
    x = (np.random.default_rng(7).standard_normal(500 * 401) + 3).astype(np.float32)
    exact = np.asarray(_exact_reduction(name, x.astype(np.float64)))
    got, ref = np.asarray(jitgrad.jit(fn)(x)), np.asarray(fn(x))
    assert got.dtype == ref.dtype == np.float32
    slack = 0.5 * np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    if name in ("var", "std"):
        slack *= 4        # the centred values and the square root round too
    elif "mean" in name:
        slack *= 2        # the sum and the quotient each round once
    assert np.all(np.abs(got - exact) <= np.abs(ref - exact) + slack), name


def test_float32_sum_in_a_gradient_is_accurate():
    """d/db sum((x + b)^2) = 2 sum(x + b): a reduction the backward pass creates."""
    x = np.random.default_rng(3).uniform(0, 1, 200001).astype(np.float32)
    b = np.float32(0.25)
    grad = jitgrad.grad(lambda b, x: np.sum((x + b) ** 2), argnums=0)(b, x)
    exact = 2 * math.fsum((x + b).astype(np.float64))
    reference = 2 * np.sum(x + b)
    assert abs(float(grad) - exact) <= abs(float(reference) - exact) + _f32_ulp(exact)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_reductions_bit_identical_for_any_thread_count(dtype):
    x = np.random.default_rng(11).standard_normal(3 * 10 ** 5 + 17).astype(dtype)

    def f(v):
        return np.sum(np.sin(v) * v), np.sum(v), np.var(v[:-17].reshape(600, -1), axis=0), np.max(v)

    saved = jitgrad.config.config.num_threads
    results = []
    try:
        for threads in (1, 2, 3):
            jitgrad.config.config.num_threads = threads
            results.append([np.asarray(r) for r in jitgrad.jit(f)(x)])
    finally:
        jitgrad.config.config.num_threads = saved
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert a.tobytes() == b.tobytes()
    assert results[0][3] == np.max(x)


def test_max_and_min_of_float32_are_exact():
    x = np.random.default_rng(5).standard_normal(100003).astype(np.float32)
    x[77] = np.float32(9.5)
    assert jitgrad.jit(np.max)(x) == np.float32(9.5)
    assert jitgrad.jit(np.min)(x) == x.min()
    assert jitgrad.jit(np.max)(x).dtype == np.float32
