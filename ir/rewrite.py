"""The one skeleton every transformation and interpreter of the IR is built on.

An `Evaluator` walks a block's ops in program order with an environment `env` that maps
each value of the source IR to what it stands for in the run (a NumPy array for the
reference interpreter, a new `Value` for a rewrite, a tangent for forward mode).
`read`/`write` go through `env`; each op is handed to the rule that `rule_for` picks from
the per-op table `rules`, or to `default_rule` when it has none; ops with regions reach
their regions' blocks through the same `run_block`, so nested IR is handled once, here,
and not again by every pass.

A `Rewriter` is the evaluator whose env maps old values to new ones: its rules emit into
the active builder (so `emit`-style rule code works unchanged) and return the values
that replace the op's results, one per result, or None to fall back to the default rule
(copy the op, its regions rewritten by this same rewriter, so a rule table applies at
every depth). `keep(op)` false drops an op whose results nothing reads.

`live_ops` is the backward counterpart (dead-code analysis): a reverse walk with a
per-op rule deciding, from which results are used, whether the op stays and which
operands it needs; ops with regions are analysed inside. `free_values` (the values a
block captures from enclosing blocks) is the evaluator run as an analysis.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from .builder import Builder, current_builder, new_function
from .errors import JitgradError, VerificationError
from .core import Block, Function, Operation, Region, Trait, Value


class Evaluator:
    """Runs blocks op by op: `env` + `read`/`write` + a per-op rule with a default.

    `rules` maps an op name (or its OpDef) to `rule(evaluator, op, inputs) -> outputs`,
    where `inputs` are the operands read from `env` and `outputs` has one entry per result
    (None asks for the default rule)."""

    def __init__(self, rules: Optional[Mapping[Any, Callable]] = None, env: Optional[dict] = None):
        self.rules = dict(rules or {})
        self.env: dict[Value, Any] = env if env is not None else {}

    # ----------------------------------------------------------------- env
    def read(self, value: Value) -> Any:
        try:
            return self.env[value]
        except KeyError:
            raise VerificationError(f"a value of type {value.type} is read before it is defined") from None

    def write(self, values: Sequence[Value], outs: Sequence[Any]) -> None:
        """Bind `values` (results or block arguments) to `outs`, one each."""
        if len(values) != len(outs):
            raise VerificationError(f"{len(values)} values bound to {len(outs)} outputs")
        self.env.update(zip(values, outs, strict=True))

    # ----------------------------------------------------------------- dispatch
    def rule_for(self, op: Operation) -> Optional[Callable]:
        """The op's rule from `rules` (by OpDef first, then by name), or None."""
        return self.rules.get(op.opdef) or self.rules.get(op.name)

    def default_rule(self, op: Operation, inputs: list) -> Sequence[Any]:
        raise NotImplementedError(f"{type(self).__name__} has no rule for op {op.name!r}")

    def keep(self, op: Operation) -> bool:
        """Whether to evaluate `op` at all (a dead-code filter; terminators always run)."""
        return True

    def eval_op(self, op: Operation) -> None:
        inputs = [self.read(v) for v in op.operands]
        rule = self.rule_for(op)
        try:
            outs = rule(self, op, inputs) if rule is not None else None
            if outs is None:
                outs = self.default_rule(op, inputs)
        except JitgradError as err:          # name the user's line of the op that failed
            raise err.with_location(op.loc if op.loc.line else None) from None
        self.write(op.results, list(outs))

    def run_block(self, block: Block, args: Sequence[Any]) -> list:
        """Bind `block`'s arguments to `args`, evaluate its ops (nested regions included,
        through the rules) and return its terminator's operands as read from `env`."""
        self.write(block.args, list(args))
        for op in block.ops:
            if op.opdef.is_terminator:
                return [self.read(v) for v in op.operands]
            if self.keep(op):
                self.eval_op(op)
        raise VerificationError("block has no terminator")


