"""Plain Python control flow on traced values, converted to region ops (an AST transform
in the spirit of TensorFlow's AutoGraph).

A function whose `if` or `while` meets a traced value raises TracerBoolConversionError
while it is traced; `tracer.trace` then asks `converted` for a rewritten version and
traces that instead. Converting only after that error keeps every function that already
traces exactly as it was (no source parsing, no new frames) and costs one parse per
function object, cached.

The rewrite turns each `if`/`elif`/`else`, `while` and `for i in range(...)` statement
into a call of a runtime helper (`_jg_if`, `_jg_while`, `_jg_for_range`) given the
branches or the body as nested functions of the names they assign. Each helper looks at
the test when it runs: a concrete Python/NumPy value runs the branch or loop in Python
exactly as written (so Python-valued control flow still unrolls or selects at trace
time); a traced value emits `jitgrad.cond`, `jitgrad.while_loop` or `jitgrad.fori_loop`
with the assigned names as the carry. `break` and `continue` become flags carried by the
loop; `and`, `or` and `not` in a test become helpers that combine traced booleans.
Statements the rewrite cannot express (an early `return`, `yield`, `global` names, ...)
stay Python; their tests are wrapped so that a traced test raises AutographError naming
the file, line and construct.
"""
from __future__ import annotations

import __future__
import ast
import builtins
import copy
import dis
import inspect
import itertools
import linecache
import sys
import sysconfig
import textwrap
import types
import weakref
from typing import Callable

import numpy as np

from jitgrad.errors import AutographError, JitgradError
from jitgrad.ir.builder import current_builder
from jitgrad.primitives import Alias, Constant, Elementwise
from jitgrad.tracing import tracer
from jitgrad.tracing.tracer import Tracer, _display_path


# --------------------------------------------------------------------------- runtime helpers

class Undefined:
    """The value of a name that is not bound on some path through converted code (a name
    first assigned inside a traced loop, or in one branch of a traced `if`). Using it
    raises AutographError saying why."""

    def __init__(self, name: str, why: str):
        self.name, self.why = name, why

    def fail(self, *args, **kwargs):
        raise AutographError(f"variable {self.name!r} {self.why}")

    def __repr__(self) -> str:
        return f"<undefined {self.name}>"


for _dunder in ("add radd sub rsub mul rmul truediv rtruediv floordiv rfloordiv pow rpow matmul rmatmul mod rmod "
                "neg pos abs lt le gt ge eq ne bool float int index getitem len iter array array_ufunc "
                "array_function call getattr").split():
    setattr(Undefined, f"__{_dunder}__", Undefined.fail)
Undefined.__hash__ = object.__hash__


class _Unbound:
    """Marker for a name that has no value yet where a converted statement starts."""

    def __repr__(self) -> str:
        return "<unbound>"


UNBOUND = _Unbound()


def _control_flow():
    """jitgrad.control_flow, a layer above tracing: loaded when a traced test first
    needs a region op."""
    from jitgrad import control_flow
    return control_flow


def _is_traced(x) -> bool:
    return isinstance(x, Tracer)


def _where(loc) -> str:
    return f"{loc[0]}:{loc[1]}"


def _concrete_bool(x) -> bool:
    return bool(np.asarray(x))


def _scalar_test(test, construct: str, loc) -> None:
    """A traced test must be one value: NumPy's truth value of a larger array is an
    error too, and a size-1 array is refused rather than guessed at."""
    if test.shape != ():
        raise AutographError(f"{_where(loc)}: the test of {construct} is a traced array of shape {test.shape}; "
                             "it needs a single value: reduce it (np.all, np.any), select elementwise with "
                             "np.where, or pass the value as a static argument (jitgrad.jit(f, static_argnums=...))")


def _jg_bool(test, construct: str, loc):
    """The test of a statement left as Python: concrete values branch as usual, a traced
    one is refused with the construct and its line."""
    if _is_traced(test):
        raise AutographError(f"{_where(loc)}: {construct} on a traced value cannot be converted to jitgrad "
                             "control flow; compute the result with np.where, restructure the code "
                             "(e.g. assign a result variable instead of returning early), or pass the value "
                             "as a static argument (jitgrad.jit(f, static_argnums=...))")
    return test


def _jg_not(x):
    return np.logical_not(x) if _is_traced(x) else not x


def _jg_and(a, b_thunk):
    if not _is_traced(a):
        return b_thunk() if a else a
    return np.logical_and(a, b_thunk())


def _jg_or(a, b_thunk):
    if not _is_traced(a):
        return a if a else b_thunk()
    return np.logical_or(a, b_thunk())


def _as_carry(x):
    """Python scalars entering a traced loop's carry become NumPy scalars of their default
    dtype, so the body's results (strong dtypes) match the initial carry."""
    if isinstance(x, bool):
        return np.bool_(x)
    if isinstance(x, int):
        return np.int64(x)
    if isinstance(x, float):
        return np.float64(x)
    return x


def _split(values, names):
    """Positions of the names that have a value (the carry) and of those that do not."""
    bound = [i for i, v in enumerate(values) if not isinstance(v, (_Unbound, Undefined))]
    return bound


def _traced_results(out, values, names, bound, construct, loc):
    """Full result tuple from a traced construct's bound outputs; names it leaves
    unbound become Undefined with the reason."""
    result = list(values)
    for i, v in zip(bound, out, strict=True):
        result[i] = v
    for i, v in enumerate(values):
        if i not in bound:
            result[i] = Undefined(names[i], f"is assigned only inside the {construct} on a traced value at "
                                            f"{_where(loc)}, so it has no value after it; give it a value "
                                            "before that statement")
    return tuple(result)


class _OneBranchOnly(Exception):
    """A name a traced `if` would leave bound in one branch only (its position)."""


