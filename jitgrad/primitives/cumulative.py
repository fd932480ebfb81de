"""Cumulative sums along one axis, as NumPy computes them: one running sum per line,
element after element, each partial sum rounded to the dtype.

NumPy's `cumsum` (`np.add.accumulate`) adds sequentially, rounding every partial sum to
the array's dtype; float16 and bfloat16 partial sums are rounded to 16 bits at each step,
so a long float16 sum stagnates and its error grows with the length. A scan of another
shape (a tree, a parallel prefix) rounds differently — for float16 completely differently —
so `cumsum` is a kernel of its own that repeats NumPy's order and roundings exactly.

`reverse=True` accumulates from the end of the axis; it is the transpose of the forward
sum (each input feeds every later output), which makes `cumsum` linear with a transpose
of the same kind, so derivatives of every order stay kernels of this one op.
"""
from __future__ import annotations

import numpy as np

from jitgrad.errors import ShapeError
from jitgrad.ir import DType, TensorType
from .base import Primitive, deflinear
from .kernel_kind import KernelKind


class CumulativeSumKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.cumulative:emit_cumsum"}


def _cumsum_infer(x: TensorType, *, axis: int, reverse: bool):
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"cumsum: axis {axis} is out of range for an operand of rank {x.ndim}")
    if x.dtype == DType.bool:
        raise ShapeError("cumsum: convert a bool operand to an integer dtype first (NumPy sums bools as int)")
    return [x]


def _cumsum_impl(x, *, axis: int, reverse: bool):
    x = np.asarray(x)
    if reverse:
        return np.flip(np.cumsum(np.flip(x, axis), axis=axis, dtype=x.dtype), axis)
    return np.cumsum(x, axis=axis, dtype=x.dtype)


cumsum_p = Primitive("cumsum", _cumsum_infer, _cumsum_impl,
                     doc="Running sums along `axis` (from its end when `reverse`), added one element "
                         "at a time and rounded to the dtype at each step, as NumPy's cumsum.")
cumsum_p.lowering = CumulativeSumKernel()
deflinear(cumsum_p, lambda ct, x, *, axis, reverse: [cumsum_p.bind(ct, axis=axis, reverse=not reverse)])


def cumsum(x, axis: int, reverse: bool = False):
    return cumsum_p.bind(x, axis=axis, reverse=reverse)
