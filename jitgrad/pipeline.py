"""The compilation pipeline: staged IR -> optimization passes -> kernel schedule and
memory plan -> the backend of `config.device`, with every IR stage and every listing of
the generated code kept for inspection (`Compiled.lower(...)`, the CLI's
--stage/--after-all)."""
from __future__ import annotations

import time

import numpy as np
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from jitgrad.errors import JitgradError, VerificationError
from jitgrad.ir import DType, Function
from jitgrad.passes.manager import PassManager
from jitgrad.passes.memory import plan_buffers
from jitgrad.passes.pipeline import optimization_passes
from jitgrad.passes.schedule import schedule
from .backends import backend_for
from .backends.base import Backend, Executable
from .config import compiling_for, config
from .staging import Staged
from .tracing import implicit
from .tracing.pytree import tree_flatten


@dataclass
class Lowered:
    """One compiled signature: every IR stage, the backend executable, and the output
    structure. `run` is the call path of a cached signature."""

    staged: Staged
    stages: list[tuple[str, Function]]
    executable: Executable
    timings: dict[str, float] = field(default_factory=dict)
    flat_arguments: bool = False
    """Were the arguments plain arrays (no pytrees, no Python scalars)?"""
    captures: implicit.CaptureSpec = field(default_factory=lambda: implicit.CaptureSpec([], []))
    """What the function reads from closures, globals and attributes: the implicit
    arguments (the IR function's trailing arguments, fetched at each call) and guards."""
    settings: tuple = ()
    """`config.compile_settings()` when this was compiled (device, fusion, threads)."""

    @property
    def function(self) -> Function:
        """The final (optimized) IR function that was compiled."""
        return self.stages[-1][1]

    def stage_names(self) -> list[str]:
        return [name for name, _ in self.stages] + list(self.executable.listing_names)

    def as_text(self, stage: str | None = None) -> str:
        """The text of one IR stage or backend listing (default: the optimized IR)."""
        from jitgrad.ir.printer import print_function
        if stage is None:
            return print_function(self.function)
        for name, fn in self.stages:
            if name == stage:
                return print_function(fn)
        try:
            return self.executable.listing(stage)
        except KeyError:
            raise KeyError(f"no stage {stage!r}; stages are {', '.join(self.stage_names())}") from None

    def memory_report(self) -> list[tuple[str, int]]:
        """Peak bytes per stage: IR stages executed op by op (every value materialized,
        freed after its last use), then the compiled code (arguments, outputs and the
        planned workspace)."""
        from jitgrad.passes.memory import peak_bytes
        report = [(name, peak_bytes(fn)) for name, fn in self.stages]
        fn = self.function
        compiled = sum(v.type.nbytes for v in fn.args) + sum(v.type.nbytes for v in fn.outputs)
        report.append(("compiled", compiled + self.executable.workspace_bytes))
        return report

    def fast_call(self, fallback: Callable):
        """The native call path for this signature, or None where it does not apply: every
        argument must be a plain array (the structure a flat tuple of leaves) and the result
        one output or (nested) tuples of outputs. With implicit arguments it takes them
        after the explicit ones (`Compiled` reads them and passes them on)."""
        n_out = len(self.function.outputs)
        result = self.staged.unflatten(list(range(n_out)))
        if not _is_tuple_tree(result):
            return None
        if not self.flat_arguments:
            return None
        return self.executable.fast_call(fallback, result)

    @property
    def remat(self):
        """The rematerialization decision, when compiled with a memory budget (else None)."""
        return self.staged.remat

    def read_captures(self) -> list[np.ndarray] | None:
        """The implicit arguments' arrays now, or None when this signature no longer
        applies (a guarded value changed, an implicit argument changed shape or dtype)."""
        return self.captures.read() if self.captures else []

    def run(self, leaves: Sequence, implicit_arrays: Sequence[np.ndarray] = ()) -> Any:
        return self.staged.unflatten(self.executable([*leaves, *implicit_arrays]))


def _is_tuple_tree(spec) -> bool:
    """Is `spec` an output index or a (nested) tuple of output indices?"""
    if isinstance(spec, int):
        return True
    return isinstance(spec, tuple) and all(_is_tuple_tree(item) for item in spec)


def compile_signature(stage: Callable[[tuple], Staged], args: tuple, name: str,
                      backend: Backend | None = None) -> Lowered:
    """Trace and transform (`stage`) for `args`, optimize, schedule, plan memory and
    compile with `backend` (default: the backend of `config.device`); tracing and the
    passes see that backend's device as `config.target_device()`."""
    with compiling_for(backend.device if backend is not None else config.device):
        return _compile_signature(stage, args, name, backend)


def _compile_signature(stage: Callable[[tuple], Staged], args: tuple, name: str, backend: Backend | None) -> Lowered:
    settings = config.compile_settings()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with implicit.capturing() as capture:
        staged = stage(args)
    timings["trace+autodiff"] = time.perf_counter() - start
    if not all(capture.owns(v) for v in staged.captured):
        raise JitgradError(f"{name} uses a traced value of another function's trace (a tracer leaked into a "
                           "global or a closure that outlived its transformation)")
    if config.verify_ir:
        from jitgrad.ir.verifier import verify
        for stage_name, fn in staged.stages:
            try:
                verify(fn)
            except VerificationError as err:
                raise VerificationError(f"after {stage_name}: {err.message}", err.location) from err
    manager = PassManager(optimization_passes(), verify=config.verify_ir)
    fn = manager.run(staged.function)
    stages = list(staged.stages) + [(s.name, s.function) for s in manager.stages]
    timings.update((s.name, s.seconds) for s in manager.stages)
    start = time.perf_counter()
    kernels = schedule(fn, config.fusion)
    memory = plan_buffers(fn, kernels)
    timings["schedule+memory"] = time.perf_counter() - start
    start = time.perf_counter()
    executable = (backend or backend_for(config.device)).compile(fn, kernels, memory)
    timings["backend"] = time.perf_counter() - start
    leaves, tree = tree_flatten(args)
    flat = tree.kind == "tuple" and all(c.kind == "leaf" for c in tree.children) and all(
        isinstance(x, np.ndarray) and x.dtype != DType.bf16.numpy   # bfloat16 has no buffer format
        for x in leaves)
    captures = capture.finish(staged.captured, config.closure_snapshot_bytes)
    return Lowered(staged, stages, executable, timings, flat, captures, settings)
