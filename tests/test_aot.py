"""Ahead-of-time artifacts: the library, header and manifest `jitgrad.aot.export` writes,
loading them back without llvmlite, the C training example, refusals of bad artifacts,
and cross-target builds."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import jitgrad
import jitgrad.aot as aot
from jitgrad.aot.loader import manifest_digest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "aot"


def square_sum(x):
    return np.sum(x ** 2)


@pytest.fixture(scope="module")
def w4(tmp_path_factory):
    """The W4 case as a library of two functions."""
    path = tmp_path_factory.mktemp("w4") / "w4"
    x = np.arange(8.0)
    manifest = aot.export([("loss", jitgrad.jit(square_sum)), ("grad_loss", jitgrad.grad(square_sum))], x,
                          path=str(path), name="w4")
    return path, manifest


def _copy(path, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    return copy


def test_library_results_equal_the_jit(w4):
    path, manifest = w4
    artifact = aot.load(str(path))
    x = np.linspace(-2.0, 3.0, 8)
    assert artifact.loss(x) == jitgrad.jit(square_sum)(x)
    np.testing.assert_array_equal(artifact.grad_loss(x), jitgrad.grad(square_sum)(x))
    assert [f["name"] for f in manifest["functions"]] == ["loss", "grad_loss"]
    assert manifest["functions"][1]["mode"] == "grad"
    for name, digest in manifest["files"].items():
        assert len(digest) == 64 and (path / name).exists()


def test_shared_library_is_pic_and_exports_only_the_abi(w4):
    path, _ = w4
    dynamic = subprocess.run(["readelf", "-d", str(path / "libw4.so")], capture_output=True, text=True).stdout
    assert "TEXTREL" not in dynamic and "libc.so" in dynamic
    assert "libpython" not in dynamic and "LLVM" not in dynamic
    defined = subprocess.run(["nm", "-D", "--defined-only", str(path / "libw4.so")], capture_output=True,
                             text=True).stdout.split()
    assert sorted(s for s in defined if s.startswith("w4")) == sorted(
        ["w4_abi_version", "w4_loss", "w4_loss_workspace_size", "w4_grad_loss", "w4_grad_loss_workspace_size"])
    members = subprocess.run(["ar", "t", str(path / "libw4.a")], capture_output=True, text=True).stdout.split()
    assert members == ["w4_entry.o", "w4_kernels.o"]
    header = (path / "w4.h").read_text()
    assert "int w4_grad_loss(\n    const double *in0,  /* args[0]: f64[8] */" in header
    assert "#define W4_GRAD_LOSS_OUT0_SHAPE {8}" in header


def test_c_call_with_errors_and_caller_workspace(w4, tmp_path):
    """From C, shared and static: results, a NULL pointer refused with its error code, a
    caller workspace; the static archive links with the libraries the manifest lists."""
    path, manifest = w4
    program = tmp_path / "call.c"
    program.write_text(r'''
#include <stdio.h>
#include <stdlib.h>
#include "w4.h"
int main(void) {
    double x[8], g[8], loss;
    for (int i = 0; i < 8; i++) x[i] = i - 3.5;
    void *ws = aligned_alloc(64, 64 + w4_grad_loss_workspace_size());
    int a = w4_grad_loss(x, g, ws), b = w4_loss(x, &loss, NULL), c = w4_grad_loss(NULL, g, NULL);
    printf("%d %d %d %.17g %.17g %d\n", a, b, c, g[0], loss, w4_abi_version());
    return 0;
}''')
    shared = ["cc", "-std=c11", str(program), f"-I{path}", f"-L{path}", "-lw4", f"-Wl,-rpath,{path}",
              "-o", str(tmp_path / "shared")]
    static = ["cc", "-std=c11", str(program), f"-I{path}", str(path / "libw4.a"),
              *manifest["link"]["libraries"], "-o", str(tmp_path / "static")]
    x = np.arange(8.0) - 3.5
    for command in (shared, static):
        subprocess.run(command, check=True, timeout=60)
        out = subprocess.run([command[-1]], capture_output=True, text=True, timeout=30).stdout.split()
        assert out[:3] == ["0", "0", "1"]
        assert float(out[3]) == 2 * x[0] and float(out[4]) == np.sum(x ** 2) and out[5] == "1"


def tanh_layer(w, x):
    return np.sum(np.tanh(x @ w) ** 2)


def test_threads_calling_at_once_get_their_own_workspaces(tmp_path):
    """ctypes releases the GIL: the calls overlap, each thread in its library workspace."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(1)
    w, x = rng.standard_normal((32, 48)), rng.standard_normal((64, 32))
    grad = jitgrad.grad(tanh_layer)
    aot.export(grad, w, x, path=str(tmp_path / "layer"), name="layer")
    function = aot.load(str(tmp_path / "layer")).grad_tanh_layer
    assert function.workspace_bytes > 0
    inputs = [(rng.standard_normal((32, 48)), x) for _ in range(8)]
    expected = [grad(*args) for args in inputs]

    def work(k):
        return all(np.array_equal(function(*inputs[k % 8]), expected[k % 8]) for _ in range(30))
    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(16)))


