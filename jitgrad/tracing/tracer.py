"""Tracing unmodified NumPy code into jitgrad IR.

A `Tracer` stands in for an array while the user's function runs. NumPy hands it every
ufunc (`__array_ufunc__`) and array function (`__array_function__`); Python hands it
operators, methods and indexing. Each is looked up in `numpy_api`'s tables and emits
primitives stamped with the user's source line. Anything not in the tables, and any
attempt to turn a traced value into a Python bool/int/float, raises an error that names
the user's line — never a silent constant.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import numpy as np

from jitgrad.errors import (ArgumentError, JitgradError, TracerBoolConversionError,
                            UnsupportedAttributeError, UnsupportedOperationError)
from jitgrad.ir import Builder, DType, Function, Location, TensorType, Value, current_builder, new_function
from jitgrad.ir.clone import inline_block
from jitgrad.ir.rewrite import free_values
from jitgrad.passes.nn_idioms import recognize_idioms
from . import implicit
from . import numpy_api as api
from . import numpy_elementwise, numpy_reductions, numpy_shape
from . import array_namespace, indexing, numpy_in_place, scipy_special
from .pytree import TreeDef, tree_flatten, tree_unflatten

# --------------------------------------------------------------------------- source locations

_INTERNAL_DIRS: tuple[str, ...] = ()


def _internal_dirs() -> tuple[str, ...]:
    global _INTERNAL_DIRS
    if not _INTERNAL_DIRS:
        import jitgrad
        import jitgrad.ir
        import jitgrad.passes
        dirs = {os.path.dirname(m.__file__) for m in (jitgrad, jitgrad.ir, jitgrad.passes, np)}
        dirs.add(os.path.dirname(functools.__file__))  # stdlib frames (functools.partial, ...)
        _INTERNAL_DIRS = tuple(d + os.sep for d in sorted(dirs))
    return _INTERNAL_DIRS


@functools.lru_cache(maxsize=256)
def _display_path(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


def user_location() -> Location:
    """The innermost stack frame outside jitgrad and NumPy: the user's line."""
    skip = _internal_dirs()
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back
    if frame is None:
        return Location("<unknown>", 0)
    return Location(_display_path(frame.f_code.co_filename), frame.f_lineno, frame.f_code.co_name)


# --------------------------------------------------------------------------- dispatch

def _unwrap(x):
    if isinstance(x, Tracer):
        if isinstance(x.value, _StaleValue):
            raise x.value.error()
        return x.value
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _wrap(x):
    if isinstance(x, Value):
        return Tracer(x)
    if isinstance(x, (tuple, list)):            # np.split returns a list
        return type(x)(_wrap(v) for v in x)
    return x


def _weak_values(args, kwargs) -> dict[Value, bool | frozenset]:
    """The values of weak tracers (Python scalars passed as arguments) among the arguments,
    with what is known of their range (`TensorType.weak`)."""
    found = {}

    def visit(x):
        if isinstance(x, Tracer):
            if x.weak:
                found[x.value] = x.weak
        elif isinstance(x, (list, tuple)):
            for item in x:
                visit(item)
    visit(args)
    visit(tuple((kwargs or {}).values()))
    return found


def apply(impl: Callable, args, kwargs=None):
    """Run one numpy_api function on traced arguments at the user's current line."""
    loc = user_location()
    builder = _active_builder()
    with builder.at(loc), api.weak_scalars(_weak_values(args, kwargs)):
        try:
            result = impl(*_unwrap(tuple(args)), **{k: _unwrap(v) for k, v in (kwargs or {}).items()})
        except JitgradError as err:
            raise err.with_location(loc) from None
        except TypeError as err:
            raise UnsupportedOperationError(f"{getattr(impl, '__name__', impl)}: {err}", loc) from None
    return _wrap(result)


def _active_builder() -> Builder:
    try:
        return current_builder()
    except RuntimeError:
        raise JitgradError("a traced value was used outside of the function being traced "
                           "(did a tracer leak into a global or a closure?)") from None


def _unsupported_name(obj) -> str:
    """`numpy.linalg.inv`, `numpy.cumsum`: the public path (private modules dropped)."""
    module = getattr(obj, "__module__", None) or "numpy"
    public = ".".join(part for part in module.split(".") if not part.startswith("_"))
    return f"{public}.{getattr(obj, '__name__', repr(obj))}"


def _is_python_scalar(x) -> bool:
    return isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic)


