"""Compiled code (the CPU backend) against the reference interpreter.

Each case is an ordinary NumPy function and its arguments. It is traced once; the IR
runs through the interpreter (the oracle) and through native code from `CPUBackend`,
both as traced and after the optimization pipeline, and the results must agree in
dtype, shape and value. The reverse-mode derivative of each case (`vjp_function`: the
gradient of a scalar output, or a VJP with random cotangents) is compared the same way,
which exercises the code generator on what differentiation emits: pads, scatters of
slices, transposed contractions, broadcasts summed back.
"""
from __future__ import annotations

import numpy as np
import pytest

from jitgrad.backends.cpu import CPUBackend
from jitgrad.interpreter import evaluate
from jitgrad.ir import DType
from jitgrad.ir.verifier import verify
from jitgrad.passes.reverse import vjp_function
from jitgrad.pipeline import optimization_passes
from jitgrad.tracing.pytree import tree_flatten
from jitgrad.tracing.tracer import trace

from helpers import check_vjp, numerical_jacobian

RNG = np.random.default_rng(7)
A, B = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
AT = RNG.standard_normal((4, 3))
P = RNG.uniform(0.5, 2.0, (3, 4))                  # positive
T = RNG.standard_normal((2, 3, 4))
D = (np.arange(60.0).reshape(3, 4, 5) * 0.37) % 7.0  # distinct per axis: unique max/min
V3, V4 = RNG.standard_normal(3), RNG.standard_normal(4)
COL, ROW = RNG.standard_normal((3, 1)), RNG.standard_normal((1, 4))
BIG = RNG.standard_normal((7, 33, 19))              # odd sizes: vector remainders
M2 = RNG.standard_normal((4, 5))
BATCH_A, BATCH_B = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 4, 5))
SQ = RNG.standard_normal((64, 64))
I1, I2 = RNG.integers(-9, 10, (3, 4)), RNG.integers(1, 6, (3, 4))
S0 = np.float64(0.8)
A32, B32, T32 = A.astype(np.float32), B.astype(np.float32), T.astype(np.float32)
M32 = M2.astype(np.float32)
C = RNG.standard_normal((4, 4))                     # closed over

EXACT, MATH = 1e-12, 1e-9      # f64: arithmetic only / transcendental vector math or reassociated sums


def case(fn, *args, id, rtol=EXACT, marks=()):
    return pytest.param(fn, args, rtol, id=id, marks=marks)


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


