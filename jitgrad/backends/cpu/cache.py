"""The on-disk cache of compiled code: optimization and code generation are the slow
stages (hundreds of ms for a large module, see TECH-NOTES), so their result — a
relocatable object file plus the optimized LLVM IR for inspection — is kept on disk.

The key hashes everything the machine code depends on: the LLVM IR built from the
jitgrad IR (which embeds the program, shapes and the libraries found), the optimization
level, the host CPU name and features, the LLVM and llvmlite versions and jitgrad's
version. Entries are written atomically (a temporary file renamed into place) and carry
a checksum; an entry that is truncated, corrupt or written by another format is
discarded and rebuilt, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass

MAGIC = b"JITGRAD-OBJ\x01"
MAX_BYTES = 512 * 2 ** 20      # the cache keeps its most recently used entries within this


@dataclass
class CacheEntry:
    object_code: bytes
    optimized_ir: str


def cache_key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class DiskCache:
    """A directory of `<key>.o` entries."""

    def __init__(self, directory: str):
        self.directory = os.path.expanduser(directory)

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.o")

    def load(self, key: str) -> CacheEntry | None:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
            os.utime(path)              # recently used: pruning keeps it
        except OSError:
            return None
        entry = _decode(data, key)
        if entry is None:
            try:
                os.remove(path)         # stale or corrupt: rebuild
            except OSError:
                pass
        return entry

    def store(self, key: str, entry: CacheEntry) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".o")
            with os.fdopen(fd, "wb") as f:
                f.write(_encode(entry, key))
            os.replace(tmp, self._path(key))
            self.prune()
        except OSError:
            pass                        # a read-only or full disk only costs a recompile

    def prune(self, max_bytes: int = MAX_BYTES) -> None:
        """Delete the least recently used entries until the cache fits `max_bytes`."""
        entries = []
        for name in os.listdir(self.directory):
            if name.endswith(".o") and not name.startswith("."):
                try:
                    st = os.stat(os.path.join(self.directory, name))
                except OSError:
                    continue
                entries.append((st.st_mtime, st.st_size, name))
        total = sum(size for _, size, _ in entries)
        for _, size, name in sorted(entries):
            if total <= max_bytes:
                break
            try:
                os.remove(os.path.join(self.directory, name))
            except OSError:
                pass
            total -= size


def _encode(entry: CacheEntry, key: str) -> bytes:
    ir_bytes = entry.optimized_ir.encode()
    payload = entry.object_code + ir_bytes
    header = json.dumps({"key": key, "object_bytes": len(entry.object_code), "ir_bytes": len(ir_bytes),
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    return MAGIC + len(header).to_bytes(4, "little") + header + payload


def _decode(data: bytes, key: str) -> CacheEntry | None:
    try:
        if not data.startswith(MAGIC):
            return None
        offset = len(MAGIC)
        size = int.from_bytes(data[offset:offset + 4], "little")
        header = json.loads(data[offset + 4:offset + 4 + size])
        payload = data[offset + 4 + size:]
        if header["key"] != key or hashlib.sha256(payload).hexdigest() != header["sha256"]:
            return None
        n_obj, n_ir = header["object_bytes"], header["ir_bytes"]
        if len(payload) != n_obj + n_ir:
            return None
        return CacheEntry(payload[:n_obj], payload[n_obj:].decode())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
