"""CPU emitters of the test kernel kinds (tests/test_kernel_kinds.py), found by the
kinds' `emitters` entries."""
from jitgrad.backends.cpu.llvm_support import alloca_in_entry, for_range, index
from jitgrad.backends.kernel import Index


def emit_prefix_and_reverse(kc, op) -> None:
    """Two results of one 1-d operand: its running sum, and the operand reversed."""
    (x,), (prefix, reverse) = op.operands, op.results
    b, ctx = kc.builder, kc.ctx
    n = x.type.shape[0]
    total = ctx.const_of(0, x.type.dtype)
    running = alloca_in_entry(b, total.type, "running")
    b.store(total, running)
    with for_range(b, n, "prefix") as i:
        item = kc.load(x, Index(x.type.shape, flat=i))
        acc = ctx.add(b.load(running, typ=total.type), item)
        b.store(acc, running)
        kc.store(prefix, Index(x.type.shape, flat=i), acc)
        kc.store(reverse, Index(x.type.shape, flat=b.sub(index(n - 1), i)), item)
