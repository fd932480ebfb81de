"""Passes as small named IR -> IR units, and the manager that runs a flat list of them.

A pass is a frozen dataclass with a `name` (its fields are its options);
`run` returns a NEW function and leaves its input untouched, so the function after every
stage stays valid and printable. The manager records each stage (function + wall time)
for the CLI's print-after and time-passes, and can run the verifier around every pass so
a broken pass is named the moment it breaks the IR, not three passes later.

`rewrite_function` runs one callback on the region-recursive driver of
`jitgrad.ir.rewrite` (an env with read/write): walk the ops in order, nested regions
included, map operands through an env, and either copy each op or let the callback
replace its results.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Sequence

from jitgrad.ir import Function, Operation, Value
from jitgrad.ir.errors import VerificationError
from jitgrad.ir.rewrite import Rewriter
from jitgrad.ir.verifier import verify


class FunctionPass:
    """Base of all function passes: subclasses are `@dataclass(frozen=True)`, set the class
    attribute `name` and implement `run`."""

    name: ClassVar[str] = ""

    def run(self, fn: Function) -> Function:
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    def __call__(self, fn: Function) -> Function:
        return self.run(fn)


@dataclass
class Stage:
    """One pipeline stage: the pass's name, the function it produced, its wall time."""

    name: str
    function: Function
    seconds: float


class PassManager:
    """Runs `passes` in order. With `verify`, the IR is verified before the first pass and
    after each one; a failure names the pass that produced the bad IR."""

    def __init__(self, passes: Sequence[FunctionPass], verify: bool = False):
        self.passes = list(passes)
        self.verify = verify
        self.stages: list[Stage] = []

    def run(self, fn: Function) -> Function:
        self.stages = []
        self._check(fn, "before the first pass")
        for p in self.passes:
            start = time.perf_counter()
            fn = p.run(fn)
            self.stages.append(Stage(p.name, fn, time.perf_counter() - start))
            self._check(fn, f"after pass {p.name!r}")
        return fn

    def _check(self, fn: Function, when: str) -> None:
        if not self.verify:
            return
        try:
            verify(fn)
        except VerificationError as err:
            raise VerificationError(f"{when}: {err.message}", err.location) from err

    def report(self) -> str:
        """A time-passes table: one line per stage with its time and op count."""
        lines = [f"{'pass':<12} {'ms':>9} {'ops':>6}"]
        for stage in self.stages:
            lines.append(f"{stage.name:<12} {stage.seconds * 1e3:9.3f} {len(stage.function.walk()):6d}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- rebuilding

Rewrite = Callable[[Operation, list[Value]], Optional[Sequence[Value]]]


class CallbackRewriter(Rewriter):
    """The driver with one rule for every op: `rewrite(op, new_operands)` returns the
    values that replace the op's results or None to copy it (its regions rewritten the
    same way); ops with `keep(op)` false are dropped."""

    def __init__(self, rewrite: Rewrite, keep: Callable[[Operation], bool] = lambda op: True):
        super().__init__()
        self._rewrite, self._keep = rewrite, keep

    def rule_for(self, op: Operation):
        return lambda rewriter, op, inputs: self._rewrite(op, inputs)

    def keep(self, op: Operation) -> bool:
        return self._keep(op)


def rewrite_function(fn: Function, rewrite: Rewrite, keep: Callable[[Operation], bool] = lambda op: True,
                     ) -> Function:
    """A new function with `fn`'s signature, rebuilt op by op in program order, inside
    nested regions too.

    For each op with `keep(op)` true, `rewrite(op, new_operands)` runs inside the active
    builder with the op's location; it returns the values that replace the op's results
    (one per result), or None to copy the op, whose regions are then rewritten the same
    way. Terminators are always copied. Ops with `keep(op)` false are dropped: nothing
    may use their results.
    """
    return CallbackRewriter(rewrite, keep).rewrite_function(fn)