CASES = [
    # ----- elementwise chains
    case(lambda x, y: x * 2.0 - y + x * y / 3.0, A, B, id="arith-chain"),
    case(lambda x, y: np.tanh(x) * y + np.exp(-x ** 2) / (1.0 + y ** 2), A, B, id="transcendental-chain",
         rtol=MATH),
    case(lambda x: np.sin(x) + np.cos(2.0 * x) - np.sqrt(1.0 + x * x), A, id="sin-cos-sqrt", rtol=MATH),
    case(lambda x: np.log(x) + np.log1p(x) + np.expm1(0.3 * x) + np.log2(x), P, id="logs", rtol=MATH),
    case(lambda x: 1.0 / (1.0 + np.exp(-x)), A, id="logistic", rtol=MATH),
    case(lambda x, y: x ** y, P, B, id="pow-arrays", rtol=MATH),
    case(lambda x: (x ** 3, x ** -2, x ** 0.5, x ** 1.7), P, id="powers", rtol=MATH),
    case(lambda x: (np.maximum(x, 0.1), np.minimum(x, -0.2), np.abs(x), np.sign(x), -x), A, id="piecewise"),
    case(lambda x, y: (np.maximum(x, y), np.minimum(x, y)), A, B, id="max-min-binary"),
    case(lambda x: np.tanh(np.tanh(np.tanh(x))) * np.exp(np.sin(x)), BIG, id="long-chain-big", rtol=MATH),
    # ----- broadcasting both ways
    case(lambda c, r: c + r, COL, ROW, id="col-plus-row"),
    case(lambda x, v: (x * v, v - x), A, V4, id="trailing-vector"),
    case(lambda x, c: x / (1.0 + c * c), A, COL, id="column"),
    case(lambda s, x: s * x + s, S0, A, id="0d-times-array"),
    case(lambda x, y: x[:, None, :] * y[None, :, :], A, B, id="outer-broadcast"),
    case(lambda t, r: t * r + np.exp(r), T, ROW, id="3d-with-row", rtol=MATH),
    # ----- reductions
    *[case(lambda x, _a=axis: np.sum(x, axis=_a), D, id=f"sum-axis-{axis}")
      for axis in (0, 1, 2, (0, 2), (1, 2), None)],
    *[case(lambda x, _a=axis: (np.max(x, axis=_a), np.min(x, axis=_a)), D, id=f"max-min-axis-{axis}")
      for axis in (0, 1, 2, (0, 1), None)],
    case(lambda x: (np.sum(x, axis=1, keepdims=True), np.max(x, axis=0, keepdims=True),
                    np.min(x, axis=(0, 2), keepdims=True)), D, id="keepdims"),
    case(lambda x: (np.mean(x, axis=0), np.var(x, axis=2), np.std(x)), T, id="mean-var-std", rtol=MATH),
    case(lambda x: (np.sum(x), np.sum(x, axis=1), np.max(x, axis=2)), BIG, id="big-reductions", rtol=MATH),
    case(lambda x: x - np.mean(x, axis=1, keepdims=True), BIG, id="centering", rtol=MATH),
    case(softmax, A, id="softmax", rtol=MATH),
    case(lambda x: np.log(np.sum(np.exp(x - x.max(1, keepdims=True)), axis=1)) + x.max(1), A, id="logsumexp",
         rtol=MATH),
    # ----- transposes (multi-index loops)
    case(lambda x, y: x.T + y, AT, A, id="transpose-plus"),
    case(lambda x, y: (x + y.T).T * 2.0, A, AT, id="transpose-of-sum"),
    case(lambda t: np.transpose(t, (1, 2, 0)) * np.transpose(t, (1, 2, 0)) + 1.0, T, id="transpose-3d"),
    case(lambda t: np.sum(np.transpose(t, (2, 0, 1)) * t.reshape(4, 2, 3), axis=1), T, id="transpose-reduce"),
    case(lambda t: np.swapaxes(t, 0, 2) - np.moveaxis(t, 0, -1).transpose(1, 0, 2), T, id="swapaxes-moveaxis"),
    # ----- slicing and indexing
    case(lambda x: (x[::2], x[1::2, ::-1], x[::-1, 1:3], x[-1], x[1, 2]), A, id="slices"),
    case(lambda t: (t[..., ::-2], t[1, ::2, 1:], t[:, None, 0, ::3]), T, id="strided-3d"),
    case(lambda x: x[2:-1:3, 5::-4, ::7] * 2.0, BIG, id="big-strided"),
    case(lambda x: x[::-1] + x, V4, id="reverse-plus"),
    # ----- joining
    case(lambda x, y: (np.concatenate([x, y]), np.concatenate([x, y, x], axis=1)), A, B, id="concatenate"),
    case(lambda x, y: np.concatenate([x[:, :1], np.sin(y), x * 2.0], axis=-1), A, B, id="concatenate-mixed",
         rtol=MATH),
    case(lambda x, y: np.stack([x, y], axis=1) * 3.0, A, B, id="stack"),
    # ----- products
    case(lambda x, y: x @ y, A, M2, id="matmul-2d"),
    case(lambda x, y: x @ y, BATCH_A, BATCH_B, id="matmul-batched"),
    case(lambda x, y: x @ y, BATCH_A, M2, id="matmul-broadcast-batch"),
    case(lambda x, v: x @ v, A, V4, id="matrix-vector"),
    case(lambda v, x: v @ x, V3, A, id="vector-matrix"),
    case(lambda u, v: u @ v, V4, V4, id="vector-vector"),
    case(lambda x, y: x.T @ y + y.T @ x, A, B, id="matmul-transposed"),
    case(lambda x: np.tanh(x @ C) @ C.T, SQ[:, :4], id="matmul-closed-over", rtol=MATH),
    case(lambda x, y: x @ y, SQ, SQ.T, id="matmul-64"),
    case(lambda x, y: np.tensordot(x, y, axes=([1, 2], [1, 0])), T, RNG.standard_normal((4, 3, 5)),
         id="tensordot"),
    # ----- float32
    case(lambda x, y: np.tanh(x) * y - x / (1.0 + y * y), A32, B32, id="f32-elementwise"),
    case(lambda t: (np.sum(t, axis=1), np.max(t, axis=0), np.mean(t)), T32, id="f32-reductions"),
    case(lambda x, m: x @ m, A32, M32, id="f32-matmul"),
    case(lambda x, y: x * y + 1.0, A32, B, id="f32-times-f64"),
    case(lambda x: (x.astype(np.float32), x.astype(np.float32).astype(np.float64) - x), A, id="f64-to-f32"),
    # ----- int64 and bool
    case(lambda i, j: (i * j + i - 3 * j, -i, np.abs(i), i ** 2), I1, I2, id="int-arith"),
    case(lambda i: (np.sum(i), np.sum(i, axis=0), np.max(i, axis=1), np.min(i)), I1, id="int-reductions"),
    case(lambda i, j: (i / j, i > j, i == 0, np.where(i > 0, i, j)), I1, I2, id="int-compare-select"),
    case(lambda i, x: i * x + i, I1, A, id="int-times-float"),
    case(lambda x: (x.astype(np.int64), (x > 0).astype(np.float64), np.sum(x > 0)), A * 3.0, id="conversions"),
    case(lambda x, y: np.where(x > 0, x, y), A, B, id="where"),
    case(lambda x, y: np.where((x > 0) & (y < 0) | ~(x > y), x * y, 0.0), A, B, id="where-logical"),
    case(lambda x, c: np.where(c > 0, x, -x), A, COL, id="where-broadcast-mask"),
    case(lambda x: (x > 0, np.logical_not(x > 0.5), x != x), A, id="bool-outputs"),
    # ----- outputs that are inputs, constants, duplicates, views
    case(lambda x: x, A, id="identity"),
    case(lambda x, y: (y, x, x), A, B, id="permuted-inputs"),
    case(lambda x: (x, np.ones(3), 2.5, np.int64(4)), A, id="constant-outputs"),
    case(lambda x: (np.sin(x), np.sin(x), x * 2.0), A, id="duplicated-outputs", rtol=MATH),
    case(lambda x: (x.reshape(-1), x.reshape(4, 3), x[None], x.T), A, id="reshaped-inputs"),
    case(lambda x: (x * 2.0, (x * 2.0).reshape(2, 6)), A, id="output-and-its-reshape"),
    case(lambda x: np.sum(x) + C, A, id="reduction-plus-constant"),
    # ----- zero-size and 0-d
    case(lambda x: (x * 2.0 + 1.0, np.sum(x, axis=0), np.sum(x)), np.zeros((0, 3)), id="zero-size"),
    case(lambda x, y: np.concatenate([x, y]) * 2.0, np.zeros((0, 4)), A, id="concatenate-empty"),
    case(lambda x, y: x @ y, np.zeros((3, 0)), np.zeros((0, 4)), id="matmul-empty-contraction"),
    case(lambda x: x[2:2] + 1.0, A, id="empty-slice"),
    case(lambda s: (s * s, np.sin(s), s + 1.0), S0, id="0d", rtol=MATH),
    case(lambda s, t: s * t - t / s, S0, np.float64(-1.3), id="0d-0d"),
    case(lambda x: np.sum(x).reshape(1, 1) + x[:1, :1], A, id="scalar-reshape"),
]


