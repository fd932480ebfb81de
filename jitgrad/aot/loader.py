"""Loading an artifact written by `jitgrad.aot.export` and calling it with the original
pytree interface, through ctypes only.

This module imports nothing of jitgrad's compiler and not llvmlite (only numpy, ctypes,
json, hashlib), so a process that serves or trains from an artifact needs neither.
Before the library is opened, the manifest's own checksum and every file's SHA-256 are
checked, then the CPU: its architecture and the flags the artifact's target needs, as
/proc/cpuinfo reports them. Anything wrong raises an `ArtifactError` saying what; the
library is never opened on a machine that could not run it.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform

import numpy as np

from .targets import cpuinfo_flags          # platform and dataclasses only: no compiler

FORMAT = "jitgrad-aot"
ABI_VERSION = 1


def _manifest_dtype(entry: dict) -> np.dtype:
    """The NumPy dtype of a manifest's argument or result. bfloat16 is stored by NumPy as
    an opaque 2-byte type (`<V2`, which reads back as `void16`), so it is recognized by
    jitgrad's own dtype name and taken from ml_dtypes, as the compiler does."""
    if entry.get("jitgrad_dtype") == "bf16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(entry["dtype"])


class ArtifactError(Exception):
    """An artifact that cannot be used here: see the subclasses. Not a JitgradError:
    importing `jitgrad.errors` loads jitgrad's IR package (66 ms here), which a process
    that only runs artifacts should not pay."""


class ArtifactIntegrityError(ArtifactError):
    """The manifest or a file does not match its checksum (edited, truncated, replaced)."""


class ArtifactIndexError(ArtifactError, IndexError):
    """A run-time index was out of range (the library's ERROR_INDEX_OUT_OF_RANGE), where
    NumPy raises IndexError."""


INDEX_OUT_OF_RANGE = 4
"""The entry points' error code for an out-of-range run-time index (cglue.ERRORS)."""


class ArtifactCPUError(ArtifactError):
    """This machine lacks the architecture or a CPU feature the artifact was built for."""


class ArtifactSignatureError(ArtifactError, TypeError):
    """Arguments that do not match the exported signature (structure, shape or dtype)."""


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest without its `checksum` field, in a canonical JSON form."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_manifest(path: str) -> dict:
    manifest_path = os.path.join(path, "manifest.json")
    try:
        with open(manifest_path, "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a jitgrad artifact: it has no manifest.json") from None
    except (OSError, ValueError) as err:
        raise ArtifactIntegrityError(f"{manifest_path} cannot be read as JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{manifest_path} is not a jitgrad artifact manifest")
    if manifest.get("checksum") != manifest_digest(manifest):
        raise ArtifactIntegrityError(f"{manifest_path} was modified after the artifact was built "
                                     "(its checksum does not match)")
    if manifest.get("abi_version") != ABI_VERSION:
        raise ArtifactError(f"{path} uses ABI version {manifest.get('abi_version')}; this loader reads {ABI_VERSION}")
    for name, digest in manifest["files"].items():
        file_path = os.path.join(path, name)
        if os.path.basename(name) != name:
            raise ArtifactIntegrityError(f"the manifest names a file outside the artifact: {name!r}")
        try:
            with open(file_path, "rb") as f:
                actual = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            raise ArtifactIntegrityError(f"{file_path} is missing") from None
        if actual != digest:
            raise ArtifactIntegrityError(f"{file_path} was modified after the artifact was built "
                                         "(its SHA-256 does not match the manifest)")
    return manifest


def check_cpu(target: dict) -> None:
    """Raise ArtifactCPUError unless this machine can run code built for `target`."""
    machine = platform.machine()
    if target["arch"] != machine:
        raise ArtifactCPUError(f"the artifact is built for {target['arch']} ({target['name']}); this machine is "
                               f"{machine}")
    flags = cpuinfo_flags()
    missing = [flag for flag in target["cpu_flags"] if flag not in flags]
    if missing:
        raise ArtifactCPUError(f"this CPU lacks {', '.join(missing)}, which the artifact's target "
                               f"{target['name']} ({target['cpu']}) needs; build it for a lower level "
                               "(--target x86-64-v3) or on a machine like this one")


def _data_pointer_reader():
    """A fast reader of an ndarray's data pointer: NumPy's array struct keeps it right
    after the object header (`PyArrayObject_fields.data`), read there with ctypes in
    0.25 us where `__array_interface__` costs 2 us. Checked against NumPy's own answer on
    arrays of several kinds at import; where the layout differs, the slow reader."""
    header = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)
    read = ctypes.c_void_p.from_address

    def fast(array: np.ndarray) -> int:
        return read(id(array) + header).value or 0

    def slow(array: np.ndarray) -> int:
        return array.__array_interface__["data"][0]

    samples = [np.arange(8.0), np.zeros((3, 5), np.float32), np.empty(0), np.ones(1 << 16, np.int8)[16:]]
    return fast if all(fast(a) == slow(a) for a in samples) else slow


_data_pointer = _data_pointer_reader()


def _unflatten(tree: dict, leaves):
    kind = tree["kind"]
    if kind == "leaf":
        return next(leaves)
    if kind == "none":
        return None
    children = [_unflatten(c, leaves) for c in tree["children"]]
    if kind == "tuple":
        return tuple(children)
    if kind == "list":
        return children
    return dict(zip(tree["keys"], children, strict=True))


