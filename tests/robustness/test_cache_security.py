"""The disk cache holds machine code that jitgrad runs, so whoever can write to it could
make this process run their code: these tests plant what such a person could plant
(symbolic links, FIFOs, entries under another key, a shared or foreign directory) and
check that nothing of it is loaded, followed, blocked on or deleted."""
import os
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import jitgrad
from jitgrad.backends.cpu import cache as cache_module
from jitgrad.backends.cpu.cache import CacheEntry, CacheSecurityWarning, DiskCache, cache_key
from jitgrad.config import config

X = np.linspace(-2.0, 2.0, 64)
KEY = cache_key("an entry")


def f(x):
    return np.sum(np.sin(x) * x)


def expected(x):
    return np.cos(x) * x + np.sin(x)


@pytest.fixture
def private_dir(tmp_path):
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def cache_dir(private_dir):
    saved = config.cache_dir
    config.cache_dir = str(private_dir)
    yield private_dir
    config.cache_dir = saved


def entries(directory):
    return sorted(p.name for p in directory.iterdir() if p.suffix == ".o" and not p.name.startswith("."))


def compile_fresh():
    lowered = jitgrad.grad(f).lower(X)             # a new Compiled: no in-memory cache
    return lowered, lowered.executable.compiled


def refused(directory, uid=None) -> str:
    """The warning a DiskCache over `directory` gives (it must give one, and be unusable)."""
    with pytest.warns(CacheSecurityWarning) as record:
        cache = DiskCache(str(directory), uid=uid)
    assert not cache.usable
    cache.store(KEY, CacheEntry(b"code", "ir"))
    assert cache.load(KEY) is None
    return str(record[0].message)


# --------------------------------------------------------------------------- the directory

def test_a_new_directory_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        cache = DiskCache(str(tmp_path / "parent" / "cache"))
    finally:
        os.umask(old)
    assert cache.usable
    assert (tmp_path / "parent" / "cache").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "parent" / "cache" / "hmac-key").stat().st_mode & 0o777 == 0o600


def test_the_test_session_cache_directory_passes_the_checks():
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheSecurityWarning)
        assert DiskCache(config.cache_dir).usable


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o1777])
def test_group_or_world_writable_directory_is_refused(private_dir, mode):
    private_dir.chmod(mode)
    assert "writable by" in refused(private_dir)


def test_symlinked_directory_is_refused(tmp_path, private_dir):
    link = tmp_path / "link"
    link.symlink_to(private_dir)
    assert "symbolic link" in refused(link)
    assert list(private_dir.iterdir()) == []


def test_directory_of_another_user_is_refused(private_dir):
    assert "owned by uid" in refused(private_dir, uid=os.geteuid() + 1)


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="chown to another user needs root; the injected-uid test covers the check")
def test_directory_chowned_to_another_user_is_refused(private_dir):
    os.chown(private_dir, 12345, 12345)
    assert "owned by uid 12345" in refused(private_dir)


def test_a_refused_directory_warns_once_and_compiles_without_the_cache(tmp_path, private_dir):
    private_dir.chmod(0o777)
    saved = config.cache_dir
    config.cache_dir = str(private_dir)
    try:
        with pytest.warns(CacheSecurityWarning):
            lowered, compiled = compile_fresh()
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheSecurityWarning)
            lowered, compiled = compile_fresh()
    finally:
        config.cache_dir = saved
    assert not compiled.from_cache and entries(private_dir) == []
    np.testing.assert_allclose(lowered.executable([X])[0], expected(X), rtol=1e-12)


@pytest.mark.parametrize("damage", ["mode", "symlink", "fifo", "short"])
def test_key_file_that_is_not_a_private_regular_file_is_refused(tmp_path, private_dir, damage):
    key = private_dir / "hmac-key"
    if damage == "mode":
        key.write_bytes(os.urandom(32))
        key.chmod(0o644)
    elif damage == "symlink":
        (tmp_path / "elsewhere").write_bytes(os.urandom(32))
        (tmp_path / "elsewhere").chmod(0o600)
        key.symlink_to(tmp_path / "elsewhere")
    elif damage == "fifo":
        os.mkfifo(key, 0o600)
    else:
        key.write_bytes(b"short")
        key.chmod(0o600)
    assert "key file" in refused(private_dir)


# --------------------------------------------------------------------------- entries

def test_entry_written_under_another_key_is_rejected_and_rebuilt(tmp_path, cache_dir):
    compile_fresh()
    (name,) = entries(cache_dir)
    other = tmp_path / "other"
    forged = DiskCache(str(other))                 # same format, another secret
    good = DiskCache(str(cache_dir)).load(name[:-2])
    assert good is not None
    forged.store(name[:-2], good)
    os.replace(other / name, cache_dir / name)
    assert DiskCache(str(cache_dir)).load(name[:-2]) is None
    lowered, compiled = compile_fresh()
    assert not compiled.from_cache
    np.testing.assert_allclose(lowered.executable([X])[0], expected(X), rtol=1e-12)
    assert compile_fresh()[1].from_cache           # the rebuilt entry carries this directory's tag


