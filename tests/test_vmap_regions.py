"""vmap of region ops (cond, switch, while, fori, scan), custom_jvp/custom_vjp calls,
LAPACK, convolutions and window ops, searchsorted and pure_callback: values against a
Python loop over the slices, gradients as grad of vmap and vmap of grad against the
per-slice gradients, for several in_axes patterns."""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad
import jitgrad.nn
from jitgrad.interpreter import evaluate
from jitgrad.ir import OpDef
from jitgrad.ir import current_builder
from jitgrad.ir.clone import clone_region
from jitgrad.passes.batching import batch_function
from jitgrad.passes.manager import rewrite_function
from jitgrad.passes.reverse import vjp_function
from jitgrad.tracing.pytree import tree_flatten, tree_map
from jitgrad.tracing.tracer import trace

rng = np.random.default_rng(7)


def _take(a, axis, b):
    return a if axis is None else np.take(a, b, axis=axis)


def loop(f, args, in_axes):
    """f on every slice, stacked along a new first axis (the reference for vmap)."""
    size = next(np.shape(a)[ax] for a, ax in zip(args, in_axes) if ax is not None)
    outs = [f(*(_take(a, ax, b) for a, ax in zip(args, in_axes))) for b in range(size)]
    return tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *outs)


def total(f):
    """f's float outputs summed into one scalar, weighted so every element counts differently."""
    def scalar(*args):
        leaves = [leaf for leaf in tree_flatten(f(*args))[0] if np.dtype(leaf.dtype).kind == "f"]
        return sum(np.sum(leaf * (1.0 + 0.1 * np.arange(leaf.size).reshape(np.shape(leaf)))) for leaf in leaves)
    return scalar


def assert_tree_close(got, want, rtol=1e-12, atol=1e-12):
    got_leaves, want_leaves = tree_flatten(got)[0], tree_flatten(want)[0]
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves, strict=True):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def check(f, args, in_axes, wrt=0, grads=True):
    """vmap(f) against the loop; vmap(grad) against per-slice grads; grad(sum of vmap)
    against the per-slice grads stacked (argument mapped) or summed (not mapped)."""
    assert_tree_close(jitgrad.vmap(f, in_axes=in_axes)(*args), loop(f, args, in_axes))
    if not grads:
        return
    g = jitgrad.grad(total(f), argnums=wrt)
    per_slice = loop(g, args, in_axes)
    assert_tree_close(jitgrad.vmap(g, in_axes=in_axes)(*args), per_slice, rtol=1e-10, atol=1e-12)
    through = jitgrad.grad(lambda *a: np.sum(jitgrad.vmap(total(f), in_axes=in_axes)(*a)), argnums=wrt)(*args)
    want = per_slice.sum(axis=0) if in_axes[wrt] is None else np.moveaxis(per_slice, 0, in_axes[wrt])
    assert_tree_close(through, want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- cond / switch

def branchy(x, y):
    return jitgrad.cond(np.sum(x) > 0, lambda x, y: np.sqrt(x) * y, lambda x, y: np.sin(x) - y, x, y)


@pytest.mark.parametrize("in_axes", [(0, None), (1, 0), (None, 0)], ids=str)
def test_cond(in_axes):
    x = np.abs(rng.standard_normal((4, 2))) + 0.1
    x[1] = -x[1]                       # a slice whose sum is negative: the other branch
    x = x if in_axes[0] != 1 else x.T.copy()
    y = rng.standard_normal((4, 2)) if in_axes[1] is not None else rng.standard_normal(2)
    if in_axes[0] is None:
        x = x[0]
    check(branchy, (x, y), in_axes, wrt=1)


def test_cond_mapped_predicate_gives_finite_gradients_where_the_untaken_branch_is_singular():
    """sqrt(x) is taken only where x > 0: the loop's gradient is finite everywhere, and so is
    vmap's (a select of both branches run on every slice would give 0 * inf = NaN)."""
    f = lambda x: jitgrad.cond(x > 0, lambda v: np.sqrt(v), lambda v: v * 0.0 + 1.0, x)   # noqa: E731
    xs = np.array([4.0, -1.0, 0.0, 9.0])
    check(f, (xs,), (0,))
    assert np.all(np.isfinite(jitgrad.vmap(jitgrad.grad(f))(xs)))


def test_cond_with_unmapped_predicate_stays_a_cond():
    f = lambda p, x: jitgrad.cond(p > 0, lambda v: v * 2.0, lambda v: v - 1.0, x)   # noqa: E731
    fn = trace(f, (np.float64(1.0), np.zeros(3))).function
    batched, out_dims = batch_function(fn, [None, 0], 4)
    assert out_dims == [0] and [op.name for op in batched.body.ops].count("cond") == 1
    assert "select" not in [op.name for op in batched.body.ops]
    check(f, (np.float64(-1.0), rng.standard_normal((4, 3))), (None, 0))


def test_switch_with_a_mapped_index():
    branches = [lambda x: x * 2.0, lambda x: np.exp(x), lambda x: x ** 2 - 1.0]
    f = lambda i, x: jitgrad.switch(i, branches, x)        # noqa: E731
    check(f, (np.array([0, 2, 1, 5, -1]), rng.standard_normal((5, 3))), (0, 0), wrt=1)
    check(f, (np.array([2, 0, 1]), rng.standard_normal(3)), (0, None), wrt=1)


# --------------------------------------------------------------------------- loops

def doubling(x, limit):
    return jitgrad.while_loop(lambda c: c[0] < limit, lambda c: (c[0] * 2.0 + 0.1 * c[0] ** 2, c[1] + 1), (x, 0))


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0)], ids=str)
def test_while_with_a_mapped_predicate(in_axes):
    """Each slice runs its own number of trips (0 for the slice already past the limit)."""
    x = np.array([0.5, 3.0, 20.0, 1.5]) if in_axes[0] is not None else np.float64(0.7)
    limit = np.array([10.0, 40.0, 5.0, 2.0]) if in_axes[1] is not None else np.float64(10.0)
    check(doubling, (x, limit), in_axes, grads=False)
    check(lambda x, limit: doubling(x, limit)[0], (x, limit), in_axes, wrt=0)


