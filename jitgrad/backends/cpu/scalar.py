"""The CPU's scalar emitter: the `ctx` that primitives' `Elementwise` rules call.

Rules are target-neutral (`ctx.add(a, b)`, `ctx.math("sin", x)`); this class chooses
the LLVM instructions. Transcendental calls go to LLVM intrinsics or libm and carry the
`vector-function-abi-variant` attribute naming glibc's libmvec vector versions, so the
loop vectorizer replaces them with 8/16-lane calls (see shared/TECH-NOTES.md); where
libmvec is absent they stay scalar libm calls.
"""
from __future__ import annotations

from llvmlite import ir

from jitgrad.ir import DType
from .llvm_support import F64, I1, declare, index, register_type, set_call_string_attribute

# jitgrad name -> (LLVM intrinsic or None, libm name, libmvec base name or None, arity)
MATH_FUNCTIONS = {
    "exp": ("llvm.exp", "exp", "exp", 1),
    "log": ("llvm.log", "log", "log", 1),
    "sin": ("llvm.sin", "sin", "sin", 1),
    "cos": ("llvm.cos", "cos", "cos", 1),
    "tanh": ("llvm.tanh", "tanh", "tanh", 1),
    "log1p": (None, "log1p", "log1p", 1),
    "expm1": (None, "expm1", "expm1", 1),
    "exp2": (None, "exp2", "exp2", 1),
    "log2": (None, "log2", "log2", 1),
    "log10": (None, "log10", "log10", 1),
    "sinh": (None, "sinh", "sinh", 1),
    "cosh": (None, "cosh", "cosh", 1),
    "cbrt": (None, "cbrt", "cbrt", 1),
    "hypot": (None, "hypot", "hypot", 2),
    "pow": ("llvm.pow", "pow", "pow", 2),
    "sqrt": ("llvm.sqrt", "sqrt", None, 1),
    "fabs": ("llvm.fabs", "fabs", None, 1),
    "fma": ("llvm.fma", "fma", None, 3),
}

