"""Eager differentiation on top of jitgrad's IR: a recording `GradientTape` (reverse
mode) and `DualTensor` numbers (forward mode). Both are thin layers: derivatives come
from tracing NumPy calls to IR and the same jvp/vjp passes as `jitgrad.grad`."""
from .tape import GradientTape, TrackedTensor

__all__ = ["GradientTape", "TrackedTensor"]
