"""The NumPy coverage table: every function both NumPy and jax.numpy define, the ndarray
methods, the operators, the indexing forms and the scipy.special functions, each called
on a traced array and compared with NumPy.

For every entry it records one outcome:
  ok        jitgrad's value equals NumPy's (same dtype and shape; floats within 1e-12
            relative, or 8 ulp for the transcendental ones);
  mismatch  jitgrad returned something else (a wrong answer: the test allows none);
  refused   a JitgradError naming the function (the test checks the name is there);
  crashed   any other exception (the test allows none);
and for float results whether the derivative (forward mode along a random direction,
reverse mode through <t, vjp(c)> = <jvp(t), c>) matches central differences.

    python3 benchmarks/numpy_coverage.py              # reference interpreter (fast)
    python3 benchmarks/numpy_coverage.py --compile    # compiled code (jitgrad.jit)
    python3 benchmarks/numpy_coverage.py --markdown   # the table in docs/numpy-coverage.md

The jax.numpy names are read from tests/data/jax_numpy_names.txt (JAX need not be
installed); `--write-jax-names` regenerates it where JAX is importable.
"""
from __future__ import annotations

import argparse
import collections
import io
import os
import re
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

import jitgrad
from jitgrad.errors import JitgradError
from jitgrad.interpreter import evaluate
from jitgrad.ir import DType
from jitgrad.passes.jvp import jvp_function
from jitgrad.passes.reverse import vjp_function
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.tracing.tracer import Tracer, trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAX_NAMES = os.path.join(ROOT, "tests", "data", "jax_numpy_names.txt")

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4)) + 0.13
"""The traced input: no zeros, no integers, no ties (away from every kink)."""

# --------------------------------------------------------------------------- what is measured

def jax_numpy_names() -> list[str]:
    with open(JAX_NAMES) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def numpy_functions() -> list[str]:
    """Callables (not types) that both numpy and jax.numpy define at the top level."""
    return [n for n in jax_numpy_names() if hasattr(np, n) and callable(getattr(np, n))
            and not isinstance(getattr(np, n), type)]


I = np.array([2, 0, 1, 2])


def _saved_array():
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3.0))
    buffer.seek(0)
    return buffer
POS = lambda x: np.abs(x) + 0.5  # noqa: E731 - inputs of functions defined for positive numbers
UNIT = lambda x: np.tanh(x) * 0.9  # noqa: E731 - inputs in (-1, 1)

