"""NumPy's ordering-based functions of complex arrays (jitgrad/tracing/complex_order.py):
searchsorted, isin, lexsort, unique with a static size, nanmedian and histogram weights,
compiled and checked against NumPy running the same code on adversarial data (ties, NaN
in either part, signed zeros, infinities, empty and 0-d operands, complex64 and
complex128, mixed real and complex operands), and derivatives in JAX's convention
against central differences."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import DTypeError, UnsupportedOperationError
from jitgrad.tracing import sized
from test_complex_more import same_complex_values, wirtinger_gradient

COMPLEX = [np.complex64, np.complex128]
NAN, INF = np.nan, np.inf
PARTS = np.array([0.0, -0.0, 1.0, -1.0, 2.5, INF, -INF, NAN, 1.0, 2.5])
"""Parts drawn for adversarial data: repeated values make ties, with signed zeros, both
infinities and NaN in either part."""


def adversarial(rng, shape, dtype=np.complex128) -> np.ndarray:
    re = rng.choice(PARTS, size=shape)
    im = rng.choice(PARTS, size=shape)
    out = np.empty(shape, dtype)
    out.real, out.imag = re, im
    return out


def numpy_result(fn, *args):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args)


def assert_same(got, expected, name=""):
    """Same dtype, shape and values, sign bits of zeros included, NaN parts where NumPy's."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape, (name, got.dtype, expected.dtype,
                                                                         got.shape, expected.shape)
    if expected.dtype.kind == "c":
        same_complex_values(got, expected)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=name)


def check(fn, *args):
    got = jitgrad.jit(fn)(*args)
    expected = numpy_result(fn, *args)
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for g, e in zip(got, expected, strict=True):
        assert_same(g, e)


# --------------------------------------------------------------------------- searchsorted

@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted_follows_numpys_order(dtype, side):
    rng = np.random.default_rng(1)
    for trial in range(4):
        a = np.sort(adversarial(rng, (13,), dtype))
        v = np.concatenate([adversarial(rng, (9,), dtype), a[rng.integers(0, 13, 6)]]).reshape(3, 5)
        check(lambda a, v: np.searchsorted(a, v, side=side), a, v)
        check(lambda a, v: np.searchsorted(a, v[0, 0], side=side), a, v)            # a 0-d value
        unsorted = rng.permutation(a)
        check(lambda a, v: np.searchsorted(a, v, side=side, sorter=np.argsort(a, kind="stable")), unsorted, v)
        check(lambda a: a.searchsorted(complex(1, NAN), side=side), a)              # a Python complex


def test_searchsorted_promotes_mixed_operands_as_numpy():
    rng = np.random.default_rng(2)
    z64 = np.sort(adversarial(rng, (10,), np.complex64))
    x32 = np.sort(rng.choice(PARTS, 10).astype(np.float32))
    check(lambda a, v: np.searchsorted(a, v), x32, z64)               # float32 with complex64: complex64
    check(lambda a, v: np.searchsorted(a, v, side="right"), z64, x32)
    check(lambda a, v: np.searchsorted(a, v), z64, np.array([0, 1, 3, -2]))   # integers: complex128
    check(lambda a: np.searchsorted(a, 2.5 + 0j), x32)                # a Python complex: complex128
    check(lambda a, v: np.searchsorted(a, v), z64[:0], z64)           # empty a
    check(lambda a, v: np.searchsorted(a, v), z64, z64[:0])           # empty v


# --------------------------------------------------------------------------- isin

@pytest.mark.parametrize("dtype", COMPLEX)
def test_isin_compares_with_numpys_equality(dtype):
    """Found where a test element == the element: never for a NaN part, -0.0 equals 0.0."""
    rng = np.random.default_rng(3)
    for trial in range(4):
        element = adversarial(rng, (4, 5), dtype)
        tests = np.concatenate([adversarial(rng, (5,), dtype), element.ravel()[rng.integers(0, 20, 3)]])
        check(lambda e, t: np.isin(e, t), element, tests)
        check(lambda e, t: np.isin(e, t, invert=True), element, tests)
        check(lambda e, t: np.isin(e[0, 0], t), element, tests)           # 0-d
        check(lambda e, t: np.isin(e, t[:1]), element, tests)             # NumPy's == loop for few tests
    element = adversarial(rng, (6,), dtype)
    check(lambda e: np.isin(e, np.real(e)), element)                      # real tests
    check(lambda e, t: np.isin(e, t), np.array([0.0, -0.0, 1.0, NAN]), element)   # real elements
    check(lambda e, t: np.isin(e, t), element, element[:0])               # no tests
    check(lambda e, t: np.isin(e, t, invert=True), element[:0], element)  # no elements
    with pytest.raises(ValueError, match="'table' method"):
        jitgrad.jit(lambda e: np.isin(e, e, kind="table"))(element)


