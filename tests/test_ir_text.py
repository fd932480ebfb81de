"""The IR's text form and verifier: print -> parse -> print is the identity, attribute
values (arrays to the bit) survive it, and both the parser and the verifier reject
broken IR with errors that say where and what."""
from __future__ import annotations

import math

import numpy as np
import pytest

from jitgrad.errors import IRParseError, VerificationError
from jitgrad.ir import (Block, Builder, DType, Location, OpDef, Region, TensorType, YIELD,
                        new_function)
from jitgrad.ir.parser import parse_function, parse_module
from jitgrad.ir.printer import print_function, print_module, print_op
from jitgrad.ir.verifier import verify
from jitgrad.primitives import (add, broadcast_in_dim, concatenate, constant, dot_general, reduce_sum,
                                static_slice, tanh)

F32, F64 = DType.f32, DType.f64


def _define(name, infer, **kwargs):
    """Test-only ops, registered once even if the module is imported twice."""
    return OpDef.registry.get(name) or OpDef(name, infer, **kwargs)


REGION_OP = _define("test.region_op", lambda *types, **attrs: list(types), num_regions=1)
TWO_RESULTS = _define("test.two_results", lambda x, **attrs: [x.with_shape((1,)), x.with_shape((2,))])
ATTRS_OP = _define("test.attrs", lambda **attrs: [])


def _verify_region_op(op):
    """The region's yielded types must be the op's result types."""
    yielded = [v.type for v in op.regions[0].blocks[-1].ops[-1].operands]
    if yielded != [r.type for r in op.results]:
        raise VerificationError(f"region yields {yielded}, op returns {[r.type for r in op.results]}")


REGION_OP.verify_op = _verify_region_op


def roundtrip(fn):
    """Print, parse, verify and print again; the two texts must be equal."""
    text = print_function(fn)
    parsed = parse_function(text)
    verify(parsed)
    assert print_function(parsed) == text
    return parsed


def region(arg_types, body):
    """A one-block region whose block has `arg_types`; `body(*args)` returns the yielded values."""
    block = Block()
    args = [block.add_arg(t) for t in arg_types]
    builder = Builder(block)
    with builder:
        outputs = body(*args)
    builder.create(YIELD, outputs)
    return Region([block])


# --------------------------------------------------------------------------- round trips

def test_mlp_round_trip():
    fn, b = new_function("mlp", [TensorType((8, 4), F32), TensorType((4, 3), F32), TensorType((3,), F32)])
    x, w, bias = fn.args
    with b, b.at(Location("model.py", 12, "mlp")):
        h = dot_general(x, w, ((1,), (0,)))
        h = tanh(add(h, broadcast_in_dim(bias, (8, 3), (1,))))
        top = static_slice(h, (0, 0), (4, 3))
        both = concatenate([top, static_slice(h, (4, 0), (8, 3), (1, 1))], 0)
        total = add(reduce_sum(both, (0, 1)), constant(2.0, F32))
    b.ret([total, h])
    verify(fn)
    parsed = roundtrip(fn)
    assert parsed.name == "mlp" and parsed.input_types == fn.input_types
    assert parsed.output_types == [TensorType((), F32), TensorType((8, 3), F32)]
    ops = parsed.walk()
    assert ops[0].attrs == {"contract": ((1,), (0,)), "batch": ((), ())}
    assert ops[0].loc == Location("model.py", 12, "mlp")
    assert "loc(\"model.py\":12 in mlp)" in print_function(fn)


