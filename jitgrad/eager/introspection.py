"""What a GradientTape recorded, for reading: `TapeNode`, TenfloweRS's computation-graph
node with its operation metadata.

The tape's records keep only what the replay needs (the callable, its arguments with
tape nodes by number, the keywords), not intermediate values or source lines, so that
recording stays cheap. `tape_nodes` rebuilds the rest on demand: shapes and dtypes by
evaluating the records again with NumPy from the tape's leaves, and source lines from
the sites a tape made with `record_sites=True` keeps.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from .guards import _site_location
from .records import BINARY_OPERATORS, UNARY_OPERATORS, _Ref


@dataclass(frozen=True)
class TapeNode:
    """One recorded operation: its output node number(s), the operation's name, its
    inputs (a node number, or None for a constant array), their shapes and dtypes, its
    outputs' shapes and dtypes, and the user's source line ("file:line" or None when the
    tape does not keep them)."""

    node: int | tuple
    op: str
    input_nodes: tuple
    input_shapes: tuple
    input_dtypes: tuple
    output_shapes: tuple
    output_dtypes: tuple
    location: str | None

    @property
    def output_shape(self) -> tuple:
        return self.output_shapes[0]

    @property
    def output_dtype(self) -> np.dtype:
        return self.output_dtypes[0]

    def __str__(self) -> str:
        def typed(shape, dtype):
            return f"{dtype}{list(shape)}"
        ins = ", ".join(("const " if n is None else f"%{n}: ") + typed(s, d)
                        for n, s, d in zip(self.input_nodes, self.input_shapes, self.input_dtypes, strict=True))
        nodes = self.node if type(self.node) is tuple else (self.node,)
        outs = ", ".join(f"%{n}: {typed(s, d)}"
                         for n, s, d in zip(nodes, self.output_shapes, self.output_dtypes, strict=True))
        where = f"  at {self.location}" if self.location else ""
        return f"{outs} = {self.op}({ins}){where}"


def operation_name(fn) -> str:
    """A readable name for a recorded callable: the operator's name for Python operators
    (`mul`), the ufunc's or function's NumPy name (`multiply`, `sum`; a method is named
    as its function: `x.sum()` is `sum`), `gradient` for the recorded gradient call of a
    tape."""
    for table in (BINARY_OPERATORS, UNARY_OPERATORS):
        for name, op in table.items():
            if op is fn:
                return name
    if fn is operator.getitem:
        return "getitem"
    if getattr(fn, "__name__", None) == "replay" or type(fn).__name__ in ("Compiled", "_Grad"):
        return "gradient"
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return name.removeprefix("ndarray.")


def _nodes_in(args, into: list) -> None:
    for a in args:
        cls = type(a)
        if cls is _Ref:
            into.append(int(a))
        elif cls is tuple or cls is list:
            _nodes_in(a, into)
        elif cls is dict:
            _nodes_in(list(a.values()), into)
        elif isinstance(a, (np.ndarray, np.generic)):
            into.append(a)


def _fill(template, env: dict):
    cls = type(template)
    if cls is _Ref:
        return env[int(template)]
    if cls is tuple or cls is list:
        return cls(_fill(x, env) for x in template)
    if cls is dict:
        return {k: _fill(v, env) for k, v in template.items()}
    return template


def tape_nodes(tape, watched: set | None) -> list[TapeNode]:
    """The TapeNodes of `tape`'s records (only those whose outputs are in `watched`,
    when given: what a nested tape sees)."""
    env: dict = dict(tape._leaves)
    nodes = []
    for fn, args, kwargs, out in tape._records:
        try:
            result = fn(*_fill(args, env), **_fill(kwargs, env)) if kwargs else fn(*_fill(args, env))
        except KeyError:            # reads a node recorded before tape.reset()
            continue
        outs = out if type(out) is tuple else (out,)
        results = result if type(out) is tuple else (result,)
        for o, r in zip(outs, results, strict=True):
            env[o] = r
        if watched is not None and watched.isdisjoint(outs):
            continue
        inputs: list = []
        _nodes_in(args, inputs)
        if kwargs:
            _nodes_in(list(kwargs.values()), inputs)
        values = [env[i] if type(i) is int else i for i in inputs]
        site = tape._sites.get(outs[0]) if tape._sites is not None else None
        nodes.append(TapeNode(
            node=out, op=operation_name(fn),
            input_nodes=tuple(i if type(i) is int else None for i in inputs),
            input_shapes=tuple(np.shape(v) for v in values),
            input_dtypes=tuple(np.asarray(v).dtype for v in values),
            output_shapes=tuple(np.shape(r) for r in results),
            output_dtypes=tuple(np.asarray(r).dtype for r in results),
            location=None if site is None else str(_site_location(site))))
    return nodes
