"""Properties of the CPU code generator: vector-math accuracy, thread-count independent
bits, multi-output loop fusion, buffer reuse."""
import numpy as np
import pytest

import jitgrad
from jitgrad.config import config
from jitgrad.interpreter import evaluate

RNG = np.random.default_rng(3)
N = 1 << 16          # long enough for vector loops and the parallel path

# (NumPy function, input range); the bound, 4 ulp, is glibc libmvec's specification;
# measured maxima are in docs/benchmarks.md.
MATH = {
    "sin": (np.sin, (-100, 100)), "cos": (np.cos, (-100, 100)), "exp": (np.exp, (-80, 80)),
    "log": (np.log, (1e-3, 1e6)), "tanh": (np.tanh, (-20, 20)), "log1p": (np.log1p, (-0.99, 1e6)),
    "expm1": (np.expm1, (-50, 50)), "sqrt": (np.sqrt, (0, 1e10)),
}


def max_ulp(got, reference):
    """Largest error in units in the last place of got's dtype, against a float64 reference."""
    unit = np.abs(np.spacing(reference.astype(got.dtype))).astype(np.float64)
    return float(np.max(np.abs(got.astype(np.float64) - reference) / unit))


@pytest.mark.parametrize("name", sorted(MATH))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_math_accuracy(name, dtype):
    fn, (lo, hi) = MATH[name]
    x = RNG.uniform(lo, hi, N).astype(dtype)
    got = jitgrad.jit(fn)(x)
    assert got.dtype == dtype
    assert max_ulp(got, fn(x.astype(np.float64))) <= 4.0    # NumPy in float64 as the reference


def w1(x):
    return np.sum(np.sin(x) * np.exp(-x ** 2) + np.tanh(x))


def test_thread_count_does_not_change_bits():
    x = RNG.normal(size=N * 5 + 3)
    results = []
    saved = config.num_threads
    try:
        for threads in (1, 2, 3):
            config.num_threads = threads
            results.append(jitgrad.value_and_grad(w1)(x))
    finally:
        config.num_threads = saved
    for value, grad in results[1:]:
        assert value.tobytes() == results[0][0].tobytes()
        assert grad.tobytes() == results[0][1].tobytes()
    np.testing.assert_allclose(results[0][0], np.sum(np.sin(x) * np.exp(-x ** 2) + np.tanh(x)), rtol=1e-12)


def test_gradient_of_sum_is_one_pass_over_x():
    lowered = jitgrad.value_and_grad(w1).lower(RNG.normal(size=N))
    kernels = lowered.executable.schedule.kernels
    assert len(kernels) == 1 and kernels[0].fused and kernels[0].size == N
    assert lowered.executable.workspace_bytes < 64 * 1024   # no N-sized intermediates stored
    plan = lowered.as_text("kernels")
    assert "fused loop, 65536 iterations" in plan and "in registers" in plan


def test_buffers_with_disjoint_lifetimes_share_memory():
    w = RNG.normal(size=(64, 64)) / 8

    def deep(h):
        for _ in range(8):
            h = np.tanh(h @ w)
        return np.sum(h)
    x = RNG.normal(size=(64, 64))
    lowered = jitgrad.grad(deep).lower(x)
    memory = lowered.executable.memory
    assert memory.workspace_bytes < memory.unshared_bytes
    flat = [x, *lowered.read_captures()]        # w, read from the closure, is an implicit argument
    np.testing.assert_allclose(lowered.executable(flat)[0], evaluate(lowered.function, flat)[0], rtol=1e-12)
    report = dict(lowered.memory_report())
    assert report["compiled"] > 0 and report["traced"] > 0


def test_fused_kernels_agree_with_interpreter_on_mixed_shapes():
    def f(x, y):
        a = np.exp(-x * x)
        b = a * y + np.sin(a)
        return np.sum(b), np.max(a), b * 2.0, np.sum(b * b, axis=1)
    x, y = RNG.normal(size=(300, 200)), RNG.normal(size=(300, 200))
    lowered = jitgrad.jit(f).lower(x, y)
    got = lowered.executable([x, y])
    want = evaluate(lowered.function, [x, y])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12)


def test_elementwise_kernel_writes_in_place_over_a_dying_operand():
    w = RNG.normal(size=(32, 32))

    def f(x):
        a = x @ w
        b = np.tanh(a) * 2.0 + 1.0      # reads a element by element; a is dead afterwards
        return b @ w
    x = RNG.normal(size=(32, 32))
    lowered = jitgrad.jit(f).lower(x)
    plan, fn = lowered.executable.memory, lowered.function
    dots = [op.results[0] for op in fn.body.ops if op.name == "dot_general"]
    mapped = [v for v in plan.offsets if v.defining_op.name not in ("dot_general",)]
    assert mapped and plan.offsets[mapped[0]] == plan.offsets[dots[0]]
    assert plan.workspace_bytes == 32 * 32 * 8              # one slot serves both
    np.testing.assert_allclose(lowered.executable([x, *lowered.read_captures()])[0], f(x), rtol=1e-12)


def test_scalar_libm_fallback_without_libmvec(monkeypatch):
    from jitgrad.backends.cpu import engine
    monkeypatch.setattr(engine.VectorMath, "available", False)
    x = RNG.uniform(-5, 5, 4096)
    lowered = jitgrad.jit(lambda v: np.sin(v) * np.exp(-v * v) + np.tanh(v)).lower(x)
    assert "_ZGV" not in lowered.as_text("llvm")
    np.testing.assert_allclose(lowered.executable([x])[0], np.sin(x) * np.exp(-x * x) + np.tanh(x), rtol=1e-14,
                               atol=1e-15)


def test_running_gradient_sum_accumulates_in_the_output_buffer():
    w = RNG.normal(size=(16, 16)) / 4

    def shared_weight(w, x):
        h = x
        for _ in range(5):
            h = np.tanh(h @ w)
        return np.sum(h)
    x = RNG.normal(size=(8, 16))
    lowered = jitgrad.grad(shared_weight).lower(w, x)
    memory, fn = lowered.executable.memory, lowered.function
    assert any(out is fn.outputs[0] for out in memory.in_output.values())
    np.testing.assert_allclose(lowered.executable([w, x])[0], evaluate(fn, [w, x])[0], rtol=1e-12)
