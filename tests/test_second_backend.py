"""A second backend, registered under its own device name, proves that backends plug in:
an interpreter that runs the kernels of the backend-neutral kernel layer
(jitgrad/backends/kernel.py) through its own `ScalarContext`, on NumPy scalars.

The context records each scalar operation as a statement of a small register machine
(`_Program`), the way the CPU's context emits LLVM instructions; loops and conditionals
nest statement lists. The kernels, the fused-loop driver, the index maps, the reduction
accumulators and the memory plan (one workspace array, buffers at their planned
offsets) are the ones the CPU uses. Every result is compared with the CPU backend's.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

import jitgrad
from jitgrad.backends import register_backend, unregister_backend
from jitgrad.backends.base import Backend, Executable
from jitgrad.backends.kernel import KernelEmitter
from jitgrad.config import config
from jitgrad.ir import DType

DEVICE = "python-interpreter"

_MATH = {"exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "log1p": np.log1p,
         "expm1": np.expm1, "exp2": np.exp2, "log2": np.log2, "log10": np.log10, "sinh": np.sinh,
         "cosh": np.cosh, "cbrt": np.cbrt, "hypot": np.hypot, "tan": np.tan, "asin": np.arcsin,
         "acos": np.arccos, "atan": np.arctan, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
         "atan2": np.arctan2, "pow": np.power, "sqrt": np.sqrt, "fabs": np.abs,
         "fma": lambda a, b, c: type(a)(np.float64(a) * np.float64(b) + np.float64(c))}

INDEX = "index"


def _register_dtype(dtype: DType):
    """Register form: float16 and bfloat16 are computed in float32, as on the CPU."""
    if dtype in (DType.f16, DType.bf16):
        return np.dtype(np.float32)
    return np.dtype(dtype.numpy)


class Reg:
    """A register of the program: its slot and the NumPy dtype it holds (or INDEX)."""

    __slots__ = ("k", "dtype")

    def __init__(self, k: int, dtype):
        self.k, self.dtype = k, dtype


class _Program:
    """Statements over a register file; `run` executes them on fresh registers."""

    def __init__(self):
        self.initial: list = []          # constant registers, and factories of per-run arrays
        self.body: list = []
        self.text: list[str] = []

    def register(self, value=None, dtype=None) -> Reg:
        self.initial.append(value)
        return Reg(len(self.initial) - 1, dtype)

    def run(self, bound: dict) -> None:
        registers = [v() if callable(v) else v for v in self.initial]
        for k, v in bound.items():
            registers[k] = v
        with np.errstate(all="ignore"):
            for statement in self.body:
                statement(registers)


class PythonScalarContext:
    """jitgrad.backends.kernel.ScalarContext on NumPy scalars."""

    def __init__(self, program: _Program):
        self.program = program
        self.fastmath: tuple[str, ...] = ()
        self.operand_dtype: DType | None = None

    # ----- statements
    def _op(self, name: str, fn, args, dtype) -> Reg:
        out = self.program.register(dtype=dtype)
        k, slots = out.k, [a.k for a in args]
        if len(slots) == 1:
            (a,) = slots
            self.program.body.append(lambda r: r.__setitem__(k, fn(r[a])))
        elif len(slots) == 2:
            a, b = slots
            self.program.body.append(lambda r: r.__setitem__(k, fn(r[a], r[b])))
        else:
            self.program.body.append(lambda r: r.__setitem__(k, fn(*[r[s] for s in slots])))
        self.program.text.append(f"r{k} = {name}({', '.join(f'r{s}' for s in slots)})")
        return out

    def _effect(self, name: str, fn, args) -> None:
        slots = [a.k for a in args]
        self.program.body.append(lambda r: fn(*[r[s] for s in slots]))
        self.program.text.append(f"{name}({', '.join(f'r{s}' for s in slots)})")

    # ----- types and constants
    def is_float(self, x) -> bool:
        return x.dtype != INDEX and x.dtype.kind == "f"

    def float_width(self, x) -> int:
        return x.dtype.itemsize * 8

    def const(self, value, like) -> Reg:
        if like.dtype == INDEX:
            return self.index_const(int(value))
        return self.program.register(like.dtype.type(value), like.dtype)

    def const_of(self, value, dtype: DType) -> Reg:
        t = _register_dtype(dtype)
        return self.program.register(t.type(value), t)

    # ----- arithmetic
    def _binary(self, name, fn, a, b):
        return self._op(name, fn, [a, b], a.dtype)

    def neg(self, x):
        return self._op("neg", lambda v: -v, [x], x.dtype)

    def add(self, a, b):
        return self._binary("add", lambda x, y: x + y, a, b)

    def sub(self, a, b):
        return self._binary("sub", lambda x, y: x - y, a, b)

    def mul(self, a, b):
        return self._binary("mul", lambda x, y: x * y, a, b)

    def div(self, a, b):
        if self.is_float(a):
            return self._binary("div", lambda x, y: x / y, a, b)
        t = a.dtype.type

        def c_div(x, y):
            if y == 0:
                return t(0)
            if y == -1:
                return -x
            q = abs(int(x)) // abs(int(y))
            return t(q if (x < 0) == (y < 0) else -q)
        return self._binary("div", c_div, a, b)

    def floor_divide(self, a, b):
        return self._binary("floor_divide", np.floor_divide, a, b)

    def remainder(self, a, b):
        return self._binary("remainder", np.remainder, a, b)

    def fmod(self, a, b):
        return self._binary("fmod", np.fmod, a, b)

    def int_power(self, a, b):
        return self._binary("int_power", lambda x, y: np.power(x, y.astype(x.dtype)), a, b)

    def maximum(self, a, b):
        return self._binary("maximum", np.maximum, a, b)

    def minimum(self, a, b):
        return self._binary("minimum", np.minimum, a, b)

    # ----- comparisons and logic
    _COMPARE = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
                ">=": np.greater_equal}

    def cmp(self, op: str, a, b):
        return self._op(op, self._COMPARE[op], [a, b], np.dtype(bool))

    def select(self, pred, a, b):
        return self._op("select", lambda p, x, y: x if p else y, [pred, a, b], a.dtype)

    def and_(self, a, b):
        return self._op("and", lambda x, y: np.bool_(x and y), [a, b], np.dtype(bool))

    def or_(self, a, b):
        return self._op("or", lambda x, y: np.bool_(x or y), [a, b], np.dtype(bool))

    def not_(self, a):
        return self._op("not", lambda x: np.bool_(not x), [a], np.dtype(bool))

    # ----- bits
    def bit_and(self, a, b):
        return self._binary("bit_and", np.bitwise_and, a, b)

    def bit_or(self, a, b):
        return self._binary("bit_or", np.bitwise_or, a, b)

    def bit_xor(self, a, b):
        return self._binary("bit_xor", np.bitwise_xor, a, b)

    def bit_not(self, a):
        return self._op("bit_not", np.invert, [a], a.dtype)

    def shift_left(self, a, b):
        width = a.dtype.itemsize * 8
        return self._binary("shift_left", lambda x, y: x.dtype.type(0) if not 0 <= y < width
                            else np.left_shift(x, y.astype(x.dtype)), a, b)

    def shift_right_logical(self, a, b):
        width, unsigned = a.dtype.itemsize * 8, np.dtype(f"u{a.dtype.itemsize}")
        return self._binary("shift_right_logical", lambda x, y: x.dtype.type(0) if not 0 <= y < width else
                            np.right_shift(x.view(unsigned), y.astype(unsigned)).view(x.dtype), a, b)

    def shift_right_arithmetic(self, a, b):
        width = a.dtype.itemsize * 8
        return self._binary("shift_right_arithmetic", lambda x, y: np.right_shift(
            x, (y if 0 <= y < width else width - 1).astype(x.dtype)), a, b)

    def shift_right(self, a, b):
        if a.dtype.kind == "u":
            return self.shift_right_logical(a, b)
        return self.shift_right_arithmetic(a, b)

    # ----- conversions
    def convert(self, x, dtype: DType, source: DType | None = None):
        target = _register_dtype(dtype)

        def cast(v):
            if target.kind in "iu" and np.dtype(type(v)).kind == "f":
                limit = 2.0 ** 63 if target.itemsize == 8 else 2.0 ** 31
                whole = int(np.trunc(v)) if np.isfinite(v) and -limit <= v < limit else -int(limit)
                return np.array(whole, np.int64).astype(target)[()]
            if target == np.dtype(bool):
                return np.bool_(v != 0)
            return np.array(v).astype(target)[()]
        return self.round_to(self._op(f"convert.{dtype.name}", cast, [x], target), dtype)

    def round_to(self, x, dtype: DType):
        if dtype in (DType.f16, DType.bf16):
            narrow = dtype.numpy
            return self._op(f"round.{dtype.name}", lambda v: np.float32(np.array(v).astype(narrow)), [x], x.dtype)
        return x

    # ----- math library
    def math(self, name: str, *args):
        fn = _MATH[name]
        return self._op(name, lambda *v: args[0].dtype.type(fn(*v)), list(args), args[0].dtype)

    # ----- index arithmetic
    def index_const(self, n: int):
        return self.program.register(int(n), INDEX)

    def index_add(self, a, b):
        return self._op("index_add", lambda x, y: x + y, [a, b], INDEX)

    def index_sub(self, a, b):
        return self._op("index_sub", lambda x, y: x - y, [a, b], INDEX)

    def index_mul(self, a, b):
        return self._op("index_mul", lambda x, y: x * y, [a, b], INDEX)

    def index_div(self, a, b):
        return self._op("index_div", lambda x, y: x // y, [a, b], INDEX)

    def index_rem(self, a, b):
        return self._op("index_rem", lambda x, y: x % y, [a, b], INDEX)

    def index_bit(self, a, k):
        return self._op("index_bit", lambda x, y: np.bool_((x >> y) & 1), [a, k], np.dtype(bool))

    def index_cmp(self, op: str, a, b):
        return self._op(op, lambda x, y: np.bool_(self._COMPARE[op](x, y)), [a, b], np.dtype(bool))

    # ----- memory: buffers are 1-d uint8 arrays; NumPy refuses any access out of bounds
    def load(self, buffer, offset, dtype: DType):
        memory, register = np.dtype(dtype.numpy), _register_dtype(dtype)

        def load(buf, i):
            return np.frombuffer(buf, memory, count=1, offset=i * memory.itemsize)[0].astype(register)
        return self._op(f"load.{dtype.name}", load, [buffer, offset], register)

    def store(self, buffer, offset, x, dtype: DType) -> None:
        memory = np.dtype(dtype.numpy)

        def store(buf, i, v):
            buf[i * memory.itemsize:(i + 1) * memory.itemsize] = np.array([v]).astype(memory).view(np.uint8)
        self._effect(f"store.{dtype.name}", store, [buffer, offset, x])

    def byte_offset(self, buffer, nbytes: int):
        return self._op(f"offset.{nbytes}", lambda buf: buf[nbytes:], [buffer], "buffer")

    def copy_bytes(self, dst, src, nbytes: int) -> None:
        self._effect(f"copy.{nbytes}", lambda d, s: d.__setitem__(slice(0, nbytes), s[:nbytes]), [dst, src])

    def zero_bytes(self, dst, nbytes: int) -> None:
        self._effect(f"zero.{nbytes}", lambda d: d.__setitem__(slice(0, nbytes), 0), [dst])

    def local_array(self, dtype: DType, count: int, name: str):
        nbytes = count * np.dtype(dtype.numpy).itemsize
        return self.program.register(lambda: np.zeros(nbytes, np.uint8), "buffer")

    # ----- control flow
    @contextmanager
    def loop(self, count, name: str):
        i = self.program.register(0, INDEX)
        outer, self.program.body = self.program.body, []
        self.program.text.append(f"for r{i.k} in range({count if isinstance(count, int) else f'r{count.k}'}):")
        yield i
        body, self.program.body = self.program.body, outer
        k = i.k
        trips = (lambda r: count) if isinstance(count, int) else (lambda r, c=count.k: r[c])

        def loop(r):
            for n in range(trips(r)):
                r[k] = n
                for statement in body:
                    statement(r)
        self.program.body.append(loop)
        self.program.text.append("end")

    @contextmanager
    def loop_nest(self, shape, name: str):
        if not shape:
            yield []
            return
        with self.loop(shape[0], name) as i:
            with self.loop_nest(shape[1:], name) as rest:
                yield [i, *rest]

    @contextmanager
    def if_then(self, cond):
        outer, self.program.body = self.program.body, []
        self.program.text.append(f"if r{cond.k}:")
        yield
        body, self.program.body = self.program.body, outer
        c = cond.k

        def if_then(r):
            if r[c]:
                for statement in body:
                    statement(r)
        self.program.body.append(if_then)
        self.program.text.append("end")


class PythonFunctionEmitter(KernelEmitter):
    device = DEVICE

    def __init__(self, fn, sched, memory):
        self.program = _Program()
        super().__init__(fn, sched, memory, PythonScalarContext(self.program))
        self.arguments = [self.program.register(dtype="buffer") for _ in fn.args]
        self.outputs = [self.program.register(dtype="buffer") for _ in fn.outputs]
        self.workspace_register = self.program.register(dtype="buffer")

    def argument_buffer(self, k):
        return self.arguments[k]

    def output_buffer(self, k):
        return self.outputs[k]

    def workspace_buffer(self):
        return self.workspace_register

    def constant_buffer(self, array):
        data = np.ascontiguousarray(array).view(np.uint8).reshape(-1).copy()
        return self.program.register(data, "buffer")

    def element_offset(self, buffer, offset, dtype):
        size = np.dtype(dtype.numpy).itemsize
        return self.ctx._op("element_offset", lambda buf, i: buf[i * size:], [buffer, offset], "buffer")

    def emit_kernel_kind(self, op, kind):
        """Kernels of their own run the primitive's NumPy reference."""
        operands, results = op.operands, op.results

        def run(*buffers):
            arrays = [np.frombuffer(b, v.type.dtype.numpy, count=v.type.size).reshape(v.type.shape)
                      for b, v in zip(buffers, operands)]
            outs = op.opdef.impl(*arrays, **op.attrs)
            outs = outs if len(results) > 1 else [outs]
            for b, v, out in zip(buffers[len(operands):], results, outs, strict=True):
                b[:v.type.nbytes] = np.ascontiguousarray(out, v.type.dtype.numpy).view(np.uint8).reshape(-1)
        self.ctx._effect(op.name, run, [self.buffers[v] for v in [*operands, *results]])