def _jg_if(test, true_fn, false_fn, values, names, loc):
    """`if test: ... else: ...` assigning `names` (their current `values` passed in). A
    traced test gives jitgrad.cond over the names bound on entry plus those both
    branches bind; a name bound by one branch only is undefined after the `if`."""
    if not _is_traced(test):
        return true_fn(*values) if _concrete_bool(test) else false_fn(*values)
    _scalar_test(test, "an `if`", loc)
    values = tuple(values)
    bound = _split(values, names)
    keep = list(range(len(names)))

    def branch(fn):
        def run(*carry):
            full = list(values)
            for i, v in zip(bound, carry, strict=True):
                full[i] = v
            out = fn(*full)
            for i in keep:
                if isinstance(out[i], (_Unbound, Undefined)):
                    raise _OneBranchOnly(i)
            return tuple(_as_carry(out[i]) for i in keep)
        return run
    while True:
        try:
            out = _control_flow().cond(test, branch(true_fn), branch(false_fn),
                                    *[_as_carry(values[i]) for i in bound])
            break
        except _OneBranchOnly as err:
            keep.remove(err.args[0])
    result = list(values)
    for i, v in zip(keep, out, strict=True):
        result[i] = v
    for i in range(len(names)):
        if i not in keep:
            result[i] = Undefined(names[i], f"is assigned in only one branch of the `if` on a traced value at "
                                            f"{_where(loc)}; assign it in both branches (or before the `if`)")
    return tuple(result)


def _jg_while(test_fn, body_fn, values, names, loc):
    """`while test: body` over the names the body assigns. Runs in Python while the test
    is concrete; the first traced test hands the loop, from the current values, to
    jitgrad.while_loop."""
    values = tuple(values)
    while True:
        test = test_fn(*values)
        if _is_traced(test):
            _scalar_test(test, "a `while` loop", loc)
            break
        if not _concrete_bool(test):
            return values
        values = tuple(body_fn(*values))
    bound = _split(values, names)

    def full(carry):
        out = list(values)
        for i, v in zip(bound, carry, strict=True):
            out[i] = v
        return out

    def body(carry):
        out = body_fn(*full(carry))
        return tuple(_as_carry(out[i]) for i in bound)
    out = _control_flow().while_loop(lambda carry: test_fn(*full(carry)), body,
                                  tuple(_as_carry(values[i]) for i in bound))
    return _traced_results(out, values, names, bound, "`while` loop", loc)


def _jg_range_args(args, loc):
    if len(args) == 1:
        return 0, args[0], 1
    if len(args) == 2:
        return args[0], args[1], 1
    if len(args) == 3:
        return args
    raise AutographError(f"{_where(loc)}: range() takes 1 to 3 arguments")


UNROLL_LIMIT = 64
"""A `for` over a Python `range` (or a traced array) longer than this becomes a loop
region when its body can be one; shorter loops unroll at trace time as written."""

_IN_PLACE_METHODS = frozenset(
    "append extend insert pop remove clear update add discard setdefault popitem sort reverse fill put "
    "resize itemset setfield setflags partition byteswap".split())


class _Rows:
    """What a converted `for` iterates when it may become a loop region: `length` items,
    item k computed by `item(k)` for a Python or a traced k (a traced array's rows, the
    tuples of zip/enumerate over traced arrays, the ints of a long Python range)."""

    def __init__(self, length: int, item: Callable):
        self.length, self.item = length, item


def _leading_rows(x):
    return isinstance(x, Tracer) and len(x.shape) >= 1


def _jg_iterable(fn, args):
    """The iterable of `for ... in fn(*args)`: zip/enumerate over traced arrays become
    indexable rows (so the loop can be a region); anything else is called as written."""
    if fn is builtins.zip and args and all(_leading_rows(a) for a in args):
        n = min(a.shape[0] for a in args)
        return _Rows(n, lambda k: tuple(a[k] for a in args))
    if fn is builtins.enumerate and 1 <= len(args) <= 2 and _leading_rows(args[0]) and \
            (len(args) == 1 or isinstance(args[1], int)):
        xs, start = args[0], (args[1] if len(args) == 2 else 0)
        return _Rows(xs.shape[0], lambda k: (start + k, xs[k]))
    return fn(*args)


def _receivers_allow_region(receivers_fn) -> bool:
    """The objects whose methods a loop body calls (those not bound by the body itself) are
    modules, or arrays called with methods that do not write in place: anything else (a
    list being appended to, a user object) could be mutated once per iteration, which a
    loop region, tracing the body once, would do once."""
    try:
        receivers = receivers_fn()
    except NameError:
        return False
    for value, method in receivers:
        if isinstance(value, types.ModuleType):
            continue
        if isinstance(value, (Tracer, np.ndarray, np.generic)) and method not in _IN_PLACE_METHODS:
            continue
        return False
    return True


def _python_rest(rows, start, test_fn, body_fn, values, names, loc):
    """Items `start`... of `rows` run in Python (unrolled)."""
    return _python_loop((rows.item(k) for k in range(start, rows.length)), test_fn, body_fn, values, names, loc)


def _python_loop(items, test_fn, body_fn, values, names, loc):
    """The loop run in Python over the iterator `items`, taken one item at a time as
    Python does. A `break` under a traced test puts every later iteration under a cond on
    the loop's flag."""
    for item in items:
        if test_fn is None:
            values = tuple(body_fn(item, *values))
            continue
        test = test_fn(*values)
        if _is_traced(test):
            values = _jg_if(test, lambda *v, item=item: body_fn(item, *v), lambda *v: v, values, names, loc)
        elif not _concrete_bool(test):
            break
        else:
            values = tuple(body_fn(item, *values))
    return values


def _fuses_whole(ops) -> bool:
    """Whether ops are all elementwise (or views and constants): unrolled, such a body
    becomes part of one fused loop over the data, which a loop region (a pass over the
    arrays per iteration) would only slow down."""
    return all(isinstance(op.opdef.lowering, (Elementwise, Alias, Constant)) or op.opdef.name in _FUSIBLE_OPS
               for op in ops)


