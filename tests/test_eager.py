"""The eager layers: GradientTape (reverse mode) and DualTensor / ForwardADContext
(forward mode). Every gradient is checked against jitgrad's functional transformations
(grad, vjp, jvp, jacfwd, jacrev, hessian) and central finite differences; then the
tape's semantics: higher order, persistence, watch, structures, constants, errors and
the compiled-program cache.
"""
from __future__ import annotations

import weakref

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import ArgumentError, GradientError, ShapeError, UnsupportedOperationError
from jitgrad.eager import dual as dual_module
from jitgrad.eager import tape as tape_module
from jitgrad.eager.dual import DualTensor, ForwardADContext
from jitgrad.eager.tape import GradientTape, TrackedTensor

RNG = np.random.default_rng(7)
X3 = RNG.standard_normal(3)
W34 = RNG.standard_normal((3, 4))
B4 = RNG.standard_normal(4)
A23 = RNG.standard_normal((2, 3))
FD = dict(rtol=1e-6, atol=1e-8)


def plain(t):
    """The value of a tracked or dual tensor, read on purpose (a detached copy)."""
    return t.numpy() if isinstance(t, (TrackedTensor, DualTensor)) else np.asarray(t)


def numerical_grad(f, args, argnum, eps=1e-6):
    """Central differences of the scalar f(*args) with respect to args[argnum]."""
    x = np.asarray(args[argnum], dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        hi, lo = list(args), list(args)
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        hi[argnum], lo[argnum] = plus, minus
        g[idx] = (float(f(*hi)) - float(f(*lo))) / (2 * eps)
    return g


def numerical_jvp(f, args, tangents, eps=1e-6):
    plus = [np.asarray(a) + eps * t for a, t in zip(args, tangents, strict=True)]
    minus = [np.asarray(a) - eps * t for a, t in zip(args, tangents, strict=True)]
    return (np.asarray(f(*plus), np.float64) - np.asarray(f(*minus), np.float64)) / (2 * eps)


def tape_grads(f, args):
    """Gradients of f at args with respect to every argument, by a GradientTape."""
    tape = GradientTape()
    with tape:
        xs = tape.watch(list(args))
        out = f(*xs)
    return tape.gradient(out, xs)


# --------------------------------------------------------------------------- functions

def f_elementwise(x):
    return np.sum(np.sin(x) * np.exp(-x ** 2) + np.tanh(x))


def f_layer(x, w, b):
    return np.mean(np.tanh(x @ w + b) ** 2)


def f_softmax_xent(a, w):
    logits = a @ w
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.mean(log_probs[:, 0])


def f_structural(a, x):
    y = np.concatenate([a.T, x[:, None]], axis=1)          # (3, 3)
    z = np.where(y > 0, y, 0.1 * y).reshape(-1)[::2]
    return np.sum(np.maximum(z, -0.5) ** 3) + a.sum(axis=0).dot(x) + np.clip(x, -1, 1).mean()


def f_methods(a, x):
    return (a * 2.0 - 1).std() + np.var(x) + np.linalg.norm(a @ x) + (1 / (1 + np.exp(-x))).max()


FUNCTIONS = [
    (f_elementwise, (X3,)),
    (f_layer, (A23, W34, B4)),
    (f_softmax_xent, (A23, W34)),
    (f_structural, (A23, X3)),
    (f_methods, (A23, X3)),
]
IDS = [f.__name__ for f, _ in FUNCTIONS]


@pytest.mark.parametrize("f, args", FUNCTIONS, ids=IDS)
def test_tape_matches_grad_and_finite_differences(f, args):
    grads = tape_grads(f, args)
    expected = jitgrad.grad(f, argnums=tuple(range(len(args))))(*args)
    assert isinstance(grads, list) and len(grads) == len(args)
    for k, (g, e) in enumerate(zip(grads, expected, strict=True)):
        assert isinstance(g, np.ndarray) and g.shape == args[k].shape and g.dtype == np.float64
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g, numerical_grad(f, args, k), **FD)


