"""NumPy functions of complex arrays built from complex-ready primitives (median,
nanmax/nanmin, nanvar/nanstd, float_power, diff, convolve/correlate, trace, clip,
cumulative_sum/cumulative_prod, average, isclose/allclose): compiled values against
NumPy for complex64 and complex128, special values (NaN and infinite parts, signed
zeros, ties in NumPy's lexicographic order) included, and gradients in JAX's convention
against central differences along the real and imaginary parts."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import DTypeError
from test_complex_more import ordering_operands, same_complex_values, ulps, wirtinger_gradient, with_nans_and_ties

COMPLEX = [np.complex64, np.complex128]


def random_complex(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


FUNCTIONS = {
    # name: (function of a (4, 6) array z and a (6,) array v, ulp bound; 0 means bit for bit)
    "median-axis1": (lambda z, v: np.median(z, axis=1), 0),
    "median-axis0": (lambda z, v: np.median(z, axis=0, keepdims=True), 0),
    "median-all": (lambda z, v: np.median(z), 0),
    "median-odd": (lambda z, v: np.median(z[:, :5], axis=(1,)), 0),
    "nanmax-axis1": (lambda z, v: np.nanmax(z, axis=1), 0),
    "nanmin-axis0": (lambda z, v: np.nanmin(z, axis=0), 0),
    "nanmax-all": (lambda z, v: np.nanmax(z, keepdims=True), 0),
    "nanvar-axis1": (lambda z, v: np.nanvar(z, axis=1), 8),
    "nanvar-ddof": (lambda z, v: np.nanvar(z, axis=0, ddof=1, keepdims=True), 8),
    "nanstd-all": (lambda z, v: np.nanstd(z), 8),
    "diff": (lambda z, v: np.diff(z, axis=1), 0),
    "diff-2-prepend": (lambda z, v: np.diff(z, 2, axis=0, prepend=v[None, :]), 0),
    "trace": (lambda z, v: np.trace(z), 8),
    "trace-offset": (lambda z, v: np.trace(z, offset=2), 8),
    "clip": (lambda z, v: np.clip(z, -0.5 + 0.5j, 0.5 - 1j), 0),
    "clip-arrays": (lambda z, v: np.clip(z, v, v + 0.5), 0),
    "clip-upper": (lambda z, v: np.clip(z, None, v), 0),
    "cumulative_sum": (lambda z, v: np.cumulative_sum(z, axis=1, include_initial=True), 0),
    "cumulative_prod": (lambda z, v: np.cumulative_prod(v), 8),
    "convolve": (lambda z, v: np.convolve(z[0], v[:3]), 8),
    "convolve-same": (lambda z, v: np.convolve(v[:2], z[1], mode="same"), 8),
    "correlate": (lambda z, v: np.correlate(z[0], v[:3]), 8),
    "correlate-full-swapped": (lambda z, v: np.correlate(v[:3], z[1], "full"), 8),
    "correlate-real-first": (lambda z, v: np.correlate(np.real(z[0]), v[:4], "same"), 8),
    "average": (lambda z, v: np.average(z, axis=1), 8),
    "average-real-weights": (lambda z, v: np.average(z, axis=1, weights=np.abs(v)), 8),
    "average-complex-weights": (lambda z, v: np.average(z, axis=1, weights=v, returned=True), 8),
    "float_power": (lambda z, v: np.float_power(z, 2.5), 16),
    "float_power-complex": (lambda z, v: np.float_power(v, 0.5 - 1j), 16),
}


def compare(got, expected, bound, name):
    got, expected = (np.asarray(got), np.asarray(expected))
    assert got.dtype == expected.dtype and got.shape == expected.shape, (name, got.dtype, expected.dtype)
    if expected.dtype == bool:
        np.testing.assert_array_equal(got, expected, err_msg=name)
    elif bound == 0:
        same_complex_values(got.astype(np.complex128), expected.astype(np.complex128))
    else:
        assert ulps(got.astype(np.complex128), expected.astype(np.complex128)).max() <= bound * (
            np.finfo(expected.real.dtype).eps / np.finfo(np.float64).eps), name


def run_both(fn, *args):
    compiled = jitgrad.jit(fn)(*args)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        expected = fn(*args)
    return compiled, expected


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_values_match_numpy(name, dtype):
    fn, bound = FUNCTIONS[name]
    rng = np.random.default_rng(11)
    z, v = random_complex(rng, (4, 6), dtype), random_complex(rng, (6,), dtype)
    got, expected = run_both(fn, z, v)
    for g, e in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,),
                    strict=True):
        compare(g, e, bound, name)


ORDERING = ["median-axis1", "median-axis0", "median-all", "median-odd", "nanmax-axis1", "nanmin-axis0",
            "nanmax-all", "clip", "clip-arrays", "clip-upper", "diff", "cumulative_sum", "nanvar-axis1",
            "nanstd-all"]


@pytest.mark.parametrize("dtype", COMPLEX)
def test_special_values_and_ties_match_numpy(dtype):
    """NaN parts (each kind), infinite parts, signed zeros and ties: NumPy's order picks
    the same elements, NaN rows give NumPy's NaN, sign bits included."""
    z = with_nans_and_ties(dtype)
    v = np.array([complex(np.nan, 0), complex(0, np.nan), -0.0 + 0j, complex(np.inf, 1), 1 - 0j, 2j], dtype)
    for name in ORDERING:
        fn, bound = FUNCTIONS[name]
        got, expected = run_both(fn, z, v)
        compare(got, expected, bound, name)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_clip_follows_numpys_clip_loop_on_every_triple_of_special_values(dtype):
    """Both bounds: NumPy's clip ufunc (a bound with a NaN part is taken unless the plain
    comparison rejects it, ties take the bound); one bound: np.maximum/np.minimum."""
    parts = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan]
    grid = np.array([complex(a, b) for a in parts for b in parts], dtype)
    x, low, high = (g.ravel() for g in np.meshgrid(grid, grid, grid, indexing="ij"))
    for fn in (lambda x, low, high: np.clip(x, low, high), lambda x, low, high: np.clip(x, low, None),
               lambda x, low, high: np.clip(x, max=high), lambda x, low, high: np.clip(x[:49], -0.0 + 1j, 1.0)):
        got, expected = run_both(fn, x, low, high)
        same_complex_values(got, expected)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_nan_extrema_of_all_nan_slices_are_the_first_element(dtype):
    """NumPy's fmax reduction keeps its first operand when both hold a NaN."""
    z = np.array([[complex(np.nan, 2), complex(1, 3)], [complex(1, np.nan), complex(np.nan, np.nan)],
                  [complex(np.nan, np.nan), complex(-1, 0)]], dtype)
    for fn in (lambda z: np.nanmax(z, axis=0), lambda z: np.nanmin(z, axis=1), lambda z: np.nanmax(z[1:2])):
        got, expected = run_both(fn, z)
        same_complex_values(got, expected)


