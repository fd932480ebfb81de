"""NumPy functions whose result shape depends on the data, with the static `size=` JAX
gives them: the first `size` results, padded with `fill_value` when there are fewer.

NumPy's own signatures have no `size=` (NumPy rejects the keyword before a traced array
could see it), so these are called by name inside a traced function:

    from jitgrad.tracing import sized
    rows, cols = sized.nonzero(mask, size=8)

`np.nonzero`, `np.flatnonzero`, `np.argwhere` and `np.unique` on traced arrays raise an
error that names these.
"""
from __future__ import annotations

from . import complex_order, numpy_sorting
from .tracer import apply


def nonzero(a, *, size: int, fill_value=None):
    """np.nonzero(a) padded (or cut) to `size` entries per axis; `fill_value` (default 0)
    may be one scalar or one per axis."""
    return apply(numpy_sorting.nonzero, (a,), {"size": size, "fill_value": fill_value})


def flatnonzero(a, *, size: int, fill_value=None):
    """np.flatnonzero(a) padded (or cut) to `size` entries."""
    return apply(numpy_sorting.flatnonzero, (a,), {"size": size, "fill_value": fill_value})


def argwhere(a, *, size: int, fill_value=None):
    """np.argwhere(a) with `size` rows."""
    return apply(numpy_sorting.argwhere, (a,), {"size": size, "fill_value": fill_value})


def unique(ar, return_index=False, return_inverse=False, return_counts=False, *, size: int, fill_value=None,
           equal_nan=True):
    """np.unique(ar) (flattened, sorted) with `size` entries; `fill_value` defaults to the
    smallest element. return_index/return_inverse/return_counts as NumPy's."""
    return apply(complex_order.unique_of_any, (ar, return_index, return_inverse, return_counts),
                 {"size": size, "fill_value": fill_value, "equal_nan": equal_nan})