CALLS = {
    "all": lambda x: np.all(x > 0, axis=0), "allclose": lambda x: np.allclose(x, x * (1 + 1e-9)),
    "any": lambda x: np.any(x > 1), "amax": lambda x: np.amax(x, axis=1), "amin": lambda x: np.amin(x, 0),
    "angle": lambda x: np.angle(x), "append": lambda x: np.append(x, x[0]),
    "apply_along_axis": lambda x: np.apply_along_axis(np.sum, 0, x),
    "apply_over_axes": lambda x: np.apply_over_axes(np.sum, x, [0]),
    "arange": lambda x: np.arange(5) * x[0, 0], "arccosh": lambda x: np.arccosh(POS(x) + 1),
    "acosh": lambda x: np.acosh(POS(x) + 1), "arccos": lambda x: np.arccos(UNIT(x)),
    "acos": lambda x: np.acos(UNIT(x)), "arcsin": lambda x: np.arcsin(UNIT(x)), "asin": lambda x: np.asin(UNIT(x)),
    "arctanh": lambda x: np.arctanh(UNIT(x)), "atanh": lambda x: np.atanh(UNIT(x)),
    "argpartition": lambda x: np.argpartition(x, 1), "argwhere": lambda x: np.argwhere(x > 0),
    "array": lambda x: np.array([x[0, 0], 1.0]), "array_equal": lambda x: np.array_equal(x, x),
    "array_equiv": lambda x: np.array_equiv(x, x[0]), "array_repr": lambda x: np.array_repr(x),
    "array_split": lambda x: np.array_split(x, 3, axis=1), "array_str": lambda x: np.array_str(x),
    "asarray": lambda x: np.asarray(x, np.float32), "astype": lambda x: np.astype(x, np.float32),
    "average": lambda x: np.average(x, axis=0, weights=[1.0, 2.0, 3.0]), "bartlett": lambda x: np.bartlett(5) * x[0, 0],
    "bincount": lambda x: np.bincount(I, weights=x[0]), "bitwise_count": lambda x: np.bitwise_count((x * 10).astype(int)),
    "blackman": lambda x: np.blackman(5) * x[0, 0], "block": lambda x: np.block([[x, x]]),
    "broadcast_shapes": lambda x: np.broadcast_shapes(x.shape, (1, 4)),
    "broadcast_to": lambda x: np.broadcast_to(x[0], (2, 4)), "can_cast": lambda x: np.can_cast(x.dtype, np.float32),
    "choose": lambda x: np.choose(I[:3] % 2, [x[:, 0], x[:, 1]]), "clip": lambda x: np.clip(x, -0.5, 0.5),
    "compress": lambda x: np.compress([True, False, True], x, axis=0),
    "concat": lambda x: np.concat([x, x]), "concatenate": lambda x: np.concatenate([x, x], axis=1),
    "convolve": lambda x: np.convolve(x[0], x[1]), "correlate": lambda x: np.correlate(x[0], x[1, :2], "full"),
    "cross": lambda x: np.cross(x[:, :3], x[:, 1:]), "cumulative_prod": lambda x: np.cumulative_prod(x, axis=1),
    "cumulative_sum": lambda x: np.cumulative_sum(x, axis=0), "delete": lambda x: np.delete(x, 1, axis=1),
    "diag_indices": lambda x: np.diag_indices(3), "diag_indices_from": lambda x: np.diag_indices_from(x[:, :3]),
    "diagflat": lambda x: np.diagflat(x[0]), "digitize": lambda x: np.digitize(x, [-1.0, 0.0, 1.0]),
    "divmod": lambda x: np.divmod(x, 0.7), "dot": lambda x: np.dot(x, x.T), "dsplit": lambda x: np.dsplit(x[None], 2),
    "dstack": lambda x: np.dstack([x, x]), "einsum": lambda x: np.einsum("ij,kj->ik", x, x),
    "einsum_path": lambda x: np.einsum_path("ij,kj->ik", x, x)[0], "empty": lambda x: np.empty(0) + x[0, 0],
    "empty_like": lambda x: np.empty_like(x).shape, "expand_dims": lambda x: np.expand_dims(x, 1),
    "extract": lambda x: np.extract(np.eye(3, 4) > 0, x), "eye": lambda x: np.eye(3) * x[0, 0],
    "fill_diagonal": lambda x: _written(x, lambda y: np.fill_diagonal(y, x[0, :2])), "flatnonzero": lambda x: np.flatnonzero(x > 0),
    "float_power": lambda x: np.float_power(POS(x), 1.5), "fmod": lambda x: np.fmod(x, 0.7),
    "from_dlpack": lambda x: np.from_dlpack(x), "frombuffer": lambda x: np.frombuffer(b"\0" * 8) + x[0, 0],
    "fromfile": lambda x: np.fromfile(os.devnull) + x[0, 0],
    "fromfunction": lambda x: np.fromfunction(lambda i, j: i + j, (2, 2)) * x[0, 0],
    "fromiter": lambda x: np.fromiter(range(3), float) * x[0, 0], "frompyfunc": lambda x: np.frompyfunc(abs, 1, 1)(x),
    "fromstring": lambda x: np.fromstring("1 2", sep=" ") * x[0, 0], "full": lambda x: np.full((2, 2), x[0, 0]),
    "full_like": lambda x: np.full_like(x, 2.0), "gcd": lambda x: np.gcd((x * 10).astype(int), 6),
    "geomspace": lambda x: np.geomspace(1.0, 100.0, 5) * x[0, 0], "get_printoptions": lambda x: len(np.get_printoptions()),
    "gradient": lambda x: np.gradient(x), "hamming": lambda x: np.hamming(5) * x[0, 0],
    "hanning": lambda x: np.hanning(5) * x[0, 0], "heaviside": lambda x: np.heaviside(x, 0.5),
    "histogram": lambda x: np.histogram(x, bins=4, range=(-2.0, 2.0)),
    "histogram2d": lambda x: np.histogram2d(x[0], x[1], bins=2, range=[[-2, 2], [-2, 2]]),
    "histogram_bin_edges": lambda x: np.histogram_bin_edges(x, bins=4, range=(-2.0, 2.0)),
    "histogramdd": lambda x: np.histogramdd(x.T[:, :2], bins=2, range=[[-2, 2], [-2, 2]]),
    "hsplit": lambda x: np.hsplit(x, 2), "hstack": lambda x: np.hstack([x, x]), "hypot": lambda x: np.hypot(x, 2.0),
    "identity": lambda x: np.identity(3) * x[0, 0], "indices": lambda x: np.indices((2, 3)) * x[0, 0],
    "inner": lambda x: np.inner(x, x), "insert": lambda x: np.insert(x, 1, 5.0, axis=1),
    "interp": lambda x: np.interp(x, [-1.0, 0.0, 2.0], [0.0, 1.0, 3.0]),
    "intersect1d": lambda x: np.intersect1d(x, x), "invert": lambda x: np.invert(x > 0),
    "isclose": lambda x: np.isclose(x, x * (1 + 1e-9)), "isdtype": lambda x: np.isdtype(x.dtype, "real floating"),
    "isin": lambda x: np.isin(x, x[0]), "isscalar": lambda x: np.isscalar(x), "issubdtype": lambda x: np.issubdtype(
        x.dtype, np.floating), "iterable": lambda x: np.iterable(x), "ix_": lambda x: np.ix_([0, 1], [2, 3]),
    "kaiser": lambda x: np.kaiser(5, 2.0) * x[0, 0], "kron": lambda x: np.kron(x[:2, :2], x[1:, :2]),
    "lcm": lambda x: np.lcm((x * 10).astype(int), 6), "ldexp": lambda x: np.ldexp(x, 3),
    "left_shift": lambda x: np.left_shift((x * 10).astype(int), 2), "lexsort": lambda x: np.lexsort((x[0], x[1])),
    "linspace": lambda x: np.linspace(x[0, 0], 1.0, 5), "load": lambda x: np.load(_saved_array()) * x[0, 0],
    "logspace": lambda x: np.logspace(0.0, 2.0, 5) * x[0, 0], "mask_indices": lambda x: np.mask_indices(3, np.triu),
    "matmul": lambda x: np.matmul(x, x.T), "matvec": lambda x: np.matvec(x, x[0]),
    "meshgrid": lambda x: np.meshgrid(x[0], x[1, :2]), "moveaxis": lambda x: np.moveaxis(x, 0, 1),
    "nextafter": lambda x: np.nextafter(x, 0.0), "nonzero": lambda x: np.nonzero(x > 0),
    "ones": lambda x: np.ones(3) * x[0, 0], "outer": lambda x: np.outer(x[0], x[1]),
    "packbits": lambda x: np.packbits(x > 0), "pad": lambda x: np.pad(x, 1), "partition": lambda x: np.partition(x, 1),
    "percentile": lambda x: np.percentile(x, 30), "nanpercentile": lambda x: np.nanpercentile(x, 30),
    "permute_dims": lambda x: np.permute_dims(x, (1, 0)), "piecewise": lambda x: np.piecewise(
        x, [x < 0], [lambda t: t * 2, lambda t: t]), "place": lambda x: np.place(x, x > 0, [1.0]),
    "putmask": lambda x: _written(x, lambda y: np.putmask(y, x > 0, x[0, :3] * 2)),
    "poly": lambda x: np.poly(x[0]), "polyadd": lambda x: np.polyadd(x[0], x[1]), "polyder": lambda x: np.polyder(x[0]),
    "polydiv": lambda x: np.polydiv(x[0], x[1, :2]), "polyfit": lambda x: np.polyfit(x[0], x[1], 1),
    "polyint": lambda x: np.polyint(x[0]), "polymul": lambda x: np.polymul(x[0], x[1]),
    "polysub": lambda x: np.polysub(x[0], x[1]), "polyval": lambda x: np.polyval(x[0], x[1]),
    "pow": lambda x: np.pow(POS(x), 1.5), "power": lambda x: np.power(POS(x), 1.5),
    "printoptions": lambda x: np.printoptions(precision=3).__class__.__name__,
    "promote_types": lambda x: np.promote_types(x.dtype, np.float32), "put": lambda x: _written(x, lambda y: np.put(y, [0, 5, 0, -1], x[1, :3] * 2)),
    "put_along_axis": lambda x: _written(x, lambda y: np.put_along_axis(y, np.argsort(x, axis=1)[:, :2], x[:, :1] * 3,
                                                                         axis=1)),
    "quantile": lambda x: np.quantile(x, 0.3), "nanquantile": lambda x: np.nanquantile(x, 0.3),
    "ravel_multi_index": lambda x: np.ravel_multi_index(([0, 1], [2, 3]), (3, 4)),
    "repeat": lambda x: np.repeat(x, 2, axis=0), "reshape": lambda x: np.reshape(x, (4, 3)),
    "resize": lambda x: np.resize(x, (2, 3)), "result_type": lambda x: np.result_type(x, np.float32),
    "right_shift": lambda x: np.right_shift((x * 10).astype(int), 1), "roll": lambda x: np.roll(x, 1),
    "rollaxis": lambda x: np.rollaxis(x, 1), "roots": lambda x: np.roots(x[0]), "rot90": lambda x: np.rot90(x),
    "save": lambda x: np.save(os.devnull, x), "savez": lambda x: np.savez(os.devnull, x),
    "searchsorted": lambda x: np.searchsorted([-1.0, 0.0, 1.0], x),
    "select": lambda x: np.select([x < 0, x > 1], [x, x * 2], 0.5),
    "set_printoptions": lambda x: np.set_printoptions(), "setdiff1d": lambda x: np.setdiff1d(x, x[0]),
    "setxor1d": lambda x: np.setxor1d(x, x[0]), "sort_complex": lambda x: np.sort_complex(x[0]),
    "split": lambda x: np.split(x, 2, axis=1), "stack": lambda x: np.stack([x, x], 1),
    "swapaxes": lambda x: np.swapaxes(x, 0, 1), "take": lambda x: np.take(x, [0, 2], axis=1),
    "take_along_axis": lambda x: np.take_along_axis(x, np.zeros((3, 1), int), axis=1),
    "tensordot": lambda x: np.tensordot(x, x, ([1], [1])), "tile": lambda x: np.tile(x, 2),
    "trapezoid": lambda x: np.trapezoid(x, axis=1), "tri": lambda x: np.tri(3) * x[0, 0],
    "tril_indices": lambda x: np.tril_indices(3), "tril_indices_from": lambda x: np.tril_indices_from(x),
    "trim_zeros": lambda x: np.trim_zeros(x[0]), "triu_indices": lambda x: np.triu_indices(3),
    "triu_indices_from": lambda x: np.triu_indices_from(x), "union1d": lambda x: np.union1d(x[0], x[1]),
    "unique": lambda x: np.unique(x), "unique_all": lambda x: np.unique_all(x), "unique_counts": lambda x:
        np.unique_counts(x), "unique_inverse": lambda x: np.unique_inverse(x), "unique_values": lambda x:
        np.unique_values(x), "unpackbits": lambda x: np.unpackbits((x > 0).astype(np.uint8)),
    "unravel_index": lambda x: np.unravel_index([3, 7], (3, 4)), "unstack": lambda x: np.unstack(x),
    "unwrap": lambda x: np.unwrap(x), "vander": lambda x: np.vander(x[0]), "vdot": lambda x: np.vdot(x, x),
    "vecdot": lambda x: np.vecdot(x, x), "vecmat": lambda x: np.vecmat(x[:, 0], x), "vsplit": lambda x: np.vsplit(x, 3),
    "vstack": lambda x: np.vstack([x, x]), "where": lambda x: np.where(x > 0, x, 0.0),
    "zeros": lambda x: np.zeros(3) + x[0, 0], "ones_like": lambda x: np.ones_like(x),
    "zeros_like": lambda x: np.zeros_like(x), "log": lambda x: np.log(POS(x)), "log10": lambda x: np.log10(POS(x)),
    "log1p": lambda x: np.log1p(POS(x)), "log2": lambda x: np.log2(POS(x)), "sqrt": lambda x: np.sqrt(POS(x)),
    "reciprocal": lambda x: np.reciprocal(x), "diagonal": lambda x: np.diagonal(x, 1), "trace": lambda x: np.trace(x),
    "median": lambda x: np.median(x, axis=0), "nanmedian": lambda x: np.nanmedian(x, axis=0),
    "sort": lambda x: np.sort(x, axis=1), "argsort": lambda x: np.argsort(x, axis=1), "copysign": lambda x: np.copysign(
        x, -1.0), "isneginf": lambda x: np.isneginf(x), "isposinf": lambda x: np.isposinf(x),
    "bitwise_and": lambda x: np.bitwise_and(x > 0, x > 1), "bitwise_or": lambda x: np.bitwise_or(x > 0, x > 1),
    "bitwise_xor": lambda x: np.bitwise_xor(x > 0, x > 1), "bitwise_not": lambda x: np.bitwise_not(x > 0),
    "bitwise_invert": lambda x: np.bitwise_invert(x > 0), "logical_not": lambda x: np.logical_not(x > 0),
    "bitwise_left_shift": lambda x: np.bitwise_left_shift((x * 10).astype(int), 1),
    "bitwise_right_shift": lambda x: np.bitwise_right_shift((x * 10).astype(int), 1),
    "shape": lambda x: np.shape(x), "ndim": lambda x: np.ndim(x), "size": lambda x: np.size(x),
    "iscomplexobj": lambda x: np.iscomplexobj(x), "isrealobj": lambda x: np.isrealobj(x),
}
"""How each function is called (else: f(x), then f(x, x), then f(x, 2), then f([x, x]))."""

