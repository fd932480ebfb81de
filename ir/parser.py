"""Reading the textual IR written by `ir.printer`: `parse_function(print_function(f))`
rebuilds `f` exactly, so pass tests can be written as IR text in, IR text out.

A hand-written recursive-descent parser over a small tokenizer: the grammar is a dozen
productions, and owning it is what lets every error (unknown op, undefined or redefined
value, malformed type or attribute) be an `IRParseError` naming line:column and what
was expected. Result types are read from the text, not re-inferred, so IR that a
verifier should reject still parses and can be verified. Value names are scoped like
MLIR's: a value defined inside a region is not visible after it.
"""
from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from .errors import IRParseError
from .builder import Builder
from .core import Block, Function, Location, OpDef, Region, Value, UNKNOWN_LOCATION
from .types import DType, TensorType

_TOKEN = re.compile(r"""
    (?P<ws>(?:\s|//[^\n]*)+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<hex>0x[0-9A-Fa-f]*)
  | (?P<number>-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<arrow>->)
  | (?P<value>%[A-Za-z0-9_.$]+)
  | (?P<block>\^[A-Za-z0-9_.$]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[-()\[\]{}<>,:=@])
""", re.VERBOSE)


_DTYPES = {d.value: d for d in DType}
_KEYWORDS = {"true": True, "false": False, "none": None, "inf": float("inf"), "nan": float("nan")}


class _Token:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind: str, text: str, pos: int):
        self.kind, self.text, self.pos = kind, text, pos


def parse_function(text: str) -> Function:
    """The one function in `text`."""
    parser = _Parser(text)
    fn = parser.function()
    parser.expect_end()
    return fn


