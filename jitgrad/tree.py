"""Pytree utilities (JAX's `jax.tree` names): the structures jitgrad's transformations
accept as arguments and results — tuples, lists, dicts, None, namedtuples, and classes
registered with `register_pytree_node` or `register_dataclass`.

    >>> import jitgrad
    >>> leaves, treedef = jitgrad.tree.flatten({"w": 1.0, "b": (2.0, 3.0)})
    >>> jitgrad.tree.map(lambda x: x * 2, {"w": 1.0})
    {'w': 2.0}
"""
from __future__ import annotations

from jitgrad.tracing.pytree import (TreeDef, register_dataclass, register_pytree_node, tree_flatten,
                                    tree_leaves, tree_map, tree_structure, tree_unflatten)

flatten = tree_flatten
unflatten = tree_unflatten
leaves = tree_leaves
structure = tree_structure
map = tree_map  # noqa: A001

__all__ = ["TreeDef", "flatten", "unflatten", "leaves", "structure", "map", "register_pytree_node",
           "register_dataclass", "tree_flatten", "tree_unflatten", "tree_leaves", "tree_structure", "tree_map"]
