"""`jitgrad opt`: run IR -> IR passes on IR text, as MLIR's and xDSL's `opt` tools do.

    jitgrad opt model.ir -p algebra,cse,dce --verify

reads functions in jitgrad's IR text (a file, or stdin with `-` or no file), runs the
named passes on each function in order and prints the result. Pass tests are IR files
checked against `// CHECK:` lines (tests/filecheck/), run through `optimize_text`.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import jitgrad.primitives  # noqa: F401 - defines the ops the parser looks up by name
from jitgrad.ir import Function, IRParseError, JitgradError, parse_module, print_module
from jitgrad.passes.manager import PassManager
from jitgrad.passes.pipeline import PASSES, passes_by_name

OPT_HELP = """\
Run IR -> IR passes on IR text and print the result.

FILE holds one or more functions in jitgrad's IR text (what `jitgrad ir` prints); with
no FILE, or `-`, the text is read from stdin. The passes run in the order given, on every
function; `--list-passes` names them.

Examples:
  jitgrad opt grad.ir -p algebra,cse,dce
  jitgrad ir model.py:loss --args f32[8,4] --stage autodiff | jitgrad opt -p inline,algebra,fold,cse,dce
  jitgrad opt grad.ir -p cse,dce --verify --print-after-all
"""


@dataclass
class OptResult:
    """The functions after all passes, and the text of every stage when it was asked for."""

    functions: list[Function]
    stages: list[tuple[str, str]]


def optimize_text(text: str, pass_names: list[str], verify: bool = False, keep_stages: bool = False) -> OptResult:
    """Parse `text`, run the named passes on each function and return the results.

    With `verify`, the IR is verified before the first pass and after each one, and a
    failure names the pass. Raises IRParseError, VerificationError (both JitgradErrors)
    and ValueError for an unknown pass name."""
    passes = passes_by_name(pass_names)
    functions = parse_module(text)
    managers = []
    for fn in functions:
        manager = PassManager(passes, verify=verify)
        managers.append((manager, manager.run(fn)))
    stages = []
    if keep_stages:
        for k, p in enumerate(passes):
            stages.append((p.name, print_module([m.stages[k].function for m, _ in managers])))
    return OptResult([out for _, out in managers], stages)


def add_opt_parser(sub) -> None:
    opt = sub.add_parser("opt", help="run IR passes on IR text", description=OPT_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    opt.add_argument("file", nargs="?", default="-", metavar="FILE.ir", help="IR text (default: stdin)")
    opt.add_argument("-p", "--passes", default="", metavar="NAME,...",
                     help="comma-separated passes to run in order, e.g. algebra,cse,dce")
    opt.add_argument("--verify", action="store_true",
                     help="verify the IR before the first pass and after each one")
    opt.add_argument("--print-after-all", action="store_true", help="print the IR after every pass")
    opt.add_argument("--list-passes", action="store_true", help="list the passes and exit")


def run_opt(args, stdin=None, stdout=None, stderr=None) -> int:
    """The `opt` subcommand; the streams are parameters so that tests run it in-process."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    if args.list_passes:
        for name, cls in PASSES.items():
            print(f"{name:<20} {_first_sentence(cls.__doc__ or '')}", file=stdout)
        return 0
    source = "<stdin>" if args.file == "-" else args.file
    try:
        if args.file == "-":
            text = stdin.read()
        else:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
    except OSError as err:
        print(f"jitgrad: error: {err}", file=stderr)
        return 2
    names = [name.strip() for name in args.passes.split(",") if name.strip()]
    try:
        result = optimize_text(text, names, verify=args.verify, keep_stages=args.print_after_all)
    except ValueError as err:
        if isinstance(err, IRParseError):
            print(f"jitgrad: error: {source}:{err}", file=stderr)
            return 1
        print(f"jitgrad: error: {err}", file=stderr)
        return 2
    except JitgradError as err:
        print(f"jitgrad: error: {source}: {err}", file=stderr)
        return 1
    for name, stage_text in result.stages:
        print(f"// ===== after {name} =====", file=stdout)
        print(stage_text.rstrip("\n"), file=stdout)
        print(file=stdout)
    if not result.stages:
        print(print_module(result.functions).rstrip("\n"), file=stdout)
    return 0


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[:end + 1]
