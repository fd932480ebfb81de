"""Checking the PTX of a family of CUDA kernels: built in a subprocess (an LLVM abort in the
NVPTX backend fails the test, not the run), assembled by ptxas for every default
architecture with no spill or local-memory warning, linked to a cubin by nvJitLink."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def emit_family(out_dir: str, module_name: str, functions) -> None:
    """(In the subprocess.) One module holding the launches of `functions`, (IR function,
    symbol) pairs compiled for the GPU; its PTX per architecture and the kernel names
    into `out_dir`."""
    from llvmlite import ir
    from jitgrad.backends import backend_for
    from jitgrad.backends.cuda import ptx as ptx_tools
    backend = backend_for("gpu")
    module = ir.Module(name=module_name)
    ptx_tools.prepare_module(module)
    names = []
    for fn, symbol in functions:
        _, _, launches = backend.build(fn, module=module, symbol=symbol)
        names.extend(launch.name for launch in launches)
    text = str(module)
    for arch in ptx_tools.DEFAULT_ARCHS:
        with open(os.path.join(out_dir, f"{arch}.ptx"), "w") as f:
            f.write(ptx_tools.emit_ptx(text, names, arch))
    with open(os.path.join(out_dir, "kernels.json"), "w") as f:
        json.dump(names, f)


def assert_family_ptx_accepted(test_file: str, out_dir, min_kernels: int) -> None:
    """Run `python test_file emit out_dir` (which calls `emit_family`) and check what it
    wrote: every kernel an entry of every architecture's PTX, no unresolved call, ptxas
    without spills, nvJitLink making an ELF cubin."""
    from jitgrad.backends.cuda import ptx as ptx_tools
    assert ptx_tools.ptxas_path() is not None, "ptxas not found: pip install -e '.[test]' installs nvidia-cuda-nvcc"
    assert ptx_tools.nvjitlink_available(), "nvJitLink not found: the test extras install nvidia-nvjitlink"
    run = subprocess.run([sys.executable, os.path.abspath(test_file), "emit", str(out_dir)],
                         cwd=os.path.dirname(os.path.abspath(test_file)), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"PTX generation failed (exit {run.returncode}):\n{run.stderr[-4000:]}"
    with open(os.path.join(out_dir, "kernels.json")) as f:
        names = json.load(f)
    assert len(names) >= min_kernels
    for arch in ptx_tools.DEFAULT_ARCHS:
        with open(os.path.join(out_dir, f"{arch}.ptx")) as f:
            text = f.read()
        assert f".target {arch}" in text and all(f".entry {name}(" in text for name in names)
        assert ".extern .func" not in text, "an unresolved call (a math function libdevice lacks?)"
        warnings = ptx_tools.ptxas_check(text, arch, timeout=120)
        assert not [w for w in warnings if "spill" in w.lower() or "lmem" in w.lower()], (arch, warnings)
        assert ptx_tools.nvjitlink_cubin(text, arch)[:4] == b"\x7fELF"
