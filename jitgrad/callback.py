"""`jitgrad.pure_callback`: any NumPy/SciPy (or other Python) function, called from
compiled code on the host.

    def bessel(v, x):
        return jitgrad.pure_callback(scipy.special.jv, np.empty_like(x), v, x)

Traced, the call becomes one `pure_callback` op: a kernel of its own (a `KernelKind`)
whose generated code calls back into Python through a ctypes trampoline with the
addresses of its operand and result buffers; Python views them as NumPy arrays, runs the
function, checks its results against `result_shape_dtypes`, and copies them into the
result buffers. The compiled code is called through ctypes (which releases the GIL) or
the native call path (which holds it); either way the trampoline takes the GIL, so the
function may be any Python code. An exception in it is carried back and raised by the
compiled function's call. The reference interpreter calls the function directly.

The function must be pure (same inputs, same outputs, no side effects jitgrad must keep):
calls may be deduplicated or removed when their results are unused, as any pure op.
It has no derivative of its own; wrap it in `jitgrad.custom_vjp` (or `custom_jvp`) to
give one, whose rules may use `pure_callback` again.
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from jitgrad.errors import ArgumentError, CallbackError, GradientError, JitgradError
from jitgrad.ir import DType, OpDef, TensorType, Trait, current_builder, emit
from jitgrad.passes.batching import loop_over_slices, to_front
from jitgrad.primitives import reshape
from jitgrad.primitives.kernel_kind import KernelKind
from jitgrad.tracing.numpy_api import as_value
from jitgrad.tracing.pytree import tree_flatten, tree_unflatten
from jitgrad.tracing.tracer import Tracer, user_location


@dataclass(frozen=True)
class _Entry:
    function: Callable
    operand_types: tuple[TensorType, ...]
    result_types: tuple[TensorType, ...]
    result_tree: Any
    vmap_method: str = "sequential"

    def call(self, arrays) -> list[np.ndarray]:
        """The function on NumPy arrays, its results checked and cast to the declared types."""
        leaves, tree = tree_flatten(self.function(*arrays))
        if tree != self.result_tree:
            raise CallbackError(f"pure_callback: {_name(self.function)} returned results of structure {tree}, "
                                f"{self.result_tree} was declared")
        results = []
        for k, (leaf, t) in enumerate(zip(leaves, self.result_types, strict=True)):
            array = np.asarray(leaf)
            if array.shape != t.shape:
                raise CallbackError(f"pure_callback: result {k} of {_name(self.function)} has shape {array.shape}, "
                                    f"{t.shape} was declared")
            if not np.can_cast(array.dtype, t.dtype.numpy, "same_kind"):
                raise CallbackError(f"pure_callback: result {k} of {_name(self.function)} has dtype {array.dtype}, "
                                    f"which does not cast to the declared {t.dtype.numpy}")
            results.append(np.asarray(array, dtype=t.dtype.numpy))
        return results


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


_ENTRIES: list[_Entry] = []
_KEYS: dict[_Entry, int] = {}
_LOCK = threading.Lock()
_PENDING = threading.local()
"""The exception a callback raised on this thread during the current compiled call."""


def _register(entry: _Entry) -> int:
    with _LOCK:
        key = _KEYS.get(entry)
        if key is None:
            key = _KEYS[entry] = len(_ENTRIES)
            _ENTRIES.append(entry)
        return key


def _view(address: int, t: TensorType) -> np.ndarray:
    """The buffer at `address` as a writable array of type `t` (row-major)."""
    if t.size == 0 or not address:
        return np.empty(t.shape, t.dtype.numpy)
    nbytes = t.size * t.dtype.numpy.itemsize
    raw = (ctypes.c_char * nbytes).from_address(address)
    return np.frombuffer(raw, dtype=t.dtype.numpy).reshape(t.shape)


def _trampoline(key: int, buffers) -> int:
    """Called by generated code: operand buffers, then result buffers. 0 on success; on
    an exception, 1, with the results filled with NaN (or zero) and the exception kept
    for `raise_pending` on this thread."""
    entry = _ENTRIES[key]
    n = len(entry.operand_types)
    try:
        operands = [_view(buffers[k], t).copy() for k, t in enumerate(entry.operand_types)]
        for k, result in enumerate(entry.call(operands)):
            _view(buffers[n + k], entry.result_types[k])[...] = result
        return 0
    except BaseException as err:       # noqa: BLE001 - carried back to the caller
        if getattr(_PENDING, "error", None) is None:
            _PENDING.error = err
        for k, t in enumerate(entry.result_types):
            _view(buffers[n + k], t)[...] = np.nan if t.dtype.is_float else 0
        return 1


_TRAMPOLINE_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int64, ctypes.POINTER(ctypes.c_void_p))
_TRAMPOLINE = _TRAMPOLINE_TYPE(_trampoline)


def raise_pending() -> None:
    """Raise (once) what a callback raised on this thread during the last compiled call."""
    error = getattr(_PENDING, "error", None)
    if error is None:
        return
    _PENDING.error = None
    if isinstance(error, JitgradError):
        raise error
    raise CallbackError(f"the function of a pure_callback raised {type(error).__name__}: {error}") from error


def clear_pending() -> None:
    _PENDING.error = None


class PureCallbackKernel(KernelKind):
    """A call into Python: the CPU emitter passes the trampoline `address` the key and
    the buffers."""

    emitters = {"cpu": "jitgrad.backends.cpu.callback:emit_pure_callback"}
    cost = 1000

    @property
    def address(self) -> int:
        return ctypes.cast(_TRAMPOLINE, ctypes.c_void_p).value


def _infer(*operand_types, callback: int):
    entry = _ENTRIES[callback]
    if [(t.shape, t.dtype) for t in operand_types] != [(t.shape, t.dtype) for t in entry.operand_types]:
        raise JitgradError(f"pure_callback: operands {operand_types} do not match the registered {entry.operand_types}")
    return list(entry.result_types)


def _impl(*arrays, callback: int):
    return _ENTRIES[callback].call([np.array(a) for a in arrays])


def _no_derivative(primals, tangents, **attrs):
    raise GradientError("pure_callback has no derivative rule (jitgrad cannot differentiate Python code): wrap "
                        "the function in jitgrad.custom_vjp or jitgrad.custom_jvp to give one")


pure_callback_p = OpDef("pure_callback", _infer, traits=(Trait.PURE,),
                        doc="A call of a registered Python function on the host (jitgrad.pure_callback).")
pure_callback_p.impl = _impl
pure_callback_p.jvp = _no_derivative
pure_callback_p.lowering = PureCallbackKernel()

VMAP_METHODS = ("sequential", "expand_dims", "broadcast_all")


def _batch(operands, dims, *, callback):
    """vmap of a callback (JAX's `vmap_method`): "sequential" calls the function once per
    slice, in a loop; "expand_dims" once, the mapped operands with the slice axis first
    and the others with a first axis of length 1; "broadcast_all" once, every operand
    with the slice axis first. Either way its results must have the slice axis first."""
    entry = _ENTRIES[callback]
    if entry.vmap_method == "sequential":
        return loop_over_slices(pure_callback_p, operands, dims, callback=callback)
    size = next(v.shape[d] for v, d in zip(operands, dims) if d is not None)
    xs = [to_front(v, d, size) if d is not None or entry.vmap_method == "broadcast_all" else
          reshape(v, (1, *v.shape)) for v, d in zip(operands, dims, strict=True)]
    batched = _Entry(entry.function, tuple(v.type for v in xs),
                     tuple(TensorType((size, *t.shape), t.dtype) for t in entry.result_types), entry.result_tree,
                     entry.vmap_method)
    results = emit(pure_callback_p, *xs, callback=_register(batched))
    results = results if isinstance(results, list) else [results]
    return results, [0] * len(results)


pure_callback_p.batch = _batch


def _declared_types(result_shape_dtypes) -> tuple[list[TensorType], Any]:
    leaves, tree = tree_flatten(result_shape_dtypes, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
    types = []
    for leaf in leaves:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            raise ArgumentError("pure_callback: result_shape_dtypes must hold objects with .shape and .dtype (arrays, "
                                f"jitgrad.ShapeDtypeStruct), got {type(leaf).__name__}")
        try:
            dtype = DType.from_numpy(np.dtype(leaf.dtype))
        except (KeyError, TypeError):
            raise ArgumentError(f"pure_callback: dtype {leaf.dtype} is not supported by jitgrad") from None
        types.append(TensorType(tuple(int(d) for d in leaf.shape), dtype))
    return types, tree


@dataclass(frozen=True)
class ShapeDtypeStruct:
    """A result's shape and dtype, for `pure_callback`'s result_shape_dtypes."""

    shape: tuple
    dtype: Any


def pure_callback(callback: Callable, result_shape_dtypes, *args, vmap_method: str = "sequential"):
    """`callback(*args)` on NumPy arrays, from traced or compiled code: its results must
    have the shapes and dtypes of `result_shape_dtypes` (a pytree of arrays or
    `ShapeDtypeStruct`s), and come back in that structure. Called on arrays, it just
    calls `callback` and checks its results. `vmap_method` says how `jitgrad.vmap` calls
    it (JAX's: "sequential", "expand_dims" or "broadcast_all"; see `_batch`)."""
    if vmap_method not in VMAP_METHODS:
        raise ArgumentError(f"pure_callback: vmap_method must be one of {', '.join(VMAP_METHODS)}, "
                            f"not {vmap_method!r}")
    types, tree = _declared_types(result_shape_dtypes)
    if not any(isinstance(a, Tracer) for a in tree_flatten(args)[0]):
        arrays = [np.asarray(a) for a in args]
        entry = _Entry(callback, tuple(TensorType(a.shape, DType.from_numpy(a.dtype)) for a in arrays), tuple(types),
                       tree)
        return tree_unflatten(tree, entry.call(arrays))
    loc = user_location()
    with current_builder().at(loc):
        operands = [a.value if isinstance(a, Tracer) else as_value(np.asarray(a)) for a in args]
        operand_types = tuple(TensorType(v.type.shape, v.type.dtype) for v in operands)
        key = _register(_Entry(callback, operand_types, tuple(types), tree, vmap_method))
        results = emit(pure_callback_p, *operands, callback=key)
    results = results if isinstance(results, list) else [results]
    return tree_unflatten(tree, [Tracer(v) for v in results])


def has_callbacks(function) -> bool:
    """Whether a (final, inlined) IR function calls back into Python."""
    return any(op.opdef is pure_callback_p for op in function.body.ops)
