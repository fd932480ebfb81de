"""Code generators, found by device name.

`backend_for(device)` returns the backend registered under that name (`config.device`
picks it for compiled functions). A backend registers a factory, or the dotted name of
one ("package.module:Class"), so that looking up "cpu" is what first loads LLVM.
"""
from __future__ import annotations

import importlib
import threading
from typing import Callable

_FACTORIES: dict[str, str | Callable] = {
    "cpu": "jitgrad.backends.cpu.backend:CPUBackend",
    "cuda": "jitgrad.backends.cuda.backend:CUDABackend",
    "gpu": "jitgrad.backends.cuda.backend:CUDABackend",
    "cuda-emulator": "jitgrad.backends.cuda.backend:GridEmulatorBackend",
}
_INSTANCES: dict[str, object] = {}
_LOCK = threading.Lock()


def register_backend(device: str, factory: str | Callable) -> None:
    """Make `config.device = device` compile with `factory()`'s backend (a callable
    returning a `jitgrad.backends.base.Backend`, or "package.module:name" of one)."""
    with _LOCK:
        _FACTORIES[device] = factory
        _INSTANCES.pop(device, None)


def unregister_backend(device: str) -> None:
    with _LOCK:
        _FACTORIES.pop(device, None)
        _INSTANCES.pop(device, None)


def registered_devices() -> list[str]:
    return sorted(_FACTORIES)


def backend_for(device: str):
    """The backend for `device` (one instance per device)."""
    with _LOCK:
        backend = _INSTANCES.get(device)
        if backend is not None:
            return backend
        factory = _FACTORIES.get(device)
        if factory is None:
            from jitgrad.errors import CompilationError
            raise CompilationError("backend", f"no backend for device {device!r} "
                                   f"(there are: {', '.join(sorted(_FACTORIES))})")
        if isinstance(factory, str):
            module_name, _, name = factory.partition(":")
            factory = getattr(importlib.import_module(module_name), name)
        backend = _INSTANCES[device] = factory()
        return backend
