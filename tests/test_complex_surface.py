"""The rest of NumPy's non-ordering functions on complex arrays: selection by truth value
(nonzero = either part nonzero), differences and integrals (ediff1d, gradient,
trapezoid), statistics (cov/corrcoef, which conjugate), sinc, vander, the polynomial
functions, linspace/logspace with complex endpoints, meshgrid/broadcast_arrays/
array_equiv/empty_like, the vecdot/matvec/vecmat ufuncs (vecdot and vecmat conjugate
their first operand) and the logical ufuncs.

Compiled values against NumPy for complex64 and complex128 (NaN and infinite parts,
signed zeros, empty and 0-d arrays included), dtypes exactly; derivatives in JAX's
convention against central differences, forward and reverse, second order for a few."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import DTypeError, UnsupportedOperationError
from jitgrad.interpreter import evaluate
from jitgrad.tracing import sized
from jitgrad.tracing.tracer import trace
from test_complex_more import same_complex_values, wirtinger_gradient

COMPLEX = [np.complex64, np.complex128]
CONDITION = np.array([1j, 0, -0.0 + 0j, complex(np.nan, 0), 2, complex(0, -0.0)])
"""A complex mask: NumPy keeps the positions whose value has a nonzero (or NaN) part."""


def random_complex(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _abs_polyval(z, v):
    """Horner's error scale: the polynomial of |coefficients| at |points| (a NaN part
    that the function drops, as np.real does, counts as 0)."""
    return np.polyval(np.abs(np.nan_to_num(v[:4])), np.abs(np.nan_to_num(z)))


# name: (function of a (4, 6) array z and a (6,) array v, error bound). A bound of 0 means
# bit for bit; (k, None) k ulp of each element's magnitude; (k, "norm") k ulp of the
# largest magnitude in the result (sums and products, whose elements may cancel);
# (k, fn) k ulp of fn(z, v) per element.
FUNCTIONS = {
    "extract": (lambda z, v: np.extract(CONDITION, v), 0),
    "compress": (lambda z, v: np.compress(CONDITION, z, axis=1), 0),
    "compress-flat": (lambda z, v: np.compress([True, False, True], z), 0),
    "ediff1d": (lambda z, v: np.ediff1d(z), 0),
    "gradient": (lambda z, v: np.gradient(z), 0),
    "gradient-spacing": (lambda z, v: np.gradient(z, 0.5, axis=1), 0),
    "gradient-spacings": (lambda z, v: np.gradient(z, 2.0, 0.25), 0),
    "gradient-axes": (lambda z, v: np.gradient(z, axis=(1, 0)), 0),
    "gradient-edge2": (lambda z, v: np.gradient(z, 0.75, edge_order=2), 0),
    "trapezoid": (lambda z, v: np.trapezoid(z, dx=0.5), (8, "norm")),
    "trapezoid-real-x": (lambda z, v: np.trapezoid(z, x=np.real(v)), (8, "norm")),
    "trapezoid-complex-x": (lambda z, v: np.trapezoid(z, x=v[:4], axis=0), (8, "norm")),
    "cov": (lambda z, v: np.cov(z), (8, "norm")),
    "cov-columns-bias": (lambda z, v: np.cov(z, rowvar=False, bias=True), (8, "norm")),
    "cov-y-ddof": (lambda z, v: np.cov(z[0], v, ddof=2), (8, "norm")),
    "cov-weights": (lambda z, v: np.cov(z, fweights=[1, 2, 1, 3, 1, 1], aweights=[0.5, 1, 2, 1, 1, 0.25]),
                    (8, "norm")),
    "cov-real-as-complex": (lambda z, v: np.cov(np.real(z), dtype=np.complex128), (8, "norm")),
    "corrcoef": (lambda z, v: np.corrcoef(z), (16, "norm")),
    "corrcoef-y-columns": (lambda z, v: np.corrcoef(z[:, :2], z[:, 2:4], rowvar=False), (16, "norm")),
    "corrcoef-one-row": (lambda z, v: np.corrcoef(v), (8, None)),
    "sinc": (lambda z, v: np.sinc(z), (10, None)),
    "vander": (lambda z, v: np.vander(v, 4), (8, None)),
    "vander-increasing": (lambda z, v: np.vander(v, increasing=True), (16, None)),
    "polyval": (lambda z, v: np.polyval(v[:4], z), (16, _abs_polyval)),
    "polyval-real-points": (lambda z, v: np.polyval(v[:4], np.real(z)), (16, _abs_polyval)),
    "polyval-real-coefficients": (lambda z, v: np.polyval([1.5, -2.0, 0.5, 0.25], z), (16, None)),
    "polyadd": (lambda z, v: np.polyadd(v[:3], z[0]), 0),
    "polysub": (lambda z, v: np.polysub(z[1], np.real(v[:2])), 0),
    "polymul": (lambda z, v: np.polymul(v[:3], z[0]), (8, "norm")),
    "polyder": (lambda z, v: np.polyder(z[0], 2), 0),
    "polyint": (lambda z, v: np.polyint(z[0], 2, k=[1j, 2]), 0),
    "polyint-default": (lambda z, v: np.polyint(v), 0),
    "linspace": (lambda z, v: np.linspace(v[0], v[1], 7), 0),
    "linspace-retstep": (lambda z, v: np.linspace(v[0], v[1], 5, endpoint=False, retstep=True), 0),
    "linspace-zero-step": (lambda z, v: np.linspace(v[2], v[2], 4), 0),
    "linspace-real-start": (lambda z, v: np.linspace(np.real(v[0]), v[1], 4), 0),
    "linspace-complex-dtype": (lambda z, v: np.linspace(np.real(v[0]), np.imag(v[1]), 4, dtype=np.complex128), 0),
    "logspace": (lambda z, v: np.logspace(v[0] / 4, v[1] / 4, 5), (16, None)),
    "logspace-base": (lambda z, v: np.logspace(v[0], v[1], 5, base=2.0, endpoint=False), (16, None)),
    "meshgrid": (lambda z, v: np.meshgrid(v, z[0, :3]), 0),
    "meshgrid-ij-sparse": (lambda z, v: np.meshgrid(v, z[1], indexing="ij", sparse=True), 0),
    "broadcast_arrays": (lambda z, v: np.broadcast_arrays(v, z), 0),
    "array_equiv": (lambda z, v: (np.array_equiv(z, z[0]), np.array_equiv(z[:1], z[0])), 0),
    "vecdot": (lambda z, v: np.vecdot(z, v), (8, "norm")),
    "vecdot-rows": (lambda z, v: np.vecdot(z, z[::-1]), (8, "norm")),
    "linalg.vecdot": (lambda z, v: np.linalg.vecdot(z, z[::-1], axis=0), (8, "norm")),
    "matvec": (lambda z, v: np.matvec(z, v), (8, "norm")),
    "vecmat": (lambda z, v: np.vecmat(z[:, 0], z), (8, "norm")),
    "logical_and": (lambda z, v: np.logical_and(z, v), 0),
    "logical_or": (lambda z, v: np.logical_or(z, 0.0), 0),
    "logical_xor": (lambda z, v: np.logical_xor(z, np.real(v) > 0), 0),
    "logical_not": (lambda z, v: np.logical_not(z), 0),
}


def numpy_result(fn, *args):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args)


def as_tuple(result):
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def compare(got, expected, bound, name, magnitude=None):
    """Dtype and shape exactly; values bit for bit (sign bits and NaN parts included) or
    within the bound, NaN parts where NumPy has them."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert (got.dtype, got.shape) == (expected.dtype, expected.shape), (name, got.dtype, expected.dtype, got.shape)
    if expected.dtype.kind != "c":
        np.testing.assert_array_equal(got, expected, err_msg=name)
        return
    if bound == 0:
        same_complex_values(got, expected)
        return
    ulps, scale = bound
    eps = np.finfo(expected.real.dtype).eps
    if scale == "norm":
        magnitudes = np.abs(np.where(np.isnan(expected), 0, expected))
        scale = np.max(magnitudes[np.isfinite(magnitudes)], initial=0.0)
    elif scale is None:
        scale = np.abs(np.nan_to_num(expected))       # an element with one NaN part: the other's magnitude
    else:
        scale = magnitude
    for part in (np.real, np.imag):
        g, e = part(got).astype(np.float64), part(expected).astype(np.float64)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(e), err_msg=name)
        finite = np.isfinite(e)
        np.testing.assert_array_equal(g[~finite & ~np.isnan(e)], e[~finite & ~np.isnan(e)], err_msg=name)
        limit = ulps * eps * np.broadcast_to(scale, e.shape)[finite]
        assert np.all(np.abs(g[finite] - e[finite]) <= limit), (name, np.max(np.abs(g[finite] - e[finite]) / limit))