TRANSCENDENTAL = {"exp", "expm1", "exp2", "log", "log10", "log1p", "log2", "sin", "cos", "tan", "sinh", "cosh", "tanh",
                  "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "asin", "acos", "atan", "asinh",
                  "acosh", "atanh", "arctan2", "atan2", "hypot", "cbrt", "power", "pow", "float_power", "logaddexp",
                  "logaddexp2", "sinc", "i0", "kaiser", "interp", "gradient", "std", "nanstd", "var", "nanvar",
                  "corrcoef", "cov", "polyfit", "roots", "poly", "geomspace", "logspace", "average", "mean",
                  "nanmean", "unwrap", "trapezoid", "percentile", "quantile", "nanpercentile", "nanquantile",
                  "median", "nanmedian"}

# --------------------------------------------------------------------------- methods, operators, indexing, SciPy

IN_MEMORY_ONLY = {"ctypes", "data", "dump", "dumps", "tofile", "tobytes", "setfield", "getfield", "flags", "strides",
                  "base", "byteswap", "setflags"}
"""ndarray members about its memory, not its values: not counted."""

METHOD_CALLS = {
    "T": lambda x: x.T, "mT": lambda x: x.mT, "all": lambda x: (x > 0).all(), "any": lambda x: (x > 0).any(0),
    "argmax": lambda x: x.argmax(1), "argmin": lambda x: x.argmin(), "argpartition": lambda x: x.argpartition(1),
    "argsort": lambda x: x.argsort(), "astype": lambda x: x.astype(np.float32), "choose": lambda x:
        (x[0] > 0).astype(int).choose([x[1], x[2]]), "clip": lambda x: x.clip(-0.5, 0.5),
    "compress": lambda x: x.compress([True, False], axis=0), "conj": lambda x: x.conj(),
    "conjugate": lambda x: x.conjugate(), "copy": lambda x: x.copy(), "cumprod": lambda x: x.cumprod(1),
    "cumsum": lambda x: x.cumsum(0), "device": lambda x: x.device, "diagonal": lambda x: x.diagonal(),
    "dot": lambda x: x.dot(x.T), "dtype": lambda x: x.dtype, "fill": lambda x: _filled(x),
    "flat": lambda x: x.flat[3], "flatten": lambda x: x.flatten(), "imag": lambda x: x.imag,
    "item": lambda x: x.item(0), "itemsize": lambda x: x.itemsize, "max": lambda x: x.max(0),
    "mean": lambda x: x.mean(1), "min": lambda x: x.min(), "nbytes": lambda x: x.nbytes, "ndim": lambda x: x.ndim,
    "nonzero": lambda x: x.nonzero(), "partition": lambda x: _partitioned(x), "prod": lambda x: x.prod(0),
    "put": lambda x: _written(x, lambda y: y.put([0, 5, 0], x[1, :2] * 2)), "ravel": lambda x: x.ravel(), "real": lambda x: x.real,
    "repeat": lambda x: x.repeat(2, 0), "reshape": lambda x: x.reshape(4, 3), "resize": lambda x: _resized(x),
    "round": lambda x: x.round(1), "searchsorted": lambda x: x[0].searchsorted(0.0), "shape": lambda x: x.shape,
    "size": lambda x: x.size, "sort": lambda x: _sorted(x), "squeeze": lambda x: x[None].squeeze(0),
    "std": lambda x: x.std(0), "sum": lambda x: x.sum(1), "swapaxes": lambda x: x.swapaxes(0, 1),
    "take": lambda x: x.take([1, 0], 1), "to_device": lambda x: x.to_device("cpu"), "tolist": lambda x: x.tolist(),
    "trace": lambda x: x.trace(), "transpose": lambda x: x.transpose(1, 0), "var": lambda x: x.var(),
    "view": lambda x: x.view(),
}


