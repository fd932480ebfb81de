"""Staging: from a Python function and example arguments to IR, through transformations.

A `Transform` turns arguments into a `Staged` program: the IR function, the stages it
went through (traced, differentiated, ...) and how to rebuild the user's output pytree
from the flat results. `trace_transform` traces; `grad_transform` and friends
differentiate what their inner transform produced. Transformed callables nest: when one
is called on traced values (inside another trace) its IR is *inlined* into the outer
function, so grad(grad(f)) and jit(grad(f)) are IR transformations of IR, with one set
of primitive rules.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from jitgrad.errors import ArgumentError, GradientError
from jitgrad.ir import Function, TensorType, Value, current_builder
from jitgrad.primitives.calls import inline_block, keep_outputs
from jitgrad.primitives.elementwise import convert
from jitgrad.passes.jvp import jvp_function
from jitgrad.passes.reverse import Cotangent, vjp_function
from jitgrad.passes.memory import plan_buffers
from jitgrad.passes.pipeline import optimization_passes
from jitgrad.passes.remat import choose_segmentation, parse_bytes, program_peak, report_unmet_budget
from jitgrad.passes.schedule import schedule
from jitgrad.tracing.pytree import TreeDef, tree_flatten, tree_unflatten
from jitgrad.tracing.tracer import Tracer, abstract_leaf, check_arity, trace, user_location
from jitgrad.tracing import autograph, numpy_api


@dataclass
class Staged:
    """An IR function plus what is needed to present its results to the user."""

    function: Function
    unflatten: Callable[[list], Any]
    stages: list[tuple[str, Function]] = field(default_factory=list)
    captured: list[Value] = field(default_factory=list)
    """Values of an enclosing trace the function closed over: its trailing arguments."""
    remat: Any = None
    """The rematerialization decision (`passes.remat.RematReport`) under a memory budget."""


def normalize_args(args: tuple, static_argnums: Sequence[int] = ()) -> tuple:
    """The dynamic arguments as the tracer takes them: Python scalars stay Python scalars
    (traced as weak 0-d values, NEP 50), arrays and static arguments stay as they are;
    masked arrays and np.matrix are refused (`tracer.abstract_leaf`)."""
    out = []
    for i, arg in enumerate(args):
        if i in static_argnums:
            out.append(arg)
            continue
        leaves, tree = tree_flatten(arg)
        for x in leaves:
            if isinstance(x, (np.ma.MaskedArray, np.matrix)):
                abstract_leaf(x)                  # raises, naming the subclass
        out.append(arg)
    return tuple(out)


def trace_transform(fun: Callable, static_argnums: Sequence[int] = ()) -> Callable[[tuple], Staged]:
    def stage(args: tuple) -> Staged:
        check_arity(fun, args)
        static = {i % len(args) for i in static_argnums if -len(args) <= i < len(args)}
        dynamic = tuple(a for i, a in enumerate(args) if i not in static)

        def bound(*dyn):
            it = iter(dyn)
            return autograph.active(fun)(*[args[i] if i in static else next(it) for i in range(len(args))])
        bound.__name__ = getattr(fun, "__name__", "fn")
        bound.__wrapped__ = fun
        traced = trace(bound, dynamic)
        fn = traced.function
        return Staged(fn, lambda flat, tree=traced.out_tree: tree_unflatten(tree, flat), [("traced", fn)],
                      traced.captured)
    return stage


def _argnum_leaves(args: tuple, argnums: Sequence[int]) -> tuple[list[int], list[TreeDef]]:
    """Flat leaf positions of the arguments in `argnums`, in argnums order, and each
    argument's structure."""
    if len(set(argnums)) != len(argnums):
        raise ArgumentError(f"argnums {tuple(argnums)} names an argument twice")
    starts, offset = [], 0
    for arg in args:
        starts.append(offset)
        offset += len(tree_flatten(arg)[0])
    positions, trees = [], []
    for i in argnums:
        tree = tree_flatten(args[i])[1]
        positions.extend(range(starts[i], starts[i] + tree.num_leaves))
        trees.append(tree)
    return positions, trees