def check(name, fn, bound, *args):
    got, expected = jitgrad.jit(fn)(*args), numpy_result(fn, *args)
    got, expected = as_tuple(got), as_tuple(expected)
    assert len(got) == len(expected), name
    magnitude = None
    if isinstance(bound, tuple) and callable(bound[1]):
        magnitude = np.abs(numpy_result(bound[1], *args))
    for g, e in zip(got, expected, strict=True):
        compare(g, e, bound, name, magnitude)


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_values_and_dtypes_match_numpy(name, dtype):
    fn, bound = FUNCTIONS[name]
    rng = np.random.default_rng(21)
    check(name, fn, bound, random_complex(rng, (4, 6), dtype), random_complex(rng, (6,), dtype))


def test_reference_interpreter_matches_numpy():
    """The traced programs run by the reference interpreter (NumPy on the IR's complex
    values) give NumPy's values within the same bounds, special values included."""
    z, v = special_operands(np.complex128, infinities=False)
    for name, (fn, bound) in FUNCTIONS.items():
        traced = trace(fn, (z, v)).function
        interpreted = numpy_result(lambda z, v: evaluate(traced, [z, v]), z, v)
        expected = as_tuple(numpy_result(fn, z, v))
        magnitude = np.abs(numpy_result(bound[1], z, v)) if isinstance(bound, tuple) and callable(bound[1]) else None
        assert len(interpreted) == len(expected), name
        for g, e in zip(interpreted, expected, strict=True):
            compare(g, e, bound, name, magnitude)


