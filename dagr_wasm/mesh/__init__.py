"""The mesh: dagr on NATS JetStream. NATS only: nothing here imports wasmtime.

``EmbeddedServer`` runs a nats-server for ``dagr up`` and tests; ``Mesh`` is a client's handle
(deploy, spawn, status, results); ``Host`` pulls tasks, runs them through an ``Executor`` (the
sandbox, given by whoever composes the two) and commits the outcomes exactly once.
"""

from ..outbound import HttpPolicy
from ._auth import AccountQuota, Credentials, Role, Tenant
from ._budget import Account
from ._client import ConnectOptions, Mesh, connect_nats
from ._host import Executor, Host, HostConfig, HostStats
from ._layout import LAYOUT_VERSION, Layout, ensure_layout
from ._records import (
    DeadLetter,
    InstanceResult,
    InstanceState,
    InvocationLog,
    JournalRecord,
    Lineage,
    ModelCallRecord,
    SpawnEdge,
    TreeNode,
)
from ._registry import Registry, SpecialistVersion
from ._server import EmbeddedServer, ServerConfig, default_store_dir, find_nats_server, render_accounts

__all__ = [
    "LAYOUT_VERSION",
    "Account",
    "AccountQuota",
    "ConnectOptions",
    "Credentials",
    "DeadLetter",
    "EmbeddedServer",
    "Executor",
    "Host",
    "HostConfig",
    "HostStats",
    "HttpPolicy",
    "InstanceResult",
    "InstanceState",
    "InvocationLog",
    "JournalRecord",
    "Layout",
    "Lineage",
    "Mesh",
    "ModelCallRecord",
    "Registry",
    "Role",
    "ServerConfig",
    "SpawnEdge",
    "SpecialistVersion",
    "Tenant",
    "TreeNode",
    "connect_nats",
    "default_store_dir",
    "ensure_layout",
    "find_nats_server",
    "render_accounts",
]
