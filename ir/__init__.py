"""jitgrad's SSA IR: types, values, ops, blocks/regions, builder, cloning, printer/parser, verifier.

The package imports nothing else of jitgrad: passes, primitives and backends build on it."""
from .types import DType, TensorType, is_float_dtype, parse_type
from .core import (Block, Function, Location, OpDef, Operation, Region, Trait, Value, UNKNOWN_LOCATION, RETURN,
                   RULE_SLOTS, YIELD)
from .builder import Builder, current_builder, emit, new_function

__all__ = [
    "DType", "TensorType", "is_float_dtype", "parse_type",
    "Block", "Function", "Location", "OpDef", "Operation", "Region", "Trait", "Value",
    "UNKNOWN_LOCATION", "RETURN", "RULE_SLOTS", "YIELD", "Builder", "current_builder", "emit", "new_function",
]

from .printer import print_function, print_module, print_op
from .parser import parse_function, parse_module
from .verifier import verify

__all__ += ["print_function", "print_module", "print_op", "parse_function", "parse_module", "verify"]

from .clone import body_function, clone_op, clone_region, function_region, inline_block
from .errors import (GradientError, IRParseError, JitgradError, MissingDerivativeRuleError, MissingRuleError,
                     VerificationError)

__all__ += ["body_function", "clone_op", "clone_region", "function_region", "inline_block",
            "GradientError", "IRParseError", "JitgradError", "MissingDerivativeRuleError", "MissingRuleError",
            "VerificationError"]
