"""sort/argsort kernels and the NumPy sorting, searching and order-statistics functions
on traced arrays, compiled and compared with NumPy running the same code (values,
dtypes, shapes), with derivatives against finite differences."""
import warnings

import ml_dtypes
import numpy as np
import pytest

import jitgrad
from jitgrad.errors import DTypeError, ShapeError, UnsupportedOperationError
from jitgrad.ir import DType
from jitgrad.tracing import sized

ALL_DTYPES = [d.numpy for d in DType if not d.is_complex]     # complex: refused with a clear error (docs/complex.md)
FLOATS = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16]


def same(got, want):
    """Equal values (NaN equal to NaN), dtype and shape."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind == "f" or want.dtype == ml_dtypes.bfloat16:
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))
    else:
        np.testing.assert_array_equal(got, want)


def run_both(f, *args):
    """f compiled, and f run by NumPy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return jitgrad.jit(f)(*args), f(*args)


def awkward(rng, shape, dtype):
    """Small integers (many ties) and, for floats, NaN, infinities and both zeros."""
    x = rng.integers(-3, 4, shape).astype(dtype)
    if np.dtype(dtype).kind == "f" or dtype == ml_dtypes.bfloat16:
        flat = x.reshape(-1)
        specials = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, np.nan, -0.0], dtype)
        flat[rng.choice(flat.size, size=min(7, flat.size), replace=False)] = specials[:min(7, flat.size)]
    if np.dtype(dtype) == np.bool_:
        x = rng.random(shape) < 0.5
    return x


def numpy_keys(x):
    return x.astype(np.float64) if x.dtype in (np.float16, ml_dtypes.bfloat16) else x


# --------------------------------------------------------------------------- sort / argsort kernels

@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_sort_and_argsort_match_numpy_stable_sort_on_every_dtype(dtype):
    rng = np.random.default_rng(0)
    x = awkward(rng, (3, 37), dtype)
    got_sorted, got_order = jitgrad.jit(lambda x: (np.sort(x), np.argsort(x, kind="stable")))(x)
    want_order = np.argsort(numpy_keys(x), axis=-1, kind="stable")
    np.testing.assert_array_equal(got_order, want_order)
    assert got_order.dtype == np.int64
    # the values, bit for bit: ties (and -0.0 / +0.0) keep their original order
    np.testing.assert_array_equal(got_sorted.view(np.uint8), np.take_along_axis(x, want_order, -1).view(np.uint8))
    if dtype == ml_dtypes.bfloat16:     # ml_dtypes' own sort leaves NaN where it happens to fall
        same(got_sorted, np.sort(x.astype(np.float32)).astype(dtype))
    else:
        same(got_sorted, np.sort(x))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 9, 64, 1000])
