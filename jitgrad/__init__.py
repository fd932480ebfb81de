"""jitgrad: a JIT differentiation compiler for ordinary NumPy code.

Trace a NumPy function into jitgrad's SSA IR, differentiate the IR, optimize it and
compile it to native code with LLVM:

    >>> import numpy as np
    >>> from jitgrad import jit_grad
    >>> @jit_grad
    ... def loss(w, x):
    ...     return np.mean(np.tanh(x @ w) ** 2)
"""
from __future__ import annotations

import importlib

# The public names and the module each comes from. They are imported on first use
# (PEP 562 module __getattr__), so `import jitgrad.ir` or `import jitgrad.passes` loads
# those packages alone, without the tracer, the eager layers and the LLVM backend.
_EXPORTS = {
    "jitgrad.errors": ("JitgradError", "ShapeError", "DTypeError", "UnsupportedOperationError",
                       "UnsupportedAttributeError", "TracerBoolConversionError", "AutographError", "GradientError",
                       "IRParseError", "VerificationError", "CompilationError", "ArgumentError",
                       "PytreeError", "IndexingError", "MutationError", "CutDerivativeError", "CallbackError",
                       "ControlFlowError",
                       "MemoryBudgetError", "MemoryBudgetWarning", "RecompileWarning", "MissingRuleError",
                       "MissingDerivativeRuleError"),
    "jitgrad.api": ("Compiled", "jit", "grad", "value_and_grad", "vjp", "jvp", "linearize", "jacfwd",
                    "jacrev", "jacobian", "hessian", "hvp", "jit_grad", "stop_gradient", "clear_caches"),
    "jitgrad.custom": ("custom_jvp", "custom_vjp", "CustomOp", "custom_op", "ClipGradient", "checkpoint"),
    "jitgrad.eager": ("GradientTape", "TrackedTensor", "DualTensor", "ForwardADContext", "TapeNode"),
    "jitgrad.control_flow": ("cond", "switch", "while_loop", "fori_loop", "scan"),
    "jitgrad.callback": ("pure_callback", "ShapeDtypeStruct"),
    "jitgrad.vmap": ("vmap",),
    "jitgrad.ops": ("Operation",),
    "jitgrad.graph": ("Graph",),
    "jitgrad.optimizers": ("SGD", "Adam"),
    # `jitgrad.mixed_precision` is the module itself, callable as the transformation
    "jitgrad.mixed_precision": ("LossScaler",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    """Import a public name (or a submodule, `jitgrad.config`) the first time it is used."""
    module = _MODULE_OF.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})


__version__ = "0.1.0"

__all__ = [
    "jit", "grad", "value_and_grad", "vjp", "jvp", "linearize", "jacfwd", "jacrev", "jacobian", "hessian", "hvp",
    "jit_grad", "stop_gradient", "vmap", "Compiled", "clear_caches", "tree", "pure_callback", "ShapeDtypeStruct",
    "CallbackError", "cond", "switch", "while_loop", "fori_loop", "scan", "ControlFlowError",
    "custom_jvp", "custom_vjp", "CustomOp", "custom_op", "ClipGradient", "checkpoint",
    "GradientTape", "TrackedTensor", "DualTensor", "ForwardADContext", "TapeNode", "Operation", "Graph", "SGD",
    "Adam", "mixed_precision", "LossScaler", "nn",
    "JitgradError", "ShapeError", "DTypeError", "UnsupportedOperationError", "UnsupportedAttributeError", "TracerBoolConversionError", "AutographError",
    "GradientError", "IRParseError", "VerificationError", "CompilationError", "ArgumentError", "PytreeError",
    "IndexingError",
    "MutationError", "CutDerivativeError", "MemoryBudgetError", "MemoryBudgetWarning", "RecompileWarning",
    "MissingRuleError", "MissingDerivativeRuleError",
]
