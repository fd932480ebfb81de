"""np.random inside compiled functions: fresh numbers on every call, reproducible after
np.random.seed, identical in compiled code and the interpreter, independent of threads
and fusion, differentiable through the parameters, and a clear error where jitgrad
cannot draw fresh numbers (Generator objects, unsupported functions)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from numpy.random import randn as randn_bound_early      # bound before any trace: not interceptable

import jitgrad
from jitgrad import primitives as P
from jitgrad.backends.cpu import CPUBackend
from jitgrad.config import config
from jitgrad.errors import UnsupportedOperationError
from jitgrad.interpreter import evaluate
from jitgrad.ir import DType, TensorType, new_function
from jitgrad.primitives.random import _NumPyBits, philox4x32, random_uniform

# --------------------------------------------------------------------------- an independent Philox

M32 = 0xFFFFFFFF


def philox_scalar(counter, key, rounds=10):
    """Philox4x32 on Python ints, written from the published algorithm (Random123)."""
    c, (k0, k1) = list(counter), key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c[3] ^ k1) & M32, p0 & M32]
    return c


def reference_uniform(k0, k1, shape, stream, word, dtype):
    """The uniform numbers random_uniform promises, element by element."""
    k0, k1 = int(k0) & (2**64 - 1), int(k1) & (2**64 - 1)
    out = []
    for i in range(int(np.prod(shape))):
        x = philox_scalar((i & M32, i >> 32, (k1 & M32) ^ stream, k1 >> 32), (k0 & M32, k0 >> 32))
        lo, hi = x[2 * word], x[2 * word + 1]
        out.append((((hi << 32) | lo) >> 11) * 2.0**-53 if dtype == DType.f64 else (lo >> 8) * 2.0**-24)
    return np.array(out, dtype=dtype.numpy).reshape(shape)


KNOWN_ANSWERS = [   # Random123's kat_vectors: counter, key, output
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32, M32, M32, M32), (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    assert tuple(philox_scalar(counter, key)) == expected
    words = philox4x32(_NumPyBits, [np.array([c], np.uint64) for c in counter],
                       [np.array([k], np.uint64) for k in key])
    assert tuple(int(w[0]) for w in words) == expected


def _uniform_function(shape, dtype, stream=7):
    i64 = TensorType((), DType.i64)
    fn, builder = new_function("draw", [i64, i64])
    with builder:
        k0, k1 = fn.args
        builder.ret([random_uniform(k0, k1, shape, stream=stream, word=w, dtype=dtype) for w in (0, 1)])
    return fn


KEYS = [(0, 0), (-1, 2**62 + 12345), (0x243F6A8885A308D3, -0x5BF6C7DDD660CE30)]


@pytest.mark.parametrize("dtype", [DType.f64, DType.f32])
@pytest.mark.parametrize("key", KEYS)
def test_interpreter_matches_independent_philox(key, dtype):
    fn = _uniform_function((3, 4), dtype)
    words = evaluate(fn, [np.int64(key[0]), np.int64(key[1])])
    for word, got in enumerate(words):
        np.testing.assert_array_equal(got, reference_uniform(*key, (3, 4), 7, word, dtype))
        assert got.dtype == dtype.numpy and got.min() >= 0 and got.max() < 1


@pytest.mark.parametrize("fusion", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [DType.f64, DType.f32])
def test_compiled_matches_interpreter_bit_for_bit(dtype, threads, fusion, monkeypatch):
    """Also above the size where fused loops run on several threads in fixed blocks."""
    monkeypatch.setattr(config, "num_threads", threads)
    monkeypatch.setattr(config, "fusion", fusion)
    for shape in [(), (5,), (3, 7), (1 << 18,)]:
        fn = _uniform_function(shape, dtype)
        args = [np.int64(-3), np.int64(2**40 + 17)]
        compiled = CPUBackend().compile(fn)(args)
        for got, expected in zip(compiled, evaluate(fn, args), strict=True):
            assert got.dtype == expected.dtype
            assert got.tobytes() == expected.tobytes() and got.shape == expected.shape


def test_compiled_function_matches_interpreter_for_the_same_key():
    """The key is the compiled function's last argument; with it fixed, native code and the
    interpreter draw the same numbers (uniforms bit for bit)."""
    lowered = jitgrad.value_and_grad(dropout_loss).lower(np.ones(64), np.arange(64.0))
    fn = lowered.function
    assert fn.args[-1].type == TensorType((2,), DType.i64)
    args = [np.linspace(-1, 1, 64), np.arange(64.0), np.array([-7, 2**60 + 3], np.int64)]
    for got, expected in zip(lowered.executable(args), evaluate(fn, args), strict=True):
        assert got.tobytes() == expected.tobytes()


# --------------------------------------------------------------------------- fresh, reproducible

def test_fresh_numbers_on_every_call_and_reproducible_after_seed():
    f = jitgrad.jit(lambda x: x * np.random.standard_normal(3))
    x = np.ones(3)
    a, b = f(x), f(x)
    assert not np.array_equal(a, b)
    np.random.seed(123)
    c = f(x)
    np.random.seed(123)
    d = f(x)
    np.testing.assert_array_equal(c, d)
    assert not np.array_equal(c, a)


def test_each_call_site_and_loop_iteration_draws_its_own_numbers():
    def f(x):
        draws = [np.random.rand(4) for _ in range(3)]
        return x + np.stack(draws + [np.random.rand(4)])
    out = jitgrad.jit(f)(np.zeros(4))
    assert len({row.tobytes() for row in out}) == 4


def test_nested_compiled_function_draws_fresh_numbers_per_call():
    g = jitgrad.jit(lambda x: x + np.random.rand(5))
    f = jitgrad.jit(lambda x: np.stack([g(x), g(x), x + np.random.rand(5)]))
    out = f(np.zeros(5))
    assert len({row.tobytes() for row in out}) == 3
    assert not np.array_equal(out, f(np.zeros(5)))


def test_functions_without_random_numbers_take_no_key():
    f = jitgrad.jit(lambda x: x * 2)
    x = np.ones(3)
    assert len(f.lower(x).function.args) == 1
    f(x), f(x)
    assert f._fast is not None              # the native call path: nothing is drawn per call
    state = np.random.get_state()[1].copy()
    f(x)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_a_call_draws_its_key_from_numpys_global_state():
    f = jitgrad.jit(lambda x: x + np.random.rand(2))
    x = np.zeros(2)
    np.random.seed(5)
    f(x)
    after_call = np.random.rand()
    np.random.seed(5)
    np.random.get_bit_generator().random_raw(4)               # the key: four 32-bit words
    assert np.random.rand() == after_call


# --------------------------------------------------------------------------- distributions

N = 100_000


def _draw(fn):
    return jitgrad.jit(fn)(np.zeros(N))


def _close(value, expected, sigma, n=N, k=6):
    assert abs(value - expected) < k * sigma / np.sqrt(n), (value, expected)


def test_uniform_distributions():
    u = _draw(lambda z: z + np.random.rand(N))
    assert u.dtype == np.float64 and u.min() >= 0 and u.max() < 1
    _close(u.mean(), 0.5, np.sqrt(1 / 12))
    _close(((u - 0.5) ** 2).mean(), 1 / 12, np.sqrt(1 / 80 - 1 / 144))
    assert np.histogram(u, 10, (0, 1))[0].min() > N / 10 - 6 * np.sqrt(N * 0.09)
    for fn in (lambda z: z + np.random.random(N), lambda z: z + np.random.random_sample((N,)),
               lambda z: z + np.random.ranf(size=N), lambda z: z + np.random.sample(N)):
        v = _draw(fn)
        assert v.min() >= 0 and v.max() < 1
        _close(v.mean(), 0.5, np.sqrt(1 / 12))
    w = _draw(lambda z: z + np.random.uniform(-2.0, 3.0, size=N))
    assert w.min() >= -2 and w.max() < 3
    _close(w.mean(), 0.5, 5 * np.sqrt(1 / 12))


@pytest.mark.parametrize("fn", [lambda z: z + np.random.randn(N), lambda z: z + np.random.standard_normal(N),
                                lambda z: z + np.random.normal(size=N)])
def test_standard_normal(fn):
    z = _draw(fn)
    _close(z.mean(), 0.0, 1.0)
    _close(z.var(), 1.0, np.sqrt(2.0))
    _close(np.mean(np.abs(z) < 1), 0.6826894921370859, 0.47)
    _close(np.mean(z > 2), 0.022750131948179195, 0.15)
    assert np.all(np.isfinite(z))


def test_normal_with_parameters_and_broadcasting():
    f = jitgrad.jit(lambda loc, scale: np.random.normal(loc, scale, size=(N, 2)))
    y = f(np.array([1.0, -3.0]), np.array(2.0))
    assert y.shape == (N, 2) and y.dtype == np.float64
    _close(y[:, 0].mean(), 1.0, 2.0)
    _close(y[:, 1].mean(), -3.0, 2.0)
    _close(y[:, 1].std(), 2.0, np.sqrt(2.0) * 2.0)
    shape_only = jitgrad.jit(lambda loc: np.random.normal(loc, 1.0))(np.zeros((2, 3)))
    assert shape_only.shape == (2, 3)
    with pytest.raises(ValueError, match="scale < 0"):
        jitgrad.jit(lambda x: x + np.random.normal(0.0, -1.0, size=3))(np.zeros(3))
    negative = jitgrad.jit(lambda s: np.random.normal(0.0, s, size=2))(np.array(-1.0))
    assert np.all(np.isnan(negative))       # a traced negative scale: NaN where NumPy raises


def test_exponential():
    e = _draw(lambda z: z + np.random.exponential(2.0, size=N))
    assert e.min() >= 0
    _close(e.mean(), 2.0, 2.0)
    s = _draw(lambda z: z + np.random.standard_exponential(N))
    _close(s.mean(), 1.0, 1.0)


def test_randint_and_bernoulli():
    r = jitgrad.jit(lambda z: np.random.randint(-3, 4, size=N) + z)(np.zeros(N, np.int64))
    assert r.dtype == np.int64 and set(np.unique(r)) == set(range(-3, 4))
    counts = np.bincount(r + 3)
    p = 1 / 7
    assert np.all(np.abs(counts - N * p) < 6 * np.sqrt(N * p * (1 - p)))
    r32 = jitgrad.jit(lambda z: np.random.randint(5, size=(3, 4), dtype=np.int32) + z)(np.zeros((3, 4), np.int32))
    assert r32.dtype == np.int32 and r32.min() >= 0 and r32.max() < 5
    b = jitgrad.jit(lambda p: np.random.binomial(1, p, size=N))(np.array(0.3))
    assert b.dtype == np.int64 and set(np.unique(b)) <= {0, 1}
    _close(b.mean(), 0.3, np.sqrt(0.21))
    with pytest.raises(UnsupportedOperationError, match="n=1"):
        jitgrad.jit(lambda p: np.random.binomial(3, p))(np.array(0.3))
    with pytest.raises(UnsupportedOperationError, match="traced bounds"):
        jitgrad.jit(lambda n: np.random.randint(0, n))(np.array(3))
    with pytest.raises(ValueError, match="low >= high"):
        jitgrad.jit(lambda z: z + np.random.randint(3, 3))(np.array(0))


# --------------------------------------------------------------------------- gradients, dropout

def test_gradient_flows_through_loc_and_scale_not_through_the_draw():
    def f(loc, scale):
        y = np.random.normal(loc, scale, size=50)
        return np.sum(y), y
    (value, y), (g_loc, g_scale) = jitgrad.value_and_grad(f, argnums=(0, 1), has_aux=True)(1.5, 0.5)
    assert g_loc == pytest.approx(50.0)
    assert g_scale == pytest.approx(np.sum((y - 1.5) / 0.5), rel=1e-12)
    assert value == pytest.approx(np.sum(y), rel=1e-12)


def dropout_loss(x, w, p=0.25):
    mask = np.random.rand(*x.shape) > p
    return np.sum(np.where(mask, x / (1 - p), 0) * w)


def test_dropout_value_and_gradient_come_from_the_same_mask():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(400), rng.standard_normal(400)
    vg = jitgrad.value_and_grad(dropout_loss)
    (v1, g1), (v2, g2) = vg(x, w), vg(x, w)
    assert not np.array_equal(g1, g2)                       # a new mask per call
    for v, g in ((v1, g1), (v2, g2)):
        kept = g != 0
        np.testing.assert_allclose(g[kept], w[kept] / 0.75, rtol=1e-15)
        assert 0.6 < kept.mean() < 0.9
        assert v == pytest.approx(np.dot(g, x), rel=1e-12)  # the loss is linear in x: same mask
    g = jitgrad.grad(dropout_loss)(x, w)
    assert set(np.unique(np.round(g / w, 12))) <= {0.0, round(1 / 0.75, 12)}
    np.random.seed(9)
    y1 = jitgrad.jit(dropout_loss)(x, w)
    np.random.seed(9)
    assert jitgrad.jit(dropout_loss)(x, w) == y1


def test_vjp_pullback_sees_the_forward_draw():
    def f(x):
        return x * np.random.rand(3)
    x = np.array([1.0, 2.0, 3.0])
    out, pullback = jitgrad.vjp(f, x)
    (ct,) = pullback(np.ones(3))
    np.testing.assert_array_equal(ct, out / x)


def test_linearize_tangent_map_sees_the_forward_draw():
    x = np.array([1.0, 2.0, 3.0])
    out, f_jvp = jitgrad.linearize(lambda x: x * np.random.rand(3), x)
    np.testing.assert_array_equal(f_jvp(np.ones(3)), out / x)
    np.testing.assert_array_equal(f_jvp(np.ones(3)), out / x)


def test_jacobian_by_directions_uses_one_draw():
    def f(x):
        return x * np.random.rand(40)
    x = np.arange(1.0, 41.0)
    for jac in (jitgrad.jacfwd(f), jitgrad.jacrev(f)):
        J = jac(x)
        np.testing.assert_array_equal(J, np.diag(np.diag(J)))
        assert len(set(np.diag(J))) == 40 and np.all((np.diag(J) >= 0) & (np.diag(J) < 1))


# --------------------------------------------------------------------------- what cannot be fresh: errors

RNG = np.random.default_rng(0)


def test_generator_in_a_global_raises_naming_it_and_the_line():
    def f(x):
        return x + RNG.normal(size=3)
    with pytest.raises(UnsupportedOperationError, match=r"generator `RNG`.*np\.random\.\*") as info:
        jitgrad.jit(f)(np.zeros(3))
    assert f"test_random.py:{f.__code__.co_firstlineno + 1}" in str(info.value)


def test_generator_and_random_state_in_closures_and_attributes_raise():
    rng = np.random.default_rng(1)
    state = np.random.RandomState(2)

    class Model:
        def __init__(self):
            self.rng = np.random.default_rng(3)

        def forward(self, x):
            return x * self.rng.random(3)

    for fn in (lambda x: x + rng.standard_normal(3), lambda x: x + state.rand(3), Model().forward):
        with pytest.raises(UnsupportedOperationError, match="repeated on every call"):
            jitgrad.jit(fn)(np.zeros(3))
    with pytest.raises(UnsupportedOperationError, match="repeated on every call"):
        jitgrad.grad(lambda x: np.sum(x * rng.random(3)))(np.zeros(3))


def test_global_state_used_behind_jitgrads_back_raises():
    with pytest.raises(UnsupportedOperationError, match="from numpy.random import"):
        jitgrad.jit(lambda x: x + randn_bound_early(3))(np.zeros(3))


@pytest.mark.parametrize("call, match", [
    (lambda x: x + np.random.gamma(2.0, size=3), "np.random.gamma has no traced version"),
    (lambda x: x + np.random.permutation(3), "np.random.permutation has no traced version"),
    (lambda x: (np.random.seed(0), x)[1], "np.random.seed has no traced version"),
    (lambda x: x + np.random.default_rng().random(3), "without a seed"),
])
def test_unsupported_np_random_functions_raise(call, match):
    with pytest.raises(UnsupportedOperationError, match=match):
        jitgrad.jit(call)(np.zeros(3))


def test_seeded_generator_made_inside_repeats_as_in_numpy():
    def f(x):
        return x + np.random.default_rng(42).random(3)
    expected = f(np.zeros(3))
    np.testing.assert_array_equal(jitgrad.jit(f)(np.zeros(3)), expected)


def test_random_function_called_on_concrete_arrays_inside_a_trace_raises():
    g = jitgrad.jit(lambda x: x + np.random.rand(2))
    with pytest.raises(UnsupportedOperationError, match="frozen"):
        jitgrad.jit(lambda x: x + g(np.zeros(2)))(np.zeros(2))


def test_np_random_mtrand_functions_are_intercepted_too():
    f = jitgrad.jit(lambda x: x + np.random.mtrand.rand(4))
    assert not np.array_equal(f(np.zeros(4)), f(np.zeros(4)))


def test_eager_layers_refuse_compiled_random_functions():
    """A tape's gradient (and dual numbers' tangent) would re-run the function with a new draw."""
    f = jitgrad.jit(lambda x: x * np.random.rand(4))
    tape = jitgrad.GradientTape()
    with tape:
        x = tape.variable(np.ones(4))
        z = np.sum(f(x))
    with pytest.raises(UnsupportedOperationError, match="GradientTape or dual-number"):
        tape.gradient(z, [x])
    with pytest.raises(UnsupportedOperationError, match="GradientTape or dual-number"):
        f(jitgrad.DualTensor(np.ones(4), np.ones(4)))


# --------------------------------------------------------------------------- threads

def test_threads_calling_one_random_function_get_different_numbers():
    f = jitgrad.jit(lambda x: x + np.random.rand(1000))
    f(np.zeros(1000))
    results, errors = {}, []

    def worker(k):
        try:
            results[k] = [f(np.zeros(1000)) for _ in range(20)]
        except Exception as err:    # noqa: BLE001 - reported below
            errors.append(err)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    draws = [r.tobytes() for rs in results.values() for r in rs]
    assert len(draws) == 80 and len(set(draws)) == 80


def test_other_threads_get_numpys_functions_while_a_trace_runs():
    tracing, release, seen = threading.Event(), threading.Event(), []

    def f(x):
        tracing.set()
        release.wait(timeout=30)
        return x + np.random.rand(2)

    def other():
        tracing.wait(timeout=30)
        seen.append(np.random.rand(2))
        release.set()
    t = threading.Thread(target=other)
    t.start()
    out = jitgrad.jit(f)(np.zeros(2))
    t.join(timeout=30)
    assert isinstance(seen[0], np.ndarray) and seen[0].shape == (2,)
    assert out.shape == (2,)
    assert np.random.rand is not None and not hasattr(np.random.rand, "__wrapped__")   # patches removed


# --------------------------------------------------------------------------- more distributions

@pytest.mark.parametrize("draw, mean, std", [
    (lambda: np.random.lognormal(0.5, 0.25, size=N), np.exp(0.5 + 0.25**2 / 2),
     np.sqrt((np.exp(0.25**2) - 1) * np.exp(1 + 0.25**2))),
    (lambda: np.random.laplace(1.0, 2.0, size=N), 1.0, np.sqrt(8.0)),
    (lambda: np.random.gumbel(1.0, 2.0, size=N), 1.0 + 2.0 * np.euler_gamma, 2.0 * np.pi / np.sqrt(6)),
    (lambda: np.random.rayleigh(2.0, size=N), 2.0 * np.sqrt(np.pi / 2), 2.0 * np.sqrt((4 - np.pi) / 2)),
    (lambda: np.random.weibull(2.0, size=N), 0.886226925452758, np.sqrt(1 - 0.886226925452758**2)),
    (lambda: np.random.pareto(10.0, size=N), 1 / 9, np.sqrt(10 / (81 * 8))),
    (lambda: np.random.power(2.0, size=N), 2 / 3, np.sqrt(2 / 4 - 4 / 9)),
], ids=["lognormal", "laplace", "gumbel", "rayleigh", "weibull", "pareto", "power"])
def test_more_distributions_have_their_mean_and_spread(draw, mean, std):
    x = jitgrad.jit(lambda z: z + draw())(np.zeros(N))
    assert np.all(np.isfinite(x))
    _close(x.mean(), mean, std)
    _close(x.std(), std, 2 * std, k=8)


def test_standard_cauchy_and_parameter_errors():
    c = jitgrad.jit(lambda z: z + np.random.standard_cauchy(N))(np.zeros(N))
    _close(np.mean(np.abs(c) < 1), 0.5, 0.5)
    _close(np.median(c), 0.0, 1.6)
    with pytest.raises(ValueError, match="a <= 0"):
        jitgrad.jit(lambda z: z + np.random.pareto(0.0, size=2))(np.zeros(2))
    with pytest.raises(ValueError, match="sigma < 0"):
        jitgrad.jit(lambda z: z + np.random.lognormal(0.0, -1.0, size=2))(np.zeros(2))
    assert np.all(jitgrad.jit(lambda a: np.random.weibull(a, size=3))(np.array(0.0)) == 0)   # as NumPy
    assert np.all(np.isnan(jitgrad.jit(lambda a: np.random.power(a, size=3))(np.array(-1.0))))


def test_results_do_not_depend_on_threads_or_fusion(monkeypatch):
    def f(x):
        keep = np.random.rand(*x.shape) > 0.3
        return np.where(keep, x / 0.7, 0) + np.random.normal(0.0, 0.1, size=x.shape)
    x = np.linspace(-1, 1, 1 << 18)
    results = []
    for threads, fusion in [(0, True), (1, True), (2, True), (1, False)]:
        monkeypatch.setattr(config, "num_threads", threads)
        monkeypatch.setattr(config, "fusion", fusion)
        np.random.seed(17)
        results.append(jitgrad.jit(f)(x))
    for r in results[1:]:
        assert r.tobytes() == results[0].tobytes()


W_GLOBAL = np.ones(3)


def test_random_key_and_closure_arrays_are_both_read_at_call_time():
    scale = np.full(3, 2.0)
    f = jitgrad.jit(lambda x: x * W_GLOBAL + scale * np.random.rand(3))
    x = np.zeros(3)
    np.random.seed(4)
    first = f(x)
    scale *= 10
    np.random.seed(4)
    np.testing.assert_allclose(f(x), first * 10, rtol=1e-15)
    W_GLOBAL[:] = 5
    np.random.seed(4)
    np.testing.assert_allclose(f(np.ones(3)), 5 + first * 10, rtol=1e-15)
    assert not np.array_equal(f(x), f(x))


def test_global_state_moved_by_a_path_not_intercepted_raises():
    bit_generator = np.random.get_bit_generator
    with pytest.raises(UnsupportedOperationError, match="global state was advanced"):
        jitgrad.jit(lambda x: x + bit_generator().random_raw(3))(np.zeros(3))


def test_keys_come_from_whatever_bit_generator_numpy_uses():
    saved = np.random.get_bit_generator()
    try:
        np.random.set_bit_generator(np.random.PCG64(7))
        f = jitgrad.jit(lambda x: x + np.random.rand(3))
        a = f(np.zeros(3))
        np.random.set_bit_generator(np.random.PCG64(7))
        np.testing.assert_array_equal(f(np.zeros(3)), a)
    finally:
        np.random.set_bit_generator(saved)


def test_choice_with_replacement():
    r = jitgrad.jit(lambda z: z + np.random.choice(5, size=N))(np.zeros(N, np.int64))
    assert set(np.unique(r)) == set(range(5))
    assert np.all(np.abs(np.bincount(r) - N / 5) < 6 * np.sqrt(N * 0.16))
    a = np.array([1.5, -2.0, 7.0])
    picked = jitgrad.jit(lambda a: np.random.choice(a, size=N, p=[0.1, 0.2, 0.7]))(a)
    for value, prob in zip(a, [0.1, 0.2, 0.7], strict=True):
        _close(np.mean(picked == value), prob, np.sqrt(prob * (1 - prob)))
    assert set(np.unique(picked)) == set(a)
    counts = jitgrad.grad(lambda a: np.sum(np.random.choice(a, size=300)))(a)   # d/da_k = times k was picked
    assert counts.sum() == 300 and np.all(counts == np.round(counts))
    with pytest.raises(UnsupportedOperationError, match="replace=False"):
        jitgrad.jit(lambda x: x + np.random.choice(5, 3, replace=False))(np.zeros(3))
    with pytest.raises(ValueError, match="sum to 1"):
        jitgrad.jit(lambda x: x + np.random.choice(2, 3, p=[0.5, 0.6]))(np.zeros(3))