def test_merge_sort_on_rows_of_any_length(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((2, n))
    x[:, ::3] = np.round(x[:, ::3])                       # some ties
    got_sorted, got_order = jitgrad.jit(lambda x: (np.sort(x), np.argsort(x, kind="stable")))(x)
    np.testing.assert_array_equal(got_order, np.argsort(x, kind="stable"))
    np.testing.assert_array_equal(got_sorted, np.sort(x))


def test_signed_zeros_compare_equal_and_keep_their_order():
    x = np.array([0.0, -0.0, 0.0, -1.0, -0.0])
    got_sorted, got_order = jitgrad.jit(lambda x: (np.sort(x), np.argsort(x)))(x)
    np.testing.assert_array_equal(got_order, [3, 0, 1, 2, 4])
    np.testing.assert_array_equal(np.signbit(got_sorted), [True, False, True, False, True])


@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_sort_along_any_axis(axis):
    x = np.random.default_rng(1).standard_normal((4, 5, 3))
    got, want = run_both(lambda x: (np.sort(x, axis=axis), np.argsort(x, axis=axis, kind="stable")), x)
    same(got[0], want[0])
    same(got[1], want[1])


def test_sort_errors():
    with pytest.raises(ShapeError, match="axis"):
        jitgrad.jit(lambda x: np.sort(x))(np.float64(1.0))
    with pytest.raises(UnsupportedOperationError, match="order="):
        jitgrad.jit(lambda x: np.sort(x, order="a"))(np.ones(3))


def test_sort_gradient_permutes_the_cotangent_forward_and_reverse():
    x = np.array([0.3, -1.2, 2.5, 0.1])
    weights = np.array([1.0, 2.0, 3.0, 4.0])

    def f(x):
        return np.sum(np.sort(x) ** 2 * weights)
    grad = jitgrad.grad(f)(x)
    rank = np.argsort(np.argsort(x))
    np.testing.assert_allclose(grad, 2 * x * weights[rank], rtol=1e-14)
    jac = jitgrad.jacfwd(lambda x: np.sort(x))(x)
    np.testing.assert_array_equal(jac, np.eye(4)[np.argsort(x)])
    np.testing.assert_array_equal(jitgrad.jacrev(lambda x: np.sort(x))(x), jac)


def test_sort_second_derivative_matches_finite_differences():
    x = np.array([0.3, -1.2, 2.5, 0.1, 1.7])

    def f(x):
        s = np.sort(x * x - x)
        return np.sum(np.sin(s) * np.arange(1.0, 6.0))
    hess = jitgrad.hessian(f)(x)
    grad = jitgrad.jit(jitgrad.grad(f))
    eps = 1e-5
    numeric = np.stack([(grad(x + eps * e) - grad(x - eps * e)) / (2 * eps) for e in np.eye(5)], axis=1)
    np.testing.assert_allclose(hess, numeric, rtol=1e-6, atol=1e-7)


def test_argsort_has_no_derivative():
    g = jitgrad.grad(lambda x: np.sum(np.argsort(x) * x))(np.array([2.0, 1.0, 3.0]))
    np.testing.assert_array_equal(g, [1.0, 0.0, 2.0])


# --------------------------------------------------------------------------- partition, lexsort

def test_partition_when_kth_pins_every_position():
    x = np.array([3.0, 1.0, 2.0, 0.5])
    got, want = run_both(lambda x: np.partition(x, [0, 1, 2]), x)
    same(got, want)


def test_partition_otherwise_names_np_sort():
    with pytest.raises(UnsupportedOperationError, match="np.sort"):
        jitgrad.jit(lambda x: np.partition(x, 2))(np.ones(5))
    with pytest.raises(UnsupportedOperationError, match="argsort"):
        jitgrad.jit(lambda x: np.argpartition(x, 2))(np.ones(5))


def test_lexsort():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 3, 20), rng.integers(0, 3, 20).astype(np.float64)
    got, want = run_both(lambda a, b: np.lexsort((a, b)), a, b)
    same(got, want)
    keys = rng.integers(0, 2, (3, 4, 6))
    got, want = run_both(lambda k: np.lexsort(k, axis=0), keys)
    same(got, want)


# --------------------------------------------------------------------------- searching

@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted(side):
    a = np.array([-1.0, 0.0, 0.0, 2.5, np.inf, np.nan])
    v = np.array([[-2.0, 0.0, 1.0], [np.nan, np.inf, 2.5]])
    got, want = run_both(lambda a, v: np.searchsorted(a, v, side=side), a, v)
    same(got, want)
    got, want = run_both(lambda a, v: np.searchsorted(a, v, side=side, sorter=np.argsort(a)), a[::-1].copy(), v)
    same(got, want)
    got, want = run_both(lambda a: np.searchsorted(a, 0.5, side=side), a)
    same(got, want)


@pytest.mark.parametrize("bins", [[0.0, 1.0, 1.0, 3.0], [3.0, 1.0, 0.0]])
@pytest.mark.parametrize("right", [False, True])
def test_digitize(bins, right):
    x = np.array([-1.0, 0.0, 0.5, 1.0, 3.0, 4.0, np.nan])
    got, want = run_both(lambda x: np.digitize(x, np.array(bins), right=right), x)
    same(got, want)


def test_digitize_with_traced_bins_names_searchsorted():
    with pytest.raises(UnsupportedOperationError, match="searchsorted"):
        jitgrad.jit(lambda x, b: np.digitize(x, b))(np.ones(3), np.arange(3.0))


def test_interp_values_and_gradients():
    xp, fp = np.array([0.0, 1.0, 1.0, 2.5, 4.0]), np.array([1.0, -1.0, 2.0, 3.0, 0.5])
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 2.5, 3.9, 4.0, 5.0, np.nan])
    got, want = run_both(lambda x, xp, fp: np.interp(x, xp, fp), x, xp, fp)
    same(got, want)
    got, want = run_both(lambda x, xp, fp: np.interp(x, xp, fp, left=-9.0, right=9.0), x, xp, fp)
    same(got, want)
    got, want = run_both(lambda x: np.interp(x, [350.0, 10.0, 180.0], [1.0, 2.0, 3.0], period=360),
                         np.array([-5.0, 0.0, 5.0, 200.0, 355.0, 720.0]))
    np.testing.assert_allclose(got, want, rtol=1e-15)
    got, want = run_both(lambda x: np.interp(x, [1.0], [7.0]), np.array([0.0, 1.0, 2.0]))
    same(got, want)
    inner = np.array([0.25, 1.75, 3.0])
    grad_fp = jitgrad.grad(lambda fp: np.sum(np.interp(inner, xp, fp)))(fp)
    eps = 1e-6
    numeric = [(np.sum(np.interp(inner, xp, fp + eps * e)) - np.sum(np.interp(inner, xp, fp - eps * e))) / (2 * eps)
               for e in np.eye(5)]
    np.testing.assert_allclose(grad_fp, numeric, rtol=1e-8, atol=1e-10)
    grad_x = jitgrad.grad(lambda x: np.sum(np.interp(x, xp, fp)))(inner)
    np.testing.assert_allclose(grad_x, [-2.0, 2.0 / 3.0, -2.5 / 1.5], rtol=1e-14)


