"""Regression tests for what the differential fuzzer (tests/fuzz.py) found: each compares
jitgrad with NumPy running the same code, values and dtypes."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import jitgrad
from jitgrad.errors import CutDerivativeError, JitgradError


def _same(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- Python scalars in array functions

INT8 = np.array(1, np.int8)
INT8_VECTOR = np.array([1, 2], np.int8)
FLOAT32 = np.array([1.5, 2.5], np.float32)


@pytest.mark.parametrize("fn, args", [
    (lambda a, b: np.stack([b, a]), (INT8, 3)),                       # argument: weak for ufuncs, not here
    (lambda a: np.stack([3, a]), (INT8,)),                            # literal
    (lambda a, b: np.stack([b, a]), (np.array(1.0, np.float32), 2.5)),
    (lambda a, b: np.concatenate([a, [b]]), (INT8_VECTOR, 3)),
    (lambda a, b: np.einsum("i,->i", a, b), (INT8_VECTOR, 3)),
    (lambda a, b: np.einsum("i,->i", a, b), (FLOAT32, 2.0)),
    (lambda a: np.einsum("i,->i", a, 2.0), (FLOAT32,)),
    (lambda a, b: np.outer(a, b), (INT8_VECTOR, 3)),
    (lambda a, b: np.inner(a, b), (INT8_VECTOR, 3)),
    (lambda a, b: np.tensordot(a, b, 0), (INT8_VECTOR, 3)),
    (lambda a, b: np.dot(a, b), (FLOAT32, 2.0)),
    (lambda a, b: np.where(a > 1, a, b), (INT8_VECTOR, 3)),           # where: weak, as NumPy
    (lambda a, b: a * b, (INT8_VECTOR, 3)),                           # ufuncs: weak
])
def test_python_scalars_in_array_functions_convert_as_numpy(fn, args):
    _same(jitgrad.jit(fn)(*args), fn(*args))


# --------------------------------------------------------------------------- pow

@pytest.mark.parametrize("dtype, scale", [(np.float64, 1.0), (np.float32, 0.25)])   # float32: no overflow
@pytest.mark.parametrize("base", [2.0 ** 40, 2.0 ** -40, 8.0, 0.125, 2.0 ** 30])
def test_pow_of_a_constant_power_of_two_is_accurate(base, dtype, scale):
    """A constant base 2^n must not become exp2(n * y), which loses |n y| ulps. NumPy's pow
    is within 1 ulp (float32: SIMD, a little more), jitgrad's libm/libmvec within 4."""
    y = (np.linspace(-10.3, -10.2, 3000) * scale).astype(dtype)
    got = jitgrad.jit(lambda y: np.power(base, y))(y)
    want = np.power(np.float64(base), y.astype(np.float64)).astype(dtype)   # rounded once from float64
    assert got.dtype == np.power(base, y).dtype
    ulps = np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    assert ulps.max() <= 4, ulps.max()
    one = jitgrad.jit(lambda y: np.power(base, y))(y[:1])     # the scalar call of the loop remainder
    assert abs(float(one[0]) - float(want[0])) <= 4 * float(np.spacing(want[0]))


def test_pow_still_calls_the_vector_library():
    import re
    y = np.linspace(1.0, 2.0, 64)
    text = jitgrad.jit(lambda x, y: np.power(x, y)).lower(y, y).as_text("llvm-opt")
    called = set(re.findall(r'call [^@]*@"?([\w.]+)', text))
    assert not called & {"llvm.exp2.f64", "exp2"}, called
    from jitgrad.backends.cpu.engine import VectorMath
    if VectorMath.available:                  # libmvec found: the loop calls its vector pow
        assert any(name.startswith("_ZGV") and name.endswith("_pow") for name in called), called


# --------------------------------------------------------------------------- hypot

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 4099])
def test_hypot_of_infinity_and_nan_is_infinity(dtype, size):
    a = np.array([np.inf, -np.inf, np.nan, np.nan, 3.0, np.nan, 3.0, -np.inf, 0.0], dtype)
    b = np.array([np.nan, np.nan, np.inf, -np.inf, np.nan, np.nan, 4.0, 5.0, -0.0], dtype)
    a, b = np.resize(a, max(size, 9))[:size], np.resize(b, max(size, 9))[:size]
    _same(jitgrad.jit(np.hypot)(a, b), np.hypot(a, b))


