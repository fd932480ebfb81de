"""jitgrad's own thread pool for blocked loops: the caller never waits for a worker that
has not started.

With libgomp, `GOMP_parallel` gives each thread a fixed share of a loop's blocks and the
calling thread waits at the end of the region for every share. On a loaded machine a
worker that the scheduler has not run yet holds the caller up for a whole time slice
(wall time 3-7x the CPU time on two busy cores). Here, as in Dr.Jit's nanothread, the
blocks are claimed one at a time from a shared counter by whoever runs: the caller claims
blocks too, and it waits only for blocks that a running worker has claimed. A worker
that wakes late finds the counter exhausted and goes back to sleep.

The pool is a small native module, built with the llvmlite builder and compiled once per
process (never freed: workers run its code for the life of the process):

- `jitgrad_pool_run(fn, closure, blocks, threads)` runs `fn(closure, first, last)` over
  blocks [0, blocks), one block per call, on at most `threads` threads (0: one per core)
  counting the caller. Same interface as a kernel's outlined `.blocks` function, so the
  generated code calls it with the function it would otherwise call serially.
- Job state is a set of globals. The block counter is one 64-bit word holding the job's
  generation (high half) and the next block (low half); a block is claimed by a
  compare-and-swap that also checks the generation, so a worker holding a stale view of a
  finished job can never claim (and never run) one of its blocks, nor touch its closure.
  Before a new job's fields are written the word is closed (no block claimable), so a
  successful claim always pairs a block with the fields of its own job. (Generations
  are 32 bits: only a worker stalled between two instructions across 2^32 jobs could be
  fooled.)
- A job is finished when its count of finished blocks reaches its block count; the
  caller spins briefly on that count and then sleeps on it (futex), and the worker that
  finishes the last block wakes it.
- Idle workers spin for about `WORKER_SPIN_CYCLES` and then sleep on a futex (the
  machine may be oversubscribed, and BLAS's own threads need the cores between loops);
  a new job wakes sleeping workers only when there are any.
- Seats: a job lets at most `threads - 1` workers join (a second 64-bit word, generation
  and seats taken), so `config.num_threads` bounds the threads a loop runs on.
- One job at a time: a caller that finds the pool busy (another Python thread's kernel,
  or a kernel called from inside a block) runs all its blocks itself. Blocks are fixed
  whatever runs them and each writes its own partial results, so every result is
  bit-identical for every thread count, pool and schedule.
- Workers are created lazily by the first job that wants them, block every signal (a
  Ctrl-C reaches the thread Python handles signals on), and are detached. After `fork`
  the child has none: its pool state is reset and its first job creates new workers.

Linux on x86-64 only (futex system call, the time-stamp counter for spin bounds);
elsewhere `available()` is False and the loops use libgomp as before.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading

import llvmlite.binding as llvm
from llvmlite import ir

from .engine import Threads, _llvm_lock, create_target_machine, initialize
from .llvm_support import I1, I32, I64, PTR, VOID, declare

RUN = "jitgrad_pool_run"
MAX_WORKERS = 255
CLOSED = 0xFFFFFFFF
"""The low half of the block word while a job's fields are being written: no block index
reaches it, so nothing can be claimed."""
WORKER_SPIN_CYCLES = 30_000
"""Time-stamp-counter cycles (about 10 us) an idle worker polls for a new job before it
sleeps: a kernel's next blocked loop usually follows within that time, and a sleeping
worker is woken by a system call and then by the scheduler, which on a loaded machine
may be late (harmless here: the caller does not wait for it)."""
CALLER_SPIN_CYCLES = 300_000
"""Cycles the caller polls for blocks that running workers claimed before it sleeps."""

BLOCKS_FN = ir.FunctionType(VOID, [PTR, I64, I64])
"""A blocked loop's outlined body: `fn(closure, first, last)` runs blocks [first, last)."""

SYS_FUTEX = 202
FUTEX_WAIT_PRIVATE = 128
FUTEX_WAKE_PRIVATE = 129
SIG_BLOCK = 0
SIGSET_BYTES = 128

_WORDS = {
    "word": I64,        # generation << 32 | next block to claim (CLOSED: none)
    "seats": I64,       # generation << 32 | workers that joined the job
    "fn": I64,          # the job's blocks function (its address)
    "closure": I64,     # its closure (its address)
    "blocks": I64,      # its block count
    "max_seats": I64,   # workers that may join it
    "done": I32,        # its finished blocks (the caller sleeps on this)
    "waiting": I32,     # 1 while the caller sleeps on `done`
    "epoch": I32,       # the current job's generation (idle workers sleep on this)
    "sleepers": I32,    # workers asleep on `epoch`
    "busy": I32,        # 1 while a caller owns the pool
    "started": I32,     # workers created
    "default_workers": I32,  # workers for threads = 0: the usable cores less the caller
}

