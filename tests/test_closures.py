"""Closures, globals, default arguments and attributes are read when the compiled
function is called (docs/semantics-closures.md): an in-place update or a rebinding is
seen, in every transformation, without recompiling when shapes and dtypes stay."""
import warnings

import numpy as np
import pytest

import jitgrad
from jitgrad import grad, hessian, jacfwd, jacrev, jit, jvp, linearize, value_and_grad, vjp

X = np.arange(3.0)
G_W = np.ones(3)                       # a global read by functions below
G_SCALE = 2.0


def test_in_place_update_of_a_closure_array_is_seen():
    W = np.ones(3)
    g = grad(lambda x: np.sum((W * x) ** 2))
    np.testing.assert_allclose(g(X), 2 * W ** 2 * X)
    W *= 2
    np.testing.assert_allclose(g(X), 2 * 4.0 * X)
    assert g.compile_count == 1


def test_rebinding_a_closure_variable_is_seen():
    W = np.ones(3)
    f = jit(lambda x: W * x)
    np.testing.assert_allclose(f(X), X)
    W = np.full(3, 5.0)
    np.testing.assert_allclose(f(X), 5 * X)
    assert f.compile_count == 1          # same shape and dtype: the same code
    W = np.ones(4)                       # a new shape: traced again
    np.testing.assert_allclose(f(np.arange(4.0)), np.arange(4.0))
    assert f.compile_count == 2


def test_globals_are_read_at_call_time():
    global G_W
    f = jit(lambda x: G_W @ x)
    assert f(X) == pytest.approx(3.0)
    G_W *= 3
    assert f(X) == pytest.approx(9.0)
    saved, G_W = G_W, np.array([1.0, 0.0, 0.0])
    try:
        assert f(X) == pytest.approx(0.0)
    finally:
        G_W = saved


def test_python_scalars_are_guarded_by_value():
    global G_SCALE
    f = jit(lambda x: x * G_SCALE)
    np.testing.assert_allclose(f(X), 2 * X)
    G_SCALE = 3.0
    try:
        np.testing.assert_allclose(f(X), 3 * X)
        assert f.compile_count == 2
        np.testing.assert_allclose(f(X), 3 * X)
        assert f.compile_count == 2
    finally:
        G_SCALE = 2.0
    np.testing.assert_allclose(f(X), 2 * X)   # the first signature applies again
    assert f.compile_count == 2


def test_closure_scalar_zero_sign_and_nan_are_told_apart():
    s = 0.0
    f = jit(lambda x: 1.0 / (x * s))
    assert f(np.ones(1))[0] == np.inf
    s = -0.0
    assert f(np.ones(1))[0] == -np.inf
    s = float("nan")
    assert np.isnan(f(np.ones(1))[0])
    f(np.ones(1))
    assert f.compile_count == 3          # nan is one value, not a new one at every call


class Model:
    def __init__(self):
        self.W = np.ones((3, 2))
        self.b = np.zeros(2)

    def forward(self, x):
        return np.tanh(x @ self.W + self.b)

    def loss(self, x):
        return np.sum(self.forward(x) ** 2)


def test_methods_read_attributes_at_call_time():
    m = Model()
    f = jit(m.forward)
    np.testing.assert_allclose(f(X), np.tanh(X @ m.W + m.b))
    m.W[0, 0] = 3.0                       # in place
    np.testing.assert_allclose(f(X), np.tanh(X @ m.W + m.b))
    m.b = np.full(2, 0.5)                 # rebinding an attribute
    np.testing.assert_allclose(f(X), np.tanh(X @ m.W + m.b))
    assert f.compile_count == 1


def test_grad_of_a_method_reading_attributes_through_another_method():
    m = Model()
    g = grad(m.loss)
    expected = lambda: 2 * (np.tanh(X @ m.W) * (1 - np.tanh(X @ m.W) ** 2)) @ m.W.T
    np.testing.assert_allclose(g(X), expected(), rtol=1e-12)
    m.W *= -0.5
    np.testing.assert_allclose(g(X), expected(), rtol=1e-12)


def test_vjp_of_a_method_after_its_weights_change_is_not_stale():
    m = Model()
    out, f_vjp = vjp(m.forward, X)
    np.testing.assert_allclose(out, np.tanh(X @ m.W))
    m.W = m.W * 2
    out2, f_vjp2 = vjp(m.forward, X)
    np.testing.assert_allclose(out2, np.tanh(X @ m.W))
    ct = np.ones(2)
    (dx,) = f_vjp2(ct)
    np.testing.assert_allclose(dx, ((1 - np.tanh(X @ m.W) ** 2) * ct) @ m.W.T, rtol=1e-12)