class Rewriter(Evaluator):
    """An evaluator from IR to IR: `env` maps old values to new ones, rules emit into the
    active builder at the rewritten op's location, and the default rule copies the op with
    its regions rewritten by this rewriter."""

    def eval_op(self, op: Operation) -> None:
        with current_builder().at(op.loc):
            super().eval_op(op)

    def default_rule(self, op: Operation, inputs: list) -> Sequence[Value]:
        regions = [self.rewrite_region(op, region) for region in op.regions]
        new = current_builder().create(op.opdef, inputs, op.attrs, regions=regions,
                                       result_types=[r.type for r in op.results])
        return new.results

    @contextmanager
    def entering(self, op: Operation, region: Region) -> Iterator[None]:
        """Context for rewriting `op`'s `region` (a pass that keeps per-scope state, such as
        CSE's table of available values, overrides it)."""
        yield

    def rewrite_region(self, op: Operation, region: Region) -> Region:
        """A new region: each block rebuilt with fresh arguments, its ops rewritten, its
        terminator (of the same kind) on the rewritten operands."""
        blocks = []
        with self.entering(op, region):
            for block in region.blocks:
                builder = Builder(Block())
                args = [builder.add_arg(a.type) for a in block.args]
                with builder:
                    outs = self.run_block(block, args)
                    term = block.terminator
                    with builder.at(term.loc):
                        builder.create(term.opdef, outs, term.attrs)
                blocks.append(builder.block)
        return Region(blocks)

    def rewrite_function(self, fn: Function, name: Optional[str] = None) -> Function:
        """A new function with `fn`'s signature and its body rewritten."""
        new_fn, builder = new_function(name or fn.name, fn.input_types)
        with builder:
            outs = self.run_block(fn.body, new_fn.args)
            with builder.at(fn.body.terminator.loc):
                builder.ret(outs)
        return new_fn


# --------------------------------------------------------------------------- liveness

DceRule = Callable[[Operation, list[bool]], "tuple[bool, list[bool]]"]


def is_pure(op: Operation) -> bool:
    """An op that may be dropped when nothing reads its results: one with results (an op
    without any exists for its effect) whose record declares no side effect."""
    return bool(op.results) and not op.opdef.has(Trait.HAS_SIDE_EFFECT)


def live_ops(block: Block, rules: Optional[Mapping[str, DceRule]] = None,
             pure: Callable[[Operation], bool] = is_pure) -> set[Operation]:
    """The ops of `block` (nested regions included) that must stay: terminators, ops with
    effects, and ops whose results something kept reads. A rule `rule(op, used_results)
    -> (keep, used_operands)` overrides the default for its op. A kept op with regions
    keeps its regions' terminators, and what they need, inside; values those regions read
    from enclosing blocks become live there."""
    rules = rules or {}
    kept: set[Operation] = set()

    def visit(inner: Block, live: set[Value]) -> None:
        for op in reversed(inner.ops):
            used = [r in live for r in op.results]
            rule = rules.get(op.name)
            if rule is not None and not op.opdef.is_terminator:
                keep, used_operands = rule(op, used)
            else:
                keep = op.opdef.is_terminator or any(used) or not pure(op)
                used_operands = [keep] * len(op.operands)
            if not keep:
                continue
            kept.add(op)
            live.update(v for v, u in zip(op.operands, used_operands, strict=True) if u)
            for region in op.regions:
                for nested in region.blocks:
                    visit(nested, live)

    visit(block, set())
    return kept


class _FreeValues(Evaluator):
    """The driver as an analysis: `env` marks the values defined so far; a read of any
    other value records it as free."""

    def __init__(self):
        super().__init__()
        self.free: dict[Value, None] = {}

    def read(self, value: Value) -> None:
        if value not in self.env:
            self.free.setdefault(value)
        return None

    def default_rule(self, op: Operation, inputs: list) -> list:
        for region in op.regions:
            for block in region.blocks:
                self.run_block(block, [None] * len(block.args))
        return [None] * len(op.results)


def free_values(block: Block) -> list[Value]:
    """The values `block` reads (nested regions included) without defining them: its
    captures from enclosing blocks, in order of first use."""
    finder = _FreeValues()
    finder.run_block(block, [None] * len(block.args))
    return list(finder.free)
