"""The public API (jit, grad, value_and_grad, vjp, jit_grad) end to end: compiled values
and gradients against NumPy, hand-derived gradients and central finite differences;
output layouts; pytrees; dtypes; composition; the per-signature cache; stage texts.
"""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad
from jitgrad import grad, jit, jit_grad, value_and_grad, vjp

RNG = np.random.default_rng(20240611)
W = RNG.standard_normal(3)
X = RNG.standard_normal((6, 3))
Y = RNG.standard_normal(6)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((4, 2))
C = RNG.standard_normal((3, 4))
M = RNG.standard_normal((4, 4))      # closed over by some functions below


def assert_close(got, expected, rtol=1e-12, atol=1e-12):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    assert got.dtype == expected.dtype, f"dtype {got.dtype} != {expected.dtype}"
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def assert_tree_close(got, expected, rtol=1e-12, atol=1e-12):
    """Same pytree structure (container types included) and close leaves."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(expected), f"{got!r} vs {expected!r}"
        for k in expected:
            assert_tree_close(got[k], expected[k], rtol, atol)
    elif isinstance(expected, (tuple, list)):
        assert type(got) is type(expected) and len(got) == len(expected), f"{type(got)} vs {type(expected)}"
        for g, e in zip(got, expected, strict=True):
            assert_tree_close(g, e, rtol, atol)
    else:
        assert_close(got, expected, rtol, atol)


def numerical_grad(f, args, argnum=0, eps=1e-6):
    """Central differences of the scalar f(*args) w.r.t. the float64 array args[argnum]."""
    x = np.asarray(args[argnum], dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        lo = list(args)
        hi = list(args)
        hi[argnum], lo[argnum] = plus, minus
        g[idx] = (float(f(*hi)) - float(f(*lo))) / (2 * eps)
    return g


FD = dict(rtol=1e-6, atol=1e-8)   # tolerances against finite differences


# --------------------------------------------------------------------------- the README example

def loss(w, x, y):
    return np.mean((np.tanh(x @ w) - y) ** 2)


def loss_grads(w, x, y):
    """Hand-derived: r = tanh(xw) - y; d/dw = x^T (2 r (1 - t^2)) / n, d/dx = outer(., w)."""
    t = np.tanh(x @ w)
    d = 2 * (t - y) * (1 - t ** 2) / len(y)
    return x.T @ d, np.outer(d, w), -2 * (t - y) / len(y)


def test_readme_example_value():
    assert_close(jit(loss)(W, X, Y), loss(W, X, Y))


def test_readme_example_gradient_vs_hand_derived_and_finite_differences():
    g = grad(loss)(W, X, Y)
    assert_close(g, loss_grads(W, X, Y)[0], rtol=1e-10)
    assert_close(g, numerical_grad(loss, (W, X, Y), 0), **FD)


def test_readme_example_jit_grad_decorator():
    compiled = jit_grad(loss)
    assert_close(compiled(W, X, Y), loss_grads(W, X, Y)[0], rtol=1e-10)


# --------------------------------------------------------------------------- argnums


@pytest.mark.parametrize("argnums, expected", [
    (0, 0), (1, 1), (2, 2), (-1, 2), (-3, 0),
    ((0, 1), (0, 1)), ((1,), (1,)), ((0, -1), (0, 2)),
    pytest.param((2, 0), (2, 0)),
    pytest.param((-1, 0), (2, 0)),
])
def test_argnums(argnums, expected):
    hand = loss_grads(W, X, Y)
    g = grad(loss, argnums=argnums)(W, X, Y)
    if isinstance(expected, int):
        assert_close(g, hand[expected], rtol=1e-10)
        assert_close(g, numerical_grad(loss, (W, X, Y), expected), **FD)
    else:
        assert isinstance(g, tuple) and len(g) == len(expected)
        for gi, k in zip(g, expected, strict=True):
            assert_close(gi, hand[k], rtol=1e-10)


def test_argnums_out_of_range():
    with pytest.raises(jitgrad.ArgumentError, match="argnums"):
        grad(loss, argnums=3)(W, X, Y)


# --------------------------------------------------------------------------- has_aux / with_value / layouts

def loss_with_aux(w, x, y):
    pred = np.tanh(x @ w)
    return np.mean((pred - y) ** 2), {"pred": pred, "n": np.sum(pred > 0)}


def test_grad_has_aux():
    g, aux = grad(loss_with_aux, has_aux=True)(W, X, Y)
    assert_close(g, loss_grads(W, X, Y)[0], rtol=1e-10)
    assert sorted(aux) == ["n", "pred"]
    assert_close(aux["pred"], np.tanh(X @ W))
    assert_close(aux["n"], np.sum(np.tanh(X @ W) > 0))


def test_value_and_grad_layout():
    value, g = value_and_grad(loss)(W, X, Y)
    assert_close(value, loss(W, X, Y))
    assert_close(g, loss_grads(W, X, Y)[0], rtol=1e-10)


def test_value_and_grad_layout_with_aux_and_tuple_argnums():
    (value, aux), (gw, gy) = value_and_grad(loss_with_aux, argnums=(0, 2), has_aux=True)(W, X, Y)
    hand = loss_grads(W, X, Y)
    assert_close(value, loss(W, X, Y))
    assert_close(aux["pred"], np.tanh(X @ W))
    assert_close(gw, hand[0], rtol=1e-10)
    assert_close(gy, hand[2], rtol=1e-10)


def test_jit_grad_with_value():
    @jit_grad(argnums=(0, 1), with_value=True)
    def f(w, x, y):
        return loss(w, x, y)
    value, (gw, gx) = f(W, X, Y)
    hand = loss_grads(W, X, Y)
    assert_close(value, loss(W, X, Y))
    assert_close(gw, hand[0], rtol=1e-10)
    assert_close(gx, hand[1], rtol=1e-10)


def test_jit_grad_with_value_and_aux():
    f = jit_grad(loss_with_aux, has_aux=True, with_value=True)
    (value, aux), g = f(W, X, Y)
    assert_close(value, loss(W, X, Y))
    assert_close(aux["pred"], np.tanh(X @ W))
    assert_close(g, loss_grads(W, X, Y)[0], rtol=1e-10)


def test_jit_grad_has_aux_without_value():
    g, aux = jit_grad(loss_with_aux, has_aux=True)(W, X, Y)
    assert_close(g, loss_grads(W, X, Y)[0], rtol=1e-10)
    assert_close(aux["pred"], np.tanh(X @ W))


# --------------------------------------------------------------------------- pytrees, scalars, closures

def mlp_loss(params, x):
    h = np.tanh(x @ params["w1"] + params["b1"])
    return np.sum((h @ params["w2"]) ** 2)


PARAMS = {"w1": RNG.standard_normal((3, 4)), "b1": RNG.standard_normal(4), "w2": RNG.standard_normal((4, 2))}


def test_dict_argument_gives_dict_of_grads():
    g = grad(mlp_loss)(PARAMS, X)
    assert isinstance(g, dict) and sorted(g) == sorted(PARAMS)
    for key in PARAMS:
        def f(leaf, key=key):
            return mlp_loss({**PARAMS, key: leaf}, X)
        assert_close(g[key], numerical_grad(f, (PARAMS[key],)), **FD)
    # hand-derived
    h = np.tanh(X @ PARAMS["w1"] + PARAMS["b1"])
    out = h @ PARAMS["w2"]
    dh = (2 * out @ PARAMS["w2"].T) * (1 - h ** 2)
    assert_close(g["w2"], h.T @ (2 * out), rtol=1e-10)
    assert_close(g["b1"], dh.sum(0), rtol=1e-10)
    assert_close(g["w1"], X.T @ dh, rtol=1e-10)


def test_tuple_and_list_arguments_give_grads_of_the_same_structure():
    def f(pair, items):
        a, b = pair
        return np.sum(a * b) + np.sum(items[0] ** 2) * np.sum(items[1])
    pair, items = (A, C), [W, Y]
    gp, gi = grad(f, argnums=(0, 1))(pair, items)
    assert isinstance(gp, tuple) and isinstance(gi, list)
    assert_tree_close(gp, (C, A))
    assert_tree_close(gi, [2 * W * np.sum(Y), np.full_like(Y, np.sum(W ** 2))], rtol=1e-12)


def test_nested_pytree_argument():
    def f(p):
        return np.sum(p["a"][0] * p["a"][1]) + np.sum(np.sin(p["b"]["c"]))
    p = {"a": [A, C], "b": {"c": W}}
    g = grad(f)(p)
    assert_tree_close(g, {"a": [C, A], "b": {"c": np.cos(W)}})


def test_python_float_arguments_are_0d_float64():
    def f(x, s):
        return np.sum(np.sin(x * s)) * s
    value, (gx, gs) = value_and_grad(f, argnums=(0, 1))(A, 0.7)
    assert_close(value, f(A, 0.7))
    assert gs.shape == () and gs.dtype == np.float64
    assert_close(gx, 0.7 * 0.7 * np.cos(A * 0.7))
    assert_close(gs, np.sum(np.sin(A * 0.7)) + 0.7 * np.sum(A * np.cos(A * 0.7)))


def test_scalar_function_of_python_float():
    g = grad(lambda x: x ** 3 + 2.0 * x)(1.5)
    assert_close(g, np.float64(3 * 1.5 ** 2 + 2.0))


def test_closed_over_arrays_are_constants():
    scale = 0.25

    def f(x):
        return np.sum(np.tanh(x @ M) * scale)
    x = RNG.standard_normal((2, 4))
    g = grad(f)(x)
    assert_close(g, ((1 - np.tanh(x @ M) ** 2) * scale) @ M.T, rtol=1e-10)
    assert_close(g, numerical_grad(f, (x,)), **FD)
    assert_close(jit(f)(x), f(x))


def test_unused_input_has_exactly_zero_gradient():
    def f(x, unused, y):
        return np.sum(x * y)
    gx, gu, gy = grad(f, argnums=(0, 1, 2))(A, B, C)
    assert gu.shape == B.shape and gu.dtype == np.float64
    assert not np.any(gu) and not np.any(np.signbit(gu))
    assert_close(gx, C)
    assert_close(gy, A)


def test_float32_inputs_give_float32_values_and_grads():
    w, x, y = W.astype(np.float32), X.astype(np.float32), Y.astype(np.float32)
    value, (gw, gx) = value_and_grad(loss, argnums=(0, 1))(w, x, y)
    assert value.dtype == np.float32 and gw.dtype == np.float32 and gx.dtype == np.float32
    hand = loss_grads(W, X, Y)
    assert_close(value, np.float32(loss(W, X, Y)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gw, hand[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx, hand[1], rtol=1e-4, atol=1e-5)


def test_float32_and_float64_mixed():
    def f(a32, b64):
        return np.sum(a32 * b64)
    a32 = A.astype(np.float32)
    g32, g64 = grad(f, argnums=(0, 1))(a32, C)
    assert g32.dtype == np.float32 and g64.dtype == np.float64
    np.testing.assert_allclose(g32, C, rtol=1e-6)
    assert_close(g64, a32.astype(np.float64))


# --------------------------------------------------------------------------- higher order and composition

HIGHER_ORDER = [
    # f, f', f'', f'''
    (lambda x: np.sin(x) * x, lambda x: np.cos(x) * x + np.sin(x),
     lambda x: 2 * np.cos(x) - x * np.sin(x), lambda x: -3 * np.sin(x) - x * np.cos(x)),
    (lambda x: np.exp(2 * x), lambda x: 2 * np.exp(2 * x), lambda x: 4 * np.exp(2 * x),
     lambda x: 8 * np.exp(2 * x)),
    (lambda x: np.tanh(x), lambda x: 1 - np.tanh(x) ** 2,
     lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2),
     lambda x: -2 * (1 - np.tanh(x) ** 2) ** 2 + 4 * np.tanh(x) ** 2 * (1 - np.tanh(x) ** 2)),
    (lambda x: np.log(1 + x ** 2), lambda x: 2 * x / (1 + x ** 2),
     lambda x: (2 - 2 * x ** 2) / (1 + x ** 2) ** 2, lambda x: (4 * x ** 3 - 12 * x) / (1 + x ** 2) ** 3),
    (lambda x: x ** 4 / (1 + x), lambda x: (3 * x ** 4 + 4 * x ** 3) / (1 + x) ** 2,
     None, None),
    (lambda x: np.sqrt(x), lambda x: 0.5 / np.sqrt(x), lambda x: -0.25 * x ** -1.5, lambda x: 0.375 * x ** -2.5),
]


@pytest.mark.parametrize("k", range(len(HIGHER_ORDER)))
@pytest.mark.parametrize("x", [0.3, 1.7])
def test_higher_order_derivatives_of_scalar_functions(k, x):
    f, d1, d2, d3 = HIGHER_ORDER[k]
    assert_close(jit(f)(x), np.float64(f(x)), rtol=1e-12)
    assert_close(grad(f)(x), np.float64(d1(x)), rtol=1e-10)
    if d2 is not None:
        assert_close(grad(grad(f))(x), np.float64(d2(x)), rtol=1e-9, atol=1e-12)
        assert_close(grad(grad(grad(f)))(x), np.float64(d3(x)), rtol=1e-9, atol=1e-12)
    else:  # check the second derivative against differences of the first
        eps = 1e-5
        fd = (grad(f)(x + eps) - grad(f)(x - eps)) / (2 * eps)
        np.testing.assert_allclose(grad(grad(f))(x), fd, rtol=1e-6)


def test_second_derivative_of_vector_function_contracted():
    """Hessian-vector style: grad of (grad f . v) for f = sum(sin(x) * x^2)."""
    v = RNG.standard_normal(A.shape)

    def f(x):
        return np.sum(np.sin(x) * x ** 2)

    def directional(x):
        return np.sum(grad(f)(x) * v)
    hv = grad(directional)(A)
    second = 2 * np.sin(A) + 4 * A * np.cos(A) - A ** 2 * np.sin(A)   # diagonal Hessian
    assert_close(hv, second * v, rtol=1e-10, atol=1e-12)


def test_jit_of_grad():
    compiled = jit(grad(loss))
    assert_close(compiled(W, X, Y), loss_grads(W, X, Y)[0], rtol=1e-10)
    assert compiled.cache_size == 1


def test_grad_of_jit():
    g = grad(jit(loss), argnums=(0, 1))(W, X, Y)
    hand = loss_grads(W, X, Y)
    assert_close(g[0], hand[0], rtol=1e-10)
    assert_close(g[1], hand[1], rtol=1e-10)


def test_jit_of_jit_and_grad_of_value_and_grad_value():
    assert_close(jit(jit(loss))(W, X, Y), loss(W, X, Y))

    def value_only(w, x, y):
        value, _ = value_and_grad(loss)(w, x, y)
        return value
    assert_close(grad(value_only)(W, X, Y), loss_grads(W, X, Y)[0], rtol=1e-10)


def test_jitted_function_called_inside_grad_with_a_closure():
    inner = jit(lambda x: np.sin(x) * M)

    def f(x):
        return np.sum(inner(x) ** 2)
    x = RNG.standard_normal((4, 4))
    assert_close(grad(f)(x), 2 * np.sin(x) * np.cos(x) * M ** 2, rtol=1e-10)


# --------------------------------------------------------------------------- vjp

def test_vjp_matrix_output():
    out, vjp_fn = vjp(lambda a, b: a @ b, A, B)
    assert_close(out, A @ B)
    ct = RNG.standard_normal((3, 2))
    ga, gb = vjp_fn(ct)
    assert_close(ga, ct @ B.T)
    assert_close(gb, A.T @ ct)


def test_vjp_elementwise_matrix_output_vs_finite_differences():
    def f(x):
        return np.tanh(x) * np.exp(0.3 * x)
    out, vjp_fn = vjp(f, A)
    ct = RNG.standard_normal(A.shape)
    (g,) = vjp_fn(ct)
    assert_close(out, f(A))
    assert_close(g, numerical_grad(lambda x: np.sum(f(x) * ct), (A,)), **FD)


def test_vjp_pytree_output_and_int_input():
    def f(x, n, d):
        return {"prod": x * d["s"], "sum": [np.sum(x) * n]}
    d = {"s": C}
    out, vjp_fn = vjp(f, A, np.int64(3), d)
    assert_tree_close(out, {"prod": A * C, "sum": [np.sum(A) * 3.0]})
    ct_prod = RNG.standard_normal(A.shape)
    gx, gn, gd = vjp_fn({"prod": ct_prod, "sum": [np.float64(2.0)]})
    assert_close(gx, ct_prod * C + 6.0)
    assert_close(gn, np.int64(0))
    assert_tree_close(gd, {"s": ct_prod * A})


def test_vjp_returns_a_tuple_for_one_primal():
    out, vjp_fn = vjp(np.sin, W)
    result = vjp_fn(np.ones(3))
    assert isinstance(result, tuple) and len(result) == 1
    assert_close(result[0], np.cos(W))


# --------------------------------------------------------------------------- static arguments

def test_static_argnums_drive_python_control_flow():
    calls = []

    def f(x, n, mode):
        calls.append((n, mode))
        y = x
        for _ in range(n):
            y = np.sin(y)
        return y * 2.0 if mode == "double" else y

    compiled = jit(f, static_argnums=(1, 2))
    assert_close(compiled(A, 2, "double"), f(A, 2, "double"))
    assert_close(compiled(A, 3, "plain"), f(A, 3, "plain"))
    traced = len(calls)
    assert_close(compiled(C, 2, "double"), f(C, 2, "double"))
    assert len(calls) == traced + 1      # only the direct call above ran f again
    assert compiled.cache_size == 2


def test_static_argnums_int_and_decorator_form():
    @jit(static_argnums=1)
    def f(x, axis):
        return np.sum(x, axis=axis)
    assert_close(f(A, 0), A.sum(0))
    assert_close(f(A, 1), A.sum(1))
    assert f.cache_size == 2



def test_jitted_function_with_static_argnums_inside_jit():
    inner = jit(lambda x, n: x * n, static_argnums=1)
    assert_close(jit(lambda x: inner(x, 3))(W), W * 3)


def test_jitted_function_with_static_argnums_inside_grad():
    inner = jit(lambda x, n: np.sum(x ** n), static_argnums=1)
    assert_close(grad(lambda x: inner(x, 3))(W), 3 * W ** 2)


def test_negative_static_argnums():
    f = jit(lambda x, name: x * len(name), static_argnums=-1)
    assert_close(f(W, "abc"), W * 3)


# --------------------------------------------------------------------------- caching

def make_counted(body):
    counter = {"n": 0}

    def f(*args):
        counter["n"] += 1
        return body(*args)
    return f, counter


@pytest.mark.parametrize("transform", [jit, grad, value_and_grad, jit_grad], ids=lambda t: t.__name__)
def test_same_signature_does_not_retrace(transform):
    f, counter = make_counted(lambda x: np.sum(np.sin(x) ** 2))
    compiled = transform(f)
    compiled(A)
    assert counter["n"] == 1 and compiled.cache_size == 1
    second = compiled(A + 1.0)           # new values, same shape and dtype
    assert counter["n"] == 1 and compiled.cache_size == 1
    value = np.sum(np.sin(A + 1.0) ** 2)
    gradient = 2 * np.sin(A + 1.0) * np.cos(A + 1.0)
    expected = {jit: value, grad: gradient, value_and_grad: (value, gradient), jit_grad: gradient}[transform]
    assert_tree_close(second, expected, rtol=1e-12)


def test_new_shape_and_new_dtype_retrace():
    f, counter = make_counted(lambda x: np.tanh(x) * 2.0)
    compiled = jit(f)
    compiled(A)
    compiled(A)
    assert (counter["n"], compiled.cache_size) == (1, 1)
    assert_close(compiled(W), np.tanh(W) * 2.0)
    assert (counter["n"], compiled.cache_size) == (2, 2)
    out32 = compiled(A.astype(np.float32))
    assert out32.dtype == np.float32
    assert (counter["n"], compiled.cache_size) == (3, 3)
    compiled(W)
    compiled(A.astype(np.float32))
    assert (counter["n"], compiled.cache_size) == (3, 3)


def test_python_scalar_values_share_one_signature():
    f, counter = make_counted(lambda x, s: x * s)
    compiled = jit(f)
    assert_close(compiled(A, 2.0), A * 2.0)
    assert_close(compiled(A, -0.5), A * -0.5)
    assert (counter["n"], compiled.cache_size) == (1, 1)


def test_pytree_structure_is_part_of_the_signature():
    f, counter = make_counted(lambda d: sum(np.sum(v) for v in d.values()))
    compiled = jit(f)
    compiled({"a": A})
    compiled({"a": C})
    assert (counter["n"], compiled.cache_size) == (1, 1)
    assert_close(compiled({"a": A, "b": C}), np.sum(A) + np.sum(C))
    assert (counter["n"], compiled.cache_size) == (2, 2)


def test_lower_shares_the_cache():
    f, counter = make_counted(loss)
    compiled = jit(f)
    lowered = compiled.lower(W, X, Y)
    assert compiled.cache_size == 1
    compiled(W, X, Y)
    assert (counter["n"], compiled.cache_size) == (1, 1)
    assert compiled.lower(W, X, Y) is lowered


# --------------------------------------------------------------------------- stages

@pytest.mark.parametrize("transform", [jit, grad], ids=lambda t: t.__name__)
def test_every_stage_has_text(transform):
    lowered = transform(loss).lower(W, X, Y)
    names = lowered.stage_names()
    ir_stages = [name for name, _ in lowered.stages]
    assert names[0] == "traced" and names[:len(ir_stages)] == ir_stages
    assert {"llvm", "llvm-opt", "asm"} <= set(names[len(ir_stages):])
    if transform is grad:
        assert "autodiff" in names
    for name in names:
        text = lowered.as_text(name)
        assert isinstance(text, str) and text.strip(), name
    assert "define" in lowered.as_text("llvm")
    assert "tanh" in lowered.as_text("traced")
    assert lowered.as_text() == lowered.as_text(ir_stages[-1])   # default: the optimized IR


def test_unknown_stage_lists_the_stages():
    lowered = jit(loss).lower(W, X, Y)
    with pytest.raises(KeyError, match="traced"):
        lowered.as_text("no-such-stage")


def test_keyword_arguments_bind_to_their_positions():
    f = jit(lambda x, scale=2.0: x * scale)
    np.testing.assert_array_equal(f(np.ones(2)), [2.0, 2.0])
    np.testing.assert_array_equal(f(np.ones(2), scale=3.0), [3.0, 3.0])
    np.testing.assert_array_equal(f(x=np.ones(2), scale=4.0), [4.0, 4.0])
    g = grad(lambda w, x: np.sum(w * x))
    np.testing.assert_array_equal(g(np.ones(2), x=np.arange(2.0)), [0.0, 1.0])

    def keyword_only(x, *, k):
        return x * k
    with pytest.raises(jitgrad.ArgumentError, match="keyword-only"):
        jit(keyword_only)(np.ones(2), k=3.0)


def test_threads_trace_and_compile_at_the_same_time():
    import threading
    results, errors = {}, []

    def work(n):
        try:
            g = grad(lambda x: np.sum(np.sin(x) * x ** 2))
            x = np.linspace(-1, 1, n)
            results[n] = (g(x), np.cos(x) * x ** 2 + 2 * x * np.sin(x))
        except Exception as err:   # noqa: BLE001 - reported below
            errors.append(err)
    threads = [threading.Thread(target=work, args=(n,)) for n in (3, 4, 5, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in results.values():
        np.testing.assert_allclose(got, want, rtol=1e-12)
