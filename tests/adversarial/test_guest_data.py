"""Classes 9 and 10: guest data on the host, in the SDK and on the operator's terminal.

Before: the SDK's CBOR decoder recursed without limit (5,000 nested tags in a child's reply crashed
the parent); cyclic CBOR or a 5,000-digit integer in a result crashed ``dagr run --json``, ``dagr
status --json`` and ``dagr result`` for every operator; raw ANSI/OSC escapes from guest logs reached
the terminal, and guest error text was parsed as Rich markup (``[/x]`` crashed ``dagr run``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
import watkit
from arena import Arena

from dagr_wasm.cli import main
from dagr_wasm.policy import Grants

ROOT = Path(__file__).resolve().parents[2]
DAGR = str(Path(sys.executable).parent / "dagr")

NASTY = {
    "cyclic": bytes.fromhex("d81c81d81d00"),  # shareable([shared-ref(0)]): a list containing itself
    "bignum": cbor2.dumps(10**5000),
    "deep arrays": b"\x81" * 10_000 + b"\x01",
    "nested tags": b"\xd9\xd9\xf7" * 5000 + b"\x01",
    "deep maps": b"\xa1\x61k" * 5000 + b"\x01",
    "not CBOR": b"\xff\xfe\xfd",
}


def _returns(data: bytes) -> bytes:
    """A WAT agent whose result is exactly ``data``."""
    return watkit.component(
        f"(call $ok (i32.const 4096) (i32.const {len(data)}))", extra=watkit.data(4096, data), pages=2
    )


def dagr(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DAGR, *args], capture_output=True, text=True, timeout=timeout, check=False)


class Cli:
    """The CLI in this process (its own thread: it runs an event loop of its own)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
        self.capsys = capsys
        self.flags = flags

    async def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, [*args, *self.flags])
        out, err = self.capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)


@pytest.mark.parametrize("case", list(NASTY))
async def test_every_command_renders_a_hostile_result(
    arena: Arena, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    cli = Cli(capsys, arena.cli_flags)
    name = await arena.deploy(_returns(NASTY[case]))
    status = await arena.run(name)
    assert status["state"] == "finished"
    instance = status["id"]
    for args in (
        ["status", instance, "--json"],
        ["status", instance],
        ["result", instance, "--json"],
        ["result", instance],
        ["logs", instance, "--json"],
        ["status", "--json"],
    ):
        done = await cli(*args)
        assert done.returncode == 0, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
        if "--json" in args:
            json.loads(done.stdout)
    shown = json.loads((await cli("result", instance, "--json")).stdout)
    assert shown["ok"] == {"base64": __import__("base64").b64encode(NASTY[case]).decode()}


@pytest.mark.parametrize("case", ["cyclic", "bignum", "deep arrays", "nested tags"])
def test_dagr_run_renders_a_hostile_result(tmp_path: Path, case: str) -> None:
    module = tmp_path / "nasty.wasm"
    module.write_bytes(_returns(NASTY[case]))
    for args in (["--json"], []):
        done = dagr("run", str(module), *args)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
    assert json.loads(dagr("run", str(module), "--json").stdout)["result"] == {
        "base64": __import__("base64").b64encode(NASTY[case]).decode()
    }


async def test_a_parent_survives_a_child_reply_of_nested_tags(arena: Arena, built: dict[str, Path]) -> None:
    # The spawner (Python SDK) spawns `echo` children and decodes their replies when it wakes;
    # in the arena, `echo` is an attacker answering 5,000 nested CBOR tags.
    await arena.deploy(_returns(NASTY["nested tags"]), name="echo")
    spawner = await arena.deploy(
        built["spawner"].read_bytes(), grants=Grants(spawn=("echo",), max_suspend_s=60)
    )
    status = await arena.run(spawner, "2", timeout_s=60)
    assert status["state"] == "finished", status
    result = cbor2.loads(status["ok"])
    assert len(result["children"]) == 2 and result["replies"] == [None, None]


def test_the_sdk_decoder_bounds_tags_like_containers() -> None:
    sys.path.insert(0, str(ROOT / "guest-sdk" / "python"))
    try:
        from dagr_agent import _cbor
    finally:
        sys.path.pop(0)
    with pytest.raises(ValueError, match="nesting deeper"):
        _cbor.loads(NASTY["nested tags"])
    assert _cbor.loads(b"\xd9\xd9\xf7\x01") == 1


ESC = "\x1b"


async def test_guest_text_reaches_the_terminal_inert(
    arena: Arena, built: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capsys, arena.cli_flags)
    name = await arena.deploy(built["hostile-output"].read_bytes())
    ok = await arena.run(name, "escapes")
    failed = await arena.run(name, "fail")
    assert ok["state"] == "finished" and failed["state"] == "failed"
    for args in (
        ["logs", ok["id"]],
        ["status", ok["id"]],
        ["status", failed["id"]],
        ["result", ok["id"]],
        ["result", failed["id"]],
        ["logs"],
        ["status"],
    ):
        done = await cli(*args)
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        for stream in (done.stdout, done.stderr):
            assert ESC not in stream and "\x07" not in stream and "\u202e" not in stream, (args, stream[:400])
    shown = await cli("result", failed["id"])
    assert shown.returncode == 1
    assert "[/x] [bold red]not markup[/bold red]" in shown.stderr  # printed literally, not styled
    # The author's inner loop: `dagr run` of the same agent, both ways.
    for context in ("escapes", "fail"):
        done = dagr("run", str(built["hostile-output"]), "--context", context)
        assert "Traceback" not in done.stderr and "MarkupError" not in done.stderr, done.stderr[-2000:]
        assert ESC not in done.stdout + done.stderr