_FUSIBLE_OPS = frozenset({"constant", "broadcast_in_dim", "convert"})


def _run_rows(rows, test_fn, body_fn, target_fn, values, names, n_targets, loc, region_ok,
              unroll_elementwise=False):
    """A converted `for` over `rows`. The first iteration runs in Python (so Python scalars
    take the types the body gives them); the rest becomes one fori_loop (or, with
    break/continue, a while_loop over a counter) when the body allows a region and every
    name it assigns then holds a traced value; otherwise the loop unrolls as written.
    With `unroll_elementwise`, a body of elementwise ops only unrolls too (`_fuses_whole`)."""
    values = tuple(values)
    if rows.length == 0:
        return values
    block = current_builder().block
    before = len(block.ops)
    values = tuple(body_fn(rows.item(0), *values))
    if rows.length == 1:
        return values
    if unroll_elementwise and _fuses_whole(block.ops[before:]):
        region_ok = False
    flags = [i for i, n in enumerate(names) if n.startswith("_jg_")]
    bound = [i for i in range(n_targets, len(names)) if not isinstance(values[i], (_Unbound, Undefined))]
    if not region_ok or any(not _is_traced(values[i]) for i in bound if i not in flags):
        return _python_rest(rows, 1, test_fn, body_fn, values, names, loc)
    start = values

    def full(carry):
        out = list(start)
        for i, v in zip(bound, carry, strict=True):
            out[i] = v
        return out

    def step(item, carry):
        out = body_fn(item, *full(carry))
        return tuple(_as_carry(out[i]) for i in bound)
    init = tuple(_as_carry(values[i]) for i in bound)
    try:
        if test_fn is None:
            out = _control_flow().fori_loop(1, rows.length, lambda k, carry: step(rows.item(k), carry), init)
            last = rows.item(rows.length - 1)
        else:
            def test(state):
                k, carry = state
                return np.logical_and(k < rows.length, test_fn(*full(carry)))

            def body(state):
                k, carry = state
                return k + 1, step(rows.item(k), carry)
            k, out = _control_flow().while_loop(test, body, (np.int64(1), init))
            last = rows.item(k - 1)
    except (JitgradError, TypeError, IndexError, ValueError):
        # the body needs a concrete index or item (a Python list indexed by it, a shape
        # computed from it): unroll as written
        return _python_rest(rows, 1, test_fn, body_fn, start, names, loc)
    result = list(start)
    for i, v in zip(bound, out, strict=True):
        result[i] = v
    result[:n_targets] = target_fn(last)
    return tuple(result)


def _jg_for_iter(iterable, test_fn, body_fn, target_fn, values, names, n_targets, loc, region_ok, receivers_fn):
    """`for <target> in iterable: body` (test_fn: the loop's `not break` flag, or None).
    A traced array (or zip/enumerate of traced arrays) iterates its leading axis as a loop
    region; any other iterable runs in Python as written."""
    if _leading_rows(iterable):
        xs = iterable
        iterable = _Rows(xs.shape[0], lambda k: xs[k])
    if isinstance(iterable, _Rows):
        return _run_rows(iterable, test_fn, body_fn, target_fn, values, names, n_targets, loc,
                         region_ok and _receivers_allow_region(receivers_fn))
    return _python_loop(iter(iterable), test_fn, body_fn, tuple(values), names, loc)


def _jg_for_range(range_args, body_fn, target_fn, values, names, n_targets, loc, region_ok, receivers_fn):
    """`for i in range(*range_args): body`; body_fn(i, *values) -> values. Concrete bounds
    loop in Python (a range longer than UNROLL_LIMIT as a fori_loop where the body allows
    it); traced bounds give jitgrad.fori_loop."""
    start, stop, step = _jg_range_args(range_args, loc)
    values = tuple(values)
    if not any(_is_traced(x) for x in (start, stop, step)):
        r = range(start, stop, step)
        if len(r) > UNROLL_LIMIT and region_ok and _receivers_allow_region(receivers_fn):
            return _run_rows(_Rows(len(r), lambda k: start + k * step), None, body_fn, target_fn, values,
                             names, n_targets, loc, True, unroll_elementwise=True)
        for i in r:
            values = tuple(body_fn(i, *values))
        return values
    if _is_traced(step):
        raise AutographError(f"{_where(loc)}: `for ... in range(...)` with a traced step is not supported; "
                             "make the step a Python int")
    step = int(step)
    if step == 0:
        raise AutographError(f"{_where(loc)}: range() step must not be zero")
    trips = (np.subtract(stop, start) + (step - 1 if step > 0 else step + 1)) // step
    bound = [i for i in _split(values, names) if i >= n_targets]

    def body(k, carry):
        full = list(values)
        for i, v in zip(bound, carry, strict=True):
            full[i] = v
        out = body_fn(start + k * step, *full)
        return tuple(_as_carry(out[i]) for i in bound)
    out = _control_flow().fori_loop(0, np.maximum(trips, 0), body, tuple(_as_carry(values[i]) for i in bound))
    result = list(_traced_results(out, values, names, bound, "`for` loop", loc))
    for i in range(n_targets):
        result[i] = Undefined(names[i], f"is the variable of the `for` loop over a traced range at {_where(loc)}, "
                                        "which has no value after the loop; keep the value in another variable")
    return tuple(result)


def _jg_ifexp(test, then_thunk, else_thunk, loc):
    """`a if test else b`: a concrete test evaluates one side as Python does; a traced one
    gives jitgrad.cond over the two sides."""
    if not _is_traced(test):
        return then_thunk() if _concrete_bool(test) else else_thunk()
    _scalar_test(test, "a conditional expression", loc)
    return _control_flow().cond(test, lambda: _as_carry(then_thunk()), lambda: _as_carry(else_thunk()))


