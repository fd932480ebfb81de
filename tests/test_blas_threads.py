"""Loop threads beside BLAS: programs that call BLAS run their large fused loops on
libgomp's threads when libgomp's idle workers sleep, with results bit-identical for every
thread count; the wait policy is set only while libgomp loads and never overrides the
user's own."""
import json
import os
import subprocess
import sys

import numpy as np

import jitgrad as jg
from jitgrad.config import config


def mlp_loss(W, X):
    h = np.tanh(X @ W)
    return np.sum(np.sin(h) * np.exp(-h * h)) + np.sum(np.cos(X) * 0.5)


def compiled_under(threads: int):
    saved = config.num_threads
    config.num_threads = threads
    try:
        f = jg.jit(jg.value_and_grad(mlp_loss, argnums=(0, 1)))
        rng = np.random.default_rng(3)
        W, X = rng.standard_normal((64, 256)) / 8, rng.standard_normal((4096, 64))
        return f(W, X), f.lower(W, X).as_text("llvm")
    finally:
        config.num_threads = saved


def test_bit_identical_for_every_thread_count():
    (v1, g1), _ = compiled_under(1)
    for threads in (2, 3, 0):
        (v, g), _ = compiled_under(threads)
        assert v == v1
        for a, b in zip(g, g1):
            np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(3)
    W, X = rng.standard_normal((64, 256)) / 8, rng.standard_normal((4096, 64))
    np.testing.assert_allclose(v1, mlp_loss(W, X), rtol=1e-12)


def test_blas_programs_use_threads_when_workers_sleep():
    from jitgrad.backends.cpu import thread_pool
    from jitgrad.backends.cpu.engine import Threads
    from jitgrad.config import config
    _, text = compiled_under(2)
    assert "scipy_cblas_dgemm64_" in text
    if config.threads_pool == "jitgrad" and thread_pool.available():     # its idle workers always sleep
        assert thread_pool.RUN in text
    else:
        assert ("GOMP_parallel" in text) == (Threads.available and Threads.beside_blas)


PROBE = """
import json, os
import numpy as np, jitgrad as jg
jg.jit(lambda a: a * 2.0)(np.ones(3))
from jitgrad.backends.cpu.engine import Threads
print(json.dumps({"beside_blas": Threads.beside_blas, "available": Threads.available,
                  "spin": os.environ.get("GOMP_SPINCOUNT")}))
"""


def probe(**env_changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_wait_policy_is_set_for_loading_only_and_respects_the_user():
    plain = probe()
    if not plain["available"]:
        assert not plain["beside_blas"]
        return
    assert plain == {"beside_blas": True, "available": True, "spin": None}   # environment restored
    assert probe(OMP_WAIT_POLICY="active")["beside_blas"] is False
    assert probe(GOMP_SPINCOUNT="300k")["beside_blas"] is False
    passive = probe(OMP_WAIT_POLICY="PASSIVE")
    assert passive["beside_blas"] is True and passive["spin"] is None
    assert probe(GOMP_SPINCOUNT="100")["spin"] == "100"
