"""Cumulative sums and products along one axis, as NumPy computes them: one running
result per line, element after element, each partial result rounded to the dtype.

NumPy's `cumsum` and `cumprod` (`np.add.accumulate`, `np.multiply.accumulate`) combine
sequentially, rounding every partial result to the array's dtype; float16 and bfloat16
partial results are rounded to 16 bits at each step, so a long float16 sum stagnates and
its error grows with the length, and a long product walks into the subnormals by its own
path. A scan of another shape (a tree, a parallel prefix) rounds differently — for
float16 and near the subnormal range completely differently — so both are kernels of
their own that repeat NumPy's order and roundings exactly.

`reverse=True` accumulates from the end of the axis. The reverse sum is the transpose of
the forward sum (each input feeds every later output), which makes `cumsum` linear with a
transpose of the same kind, so derivatives of every order stay kernels of that one op.

`cumprod`'s tangent is the scan of (value, tangent) pairs under the product rule
(p1, t1) . (p2, t2) = (p1 p2, t1 p2 + p1 t2), JAX's rule: no division, so zeros in the
operand give the exact, finite derivative (the product of the other factors), where
cumprod(x) * cumsum(t / x) would give NaN. The pairs are combined by a doubling scan
built from products, pads and slices, whose rounding does not matter for a derivative:
it is linear in the tangent, so reverse mode transposes it, and every op in it has
derivatives of its own, so it differentiates again to any order.
"""
from __future__ import annotations

import numpy as np

from jitgrad.errors import ShapeError
from jitgrad.ir import DType, TensorType
from .base import Primitive, Zero, deflinear, instantiate
from .elementwise import add, mul, tangent_mul
from .kernel_kind import KernelKind
from .structural import concatenate, full, static_slice


class CumulativeSumKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.cumulative:emit_cumsum",
                "cuda": "jitgrad.backends.cuda.cumulative:emit_cumsum"}


class CumulativeProductKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.cumulative:emit_cumprod",
                "cuda": "jitgrad.backends.cuda.cumulative:emit_cumprod"}


def _cumulative_infer(name: str):
    def infer(x: TensorType, *, axis: int, reverse: bool):
        if not 0 <= axis < x.ndim:
            raise ShapeError(f"{name}: axis {axis} is out of range for an operand of rank {x.ndim}")
        if x.dtype == DType.bool:
            raise ShapeError(f"{name}: convert a bool operand to an integer dtype first "
                             f"(NumPy accumulates bools as int)")
        return [x]
    return infer


def _cumulative_impl(numpy_fn):
    def impl(x, *, axis: int, reverse: bool):
        x = np.asarray(x)
        if reverse:
            return np.flip(numpy_fn(np.flip(x, axis), axis=axis, dtype=x.dtype), axis)
        return numpy_fn(x, axis=axis, dtype=x.dtype)
    return impl


cumsum_p = Primitive("cumsum", _cumulative_infer("cumsum"), _cumulative_impl(np.cumsum),
                     doc="Running sums along `axis` (from its end when `reverse`), added one element "
                         "at a time and rounded to the dtype at each step, as NumPy's cumsum.")
cumsum_p.lowering = CumulativeSumKernel()
deflinear(cumsum_p, lambda ct, x, *, axis, reverse: [cumsum_p.bind(ct, axis=axis, reverse=not reverse)])


def cumsum(x, axis: int, reverse: bool = False):
    return cumsum_p.bind(x, axis=axis, reverse=reverse)


def shift_along(x, axis: int, shift: int, reverse: bool, fill):
    """`x` moved `shift` places along `axis` towards its end (towards its start when
    `reverse`), the places it leaves holding `fill`: element k holds x[k - shift]."""
    n = x.type.shape[axis]
    starts, limits = [0] * x.type.ndim, list(x.type.shape)
    if reverse:
        starts[axis] = shift
    else:
        limits[axis] = n - shift
    kept = static_slice(x, tuple(starts), tuple(limits))
    edge = full(fill, x.type.with_shape(tuple(shift if k == axis else s for k, s in enumerate(x.type.shape))))
    return concatenate([kept, edge] if reverse else [edge, kept], axis)


def _cumprod_jvp(primals, tangents, *, axis: int, reverse: bool):
    (x,), (t,) = primals, tangents
    if isinstance(t, Zero):
        return t
    p, t = x, instantiate(t)
    n, shift = x.type.shape[axis], 1
    while shift < n:
        p_before = shift_along(p, axis, shift, reverse, 1)
        t_before = shift_along(t, axis, shift, reverse, 0)
        t = add(tangent_mul(t, p_before), tangent_mul(t_before, p))
        p = mul(p, p_before)
        shift *= 2
    return t


cumprod_p = Primitive("cumprod", _cumulative_infer("cumprod"), _cumulative_impl(np.cumprod),
                      doc="Running products along `axis` (from its end when `reverse`), multiplied one "
                          "element at a time and rounded to the dtype at each step, as NumPy's cumprod.")
cumprod_p.lowering = CumulativeProductKernel()
cumprod_p.jvp = _cumprod_jvp


def cumprod(x, axis: int, reverse: bool = False):
    return cumprod_p.bind(x, axis=axis, reverse=reverse)