# --------------------------------------------------------------------------- tape item assignment

def test_item_assignment_of_a_tracked_value_names_the_cut_derivative():
    """NumPy converts the item with float() and replaces any error by its own ValueError
    when the object is indexable; the CutDerivativeError is its direct cause."""
    tape = jitgrad.GradientTape()
    with tape:
        x = tape.variable(np.array([2.0, 3.0]))
        y = np.zeros(2)
        with pytest.raises(ValueError) as caught:
            y[0] = x[0]
        assert isinstance(caught.value.__cause__, CutDerivativeError)
        assert "drop its derivative" in str(caught.value.__cause__)
        with pytest.raises(CutDerivativeError):
            y[:] = x                    # a slice goes through __array__: the error itself
    assert np.all(y == 0)


# --------------------------------------------------------------------------- refusals NumPy answers

@pytest.mark.parametrize("spec, a_shape, b_shape", [
    ("ij,jk->ik", (2, 1), (3, 4)),
    ("ij,jk->ik", (2, 3), (1, 4)),
    ("ij,jk", (2, 1), (3, 4)),
    ("ij,ij->i", (2, 1), (1, 3)),
    ("i,i->", (1,), (5,)),
    ("i,i->i", (0,), (1,)),
])
def test_einsum_broadcasts_size_one_axes(spec, a_shape, b_shape):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    np.testing.assert_allclose(jitgrad.jit(lambda a, b: np.einsum(spec, a, b))(a, b), np.einsum(spec, a, b),
                               rtol=1e-13, atol=1e-13)


def test_einsum_broadcast_gradient_sums_over_the_broadcast_axis():
    a, b = np.array([[2.0], [3.0]]), np.arange(12.0).reshape(3, 4)
    g = jitgrad.grad(lambda a: np.sum(np.einsum("ij,jk->ik", a, b)))(a)
    np.testing.assert_allclose(g, np.full((2, 1), b.sum()))


def test_einsum_still_refuses_mismatched_sizes():
    with pytest.raises(JitgradError, match="einsum: index 'j' has sizes 3 and 4"):
        jitgrad.jit(lambda a, b: np.einsum("ij,jk->ik", a, b))(np.ones((2, 3)), np.ones((4, 4)))


@pytest.mark.parametrize("other", [np.arange(3, dtype=np.int16), np.arange(3, dtype=np.int8), np.arange(3),
                                   np.array([True, False]), np.ones(2, np.float16), 3, 2.5])
def test_outer_of_bfloat16_follows_the_multiply_loop(other):
    b = np.array([1.5, -2.0], ml_dtypes.bfloat16)
    for fn in (lambda x, y: np.outer(x, y), lambda x, y: np.outer(y, x)):
        got, want = jitgrad.jit(fn)(b, other), fn(b, other)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


@pytest.mark.parametrize("fn", [np.sum, np.max, np.min])
@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("value", [np.array(1.5), np.array(3, np.int8), np.array(True)])
def test_ufunc_reduction_of_a_zero_d_array_over_axis_0(fn, axis, value):
    _same(jitgrad.jit(lambda x: fn(x, axis=axis))(value), fn(value, axis=axis))


@pytest.mark.parametrize("call", [lambda x: np.sum(x, axis=(0,)), lambda x: np.sum(x, axis=1),
                                  lambda x: np.mean(x, axis=0)])
def test_zero_d_axes_numpy_refuses_stay_refused(call):
    with pytest.raises(Exception):
        call(np.array(1.5))
    with pytest.raises(JitgradError, match="out of bounds"):
        jitgrad.jit(call)(np.array(1.5))


