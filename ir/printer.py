"""The textual form of the IR, MLIR-like, and the exact inverse of `ir.parser`:

    func @loss(%0: f32[256,64], %1: f32[128,256]) -> (f32[]) {
      %2 = dot_general(%1, %0) {batch = ((), ()), contract = ((1,), (0,))} : f32[128,64] loc("model.py":4)
      %3 = checkpoint(%2) : f32[128,64] ({
        ^bb(%4: f32[128,64]):
          %5 = tanh(%4) : f32[128,64] loc("model.py":4)
          yield %5 loc("model.py":4)
      }) loc("model.py":4)
      return %3 loc("model.py":6)
    }

Values carry no names (see `ir.core`); the printer numbers them in definition order,
depth-first, so equal functions print equally and a diff of two printouts is a diff of
the programs. Every attribute value prints in a form that parses back to an equal value
(floats to the bit, arrays included); an attribute of any other Python type is an error
here rather than a silent `repr` that the parser could not read.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .types import DType, TensorType

if TYPE_CHECKING:      # core prints through this module (Function.__str__)
    from .core import Block, Function, Location, Operation, Value

#: Names that print bare; any other function, op, attribute or source-function name
#: is printed as a JSON string, so no name can break the grammar.
BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")

#: Arrays with more elements than this print as the hex of their bytes, not as lists.
MAX_LIST_ELEMENTS = 64


def print_function(fn: Function, digest_arrays_over: int | None = None) -> str:
    """The text of `fn` (no trailing newline).

    With `digest_arrays_over`, array attributes of more bytes than that print their
    bytes' SHA-256 instead of the bytes (`array<f64[1300000]: sha256:...>`): text for
    hashing a program (a 10 MiB constant would be 21 MB of hex), which the parser
    rejects, so it can never be mistaken for the program."""
    names = name_values(fn)
    args = ", ".join(f"{names[a]}: {a.type}" for a in fn.args)
    outputs = ", ".join(str(t) for t in fn.output_types)
    lines = [f"func @{format_name(fn.name)}({args}) -> ({outputs}) {{"]
    for op in fn.body.ops:
        _print_op(op, names, 1, lines, digest_arrays_over)
    lines.append("}")
    return "\n".join(lines)


def print_module(functions) -> str:
    """Several functions, separated by blank lines (read back by `parse_module`)."""
    return "\n\n".join(print_function(fn) for fn in functions)


def print_op(op: Operation, names: dict[Value, str] | None = None) -> str:
    """One op (with its regions) as it appears in its function, without indentation.

    Without `names`, values are named as in the function that holds the op, if it can
    be found through the parent links; otherwise in the op's own order.
    """
    if names is None:
        names = _names_for(op)
    lines: list[str] = []
    _print_op(op, names, 0, lines)
    return "\n".join(lines)


# --------------------------------------------------------------------------- value names

def name_values(fn: Function) -> dict[Value, str]:
    """`%0, %1, ...` for the function's arguments, then for op results and region block
    arguments as they are reached, depth-first in program order."""
    names: dict[Value, str] = {}
    _name_block_args(fn.body, names)
    _name_ops(fn.body.ops, names)
    return names


def _name_block_args(block: Block, names: dict[Value, str]) -> None:
    for arg in block.args:
        names.setdefault(arg, f"%{len(names)}")


def _name_ops(ops: Sequence[Operation], names: dict[Value, str]) -> None:
    for op in ops:
        for result in op.results:
            names.setdefault(result, f"%{len(names)}")
        for region in op.regions:
            for inner in region.blocks:
                _name_block_args(inner, names)
                _name_ops(inner.ops, names)


def _names_for(op: Operation) -> dict[Value, str]:
    """Names for printing one op: those of the outermost block reachable from it."""
    root = op
    while root.parent is not None and root.parent.parent is not None and root.parent.parent.parent is not None:
        root = root.parent.parent.parent
    names: dict[Value, str] = {}
    if root.parent is not None:
        _name_block_args(root.parent, names)
    _name_ops(root.parent.ops if root.parent is not None else [root], names)
    return names


def _value_name(value: Value, names: dict[Value, str]) -> str:
    # A value defined nowhere in the function (invalid IR, printed for a diagnostic)
    # gets a name the parser rejects, so such text can never be read back silently.
    return names.get(value, "%?")


# --------------------------------------------------------------------------- ops

def _print_op(op: Operation, names: dict[Value, str], depth: int, lines: list[str],
              digest_arrays_over: int | None = None) -> None:
    indent = "  " * depth
    head = ""
    if op.results:
        head = ", ".join(_value_name(r, names) for r in op.results) + " = "
    operands = ", ".join(_value_name(v, names) for v in op.operands)
    if op.opdef.is_terminator:
        head += format_name(op.name) + (f" {operands}" if operands else "")
    else:
        head += f"{format_name(op.name)}({operands})"
    if op.attrs:
        head += " " + format_attrs(op.attrs, digest_arrays_over)
    if op.results and not op.opdef.is_terminator:
        head += " : " + ", ".join(str(r.type) for r in op.results)
    tail = " " + format_location(op.loc)
    if not op.regions:
        lines.append(indent + head + tail)
        return
    lines.append(indent + head + " ({")
    for k, region in enumerate(op.regions):
        if k:
            lines.append(indent + "}, {")
        for block in region.blocks:
            args = ", ".join(f"{_value_name(a, names)}: {a.type}" for a in block.args)
            lines.append(f"{indent}  ^bb({args}):")
            for inner in block.ops:
                _print_op(inner, names, depth + 2, lines, digest_arrays_over)
    lines.append(indent + "})" + tail)


def format_location(loc: Location) -> str:
    """`loc("model.py":4)`, or `loc("model.py":4 in loss)` when the function is known."""
    where = f"{json.dumps(loc.file)}:{int(loc.line)}"
    if loc.function:
        where += f" in {format_name(loc.function)}"
    return f"loc({where})"


def format_name(name: str) -> str:
    """A name bare when it is identifier-like, else as a JSON string."""
    return name if BARE_NAME.match(name) else json.dumps(name)


# --------------------------------------------------------------------------- attributes

def format_attrs(attrs: dict, digest_arrays_over: int | None = None) -> str:
    """`{key = value, ...}` sorted by key (so the text does not depend on build order)."""
    items = ", ".join(f"{format_name(k)} = {format_attr(attrs[k], digest_arrays_over)}" for k in sorted(attrs))
    return "{" + items + "}"


def format_attr(value, digest_arrays_over: int | None = None) -> str:
    """One attribute value; raises `TypeError` for a type the parser could not rebuild."""
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _format_f64(float(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (tuple, list)):
        items = [format_attr(v, digest_arrays_over) for v in value]
        return "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if isinstance(value, DType):
        return f"dtype<{value}>"
    if isinstance(value, TensorType):
        return f"type<{value}>"
    if isinstance(value, np.ndarray):
        return format_array(value, digest_arrays_over)
    raise TypeError(f"attribute value {value!r} of type {type(value).__name__} has no textual form")


def format_array(array: np.ndarray, digest_arrays_over: int | None = None) -> str:
    """`array<f32[2]: [1.0, 2.0]>` for small arrays, `array<f32[100]: 0x...>` (raw
    little-endian C-order bytes) for large ones, where lists would swamp the text;
    `array<f32[100]: sha256:...>` (those bytes' digest) above `digest_arrays_over` bytes."""
    try:
        dtype = DType.from_numpy(array.dtype)
    except KeyError:
        raise TypeError(f"array attribute of unsupported dtype {array.dtype}") from None
    array = np.asarray(array, dtype=dtype.numpy)
    header = f"array<{TensorType(array.shape, dtype)}: "
    if array.size > MAX_LIST_ELEMENTS:
        raw = np.ascontiguousarray(array, dtype=dtype.numpy.newbyteorder("<"))
        if digest_arrays_over is not None and raw.nbytes > digest_arrays_over:
            return header + "sha256:" + hashlib.sha256(raw.reshape(-1).view(np.uint8)).hexdigest() + ">"
        return header + "0x" + raw.tobytes().hex() + ">"
    element = _ELEMENT_FORMATS[dtype]
    return header + _nested(array, element) + ">"


def _nested(array: np.ndarray, element) -> str:
    if array.ndim == 0:
        return element(array[()])
    return "[" + ", ".join(_nested(sub, element) for sub in array) + "]"


def _format_f64(x: float) -> str:
    # repr is the shortest text that reads back to the same double; it spells the
    # special values inf, -inf, nan and keeps the sign of -0.0.
    return repr(x)


def _format_f32(x) -> str:
    # The shortest text that reads back to the same float32 (NumPy's Dragon4), checked,
    # with the exact double's repr as the fallback: parsing a decimal to a double and
    # rounding that to float32 is exact for either (53 >= 2 * 24 + 2 bits).
    x = np.float32(x)
    if math.isnan(x) or math.isinf(x) or x == 0:
        return _format_f64(float(x))
    text = np.format_float_positional(x, unique=True, trim="0") if 1e-4 <= abs(x) < 1e16 \
        else np.format_float_scientific(x, unique=True, trim="0")
    if not _looks_float(text) or np.float32(float(text)) != x:
        return _format_f64(float(x))
    return text


def _looks_float(text: str) -> bool:
    return any(c in text for c in ".eE") and "inf" not in text and "nan" not in text


_ELEMENT_FORMATS = {
    DType.f32: _format_f32,
    DType.f64: lambda x: _format_f64(float(x)),
    DType.f16: lambda x: _format_f64(float(x)),     # the exact double: reads back exactly
    DType.bf16: lambda x: _format_f64(float(x)),
    DType.bool: lambda x: "true" if x else "false",
    **{d: (lambda x: str(int(x))) for d in DType if d.is_integer},
}
# A complex element is the pair of its parts, each written as its real dtype writes it.
_ELEMENT_FORMATS.update({
    d: (lambda part: lambda x: f"({part(x.real)}, {part(x.imag)})")(_ELEMENT_FORMATS[d.real_dtype])
    for d in DType if d.is_complex})
