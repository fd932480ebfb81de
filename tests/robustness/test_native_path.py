"""The native call path and the loading of machine code: what used to crash the process
(0-d arguments, cache entries that are not what they claim to be) must give the right
answer, and the native function must own everything whose address it holds. Code that
could crash runs in a subprocess with a timeout: a crash is a test failure, not the end
of the test run."""
import gc
import os
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest

import jitgrad
from jitgrad.backends.cpu import CPUBackend, fastcall, live_engine_count
from jitgrad.backends.cpu.cache import CacheEntry, DiskCache
from jitgrad.config import config

X = np.linspace(-1.0, 1.0, 8)


def run_isolated(code: str, cache_dir: str | None = None, timeout: int = 120) -> str:
    """Run `code` in a fresh interpreter; its stdout. A crash or hang fails the test."""
    env = dict(os.environ, JITGRAD_TEST_CACHE=cache_dir or "")
    prologue = ("import os, numpy as np, jitgrad\n"
                "from jitgrad.config import config\n"
                "config.cache_dir = os.environ['JITGRAD_TEST_CACHE'] or None\n")
    result = subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"exit status {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result.stdout


def test_zero_dimensional_arguments_on_the_native_path():
    out = run_isolated("""
        def check(got, want):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12)
            assert np.shape(got) == np.shape(want), (np.shape(got), np.shape(want))

        def warm(f, *args):
            for _ in range(3):
                f(*args)
            assert type(f._fast).__name__ == "builtin_function_or_method"

        x = np.arange(3.0)
        f = jitgrad.jit(lambda x: x * 2.0)
        warm(f, np.ones(3))
        for scalar in (np.float64(1.5), x[1], np.array(2.0), np.int64(3), np.bool_(True), 2.5, np.float32(0.5)):
            check(f(scalar), np.asarray(scalar) * 2.0)
        check(f(np.ones(3)), np.full(3, 2.0))             # the native path still serves its signature

        g = jitgrad.grad(lambda x: np.sum(x ** 2))
        warm(g, np.ones(3))
        check(g(np.float64(3.0)), 6.0)
        check(g(np.array(-1.5)), -3.0)

        h = jitgrad.jit(lambda a, b: a * b + 1.0)           # the 0-d value as a second argument
        warm(h, np.ones(4), np.ones(4))
        check(h(np.ones(4), np.float64(2.0)), np.full(4, 3.0))
        check(h(np.ones(4), np.array(3.0)), np.full(4, 4.0))

        s = jitgrad.jit(lambda x: x * 2.0)                  # a native path built for a 0-d signature
        warm(s, np.array(2.0))
        check(s(np.float64(4.0)), 8.0)
        check(s(x[2]), 4.0)
        check(s(np.ones(3)), np.full(3, 2.0))
        check(s(np.ones((2, 2))), np.full((2, 2), 2.0))
        check(s(np.array(5.0)), 10.0)
        print("ok")
    """)
    assert out.strip().endswith("ok")


def test_native_function_owns_the_executable_and_frees_it_with_the_last_reference():
    fn = jitgrad.jit(lambda x: np.tanh(x) * 3.0).lower(X).function
    gc.collect()
    gc.disable()                                  # nothing below may depend on the cycle collector
    try:
        base = live_engine_count()
        executable = CPUBackend().compile(fn)
        native = executable.fast_call(lambda *args: "fallback", 0)
        assert live_engine_count() == base + 2    # the kernel's engine and the wrapper's
        kernel = weakref.ref(executable)
        del executable                            # the native function keeps the kernel alive
        assert kernel() is not None
        for _ in range(3):
            np.testing.assert_allclose(native(X), np.tanh(X) * 3.0, rtol=1e-12)
        assert native(np.ones(3)) == "fallback"
        del native
        assert kernel() is None and live_engine_count() == base
    finally:
        gc.enable()


