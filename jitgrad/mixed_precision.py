"""Mixed-precision training: compute in bfloat16 or float16, keep float32 master weights.

    mp_loss = jitgrad.mixed_precision(loss, compute="bfloat16")
    grad_fn = jitgrad.jit_grad(mp_loss)          # float32 gradients of float32 parameters

`mixed_precision(loss_fn)` is a transformation of the loss function: the returned function
casts every floating-point array among its arguments (parameters and inputs) to the
compute dtype on entry, runs `loss_fn` on the cast values, and casts its floating-point
results to the `params` dtype. The parameters the caller holds, and updates, stay in
float32 (master weights); the casts are ordinary `astype` operations, so the gradient
flows back through them and arrives in float32, the parameters' dtype. Inside, operations
follow NumPy's rules on the narrow dtypes, which jitgrad reproduces bit for bit:

  - elementwise operations compute in float32 and round to the compute dtype after each
    operation;
  - reductions (sum, mean, var, ...) accumulate in float64 and round once;
  - contractions (matmul, dot, einsum) accumulate in float32: float16 @ float16 rounds the
    result to float16, bfloat16 @ bfloat16 returns float32 (ml_dtypes' rule, as in
    NumPy), so operations after a bfloat16 contraction run in float32 until a cast.

The same transformed function runs under NumPy unchanged (it is plain NumPy code), which
is how the tests check the compiled results.

Gradients in float16 underflow below 6e-8 (and bfloat16's 8-bit mantissa loses small
updates): `LossScaler` multiplies the loss by a large power of two before the backward
pass, so the narrow cotangents keep their digits, then divides the float32 gradients by
the same power of two (exact) and skips steps whose gradients overflowed.
"""
from __future__ import annotations

import functools
import math
import sys
import types
from typing import Callable

import ml_dtypes
import numpy as np

from jitgrad.errors import ArgumentError
from jitgrad.tracing.pytree import tree_flatten, tree_map, tree_unflatten

__all__ = ["mixed_precision", "LossScaler", "COMPUTE_DTYPES"]

COMPUTE_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16),
                  "float32": np.dtype(np.float32)}
