"""jitgrad.distributed under `mpiexec -n 2` (and 3), and without a launcher.

One `mpiexec -n 2` run of this file's worker (`python tests/test_distributed.py worker DIR`)
does every two-rank scenario and saves what each rank saw; the tests below read and check
those files. Subprocesses have timeouts, so a hang fails a test instead of the session.

Tolerances (docs/distributed.md): 2 ranks on half batches against 1 process on the whole
batch, float64, 40 SGD steps: parameters within 1e-12 relative (the two mean a batch in
a different order; nothing else differs). Accuracy on the example's test set, 150 steps of
batch 64: compression bfloat16/float16 within 1 point of float32, top-5% with error
feedback within 3 points, mixed precision (bfloat16, float16 with loss scaling) within
1.5 points.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import sysconfig

import ml_dtypes
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "train_data_parallel.py"
ACCURACY_MARGIN = {"compression=bfloat16": 0.01, "compression=float16": 0.01, "compression=topk": 0.03,
                   "mixed=bfloat16": 0.015, "mixed=float16": 0.015}


def _environment(**extra) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **extra)
    env.pop("PYTHONSTARTUP", None)
    return env


def mpiexec_command() -> str:
    """The mpiexec installed next to this Python (the mpich wheel's), else the one on PATH."""
    found = shutil.which("mpiexec", path=sysconfig.get_path("scripts")) or shutil.which("mpiexec")
    assert found, "mpiexec not found: pip install -e \".[test]\" installs the mpich wheel, which provides it"
    return found


def _mpiexec(n: int, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([mpiexec_command(), "-n", str(n), sys.executable, *args], capture_output=True,
                            text=True, timeout=timeout, env=_environment(), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=_environment(**env), cwd=ROOT)


# --------------------------------------------------------------------------- the worker

def _load_example():
    spec = importlib.util.spec_from_file_location("train_data_parallel", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _worker(outdir: str) -> None:
    import jitgrad
    from jitgrad import distributed as dist
    jitgrad.config.config.cache_dir = os.path.join(outdir, "cache")
    jitgrad.config.config.num_threads = 1
    jitgrad.config.config.verify_ir = True
    dist.init()
    me = dist.rank()
    example = _load_example()
    saved: dict = {"rank": me, "size": dist.size()}

    # 2 ranks on half batches against this process alone on whole batches, float64
    saved["dp64"], _ = example.train(40, dtype=np.float64)
    if me == 0:
        saved["ref64"], _ = example.train(40, dtype=np.float64, distributed=False)

    # accuracy of each option, and every rank's final parameters (bit equality)
    _, _, x_test, y_test = example.make_dataset()
    runs = {"float32": {}, "compression=bfloat16": {"compression": "bfloat16"},
            "compression=float16": {"compression": "float16"}, "compression=topk": {"compression": "topk"},
            "mixed=bfloat16": {"mixed": "bfloat16"}, "mixed=float16": {"mixed": "float16"}}
    saved["params"], saved["accuracy"] = {}, {}
    for name, options in runs.items():
        params, _ = example.train(150, **options)
        saved["params"][name] = params
        saved["accuracy"][name] = example.accuracy(params, x_test, y_test)

    # allreduce itself: random trees, several bucket sizes, op sum and mean
    rng = np.random.default_rng(100 + me)
    tree = {"a": rng.standard_normal((300, 7)).astype(np.float32), "b": [rng.standard_normal(5), np.float64(2.5)],
            "c": rng.standard_normal((3, 4)).astype(np.float16)}
    saved["tree"] = tree
    saved["reduced"] = {cap: dist.allreduce(tree, "mean", bucket_bytes=cap) for cap in (64, 1000, 1 << 20)}
    saved["summed"] = dist.allreduce(tree, "sum")
    topk = dist.TopK(0.1)
    saved["topk"] = [dist.allreduce(tree, "sum", compression=topk)]
    saved["topk_residuals"] = [dict(topk.residuals)]
    saved["topk"].append(dist.allreduce(tree, "sum", compression=topk))
    saved["bf16"] = dist.allreduce(tree, compression="bfloat16", bucket_bytes=1000)
    whole_buffers, dist._WHOLE_BUFFER_RANKS = dist._WHOLE_BUFFER_RANKS, 0        # all-to-all + all-gather
    saved["two_round"] = {cap: dist.allreduce(tree, "mean", bucket_bytes=cap) for cap in (64, 1 << 20)}
    saved["two_round_bf16"] = dist.allreduce(tree, compression="bfloat16", bucket_bytes=1000)
    dist._WHOLE_BUFFER_RANKS = whole_buffers
    pending = dist.allreduce_start(tree, "sum", bucket_bytes=64)
    saved["overlapped"] = (dist.allreduce(tree, "sum", bucket_bytes=64), pending.wait())

    saved["broadcast"] = dist.broadcast({"w": np.full(3, float(me)), "step": np.int64(me * 7)}, root=1)
    try:
        dist.allreduce({"x": np.zeros(4 + me)})
    except jitgrad.ArgumentError as err:
        saved["mismatch"] = str(err)
    with open(os.path.join(outdir, f"rank{me}.pkl"), "wb") as f:
        pickle.dump(saved, f)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("mpi")
    _mpiexec(2, str(pathlib.Path(__file__).resolve()), "worker", str(outdir), timeout=240)
    out = []
    for r in range(2):
        with open(outdir / f"rank{r}.pkl", "rb") as f:
            out.append(pickle.load(f))
    return out


def _same_bits(a, b) -> bool:
    from jitgrad.tracing.pytree import tree_flatten
    la, ta = tree_flatten(a)
    lb, tb = tree_flatten(b)
    return ta == tb and all(np.asarray(x).dtype == np.asarray(y).dtype
                            and np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb))


# --------------------------------------------------------------------------- two ranks

def test_two_ranks_train_like_one_process_on_the_whole_batch(ranks):
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["size"] == 2
    ref = ranks[0]["ref64"]
    for r in ranks:
        for k in ref:
            np.testing.assert_allclose(r["dp64"][k], ref[k], rtol=1e-12, atol=1e-12 * np.abs(ref[k]).max())
    assert not np.array_equal(ranks[0]["dp64"]["W1"], np.asarray(_load_example().init_params(dtype=np.float64)["W1"]))


def test_ranks_agree_bit_for_bit(ranks):
    assert _same_bits(ranks[0]["dp64"], ranks[1]["dp64"])
    for name in ranks[0]["params"]:
        assert _same_bits(ranks[0]["params"][name], ranks[1]["params"][name]), name
    for key in ("summed", "topk", "overlapped"):
        assert _same_bits(ranks[0][key], ranks[1][key]), key
    for cap in ranks[0]["reduced"]:
        assert _same_bits(ranks[0]["reduced"][cap], ranks[1]["reduced"][cap])


def test_allreduce_adds_in_rank_order_whatever_the_buckets(ranks):
    t0, t1 = ranks[0]["tree"], ranks[1]["tree"]
    for cap, reduced in ranks[0]["reduced"].items():
        assert reduced["a"].dtype == np.float32 and reduced["c"].dtype == np.float16
        expected = {"a": (t0["a"] + t1["a"]) / np.float32(2), "c": (t0["c"] + t1["c"]) / np.float16(2),
                    "b": [(t0["b"][0] + t1["b"][0]) / 2, (t0["b"][1] + t1["b"][1]) / 2]}
        assert _same_bits(reduced, expected), cap
    summed = ranks[0]["summed"]
    assert np.array_equal(summed["a"], t0["a"] + t1["a"]) and summed["b"][1] == 5.0
    overlapped, pending = ranks[0]["overlapped"]
    assert _same_bits(overlapped, summed) and _same_bits(pending, summed)


def test_both_exchange_schemes_give_the_same_bits(ranks):
    """Two ranks all-gather whole buffers (one round); more ranks use all-to-all +
    all-gather (two rounds). Forced on two ranks, the second gives the first's bits."""
    for r in ranks:
        for cap, reduced in r["two_round"].items():
            assert _same_bits(reduced, ranks[0]["reduced"][cap]), cap
        assert _same_bits(r["two_round_bf16"], ranks[0]["bf16"]) and _same_bits(r["bf16"], ranks[0]["bf16"])
    t0, t1 = ranks[0]["tree"], ranks[1]["tree"]
    bf16 = ranks[0]["bf16"]["a"]
    wire = [t["a"].astype(ml_dtypes.bfloat16).astype(np.float32) for t in (t0, t1)]
    assert bf16.dtype == np.float32
    assert np.array_equal(bf16, ((wire[0] + wire[1]) / np.float32(2)).astype(ml_dtypes.bfloat16).astype(np.float32))


def test_topk_sends_the_largest_entries_and_keeps_the_rest(ranks):
    sent = []
    for r in ranks:
        a = r["tree"]["a"].reshape(-1)
        (residual,) = [v for v in r["topk_residuals"][0].values() if v.dtype == np.float32]
        part = a - residual                      # what this rank sent: its 10% largest entries
        assert np.count_nonzero(part) == int(np.ceil(0.1 * a.size))
        assert np.array_equal(part[part != 0], a[part != 0]) and np.all(residual[part != 0] == 0)
        assert np.abs(part).min(initial=np.inf, where=part != 0) >= np.abs(residual).max()
        sent.append(part)
    first = ranks[0]["topk"][0]["a"].reshape(-1)
    assert np.array_equal(first, sent[0] + sent[1])
    # error feedback: the second call sends entries the first one kept back
    second = ranks[0]["topk"][1]["a"].reshape(-1)
    assert np.count_nonzero(second[first == 0]) > 0


def test_broadcast_and_a_mismatched_tree(ranks):
    for r in ranks:
        assert np.array_equal(r["broadcast"]["w"], np.ones(3)) and r["broadcast"]["step"] == 7
        assert "another structure" in r["mismatch"]


def test_compression_and_mixed_precision_reach_the_same_accuracy(ranks):
    accuracy = ranks[0]["accuracy"]
    assert accuracy["float32"] > 0.8
    for name, margin in ACCURACY_MARGIN.items():
        assert abs(accuracy[name] - accuracy["float32"]) <= margin, (name, accuracy)
    assert not _same_bits(ranks[0]["params"]["float32"], ranks[0]["params"]["compression=bfloat16"])


# --------------------------------------------------------------------------- other worlds

def test_three_ranks_add_in_rank_order(tmp_path):
    # each rank writes its own file: the launcher may interleave the ranks' stdout
    code = ("import numpy as np, pathlib, sys\nfrom jitgrad import distributed as dist\n"
            "dist.init()\n"
            "values = [1.0, 1e16, -1e16]\n"
            "out = dist.allreduce(np.full(5, values[dist.rank()]), 'sum', bucket_bytes=16)\n"
            "pathlib.Path(sys.argv[1], f'rank{dist.rank()}').write_text(f'{dist.size()} {out.tolist()}')\n")
    _mpiexec(3, "-c", code, str(tmp_path), timeout=60)
    lines = [(tmp_path / f"rank{r}").read_text() for r in range(3)]
    assert lines == ["3 [0.0, 0.0, 0.0, 0.0, 0.0]"] * 3      # (1 + 1e16) - 1e16: rank order on every rank


SINGLE = ("import numpy as np, jitgrad\nfrom jitgrad import distributed as dist\n"
          "dist.init()\n"
          "step = dist.data_parallel(jitgrad.jit_grad(lambda w, x: np.sum((x @ w) ** 2)))\n"
          "g = step(np.ones(3), np.ones((2, 3)))\n"
          "h = dist.allreduce({'g': np.arange(4.0)}, compression='bfloat16')\n"
          "print(dist.rank(), dist.size(), g.tolist(), h['g'].tolist(), dist.shard(np.arange(4)).tolist())\n")


def test_a_single_process_is_a_world_of_one():
    result = _python(SINGLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "0 1 [12.0, 12.0, 12.0] [0.0, 1.0, 2.0, 3.0] [0, 1, 2, 3]"


def test_without_mpi4py_a_single_process_still_runs():
    result = _python("import sys; sys.modules['mpi4py'] = None\n" + SINGLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0 1 [12.0, 12.0, 12.0]")


def test_launched_without_mpi4py_is_a_clear_error():
    result = _python("import sys; sys.modules['mpi4py'] = None\n" + SINGLE, PMI_SIZE="2")
    assert result.returncode != 0
    assert "MPIUnavailableError" in result.stderr and "one of 2 started by an MPI launcher" in result.stderr


def test_launched_by_another_mpi_is_a_clear_error():
    result = _python(SINGLE, OMPI_COMM_WORLD_SIZE="2")
    assert result.returncode != 0
    assert "MPIUnavailableError" in result.stderr and "MPI sees a world of 1" in result.stderr


def test_bad_options_are_refused():
    from jitgrad import distributed as dist
    with pytest.raises(dist.ArgumentError, match="TopK"):
        dist.data_parallel(lambda: None, compression="topk")
    with pytest.raises(dist.ArgumentError, match="unknown compression"):
        dist.data_parallel(lambda: None, compression="int8")
    with pytest.raises(dist.ArgumentError, match="ratio"):
        dist.TopK(0.0)
    assert issubclass(dist.MPIUnavailableError, dist.JitgradError)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(sys.argv[2])
