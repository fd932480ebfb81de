"""Derivative checkers for IR functions, after JAX's `public_test_util.check_grads`.

Every checker takes an IR `Function` and concrete NumPy arguments and runs the function
through an `evaluator(fn, args) -> list of arrays`. The default is the reference
interpreter; the backend tests pass the compiled-code runner instead, so the very same
checks validate generated code.

  - `check_jvp`: forward mode along a random tangent vs central differences.
  - `check_vjp`: reverse mode vs forward mode through the inner-product identity
    <t, vjp(c)> = <jvp(t), c>, with random tangents t and cotangents c.
  - `check_grads`: both, then again on the derivative functions themselves
    (fwd-over-fwd, rev-over-fwd, fwd-over-rev, rev-over-rev) up to `order`.
  - `check_zero_derivative`: tangents and cotangents are exactly zero.

Positions `wrt` index the function's arguments; by default every float argument.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from jitgrad.interpreter import evaluate
from jitgrad.ir import DType, Function, TensorType, new_function
from jitgrad.passes.jvp import jvp_function
from jitgrad.passes.reverse import vjp_function
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.tracing.tracer import trace

Evaluator = Callable[[Function, Sequence[np.ndarray]], list]

# Default tolerances per dtype: (finite-difference step, rtol, atol).
TOLERANCES = {
    DType.f64: (1e-5, 1e-5, 1e-6),
    DType.f32: (1e-2, 5e-2, 5e-2),
}


# --------------------------------------------------------------------------- small utilities

def float_positions(fn: Function) -> list[int]:
    """Indices of the float arguments of `fn` (the ones that have tangents)."""
    return [i for i, t in enumerate(fn.input_types) if t.dtype.is_float]


def random_array(rng: np.random.Generator, type: TensorType) -> np.ndarray:
    """Standard-normal values of `type` (random bools / small ints for other dtypes)."""
    if type.dtype == DType.bool:
        return rng.random(type.shape) < 0.5
    if type.dtype == DType.i64:
        return rng.integers(-5, 6, type.shape).astype(np.int64)
    return np.asarray(rng.standard_normal(type.shape), dtype=type.dtype.numpy)


def zeros_of(type: TensorType) -> np.ndarray:
    return np.zeros(type.shape, type.dtype.numpy)


def build(name: str, input_types: Sequence[TensorType], body: Callable) -> Function:
    """A Function whose body is `body(*args)`, which emits primitives and returns a Value
    or a list of Values (the outputs)."""
    fn, builder = new_function(name, list(input_types))
    with builder:
        out = body(*fn.args)
        builder.ret(list(out) if isinstance(out, (list, tuple)) else [out])
    return fn


def run_traced(fn: Callable, *args, evaluator: Evaluator = evaluate):
    """Trace `fn(*args)`, run the IR and return the output pytree."""
    traced = trace(fn, args)
    leaves, _ = tree_flatten(tuple(args))
    outs = evaluator(traced.function, [np.asarray(x) for x in leaves])
    return tree_unflatten(traced.out_tree, outs)


def _tolerances(fn: Function, wrt: Sequence[int], eps, rtol, atol):
    types = [fn.input_types[i] for i in wrt] + [t for t in fn.output_types if t.dtype.is_float]
    dtype = DType.f32 if any(t.dtype == DType.f32 for t in types) else DType.f64
    d_eps, d_rtol, d_atol = TOLERANCES[dtype]
    return (d_eps if eps is None else eps, d_rtol if rtol is None else rtol,
            d_atol if atol is None else atol)


def _prepare(fn: Function, args: Sequence) -> list[np.ndarray]:
    if len(args) != len(fn.args):
        raise ValueError(f"{fn.name} takes {len(fn.args)} arguments, got {len(args)}")
    return [np.asarray(a, dtype=t.dtype.numpy).reshape(t.shape)
            for a, t in zip(args, fn.input_types, strict=True)]


def _inner(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> float:
    """sum_k <xs[k], ys[k]>, accumulated in float64."""
    return float(sum(np.sum(np.asarray(x, np.float64) * np.asarray(y, np.float64))
                     for x, y in zip(xs, ys, strict=True)))


def _assert_type(array, type: TensorType, what: str) -> None:
    array = np.asarray(array)
    assert array.shape == type.shape and array.dtype == type.dtype.numpy, (
        f"{what}: got {array.dtype}{list(array.shape)}, expected {type}")


def _assert_primals(fn, got, expected, what):
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        _assert_type(g, fn.output_types[k], f"{what} output {k}")
        rtol = 1e-5 if fn.output_types[k].dtype == DType.f32 else 1e-9
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * 1e-3, err_msg=f"{what}: primal output {k}")


# --------------------------------------------------------------------------- numerical derivatives

def numerical_jvp(fn: Function, args: Sequence, wrt: Sequence[int], tangents: Sequence[np.ndarray],
                  eps: float, evaluator: Evaluator = evaluate) -> list[np.ndarray]:
    """Central differences (f(x + eps t) - f(x - eps t)) / 2 eps, in float64, for every
    output (non-float outputs get zeros)."""
    args = _prepare(fn, args)
    plus, minus = list(args), list(args)
    for i, t in zip(wrt, tangents, strict=True):
        dtype = args[i].dtype
        plus[i] = (args[i].astype(np.float64) + eps * t).astype(dtype)
        minus[i] = (args[i].astype(np.float64) - eps * t).astype(dtype)
    f_plus, f_minus = evaluator(fn, plus), evaluator(fn, minus)
    out = []
    for type, p, m in zip(fn.output_types, f_plus, f_minus, strict=True):
        if type.dtype.is_float:
            out.append((np.asarray(p, np.float64) - np.asarray(m, np.float64)) / (2 * eps))
        else:
            out.append(np.zeros(type.shape))
    return out


def numerical_jacobian(fn: Function, args: Sequence, wrt: int = 0, output: int = 0, eps: float = 1e-6,
                       evaluator: Evaluator = evaluate) -> np.ndarray:
    """d output / d args[wrt] by central differences, shaped output.shape + arg.shape."""
    args = _prepare(fn, args)
    in_shape, out_shape = fn.input_types[wrt].shape, fn.output_types[output].shape
    columns = []
    for j in range(int(np.prod(in_shape))):
        unit = np.zeros(int(np.prod(in_shape)))
        unit[j] = 1.0
        columns.append(numerical_jvp(fn, args, [wrt], [unit.reshape(in_shape)], eps, evaluator)[output])
    jac = np.stack([c.reshape(-1) for c in columns], axis=-1) if columns else np.zeros((0,))
    return jac.reshape(out_shape + in_shape)


# --------------------------------------------------------------------------- the checks

def check_jvp(fn: Function, args: Sequence, wrt: Sequence[int] | None = None, eps: float | None = None,
              rtol: float | None = None, atol: float | None = None, evaluator: Evaluator = evaluate,
              rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """jvp_function(fn, wrt) along a random tangent matches central differences, and its
    primal outputs match fn's. Returns the output tangents."""
    args = _prepare(fn, args)
    wrt = float_positions(fn) if wrt is None else list(wrt)
    eps, rtol, atol = _tolerances(fn, wrt, eps, rtol, atol)
    rng = np.random.default_rng(0) if rng is None else rng
    tangents = [random_array(rng, fn.input_types[i]) for i in wrt]

    jfn = jvp_function(fn, wrt)
    outs = evaluator(jfn, args + tangents)
    n_out = len(fn.outputs)
    assert len(outs) == 2 * n_out, f"{jfn.name} returned {len(outs)} values, expected {2 * n_out}"
    _assert_primals(fn, outs[:n_out], evaluator(fn, args), jfn.name)
    out_tangents = outs[n_out:]
    numeric = numerical_jvp(fn, args, wrt, tangents, eps, evaluator)
    for k, (t, expected, type) in enumerate(zip(out_tangents, numeric, fn.output_types, strict=True)):
        _assert_type(t, type, f"{jfn.name} tangent {k}")
        if type.dtype.is_float:
            np.testing.assert_allclose(np.asarray(t, np.float64), expected, rtol=rtol, atol=atol,
                                       err_msg=f"{jfn.name}: tangent of output {k} vs central differences")
        else:
            assert not np.any(t), f"{jfn.name}: tangent of non-float output {k} is not zero"
    return out_tangents


