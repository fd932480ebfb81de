"""The CPU backend: IR -> LLVM IR (llvmlite builder) -> native code via MCJIT."""
from .backend import CPUBackend, CPUExecutable
from .engine import live_engine_count
from .workspace import allocated_bytes as workspace_bytes_allocated, release_all as release_workspaces

__all__ = ["CPUBackend", "CPUExecutable", "live_engine_count", "release_workspaces", "workspace_bytes_allocated"]
