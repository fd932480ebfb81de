"""The reference interpreter: evaluates any IR function with each primitive's NumPy impl.

It is the oracle the tests compare compiled code against, so it is deliberately plain:
the IR's one driver (`jitgrad.ir.rewrite.Evaluator`: an environment, one loop, nested
regions by recursion) with each op's `impl` as the default rule, and a check that every
result has the type the IR promised.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jitgrad.errors import JitgradError
from jitgrad.ir import Block, Function, Operation
from jitgrad.ir.rewrite import Evaluator


class ReferenceInterpreter(Evaluator):
    """The driver with NumPy arrays in its env: the default rule runs the op's `impl`
    (or its `impl_op`, which gets the op, its operands and a `run_block(block, env)` that
    evaluates a nested block by this same interpreter: call ops) and checks every result
    against the type the IR promised."""

    def default_rule(self, op: Operation, inputs: list) -> list[np.ndarray]:
        impl_op = op.opdef.impl_op
        rule = impl_op if impl_op is not None else op.rule("impl")
        with np.errstate(all="ignore"):
            outs = rule(op, inputs, self._run_nested) if impl_op is not None else rule(*inputs, **op.attrs)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        if len(outs) != len(op.results):
            raise JitgradError(f"{op.name}: reference impl returned {len(outs)} results, the IR has "
                               f"{len(op.results)}", op.loc)
        arrays = [np.asarray(out) for out in outs]
        for value, array in zip(op.results, arrays, strict=True):
            if array.shape != value.type.shape or array.dtype != value.type.dtype.numpy:
                raise JitgradError(f"{op.name}: reference impl returned {array.dtype}{list(array.shape)}, "
                                   f"the IR says {value.type}", op.loc)
        return arrays

    def _run_nested(self, block: Block, bindings: dict) -> list[np.ndarray]:
        self.env.update(bindings)
        return self.run_block(block, [bindings[a] for a in block.args])


def evaluate(fn: Function, args: Sequence) -> list[np.ndarray]:
    """Run `fn` on NumPy arrays; returns its outputs as NumPy arrays."""
    if len(args) != len(fn.args):
        raise JitgradError(f"{fn.name} takes {len(fn.args)} arguments, got {len(args)}")
    arrays = [np.asarray(arg, dtype=value.type.dtype.numpy).reshape(value.type.shape)
              for value, arg in zip(fn.args, args, strict=True)]
    return ReferenceInterpreter().run_block(fn.body, arrays)
