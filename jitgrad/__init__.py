"""jitgrad: a JIT differentiation compiler for ordinary NumPy code.

Trace a NumPy function into jitgrad's SSA IR, differentiate the IR, optimize it and
compile it to native code with LLVM:

    >>> import numpy as np
    >>> from jitgrad import jit_grad
    >>> @jit_grad
    ... def loss(w, x):
    ...     return np.mean(np.tanh(x @ w) ** 2)
"""
from .errors import (JitgradError, ShapeError, DTypeError, UnsupportedOperationError, UnsupportedAttributeError, TracerBoolConversionError,
                     GradientError, IRParseError, VerificationError, CompilationError, ArgumentError, PytreeError,
                     IndexingError,
                     MutationError, CutDerivativeError, MemoryBudgetError, MemoryBudgetWarning,
                     RecompileWarning)
from .api import (Compiled, jit, grad, value_and_grad, vjp, jvp, linearize, jacfwd, jacrev, hessian, hvp,
                  jit_grad, stop_gradient, clear_caches)
from .custom import custom_jvp, custom_vjp, CustomOp, custom_op, ClipGradient, checkpoint
from .eager import GradientTape, TrackedTensor, DualTensor, ForwardADContext
from .graph import Graph
from .optimizers import SGD, Adam

__version__ = "0.1.0"

__all__ = [
    "jit", "grad", "value_and_grad", "vjp", "jvp", "linearize", "jacfwd", "jacrev", "hessian", "hvp",
    "jit_grad", "stop_gradient", "Compiled", "clear_caches",
    "custom_jvp", "custom_vjp", "CustomOp", "custom_op", "ClipGradient", "checkpoint",
    "GradientTape", "TrackedTensor", "DualTensor", "ForwardADContext", "Graph", "SGD", "Adam",
    "JitgradError", "ShapeError", "DTypeError", "UnsupportedOperationError", "UnsupportedAttributeError", "TracerBoolConversionError",
    "GradientError", "IRParseError", "VerificationError", "CompilationError", "ArgumentError", "PytreeError",
    "IndexingError",
    "MutationError", "CutDerivativeError", "MemoryBudgetError", "MemoryBudgetWarning", "RecompileWarning",
]
