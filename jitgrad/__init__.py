"""jitgrad: a JIT differentiation compiler for ordinary NumPy code."""
from .errors import *  # noqa: F401,F403