EXAMPLE = '''\
func @loss(%0: f32[256,64], %1: f32[128,256]) -> (f64[]) {
  %2 = dot_general(%1, %0) {batch = ((), ()), contract = ((1,), (0,))} : f32[128,64] loc("model.py":4)
  %3 = constant() {value = array<f64[]: 2.0>} : f64[] loc("model.py":5)
  %4, %5 = test.two_results(%2) : f32[1], f32[2] loc("<unknown>":0)
  %6 = test.region_op(%2) : f32[128,64] ({
    ^bb(%7: f32[128,64]):
      %8 = tanh(%7) : f32[128,64] loc("model.py":4)
      %9 = test.region_op(%8) : f32[128,64] ({
        ^bb(%10: f32[128,64]):
          %11 = add(%10, %2) : f32[128,64] loc("model.py":4 in "f.<locals>.g")
          yield %11 loc("model.py":4)
      }) loc("model.py":4)
      yield %9 loc("model.py":4)
  }) loc("model.py":4)
  %12 = tanh(%6) : f32[128,64] loc("model.py":5)
  return %3 loc("model.py":6)
}'''


def test_documented_format_is_read_and_reprinted_exactly():
    fn = parse_function(EXAMPLE)
    verify(fn)
    assert print_function(fn) == EXAMPLE
    assert str(fn) == EXAMPLE
    checkpoint = fn.body.ops[3]
    assert checkpoint.regions[0].parent is checkpoint
    inner_add = checkpoint.regions[0].block.ops[1].regions[0].block.ops[0]
    assert inner_add.operands[1] is fn.body.ops[0].result   # an enclosing value, seen from a region
    assert inner_add.loc.function == "f.<locals>.g"


def test_region_op_built_in_python_round_trips():
    fn, b = new_function("remat", [TensorType((3,), F64)])
    with b:
        outer = tanh(fn.args[0])
        op = b.create(REGION_OP, [outer], regions=[region([outer.type], lambda v: [add(tanh(v), outer)])])
    b.ret(op.results)
    verify(fn)
    roundtrip(fn)
    assert print_op(op).startswith("%2 = test.region_op(%1) : f64[3] ({")


def test_quoted_names_and_strings_round_trip():
    fn, b = new_function("grad(loss)", [TensorType((), F64)], loc=Location('dir/we"ird\n.py', 7, "<lambda>"))
    with b:
        y = tanh(fn.args[0])
    b.ret([y])
    parsed = roundtrip(fn)
    assert parsed.name == "grad(loss)"
    assert parsed.body.ops[0].loc == Location('dir/we"ird\n.py', 7, "<lambda>")


def test_module_round_trip():
    functions = [parse_function(EXAMPLE), parse_function(EXAMPLE.replace("@loss", "@other"))]
    text = print_module(functions)
    assert print_module(parse_module(text)) == text


ARRAYS = {
    "f32 small": np.array([[1.0, -0.0], [0.1, 3.4028235e38]], np.float32),
    "f32 specials": np.array([np.inf, -np.inf, np.nan, 1e-45, -2.5e-7, 16777217.0], np.float32),
    "f64 specials": np.array([0.1, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1e300, 1 / 3]),
    "f64 scalar": np.array(2.0),
    "i64": np.array([[0, -1, 2**63 - 1, -2**63]], np.int64),
    "bool": np.array([[True, False], [False, True]]),
    "empty": np.zeros((2, 0, 3), np.float32),
    "f32 large": np.random.default_rng(0).standard_normal((128, 3)).astype(np.float32),
    "f64 large": np.concatenate([np.random.default_rng(1).standard_normal(100), [-0.0, np.inf, np.nan]]),
    "i64 large": np.arange(-50, 50, dtype=np.int64).reshape(10, 10),
    "bool large": np.random.default_rng(2).random(65) > 0.5,
    "int32 widened": np.array([1, 2], np.int32),
}


@pytest.mark.parametrize("array", ARRAYS.values(), ids=ARRAYS.keys())
def test_array_attributes_round_trip_bit_exactly(array):
    fn, b = new_function("const", [])
    with b:
        value = constant(array)
    b.ret([value])
    parsed = roundtrip(fn)
    back = parsed.body.ops[0].attrs["value"]
    assert back.dtype == DType.from_numpy(array.dtype).numpy and back.shape == array.shape
    assert not back.flags.writeable
    if back.dtype.kind == "f":
        nan = np.isnan(array)
        assert np.array_equal(np.isnan(back), nan)
        assert np.array_equal(np.signbit(back[~nan]), np.signbit(array[~nan]))
        assert np.array_equal(back[~nan], array[~nan])
    else:
        assert np.array_equal(back, array)


