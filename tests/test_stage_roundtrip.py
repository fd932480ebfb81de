"""Every IR stage of real programs survives print -> parse -> print exactly, verifies,
and the parsed IR computes what the original computes."""
import numpy as np
import pytest

import jitgrad
from jitgrad.interpreter import evaluate
from jitgrad.ir import parse_function, print_function, verify

RNG = np.random.default_rng(7)


def mlp_loss(w, b, x, y):
    h = np.tanh(x @ w + b)
    return np.mean((h - y) ** 2)


def softmax_xent(logits, labels):
    m = np.max(logits, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(logits - m), axis=1, keepdims=True)) + m
    return -np.mean(np.sum(labels * (logits - lse), axis=1))


def sliced(x):
    return np.sum(np.concatenate([x[::2], x[1::3] ** 2]) * np.where(x[:3] > 0, 1.0, -1.0).sum())


def checkpointed(x):
    block = jitgrad.checkpoint(lambda v: np.sin(v) * v)
    return np.sum(block(x) ** 2)


CASES = [
    (jitgrad.grad(mlp_loss, argnums=(0, 1)),
     (RNG.normal(size=(4, 3)), RNG.normal(size=3), RNG.normal(size=(5, 4)), RNG.normal(size=(5, 3)))),
    (jitgrad.value_and_grad(softmax_xent), (RNG.normal(size=(4, 6)).astype(np.float32),
                                            np.eye(6, dtype=np.float32)[[0, 2, 5, 1]])),
    (jitgrad.grad(sliced), (RNG.normal(size=9),)),
    (jitgrad.grad(checkpointed), (RNG.normal(size=5),)),
    (jitgrad.hessian(lambda x: np.sum(np.sin(x) * x ** 3)), (RNG.normal(size=3),)),
    (jitgrad.jit(lambda x: (x.T @ x, x.astype(np.int64) > 0, np.max(x, axis=0))), (RNG.normal(size=(3, 2)),)),
]


@pytest.mark.parametrize("compiled, args", CASES, ids=lambda c: getattr(c, "name", ""))
def test_every_stage_round_trips(compiled, args):
    lowered = compiled.lower(*args)
    assert len(lowered.stages) >= 5
    for name, fn in lowered.stages:
        text = print_function(fn)
        parsed = parse_function(text)
        verify(parsed)
        assert print_function(parsed) == text, f"stage {name} does not round-trip"
        if "custom" not in text:
            flat_args = [np.asarray(a) for a in jitgrad.tracing.pytree.tree_flatten(args)[0]]
            for got, want in zip(evaluate(parsed, flat_args), evaluate(fn, flat_args), strict=True):
                np.testing.assert_array_equal(got, want)


def test_compiled_matches_interpreter_on_final_stage():
    compiled, args = CASES[0]
    lowered = compiled.lower(*args)
    flat = [np.asarray(a) for a in args]
    for got, want in zip(lowered.executable(flat), evaluate(lowered.function, flat), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
