"""The Array API standard (2023.12) namespace of jitgrad's traced arrays:
`x.__array_namespace__()` inside a traced function, or this module directly.

    >>> import jitgrad.array_api as xp
    >>> f = jitgrad.jit(lambda x: xp.sum(xp.exp(x)))

Array-API-aware libraries pick it up on their own: with SCIPY_ARRAY_API=1 set before
SciPy is imported, `scipy.special.logsumexp`, `softmax` and `log_softmax` trace and
compile (docs/array-api.md).
"""
from jitgrad.tracing.array_namespace import *  # noqa: F401,F403 - the namespace is this module's content
from jitgrad.tracing.array_namespace import __array_api_version__, __array_namespace_info__  # noqa: F401
