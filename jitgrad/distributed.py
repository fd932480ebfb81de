"""Data-parallel training over MPI (mpi4py): every process (rank) computes the gradient of
its share of the batch, and `allreduce` averages the gradients so that every rank applies
the same update.

    from jitgrad import distributed as dist
    dist.init()                                  # size 1 when not launched by mpiexec
    params = dist.broadcast(params)              # rank 0's initial parameters everywhere
    step = dist.data_parallel(jit_grad(loss))    # gradient of the local shard, averaged
    grads = step(params, dist.shard(x), dist.shard(y))

Run with any MPI launcher: `mpiexec -n 2 python train.py`, `srun python train.py`.

How a reduction travels. The leaves of a gradient pytree are packed into size-capped
buckets (one flat buffer per dtype and `bucket_bytes`, never one message per leaf). Each
bucket is reduced in two nonblocking collectives: an `Ialltoall` hands chunk r of every
rank's buffer to rank r, which adds the p chunks in rank order 0, 1, ..., p-1, and an
`Iallgather` hands the reduced chunks to everyone. Every element is therefore summed by
one rank in one fixed order, and every rank receives those same bits: the result does not
depend on message arrival, on the MPI library's choice of algorithm, or on which rank
asks. (The MPI standard requires an `Allreduce` to give every rank identical results,
but the order of the sum — hence the bits — is the algorithm's, which the library picks
by message size and rank count; and implementations have shipped algorithms that broke
even the identical-results rule for floating point.)
The traffic is that of a ring or Rabenseifner allreduce: 2 (p - 1) / p of the payload.
With two ranks, one `Iallgather` of whole buffers moves the same bytes in one round, and
both ranks add the two copies in rank order: the same bits.

Buckets are pipelined: bucket k's all-to-all is started as soon as it is packed, so
packing, adding and unpacking overlap the other buckets' transfers. A compiled gradient
is one native call, so its gradients all become ready when it returns: communication
overlaps the backward pass only where the program computes gradients in several calls
(`allreduce_start` on each part's gradients as soon as it is returned, `wait` later).

Compression (`compression=`): "bfloat16"/"float16" send the payload in half precision
(both phases; the adds run in float32), `TopK(ratio)` sends the largest `ratio` of each
bucket's entries with error feedback (what is not sent is kept per rank and added to the
next gradient).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import ml_dtypes
import numpy as np

from jitgrad.errors import ArgumentError, JitgradError
from jitgrad.tracing.pytree import TreeDef, tree_flatten, tree_unflatten

__all__ = ["MPIUnavailableError", "init", "rank", "size", "is_initialized", "barrier", "allreduce",
           "allreduce_start", "PendingAllreduce", "broadcast", "shard", "data_parallel", "TopK",
           "DEFAULT_BUCKET_BYTES"]

DEFAULT_BUCKET_BYTES = 4 << 20
"""Bucket cap. Large enough that a bucket's transfer time dominates the per-message cost
(a few microseconds on shared memory, tens on a network), small enough that a gradient
of tens of MB is split into several buckets that pipeline."""

_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")

_WHOLE_BUFFER_RANKS = 2
"""With two ranks, all-gathering whole buffers and adding both copies on each rank moves
the same bytes per rank as all-to-all + all-gather, in one round of messages instead of
two (each round waits for the slower rank). Both ranks evaluate the same rank-ordered
expression, so the bits are those of the two-round scheme."""


class MPIUnavailableError(JitgradError, RuntimeError):
    """The program was launched as several processes but MPI cannot join them: mpi4py is
    not installed, or it runs on another MPI library than the launcher's."""


# --------------------------------------------------------------------------- the world

@dataclass
class _World:
    """The processes taking part: an mpi4py communicator, or none for a single process."""

    comm: Any
    rank: int
    size: int
    layouts: dict = field(default_factory=dict)
    byte: Any = None
    """mpi4py's MPI.BYTE: bfloat16 and (index, value) records travel as bytes."""


_world: _World | None = None