def test_small_and_large_arrays_print_as_lists_and_hex():
    small = print_function(_const_fn(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)))
    assert "array<f32[2,2]: [[1.0, 2.0], [3.0, 4.0]]>" in small
    large = print_function(_const_fn(np.ones((128, 256), np.float32)))
    assert "array<f32[128,256]: 0x0000803f0000803f" in large
    assert "array<bool[2]: [true, false]>" in print_function(_const_fn(np.array([True, False])))


def _const_fn(array):
    fn, b = new_function("c", [])
    with b:
        value = constant(array)
    b.ret([value])
    return fn


def _same(a, b):
    if isinstance(a, float):
        return isinstance(b, float) and (math.isnan(a) and math.isnan(b) or
                                         a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (tuple, list)):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def test_scalar_attribute_values_round_trip_with_their_types():
    attrs = {
        "int": 3, "negative": -12, "big": 2**70, "float": 0.1, "whole_float": 2.0, "neg_zero": -0.0,
        "inf": math.inf, "neg_inf": -math.inf, "nan": math.nan, "tiny": 5e-324, "huge": 1e300,
        "yes": True, "no": False, "none": None, "text": 'a "quoted"\n\\ string, ünïcode {x} = (1,)',
        "empty": (), "one": (1,), "nested": ((1, 2.5), ("s", (True,)), ()), "list": [1, 2],
        "dtype": DType.bool, "type": TensorType((2, 3), F32), "scalar_type": TensorType((), DType.i64),
        "needs-quoting": 1, "numpy_int": np.int64(7), "numpy_float": np.float32(0.5),
    }
    fn, b = new_function("attrs", [])
    b.create(ATTRS_OP, [], attrs)
    b.ret([])
    text = print_function(fn)
    assert '{big = 1180591620717411303424, dtype = dtype<bool>, empty = (), float = 0.1, ' in text
    assert '"needs-quoting" = 1' in text and "one = (1,)" in text and "type = type<f32[2,3]>" in text
    parsed = roundtrip(fn).body.ops[0].attrs
    expected = dict(attrs, list=(1, 2), numpy_int=7, numpy_float=0.5)
    assert parsed.keys() == expected.keys()
    for key, value in expected.items():
        assert _same(value, parsed[key]), key


def test_unprintable_attribute_is_a_type_error():
    fn, b = new_function("bad", [])
    b.create(ATTRS_OP, [], {"x": object()})
    b.ret([])
    with pytest.raises(TypeError, match="no textual form"):
        print_function(fn)


# --------------------------------------------------------------------------- parse errors

def _header(body: str, args: str = "%0: f32[2]", outputs: str = "f32[2]") -> str:
    return f"func @f({args}) -> ({outputs}) {{\n{body}\n}}"