@pytest.mark.parametrize("f, args", FUNCTIONS, ids=IDS)
def test_dual_matches_jvp_and_finite_differences(f, args):
    rng = np.random.default_rng(3)
    tangents = [rng.standard_normal(np.shape(a)) for a in args]
    out = f(*[DualTensor(a, t) for a, t in zip(args, tangents, strict=True)])
    value, tangent = jitgrad.jvp(f, args, tangents)
    assert isinstance(out, DualTensor)
    np.testing.assert_allclose(out.value, f(*args), rtol=1e-12)
    np.testing.assert_allclose(out.value, value, rtol=1e-12)
    np.testing.assert_allclose(out.tangent, tangent, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.tangent, numerical_jvp(f, args, tangents), **FD)


@pytest.mark.parametrize("f, args", FUNCTIONS, ids=IDS)
def test_forward_and_reverse_agree(f, args):
    """<tape gradient, t> is the directional derivative computed with dual numbers."""
    rng = np.random.default_rng(4)
    tangents = [rng.standard_normal(np.shape(a)) for a in args]
    grads = tape_grads(f, args)
    out = f(*[DualTensor(a, t) for a, t in zip(args, tangents, strict=True)])
    directional = sum(np.sum(g * t) for g, t in zip(grads, tangents, strict=True))
    np.testing.assert_allclose(out.tangent, directional, rtol=1e-10, atol=1e-12)


def vector_fn(x, w):
    return np.tanh(x @ w) * np.sum(x ** 2)


