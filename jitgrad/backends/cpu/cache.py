"""The on-disk cache of compiled code: optimization and code generation are the slow
stages (hundreds of ms for a large module), so their result — a
relocatable object file plus the optimized LLVM IR for inspection — is kept on disk.

The key hashes everything the machine code depends on: the LLVM IR built from the
jitgrad IR (which embeds the program, shapes and the libraries found), the optimization
level, the host CPU name and features, the LLVM and llvmlite versions and jitgrad's
version.

An entry is machine code that this process will run, so the cache is trusted only as
far as the people who can write to it (docs/cache-security.md):

- the directory is created 0700, and a directory that is a symbolic link, is not
  owned by this user or is writable by group or others is refused — a warning, once,
  and no disk cache for it in this process (as SSH and pip do);
- every entry carries an HMAC-SHA256 under a 32-byte key kept in a 0600 file of that
  directory (`hmac-key`, created atomically); an entry written without the key —
  truncated, tampered with, copied from another machine — is discarded and rebuilt;
- entries are opened without following symbolic links and without blocking (a FIFO
  planted under an entry's name is not read), and must be regular files;
- `prune` removes only files this cache wrote (`<64 hex digits>.o` beginning with the
  cache's magic) and its own temporary files, never anything else in the directory.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass

MAGIC_PREFIX = b"JITGRAD-OBJ"
MAGIC = MAGIC_PREFIX + b"\x02"
MAX_BYTES = 512 * 2 ** 20      # the cache keeps its most recently used entries within this
KEY_FILE = "hmac-key"
KEY_BYTES = 32
TAG_BYTES = 32                 # HMAC-SHA256
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 3600       # a temporary file older than this was left by a crashed writer
ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.o\Z")
TMP_NAME = re.compile(re.escape(TMP_PREFIX) + r"[A-Za-z0-9_]+\.o\Z")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class CacheSecurityWarning(UserWarning):
    """The disk cache directory is not private to this user; the disk cache is off."""


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


_refused: dict[str, str] = {}          # directory -> why it is not used (warned once)
_state_lock = threading.Lock()


class DiskCache:
    """A private directory of `<key>.o` entries authenticated with an HMAC.

    `uid` is the user the directory and its files must belong to (the effective user by
    default; the tests pass another to check the refusal of a foreign directory).
    A cache whose directory is refused is `usable == False`: it loads nothing and
    stores nothing, so compiling just costs the code generation it would have saved.
    """

    def __init__(self, directory: str, uid: int | None = None):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self.uid = os.geteuid() if uid is None else uid
        self._secret = self._open()

    @property
    def usable(self) -> bool:
        return self._secret is not None

    # ------------------------------------------------------------------ trust
    def _open(self) -> bytes | None:
        """The HMAC key, after the directory and key file passed their checks; else None
        (and a warning the first time this directory is refused)."""
        with _state_lock:
            if self.directory in _refused:
                return None
            problem = _directory_problem(self.directory, self.uid)
            secret = None
            if problem is None:
                secret, problem = _read_or_create_secret(self.directory, self.uid)
            if problem is not None:
                _refused[self.directory] = problem
                warnings.warn(f"jitgrad: not using the compile cache {self.directory}: {problem}. Compiled code is "
                              "not cached on disk in this process (docs/cache-security.md)", CacheSecurityWarning,
                              stacklevel=2)
            return secret

    def _path(self, key: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError(f"a disk-cache key is 64 lowercase hex digits, not {key!r}")
        return os.path.join(self.directory, f"{key}.o")

    # ------------------------------------------------------------------ entries
    def load(self, key: str) -> CacheEntry | None:
        if not self.usable:
            return None
        path = self._path(key)
        data = _read_own_file(path, self.uid, MAX_BYTES)
        if data is None:
            return None
        entry = _decode(data, key, self._secret)
        if entry is None:
            _remove_quietly(path)       # stale, corrupt or forged: rebuild
            return None
        try:
            os.utime(path, follow_symlinks=False)     # recently used: pruning keeps it
        except OSError:
            pass
        return entry

    def store(self, key: str, entry: CacheEntry) -> None:
        if not self.usable:
            return
        path, tmp = self._path(key), None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=TMP_PREFIX, suffix=".o")   # O_EXCL, 0600
            with os.fdopen(fd, "wb") as f:
                f.write(_encode(entry, key, self._secret))
            os.replace(tmp, path)
            tmp = None
            self.prune()
        except OSError:
            pass                        # a read-only or full disk only costs a recompile
        finally:
            if tmp is not None:
                _remove_quietly(tmp)

    def prune(self, max_bytes: int = MAX_BYTES) -> None:
        """Delete this cache's least recently used entries until they fit `max_bytes`,
        and temporary files that crashed writers left behind. Any other file — a
        user's `model.o`, a symbolic link, a file without the cache's magic — stays."""
        if not self.usable:
            return
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        now, entries = time.time(), []
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_uid != self.uid:
                continue
            if ENTRY_NAME.match(name):
                entries.append((st.st_mtime, st.st_size, path))
            elif TMP_NAME.match(name) and now - st.st_mtime > STALE_TMP_SECONDS:
                _remove_quietly(path)
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= max_bytes:
                break
            total -= size
            head = _read_own_file(path, self.uid, len(MAGIC_PREFIX), whole=False)
            if head is not None and head.startswith(MAGIC_PREFIX):
                _remove_quietly(path)


# --------------------------------------------------------------------------- checks

def _directory_problem(directory: str, uid: int) -> str | None:
    """Why `directory` cannot hold trusted code (None: it can), creating it 0700 if absent."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        try:
            os.makedirs(os.path.dirname(directory), exist_ok=True)
            os.mkdir(directory, 0o700)
            os.chmod(directory, 0o700)           # whatever the umask
        except FileExistsError:
            pass                                 # created by a concurrent process: check it below
        except OSError as err:
            return f"it cannot be created ({err.strerror})"
        try:
            st = os.lstat(directory)
        except OSError as err:
            return f"it cannot be read ({err.strerror})"
    except OSError as err:
        return f"it cannot be read ({err.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != uid:
        return f"it is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if st.st_mode & 0o022:
        who = {0o022: "group and others", 0o020: "group", 0o002: "others"}[st.st_mode & 0o022]
        return f"it is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}); `chmod 700 {directory}` makes it private"
    return None


