"""Turning what a user points at into something a deployment can store: one path for `dagr deploy`,
`dagr register specialist` and `dagr demo`.

``prepare`` checks everything before anything is stored: the path exists, the manifest validates,
the agent builds (from a directory) and the module loads under the manifest's limits in a sandbox
like the hosts' (which also warms this machine's compiled cache). Only then does the caller upload
and register (``Mesh.deploy``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .build import build_agent
from .errors import PayloadError
from .manifest import MANIFEST_FILE, Manifest, load_manifest
from .paths import compiled_cache_dir
from .policy import Limits
from .sandbox import Sandbox

__all__ = ["Deployable", "check_module", "prepare"]


@dataclass(frozen=True, slots=True)
class Deployable:
    manifest: Manifest
    wasm: bytes
    digest: str


def prepare(
    agent: Path, *, manifest_path: Path | None = None, say: Callable[[str], None] | None = None
) -> Deployable:
    """The manifest and the checked module of ``agent`` (an agent directory, or a built .wasm)."""
    if not agent.exists():
        raise PayloadError(
            str(agent), "it does not exist", hint="Pass an agent directory (app.py, dagr.toml) or a .wasm."
        )
    manifest_path = manifest_path or (agent / MANIFEST_FILE if agent.is_dir() else None)
    if manifest_path is None:
        raise PayloadError(
            str(agent),
            "a built module needs a manifest",
            hint="Pass --manifest dagr.toml with the agent's name, grants and limits.",
        )
    manifest = load_manifest(manifest_path)
    wasm_path = build_agent(agent, progress=say).wasm if agent.is_dir() else agent
    wasm, digest = check_module(wasm_path, limits=manifest.limits)
    return Deployable(manifest=manifest, wasm=wasm, digest=digest)


def check_module(wasm_path: Path, *, limits: Limits) -> tuple[bytes, str]:
    """The bytes and digest of a module that loads as a dagr agent under ``limits`` (else ModuleError)."""
    with Sandbox(cache_dir=compiled_cache_dir()) as sandbox:
        component = sandbox.load_file(wasm_path, limits=limits)
    return wasm_path.read_bytes(), component.digest