def test_pytrees_closures_and_large_constants(tmp_path):
    """Dict in, tuple of dict out; a closure array and a constant over 256 bytes are part
    of the library (their values at export time)."""
    scale = np.linspace(0.5, 1.5, 100)
    table = np.arange(100.0) ** 0.5

    def model(params, x):
        y = np.tanh(params["w"] * x * scale) + table
        return np.sum(y * params["b"]), {"y": y}

    params, x = {"w": np.ones(100), "b": np.full(100, 0.25)}, np.linspace(-1, 1, 100)
    compiled = jitgrad.value_and_grad(model, has_aux=True)
    aot.export(compiled, params, x, path=str(tmp_path / "tree"), name="tree")
    artifact = aot.load(str(tmp_path / "tree"))
    params2 = {"w": np.full(100, 0.7), "b": np.linspace(0, 1, 100)}
    expected = compiled(params2, x)
    got = artifact(params2, x)
    assert got[0][0] == expected[0][0]
    np.testing.assert_array_equal(got[0][1]["y"], expected[0][1]["y"])
    np.testing.assert_array_equal(got[1]["w"], expected[1]["w"])
    assert set(got[1]) == {"w", "b"}
    with pytest.raises(aot.ArtifactSignatureError, match="must be a dict"):
        artifact([params2["w"]], x)
    with pytest.raises(aot.ArtifactSignatureError, match=r"args\[1\] must be float64\[100\], got float32\[100\]"):
        artifact(params2, x.astype(np.float32))
    with pytest.raises(aot.ArtifactSignatureError, match=r"float64\[100\], got float64\[99\]"):
        artifact(params2, x[:99])


def test_bfloat16_arguments_and_results(tmp_path):
    """bfloat16 is an opaque 2-byte type to NumPy (`<V2`): the loader still takes and
    returns ml_dtypes' bfloat16 arrays, with the jit's bits, and names the dtype in errors."""
    import ml_dtypes
    bf16 = ml_dtypes.bfloat16

    def model(w, x):
        return np.tanh(w * x) + w

    compiled = jitgrad.jit(model)
    w = np.linspace(-2, 2, 37).astype(bf16)
    x = np.linspace(0.5, 1.5, 37).astype(bf16)
    aot.export(compiled, w, x, path=str(tmp_path / "bf"), name="bf")
    artifact = aot.load(str(tmp_path / "bf"))
    got, expected = artifact(w, x), compiled(w, x)
    assert got.dtype == np.dtype(bf16) == expected.dtype
    np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))
    with pytest.raises(aot.ArtifactSignatureError, match=r"must be bfloat16\[37\], got float32\[37\]"):
        artifact(w, x.astype(np.float32))


