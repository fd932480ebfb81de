"""A small FileCheck (LLVM's tool, as xDSL's pass tests use it), so that a pass test is one
IR file: the input, a `// RUN:` line and the expected output as `// CHECK` comments.

    // CHECK:       text        a later line contains `text` (matches go in order)
    // CHECK-NEXT:  text        the line right after the previous match contains it
    // CHECK-NOT:   text        no line between the previous and the next match contains it
    // CHECK-SAME:  text        the line of the previous match contains it too

`text` is literal except for `{{regex}}` pieces; runs of spaces match any run of spaces.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_DIRECTIVE = re.compile(r"^\s*//\s*(CHECK(?:-NEXT|-NOT|-SAME)?):(.*)$")


class FileCheckError(AssertionError):
    """The output does not match a CHECK line; the message names the line and shows the output."""


@dataclass(frozen=True)
class Check:
    kind: str          # CHECK, CHECK-NEXT, CHECK-NOT or CHECK-SAME
    text: str
    line: int          # 1-based line of the directive in the test file

    @property
    def regex(self) -> re.Pattern:
        parts = re.split(r"(\{\{.*?\}\})", self.text.strip())
        pattern = "".join(p[2:-2] if p.startswith("{{") else r"\s+".join(map(re.escape, p.split(" ")))
                          for p in parts)
        return re.compile(pattern)


def read_checks(text: str) -> list[Check]:
    """The CHECK directives of a test file, in order."""
    checks = []
    for number, line in enumerate(text.splitlines(), 1):
        match = _DIRECTIVE.match(line)
        if match:
            checks.append(Check(match.group(1), match.group(2), number))
    return checks


def filecheck(output: str, checks: list[Check], name: str = "<test>") -> None:
    """Raise FileCheckError unless `output` satisfies `checks`."""
    if not any(c.kind != "CHECK-NOT" for c in checks):
        raise FileCheckError(f"{name}: no positive CHECK lines: the test could never fail")
    lines = output.splitlines()
    position = 0            # first line the next CHECK may match
    last = None             # line index of the previous match
    pending_nots: list[Check] = []

    def fail(check: Check, why: str) -> FileCheckError:
        shown = "\n".join(f"  {k + 1:4d}{'>' if k == last else ' '} {text}" for k, text in enumerate(lines))
        return FileCheckError(f"{name}:{check.line}: {check.kind}: {check.text.strip()!r} {why}\n"
                              f"output:\n{shown}")

    def check_nots(end: int) -> None:
        for check in pending_nots:
            for k in range(position, end):
                if check.regex.search(lines[k]):
                    last_seen = k
                    raise fail(check, f"matched output line {last_seen + 1}: {lines[k]!r}")
        pending_nots.clear()

    for check in checks:
        if check.kind == "CHECK-NOT":
            pending_nots.append(check)
            continue
        if check.kind == "CHECK-SAME":
            if last is None or not check.regex.search(lines[last]):
                raise fail(check, "is not on the line of the previous match")
            continue
        if check.kind == "CHECK-NEXT":
            if last is None or last + 1 >= len(lines) or not check.regex.search(lines[last + 1]):
                raise fail(check, "is not on the line after the previous match")
            found = last + 1
        else:
            found = next((k for k in range(position, len(lines)) if check.regex.search(lines[k])), None)
            if found is None:
                raise fail(check, f"not found after output line {position}")
        check_nots(found)
        last, position = found, found + 1
    check_nots(len(lines))
