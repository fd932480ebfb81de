"""What the pipeline asks of a backend, and nothing more.

The pipeline (jitgrad/pipeline.py) optimizes the IR, decides the kernels
(`passes.schedule.schedule`) and the buffers (`passes.memory.plan_buffers`), and hands
all three to `Backend.compile`. The `Executable` it gets back runs on NumPy arrays,
reports its workspace size, offers a native call path where the backend has one, and
prints its own listings (generated code, machine code, PTX) for the CLI and
`Lowered.as_text`, by name, without the pipeline knowing which backend made them.

Backends are found by device name (`jitgrad.backends.backend_for`), so the pipeline
imports none of them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Sequence

import numpy as np

from jitgrad.ir import Function
from jitgrad.passes.memory import MemoryPlan
from jitgrad.passes.schedule import Schedule, describe


class Executable(ABC):
    """Compiled code for one IR function."""

    function: Function
    schedule: Schedule
    memory: MemoryPlan

    listing_names: tuple[str, ...] = ("kernels",)
    """The listings `listing` prints; "kernels" (the fusion plan) is common to all."""

    @abstractmethod
    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on arrays whose dtypes and shapes match `function`'s arguments; returns
        new output arrays."""

    @property
    @abstractmethod
    def workspace_bytes(self) -> int:
        """Bytes of intermediate memory one call uses (the planned buffers and any
        temporaries of the backend's own)."""

    def listing(self, name: str) -> str:
        """The text of one listing; KeyError for a name not in `listing_names`."""
        if name == "kernels":
            return describe(self.function, self.schedule, self.memory)
        raise KeyError(f"no listing {name!r} (there are: {', '.join(self.listing_names)})")

    def fast_call(self, fallback: Callable, result) -> Callable | None:
        """A faster call path taking the arguments as separate arrays, calling
        `fallback(*args)` for anything it does not handle, and returning the outputs
        arranged as `result` (an output index or nested tuples of them); None where the
        backend has none."""
        return None


class Backend(ABC):
    """Turns a scheduled IR function into an `Executable`."""

    device: str
    """The name `config.device` selects this backend by."""

    @property
    def kernel_device(self) -> str:
        """The key of the `KernelKind.emitters` this backend's code generator uses (the
        grid emulator runs the CUDA kernels: "cuda")."""
        return self.device

    @abstractmethod
    def compile(self, fn: Function, schedule: Schedule, memory: MemoryPlan) -> Executable:
        """Code for `fn` following `schedule` (the kernels, in order) and `memory` (where
        each intermediate buffer lives)."""
