"""The `jitgrad` command line: dump the IR of a NumPy function at every compiler stage.

    jitgrad ir model.py:loss --args f32[256,64] f32[128,256] f32[128,64] --after-all

loads `loss` from model.py, traces it for arguments of the given types (no data is
needed), differentiates it, runs the optimization passes and the backend, and prints
the stage(s) asked for. Each IR op carries `loc("model.py":LINE)`, the user's line.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from jitgrad.ir.types import parse_type
from .opt import add_opt_parser, run_opt

MODES = ("grad", "value-and-grad", "jit")

DESCRIPTION = """\
jitgrad: a JIT differentiation compiler for NumPy code.

Subcommands:
  ir    print the IR of a function after any compiler stage (traced, autodiff, each
        optimization pass, LLVM IR, optimized LLVM IR, machine code)

  aot   compile a function ahead of time into a C library (libNAME.so, libNAME.a),
        a header and a checksummed manifest (docs/aot.md)
  opt   run IR -> IR passes (algebra, fold, cse, dce, inline, ...) on IR text

Run `jitgrad ir --help` for the options of a subcommand.
"""

IR_HELP = """\
Trace FILE.py:FUNC for arguments of the given types and print its IR.

Stages, in pipeline order:
  traced     the function as traced from NumPy code (one op per primitive)
  remat      with --memory-budget: the program cut into checkpoint regions whose
             internals the backward pass recomputes, and what was saved/recomputed
  autodiff   the reverse-mode gradient program (--mode grad/value-and-grad)
  inline     custom-rule calls replaced by their bodies
  nn-pool-idioms
             reshape-then-max/sum pooling as reduce_window_max/sum (the
             convolution idioms are recognized in the traced stage already)
  algebra, fold, cse, dce
             the optimization passes (algebraic rules, constant folding, common
             subexpression and dead code elimination), each printed after it ran
  inline-checkpoints
             checkpoint regions replaced by their bodies, after CSE, so that the
             backward pass really recomputes what they hold
  kernels    the fusion plan: which ops share a loop, what is stored, what stays
             in registers, and the workspace size after buffer reuse
  llvm       LLVM IR built by the CPU backend (fused loop nests)
  llvm-opt   LLVM IR after LLVM's O3 pipeline (look for vectorized libmvec calls)
  asm        host machine code

Argument specs are DTYPE[DIMS]: f32[256,64], f64[] (a scalar), i64[10], bool[3,3].

Examples:
  jitgrad ir model.py:loss --args f32[256,64] f32[128,256] f32[128,64] --after-all
  jitgrad ir model.py:loss --args f64[10] f64[10] --argnums 0 1 --stage autodiff
  jitgrad ir model.py:predict --args f32[8,4] --mode jit --stage asm
  jitgrad ir model.py:predict --args f32[8,4] --mode jit --device gpu --stage ptx
  jitgrad ir model.py:loss --args f32[256,64] f32[128,256] f32[128,64] --stage kernels --memory
  jitgrad ir deep.py:net --args f32[256,256] f32[256,256] --memory-budget 4MB --stage remat
"""


def _load_function(target: str):
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name:
        raise SystemExit(f"jitgrad: error: expected FILE.py:FUNC, got {target!r}")
    if not os.path.exists(path):
        raise SystemExit(f"jitgrad: error: no such file: {path}")
    # The module is registered while it runs, as Python registers a script as __main__:
    # decorators such as @dataclass look their module up in sys.modules. A private name
    # keeps a file called json.py or numpy.py from shadowing the real module.
    module_name = "_jitgrad_cli_target_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    try:
        return getattr(module, name)
    except AttributeError:
        raise SystemExit(f"jitgrad: error: {path} has no function {name!r}") from None


def _type_spec(text: str):
    try:
        return parse_type(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jitgrad", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from jitgrad import __version__
    parser.add_argument("--version", action="version", version=f"jitgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ir = sub.add_parser("ir", help="print a function's IR after compiler stages", description=IR_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ir.add_argument("target", metavar="FILE.py:FUNC", help="the Python file and the function in it")
    ir.add_argument("--args", nargs="+", type=_type_spec, required=True, metavar="SPEC",
                    help="one type per positional argument, e.g. f32[128,64] or f64[]")
    ir.add_argument("--argnums", nargs="+", type=int, default=[0], metavar="N",
                    help="arguments to differentiate with respect to (default: 0)")
    ir.add_argument("--memory-budget", metavar="BYTES",
                    help="recompute forward values in the backward pass to fit this budget, e.g. 64MB "
                         "(adds the 'remat' stage: the program cut into checkpoint regions)")
    ir.add_argument("--mode", choices=MODES, default="grad",
                    help="what to compile: the gradient (default), value and gradient, or the function itself")
    what = ir.add_mutually_exclusive_group()
    what.add_argument("--stage", metavar="NAME", help="print only this stage (default: the optimized IR)")
    what.add_argument("--after-all", action="store_true", help="print the IR after every stage")
    what.add_argument("--list-stages", action="store_true", help="list the stage names and exit")
    ir.add_argument("--time-passes", action="store_true", help="print the time each stage took (to stderr)")
    ir.add_argument("--memory", action="store_true",
                    help="print the peak memory of every stage and its change from the stage before")
    ir.add_argument("--device", metavar="NAME",
                    help="compile for this device: cpu (default), gpu/cuda (adds the 'ptx' and 'sass' stages; "
                         "no GPU needed), cuda-emulator")
    add_aot_parser(sub)
    add_opt_parser(sub)
    return parser


AOT_HELP = """\
Compile FILE.py:FUNC ahead of time for arguments of the given types into directory DIR:
libNAME.so, libNAME.a, NAME.h (the C declarations, shapes and dtypes) and manifest.json.
Load it back with jitgrad.aot.load(DIR), or link it from C (docs/aot.md).

