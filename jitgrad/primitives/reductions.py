"""Reductions over a static set of axes: sum (linear), max and min.

The reduced axes are removed from the result (NumPy's keepdims is a reshape added at
trace time). The max/min JVP spreads the tangent evenly over tied maxima, the
convention JAX uses, so the gradient is symmetric and its sum is preserved.
"""
from __future__ import annotations

import numpy as np

from jitgrad.errors import DTypeError, ShapeError
from jitgrad.ir import DType, TensorType
from .base import Primitive, Reduction, defjvp2, deflinear
from .elementwise import convert, div, eq, tangent_mul
from .structural import broadcast_in_dim


def _reduce_infer(name):
    def infer(x: TensorType, *, axes):
        if any(not 0 <= a < x.ndim for a in axes) or len(set(axes)) != len(axes):
            raise ShapeError(f"{name}: axes {tuple(axes)} are invalid for an array of rank {x.ndim}")
        if x.dtype == DType.bool:
            raise DTypeError(f"{name} is not defined for bool arrays; convert to a number first")
        return [TensorType(tuple(n for k, n in enumerate(x.shape) if k not in axes), x.dtype)]
    return infer


def _reduce_impl(np_fn):
    def impl(x, *, axes):
        return np.asarray(np_fn(x, axis=tuple(axes)), dtype=x.dtype)
    return impl


def _lowest(dtype: DType):
    return -np.inf if dtype.is_float else np.iinfo(dtype.numpy).min


def _highest(dtype: DType):
    return np.inf if dtype.is_float else np.iinfo(dtype.numpy).max


reduce_sum_p = Primitive("reduce_sum", _reduce_infer("reduce_sum"), _reduce_impl(np.sum),
                         doc="Sum over `axes`.")
reduce_sum_p.lowering = Reduction(lambda dtype: 0, lambda c, acc, x: c.add(acc, x))
reduce_max_p = Primitive("reduce_max", _reduce_infer("reduce_max"), _reduce_impl(np.max),
                         doc="Maximum over `axes` (NaN propagates, as in NumPy).")
reduce_max_p.lowering = Reduction(_lowest, lambda c, acc, x: c.maximum(acc, x))
reduce_min_p = Primitive("reduce_min", _reduce_infer("reduce_min"), _reduce_impl(np.min),
                         doc="Minimum over `axes` (NaN propagates, as in NumPy).")
reduce_min_p.lowering = Reduction(_highest, lambda c, acc, x: c.minimum(acc, x))


def _normalize_axes(axes):
    return tuple(sorted(int(a) for a in axes))


def reduce_sum(x, axes):
    return reduce_sum_p.bind(x, axes=_normalize_axes(axes)) if axes else x


def reduce_max(x, axes):
    return reduce_max_p.bind(x, axes=_normalize_axes(axes)) if axes else x


def reduce_min(x, axes):
    return reduce_min_p.bind(x, axes=_normalize_axes(axes)) if axes else x


def _kept_dims(x_type: TensorType, axes):
    return tuple(k for k in range(x_type.ndim) if k not in axes)


def _reduce_sum_transpose(ct, x, *, axes):
    return [broadcast_in_dim(ct, x.type.shape, _kept_dims(x.type, axes))]


deflinear(reduce_sum_p, _reduce_sum_transpose)


def _extremum_jvp(t, ans, x, *, axes):
    """The tangent of a max/min reduction: the mean of the tangents of the elements that
    reach the extremum `ans` (ties share it evenly)."""
    kept = _kept_dims(x.type, axes)
    winners = convert(eq(x, broadcast_in_dim(ans, x.type.shape, kept)), x.type.dtype)
    weights = div(winners, broadcast_in_dim(reduce_sum(winners, axes), x.type.shape, kept))
    return reduce_sum(tangent_mul(t, weights), axes)


defjvp2(reduce_max_p, _extremum_jvp)
defjvp2(reduce_min_p, _extremum_jvp)
