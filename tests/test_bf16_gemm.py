"""Products of bfloat16 operands: the native AVX-512 BF16 kernel (backends/cpu/bf16_gemm.py)
where the host has it, the widened float32 path (sgemm) otherwise or with
`config.native_bf16 = False`.

On a host with AVX-512 BF16 the kernel's results are checked bit for bit against a NumPy
model of what it computes (each product exact in float32, one float32 accumulator per
element, k in pairs: odd element then even); on any host against a float64 reference
with the documented bound and against NumPy's own bfloat16 matmul."""
from __future__ import annotations

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import jitgrad
from jitgrad.backends.cpu.bf16_gemm import KC_PAIRS, host_has_native_bf16, worth_native
from jitgrad.config import config

BF16 = np.dtype(ml_dtypes.bfloat16)
NATIVE = host_has_native_bf16()


@pytest.fixture
def native_bf16():
    saved = config.native_bf16
    yield
    config.native_bf16 = saved


def kernel_model(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """What the native kernel computes for (m, k) @ (k, n) bfloat16: products exact in
    float32; for each block of 2 KC_PAIRS k, a float32 sum from zero taking pair q as
    element 2q+1 then 2q, pairs in k order; the block sums added to C in order (inputs
    here are normal numbers: no denormal flushing)."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    c = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for start in range(0, a.shape[1], 2 * KC_PAIRS):
        acc = np.zeros_like(c)
        for q in range(start, min(start + 2 * KC_PAIRS, a.shape[1]), 2):
            for kk in (q + 1, q):
                if kk < a.shape[1]:
                    acc = acc + a32[:, kk, None] * b32[None, kk, :]
        c = c + acc if start else acc
    return c


def bound(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|C - A@B| <= (min(k, 2 KC) + k / 2 KC + 1) 2^-24 (|A| @ |B|) + k 2^-126: float32
    sums of exact products in blocks of 2 KC_PAIRS."""
    k = a.shape[1]
    additions = min(k, 2 * KC_PAIRS) + -(-k // (2 * KC_PAIRS))
    return (additions * 2.0 ** -24 * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))
            + k * 2.0 ** -126)


def random_bf16(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(BF16)


def assert_within_bound(c, a, b):
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert c.dtype == np.float32
    assert np.all(np.abs(c - exact) <= bound(a, b))


def asm_of(f, *args) -> str:
    return f.lower(*args).as_text("asm")


LAYOUTS = {
    "A@B": lambda a, b: a @ b,
    "A.T@B": lambda at, b: at.T @ b,
    "A@B.T": lambda a, bt: a @ bt.T,
    "A.T@B.T": lambda at, bt: at.T @ bt.T,
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (3, 5, 7), (2, 16, 5), (3, 17, 2), (8, 32, 2), (9, 33, 3), (17, 70, 301),
                                     (64, 64, 256), (20, 40, 1000), (1, 100, 1), (100, 1, 5), (5, 20, 1)])
def test_every_layout_and_edge_shape(native_bf16, layout, m, n, k):
    config.native_bf16 = True
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a, b = random_bf16(rng, (m, k)), random_bf16(rng, (k, n))
    args = (np.ascontiguousarray(a.T) if layout.startswith("A.T") else a,
            np.ascontiguousarray(b.T) if layout.endswith("B.T") else b)
    f = jitgrad.jit(LAYOUTS[layout])
    c = f(*args)
    np.testing.assert_array_equal(np.asarray(LAYOUTS[layout](*args)).shape, c.shape)
    assert_within_bound(c, a, b)
    np.testing.assert_allclose(c, LAYOUTS[layout](*args), rtol=0, atol=np.max(2 * bound(a, b)))   # NumPy's own
    if NATIVE and worth_native(m, n, k):
        np.testing.assert_array_equal(c, kernel_model(a, b))
        assert "vdpbf16ps" in asm_of(f, *args)
    else:
        assert "vdpbf16ps" not in asm_of(f, *args)