def test_nan_extrema_of_zero_dimensional_values_are_refused():
    """NumPy gives nan+0j for an all-NaN NumPy scalar and the value itself for a 0-d array."""
    with pytest.raises(DTypeError, match="nanmax of a zero-dimensional complex value"):
        jitgrad.jit(lambda z: np.nanmax(np.sum(z)))(np.ones(3, np.complex128))


@pytest.mark.parametrize("dtype", COMPLEX)
def test_isclose_and_allclose_follow_numpys_nan_and_infinity_rules(dtype):
    a, b = ordering_operands(dtype)
    for fn in (lambda a, b: np.isclose(a, b), lambda a, b: np.isclose(a, b, equal_nan=True),
               lambda a, b: np.isclose(a, b + 1e-6, rtol=1e-3, atol=0.0), lambda a, b: np.isclose(a, 1 + 0j),
               lambda a, b: np.allclose(a, a), lambda a, b: np.allclose(a, a, equal_nan=True),
               lambda a, b: np.allclose(a[:5], a[:5] * (1 + 1e-9j))):
        got, expected = run_both(fn, a, b)
        compare(got, expected, 0, "isclose")


def test_quantiles_refuse_complex_numbers_as_numpy_does():
    z = np.ones(3, np.complex128)
    for refused in (np.percentile, np.quantile, np.nanquantile, np.nanpercentile):
        with pytest.raises(TypeError):
            refused(z, 0.5)
        with pytest.raises(DTypeError, match=f"numpy.{refused.__name__} of complex numbers: a must be an array of real"):
            jitgrad.jit(lambda z: refused(z, 0.5))(z)


def test_nanvar_with_a_real_dtype_is_refused():
    with pytest.raises(DTypeError, match="nanvar of complex numbers with dtype=float64"):
        jitgrad.jit(lambda z: np.nanvar(z, dtype=np.float64))(np.ones(3, np.complex128))


DATA_MOVEMENT = {
    "diag": lambda m: np.diag(m, 1), "diag-vector": lambda m: np.diag(m[0]), "diagflat": lambda m: np.diagflat(m[1]),
    "diagonal": lambda m: np.diagonal(m, -1), "fliplr": np.fliplr, "flipud": np.flipud,
    "roll": lambda m: np.roll(m, 2, axis=1), "rot90": np.rot90, "tril": np.tril, "triu": lambda m: np.triu(m, 1),
    "matrix_transpose": np.matrix_transpose, "block": lambda m: np.block([[m, m], [m, m]]),
    "unstack": lambda m: np.unstack(m)[1], "full_like": lambda m: np.full_like(m, 2 - 1j),
    "linalg.trace": lambda m: np.linalg.trace(m[:, :3]), "any": lambda m: np.any(m, axis=0),
    "all": lambda m: np.all(m, axis=1), "count_nonzero": lambda m: np.count_nonzero(m, axis=0),
    "array_equal": lambda m: np.array_equal(m, m, equal_nan=True),
    "nan_to_num": lambda m: np.nan_to_num(m), "nan_to_num-values": lambda m: np.nan_to_num(m, nan=1.5, posinf=7.0),
}