def test_while_with_an_unmapped_predicate_keeps_one_loop():
    f = lambda n, x: jitgrad.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, c[1] * 1.5), (0, x))[1]  # noqa
    check(f, (np.int64(3), rng.standard_normal((4, 2))), (None, 0), wrt=1)


def test_while_loop_whose_body_would_fail_on_finished_slices():
    """Finished slices keep their carry, and the body never sees their values: log of a
    carry that went negative would be NaN in its derivative."""
    def f(x):
        return jitgrad.while_loop(lambda c: c > 1.0, lambda c: np.log(c) - 0.5, x)
    check(f, (np.array([20.0, 3.0, 0.5, 1e4]),), (0,))


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0)], ids=str)
def test_fori_loop(in_axes):
    f = lambda n, x: jitgrad.fori_loop(0, n, lambda i, c: c * np.cos(x) + i * 0.1, x)   # noqa: E731
    n = np.array([0, 2, 5, 3]) if in_axes[0] is not None else np.int64(4)
    x = rng.standard_normal(4) if in_axes[1] is not None else np.float64(0.3)
    check(f, (n, x), in_axes, wrt=1)


def test_fori_loop_with_a_mapped_carry_only_in_the_body():
    """A carry that enters unmapped but mixes with a mapped value in the body becomes mapped
    (the fixpoint), and one that never does stays unmapped."""
    def f(x):
        return jitgrad.fori_loop(0, 3, lambda i, c: (c[0] + x, c[1] * 2.0), (0.0, 1.0))
    fn = trace(f, (np.float64(1.0),)).function
    _, out_dims = batch_function(fn, [0], 4)
    assert out_dims == [0, None]
    check(f, (rng.standard_normal(4),), (0,), grads=False)
    check(lambda x: f(x)[0], (rng.standard_normal(4),), (0,))