def test_jacobians_from_tape_and_duals_match_jacfwd_and_jacrev():
    x, w = A23[0], W34
    jac_fwd = jitgrad.jacfwd(vector_fn)(x, w)
    jac_rev = jitgrad.jacrev(vector_fn)(x, w)
    np.testing.assert_allclose(jac_fwd, jac_rev, rtol=1e-12, atol=1e-12)
    # rows by reverse mode: one tape gradient per output element with a basis cotangent
    tape = GradientTape(persistent=True)
    tx = tape.watch(x)
    y = vector_fn(tx, w)
    rows = [tape.gradient(y, tx, output_gradients=np.eye(4)[i]) for i in range(4)]
    np.testing.assert_allclose(np.stack([r.value for r in rows]), jac_rev, rtol=1e-12, atol=1e-12)
    # columns by forward mode: one dual evaluation per input element
    cols = [vector_fn(DualTensor(x, np.eye(3)[j]), w).tangent for j in range(3)]
    np.testing.assert_allclose(np.stack(cols, axis=1), jac_fwd, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- the tape

def test_seed_example_values_at_once_and_gradients():
    tape = GradientTape(persistent=True)
    with tape:
        x = tape.variable(np.array([2.0, 3.0]))
        w = tape.variable(np.array([1.0, 0.5]))
        z = np.sum(x * w)
        assert isinstance(z, TrackedTensor) and float(z.value) == 3.5      # computed eagerly
    dx, dw = tape.gradient(z, [x, w])
    np.testing.assert_array_equal(plain(dx), [1.0, 0.5])
    np.testing.assert_array_equal(plain(dw), [2.0, 3.0])


def test_higher_order_on_a_persistent_tape():
    tape = GradientTape(persistent=True)
    x = tape.variable(2.0)
    y = x ** 3
    g = tape.gradient(y, x)
    assert isinstance(g, TrackedTensor)
    assert float(plain(g)) == 12.0                    # 3 x^2
    g2 = tape.gradient(g, x)
    assert float(plain(g2)) == 12.0                   # 6 x
    g3 = tape.gradient(g2, x)
    assert float(plain(g3)) == 6.0
    assert float(plain(tape.gradient(g3, x))) == 0.0
    # gradients are ordinary tracked tensors: compute with them and differentiate again
    h = tape.gradient(g * np.sin(x), x)        # d/dx 3x^2 sin x
    np.testing.assert_allclose(float(plain(h)), 6 * 2 * np.sin(2) + 3 * 4 * np.cos(2), rtol=1e-12)


def test_hessian_vector_products_match_jitgrad_hessian():
    rng = np.random.default_rng(5)
    x0, v = rng.standard_normal(3), rng.standard_normal(3)
    tape = GradientTape(persistent=True)
    x = tape.watch(x0)
    g = tape.gradient(f_elementwise(x), x)
    hv = tape.gradient(g, x, output_gradients=v)
    np.testing.assert_allclose(hv.value, jitgrad.hessian(f_elementwise)(x0) @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv.value, jitgrad.hvp(f_elementwise, (x0,), (v,)), rtol=1e-10, atol=1e-12)


def test_non_persistent_tape_is_released_after_one_gradient():
    tape = GradientTape()
    with tape:
        x = tape.watch(np.array([1.0, 2.0]))
        y = np.sum(x ** 2)
    g = tape.gradient(y, x)
    assert type(g) is np.ndarray
    np.testing.assert_array_equal(g, [2.0, 4.0])
    with pytest.raises(GradientError, match="already called.*persistent=True"):
        tape.gradient(y, x)
    with pytest.raises(GradientError, match="released"):
        tape.watch(np.ones(2))
    z = x * 3                                    # values still work; nothing is recorded
    assert type(z) is np.ndarray


def test_persistent_tape_allows_many_gradients():
    tape = GradientTape(persistent=True)
    x = tape.watch(np.array([1.0, 2.0]))
    y = np.sum(x ** 2)
    z = np.sum(np.sin(x))
    for _ in range(2):
        np.testing.assert_array_equal(plain(tape.gradient(y, x)), [2.0, 4.0])
        np.testing.assert_allclose(plain(tape.gradient(z, x)), np.cos([1.0, 2.0]))


def test_gradients_come_back_in_the_structure_of_the_sources():
    tape = GradientTape(persistent=True)
    a = tape.watch(np.array([1.0, 2.0]))
    b = tape.watch(np.array(3.0))
    y = np.sum(a * b)
    single = tape.gradient(y, a)
    as_list = tape.gradient(y, [a, b])
    as_tuple = tape.gradient(y, (b, a))
    as_dict = tape.gradient(y, {"a": a, "nested": [b, (a,)]})
    assert isinstance(single, TrackedTensor)
    assert isinstance(as_list, list) and len(as_list) == 2
    assert isinstance(as_tuple, tuple) and float(plain(as_tuple[0])) == 3.0
    assert set(as_dict) == {"a", "nested"} and isinstance(as_dict["nested"][1], tuple)
    np.testing.assert_array_equal(plain(as_dict["a"]), [3.0, 3.0])
    np.testing.assert_array_equal(plain(as_dict["nested"][1][0]), [3.0, 3.0])
    assert float(plain(as_dict["nested"][0])) == 3.0
    assert tape.gradient(y, []) == []


def test_watch_and_variable():
    base = np.array([1.0, 2.0])
    tape = GradientTape(persistent=True)
    watched = tape.watch(base)
    copied = tape.variable(base)
    assert watched.value is base and copied.value is not base
    assert tape.watch(watched) is watched
    params = tape.watch({"w": base, "b": [np.zeros(2), 1.5]})
    assert isinstance(params["w"], TrackedTensor) and isinstance(params["b"], list)
    assert params["b"][1].dtype == np.float64 and params["b"][1].shape == ()
    other = GradientTape()
    rewatched = other.watch(watched)             # a tensor of another tape: a new leaf here
    assert rewatched.tape is other and rewatched.value is base
    many = tape.watch([np.array(float(k)) for k in range(5000)])     # node numbers past the preallocated ones
    assert float(plain(tape.gradient(many[-1] ** 2, many[-1]))) == 2 * 4999.0


def test_untracked_constants_and_stop_recording():
    const = np.array([2.0, -1.0])
    tape = GradientTape(persistent=True)
    x = tape.watch(np.array([0.5, 1.5]))
    detached = x.numpy() * 10                    # a detached copy: a constant to the tape
    with tape.stop_recording():
        untracked = x * 100
    assert type(untracked) is np.ndarray and type(detached) is np.ndarray
    y = np.sum(x * const + detached * x + untracked + 3.0)
    g = tape.gradient(y, x)
    np.testing.assert_allclose(plain(g), const + detached, rtol=1e-15)
    with pytest.raises(GradientError, match="not a tensor tracked"):
        tape.gradient(np.sum(untracked), x)


def test_integer_results_are_constants_and_eager_control_flow():
    tape = GradientTape(persistent=True)
    x = tape.watch(np.array([0.3, -2.0, 1.0]))
    k = np.argmax(x)                             # no jitgrad rule, integer result: a plain value
    mask = x > 0
    assert type(k) is np.int64 and type(mask) is np.ndarray
    if np.sum(x) < 0:                            # a comparison is a plain bool: Python control flow
        y = np.sum(x[k] * x + np.where(mask, x, 0.0) ** 2)
    else:
        y = np.sum(x)
    g = tape.gradient(y, x)
    np.testing.assert_allclose(plain(g), [1.0 + 0.6, 1.0, 1.0 - 0.7 + 2.0], rtol=1e-15)


def test_unconnected_sources():
    tape = GradientTape(persistent=True)
    x, unused = tape.watch([np.ones(2), np.ones(3)])
    y = np.sum(x)
    zeros = tape.gradient(y, [x, unused])[1]
    np.testing.assert_array_equal(plain(zeros), np.zeros(3))
    assert tape.gradient(y, [x, unused], unconnected_gradients="none")[1] is None
    with pytest.raises(ArgumentError, match="unconnected_gradients"):
        tape.gradient(y, x, unconnected_gradients="nan")


def test_intermediate_sources_and_repeated_sources():
    tape = GradientTape(persistent=True)
    x = tape.watch(np.array([1.0, 2.0]))
    h = x * 2.0
    y = np.sum(h ** 2)
    dx, dh, dx_again = tape.gradient(y, [x, h, x])
    np.testing.assert_allclose(plain(dh), 2 * h.value)          # d y / d h, h independent
    np.testing.assert_allclose(plain(dx), 8 * x.value)          # total derivative through h
    np.testing.assert_array_equal(plain(dx_again), plain(dx))


def test_non_scalar_targets_and_output_gradients_match_vjp():
    x0, w0 = A23, W34
    tape = GradientTape(persistent=True)
    x, w = tape.watch([x0, w0])
    y = np.tanh(x @ w)
    ct = np.random.default_rng(2).standard_normal((2, 4))
    _, vjp_fn = jitgrad.vjp(lambda a, b: np.tanh(a @ b), x0, w0)
    expected = vjp_fn(ct)
    got = tape.gradient(y, [x, w], output_gradients=ct)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(plain(g), e, rtol=1e-12, atol=1e-12)
    summed = tape.gradient(y, w)                                      # TensorFlow: ones
    np.testing.assert_allclose(plain(summed), vjp_fn(np.ones((2, 4)))[1], rtol=1e-12)
    both = tape.gradient([np.sum(y), np.sum(x ** 2)], x)             # several targets add up
    np.testing.assert_allclose(plain(both), vjp_fn(np.ones((2, 4)))[0] + 2 * x0, rtol=1e-12)
    with pytest.raises(ArgumentError, match="output gradient of shape"):
        tape.gradient(y, x, output_gradients=np.ones(3))


def test_float32_stays_float32():
    x0 = np.linspace(-1, 1, 5, dtype=np.float32)
    tape = GradientTape()
    x = tape.watch(x0)
    y = np.sum(np.tanh(x) * 2.0)
    assert y.dtype == np.float32
    g = tape.gradient(y, x)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, 2 * (1 - np.tanh(x0) ** 2), rtol=1e-6)