def grad_transform(fun: Callable, argnums, has_aux: bool, mode: str, memory_budget=None,
                   strict: bool = False, holomorphic: bool = False) -> Callable[[tuple], Staged]:
    """Reverse-mode gradient of a scalar function. `mode`: 'grad' (grads only),
    'value_and_grad' ((value, grads), or JAX's ((value, aux), grads) with has_aux).
    A `memory_budget` that no segmentation meets warns (MemoryBudgetWarning), or with
    `strict` raises MemoryBudgetError. `holomorphic`: a complex function of complex
    arguments, differentiated with the cotangent 1, which gives f'(z) (JAX's convention)."""
    if strict and memory_budget is None:
        raise ArgumentError("strict=True makes an unmet memory_budget an error; pass a memory_budget too")
    single = isinstance(argnums, int)
    argnums_t = (argnums,) if single else tuple(argnums)

    def stage(args: tuple) -> Staged:
        for i in argnums_t:
            if not -len(args) <= i < len(args):
                raise ArgumentError(f"argnums={argnums!r} is out of range for {len(args)} positional arguments")
        argnums_n = tuple(operator.index(i) % len(args) for i in argnums_t)
        traced = trace(fun, args)
        fn = traced.function
        out_tree = traced.out_tree
        n_out = len(fn.outputs)
        if has_aux and (out_tree.kind not in ("tuple", "list") or len(out_tree.children) != 2):
            raise GradientError("has_aux=True needs the function to return a pair (output, aux)")
        loss_leaves = out_tree.children[0].num_leaves if has_aux else n_out
        if loss_leaves != 1 or fn.outputs[0].type.ndim != 0:
            shown = ", ".join(str(t) for t in fn.output_types[:loss_leaves])
            raise GradientError(f"grad requires a function with a scalar (0-d) output, but {fn.name} returns "
                                f"{shown or 'nothing'}; use jitgrad.vjp for non-scalar outputs")
        wrt, trees = _argnum_leaves(args, argnums_n)
        check_differentiable_dtypes("grad", [fn.args[pos].type for pos in wrt], [fn.output_types[0]], holomorphic)
        for pos in wrt:
            t = fn.args[pos].type
            if not t.dtype.is_inexact:
                raise GradientError(f"grad of {fn.name} with respect to an argument of type {t}: only "
                                    "floating-point and complex arguments can be differentiated (argnums="
                                    f"{argnums!r}); pass integer data as a non-differentiated argument")
        cotangents = [Cotangent.ONE] + [Cotangent.NONE] * (n_out - 1)
        values_returned = 0 if mode == "grad" and not has_aux else n_out   # grad alone: no value

        def differentiate(f: Function) -> Function:
            g = vjp_function(f, wrt, cotangents)
            return keep_outputs(g, n_out) if not values_returned else g
        stages, remat = [("traced", fn)], None
        if memory_budget is not None:
            segmented, remat = choose_segmentation(fn, parse_bytes(memory_budget), _peak_of(differentiate))
            report_unmet_budget(fn.name, remat, strict, user_location())
            stages.append(("remat", segmented))
            gfn = differentiate(segmented)
        else:
            gfn = differentiate(fn)

        def unflatten(flat):
            outs, grads = flat[:values_returned], flat[values_returned:]
            grouped, start = [], 0
            for tree in trees:
                grouped.append(tree_unflatten(tree, grads[start:start + tree.num_leaves]))
                start += tree.num_leaves
            g = grouped[0] if single else tuple(grouped)
            if not values_returned:
                return g
            value = outs[0]
            aux = tree_unflatten(out_tree.children[1], outs[1:]) if has_aux else None
            if mode == "grad":
                return g, aux
            return ((value, aux), g) if has_aux else (value, g)
        return Staged(gfn, unflatten, [*stages, ("autodiff", gfn)], traced.captured, remat)
    return stage


def check_differentiable_dtypes(kind: str, input_types, output_types, holomorphic: bool) -> None:
    """JAX's dtype rules for grad/jacfwd/jacrev, with its messages. holomorphic=True needs
    complex inputs (and complex outputs, for grad and jacrev): the derivative is then the
    complex number f'(z). Without it, grad and jacrev need real outputs (a complex output
    has no gradient, only a vjp) and jacfwd real inputs (a tangent of 1 along the real axis
    alone is half a derivative of a non-holomorphic function)."""
    if holomorphic:
        checked = [("inputs", t) for t in input_types]
        if kind != "jacfwd":
            checked += [("outputs", t) for t in output_types]
        for what, t in checked:
            if not t.dtype.is_complex:
                raise GradientError(f"{kind} with holomorphic=True requires {what} with complex dtype, "
                                    f"but got {t.dtype.numpy.name}")
        return
    advice = ("For holomorphic differentiation, pass holomorphic=True. For differentiation of "
              "non-holomorphic functions involving complex inputs or outputs, consider using jitgrad.vjp "
              "directly.")
    if kind == "jacfwd":
        for t in input_types:
            if t.dtype.is_complex:
                raise GradientError(f"jacfwd requires real-valued inputs (a floating-point dtype), but got "
                                    f"{t.dtype.numpy.name}. {advice}")
        return
    for t in output_types:
        if t.dtype.is_complex:
            raise GradientError(f"{kind} requires real-valued outputs (a floating-point output dtype), but got "
                                f"{t.dtype.numpy.name}. {advice}")
        if not t.dtype.is_float and kind == "grad":
            raise GradientError(f"grad requires a floating-point output, got {t}")


