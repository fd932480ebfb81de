"""Maximum ulp error of every transcendental function jitgrad compiles, and of NumPy's on
the same points, against an mpmath reference computed at 160 bits.

Run:  python benchmarks/ulp_table.py [--points N] [--seed S]

For each function and each of float64, float32 and float16, one fixed sample of points covers the
whole float range (log-uniform magnitudes from the smallest subnormal to the largest
float, both signs), the function's interesting interval (densely), and special points:
integers for exp2, powers of two and ten for the logarithms, huge arguments (1e22) for
sin/cos/tan, the overflow and underflow boundaries of exp, values near 0 for the
functions with cancellation there (expm1, log1p, sinh, tanh). jitgrad runs the sample
twice: as one long array (the vectorized loop, libmvec's vector functions) and one point
at a time in a 1-element array (the scalar libm call). The error of a result is
|result - exact| / ulp(exact) in the result's precision; a wrong infinity, NaN or sign
is reported as inf. `jitgrad.primitives.ULP_BOUNDS` holds the bounds that tests assert.
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
from dataclasses import dataclass
from typing import Callable

import mpmath
import numpy as np

import jitgrad

mpmath.mp.prec = 160


# --------------------------------------------------------------------------- exact references

def _real_or_none(value):
    """mpmath answers complex numbers outside a real function's domain: NaN for NumPy."""
    return None if isinstance(value, mpmath.mpc) else value


def _cbrt(x):
    return mpmath.sign(x) * mpmath.cbrt(abs(x))


def _log(fn):
    return lambda x: None if x < 0 else (mpmath.ninf if x == 0 else fn(x))


def _log1p(x):
    return None if x < -1 else (mpmath.ninf if x == -1 else mpmath.log1p(x))


def _atanh(x):
    if abs(x) == 1:
        return mpmath.inf * x
    return _real_or_none(mpmath.atanh(x)) if abs(x) < 1 else None


def _atan2(y: float, x: float):
    """atan2 of floats: at y = x = 0 the signs of the zeros decide (0 or +-pi)."""
    if y == 0 and x == 0:
        return mpmath.mpf(0) if math.copysign(1, x) > 0 else mpmath.pi * math.copysign(1, y)
    return mpmath.atan2(mpmath.mpf(y), mpmath.mpf(x))


def _pow(a, b):
    if a < 0:
        return None
    if a == 0:
        return mpmath.mpf(1) if b == 0 else (mpmath.inf if b < 0 else mpmath.mpf(0))
    return mpmath.power(a, b)


@dataclass(frozen=True)
class MathFunction:
    """One NumPy function, its exact reference, and where to sample it."""

    name: str
    numpy: Callable
    exact: Callable                   # mpf arguments -> mpf, or None where the result is NaN
    core: tuple[float, float]         # the interval sampled densely (uniformly)
    domain: Callable = lambda *xs: np.ones(xs[0].shape, bool)  # points worth sampling
    special: tuple = ()               # extra points (either dtype; out-of-range ones are dropped)
    arity: int = 1
    signed_zeros: bool = False         # `exact` takes floats (mpmath has no -0)


def _integers(lo, hi):
    return tuple(float(k) for k in range(lo, hi))