def test_tampered_files_are_refused(w4, tmp_path):
    path, _ = w4
    copy = _copy(path, tmp_path)
    data = bytearray((copy / "libw4.so").read_bytes())
    data[len(data) // 2] ^= 1
    (copy / "libw4.so").write_bytes(bytes(data))
    with pytest.raises(aot.ArtifactIntegrityError, match=r"libw4.so was modified"):
        aot.load(str(copy))
    (copy / "libw4.so").unlink()
    with pytest.raises(aot.ArtifactIntegrityError, match="is missing"):
        aot.load(str(copy))


def test_missing_cpu_feature_is_refused(w4, tmp_path):
    """An edited feature list is caught by the manifest checksum first; re-signed, the
    artifact is refused for the CPU reason, before its library is opened."""
    path, _ = w4
    copy = _copy(path, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["target"]["cpu_flags"].append("imaginary_simd")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(aot.ArtifactIntegrityError, match="manifest.json was modified"):
        aot.load(str(copy))
    manifest["checksum"] = manifest_digest(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(aot.ArtifactCPUError, match="this CPU lacks imaginary_simd"):
        aot.load(str(copy))
    del manifest["functions"][0]["inputs"]           # re-signed but not what a loader can read
    manifest["target"]["cpu_flags"].pop()
    manifest["checksum"] = manifest_digest(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(aot.ArtifactIntegrityError, match="is malformed: KeyError"):
        aot.load(str(copy))


def _undefined(path) -> list[str]:
    return subprocess.run(["nm", "-u", str(path)], capture_output=True, text=True).stdout.split()


def sin_exp(x):
    return np.sum(np.sin(x) * np.exp(x))


@pytest.mark.parametrize("target, expected, refused", [("x86-64-v3", "_ZGVd", "_ZGVe"), ("x86-64-v4", "_ZGVe", None)])
def test_portable_x86_levels(tmp_path, target, expected, refused):
    """Vector math follows the level: AVX2 libmvec variants for v3, AVX-512 ones for v4."""
    from jitgrad.backends.cpu.engine import VectorMath
    flags = open("/proc/cpuinfo").read()
    x = np.linspace(-1, 1, 4096)
    manifest = aot.export(jitgrad.grad(sin_exp), x, path=str(tmp_path / target), name="k", target=target)
    assert manifest["target"]["cpu"] == target and manifest["link"]["blas"] == "loops"
    vector_calls = [s for s in _undefined(tmp_path / target / "k_kernels.o") if s.startswith("_ZGV")]
    if VectorMath.available and ("e", 512) in VectorMath.isas:     # libmvec here, and its AVX-512 variants
        assert any(s.startswith(expected) for s in vector_calls)
    assert refused is None or not any(s.startswith(refused) for s in vector_calls)
    if all(flag in flags.split() for flag in manifest["target"]["cpu_flags"]):
        np.testing.assert_allclose(aot.load(str(tmp_path / target))(x), np.cos(x) * np.exp(x) + np.sin(x) * np.exp(x),
                                   rtol=1e-13, atol=1e-13)


def test_aarch64_object_is_valid_and_refused_here(tmp_path):
    from jitgrad.tools.cli import main
    source = tmp_path / "model.py"
    source.write_text("import numpy as np\ndef f(x):\n    return np.sum(np.tanh(x) ** 2)\n")
    assert main(["aot", f"{source}:f", "--args", "f32[64]", "--target", "aarch64", "-o", str(tmp_path / "arm")]) == 0
    header = subprocess.run(["readelf", "-h", str(tmp_path / "arm" / "f_kernels.o")], capture_output=True,
                            text=True).stdout
    assert "AArch64" in header and "REL (Relocatable file)" in header
    symbols = subprocess.run(["readelf", "-s", str(tmp_path / "arm" / "f_kernels.o")], capture_output=True,
                             text=True).stdout
    assert "f_grad_f_kernel" in symbols
    with pytest.raises(aot.ArtifactCPUError, match="built for aarch64"):
        aot.load(str(tmp_path / "arm"))


def test_load_in_a_process_without_llvmlite(w4):
    path, _ = w4
    script = f"""
import sys, time
sys.modules['llvmlite'] = None
start = time.perf_counter()
import jitgrad.aot.loader as loader
import numpy as np
artifact = loader.load({str(path)!r})
g = artifact.grad_loss(np.arange(8.0))
print(g.tolist(), any(m.startswith(('llvmlite', 'jitgrad.api', 'jitgrad.backends')) and sys.modules[m] is not None
        for m in list(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("]")[0] == "[" + ", ".join(str(2 * v) for v in np.arange(8.0))
    assert result.stdout.strip().endswith("False")


def test_c_program_trains_w2_to_the_same_bits_as_python(tmp_path):
    sys.path.insert(0, str(EXAMPLE))
    try:
        import mlp
    finally:
        sys.path.pop(0)
    build = tmp_path / "mlp"
    mlp.build(str(build))
    subprocess.run(["cc", "-std=c11", "-O2", "-ffp-contract=off", str(EXAMPLE / "main.c"), f"-I{build}",
                    f"-L{build}", "-lmlp", f"-Wl,-rpath,{build}", "-o", str(tmp_path / "train")],
                   check=True, timeout=60)
    steps = 4
    run = subprocess.run([str(tmp_path / "train"), str(build), str(steps)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    c_losses = [np.float32(line.split()[-1]) for line in run.stdout.splitlines()]
    assert len(c_losses) == steps and all(b < a for a, b in zip(c_losses, c_losses[1:]))
    py_losses, params = mlp.sgd_in_python(mlp.starting_point(), steps)
    assert c_losses == [np.float32(v) for v in py_losses]
    for name, expected in params.items():
        trained = np.fromfile(build / f"final_{name}.f32", np.float32).reshape(expected.shape)
        np.testing.assert_array_equal(trained.view(np.uint32), expected.view(np.uint32))


def test_cli_writes_the_artifact(tmp_path, capsys):
    from jitgrad.tools.cli import main
    source = tmp_path / "model.py"
    source.write_text("import numpy as np\ndef f(x, y):\n    return np.sum((x - y) ** 2)\n")
    assert main(["aot", f"{source}:f", "--args", "f64[3]", "f64[3]", "--mode", "value_and_grad", "--argnums", "0",
                 "1", "-o", str(tmp_path / "out")]) == 0
    assert str(tmp_path / "out" / "libf.so") in capsys.readouterr().out
    value, (gx, gy) = aot.load(str(tmp_path / "out")).value_and_grad_f(np.ones(3), np.zeros(3))
    assert value == 3.0 and list(gx) == [2.0] * 3 and list(gy) == [-2.0] * 3


def test_threaded_kernels_run_in_a_forked_child(tmp_path):
    """A loop large enough for libgomp's threads; after fork the child's calls run on its
    one thread (libgomp's pool does not survive fork) and give the same bits."""
    script = f"""
import os, sys, numpy as np, jitgrad, jitgrad.aot as aot
def f(x):
    return np.tanh(x) * 2 + np.sin(x)
x = np.linspace(-1, 1, 1 << 21)
manifest = aot.export(jitgrad.jit(f), x, path={str(tmp_path / 'big')!r}, name="big")
assert manifest["link"]["threads"], manifest["link"]
artifact = aot.load({str(tmp_path / 'big')!r})
first = artifact(x)
assert np.array_equal(first, jitgrad.jit(f)(x))
pid = os.fork()
if pid == 0:
    os._exit(0 if np.array_equal(artifact(x), first) else 3)
print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child 0"


def log_det(k_diag):
    """Only a Cholesky factorization: a LAPACKE call and no CBLAS call."""
    chol = np.linalg.cholesky(np.eye(4) * k_diag + 0.5)
    return 2.0 * np.sum(np.log(np.diagonal(chol)))


def test_lapack_calls_link_against_openblas(tmp_path):
    manifest = aot.export([("log_det", jitgrad.jit(log_det))], 3.0, path=str(tmp_path / "gp"), name="gp")
    calls = manifest["link"]["external_symbols"]
    assert any("LAPACKE" in c for c in calls) and not any("cblas" in c for c in calls), calls
    assert any("openblas" in library for library in manifest["link"]["libraries"]), manifest["link"]
    artifact = aot.load(str(tmp_path / "gp"))
    for k in (2.0, 3.5):
        assert artifact.log_det(k) == jitgrad.jit(log_det)(k)
