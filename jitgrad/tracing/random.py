"""np.random inside traced functions: fresh numbers on every call, as in NumPy.

While a function is traced, the module functions of `np.random` (`np.random.rand`,
`normal`, `uniform`, ...) are replaced, on the tracing thread only, by versions that
emit `random_uniform` draws (Philox4x32-10, `jitgrad.primitives.random`) instead of
running NumPy's generator once and freezing its numbers into the program. Every draw is
keyed by a per-call *random key*: a trailing argument of the compiled function that the
caller fills, at each call, with 128 bits taken from NumPy's global legacy state (the one
`np.random.seed` seeds). So two calls give different numbers, seeding NumPy makes runs
reproducible, and functions that draw nothing take no key and pay nothing. Each call of
an np.random function during one trace gets its own stream number, so two draws of one
call differ; traces nested inside it (a compiled function called from another) continue
its numbering and share its key.

What cannot be intercepted would run at trace time and freeze its numbers, so it is an
`UnsupportedOperationError` naming the line instead: np.random functions with no traced
version raise when called; `np.random.Generator`/`RandomState` objects (Cython types,
whose methods cannot be replaced) and functions bound with `from numpy.random import ...`
before any trace are found by name — in closures, globals, defaults and attributes of
objects the traced code names, up to `MAX_SCAN_DEPTH` steps — and fingerprinted before
and after the trace: a generator whose state moved was used.
"""
from __future__ import annotations

import ctypes
import dis
import functools
import inspect
import operator
import pickle
import threading
import types
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import UnsupportedOperationError
from jitgrad.ir import Block, DType, Location, TensorType, Value
from jitgrad.primitives.random import random_uniform
from . import implicit
from . import numpy_api as api
from .module_patches import ModulePatches
from .tracer import TRACE_CONTEXTS, _definition_location, _display_path, apply, user_location

KEY_TYPE = TensorType((2,), DType.i64)
"""The per-call random key: 128 bits as two int64 words of raw bits."""

_GLOBAL_STATE = np.random.mtrand._rand
"""NumPy's global legacy RandomState: what np.random.seed seeds and np.random.* draw from."""
_global_bit_generator = np.random.get_bit_generator
"""Its bit generator (the function, taken before any trace replaces np.random's names)."""


# --------------------------------------------------------------------------- per-thread trace state

class _TraceState(threading.local):
    def __init__(self):
        self.depth = 0                       # traces active on this thread (nested ones included)
        self.stream = 0                      # next stream number of the outermost trace
        self.key: Value | None = None        # its key placeholder, made at its first draw
        self.pinned: SharedKey | None = None  # the key of an enclosing `same_key` block
        self.eager_replay = False            # the outermost trace replays an eager tape / dual call


_state = _TraceState()


class _GlobalDraws:
    """Draws from NumPy's global state that jitgrad sees on threads that are not tracing
    (np.random calls while the functions are replaced, random keys). A trace whose global
    state moved while this count did not was the one that moved it."""

    def __init__(self):
        self.count = 0

    def note(self) -> None:
        self.count += 1

    @staticmethod
    def fingerprint() -> bytes:
        bit_generator = _global_bit_generator()
        if type(bit_generator) is np.random.MT19937:       # its C state: 624 words and a position (1 us)
            return ctypes.string_at(bit_generator.ctypes.state_address, MT19937_STATE_BYTES)
        return pickle.dumps(bit_generator.state)           # other bit generators (100 us)


MT19937_STATE_BYTES = 624 * 4 + 4


_global_draws = _GlobalDraws()


def draw_key() -> np.ndarray:
    """A fresh random key from NumPy's global legacy state, drawn at each call of a
    compiled function that draws random numbers (inside `same_key`, the block's one key)."""
    if _state.depth:
        raise UnsupportedOperationError(
            "a compiled function that draws random numbers was called on concrete arrays while another "
            "function was being traced: its numbers would be drawn once and frozen into that function. Call it "
            "on the traced values instead (or outside the traced function)", user_location())
    pinned = _state.pinned
    if pinned is not None and pinned.key is not None:
        return pinned.key
    _global_draws.note()
    w0, w1, w2, w3 = (w & 0xFFFFFFFF for w in _global_bit_generator().random_raw(4).tolist())   # MT19937: 32 bits
    key = np.array([w0 | w1 << 32, w2 | w3 << 32], dtype=np.uint64).view(np.int64)
    if pinned is not None:
        pinned.key = key
    return key