def _bytes(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1).view(np.uint8) if array.size else np.zeros(0, np.uint8)


class PythonExecutable(Executable):
    listing_names = ("kernels", "program")

    def __init__(self, fn, sched, memory, emitter: PythonFunctionEmitter):
        self.function, self.schedule, self.memory = fn, sched, memory
        self.emitter = emitter
        self._workspace_bytes = emitter.workspace_bytes

    @property
    def workspace_bytes(self) -> int:
        return self._workspace_bytes

    def __call__(self, inputs):
        fn, e = self.function, self.emitter
        arrays = [np.ascontiguousarray(a, dtype=t.dtype.numpy) for a, t in zip(inputs, fn.input_types, strict=True)]
        outputs = [np.empty(t.shape, t.dtype.numpy) for t in fn.output_types]
        bound = {r.k: _bytes(a) for r, a in zip(e.arguments + e.outputs, arrays + outputs)}
        bound[e.workspace_register.k] = np.zeros(self._workspace_bytes, np.uint8)
        e.program.run(bound)
        return outputs

    def listing(self, name: str) -> str:
        if name == "program":
            return "\n".join(self.emitter.program.text)
        return super().listing(name)


class PythonBackend(Backend):
    device = DEVICE

    def compile(self, fn, schedule, memory):
        emitter = PythonFunctionEmitter(fn, schedule, memory)
        emitter.emit_function()
        return PythonExecutable(fn, schedule, memory, emitter)


