"""The `jitgrad` command line, run as a user runs it: in a subprocess."""
import shutil
import subprocess
import sys
import textwrap

import pytest

MODEL = textwrap.dedent("""\
    import numpy as np


    def loss(w, x, y):
        return np.mean((np.tanh(x @ w) - y) ** 2)


    def bad(x):
        return np.unwrap(x)
""")

STAGES = ["traced", "autodiff", "inline", "lower-complex", "nn-pool-idioms", "algebra", "fold", "cse", "dce", "inline-checkpoints", "kernels", "llvm", "llvm-opt", "asm"]
LOSS_ARGS = ["--args", "f32[256,64]", "f32[128,256]", "f32[128,64]"]


def jitgrad_command():
    exe = shutil.which("jitgrad")
    return [exe] if exe else [sys.executable, "-m", "jitgrad.tools.cli"]


def run(tmp_path, *args):
    (tmp_path / "model.py").write_text(MODEL)
    return subprocess.run([*jitgrad_command(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_after_all_prints_every_stage_with_source_lines(tmp_path):
    result = run(tmp_path, "ir", "model.py:loss", *LOSS_ARGS, "--after-all")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    headers = [line.split("after ")[1].rstrip(" =") for line in out.splitlines() if line.startswith("// =====")]
    assert headers == STAGES
    traced = out.split("// ===== after autodiff")[0]
    assert 'loc("model.py":5 in loss)' in traced
    assert "dot_general" in traced and "tanh" in traced
    autodiff = out.split("// ===== after autodiff =====")[1].split("// =====")[0]
    assert "func @loss_vjp" in autodiff and "-> (f32[256,64])" in autodiff   # grad alone: no value
    assert "define void @jitgrad_" in out.split("// ===== after llvm =====")[1]


def test_single_stage_and_asm(tmp_path):
    result = run(tmp_path, "ir", "model.py:loss", *LOSS_ARGS, "--stage", "asm")
    assert result.returncode == 0, result.stderr
    assert "\tretq" in result.stdout and "jitgrad_loss_vjp" in result.stdout
    result = run(tmp_path, "ir", "model.py:loss", *LOSS_ARGS, "--stage", "autodiff", "--argnums", "0", "1")
    assert result.returncode == 0, result.stderr
    assert "-> (f32[256,64], f32[128,256])" in result.stdout


@pytest.mark.parametrize("file_name", ["shapes.py", "json.py"])   # json.py: a name Python has loaded
def test_a_module_with_dataclasses_loads(tmp_path, file_name):
    """A file whose top level defines a @dataclass loads (with string annotations, the
    dataclass looks its module up in sys.modules while it is created); benchmarks/run.py
    is such a file."""
    (tmp_path / file_name).write_text(textwrap.dedent("""\
        from __future__ import annotations

        import typing
        from dataclasses import dataclass

        import numpy as np


        @dataclass
        class Scale:
            factor: float


        def loss(x):
            return np.sum(np.sin(x) * Scale(2.0).factor)
    """))
    result = subprocess.run([*jitgrad_command(), "ir", f"{file_name}:loss", "--args", "f64[3]", "--stage", "autodiff"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "func @loss_vjp" in result.stdout and "cos" in result.stdout


def test_jit_mode_and_list_stages(tmp_path):
    result = run(tmp_path, "ir", "model.py:loss", *LOSS_ARGS, "--mode", "jit", "--list-stages")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [s for s in STAGES if s != "autodiff"]


def test_time_passes(tmp_path):
    result = run(tmp_path, "ir", "model.py:loss", *LOSS_ARGS, "--time-passes")
    assert result.returncode == 0, result.stderr
    assert "backend" in result.stderr and "ms" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["ir", "model.py:bad", "--args", "f64[4]"], "model.py:9"),
    (["ir", "model.py:nope", "--args", "f64[4]"], "no function 'nope'"),
    (["ir", "model.py:loss", "--args", "f64[4]", "f64[3]", "f64[2]"], "don't multiply"),
    (["ir", "model.py:loss", *LOSS_ARGS, "--stage", "nonsense"], "unknown stage"),
])
def test_errors_are_reported_not_raised(tmp_path, args, message):
    result = run(tmp_path, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_type_spec_is_a_usage_error(tmp_path):
    result = run(tmp_path, "ir", "model.py:loss", "--args", "c32[3]")
    assert result.returncode == 2
    assert "not a tensor type" in result.stderr


def test_help_is_documentation(tmp_path):
    top = run(tmp_path, "--help")
    assert top.returncode == 0 and "ir" in top.stdout
    sub = run(tmp_path, "ir", "--help")
    assert sub.returncode == 0
    for word in ["--after-all", "--stage", "--argnums", "f32[256,64]", "llvm-opt", "asm"]:
        assert word in sub.stdout
