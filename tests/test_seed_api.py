"""TenfloweRS's API in jitgrad: its operation list as TrackedTensor/DualTensor methods
and jitgrad.ops functions, callable DualTensor values, tape introspection (TapeNode,
to_ir, Operation), no global hooks, and the porting guide's examples, which run here."""
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import jitgrad
from jitgrad import DualTensor, GradientTape, TrackedTensor, ops

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "porting-from-tenflowers.md"

X0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]])
W0 = np.array([[1.0, -0.5], [2.0, 0.3], [-1.0, 0.7]])

# name: (method call, function call), each of a tensor or array x (and W0 where it takes one)
OPERATIONS = {
    "add": (lambda x: x.add(2.0), lambda x: ops.add(x, 2.0)),
    "sub": (lambda x: x.sub(X0 * 0.5), lambda x: ops.sub(x, X0 * 0.5)),
    "mul": (lambda x: x.mul(x), lambda x: ops.mul(x, x)),
    "div": (lambda x: x.div(3.0 + X0 ** 2), lambda x: ops.div(x, 3.0 + X0 ** 2)),
    "pow": (lambda x: x.pow(3), lambda x: ops.pow(x, 3)),
    "neg": (lambda x: x.neg(), lambda x: ops.neg(x)),
    "matmul": (lambda x: x.matmul(W0), lambda x: ops.matmul(x, W0)),
    "transpose": (lambda x: x.transpose() * np.arange(2.0), lambda x: ops.transpose(x) * np.arange(2.0)),
    "reshape": (lambda x: x.reshape(3, 2) * W0, lambda x: ops.reshape(x, (3, 2)) * W0),
    "sum": (lambda x: x.sum(axis=1) ** 2, lambda x: ops.sum(x, axis=1) ** 2),
    "mean": (lambda x: x.mean(axis=0) ** 2, lambda x: ops.mean(x, axis=0) ** 2),
    "max": (lambda x: x.max(axis=1) ** 2, lambda x: ops.max(x, axis=1) ** 2),
    "max_with_indices": (lambda x: x.max_with_indices(axis=0)[0] ** 2,
                         lambda x: ops.max(x, axis=0, return_indices=True)[0] ** 2),
    "relu": (lambda x: x.relu() * X0, lambda x: ops.relu(x) * X0),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: ops.sigmoid(x)),
    "tanh": (lambda x: x.tanh(), lambda x: ops.tanh(x)),
    "softmax": (lambda x: x.softmax(axis=1) * X0, lambda x: ops.softmax(x, axis=1) * X0),
}

NUMPY = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softmax": lambda x: np.exp(x) / np.sum(np.exp(x), axis=1, keepdims=True) * X0,
    "relu": lambda x: np.maximum(x, 0) * X0,
}


def test_every_seed_operation_is_offered():
    assert set(ops.SEED_OPERATIONS) == {"add", "sub", "mul", "div", "pow", "neg", "matmul", "transpose",
                                        "reshape", "sum", "mean", "max", "relu", "sigmoid", "tanh", "softmax",
                                        "conv2d", "max_pool2d", "batch_norm"}
    for name in ops.SEED_OPERATIONS:
        assert callable(getattr(TrackedTensor, name)) and callable(getattr(DualTensor, name)), name


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_method_and_function_agree_with_numpy_and_jitgrad(name):
    method, function = OPERATIONS[name]
    expected = function(X0)                              # the function on plain NumPy arrays
    assert type(expected) is np.ndarray
    if name in NUMPY:
        np.testing.assert_allclose(expected, NUMPY[name](X0), rtol=1e-12)

    def loss(x):
        return np.sum(np.sin(function(x)))
    reference = jitgrad.grad(loss)(X0)                   # the compiled path, for the derivative
    # reverse mode on a tape, method style
    tape = GradientTape()
    x = tape.watch(X0)
    y = method(x)
    assert isinstance(y, TrackedTensor)
    np.testing.assert_allclose(y.value, expected, rtol=1e-12)
    np.testing.assert_allclose(tape.gradient(np.sum(np.sin(y)), x), reference, rtol=1e-10, atol=1e-12)
    # forward mode, method style: the tangent along V is the gradient's projection
    V = np.cos(np.arange(6.0)).reshape(2, 3)
    d = method(DualTensor(X0, V))
    np.testing.assert_allclose(d.value, expected, rtol=1e-12)
    s = np.sum(np.sin(d))
    np.testing.assert_allclose(s.tangent(), np.sum(reference * V), rtol=1e-10, atol=1e-12)


def test_max_with_indices():
    tape = GradientTape()
    x = tape.watch(X0)
    values, where = x.max_with_indices(axis=1)
    assert type(where) is np.ndarray and where.dtype.kind == "i"
    np.testing.assert_array_equal(where, [2, 0])
    np.testing.assert_array_equal(values.value, [2.0, 1.5])
    g = tape.gradient(values.sum(), x)
    np.testing.assert_array_equal(g, [[0, 0, 1], [1, 0, 0]])
    flat_max, flat_at = ops.max_with_indices(X0)
    assert flat_max == 2.0 and flat_at == 2


