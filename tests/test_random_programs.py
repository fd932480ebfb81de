"""Random NumPy programs, compiled and differentiated end to end.

Hypothesis draws a program: a DAG of 3-12 smooth operations (bounded unary math,
arithmetic with a denominator bounded away from zero, broadcasting against a row or a
column, sums over an axis with keepdims, transposes, products with a fixed matrix) over
float64 inputs of small 2-d shapes. It becomes an ordinary Python closure over NumPy,
so plain NumPy is one oracle; then:

  - `jitgrad.jit` (native code) equals the reference interpreter on the traced IR, and both
    equal NumPy;
  - `jitgrad.grad` of the sum of the outputs equals central finite differences of the
    NumPy closure.

Every value stays smooth and bounded (draws whose values exceed `LIMIT` are
discarded), so finite differences are accurate to well within the tolerances.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import jitgrad
from jitgrad.interpreter import evaluate
from jitgrad.tracing.tracer import trace

LIMIT = 50.0   # largest |value| any node may take in an accepted example

UNARY = {
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "exp": lambda x: np.exp(np.sin(x)),            # exp of a bounded value
    "log": lambda x: np.log(1.0 + x ** 2),          # log of a positive value
    "sqrt": lambda x: np.sqrt(1.0 + x ** 2),
    "logistic": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "square": np.square,
    "neg": lambda x: -x,
}

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (1.5 + b * b),           # denominator >= 1.5
}


@dataclass(frozen=True)
class Step:
    """One operation: `kind` names it, `operands` index earlier nodes, `param` is its
    static parameter (a function name, an axis, a constant's seed and size)."""

    kind: str
    operands: tuple[int, ...]
    param: object = None


@dataclass(frozen=True)
class Program:
    input_shapes: tuple[tuple[int, int], ...]
    steps: tuple[Step, ...]

    def sinks(self) -> list[int]:
        """Nodes no later step reads: the program's outputs."""
        used = {i for s in self.steps for i in s.operands}
        return [i for i in range(len(self.input_shapes) + len(self.steps)) if i not in used]

    def function(self):
        """The program as a plain Python closure over NumPy."""
        steps, sinks = self.steps, self.sinks()

        def program(*inputs):
            nodes = list(inputs)
            for step in steps:
                nodes.append(apply_step(step, nodes))
            return [nodes[i] for i in sinks]
        return program

    def node_values(self, inputs) -> list[np.ndarray]:
        nodes = list(inputs)
        for step in self.steps:
            nodes.append(apply_step(step, nodes))
        return nodes


def constant(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape)


def apply_step(step: Step, nodes):
    args = [nodes[i] for i in step.operands]
    if step.kind == "unary":
        return UNARY[step.param](args[0])
    if step.kind == "binary":
        return BINARY[step.param[0]](args[0], args[1])
    if step.kind == "row":           # broadcast against a (1, n) constant
        op, seed = step.param
        return BINARY[op](args[0], constant(seed, (1, args[0].shape[1])))
    if step.kind == "column":        # ... or an (m, 1) constant, on either side
        op, seed = step.param
        return BINARY[op](constant(seed, (args[0].shape[0], 1)), args[0])
    if step.kind == "sum":
        return np.sum(args[0], axis=step.param, keepdims=True)
    if step.kind == "transpose":
        return args[0].T
    if step.kind == "matmul":        # with a fixed (n, k) matrix, scaled to keep values O(1)
        seed, k = step.param
        n = args[0].shape[1]
        return args[0] @ (constant(seed, (n, k)) / np.sqrt(n))
    raise AssertionError(step.kind)


def result_shape(step: Step, shapes) -> tuple[int, int]:
    a = shapes[step.operands[0]]
    if step.kind == "binary":
        return tuple(np.broadcast_shapes(a, shapes[step.operands[1]]))
    if step.kind == "sum":
        return tuple(1 if k == step.param else n for k, n in enumerate(a))
    if step.kind == "transpose":
        return a[::-1]
    if step.kind == "matmul":
        return (a[0], step.param[1])
    return a


def broadcastable(a, b) -> bool:
    return all(x == y or x == 1 or y == 1 for x, y in zip(a, b, strict=True))


@st.composite
def programs(draw) -> Program:
    m, n = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    variants = [(m, n), (1, n), (m, 1), (n, m)]
    n_inputs = draw(st.integers(1, 3))
    shapes = [draw(st.sampled_from(variants)) for _ in range(n_inputs)]
    shapes[0] = (m, n)
    steps = []
    for _ in range(draw(st.integers(3, 12))):
        i = draw(st.integers(0, len(shapes) - 1))
        kind = draw(st.sampled_from(["unary", "unary", "binary", "binary", "row", "column", "sum",
                                     "transpose", "matmul"]))
        if kind == "unary":
            step = Step(kind, (i,), draw(st.sampled_from(sorted(UNARY))))
        elif kind == "binary":
            partners = [j for j, s in enumerate(shapes) if broadcastable(shapes[i], s)]
            j = draw(st.sampled_from(partners))
            step = Step(kind, (i, j), (draw(st.sampled_from(sorted(BINARY))),))
        elif kind in ("row", "column"):
            step = Step(kind, (i,), (draw(st.sampled_from(sorted(BINARY))), draw(st.integers(0, 1000))))
        elif kind == "sum":
            step = Step(kind, (i,), draw(st.integers(0, 1)))
        elif kind == "transpose":
            step = Step(kind, (i,))
        else:
            step = Step(kind, (i,), (draw(st.integers(0, 1000)), draw(st.integers(1, 4))))
        shapes.append(result_shape(step, shapes))
        steps.append(step)
    return Program(tuple(shapes[:n_inputs]), tuple(steps))


@st.composite
def programs_and_inputs(draw):
    program = draw(programs())
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    inputs = [rng.uniform(-1.5, 1.5, shape) for shape in program.input_shapes]
    return program, inputs


def loss_of(program: Program):
    fn = program.function()

    def loss(*inputs):
        return sum(np.sum(out) for out in fn(*inputs))
    return loss


def central_differences(f, inputs, eps=1e-6):
    grads = []
    for k, x in enumerate(inputs):
        g = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            hi = [a.copy() for a in inputs]
            lo = [a.copy() for a in inputs]
            hi[k][idx] += eps
            lo[k][idx] -= eps
            g[idx] = (f(*hi) - f(*lo)) / (2 * eps)
        grads.append(g)
    return grads


def accept(program: Program, inputs) -> None:
    """Discard draws with values outside [-LIMIT, LIMIT] (repeated squares, sums)."""
    values = program.node_values(inputs)
    assume(all(np.all(np.abs(v) <= LIMIT) for v in values))


SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@SETTINGS
@given(programs_and_inputs())
def test_compiled_value_equals_interpreter_and_numpy(case):
    program, inputs = case
    accept(program, inputs)
    fn = program.function()
    expected = fn(*inputs)
    traced = trace(fn, tuple(inputs))
    interpreted = evaluate(traced.function, inputs)
    compiled = jitgrad.jit(fn)(*inputs)
    assert isinstance(compiled, list) and len(compiled) == len(expected) == len(interpreted)
    for c, i, e in zip(compiled, interpreted, expected, strict=True):
        assert c.shape == i.shape == e.shape and c.dtype == i.dtype == np.float64
        np.testing.assert_allclose(c, i, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(i, e, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(programs_and_inputs())
def test_compiled_gradient_matches_finite_differences(case):
    program, inputs = case
    accept(program, inputs)
    loss = loss_of(program)
    argnums = tuple(range(len(inputs)))
    value, grads = jitgrad.value_and_grad(loss, argnums=argnums)(*inputs)
    np.testing.assert_allclose(value, loss(*inputs), rtol=1e-9, atol=1e-12)
    numeric = central_differences(loss, inputs)
    assert len(grads) == len(inputs)
    for g, x, fd in zip(grads, inputs, numeric, strict=True):
        assert g.shape == x.shape and g.dtype == np.float64
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(programs_and_inputs())
def test_fused_and_unfused_code_agree(case):
    """The same program compiled with loop fusion and with one loop per op (and its
    gradient, where fusion matters most) against the interpreter."""
    from jitgrad.backends.cpu import CPUBackend
    from jitgrad.config import config
    program, inputs = case
    accept(program, inputs)
    loss = loss_of(program)
    lowered = jitgrad.value_and_grad(loss, argnums=tuple(range(len(inputs)))).lower(*inputs)
    reference = evaluate(lowered.function, inputs)
    saved = config.fusion
    try:
        config.fusion = False
        unfused = CPUBackend().compile(lowered.function)
    finally:
        config.fusion = saved
    assert len(unfused.schedule.kernels) >= len(lowered.executable.schedule.kernels)
    for fused_out, unfused_out, ref in zip(lowered.executable(inputs), unfused(inputs), reference, strict=True):
        np.testing.assert_allclose(fused_out, ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(unfused_out, ref, rtol=1e-9, atol=1e-12)


def test_program_generator_covers_every_kind_of_step():
    """The strategy can produce each op kind (guards against a generator that silently
    stopped drawing some of them)."""
    seen: set[str] = set()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(programs())
    def collect(program):
        seen.update(s.kind for s in program.steps)
        seen.update(f"unary:{s.param}" for s in program.steps if s.kind == "unary")
    collect()
    kinds = {"unary", "binary", "row", "column", "sum", "transpose", "matmul"}
    assert kinds <= seen
    assert len([k for k in seen if k.startswith("unary:")]) >= 6