# --------------------------------------------------------------------------- unique

def check_unique(z, size, **options):
    """sized.unique against np.unique: NumPy's results, then `fill_value` (the first unique
    value unless given) for the values and 0 for the indices and counts."""
    got = jitgrad.jit(lambda z: sized.unique(z, size=size, **options))(z)
    numpy_options = {k: v for k, v in options.items() if k != "fill_value"}
    expected = numpy_result(lambda z: np.unique(z, **numpy_options), z)
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    count = min(size, len(expected[0]))
    fill = options.get("fill_value", expected[0][0])
    values = np.concatenate([expected[0][:count], np.full(size - count, fill, expected[0].dtype)])
    assert_same(got[0], values, "values")
    names = [name for name in ("return_index", "return_inverse", "return_counts") if options.get(name)]
    for g, e, name in zip(got[1:], expected[1:], names, strict=True):
        if name == "return_inverse":
            assert_same(g, e, name)
        else:
            assert_same(g, np.concatenate([e[:count], np.zeros(size - count, e.dtype)]), name)


UNIQUE_OPTIONS = [{}, {"equal_nan": False}, {"return_index": True}, {"return_inverse": True},
                  {"return_counts": True, "equal_nan": False},
                  {"return_index": True, "return_inverse": True, "return_counts": True},
                  {"return_counts": True, "fill_value": -1j}]


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("options", UNIQUE_OPTIONS, ids=lambda o: ",".join(o) or "values")
def test_unique_keeps_the_element_numpy_keeps(dtype, options):
    """Up to 16 elements NumPy's quicksort is stable, so every path is NumPy's bit for bit:
    the values alone keep each group's first occurrence (NumPy's hash set), with indices,
    inverse or counts the first in the stable order."""
    rng = np.random.default_rng(4)
    for n, size in ((16, 20), (12, 4), (1, 3), (9, 9)):
        z = adversarial(rng, (n,), dtype)
        check_unique(z, size, **options)
    check_unique(adversarial(rng, (3, 4), dtype), 12, **options)              # flattened


@pytest.mark.parametrize("options", [{}, {"equal_nan": False}, {"return_index": True}],
                         ids=["values", "distinct-nans", "index"])
def test_unique_of_long_arrays_is_numpys_on_the_deterministic_paths(options):
    """The hash-set path (values alone) and the merge-sort path (return_index) decide the
    kept element by the input order, whatever the length."""
    rng = np.random.default_rng(5)
    for n in (17, 40):
        check_unique(adversarial(rng, (n,)), n, **options)


def test_unique_of_long_arrays_with_counts_matches_numpy_up_to_equal_representatives():
    """NumPy's quicksort (more than 16 elements) may keep another of the equal elements
    (a zero of the other sign, another element with a NaN part): values compare equal,
    inverse and counts are the same."""
    rng = np.random.default_rng(6)
    z = adversarial(rng, (40,))
    values, inverse, counts = jitgrad.jit(lambda z: sized.unique(z, return_inverse=True, return_counts=True,
                                                                 size=40))(z)
    expected = numpy_result(lambda z: np.unique(z, return_inverse=True, return_counts=True), z)
    k = len(expected[0])
    np.testing.assert_array_equal(values[:k], expected[0])        # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(inverse, expected[1])
    np.testing.assert_array_equal(counts[:k], expected[2])


def test_functions_with_data_dependent_shapes_refuse_complex_arrays_as_real_ones():
    z = np.array([1j, 2, 1j])
    with pytest.raises(UnsupportedOperationError, match="sized.unique"):
        jitgrad.jit(lambda z: np.unique(z))(z)
    for fn in (np.unique_values, np.unique_counts, np.unique_inverse, np.unique_all):
        with pytest.raises(UnsupportedOperationError, match="sized.unique"):
            jitgrad.jit(fn)(z)
    for fn in (np.intersect1d, np.union1d, np.setdiff1d, np.setxor1d):
        with pytest.raises(UnsupportedOperationError, match="np.isin"):
            jitgrad.jit(lambda z: fn(z, z[:1]))(z)


# --------------------------------------------------------------------------- lexsort

