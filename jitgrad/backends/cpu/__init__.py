"""The CPU backend: IR -> LLVM IR (llvmlite builder) -> native code via MCJIT."""
from .backend import CPUBackend, CPUExecutable

__all__ = ["CPUBackend", "CPUExecutable"]
