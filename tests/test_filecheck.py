"""Pass tests written as IR text: every tests/filecheck/*.ir file is run through `jitgrad opt`
(in-process) as its `// RUN:` line says, and the output is matched against its `// CHECK`
lines. A run must succeed and print IR that parses back and verifies, unless the RUN
line starts with `not`: then it must fail, and the CHECK lines match its error output."""
from __future__ import annotations

import glob
import io
import os
import shlex

import pytest

from filecheck import FileCheckError, filecheck, read_checks
from jitgrad.ir import parse_module, verify
from jitgrad.tools.cli import build_parser
from jitgrad.tools.opt import run_opt

FILES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "filecheck", "*.ir")))


def run_line(path: str) -> tuple[bool, list[str]]:
    """(expects failure, the `jitgrad opt` arguments with %s replaced by the file)."""
    with open(path, encoding="utf-8") as f:
        runs = [line.split("RUN:", 1)[1] for line in f if line.lstrip().startswith("// RUN:")]
    assert len(runs) == 1, f"{path}: expected one // RUN: line"
    words = shlex.split(runs[0])
    expect_failure = words[0] == "not"
    words = words[1:] if expect_failure else words
    assert words[:2] == ["jitgrad", "opt"], f"{path}: the RUN line runs `jitgrad opt`"
    return expect_failure, [path if w == "%s" else w for w in words[2:]]


def jitgrad_opt(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run_opt(build_parser().parse_args(["opt", *argv]), io.StringIO(stdin), stdout, stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def test_there_are_pass_tests_for_every_pass_and_the_verifier():
    assert len(FILES) >= 10
    passes = set()
    for path in FILES:
        _, argv = run_line(path)
        if "-p" in argv:
            passes.update(argv[argv.index("-p") + 1].split(","))
    assert {"algebra", "fold", "cse", "dce", "inline", "inline-checkpoints"} <= passes
    assert sum(run_line(path)[0] for path in FILES) >= 3     # error messages are checked too


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(p) for p in FILES])
def test_pass_file(path):
    expect_failure, argv = run_line(path)
    code, out, err = jitgrad_opt(argv)
    name = os.path.relpath(path)
    with open(path, encoding="utf-8") as f:
        checks = read_checks(f.read())
    if expect_failure:
        assert code == 1, f"{name}: expected jitgrad opt to fail, got exit code {code}\n{out}"
        filecheck(err, checks, name)
    else:
        assert code == 0, f"{name}: {err}"
        filecheck(out, checks, name)
        for fn in parse_module(out):      # what opt prints reads back and is valid IR
            verify(fn)


# --------------------------------------------------------------------------- the tool itself

def test_opt_reads_stdin_and_lists_passes():
    text = ("func @f(%0: f32[2]) -> (f32[2]) {\n  %1 = exp(%0) : f32[2]\n  %2 = exp(%0) : f32[2]\n"
            "  %3 = add(%1, %2) : f32[2]\n  return %3\n}\n")
    code, out, _ = jitgrad_opt(["-p", "cse,dce"], stdin=text)
    assert code == 0 and out.count("exp(%0)") == 1 and "add(%1, %1)" in out
    code, out, _ = jitgrad_opt(["-", "--print-after-all", "-p", "cse,dce"], stdin=text)
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("// =====")] == \
        ["// ===== after cse =====", "// ===== after dce ====="]
    code, out, _ = jitgrad_opt(["--list-passes"])
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == \
        ["nn-conv-idioms", "inline", "lower-complex", "nn-pool-idioms", "algebra", "fold", "cse", "dce",
         "inline-checkpoints"]


def test_the_jitgrad_command_dispatches_to_opt(capsys):
    from jitgrad.tools.cli import main
    path = next(p for p in FILES if p.endswith("dce_drops_unused.ir"))
    assert main(["opt", path, "-p", "dce"]) == 0
    out = capsys.readouterr().out
    assert "exp(%0)" in out and "sin(" not in out


def test_opt_rejects_an_unknown_pass_and_a_missing_file(tmp_path):
    code, _, err = jitgrad_opt(["-p", "cse,frobnicate"], stdin="")
    assert code == 2 and "unknown pass 'frobnicate'" in err and "algebra" in err
    code, _, err = jitgrad_opt([str(tmp_path / "missing.ir")])
    assert code == 2 and "missing.ir" in err


def test_filecheck_matches_in_order_and_fails_when_it_should():
    out = "a = 1\nb = 2\nc = 3\n"
    checks = read_checks("// CHECK: a = 1\n// CHECK-NEXT: b = {{[0-9]}}\n// CHECK-NOT: x\n// CHECK: c\n")
    filecheck(out, checks)
    for wrong in ("// CHECK: c\n// CHECK: a\n",              # out of order
                  "// CHECK: a\n// CHECK-NEXT: c\n",        # not the next line
                  "// CHECK: a\n// CHECK-NOT: b\n// CHECK: c\n",
                  "// CHECK: a\n// CHECK-SAME: 2\n",
                  "// CHECK-NOT: z\n"):                     # nothing positive: could never fail
        with pytest.raises(FileCheckError):
            filecheck(out, read_checks(wrong))