def test_native_function_holds_its_fallback_method_weakly():
    fn = jitgrad.jit(lambda x: x + 1.0).lower(X).function
    executable = CPUBackend().compile(fn)

    class Owner:
        def slow(self, *args):
            return "slow path"
    owner = Owner()
    native = executable.fast_call(owner.slow, 0)
    assert native(0.5) == "slow path"
    alive = weakref.ref(owner)
    gc.disable()
    try:
        del owner
        assert alive() is None                     # no cycle through the native function
    finally:
        gc.enable()
    np.testing.assert_allclose(native(X), X + 1.0)
    with pytest.raises(jitgrad.JitgradError, match="outlived"):
        native(0.5)


def test_compiled_functions_free_their_engines():
    gc.collect()
    base = live_engine_count()
    fs = [jitgrad.jit(lambda x, k=k: x * k) for k in range(5)]
    for f in fs:
        for _ in range(3):
            f(X)
    assert live_engine_count() >= base + 10
    del fs, f
    gc.collect()
    assert live_engine_count() == base


def test_failed_output_allocation_releases_what_was_allocated():
    """The second output's allocation fails: the first output and the input buffers are
    released and the allocator's exception propagates."""
    fn = jitgrad.jit(lambda x: (x * 2.0, x + 1.0)).lower(X).function
    executable = CPUBackend().compile(fn)
    made = []

    def allocate(shape, dtype):
        if len(made) % 2:
            made.append(None)
            raise MemoryError("no room for the second output")
        out = np.empty(shape, dtype)
        made.append(weakref.ref(out))
        return out
    native = fastcall.native_call(executable, lambda *a: "fallback", (0, 1), allocate=allocate)
    x = X.copy()
    before = sys.getrefcount(x)
    for _ in range(50):
        with pytest.raises(MemoryError, match="second output"):
            native(x)
    assert all(ref is None or ref() is None for ref in made)
    assert sys.getrefcount(x) == before
    x[...] = 1.0                                   # no buffer export left behind
    ok = fastcall.native_call(executable, lambda *a: "fallback", (0, 1))
    a, b = ok(X)
    np.testing.assert_array_equal(a, X * 2.0)
    np.testing.assert_array_equal(b, X + 1.0)


def test_huge_second_output_raises_memory_error_without_leaking():
    f = jitgrad.jit(lambda x: (x * 2.0, np.broadcast_to(x[:1], (2 ** 22, 2 ** 22))))
    x = np.ones(2 ** 14)

    def failing_calls(n):
        failures = 0
        for _ in range(n):
            try:
                f(x)
            except MemoryError:
                failures += 1
        return failures
    assert failing_calls(3) == 3                  # the third call runs on the native path
    assert type(f._fast).__name__ == "builtin_function_or_method"
    gc.collect()
    blocks = sys.getallocatedblocks()
    assert failing_calls(300) == 300
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 50   # a leaked output is 2 blocks a call


def test_results_keep_no_extra_references_on_either_path():
    f = jitgrad.jit(lambda a, b: (a * b, (a + b, np.sum(a))))
    a, b = np.arange(6.0), np.ones(6)
    for _ in range(4):
        out = f(a, b)
    counts = [sys.getrefcount(out[0]), sys.getrefcount(out[1]), sys.getrefcount(out[1][0])]
    assert counts == [2, 2, 2]                    # the tuple's reference and getrefcount's own
    np.testing.assert_array_equal(out[1][0], a + b)
    assert out[1][1] == 15.0


# --------------------------------------------------------------------------- bad cache entries

def _object_of(fun, cache_dir) -> tuple[str, bytes]:
    """The cache key and object code of `fun` compiled for X into `cache_dir`."""
    saved = config.cache_dir
    config.cache_dir = str(cache_dir)
    try:
        before = set(os.listdir(cache_dir))
        jitgrad.jit(fun).lower(X)
        (name,) = [n for n in set(os.listdir(cache_dir)) - before if n.endswith(".o")]
    finally:
        config.cache_dir = saved
    key = name[:-2]
    return key, DiskCache(str(cache_dir)).load(key).object_code