def _operator(ufunc, reflected=False):
    """A Python operator. As in NumPy, where an operator on Python scalars gives a Python
    scalar, an operator whose operands are all weak (Python scalars passed as arguments,
    or Python scalars) gives a weak result. The implementation is looked up at each call,
    so later entries of the table (the complex-number versions) apply to operators too."""
    def method(self, other):
        impl = api.UFUNCS[ufunc]
        if not (self.weak and (_is_python_scalar(other) or isinstance(other, Tracer) and other.weak)):
            return apply(impl, (other, self) if reflected else (self, other))
        if ufunc not in _BOOL_PRESERVING:         # Python: True + True is 2
            self, other = _bool_as_int(self), _bool_as_int(other)
        return _as_weak(apply(impl, (other, self) if reflected else (self, other)))
    return method


def _unary_operator(ufunc):
    def method(self):
        impl = api.UFUNCS[ufunc]
        if not self.weak:
            return apply(impl, (self,))
        return _as_weak(apply(impl, (_bool_as_int(self),)))     # Python: ~True is -2
    return method


_BOOL_PRESERVING = {np.bitwise_and, np.bitwise_or, np.bitwise_xor, np.equal, np.not_equal, np.less,
                    np.less_equal, np.greater, np.greater_equal}


def _bool_as_int(x):
    """A weak bool as the Python int it is in arithmetic."""
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, Tracer) and x.value.type.dtype == DType.bool:
        return Tracer(apply(api.astype, (x, np.int64)).value, weak=True)
    return x


def _as_weak(result):
    """The result of a Python operator on weak operands, weak if it is a Python scalar's
    dtype (float64, int64, bool, complex128: `1j * s` is a Python complex); a tuple
    (divmod) element by element."""
    if isinstance(result, tuple):
        return tuple(_as_weak(r) for r in result)
    if isinstance(result, Tracer) and result.value.type.dtype in (DType.f64, DType.i64, DType.bool, DType.c128):
        return Tracer(result.value, weak=True)
    return result


def _method(impl):
    return lambda self, *args, **kwargs: apply(impl, (self, *args), kwargs)


_UNTRACKED = "a view whose writes are not carried to its base"


class _DerivedView:
    """The `base` of a view made by transpose/swapaxes/squeeze/.T/.flat/... (or by
    reshape/ravel): how to compute it again from its base array. Writes into such a view
    are refused (jitgrad does not carry them back), but the view is registered with its
    base and recomputed whenever the base is written to, so it sees the base's new values
    as a NumPy view does. `layout_dependent` (reshape, ravel): NumPy returns a view only
    when the base's memory layout allows (a C-contiguous base) and a copy otherwise;
    jitgrad does not track layouts, so after a write to the base such an array is stale
    (`_StaleValue`): using it raises."""

    __slots__ = ("recompute", "layout_dependent")

    def __init__(self, recompute: Callable, layout_dependent: bool = False):
        self.recompute = recompute
        self.layout_dependent = layout_dependent


class _StaleValue:
    """The value of a reshape/ravel result whose base was written to afterwards: whether
    NumPy's result shares the write depends on the base's memory layout."""

    __slots__ = ("location",)

    def __init__(self, location: Location):
        self.location = location

    def __getattr__(self, name):
        raise self.error()

    def error(self) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"this array was made by reshape/ravel of an array written to afterwards (at {self.location}); "
            "NumPy's reshape shares the array's memory only when its layout allows (C-contiguous) and copies "
            "it otherwise, which jitgrad does not track, so whether this array sees the write is unknown: "
            "reshape after the write, or reshape a copy (np.copy(a).reshape(...)) to keep the old values")


_VIEW_FUNCTIONS = {np.reshape, np.transpose, np.swapaxes, np.moveaxis, np.expand_dims, np.squeeze, np.ravel,
                   np.broadcast_to}
_LAYOUT_DEPENDENT_VIEWS = {np.reshape, np.ravel}


def _as_view(result, base=None, recompute: Callable | None = None, layout_dependent: bool = False):
    """Mark what NumPy returns as a view (reshape, transpose...) of `base`: writing into it
    is an error; writing into `base` recomputes it with `recompute(base)`."""
    if isinstance(result, Tracer):
        if isinstance(base, Tracer) and recompute is not None:
            result.base = _DerivedView(recompute, layout_dependent)
            base.views.append(result)
        else:
            result.base = _UNTRACKED
    return result


def _view_method(impl, layout_dependent: bool = False):
    def method(self, *args, **kwargs):
        recompute = lambda base: apply(impl, (base, *args), kwargs)     # noqa: E731
        return _as_view(recompute(self), self, recompute, layout_dependent)
    return method


