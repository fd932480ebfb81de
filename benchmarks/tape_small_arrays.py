"""Recording cost of the eager GradientTape on small arrays: a chain of 10 elementwise
operations (mul, add, sin, mul, neg+exp, sub, tanh, div, mul, cos) on float64 vectors of
n = 16 and n = 1000, recorded on a fresh tape, against the same code on plain arrays.

Four candidates, each timed in this process with the garbage collector off, medians of
many single calls:

  numpy       the chain on plain NumPy arrays
  tape        the chain on `tape.watch(x)` inside `with GradientTape():` (creating the
              tape and watching included, `gradient` not)
  floor       the least any pure-Python recorder can cost: a class with `__slots__`
              whose operators and `__array_ufunc__` unwrap, call the ufunc, append one
              record to a list and wrap the result — no checks, no guards, no node
              numbers. It shows what is left once the tape does nothing but record
  torch       PyTorch autograd recording the same chain on a `requires_grad` tensor,
              as a ratio to PyTorch on a plain tensor (its dispatcher is C++)

Run:  python benchmarks/tape_small_arrays.py [--repeats N]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jitgrad.eager.tape import GradientTape  # noqa: E402


def chain(x, lib):
    """The benchmarked chain: ten elementwise operations, written as NumPy users write them."""
    y = x * 1.5
    y = y + 0.25
    y = lib.sin(y)
    y = y * y
    y = lib.exp(-y)
    y = y - x
    y = lib.tanh(y)
    y = y / 3.0
    y = y * x
    return lib.cos(y)


class FloorRecorder:
    """The cheapest recorder Python allows: unwrap, call, append, wrap."""

    __slots__ = ("value",)
    __array_priority__ = 1000
    records: list = []

    def __init__(self, value):
        self.value = value

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raw = [i.value if type(i) is FloorRecorder else i for i in inputs]
        result = ufunc(*raw)
        FloorRecorder.records.append((ufunc, inputs))
        return FloorRecorder(result)

    def __mul__(self, other):
        return self.__array_ufunc__(np.multiply, "__call__", self, other)

    def __add__(self, other):
        return self.__array_ufunc__(np.add, "__call__", self, other)

    def __sub__(self, other):
        return self.__array_ufunc__(np.subtract, "__call__", self, other)

    def __truediv__(self, other):
        return self.__array_ufunc__(np.divide, "__call__", self, other)

    def __neg__(self):
        return self.__array_ufunc__(np.negative, "__call__", self)


def median_call_time(fn, repeats: int, warmup: int = 200) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5000)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    gc.disable()
    print(f"{'n':>6} {'numpy':>9} {'tape':>9} {'floor':>9} {'tape/numpy':>11} {'floor/numpy':>12} "
          f"{'torch autograd/torch':>21}")
    for n in (16, 1000):
        x = np.random.default_rng(0).random(n)

        def taped():
            tape = GradientTape()
            with tape:
                return chain(tape.watch(x), np)

        def floor():
            FloorRecorder.records = []
            return chain(FloorRecorder(x), np)

        tape_value = taped().value
        np.testing.assert_array_equal(tape_value, chain(x, np))
        np.testing.assert_array_equal(floor().value, chain(x, np))
        plain_t = median_call_time(lambda: chain(x, np), args.repeats)
        tape_t = median_call_time(taped, args.repeats)
        floor_t = median_call_time(floor, args.repeats)
        torch_ratio = "n/a"
        if torch is not None:
            xt = torch.tensor(x)
            torch_plain = median_call_time(lambda: chain(xt, torch), args.repeats)
            torch_taped = median_call_time(lambda: chain(xt.detach().requires_grad_(True), torch), args.repeats)
            torch_ratio = f"{torch_taped / torch_plain:.2f}x"
        print(f"{n:>6} {plain_t * 1e6:>7.1f}us {tape_t * 1e6:>7.1f}us {floor_t * 1e6:>7.1f}us "
              f"{tape_t / plain_t:>10.2f}x {floor_t / plain_t:>11.2f}x {torch_ratio:>21}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
