"""The CPU's `ScalarContext` (jitgrad/backends/kernel.py): the `ctx` that primitives'
`Elementwise` rules and the kernel layer call, emitting LLVM IR.

Rules are target-neutral (`ctx.add(a, b)`, `ctx.math("sin", x)`); this class chooses
the LLVM instructions. Transcendental calls go to LLVM intrinsics or libm and carry the
`vector-function-abi-variant` attribute naming glibc's libmvec vector versions, so the
loop vectorizer replaces them with 8/16-lane calls (LLVM's -vector-library switch is
not reachable from llvmlite, the call-site attribute is); where
libmvec is absent they stay scalar libm calls.
"""
from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

from jitgrad.ir import DType
from .llvm_support import (F32, F64, HALF, I1, I8, I16, I32, I64, PTR, VOID, alloca_in_entry, declare, for_nest,
                           for_range, index, memory_type, register_type, set_call_string_attribute)

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
    "tan": (None, "tan", "tan", 1),
    "asin": (None, "asin", "asin", 1),
    "acos": (None, "acos", "acos", 1),
    "atan": (None, "atan", "atan", 1),
    "asinh": (None, "asinh", "asinh", 1),
    "acosh": (None, "acosh", "acosh", 1),
    "atanh": (None, "atanh", "atanh", 1),
    "atan2": (None, "atan2", "atan2", 2),
    "pow": (None, "pow", "pow", 2),
    "sqrt": ("llvm.sqrt", "sqrt", None, 1),
    "fabs": ("llvm.fabs", "fabs", None, 1),
    "fma": ("llvm.fma", "fma", None, 3),
}

# Called through a wrapper LLVM does not recognize: it would otherwise rewrite
# pow(2.0**n, y) as exp2(n * y), whose rounded product is off by up to |n y| ulp (178 ulp
# for pow(2.0**40, -10.25)); libm's pow and its libmvec variants are within a few ulp.
_NOT_REWRITTEN = frozenset({"pow"})

