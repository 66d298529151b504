"""Agent state and inboxes in JetStream, as the sandbox reads them from its worker thread.

The sandbox calls ``StateView.get`` synchronously from the thread running the guest; these views
hop onto the host's event loop (``run_coroutine_threadsafe``) for each read and wait with a bound.
Reads are direct gets of the last message on a key's subject, so a deleted key still yields the
revision of its delete marker: the commit needs it to guard a re-creation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar, overload

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from ..invocation import Resolution, Scope, StateEntry, StateUnavailable
from ..payload import decode_map
from ._layout import INBOX_STREAM, STATE_BUCKET, cursor_key, inbox_subject, ledger_key, state_key
from ._tasks import TaskError, decode_resolution

__all__ = ["KvStateView", "LazyInbox", "LazyLedger", "StateReader", "encode_ledger"]

T = TypeVar("T")

STATE_STREAM = f"KV_{STATE_BUCKET}"
KV_PREFIX = f"$KV.{STATE_BUCKET}."
_READ_TIMEOUT_S = 5.0
_MAX_INBOX = 1000


def _on_loop(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T], what: str) -> T:
    """Run a read on the host's loop from the wasm thread, bounded; its failures as
    ``StateUnavailable`` (the guest gets ``error.unavailable``)."""
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    try:
        return future.result(timeout=_READ_TIMEOUT_S)
    except TimeoutError:
        future.cancel()
        raise StateUnavailable(f"no answer from {what} within {_READ_TIMEOUT_S} s") from None
    except StateUnavailable:
        raise
    except Exception as exc:
        raise StateUnavailable(f"{what}: {exc or type(exc).__name__}") from exc


class StateReader:
    """Async reads of the state bucket, shared by a host's invocations."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def entry(self, kv_key: str) -> StateEntry | None:
        """The value and revision under ``kv_key``; None (revision 0 via ``revision``) if absent."""
        found = await self.raw(kv_key)
        if found is None:
            return None
        value, revision, deleted = found
        return None if deleted else StateEntry(value, revision)

    async def raw(self, kv_key: str) -> tuple[bytes, int, bool] | None:
        """(value, revision, deleted) of the last message on the key, or None if it never existed."""
        try:
            msg = await self._js.get_msg(STATE_STREAM, subject=KV_PREFIX + kv_key, direct=True)
        except NotFoundError:
            return None
        operation = (msg.headers or {}).get("KV-Operation")
        return (msg.data or b""), int(msg.seq or 0), operation in ("DEL", "PURGE")

    async def keys(self, kv_prefix: str) -> list[str]:
        """Every live key under ``kv_prefix`` (which ends with a dot)."""
        return list(await self.entries(kv_prefix))

    async def entries(self, kv_prefix: str) -> dict[str, StateEntry]:
        """Every live key under ``kv_prefix`` (which ends with a dot) with its value and revision,
        in key order: one read per key."""
        info = await self._js.stream_info(STATE_STREAM, subjects_filter=f"{KV_PREFIX}{kv_prefix}>")
        live = {}
        for subject in sorted(info.state.subjects or {}):
            kv_key = subject[len(KV_PREFIX) :]
            entry = await self.entry(kv_key)  # a deleted key keeps its delete marker: None
            if entry is not None:
                live[kv_key] = entry
        return live


class KvStateView:
    """A ``StateView`` for one invocation: the instance's and its specialist's keys.

    Also remembers the revision of every key it read that the sandbox does not see (the inbox
    cursor), for the commit's conflict checks.
    """

    def __init__(
        self, reader: StateReader, loop: asyncio.AbstractEventLoop, *, instance: str, specialist: str
    ) -> None:
        self._reader = reader
        self._loop = loop
        self._instance = instance
        self._specialist = specialist

    def kv_key(self, scope: Scope, key: str) -> str:
        return state_key(scope, key, instance=self._instance, specialist=self._specialist)

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return _on_loop(self._loop, coroutine, "the state store")

    def get(self, scope: Scope, key: str) -> StateEntry | None:
        found = self._wait(self._reader.raw(self.kv_key(scope, key)))
        if found is None:
            return None
        value, revision, deleted = found
        # A deleted key reads as absent, but at its delete marker's revision: writing it again must
        # be guarded by that revision, not by "never existed".
        return StateEntry(None if deleted else value, revision)

    def keys(self, scope: Scope, prefix: str) -> list[str]:
        base = self.kv_key(scope, "")
        found = self._wait(self._reader.keys(base))
        return sorted(k[len(base) :] for k in found if k[len(base) :].startswith(prefix))


