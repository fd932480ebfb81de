"""vmap: the batching pass against a loop over slices, for every primitive with a batch
rule (the OpSpec table of test_primitive_rules, so new primitives are covered the day
they land), and jitgrad.vmap's in_axes/out_axes semantics, nesting and errors."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import ArgumentError, MissingRuleError
from jitgrad.interpreter import evaluate
from jitgrad.ir import DType, OpDef, TensorType, emit, new_function
from jitgrad.passes.batching import batch_function

from test_primitive_rules import SPECS

SLICES = 3


def _has_rule(spec) -> bool:
    """A batch rule, or no operands to map (a constant is the same in every slice)."""
    return OpDef.registry[spec.prim].batch is not None or spec.prim == "constant"


def _dim_patterns(spec):
    """Where each operand's mapped axis is: all first, all last, and the first operand
    unmapped (the rest first) when there are several operands."""
    n = len(spec.in_types)
    patterns = [("front", [0] * n), ("last", [t.ndim for t in spec.in_types])]
    if n > 1:
        patterns.append(("first-unmapped", [None] + [0] * (n - 1)))
        patterns.append(("last-unmapped", [0] * (n - 1) + [None]))
    return patterns


CASES = [(spec, label, dims) for spec in SPECS if _has_rule(spec) for label, dims in _dim_patterns(spec)]


@pytest.mark.parametrize("spec,label,dims", CASES, ids=[f"{s.id}-{label}" for s, label, _ in CASES])
def test_batch_rule_matches_loop_over_slices(spec, label, dims):
    fn = spec.function()
    per_slice = [spec.args(seed=b) for b in range(SLICES)]
    shared = spec.args(seed=99)
    stacked = [shared[k] if d is None else np.stack([args[k] for args in per_slice], axis=d)
               for k, d in enumerate(dims)]
    batched, out_dims = batch_function(fn, dims, SLICES)
    got = evaluate(batched, stacked)
    for b in range(SLICES):
        args = [shared[k] if d is None else per_slice[b][k] for k, d in enumerate(dims)]
        want = evaluate(fn, args)
        for g, w, d in zip(got, want, out_dims, strict=True):
            g_b = g if d is None else np.take(g, b, axis=d)
            assert g_b.dtype == w.dtype
            np.testing.assert_allclose(g_b, w, rtol=1e-13, atol=0, err_msg=f"slice {b}")


def test_every_primitive_has_a_batch_rule():
    """So the table above checks every primitive against a loop over slices."""
    assert [spec.id for spec in SPECS if not _has_rule(spec)] == []


def test_an_unmapped_op_is_copied_unchanged():
    """Ops that read no mapped value stay as they are (no rule needed, no broadcast)."""
    spec = next(s for s in SPECS if s.prim == "cholesky")
    fn = spec.function()
    batched, out_dims = batch_function(fn, [None], SLICES)
    assert out_dims == [None] and [op.name for op in batched.walk()] == [op.name for op in fn.walk()]


def test_every_elementwise_and_structural_op_has_a_rule():
    wanted = ["add", "mul", "tanh", "select", "convert", "reshape", "transpose", "broadcast_in_dim", "slice", "pad",
              "rev", "concatenate", "reduce_sum", "reduce_max", "dot_general", "gather", "scatter", "scatter_add",
              "sort", "argsort", "cumsum", "random_uniform", "integer_pow", "hypot", "bit_and", "floor_divide"]
    assert [n for n in wanted if OpDef.registry[n].batch is None] == []


# --------------------------------------------------------------------------- the public function

rng = np.random.default_rng(0)


def loop(f, *args, in_axes):
    """np.stack of f on each slice: the reference vmap must match."""
    size = next(np.shape(a)[ax] for a, ax in zip(args, in_axes) if ax is not None)
    outs = [f(*[a if ax is None else np.take(a, b, axis=ax) for a, ax in zip(args, in_axes)]) for b in range(size)]
    return np.stack(outs)


def test_vmap_default_axes_compiled():
    f = lambda x, y: np.tanh(x) * y + np.sum(x ** 2)     # noqa: E731
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    np.testing.assert_allclose(jitgrad.vmap(f)(x, y), loop(f, x, y, in_axes=(0, 0)), rtol=1e-13)


def test_vmap_in_axes_none_and_nonzero():
    w = rng.standard_normal((3, 2))
    f = lambda x, w: np.maximum(x @ w, 0.0)             # noqa: E731
    x = rng.standard_normal((3, 5))                      # slices along axis 1
    got = jitgrad.vmap(f, in_axes=(1, None))(x, w)
    np.testing.assert_allclose(got, loop(f, x, w, in_axes=(1, None)), rtol=1e-13)
    got_neg = jitgrad.vmap(f, in_axes=[-1, None])(x, w)
    np.testing.assert_allclose(got_neg, got, rtol=0)


def test_vmap_out_axes():
    f = lambda x: np.cumsum(x) * 2.0                     # noqa: E731
    x = rng.standard_normal((4, 6))
    got = jitgrad.vmap(f, out_axes=1)(x)
    np.testing.assert_allclose(got, loop(f, x, in_axes=(0,)).T, rtol=1e-13)
    unmapped = jitgrad.vmap(lambda x, c: (x * c, c + 1.0), in_axes=(0, None), out_axes=(0, None))
    a, c = unmapped(x, np.float64(3.0))
    np.testing.assert_allclose(a, x * 3.0)
    assert np.shape(c) == () and float(c) == 4.0


def test_vmap_pytrees_in_and_out():
    def f(params, batch):
        return {"y": np.tanh(batch["x"] @ params["w"] + params["b"]), "n": np.sum(batch["x"])}
    params = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    batch = {"x": rng.standard_normal((5, 3))}
    got = jitgrad.vmap(f, in_axes=(None, {"x": 0}))(params, batch)
    for b in range(5):
        want = f(params, {"x": batch["x"][b]})
        np.testing.assert_allclose(got["y"][b], want["y"], rtol=1e-13)
        np.testing.assert_allclose(got["n"][b], want["n"], rtol=1e-13)


def test_vmap_indexing_sorting_and_scatter():
    def f(x, i):
        y = np.sort(x)[::-1]
        z = x.copy()
        z[i] = 0.0
        return y[i] + np.concatenate([z, np.pad(x, 1)])[:4].sum() + np.argsort(x)[0]
    x = rng.standard_normal((6, 5))
    i = rng.integers(0, 5, 6)
    np.testing.assert_allclose(jitgrad.vmap(f)(x, i), loop(f, x, i, in_axes=(0, 0)), rtol=1e-13)


def test_nested_vmap_is_a_batched_matmul():
    a, b = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 5, 2))
    inner = jitgrad.vmap(lambda row, m: row @ m, in_axes=(0, None))   # one row of a times m
    outer = jitgrad.vmap(inner)
    np.testing.assert_allclose(outer(a, b), a @ b, rtol=1e-12)


def test_jit_of_vmap_and_vmap_of_jit():
    f = jitgrad.jit(lambda x: np.exp(x) / np.sum(np.exp(x)))
    x = rng.standard_normal((3, 4))
    want = loop(f, x, in_axes=(0,))
    np.testing.assert_allclose(jitgrad.jit(jitgrad.vmap(f))(x), want, rtol=1e-13)
    np.testing.assert_allclose(jitgrad.vmap(f)(x), want, rtol=1e-13)


def mlp_loss(params, x, y):
    w1, b1, w2 = params
    h = np.tanh(x @ w1 + b1)
    return (h @ w2 - y) ** 2


def test_per_example_gradients_of_an_mlp():
    params = (rng.standard_normal((3, 8)), rng.standard_normal(8), rng.standard_normal(8))
    xs, ys = rng.standard_normal((7, 3)), rng.standard_normal(7)
    per_example = jitgrad.vmap(jitgrad.grad(mlp_loss), in_axes=(None, 0, 0))(params, xs, ys)
    g = jitgrad.grad(mlp_loss)
    for b in range(7):
        want = g(params, xs[b], ys[b])
        for got_leaf, want_leaf in zip(per_example, want, strict=True):
            np.testing.assert_allclose(got_leaf[b], want_leaf, rtol=1e-12, atol=1e-14)
    total = jitgrad.grad(lambda p: np.sum(mlp_loss(p, xs, ys)))(params)
    for got_leaf, want_leaf in zip(per_example, total, strict=True):
        np.testing.assert_allclose(got_leaf.sum(axis=0), want_leaf, rtol=1e-11)


def test_grad_of_vmap_and_jvp_of_vmap():
    xs = rng.standard_normal((5, 3))
    w = rng.standard_normal(3)
    f = jitgrad.vmap(lambda w, x: np.sin(x @ w), in_axes=(None, 0))
    got = jitgrad.grad(lambda w: np.sum(f(w, xs)))(w)
    np.testing.assert_allclose(got, (np.cos(xs @ w)[:, None] * xs).sum(0), rtol=1e-12)
    t = rng.standard_normal(3)
    out, tangent = jitgrad.jvp(lambda w: f(w, xs), (w,), (t,))
    np.testing.assert_allclose(out, np.sin(xs @ w), rtol=1e-13)
    np.testing.assert_allclose(tangent, np.cos(xs @ w) * (xs @ t), rtol=1e-12)


def test_vmap_of_jvp():
    xs, ts = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    f = lambda x, t: jitgrad.jvp(lambda x: np.tanh(x) * 2.0, (x,), (t,))[1]   # noqa: E731
    got = jitgrad.vmap(f)(xs, ts)
    np.testing.assert_allclose(got, 2.0 * (1 - np.tanh(xs) ** 2) * ts, rtol=1e-12)


def test_vmap_of_zero_size_slices():
    x = np.zeros((2, 0, 3))
    assert jitgrad.vmap(np.sin)(x).shape == (2, 0, 3)
    assert jitgrad.vmap(lambda a, b: a * b, in_axes=(0, None))(x, np.ones((1, 3))).shape == (2, 0, 3)


def test_vmap_draws_new_random_numbers_for_every_slice():
    """As a loop over the slices would: np.random gives every call new numbers."""
    f = lambda x: x + np.random.uniform(size=3)          # noqa: E731
    out = jitgrad.vmap(f)(np.zeros((4, 3)))
    assert out.shape == (4, 3) and np.all((out >= 0) & (out < 1))
    assert len({tuple(row) for row in out}) == 4


def test_vmap_of_a_checkpoint_region():
    f = lambda x: jitgrad.checkpoint(lambda y: np.sin(y) * y)(x) + 1.0   # noqa: E731
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(jitgrad.vmap(f)(x), np.sin(x) * x + 1.0, rtol=1e-13)
    g = jitgrad.vmap(jitgrad.grad(lambda x: np.sum(f(x))))(x)
    np.testing.assert_allclose(g, np.cos(x) * x + np.sin(x), rtol=1e-12)


def test_control_flow_on_unmapped_values_is_copied():
    f = lambda x, n: jitgrad.fori_loop(0, 3, lambda i, c: c * n, 1.0) * x   # noqa: E731
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(jitgrad.vmap(f, in_axes=(0, None))(x, np.float64(2.0)), 8.0 * x, rtol=1e-13)


# --------------------------------------------------------------------------- errors

def test_control_flow_on_mapped_values_is_batched():
    """Region ops have rules (tests/test_vmap_regions.py holds the full checks)."""
    f = lambda x: jitgrad.cond(x[0] > 0, lambda v: v * 2.0, lambda v: v, x)   # noqa: E731
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(jitgrad.vmap(f)(x), np.where(x[:, :1] > 0, 2.0 * x, x), rtol=1e-15)


def test_mismatched_sizes_are_an_argument_error():
    with pytest.raises(ArgumentError, match="different sizes"):
        jitgrad.vmap(lambda a, b: a + b)(np.zeros(3), np.zeros(4))


def test_no_mapped_argument_is_an_error():
    with pytest.raises(ArgumentError, match="at least one mapped"):
        jitgrad.vmap(lambda a: a, in_axes=None)(np.zeros(3))


def test_axis_out_of_range_and_bad_in_axes():
    with pytest.raises(ArgumentError, match="out of range"):
        jitgrad.vmap(lambda a: a, in_axes=2)(np.zeros((3, 2)))
    with pytest.raises(ArgumentError, match="2 entries for 1"):
        jitgrad.vmap(lambda a: a, in_axes=(0, 0))(np.zeros(3))
    with pytest.raises(ArgumentError, match="0-d"):
        jitgrad.vmap(lambda a: a)(np.float64(1.0))


def test_out_axes_none_for_a_mapped_output_is_an_error():
    with pytest.raises(ArgumentError, match="out_axes is None"):
        jitgrad.vmap(lambda a: a * 2.0, out_axes=None)(np.zeros(3))


ruleless_op = OpDef("test_vmap_ruleless", lambda x: [x], num_results=1, doc="Test op without a batch rule.")


def test_op_without_a_rule_names_the_op():
    fn, builder = new_function("f", [TensorType((3,), DType.f64)])
    with builder:
        builder.ret([emit(ruleless_op, fn.args[0])])
    with pytest.raises(MissingRuleError, match="test_vmap_ruleless"):
        batch_function(fn, [0], 2)


def test_per_example_gradients_example_runs():
    script = pathlib.Path(__file__).resolve().parent.parent / "examples" / "per_example_gradients.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    error = float(result.stdout.split("loop of grad| = ")[1].split()[0])
    start, final = (float(v) for v in result.stdout.split("gradients: ")[1].split(" -> "))
    assert error < 1e-12 and final < start / 10
