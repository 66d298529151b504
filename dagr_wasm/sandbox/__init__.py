"""The sandbox: run one invocation of an agent component, isolated and limited. wasmtime only.

A ``Sandbox`` owns the process's Engine, its Linker and the compiled-component cache. ``load``
turns component bytes into a validated ``AgentComponent``; ``run`` executes one ``Invocation`` in a
fresh Store and returns an ``Outcome``: the result or the error, the buffered effects, and the
costs. This package knows nothing of NATS: the seam is the plain data in ``_model``.
"""

from ..invocation import (
    ChildReply,
    Effect,
    EmptyState,
    ErrorKind,
    Event,
    GuestError,
    Invocation,
    LogLine,
    Message,
    Outcome,
    Publish,
    RepliesConsumed,
    Reply,
    Scope,
    Spawn,
    Start,
    StateDelete,
    StateEntry,
    StatePut,
    StateUnavailable,
    StateView,
    Status,
    Suspend,
    Wake,
    child_instance_id,
)
from ..policy import (
    Capabilities,
    Grants,
    Limits,
    WakeRefused,
    is_valid_subject,
    is_valid_subject_pattern,
    resolve_wake,
    subject_matches,
)
from ._bytes import installed as bytes_fastpath_installed
from ._cache import digest_of
from ._engine import EngineSettings
from ._runner import AgentComponent, Sandbox

__all__ = [
    "AgentComponent",
    "Capabilities",
    "ChildReply",
    "Effect",
    "EmptyState",
    "EngineSettings",
    "ErrorKind",
    "Event",
    "Grants",
    "GuestError",
    "Invocation",
    "Limits",
    "LogLine",
    "Message",
    "Outcome",
    "Publish",
    "RepliesConsumed",
    "Reply",
    "Sandbox",
    "Scope",
    "Spawn",
    "Start",
    "StateDelete",
    "StateEntry",
    "StatePut",
    "StateUnavailable",
    "StateView",
    "Status",
    "Suspend",
    "Wake",
    "WakeRefused",
    "bytes_fastpath_installed",
    "child_instance_id",
    "digest_of",
    "is_valid_subject",
    "is_valid_subject_pattern",
    "resolve_wake",
    "subject_matches",
]
