"""Tracing NumPy code into jitgrad IR (`tracer`), NumPy's API from primitives (`numpy_api`),
pytrees, implicit arguments, and np.random inside traced functions (`random`)."""
from . import numpy_api, numpy_elementwise, numpy_linalg, numpy_reductions, numpy_shape, numpy_sorting
numpy_api.take_in(numpy_reductions, numpy_linalg, numpy_sorting, numpy_shape, numpy_elementwise)
from . import random  # noqa: F401 - registers the np.random interception with every trace
from . import numpy_extra  # noqa: F401 - registers more NumPy functions and np.array of traced values
from . import numpy_complex  # noqa: F401 - np.real/imag/conj/abs/angle of complex arrays
from . import complex_order  # noqa: F401 - searchsorted, unique, isin, nanmedian of complex arrays
from . import numpy_fft  # noqa: F401 - numpy.fft on the fft kernel
from . import pytree, tracer
from jitgrad.primitives import python_rules
python_rules.install(tracer=tracer.Tracer, as_value=numpy_api.as_value, tree_flatten=pytree.tree_flatten,
                     tree_unflatten=pytree.tree_unflatten)
