"""Rematerialization under a memory budget: choose which forward values the backward
pass keeps and which it recomputes.

Reverse mode keeps every forward value the backward pass needs (the residuals); for a
deep network that is every layer's activations. With a budget, the traced program is
cut into segments of consecutive ops and each segment becomes a `checkpoint` region:
only the values that cross segment boundaries are kept, and each segment's internals
are recomputed from its inputs when the backward pass reaches it. Memory then goes
as (number of segments + one segment's internals) — with about √n segments, √n —
for the price of about one extra forward pass.

Loops whose trip count is known only at run time (`while_loop`, `fori_loop` with traced
bounds) would keep one state per iteration (the `stack` reversal: O(T) memory for T
trips), and a `scan` its per-step residuals (static buffers of T rows). Under a budget
all three use binomial checkpointing instead (`revolve`): a fixed
number of snapshots, as many as the room the rest of the program leaves (at least 2,
at most 2**16), each step recomputed at most r times for trip counts up to
C(snapshots + r, r). The report lists each loop's choice.

`choose_segmentation` tries segment counts around √n (and a few others), measures the
peak of each candidate's compiled program with the real memory planner, and keeps the
cheapest candidate that fits; if none fits it keeps the smallest peak and says so.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import warnings

from jitgrad.errors import ArgumentError, MemoryBudgetError, MemoryBudgetWarning
from jitgrad.ir import Function, Location, Value, current_builder, new_function
from jitgrad.ir.printer import name_values
from jitgrad.ir.rewrite import Rewriter
from jitgrad.primitives import Contraction
from jitgrad.primitives.calls import checkpoint_p, emit_call
from jitgrad.primitives.control_flow import MAX_SNAPSHOTS, REVOLVE, binomial_reach, fori_p, scan_p, while_p

CUT_WINDOW = 8          # ops a cut may move forward to land after a contraction operand
MIN_SNAPSHOTS = 2
_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "kib": 2 ** 10, "mib": 2 ** 20,
          "gib": 2 ** 30}


def parse_bytes(budget) -> int:
    """An int (bytes) or a string such as "64MB", "1.5 GiB", "4096"."""
    if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0:
        return budget
    if isinstance(budget, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", budget)
        if match and match.group(2).lower() in _UNITS:
            return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    raise ArgumentError(f"memory_budget must be a positive number of bytes or a string like '64MB', "
                        f"got {budget!r}")


@dataclass(frozen=True)
class LoopReversal:
    """The revolve schedule chosen for one loop: `snapshots` states of `state_bytes`."""

    location: Location
    snapshots: int
    state_bytes: int

    @property
    def bytes(self) -> int:
        return self.snapshots * self.state_bytes

    def recompute_factors(self, up_to: int = 4) -> list[tuple[int, int]]:
        """(r, the longest loop whose steps are each recomputed at most r times)."""
        return [(r, binomial_reach(self.snapshots, r)) for r in range(1, up_to + 1)]

    def __str__(self) -> str:
        factors = ", ".join(f"r={r} up to T={reach:,}" for r, reach in self.recompute_factors())
        return (f"// loop at {self.location}: revolve, {self.snapshots} snapshots of {self.state_bytes} bytes "
                f"({self.bytes} bytes); steps recomputed at most r times: {factors}")


def _state_bytes(op) -> int:
    """An upper bound on the state a loop's reversal keeps per snapshot: its carry (a
    scan's xs are not part of it: the backward loop reads them in place)."""
    start = 1 if op.opdef is fori_p else 0
    end = start + op.attrs["num_consts"] + op.attrs["num_carry"] if op.opdef is scan_p else len(op.operands)
    return max(sum(v.type.nbytes for v in op.operands[start + op.attrs["num_consts"]:end]), 1)


def _loops(block) -> list:
    """The while/fori/scan ops of `block`, those nested in its ops' regions included."""
    found = []
    for op in block.ops:
        if op.opdef in (while_p, fori_p, scan_p):
            found.append(op)
        for region in op.regions:
            for inner in region.blocks:
                found.extend(_loops(inner))
    return found


