"""The reference interpreter: evaluates any IR function with each primitive's NumPy impl.

It is the oracle the tests compare compiled code against, so it is deliberately plain:
one loop, an environment, and a check that every result has the type the IR promised.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jitgrad.errors import JitgradError
from jitgrad.ir import Block, Function, Value


def evaluate(fn: Function, args: Sequence) -> list[np.ndarray]:
    """Run `fn` on NumPy arrays; returns its outputs as NumPy arrays."""
    if len(args) != len(fn.args):
        raise JitgradError(f"{fn.name} takes {len(fn.args)} arguments, got {len(args)}")
    env: dict[Value, np.ndarray] = {}
    for value, arg in zip(fn.args, args, strict=True):
        env[value] = np.asarray(arg, dtype=value.type.dtype.numpy).reshape(value.type.shape)
    return _run_block(fn.body, env)


def _run_block(block: Block, env: dict) -> list[np.ndarray]:
    for op in block.ops:
        operands = [env[v] for v in op.operands]
        if op.opdef.is_terminator:
            return operands
        rule = getattr(op.opdef, "impl", None)
        if rule is None:
            raise JitgradError(f"the interpreter has no rule for op {op.name!r}", op.loc)
        with np.errstate(all="ignore"):
            outs = rule(*operands, **op.attrs) if not op.regions else rule(op, operands, _run_block)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for value, out in zip(op.results, outs, strict=True):
            array = np.asarray(out)
            if array.shape != value.type.shape or array.dtype != value.type.dtype.numpy:
                raise JitgradError(f"{op.name}: reference impl returned {array.dtype}{list(array.shape)}, "
                                   f"the IR says {value.type}", op.loc)
            env[value] = array
    raise JitgradError("block has no terminator")