PARSE_ERRORS = {
    "unknown op": (_header("  %1 = frobnicate(%0) : f32[2]\n  return %1"), "2:8", "unknown op 'frobnicate'"),
    "undefined value": (_header("  %1 = tanh(%9) : f32[2]\n  return %1"), "2:13", "undefined value %9"),
    "use before definition": (_header("  %1 = tanh(%2) : f32[2]\n  %2 = tanh(%0) : f32[2]\n  return %1"),
                              "2:13", "undefined value %2"),
    "redefinition": (_header("  %0 = tanh(%0) : f32[2]\n  return %0"), "2:3", "%0 is defined twice"),
    "bad dtype": (_header("  %1 = tanh(%0) : f33[2]\n  return %1"), "2:19", "expected a type"),
    "bad shape": (_header("  %1 = tanh(%0) : f32[2,]\n  return %1"), "2:25", "expected a dimension"),
    "negative dim": (_header("  %1 = tanh(%0) : f32[-2]\n  return %1"), "2:19", "negative dimension"),
    "bad arg type": (_header("  return %0", args="%0: f32"), "1:16", "'[' and the shape"),
    "missing type": (_header("  %1 = tanh(%0) loc(\"a\":1)\n  return %1"), "2:17",
                     "expected ':' and the 1 result type(s) of tanh"),
    "too many types": (_header("  %1 = tanh(%0) : f32[2], f32[2]\n  return %1"), "2:17",
                       "tanh defines 1 value(s) but has 2 result type(s)"),
    "region value out of scope": (_header(
        "  %1 = test.region_op(%0) : f32[2] ({\n    ^bb(%2: f32[2]):\n      yield %2\n  })\n  return %2"),
        "6:10", "undefined value %2"),
    "header mismatch": (_header("  return %0", outputs="f64[2]"), "1:24", "output types (f64[2]) differ"),
    "bad character": (_header("  %1 = tanh(%0) : f32[2] # comment\n  return %1"), "2:26", "unexpected character"),
    "bad attribute": (_header("  %1 = tanh(%0) {k = @} : f32[2]\n  return %1"), "2:22", "attribute value"),
    "short list": (_header("  %1 = constant() {value = array<f32[3]: [1.0, 2.0]>} : f32[3]\n  return %1",
                           outputs="f32[3]"), "2:42", "has 3 elements, the list has 2"),
    "bad hex": (_header("  %1 = constant() {value = array<f32[1]: 0x0000>} : f32[1]\n  return %1",
                        outputs="f32[1]"), "2:42", "expected 4 bytes"),
    "int element": (_header("  %1 = constant() {value = array<i64[1]: [1.5]>} : i64[1]\n  return %1",
                            outputs="i64[1]"), "2:43", "64-bit integer"),
    "unterminated": (_header("  %1 = tanh(%0) : f32[2]")[:-2], "2:25", "expected an op or '}'"),
    "trailing text": (_header("  return %0") + " extra", "3:3", "expected end of input"),
}


@pytest.mark.parametrize("text, position, message", PARSE_ERRORS.values(), ids=PARSE_ERRORS.keys())
def test_parse_errors_say_where_and_what(text, position, message):
    with pytest.raises(IRParseError) as info:
        parse_function(text)
    assert str(info.value).startswith(position + ":"), str(info.value)
    assert message in str(info.value)


def test_every_prefix_and_mutation_fails_only_with_parse_errors():
    """No malformed text escapes as another exception type."""
    texts = [EXAMPLE[:n] for n in range(len(EXAMPLE))]
    texts += [EXAMPLE[:n] + EXAMPLE[n + 1:] for n in range(0, len(EXAMPLE), 3)]
    texts += [EXAMPLE[:n] + "%" + EXAMPLE[n:] for n in range(0, len(EXAMPLE), 7)]
    for text in texts:
        try:
            parse_function(text)
        except IRParseError:
            pass


# --------------------------------------------------------------------------- verifier

def _checked(fn, *fragments):
    with pytest.raises(VerificationError) as info:
        verify(fn)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def _chain():
    """f(x) = tanh(tanh(x)), with locations on the two ops."""
    fn, b = new_function("chain", [TensorType((2,), F32)])
    with b:
        with b.at(Location("m.py", 1)):
            y = tanh(fn.args[0])
        with b.at(Location("m.py", 2)):
            z = tanh(y)
    b.ret([z])
    return fn


def test_verifier_accepts_valid_ir():
    verify(_chain())
    verify(parse_function(EXAMPLE))


def test_verifier_catches_use_before_definition():
    fn = _chain()
    fn.body.ops[0], fn.body.ops[1] = fn.body.ops[1], fn.body.ops[0]
    _checked(fn, 'tanh at loc("m.py":2)', "operand 0 (%2) is used before it is defined")


