"""Local, in-process runs for ``dagr run``: the agent author's inner loop, no server needed.

An await is resolved here too (``LocalWorld``): the HTTP calls are made in process under the same
grants and checks as on a host, model calls go to the providers of ``--models FILE``; children's
replies come from ``--reply FILE`` and signals from ``--signal NAME=DATA``. What nothing answers
stays pending, and the resume comes as at the deadline, so both paths of an agent can be run.

State lives in a JSON file (``--state FILE``) so that consecutive runs carry it over::

    {"format": "dagr-state/1",
     "instance": {"count": {"revision": 2, "cbor": 2}},
     "specialist": {}}

Values are tagged as in ``dagr_wasm.payload``: ``cbor`` (decoded) or ``base64`` (anything else).
The file is rewritten only when the invocation commits (returned ``ok`` or suspended), atomically.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import PayloadError
from .invocation import (
    Await,
    HttpCall,
    Invocation,
    ModelCall,
    Outcome,
    RepliesConsumed,
    Resolution,
    Resumed,
    Scope,
    Spawn,
    StateEntry,
    signal_handle,
)
from .models import ModelRouter, ModelsConfig, default_models
from .outbound import HttpPolicy, OutboundHttp
from .payload import encode_cbor, from_tagged, json_or_text, to_tagged
from .policy import is_valid_signal_name

__all__ = ["STATE_FORMAT", "ChildAnswer", "LocalAnswers", "LocalState", "LocalWorld", "Round"]

STATE_FORMAT = "dagr-state/1"
_SCOPES: tuple[Scope, ...] = ("instance", "specialist")


class LocalState:
    """A ``StateView`` over a JSON file, with revisions like a KV store's."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[Scope, dict[str, StateEntry]] = {"instance": {}, "specialist": {}}
        if path is not None and path.exists():
            self._read(path)

    def _read(self, path: Path) -> None:
        what = f"state file {path}"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PayloadError(
                what, f"not valid JSON ({exc})", hint="Delete it to start from empty state."
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise PayloadError(
                what, f'not a dagr state file (expected "format": "{STATE_FORMAT}")',
                hint="Pass a file written by `dagr run --state`, or a new path.",
            )  # fmt: skip
        for scope in _SCOPES:
            section = doc.get(scope, {})
            if not isinstance(section, dict):
                raise PayloadError(what, f"{scope!r} must be an object of keys")
            for key, item in section.items():
                if not isinstance(item, dict) or not isinstance(item.get("revision"), int):
                    raise PayloadError(what, f"{scope}.{key} needs a revision and a value")
                value = {k: v for k, v in item.items() if k != "revision"}
                try:
                    self.entries[scope][key] = StateEntry(from_tagged(value), item["revision"])
                except ValueError as exc:
                    raise PayloadError(what, f"{scope}.{key}: {exc}") from None

    # -- StateView ------------------------------------------------------------------------------

    def get(self, scope: Scope, key: str) -> StateEntry | None:
        return self.entries[scope].get(key)

    def keys(self, scope: Scope, prefix: str) -> list[str]:
        return sorted(k for k in self.entries[scope] if k.startswith(prefix))

    # -- commit -------------------------------------------------------------------------------

    def apply(self, outcome: Outcome) -> None:
        """Apply a committable outcome's final writes, bumping revisions, and save the file."""
        if not outcome.committable:
            return
        for (scope, key), value in outcome.final_state().items():
            if value is None:
                self.entries[scope].pop(key, None)
            else:
                previous = self.entries[scope].get(key)
                self.entries[scope][key] = StateEntry(value, (previous.revision if previous else 0) + 1)
        if self.path is not None:
            self._write(self.path)

    def to_json(self) -> dict[str, Any]:
        return {
            scope: {
                key: {"revision": e.revision, **to_tagged(e.value)}
                for key, e in sorted(entries.items())
                if e.value is not None
            }
            for scope, entries in self.entries.items()
        }

    def _write(self, path: Path) -> None:
        doc = {"format": STATE_FORMAT, **self.to_json()}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(doc, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, path)


# --- awaits, resolved in process ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildAnswer:
    """What a child answers in a local run: ``ok`` (CBOR) or ``error``."""

    ok: bytes | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LocalAnswers:
    """The replies and signals a local run answers awaits with, consumed in order.

    ``children`` maps a child id or a specialist name to its answers (the last one repeats for
    every further child of that specialist); ``signals`` maps a signal name to the data of each
    delivery of it.
    """

    children: Mapping[str, Sequence[ChildAnswer]] = field(default_factory=dict)
    signals: Mapping[str, Sequence[bytes]] = field(default_factory=dict)

    @classmethod
    def parse(cls, reply_files: Sequence[Path], signals: Sequence[str]) -> LocalAnswers:
        """From ``--reply FILE`` (JSON: ``{"<specialist or child id>": {"ok": VALUE} |
        {"error": "why"} | [answers...]}``) and ``--signal NAME=DATA`` (DATA JSON, or text)."""
        children: dict[str, list[ChildAnswer]] = {}
        for path in reply_files:
            for key, answers in _reply_file(path).items():
                children.setdefault(key, []).extend(answers)
        by_name: dict[str, list[bytes]] = {}
        for given in signals:
            name, sep, data = given.partition("=")
            if not sep or not is_valid_signal_name(name):
                raise PayloadError(
                    f"--signal {given[:60]!r}",
                    "expected NAME=DATA with a signal name (1-63 of a-z 0-9 _ -, a letter or digit first)",
                    hint="Example: --signal approve='{\"ok\": true}'",
                )
            by_name.setdefault(name, []).append(encode_cbor(json_or_text(data)))
        return cls(children, by_name)


def _reply_file(path: Path) -> dict[str, list[ChildAnswer]]:
    what = f"--reply {path}"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PayloadError(what, f"cannot read it ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PayloadError(what, f"not valid JSON ({exc})") from None
    shape = '{"<specialist or child id>": {"ok": VALUE} or {"error": "why"}, or a list of those}'
    if not isinstance(doc, dict):
        raise PayloadError(what, "must be a JSON object", hint=f"Write {shape}.")
    parsed: dict[str, list[ChildAnswer]] = {}
    for key, value in doc.items():
        items = value if isinstance(value, list) else [value]
        answers = []
        for item in items:
            if isinstance(item, dict) and set(item) == {"ok"}:
                answers.append(ChildAnswer(ok=encode_cbor(item["ok"])))
            elif isinstance(item, dict) and set(item) == {"error"} and isinstance(item["error"], str):
                answers.append(ChildAnswer(error=item["error"]))
            else:
                raise PayloadError(
                    what, f"{key!r}: {str(item)[:80]} is not an answer", hint=f"Write {shape}."
                )
        if not answers:
            raise PayloadError(what, f"{key!r} has no answers", hint=f"Write {shape}.")
        parsed[key] = answers
    return parsed


@dataclass(frozen=True, slots=True)
class Round:
    """One invocation of a local run: what it got (for a resume) and how it ended."""

    event: str
    outcome: Outcome
    resolved: tuple[Resolution, ...] = ()
    pending: tuple[str, ...] = ()
    timed_out: bool = False


class LocalWorld:
    """What the mesh does between an await and its resume, done in process for ``dagr run``.

    It keeps the instance's inbox and handle ledger across the run's invocations; HTTP calls go
    through the host's client (``OutboundHttp``), so grants, secrets, SSRF checks and caps are the
    same as on a host.
    """

    def __init__(self, answers: LocalAnswers, policy: HttpPolicy, models: ModelsConfig | None = None) -> None:
        self.answers = answers
        self.policy = policy
        self.models = models if models is not None else default_models()
        self.inbox: list[Resolution] = []
        self.held: set[str] = set()
        self._seq = 0
        self._children_answered: dict[str, int] = {}
        self._signals_sent: dict[str, int] = {}

    def knows(self, handle: str) -> bool:
        """The ``HandleLedger`` of the local instance."""
        return handle in self.held

    def resolve(self, invocation: Invocation, outcome: Outcome, awaiting: Await) -> Resumed:
        """After ``outcome`` committed ending in ``awaiting``: store what its calls, children and
        signals resolve to, and return the resume to run next."""
        consumed = {seq for e in outcome.effects if isinstance(e, RepliesConsumed) for seq in e.seqs}
        self.held -= {r.handle for r in self.inbox if r.seq in consumed}
        self.inbox = [r for r in self.inbox if r.seq not in consumed]
        calls = [e for e in outcome.effects if isinstance(e, HttpCall | ModelCall)]
        spawns = [e for e in outcome.effects if isinstance(e, Spawn) and e.reply_to is None]
        self.held |= {e.handle for e in calls} | {e.child_id for e in spawns}
        if calls:
            self._store(asyncio.run(self._fetch_all(invocation, calls)))
        for spawn in spawns:
            answer = self._child_answer(spawn)
            if answer is not None:
                self._store(
                    [Resolution(spawn.child_id, "child", answer.ok, answer.error, source=spawn.specialist)]
                )
        for handle in awaiting.handles:
            if handle.startswith("signal-") and handle not in {r.handle for r in self.inbox}:
                self._deliver_signal(handle.removeprefix("signal-"))
        done = {r.handle for r in self.inbox}
        pending = tuple(h for h in awaiting.handles if h not in done)
        satisfied = bool(done & set(awaiting.handles)) if awaiting.mode == "any" else not pending
        return Resumed(tuple(self.inbox), pending, not satisfied, awaiting.resume_context)

    def _deliver_signal(self, name: str) -> None:
        sent = self._signals_sent.get(name, 0)
        deliveries = self.answers.signals.get(name, ())
        if sent < len(deliveries):
            self._signals_sent[name] = sent + 1
            self._store([Resolution(signal_handle(name), "signal", deliveries[sent], source=name)])

    def _child_answer(self, spawn: Spawn) -> ChildAnswer | None:
        by_id = self.answers.children.get(spawn.child_id)
        if by_id:
            return by_id[0]
        answers = self.answers.children.get(spawn.specialist)
        if not answers:
            return None
        given = self._children_answered.get(spawn.specialist, 0)
        self._children_answered[spawn.specialist] = given + 1
        return answers[min(given, len(answers) - 1)]

    async def _fetch_all(self, invocation: Invocation, calls: list[HttpCall | ModelCall]) -> list[Resolution]:
        http = OutboundHttp(self.policy)
        models = ModelRouter(self.models)

        async def one(call: HttpCall | ModelCall) -> Resolution:
            if isinstance(call, ModelCall):
                return (await models.call(call.handle, call.request)).resolution
            cap = invocation.limits.max_http_response_bytes
            return await http.call(call.handle, call.request, invocation.capabilities, max_body_bytes=cap)

        try:
            return list(await asyncio.gather(*(one(call) for call in calls)))
        finally:
            await http.aclose()
            await models.aclose()

    def _store(self, resolutions: list[Resolution]) -> None:
        for resolution in resolutions:
            self._seq += 1
            self.inbox.append(replace(resolution, seq=self._seq))
