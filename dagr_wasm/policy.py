"""What an invocation may use (``Limits``), what it may do (``Grants``), and when it may wake.

Both are pydantic models, frozen and strict about unknown fields, because they arrive from manifests
written by people: they are validated once at the edge and trusted inside. Units are in the names.
Deny by default: an empty ``Grants()`` allows instance state, logging and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .budget import Spend

__all__ = [
    "HOST_CEILING",
    "LOAD_CEILING",
    "RESERVED_SUBJECTS",
    "Capabilities",
    "Grants",
    "HttpGrant",
    "Limits",
    "WakeRefused",
    "grant_form",
    "is_reserved_subject",
    "is_valid_signal_name",
    "is_valid_subject",
    "is_valid_subject_pattern",
    "resolve_wake",
    "subject_matches",
]

MIB = 1024 * 1024
GIB = 1024 * MIB

# Printable ASCII but space, "*", "." and ">": no control characters, no whitespace, no wildcards.
# Always matched whole (``fullmatch``): a ``$`` anchor would let a trailing newline through.
_TOKEN = re.compile(r"[!-)+-\-/-=?-~]+")
_SPECIALIST = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SIGNAL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_MODEL_ALIAS = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")

#: Subjects that belong to the runtime, JetStream and the server: no agent may publish there, and no
#: grant may reach them. Task topics are here too: publishing onto one starts instances with the
#: runtime's authority, which is what ``grants.spawn`` exists to decide.
RESERVED_SUBJECTS = ("dagr.>", "agents.specialist.>", "_INBOX.>", "$>")


def is_valid_signal_name(name: str) -> bool:
    """A signal's name: 1-63 of a-z 0-9 _ -, a letter or digit first (it is part of a handle)."""
    return bool(_SIGNAL_NAME.fullmatch(name))


def is_valid_subject(subject: str) -> bool:
    """A concrete NATS subject: dot-separated tokens of printable ASCII, no wildcards, no spaces."""
    if not subject or len(subject) > 512:
        return False
    return all(_TOKEN.fullmatch(token) for token in subject.split("."))


def _intersect(a: list[str], b: list[str]) -> bool:
    """Whether two subject patterns can match one subject."""
    for i in range(max(len(a), len(b)) + 1):
        if i < len(a) and a[i] == ">":
            return i < len(b)
        if i < len(b) and b[i] == ">":
            return i < len(a)
        if i >= len(a) or i >= len(b):
            return len(a) == len(b)
        if a[i] != "*" and b[i] != "*" and a[i] != b[i]:
            return False
    return True  # pragma: no cover - the loop always returns


def _reaches_reserved(pattern: str) -> bool:
    tokens = pattern.split(".")
    # "$>" stands for every subject whose first token starts with "$" ($JS, $KV, $SYS, $O ...).
    if tokens[0] in ("*", ">") or tokens[0].startswith("$"):
        return True
    return any(_intersect(tokens, reserved.split(".")) for reserved in RESERVED_SUBJECTS[:-1])


def is_reserved_subject(subject: str) -> bool:
    """Whether ``subject`` (concrete or a pattern) is or reaches one of ``RESERVED_SUBJECTS``."""
    return _reaches_reserved(subject)


