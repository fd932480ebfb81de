"""Code generation tiers of the CPU backend must not change a single output bit. A first
call runs the quick code (LLVM's quick code generator, engine.QUICK_CODEGEN_LEVEL); a
second call runs the full code, generated from the same optimized IR with jitgrad's
options (engine.CODEGEN_OPTIONS: loop strength reduction off). Each program below is
compiled from scratch and run at both tiers, and once more with LLVM's default full code
generation, and every output is compared bit for bit. The programs cover what machine
code could change: reductions (reassociated within their vector lanes), transcendental
math (libmvec vector calls and scalar libm remainders), contractions (BLAS calls between
loops), index maps, cumulative and sorting loops, and loop regions."""
import llvmlite.binding as llvm
import numpy as np
import pytest

import jitgrad as jg
from jitgrad.backends.cpu import engine
from jitgrad.config import config


def w1(x):
    return np.sum(np.sin(x) * np.exp(-x ** 2) + np.tanh(x))


def mlp(W1, b1, W2, b2, x, y):
    h = np.tanh(x @ W1 + b1)
    logits = h @ W2 + b2
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return np.mean(-np.sum(y * log_probs, axis=1))


def total_variation(u):
    dx = u[1:, :-1] - u[:-1, :-1]
    dy = u[:-1, 1:] - u[:-1, :-1]
    return np.sum(np.sqrt(dx * dx + dy * dy + 1e-6))


def statistics_f32(x):
    return np.mean(x, axis=0), np.var(x, axis=1), np.std(x), np.linalg.norm(x, axis=1)


def cumulative_and_sorted(x, idx):
    return np.cumsum(np.log1p(x * x), axis=1), np.sort(x, axis=0), x[idx] * np.cbrt(x[idx]), np.cumprod(x[:, :5] * 0.5, axis=1)


def batched_contractions(a, b, v):
    return np.einsum("bij,bjk->bik", a, b), np.tanh(a @ v), np.arctan2(a[:, :, 0], a[:, :, 1] + 0.5)


def rnn(h0, xs, W):
    def step(h, x):
        h = np.tanh(h @ W + x)
        return h, np.sum(h * h)
    h, ys = jg.scan(step, h0, xs)
    return np.sum(h) + np.sum(ys)


def newton(x):
    return jg.fori_loop(0, 12, lambda i, z: z - (z * z * z - x) / (3.0 * z * z), x + 1.0)