@pytest.mark.parametrize("in_axes", [(0, 0), (None, 1), (0, None)], ids=str)
def test_scan(in_axes):
    def f(c0, xs):
        return jitgrad.scan(lambda c, x: (c * np.tanh(x) + 1.0, c * x), c0, xs)
    c0 = rng.standard_normal(3) if in_axes[0] is not None else np.float64(0.4)
    xs = rng.standard_normal((3, 5) if in_axes[1] == 0 else (5, 3)) if in_axes[1] is not None else \
        rng.standard_normal(5)
    check(f, (c0, xs), in_axes, wrt=0)
    check(f, (c0, xs), in_axes, wrt=1)


def test_vmap_of_vmap_of_a_loop():
    f = lambda x: jitgrad.while_loop(lambda c: c < 5.0, lambda c: c * 1.7 + 0.1, x)   # noqa: E731
    xs = np.abs(rng.standard_normal((3, 4)))
    np.testing.assert_allclose(jitgrad.vmap(jitgrad.vmap(f))(xs), loop(lambda r: loop(f, (r,), (0,)), (xs,), (0,)),
                               rtol=1e-13)


def test_nested_regions():
    """A cond with a mapped predicate inside a scan, a while inside a cond."""
    def f(c0, xs):
        step = lambda c, x: (jitgrad.cond(x > 0, lambda c: c * x, lambda c: c - x, c), c)   # noqa: E731
        return jitgrad.scan(step, c0, xs)

    def g(x):
        grow = lambda v: jitgrad.while_loop(lambda c: c < 3.0, lambda c: c * 1.5 + 0.2, v)   # noqa: E731
        return jitgrad.cond(x > 1.0, lambda v: v * 2.0, grow, x)
    check(f, (rng.standard_normal(3), rng.standard_normal((3, 4))), (0, 0))
    check(g, (np.array([0.5, 2.0, 1.2, 0.1]),), (0,), grads=False)   # values: reverse mode rejects a while in a cond


def test_nesting_with_jit_and_second_order():
    f = lambda x: jitgrad.fori_loop(0, 3, lambda i, c: np.sin(c) * x, x)   # noqa: E731
    xs = np.array([0.3, 0.7, -1.1])
    np.testing.assert_allclose(jitgrad.jit(jitgrad.vmap(f))(xs), loop(f, (xs,), (0,)), rtol=1e-14)
    np.testing.assert_allclose(jitgrad.vmap(jitgrad.jit(f))(xs), loop(f, (xs,), (0,)), rtol=1e-14)
    h = jitgrad.hessian(f)
    np.testing.assert_allclose(jitgrad.vmap(h)(xs), loop(h, (xs,), (0,)), rtol=1e-12)


def _revolving(fn):
    """`fn` with every top-level loop set to the revolve reversal (2 snapshots)."""
    def rewrite(op, operands):
        if op.name not in ("while", "fori", "scan"):
            return None
        new = current_builder().create(op.opdef, list(operands), dict(op.attrs, reversal="revolve", snapshots=2),
                                       regions=[clone_region(r, {}) for r in op.regions],
                                       result_types=[r.type for r in op.results])
        return list(new.results)
    return rewrite_function(fn, rewrite)


def _scan_loss(c0, xs):
    return np.sum(jitgrad.scan(lambda c, x: (np.sin(c) * x + c, c * x), c0, xs)[1])


def _fori_loss(x, n):
    return np.sum(jitgrad.fori_loop(0, n, lambda i, v: np.sin(v) * x + 0.1 * i, x))


@pytest.mark.parametrize("case,dims", [("scan", [0, None]), ("scan", [None, 1]), ("scan", [0, 0]),
                                       ("fori", [0, None]), ("fori", [None, 0]), ("fori", [0, 0])], ids=str)
def test_reverse_fori_of_revolve_gradients(case, dims):
    """The gradient of a loop set to revolve holds a reverse_fori (a reversed scan reads
    xs and writes ys): its batched form against the interpreter slice by slice."""
    if case == "scan":
        fn, args = _scan_loss, [rng.standard_normal(2), rng.standard_normal((4, 2))]
    else:
        fn, args = _fori_loss, [rng.standard_normal(2), np.int64(3)]
    grad_fn = vjp_function(_revolving(trace(fn, tuple(args)).function), [0], ["one"])
    assert any(op.name == "reverse_fori" for op in grad_fn.walk())
    slices = [[a if d is None else (a + 0.3 * b if a.dtype.kind == "f" else a + b) for a, d in zip(args, dims)]
              for b in range(3)]
    stacked = [a if d is None else np.stack([s[k] for s in slices], axis=d) for k, (a, d) in enumerate(zip(args, dims))]
    batched, out_dims = batch_function(grad_fn, dims, 3)
    got = evaluate(batched, stacked)
    for b in range(3):
        want = evaluate(grad_fn, slices[b])
        for g, w, d in zip(got, want, out_dims, strict=True):
            np.testing.assert_allclose(g if d is None else np.take(g, b, axis=d), w, rtol=1e-13, atol=1e-15)


