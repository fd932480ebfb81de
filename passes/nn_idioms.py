"""The NumPy idioms people write for CNNs, recognized as the nn primitives.

Two passes, each IR -> IR, that only ever replace a value by the same mathematical
function of the same operands (a program that does not match a pattern exactly is left
alone):

`nn-conv-idioms` (`RecognizeConvolutions`): a sum of products of shifted windows of an
input with a kernel becomes `conv_general_dilated`:

- `sliding_window_view(x, window, axis)` (traced as one `gather` per windowed axis with
  the constant indices `position * stride + tap * dilation + offset`, then a transpose)
  contracted with a weight by `np.einsum` or `np.tensordot` (a `dot_general`), possibly
  through transposes and slices of the window view (`[..., ::s, ::s]`: window strides;
  a step on the tap axes: kernel dilation; a start: cropping). The contraction's batch
  axis, when it has one, is the feature-group axis (depthwise and grouped convolutions);
  a `np.pad` with zeros in front of the windows becomes the convolution's padding.
- `np.pad` then shifted slices, each multiplied by a weight and summed
  (`sum(w[i, j] * xp[:, i:i+H, j:j+W] ...)`, or `np.einsum("nchw,oc->nohw",
  xp[:, :, i:i+H, j:j+W], w[:, :, i, j])` per offset): every kernel offset of a full
  grid appears exactly once, the weights are stacked into the kernel; the other
  summands of the sum (a bias) are added to the convolution. With scalar weights it
  takes two or more spatial axes and a weight that is not a constant (a learnable
  kernel): a 1-d stencil or a fixed filter is faster as the fused elementwise loop
  it is, and has no weight gradient to gain.

It runs on every traced function, before differentiation (`tracing.tracer` calls
`recognize_idioms` at the end of each trace): a convolution's derivatives are then
convolutions (its transpose rules), where the unrecognized program's are scatter-adds
of gathers and pads of products. Recognizing after differentiation would find the
forward pattern and leave the backward pass as it was.

`nn-pool-idioms` (`RecognizePooling`): `x.reshape(N, C, H//k, k, W//k, k).max(axis=(3,
5))` (and `.sum`, so `.mean`) becomes `reduce_window_max` / `reduce_window_sum` with
window and stride k. It runs in the optimization pipeline, after differentiation,
deliberately: `reduce_max`'s derivative shares the gradient of a tied window evenly
(jitgrad's convention for maxima, docs/gradient-conventions.md), while
`reduce_window_max`'s gives it all to the first maximum. Rewriting the differentiated
program gives the forward pass the pooling kernel and keeps the derivative the user's
program defines, ties included; for sums, the transpose of a `reduce_sum` (a broadcast)
is also cheaper than that of a `reduce_window_sum` (an interior pad and a window sum).

Both leave the program alone where the device has no kernel for the primitive, for
integer and half-precision dtypes (the primitives refuse them), and inside
`recognizing(False)` (benchmarks compare the two programs; compiled code is cached, so
the block must wrap a function's first call).
"""
from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Sequence

import numpy as np

from jitgrad.config import target_device
from jitgrad.ir import DType, Function, Operation, Value
from jitgrad.primitives import convolution as C
from jitgrad.primitives.elementwise import add
from jitgrad.primitives.structural import concatenate, reshape, transpose
from jitgrad.ir.rewrite import Rewriter
from .manager import FunctionPass
from .simplify import DeadCodeElimination, splat

_ENABLED = [True]
_FLOATS = (DType.f32, DType.f64)


@contextlib.contextmanager
def recognizing(enabled: bool = True):
    """Within this block the idioms are recognized (or, with False, left as written)."""
    saved = _ENABLED[0]
    _ENABLED[0] = enabled
    try:
        yield
    finally:
        _ENABLED[0] = saved


def _active(primitive: str) -> bool:
    return _ENABLED[0] and C.has_kernel(primitive, target_device())