def _peak_of(differentiate: Callable[[Function], Function]):
    """Peak bytes and op count of the compiled gradient of a candidate program."""
    def measure(candidate: Function) -> tuple[int, int]:
        fn = differentiate(candidate)
        for p in optimization_passes():
            fn = p.run(fn)
        return program_peak(fn, schedule, plan_buffers), len(fn.body.ops)
    return measure


def vjp_transform(fun: Callable, n_primals: int) -> Callable[[tuple], Staged]:
    """f(*primals) -> out, differentiated with a cotangent argument per output leaf.
    Called with (*primals, cotangent_pytree); returns (out, tuple of input cotangents)."""
    def stage(args: tuple) -> Staged:
        primals, ct = args[:n_primals], args[n_primals]
        traced = trace(fun, primals)
        fn = traced.function
        ct_leaves, ct_tree = tree_flatten(ct)
        if ct_tree != traced.out_tree:
            raise ArgumentError(f"the cotangent has structure {ct_tree} but the function's output has "
                                f"structure {traced.out_tree}")
        for c, t in zip(ct_leaves, fn.output_types, strict=True):
            shape = getattr(c, "shape", ())
            if tuple(shape) != t.shape:
                raise ArgumentError(f"cotangent of shape {tuple(shape)} for an output of type {t}")
        _check_dtypes("cotangent", "output", ct_leaves, fn.output_types)
        n_leaves = len(fn.args) - len(traced.captured)
        float_inputs = _float_positions(fn, n_leaves)
        vfn = vjp_function(fn, float_inputs, [Cotangent.ARG] * len(fn.outputs))
        n_out = len(fn.outputs)

        def body(p, c):
            from jitgrad import primitives as P
            results = inline_block(vfn.body, [x.value for x in tree_flatten(p)[0]] + list(traced.captured)
                             + [_typed(x.value, t) for x, t in zip(tree_flatten(c)[0], fn.output_types, strict=True)])
            grads = iter(results[n_out:])
            leaves = [Tracer(next(grads) if fn.args[k].type.dtype.is_inexact else P.full(0, fn.args[k].type))
                      for k in range(n_leaves)]
            grouped, start = [], 0
            for primal in p:
                tree = tree_flatten(primal)[1]
                grouped.append(tree_unflatten(tree, leaves[start:start + tree.num_leaves]))
                start += tree.num_leaves
            return tree_unflatten(traced.out_tree, [Tracer(v) for v in results[:n_out]]), tuple(grouped)
        body.__wrapped__ = fun
        final = trace(body, (tuple(primals), ct), name=f"{fn.name}_vjp")
        return Staged(final.function, lambda flat: tree_unflatten(final.out_tree, flat),
                      [("traced", fn), ("autodiff", final.function)], final.captured)
    return stage


# --------------------------------------------------------------------------- inlining

def call_inline(stage: Callable[[tuple], Staged], args: tuple, static_argnums: Sequence[int] = ()):
    """Run a transformed function on traced arguments by inlining its IR; static
    arguments stay Python values."""
    dynamic = tuple(a for i, a in enumerate(args) if i not in static_argnums)
    leaves, tree = tree_flatten(dynamic)
    with current_builder().at(user_location()):
        operands = [x.value if isinstance(x, Tracer) else numpy_api.as_value(np.asarray(x)) for x in leaves]
    traced_dynamic = iter(tree_unflatten(tree, [Tracer(v) for v in operands]))
    abstract = tuple(a if i in static_argnums else next(traced_dynamic) for i, a in enumerate(args))
    staged = stage(abstract)
    results = inline_block(staged.function.body, [*operands, *staged.captured])
    return staged.unflatten([Tracer(v) for v in results])


