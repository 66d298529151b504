"""The one exception tree of dagr-wasm.

Every error the library raises on purpose is a ``DagrError``. Each subclass carries the data that
explains it and builds its message in ``__init__``; the message says what happened and what to do.
The type decides the fate of the failure::

    DagrError
    ├── UsageError                 bad input from a person or a program: exit code 2, nothing changed
    │   ├── ManifestError          a manifest, limit or grant that does not validate
    │   ├── ModuleError            bytes that are not a loadable dagr agent component
    │   ├── AgentSourceError       an agent directory that does not build
    │   ├── PayloadError           a payload, context or state file that cannot be used
    │   ├── NotFoundError          a specialist, instance or file that does not exist
    │   ├── NotDeployed            a specialist registered without a module
    │   ├── InstanceStateError     an action the instance's state does not allow (cancel a finished one)
    │   ├── GrantEscalation        a deploy that widens a specialist's grants, not approved
    │   └── PermissionDenied       the credentials' role may not do this (the server refused it)
    └── RuntimeFailure             the runtime could not do its job: exit code 1, safe to retry
        ├── ServerError            the embedded nats-server would not start or stop
        ├── ConnectionFailure      NATS is unreachable or refused us
        ├── MeshFailure            NATS answered, but not as a dagr deployment should (nats-py errors,
        │   ├── LayoutMissing      translated at one seam: mesh/_nats_errors.py); a server with no dagr layout
        │   └── QuotaExceeded      an account or server JetStream limit is reached (a tenant's quota)
        ├── RecordError            a stored journal record or dead letter that does not decode
        └── CommitConflict         another invocation changed state first (internal: re-run)

Faults of an agent (traps, exhausted limits, refused host calls) are not exceptions: they are data
in ``dagr_wasm.sandbox.Outcome``, because a misbehaving guest is an expected event, not a host bug.
"""

from __future__ import annotations

__all__ = [
    "AgentSourceError",
    "CommitConflict",
    "ConnectionFailure",
    "DagrError",
    "GrantEscalation",
    "InstanceStateError",
    "LayoutMissing",
    "ManifestError",
    "MeshFailure",
    "ModuleError",
    "NotDeployed",
    "NotFoundError",
    "PayloadError",
    "PermissionDenied",
    "QuotaExceeded",
    "RecordError",
    "RuntimeFailure",
    "ServerError",
    "UsageError",
]


class DagrError(Exception):
    """Root of every error dagr-wasm raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(DagrError):
    """The input is wrong; fixing the input is the way forward. Nothing was changed."""

    exit_code = 2


class ManifestError(UsageError):
    """A manifest (or its limits and grants) does not validate."""

    def __init__(self, problems: list[str], *, source: str = "manifest") -> None:
        self.problems = problems
        self.source = source
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is not valid:\n{listed}\nFix these fields and try again.")


class ModuleError(UsageError):
    """Bytes that cannot be run as a dagr agent: not wasm, not a component, or another world."""

    def __init__(self, reason: str, *, source: str, hint: str | None = None) -> None:
        self.reason = reason
        self.source = source
        self.hint = hint or (
            "Build the agent with `dagr build AGENT_DIR`, which targets the dagr:agent world in wit/."
        )
        super().__init__(f"{source} is not a dagr agent component: {reason}. {self.hint}")


class AgentSourceError(UsageError):
    """An agent directory that does not build into a component."""

    def __init__(self, agent_dir: str, reason: str, *, detail: str = "") -> None:
        self.agent_dir = agent_dir
        self.reason = reason
        self.detail = detail
        tail = f"\n{detail.rstrip()}" if detail else ""
        super().__init__(f"cannot build {agent_dir}: {reason}{tail}")


class PayloadError(UsageError):
    """A payload, context, state file or time that cannot be used as given."""

    def __init__(self, what: str, reason: str, *, hint: str = "") -> None:
        self.what = what
        self.reason = reason
        self.hint = hint
        tail = f" {hint}" if hint else ""
        super().__init__(f"{what}: {reason}.{tail}")


class NotFoundError(UsageError):
    """Something named by the caller does not exist."""

    def __init__(self, kind: str, name: str, *, hint: str = "") -> None:
        self.kind = kind
        self.name = name
        tail = f" {hint}" if hint else ""
        super().__init__(f"no {kind} named {name!r}.{tail}")


class NotDeployed(UsageError):
    """A specialist that is registered but has no module: nothing could run its instances."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"specialist {name!r} is registered without a module, so no host can run it. Deploy one "
            f"with `dagr deploy agents/{name}` (or `dagr register specialist --name {name} "
            "--module FILE.wasm`)."
        )


