"""An Array API namespace whose every call on arrays runs through jitgrad: the array
arguments are traced, jitgrad's namespace (jitgrad.array_api) builds the IR, and the
reference interpreter evaluates it. It lets the standard's conformance suite
(data-apis/array-api-tests) exercise jitgrad's implementations with NumPy arrays as
inputs and outputs:

    ARRAY_API_TESTS_MODULE="exec('import sys; sys.path.insert(0, \"<repo>/benchmarks\"); import array_api_traced as xp')" \
        python3 -m pytest array_api_tests/ -p no:cacheprovider
"""
from __future__ import annotations

import sys
import types

import numpy as np

from jitgrad.interpreter import evaluate
from jitgrad.tracing import array_namespace
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.tracing.tracer import Tracer, trace

PASS_THROUGH = {"finfo", "iinfo", "isdtype", "result_type", "can_cast", "__array_namespace_info__", "arange", "empty",
                "zeros", "ones", "eye", "linspace", "from_dlpack", "meshgrid"}


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) and not isinstance(x, type)


def _traced(fn):
    def call(*args, **kwargs):
        leaves, tree = tree_flatten((args, kwargs), is_leaf=_is_array)
        positions = [k for k, leaf in enumerate(leaves) if _is_array(leaf)]
        if not positions:
            return fn(*args, **kwargs)
        arrays = [np.asarray(leaves[k]) for k in positions]
        holder = {}

        def body(*traced):
            filled = list(leaves)
            for k, t in zip(positions, traced, strict=True):
                filled[k] = t
            call_args, call_kwargs = tree_unflatten(tree, filled)
            out = fn(*call_args, **call_kwargs)
            out_leaves, out_tree = tree_flatten(out)
            holder["tree"], holder["leaves"] = out_tree, out_leaves
            return [x for x in out_leaves if isinstance(x, Tracer)]
        traced = trace(body, tuple(arrays))
        values = iter(evaluate(traced.function, arrays))
        out = [np.asarray(next(values)) if isinstance(x, Tracer) else x for x in holder["leaves"]]
        return tree_unflatten(holder["tree"], out)
    call.__name__ = getattr(fn, "__name__", "call")
    return call


xp = types.ModuleType("array_api_traced")
for _name in array_namespace.__all__:
    _value = getattr(array_namespace, _name)
    setattr(xp, _name, _value if not callable(_value) or isinstance(_value, type) or _name in PASS_THROUGH
            else _traced(_value))
xp.__array_api_version__ = array_namespace.__array_api_version__
sys.modules["array_api_traced"] = xp
