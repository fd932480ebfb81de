"""The shipped examples run and print what they claim."""
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script, expected", [
    ("quickstart.py", "max |jitgrad - central differences|"),
    ("custom_gradient.py", "compiled gradient of the same:      [1. 1. 1.]"),
    ("gp_marginal_likelihood.py", "converged: True"),
])
def test_example_runs(script, expected):
    result = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    if script == "quickstart.py":
        error = float(result.stdout.split("central differences| = ")[1].split()[0])
        assert error < 1e-6
    if script == "gp_marginal_likelihood.py":
        error = float(result.stdout.split("central differences| = ")[1].split()[0])
        start, fitted = (float(v) for v in result.stdout.split("NLML: ")[1].split()[::2])
        assert error < 1e-5 and fitted < start - 100


def test_data_parallel_example_under_mpiexec():
    """Two ranks, each on half of every batch, mixed precision and top-k compression."""
    from test_distributed import mpiexec_command
    result = subprocess.run([mpiexec_command(), "-n", "2", sys.executable, str(EXAMPLES / "train_data_parallel.py"),
                             "--steps", "80", "--mixed", "bfloat16", "--compression", "topk"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rank(s), mixed=bfloat16, compression=topk" in result.stdout
    first = float(result.stdout.split("step    0  loss ")[1].split()[0])
    final = float(result.stdout.split("final loss ")[1].split()[0])
    accuracy = float(result.stdout.split("test accuracy ")[1].split()[0])
    assert final < first / 4 and accuracy > 0.8


def test_cnn_digits_reaches_its_accuracy_and_the_apis_agree():
    """examples/cnn_digits.py (fixed seed): >= 98% test accuracy, and the tape's and the
    graph's gradients equal the compiled one's."""
    result = subprocess.run([sys.executable, str(EXAMPLES / "cnn_digits.py")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("test accuracy: ")[1].split()[0])
    assert accuracy >= 0.98, result.stdout
    difference = float(result.stdout.split("gradients from jit_grad's: ")[1].split()[0])
    assert difference < 1e-4, result.stdout