def _written(x, write):
    """A copy of `x` after `write(copy)`, a NumPy function or method that writes in place."""
    y = x.copy()
    write(y)
    return y


def _resized(x):
    y = x[0] * 1       # 1-d (memory order is C order) and with no other reference: resized in place
    y.resize((2, 3))
    return y


def _filled(x):
    y = x.copy()
    y.fill(2.0)
    return y


def _partitioned(x):
    y = x.copy()
    y.partition(1)
    return y


def _sorted(x):
    y = x.copy()
    y.sort()
    return y


OPERATOR_CALLS = {}
for _symbol, _fn in [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b),
                     ("/", lambda a, b: a / b), ("//", lambda a, b: a // b), ("%", lambda a, b: a % b),
                     ("**", lambda a, b: abs(a) ** b), ("@", lambda a, b: a @ b.T if np.ndim(b) else a @ a.T),
                     ("&", lambda a, b: (a > 0) & (b > 0)), ("|", lambda a, b: (a > 0) | (b > 0)),
                     ("^", lambda a, b: (a > 0) ^ (b > 0)), ("<<", lambda a, b: (a * 8).astype(int) << 2),
                     (">>", lambda a, b: (a * 8).astype(int) >> 1)]:
    OPERATOR_CALLS[f"x {_symbol} y"] = lambda x, f=_fn: f(x, x[0] * 0.5 + 1.5)
    if _symbol == "@":
        OPERATOR_CALLS["c @ x (reflected)"] = lambda x: np.ones((2, 3)) @ x
    elif _symbol in ("<<", ">>"):
        OPERATOR_CALLS[f"c {_symbol} x (reflected)"] = (lambda x: 3 << (abs(x) * 3).astype(int)) if _symbol == "<<" \
            else (lambda x: 300 >> (abs(x) * 3).astype(int))
    else:
        OPERATOR_CALLS[f"c {_symbol} x (reflected)"] = lambda x, f=_fn: f(1.5, x)
