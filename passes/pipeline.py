"""The IR -> IR passes by name, and the optimization pipeline the compiler runs after
tracing and differentiation (`jitgrad opt -p NAME,...` runs any list of them)."""
from __future__ import annotations

from typing import Sequence

from .inline import InlineCalls, InlineCheckpoints
from .lower_complex import LowerComplex
from .manager import FunctionPass
from .nn_idioms import RecognizeConvolutions, RecognizePooling
from .simplify import (AlgebraicSimplification, CommonSubexpressionElimination, ConstantFolding,
                       DeadCodeElimination, simplify_pipeline)

PASSES: dict[str, type[FunctionPass]] = {cls.name: cls for cls in (
    RecognizeConvolutions, InlineCalls, LowerComplex, RecognizePooling, AlgebraicSimplification, ConstantFolding,
    CommonSubexpressionElimination, DeadCodeElimination, InlineCheckpoints)}
"""Every function pass, by its `name`, in the order the optimization pipeline runs them
(nn-conv-idioms runs earlier, on each traced function: passes/nn_idioms.py says why)."""


def optimization_passes() -> list[FunctionPass]:
    """The IR -> IR passes run after tracing and differentiation, in order."""
    return [InlineCalls(), LowerComplex(), RecognizePooling(), *simplify_pipeline(), InlineCheckpoints()]


def passes_by_name(names: Sequence[str]) -> list[FunctionPass]:
    """Instances of the named passes, in the order given; an unknown name is a ValueError
    that lists the known ones."""
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        raise ValueError(f"unknown pass {unknown[0]!r}; passes are: {', '.join(PASSES)}")
    return [PASSES[name]() for name in names]