class SharedKey:
    """One random key for several calls (`same_key`): drawn by the first call that needs one."""

    def __init__(self):
        self.key: np.ndarray | None = None


@contextmanager
def same_key(shared: SharedKey | None = None) -> Iterator[SharedKey]:
    """Compiled calls in this block draw the same random numbers: the forward pass and
    the derivative passes that `vjp`, `linearize` and per-direction Jacobians run
    separately must see one draw, as one program would. Without `shared`, the block
    joins an enclosing one, or starts its own."""
    saved = _state.pinned
    _state.pinned = shared or saved or SharedKey()
    try:
        yield _state.pinned
    finally:
        _state.pinned = saved


class RandomKeyArgument:
    """The implicit argument that a compiled function's random key is (see
    `tracing.implicit`): not read from a variable but drawn from NumPy's global state at
    every call."""

    type = KEY_TYPE
    path = implicit.Path(None, (), "the random key (drawn from np.random's global state at each call)")

    @staticmethod
    def fetch() -> np.ndarray:
        return draw_key()

    def why(self) -> str:
        return "the random key could not be drawn"


def _key_value() -> Value:
    """This trace's key placeholder: a value defined outside every traced function, so
    that closure conversion (`tracer.close_over`) makes it a trailing argument of every
    function that draws, nested ones included. The compile in progress
    (`implicit.active()`) learns that the caller fills it with `draw_key()`."""
    if _state.eager_replay:
        raise UnsupportedOperationError(
            "a compiled function that draws random numbers was called on GradientTape or dual-number tensors: "
            "their derivative pass runs it again and would draw other numbers than the forward pass did. "
            "Differentiate it with jitgrad.grad / value_and_grad / jvp instead", user_location())
    if _state.key is None:
        _state.key = Block().add_arg(KEY_TYPE)
        capture = implicit.active()
        if capture is not None:
            capture.add_argument(_state.key, RandomKeyArgument())
    return _state.key


def _next_stream() -> int:
    stream = _state.stream
    _state.stream += 1
    return stream


def _uniform(shape, words=(0,)) -> list[Value]:
    """Uniform f64 numbers in [0, 1) of `shape`, one independent array per word, from one
    new stream."""
    key = _key_value()
    k0, k1 = (P.reshape(P.static_slice(key, (i,), (i + 1,)), ()) for i in (0, 1))
    stream = _next_stream()
    return [random_uniform(k0, k1, shape, stream=stream, word=w, dtype=DType.f64) for w in words]


# --------------------------------------------------------------------------- distributions (traced versions)

def _size_shape(size) -> tuple[int, ...] | None:
    if size is None:
        return None
    if isinstance(size, (tuple, list)):
        return tuple(operator.index(d) for d in size)
    return (operator.index(size),)


def _shape_for(size, *params) -> tuple[int, ...]:
    """NumPy's result shape: `size` when given (the parameters must broadcast to it),
    else the parameters' broadcast shape."""
    shapes = [p.type.shape if isinstance(p, Value) else np.shape(p) for p in params]
    broadcast = api.broadcast_shapes(*shapes) if shapes else ()
    shape = _size_shape(size)
    if shape is None:
        return broadcast
    if api.broadcast_shapes(broadcast, shape) != shape:
        raise ValueError(f"shape mismatch: objects cannot be broadcast to a single shape "
                         f"(parameters of shape {broadcast}, size {shape})")
    return shape


def _param(x, shape) -> Value:
    return api.broadcast_to(api.as_value(x, DType.f64), shape)


def _full(value, shape) -> Value:
    return P.full(value, TensorType(shape, DType.f64))


def _bounded(param, name: str, shape, strict: bool = False) -> tuple[Value, Value | None]:
    """A parameter that must be >= 0 (> 0 with `strict`), broadcast to `shape`. Out of its
    domain, a concrete one raises NumPy's ValueError; for a traced one, the second result
    marks where it is out (the draw is NaN there)."""
    symbol = "<=" if strict else "<"
    if not isinstance(param, Value):
        array = np.asarray(param, dtype=np.float64)
        if np.any(array <= 0) if strict else np.any(np.signbit(array) & ~np.isnan(array)):
            raise ValueError(f"{name} {symbol} 0")          # NumPy's checks: NaN passes, -0.0 does not
        return _param(param, shape), None
    value = _param(param, shape)
    zero = _full(0.0, shape)
    return value, P.logical_not(P.gt(value, zero) if strict else P.ge(value, zero))