for _symbol, _fn in [("+=", "__iadd__"), ("-=", "__isub__"), ("*=", "__imul__"), ("/=", "__itruediv__"),
                     ("//=", "__ifloordiv__"), ("%=", "__imod__"), ("**=", "__ipow__"), ("@=", "__imatmul__"),
                     ("&=", "__iand__"), ("|=", "__ior__"), ("^=", "__ixor__"), ("<<=", "__ilshift__"),
                     (">>=", "__irshift__")]:
    def _inplace(x, method=_fn):
        y = (x * 8).astype(int) if method in ("__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__") \
            else abs(x.copy()) + 1.0
        other = y[:, :1] * 0 + 2 if method != "__imatmul__" else np.eye(4, dtype=y.dtype)
        return getattr(y, method)(other)
    OPERATOR_CALLS[f"x {_symbol} y"] = _inplace
for _symbol, _fn in [("<", lambda a: a < 0.2), ("<=", lambda a: a <= 0.2), (">", lambda a: a > 0.2),
                     (">=", lambda a: a >= 0.2), ("==", lambda a: a == a[0]), ("!=", lambda a: a != a[0]),
                     ("-x", lambda a: -a), ("+x", lambda a: +a), ("~x", lambda a: ~(a > 0)), ("abs(x)", abs),
                     ("divmod(x, y)", lambda a: divmod(a, 0.7))]:
    OPERATOR_CALLS[_symbol if "x" in _symbol else f"x {_symbol} c"] = lambda x, f=_fn: f(x)