def test_error_target_not_computed_on_the_tape():
    tape, other = GradientTape(persistent=True), GradientTape(persistent=True)
    x = tape.watch(np.ones(2))
    y = other.watch(np.ones(2))
    with pytest.raises(GradientError, match="not a tensor tracked by this tape"):
        tape.gradient(np.ones(()), x)
    with pytest.raises(GradientError, match="another GradientTape"):
        tape.gradient(np.sum(y), x)
    with pytest.raises(GradientError, match="a source .* not a tensor tracked"):
        tape.gradient(np.sum(x), np.ones(2))
    with pytest.raises(GradientError, match="two recording tapes"):
        x + y


def test_error_integer_source_and_unsupported_operations():
    tape = GradientTape(persistent=True)
    i = tape.watch(np.arange(3))
    x = tape.watch(np.ones(3))
    with pytest.raises(GradientError, match="dtype int64"):
        tape.gradient(np.sum(x * i), i)
    with pytest.raises(UnsupportedOperationError, match="spacing has no jitgrad rule"):
        np.spacing(x)
    with pytest.raises(UnsupportedOperationError, match="advanced indexing"):
        x[np.array([0, 2])]
    with pytest.raises(UnsupportedOperationError, match="in place"):
        x[0] = 1.0
    with pytest.raises(UnsupportedOperationError, match="out="):
        np.sin(x, out=np.empty(3))
    with pytest.raises(TypeError):
        x + DualTensor(np.ones(3), np.ones(3))


