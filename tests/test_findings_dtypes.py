"""Dtype and refusal findings of the differential fuzzer, each checked on a grid of dtypes
against NumPy: np.isclose/np.allclose with a Python bool, np.searchsorted/np.digitize
across dtypes without a common dtype, np.nanquantile/np.nanpercentile whose NumPy dtype
depends on the data. Where NumPy's answer depends on more than the dtypes, jitgrad must
raise a DTypeError; everywhere else it must give NumPy's values and dtype exactly."""
import warnings

import ml_dtypes
import numpy as np
import pytest

import jitgrad
from jitgrad.errors import DTypeError

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(t) for t in (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
                                np.uint64, np.float16, BF16, np.float32, np.float64)]
PYTHON_SCALARS = [True, False, 3, -2, 2.5]


def _is_float(dtype) -> bool:
    return dtype.kind == "f" or dtype == BF16


def _values(dtype, n, seed, nan=False):
    """n values of `dtype`: zeros, ones, dtype-range integers and, for floats, inf and NaN."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=n) * 40, [0.0, 1.0, 127.0, 255.0, 300.0]])
    if dtype.kind == "u" or dtype.kind == "b":
        x = np.abs(x)
    x = x.astype(dtype)
    if nan and _is_float(dtype):
        x[:2] = [np.nan, np.inf]
    return x


def _same(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual.astype(np.float64), expected.astype(np.float64))


# --------------------------------------------------------------------------- isclose / allclose

def test_isclose_with_a_python_bool_is_numpy():
    """NumPy turns a Python int `b`, bool included, into a float: isclose(bool array, False)
    is |x - 0.0| <= ..., not a bool subtraction (fuzzer seed 20261208 program 8087)."""
    x = np.array([True, False, True])
    for b in (False, True):
        _same(jitgrad.jit(lambda x, b=b: np.isclose(x, b))(x), np.isclose(x, b))
        _same(jitgrad.jit(lambda x, b=b: np.allclose(x, b))(x), np.allclose(x, b))
        _same(jitgrad.jit(lambda x, b=b: np.isclose(np.abs(x), b, equal_nan=True))(x), np.isclose(x, b, equal_nan=True))


@pytest.mark.parametrize("x_dtype", DTYPES, ids=str)
def test_isclose_grid(x_dtype):
    """isclose(x, y) for y of every dtype, every Python scalar kind, and the swapped order:
    one compiled function per x dtype returns them all."""
    x = _values(x_dtype, 7, 1, nan=True)
    ys = [_values(d, 7, 1, nan=True) for d in DTYPES]
    for y in ys:
        y[5:] = x[5:].astype(y.dtype)          # some pairs equal in both dtypes

    def program(x, *ys):
        arrays = [np.isclose(x, y) for y in ys] + [np.isclose(y, x, rtol=0.5, atol=1, equal_nan=True) for y in ys]
        scalars = [np.isclose(x, s) for s in PYTHON_SCALARS] + [np.isclose(s, x) for s in PYTHON_SCALARS]
        return arrays + scalars + [np.allclose(x, x, equal_nan=True)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = program(x, *ys)
    for got, want in zip(jitgrad.jit(program)(x, *ys), expected, strict=True):
        _same(got, want)


def test_isclose_python_scalar_arguments():
    """A Python bool/int/float passed as an argument is the same weak scalar."""
    x = np.array([0.0, 1.0, 3.0, np.nan], np.float32)
    for s in PYTHON_SCALARS:
        _same(jitgrad.jit(lambda x, s: np.isclose(x, s))(x, s), np.isclose(x, s))


# --------------------------------------------------------------------------- searchsorted / digitize

def _search_refused(a_dtype, v_dtype, side) -> bool:
    """Where NumPy's searchsorted depends on its search path: comparisons that put NaN
    neither below nor above anything (Python objects where there is no common dtype;
    ml_dtypes' bfloat16 compare), except side='left' with integer values (never NaN), of at
    most 32 bits when there is no common dtype."""
    try:
        common = np.result_type(a_dtype, v_dtype)
    except (TypeError, np.exceptions.DTypePromotionError):
        common = None
    if common is not None and common != BF16:
        return False
    return not (side == "left" and v_dtype.kind in "biu" and (common is not None or v_dtype.itemsize <= 4))


def _sorted(dtype, seed, nan):
    x = _values(dtype, 9, seed, nan)
    return np.sort(x.astype(np.float64)).astype(dtype) if _is_float(dtype) else np.sort(x)


def test_searchsorted_bfloat16_table_uint16_values_is_numpy():
    """bfloat16 and uint16 have no common dtype: NumPy compares them as Python objects,
    exactly (fuzzer seed 20261208 program 6603, where jitgrad raised 'no common dtype')."""
    a = np.sort(np.array([-0.0307617, 0.119141, 0.114746, 256, 258, np.nan], BF16))
    v = np.array([[79], [0], [56], [257], [258], [65535]], np.uint16)
    _same(jitgrad.jit(lambda a, v: np.searchsorted(a, v, side="left"))(a, v), np.searchsorted(a, v, side="left"))


def test_searchsorted_nan_makes_numpy_depend_on_its_search_path():
    """Why the refusals: with bfloat16 NaN values NumPy's answer for a value depends on the
    values searched before it, and with a NaN in the table side='right' jumps past it."""
    table = np.array([1, 2, 3], np.int8)
    assert list(np.searchsorted(table, np.array([np.nan, 5], BF16))) == [0, 1]       # 5 alone gives 3
    assert list(np.searchsorted(table, np.array([5], BF16))) == [3]
    assert list(np.searchsorted(np.array([1, np.nan], BF16), np.array([5], np.int16), side="right")) == [2]
    with pytest.raises(DTypeError, match=r"searchsorted.*search path"):
        jitgrad.jit(lambda t, v: np.searchsorted(t, v))(table, np.array([np.nan, 5], BF16))
    with pytest.raises(DTypeError, match=r"searchsorted.*search path"):
        jitgrad.jit(lambda t, v: np.searchsorted(t, v, side="right"))(np.array([1, np.nan], BF16),
                                                                      np.array([5], np.int16))


@pytest.mark.parametrize("a_dtype", DTYPES, ids=str)
def test_searchsorted_and_digitize_grid(a_dtype):
    """Every pair of dtypes and both sides: NumPy's answer, or a DTypeError exactly where
    NumPy's depends on its search path. One compiled function per table dtype."""
    nan = True
    table = _sorted(a_dtype, 2, nan)
    cases = [(v_dtype, side) for v_dtype in DTYPES for side in ("left", "right")]
    allowed = [(d, side) for d, side in cases if not _search_refused(a_dtype, d, side)]
    needles = {d: _values(d, 6, 3, nan).reshape(-1, 1) for d in DTYPES}

    def program(a, *vs):
        return [np.searchsorted(a, v, side=side) for v, (_, side) in zip(vs, allowed, strict=True)]

    vs = [needles[d] for d, _ in allowed]
    for got, want in zip(jitgrad.jit(program)(table, *vs), program(table, *vs), strict=True):
        _same(got, want)
    for v_dtype, side in cases:
        if (v_dtype, side) in allowed:
            continue
        with pytest.raises(DTypeError, match="numpy.searchsorted of"):
            jitgrad.jit(lambda a, v, side=side: np.searchsorted(a, v, side=side))(table, needles[v_dtype])
    for scalar in (5, 300, -3, 2.5, True, 2**60):
        _same(jitgrad.jit(lambda a: np.searchsorted(a, scalar))(table), np.searchsorted(table, scalar))
    bins = np.unique(table.astype(np.float64)[np.isfinite(table.astype(np.float64))]).astype(a_dtype)
    for right in (False, True):
        x = needles[np.dtype(np.int16)]
        if _search_refused(a_dtype, x.dtype, "left" if right else "right"):
            with pytest.raises(DTypeError, match="numpy.searchsorted of"):
                jitgrad.jit(lambda x: np.digitize(x, bins, right=right))(x)
        else:
            _same(jitgrad.jit(lambda x: np.digitize(x, bins, right=right))(x), np.digitize(x, bins, right=right))


# --------------------------------------------------------------------------- nanquantile / nanpercentile

def test_nanquantile_bfloat16_is_refused():
    """NumPy's dtype here depends on the data: float64 where the first row holds a number,
    bfloat16 where it is all NaN (fuzzer seed 1202 program 88: jitgrad gave float64)."""
    x = np.array([[np.nan, np.nan], [-0.341797, 4.25]], BF16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # All-NaN slice encountered
        assert np.nanquantile(x, [0.25, 0.5], axis=-1).dtype == BF16
    assert np.nanquantile(x[::-1], [0.25, 0.5], axis=-1).dtype == np.float64
    with pytest.raises(DTypeError, match="depends on the data"):
        jitgrad.jit(lambda x: np.nanquantile(x, [0.25, 0.5], axis=-1))(x)


QUANTILE_CASES = [(q, method) for q in (0.3, [0.25, 0.5], np.float64(0.3)) for method in ("linear", "lower", "midpoint")]


@pytest.mark.parametrize("dtype", [np.dtype(t) for t in (np.float16, BF16, np.float32, np.float64, np.int16)], ids=str)
def test_nanquantile_grid(dtype):
    """Each q kind and method, rows with and without NaN, the first row all NaN or not:
    NumPy's values and dtype, or a DTypeError exactly where NumPy's dtype differs between
    those data."""
    rng = np.random.default_rng(4)
    base = (rng.normal(size=(3, 5)) * 5).astype(dtype)
    data = [base]
    if _is_float(dtype):
        some_nan, first_row_nan = base.copy(), base.copy()
        some_nan[1, 1] = np.nan
        first_row_nan[0] = np.nan
        data += [some_nan, first_row_nan]
    for fn, scale in ((np.nanquantile, 1), (np.nanpercentile, 100)):
        for q, method in QUANTILE_CASES:
            q = np.multiply(q, scale) if scale != 1 else q
            q = float(q) if isinstance(q, float) else q
            program = lambda x, q=q, method=method: fn(x, q, axis=1, method=method)   # noqa: E731
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                numpy_dtypes = {np.asarray(program(x)).dtype for x in data}
            if len(numpy_dtypes) > 1:
                with pytest.raises(DTypeError, match="depends on the data"):
                    jitgrad.jit(program)(data[0])
                continue
            compiled = jitgrad.jit(program)
            for x in data:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _same(compiled(x), program(x))


# --------------------------------------------------------------------------- nanmean of float16

def test_nanmean_float16_rounds_the_sum_then_divides_in_float64():
    """NumPy's nanmean with NaN present is np.sum (rounded to float16) divided by the count
    in float64, then rounded: not the float32 mean rounded once. Reductions along the
    contiguous last axis or all axes, where NumPy's float16 sum rounds once."""
    compiled = {axis: jitgrad.jit(lambda x, axis=axis: np.nanmean(x, axis=axis)) for axis in (None, 1)}
    for seed in range(8):
        rng = np.random.default_rng(seed)
        x = (rng.normal(size=(6, 9)) * 10 ** rng.uniform(-3, 3)).astype(np.float16)
        x[rng.random(x.shape) < 0.3] = np.nan
        for axis, f in compiled.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _same(f(x), np.nanmean(x, axis=axis))


# --------------------------------------------------------------------------- median / quantile of bfloat16

def test_median_and_quantiles_of_bfloat16_are_refused():
    """NumPy's median of bfloat16 depends on the order of the data when it holds NaN
    (its partition calls NaN equal to everything), so no compiled function can give it."""
    x = np.array([3, np.nan, 1, 2], BF16)
    assert np.isnan(np.median(x)) and np.median(x[[1, 0, 2, 3]]) == 1.5
    for f in (np.median, lambda x: np.quantile(x, 0.3), lambda x: np.percentile(x, [30, 40], method="lower")):
        with pytest.raises(DTypeError, match="partition"):
            jitgrad.jit(f)(x)
    x32 = x.astype(np.float32)
    _same(jitgrad.jit(np.median)(x32), np.median(x32))


# --------------------------------------------------------------------------- isin

ISIN_DTYPES = [np.dtype(t) for t in (np.bool_, np.int8, np.uint16, np.int64, np.uint64, np.float16, BF16, np.float32)]


@pytest.mark.parametrize("element_dtype", ISIN_DTYPES, ids=str)
def test_isin_grid(element_dtype):
    """NumPy's isin compares few test elements one by one with np.equal (whose loops take
    bfloat16 against uint16 or float16), and sorts the concatenation of many (which raises
    without a common dtype): jitgrad follows the method NumPy picks for the static sizes."""
    for n, k in ((40, 5), (4, 30)):          # NumPy's comparison loop, then its sorting method
        element = _values(element_dtype, n, 5, nan=True)[:n]
        tests = {d: _values(d, k, 6, nan=True)[:k] for d in ISIN_DTYPES}
        for d in ISIN_DTYPES:
            tests[d][:2] = element[2:4].astype(d)

        def numpy_runs(d):
            try:
                np.isin(element, tests[d])
                return True
            except (TypeError, np.exceptions.DTypePromotionError):
                return False

        runs = [d for d in ISIN_DTYPES if numpy_runs(d)]

        def program(x, *ts):
            return [np.isin(x, t) for t in ts] + [np.isin(x, t, invert=True) for t in ts]

        ts = [tests[d] for d in runs]
        for got, want in zip(jitgrad.jit(program)(element, *ts), program(element, *ts), strict=True):
            _same(got, want)
        for d in ISIN_DTYPES:
            if d not in runs:
                with pytest.raises(DTypeError, match="numpy.isin"):
                    jitgrad.jit(lambda x, t: np.isin(x, t))(element, tests[d])