def _ufunc_at(ufunc, x, index, value=None):
    """np.add.at(x, index, value) on a traced array: accumulates at repeated indices."""
    if ufunc not in (np.add, np.subtract) or value is None:
        raise UnsupportedOperationError(f"numpy.{ufunc.__name__}.at is not supported on traced arrays "
                                        "(numpy.add.at and numpy.subtract.at are)", user_location())
    if not isinstance(x, Tracer):
        raise UnsupportedOperationError(
            f"numpy.{ufunc.__name__}.at writes traced values into a NumPy array, which cannot hold them; "
            "make the array traced first (e.g. np.zeros_like(traced_array))", user_location())
    if ufunc is np.subtract:
        value = -value if isinstance(value, Tracer) else np.negative(value)
    x._replace(apply(indexing.add_at, (x, index, value)).value)


_IN_PLACE_FUNCTIONS = {np.put: numpy_in_place.put, np.putmask: numpy_in_place.putmask,
                       np.place: numpy_in_place.place, np.put_along_axis: numpy_in_place.put_along_axis,
                       np.fill_diagonal: numpy_in_place.fill_diagonal}
"""NumPy functions that write into their first argument and return None."""


def _write_in_place(func, args, kwargs):
    """np.put(a, ...) and its kin on a traced `a`: `a` (and its views) take the written value."""
    try:                        # keywords by NumPy's parameter names (np.put(a=x, ind=...))
        bound = inspect.signature(func).bind(*args, **kwargs)
        bound.apply_defaults()
        args, kwargs = tuple(bound.arguments.values()), {}
    except (TypeError, ValueError):
        pass
    target = args[0] if args else None
    if not isinstance(target, Tracer):
        raise UnsupportedOperationError(
            f"numpy.{func.__name__} writes traced values into a NumPy array, which cannot hold them; make the "
            "array traced first (e.g. np.zeros_like(traced_array))", user_location())
    target._replace(apply(_IN_PLACE_FUNCTIONS[func], args, kwargs).value)