def _jg_range_test(i, stop, step):
    """The test of a `for ... in range` loop rewritten as a while loop (it has break or
    continue)."""
    if not _is_traced(step):
        return i < stop if step > 0 else i > stop
    return np.where(step > 0, i < stop, i > stop)


def _jg_call(fn):
    """The function a converted function calls: user functions with control flow are
    converted too (so a helper's `if` on a traced value works as the caller's does);
    everything else (NumPy, jitgrad, the standard library, builtins, methods) as is."""
    if not _user_function(fn):
        return fn
    return convert(fn) or fn


HELPERS = {name: value for name, value in globals().items() if name.startswith("_jg_")}
HELPERS["_jg_UNBOUND"] = UNBOUND


# --------------------------------------------------------------------------- AST analysis

def _assigned_names(stmts) -> list[str]:
    """Names bound by `stmts` in the enclosing function's scope, in first-seen order
    (nested functions, lambdas and comprehensions have scopes of their own)."""
    found: dict[str, None] = {}

    class Visitor(ast.NodeVisitor):
        def visit_Name(self, node):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                found.setdefault(node.id)

        def visit_FunctionDef(self, node):
            found.setdefault(node.name)
            for d in node.decorator_list:
                self.visit(d)
        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_ClassDef(self, node):
            found.setdefault(node.name)

        def visit_Lambda(self, node):
            pass

        def _comprehension(self, node):
            pass
        visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

        def visit_alias(self, node):
            found.setdefault((node.asname or node.name).split(".")[0])

        def visit_ExceptHandler(self, node):
            if node.name:
                found.setdefault(node.name)
            self.generic_visit(node)
    v = Visitor()
    for s in stmts:
        v.visit(s)
    return list(found)


def _contains(stmts, kinds, stop_at=(ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)) -> bool:
    """Whether `stmts` contain a node of `kinds` outside nested function/class scopes."""
    todo = list(stmts)
    while todo:
        node = todo.pop()
        if isinstance(node, kinds):
            return True
        if isinstance(node, stop_at):
            continue
        todo.extend(ast.iter_child_nodes(node))
    return False


def _loop_exits(stmts) -> bool:
    """Whether `stmts` hold a break/continue of the loop they are the body of."""
    todo = list(stmts)
    loops = (ast.For, ast.While, ast.AsyncFor, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Break, ast.Continue)):
            return True
        if isinstance(node, loops):
            if isinstance(node, (ast.For, ast.While, ast.AsyncFor)):
                todo.extend(node.orelse)           # a loop's else belongs to the outer body
            continue
        todo.extend(ast.iter_child_nodes(node))
    return False


def _no_arguments() -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])


def _plain_target(target) -> bool:
    """A loop target the rewrite can assign: a name, or (nested) tuples/lists of names."""
    if isinstance(target, ast.Name):
        return True
    return isinstance(target, (ast.Tuple, ast.List)) and all(_plain_target(t) for t in target.elts)


def _region_body(stmts) -> tuple[bool, list[tuple[str, str]]]:
    """Whether a loop body may be traced once as a loop region instead of unrolled, and
    the (object name, method) pairs of the method calls on objects it does not bind (to
    be checked when it runs: modules and non-writing array methods only). A body with
    statement-level calls (side effects), stores into subscripts or attributes, exits, or
    definitions unrolls."""
    local = set(_assigned_names(stmts))
    receivers: list[tuple[str, str]] = []
    todo = list(stmts)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Expr,)) and not isinstance(node.value, ast.Constant):
            return False, []
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom, ast.Global,
                             ast.Nonlocal, ast.Delete, ast.With, ast.Try, ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef, ast.Import, ast.ImportFrom, ast.Await, ast.NamedExpr)):
            return False, []
        if isinstance(node, (ast.Subscript, ast.Attribute, ast.Starred)) and isinstance(node.ctx, ast.Store):
            return False, []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            root = node.func.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if not isinstance(root, ast.Name):
                return False, []
            if root.id not in local:
                receivers.append((root.id, node.func.attr))
        todo.extend(ast.iter_child_nodes(node))
    return True, receivers


# --------------------------------------------------------------------------- the rewrite

_UNSUPPORTED_INSIDE = (ast.Return, ast.Yield, ast.YieldFrom, ast.Global, ast.Nonlocal, ast.Await)


