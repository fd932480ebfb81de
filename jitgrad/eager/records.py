"""The vocabulary of a GradientTape's records, shared by the tape that writes them
(`tape.py`) and the introspection that reads them back (`introspection.py`): the
callables that stand for Python's operators, and `_Ref`, a tape node named in a
record's arguments.
"""
from __future__ import annotations

import operator

# Python operators, each as one callable that works the same on NumPy arrays (eager
# execution) and on jitgrad Tracers (replay): records store these callables.
BINARY_OPERATORS = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "matmul": operator.matmul,
    "and": operator.and_, "or": operator.or_, "xor": operator.xor,
}
COMPARISONS = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
               "eq": operator.eq, "ne": operator.ne}
UNARY_OPERATORS = {"neg": operator.neg, "pos": operator.pos, "abs": operator.abs, "invert": operator.invert}


class _Ref(int):
    """A tape node (its number) in a record's arguments. Records hold these, never the
    tracked tensors: no reference cycle (tensors refer to their tape), and intermediate
    values are freed as soon as the program drops them (the replay recomputes them)."""

    __slots__ = ()


_PREALLOCATED = 4096
_REFS: list[_Ref] = [_Ref(n) for n in range(_PREALLOCATED)]    # shared by all tapes: no allocation per op


def _ref(node: int) -> _Ref:
    while node >= len(_REFS):
        _REFS.extend(_Ref(n) for n in range(len(_REFS), 2 * len(_REFS)))
    return _REFS[node]
