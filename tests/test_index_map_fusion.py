"""Index maps inside fused loops: slices, reversals, zero paddings and concatenations are
read inside their consumers' fused loop, which runs over an N-d iteration space (rows of
a contiguous, vectorized inner axis, split where a padding or concatenation changes
operand along it) instead of kernels and buffers of their own.

Checked here: the plans (kernel counts, no scatter or gather kernels), values against
NumPy running the same code over shapes that cut rows, reduction chunks and parallel
blocks in every way, the same bits as the unfused plan wherever an element is computed
by IEEE operations only, the same bits for every thread count, and no read outside an
input buffer (guard pages on both sides, in a subprocess).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jitgrad
from jitgrad.config import config


def tv(u):
    dx = u[1:, :-1] - u[:-1, :-1]
    dy = u[:-1, 1:] - u[:-1, :-1]
    return np.sum(np.sqrt(dx * dx + dy * dy + 1e-6))


def stencil(x):
    return np.sum((x[1:] - x[:-1]) ** 2)


def diff_both_axes(u):
    return np.sum(np.diff(u, axis=0) ** 2) + np.sum(np.abs(np.diff(u, axis=1)))


def rolled(x):
    return np.sum((np.concatenate([x[-3:], x[:-3]]) - x) ** 2)


def rolled_columns(u):
    return np.sum(np.concatenate([u[:, -1:], u[:, :-1]], axis=1) * u / (1.0 + u * u))


def reversed_rows_and_columns(u):
    return np.sum(u * u[::-1, ::-1] + np.flip(u, axis=1) * 0.5)


def strided(u):
    a, b = u[::2, 1::3], u[1::2, ::3]
    r, c = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return np.sum(np.sqrt(np.abs(a[:r, :c] - b[:r, :c]) + 1.0))


def cube(x):
    return np.sum((x[1:, :, ::-1] - x[:-1]) ** 2 / (1.0 + x[1:] ** 2))


def concatenated_pieces(u):
    """Three pieces on the last axis, one of them empty, one reversed."""
    joined = np.concatenate([u[:, 2:], u[:, :0], u[:, :2][:, ::-1]], axis=1)
    return np.sum(joined * u - np.pad(u[:, 1:], ((0, 0), (0, 1))))


def transcendental(u):
    return np.sum(np.sin(np.diff(u, axis=1)[1:]) * np.exp(np.diff(u, axis=0)[:, 1:] * 0.1))


PROGRAMS = [tv, stencil, diff_both_axes, rolled, rolled_columns, reversed_rows_and_columns, strided, cube,
            concatenated_pieces, transcendental]
RANK = {stencil: 1, rolled: 1, cube: 3}
SHAPES = {1: [(7,), (1025,), (40_003,)], 2: [(4, 5), (3, 1030), (37, 41), (130, 97)], 3: [(4, 5, 6), (9, 17, 31)]}


def numpy_gradient(f, x, eps=1e-6):
    """Central differences along a few random directions (independent of jitgrad)."""
    rng = np.random.default_rng(3)
    directions = [rng.standard_normal(x.shape) for _ in range(2)]
    return [(f(x + eps * d) - f(x - eps * d)) / (2 * eps) for d in directions], directions


def cases():
    for f in PROGRAMS:
        for shape in SHAPES[RANK.get(f, 2)]:
            yield pytest.param(f, shape, id=f"{f.__name__}-{'x'.join(map(str, shape))}")


@pytest.mark.parametrize("f, shape", list(cases()))
def test_value_and_gradient_match_numpy(f, shape):
    x = np.random.default_rng(1).standard_normal(shape)
    value, grad = jitgrad.jit(jitgrad.value_and_grad(f))(x)
    np.testing.assert_allclose(value, f(x), rtol=1e-12, atol=1e-12)
    slopes, directions = numpy_gradient(f, x)
    for slope, d in zip(slopes, directions, strict=True):
        np.testing.assert_allclose(np.vdot(grad, d), slope, rtol=1e-6, atol=1e-6 * np.sqrt(x.size))


def kernels_of(f, x) -> str:
    return jitgrad.jit(jitgrad.value_and_grad(f)).lower(x).as_text("kernels")


@pytest.mark.parametrize("f, shape, count", [(tv, (9, 7), 2), (stencil, (50,), 2), (rolled, (50,), 2),
                                             (reversed_rows_and_columns, (6, 8), 1), (diff_both_axes, (6, 8), 4)])
def test_plans_have_no_data_movement_kernels(f, shape, count):
    """Every kernel is a fused loop: slices, reversals, paddings and concatenations are
    index maps inside them (the TV-energy gradient: the forward pass with the three
    gradient contributions, then the sum of four shifted paddings)."""
    plan = kernels_of(f, np.random.default_rng(0).standard_normal(shape))
    loops = [line for line in plan.splitlines() if line.startswith("kernel ") and "(constant)" not in line]
    assert len(loops) == count and all("fused loop" in line for line in loops), plan


def test_a_member_read_through_an_index_map_starts_a_new_kernel():
    """A member is kept in a register only at the position being computed: a later value
    that reads it reversed loads it from its buffer in a kernel of its own."""
    def f(x):
        y = np.exp(x * 0.5)
        return y * 2.0 + y[::-1]
    x = np.linspace(-1.0, 1.0, 11)
    plan = jitgrad.jit(f).lower(x).as_text("kernels")
    assert plan.splitlines()[0].endswith(": 2 kernels"), plan
    np.testing.assert_allclose(jitgrad.jit(f)(x), f(x), rtol=1e-14)


def ieee_only(u):
    """Elementwise outputs computed by +, -, *, / and sqrt only: the same bits whatever
    the loop shape that computes them."""
    dx = u[1:, :-1] - u[:-1, :-1]
    dy = np.concatenate([u[:-1, 2:], u[:-1, :1]], axis=1) - u[:-1, :-1]
    s = np.sqrt(dx * dx + dy * dy + 1e-6)
    return dx / s + np.flip(dy, axis=0) * 0.5, np.pad(s, ((1, 0), (0, 1))) - u[::-1] * 2.0


@pytest.mark.parametrize("shape", [(5, 6), (33, 1030), (600, 900)])
def test_same_bits_as_the_unfused_plan(shape):
    u = np.random.default_rng(2).standard_normal(shape)
    saved = config.fusion
    try:
        config.fusion = False
        unfused = jitgrad.jit(ieee_only)(u)
        config.fusion = True
        fused = jitgrad.jit(ieee_only)(u)
    finally:
        config.fusion = saved
    for a, b, expected in zip(fused, unfused, ieee_only(u), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, expected)


def test_same_bits_for_every_thread_count():
    """Large enough to run on threads in fixed blocks: blocks straddle rows and reduction
    chunks, and the results do not depend on how many threads run them."""
    u = np.random.default_rng(4).standard_normal((700, 1003))
    saved = config.num_threads
    results = []
    try:
        for threads in (1, 2, 3):
            config.num_threads = threads
            results.append(jitgrad.jit(jitgrad.value_and_grad(transcendental))(u))
    finally:
        config.num_threads = saved
    for value, grad in results[1:]:
        np.testing.assert_array_equal(value, results[0][0])
        np.testing.assert_array_equal(grad, results[0][1])
    np.testing.assert_allclose(results[0][0], transcendental(u), rtol=1e-12)


@pytest.mark.parametrize("f, shape", [(tv, (6, 7)), (rolled, (9,)), (rolled_columns, (4, 6)),
                                      (concatenated_pieces, (3, 5)), (cube, (3, 4, 5))])
def test_a_backend_with_flat_fused_loops_agrees(f, shape):
    """The kernel layer's own fused loop (flat, multi-indices by division, every
    concatenation a select) — what targets without the CPU's row segments run — gives the
    CPU's values on the same plan (tests/test_second_backend.py's interpreter)."""
    from jitgrad.backends import register_backend, unregister_backend
    from test_second_backend import DEVICE, PythonBackend
    x = np.random.default_rng(6).standard_normal(shape)
    fun = jitgrad.jit(jitgrad.value_and_grad(f))
    cpu_value, cpu_grad = fun(x)
    cpu_plan = kernels_of(f, x)
    assert " over " in cpu_plan             # a fused kernel with an iteration shape
    register_backend(DEVICE, PythonBackend)
    saved = config.device
    try:
        config.device = DEVICE
        value, grad = fun(x)
        assert fun.lower(x).as_text("kernels") == cpu_plan
    finally:
        config.device = saved
        unregister_backend(DEVICE)
    np.testing.assert_allclose(value, cpu_value, rtol=1e-12)
    np.testing.assert_allclose(grad, cpu_grad, rtol=1e-12, atol=1e-14)


GUARDED = textwrap.dedent("""
    import ctypes, mmap, sys
    import numpy as np
    import jitgrad
    sys.path.insert(0, {tests!r})
    from test_index_map_fusion import PROGRAMS, RANK

    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    PAGE = mmap.PAGESIZE
    keep = []

    def guarded(x, at_end):
        '''A copy of x right after (at_end False) or right before an unreadable page.'''
        pages = -(-x.nbytes // PAGE)
        buf = mmap.mmap(-1, (pages + 2) * PAGE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        assert libc.mprotect(addr, PAGE, 0) == 0
        assert libc.mprotect(addr + (pages + 1) * PAGE, PAGE, 0) == 0
        offset = (pages + 1) * PAGE - x.nbytes if at_end else PAGE
        y = np.frombuffer(buf, x.dtype, x.size, offset).reshape(x.shape)
        y[...] = x
        keep.append(buf)
        return y

    shapes = {{1: (1001,), 2: (13, 37), 3: (5, 7, 9)}}
    for f in PROGRAMS:
        x = np.random.default_rng(0).standard_normal(shapes[RANK.get(f, 2)])
        g = jitgrad.jit(jitgrad.value_and_grad(f))
        for at_end in (False, True):
            value, grad = g(guarded(x, at_end))
            assert np.isclose(value, f(x), rtol=1e-12, atol=1e-12), f.__name__
    print("ok")
""")


def test_index_maps_never_read_outside_their_buffers(tmp_path):
    """Inputs placed against unreadable pages on either side: a read past either end
    of a buffer kills the child with SIGSEGV."""
    import os
    script = tmp_path / "guarded.py"
    script.write_text(GUARDED.format(tests=os.path.dirname(__file__)))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (run.returncode, run.stdout, run.stderr[-2000:])
