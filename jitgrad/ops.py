"""The functional interface of TenfloweRS's operation list, and `Operation`, the
enumeration of jitgrad's differentiable primitives.

Each function is the NumPy computation it names and nothing else, so one definition
serves every kind of value: NumPy arrays (plain NumPy), `TrackedTensor`s (recorded by
their tape), `DualTensor`s (forward mode), and the tracers of `jitgrad.jit`/`grad`. Their
derivatives come from the NumPy calls' primitive rules; there is no second set of
derivative rules here. The same operations are methods of `TrackedTensor` and
`DualTensor` (`x.mul(w)`, `x.pow(3)`, `x.relu()`).

    >>> import numpy as np
    >>> from jitgrad import ops
    >>> ops.sigmoid(np.array([0.0]))
    array([0.5])
"""
from __future__ import annotations

import enum

import numpy as np

from jitgrad import nn

__all__ = ["add", "sub", "mul", "div", "pow", "neg", "matmul", "transpose", "reshape", "sum", "mean", "max",
           "max_with_indices", "relu", "sigmoid", "tanh", "softmax", "conv2d", "max_pool2d", "batch_norm",
           "Operation", "SEED_OPERATIONS"]

# --------------------------------------------------------------------------- arithmetic


def add(a, b):
    """a + b (NumPy broadcasting)."""
    return np.add(a, b)


def sub(a, b):
    """a - b."""
    return np.subtract(a, b)


def mul(a, b):
    """a * b, elementwise."""
    return np.multiply(a, b)


def div(a, b):
    """a / b (true division)."""
    return np.true_divide(a, b)


def pow(a, b):      # noqa: A001 - the operation's name in TenfloweRS
    """a ** b, elementwise."""
    return np.power(a, b)


def neg(a):
    """-a."""
    return np.negative(a)

# --------------------------------------------------------------------------- matrix


def matmul(a, b):
    """a @ b."""
    return np.matmul(a, b)


def transpose(a, axes=None):
    """The axes of `a` reversed (or permuted by `axes`)."""
    return np.transpose(a, axes)


def reshape(a, shape):
    """`a` with a new shape (one entry may be -1)."""
    return np.reshape(a, shape)

# --------------------------------------------------------------------------- reductions


def sum(a, axis=None, keepdims: bool = False):     # noqa: A001
    """The sum over `axis` (all axes by default)."""
    return np.sum(a, axis=axis, keepdims=keepdims)


def mean(a, axis=None, keepdims: bool = False):
    """The mean over `axis` (all axes by default)."""
    return np.mean(a, axis=axis, keepdims=keepdims)


def max(a, axis=None, keepdims: bool = False, return_indices: bool = False):     # noqa: A001
    """The maximum over `axis`; with `return_indices`, also where it is (`max_with_indices`)."""
    if return_indices:
        return max_with_indices(a, axis, keepdims)
    return np.max(a, axis=axis, keepdims=keepdims)


def max_with_indices(a, axis=None, keepdims: bool = False):
    """(maximum, index of the maximum) over `axis`, TenfloweRS's `max` with indices. The
    index is an integer array, as `np.argmax` gives it (over the flattened array when
    `axis` is None); it has no derivative. The maximum's gradient goes to that index."""
    return np.max(a, axis=axis, keepdims=keepdims), np.argmax(a, axis=axis, keepdims=keepdims)

# --------------------------------------------------------------------------- activations


def relu(a):
    """max(a, 0), elementwise (its derivative at 0 is jitgrad's convention for
    np.maximum at a tie: docs/gradient-conventions.md)."""
    return np.maximum(a, 0)


def sigmoid(a):
    """1 / (1 + exp(-a)), computed as (tanh(a/2) + 1) / 2, which does not overflow."""
    return 0.5 * (np.tanh(0.5 * a) + 1.0)


def tanh(a):
    """tanh(a), elementwise."""
    return np.tanh(a)


def softmax(a, axis: int = -1):
    """exp(a) / sum(exp(a)) over `axis`, shifted by the maximum so that it does not overflow."""
    e = np.exp(a - np.max(a, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)

# --------------------------------------------------------------------------- neural operations


# jitgrad.nn's functions (convolution, max pooling and batch normalization primitives and
# formulas, for every kind of array)
conv2d = nn.conv2d
max_pool2d = nn.max_pool2d
batch_norm = nn.batch_norm

# The operation list of TenfloweRS's README, each with its function here.
SEED_OPERATIONS = {name: globals()[name] for name in (
    "add", "sub", "mul", "div", "pow", "neg", "matmul", "transpose", "reshape", "sum", "mean", "max", "relu",
    "sigmoid", "tanh", "softmax", "conv2d", "max_pool2d", "batch_norm")}

# --------------------------------------------------------------------------- the enumeration of primitives


class _OperationKind(enum.Enum):
    """A differentiable primitive of jitgrad's IR; its value is the primitive's record,
    which holds all of its rules."""

    @property
    def primitive(self):
        return self.value

    @property
    def rules(self) -> dict:
        """Every rule slot of the primitive's record (None where it has no rule); "jvp" is
        the forward-mode rule in whichever form the record declares it (`jvp`, or `jvp_op`
        for rules that read the primal output)."""
        rules = self.value.rules()
        rules["jvp"] = rules["jvp"] or rules["jvp_op"]
        return rules

    @property
    def differentiable(self) -> bool:
        """Whether the primitive has a forward-mode (JVP) rule."""
        return self.value.differentiable

    def __repr__(self) -> str:
        return f"<Operation.{self.name}>"


def _operation_enum():
    from jitgrad.primitives import Primitive
    return _OperationKind("Operation", [(name, Primitive.all[name]) for name in sorted(Primitive.all)],
                          module=__name__)


Operation = _operation_enum()
Operation.__doc__ = ("The enumeration of jitgrad's primitives (TenfloweRS's `Operation`): `Operation.mul`, "
                     "`Operation.dot_general`, ...; each member's value is the primitive's record with its rules.")