def test_jvp_linearize_jacobians_and_hessian_see_updates():
    W = np.array([1.0, 2.0, 3.0])
    f = lambda x: np.sin(W * x)
    t = np.ones(3)
    for scale in (1.0, -2.0):
        W *= scale
        out, tangent = jvp(f, (X,), (t,))
        np.testing.assert_allclose(tangent, np.cos(W * X) * W, rtol=1e-12)
        _, f_jvp = linearize(f, X)
        np.testing.assert_allclose(f_jvp(t), np.cos(W * X) * W, rtol=1e-12)
        np.testing.assert_allclose(jacfwd(f)(X), np.diag(np.cos(W * X) * W), rtol=1e-12)
        np.testing.assert_allclose(jacrev(f)(X), np.diag(np.cos(W * X) * W), rtol=1e-12)
    h = hessian(lambda x: np.sum(W * x ** 3))
    np.testing.assert_allclose(h(X), np.diag(6 * W * X), rtol=1e-12)
    W[:] = 1.0
    np.testing.assert_allclose(h(X), np.diag(6 * X), rtol=1e-12)


def test_nested_transformations_read_the_inner_closure():
    W = np.ones(3)
    inner = grad(lambda x: np.sum(W * x ** 2))
    outer = jit(lambda x: inner(x) * 2.0)
    twice = grad(lambda x: np.sum(inner(x)))
    np.testing.assert_allclose(outer(X), 4 * X)
    np.testing.assert_allclose(twice(X), 2 * W)
    W[:] = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(outer(X), 4 * W * X)
    np.testing.assert_allclose(twice(X), 2 * W)
    np.testing.assert_allclose(jit(inner)(X), 2 * W * X)


def test_views_of_outside_arrays_follow_the_array():
    W = np.arange(6.0).reshape(2, 3)
    expected = lambda x: x @ W.T + W[1, :2]
    g = jit(lambda x: x @ W.T + W[1, :2])
    np.testing.assert_allclose(g(np.ones(3)), expected(np.ones(3)))
    W *= -1
    np.testing.assert_allclose(g(np.ones(3)), expected(np.ones(3)))
    W = np.ones((2, 3))
    np.testing.assert_allclose(g(np.ones(3)), expected(np.ones(3)))
    assert g.compile_count == 1


def test_numpy_computation_on_an_outside_array_before_it_meets_a_traced_value():
    W = np.ones(3)
    f = jit(lambda x: x * np.sum(W))     # np.sum(W) runs at trace time: W is guarded
    np.testing.assert_allclose(f(X), 3 * X)
    W[0] = 4.0
    np.testing.assert_allclose(f(X), 6 * X)


def test_default_arguments_and_dtype_conversion():
    W32 = np.ones(3, np.float32)

    def f(x, w=W32):
        return x * w                     # f64 * f32 -> f64: converted inside the program
    c = jit(f)
    out = c(X)
    assert out.dtype == np.float64
    W32 *= 2
    np.testing.assert_allclose(c(X), 2 * X)


def test_a_list_of_layers_that_grows_retraces():
    layers = [np.ones(3)]

    def f(x):
        for w in layers:
            x = x * w
        return x
    c = jit(f)
    np.testing.assert_allclose(c(X), X)
    layers.append(np.full(3, 2.0))
    np.testing.assert_allclose(c(X), 2 * X)
    layers[1] *= 3
    np.testing.assert_allclose(c(X), 6 * X)
    assert c.compile_count == 2


def test_a_rebound_helper_function_retraces():
    act = np.tanh
    f = jit(lambda x: act(x))
    np.testing.assert_allclose(f(X), np.tanh(X))
    act = np.sin
    np.testing.assert_allclose(f(X), np.sin(X))


def test_returning_an_outside_array_returns_its_current_value():
    W = np.ones(2)
    f = jit(lambda x: (x + 1.0, W))
    W *= 7
    out, w = f(np.zeros(2))
    np.testing.assert_allclose(w, 7.0)


def test_arrays_made_inside_the_function_stay_constants():
    f = jit(lambda x: x * np.arange(3.0))
    f(X)
    lowered = f.lower(X)
    assert len(lowered.function.args) == 1 and not lowered.captures


def test_implicit_arguments_are_trailing_ir_arguments():
    W = np.ones(3)
    lowered = jit(lambda x: x * W).lower(X)
    assert len(lowered.function.args) == 2
    assert lowered.captures.labels() == ["closure variable 'W' of test_implicit_arguments_are_trailing_ir_arguments."
                                         "<locals>.<lambda>"]


def test_native_call_path_takes_the_implicit_arguments():
    W = np.ones(8)
    reads = grad(lambda x: np.sum(W * x ** 2))
    for _ in range(3):
        reads(np.ones(8))
    assert reads._fast is not None
    W *= 3
    np.testing.assert_allclose(reads(np.ones(8)), 6.0)
    W = np.full(8, 0.5)
    np.testing.assert_allclose(reads(np.ones(8)), 1.0)
    W = np.arange(16.0)[::2]                 # not contiguous: the Python path takes it
    np.testing.assert_allclose(reads(np.ones(8)), 2 * W)
    W = np.ones(3)                           # a new shape: traced again
    np.testing.assert_allclose(reads(np.ones(3)), 2.0)
    with pytest.raises(jitgrad.ArgumentError):
        reads(np.ones(3), np.ones(3))        # a wrong argument count is never read as an implicit one
    assert reads.compile_count == 2


