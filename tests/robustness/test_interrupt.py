"""Ctrl-C during a long call — one long fused loop, or a chain of matrix products — stops
it at the next block or kernel boundary, the call raises KeyboardInterrupt at once, and
the function keeps working; a SIGINT handler that returns instead of raising gets the
complete result (the call runs again). In a subprocess, which the test interrupts with
a real SIGINT."""
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PROGRAMS = {
    "fused_loop": """
        STEPS = 60

        def waves(x):
            for _ in range(STEPS):
                x = np.sin(x) * 1.5
            return x, np.sum(x)

        def check(result):
            out, total = result
            x = ARGS[0][::997]
            for _ in range(STEPS):
                x = np.sin(x) * 1.5
            np.testing.assert_allclose(out[::997], x, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(total, np.sum(out), rtol=1e-12)

        f = jitgrad.jit(waves)
        ARGS = (np.linspace(0.0, 1.0, 36_000_000),)
        assert "fusion plan of @waves: 1 kernels" in f.lower(*ARGS).as_text("kernels")     # one long kernel
    """,
    "matrix_products": """
        def chain(a, w):                         # BLAS calls, stopped between them
            for _ in range(16):
                a = np.tanh(a @ w)
            return (a,)

        def check(result):
            a, w = ARGS[0][::50], ARGS[1]           # rows are independent: a sample of them
            for _ in range(16):
                a = np.tanh(a @ w)
            np.testing.assert_allclose(result[0][::50], a, rtol=1e-9, atol=1e-12)

        f = jitgrad.jit(chain)
        rng = np.random.default_rng(0)
        ARGS = (rng.standard_normal((1500, 1500)) / 30, rng.standard_normal((1500, 1500)) / 30)
    """,
}

HARNESS = """
    if NATIVE:                                  # the 2nd call installs the native call path
        f(*ARGS)
        f(*ARGS)
        assert f._fast is not None and f._fast_lowered.executable.stops_on_interrupt
    interrupted_call(f)

    start = time.monotonic()
    result = f(*ARGS)                           # the same signature, same workspace: still right
    print("full", time.monotonic() - start, flush=True)
    check(result)

    seen = []
    signal.signal(signal.SIGINT, lambda *args: seen.append(time.monotonic()))
    print("calling", time.monotonic(), flush=True)
    again = f(*ARGS)
    print("handled", seen[0] if seen else "never", flush=True)
    assert len(seen) == 1, seen
    assert all(np.array_equal(a, b) for a, b in zip(again, result)), "a handler that returns gets the complete result"
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if NATIVE:
        interrupted_native_call_releases_everything()
    print("ok", flush=True)
"""

PRELUDE = """
    import os, signal, sys, threading, time, weakref
    signal.signal(signal.SIGINT, signal.default_int_handler)   # a runner started in the background of a non-interactive shell ignores SIGINT, and children inherit it
    import numpy as np
    import jitgrad
    from jitgrad.config import config

    config.cache_dir = None

    def interrupted_call(function):
        print("calling", time.monotonic(), flush=True)          # the test sends SIGINT 0.3 s later
        try:
            function(*ARGS)
            print("finished", time.monotonic(), flush=True)
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)

    def interrupted_native_call_releases_everything():
        # The native call function of the same executable, with an output allocator that
        # keeps weak references: after the interrupted call nothing it allocated is alive,
        # and no input buffer view is held (a view holds a reference to its array).
        from jitgrad.backends.cpu.fastcall import native_call
        allocated = []

        def allocate(shape, dtype):
            out = np.empty(shape, dtype)
            allocated.append(weakref.ref(out))
            return out
        lowered = f._fast_lowered
        result = lowered.staged.unflatten(list(range(len(lowered.function.outputs))))
        native = native_call(lowered.executable, f._call, result, allocate)
        references = sys.getrefcount(ARGS[0])
        interrupted_call(native)
        assert allocated and all(ref() is None for ref in allocated), "outputs leaked"
        assert sys.getrefcount(ARGS[0]) == references, "an input buffer view was not released"
"""


@pytest.mark.parametrize("program, native", [(p, False) for p in sorted(PROGRAMS)] + [("fused_loop", True)],
                         ids=lambda v: {True: "native_path", False: "python_path"}.get(v, v))
