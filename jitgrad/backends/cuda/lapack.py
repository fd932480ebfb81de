"""CUDA kernels of the LAPACK primitives (`jitgrad/primitives/lapack.py`).

The GPU has no LAPACK here (no cuSOLVER binding), so each primitive is a generated
device kernel: one matrix of the batch per grid-stride iteration, run by one thread with
the matrix's working copy in the workspace. That is correct for any launch
configuration and fast enough for the small, batched matrices jitgrad programs
differentiate; large single matrices want cuSOLVER. The kernels follow the CPU's
contract (`jitgrad/backends/cpu/lapack.py`): a matrix the algorithm cannot factor (not
positive definite, exactly singular, no convergence) gives NaN in that matrix's results.

The algorithms live in modules of one family each: `lapack_lu` (cholesky,
triangular_solve, solve, slogdet), `lapack_jacobi` (eigh, svd, pinv), `lapack_qr` (qr,
eig). A primitive whose family has no kernel for the operand's dtype is refused with
the reason and the user's line.
"""
from __future__ import annotations

import importlib

from jitgrad.errors import UnsupportedOperationError

FAMILIES = {
    "cholesky": "lapack_lu", "triangular_solve": "lapack_lu", "solve": "lapack_lu", "slogdet": "lapack_lu",
    "eigh": "lapack_jacobi", "svd": "lapack_jacobi", "pinv": "lapack_jacobi",
    "qr": "lapack_qr", "eig": "lapack_qr",
}
"""Which module of this package holds each primitive's kernel (a function named
`emit_<primitive>(ec, op)`)."""


def _emitter(op):
    """The family's `emit_<primitive>`, or None where there is none for the operand's
    dtype (a family lists the primitives whose complex kernels exist in `COMPLEX`)."""
    family = FAMILIES.get(op.name)
    if family is None:
        return None
    try:
        module = importlib.import_module(f"{__package__}.{family}")
    except ModuleNotFoundError:
        return None
    if op.operands[0].type.dtype.is_complex and op.name not in getattr(module, "COMPLEX", ()):
        return None
    return getattr(module, f"emit_{op.name}", None)


def has_kernel(op) -> bool:
    """Whether `emit` compiles `op` for the GPU (the tests ask before they compare)."""
    return _emitter(op) is not None


def emit(ec, op) -> None:
    """The CUDA kernel of one LAPACK primitive (KernelKind emitter)."""
    emitter = _emitter(op)
    if emitter is None:
        raise UnsupportedOperationError(
            f"{op.name} has no kernel for device 'cuda': the GPU has no LAPACK here (no cuSOLVER binding) and no "
            f"generated kernel for {op.operands[0].type.dtype.name} operands yet; compile this function for the CPU",
            op.loc)
    if any(r.type.size == 0 for r in op.results):
        return
    emitter(ec, op)
