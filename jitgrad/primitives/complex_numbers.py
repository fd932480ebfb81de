"""Complex numbers: the primitives that build and take apart complex values, and the
list of existing primitives that accept complex operands.

A complex value is a pair of floats (real part first, as NumPy stores complex64 and
complex128). The IR keeps complex types up to the end of the optimization pipeline; the
`lower-complex` pass (passes/lower_complex.py) then rewrites every complex value into its
two real parts, so the backends only ever see real arithmetic, and the function's complex
arguments and results are reinterpreted in place (`view_as_real`, `view_as_complex`: the
same bytes, no code). A primitive accepts complex operands only when it is listed in
`COMPLEX_READY` here *and* the lowering pass has its rule; every other primitive refuses
them with a `DTypeError` naming it (see `Primitive.complex_ready`).
"""
from __future__ import annotations

import numpy as np

from jitgrad.errors import DTypeError
from jitgrad.ir import DType, TensorType
from . import cumulative, elementwise, gather, linalg, reductions, structural, transcendental  # noqa: F401 - the records COMPLEX_READY names
from .base import Alias, Elementwise, Primitive, check_same_dtypes, check_same_shapes, deflinear


def _not_lowered(ctx, *args, **attrs):
    raise DTypeError("a complex-number primitive reached the code generator: the lower-complex pass "
                     "rewrites them into real arithmetic and must run before code generation")


def _complex_operand(name: str, x: TensorType) -> None:
    if not x.dtype.is_complex:
        raise DTypeError(f"{name} needs a complex operand, got {x.dtype}")


def _part_infer(name: str):
    def infer(x: TensorType):
        _complex_operand(name, x)
        return [x.with_dtype(x.dtype.real_dtype)]
    return infer


def _conj_infer(x: TensorType):
    _complex_operand("conj", x)
    return [x]


def _complex_infer(re: TensorType, im: TensorType):
    check_same_shapes("complex", re, im)
    check_same_dtypes("complex", re, im)
    if re.dtype not in (DType.f32, DType.f64):
        raise DTypeError(f"complex needs float32 or float64 parts, got {re.dtype}")
    return [re.with_dtype(re.dtype.complex_dtype)]


def _view_as_real_infer(x: TensorType):
    _complex_operand("view_as_real", x)
    return [TensorType((*x.shape, 2), x.dtype.real_dtype)]


def _view_as_complex_infer(x: TensorType):
    if x.dtype not in (DType.f32, DType.f64) or not x.shape or x.shape[-1] != 2:
        raise DTypeError(f"view_as_complex needs a float32 or float64 array whose last axis has 2 "
                         f"elements, got {x}")
    return [TensorType(x.shape[:-1], x.dtype.complex_dtype)]


def _elementwise(name, infer, impl, doc) -> Primitive:
    prim = Primitive(name, infer, impl, doc=doc)
    prim.lowering = Elementwise(_not_lowered)
    prim.complex_ready = True
    return prim


real_p = _elementwise("real", _part_infer("real"), lambda x: np.array(np.real(x)),
                      "The real part of a complex array (np.real).")
imag_p = _elementwise("imag", _part_infer("imag"), lambda x: np.array(np.imag(x)),
                      "The imaginary part of a complex array (np.imag).")
conj_p = _elementwise("conj", _conj_infer, lambda x: np.conj(x), "The complex conjugate (np.conj).")
def _make_complex_impl(re, im):
    out = np.empty(re.shape, np.result_type(re.dtype, np.complex64))
    out.real, out.imag = re, im
    return out


complex_p = _elementwise("complex", _complex_infer, _make_complex_impl,
                         "re + i im from two float arrays of one dtype (float32 -> complex64).")

view_as_real_p = Primitive("view_as_real", _view_as_real_infer,
                           lambda x: np.ascontiguousarray(x).view(x.real.dtype).reshape((*x.shape, 2)).copy(),
                           doc="A complex array's bytes as floats with a last axis (real, imaginary).")
view_as_real_p.lowering = Alias()
view_as_real_p.complex_ready = True
view_as_complex_p = Primitive("view_as_complex", _view_as_complex_infer,
                              lambda x: np.ascontiguousarray(x).view(np.result_type(x.dtype, np.complex64))
                              .reshape(x.shape[:-1]).copy(),
                              doc="The inverse of view_as_real: the same bytes as complex numbers.")
view_as_complex_p.lowering = Alias()
view_as_complex_p.complex_ready = True


def real(x): return real_p.bind(x)
def imag(x): return imag_p.bind(x)
def conj(x): return conj_p.bind(x)
def make_complex(re, im): return complex_p.bind(re, im)
def view_as_real(x): return view_as_real_p.bind(x)
def view_as_complex(x): return view_as_complex_p.bind(x)


# Derivatives in JAX's convention: every primitive is transposed as a real-linear map
# under the pairing <u, v> = Re(sum(u * v)) (no conjugation), so the transpose of `real`
# is ct + 0i, of `imag` 0 - ct i, and `grad` of a real function of complex values agrees
# with jax.grad.
deflinear(real_p, lambda ct, x: [make_complex(ct, _zeros(ct))])
deflinear(imag_p, lambda ct, x: [make_complex(_zeros(ct), elementwise.neg(ct))])
deflinear(conj_p, lambda ct, x: [conj(ct)])
deflinear(complex_p, lambda ct, re, im: [real(ct), elementwise.neg(imag(ct))])
deflinear(view_as_real_p, lambda ct, x: [conj(view_as_complex(ct))])
deflinear(view_as_complex_p, lambda ct, x: [view_as_real(conj(ct))])


def _zeros(like):
    return structural.full(0, like.type)


COMPLEX_READY = (
    "constant", "convert", "add", "sub", "mul", "div", "neg", "eq", "ne", "select", "stop_gradient",
    "broadcast_in_dim", "reshape", "transpose", "slice", "pad", "rev", "concatenate", "reduce_sum",
    "dot_general", "safe_mul", "safe_div", "integer_pow", "exp", "log", "sqrt",
    "exp2", "expm1", "log2", "log10", "log1p", "pow", "sign",
    "sin", "cos", "tan", "sinh", "cosh", "tanh", "asin", "acos", "atan", "asinh", "acosh", "atanh",
    "lt", "le", "gt", "ge", "maximum", "minimum", "reduce_max", "reduce_min", "gather", "scatter_add", "scatter",
    "cumsum", "cumprod",
)
"""Existing primitives whose complex operands `passes/lower_complex.py` rewrites into real
arithmetic (it has one rule for each)."""


for _name in COMPLEX_READY:
    Primitive.all[_name].complex_ready = True