# --------------------------------------------------------------------------- runners

def compiled(fn, args):
    return CPUBackend().compile(fn)(args)


def optimized(fn):
    """`fn` after the pipeline's optimization passes, verified after each one."""
    verify(fn)
    for p in optimization_passes():
        fn = p.run(fn)
        verify(fn)
    return fn


def traced_case(fn, args):
    traced = trace(fn, args)
    leaves, _ = tree_flatten(tuple(args))
    return traced.function, [np.asarray(x) for x in leaves]


def assert_outputs_match(got, expected, types, rtol):
    assert len(got) == len(expected) == len(types)
    for k, (g, e, t) in enumerate(zip(got, expected, types, strict=True)):
        g, e = np.asarray(g), np.asarray(e)
        assert g.shape == e.shape == t.shape, f"output {k}: shape {g.shape} vs {e.shape} (IR {t})"
        assert g.dtype == e.dtype == t.dtype.numpy, f"output {k}: dtype {g.dtype} vs {e.dtype} (IR {t})"
        if t.dtype.is_float:
            tol = 1e-5 if t.dtype == DType.f32 else rtol
            scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
            np.testing.assert_allclose(g, e, rtol=tol, atol=tol * scale, err_msg=f"output {k}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"output {k}")


def vjp_of(fn):
    """The reverse-mode function of `fn` w.r.t. its float inputs, with the cotangent
    arguments it needs: none for a scalar loss, random ones otherwise."""
    wrt = [i for i, t in enumerate(fn.input_types) if t.dtype.is_float]
    outs = fn.output_types
    if len(outs) == 1 and outs[0].ndim == 0 and outs[0].dtype.is_float:
        return vjp_function(fn, wrt, ["one"]), []
    kinds = ["arg" if t.dtype.is_float else "none" for t in outs]
    rng = np.random.default_rng(11)
    cts = [np.asarray(rng.standard_normal(t.shape), t.dtype.numpy) for t in outs if t.dtype.is_float]
    return vjp_function(fn, wrt, kinds), cts


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("fn, args, rtol", CASES)
def test_compiled_equals_interpreter(fn, args, rtol):
    ir_fn, leaves = traced_case(fn, args)
    expected = evaluate(ir_fn, leaves)
    assert_outputs_match(compiled(ir_fn, leaves), expected, ir_fn.output_types, rtol)
    opt = optimized(ir_fn)
    assert_outputs_match(compiled(opt, leaves), expected, ir_fn.output_types, rtol)


@pytest.mark.parametrize("fn, args, rtol", [c for c in CASES if any(
    np.asarray(a).dtype.kind == "f" and np.asarray(a).size for a in tree_flatten(tuple(c.values[1]))[0])])
def test_compiled_gradient_equals_interpreter(fn, args, rtol):
    ir_fn, leaves = traced_case(fn, args)
    vfn, cts = vjp_of(ir_fn)
    expected = evaluate(vfn, leaves + cts)
    tol = max(rtol, MATH)
    assert_outputs_match(compiled(vfn, leaves + cts), expected, vfn.output_types, tol)
    assert_outputs_match(compiled(optimized(vfn), leaves + cts), expected, vfn.output_types, tol)


def test_the_cases_cover_their_dtypes():
    dtypes = {np.asarray(a).dtype for c in CASES for a in tree_flatten(tuple(c.values[1]))[0]}
    assert {np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.int64)} <= dtypes