def has_tracers(args) -> bool:
    leaves, _ = tree_flatten(args)
    return any(isinstance(x, Tracer) for x in leaves)


# --------------------------------------------------------------------------- forward mode

def _float_positions(fn: Function, n_leaves: int) -> list[int]:
    """Float and complex arguments among the first `n_leaves` (the rest are captured values)."""
    return [k for k in range(n_leaves) if fn.args[k].type.dtype.is_inexact]


def _check_like(what: str, values, like) -> None:
    leaves, tree = tree_flatten(values)
    like_leaves, like_tree = tree_flatten(like)
    if tree != like_tree:
        raise ArgumentError(f"{what} have structure {tree}, the primals have {like_tree}")
    for a, b in zip(leaves, like_leaves, strict=True):
        sa, sb = getattr(a, "shape", np.shape(a)), getattr(b, "shape", np.shape(b))
        if tuple(sa) != tuple(sb):
            raise ArgumentError(f"{what}: shape {tuple(sa)} does not match the primal's shape {tuple(sb)}")


def _check_dtypes(what: str, of: str, leaves: list, types: list[TensorType]) -> None:
    """A tangent or cotangent has the dtype of its primal or output where that is a float
    or complex one: the derivative program is compiled for that dtype, and converting a
    float64 cotangent of a float32 output would choose the precision for the caller (JAX
    raises too). Python scalars are weak (NEP 50) and take the dtype (`vjp_fn(1.0)`);
    integer and bool positions have no derivative, and what is passed there is not read."""
    for k, (leaf, want) in enumerate(zip(leaves, types, strict=True)):
        got = abstract_leaf(leaf)
        if not want.dtype.is_inexact or got.dtype == want.dtype:
            continue
        if got.weak and (want.dtype.is_complex or not got.dtype.is_complex):
            continue
        name = np.dtype(want.dtype.numpy).name
        spelled = "ml_dtypes.bfloat16" if name == "bfloat16" else f"np.{name}"
        raise ArgumentError(f"{what} {k} has dtype {np.dtype(got.dtype.numpy).name} but the {of} it belongs to "
                            f"has type {want}: pass it as {name} (`.astype({spelled})`)")


def _typed(value: Value, want: TensorType) -> Value:
    """A weak Python-scalar tangent or cotangent in its primal's or output's dtype. An
    integer primal or output has no derivative and its (co)tangent is never read: zeros of
    its type stand there, so the inlined derivative's arguments keep their types."""
    if want.dtype.is_inexact:
        return convert(value, want.dtype)
    from jitgrad import primitives as P
    return P.full(0, want)


def jvp_transform(fun: Callable, n_primals: int) -> Callable[[tuple], Staged]:
    """Forward mode: called with (*primals, *tangents), returns (out, out_tangent)."""
    def stage(args: tuple) -> Staged:
        primals, tangents = args[:n_primals], args[n_primals:]
        _check_like("tangents", tangents, primals)
        traced = trace(fun, primals)
        fn = traced.function
        n_leaves = len(fn.args) - len(traced.captured)
        wrt = _float_positions(fn, n_leaves)
        _check_dtypes("tangent", "primal", tree_flatten(tangents)[0], [a.type for a in fn.args[:n_leaves]])
        jfn = jvp_function(fn, wrt)
        n_out = len(fn.outputs)

        def body(p, t):
            p_leaves, t_leaves = tree_flatten(p)[0], tree_flatten(t)[0]
            outs = inline_block(jfn.body, [x.value for x in p_leaves] + list(traced.captured)
                          + [_typed(t_leaves[k].value, fn.args[k].type) for k in wrt])
            wrap = [Tracer(v) for v in outs]
            return tree_unflatten(traced.out_tree, wrap[:n_out]), tree_unflatten(traced.out_tree, wrap[n_out:])
        body.__wrapped__ = fun
        final = trace(body, (tuple(primals), tuple(tangents)), name=f"{fn.name}_jvp")
        return Staged(final.function, lambda flat: tree_unflatten(final.out_tree, flat),
                      [("traced", fn), ("jvp", final.function)], final.captured)
    return stage


