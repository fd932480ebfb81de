"""Eager differentiation on top of jitgrad's IR: a recording `GradientTape` (reverse
mode) and `DualTensor` numbers (forward mode). Both are thin layers: their derivatives
come from tracing the NumPy calls to IR and the same jvp/vjp passes as `jitgrad.grad`."""
from .tape import GradientTape, TrackedTensor
from .dual import DualTensor, ForwardADContext
from .introspection import TapeNode

__all__ = ["GradientTape", "TrackedTensor", "DualTensor", "ForwardADContext", "TapeNode"]