def is_valid_subject_pattern(pattern: str) -> bool:
    """A NATS subject pattern: like a subject, but a token may be ``*``, and the last may be ``>``."""
    if not pattern or len(pattern) > 512:
        return False
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if token == "*" or (token == ">" and i == len(tokens) - 1):
            continue
        if not _TOKEN.fullmatch(token):
            return False
    return True


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard semantics: ``*`` matches exactly one token, a final ``>`` one or more."""
    p_tokens = pattern.split(".")
    s_tokens = subject.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens):
            return False
        if p != "*" and p != s_tokens[i]:
            return False
    return len(p_tokens) == len(s_tokens)


def _covers(old: str, new: str) -> bool:
    """Whether every subject pattern ``new`` matches is matched by ``old`` too."""
    old_tokens, new_tokens = old.split("."), new.split(".")
    for i, token in enumerate(old_tokens):
        if token == ">":
            return len(new_tokens) > i
        if i >= len(new_tokens) or new_tokens[i] == ">":
            return False
        if token != "*" and token != new_tokens[i]:
            return False
    return len(old_tokens) == len(new_tokens)


class Limits(BaseModel):
    """Per-invocation resource limits. Every field is a hard cap enforced by the sandbox."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fuel: int = Field(default=5_000_000_000, ge=1, description="wasm fuel (roughly instructions)")
    memory_bytes: int = Field(
        default=128 * MIB,
        ge=64 * 1024,
        le=4 * GIB,
        description="the size each linear memory may grow to (hosts cap it further)",
    )
    timeout_ms: int = Field(default=10_000, ge=1, le=3_600_000, description="wall-clock deadline")
    max_host_calls: int = Field(default=10_000, ge=0)
    max_log_bytes: int = Field(default=64 * 1024, ge=0, description="log lines plus stdout/stderr")
    # Results and writes end up in the invocation's commit marker (one NATS message): these defaults
    # keep it within the 8 MiB the embedded server allows.
    max_result_bytes: int = Field(default=256 * 1024, ge=0)
    max_write_bytes: int = Field(
        default=1 * MIB, ge=0, description="state values, publish payloads and spawn contexts together"
    )
    #: Distinct state keys one invocation may write or delete: its commit is one atomic batch, and
    #: the server takes at most 1,000 messages per batch (the marker and inbox cursor included).
    max_state_writes: int = Field(default=500, ge=0, le=990)
    max_spawns: int = Field(default=64, ge=0)
    #: Instances one spawn tree may hold in all (its root included), however deep: a child's tree
    #: budget is its root's, so one spawn cannot grow into max_spawns ** depth instances.
    max_tree_instances: int = Field(default=1000, ge=1)
    max_publishes: int = Field(default=256, ge=0)
    #: Outbound HTTP calls one invocation may queue (``http.fetch``), and the response body size
    #: the host accepts for each (a larger one resolves as ``invalid``, never truncated silently).
    max_http_calls: int = Field(default=16, ge=0)
    max_http_response_bytes: int = Field(default=1 * MIB, ge=0, le=4 * MIB)
    #: Model calls one invocation may queue (``model.chat``), and the size of one request (the
    #: whole conversation, tools included) the host accepts.
    max_model_calls: int = Field(default=8, ge=0)
    max_model_request_bytes: int = Field(default=1 * MIB, ge=0, le=4 * MIB)
    #: The model budget of an instance *and its whole subtree*, over its lifetime: what it and
    #: everything it spawns may spend together. A child's own budget is capped by its parent's
    #: (as every limit is), and its spending also counts against every ancestor's budget.
    budget_model_calls: int = Field(default=100, ge=0)
    budget_input_tokens: int = Field(default=2_000_000, ge=0)
    budget_output_tokens: int = Field(default=200_000, ge=0)
    budget_usd: float = Field(default=1.0, ge=0)
    # A componentize-py agent needs 12 MiB of memory, ~9-16 core instances, 2 tables and ~5,700
    # table elements (measured); the defaults leave room without inviting abuse.
    max_instances: int = Field(default=32, ge=1, description="core instances in the component")
    max_tables: int = Field(default=8, ge=0)
    max_table_elements: int = Field(default=100_000, ge=0)
    max_memories: int = Field(default=4, ge=0)

    @property
    def model_budget(self) -> Spend:
        return Spend(
            self.budget_model_calls, self.budget_input_tokens, self.budget_output_tokens, self.budget_usd
        )

    def capped_by(self, ceiling: Limits) -> Limits:
        """The field-wise minimum: a child never gets more than its parent."""
        mine = self.model_dump()
        theirs = ceiling.model_dump()
        capped = {name: min(value, theirs[name]) for name, value in mine.items()}
        return self if capped == mine else Limits(**capped)


