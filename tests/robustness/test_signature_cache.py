"""The per-function signature cache: static arguments keyed by type and bit pattern,
a bounded least-recently-used cache whose dropped entries free their machine code, the
recompile warning that says what changed, and clear_caches()."""
import gc
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import jitgrad
from jitgrad import jit
from jitgrad.backends.cpu.engine import live_engine_count as live
from jitgrad.config import config


@pytest.fixture
def small_cache():
    saved = config.max_signatures_per_function, config.recompile_warning_after
    config.max_signatures_per_function, config.recompile_warning_after = 4, 0
    yield
    config.max_signatures_per_function, config.recompile_warning_after = saved


# --------------------------------------------------------------------------- static argument keys

def test_static_nan_compiles_once():
    f = jit(lambda x, s: x + s, static_argnums=1)
    nan = float("nan")
    for _ in range(3):
        assert np.isnan(f(np.ones(2), nan)).all()
    assert f.compile_count == 1
    assert np.isnan(f(np.ones(2), float("nan"))).all()   # another nan object: the same value
    assert f.compile_count == 1


def test_static_zero_signs_are_different_signatures():
    f = jit(lambda x, s: x / s, static_argnums=1)
    assert f(np.ones(1), 0.0)[0] == np.inf
    assert f(np.ones(1), -0.0)[0] == -np.inf
    assert f.compile_count == 2


def test_static_bool_and_int_are_different_signatures():
    f = jit(lambda x, s: x + np.full(2, s), static_argnums=1)
    ints = f(np.zeros(2, np.int64), 1)
    bools = f(np.zeros(2, bool), True)
    assert ints.dtype == np.int64 and bools.dtype == np.bool_
    assert f.compile_count == 2
    assert f(np.zeros(2, np.int64), 1).dtype == np.int64


def test_static_tuples_are_keyed_recursively():
    f = jit(lambda x, t: x / t[0] + t[1], static_argnums=1)
    assert f(np.ones(1), (0.0, 1))[0] == np.inf
    assert f(np.ones(1), (-0.0, 1))[0] == -np.inf
    assert f(np.ones(1), (1.0, True))[0] == 2.0
    assert f(np.ones(1), (1.0, 1))[0] == 2.0
    assert f.compile_count == 4


def test_unhashable_static_argument_is_a_clear_error():
    f = jit(lambda x, d: x, static_argnums=1)
    with pytest.raises(jitgrad.ArgumentError, match="hashable"):
        f(np.ones(1), {"a": 1})


# --------------------------------------------------------------------------- bounded cache

def test_cache_keeps_the_most_recently_used_signatures(small_cache):
    f = jit(lambda x: x * 2.0)
    for n in range(1, 11):
        np.testing.assert_allclose(f(np.ones(n)), 2.0)
    assert f.cache_size == 4 and f.compile_count == 10
    f(np.ones(10))                           # still cached
    assert f.compile_count == 10
    np.testing.assert_allclose(f(np.ones(1)), 2.0)   # dropped: compiled again
    assert f.compile_count == 11 and f.cache_size == 4


def test_dropped_signatures_free_their_machine_code(small_cache):
    g = jitgrad.grad(lambda x: np.sum(np.sin(x) ** 2))
    gc.collect()
    before = live()
    for n in range(1, 30):
        x = np.linspace(0, 1, n)
        g(x)
        g(x)                                 # the second call builds the native call path
    gc.collect()
    assert live() - before <= 4 + 1          # 4 signatures and one native call path
    del g
    gc.collect()
    assert live() <= before


def test_native_path_of_a_dropped_signature_is_dropped_too(small_cache):
    f = jit(lambda x: x + 1.0)
    x = np.ones(3)
    f(x)
    f(x)
    assert f._fast is not None
    for n in range(4, 9):
        f(np.ones(n))
    assert f._fast is None                   # its signature was evicted
    np.testing.assert_allclose(f(x), 2.0)


