"""The exceptions jitgrad raises. Every one is a `JitgradError`.

Errors raised while tracing carry the user's source location, so a message reads
`model.py:12: ...`; errors from compilation name the stage that failed. The root class and
the errors the IR layer itself raises (`IRParseError`, `VerificationError`, `GradientError`,
`MissingRuleError` for an op whose record lacks a rule a transformation needs) live in
`jitgrad.ir.errors`, so that the IR package stands alone; they are re-exported here.
"""
from __future__ import annotations

from jitgrad.ir.errors import (GradientError, IRParseError, JitgradError, MissingDerivativeRuleError,  # noqa: F401
                               MissingRuleError, VerificationError)


class ShapeError(JitgradError, ValueError):
    """Operand shapes are incompatible (they don't broadcast, multiply, concatenate ...)."""


class DTypeError(JitgradError, TypeError):
    """An operand has a dtype the operation does not accept."""


class UnsupportedOperationError(JitgradError, NotImplementedError):
    """A NumPy function, method or argument that jitgrad cannot trace."""


class UnsupportedAttributeError(UnsupportedOperationError, AttributeError):
    """An ndarray method or attribute that traced arrays do not have."""


class TracerBoolConversionError(JitgradError, TypeError):
    """Python control flow (`if`, `while`, `bool()`, `int()`) on a traced value."""


class AutographError(TracerBoolConversionError):
    """Python control flow on a traced value that the automatic conversion to region ops
    cannot express (an early `return` or `yield` under a traced test, a name bound in
    one branch of a traced `if` and used after it, ...); the message names the file,
    line and construct."""


class CompilationError(JitgradError):
    """A backend stage (LLVM IR building, optimization, code generation) failed."""

    def __init__(self, stage: str, message: str, location=None):
        self.stage = stage
        super().__init__(f"compilation failed in stage {stage!r}: {message}", location)


class ArgumentError(JitgradError, TypeError):
    """A call's arguments do not fit the function (wrong count, type or structure)."""


class PytreeError(ArgumentError):
    """Arguments or results whose structure cannot be flattened: dict keys that have no
    order (pytrees sort keys so that equal dicts have equal structures)."""


class IndexingError(JitgradError, IndexError):
    """An index that is out of bounds or malformed for the array's shape."""


class MutationError(JitgradError, RuntimeError):
    """An array that a GradientTape recorded was modified in place before `gradient` read
    it again, so the recorded computation can no longer be replayed (PyTorch's "modified by
    an inplace operation")."""


class CutDerivativeError(JitgradError, TypeError):
    """A conversion of a tracked or dual tensor to a plain NumPy array or Python number
    (`np.asarray`, `float`, `math.exp`, `.item()`, assignment into a NumPy array), which
    would drop its derivative without a word."""


class CallbackError(JitgradError):
    """The Python function of a `jitgrad.pure_callback` raised, or returned results that do
    not match its declared structure, shapes and dtypes."""


class ControlFlowError(JitgradError, TypeError):
    """A control-flow function (`jitgrad.cond`, `switch`, `while_loop`, `fori_loop`,
    `scan`) was given functions whose results do not fit together: a body returning a
    carry of another structure, shape or dtype than its initial value, branches returning
    different types, xs of different lengths."""


class MemoryBudgetError(JitgradError):
    """`memory_budget=..., strict=True`: no rematerialization fits the program in the budget."""


class MemoryBudgetWarning(UserWarning):
    """A `memory_budget` that no rematerialization meets: the program runs with a larger peak."""


class RecompileWarning(UserWarning):
    """A compiled function was compiled for many signatures (more than
    `config.recompile_warning_after`): each new shape, dtype, static value or closure value
    traces and compiles again. The message names what changed."""
