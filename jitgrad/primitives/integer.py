"""Integer primitives: bitwise operations and shifts, and NumPy's floor division and
remainders (which are defined on floats too).

As elsewhere, operands have one shape and one dtype (NumPy's promotion happens at trace
time). The bitwise operations accept bool, where they are the logical ones. Division by
zero gives 0 on integers, as NumPy's result (NumPy also warns); MIN // -1 wraps to MIN.
"""
from __future__ import annotations

import numpy as np

from jitgrad.errors import DTypeError
from jitgrad.ir import DType, TensorType, Trait
from .base import Elementwise, Primitive, check_same_dtypes, check_same_shapes, defjvp, defjvp_zero


def _integer_rule(name: str, allow_bool: bool):
    def infer(*types: TensorType):
        check_same_shapes(name, *types)
        check_same_dtypes(name, *types)
        dtype = types[0].dtype
        if not (dtype.is_integer or allow_bool and dtype == DType.bool):
            kinds = "integer or bool" if allow_bool else "integer"
            raise DTypeError(f"{name} needs {kinds} operands, got {dtype}")
        return [types[0]]
    return infer


def _quietly(fn):
    """The NumPy reference, without NumPy's divide-by-zero warnings, in the operands' dtype."""
    def impl(*args):
        with np.errstate(all="ignore"):
            return np.asarray(fn(*args), dtype=args[0].dtype)
    return impl


def _integer_primitive(name, np_fn, scalar, allow_bool=False, doc="", commutative=False) -> Primitive:
    traits = (Trait.PURE, Trait.COMMUTATIVE) if commutative else (Trait.PURE,)
    prim = Primitive(name, _integer_rule(name, allow_bool), _quietly(np_fn), doc=doc, traits=traits)
    prim.lowering = Elementwise(scalar)
    defjvp_zero(prim)
    return prim


bit_and_p = _integer_primitive("bit_and", np.bitwise_and, lambda c, a, b: c.bit_and(a, b), allow_bool=True,
                             commutative=True)
bit_or_p = _integer_primitive("bit_or", np.bitwise_or, lambda c, a, b: c.bit_or(a, b), allow_bool=True,
                             commutative=True)
bit_xor_p = _integer_primitive("bit_xor", np.bitwise_xor, lambda c, a, b: c.bit_xor(a, b), allow_bool=True,
                             commutative=True)
bit_not_p = _integer_primitive("bit_not", np.invert, lambda c, a: c.bit_not(a), allow_bool=True)
shift_left_p = _integer_primitive("shift_left", np.left_shift, lambda c, a, b: c.shift_left(a, b),
                                  doc="a << b; counts outside [0, bits) give 0, as NumPy.")
shift_right_p = _integer_primitive("shift_right", np.right_shift, lambda c, a, b: c.shift_right(a, b),
                                   doc="a >> b, arithmetic on signed and logical on unsigned integers; "
                                       "counts outside [0, bits) give 0 or -1, as NumPy.")


def bit_and(a, b): return bit_and_p.bind(a, b)
def bit_or(a, b): return bit_or_p.bind(a, b)
def bit_xor(a, b): return bit_xor_p.bind(a, b)
def bit_not(a): return bit_not_p.bind(a)
def shift_left(a, b): return shift_left_p.bind(a, b)
def shift_right(a, b): return shift_right_p.bind(a, b)


# --------------------------------------------------------------------------- division

def _numeric_rule(name: str):
    def infer(a: TensorType, b: TensorType):
        check_same_shapes(name, a, b)
        check_same_dtypes(name, a, b)
        if a.dtype == DType.bool:
            raise DTypeError(f"{name} is not defined for bool operands")
        return [a]
    return infer


def _division(name, np_fn, scalar, doc) -> Primitive:
    prim = Primitive(name, _numeric_rule(name), _quietly(np_fn), doc=doc)
    prim.lowering = Elementwise(scalar)
    prim.cost = 4
    return prim


floor_divide_p = _division("floor_divide", np.floor_divide, lambda c, a, b: c.floor_divide(a, b),
                           "a // b rounded toward -inf (NumPy's floor_divide; x // 0 = 0 on integers).")
remainder_p = _division("remainder", np.remainder, lambda c, a, b: c.remainder(a, b),
                        "a % b with the sign of b (NumPy's remainder; x % 0 = 0 on integers).")
fmod_p = _division("fmod", np.fmod, lambda c, a, b: c.fmod(a, b),
                   "C's fmod: the remainder with the sign of a (x fmod 0 = 0 on integers).")


def floor_divide(a, b): return floor_divide_p.bind(a, b)
def remainder(a, b): return remainder_p.bind(a, b)
def fmod(a, b): return fmod_p.bind(a, b)


def _trunc_divide(a, b):
    """(a - fmod(a, b)) / b: the quotient rounded toward zero, for fmod's derivative."""
    from .elementwise import div, sub
    return div(sub(a, fmod(a, b)), b)


def _neg_mul(t, q):
    from .elementwise import neg, tangent_mul
    return neg(tangent_mul(t, q))


# floor_divide's value is piecewise constant; remainder(a, b) = a - b * floor(a / b) and
# fmod(a, b) = a - b * trunc(a / b), so their derivatives are 1 in a and -quotient in b.
defjvp_zero(floor_divide_p)
defjvp(remainder_p, lambda t, a, b: t, lambda t, a, b: _neg_mul(t, floor_divide(a, b)))
defjvp(fmod_p, lambda t, a, b: t, lambda t, a, b: _neg_mul(t, _trunc_divide(a, b)))
