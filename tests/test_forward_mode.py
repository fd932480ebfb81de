"""Forward mode and higher-order derivatives through the public API: jvp, linearize,
jacfwd, jacrev, hessian, hvp, grad of grad, stop_gradient, and their nesting with jit.

References are central finite differences of the plain NumPy function in float64 (the
`numerical_jvp` / `numerical_jacobian` helpers with NumPy itself as the evaluator),
closed-form derivatives, and the inner-product identity <t, vjp(c)> = <jvp(t), c>.
"""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.tracing.tracer import trace
from helpers import numerical_jacobian, numerical_jvp

RNG = np.random.default_rng(7)
X3 = RNG.standard_normal(3)
X4 = np.array([0.3, -1.2, 0.8, 1.5])
A = RNG.standard_normal((3, 4))
M = RNG.standard_normal((2, 3))
FD = dict(rtol=1e-6, atol=1e-8)   # tolerances against central differences (eps=1e-6, f64)


# --------------------------------------------------------------------------- reference helpers

def _numpy_evaluator(f, in_tree):
    """An evaluator for the helpers that runs the plain NumPy function, not the IR."""
    def run(_fn, leaves):
        out = f(*tree_unflatten(in_tree, [np.asarray(x) for x in leaves]))
        return [np.asarray(x, np.float64) for x in tree_flatten(out)[0]]
    return run


def fd_jvp(f, primals, tangents, eps=1e-6):
    """Central differences of f along `tangents` (pytrees like `primals`), as f's pytree."""
    traced = trace(f, tuple(primals))
    leaves, in_tree = tree_flatten(tuple(primals))
    t_leaves = [np.asarray(t, np.float64) for t in tree_flatten(tuple(tangents))[0]]
    out = numerical_jvp(traced.function, leaves, range(len(leaves)), t_leaves, eps, _numpy_evaluator(f, in_tree))
    return tree_unflatten(traced.out_tree, out)


def fd_jacobian(f, args, argnum=0, output=0, eps=1e-6):
    """d f(*args)[output] / d args[argnum] by central differences of the NumPy function."""
    traced = trace(f, tuple(args))
    _, in_tree = tree_flatten(tuple(args))
    return numerical_jacobian(traced.function, list(args), argnum, output, eps, _numpy_evaluator(f, in_tree))


def assert_tree_close(got, expected, rtol=1e-12, atol=1e-12):
    """Same pytree structure (container types included) and close float64 leaves."""
    g_leaves, g_tree = tree_flatten(got)
    e_leaves, e_tree = tree_flatten(expected)
    assert g_tree == e_tree, f"structure {g_tree} != {e_tree}"
    for g, e in zip(g_leaves, e_leaves, strict=True):
        g, e = np.asarray(g), np.asarray(e)
        assert g.shape == e.shape, f"shape {g.shape} != {e.shape}"
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


def tree_inner(a, b) -> float:
    return float(sum(np.sum(np.asarray(x) * np.asarray(y))
                     for x, y in zip(tree_flatten(a)[0], tree_flatten(b)[0], strict=True)))


def random_like(tree, rng):
    leaves, t = tree_flatten(tree)
    return tree_unflatten(t, [rng.standard_normal(np.shape(x)) for x in leaves])


# --------------------------------------------------------------------------- jvp

def f_elementwise(x):
    return np.sin(x) * np.exp(-x ** 2) + np.tanh(x) / (1.0 + x ** 2)


def f_matmul(w, x):
    return np.tanh(x @ w) ** 2


def f_reduce(x):
    return np.sum(np.log(1.0 + x ** 2)) * np.max(x) + np.mean(np.cos(x))


def f_pytree(params, x):
    """A dict argument and a (array, dict) output."""
    h = np.tanh(params["w"] @ x + params["b"])
    return h * x[:2], {"norm": np.sum(h ** 2), "first": h[0] * params["b"][1]}


def f_two_outputs(x, y):
    return x * y, np.sqrt(x ** 2 + y ** 2)


JVP_CASES = {
    "elementwise": (f_elementwise, (X3,)),
    "matmul_two_args": (f_matmul, (X3[:, None] * np.ones((3, 2)), A.T)),
    "reduction": (f_reduce, (X4,)),
    "pytree": (f_pytree, ({"w": M, "b": np.array([0.1, -0.4])}, X3)),
    "two_outputs": (f_two_outputs, (X3, np.array([0.5, -2.0, 1.0]))),
}