FUNCTIONS = [
    MathFunction("exp", np.exp, mpmath.exp, (-750, 720),
                 special=(0.0, 1.0, -1.0, 709.782712893384, 709.7827128933841, 88.72283, 88.72284,
                          -745.1332191019411, -745.1332191019412, -103.97208, -87.33655, 1e-300, -1e-300)),
    MathFunction("exp2", np.exp2, lambda x: mpmath.power(2, x), (-1080, 1030),
                 special=_integers(-1080, 1030) + (0.5, -0.5, 1e-300)),
    MathFunction("expm1", np.expm1, mpmath.expm1, (-40, 710),
                 special=(1e-300, -1e-300, 1e-20, -1e-20, 1e-8, -1e-8, 0.5, -0.5, 709.78, 88.7)),
    MathFunction("log", np.log, _log(mpmath.log), (0, 10),
                 special=(1.0, 2.0, 0.5, 1 + 2**-52, 1 - 2**-53, 1 + 2**-23, 5e-324, 1e-310, 1e-45, 1e-40,
                          -1.0, 0.0, math.e)),
    MathFunction("log2", np.log2, _log(lambda x: mpmath.log(x, 2)), (0, 10),
                 special=tuple(2.0 ** k for k in range(-1074, 1024)) + (1 + 2**-52, 1 - 2**-53, 3.0, -2.0, 0.0)),
    MathFunction("log10", np.log10, _log(mpmath.log10), (0, 10),
                 special=tuple(float(f"1e{k}") for k in range(-323, 309)) + (1 + 2**-52, 1 - 2**-53, -10.0, 0.0)),
    MathFunction("log1p", np.log1p, _log1p, (-1, 10),
                 special=(1e-300, -1e-300, 1e-20, -1e-20, 1e-8, -1e-8, -0.5, -1.0, -2.0, 1e300, 5e-324)),
    MathFunction("sin", np.sin, mpmath.sin, (-10, 10),
                 special=(1e22, -1e22, 1e300, 1e15, 3.141592653589793, 1.5707963267948966, 2 ** 30, 2 ** 60,
                          1e-300, 5e-324, 6.2831853, 355.0, 103.0, 1e5, 8.0e6)),
    MathFunction("cos", np.cos, mpmath.cos, (-10, 10),
                 special=(1e22, -1e22, 1e300, 1e15, 3.141592653589793, 1.5707963267948966, 2 ** 30, 2 ** 60,
                          1e-300, 5e-324, 6.2831853, 355.0, 103.0, 1e5, 8.0e6)),
    MathFunction("tan", np.tan, mpmath.tan, (-10, 10),
                 special=(1e22, -1e22, 1e300, 1e15, 1.5707963267948966, 1.5707963, 2 ** 30, 1e-300, 355.0, 1e5)),
    MathFunction("arcsin", np.arcsin, lambda x: _real_or_none(mpmath.asin(x)), (-1, 1),
                 special=(1.0, -1.0, 0.5, 1 - 2**-53, 1e-300, 5e-324, 1e-8, 1.5, -2.0)),
    MathFunction("arccos", np.arccos, lambda x: _real_or_none(mpmath.acos(x)), (-1, 1),
                 special=(1.0, -1.0, 0.5, 1 - 2**-53, -1 + 2**-53, 0.0, 1e-300, 1.5)),
    MathFunction("arctan", np.arctan, mpmath.atan, (-20, 20),
                 special=(1.0, -1.0, 1e300, -1e300, 1e-300, 5e-324, 1e-8, 1e16)),
    MathFunction("arcsinh", np.arcsinh, mpmath.asinh, (-20, 20),
                 special=(1e300, -1e300, 1e-300, 5e-324, 1e-8, 1e16, 0.5)),
    MathFunction("arccosh", np.arccosh, lambda x: _real_or_none(mpmath.acosh(x)), (1, 20),
                 special=(1.0, 1 + 2**-52, 1e300, 1e16, 2.0, 0.5, -1.0)),
    MathFunction("arctanh", np.arctanh, _atanh, (-1, 1),
                 special=(1.0, -1.0, 1 - 2**-53, 1e-300, 5e-324, 1e-8, 0.5, 1.5)),
    MathFunction("arctan2", np.arctan2, _atan2, (-10, 10), arity=2, signed_zeros=True,
                 special=((0.0, 0.0), (0.0, -0.0), (1.0, 0.0), (-1.0, 0.0), (1e-300, 1e300), (1e300, 1e-300),
                          (1.0, -1.0), (5e-324, -1.0), (3.0, 4.0))),
    MathFunction("sinh", np.sinh, mpmath.sinh, (-20, 20),
                 special=(1e-15, -1e-15, 1e-300, 5e-324, 1e-8, 0.5, 710.47586, 710.4758600739439, 89.4, -89.4)),
    MathFunction("cosh", np.cosh, mpmath.cosh, (-20, 20),
                 special=(1e-15, 1e-300, 0.0, 0.5, 710.47586, 710.4758600739439, 89.4, -89.4)),
    MathFunction("tanh", np.tanh, mpmath.tanh, (-20, 20),
                 special=(1e-15, -1e-15, 1e-300, 5e-324, 1e-8, 1e-4, 0.01, 0.5, 19.0, 22.0, 9.0)),
    MathFunction("cbrt", np.cbrt, _cbrt, (-10, 10),
                 special=tuple(float(k ** 3) for k in range(-30, 31)) + (5e-324, 1e-310, 1e300)),
    MathFunction("sqrt", np.sqrt, lambda x: None if x < 0 else mpmath.sqrt(x), (0, 10),
                 special=(4.0, 2.0, 5e-324, 1e-310, 0.0, -1.0, 1e308)),
    MathFunction("pow", np.power, _pow, (0, 4), domain=lambda a, b: a >= 0, arity=2,
                 special=((2.0, 10.0), (2.0, -10.0), (10.0, 5.0), (0.5, 1074.0), (1.0000001, 1e7), (3.0, 0.5),
                          (0.0, 2.0), (1e-300, 0.5),
                          # huge and tiny results, where |y log x| is large (exp(y log x) loses ulps)
                          (2.0 ** 40, -10.25), (2.0 ** 40, -10.2999), (2.0 ** -40, 7.3), (2.0 ** 40, 25.57),
                          (1e10, 30.5), (1e-10, 30.5), (7.0, 364.1), (0.999, 7e5), (1.5, -1800.3),
                          (2.0 ** 30, 4.2), (2.0 ** 30, -4.9), (3.0, 89.7), (3.0, -94.1))),
    MathFunction("hypot", np.hypot, lambda a, b: mpmath.sqrt(a * a + b * b), (-10, 10), arity=2,
                 special=((3.0, 4.0), (1e300, 1e300), (1e-300, 1e-300), (5e-324, 5e-324), (0.0, 0.0),
                          (1e308, 1.0), (-5.0, 12.0))),
]
FUNCTIONS_BY_NAME = {f.name: f for f in FUNCTIONS}