@pytest.mark.parametrize("dtype", COMPLEX)
def test_lexsort_sorts_complex_keys_in_numpys_order(dtype):
    rng = np.random.default_rng(7)
    z, w = adversarial(rng, (3, 11), dtype), adversarial(rng, (3, 11), dtype)
    x = rng.integers(0, 3, (3, 11))
    check(lambda z, x: np.lexsort((z, x)), z, x)
    check(lambda z, x: np.lexsort((x, z), axis=0), z, x)
    check(lambda z, w: np.lexsort((z, w)), z, w)
    check(lambda z, w: np.lexsort(np.stack([z[0], w[0]])), z, w)     # a 2-d array of keys


# --------------------------------------------------------------------------- nanmedian

NANMEDIAN_AXES = [None, 0, 1, -1, (0, 2), (0, 1, 2)]


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("axis", NANMEDIAN_AXES, ids=str)
def test_nanmedian_follows_numpys_two_paths(dtype, axis):
    """NaN in either part is NaN; all-NaN slices, infinite parts, ties with the masked
    array's inf+0j fill, signed zeros."""
    rng = np.random.default_rng(8)
    z = adversarial(rng, (3, 4, 5), dtype)
    z[1, 2] = complex(NAN, 1)                                     # an all-NaN slice
    z[0, :, 1] = [complex(INF, 1), complex(1, NAN), complex(INF, -0.0), 2]
    check(lambda z: np.nanmedian(z, axis=axis), z)
    check(lambda z: np.nanmedian(z, axis=axis, keepdims=True), z)


def test_nanmedian_of_small_and_long_slices_matches_numpy():
    rng = np.random.default_rng(9)
    check(lambda z: np.nanmedian(z), np.complex64(complex(1, NAN)) * np.ones((), np.complex64))     # 0-d
    check(lambda z: np.nanmedian(z), np.array([complex(NAN, 2), complex(1, NAN)]))  # all NaN: the last element
    check(lambda z: np.nanmedian(z), np.array([1e308 + 1e308j, NAN, 1e308, 3e307j]))      # no overflow
    check(lambda z: np.nanmedian(z, axis=0), np.zeros((0, 2), np.complex64))         # empty: nanmean's NaN
    long = adversarial(rng, (2, 601))
    check(lambda z: np.nanmedian(z, axis=1), long)              # 600 and more: the median of the numbers
    z = (rng.standard_normal((5, 30)) + 1j * rng.standard_normal((5, 30))).astype(np.complex64)
    z[rng.random((5, 30)) < 0.3] = complex(NAN, 0)
    check(lambda z: np.nanmedian(z, axis=1), z)                 # the masked path beyond 16 elements


def test_real_nanmedian_takes_numpys_two_paths_too():
    """The whole array or a 1-d one: np.median of the numbers (no overflow for one middle
    element, an all-NaN array gives its last element); an axis of a larger array: the
    masked median, whose sum starts from +0."""
    cases = [(np.array([1e308, NAN, 1e308, 1e308]), None), (np.array([-0.0, NAN]), None),
             (np.array([[-0.0, NAN, -0.0]]), 1), (np.array([NAN, -NAN]), None),
             (np.array([6e4, 6e4, NAN], np.float16), None), (np.array([[6e4, 6e4, NAN]], np.float16), 1),
             (np.array([[NAN, -NAN], [1.0, NAN]], np.float32), (0, 1))]
    for x, axis in cases:
        got = jitgrad.jit(lambda x: np.nanmedian(x, axis=axis))(x)
        expected = numpy_result(lambda x: np.nanmedian(x, axis=axis), x)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))      # NaN signs too


# --------------------------------------------------------------------------- histogram

@pytest.mark.parametrize("dtype", COMPLEX)
def test_histogram_sums_complex_weights_part_by_part(dtype):
    rng = np.random.default_rng(10)
    x = rng.uniform(-1, 1, 50)
    w = (rng.standard_normal(50) + 1j * rng.standard_normal(50)).astype(dtype)
    check(lambda x, w: np.histogram(x, bins=4, range=(-1, 1), weights=w), x, w)        # bit for bit
    edges = np.array([-1, -0.2, 0.1, 1])
    got = jitgrad.jit(lambda x, w: np.histogram(x, bins=edges, weights=w))(x, w)
    expected = np.histogram(x, bins=edges, weights=w)
    assert got[0].dtype == expected[0].dtype        # NumPy differences running sums in w's dtype
    np.testing.assert_allclose(got[0], expected[0], atol=8 * np.finfo(w.real.dtype).eps * np.abs(w).sum())
    got = jitgrad.jit(lambda x, w: np.histogram(x, bins=3, range=(-1, 1), weights=w, density=True))(x, w)
    expected = np.histogram(x, bins=3, range=(-1, 1), weights=w, density=True)
    assert got[0].dtype == expected[0].dtype
    np.testing.assert_allclose(got[0], expected[0], rtol=4 * np.finfo(w.real.dtype).eps)


