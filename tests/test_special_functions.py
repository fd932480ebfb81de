"""The gamma family on traced arrays: scipy.special.gammaln, digamma (psi), zeta(s, q) and
polygamma(n, x), from the `lgamma`, `digamma` and `zeta` primitives.

Values are checked against mpmath (the oracle) and SciPy. Near a zero of gammaln or
digamma the value is the difference of terms of size about 1 + log(1 + |x|) (the
reflection, the recurrence), so no float64 method has a small relative error there
(SciPy's own is thousands of ulp); errors are therefore measured in ulps of
max(|value|, 1 + log(1 + |x|)) below x = 3, and in ulps of the value above. Special
values (poles, signed zeros, infinities, NaN) must equal SciPy's exactly; float32 is
computed in float64 and rounded once, as SciPy's float32 loops, so it must equal SciPy's
result bit for bit. Derivatives (digamma, trigamma, polygamma) against central
differences to second order and against SciPy; the CUDA lowering through ptxas.
"""
import json
import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest
import scipy.special as sc

import jitgrad
from jitgrad.errors import JitgradError
from jitgrad.primitives import special
from jitgrad.tracing.tracer import trace

from helpers import check_grads

mpmath.mp.prec = 100
RNG = np.random.default_rng(11)
NEGATIVE_AND_SMALL = np.concatenate([
    RNG.uniform(-60, 3, 700), RNG.uniform(-3, 3, 700),
    -RNG.integers(1, 60, 200) + RNG.choice([-1.0, 1.0], 200) * 10.0 ** RNG.uniform(-12, -2, 200)])
LARGE = np.concatenate([np.linspace(3, 60, 5701), np.geomspace(60, 1e300, 3001)])
TRUTH = {"gammaln": lambda x: mpmath.log(abs(mpmath.gamma(x))), "digamma": mpmath.digamma}
# measured maxima over NEGATIVE_AND_SMALL (ulps of the terms' scale): SciPy's are 4 and
# about 1e12 (its tan(pi r) near the negative poles), jitgrad's reflection keeps pi r small
BOUND_IN_TERMS = {"gammaln": 4, "digamma": 8}


def _ulps(got, expected, scale=None):
    scale = np.abs(expected) if scale is None else scale
    return np.abs(np.asarray(got, np.float64) - expected) / np.spacing(scale)


def _truth(name, xs):
    return np.array([float(TRUTH[name](mpmath.mpf(float(x)))) for x in xs])


@pytest.mark.parametrize("name", ["gammaln", "digamma"])
def test_negative_and_small_arguments_against_mpmath(name):
    truth = _truth(name, NEGATIVE_AND_SMALL)
    scale = np.maximum(np.abs(truth), 1 + np.log1p(np.abs(NEGATIVE_AND_SMALL)))
    compiled = jitgrad.jit(lambda x: getattr(sc, name)(x))(NEGATIVE_AND_SMALL)
    reference = getattr(special, f"{'lgamma' if name == 'gammaln' else name}_p").impl(NEGATIVE_AND_SMALL)
    assert _ulps(compiled, truth, scale).max() <= BOUND_IN_TERMS[name]
    assert _ulps(reference, truth, scale).max() <= BOUND_IN_TERMS[name]


@pytest.mark.parametrize("name", ["gammaln", "digamma"])
def test_large_arguments_within_4_ulp_of_scipy(name):
    got = jitgrad.jit(lambda x: getattr(sc, name)(x))(LARGE)
    assert _ulps(got, getattr(sc, name)(LARGE)).max() <= 4


SPECIAL_VALUES = np.array([0.0, -0.0, -1.0, -2.0, -35.0, -1e10, 1.0, 2.0, 3.0, np.inf, -np.inf, np.nan, 1e-320,
                           -1e-320, 5e-324, 2.6e305, 1e306, 1.7e308, -34.5, -0.5, 0.5, 10.0, 1e17, 1e18])


@pytest.mark.parametrize("name", ["gammaln", "digamma"])
def test_special_values_are_scipys(name):
    with np.errstate(all="ignore"):
        expected = getattr(sc, name)(SPECIAL_VALUES)
    got = jitgrad.jit(lambda x: getattr(sc, name)(x))(SPECIAL_VALUES)
    exact = ~np.isfinite(expected) | (expected == 0)
    np.testing.assert_array_equal(got[exact], expected[exact])
    np.testing.assert_array_equal(np.signbit(got[exact]), np.signbit(expected[exact]))
    assert _ulps(got[~exact], expected[~exact]).max() <= 4


