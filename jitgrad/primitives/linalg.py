"""dot_general: the one contraction primitive (matmul, batched matmul, matrix-vector,
inner and outer products), with XLA's dimension numbers.

`contract = (lhs_axes, rhs_axes)` are summed over, `batch = (lhs_axes, rhs_axes)` are
paired; the result's axes are batch, then lhs free axes, then rhs free axes. The
transpose rules are the classic ones (JAX's `_dot_general_transpose_lhs/rhs`): the
cotangent of one operand is another dot_general followed by a transpose.
"""
from __future__ import annotations

import math

import numpy as np

from jitgrad.errors import DTypeError, ShapeError
from jitgrad.ir import DType, TensorType
from .base import Contraction, Primitive, defbilinear


def _free_axes(ndim: int, *used) -> list[int]:
    taken = {a for axes in used for a in axes}
    return [a for a in range(ndim) if a not in taken]


def _dot_infer(lhs: TensorType, rhs: TensorType, *, contract, batch):
    (lc, rc), (lb, rb) = contract, batch
    if lhs.dtype != rhs.dtype:
        raise DTypeError(f"dot_general: operand dtypes {lhs.dtype} and {rhs.dtype} differ")
    if lhs.dtype in (DType.bool, DType.f16, DType.bf16):
        # NumPy's products of these accumulate in a wider type: contract in int64/float32
        # and convert (numpy_api does), never in the narrow type itself
        raise DTypeError(f"dot_general is not defined for {lhs.dtype} operands")
    if len(lc) != len(rc) or len(lb) != len(rb):
        raise ShapeError("dot_general: contracting/batch axis lists have different lengths")
    for axes, t in ((lc, lhs), (lb, lhs), (rc, rhs), (rb, rhs)):
        if any(not 0 <= a < t.ndim for a in axes):
            raise ShapeError(f"dot_general: axes {tuple(axes)} out of range for shape {t.shape}")
    for a, b in zip(lc, rc, strict=True):
        if lhs.shape[a] != rhs.shape[b]:
            raise ShapeError(f"shapes {lhs.shape} and {rhs.shape} don't multiply: dimension {a} "
                             f"({lhs.shape[a]}) != dimension {b} ({rhs.shape[b]})")
    for a, b in zip(lb, rb, strict=True):
        if lhs.shape[a] != rhs.shape[b]:
            raise ShapeError(f"shapes {lhs.shape} and {rhs.shape}: batch dimensions {a} and {b} differ")
    shape = ([lhs.shape[a] for a in lb] + [lhs.shape[a] for a in _free_axes(lhs.ndim, lc, lb)]
             + [rhs.shape[a] for a in _free_axes(rhs.ndim, rc, rb)])
    return [TensorType(tuple(shape), lhs.dtype)]


def _dot_impl(lhs, rhs, *, contract, batch):
    """Reference: permute to (batch, free, contract) x (batch, contract, free), matmul."""
    (lc, rc), (lb, rb) = contract, batch
    lf, rf = _free_axes(lhs.ndim, lc, lb), _free_axes(rhs.ndim, rc, rb)
    b = math.prod(lhs.shape[a] for a in lb)
    m, k, n = (math.prod(lhs.shape[a] for a in lf), math.prod(lhs.shape[a] for a in lc),
               math.prod(rhs.shape[a] for a in rf))
    a = np.transpose(lhs, [*lb, *lf, *lc]).reshape(b, m, k)
    c = np.transpose(rhs, [*rb, *rc, *rf]).reshape(b, k, n)
    out_shape = [lhs.shape[x] for x in lb] + [lhs.shape[x] for x in lf] + [rhs.shape[x] for x in rf]
    return np.matmul(a, c).reshape(out_shape).astype(lhs.dtype)


dot_general_p = Primitive("dot_general", _dot_infer, _dot_impl,
                          doc="Generalized tensor contraction (XLA dimension numbers).")
dot_general_p.lowering = Contraction()


def dot_general(lhs, rhs, contract, batch=((), ())):
    contract = (tuple(int(a) for a in contract[0]), tuple(int(a) for a in contract[1]))
    batch = (tuple(int(a) for a in batch[0]), tuple(int(a) for a in batch[1]))
    return dot_general_p.bind(lhs, rhs, contract=contract, batch=batch)


def _consecutive(*lengths):
    start, out = 0, []
    for n in lengths:
        out.append(list(range(start, start + n)))
        start += n
    return out


def _transpose_lhs(ct, x_type, y, contract, batch, swap_ans=False):
    from .structural import transpose
    (xc, yc), (xb, yb) = contract, batch
    x_kept = _free_axes(x_type.ndim, xc, xb)
    y_kept = _free_axes(y.type.ndim, yc, yb)
    if swap_ans:
        ans_batch, ans_y, _ = _consecutive(len(xb), len(y_kept), len(x_kept))
    else:
        ans_batch, _, ans_y = _consecutive(len(xb), len(x_kept), len(y_kept))
    dims = ((tuple(ans_y), tuple(y_kept)), (tuple(ans_batch), tuple(yb)))
    xc_sorted_by_y = [xc[i] for i in np.argsort(yc)]
    out_axes = [int(a) for a in np.argsort(list(xb) + x_kept + xc_sorted_by_y)]
    # dot(ct, y) has axes (batch, ct free, y free); dot(y, ct) has (batch, y free, ct free).
    # When the transpose below would just swap the free groups, emit dot(y, ct) instead.
    nb, n_ct_free = len(ans_batch), ct.type.ndim - len(ans_batch) - len(ans_y)
    n_y_free = y.type.ndim - len(yb) - len(yc)
    swapped_axes = [a if a < nb else (a + n_y_free if a < nb + n_ct_free else a - n_ct_free) for a in out_axes]
    if swapped_axes == list(range(len(out_axes))):
        return dot_general(y, ct, (dims[0][1], dims[0][0]), (dims[1][1], dims[1][0]))
    return transpose(dot_general(ct, y, dims[0], dims[1]), tuple(out_axes))


def _dot_transpose_lhs(ct, lhs, rhs, *, contract, batch):
    return _transpose_lhs(ct, lhs.type, rhs, contract, batch)


def _dot_transpose_rhs(ct, lhs, rhs, *, contract, batch):
    swapped_contract = (contract[1], contract[0])
    swapped_batch = (batch[1], batch[0])
    return _transpose_lhs(ct, rhs.type, lhs, swapped_contract, swapped_batch, swap_ans=True)


defbilinear(dot_general_p, _dot_transpose_lhs, _dot_transpose_rhs)