SPECIAL = ["extract", "compress", "ediff1d", "gradient", "gradient-spacings", "gradient-axes", "gradient-edge2",
           "trapezoid", "trapezoid-real-x", "sinc", "vander", "vander-increasing", "polyval",
           "polyval-real-coefficients", "polyadd", "polysub", "polyder", "polyint", "linspace", "linspace-retstep",
           "linspace-zero-step", "linspace-real-start", "logspace", "meshgrid", "broadcast_arrays", "array_equiv",
           "logical_and", "logical_or", "logical_xor", "logical_not"]
NAN_ONLY = ["cov", "cov-weights", "corrcoef", "vecdot", "matvec", "vecmat", "polymul"]
"""Functions whose sums of products meet the special values: NumPy's BLAS kernels (zgemm,
the dot kernels) can turn an infinite part into NaN where jitgrad's real products keep
the signed infinity (docs/complex.md), so these see NaN parts and signed zeros only."""


def special_operands(dtype, infinities=True):
    rng = np.random.default_rng(22)
    z, v = random_complex(rng, (4, 6)), random_complex(rng, (6,))
    z[0, 1], z[1, 2], z[2, 3] = complex(np.nan, 1.5), complex(-0.5, np.nan), complex(-0.0, 0.0)
    z[3, 0], z[3, 4] = complex(0.0, -0.0), complex(np.nan, np.nan)
    v[1], v[4] = complex(-0.0, -0.0), complex(np.nan, -2.0)
    if infinities:
        z[0, 4], z[2, 0], z[1, 5] = complex(np.inf, 1.0), complex(-2.0, -np.inf), complex(np.inf, np.nan)
        v[3] = complex(-np.inf, 0.0)
    return z.astype(dtype), v.astype(dtype)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_special_values_match_numpy(dtype):
    """NaN and infinite parts and signed zeros: NumPy's values bit for bit (NaN parts where
    NumPy has them) for the exact functions, NaN propagation for the summing ones."""
    z, v = special_operands(dtype)
    for name in SPECIAL:
        fn, bound = FUNCTIONS[name]
        check(name, fn, bound, z, v)
    z, v = special_operands(dtype, infinities=False)
    for name in NAN_ONLY:
        fn, bound = FUNCTIONS[name]
        check(name, fn, bound, z, v)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_linspace_between_special_endpoints(dtype):
    """Every pair of endpoints with infinite, NaN, subnormal and signed-zero parts (mapped
    with vmap): NumPy's steps (the zero-step branch included), the endpoint and the step
    bit for bit."""
    parts = [0.0, -0.0, 1.0, -2.0, np.inf, -np.inf, np.nan, 1e-310]
    grid = np.array([complex(a, b) for a in parts for b in parts], dtype)
    start, stop = (g.ravel() for g in np.meshgrid(grid, grid))
    spaced = jitgrad.jit(lambda start, stop: tuple(
        jitgrad.vmap(lambda a, b: np.linspace(a, b, 4, endpoint=endpoint, retstep=True))(start, stop)
        for endpoint in (True, False)))
    for endpoint, (values, steps) in zip((True, False), spaced(start, stop), strict=True):
        expected = [numpy_result(np.linspace, a, b, 4, endpoint, True) for a, b in zip(start, stop, strict=True)]
        compare(values, np.stack([e[0] for e in expected]), 0, "linspace")
        compare(steps, np.array([e[1] for e in expected]), 0, "linspace step")