def test_verifier_catches_wrong_result_type():
    fn = _chain()
    fn.body.ops[1].results[0].type = TensorType((3,), F32)
    _checked(fn, 'tanh at loc("m.py":2)', "result types (f32[3]) differ from the inferred (f32[2])")
    text = _header("  %1 = tanh(%0) : f64[2] loc(\"m.py\":3)\n  return %1", outputs="f64[2]")
    _checked(parse_function(text), 'loc("m.py":3)', "(f64[2]) differ")


def test_verifier_reports_type_rule_errors():
    text = _header("  %1 = add(%0, %2) : f32[2]\n  return %1", args="%0: f32[2], %2: f32[3]")
    _checked(parse_function(text), "add at", "invalid operands or attributes")
    text = _header("  %1 = reduce_sum(%0) : f32[]\n  return %1", outputs="f32[]")
    _checked(parse_function(text), "reduce_sum at", "type rule failed")


def test_verifier_catches_missing_and_misplaced_terminators():
    fn = _chain()
    fn.body.ops.pop()
    _checked(fn, "does not end with a terminator (return)")
    fn = _chain()
    fn.body.ops.insert(1, fn.body.ops.pop())
    _checked(fn, 'return at loc("<unknown>":0)', "terminator in the middle of a block")
    fn = _chain()
    fn.body.ops.insert(1, fn.body.ops[-1])
    _checked(fn, 'return at loc("<unknown>":0)', "terminator in the middle of a block")
    fn = _chain()
    fn.body.ops[-1].opdef = YIELD
    _checked(fn, "block ends with yield, expected return")


def test_verifier_checks_regions():
    fn = parse_function(EXAMPLE)
    fn.body.ops[3].regions[0].block.ops.pop()
    _checked(fn, "a region block does not end with a terminator (yield)")
    fn = parse_function(EXAMPLE)
    fn.body.ops[3].regions.clear()
    _checked(fn, "test.region_op at", "has 0 region(s), its definition says 1")
    fn = parse_function(EXAMPLE)
    fn.body.ops[3].results[0].type = TensorType((1,), F32)
    _checked(fn, "test.region_op at", "region yields")
    # a value of the region used after it
    text = _header("  %1 = test.region_op(%0) : f32[2] ({\n    ^bb(%2: f32[2]):\n      yield %2\n  })\n"
                   "  return %1")
    fn = parse_function(text)
    fn.body.ops[-1].operands[0] = fn.body.ops[0].regions[0].block.args[0]
    _checked(fn, "return at", "operand 0 (%2)", "not visible")


def test_verifier_checks_links_and_single_definition():
    fn = _chain()
    fn.body.ops[0].parent = None
    _checked(fn, "op.parent is not the block")
    fn = _chain()
    fn.body.ops[1].results[0] = fn.body.ops[0].results[0]
    _checked(fn, "does not point back to its op")
    fn = _chain()
    fn.body.ops.insert(1, fn.body.ops[0])   # the same op appended twice
    _checked(fn, 'tanh at loc("m.py":1)', "value %1 is defined twice")


def test_inlining_a_block_checks_its_operands_against_the_arguments():
    """A block inlined with operands of other types (or another count) would give IR
    whose ops no longer type-check; inline_block refuses it where it happens."""
    from jitgrad.ir.clone import inline_block
    f64x3, f32x3 = TensorType((3,), DType.f64), TensorType((3,), DType.f32)
    callee, builder = new_function("callee", [f64x3])
    with builder:
        builder.ret([add(callee.args[0], callee.args[0])])
    caller, builder = new_function("caller", [f64x3, f32x3])
    with builder:
        assert [v.type for v in inline_block(callee.body, [caller.args[0]])] == [f64x3]
        with pytest.raises(VerificationError, match="operand 0 is f32\\[3\\], its argument f64\\[3\\]"):
            inline_block(callee.body, [caller.args[1]])
        with pytest.raises(VerificationError, match="1 arguments with 2 operands"):
            inline_block(callee.body, list(caller.args))