# --------------------------------------------------------------------------- custom rules

@jitgrad.custom_jvp
def clipped_sin(x):
    return np.sin(x)


@clipped_sin.defjvp
def _clipped_sin_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return np.sin(x), np.clip(np.cos(x), -0.5, 0.5) * t


@jitgrad.custom_vjp
def scaled(x, w):
    return x * w


def _scaled_fwd(x, w):
    return x * w, (x, w)


def _scaled_bwd(res, ct):
    x, w = res
    return (3.0 * ct * w, ct * x)       # the x-gradient deliberately differs from the true one


scaled.defvjp(_scaled_fwd, _scaled_bwd)


@pytest.mark.parametrize("in_axes", [(0,), (1,)], ids=str)
def test_custom_jvp_rule_is_used_under_vmap(in_axes):
    x = rng.standard_normal((4, 3)) * 2
    check(lambda x: clipped_sin(x) * 2.0, (x,), in_axes)
    g = jitgrad.vmap(jitgrad.grad(lambda v: np.sum(clipped_sin(v))), in_axes=in_axes)(x)
    np.testing.assert_allclose(np.moveaxis(g, 0, in_axes[0]), np.clip(np.cos(x), -0.5, 0.5), rtol=1e-13)
    jv = jitgrad.jvp(jitgrad.vmap(clipped_sin, in_axes=in_axes), (x,), (np.ones_like(x),))[1]
    np.testing.assert_allclose(np.moveaxis(jv, 0, in_axes[0]), np.clip(np.cos(x), -0.5, 0.5), rtol=1e-13)


@pytest.mark.parametrize("in_axes", [(0, None), (0, 0), (None, 0)], ids=str)
def test_custom_vjp_rules_are_used_under_vmap(in_axes):
    x = rng.standard_normal((4, 3)) if in_axes[0] is not None else rng.standard_normal(3)
    w = rng.standard_normal((4, 3)) if in_axes[1] is not None else rng.standard_normal(3)
    check(scaled, (x, w), in_axes, wrt=0)
    check(scaled, (x, w), in_axes, wrt=1)
    gx = jitgrad.grad(lambda x, w: np.sum(jitgrad.vmap(scaled, in_axes=in_axes)(x, w)))(x, w)
    want = 3.0 * (w if in_axes[1] is not None or in_axes[0] is None else np.broadcast_to(w, x.shape))
    if in_axes[0] is None:
        want = (3.0 * w).sum(axis=0)
    np.testing.assert_allclose(gx, want, rtol=1e-13)


# --------------------------------------------------------------------------- LAPACK, convolution, windows

def spd(n, batch=()):
    a = rng.standard_normal((*batch, n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 2), (2, 1)], ids=str)
def test_solve(in_axes):
    a = spd(3, (4,)) if in_axes[0] == 0 else spd(3)
    if in_axes[0] == 2:
        a = np.moveaxis(spd(3, (4,)), 0, 2)
    b = rng.standard_normal((3, 2))
    if in_axes[1] is not None:
        b = np.moveaxis(rng.standard_normal((4, 3, 2)), 0, in_axes[1])
    check(np.linalg.solve, (a, b), in_axes, wrt=0)
    check(np.linalg.solve, (a, b), in_axes, wrt=1)


@pytest.mark.parametrize("fn", [np.linalg.cholesky, np.linalg.inv, lambda a: np.linalg.slogdet(a)[1],
                                lambda a: np.linalg.eigh(a)[0], lambda a: np.linalg.svd(a, compute_uv=False),
                                np.linalg.pinv, lambda a: np.linalg.qr(a)[1]],
                         ids=["cholesky", "inv", "slogdet", "eigvalsh", "svdvals", "pinv", "qr"])