def _constant(v: Value) -> Optional[np.ndarray]:
    op = v.defining_op
    return op.attrs["value"] if op is not None and op.name == "constant" else None


# --------------------------------------------------------------------------- window views

@dataclass(frozen=True)
class Window:
    """One windowed axis of the source: position p and tap t read source index
    `offset + stride * p + dilation * t`."""

    offset: int
    stride: int
    dilation: int
    positions: int
    taps: int


@dataclass
class WindowView:
    """A value whose every element is an element of `source`: axis k of the value is
    ("plain", a) — source axis a, whole — or ("pos", a) / ("tap", a) — the position or
    the tap of the window over source axis a (`windows[a]`)."""

    source: Value
    axes: list[tuple[str, int]]
    windows: dict[int, Window] = field(default_factory=dict)


def _plain(v: Value) -> WindowView:
    return WindowView(v, [("plain", a) for a in range(v.type.ndim)])


def _affine_windows(indices: np.ndarray, n: int) -> Optional[Window]:
    """The window whose gather indices are `indices` (positions x taps), when they are
    exactly `offset + stride * p + dilation * t` inside [0, n)."""
    if indices is None or indices.ndim != 2 or 0 in indices.shape:
        return None
    positions, taps = indices.shape
    offset = int(indices[0, 0])
    stride = int(indices[1, 0]) - offset if positions > 1 else 1
    dilation = int(indices[0, 1]) - offset if taps > 1 else 1
    expected = offset + stride * np.arange(positions)[:, None] + dilation * np.arange(taps)[None, :]
    if stride < 1 or dilation < 1 or offset < 0 or expected.max() >= n or not np.array_equal(indices, expected):
        return None
    return Window(offset, stride, dilation, positions, taps)


def window_view(v: Value) -> WindowView:
    """What `v` is as windows of a source array, seen through window gathers,
    transposes and slices (a view without windows: `v` itself)."""
    op = v.defining_op
    if op is None:
        return _plain(v)
    if op.name == "gather":
        inner, axis = window_view(op.operands[0]), op.attrs["axis"]
        role, a = inner.axes[axis]
        found = _affine_windows(_constant(op.operands[1]), op.operands[0].type.shape[axis])
        if role != "plain" or found is None:
            return _plain(v)
        axes = inner.axes[:axis] + [("pos", a), ("tap", a)] + inner.axes[axis + 1:]
        return WindowView(inner.source, axes, {**inner.windows, a: found})
    if op.name == "transpose":
        inner = window_view(op.operands[0])
        return WindowView(inner.source, [inner.axes[p] for p in op.attrs["permutation"]], inner.windows)
    if op.name == "slice":
        return _sliced(window_view(op.operands[0]), op, v) or _plain(v)
    return _plain(v)


def _sliced(inner: WindowView, op: Operation, v: Value) -> Optional[WindowView]:
    windows = dict(inner.windows)
    for k, ((role, a), start, step, n) in enumerate(zip(inner.axes, op.attrs["start_indices"], op.attrs["strides"],
                                                      v.type.shape, strict=True)):
        size = op.operands[0].type.shape[k]
        if role == "plain":
            if (start, step, n) != (0, 1, size):
                return None
            continue
        if n == 0:
            return None
        w = windows[a]
        if role == "pos":
            windows[a] = Window(w.offset + w.stride * start, w.stride * step, w.dilation, n, w.taps)
        else:
            windows[a] = Window(w.offset + w.dilation * start, w.stride, w.dilation * step, w.positions, n)
    return WindowView(inner.source, list(inner.axes), windows)


# --------------------------------------------------------------------------- convolutions

