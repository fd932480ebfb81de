"""Old import path of `KernelKind`; it lives in `jitgrad.primitives.kernel_kind`, the
layer of the other lowering descriptions (primitives and passes may not import
backends). Import it from there."""
from jitgrad.primitives.kernel_kind import KernelKind

__all__ = ["KernelKind"]