def test_ctrl_c_stops_a_long_call_and_the_function_stays_usable(program, native):
    """On the native call path (from the third call of a signature on) as on the Python
    path. SIGINT comes from this process: a thread of the child could not send it while
    the native call holds the GIL."""
    script = (textwrap.dedent(PRELUDE) + f"NATIVE = {native}\n" + textwrap.dedent(PROGRAMS[program])
              + textwrap.dedent(HARNESS))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = []
    try:
        while True:
            line = proc.stdout.readline().split()
            lines.append(line)
            if not line or line[0] not in ("calling", "full"):
                break
            if line[0] == "calling":
                time.sleep(max(0.0, float(line[1]) + 0.3 - time.monotonic()))
                sent = time.monotonic()
                proc.send_signal(signal.SIGINT)
                reply = proc.stdout.readline().split()
                lines.append(reply)
                assert reply and reply[0] in ("interrupted", "handled"), (lines, proc.stderr.read())
                assert float(reply[1]) - sent < 0.5, f"{reply[0]} {float(reply[1]) - sent:.2f} s after the signal"
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, (lines, err)
    assert lines[-1] == ["ok"], (lines, err)
    full = float(next(line[1] for line in lines if line and line[0] == "full"))
    assert full > 0.3 + 0.5, f"the kernel ran {full:.2f} s: too short to show that it was stopped"
    assert sum(line[0] == "interrupted" for line in lines if line) == (2 if native else 1), lines


WATCHED_CALL_SCRIPT = textwrap.dedent("""
    import ctypes, os, signal, threading, time
    import numpy as np
    import llvmlite.binding as llvm
    from llvmlite import ir
    import jitgrad
    from jitgrad.backends.cpu.engine import compile_module
    from jitgrad.backends.cpu.llvm_support import I32, PTR, VOID
    from jitgrad.backends.cpu.runtime import KernelRuntime, install_interrupt_hook
    from jitgrad.config import config

    config.cache_dir = None

    def waves(x):
        for _ in range(60):
            x = np.sin(x) * 1.5
        return x, np.sum(x)

    X = np.linspace(0.0, 1.0, 36_000_000)
    executable = jitgrad.jit(waves).lower(X).executable
    assert executable.stops_on_interrupt

    # a caller in generated code, as the native call path would be: i32 caller(ptr args)
    module = ir.Module("caller")
    caller = ir.Function(module, ir.FunctionType(I32, [PTR]), "caller")
    b = ir.IRBuilder(caller.append_basic_block("entry"))
    kernel = ir.Function(module, ir.FunctionType(VOID, [PTR]), "watched.kernel")
    llvm.add_symbol(kernel.name, executable.kernel_address)
    b.ret(b.zext(KernelRuntime(module).watched_call(b, kernel, [caller.args[0]]), I32))
    compiled = compile_module(module, opt_level=1)
    call = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)(compiled.address("caller"))

    workspace = np.empty(executable.workspace_bytes + 64, np.uint8)
    out, total = np.empty_like(X), np.empty(())
    pointers = (ctypes.c_void_p * 4)(X.ctypes.data, out.ctypes.data, total.ctypes.data,
                                     (workspace.ctypes.data + 63) & ~63)
    start = time.monotonic()
    assert call(pointers) == 0
    full = time.monotonic() - start
    expected = executable([X])
    assert np.array_equal(out, expected[0]) and total == expected[1]

    seen = []
    signal.signal(signal.SIGINT, lambda *args: seen.append(time.monotonic()))
    assert install_interrupt_hook()               # in front of the handler just installed
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    start = time.monotonic()
    status = call(pointers)
    stopped = time.monotonic() - start
    assert status == 1 and len(seen) == 1, (status, seen)
    assert stopped < 0.3 + 0.5 < full, (stopped, full)
    print("ok", flush=True)
""")


def test_generated_callers_can_watch_for_ctrl_c():
    """The primitive a native call path uses: the kernel stops, the caller learns it."""
    result = subprocess.run([sys.executable, "-c", WATCHED_CALL_SCRIPT], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split()[-1] == "ok"


def test_a_long_call_that_starts_with_a_large_constant_compiles():
    """The interrupt watch is read at the top of the entry block; a first kernel that
    only loads a large constant leaves the builder in that block (it used to be left
    mid-block there, and LLVM rejected the IR)."""
    import numpy as np
    import jitgrad

    def scaled(x):
        return x * np.arange(1.3e6)

    x = np.linspace(0.0, 1.0, 1_300_000)
    lowered = jitgrad.jit(scaled).lower(x)
    assert lowered.executable.stops_on_interrupt and lowered.executable.constants
    np.testing.assert_array_equal(jitgrad.jit(scaled)(x), scaled(x))
