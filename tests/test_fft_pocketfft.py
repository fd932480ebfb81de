"""numpy.fft on NumPy's pocketfft loops (jitgrad/backends/cpu/fft.py, `emit_library_transform`):
the same loop NumPy calls, with the same normalization factor, so compiled results equal
numpy.fft to the bit; the programs call one loop per axis (real transforms for real data,
no transposes); derivatives agree with jitgrad's own kernel (the route devices without the
library take) and with central differences; a disk-cache entry and an AOT artifact work
in a fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jitgrad
from jitgrad.backends.cpu.backend import CPUBackend
from jitgrad.ir import DType
from jitgrad.primitives import fft as fft_primitives

NORMS = [None, "ortho", "forward", "backward"]


def every_transform(x, z, norm):
    """Each numpy.fft transform once, with lengths cut and padded, odd and even, a prime
    (13), several axes, a middle axis."""
    return (np.fft.fft(z, norm=norm), np.fft.ifft(z, n=13, axis=1, norm=norm), np.fft.fft(z, n=4, axis=0, norm=norm),
            np.fft.rfft(x, norm=norm), np.fft.rfft(x, n=7, axis=1, norm=norm), np.fft.irfft(z, norm=norm),
            np.fft.irfft(z, n=9, axis=0, norm=norm), np.fft.hfft(z, n=11, norm=norm), np.fft.ihfft(x, axis=1, norm=norm),
            np.fft.fft2(z, norm=norm), np.fft.ifft2(z, s=(5, 12), axes=(0, 2), norm=norm),
            np.fft.rfft2(x, norm=norm), np.fft.irfft2(z, s=(6, 9), norm=norm), np.fft.fftn(z, norm=norm),
            np.fft.ifftn(z, axes=(2, 0), norm=norm), np.fft.rfftn(x, s=(4, 5, 6), axes=(0, 1, 2), norm=norm),
            np.fft.irfftn(z, norm=norm), np.fft.fft(x, axis=0, norm=norm), np.fft.ifft2(x, norm=norm),
            np.fft.irfft(x, norm=norm), np.fft.irfftn(x, axes=(1,), norm=norm), np.fft.hfft(x, n=6, norm=norm))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("norm", NORMS)
def test_every_transform_equals_numpy_to_the_bit(dtype, norm):
    """Also NumPy's dtype rules: float16 data is transformed in float64 with a float16
    factor, and irfft of it is float16; float32 data goes to the float32 loop only as
    complex64 (or float32 for rfft) with a factor, else to the float64 one."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 8, 10)) * 4).astype(dtype)
    z = (x + 1j * rng.standard_normal(x.shape)).astype(np.result_type(dtype, np.complex64))
    expected = every_transform(x, z, norm)
    compiled = jitgrad.jit(lambda x, z: every_transform(x, z, norm))
    for got in (compiled(x, z), compiled(x, z)):       # the Python path, then the native call path
        for k, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert g.dtype == e.dtype and g.shape == e.shape, k
            np.testing.assert_array_equal(g, e, err_msg=f"transform {k}")


def op_names(compiled, *args) -> list[str]:
    return [op.name for op in compiled.lower(*args).function.walk()]


def test_one_library_call_per_axis_and_real_transforms_for_real_data():
    x = np.random.default_rng(1).standard_normal((6, 10, 12))
    names = op_names(jitgrad.jit(lambda x: np.fft.irfftn(np.fft.rfftn(x) * 2, s=x.shape)), x)
    assert names.count("fft_r2c") == 1 and names.count("fft_c2r") == 1 and names.count("fft_c2c") == 4
    assert "fft" not in names and "transpose" not in names

    gradient = op_names(jitgrad.grad(lambda x: (np.abs(np.fft.rfft2(x)) ** 2).sum()), x)
    assert {"fft_r2c", "fft_c2r", "fft_c2c"} <= set(gradient) and "fft" not in gradient


def test_library_loops_are_numpys():
    """The addresses read from the ufunc objects are the loops Python sees: the table of
    types agrees, and each dtype has all four loops."""
    for dtype in (DType.f32, DType.f64):
        loops = fft_primitives.library_loops(dtype)
        assert loops is not None and len({loops.c2c, loops.r2c_even, loops.r2c_odd, loops.c2r}) == 4
    assert fft_primitives.library_loops(DType.f16) is None