#: How deep a spawn tree may grow: the root is at depth 0, its children at 1. A spawn that would
#: make an instance deeper is refused (quota-exceeded): every level carries one more grant ceiling.
MAX_SPAWN_DEPTH = 32


#: What a host allows any invocation at most, whatever a manifest asks for (``Sandbox(ceiling=)``).
#: Results, writes and logs are bounded so that one invocation's commit marker (its whole outbox:
#: the result twice, the writes, the logs) stays well inside the 8 MiB a message may have.
HOST_CEILING = Limits(
    fuel=100_000_000_000,
    memory_bytes=1 * GIB,
    timeout_ms=300_000,
    max_host_calls=1_000_000,
    max_log_bytes=512 * 1024,
    max_result_bytes=1 * MIB,
    max_write_bytes=2 * MIB,
    max_state_writes=990,
    max_spawns=256,
    max_tree_instances=100_000,
    max_publishes=1000,
    max_http_calls=256,
    max_http_response_bytes=4 * MIB,
    max_model_calls=256,
    max_model_request_bytes=4 * MIB,
    budget_model_calls=1_000_000,
    budget_input_tokens=10**12,
    budget_output_tokens=10**12,
    budget_usd=1_000_000.0,
    max_instances=100,
    max_tables=100,
    max_table_elements=1_000_000,
    max_memories=16,
)

#: The trial instantiation when a component is loaded: every host loads every deployed module, so a
#: start function gets a moment of any of them, never the whole of an invocation's allowance.
LOAD_CEILING = HOST_CEILING.model_copy(update={"fuel": 1_000_000_000, "timeout_ms": 1000})


_SECRET_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_URL_PATTERN = re.compile(
    r"(?P<scheme>https?)://(?P<host>[a-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?(?P<path>/[^\s*?#]*)(?P<star>\*)?"
)


def grant_form(url: str) -> str | None:
    """``url`` as grants are matched against: ``scheme://host[:port]/path``, lowercase scheme and
    host, query and fragment dropped; None when it is not an absolute http(s) URL dagr will call
    (user info, a missing host, control characters or spaces are refused, not reinterpreted)."""
    from urllib.parse import urlsplit

    if len(url) > 8192 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url) or "\\" in url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https") or not host or "@" in parts.netloc:
        return None
    form = f"{parts.scheme.lower()}://{host}{f':{port}' if port is not None else ''}{parts.path or '/'}"
    return form if _URL_PATTERN.fullmatch(form) else None