# --------------------------------------------------------------------------- recompile warning

def _recompile_warnings(run):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in caught if issubclass(w.category, jitgrad.RecompileWarning)]


def test_recompile_warning_names_the_changed_shape():
    f = jit(lambda x: x * 2.0)
    limit = config.recompile_warning_after
    messages = _recompile_warnings(lambda: [f(np.ones(n)) for n in range(1, limit + 4)])
    assert len(messages) == 1                # once per function
    assert f"compiled {limit + 1} times" in messages[0]
    assert f"argument 0 (x) changed from f64[{limit}] to f64[{limit + 1}]" in messages[0]


def test_recompile_warning_names_the_changed_static_value():
    f = jit(lambda x, n: x * n, static_argnums=1)
    limit = config.recompile_warning_after
    messages = _recompile_warnings(lambda: [f(np.ones(2), k) for k in range(limit + 1)])
    assert len(messages) == 1
    assert f"static argument 1 (n) changed from {limit - 1} (int) to {limit} (int)" in messages[0]


def test_recompile_warning_names_the_leaf_of_a_pytree_argument():
    f = jit(lambda scale, params: params["b"] * scale)
    limit = config.recompile_warning_after
    messages = _recompile_warnings(lambda: [f(2.0, {"a": np.ones(2), "b": np.ones(n)}) for n in range(1, limit + 2)])
    assert len(messages) == 1
    assert f"argument 1 (params) (leaf 1 of its pytree) changed from f64[{limit}] to f64[{limit + 1}]" in messages[0]


def test_no_warning_for_repeated_signatures():
    f = jit(lambda x: x * 2.0)
    assert _recompile_warnings(lambda: [f(np.ones(3)) for _ in range(50)]) == []


# --------------------------------------------------------------------------- clear_caches

def test_clear_caches_drops_every_compiled_signature():
    f = jit(lambda x: x - 1.0)
    g = jitgrad.grad(lambda x: np.sum(x ** 3))
    for _ in range(2):
        f(np.ones(2))
        g(np.ones(2))
    jitgrad.clear_caches()
    assert f.cache_size == 0 and g.cache_size == 0 and f._fast is None
    np.testing.assert_allclose(f(np.ones(2)), 0.0)
    np.testing.assert_allclose(g(np.ones(2)), 3.0)
    assert f.compile_count == 2


# --------------------------------------------------------------------------- resources

RESOURCES = textwrap.dedent("""
    import gc, os, sys
    import numpy as np
    import jitgrad
    from jitgrad.config import config
    from jitgrad.backends.cpu import engine
    config.cache_dir = None
    config.max_signatures_per_function = 8
    config.recompile_warning_after = 0
    live = engine.live_engine_count

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    g = jitgrad.grad(lambda x: np.sum(np.tanh(x) ** 2))
    for n in range(1, 11):
        g(np.ones(n)); g(np.ones(n))
    gc.collect()
    engines = live()
    for n in range(11, 71):
        g(np.ones(n)); g(np.ones(n))
    gc.collect()
    assert live() <= engines, (engines, live())

    w = np.ones(512)                          # a new batch every step, read from the closure
    for step in range(60):
        batch = np.full(512, step / 60.0)
        out, f_vjp = jitgrad.vjp(lambda w: np.tanh(w * batch), w)
        assert np.allclose(f_vjp(np.ones(512))[0], (1 - np.tanh(w * batch) ** 2) * batch)
        if step == 10:
            gc.collect()
            before, engines = rss_mib(), live()
    gc.collect()
    assert live() == engines, (engines, live())
    assert rss_mib() - before < 8, rss_mib() - before
    print("ok")
""")


def test_engines_and_memory_stay_bounded_over_many_shapes_and_steps():
    result = subprocess.run([sys.executable, "-c", RESOURCES], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and "ok" in result.stdout, (result.stdout[-2000:], result.stderr[-4000:])
