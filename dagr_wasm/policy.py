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

__all__ = [
    "Capabilities",
    "Grants",
    "Limits",
    "WakeRefused",
    "is_valid_subject",
    "is_valid_subject_pattern",
    "resolve_wake",
    "subject_matches",
]

MIB = 1024 * 1024

_TOKEN = re.compile(r"^[^\s.*>]+$")
_SPECIALIST = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def is_valid_subject(subject: str) -> bool:
    """A concrete NATS subject: dot-separated non-empty tokens, no wildcards, no whitespace."""
    if not subject or len(subject) > 512:
        return False
    return all(_TOKEN.match(token) for token in subject.split("."))


def is_valid_subject_pattern(pattern: str) -> bool:
    """A NATS subject pattern: like a subject, but a token may be ``*``, and the last may be ``>``."""
    if not pattern or len(pattern) > 512:
        return False
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if token == "*" or (token == ">" and i == len(tokens) - 1):
            continue
        if not _TOKEN.match(token):
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


class Limits(BaseModel):
    """Per-invocation resource limits. Every field is a hard cap enforced by the sandbox."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fuel: int = Field(default=5_000_000_000, ge=1, description="wasm fuel (roughly instructions)")
    memory_bytes: int = Field(
        default=128 * MIB, ge=64 * 1024, description="the size each linear memory may grow to"
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
    max_spawns: int = Field(default=64, ge=0)
    max_publishes: int = Field(default=256, ge=0)
    # A componentize-py agent needs 12 MiB of memory, ~9-16 core instances, 2 tables and ~5,700
    # table elements (measured); the defaults leave room without inviting abuse.
    max_instances: int = Field(default=32, ge=1, description="core instances in the component")
    max_tables: int = Field(default=8, ge=0)
    max_table_elements: int = Field(default=100_000, ge=0)
    max_memories: int = Field(default=4, ge=0)

    def capped_by(self, ceiling: Limits) -> Limits:
        """The field-wise minimum: a child never gets more than its parent."""
        mine = self.model_dump()
        theirs = ceiling.model_dump()
        return Limits(**{name: min(value, theirs[name]) for name, value in mine.items()})


class Grants(BaseModel):
    """Capabilities a manifest grants. Anything not listed is denied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    publish: tuple[str, ...] = Field(default=(), description="NATS subject patterns it may publish to")
    spawn: tuple[str, ...] = Field(default=(), description="specialists it may spawn")
    kv_scope: Literal["instance", "specialist"] = Field(
        default="instance", description="'specialist' adds state shared by all instances of the specialist"
    )
    max_suspend_s: int = Field(default=7 * 86_400, ge=0, description="the furthest wake it may schedule")

    @field_validator("publish")
    @classmethod
    def _patterns_are_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in value if not is_valid_subject_pattern(p)]
        if bad:
            raise ValueError(f"not valid NATS subject patterns: {', '.join(map(repr, bad))}")
        return value

    @field_validator("spawn")
    @classmethod
    def _specialists_are_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not _SPECIALIST.match(s)]
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