class Tracer:
    """A traced array: an IR value that behaves like a NumPy array."""

    __slots__ = ("value", "weak", "base", "views")
    __array_priority__ = 1000

    def __init__(self, value: Value, weak: bool | frozenset = False):
        self.value = value
        self.weak = weak
        """A Python scalar argument (or a Python operator's result on such): it promotes
        as a Python scalar does (NEP 50), so `x_f32 * s` stays float32. For a Python int
        argument, the integer dtypes that hold its value (`TensorType.weak`)."""
        self.base = None
        """For a view made by basic indexing, (the array it views, the index); `_UNTRACKED`
        for a view whose writes jitgrad cannot carry to its base (reshape, transpose...)."""
        self.views = []
        """The basic-indexing views of this array, refreshed when it is written to."""

    # ----- NumPy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if kwargs.get("out") is not None:
            raise UnsupportedOperationError(f"numpy.{ufunc.__name__}(..., out=...) is not supported: traced "
                                            "arrays are immutable", user_location())
        if method == "at":
            return _ufunc_at(ufunc, *inputs)
        if method == "reduce" and ufunc in numpy_reductions.UFUNC_REDUCE and len(inputs) == 1:
            return apply(numpy_reductions.UFUNC_REDUCE[ufunc], inputs, kwargs)
        if method == "accumulate" and ufunc in numpy_reductions.UFUNC_ACCUMULATE and len(inputs) == 1:
            return apply(numpy_reductions.UFUNC_ACCUMULATE[ufunc], inputs, kwargs)
        if method != "__call__":
            raise UnsupportedOperationError(f"numpy.{ufunc.__name__}.{method} is not supported",
                                            user_location())
        impl = api.UFUNCS.get(ufunc) or scipy_special.lookup(ufunc)
        if impl is None:
            name = scipy_special.scipy_name(ufunc) or (
                f"numpy.{ufunc.__name__}" if getattr(np, ufunc.__name__, None) is ufunc
                else f"the ufunc {ufunc.__name__!r} (not NumPy's own: numpy.frompyfunc or another library's)")
            raise UnsupportedOperationError(f"{name} has no jitgrad rule (jitgrad.pure_callback runs any NumPy or "
                                            "SciPy function from compiled code)", user_location())
        unknown = set(kwargs) - {"dtype", "casting"}
        if unknown:
            raise UnsupportedOperationError(f"numpy.{ufunc.__name__}: arguments {sorted(unknown)} are not "
                                            "supported", user_location())
        result = apply(impl, inputs)
        if kwargs.get("dtype") is not None:
            result = apply(api.astype, (result, kwargs["dtype"]))
        return result

    def __array_function__(self, func, types, args, kwargs):
        if func in _IN_PLACE_FUNCTIONS:
            return _write_in_place(func, args, kwargs)
        impl = api.FUNCTIONS.get(func)
        if impl is None:
            raise UnsupportedOperationError(f"{_unsupported_name(func)} has no jitgrad rule", user_location())
        result = apply(impl, args, kwargs)
        if func not in _VIEW_FUNCTIONS:
            return result
        recompute = lambda base: apply(impl, (base, *args[1:]), kwargs)     # noqa: E731
        return _as_view(result, args[0] if args else None, recompute, func in _LAYOUT_DEPENDENT_VIEWS)

    def __array_namespace__(self, *, api_version=None):
        """The Array API standard's namespace for traced arrays (`jitgrad.array_api`)."""
        return array_namespace.namespace_for(api_version)

    device = property(lambda self: array_namespace.DEVICE)

    def to_device(self, device, /, *, stream=None):
        if device != array_namespace.DEVICE:
            raise UnsupportedOperationError(f"traced arrays live on {array_namespace.DEVICE!r}; "
                                            f"to_device({device!r}) is not supported", user_location())
        return self

    def __array__(self, dtype=None, copy=None):
        raise UnsupportedOperationError(
            "a traced array cannot be converted to a NumPy array (np.asarray/np.array or a function "
            "jitgrad does not know); keep it a traced value", user_location())

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise UnsupportedAttributeError(f"arrays have no supported method or attribute .{name} when traced "
                                        "(jitgrad has no rule for it)", user_location())

    # ----- attributes
    shape = property(lambda self: self.value.type.shape)
    ndim = property(lambda self: self.value.type.ndim)
    size = property(lambda self: self.value.type.size)
    dtype = property(lambda self: self.value.type.dtype.numpy)
    T = property(lambda self: _view_method(api.transpose)(self))
    mT = property(lambda self: _view_method(api.swapaxes)(self, -1, -2))

    def __len__(self) -> int:
        if not self.value.type.shape:
            raise TypeError("len() of unsized object")
        return self.value.type.shape[0]

    def __iter__(self):
        if not self.value.type.shape:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.value.type.shape[0]))

    def __repr__(self) -> str:
        return f"Tracer({'weak ' if self.weak else ''}{self.value.type})"

    __hash__ = object.__hash__

    # ----- concretization is an error
    def _concrete(self, what: str):
        raise TracerBoolConversionError(
            f"{what} needs a concrete value, but this array is traced (its value is only known when "
            f"the compiled code runs). Python `if`/`while`/`and`/`or` cannot branch on it: use "
            f"np.where(cond, a, b) to select values, or pass the value as a static argument "
            f"(jitgrad.jit(f, static_argnums=...)).", user_location())

    def __bool__(self): self._concrete("converting a traced array to bool (an `if` or `while` test)")
    def __int__(self): self._concrete("int() of a traced array")
    def __float__(self): self._concrete("float() of a traced array")
    def __index__(self): self._concrete("using a traced array as an index or size")
    def __complex__(self): self._concrete("complex() of a traced array")
    def item(self, *args): self._concrete(".item() of a traced array")
    def tolist(self): self._concrete(".tolist() of a traced array")

    # ----- operators
    __add__, __radd__ = _operator(np.add), _operator(np.add, True)
    __sub__, __rsub__ = _operator(np.subtract), _operator(np.subtract, True)
    __mul__, __rmul__ = _operator(np.multiply), _operator(np.multiply, True)
    __truediv__, __rtruediv__ = _operator(np.true_divide), _operator(np.true_divide, True)
    __rpow__ = _operator(np.power, True)
    _power = _operator(np.power)

    def __pow__(self, other):
        """NumPy's `**` computes a bool array ** 2 as np.square (int8), and a float16 array
        ** 0.5 as np.sqrt (-inf ** 0.5 is nan, not np.power's inf), unlike np.power."""
        if self.value.type.dtype == DType.bool and type(other) is int and other == 2 and not self.weak:
            return apply(api.UFUNCS[np.square], (self,))
        if self.value.type.dtype == DType.f16 and type(other) is float and other == 0.5 and not self.weak:
            return apply(api.UFUNCS[np.sqrt], (self,))
        return self._power(other)
    __lt__, __le__ = _operator(np.less), _operator(np.less_equal)
    __gt__, __ge__ = _operator(np.greater), _operator(np.greater_equal)
    __eq__, __ne__ = _operator(np.equal), _operator(np.not_equal)
    __and__, __rand__ = _operator(np.bitwise_and), _operator(np.bitwise_and, True)
    __or__, __ror__ = _operator(np.bitwise_or), _operator(np.bitwise_or, True)
    __xor__, __rxor__ = _operator(np.bitwise_xor), _operator(np.bitwise_xor, True)
    __lshift__, __rlshift__ = _operator(np.left_shift), _operator(np.left_shift, True)
    __rshift__, __rrshift__ = _operator(np.right_shift), _operator(np.right_shift, True)
    __floordiv__, __rfloordiv__ = _operator(np.floor_divide), _operator(np.floor_divide, True)
    __mod__, __rmod__ = _operator(np.remainder), _operator(np.remainder, True)
    __divmod__, __rdivmod__ = _operator(np.divmod), _operator(np.divmod, True)

    def __matmul__(self, other): return apply(api.matmul, (self, other))
    def __rmatmul__(self, other): return apply(api.matmul, (other, self))
    __neg__ = _unary_operator(np.negative)
    __abs__ = _unary_operator(np.absolute)
    __invert__ = _unary_operator(np.invert)

    def __pos__(self): return self
    def __getitem__(self, index):
        result = apply(indexing.getitem, (self, index))
        if not indexing.has_advanced(None, _unwrap(index)):      # basic indexing gives a view, as in NumPy
            result.base = (self, index)
            self.views.append(result)
        return result

    def __setitem__(self, index, value):
        """A functional update: this Tracer (and every view of its data) takes the new value."""
        self._replace(apply(indexing.setitem, (self, index, value)).value)

    def _replace(self, new: Value) -> None:
        if self.base is _UNTRACKED or isinstance(self.base, _DerivedView):
            raise UnsupportedOperationError(
                "writing into a traced array made by reshape/transpose/ravel/squeeze/swapaxes/... is not "
                "supported (NumPy would write through the view into its base); assign into the base array "
                "with an index, or use np.where", user_location())
        if self.base is not None:
            base, index = self.base
            base[index] = Tracer(new)
            return
        self.value = new
        self._refresh_views()

    def _refresh_views(self) -> None:
        for view in self.views:
            if isinstance(view.base, _DerivedView) and view.base.layout_dependent:
                view._make_stale(user_location())
                continue
            if isinstance(view.base, _DerivedView):
                view.value = view.base.recompute(self).value
            else:
                view.value = apply(indexing.getitem, (self, view.base[1])).value
            view._refresh_views()

    def _make_stale(self, location: Location) -> None:
        self.value = _StaleValue(location)
        for view in self.views:
            view._make_stale(location)

    def _inplace(ufunc):
        """`x += y`: NumPy computes in x's dtype (same-kind casting) and writes into x."""
        impl = api.UFUNCS[ufunc]

        def method(self, other):
            result = apply(impl, (self, other))
            if result.value.type.dtype != self.value.type.dtype:
                if not np.can_cast(result.dtype, self.dtype, "same_kind"):
                    raise UnsupportedOperationError(
                        f"Cannot cast ufunc '{ufunc.__name__}' output from {result.dtype} to {self.dtype} "
                        "with casting rule 'same_kind' (NumPy raises UFuncTypeError)", user_location())
                result = apply(api.astype, (result, self.dtype))
            self._replace(result.value)
            return self
        return method

    __iadd__, __isub__, __imul__ = _inplace(np.add), _inplace(np.subtract), _inplace(np.multiply)
    __itruediv__, __ipow__, __ifloordiv__ = _inplace(np.true_divide), _inplace(np.power), _inplace(np.floor_divide)
    __imod__, __iand__, __ior__, __ixor__ = (_inplace(np.remainder), _inplace(np.bitwise_and),
                                             _inplace(np.bitwise_or), _inplace(np.bitwise_xor))
    __ilshift__, __irshift__ = _inplace(np.left_shift), _inplace(np.right_shift)
    _imatmul = _inplace(np.matmul)

    def __imatmul__(self, other):
        """`x @= y`: NumPy allows it only where the product keeps x's shape."""
        result_shape = apply(api.matmul, (self, other)).shape
        if result_shape != self.shape:
            raise UnsupportedOperationError(f"x @= y would change x's shape from {self.shape} to {result_shape} "
                                            "(NumPy raises ValueError)", user_location())
        return self._imatmul(other)
    del _inplace

    # ----- methods
    sum = _method(numpy_reductions.sum)
    mean = _method(api.mean)
    var = _method(api.var)
    std = _method(api.std)
    max = _method(numpy_reductions.amax)
    min = _method(numpy_reductions.amin)
    argmax = _method(api.argmax)
    argmin = _method(api.argmin)
    dot = _method(api.dot)
    transpose = _view_method(lambda x, *axes: api.transpose(x, axes[0] if len(axes) == 1 and isinstance(
        axes[0], (tuple, list)) else (axes or None)))
    reshape = _view_method(api.reshape, layout_dependent=True)
    ravel = _view_method(api.ravel, layout_dependent=True)
    flatten = _method(api.ravel)
    squeeze = _view_method(api.squeeze)
    swapaxes = _view_method(api.swapaxes)
    clip = _method(api.clip)
    astype = _method(lambda x, dtype, **kwargs: api.astype(x, dtype))
    copy = _method(lambda x: x)
    prod = _method(numpy_reductions.prod)
    cumsum = _method(numpy_reductions.cumsum)
    cumprod = _method(numpy_reductions.cumprod)
    all = _method(numpy_reductions.all)
    any = _method(numpy_reductions.any)
    trace = _method(numpy_reductions.trace)
    diagonal = _method(numpy_shape.diagonal)
    repeat = _method(numpy_shape.repeat)
    round = _method(numpy_elementwise.round_)
    nbytes = property(lambda self: self.value.type.size * self.value.type.dtype.numpy.itemsize)
    itemsize = property(lambda self: self.value.type.dtype.numpy.itemsize)

    # methods that are NumPy functions of the array (dispatched like the functions)
    def take(self, indices, axis=None, out=None, mode="raise"):
        return np.take(self, indices, axis=axis, out=out, mode=mode)

    def compress(self, condition, axis=None, out=None):
        return np.compress(condition, self, axis=axis, out=out)

    def choose(self, choices, out=None, mode="raise"):
        return np.choose(self, choices, out=out, mode=mode)

    def searchsorted(self, v, side="left", sorter=None):
        return np.searchsorted(self, v, side=side, sorter=sorter)

    def argsort(self, axis=-1, kind=None, order=None, *, stable=None):
        return np.argsort(self, axis=axis, kind=kind, order=order, stable=stable)

    def argpartition(self, kth, axis=-1, kind="introselect", order=None):
        return np.argpartition(self, kth, axis=axis, kind=kind, order=order)

    def nonzero(self):
        return np.nonzero(self)

    def conj(self):
        """The conjugate; the array itself for real dtypes, as NumPy returns (np.conj would
        make bool int8). A weak operand's is weak, as a Python scalar's conjugate is."""
        if not self.value.type.dtype.is_complex:
            return _bool_as_int(self) if self.weak else self
        return _as_weak(np.conjugate(self)) if self.weak else np.conjugate(self)

    conjugate = conj

    @property
    def real(self):
        """A weak operand's real part is weak: `(1j * s).real` is a Python float."""
        return _as_weak(np.real(_bool_as_int(self))) if self.weak else np.real(self)

    @property
    def imag(self):
        return _as_weak(np.imag(_bool_as_int(self))) if self.weak else np.imag(self)

    flat = property(lambda self: _view_method(api.ravel)(self))

    def __dlpack__(self, *args, **kwargs):
        raise UnsupportedOperationError("a traced array has no memory to share through DLPack (np.from_dlpack); "
                                        "use it directly", user_location())

    def view(self, dtype=None, type=None):  # noqa: A002 - NumPy's parameter name
        if dtype is not None or type is not None:
            raise UnsupportedOperationError(".view(dtype) of a traced array reinterprets its bytes, which jitgrad "
                                            "cannot do; use .astype(dtype) to convert the values", user_location())
        return _as_view(Tracer(self.value), self, lambda base: Tracer(base.value))

    def fill(self, value):
        """In place, as NumPy: this array (and the array it is a view of) takes `value`."""
        if np.ndim(value) != 0:
            raise UnsupportedOperationError(".fill() takes a scalar (0-d) value", user_location())
        self._replace(apply(lambda x, v: api.broadcast_to(api.as_value(v, x.type.dtype), x.type.shape),
                            (self, value)).value)

    def sort(self, axis=-1, kind=None, order=None, *, stable=None):
        """In place, as NumPy: this array (and the array it is a view of) becomes sorted."""
        if axis is None:
            raise UnsupportedOperationError("ndarray.sort(axis=None) is not allowed: NumPy sorts an array in place "
                                            "along one axis (np.sort(a, axis=None) returns a flat copy)",
                                            user_location())
        self._replace(np.sort(self, axis=axis, kind=kind, order=order, stable=stable).value)

    def partition(self, kth, axis=-1, kind="introselect", order=None):
        """In place, as NumPy, where np.partition's order is NumPy's (it raises otherwise)."""
        self._replace(np.partition(self, kth, axis=axis, kind=kind, order=order).value)

    def put(self, indices, values, mode="raise"):
        """In place, as NumPy: self.flat[indices[k]] = values.flat[k % len(values)]."""
        self._replace(apply(numpy_in_place.put, (self, indices, values, mode)).value)

    def resize(self, *new_shape, refcheck=True):
        """In place, as NumPy: the elements in memory order, cut or followed by zeros. NumPy
        refuses to resize a view, an array with views, or (with refcheck) one referenced
        from elsewhere; so does this, counting Python references as NumPy does. Memory
        order is C order only where at most one dimension exceeds 1 (a 1-d array): other
        arrays are refused."""
        if self.base is not None or self.views:
            raise UnsupportedOperationError("cannot resize this array: it does not own its data, or another "
                                            "array views it (NumPy raises ValueError)", user_location())
        if sum(n > 1 for n in self.shape) > 1:
            raise UnsupportedOperationError(
                f".resize() of a {self.ndim}-d array takes its elements in memory order, C or Fortran (NumPy keeps "
                "the order of the arrays it computes from), which jitgrad does not track; resize a 1-d array "
                "(a.ravel().copy()), or use np.resize(a, shape) (C order, repeating the elements)", user_location())
        # the caller's name, this frame's `self` and getrefcount's argument: NumPy's "2",
        # seen from inside a method
        if refcheck and sys.getrefcount(self) > 3:
            raise UnsupportedOperationError("cannot resize an array that references or is referenced by another "
                                            "object (NumPy raises ValueError); use np.resize, or "
                                            "refcheck=False", user_location())
        self._replace(apply(numpy_in_place.resize, (self, *new_shape)).value)

    def _in_place_only(what: str):
        def method(self, *args, **kwargs):
            raise UnsupportedOperationError(f".{what}() changes a traced array's memory or shape in place, which "
                                            "jitgrad cannot express; build a new array instead", user_location())
        return method

    itemset = _in_place_only("itemset")
    setflags, byteswap = _in_place_only("setflags"), _in_place_only("byteswap")
    del _in_place_only


