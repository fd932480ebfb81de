"""What a user sees when something goes wrong, through the public API.

One test per kind of mistake: the exception class, the key words of its message and,
for errors raised while tracing, the user's file:line. Expected lines are found from
`# LINE: name` marker comments, so the tests survive edits that move code around.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from llvmlite import ir

import jitgrad
import jitgrad.config
from jitgrad import grad, jit, vjp
from jitgrad.backends.cpu import engine
from jitgrad.errors import (ArgumentError, CompilationError, GradientError, IndexingError, JitgradError,
                            ShapeError, TracerBoolConversionError, UnsupportedOperationError)

THIS_FILE = os.path.basename(__file__)
A = np.ones((3, 4))
V3, V4 = np.arange(3.0), np.arange(4.0)


def line_of(marker: str) -> str:
    """'test_errors.py:N' for the line that carries the comment `# LINE: marker`."""
    with open(__file__) as f:
        hits = [n for n, text in enumerate(f, 1) if text.rstrip().endswith(f"# LINE: {marker}")]
    assert len(hits) == 1, f"marker {marker!r} found {len(hits)} times"
    return f"{THIS_FILE}:{hits[0]}"


def raises(cls, thunk):
    """Run `thunk`, assert it raises a `cls` (and so a JitgradError); return the message."""
    with pytest.raises(cls) as info:
        thunk()
    assert isinstance(info.value, JitgradError)
    return str(info.value)


# --------------------------------------------------------------------------- NumPy functions without rules

def uses_unwrap(x):
    return np.unwrap(x) * 2.0  # LINE: unwrap


def uses_trim_zeros(x):
    return np.trim_zeros(x)  # LINE: trim


def uses_sort(x):
    y = np.sin(x)
    return np.sort_complex(y)  # LINE: sort


def uses_nextafter(x):
    return np.nextafter(x, 1.0)  # LINE: nextafter


@pytest.mark.parametrize("fn, name, marker", [
    (uses_unwrap, "unwrap", "unwrap"), (uses_trim_zeros, "trim_zeros", "trim"), (uses_sort, "sort_complex", "sort"),
    (uses_nextafter, "nextafter", "nextafter"),
], ids=["unwrap", "trim_zeros", "sort", "nextafter-ufunc"])
@pytest.mark.parametrize("transform", [jit, grad], ids=["jit", "grad"])
def test_unsupported_numpy_function(fn, name, marker, transform):
    f = transform(fn if transform is jit else (lambda x: np.sum(fn(x))))
    message = raises(UnsupportedOperationError, lambda: f(V4))
    assert name in message and "no jitgrad rule" in message, message
    assert line_of(marker) in message, message


def uses_scimath(x):
    return np.emath.sqrt(x)  # LINE: scimath


def test_unsupported_function_is_named_with_its_submodule():
    message = raises(UnsupportedOperationError, lambda: jit(uses_scimath)(np.eye(3)))
    assert "numpy.lib.scimath.sqrt" in message and line_of("scimath") in message, message


def uses_byteswap_method(x):
    return x.byteswap()  # LINE: byteswap-method


def test_unsupported_array_method():
    message = raises(UnsupportedOperationError, lambda: jit(uses_byteswap_method)(V4))
    assert "byteswap" in message and line_of("byteswap-method") in message, message


def test_operator_without_a_numpy_loop():
    def f(x):
        return ~x  # LINE: invert-float
    message = raises(jitgrad.DTypeError, lambda: jit(f)(V4))
    assert "invert" in message and line_of("invert-float") in message, message


def test_traced_array_to_python_values():
    # np.asarray of a traced array stays traced; Python values need the concrete data.
    def f(x):
        return sum(x.tolist())  # LINE: tolist
    message = raises(TracerBoolConversionError, lambda: jit(f)(V4))
    assert ".tolist()" in message and line_of("tolist") in message, message
    np.testing.assert_array_equal(jit(lambda x: np.asarray(x) * 2.0)(V4), V4 * 2.0)


# --------------------------------------------------------------------------- shapes

def add_mismatched(x, y):
    z = np.exp(x)
    return z + y  # LINE: broadcast


def matmul_mismatched(x, y):
    return np.tanh(x @ y)  # LINE: matmul


def test_shapes_that_do_not_broadcast():
    message = raises(ShapeError, lambda: jit(add_mismatched)(A, V3))
    assert "could not be broadcast" in message and "(3, 4)" in message and "(3,)" in message, message
    assert line_of("broadcast") in message, message


def test_shapes_that_do_not_multiply():
    message = raises(ShapeError, lambda: jit(matmul_mismatched)(A, A))
    assert "don't multiply" in message and "size 4" in message, message
    assert line_of("matmul") in message, message


def test_shape_error_inside_grad_names_the_line():
    message = raises(ShapeError, lambda: grad(lambda x: np.sum(add_mismatched(x, V3)))(A))
    assert line_of("broadcast") in message, message


def test_shape_errors_are_value_errors():
    with pytest.raises(ValueError):
        jit(add_mismatched)(A, V3)


# --------------------------------------------------------------------------- Python control flow

def branches_on_traced(x):
    y = x * 2.0
    if y > 0:  # LINE: if
        return y
    return -y


def while_on_traced(x):
    while x < 10.0:  # LINE: while
        x = x * 2.0
    return x


def test_if_on_a_traced_vector():
    message = raises(TracerBoolConversionError, lambda: jit(branches_on_traced)(V4))
    assert "np.where" in message and "static_argnums" in message, message
    assert line_of("if") in message, message


@pytest.mark.parametrize("arg", [1.5, -1.5, np.float64(1.5)], ids=["python-float", "negative", "0d"])
def test_if_on_a_traced_scalar_becomes_a_cond(arg):
    # a function's `if` on a traced scalar is converted to jitgrad.cond (docs/autograph.md)
    assert jit(branches_on_traced)(arg) == branches_on_traced(arg)


def test_while_on_a_traced_value_inside_grad():
    message = raises(TracerBoolConversionError, lambda: grad(lambda x: np.sum(while_on_traced(x)))(V4))
    assert "np.where" in message, message
    assert line_of("while") in message, message


def test_float_of_a_traced_value():
    def f(x):
        return x * float(x[0])  # LINE: float
    message = raises(TracerBoolConversionError, lambda: jit(f)(V4))
    assert "float()" in message and line_of("float") in message, message


# --------------------------------------------------------------------------- gradients

def test_grad_of_a_non_scalar_output():
    message = raises(GradientError, lambda: grad(lambda x: np.sin(x))(A))
    assert "scalar" in message and "f64[3,4]" in message and "vjp" in message, message


def test_grad_of_an_integer_output():
    message = raises(GradientError, lambda: grad(lambda x: np.sum(x > 0))(V4))
    assert "floating-point output" in message, message


@pytest.mark.parametrize("arg, type_text", [(3, "i64[]"), (np.arange(3), "i64[3]"),
                                            (np.array([True, False, True]), "bool[3]")],
                         ids=["python-int", "int-array", "bool-array"])
def test_grad_with_respect_to_a_non_float_argument(arg, type_text):
    message = raises(GradientError, lambda: grad(lambda x, n: np.sum(x * n), argnums=1)(V3, arg))
    assert type_text in message and "floating-point" in message and "argnums=1" in message, message


def test_has_aux_needs_a_pair():
    message = raises(GradientError, lambda: grad(lambda x: np.sum(x), has_aux=True)(V4))
    assert "has_aux" in message and "pair" in message, message


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("args", [(A,), (A, A, A)], ids=["too-few", "too-many"])
def test_wrong_number_of_arguments(args):
    message = raises(ArgumentError, lambda: jit(lambda x, y: x + y)(*args))
    assert "argument" in message, message


@pytest.mark.parametrize("args", [("abc",), (A, "abc"), ({"a": A, "b": "x"},), (object(),)],
                         ids=["string", "second-string", "string-in-dict", "object"])
def test_unsupported_argument_types(args):
    f = jit(lambda *xs: xs[0])
    message = raises(ArgumentError, lambda: f(*args))
    assert "not an array" in message, message


def test_unsupported_dtype():
    message = raises(ArgumentError, lambda: jit(lambda x: x)(np.ones(3, np.longdouble)))
    assert "float128" in message, message


def test_unhashable_static_argument():
    message = raises(ArgumentError, lambda: jit(lambda x, n: x, static_argnums=1)(V3, [1, 2]))
    assert "hashable" in message, message


def test_returning_a_non_array():
    message = raises(ArgumentError, lambda: jit(lambda x: "result")(V3))
    assert "str" in message, message


def test_vjp_cotangent_of_the_wrong_shape():
    _, vjp_fn = vjp(lambda x: x * 2.0, V3)
    message = raises(ArgumentError, lambda: vjp_fn(V4))
    assert "(4,)" in message and "f64[3]" in message, message


def test_argnums_out_of_range():
    message = raises(ArgumentError, lambda: grad(lambda x: np.sum(x), argnums=2)(V3))
    assert "argnums" in message and "out of range" in message, message


def test_repeated_argnums_do_not_leak_internal_errors():
    f = grad(lambda x: np.sum(x * 2.0), argnums=(0, 0))
    try:
        g = f(V3)
    except ArgumentError:
        return
    assert isinstance(g, tuple) and len(g) == 2
    np.testing.assert_array_equal(g[0], np.full(3, 2.0))
    np.testing.assert_array_equal(g[1], np.full(3, 2.0))


# --------------------------------------------------------------------------- indexing

def boolean_mask(x):
    return x[x > 1.0]  # LINE: mask


def test_boolean_mask_with_data_dependent_shape_names_np_where():
    message = raises(IndexingError, lambda: jit(boolean_mask)(V4))
    assert "np.where" in message, message
    assert line_of("mask") in message, message


def index_out_of_range(x):
    return x[1, 7]  # LINE: oob


def test_index_out_of_range():
    message = raises(IndexingError, lambda: jit(index_out_of_range)(A))
    assert "out of bounds" in message and "7" in message and "size 4" in message, message
    assert line_of("oob") in message, message


def test_too_many_indices():
    message = raises(IndexingError, lambda: jit(lambda x: x[0, 0, 0])(A))
    assert "too many indices" in message, message


def test_indexing_errors_are_index_errors():
    with pytest.raises(IndexError):
        jit(index_out_of_range)(A)


def test_write_through_reshaped_view():
    def f(x):
        x.reshape(-1)[0] = 1.0  # LINE: setitem
        return x
    message = raises(UnsupportedOperationError, lambda: jit(f)(V3))
    assert "reshape" in message and line_of("setitem") in message, message


# --------------------------------------------------------------------------- leaked tracers

def test_tracer_used_after_its_trace_ended():
    leaked = []
    jit(lambda x: leaked.append(x) or x * 1.0)(V3)
    with pytest.raises(JitgradError, match="outside of the function being traced"):
        leaked[0] + 1.0


def test_tracer_leaked_into_another_trace(monkeypatch):
    monkeypatch.setattr(jitgrad.config.config, "verify_ir", False)   # the user's default
    leaked = []
    jit(lambda x: leaked.append(x) or x * 1.0)(V3)
    message = raises(JitgradError, lambda: jit(lambda x: x + leaked[0])(V3))
    assert "leaked" in message, message


# --------------------------------------------------------------------------- compilation

def test_llvm_parse_failure_is_a_compilation_error(monkeypatch):
    def broken(text):
        raise RuntimeError("LLVM ERROR: simulated parser failure\nsecond line")
    monkeypatch.setattr(engine.llvm, "parse_assembly", broken)
    with pytest.raises(CompilationError) as info:
        jit(lambda x: np.sin(x) + 1.0)(V3)
    assert info.value.stage == "llvm-verify"
    assert "llvm-verify" in str(info.value) and "simulated parser failure" in str(info.value)


def test_llvm_loading_failure_is_a_compilation_error(monkeypatch):
    def broken(module, target_machine):
        raise RuntimeError("simulated code loading failure")
    monkeypatch.setattr(engine.llvm, "create_mcjit_compiler", broken)
    with pytest.raises(CompilationError) as info:
        grad(lambda x: np.sum(x ** 2))(V3)
    assert info.value.stage == "llvm-load" and "simulated" in str(info.value)


def test_llvm_optimizer_failure_is_a_compilation_error(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated optimizer failure")
    monkeypatch.setattr(engine.llvm, "create_pass_builder", broken)
    with pytest.raises(CompilationError) as info:
        jit(lambda x: x * 3.0)(V4)
    assert info.value.stage == "llvm-optimize"


def test_compilation_recovers_after_a_failure(monkeypatch):
    f = jit(lambda x: x * 3.0)
    with monkeypatch.context() as patch:
        patch.setattr(engine.llvm, "parse_assembly", lambda text: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(CompilationError):
            f(V4)
    assert f.cache_size == 0
    np.testing.assert_array_equal(f(V4), V4 * 3.0)


def _module_with(body) -> ir.Module:
    module = ir.Module(name="broken")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.DoubleType()]), "broken")
    body(fn)
    return module


def test_block_without_terminator_is_rejected_by_llvm_verify():
    def body(fn):
        builder = ir.IRBuilder(fn.append_basic_block("entry"))
        builder.fadd(fn.args[0], fn.args[0])      # no `ret`
    with pytest.raises(CompilationError) as info:
        engine.compile_module(_module_with(body))
    assert info.value.stage == "llvm-verify"


def test_use_before_definition_is_rejected_by_llvm_verify():
    def body(fn):
        entry, later = fn.append_basic_block("entry"), fn.append_basic_block("later")
        builder = ir.IRBuilder(later)
        value = builder.fadd(fn.args[0], fn.args[0])
        builder.ret_void()
        builder.position_at_end(entry)
        builder.fmul(value, value)                 # does not dominate its use
        builder.branch(later)
    with pytest.raises(CompilationError) as info:
        engine.compile_module(_module_with(body))
    assert info.value.stage == "llvm-verify" and "dominate" in str(info.value)


# --------------------------------------------------------------------------- the hierarchy

@pytest.mark.parametrize("cls", [
    jitgrad.ShapeError, jitgrad.DTypeError, jitgrad.UnsupportedOperationError, jitgrad.TracerBoolConversionError,
    jitgrad.GradientError, jitgrad.IRParseError, jitgrad.VerificationError, jitgrad.CompilationError,
    jitgrad.ArgumentError, jitgrad.IndexingError,
])
def test_every_error_is_a_jitgrad_error(cls):
    assert issubclass(cls, jitgrad.JitgradError)
    assert cls.__name__ in jitgrad.__all__


def test_every_exported_error_class_is_listed():
    exported = {name for name in jitgrad.__all__ if isinstance(getattr(jitgrad, name), type)
                and issubclass(getattr(jitgrad, name), BaseException)}
    import jitgrad.errors as errors
    defined = {name for name, obj in vars(errors).items() if isinstance(obj, type)
               and issubclass(obj, BaseException)
               and obj.__module__ in (errors.__name__, "jitgrad.ir.errors")}
    assert defined == exported
