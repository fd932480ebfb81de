"""NumPy's functions of complex arrays: np.real, np.imag, np.conj, np.abs, np.angle.

Each replaces the table entry of the real-valued implementation and hands real operands
back to it, so only complex operands take the paths here. Arithmetic, comparisons for
equality, sums and products of complex arrays need nothing here: NumPy's promotion
(numpy_api) gives them complex operands and the primitives accept them
(jitgrad.primitives.complex_numbers).
"""
from __future__ import annotations

import numpy as np

from jitgrad import primitives as P
from jitgrad.ir import Value
from jitgrad.primitives import complex_numbers as C
from . import numpy_api as api


def _complex_value(x) -> Value | None:
    """`x` as an IR value when it is complex (a traced value or a constant), else None."""
    if isinstance(x, Value):
        return x if x.type.dtype.is_complex else None
    if np.iscomplexobj(x):
        return api.as_value(x)
    return None


def _on_complex(complex_impl, real_impl):
    def impl(x, *args, **kwargs):
        z = _complex_value(x)
        return complex_impl(z, *args, **kwargs) if z is not None else real_impl(x, *args, **kwargs)
    return impl


def _absolute(z):
    """|z| = hypot(re, im), as NumPy's npy_cabs."""
    return P.hypot(C.real(z), C.imag(z))


def _angle(z, deg=False):
    """arctan2(im, re), as NumPy's np.angle; in degrees with deg=True."""
    result = P.arctan2(C.imag(z), C.real(z))
    return api.UFUNCS[np.multiply](result, 180 / np.pi) if deg else result


_REPLACED_UFUNCS = {np.conjugate: C.conj, np.absolute: _absolute}
_REPLACED_FUNCTIONS = {np.real: C.real, np.imag: C.imag, np.angle: _angle}

for _ufunc, _impl in _REPLACED_UFUNCS.items():
    api.UFUNCS[_ufunc] = _on_complex(_impl, api.UFUNCS[_ufunc])
for _function, _impl in _REPLACED_FUNCTIONS.items():
    api.FUNCTIONS[_function] = _on_complex(_impl, api.FUNCTIONS[_function])
