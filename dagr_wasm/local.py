"""Local, in-process runs for ``dagr run``: the agent author's inner loop, no server needed.

State lives in a JSON file (``--state FILE``) so that consecutive runs carry it over::

    {"format": "dagr-state/1",
     "instance": {"count": {"revision": 2, "cbor": 2}},
     "specialist": {}}

Values are tagged as in ``dagr_wasm.payload``: ``cbor`` (decoded) or ``base64`` (anything else).
The file is rewritten only when the invocation commits (returned ``ok`` or suspended), atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import PayloadError
from .invocation import Outcome, Scope, StateEntry
from .payload import from_tagged, to_tagged

__all__ = ["STATE_FORMAT", "LocalState"]

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
