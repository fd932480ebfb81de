"""jitgrad's primitives: each a `Primitive` record with all of its rules."""
from .base import (Primitive, Zero, UndefinedPrimal, Elementwise, Gather, Scatter, Alias, Reduction,
                   Contraction, Constant, instantiate, add_tangents)
from . import elementwise, structural, reductions, linalg  # noqa: F401 - registers the primitives
from .elementwise import *  # noqa: F401,F403
from .structural import constant, full, broadcast_in_dim, reshape, transpose, static_slice, pad, rev, concatenate
from .reductions import reduce_sum, reduce_max, reduce_min
from .linalg import dot_general
