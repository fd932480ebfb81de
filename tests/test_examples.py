"""The shipped examples run and print what they claim."""
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script, expected", [
    ("quickstart.py", "max |jitgrad - central differences|"),
    ("custom_gradient.py", "compiled gradient of the same:      [1. 1. 1.]"),
])
def test_example_runs(script, expected):
    result = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    if script == "quickstart.py":
        error = float(result.stdout.split("central differences| = ")[1].split()[0])
        assert error < 1e-6