@pytest.mark.parametrize("name", ["gammaln", "digamma"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64])
def test_other_dtypes_follow_scipy_loops(name, dtype):
    with np.errstate(all="ignore"):
        x = np.concatenate([np.linspace(-30, 30, 2401), [0.0, np.inf, -np.inf]]).astype(dtype)
        expected = getattr(sc, name)(x)
    got = jitgrad.jit(lambda x: getattr(sc, name)(x))(x)
    assert got.dtype == expected.dtype
    if dtype == np.float32:         # float64 rounded once, as SciPy's float32 loop
        np.testing.assert_array_equal(got, expected)
    else:
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(got[~finite], expected[~finite])


@pytest.mark.parametrize("fn, x", [
    (lambda x: sc.gammaln(x), np.array([0.3, 1.5, 7.0, -0.4, -2.7, 20.0])),
    (lambda x: sc.digamma(x), np.array([0.3, 1.5, 7.0, -0.4, -2.7, 20.0])),
    (lambda x: sc.zeta(2.5, x), np.array([0.3, 1.5, 7.0, 2.2])),
    (lambda x: sc.zeta(3.0, x), np.array([-0.4, -2.7, 0.8])),
    (lambda x: sc.polygamma(2, x), np.array([0.4, -1.3, 5.0])),
], ids=["gammaln", "digamma", "zeta", "zeta-negative-q", "polygamma"])
def test_gradients_match_finite_differences_to_second_order(fn, x):
    traced = trace(fn, (x,))
    check_grads(traced.function, [x], order=2)


def test_derivatives_are_digamma_trigamma_and_polygamma():
    x = np.array([0.25, 1.5, 3.75, 12.0, -0.6, -3.3, 41.0])
    d1 = jitgrad.jit(jitgrad.grad(lambda x: np.sum(sc.gammaln(x))))(x)
    assert _ulps(d1, sc.digamma(x)).max() <= 8
    d2 = jitgrad.jit(jitgrad.vmap(jitgrad.grad(jitgrad.grad(lambda t: sc.gammaln(t)))))(x)
    d3 = jitgrad.jit(jitgrad.vmap(jitgrad.grad(jitgrad.grad(jitgrad.grad(lambda t: sc.gammaln(t))))))(x)
    truth2 = np.array([float(mpmath.polygamma(1, mpmath.mpf(v))) for v in x])
    truth3 = np.array([float(mpmath.polygamma(2, mpmath.mpf(v))) for v in x])
    assert _ulps(d2, truth2).max() <= 16
    assert _ulps(d3, truth3).max() <= 16


@pytest.mark.parametrize("s", [1.5, 2.0, 3.5, 7.0, 20.0])
def test_zeta_of_positive_q_within_4_ulp_of_scipy(s):
    q = np.concatenate([np.geomspace(1e-6, 1e12, 3001), np.linspace(0.01, 20, 2000)])
    got = jitgrad.jit(lambda q: sc.zeta(s, q))(q)
    expected = sc.zeta(s, q)
    finite = np.isfinite(expected) & (expected != 0)
    np.testing.assert_array_equal(got[~finite], expected[~finite])
    assert _ulps(got[finite], expected[finite]).max() <= 4


@pytest.mark.parametrize("s", [2, 3, 5, 8])
def test_zeta_of_negative_q_against_mpmath(s):
    """The reflection formula for integer s (SciPy sums |q| terms instead)."""
    q = -RNG.integers(0, 20, 300) - RNG.uniform(0.05, 0.95, 300)
    got = jitgrad.jit(lambda q: sc.zeta(float(s), q))(q)
    truth = np.array([float(mpmath.zeta(s, mpmath.mpf(v))) for v in q])
    assert _ulps(got, truth).max() <= 32


def test_zeta_domain_is_scipys():
    q = np.array([0.0, -0.0, -1.0, -7.0, -1.5, -np.inf, np.inf, np.nan, 1e9, 2.0])
    for s in (1.0, 0.5, -2.0, 2.0, 2.5, 3.0):
        with np.errstate(all="ignore"):
            expected = sc.zeta(s, q)
        got = jitgrad.jit(lambda q, s=s: sc.zeta(s, q))(q)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        exact = ~np.isfinite(expected)
        np.testing.assert_array_equal(got[exact], expected[exact])