_lock = threading.Lock()
_engine = None
_address = 0
_words: dict[str, ctypes._SimpleCData] = {}


def available() -> bool:
    """Whether this platform can run the pool (Linux, x86-64)."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def _global(module: ir.Module, name: str) -> ir.GlobalVariable:
    return module.get_global(f"jitgrad_pool_{name}")


class _Builder:
    """The pool module's helpers: its globals, atomics, the futex, the cycle counter."""

    def __init__(self, module: ir.Module):
        self.module = module
        for name, t in _WORDS.items():
            gv = ir.GlobalVariable(module, t, f"jitgrad_pool_{name}")
            gv.initializer = ir.Constant(t, None)
            gv.align = 64 if name in ("word", "done", "epoch") else 8   # the contended words apart
        self.syscall = ir.Function(module, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
        self.cycles = declare(module, "llvm.readcyclecounter", I64, [])
        self.pause = declare(module, "llvm.x86.sse2.pause", VOID, [])

    def g(self, name: str) -> ir.GlobalVariable:
        return _global(self.module, name)

    @staticmethod
    def load(b: ir.IRBuilder, gv: ir.GlobalVariable, ordering: str = "acquire") -> ir.Value:
        t = gv.value_type
        return b.load_atomic(gv, ordering, 8 if t == I64 else 4, typ=t)

    @staticmethod
    def store(b: ir.IRBuilder, value, gv: ir.GlobalVariable, ordering: str = "release") -> None:
        t = gv.value_type
        b.store_atomic(value, gv, ordering, 8 if t == I64 else 4)

    def futex(self, b: ir.IRBuilder, word: ir.GlobalVariable, op: int, value: ir.Value) -> None:
        null = ir.Constant(PTR, None)
        b.call(self.syscall, [ir.Constant(I64, SYS_FUTEX), word, ir.Constant(I32, op), value, null, null,
                              ir.Constant(I32, 0)])


def _split(b: ir.IRBuilder, word: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(generation: i32, low half: i64) of a 64-bit job word."""
    return b.trunc(b.lshr(word, ir.Constant(I64, 32)), I32), b.and_(word, ir.Constant(I64, 0xFFFFFFFF))


def _emit_claim(pb: _Builder) -> ir.Function:
    """`claim(i32 generation)`: claim and run the job's blocks one at a time while the job
    is that generation's and has blocks left; count each finished block, waking a
    sleeping caller after the last."""
    fn = ir.Function(pb.module, ir.FunctionType(VOID, [I32]), "jitgrad_pool_claim")
    fn.linkage = "internal"
    generation = fn.args[0]
    entry, loop, claim, run, notify, wake, leave = (fn.append_basic_block(n) for n in
                                                    ("entry", "loop", "claim", "run", "notify", "wake", "leave"))
    b = ir.IRBuilder(entry)
    b.branch(loop)

    b.position_at_end(loop)
    word = pb.load(b, pb.g("word"))
    gen, block = _split(b, word)
    blocks_fn = b.inttoptr(pb.load(b, pb.g("fn")), BLOCKS_FN.as_pointer())
    closure = b.inttoptr(pb.load(b, pb.g("closure")), PTR)
    blocks = pb.load(b, pb.g("blocks"))
    ours = b.and_(b.icmp_unsigned("==", gen, generation), b.icmp_unsigned("<", block, blocks))
    b.cbranch(ours, claim, leave)

    b.position_at_end(claim)
    pair = b.cmpxchg(pb.g("word"), word, b.add(word, ir.Constant(I64, 1)), "acq_rel", "acquire")
    b.cbranch(b.extract_value(pair, 1), run, loop)

    b.position_at_end(run)
    b.call(blocks_fn, [closure, block, b.add(block, ir.Constant(I64, 1))])
    finished = b.add(b.atomic_rmw("add", pb.g("done"), ir.Constant(I32, 1), "seq_cst"), ir.Constant(I32, 1))
    b.cbranch(b.icmp_unsigned("==", finished, b.trunc(blocks, I32)), notify, loop)

    b.position_at_end(notify)
    waiting = pb.load(b, pb.g("waiting"), "seq_cst")
    b.cbranch(b.icmp_unsigned("!=", waiting, ir.Constant(I32, 0)), wake, loop)

    b.position_at_end(wake)
    pb.futex(b, pb.g("done"), FUTEX_WAKE_PRIVATE, ir.Constant(I32, 1))
    b.branch(loop)

    b.position_at_end(leave)
    b.ret_void()
    return fn


def _emit_take_seat(pb: _Builder) -> ir.Function:
    """`take_seat(i32 generation) -> i1`: join that generation's job if it has a seat left."""
    fn = ir.Function(pb.module, ir.FunctionType(I1, [I32]), "jitgrad_pool_take_seat")
    fn.linkage = "internal"
    entry, loop, take, refuse = (fn.append_basic_block(n) for n in ("entry", "loop", "take", "refuse"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    seats = pb.load(b, pb.g("seats"))
    gen, taken = _split(b, seats)
    free = b.and_(b.icmp_unsigned("==", gen, fn.args[0]),
                  b.icmp_unsigned("<", taken, pb.load(b, pb.g("max_seats"))))
    b.cbranch(free, take, refuse)
    b.position_at_end(take)
    pair = b.cmpxchg(pb.g("seats"), seats, b.add(seats, ir.Constant(I64, 1)), "acq_rel", "acquire")
    with b.if_then(b.extract_value(pair, 1)):
        b.ret(ir.Constant(I1, 1))
    b.branch(loop)
    b.position_at_end(refuse)
    b.ret(ir.Constant(I1, 0))
    return fn


def _emit_worker(pb: _Builder, claim: ir.Function, take_seat: ir.Function) -> ir.Function:
    """`worker(ptr) -> ptr`, a worker thread's body: join each new job that has a seat,
    then poll briefly for the next one and sleep on `epoch`."""
    fn = ir.Function(pb.module, ir.FunctionType(PTR, [PTR]), "jitgrad_pool_worker")
    fn.linkage = "internal"
    entry, top, join, work, idle, poll, relax, sleep = (
        fn.append_basic_block(n) for n in ("entry", "top", "join", "work", "idle", "poll", "relax", "sleep"))
    b = ir.IRBuilder(entry)
    mask = b.alloca(ir.ArrayType(ir.IntType(8), SIGSET_BYTES), name="mask")
    b.call(declare(pb.module, "sigfillset", I32, [PTR]), [mask])
    b.call(declare(pb.module, "pthread_sigmask", I32, [I32, PTR, PTR]),
           [ir.Constant(I32, SIG_BLOCK), mask, ir.Constant(PTR, None)])
    last = b.alloca(I32, name="last")
    b.store(ir.Constant(I32, 0), last)
    since = b.alloca(I64, name="since")
    b.branch(top)

    b.position_at_end(top)                  # a job newer than the last one seen?
    epoch = pb.load(b, pb.g("epoch"))
    seen = b.load(last)
    b.store(epoch, last)
    b.cbranch(b.icmp_unsigned("!=", epoch, seen), join, idle)

    b.position_at_end(join)
    b.cbranch(b.call(take_seat, [epoch]), work, idle)

    b.position_at_end(work)
    b.call(claim, [epoch])
    b.branch(idle)

    b.position_at_end(idle)
    b.store(b.call(pb.cycles, []), since)
    b.branch(poll)

    b.position_at_end(poll)
    moved = b.icmp_unsigned("!=", pb.load(b, pb.g("epoch")), b.load(last))
    with b.if_then(moved):
        b.branch(top)
    elapsed = b.sub(b.call(pb.cycles, []), b.load(since))
    b.cbranch(b.icmp_unsigned("<", elapsed, ir.Constant(I64, WORKER_SPIN_CYCLES)), relax, sleep)

    b.position_at_end(relax)
    b.call(pb.pause, [])
    b.branch(poll)

    b.position_at_end(sleep)                # futex_wait returns at once if `epoch` moved meanwhile
    b.atomic_rmw("add", pb.g("sleepers"), ir.Constant(I32, 1), "seq_cst")
    pb.futex(b, pb.g("epoch"), FUTEX_WAIT_PRIVATE, b.load(last))
    b.atomic_rmw("sub", pb.g("sleepers"), ir.Constant(I32, 1), "seq_cst")
    b.branch(top)
    return fn


def _emit_run(pb: _Builder, claim: ir.Function, worker: ir.Function) -> ir.Function:
    """`jitgrad_pool_run(fn, closure, i64 blocks, i32 threads)`: see the module docstring."""
    fn = ir.Function(pb.module, ir.FunctionType(VOID, [BLOCKS_FN.as_pointer(), PTR, I64, I32]), RUN)
    blocks_fn, closure, blocks, threads = fn.args
    names = ("entry", "serial", "lock", "spawn", "create", "created", "publish", "release", "announce",
             "wake", "work", "wait", "spin", "relax", "sleep", "futex", "woken", "finish")
    bb = {n: fn.append_basic_block(n) for n in names}
    b = ir.IRBuilder(bb["entry"])
    one, zero32 = ir.Constant(I32, 1), ir.Constant(I32, 0)
    alone = b.or_(b.icmp_signed("<", blocks, ir.Constant(I64, 2)),
                  b.or_(b.icmp_unsigned("==", threads, one),
                        b.icmp_signed(">", blocks, ir.Constant(I64, 0x7FFFFFFE))))
    b.cbranch(alone, bb["serial"], bb["lock"])

    b.position_at_end(bb["serial"])         # too small, one thread asked for, or the pool is busy
    b.call(blocks_fn, [closure, ir.Constant(I64, 0), blocks])
    b.ret_void()

    b.position_at_end(bb["lock"])
    owned = b.extract_value(b.cmpxchg(pb.g("busy"), zero32, one, "acquire", "monotonic"), 1)
    requested = b.select(b.icmp_unsigned("==", threads, zero32), pb.load(b, pb.g("default_workers"), "monotonic"),
                         b.sub(threads, one))
    want = b.select(b.icmp_unsigned(">", requested, ir.Constant(I32, MAX_WORKERS)),
                    ir.Constant(I32, MAX_WORKERS), requested)
    tid = b.alloca(I64, name="tid")
    b.cbranch(owned, bb["spawn"], bb["serial"])

    b.position_at_end(bb["spawn"])          # create the workers this job wants and the pool lacks
    started = pb.load(b, pb.g("started"), "monotonic")
    b.cbranch(b.icmp_unsigned("<", started, want), bb["create"], bb["publish"])
    b.position_at_end(bb["create"])
    status = b.call(declare(pb.module, "pthread_create", I32, [PTR, PTR, PTR, PTR]),
                    [tid, ir.Constant(PTR, None), worker, ir.Constant(PTR, None)])
    b.cbranch(b.icmp_unsigned("==", status, zero32), bb["created"], bb["publish"])
    b.position_at_end(bb["created"])
    b.call(declare(pb.module, "pthread_detach", I32, [I64]), [b.load(tid)])
    pb.store(b, b.add(pb.load(b, pb.g("started"), "monotonic"), one), pb.g("started"), "monotonic")
    b.branch(bb["spawn"])

    b.position_at_end(bb["publish"])
    started = pb.load(b, pb.g("started"), "monotonic")
    seats = b.select(b.icmp_unsigned("<", started, want), started, want)
    b.cbranch(b.icmp_unsigned("==", seats, zero32), bb["release"], bb["announce"])
    b.position_at_end(bb["release"])        # no worker could be created
    pb.store(b, zero32, pb.g("busy"))
    b.branch(bb["serial"])

    b.position_at_end(bb["announce"])
    generation = b.add(pb.load(b, pb.g("epoch"), "monotonic"), one)
    tag = b.shl(b.zext(generation, I64), ir.Constant(I64, 32))
    pb.store(b, b.or_(tag, ir.Constant(I64, CLOSED)), pb.g("word"), "seq_cst")   # closed while fields change
    for name, value in (("fn", b.ptrtoint(blocks_fn, I64)), ("closure", b.ptrtoint(closure, I64)), ("blocks", blocks),
                        ("max_seats", b.zext(seats, I64)), ("done", zero32), ("seats", tag)):
        pb.store(b, value, pb.g(name))
    pb.store(b, tag, pb.g("word"))                                                # block 0 claimable
    pb.store(b, generation, pb.g("epoch"), "seq_cst")
    asleep = pb.load(b, pb.g("sleepers"), "seq_cst")
    b.cbranch(b.icmp_unsigned("!=", asleep, zero32), bb["wake"], bb["work"])
    b.position_at_end(bb["wake"])
    others = b.trunc(b.sub(blocks, ir.Constant(I64, 1)), I32)
    pb.futex(b, pb.g("epoch"), FUTEX_WAKE_PRIVATE, b.select(b.icmp_unsigned("<", others, seats), others, seats))
    b.branch(bb["work"])

    b.position_at_end(bb["work"])           # the caller claims blocks like any worker
    b.call(claim, [generation])
    since = b.call(pb.cycles, [])
    expected = b.trunc(blocks, I32)
    b.branch(bb["wait"])

    b.position_at_end(bb["wait"])           # only blocks a running worker claimed remain
    done = pb.load(b, pb.g("done"))
    b.cbranch(b.icmp_unsigned("==", done, expected), bb["finish"], bb["spin"])
    b.position_at_end(bb["spin"])
    elapsed = b.sub(b.call(pb.cycles, []), since)
    b.cbranch(b.icmp_unsigned("<", elapsed, ir.Constant(I64, CALLER_SPIN_CYCLES)), bb["relax"], bb["sleep"])
    b.position_at_end(bb["relax"])
    b.call(pb.pause, [])
    b.branch(bb["wait"])
    b.position_at_end(bb["sleep"])
    pb.store(b, one, pb.g("waiting"), "seq_cst")
    done = pb.load(b, pb.g("done"), "seq_cst")
    b.cbranch(b.icmp_unsigned("==", done, expected), bb["woken"], bb["futex"])
    b.position_at_end(bb["futex"])
    pb.futex(b, pb.g("done"), FUTEX_WAIT_PRIVATE, done)
    b.branch(bb["woken"])
    b.position_at_end(bb["woken"])
    pb.store(b, zero32, pb.g("waiting"), "monotonic")
    b.branch(bb["wait"])

    b.position_at_end(bb["finish"])
    pb.store(b, zero32, pb.g("busy"))
    b.ret_void()
    return fn


def build() -> ir.Module:
    """The pool's LLVM module."""
    module = ir.Module(name="jitgrad_thread_pool")
    pb = _Builder(module)
    claim = _emit_claim(pb)
    worker = _emit_worker(pb, claim, _emit_take_seat(pb))
    _emit_run(pb, claim, worker)
    return module


def default_workers() -> int:
    """Workers for `threads = 0`: the cores this process may run on, less the caller."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, MAX_WORKERS))


def load(target_machine: llvm.TargetMachine) -> int:
    """Compile the pool (once per process), make `jitgrad_pool_run` resolvable by name for
    every module compiled after it, and return its address."""
    global _engine, _address
    with _lock, _llvm_lock:
        if _engine is not None:
            return _address
        module = llvm.parse_assembly(str(build()))
        module.verify()
        engine = llvm.create_mcjit_compiler(module, target_machine)
        engine.finalize_object()
        for name, t in _WORDS.items():
            ctype = ctypes.c_uint64 if t == I64 else ctypes.c_uint32
            _words[name] = ctype.from_address(engine.get_global_value_address(f"jitgrad_pool_{name}"))
        _words["default_workers"].value = default_workers()
        _address = engine.get_function_address(RUN)
        llvm.add_symbol(RUN, _address)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(engine))     # workers run its code until exit
        _engine = engine
        return _address


def worker_count() -> int:
    """Workers created so far in this process (0 before the first job that wants them)."""
    return int(_words["started"].value) if _words else 0


def _after_fork_in_child() -> None:
    """The child has only the forking thread: forget the parent's workers and any job in
    flight (its next job creates workers again), and close the block counter."""
    global _lock
    _lock = threading.Lock()
    if not _words:
        return
    generation = int(_words["epoch"].value)
    _words["word"].value = (generation << 32) | CLOSED
    _words["seats"].value = generation << 32
    for name in ("started", "sleepers", "waiting", "busy", "done"):
        _words[name].value = 0
    _words["default_workers"].value = default_workers()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------- for generated code

class PoolThreads:
    """What generated code needs to run a blocked loop on the pool: the same role as
    `engine.Threads` (libgomp), with blocks claimed one at a time instead of shared out."""

    claims_blocks = True
    """The loop's `.blocks(closure, first, last)` function is passed as it is (libgomp's
    `Threads` needs a per-thread entry that computes its share instead)."""
    beside_blas = True
    """Idle workers sleep after a few microseconds, so loops may run on threads in programs
    that call BLAS."""

    def __init__(self, count: int):
        self.count = count

    def run(self, module: ir.Module) -> ir.Function:
        return declare(module, RUN, VOID, [PTR, PTR, I64, I32])

    def emit_run(self, builder: ir.IRBuilder, module: ir.Module, blocks: ir.Function, closure: ir.Value,
                 count: ir.Value) -> None:
        """Call the pool for `blocks` over [0, count) blocks (count: i64)."""
        builder.call(self.run(module), [blocks, closure, count, ir.Constant(I32, self.count)])


POOLS = ("gomp", "jitgrad")
"""The values of `config.threads_pool`."""


def threads_for(count: int, pool: str):
    """The threads a compiled function's blocked loops run on: `pool` "jitgrad" (this
    module, where the platform has it) or "gomp" (libgomp's GOMP_parallel); None where
    neither is available (the loops run on the calling thread)."""
    initialize()
    if pool == "jitgrad" and available():
        load(create_target_machine())
        return PoolThreads(count)
    return Threads.instance(count)
