"""Cubins kept on disk: the PTX of an executable linked by nvJitLink for the device's
exact architecture once, then loaded from the disk cache by every later process.

A cubin is machine code the GPU runs, so it is kept exactly as the CPU's object code is
(`jitgrad.backends.cpu.cache.DiskCache`, docs/cache-security.md): in the private
`config.cache_dir`, each entry authenticated by an HMAC-SHA256 under the directory's
key, opened without following links; an entry that is truncated, tampered with or
written under another key is discarded and linked again, and a directory that is not
private to the user is refused (a warning, and no disk cache).

The key hashes everything the cubin depends on: the PTX text, the architecture it is
linked for, the CUDA driver's version (the driver loads the cubin; a new driver may
want it built again), the nvJitLink version that links it and jitgrad's version. An
entry's object code must also be an ELF image (a cubin) before it is handed to the
driver.

`cubin_for` needs no GPU: the tests build, store, reload and reject entries on any
machine with nvJitLink. The launch path (runtime.py) calls it with the device's
architecture and driver version, and loads the PTX through the driver's own JIT where
nvJitLink is not installed.
"""
from __future__ import annotations

from typing import Callable

from jitgrad.config import config
from ..cpu.cache import CacheEntry, DiskCache, cache_key
from . import ptx as ptx_tools
from .errors import PTXToolError

ELF_MAGIC = b"\x7fELF"
CONFIGURED: object = object()
"""`cubin_for`'s default directory: `config.cache_dir` (itself None when the disk cache is off)."""
FORMAT = "jitgrad-cubin-1"
"""Part of every key: a change of what an entry holds changes it."""


def _versions() -> str:
    from jitgrad import __version__ as jitgrad_version
    try:
        from cuda.bindings import nvjitlink
        linker = ".".join(map(str, nvjitlink.version()))
    except Exception:        # not installed: then nothing is linked, and the key is never used
        linker = "none"
    return f"jitgrad {jitgrad_version}, nvJitLink {linker}"


def cubin_key(ptx: str, arch: str, driver_version: int) -> str:
    """The disk-cache key of the cubin of `ptx` for `arch` under driver `driver_version`."""
    return cache_key(FORMAT, ptx, arch, str(int(driver_version)), _versions())


def cubin_for(ptx: str, arch: str, driver_version: int, cache_dir: "str | None | object" = CONFIGURED,
              link: Callable[[str, str], bytes] = ptx_tools.nvjitlink_cubin) -> bytes:
    """The cubin of `ptx` for `arch` (e.g. "sm_90"): from the disk cache in `cache_dir`
    (by default `config.cache_dir`; None: no disk cache), else linked by `link` and stored."""
    directory = config.cache_dir if cache_dir is CONFIGURED else cache_dir
    cache = DiskCache(directory) if directory else None
    key = cubin_key(ptx, arch, driver_version)
    if cache is not None:
        entry = cache.load(key)
        if entry is not None and entry.object_code.startswith(ELF_MAGIC) and entry.optimized_ir == arch:
            return entry.object_code
    cubin = link(ptx, arch)
    if not cubin.startswith(ELF_MAGIC):
        raise PTXToolError(f"nvJitLink ({arch}) returned something that is not a cubin")
    if cache is not None:
        cache.store(key, CacheEntry(cubin, arch))
    return cubin