class _Converter(ast.NodeTransformer):
    """Rewrites the control-flow statements of one function body (nested functions too)."""

    def __init__(self, filename: str, line_offset: int):
        self.filename, self.line_offset = filename, line_offset
        self.counter = itertools.count()
        self.scope_globals: list[set[str]] = [set()]

    # ----- helpers to build code
    def _loc(self, node) -> ast.expr:
        return ast.Tuple([ast.Constant(self.filename), ast.Constant(node.lineno + self.line_offset)], ast.Load())

    @staticmethod
    def _call(name: str, *args) -> ast.Call:
        return ast.Call(ast.Name(name, ast.Load()), list(args), [])

    @staticmethod
    def _names_tuple(names, ctx) -> ast.Tuple:
        return ast.Tuple([ast.Name(n, ctx()) for n in names], ctx())

    def _capture_values(self, names) -> list[ast.stmt]:
        """`n = locals().get('n', _jg_UNBOUND)` for every name: names with no value yet
        get the marker so the helpers can pass them around."""
        stmts = []
        for n in names:
            stmts.append(ast.Assign(
                [ast.Name(n, ast.Store())],
                ast.Call(ast.Attribute(self._call("locals"), "get", ast.Load()),
                         [ast.Constant(n), ast.Name("_jg_UNBOUND", ast.Load())], [])))
        return stmts

    def _function(self, name: str, params, body, names) -> ast.FunctionDef:
        body = list(body) + [ast.Return(self._names_tuple(names, ast.Load))]
        args = ast.arguments(posonlyargs=[], args=[ast.arg(p) for p in params], vararg=None, kwonlyargs=[],
                             kw_defaults=[], kwarg=None, defaults=[])
        return ast.FunctionDef(name, args, body, [], None, type_params=[]) if hasattr(ast, "TypeAlias") else \
            ast.FunctionDef(name, args, body, [], None)

    def _test(self, expr):
        """`and`/`or`/`not` of a test rewritten so traced booleans combine."""
        class Bool(ast.NodeTransformer):
            def visit_BoolOp(inner, node):
                node = inner.generic_visit(node)
                helper = "_jg_and" if isinstance(node.op, ast.And) else "_jg_or"
                out = node.values[0]
                for v in node.values[1:]:
                    thunk = ast.Lambda(ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[],
                                                     kw_defaults=[], kwarg=None, defaults=[]), v)
                    out = self._call(helper, out, thunk)
                return out

            def visit_UnaryOp(inner, node):
                node = inner.generic_visit(node)
                if isinstance(node.op, ast.Not):
                    return self._call("_jg_not", node.operand)
                return node
        return Bool().visit(expr)

    def _guard(self, node, construct: str):
        """Leave `node` as Python, its test refusing traced values."""
        node.test = self._call("_jg_bool", node.test, ast.Constant(construct), self._loc(node))
        return node

    def _blocked(self, stmts) -> str | None:
        if _contains(stmts, _UNSUPPORTED_INSIDE):
            for kind, text in ((ast.Return, "a `return`"), ((ast.Yield, ast.YieldFrom), "`yield`"),
                               ((ast.Global, ast.Nonlocal), "a `global`/`nonlocal` name"),
                               (ast.Await, "`await`")):
                if _contains(stmts, kind):
                    return text
        names = _assigned_names(stmts)
        if any(n in self.scope_globals[-1] for n in names):
            return "an assignment to a `global`/`nonlocal` name"
        if _contains(stmts, (ast.Delete,)):
            return "`del`"
        return None

    # ----- scopes
    def visit_FunctionDef(self, node):
        declared = {n for s in ast.walk(node) if isinstance(s, (ast.Global, ast.Nonlocal)) for n in s.names}
        self.scope_globals.append(declared)
        if any(isinstance(s, ast.If) and _contains([s], (ast.Return,)) for s in node.body) and \
                not _contains(node.body, (ast.Yield, ast.YieldFrom)):
            folded = _fold_returns(node.body)
            if folded is not None:
                node.body = [*folded, ast.copy_location(ast.Return(ast.Name(_RESULT, ast.Load())), node.body[-1])]
        node.body = self._block(node.body)
        self.scope_globals.pop()
        return node
    visit_AsyncFunctionDef = visit_FunctionDef

    def _block(self, stmts):
        out = []
        for s in stmts:
            r = self.visit(s)
            out.extend(r if isinstance(r, list) else [r])
        return out

    # ----- if
    def visit_If(self, node):
        branches = node.body + node.orelse
        blocked = self._blocked(branches)
        if blocked or _loop_exits(branches):
            node.body, node.orelse = self._block(node.body), self._block(node.orelse)
            what = blocked or "`break`/`continue`"
            return self._guard(node, f"an `if` containing {what}")
        k = next(self.counter)
        names = _assigned_names(branches)
        true_fn, false_fn = f"_jg_then_{k}", f"_jg_else_{k}"
        body, orelse = self._block(node.body), self._block(node.orelse) or [ast.Pass()]
        call = self._call("_jg_if", self._test(node.test), ast.Name(true_fn, ast.Load()),
                          ast.Name(false_fn, ast.Load()), self._names_tuple(names, ast.Load),
                          ast.Tuple([ast.Constant(n) for n in names], ast.Load()), self._loc(node))
        assign = ast.Assign([self._names_tuple(names, ast.Store)], call) if names else ast.Expr(call)
        return [*self._capture_values(names), self._function(true_fn, names, body, names),
                self._function(false_fn, names, orelse, names), assign]

    # ----- loops
    def _lower_exits(self, stmts, brk: str, cont: str):
        """Rewrite break/continue of this loop into flag assignments; the statements after
        one that may have set a flag run under `if not (brk or cont)`."""
        out = []
        for i, s in enumerate(stmts):
            if isinstance(s, ast.Break):
                out.append(ast.Assign([ast.Name(brk, ast.Store())], ast.Constant(True)))
                return out
            if isinstance(s, ast.Continue):
                out.append(ast.Assign([ast.Name(cont, ast.Store())], ast.Constant(True)))
                return out
            if isinstance(s, ast.If) and _loop_exits([s]):
                s.body = self._lower_exits(s.body, brk, cont)
                s.orelse = self._lower_exits(s.orelse, brk, cont)
                out.append(s)
                rest = self._lower_exits(stmts[i + 1:], brk, cont)
                if rest:
                    test = ast.UnaryOp(ast.Not(), ast.BoolOp(ast.Or(), [ast.Name(brk, ast.Load()),
                                                                        ast.Name(cont, ast.Load())]))
                    out.append(ast.copy_location(ast.If(test, rest, []), stmts[i + 1]))
                return out
            if isinstance(s, (ast.With, ast.Try)) and _loop_exits([s]):
                raise _Unconvertible("`break`/`continue` inside `with`/`try`")
            out.append(s)
        return out

    def visit_While(self, node):
        blocked = self._blocked(node.body) or ("a `while ... else`" if node.orelse else None)
        if blocked:
            node.body, node.orelse = self._block(node.body), self._block(node.orelse)
            return self._guard(node, f"a `while` loop containing {blocked}")
        k = next(self.counter)
        brk, cont = f"_jg_break_{k}", f"_jg_continue_{k}"
        test = node.test
        body = node.body
        pre = []
        if _loop_exits(body):
            try:
                body = self._lower_exits(body, brk, cont)
            except _Unconvertible as err:
                node.body = self._block(node.body)
                return self._guard(node, f"a `while` loop with {err}")
            body = [ast.Assign([ast.Name(cont, ast.Store())], ast.Constant(False)), *body]
            test = ast.BoolOp(ast.And(), [ast.UnaryOp(ast.Not(), ast.Name(brk, ast.Load())), test])
            pre = [ast.Assign([ast.Name(brk, ast.Store())], ast.Constant(False)),
                   ast.Assign([ast.Name(cont, ast.Store())], ast.Constant(False))]
            for s in (*pre, *body):
                ast.copy_location(s, node)
        names = _assigned_names(body)
        for n in (brk, cont):
            if pre and n not in names:
                names.append(n)
        body = self._block(body)
        test_fn, body_fn = f"_jg_test_{k}", f"_jg_body_{k}"
        test_def = self._function(test_fn, names, [], names)
        test_def.body = [ast.Return(self._test(test))]
        call = self._call("_jg_while", ast.Name(test_fn, ast.Load()), ast.Name(body_fn, ast.Load()),
                          self._names_tuple(names, ast.Load), ast.Tuple([ast.Constant(n) for n in names], ast.Load()),
                          self._loc(node))
        return [*pre, *self._capture_values(names), test_def, self._function(body_fn, names, body, names),
                ast.Assign([self._names_tuple(names, ast.Store)], call) if names else ast.Expr(call)]

    def visit_For(self, node):
        is_range = (isinstance(node.iter, ast.Call) and isinstance(node.iter.func, ast.Name)
                    and node.iter.func.id == "range" and not node.iter.keywords
                    and 1 <= len(node.iter.args) <= 3 and not any(isinstance(a, ast.Starred) for a in node.iter.args))
        blocked = (self._blocked(node.body) or ("a `for ... else`" if node.orelse else None)
                   or (None if _plain_target(node.target) else "a loop target that is not a name or a tuple of names"))
        if blocked:
            # runs in Python as written (a traced array iterates its leading axis, a
            # static length); its body is still converted
            if is_range:
                node.iter = self._call("_jg_range_guard", ast.Tuple(node.iter.args, ast.Load()),
                                       ast.Constant(f"a `for ... in range` loop containing {blocked}"),
                                       self._loc(node))
            node.body, node.orelse = self._block(node.body), self._block(node.orelse)
            return node
        k = next(self.counter)
        if is_range and isinstance(node.target, ast.Name) and _loop_exits(node.body):
            return self._range_as_while(node, k)
        item, brk, cont = f"_jg_item_{k}", f"_jg_break_{k}", f"_jg_continue_{k}"
        region_ok, receivers = _region_body(node.body)
        unpack = ast.copy_location(ast.Assign([node.target], ast.Name(item, ast.Load())), node)
        targets = _assigned_names([unpack])
        body, pre, test_def = list(node.body), [], None
        if _loop_exits(body):
            try:
                body = self._lower_exits(body, brk, cont)
            except _Unconvertible:
                node.iter, node.body = self.visit(node.iter), self._block(node.body)
                return node
            body = [ast.Assign([ast.Name(cont, ast.Store())], ast.Constant(False)), *body]
            pre = [ast.Assign([ast.Name(brk, ast.Store())], ast.Constant(False)),
                   ast.Assign([ast.Name(cont, ast.Store())], ast.Constant(False))]
            for s in (*pre, *body):
                ast.copy_location(s, node)
        names = _assigned_names([unpack, *body])
        for n in (brk, cont):
            if pre and n not in names:
                names.append(n)
        body_fn, target_fn, test_fn = f"_jg_for_{k}", f"_jg_target_{k}", f"_jg_test_{k}"
        body = [unpack, *self._block(body)]
        target_def = self._function(target_fn, [item], [copy.deepcopy(unpack)], targets)
        receivers_fn = ast.Lambda(_no_arguments(), ast.Tuple(
            [ast.Tuple([ast.Name(root, ast.Load()), ast.Constant(method)], ast.Load()) for root, method in receivers],
            ast.Load()))
        common = [ast.Name(body_fn, ast.Load()), ast.Name(target_fn, ast.Load()), self._names_tuple(names, ast.Load),
                  ast.Tuple([ast.Constant(n) for n in names], ast.Load()), ast.Constant(len(targets)),
                  self._loc(node), ast.Constant(region_ok), receivers_fn]
        defs = [*pre, *self._capture_values(names), target_def, self._function(body_fn, [item, *names], body, names)]
        if is_range and not pre:
            call = self._call("_jg_for_range", ast.Tuple(node.iter.args, ast.Load()), *common)
        else:
            if pre:
                test_def = self._function(test_fn, names, [], names)
                test_def.body = [ast.Return(self._call("_jg_not", ast.Name(brk, ast.Load())))]
                defs.append(test_def)
            call = self._call("_jg_for_iter", self._iterable(node.iter),
                              ast.Name(test_fn, ast.Load()) if pre else ast.Constant(None), *common)
        return [*defs, ast.Assign([self._names_tuple(names, ast.Store)], call)]

    def _iterable(self, expr):
        """The iterable of a converted `for`: zip(...)/enumerate(...) go through
        `_jg_iterable`, which sees whether their arguments are traced arrays."""
        if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in ("zip", "enumerate")
                and not expr.keywords and not any(isinstance(a, ast.Starred) for a in expr.args)):
            args = [self.visit(a) for a in expr.args]
            return self._call("_jg_iterable", expr.func, ast.Tuple(args, ast.Load()))
        return self.visit(expr)

    def _range_as_while(self, node, k):
        """A `for` over `range` with break/continue, as a while loop over a hidden counter
        with the flags in its carry."""
        target = node.target.id
        counter, stop, step = f"_jg_i_{k}", f"_jg_stop_{k}", f"_jg_step_{k}"
        args = node.iter.args
        start_e, stop_e, step_e = ((ast.Constant(0), args[0], ast.Constant(1)) if len(args) == 1 else
                                   (args[0], args[1], ast.Constant(1)) if len(args) == 2 else args)
        setup = [ast.Assign([ast.Name(counter, ast.Store())], start_e),
                 ast.Assign([ast.Name(stop, ast.Store())], stop_e),
                 ast.Assign([ast.Name(step, ast.Store())], step_e)]
        test = self._call("_jg_range_test", ast.Name(counter, ast.Load()), ast.Name(stop, ast.Load()),
                          ast.Name(step, ast.Load()))
        body = [ast.Assign([ast.Name(target, ast.Store())], ast.Name(counter, ast.Load())),
                ast.Assign([ast.Name(counter, ast.Store())],      # not +=: a traced counter is an array
                           ast.BinOp(ast.Name(counter, ast.Load()), ast.Add(), ast.Name(step, ast.Load()))),
                *node.body]
        loop = ast.While(test, body, [])
        for s in [*setup, loop, *body]:
            ast.copy_location(s, node)
        ast.fix_missing_locations(loop)
        return [*setup, *self._flatten(self.visit_While(loop))]

    def visit_IfExp(self, node):
        """`a if test else b` -> `_jg_ifexp(test, lambda: a, lambda: b)`: a traced test
        gives a cond over the two sides."""
        node = self.generic_visit(node)
        return self._call("_jg_ifexp", self._test(node.test), ast.Lambda(_no_arguments(), node.body),
                          ast.Lambda(_no_arguments(), node.orelse), self._loc(node))

    def visit_Call(self, node):
        node = self.generic_visit(node)
        if isinstance(node.func, ast.Name) and (node.func.id.startswith("_jg_") or node.func.id in _BUILTIN_NAMES):
            return node
        node.func = self._call("_jg_call", node.func)
        return node

    @staticmethod
    def _flatten(r):
        return r if isinstance(r, list) else [r]