@pytest.mark.parametrize("dtype", COMPLEX)
def test_data_movement_and_truth_tests_match_numpy(dtype):
    """Functions that move, select or test elements (nonzero: either part; nan_to_num
    replaces each part on its own, as NumPy), sign bits and NaN parts included."""
    rng = np.random.default_rng(14)
    m = random_complex(rng, (3, 4), dtype)
    m[0, 0], m[1, 1], m[2, 3], m[2, 2] = complex(np.nan, -0.0), complex(-0.0, np.inf), 0j, complex(0, -0.0)
    m[0, 2] = complex(-np.inf, np.nan)
    for name, fn in DATA_MOVEMENT.items():
        got, expected = run_both(fn, m)
        compare(got, expected, 0, name)


# --------------------------------------------------------------------------- derivatives

GRADIENT_CASES = [name for name in FUNCTIONS if not name.startswith("median-all") and "upper" not in name]


def real_loss(fn, weights_seed=3):
    """A real number from the function's complex or real results: Re Σ w · result."""
    def loss(z, v):
        result = fn(z, v)
        result = result[0] if isinstance(result, tuple) else result
        weights = np.random.default_rng(weights_seed).standard_normal((2,) + np.shape(result))
        return np.sum(np.real(result) * weights[0]) + np.sum(np.imag(result) * weights[1])
    return loss


@pytest.mark.parametrize("name", GRADIENT_CASES)
def test_gradients_follow_jax_against_central_differences(name):
    """grad in JAX's convention, df/dx - i df/dy, for z and v (away from ties)."""
    fn, _ = FUNCTIONS[name]
    rng = np.random.default_rng(12)
    z, v = random_complex(rng, (4, 6)), random_complex(rng, (6,))
    z[1, 2] = complex(np.nan, 0.5) if name.startswith("nan") else z[1, 2]
    loss = real_loss(fn)
    gz, gv = jitgrad.grad(loss, argnums=(0, 1))(z, v)
    expected_z = wirtinger_gradient(lambda z: loss(z, v), z)
    expected_v = wirtinger_gradient(lambda v: loss(z, v), v)
    expected_z[np.isnan(expected_z)] = 0
    np.testing.assert_allclose(gz, expected_z, rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(gv, expected_v, rtol=1e-6, atol=1e-7, err_msg=name)


SECOND_ORDER = ["nanvar-axis1", "nanstd-all", "diff-2-prepend", "convolve", "correlate-full-swapped",
                "average-complex-weights", "float_power", "float_power-complex", "cumulative_prod", "median-axis1"]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_order(name):
    """The gradient's directional derivative, itself by central differences."""
    fn, _ = FUNCTIONS[name]
    rng = np.random.default_rng(13)
    z, v = random_complex(rng, (4, 6)), random_complex(rng, (6,))
    direction = random_complex(rng, (4, 6))
    loss = real_loss(fn)
    grad = jitgrad.grad(loss, argnums=(0, 1))

    def directional(z):
        return np.real(grad(z, v)[0] * direction).sum()
    np.testing.assert_allclose(jitgrad.grad(directional)(z), wirtinger_gradient(directional, z, h=1e-5),
                               rtol=1e-5, atol=1e-5, err_msg=name)


def test_holomorphic_derivatives_by_jvp_and_vjp():
    """float_power and convolve are holomorphic: jvp and vjp with 1 give f'(z)."""
    z = np.array([0.3 + 0.2j, -0.5 + 1.5j, 2.0 - 0.7j])
    _, tangent = jitgrad.jvp(lambda z: np.float_power(z, 2.5), (z,), (np.ones_like(z),))
    np.testing.assert_allclose(tangent, 2.5 * z ** 1.5, rtol=1e-12)
    _, pullback = jitgrad.vjp(lambda z: np.float_power(z, 2.5), z)
    np.testing.assert_allclose(pullback(np.ones_like(z))[0], 2.5 * z ** 1.5, rtol=1e-12)
    kernel = np.array([1 - 1j, 0.5j])
    _, tangent = jitgrad.jvp(lambda z: np.convolve(z, kernel), (z,), (np.ones_like(z),))
    np.testing.assert_allclose(tangent, np.convolve(np.ones_like(z), kernel), rtol=1e-12)


@pytest.mark.parametrize("name", ["diag", "diagflat", "roll", "rot90", "tril", "block", "linalg.trace", "nan_to_num"])
def test_data_movement_gradients(name):
    fn = DATA_MOVEMENT[name]
    rng = np.random.default_rng(15)
    m = random_complex(rng, (3, 4))
    loss = real_loss(lambda m, unused: fn(m))
    np.testing.assert_allclose(jitgrad.grad(lambda m: loss(m, None))(m), wirtinger_gradient(lambda m: loss(m, None), m),
                               rtol=1e-6, atol=1e-7, err_msg=name)
