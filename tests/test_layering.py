"""What imports what: `jitgrad.ir` stands alone, each package loads only the layers below
it, and no import cycle hides anywhere among jitgrad's modules.

The import graph is read from the source with `ast`: module-level imports (what runs at
import time) must form an acyclic graph, and a function-level import that closes a cycle
must be listed in CYCLE_DODGES with the reason it is there. The list should only shrink:
an entry that no longer closes a cycle fails the test too.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CYCLE_DODGES = {
    ("jitgrad.eager.tape", "jitgrad.eager.introspection"):
        "GradientTape.nodes builds TapeNodes, which read the tape's records and operator tables",
    ("jitgrad.eager.introspection", "jitgrad.eager.tape"):
        "TapeNodes name the tape's operators (BINARY_OPERATORS) and resolve its _Ref records",
}


def _package_dirs() -> dict[str, str]:
    """Import name -> source folder of every jitgrad package, as pyproject.toml maps them."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setup = tomllib.load(f)["tool"]["setuptools"]
    dirs = setup.get("package-dir", {})
    return {top: dirs[top] for top in dirs}


def _modules() -> dict[str, tuple[str, bool]]:
    """Module name -> (file, is a package __init__) for every jitgrad module."""
    roots = _package_dirs()
    modules = {}
    for package, folder in roots.items():
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for filename in filenames:
                if not filename.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(dirpath, filename), base)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                name = ".".join([package, *parts])
                if package == "jitgrad" and parts and f"jitgrad.{parts[0]}" in roots:
                    continue
                modules[name] = (os.path.join(dirpath, filename), filename == "__init__.py")
    return modules


def _imports(path: str, module: str, is_package: bool, known) -> list[tuple[str, bool, int]]:
    """(imported jitgrad module, at module level?, line) for every import in the file.
    `from P import name` counts as importing P.name when that is a module, else P."""
    found = []

    def resolve(level: int, name: str | None) -> str:
        if level == 0:
            return name
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[:len(parts) - (level - 1)]
        return ".".join(parts + ([name] if name else []))

    def visit(nodes, top: bool) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(node.body, False)
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.extend((alias.name, top, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = resolve(node.level, node.module)
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in known else target, top, node.lineno))
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit(inner, top)

    with open(path, encoding="utf-8") as f:
        visit(ast.parse(f.read(), path).body, True)
    return [(name, top, line) for name, top, line in found if name in known]


def _graph():
    modules = _modules()
    edges = []
    for module, (path, is_package) in modules.items():
        for target, top, line in _imports(path, module, is_package, modules):
            if target != module:
                edges.append((module, target, top, line))
    return modules, edges