# --------------------------------------------------------------------------- derivatives of compiled code

GRADIENT_IDENTITY_CASES = ["transcendental-chain", "col-plus-row", "sum-axis-(0, 2)", "max-min-axis-1",
                           "softmax", "transpose-3d", "strided-3d", "concatenate-mixed", "matmul-batched",
                           "vector-matrix", "where-broadcast-mask", "0d-times-array"]


@pytest.mark.parametrize("fn, args, rtol", [c for c in CASES if c.id in GRADIENT_IDENTITY_CASES])
def test_compiled_vjp_satisfies_the_inner_product_identity(fn, args, rtol):
    """<t, vjp(c)> = <jvp(t), c> with every function run as native code."""
    ir_fn, leaves = traced_case(fn, args)
    check_vjp(ir_fn, leaves, evaluator=compiled)


def test_gradient_of_strided_slice_is_an_interior_pad():
    """d sum(x[1:3, ::2]**2 * w) / dx scatters 2 x w into every other column of rows 1-2."""
    w = RNG.standard_normal((2, 2))
    ir_fn, leaves = traced_case(lambda x: np.sum(x[1:3, ::2] ** 2 * w), (A,))
    vfn = optimized(vjp_function(ir_fn, [0], ["one"]))
    assert "pad" in {op.name for op in vfn.walk()}
    (value, g) = compiled(vfn, leaves)
    expected = np.zeros_like(A)
    expected[1:3, ::2] = 2 * A[1:3, ::2] * w
    np.testing.assert_allclose(g, expected, rtol=1e-15, atol=0)
    np.testing.assert_allclose(value, np.sum(A[1:3, ::2] ** 2 * w), rtol=1e-14)


def test_gradient_of_reversed_strided_slice_3d():
    ir_fn, leaves = traced_case(lambda t: np.sum(np.sin(t[::-1, 2::-2, 1::2])), (T,))
    _, g = compiled(vjp_function(ir_fn, [0], ["one"]), leaves)
    expected = np.zeros_like(T)
    expected[::-1, 2::-2, 1::2] = np.cos(T[::-1, 2::-2, 1::2])
    np.testing.assert_allclose(g, expected, rtol=MATH, atol=1e-15)


def test_gradient_of_max_reduction_routes_to_the_argmax():
    ir_fn, leaves = traced_case(lambda x: np.sum(np.max(x, axis=1) * np.arange(1.0, 4.0)), (D[:, :, 0],))
    _, g = compiled(vjp_function(ir_fn, [0], ["one"]), leaves)
    expected = np.zeros((3, 4))
    expected[np.arange(3), np.argmax(D[:, :, 0], axis=1)] = np.arange(1.0, 4.0)
    np.testing.assert_array_equal(g, expected)