def test_neural_operations_are_jitgrad_nn_and_tensor_methods():
    from jitgrad import nn
    assert (ops.conv2d, ops.max_pool2d, ops.batch_norm) == (nn.conv2d, nn.max_pool2d, nn.batch_norm)
    x = np.arange(32.0).reshape(1, 2, 4, 4)
    w = np.ones((1, 2, 3, 3))
    with GradientTape() as tape:
        xt = tape.watch(x)
        y = np.sum(xt.conv2d(w, padding=1).max_pool2d(2).batch_norm(np.zeros(1), np.ones(1)))
    np.testing.assert_allclose(y.numpy(), np.sum(nn.batch_norm(nn.max_pool2d(nn.conv2d(x, w, padding=1), 2),
                                                       np.zeros(1), np.ones(1))))
    np.testing.assert_allclose(tape.gradient(y, xt), jitgrad.grad(lambda a: np.sum(nn.batch_norm(
        nn.max_pool2d(nn.conv2d(a, w, padding=1), 2), np.zeros(1), np.ones(1))))(x))


def test_value_numpy_shape_dtype():
    d = DualTensor(np.array([1.0, 2.0], dtype=np.float32), 1.0)
    z = d.mul(d)
    assert z.value() is z.value and z.tangent() is z.tangent
    np.testing.assert_array_equal(z.value(), [1.0, 4.0])
    np.testing.assert_array_equal(z.tangent(), [2.0, 4.0])
    assert type(z.value + 1) is np.ndarray and type(np.sin(z.tangent)) is np.ndarray
    assert type(z.numpy()) is np.ndarray and z.shape == (2,) and z.dtype == np.float32
    assert repr(z.value) == repr(np.array([1.0, 4.0], dtype=np.float32))
    tape = GradientTape()
    base = np.ones((2, 3))
    t = tape.watch(base)
    assert t.value is base and type(t.numpy()) is np.ndarray and t.numpy() is not base
    assert t.shape == (2, 3) and t.dtype == np.float64


def test_tape_nodes():
    tape = GradientTape(record_sites=True)
    x = tape.variable(X0.astype(np.float32))
    w = tape.watch(W0.astype(np.float32))
    h = x @ w
    y = h.tanh().sum()
    nodes = tape.nodes
    assert [n.op for n in nodes] == ["matmul", "tanh", "sum"]
    first = nodes[0]
    assert first.input_nodes == (0, 1) and first.input_shapes == ((2, 3), (3, 2))
    assert first.output_shape == (2, 2) and first.output_dtype == np.float32
    assert nodes[2].output_shape == () and nodes[2].input_nodes == (nodes[1].node,)
    assert all(n.location.startswith(__file__.split("/")[-1]) or "test_seed_api.py" in n.location for n in nodes)
    assert "= tanh(" in str(nodes[1]) and "test_seed_api.py" in str(nodes[1])
    assert GradientTape().nodes == []
    plain = GradientTape()
    t = plain.watch(X0)
    (t * 2.0).sum()
    assert [n.location for n in plain.nodes] == [None, None]       # sites are opt-in
    del y


def test_tape_to_ir_is_the_compiled_gradient():
    tape = GradientTape(persistent=True)
    x = tape.watch(X0)
    y = np.sum(np.exp(x) * 2.0)
    text = tape.to_ir(y, x)
    assert "func @" in text and "exp(" in text
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), 2 * np.exp(X0))


def test_operation_enumerates_the_primitives():
    from jitgrad.primitives import Primitive
    names = {op.name for op in jitgrad.Operation}
    assert names == set(Primitive.all)
    assert {"add", "mul", "tanh", "dot_general", "reduce_sum", "reduce_max"} <= names
    assert jitgrad.Operation.mul.primitive is Primitive.all["mul"]
    assert jitgrad.Operation.mul.differentiable and jitgrad.Operation["tanh"].rules["transpose"] is None
    assert jitgrad.ops.Operation is jitgrad.Operation


def test_importing_jitgrad_installs_no_global_hooks():
    """NumPy's namespace, ndarray's operators, error state and print options, and
    Python's trace and profile hooks are the same before and after jitgrad is loaded."""
    code = r"""
import sys, numpy as np
def state():
    return ({k: id(v) for k, v in vars(np).items()}, {k: id(v) for k, v in vars(np.ndarray).items()},
            np.geterr(), np.get_printoptions(), sys.gettrace(), sys.getprofile(), sys.getswitchinterval())
before = state()
import jitgrad
jitgrad.GradientTape, jitgrad.DualTensor, jitgrad.Graph, jitgrad.ops, jitgrad.custom_vjp
jitgrad.jit(lambda a: a * 2.0)(np.ones(2))
tape = jitgrad.GradientTape()
jitgrad.ops.sum(tape.watch(np.ones(2)) * 2.0)
after = state()
changed = [k for k in before[0] if before[0][k] != after[0].get(k)]
assert not changed, changed
assert before[1:] == after[1:], (before[1:], after[1:])
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def guide_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_every_seed_example():
    text = GUIDE.read_text()
    for heading in ("Basic gradient computation", "Forward-mode automatic differentiation",
                    "Integration with static graphs", "Higher-order derivatives", "Custom gradient functions",
                    "Supported operations", "Architecture names"):
        assert f"## {heading}" in text
    assert len(re.findall(r"```rust\n", text)) == 5 and len(guide_blocks()) >= 7


@pytest.mark.parametrize("k", range(len(guide_blocks())))
def test_guide_example_runs(k, capsys):
    exec(compile(guide_blocks()[k], f"{GUIDE.name}[python block {k}]", "exec"), {"__name__": "guide"})