@dataclass
class ConvolutionPlan:
    """A convolution computing a value, in the value's terms. `source` axes: `batch`,
    `group`, `feature` (each None when absent) and the spatial axes `spatial` (ascending);
    `windows[a]` per spatial axis; `padding_before[a]`: zeros a `pad` put before the
    source. `kernel`: the weight with axes `kernel_group`, `kernel_out`, `kernel_in`
    (None when absent) and `kernel_taps[a]` per spatial axis. `out_names`: the value's
    axes, each "g", "n", "o" or a spatial axis number."""

    source: Value
    batch: Optional[int]
    group: Optional[int]
    feature: Optional[int]
    spatial: list[int]
    windows: dict[int, Window]
    padding_before: dict[int, int]
    kernel: Value
    kernel_group: Optional[int]
    kernel_out: Optional[int]
    kernel_in: Optional[int]
    kernel_taps: dict[int, int]
    out_names: list


def _fold_zero_pad(source: Value, spatial: Sequence[int]) -> tuple[Value, dict[int, int]]:
    """A `pad` with zeros in front of the windows becomes the convolution's padding: the
    unpadded array and the zeros before each spatial axis (the zeros after are implied by
    the windows)."""
    op = source.defining_op
    if op is None or op.name != "pad" or any(op.attrs["interior"]):
        return source, {a: 0 for a in spatial}
    low, high = op.attrs["low"], op.attrs["high"]
    if any(lo < 0 or hi < 0 for lo, hi in zip(low, high, strict=True)) or \
            any(low[a] or high[a] for a in range(source.type.ndim) if a not in spatial):
        return source, {a: 0 for a in spatial}
    return op.operands[0], {a: low[a] for a in spatial}


def _plan_from_dot(op: Operation, operands: Sequence[Value]) -> Optional[ConvolutionPlan]:
    """The convolution a `dot_general` of a window view with a kernel computes, if it is one."""
    (batch_l, batch_r), (contract_l, contract_r) = op.attrs["batch"], op.attrs["contract"]
    for side in (0, 1):
        view = window_view(operands[side])
        if view.windows:
            plan = _plan_for_view(view, operands[1 - side], side,
                                  (batch_l, batch_r)[side], (batch_l, batch_r)[1 - side],
                                  (contract_l, contract_r)[side], (contract_l, contract_r)[1 - side])
            if plan is not None:
                return plan
    return None


def _plan_for_view(view: WindowView, kernel: Value, side: int, view_batch, kernel_batch, view_contract,
                   kernel_contract) -> Optional[ConvolutionPlan]:
    if len(view_batch) > 1:
        return None
    roles = {"batch": None, "group": None, "feature": None}
    kernel_in = kernel_group = None
    kernel_taps: dict[int, int] = {}
    view_free = []
    for k, (role, a) in enumerate(view.axes):
        if k in view_batch:
            if role != "plain":
                return None
            roles["group"], kernel_group = a, kernel_batch[view_batch.index(k)]
        elif k in view_contract:
            partner = kernel_contract[view_contract.index(k)]
            if role == "tap":
                kernel_taps[a] = partner
            elif role == "plain" and roles["feature"] is None:
                roles["feature"], kernel_in = a, partner
            else:
                return None
        elif role == "tap":
            return None
        elif role == "plain":
            if roles["batch"] is not None:
                return None
            roles["batch"] = a
            view_free.append("n")
        else:
            view_free.append(a)
    kernel_free = [k for k in range(kernel.type.ndim) if k not in kernel_contract and k not in kernel_batch]
    if len(kernel_free) > 1:
        return None
    group, feature = roles["group"], roles["feature"]
    if group is not None and feature is not None and feature != group + 1:
        return None                      # group and feature axes must merge (group-major)
    spatial = sorted(view.windows)
    source, before = _fold_zero_pad(view.source, spatial)
    free_names = (["o"] if kernel_free else [])
    out_names = (["g"] if group is not None else []) + \
        (view_free + free_names if side == 0 else free_names + view_free)
    return ConvolutionPlan(source, roles["batch"], group, feature, spatial, dict(view.windows), before,
                           kernel, kernel_group, kernel_free[0] if kernel_free else None, kernel_in,
                           kernel_taps, out_names)


