"""Ahead-of-time artifacts: compiled functions as a plain-C library (`export`, `Library`)
and loading one back without the compiler or llvmlite (`load`). See docs/aot.md.

`load` and its errors come from `loader`, which imports only numpy and the standard
library; `export` and `Library` import the compiler on first use."""
from .loader import (Artifact, ArtifactCPUError, ArtifactError, ArtifactFunction, ArtifactIndexError,
                     ArtifactIntegrityError, ArtifactSignatureError, load)


def __getattr__(name):
    if name in ("export", "Library", "ExportError"):
        from . import builder as module
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["export", "Library", "ExportError", "load", "Artifact", "ArtifactFunction", "ArtifactError",
           "ArtifactIntegrityError", "ArtifactCPUError", "ArtifactSignatureError", "ArtifactIndexError"]
