"""A differential fuzzer: random NumPy programs run by NumPy and by jitgrad, compared.

    python -m tests.fuzz --minutes 5 [--seed S] [--verbose]

Each program is straight-line Python over NumPy, generated from the tables below (one
line per operation), that deliberately combines values with views of themselves
(transposes, reverses, stepped slices, broadcasts, reshapes), mixes every dtype jitgrad
declares today (`jitgrad.ir.DType`), Python scalars (as literals and as arguments),
0-d and zero-size arrays and arrays above the parallel-loop threshold. Every program is
run by

  - NumPy, on the original Python source (the oracle);
  - jitgrad.jit with loop fusion, called twice (the second call takes the native call
    path) and once more with non-contiguous views as arguments;
  - jitgrad.jit without fusion (`config.fusion = False`);
  - the reference interpreter on the traced IR and on the optimized IR;
  - the batching pass (vmap) on two slices, the arguments and the arguments reversed;

and, for float64 programs, the gradients: ⟨t, vjp(c)⟩ = ⟨jvp(t), c⟩, and jvp against
central finite differences of the NumPy source.

What counts as equal (docs/fuzzing.md has the table): dtypes and shapes exactly; values
bit for bit (NaN equal to NaN) when every operation is one whose result NumPy fixes
exactly (IEEE + - * / sqrt, comparisons, selects, integer arithmetic, data movement);
otherwise within a tolerance found by running the NumPy program again with each inexact
operation's result perturbed by its documented error bound (ulps for library functions,
a multiple of eps·log2(n)·Σ|x| for sums and products): how far the outputs move is how
far an implementation within those bounds may legitimately differ. Elements that flip
under the perturbation (a comparison of nearly equal values) or that NumPy leaves
undefined (a NaN cast to an integer) are not compared.

An operation jitgrad does not list in its tables (`numpy_api.UFUNCS`/`FUNCTIONS`, the
Tracer's operators and methods), or one listed under `may_raise`, may instead raise a
`JitgradError`; any other exception, a wrong dtype or value, or a crash is a failure.
Failures print the program as Python source, shrunk to the statements that matter.
`KNOWN_FAILURES` lists failures found and not yet fixed, each with its reason: they are
reported, not counted against the run.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

import jitgrad
from jitgrad.config import config
from jitgrad.errors import JitgradError
from jitgrad.interpreter import evaluate
from jitgrad.ir import DType
from jitgrad.tracing import numpy_api as api
from jitgrad.tracing.tracer import Tracer, trace

try:
    from jitgrad.backends.cpu.codegen import PARALLEL_MIN_WORK
except ImportError:                                  # a backend without the constant
    PARALLEL_MIN_WORK = 1 << 20
try:
    from jitgrad.primitives.transcendental import ULP_BOUNDS
except ImportError:
    ULP_BOUNDS = {}

# --------------------------------------------------------------------------- what jitgrad supports today


def supported_dtypes() -> list[np.dtype]:
    """Every dtype jitgrad declares, as NumPy dtypes (queried, so new ones are fuzzed)."""
    out = []
    for d in DType:
        try:
            dt = np.dtype(d.numpy)
        except TypeError:
            continue
        if dt not in out:
            out.append(dt)
    return out


def in_tables(fn) -> Callable[[], bool]:
    return lambda: fn in api.UFUNCS or fn in api.FUNCTIONS


def has_method(name: str) -> Callable[[], bool]:
    return lambda: name in vars(Tracer) and "_unsupported" not in getattr(vars(Tracer)[name], "__qualname__", "")


def always() -> bool:
    return True


def is_float(dtype) -> bool:
    """NumPy floats and the ml_dtypes ones (bfloat16 has kind 'V')."""
    dt = np.dtype(dtype)
    return dt.kind == "f" or (dt.kind == "V" and "float" in dt.name)


def kind(dtype) -> str:
    return "f" if is_float(dtype) else np.dtype(dtype).kind


def is_complex(dtype) -> bool:
    return np.dtype(dtype).kind == "c"


def finfo(dtype):
    """Float limits of a float dtype, or of a complex dtype's components."""
    if np.dtype(dtype).kind in "fc":
        return np.finfo(dtype)
    import ml_dtypes
    return ml_dtypes.finfo(dtype)


def ulp(x64: np.ndarray, dtype) -> np.ndarray:
    """The spacing of `dtype` floats at the float64 values `x64` (subnormals included)."""
    info = finfo(dtype)
    with np.errstate(all="ignore"):
        magnitude = np.maximum(np.abs(np.nan_to_num(np.asarray(x64, np.float64))), float(info.smallest_normal))
        exponent = np.floor(np.log2(magnitude)).astype(np.int64)
    return np.ldexp(1.0, exponent - int(info.nmant))


# --------------------------------------------------------------------------- accuracy

EXACT = "exact"
SUM = "sum"
DEFAULT_ULPS = {"logaddexp": 8, "tan": 8, "pow": 4, "arctan": 4, "arcsin": 4, "arccos": 4, "arcsinh": 4,
                "arctanh": 4, "arccosh": 4, "arctan2": 4, "logistic": 4}
NUMPY_ULPS = 4          # NumPy's own error, added to jitgrad's: both are compared to each other
SUM_FACTOR = 4          # error bound of a sum: SUM_FACTOR * eps * (log2(n) + 1) * sum |x|, per side
BLAS_PARTIAL_SUMS = 16  # NumPy's float contractions call OpenBLAS, whose kernels keep at least this many
                        # partial sums, each added sequentially: up to eps * k / 16 * sum |x| more


def _contracted_length(stmt, operands: list) -> int:
    """How many products each element of a contraction's result adds up."""
    first = np.asarray(operands[0])
    if stmt.op.name == "vdot":
        return first.size
    if stmt.op.name == "einsum_ellipsis":
        return first.shape[0] if first.ndim else 1
    return first.shape[-1] if first.ndim else 1


BLAS_CONTRACTIONS = ("matmul", "dot", "inner", "vdot", "tensordot", "einsum", "einsum_ellipsis")

MAX_CONTRACTION_WORK = 5e7
"""Products a contraction statement may take (result size x contracted length). The NumPy
reference evaluates each statement some twenty times (its perturbed runs), and the
interpreter and the vmap check more: a batched product of a (1026, 1, 1026) and a
(1026, 1026) operand (10^9 products, a second in NumPy) kept one program past the worker's
time limit. Estimated from shapes, not timed, so a seed's programs do not depend on the
machine."""


def _contraction_work(stmt, values, result) -> float:
    if not (stmt.op.name in BLAS_CONTRACTIONS or stmt.op.name.startswith("matmul")):
        return 0.0
    return float(np.size(result)) * _contracted_length(stmt, _operand_values(stmt, values))


def ulp_bound(name: str, dtype: np.dtype) -> float:
    """Jitgrad's documented error of `name` in ulps (ULP_BOUNDS), plus NumPy's."""
    key = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}.get(np.dtype(dtype), "f32")
    bound = ULP_BOUNDS.get(name, {}).get(key, DEFAULT_ULPS.get(name, 4))
    if np.dtype(dtype).itemsize <= 2:       # half precision: computed in f32, rounded once more
        bound = max(bound, 1)
    return bound + NUMPY_ULPS


# --------------------------------------------------------------------------- the operation table

Params = Callable[[np.random.Generator, list], "dict | None"]


@dataclass(frozen=True)
class Op:
    """One operation the fuzzer can emit: Python source with operands {0}, {1}, ... and
    parameters {name} filled by `params`.

    supported: does jitgrad claim it today (its NumPy function in the tables, or the
      Tracer method present)? If not, raising a JitgradError is an acceptable outcome.
    accuracy: EXACT, SUM (a reduction/product: error relative to Σ|x|), or the name of
      a function in the ulp table; a callable(params) chooses among these.
    magnitude: for SUM, the source computing Σ|x| per output element ({0} etc. are
      the absolute values of the operands); default: the op itself on |operands|.
    smooth: finite differences are meaningful (no kinks, no integer results).
    may_raise: (operands, params) -> True where a clear JitgradError is expected.
    undefined: (operands, params, result) -> mask of elements NumPy leaves undefined.
    jumps: the result is discontinuous in a float operand (comparisons, floor, %, casts
      to integers, argmax): where an inexact operand is near a jump, either side is right.
    picks: "max" or "min" for argmax/argmin (operand 0, along params["axis"], flattened
      when None): where another candidate is within the two candidates' error bounds of
      the winner, either index is right (a uniform move of the operand keeps every tie).
    max_operand_size: the op is not proposed on larger operands (O(n^3) factorizations of
      a million-element input would outlast the worker's time limit, in NumPy alone).
    rounds_to: a float dtype narrower than the result's that the expression rounds its
      operands to (`x.astype('bfloat16') @ y.astype('bfloat16')` is float32): forward and
      reverse mode round tangents and cotangents there too, at different points of the
      chain rule, so the two agree only to that dtype's precision.
    period: the result repeats (or oscillates) with this period in its float operands
      (sin, cos, tan): where an operand's error spread reaches a sixteenth of it, the
      result can turn around within the moves, so the perturbed runs no longer bound it
      (`_periodic_masks`): such elements are left undetermined.
    may_hang: (operands) -> True where NumPy or SciPy itself would not finish (the
      statement is not proposed).
    divisor_period: the result is periodic in its first operand with the period |second
      operand| (remainder, fmod): the same masks, with the period per element, and a
      move of the divisor counted as a move of the first operand |a / b| times as large.
    """

    name: str
    template: str
    arity: int = 1
    supported: Callable[[], bool] = always
    accuracy: Any = EXACT
    params: Params | None = None
    magnitude: str | None = None
    smooth: bool = True
    kinds: str = "fiub"
    weight: float = 1.0
    may_raise: Callable | None = None
    undefined: Callable | None = None
    jumps: bool = False
    max_operand_size: int | None = None
    picks: str | None = None
    rounds_to: str | None = None
    period: float | None = None
    divisor_period: bool = False
    may_hang: Callable | None = None

    def __repr__(self) -> str:
        return f"Op({self.name!r})"

    def accuracy_of(self, params: dict):
        return self.accuracy(params) if callable(self.accuracy) else self.accuracy


def _axis(rng, xs, keepdims=True, allow_none=True):
    ndim = np.ndim(xs[0])
    choices = ([None] if allow_none else []) + list(range(-ndim, ndim))
    if not choices:
        return None
    axis = choices[rng.integers(len(choices))]
    if ndim >= 2 and rng.random() < 0.15:
        axis = (0, ndim - 1)
    out = {"axis": axis}
    if keepdims:
        out["kd"] = bool(rng.random() < 0.3)
    return out


def _power(rng, xs):
    k = [2, 3, -1, 0.5, -2, 5, 0, 1.5, 2.0, 7][rng.integers(10)]
    return {"k": k}