Examples:
  jitgrad aot model.py:loss --args f32[784,256] f32[256] f32[256,784] --mode grad -o build/model
  jitgrad aot model.py:loss --args f64[8] --mode value_and_grad --target x86-64-v3 -o build/w4
"""


def add_aot_parser(sub) -> None:
    aot = sub.add_parser("aot", help="compile a function ahead of time into a C library", description=AOT_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    aot.add_argument("target", metavar="FILE.py:FUNC", help="the Python file and the function in it")
    aot.add_argument("--args", nargs="+", type=_type_spec, required=True, metavar="SPEC",
                     help="one type per positional argument, e.g. f32[256,784] or f64[]")
    aot.add_argument("--argnums", nargs="+", type=int, default=[0], metavar="N",
                     help="arguments to differentiate with respect to (default: 0)")
    aot.add_argument("--mode", choices=("grad", "value_and_grad", "jit", "vjp", "jvp"), default="grad",
                     help="what to compile (default: the gradient)")
    aot.add_argument("--memory-budget", metavar="BYTES", help="recompute forward values to fit, e.g. 64MB")
    aot.add_argument("--target", dest="cpu_target", default="host",
                     choices=("host", "x86-64-v3", "x86-64-v4", "aarch64"), help="CPU to generate code for")
    aot.add_argument("--blas", choices=("openblas", "loops"), default=None,
                     help="matrix products: NumPy's bundled OpenBLAS (host default) or generated loops")
    aot.add_argument("--name", help="library name (default: the function's name)")
    aot.add_argument("--function-name", help="name of the entry point (default: MODE_FUNC, or FUNC for jit)")
    aot.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write")


def run_aot(args) -> int:
    import numpy as np
    from jitgrad.errors import JitgradError
    from jitgrad.aot.builder import Library, transformed
    fn = _load_function(args.target)
    function_name = args.target.rpartition(":")[2]
    examples = [np.zeros(t.shape, t.dtype.numpy) for t in args.args]
    argnums = args.argnums[0] if len(args.argnums) == 1 else tuple(args.argnums)
    try:
        compiled, example_args = transformed(fn, args.mode, examples, argnums, args.memory_budget)
        entry = args.function_name or (function_name if args.mode == "jit" else f"{args.mode}_{function_name}")
        library = Library(args.name or function_name).add(entry, compiled, *example_args, mode=args.mode)
        manifest = library.build(args.output, target=args.cpu_target, blas=args.blas)
    except (JitgradError, ValueError) as err:
        print(f"jitgrad: error: {err}", file=sys.stderr)
        return 1
    for name in manifest["files"]:
        print(os.path.join(args.output, name))
    print(os.path.join(args.output, "manifest.json"))
    return 0


def _compile(fn, mode: str, argnums, memory_budget=None):
    import jitgrad
    from jitgrad.api import Compiled
    if isinstance(fn, Compiled):
        return fn
    argnums = argnums[0] if len(argnums) == 1 else tuple(argnums)
    if mode == "jit":
        return jitgrad.jit(fn)
    if mode == "value-and-grad":
        return jitgrad.value_and_grad(fn, argnums=argnums, memory_budget=memory_budget)
    return jitgrad.grad(fn, argnums=argnums, memory_budget=memory_budget)


def run_ir(args) -> int:
    from jitgrad.errors import JitgradError
    fn = _load_function(args.target)
    try:
        if args.device is not None:
            from jitgrad.backends import backend_for
            from jitgrad.config import config
            backend_for(args.device)
            config.device = args.device
        lowered = _compile(fn, args.mode, args.argnums, args.memory_budget).lower(*args.args)
        names = lowered.stage_names()
        if args.list_stages:
            print("\n".join(names))
            return 0
        if args.after_all:
            for name in names:
                print(f"// ===== after {name} =====")
                print(lowered.as_text(name).rstrip("\n"))
                print()
        else:
            if args.stage is not None and args.stage not in names:
                print(f"jitgrad: error: unknown stage {args.stage!r}; stages are: {', '.join(names)}",
                      file=sys.stderr)
                return 2
            print(lowered.as_text(args.stage).rstrip("\n"))
    except JitgradError as err:
        print(f"jitgrad: error: {err}", file=sys.stderr)
        return 1
    if args.memory:
        print(format_memory(lowered.memory_report()))
    if lowered.remat is not None and (args.memory or args.stage == "remat" or args.after_all):
        print(lowered.remat)
    if args.time_passes:
        for name, seconds in lowered.timings.items():
            print(f"{name:>16}: {seconds * 1e3:8.2f} ms", file=sys.stderr)
    return 0


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_memory(report) -> str:
    lines = ["// peak memory per stage", f"// {'stage':<10} {'peak':>12} {'change':>12}"]
    previous = None
    for name, peak in report:
        change = "" if previous is None else ("+" if peak >= previous else "-") + _bytes(abs(peak - previous))
        lines.append(f"// {name:<10} {_bytes(peak):>12} {change:>12}")
        previous = peak
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "ir":
        return run_ir(args)
    if args.command == "aot":
        return run_aot(args)
    if args.command == "opt":
        return run_opt(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
