"""The NumPy coverage table (benchmarks/numpy_coverage.py): every function numpy and
jax.numpy both define, the ndarray methods, the operators, the indexing forms and the
scipy.special functions, traced on one generated input and compared with NumPy (values
by the reference interpreter; gradients by finite differences). The counts must not fall
below the floors; no entry may give a wrong answer or crash; every refusal is a
JitgradError that names what was called."""
import importlib.util
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("numpy_coverage", os.path.join(ROOT, "benchmarks", "numpy_coverage.py"))
coverage = importlib.util.module_from_spec(_spec)
sys.modules["numpy_coverage"] = coverage          # its dataclasses look their module up
_spec.loader.exec_module(coverage)

FLOORS = {"functions": 306, "methods": 52, "operators": 50, "indexing": 24, "scipy.special": 14}
"""ok counts measured when the table was last extended: they may only rise."""
GRADIENT_FLOORS = {"functions": 230, "methods": 38, "operators": 28, "indexing": 24, "scipy.special": 14}


@pytest.fixture(scope="module")
def report():
    return coverage.run()


def test_the_jax_numpy_name_list_is_the_stored_one():
    names = coverage.jax_numpy_names()
    assert len(names) == len(set(names)) > 400
    assert {"sum", "einsum", "take_along_axis", "vecdot"} <= set(names)
    assert len(coverage.numpy_functions()) == 343


@pytest.mark.parametrize("group", list(FLOORS))
def test_counts_do_not_regress(report, group):
    counts = report.counts(group)
    assert counts["ok"] >= FLOORS[group], [o for o in report.groups[group] if o.kind != "ok"]
    gradients = sum(o.gradient == "ok" for o in report.groups[group])
    assert gradients >= GRADIENT_FLOORS[group]


def test_no_wrong_answers_crashes_or_untested_entries(report):
    bad = [(group, o.name, o.kind, o.detail) for group, outcomes in report.groups.items() for o in outcomes
           if o.kind in ("mismatch", "crashed", "untested") or o.gradient not in ("ok", "n/a")]
    assert bad == []


def test_every_refusal_names_what_was_called(report):
    unnamed = []
    for group, outcomes in report.groups.items():
        for o in outcomes:
            if o.kind != "refused":
                continue
            if group == "functions":
                named = re.search(rf"numpy\.{o.name}\b|\b{o.name}\b", o.detail) or (
                    o.name == "frompyfunc" and "numpy.frompyfunc" in o.detail)
            elif group == "methods":
                named = o.name in o.detail or f"numpy.{o.name[1:]}" in o.detail
            elif group == "scipy.special":
                named = "scipy.special." in o.detail
            else:
                named = "index" in o.detail
            if not named:
                unnamed.append((group, o.name, o.detail))
    assert unnamed == []
