"""Process-wide settings, set in code (never through environment variables)."""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator

COMPILE_SETTINGS = ("device", "fusion", "num_threads", "threads_pool", "native_bf16", "index_bounds")
"""The settings compiled code depends on: part of every signature's cache key, so that
changing one between calls compiles again rather than reusing code built without it."""


@dataclass
class Config:
    device: str = "cpu"
    """The backend that compiles functions, by device name (`jitgrad.backends.register_backend`)."""

    verify_ir: bool = False
    """Verify the IR after tracing, differentiation and every pass (the tests turn it on;
    it costs a walk over the IR per stage)."""

    cache_dir: str | None = "~/.cache/jitgrad"
    """Where compiled machine code is kept between processes (None: no disk cache)."""

    fusion: bool = True
    """Loop fusion (passes/schedule.py). Off, every op gets its own loop and buffer: slower,
    and the reference the tests compare fused code against."""

    num_threads: int = 0
    """Threads for large fused loops, fixed when a function is compiled (0: all cores).
    Results are bit-identical for every value: work is cut into fixed blocks."""

    threads_pool: str = "jitgrad"
    """The thread pool those loops run on: "jitgrad" (backends/cpu/thread_pool.py: threads
    claim blocks one at a time, and the caller never waits for a worker that has not
    started; Linux x86-64, else "gomp" is used) or "gomp" (libgomp's GOMP_parallel: each
    thread runs a fixed share of the blocks and the caller waits for every share, which
    on a loaded machine is a wait for a descheduled worker: W1 took 2-3 times as long
    under load, docs/benchmarks.md). Results are bit-identical for either."""

    native_bf16: bool = True
    """Products of bfloat16 operands use the CPU's bfloat16 dot-product instructions
    (AVX-512 BF16) where it has them (backends/cpu/bf16_gemm.py); False, or a CPU without
    them: the operands are widened to float32 (exact) and multiplied by sgemm."""

    index_bounds: str = "raise"
    """Run-time (traced) indices outside their axis: "raise" makes the call raise
    `jitgrad.IndexingError` naming the line, as NumPy raises IndexError; "clamp" clamps them
    into range without a check, as JAX does. Either way the code never reads out of bounds.
    On GPU devices indices are always clamped (docs/gpu.md)."""

    max_signatures_per_function: int = 64
    """Compiled signatures each jitted/differentiated function keeps in memory; the least
    recently used one is dropped (and its machine code freed) beyond this."""

    recompile_warning_after: int = 8
    """A function compiled for more signatures than this warns once (`RecompileWarning`),
    naming what changed: an argument's shape, dtype or static value, or a closure value."""

    closure_snapshot_bytes: int = 1 << 20
    """An array that a compiled function names (closure, global, attribute) but does not
    use as an implicit argument is compared by contents at each call up to this size,
    by identity above it (`tracing/implicit.py`)."""


    _on_compile_settings_change: list[Callable[[], None]] = field(default_factory=list, repr=False, compare=False)
    """Called after a compile setting changes (compiled functions drop their native call
    paths, which skip the signature lookup)."""

    def __setattr__(self, name, value):
        if name == "index_bounds" and value not in ("raise", "clamp"):
            raise ValueError(f'config.index_bounds must be "raise" or "clamp", not {value!r}')
        if name == "threads_pool" and value not in ("gomp", "jitgrad"):
            raise ValueError(f'config.threads_pool must be "gomp" or "jitgrad", not {value!r}')
        changed = name in COMPILE_SETTINGS and getattr(self, name, value) != value
        object.__setattr__(self, name, value)
        if changed:
            for listener in getattr(self, "_on_compile_settings_change", ()):
                listener()

    def compile_settings(self) -> tuple:
        """(device, fusion, num_threads): the settings part of a signature's cache key."""
        return tuple(getattr(self, name) for name in COMPILE_SETTINGS)

    def on_compile_settings_change(self, listener: Callable[[], None]) -> None:
        self._on_compile_settings_change.append(listener)


config = Config()


_TARGET_DEVICE: ContextVar[str | None] = ContextVar("jitgrad_target_device", default=None)


def target_device() -> str:
    """The device the compile in progress is for: `jit(f, device=...)`'s, else
    `config.device`. Tracing rules and passes that choose ops by the kernels a device has
    ask this, not `config.device`, which a per-function device overrides."""
    return _TARGET_DEVICE.get() or config.device


@contextlib.contextmanager
def compiling_for(device: str) -> Iterator[None]:
    token = _TARGET_DEVICE.set(device)
    try:
        yield
    finally:
        _TARGET_DEVICE.reset(token)