INDEXING_CALLS = {
    "x[int]": lambda x: x[1], "x[-int]": lambda x: x[-1], "x[slice]": lambda x: x[1:3], "x[::step]": lambda x: x[::2],
    "x[::-1]": lambda x: x[::-1], "x[None]": lambda x: x[None], "x[...]": lambda x: x[...],
    "x[..., int]": lambda x: x[..., 0], "x[int, int]": lambda x: x[0, 1], "x[:, int]": lambda x: x[:, 1],
    "x[list]": lambda x: x[[0, 2]], "x[int array]": lambda x: x[np.array([0, 2])],
    "x[traced int]": lambda x: x[(x[0, 0] > 0).astype(int)], "x[constant mask]": lambda x: x[np.eye(3, 4) > 0],
    "x[arange, labels]": lambda x: x[np.arange(3), I[:3]], "x[list, list]": lambda x: x[[0, 1], [1, 2]],
    "x[:, list]": lambda x: x[:, [0, 2]], "x[traced index array]": lambda x: x[(x[0] > 0).astype(int)],
    "x[i] = v": lambda x: _assigned(x, 1, x[0] * 2), "x[1:] += 1": lambda x: _added(x, slice(1, None), 1.0),
    "x[idx] += v (buffered)": lambda x: _added(x, [0, 0, 2], x[1]),
    "x[mask] = 0": lambda x: _assigned(x, x > 0.5, 0.0), "np.add.at": lambda x: _add_at(x),
    "view write": lambda x: _view_write(x), "x[x > 0] (data-dependent)": lambda x: x[x > 0],
}


def _assigned(x, index, value):
    y = x.copy()
    y[index] = value
    return y


def _added(x, index, value):
    y = x.copy()
    y[index] += value
    return y


def _add_at(x):
    y = x.copy()
    np.add.at(y, [0, 0, 2], x[1])
    return y


def _view_write(x):
    y = x.copy()
    v = y[0:2]
    v[0] = 5.0
    return y


SCIPY_SPECIAL = ["expit", "logit", "erf", "erfc", "gammaln", "digamma", "xlogy", "xlog1py", "entr", "ndtr", "log_ndtr",
                 "logsumexp", "softmax", "log_softmax"]