def parse_module(text: str) -> list[Function]:
    """All functions in `text`, in order (the output of `print_module`)."""
    parser = _Parser(text)
    functions = []
    while parser.peek().kind != "end":
        functions.append(parser.function())
    return functions


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = self._tokenize(text)
        self.i = 0
        self.scopes: list[dict[str, Value]] = []
        self.defined: set[str] = set()

    # ----------------------------------------------------------------------- tokens

    def _tokenize(self, text: str) -> list[_Token]:
        tokens, pos = [], 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise self.error_at(pos, f"unexpected character {text[pos]!r}")
            if match.lastgroup != "ws":
                tokens.append(_Token(match.lastgroup, match.group(), pos))
            pos = match.end()
        tokens.append(_Token("end", "", len(text)))
        return tokens

    def error_at(self, pos: int, message: str) -> IRParseError:
        line = self.text.count("\n", 0, pos) + 1
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        source = self.text[start:end if end >= 0 else len(self.text)]
        column = pos - start + 1
        return IRParseError(f"{line}:{column}: {message}\n    {source}\n    {' ' * (column - 1)}^")

    def error(self, message: str, token: _Token | None = None) -> IRParseError:
        token = token or self.peek()
        return self.error_at(token.pos, message)

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token.text == text and token.kind in ("punct", "arrow", "ident")

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    def expect(self, text: str, what: str | None = None) -> _Token:
        if not self.at(text):
            raise self.error(f"expected {what or repr(text)}, got {_describe(self.peek())}")
        return self.advance()

    def expect_kind(self, kind: str, what: str) -> _Token:
        if self.peek().kind != kind:
            raise self.error(f"expected {what}, got {_describe(self.peek())}")
        return self.advance()

    def expect_end(self) -> None:
        if self.peek().kind != "end":
            raise self.error(f"expected end of input, got {_describe(self.peek())}")

    def comma_list(self, item, close: str) -> list:
        """`item (, item)*` up to (and consuming) `close`; empty if `close` comes first."""
        if self.accept(close):
            return []
        items = self.separated(item)
        self.expect(close, f"',' or {close!r}")
        return items

    def separated(self, item) -> list:
        """`item (, item)*`: one or more."""
        items = [item()]
        while self.accept(","):
            items.append(item())
        return items

    # ----------------------------------------------------------------------- structure

    def function(self) -> Function:
        self.expect("func", "'func'")
        self.expect("@", "'@' and a function name")
        name = self.name("a function name")
        self.scopes, self.defined = [{}], set()
        body = Block()
        self.expect("(", "'('")
        self.comma_list(lambda: self.block_arg(body), ")")
        self.expect("->", "'->'")
        header = self.peek()
        self.expect("(", "'(' and the output types")
        output_types = self.comma_list(self.tensor_type, ")")
        self.expect("{", "'{'")
        self.ops(body)
        self.expect("}", "'}'")
        fn = Function(name, body)
        if fn.output_types != output_types:
            raise self.error(f"the header's output types ({', '.join(map(str, output_types))}) differ from "
                             f"the types returned ({', '.join(map(str, fn.output_types))})", header)
        return fn

    def block_arg(self, block: Block) -> Value:
        token = self.expect_kind("value", "a value name such as %0")
        self.expect(":", "':' and a type")
        value = block.add_arg(self.tensor_type())
        self.define(token, value)
        return value

    def ops(self, block: Block) -> None:
        """Ops up to the next block label or '}' (both left for the caller)."""
        builder = Builder(block)
        while not (self.peek().kind == "block" or self.at("}")):
            if self.peek().kind == "end":
                raise self.error("expected an op or '}', got end of input")
            self.op(builder)

    def op(self, builder: Builder) -> None:
        result_tokens = []
        if self.peek().kind == "value":
            result_tokens = self.separated(lambda: self.expect_kind("value", "a value name"))
            self.expect("=", "'='")
        for token in result_tokens:
            self.reserve(token)
        name_token = self.peek()
        name = self.name("an op name")
        opdef = OpDef.registry.get(name)
        if opdef is None:
            raise self.error(f"unknown op {name!r} (ops are looked up in OpDef.registry, which the "
                             "modules defining them fill when imported: import jitgrad.primitives first)",
                             name_token)
        if opdef.is_terminator:
            operands = self.separated(self.use) if self.peek().kind == "value" else []
        else:
            self.expect("(", f"'(' and the operands of {name}")
            operands = self.comma_list(self.use, ")")
        attrs = self.attr_dict() if self.at("{") else {}
        types_token = self.peek()
        if result_tokens and not opdef.is_terminator and not self.at(":"):
            raise self.error(f"expected ':' and the {len(result_tokens)} result type(s) of {name}")
        result_types = self.separated(self.tensor_type) if self.accept(":") else None
        regions = self.regions() if self.at("(") else []
        loc = self.location() if self.at("loc") else UNKNOWN_LOCATION
        result_types = self.result_types(opdef, operands, attrs, result_types, len(result_tokens), types_token)
        builder.loc = loc
        op = builder.create(opdef, operands, attrs, regions, result_types)
        for token, value in zip(result_tokens, op.results, strict=True):
            self.scopes[-1][token.text] = value

    def result_types(self, opdef, operands, attrs, types, count, token) -> list[TensorType]:
        if types is None and count and opdef.is_terminator:
            try:  # terminators print no result types
                types = opdef.infer(*[v.type for v in operands], **attrs)
            except Exception as err:  # noqa: BLE001 - any failure of a rule is a parse error here
                raise self.error(f"cannot infer the result types of {opdef.name}: {err}", token) from None
        types = types or []
        if opdef.num_results is not None and count != opdef.num_results:
            raise self.error(f"{opdef.name} has {opdef.num_results} result(s), {count} value name(s) given", token)
        if len(types) != count:
            raise self.error(f"{opdef.name} defines {count} value(s) but has {len(types)} result type(s)", token)
        return types

    def regions(self) -> list[Region]:
        self.expect("(")
        regions = []
        while True:
            self.expect("{", "'{' starting a region")
            blocks = []
            enclosing = self.scopes[-1]
            self.scopes.append(enclosing)
            while self.peek().kind == "block":
                self.advance()
                block = Block()
                self.scopes[-1] = dict(enclosing)  # each block sees the enclosing values only
                self.expect("(", "'(' and the block arguments")
                self.comma_list(lambda: self.block_arg(block), ")")
                self.expect(":", "':' after the block arguments")
                self.ops(block)
                blocks.append(block)
            self.scopes.pop()
            self.expect("}", "'^bb' or '}'")
            regions.append(Region(blocks))
            if not self.accept(","):
                break
        self.expect(")", "',' or ')' after the regions")
        return regions

    def location(self) -> Location:
        self.expect("loc")
        self.expect("(", "'('")
        file = self.string("a file name string")
        self.expect(":", "':' and a line number")
        line = self.integer("a line number")
        function = ""
        if self.accept("in"):
            function = self.name("a function name")
        self.expect(")", "')'")
        loc = Location(file, line, function)
        return UNKNOWN_LOCATION if loc == UNKNOWN_LOCATION else loc

    # ----------------------------------------------------------------------- values and names

    def reserve(self, token: _Token) -> None:
        if token.text in self.defined:
            raise self.error(f"value {token.text} is defined twice", token)
        self.defined.add(token.text)

    def define(self, token: _Token, value: Value) -> None:
        self.reserve(token)
        self.scopes[-1][token.text] = value

    def use(self) -> Value:
        token = self.expect_kind("value", "a value name such as %0")
        value = self.scopes[-1].get(token.text)
        if value is None:
            raise self.error(f"undefined value {token.text}", token)
        return value

    def name(self, what: str) -> str:
        token = self.peek()
        if token.kind == "ident":
            return self.advance().text
        if token.kind == "string":
            return self.string(what)
        raise self.error(f"expected {what}, got {_describe(token)}")

    def string(self, what: str) -> str:
        token = self.expect_kind("string", what)
        try:
            return json.loads(token.text)
        except ValueError as err:
            raise self.error(f"malformed string: {err}", token) from None

    def integer(self, what: str) -> int:
        token = self.expect_kind("number", what)
        if not re.fullmatch(r"-?\d+", token.text):
            raise self.error(f"expected {what}, got {_describe(token)}", token)
        return int(token.text)

    # ----------------------------------------------------------------------- types and attributes

    def tensor_type(self) -> TensorType:
        token = self.peek()
        if token.kind != "ident" or token.text not in _DTYPES:
            raise self.error(f"expected a type such as f32[2,3], got {_describe(token)}")
        self.advance()
        self.expect("[", "'[' and the shape")
        shape = self.comma_list(lambda: self.integer("a dimension"), "]")
        if any(d < 0 for d in shape):
            raise self.error("negative dimension in a type", token)
        return TensorType(tuple(shape), _DTYPES[token.text])

    def attr_dict(self) -> dict[str, Any]:
        self.expect("{")
        attrs: dict[str, Any] = {}

        def item():
            token = self.peek()
            key = self.name("an attribute name")
            if key in attrs:
                raise self.error(f"attribute {key!r} is given twice", token)
            self.expect("=", "'='")
            attrs[key] = self.attr()

        self.comma_list(item, "}")
        return attrs

    def attr(self) -> Any:
        token = self.peek()
        if token.kind == "number":
            return self.number()
        if token.kind == "string":
            return self.string("a string")
        if self.accept("("):
            items = []
            while not self.accept(")"):
                items.append(self.attr())
                if not self.accept(","):
                    self.expect(")", "',' or ')'")
                    break
            return tuple(items)
        if self.at("-"):
            return self.number()
        if token.kind == "ident" and token.text in _KEYWORDS:
            self.advance()
            return _KEYWORDS[token.text]
        if self.accept("dtype"):
            self.expect("<", "'<'")
            dtype_token = self.expect_kind("ident", "a dtype")
            if dtype_token.text not in _DTYPES:
                raise self.error(f"unknown dtype {dtype_token.text!r}", dtype_token)
            self.expect(">", "'>'")
            return _DTYPES[dtype_token.text]
        if self.accept("type"):
            self.expect("<", "'<'")
            result = self.tensor_type()
            self.expect(">", "'>'")
            return result
        if self.accept("array"):
            return self.array()
        raise self.error(f"expected an attribute value, got {_describe(token)}")

    def number(self) -> int | float:
        """An int, or a float when written with '.', an exponent, inf or nan."""
        negative = self.accept("-")
        token = self.peek()
        if token.kind == "ident" and token.text in ("inf", "nan"):
            self.advance()
            value = float(token.text)
            return -value if negative else value
        if negative or token.kind != "number":
            raise self.error(f"expected a number, got {_describe(token)}")
        self.advance()
        if re.fullmatch(r"-?\d+", token.text):
            return int(token.text)
        return float(token.text)

    def array(self) -> np.ndarray:
        self.expect("<", "'<'")
        array_type = self.tensor_type()
        self.expect(":", "':' and the elements")
        dtype = array_type.dtype.numpy
        token = self.peek()
        if token.kind == "hex":
            self.advance()
            digits = token.text[2:]
            if len(digits) != 2 * array_type.nbytes:
                raise self.error(f"expected {array_type.nbytes} bytes for {array_type}, "
                                 f"got {len(digits) / 2:g}", token)
            raw = np.frombuffer(bytes.fromhex(digits), dtype=dtype.newbyteorder("<"))
            array = raw.astype(dtype).reshape(array_type.shape)
        else:
            flat: list = []
            self.elements(array_type, 0, flat)
            array = np.array(flat, dtype=dtype).reshape(array_type.shape)
        self.expect(">", "'>'")
        array.setflags(write=False)
        return array

    def elements(self, array_type: TensorType, depth: int, flat: list) -> None:
        """Nested lists matching the shape exactly, appending the elements to `flat`."""
        if depth == array_type.ndim:
            flat.append(self.element(array_type.dtype))
            return
        start = self.peek()
        self.expect("[", f"'[' (a list of {array_type.shape[depth]} for axis {depth})")
        count = len(self.comma_list(lambda: self.elements(array_type, depth + 1, flat), "]"))
        if count != array_type.shape[depth]:
            raise self.error(f"axis {depth} of {array_type} has {array_type.shape[depth]} elements, "
                             f"the list has {count}", start)

    def element(self, dtype: DType):
        token = self.peek()
        if dtype is DType.bool:
            if token.text in ("true", "false") and token.kind == "ident":
                self.advance()
                return token.text == "true"
            raise self.error(f"expected true or false, got {_describe(token)}")
        if dtype.is_complex:          # (real, imaginary)
            self.expect("(", "'(' and a complex element's real and imaginary parts")
            real = float(self.number())
            self.expect(",", "',' and the imaginary part")
            imag = float(self.number())
            self.expect(")", "')'")
            return complex(real, imag)
        value = self.number()
        if dtype.is_integer:
            info = np.iinfo(dtype.numpy)
            if not isinstance(value, int) or not info.min <= value <= info.max:
                raise self.error(f"expected a {dtype.bits}-bit integer ({dtype}), got {_describe(token)}", token)
        else:
            value = float(value)
        return value


def _describe(token: _Token) -> str:
    return "end of input" if token.kind == "end" else repr(token.text)