_FLOAT_PREDICATES = {"==": "==", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class CPUScalarContext:
    """Emits scalar operations into `builder`; `vector_math` describes libmvec's reach."""

    def __init__(self, builder: ir.IRBuilder, module: ir.Module, vector_math):
        self.builder = builder
        self.module = module
        self.vector_math = vector_math
        self.fastmath: tuple[str, ...] = ()

    # ----- type queries
    @staticmethod
    def is_float(x) -> bool:
        return isinstance(x.type, (ir.FloatType, ir.DoubleType))

    @staticmethod
    def float_width(x) -> int:
        """Bits of a floating-point scalar (rules that compute narrow floats in a wider
        type, or pick precision-dependent constants, ask this)."""
        return {ir.HalfType: 16, ir.FloatType: 32, ir.DoubleType: 64}[type(x.type)]

    def const(self, value, like) -> ir.Constant:
        if self.is_float(like):
            return ir.Constant(like.type, float(value))
        return ir.Constant(like.type, int(value))

    def const_of(self, value, dtype: DType) -> ir.Constant:
        t = register_type(dtype)
        if dtype.is_float:
            return ir.Constant(t, float(value))
        return ir.Constant(t, int(bool(value)) if dtype == DType.bool else int(value))

    # ----- arithmetic
    def neg(self, x):
        return self.builder.fneg(x) if self.is_float(x) else self.builder.neg(x)

    def add(self, a, b):
        return self.builder.fadd(a, b, flags=self.fastmath) if self.is_float(a) else self.builder.add(a, b)

    def sub(self, a, b):
        return self.builder.fsub(a, b) if self.is_float(a) else self.builder.sub(a, b)

    def mul(self, a, b):
        return self.builder.fmul(a, b) if self.is_float(a) else self.builder.mul(a, b)

    def div(self, a, b):
        return self.builder.fdiv(a, b) if self.is_float(a) else self.builder.sdiv(a, b)

    def cmp(self, op: str, a, b):
        if self.is_float(a):
            if op == "!=":
                return self.builder.fcmp_unordered("!=", a, b)
            return self.builder.fcmp_ordered(_FLOAT_PREDICATES[op], a, b)
        if a.type == I1:
            return self.builder.icmp_unsigned(op, a, b)
        return self.builder.icmp_signed(op, a, b)

    def select(self, pred, a, b):
        return self.builder.select(pred, a, b)

    def maximum(self, a, b):
        """NumPy's maximum: NaN if either operand is NaN."""
        if not self.is_float(a):
            return self.builder.select(self.builder.icmp_signed(">", a, b), a, b)
        return self._intrinsic("llvm.maximum", a, b)

    def minimum(self, a, b):
        if not self.is_float(a):
            return self.builder.select(self.builder.icmp_signed("<", a, b), a, b)
        return self._intrinsic("llvm.minimum", a, b)

    def and_(self, a, b):
        return self.builder.and_(a, b)

    def or_(self, a, b):
        return self.builder.or_(a, b)

    def not_(self, a):
        return self.builder.xor(a, ir.Constant(I1, 1))

    # ----- bit operations on integers (both operands of one integer type; bool is i1)
    def bit_and(self, a, b):
        return self.builder.and_(a, b)

    def bit_or(self, a, b):
        return self.builder.or_(a, b)

    def bit_xor(self, a, b):
        return self.builder.xor(a, b)

    def bit_not(self, a):
        return self.builder.not_(a)

    def _shift_in_range(self, b):
        """`0 <= b < width` (b read as unsigned, so negative counts are out of range)."""
        return self.builder.icmp_unsigned("<", b, ir.Constant(b.type, b.type.width))

    def shift_left(self, a, b):
        """NumPy's left_shift: a count outside [0, width) gives 0 (LLVM's shl would be poison)."""
        in_range = self._shift_in_range(b)
        safe = self.builder.select(in_range, b, ir.Constant(b.type, 0))
        return self.builder.select(in_range, self.builder.shl(a, safe), ir.Constant(a.type, 0))

    def shift_right_logical(self, a, b):
        """Right shift filling with zeros; a count outside [0, width) gives 0."""
        in_range = self._shift_in_range(b)
        safe = self.builder.select(in_range, b, ir.Constant(b.type, 0))
        return self.builder.select(in_range, self.builder.lshr(a, safe), ir.Constant(a.type, 0))

    def shift_right_arithmetic(self, a, b):
        """Right shift filling with the sign bit; a count outside [0, width) shifts by
        width - 1 (0 or -1, as NumPy's right_shift of a signed integer)."""
        width = ir.Constant(b.type, b.type.width - 1)
        count = self.builder.select(self._shift_in_range(b), b, width)
        return self.builder.ashr(a, count)

    def convert(self, x, dtype: DType):
        b, target = self.builder, register_type(dtype)
        if x.type == target:
            return x
        if dtype == DType.bool:
            return self.cmp("!=", x, self.const(0, x))
        if self.is_float(x):
            if dtype.is_float:
                return b.fpext(x, target) if target == F64 else b.fptrunc(x, target)
            return b.fptosi(x, target)
        if x.type == I1:
            return b.uitofp(x, target) if dtype.is_float else b.zext(x, target)
        return b.sitofp(x, target)

    # ----- transcendental
    def math(self, name: str, *args):
        intrinsic, libm, vector_base, arity = MATH_FUNCTIONS[name]
        t = args[0].type
        suffix = "f64" if t == F64 else "f32"
        if intrinsic is not None:
            callee = declare(self.module, f"{intrinsic}.{suffix}", t, [t] * arity)
        else:
            callee = declare(self.module, libm if t == F64 else libm + "f", t, [t] * arity)
        # libm calls may set errno; declaring them readnone lets loops around them vectorize.
        call = self.builder.call(callee, list(args), attrs=() if intrinsic else ("readnone", "nounwind"))
        if vector_base is not None:
            variants = self.vector_math.variants(self.module, callee.name, vector_base, t, arity)
            if variants:
                set_call_string_attribute(call, "vector-function-abi-variant", ",".join(variants))
        return call

    def _intrinsic(self, name, *args):
        t = args[0].type
        callee = declare(self.module, f"{name}.{'f64' if t == F64 else 'f32'}", t, [t] * len(args))
        return self.builder.call(callee, list(args))

    # ----- index arithmetic (Gather/Scatter index maps)
    @staticmethod
    def index_const(n: int):
        return index(n)

    def index_add(self, a, b):
        return self.builder.add(a, b, flags=["nsw"])

    def index_sub(self, a, b):
        return self.builder.sub(a, b, flags=["nsw"])

    def index_mul(self, a, b):
        return self.builder.mul(a, b, flags=["nsw"])

