"""The interface every code generator implements (CPU now; PTX for NVIDIA GPUs next).

A backend turns one IR function into an `Executable`: a callable on NumPy arrays that
also exposes the text of its own lowering stages, so the CLI and `.lower()` can print
LLVM IR, machine code or PTX without knowing which backend produced it.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from jitgrad.ir import Function


class Executable(Protocol):
    function: Function

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on arrays whose dtypes and shapes match `function`'s arguments."""

    def stage_text(self, stage: str) -> str:
        """The text of a backend stage, e.g. 'llvm' or 'asm'."""


class Backend(Protocol):
    name: str
    stages: tuple[str, ...]

    def compile(self, fn: Function) -> Executable: ...
