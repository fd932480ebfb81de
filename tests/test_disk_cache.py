"""The on-disk cache of compiled code: hits for the same program, rebuilds for corrupt
entries and other versions, never crashes."""
import os

import numpy as np
import pytest

import jitgrad
from jitgrad.backends.cpu import engine
from jitgrad.backends.cpu.cache import CacheSecurityWarning
from jitgrad.config import config

X = np.linspace(-2.0, 2.0, 64)


def f(x):
    return np.sum(np.sin(x) * x)


@pytest.fixture
def cache_dir(tmp_path):
    saved = config.cache_dir
    config.cache_dir = str(tmp_path)
    yield tmp_path
    config.cache_dir = saved


def entries(directory):
    """The cache's entries (the directory also holds its HMAC key file)."""
    return sorted(p for p in directory.iterdir() if p.suffix == ".o")


def compile_fresh():
    lowered = jitgrad.grad(f).lower(X)             # a new Compiled object: no in-memory cache
    return lowered, lowered.executable.compiled


def test_same_program_hits_the_cache(cache_dir):
    first, compiled = compile_fresh()
    assert not compiled.from_cache and len(entries(cache_dir)) == 1
    second, compiled = compile_fresh()
    assert compiled.from_cache
    np.testing.assert_array_equal(second.executable([X])[0], first.executable([X])[0])
    assert "define" in second.as_text("llvm-opt")


@pytest.mark.parametrize("damage", [b"", b"garbage", None])
def test_corrupt_entries_are_rebuilt(cache_dir, damage):
    compile_fresh()
    (entry,) = entries(cache_dir)
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2] if damage is None else damage)
    lowered, compiled = compile_fresh()
    assert not compiled.from_cache
    np.testing.assert_allclose(lowered.executable([X])[0], np.cos(X) * X + np.sin(X), rtol=1e-12)
    assert compile_fresh()[1].from_cache               # and the rebuilt entry is good


def test_another_version_misses(cache_dir, monkeypatch):
    compile_fresh()
    monkeypatch.setattr(jitgrad, "__version__", "999.0")
    assert not compile_fresh()[1].from_cache
    assert len(entries(cache_dir)) == 2


def test_unwritable_cache_directory_only_costs_a_compile(tmp_path):
    target = tmp_path / "file-not-dir"
    target.write_text("x")
    saved = config.cache_dir
    config.cache_dir = str(target)
    try:
        with pytest.warns(CacheSecurityWarning, match="not a directory"):
            lowered, compiled = compile_fresh()
        assert not compiled.from_cache
        np.testing.assert_allclose(lowered.executable([X])[0], np.cos(X) * X + np.sin(X), rtol=1e-12)
    finally:
        config.cache_dir = saved


def test_cache_key_names_cpu_and_versions():
    key_a = engine.cache_key("ir", "3", "znver4", "+avx2", "22.1", "0.50", "0.1.0")
    key_b = engine.cache_key("ir", "3", "znver3", "+avx2", "22.1", "0.50", "0.1.0")
    key_c = engine.cache_key("ir", "3", "znver4", "+avx2", "22.1", "0.50", "0.2.0")
    assert len({key_a, key_b, key_c}) == 3


def test_pruning_keeps_the_most_recently_used_entries(tmp_path):
    import time as _time
    from jitgrad.backends.cpu.cache import CacheEntry, DiskCache, cache_key
    cache = DiskCache(str(tmp_path))
    keys = [cache_key(f"k{k}") for k in range(5)]
    for k, key in enumerate(keys):
        cache.store(key, CacheEntry(b"x" * 1000, "ir"))
        stamp = _time.time() - 100 + k
        os.utime(tmp_path / f"{key}.o", (stamp, stamp))
    assert cache.load(keys[0]) is not None        # k0 used again: now the most recent
    cache.prune(max_bytes=3 * 1200)
    assert [p.name for p in entries(tmp_path)] == sorted(f"{keys[k]}.o" for k in (0, 3, 4))