# --------------------------------------------------------------------------- tracing a function

@dataclass
class TracedFunction:
    """A function traced to IR, with the pytree structures of its inputs and outputs.
    `captured` are values of enclosing traces that the function closed over; they are
    its trailing arguments, after the flattened inputs."""

    function: Function
    in_tree: TreeDef
    out_tree: TreeDef
    captured: list = field(default_factory=list)


_CHANGED_MEANING = {np.ma.MaskedArray: "masked arrays (numpy.ma): their mask would be dropped",
                    np.matrix: "numpy.matrix: its operators (* is a matrix product) differ from arrays'"}


def abstract_leaf(x) -> TensorType:
    """The type a leaf argument is traced with: arrays by dtype and shape; Python floats,
    ints and bools as *weak* 0-d f64, i64 and bool, which promote as Python scalars do in
    NumPy (NEP 50: `f(x_f32, 2.0)` is float32). ndarray subclasses whose operations NumPy
    changes (masked arrays, np.matrix) are refused; other subclasses are traced as plain
    arrays (their data and dtype are all jitgrad reads)."""
    if isinstance(x, TensorType):
        return x
    if isinstance(x, Tracer):
        return TensorType(x.value.type.shape, x.value.type.dtype, weak=x.weak) if x.weak else x.value.type
    if isinstance(x, np.generic):          # NumPy scalars (np.float64 is a float) are strong
        return _array_type(x)
    if isinstance(x, bool):
        return TensorType((), DType.bool, weak=True)
    if isinstance(x, int):
        if not -2**63 <= x < 2**63:
            raise ArgumentError(f"the Python int {x} does not fit in int64")
        holding = frozenset(d for d in DType if d.is_integer and np.iinfo(d.numpy).min <= x <= np.iinfo(d.numpy).max)
        return TensorType((), DType.i64, weak=holding)
    if isinstance(x, float):
        return TensorType((), DType.f64, weak=True)
    if isinstance(x, complex):
        return TensorType((), DType.c128, weak=True)
    for cls, why in _CHANGED_MEANING.items():
        if isinstance(x, cls):
            raise ArgumentError(f"arguments of type {type(x).__module__}.{type(x).__name__} are not supported: "
                                f"{why}. Pass plain arrays (e.g. np.ma.filled(x, 0) and the mask as a "
                                "bool array, or np.asarray(m)).")
    if not isinstance(x, np.ndarray):
        raise ArgumentError(f"argument of type {type(x).__name__} is not an array, a Python scalar or a "
                            "pytree (tuple/list/dict) of them")
    return _array_type(x)


