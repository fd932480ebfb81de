"""Pytrees: nested tuples, lists and dicts of leaves, flattened to a list of leaves and a
hashable structure description (`TreeDef`), as in JAX. Dict keys are sorted so that two
dicts with the same keys have the same structure whatever their insertion order; keys of
different types (`{1: x, "a": y}`) are sorted by type name first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from jitgrad.errors import PytreeError


@dataclass(frozen=True)
class TreeDef:
    """Structure of a pytree: `kind` is 'leaf', 'none', 'tuple', 'list' or 'dict'."""

    kind: str
    children: tuple["TreeDef", ...] = ()
    keys: tuple = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)

    def __str__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = ", ".join(str(c) for c in self.children)
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c}" for k, c in zip(self.keys, self.children, strict=True)) + "}"
        return f"({inner},)" if self.kind == "tuple" and len(self.children) == 1 else (
            f"({inner})" if self.kind == "tuple" else f"[{inner}]")


LEAF = TreeDef("leaf")


def tree_flatten(tree: Any) -> tuple[list[Any], TreeDef]:
    leaves: list[Any] = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree, leaves) -> TreeDef:
    if tree is None:
        return TreeDef("none")
    if isinstance(tree, (tuple, list)) and not hasattr(tree, "_fields"):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        return TreeDef(kind, tuple(_flatten(x, leaves) for x in tree))
    if isinstance(tree, dict):
        keys = sorted_keys(tree)
        return TreeDef("dict", tuple(_flatten(tree[k], leaves) for k in keys), keys)
    leaves.append(tree)
    return LEAF


def sorted_keys(mapping: dict) -> tuple:
    """The keys in a canonical order: sorted, or sorted by type name and then value when
    they are of several types."""
    try:
        return tuple(sorted(mapping))
    except TypeError:
        pass
    try:
        return tuple(sorted(mapping, key=lambda k: (type(k).__module__, type(k).__qualname__, k)))
    except TypeError:
        keys = ", ".join(repr(k) for k in list(mapping)[:6])
        raise PytreeError(f"the keys of a dict in the arguments or results cannot be ordered ({keys}): "
                          "use keys of one type with an order, such as strings") from None


def tree_unflatten(treedef: TreeDef, leaves) -> Any:
    iterator = iter(leaves)
    out = _unflatten(treedef, iterator)
    if next(iterator, _END) is not _END:
        raise ValueError("too many leaves for the tree structure")
    return out


_END = object()


def _unflatten(treedef: TreeDef, leaves):
    if treedef.kind == "leaf":
        return next(leaves)
    if treedef.kind == "none":
        return None
    children = [_unflatten(c, leaves) for c in treedef.children]
    if treedef.kind == "tuple":
        return tuple(children)
    if treedef.kind == "list":
        return children
    return dict(zip(treedef.keys, children, strict=True))


def tree_map(fn: Callable, tree: Any) -> Any:
    leaves, treedef = tree_flatten(tree)
    return tree_unflatten(treedef, [fn(x) for x in leaves])