def test_native_and_fallback_paths_agree_within_the_bound(native_bf16):
    rng = np.random.default_rng(1)
    a, b = random_bf16(rng, (70, 300)), random_bf16(rng, (300, 45))
    config.native_bf16 = False
    fallback = jitgrad.jit(lambda x, y: x @ y)
    widened = fallback(a, b)
    asm = asm_of(fallback, a, b)
    assert "vdpbf16ps" not in asm and "sgemm" in asm
    np.testing.assert_array_equal(widened, a.astype(np.float32) @ b.astype(np.float32))    # the same sgemm
    config.native_bf16 = True
    native = jitgrad.jit(lambda x, y: x @ y)
    assert ("vdpbf16ps" in asm_of(native, a, b)) == NATIVE
    assert_within_bound(native(a, b), a, b)
    np.testing.assert_allclose(native(a, b), widened, rtol=0, atol=np.max(2 * bound(a, b)))


def test_switching_the_setting_between_calls_compiles_again(native_bf16):
    rng = np.random.default_rng(2)
    a, b = random_bf16(rng, (16, 64)), random_bf16(rng, (64, 32))
    f = jitgrad.jit(lambda x, y: x @ y)
    config.native_bf16 = True
    first = f.lower(a, b).as_text("asm")
    config.native_bf16 = False
    second = f.lower(a, b).as_text("asm")
    assert "vdpbf16ps" not in second and ("vdpbf16ps" in first) == NATIVE
    np.testing.assert_array_equal(f(a, b), a.astype(np.float32) @ b.astype(np.float32))


def test_batched_and_broadcast_products(native_bf16):
    config.native_bf16 = True
    rng = np.random.default_rng(3)
    a, b, w = random_bf16(rng, (3, 10, 40)), random_bf16(rng, (3, 40, 33)), random_bf16(rng, (40, 9))
    batched = jitgrad.jit(lambda x, y: x @ y)(a, b)
    broadcast = jitgrad.jit(lambda x, y: x @ y)(a, w)
    for i in range(3):
        assert_within_bound(batched[i], a[i], b[i])
        assert_within_bound(broadcast[i], a[i], w)
        if NATIVE:
            np.testing.assert_array_equal(batched[i], kernel_model(a[i], b[i]))
    # NumPy broadcasts the widened float32 matrix (a view of a float32 copy): the float32 path
    np.testing.assert_array_equal(broadcast, a.astype(np.float32) @ w.astype(np.float32))


def test_threads_give_the_same_bits(native_bf16):
    """Row blocks are shared among threads; each element is one thread's, in k order."""
    config.native_bf16 = True
    saved = config.num_threads
    rng = np.random.default_rng(4)
    a, b = random_bf16(rng, (300, 256)), random_bf16(rng, (256, 130))
    try:
        results = []
        for threads in (1, 2):
            config.num_threads = threads
            results.append(jitgrad.jit(lambda x, y: x @ y)(a, b))
    finally:
        config.num_threads = saved
    np.testing.assert_array_equal(results[0], results[1])
    assert_within_bound(results[0], a, b)


