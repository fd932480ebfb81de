"""The Array API namespace of traced arrays (`__array_namespace__`, `jitgrad.array_api`)
and SciPy's array-API-aware functions running on it."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jitgrad
import jitgrad.array_api as xp
from jitgrad.tracing import array_namespace


def test_every_standard_name_is_provided():
    missing = [name for name in array_namespace.STANDARD_NAMES if not hasattr(xp, name)]
    assert missing == []
    assert xp.__array_api_version__ == "2023.12"


def test_traced_arrays_return_the_namespace_and_live_on_the_cpu():
    seen = {}

    def f(x):
        seen["ns"] = x.__array_namespace__()
        seen["device"] = x.device
        assert x.to_device("cpu") is x
        return x
    jitgrad.jit(f)(np.ones(2))
    assert seen["ns"] is array_namespace and seen["device"] == "cpu"
    with pytest.raises(ValueError, match="2021.12, 2022.12, 2023.12"):
        jitgrad.jit(lambda x: x.__array_namespace__(api_version="2099.12"))(np.ones(2))


PROGRAMS = {
    "elementwise": lambda x: xp.sqrt(xp.abs(x)) + xp.atan2(x, 2.0) - xp.pow(x, 2),
    "reductions": lambda x: (xp.sum(x, axis=0), xp.max(x, axis=1, keepdims=True), xp.mean(x), xp.prod(x, axis=1)),
    "std-var": lambda x: (xp.std(x, correction=1), xp.var(x, axis=0, correction=0.0)),
    "manipulation": lambda x: xp.concat([xp.permute_dims(x, (1, 0)), xp.flip(x.T, axis=0)], axis=1),
    "stack-expand": lambda x: xp.squeeze(xp.expand_dims(xp.stack([x, x], axis=0), axis=1), axis=1),
    "reshape-astype": lambda x: xp.astype(xp.reshape(x, (4, 3)), xp.float32),
    "where-clip": lambda x: xp.where(x > 0, x, xp.clip(x, min=-0.5, max=0.5)),
    "matmul-vecdot": lambda x: (xp.matmul(x, xp.matrix_transpose(x)), xp.vecdot(x, x)),
    "creation": lambda x: x + xp.ones((3, 4), dtype=xp.float64) * xp.asarray(2.0) + xp.full((3, 4), 0.5),
    "traced-fill": lambda x: xp.full((2, 3), x[0, 0]) * xp.full_like(x[:2, :3], 2.0),
    "asarray-list": lambda x: xp.asarray([x[0, 0], 1.0, x[1, 1]]),
    "cumulative": lambda x: xp.cumulative_sum(x, axis=1),
    "logic": lambda x: (xp.logical_and(x > 0, x < 1), xp.any(x > 2), xp.all(x > -10, axis=0)),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_namespace_programs_compile_with_numpy_values(name):
    x = np.arange(12.0).reshape(3, 4) / 5 - 1
    expected = PROGRAMS[name](x)
    got = jitgrad.jit(PROGRAMS[name])(x)
    for g, e in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)):
        g, e = np.asarray(g), np.asarray(e)
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-15)


def test_descending_argsort_keeps_ties_in_order():
    x = np.array([3.0, 1.0, 3.0, 2.0, 1.0])
    np.testing.assert_array_equal(xp.argsort(x, descending=True), [0, 2, 3, 1, 4])
    np.testing.assert_array_equal(xp.sort(x, descending=True), [3.0, 3.0, 2.0, 1.0, 1.0])


def test_inspection():
    info = xp.__array_namespace_info__()
    assert info.default_device() == "cpu" and info.devices() == ["cpu"]
    assert info.capabilities()["data-dependent shapes"] is False
    assert set(info.dtypes(kind="real floating")) == {"float32", "float64"}
    assert xp.finfo(xp.float32).eps == np.finfo(np.float32).eps
    assert xp.result_type(np.ones(2, np.float32), 1.0) == np.float32


SCIPY_PROGRAM = textwrap.dedent("""
    import json, os
    os.environ["SCIPY_ARRAY_API"] = "1"
    import numpy as np
    import scipy.special as sc
    import jitgrad
    x = np.array([[1.0, 2.0, -np.inf], [3.0, 1000.0, -2.0]])
    b = np.array([[1.0, 2.0, 3.0], [0.5, 1.0, 0.0]])
    report = {}
    calls = {
        "logsumexp": (lambda v: sc.logsumexp(v), (x,)),
        "logsumexp-axis": (lambda v: sc.logsumexp(v, axis=1, keepdims=True), (x,)),
        "logsumexp-b": (lambda v, w: sc.logsumexp(v, axis=0, b=w), (x, b)),
        "softmax": (lambda v: sc.softmax(v, axis=1), (x,)),
        "log_softmax": (lambda v: sc.log_softmax(v, axis=-1), (x,)),
    }
    for name, (fn, args) in calls.items():
        got, expected = jitgrad.jit(fn)(*args), fn(*args)
        report[name] = bool(np.allclose(got, expected, rtol=1e-14, equal_nan=True)
                            and np.asarray(got).dtype == np.asarray(expected).dtype
                            and np.shape(got) == np.shape(expected))
    v = np.array([0.3, -1.2, 2.0])
    g = jitgrad.grad(lambda v: sc.logsumexp(v))(v)
    report["grad-logsumexp"] = bool(np.allclose(g, sc.softmax(v), rtol=1e-14))
    h = jitgrad.grad(lambda v: np.sum(sc.log_softmax(v) * np.arange(3.0)))(v)
    p = sc.softmax(v)
    report["grad-log_softmax"] = bool(np.allclose(h, np.arange(3.0) - p * np.sum(np.arange(3.0)), rtol=1e-13))
    try:
        jitgrad.jit(lambda v: sc.logsumexp(v, b=b[0]))(v)
        report["mixed"] = "no error"
    except TypeError as err:
        report["mixed"] = str(err)
    print(json.dumps(report))
""")


def test_scipy_array_api_functions_trace_compile_and_differentiate():
    """SciPy reads SCIPY_ARRAY_API when it is imported: a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", SCIPY_PROGRAM], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    mixed = report.pop("mixed")
    assert report == {name: True for name in report} and len(report) == 7
    assert "Multiple namespaces" in mixed        # a NumPy array next to a traced one: SciPy refuses
