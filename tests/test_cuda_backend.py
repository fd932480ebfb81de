"""The CUDA backend without a GPU: PTX for every primitive's kernels and for the fuzzer's
programs, checked by ptxas (sm_80 and sm_90, no spills) and linked by nvJitLink; the API
and the CLI select it; calling it without a device raises NoCUDADeviceError. With a GPU
(`-m gpu`, or `python -m tools.gpu_check`) the compiled functions run and are compared
with the CPU backend; without one those tests skip, saying why.

PTX generation runs in a subprocess: an LLVM abort in the NVPTX backend would kill the
test process (see docs/gpu.md); here it fails one test with the message.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jitgrad
from jitgrad.backends.cuda import ptx as ptx_tools
from jitgrad.backends.cuda import runtime
from jitgrad.backends.cuda.errors import NoCUDADeviceError
from jitgrad.config import config
from jitgrad.errors import JitgradError

ARCHS = ptx_tools.DEFAULT_ARCHS
FUZZ_PROGRAMS = 20
HERE = os.path.dirname(os.path.abspath(__file__))

_GPU, _GPU_WHY = (False, "not checked")


def gpu_available() -> tuple[bool, str]:
    global _GPU, _GPU_WHY
    if _GPU_WHY == "not checked":
        _GPU, _GPU_WHY = runtime.available()
    return _GPU, _GPU_WHY


def _w1(x):
    return np.sum(np.sin(x) * np.exp(-x * x) + np.tanh(x))


def _mlp(w1, w2, x, y):
    h = np.tanh(x @ w1)
    return np.mean((h @ w2 - y) ** 2)


# --------------------------------------------------------------------------- PTX of everything

def emit_everything(out_dir: str) -> None:
    """(In a subprocess.) One module holding the launches of every primitive's op spec,
    of the fuzzer's programs and of two gradients; its PTX per architecture, and the list
    of kernel names, into `out_dir`."""
    from llvmlite import ir
    from jitgrad.backends import backend_for
    from test_grid_emulator import _has_no_cuda_kernel
    from test_primitive_rules import SPECS
    from fuzz import program_for
    backend = backend_for("cuda")
    module = ir.Module(name="everything")
    ptx_tools.prepare_module(module)
    names, covered, unsupported = [], [], []

    def add(fn, label, sched=None, memory=None):
        _, _, launches = backend.build(fn, sched, memory, module=module, symbol=f"jg_{len(covered)}")
        names.extend(launch.name for launch in launches)
        covered.append(label)

    from jitgrad.passes.lower_complex import LowerComplex
    for spec in SPECS:
        fn = LowerComplex().run(spec.function())        # backends compute complex values as real pairs
        if _has_no_cuda_kernel(fn):
            unsupported.append(spec.id)
            continue
        add(fn, spec.id)
    from test_cuda_kinds import KIND_CASES          # the kernel kinds on adversarial shapes and dtypes
    for case in KIND_CASES:
        add(case.function(), case.label)
    programs = [(f"fuzz{k}", program_for(20261201, k)) for k in range(FUZZ_PROGRAMS)]
    for label, program in programs:
        try:
            lowered = jitgrad.jit(program.function(), device="cuda-emulator").lower(*program.inputs)
        except JitgradError:
            continue
        add(lowered.function, label, lowered.executable.schedule, lowered.executable.memory)
    x = np.ones(1000, np.float32)
    for label, fun, args in [("grad-w1", jitgrad.grad(_w1), (x,)),
                             ("grad-mlp", jitgrad.grad(_mlp, argnums=(0, 1)),
                              (np.ones((8, 16)), np.ones((16, 4)), np.ones((32, 8)), np.ones((32, 4)))),
                             ("grad-fori-loop-revolve",     # reverse_fori: a loop reversed over snapshots
                              jitgrad.grad(lambda v, n: np.sum(jitgrad.fori_loop(0, n, lambda i, c: np.sin(c) * c, v)),
                                           memory_budget=4096), (x[:16], np.int64(3))),
                             ("grad-scan-revolve",          # reverse_fori reading xs, writing their cotangents
                              jitgrad.grad(lambda c, xs: np.sum(jitgrad.scan(lambda a, r: (np.tanh(a * r), a), c,
                                                                             xs)[1]),
                                           argnums=(0, 1), memory_budget=1536), (np.ones(4), np.ones((9, 4))))]:
        lowered = jitgrad.jit(fun, device="cuda-emulator").lower(*args)
        add(lowered.function, label, lowered.executable.schedule, lowered.executable.memory)
    text = str(module)
    for arch in ARCHS:
        with open(os.path.join(out_dir, f"{arch}.ptx"), "w") as f:
            f.write(ptx_tools.emit_ptx(text, names, arch))
    with open(os.path.join(out_dir, "kernels.json"), "w") as f:
        json.dump({"names": names, "covered": covered, "unsupported": unsupported}, f)


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    out = tmp_path_factory.mktemp("ptx")
    run = subprocess.run([sys.executable, os.path.abspath(__file__), "emit", str(out)], cwd=HERE,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"PTX generation failed (exit {run.returncode}):\n{run.stderr[-4000:]}"
    with open(out / "kernels.json") as f:
        listing = json.load(f)
    return {arch: (out / f"{arch}.ptx").read_text() for arch in ARCHS}, listing


def test_every_supported_primitive_and_fuzzer_program_has_ptx_entries(everything):
    ptx, listing = everything
    assert len(listing["covered"]) > 120
    assert sum(c.startswith("fuzz") for c in listing["covered"]) >= FUZZ_PROGRAMS // 2
    for arch, text in ptx.items():
        assert f".target {arch}" in text
        for name in listing["names"]:
            assert f".entry {name}(" in text, f"{name} missing from the {arch} PTX"
        assert ".extern .func" not in text, "an unresolved call (a math function libdevice lacks?)"
    # every primitive's op spec has CUDA kernels (host callbacks, refused, are not op specs)
    assert listing["unsupported"] == []


@pytest.mark.parametrize("arch", ARCHS)
def test_ptxas_accepts_everything_without_spills(everything, arch):
    # ptxas comes with the test extras (nvidia-cuda-nvcc): it must be found, not skipped
    assert ptx_tools.ptxas_path() is not None, "ptxas not found: pip install -e '.[test]' installs nvidia-cuda-nvcc"
    warnings = ptx_tools.ptxas_check(everything[0][arch], arch, timeout=300)
    assert not [w for w in warnings if "spill" in w.lower()], warnings


@pytest.mark.parametrize("arch", ARCHS)
def test_nvjitlink_links_everything(everything, arch):
    assert ptx_tools.nvjitlink_available(), "nvJitLink not found: the test extras install cuda-bindings, nvidia-nvjitlink"
    cubin = ptx_tools.nvjitlink_cubin(everything[0][arch], arch)
    assert cubin[:4] == b"\x7fELF"


# --------------------------------------------------------------------------- the code generator

def test_llvmlite_has_the_nvptx_target_and_libdevice_is_found():
    assert ptx_tools.nvptx_available()
    assert ptx_tools.libdevice_path() is not None, "libdevice.10.bc not found: see docs/gpu.md"


def test_math_goes_to_libdevice_and_grid_stride_loops_to_special_registers():
    lowered = jitgrad.jit(_w1, device="gpu").lower(np.ones(100_000))    # 13 reduction blocks: a real grid loop
    llvm_text = lowered.as_text("llvm")
    for name in ("__nv_sin", "__nv_exp", "__nv_tanh", "llvm.nvvm.read.ptx.sreg.tid.x", "ptx_kernel"):
        assert name in llvm_text
    assert "llvm.sin" not in llvm_text and "llvm.exp" not in llvm_text
    ptx = lowered.as_text("ptx")
    assert "%tid.x" in ptx and "%nctaid.x" in ptx
    assert ".extern" not in ptx          # libdevice linked in: nothing left unresolved


def test_archs_are_configurable():
    from jitgrad.backends.cuda.backend import CUDABackend
    fn = jitgrad.jit(_w1, device="cuda-emulator").lower(np.ones(7)).function
    executable = CUDABackend(archs=("sm_90",)).compile(fn)
    assert list(executable.ptx) == ["sm_90"] and ".target sm_90" in executable.listing("ptx")


def test_device_is_part_of_the_signature_and_per_function():
    x = np.linspace(-1, 1, 300)
    on_cpu, on_emulator = jitgrad.jit(_w1), jitgrad.jit(_w1, device="cuda-emulator")
    assert on_cpu.lower(x).executable.__class__.__name__ == "CPUExecutable"
    assert on_emulator.lower(x).executable.__class__.__name__ == "EmulatedExecutable"
    np.testing.assert_allclose(on_emulator(x), on_cpu(x), rtol=1e-13, atol=1e-13)   # a sum near 0
    saved = config.device
    try:
        config.device = "cuda-emulator"
        assert jitgrad.jit(_w1).lower(x).executable.__class__.__name__ == "EmulatedExecutable"
        assert on_cpu.lower(x).executable.__class__.__name__ == "EmulatedExecutable"   # config.device rules
        assert jitgrad.jit(_w1, device="cpu").lower(x).executable.__class__.__name__ == "CPUExecutable"
    finally:
        config.device = saved
    with pytest.raises(JitgradError, match="no backend for device 'tpu'"):
        jitgrad.jit(_w1, device="tpu")


def test_calling_without_a_gpu_raises_a_clear_error():
    available, why = gpu_available()
    f = jitgrad.jit(_w1, device="gpu")
    x = np.linspace(-1, 1, 1000)
    if available:
        np.testing.assert_allclose(f(x), _w1(x), rtol=1e-12)
        return
    assert why.startswith("no CUDA device")
    with pytest.raises(NoCUDADeviceError, match="no CUDA device"):
        f(x)
    assert isinstance(NoCUDADeviceError("x"), JitgradError)


def test_cli_prints_ptx(tmp_path, capsys):
    from tools.cli import main
    source = tmp_path / "model.py"
    source.write_text("import numpy as np\ndef predict(x, w):\n    return np.tanh(x @ w).sum()\n")
    saved = config.device
    try:
        assert main(["ir", f"{source}:predict", "--args", "f32[8,4]", "f32[4,3]", "--mode", "jit",
                     "--device", "gpu", "--stage", "ptx"]) == 0
    finally:
        config.device = saved
    out = capsys.readouterr().out
    assert ".target sm_80" in out and ".target sm_90" in out and ".entry" in out


# --------------------------------------------------------------------------- on a GPU

gpu = pytest.mark.gpu


def _skip_without_gpu():
    available, why = gpu_available()
    if not available:
        pytest.skip(f"needs a CUDA GPU: {why}")


@gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_matches_the_cpu(dtype):
    _skip_without_gpu()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(100_000).astype(dtype)
    for fun in (_w1, jitgrad.grad(_w1), lambda x: x.reshape(100, -1).max(1)):
        np.testing.assert_allclose(jitgrad.jit(fun, device="gpu")(x), jitgrad.jit(fun)(x),
                                   rtol=1e-12 if dtype == np.float64 else 1e-5)
    args = (rng.standard_normal((8, 16)), rng.standard_normal((16, 4)), rng.standard_normal((32, 8)),
            rng.standard_normal((32, 4)))
    g = jitgrad.jit(jitgrad.grad(_mlp, argnums=(0, 1)), device="gpu")(*args)
    for a, b in zip(g, jitgrad.grad(_mlp, argnums=(0, 1))(*args)):
        np.testing.assert_allclose(a, b, rtol=1e-10)


@gpu
def test_gpu_reductions_are_bit_identical_run_to_run():
    _skip_without_gpu()
    x = np.random.default_rng(1).standard_normal(3_000_000)
    f = jitgrad.jit(lambda x: np.sum(x * x), device="gpu")
    assert f(x).tobytes() == f(x).tobytes()


@gpu
def test_gpu_reads_cuda_arrays_in_place():
    _skip_without_gpu()
    cupy = pytest.importorskip("cupy", reason="CuPy not installed: the __cuda_array_interface__ input path")
    x = np.random.default_rng(2).standard_normal(10_000)
    np.testing.assert_allclose(jitgrad.jit(_w1, device="gpu")(cupy.asarray(x)), _w1(x), rtol=1e-12)



def test_gpu_check_prints_one_line_and_skips_cleanly_without_a_gpu(capsys):
    available, why = gpu_available()
    if available:
        pytest.skip("a GPU is present: python -m tools.gpu_check runs the real check")
    from tools.gpu_check import main
    assert main([]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"gpu_check: skipped: {why}"]


class _FakeCudaArray:
    """Just the __cuda_array_interface__ of a device array (no GPU needed to read it)."""

    def __init__(self, shape, typestr, strides=None, address=0xDEAD0000):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "strides": strides,
                                         "data": (address, False), "version": 3}


def test_cuda_array_inputs_are_read_in_place_only_when_they_match():
    f64 = np.dtype(np.float64)
    assert runtime.device_pointer(_FakeCudaArray((4, 3), "<f8"), f64, (4, 3)) == 0xDEAD0000
    assert runtime.device_pointer(_FakeCudaArray((4, 3), "<f8", (24, 8)), f64, (4, 3)) == 0xDEAD0000
    assert runtime.device_pointer(np.ones((4, 3)), f64, (4, 3)) is None          # NumPy: copied in
    with pytest.raises(TypeError, match="where float64"):
        runtime.device_pointer(_FakeCudaArray((4, 3), "<f4"), f64, (4, 3))
    with pytest.raises(TypeError, match="non-contiguous"):
        runtime.device_pointer(_FakeCudaArray((4, 3), "<f8", (8, 32)), f64, (4, 3))

if __name__ == "__main__" and sys.argv[1:2] == ["emit"]:
    sys.path.insert(0, HERE)
    emit_everything(sys.argv[2])
