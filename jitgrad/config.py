"""Process-wide settings, set in code (never through environment variables)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
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


config = Config()
