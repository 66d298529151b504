"""Components by sha256 digest: compiled once, kept in memory, and cached on this host's disk.

Compiling a Python agent takes ~6-12 s; loading its compiled form takes milliseconds. A compiled
artifact is native code, so loading one is as dangerous as running an unknown binary. The rules:

- entries are keyed by module digest *and* the engine fingerprint (wasmtime version, engine
  settings, machine), so an artifact is only ever loaded into the engine kind that produced it;
- every entry is sealed with an HMAC-SHA256 under a key that only this host holds (``host.key``,
  created with mode 0600 on first use); an entry that is corrupt, truncated or was copied from
  elsewhere fails the check and is recompiled from the module bytes, never trusted;
- entries are written to a temporary file and renamed into place, so readers never see half of one.

Artifacts never travel over the network: the mesh ships module bytes and every host compiles.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from wasmtime import Engine, WasmtimeError
from wasmtime.component import Component

__all__ = ["CacheKeyRefused", "CacheStats", "ComponentCache", "digest_of"]

_log = logging.getLogger(__name__)

_MAGIC = b"DAGRCW1\n"
_MAC_SIZE = 32


def digest_of(wasm: bytes) -> str:
    """The module address used everywhere: lowercase hex sha256 of the component bytes."""
    return hashlib.sha256(wasm).hexdigest()


class CacheKeyRefused(Exception):
    """The sealing key on disk is not safe to trust; the disk cache is not used."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"the compiled-cache key {path} is refused: {reason}. Components are compiled in memory "
            f"only until it is fixed: delete it (a new one is made, mode 0600) or chmod 600 it."
        )
        self.path = path
        self.reason = reason


class CacheStats:
    """Counters, for tests and ``dagr run --json``."""

    def __init__(self) -> None:
        self.memory_hits = 0
        self.disk_hits = 0
        self.compiles = 0
        self.rejected_entries = 0