# --------------------------------------------------------------------------- order statistics

STAT_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int8, np.uint8]


@pytest.mark.parametrize("dtype", STAT_DTYPES, ids=str)
def test_median(dtype):
    rng = np.random.default_rng(3)
    x = awkward(rng, (4, 6), dtype) if dtype in (np.float64, np.float32) else rng.integers(0, 9, (4, 6)).astype(dtype)
    for f in (lambda x: np.median(x), lambda x: np.median(x, axis=1, keepdims=True), lambda x: np.median(x, axis=0),
              lambda x: np.median(x[:, :5], axis=(0, 1))):
        got, want = run_both(f, x)
        same(got, want)


METHODS = ["inverted_cdf", "averaged_inverted_cdf", "closest_observation", "interpolated_inverted_cdf", "hazen",
           "weibull", "linear", "median_unbiased", "normal_unbiased", "lower", "higher", "midpoint", "nearest"]


@pytest.mark.parametrize("method", METHODS)
def test_quantile_and_percentile_every_method(method):
    rng = np.random.default_rng(4)
    for x in (rng.standard_normal((3, 7)), rng.integers(-5, 5, (3, 7)), rng.standard_normal(8).astype(np.float32)):
        for f in (lambda x: np.quantile(x, [0.0, 0.1, 0.5, 0.93, 1.0], axis=-1, method=method),
                  lambda x: np.percentile(x, 37.5, method=method),
                  lambda x: np.quantile(x, np.array([[0.2], [0.7]]), axis=0, method=method, keepdims=True)):
            got, want = run_both(f, x)
            same(got, want)


def test_quantile_of_slices_with_nan_is_nan():
    x = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]])
    got, want = run_both(lambda x: np.quantile(x, [0.25, 0.5], axis=1), x)
    same(got, want)


def test_quantile_refusals():
    with pytest.raises(UnsupportedOperationError, match="weights"):
        jitgrad.jit(lambda x: np.quantile(x, 0.5, weights=x, method="inverted_cdf"))(np.ones(3))
    with pytest.raises(UnsupportedOperationError, match="trace time"):
        jitgrad.jit(lambda x, q: np.quantile(x, q))(np.ones(3), 0.5)
    with pytest.raises(ValueError, match="range"):
        jitgrad.jit(lambda x: np.percentile(x, 150))(np.ones(3))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64])
def test_nan_ignoring_order_statistics(dtype):
    x = np.array([[1.0, np.nan, 3.0, 2.0], [np.nan, np.nan, np.nan, np.nan], [4.0, -1.0, 0.5, 7.0],
                  [np.nan, 2.0, np.nan, np.nan]])
    if np.dtype(dtype).kind == "i":
        x = np.nan_to_num(x, nan=3.0)
    x = x.astype(dtype)
    for f in (lambda x: np.nanmedian(x, axis=1), lambda x: np.nanmedian(x[2:]),
              lambda x: np.nanquantile(x, [0.0, 0.3, 1.0], axis=1), lambda x: np.nanpercentile(x, 62.5, axis=1),
              lambda x: np.nanquantile(x, 0.5, axis=1, keepdims=True)):
        _same_or_refused_as_data_dependent(f, x)