def test_histogram_of_complex_data_digitize_and_bincount_are_refused():
    z = np.array([1 + 2j, 3 - 1j])
    for fn in (lambda z: np.histogram(z, bins=3, range=(0, 4)), lambda z: np.histogram_bin_edges(z, bins=3),
               lambda z: np.digitize(z, [0, 1]), lambda z: np.bincount(np.array([0, 1]), weights=z)):
        with pytest.raises(DTypeError, match="of complex numbers") as info:
            jitgrad.jit(fn)(z)
        assert "test_complex_ordering.py" in str(info.value)


# --------------------------------------------------------------------------- derivatives

def real_loss(fn, shape_seed=3):
    def loss(z):
        result = fn(z)
        result = result[0] if isinstance(result, tuple) else result
        weights = np.random.default_rng(shape_seed).standard_normal((2,) + np.shape(result))
        return np.sum(np.real(result) * weights[0]) + np.sum(np.imag(result) * weights[1])
    return loss


DIFFERENTIABLE = {
    # name: (the traced function, the same in NumPy for the central differences)
    "nanmedian-masked": (lambda z: np.nanmedian(z, axis=1),) * 2,
    "nanmedian-numbers": (lambda z: np.nanmedian(z),) * 2,
    "nanmedian-keepdims": (lambda z: np.nanmedian(z, axis=0, keepdims=True),) * 2,
    "unique-values": (lambda z: sized.unique(z, size=8), lambda z: np.unique(z)[:8]),
    "unique-index": (lambda z: sized.unique(z, return_index=True, size=5)[0], lambda z: np.unique(z)[:5]),
    "histogram-weights": (lambda z: np.histogram(np.linspace(0, 1, z.size), bins=3, range=(0, 1),
                                                 weights=np.ravel(z))[0],) * 2,
}


@pytest.mark.parametrize("name", list(DIFFERENTIABLE))
def test_gradients_follow_jax_against_central_differences(name):
    """grad in JAX's convention, df/dx - i df/dy: the selected element's tangent (the mean
    of the two middle ones for nanmedian), away from ties."""
    rng = np.random.default_rng(11)
    z = rng.standard_normal((4, 6)) + 1j * rng.standard_normal((4, 6))
    z[1, 2] = complex(NAN, 0.5) if name.startswith("nanmedian") else z[1, 2]
    traced, reference = DIFFERENTIABLE[name]
    got = jitgrad.grad(real_loss(traced))(z)
    expected = wirtinger_gradient(real_loss(reference), z)
    expected[np.isnan(expected)] = 0
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, err_msg=name)


def test_second_order_through_nanmedian():
    """The gradient's directional derivative of |nanmedian|², by central differences."""
    rng = np.random.default_rng(12)
    z = rng.standard_normal((3, 5)) + 1j * rng.standard_normal((3, 5))
    z[0, 1] = complex(1, NAN)
    direction = rng.standard_normal((3, 5)) + 1j * rng.standard_normal((3, 5))
    grad = jitgrad.grad(lambda z: np.sum(np.abs(np.nanmedian(z, axis=1)) ** 2))

    def directional(z):
        return np.real(grad(z) * direction).sum()
    expected = wirtinger_gradient(directional, z, h=1e-5)
    expected[np.isnan(expected)] = 0
    np.testing.assert_allclose(jitgrad.grad(directional)(z), expected, rtol=1e-5, atol=1e-5)


def test_integer_and_boolean_results_have_zero_derivatives():
    rng = np.random.default_rng(13)
    z = rng.standard_normal(6) + 1j * rng.standard_normal(6)
    a = np.sort(z)

    def loss(z):
        return np.sum(z.real * (np.searchsorted(a, z) + np.isin(z, a[:3]) + np.lexsort((z,))))
    np.testing.assert_allclose(jitgrad.grad(loss)(z), (np.searchsorted(a, z) + np.isin(z, a[:3])
                                                       + np.lexsort((z,))).astype(float))
