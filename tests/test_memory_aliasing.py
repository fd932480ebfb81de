"""The memory planner's in-place rule: a kernel may write its result over an operand
buffer only when every read of that buffer in the kernel — by any fused member, through
any inlined broadcast, transpose, slice or reverse, or through a reshape of it — is at the
index being written.

Each program below reads a value and a view of that value in one kernel. Its results
must equal NumPy's bit for bit (the ops are IEEE +, -, *, /, which NumPy computes the
same way), fused and unfused, and the planner must not have placed the result over the
viewed buffer. Identity-only reads must still update in place (chains keep one slot).
"""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad
from jitgrad.config import config
from jitgrad.passes.memory import plan_buffers
from jitgrad.passes.schedule import schedule


def _plan(fn, *args):
    lowered = jitgrad.jit(fn).lower(*args)
    ir_fn = lowered.function
    sched = schedule(ir_fn, config.fusion)
    return ir_fn, sched, plan_buffers(ir_fn, sched)


@pytest.fixture(params=[True, False], ids=["fused", "unfused"])
def fusion(request):
    saved = config.fusion
    config.fusion = request.param
    yield request.param
    config.fusion = saved


def _twice(x):
    """A computed value read twice (so it is materialized in its own buffer)."""
    return x * 2.0 + 1.0


VIEW_PROGRAMS = {
    "transpose": ((3, 3), lambda a: (lambda m: m + m.T)(_twice(a))),
    "transpose 3-d": ((3, 3, 3), lambda a: (lambda m: m - np.transpose(m, (2, 0, 1)))(_twice(a))),
    "swapaxes": ((4, 2, 4), lambda a: (lambda m: m * np.swapaxes(m, 0, 2))(_twice(a))),
    "reverse rows": ((4, 3), lambda a: (lambda m: m - m[::-1])(_twice(a))),
    "reverse columns": ((4, 3), lambda a: (lambda m: m * m[:, ::-1])(_twice(a))),
    "flip all": ((3, 5), lambda a: (lambda m: m + np.flip(m))(_twice(a))),
    "slice broadcast column": ((3, 3), lambda a: (lambda m: m / m[:, :1])(_twice(a))),
    "slice broadcast row": ((4, 3), lambda a: (lambda m: m - m[2:3])(_twice(a))),
    "stepped slice broadcast": ((6, 6), lambda a: (lambda m: m + m[1::2, ::-3][1:2, 1:2])(_twice(a))),
    "integer index broadcast": ((4, 5), lambda a: (lambda m: m * m[3])(_twice(a))),
    "broadcast to": ((5, 5), lambda a: (lambda m: m + np.broadcast_to(m[:, 0:1], (5, 5)))(_twice(a))),
    "reshape of a transpose": ((2, 6), lambda a: (lambda m: m + m.T.reshape(2, 6))(_twice(a))),
    "transpose of a reshape": ((2, 6), lambda a: (lambda m: m + m.reshape(6, 2).T)(_twice(a))),
    "reverse of a reshape": ((3, 4), lambda a: (lambda m: m - m.reshape(-1)[::-1].reshape(3, 4))(_twice(a))),
    "view in a later member": ((3, 3), lambda a: (lambda m: (m * 3.0 + m.T) / (m + 1.0))(_twice(a))),
    "view of an exp": ((3, 3), lambda a: (lambda e: e / e[:, :1])(a * 0.5 + 1.0)),
    "pad shifted": ((4, 5), lambda a: (lambda m: m + np.pad(m[1:, :-1], ((0, 1), (1, 0))))(_twice(a))),
    "pads of a value and its negation": ((4, 4), lambda a: (lambda m: m * 2.0 + np.pad(m[:-1], ((1, 0), (0, 0)))
                                                               - np.pad(-m[1:], ((0, 1), (0, 0))))(_twice(a))),
    "slices read twice": ((5, 5), lambda a: (lambda m: (m[1:, 1:] - m[:-1, :-1]) * (m[1:, :-1] - m[:-1, :-1]))(
        _twice(a))),
    "pad then slice": ((4, 4), lambda a: (lambda m: m - np.pad(m, 1)[2:, :-2])(_twice(a))),
    "concatenate rolled rows": ((5, 4), lambda a: (lambda m: m + np.concatenate([m[2:], m[:2]]))(_twice(a))),
    "concatenate rolled columns": ((4, 6), lambda a: (lambda m: m * np.concatenate([m[:, 1:], m[:, :1]], axis=1))(
        _twice(a))),
    "concatenate of reversals": ((4, 5), lambda a: (lambda m: m - np.concatenate([m[::-1, :2], m[:, :1:-1]], axis=1))(
        _twice(a))),
    "concatenate with an empty piece": ((3, 4), lambda a: (lambda m: m + np.concatenate([m[:0], m[::-1]]))(_twice(a))),
    "reverse of a padding": ((4, 5), lambda a: (lambda m: m * 3.0 - np.pad(m[:, 1:], ((0, 0), (0, 1)))[:, ::-1])(
        _twice(a))),
}


@pytest.mark.parametrize("name", list(VIEW_PROGRAMS))
def test_value_combined_with_its_view_matches_numpy(name, fusion):
    shape, fn = VIEW_PROGRAMS[name]
    a = np.arange(float(np.prod(shape))).reshape(shape) - 2.5
    expected = fn(a)
    compiled = jitgrad.jit(fn)
    np.testing.assert_array_equal(compiled(a), expected)
    np.testing.assert_array_equal(compiled(a), expected)         # the native call path