def _nan_where(bad: Value | None, x: Value) -> Value:
    """x, with NaN where a traced parameter is outside its domain (where NumPy would raise)."""
    return x if bad is None else P.select(bad, _full(np.nan, x.type.shape), x)


def _dims(dims) -> tuple[int, ...]:
    return tuple(operator.index(d) for d in dims)


def random_sample(size=None):
    return _uniform(_shape_for(size))[0]


def rand(*dims):
    return _uniform(_dims(dims))[0]


def _standard_normal(shape) -> Value:
    """Box–Muller: sqrt(-2 log(1 - u1)) cos(2 pi u2); 1 - u1 is in (0, 1], so finite."""
    u1, u2 = _uniform(shape, words=(0, 1))
    radius = P.sqrt(P.mul(_full(-2.0, shape), P.log(P.sub(_full(1.0, shape), u1))))
    return P.mul(radius, P.cos(P.mul(_full(2 * np.pi, shape), u2)))


def standard_normal(size=None):
    return _standard_normal(_shape_for(size))


def randn(*dims):
    return _standard_normal(_dims(dims))


def normal(loc=0.0, scale=1.0, size=None):
    shape = _shape_for(size, loc, scale)
    scale_v, bad = _bounded(scale, "scale", shape)
    return _nan_where(bad, P.add(_param(loc, shape), P.mul(scale_v, _standard_normal(shape))))


def lognormal(mean=0.0, sigma=1.0, size=None):
    shape = _shape_for(size, mean, sigma)
    sigma_v, bad = _bounded(sigma, "sigma", shape)
    return _nan_where(bad, P.exp(P.add(_param(mean, shape), P.mul(sigma_v, _standard_normal(shape)))))


def standard_cauchy(size=None):
    """The ratio of two independent standard normals, as NumPy draws it."""
    shape = _shape_for(size)
    return P.div(_standard_normal(shape), _standard_normal(shape))


def uniform(low=0.0, high=1.0, size=None):
    shape = _shape_for(size, low, high)
    low_v, high_v = _param(low, shape), _param(high, shape)
    return P.add(low_v, P.mul(P.sub(high_v, low_v), _uniform(shape)[0]))


def _standard_exponential(shape) -> Value:
    """-log(1 - u), as NumPy's legacy generator: finite, in [0, 37]."""
    return P.neg(P.log(P.sub(_full(1.0, shape), _uniform(shape)[0])))


def standard_exponential(size=None):
    return _standard_exponential(_shape_for(size))


def exponential(scale=1.0, size=None):
    shape = _shape_for(size, scale)
    scale_v, bad = _bounded(scale, "scale", shape)
    return _nan_where(bad, P.mul(scale_v, _standard_exponential(shape)))


def laplace(loc=0.0, scale=1.0, size=None):
    """loc ± scale * E: an exponential with a fair random sign."""
    shape = _shape_for(size, loc, scale)
    scale_v, bad = _bounded(scale, "scale", shape)
    e = _standard_exponential(shape)
    signed = P.select(P.lt(_uniform(shape)[0], _full(0.5, shape)), P.neg(e), e)
    return _nan_where(bad, P.add(_param(loc, shape), P.mul(scale_v, signed)))


def gumbel(loc=0.0, scale=1.0, size=None):
    """loc - scale * log(E), as NumPy (E = 0, probability 2**-53, gives +inf there too)."""
    shape = _shape_for(size, loc, scale)
    scale_v, bad = _bounded(scale, "scale", shape)
    return _nan_where(bad, P.sub(_param(loc, shape), P.mul(scale_v, P.log(_standard_exponential(shape)))))


def rayleigh(scale=1.0, size=None):
    shape = _shape_for(size, scale)
    scale_v, bad = _bounded(scale, "scale", shape)
    return _nan_where(bad, P.mul(scale_v, P.sqrt(P.mul(_full(2.0, shape), _standard_exponential(shape)))))