def _scipy_call(name):
    import scipy.special as sc
    fn = getattr(sc, name)
    if name in ("logit", "entr"):
        return lambda x: fn(np.abs(np.tanh(x)) * 0.9 + 0.05)
    if name in ("xlogy", "xlog1py"):
        return lambda x: fn(x, np.abs(x) + 0.5)
    if name in ("gammaln", "digamma"):
        return lambda x: fn(np.abs(x) + 0.5)
    return lambda x: fn(x)


# --------------------------------------------------------------------------- running one entry

@dataclass
class Outcome:
    name: str
    kind: str                      # ok / mismatch / refused / crashed / untested
    detail: str = ""
    gradient: str = "n/a"          # ok / mismatch / n/a


@dataclass
class Report:
    groups: dict = field(default_factory=dict)     # group -> list[Outcome]

    def counts(self, group: str) -> collections.Counter:
        return collections.Counter(o.kind for o in self.groups[group])


def _default_patterns(fn):
    return [lambda x: fn(x), lambda x: fn(x, x), lambda x: fn(x, 2), lambda x: fn([x, x])]


def _numpy_call(patterns):
    """The first pattern NumPy accepts on X, and its result."""
    for pattern in patterns:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                return pattern, pattern(X.copy())
            except Exception:      # noqa: BLE001 - the next pattern
                continue
    return None, None


def _run_traced(pattern, compile_: bool):
    """The pattern on a traced X: its traced results evaluated (or compiled), the rest as is."""
    holder = {}

    def traced_fn(x):
        out = pattern(x)
        leaves, tree = tree_flatten(out)
        holder["tree"] = tree
        holder["leaves"] = leaves
        return [leaf for leaf in leaves if isinstance(leaf, Tracer)]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if compile_:
            values = jitgrad.jit(traced_fn)(X.copy())
            traced = None
        else:
            traced = trace(traced_fn, (X.copy(),))
            values = evaluate(traced.function, [X.copy()])
    it = iter(values)
    leaves = [next(it) if isinstance(leaf, Tracer) else leaf for leaf in holder["leaves"]]
    return tree_unflatten(holder["tree"], leaves), traced


def _same(got, expected, inexact: bool) -> str:
    got_leaves, got_tree = tree_flatten(got)
    exp_leaves, exp_tree = tree_flatten(expected)
    if len(got_leaves) != len(exp_leaves):
        return f"{len(got_leaves)} results, NumPy {len(exp_leaves)}"
    for g, e in zip(got_leaves, exp_leaves, strict=True):
        if not isinstance(e, (np.ndarray, np.generic)) and not isinstance(g, (np.ndarray, np.generic)):
            if g != e:
                return f"{g!r} != {e!r}"
            continue
        if isinstance(e, (bool, int, float)) and not isinstance(e, np.generic):
            e = np.asarray(e)        # a Python scalar from NumPy: the traced result is a 0-d array
        g, e = np.asarray(g), np.asarray(e)
        if g.dtype != e.dtype or g.shape != e.shape:
            return f"{g.dtype}{g.shape} != NumPy's {e.dtype}{e.shape}"
        if e.dtype.kind in "fc":
            tol = 8 * np.finfo(e.dtype).eps if inexact else 1e-12
            if not np.allclose(g, e, rtol=tol, atol=tol, equal_nan=True):
                return f"values differ by {np.nanmax(np.abs(g - e)):.3g}"
        elif not np.array_equal(g, e):
            return "values differ"
    return ""


def _gradient(traced) -> str:
    """Forward mode against central differences along a random direction, reverse mode
    against forward mode (<t, vjp(c)> = <jvp(t), c>), on the float outputs."""
    fn = traced.function
    if not fn.outputs or not fn.args[0].type.dtype.is_float:
        return "n/a"
    floats = [k for k, t in enumerate(fn.output_types) if t.dtype == DType.f64 and t.size]
    if not floats:
        return "n/a"
    rng = np.random.default_rng(1)
    t = rng.standard_normal(X.shape)
    eps = 1e-6
    with np.errstate(all="ignore"):
        plus = evaluate(fn, [X + eps * t])
        minus = evaluate(fn, [X - eps * t])
        jfn = jvp_function(fn, [0])
        jvp_out = evaluate(jfn, [X, t])
        n = len(fn.outputs)
        tangents = jvp_out[n:]
        for k in floats:
            numeric = (np.asarray(plus[k], np.float64) - np.asarray(minus[k], np.float64)) / (2 * eps)
            if not np.allclose(tangents[k], numeric, rtol=1e-5, atol=1e-6):
                return "mismatch"
        vfn = vjp_function(fn, [0])
        cts = [rng.standard_normal(tp.shape).astype(tp.dtype.numpy) if k in floats else np.zeros(tp.shape,
               tp.dtype.numpy) for k, tp in enumerate(fn.output_types)]
        back = evaluate(vfn, [X, *cts])[-1]
        forward = sum(float(np.sum(np.asarray(tangents[k]) * cts[k])) for k in floats)
        if not np.isclose(float(np.sum(back * t)), forward, rtol=1e-8, atol=1e-10):
            return "mismatch"
    return "ok"


