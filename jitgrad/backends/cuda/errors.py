"""Errors of the CUDA backend."""
from __future__ import annotations

from jitgrad.errors import JitgradError


class NoCUDADeviceError(JitgradError, RuntimeError):
    """A compiled function for device "cuda" was called where no CUDA device (or no
    cuda-python) is available. Compiling, and printing PTX, need neither."""


class PTXToolError(JitgradError, RuntimeError):
    """ptxas or nvJitLink rejected generated PTX."""