def test_training_loop_reuses_the_compiled_gradient():
    tape_module.clear_cache()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4))
    for step in range(4):
        batch = rng.standard_normal((5, 3))      # new data every step: an input, not a constant
        tape = GradientTape()
        with tape:
            tw = tape.watch(w)
            loss = f_layer(batch, tw, B4)
        g = tape.gradient(loss, tw)
        np.testing.assert_allclose(g, jitgrad.grad(f_layer, argnums=1)(batch, w, B4), rtol=1e-12)
        w -= 0.1 * g
        if step == 0:
            size = tape_module.cache_size()
    assert tape_module.cache_size() == size == 1
    tape = GradientTape()
    tw = tape.watch(w)
    tape.gradient(f_layer(rng.standard_normal((7, 3)), tw, B4), tw)   # a new batch size: a new signature
    assert tape_module.cache_size() == 2
    tape = GradientTape()
    tw = tape.watch(w)
    tape.gradient(np.sum(tw * 2), tw)          # Python scalars are part of the structure
    tape = GradientTape()
    tw = tape.watch(w)
    tape.gradient(np.sum(tw * 3), tw)
    assert tape_module.cache_size() == 4


def test_records_keep_no_intermediate_values():
    tape = GradientTape(persistent=True)
    with tape:
        x = tape.watch(np.ones(1000))
        h = np.sin(x)
        y = np.sum(h * h)
    ref = weakref.ref(h.value)
    del h
    assert ref() is None                         # freed at once: no reference cycle either
    np.testing.assert_allclose(plain(tape.gradient(y, x)), np.sin(2.0) * np.ones(1000), rtol=1e-12)


def test_tracked_tensor_behaves_like_an_array():
    tape = GradientTape(persistent=True)
    x = tape.watch(np.arange(6.0).reshape(2, 3))
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and x.dtype == np.float64 and len(x) == 2
    rows = list(x)
    assert len(rows) == 2 and isinstance(rows[0], TrackedTensor)
    y = (-x).T @ np.ones(2) + abs(x[0]) - 1 / (x[1] + 1) + x.mean(axis=0) ** 0.5 + x.mT[:, 1]
    assert isinstance(y, TrackedTensor) and y.shape == (3,)
    expected = jitgrad.grad(lambda a: np.sum((-a).T @ np.ones(2) + abs(a[0]) - 1 / (a[1] + 1)
                                             + a.mean(axis=0) ** 0.5 + a.mT[:, 1]))(x.value)
    np.testing.assert_allclose(plain(tape.gradient(np.sum(y), x)), expected, rtol=1e-12)
    assert x[1, 2].value.item() == 5.0 and x.numpy().tolist()[1] == [3.0, 4.0, 5.0] and bool(x[0, 1])
    assert "TrackedTensor" in repr(x) and "records" in repr(tape)


