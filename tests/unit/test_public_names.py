"""The public names of the packages embedders import, pinned: adding or removing one is a
deliberate change to the API (update this list, the README and docs/design.md with it)."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "dagr_wasm": [
        "CONTRACT",
        "CONTRACTS",
        "__version__",
    ],
    "dagr_wasm.sandbox": [
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
    ],
    "dagr_wasm.mesh": [
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
        "LAYOUT_VERSION",
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
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_the_public_names_are_exactly_these(module: str) -> None:
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == PUBLIC[module]
    for name in PUBLIC[module]:
        assert hasattr(imported, name), f"{module}.__all__ names {name}, which it does not define"


def test_the_mesh_knows_nothing_of_wasmtime_and_the_sandbox_nothing_of_nats() -> None:
    import ast
    from pathlib import Path

    root = Path(importlib.import_module("dagr_wasm").__file__).parent  # type: ignore[arg-type]
    for package, foreign in (("mesh", "wasmtime"), ("sandbox", "nats")):
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                assert not any(n.split(".")[0] == foreign for n in names), f"{path} imports {foreign}"