def _truncated(code: bytes) -> bytes:
    return code[:len(code) // 2]


def _renamed_symbol(code: bytes) -> bytes:
    return code.replace(b"jitgrad_", b"jitgraX_")


DAMAGES = ["another program's object", "missing symbol", "random bytes", "random ELF bytes", "truncated object",
           "empty object"]


def test_cache_entries_with_valid_format_but_wrong_contents_are_recompiled(tmp_path):
    """Each damage in its own cache directory; one subprocess loads them all in turn and
    prints, per directory, whether the first compile came from the cache (it must not)
    and whether the one after did (the bad entry was replaced by a good one)."""
    rng = np.random.default_rng(0)
    directories = []
    for n, damage in enumerate(DAMAGES):
        cache_dir = tmp_path / f"cache{n}"
        cache_dir.mkdir(mode=0o700)
        key, good = _object_of(lambda x: np.sin(x) * 3.0, cache_dir)
        _, other = _object_of(lambda x: np.cos(x) + 1.0, cache_dir)
        bad = {"another program's object": other,
               "missing symbol": _renamed_symbol(good),
               "random bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
               "random ELF bytes": good[:20] + rng.integers(0, 256, len(good) - 20, dtype=np.uint8).tobytes(),
               "truncated object": _truncated(good),
               "empty object": b""}[damage]
        DiskCache(str(cache_dir)).store(key, CacheEntry(bad, "; not the IR"))
        directories.append(str(cache_dir))
    out = run_isolated(f"""
        x = np.linspace(-1.0, 1.0, 8)
        for directory in {directories!r}:
            config.cache_dir = directory
            lowered = jitgrad.jit(lambda x: np.sin(x) * 3.0).lower(x)
            np.testing.assert_allclose(lowered.executable([x])[0], np.sin(x) * 3.0, rtol=1e-12)
            again = jitgrad.jit(lambda x: np.sin(x) * 3.0).lower(x)
            print(lowered.executable.compiled.from_cache, again.executable.compiled.from_cache, flush=True)
    """)
    assert out.splitlines() == ["False True"] * len(DAMAGES), dict(zip(DAMAGES, out.splitlines()))


LARGE_CONSTANT_PROGRAM = """
def scaled_by(last):
    def scaled(x):
        c = np.arange(1.3e6)                # 10 MiB, made in the body: a constant of the program
        c[-1] = last
        return x * c
    return scaled
"""


def test_large_constants_enter_the_symbol_by_digest():
    """A 10 MiB constant is hashed into the function's symbol (which keys the caches) as
    the SHA-256 of its bytes, not printed: the name still changes with any byte, and the
    same program gets the same name in another process."""
    from jitgrad.backends.cpu.backend import SYMBOL_ARRAY_BYTES, _symbol
    from jitgrad.ir.printer import print_function

    namespace = {"np": np}
    exec(LARGE_CONSTANT_PROGRAM, namespace)
    x = np.linspace(0.0, 1.0, 1_300_000)
    lowered = {last: jitgrad.jit(namespace["scaled_by"](last)).lower(x) for last in (0.0, 1.0)}
    functions = {last: low.executable.function for last, low in lowered.items()}
    assert all(low.executable.constants for low in lowered.values())     # the constant is passed by reference
    text = print_function(functions[0.0], digest_arrays_over=SYMBOL_ARRAY_BYTES)
    assert "sha256:" in text and len(text) < 10_000, len(text)
    symbols = {last: _symbol(fn) for last, fn in functions.items()}
    assert symbols[0.0] != symbols[1.0]
    assert lowered[0.0].executable.symbol == symbols[0.0]
    for last in (0.0, 1.0):
        want = x * np.arange(1.3e6)
        want[-1] = x[-1] * last
        np.testing.assert_array_equal(jitgrad.jit(namespace["scaled_by"](last))(x), want)
    other_process = run_isolated(LARGE_CONSTANT_PROGRAM + """
from jitgrad.backends.cpu.backend import _symbol
x = np.linspace(0.0, 1.0, 1_300_000)
print(_symbol(jitgrad.jit(scaled_by(1.0)).lower(x).executable.function))
""")
    assert other_process.split()[-1] == symbols[1.0]