def _read_or_create_secret(directory: str, uid: int) -> tuple[bytes | None, str | None]:
    """The directory's HMAC key — created if absent (written to a private temporary file,
    then linked into place, so no process ever reads a partial key) — or the reason it
    cannot be trusted."""
    path = os.path.join(directory, KEY_FILE)
    if not os.path.lexists(path):
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX, suffix=".o")    # O_EXCL, 0600
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(KEY_BYTES))
            os.link(tmp, path)                   # fails if another process made the key first
        except FileExistsError:
            pass
        except OSError as err:
            return None, f"its key file cannot be created ({err.strerror})"
        finally:
            if tmp is not None:
                _remove_quietly(tmp)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as err:
        return None, f"its key file {KEY_FILE} cannot be opened ({err.strerror}; a symbolic link is refused)"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, f"its key file {KEY_FILE} is not a regular file"
        if st.st_uid != uid:
            return None, f"its key file {KEY_FILE} is owned by uid {st.st_uid}, not by this user (uid {uid})"
        if st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            return None, f"its key file {KEY_FILE} is readable or writable by others (mode {mode:04o})"
        secret = os.read(fd, KEY_BYTES + 1)
    except OSError as err:
        return None, f"its key file {KEY_FILE} cannot be read ({err.strerror})"
    finally:
        os.close(fd)
    if len(secret) != KEY_BYTES:
        return None, f"its key file {KEY_FILE} does not hold a {KEY_BYTES}-byte key"
    return secret, None


def _read_own_file(path: str, uid: int, limit: int, whole: bool = True) -> bytes | None:
    """The bytes of a regular file owned by `uid` (the first `limit` bytes, or None when
    `whole` and the file is longer). Never follows a symbolic link and never blocks:
    a FIFO or device under the name is opened non-blocking and rejected by its type."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or (whole and st.st_size > limit):
            return None
        chunks, remaining = [], min(st.st_size, limit)
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


# --------------------------------------------------------------------------- format

def _encode(entry: CacheEntry, key: str, secret: bytes) -> bytes:
    """MAGIC, HMAC tag, header length, JSON header (key and sizes), object code, IR."""
    ir_bytes = entry.optimized_ir.encode()
    header = json.dumps({"key": key, "object_bytes": len(entry.object_code), "ir_bytes": len(ir_bytes)}).encode()
    body = len(header).to_bytes(4, "little") + header + entry.object_code + ir_bytes
    return MAGIC + _tag(secret, body) + body


def _tag(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, MAGIC + body, hashlib.sha256).digest()


def _decode(data: bytes, key: str, secret: bytes) -> CacheEntry | None:
    """The entry, if `data` is an entry for `key` written with `secret`; else None."""
    try:
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + TAG_BYTES + 4:
            return None
        tag, body = data[len(MAGIC):len(MAGIC) + TAG_BYTES], data[len(MAGIC) + TAG_BYTES:]
        if not hmac.compare_digest(tag, _tag(secret, body)):
            return None
        size = int.from_bytes(body[:4], "little")
        header = json.loads(body[4:4 + size])
        payload = body[4 + size:]
        n_obj, n_ir = header["object_bytes"], header["ir_bytes"]
        if header["key"] != key or len(payload) != n_obj + n_ir:
            return None
        return CacheEntry(payload[:n_obj], payload[n_obj:].decode())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