@pytest.mark.parametrize("dtype", COMPLEX)
def test_logical_ufuncs_on_every_pair_of_special_parts(dtype):
    """Truth is "either part nonzero" (a NaN part is nonzero, -0.0 is zero), against
    complex, real and bool operands, and the ufuncs' reduce and accumulate."""
    parts = [0.0, -0.0, 1.0, -2.5, np.inf, -np.inf, np.nan, 1e-40]
    grid = np.array([complex(a, b) for a in parts for b in parts], dtype)
    a, b = (g.ravel() for g in np.meshgrid(grid, grid))

    def logical(a, b):
        return (np.logical_and(a, b), np.logical_or(a, b), np.logical_xor(a, b), np.logical_not(a),
                np.logical_and(a, np.real(b)), np.logical_or(np.imag(a) > 0, b), np.logical_xor(a, True),
                np.logical_and.reduce(a.reshape(64, 64), axis=1), np.logical_or.accumulate(b[:64]))
    for g, e in zip(jitgrad.jit(logical)(a, b), numpy_result(logical, a, b), strict=True):
        compare(g, e, 0, "logical")


@pytest.mark.parametrize("dtype", COMPLEX)
def test_nonzero_family_with_a_static_size(dtype):
    """nonzero/flatnonzero/argwhere keep the positions with a nonzero (or NaN) part, padded
    to the static size jitgrad needs (sized.*); without it they raise as for real arrays."""
    z = np.array([[1j, 0, -0.0 + 0j, complex(np.nan, 0)], [complex(0, -0.0), 2, complex(0, np.inf), 0]], dtype)
    rows, cols = np.nonzero(z)
    got = jitgrad.jit(lambda z: sized.nonzero(z, size=6, fill_value=-1))(z)
    np.testing.assert_array_equal(got[0], np.r_[rows, [-1] * (6 - rows.size)])
    np.testing.assert_array_equal(got[1], np.r_[cols, [-1] * (6 - cols.size)])
    np.testing.assert_array_equal(jitgrad.jit(lambda z: sized.flatnonzero(z, size=4))(z), np.flatnonzero(z)[:4])
    np.testing.assert_array_equal(jitgrad.jit(lambda z: sized.argwhere(z, size=4))(z), np.argwhere(z))
    for refused in (np.nonzero, np.flatnonzero, np.argwhere):
        with pytest.raises(UnsupportedOperationError, match=f"numpy.{refused.__name__} on a traced array has a "
                                                            "shape that depends on the data"):
            jitgrad.jit(lambda z: refused(z))(z)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_empty_and_zero_dimensional_operands(dtype):
    """Empty arrays and 0-d values give NumPy's shapes, dtypes and values."""
    rng = np.random.default_rng(23)
    empty, scalar, matrix = np.zeros((3, 0), dtype), random_complex(rng, (), dtype), random_complex(rng, (0, 3), dtype)
    cases = {
        "ediff1d-empty": (lambda e, s, m: np.ediff1d(e), 0),
        "ediff1d-0d": (lambda e, s, m: np.ediff1d(s), 0),
        "trapezoid-empty": (lambda e, s, m: np.trapezoid(e), 0),
        "sinc-0d": (lambda e, s, m: np.sinc(s), (10, None)),
        "sinc-empty": (lambda e, s, m: np.sinc(e), 0),
        "vecdot-empty": (lambda e, s, m: np.vecdot(e, e), 0),
        "matvec-empty": (lambda e, s, m: np.matvec(m, np.stack([s, s, s])), 0),
        "vecmat-empty": (lambda e, s, m: np.vecmat(m[:, 0], m), 0),
        "logical-0d": (lambda e, s, m: (np.logical_and(s, s), np.logical_not(s), np.logical_xor(s, e)), 0),
        "polyval-0d": (lambda e, s, m: np.polyval([1.0, -2.0, 0.5j], s), (8, "norm")),
        "polyadd-0d": (lambda e, s, m: np.polyadd(s, np.stack([s, 2 * s])), 0),
        "linspace-one": (lambda e, s, m: np.linspace(s, s + 1, 1, retstep=True), 0),
        "linspace-none": (lambda e, s, m: np.linspace(s, 2 * s, 0), 0),
        "meshgrid-empty": (lambda e, s, m: np.meshgrid(e[0], s), 0),
        "compress-none": (lambda e, s, m: np.compress([False, False], np.stack([s, s])), 0),
        "array_equiv-empty": (lambda e, s, m: np.array_equiv(e, s), 0),
        "cov-no-variables": (lambda e, s, m: np.cov(m), 0),
    }
    for name, (fn, bound) in cases.items():
        check(name, fn, bound, empty, scalar, matrix)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_empty_like_and_astype_keep_the_complex_dtype(dtype):
    z = np.ones((2, 3), dtype)
    got = jitgrad.jit(lambda z: (np.empty_like(z), np.empty_like(z, shape=(4,)), np.empty_like(np.real(z), dtype=dtype)))(z)
    assert [(g.dtype, g.shape) for g in got] == [(np.dtype(dtype), (2, 3)), (np.dtype(dtype), (4,)),
                                                 (np.dtype(dtype), (2, 3))]
    z = np.array([complex(np.nan, 1), complex(0, -0.0), complex(1.5, np.inf), -2.5 + 3j], dtype)
    casts = lambda z: (np.astype(z, np.complex64), np.astype(z, np.complex128), np.astype(z, bool),  # noqa: E731
                       np.astype(z, np.float64), np.astype(np.real(z), dtype))
    for g, e in zip(jitgrad.jit(casts)(z), numpy_result(casts, z), strict=True):
        compare(g, e, 0, "astype")


