"""The strong-zero table of docs/gradient-conventions.md is what jitgrad computes.

Each row's expression is evaluated as written in the document, at the row's point, and
jitgrad's reverse-mode (grad, vjp, GradientTape) and forward-mode (jvp, DualTensor)
derivatives must equal the row's two jitgrad columns, so the table cannot drift.
"""
from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

import jitgrad

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "gradient-conventions.md"
REQUIRED = ["np.sqrt(np.abs(x))", "np.abs(x) * np.log(np.abs(x))", "np.std(x)", "np.linalg.norm(x)", "np.abs(x)"]


def _table_rows() -> list[tuple[str, str, str, str]]:
    """(expression, point, reverse, forward) of each row of the strong-zero table."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`"):
            rows.append((cells[0].strip("`"), cells[1].strip("`"), cells[2], cells[3]))
    return rows


ROWS = _table_rows()


def _number(text: str) -> float:
    return float(text.replace("−", "-"))


def test_the_table_has_every_required_expression():
    assert set(REQUIRED) <= {row[0] for row in ROWS} and len(ROWS) >= 9


@pytest.mark.parametrize("expression, point, reverse, forward", ROWS, ids=[r[0] for r in ROWS])
def test_jitgrads_columns(expression, point, reverse, forward):
    def f(x):
        return np.sum(eval(expression, {"np": np}, {"x": x}))
    x0 = np.asarray(ast.literal_eval(point), dtype=np.float64)
    expected_reverse = np.full(x0.shape, _number(reverse))
    direction = np.zeros_like(x0)
    direction.reshape(-1)[0] = 1.0

    np.testing.assert_array_equal(jitgrad.grad(f)(x0), expected_reverse)
    _, vjp_fn = jitgrad.vjp(f, x0)
    np.testing.assert_array_equal(vjp_fn(np.float64(1.0))[0], expected_reverse)
    tape = jitgrad.GradientTape()
    tracked = tape.watch(x0.copy())
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(tape.gradient(f(tracked), tracked), expected_reverse)

    _, tangent = jitgrad.jvp(f, (x0,), (direction,))
    np.testing.assert_array_equal(tangent, _number(forward))
    with np.errstate(all="ignore"):
        dual = f(jitgrad.DualTensor(x0, direction))
    np.testing.assert_array_equal(dual.tangent, _number(forward))


@pytest.mark.parametrize("expression, point", [r[:2] for r in ROWS], ids=[r[0] for r in ROWS])
def test_forward_and_reverse_mode_agree(expression, point):
    """Strong-zero products in both modes: jacfwd equals jacrev, and the Hessian by
    forward-over-reverse equals reverse-over-reverse, bit for bit (NaN where both are)."""
    def f(x):
        return np.sum(eval(expression, {"np": np}, {"x": x}))
    x0 = np.asarray(ast.literal_eval(point), dtype=np.float64)
    np.testing.assert_array_equal(jitgrad.jacfwd(f)(x0), jitgrad.jacrev(f)(x0))
    g = jitgrad.grad(f)
    np.testing.assert_array_equal(jitgrad.jacfwd(g)(x0), jitgrad.jacrev(g)(x0))