def run_entry(name: str, patterns, compile_: bool = False, inexact: bool = False, gradients: bool = True) -> Outcome:
    pattern, expected = _numpy_call(patterns)
    if pattern is None:
        return Outcome(name, "untested", "NumPy refuses every generated call")
    try:
        got, traced = _run_traced(pattern, compile_)
    except JitgradError as err:
        return Outcome(name, "refused", str(err).splitlines()[0])
    except Exception as err:         # noqa: BLE001 - recorded
        return Outcome(name, "crashed", f"{type(err).__name__}: {err}".splitlines()[0])
    why = _same(got, expected, inexact)
    if why:
        return Outcome(name, "mismatch", why)
    gradient = "n/a"
    if gradients and traced is not None:
        try:
            gradient = _gradient(traced)
        except JitgradError as err:
            gradient = f"refused: {str(err).splitlines()[0]}"
        except Exception as err:     # noqa: BLE001 - recorded
            gradient = f"crashed: {type(err).__name__}: {err}"
    return Outcome(name, "ok", "", gradient)


def run(compile_: bool = False, gradients: bool = True) -> Report:
    report = Report()
    report.groups["functions"] = [
        run_entry(name, [CALLS[name]] if name in CALLS else _default_patterns(getattr(np, name)), compile_,
                  name in TRANSCENDENTAL, gradients) for name in numpy_functions()]
    methods = [n for n in dir(np.ndarray) if not n.startswith("_") and n not in IN_MEMORY_ONLY]
    report.groups["methods"] = [run_entry(f".{name}", [METHOD_CALLS[name]], compile_, name in ("std", "var", "mean"),
                                          gradients) for name in methods]
    report.groups["operators"] = [run_entry(name, [fn], compile_, "**" in name, gradients)
                                  for name, fn in OPERATOR_CALLS.items()]
    report.groups["indexing"] = [run_entry(name, [fn], compile_, False, gradients) for name, fn in INDEXING_CALLS.items()]
    report.groups["scipy.special"] = [run_entry(f"scipy.special.{name}", [_scipy_call(name)], compile_, True, gradients)
                                      for name in SCIPY_SPECIAL]
    return report


# --------------------------------------------------------------------------- output

def markdown(report: Report) -> str:
    lines = ["| group | entries | ok (NumPy's values) | gradient checked ok | refused | mismatch | crashed | untested |",
             "|---|---|---|---|---|---|---|---|"]
    for group, outcomes in report.groups.items():
        c = report.counts(group)
        grads = sum(o.gradient == "ok" for o in outcomes)
        lines.append(f"| {group} | {len(outcomes)} | {c['ok']} | {grads} | {c['refused']} | {c['mismatch']} | "
                     f"{c['crashed']} | {c['untested']} |")
    lines += ["", "Refused (the error's first line):", ""]
    for group, outcomes in report.groups.items():
        for o in outcomes:
            if o.kind != "ok":
                detail = re.sub(r"^\S+:\d+: ", "", o.detail)          # the call's location
                lines.append(f"- `{o.name}`: {detail}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="run compiled code (jitgrad.jit), not the interpreter")
    parser.add_argument("--no-gradients", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the table for docs/numpy-coverage.md")
    parser.add_argument("--write-jax-names", action="store_true", help="regenerate the jax.numpy name list")
    args = parser.parse_args(argv)
    if args.write_jax_names:
        import jax
        import jax.numpy as jnp
        names = sorted(n for n in dir(jnp) if not n.startswith("_"))
        with open(JAX_NAMES, "w") as f:
            f.write(f"# dir(jax.numpy), public names, jax {jax.__version__}\n# generated with: pip install --target "
                    "/tmp/jaxpkgs jax jaxlib && PYTHONPATH=/tmp/jaxpkgs python3 benchmarks/numpy_coverage.py "
                    "--write-jax-names\n" + "\n".join(names) + "\n")
        return 0
    report = run(args.compile, not args.no_gradients)
    if args.markdown:
        print(markdown(report))
        return 0
    for group, outcomes in report.groups.items():
        print(f"{group}: {dict(report.counts(group))}, gradients ok: {sum(o.gradient == 'ok' for o in outcomes)}")
        for o in outcomes:
            if o.kind != "ok" or o.gradient not in ("ok", "n/a"):
                print(f"   {o.kind:9} {o.name}: {o.detail} {'' if o.gradient in ('ok', 'n/a') else o.gradient}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