def _array_type(array) -> TensorType:
    try:
        return TensorType(array.shape, DType.from_numpy(array.dtype))
    except KeyError:
        raise ArgumentError(f"arrays of dtype {array.dtype} are not supported (supported: "
                            f"{', '.join(str(d.numpy) for d in DType)})") from None


TRACE_CONTEXTS: list[Callable[[Callable], ContextManager]] = []
"""Context managers entered around every run of a user function being traced, given the
function (`tracing.random` registers the one that intercepts np.random)."""
TRACE_CONTEXTS.append(indexing.guard_created_arrays(Tracer, user_location))
TRACE_CONTEXTS.append(scipy_special.replacing_python_functions)


CONTROL_FLOW_CONVERTER: list = []
"""The module that rewrites a function whose Python `if`/`while` met a traced value
(`tracing.autograph` registers itself when imported, so this module does not import the
layers above it)."""


def trace(fn: Callable, args: tuple, name: str | None = None) -> TracedFunction:
    """Trace `fn(*args)` to a Function. Leaves of `args` are arrays, scalars or TensorTypes.
    When `fn`'s own `if`/`while` meets a traced value, the function is converted to
    region ops (`tracing.autograph`) and traced again."""
    if not CONTROL_FLOW_CONVERTER:
        return _trace_once(fn, args, name)
    autograph = CONTROL_FLOW_CONVERTER[0]
    target = inspect.unwrap(fn)
    try:
        return _trace_once(autograph.active(fn), args, name)
    except TracerBoolConversionError as err:
        if isinstance(err, autograph.AutographError) or autograph.is_converted(target) or \
                autograph.convert(target) is None:
            raise
    return _trace_once(autograph.active(fn), args, name)