@pytest.mark.parametrize("name", sorted(JVP_CASES))
def test_jvp_matches_values_and_central_differences(name):
    f, primals = JVP_CASES[name]
    tangents = random_like(primals, np.random.default_rng(1))
    out, tout = jitgrad.jvp(f, primals, tangents)
    assert_tree_close(out, f(*primals))
    assert_tree_close(tout, fd_jvp(f, primals, tangents), **FD)


@pytest.mark.parametrize("name", sorted(JVP_CASES))
def test_jvp_and_vjp_satisfy_the_inner_product_identity(name):
    f, primals = JVP_CASES[name]
    rng = np.random.default_rng(2)
    tangents = random_like(primals, rng)
    out, tout = jitgrad.jvp(f, primals, tangents)
    cotangent = random_like(out, rng)
    out_v, vjp_fn = jitgrad.vjp(f, *primals)
    assert_tree_close(out_v, out)
    in_cts = vjp_fn(cotangent)
    assert isinstance(in_cts, tuple) and len(in_cts) == len(primals)
    lhs, rhs = tree_inner(tangents, in_cts), tree_inner(tout, cotangent)
    assert abs(lhs - rhs) <= 1e-10 * (1 + abs(rhs)), (lhs, rhs)


def test_jvp_of_a_scalar_function_is_the_derivative_times_the_tangent():
    _, t = jitgrad.jvp(lambda x: x ** 3 * np.cos(x), (0.7,), (2.5,))
    assert np.isclose(t, 2.5 * (3 * 0.7 ** 2 * np.cos(0.7) - 0.7 ** 3 * np.sin(0.7)), rtol=1e-13)


