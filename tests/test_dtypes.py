"""NumPy's dtype semantics, checked against NumPy itself: every integer width with
wrap-around, bitwise operations, // and % sign rules, conversions, float16/bfloat16
rounding after every operation, NEP 50 weak Python scalars passed as arguments, and the
ndarray subclasses jitgrad refuses. Values are compared exactly (bit for bit, NaN equal
to NaN) and dtypes must be identical."""
from __future__ import annotations

import itertools
import warnings

import ml_dtypes
import numpy as np
import pytest

import jitgrad
from jitgrad.errors import ArgumentError, DTypeError
from jitgrad.ir import DType, parse_type

BF16 = np.dtype(ml_dtypes.bfloat16)
INTEGERS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
FLOATS = [np.float16, BF16, np.float32, np.float64]


def numpy_result(fn, *args):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args)


def assert_same(actual, expected, what=""):
    """Identical dtype and shape, and bit-identical values (NaNs equal)."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), what
        for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{what}[{k}]")
        return
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, NumPy {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, NumPy {expected.shape}"
    if expected.dtype.kind == "f" or expected.dtype == BF16:
        a, e = actual.astype(np.float64), expected.astype(np.float64)
        same = (a == e) & (np.signbit(a) == np.signbit(e)) | np.isnan(a) & np.isnan(e)
        assert same.all(), f"{what}: {actual} != NumPy {expected}"
    else:
        assert np.array_equal(actual, expected), f"{what}: {actual} != NumPy {expected}"


def check(fn, *args):
    assert_same(jitgrad.jit(fn)(*args), numpy_result(fn, *args), getattr(fn, "__name__", "fn"))


def edge_values(dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    values = [0, 1, 2, 3, 7, 100, info.max, info.max - 1, info.min, info.min + 1]
    if info.min < 0:
        values += [-1, -2, -3, -7, -100]
    return np.array(values, dtype=dtype)


# --------------------------------------------------------------------------- the reported cases

def test_reported_cases_give_numpys_answers():
    check(lambda a, b: a & b, np.array([6, 3]), np.array([3, 5]))
    check(lambda u: u + u, np.array([200, 250], np.uint8))
    check(lambda v: v.astype(np.uint8), np.array([300, -1]))
    check(lambda x, s: x * s, np.ones(2, np.float32), 2.0)
    check(lambda v: v ** 2.0, np.array([1, 2]))


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("make", [lambda: np.ma.masked_array([1., 100.], mask=[0, 1]),
                                  lambda: np.matrix([[1., 2.], [3., 4.]])], ids=["masked", "matrix"])
def test_subclasses_that_change_meaning_are_refused(make):
    with pytest.raises(ArgumentError, match="masked arrays|numpy.matrix"):
        jitgrad.jit(np.sum)(make())
    with pytest.raises(ArgumentError):
        jitgrad.grad(lambda x: np.sum(x * x))(make())


def test_plain_ndarray_subclasses_are_traced_as_arrays():
    class Tagged(np.ndarray):
        pass
    x = np.arange(3.0).view(Tagged)
    assert_same(jitgrad.jit(lambda v: v * 2)(x), np.asarray(x) * 2)


# --------------------------------------------------------------------------- integers

def integer_ops(a, b):
    return (a + b, a - b, a * b, -a, a // b, a % b, np.fmod(a, b), np.divmod(a, b)[0],
            a & b, a | b, a ^ b, ~a, np.maximum(a, b), np.minimum(a, b), abs(a), np.sign(a),
            a < b, a <= b, a == b, a != b, a > b, a >= b, a * 3, a + 1, 2 - a, np.reciprocal(a),
            np.square(a), a ** 3, np.sum(a), np.max(a), np.min(a), a / b, np.mean(a % 100))


@pytest.mark.parametrize("dtype", INTEGERS, ids=lambda d: np.dtype(d).name)
def test_integer_arithmetic_wraps_and_divides_as_numpy(dtype):
    values = edge_values(dtype)
    a, b = (np.array(p, dtype=dtype) for p in zip(*itertools.product(values, values)))
    check(integer_ops, a, b)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint16, np.uint64], ids=lambda d: np.dtype(d).name)
def test_shifts_including_counts_out_of_range(dtype):
    bits = 8 * np.dtype(dtype).itemsize
    a = np.array([1, 5, 100, np.iinfo(dtype).max, np.iinfo(dtype).min] * 6, dtype=dtype)
    counts = [0, 1, bits - 1, bits, bits + 3, 2]
    if np.iinfo(dtype).min < 0:
        counts[-1] = -1
    s = np.repeat(np.array(counts), 5).astype(dtype)
    check(lambda a, s: (a << s, a >> s, np.left_shift(a, s), np.right_shift(a, s), a << 1, a >> 1), a, s)


def test_integer_power_of_arrays_wraps():
    base = np.array([2, 3, -3, 7, 0, 1, -1], np.int8)
    exponent = np.array([7, 5, 3, 2, 0, 100, 3], np.int8)
    check(lambda a, b: (a ** b, np.power(a, b)), base, exponent)
    check(lambda a, b: a ** b, base.astype(np.uint32), exponent.astype(np.uint32))


def test_integer_to_negative_static_power_is_an_error():
    with pytest.raises(DTypeError, match="negative integer powers"):
        jitgrad.jit(lambda a: a ** -1)(np.array([1, 2]))


def test_negative_static_power_of_an_empty_integer_array_is_empty():
    check(lambda a: a ** -2, np.zeros((2, 0), np.int16))


def test_clip_as_numpy_for_narrow_and_integer_dtypes():
    b = np.array([-1.17188, 0.0849609, 2.29688], BF16)
    u = np.array([1, 2, 200], np.uint8)
    check(lambda b, u: (np.clip(b, 0.0, 1.0), np.clip(u, -1, 300), np.clip(u, 2, 100), b.clip(0.5)), b, u)


def test_products_take_python_scalars_as_arrays():
    """np.dot/inner/outer/tensordot convert operands with np.asarray: a Python scalar there
    is a strong float64/int64, unlike in ufuncs."""
    x = np.array([[2.5, -0.125], [3.25, 1.5]], np.float16)
    u = np.array([66, 1, 33], np.uint64)
    check(lambda x, u, s: (np.dot(7, x), np.inner(2**40, u), np.outer(2.0, x), np.dot(s, x),
                           np.tensordot(x, 2.0, axes=0)), x, u, 2.0)


def test_bool_arithmetic_and_logic_as_numpy():
    p = np.array([True, True, False, False])
    q = np.array([True, False, True, False])
    check(lambda p, q: (p + q, p * q, p & q, p | q, p ^ q, ~p, np.maximum(p, q), np.minimum(p, q),
                        p + 1, p * 2.5, np.sum(p), p == q, p < q, abs(p), np.max(p), np.min(q)), p, q)
    check(lambda p, q: (p ** 2, p ** 3, np.power(p, 2), np.argmax(p), np.argmin(q)), p, q)   # ** 2 is np.square
    with pytest.raises(DTypeError, match="subtract"):
        jitgrad.jit(lambda p, q: p - q)(p, q)


def test_int64_against_uint64_compares_exactly():
    a = np.array([-1, 0, 2**62, -2**63, 5], np.int64)
    b = np.array([2**64 - 1, 0, 2**62, 0, 2**63], np.uint64)
    check(lambda a, b: (a < b, a <= b, a == b, a != b, a > b, a >= b, b < a, b >= a), a, b)


def test_out_of_range_python_int_is_an_error_as_in_numpy():
    with pytest.raises(DTypeError, match="out of bounds"):
        jitgrad.jit(lambda u: u + 300)(np.array([1, 2], np.uint8))


# --------------------------------------------------------------------------- promotion and conversion

COMPLEX = [np.dtype(np.complex64), np.dtype(np.complex128)]
ALL_DTYPES = [np.dtype(np.bool_)] + [np.dtype(d) for d in INTEGERS] + [np.dtype(d) for d in FLOATS] + COMPLEX


def sample(dtype) -> np.ndarray:
    if dtype == np.bool_:
        return np.array([True, False, True])
    if dtype.kind in "iu":
        return np.array([1, 100, np.iinfo(dtype).max], dtype=dtype)
    if dtype.kind == "c":
        return np.array([1.5 - 0.5j, -2.25 + 3j, 100.0j], dtype=dtype)
    return np.array([1.5, -2.25, 100.0], dtype=dtype)


def test_list_of_dtypes_is_numpys():
    assert [d.numpy for d in DType] == ALL_DTYPES
    for d in DType:
        assert DType.from_numpy(d.numpy) is d
        assert parse_type(f"{d}[2,3]").dtype is d


def test_binary_promotion_of_every_pair_of_dtypes():
    pairs = []
    for x, y in itertools.product(ALL_DTYPES, ALL_DTYPES):
        try:
            np.result_type(x, y)
        except TypeError:
            continue
        pairs.append((x, y))

    def mixed(*arrays):
        by_dtype = dict(zip(ALL_DTYPES, arrays, strict=True))
        # maximum keeps bool bool (or), and complex promotes through add (jitgrad has no complex maximum)
        return tuple(np.add(by_dtype[x], by_dtype[y]) if "c" in (x.kind, y.kind) else np.maximum(by_dtype[x], by_dtype[y])
                     for x, y in pairs)
    check(mixed, *[sample(d) for d in ALL_DTYPES])


def test_astype_between_every_pair_of_dtypes():
    values = {d: sample(d) for d in ALL_DTYPES}
    values[np.dtype(np.float64)] = np.array([1.75, -2.5, 300.9, 0.0, -0.0, 65504.0, 1e300])
    values[np.dtype(np.int64)] = np.array([300, -1, 2**40 + 7, -2**63, 2**31])

    def casts(*arrays):
        return tuple(a.astype(t) for a in arrays for t in ALL_DTYPES)
    jitted = jitgrad.jit(casts)(*values.values())
    expected = numpy_result(casts, *values.values())
    for k, (a, e) in enumerate(zip(jitted, expected, strict=True)):
        source = ALL_DTYPES[k // len(ALL_DTYPES)]
        target = ALL_DTYPES[k % len(ALL_DTYPES)]
        if source.kind == "f" or source == BF16:
            # float -> integer is defined for values the integer can hold
            if target.kind in "iu":
                info = np.iinfo(target)
                src = values[source].astype(np.float64)
                keep = (src > info.min - 1) & (src < info.max + 1) & (src > -1 if target.kind == "u" else True)
                a, e = np.asarray(a)[keep], np.asarray(e)[keep]
        assert_same(a, e, f"{source} -> {target}")


def test_float_to_integer_out_of_range_never_poison():
    """Out-of-range and NaN conversions are defined (x86's C casts): the same answer
    fused or not, and the documented values for int32/int64."""
    x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9])
    i64, i32 = jitgrad.jit(lambda v: (v.astype(np.int64), v.astype(np.int32)))(x)
    assert (i64[:-1] == np.iinfo(np.int64).min).all() and i64[-1] == 3_000_000_000
    assert (i32 == np.iinfo(np.int32).min).all()


# --------------------------------------------------------------------------- float16 and bfloat16

def narrow_ops(x, y):
    return (x + y, x * y - x, x / y, (x + y) * (x - y), -x, abs(x), np.maximum(x, y), x < y,
            x * 3, x + 0.1, np.sqrt(abs(x)), x // y, x % y, np.square(x), x ** 2, np.sign(x),
            x.astype(np.float32), x.astype(np.int32), np.where(x > y, x, y), np.logaddexp(x, y))


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
def test_narrow_floats_round_after_every_operation(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(64) * 10).astype(dtype)
    y = (rng.standard_normal(64) * 10 + 0.5).astype(dtype)
    check(narrow_ops, x, y)


def test_float16_transcendentals_within_one_ulp():
    x = np.linspace(-4, 4, 101).astype(np.float16)
    fns = (np.exp, np.sin, np.cos, np.tanh, np.log1p, np.expm1)
    actual = jitgrad.jit(lambda v: tuple(f(abs(v) if f is np.log1p else v) for f in fns))(x)
    for f, a in zip(fns, actual, strict=True):
        e = f(np.abs(x) if f is np.log1p else x)
        assert a.dtype == np.float16
        ulps = np.abs(a.view(np.int16).astype(np.int64) - e.view(np.int16).astype(np.int64))
        assert ulps.max() <= 1, f.__name__


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
def test_gradients_through_narrow_floats(dtype):
    x = np.linspace(-1.5, 1.5, 7).astype(dtype)

    def loss(v):
        return np.sum(np.tanh(v) * v + v * v)
    g = jitgrad.grad(loss)(x)
    assert g.dtype == np.dtype(dtype)
    reference = jitgrad.grad(loss)(x.astype(np.float64))
    eps = float(np.finfo(np.float16).eps) if dtype == np.float16 else 2.0 ** -7
    np.testing.assert_allclose(g.astype(np.float64), reference, atol=8 * eps * np.abs(reference).max())


def test_float_floor_divide_and_remainder_with_special_values():
    a = np.array([7.5, -7.5, 7.5, -7.5, 0.0, -0.0, np.inf, 1.0, np.nan, 5.0, 1e300, -3.0])
    b = np.array([2.0, 2.0, -2.0, -2.0, 3.0, 3.0, 2.0, np.inf, 1.0, 0.0, 1e-300, -0.0])
    fn = lambda a, b: (a // b, a % b, np.fmod(a, b), np.floor_divide(a, b), np.remainder(a, b),
                       np.divmod(a, b)[1])
    for dtype in (np.float64, np.float32, np.float16):
        check(fn, a.astype(dtype), b.astype(dtype))


# --------------------------------------------------------------------------- weak scalars (NEP 50)

def test_python_scalars_passed_as_arguments_are_weak():
    x32 = np.ones(3, np.float32)
    i8 = np.array([1, 2, 3], np.int8)
    check(lambda x, s: x * s, x32, 2.0)
    check(lambda x, s: x + s, i8, 3)
    check(lambda x, s: x * s, i8, 2.5)
    check(lambda x, s: (x * (s * 2), x + -s, x * abs(s)), x32, 1.5)     # Python operators keep it weak
    check(lambda x, s: x * np.sqrt(s), x32, 4.0)                          # np.sqrt(float) is float64
    check(lambda x, s: x + s, np.array([1.0, 2.0], np.float16), True)
    check(lambda s: s * 2, 3.0)
    check(lambda x, p: (np.power(x, p), x ** p, p ** x), np.array([1.5, 2.0]), 2.5)   # a traced exponent


def test_python_operators_on_weak_scalars_follow_python():
    """True + True is 2 and ~True is -2 in Python, whatever NumPy does with bool arrays."""
    x = np.ones(2, np.int8)
    check(lambda x, s: (~s, s + s, -s, abs(s), s & s, s * 2.5, x + (s + s), s == s, np.maximum(s, True)),
          x, True)


def test_python_complex_results_of_weak_scalars_stay_weak():
    """`1j * s` for a Python number `s` is a Python complex, and its `.real`, `.imag` and
    conjugate are Python numbers: all weak, so a float16 array keeps complex64/float16."""
    x16 = np.array([1.0, 2.0], np.float16)
    for s in (3, 2.5, True, 1 + 2j):
        check(lambda x, s: (x - 1j * s, np.abs(x - 1j * s) + np.angle(s + 1j * x),
                            (s * 1j + 2.5) * x, (1j * s) ** 2 * x, abs(1j * s) * x), x16, s)
        check(lambda x, s: ((1j * s).real * x, (1j * s).imag * x, s.real * x, s.imag * x,
                            (s * 1j).conjugate() * x, s.conjugate() * x), x16, s)


def test_python_ints_compare_by_value_as_in_numpy():
    x = np.array([0, 5, 65535], np.uint16)
    check(lambda x: (x == -1, x != -1, x < -1, x > -1, -1 < x, 70000 > x, x >= 70000, x <= 2**70), x)
    check(lambda x, s: (s > x, x == s, x >= s), x, -1)                 # a Python int argument
    check(lambda x: np.where(x > 3, x, -1), x)                          # np.where casts unsafely
    check(lambda x: (np.choose((x > 3).astype(np.int8), [x, -1]),        # so does np.choose
                     np.choose((x > 3).astype(np.int8), [x.astype(np.int32), 2**40]),
                     np.choose((x > 3).astype(np.int8), [x, 2.5])), x)
    check(lambda x: (np.concatenate([-2, x], axis=None), np.stack([x[0], 2.5]),
                     np.concatenate([x.astype(np.float32)[:1], 2.5], axis=None)), x)
    check(lambda x, s: (np.stack([3, x[0].astype(np.int8)]), np.stack([s, x[0].astype(np.float32)])), x, 2.5)


def test_python_int_argument_out_of_range_is_an_error_as_in_numpy():
    f = jitgrad.jit(lambda x, s: x + s)
    u8 = np.array([1, 2], np.uint8)
    assert_same(f(u8, 200), u8 + 200)
    for s in (300, -1):
        with pytest.raises(DTypeError, match="out of bounds for uint8"):
            f(u8, s)
    assert_same(f(np.array([1, 2]), -1), np.array([1, 2]) - 1)
    check(lambda x, s: np.where(x > 1, x, s), u8, -1)                  # np.where casts unsafely


def test_weak_and_strong_scalars_compile_separately():
    f = jitgrad.jit(lambda x, s: x * s)
    x32 = np.ones(2, np.float32)
    for _ in range(3):                        # the native call path is built for this signature
        assert f(x32, 2.0).dtype == np.float32
    assert f(x32, np.float64(2.0)).dtype == np.float64
    assert f(x32, np.array(2.0)).dtype == np.float64
    assert f(x32, 2.0).dtype == np.float32


def test_gradient_with_respect_to_a_python_float():
    g = jitgrad.grad(lambda s, x: np.sum(x * s * s), argnums=0)(1.5, np.ones(3, np.float32))
    assert float(g) == pytest.approx(9.0)
    assert jitgrad.grad(lambda s: s * s)(3.0) == pytest.approx(6.0)


# --------------------------------------------------------------------------- IR text

def test_new_dtypes_print_and_parse():
    from jitgrad.ir import parse_function, print_function
    lowered = jitgrad.jit(lambda a, b, c: (a + 1, b * 2, c & 3)).lower(
        np.zeros(3, np.uint8), np.zeros(2, BF16), np.zeros(2, np.int16))
    text = lowered.as_text("traced")
    assert "u8[3]" in text and "bf16[2]" in text and "i16[2]" in text
    assert print_function(parse_function(text)) == text


# --------------------------------------------------------------------------- contractions

@pytest.mark.parametrize("dtype", [np.int8, np.uint32, np.int64, np.bool_, np.float16, BF16],
                         ids=["i8", "u32", "i64", "bool", "f16", "bf16"])
def test_matrix_products_of_every_kind_of_dtype(dtype):
    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind in "iu":
        a, b = (rng.integers(0, 100, size=s).astype(dtype) for s in [(3, 8), (8, 2)])   # wraps in int8
    elif dtype == np.bool_:
        a, b = rng.random((3, 8)) > 0.7, rng.random((8, 2)) > 0.7
    else:
        a = np.array([[256, 1, 1, 1, 1, 1, 1, 1]] * 3, dtype)    # float32 accumulation: 263, not 256
        b = np.ones((8, 2), dtype)
    check(lambda a, b: (a @ b, np.dot(a, b), np.matmul(a[0], b), np.outer(a[0], b[:, 0]), np.inner(a[0, 0], b),
                        np.dot(a[0, 0], b)), a, b)


def test_repeated_calls_with_every_dtype_take_the_native_path_or_fall_back():
    for dtype in ALL_DTYPES:
        f = jitgrad.jit(lambda x: x + x)
        x = sample(dtype)
        for _ in range(4):
            assert_same(f(x), numpy_result(lambda v: v + v, x), str(dtype))


def test_einsum_of_bool_and_refusal_of_narrow_floats():
    bo = np.array([[True, False, True, False]] * 2)
    check(lambda b: np.einsum("ij,kj->ik", b, b), bo)
    for dtype in (np.float16, BF16):
        with pytest.raises(jitgrad.UnsupportedOperationError, match="einsum"):
            jitgrad.jit(lambda a: np.einsum("ij,kj->ik", a, a))(bo.astype(dtype))