_RESULT = "_jg_result"
_FUTURE_FLAGS = sum(getattr(__future__, name).compiler_flag for name in __future__.all_feature_names)


def _fold_returns(stmts):
    """The statements with every `return` turned into an assignment to `_jg_result`, the
    code after an `if` that may return moved into its branches that do not, so each path
    ends in one assignment (an early `return` under a traced test becomes a cond over the
    result). None where a `return` sits inside a loop, `with` or `try`."""
    out = []
    for i, s in enumerate(stmts):
        if isinstance(s, ast.Return):
            value = s.value if s.value is not None else ast.Constant(None)
            out.append(ast.copy_location(ast.Assign([ast.Name(_RESULT, ast.Store())], value), s))
            return out
        if isinstance(s, ast.If) and _contains([s], (ast.Return,)):
            rest = stmts[i + 1:]
            body = _fold_returns(s.body + copy.deepcopy(rest))
            orelse = _fold_returns(s.orelse + copy.deepcopy(rest))
            if body is None or orelse is None:
                return None
            out.append(ast.copy_location(ast.If(s.test, body, orelse), s))
            return out
        if _contains([s], (ast.Return,)):
            return None
        out.append(s)
    anchor = stmts[-1] if stmts else None
    fall = ast.Assign([ast.Name(_RESULT, ast.Store())], ast.Constant(None))
    out.append(ast.copy_location(fall, anchor) if anchor is not None else fall)
    return out