def test_entry_with_one_flipped_bit_is_rejected(cache_dir):
    compile_fresh()
    (name,) = entries(cache_dir)
    data = bytearray((cache_dir / name).read_bytes())
    data[len(data) // 2] ^= 1
    (cache_dir / name).write_bytes(bytes(data))
    assert not compile_fresh()[1].from_cache


def test_symlinked_entry_is_not_followed(tmp_path, private_dir):
    cache = DiskCache(str(private_dir))
    cache.store(KEY, CacheEntry(b"code", "ir"))
    target = tmp_path / "target.o"
    os.replace(private_dir / f"{KEY}.o", target)    # a valid entry, but reached through a link
    (private_dir / f"{KEY}.o").symlink_to(target)
    assert cache.load(KEY) is None
    assert target.read_bytes().startswith(cache_module.MAGIC)
    cache.store(KEY, CacheEntry(b"code", "ir"))     # replaces the link itself, not its target
    assert not (private_dir / f"{KEY}.o").is_symlink() and cache.load(KEY).object_code == b"code"


def test_fifo_entry_neither_hangs_nor_loads(private_dir):
    """In a subprocess with a timeout: a blocking open of a FIFO would never return."""
    os.mkfifo(private_dir / f"{KEY}.o", 0o600)
    script = textwrap.dedent(f"""
        from jitgrad.backends.cpu.cache import DiskCache
        cache = DiskCache({str(private_dir)!r})
        assert cache.usable
        assert cache.load({KEY!r}) is None
        cache.prune(max_bytes=0)
        print("done")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


def test_entry_of_another_owner_is_not_loaded(private_dir):
    cache = DiskCache(str(private_dir))
    cache.store(KEY, CacheEntry(b"code", "ir"))
    assert cache.load(KEY) is not None
    cache.uid = os.geteuid() + 1                    # as if the file belonged to someone else
    assert cache.load(KEY) is None


def test_keys_cannot_name_paths_outside_the_directory(private_dir):
    with pytest.raises(ValueError, match="64 lowercase hex"):
        DiskCache(str(private_dir)).load("../../etc/passwd")


# --------------------------------------------------------------------------- prune and temp files

def test_prune_removes_only_what_the_cache_wrote(tmp_path, private_dir):
    cache = DiskCache(str(private_dir))
    cache.store(KEY, CacheEntry(b"x" * 1000, "ir"))
    keep = {
        "foo.o": b"a user's object file",
        "notes.txt": b"random",
        f"{cache_key('mine?')}.o": b"\x7fELF not the cache's magic",
        ".hidden.o": b"x",
    }
    for name, data in keep.items():
        (private_dir / name).write_bytes(data)
    (tmp_path / "outside.o").write_bytes(cache_module.MAGIC + b"x")
    (private_dir / f"{cache_key('link')}.o").symlink_to(tmp_path / "outside.o")
    cache.prune(max_bytes=0)
    assert not (private_dir / f"{KEY}.o").exists()
    for name, data in keep.items():
        assert (private_dir / name).read_bytes() == data
    assert (tmp_path / "outside.o").exists() and (private_dir / f"{cache_key('link')}.o").is_symlink()
    assert (private_dir / "hmac-key").exists()


def test_failed_write_leaves_no_temporary_file(private_dir, monkeypatch):
    cache = DiskCache(str(private_dir))

    def disk_full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cache_module.os, "replace", disk_full)
    cache.store(KEY, CacheEntry(b"code", "ir"))
    assert sorted(p.name for p in private_dir.iterdir()) == ["hmac-key"]


def test_prune_removes_stale_temporary_files_only(private_dir):
    cache = DiskCache(str(private_dir))
    stale, fresh = private_dir / ".tmp-crashed1.o", private_dir / ".tmp-writing2.o"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    old = time.time() - 2 * cache_module.STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    cache.prune()
    assert not stale.exists() and fresh.exists()


# --------------------------------------------------------------------------- the key

def test_same_program_from_three_working_directories_makes_one_entry(tmp_path):
    program = tmp_path / "prog" / "model.py"
    program.parent.mkdir()
    program.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        import jitgrad
        from jitgrad.config import config
        config.cache_dir = sys.argv[1]

        def loss(x):
            return np.sum(np.sin(x) * x)

        lowered = jitgrad.grad(loss).lower(np.linspace(0.0, 1.0, 16))
        print(int(lowered.executable.compiled.from_cache))
    """))
    cache = tmp_path / "cache"
    hits = []
    for cwd, path in [(program.parent, "model.py"), (tmp_path, "prog/model.py"), (tmp_path / "prog", str(program))]:
        result = subprocess.run([sys.executable, path, str(cache)], cwd=cwd, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        hits.append(result.stdout.strip())
    assert hits == ["0", "1", "1"]
    assert len(entries(cache)) == 1


def test_processes_creating_the_key_at_once_agree_on_one(tmp_path):
    """The key is linked into place from a complete private file: every process reads
    the same 32 bytes, none a partial key or its own."""
    directory = tmp_path / "fresh"
    script = textwrap.dedent(f"""
        import hashlib, sys, time
        from jitgrad.backends.cpu.cache import DiskCache
        time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
        cache = DiskCache({str(directory)!r})
        print(hashlib.sha256(cache._secret).hexdigest() if cache.usable else "refused")
    """)
    start = time.time() + 1.5                       # all processes past their imports
    procs = [subprocess.Popen([sys.executable, "-c", script, str(start)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    digests = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert len(digests) == 1 and "refused" not in digests
    assert sorted(p.name for p in directory.iterdir()) == ["hmac-key"]