def test_pow_with_a_constant_exponent_compiles_in_a_vector_loop():
    """A constant exponent in every call of the pow wrapper once let LLVM specialize the
    wrapper and then abort on the vector variants' signature: run it in a subprocess."""
    import subprocess
    import sys
    code = ("import numpy as np, jitgrad\n"
            "for dt in (np.float32, np.float64):\n"
            "    x = np.linspace(0.5, 3.0, 1001).astype(dt)\n"
            "    for e in (-1.0, 0.5, 3.3):\n"
            "        r = jitgrad.jit(lambda x: x ** e)(x)\n"
            "        assert r.dtype == dt and np.allclose(r, x ** e, rtol=1e-6), (dt, e)\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("a, b", [(np.int8(-22), 3), (np.array([1, -2], np.int8), 3), (np.float32(2), 2.5)])
def test_kron_with_a_traced_python_scalar_is_not_weak(a, b):
    """np.kron calls np.asanyarray on both operands: a Python scalar argument is int64/float64."""
    _same(jitgrad.jit(np.kron)(a, b), np.kron(a, b))


@pytest.mark.parametrize("decimals", [-1, 1, 2, 3])
def test_round_of_bfloat16_with_decimals_stays_bfloat16(decimals):
    """NumPy writes each step of round into an array of the input's dtype: bfloat16 times a
    Python float is float32 and is rounded back to bfloat16 before rint and after the division."""
    x = (np.random.default_rng(7).standard_normal(500) * 50).astype(ml_dtypes.bfloat16)
    got, want = jitgrad.jit(lambda x: np.round(x, decimals))(x), np.round(x, decimals)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


def test_nan_to_num_of_bfloat16_returns_it_unchanged():
    """bfloat16 is no np.inexact: NumPy's nan_to_num leaves it as it is (nan and inf kept)."""
    x = np.array([np.nan, np.inf, -np.inf, 1.5], dtype=ml_dtypes.bfloat16)
    got, want = jitgrad.jit(np.nan_to_num)(x), np.nan_to_num(x)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


@pytest.mark.parametrize("bounds", [(0, 2), (-2, 0), (1000001, 2000000), (0.1, 2.3), (None, 2), (0, None)])
def test_clip_of_bfloat16_with_both_bounds_runs_in_float32(bounds):
    """With both bounds NumPy calls its clip ufunc, which has no bfloat16 loop: float32, and an
    integer bound keeps its float32 value (1000001 is not a bfloat16). One bound: maximum/minimum."""
    x = np.array([999424, 0.69, -3, 0.3125, -0.25, 5, np.nan], dtype=ml_dtypes.bfloat16)
    got, want = jitgrad.jit(lambda x: np.clip(x, *bounds))(x), np.clip(x, *bounds)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("shape", [(1,), (3,), (1, 1), (2, 3), (1, 1, 2), (2, 2, 2), (0,)])
@pytest.mark.parametrize("scale", [False, True, 0.0, -0.0, 2.0, np.float32(0), np.float32(-3)])
def test_dot_with_a_scalar_as_numpy_s_axpy(dtype, shape, scale):
    """np.dot of a float32/float64 vector or matrix and a scalar is BLAS axpy into zeros: a
    zero scale gives +0.0 even where the array holds nan or inf; -0.0 products become +0.0."""
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5, -2.0])
    if dtype is np.int32:
        special = np.array([3, -2, 0, 7])
    x = np.random.default_rng(3).choice(special, size=shape).astype(dtype)
    for call in (lambda x: np.dot(x, scale), lambda x: np.dot(scale, x)):
        with np.errstate(all="ignore"):
            want = call(x)
        got = jitgrad.jit(call)(x)
        _same(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("exponent", [0.5, np.float16(0.5)])
def test_float16_pow_one_half_operator_is_sqrt(exponent):
    """NumPy's `**` with a Python float exponent 0.5 calls np.sqrt (-inf gives nan, -0.0 stays -0.0);
    np.power and a float16 exponent use pow (-inf gives inf)."""
    x = np.array([-np.inf, -0.0, 0.0, 2.0, np.inf, -1.0, np.nan], dtype=np.float16)
    for call in (lambda x: x ** exponent, lambda x: np.power(x, exponent)):
        with np.errstate(all="ignore"):
            want = call(x)
        got = jitgrad.jit(call)(x)
        _same(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("exponent", [-2, -3, -2.0])
def test_negative_integer_power_of_a_large_float_does_not_flush_to_zero(dtype, exponent):
    """x ** -2 once ran as 1 / (x * x): x * x overflowed to inf and a representable (subnormal)
    result became 0. NumPy calls pow."""
    x = np.array([9.5e19, 3e19, 2.0, -3.0, 1e-3], dtype=dtype) if dtype is np.float32 else \
        np.array([1e160, 3e155, 2.0, -3.0, 1e-3])
    got, want = jitgrad.jit(lambda x: x ** exponent)(x), x ** exponent
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=0)
    assert np.all((got != 0) == (want != 0))


def test_integer_power_of_a_loop_invariant_base_compiles_and_matches_numpy():
    """Fuzz seed 31337 program 6680: an integer power unrolled over 64 exponent bits,
    of a base computed outside the loop, sent LLVM's optimizer into a search that never
    ended. Run in a subprocess so a hang is a failure, not a stuck suite."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import numpy as np, jitgrad
        x = np.ones((4, 4)); x[0, 0] = np.nan; x[2, 1] = np.nan
        f = jitgrad.jit(lambda x: np.power(np.sum(np.isnan(x)), np.isnan(x)))
        got, ref = f(x), np.power(np.sum(np.isnan(x)), np.isnan(x))
        assert got.dtype == ref.dtype and np.array_equal(got, ref), (got, ref)
        rng = np.random.default_rng(0)
        for dt in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
            lo = -5 if np.issubdtype(dt, np.signedinteger) else 0
            a = rng.integers(lo, 7, 300).astype(dt)
            e = rng.integers(0, 70, 300).astype(dt)
            got, ref = jitgrad.jit(lambda a, e: a ** e)(a, e), a ** e
            assert got.dtype == ref.dtype and np.array_equal(got, ref), dt
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("edge_order", [1, 2])
@pytest.mark.parametrize("axis", [0, -1])
def test_gradient_of_bfloat16_is_differenced_in_bfloat16_and_stored_as_float64(edge_order, axis):
    # NumPy's gradient keeps the input dtype only for np.inexact types; bfloat16 is not one,
    # so NumPy computes the differences in bfloat16 and writes them into a float64 array.
    x = np.random.default_rng(3).normal(size=(4, 5)).astype(ml_dtypes.bfloat16)
    ref = np.gradient(x, axis=axis, edge_order=edge_order)
    got = jitgrad.jit(lambda x: np.gradient(x, axis=axis, edge_order=edge_order))(x)
    assert got.dtype == ref.dtype == np.float64
    np.testing.assert_array_equal(got, ref)
    half = x.astype(np.float16)
    assert jitgrad.jit(lambda h: np.gradient(h, axis=axis))(half).dtype == np.float16


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("ufunc", [np.maximum, np.minimum])
@pytest.mark.parametrize("size", [1, 5, 64, 1000])
def test_maximum_and_minimum_pick_numpys_zero_on_a_tie(dtype, ufunc, size):
    # +0 and -0 compare equal: NumPy returns one operand by position (which one depends on
    # the dtype), and the sign shows through 1/x.
    rng = np.random.default_rng(size)
    a = np.where(rng.random(size) < 0.5, 0.0, -0.0).astype(dtype)
    b = np.where(rng.random(size) < 0.5, 0.0, -0.0).astype(dtype)
    a[::7] = np.nan
    ref = ufunc(a, b)
    got = jitgrad.jit(ufunc)(a, b)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("ufunc", [np.fmax, np.fmin])
def test_fmax_and_fmin_of_narrow_floats_pick_numpys_zero_on_a_tie(dtype, ufunc):
    a = np.array([0.0, -0.0, 0.0, -0.0, np.nan, -0.0], dtype)
    b = np.array([-0.0, 0.0, 0.0, -0.0, -0.0, np.nan], dtype)
    np.testing.assert_array_equal(np.signbit(jitgrad.jit(ufunc)(a, b)), np.signbit(ufunc(a, b)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16, np.int8, np.uint16, bool])
@pytest.mark.parametrize("shape, axis", [((3000,), None), ((6, 5, 4), 1), ((6, 5, 4), 0), ((6, 5, 4), -1),
                                          ((3, 0), 1), ((), None)])
def test_cumsum_repeats_numpys_sequential_roundings(dtype, shape, axis):
    # A float16 cumsum of 1e6 elements stagnated in NumPy (each partial sum rounded to
    # float16) and went negative; a tree-shaped scan rounded differently and did not.
    x = (np.random.default_rng(7).normal(size=shape) * 3).astype(dtype)
    ref = np.cumsum(x, axis=axis)
    got = jitgrad.jit(lambda x: np.cumsum(x, axis=axis))(x)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_long_float16_cumsum_goes_where_numpys_goes():
    x = np.random.default_rng(8).normal(0.2, 1.0, 200_000).astype(np.float16)
    program = lambda x: np.sqrt(np.cumsum(x))    # noqa: E731
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(jitgrad.jit(program)(x), program(x))


def test_cumsum_gradients_are_reverse_running_sums():
    x = np.random.default_rng(9).normal(size=(4, 6))
    loss = lambda x: np.sum(np.cumsum(x, axis=1) ** 3)    # noqa: E731
    c = np.cumsum(x, axis=1)
    expected = np.cumsum((3 * c ** 2)[:, ::-1], axis=1)[:, ::-1]
    np.testing.assert_allclose(jitgrad.grad(loss)(x), expected, rtol=1e-12)
    h = jitgrad.hessian(lambda v: np.sum(np.cumsum(v) ** 3))(x[0])
    # H[i, j] = sum over k >= max(i, j) of 6 c_k
    suffix = np.cumsum((6 * np.cumsum(x[0]))[::-1])[::-1]
    np.testing.assert_allclose(h, suffix[np.maximum.outer(np.arange(6), np.arange(6))], rtol=1e-12)


@pytest.mark.parametrize("name", ["nansum", "nanprod", "nanmean", "nanvar", "nanstd", "nanmax", "nanmin",
                                  "nancumsum", "nancumprod"])
@pytest.mark.parametrize("axis", [1, None])
def test_nan_functions_of_bfloat16_follow_numpy(name, axis):
    # bfloat16 is not np.inexact: NumPy's nan-functions do not look for NaN in it (nansum is
    # sum), except nanmax/nanmin, which are fmax/fmin reductions.
    x = np.array([[1.5, np.nan, 2.0], [3.0, 4.0, np.nan]], ml_dtypes.bfloat16)
    fn = getattr(np, name)
    with np.errstate(invalid="ignore"):
        ref = fn(x, axis=axis)
    got = jitgrad.jit(lambda x: fn(x, axis=axis))(x)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got.astype(np.float32), ref.astype(np.float32))   # NaN == NaN in float32


def test_nanmedian_of_bfloat16_is_refused():
    x = np.array([1.5, np.nan, 2.0], ml_dtypes.bfloat16)
    with pytest.raises(jitgrad.DTypeError, match="float32"):
        jitgrad.jit(np.nanmedian)(x)


def test_frexp_and_ldexp_of_bfloat16():
    x = np.array([1.5, -2.0, 0.0, 3e-39, np.inf, np.nan, -6.0e30], ml_dtypes.bfloat16)
    (m, e), (mj, ej) = np.frexp(x), jitgrad.jit(np.frexp)(x)
    assert mj.dtype == m.dtype and ej.dtype == e.dtype
    np.testing.assert_array_equal(mj.astype(np.float32), m.astype(np.float32))
    np.testing.assert_array_equal(ej, e)
    k = np.array([1, 2, -3, 0, 1, 1, -140], np.int32)
    np.testing.assert_array_equal(jitgrad.jit(np.ldexp)(x, k).astype(np.float32), np.ldexp(x, k).astype(np.float32))


@pytest.mark.parametrize("a_shape, b_shape, dtype", [((3, 1), (1, 4), np.float64), ((2, 3, 1), (2, 1, 4), np.float16),
                                                     ((2, 3, 5), (2, 5, 4), np.float16), ((4, 1), (1, 2), np.int32)])
def test_products_blas_does_not_serve_use_the_loop_kernel(a_shape, b_shape, dtype):
    # outer products (k = 1) and float16/integer batches fell into an endless recursion
    rng = np.random.default_rng(5)
    a, b = (rng.normal(size=s).astype(dtype) for s in (a_shape, b_shape))
    got = jitgrad.jit(lambda a, b: a @ b)(a, b)
    assert got.dtype == (a @ b).dtype
    np.testing.assert_allclose(got.astype(np.float64), (a @ b).astype(np.float64), rtol=2e-3)
    x = rng.normal(size=(1, 2))
    np.testing.assert_allclose(jitgrad.jit(lambda x: np.einsum("ij,ij->j", x, x))(x), np.einsum("ij,ij->j", x, x))


@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 3, 0), (0, 3), (2, 3, 4)])
@pytest.mark.parametrize("ord", [1, np.inf, -1, -np.inf, "fro"])
def test_matrix_norms_of_empty_matrices_follow_numpy(shape, ord):
    # NumPy takes max(..., initial=0) for ord 1 and inf: an empty matrix has norm 0
    x = np.random.default_rng(3).random(shape).astype(np.float32)
    fn = lambda x: np.linalg.norm(x, ord=ord, axis=(-2, -1))    # noqa: E731
    try:
        ref = fn(x)
    except ValueError:
        with pytest.raises(JitgradError):
            jitgrad.jit(fn)(x)
        return
    got = jitgrad.jit(fn)(x)
    assert got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("shape, axis", [((0, 0), 1), ((0, 0), None), ((3, 0), 1), ((2, 0), 0), ((0, 3), 1)])
def test_max_of_a_zero_size_axis_raises_as_numpy_does(shape, axis):
    x = np.zeros(shape)
    try:
        ref = np.max(x, axis=axis)
    except ValueError:
        with pytest.raises(jitgrad.ShapeError, match="zero-size"):
            jitgrad.jit(lambda x: np.max(x, axis=axis))(x)
        return
    assert jitgrad.jit(lambda x: np.max(x, axis=axis))(x).shape == ref.shape


@pytest.mark.parametrize("array, value", [(np.array([0., 0., 1., 2.], np.float16), 1e-300),
                                          (np.array([0, 1, 2, 3], np.int8), 1.5),
                                          (np.array([0, 1, 2, 3], np.int8), 1000),
                                          (np.array([0., 1e-30, 1.], np.float32), 1e-40)])
def test_searchsorted_compares_a_python_scalar_as_numpy_does(array, value):
    # NumPy compares a Python scalar as a strong float64/int64, not rounded to the array's dtype
    assert jitgrad.jit(lambda a: np.searchsorted(a, value))(array) == np.searchsorted(array, value)


# --------------------------------------------------------------------------- cumprod: NumPy's sequential products

@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16, np.int8, np.uint16, bool])
@pytest.mark.parametrize("shape, axis", [((3000,), None), ((6, 5, 4), 1), ((6, 5, 4), 0), ((6, 5, 4), -1),
                                          ((3, 0), 1), ((), None)])
def test_cumprod_repeats_numpys_sequential_roundings(dtype, shape, axis):
    x = np.random.default_rng(11).uniform(0.5, 1.6, size=shape).astype(dtype)
    ref = np.cumprod(x, axis=axis)
    got = jitgrad.jit(lambda x: np.cumprod(x, axis=axis))(x)
    _same(got, ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_cumprod_into_the_subnormals_rounds_as_numpy(dtype):
    # A product that sinks through the subnormal range loses bits at every step there: a
    # tree-shaped scan (which multiplies partial products of other lengths) rounds
    # those steps differently and gave other subnormals than NumPy.
    tiny = np.finfo(dtype).tiny
    x = np.random.default_rng(12).uniform(0.3, 0.9, size=(3, 64)).astype(dtype)
    x[:, 0] = tiny * np.array([3.3, 1.7, 0.9]).astype(dtype)
    ref = np.cumprod(x, axis=1)
    assert np.count_nonzero((ref != 0) & (np.abs(ref) < tiny)) > 10       # the case is exercised
    _same(jitgrad.jit(lambda x: np.cumprod(x, axis=1))(x), ref)


def test_cumprod_gradient_through_zeros_is_the_product_of_the_other_factors():
    # JAX's convention (the product rule, no division): finite, exact derivatives at zeros
    x = np.array([[2.0, 0.0, 3.0, -1.5, 0.0, 4.0], [0.5, 1.5, -2.0, 0.0, 1.0, 3.0]])
    w = np.random.default_rng(13).normal(size=x.shape)
    loss = lambda v: np.sum(w * np.cumprod(v, axis=1))    # noqa: E731
    expected = np.zeros_like(x)
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            for k in range(j, x.shape[1]):
                expected[r, j] += w[r, k] * np.prod(np.delete(x[r, :k + 1], j))
    np.testing.assert_allclose(jitgrad.grad(loss)(x), expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(jitgrad.jit(jitgrad.grad(loss))(x), expected, rtol=1e-13, atol=1e-13)
    # second order: d2/dx_i dx_j of sum(cumprod(v)) = sum over k >= max(i, j) of the product of the others
    v = x[0]
    hessian = jitgrad.hessian(lambda v: np.sum(np.cumprod(v)))(v)
    expected_h = np.zeros((6, 6))
    for i in range(6):
        for j in range(6):
            if i != j:
                expected_h[i, j] = sum(np.prod(np.delete(v[:k + 1], [i, j])) for k in range(max(i, j), 6))
    np.testing.assert_allclose(hessian, expected_h, rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------- BLAS's scalar path in dot/inner/tensordot

@pytest.mark.parametrize("fn", [np.dot, np.inner, lambda a, b: np.tensordot(a, b, axes=1),
                                lambda a, b: np.tensordot(a, b, axes=0)], ids=["dot", "inner", "tensordot1", "tensordot0"])
@pytest.mark.parametrize("a_shape, b_shape", [((17, 3), ()), ((3,), ()), ((3, 1), (1,)), ((3, 1), (1, 1)),
                                              ((2, 1, 1), (1,)), ((1,), (1,)), ((2, 3, 1), ())])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_products_with_a_one_element_operand_follow_blas_axpy(fn, a_shape, b_shape, dtype):
    # NumPy's float products of at most 2-d operands treat a one-element operand as a
    # scalar and call BLAS axpy into zeros, which skips a scale of 0: inf * 0 gives 0.0
    # there (not NaN); found as np.inner(float array holding inf, argmax(...)).
    a = np.array([np.inf, -np.inf, np.nan, -2.0, 0.0, 1.5] * 9, dtype)[:int(np.prod(a_shape))].reshape(a_shape)
    for scale in (0, -0.0, 2.0, np.nan):
        b = np.full(b_shape, scale, np.int64 if scale == 0 and not np.signbit(scale) else dtype)
        for x, y in ((a, b), (b, a)):
            try:
                with np.errstate(all="ignore"):
                    want = fn(x, y)
            except (ValueError, IndexError):         # shapes NumPy does not multiply
                continue
            got = jitgrad.jit(fn)(x, y)
            _same(got, want)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_gradient_of_a_product_by_a_zero_scalar_is_the_other_operand():
    x = np.array([1.5, -2.0, 3.0])
    g = jitgrad.grad(lambda s, x: np.sum(np.inner(x, s)))(np.array(0.0), x)
    assert g == pytest.approx(np.sum(x))


# --------------------------------------------------------------------------- the oracle: argmax/argmin near-ties

def _argmax_of_a_product(x):
    import fuzz
    program = fuzz._case("argmax after a product", [("matmul_by_transposed", (0, 0)),
                                                    ("argmax", (1,), {"axis": -1})], [x])
    return fuzz, fuzz.numpy_reference(program, np.random.default_rng(0))


def test_oracle_takes_a_near_tie_after_a_contraction_as_a_jump():
    # Row 0 of x @ x.T has two entries 3 and 3 + 4e-16: within the product's error bound,
    # so an implementation within the bounds may pick either; NumPy's own gemm does not
    # make symmetric entries bit-identical.
    x = np.array([[1.0, 0.0], [3.0, 0.1], [np.nextafter(3.0, 4.0), 0.1], [-1.0, -1.0]])
    fuzz, ref = _argmax_of_a_product(x)
    assert list(ref.outputs[0][:3]) == [2, 2, 2]
    assert ref.unstable[0][:3].all() and not ref.unstable[0][3]
    near_tie = ref.outputs[0].copy()
    near_tie[:3] = 1
    fuzz.compare(near_tie, ref, 0, "the other side of the tie")


def test_oracle_still_catches_a_wrong_argmax():
    x = np.array([[1.0, 0.0], [3.0, 0.1], [np.nextafter(3.0, 4.0), 0.1], [-1.0, -1.0], [0.0, 1.0]])
    fuzz, ref = _argmax_of_a_product(x)
    assert not ref.unstable[0][3] and not ref.unstable[0][4]
    for row, wrong in ((3, 0), (4, 1), (4, 2)):          # rows with a clear winner
        got = ref.outputs[0].copy()
        got[row] = wrong
        with pytest.raises(fuzz.Mismatch, match="value"):
            fuzz.compare(got, ref, 0, "a wrong argmax")
    # exact candidates tie exactly: NumPy's first index is required
    program = fuzz._case("exact tie", [("argmax", (0,), {"axis": -1})], [np.array([[1.0, 3.0, 3.0]])])
    ref = fuzz.numpy_reference(program, np.random.default_rng(0))
    with pytest.raises(fuzz.Mismatch, match="value"):
        fuzz.compare(np.array([2]), ref, 0, "the later of two exact ties")


def test_oracle_compares_complex_results_per_component():
    import fuzz
    x = np.array([1 + 2j, np.nan + 0j, 3 - 1j], np.complex64)
    exact = fuzz.numpy_reference(fuzz._case("complex copy", [("T", (0,))], [x]), np.random.default_rng(0))
    fuzz.compare(x.copy(), exact, 0, "NaN + 0j equals itself")
    wrong_imaginary = x.copy()
    wrong_imaginary[2] = 3 - 1.0001j
    with pytest.raises(fuzz.Mismatch, match="value"):
        fuzz.compare(wrong_imaginary, exact, 0, "imaginary part")
    inexact = fuzz.numpy_reference(fuzz._case("complex exp", [("exp", (0,))], [x[[0, 2]]]), np.random.default_rng(0))
    assert np.all(inexact.tolerance[0] > 0)
    fuzz.compare(np.exp(x[[0, 2]].astype(np.complex128)).astype(np.complex64), inexact, 0, "within the bound")
    with pytest.raises(fuzz.Mismatch, match="value"):
        fuzz.compare(np.exp(x[[0, 2]]) * np.complex64(1 + 1e-4j), inexact, 0, "a rotated result")


# --------------------------------------------------------------------------- prod: NumPy's sequential products

def test_prod_overflowing_before_a_zero_is_nan_as_in_numpy():
    # NumPy multiplies in index order: 1e300 * 55 * 1e300 overflows before the 0 is reached,
    # and inf * 0 is NaN; a pairwise tree met the zero first and gave 0.0
    x = np.array([[-8.0, 1e300, 55.0], [1e300, 0.0, 3.0]])
    with np.errstate(all="ignore"):
        for axis in (None, 1, 0):
            _same(jitgrad.jit(lambda x: np.prod(x, axis=axis))(x), np.prod(x, axis=axis))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("shape, axis", [((3000,), None), ((6, 5, 4), 1), ((6, 5, 4), 0), ((6, 5, 4), (1, 2)),
                                          ((5, 5), -1)])
def test_prod_repeats_numpys_order_and_roundings(dtype, shape, axis):
    # bfloat16 is rounded at every step (ml_dtypes' loop); float16 accumulates in float32
    # when the reduced axes are the trailing ones, else it is rounded at every step
    x = np.random.default_rng(14).uniform(0.5, 1.9, size=shape).astype(dtype)
    _same(jitgrad.jit(lambda x: np.prod(x, axis=axis))(x), np.prod(x, axis=axis))


def test_prod_gradient_through_a_zero():
    x = np.array([2.0, 0.0, 3.0, 0.5])
    np.testing.assert_allclose(jitgrad.grad(np.prod)(x), [0.0, 3.0, 0.0, 0.0])
    h = jitgrad.hessian(np.prod)(np.array([2.0, 0.0, 3.0]))
    np.testing.assert_allclose(h, [[0, 3, 0], [3, 0, 2], [0, 2, 0]])


def test_oracle_takes_a_statement_numpy_refuses_on_moved_operands_as_undetermined():
    # np.linalg.inv of a matrix the error bounds make singular raised inside the oracle
    # (a 'fuzzer' failure); such a result is not determined by the program: not compared
    import fuzz
    singular_unless_exact = fuzz.Op("inv_unless_one", "np.linalg.inv(np.eye(2) * ({0} == 1.0))")
    program = fuzz._case("refused when moved", [("exp", (0,))], [np.array(0.0)])
    program = fuzz.Program(program.inputs, program.stmts + [fuzz.Stmt(singular_unless_exact, (1,))], [2], "x")
    ref = fuzz.numpy_reference(program, np.random.default_rng(0))
    np.testing.assert_array_equal(ref.outputs[0], np.eye(2))
    assert ref.unstable[0].all()


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("name", ["convolve", "correlate"])
def test_convolve_sums_only_overlapping_products_from_positive_zero(name, mode):
    """NumPy sums each output's overlapping products starting from +0.0: a padding zero
    times an infinite kernel element gave NaN where NumPy gives inf (seed 20261208 program
    5381), and a sum of -0.0 products gave -0.0 where NumPy gives +0.0."""
    fn = getattr(np, name)
    a, v = np.array([1.0, np.inf, -2.0, 3.0]), np.array([np.inf, 0.5, -0.0])
    zeros = np.array([-0.0, -0.0, 1.0]), np.array([1.0, -0.0])
    for x, y in ((a, v), (v, a), (a[::-1], a), zeros):
        with np.errstate(all="ignore"):
            expected = fn(x, y, mode)
        got = jitgrad.jit(lambda x, y: fn(x, y, mode))(x, y)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))