class LazyInbox(Sequence[Resolution]):
    """The unread results of an instance, loaded on first use (most invocations never ask).

    ``cursor_revision`` and ``cursor`` are known after loading: the commit advances the cursor with
    a guard on that revision, so two invocations cannot both consume the same replies.
    """

    def __init__(
        self, js: JetStreamContext, reader: StateReader, loop: asyncio.AbstractEventLoop, *, instance: str
    ) -> None:
        self._js = js
        self._reader = reader
        self._loop = loop
        self._instance = instance
        self._replies: list[Resolution] | None = None
        self.cursor = 0
        self.cursor_revision = 0
        self.loaded = False

    def _load(self) -> list[Resolution]:
        if self._replies is None:
            self._replies = _on_loop(self._loop, self.load(), "the inbox")
        return self._replies

    async def entries(self) -> list[Resolution]:
        """The unread results, as the invocation saw them if it read them."""
        return self._replies if self._replies is not None else await self.load()

    async def load(self) -> list[Resolution]:
        found = await self._reader.raw(cursor_key(self._instance))
        if found is not None:
            value, revision, deleted = found
            self.cursor_revision = revision
            self.cursor = 0 if deleted else int(value.decode() or 0)
        replies: list[Resolution] = []
        seq = self.cursor
        while len(replies) < _MAX_INBOX:
            try:
                msg = await self._js.get_msg(
                    INBOX_STREAM, seq=seq + 1, subject=inbox_subject(self._instance), next=True, direct=True
                )
            except NotFoundError:
                break
            seq = int(msg.seq or 0)
            try:
                replies.append(decode_resolution(decode_map(msg.data), seq=seq))
            except (TaskError, ValueError, KeyError):
                continue  # not a reply we wrote; skip it rather than wedge the instance
        self.loaded = True
        self._replies = replies
        return replies

    def __len__(self) -> int:
        return len(self._load())

    @overload
    def __getitem__(self, index: int) -> Resolution: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Resolution]: ...

    def __getitem__(self, index: int | slice) -> Resolution | Sequence[Resolution]:
        return self._load()[index]

    def __iter__(self) -> Iterator[Resolution]:
        return iter(self._load())


class LazyLedger:
    """The handles an instance holds from earlier invocations (a ``HandleLedger``): children it
    awaits the answer of, HTTP calls in flight, results unread. Loaded on first use (only an
    await, or a commit that issues or reads handles, asks); the commit rewrites it guarded by
    ``revision``."""

    def __init__(self, reader: StateReader, loop: asyncio.AbstractEventLoop, *, instance: str) -> None:
        self._reader = reader
        self._loop = loop
        self.instance = instance
        self.handles: frozenset[str] | None = None
        self.revision = 0

    def knows(self, handle: str) -> bool:
        if self.handles is None:
            _on_loop(self._loop, self.load(), "the handle ledger")
        assert self.handles is not None
        return handle in self.handles

    async def load(self) -> frozenset[str]:
        if self.handles is None:
            found = await self._reader.raw(ledger_key(self.instance))
            value, self.revision, deleted = found if found is not None else (b"", 0, False)
            self.handles = frozenset() if deleted else decode_ledger(value)
        return self.handles


def encode_ledger(handles: frozenset[str]) -> bytes:
    return "\n".join(sorted(handles)).encode()


def decode_ledger(value: bytes) -> frozenset[str]:
    return frozenset(line for line in value.decode("ascii", "replace").split("\n") if line)