def _trace_once(fn: Callable, args: tuple, name: str | None) -> TracedFunction:
    check_arity(fn, args)
    capture = implicit.active()
    if capture is not None:
        capture.scan(fn)             # what fn reads from outside becomes implicit arguments or guards
    leaves, in_tree = tree_flatten(tuple(args))
    types = [abstract_leaf(x) for x in leaves]
    function, builder = new_function(name or getattr(fn, "__name__", "fn"), [t.as_strong() for t in types])
    tracers = [Tracer(v, weak=t.weak) for v, t in zip(function.args, types, strict=True)]
    with builder, contextlib.ExitStack() as contexts:
        for context in TRACE_CONTEXTS:
            contexts.enter_context(context(fn))
        out = fn(*tree_unflatten(in_tree, tracers))
        out_leaves, out_tree = tree_flatten(out)
        with builder.at(_definition_location(fn)):
            builder.ret([_output_value(x) for x in out_leaves])
    function, captured = close_over(function)
    return TracedFunction(recognize_idioms(function), in_tree, out_tree, captured)


def check_arity(fn: Callable, args: tuple) -> None:
    """ArgumentError, naming the function, when `fn(*args)` has the wrong arguments."""
    try:
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):
        return                                   # builtins without a signature: let the call say
    try:
        signature.bind(*args)
    except TypeError as err:
        name = getattr(fn, "__name__", "the function")
        raise ArgumentError(f"{name} cannot be called with {len(args)} positional argument(s): {err}") from None


