"""What imports what: `jitgrad.ir` stands alone, each package loads only the layers below
it, and no import cycle hides anywhere among jitgrad's modules.

The import graph is read from the source with `ast`, counting every import: at module
level (what runs at import time) and inside functions (what runs later), since an import
moved into a function to dodge a cycle leaves the modules depending on each other all the
same. Importing `a.b.c` also runs the `__init__` of the packages `a.b` and `a`, so an
import counts as importing those packages too, except the importer's own (already being
imported). The whole graph must be acyclic; `docs/design.md` (Layers) says how each former
cycle was taken apart.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _package_dirs() -> dict[str, str]:
    """Import name -> source folder of every jitgrad package, as pyproject.toml maps them."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setup = tomllib.load(f)["tool"]["setuptools"]
    dirs = setup.get("package-dir", {})
    return {top: dirs[top] for top in dirs}


def _modules(roots: dict[str, str] | None = None, top: str = ROOT) -> dict[str, tuple[str, bool]]:
    """Module name -> (file, is a package __init__) for every module of the packages in
    `roots` (import name -> folder under `top`; jitgrad's, from pyproject.toml, by default)."""
    roots = _package_dirs() if roots is None else roots
    modules = {}
    for package, folder in roots.items():
        base = os.path.join(top, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for filename in filenames:
                if not filename.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(dirpath, filename), base)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                name = ".".join([package, *parts])
                if parts and f"{package}.{parts[0]}" in roots:
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


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def _graph(modules: dict[str, tuple[str, bool]] | None = None):
    """The modules and the import edges (importer, imported, at module level?, line). An
    import of `a.b.c` is also an edge to the packages `a.b` and `a` whose `__init__` it
    runs, unless they are the importer's own packages (being imported already)."""
    modules = _modules() if modules is None else modules
    edges = []
    for module, (path, is_package) in modules.items():
        own = {module, *_ancestors(module)}
        for target, top, line in _imports(path, module, is_package, modules):
            for imported in (target, *_ancestors(target)):
                if imported in modules and imported not in own:
                    edges.append((module, imported, top, line))
    return modules, edges


def _cycle_closing_imports(modules, edges) -> list[tuple[str, str, int]]:
    """(importer, imported, line) of every function-level import between two modules of
    one import cycle: the imports that hide a cycle from the module-level check."""
    cycles = _strongly_connected(modules, [(a, b) for a, b, _, _ in edges])
    component = {m: k for k, members in enumerate(cycles) for m in members}
    return sorted({(a, b, line) for a, b, top, line in edges
                   if not top and a in component and component[a] == component.get(b)})


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


def test_no_import_cycle_hides_in_a_function():
    modules, edges = _graph()
    hidden = _cycle_closing_imports(modules, edges)
    assert hidden == [], (f"function-level imports that hide an import cycle (importer, imported, line): "
                          f"{hidden}; restructure (see docs/design.md, Layers)")
    assert _strongly_connected(modules, [(a, b) for a, b, _, _ in edges]) == []


def _write_package(top, files: dict[str, str]) -> dict[str, tuple[str, bool]]:
    for name, text in files.items():
        path = top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return _modules({"pkg": "pkg"}, str(top))


def test_a_new_hidden_cycle_fails_the_check(tmp_path):
    """The check above on a package made to fail it: a function-level import that closes
    a cycle, one that closes it through a package's __init__, and (not a cycle) an
    import under TYPE_CHECKING and a sibling import inside a package."""
    modules = _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "from pkg import high\n",
        "pkg/high.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg import low
            def rule():
                from pkg import low
                return low
            """,
        "pkg/sub/__init__.py": "from pkg.sub import leaf\nimport pkg.base\n",
        "pkg/sub/leaf.py": "from . import sibling\n",
        "pkg/sub/sibling.py": "",
        "pkg/base.py": "def helper():\n    from pkg.sub.leaf import sibling\n",
    })
    _, edges = _graph(modules)
    assert ("pkg.base", "pkg.sub", False, 2) in edges          # leaf's import runs pkg/sub/__init__.py
    assert ("pkg.sub.leaf", "pkg.sub", True, 1) not in edges    # its own package: being imported already
    assert _cycle_closing_imports(modules, edges) == [("pkg.base", "pkg.sub", 2), ("pkg.high", "pkg.low", 5)]
    assert _strongly_connected(modules, [(a, b) for a, b, top, _ in edges if top]) == []


_BEFORE_AND_AFTER_INSTALLING = """
import sys
from jitgrad.errors import MissingRuleError
from jitgrad.ir import DType, TensorType, new_function
import jitgrad.primitives as P
from jitgrad.primitives import python_rules, region_passes
assert "jitgrad.passes" not in sys.modules and "jitgrad.tracing" not in sys.modules
fn, builder = new_function("f", [TensorType((3,), DType.f64)])
with builder:
    builder.ret([P.sin(fn.args[0])])
for run in (lambda: region_passes.jvp_function(fn, [0]), lambda: python_rules.traced(fn.args)):
    try:
        run()
        raise AssertionError("ran before jitgrad.passes / jitgrad.tracing installed it")
    except MissingRuleError as error:
        print(error)
from jitgrad.passes.jvp import jvp_function
import jitgrad.tracing
assert str(region_passes.jvp_function(fn, [0])) == str(jvp_function(fn, [0]))
print(type(python_rules.traced(fn.args)[0]).__name__)
"""


def test_rules_reach_the_passes_and_tracing_once_those_layers_are_imported():
    """The op records call forward mode (region_passes) and tracing (python_rules)
    through functions the layers above install: before that, a clear error naming what
    to import; after, the passes themselves."""
    out = subprocess.run([sys.executable, "-c", _BEFORE_AND_AFTER_INSTALLING], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert "jvp_function" in out[0] and "import jitgrad.passes" in out[0]
    assert "tracer" in out[1] and "import jitgrad.tracing" in out[1]
    assert out[2] == "Tracer"


def test_a_rule_emitting_an_unregistered_op_says_so():
    from jitgrad.errors import MissingRuleError
    from jitgrad.primitives.base import emit_named
    with pytest.raises(MissingRuleError, match="'no_such_op', which is not registered"):
        emit_named("no_such_op")


def test_numpy_api_takes_in_the_modules_built_on_it():
    """numpy_api does not import the modules that build NumPy's wider surface on it;
    jitgrad.tracing adds their tables to its own."""
    from jitgrad.tracing import (numpy_api, numpy_elementwise, numpy_linalg, numpy_reductions, numpy_shape,
                                 numpy_sorting)
    for module in (numpy_elementwise, numpy_linalg, numpy_reductions, numpy_shape, numpy_sorting):
        missing = [getattr(f, "__name__", f) for f in module.FUNCTIONS if f not in numpy_api.FUNCTIONS]
        assert missing == [], f"{module.__name__}: {missing}"
    assert set(numpy_elementwise.UFUNCS) <= set(numpy_api.UFUNCS)


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
    "jitgrad.passes": ({"jitgrad", "jitgrad.ir", "jitgrad.errors", "jitgrad.config", "jitgrad.primitives",
                        "jitgrad.passes"}, False),
    "jitgrad.tracing": ({"jitgrad", "jitgrad.ir", "jitgrad.errors", "jitgrad.config", "jitgrad.primitives",
                         "jitgrad.passes", "jitgrad.tracing"}, False),
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