def weibull(a, size=None):
    """E ** (1 / a); 0 where a is 0, as NumPy."""
    shape = _shape_for(size, a)
    a_v, bad = _bounded(a, "a", shape)
    zero = _full(0.0, shape)
    is_zero = P.eq(a_v, zero)
    exponent = P.div(_full(1.0, shape), P.select(is_zero, _full(1.0, shape), a_v))
    return _nan_where(bad, P.select(is_zero, zero, P.power(_standard_exponential(shape), exponent)))


def pareto(a, size=None):
    """expm1(E / a) (the Lomax form NumPy draws)."""
    shape = _shape_for(size, a)
    a_v, bad = _bounded(a, "a", shape, strict=True)
    return _nan_where(bad, P.expm1(P.div(_standard_exponential(shape), a_v)))


def power(a, size=None):
    """(1 - exp(-E)) ** (1 / a), as NumPy."""
    shape = _shape_for(size, a)
    a_v, bad = _bounded(a, "a", shape, strict=True)
    base = P.neg(P.expm1(P.neg(_standard_exponential(shape))))
    return _nan_where(bad, P.power(base, P.div(_full(1.0, shape), a_v)))


MAX_RANDINT_RANGE = 1 << 32
"""randint's widest range: a value is floor(u * range) from 53 random bits, so each
integer's probability is 1/range within a relative 2**-21."""


def randint(low, high=None, size=None, dtype=int):
    if isinstance(low, Value) or isinstance(high, Value):
        raise UnsupportedOperationError("np.random.randint with traced bounds is not supported; pass the bounds "
                                        "as Python ints or static arguments")
    if high is None:
        low, high = 0, low
    if np.ndim(low) or np.ndim(high):
        raise UnsupportedOperationError("np.random.randint with array bounds is not supported inside compiled "
                                        "functions; use scalar bounds")
    low, high = operator.index(low), operator.index(high)
    if low >= high:
        raise ValueError("low >= high")
    try:
        target = DType.from_numpy(np.dtype(dtype))
    except (KeyError, TypeError):
        target = None
    if target is None or not target.is_integer:
        raise UnsupportedOperationError(f"np.random.randint(dtype={dtype!r}) is not supported inside compiled "
                                        "functions (integer dtypes are)")
    info = np.iinfo(target.numpy)
    if low < info.min or high - 1 > info.max:
        raise ValueError(f"low is out of bounds for {target.numpy}" if low < info.min
                         else f"high is out of bounds for {target.numpy}")
    if low < -2**63 or high - 1 >= 2**63:
        raise UnsupportedOperationError("np.random.randint bounds beyond the int64 range are not supported inside "
                                        "compiled functions")
    span = high - low
    if span > MAX_RANDINT_RANGE:
        raise UnsupportedOperationError(f"np.random.randint over a range of {span} integers is not supported "
                                        f"inside compiled functions (at most 2**32)")
    shape = _shape_for(size)
    scaled = P.mul(_uniform(shape)[0], _full(float(span), shape))
    offset = P.minimum(P.convert(scaled, DType.i64), P.full(span - 1, TensorType(shape, DType.i64)))
    values = P.add(offset, P.full(low, TensorType(shape, DType.i64)))
    return P.convert(values, target)