def test_output_never_takes_over_a_buffer_read_through_a_view():
    config_fusion = config.fusion
    config.fusion = True
    try:
        a = np.arange(9.0).reshape(3, 3)
        ir_fn, sched, plan = _plan(lambda a: (lambda m: m + m.T)(a * 2), a)
    finally:
        config.fusion = config_fusion
    assert len(sched.kernels) == 2          # m, then m + m.T with the transpose inlined
    assert plan.in_output == {}
    assert plan.workspace_bytes >= 9 * 8    # m keeps a buffer of its own


@pytest.mark.parametrize("view", [lambda m: m[::-1, ::-1], lambda m: np.concatenate([m[:, 2:], m[:, :2]], axis=1)],
                         ids=["reversed", "concatenated"])
def test_output_never_takes_over_a_buffer_read_reversed_or_concatenated(view):
    """The kernel that reads m through a reversal or a concatenation (a fused loop over
    m's shape) must not write its result over m's buffer."""
    config_fusion = config.fusion
    config.fusion = True
    try:
        a = np.arange(20.0).reshape(4, 5)
        ir_fn, sched, plan = _plan(lambda a: (lambda m: m * 0.5 + view(m))(a * 2), a)
    finally:
        config.fusion = config_fusion
    assert len(sched.kernels) == 2 and sched.kernels[1].shape == (4, 5)
    assert plan.in_output == {}
    assert plan.workspace_bytes >= 20 * 8


def test_issue_reproducers():
    a = np.arange(9.0).reshape(3, 3)
    out = jitgrad.jit(lambda a: (lambda m: m + m.T)(a * 2))(a)
    np.testing.assert_array_equal(out[1], [8.0, 16.0, 24.0])
    got = jitgrad.jit(lambda a: (lambda e: e / e[:, :1])(np.exp(a)))(a)
    np.testing.assert_allclose(got, np.exp(a) / np.exp(a)[:, :1], rtol=1e-13)


def _chain(a):
    u = np.exp(a * 0.25)
    s = u.sum()
    v = u * s                 # u read at its own index only, and dead afterwards
    w = v - 1.5
    return w * w.sum()


def test_identity_reads_update_in_place(fusion):
    a = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    np.testing.assert_allclose(jitgrad.jit(_chain)(a), _chain(a), rtol=1e-13)
    _, _, plan = _plan(_chain, a)
    in_place = len(plan.in_output) + sum(1 for v, off in plan.offsets.items()
                                         for u, other in plan.offsets.items()
                                         if u is not v and off == other and v.type.shape == (3, 4))
    assert in_place > 0, "a value read only at the written index should be updated in place"


def test_in_place_chain_then_view(fusion):
    """An in-place chain whose final value is read through a transpose next to itself."""
    def f(a):
        u = np.exp(a * 0.1)
        s = u.sum()
        v = u * s
        w = v + 2.0
        return w + w.T * 0.5
    a = np.arange(16.0).reshape(4, 4)
    np.testing.assert_allclose(jitgrad.jit(f)(a), f(a), rtol=1e-13)


def test_large_fused_kernel_with_views(fusion):
    """Sizes above the parallel threshold: the fused loop runs in blocks on every core."""
    def f(a):
        m = _twice(a)
        r = np.sin(m) * m
        return r + r[::-1, ::-1], (m * 3.0).sum()
    a = np.linspace(-3.0, 3.0, 1100 * 1000).reshape(1100, 1000)
    out, total = jitgrad.jit(f)(a)
    ref_out, ref_total = f(a)
    np.testing.assert_allclose(out, ref_out, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(total, ref_total, rtol=1e-12)


def test_gradient_of_value_with_its_transpose(fusion):
    """The backward pass of m * m.T accumulates a transposed cotangent into itself."""
    def loss(a):
        m = np.tanh(a)
        return np.sum(m * m.T + m[::-1] * 2.0)
    a = np.arange(9.0).reshape(3, 3) / 9.0
    m = np.tanh(a)
    g = (m.T + m.T + 2.0 * np.ones_like(m)[::-1]) * (1 - m ** 2)
    np.testing.assert_allclose(jitgrad.grad(loss)(a), g, rtol=1e-13)


def test_pads_and_slices_are_index_maps_in_fused_loops(fusion):
    """A stencil gradient: zero paddings and slices of buffers are computed inside their
    consumers' loops (no scatter or gather kernels), and values equal NumPy's bits."""
    def tv(u):
        dx = u[1:, :-1] - u[:-1, :-1]
        dy = u[:-1, 1:] - u[:-1, :-1]
        return np.sum(np.sqrt(dx * dx + dy * dy + 1e-6))

    u = np.random.default_rng(5).standard_normal((9, 7))
    value, grad = jitgrad.jit(jitgrad.value_and_grad(tv))(u)
    dx, dy = u[1:, :-1] - u[:-1, :-1], u[:-1, 1:] - u[:-1, :-1]
    s = np.sqrt(dx * dx + dy * dy + 1e-6)
    expected = np.zeros_like(u)
    expected[1:, :-1] += dx / s
    expected[:-1, 1:] += dy / s
    expected[:-1, :-1] -= dx / s + dy / s
    np.testing.assert_allclose(value, s.sum(), rtol=1e-13)
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-13)
    if fusion:
        plan = jitgrad.jit(jitgrad.value_and_grad(tv)).lower(u).as_text("kernels")
        assert "(scatter)" not in plan and "(gather)" not in plan