def test_refusals_name_the_function_and_the_line():
    """NumPy's poly returns real coefficients when complex roots come in conjugate pairs
    (a dtype decided by the values); linspace to an integer dtype floors, which NumPy
    does not do for complex numbers."""
    z = np.array([1 + 1j, 1 - 1j, 2.0 + 0j])
    assert np.poly(z).dtype == np.float64 and np.poly(z[:2] * 1j).dtype == np.complex128
    with pytest.raises(DTypeError, match=r"test_complex_surface.py:\d+: numpy.poly of complex roots"):
        jitgrad.jit(lambda z: np.poly(z))(z)
    with pytest.raises(TypeError):
        np.linspace(z[0], z[1], 3, dtype=int)
    with pytest.raises(DTypeError, match=r"test_complex_surface.py:\d+: numpy.linspace of complex endpoints with "
                                         "dtype=int64"):
        jitgrad.jit(lambda z: np.linspace(z[0], z[1], 3, dtype=np.int64))(z)


# --------------------------------------------------------------------------- derivatives

NOT_DIFFERENTIABLE = {"array_equiv", "logical_and", "logical_or", "logical_xor", "logical_not"}
GRADIENT_CASES = [name for name in FUNCTIONS if name not in NOT_DIFFERENTIABLE]


def real_loss(fn, weights_seed=3):
    """A real number from every complex or real result: Re Σ w · result, all outputs."""
    def loss(z, v):
        total = 0.0
        for k, result in enumerate(as_tuple(fn(z, v))):
            weights = np.random.default_rng(weights_seed + k).standard_normal((2,) + np.shape(result))
            total = total + np.sum(np.real(result) * weights[0]) + np.sum(np.imag(result) * weights[1])
        return total
    return loss