class InstanceStateError(UsageError):
    """An action on an instance that its state does not allow."""

    def __init__(self, instance: str, state: str, action: str, *, hint: str = "") -> None:
        self.instance = instance
        self.state = state
        self.action = action
        tail = f" {hint}" if hint else ""
        super().__init__(f"cannot {action} instance {instance}: it is {state}.{tail}")


class GrantEscalation(UsageError):
    """A deploy that would give a specialist more capabilities than its current version has."""

    def __init__(self, name: str, more: list[str]) -> None:
        self.name = name
        self.more = more
        listed = "\n".join(f"  + {line}" for line in more)
        super().__init__(
            f"deploying {name} would grant it more than its current version has:\n{listed}\n"
            "Review what the new code may do, then deploy again with --approve-grants. Nothing was stored."
        )


class PermissionDenied(UsageError):
    """The credentials' role may not do this (the server refused it); nothing was changed."""

    def __init__(self, violation: str) -> None:
        self.violation = violation
        super().__init__(
            f"NATS refused this for these credentials ({violation.removeprefix('nats: ')}). "
            "Their role may not do it: an admin's credentials can (`dagr up` keeps them in its data "
            "dir, credentials/admin.nk; pass --creds)."
        )


class RuntimeFailure(DagrError):
    """The runtime could not do its job; the input may be fine. Usually worth retrying."""

    exit_code = 1


class ServerError(RuntimeFailure):
    """The embedded nats-server would not start, or died."""

    def __init__(self, reason: str, *, hint: str = "", log_tail: str = "") -> None:
        self.reason = reason
        self.hint = hint
        self.log_tail = log_tail
        parts = [f"nats-server: {reason}."]
        if hint:
            parts.append(hint)
        if log_tail:
            parts.append(f"Its last output:\n{log_tail.rstrip()}")
        super().__init__(" ".join(parts[:2]) + ("\n" + parts[2] if len(parts) > 2 else ""))


class ConnectionFailure(RuntimeFailure):
    """NATS could not be reached or refused the connection."""

    def __init__(self, url: str, reason: str, *, refused: bool = False) -> None:
        self.url = url
        self.reason = reason
        self.refused = refused
        if refused:
            super().__init__(f"NATS at {url} refused the connection: {reason}.")
        else:
            super().__init__(
                f"cannot reach NATS at {url}: {reason}. Start one with `dagr up`, or point --nats / "
                "NATS_URL at a running server."
            )


class MeshFailure(RuntimeFailure):
    """NATS answered, but not as a dagr deployment should: what it said, and what to do."""

    def __init__(self, reason: str, *, hint: str = "") -> None:
        self.reason = reason
        self.hint = hint
        tail = f" {hint}" if hint else ""
        super().__init__(f"{reason}.{tail}")


class QuotaExceeded(MeshFailure):
    """The account is at one of its JetStream limits (a tenant's quota, or the server's caps)."""

    def __init__(self, limit: str) -> None:
        self.limit = limit
        super().__init__(
            f"the deployment is at its storage quota: {limit}",
            hint="Free space (delete specialists or dead letters you no longer need), or raise the "
            "quota: a tenant's with `dagr accounts ... --max-file-store`, a server's max_file_store.",
        )


class LayoutMissing(MeshFailure):
    """The server has no dagr layout (streams and buckets), or JetStream is off."""

    def __init__(self, missing: str) -> None:
        self.missing = missing
        super().__init__(
            f"the NATS server has no dagr layout ({missing})",
            hint="Is this the right server? `dagr up` (or `dagr host`, `dagr deploy`) lays it out; "
            "JetStream must be enabled (nats-server -js).",
        )


class RecordError(RuntimeFailure):
    """A stored record (journal, dead letter, spawn edge) that does not decode as what it should be."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"a stored {what} does not decode: {reason}")


class CommitConflict(RuntimeFailure):
    """Another invocation changed a key this one read; the invocation is re-run on fresh state."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"state key {key!r} changed while the invocation ran; re-running it on fresh state")