def _reshape(rng, xs):
    size = np.size(xs[0])
    factors = [d for d in range(1, min(size, 64) + 1) if size % d == 0] or [1]
    a = factors[rng.integers(len(factors))]
    shape = [(size // a if size else 0, a), (size,), (a, -1), (1, size), (-1,), (size // a if size else 0, 1, a)]
    return {"shape": shape[rng.integers(len(shape))]}


def _perm(rng, xs):
    return {"perm": tuple(int(p) for p in rng.permutation(np.ndim(xs[0])))}


def _two_axes(rng, xs):
    ndim = np.ndim(xs[0])
    if ndim == 0:
        return None
    return {"a": int(rng.integers(-ndim, ndim)), "b": int(rng.integers(-ndim, ndim))}


def _index(rng, xs):
    """A basic index: ints, slices with steps (negative too), None and Ellipsis."""
    shape = np.shape(xs[0])
    items = []
    for n in shape:
        r = rng.random()
        if r < 0.15 and n:
            items.append(str(int(rng.integers(-n, n))))
        elif r < 0.75:
            start = [None, 0, 1, -1, n // 2][rng.integers(5)]
            stop = [None, n, -1, n // 2 + 1, 0][rng.integers(5)]
            step = [None, 1, 2, -1, -2, 3][rng.integers(6)]
            items.append(":".join("" if v is None else str(v) for v in (start, stop, step)))
        else:
            items.append(":")
        if rng.random() < 0.1:
            items.append("None")
    if items and rng.random() < 0.2:
        items[rng.integers(len(items))] = "..."
        if items.count("...") > 1:
            return None
    return {"idx": ", ".join(items) if items else "..."}


def _advanced_index(rng, xs):
    """An index with integer lists (repeated and negative entries) mixed with ints, slices
    and None, separated or adjacent, so NumPy's placement of the advanced axes is covered."""
    shape = np.shape(xs[0])
    items, lists = [], 0
    for n in shape:
        r = rng.random()
        if n and (r < 0.45 or not lists and len(items) == len(shape) - 1):
            items.append(str([int(v) for v in rng.integers(-n, n, size=int(rng.integers(1, 4)))]))
            lists += 1
        elif r < 0.6 and n:
            items.append(str(int(rng.integers(-n, n))))
        else:
            items.append(":")
        if rng.random() < 0.1:
            items.append("None")
    return {"idx": ", ".join(items)} if lists else None


def _dtype(rng, xs):
    dts = [d for d in supported_dtypes() if not is_complex(d)]     # complex values: only the complex rows
    dt = dts[rng.integers(len(dts))]
    return {"dtype": _dtype_source(dt)}


def _dtype_source(dt: np.dtype) -> str:
    return f"np.{dt.name}" if hasattr(np, dt.name) else f"np.dtype({dt.name!r})"


def _clip(rng, xs):
    lo = [-1.0, 0.0, -0.5, 0, -2][rng.integers(5)]
    return {"lo": lo, "hi": lo + [0.5, 1.0, 2, 3.0][rng.integers(4)]}


def _fft_undefined(axes):
    """A transform mixes every element of a line: where the line holds a non-finite or huge
    value (sums that overflow), which outputs are inf and which NaN depends on the order of
    the arithmetic (NumPy's pocketfft and jitgrad's kernel differ)."""
    def undefined(xs, params, result):
        x = np.asarray(xs[0], np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(x) < 1e290)
        reduce_axes = tuple(range(x.ndim)) if axes is None else axes
        line = np.any(bad, axis=reduce_axes, keepdims=True)
        return np.broadcast_to(line, np.shape(result)) if np.ndim(result) == x.ndim else None
    return undefined


def _float_to_int_undefined(xs, params, result):
    """NaN, infinities and out-of-range floats have no defined integer conversion."""
    x = np.asarray(xs[0])
    if not is_float(x.dtype) or result.dtype.kind not in "iu":
        return None
    info = np.iinfo(result.dtype)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(x) | (x <= info.min - 1.0) | (x >= info.max + 1.0)


def _int_power_raises(xs, params):
    """integer ** integer array: jitgrad asks for a Python-int exponent."""
    return all(np.asarray(x).dtype.kind in "iub" for x in xs)


def _not_finite(xs, params, result):
    """Elements with an infinite or NaN part: where NumPy's BLAS dot kernels turn an
    infinite part into NaN, jitgrad's four real products keep the signed infinity."""
    r = np.asarray(result)
    return ~(np.isfinite(r.real) & np.isfinite(r.imag))


def _two_long_sequences(xs, params):
    """jitgrad refuses convolve/correlate when both sequences are longer than 128 (one
    multiply per kernel element is unrolled), naming the sliding-window alternative."""
    return min(np.size(x) for x in xs) > 128


def _half_float(xs, params):
    """jitgrad refuses einsum in float16/bfloat16 (NumPy rounds float16 after every
    addition, and refuses bfloat16), asking for float32 operands."""
    return any(np.asarray(x).dtype.itemsize == 2 and is_float(np.asarray(x).dtype) for x in xs)


def _wide_matrix(xs, params):
    """qr's derivative is refused for a wide matrix (m < n: the factors are not unique), a
    GradientError the JVP/VJP checks meet (docs/linalg.md)."""
    shape = np.shape(xs[0])
    return len(shape) >= 2 and shape[-2] < shape[-1]


def _bfloat16_carry(xs, params):
    """A loop body scaling a bfloat16 carry by a Python float makes it float32 (NumPy's
    promotion), and jitgrad refuses a carry whose type changes (ControlFlowError), as JAX does."""
    return any(np.asarray(x).dtype.name == "bfloat16" for x in xs)


def _holds_both_zeros(x: np.ndarray) -> bool:
    if not is_float(x.dtype):
        return False
    zeros = x[x == 0]
    return bool(np.any(np.signbit(zeros)) and not np.all(np.signbit(zeros)))


def _signed_zero_ties(xs, params, result):
    """Which zero NumPy's max/min reduction returns for a slice holding both +0.0 and -0.0
    depends on where they sit relative to its vector loop's blocks (measured: not a
    function of the order alone); docs/numerics.md says jitgrad returns one of them. The
    zero results of such a reduction are not a reference for their sign."""
    x = np.asarray(xs[0])
    if not _holds_both_zeros(x):
        return None
    return np.asarray(result) == 0


def _search_compares_nan_unordered(xs, params):
    """np.searchsorted(sorted xs[1], xs[0]) is refused where NumPy compares without an order
    for NaN (Python objects where bfloat16 has no common dtype with the other operand;
    ml_dtypes' bfloat16 compare function) and its answer can then depend on its search
    path: unless side is 'left' and the values searched for are integers (of at most 32
    bits without a common dtype), which cannot be NaN (docs/semantics-dtypes.md)."""
    needles, haystack = (np.asarray(x).dtype for x in xs)
    try:
        common = np.result_type(needles, haystack)
    except (TypeError, np.exceptions.DTypePromotionError):
        common = None
    bfloat16_search_orders_nan = np.searchsorted(np.array([0, 1], "bfloat16"), np.array([np.nan], "bfloat16"))[0] == 2
    if common is not None and (common.name != "bfloat16" or bfloat16_search_orders_nan):
        return False
    integer_needles = params.get("side") == "left" and needles.kind in "biu"
    return not (integer_needles and (common is not None or needles.itemsize <= 4))


def _bfloat16_selection(xs, params):
    """np.median/quantile/percentile of bfloat16 are refused: NumPy does not look for NaN
    in bfloat16, and where its partition leaves a NaN depends on its selection algorithm."""
    return np.asarray(xs[0]).dtype.name == "bfloat16"


def _nanquantile_dtype_depends_on_data(xs, params):
    """NumPy's nanquantile gives a row of numbers its quantile's dtype and an all-NaN row
    the array's, and np.apply_along_axis stores every row in the first row's dtype: where
    the two differ (float16/bfloat16/float32 with array q) jitgrad refuses."""
    x = np.asarray(xs[0])
    if x.size == 0 or not is_float(x.dtype):
        return False
    return np.asarray(np.nanquantile(np.zeros(2, x.dtype), [0.25, 0.5])).dtype != x.dtype


def _einsum_broadcast_sum(xs, params, result):
    """np.einsum('ij,jk->ik') with j of length 1 in one operand (broadcast): NumPy's inner
    loop then sums the other operand over j before multiplying (its stride-0 kernels), or
    not, depending on the iteration order it picks; with an infinite factor and a zero term
    that is inf against NaN. Non-finite results of such a sum are not a reference."""
    a, b = (np.asarray(x) for x in xs)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] == b.shape[0]:
        return None
    with np.errstate(all="ignore"):
        r = np.asarray(result)
        return ~np.isfinite(r.astype(np.complex128 if is_complex(r.dtype) else np.float64))


EIGENVALUE_CLUSTER = 1e-3
"""Eigenvalues closer than this fraction of the largest one form a cluster."""


def _clustered_eigenvectors(matrix, result):
    """An eigenvector of an eigenvalue within a cluster is any unit vector of the cluster's
    space: the last bit of the matrix (one BLAS product against another) decides which
    one LAPACK returns (seed 20261203 program 1610: M M^T + m I of a rank-1 M, an
    eigenvalue of multiplicity 50). Those columns are not a reference."""
    with np.errstate(all="ignore"):
        try:
            w = np.linalg.eigvalsh(np.asarray(matrix, np.float64))
        except np.linalg.LinAlgError:       # (non-finite entries) the eigenvalues themselves are not
            return np.ones(np.shape(result), bool)    # determined: neither are the vectors
    if w.shape[-1] < 2:
        return None
    gaps = np.diff(w, axis=-1)
    scale = np.max(np.abs(w), axis=-1, keepdims=True)
    close = ~(gaps > EIGENVALUE_CLUSTER * scale)            # NaN counts as close
    clustered = np.zeros(w.shape, bool)
    clustered[..., 1:] |= close
    clustered[..., :-1] |= close
    return np.broadcast_to(clustered[..., None, :], np.shape(result))


EIGENVALUE_CONDITION_LIMIT = 100.0
"""Eigenvalues of a non-normal matrix whose condition number exceeds this are not compared."""


def _ill_conditioned_eigenvalues(matrix, result):
    """An eigenvalue's condition number ||y|| ||x|| / |y^H x| (y, x its left and right
    eigenvectors) is how much it amplifies a change of the matrix. The perturbed runs move
    the matrix by structured ulps (all up, alternating, ...), which bound a well-conditioned
    eigenvalue but not one in a cluster of a non-normal matrix, where the direction of the
    matrix's rounding decides: seed 20261205 program 4722, M M^T + m I + tril(M M^T)/2 of a
    rank-1 M, eigenvalue condition numbers up to 640, where jitgrad's float32 product
    (GEMM) and NumPy's (SYRK, for `a @ a.T`) differ in the last bit. Those eigenvalues,
    and their neighbours in the sorted order they could swap with, are not a reference."""
    a = np.asarray(matrix, np.float64)
    with np.errstate(all="ignore"):
        if not np.isfinite(a).all():
            return None
        w, right = np.linalg.eig(a)
        left = np.linalg.pinv(right)                    # rows: left eigenvectors, scaled so y x = 1
        condition = np.linalg.norm(left, axis=-1) * np.linalg.norm(right, axis=-2)
    unreliable = ~(condition <= EIGENVALUE_CONDITION_LIMIT)           # NaN counts as unreliable
    order = np.argsort(w.real, axis=-1, kind="stable")
    unreliable = np.take_along_axis(unreliable, order, axis=-1)
    spread = np.zeros_like(unreliable)                  # a neighbour may swap with an unreliable one
    spread[..., 1:] |= unreliable[..., :-1]
    spread[..., :-1] |= unreliable[..., 1:]
    return np.broadcast_to(unreliable | spread, np.shape(result))


def _bfloat16_nan_order(xs, params, result):
    """ml_dtypes' bfloat16 sort leaves NaN wherever its comparisons put it (jitgrad puts
    NaN last, as NumPy does for its own floats): with a bfloat16 NaN, NumPy's order, and
    what NumPy computes from it (np.isin's sorted search), is not a reference."""
    arrays = [np.asarray(x) for x in xs]
    if any(a.dtype.name == "bfloat16" and np.isnan(a.astype(np.float32)).any() for a in arrays):
        return np.ones(np.shape(result), bool)
    return None


def _gamma_family_undefined(xs, params, result):
    """Near a zero of gammaln, digamma or polygamma the value is a difference of terms near
    1 (no float64 method is accurate relative to it), and SciPy's digamma and polygamma
    lose digits for negative x (tan(pi r) near the poles; |x| terms summed): there SciPy
    is not a reference (tests/test_special_functions.py checks them against mpmath)."""
    x = np.asarray(xs[0]).astype(np.float64) if np.asarray(xs[0]).dtype.kind != "b" else np.asarray(xs[0], np.float64)
    with np.errstate(all="ignore"):
        near_zero = np.abs(np.asarray(result, np.float64)) < 0.25
        negative = (x < 0) if params.get("negative_unreliable") else np.zeros(np.shape(x), bool)
    return np.broadcast_to(near_zero | negative, np.shape(result))


def _far_negative_non_integers(xs) -> bool:
    """SciPy's polygamma steps a negative non-integer x up to the positive axis one unit at
    a time: -5.986e10 took longer than the worker's time limit (seed 20261209 program
    5355). Such operands are not proposed (their values are not a reference anyway)."""
    x = np.asarray(xs[0])
    if not is_float(x.dtype):
        return False
    with np.errstate(all="ignore"):
        x = x.astype(np.float64)
        return bool(np.any((x < -1e6) & np.isfinite(x) & (x != np.floor(x))))


def _computed_nan_sign(sign_source, result):
    """Where the value whose sign bit is read is a NaN: an operation's NaN has the sign
    its hardware or library gives (x86's invalid-operation NaN is negative, libm's may
    not be), which NumPy does not define."""
    source = np.asarray(sign_source)
    with np.errstate(all="ignore"):
        nan = np.isnan(source.astype(np.float64)) if source.dtype.kind not in "biu" else np.zeros(source.shape, bool)
    return np.broadcast_to(nan, np.shape(result))


def _in_place(two_d: bool = False):
    """Params for an in-place writer applied to a copy of {0}: None (not proposed) where
    the copy is 0-d or empty (and, with `two_d`, not 2-d)."""
    def params(rng, xs):
        shape = np.shape(xs[0])
        if not shape or 0 in shape or (two_d and len(shape) != 2):
            return None
        return {"mode": ["raise", "wrap", "clip"][rng.integers(3)]}
    return params


def _pow_accuracy(params):
    k = params.get("k")
    return EXACT if k in (0, 1, 2, 0.5, 2.0, -1) else "pow"


def _sum_mag(name):
    return f"np.sum({{0}}, axis={{axis}}, keepdims={{kd}})"


def _matrix_norm_ord(rng, xs):
    if np.ndim(xs[0]) < 2:
        return None
    return {"ord": [None, "'fro'", "'nuc'", "np.inf", "-np.inf", 1, -1, 2, -2][rng.integers(9)]}


def _vector_norm_ord(rng, xs):
    if np.ndim(xs[0]) < 1:
        return None
    return {"ord": [None, "np.inf", "-np.inf", 0, 1, -1, 2, 3, 0.5][rng.integers(9)]}


# a symmetric positive definite matrix from any m x k one: M M^T + m I, m x m (eigenvalues >= m);
# an identity of M's other side would broadcast from 1 x 1 to a singular matrix when k = 1
SPD = "({0} @ np.swapaxes({0}, -1, -2) + {0}.shape[-2] * np.eye({0}.shape[-2]))"
LAPACK_MAX_SIZE = 16384     # factorizations are O(n^3): no 1026 x 1026 inputs

LAPACK_MAX_MAGNITUDE = 1e100
"""Operands of a factorization row stay below this, so that the matrices the rows build
(M M^T + m I) are finite: NumPy's SVD of a matrix with an infinite element may never
return (gesdd's iteration does not end; seed 20261205 program 1392, np.linalg.pinv). A
perturbed run whose operand leaves the range gives the statement an undetermined result
instead of calling NumPy."""


def _lapack_may_hang(stmt, values) -> bool:
    if stmt.op.max_operand_size != LAPACK_MAX_SIZE:
        return False
    for a in stmt.args:
        if isinstance(a, int):
            x = np.asarray(values[a])
            if (is_float(x.dtype) or is_complex(x.dtype)) and x.size and not (np.all(np.isfinite(x))
                                                        and float(np.max(np.abs(x))) < LAPACK_MAX_MAGNITUDE):
                return True
    return False
COMPLEX_MAX_SIZE = 65536
"""Complex rows expand to dozens of real ops (and FFTs of other lengths to transforms of twice
the length), each a full array in the interpreter checks: larger operands outgrow memory."""
SPD_MAGNITUDE = "(np.sum({0} ** 2) + {0}.shape[-2]) * 16"
# a complex matrix from any real one, and a Hermitian positive definite one from it: C C^H + m I
COMPLEX_MATRIX = "({0} + 0.5j * np.flip({0}, -1))"
HPD = f"({COMPLEX_MATRIX} @ np.conj(np.swapaxes({COMPLEX_MATRIX}, -1, -2)) + {{0}}.shape[-2] * np.eye({{0}}.shape[-2]))"
HPD_MAGNITUDE = "(np.sum({0} ** 2) * 4 + {0}.shape[-2]) * 32"
# a general real matrix with a spectrum near an SPD one's: SPD plus a triangular part
GENERAL = f"({SPD} + 0.5 * np.tril({{0}} @ np.swapaxes({{0}}, -1, -2)))"


def _window(rng, xs):
    """Window, strides and (lo, hi) padding smaller than the window, one per axis."""
    shape = np.shape(xs[0])
    window = tuple(int(rng.integers(1, min(n, 3) + 1)) if n else 1 for n in shape)
    return {"window": window, "strides": tuple(int(rng.integers(1, 3)) for _ in shape),
            "padding": tuple((int(rng.integers(0, w)), int(rng.integers(0, w))) for w in window)}


def _conv(rng, xs):
    """A kernel over every axis of the operand (as batch 1, feature 1), with strides,
    padding (negative crops), input and kernel dilation."""
    shape = np.shape(xs[0])
    window = tuple(int(rng.integers(1, min(n, 3) + 1)) if n else 1 for n in shape)
    return {"window": window, "taps": int(np.prod(window)),
            "strides": tuple(int(rng.integers(1, 3)) for _ in shape),
            "padding": tuple((int(rng.integers(-1, 3)), int(rng.integers(-1, 3))) for _ in shape),
            "lhs_dilation": tuple(int(rng.integers(1, 3)) for _ in shape),
            "rhs_dilation": tuple(int(rng.integers(1, 3)) for _ in shape)}


def _window_view_contraction(rng, xs):
    """sliding_window_view over up to two axes of length >= 1 (windows up to 3), a step
    on each windowed axis's positions, contracted with a kernel of the window's shape by
    tensordot (recognized as a convolution where it is one: passes/nn_idioms.py)."""
    shape = np.shape(np.atleast_1d(xs[0]))
    candidates = [a for a, n in enumerate(shape) if n >= 1]
    axes = tuple(int(a) for a in rng.permutation(candidates)[:int(rng.integers(1, 3))]) if candidates else ()
    window = tuple(int(rng.integers(1, min(shape[a], 3) + 1)) for a in axes)
    index = ", ".join(f"::{int(rng.integers(1, 3))}" if a in axes else ":" for a in range(len(shape)))
    return {"axes": axes, "window": window, "taps": int(np.prod(window)), "index": index, "k": len(axes)}


def _shifted_slices(rng, xs):
    """np.pad on the last two axes, then the sum over a full 3x3 (or 2x2) grid of
    offsets of shifted slices, each times a weight computed from the operand (tanh of one
    of its elements: a traced weight, as a learnable kernel is; recognized as a
    convolution). Not for empty operands."""
    x = np.atleast_2d(xs[0])
    if x.size == 0:
        return None
    k = int(rng.integers(2, 4))
    pads = ((0, 0),) * (x.ndim - 2) + ((k // 2, k - 1 - k // 2),) * 2
    return {"k": k, "pads": pads, "h": x.shape[-2], "w": x.shape[-1], "size": x.size}


def _pool_split(rng, xs):
    """A reshape splitting one or two axes into (n // k, k) and the reduction over the
    k-parts (recognized as a window reduction with window = stride = k)."""
    shape = list(np.shape(np.atleast_1d(xs[0])))
    split, axes = [], []
    for n in shape:
        k = int(rng.choice([d for d in (2, 3, 1) if n % d == 0]))
        if k > 1 and len(axes) < 2:
            split += [n // k, k]
            axes.append(len(split) - 1)
        else:
            split.append(n)
    return {"split": tuple(split), "axes": tuple(axes)} if axes else None


OPS: list[Op] = [
    # ---- arithmetic operators and ufuncs (elementwise; broadcasting)
    Op("add", "{0} + {1}", 2, in_tables(np.add)),
    Op("sub", "{0} - {1}", 2, in_tables(np.subtract)),
    Op("mul", "{0} * {1}", 2, in_tables(np.multiply)),
    Op("truediv", "{0} / {1}", 2, in_tables(np.true_divide)),
    Op("floordiv", "{0} // {1}", 2, in_tables(np.floor_divide), smooth=False, jumps=True),
    Op("mod", "{0} % {1}", 2, in_tables(np.remainder), smooth=False, jumps=True, divisor_period=True),
    Op("pow", "{0} ** {1}", 2, in_tables(np.power), accuracy="pow", may_raise=_int_power_raises),
    Op("pow_scalar", "{0} ** {k}", 1, in_tables(np.power), accuracy=_pow_accuracy, params=_power),
    Op("np.power", "np.power({0}, {1})", 2, in_tables(np.power), accuracy="pow", may_raise=_int_power_raises),
    Op("neg", "-{0}", 1, in_tables(np.negative)),
    Op("pos", "+{0}", 1, in_tables(np.positive)),
    Op("abs", "abs({0})", 1, in_tables(np.absolute), smooth=False),
    Op("np.abs", "np.abs({0})", 1, in_tables(np.absolute), smooth=False),
    Op("fabs", "np.fabs({0})", 1, in_tables(np.fabs), smooth=False, kinds="f"),
    Op("square", "np.square({0})", 1, in_tables(np.square)),
    Op("reciprocal", "np.reciprocal({0})", 1, in_tables(np.reciprocal)),
    Op("sign", "np.sign({0})", 1, in_tables(np.sign), smooth=False, jumps=True),
    Op("maximum", "np.maximum({0}, {1})", 2, in_tables(np.maximum), smooth=False),
    Op("minimum", "np.minimum({0}, {1})", 2, in_tables(np.minimum), smooth=False),
    Op("fmax", "np.fmax({0}, {1})", 2, in_tables(np.fmax), smooth=False),
    Op("fmin", "np.fmin({0}, {1})", 2, in_tables(np.fmin), smooth=False),
    Op("floor_divide", "np.floor_divide({0}, {1})", 2, in_tables(np.floor_divide), smooth=False, jumps=True),
    Op("remainder", "np.remainder({0}, {1})", 2, in_tables(np.remainder), smooth=False, jumps=True, divisor_period=True),
    Op("fmod", "np.fmod({0}, {1})", 2, in_tables(np.fmod), smooth=False, jumps=True, divisor_period=True),
    Op("floor", "np.floor({0})", 1, in_tables(np.floor), smooth=False, jumps=True),
    Op("ceil", "np.ceil({0})", 1, in_tables(np.ceil), smooth=False, jumps=True),
    Op("trunc", "np.trunc({0})", 1, in_tables(np.trunc), smooth=False, jumps=True),
    Op("rint", "np.rint({0})", 1, in_tables(np.rint), smooth=False, jumps=True),
    # ---- bitwise and logical
    Op("and", "{0} & {1}", 2, in_tables(np.bitwise_and), smooth=False, kinds="iub", jumps=True),
    Op("or", "{0} | {1}", 2, in_tables(np.bitwise_or), smooth=False, kinds="iub", jumps=True),
    Op("xor", "{0} ^ {1}", 2, in_tables(np.bitwise_xor), smooth=False, kinds="iub", jumps=True),
    Op("invert", "~{0}", 1, in_tables(np.invert), smooth=False, kinds="iub", jumps=True),
    Op("lshift", "{0} << {1}", 2, in_tables(np.left_shift), smooth=False, kinds="iu"),
    Op("rshift", "{0} >> {1}", 2, in_tables(np.right_shift), smooth=False, kinds="iu"),
    Op("logical_and", "np.logical_and({0}, {1})", 2, in_tables(np.logical_and), smooth=False, jumps=True),
    Op("logical_or", "np.logical_or({0}, {1})", 2, in_tables(np.logical_or), smooth=False, jumps=True),
    Op("logical_xor", "np.logical_xor({0}, {1})", 2, in_tables(np.logical_xor), smooth=False, jumps=True),
    Op("logical_not", "np.logical_not({0})", 1, in_tables(np.logical_not), smooth=False, jumps=True),
    # ---- comparisons and selection
    Op("lt", "{0} < {1}", 2, in_tables(np.less), smooth=False, jumps=True),
    Op("le", "{0} <= {1}", 2, in_tables(np.less_equal), smooth=False, jumps=True),
    Op("gt", "{0} > {1}", 2, in_tables(np.greater), smooth=False, jumps=True),
    Op("ge", "{0} >= {1}", 2, in_tables(np.greater_equal), smooth=False, jumps=True),
    Op("eq", "{0} == {1}", 2, in_tables(np.equal), smooth=False, jumps=True),
    Op("ne", "{0} != {1}", 2, in_tables(np.not_equal), smooth=False, jumps=True),
    Op("where", "np.where({0}, {1}, {2})", 3, in_tables(np.where), weight=1.5, jumps=True),
    Op("where_cmp", "np.where({0} > {1}, {0}, {1})", 2, in_tables(np.where), smooth=False, jumps=True),
    Op("clip", "np.clip({0}, {lo}, {hi})", 1, in_tables(np.clip), params=_clip, smooth=False),
    Op("isnan", "np.isnan({0})", 1, in_tables(np.isnan), smooth=False),
    Op("isfinite", "np.isfinite({0})", 1, in_tables(np.isfinite), smooth=False),
    # ---- transcendental (ulp-bounded)
    *[Op(name, f"np.{name}({{0}})", 1, in_tables(getattr(np, name)), accuracy=name,
         period={"sin": 2 * math.pi, "cos": 2 * math.pi, "tan": math.pi}.get(name))
      for name in ("exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh", "sinh", "cosh", "exp2",
                   "log2", "log10", "cbrt", "arctan", "arcsin", "arccos", "arcsinh", "arctanh")],
    Op("sqrt", "np.sqrt({0})", 1, in_tables(np.sqrt)),
    Op("logaddexp", "np.logaddexp({0}, {1})", 2, in_tables(np.logaddexp), accuracy="logaddexp",
       magnitude="np.maximum({0}, {1})"),
    Op("hypot", "np.hypot({0}, {1})", 2, in_tables(np.hypot), accuracy="hypot"),
    Op("arctan2", "np.arctan2({0}, {1})", 2, in_tables(np.arctan2), accuracy="arctan2"),
    Op("float_power", "np.float_power({0}, {1})", 2, in_tables(np.float_power), accuracy="pow"),
    # ---- reductions
    Op("sum", "np.sum({0}, axis={axis}, keepdims={kd})", 1, in_tables(np.sum), SUM, _axis, weight=2),
    Op(".sum", "{0}.sum(axis={axis})", 1, has_method("sum"), SUM, lambda r, xs: _axis(r, xs, False)),
    Op("mean", "np.mean({0}, axis={axis}, keepdims={kd})", 1, in_tables(np.mean), SUM, _axis),
    Op(".mean", "{0}.mean()", 1, has_method("mean"), SUM, magnitude="np.mean({0})"),
    Op("var", "np.var({0}, axis={axis}, keepdims={kd})", 1, in_tables(np.var), SUM, _axis,
       magnitude="np.mean(np.square({0}), axis={axis}, keepdims={kd}) * 4"),
    Op("std", "np.std({0}, axis={axis}, keepdims={kd})", 1, in_tables(np.std), SUM, _axis,
       magnitude="np.sqrt(np.mean(np.square({0}), axis={axis}, keepdims={kd})) * 4", smooth=False),
    Op("max", "np.max({0}, axis={axis}, keepdims={kd})", 1, in_tables(np.max), params=_axis, smooth=False,
       undefined=_signed_zero_ties),
    Op(".min", "{0}.min(axis={axis})", 1, has_method("min"), params=lambda r, xs: _axis(r, xs, False),
       smooth=False, undefined=_signed_zero_ties),
    Op("argmax", "np.argmax({0}, axis={axis})", 1, in_tables(np.argmax), smooth=False,
       params=lambda r, xs: _axis(r, xs, False), jumps=True, picks="max"),
    Op("argmin", "np.argmin({0})", 1, in_tables(np.argmin), smooth=False, jumps=True, picks="min"),
    Op("prod", "np.prod({0}, axis={axis})", 1, in_tables(np.prod), SUM, lambda r, xs: _axis(r, xs, False)),
    Op("any", "np.any({0})", 1, in_tables(np.any), smooth=False),
    Op("cumsum", "np.cumsum({0})", 1, in_tables(np.cumsum)),          # sequential: NumPy's order
    Op("norm", "np.linalg.norm({0})", 1, in_tables(np.linalg.norm), SUM, smooth=False,
       magnitude="np.sqrt(np.sum(np.square({0}))) * 4", kinds="f"),
    # ---- numpy.linalg on LAPACK (well-conditioned inputs built from any square operand)
    Op("norm_matrix", "np.linalg.norm({0}, ord={ord}, axis=(-2, -1))", 1, in_tables(np.linalg.norm), SUM,
       _matrix_norm_ord, magnitude="(np.sum({0}) + 1) ** 2 * 4", smooth=False, kinds="f", weight=0.3),
    Op("norm_vector", "np.linalg.norm({0}, ord={ord}, axis=-1)", 1, in_tables(np.linalg.norm), SUM,
       _vector_norm_ord, magnitude="(np.sum({0}) + 1) ** 2 * 4", smooth=False, kinds="f", weight=0.3),
    Op("cholesky", f"np.linalg.cholesky({SPD})", 1, in_tables(np.linalg.cholesky), SUM,
       magnitude=SPD_MAGNITUDE, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE),
    Op("solve", f"np.linalg.solve({SPD}, {{0}})", 1, in_tables(np.linalg.solve), SUM,
       magnitude=SPD_MAGNITUDE, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE),
    Op("inv", f"np.linalg.inv({SPD})", 1, in_tables(np.linalg.inv), SUM, magnitude=SPD_MAGNITUDE, kinds="f",
       weight=0.3, max_operand_size=LAPACK_MAX_SIZE),
    Op("slogdet", f"np.linalg.slogdet({SPD})[1]", 1, in_tables(np.linalg.slogdet), SUM,
       magnitude=SPD_MAGNITUDE, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE),
    Op("eigvalsh", f"np.linalg.eigvalsh({SPD})", 1, in_tables(np.linalg.eigvalsh), SUM,
       magnitude=SPD_MAGNITUDE, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE),
    Op("svdvals", "np.linalg.svdvals({0})", 1, in_tables(np.linalg.svdvals), SUM,
       magnitude="np.sqrt(np.sum(np.square({0}))) * 8", smooth=False, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE),
    Op("solve_cholesky", f"np.linalg.solve(np.linalg.cholesky({SPD}), {{0}})", 1, in_tables(np.linalg.solve),
       SUM, magnitude=SPD_MAGNITUDE, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE),
    Op("pinv", f"np.linalg.pinv({SPD})", 1, in_tables(np.linalg.pinv), SUM, magnitude=SPD_MAGNITUDE, kinds="f",
       weight=0.3, max_operand_size=LAPACK_MAX_SIZE),
    # factors are unique up to signs: compared as magnitudes (kinks at zeros: no finite differences)
    Op("qr_r", "np.abs(np.linalg.qr({0}, mode='r'))", 1, in_tables(np.linalg.qr), SUM,
       magnitude="np.sqrt(np.sum(np.square({0}))) * 8", smooth=False, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE,
       may_raise=_wide_matrix),
    Op("eigh_vectors", f"np.abs(np.linalg.eigh({SPD})[1])", 1, in_tables(np.linalg.eigh), SUM,
       magnitude=SPD_MAGNITUDE, smooth=False, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE,
       undefined=lambda xs, p, r: _clustered_eigenvectors(eval(SPD.format("_x"), {"np": np}, {"_x": xs[0]}), r)),
    # ---- numpy.linalg on complex matrices (LAPACK's c/z routines) and eig/eigvals
    Op("complex_solve", f"np.real(np.linalg.solve({HPD}, {{0}} + 0.5j))"
       f" + np.sum(np.imag(np.linalg.inv({HPD})), axis=-1, keepdims=True)", 1,
       in_tables(np.linalg.solve), SUM, magnitude=HPD_MAGNITUDE, kinds="f", weight=0.3,
       max_operand_size=LAPACK_MAX_SIZE),
    Op("complex_cholesky", f"np.abs(np.linalg.cholesky({HPD}))", 1, in_tables(np.linalg.cholesky), SUM,
       magnitude=HPD_MAGNITUDE, smooth=False, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE),
    Op("complex_slogdet", f"np.linalg.slogdet({HPD})[1]", 1,
       in_tables(np.linalg.slogdet), SUM, magnitude=HPD_MAGNITUDE, kinds="f", weight=0.3,
       max_operand_size=LAPACK_MAX_SIZE),
    Op("complex_eigvalsh", f"np.linalg.eigvalsh({HPD})", 1, in_tables(np.linalg.eigvalsh), SUM,
       magnitude=HPD_MAGNITUDE, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE),
    Op("complex_svdvals", f"np.linalg.svdvals({COMPLEX_MATRIX})", 1, in_tables(np.linalg.svdvals), SUM,
       magnitude="np.sqrt(np.sum(np.square({0}))) * 16", smooth=False, kinds="f", weight=0.3,
       max_operand_size=LAPACK_MAX_SIZE),
    Op("complex_qr_r", f"np.abs(np.linalg.qr({COMPLEX_MATRIX}, mode='r'))", 1, in_tables(np.linalg.qr), SUM,
       magnitude="np.sqrt(np.sum(np.square({0}))) * 16", smooth=False, kinds="f", weight=0.3,
       max_operand_size=LAPACK_MAX_SIZE, may_raise=_wide_matrix),
    Op("eigvals", f"np.sort(np.real(np.linalg.eigvals({GENERAL})), axis=-1)", 1, in_tables(np.linalg.eigvals),
       SUM, magnitude=SPD_MAGNITUDE, smooth=False, kinds="f", weight=0.3, max_operand_size=LAPACK_MAX_SIZE,
       undefined=lambda xs, p, r: _ill_conditioned_eigenvalues(eval(GENERAL.format("_x"), {"np": np}, {"_x": xs[0]}), r)),
    # ---- complex numbers (real results built from complex intermediates) and numpy.fft
    Op("complex_arith", "np.real(({0} + 1j * {1}) * ({1} - 0.5j)) + np.imag(({0} - 2j) / ({1} + 3j))", 2,
       in_tables(np.real), SUM, magnitude="(1 + {0} + {1}) ** 2 * 4", kinds="f", weight=0.3,
       max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_abs_angle", "np.abs({0} - 1j * {1}) + np.angle({1} + 1j * {0})", 2, in_tables(np.angle), SUM,
       magnitude="({0} + {1} + 4) * 4", smooth=False, kinds="f", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_exp_log_sqrt", "np.real(np.exp(({0} + 1j * {1}) / 8) + np.sqrt({0} + 1j) * np.log({1} + 2j))", 2,
       in_tables(np.exp), SUM, magnitude="(np.exp(({0} + {1}) / 8) + ({0} + 2) * (np.log({1} + 2) + 4)) * 8",
       kinds="f", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE, period=16 * math.pi),
    Op("complex_cross", "np.real(np.cross(np.stack([{0}, {0} + 1j, 2 * {0}], axis=-1), "
       "np.stack([1 - {0}, 0.5j * {0}, {0} * {0}], axis=-1)))", 1, in_tables(np.cross), SUM,
       magnitude="np.stack([(1 + {0}) ** 3 * 16] * 3, axis=-1)", kinds="f", weight=0.3,
       max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_operands", "np.real({0} * np.conj({1}) + {0} / 4)", 2, in_tables(np.conjugate), SUM,
       magnitude="{0} * {1} + {0}", smooth=False, kinds="c", weight=0.5, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_trig_hyperbolic",
       "np.real(np.sin(({0} + 1j * {1}) / 8) + 1j * np.cos(({1} - 1j * {0}) / 8) + np.tan(({0} + 1j * {1}) / 16)"
       " + np.sinh(({1} + 1j * {0}) / 16) * np.cosh(({0} - 2j) / 16) - np.tanh(({0} + 1j * {1}) / 8))", 2,
       in_tables(np.sin), SUM, magnitude="(np.cosh(({0} + {1}) / 8) + 2) ** 2 * 16", kinds="f", weight=0.3,
       max_operand_size=COMPLEX_MAX_SIZE, period=16 * math.pi),
    Op("complex_inverse_trig",
       "np.imag(np.arcsin(({0} + 1j * {1}) / 4) + np.arccos(({1} + 0.5j) / 4) + np.arctan(({0} - 1j * {1}) / 4))"
       " + np.real(np.arcsinh({0} + 1j * {1}) + np.arccosh({1} + 2j) + np.arctanh(({0} + 1j) / 4))", 2,
       in_tables(np.arcsin), SUM, magnitude="(np.log({0} + {1} + 2) + 4) * 16", smooth=False, jumps=True,
       kinds="f", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_exp_log_family",
       "np.real(np.exp2(({0} + 1j * {1}) / 16) + np.expm1(({1} - 1j * {0}) / 16) + np.log2({0} + 1j * {1} + 3j)"
       " + np.log10({1} - 2j) + np.log1p(({0} + 1j * {1}) / 4 + 1j))", 2, in_tables(np.exp2), SUM,
       magnitude="(np.exp2(({0} + {1}) / 16) + np.exp(({0} + {1}) / 16) + np.log({0} + {1} + 4) + 8) * 16",
       kinds="f", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE, period=32 * math.pi),
    Op("complex_power_sign", "np.real(({0} / 8 + 2j) ** (({1} + 1j) / 16) + np.sign({0} + 1j * {1}) * 2)", 2,
       in_tables(np.power), SUM, magnitude="(({0} / 8 + 2) ** (({1} + 1) / 16)) * ({1} + 8) * 16 + 8",
       smooth=False, kinds="f", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_ordering", "np.real(np.maximum({0}, {1}) + np.fmin({0}, {1})) + ({0} < {1}) + ({0} >= {1})", 2,
       in_tables(np.maximum), smooth=False, jumps=True, kinds="c", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_sort_cumsum", "np.real(np.cumsum({0}) * np.conj(np.max({0}))) + np.imag(np.sort({0}, axis=None))", 1,
       in_tables(np.sort), SUM, magnitude="np.cumsum({0}) * np.max({0}) * 4 + {0}.ravel()", smooth=False,
       jumps=True, kinds="c", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE,
       may_raise=lambda xs, params: np.size(xs[0]) == 0),
    # NumPy functions of complex arrays: lexicographic selection, NaN-ignoring reductions, sums
    # (nanmax/nanmin of a 0-d value refuse: NumPy's answer for an all-NaN NumPy scalar is
    # nan+0j, for a 0-d array the element itself; correlate/convolve with infinite parts:
    # NumPy's BLAS dot kernels, docs/complex.md)
    Op("complex_median", "np.median({0}, axis={axis})", 1, in_tables(np.median),
       params=lambda r, xs: _axis(r, xs, False), smooth=False, kinds="c", weight=0.3,
       max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_nanmax", "np.nanmax({0}, axis={axis})", 1, in_tables(np.nanmax),
       params=lambda r, xs: _axis(r, xs, False), smooth=False, kinds="c", weight=0.2,
       max_operand_size=COMPLEX_MAX_SIZE, may_raise=lambda xs, params: np.ndim(xs[0]) == 0),
    Op("complex_nanmin", "np.nanmin({0}, axis={axis})", 1, in_tables(np.nanmin),
       params=lambda r, xs: _axis(r, xs, False), smooth=False, kinds="c", weight=0.2,
       max_operand_size=COMPLEX_MAX_SIZE, may_raise=lambda xs, params: np.ndim(xs[0]) == 0),
    Op("complex_nanvar", "np.nanvar({0})", 1, in_tables(np.nanvar), SUM, magnitude="np.nanmean(np.square({0})) * 4",
       kinds="c", weight=0.2, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_clip", "np.clip({0}, {lo} - 0.5j, {hi} + 0.5j)", 1, in_tables(np.clip), params=_clip, smooth=False,
       kinds="c", weight=0.2, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_float_power", "np.float_power({0} / 8 + 2j, 2.5)", 1, in_tables(np.float_power), SUM,
       magnitude="({0} / 8 + 2) ** 2.5 * 16", kinds="c", weight=0.2, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_diff", "np.diff({0}, axis={axis})", 1, in_tables(np.diff),
       params=lambda r, xs: _axis(r, xs, False, False), kinds="c", weight=0.2, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_trace", "np.trace({0})", 1, in_tables(np.trace), SUM, kinds="c", weight=0.2,
       max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_cumulative_sum", "np.cumulative_sum(np.ravel({0}), include_initial=True)", 1,
       in_tables(np.cumulative_sum), SUM, magnitude="np.cumulative_sum(np.ravel({0}), include_initial=True)",
       kinds="c", weight=0.2, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_average", "np.average({0}, axis={axis})", 1, in_tables(np.average), SUM,
       lambda r, xs: _axis(r, xs, False), magnitude="np.mean({0}, axis={axis})", kinds="c", weight=0.2,
       max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_isclose", "np.isclose({0}, {1})", 2, in_tables(np.isclose), smooth=False, jumps=True, kinds="c",
       weight=0.2, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_convolve", "np.convolve({0}, {1}, mode={mode!r})", 2, in_tables(np.convolve), SUM, kinds="c",
       weight=0.2, params=lambda r, xs: {"mode": ["full", "same", "valid"][r.integers(3)]},
       may_raise=_two_long_sequences, max_operand_size=COMPLEX_MAX_SIZE, undefined=_not_finite),
    Op("complex_correlate", "np.correlate({0}, {1})", 2, in_tables(np.correlate), SUM, kinds="c", weight=0.2,
       may_raise=_two_long_sequences, max_operand_size=COMPLEX_MAX_SIZE, undefined=_not_finite),
    # the rest of NumPy's non-ordering functions of complex arrays (truth: either part nonzero;
    # vecdot/vecmat and cov/corrcoef conjugate; their sums of products with infinite parts:
    # NumPy's BLAS kernels, docs/complex.md)
    Op("complex_compress", "np.compress([1j, 0, -0.0 + 0j, 2], np.ravel({0}))", 1, in_tables(np.compress),
       kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_extract", "np.extract([[0, 1j], [complex(0, -0.0), np.nan]], {0})", 1, in_tables(np.extract),
       kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_ediff1d", "np.ediff1d({0})", 1, in_tables(np.ediff1d), kinds="c", weight=0.1,
       max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_gradient", "np.gradient({0}, 0.5, axis={axis})", 1, in_tables(np.gradient), kinds="c", weight=0.1,
       params=lambda r, xs: _axis(r, xs, False, False), max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_trapezoid", "np.trapezoid({0})", 1, in_tables(np.trapezoid), SUM, magnitude="np.trapezoid({0})",
       kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_cov", "np.cov({0})", 1, in_tables(np.cov), SUM,
       magnitude="np.abs(np.cov({0})) * 0 + np.max({0}, initial=0) ** 2 * 8", kinds="c", weight=0.1,
       max_operand_size=COMPLEX_MAX_SIZE, undefined=_not_finite),
    Op("complex_corrcoef", "np.corrcoef({0})", 1, in_tables(np.corrcoef), SUM,
       magnitude="np.ones(np.shape(np.corrcoef({0}))) * (np.size({0}) + 16)", kinds="c", weight=0.1,
       max_operand_size=COMPLEX_MAX_SIZE, undefined=_not_finite),
    Op("complex_sinc", "np.sinc({0} / 4)", 1, in_tables(np.sinc), SUM, magnitude="(np.cosh(np.pi * {0} / 4) + 1) * 16",
       kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE, period=8.0),
    Op("complex_vander", "np.vander(np.ravel({0})[:6], 3)", 1, in_tables(np.vander), SUM,
       magnitude="np.vander(np.ravel({0})[:6], 3)", kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_polyval", "np.polyval(np.ravel({1})[:4], {0})", 2, in_tables(np.polyval), SUM,
       magnitude="np.polyval(np.ravel({1})[:4], {0})", kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_polyadd", "np.polysub(np.polyadd(np.ravel({0}), np.ravel({1})), np.ravel({1})[:2])", 2,
       in_tables(np.polyadd), kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_polyint_polyder", "np.polyder(np.polyint(np.ravel({0}), k=0.5j), 2)", 1, in_tables(np.polyint),
       kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_polymul", "np.polymul(np.concatenate([[1 + 1j], np.ravel({0})[:3]]), "
       "np.concatenate([[0.5 - 1j], np.ravel({1})[:2]]))", 2, in_tables(np.polymul), SUM,
       magnitude="np.polymul(np.concatenate([[2], np.ravel({0})[:3]]), np.concatenate([[2], np.ravel({1})[:2]]))",
       kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE, undefined=_not_finite),
    Op("complex_linspace", "np.linspace(np.sum(np.ravel({0})[:1]), np.sum(np.ravel({0})[-1:]), 5)", 1,
       in_tables(np.linspace), kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_logspace", "np.logspace(np.sum(np.ravel({0})[:1]) / 4, np.sum(np.ravel({0})[-1:]) / 4, 5)", 1,
       in_tables(np.logspace), SUM, magnitude="np.logspace(np.sum(np.ravel({0})[:1]) / 4, "
       "np.sum(np.ravel({0})[-1:]) / 4, 5) * (np.max({0}, initial=0) * 2 + 16)", kinds="c", weight=0.1,
       max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_meshgrid", "np.meshgrid(np.ravel({0})[:5], np.ravel({1})[:3])[1]", 2, in_tables(np.meshgrid),
       kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_broadcast_arrays", "np.broadcast_arrays({0}, {1})[0]", 2, in_tables(np.broadcast_arrays),
       kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_array_equiv", "np.asarray(np.array_equiv({0}, {1}))", 2, in_tables(np.array_equiv), smooth=False, jumps=True,
       kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_vecdot", "np.vecdot({0}, {0} * (1 - 2j))", 1, in_tables(np.vecdot), SUM,
       magnitude="np.vecdot({0}, {0}) * 3", kinds="c", weight=0.1, max_operand_size=COMPLEX_MAX_SIZE,
       undefined=_not_finite),
    Op("complex_matvec", "np.matvec(np.atleast_2d({0}), np.conj(np.atleast_2d({0})[0]))", 1, in_tables(np.matvec),
       SUM, magnitude="np.matvec(np.atleast_2d({0}), np.atleast_2d({0})[0])", kinds="c", weight=0.1,
       max_operand_size=COMPLEX_MAX_SIZE, undefined=_not_finite),
    Op("complex_vecmat", "np.vecmat(np.atleast_2d({0})[:, 0], np.atleast_2d({0}))", 1, in_tables(np.vecmat), SUM,
       magnitude="np.vecmat(np.atleast_2d({0})[:, 0], np.atleast_2d({0}))", kinds="c", weight=0.1,
       max_operand_size=COMPLEX_MAX_SIZE, undefined=_not_finite),
    Op("complex_logical", "np.logical_xor(np.logical_and({0}, {1}), np.logical_or(np.logical_not({0}), {1}))", 2,
       in_tables(np.logical_xor), smooth=False, jumps=True, kinds="c", weight=0.2, max_operand_size=COMPLEX_MAX_SIZE),
    # NumPy's order of complex numbers in searching, sets and order statistics
    # (jitgrad/tracing/complex_order.py)
    Op("complex_searchsorted", "np.searchsorted(np.sort(np.ravel({1})), {0}, side={side!r})", 2,
       in_tables(np.searchsorted), smooth=False, jumps=True, kinds="c", weight=0.2, max_operand_size=COMPLEX_MAX_SIZE,
       params=lambda r, xs: {"side": ["left", "right"][r.integers(2)]}),
    Op("complex_isin", "np.isin({0}, {1}, invert={invert})", 2, in_tables(np.isin), smooth=False, jumps=True,
       kinds="c", weight=0.2, max_operand_size=COMPLEX_MAX_SIZE, params=lambda r, xs: {"invert": bool(r.integers(2))}),
    Op("complex_lexsort", "np.lexsort((np.ravel({0}), np.ravel(np.real({0})) > 0))", 1, in_tables(np.lexsort),
       smooth=False, jumps=True, kinds="c", weight=0.2, max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_nanmedian", "np.nanmedian({0}, axis={axis})", 1, in_tables(np.nanmedian),
       params=lambda r, xs: _axis(r, xs, False), smooth=False, kinds="c", weight=0.2,
       max_operand_size=COMPLEX_MAX_SIZE),
    Op("complex_histogram_weights", "np.histogram(np.ravel(np.real({0})), bins=3, range=(-1, 1), "
       "weights=np.ravel({0}))[0]", 1, in_tables(np.histogram), SUM, smooth=False, kinds="c", weight=0.2,
       magnitude="np.full(3, np.sum({0}))",
       max_operand_size=COMPLEX_MAX_SIZE),
    Op("rfft_abs", "np.abs(np.fft.rfft({0}, axis=-1))", 1, in_tables(np.fft.rfft), SUM,
       magnitude="np.sum({0}, axis=-1, keepdims=True) * 8", smooth=False, kinds="f", weight=0.3,
       max_operand_size=COMPLEX_MAX_SIZE,
       may_raise=lambda xs, params: np.ndim(xs[0]) == 0 or np.shape(xs[0])[-1] == 0,
       undefined=_fft_undefined((-1,))),
    Op("fft_round_trip", "np.real(np.fft.ifft(np.fft.fft({0}, axis=0), axis=0))", 1, in_tables(np.fft.fft), SUM,
       magnitude="np.sum({0}, axis=0, keepdims=True) * 8", kinds="f", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE,
       may_raise=lambda xs, params: np.ndim(xs[0]) == 0 or np.shape(xs[0])[0] == 0,
       undefined=_fft_undefined((0,))),
    Op("rfftn_round_trip", "np.fft.irfftn(np.fft.rfftn({0}), s={0}.shape)", 1, in_tables(np.fft.rfftn), SUM,
       magnitude="np.sum({0}) * 8", kinds="f", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE,
       may_raise=lambda xs, params: np.ndim(xs[0]) == 0 or 0 in np.shape(xs[0]),
       undefined=_fft_undefined(None)),
    Op("irfft_scaled_axis0", "np.fft.irfft(np.fft.rfft({0}, axis=0, norm='ortho') * 1j, n={0}.shape[0], axis=0, "
       "norm='forward')", 1, in_tables(np.fft.irfft), SUM,
       magnitude="np.sum({0}, axis=0, keepdims=True) * 8", kinds="f", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE,
       may_raise=lambda xs, params: np.ndim(xs[0]) == 0 or np.shape(xs[0])[0] == 0,
       undefined=_fft_undefined((0,))),
    Op("hfft_ihfft", "np.fft.hfft(np.fft.ihfft({0}, axis=-1), n={0}.shape[-1], axis=-1, norm='ortho')", 1,
       in_tables(np.fft.hfft), SUM,
       magnitude="np.sum({0}, axis=-1, keepdims=True) * 8", kinds="f", weight=0.3, max_operand_size=COMPLEX_MAX_SIZE,
       may_raise=lambda xs, params: np.ndim(xs[0]) == 0 or np.shape(xs[0])[-1] == 0,
       undefined=_fft_undefined((-1,))),
    # ---- products
    Op("matmul", "{0} @ {1}", 2, in_tables(np.matmul), SUM, weight=1.5),
    Op("dot", "np.dot({0}, {1})", 2, in_tables(np.dot), SUM),
    Op("matmul_transposed", "{0}.T @ {1}", 2, in_tables(np.matmul), SUM, weight=0.5),
    Op("matmul_by_transposed", "{0} @ np.swapaxes({1}, -1, -2)", 2, in_tables(np.matmul), SUM, weight=0.5),
    Op("matmul_bfloat16", "{0}.astype('bfloat16') @ {1}.astype('bfloat16')", 2, in_tables(np.matmul), SUM,
       kinds="f", weight=0.5, rounds_to="bfloat16"),     # two bfloat16 operands: the native vdpbf16ps kernel where the CPU has it
    Op("inner", "np.inner({0}, {1})", 2, in_tables(np.inner), SUM),
    Op("outer", "np.outer({0}, {1})", 2, in_tables(np.outer)),
    Op("vdot", "np.vdot({0}, {1})", 2, in_tables(np.vdot), SUM),
    Op("tensordot", "np.tensordot({0}, {1}, axes=1)", 2, in_tables(np.tensordot), SUM),
    Op("einsum", "np.einsum('ij,jk->ik', {0}, {1})", 2, in_tables(np.einsum), SUM, may_raise=_half_float,
       undefined=_einsum_broadcast_sum),
    Op("einsum_t", "np.einsum('ij->ji', {0})", 1, in_tables(np.einsum), may_raise=_half_float),
    # ---- dtype conversion
    Op("astype", "{0}.astype({dtype})", 1, has_method("astype"), params=_dtype, smooth=False, weight=1.5,
       undefined=_float_to_int_undefined, jumps=True),
    # ---- data movement (views and copies)
    Op("T", "{0}.T", 1, always, weight=1.5),
    Op("transpose", "np.transpose({0}, {perm})", 1, in_tables(np.transpose), params=_perm),
    Op("swapaxes", "np.swapaxes({0}, {a}, {b})", 1, in_tables(np.swapaxes), params=_two_axes),
    Op("moveaxis", "np.moveaxis({0}, {a}, {b})", 1, in_tables(np.moveaxis), params=_two_axes),
    Op("reshape", "{0}.reshape({shape})", 1, has_method("reshape"), params=_reshape),
    Op("np.reshape", "np.reshape({0}, {shape})", 1, in_tables(np.reshape), params=_reshape),
    Op("ravel", "np.ravel({0})", 1, in_tables(np.ravel)),
    Op("flatten", "{0}.flatten()", 1, has_method("flatten")),
    Op("squeeze", "np.squeeze({0})", 1, in_tables(np.squeeze)),
    Op("expand_dims", "np.expand_dims({0}, {a})", 1, in_tables(np.expand_dims), params=_two_axes),
    Op("flip", "np.flip({0}, axis={axis})", 1, in_tables(np.flip), params=lambda r, xs: _axis(r, xs, False)),
    Op("index", "{0}[{idx}]", 1, always, params=_index, weight=3),
    Op("advanced_index", "{0}[{idx}]", 1, always, params=_advanced_index, weight=2),
    Op("take", "np.take({0}, [0, -1, 0], axis={a})", 1, in_tables(np.take),
       params=lambda r, xs: {"a": int(r.integers(np.ndim(xs[0])))} if np.ndim(xs[0]) and min(np.shape(xs[0])) else None),
    Op("broadcast_to", "np.broadcast_to({0}, (2,) + np.shape({0}))", 1, in_tables(np.broadcast_to)),
    Op("concatenate", "np.concatenate([{0}, {1}], axis={a})", 2, in_tables(np.concatenate),
       params=lambda r, xs: {"a": [0, -1, None][r.integers(3)]}),
    Op("stack", "np.stack([{0}, {1}], axis={a})", 2, in_tables(np.stack),
       params=lambda r, xs: {"a": [0, -1][r.integers(2)]}),
    Op("zeros_like", "np.zeros_like({0})", 1, in_tables(np.zeros_like), weight=0.3),
    Op("full_like", "np.full_like({0}, 3)", 1, in_tables(np.full_like), weight=0.3),
    Op("copy", "{0}.copy()", 1, has_method("copy"), weight=0.5),
    # ---- the wider surface (numpy_reductions, numpy_shape, numpy_elementwise)
    Op("cumsum_axis", "np.cumsum({0}, axis={axis})", 1, in_tables(np.cumsum),
       params=lambda r, xs: _axis(r, xs, False), weight=0.3),
    Op("cumprod", "np.cumprod({0}, axis={axis})", 1, in_tables(np.cumprod),
       params=lambda r, xs: _axis(r, xs, False), weight=0.3),
    Op("nancumsum", "np.nancumsum({0})", 1, in_tables(np.nancumsum), weight=0.3),
    Op(".cumsum", "{0}.cumsum()", 1, has_method("cumsum"), weight=0.3),
    Op(".prod", "{0}.prod(axis={axis}, keepdims={kd})", 1, has_method("prod"), SUM, _axis, weight=0.3),
    Op("all", "np.all({0}, axis={axis}, keepdims={kd})", 1, in_tables(np.all), params=_axis, smooth=False,
       jumps=True, weight=0.3),
    Op(".any", "{0}.any(axis={axis})", 1, has_method("any"), params=lambda r, xs: _axis(r, xs, False),
       smooth=False, jumps=True, weight=0.3),
    Op("count_nonzero", "np.count_nonzero({0}, axis={axis})", 1, in_tables(np.count_nonzero),
       params=lambda r, xs: _axis(r, xs, False), smooth=False, jumps=True, weight=0.3),
    Op("ptp", "np.ptp({0}, axis={axis})", 1, in_tables(np.ptp), params=lambda r, xs: _axis(r, xs, False),
       smooth=False, weight=0.3),
    Op("average", "np.average({0}, axis={axis})", 1, in_tables(np.average), SUM,
       lambda r, xs: _axis(r, xs, False), magnitude="np.mean({0}, axis={axis})", weight=0.3),
    Op("trace", "np.trace({0})", 1, in_tables(np.trace), SUM, weight=0.3),
    Op("diff", "np.diff({0}, axis={axis})", 1, in_tables(np.diff), params=lambda r, xs: _axis(r, xs, False, False),
       weight=0.3),
    Op("nansum", "np.nansum({0}, axis={axis}, keepdims={kd})", 1, in_tables(np.nansum), SUM, _axis,
       magnitude="np.nansum({0}, axis={axis}, keepdims={kd})", weight=0.3),
    Op("nanmean", "np.nanmean({0}, axis={axis})", 1, in_tables(np.nanmean), SUM, lambda r, xs: _axis(r, xs, False),
       magnitude="np.nanmean({0}, axis={axis})", weight=0.3),
    Op("nanmax", "np.nanmax({0}, axis={axis})", 1, in_tables(np.nanmax), params=lambda r, xs: _axis(r, xs, False),
       smooth=False, weight=0.3),
    Op("nanvar", "np.nanvar({0})", 1, in_tables(np.nanvar), SUM, magnitude="np.nanmean(np.square({0})) * 4",
       weight=0.3),
    Op("sum_where", "np.sum({0}, where={0} > 0, initial=1)", 1, in_tables(np.sum), SUM,
       magnitude="np.sum({0}) + 1", weight=0.3, jumps=True),
    Op("max_initial", "np.max({0}, initial=0)", 1, in_tables(np.max), smooth=False, weight=0.3,
       undefined=lambda xs, p, r: _signed_zero_ties([np.append(np.ravel(xs[0]), 0.0)], p, r)),
    Op("hstack", "np.hstack([{0}, {1}])", 2, in_tables(np.hstack), weight=0.3),
    Op("vstack", "np.vstack([{0}, {1}])", 2, in_tables(np.vstack), weight=0.3),
    Op("append", "np.append({0}, {1})", 2, in_tables(np.append), weight=0.3),
    Op("tile", "np.tile({0}, (2, 1))", 1, in_tables(np.tile), weight=0.3),
    Op("repeat", "np.repeat({0}, 2, axis={axis})", 1, in_tables(np.repeat), params=lambda r, xs: _axis(r, xs, False),
       weight=0.3),
    Op(".repeat", "{0}.repeat(3)", 1, has_method("repeat"), weight=0.3),
    Op("roll", "np.roll({0}, {a}, axis={b})", 1, in_tables(np.roll), params=_two_axes, weight=0.3),
    Op("rot90", "np.rot90({0}, {a})", 1, in_tables(np.rot90), params=_two_axes, weight=0.3),
    Op("pad", "np.pad({0}, 1, mode={mode!r})", 1, in_tables(np.pad), weight=0.5,
       params=lambda r, xs: {"mode": ["constant", "edge", "reflect", "symmetric", "wrap"][r.integers(5)]}),
    Op("diag", "np.diag({0}, {a})", 1, in_tables(np.diag), params=_two_axes, weight=0.3),
    Op(".diagonal", "{0}.diagonal()", 1, has_method("diagonal"), weight=0.3),
    Op("tril", "np.tril({0}, {a})", 1, in_tables(np.tril), params=_two_axes, weight=0.3),
    Op("triu", "np.triu({0}, {a})", 1, in_tables(np.triu), params=_two_axes, weight=0.3),
    Op("kron", "np.kron({0}, {1})", 2, in_tables(np.kron), weight=0.2),
    Op("isinf", "np.isinf({0})", 1, in_tables(np.isinf), smooth=False, weight=0.3),
    Op("isclose", "np.isclose({0}, {1})", 2, in_tables(np.isclose), smooth=False, jumps=True, weight=0.3),
    Op("round", "np.round({0}, {k})", 1, in_tables(np.round), smooth=False, jumps=True, weight=0.3,
       params=lambda r, xs: {"k": [0, 1, 2, -1][r.integers(4)]}),
    Op(".round", "{0}.round()", 1, has_method("round"), smooth=False, jumps=True, weight=0.3),
    Op("deg2rad", "np.deg2rad({0})", 1, in_tables(np.deg2rad), weight=0.2),
    Op("rad2deg", "np.rad2deg({0})", 1, in_tables(np.rad2deg), weight=0.2),
    Op("heaviside", "np.heaviside({0}, {1})", 2, in_tables(np.heaviside), smooth=False, jumps=True, weight=0.3),
    Op("nan_to_num", "np.nan_to_num({0})", 1, in_tables(np.nan_to_num), smooth=False, weight=0.3),
    Op("sinc", "np.sinc({0})", 1, in_tables(np.sinc), accuracy="sin", weight=0.3, period=2.0),
    Op("logaddexp2", "np.logaddexp2({0}, {1})", 2, in_tables(np.logaddexp2), accuracy="logaddexp",
       magnitude="np.maximum({0}, {1})", weight=0.3),
    Op("maximum.accumulate", "np.maximum.accumulate({0}, axis={axis})", 1, in_tables(np.maximum),
       params=lambda r, xs: _axis(r, xs, False, False), smooth=False, weight=0.3),
    Op("add.accumulate", "np.add.accumulate({0})", 1, in_tables(np.add), SUM, magnitude="np.add.accumulate({0})",
       weight=0.3),
    Op("multiply.reduce", "np.multiply.reduce({0})", 1, in_tables(np.multiply), SUM, weight=0.3),
    Op("trapezoid", "np.trapezoid({0})", 1, in_tables(np.trapezoid), SUM, magnitude="np.trapezoid({0})", weight=0.3),
    Op("convolve", "np.convolve({0}, {1}, mode={mode!r})", 2, in_tables(np.convolve), SUM, weight=0.3,
       params=lambda r, xs: {"mode": ["full", "same", "valid"][r.integers(3)]}, may_raise=_two_long_sequences),
    Op("correlate", "np.correlate({0}, {1})", 2, in_tables(np.correlate), SUM, weight=0.3,
       may_raise=_two_long_sequences),
    # jitgrad.nn's window primitives (NumPy's answer: the same call on arrays, their NumPy references)
    Op("nn.reduce_window_max", "__import__('jitgrad').nn.reduce_window({0}, 'max', {window}, {strides}, {padding})",
       1, always, params=_window, smooth=False, kinds="f", weight=0.3),
    Op("nn.reduce_window_sum", "__import__('jitgrad').nn.reduce_window({0}, 'sum', {window}, {strides}, {padding})",
       1, always, SUM, params=_window, kinds="f", weight=0.3),
    Op("nn.conv_general_dilated",
       "__import__('jitgrad').nn.conv_general_dilated({0}[None, None], np.linspace(-1, 1, {taps}).reshape("
       "(1, 1) + {window}).astype({0}.dtype), {strides}, {padding}, {lhs_dilation}, {rhs_dilation})[0, 0]",
       1, always, SUM, params=_conv, kinds="f", weight=0.3,
       # Σ|x||w|: the taps have both signs (seed 20261206 program 737: a sum of 88 that cancels to 0.92)
       magnitude="__import__('jitgrad').nn.conv_general_dilated({0}[None, None], np.abs(np.linspace(-1, 1, {taps}))"
                 ".reshape((1, 1) + {window}).astype({0}.dtype), {strides}, {padding}, {lhs_dilation}, "
                 "{rhs_dilation})[0, 0]"),
    # the NumPy idioms passes/nn_idioms.py compiles to the nn primitives
    Op("sliding_window_view+tensordot",
       "np.tensordot(np.lib.stride_tricks.sliding_window_view(np.atleast_1d({0}), {window}, axis={axes})[{index}], "
       "np.linspace(-1, 1, {taps}).reshape({window}).astype({0}.dtype), axes={k})", 1, always, SUM,
       params=_window_view_contraction, kinds="fi", weight=0.3,
       magnitude="np.tensordot(np.lib.stride_tricks.sliding_window_view(np.atleast_1d({0}), {window}, axis={axes})"
                 "[{index}], np.abs(np.linspace(-1, 1, {taps})).reshape({window}).astype({0}.dtype), axes={k})"),
    Op("pad+shifted slices", "(lambda xp: sum(np.tanh(np.ravel({0})[({k} * i + j) % {size}]) * xp[..., i:i + {h}, "
       "j:j + {w}] for i in range({k}) for j in range({k})))(np.pad(np.atleast_2d({0}), {pads}))", 1, always, SUM,
       params=_shifted_slices, kinds="f", weight=0.3),
    Op("reshape+max pooling", "np.max(np.reshape(np.atleast_1d({0}), {split}), axis={axes})", 1, always,
       params=_pool_split, smooth=False, kinds="f", weight=0.3),
    Op("reshape+mean pooling", "np.mean(np.reshape(np.atleast_1d({0}), {split}), axis={axes})", 1, always, SUM,
       params=_pool_split, kinds="f", weight=0.3),
    # jitgrad's control flow (NumPy's answer: the same call on arrays runs the Python loop or branch)
    Op("jitgrad.scan", "__import__('jitgrad').scan(lambda c, x: (c + x, c * x), np.atleast_1d({0})[:1].sum(0) * 0, "
       "np.atleast_1d({0}))[1]", 1, always, kinds="fi", weight=0.3),
    Op("jitgrad.fori_loop", "__import__('jitgrad').fori_loop(0, 3, lambda i, v: v * 0.5 + i, {0})", 1, always,
       kinds="f", weight=0.3, may_raise=_bfloat16_carry),
    Op("jitgrad.fori_loop traced", "__import__('jitgrad').fori_loop(0, ({0} > 0).sum() % 5, lambda i, v: v * 0.5 + "
       "np.sin(v) * 0.25, {0})", 1, always, "sin", kinds="f", weight=0.3, may_raise=_bfloat16_carry),
    Op("jitgrad.while_loop", "__import__('jitgrad').while_loop(lambda s: (np.abs(s[0]) > 1).any() & (s[1] < 60), "
       "lambda s: (s[0] * 0.5, s[1] + 1), ({0}, 0))[0]", 1, always, kinds="f", jumps=True, weight=0.3,
       may_raise=_bfloat16_carry),
    Op("jitgrad.cond", "__import__('jitgrad').cond(({0} > 0).sum() > {0}.size // 2, lambda v: v * 2.0, "
       "lambda v: v - 1.0, {0})", 1, always, kinds="fiu", jumps=True, weight=0.3),
    Op("jitgrad.switch", "__import__('jitgrad').switch(({0} > 0).sum(), [lambda v: v + 1, lambda v: v * 2, "
       "lambda v: v - v * 3], {0})", 1, always, kinds="fi", jumps=True, weight=0.3),
    Op("gradient", "np.gradient({0}, axis={axis})", 1, in_tables(np.gradient), weight=0.3,
       params=lambda r, xs: _axis(r, xs, False, False)),
    Op("array_split", "np.array_split({0}, 2, axis={axis})[0]", 1, in_tables(np.array_split), weight=0.3,
       params=lambda r, xs: _axis(r, xs, False, False)),
    Op("rollaxis", "np.rollaxis({0}, {a})", 1, in_tables(np.rollaxis), params=_two_axes, weight=0.2),
    Op("select", "np.select([{0} > 0, {1} < 0], [{0}, {1}], 2)", 2, in_tables(np.select), weight=0.3,
       smooth=False, jumps=True),
    Op("fix", "np.fix({0})", 1, in_tables(np.fix), smooth=False, jumps=True, weight=0.3),
    Op("polyval", "np.polyval([1.5, -2.0, 0.5], {0})", 1, in_tables(np.polyval), SUM, weight=0.3,
       magnitude="np.polyval([1.5, 2.0, 0.5], {0})"),
    Op("vander", "np.vander({0}, 3)", 1, in_tables(np.vander), SUM, weight=0.2),
    Op("delete", "np.delete({0}, [0, -1], axis={axis})", 1, in_tables(np.delete), weight=0.2,
       params=lambda r, xs: _axis(r, xs, False)),
    # ---- numpy_extra (compositions on traced arrays) and scipy.special (scipy_special)
    Op("vecdot", "np.vecdot({0}, {0})", 1, in_tables(np.vecdot), SUM, weight=0.2),
    Op("einsum_ellipsis", "np.einsum('i...,i...->...', {0}, {0})", 1, in_tables(np.einsum), SUM, weight=0.2,
       may_raise=_half_float),
    Op("block", "np.block([[{0}, {0}]])", 1, in_tables(np.block), weight=0.2),
    Op("insert", "np.insert({0}, 1, 2)", 1, in_tables(np.insert), weight=0.2),
    Op("piecewise", "np.piecewise({0}, [{0} > 0], [lambda t: t * 2, -1])", 1, in_tables(np.piecewise), weight=0.2,
       smooth=False, jumps=True),
    Op("compress", "np.compress([True, False, True], {0})", 1, in_tables(np.compress), weight=0.2),
    Op("cov", "np.cov({0})", 1, in_tables(np.cov), SUM, magnitude="np.cov({0}) * 0 + np.max({0}, initial=0) ** 2 * 8",
       kinds="f", weight=0.2),
    Op("histogram", "np.histogram({0}, bins=3, range=(-1, 1))[0]", 1, in_tables(np.histogram), weight=0.2,
       smooth=False, jumps=True),
    Op("bincount", "np.bincount([0, 2, 2], weights=np.ravel({0})[:3], minlength=4)", 1, in_tables(np.bincount),
       SUM, magnitude="np.bincount([0, 2, 2], weights=np.ravel({0})[:3], minlength=4)", weight=0.2),
    Op("polyder", "np.polyder(np.ravel({0}))", 1, in_tables(np.polyder), weight=0.2),
    Op("polyint", "np.polyint(np.ravel({0}))", 1, in_tables(np.polyint), weight=0.2),
    Op("polyadd", "np.polyadd(np.ravel({0}), np.ravel({1}))", 2, in_tables(np.polyadd), weight=0.2),
    Op("polymul", "np.polymul(np.ravel({0})[:4] ** 2 + 1, [1.0, -2.0])", 1, in_tables(np.polymul), SUM,
       magnitude="np.polymul(np.ravel({0})[:4] ** 2 + 1, [1.0, 2.0])", weight=0.2),
    Op("i0", "np.i0({0})", 1, in_tables(np.i0), "i0", weight=0.2),
    Op("modf", "np.modf({0})[0]", 1, in_tables(np.modf), smooth=False, jumps=True, weight=0.2, period=1.0),
    Op("frexp", "np.frexp({0})[0]", 1, in_tables(np.frexp), smooth=False, jumps=True, weight=0.2),
    Op("ldexp", "np.ldexp({0}, 3)", 1, in_tables(np.ldexp), weight=0.2),
    Op("copysign", "np.copysign({0}, -2.0)", 1, in_tables(np.copysign), smooth=False, weight=0.2),
    Op("copysign_traced", "np.copysign({0}, {1})", 2, in_tables(np.copysign), smooth=False, weight=0.2,
       undefined=lambda xs, p, r: _computed_nan_sign(xs[1], r)),
    Op("signbit", "np.signbit({0})", 1, in_tables(np.signbit), smooth=False, weight=0.2,
       undefined=lambda xs, p, r: _computed_nan_sign(xs[0], r)),
    Op("array_of_traced", "np.array([np.ravel({0})[:1], [2]])", 1, always, weight=0.2),
    Op("full_traced", "np.full((2,), np.ravel({0})[:1])", 1, always, weight=0.2),
    Op("sc.erf", "__import__('scipy.special').special.erf({0})", 1, always, "erf", weight=0.2),
    Op("sc.erfc", "__import__('scipy.special').special.erfc({0})", 1, always, "erfc", weight=0.2),
    Op("sc.ndtr", "__import__('scipy.special').special.ndtr({0})", 1, always, "ndtr", weight=0.2),
    Op("sc.log_ndtr", "__import__('scipy.special').special.log_ndtr({0})", 1, always, "log_ndtr", weight=0.2),
    Op("sc.expit", "__import__('scipy.special').special.expit({0})", 1, always, "expit", weight=0.2),
    Op("sc.logit", "__import__('scipy.special').special.logit({0})", 1, always, "logit", weight=0.2),
    Op("sc.entr", "__import__('scipy.special').special.entr({0})", 1, always, "entr", weight=0.2, smooth=False),
    Op("sc.xlogy", "__import__('scipy.special').special.xlogy({0}, {1})", 2, always, "xlogy", weight=0.2,
       smooth=False),
    Op("sc.gammaln", "__import__('scipy.special').special.gammaln({0})", 1, always, "gammaln", weight=0.2,
       smooth=False, undefined=_gamma_family_undefined),
    Op("sc.digamma", "__import__('scipy.special').special.digamma({0})", 1, always, "digamma", weight=0.2,
       smooth=False, undefined=_gamma_family_undefined, params=lambda r, xs: {"negative_unreliable": True}),
    Op("sc.polygamma", "__import__('scipy.special').special.polygamma({n}, {0})", 1, always, "polygamma", weight=0.2,
       smooth=False, undefined=_gamma_family_undefined, may_hang=_far_negative_non_integers,
       params=lambda r, xs: {"n": int(r.integers(1, 4)), "negative_unreliable": True}),
    Op("sc.zeta", "__import__('scipy.special').special.zeta({s}, np.abs({0}) + 0.25)", 1, always, "zeta", weight=0.2,
       params=lambda r, xs: {"s": [1.5, 2.0, 3.0, 4.5][r.integers(4)]}),
    # ---- in-place writers on a copy (numpy_in_place; views and aliases see the writes)
    Op("sort_method", "(lambda a: (a.T, a.sort(axis=-1))[0])(np.copy({0}))", 1, always, weight=0.3,
       smooth=False, undefined=_bfloat16_nan_order, params=_in_place()),
    Op("sort_view", "(lambda a: (a[..., ::-1].sort(axis=-1), a)[1])(np.copy({0}))", 1, always, weight=0.2,
       smooth=False, undefined=_bfloat16_nan_order, params=_in_place()),
    Op("put", "(lambda a: (a.put([0, 7, -9, 0] if {mode!r} != 'raise' else [0, -1, 0], np.ravel(a)[::-1][:3], "
       "mode={mode!r}), a)[1])(np.copy({0}))", 1, always, weight=0.3, params=_in_place()),
    Op("putmask", "(lambda a: (np.putmask(a, a > 0, np.ravel(a)[::-1][:3]), a)[1])(np.copy({0}))", 1, always,
       weight=0.2, smooth=False, jumps=True, params=_in_place()),
    Op("put_along_axis", "(lambda a: (np.put_along_axis(a, np.argsort(a, axis=-1, kind='stable')[..., :1], "
       "np.ravel(a)[:1], axis=-1), a)[1])(np.copy({0}))", 1, always, weight=0.2, smooth=False, jumps=True,
       undefined=_bfloat16_nan_order, params=_in_place()),
    Op("fill_diagonal", "(lambda a: (np.fill_diagonal(a, np.ravel(a)[::-1][:2], wrap=True), a)[1])(np.copy({0}))",
       1, always, weight=0.2, params=_in_place(two_d=True)),
    Op("resize_method", "(lambda a: (a.resize((3, 2), refcheck=False), a)[1])(np.copy(np.ravel({0})))", 1, always,
       weight=0.2, params=_in_place()),
    # ---- sorting and order statistics (numpy_sorting; sort/argsort and gather primitives)
    Op("sort", "np.sort({0}, axis={axis})", 1, in_tables(np.sort), params=lambda r, xs: _axis(r, xs, False),
       smooth=False, undefined=_bfloat16_nan_order, weight=0.4),
    Op("argsort", "np.argsort({0}, axis={axis}, kind='stable')", 1, in_tables(np.argsort),
       params=lambda r, xs: _axis(r, xs, False), smooth=False, jumps=True, undefined=_bfloat16_nan_order, weight=0.3),
    Op("take_along_argsort", "np.take_along_axis({0}, np.argsort({0}, axis=-1, kind='stable'), axis=-1)", 1,
       in_tables(np.take_along_axis), smooth=False, undefined=_bfloat16_nan_order, weight=0.3,
       params=lambda r, xs: {} if np.ndim(xs[0]) else None),
    Op("median", "np.median({0}, axis={axis})", 1, in_tables(np.median), params=lambda r, xs: _axis(r, xs, False),
       smooth=False, weight=0.3, may_raise=_bfloat16_selection),
    Op("nanmedian", "np.nanmedian({0}, axis={axis})", 1, in_tables(np.nanmedian),
       params=lambda r, xs: _axis(r, xs, False), smooth=False, weight=0.3, may_raise=_bfloat16_selection),
    Op("percentile", "np.percentile({0}, {q}, axis={axis}, method={m!r})", 1, in_tables(np.percentile),
       smooth=False, weight=0.3, may_raise=_bfloat16_selection, params=lambda r, xs: {**(_axis(r, xs, False) or {}), "q": [0, 12.5, 50, [30, 99]][r.integers(4)],
                                                        "m": ["linear", "lower", "nearest", "hazen", "inverted_cdf"][r.integers(5)]}),
    Op("nanquantile", "np.nanquantile({0}, [0.25, 0.5], axis={axis})", 1, in_tables(np.nanquantile), smooth=False,
       weight=0.3, params=lambda r, xs: _axis(r, xs, False), may_raise=_nanquantile_dtype_depends_on_data),
    Op("take_mode", "np.take({0}, [-7, 1, 9, -1], axis={a}, mode={mode!r})", 1, in_tables(np.take), weight=0.3,
       params=lambda r, xs: {"a": int(r.integers(np.ndim(xs[0]))), "mode": ["clip", "wrap"][r.integers(2)]}
       if np.ndim(xs[0]) and min(np.shape(xs[0])) else None),
    # traced indices (data-dependent, always in [-n, n)): the run-time bounds check and the
    # wrapping of negative ones (index_check) on reads, np.add.at and item assignment
    Op("take_traced_negative", "np.take(np.ravel({0}), np.argsort(np.ravel({0}), kind='stable')[::-1] - np.size({0}))",
       1, in_tables(np.take), smooth=False, undefined=_bfloat16_nan_order, weight=0.3),
    Op("add_at_traced", "(lambda a: (np.add.at(a, np.argsort(a, kind='stable')[:3] - 1, 1), a)[1])(np.copy(np.ravel({0})))",
       1, always, weight=0.2, undefined=_bfloat16_nan_order,
       params=lambda r, xs: {} if np.size(xs[0]) else None),
    Op("setitem_traced", "(lambda a: (a.__setitem__(np.argsort(a, kind='stable')[-2:] - np.size(a), 0), a)[1])"
       "(np.copy(np.ravel({0})))", 1, always, weight=0.2, undefined=_bfloat16_nan_order,
       params=lambda r, xs: {} if np.size(xs[0]) else None),
    Op("isin", "np.isin({0}, {1})", 2, in_tables(np.isin), smooth=False, jumps=True, weight=0.3,
       undefined=_bfloat16_nan_order),      # NumPy's isin sorts: with a bfloat16 NaN every answer may be False
    Op("choose", "np.choose(({0} > 0).astype(np.int8) + ({1} > 0), [{0}, {1}, {0} * 2])", 2, in_tables(np.choose),
       weight=0.3, jumps=True),
    Op("searchsorted", "np.searchsorted(np.sort(np.ravel({1})), {0}, side={side!r})", 2, in_tables(np.searchsorted),
       smooth=False, jumps=True, undefined=_bfloat16_nan_order, weight=0.3, may_raise=_search_compares_nan_unordered,
       params=lambda r, xs: {"side": ["left", "right"][r.integers(2)]}),
]
OPS_BY_NAME = {op.name: op for op in OPS}

# A second operand that is a view of the first: `x + x.T`, `e / e[:, :1]`. Each keeps or
# broadcasts to the first operand's shape for some shapes; NumPy discards the others.
SELF_VIEWS = [
    "{}.T", "{}.T", "{}[::-1]", "{}[::-1]", "{}[:1]", "{}[..., :1]", "{}[0]",
    "{}.T", "{}[::-1]", "{}[..., ::-1]", "np.flip({})", "{}[:1]", "{}[..., -1:]", "{}[1:2]", "{}[::2][:1]",
    "{}[..., ::-3][..., :1]", "{}.reshape(-1)[::-1].reshape(np.shape({}))", "{}.T.reshape(np.shape({}))",
    "np.swapaxes({}, 0, -1)", "{}.max(axis=-1, keepdims=True)", "{}.sum(axis=0, keepdims=True)",
    "np.concatenate([{}[1:], {}[:1]])", "{}[0]", "{}[-1, ...]", "{}.reshape(np.shape({})[::-1]).T",
]


def _view_for(view: str, value) -> str:
    """`view`, or a plain transpose where it would order complex values (`max`), which
    NumPy does lexicographically and jitgrad refuses, or reduce both signed zeros (see
    `_signed_zero_ties`). No extra random draw, so the rest of the program stream is
    unchanged."""
    if ".max(" in view and is_array(value) and (is_complex(np.asarray(value).dtype)
                                                or _holds_both_zeros(np.asarray(value))):
        return "{}.T"
    return view


# Python scalar literals (weak types under NEP 50).
LITERALS = ["2.5", "-1.5", "0.5", "3", "-2", "1", "0", "True", "False", "1e30", "7", "2**40", "-0.0", "1e-300"]


# --------------------------------------------------------------------------- programs

@dataclass(frozen=True)
class Literal:
    text: str


@dataclass(frozen=True)
class Stmt:
    op: Op
    args: tuple                   # value indices or Literals
    params: dict = field(default_factory=dict)
    views: tuple = ()             # per operand: a SELF_VIEWS template applied to it, or None

    def sums_in_views(self) -> bool:
        """Does an operand view sum (an inexact operation hidden in a view)?"""
        return any(v and "sum(" in v for v in self.views)

    def source(self, names: list[str]) -> str:
        texts = []
        for k, a in enumerate(self.args):
            text = a.text if isinstance(a, Literal) else names[a]
            view = self.views[k] if k < len(self.views) else None
            texts.append(view.replace("{}", text) if view else text)
        return self.op.template.format(*texts, **self.params)


@dataclass
class Program:
    """Inputs (concrete values), statements and outputs. Value k < len(inputs) is input
    k (`x{k}`), the others statement results (`v{k}`)."""

    inputs: list
    stmts: list[Stmt]
    outputs: list[int]
    label: str = ""
    origin: tuple | None = None   # (seed, index) of a generated program: `program_for(*origin)`

    def names(self) -> list[str]:
        n = len(self.inputs)
        return [f"x{k}" for k in range(n)] + [f"v{k}" for k in range(n, n + len(self.stmts))]

    def source(self, name: str = "program") -> str:
        names = self.names()
        lines = [f"def {name}({', '.join(names[:len(self.inputs)])}):"]
        n = len(self.inputs)
        for k, stmt in enumerate(self.stmts):
            lines.append(f"    {names[n + k]} = {stmt.source(names)}")
        lines.append(f"    return ({''.join(names[i] + ', ' for i in self.outputs)})")
        return "\n".join(lines) + "\n"

    def function(self) -> Callable:
        namespace = {"np": np}
        exec(compile(self.source(), f"<fuzz {self.label}>", "exec"), namespace)
        return namespace["program"]

    def reproducer(self) -> str:
        half = any(isinstance(x, np.ndarray) and x.dtype.kind == "V" for x in self.inputs)
        lines = ["import numpy as np, jitgrad" + (", ml_dtypes" if half else ""), self.source()]
        args = []
        for k, x in enumerate(self.inputs):
            text = _literal_source(x)
            if text is None and self.origin is not None:
                text = f"tests.fuzz.program_for{self.origin}.inputs[{k}]  # (import tests.fuzz)"
            lines.append(f"x{k} = {text if text is not None else '...  # ' + str(x.shape) + ' ' + str(x.dtype)}")
            args.append(f"x{k}")
        call = ", ".join(args)
        lines.append(f"print(jitgrad.jit(program)({call}))")
        lines.append(f"print(program({call}))")
        return "\n".join(lines)


def _literal_source(x) -> str | None:
    """Python source for a small input value (None for large arrays)."""
    if isinstance(x, (bool, int, float)):
        return repr(x)
    if isinstance(x, np.generic):
        return f"np.{x.dtype.name}({x.item()!r})"
    if x.size <= 40:
        with np.printoptions(precision=17, threshold=100, floatmode="unique"):
            body = np.array2string(x, separator=", ").replace("nan", "np.nan").replace("inf", "np.inf")
        return f"np.array({body}, dtype={_dtype_source(x.dtype)}).reshape({x.shape})"
    return None


# --------------------------------------------------------------------------- inputs

def shape_menu(rng: np.random.Generator) -> tuple:
    """0-d, small, zero-size, odd and (rarely) above the parallel-loop threshold."""
    r = rng.random()
    if r < 0.08:
        return ()
    if r < 0.14:
        return [(0,), (3, 0), (0, 4), (2, 0, 3)][rng.integers(4)]
    if r < 0.17:
        side = math.isqrt(PARALLEL_MIN_WORK) + 2          # one loop over more elements than the threshold
        return (side, side)
    if r < 0.19:
        return (PARALLEL_MIN_WORK // 16 + 37,)            # past the threshold once a few ops are fused
    n = int(rng.integers(2, 6)) if rng.random() < 0.9 else 1
    shapes = [(n,), (n, n), (n, n), (n, n + 1), (1, n), (n, 1), (2, n, n), (n, 1, 3), (7,), (17, 3), (n, n, n)]
    return shapes[rng.integers(len(shapes))]


def random_array(rng: np.random.Generator, shape, dtype, special: bool = True) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -100), min(info.max, 100)
        x = rng.integers(int(lo), int(hi) + 1, size=shape, dtype=np.int64).astype(dtype)
        if special and x.size and rng.random() < 0.3:
            flat = x.reshape(-1)
            picks = rng.integers(0, flat.size, size=max(1, flat.size // 8))
            flat[picks] = dtype.type([info.min, info.max, 0, -1 if info.min < 0 else 1][rng.integers(4)])
        return x
    scale = [1.0, 3.0, 0.1, 30.0][rng.integers(4)]
    x = (rng.standard_normal(shape) * scale).astype(np.float64)
    if special and x.size and rng.random() < 0.25:
        flat = x.reshape(-1)
        picks = rng.integers(0, flat.size, size=max(1, flat.size // 10))
        flat[picks] = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-310, 1e300, 2.0, 1.0, -1.0])[
            rng.integers(0, 10, size=picks.size)]
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def random_input(rng: np.random.Generator, dtypes: list, special: bool = True):
    """An array, a NumPy scalar or a Python scalar argument."""
    r = rng.random()
    if r < 0.08:
        return [2.5, -1.0, 3, 0, True, 1e-3][rng.integers(6)]
    dtype = dtypes[rng.integers(len(dtypes))]
    if rng.random() < 0.45:
        dtype = np.dtype(np.float64)
    if r < 0.13:
        return random_array(rng, (), dtype, special)[()]
    return random_array(rng, shape_menu(rng), dtype, special)


# --------------------------------------------------------------------------- generation

MAX_ELEMENTS = 3 * PARALLEL_MIN_WORK


def is_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic))


def generate(rng: np.random.Generator, label: str = "", n_stmts: int | None = None,
             smooth_only: bool = False) -> Program:
    """A random program over 1-3 random inputs; each proposed statement is run by NumPy
    and kept only if NumPy accepts it and its result has a dtype jitgrad declares."""
    dtypes = supported_dtypes()
    if smooth_only:
        inputs = [random_array(rng, shape_menu_small(rng), np.float64, special=False)
                  for _ in range(int(rng.integers(1, 3)))]
    else:
        inputs = [random_input(rng, dtypes) for _ in range(int(rng.integers(1, 4)))]
        if not any(is_array(x) for x in inputs):
            inputs.append(random_array(rng, shape_menu(rng), np.float64))
    values = _Values(inputs)
    ops = [op for op in OPS if not smooth_only or (op.smooth and op.accuracy != SUM or op.name in ("sum", "mean"))]
    weights = np.array([op.weight * (1.0 if op.supported() else 0.1) for op in ops])
    stmts: list[Stmt] = []
    retired: set[int] = set()
    target = n_stmts if n_stmts is not None else int(rng.integers(2, 9))
    attempts = 0
    while len(stmts) < target and attempts < target * 12:
        attempts += 1
        op = ops[rng.choice(len(ops), p=weights / weights.sum())]
        stmt = _propose(rng, op, values, retired)
        if stmt is None:
            continue
        if op.max_operand_size is not None and any(
                isinstance(a, int) and np.size(values[a]) > op.max_operand_size for a in stmt.args):
            continue
        if _lapack_may_hang(stmt, values) or (op.may_hang is not None and op.may_hang(_operand_values(stmt, values))):
            continue
        result = run_stmt(stmt, values)
        if result is None or (smooth_only and not _finite_float(result)):
            continue
        if _contraction_work(stmt, values, result) > MAX_CONTRACTION_WORK:
            continue
        stmts.append(stmt)
        values.append(result)
        # A computed value read next to a view of itself and never again is the case where
        # a kernel may be tempted to overwrite it in place: make it common.
        for a, view in zip(stmt.args, stmt.views, strict=False):
            if view and isinstance(a, int) and a >= len(inputs) and rng.random() < 0.7:
                retired.add(a)
    n = len(inputs)
    used = {a for s in stmts for a in s.args if isinstance(a, int)}
    sinks = [n + k for k in range(len(stmts)) if n + k not in used]
    outputs = sinks[-3:] or [k for k in range(n) if is_array(inputs[k])][:1]
    return Program(inputs, stmts, outputs, label)


class _Values(list):
    """The values of a program being generated; the first `n_inputs` are its inputs."""

    def __init__(self, inputs):
        super().__init__(inputs)
        self.n_inputs = len(inputs)


def shape_menu_small(rng):
    shapes = [(), (3,), (2, 3), (3, 3), (2, 2, 2), (1, 4)]
    return shapes[rng.integers(len(shapes))]


def _finite_float(x) -> bool:
    a = np.asarray(x)
    return a.dtype == np.float64 and bool(np.all(np.isfinite(a))) and (
        a.size == 0 or float(np.max(np.abs(a))) < 1e6)


def _propose(rng, op: Op, values: list, retired=frozenset()) -> Stmt | None:
    arrays = [k for k, v in enumerate(values)
              if k not in retired and is_array(v) and kind(np.asarray(v).dtype) in op.kinds]
    if not arrays:
        return None
    recent = arrays[-4:]
    first = recent[rng.integers(len(recent))] if rng.random() < 0.7 else arrays[rng.integers(len(arrays))]
    computed = [k for k in arrays if not _is_input(k, values)]
    if computed and rng.random() < 0.4:
        first = computed[-1]
    args, views = [first], [None]
    for _ in range(op.arity - 1):
        r = rng.random()
        if r < 0.35:
            args.append(first)
            views.append(_view_for(SELF_VIEWS[rng.integers(len(SELF_VIEWS))], values[first]))
        elif r < 0.5:
            args.append(Literal(LITERALS[rng.integers(len(LITERALS))]))
            views.append(None)
        else:
            live = [k for k in range(len(values)) if k not in retired and not (
                "c" not in op.kinds and is_array(values[k]) and is_complex(np.asarray(values[k]).dtype))]
            args.append(live[rng.integers(len(live))])
            views.append(None)
    if rng.random() < 0.5 and op.arity > 1:            # literal or view on either side
        args.reverse()
        views.reverse()
    if op.arity == 1 and rng.random() < 0.15:
        views[0] = _view_for(SELF_VIEWS[rng.integers(len(SELF_VIEWS))], values[first])
    stmt = Stmt(op, tuple(args), {}, tuple(views))
    if op.params is None:
        return stmt
    try:
        operands = _operand_values(stmt, values)
    except Exception:
        return None
    params = op.params(rng, operands)
    return None if params is None else replace(stmt, params=params)


def _is_input(k: int, values: list) -> bool:
    return k < getattr(values, "n_inputs", 0)


def _operand_value(a, values):
    return eval(a.text, {"np": np}) if isinstance(a, Literal) else values[a]



def _operand_values(stmt: Stmt, values: list) -> list:
    """The statement's operands as NumPy sees them (views applied)."""
    out = []
    for k, a in enumerate(stmt.args):
        x = _operand_value(a, values)
        view = stmt.views[k] if k < len(stmt.views) else None
        if view:
            with np.errstate(all="ignore"):
                x = eval(view.replace("{}", "_x"), {"np": np}, {"_x": x})
        out.append(x)
    return out


def run_stmt(stmt: Stmt, values: list):
    """NumPy's result for one statement, or None when NumPy rejects it or jitgrad could
    not represent it (a dtype it does not declare, a Python object, too many elements)."""
    names = [f"_{k}" for k in range(len(values))]
    env = dict(zip(names, values, strict=True))
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = eval(stmt.source(names), {"np": np}, env)
    except Exception:                                  # NumPy refuses: not a valid program
        return None
    if not is_array(result) or np.asarray(result).dtype not in supported_dtypes():
        return None
    if any(isinstance(v, np.generic) for v in values):
        # NumPy scalars are laxer than 0-d arrays (np.float64(1).sum(axis=0) works); jitgrad
        # traces 0-d arrays, so a statement must also be valid on those.
        env = {k: np.asarray(v) if isinstance(v, np.generic) else v for k, v in env.items()}
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                as_arrays = eval(stmt.source(names), {"np": np}, env)
        except Exception:
            return None
        if np.asarray(as_arrays).dtype != np.asarray(result).dtype:
            return None                                 # (np.bool_(1) ** 2 is int64, np.array(True) ** 2 int8)
    if np.size(result) > MAX_ELEMENTS:
        return None
    if not all(isinstance(a, Literal) or is_array(values[a]) for a in stmt.args[:1]) and not any(
            isinstance(a, int) and is_array(values[a]) for a in stmt.args):
        return None                                    # Python-scalar-only arithmetic is Python's
    return result


# --------------------------------------------------------------------------- the NumPy oracle with tolerances

@dataclass
class Reference:
    outputs: list                 # NumPy's results
    tolerance: list               # per output: None (bit-exact) or an absolute bound per element
    unstable: list                # per output: mask of elements not compared, or None
    exact: bool


ILL_CONDITIONED = 0.05
"""Output elements that the documented error bounds may move by more than this fraction
of their value are not determined by the program to any useful precision: not compared."""


MOVES = ("up one ulp", "down one ulp", "uniform", "full")
"""How each perturbed run moves inexact results: every element one ulp up, every element
one ulp down (a chaotic function such as tan of a huge argument shows its sensitivity to
the last bit on both sides), by a uniform random fraction of the bound, or by the whole
bound in a random direction per element.

Moves of several statements may cancel (a decreasing function such as x ** -2 after an
inexact one turns "every result up" into opposite moves), so the reference also moves
each inexact statement alone by its whole bound and adds up the output moves (the
linearized worst case); the tolerance uses the larger of the two spreads."""

ALONE = "alone, whole bound up"
"""The move of the one statement perturbed in a linearized-worst-case run."""

OPPOSITE = "whole bound, down where the position has bit "
"""Runs after MOVES that move two elements of one result in opposite directions: every
element moves by its whole bound, up where bit b of its position is 0 and down where it
is 1, one run per bit. A difference of two elements of one inexact result (np.ptp,
np.diff, x - x.T, x - x.mean()) gets its worst case in the run of a bit where their
positions differ, a case the runs moving every element alike cancel exactly and the
random signs find only by chance. Up to OPPOSITE_BITS runs (each is a run of the whole
program): the position is the flat index for results of at most 2^OPPOSITE_BITS elements,
where every pair of elements is separated, and a multiplicative hash of it for larger
ones, where a pair is left to the other runs with probability 2^-OPPOSITE_BITS.

OPPOSITE_BITS covers the fuzzer's largest arrays (1026 x 1026 < 2^21 elements): with 8 bits
and hashing, about one pair in 8,000 of a million-element `sin(x) - sin(x).T` was left to
the random runs, which cancel with probability 1/32 (ulp-quantized moves), and 20 of its
elements were compared without their error bound (seed 1612 #31). The runs grow with
log2 of the largest inexact result only."""

OPPOSITE_BITS = 21


def _moves(program: Program, values: list, runs: int) -> list[str]:
    """The perturbed runs of `numpy_reference`: `runs` of MOVES, then the OPPOSITE runs."""
    n = len(program.inputs)
    sizes = [np.size(values[n + k]) for k, stmt in enumerate(program.stmts)
             if stmt.op.accuracy_of(stmt.params) != EXACT or stmt.sums_in_views()]
    bits = min((max(sizes, default=1) - 1).bit_length(), OPPOSITE_BITS)
    return [MOVES[k % len(MOVES)] for k in range(runs)] + [f"{OPPOSITE}{b}" for b in range(bits)]


def _opposite_signs(shape, bit: int) -> np.ndarray:
    """+1 or -1 per element by bit `bit` of its position (see OPPOSITE)."""
    position = np.arange(math.prod(shape), dtype=np.uint64)
    if position.size > 1 << OPPOSITE_BITS:          # Fibonacci hashing: the top bits of i * 2^64/phi
        position = (position * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - OPPOSITE_BITS)
    return np.where((position >> np.uint64(bit)) & np.uint64(1), -1.0, 1.0).reshape(shape)


def numpy_reference(program: Program, rng: np.random.Generator, runs: int = len(MOVES)) -> Reference:
    values = _evaluate(program, None)
    outputs = [np.asarray(values[i]) for i in program.outputs]
    inexact = any(stmt.op.accuracy_of(stmt.params) != EXACT or stmt.sums_in_views() for stmt in program.stmts)
    undefined = _undefined_masks(program, values)
    if not inexact and not undefined:
        return Reference(outputs, [None] * len(outputs), [None] * len(outputs), True)
    moves = _moves(program, values, runs)
    if inexact and any(stmt.op.jumps or stmt.op.period for stmt in program.stmts):
        # A jump (a comparison, a floor, a remainder) near an inexact operand may go either
        # way in an implementation within the bounds, and a periodic function of an operand
        # that moves by a good part of its period may come out anywhere in its range: such
        # elements become undefined.
        spreads = [_spread(values[i], np.asarray(values[i]), None)[0] for i in range(len(values))]
        for move in moves:
            noisy = _evaluate(program, (rng, undefined, move), exact=values)
            spreads = [np.maximum(s, _spread(v, np.asarray(alt), None)[0]) for s, v, alt in
                       zip(spreads, values, noisy, strict=True)]
        for masks in (_jump_masks(program, values, spreads), _periodic_masks(program, values, spreads)):
            for index, mask in masks.items():
                undefined[index] = undefined[index] | mask if index in undefined else mask
    spread = [np.zeros(o.shape) for o in outputs]
    unstable = [np.zeros(o.shape, bool) for o in outputs]
    for move in moves:
        noisy = _evaluate(program, (rng, undefined, move), exact=values)
        for k, i in enumerate(program.outputs):
            diff, changed = _spread(outputs[k], np.asarray(noisy[i]), outputs[k].dtype)
            spread[k] = np.maximum(spread[k], diff)
            unstable[k] |= changed
    inexact_values = [len(program.inputs) + k for k, stmt in enumerate(program.stmts)
                      if stmt.op.accuracy_of(stmt.params) != EXACT or stmt.sums_in_views()]
    if len(inexact_values) > 1:
        summed = [np.zeros(o.shape) for o in outputs]
        for index in inexact_values:
            noisy = _evaluate(program, (rng, undefined, ALONE), alone=index, exact=values)
            for k, i in enumerate(program.outputs):
                diff, changed = _spread(outputs[k], np.asarray(noisy[i]), outputs[k].dtype)
                summed[k] += diff
                unstable[k] |= changed
        spread = [np.maximum(s, t) for s, t in zip(spread, summed, strict=True)]
    tolerance = []
    for k, o in enumerate(outputs):
        inexact_kind = is_float(o.dtype) or is_complex(o.dtype)
        magnitude = np.abs(o).astype(np.float64) if inexact_kind else None     # complex: per component
        floor = 2 * ulp(magnitude, o.dtype) if inexact_kind else np.zeros(o.shape)
        tolerance.append(4 * spread[k] + floor)
        if inexact_kind:
            with np.errstate(all="ignore"):
                unstable[k] |= spread[k] > ILL_CONDITIONED * magnitude
    return Reference(outputs, tolerance, unstable, False)


def _spread(ref, alt: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """|alt - ref| per element (inf where one is not finite and they differ), and the
    elements that changed class (NaN, infinity, or any change of a non-float)."""
    ref = np.asarray(ref)
    if alt.shape != ref.shape:
        return np.full(ref.shape, np.inf), np.ones(ref.shape, bool)
    if is_complex(ref.dtype) or is_complex(alt.dtype):      # the larger of the two components' spreads
        (d_re, c_re), (d_im, c_im) = (_spread(np.asarray(part(ref)), np.asarray(part(alt)), None)
                                      for part in (np.real, np.imag))
        return np.maximum(d_re, d_im), c_re | c_im
    with np.errstate(all="ignore"):
        r64, a64 = ref.astype(np.float64), alt.astype(np.float64)
        finite = np.isfinite(r64) & np.isfinite(a64)
        same = (r64 == a64) | (np.isnan(r64) & np.isnan(a64))
        diff = np.where(finite, np.abs(a64 - r64), np.where(same, 0.0, np.inf))
    changed = ~finite & ~same
    if not is_float(ref.dtype):
        changed |= diff != 0
    return diff, changed


def _jump_masks(program: Program, values: list, spreads: list) -> dict:
    """For each statement whose op jumps, the elements whose result changes when its
    float operands move by 4 times their spread (each direction, each operand)."""
    masks = {}
    n = len(program.inputs)
    for k, stmt in enumerate(program.stmts):
        if not stmt.op.jumps:
            continue
        operands = _operand_values(stmt, values)
        spread_ops = []
        for j, a in enumerate(stmt.args):
            view = stmt.views[j] if j < len(stmt.views) else None
            sp = 0.0 if isinstance(a, Literal) else spreads[a]
            if view and not isinstance(a, Literal):
                with np.errstate(all="ignore"):
                    sp = eval(view.replace("{}", "_x"), {"np": np}, {"_x": np.asarray(sp, np.float64)})
            spread_ops.append(sp)
        ref = np.asarray(values[n + k])
        mask = np.zeros(ref.shape, bool)
        names = [f"_a{j}" for j in range(len(operands))]
        allowance = np.zeros(ref.shape)                 # how far the operands' moves carry the result
        for sp in spread_ops:
            sp = 4 * np.nan_to_num(np.asarray(sp, np.float64), posinf=np.inf)
            try:
                allowance = np.maximum(allowance, np.broadcast_to(sp, ref.shape))
            except ValueError:
                allowance = np.maximum(allowance, np.max(sp, initial=0.0))
        if is_float(ref.dtype):
            allowance = 1.5 * allowance + 2 * ulp(ref.astype(np.float64), ref.dtype)
            # An integral result (a floor, a floor division) moves only by jumps, and a jump
            # of 1 may be far smaller than the operand's move (a // b with b large).
            with np.errstate(all="ignore"):
                r64 = ref.astype(np.float64)
                allowance = np.where(np.isfinite(r64) & (r64 == np.floor(r64)), 0.0, allowance)
        for signs in ((1, 1, 1), (-1, -1, -1), (1, -1, 1), (-1, 1, -1)):
            moved = []
            for x, sp, sign in zip(operands, spread_ops, signs, strict=False):
                x_arr = np.asarray(x)
                if is_float(x_arr.dtype) and np.any(np.asarray(sp) > 0):
                    with np.errstate(all="ignore"):
                        shifted = (x_arr.astype(np.float64) + sign * 4 * np.asarray(sp, np.float64)).astype(x_arr.dtype)
                    moved.append(shifted)
                else:
                    moved.append(x)
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    alt = np.asarray(eval(stmt.op.template.format(*names, **stmt.params), {"np": np},
                                          dict(zip(names, moved, strict=True))))
            except Exception:
                mask[...] = True
                continue
            diff, changed = _spread(ref, alt, None)
            mask |= changed | (diff > allowance if is_float(ref.dtype) else diff > 0)
        if stmt.op.picks is not None:
            mask |= _near_ties(stmt, np.asarray(operands[0]), spread_ops[0], ref)
        if stmt.op.name == "argsort":
            mask |= _near_sort_ties(stmt, np.asarray(operands[0]), spread_ops[0], ref)
        if np.any(mask):
            masks[n + k] = mask
    return masks


def _periodic_masks(program: Program, values: list, spreads: list) -> dict:
    """For each statement of a periodic op (`Op.period`), the elements where a float
    operand's spread reaches a sixteenth of the period: 4 times that move (the tolerance's
    factor) spans a quarter period, over which the result can rise and fall again, so the
    largest change the perturbed runs see no longer bounds it (sin of a bfloat16 sum whose
    bound is thousands of radians came out with either sign)."""
    masks = {}
    n = len(program.inputs)
    for k, stmt in enumerate(program.stmts):
        if stmt.op.divisor_period:
            mask = _divisor_period_mask(stmt, values, spreads, np.shape(values[n + k]))
            if mask is not None and np.any(mask):
                masks[n + k] = mask
            continue
        if not stmt.op.period:
            continue
        ref = np.asarray(values[n + k])
        mask = np.zeros(ref.shape, bool)
        for j, a in enumerate(stmt.args):
            if isinstance(a, Literal) or not is_float(np.asarray(values[a]).dtype):
                continue
            far = _argument_spread(stmt, j, spreads) >= stmt.op.period / 16
            try:
                mask |= np.broadcast_to(far, ref.shape)
            except ValueError:
                mask |= bool(np.any(far))
        if np.any(mask):
            masks[n + k] = mask
    return masks


def _argument_spread(stmt: Stmt, j: int, spreads: list) -> np.ndarray:
    """The spread of the statement's argument j as the statement reads it (through its
    view, if any), NaN as infinite."""
    sp = np.asarray(spreads[stmt.args[j]], np.float64)
    view = stmt.views[j] if j < len(stmt.views) else None
    if view:
        with np.errstate(all="ignore"):
            sp = eval(view.replace("{}", "_x"), {"np": np}, {"_x": sp})
    return np.nan_to_num(np.asarray(sp, np.float64), nan=np.inf)


def _divisor_period_mask(stmt: Stmt, values: list, spreads: list, shape):
    """remainder(a, b) repeats with the period |b| in a, and moves |a / b| times as far as
    b does: where those moves reach a sixteenth of |b|, the perturbed runs can land on the
    same phase by chance and no longer bound the result (seed 20261208 program 3347: a
    float32 sum moved by ±16.1875, twelve periods of 1.349 to within 0.0004)."""
    operands = _operand_values(stmt, values)
    if len(operands) != 2 or not all(is_float(np.asarray(x).dtype) or np.asarray(x).dtype.kind in "iub"
                                     for x in operands):
        return None
    moves = [0.0 if isinstance(a, Literal) else _argument_spread(stmt, j, spreads) for j, a in enumerate(stmt.args)]
    with np.errstate(all="ignore"):
        a, b = (np.asarray(x, np.float64) for x in operands)
        reach = moves[0] + np.abs(a / b) * moves[1]
        far = ~(reach < np.abs(b) / 16)                   # NaN (b = 0, infinities) counts as far
        far &= (np.asarray(moves[0]) > 0) | (np.asarray(moves[1]) > 0)
    try:
        return np.broadcast_to(far, shape)
    except ValueError:
        return np.full(shape, bool(np.any(far)))


def _near_sort_ties(stmt: Stmt, x: np.ndarray, spread, order: np.ndarray) -> np.ndarray:
    """Positions of an argsort whose element and its neighbour in sorted order are within
    their error bounds of each other (|x_a - x_b| <= 4 (spread_a + spread_b)): an
    implementation within the bounds may order them either way (seed 31 program 325:
    NumPy's strided cbrt is 1 ulp from its contiguous one, and two neighbours swapped).
    Moving every element the same way, as the jump runs do, keeps such pairs in order."""
    mask = np.zeros(order.shape, bool)
    if not is_float(x.dtype) or x.size == 0 or order.ndim == 0:
        return mask
    axis = stmt.params.get("axis", -1)
    bound = 4 * np.nan_to_num(np.broadcast_to(np.asarray(spread, np.float64), x.shape), nan=np.inf, posinf=np.inf)
    if axis is None:                                     # np.argsort(axis=None) sorts the flattened array
        x, bound, axis = x.reshape(-1), bound.reshape(-1), -1
    x64 = np.moveaxis(x.astype(np.float64), axis, -1)
    bound = np.moveaxis(bound, axis, -1)
    idx = np.moveaxis(np.asarray(order), axis, -1)
    if idx.shape != x64.shape:
        return np.ones(order.shape, bool)
    values, bounds = np.take_along_axis(x64, idx, -1), np.take_along_axis(bound, idx, -1)
    with np.errstate(all="ignore"):
        close = (np.abs(np.diff(values, axis=-1)) <= bounds[..., 1:] + bounds[..., :-1]) & (
            bounds[..., 1:] + bounds[..., :-1] > 0)
    tied = np.zeros(values.shape, bool)
    tied[..., 1:] |= close
    tied[..., :-1] |= close
    return np.moveaxis(tied, -1, axis)


def _near_ties(stmt: Stmt, x: np.ndarray, spread, picked: np.ndarray) -> np.ndarray:
    """The elements of an argmax/argmin result whose winner has a rival within their error
    bounds: candidates j and w with |x_j - x_w| <= 4 (spread_j + spread_w) could come out
    in either order from an implementation within the bounds (a contraction's symmetric
    entries are not bit-identical in NumPy's BLAS). Exact candidates (no spread) tie
    exactly, and the first index wins: those are compared."""
    if not is_float(x.dtype) or x.size == 0:
        return np.zeros(picked.shape, bool)
    axis = stmt.params.get("axis")
    x64 = x.astype(np.float64)
    bound = 4 * np.nan_to_num(np.broadcast_to(np.asarray(spread, np.float64), x.shape), nan=np.inf, posinf=np.inf)
    if axis is None:
        x64, bound, axis = x64.reshape(-1), bound.reshape(-1), 0
    x64, bound = np.moveaxis(x64, axis, -1), np.moveaxis(bound, axis, -1)
    winner = np.asarray(picked).reshape(x64.shape[:-1] + (1,))
    x_w, bound_w = np.take_along_axis(x64, winner, -1), np.take_along_axis(bound, winner, -1)
    with np.errstate(all="ignore"):
        if stmt.op.picks == "max":
            reaches = x64 + bound >= x_w - bound_w
        else:
            reaches = x64 - bound <= x_w + bound_w
        rival = reaches & (bound + bound_w > 0) & (np.arange(x64.shape[-1]) != winner)
        rival &= ~np.isnan(x64) & ~np.isnan(x_w)
    return np.any(rival, axis=-1).reshape(picked.shape)


def _undefined_masks(program: Program, values: list) -> dict:
    masks = {}
    n = len(program.inputs)
    for k, stmt in enumerate(program.stmts):
        if stmt.op.undefined is None:
            continue
        mask = stmt.op.undefined(_operand_values(stmt, values), stmt.params, np.asarray(values[n + k]))
        if mask is not None and np.any(mask):
            masks[n + k] = np.broadcast_to(mask, np.shape(values[n + k]))
    return masks


def _evaluate(program: Program, noise, alone: int | None = None, exact: list | None = None) -> list:
    """All values of the program, run statement by statement; with `noise` = (rng,
    undefined masks, move), every inexact result is moved by its error bound (only value
    `alone`'s, when given) and undefined elements get arbitrary values.

    A statement NumPy refuses on moved operands (np.linalg.inv of a matrix the moves made
    singular) is not determined by the program within the bounds: given the unperturbed
    values `exact`, its result becomes NaN (the largest value for integers) everywhere, so
    every output depending on it changes class and is not compared."""
    values = list(program.inputs)
    n = len(program.inputs)
    names = [f"_{k}" for k in range(n + len(program.stmts))]
    for k, stmt in enumerate(program.stmts):
        env = dict(zip(names, values, strict=False))
        moves = alone is None or alone == n + k
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if exact is not None and _lapack_may_hang(stmt, values):
                    raise FloatingPointError("a factorization of non-finite values")
                if noise is not None and moves and stmt.sums_in_views():
                    result = _with_noisy_views(stmt, values, noise[0])
                else:
                    result = eval(stmt.source(names), {"np": np}, env)
            except Exception:
                if noise is None or exact is None:
                    raise
                values.append(_undetermined_like(exact[n + k]))
                continue
            if noise is not None:
                result = _perturb(stmt, result, values, noise, n + k, moves)
        values.append(result)
    return values


def _perturb(stmt: Stmt, result, values, noise, index, moves: bool = True):
    rng, undefined, move = noise
    out = np.array(result)
    if index in undefined:
        out = np.where(undefined[index], _arbitrary(rng, out, move), out)
    accuracy = stmt.op.accuracy_of(stmt.params)
    if accuracy == EXACT or not moves or not (is_float(out.dtype) or is_complex(out.dtype)) or out.size == 0:
        return out[()] if isinstance(result, np.generic) else out
    dtype = out.dtype
    eps = float(finfo(dtype).eps)
    direction = _direction(rng, out.shape, move)
    if is_complex(dtype):                    # each component moves by the bound, independently
        direction = direction + 1j * _direction(rng, out.shape, move)
    if accuracy == SUM:
        eps = max(eps, _weak_complex_eps(stmt, values), _narrow_product_eps(stmt, values))
        operands = [np.abs(np.asarray(_operand_value(a, values))).astype(np.float64)
                    if not isinstance(a, Literal) else abs(eval(a.text)) for a in stmt.args]
        magnitude = _magnitude(stmt, operands)
        terms = max(max(np.size(x) for x in _operand_values(stmt, values)), 2)
        delta = SUM_FACTOR * eps * (math.log2(terms) + 1) * np.abs(np.asarray(magnitude, np.float64))
        if stmt.op.name in BLAS_CONTRACTIONS:
            contracted = _contracted_length(stmt, _operand_values(stmt, values))
            delta = delta + eps * (contracted / BLAS_PARTIAL_SUMS) * np.abs(np.asarray(magnitude, np.float64))
    else:
        delta = ulp_bound(accuracy, dtype) * ulp(np.abs(out).astype(np.float64), dtype)
        if stmt.op.magnitude is not None:           # a formula that cancels (logaddexp near 0): its
            operands = [np.abs(np.asarray(_operand_value(a, values))).astype(np.float64)   # error scales
                        if not isinstance(a, Literal) else abs(eval(a.text)) for a in stmt.args]  # with the terms
            delta = delta + ulp_bound(accuracy, dtype) * eps * np.abs(np.asarray(_magnitude(stmt, operands), np.float64))
    with np.errstate(all="ignore"):
        wide = out.astype(np.complex128 if is_complex(dtype) else np.float64)
        moved = (wide + direction * np.broadcast_to(delta, out.shape)).astype(dtype)
        if dtype.kind == "f":                          # at least one ulp: rounding must not undo the move
            toward = np.copysign(np.inf, direction).astype(dtype)      # in the dtype: float32 stays float32
            moved = np.where((moved == out) & (delta > 0), np.nextafter(out, toward), moved)
    moved = np.where(np.isfinite(out), moved, out)
    return moved[()] if isinstance(result, np.generic) else moved


def _weak_complex_eps(stmt: Stmt, values) -> float:
    """A Python complex literal in the statement (`x + 1j`) joins a float operand as the
    narrowest complex type holding it (NEP 50's weak scalars): with a float32, float16 or
    bfloat16 operand part of the work is complex64 even when the result is float64, so the
    bound uses complex64's precision."""
    if not re.search(r"\dj\b", stmt.op.template):
        return 0.0
    narrow = any((is_float(np.asarray(v).dtype) and np.asarray(v).dtype.itemsize <= 4)
                 or np.asarray(v).dtype == np.complex64 for v in _operand_values(stmt, values))
    return float(np.finfo(np.float32).eps) if narrow else 0.0


def _narrow_product_eps(stmt: Stmt, values) -> float:
    """A matrix product inside a statement (`x @ x.T + m * np.eye(m)`, the LAPACK rows'
    matrices) is rounded in its operands' precision before anything promotes it: with
    float32 operands and a float64 result, the bound uses the operands' precision. Moving
    the float64 result by its own ulps does not cover the float32 product's rounding,
    which differs between BLAS routines (NumPy's SYRK for `a @ a.T`, jitgrad's GEMM):
    seed 20261205 program 4722, eigenvalues 1.4e-10 apart against a 4.8e-11 bound."""
    if "@" not in stmt.op.template:
        return 0.0
    return max((float(finfo(np.asarray(v).dtype).eps) for v in _operand_values(stmt, values)
                if is_float(np.asarray(v).dtype) or is_complex(np.asarray(v).dtype)), default=0.0)


def _undetermined_like(value):
    """NaN (or the dtype's largest value) in the shape and dtype of `value`."""
    x = np.asarray(value)
    fill = np.nan if is_float(x.dtype) or is_complex(x.dtype) else (True if x.dtype == bool else np.iinfo(x.dtype).max)
    out = np.full(x.shape, fill, x.dtype)
    return out[()] if isinstance(value, np.generic) else out


def _with_noisy_views(stmt: Stmt, values: list, rng):
    """The statement's result with each operand view that sums (`x.sum(axis=0,
    keepdims=True)`) moved by a summation's error bound first."""
    operands = _operand_values(stmt, values)
    for k, a in enumerate(stmt.args):
        view = stmt.views[k] if k < len(stmt.views) else None
        if not view or "sum(" not in view or not is_float(np.asarray(operands[k]).dtype):
            continue
        x = np.asarray(_operand_value(a, values))
        magnitude = eval(view.replace("{}", "_x"), {"np": np}, {"_x": np.abs(x.astype(np.float64))})
        eps = float(finfo(x.dtype).eps)
        delta = SUM_FACTOR * eps * (math.log2(max(x.size, 2)) + 1) * np.abs(magnitude)
        direction = _direction(rng, np.shape(operands[k]), "uniform")
        moved = (np.asarray(operands[k], np.float64) + direction * delta).astype(np.asarray(operands[k]).dtype)
        operands[k] = np.where(np.isfinite(np.asarray(operands[k], np.float64)), moved, operands[k])
    names = [f"_a{k}" for k in range(len(operands))]
    return eval(stmt.op.template.format(*names, **stmt.params), {"np": np}, dict(zip(names, operands, strict=True)))


def _arbitrary(rng, like: np.ndarray, move: str) -> np.ndarray:
    """Values for elements NumPy leaves undefined: 0, NaN (1 for exact dtypes), the
    largest value, and random ones in the four runs, so that what depends on them (a
    remainder by 0, an overflow, a minimum with a NaN) shows up as changed."""
    dtype = like.dtype
    if move == "down one ulp" and dtype.kind in "fcV":
        return np.full(like.shape, np.nan, dtype=dtype)
    if move == "uniform":
        return rng.integers(-1000, 1000, size=like.shape).astype(dtype)
    if move == "full":
        top = np.iinfo(dtype).max if dtype.kind in "iu" else (True if dtype.kind == "b" else 1e30)
        return np.full(like.shape, top, dtype=dtype)
    return np.full(like.shape, 0 if move == "up one ulp" else 1, dtype=dtype)


def _direction(rng, shape, move: str) -> np.ndarray:
    """Moves as fractions of the bound (see MOVES; "one ulp" is a fraction too small to
    survive rounding, which `_perturb` turns into one ulp)."""
    if move == ALONE:
        return np.ones(shape)
    if move.startswith(OPPOSITE):
        return _opposite_signs(shape, int(move[len(OPPOSITE):]))
    if move == "uniform":
        return rng.uniform(-1.0, 1.0, size=shape)
    if move.endswith("one ulp"):
        return np.full(shape, 1e-300 if move.startswith("up") else -1e-300)
    return rng.choice([-1.0, 1.0], size=shape)


def _magnitude(stmt: Stmt, abs_operands: list):
    names = [f"_{k}" for k in range(len(abs_operands))]
    env = dict(zip(names, abs_operands, strict=True))
    template = stmt.op.magnitude or stmt.op.template
    text = template.format(*names, **stmt.params)
    views = stmt.views
    if any(views):           # the views apply to the operands' absolute values alike
        text = template.format(*[(views[k] or "{}").replace("{}", n) if k < len(views) else n
                                 for k, n in enumerate(names)], **stmt.params)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return eval(text, {"np": np}, env)


# --------------------------------------------------------------------------- comparison

@dataclass
class Failure:
    kind: str
    detail: str
    program: Program
    known: "KnownFailure | None" = None

    def report(self) -> str:
        head = f"[{self.kind}] {self.program.label}: {self.detail}"
        if self.known is not None:
            head += f"\n  known failure {self.known.name!r}: {self.known.reason}"
        return head + "\n--- reproducer ---\n" + self.program.reproducer()


class Mismatch(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


def compare(got, ref: Reference, k: int, where: str) -> None:
    """Raise Mismatch unless output k of `got` equals NumPy's per the rules above."""
    want = ref.outputs[k]
    got = np.asarray(got)
    if got.shape != want.shape:
        raise Mismatch("shape", f"{where} output {k}: shape {got.shape}, NumPy {want.shape}")
    if got.dtype != want.dtype:
        raise Mismatch("dtype", f"{where} output {k}: dtype {got.dtype}, NumPy {want.dtype}")
    if want.size == 0:
        return
    tol, unstable = ref.tolerance[k], ref.unstable[k]
    if is_complex(want.dtype):                  # each component as a float (NaN equal to NaN)
        equal = _equal(got.real, want.real, tol) & _equal(got.imag, want.imag, tol)
    else:
        equal = _equal(got, want, tol)
    if unstable is not None:
        equal = equal | unstable
    if not np.all(equal):
        bad = np.argwhere(~np.asarray(equal))[0] if want.ndim else ()
        at = tuple(int(i) for i in bad)
        tol_text = "" if tol is None else f" (tolerance {np.broadcast_to(tol, want.shape)[at]:.3g})"
        raise Mismatch("value", f"{where} output {k}: {np.count_nonzero(~np.asarray(equal))} of {want.size} "
                                f"elements differ; at {at} got {got[at]!r}, NumPy {want[at]!r}{tol_text}")


def _equal(got: np.ndarray, want: np.ndarray, tol) -> np.ndarray:
    """Per element: bit for bit (tol None; NaN equal to NaN, -0 to 0), or within tol."""
    if not is_float(want.dtype) or tol is None:
        if is_float(want.dtype):
            return (got == want) | (np.isnan(got) & np.isnan(want))
        return got == want
    g, w = got.astype(np.float64), want.astype(np.float64)
    with np.errstate(all="ignore"):
        close = np.abs(g - w) <= tol
    return close | (np.isnan(g) & np.isnan(w)) | (g == w)


# --------------------------------------------------------------------------- running one program

@contextlib.contextmanager
def fusion(enabled: bool):
    saved = config.fusion
    config.fusion = enabled
    try:
        yield
    finally:
        config.fusion = saved


def raising_stmt(program: Program, err: JitgradError) -> Stmt | None:
    """The statement a JitgradError names by its line (None if it names none)."""
    loc = getattr(err, "location", None)
    line = getattr(loc, "line", None)
    if line is None or not str(getattr(loc, "file", "")).startswith("<fuzz"):
        return None
    k = line - 2                                          # line 1 is the `def`
    return program.stmts[k] if 0 <= k < len(program.stmts) else None


def error_expected(program: Program, stmt: Stmt | None) -> bool:
    if stmt is None:
        return False
    if not stmt.op.supported():
        return True
    if stmt.op.may_raise is not None:
        values = _evaluate(program, None)
        return bool(stmt.op.may_raise(_operand_values(stmt, values), stmt.params))
    return False


def _non_contiguous(x):
    """The same values in a non-contiguous layout (strided, reversed or Fortran order)."""
    if not isinstance(x, np.ndarray) or x.ndim == 0 or x.size == 0:
        return x
    kind = x.size % 3
    if kind == 0:
        base = np.empty(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
        view = base[..., ::2]
        view[...] = x
        return view
    if kind == 1:
        return np.flip(np.flip(x).copy())
    return np.asfortranarray(x) if x.ndim > 1 else np.flip(np.flip(x).copy())


@dataclass
class Outcome:
    checks: Counter = field(default_factory=Counter)     # comparisons made, by what was compared
    failures: list = field(default_factory=list)
    raised_as_expected: bool = False

    @property
    def comparisons(self) -> int:
        return sum(self.checks.values())


def check_program(program: Program, rng: np.random.Generator, gradients: bool = True) -> Outcome:
    """Run every comparison on one program; failures are collected, not raised."""
    outcome = Outcome()
    fn = program.function()
    ref = numpy_reference(program, rng)
    args = list(program.inputs)

    def fail(kind, detail):
        outcome.failures.append(Failure(kind, detail, program))

    def run(where, call):
        try:
            return call()
        except JitgradError as err:
            if error_expected(program, raising_stmt(program, err)):
                outcome.raised_as_expected = True
                return None
            fail("refused", f"{where}: {type(err).__name__}: {err}")
        except Mismatch as m:
            fail(m.kind, m.detail)
        except Exception as err:                          # anything else: a crash of jitgrad
            fail("exception", f"{where}: {type(err).__name__}: {err}\n"
                              + "".join(traceback.format_exception(err)[-3:]))
        return None

    def check_outputs(where, results):
        outcome.checks[where] += 1
        if len(results) != len(ref.outputs):
            raise Mismatch("structure", f"{where}: {len(results)} outputs, NumPy {len(ref.outputs)}")
        for k, got in enumerate(results):
            compare(got, ref, k, where)
        return results

    with fusion(True):
        compiled = jitgrad.jit(fn)
        first = run("jit", lambda: check_outputs("jit", compiled(*args)))
    if first is None:
        return outcome
    second = run("jit, second call", lambda: compiled(*args))
    if second is not None:
        outcome.checks["second call"] += 1
        for k, (a, b) in enumerate(zip(first, second, strict=True)):
            if not _bitwise_equal(a, b):
                fail("second-call", f"output {k} differs between the first and second call")
    views = [_non_contiguous(x) for x in args]
    if any(v is not x for v, x in zip(views, args, strict=True)):
        third = run("jit, non-contiguous arguments", lambda: compiled(*views))
        if third is not None:
            outcome.checks["non-contiguous arguments"] += 1
            for k, (a, b) in enumerate(zip(first, third, strict=True)):
                if not _bitwise_equal(a, b):
                    fail("view-arguments", f"output {k} differs when the arguments are non-contiguous views")
    with fusion(False):
        run("jit without fusion", lambda: check_outputs("unfused", jitgrad.jit(fn)(*args)))
    traced = run("trace", lambda: trace(fn, tuple(args)))
    if traced is not None:
        leaves = [np.asarray(x) for x in args]
        run("interpreter", lambda: check_outputs("interpreter", evaluate(traced.function, leaves)))
        lowered = run("lower", lambda: compiled.lower(*args))
        if lowered is not None:
            run("interpreter on optimized IR",
                lambda: check_outputs("interpreter (optimized IR)", evaluate(lowered.function, leaves)))
        run("vmap", lambda: check_vmap(program, traced.function, args, check_outputs))
    if gradients and _differentiable(program, ref):
        run("gradients", lambda: check_gradients(program, fn, ref, rng, outcome))
    return outcome


def check_vmap(program: Program, fn, args, check_outputs) -> None:
    """The batching pass on the traced IR, run by the interpreter on two slices: the
    arguments, and the arrays among them with their elements in reverse order (so a
    predicate, a trip count or a selected element can differ between the slices). Slice
    0 must match NumPy on the arguments, slice 1 NumPy on the reversed ones (skipped when
    NumPy refuses those). Ops without a batch rule (MissingRuleError) are skipped, not
    counted as failures."""
    from jitgrad.errors import MissingRuleError
    from jitgrad.passes.batching import batch_function
    dims = [0 if isinstance(x, np.ndarray) else None for x in args]
    if all(d is None for d in dims):
        return
    try:
        batched, out_dims = batch_function(fn, dims, 2)
    except MissingRuleError:
        return
    other = [np.flip(x.reshape(-1)).reshape(x.shape) if d == 0 else x for x, d in zip(args, dims, strict=True)]
    stacked = [np.stack([x, y]) if d == 0 else np.asarray(x) for x, y, d in zip(args, other, dims, strict=True)]
    outs = evaluate(batched, stacked)
    check_outputs("vmap slice 0", [o if d is None else np.take(o, 0, axis=d)
                                   for o, d in zip(outs, out_dims, strict=True)])
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ref = numpy_reference(replace(program, inputs=other), np.random.default_rng(0))
    except Exception:       # noqa: BLE001 - NumPy refuses the reversed inputs: nothing to compare
        return
    for k, (o, d) in enumerate(zip(outs, out_dims, strict=True)):
        compare(o if d is None else np.take(o, 1, axis=d), ref, k, "vmap slice 1 (reversed inputs)")


def _bitwise_equal(a, b) -> bool:
    """The same bits, a NaN's sign and payload excepted: the first call runs quickly
    generated machine code and later calls the fully optimized code (engine.py's tiers),
    whose register choices for a commutative operation decide which NaN operand an x86
    instruction propagates (seed 20261207 program 1851, trapezoid of infinities). NumPy's
    own NaN signs differ between memory layouts of the same values."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.tobytes() == b.tobytes():
        return True
    if not (is_float(a.dtype) or is_complex(a.dtype)):
        return False
    parts = (np.real, np.imag) if is_complex(a.dtype) else (lambda x: x,)
    for part in parts:
        x, y = np.asarray(part(a)), np.asarray(part(b))
        wide_x, wide_y = x.astype(np.float64), y.astype(np.float64)
        both_nan = np.isnan(wide_x) & np.isnan(wide_y)
        if np.where(both_nan, 0, x).tobytes() != np.where(both_nan, 0, y).tobytes():
            return False
    return True


def _differentiable(program: Program, ref: Reference) -> bool:
    return (all(isinstance(x, np.ndarray) and x.dtype == np.float64 and x.size <= 64 and np.all(np.isfinite(x))
                for x in program.inputs)
            and any(is_float(o.dtype) for o in ref.outputs))


def _f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def check_gradients(program: Program, fn, ref: Reference, rng, outcome: Outcome) -> None:
    """⟨t, vjp(c)⟩ = ⟨jvp(t), c⟩ over the float outputs (cotangents in each output's dtype);
    for programs of smooth operations with finite values, jvp(t) = central finite
    differences of NumPy. Outputs the reference finds ill-conditioned (`Reference.unstable`:
    the documented bounds move them by a good part of their value) are left out: their
    derivatives go through the same amplification (slogdet of a numerically singular
    M M^T + m I with entries near 1e70: seed 20261208 program 2723)."""
    keep = [k for k, o in enumerate(ref.outputs)
            if is_float(o.dtype) and not (ref.unstable[k] is not None and np.any(ref.unstable[k]))]
    if not keep:
        return

    def floats(*xs):
        outs = fn(*xs)
        return tuple(outs[k] for k in keep)
    primals = tuple(program.inputs)
    tangents = tuple(rng.standard_normal(x.shape) for x in primals)
    cotangents = tuple(rng.standard_normal(ref.outputs[k].shape).astype(ref.outputs[k].dtype) for k in keep)
    _, jvp_out = jitgrad.jvp(floats, primals, tangents)
    _, vjp_fn = jitgrad.vjp(floats, *primals)
    vjp_out = vjp_fn(cotangents)
    lhs = sum(float(np.sum(t * g)) for t, g in zip(tangents, vjp_out, strict=True))
    rhs = sum(float(np.sum(_f64(j) * _f64(c))) for j, c in zip(jvp_out, cotangents, strict=True))
    outcome.checks["jvp-vjp"] += 1
    if not (np.isfinite(lhs) and np.isfinite(rhs)):
        return
    scale = sum(float(np.sum(np.abs(t) * np.abs(g))) for t, g in zip(tangents, vjp_out, strict=True)) + sum(
        float(np.sum(np.abs(_f64(j) * _f64(c)))) for j, c in zip(jvp_out, cotangents, strict=True)) + 1e-300
    # Cancelling terms (x / x) leave rounding noise of the size of |t| |J| |c| with |J| up
    # to about 1/|x|: an absolute floor from the vectors' norms covers it.
    floor = 1e-12 * sum(float(np.sum(np.abs(t))) for t in tangents) * sum(float(np.sum(np.abs(c))) for c in cotangents)
    values = _evaluate(program, None)
    values_eps = max([float(finfo(np.asarray(v).dtype).eps) for v in values if is_float(np.asarray(v).dtype)],
                     default=0.0)
    casts_eps = max([float(finfo(s.op.rounds_to).eps) for s in program.stmts if s.op.rounds_to], default=0.0)
    coarsest = max(values_eps, casts_eps)
    # A float16 value rounds tangents at every operation that makes or reads it; a
    # statement's own casts (Op.rounds_to) round its operands' tangents and cotangents
    # once each, within half an epsilon of the terms (seen: a tenth of one).
    relative = max(1e-9, 16 * values_eps, 4 * casts_eps)
    if abs(lhs - rhs) > relative * scale + floor:
        raise Mismatch("jvp-vjp", f"<t, vjp(c)> = {lhs!r} but <jvp(t), c> = {rhs!r}")
    if not all(s.op.smooth and s.op.accuracy_of(s.params) != SUM or s.op.name in ("sum", "mean", "matmul", "dot")
               for s in program.stmts):
        return
    if coarsest > float(np.finfo(np.float64).eps):
        return                                       # finite differences of rounded values say little
    if not all(np.all(np.isfinite(np.asarray(v, dtype=np.float64))) and np.max(np.abs(v), initial=0) < 1e6
               for v in values[len(program.inputs):] if is_float(np.asarray(v).dtype)):
        return

    def central(h):
        with np.errstate(all="ignore"):
            hi = floats(*[x + h * t for x, t in zip(primals, tangents, strict=True)])
            lo = floats(*[x - h * t for x, t in zip(primals, tangents, strict=True)])
        return [(np.asarray(a) - np.asarray(b)) / (2 * h) for a, b in zip(hi, lo, strict=True)]
    # Two step sizes: where they disagree, the function varies too fast at this scale
    # (cos(x**21)) and finite differences say nothing; elsewhere they must match jvp.
    coarse, fine = central(4e-6), central(1e-6)
    outcome.checks["finite differences"] += 1
    for k, (fd4, fd, j) in enumerate(zip(coarse, fine, jvp_out, strict=True)):
        bound = 1e-5 * (1 + np.abs(fd) + np.abs(j))
        trusted = np.abs(fd4 - fd) <= 1e-5 * (1 + np.abs(fd)) / 4
        # The coarse step must move the output by more than the program's own rounding
        # (the reference's tolerance): log1p(tanh(x)) at x = -18 is flat in floats (tanh
        # is -1 + a few ulps) though its derivative is 2, and both steps see 0.
        noise = ref.tolerance[keep[k]]
        if noise is not None:
            trusted &= 8e-6 * np.abs(_f64(j)) > 10 * np.asarray(noise, np.float64)
        bad = trusted & (np.abs(fd - j) > bound)
        if np.any(bad):
            at = tuple(int(i) for i in np.argwhere(bad)[0]) if np.ndim(bad) else ()
            raise Mismatch("finite-differences", f"float output {k}: jvp {np.asarray(j)[at]!r}, central "
                                                 f"differences {np.asarray(fd)[at]!r} at {at}")


# --------------------------------------------------------------------------- fixed cases

def _case(label, stmts, inputs, outputs=None) -> Program:
    """A hand-written program: statements as (op name, args, params, views)."""
    built = []
    for item in stmts:
        name, args, *rest = item
        params = rest[0] if rest else {}
        views = rest[1] if len(rest) > 1 else ()
        built.append(Stmt(OPS_BY_NAME[name], tuple(args), params, tuple(views)))
    n = len(inputs)
    return Program(list(inputs), built, outputs or [n + len(stmts) - 1], label)


def fixed_cases() -> list[Program]:
    """The silent wrong answers that motivated this fuzzer, as programs."""
    a = np.arange(9.0).reshape(3, 3)
    cases = [
        _case("m + m.T", [("mul", (0, Literal("2"))), ("add", (1, 1), {}, (None, "{}.T"))], [a]),
        _case("e / e[:, :1]", [("exp", (0,)), ("truediv", (1, 1), {}, (None, "{}[:, :1]"))], [a]),
        _case("int & int", [("and", (0, 1))], [np.array([6, 3]), np.array([3, 5])]),
        _case("~int", [("invert", (0,))], [np.array([6, -3])]),
        _case("astype narrowing", [("astype", (0,), {"dtype": "np.uint8"})], [np.array([300, -1])]),
        _case("exp2 of integers", [("exp2", (0,))], [np.array([3.0, 6.0, 9.0])]),
        _case("log10 of 1000", [("log10", (0,))], [np.array([1000.0])]),
        _case("sinh near 0", [("sinh", (0,))], [np.array([1e-15])]),
        _case("f32 sum of 1e6", [("sum", (0,), {"axis": None, "kd": False})], [np.full(10 ** 6, np.float32(0.1))]),
        _case("f32 * Python float", [("mul", (0, 1))], [np.ones(2, np.float32), 2.0]),
        _case("int ** 2.0", [("pow_scalar", (0,), {"k": 2.0})], [np.array([1, 2])]),
        _case("reciprocal of int", [("reciprocal", (0,))], [np.array([1, 2, -1])]),
        _case("int // and %", [("floordiv", (0, 1)), ("mod", (0, 1))], [np.array([7, -7, 7, -7]),
                                                                        np.array([2, 2, -2, -2])], [2, 3]),
        _case("np.dot(0.5, f16)", [("dot", (Literal("0.5"), 0))], [np.ones(3, np.float16)]),
        _case("bool ** 2", [("pow_scalar", (0,), {"k": 2})], [np.array([True, False])]),
        _case("np.power(x, Python float argument)", [("np.power", (0, 1))], [np.arange(3.0), 2.5]),
        _case("max of bool", [("max", (0,), {"axis": None, "kd": False})], [np.array([True, False])]),
        _case("np.stack with a Python int", [("stack", (1, 0), {"a": 0})], [np.array(1, np.int8), 3]),
        _case("hypot(inf, nan) float32", [("hypot", (0, 1))], [np.array([np.inf, np.nan], np.float32),
                                                              np.array([np.nan, -np.inf], np.float32)]),
        _case("pow(2**40, y) accuracy", [("np.power", (Literal("2.0**40"), 0))], [np.linspace(-10.3, -10.2, 64)]),
        # a float32 matrix product inside a float64 statement, eigenvalues in a non-normal cluster
        _case("eigvals of a float32 rank-1 product", [("outer", (0, 0)), ("eigvals", (1,))],
              [(np.random.default_rng(1).standard_normal((4, 4, 4)) * 0.05).astype(np.float32)]),
        # derivatives of an ill-conditioned output are as undetermined as its value
        _case("slogdet of a numerically singular matrix", [("sinh", (0,)), ("slogdet", (1,))],
              [np.random.default_rng(1).standard_normal((4, 4, 4)) * 40]),
    ]
    for name in ("uint8", "int8", "int16", "int32", "uint16", "uint32", "uint64", "float16"):
        dt = np.dtype(name)
        x = random_array(np.random.default_rng(1), (5,), dt) if is_float(dt) else np.array(
            [200, 250, 7, 0, 1], np.int64).astype(dt)
        cases.append(_case(f"{name} + {name}", [("add", (0, 0)), ("mul", (1, 0))], [x]))
    try:
        import ml_dtypes
        x = np.array([1.5, 2.25, -3.0], ml_dtypes.bfloat16)
        cases.append(_case("bfloat16 arithmetic", [("mul", (0, 0)), ("add", (1, Literal("1.0")))], [x]))
        # NumPy's sort-based isin on bfloat16 with a NaN, then NaN into minimum: undefined, not compared
        x = np.array([[8.3e11, 0, np.nan, np.nan, np.nan], [3.2e15, 1.7e-22, 5.3e12, np.nan, 0],
                      [np.nan, 4.4e-12, 1.1e-13, 0, np.nan]], ml_dtypes.bfloat16)
        cases.append(_case("bfloat16 isin with NaN", [("isin", (0, 0)), ("where_cmp", (0, 1))], [x]))
        cases.append(_case("bfloat16 sort with NaN into minimum",
                           [("sort", (0,), {"axis": 1}), ("minimum", (0, 1))], [x]))
    except ImportError:
        pass
    return cases


@dataclass(frozen=True)
class SpecialCase:
    """A property that is not one program's outputs (state read at call time, fresh
    random numbers, masked arrays): `run` raises AssertionError when NumPy's answer is
    not met, or returns None; a JitgradError counts as a clear refusal when allowed."""

    label: str
    run: Callable[[], None]
    error_allowed: bool = False


def _closure_rebinding():
    w = np.ones(3)
    g = jitgrad.grad(lambda x: np.sum((w * x) ** 2))
    x = np.arange(3.0)
    g(x)
    w *= 2
    np.testing.assert_allclose(g(x), 2 * w * w * x, err_msg="an updated closure array was not seen")


def _fresh_random_numbers():
    f = jitgrad.jit(lambda x: x * np.random.standard_normal(3))
    a, b = f(np.ones(3)), f(np.ones(3))
    assert not np.array_equal(a, b), "the same random numbers on every call"


def _masked_sum():
    x = np.ma.masked_array([1.0, 100.0], mask=[0, 1])
    got = jitgrad.jit(np.sum)(x)
    assert float(got) == 1.0, f"masked sum gave {got}, NumPy 1.0"


def _tape_sees_mutation():
    c = np.array([1.0, 2.0])
    tape = jitgrad.GradientTape()
    with tape:
        x = tape.variable(np.array([3.0, 4.0]))
        z = np.sum(x * c)
    c[:] = 5                                   # a recorded constant changed before gradient()
    (g,) = tape.gradient(z, [x])
    np.testing.assert_array_equal(np.asarray(g), [1.0, 2.0], err_msg="the gradient used the mutated array")


def _tape_item_assignment():
    """NumPy converts the item with float() and, the tensor being indexable (a sequence to
    CPython), always replaces the CutDerivativeError it raises by its own ValueError
    ('setting an array element with a sequence') whose __cause__ is that error: the
    cause is what must name the cut derivative."""
    from jitgrad.errors import CutDerivativeError
    tape = jitgrad.GradientTape()
    with tape:
        x = tape.variable(np.array([2.0, 3.0]))
        y = np.zeros(2)
        try:
            y[0] = x[0]                        # a tracked value into a plain array
        except ValueError as err:
            if isinstance(err.__cause__, CutDerivativeError):
                raise err.__cause__ from None
            raise
        z = np.sum(y) + 0 * np.sum(x)
    (g,) = tape.gradient(z, [x])
    np.testing.assert_array_equal(np.asarray(g), [1.0, 0.0], err_msg="the derivative through y[0] was dropped")


def _tape_math_function():
    import math
    tape = jitgrad.GradientTape()
    with tape:
        x = tape.variable(np.array([2.0, 3.0]))
        z = math.exp(x[0]) + 0 * np.sum(x)
    (g,) = tape.gradient(z, [x])
    np.testing.assert_allclose(np.asarray(g), [math.exp(2.0), 0.0], err_msg="math.exp dropped the derivative")


SPECIAL_CASES = [
    SpecialCase("tape: recorded array mutated before gradient()", _tape_sees_mutation, error_allowed=True),
    SpecialCase("tape: tracked value assigned into a plain array", _tape_item_assignment, error_allowed=True),
    SpecialCase("tape: math.exp of a tracked value", _tape_math_function, error_allowed=True),
    SpecialCase("closure array updated between calls", _closure_rebinding),
    SpecialCase("np.random inside a compiled function", _fresh_random_numbers, error_allowed=True),
    SpecialCase("masked array argument", _masked_sum, error_allowed=True),
]


def check_special(case: SpecialCase) -> Outcome:
    outcome = Outcome(checks=Counter({"special": 1}))
    dummy = Program([], [], [], case.label)
    try:
        case.run()
    except JitgradError as err:
        if not case.error_allowed:
            outcome.failures.append(Failure("refused", f"{type(err).__name__}: {err}", dummy))
    except AssertionError as err:
        outcome.failures.append(Failure("value", str(err).strip().splitlines()[0], dummy))
    except Exception as err:
        outcome.failures.append(Failure("exception", f"{type(err).__name__}: {err}", dummy))
    return outcome


# --------------------------------------------------------------------------- known failures

@dataclass(frozen=True)
class KnownFailure:
    """A failure found and not yet fixed (by the owner of the code at fault). `matches`
    decides whether a failure is this one; `reason` says what is wrong."""

    name: str
    reason: str
    matches: Callable[[Failure], bool]


def _uses(failure: Failure, *op_names: str) -> bool:
    return any(s.op.name in op_names for s in failure.program.stmts)


def _python_scalar_in(failure: Failure, *op_names: str) -> bool:
    """Does a statement of one of `op_names` take a Python scalar (literal or argument)?"""
    inputs = failure.program.inputs
    return any(s.op.name in op_names and any(
        isinstance(a, Literal) or (isinstance(a, int) and a < len(inputs) and isinstance(inputs[a], (bool, int, float)))
        for a in s.args) for s in failure.program.stmts)


def _has_bfloat16_input(failure: Failure) -> bool:
    return any(is_array(x) and np.asarray(x).dtype.name == "bfloat16" for x in failure.program.inputs)


def _label(*labels: str) -> Callable[[Failure], bool]:
    return lambda f: f.program.label in labels


def _detail(kind: str, *fragments: str) -> Callable[[Failure], bool]:
    return lambda f: f.kind == kind and any(text in f.detail for text in fragments)


def _opposite_sign_after(*op_names: str) -> Callable[[Failure], bool]:
    """A value failure of a program using one of `op_names` whose first differing element
    is NumPy's with the opposite sign (a zero's sign, carried on to ±inf by a division)."""
    def matches(failure: Failure) -> bool:
        found = re.search(r"got np\.\w+\(([^)]*)\), NumPy np\.\w+\(([^)]*)\)", failure.detail)
        if failure.kind != "value" or not found or not _uses(failure, *op_names):
            return False
        got, ref = (float(x) for x in found.groups())
        return got == -ref
    return matches


KNOWN_FAILURES: list[KnownFailure] = [
    KnownFailure("sign of a zero from fmin/fmax",
                 "for float32/float64, which of +0 and -0 NumPy's fmin/fmax return when comparing them "
                 "changes with the array's length (its SIMD and scalar loops differ); jitgrad returns the "
                 "second operand, as NumPy's maximum/minimum do (documented in docs/numerics.md)",
                 _opposite_sign_after("fmin", "fmax")),
]


def classify(failure: Failure) -> Failure:
    for known in KNOWN_FAILURES:
        try:
            if known.matches(failure):
                return replace(failure, known=known)
        except Exception:
            continue
    return failure


# --------------------------------------------------------------------------- driver

@dataclass
class Summary:
    programs: int = 0
    checks: Counter = field(default_factory=Counter)
    raised_as_expected: int = 0
    failure_kinds: Counter = field(default_factory=Counter)  # unknown failures, by kind
    known_names: Counter = field(default_factory=Counter)    # known failures, by name
    failures: list = field(default_factory=list)             # the unknown Failure objects (this process)
    known: list = field(default_factory=list)
    seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.programs += 1
        self.checks.update(outcome.checks)
        self.raised_as_expected += outcome.raised_as_expected
        for f in outcome.failures:
            f = classify(f)
            if f.known is not None:
                self.known.append(f)
                self.known_names[f.known.name] += 1
            else:
                self.failures.append(f)
                self.failure_kinds[f.kind] += 1

    def counts(self) -> dict:
        return {"programs": self.programs, "checks": dict(self.checks), "raised": self.raised_as_expected,
                "failures": dict(self.failure_kinds), "known": dict(self.known_names)}

    def merge(self, counts: dict) -> None:
        """Add the counts of a worker process's summary."""
        self.programs += counts["programs"]
        self.checks.update(counts["checks"])
        self.raised_as_expected += counts["raised"]
        self.failure_kinds.update(counts["failures"])
        self.known_names.update(counts["known"])

    @property
    def failed(self) -> bool:
        return sum(self.failure_kinds.values()) > 0

    def line(self) -> str:
        def listing(counter):
            return f" ({', '.join(f'{k}: {n}' for k, n in counter.items())})" if counter else ""
        return (f"fuzz: {self.programs} programs, {sum(self.checks.values())} comparisons, "
                f"{sum(self.failure_kinds.values())} failures{listing(self.failure_kinds)}, "
                f"{sum(self.known_names.values())} known{listing(self.known_names)}, "
                f"{self.raised_as_expected} clear errors where expected, {self.seconds:.0f} s")


@contextlib.contextmanager
def fuzz_settings():
    """No disk cache (every program is new; the cache would only fill the disk)."""
    saved = config.cache_dir
    config.cache_dir = None
    try:
        yield
    finally:
        config.cache_dir = saved


def program_for(seed: int, index: int) -> Program:
    """Program `index` of the stream of `seed`: reproducible on its own."""
    rng = np.random.default_rng([seed, index])
    smooth = index % 5 == 4                     # every fifth program: float64, smooth, for gradients
    program = generate(rng, label=f"seed {seed} program {index}", smooth_only=smooth)
    program.origin = (seed, index)
    return program


def run_program(seed: int, index: int) -> Outcome:
    program = program_for(seed, index)
    return check_program(program, np.random.default_rng([seed, index, 1]))


def run(seconds: float | None = None, programs: int | None = None, seed: int = 0, fixed: bool = True,
        verbose: bool = False, shrink_failures: bool = True, out=sys.stdout, start_index: int = 0,
        progress: Callable[[int], None] | None = None, show_known: bool = False, live: list | None = None
        ) -> Summary:
    """Fixed cases, then random programs `start_index`, ... until the time or program
    budget is spent. `progress(index)` is called before each program (-1: fixed cases)."""
    summary = Summary()
    if live is not None:
        live.append(summary)                 # lets a worker report counts while it runs
    start = time.perf_counter()
    with fuzz_settings():
        def record(outcome: Outcome) -> None:
            before, before_known = len(summary.failures), len(summary.known)
            summary.add(outcome)
            shown = summary.failures[before:] + (summary.known[before_known:] if show_known else [])
            for f in shown:                                 # reported as found: long runs stream
                print(f.report(), "\n", file=out, flush=True)

        if fixed:
            if progress is not None:
                progress(-1)
            for program in fixed_cases():
                record(check_program(program, np.random.default_rng(0)))
            for case in SPECIAL_CASES:
                record(check_special(case))
        index = start_index
        while True:
            if programs is not None and index >= start_index + programs:
                break
            if seconds is not None and time.perf_counter() - start > seconds:
                break
            if progress is not None:
                progress(index)
            try:
                outcome = run_program(seed, index)
            except Exception as err:                      # the fuzzer itself: report, go on
                outcome = Outcome(failures=[Failure("fuzzer", "".join(traceback.format_exception(err)[-4:]),
                                                    Program([], [], [], f"seed {seed} program {index}"))])
            if shrink_failures and any(classify(f).known is None for f in outcome.failures):
                outcome.failures = [shrink(f) if classify(f).known is None else f for f in outcome.failures]
            record(outcome)
            if verbose:
                print(f"  {index}: {outcome.comparisons} comparisons, {len(outcome.failures)} failures",
                      file=out, flush=True)
            index += 1
    summary.seconds = time.perf_counter() - start
    return summary


# --------------------------------------------------------------------------- shrinking

def shrink(failure: Failure, budget: int = 24) -> Failure:
    """Drop statements and outputs while the same kind of failure remains (greedy, at
    most `budget` re-runs)."""
    program = failure.program
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        for candidate in _smaller(program):
            tries += 1
            if tries > budget:
                break
            try:
                outcome = check_program(candidate, np.random.default_rng(0), gradients=failure.kind in (
                    "jvp-vjp", "finite-differences"))
            except Exception:
                continue
            same = [f for f in outcome.failures if f.kind == failure.kind]
            if same:
                program, failure = candidate, same[0]
                changed = True
                break
    return replace(failure, program=program)


def _smaller(program: Program):
    """Programs with one output fewer, or one statement fewer (its uses rewired to its
    first operand when the shapes allow; NumPy re-checks)."""
    if len(program.outputs) > 1:
        for k in range(len(program.outputs)):
            yield replace(program, outputs=program.outputs[:k] + program.outputs[k + 1:])
    n = len(program.inputs)
    needed = _needed(program)
    if len(needed) < len(program.stmts):
        yield _keep_only(program, needed)
    for drop in sorted(needed, reverse=True):
        stmt = program.stmts[drop]
        firsts = [a for a in stmt.args if isinstance(a, int)]
        if not firsts:
            continue
        candidate = _replace_value(program, n + drop, firsts[0])
        if candidate is not None:
            yield candidate


def _needed(program: Program) -> list[int]:
    n = len(program.inputs)
    live = set(program.outputs)
    keep = []
    for k in reversed(range(len(program.stmts))):
        if n + k in live:
            keep.append(k)
            live |= {a for a in program.stmts[k].args if isinstance(a, int)}
    return sorted(keep)


def _keep_only(program: Program, keep: list[int]) -> Program:
    n = len(program.inputs)
    remap = {i: i for i in range(n)}
    stmts = []
    for k in keep:
        stmt = program.stmts[k]
        stmts.append(replace(stmt, args=tuple(remap[a] if isinstance(a, int) else a for a in stmt.args)))
        remap[n + k] = n + len(stmts) - 1
    return replace(program, stmts=stmts, outputs=[remap[o] for o in program.outputs])


def _replace_value(program: Program, old: int, new: int) -> Program | None:
    n = len(program.inputs)
    stmts = []
    for k, stmt in enumerate(program.stmts):
        if n + k == old:
            continue
        args = tuple((new if a == old else (a - 1 if a > old else a)) if isinstance(a, int) else a
                     for a in stmt.args)
        stmts.append(replace(stmt, args=args))
    outputs = [(new if o == old else (o - 1 if o > old else o)) for o in program.outputs]
    candidate = replace(program, stmts=stmts, outputs=list(dict.fromkeys(outputs)))
    values = list(candidate.inputs)
    for stmt in candidate.stmts:
        result = run_stmt(stmt, values)
        if result is None:
            return None
        values.append(result)
    if any(not is_array(values[o]) for o in candidate.outputs):
        return None
    return candidate


# --------------------------------------------------------------------------- command line

HANG_SECONDS = 300
"""A program that has not finished after this long is reported as a hang."""


def supervise(seed: int, seconds: float, programs: int | None, fixed: bool, verbose: bool,
              extra: tuple = ()) -> Summary:
    """Run the fuzzer in worker processes, so that a crash (a signal, an abort) or a hang
    of one program is reported as a failure of that program and the run goes on with
    the next. Workers stream their failure reports; their counts are merged here."""
    import json
    import queue
    import subprocess
    import threading
    summary = Summary()
    start = time.perf_counter()
    index = 0
    while True:
        remaining = seconds - (time.perf_counter() - start)
        if remaining <= 0 or (programs is not None and index >= programs):
            break
        command = [sys.executable, "-m", "tests.fuzz", "--worker", "--seed", str(seed), "--start", str(index),
                   "--minutes", str(remaining / 60)]
        command += ["--programs", str(programs - index)] if programs is not None else []
        command += [] if fixed else ["--no-fixed"]
        command += (["--verbose"] if verbose else []) + list(extra)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        worker = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1, cwd=root)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: ([lines.put(line) for line in worker.stdout], lines.put(None)),
                         daemon=True).start()
        current, finished, problem, counts = None, False, "crash", None
        while True:
            try:
                line = lines.get(timeout=HANG_SECONDS)
            except queue.Empty:
                worker.kill()
                problem = "hang"
                break
            if line is None:
                break
            if line.startswith("@begin "):
                current = int(line.split()[1])
            elif line.startswith("@counts "):
                counts = json.loads(line[len("@counts "):])      # the worker's totals so far
            elif line.startswith("@end"):
                finished = True
            else:
                print(line, end="", flush=True)
        status = worker.wait()
        if counts is not None:
            summary.merge(counts)
        fixed = False
        if finished:
            break
        failed = current if current is not None else index
        summary.programs += 1
        summary.failure_kinds[problem] += 1
        where = "the hand-written cases" if failed < 0 else f"program {failed}"
        print(f"[{problem}] seed {seed} {where}: the worker process "
              f"{'ended with status ' + str(status) if problem == 'crash' else 'stopped answering'}", flush=True)
        if failed >= 0:
            print("--- reproducer ---\n" + program_for(seed, failed).reproducer() + "\n", flush=True)
        index = max(failed + 1, index)
    summary.seconds = time.perf_counter() - start
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to generate programs")
    parser.add_argument("--programs", type=int, default=None, help="stop after this many random programs")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000, help="the program stream")
    parser.add_argument("--replay", type=int, default=None, help="run only program INDEX of --seed")
    parser.add_argument("--no-fixed", action="store_true", help="skip the hand-written cases")
    parser.add_argument("--in-process", action="store_true",
                        help="no worker processes (a crash of jitgrad then ends the run)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--abort-at", type=int, default=None, help=argparse.SUPPRESS)   # tests crash reports
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--show-known", action="store_true", help="print reproducers of known failures too")
    parser.add_argument("--device", default=None,
                        help="compile for this device (e.g. cuda-emulator: the GPU's kernels run on the host)")
    options = parser.parse_args(argv)
    if options.device is not None:
        from jitgrad.backends import backend_for
        backend_for(options.device)
        jitgrad.config.device = options.device
    if options.replay is not None:
        with fuzz_settings():
            program = program_for(options.seed, options.replay)
            print(program.reproducer())
            outcome = run_program(options.seed, options.replay)
        for f in outcome.failures:
            print(classify(f).report())
        print(f"{outcome.comparisons} comparisons, {len(outcome.failures)} failures")
        return 1 if outcome.failures else 0
    if options.worker:
        import json
        summary_so_far: list = []

        def progress(i: int) -> None:
            if summary_so_far:
                print("@counts " + json.dumps(summary_so_far[0].counts()), flush=True)
            print(f"@begin {i}", flush=True)
            if i == options.abort_at:
                os.abort()
        summary = run(seconds=options.minutes * 60, programs=options.programs, seed=options.seed,
                      fixed=not options.no_fixed, verbose=options.verbose, start_index=options.start,
                      progress=progress, show_known=options.show_known, live=summary_so_far)
        print("@counts " + json.dumps(summary.counts()), flush=True)
        print("@end", flush=True)
        return 0
    print(f"fuzz: seed {options.seed}, {options.minutes} minutes", flush=True)
    if options.in_process:
        summary = run(seconds=options.minutes * 60, programs=options.programs, seed=options.seed,
                      fixed=not options.no_fixed, verbose=options.verbose, show_known=options.show_known)
    else:
        extra = (["--show-known"] if options.show_known else []) + (
            ["--device", options.device] if options.device is not None else []) + (
            ["--abort-at", str(options.abort_at)] if options.abort_at is not None else [])
        summary = supervise(options.seed, options.minutes * 60, options.programs, not options.no_fixed,
                            options.verbose, tuple(extra))
    print("comparisons: " + ", ".join(f"{k} {n}" for k, n in sorted(summary.checks.items())))
    print(summary.line())
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
