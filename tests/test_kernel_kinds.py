"""The kernel-kind extension point (jitgrad/primitives/kernel_kind.py): an op whose
lowering is a `KernelKind` is scheduled as its own kernel, gets allocated result
buffers, and is emitted by the function its kind names for the device."""
import numpy as np
import pytest

import jitgrad
from jitgrad.primitives.kernel_kind import KernelKind
from jitgrad.config import config
from jitgrad.errors import UnsupportedOperationError
from jitgrad.ir import OpDef, TensorType
from jitgrad.primitives import Primitive
from jitgrad.tracing.tracer import Tracer


class PrefixAndReverse(KernelKind):
    emitters = {"cpu": "tests.kernel_kind_emitters:emit_prefix_and_reverse"}


class NoEmitter(KernelKind):
    emitters = {}


def _make(name, kind):
    def infer(x):
        return [x, x]
    prim = Primitive(name, infer, lambda x: [np.cumsum(x), x[::-1].copy()], num_results=2)
    prim.lowering = kind
    return prim


@pytest.fixture(scope="module")
def prims():
    made = [_make("test_prefix_and_reverse", PrefixAndReverse()), _make("test_no_emitter", NoEmitter())]
    yield made
    for prim in made:      # other tests enumerate the registry of real primitives
        OpDef.registry.pop(prim.name, None)


def _program(prim):
    def f(x):
        y = np.sin(x) * 2.0                       # fused map feeding the kernel
        prefix, reverse = prim.bind(y.value)
        p, r = Tracer(prefix), Tracer(reverse)
        return np.exp(p) + r * 3.0, np.sum(r)     # consumers fused after it
    return f


def _reference(x):
    y = np.sin(x) * 2.0
    p, r = np.cumsum(y), y[::-1]
    return np.exp(p) + r * 3.0, np.sum(r)


@pytest.mark.parametrize("fusion", [True, False])
def test_kernel_kind_runs_as_its_own_kernel_with_two_results(prims, fusion):
    saved = config.fusion
    config.fusion = fusion
    try:
        f = jitgrad.jit(_program(prims[0]))
        x = np.linspace(0.1, 1.3, 37)
        got = f(x)
        want = _reference(x)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
        kernels = f.lower(x).as_text("kernels")
        assert "prefixandreverse" in kernels
    finally:
        config.fusion = saved


def test_kernel_kind_without_an_emitter_for_the_device_names_the_op(prims):
    f = jitgrad.jit(_program(prims[1]))
    with pytest.raises(UnsupportedOperationError, match="test_no_emitter has no kernel for device 'cpu'"):
        f(np.ones(4))
