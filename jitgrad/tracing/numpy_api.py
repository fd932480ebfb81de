"""NumPy's API built from jitgrad primitives at trace time.

Functions here take IR `Value`s or constants (Python scalars, NumPy arrays) and emit
primitives into the active builder. They implement NumPy's semantics: type promotion
(NEP 50: Python scalars are weak and take the array's dtype), broadcasting (explicit
`broadcast_in_dim` ops, so primitives never broadcast), axis/keepdims handling.
Derived functions (mean, var, softmax-style code, clip, ...) need no rules of their own:
their derivatives come from the primitives they are built from.
"""
from __future__ import annotations

import builtins
import contextlib
import math
import operator
import threading
from typing import Any

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import DTypeError, IndexingError, ShapeError, UnsupportedOperationError
from jitgrad.ir import DType, Value
from .implicit import implicit_value

# --------------------------------------------------------------------------- dtypes & constants


_WEAK = threading.local()


@contextlib.contextmanager
def weak_scalars(values):
    """Within this block the traced `values` (a mapping Value -> `TensorType.weak`) promote
    as Python scalars (NEP 50's weak scalars): they are Python floats, ints and bools passed
    as arguments, and the results of Python operators on them only (`s * 2`), as in NumPy
    where those stay Python scalars. The tracer opens it around every NumPy call."""
    saved = getattr(_WEAK, "values", {})
    _WEAK.values = dict(values)
    try:
        yield
    finally:
        _WEAK.values = saved


def _is_weak(x) -> bool:
    if isinstance(x, Value):
        return x in getattr(_WEAK, "values", ())
    return isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic)


_PYTHON_KIND = {DType.bool: bool, DType.i64: int, DType.f64: float, DType.c128: complex}


def _weak_kind(x) -> type:
    """bool, int or float: the Python type of a weak operand."""
    if isinstance(x, Value):
        return _PYTHON_KIND[x.type.dtype]
    return bool if isinstance(x, bool) else int if isinstance(x, int) else float if isinstance(x, float) else complex


def _strong_dtype(x) -> np.dtype:
    return np.dtype(x.type.dtype.numpy) if isinstance(x, Value) else np.asarray(x).dtype


def _supported(dtype: np.dtype) -> DType:
    try:
        return DType.from_numpy(dtype)
    except KeyError:
        raise DTypeError(f"dtype {dtype} is not supported by jitgrad (supported: "
                         f"{', '.join(str(d.numpy) for d in DType)})") from None


def result_dtype(*operands, min_float: bool = False) -> DType:
    """NumPy 2 promotion (np.result_type under NEP 50): strong operands decide, weak
    Python scalars only lift the kind (an int array and a Python float give float64)."""
    descriptors = [_weak_kind(x)() if _is_weak(x) else _strong_dtype(x) for x in operands]
    try:
        dtype = np.result_type(*descriptors) if descriptors else np.dtype(np.float64)
    except (TypeError, np.exceptions.DTypePromotionError) as err:
        raise DTypeError(f"no common dtype: {err}") from None
    if min_float and dtype.kind in "biu":
        dtype = np.dtype(np.float64)
    return _supported(dtype)


def ufunc_dtypes(ufunc, *operands) -> tuple[list[DType], list[DType]]:
    """The loop NumPy itself selects for `ufunc` on these operands (`ufunc.resolve_dtypes`,
    NEP 50 for weak scalars): the dtypes the inputs are cast to and the output dtypes.
    `np.sqrt(int8)` is float16, `int ** float` float64, `reciprocal(int)` an int."""
    # NumPy's resolver takes the types int and float as weak scalars; a Python bool
    # promotes as np.bool_ (the lowest kind) either way.
    # Only Python scalars: NumPy converts them to default arrays (int64, float64, bool).
    all_weak = all(_is_weak(x) for x in operands)
    descriptors = tuple(_weak_kind(x) if _is_weak(x) and _weak_kind(x) is not bool and not all_weak
                        else np.dtype(_weak_kind(x)) if _is_weak(x) else _strong_dtype(x)
                        for x in operands)
    try:
        loop = ufunc.resolve_dtypes(descriptors + (None,) * ufunc.nout)
    except (TypeError, ValueError, np.exceptions.DTypePromotionError) as err:
        raise DTypeError(f"numpy.{ufunc.__name__}: {err}") from None
    dtypes = [_supported(d) for d in loop]
    return dtypes[:ufunc.nin], dtypes[ufunc.nin:]


def as_value(x, dtype: DType | None = None) -> Value:
    """An IR value for `x`: Values are converted to `dtype`, constants become constant ops."""
    if isinstance(x, Value):
        if dtype is not None and dtype.is_integer:
            holding = getattr(_WEAK, "values", {}).get(x)
            if isinstance(holding, frozenset) and dtype not in holding:     # NumPy: OverflowError
                raise DTypeError(f"the Python int passed as an argument is out of bounds for {dtype.numpy} "
                                 "(NumPy raises OverflowError)")
        return P.convert(x, dtype) if dtype is not None else x
    outside = implicit_value(x)          # an array read from a closure, global or attribute
    if outside is not None:
        return P.convert(outside, dtype) if dtype is not None and dtype != outside.type.dtype else outside
    array = np.asarray(x)
    if array.dtype == object and isinstance(x, (list, tuple)) and x:
        # a list holding traced values (np.concatenate([a, [s]])): np.asarray stacks its
        # items with strong promotion, as np.stack does
        return as_value(stack(list(x)), dtype)
    if array.dtype == object:
        raise UnsupportedOperationError(f"cannot use an object of type {type(x).__name__} as an array")
    target = dtype if dtype is not None else result_dtype(x)
    if isinstance(x, int) and not isinstance(x, bool) and target.is_integer:
        info = np.iinfo(target.numpy)
        if not info.min <= x <= info.max:     # NumPy 2 raises OverflowError here
            raise DTypeError(f"Python integer {x} out of bounds for {target.numpy}")
    return P.constant(array.astype(target.numpy, copy=False), target)


def promote(*operands, min_float: bool = False) -> list[Value]:
    dtype = result_dtype(*operands, min_float=min_float)
    return [as_value(x, dtype) for x in operands]


