"""CPU targets an artifact can be built for: the LLVM triple, CPU name and features, the
libmvec vector variants the code may call, and the CPU flags a machine must report
(`/proc/cpuinfo`) to run it.

A portable level (x86-64-v3, x86-64-v4) names a set of instructions rather than one
chip, so an artifact built for it runs on any machine of that level. Vector math follows
the level: AVX-512 libmvec variants (`_ZGVe...`) only for v4, AVX2 ones (`_ZGVd...`)
for v3 and v4, scalar libm elsewhere. LLVM's generic x86-64-v4 tunes for 256-bit vectors;
`-prefer-256-bit` lets it use the 512-bit ones, as the JIT does on an AVX-512 host.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass

X86_V2_FLAGS = ("cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3")
X86_V3_FLAGS = X86_V2_FLAGS + ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")
X86_V4_FLAGS = X86_V3_FLAGS + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")

LLVM_TO_CPUINFO = {
    "sse3": "pni", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "sahf": "lahf_lm", "lzcnt": "abm", "bmi": "bmi1",
    "cx16": "cx16", "pclmul": "pclmulqdq", "rdrnd": "rdrand", "avxvnni": "avx_vnni", "prfchw": "3dnowprefetch",
    "avx512vnni": "avx512_vnni", "avx512bitalg": "avx512_bitalg", "avx512vbmi2": "avx512_vbmi2",
    "avx512vpopcntdq": "avx512_vpopcntdq", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
}
"""LLVM feature names whose /proc/cpuinfo flag is spelled differently (the rest are the same)."""


@dataclass(frozen=True)
class Target:
    name: str
    triple: str
    cpu: str
    features: str
    """LLVM feature string (empty: those the CPU name implies)."""
    arch: str
    """`platform.machine()` of the machines that can run it."""
    vector_isas: tuple[tuple[str, int], ...]
    """libmvec variants the code may call: (ISA letter, vector bits), widest first."""
    cpu_flags: tuple[str, ...]
    """/proc/cpuinfo flags a machine must have to run the code."""
    host: bool = False


def cpuinfo_flags() -> set[str]:
    """This machine's CPU flags as /proc/cpuinfo spells them (x86 `flags`, Arm `Features`)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def _host_target() -> Target:
    import llvmlite.binding as llvm
    name = llvm.get_host_cpu_name()
    features = llvm.get_host_cpu_features().flatten()
    enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
    flags = cpuinfo_flags()
    required = tuple(sorted(flag for flag in (LLVM_TO_CPUINFO.get(f, f) for f in enabled) if flag in flags))
    isas = []
    if "avx512f" in enabled:
        isas.append(("e", 512))
    if "avx2" in enabled:
        isas.append(("d", 256))
    return Target("host", llvm.get_process_triple(), name, features, platform.machine(), tuple(isas), required,
                  host=True)


TARGETS = {
    "x86-64-v3": Target("x86-64-v3", "x86_64-unknown-linux-gnu", "x86-64-v3", "", "x86_64", (("d", 256),),
                        X86_V3_FLAGS),
    "x86-64-v4": Target("x86-64-v4", "x86_64-unknown-linux-gnu", "x86-64-v4", "-prefer-256-bit", "x86_64",
                        (("e", 512), ("d", 256)), X86_V4_FLAGS),
    "aarch64": Target("aarch64", "aarch64-unknown-linux-gnu", "generic", "+neon", "aarch64", (), ()),
}


def target_named(name: str) -> Target:
    if name == "host":
        return _host_target()
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}: choose host, {', '.join(TARGETS)}") from None