def test_stop_gradient_detaches_a_tracked_tensor():
    tape = GradientTape()
    x = tape.watch(np.array([1.0, 2.0]))
    y = np.sum(x * jitgrad.stop_gradient(x))
    np.testing.assert_array_equal(np.asarray(tape.gradient(y, x)), [1.0, 2.0])


# --------------------------------------------------------------------------- dual numbers

def test_seed_forward_mode_example():
    ctx = ForwardADContext()
    x = DualTensor(2.0, 1.0)
    y = ctx.sin(x)
    z = ctx.mul(y, x)
    assert z.value == pytest.approx(2 * np.sin(2), rel=1e-15)
    assert z.tangent == pytest.approx(np.sin(2) + 2 * np.cos(2), rel=1e-15)


CONTEXT_OPS = [
    ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
    ("relu", lambda x: np.maximum(x, 0.0)),
    ("softmax", lambda x: np.exp(x) / np.sum(np.exp(x))),
    ("log_softmax", lambda x: x - np.log(np.sum(np.exp(x)))),
    ("tanh", np.tanh), ("exp", np.exp), ("square", np.square), ("abs", np.abs), ("sin", np.sin),
    ("cos", np.cos), ("tan", np.tan), ("log", lambda x: np.log(x * x)), ("sqrt", lambda x: np.sqrt(x * x)),
]


@pytest.mark.parametrize("name, reference", CONTEXT_OPS, ids=[n for n, _ in CONTEXT_OPS])
def test_context_methods_match_jvp(name, reference):
    ctx = ForwardADContext()
    x0, t0 = np.array([0.5, -1.2, 2.0]), np.array([1.0, 0.3, -0.7])
    x = ctx.dual(x0, t0)
    out = getattr(ctx, name)(ctx.mul(x, x) if name in ("log", "sqrt") else x)
    value, tangent = jitgrad.jvp(reference, (x0,), (t0,))
    np.testing.assert_allclose(out.value, value, rtol=1e-12)
    np.testing.assert_allclose(out.tangent, tangent, rtol=1e-12, atol=1e-15)


def test_context_binary_and_shape_methods():
    ctx = ForwardADContext()
    a = DualTensor(A23, np.ones((2, 3)))
    w = W34
    out = ctx.sum(ctx.matmul(ctx.reshape(ctx.transpose(ctx.transpose(a)), (2, 3)), w), axis=0)
    value, tangent = jitgrad.jvp(lambda v: np.sum(v @ w, axis=0), (A23,), (np.ones((2, 3)),))
    np.testing.assert_allclose(out.value, value, rtol=1e-12)
    np.testing.assert_allclose(out.tangent, tangent, rtol=1e-12)
    q = ctx.div(ctx.sub(ctx.add(a, 1.0), ctx.neg(a)), ctx.pow(ctx.exp(a), 2))
    np.testing.assert_allclose(q.tangent, jitgrad.jvp(lambda v: (v + 1.0 + v) / np.exp(v) ** 2, (A23,),
                                                      (np.ones((2, 3)),))[1], rtol=1e-12)
    plain = ctx.mul(np.ones(2), 3.0)             # plain arrays: plain NumPy
    assert type(plain) is np.ndarray


def test_dual_apply_traces_a_whole_function_once():
    ctx = ForwardADContext()
    x = DualTensor(X3, np.ones(3))
    before = dual_module.cache_size()
    out = ctx.apply(f_elementwise, x)
    assert dual_module.cache_size() == before + 1
    ctx.apply(f_elementwise, DualTensor(X3 + 1, np.ones(3)))
    assert dual_module.cache_size() == before + 1     # same types: the cached JVP program
    np.testing.assert_allclose(out.tangent, jitgrad.jvp(f_elementwise, (X3,), (np.ones(3),))[1], rtol=1e-12)
    assert ctx.apply(f_elementwise, X3) == f_elementwise(X3)