class HttpGrant(BaseModel):
    """One URL pattern an agent may call, and the host-held secrets it may use there.

    ``url`` is scheme, host, optional port and a path: exact, or a prefix when it ends in ``*``
    (``https://api.example.com/v1/*``). No wildcard in the host: each host is granted by name.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    secrets: tuple[str, ...] = Field(default=(), description="names of host-held secrets usable here")

    @field_validator("url")
    @classmethod
    def _url_is_a_pattern(cls, value: str) -> str:
        if not _URL_PATTERN.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a URL pattern: scheme http(s), a host name in lowercase, an "
                "optional port and a path, exact or ending in '*' (https://api.example.com/v1/*)"
            )
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not _SECRET_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"not secret names (A-Z, 0-9, _; a letter first): {', '.join(map(repr, bad))}")
        return value

    def matches(self, url: str) -> bool:
        """Whether ``url`` (normalised: lowercase scheme and host, explicit path) is granted."""
        pattern = _URL_PATTERN.fullmatch(self.url)
        target = _URL_PATTERN.fullmatch(url)
        if pattern is None or target is None or target["star"]:
            return False
        if (pattern["scheme"], pattern["host"]) != (target["scheme"], target["host"]):
            return False
        default = "443" if pattern["scheme"] == "https" else "80"
        if (pattern["port"] or default) != (target["port"] or default):
            return False
        prefix, path = pattern["path"], target["path"]
        # A dot segment could climb out of the granted prefix once the server normalises it.
        if any(seg in (".", "..") for seg in path.split("/")) or "%2e" in path.lower():
            return False
        return path.startswith(prefix) if pattern["star"] else path == prefix


class Grants(BaseModel):
    """Capabilities a manifest grants. Anything not listed is denied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    publish: tuple[str, ...] = Field(default=(), description="NATS subject patterns it may publish to")
    spawn: tuple[str, ...] = Field(default=(), description="specialists it may spawn")
    kv_scope: Literal["instance", "specialist"] = Field(
        default="instance", description="'specialist' adds state shared by all instances of the specialist"
    )
    max_suspend_s: int = Field(default=7 * 86_400, ge=0, description="the furthest wake it may schedule")
    http: tuple[HttpGrant, ...] = Field(default=(), description="URL patterns it may fetch, with secrets")
    signal: tuple[str, ...] = Field(default=(), description="specialists whose instances it may signal")
    models: tuple[str, ...] = Field(
        default=(), description="model aliases it may call (the host maps each to a provider and key)"
    )

    @field_validator("publish")
    @classmethod
    def _patterns_are_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in value if not is_valid_subject_pattern(p)]
        if bad:
            raise ValueError(f"not valid NATS subject patterns: {', '.join(map(repr, bad))}")
        reserved = [p for p in value if _reaches_reserved(p)]
        if reserved:
            raise ValueError(
                f"{', '.join(map(repr, reserved))} reach subjects of the runtime or the server "
                f"({', '.join(RESERVED_SUBJECTS)}); grant the agent's own subjects instead, "
                "e.g. agents.main.results, and spawn specialists with grants.spawn"
            )
        return value

    def escalations_over(self, previous: Grants) -> list[str]:
        """What these grants allow that ``previous`` did not, one line each (empty: nothing more).

        Shown when a deploy would widen a specialist's capabilities, which then needs approval.
        """
        more = [f"publish {p}" for p in self.publish if not any(_covers(old, p) for old in previous.publish)]
        more += [f"spawn {name}" for name in self.spawn if name not in previous.spawn]
        if self.kv_scope == "specialist" and previous.kv_scope == "instance":
            more.append("kv_scope specialist (shared state of every instance)")
        if self.max_suspend_s > previous.max_suspend_s:
            more.append(f"max_suspend_s {previous.max_suspend_s} -> {self.max_suspend_s}")
        for grant in self.http:
            old = [g for g in previous.http if g.url == grant.url]
            if not old:
                more.append(f"http {grant.url}")
            more += [
                f"secret {n} for {grant.url}" for n in grant.secrets if not old or n not in old[0].secrets
            ]
        more += [f"signal {name}" for name in self.signal if name not in previous.signal]
        more += [f"model {alias}" for alias in self.models if alias not in previous.models]
        return more

    def broad_patterns(self) -> list[str]:
        """Publish patterns with a wildcard in their first two tokens: allowed, but worth a look."""
        return [p for p in self.publish if any(t in ("*", ">") for t in p.split(".")[:2])]

    @field_validator("spawn", "signal")
    @classmethod
    def _specialists_are_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not _SPECIALIST.fullmatch(s)]
        if bad:
            raise ValueError(
                f"not valid specialist names (lowercase letters, digits, '-'): {', '.join(map(repr, bad))}"
            )
        return value

    def allows_publish(self, subject: str) -> bool:
        return any(subject_matches(pattern, subject) for pattern in self.publish)

    def allows_spawn(self, specialist: str) -> bool:
        return specialist in self.spawn

    def allows_shared_state(self) -> bool:
        return self.kv_scope == "specialist"

    def allows_http(self, url: str) -> bool:
        return any(g.matches(url) for g in self.http)

    def http_secrets(self, url: str) -> frozenset[str]:
        return frozenset(name for g in self.http if g.matches(url) for name in g.secrets)

    def allows_signal(self, specialist: str) -> bool:
        return specialist in self.signal

    def allows_model(self, alias: str) -> bool:
        return alias in self.models

    @field_validator("models")
    @classmethod
    def _aliases_are_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if not _MODEL_ALIAS.fullmatch(a)]
        if bad:
            names = ", ".join(map(repr, bad))
            raise ValueError(f"not valid model aliases (lowercase letters, digits, '.', '_', '-'): {names}")
        return value


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The grants in force for one invocation: its own, narrowed by every ancestor's.

    A child never gets more than its parent: a call is allowed only if the agent's own grants and
    each ceiling (the grants of its parent, grandparent...) all allow it.
    """

    own: Grants = Grants()
    ceilings: tuple[Grants, ...] = ()

    def _chain(self) -> tuple[Grants, ...]:
        return (self.own, *self.ceilings)

    def allows_publish(self, subject: str) -> bool:
        return all(g.allows_publish(subject) for g in self._chain())

    def allows_spawn(self, specialist: str) -> bool:
        return all(g.allows_spawn(specialist) for g in self._chain())

    def allows_shared_state(self) -> bool:
        return all(g.allows_shared_state() for g in self._chain())

    def allows_http(self, url: str) -> bool:
        return all(g.allows_http(url) for g in self._chain())

    def http_secrets(self, url: str) -> frozenset[str]:
        """The secrets the host may put into a request to ``url``: granted by the agent's own
        manifest for that URL, and by every ancestor's (a parent cannot lend what it lacks)."""
        names = self.own.http_secrets(url)
        for ceiling in self.ceilings:
            names &= ceiling.http_secrets(url)
        return names

    def allows_signal(self, specialist: str) -> bool:
        return all(g.allows_signal(specialist) for g in self._chain())

    def allows_model(self, alias: str) -> bool:
        return all(g.allows_model(alias) for g in self._chain())

    @property
    def may_signal(self) -> bool:
        return all(g.signal for g in self._chain())

    @property
    def max_suspend_s(self) -> int:
        return min(g.max_suspend_s for g in self._chain())