def _insert_unit_axes(names: list, shape: Optional[list] = None) -> None:
    """A missing batch axis ("n") first and a missing feature axis ("f") right after the
    batch axis, each of size 1 (`shape`, when given, is extended alongside `names`): a
    single-channel image is laid out (N, 1, H, W), the kernels' fastest layout."""
    for name in ("n", "f"):
        if name not in names:
            at = 0 if name == "n" else names.index("n") + 1
            names.insert(at, name)
            if shape is not None:
                shape.insert(at, 1)


def emit_convolution(plan: ConvolutionPlan, result_shape: tuple) -> Optional[Value]:
    """The convolution the plan describes, laid out as the value it replaces (None when
    the shapes do not come out as `result_shape`, which leaves the value alone)."""
    x = plan.source
    shape = list(x.type.shape)
    names: list = [None] * x.type.ndim
    for a in plan.spatial:
        names[a] = a
    if plan.batch is not None:
        names[plan.batch] = "n"
    if plan.group is not None and plan.feature is not None:
        shape[plan.group:plan.group + 2] = [shape[plan.group] * shape[plan.feature]]
        names[plan.group:plan.group + 2] = ["f"]
    elif plan.group is not None or plan.feature is not None:
        names[plan.group if plan.group is not None else plan.feature] = "f"
    _insert_unit_axes(names, shape)
    lhs = reshape(x, tuple(shape))
    lhs_spec = (names.index("n"), names.index("f"), *(names.index(a) for a in plan.spatial))

    w = plan.kernel
    groups = w.type.shape[plan.kernel_group] if plan.kernel_group is not None else 1
    outs = w.type.shape[plan.kernel_out] if plan.kernel_out is not None else 1
    ins = w.type.shape[plan.kernel_in] if plan.kernel_in is not None else 1
    order = [k for k in (plan.kernel_group, plan.kernel_out, plan.kernel_in) if k is not None]
    order += [plan.kernel_taps[a] for a in plan.spatial]
    taps = tuple(w.type.shape[plan.kernel_taps[a]] for a in plan.spatial)
    rhs = reshape(transpose(w, tuple(order)), (groups * outs, ins, *taps))

    strides, padding, dilations = [], [], []
    for a in plan.spatial:
        win = plan.windows[a]
        lo = plan.padding_before[a] - win.offset
        hi = (win.positions - 1) * win.stride + win.dilation * (win.taps - 1) + 1 - x.type.shape[a] - lo
        strides.append(win.stride)
        padding.append((lo, hi))
        dilations.append(win.dilation)

    has_group = plan.group is not None or plan.kernel_group is not None
    if has_group:
        layout = ["f", "n", *plan.spatial]
    else:
        layout = ["f" if name == "o" else name for name in plan.out_names]
        _insert_unit_axes(layout)
    out_spec = (layout.index("n"), layout.index("f"), *(layout.index(a) for a in plan.spatial))
    out = C.conv_general_dilated(lhs, rhs, strides, padding, None, dilations,
                                 (lhs_spec, (0, 1, *range(2, 2 + len(plan.spatial))), out_spec), groups)
    if has_group:
        out = reshape(out, (groups, outs, *out.type.shape[1:]))
        layout = ["g", "o", *layout[1:]]
        target = plan.out_names + [name for name in layout if name not in plan.out_names]
        out = transpose(out, tuple(layout.index(name) for name in target))
    return reshape(out, result_shape) if math.prod(out.type.shape) == math.prod(result_shape) and \
        [n for n in out.type.shape if n != 1] == [n for n in result_shape if n != 1] else None


def _convolution_rule(op: Operation, operands: list[Value], read, users: dict) -> Optional[list[Value]]:
    if op.name == "dot_general":
        plan = _plan_from_dot(op, operands)
        if plan is None or not _float_operands(plan.source, plan.kernel):
            return None
        out = emit_convolution(plan, op.result.type.shape)
    elif op.name == "add" and op.result.type.dtype in _FLOATS:
        out = _shifted_slices(op, read, users)
    else:
        return None
    return None if out is None else [out]


