"""A 2-D FFT-based convolution and its gradient (512 x 512, float64): jitgrad vs JAX in
one process, and NumPy for the forward value.

The loss: blur an image with a kernel by multiplying their real FFTs (circular
convolution), and sum the squared difference from a target,

    loss(image, kernel) = sum((irfft2(rfft2(image) * rfft2(kernel, s=image.shape)) - target) ** 2)

differentiated with respect to the image and the kernel (value and both gradients).

  jitgrad       jitgrad.value_and_grad of the NumPy function (np.fft.rfft2 / irfft2): on the
                CPU, one call of NumPy's pocketfft loop per transformed axis
  jax           jax.jit(jax.value_and_grad) of the same code on jax.numpy (ducc0/pocketfft)
  numpy-value   NumPy's forward value alone (no gradient), for scale
  --profile     also jitgrad's forward value alone, one complex fft2 of the image by jitgrad
                and by NumPy, and the op counts of the compiled gradient program

Every timed call takes NumPy arrays and returns NumPy arrays; jitgrad's results are
checked against JAX's before timing. Medians of `--repeats` calls, wall and process CPU
time (on a shared machine the CPU time is the steadier measure of the work).

Run: python benchmarks/fft_convolution.py [--size 512] [--kernel 15] [--repeats 15] [--profile]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jitgrad  # noqa: E402


def blur_loss(image, kernel, target):
    spectrum = np.fft.rfft2(image) * np.fft.rfft2(kernel, s=image.shape)
    blurred = np.fft.irfft2(spectrum, s=image.shape)
    return np.sum((blurred - target) ** 2)


def make_data(size: int, kernel_size: int):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((size, size)), rng.standard_normal((kernel_size, kernel_size)) / kernel_size,
            rng.standard_normal((size, size)))


def jax_value_and_grad():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    def loss(image, kernel, target):
        spectrum = jnp.fft.rfft2(image) * jnp.fft.rfft2(kernel, s=image.shape)
        return jnp.sum((jnp.fft.irfft2(spectrum, s=image.shape) - target) ** 2)
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    def call(image, kernel, target):
        value, (g_image, g_kernel) = compiled(image, kernel, target)
        return float(value), (np.asarray(g_image), np.asarray(g_kernel))
    return call


def median_times(fn, args, repeats: int) -> tuple[float, float]:
    fn(*args)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(*args)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def profile(compiled, args) -> None:
    """What the compiled gradient program is made of: its ops, counted by name."""
    lowered = compiled.lower(*args)
    text = lowered.as_text() if hasattr(lowered, "as_text") else str(lowered)
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if " = " in line and "(" in line:
            name = line.split(" = ", 1)[1].split("(", 1)[0].strip()
            counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    print("  ops in the compiled program:", ", ".join(f"{name} {count}" for name, count in ranked))
    transforms = {name: counts.get(name, 0) for name in ("fft_r2c", "fft_c2r", "fft_c2c", "fft")}
    print("  transforms (NumPy's pocketfft loops: fft_r2c, fft_c2r, fft_c2c; jitgrad's own kernel: fft):",
          ", ".join(f"{name} {count}" for name, count in transforms.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--kernel", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--profile", action="store_true", help="print the compiled program's op counts")
    args = parser.parse_args()
    image, kernel, target = make_data(args.size, args.kernel)
    vg = jitgrad.value_and_grad(blur_loss, argnums=(0, 1))

    def run_jitgrad(image, kernel, target):
        value, (g_image, g_kernel) = vg(image, kernel, target)
        return float(value), (np.asarray(g_image), np.asarray(g_kernel))
    start = time.perf_counter()
    run_jitgrad(image, kernel, target)
    first_call = time.perf_counter() - start
    candidates = {"jitgrad": run_jitgrad}
    jax_call = jax_value_and_grad()
    if jax_call is not None:
        candidates["jax"] = jax_call
        value, (g_image, g_kernel) = jax_call(image, kernel, target)
        mine, (m_image, m_kernel) = run_jitgrad(image, kernel, target)
        np.testing.assert_allclose(mine, value, rtol=1e-10)
        np.testing.assert_allclose(m_image, g_image, rtol=1e-8, atol=1e-8 * np.max(np.abs(g_image)))
        np.testing.assert_allclose(m_kernel, g_kernel, rtol=1e-8, atol=1e-8 * np.max(np.abs(g_kernel)))
    candidates["numpy-value"] = lambda i, k, t: float(blur_loss(i, k, t))
    if args.profile:                # the forward program alone, and one transform, for the breakdown
        forward = jitgrad.jit(blur_loss)
        one_fft = jitgrad.jit(lambda x: np.fft.fft2(x))
        candidates["jitgrad-value"] = lambda i, k, t: float(forward(i, k, t))
        candidates["jitgrad-fft2"] = lambda i, k, t: one_fft(i)
        candidates["numpy-fft2"] = lambda i, k, t: np.fft.fft2(i)
    print(f"FFT convolution loss, value and gradient, {args.size}x{args.size} image, {args.kernel}x{args.kernel} "
          f"kernel, float64, median of {args.repeats}")
    print(f"jitgrad first call (trace + differentiate + compile + run): {first_call:.2f} s")
    print(f"  {'':12s} {'wall':>9s}      {'CPU':>9s}      wall / jax   CPU / jax")
    times = {name: median_times(fn, (image, kernel, target), args.repeats) for name, fn in candidates.items()}
    reference = times.get("jax", times["jitgrad"])
    for name, (wall, cpu) in times.items():
        print(f"  {name:12s} {wall * 1e3:9.2f} ms   {cpu * 1e3:9.2f} ms   {wall / reference[0]:8.2f}x   "
              f"{cpu / reference[1]:8.2f}x")
    if args.profile:
        profile(vg, (image, kernel, target))


if __name__ == "__main__":
    main()
