"""Pytrees: nested tuples, lists, dicts, namedtuples and registered classes (dataclasses,
or any class with `register_pytree_node`) of leaves, flattened to a list of leaves and a
hashable structure description (`TreeDef`), as in JAX. Dict keys are sorted so that two
dicts with the same keys have the same structure whatever their insertion order; keys of
different types (`{1: x, "a": y}`) are sorted by type name first.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from jitgrad.errors import PytreeError


@dataclass(frozen=True)
class TreeDef:
    """Structure of a pytree: `kind` is 'leaf', 'none', 'tuple', 'list', 'dict',
    'namedtuple' (`node` is the class) or 'custom' (`node` is the registered class and
    `keys` holds its flatten function's auxiliary data)."""

    kind: str
    children: tuple["TreeDef", ...] = ()
    keys: Any = ()
    node: Any = None

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
        if self.kind == "namedtuple":
            return f"{self.node.__name__}(" + ", ".join(
                f"{k}={c}" for k, c in zip(self.node._fields, self.children, strict=True)) + ")"
        if self.kind == "custom":
            return f"{self.node.__name__}[{self.keys!r}]({inner})"
        return f"({inner},)" if self.kind == "tuple" and len(self.children) == 1 else (
            f"({inner})" if self.kind == "tuple" else f"[{inner}]")


LEAF = TreeDef("leaf")


@dataclass(frozen=True)
class _NodeRules:
    flatten: Callable[[Any], tuple[Any, Any]]
    unflatten: Callable[[Any, Any], Any]


_REGISTRY: dict[type, _NodeRules] = {}


def register_pytree_node(cls: type, flatten: Callable, unflatten: Callable) -> type:
    """Make instances of `cls` pytree nodes (JAX's signature): `flatten(x)` returns
    (children, aux_data), with `aux_data` hashable (it becomes part of the compiled
    signature, like a static argument); `unflatten(aux_data, children)` rebuilds it."""
    if not isinstance(cls, type):
        raise PytreeError(f"register_pytree_node takes a class, got {cls!r}")
    if cls in (tuple, list, dict, type(None)):
        raise PytreeError(f"{cls.__name__} is already a pytree node")
    _REGISTRY[cls] = _NodeRules(flatten, unflatten)
    return cls


def register_dataclass(cls: type | None = None, data_fields=None, meta_fields=None):
    """Register a dataclass as a pytree node (usable as a decorator): `data_fields` are its
    children (default: every field not in `meta_fields`), `meta_fields` are static data
    that must be hashable and become part of the compiled signature."""
    if cls is None:
        return lambda c: register_dataclass(c, data_fields, meta_fields)
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise PytreeError(f"register_dataclass takes a dataclass, got {cls!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    meta = tuple(meta_fields or ())
    data = tuple(data_fields) if data_fields is not None else tuple(n for n in names if n not in meta)
    missing = set(names) - set(data) - set(meta)
    if missing:
        raise PytreeError(f"register_dataclass({cls.__name__}): fields {sorted(missing)} are neither data "
                          "nor meta fields")

    def flatten(x):
        return [getattr(x, n) for n in data], tuple(getattr(x, n) for n in meta)

    def unflatten(aux, children):
        return cls(**dict(zip(data, children, strict=True)), **dict(zip(meta, aux, strict=True)))
    return register_pytree_node(cls, flatten, unflatten)


def is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def tree_flatten(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> tuple[list[Any], TreeDef]:
    leaves: list[Any] = []
    return leaves, _flatten(tree, leaves, is_leaf)


def _flatten(tree, leaves, is_leaf=None) -> TreeDef:
    if is_leaf is not None and is_leaf(tree):
        leaves.append(tree)
        return LEAF
    if tree is None:
        return TreeDef("none")
    if is_namedtuple(tree):
        return TreeDef("namedtuple", tuple(_flatten(x, leaves, is_leaf) for x in tree), node=type(tree))
    if isinstance(tree, (tuple, list)):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        return TreeDef(kind, tuple(_flatten(x, leaves, is_leaf) for x in tree))
    if isinstance(tree, dict):
        keys = sorted_keys(tree)
        return TreeDef("dict", tuple(_flatten(tree[k], leaves, is_leaf) for k in keys), keys)
    rules = _REGISTRY.get(type(tree))
    if rules is not None:
        children, aux = rules.flatten(tree)
        try:
            hash(aux)
        except TypeError:
            raise PytreeError(f"the auxiliary data of a {type(tree).__name__} pytree node must be hashable "
                              f"(got {type(aux).__name__}): it is part of the compiled signature") from None
        return TreeDef("custom", tuple(_flatten(x, leaves, is_leaf) for x in children), aux, type(tree))
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
    if treedef.kind == "namedtuple":
        return treedef.node(*children)
    if treedef.kind == "custom":
        return _REGISTRY[treedef.node].unflatten(treedef.keys, children)
    return dict(zip(treedef.keys, children, strict=True))


def tree_leaves(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> list[Any]:
    return tree_flatten(tree, is_leaf)[0]


def tree_structure(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> TreeDef:
    return tree_flatten(tree, is_leaf)[1]


def tree_map(fn: Callable, tree: Any, *rest: Any, is_leaf: Callable[[Any], bool] | None = None) -> Any:
    """`fn` applied leaf by leaf; with several trees (of `tree`'s structure), to the
    leaves at the same place in each."""
    leaves, treedef = tree_flatten(tree, is_leaf)
    others = []
    for other in rest:
        other_leaves, other_def = tree_flatten(other, is_leaf)
        if other_def != treedef:
            raise PytreeError(f"tree_map: the trees have different structures: {treedef} and {other_def}")
        others.append(other_leaves)
    return tree_unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others, strict=True)])