def _float_operands(x: Value, w: Value) -> bool:
    return x.type.dtype in _FLOATS and w.type.dtype == x.type.dtype


# --------------------------------------------------------------------------- shifted slices

def _terms(v: Value, users: dict, root: bool = True) -> list[Value]:
    """The summands of a tree of `add`s (an intermediate sum used elsewhere too stays a
    summand: it is computed anyway)."""
    op = v.defining_op
    if op is not None and op.name == "add" and (root or len(users.get(v, ())) <= 1):
        return _terms(op.operands[0], users, False) + _terms(op.operands[1], users, False)
    return [v]


def _inside_a_sum(v: Value, users: dict) -> bool:
    """Is `v` only an intermediate of a larger sum (whose root sees all its summands)?"""
    return len(users.get(v, ())) == 1 and users[v][0].name == "add"


@dataclass(frozen=True)
class _Term:
    """One summand `value = F(slice(source), weight)`: `kind` says what F is, the same for
    all summands of one convolution ("scale": an elementwise product with a scalar
    weight; ("dot", batch, contract, side, permutation): a dot_general, then a
    transpose when `permutation` is not None); `product_shape`: the dot_general's."""

    value: Value
    source: Value
    start: tuple
    sizes: tuple
    strides: tuple
    weight: Value
    kind: tuple
    product_shape: tuple

    @property
    def key(self) -> tuple:
        """Summands with equal keys may be taps of one convolution."""
        return self.source, self.sizes, self.strides, self.kind, self.weight.type


def _slice_of(v: Value) -> tuple[Value, tuple, tuple]:
    op = v.defining_op
    if op is not None and op.name == "slice":
        return op.operands[0], tuple(op.attrs["start_indices"]), tuple(op.attrs["strides"])
    return v, (0,) * v.type.ndim, (1,) * v.type.ndim


def _scalar_broadcast(v: Value) -> Optional[Value]:
    op = v.defining_op
    if op is not None and op.name == "broadcast_in_dim" and op.operands[0].type.ndim == 0:
        return op.operands[0]
    return None


def _term(v: Value) -> Optional[_Term]:
    op = v.defining_op
    if op is not None and op.name == "mul":
        for k in (0, 1):
            weight = _scalar_broadcast(op.operands[k])
            if weight is not None:
                source, start, strides = _slice_of(op.operands[1 - k])
                return _Term(v, source, start, op.operands[1 - k].type.shape, strides, weight, ("scale",),
                             v.type.shape)
        return None
    product, permutation = v, None
    if op is not None and op.name == "transpose":
        permutation, product = op.attrs["permutation"], op.operands[0]
        op = product.defining_op
    if op is None or op.name != "dot_general":
        return None
    for side in (0, 1):
        data = op.operands[side].defining_op
        if data is not None and data.name == "slice":
            source, start, strides = _slice_of(op.operands[side])
            kind = ("dot", op.attrs["batch"], op.attrs["contract"], side, permutation)
            return _Term(v, source, start, op.operands[side].type.shape, strides, op.operands[1 - side], kind,
                         product.type.shape)
    return None


def _stacked_kernel(weights: list[Value], taps: tuple) -> Value:
    """The weights of the taps (row-major) stacked into one array (*taps, *weight shape)."""
    shape = weights[0].type.shape
    parts = [reshape(w, (1, *shape)) for w in weights]
    stacked = parts[0] if len(parts) == 1 else concatenate(parts, 0)
    return reshape(stacked, (*taps, *shape))


