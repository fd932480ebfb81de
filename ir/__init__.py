"""jitgrad's SSA IR: types, values, ops, blocks/regions, builder, printer/parser, verifier."""
from .types import DType, TensorType, parse_type
from .core import Block, Function, Location, OpDef, Operation, Region, Value, UNKNOWN_LOCATION, RETURN, YIELD
from .builder import Builder, current_builder, emit, new_function

__all__ = [
    "DType", "TensorType", "parse_type",
    "Block", "Function", "Location", "OpDef", "Operation", "Region", "Value", "UNKNOWN_LOCATION",
    "RETURN", "YIELD", "Builder", "current_builder", "emit", "new_function",
]

from .printer import print_function, print_module, print_op
from .parser import parse_function, parse_module
from .verifier import verify

__all__ += ["print_function", "print_module", "print_op", "parse_function", "parse_module", "verify"]