def test_jvp_is_linear_in_the_tangent():
    t1, t2 = RNG.standard_normal(3), RNG.standard_normal(3)
    jv = lambda t: jitgrad.jvp(f_elementwise, (X3,), (t,))[1]
    np.testing.assert_allclose(jv(2.0 * t1 - 3.0 * t2), 2.0 * jv(t1) - 3.0 * jv(t2), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(jv(np.zeros(3)), np.zeros(3))


def test_jvp_tangent_shape_mismatch_is_an_argument_error():
    with pytest.raises(jitgrad.ArgumentError):
        jitgrad.jvp(np.sin, (X3,), (np.ones(4),))
    with pytest.raises(jitgrad.ArgumentError):
        jitgrad.jvp(np.sin, (X3,), ())


# --------------------------------------------------------------------------- linearize

def test_linearize_value_and_derivative_at_the_point():
    out, f_jvp = jitgrad.linearize(f_matmul, *JVP_CASES["matmul_two_args"][1])
    primals = JVP_CASES["matmul_two_args"][1]
    np.testing.assert_allclose(out, f_matmul(*primals), rtol=1e-13)
    rng = np.random.default_rng(3)
    t1, t2 = random_like(primals, rng), random_like(primals, rng)
    d1, d2 = f_jvp(*t1), f_jvp(*t2)
    np.testing.assert_allclose(d1, fd_jvp(f_matmul, primals, t1), **FD)
    combined = f_jvp(*(2.0 * a - b for a, b in zip(t1, t2, strict=True)))
    np.testing.assert_allclose(combined, 2.0 * d1 - d2, rtol=1e-12, atol=1e-12)


def test_linearize_stays_at_its_point():
    """The linearized function keeps its primal: later calls don't move it."""
    _, f_jvp = jitgrad.linearize(np.sin, np.array([0.0, 1.0]))
    jitgrad.linearize(np.sin, np.array([2.0, 3.0]))
    np.testing.assert_allclose(f_jvp(np.ones(2)), np.cos([0.0, 1.0]), rtol=1e-14)


# --------------------------------------------------------------------------- jacfwd / jacrev

def vec_to_vec(x):
    return np.concatenate([np.sin(x) * x[0], (x ** 2)[:2] * x[2]])


def matrix_input(w):
    return np.tanh(w @ X4) + np.sum(w ** 2, axis=1)


def vec_to_pair(x):
    return np.exp(x) * x[1], np.sum(x ** 3)


def two_args(x, w):
    return np.sin(w @ x) * x[:2]


@pytest.mark.parametrize("fun,args", [(vec_to_vec, (X3,)), (matrix_input, (M.T @ M[:, :1] * np.ones((3, 4)),)),
                                      (np.tanh, (A,))],
                         ids=["vector", "matrix_input", "matrix_to_matrix"])
def test_jacfwd_and_jacrev_agree_with_central_differences(fun, args):
    fwd, rev = jitgrad.jacfwd(fun)(*args), jitgrad.jacrev(fun)(*args)
    expected = fd_jacobian(fun, args)
    out_shape, in_shape = np.shape(fun(*args)), np.shape(args[0])
    assert fwd.shape == rev.shape == out_shape + in_shape
    np.testing.assert_allclose(fwd, rev, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fwd, expected, **FD)


def test_jacobian_of_multiple_outputs_is_a_tuple_of_jacobians():
    fwd, rev = jitgrad.jacfwd(vec_to_pair)(X3), jitgrad.jacrev(vec_to_pair)(X3)
    assert isinstance(fwd, tuple) and isinstance(rev, tuple) and len(fwd) == len(rev) == 2
    assert fwd[0].shape == (3, 3) and fwd[1].shape == (3,)
    for k in range(2):
        np.testing.assert_allclose(fwd[k], rev[k], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fwd[k], fd_jacobian(vec_to_pair, (X3,), output=k), **FD)
    # closed form: d(exp(x_i) x_1)/dx_j = delta_ij exp(x_i) x_1 + exp(x_i) delta_j1
    expected = np.diag(np.exp(X3) * X3[1])
    expected[:, 1] += np.exp(X3)
    np.testing.assert_allclose(fwd[0], expected, rtol=1e-13)
    np.testing.assert_allclose(fwd[1], 3 * X3 ** 2, rtol=1e-13)


def test_jacobian_argnums_tuple():
    w = RNG.standard_normal((2, 3))
    args = (X3, w)
    fwd = jitgrad.jacfwd(two_args, argnums=(0, 1))(*args)
    rev = jitgrad.jacrev(two_args, argnums=(0, 1))(*args)
    assert isinstance(fwd, tuple) and len(fwd) == 2
    assert fwd[0].shape == (2, 3) and fwd[1].shape == (2, 2, 3)
    for k in range(2):
        np.testing.assert_allclose(fwd[k], rev[k], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fwd[k], fd_jacobian(two_args, args, argnum=k), **FD)
    only_w = jitgrad.jacrev(two_args, argnums=1)(*args)
    np.testing.assert_allclose(only_w, fwd[1], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- hessian / hvp

def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_hessian(x):
    n = len(x)
    h = np.zeros((n, n))
    for i in range(n - 1):
        h[i, i] = 1200 * x[i] ** 2 - 400 * x[i + 1] + 2 + (200 if i > 0 else 0)
        h[i, i + 1] = h[i + 1, i] = -400 * x[i]
    h[n - 1, n - 1] = 200
    return h


def test_hessian_of_rosenbrock_is_its_closed_form():
    h = jitgrad.hessian(rosenbrock)(X4)
    assert h.shape == (4, 4)
    np.testing.assert_allclose(h, rosenbrock_hessian(X4), rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(h, h.T)


def test_hessian_under_jit_and_of_jit():
    expected = rosenbrock_hessian(X4)
    np.testing.assert_allclose(jitgrad.jit(jitgrad.hessian(rosenbrock))(X4), expected, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(jitgrad.hessian(jitgrad.jit(rosenbrock))(X4), expected, rtol=1e-12, atol=1e-10)


def test_hvp_is_hessian_times_vector():
    v = RNG.standard_normal(4)
    got = jitgrad.hvp(rosenbrock, (X4,), (v,))
    np.testing.assert_allclose(got, rosenbrock_hessian(X4) @ v, rtol=1e-12, atol=1e-10)


def test_hvp_with_two_primals():
    """Forward over reverse w.r.t. both arguments: the tuple of block-row products."""
    def f(x, y):
        return np.sum(x ** 2 * y) + np.sum(np.sin(x)) * y[0]
    x, y, tx, ty = X3, np.array([0.4, 1.1, -0.7]), RNG.standard_normal(3), RNG.standard_normal(3)
    hxx = np.diag(2 * y - np.sin(x) * y[0])
    hxy = np.diag(2 * x)
    hxy[:, 0] += np.cos(x)
    got = jitgrad.hvp(f, (x, y), (tx, ty))
    assert isinstance(got, tuple) and len(got) == 2
    np.testing.assert_allclose(got[0], hxx @ tx + hxy @ ty, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[1], hxy.T @ tx, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- higher order

def sin_x3(x):
    return np.sin(x) * x ** 3


def sin_x3_d3(x):
    return -np.cos(x) * x ** 3 - 9 * np.sin(x) * x ** 2 + 18 * np.cos(x) * x + 6 * np.sin(x)


@pytest.mark.parametrize("x", [1.3, -0.4])
def test_third_derivative_by_grad_of_grad_of_grad(x):
    g3 = jitgrad.grad(jitgrad.grad(jitgrad.grad(sin_x3)))
    np.testing.assert_allclose(g3(x), sin_x3_d3(x), rtol=1e-12)


def test_third_derivative_mixing_modes_and_jit():
    """Every forward/reverse combination to third order, with jit at the inside and outside."""
    x = np.array([1.3, -0.4, 2.0])
    d3 = sin_x3_d3(x)
    elementwise_grad = lambda f: (lambda x: jitgrad.vjp(f, x)[1](np.ones_like(x))[0])
    # the Jacobians of elementwise functions are diagonal: row sums are the diagonals
    diag = lambda jac: (lambda f: (lambda x: np.sum(jac(f)(x), axis=1)))
    fwd_fwd_fwd = jitgrad.jacfwd(diag(jitgrad.jacfwd)(diag(jitgrad.jacfwd)(sin_x3)))
    np.testing.assert_allclose(np.sum(fwd_fwd_fwd(x), axis=1), d3, rtol=1e-12)
    rev_fwd_rev = jitgrad.jacrev(diag(jitgrad.jacfwd)(elementwise_grad(jitgrad.jit(sin_x3))))
    np.testing.assert_allclose(np.sum(rev_fwd_rev(x), axis=1), d3, rtol=1e-12)
    jitted = jitgrad.jit(jitgrad.grad(jitgrad.jit(jitgrad.grad(jitgrad.grad(sin_x3)))))
    np.testing.assert_allclose(jitted(1.3), sin_x3_d3(1.3), rtol=1e-12)


def test_jit_of_jacrev_and_jacfwd_of_grad_give_the_hessian():
    expected = rosenbrock_hessian(X4)
    np.testing.assert_allclose(jitgrad.jit(jitgrad.jacrev(jitgrad.grad(rosenbrock)))(X4), expected,
                               rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(jitgrad.jacfwd(jitgrad.grad(rosenbrock))(X4), expected, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(jitgrad.jacrev(jitgrad.jacfwd(rosenbrock))(X4), expected, rtol=1e-12, atol=1e-10)
    jac = jitgrad.jit(jitgrad.jacrev(vec_to_vec))(X3)
    np.testing.assert_allclose(jac, fd_jacobian(vec_to_vec, (X3,)), **FD)


def test_jvp_inside_jit_and_jit_inside_jvp():
    t = RNG.standard_normal(3)
    expected = jitgrad.jvp(f_elementwise, (X3,), (t,))
    inner_jit = jitgrad.jvp(jitgrad.jit(f_elementwise), (X3,), (t,))
    outer_jit = jitgrad.jit(lambda x, t: jitgrad.jvp(f_elementwise, (x,), (t,)))(X3, t)
    assert_tree_close(inner_jit, expected)
    assert_tree_close(outer_jit, expected)
    np.testing.assert_allclose(expected[1], fd_jvp(f_elementwise, (X3,), (t,)), **FD)


def test_grad_of_a_function_that_calls_jvp():
    """Reverse over forward: d/dx <grad f(x), t> = H t."""
    t = RNG.standard_normal(4)
    g = jitgrad.grad(lambda x: jitgrad.jvp(rosenbrock, (x,), (t,))[1])(X4)
    np.testing.assert_allclose(g, rosenbrock_hessian(X4) @ t, rtol=1e-12, atol=1e-10)


# --------------------------------------------------------------------------- stop_gradient

def test_stop_gradient_on_concrete_arrays_is_the_identity():
    x = np.array([1.0, 2.0])
    assert jitgrad.stop_gradient(x) is x


@pytest.mark.parametrize("transform", [lambda g: g, jitgrad.jit], ids=["plain", "jit"])
def test_stop_gradient_first_order(transform):
    x = np.array([0.5, -1.5, 2.0])
    g = transform(jitgrad.grad(lambda x: np.sum(jitgrad.stop_gradient(x) * x)))
    np.testing.assert_allclose(g(x), x, rtol=1e-15)
    g = transform(jitgrad.grad(lambda x: np.sum(x * jitgrad.stop_gradient(x ** 2))))
    np.testing.assert_allclose(g(x), x ** 2, rtol=1e-15)
    g = transform(jitgrad.grad(lambda x: np.sum(jitgrad.stop_gradient(np.sin(x)) * np.sin(x))))
    np.testing.assert_allclose(g(x), np.sin(x) * np.cos(x), rtol=1e-14)
    # the value is untouched
    np.testing.assert_allclose(transform(lambda x: jitgrad.stop_gradient(x) * x)(x), x * x, rtol=1e-15)


def test_stop_gradient_has_zero_tangent_and_zero_jacobian():
    x = np.array([0.5, -1.5, 2.0])
    out, t = jitgrad.jvp(lambda x: jitgrad.stop_gradient(np.exp(x)), (x,), (np.ones(3),))
    np.testing.assert_allclose(out, np.exp(x), rtol=1e-15)
    np.testing.assert_array_equal(t, np.zeros(3))
    jac = jitgrad.jacfwd(lambda x: x * jitgrad.stop_gradient(x))(x)
    np.testing.assert_allclose(jac, np.diag(x), rtol=1e-15)
    np.testing.assert_allclose(jitgrad.jacrev(lambda x: x * jitgrad.stop_gradient(x))(x), np.diag(x), rtol=1e-15)


def test_stop_gradient_holds_at_every_order():
    """d/dx (x^2 sg(x)) = 2x sg(x), whose derivative is 2 sg(x) = 2x (not 4x, which a
    stop_gradient that leaked in the second pass would give)."""
    f = lambda x: x ** 2 * jitgrad.stop_gradient(x)
    assert np.isclose(jitgrad.grad(f)(1.5), 2 * 1.5 ** 2, rtol=1e-15)
    assert np.isclose(jitgrad.grad(jitgrad.grad(f))(1.5), 3.0, rtol=1e-15)
    assert np.isclose(jitgrad.hessian(f)(1.5), 3.0, rtol=1e-15)
    assert np.isclose(jitgrad.jit(jitgrad.grad(jitgrad.jit(jitgrad.grad(f))))(1.5), 3.0, rtol=1e-15)


def test_jacobians_and_linearize_nest_with_jit_in_both_orders():
    expected = fd_jacobian(vec_to_vec, (X3,))
    for jac in (jitgrad.jacfwd, jitgrad.jacrev):
        np.testing.assert_allclose(jac(jitgrad.jit(vec_to_vec))(X3), expected, **FD)
        np.testing.assert_allclose(jitgrad.jit(jac(vec_to_vec))(X3), expected, **FD)
    t = RNG.standard_normal(3)
    out, f_jvp = jitgrad.linearize(jitgrad.jit(vec_to_vec), X3)
    np.testing.assert_allclose(out, vec_to_vec(X3), rtol=1e-14)
    np.testing.assert_allclose(f_jvp(t), expected @ t, **FD)


def test_large_jacobians_run_one_compiled_derivative_per_direction():
    """Past INLINE_JACOBIAN_LIMIT directions the Jacobian is not one giant program: the
    compile stays small and the result is the same."""
    from jitgrad.api import INLINE_JACOBIAN_LIMIT

    def f(x, w):
        return np.tanh(x @ w) * np.sum(x ** 2)
    x = np.linspace(-1.0, 1.0, 3 * INLINE_JACOBIAN_LIMIT)
    w = np.cos(np.arange(x.size * 5.0)).reshape(x.size, 5)
    forward, reverse = jitgrad.jacfwd(f, argnums=(0, 1)), jitgrad.jacrev(f, argnums=(0, 1))
    jf, jr = forward(x, w), reverse(x, w)
    assert forward.cache_size == 0      # 96 input directions: one compiled JVP, called per direction
    assert reverse.cache_size == 1      # 5 output directions: one program with a VJP copy for each
    assert jf[0].shape == (5, x.size) and jf[1].shape == (5, x.size, 5)
    np.testing.assert_allclose(jf[0], jr[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jf[1], jr[1], rtol=1e-10, atol=1e-12)
    eps = 1e-6
    numeric = np.stack([(f(x + eps * e, w) - f(x - eps * e, w)) / (2 * eps) for e in np.eye(x.size)], axis=-1)
    np.testing.assert_allclose(jf[0], numeric, rtol=1e-6, atol=1e-8)