def test_dual_semantics():
    d = DualTensor(np.array([1.0, -2.0], np.float32), 1.0)         # a scalar tangent is broadcast
    assert d.tangent.dtype == np.float32 and d.tangent.shape == (2,)
    assert DualTensor(3).value.dtype == np.float64                  # Python ints become floats
    assert np.all(DualTensor(np.ones(2)).tangent == 0)
    mask = d > 0
    assert type(mask) is np.ndarray and mask.tolist() == [True, False]
    y = d * 2 + 1
    assert isinstance(y, DualTensor) and y.dtype == np.float32
    np.testing.assert_array_equal(y.tangent, [2.0, 2.0])
    p2, p25 = np.power(np.abs(d), 2), np.power(np.abs(d), 2.5)     # static exponents are distinct keys
    np.testing.assert_allclose(p2.tangent, [2.0, -4.0], rtol=1e-6)
    np.testing.assert_allclose(p25.tangent, 2.5 * np.abs(d.value) ** 1.5 * np.sign(d.value), rtol=1e-6)
    assert np.shape(d) == (2,) and len(d) == 2 and float(plain(d[0])) == 1.0
    with pytest.raises(ShapeError):
        DualTensor(np.ones(3), np.ones(2))
    with pytest.raises(ArgumentError, match="floating-point"):
        DualTensor(np.arange(3))
    with pytest.raises(UnsupportedOperationError):
        np.spacing(d)


# --------------------------------------------------------------------------- custom rules in eager mode

def test_tape_custom_op_uses_the_ops_backward():
    tape = GradientTape()
    x = tape.variable(np.array([1.0, 2.0, -3.0]))
    y = tape.custom_op(jitgrad.ClipGradient(), [x])
    np.testing.assert_array_equal(plain(y), [1.0, 2.0, -3.0])          # identity forward
    np.testing.assert_array_equal(np.asarray(tape.gradient(np.sum(y * 5.0), x)), [1.0, 1.0, 1.0])


def test_custom_rules_are_used_on_tapes_and_dual_numbers():
    @jitgrad.custom_jvp
    def f(x):
        return np.sin(x)
    f.defjvp(lambda p, t: (f(*p), 2.0 * t[0]))          # deliberately not cos: proves the rule is used

    tape = GradientTape()
    x = tape.variable(np.array([0.5, 1.5]))
    np.testing.assert_allclose(np.asarray(tape.gradient(np.sum(f(x)), x)), [2.0, 2.0])
    d = f(DualTensor(np.array([0.5]), np.array([1.0])))
    np.testing.assert_allclose(d.value, np.sin([0.5]))
    np.testing.assert_allclose(d.tangent, [2.0])

    @jitgrad.custom_vjp
    def g(x):
        return x * 1.0
    g.defvjp(lambda x: (x * 1.0, None), lambda _, ct: (3.0 * ct,))
    tape = GradientTape()
    x = tape.variable(np.array([1.0, 2.0]))
    np.testing.assert_allclose(np.asarray(tape.gradient(np.sum(g(x)), x)), [3.0, 3.0])


def test_compiled_functions_are_one_call_on_tapes_and_dual_numbers():
    f = jitgrad.jit(lambda x: np.sin(x) * x)
    x0 = np.array([0.5, 1.0])
    tape = GradientTape()
    x = tape.variable(x0)
    np.testing.assert_allclose(np.asarray(tape.gradient(np.sum(f(x)), x)), np.cos(x0) * x0 + np.sin(x0), rtol=1e-12)
    d = f(DualTensor(np.array([0.5]), np.array([1.0])))
    np.testing.assert_allclose(d.tangent, np.cos(0.5) * 0.5 + np.sin(0.5), rtol=1e-12)
    g = jitgrad.grad(lambda v: np.sum(v ** 3))
    tape = GradientTape()
    x = tape.variable(np.array([2.0]))
    np.testing.assert_allclose(np.asarray(tape.gradient(np.sum(g(x)), x)), [12.0])   # d/dx 3x^2