class _Unconvertible(Exception):
    pass


def _jg_range_guard(args, construct, loc):
    if any(_is_traced(a) for a in args):
        raise AutographError(f"{_where(loc)}: {construct} has a traced bound and cannot be converted to "
                             "jitgrad control flow; restructure it (a result variable and `break` instead of "
                             "`return`), or pass the bound as a static argument (jitgrad.jit(f, static_argnums=...))")
    return range(*args)


HELPERS["_jg_range_guard"] = _jg_range_guard


# --------------------------------------------------------------------------- conversion

_PACKAGE_DIR = __file__.rsplit("/tracing/", 1)[0] + "/"
_CONVERTED: "weakref.WeakKeyDictionary[Callable, Callable]" = weakref.WeakKeyDictionary()


def convertible(fn) -> bool:
    """Whether `fn` is a Python function whose source can be rewritten (not a lambda,
    a builtin, or a function defined where its source is not available)."""
    return (isinstance(fn, types.FunctionType)
            and not fn.__code__.co_filename.startswith(_PACKAGE_DIR)
            and not fn.__code__.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR))


_LIBRARY_DIRS = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})
_BUILTIN_NAMES = frozenset(dir(builtins))
_HAS_CONTROL_FLOW: "weakref.WeakKeyDictionary[types.CodeType, bool]" = weakref.WeakKeyDictionary()


def _user_function(fn) -> bool:
    """A plain function of the user's code with control flow in it (checked on its
    bytecode's line table cheaply: any jump), outside jitgrad and installed libraries."""
    if not convertible(fn) or is_converted(fn):
        return is_converted(fn)
    filename = fn.__code__.co_filename
    if filename.startswith(_LIBRARY_DIRS) or filename.startswith("<"):
        return False
    code = fn.__code__
    if code not in _HAS_CONTROL_FLOW:
        _HAS_CONTROL_FLOW[code] = any(i.opname.startswith(("POP_JUMP", "JUMP", "FOR_ITER"))
                                      for i in dis.get_instructions(code))
    return _HAS_CONTROL_FLOW[code]


_HAS_FOR_LOOP: "weakref.WeakKeyDictionary[types.CodeType, bool]" = weakref.WeakKeyDictionary()


