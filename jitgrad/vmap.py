"""`jitgrad.vmap(f, in_axes=0, out_axes=0)`: f mapped over an axis of its arguments.

As JAX's vmap: `in_axes` is an int, None, or a tuple/list with one entry per positional
argument, each entry an int/None or a pytree prefix of that argument (None: the argument
is the same for every slice); `out_axes` likewise for the output pytree. The function is
traced once on one slice's shapes and the trace is batched by the IR pass
`jitgrad.passes.batching` (one rule per primitive), so the result is a single vectorized
program: compiled like `jit` when called on arrays, inlined into the enclosing trace when
called inside `jit`/`grad`/`jvp`/another `vmap`, so all of them nest in either order.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

from jitgrad.api import Compiled, _name
from jitgrad.errors import ArgumentError
from jitgrad.ir import TensorType, new_function
from jitgrad.ir.clone import inline_block
from jitgrad.passes.batching import CUSTOM_RULE_BATCHERS, batch_function, move_axis, to_front
from jitgrad.staging import Staged
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.tracing.tracer import abstract_leaf, check_arity, trace, user_location


def _is_axis(spec) -> bool:
    return spec is None or isinstance(spec, int) and not isinstance(spec, bool)


def _broadcast_prefix(spec, tree_value, what: str) -> list:
    """One axis spec per leaf of `tree_value`, `spec` being a pytree prefix of it."""
    if _is_axis(spec):
        return [spec] * len(tree_flatten(tree_value)[0])
    if isinstance(spec, (tuple, list)) and isinstance(tree_value, (tuple, list)) and len(spec) == len(tree_value):
        return [a for s, v in zip(spec, tree_value) for a in _broadcast_prefix(s, v, what)]
    if isinstance(spec, dict) and isinstance(tree_value, dict) and set(spec) == set(tree_value):
        return [a for k in sorted(tree_value) for a in _broadcast_prefix(spec[k], tree_value[k], what)]
    raise ArgumentError(f"vmap {what} {spec!r} is not an int, None or a pytree prefix of the value it "
                        f"describes ({type(tree_value).__name__})")


def _normalize(axis, ndim: int, what: str):
    if axis is None:
        return None
    if not -ndim <= axis < ndim:
        raise ArgumentError(f"vmap {what} {axis} is out of range for an array of rank {ndim}", user_location())
    return operator.index(axis) % ndim


def vmap_transform(fun: Callable, in_axes, out_axes) -> Callable[[tuple], Staged]:
    def stage(args: tuple) -> Staged:
        check_arity(fun, args)
        if isinstance(in_axes, list):
            spec = tuple(in_axes)
        else:
            spec = in_axes
        if isinstance(spec, tuple):
            if len(spec) != len(args):
                raise ArgumentError(f"vmap in_axes has {len(spec)} entries for {len(args)} positional arguments",
                                    user_location())
            axes = _broadcast_prefix(spec, tuple(args), "in_axes")
        elif _is_axis(spec):
            axes = _broadcast_prefix(spec, tuple(args), "in_axes")
        else:
            raise ArgumentError(f"vmap in_axes must be an int, None or a tuple/list, got {spec!r}")
        leaves, in_tree = tree_flatten(tuple(args))
        types = [abstract_leaf(x) for x in leaves]
        dims, sizes, slice_types = [], set(), []
        for t, axis in zip(types, axes):
            if axis is not None and t.ndim == 0:
                raise ArgumentError("vmap in_axes maps a 0-d argument; give it in_axes None or an axis it has",
                                    user_location())
            d = _normalize(axis, t.ndim, "in_axes") if axis is not None else None
            dims.append(d)
            if d is None:
                slice_types.append(t)
            else:
                sizes.add(t.shape[d])
                slice_types.append(TensorType(t.shape[:d] + t.shape[d + 1:], t.dtype))
        if not sizes:
            raise ArgumentError("vmap needs at least one mapped argument (an in_axes entry that is not None)",
                                user_location())
        if len(sizes) > 1:
            raise ArgumentError(f"vmap got mapped axes of different sizes {sorted(sizes)}", user_location())
        size = sizes.pop()

        def flat(*flat_leaves):
            return fun(*tree_unflatten(in_tree, list(flat_leaves)))
        flat.__name__ = getattr(fun, "__name__", "fn")
        traced = trace(flat, tuple(slice_types))
        fn = traced.function
        all_dims = dims + [None] * len(traced.captured)
        batched, out_dims = batch_function(fn, all_dims, size, name=f"vmap_{fn.name}")
        out_specs = _out_specs(out_axes, traced.out_tree)
        final = _place_outputs(batched, out_dims, out_specs, size)
        return Staged(final, lambda flat_out, tree=traced.out_tree: tree_unflatten(tree, flat_out),
                      [("traced", fn), ("batched", final)], traced.captured)
    return stage


def _out_specs(out_axes, out_tree) -> list:
    placeholder = tree_unflatten(out_tree, [0] * out_tree.num_leaves)
    if isinstance(out_axes, list):
        out_axes = tuple(out_axes)
    return _broadcast_prefix(out_axes, placeholder, "out_axes")


def _place_outputs(fn, out_dims, out_specs, size: int):
    """A function that returns fn's outputs with their mapped axis at out_axes (unmapped
    outputs broadcast; out_axes None requires an output that is the same for every slice)."""
    new_fn, builder = new_function(fn.name, fn.input_types)
    with builder:
        outs = inline_block(fn.body, new_fn.args)
        placed = []
        with builder.at(fn.body.terminator.loc):
            for v, d, spec in zip(outs, out_dims, out_specs, strict=True):
                if spec is None:
                    if d is not None:
                        raise ArgumentError("vmap out_axes is None for an output that differs between slices",
                                            user_location())
                    placed.append(v)
                    continue
                target = _normalize(spec, v.ndim + (d is None), "out_axes")
                placed.append(move_axis(to_front(v, d, size), 0, target))
            builder.ret(placed)
    return new_fn


def vmap(fun: Callable, in_axes: Any = 0, out_axes: Any = 0):
    """fun mapped over axis `in_axes` of its arguments, results stacked along `out_axes`
    (JAX's semantics: ints, None, pytree prefixes). Compiled per argument signature;
    inside jit/grad/jvp/vmap it becomes part of the enclosing program."""
    if not callable(fun):
        raise ArgumentError(f"vmap needs a callable, got {type(fun).__name__}")
    return Compiled(fun, vmap_transform(fun, in_axes, out_axes), name=f"vmap_{_name(fun)}")


class _BatchedCustomJVP:
    """A `custom_jvp` rule for a batched call (every operand and result mapped along its
    first axis): the user's JVP rule applied to every slice, by vmap."""

    def __init__(self, rule, size: int):
        self.rule, self.name, self.size = rule, rule.name, size

    @property
    def jvp_rule(self):
        if self.rule.jvp_rule is None:
            return None
        return lambda primals, tangents: vmap(self.rule.jvp_rule)(tuple(primals), tuple(tangents))


class _BatchedCustomVJP:
    """The `custom_vjp` rules for a batched call: the user's fwd and bwd applied to every
    slice, by vmap (residuals and cotangents mapped along their first axis)."""

    def __init__(self, rule, size: int):
        self.rule, self.name, self.size = rule, rule.name, size

    @property
    def fwd(self):
        if self.rule.fwd is None:
            return None
        return lambda *primals: vmap(self.rule.fwd)(*primals)

    @property
    def bwd(self):
        return lambda residuals, cotangents: vmap(self.rule.bwd)(residuals, cotangents)


CUSTOM_RULE_BATCHERS.update(custom_jvp_call=_BatchedCustomJVP, custom_vjp_call=_BatchedCustomVJP)