def _flatten(tree: dict, value, leaves: list, where: str) -> None:
    kind = tree["kind"]
    if kind == "leaf":
        leaves.append(value)
        return
    if kind == "none":
        if value is not None:
            raise ArtifactSignatureError(f"{where} must be None")
        return
    if kind == "dict":
        if not isinstance(value, dict) or sorted(value) != sorted(tree["keys"]):
            raise ArtifactSignatureError(f"{where} must be a dict with keys {sorted(tree['keys'])}")
        for key, child in zip(tree["keys"], tree["children"], strict=True):
            _flatten(child, value[key], leaves, f"{where}[{key!r}]")
        return
    expected = tuple if kind == "tuple" else list
    if not isinstance(value, expected) or len(value) != len(tree["children"]):
        raise ArtifactSignatureError(f"{where} must be a {expected.__name__} of {len(tree['children'])} items")
    for k, (child, item) in enumerate(zip(tree["children"], value)):
        _flatten(child, item, leaves, f"{where}[{k}]")


class ArtifactFunction:
    """One exported function, called as the original: same pytree of arrays in, same
    pytree of new arrays out. Arguments must have the exported shapes and dtypes."""

    def __init__(self, library: ctypes.CDLL, spec: dict):
        self.name = spec["name"]
        self.spec = spec
        try:
            self._function = getattr(library, spec["symbol"])
            workspace_size = getattr(library, spec["workspace_symbol"])
        except AttributeError:
            raise ArtifactIntegrityError(f"the library has no function {spec['symbol']}") from None
        workspace_size.restype = ctypes.c_size_t
        workspace_size.argtypes = []
        if workspace_size() != spec["workspace_bytes"]:
            raise ArtifactIntegrityError(f"{spec['symbol']} does not match the manifest (workspace size)")
        self._inputs = [(_manifest_dtype(a), tuple(a["shape"]), a["path"]) for a in spec["inputs"]]
        self._outputs = [(_manifest_dtype(a), tuple(a["shape"])) for a in spec["outputs"]]
        tree = spec["input_tree"]
        self._flat_inputs = tree["kind"] == "tuple" and all(c["kind"] == "leaf" for c in tree["children"])
        self._single_output = spec["output_tree"]["kind"] == "leaf"
        self._function.restype = ctypes.c_int
        self._function.argtypes = [ctypes.c_void_p] * (len(self._inputs) + len(self._outputs) + 1)

    @property
    def workspace_bytes(self) -> int:
        return self.spec["workspace_bytes"]

    def __call__(self, *args):
        tree = self.spec["input_tree"]
        if self._flat_inputs and len(args) == len(self._inputs):
            leaves = args
        else:
            leaves = []
            _flatten(tree, args, leaves, "args")
        pointers = []
        keep = []                           # arrays made here live until the call returns
        for value, (dtype, shape, path) in zip(leaves, self._inputs, strict=True):
            array = value if type(value) is np.ndarray else np.asarray(value)
            if array.dtype != dtype or array.shape != shape:
                raise ArtifactSignatureError(f"{self.name}: {path} must be {dtype.name}{list(shape)}, got "
                                             f"{array.dtype.name}{list(array.shape)}")
            if not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
            keep.append(array)
            pointers.append(_data_pointer(array))
        outputs = [np.empty(shape, dtype) for dtype, shape in self._outputs]
        pointers += [_data_pointer(o) for o in outputs]
        code = self._function(*pointers, None)
        if code == INDEX_OUT_OF_RANGE:
            raise ArtifactIndexError(f"{self.name}: an index was out of bounds for its axis (NumPy raises "
                                     "IndexError; jitgrad.jit names the line)")
        if code:
            raise ArtifactError(f"{self.name} returned error code {code} (see the library's header)")
        if self._single_output:
            return outputs[0]
        return _unflatten(self.spec["output_tree"], iter(outputs))


class Artifact:
    """A loaded library: each function is an attribute (and an item); an artifact of one
    function is itself callable."""

    def __init__(self, path: str, manifest: dict, library: ctypes.CDLL):
        self.path = path
        self.manifest = manifest
        self._library = library           # keeps the code loaded as long as the functions
        self.functions = {spec["name"]: ArtifactFunction(library, spec) for spec in manifest["functions"]}

    def __getattr__(self, name: str):
        functions = self.__dict__.get("functions", {})
        if name in functions:
            return functions[name]
        raise AttributeError(f"the artifact has no function {name!r} (it has {', '.join(functions)})")

    def __getitem__(self, name: str) -> ArtifactFunction:
        return self.functions[name]

    def __call__(self, *args):
        if len(self.functions) != 1:
            raise TypeError(f"the artifact has several functions ({', '.join(self.functions)}): call one by name")
        return next(iter(self.functions.values()))(*args)


def load(path: str) -> Artifact:
    """The artifact in directory `path`, checked (manifest and file checksums, CPU) and
    loaded with ctypes."""
    try:
        return _load(path)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        if isinstance(err, ArtifactError):
            raise
        raise ArtifactIntegrityError(f"{os.path.join(path, 'manifest.json')} is malformed: "
                                     f"{type(err).__name__}: {err}") from None


def _load(path: str) -> Artifact:
    manifest = _read_manifest(path)
    check_cpu(manifest["target"])
    shared = manifest["link"].get("shared")
    if not shared:
        raise ArtifactCPUError(f"{path} holds no shared library for this machine (built for "
                               f"{manifest['target']['name']}: link its object with the target's toolchain)")
    try:
        library = ctypes.CDLL(os.path.abspath(os.path.join(path, shared)))
    except OSError as err:
        raise ArtifactError(f"{shared} could not be loaded: {err}") from None
    try:
        abi = library[f"{manifest['name']}_abi_version"]
    except AttributeError:
        raise ArtifactIntegrityError(f"{shared} is not the library the manifest describes") from None
    abi.restype = ctypes.c_int
    if abi() != ABI_VERSION:
        raise ArtifactError(f"{shared} has ABI version {abi()}; this loader reads {ABI_VERSION}")
    return Artifact(path, manifest, library)
