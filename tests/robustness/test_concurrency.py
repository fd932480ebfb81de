"""Many threads making the first calls of the same compiled functions at once: each
signature compiles once, every thread gets the right answer, and nothing crashes. The
stress runs in a subprocess (a crash there is a failed test, not a dead test run)."""
import subprocess
import sys
import textwrap

STRESS = textwrap.dedent("""
    import sys, threading, time
    import numpy as np
    import jitgrad
    from jitgrad.config import config

    config.cache_dir = None                      # every first call really compiles
    THREADS, ROUNDS = 8, int(sys.argv[1])
    failures = []

    def cases(round_):
        n = 4 + round_ % 5                       # a few shapes, each new per round
        x = np.linspace(-1.0, 1.0, n)
        W = np.linspace(0.5, 1.5, n)
        return [
            (jitgrad.grad(lambda x: np.sum(x ** 2)), x, 2 * x),
            (jitgrad.jit(lambda x: np.tanh(x) * 2.0), x, np.tanh(x) * 2.0),
            (jitgrad.value_and_grad(lambda x: np.sum(np.sin(x))), x, (np.sum(np.sin(x)), np.cos(x))),
            (jitgrad.grad(lambda x: np.sum((W * x) ** 2)), x, 2 * W ** 2 * x),
            (jitgrad.jit(lambda x: x @ x), x[:3], x[:3] @ x[:3]),
        ]

    def check(got, want):
        if isinstance(want, tuple):
            return all(check(g, w) for g, w in zip(got, want))
        return np.allclose(got, want, rtol=1e-12, atol=1e-12)

    start = time.perf_counter()
    for round_ in range(ROUNDS):
        work = cases(round_)
        barrier = threading.Barrier(THREADS)

        def worker(k):
            barrier.wait()
            for i in range(len(work)):
                fn, x, want = work[(i + k) % len(work)]
                for _ in range(3):                    # first calls, then the native path
                    got = fn(x)
                    if not check(got, want):
                        failures.append((round_, k, i, got, want))
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for fn, _, _, in ((c[0], None, None) for c in work):
            if fn.compile_count != 1:
                failures.append((round_, "compiled", fn.name, fn.compile_count))
    print("rounds", ROUNDS, "seconds", round(time.perf_counter() - start, 2), "failures", failures[:5])
    sys.exit(1 if failures else 0)
""")


def test_eight_threads_making_first_calls_compile_once_and_agree():
    result = subprocess.run([sys.executable, "-c", STRESS, "12"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (result.returncode, result.stdout[-2000:], result.stderr[-4000:])
    assert "failures []" in result.stdout


FORK_DURING_TRACE = textwrap.dedent("""
    import os, threading, time
    import numpy as np
    import jitgrad
    from jitgrad.config import config
    config.cache_dir = None
    tracing = threading.Event()

    def slow(x):
        tracing.set()
        time.sleep(1.0)                      # the tracing thread holds this signature's lock
        return x * 2.0
    f = jitgrad.jit(slow)
    worker = threading.Thread(target=f, args=(np.ones(3),))
    worker.start()
    tracing.wait()
    pid = os.fork()
    if pid == 0:                             # the child compiles the same signature itself
        import signal
        signal.alarm(60)                     # a hung child ends itself rather than outlive the test
        ok = np.allclose(f(np.ones(3)), 2.0) and np.allclose(jitgrad.grad(lambda x: np.sum(x * x))(np.ones(2)), 2.0)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    worker.join()
    print("child", os.waitstatus_to_exitcode(status), "parent", np.allclose(f(np.ones(3)), 2.0))
""")


def test_fork_while_another_thread_compiles_the_same_signature():
    result = subprocess.run([sys.executable, "-c", FORK_DURING_TRACE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert "child 0 parent True" in result.stdout