@pytest.fixture(scope="module", autouse=True)
def python_backend():
    register_backend(DEVICE, PythonBackend)
    yield
    unregister_backend(DEVICE)


def _on(device: str, fun, *args):
    saved = config.device
    config.device = device
    try:
        return fun(*args), fun.lower(*args)
    finally:
        config.device = saved


rng = np.random.default_rng(7)
X = rng.standard_normal((5, 6))
Y = rng.standard_normal((5, 6))
V = rng.standard_normal(6)


def _w1(x):
    return np.sum(np.sin(x) * np.exp(-x ** 2) + np.tanh(x))


PROGRAMS = {
    "fused elementwise": (jitgrad.jit(lambda x, y: np.sin(x) * np.exp(-y ** 2) + np.tanh(x * y)), (X, Y)),
    "fused gradient with a full reduction": (jitgrad.value_and_grad(_w1), (X,)),
    "float32 full reduction": (jitgrad.jit(lambda x: np.sum(x * x)), (X.astype(np.float32),)),
    "partial reductions": (jitgrad.jit(lambda x: (np.sum(x, axis=0), np.max(x, axis=1), np.mean(x))), (X,)),
    "gathers": (jitgrad.jit(lambda x: x[::-1, 1:4].T * 2.0 + x[2, 1:4][:, None]), (X,)),
    "broadcast": (jitgrad.jit(lambda x, v: x + v[None, :] * np.cos(v)), (X, V)),
    "outer broadcast": (jitgrad.jit(lambda v: v[:, None] - v[None, :]), (V,)),
    "matrix product": (jitgrad.jit(lambda x, y: np.tanh(x @ y.T)), (X, Y)),
    "gradient through slices and a product": (
        jitgrad.grad(lambda x, y: np.sum(np.tanh(x[1:4] @ y[1:].T) ** 2), argnums=(0, 1)), (X, Y)),
    "integers": (jitgrad.jit(lambda i: (i * 7 + 3) // 4 - np.abs(i) % 5),
                 (np.arange(-12, 12, dtype=np.int64).reshape(4, 6),)),
    "comparisons and where": (jitgrad.jit(lambda x, y: np.where(x > y, x, y ** 2)), (X, Y)),
    "a kernel of its own (sort) between fused loops": (jitgrad.jit(lambda x: np.sort(np.sin(x), axis=1) * 2.0),
                                                       (X,)),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_the_second_backend_agrees_with_the_cpu(name):
    fun, args = PROGRAMS[name]
    on_cpu, cpu_lowered = _on("cpu", fun, *args)
    interpreted, lowered = _on(DEVICE, fun, *args)
    assert isinstance(lowered.executable, PythonExecutable)
    assert not isinstance(cpu_lowered.executable, PythonExecutable)
    # the same kernels, planned once by the pipeline
    assert lowered.as_text("kernels") == cpu_lowered.as_text("kernels")
    for got, want in zip(jitgrad.tracing.pytree.tree_flatten(interpreted)[0],
                         jitgrad.tracing.pytree.tree_flatten(on_cpu)[0], strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        if got.dtype.kind in "iub":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5 if got.dtype == np.float32 else 1e-12, atol=1e-14)


def test_the_second_backend_shows_its_listing_and_runs_fused_loops():
    fun, args = PROGRAMS["fused gradient with a full reduction"]
    _, lowered = _on(DEVICE, fun, *args)
    assert "program" in lowered.stage_names()
    program = lowered.as_text("program")
    assert "for r" in program and "sin" in program
    assert any(kernel.fused for kernel in lowered.executable.schedule.kernels)
    value, grad = lowered.run([args[0]])
    np.testing.assert_allclose(value, _w1(args[0]), rtol=1e-12)


def test_both_scalar_contexts_implement_the_whole_protocol():
    from jitgrad.backends.cpu.scalar import CPUScalarContext
    from jitgrad.backends.kernel import ScalarContext
    operations = [n for n, v in vars(ScalarContext).items() if callable(v) and not n.startswith("_")]
    assert {"add", "math", "convert", "load", "store", "loop", "if_then", "index_div"} <= set(operations)
    for context in (CPUScalarContext, PythonScalarContext):
        assert [n for n in operations if not callable(getattr(context, n, None))] == [], context.__name__