# --------------------------------------------------------------------------- samples

def sample(fn: MathFunction, dtype, points: int, seed: int = 0) -> list[np.ndarray]:
    """`points` random points (half log-uniform over the whole range, half uniform in the
    core interval) plus the function's special points, one array per operand, padded to
    a multiple of 16 elements so that a long-array run is all vector-loop iterations."""
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)
    smallest = float(np.nextafter(dtype(0), dtype(1)))
    columns = []
    for _ in range(fn.arity):
        wide = np.exp(rng.uniform(math.log(smallest), math.log(float(info.max)), points // 2))
        wide *= rng.choice([-1.0, 1.0], wide.shape)
        core = rng.uniform(*fn.core, points - points // 2)
        columns.append(np.concatenate([wide, core]))
    specials = [s if isinstance(s, tuple) else (s,) for s in fn.special]
    with np.errstate(over="ignore"):
        columns = [np.concatenate([c, [s[k] for s in specials]]).astype(dtype) for k, c in enumerate(columns)]
    keep = fn.domain(*columns) & np.all([np.isfinite(c) for c in columns], axis=0)
    columns = [c[keep] for c in columns]
    pad = -len(columns[0]) % 16
    return [np.concatenate([c, c[:pad]]) if pad else c for c in columns]


# --------------------------------------------------------------------------- ulp errors

def _precision(dtype) -> tuple[int, int, float]:
    info = np.finfo(dtype)
    return info.nmant + 1, int(info.minexp), float(info.max)


def ulp_error(result: float, exact, dtype) -> float:
    """|result - exact| in units in the last place of `exact` in `dtype` (subnormal ulps
    below the normal range); inf for a wrong NaN, infinity or sign of infinity."""
    if exact is None:
        return 0.0 if math.isnan(result) else math.inf
    if math.isnan(result):
        return math.inf
    bits, min_exp, largest = _precision(dtype)
    if mpmath.isinf(exact) or abs(exact) > largest:
        beyond = mpmath.isinf(exact) or abs(exact) >= largest + mpmath.ldexp(1, int(math.log2(largest)) - bits)
        if math.isinf(result):
            return 0.0 if beyond and (result > 0) == (exact > 0) else math.inf
        if mpmath.isinf(exact):
            return math.inf
    elif math.isinf(result):
        return math.inf
    if exact == 0:
        return 0.0 if result == 0 else float(abs(mpmath.mpf(result)) / mpmath.ldexp(1, min_exp - bits + 1))
    exponent = max(int(mpmath.floor(mpmath.log(abs(exact), 2))), min_exp)
    return float(abs(mpmath.mpf(result) - exact) / mpmath.ldexp(1, exponent - bits + 1))


def exact_values(fn: MathFunction, columns) -> list:
    convert = float if fn.signed_zeros else (lambda v: mpmath.mpf(float(v)))
    return [fn.exact(*[convert(c[i]) for c in columns]) for i in range(len(columns[0]))]


def max_error(results: np.ndarray, exact: list, dtype) -> tuple[float, int]:
    """The largest ulp error and the index of the point where it occurs."""
    errors = [ulp_error(float(r), e, dtype) for r, e in zip(results, exact, strict=True)]
    worst = int(np.argmax(errors))
    return errors[worst], worst


# --------------------------------------------------------------------------- the three runs

def run_numpy(fn: MathFunction, columns) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(fn.numpy(*columns))


def run_vectorized(fn: MathFunction, columns) -> np.ndarray:
    """The whole sample as one array: the compiled vector loop."""
    with np.errstate(all="ignore"):
        return np.asarray(jitgrad.jit(fn.numpy)(*columns))


def run_scalar(fn: MathFunction, columns) -> np.ndarray:
    """One point at a time in 1-element arrays: the scalar library call."""
    compiled = jitgrad.jit(fn.numpy)
    out = np.empty(len(columns[0]), columns[0].dtype)
    for i in range(len(out)):
        out[i] = compiled(*[c[i:i + 1] for c in columns])[0]
    return out


@dataclass
class Row:
    name: str
    dtype: str
    points: int
    vectorized: float
    scalar: float
    numpy: float
    worst_input: str


def measure(fn: MathFunction, dtype, points: int, seed: int = 0) -> Row:
    columns = sample(fn, dtype, points, seed)
    exact = exact_values(fn, columns)
    errors, worst_at = {}, {}
    for label, run in (("vectorized", run_vectorized), ("scalar", run_scalar), ("numpy", run_numpy)):
        errors[label], worst_at[label] = max_error(run(fn, columns), exact, dtype)
    worst = max(("vectorized", "scalar"), key=lambda k: errors[k])
    where = ", ".join(repr(float(c[worst_at[worst]])) for c in columns)
    return Row(fn.name, np.dtype(dtype).name, len(columns[0]), errors["vectorized"], errors["scalar"],
               errors["numpy"], where)


def machine() -> str:
    import llvmlite.binding as llvm
    from jitgrad.backends.cpu.engine import host_cpu, initialize
    initialize()
    cpu = host_cpu()[0]
    libc = " ".join(platform.libc_ver())
    return (f"{platform.processor() or platform.machine()}, LLVM CPU {cpu}, {libc}, NumPy {np.__version__}, "
            f"llvmlite {llvm.llvm_version_info}, mpmath {mpmath.__version__}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=4000, help="random points per function and dtype")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print("| function | dtype | points | jitgrad vectorized | jitgrad scalar | NumPy | bound | worst input |")
    print("|---|---|---|---|---|---|---|---|")
    from jitgrad.primitives import ULP_BOUNDS
    failed = False
    for fn in FUNCTIONS:
        for dtype in (np.float64, np.float32, np.float16):
            row = measure(fn, dtype, args.points if dtype != np.float16 else args.points // 4, args.seed)
            bound = ULP_BOUNDS[fn.name][row.dtype.replace("float", "f")]
            failed |= max(row.vectorized, row.scalar) > bound
            print(f"| {row.name} | {row.dtype} | {row.points} | {row.vectorized:.3g} | {row.scalar:.3g} | "
                  f"{row.numpy:.3g} | {bound} | {row.worst_input} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