def reverse_loops_within(fn: Function, room: int) -> tuple[Function, list[LoopReversal]]:
    """`fn` with each while/fori/scan loop (nested ones too) set to the revolve reversal, half
    of the `room` bytes shared evenly among them as snapshots (MIN_SNAPSHOTS to
    MAX_SNAPSHOTS each). The other half is left to the loop kernels' own buffers (carry
    copies, the bodies' intermediates), which the memory plan does not see. A nested
    loop's snapshots are a scratch area of its enclosing loop's, allocated once."""
    loops = _loops(fn.body)
    if not loops:
        return fn, []
    share = max(room, 0) // 2 // len(loops)
    choices = {op: LoopReversal(op.loc, min(max(share // _state_bytes(op), MIN_SNAPSHOTS), MAX_SNAPSHOTS),
                                _state_bytes(op)) for op in loops}

    class SetReversal(Rewriter):
        def rule_for(self, op):
            return set_reversal if op in choices else None

    def set_reversal(rewriter, op, inputs):
        regions = [rewriter.rewrite_region(op, region) for region in op.regions]
        return current_builder().create(op.opdef, inputs, dict(op.attrs, reversal=REVOLVE,
                                                               snapshots=choices[op].snapshots),
                                        regions=regions, result_types=[r.type for r in op.results]).results
    return SetReversal().rewrite_function(fn), [choices[op] for op in loops]


@dataclass
class RematReport:
    """What the remat decision kept and recomputed."""

    budget: int
    peak_without: int
    peak: int
    segments: int
    saved: list[str] = field(default_factory=list)        # values kept across segment boundaries
    recomputed_ops: int = 0
    loops: list[LoopReversal] = field(default_factory=list)   # snapshots of loops run backwards (in peak)

    @property
    def fits(self) -> bool:
        return self.peak <= self.budget

    def __str__(self) -> str:
        lines = [f"// remat: budget {self.budget} bytes; peak {self.peak} bytes with {self.segments} segment(s) "
                 f"(without remat {self.peak_without}){'' if self.fits else ' — BUDGET NOT MET'}",
                 f"// recomputed in the backward pass: {self.recomputed_ops} ops",
                 f"// saved across segments: {', '.join(self.saved) if self.saved else 'nothing'}",
                 *(str(loop) for loop in self.loops)]
        return "\n".join(lines)


def report_unmet_budget(name: str, report: RematReport, strict: bool, location: Location) -> None:
    """Say that `report`'s budget is not met, at the user's `location`: a
    MemoryBudgetWarning, or with `strict` a MemoryBudgetError. A budget is a promise the
    caller relies on (a program that must fit a device), so a larger peak is never
    accepted silently."""
    if report.fits:
        return
    message = (f"memory_budget of {report.budget} bytes not met for the gradient of {name}: the smallest peak "
               f"found is {report.peak} bytes, with {report.segments} checkpoint segment(s) (without "
               f"rematerialization {report.peak_without} bytes)")
    if strict:
        raise MemoryBudgetError(message + "; raise the budget or shrink the program's arguments and results, "
                                "which every segmentation keeps", location)
    warnings.warn_explicit(MemoryBudgetWarning(message + "; the program runs with this peak (strict=True makes "
                                               "this an error)"), MemoryBudgetWarning, location.file, location.line)


def _cut_fractions(segments: int) -> list[float]:
    """Where the cuts go, as fractions of the forward work. The backward pass handles the
    last segment first, while every earlier boundary value is still stored, so segments
    shrink towards the end: segment j gets a share proportional to C - j, which makes
    (boundaries alive + one segment's internals) about equal for every segment."""
    weights = [segments + 1 - j for j in range(segments)]
    total, running, cuts = sum(weights), 0, []
    for w in weights[:-1]:
        running += w
        cuts.append(running / total)
    return cuts


def segment(fn: Function, segments: int) -> tuple[Function, list[Value]]:
    """`fn` with its body cut into `segments` checkpoint regions (sizes by output bytes,
    shrinking towards the end). Returns the new function and the values that cross a
    boundary."""
    ops = [op for op in fn.body.ops if not op.opdef.is_terminator]
    total = sum(r.type.nbytes for op in ops for r in op.results) or 1
    cuts = _cut_fractions(segments)
    feeds_contraction = {v for op in ops if isinstance(op.opdef.lowering, Contraction)
                         for v in op.operands}
    running, groups, overdue = 0, [[]], 0
    for op in ops:
        groups[-1].append(op)
        running += sum(r.type.nbytes for r in op.results)
        if len(groups) < segments and running >= total * cuts[len(groups) - 1]:
            # Cut after a value a contraction reads (a layer's output): the backward pass
            # needs it anyway, so storing it at the boundary costs no extra memory.
            overdue += 1
            if any(r in feeds_contraction for r in op.results) or overdue > CUT_WINDOW:
                groups.append([])
                overdue = 0
    groups = [g for g in groups if g]
    used_later: dict[Value, int] = {}
    for position, op in enumerate(fn.body.ops):
        for v in op.operands:
            used_later[v] = position
    index_of = {op: i for i, op in enumerate(fn.body.ops)}

    new_fn, builder = new_function(fn.name, fn.input_types)
    env: dict[Value, Value] = dict(zip(fn.args, new_fn.args, strict=True))
    crossing: list[Value] = []
    with builder:
        for group in groups:
            defined = {r for op in group for r in op.results}
            inputs = list(dict.fromkeys(v for op in group for v in op.operands if v not in defined))
            last = index_of[group[-1]]
            outputs = [r for op in group for r in op.results if used_later.get(r, -1) > last]
            if not outputs:
                continue
            body, body_builder = new_function(f"{fn.name}_segment", [v.type for v in inputs])
            copier = Rewriter(env=dict(zip(inputs, body.args, strict=True)))
            with body_builder:
                for op in group:
                    copier.eval_op(op)
                with body_builder.at(group[-1].loc):
                    body_builder.ret([copier.read(v) for v in outputs])
            with builder.at(group[0].loc):
                results = emit_call(checkpoint_p, body, [env[v] for v in inputs])
            env.update(zip(outputs, results, strict=True))
            crossing.extend(outputs)
        term = fn.body.terminator
        with builder.at(term.loc):
            builder.ret([env[v] for v in term.operands])
    return new_fn, crossing


def choose_segmentation(fn: Function, budget: int, compiled_peak: Callable[[Function], tuple[int, int]],
                        ) -> tuple[Function, RematReport]:
    """The segmentation of `fn` to differentiate. `compiled_peak(candidate)` differentiates,
    optimizes and plans a candidate, returning (peak bytes, number of ops)."""
    peak_without, ops_without = compiled_peak(fn)
    revolved, loops = reverse_loops_within(fn, budget - peak_without)
    peak_base = peak_without
    if loops:
        # a scan set to revolve drops its stacked residuals: the room for snapshots grows
        peak_base, ops_without = compiled_peak(revolved)
        if peak_base < peak_without:
            revolved, loops = reverse_loops_within(fn, budget - peak_base)
    fn = revolved
    loop_bytes = sum(loop.bytes for loop in loops)
    if peak_base + loop_bytes <= budget:
        return fn, RematReport(budget, peak_without, peak_base + loop_bytes, 1, loops=loops)
    n = sum(1 for op in fn.body.ops if not op.opdef.is_terminator)
    root = max(2, round(math.sqrt(n)))
    counts = sorted({c for c in (2, 4, *range(root // 2, root + 1), root * 3 // 2, 2 * root) if 2 <= c <= n})
    best = None
    for count in counts:
        candidate, crossing = segment(fn, count)
        peak, ops = compiled_peak(candidate)
        peak += loop_bytes
        recomputed = max(ops - ops_without, 0)
        fits = peak <= budget
        key = (not fits, count if fits else peak)     # fits: fewest segments; else: smallest peak
        if best is None or key < best[0]:
            best = (key, candidate, crossing, peak, recomputed, count)
    _, candidate, crossing, peak, recomputed, count = best
    names = name_values(fn)
    saved = [f"{names.get(v, '?')}: {v.type}" for v in crossing]
    return candidate, RematReport(budget, peak_without, peak, count, saved, recomputed, loops)


def program_peak(fn: Function, schedule_fn, plan_fn) -> int:
    """Arguments + outputs + planned workspace of an optimized, inlined program."""
    sched = schedule_fn(fn)
    plan = plan_fn(fn, sched)
    return sum(v.type.nbytes for v in fn.args) + sum(v.type.nbytes for v in fn.outputs) + plan.workspace_bytes

