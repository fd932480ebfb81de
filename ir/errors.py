"""The errors the IR layer raises, and the root of every jitgrad error.

`JitgradError` is defined here, in the package that everything else builds on, so that
`ir/` needs nothing from the rest of jitgrad and `jitgrad.errors` (which re-exports these
classes) can still promise that every error jitgrad raises is a `JitgradError`.
"""
from __future__ import annotations

import copy


class JitgradError(Exception):
    """Base class of all jitgrad errors. `location` is the user's file:line, if known."""

    def __init__(self, message: str, location=None):
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}" if location else message)

    def with_location(self, location) -> "JitgradError":
        """A copy of this error that names `location`, unless it names one already."""
        if self.location is not None or location is None:
            return self
        err = copy.copy(self)
        err.location = location
        err.args = (f"{location}: {self.message}",)
        return err


class IRParseError(JitgradError, ValueError):
    """Text that is not valid jitgrad IR."""


class VerificationError(JitgradError):
    """IR that breaks an invariant: types, shapes, dominance, terminators."""


class GradientError(JitgradError, TypeError):
    """A differentiation request that has no meaning (non-scalar output, integer input)."""


class MissingRuleError(JitgradError, NotImplementedError):
    """A transformation needs a rule that the op's record does not declare (an
    interpreter impl, a JVP, a transpose, a lowering ...). `op` and `slot` name them."""

    def __init__(self, message: str, location=None, *, op: str = "", slot: str = ""):
        super().__init__(message, location)
        self.op, self.slot = op, slot


class MissingDerivativeRuleError(MissingRuleError, GradientError):
    """A missing JVP, transpose or partial-eval rule: also a `GradientError`, since the
    request it fails is a differentiation."""