def _same_or_refused_as_data_dependent(f, x):
    """NumPy's NaN-ignoring quantiles take the dtype of the first row's result: where an
    all-NaN first row changes it, jitgrad refuses (docs/semantics-dtypes.md)."""
    first_row_nan = x.copy()
    if np.dtype(x.dtype).kind == "f":
        first_row_nan[0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        depends = np.asarray(f(x)).dtype != np.asarray(f(first_row_nan)).dtype
    if depends:
        with pytest.raises(DTypeError, match="depends on the data"):
            jitgrad.jit(f)(x)
    else:
        got, want = run_both(f, x)
        same(got, want)


@pytest.mark.parametrize("method", METHODS)
def test_nan_ignoring_quantiles_every_method(method):
    x = np.array([[1.0, np.nan, 3.0, 2.0, 9.0], [np.nan] * 5, [4.0, -1.0, 0.5, 7.0, np.inf],
                  [np.nan, 2.0, np.nan, np.nan, 1.0]])
    for data in (x, x.astype(np.float32)):
        for f in (lambda x: np.nanquantile(x, [0.0, 0.3, 0.5, 1.0], axis=1, method=method),
                  lambda x: np.nanpercentile(x, 62.5, axis=1, method=method)):
            _same_or_refused_as_data_dependent(f, data)


def test_median_and_percentile_gradients():
    x = np.array([3.0, 1.0, 2.0, 5.0])
    np.testing.assert_array_equal(jitgrad.grad(lambda x: np.median(x))(x), [0.5, 0.0, 0.5, 0.0])
    np.testing.assert_allclose(jitgrad.grad(lambda x: np.percentile(x, 30))(x), [0.0, 0.1, 0.9, 0.0], rtol=1e-12)
    np.testing.assert_allclose(jitgrad.grad(lambda x: np.nanmedian(x))(np.array([3.0, np.nan, 1.0, 2.0])),
                               [0.0, 0.0, 0.0, 1.0])


# --------------------------------------------------------------------------- data-dependent sizes

def test_nonzero_argwhere_unique_need_a_static_size():
    for f, name in ((np.nonzero, "nonzero"), (np.argwhere, "argwhere"), (np.unique, "unique")):
        with pytest.raises(UnsupportedOperationError, match=f"jitgrad.tracing.sized.{name}"):
            jitgrad.jit(lambda x: f(x))(np.ones(3))


def test_sized_nonzero_and_argwhere():
    x = np.array([[0, 3, 0, 1], [2, 0, 0, -1]])
    rows, cols = jitgrad.jit(lambda x: sized.nonzero(x, size=6))(x)
    want = np.nonzero(x)
    np.testing.assert_array_equal(rows, np.concatenate([want[0], [0, 0]]))
    np.testing.assert_array_equal(cols, np.concatenate([want[1], [0, 0]]))
    rows, cols = jitgrad.jit(lambda x: sized.nonzero(x, size=2))(x)
    np.testing.assert_array_equal(rows, want[0][:2])
    np.testing.assert_array_equal(cols, want[1][:2])
    got = jitgrad.jit(lambda x: sized.argwhere(x, size=5, fill_value=-1))(x)
    np.testing.assert_array_equal(got, np.concatenate([np.argwhere(x), [[-1, -1]]]))


def test_sized_unique_with_index_inverse_and_counts():
    x = np.array([3.0, np.nan, 1.0, 3.0, 7.0, np.nan, 2.0])
    values, index, inverse, counts = jitgrad.jit(
        lambda x: sized.unique(x, return_index=True, return_inverse=True, return_counts=True, size=7))(x)
    w_values, w_index, w_inverse, w_counts = np.unique(x, return_index=True, return_inverse=True, return_counts=True)
    k = len(w_values)
    np.testing.assert_array_equal(values[:k], w_values)
    np.testing.assert_array_equal(values[k:], np.full(7 - k, w_values[0]))
    np.testing.assert_array_equal(index[:k], w_index)
    np.testing.assert_array_equal(inverse, w_inverse)
    np.testing.assert_array_equal(counts[:k], w_counts)
    np.testing.assert_array_equal(counts[k:], 0)
    small = jitgrad.jit(lambda x: sized.unique(x, size=2, fill_value=-5.0))(x)
    np.testing.assert_array_equal(small, w_values[:2])
    ints = np.array([[2, 2], [0, 5]])
    np.testing.assert_array_equal(jitgrad.jit(lambda x: sized.unique(x, size=4, fill_value=-1))(ints), [0, 2, 5, -1])


def test_isin():
    element = np.array([[1.0, np.nan, -0.0], [2.0, 5.0, 7.0]])
    tests = np.array([np.nan, 0.0, 1.0, 7.0, 7.0])
    for f in (lambda e, t: np.isin(e, t), lambda e, t: np.isin(e, t, invert=True), lambda e, t: np.isin(e, t[:0]),
              lambda e, t: np.isin(e[0].astype(np.int64), t.astype(np.int8)), lambda e, t: np.isin(7.0, t)):
        with np.errstate(invalid="ignore"):
            got, want = run_both(f, element, tests)
        same(got, want)


def test_sized_flatnonzero_and_set_operations_refused():
    x = np.array([[0, 1], [2, 0]])
    np.testing.assert_array_equal(jitgrad.jit(lambda x: sized.flatnonzero(x, size=4))(x), [1, 2, 0, 0])
    with pytest.raises(UnsupportedOperationError, match="sized.flatnonzero"):
        jitgrad.jit(lambda x: np.flatnonzero(x))(x)
    with pytest.raises(UnsupportedOperationError, match="sized.unique"):
        jitgrad.jit(lambda x: np.unique_counts(x))(x)
    with pytest.raises(UnsupportedOperationError, match="np.isin"):
        jitgrad.jit(lambda x: np.intersect1d(x, x))(x)