# --------------------------------------------------------------------------- broadcasting

def broadcast_shapes(*shapes) -> tuple[int, ...]:
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(ndim):
        sizes = {s[k - ndim + len(s)] for s in shapes if k - ndim + len(s) >= 0} - {1}
        if len(sizes) > 1:
            raise ShapeError("operands could not be broadcast together with shapes "
                             + " ".join(str(tuple(s)) for s in shapes))
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def broadcast_to(x: Value, shape) -> Value:
    shape = tuple(shape)
    if x.type.shape == shape:
        return x
    if len(shape) < x.type.ndim or broadcast_shapes(x.type.shape, shape) != shape:
        raise ShapeError(f"cannot broadcast shape {x.type.shape} to {shape}")
    lead = len(shape) - x.type.ndim
    return P.broadcast_in_dim(x, shape, tuple(range(lead, len(shape))))


def broadcast_values(*values: Value) -> list[Value]:
    shape = broadcast_shapes(*[v.type.shape for v in values])
    return [broadcast_to(v, shape) for v in values]


def _elementwise(prim_fn, *operands, min_float=False, dtype: DType | None = None):
    values = [as_value(x, dtype) for x in operands] if dtype else promote(*operands, min_float=min_float)
    return prim_fn(*broadcast_values(*values))


def binary(prim_fn, min_float=False):
    return lambda a, b: _elementwise(prim_fn, a, b, min_float=min_float)


def unary_float(prim_fn):
    return lambda x: prim_fn(promote(x, min_float=True)[0])


# --------------------------------------------------------------------------- arithmetic

def power(x, y):
    """x ** y; a static integer exponent becomes exact repeated multiplication."""
    static = _is_weak(y) and not isinstance(y, (Value, complex))   # a real Python number written in the code
    if static and math.isfinite(y) and float(y) == int(y) and builtins.abs(y) <= 64 \
            and not (y < -1 and result_dtype(x, y).is_float):   # 1 / x**2 overflows where pow does not
        base = promote(x)[0] if not _is_weak(x) else as_value(x)
        if y < 0 and not base.type.dtype.is_float and base.type.size == 0:
            return base          # NumPy checks elements at run time: an empty array passes
        return P.integer_pow(base, int(y))
    if static and y == 0.5 and not result_dtype(x, y).is_complex:      # NumPy's complex power is cpow, not csqrt
        return P.sqrt(promote(x, min_float=True)[0])
    if not result_dtype(x, y).is_float:
        return _elementwise(P.power, x, y)      # integers: wrap-around repeated squaring
    return _elementwise(P.power, x, y, min_float=True)


def float_power(x, y):
    """NumPy computes float_power in float64 whatever the input precision."""
    return _elementwise(P.power, x, y, dtype=DType.f64)


def _ignoring_nan(prim_fn):
    """fmax/fmin: like maximum/minimum, but a NaN loses to a number."""
    def fn(a, b):
        a, b = broadcast_values(*promote(a, b))
        if not (a.type.dtype.is_float or a.type.dtype.is_complex):
            return prim_fn(a, b)
        if a.type.dtype.is_complex:         # a NaN in either part; both NaN: the first, as NumPy
            return P.select(P.ne(b, b), a, P.select(P.ne(a, a), b, prim_fn(a, b)))
        return P.select(P.ne(a, a), b, P.select(P.ne(b, b), a, prim_fn(a, b)))
    return fn


def true_divide(a, b):
    return _elementwise(P.div, a, b, min_float=True)


def square(x):
    return P.integer_pow(as_value(x), 2)


def reciprocal(x):
    """1 / x; on integers NumPy's C cast of the double 1.0 / x (1, -1 or 0; x = 0 gives
    what the cast of inf gives, see `convert`)."""
    x = as_value(x)
    if x.type.dtype.is_float:
        return true_divide(P.full(1, x.type), x)
    quotient = P.div(P.full(1.0, x.type.with_dtype(DType.f64)), P.convert(x, DType.f64))
    return P.convert(quotient, x.type.dtype)


def absolute(x):
    return P.absolute(as_value(x))


def positive(x):
    return as_value(x)


def negative(x):
    return P.neg(as_value(x))


def sign(x):
    return P.sign(as_value(x))


def arctan2(y, x):
    return _elementwise(P.arctan2, y, x, min_float=True)


def sinh(x):
    return P.sinh(promote(x, min_float=True)[0])


def cosh(x):
    return P.cosh(promote(x, min_float=True)[0])


def log2(x):
    return P.log2(promote(x, min_float=True)[0])


def log10(x):
    return P.log10(promote(x, min_float=True)[0])


def exp2(x):
    return P.exp2(promote(x, min_float=True)[0])


def cbrt(x):
    return P.cbrt(promote(x, min_float=True)[0])


def hypot(a, b):
    return _elementwise(P.hypot, a, b, min_float=True)


def logaddexp(a, b):
    """log(exp a + exp b) = max + log1p(exp(-|a - b|)), stable for large inputs."""
    a, b = broadcast_values(*promote(a, b, min_float=True))
    # a - b is NaN when both are the same infinity; the answer is then max(a, b) itself.
    diff = P.sub(a, b)
    diff = P.select(P.eq(a, b), P.full(0, diff.type), diff)
    return P.add(P.maximum(a, b), P.log1p(P.exp(P.neg(P.absolute(diff)))))


def logical(prim_fn):
    return lambda *xs: prim_fn(*broadcast_values(*[as_value(x, DType.bool) for x in xs]))


# NumPy's bool loops of arithmetic ufuncs are logical operations.
def _on_bool(bool_fn, fn):
    def impl(*xs):
        if all(isinstance(x, Value) and x.type.dtype == DType.bool or isinstance(x, (bool, np.bool_)) for x in xs):
            return bool_fn(*broadcast_values(*[as_value(x, DType.bool) for x in xs]))
        return fn(*xs)
    return impl


