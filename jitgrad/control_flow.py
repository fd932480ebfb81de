"""Structured control flow on traced values, with JAX's signatures:

    jitgrad.cond(pred, true_fun, false_fun, *operands)
    jitgrad.switch(index, branches, *operands)
    jitgrad.while_loop(cond_fun, body_fun, init_val)
    jitgrad.fori_loop(lower, upper, body_fun, init_val)
    jitgrad.scan(f, init, xs=None, length=None, reverse=False)

Inside jit/grad/... each traces its functions once into the regions of one op
(`jitgrad.primitives.control_flow`), so a loop compiles in the same time whatever its
trip count, and runs as a real loop. Carries, operands, xs and ys are pytrees of arrays;
a body must give back a carry of exactly the initial carry's structure, shapes and
dtypes (an error names the call's line otherwise). Values the functions read from
enclosing code are captured as extra operands of the op.

Called outside any trace (plain NumPy arrays), each runs as the Python loop or branch it
stands for.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from jitgrad.errors import ControlFlowError, ShapeError
from jitgrad.ir import DType, Function, TensorType, Value, current_builder
from jitgrad.primitives import control_flow as cf
from jitgrad.primitives import convert, full, lt, maximum, sub, add, constant, ne
from jitgrad.tracing.numpy_api import as_value
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.tracing.tracer import Tracer, trace, user_location


def _tracing() -> bool:
    try:
        current_builder()
    except RuntimeError:
        return False
    return True


def _values(leaves) -> list[Value]:
    with current_builder().at(user_location()):
        return [x.value if isinstance(x, Tracer) else as_value(x) for x in leaves]


def _trace(fun: Callable, types: Sequence, in_tree, name: str):
    """Trace fun on abstract arguments of `types` arranged as `in_tree`; returns the
    traced function (its captured values are trailing arguments) and the captures."""
    args = tree_unflatten(in_tree, list(types))
    traced = trace(fun, tuple(args) if isinstance(args, tuple) else (args,), name=name)
    return traced


def _describe(types) -> str:
    return "(" + ", ".join(str(t) for t in types) + ")"


def _check_same(what: str, got_tree, got_types, want_tree, want_types) -> None:
    if got_tree != want_tree:
        raise ControlFlowError(f"{what} has structure {got_tree}, the initial value has {want_tree}",
                               user_location())
    got = [TensorType(t.shape, t.dtype) for t in got_types]
    want = [TensorType(t.shape, t.dtype) for t in want_types]
    if got != want:
        raise ControlFlowError(f"{what} has types {_describe(got)} where the initial value has {_describe(want)}; "
                               "give the initial value the dtype and shape the body returns (e.g. np.float64(0) "
                               "or .astype)", user_location())


def _wrap(values) -> list[Tracer]:
    return [Tracer(v) for v in values]


# --------------------------------------------------------------------------- cond / switch

def _as_predicate(pred) -> Value:
    value = _values([pred])[0]
    if value.type.shape != ():
        raise ShapeError(f"cond's predicate must be a scalar, got shape {value.type.shape}", user_location())
    with current_builder().at(user_location()):
        if value.type.dtype != DType.bool:
            value = ne(value, full(0, value.type))
    return value


def _branch(fun: Callable, in_tree, types, name: str):
    def flat(*leaves):
        return fun(*tree_unflatten(in_tree, list(leaves)))
    flat.__name__ = name
    traced = trace(flat, tuple(types), name=name)
    return traced


def cond(pred, true_fun: Callable, false_fun: Callable, *operands):
    """true_fun(*operands) if pred else false_fun(*operands); both are traced, and both
    must return the same structure of the same types. Differentiable in either mode."""
    if not _tracing():
        return true_fun(*operands) if bool(np.asarray(pred)) else false_fun(*operands)
    leaves, in_tree = tree_flatten(tuple(operands))
    values = _values(leaves)
    p = _as_predicate(pred)
    types = [v.type for v in values]
    then_t = _branch(true_fun, in_tree, types, "true_fun")
    else_t = _branch(false_fun, in_tree, types, "false_fun")
    if then_t.out_tree != else_t.out_tree or then_t.function.output_types != else_t.function.output_types:
        raise ControlFlowError(f"cond's branches return different structures or types: true_fun gives "
                               f"{then_t.out_tree} {_describe(then_t.function.output_types)}, false_fun gives "
                               f"{else_t.out_tree} {_describe(else_t.function.output_types)}", user_location())
    n_then, n_else = len(then_t.captured), len(else_t.captured)
    arg_types = types + [v.type for v in then_t.captured] + [v.type for v in else_t.captured]
    n = len(values)

    def region(traced, lo, hi):
        return cf.make_function(traced.function.name, arg_types,
                                lambda args: cf.call(traced.function, [*args[:n], *args[n + lo:n + hi]]))
    with current_builder().at(user_location()):
        outs = cf.emit_cond(p, region(then_t, 0, n_then), region(else_t, n_then, n_then + n_else),
                            [*values, *then_t.captured, *else_t.captured])
    return tree_unflatten(then_t.out_tree, _wrap(outs))


def switch(index, branches: Sequence[Callable], *operands):
    """branches[clip(index, 0, len(branches) - 1)](*operands), as JAX's lax.switch:
    traced as a chain of conds."""
    branches = list(branches)
    if not branches:
        raise ControlFlowError("switch needs at least one branch", user_location())
    if not _tracing():
        return branches[int(np.clip(int(np.asarray(index)), 0, len(branches) - 1))](*operands)
    if len(branches) == 1:
        return branches[0](*operands)
    i = _values([index])[0]
    if i.type.shape != () or not (i.type.dtype.is_integer or i.type.dtype == DType.bool):
        raise ControlFlowError(f"switch's index must be an integer scalar, got {i.type}", user_location())
    with current_builder().at(user_location()):
        i = convert(i, DType.i64)
        first = lt(i, constant(1, DType.i64))
    index_tracer = Tracer(i)
    return cond(Tracer(first), branches[0],
                lambda *ops: switch(index_tracer - 1, branches[1:], *ops), *operands)


# --------------------------------------------------------------------------- loops

def _carry(init_val, what: str):
    leaves, tree = tree_flatten(init_val)
    values = _values(leaves)
    return values, tree


def while_loop(cond_fun: Callable, body_fun: Callable, init_val):
    """while cond_fun(val): val = body_fun(val); return val. The trip count may depend on
    the data; reverse mode differentiates it too (the forward loop records its trip
    count, the backward loop recomputes the carries it needs)."""
    if not _tracing():
        val = init_val
        while bool(np.asarray(cond_fun(val))):
            val = body_fun(val)
        return val
    carry, tree = _carry(init_val, "while_loop")
    types = [v.type for v in carry]
    test_t = _branch(lambda *c: cond_fun(tree_unflatten(tree, list(c))), tree_flatten(tuple(types))[1], types,
                     "cond_fun")
    body_t = _branch(lambda *c: body_fun(tree_unflatten(tree, list(c))), tree_flatten(tuple(types))[1], types,
                     "body_fun")
    test_out = test_t.function.output_types
    if len(test_out) != 1 or test_out[0].shape != ():
        raise ControlFlowError(f"while_loop's cond_fun must return one scalar, got {_describe(test_out)}",
                               user_location())
    _check_same("while_loop's body_fun returns a carry that", body_t.out_tree, body_t.function.output_types,
                tree, types)
    n_test, n_body = len(test_t.captured), len(body_t.captured)
    consts = [*test_t.captured, *body_t.captured]
    region_types = [*(v.type for v in consts), *types]
    nc = len(consts)

    def test_region(args):
        out = cf.call(test_t.function, [*args[nc:], *args[:n_test]])[0]
        return [out if out.type.dtype == DType.bool else ne(out, full(0, out.type))]

    def body_region(args):
        return cf.call(body_t.function, [*args[nc:], *args[n_test:n_test + n_body]])
    with current_builder().at(user_location()):
        outs = cf.emit_while(cf.make_function("cond_fun", region_types, test_region),
                             cf.make_function("body_fun", region_types, body_region), consts, carry)
    return tree_unflatten(tree, _wrap(outs))


def _concrete_int(x):
    if isinstance(x, Tracer):
        return None
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, np.ndarray) and x.shape == () and x.dtype.kind in "iu":
        return int(x)
    return None


def fori_loop(lower, upper, body_fun: Callable, init_val):
    """for i in range(lower, upper): val = body_fun(i, val); return val. With Python-int
    bounds it is a scan of upper - lower steps (reverse mode stores one residual set per
    step); with traced bounds a loop whose trip count is known only when it runs (reverse
    mode recomputes instead)."""
    if not _tracing():
        val = init_val
        for i in range(int(np.asarray(lower)), int(np.asarray(upper))):
            val = body_fun(i, val)
        return val
    lo, hi = _concrete_int(lower), _concrete_int(upper)
    carry, tree = _carry(init_val, "fori_loop")
    types = [v.type for v in carry]
    if lo is not None and hi is not None:
        # the index promotes as the Python ints of range(lower, upper) do (NEP 50), so
        # `v * 0.5 + i` keeps v's float32
        last = max(hi - 1, lo)
        holding = frozenset(d for d in DType if d.is_integer and np.iinfo(d.numpy).min <= min(lo, last)
                            and max(lo, last) <= np.iinfo(d.numpy).max)

        def step(state, _):
            i, val = state
            new = body_fun(Tracer(i.value, weak=holding), val)
            leaves, new_tree = tree_flatten(new)
            _check_same("fori_loop's body_fun returns a carry that", new_tree, [_values([x])[0].type for x in leaves],
                        tree, types)
            return (i + 1, new), None
        (_, out), _ = scan(step, (np.int64(lo), init_val), None, length=max(hi - lo, 0))
        return out
    bounds = _values([lower, upper])
    for b in bounds:
        if b.type.shape != () or not b.type.dtype.is_integer:
            raise ControlFlowError(f"fori_loop's bounds must be integer scalars, got {b.type}", user_location())
    with current_builder().at(user_location()):
        lo_v, hi_v = (convert(b, DType.i64) for b in bounds)
        trips = maximum(sub(hi_v, lo_v), constant(0, DType.i64))
    i_type = TensorType((), DType.i64)
    body_t = _branch(lambda i, *c: body_fun(i, tree_unflatten(tree, list(c))),
                     tree_flatten((i_type, *types))[1], [i_type, *types], "body_fun")
    _check_same("fori_loop's body_fun returns a carry that", body_t.out_tree, body_t.function.output_types,
                tree, types)
    consts = [lo_v, *body_t.captured]
    region_types = [i_type, *(v.type for v in consts), *types]
    nc = len(consts)

    def body_region(args):
        i = add(args[0], args[1])
        return cf.call(body_t.function, [i, *args[1 + nc:], *args[2:1 + nc]])
    with current_builder().at(user_location()):
        outs = cf.emit_fori(trips, cf.make_function("body_fun", region_types, body_region), consts, carry)
    return tree_unflatten(tree, _wrap(outs))


def scan(f: Callable, init, xs=None, length: int | None = None, reverse: bool = False):
    """JAX's lax.scan: carry, y = f(carry, x) for each x along the leading axis of xs
    (pytrees); returns (final carry, ys stacked along a new leading axis). With xs None,
    `length` steps with x None. Reverse mode stores per-step residuals and runs a scan
    over them the other way."""
    if not _tracing():
        return _python_scan(f, init, xs, length, reverse)
    carry, tree = _carry(init, "scan")
    carry_types = [v.type for v in carry]
    x_leaves, x_tree = tree_flatten(xs)
    x_values = _values(x_leaves)
    lengths = {v.type.shape[0] for v in x_values if v.type.ndim > 0}
    if any(v.type.ndim == 0 for v in x_values):
        raise ShapeError("scan's xs must have a leading axis to scan over; one is 0-d", user_location())
    if length is not None:
        lengths.add(int(length))
    if len(lengths) != 1:
        raise ControlFlowError(f"scan's xs have different leading lengths {sorted(lengths)} (with length="
                               f"{length})" if lengths else "scan needs xs or length", user_location())
    n = lengths.pop()
    slice_types = [TensorType(v.type.shape[1:], v.type.dtype) for v in x_values]
    arg_tree = tree_flatten((tree_unflatten(tree, carry_types), tree_unflatten(x_tree, slice_types)))[1]

    def flat(*leaves):
        c, x = tree_unflatten(arg_tree, list(leaves))
        result = f(c, x)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ControlFlowError("scan's f must return a pair (carry, y)", user_location())
        return tuple(result)
    body_t = _branch(flat, tree_flatten(tuple(carry_types + slice_types))[1], carry_types + slice_types, "f")
    out_leaves_tree = body_t.out_tree
    n_carry = len(carry)
    # the output pytree is (carry, y): split the leaves
    carry_tree_out, y_tree = _pair_trees(out_leaves_tree)
    _check_same("scan's f returns a carry that", carry_tree_out, body_t.function.output_types[:n_carry], tree,
                carry_types)
    consts = list(body_t.captured)
    nc = len(consts)
    region_types = [*(v.type for v in consts), *carry_types, *slice_types]

    def body_region(args):
        return cf.call(body_t.function, [*args[nc:], *args[:nc]])
    with current_builder().at(user_location()):
        outs = cf.emit_scan(cf.make_function("f", region_types, body_region), consts, carry, x_values, n, reverse)
    final = tree_unflatten(tree, _wrap(outs[:n_carry]))
    return final, tree_unflatten(y_tree, _wrap(outs[n_carry:]))


def _pair_trees(tree):
    """The two subtrees of the structure of a (carry, y) pair."""
    return tree.children[0], tree.children[1]


def _python_scan(f, init, xs, length, reverse):
    x_leaves, x_tree = tree_flatten(xs)
    n = length if length is not None else len(np.asarray(x_leaves[0]))
    carry, ys = init, []
    steps = range(n - 1, -1, -1) if reverse else range(n)
    for i in steps:
        x = tree_unflatten(x_tree, [np.asarray(leaf)[i] for leaf in x_leaves]) if x_leaves else (
            None if xs is None else xs)
        carry, y = f(carry, x)
        ys.append(y)
    if reverse:
        ys.reverse()
    if not ys:      # no step ran: f on zero slices gives the ys' structure, shapes and dtypes
        x = tree_unflatten(x_tree, [np.zeros(np.shape(leaf)[1:], np.asarray(leaf).dtype) for leaf in x_leaves])
        y = f(init, x if x_leaves else None)[1]
        y_leaves, y_tree = tree_flatten(y)
        return carry, tree_unflatten(y_tree, [np.zeros((0, *np.shape(leaf)), np.asarray(leaf).dtype)
                                              for leaf in y_leaves])
    y_leaves = [tree_flatten(y)[0] for y in ys]
    y_tree = tree_flatten(ys[0])[1]
    stacked = [np.stack([np.asarray(leaves[k]) for leaves in y_leaves]) for k in range(len(y_leaves[0]))]
    return carry, tree_unflatten(y_tree, stacked)


__all__ = ["cond", "switch", "while_loop", "fori_loop", "scan", "ControlFlowError"]
