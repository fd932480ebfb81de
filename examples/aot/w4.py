"""The W4 case (benchmarks/run.py): the gradient of sum(x**2) on 8 doubles, for
call_overhead.c."""
import numpy as np


def square_sum(x):
    return np.sum(x ** 2)