def choice(a, size=None, replace=True, p=None):
    """Draws from `a` (an int n: range(n); or a 1-D array, concrete or traced) with
    replacement, uniformly or with concrete probabilities `p`. An element is picked by a
    comparison with each candidate (a one-hot sum), so the work is size x len(a)."""
    if not replace:
        raise UnsupportedOperationError("np.random.choice(..., replace=False) is not supported inside compiled "
                                        "functions (a permutation has no elementwise form)")
    if isinstance(a, Value):
        if a.type.ndim != 1:
            raise ValueError("a must be 1-dimensional")
        n = a.type.shape[0]
    elif np.ndim(a) == 0:
        n = operator.index(a)
        a = None
    elif np.ndim(a) == 1:
        n = len(a)
    else:
        raise ValueError("a must be 1-dimensional")
    if n <= 0:
        raise ValueError("a must be a positive integer unless no samples are taken" if a is None
                         else "'a' cannot be empty unless no samples are taken")
    shape = _shape_for(size)
    if p is None:
        index = randint(0, n, shape)
    else:
        if isinstance(p, Value):
            raise UnsupportedOperationError("np.random.choice with traced probabilities is not supported inside "
                                            "compiled functions; pass p as a concrete array")
        probabilities = np.asarray(p, dtype=np.float64)
        if probabilities.shape != (n,):
            raise ValueError("'a' and 'p' must have same size")
        if np.any(probabilities < 0) or not np.isclose(probabilities.sum(), 1.0, rtol=0, atol=np.sqrt(
                np.finfo(np.float64).eps)):
            raise ValueError("probabilities are not non-negative" if np.any(probabilities < 0)
                             else "probabilities do not sum to 1")
        _check_one_hot_size(shape, n)
        cdf = np.cumsum(probabilities)
        thresholds = (cdf / cdf[-1])[:-1]       # index = #thresholds <= u: NumPy's cdf.searchsorted(u, "right")
        u = api.broadcast_to(P.reshape(_uniform(shape)[0], shape + (1,)), shape + (n - 1,))
        below = P.convert(P.le(_param(thresholds, shape + (n - 1,)), u), DType.i64)
        index = P.reduce_sum(below, (len(shape),)) if n > 1 else P.full(0, TensorType(shape, DType.i64))
    if a is None:
        return index
    _check_one_hot_size(shape, n)
    values = api.as_value(a)
    candidates = P.constant(np.arange(n, dtype=np.int64), DType.i64)
    picked = P.eq(api.broadcast_to(P.reshape(index, shape + (1,)), shape + (n,)),
                  api.broadcast_to(candidates, shape + (n,)))
    zeros = P.full(0, TensorType(shape + (n,), values.type.dtype))
    return P.reduce_sum(P.select(picked, api.broadcast_to(values, shape + (n,)), zeros), (len(shape),))


MAX_ONE_HOT_ELEMENTS = 1 << 26
"""choice's one-hot form compares each draw with every candidate: size x len(a) at most this."""


def _check_one_hot_size(shape, n: int) -> None:
    if TensorType(shape, DType.f64).size * n > MAX_ONE_HOT_ELEMENTS:
        raise UnsupportedOperationError(f"np.random.choice of {TensorType(shape, DType.f64).size} draws among {n} "
                                        "candidates is too large inside a compiled function (draws x candidates "
                                        f"at most 2**26); draw indices with np.random.randint instead")


def binomial(n, p, size=None):
    """Binomial with one trial (Bernoulli): u < p. More trials: not supported."""
    if isinstance(n, Value) or not np.all(np.asarray(n) == 1):
        raise UnsupportedOperationError("np.random.binomial is supported inside compiled functions for n=1 "
                                        "only (a Bernoulli draw); for n trials sum n of them, e.g. "
                                        "(np.random.rand(n, *shape) < p).sum(axis=0)")
    if not isinstance(p, Value) and not np.all((np.asarray(p) >= 0) & (np.asarray(p) <= 1)):
        raise ValueError("p < 0, p > 1 or p is NaN")
    shape = _shape_for(size, n, p)
    return P.convert(P.lt(_uniform(shape)[0], _param(p, shape)), DType.i64)


def _default_rng(original):
    def default_rng(seed=None):
        if seed is None:
            raise UnsupportedOperationError(
                "np.random.default_rng() without a seed inside a compiled function would draw its numbers once, "
                "at trace time, and repeat them on every call; use np.random.* functions (np.random.normal, "
                "np.random.rand, ...), which draw fresh numbers on every call", user_location())
        return original(seed)      # a seeded generator repeats its numbers in NumPy as well
    return default_rng


TRACED = {
    "rand": rand, "random_sample": random_sample, "random": random_sample, "ranf": random_sample,
    "sample": random_sample, "randn": randn, "standard_normal": standard_normal, "normal": normal,
    "uniform": uniform, "standard_exponential": standard_exponential, "exponential": exponential,
    "randint": randint, "binomial": binomial, "lognormal": lognormal, "standard_cauchy": standard_cauchy,
    "laplace": laplace, "gumbel": gumbel, "rayleigh": rayleigh, "weibull": weibull, "pareto": pareto,
    "power": power, "choice": choice,
}
"""np.random functions with a traced version: fresh numbers at every call."""


# --------------------------------------------------------------------------- patching np.random

