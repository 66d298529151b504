"""The two halves stay apart: the mesh never loads wasmtime, the sandbox never loads nats."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_mesh_loads_no_wasmtime() -> None:
    modules = loaded_after_import("dagr_wasm.mesh")
    assert "nats" in modules
    assert not {m for m in modules if m == "wasmtime" or m.startswith("wasmtime.")}


def test_the_sandbox_loads_no_nats() -> None:
    modules = loaded_after_import("dagr_wasm.sandbox")
    assert "wasmtime" in modules
    assert not {m for m in modules if m == "nats" or m.startswith("nats.")}


@pytest.mark.parametrize("module", ["dagr_wasm.invocation", "dagr_wasm.policy", "dagr_wasm.outbound"])
def test_the_seam_loads_neither(module: str) -> None:
    modules = loaded_after_import(module)
    assert not {m for m in modules if m.split(".")[0] in ("wasmtime", "nats")}


def test_public_names_are_pinned() -> None:
    import dagr_wasm.mesh
    import dagr_wasm.sandbox

    assert "Sandbox" in dagr_wasm.sandbox.__all__
    assert {"Mesh", "Host", "EmbeddedServer", "Registry"} <= set(dagr_wasm.mesh.__all__)
    for module in (dagr_wasm.sandbox, dagr_wasm.mesh):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is exported but missing"