def _compare(prim_fn, symbol: str):
    """A comparison; int64 against uint64 compares exactly, as NumPy 2 does (a negative
    int64 is below every uint64), where a common dtype would round to float64."""
    def impl(a, b):
        beyond = _beyond_range(symbol, b, a, True)
        beyond = beyond if beyond is not None else _beyond_range(symbol, a, b, False)
        if beyond is not None:
            return beyond
        a_dtype = a.type.dtype if isinstance(a, Value) else None
        b_dtype = b.type.dtype if isinstance(b, Value) else None
        if a_dtype is None or b_dtype is None or a_dtype == b_dtype or not (a_dtype.is_integer and b_dtype.is_integer):
            return _elementwise(prim_fn, a, b)
        a, b = broadcast_values(a, b)
        signed_is_left = a_dtype.is_signed
        signed, unsigned = (a, b) if signed_is_left else (b, a)
        negative = P.lt(signed, P.full(0, signed.type))
        as_unsigned = P.convert(signed, unsigned.type.dtype)
        exact = prim_fn(*((as_unsigned, unsigned) if signed_is_left else (unsigned, as_unsigned)))
        left_is_smaller = signed_is_left          # where the signed operand is negative
        when_negative = {"==": False, "!=": True, "<": left_is_smaller, "<=": left_is_smaller,
                         ">": not left_is_smaller, ">=": not left_is_smaller}[symbol]
        return P.select(negative, P.full(when_negative, exact.type), exact)
    return impl


def _beyond_range(symbol: str, scalar, array, array_is_left: bool):
    """NumPy 2 compares an integer array with a Python int its dtype cannot hold
    (`uint8_array == -1`) by value: the same answer for every element; else None."""
    if not (isinstance(scalar, int) and not isinstance(scalar, bool) and isinstance(array, Value)
            and array.type.dtype.is_integer):
        return None
    info = np.iinfo(array.type.dtype.numpy)
    if info.min <= scalar <= info.max:
        return None
    answer = {"==": False, "!=": True}.get(symbol)
    if answer is None:
        array_is_smaller = scalar > info.max
        left_is_smaller = array_is_smaller if array_is_left else not array_is_smaller
        answer = left_is_smaller if symbol in ("<", "<=") else not left_is_smaller
    return P.full(answer, array.type.with_dtype(DType.bool))


def _integer_only(prim_fn, name):
    def impl(*xs):
        values = promote(*xs)
        if any(v.type.dtype.is_float for v in values):
            raise DTypeError(f"numpy.{name} is not supported for floating-point operands "
                             "(NumPy has no such loop)")
        return prim_fn(*broadcast_values(*values))
    return impl


def divmod_(a, b):
    return _elementwise(P.floor_divide, a, b), _elementwise(P.remainder, a, b)


_NARROW_FLOATS = (DType.f16, DType.bf16)
_COMPARISONS = (np.equal, np.not_equal, np.less, np.less_equal, np.greater, np.greater_equal)
_EXTREMA = (np.maximum, np.minimum, np.fmax, np.fmin)


def _numpy_loop(ufunc, impl):
    """`impl` run on operands cast to the loop NumPy selects for `ufunc` (its input
    dtypes, NEP 50 for weak scalars), with results cast to the loop's output dtypes.
    Python scalars stay Python scalars (static exponents, range checks on ints)."""
    def run(*operands):
        if ufunc in _COMPARISONS:
            # A Python int argument is only known at run time, and NumPy compares a Python
            # int by its value: compare it as a (strong) int64.
            weak = getattr(_WEAK, "values", {})
            with weak_scalars({v: w for v, w in weak.items() if v.type.dtype != DType.i64}):
                return resolved(*operands)
        return resolved(*operands)

    def resolved(*operands):
        in_dtypes, out_dtypes = ufunc_dtypes(ufunc, *operands)
        if any(d in _NARROW_FLOATS for d in in_dtypes):
            # NumPy's float16 loops (and ml_dtypes' bfloat16 ones) convert the operands,
            # compute in float32 and round the result once: composite functions
            # (logaddexp, tan, ...) must not round their intermediate steps.
            cast = [P.convert(as_value(x, d), DType.f32) if d in _NARROW_FLOATS else as_value(x, d)
                    for x, d in zip(operands, in_dtypes, strict=True)]
            if ufunc in _EXTREMA and in_dtypes[0] == DType.f16:
                # Between +0 and -0 (a tie) NumPy's float16 loops return the first operand,
                # its float32 loops (and the primitives) the second.
                cast = cast[::-1]
        else:
            cast = [x if _is_weak(x) and not isinstance(x, Value) else as_value(x, d)
                    for x, d in zip(operands, in_dtypes, strict=True)]
        result = impl(*cast)
        if isinstance(result, tuple):
            return tuple(P.convert(as_value(r), d) for r, d in zip(result, out_dtypes, strict=True))
        return P.convert(as_value(result), out_dtypes[0])
    run.__name__ = ufunc.__name__
    return run


_UFUNC_IMPLS: dict[Any, Any] = {
    np.add: _on_bool(P.bit_or, binary(P.add)), np.subtract: binary(P.sub),
    np.multiply: _on_bool(P.bit_and, binary(P.mul)),
    np.true_divide: true_divide, np.power: power, np.float_power: float_power,
    np.negative: negative, np.positive: positive, np.square: _on_bool(lambda x: x, square),
    np.reciprocal: reciprocal,
    np.maximum: _on_bool(P.bit_or, binary(P.maximum)), np.minimum: _on_bool(P.bit_and, binary(P.minimum)),
    np.fmax: _on_bool(P.bit_or, _ignoring_nan(P.maximum)), np.fmin: _on_bool(P.bit_and, _ignoring_nan(P.minimum)),
    np.exp: unary_float(P.exp), np.log: unary_float(P.log), np.log1p: unary_float(P.log1p),
    np.expm1: unary_float(P.expm1), np.sin: unary_float(P.sin), np.cos: unary_float(P.cos),
    np.tan: unary_float(P.tan), np.tanh: unary_float(P.tanh), np.sinh: sinh, np.cosh: cosh,
    np.arcsin: unary_float(P.arcsin), np.arccos: unary_float(P.arccos), np.arctan: unary_float(P.arctan),
    np.arcsinh: unary_float(P.arcsinh), np.arccosh: unary_float(P.arccosh), np.arctanh: unary_float(P.arctanh),
    np.arctan2: arctan2,
    np.sqrt: unary_float(P.sqrt), np.absolute: _on_bool(lambda x: x, absolute), np.fabs: absolute,
    np.sign: sign,
    np.log2: log2, np.log10: log10, np.exp2: exp2, np.cbrt: cbrt, np.hypot: hypot, np.logaddexp: logaddexp,
    np.equal: _compare(P.eq, "=="), np.not_equal: _compare(P.ne, "!="), np.less: _compare(P.lt, "<"),
    np.less_equal: _compare(P.le, "<="), np.greater: _compare(P.gt, ">"),
    np.greater_equal: _compare(P.ge, ">="),
    np.logical_and: logical(P.logical_and), np.logical_or: logical(P.logical_or),
    np.logical_not: logical(P.logical_not), np.logical_xor: logical(P.bit_xor),
    np.bitwise_and: _integer_only(P.bit_and, "bitwise_and"), np.bitwise_or: _integer_only(P.bit_or, "bitwise_or"),
    np.bitwise_xor: _integer_only(P.bit_xor, "bitwise_xor"), np.invert: _integer_only(P.bit_not, "invert"),
    np.left_shift: _integer_only(P.shift_left, "left_shift"),
    np.right_shift: _integer_only(P.shift_right, "right_shift"),
    np.floor_divide: binary(P.floor_divide), np.remainder: binary(P.remainder), np.fmod: binary(P.fmod),
    np.divmod: divmod_,
}

