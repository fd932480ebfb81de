"""What the rules of custom_jvp and custom_vjp calls need to run the user's Python rule
functions: IR values as traced arrays and back, and pytrees.

The user's `jvp`, `fwd` and `bwd` functions are NumPy code that takes and returns
pytrees of traced arrays, so the call ops' rules (jitgrad.primitives.calls) trace them.
Tracing is `jitgrad.tracing`, the layer above the op records, and that layer imports
this one: so it installs its `Tracer`, `as_value` and pytree functions here when it is
imported (jitgrad/tracing/__init__.py), and the rules reach them through the functions
below. A custom rule only exists once `jitgrad.custom` (which imports jitgrad.tracing)
has made one, so they are installed by the time a rule runs; before that, the functions
raise `MissingRuleError` naming what is missing.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from jitgrad.errors import MissingRuleError
from jitgrad.ir import Value

_NEEDED = ("tracer", "as_value", "tree_flatten", "tree_unflatten")
_installed: dict[str, Callable] = {}


def install(**functions: Callable) -> None:
    """Give the rules tracing's `tracer` (the Tracer class), `as_value`, `tree_flatten`
    and `tree_unflatten` (jitgrad.tracing calls this once)."""
    unknown = sorted(set(functions) - set(_NEEDED))
    if unknown:
        raise ValueError(f"the custom rules need no {', '.join(unknown)}; they need {', '.join(_NEEDED)}")
    _installed.update(functions)


def _get(name: str) -> Callable:
    try:
        return _installed[name]
    except KeyError:
        raise MissingRuleError(f"running a custom_jvp/custom_vjp rule needs tracing's {name}, which "
                               "jitgrad.tracing provides: import jitgrad.tracing first", slot=name) from None


def traced(values: Sequence[Value]) -> tuple:
    """The values as traced arrays, the arguments of a user's rule function."""
    tracer = _get("tracer")
    return tuple(tracer(v) for v in values)


def value_of(leaf: Any) -> Value:
    """The IR value of a leaf a user's rule returned: a traced array's value, or a
    constant for an array or a Python number."""
    tracer = _get("tracer")
    return leaf.value if isinstance(leaf, tracer) else _get("as_value")(leaf)


def tree_flatten(tree: Any) -> tuple[list, Any]:
    """The leaves of a pytree and its structure (jitgrad.tracing.pytree.tree_flatten)."""
    return _get("tree_flatten")(tree)


def tree_unflatten(treedef: Any, leaves: Sequence) -> Any:
    """The pytree of `treedef` with these leaves (jitgrad.tracing.pytree.tree_unflatten)."""
    return _get("tree_unflatten")(treedef, leaves)