_FLOAT_PREDICATES = {"==": "==", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class CPUScalarContext:
    """Emits scalar operations into `builder`; `vector_math` describes libmvec's reach.
    Implements `jitgrad.backends.kernel.ScalarContext`."""

    def __init__(self, builder: ir.IRBuilder, module: ir.Module, vector_math):
        self.builder = builder
        self.module = module
        self.vector_math = vector_math
        self.fastmath: tuple[str, ...] = ()
        self.operand_dtype: DType | None = None
        """The dtype of the operands of the rule being emitted (set by the code generator
        around each rule): LLVM integers carry no sign, so unsigned division, comparison,
        max/min and conversion ask it. None reads as signed."""

    def _unsigned(self, x) -> bool:
        return (isinstance(x.type, ir.IntType) and x.type.width > 1 and self.operand_dtype is not None
                and self.operand_dtype.is_unsigned)

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
        """a / b; on integers C's truncating division with x / 0 = 0 and MIN / -1 = MIN
        (where LLVM's sdiv/udiv would be undefined)."""
        b_ = self.builder
        if self.is_float(a):
            return b_.fdiv(a, b)
        divisor, is_zero = self._safe_divisor(a, b)
        if self._unsigned(a):
            return b_.select(is_zero, self.const(0, a), b_.udiv(a, divisor))
        q = b_.select(b_.icmp_signed("==", b, self.const(-1, b)), b_.neg(a), b_.sdiv(a, divisor))
        return b_.select(is_zero, self.const(0, a), q)

    def _safe_divisor(self, a, b):
        """(divisor, is_zero): a divisor with 0 and (signed) -1 replaced by 1 where the
        quotient is patched by the caller: x / 0 gives 0, MIN / -1 gives MIN (= -MIN)."""
        b_ = self.builder
        zero = b_.icmp_unsigned("==", b, self.const(0, b))
        if self._unsigned(a):
            return b_.select(zero, self.const(1, b), b), zero
        minus_one = b_.icmp_signed("==", b, self.const(-1, b))
        # a / -1 = -a (wrapping) and a % -1 = 0: divide by 1 and negate instead.
        divisor = b_.select(b_.or_(zero, minus_one), self.const(1, b), b)
        return divisor, zero

    def floor_divide(self, a, b):
        """NumPy's floor_divide: integers round toward -inf, x // 0 = 0; floats as
        NumPy's npy_floor_divide (floor of (a - fmod(a, b)) / b, nudged to the nearest
        integer, a / b when b is 0)."""
        b_ = self.builder
        if self.is_float(a):
            return self._float_divmod(a, b)[0]
        zero = self.const(0, a)
        if self._unsigned(a):
            divisor, is_zero = self._safe_divisor(a, b)
            return b_.select(is_zero, zero, b_.udiv(a, divisor))
        divisor, is_zero = self._safe_divisor(a, b)
        minus_one = b_.icmp_signed("==", b, self.const(-1, b))
        q = b_.sdiv(a, divisor)
        r = b_.srem(a, divisor)
        adjust = b_.and_(b_.icmp_signed("!=", r, zero),
                         b_.icmp_signed("!=", b_.icmp_signed("<", r, zero), b_.icmp_signed("<", b, zero)))
        q = b_.select(adjust, b_.sub(q, self.const(1, a)), q)
        q = b_.select(minus_one, b_.neg(a), q)
        return b_.select(is_zero, zero, q)

    def remainder(self, a, b):
        """NumPy's remainder: the sign of the divisor; integers x % 0 = 0; floats as
        NumPy's npy_remainder (fmod(a, b) when b is 0, NaN)."""
        b_ = self.builder
        if self.is_float(a):
            return self._float_divmod(a, b)[1]
        zero = self.const(0, a)
        divisor, is_zero = self._safe_divisor(a, b)
        if self._unsigned(a):
            return b_.select(is_zero, zero, b_.urem(a, divisor))
        r = b_.srem(a, divisor)          # divisor -1 became 1: the remainder is 0 either way
        adjust = b_.and_(b_.icmp_signed("!=", r, zero),
                         b_.icmp_signed("!=", b_.icmp_signed("<", r, zero), b_.icmp_signed("<", b, zero)))
        r = b_.select(adjust, b_.add(r, b), r)
        return b_.select(is_zero, zero, r)

    def fmod(self, a, b):
        """C's fmod (the sign of the dividend); integers: x % 0 = 0."""
        if self.is_float(a):
            return self.builder.frem(a, b)
        divisor, is_zero = self._safe_divisor(a, b)
        rem = self.builder.urem if self._unsigned(a) else self.builder.srem
        return self.builder.select(is_zero, self.const(0, a), rem(a, divisor))

    def _float_divmod(self, a, b):
        """(floor_divide, remainder) of floats, step for step as NumPy's npy_divmod."""
        b_ = self.builder
        zero = self.const(0, a)
        mod = b_.frem(a, b)
        b_is_zero = b_.fcmp_ordered("==", b, zero)
        div = b_.fdiv(b_.fsub(a, mod), b)
        fix = b_.and_(b_.fcmp_unordered("!=", mod, zero),
                      b_.icmp_unsigned("!=", b_.fcmp_ordered("<", b, zero), b_.fcmp_ordered("<", mod, zero)))
        mod_fixed = b_.select(fix, b_.fadd(mod, b), mod)
        div = b_.select(fix, b_.fsub(div, self.const(1, a)), div)
        mod_fixed = b_.select(b_.fcmp_ordered("==", mod, zero), self._intrinsic("llvm.copysign", zero, b),
                              mod_fixed)
        floor = self._intrinsic("llvm.floor", div)
        floor = b_.select(b_.fcmp_ordered(">", b_.fsub(div, floor), self.const(0.5, a)),
                          b_.fadd(floor, self.const(1, a)), floor)
        quotient = b_.fdiv(a, b)
        floor = b_.select(b_.fcmp_ordered("==", div, zero), self._intrinsic("llvm.copysign", zero, quotient), floor)
        floordiv = b_.select(b_is_zero, quotient, floor)
        remainder = b_.select(b_is_zero, mod, mod_fixed)
        return floordiv, remainder

    def int_power(self, a, b):
        """a ** b on integers by repeated squaring over b's bits (wrapping, as NumPy); a
        negative exponent gives 0 (NumPy raises). A call to one small looping function per
        type: unrolled over all 64 exponent bits inside a vectorized loop, the squarings of
        a loop-invariant base sent LLVM's optimizer into a search that never ended."""
        return self.builder.call(self._int_power_function(a.type, b.type, self._unsigned(b)), [a, b])

    def _int_power_function(self, base_type, exponent_type, unsigned: bool) -> ir.Function:
        name = f"jitgrad_int_power_{base_type}_{exponent_type}_{'u' if unsigned else 's'}"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.module, ir.FunctionType(base_type, [base_type, exponent_type]), name)
        fn.linkage = "internal"
        for attr in ("noinline", "nounwind", "readnone"):
            fn.attributes.add(attr)
        base, exponent = fn.args
        entry, head, step, done = (fn.append_basic_block(n) for n in ("entry", "head", "step", "done"))
        one, zero = ir.Constant(base_type, 1), ir.Constant(exponent_type, 0)
        b = ir.IRBuilder(entry)
        if unsigned:
            b.branch(head)
        else:
            negative = fn.append_basic_block("negative")
            b.cbranch(b.icmp_signed("<", exponent, zero), negative, head)
            ir.IRBuilder(negative).ret(ir.Constant(base_type, 0))
        b.position_at_end(head)
        acc, power, rest = b.phi(base_type), b.phi(base_type), b.phi(exponent_type)
        acc.add_incoming(one, entry)
        power.add_incoming(base, entry)
        rest.add_incoming(exponent, entry)
        b.cbranch(b.icmp_unsigned("==", rest, zero), done, step)
        b.position_at_end(step)
        odd = b.icmp_unsigned("!=", b.and_(rest, ir.Constant(exponent_type, 1)), zero)
        acc.add_incoming(b.select(odd, b.mul(acc, power), acc), step)
        power.add_incoming(b.mul(power, power), step)
        rest.add_incoming(b.lshr(rest, ir.Constant(exponent_type, 1)), step)
        b.branch(head)
        b.position_at_end(done)
        b.ret(acc)
        return fn

    def cmp(self, op: str, a, b):
        if self.is_float(a):
            if op == "!=":
                return self.builder.fcmp_unordered("!=", a, b)
            return self.builder.fcmp_ordered(_FLOAT_PREDICATES[op], a, b)
        if a.type == I1 or self._unsigned(a):
            return self.builder.icmp_unsigned(op, a, b)
        return self.builder.icmp_signed(op, a, b)

    def select(self, pred, a, b):
        return self.builder.select(pred, a, b)

    def maximum(self, a, b):
        """NumPy's maximum: NaN if either operand is NaN. Between +0 and -0 (equal, so a tie)
        NumPy returns the second operand for float32, float64 and bfloat16 and the first for
        float16 (measured on every size and stride); IEEE's -0 < +0 would differ in the
        sign of a zero, which 1/x and copysign make visible."""
        return self._winner(">", a, b)

    def minimum(self, a, b):
        """NumPy's minimum: as `maximum`, with the smaller operand winning."""
        return self._winner("<", a, b)

    def _winner(self, beats: str, a, b):
        if not self.is_float(a):
            return self.builder.select(self.cmp(beats, a, b), a, b)
        if self.operand_dtype == DType.f16:
            a, b = b, a         # the first operand wins ties: test the second against it
        a_wins = self.builder.or_(self.builder.fcmp_unordered("uno", a, a), self.cmp(beats, a, b))
        return self.builder.select(a_wins, a, b)

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

    def shift_right(self, a, b):
        """NumPy's right_shift: arithmetic on signed, logical on unsigned operands."""
        return self.shift_right_logical(a, b) if self._unsigned(a) else self.shift_right_arithmetic(a, b)

    def shift_right_arithmetic(self, a, b):
        """Right shift filling with the sign bit; a count outside [0, width) shifts by
        width - 1 (0 or -1, as NumPy's right_shift of a signed integer)."""
        width = ir.Constant(b.type, b.type.width - 1)
        count = self.builder.select(self._shift_in_range(b), b, width)
        return self.builder.ashr(a, count)

    def convert(self, x, dtype: DType, source: DType | None = None):
        """x (of dtype `source`, default the rule's operand dtype) as `dtype`, as NumPy's
        astype: integers wrap modulo 2**bits, floats round to nearest even, float ->
        integer truncates toward zero. Out-of-range and NaN floats give what x86's C
        casts give (INT_MIN for 32/64-bit signed results, through int32 for 8/16-bit
        results, through int64 for u32), never LLVM's poison."""
        source = source or self.operand_dtype or _dtype_of_register(x)
        b, target = self.builder, register_type(dtype)
        if dtype == source:
            return x
        if dtype == DType.bool:
            return self.cmp("!=", x, self.const(0, x))
        if dtype.is_float:
            if self.is_float(x):
                return self._float_to_float(x, source, dtype)
            wide = F64 if dtype == DType.f64 else F32
            as_float = b.uitofp(x, wide) if (source == DType.bool or source.is_unsigned) else b.sitofp(x, wide)
            return self.round_to(as_float, dtype)
        if self.is_float(x):
            return self._float_to_int(x, dtype)
        if x.type.width > target.width:
            return b.trunc(x, target)
        if x.type.width == target.width:
            return x
        return b.zext(x, target) if (source == DType.bool or source.is_unsigned) else b.sext(x, target)

    def _float_to_float(self, x, source: DType, dtype: DType):
        b, target = self.builder, register_type(dtype)
        if dtype == DType.f16 and x.type == F64:      # one rounding, as NumPy's double -> half
            return b.fpext(b.fptrunc(x, HALF), F32)
        if x.type != target:
            x = b.fpext(x, target) if target == F64 else b.fptrunc(x, target)
        return self.round_to(x, dtype)

    def _float_to_int(self, x, dtype: DType):
        b = self.builder
        if dtype.bits == 64 and dtype.is_unsigned:
            # x86's sequence: values >= 2**63 convert shifted down, with the top bit set back.
            big = self.const(2.0 ** 63, x)
            high = b.fcmp_ordered(">=", x, big)
            shifted = self._x86_fptosi(b.select(high, b.fsub(x, big), x), I64)
            return b.select(high, b.xor(shifted, ir.Constant(I64, 1 << 63)), shifted)
        if dtype in (DType.i32, DType.i64):
            return self._x86_fptosi(x, register_type(dtype))
        via = I64 if dtype == DType.u32 else ir.IntType(32)
        return b.trunc(self._x86_fptosi(x, via), register_type(dtype))

    def _x86_fptosi(self, x, target: ir.IntType):
        """Truncation toward zero; NaN and values outside the range give INT_MIN."""
        b = self.builder
        limit = 2.0 ** (target.width - 1)
        in_range = b.and_(b.fcmp_ordered(">=", x, self.const(-limit, x)), b.fcmp_ordered("<", x, self.const(limit, x)))
        safe = b.select(in_range, x, self.const(0, x))
        return b.select(in_range, b.fptosi(safe, target), ir.Constant(target, -(1 << (target.width - 1))))

    # ----- narrow floats: f16 and bf16 are computed in float and rounded after each operation
    def round_to(self, x, dtype: DType):
        """x (a float register) rounded to `dtype`'s precision, still in a float register."""
        if dtype == DType.f16:
            return self.builder.fpext(self.builder.fptrunc(x, HALF), F32)
        if dtype == DType.bf16:
            return self._bf16_to_float(self._float_to_bf16(x))
        return x

    def to_memory(self, x, dtype: DType):
        """A register value as stored: bool as a byte, f16 as half, bf16 as its 16 bits."""
        b = self.builder
        if dtype == DType.bool:
            return b.zext(x, I8)
        if dtype == DType.f16:
            return b.fptrunc(x, HALF)
        if dtype == DType.bf16:
            return self._float_to_bf16(x)
        return x

    def from_memory(self, x, dtype: DType):
        b = self.builder
        if dtype == DType.bool:
            return b.trunc(x, I1)
        if dtype == DType.f16:
            return b.fpext(x, F32)
        if dtype == DType.bf16:
            return self._bf16_to_float(x)
        return x

    def _float_to_bf16(self, x):
        """The 16 bits of bf16(x), rounded to nearest even; NaN stays a quiet NaN of
        the same sign (as ml_dtypes)."""
        b = self.builder
        bits = b.bitcast(x, I32)
        lsb = b.and_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
        rounded = b.add(bits, b.add(ir.Constant(I32, 0x7FFF), lsb))
        quiet_nan = b.or_(bits, ir.Constant(I32, 0x00400000))
        chosen = b.select(b.fcmp_unordered("uno", x, x), quiet_nan, rounded)
        return b.trunc(b.lshr(chosen, ir.Constant(I32, 16)), I16)

    def _bf16_to_float(self, bits16):
        b = self.builder
        return b.bitcast(b.shl(b.zext(bits16, I32), ir.Constant(I32, 16)), F32)

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
        if name in _NOT_REWRITTEN:
            callee = self._opaque_wrapper(callee)
        call = self.builder.call(callee, list(args), attrs=() if intrinsic else ("readnone", "nounwind"))
        if vector_base is not None:
            variants = self.vector_math.variants(self.module, callee.name, vector_base, t, arity)
            if variants:
                set_call_string_attribute(call, "vector-function-abi-variant", ",".join(variants))
        return call

    def _opaque_wrapper(self, callee: ir.Function) -> ir.Function:
        """`jitgrad_<name>`, a never-inlined internal function calling `callee` as a
        non-builtin: LLVM's library-call simplifier leaves calls to it alone, while the loop
        vectorizer still maps them to the libmvec variants named on the call site."""
        name = f"jitgrad_{callee.name}"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        callee.attributes.add("nobuiltin")
        wrapper = ir.Function(self.module, callee.function_type, name)
        wrapper.linkage = "internal"
        # kept in llvm.compiler.used (its address taken): otherwise interprocedural passes
        # specialize it to the constant arguments of its calls (x ** -1.0 drops one), and
        # the vector variants named on the call sites no longer match it
        if wrapper not in self.vector_math.used:
            self.vector_math.used.append(wrapper)
        for attr in ("noinline", "nounwind", "readnone"):
            wrapper.attributes.add(attr)
        body = ir.IRBuilder(wrapper.append_basic_block("entry"))
        body.ret(body.call(callee, list(wrapper.args), attrs=("readnone", "nounwind")))
        return wrapper

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

    def index_div(self, a, b):
        return self.builder.udiv(a, b)

    def index_rem(self, a, b):
        return self.builder.urem(a, b)

    def index_bit(self, a, k):
        return self.builder.trunc(self.builder.lshr(a, k), I1)

    def index_cmp(self, op: str, a, b):
        return self.builder.icmp_signed(op, a, b)

    # ----- memory
    def load(self, buffer, offset, dtype: DType):
        b, t = self.builder, memory_type(dtype)
        return self.from_memory(b.load(b.gep(buffer, [offset], inbounds=True, source_etype=t), typ=t), dtype)

    def store(self, buffer, offset, x, dtype: DType) -> None:
        b, t = self.builder, memory_type(dtype)
        b.store(self.to_memory(x, dtype), b.gep(buffer, [offset], inbounds=True, source_etype=t))

    def byte_offset(self, buffer, nbytes: int):
        return self.builder.gep(buffer, [index(nbytes)], inbounds=True, source_etype=I8)

    def copy_bytes(self, dst, src, nbytes: int) -> None:
        memcpy = declare(self.module, "llvm.memcpy.p0.p0.i64", VOID, [PTR, PTR, I64, I1])
        self.builder.call(memcpy, [dst, src, index(nbytes), ir.Constant(I1, 0)])

    def zero_bytes(self, dst, nbytes: int) -> None:
        memset = declare(self.module, "llvm.memset.p0.i64", VOID, [PTR, I8, I64, I1])
        self.builder.call(memset, [dst, ir.Constant(I8, 0), index(nbytes), ir.Constant(I1, 0)])

    def local_array(self, dtype: DType, count: int, name: str):
        """Stack slots at the top of the function's entry block (promoted to registers
        where LLVM can)."""
        return alloca_in_entry(self.builder, memory_type(dtype), name, count=None if count == 1 else count)

    # ----- control flow
    def loop(self, count, name: str):
        return for_range(self.builder, count, name)

    def loop_nest(self, shape, name: str):
        return for_nest(self.builder, shape, name)

    @contextmanager
    def if_then(self, cond):
        with self.builder.if_then(cond):
            yield


def _dtype_of_register(x) -> DType:
    """The dtype a register most plausibly holds when no dtype was given (signed for
    integers; f32 for float registers, which also hold f16 and bf16)."""
    if isinstance(x.type, ir.IntType):
        return DType.bool if x.type.width == 1 else DType(f"i{x.type.width}")
    return DType.f64 if x.type == F64 else DType.f32