def _has_for_loop(fn, depth: int = 2) -> bool:
    """A user function with a `for` loop (FOR_ITER in its bytecode), or one calling such a
    function by a global or closed-over name (`depth` calls deep): converted before its
    first trace, since a loop over a traced array or a long range raises nothing that
    would ask for the conversion, yet should become a loop region."""
    if not convertible(fn) or fn.__code__.co_filename.startswith(_LIBRARY_DIRS) or \
            fn.__code__.co_filename.startswith("<"):
        return False
    code = fn.__code__
    if code not in _HAS_FOR_LOOP:
        _HAS_FOR_LOOP[code] = any(i.opname == "FOR_ITER" for i in dis.get_instructions(code))
    if _HAS_FOR_LOOP[code] or depth == 0:
        return _HAS_FOR_LOOP[code]
    callees = [fn.__globals__.get(name) for name in code.co_names]
    for cell in fn.__closure__ or ():
        try:
            callees.append(cell.cell_contents)
        except ValueError:
            pass
    return any(isinstance(c, types.FunctionType) and c is not fn and _has_for_loop(c, depth - 1) for c in callees)


def active(fn):
    """The function to run in place of `fn`: its conversion, made now for a function with
    a `for` loop, otherwise once its tracing asked for one."""
    try:
        converted = _CONVERTED.get(fn)
    except TypeError:
        return fn
    if converted is None and _has_for_loop(fn):
        converted = convert(fn)
    return converted or fn


def is_converted(fn) -> bool:
    try:
        return fn in _CONVERTED
    except TypeError:
        return False


def convert(fn: Callable) -> Callable | None:
    """The rewritten `fn` (cached per function object), or None when `fn` has no source
    to rewrite; later calls of `active(fn)` return it."""
    if is_converted(fn):
        return _CONVERTED[fn]
    if not convertible(fn):
        return None
    try:
        lines, first = inspect.getsourcelines(fn)
        filename = inspect.getsourcefile(fn) or fn.__code__.co_filename
    except (OSError, TypeError):
        return None
    source = textwrap.dedent("".join(lines))
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    func = _lambda_as_def(tree, fn) if fn.__name__ == "<lambda>" else tree.body[0]
    if not isinstance(func, ast.FunctionDef):
        return None
    func.decorator_list = []                       # the decorators already ran (e.g. jit itself)
    if not _source_matches_code(fn, filename):
        return None
    converted = _Converter(_display_path(filename), first - 1).visit(func)
    module = ast.Module([converted], [])
    ast.fix_missing_locations(module)
    ast.increment_lineno(module, first - 1)
    code = compile(module, filename, "exec", flags=fn.__code__.co_flags & _FUTURE_FLAGS, dont_inherit=True)
    freevars = fn.__code__.co_freevars
    if freevars:
        # rebuild the closure: the function is defined inside a factory taking its free
        # variables as parameters, then given the original cells
        factory = ast.FunctionDef("_jg_factory", ast.arguments(posonlyargs=[], args=[ast.arg(n) for n in freevars],
                                                               vararg=None, kwonlyargs=[], kw_defaults=[],
                                                               kwarg=None, defaults=[]),
                                  [converted, ast.Return(ast.Name(func.name, ast.Load()))], [], None,
                                  **({"type_params": []} if hasattr(ast, "TypeAlias") else {}))
        module = ast.Module([factory], [])
        ast.fix_missing_locations(module)
        code = compile(module, filename, "exec", flags=fn.__code__.co_flags & _FUTURE_FLAGS, dont_inherit=True)
    glob = _globals_with_helpers(fn.__globals__)
    namespace: dict = {}
    exec(code, glob, namespace)
    if freevars:
        inner = namespace["_jg_factory"](*([None] * len(freevars))).__code__
        cells = dict(zip(freevars, fn.__closure__, strict=True))
        new = types.FunctionType(inner, glob, fn.__name__, fn.__defaults__,
                                 tuple(cells[n] for n in inner.co_freevars))
    else:
        new = types.FunctionType(namespace[func.name].__code__, glob, fn.__name__, fn.__defaults__, None)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__dict__.update(fn.__dict__)
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__wrapped_autograph__ = fn
    _CONVERTED[fn] = new
    return new


def _source_matches_code(fn: Callable, filename: str) -> bool:
    """Whether the source file `fn` came from, as it is now on disk, still compiles to the
    code `fn` runs. A file edited after it was imported would otherwise be converted from
    the new text while the program runs the old one: a different function, silently. The
    whole file is compiled, so that names, closures and imports compile as they did."""
    try:
        module = compile("".join(linecache.getlines(filename)), filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    want, target = _code_shape(fn.__code__), fn.__code__
    pending = [module]
    while pending:
        code = pending.pop()
        if (code.co_name == target.co_name and code.co_firstlineno == target.co_firstlineno
                and _code_shape(code) == want):
            return True
        pending.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return False


def _code_shape(code: types.CodeType) -> tuple:
    """The bytecode, names and constants of `code` and of the functions nested in it:
    what decides what it computes (not its line numbers or its name)."""
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
            tuple(_code_shape(c) if isinstance(c, types.CodeType) else (type(c), repr(c)) for c in code.co_consts))


def _lambda_as_def(tree, fn):
    """The lambda `fn` found in the source of its first line, as `def _jg_lambda(...):
    return <body>`; None unless exactly one lambda there has its parameter names."""
    code = fn.__code__
    params = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    found = [node for node in ast.walk(tree) if isinstance(node, ast.Lambda) and node.lineno == 1
             and tuple(a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)) == params]
    if len(found) != 1:
        return None
    node = found[0]
    body = [ast.copy_location(ast.Return(node.body), node.body)]
    func = ast.FunctionDef("_jg_lambda", node.args, body, [], None,
                           **({"type_params": []} if hasattr(ast, "TypeAlias") else {}))
    return ast.copy_location(func, node)


def _globals_with_helpers(glob: dict) -> dict:
    """The function's module globals with the helpers added. The helpers' names start
    with `_jg_`, so they do not clash with user names; adding them to the module's own
    dictionary keeps globals defined or changed later visible to the converted code."""
    for name, value in HELPERS.items():
        glob.setdefault(name, value)
    return glob


tracer.CONTROL_FLOW_CONVERTER[:] = [sys.modules[__name__]]