def operands(seed):
    rng = np.random.default_rng(seed)
    z, v = random_complex(rng, (4, 6)), random_complex(rng, (6,))
    return z, v, random_complex(rng, (4, 6)), random_complex(rng, (6,))


@pytest.mark.parametrize("name", GRADIENT_CASES)
def test_reverse_mode_follows_jax_against_central_differences(name):
    """grad in JAX's convention, df/dx - i df/dy, for both operands."""
    fn, _ = FUNCTIONS[name]
    z, v, _, _ = operands(24)
    loss = real_loss(fn)
    gz, gv = jitgrad.grad(loss, argnums=(0, 1))(z, v)
    np.testing.assert_allclose(gz, wirtinger_gradient(lambda z: loss(z, v), z), rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(gv, wirtinger_gradient(lambda v: loss(z, v), v), rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("name", GRADIENT_CASES)
def test_forward_mode_against_central_differences(name):
    """jvp along a complex direction of both operands: the directional derivative."""
    fn, _ = FUNCTIONS[name]
    z, v, tz, tv = operands(25)
    h = 1e-6
    _, tangents = jitgrad.jvp(fn, (z, v), (tz, tv))
    plus, minus = as_tuple(fn(z + h * tz, v + h * tv)), as_tuple(fn(z - h * tz, v - h * tv))
    for t, p, m in zip(as_tuple(tangents), plus, minus, strict=True):
        np.testing.assert_allclose(t, (np.asarray(p) - np.asarray(m)) / (2 * h), rtol=1e-6, atol=1e-7, err_msg=name)


SECOND_ORDER = ["cov-weights", "corrcoef", "sinc", "polyval", "logspace", "vecmat", "gradient-edge2", "vander"]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_order(name):
    """The gradient's directional derivative, itself by central differences."""
    fn, _ = FUNCTIONS[name]
    z, v, direction, _ = operands(26)
    grad = jitgrad.grad(real_loss(fn), argnums=(0, 1))

    def directional(z):
        return np.real(grad(z, v)[0] * direction).sum()
    np.testing.assert_allclose(jitgrad.grad(directional)(z), wirtinger_gradient(directional, z, h=1e-5),
                               rtol=1e-5, atol=1e-5, err_msg=name)


def test_holomorphic_derivatives_by_jvp_and_vjp():
    """sinc, polyval and vander are holomorphic: jvp and vjp with 1 give f'(z)
    (jax.grad(f, holomorphic=True))."""
    z = np.array([0.3 + 0.2j, -0.5 + 1.5j, 2.0 - 0.7j])
    ones = np.ones_like(z)
    y = np.pi * z
    sinc_derivative = (np.cos(y) * y - np.sin(y)) / y ** 2 * np.pi
    p = np.array([1 - 1j, 0.5j, 2.0, -1 + 0.25j])
    cases = [(lambda z: np.sinc(z), sinc_derivative), (lambda z: np.polyval(p, z), np.polyval(np.polyder(p), z)),
             (lambda z: np.vander(z, 3)[:, 0], 2 * z)]
    for fn, derivative in cases:
        np.testing.assert_allclose(jitgrad.jvp(fn, (z,), (ones,))[1], derivative, rtol=1e-12)
        np.testing.assert_allclose(jitgrad.vjp(fn, z)[1](ones)[0], derivative, rtol=1e-12)
        np.testing.assert_allclose(jitgrad.jacfwd(fn, holomorphic=True)(z), np.diag(derivative), rtol=1e-12,
                                   atol=1e-15)
        for k in range(z.size):
            np.testing.assert_allclose(jitgrad.grad(lambda w: fn(w)[k], holomorphic=True)(z)[k], derivative[k],
                                       rtol=1e-12)
    start, stop = 0.5 - 1j, 2 + 0.25j          # linspace is linear in its endpoints: d/dstart = 1 - t
    along = jitgrad.grad(lambda a: np.linspace(a, stop, 5)[3], holomorphic=True)(start)
    np.testing.assert_allclose(along, 1 - 3 / 4, rtol=1e-12)