def close_over(function: Function) -> tuple[Function, list[Value]]:
    """Closure conversion: values of enclosing functions that `function` uses (a traced
    closure over an outer tracer) become extra trailing arguments, so every function and
    region is self-contained; returns the new function and the outer values to pass."""
    captured = free_values(function.body)
    if not captured:
        return function, []
    closed, builder = new_function(function.name, function.input_types + [v.type for v in captured])
    n = len(function.args)
    with builder:
        outs = inline_block(function.body, closed.args[:n], dict(zip(captured, closed.args[n:], strict=True)))
        with builder.at(function.body.terminator.loc):
            builder.ret(outs)
    return closed, captured


def _definition_location(fn) -> Location:
    """Where `fn` is defined: the location given to its `return` (the function's own
    frame is gone by the time its outputs are known)."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None or code.co_filename.startswith(_internal_dirs()):
        return user_location()
    return Location(_display_path(code.co_filename), code.co_firstlineno, code.co_name)


def _output_value(x) -> Value:
    if isinstance(x, Tracer):
        return x.value
    if CONTROL_FLOW_CONVERTER and isinstance(x, CONTROL_FLOW_CONVERTER[0].Undefined):
        x.fail()                  # a name converted control flow left without a value
    if isinstance(x, (np.ndarray, np.generic, bool, int, float)):
        return api.as_value(np.asarray(x))
    raise ArgumentError(f"the traced function returned an object of type {type(x).__name__}; "
                        "return arrays, scalars or pytrees of them")