class WakeRefused(Exception):
    """A wake time that is not acceptable; ``kind`` is the WIT error case to report."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def resolve_wake(
    *,
    at_unix_ms: int | None,
    after_ms: int | None,
    now_unix_ms: int,
    max_suspend_s: int,
) -> int:
    """The absolute wake time in Unix milliseconds, or ``WakeRefused``.

    A time in the past is refused as invalid (it is almost always a bug, such as a local time read
    as UTC) rather than silently firing at once; a time beyond the grant's horizon is denied.
    """
    if (at_unix_ms is None) == (after_ms is None):
        raise WakeRefused("invalid", "give exactly one of an absolute time and a delay")
    if after_ms is not None:
        wake_at = now_unix_ms + after_ms
    else:
        assert at_unix_ms is not None
        if at_unix_ms < now_unix_ms:
            raise WakeRefused(
                "invalid",
                f"the wake time is {_span(now_unix_ms - at_unix_ms)} in the past; "
                "give a future time or a delay",
            )
        wake_at = at_unix_ms
    horizon_ms = max_suspend_s * 1000
    if wake_at - now_unix_ms > horizon_ms:
        raise WakeRefused(
            "denied",
            f"the wake time is {_span(wake_at - now_unix_ms)} ahead, beyond the granted horizon "
            f"of {max_suspend_s} s (grants.max_suspend_s)",
        )
    return wake_at


def _span(ms: int) -> str:
    """A duration as people read it: 3.250 s, 5 min, 2.5 h, 3 days."""
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.3f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.0f} days"