def _legacy_names() -> list[str]:
    """Every np.random module function that draws from (or sets) the global state."""
    names = [n for n in dir(np.random) if not n.startswith("_")
             and getattr(getattr(np.random, n), "__self__", None) is _GLOBAL_STATE]
    return sorted(set(names) | {"ranf", "sample", "seed", "set_bit_generator", "get_bit_generator"}
                  & set(dir(np.random)))


def _unsupported(name: str):
    def raise_unsupported(*args, **kwargs):
        raise UnsupportedOperationError(
            f"np.random.{name} has no traced version: called inside a compiled function it would run once, at "
            f"trace time, and its numbers would be frozen into the compiled code. Supported: "
            f"{', '.join('np.random.' + n for n in sorted(TRACED))}", user_location())
    return raise_unsupported


def _make_replacement(name: str, original):
    traced = TRACED.get(name)
    if name == "default_rng":
        during_trace = _default_rng(original)
    elif traced is not None:
        def during_trace(*args, **kwargs):
            return apply(traced, args, kwargs)
    else:
        during_trace = _unsupported(name)

    @functools.wraps(original)
    def replacement(*args, **kwargs):
        if _state.depth:                      # this thread is tracing
            return during_trace(*args, **kwargs)
        _global_draws.note()
        return original(*args, **kwargs)
    return replacement


_patched_names: list[str] = []


def _random_targets():
    """np.random's module attributes (in `np.random` and `np.random.mtrand`) that traces
    replace; the replacements call the originals on threads that are not tracing."""
    if not _patched_names:
        _patched_names.extend(_legacy_names() + ["default_rng"])
    return [(module, name) for module in (np.random, np.random.mtrand) for name in _patched_names]


_patches = ModulePatches(_random_targets, _make_replacement)


# --------------------------------------------------------------------------- generators the trace must not use

_GENERATOR_TYPES = (np.random.Generator, np.random.RandomState, np.random.BitGenerator)
MAX_SCAN_DEPTH = 3


def _fingerprint(generator) -> bytes:
    if isinstance(generator, np.random.Generator):
        state = generator.bit_generator.state
    elif isinstance(generator, np.random.RandomState):
        state = generator.get_state(legacy=False)
    else:
        state = generator.state
    return pickle.dumps(state)


class _Generators:
    """Generators reachable by name from a traced function, each with where its code
    names it, fingerprinted before the trace."""

    def __init__(self, fn):
        self.found: dict[int, tuple[object, str, types.CodeType | None]] = {}
        self._seen: set[int] = set()
        self._scan(fn, 0)
        self.before = {k: _fingerprint(g) for k, (g, _, _) in self.found.items()}

    def _add(self, generator, name: str, code) -> None:
        self.found.setdefault(id(generator), (generator, name, code))

    def _scan(self, fn, depth: int) -> None:
        fn = _unwrap(fn)
        if id(fn) in self._seen or depth > MAX_SCAN_DEPTH:
            return
        self._seen.add(id(fn))
        if isinstance(fn, functools.partial):
            for v in (*fn.args, *(fn.keywords or {}).values()):
                self._value(v, "a partial argument", None, frozenset(), depth + 1)
            self._scan(fn.func, depth + 1)
            return
        if isinstance(fn, types.MethodType):
            code = getattr(fn.__func__, "__code__", None)
            self._value(fn.__self__, "self", code, _names(code) if code else frozenset(), depth + 1)
            self._scan(fn.__func__, depth)
            return
        code = getattr(fn, "__code__", None)
        if not isinstance(code, types.CodeType):
            call = getattr(type(fn), "__call__", None)
            if isinstance(call, types.FunctionType):
                self._scan(types.MethodType(call, fn), depth)
            return
        names = _names(code)
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
            try:
                self._value(cell.cell_contents, name, code, names, depth + 1)
            except ValueError:
                pass                                   # an empty cell
        for name in names:
            if name in fn.__globals__:
                self._value(fn.__globals__[name], name, code, names, depth + 1)
        for v in (*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()):
            self._value(v, "a default argument", code, names, depth + 1)

    def _value(self, value, name: str, code, names: frozenset, depth: int) -> None:
        try:
            self._classify(value, name, code, names, depth)
        except Exception:         # noqa: BLE001 - an object that resists inspection is not followed
            pass

    def _classify(self, value, name: str, code, names: frozenset, depth: int) -> None:
        if isinstance(value, _GENERATOR_TYPES):
            self._add(value, name, code)
        elif isinstance(value, (types.MethodType, types.BuiltinMethodType)) and isinstance(
                value.__self__, _GENERATOR_TYPES):             # a bound draw method (`rng.normal`)
            self._add(value.__self__, name, code)
        elif isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
            self._scan(value, depth)
        elif depth <= MAX_SCAN_DEPTH and id(value) not in self._seen and not isinstance(value, type):
            attributes = getattr(value, "__dict__", None)
            if isinstance(attributes, dict) and not _is_numpy_module(value):
                self._seen.add(id(value))
                for attr in names & attributes.keys():
                    self._value(attributes[attr], f"{name}.{attr}", code, names, depth + 1)

    def check(self, fn) -> None:
        """UnsupportedOperationError if a generator's state moved during the trace."""
        for k, (generator, name, code) in self.found.items():
            if _fingerprint(generator) == self.before[k]:
                continue
            if generator is _GLOBAL_STATE:
                raise UnsupportedOperationError(
                    f"`{name}` draws from np.random's global state but was bound before jitgrad could intercept it "
                    f"(`from numpy.random import ...`); used while tracing {_name(fn)}, its numbers would be drawn "
                    "once and frozen into the compiled code. Call np.random.* functions by their module path "
                    "(np.random.randn, ...) inside compiled functions.",
                    _usage_location(code, name.split(".")[0]) or _definition_location(fn))
            raise UnsupportedOperationError(
                f"the NumPy random generator `{name}` ({type(generator).__name__}) was used while tracing "
                f"{_name(fn)}: its numbers would be drawn once, at trace time, and repeated on every call. "
                "Inside compiled functions use np.random.* functions (np.random.normal, np.random.rand, ...), "
                "which draw fresh numbers on every call from NumPy's global state (seed it with np.random.seed).",
                _usage_location(code, name.split(".")[0]) or _definition_location(fn))


