"""The passes that the rules of ops with regions run on their bodies, and the data those
rules exchange with them.

A loop's or a cond's JVP rule runs forward mode on its regions, its partial-eval and
transpose rules split and transpose them, and the rules that rebuild a region drop its
dead code; a checkpoint's rules do the same with its body. Those passes live in
`jitgrad.passes`, the layer above the op records, and that layer imports this one: so a
rule reaches them through the functions here, which `jitgrad.passes` installs when it is
imported (passes/__init__.py). A rule that runs before then raises `MissingRuleError`
naming the pass. In practice every such rule is called by one of those passes, so they
are installed by the time it runs.

`PartialEval` and `stage_whole` (what a `partial_eval` rule returns) and
`TransposedOutput` (what `transpose_function` does with each output) are defined here,
below both the rules and the passes; jitgrad.passes.reverse re-exports them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from jitgrad.errors import MissingRuleError
from jitgrad.ir import Function, Operation, Value

# --------------------------------------------------------------------------- what rules and passes exchange


class TransposedOutput(str, enum.Enum):
    """What `transpose_function` does with one output of the function it transposes."""

    KEEP = "keep"        # a non-linear output, returned as is
    DROP = "drop"        # not returned, not differentiated
    ARG = "arg"          # its cotangent is an argument of the transposed function
    ONE = "one"          # its cotangent is 1


@dataclass(frozen=True)
class PartialEval:
    """What a `partial_eval` rule returns for one op with some unknown operands.

    `known_results[k]` says whether result k is computed in the forward pass. `known` (an
    op on the known operands, or None) computes those results, in order, followed by the
    `residuals`; `staged` (or None) reads unknown operands, residuals and known operands
    and computes the other results, in order. Both are built detached (outside any
    function): the partial evaluator places the first in the forward pass and the second
    in the staged function."""

    known: Optional[Operation]
    staged: Optional[Operation]
    residuals: tuple[Value, ...]
    known_results: tuple[bool, ...]


def stage_whole(op: Operation, unknown: Sequence[bool]) -> PartialEval:
    """The default rule: an op with an unknown operand is staged whole."""
    return PartialEval(None, op, (), tuple(False for _ in op.results))


# --------------------------------------------------------------------------- the passes, installed from above

_PASSES = ("jvp_function", "partial_eval_function", "transpose_function", "eliminate_dead_code")
_installed: dict[str, Callable] = {}


def install(**passes: Callable) -> None:
    """Give the rules the passes named in `_PASSES` (jitgrad.passes calls this once)."""
    unknown = sorted(set(passes) - set(_PASSES))
    if unknown:
        raise ValueError(f"no rule runs a pass named {', '.join(unknown)}; the region passes are {', '.join(_PASSES)}")
    _installed.update(passes)


def _installed_pass(name: str) -> Callable:
    try:
        return _installed[name]
    except KeyError:
        raise MissingRuleError(f"a rule of an op with regions runs the pass {name} on its body, which "
                               "jitgrad.passes provides: import jitgrad.passes before running it", slot=name) from None


def jvp_function(fn: Function, wrt: Sequence[int]) -> Function:
    """Forward mode on `fn` with respect to the arguments at `wrt`
    (jitgrad.passes.jvp.jvp_function)."""
    return _installed_pass("jvp_function")(fn, wrt)


def partial_eval_function(fn: Function, unknown: Sequence[bool]):
    """`fn` split into its known and staged parts, a `Split`
    (jitgrad.passes.reverse.partial_eval_function)."""
    return _installed_pass("partial_eval_function")(fn, unknown)


def transpose_function(fn: Function, linear_args: Sequence[int],
                       outputs: Sequence[TransposedOutput | str]) -> Function:
    """`fn` transposed with respect to the arguments at `linear_args`
    (jitgrad.passes.reverse.transpose_function)."""
    return _installed_pass("transpose_function")(fn, linear_args, outputs)


def eliminate_dead_code(fn: Function) -> Function:
    """`fn` without the ops no output depends on (jitgrad.passes.simplify.DeadCodeElimination)."""
    return _installed_pass("eliminate_dead_code")(fn)