def _strongly_connected(nodes, edges) -> list[set[str]]:
    """Tarjan's algorithm, iteratively: the components with more than one module."""
    successors = {n: sorted({b for a, b in edges if a == n}) for n in nodes}
    index, low, stack, on_stack, components, counter = {}, {}, [], set(), [], 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if i < len(successors[node]):
                work.append((node, i + 1))
                nxt = successors[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def test_the_graph_sees_the_modules():
    modules, edges = _graph()
    assert {"jitgrad", "jitgrad.ir.core", "jitgrad.passes.manager", "jitgrad.tools.cli",
            "jitgrad.backends.cpu.codegen"} <= set(modules)
    assert ("jitgrad.passes.manager", "jitgrad.ir.rewrite", True) in {(a, b, top) for a, b, top, _ in edges}


def test_module_level_imports_are_acyclic():
    modules, edges = _graph()
    cycles = _strongly_connected(modules, [(a, b) for a, b, top, _ in edges if top])
    assert cycles == [], f"import cycles at module level: {cycles}"


def test_function_level_imports_that_close_a_cycle_are_listed():
    modules, edges = _graph()
    cycles = _strongly_connected(modules, [(a, b) for a, b, _, _ in edges])
    component = {m: k for k, members in enumerate(cycles) for m in members}
    dodges = {(a, b) for a, b, top, _ in edges
              if not top and a in component and component[a] == component.get(b)}
    unlisted = sorted(dodges - set(CYCLE_DODGES))
    assert not unlisted, (f"function-level imports that hide an import cycle: {unlisted}; restructure "
                          "(see docs/design.md, Layers), or list them in CYCLE_DODGES with the reason")
    stale = sorted(set(CYCLE_DODGES) - dodges)
    assert not stale, f"no longer part of a cycle, remove from CYCLE_DODGES: {stale}"


def test_ir_imports_nothing_else_of_jitgrad():
    modules, edges = _graph()
    outside = sorted((a, b, line) for a, b, _, line in edges
                     if a.startswith("jitgrad.ir") and not b.startswith("jitgrad.ir"))
    assert outside == []


def test_the_strongly_connected_finder_finds_a_cycle():
    assert _strongly_connected(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")]) == [{"a", "b", "c"}]
    assert _strongly_connected(["a", "b", "c"], [("a", "b"), ("b", "c")]) == []


# Each package with all its modules imported in a fresh interpreter: the jitgrad packages
# (first two name components) it may load, and whether it may load llvmlite.
LAYERS = {
    "jitgrad.ir": ({"jitgrad", "jitgrad.ir"}, False),
    "jitgrad.primitives": ({"jitgrad", "jitgrad.ir", "jitgrad.errors", "jitgrad.primitives"}, False),
    "jitgrad.passes": ({"jitgrad", "jitgrad.ir", "jitgrad.errors", "jitgrad.primitives", "jitgrad.passes"}, False),
    "jitgrad.tracing": ({"jitgrad", "jitgrad.ir", "jitgrad.errors", "jitgrad.primitives", "jitgrad.tracing"},
                        False),
    "jitgrad.backends.cpu": ({"jitgrad", "jitgrad.ir", "jitgrad.errors", "jitgrad.primitives", "jitgrad.passes",
                              "jitgrad.config", "jitgrad.backends"}, True),
    "jitgrad.tools": (None, True),
    "jitgrad": ({"jitgrad"}, False),
}

_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
if sys.argv[1] != "jitgrad":
    for info in pkgutil.walk_packages(package.__path__, sys.argv[1] + "."):
        importlib.import_module(info.name)
print(json.dumps({"modules": sorted(m for m in sys.modules if m == "jitgrad" or m.startswith("jitgrad.")),
                  "llvmlite": "llvmlite" in sys.modules}))
"""


@pytest.mark.parametrize("package", list(LAYERS))
def test_a_package_loads_only_the_layers_below_it(package):
    out = subprocess.run([sys.executable, "-c", _PROBE, package], capture_output=True, text=True,
                         timeout=120, check=True)
    loaded = json.loads(out.stdout)
    allowed, llvmlite_allowed = LAYERS[package]
    assert package in loaded["modules"]
    if not llvmlite_allowed:
        assert not loaded["llvmlite"], f"importing {package} loads llvmlite"
    if allowed is not None:
        layers = {".".join(m.split(".")[:2]) for m in loaded["modules"]}
        assert layers <= allowed, f"{package} loads {sorted(layers - allowed)}"


def test_import_jitgrad_is_lazy_but_complete():
    probe = ("import sys, jitgrad\n"
             "before = sorted(m for m in sys.modules if m.startswith('jitgrad.'))\n"
             "names = {n: getattr(jitgrad, n) for n in jitgrad.__all__}\n"
             "from jitgrad.errors import JitgradError, IRParseError\n"
             "import jitgrad.ir.errors as ir_errors\n"
             "assert JitgradError is ir_errors.JitgradError and IRParseError is ir_errors.IRParseError\n"
             "assert jitgrad.config.config is not None\n"
             "print(before, 'llvmlite' in sys.modules)\n"
             "jitgrad.jit(lambda x: x + 1)(__import__('numpy').ones(2))\n"
             "print('llvmlite' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    # nothing before first use; the whole API after it; the backend (LLVM) at the first compile
    assert out.stdout.split("\n")[:2] == ["[] False", "True"]
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        import jitgrad
        jitgrad.no_such_name
