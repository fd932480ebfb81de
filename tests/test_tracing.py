"""Tracing unmodified NumPy code: the traced IR, run by the interpreter, equals NumPy.

Each case is an ordinary NumPy function; the expected result is the function itself
called on NumPy arrays, so the test states NumPy's semantics (promotion, broadcasting,
keepdims, indexing) without restating them. Error tests check that unsupported code
fails with a jitgrad error naming the user's file and line.
"""
from __future__ import annotations

import numpy as np
import pytest

from jitgrad.errors import ShapeError, TracerBoolConversionError, UnsupportedOperationError
from jitgrad.interpreter import evaluate
from jitgrad.ir import DType
from jitgrad.tracing.pytree import tree_flatten
from jitgrad.tracing.tracer import trace

from helpers import check_grads, run_traced

THIS_FILE = "test_tracing.py"

RNG = np.random.default_rng(1234)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((3, 4))
P = RNG.uniform(0.5, 2.0, (3, 4))          # positive
V3, V4 = RNG.standard_normal(3), RNG.standard_normal(4)
T = RNG.standard_normal((2, 3, 4))
D = np.arange(24.0).reshape(2, 3, 4) * 0.37 % 5.0  # distinct values, no ties per axis
I = RNG.integers(-5, 6, (3, 4))
A32 = A.astype(np.float32)
W = RNG.standard_normal((4, 2))             # closed over below
SCALE = 0.75