UFUNCS: dict[Any, Any] = {ufunc: _numpy_loop(ufunc, impl) for ufunc, impl in _UFUNC_IMPLS.items()}
UFUNCS[np.matmul] = lambda a, b: matmul(a, b)


# --------------------------------------------------------------------------- reductions

def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of bounds for array of dimension {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {tuple(axes)}")
    return tuple(sorted(out))


def ufunc_reduce_axes(axis, ndim: int) -> tuple[int, ...]:
    """normalize_axes for the reductions NumPy computes with ufunc.reduce (sum, max, min,
    prod, any, all): those also take the integer axis 0 or -1 of a 0-d array and reduce
    over nothing (np.sum(np.array(1.0), axis=0) is 1.0; a tuple axis is an error there)."""
    if ndim == 0 and axis is not None and not isinstance(axis, (tuple, list)) and operator.index(axis) in (0, -1):
        return ()
    return normalize_axes(axis, ndim)


def _keep(result: Value, x: Value, axes, keepdims: bool) -> Value:
    if not keepdims:
        return result
    shape = tuple(1 if k in axes else n for k, n in enumerate(x.type.shape))
    return P.reshape(result, shape)


def _reject(name, **unsupported):
    for key, value in unsupported.items():
        if value is not None and value is not np._NoValue:
            raise UnsupportedOperationError(f"numpy.{name}: the argument {key}= is not supported")


def sum(x, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):  # noqa: A001
    _reject("sum", out=out, initial=initial, where=where)
    x = as_value(x)
    if dtype is not None:
        x = P.convert(x, _supported(np.dtype(dtype)))
    elif x.type.dtype == DType.bool or x.type.dtype.is_integer:
        # NumPy sums bool and narrow integers in the platform integer (uint64 if unsigned)
        x = P.convert(x, DType.u64 if x.type.dtype.is_unsigned else DType.i64)
    axes = ufunc_reduce_axes(axis, x.type.ndim)
    return _keep(P.reduce_sum(x, axes), x, axes, keepdims)


def _extremum(prim_fn, name):
    def reduce(x, axis=None, out=None, keepdims=False, initial=None, where=None):
        _reject(name, out=out, initial=initial, where=where)
        x = as_value(x)
        axes = ufunc_reduce_axes(axis, x.type.ndim)
        reduced = math.prod(x.type.shape[a] for a in axes)
        if reduced == 0:         # NumPy raises even when the result is empty too (shape (0, 0), axis 1)
            raise ShapeError(f"zero-size array to reduction operation {name} which has no identity")
        if x.type.dtype == DType.bool:       # any / all, as NumPy's max / min of bools
            return _keep(P.convert(prim_fn(P.convert(x, DType.u8), axes), DType.bool), x, axes, keepdims)
        return _keep(prim_fn(x, axes), x, axes, keepdims)
    return reduce


amax = _extremum(P.reduce_max, "max")
amin = _extremum(P.reduce_min, "min")


def _arg_extremum(reduce_fn, name):
    def arg(x, axis=None, out=None, keepdims=False):
        """The first index of the extremum (of the first NaN, as NumPy), from a comparison
        with the reduced value and a minimum over an index constant: no new primitive."""
        _reject(name, out=out)
        x = as_value(x)
        if x.type.dtype == DType.bool:
            x = P.convert(x, DType.u8)
        if axis is None:
            x, axis = P.reshape(x, (x.type.size,)), 0
        (axis,) = normalize_axes(axis, x.type.ndim)
        n = x.type.shape[axis]
        if n == 0:
            raise ShapeError(f"attempt to get {name} of an empty sequence")
        best = P.broadcast_in_dim(reduce_fn(x, (axis,)), x.type.shape,
                                  tuple(k for k in range(x.type.ndim) if k != axis))
        hit = P.eq(x, best)
        if x.type.dtype.is_float or x.type.dtype.is_complex:       # complex: a NaN in either part
            hit = P.logical_or(hit, P.ne(x, x))
        positions = P.broadcast_in_dim(P.constant(np.arange(n), DType.i64), x.type.shape, (axis,))
        index = P.reduce_min(P.select(hit, positions, P.full(n, positions.type)), (axis,))
        return _keep(index, x, (axis,), keepdims)
    return arg


argmax = _arg_extremum(P.reduce_max, "argmax")
argmin = _arg_extremum(P.reduce_min, "argmin")


def mean(x, axis=None, dtype=None, out=None, keepdims=False, where=None):
    _reject("mean", out=out, where=where)
    x = promote(x, min_float=True)[0] if dtype is None else as_value(x, DType.from_numpy(dtype))
    if x.type.dtype == DType.f16 and dtype is None:     # NumPy: float32 intermediates
        return P.convert(mean(P.convert(x, DType.f32), axis=axis, keepdims=keepdims), DType.f16)
    axes = normalize_axes(axis, x.type.ndim)
    count = math.prod(x.type.shape[a] for a in axes)
    total = sum(x, axis=axes, keepdims=keepdims)
    return _divide_by_count(total, count)


def _divide_by_count(total: Value, count: int) -> Value:
    """total / count as NumPy's mean and var divide: by the count as an integer, so in
    float64 (complex128) and rounded to the result's dtype once (an innocuous double
    rounding for division). A count in a narrow dtype would round, or overflow float16
    beyond 65504 elements, and make the variance of 70,000 float16 values 0."""
    dtype = total.type.dtype
    wide = DType.c128 if dtype.is_complex else DType.f64
    if dtype == wide:
        return P.div(total, P.full(float(count), total.type))
    quotient = P.div(P.convert(total, wide), P.full(float(count), total.type.with_dtype(wide)))
    return P.convert(quotient, dtype)


def var(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, where=None, mean_=None):
    _reject("var", out=out, where=where)
    x = promote(x, min_float=True)[0] if dtype is None else as_value(x, DType.from_numpy(dtype))
    axes = normalize_axes(axis, x.type.ndim)
    centered = P.sub(x, broadcast_to(mean(x, axis=axes, keepdims=True), x.type.shape))
    count = math.prod(x.type.shape[a] for a in axes) - ddof
    if centered.type.dtype.is_complex:         # NumPy: the real part of c * conj(c), re^2 + im^2
        re, im = P.complex_numbers.real(centered), P.complex_numbers.imag(centered)
        total = sum(P.add(P.mul(re, re), P.mul(im, im)), axis=axes, keepdims=keepdims)
        return _divide_by_count(total, count)
    total = sum(P.integer_pow(centered, 2), axis=axes, keepdims=keepdims)
    return _divide_by_count(total, count)


def std(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, where=None):
    return P.sqrt(var(x, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims, where=where))


# --------------------------------------------------------------------------- products

def matmul(a, b):
    """NumPy's matmul: vectors are promoted to matrices and back; leading axes broadcast."""
    (a_dtype, b_dtype), _ = ufunc_dtypes(np.matmul, a, b)     # bfloat16 @ bfloat16 is float32
    return _matmul_values(as_value(a, a_dtype), as_value(b, b_dtype))


def _matmul_values(a: Value, b: Value) -> Value:
    if a.type.ndim == 0 or b.type.ndim == 0:
        raise ShapeError("matmul: input operand does not have enough dimensions (scalars are not allowed)")
    if a.type.ndim == 1 and b.type.ndim == 1:
        return _checked_dot(a, b, ((0,), (0,)))
    if b.type.ndim == 1:
        return _checked_dot(a, b, ((a.type.ndim - 1,), (0,)))
    if a.type.ndim == 1:
        out = _checked_dot(P.reshape(a, (1, a.type.shape[0])), b, ((1,), (b.type.ndim - 2,)),
                           batch_b=b.type.ndim > 2)
        return P.reshape(out, out.type.shape[:-2] + out.type.shape[-1:])
    batch = broadcast_shapes(a.type.shape[:-2], b.type.shape[:-2])
    if a.type.ndim == 2 and b.type.ndim == 2:
        return _checked_dot(a, b, ((1,), (0,)))
    a = broadcast_to(a, batch + a.type.shape[-2:])
    b = broadcast_to(b, batch + b.type.shape[-2:])
    nb = len(batch)
    return _checked_dot(a, b, ((nb + 1,), (nb,)), batch=(tuple(range(nb)), tuple(range(nb))))


def _checked_dot(a, b, contract, batch=((), ()), batch_b=False):
    if batch_b:  # 1-d @ n-d: broadcast the vector over b's batch axes first
        nb = b.type.ndim - 2
        a = broadcast_to(a, b.type.shape[:-2] + a.type.shape)
        contract, batch = ((nb + 1,), (nb,)), (tuple(range(nb)), tuple(range(nb)))
    for la, rb in zip(*contract, strict=True):
        if a.type.shape[la] != b.type.shape[rb]:
            raise ShapeError(f"matmul: shapes {a.type.shape} and {b.type.shape} don't multiply: "
                             f"size {a.type.shape[la]} is different from {b.type.shape[rb]}")
    return _dot_general(a, b, contract, batch)


def _dot_general(a: Value, b: Value, contract, batch=((), ())) -> Value:
    """dot_general with NumPy's accumulation: narrow floats in float32 (rounded once),
    bool as any(a and b)."""
    dtype = a.type.dtype
    if dtype in (DType.f16, DType.bf16):
        wide = P.dot_general(P.convert(a, DType.f32), P.convert(b, DType.f32), contract, batch)
        return P.convert(wide, dtype)
    if dtype == DType.bool:                  # a count of the pairs, nonzero
        count = P.dot_general(P.convert(a, DType.i64), P.convert(b, DType.i64), contract, batch)
        return P.ne(count, P.full(0, count.type))
    return P.dot_general(a, b, contract, batch)


def _promote_strong(*operands) -> list[Value]:
    """np.dot, inner, outer, tensordot and stack convert their operands with np.asarray
    first: a Python scalar there (written or passed as an argument) is a strong
    int64/float64."""
    with weak_scalars({}):
        return promote(*[np.asarray(x) if _is_weak(x) else x for x in operands])


def dot(a, b, out=None):
    _reject("dot", out=out)
    a, b = _promote_strong(a, b)
    if a.type.ndim == 0 or b.type.ndim == 0:
        product = UFUNCS[np.multiply](a, b)       # bool: and; float16: rounded once
    elif b.type.ndim == 1 or a.type.ndim <= 2 and b.type.ndim <= 2:
        product = _matmul_values(a, b)
    else:
        return _checked_dot(a, b, ((a.type.ndim - 1,), (b.type.ndim - 2,)))
    if a.type.ndim <= 2 and b.type.ndim <= 2:
        return _scaled_as_axpy(product, a, b)
    return product


def _scaled_as_axpy(product, a, b):
    """NumPy's float32/float64 products of operands of at most two dimensions (np.dot,
    np.inner, and np.tensordot, which calls np.dot on two matrices) go to its
    cblas_matrixproduct, which takes an operand of one element as a scalar: the result is
    zero-filled and BLAS axpy adds scalar * other into it. axpy returns at once for a
    scale of 0, so the result stays +0.0 where the plain product is NaN (the other operand
    inf or NaN); any other scale adds +0.0 (-0.0 becomes +0.0). A result of one element
    is the plain product of the two (-2 * 0 is -0.0, where a sum from +0.0 gives +0.0).
    Only NaN elements are replaced, so the derivative elsewhere is the product's
    (d/d scale = other, also at a scale of 0)."""
    scalars = [v for v in (a, b) if v.type.size == 1]
    if product.type.dtype not in (DType.f32, DType.f64) or not scalars or product.type.size == 0:
        return product
    if product.type.size == 1:
        return P.reshape(P.mul(P.reshape(a, ()), P.reshape(b, ())), product.type.shape)
    zero = P.full(0.0, product.type)
    scale = P.reshape(scalars[0], ())
    scale_is_zero = broadcast_to(P.eq(scale, P.full(0.0, scale.type)), product.type.shape)
    skipped = P.logical_and(scale_is_zero, P.ne(product, product))
    return P.select(skipped, zero, P.add(product, zero))


def inner(a, b):
    a, b = _promote_strong(a, b)
    if a.type.ndim == 0 or b.type.ndim == 0:
        product = UFUNCS[np.multiply](a, b)      # bool: and; float16: rounded once
    else:
        product = _checked_dot(a, b, ((a.type.ndim - 1,), (b.type.ndim - 1,)))
    if a.type.ndim <= 2 and b.type.ndim <= 2:     # NumPy: dot(a, b with its last two axes swapped)
        return _scaled_as_axpy(product, a, b)
    return product


def outer(a, b, out=None):
    _reject("outer", out=out)
    with weak_scalars({}):                   # np.asarray on each, then np.multiply's own loop
        a, b = (as_value(np.asarray(x) if _is_weak(x) else x) for x in (a, b))
    a, b = P.reshape(a, (a.type.size, 1)), P.reshape(b, (1, b.type.size))
    return UFUNCS[np.multiply](a, b)


def tensordot(a, b, axes=2):
    a, b = _promote_strong(a, b)
    if isinstance(axes, int):
        ax_a, ax_b = tuple(range(a.type.ndim - axes, a.type.ndim)), tuple(range(axes))
    else:
        ax_a, ax_b = (tuple(x) if isinstance(x, (tuple, list)) else (x,) for x in axes)
    ax_a = tuple(x % a.type.ndim for x in ax_a)
    ax_b = tuple(x % b.type.ndim for x in ax_b)
    return _scaled_as_axpy(_checked_dot(a, b, (ax_a, ax_b)), a, b)    # NumPy: np.dot of two matrices


def einsum(subscripts, *operands, optimize=False, out=None, **kwargs):
    """np.einsum from dot_general, reduce_sum and transpose: operands are folded left to
    right; an index is summed as soon as no later operand and not the output needs it."""
    _reject("einsum", out=out)
    if kwargs or not isinstance(subscripts, str):
        raise UnsupportedOperationError("numpy.einsum: only the string form without dtype/casting is supported")
    spec = subscripts.replace(" ", "")
    if "." in spec:
        raise UnsupportedOperationError("numpy.einsum: ellipses ('...') are not supported")
    inputs, _, output = spec.partition("->")
    terms = inputs.split(",")
    if not _:
        letters = "".join(terms)
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    values = _promote_strong(*operands)      # np.einsum converts Python scalars with np.asarray
    if values and values[0].type.dtype in (DType.f16, DType.bf16):
        # NumPy's einsum refuses bfloat16, and rounds float16 sums after every addition
        raise UnsupportedOperationError(f"numpy.einsum of {values[0].type.dtype.numpy} is not supported (NumPy "
                                        "refuses bfloat16 and rounds float16 after every addition); "
                                        "convert the operands to float32")
    if len(terms) != len(values):
        raise ShapeError(f"einsum: {len(terms)} subscripts for {len(values)} operands")
    for term, v in zip(terms, values, strict=True):
        if len(term) != v.type.ndim or len(set(term)) != len(term):
            raise UnsupportedOperationError(f"einsum: subscripts {term!r} for an array of rank {v.type.ndim} "
                                            "(repeated indices — diagonals — are not supported)")
    values = _einsum_broadcast(values, terms)
    acc, acc_term = _einsum_drop(values[0], terms[0], set(output) | set("".join(terms[1:])))
    for k in range(1, len(values)):
        keep = set(output) | set("".join(terms[k + 1:]))
        b, b_term = _einsum_drop(values[k], terms[k], keep | set(acc_term))
        shared = [c for c in acc_term if c in b_term]
        batch = [c for c in shared if c in keep]
        contract = [c for c in shared if c not in keep]
        for c in shared:
            if acc.type.shape[acc_term.index(c)] != b.type.shape[b_term.index(c)]:
                raise ShapeError(f"einsum: index {c!r} has sizes {acc.type.shape[acc_term.index(c)]} and "
                                 f"{b.type.shape[b_term.index(c)]}")
        acc = _dot_general(acc, b, ([acc_term.index(c) for c in contract], [b_term.index(c) for c in contract]),
                           ([acc_term.index(c) for c in batch], [b_term.index(c) for c in batch]))
        acc_term = "".join(batch + [c for c in acc_term if c not in shared] + [c for c in b_term if c not in shared])
    acc, acc_term = _einsum_drop(acc, acc_term, set(output))
    return P.transpose(acc, [acc_term.index(c) for c in output])


def _einsum_broadcast(values: list[Value], terms: list[str]) -> list[Value]:
    """NumPy broadcasts an index of size 1 in one operand against its size in the others;
    done before any index is summed so that every operand sees the full size."""
    sizes: dict[str, int] = {}
    for term, v in zip(terms, values, strict=True):
        for c, n in zip(term, v.type.shape, strict=True):
            if sizes.get(c, 1) != 1 and n not in (1, sizes[c]):
                raise ShapeError(f"einsum: index {c!r} has sizes {sizes[c]} and {n}")
            if n != 1 or c not in sizes:
                sizes[c] = n
    return [P.broadcast_in_dim(v, tuple(sizes[c] for c in term), tuple(range(len(term))))
            for term, v in zip(terms, values, strict=True)]


def _einsum_drop(x: Value, term: str, keep: set) -> tuple[Value, str]:
    """Sum out the indices of `term` that nothing after needs."""
    axes = [k for k, c in enumerate(term) if c not in keep]
    return P.reduce_sum(x, axes), "".join(c for c in term if c in keep)


# --------------------------------------------------------------------------- shape functions

def reshape(x, *shape, order="C", newshape=None, **kwargs):
    if order != "C":
        raise UnsupportedOperationError(f"reshape: order={order!r} is not supported (only 'C')")
    if newshape is not None:
        shape = (newshape,)
    if "shape" in kwargs:
        shape = (kwargs.pop("shape"),)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    x = as_value(x)
    shape = [operator.index(s) for s in shape]
    if shape.count(-1) > 1:
        raise ShapeError("can only specify one unknown dimension")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or x.type.size % known:
            raise ShapeError(f"cannot reshape array of size {x.type.size} into shape {tuple(shape)}")
        shape[shape.index(-1)] = x.type.size // known
    if math.prod(shape) != x.type.size:
        raise ShapeError(f"cannot reshape array of size {x.type.size} into shape {tuple(shape)}")
    return P.reshape(x, tuple(shape))


def transpose(x, axes=None):
    x = as_value(x)
    if axes is None:
        axes = tuple(reversed(range(x.type.ndim)))
    axes = tuple(operator.index(a) % x.type.ndim if x.type.ndim else a for a in axes)
    if sorted(axes) != list(range(x.type.ndim)):
        raise ShapeError(f"axes {axes} don't match array of dimension {x.type.ndim}")
    return P.transpose(x, axes)


def swapaxes(x, axis1, axis2):
    x = as_value(x)
    perm = list(range(x.type.ndim))
    a, b = normalize_axes(axis1, x.type.ndim)[0], normalize_axes(axis2, x.type.ndim)[0]
    perm[a], perm[b] = perm[b], perm[a]
    return P.transpose(x, perm)


def moveaxis(x, source, destination):
    """NumPy's moveaxis, sequences of axes included (in their given order)."""
    x = as_value(x)
    ndim = x.type.ndim
    src = np.lib.array_utils.normalize_axis_tuple(source, ndim, "source")
    dst = np.lib.array_utils.normalize_axis_tuple(destination, ndim, "destination")
    if len(src) != len(dst):
        raise ShapeError("numpy.moveaxis: `source` and `destination` arguments must have the same number of elements")
    perm = [a for a in range(ndim) if a not in src]
    for d, s_ in sorted(zip(dst, src)):
        perm.insert(d, s_)
    return P.transpose(x, perm)


def expand_dims(x, axis):
    x = as_value(x)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    ndim = x.type.ndim + len(axes)
    axes = normalize_axes(axes, ndim)
    dims = iter(x.type.shape)
    return P.reshape(x, tuple(1 if k in axes else next(dims) for k in range(ndim)))


def squeeze(x, axis=None):
    x = as_value(x)
    if axis is None:
        axes = tuple(k for k, n in enumerate(x.type.shape) if n == 1)
    else:
        axes = normalize_axes(axis, x.type.ndim)
        if any(x.type.shape[a] != 1 for a in axes):
            raise ShapeError("cannot select an axis to squeeze out which has size not equal to one")
    return P.reshape(x, tuple(n for k, n in enumerate(x.type.shape) if k not in axes))


def ravel(x, order="C"):
    x = as_value(x)
    return reshape(x, (x.type.size,), order=order)


def _promote_unsafely(arrays) -> list[Value]:
    """NumPy 2's concatenate/where promotion: Python scalars are weak, and cast
    unsafely (a Python int the result dtype cannot hold wraps, no error)."""
    dtype = result_dtype(*arrays)
    return [P.convert(a, dtype) if isinstance(a, Value) else
            as_value(np.asarray(a).astype(dtype.numpy) if _is_weak(a) and isinstance(a, int) else a, dtype)
            for a in arrays]


def concatenate(arrays, axis=0, out=None, dtype=None):
    _reject("concatenate", out=out)
    arrays = [as_value(a) if isinstance(a, (list, tuple)) else a for a in arrays]   # np.asarray: strong
    values = _promote_unsafely(arrays) if dtype is None else [as_value(a, DType.from_numpy(dtype)) for a in arrays]
    if axis is None:
        values, axis = [ravel(v) for v in values], 0
    ndim = values[0].type.ndim
    if ndim == 0:
        raise ShapeError("zero-dimensional arrays cannot be concatenated")
    if any(v.type.ndim != ndim for v in values):
        raise ShapeError("all the input arrays must have same number of dimensions")
    return P.concatenate(values, normalize_axes(axis, ndim)[0])


def stack(arrays, axis=0, out=None):
    _reject("stack", out=out)
    values = _promote_strong(*arrays)        # np.stack calls np.asarray on each: no weak scalars
    shapes = {v.type.shape for v in values}
    if len(shapes) != 1:
        raise ShapeError("all input arrays must have the same shape")
    return concatenate([expand_dims(v, axis) for v in values], axis=axis)


def where(condition, x=None, y=None):
    if x is None or y is None:
        raise UnsupportedOperationError("numpy.where with one argument (indices of nonzero elements) "
                                        "has a data-dependent shape; use the three-argument form")
    x, y = _promote_unsafely((x, y))
    cond, x, y = broadcast_values(as_value(condition, DType.bool), x, y)
    return P.select(cond, x, y)


def clip(x, a_min=None, a_max=None, out=None, **kwargs):
    _reject("clip", out=out)
    a_min = kwargs.pop("min", a_min)
    a_max = kwargs.pop("max", a_max)
    dtype = as_value(x).type.dtype
    if dtype.is_integer:       # NumPy 2: a Python int bound beyond the dtype's range bounds nothing
        info = np.iinfo(dtype.numpy)
        if _is_weak(a_min) and type(a_min) is int and a_min < info.min:
            a_min = None
        if _is_weak(a_max) and type(a_max) is int and a_max > info.max:
            a_max = None
    result = x                 # maximum then minimum, with their dtype rules (bfloat16, 0.0: float32)
    if a_min is not None and a_max is not None and result_dtype(x, a_min, a_max) == DType.bf16:
        # both bounds: NumPy's clip ufunc, which has no bfloat16 loop and runs in float32
        x, a_min, a_max = (P.convert(v, DType.f32) if isinstance(v, Value) and v.type.dtype == DType.bf16
                           else v for v in (as_value(x), a_min, a_max))
        result = x
    if a_min is not None:
        result = UFUNCS[np.maximum](result, a_min)
    if a_max is not None:
        result = UFUNCS[np.minimum](result, a_max)
    return as_value(result)


def full_like(x, fill_value, dtype=None):
    x = as_value(x)
    target = DType.from_numpy(dtype) if dtype is not None else x.type.dtype
    return P.full(fill_value, x.type.with_dtype(target))


def broadcast_to_fn(x, shape):
    return broadcast_to(as_value(x), tuple(shape) if isinstance(shape, (tuple, list)) else (shape,))


def flip(x, axis=None):
    x = as_value(x)
    return P.rev(x, normalize_axes(axis, x.type.ndim))


def astype(x, dtype):
    try:
        target = DType.from_numpy(dtype)
    except (KeyError, TypeError):
        raise DTypeError(f"astype: dtype {dtype} is not supported by jitgrad") from None
    return P.convert(as_value(x), target)


def linalg_norm(x, ord=None, axis=None, keepdims=False):
    if ord not in (None, 2, "fro") or (ord == 2 and axis is None and as_value(x).type.ndim == 2):
        raise UnsupportedOperationError(f"numpy.linalg.norm with ord={ord!r} is not supported")
    x = promote(x, min_float=True)[0]
    if x.type.dtype == DType.bf16:     # NumPy casts what is not np.inexact (bfloat16 is not) to float64
        x = P.convert(x, DType.f64)
    return P.sqrt(sum(P.integer_pow(x, 2), axis=axis, keepdims=keepdims))


FUNCTIONS: dict[Any, Any] = {
    np.sum: sum, np.mean: mean, np.var: var, np.std: std, np.max: amax, np.min: amin,
    np.amax: amax, np.amin: amin, np.argmax: argmax, np.argmin: argmin, np.dot: dot, np.matmul: matmul, np.inner: inner, np.outer: outer,
    np.tensordot: tensordot, np.einsum: einsum, np.vdot: lambda a, b: dot(ravel(a), ravel(b)),
    np.reshape: reshape, np.transpose: transpose, np.swapaxes: swapaxes,
    np.moveaxis: moveaxis, np.expand_dims: expand_dims, np.squeeze: squeeze, np.ravel: ravel,
    np.concatenate: concatenate, np.stack: stack, np.where: where, np.clip: clip,
    np.zeros_like: lambda x, dtype=None: full_like(x, 0, dtype),
    np.ones_like: lambda x, dtype=None: full_like(x, 1, dtype),
    np.full_like: full_like, np.broadcast_to: broadcast_to_fn, np.flip: flip,
    np.linalg.norm: linalg_norm, np.shape: lambda x: as_value(x).type.shape,
    np.ndim: lambda x: as_value(x).type.ndim, np.size: lambda x: as_value(x).type.size,
    np.abs: absolute, np.square: square,
}


# --------------------------------------------------------------------------- indexing

def getitem(x: Value, index) -> Value:
    """Basic indexing: integers, slices (any step), None and Ellipsis."""
    if not isinstance(index, tuple):
        index = (index,)
    for item in index:
        if not (item is None or item is Ellipsis or isinstance(item, builtins.slice)
                or isinstance(item, (int, np.integer)) and not isinstance(item, bool)):
            what = "a traced array" if isinstance(item, Value) else f"{type(item).__name__} objects"
            raise UnsupportedOperationError(
                f"indexing with {what} (advanced indexing) is not supported; use ints, slices, None and Ellipsis")
    if builtins.sum(item is Ellipsis for item in index) > 1:
        raise IndexingError("an index can only have a single ellipsis ('...')")
    n_real = builtins.sum(item is not None and item is not Ellipsis for item in index)
    if n_real > x.type.ndim:
        raise IndexingError(f"too many indices for array: array is {x.type.ndim}-dimensional, "
                            f"but {n_real} were indexed")
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (builtins.slice(None),) * (x.type.ndim - n_real) + index[k + 1:]
    else:
        index = index + (builtins.slice(None),) * (x.type.ndim - n_real)

    starts, limits, strides, reversed_axes, out_shape = [], [], [], [], []
    axis = 0
    for item in index:
        if item is None:
            out_shape.append(1)
            continue
        n = x.type.shape[axis]
        if isinstance(item, builtins.slice):
            start, stop, step = item.indices(n)
            count = len(range(start, stop, step))
            if step < 0:
                reversed_axes.append(axis)
                start, step = n - 1 - start, -step
            starts.append(start)
            limits.append(start + (count - 1) * step + 1 if count else start)
            strides.append(step)
            out_shape.append(count)
        else:
            i = operator.index(item)
            if not -n <= i < n:
                raise IndexingError(f"index {i} is out of bounds for axis {axis} with size {n}")
            i %= n
            starts.append(i)
            limits.append(i + 1)
            strides.append(1)
        axis += 1
    result = P.rev(x, tuple(reversed_axes))
    result = P.static_slice(result, starts, limits, strides)
    return P.reshape(result, tuple(out_shape))


# --------------------------------------------------------------------------- the wider surface

def take_in(*modules) -> None:
    """Add the `FUNCTIONS` (and `UFUNCS`, where a module has them) of the modules that
    build NumPy's wider surface on this one to this module's tables: a function of theirs
    replaces one here of the same NumPy name (np.sum is numpy_reductions' sum, with more
    arguments), while a ufunc implemented here is kept. `jitgrad.tracing` calls it with
    numpy_reductions, numpy_linalg, numpy_sorting, numpy_shape and numpy_elementwise as
    it is imported, before anything traces: they import this module for its helpers, so
    this module cannot import them."""
    for module in modules:
        FUNCTIONS.update(module.FUNCTIONS)
        for ufunc, impl in getattr(module, "UFUNCS", {}).items():
            UFUNCS.setdefault(ufunc, impl)
