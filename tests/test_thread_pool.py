"""jitgrad's own thread pool (backends/cpu/thread_pool.py, `config.threads_pool =
"jitgrad"`): every block runs exactly once whoever claims it, for any block count and
thread count, with concurrent and nested callers, after `fork` and at exit; and compiled
functions give bit-identical results on either pool and every thread count."""
import ctypes
import subprocess
import sys
import threading

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

import jitgrad as jg
from jitgrad.backends.cpu import thread_pool
from jitgrad.backends.cpu.engine import _llvm_lock, create_target_machine, initialize
from jitgrad.backends.cpu.llvm_support import I32, I64, PTR, VOID, declare, for_range
from jitgrad.config import config

pytestmark = pytest.mark.skipif(not thread_pool.available(), reason="the pool needs Linux on x86-64")

SLOTS = 5
"""The test kernel's closure: counts (i64 per block), threads (pthread_self per block),
spin iterations per block, nested block count (0: none), where the nested job's counts
start."""


def _build_kernel() -> ir.Module:
    """`outer(closure, first, last)`: for each block, count it (atomic add), note the
    thread, spin a while; with a nested count, run `inner` (counting into the second half
    of counts: each of its blocks is counted once per outer block) through the pool from
    inside the block. `go(closure, blocks, threads)`
    calls the pool with `outer`."""
    module = ir.Module("pool_test")
    self_thread = declare(module, "pthread_self", I64, [])
    run = declare(module, thread_pool.RUN, VOID, [PTR, PTR, I64, I32])

    def slot(b, closure, k):
        return b.load(b.gep(closure, [ir.Constant(I64, k)], source_etype=I64), typ=I64)

    def body(name, nested_counts, nest):
        fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I64]), name)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        closure, first, last = fn.args
        counts, tids = (b.inttoptr(slot(b, closure, k), PTR) for k in (0, 1))
        spin, nested = slot(b, closure, 2), slot(b, closure, 3)
        sink = b.alloca(I64)
        with for_range(b, b.sub(last, first)) as k:
            block = b.add(first, k)
            at = b.add(block, slot(b, closure, 4)) if nested_counts else block
            b.atomic_rmw("add", b.gep(counts, [at], source_etype=I64), ir.Constant(I64, 1), "seq_cst")
            b.store(b.call(self_thread, []), b.gep(tids, [at], source_etype=I64))
            with for_range(b, spin) as j:
                b.store_atomic(j, sink, "monotonic", 8)
            if nest is not None:
                with b.if_then(b.icmp_signed(">", nested, ir.Constant(I64, 0))):
                    b.call(run, [nest, closure, nested, ir.Constant(I32, 0)])
        b.ret_void()
        return fn

    inner = body("inner", True, None)
    outer = body("outer", False, inner)
    go = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I32]), "go")
    b = ir.IRBuilder(go.append_basic_block("entry"))
    b.call(run, [outer, *go.args])
    b.ret_void()
    return module


_kernel = {}


def pool_kernel():
    """`go(closure, blocks, threads)` as a ctypes function (compiled once)."""
    if not _kernel:
        initialize()
        target = create_target_machine()
        thread_pool.load(target)
        with _llvm_lock:
            engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(_build_kernel())), target)
            engine.finalize_object()
        _kernel["engine"] = engine
        _kernel["go"] = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32)(
            engine.get_function_address("go"))
    return _kernel["go"]


def run_blocks(blocks: int, threads: int, spin: int = 0, nested: int = 0):
    """(per-block run counts, per-block thread ids) of one pool job."""
    counts = np.zeros(blocks + nested + 1, np.int64)
    tids = np.zeros_like(counts)
    closure = (ctypes.c_int64 * SLOTS)(counts.ctypes.data, tids.ctypes.data, spin, nested, blocks)
    pool_kernel()(ctypes.addressof(closure), blocks, threads)
    return counts, tids


@pytest.mark.parametrize("blocks", [0, 1, 2, 3, 5, 64, 1000])
@pytest.mark.parametrize("threads", [0, 1, 2, 3, 8])
def test_every_block_runs_exactly_once(blocks, threads):
    counts, tids = run_blocks(blocks, threads, spin=200)
    np.testing.assert_array_equal(counts[:blocks], 1)
    assert counts[blocks:].sum() == 0                  # nothing outside the job's blocks
    if threads:
        assert len(set(tids[:blocks].tolist())) <= threads


def test_one_thread_runs_on_the_caller():
    _, tids = run_blocks(50, 1, spin=100)
    caller = ctypes.CDLL(None).pthread_self
    caller.restype = ctypes.c_uint64
    assert set(tids[:50].astype(np.uint64).tolist()) == {caller()}


def test_back_to_back_jobs_never_run_a_stale_block():
    """Thousands of two-block jobs: a worker waking late for an earlier job must find it
    closed, never run its block again or a block of the next job twice."""
    for _ in range(3000):
        counts, _ = run_blocks(2, 0)
        assert counts[0] == 1 and counts[1] == 1 and counts[2] == 0