def assert_same(got, expected, path="out"):
    """Same pytree structure, dtypes, shapes and values (NumPy scalars count as 0-d)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(expected), path
        for k in expected:
            assert_same(got[k], expected[k], f"{path}[{k!r}]")
        return
    if isinstance(expected, (tuple, list)):
        assert type(got) is type(expected) and len(got) == len(expected), f"{path}: {type(got)}"
        for k, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same(g, e, f"{path}[{k}]")
        return
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{path}: shape {got.shape} != {expected.shape}"
    assert got.dtype == expected.dtype, f"{path}: dtype {got.dtype} != {expected.dtype}"
    if expected.dtype.kind == "f":
        rtol = 2e-6 if expected.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol, err_msg=path)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=path)


def case(fn, *args, id, marks=()):
    return pytest.param(fn, args, id=id, marks=marks)


def softmax(x):
    z = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def uses_static_attributes(x):
    n, m = x.shape
    y = x.reshape(n * m) if x.ndim == 2 else x
    if x.dtype == np.float64:
        y = y * 2
    return y / len(x) + x.size


def mlp(params, x):
    h = np.tanh(x @ params["w1"] + params["b1"])
    return {"out": h @ params["w2"], "hidden": (h, [h.sum()])}


CASES = [
    # ----- operators
    case(lambda x, y: x + y, A, B, id="add"),
    case(lambda x, y: x - y * 2.0, A, B, id="sub-mul-scalar"),
    case(lambda x: 3 * x - 1, A, id="int-scalars"),
    case(lambda x, y: x / y, A, P, id="div"),
    case(lambda x: 1.0 / x, P, id="rdiv"),
    case(lambda x: x ** 2, A, id="pow-2"),
    case(lambda x: x ** 3, A, id="pow-3"),
    case(lambda x: x ** -1, P, id="pow-neg1"),
    case(lambda x: x ** 0.5, P, id="pow-half"),
    case(lambda x: x ** 2.7, P, id="pow-float"),
    case(lambda x: 2.0 ** x, A, id="rpow"),
    case(lambda x, y: x ** y, P, A, id="pow-arrays"),
    case(lambda x, y: (x < y, x <= 0.5, x > y, x >= 0, x == y, x != y), A, B, id="comparisons"),
    case(lambda x: (x == x, x != x), A, id="compare-self"),
    case(lambda x: (-x, abs(x), +x), A, id="unary"),
    case(lambda x, y: ((x > 0) & (y < 0), (x > 0) | (y < 0), ~(x > 0)), A, B, id="logical-operators"),
    case(lambda x: x @ W, A, id="matmul-operator"),
    case(lambda x: W.T @ x, V4, id="ndarray-matmul-tracer"),
    # ----- ufuncs
    *[case(lambda x, _u=u: _u(x), A, id=u.__name__)
      for u in (np.exp, np.expm1, np.sin, np.cos, np.tan, np.tanh, np.sinh, np.cosh, np.square,
                np.sign, np.absolute, np.negative, np.exp2, np.fabs, np.positive)],
    *[case(lambda x, _u=u: _u(x), P, id=u.__name__)
      for u in (np.log, np.log1p, np.sqrt, np.reciprocal, np.log2, np.log10)],
    *[case(lambda x, y, _u=u: _u(x, y), A, B, id=u.__name__)
      for u in (np.add, np.subtract, np.multiply, np.divide, np.maximum, np.minimum, np.fmax, np.fmin,
                np.logaddexp, np.greater, np.less_equal, np.equal)],
    case(lambda x, y: np.power(x, y), P, B, id="np.power"),
    case(lambda x: np.exp(x, dtype=np.float32), A, id="ufunc-dtype-kwarg"),
    case(lambda x, y: np.logaddexp(x, y), A * 1000, B * 1000, id="logaddexp-large"),
    # ----- reductions
    case(lambda x: (np.sum(x), np.sum(x, axis=0), np.sum(x, axis=(0, 2)), np.sum(x, axis=-1, keepdims=True)),
         T, id="sum"),
    case(lambda x: (x.sum(), x.sum(axis=1), x.sum(1, keepdims=True)), T, id="sum-method"),
    case(lambda x: (np.mean(x), np.mean(x, axis=1), np.mean(x, axis=(0, 2), keepdims=True), x.mean(-1)),
         T, id="mean"),
    case(lambda x: (np.var(x), np.var(x, axis=1), np.var(x, axis=0, keepdims=True), x.var(ddof=1)),
         T, id="var"),
    case(lambda x: (np.std(x), np.std(x, axis=2), np.std(x, axis=(0, 1), keepdims=True), x.std(axis=0, ddof=1)),
         T, id="std"),
    case(lambda x: (np.max(x), np.max(x, axis=1), np.min(x, axis=(0, 2)), np.max(x, axis=-1, keepdims=True),
                    x.max(axis=0), x.min(), np.amax(x, axis=2), np.amin(x, 1, keepdims=True)), T, id="max-min"),
    case(lambda x: (np.sum(x > 0), np.sum(x, axis=0), np.mean(x)), I, id="integer-and-bool-sums"),
    case(lambda x: (np.add.reduce(x, axis=0), np.maximum.reduce(x, axis=1)), A, id="ufunc-reduce"),
    case(lambda x: sum(x), A, id="builtin-sum-over-rows"),
    # ----- products
    case(lambda x, y: x @ y, V4, V4, id="vector-vector"),
    case(lambda x, y: x @ y, A, V4, id="matrix-vector"),
    case(lambda x, y: x @ y, V3, A, id="vector-matrix"),
    case(lambda x, y: x @ y.T, A, B, id="matrix-matrix"),
    case(lambda x, y: x @ y, T, W, id="batched-matrix"),
    case(lambda x, y: x @ y, T.reshape(2, 1, 3, 4), RNG.standard_normal((5, 4, 2)), id="batched-broadcast"),
    case(lambda x, y: x @ y, V4, T.transpose(0, 2, 1), id="vector-batched"),
    case(lambda x, y: x @ y, T, V4, id="batched-vector"),
    case(lambda x, y: (np.dot(y, x), np.dot(x, y.T), np.dot(y, 2.0), np.dot(x, x)), V4, A, id="np.dot"),
    case(lambda x, y: np.dot(x, y), T, W, id="np.dot-3d-2d"),
    case(lambda x, y: x.dot(y), A, W, id="dot-method"),
    case(lambda x, y: (np.inner(x, x), np.outer(x, y), np.tensordot(x, y, axes=0)), V3, V4, id="inner-outer"),
    case(lambda x, y: np.tensordot(x, y, axes=([1, 2], [1, 0])), T, RNG.standard_normal((4, 3, 2)),
         id="tensordot"),
    case(lambda x, y: np.matmul(x, y), A, W, id="np.matmul"),
    # ----- shapes and dtypes
    case(lambda x: (x.T, T.T), A, id=".T"),
    case(lambda x: (x.T, np.transpose(x, (1, 2, 0)), x.transpose(2, 0, 1), np.swapaxes(x, 0, 2),
                    np.moveaxis(x, 0, -1)), T, id="transposes"),
    case(lambda x: (x.reshape(-1, 2), x.reshape((4, -1)), np.reshape(x, (24,)), x.reshape(2, 3, 2, 2),
                    x.ravel(), x.flatten(), np.ravel(x)), T, id="reshape"),
    case(lambda x: (x.astype(np.float32), x.astype(np.int64), x.astype(int), (x > 0).astype(np.float64)),
         A, id="astype"),
    case(lambda x: (x * 2.0, x + np.float64(1.0), x + A), A32, id="float32-promotion"),
    case(lambda x: (x / 2, x + 1, x * 0.5, x > 0, x + True), I, id="integer-promotion"),
    case(uses_static_attributes, A, id="shape-ndim-dtype-in-python"),
    case(lambda x: (np.shape(x), np.ndim(x), np.size(x)), T, id="np.shape-ndim-size"),
    # ----- indexing
    case(lambda x: (x[0], x[-1], x[1], x[-2]), T, id="int-index"),
    case(lambda x: (x[1:3], x[::2], x[1:-1:2], x[-2:], x[:, 1:3], x[0:3:2, ::3]), A, id="slices"),
    case(lambda x: (x[::-1], x[::-2], x[3:0:-2], x[:, ::-1], x[-1::-3, 2::-1]), A, id="negative-steps"),
    case(lambda x: (x[None], x[:, None], x[..., None], x[None, ..., None]), A, id="new-axes"),
    case(lambda x: (x[..., 0], x[0, ...], x[..., ::-1], x[1, ..., 2]), T, id="ellipsis"),
    case(lambda x: (x[0, None, 1:, ::-2], x[-1, ..., None, 1], x[:, np.int64(1)], x[::-1, None, -2, 1:3]),
         T, id="combined-index"),
    case(lambda x: x[5:1:-2] + x[0:10], V4, id="out-of-range-slice-bounds"),
    # ----- selection and clipping
    case(lambda x: (np.where(x > 0, x, 0.0), np.where(x > 0, 1.0, -1.0)), A, id="np.where"),
    case(lambda x, y: np.where(x > y, x, y), A, B[0], id="np.where-broadcast"),
    case(lambda x: (np.maximum(x, 0), np.minimum(0.0, x)), A, id="relu"),
    case(lambda x: (np.clip(x, -0.5, 0.5), np.clip(x, None, 1.0), x.clip(-1.0, None), x.clip(min=0.0)),
         A, id="clip"),
    # ----- joining and dims
    case(lambda x, y: (np.concatenate([x, y]), np.concatenate((x, y, x), axis=1),
                       np.concatenate([x, y], axis=-1), np.concatenate([x, y], axis=None)), A, B,
         id="concatenate"),
    case(lambda x, y: (np.stack([x, y]), np.stack([x, y, x], axis=1), np.stack((x, y), axis=-1)), A, B,
         id="stack"),
    case(lambda x: (np.expand_dims(x, 0), np.expand_dims(x, -1), np.expand_dims(x, (0, 2))), A, id="expand_dims"),
    case(lambda x: (np.squeeze(x), np.squeeze(x, axis=2), x.squeeze(0)), A.reshape(1, 3, 1, 4), id="squeeze"),
    case(lambda x: (np.zeros_like(x), np.ones_like(x), np.full_like(x, 2.5), np.broadcast_to(x[0], (2, 4)),
                    np.flip(x, 0), np.flip(x)), A, id="array-creation-like"),
    # ----- composite programs
    case(softmax, A, id="softmax"),
    case(lambda x: np.log(np.sum(np.exp(x - x.max(1, keepdims=True)), axis=1)) + x.max(1), A, id="logsumexp"),
    case(lambda x: (x - x.mean(0)) / x.std(0), A, id="standardize"),
    # ----- pytrees, Python scalars, closures
    case(lambda d: {"s": d["a"] + d["b"], "d": d["a"] - d["b"]}, {"a": A, "b": B}, id="dict-in-dict-out"),
    case(lambda t: (t[0] * t[1], [t[1], t[0]]), (A, B), id="tuple-in-nested-out"),
    case(lambda xs: [x * i for i, x in enumerate(xs)], [A, B, A], id="list-in-list-out"),
    case(mlp, {"w1": W, "b1": V3[:2], "w2": RNG.standard_normal((2, 3))}, A, id="mlp-params-dict"),
    case(lambda x, s: x * s + s, A, 2.5, id="python-float-arg"),
    case(lambda x, n: x * n, A, 3, id="python-int-arg"),
    case(lambda x: x @ W * SCALE + V3[:2], A, id="closed-over-array-and-scalar"),
    case(lambda x: (x, np.ones(2), 3.0), A, id="constant-outputs"),
]


# NumPy semantics at the edges (NaN, infinities, dtype rules of rarely used functions).
EDGE_CASES = [
    case(lambda x, y: (np.maximum(x, y), np.minimum(x, y)), np.array([np.nan, 1.0, -np.inf]),
         np.array([1.0, np.nan, 2.0]), id="maximum-propagates-nan"),
    case(lambda x: (np.exp(x), np.log(x), np.sqrt(x)), np.array([0.0, -1.0, np.inf, -np.inf]), id="ufunc-inf-nan"),
    case(lambda x, y: np.logaddexp(x, y), np.array([1.0, -np.inf, 1e308]), np.array([-np.inf, 0.0, 1e308]),
         id="logaddexp-one-infinite"),
    case(lambda x, y: (np.fmax(x, y), np.fmin(x, y)), np.array([np.nan, 1.0]), np.array([1.0, np.nan]),
         id="fmax-fmin-ignore-nan"),
    case(lambda x, y: np.logaddexp(x, y), np.array([-np.inf]), np.array([-np.inf]),
         id="logaddexp-both-neg-inf"),
    case(lambda x: x ** float("inf"), np.array([0.5, 1.0, 2.0]), id="pow-python-inf"),
    case(lambda x: x ** float("nan"), np.array([0.5, 2.0]), id="pow-python-nan"),
    case(lambda x: np.float_power(x, 2), np.array([0.5, 2.0], np.float32), id="float_power-f32-gives-f64",),
]


@pytest.mark.parametrize("fn, args", CASES + EDGE_CASES)
def test_traced_equals_numpy(fn, args):
    with np.errstate(all="ignore"):
        expected = fn(*args)
    got = run_traced(fn, *args)
    assert_same(got, expected)


def test_python_scalars_are_traced_as_0d():
    fn = trace(lambda x, s, n, b: x * s + n, (A, 2.5, 3, True)).function
    assert [str(t) for t in fn.input_types] == ["f64[3,4]", "f64[]", "i64[]", "bool[]"]
    assert run_traced(lambda x, s: x * s, A, 2.5).dtype == np.float64


def test_closed_over_array_is_a_constant_not_an_argument():
    fn = trace(lambda x: x @ W + SCALE, (A,)).function
    assert len(fn.args) == 1
    assert "constant" in {op.name for op in fn.walk()}


def test_ops_carry_the_users_source_line():
    def f(x):
        y = np.sin(x)
        return y * 2.0
    fn = trace(f, (A,)).function
    first = f.__code__.co_firstlineno
    lines = {op.name: op.loc for op in fn.walk()}
    assert lines["sin"].line == first + 1 and lines["sin"].file.endswith(THIS_FILE)
    assert lines["mul"].line == first + 2


def test_pytree_structures_are_preserved():
    traced = trace(lambda d: (d["b"], [d["a"]]), ({"b": A, "a": B},))
    assert str(traced.out_tree) == "(*, [*])"
    assert traced.in_tree.num_leaves == 2


# --------------------------------------------------------------------------- derivatives of traced code

GRAD_CASES = [
    case(softmax, A, id="softmax"),
    case(lambda x: np.std(x, axis=0) + np.var(x, axis=1, keepdims=True).sum(), A, id="std-var"),
    case(lambda x: x[::-1, None, 1:3] * x[0, ..., ::-2].sum(), A, id="indexing"),
    case(lambda x, y: np.stack([x, y], axis=1) * np.concatenate([y, x], axis=-1).sum(), A, B, id="stack-concat"),
    case(lambda x: np.where(x > 0, x * x, np.clip(x, -0.5, 0.5)), A + np.sign(A) * 0.1, id="where-clip"),
    case(lambda x: np.max(x, axis=(0, 2), keepdims=True) * np.min(x), D, id="max-min"),
    case(lambda x, y: np.logaddexp(x, y), A, B, id="logaddexp"),
    case(lambda x, y: np.tanh(x @ y) @ y.T, T, W, id="batched-matmul"),
    case(lambda x: np.sqrt(x) ** 1.5 / np.log1p(x), P, id="power-sqrt-log1p"),
    case(lambda d: d["a"] * np.sin(d["b"]), {"a": A, "b": B}, id="dict-input"),
]


@pytest.mark.parametrize("fn, args", GRAD_CASES)
def test_traced_code_differentiates(fn, args):
    traced = trace(fn, args)
    leaves, _ = tree_flatten(tuple(args))
    check_grads(traced.function, [np.asarray(x) for x in leaves], order=2)


# --------------------------------------------------------------------------- errors

def _line_of(fn, offset=1):
    return f"{THIS_FILE}:{fn.__code__.co_firstlineno + offset}"


@pytest.mark.parametrize("name", ["unwrap", "trim_zeros"])
def test_unsupported_function_names_function_and_line(name):
    def f(x):
        return np.unwrap(x) if name == "unwrap" else np.trim_zeros(x)
    with pytest.raises(UnsupportedOperationError) as info:
        trace(f, (V4,))
    message = str(info.value)
    assert name in message
    assert _line_of(f) in message, message


def test_unsupported_ufunc_names_ufunc_and_line():
    def f(x):
        return np.nextafter(x, x)
    with pytest.raises(UnsupportedOperationError) as info:
        trace(f, (V4,))
    assert "nextafter" in str(info.value) and _line_of(f) in str(info.value), str(info.value)


@pytest.mark.parametrize("arg", [V4], ids=["vector"])
def test_python_if_on_traced_value(arg):
    # (an `if` on a traced scalar is converted to a cond: tests/test_autograph.py)
    def f(x):
        if x > 0:
            return x
        return -x
    with pytest.raises(TracerBoolConversionError) as info:
        trace(f, (arg,))
    message = str(info.value)
    assert "np.where" in message
    assert _line_of(f) in message, message


@pytest.mark.parametrize("convert", [int, float])
def test_concretizing_a_traced_value(convert):
    def f(x):
        return x * convert(x[0])
    with pytest.raises(TracerBoolConversionError) as info:
        trace(f, (V4,))
    assert _line_of(f) in str(info.value)


def test_non_broadcastable_shapes():
    def f(x, y):
        return x + y
    with pytest.raises(ShapeError) as info:
        trace(f, (V3, V4))
    message = str(info.value)
    assert "could not be broadcast" in message
    assert _line_of(f) in message, message


def test_matmul_shape_mismatch():
    def f(x, y):
        return x @ y
    with pytest.raises(ShapeError) as info:
        trace(f, (A, B))
    assert _line_of(f) in str(info.value), str(info.value)


def test_item_assignment_into_a_transposed_view_is_rejected():
    def f(x):
        x.T[0] = 1.0
        return x
    with pytest.raises(UnsupportedOperationError) as info:
        trace(f, (V4,))
    assert _line_of(f) in str(info.value)


def test_interpreter_rejects_wrong_argument_count():
    fn = trace(lambda x: x, (V4,)).function
    with pytest.raises(Exception, match="takes 1 arguments"):
        evaluate(fn, [V4, V4])


def test_float32_trace_keeps_float32():
    fn = trace(lambda x: np.tanh(x) * 2.0 + x.mean(), (A32,)).function
    assert fn.input_types[0].dtype == DType.f32
    assert fn.output_types[0].dtype == DType.f32


EINSUM_CASES = ["ij,jk->ik", "ij,jk", "ij->ji", "ij->", "bij,jk->bik", "bij,bij->b", "ij,ij->ij", "i,j->ij",
                "ij,jk,kl->il", "bij->bj", "ij,kj->ik"]


@pytest.mark.parametrize("spec", EINSUM_CASES)
def test_einsum_matches_numpy_and_differentiates(spec):
    rng = np.random.default_rng(5)
    shapes = {"i": 3, "j": 4, "k": 5, "l": 2, "b": 2}
    operands = [rng.normal(size=tuple(shapes[c] for c in term)) for term in spec.split("->")[0].split(",")]
    fn = lambda *xs: np.einsum(spec, *xs)  # noqa: E731
    assert_same(run_traced(fn, *operands), np.einsum(spec, *operands))
    traced = trace(lambda *xs: np.sum(np.einsum(spec, *xs) ** 2), tuple(operands)).function
    check_grads(traced, operands, order=1)


def test_einsum_diagonals_and_ellipses_match_numpy():
    x = np.arange(9.0).reshape(3, 3)
    for spec in ("ii->i", "ii", "...i->...", "...ij->...ji", "i...->..."):
        assert_same(run_traced(lambda a, s=spec: np.einsum(s, a), x), np.einsum(spec, x))


def test_argmax_argmin_first_index_and_nan_like_numpy():
    x = np.array([[1.0, 5.0, 5.0, 2.0], [np.nan, 1.0, np.nan, 0.0], [3.0, 2.0, 1.0, 0.0]])
    fn = lambda v: (np.argmax(v, axis=1), np.argmin(v, axis=0), v.argmax(), np.argmin(v, axis=-1, keepdims=True))  # noqa: E731
    assert_same(run_traced(fn, x), fn(x))
    ints = np.array([[3, 7, 7], [2, 2, 1]])
    assert_same(run_traced(lambda v: (np.argmax(v, axis=0), np.argmin(v)), ints), (np.argmax(ints, axis=0),
                                                                                   np.argmin(ints)))
    with pytest.raises(ShapeError, match="empty"):
        trace(lambda v: np.argmax(v, axis=0), (np.ones((0, 2)),))


@pytest.mark.parametrize("shape, axis", [((0, 3), 1), ((2, 0), 0), ((0, 3), 0), ((0, 3), None), ((2, 0), 1)])
def test_max_of_empty_arrays_like_numpy(shape, axis):
    x = np.zeros(shape)
    try:
        expected = np.max(x, axis=axis)
    except ValueError:
        with pytest.raises(ShapeError, match="no identity"):
            run_traced(lambda v: np.max(v, axis=axis), x)
        return
    assert_same(run_traced(lambda v: np.max(v, axis=axis), x), expected)
