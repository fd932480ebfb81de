"""`fork` after libgomp ran a parallel kernel: the child's libgomp believes its worker
threads exist and waits for them forever, so a forked child must run kernels on its one
thread; `fork` while another thread compiles must not leave the LLVM lock held in the
child. Each scenario runs in a subprocess with a timeout (a hang fails the test instead
of stopping the suite), and every forked child is waited for with a timeout as well."""
import subprocess
import sys
import textwrap

import pytest

PRELUDE = textwrap.dedent("""
    import os, sys, threading, time
    import multiprocessing
    import numpy as np
    import jitgrad
    from jitgrad.backends.cpu import engine
    from jitgrad.config import config

    config.cache_dir = None
    config.num_threads = 2
    X = np.linspace(-1.0, 1.0, 1 << 21)       # 2M elements of sin and cos: a parallel kernel

    def waves(x):
        return np.sin(x) * 2.0 + np.cos(x)

    def total(x):
        return np.sum(np.sin(x) * x)

    f, g = jitgrad.jit(waves), jitgrad.jit(total)
    EXPECTED, TOTAL = f(X), g(X)
    if engine.Threads.available:              # without libgomp kernels are serial: the rest still applies
        text = f.lower(X).as_text("llvm")
        assert "GOMP_parallel" in text or "jitgrad_pool_run" in text
        assert len(os.listdir("/proc/self/task")) > 1, "the pool's worker threads should exist before the fork"

    def wait(pid, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.02)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return "hung"

    def in_child(check):
        pid = os.fork()
        if pid == 0:
            try:
                code = 0 if check() else 3
            except BaseException as err:
                print("child:", repr(err), flush=True)
                code = 4
            os._exit(code)
        return wait(pid)
""")

SCENARIOS = {
    "fork_after_a_parallel_kernel": """
        def check():
            return np.array_equal(f(X), EXPECTED) and g(X) == TOTAL and np.array_equal(f(X), EXPECTED)
        status = in_child(check)
        assert status == 0, status
        assert np.array_equal(f(X), EXPECTED) and g(X) == TOTAL     # the parent still runs in parallel
        assert len(os.listdir("/proc/self/task")) > 1 or not engine.Threads.available
    """,
    "multiprocessing_pool_with_fork": """
        def work(scale):
            return g(X * scale)
        expected = [g(X * s) for s in (1.0, 2.0, 3.0)]
        with multiprocessing.get_context("fork").Pool(2) as pool:
            assert pool.map_async(work, [1.0, 2.0, 3.0]).get(timeout=60) == expected
    """,
    "fork_while_another_thread_compiles": """
        def long_compile():
            def chain(x):
                for k in range(60):
                    x = np.tanh(x * 1.01 + k) + np.sin(x)
                return np.sum(x)
            results.append(jitgrad.grad(chain)(X))
        results = []
        thread = threading.Thread(target=long_compile)
        thread.start()
        deadline = time.monotonic() + 30
        while not engine._llvm_lock.locked() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert engine._llvm_lock.locked(), "the other thread never started compiling"

        def check():
            h = jitgrad.jit(lambda x: np.exp(np.sin(x)) - 1.0)
            return np.allclose(h(X), np.exp(np.sin(X)) - 1.0, rtol=1e-12, atol=1e-15)
        status = in_child(check)
        assert status == 0, status
        thread.join(timeout=120)
        assert len(results) == 1 and np.isfinite(results[0]).all()
    """,
    "compile_a_new_function_in_the_child": """
        def check():
            h = jitgrad.jit(lambda x: np.sum(np.cos(x) * 3.0))
            k = jitgrad.grad(lambda x: np.sum(np.sin(x) ** 2))
            return (np.isclose(h(X), np.sum(np.cos(X) * 3.0), rtol=1e-9)
                    and np.allclose(k(X), 2 * np.sin(X) * np.cos(X), rtol=1e-12, atol=1e-15))
        status = in_child(check)
        assert status == 0, status
    """,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_fork(scenario):
    script = PRELUDE + textwrap.dedent(SCENARIOS[scenario]) + "\nprint('ok')\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