@pytest.fixture
def own_kernel(monkeypatch):
    """Trace as a device without the library does: jitgrad's Stockham kernel and Bluestein."""
    monkeypatch.setattr(fft_primitives, "library_loops", lambda dtype: None)


def gradients(f, args, v):
    """grad and the gradient of a directional derivative (second order), compiled."""
    grad = jitgrad.grad(f)

    def directional(*a):
        return np.real(grad(*a) * v).sum()
    return grad(*args), jitgrad.grad(directional)(*args)


LOSSES = {
    "blur": (lambda x: (np.fft.irfft2(np.fft.rfft2(x) * np.fft.rfft2(x[:3, :3], s=x.shape), s=x.shape) ** 2).sum(),
             False, (8, 10)),
    "odd-lengths": (lambda x: (np.fft.irfft(np.fft.rfft(x, axis=0, norm="ortho") * 1.5, n=9, axis=0) ** 3).sum()
                    + np.abs(np.fft.rfft(x, n=5)).sum(), False, (7, 5)),
    "complex-middle-axis": (lambda z: np.real(np.fft.ifftn(z * z, axes=(1,), norm="forward")
                                              * np.fft.fft(z, n=6, axis=0)[:5]).sum(), True, (5, 7)),
    "hermitian": (lambda z: (np.fft.hfft(z, n=8) ** 2).sum() + np.abs(np.fft.ihfft(np.real(z) ** 2)).sum(),
                  True, (4, 6)),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_derivatives_agree_with_the_own_kernel_to_second_order(name, monkeypatch):
    f, is_complex, shape = LOSSES[name]
    rng = np.random.default_rng(2)
    a = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if is_complex else 0)
    v = rng.standard_normal(shape)
    library = gradients(f, (a,), v)
    monkeypatch.setattr(fft_primitives, "library_loops", lambda dtype: None)
    own = gradients(f, (a,), v)
    for got, reference in zip(library, own, strict=True):
        np.testing.assert_allclose(got, reference, rtol=1e-9, atol=1e-9 * np.max(np.abs(reference)))


def test_gradient_against_central_differences():
    f, _, shape = LOSSES["odd-lengths"]
    x = np.random.default_rng(3).standard_normal(shape)
    g = jitgrad.grad(f)(x)
    h = 1e-6
    for k in (0, 11, 34):
        e = np.zeros(shape)
        e.flat[k] = h
        assert abs(g.flat[k] - (f(x + e) - f(x - e)) / (2 * h)) <= 1e-6 * max(1.0, abs(g.flat[k]))


def test_own_kernel_still_matches_numpy(own_kernel):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 14))
    z = x + 1j * rng.standard_normal(x.shape)
    fn = jitgrad.jit(lambda x, z: (np.fft.rfft2(x), np.fft.ifft(z, n=7, axis=0), np.fft.irfft(z, n=10)))
    assert "fft" in op_names(fn, x, z) and "fft_c2c" not in op_names(fn, x, z)
    for g, e in zip(fn(x, z), (np.fft.rfft2(x), np.fft.ifft(z, n=7, axis=0), np.fft.irfft(z, n=10)), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12 * np.max(np.abs(e)))


class _CPUWithoutLibraryKernels(CPUBackend):
    """The CPU backend under a device name whose kernel key has no any-length transform
    kernels: a device as a new backend without them would be."""
    device = "cpu-without-fft-library"
    kernel_device = "none"


@pytest.mark.parametrize("device, library", [("cuda-emulator", True), ("cpu-without-fft-library", False)])
def test_each_device_gets_the_transform_primitives_or_the_own_kernel(device, library):
    """The CUDA backends (here the grid emulator) have kernels for fft_c2c/r2c/c2r and get
    pocketfft's plans; a device without them builds the transforms on `fft` (Bluestein
    from primitives). Both give NumPy's values."""
    from jitgrad.backends import register_backend, unregister_backend
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 12))
    z = x + 1j * rng.standard_normal(x.shape)

    def f(x, z):
        return np.fft.rfft2(x), np.fft.ifft(z, n=7, axis=0), np.fft.irfft(z, n=10)
    register_backend("cpu-without-fft-library", _CPUWithoutLibraryKernels)
    try:
        compiled = jitgrad.jit(f, device=device)
        names = set(op_names(compiled, x, z))
        results = compiled(x, z)
    finally:
        unregister_backend("cpu-without-fft-library")
    if library:
        assert {"fft_c2c", "fft_r2c", "fft_c2r"} <= names and "fft" not in names, names
    else:
        assert "fft" in names and not {"fft_c2c", "fft_r2c", "fft_c2r"} & names, names
    for g, e in zip(results, f(x, z), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12 * np.max(np.abs(e)))


