"""jitgrad's primitives: each a `Primitive` record with all of its rules, and the
functions that emit them into the active builder."""
from . import elementwise, transcendental, structural, reductions, linalg, calls  # noqa: F401 - registers the ops
from . import random  # noqa: F401 - registers random_uniform (counter-based random numbers)
from . import convolution  # noqa: F401 - registers convolution, window reductions and selections
from . import gather, sorting  # noqa: F401 - registers gather/scatter_add/scatter and sort/argsort
from . import lapack  # noqa: F401 - registers cholesky, triangular_solve, solve, slogdet, eigh, svd, qr
from . import control_flow  # noqa: F401 - registers cond, while, fori and scan
from . import complex_numbers  # noqa: F401 - registers real/imag/conj/complex; marks the primitives taking complex
from . import fft  # noqa: F401 - registers fft (the mixed-radix DFT kernel on (re, im) pairs)
from . import cumulative  # noqa: F401 - registers cumsum (NumPy's sequential running sums)
from . import special  # noqa: F401 - registers lgamma, digamma and zeta (scipy.special's gammaln, psi, zeta)
from . import bits  # noqa: F401 - registers signbit (the IEEE sign bit of a float)
from .base import (Primitive, Zero, UndefinedPrimal, Elementwise, Gather, Scatter, Alias, Reduction,
                   Contraction, Constant, instantiate, add_tangents)
from .elementwise import (neg, add, sub, mul, div, maximum, minimum, power, integer_pow, exp, log, log1p,
                          expm1, sin, cos, tanh, logistic, sqrt, absolute, sign, stop_gradient, safe_mul,
                          safe_div, eq, ne, lt, le, gt, ge, logical_and, logical_or, logical_not, select,
                          convert)
from .elementwise import *  # noqa: F401,F403 - also the records (`exp_p`, ...) tests and rules name
from .transcendental import (exp2, log2, log10, sinh, cosh, cbrt, hypot, tan, arcsin, arccos, arctan, arcsinh,
                             arccosh, arctanh, arctan2, ULP_BOUNDS)
from .structural import constant, full, broadcast_in_dim, reshape, transpose, static_slice, pad, rev, concatenate
from .reductions import reduce_sum, reduce_max, reduce_min
from .linalg import dot_general
from .integer import (bit_and, bit_or, bit_xor, bit_not, shift_left, shift_right, floor_divide, remainder,
                      fmod)

__all__ = [
    "Primitive", "Zero", "UndefinedPrimal", "Elementwise", "Gather", "Scatter", "Alias", "Reduction",
    "Contraction", "Constant", "instantiate", "add_tangents",
    "neg", "add", "sub", "mul", "div", "maximum", "minimum", "power", "integer_pow", "exp", "log", "log1p",
    "expm1", "sin", "cos", "tanh", "logistic", "sqrt", "absolute", "sign", "stop_gradient", "safe_mul",
    "safe_div", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "select",
    "convert", "constant", "full", "broadcast_in_dim", "reshape", "transpose", "static_slice", "pad", "rev",
    "concatenate", "reduce_sum", "reduce_max", "reduce_min", "dot_general",
    "exp2", "log2", "log10", "sinh", "cosh", "cbrt", "hypot", "tan", "arcsin", "arccos", "arctan", "arcsinh",
    "arccosh", "arctanh", "arctan2", "ULP_BOUNDS",
    "bit_and", "bit_or", "bit_xor", "bit_not", "shift_left", "shift_right", "floor_divide", "remainder", "fmod",
]