def test_threaded_product_in_a_forked_child():
    """libgomp's pool does not survive fork: the child's product runs its row blocks on
    its one thread (runtime.py's flag) and gives the same bits (contained in a process)."""
    script = """
import os, numpy as np, ml_dtypes, jitgrad
jitgrad.config.config.num_threads = 2
rng = np.random.default_rng(7)
a = rng.standard_normal((300, 256)).astype(ml_dtypes.bfloat16)
b = rng.standard_normal((256, 130)).astype(ml_dtypes.bfloat16)
f = jitgrad.jit(lambda x, y: x @ y)
first = f(a, b)
pid = os.fork()
if pid == 0:
    os._exit(0 if np.array_equal(f(a, b), first) else 3)
print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child 0"


def test_infinities_nans_and_denormal_flushing(native_bf16):
    """inf and nan propagate as in float32; products below float32's normal range are
    flushed to zero by the instruction, an absolute error within k 2^-126."""
    config.native_bf16 = True
    a = np.array([[1.0, 2.0, np.inf, 1.0], [np.nan, 1.0, 1.0, 1.0], [2.0 ** -70, 2.0 ** -70, 0.0, 0.0]], BF16)
    b = np.array([[1.0, 1.0], [1.0, -1.0], [1.0, 0.0], [1.0, 1.0]], BF16)
    b_tiny = np.array([[2.0 ** -70, 1.0], [2.0 ** -70, 1.0], [1.0, 1.0], [1.0, 1.0]], BF16)
    f = jitgrad.jit(lambda x, y: x @ y)
    with np.errstate(invalid="ignore"):
        want = a.astype(np.float32) @ b.astype(np.float32)
    got = f(a, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(want)], want[~np.isnan(want)])
    tiny = f(a[2:], b_tiny)
    exact = a[2:].astype(np.float64) @ b_tiny.astype(np.float64)
    assert abs(tiny[0, 0] - exact[0, 0]) <= 4 * 2.0 ** -126          # 2 * 2^-140: 0 where flushed
    np.testing.assert_array_equal(tiny[0, 1], np.float32(2.0 ** -69))


def w2_loss_bf16_activations(params, x, y):
    """The W2 MLP with each product's result cast back to the input dtype (bfloat16
    under mixed precision, a no-op in float32)."""
    h = np.tanh((x @ params["W1"]).astype(x.dtype) + params["b1"])
    logits = (h @ params["W2"]).astype(x.dtype) + params["b2"]
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return np.mean(-np.sum(y * log_probs, axis=1))


def test_mixed_precision_mlp_uses_the_kernel_and_matches_float32(native_bf16):
    config.native_bf16 = True
    rng = np.random.default_rng(5)
    params = {"W1": (rng.standard_normal((64, 32)) / 8).astype(np.float32), "b1": np.zeros(32, np.float32),
              "W2": (rng.standard_normal((32, 10)) / 6).astype(np.float32), "b2": np.zeros(10, np.float32)}
    x = rng.standard_normal((48, 64)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 48)]
    mixed = jitgrad.mixed_precision(w2_loss_bf16_activations, compute="bfloat16")
    step = jitgrad.value_and_grad(mixed)
    value, grads = step(params, x, y)
    asm = asm_of(step, params, x, y)
    assert ("vdpbf16ps" in asm) == NATIVE          # x @ W1 and both backward products of width 32
    np.testing.assert_allclose(value, mixed(params, x, y), rtol=1e-2)          # NumPy running the same code
    value32, grads32 = jitgrad.value_and_grad(w2_loss_bf16_activations)(params, x, y)
    np.testing.assert_allclose(value, value32, rtol=1e-2)
    for name in grads:
        assert grads[name].dtype == np.float32
        assert np.max(np.abs(grads[name] - grads32[name])) <= 0.03 * np.max(np.abs(grads32[name]))
    config.native_bf16 = False
    value_widened, grads_widened = jitgrad.value_and_grad(mixed)(params, x, y)
    np.testing.assert_allclose(value, value_widened, rtol=1e-2)
    for name in grads:
        assert np.max(np.abs(grads[name] - grads_widened[name])) <= 0.02 * np.max(np.abs(grads32[name]))


def test_aot_uses_the_kernel_only_when_built_for_the_host(tmp_path):
    """A host artifact requires every CPU flag of the host (avx512_bf16 included) and may
    use the kernel; a portable x86-64-v4 artifact multiplies with its own loops."""
    import jitgrad.aot as aot
    rng = np.random.default_rng(6)
    a, b = random_bf16(rng, (20, 50)), random_bf16(rng, (50, 40))
    # float32 arguments cast inside (the artifact loader's signature check reads NumPy dtypes)
    product = jitgrad.jit(lambda x, y: x.astype(BF16) @ y.astype(BF16))
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    flags = open("/proc/cpuinfo").read().split()
    for target in ("host", "x86-64-v4"):
        manifest = aot.export(product, a32, b32, path=str(tmp_path / target), name="k", target=target)
        disassembly = subprocess.run(["objdump", "-d", str(tmp_path / target / "k_kernels.o")],
                                     capture_output=True, text=True).stdout
        uses_kernel = "vdpbf16ps" in disassembly
        assert uses_kernel == (target == "host" and NATIVE)
        if uses_kernel:
            assert "avx512_bf16" in manifest["target"]["cpu_flags"]
        if all(flag in flags for flag in manifest["target"]["cpu_flags"]):
            c = aot.load(str(tmp_path / target))(a32, b32)
            assert_within_bound(c, a, b)
    assert json.loads((tmp_path / "x86-64-v4" / "manifest.json").read_text())["link"]["blas"] == "loops"