def _mlp_args(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((67, 49)).astype(dtype)
    y = np.eye(10, dtype=dtype)[rng.integers(0, 10, 67)]
    return (rng.standard_normal((49, 33)).astype(dtype) / 7, rng.standard_normal(33).astype(dtype),
            rng.standard_normal((33, 10)).astype(dtype) / 6, rng.standard_normal(10).astype(dtype), x, y)


def _programs():
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal(100_003)
    m = rng.standard_normal((123, 37))
    return {
        "w1 grad f64": (jg.grad(w1), (x64,)),
        "w1 grad f32": (jg.grad(w1), (x64.astype(np.float32),)),
        "w1 value f32": (jg.jit(w1), (x64[:1001].astype(np.float32),)),
        "mlp value_and_grad f32": (jg.value_and_grad(mlp, argnums=(0, 1, 2, 3)), _mlp_args(np.float32)),
        "mlp value_and_grad f64": (jg.value_and_grad(mlp, argnums=(0, 1, 2, 3)), _mlp_args(np.float64)),
        "total variation value_and_grad": (jg.value_and_grad(total_variation), (rng.standard_normal((301, 257)),)),
        "statistics f32": (jg.jit(statistics_f32), (m.astype(np.float32),)),
        "cumulative, sort, gather": (jg.jit(cumulative_and_sorted), (m, rng.integers(0, 123, 50))),
        "cumulative grad": (jg.grad(lambda x: np.sum(np.cumsum(np.log1p(x * x), axis=1) ** 2)), (m,)),
        "batched contractions": (jg.jit(batched_contractions),
                                 (rng.standard_normal((4, 9, 7)), rng.standard_normal((4, 7, 5)),
                                  rng.standard_normal(7))),
        "rnn scan grad": (jg.grad(rnn, argnums=(0, 2)),
                          (rng.standard_normal((3, 8)), rng.standard_normal((20, 3, 8)),
                           rng.standard_normal((8, 8)) / 3)),
        "fori_loop newton": (jg.jit(newton), (np.abs(rng.standard_normal(1031)) + 0.5,)),
    }


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [np.asarray(tree)]


def _tiers(transformed, args):
    """Outputs of a compile from scratch (no disk cache): its first call (quick code),
    its second call (full code) and the executable, checking that each tier ran."""
    saved = config.cache_dir
    config.cache_dir = None
    try:
        fn = jg.jit(transformed)
        first = _leaves(fn(*args))
        executable = fn.lower(*args).executable
        assert executable.compiled.quick and not executable.compiled.from_cache
        second = _leaves(fn(*args))
        assert not executable.compiled.quick
        return first, second
    finally:
        config.cache_dir = saved


def _assert_same_bits(outputs, expected, what):
    assert len(outputs) == len(expected)
    for ours, theirs in zip(outputs, expected, strict=True):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert ours.tobytes() == theirs.tobytes(), what      # NaNs and signed zeros included


def _with_default_codegen(monkeypatch):
    monkeypatch.setattr(engine, "CODEGEN_OPTIONS", ())


@pytest.mark.parametrize("name", list(_programs()))
def test_every_tier_gives_the_same_bits(name, monkeypatch):
    transformed, args = _programs()[name]
    quick, full = _tiers(transformed, args)
    _assert_same_bits(quick, full, f"{name}: quick code against full code")
    _with_default_codegen(monkeypatch)
    _, default = _tiers(transformed, args)
    _assert_same_bits(full, default, f"{name}: full code against LLVM's default code generation")


def _object_code(optimized_ir: str) -> bytes:
    with engine._llvm_lock:
        module = llvm.parse_assembly(optimized_ir)
        return engine.create_target_machine(reloc="pic").emit_object(module)


def test_codegen_options_change_the_machine_code_and_are_reset():
    """The comparison above is between different machine code (else it would test
    nothing), and the options do not outlive jitgrad's code generation."""
    x = np.random.default_rng(2).standard_normal(1003)
    optimized = jg.grad(w1).lower(x).as_text("llvm-opt")
    before = _object_code(optimized)
    with engine._llvm_lock, engine.codegen_options():
        module = llvm.parse_assembly(optimized)
        reduced = engine.create_target_machine(reloc="pic").emit_object(module)
    assert reduced != before
    assert _object_code(optimized) == before


def test_disk_cache_keeps_each_tier_apart(monkeypatch, tmp_path):
    """A first compile stores its quick code; the full code, once made, is stored under
    its own key (which holds the code generation options) and is what a later compile
    loads; code made under other options is not taken from the cache."""
    saved = config.cache_dir
    config.cache_dir = str(tmp_path)
    try:
        x = np.random.default_rng(4).standard_normal(77)
        compiled = jg.jit(w1).lower(x).executable.compiled
        assert compiled.quick and not compiled.from_cache
        again = jg.jit(w1).lower(x).executable
        assert again.compiled.quick and again.compiled.from_cache
        again.use_full_code()
        assert not again.compiled.quick and not again.compiled.from_cache
        full = jg.jit(w1).lower(x).executable.compiled
        assert not full.quick and full.from_cache
        _with_default_codegen(monkeypatch)
        other = jg.jit(w1).lower(x).executable.compiled
        assert other.quick and other.from_cache          # the quick code does not depend on them
        other_full = jg.jit(w1).lower(x).executable
        other_full.use_full_code()
        assert not other_full.compiled.from_cache
    finally:
        config.cache_dir = saved


# --------------------------------------------------------------------------- outlined loops in place

def test_parallel_loop_writing_in_place_takes_the_vector_path():
    """tanh written in place over a product's buffer, in a loop outlined for threads, gives
    the bits of the same loop reading an argument: both run the vectorized loop (libmvec)
    rather than one of them falling back to the scalar loop (scalar libm, other bits) when
    LLVM's run-time overlap check sees the same buffer behind two pointers."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((256, 256)).astype(np.float32) / 8
    b = rng.standard_normal((256, 256)).astype(np.float32)
    c = rng.standard_normal((256, 10)).astype(np.float32)
    in_place = jg.jit(lambda a, b, c: np.tanh(a @ b) @ c)      # tanh's result overwrites a @ b
    from_argument = jg.jit(np.tanh)
    # the same BLAS calls as jitgrad's, so the same bits around the tanh
    assert in_place(a, b, c).tobytes() == (from_argument(a @ b) @ c).tobytes()
    optimized = in_place.lower(a, b, c).as_text("llvm-opt")
    from jitgrad.backends.cpu import thread_pool
    if config.threads_pool == "jitgrad" and thread_pool.available():
        assert thread_pool.RUN in optimized
    elif engine.Threads.available and engine.Threads.beside_blas:
        assert "GOMP_parallel" in optimized
    if engine.VectorMath.available:
        assert "_ZGV" in optimized and "v_tanhf" in optimized


def test_full_code_replaces_quick_code_under_concurrent_calls():
    """Threads calling one executable while its quick code is replaced all get the same
    bits (a call already running keeps the code it started in), and the quick code's
    engine is freed once no call runs it."""
    import threading
    saved = config.cache_dir
    config.cache_dir = None
    try:
        x = np.random.default_rng(6).standard_normal(200_001)
        executable = jg.jit(jg.grad(w1)).lower(x).executable
        assert executable.compiled.quick
        engines_before = engine.live_engine_count()
        expected = executable([x])[0].tobytes()
        results, start = [], threading.Barrier(4)

        def calls():
            start.wait()
            for _ in range(5):
                results.append(executable([x])[0].tobytes())

        threads = [threading.Thread(target=calls) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(results) == 20 and all(r == expected for r in results)
        assert not executable.compiled.quick
        del threads, calls
        assert engine.live_engine_count() == engines_before
    finally:
        config.cache_dir = saved


def test_nan_from_two_nan_operands_is_a_nan_at_every_tier():
    """The one difference between tiers: which of two NaN operands a commutative x86
    instruction propagates depends on the registers the code generator chose, so a NaN made
    from two NaNs may differ in sign and payload (as NumPy's own do between layouts); it is
    a NaN at the same positions, and every other element has the same bits."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal(4099)
    b = rng.standard_normal(4099)
    a[::3], b[::5] = np.nan, -np.nan
    quick, full = _tiers(lambda a, b: (a + b, a * b, np.maximum(a, b) - np.sum(a * 0.0 + b)), (a, b))
    for q, f in zip(quick, full, strict=True):
        assert np.array_equal(np.isnan(q), np.isnan(f))
        assert np.where(np.isnan(q), 0.0, q).tobytes() == np.where(np.isnan(f), 0.0, f).tobytes()
