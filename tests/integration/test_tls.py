"""Issue 9, item 5: TLS, wired since the CLI's first version and now tested against a server that
requires it, with certificates this test makes (a CA and a server certificate for 127.0.0.1)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from meshkit import deploy_all

from dagr_wasm.cli import main
from dagr_wasm.mesh import EmbeddedServer, Mesh, Role, ServerConfig
from dagr_wasm.sandbox import Sandbox

DAGR = str(Path(sys.executable).parent / "dagr")


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a throw-away CA and a server certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the TLS test makes its certificates with openssl"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=dagr test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, Path]]:
    ca, cert, key = _certificates(tmp_path)
    config = ServerConfig(
        store_dir=tmp_path / "nats", credentials_dir=tmp_path / "credentials", tls_cert=cert, tls_key=key
    )
    with EmbeddedServer(config=config) as server:
        yield server, ca


def test_a_host_and_the_cli_work_over_tls_and_refuse_an_unverified_server(
    tls_server: tuple[EmbeddedServer, Path],
    built: dict[str, Path],
    sandbox: Sandbox,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, ca = tls_server
    credentials = server.credentials
    assert credentials is not None

    async def deploy() -> None:
        async with await Mesh.connect(server.options(Role.ADMIN, tls_ca=str(ca))) as mesh:
            await deploy_all(mesh, built, sandbox, ("echo",))

    asyncio.run(deploy())
    admin = ["--nats", server.url, "--creds", str(credentials.seed_file(Role.ADMIN)), "--tls-ca", str(ca)]
    host_flags = ["--nats", server.url, "--creds", str(credentials.seed_file(Role.HOST)), "--tls-ca", str(ca)]
    host = subprocess.Popen([DAGR, "host", *host_flags, "--concurrency", "2"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert main(["spawn", "echo", "--context", "over tls", *admin]) == 0
        instance = capsys.readouterr().out.strip()
        deadline = time.monotonic() + 60
        while main(["result", instance, "--json", *admin]) != 0:
            assert time.monotonic() < deadline, "no result over TLS"
            capsys.readouterr()
            time.sleep(0.2)
        assert '"echo": "over tls"' in capsys.readouterr().out
        # Without the CA the server's certificate cannot be verified: refused, with the reason.
        assert main(["status", instance, "--nats", server.url, "--creds", admin[3]]) == 1
        err = capsys.readouterr().err
        assert "--tls-ca" in err, err
    finally:
        host.terminate()
        host.wait(timeout=60)