def _shifted_slices(op: Operation, read, users: dict) -> Optional[Value]:
    """A sum holding, for every offset of a full grid, a slice of one array shifted by
    that offset times a weight: those summands become one convolution with the stacked
    weights, the other summands are added to it. `op` is the source program's `add`,
    the root of the sum; `read` maps its values to the new program's."""
    result = op.results[0]
    if _inside_a_sum(result, users):
        return None
    groups: dict[tuple, list[_Term]] = {}
    others = []
    for v in _terms(result, users):
        if splat(v) == 0:
            continue                                # Python's sum starts at 0
        term = _term(v)
        if term is None:
            others.append(v)
        else:
            groups.setdefault(term.key, []).append(term)
    parts = []
    for terms in groups.values():
        conv = _grid_convolution(terms, read) if len(terms) > 1 else None
        if conv is None:
            others += [t.value for t in terms]
        else:
            parts.append(conv)
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:] + [read(v) for v in others]:
        out = add(out, part)
    return out


def _grid_convolution(terms: list[_Term], read) -> Optional[Value]:
    """The convolution that sums `terms` (which share a key), when their offsets form a
    full grid, each point once."""
    first = terms[0]
    x = first.source
    spatial = [a for a in range(x.type.ndim)
               if len({t.start[a] for t in terms}) > 1 or first.sizes[a] != x.type.shape[a] or first.strides[a] != 1]
    windows, grid = {}, []
    for a in spatial:
        offsets = sorted({t.start[a] for t in terms})
        dilation = offsets[1] - offsets[0] if len(offsets) > 1 else 1
        if offsets != list(range(offsets[0], offsets[0] + dilation * len(offsets), dilation)):
            return None
        windows[a] = Window(offsets[0], first.strides[a], dilation, first.sizes[a], len(offsets))
        grid.append(offsets)
    by_offset = {tuple(t.start[a] for a in spatial): t for t in terms}
    if not spatial or len(by_offset) != len(terms) or len(terms) != math.prod(len(o) for o in grid):
        return None
    m = len(spatial)
    view = WindowView(read(x), [("pos", a) if a in windows else ("plain", a) for a in range(x.type.ndim)]
                      + [("tap", a) for a in spatial], windows)
    tap_axes = tuple(range(x.type.ndim, x.type.ndim + m))
    permutation = None
    if first.kind[0] == "scale":
        if m < 2 or all(splat(t.weight) is not None for t in terms):
            return None            # a stencil, or a fixed filter: the fused elementwise loop is faster
        side, batch, contract = 0, ((), ()), (tap_axes, tuple(range(m)))
    else:
        _, (batch_l, batch_r), (contract_l, contract_r), side, permutation = first.kind
        shift = lambda axes: tuple(k + m for k in axes)          # the kernel's own axes follow its taps
        view_batch, view_contract = (batch_l, batch_r)[side], (contract_l, contract_r)[side]
        if any(a in view_contract or a in view_batch for a in spatial):
            return None
        batch = (tuple(view_batch), shift((batch_l, batch_r)[1 - side]))
        contract = (tuple(view_contract) + tap_axes, shift((contract_l, contract_r)[1 - side]) + tuple(range(m)))
    kernel = _stacked_kernel([read(by_offset[offset].weight) for offset in itertools.product(*grid)],
                             tuple(len(o) for o in grid))
    plan = _plan_for_view(view, kernel, side, *batch, *contract)
    out = None if plan is None else emit_convolution(plan, first.product_shape)
    if out is None or permutation is None:
        return out
    return transpose(out, permutation)


# --------------------------------------------------------------------------- pooling

def _split_axes(before: tuple, after: tuple) -> Optional[list[tuple[int, int]]]:
    """How a reshape from `before` to `after` splits each axis, when it only splits axes
    (row-major): per axis of `before`, (first axis in `after`, window) — window 0 for an
    axis kept whole."""
    out, j = [], 0
    for n in before:
        if j < len(after) and after[j] == n:
            out.append((j, 0))
            j += 1
        elif j + 1 < len(after) and after[j] * after[j + 1] == n:
            out.append((j, after[j + 1]))
            j += 2
        else:
            return None
    return out if j == len(after) else None