# --------------------------------------------------------------------------- fresh processes

def run_fresh(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=240, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


CACHED = """
    import json, sys
    import numpy as np
    import jitgrad
    from jitgrad.config import config
    config.cache_dir = sys.argv[1]
    x = np.random.default_rng(5).standard_normal((6, 9))
    f = jitgrad.jit(lambda x: np.fft.irfft(np.fft.rfft(x, axis=0) * 1j, n=6, axis=0) + np.fft.fft2(x).real)
    got = f(x)
    expected = np.fft.irfft(np.fft.rfft(x, axis=0) * 1j, n=6, axis=0) + np.fft.fft2(x).real
    print(json.dumps([f.lower(x).executable.compiled.from_cache, bool(np.array_equal(got, expected))]))
"""


def test_disk_cache_entry_calls_the_loops_in_a_fresh_process(tmp_path):
    """The cached object names the loops by symbol; a new process resolves them to its own
    NumPy's addresses (different under address-space randomization) before loading."""
    assert json.loads(run_fresh(CACHED, str(tmp_path))) == [False, True]
    assert any(p.suffix == ".o" for p in tmp_path.iterdir())
    assert json.loads(run_fresh(CACHED, str(tmp_path))) == [True, True]


EXPORT = """
    import sys
    import numpy as np
    import jitgrad, jitgrad.aot
    x = np.random.default_rng(6).standard_normal((4, 9))
    f = jitgrad.jit(lambda x: (np.fft.irfft2(np.fft.fft2(x) * 1j, s=(4, 7)), np.abs(np.fft.rfft(x, n=11, axis=0))))
    f(x)                                     # the JIT's lowering (library calls) is what the export starts from
    g = jitgrad.grad(lambda x: (np.fft.irfft2(np.fft.rfft2(x, norm="ortho") * 2, s=x.shape) ** 2).sum())
    jitgrad.aot.Library("spectral").add("f", f, x).add("g", g, x).build(sys.argv[1])
    print("built")
"""

LOAD = """
    import sys
    import numpy as np
    import jitgrad.aot
    x = np.random.default_rng(6).standard_normal((4, 9))
    model = jitgrad.aot.load(sys.argv[1])
    values = model.f(x)
    expected = (np.fft.irfft2(np.fft.fft2(x) * 1j, s=(4, 7)), np.abs(np.fft.rfft(x, n=11, axis=0)))
    errors = [float(np.max(np.abs(v - e)) / np.max(np.abs(e))) for v, e in zip(values, expected)]
    gradient = model.g(x)                    # of sum((2 x / sqrt(36)) ** 2)
    errors.append(float(np.max(np.abs(gradient - 8 * x / 36)) / np.max(np.abs(8 * x / 36))))
    print(max(errors) < 1e-13 and "llvmlite" not in sys.modules)
"""


def test_aot_library_uses_the_own_kernel_and_loads_in_a_fresh_process(tmp_path):
    """An artifact cannot link NumPy's loops: its transforms are expanded onto jitgrad's
    kernel (Bluestein for 7 and 11), and the library loads with NumPy and ctypes only."""
    assert run_fresh(EXPORT, str(tmp_path / "spectral")) == "built"
    assert run_fresh(LOAD, str(tmp_path / "spectral")) == "True"


OUT_OF_MEMORY = """
    import resource, sys
    import numpy as np
    import jitgrad
    n = 1 << 23
    z = np.ones(n, complex)
    f = jitgrad.jit(lambda z: np.fft.fft(z))
    f(z)
    f(z)                                     # compiled, pocketfft's plan cached, the native call path set up
    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    limit = size + n * 24                    # room for the 128 MiB result, not for pocketfft's scratch row
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    outcomes = []
    for call in (f, f._call):                # the native call path, then the Python path
        try:
            call(z)
            outcomes.append("returned")
        except SystemError as err:
            outcomes.append(type(err.__cause__).__name__)
    print(",".join(outcomes))
"""


def test_an_allocation_failure_inside_pocketfft_raises():
    """NumPy's loop reports a failed allocation by setting MemoryError under the GIL: the
    call raises it on both call paths and returns no values."""
    assert run_fresh(OUT_OF_MEMORY) == "MemoryError,MemoryError"