def jacobian_transform(fun: Callable, argnums, mode: str, holomorphic: bool = False) -> Callable[[tuple], Staged]:
    """The Jacobian, one forward pass per input element ('fwd') or one reverse pass per
    output element ('rev'), each an inlined copy of the derivative program. Result:
    d out / d args[argnums] with shape out.shape + arg.shape, in the output's pytree
    (a tuple over argnums when argnums is a tuple)."""
    single = isinstance(argnums, int)
    argnums_t = (argnums,) if single else tuple(argnums)

    def stage(args: tuple) -> Staged:
        argnums_n = tuple(operator.index(i) % len(args) for i in argnums_t)
        traced = trace(fun, args)
        fn = traced.function
        wrt, _ = _argnum_leaves(args, argnums_n)
        for pos in wrt:
            if not fn.args[pos].type.dtype.is_inexact:
                raise GradientError(f"cannot differentiate with respect to an argument of type {fn.args[pos].type}")
        check_differentiable_dtypes(f"jac{mode}", [fn.args[pos].type for pos in wrt], fn.output_types, holomorphic)
        leaf_groups, start = [], 0
        for i in argnums_n:
            n = len(tree_flatten(args[i])[0])
            leaf_groups.append(wrt[start:start + n])
            start += n
        derivative = jvp_function(fn, wrt) if mode == "fwd" else vjp_function(fn, wrt)

        def body(*targs):
            values = [x.value for x in tree_flatten(targs)[0]] + list(traced.captured)
            blocks = _jacobian_blocks(fn, derivative, values, wrt, mode)
            per_output = []
            for k, out in enumerate(fn.outputs):
                per_arg = []
                for group, i in zip(leaf_groups, argnums_n, strict=True):
                    # a pytree argument: its structure, one block per leaf (as JAX)
                    per_leaf = [Tracer(blocks[k][wrt.index(p)]) for p in group]
                    per_arg.append(tree_unflatten(tree_flatten(args[i])[1], per_leaf))
                per_output.append(per_arg[0] if single else tuple(per_arg))
            return tree_unflatten(traced.out_tree, per_output)
        body.__wrapped__ = fun
        final = trace(body, args, name=f"{fn.name}_jac{mode}")
        return Staged(final.function, lambda flat: tree_unflatten(final.out_tree, flat),
                      [("traced", fn), ("jacobian", final.function)], final.captured)
    return stage


def _jacobian_blocks(fn: Function, derivative: Function, values, wrt, mode) -> list[list[Value]]:
    """blocks[k][j]: d output k / d input wrt[j], shaped output.shape + input.shape."""
    from jitgrad import primitives as P
    outs, ins = fn.outputs, [fn.args[p] for p in wrt]
    n_out = len(outs)
    columns: list[list[list[Value]]] = [[[] for _ in ins] for _ in outs]
    if mode == "fwd":
        for j, x in enumerate(ins):
            for i in range(x.type.size):
                tangents = [_basis(x.type, i) if jj == j else P.full(0, xx.type) for jj, xx in enumerate(ins)]
                results = inline_block(derivative.body, list(values) + tangents)[n_out:]
                for k, out in enumerate(outs):
                    columns[k][j].append(P.reshape(_as_float(results[k], x), (out.type.size, 1)))
        return [[P.reshape(P.concatenate(columns[k][j], 1), outs[k].type.shape + x.type.shape)
                 if columns[k][j] else P.full(0, outs[k].type.with_shape(outs[k].type.shape + x.type.shape))
                 for j, x in enumerate(ins)] for k in range(n_out)]
    for k, out in enumerate(outs):
        for i in range(out.type.size):
            cts = [_basis(o.type, i) if kk == k else P.full(0, o.type) for kk, o in enumerate(outs)]
            results = inline_block(derivative.body, list(values) + cts)[n_out:]
            for j, x in enumerate(ins):
                columns[k][j].append(P.reshape(results[j], (1, x.type.size)))
    return [[P.reshape(P.concatenate(columns[k][j], 0), outs[k].type.shape + x.type.shape)
             if columns[k][j] else P.full(0, x.type.with_shape(outs[k].type.shape + x.type.shape))
             for j, x in enumerate(ins)] for k, _ in enumerate(outs)]


def _basis(t, i: int) -> Value:
    array = np.zeros(t.size, t.dtype.numpy)
    array[i] = 1
    return numpy_api.as_value(array.reshape(t.shape))


def _as_float(value: Value, like: Value) -> Value:
    from jitgrad import primitives as P
    return value if value.type.dtype.is_float else P.convert(value, like.type.dtype)