MAX_POOL_WINDOW = 16
"""Taps per axis of a recognized pooling window. A longer "window" is a reduction written
as a reshape (`v.reshape(500, -1).sum(axis=1)`): the reduction kernel sums it in pairwise
blocks, as accurately as NumPy, where a window kernel adds its taps one after another."""


_POOLS = {"reduce_max": ("reduce_window_max", C.reduce_window_max),
          "reduce_sum": ("reduce_window_sum", C.reduce_window_sum)}


def _pooling_rule(op: Operation, operands: list[Value], read, users: dict) -> Optional[list[Value]]:
    if op.name not in _POOLS or not _active(_POOLS[op.name][0]):
        return None
    producer = operands[0].defining_op
    if producer is None or producer.name != "reshape":
        return None
    x = producer.operands[0]
    if x.type.dtype not in _FLOATS:
        return None
    split = _split_axes(x.type.shape, operands[0].type.shape)
    if split is None:
        return None
    windowed = [(at, k) for at, k in split if k]
    if not windowed or set(op.attrs["axes"]) != {at + 1 for at, _ in windowed}:
        return None
    if any(k > MAX_POOL_WINDOW for _, k in windowed):
        return None
    window = tuple(k if k else 1 for _, k in split)
    out = _POOLS[op.name][1](x, window, window, ((0, 0),) * x.type.ndim)
    return [out] if out.type.shape == op.result.type.shape else None


# --------------------------------------------------------------------------- passes

class _IdiomRewriter(Rewriter):
    """The rewriting driver with one rule for every op, `rule(op, new_operands, read,
    users)`: `read` maps the source program's values to the new program's, `users` lists
    the ops that use each source value. `changed` records whether a rule replaced
    anything."""

    def __init__(self, rule, users: dict):
        super().__init__()
        self._rule, self._users, self.changed = rule, users, False

    def rule_for(self, op: Operation):
        return self._apply

    def _apply(self, rewriter, op: Operation, inputs: list):
        out = self._rule(op, inputs, self.read, self._users)
        self.changed = self.changed or out is not None
        return out


def _rewrite_if_any(fn: Function, rule) -> Function:
    """`fn` rewritten by `rule`, its dead ops dropped; `fn` itself when nothing matched."""
    users: dict[Value, list[Operation]] = {}
    for op in fn.walk():
        for v in op.operands:
            users.setdefault(v, []).append(op)
    rewriter = _IdiomRewriter(rule, users)
    out = rewriter.rewrite_function(fn)
    return DeadCodeElimination().run(out) if rewriter.changed else fn


def _may_hold_a_convolution(names: set) -> bool:
    """Has a program with these ops a window view contracted with a kernel, or a sum of
    products of slices? (Most traced programs have neither: they are not rebuilt.)"""
    return ("gather" in names and "dot_general" in names) or \
        ("slice" in names and "add" in names and bool(names & {"mul", "dot_general"}))


@dataclass(frozen=True)
class RecognizeConvolutions(FunctionPass):
    """Window views contracted with a kernel, and sums of weighted shifted slices, become
    `conv_general_dilated` (module docstring)."""

    name: ClassVar[str] = "nn-conv-idioms"

    def run(self, fn: Function) -> Function:
        if not _active("conv_general_dilated") or not _may_hold_a_convolution({op.name for op in fn.walk()}):
            return fn
        return _rewrite_if_any(fn, _convolution_rule)


@dataclass(frozen=True)
class RecognizePooling(FunctionPass):
    """Reshape-then-max (or -sum) over the split axes becomes `reduce_window_max` (or
    `reduce_window_sum`) with window = stride (module docstring)."""

    name: ClassVar[str] = "nn-pool-idioms"

    def run(self, fn: Function) -> Function:
        if not any(op.name == "reshape" for op in fn.walk()):
            return fn
        return _rewrite_if_any(fn, _pooling_rule)


def recognize_idioms(fn: Function) -> Function:
    """What the tracer runs on every traced function: the convolution idioms."""
    return RecognizeConvolutions().run(fn)