def _is_numpy_module(value) -> bool:
    return isinstance(value, types.ModuleType) and value.__name__.split(".")[0] == "numpy"


def _unwrap(fn):
    try:
        return inspect.unwrap(fn)
    except ValueError:
        return fn


def _name(fn) -> str:
    fn = _unwrap(fn)
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


@functools.lru_cache(maxsize=1024)
def _names(code: types.CodeType) -> frozenset:
    """The global and attribute names `code` and its nested code mention."""
    names = set(code.co_names) | set(code.co_freevars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return frozenset(names)


def _usage_location(code, name: str) -> Location | None:
    """The first line of `code` (or its nested code) that loads `name`."""
    if code is None:
        return None
    for instruction in dis.get_instructions(code):
        if instruction.argval == name and instruction.opname.startswith("LOAD") and instruction.positions:
            return Location(_display_path(code.co_filename), instruction.positions.lineno, code.co_name)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found = _usage_location(const, name)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------- the trace hook

EAGER_MODULES = ("jitgrad.eager.",)
"""Where the eager layers' replay functions live: a trace of one re-runs calls recorded
earlier, whose random numbers a new draw could not reproduce."""


@contextmanager
def intercepting(fn) -> Iterator[None]:
    """Entered around every trace of a user function (`tracer.trace`): np.random draws
    become IR, and a generator used behind jitgrad's back is an error."""
    outermost = _state.depth == 0
    generators = _Generators(fn)
    if outermost:
        _state.stream, _state.key = 0, None
        _state.eager_replay = (getattr(_unwrap(fn), "__module__", None) or "").startswith(EAGER_MODULES)
        global_before = (_global_draws.fingerprint(), _global_draws.count)
    _patches.enter()
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        _patches.exit()
    generators.check(fn)
    if outermost and _global_draws.count == global_before[1] and _global_draws.fingerprint() != global_before[0]:
        raise UnsupportedOperationError(
            f"np.random's global state was advanced while tracing {_name(fn)}, through a path jitgrad does not "
            "intercept (a function bound with `from numpy.random import ...`, np.random.mtrand._rand, the bit "
            "generator itself): those numbers would be drawn once and frozen into the compiled code. Call "
            "np.random.* functions by their module path inside compiled functions.", _definition_location(fn))


TRACE_CONTEXTS.append(intercepting)
