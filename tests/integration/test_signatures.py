"""Issue 9, item 4: signed modules. A host started with trusted publisher keys runs only modules one
of them signed for that specialist; anything else ends dead with the reason in its status, and the
host goes on serving signed ones."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

import nkeys
import pytest
from meshkit import RunHost

from dagr_wasm.manifest import Manifest
from dagr_wasm.mesh import EmbeddedServer, Mesh
from dagr_wasm.mesh._auth import Signature, sign_module

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _publisher(directory: Path, name: str) -> Path:
    seed = directory / f"{name}.nk"
    seed.write_bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))
    return seed


async def test_a_host_with_trusted_publishers_runs_only_their_signed_modules(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, built: dict[str, Path], tmp_path: Path
) -> None:
    wasm = built["echo"].read_bytes()
    import hashlib

    digest = hashlib.sha256(wasm).hexdigest()
    trusted, stranger = _publisher(tmp_path, "trusted"), _publisher(tmp_path, "stranger")
    tag = secrets.token_hex(3)
    good = sign_module(trusted, f"signed-{tag}", digest)
    cases: dict[str, Signature | None] = {
        f"signed-{tag}": good,
        f"unsigned-{tag}": None,
        f"foreign-{tag}": sign_module(stranger, f"foreign-{tag}", digest),
        # A valid signature of the trusted key, moved to another specialist's name.
        f"moved-{tag}": good,
        f"forged-{tag}": replace(good, signature=good.signature[:-8] + "AAAAAAA="),
    }
    for name, signed in cases.items():
        await mesh.deploy(Manifest(name=name), wasm, signed=signed)
    await run_host(nats_server, trusted_publishers=frozenset({good.signer}))
    outcomes = {}
    for name in cases:
        instance = await mesh.spawn(name, "hello")
        outcomes[name] = await mesh.result(instance, wait=True, timeout_s=60)
    ok = outcomes.pop(f"signed-{tag}")
    assert ok is not None and ok.error is None, ok
    reasons = {"unsigned": "not signed", "foreign": "not a publisher this host trusts",
               "moved": "does not verify", "forged": "does not verify"}  # fmt: skip
    for name, result in outcomes.items():
        assert result is not None and result.state == "dead", (name, result)
        assert reasons[name.split("-")[0]] in (result.error or ""), (name, result.error)


async def test_deploy_says_which_running_hosts_will_refuse_the_version(
    mesh: Mesh,
    nats_server: EmbeddedServer,
    run_host: RunHost,
    built: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio
    import json

    from meshkit import connection_flags

    from dagr_wasm.cli import main

    trusted = _publisher(tmp_path, "trusted")
    signer = nkeys.from_seed(bytearray(trusted.read_bytes())).public_key.decode()
    strict = f"strict-{secrets.token_hex(3)}"
    await run_host(nats_server, trusted_publishers=frozenset({signer}), host_id=strict)
    await asyncio.sleep(0.5)  # its announcement is stored
    manifest = tmp_path / "dagr.toml"
    manifest.write_text(f'name = "announce-{secrets.token_hex(3)}"\n')
    argv = [
        "deploy",
        str(built["echo"]),
        "--manifest",
        str(manifest),
        "--json",
        *connection_flags(nats_server),
    ]
    capsys.readouterr()
    assert await asyncio.to_thread(main, argv) == 0
    out, err = capsys.readouterr()
    assert strict in json.loads(out)["refused_by"] and "not signed" in err
    assert await asyncio.to_thread(main, [*argv, "--sign", str(trusted)]) == 0
    assert strict not in json.loads(capsys.readouterr().out)["refused_by"]