@pytest.mark.parametrize("n", [0, 1, 2, 3, 6])
def test_polygamma_of_traced_x_and_scipys_function_restored(n):
    x = np.array([-7.25, -2.5, -0.3, 0.7, 3.0, 25.5, 1e4])
    got = jitgrad.jit(lambda x: sc.polygamma(n, x))(x)
    truth = np.array([float(mpmath.polygamma(n, mpmath.mpf(v))) for v in x])
    assert got.dtype == np.float64
    assert _ulps(got, truth).max() <= 32
    assert sc.polygamma.__module__ == "scipy.special._basic"        # SciPy's own, outside traces


def test_polygamma_of_high_order_up_to_the_bound_and_refused_beyond():
    """Order 100 (its reflection coefficients near 1e167) still matches mpmath for negative
    and positive x; past MAX_INTEGER_ZETA_ORDER the coefficients would overflow float64,
    so the trace raises a clear error instead of an OverflowError or a wrong number."""
    n = special.MAX_INTEGER_ZETA_ORDER - 1
    x = np.array([-7.7, -0.5, 0.5, 3.0])
    got = jitgrad.jit(lambda x: sc.polygamma(n, x))(x)
    truth = np.array([float(mpmath.polygamma(n, mpmath.mpf(v))) for v in x])
    assert _ulps(got, truth).max() <= 64
    with pytest.raises(JitgradError, match=r"order s = n \+ 1 = 201 is not supported"):
        jitgrad.jit(lambda x: sc.polygamma(200, x))(x)


def test_zeta_with_a_traced_order_is_refused():
    with pytest.raises(JitgradError, match="order s known at trace time"):
        jitgrad.jit(lambda s, q: sc.zeta(s, q))(np.array([2.0]), np.array([1.5]))


def test_zeta_with_an_array_of_orders():
    s, q = np.array([2.0, 3.5, 2.0]), np.array([[0.5, 1.5, 9.0], [2.0, 0.25, -0.5]])
    got = jitgrad.jit(lambda q: sc.zeta(s, q))(q)
    assert _ulps(got, sc.zeta(s, q)).max() <= 4


def test_cuda_emulator_agrees_with_the_cpu():
    x = np.linspace(-40, 40, 1601)
    f = lambda x: (sc.gammaln(x), sc.digamma(x), sc.zeta(3.0, x))     # noqa: E731
    cpu, emulated = jitgrad.jit(f)(x), jitgrad.jit(f, device="cuda-emulator")(x)
    for a, b in zip(cpu, emulated, strict=True):
        finite = np.isfinite(a)
        np.testing.assert_array_equal(np.isfinite(b), finite)
        scale = np.maximum(np.abs(a[finite]), 1 + np.log1p(np.abs(x[finite])))
        assert _ulps(b[finite], a[finite], scale).max() <= 8


PTX_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from llvmlite import ir
from jitgrad.backends import backend_for
from jitgrad.backends.cuda import ptx as ptx_tools
from test_primitive_rules import SPECS
backend = backend_for("cuda")
module = ir.Module(name="special")
ptx_tools.prepare_module(module)
import numpy as np
import scipy.special as sc
from jitgrad.tracing.tracer import trace
functions = [spec.function() for spec in SPECS if spec.prim in ("lgamma", "digamma", "zeta", "signbit")]
functions.append(trace(lambda x: (sc.gammaln(x), sc.digamma(x), sc.zeta(3.0, x)), (np.ones(8, np.float32),)).function)
names = []
for k, fn in enumerate(functions):
    names.extend(launch.name for launch in backend.build(fn, None, None, module=module, symbol=f"jg_{{k}}")[2])
report = {{}}
for arch in ptx_tools.DEFAULT_ARCHS:
    text = ptx_tools.emit_ptx(str(module), names, arch)
    report[arch] = {{"unresolved": ".extern .func" in text, "entries": all(f".entry {{n}}(" in text for n in names),
                    "warnings": ptx_tools.ptxas_check(text, arch, timeout=300)}}
print(json.dumps(report))
"""


def test_cuda_lowering_passes_ptxas():
    """In a subprocess: the NVPTX backend ends the process on what it cannot lower."""
    from jitgrad.backends.cuda import ptx as ptx_tools
    assert ptx_tools.ptxas_path() is not None, "ptxas not found: pip install -e '.[test]' installs nvidia-cuda-nvcc"
    script = PTX_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for arch, result in json.loads(run.stdout.splitlines()[-1]).items():
        assert result == {"unresolved": False, "entries": True, "warnings": []}, (arch, result)