def test_vjp_of_a_fresh_lambda_over_a_new_batch_each_step_compiles_once():
    w = np.ones(4)
    compiles = []
    for step in range(6):
        batch = np.full(4, float(step))
        fn = lambda w: np.tanh(w * batch)   # a new function object each step
        out, f_vjp = vjp(fn, w)
        np.testing.assert_allclose(out, np.tanh(w * batch))
        (dw,) = f_vjp(np.ones(4))
        np.testing.assert_allclose(dw, (1 - np.tanh(w * batch) ** 2) * batch, rtol=1e-12)
        compiles.append(jitgrad.api._transformed("jit", fn, None).compile_count)
    assert compiles == [1] * 6


def test_state_the_function_writes_is_not_guarded():
    log = []
    counter = {"n": 0}

    def f(x):
        log.append(x.shape)
        counter["n"] += 1
        return x * 2.0
    c = jit(f)
    for _ in range(3):
        c(X)
    assert counter["n"] == 1 and c.compile_count == 1


def test_value_and_grad_of_closure_over_two_arrays_of_different_dtypes():
    A = np.array([1.0, 2.0, 3.0])
    mask = np.array([True, False, True])
    f = value_and_grad(lambda x: np.sum(np.where(mask, A * x, 0.0)))
    v, g = f(X)
    assert v == pytest.approx(np.sum(np.where(mask, A * X, 0)))
    mask[1] = True
    A[1] = 10.0
    v, g = f(X)
    np.testing.assert_allclose(g, np.where(mask, A, 0.0))


def test_recompiles_from_closure_changes_are_named_in_the_warning():
    s = 0.0
    f = jit(lambda x: x + s)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(jitgrad.config.config.recompile_warning_after + 1):
            s = float(k)
            f(X)
    messages = [str(w.message) for w in caught if issubclass(w.category, jitgrad.RecompileWarning)]
    assert len(messages) == 1
    assert "closure variable 's'" in messages[0] and "changed from 7.0 to 8.0" in messages[0]


def test_an_array_reached_by_two_names_is_pinned_to_both():
    class Net:
        def __init__(self):
            self.W1 = np.ones(3)
            self.layers = [self.W1]

        def forward(self, x):
            return x * self.layers[0]
    net = Net()
    f = jit(net.forward)
    np.testing.assert_allclose(f(X), X)
    net.W1 = np.full(3, 5.0)                 # the code reads layers[0], which still holds ones
    np.testing.assert_allclose(f(X), X)
    net.layers[0] = np.full(3, 2.0)
    np.testing.assert_allclose(f(X), 2 * X)
    net.layers[0] *= 2                       # in place: no retrace
    count = f.compile_count
    np.testing.assert_allclose(f(X), 4 * X)
    assert f.compile_count == count


def test_a_view_of_an_array_that_two_outside_arrays_hold():
    W = np.arange(6.0).reshape(2, 3)
    V = W[0]                                 # an outside view of W
    f = jit(lambda x: x * V[::-1])
    np.testing.assert_allclose(f(X), X * W[0, ::-1])
    V = np.array([7.0, 8.0, 9.0])            # rebinding V: the code reads V
    np.testing.assert_allclose(f(X), X * V[::-1])
    W *= 0                                   # W is no longer what V is a view of
    np.testing.assert_allclose(f(X), X * V[::-1])


def test_an_ndarray_subclass_the_code_names_is_guarded_not_retraced_at_every_call():
    M = np.ma.masked_array([1.0, 2.0, 3.0], mask=[0, 1, 0])
    f = jit(lambda x: x * (M.shape[0] * 1.0))       # names M, uses only its shape
    for _ in range(3):
        np.testing.assert_allclose(f(X), 3 * X)
    assert f.compile_count == 1


def test_parameters_in_an_ordered_dict_and_a_namedtuple():
    import collections
    Params = collections.namedtuple("Params", "w b")
    params = collections.OrderedDict(w=np.ones(3))
    p = Params(np.ones(3), np.zeros(3))
    f = jit(lambda x: x * params["w"] + p.b + p[0])
    np.testing.assert_allclose(f(X), X + 1)
    params["w"] *= 2
    p.b[:] = 1.0
    np.testing.assert_allclose(f(X), 2 * X + 2)
    assert f.compile_count == 1


def test_hvp_in_a_loop_compiles_once_and_sees_the_closure():
    W = np.array([1.0, 2.0, 3.0])
    f = lambda x: np.sum(W * x ** 3)
    for scale in (1.0, 2.0, 3.0):
        W[:] = scale
        np.testing.assert_allclose(jitgrad.hvp(f, (X,), (np.ones(3),)), 6 * W * X, rtol=1e-12)
    inner = jitgrad.api._transformed("grad", f, 0)
    assert jitgrad.api._transformed("jvp", inner, 1).compile_count == 1
