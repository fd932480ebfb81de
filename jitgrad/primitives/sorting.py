"""Sorting along the last axis: `sort` (the values) and `argsort` (the permutation).

Both order each row as NumPy's stable sort does: ascending, NaN last (after +inf), and
elements that compare equal (ties, -0.0 and +0.0) keep their original order. float16 and
bfloat16 are compared by their float value.

`argsort` returns int64 positions and has no derivative. `sort` is differentiable: its
tangent is the input's tangent permuted the same way, a `gather` along the row by the
argsort permutation (so reverse mode scatters the cotangent back; tied elements each
keep their own derivative). Each is a kernel of its own (`KernelKind`; the CPU code is a
bottom-up merge sort per row in `jitgrad/backends/cpu/sort.py`).
"""
from __future__ import annotations

import math

import numpy as np

from .kernel_kind import KernelKind
from jitgrad.errors import ShapeError
from jitgrad.ir import DType, TensorType
from .base import Primitive, Zero, defjvp_zero


class SortKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.sort:emit_sort",
                "cuda": "jitgrad.backends.cuda.sort:emit_sort"}


class ArgsortKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.sort:emit_argsort",
                "cuda": "jitgrad.backends.cuda.sort:emit_argsort"}


class SearchsortedKernel(KernelKind):
    emitters = {"cpu": "jitgrad.backends.cpu.sort:emit_searchsorted",
                "cuda": "jitgrad.backends.cuda.sort:emit_searchsorted"}


def _check_rank(name: str, x: TensorType) -> None:
    if x.ndim == 0:
        raise ShapeError(f"{name}: a 0-d operand has no axis to sort along")


def _sort_infer(x: TensorType):
    _check_rank("sort", x)
    return [x]


def _argsort_infer(x: TensorType):
    _check_rank("argsort", x)
    return [x.with_dtype(DType.i64)]


def _argsort_impl(x):
    """np.argsort(kind='stable') on keys that NumPy orders as it orders `x` (narrow floats
    widened exactly to float64: NaN last, -0.0 == +0.0)."""
    x = np.asarray(x)
    keys = x.astype(np.float64) if DType.from_numpy(x.dtype) in (DType.f16, DType.bf16) else x
    return np.argsort(keys, axis=-1, kind="stable").astype(np.int64)


def _sort_impl(x):
    return np.take_along_axis(np.asarray(x), _argsort_impl(x), axis=-1)


sort_p = Primitive("sort", _sort_infer, _sort_impl,
                   doc="Each row along the last axis sorted ascending, NaN last, stable.")
sort_p.lowering = SortKernel()

argsort_p = Primitive("argsort", _argsort_infer, _argsort_impl,
                      doc="The stable sorting permutation of each row along the last axis (int64).")
argsort_p.lowering = ArgsortKernel()
defjvp_zero(argsort_p)


def sort(x):
    return sort_p.bind(x)


def argsort(x):
    return argsort_p.bind(x)


def take_along_last(x, positions):
    """out[..., j] = x[..., positions[..., j]] for `positions` of x's shape: one gather of
    the flattened array at row * n + position."""
    from .elementwise import add
    from .gather import gather
    from .structural import broadcast_in_dim, constant, reshape
    shape = x.type.shape
    size, n = x.type.size, shape[-1]
    if size == 0:
        return x
    row_start = constant(np.arange(math.prod(shape[:-1]), dtype=np.int64).reshape(shape[:-1]) * n)
    starts = broadcast_in_dim(row_start, shape, tuple(range(len(shape) - 1)))
    flat = reshape(add(positions, starts), (size,))
    return reshape(gather(reshape(x, (size,)), flat, 0), shape)


# --------------------------------------------------------------------------- searchsorted

def _searchsorted_infer(a: TensorType, v: TensorType, *, side):
    if a.ndim != 1:
        raise ShapeError(f"searchsorted: the sorted operand must be 1-d, not of shape {a.shape}")
    if a.dtype != v.dtype:
        raise ShapeError(f"searchsorted: dtypes {a.dtype} and {v.dtype} differ")
    if side not in ("left", "right"):
        raise ShapeError(f"searchsorted: side must be 'left' or 'right', not {side!r}")
    return [v.with_dtype(DType.i64)]


def _searchsorted_impl(a, v, *, side):
    wide = DType.from_numpy(np.asarray(a).dtype) in (DType.f16, DType.bf16)
    a, v = (np.asarray(a, np.float64), np.asarray(v, np.float64)) if wide else (a, v)
    return np.asarray(np.searchsorted(a, v, side=side), np.int64)


searchsorted_p = Primitive("searchsorted", _searchsorted_infer, _searchsorted_impl,
                           doc="For each element of v, its insertion position in the sorted 1-d a "
                               "(side='left': before equal elements; 'right': after); NaN sorts last.")
searchsorted_p.lowering = SearchsortedKernel()
defjvp_zero(searchsorted_p)


def searchsorted(a, v, side: str = "left"):
    return searchsorted_p.bind(a, v, side=side)


def _sort_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    if isinstance(t, Zero):
        return Zero(x.type)
    return take_along_last(t, argsort(x))


sort_p.jvp = _sort_jvp