def _random_cotangents(fn: Function, rng) -> list[np.ndarray]:
    return [random_array(rng, t) if t.dtype.is_float else zeros_of(t) for t in fn.output_types]


def check_vjp(fn: Function, args: Sequence, wrt: Sequence[int] | None = None, rtol: float | None = None,
              atol: float | None = None, evaluator: Evaluator = evaluate,
              rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """vjp_function(fn, wrt) satisfies <t, vjp(c)> = <jvp(t), c> for random t and c, and its
    primal outputs match fn's. Returns the input cotangents."""
    args = _prepare(fn, args)
    wrt = float_positions(fn) if wrt is None else list(wrt)
    _, rtol, atol = _tolerances(fn, wrt, None, rtol, atol)
    rng = np.random.default_rng(1) if rng is None else rng
    tangents = [random_array(rng, fn.input_types[i]) for i in wrt]
    cotangents = _random_cotangents(fn, rng)
    n_out = len(fn.outputs)

    out_tangents = evaluator(jvp_function(fn, wrt), args + tangents)[n_out:]
    vfn = vjp_function(fn, wrt)
    outs = evaluator(vfn, args + cotangents)
    assert len(outs) == n_out + len(wrt), f"{vfn.name} returned {len(outs)} values"
    _assert_primals(fn, outs[:n_out], evaluator(fn, args), vfn.name)
    in_cts = outs[n_out:]
    for i, ct in zip(wrt, in_cts, strict=True):
        _assert_type(ct, fn.input_types[i], f"{vfn.name} cotangent of argument {i}")

    float_outs = [k for k, t in enumerate(fn.output_types) if t.dtype.is_float]
    lhs = _inner(tangents, in_cts)
    rhs = _inner([out_tangents[k] for k in float_outs], [cotangents[k] for k in float_outs])
    scale = np.sqrt(_inner(tangents, tangents) * _inner(in_cts, in_cts)) + abs(rhs)
    assert abs(lhs - rhs) <= atol + rtol * scale, (
        f"{vfn.name}: <t, vjp(c)> = {lhs!r} but <jvp(t), c> = {rhs!r}")
    return in_cts


def check_grads(fn: Function, args: Sequence, order: int = 2, wrt: Sequence[int] | None = None,
                modes: Sequence[str] = ("fwd", "rev"), eps: float | None = None, rtol: float | None = None,
                atol: float | None = None, evaluator: Evaluator = evaluate,
                rng: np.random.Generator | None = None) -> None:
    """check_jvp / check_vjp on fn, then (order > 1) on its derivative functions: the JVP
    function differentiated w.r.t. primals and tangents, the VJP function differentiated
    w.r.t. primals and output cotangents, so every rule is itself differentiated."""
    args = _prepare(fn, args)
    wrt = float_positions(fn) if wrt is None else list(wrt)
    rng = np.random.default_rng(2) if rng is None else rng
    if "fwd" in modes:
        check_jvp(fn, args, wrt, eps, rtol, atol, evaluator, rng)
    if "rev" in modes:
        check_vjp(fn, args, wrt, rtol, atol, evaluator, rng)
    if order <= 1 or not wrt:
        return
    if "fwd" in modes:
        jfn = jvp_function(fn, wrt)
        tangents = [random_array(rng, fn.input_types[i]) for i in wrt]
        tangent_positions = list(range(len(args), len(args) + len(wrt)))
        check_grads(jfn, args + tangents, order - 1, wrt + tangent_positions, modes, eps, rtol, atol,
                    evaluator, rng)
    if "rev" in modes:
        vfn = vjp_function(fn, wrt)
        cotangents = _random_cotangents(fn, rng)
        ct_positions = [len(args) + k for k, t in enumerate(fn.output_types) if t.dtype.is_float]
        check_grads(vfn, args + cotangents, order - 1, wrt + ct_positions, modes, eps, rtol, atol,
                    evaluator, rng)


def check_zero_derivative(fn: Function, args: Sequence, wrt: Sequence[int] | None = None,
                          evaluator: Evaluator = evaluate, rng: np.random.Generator | None = None) -> None:
    """Every output tangent (forward) and every input cotangent (reverse) is exactly 0."""
    args = _prepare(fn, args)
    wrt = float_positions(fn) if wrt is None else list(wrt)
    rng = np.random.default_rng(3) if rng is None else rng
    n_out = len(fn.outputs)
    tangents = [random_array(rng, fn.input_types[i]) for i in wrt]
    jfn = jvp_function(fn, wrt)
    outs = evaluator(jfn, args + tangents)
    _assert_primals(fn, outs[:n_out], evaluator(fn, args), jfn.name)
    for k, (t, type) in enumerate(zip(outs[n_out:], fn.output_types, strict=True)):
        _assert_type(t, type, f"{jfn.name} tangent {k}")
        assert not np.any(t), f"{jfn.name}: tangent of output {k} is {t}, expected exactly 0"
    vfn = vjp_function(fn, wrt)
    outs = evaluator(vfn, args + _random_cotangents(fn, rng))
    for i, ct in zip(wrt, outs[n_out:], strict=True):
        _assert_type(ct, fn.input_types[i], f"{vfn.name} cotangent of argument {i}")
        assert not np.any(ct), f"{vfn.name}: cotangent of argument {i} is {ct}, expected exactly 0"