_PARAM_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def _is_float_array(x) -> bool:
    """Arrays and traced values of a float dtype; Python scalars (also traced ones) stay
    weakly typed, as NumPy keeps them."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or isinstance(x, (float, int, complex)) or getattr(x, "weak", False):
        return False
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype == COMPUTE_DTYPES["bfloat16"]


def _cast(tree, dtype: np.dtype):
    return tree_map(lambda x: x.astype(dtype) if _is_float_array(x) and np.dtype(x.dtype) != dtype else x, tree)


def mixed_precision(loss_fn: Callable | None = None, *, compute: str = "bfloat16", params: str = "float32"):
    """`loss_fn` computing in `compute` ("bfloat16" or "float16"), its float results in
    `params` ("float32"). Usable as a decorator (`@mixed_precision(compute="float16")`)."""
    if compute not in COMPUTE_DTYPES:
        raise ArgumentError(f"mixed_precision: compute must be one of {sorted(COMPUTE_DTYPES)}, got {compute!r}")
    if params not in _PARAM_DTYPES:
        raise ArgumentError(f"mixed_precision: params must be one of {sorted(_PARAM_DTYPES)}, got {params!r}")
    if loss_fn is None:
        return functools.partial(mixed_precision, compute=compute, params=params)
    compute_dtype, param_dtype = COMPUTE_DTYPES[compute], _PARAM_DTYPES[params]

    @functools.wraps(loss_fn)
    def in_compute_dtype(*args, **kwargs):
        out = loss_fn(*_cast(args, compute_dtype), **_cast(kwargs, compute_dtype))
        return _cast(out, param_dtype)

    in_compute_dtype.compute_dtype, in_compute_dtype.param_dtype = compute_dtype, param_dtype
    return in_compute_dtype


class LossScaler:
    """Dynamic loss scaling (as in PyTorch's GradScaler and Micikevicius et al. 2018).

    The scale is a power of two, so scaling and unscaling float32 gradients is exact
    unless they overflow. After `growth_interval` steps in a row with finite gradients the
    scale is multiplied by `growth_factor`; a step with an inf or nan gradient is skipped
    and the scale multiplied by `backoff_factor` (never below `min_scale`).

    With an optimizer: `SGD(..., loss_scaler=scaler)` / `Adam(...)` unscale, check, skip
    and update the scale inside `apply_gradients`. By hand, with jit_grad:

        grad_fn = jit_grad(scaler.scaled(loss))          # loss(params, ...) * loss_scale
        grads = grad_fn(params, x, y, scaler.scale)      # the scale is an argument: no recompile
        grads, finite = scaler.unscale(grads)
        scaler.update(finite)
        if finite: ...apply grads...
    """

    def __init__(self, init_scale: float = 2.0 ** 15, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, min_scale: float = 1.0, max_scale: float = 2.0 ** 24):
        for name, value in (("init_scale", init_scale), ("growth_factor", growth_factor),
                            ("backoff_factor", backoff_factor), ("min_scale", min_scale), ("max_scale", max_scale)):
            if not (value > 0 and math.isfinite(value) and math.frexp(value)[0] == 0.5):
                raise ArgumentError(f"LossScaler: {name} must be a positive power of two (exact scaling), "
                                    f"got {value!r}")
        if growth_factor <= 1 or backoff_factor >= 1:
            raise ArgumentError("LossScaler: growth_factor must be > 1 and backoff_factor < 1")
        if not isinstance(growth_interval, int) or growth_interval < 1:
            raise ArgumentError(f"LossScaler: growth_interval must be a positive int, got {growth_interval!r}")
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval, self.min_scale, self.max_scale = growth_interval, float(min_scale), float(max_scale)
        self.good_steps = 0
        self.skipped_steps = 0

    def scaled(self, loss_fn: Callable) -> Callable:
        """`loss_fn` with one more trailing argument, the scale: returns loss * scale.
        Pass `scaler.scale` (a Python float: an argument, not a constant, so changing it
        does not recompile)."""
        @functools.wraps(loss_fn)
        def scaled_loss(*args):
            *inner, loss_scale = args
            return loss_fn(*inner) * loss_scale
        return scaled_loss

    def unscale(self, grads):
        """(grads / scale, all finite?) for a pytree of gradient arrays."""
        leaves, treedef = tree_flatten(grads)
        arrays = [np.asarray(g) for g in leaves]
        finite = all(bool(np.isfinite(a).all()) for a in arrays)
        inverse = 1.0 / self.scale
        unscaled = [(a * np.asarray(inverse, a.dtype)) if a.dtype.kind == "f" else a for a in arrays]
        return tree_unflatten(treedef, unscaled), finite

    def update(self, finite: bool) -> None:
        """Grow the scale after `growth_interval` finite steps in a row; back off (and count
        a skipped step) after a step with inf/nan gradients."""
        if finite:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale = min(self.scale * self.growth_factor, self.max_scale)
                self.good_steps = 0
        else:
            self.skipped_steps += 1
            self.good_steps = 0
            self.scale = max(self.scale * self.backoff_factor, self.min_scale)

    def __repr__(self) -> str:
        return (f"LossScaler(scale={self.scale:g}, good_steps={self.good_steps}, "
                f"skipped_steps={self.skipped_steps})")


class _CallableModule(types.ModuleType):
    """`jitgrad.mixed_precision` names both this module and the transformation: importing
    the module (`from jitgrad.mixed_precision import LossScaler`) binds the module to
    that attribute of the package, so the module itself, called, is the transformation."""

    def __call__(self, loss_fn: Callable | None = None, *, compute: str = "bfloat16", params: str = "float32"):
        return mixed_precision(loss_fn, compute=compute, params=params)


sys.modules[__name__].__class__ = _CallableModule