def _launcher_size() -> int:
    """The number of processes a launcher (mpiexec, srun) says it started, or 1."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def init(comm=None) -> _World:
    """Join the processes started by the MPI launcher (idempotent; `comm` is an mpi4py
    communicator to use instead of COMM_WORLD). A single process without mpiexec runs as
    a world of size 1, with or without mpi4py. Raises `MPIUnavailableError` when a
    launcher started several processes but they cannot form one MPI world."""
    global _world
    if _world is not None and comm is None:
        return _world
    expected = _launcher_size()
    try:
        from mpi4py import MPI
    except ImportError as err:
        if expected > 1:
            raise MPIUnavailableError(
                f"this process is one of {expected} started by an MPI launcher, but mpi4py cannot be imported "
                f"({err}); install it with `pip install \"jitgrad[mpi]\"` (mpi4py and the mpich wheel)") from None
        _world = _World(None, 0, 1)
        return _world
    comm = MPI.COMM_WORLD if comm is None else comm
    world = _World(comm, comm.Get_rank(), comm.Get_size(), byte=MPI.BYTE)
    if world.size == 1 and expected > 1:
        raise MPIUnavailableError(
            f"the launcher started {expected} processes but MPI sees a world of 1: mpiexec belongs to another MPI "
            f"library than the one mpi4py uses ({MPI.Get_library_version().splitlines()[0].strip()}); launch with "
            "that library's mpiexec (the mpich wheel's `mpiexec` for `jitgrad[mpi]`)")
    _world = world
    return _world


def is_initialized() -> bool:
    return _world is not None


def _get_world() -> _World:
    return _world if _world is not None else init()


def rank() -> int:
    """This process's index, 0 ... size() - 1."""
    return _get_world().rank


def size() -> int:
    """The number of processes."""
    return _get_world().size


def barrier() -> None:
    world = _get_world()
    if world.comm is not None:
        world.comm.Barrier()


def shard(tree, axis: int = 0):
    """This rank's contiguous share of every array of `tree` along `axis` (rank r of p takes
    rows [r n / p, (r + 1) n / p)): each rank trains on its part of the batch. The batch
    size must be a multiple of size() so that the mean of the ranks' mean losses is the
    mean loss of the whole batch."""
    world = _get_world()
    leaves, treedef = tree_flatten(tree)
    out = []
    for leaf in leaves:
        array = np.asarray(leaf)
        n = array.shape[axis]
        if n % world.size:
            raise ArgumentError(f"shard: a batch of {n} rows does not split evenly over {world.size} ranks")
        part = n // world.size
        out.append(np.take(array, np.arange(world.rank * part, (world.rank + 1) * part), axis=axis))
    return tree_unflatten(treedef, out)


# --------------------------------------------------------------------------- compression

class _Compression:
    """How a bucket travels. `wire` is the dtype sent; `stateful` compressions keep a
    residual per bucket."""

    name = "none"

    def wire_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype


class _Cast(_Compression):
    """Send in a narrower float type, add in float32 (rounding each sent value once)."""

    def __init__(self, name: str, dtype):
        self.name, self.dtype = name, np.dtype(dtype)

    def wire_dtype(self, dtype):
        return self.dtype


@dataclass
class TopK(_Compression):
    """Top-k sparsification with error feedback: each rank sends the `ratio` largest
    entries (by magnitude) of each bucket of gradient + residual, as (index, value) pairs,
    and keeps the rest as its residual for the next call. An instance holds the residuals
    of the trees it reduced: use one instance per gradient stream (`data_parallel` keeps
    its own)."""

    ratio: float = 0.01
    residuals: dict = field(default_factory=dict, repr=False)
    name = "topk"

    def __post_init__(self):
        if not 0.0 < self.ratio <= 1.0:
            raise ArgumentError(f"TopK: ratio must be in (0, 1], got {self.ratio}")

    def count(self, n: int) -> int:
        return max(1, min(n, math.ceil(self.ratio * n)))


_NAMED = {None: _Compression(), "none": _Compression(),
          "bfloat16": _Cast("bfloat16", ml_dtypes.bfloat16), "bf16": _Cast("bfloat16", ml_dtypes.bfloat16),
          "float16": _Cast("float16", np.float16), "f16": _Cast("float16", np.float16)}


def _compression(value) -> _Compression:
    if isinstance(value, _Compression):
        return value
    if isinstance(value, str) and value.lower() == "topk":
        raise ArgumentError("compression='topk' needs a residual that lives across calls: pass "
                            "jitgrad.distributed.TopK(ratio) and reuse that object")
    try:
        return _NAMED[value if value is None else str(value).lower()]
    except KeyError:
        raise ArgumentError(f"unknown compression {value!r}: None, 'bfloat16', 'float16' or TopK(ratio)") from None


# --------------------------------------------------------------------------- buckets