def test_concurrent_callers_each_get_their_own_results():
    failures = []

    def caller(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(150):
                blocks = int(rng.integers(0, 40))
                counts, _ = run_blocks(blocks, int(rng.integers(0, 4)), spin=int(rng.integers(0, 300)))
                if not (np.all(counts[:blocks] == 1) and counts[blocks:].sum() == 0):
                    failures.append((seed, blocks, counts.tolist()))
        except Exception as error:                      # pragma: no cover - reported below
            failures.append(error)

    callers = [threading.Thread(target=caller, args=(seed,)) for seed in range(6)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in callers)
    assert failures == []


def test_a_block_may_call_the_pool_again():
    """A nested job finds the pool busy and runs its blocks on its own thread."""
    blocks, nested = 6, 5
    counts, _ = run_blocks(blocks, 0, spin=50, nested=nested)
    np.testing.assert_array_equal(counts[:blocks], 1)
    np.testing.assert_array_equal(counts[blocks:blocks + nested], blocks)
    assert counts[blocks + nested] == 0


def test_the_setting_is_checked():
    with pytest.raises(ValueError, match="threads_pool"):
        config.threads_pool = "openmp"
    assert config.threads_pool in thread_pool.POOLS


# --------------------------------------------------------------------------- compiled functions

def w1_loss(x):
    return np.sum(np.sin(x) * np.exp(-x ** 2) + np.tanh(x))


def mlp_loss(W, X):
    h = np.tanh(X @ W)
    return np.sum(np.sin(h) * np.exp(-h * h)) + np.sum(np.cos(X) * 0.5)


def compiled_under(pool, threads, fn, *args):
    saved = config.threads_pool, config.num_threads
    config.threads_pool, config.num_threads = pool, threads
    try:
        f = jg.jit(jg.value_and_grad(fn, argnums=tuple(range(len(args)))))
        return f(*args), f.lower(*args).as_text("llvm")
    finally:
        config.threads_pool, config.num_threads = saved


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bit_identical_across_pools_and_thread_counts(dtype):
    x = np.random.default_rng(1).standard_normal(300_000).astype(dtype)
    (v1, (g1,)), text = compiled_under("gomp", 1, w1_loss, x)
    for pool, threads in (("jitgrad", 1), ("jitgrad", 2), ("jitgrad", 3), ("jitgrad", 0), ("gomp", 0)):
        (v, (g,)), text = compiled_under(pool, threads, w1_loss, x)
        assert v == v1 and v.dtype == v1.dtype
        np.testing.assert_array_equal(g, g1)
        if pool == "jitgrad" and threads != 1:
            assert thread_pool.RUN in text and "GOMP_parallel" not in text
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(v1, w1_loss(x64), rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(g1, np.exp(-x64 ** 2) * (np.cos(x64) - 2 * x64 * np.sin(x64)) + 1 / np.cosh(x64) ** 2,
                               rtol=1e-4 if dtype == np.float32 else 1e-9, atol=1e-6 if dtype == np.float32 else 1e-14)


def test_programs_calling_blas_run_their_loops_on_the_pool():
    rng = np.random.default_rng(3)
    W, X = rng.standard_normal((64, 256)) / 8, rng.standard_normal((4096, 64))
    (v1, g1), _ = compiled_under("gomp", 1, mlp_loss, W, X)
    (v, g), text = compiled_under("jitgrad", 0, mlp_loss, W, X)
    assert thread_pool.RUN in text and "scipy_cblas_dgemm64_" in text
    assert v == v1
    for a, b in zip(g, g1, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(v1, mlp_loss(W, X), rtol=1e-12)


FORK_AND_EXIT = """
import os, sys
import numpy as np, jitgrad as jg
from jitgrad.config import config
from jitgrad.backends.cpu import thread_pool
config.threads_pool = "jitgrad"
def loss(x):
    return np.sum(np.sin(x) * np.exp(-x ** 2) + np.tanh(x))
x = np.random.default_rng(2).standard_normal(400_000)
f = jg.jit(jg.grad(loss))
parent = f(x)
assert thread_pool.worker_count() >= (1 if thread_pool.default_workers() else 0)
pid = os.fork()
if pid == 0:
    same = all(np.array_equal(f(x), parent) for _ in range(20))
    g = jg.jit(jg.grad(lambda x: np.sum(np.cos(x) * x)))
    fresh = np.allclose(g(x), -np.sin(x) * x + np.cos(x), rtol=1e-12, atol=1e-14)
    workers = min(1, thread_pool.default_workers()) <= thread_pool.worker_count() <= thread_pool.default_workers()
    print("child", same, fresh, workers, flush=True)
    os._exit(0 if same and fresh and workers else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert all(np.array_equal(f(x), parent) for _ in range(20))
print("ok", thread_pool.worker_count())
"""


def test_fork_child_computes_with_a_new_pool_and_exit_is_clean():
    """In a subprocess (a hang must not stop the test run): the parent's workers exist,
    the forked child computes the same bits (its own workers are created afresh), and
    the interpreter exits with workers asleep in the pool."""
    done = subprocess.run([sys.executable, "-c", FORK_AND_EXIT], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["child True True True", f"ok {done.stdout.split()[-1]}"]


def test_the_pool_falls_back_to_libgomp_where_unavailable(monkeypatch):
    from jitgrad.backends.cpu.engine import Threads
    assert isinstance(thread_pool.threads_for(3, "jitgrad"), thread_pool.PoolThreads)
    monkeypatch.setattr(thread_pool, "available", lambda: False)
    fallback = thread_pool.threads_for(3, "jitgrad")
    assert fallback is None if not Threads.available else (type(fallback) is Threads and fallback.count == 3)
    assert not getattr(fallback, "claims_blocks", False)


def test_changing_the_pool_compiles_again():
    x = np.linspace(-1, 2, 300_000)
    f = jg.jit(w1_loss)
    saved = config.threads_pool
    try:
        config.threads_pool = "gomp"
        gomp_text = f.lower(x).as_text("llvm")
        config.threads_pool = "jitgrad"
        pool_text = f.lower(x).as_text("llvm")
        np.testing.assert_allclose(f(x), w1_loss(x), rtol=1e-12)
    finally:
        config.threads_pool = saved
    assert thread_pool.RUN in pool_text and thread_pool.RUN not in gomp_text