class ComponentCache:
    """Digest -> compiled Component, through a bounded in-memory LRU and an optional disk cache."""

    def __init__(
        self,
        engine: Engine,
        *,
        fingerprint: str,
        directory: Path | None,
        memory_entries: int = 64,
    ) -> None:
        self._engine = engine
        self._fingerprint = fingerprint
        self._dir = directory / fingerprint if directory is not None else None
        self._key_path = directory / "host.key" if directory is not None else None
        self._memory: OrderedDict[str, Component] = OrderedDict()
        self._memory_entries = memory_entries
        self._lock = threading.Lock()
        # One compile per digest at a time: two tasks for a new module must not compile it twice.
        self._compiling: dict[str, threading.Lock] = {}
        self.stats = CacheStats()
        #: Why the disk cache is not used (an unsafe key), once that is known.
        self.refused: CacheKeyRefused | None = None

    # -- public -----------------------------------------------------------------------------

    def get(self, digest: str, wasm: Callable[[], bytes]) -> Component:
        """The compiled component for ``digest``; ``wasm()`` supplies the bytes if it must compile.

        Raises ``WasmtimeError`` if the bytes do not compile; the caller translates it.
        """
        component = self._from_memory(digest)
        if component is not None:
            return component
        with self._compile_lock(digest):
            component = self._from_memory(digest)
            if component is not None:
                return component
            component = self._from_disk(digest)
            if component is None:
                data = wasm()
                if digest_of(data) != digest:
                    raise ValueError(f"module bytes do not match digest {digest}")
                component = Component(self._engine, data)
                self.stats.compiles += 1
                self._to_disk(digest, component)
            self._remember(digest, component)
            return component

    def cached(self, digest: str) -> Component | None:
        """The component if it is in memory or on disk already; never compiles."""
        component = self._from_memory(digest)
        if component is not None:
            return component
        with self._compile_lock(digest):
            component = self._from_disk(digest)
            if component is not None:
                self._remember(digest, component)
            return component

    def entry_path(self, digest: str) -> Path | None:
        """Where the compiled entry for ``digest`` lives on disk (for tests and diagnostics)."""
        return self._dir / f"{digest}.cwasm" if self._dir is not None else None

    def forget(self, digest: str) -> None:
        """Drop ``digest`` from memory (the disk entry stays)."""
        with self._lock:
            self._memory.pop(digest, None)

    # -- memory -----------------------------------------------------------------------------

    def _from_memory(self, digest: str) -> Component | None:
        with self._lock:
            component = self._memory.get(digest)
            if component is not None:
                self._memory.move_to_end(digest)
                self.stats.memory_hits += 1
            return component

    def _remember(self, digest: str, component: Component) -> None:
        with self._lock:
            self._memory[digest] = component
            self._memory.move_to_end(digest)
            while len(self._memory) > self._memory_entries:
                self._memory.popitem(last=False)

    def _compile_lock(self, digest: str) -> threading.Lock:
        with self._lock:
            return self._compiling.setdefault(digest, threading.Lock())

    # -- disk -------------------------------------------------------------------------------

    def _host_key(self) -> bytes:
        """This host's sealing key, created on first use (exclusively, mode 0600).

        An existing key is trusted only if it is a regular file of 32 bytes owned by this user and
        readable by no one else: a key someone else could plant or read would let them forge
        sealed entries, that is, run native code of their choice for a benign digest.
        """
        assert self._key_path is not None
        key = self._read_key()
        if key is not None:
            return key
        self._key_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._key_path.parent, prefix=".host.key.")  # 0600
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() refuses to overwrite: if another process created the key meanwhile, everyone
            # uses the one that won (and checks it like any other).
            os.link(tmp, self._key_path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        key = self._read_key()
        if key is None:
            raise CacheKeyRefused(self._key_path, "it vanished right after it was created")
        return key

    def _read_key(self) -> bytes | None:
        """The key if it exists and is safe; None if absent; ``CacheKeyRefused`` if unsafe."""
        assert self._key_path is not None
        try:
            fd = os.open(self._key_path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: a symlink
            raise CacheKeyRefused(self._key_path, f"it cannot be opened safely ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise CacheKeyRefused(self._key_path, "it is not a regular file")
            if info.st_uid != os.geteuid():
                raise CacheKeyRefused(self._key_path, f"it is owned by uid {info.st_uid}, not by this user")
            if info.st_mode & 0o077:
                raise CacheKeyRefused(
                    self._key_path,
                    f"its mode is {stat.S_IMODE(info.st_mode):04o}: others may read or write it",
                )
            key = os.read(fd, 64)
        finally:
            os.close(fd)
        if len(key) != 32:
            raise CacheKeyRefused(self._key_path, f"it holds {len(key)} bytes, not 32")
        return key

    def _seal(self, digest: str, body: bytes) -> bytes:
        mac = hmac.new(self._host_key(), digestmod=hashlib.sha256)
        mac.update(self._fingerprint.encode())
        mac.update(digest.encode())
        mac.update(body)
        return mac.digest()

    def _disk_usable(self) -> bool:
        """Whether the disk cache may be used: it is configured and its key is safe."""
        if self._dir is None or self.refused is not None:
            return False
        try:
            self._host_key()
        except CacheKeyRefused as exc:
            self.refused = exc
            _log.error("%s", exc)
            return False
        return True

    def _from_disk(self, digest: str) -> Component | None:
        path = self.entry_path(digest)
        if path is None or not self._disk_usable():
            return None
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        header = len(_MAGIC) + _MAC_SIZE
        body = blob[header:]
        if (
            len(blob) <= header
            or blob[: len(_MAGIC)] != _MAGIC
            or not hmac.compare_digest(blob[len(_MAGIC) : header], self._seal(digest, body))
        ):
            self.stats.rejected_entries += 1
            _log.warning("compiled cache entry %s failed its integrity check; recompiling", path)
            return None
        try:
            # From the verified bytes, not the file: the file could change after the check.
            component = Component.deserialize(self._engine, body)
        except WasmtimeError as exc:
            self.stats.rejected_entries += 1
            _log.warning("compiled cache entry %s did not load (%s); recompiling", path, exc)
            return None
        self.stats.disk_hits += 1
        return component

    def _to_disk(self, digest: str, component: Component) -> None:
        path = self.entry_path(digest)
        if path is None or not self._disk_usable():
            return
        body = bytes(component.serialize())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{digest[:12]}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(_MAGIC)
                out.write(self._seal(digest, body))
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