@dataclass(frozen=True)
class _Slot:
    leaf: int
    offset: int
    size: int
    shape: tuple


@dataclass
class _Bucket:
    """Consecutive leaves of one dtype, packed into one flat buffer."""

    dtype: np.dtype
    slots: list
    size: int = 0
    chunk: int = 0
    send: np.ndarray | None = None
    in_flight: bool = False


@dataclass
class _Layout:
    buckets: list
    n_leaves: int
    key: tuple = ()
    checked: bool = False


def _leaf_arrays(tree, what: str) -> tuple[list[np.ndarray], TreeDef]:
    leaves, treedef = tree_flatten(tree)
    arrays = []
    for i, leaf in enumerate(leaves):
        array = np.asarray(leaf)
        if array.dtype.kind != "f" and array.dtype not in (np.dtype(ml_dtypes.bfloat16),):
            raise ArgumentError(f"{what} reduces floating-point gradients; leaf {i} of {treedef} is "
                                f"{array.dtype}")
        arrays.append(array)
    return arrays, treedef


def _plan(arrays: list[np.ndarray], bucket_bytes: int, world_size: int) -> _Layout:
    """Consecutive leaves of the same dtype share a bucket until it would exceed
    `bucket_bytes` (a leaf larger than that is a bucket of its own)."""
    buckets: list[_Bucket] = []
    for i, array in enumerate(arrays):
        current = buckets[-1] if buckets else None
        if (current is None or current.dtype != array.dtype
                or (current.size + array.size) * array.itemsize > bucket_bytes and current.size):
            current = _Bucket(array.dtype, [])
            buckets.append(current)
        current.slots.append(_Slot(i, current.size, array.size, array.shape))
        current.size += array.size
    for bucket in buckets:
        bucket.chunk = -(-bucket.size // world_size)
    return _Layout(buckets, len(arrays))


def _layout(world: _World, arrays, treedef, bucket_bytes, compression) -> _Layout:
    key = (treedef, tuple((a.shape, a.dtype.str) for a in arrays), bucket_bytes, compression.name)
    layout = world.layouts.get(key)
    if layout is None:
        if len(world.layouts) >= 64:
            world.layouts.pop(next(iter(world.layouts)))
        layout = world.layouts[key] = _plan(arrays, bucket_bytes, world.size)
        layout.key = key
    if not layout.checked and world.comm is not None:
        _check_same_everywhere(world, repr(key))
        layout.checked = True
    return layout


def _check_same_everywhere(world: _World, signature: str) -> None:
    """Ranks that reduce trees of different structures would add unrelated numbers (or
    wait forever): compare the structures once per layout."""
    signatures = world.comm.allgather(signature)
    if len(set(signatures)) > 1:
        other = next(r for r, s in enumerate(signatures) if s != signatures[0])
        raise ArgumentError(f"allreduce: rank {other} passed a tree of another structure, shapes or dtypes "
                            f"than rank 0 ({signatures[other]} vs {signatures[0]})")


def _pack(bucket: _Bucket, arrays, wire: np.dtype, world_size: int) -> np.ndarray:
    """The bucket's leaves, one after another, padded to world_size equal chunks."""
    if bucket.in_flight:                  # another reduction of this layout still reads it
        send = np.zeros(bucket.chunk * world_size, wire)
    else:
        if bucket.send is None or bucket.send.dtype != wire:
            bucket.send = np.zeros(bucket.chunk * world_size, wire)
        send = bucket.send
    for slot in bucket.slots:
        np.copyto(send[slot.offset:slot.offset + slot.size], arrays[slot.leaf].reshape(-1), casting="unsafe")
    return send


def _unpack(bucket: _Bucket, flat: np.ndarray, out: list) -> None:
    for slot in bucket.slots:
        out[slot.leaf] = flat[slot.offset:slot.offset + slot.size].reshape(slot.shape)


# --------------------------------------------------------------------------- reduction

class PendingAllreduce:
    """An allreduce in flight: `wait()` returns the reduced tree."""

    def __init__(self, world, layout, treedef, op, compression, arrays):
        self.world, self.layout, self.treedef = world, layout, treedef
        self.op, self.compression = op, compression
        self.out: list = [None] * layout.n_leaves
        self._stages = [self._start(b, arrays) for b in layout.buckets]
        self._done = False

    def _start(self, bucket: _Bucket, arrays):
        if isinstance(self.compression, TopK):
            return self._start_topk(bucket, arrays)
        p, wire = self.world.size, self.compression.wire_dtype(bucket.dtype)
        send = _pack(bucket, arrays, wire, p)
        if self.world.comm is None:
            return ("dense", bucket, send.copy(), None, ())
        bucket.in_flight = send is bucket.send
        if p == _WHOLE_BUFFER_RANKS:
            received = np.empty(p * send.size, wire)
            request = self.world.comm.Iallgather(_buffer(self.world, send), _buffer(self.world, received))
            return ("whole", bucket, received, request, (send,))
        received = np.empty_like(send)
        request = self.world.comm.Ialltoall(_buffer(self.world, send), _buffer(self.world, received))
        return ("dense", bucket, received, request, (send,))

    def _start_topk(self, bucket: _Bucket, arrays):
        topk, p = self.compression, self.world.size
        dense = np.zeros(bucket.size, bucket.dtype)
        for slot in bucket.slots:
            dense[slot.offset:slot.offset + slot.size] = arrays[slot.leaf].reshape(-1)
        key = (self.layout.key, bucket.slots[0].leaf)
        residual = topk.residuals.get(key)
        if residual is not None:
            dense += residual
        k = topk.count(bucket.size)
        chosen = np.sort(np.argpartition(np.abs(dense), bucket.size - k)[bucket.size - k:]).astype(np.int64)
        message = np.empty(k, dtype=[("index", np.int64), ("value", bucket.dtype)])
        message["index"], message["value"] = chosen, dense[chosen]
        dense[chosen] = 0
        topk.residuals[key] = dense
        gathered = np.empty(k * p, message.dtype)
        if self.world.comm is None:
            gathered[:] = message
            return ("topk", bucket, gathered, None, ())
        request = self.world.comm.Iallgather(_buffer(self.world, message), _buffer(self.world, gathered))
        return ("topk", bucket, gathered, request, (message,))

    def wait(self):
        """Finish every bucket (in bucket order) and return the reduced tree."""
        if self._done:
            return tree_unflatten(self.treedef, self.out)
        p = self.world.size
        second = []
        for kind, bucket, received, request, _sent in self._stages:     # _sent: alive until Wait
            if request is not None:
                request.Wait()
            bucket.in_flight = False
            if kind == "topk":
                dense = np.zeros(bucket.size, bucket.dtype)
                for part in received.reshape(p, -1):          # rank order: the same sum everywhere
                    dense[part["index"]] += part["value"]
                if self.op == "mean":
                    dense /= np.asarray(p, bucket.dtype)
                _unpack(bucket, dense, self.out)
                continue
            if kind == "whole":
                reduced = self._rank_ordered_sum(bucket, received)
                _unpack(bucket, reduced if reduced.dtype == bucket.dtype else reduced.astype(bucket.dtype), self.out)
                continue
            second.append(self._gather(bucket, received))
        for bucket, gathered, request, wire, _sent in second:
            if request is not None:
                request.Wait()
            flat = gathered if wire == bucket.dtype else gathered.astype(bucket.dtype)
            _unpack(bucket, flat, self.out)
        self._done = True
        self._stages = []
        return tree_unflatten(self.treedef, self.out)

    def _rank_ordered_sum(self, bucket: _Bucket, received: np.ndarray) -> np.ndarray:
        """The p equal parts of `received` (rank 0's first) added in rank order, divided by
        p for the mean, in the wire dtype: float32 arithmetic for a compressed wire."""
        p, wire = self.world.size, received.dtype
        parts = received.reshape(p, -1)
        accumulate = np.float32 if wire != bucket.dtype else bucket.dtype
        total = parts[0].astype(accumulate)
        for part in parts[1:]:
            total += part
        if self.op == "mean" and p > 1:
            total /= np.asarray(p, accumulate)
        return total.astype(wire, copy=False)

    def _gather(self, bucket: _Bucket, received: np.ndarray):
        """Add rank 0's ... rank p-1's copy of this rank's chunk, in that order, and start
        handing the sum to everyone."""
        p, wire = self.world.size, received.dtype
        reduced = self._rank_ordered_sum(bucket, received)
        if self.world.comm is None:
            return bucket, reduced.copy(), None, wire, ()
        gathered = np.empty(bucket.chunk * p, wire)
        request = self.world.comm.Iallgather(_buffer(self.world, reduced), _buffer(self.world, gathered))
        return bucket, gathered, request, wire, (reduced,)


def _buffer(world: _World, array: np.ndarray):
    """An mpi4py buffer specification for any array: raw bytes, so that bfloat16 (which
    MPI lacks) and (index, value) records travel too; MPI only moves them, the adds are
    ours."""
    return [array.view(np.uint8), world.byte]


def allreduce_start(tree, op: str = "mean", *, compression=None,
                    bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> PendingAllreduce:
    """Start reducing `tree` (a pytree of float arrays, the same structure on every rank)
    and return at once; `.wait()` returns the result. Work done between the two overlaps
    the transfers."""
    if op not in ("mean", "sum"):
        raise ArgumentError(f"allreduce: op must be 'mean' or 'sum', got {op!r}")
    if not isinstance(bucket_bytes, int) or bucket_bytes <= 0:
        raise ArgumentError(f"allreduce: bucket_bytes must be a positive int, got {bucket_bytes!r}")
    world = _get_world()
    compression = _compression(compression)
    arrays, treedef = _leaf_arrays(tree, "allreduce")
    layout = _layout(world, arrays, treedef, bucket_bytes, compression)
    return PendingAllreduce(world, layout, treedef, op, compression, arrays)


def allreduce(tree, op: str = "mean", *, compression=None, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
    """The sum or mean over all ranks of each leaf of `tree`, the same bits on every rank.

    Leaves are float arrays of the same shapes and dtypes on every rank; results are new
    arrays of the leaves' dtypes. `compression`: None, "bfloat16", "float16" or a `TopK`
    instance (see the module docstring)."""
    return allreduce_start(tree, op, compression=compression, bucket_bytes=bucket_bytes).wait()


def broadcast(tree, root: int = 0):
    """Rank `root`'s value of every leaf of `tree`, on every rank (initial parameters):
    one message per dtype bucket. Leaves of any dtype; structure, shapes and dtypes must
    match across ranks."""
    world = _get_world()
    leaves, treedef = tree_flatten(tree)
    arrays = [np.asarray(leaf) for leaf in leaves]
    if world.comm is None:
        return tree_unflatten(treedef, [a.copy() for a in arrays])
    if not 0 <= root < world.size:
        raise ArgumentError(f"broadcast: root {root} is not a rank of a world of {world.size}")
    _check_same_everywhere(world, repr((treedef, tuple((a.shape, a.dtype.str) for a in arrays))))
    out: list = [None] * len(arrays)
    by_dtype: dict = {}
    for i, array in enumerate(arrays):
        by_dtype.setdefault(array.dtype, []).append(i)
    for dtype, members in by_dtype.items():
        flat = np.empty(sum(arrays[i].size for i in members), dtype)
        offset = 0
        for i in members:
            if world.rank == root:
                flat[offset:offset + arrays[i].size] = arrays[i].reshape(-1)
            offset += arrays[i].size
        world.comm.Bcast(_buffer(world, flat), root=root)
        offset = 0
        for i in members:
            out[i] = flat[offset:offset + arrays[i].size].reshape(arrays[i].shape)
            offset += arrays[i].size
    return tree_unflatten(treedef, out)


# --------------------------------------------------------------------------- data_parallel

class DataParallel:
    """`step` (a compiled gradient, e.g. `jit_grad(loss)` or `value_and_grad(loss)`) on this
    rank's data, with every result averaged (op="mean") over the ranks. With a `TopK`
    compression the residuals belong to this wrapper."""

    def __init__(self, step: Callable, op: str = "mean", compression=None,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        self.step, self.op, self.bucket_bytes = step, op, bucket_bytes
        compression = _compression(compression)
        self.compression = TopK(compression.ratio) if isinstance(compression, TopK) else compression
        self.__wrapped__ = step

    def __call__(self, *args, **kwargs):
        return self.start(*args, **kwargs).wait()

    def start(self, *args, **kwargs) -> PendingAllreduce:
        """Run the step and start reducing its results; `.wait()` returns them."""
        return allreduce_start(self.step(*args, **kwargs), self.op, compression=self.compression,
                               bucket_bytes=self.bucket_bytes)


def data_parallel(step: Callable, *, op: str = "mean", compression=None,
                  bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> DataParallel:
    """Wrap a gradient step so that it returns the results averaged over the ranks: call it
    with this rank's share of the batch (`shard`). Every result is reduced, so the step
    should return float values only (gradients, the loss)."""
    return DataParallel(step, op, compression, bucket_bytes)