def test_compiled_jacobian_matches_finite_differences():
    """The full Jacobian of a broadcasting, reducing, multiplying function, column by
    column from the compiled VJP, against central differences of compiled code."""
    def f(x, y):
        return np.tanh(x @ M2) * np.sum(y, axis=0, keepdims=True)
    ir_fn, leaves = traced_case(f, (A, B[:, :1] @ np.ones((1, 5))))
    vfn = CPUBackend().compile(vjp_function(ir_fn, [0, 1]))
    out_shape = ir_fn.output_types[0].shape
    for wrt in (0, 1):
        numeric = numerical_jacobian(ir_fn, leaves, wrt=wrt, evaluator=compiled)
        rows = []
        for j in range(int(np.prod(out_shape))):
            ct = np.zeros(out_shape)
            ct.flat[j] = 1.0
            rows.append(vfn(leaves + [ct])[1 + wrt])
        analytic = np.stack(rows).reshape(out_shape + leaves[wrt].shape)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_executable_can_be_called_repeatedly_and_does_not_alias_outputs():
    ir_fn, leaves = traced_case(lambda x: (x * 2.0, np.sum(x)), (A,))
    run = CPUBackend().compile(ir_fn)
    first = run(leaves)
    second = run([B])
    np.testing.assert_array_equal(first[0], A * 2.0)
    np.testing.assert_array_equal(second[0], B * 2.0)
    assert first[0] is not second[0]


def test_non_contiguous_and_differently_typed_inputs_are_accepted():
    ir_fn, leaves = traced_case(lambda x: x * 2.0 + 1.0, (A,))
    run = CPUBackend().compile(ir_fn)
    strided = np.asfortranarray(A)
    np.testing.assert_array_equal(run([strided])[0], A * 2.0 + 1.0)
    np.testing.assert_array_equal(run([BIG[0, :3, 1:9:2]])[0], BIG[0, :3, 1:9:2] * 2.0 + 1.0)


# --------------------------------------------------------------------------- large (parallel) kernels

LARGE = [1 << 15, 50_001, 3 * (1 << 15) + 7]   # at, just over and well over the parallel threshold


def large_program(x, y):
    z = np.tanh(x) * y + np.exp(-x * x)
    return z, np.sum(z), np.max(y - x), np.sum(x * y)


@pytest.mark.parametrize("n", LARGE)
def test_large_fused_kernels_equal_interpreter(n):
    rng = np.random.default_rng(n)
    args = (rng.standard_normal(n), rng.standard_normal(n))
    ir_fn, leaves = traced_case(large_program, args)
    expected = evaluate(ir_fn, leaves)
    assert_outputs_match(compiled(optimized(ir_fn), leaves), expected, ir_fn.output_types, MATH)


@pytest.mark.parametrize("n", LARGE[1:])
def test_large_kernels_are_bit_identical_for_any_thread_count(n, monkeypatch):
    import jitgrad.config
    rng = np.random.default_rng(n)
    args = (rng.standard_normal(n), rng.standard_normal(n))
    ir_fn, leaves = traced_case(large_program, args)
    fn = optimized(ir_fn)
    results = []
    for threads in (1, 2, 3, 0):
        monkeypatch.setattr(jitgrad.config.config, "num_threads", threads)
        results.append(compiled(fn, leaves))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_large_kernel_gradient_equals_interpreter():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((250, 201))
    ir_fn, leaves = traced_case(lambda x: np.sum(np.sin(x) * x.T.T + np.mean(x ** 2)), (x,))
    vfn = vjp_function(ir_fn, [0], ["one"])
    expected = evaluate(vfn, leaves)
    assert_outputs_match(compiled(optimized(vfn), leaves), expected, vfn.output_types, MATH)


def test_parallel_executable_called_from_several_python_threads():
    import threading
    rng = np.random.default_rng(5)
    inputs = [(rng.standard_normal(50_001), rng.standard_normal(50_001)) for _ in range(4)]
    ir_fn, _ = traced_case(large_program, inputs[0])
    run = CPUBackend().compile(optimized(ir_fn))
    expected = [run(list(a)) for a in inputs]
    failures = []

    def work(k):
        for _ in range(20):
            got = run(list(inputs[k]))
            if not all(np.array_equal(g, e) for g, e in zip(got, expected[k], strict=True)):
                failures.append(k)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