def test_lapack_under_vmap(fn):
    a = spd(3, (4,))
    check(fn, (a,), (0,))
    check(fn, (np.moveaxis(a, 0, 2),), (2,), grads=False)


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0), (1, 4)], ids=str)
@pytest.mark.parametrize("groups", [1, 2])
def test_conv(in_axes, groups):
    """A mapped input folds into the batch axis, a mapped kernel into feature groups."""
    f = lambda x, w: jitgrad.nn.conv(x, w, stride=(1, 2), padding=1, groups=groups)   # noqa: E731
    x, w = rng.standard_normal((2, 4, 5, 4)), rng.standard_normal((4, 4 // groups, 3, 2))
    x, w = [a if ax is None else np.stack([a + 0.1 * b for b in range(3)], axis=ax) for a, ax in zip((x, w), in_axes)]
    check(f, (x, w), in_axes, wrt=0)
    check(f, (x, w), in_axes, wrt=1)


def test_pooling():
    x = rng.standard_normal((3, 2, 2, 5, 4))
    check(lambda x: jitgrad.nn.max_pool2d(x, 2, stride=1), (x,), (0,))
    check(lambda x: jitgrad.nn.avg_pool2d(x, 2, padding=1), (x,), (3,))


def test_conv_and_window_ops_have_rules():
    for name in ("conv_general_dilated", "reduce_window_sum", "reduce_window_max", "select_and_gather_add",
                 "select_and_scatter_add", "searchsorted", "cholesky", "solve", "qr", "svd", "eigh", "pinv"):
        assert OpDef.registry[name].batch is not None, name


# --------------------------------------------------------------------------- searchsorted, pure_callback

@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 1), (1, 0)], ids=str)
def test_searchsorted(in_axes):
    a = np.sort(rng.integers(0, 6, (4, 7)).astype(np.float64), axis=1)
    v = rng.integers(-1, 8, (4, 5)).astype(np.float64)
    a = a if in_axes[0] == 0 else a[0] if in_axes[0] is None else a.T.copy()
    v = v if in_axes[1] == 0 else v[0] if in_axes[1] is None else v.T.copy()
    for side in ("left", "right"):
        f = lambda a, v, side=side: np.searchsorted(a, v, side=side)   # noqa: E731
        got = jitgrad.vmap(f, in_axes=in_axes)(a, v)
        np.testing.assert_array_equal(got, loop(f, (a, v), in_axes))


def test_pure_callback_is_called_once_per_slice():
    calls = []

    def host(x):
        calls.append(x.shape)
        return np.cumsum(x) * 2.0

    f = lambda x: jitgrad.pure_callback(host, np.empty(3), np.sin(x)) + 1.0   # noqa: E731
    x = rng.standard_normal((3, 4))
    got = jitgrad.vmap(f, in_axes=1)(x)
    np.testing.assert_allclose(got, loop(f, (x,), (1,)), rtol=1e-14)
    assert calls and all(shape == (3,) for shape in calls)


@pytest.mark.parametrize("method", ["expand_dims", "broadcast_all"])
def test_pure_callback_vmap_methods_call_once_with_the_slices_first(method):
    shapes = []

    def host(x, w):
        shapes.append((x.shape, w.shape))
        return np.tanh(x) * w

    f = lambda x, w: jitgrad.pure_callback(host, np.empty(3), x, w, vmap_method=method)   # noqa: E731
    x, w = rng.standard_normal((4, 3)), rng.standard_normal(3)
    got = jitgrad.vmap(f, in_axes=(0, None))(x, w)
    assert shapes == [((4, 3), (1, 3) if method == "expand_dims" else (4, 3))]
    np.testing.assert_allclose(got, loop(f, (x, w), (0, None)), rtol=1e-14)


def test_pure_callback_rejects_an_unknown_vmap_method():
    with pytest.raises(jitgrad.ArgumentError, match="vmap_method"):
        jitgrad.jit(lambda x: jitgrad.pure_callback(np.sin, x, x, vmap_method="vectorized"))(np.ones(2))
