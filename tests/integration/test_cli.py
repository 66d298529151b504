"""Every command of the CLI through its entry point, against a real server and a real host process.

Happy paths with their --json output parsed; bad input with its message, exit code 2 (or 1 for
a server that is down) and no change to what is stored.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from meshkit import HostProcess, connection_flags

from dagr_wasm.cli import main
from dagr_wasm.mesh import EmbeddedServer, Role, SpecialistVersion
from dagr_wasm.payload import from_tagged

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def host(
    nats_server: EmbeddedServer,
    deployed: dict[str, SpecialistVersion],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostProcess]:
    """One `dagr host` process for the module (the CLI commands run while this test's loop is idle)."""
    log = tmp_path_factory.mktemp("cli-host") / "host.log"
    log_file = log.open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagr"),
            "host",
            *connection_flags(nats_server, Role.HOST),
            "--concurrency",
            "6",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    yield HostProcess(proc, log, log_file)
    proc.terminate()
    proc.wait(timeout=60)
    log_file.close()


class Dagr:
    """The CLI in process, as the session server's admin (``--nats URL --creds admin.nk``)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], server: EmbeddedServer) -> None:
        self.capsys = capsys
        self.url = server.url
        self.flags = connection_flags(server)

    def __call__(self, *args: str, nats: bool = True) -> tuple[int, str, str]:
        argv = [*args, *self.flags] if nats else list(args)
        code = main(argv)
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def dagr(capsys: pytest.CaptureFixture[str], nats_server: EmbeddedServer, host: HostProcess) -> Dagr:
    return Dagr(capsys, nats_server)


def wait_for_state(dagr: Dagr, instance: str, states: set[str], timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        tree: dict[str, Any] = dagr.json("status", instance)
        if tree["state"] in states:
            return tree
        assert time.monotonic() < deadline, f"{instance} stayed {tree['state']}"
        time.sleep(0.1)


def test_the_issues_commands_verbatim(dagr: Dagr) -> None:
    code, out, err = dagr(
        "register", "specialist", "--name", "stock-analyst",
        "--description", "Analyzes stock market data and Reddit sentiment",
        "--topic", "agents.specialist.stock-analyst", "--config", str(ROOT / "agents/stock-analyst/config.md"),
    )  # fmt: skip
    assert code == 0, err
    assert "registered stock-analyst version" in out
    dagr("deploy", str(ROOT / "agents/orchestrator"))

    code, out, _ = dagr("list", "specialists")
    assert code == 0
    assert '- stock-analyst: "Analyzes stock market data and Reddit sentiment"' in out.splitlines()

    code, out, _ = dagr("start", "--agent", "orchestrator")
    assert code == 0
    orchestrator = out.strip()
    assert len(orchestrator) == 20

    code, out, _ = dagr(
        "spawn",
        "stock-analyst",
        "--context",
        "Check GME sentiment on Reddit",
        "--reply-to",
        "agents.main.results",
    )
    assert code == 0
    analyst = out.strip()
    result = dagr.json("result", analyst, "--wait", "--timeout", "60")
    assert result["ok"]["cbor"]["ticker"] == "GME"

    report = dagr.json("result", orchestrator, "--wait", "--timeout", "90")
    assert {row["ticker"] for row in report["ok"]["cbor"]["rows"]} == {"GME", "AMC", "TSLA", "AAPL", "NVDA"}


def test_list_and_status_as_json(dagr: Dagr) -> None:
    specialists = dagr.json("list", "specialists")["specialists"]
    names = {s["name"] for s in specialists}
    assert {"echo", "counter", "spawner"} <= names
    echo = next(s for s in specialists if s["name"] == "echo")
    assert echo["topic"] == "agents.specialist.echo"
    assert len(echo["digest"]) == 64

    parent = dagr("spawn", "spawner", "--context", "2")[1].strip()
    tree = wait_for_state(dagr, parent, {"finished"})
    assert tree["specialist"] == "spawner"
    assert [child["specialist"] for child in tree["children"]] == ["echo", "echo"]
    assert all(child["state"] == "finished" for child in tree["children"])
    listed = dagr.json("status", "--limit", "500")["instances"]
    assert parent in {s["id"] for s in listed}


def test_logs_result_and_kv(dagr: Dagr) -> None:
    counter = dagr("start", "--agent", "counter")[1].strip()
    result = dagr.json("result", counter, "--wait", "--timeout", "60")
    assert result["ok"] == {"cbor": {"count": 1}}
    assert result["error"] is None

    code, out, _ = dagr("result", counter)
    assert code == 0
    assert json.loads(out) == {"count": 1}

    logs = dagr.json("logs", counter)
    assert [r["state"] for r in logs["records"]] == ["finished"]
    assert logs["records"][0]["lines"] == [["info", "count is now 1"]]
    code, out, _ = dagr("logs", counter)
    assert "count is now 1" in out

    state = dagr.json("kv", counter)
    assert state["state"]["count"]["cbor"] == 1
    code, out, _ = dagr("kv", counter, "count")
    assert code == 0
    assert "count" in out


def test_logs_follow_prints_json_lines(nats_server: EmbeddedServer, host: HostProcess) -> None:
    dagr_bin = str(Path(sys.executable).parent / "dagr")
    counter = subprocess.run(
        [dagr_bin, "start", "--agent", "counter", *connection_flags(nats_server)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    follower = subprocess.Popen(
        [dagr_bin, "logs", counter, "-f", "--json", *connection_flags(nats_server)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert first["id"] == counter
        assert first["lines"] == [["info", "count is now 1"]]
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()


def test_suspend_reschedules_a_wake(dagr: Dagr, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeper = dagr("spawn", "sleeper", "--context", "3600 nap")[1].strip()
    wait_for_state(dagr, sleeper, {"suspended"})
    soon = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    monkeypatch.setenv("DAGR_AGENT_ID", sleeper)
    status = dagr.json("suspend", "--until", soon, "--resume-context", "woken early")
    assert status["state"] == "suspended"
    result = dagr.json("result", sleeper, "--wait", "--timeout", "60")
    assert result["ok"]["cbor"] == {"note": "nap", "resume": "woken early", "wakes": 1}


def test_suspend_refuses_bad_times_and_changes_nothing(dagr: Dagr) -> None:
    sleeper = dagr("spawn", "sleeper", "--context", "3600 nap")[1].strip()
    before = wait_for_state(dagr, sleeper, {"suspended"})

    code, _, err = dagr(
        "suspend", "--until", "2026-01-22T18:00:00", "--resume-context", "x", "--agent-id", sleeper
    )
    assert code == 2
    assert "in the past" in err
    code, _, err = dagr("suspend", "--until", "next tuesday", "--agent-id", sleeper)
    assert code == 2
    assert "not an ISO 8601 time" in err
    code, _, err = dagr("suspend", "--until", "2999-01-01T00:00:00", "--agent-id", sleeper)
    assert code == 2
    assert "beyond the granted horizon" in err
    code, _, err = dagr("suspend", "--until", "2999-01-01T00:00:00", "--agent-id", "nosuchinstance")
    assert code == 2
    assert "no instance named 'nosuchinstance'" in err

    after = dagr.json("status", sleeper)
    assert (after["state"], after["wake_at_ms"]) == (before["state"], before["wake_at_ms"])
    dagr("cancel", sleeper)


def test_suspend_needs_an_instance(dagr: Dagr, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGR_AGENT_ID", raising=False)
    code, _, err = dagr("suspend", "--until", "2999-01-01T00:00:00")
    assert code == 2
    assert "DAGR_AGENT_ID" in err


def test_cancel_drops_the_pending_wake(dagr: Dagr) -> None:
    sleeper = dagr("spawn", "sleeper", "--context", "2 nap")[1].strip()
    wait_for_state(dagr, sleeper, {"suspended"})
    cancelled = dagr.json("cancel", sleeper)
    assert cancelled["state"] == "cancelled"
    time.sleep(3)  # past its wake time: a wake that fired would show as a result
    code, _, _ = dagr("result", sleeper)
    assert code == 1
    assert dagr.json("status", sleeper)["state"] == "cancelled"


def test_dead_letters_list_and_retry(dagr: Dagr) -> None:
    doomed = dagr("spawn", "hostile-recursion")[1].strip()
    wait_for_state(dagr, doomed, {"dead"}, timeout_s=120)
    rows = dagr.json("dead-letters")["dead_letters"]
    mine = [r for r in rows if r["instance"] == doomed]
    assert len(mine) == 1
    assert mine[0]["kind"] == "stack-overflow"
    assert mine[0]["attempts"] == 4

    retried = dagr.json("dead-letters", "--retry", mine[0]["task"])
    assert retried["retried"] == mine[0]["task"]
    assert mine[0]["task"] not in {r["task"] for r in dagr.json("dead-letters")["dead_letters"]}


# --- bad input ------------------------------------------------------------------------------------


def test_unknown_specialist(dagr: Dagr) -> None:
    for command in (["spawn", "nobody"], ["start", "--agent", "nobody"]):
        code, _, err = dagr(*command)
        assert code == 2
        assert "no specialist named 'nobody'" in err


def test_bad_reply_to_subject(dagr: Dagr) -> None:
    code, _, err = dagr("spawn", "echo", "--reply-to", "agents.main.*")
    assert code == 2
    assert "not a subject results can go to" in err


def test_a_reply_to_on_the_runtimes_subjects_is_refused(dagr: Dagr) -> None:
    code, _, err = dagr("spawn", "echo", "--reply-to", "dagr.cancel.someone")
    assert code == 2
    assert "outside the runtime's own subjects" in err


def test_register_with_a_missing_config_file_stores_nothing(dagr: Dagr) -> None:
    before = dagr.json("list", "specialists")
    code, _, err = dagr("register", "specialist", "--name", "echo", "--config", "/nonexistent/config.md")
    assert code == 2
    assert "/nonexistent/config.md" in err
    assert dagr.json("list", "specialists") == before


def test_register_with_a_bad_name_stores_nothing(dagr: Dagr) -> None:
    before = dagr.json("list", "specialists")
    code, _, err = dagr("register", "specialist", "--name", "Not Valid")
    assert code == 2
    assert "is not a valid specialist name" in err
    assert dagr.json("list", "specialists") == before


def test_unknown_instance(dagr: Dagr) -> None:
    for command in (["status", "nosuch"], ["result", "nosuch"], ["kv", "nosuch"], ["cancel", "nosuch"]):
        code, _, err = dagr(*command)
        assert code == 2, command
        assert "no instance named 'nosuch'" in err


def test_result_timeout_without_wait_is_a_usage_error(dagr: Dagr) -> None:
    code, _, err = dagr("result", "x", "--timeout", "3")
    assert code == 2
    assert "--timeout goes with --wait" in err


def test_server_down(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["list", "specialists"], ["spawn", "echo"], ["status"]):
        code = main([*command, "--nats", "nats://127.0.0.1:1"])
        _, err = capsys.readouterr()
        assert code == 1
        assert "cannot reach NATS at nats://127.0.0.1:1" in err
        assert "dagr up" in err


def test_missing_tls_file(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["status", "--nats", "nats://127.0.0.1:1", "--tls-ca", "/nonexistent/ca.pem"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "--tls-ca /nonexistent/ca.pem: no such file" in err


@pytest.mark.parametrize("command", ["host", "up"])
def test_fewer_tasks_in_flight_than_slots_is_refused(
    command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    flags = ["--nats", "nats://127.0.0.1:1"] if command == "host" else ["--data-dir", str(data)]
    code = main([command, "--concurrency", "8", "--in-flight", "4", *flags])
    _, err = capsys.readouterr()
    assert code == 2
    assert "--in-flight 4 is less than --concurrency 8" in err
    assert not data.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["start", "--help"], ["register", "specialist", "--help"], ["list", "specialists", "--help"],
        ["spawn", "--help"], ["suspend", "--help"], ["status", "--help"], ["logs", "--help"],
        ["result", "--help"], ["kv", "--help"], ["cancel", "--help"], ["dead-letters", "--help"],
        ["up", "--help"], ["host", "--help"], ["deploy", "--help"], ["build", "--help"], ["run", "--help"],
        ["demo", "--help"],
    ],
)  # fmt: skip
def test_every_command_has_help_with_an_example(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert main(command) == 0
    out, _ = capsys.readouterr()
    assert "Example: dagr" in out


def test_the_nats_cli_context_is_used_when_no_url_is_given(
    dagr: Dagr, nats_server: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    (config / "nats" / "context").mkdir(parents=True)
    (config / "nats" / "context.txt").write_text("dagr-test\n")
    (config / "nats" / "context" / "dagr-test.json").write_text(
        json.dumps({"url": nats_server.url, "creds": connection_flags(nats_server)[-1]})
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.delenv("NATS_URL", raising=False)
    code, out, err = dagr("list", "specialists", nats=False)
    assert code == 0, err
    assert "- echo: " in out


def test_deploying_a_malformed_module_stores_nothing(dagr: Dagr, tmp_path: Path) -> None:
    before = dagr.json("list", "specialists")
    fake = tmp_path / "fake.wasm"
    fake.write_bytes(b"\x00asm\x0d\x00\x01\x00 not really a component")
    code, _, err = dagr("deploy", str(fake), "--manifest", str(ROOT / "agents/echo/dagr.toml"))
    assert code == 2
    assert "is not a dagr agent component: it does not compile" in err
    assert dagr.json("list", "specialists") == before


def test_deploying_with_an_invalid_manifest_stores_nothing(dagr: Dagr, tmp_path: Path) -> None:
    before = dagr.json("list", "specialists")
    manifest = tmp_path / "dagr.toml"
    manifest.write_text('name = "echo"\n[grants]\npublish = ["a.>.b"]\n')
    code, _, err = dagr("deploy", str(ROOT / "agents/echo/build/echo.wasm"), "--manifest", str(manifest))
    assert code == 2
    assert "grants.publish" in err
    assert dagr.json("list", "specialists") == before


# --- lifecycle: actions on instances that have ended (issue 8) ------------------------------------


def test_suspend_and_cancel_of_an_ended_instance_are_refused_and_change_nothing(dagr: Dagr) -> None:
    sleeper = dagr("spawn", "sleeper", "--context", "0.2 nap")[1].strip()
    done = dagr.json("result", sleeper, "--wait", "--timeout", "60")
    assert done["ok"]["cbor"]["wakes"] == 1
    before_logs = dagr.json("logs", sleeper)
    far = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")

    code, _, err = dagr("suspend", "--until", far, "--agent-id", sleeper)
    assert code == 2
    assert "it is finished" in err
    code, out, err = dagr("cancel", sleeper, "--json")
    assert code == 2
    assert "it is finished" in err
    assert json.loads(out)["error"]["code"] == "usage"

    time.sleep(1)  # a wake that was wrongly scheduled or a re-run would show by now
    assert dagr.json("status", sleeper)["state"] == "finished"
    assert dagr.json("result", sleeper)["ok"]["cbor"] == done["ok"]["cbor"]  # not hidden
    assert dagr.json("logs", sleeper) == before_logs  # no invocation ran again


def test_result_wait_on_a_cancelled_instance_returns_at_once(dagr: Dagr) -> None:
    sleeper = dagr("spawn", "sleeper", "--context", "3600 nap")[1].strip()
    wait_for_state(dagr, sleeper, {"suspended"})
    assert dagr.json("cancel", sleeper)["state"] == "cancelled"
    started = time.monotonic()
    code, out, _ = dagr("result", sleeper, "--wait", "--timeout", "30", "--json")
    assert time.monotonic() - started < 10
    assert code == 1
    assert json.loads(out)["state"] == "cancelled"
    code, _, err = dagr("cancel", sleeper)
    assert code == 2
    assert "it is cancelled" in err


def test_spawning_a_specialist_without_a_module_is_refused(dagr: Dagr) -> None:
    code, _, err = dagr("register", "specialist", "--name", "moduleless", "--description", "no module")
    assert code == 0, err
    before = dagr.json("status")
    for argv in (("spawn", "moduleless"), ("start", "--agent", "moduleless")):
        code, out, err = dagr(*argv)
        assert code == 2, (argv, out, err)
        assert "registered without a module" in err
        assert "dagr deploy" in err
    assert dagr.json("status") == before  # no instance was queued


def test_a_topic_other_than_the_specialists_own_is_refused(dagr: Dagr) -> None:
    code, _, err = dagr("register", "specialist", "--name", "topical", "--topic", "somewhere.else")
    assert code == 2
    assert "always 'agents.specialist.topical'" in err
    code, out, _ = dagr("list", "specialists")
    assert "topical" not in out


def test_an_unhandled_denied_call_is_final_at_once(dagr: Dagr) -> None:
    code, _, err = dagr("deploy", str(ROOT / "agents/hostile-denied-publish"))
    assert code == 0, err
    doomed = dagr("spawn", "hostile-denied-publish")[1].strip()
    code, out, _ = dagr("result", doomed, "--wait", "--timeout", "60", "--json")
    assert code == 1  # the agent failed
    result = json.loads(out)
    assert result["state"] == "dead"
    assert "denied" in result["error"]
    assert "not retried" in result["error"]
    assert [r["attempt"] for r in dagr.json("logs", doomed)["records"]] == [1]


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server with JetStream and nothing of dagr on it."""
    from dagr_wasm.mesh import ServerConfig

    with EmbeddedServer(config=ServerConfig(store_dir=tmp_path_factory.mktemp("bare"))) as server:
        yield server.url


@pytest.mark.parametrize(
    "argv",
    [
        ("spawn", "echo"),
        ("start", "--agent", "echo"),
        ("status",),
        ("status", "abc"),
        ("logs",),
        ("logs", "abc"),
        ("result", "abc"),
        ("kv", "abc"),
        ("cancel", "abc"),
        ("dead-letters",),
        ("suspend", "--until", "2999-01-01T00:00:00", "--agent-id", "abc"),
    ],
    ids=" ".join,
)
def test_a_server_without_the_dagr_layout_gets_a_clear_error(
    capsys: pytest.CaptureFixture[str], bare_server: str, argv: tuple[str, ...]
) -> None:
    code = main([*argv, "--nats", bare_server, "--json"])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert "Traceback" not in err
    assert "no dagr layout" in err
    doc = json.loads(out)["error"]
    assert (doc["code"], doc["type"]) == ("runtime", "LayoutMissing")
    assert "dagr up" in doc["hint"]


# --- small commands users asked for (issue 8) -------------------------------------------------------

DAGR_BIN = str(Path(sys.executable).parent / "dagr")


def test_version(dagr: Dagr) -> None:
    code, out, _ = dagr("--version", nats=False)
    assert code == 0
    assert out.startswith("dagr-wasm 0.1.0 (contract dagr:agent@0.3.0)")


def test_watch_prints_what_agents_publish(dagr: Dagr, nats_server: EmbeddedServer) -> None:
    subject = f"agents.main.watch{int(time.time() * 1000)}"
    watcher = subprocess.Popen(
        [DAGR_BIN, "watch", subject, "--count", "1", "--json", *connection_flags(nats_server)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    time.sleep(2)  # subscribed
    dagr("spawn", "echo", "--context", "seen by watch", "--reply-to", subject)
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    [line] = out.splitlines()
    doc = json.loads(line)
    assert doc["subject"] == subject
    # The reply envelope holds bytes, so it is shown losslessly tagged; what the agent said is inside.
    assert b"seen by watch" in from_tagged(doc["payload"])


def test_logs_follow_of_one_instance_ends_when_it_ends(dagr: Dagr, nats_server: EmbeddedServer) -> None:
    sleeper = dagr("spawn", "sleeper", "--context", "1 nap")[1].strip()
    follower = subprocess.run(
        [DAGR_BIN, "logs", sleeper, "-f", "--json", *connection_flags(nats_server)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert follower.returncode == 0, follower.stderr
    states = [json.loads(line)["state"] for line in follower.stdout.splitlines()]
    assert states[-1] == "finished"
    assert "suspended" in states


def test_kv_shared_reads_the_specialists_shared_state(dagr: Dagr, nats_server: EmbeddedServer) -> None:
    import asyncio

    import cbor2
    import nats

    async def write_shared() -> None:
        nc = await nats.connect(nats_server.url, nkeys_seed=connection_flags(nats_server)[-1])
        await nc.jetstream().publish("$KV.dagr-state.s.echo.greeting", cbor2.dumps("hello all"))
        await nc.close()

    asyncio.run(write_shared())
    echo = dagr("spawn", "echo", "--context", "x")[1].strip()
    dagr.json("result", echo, "--wait", "--timeout", "60")
    shared = dagr.json("kv", echo, "--shared")
    assert shared["shared"] is True
    assert shared["state"]["greeting"]["cbor"] == "hello all"
    assert "greeting" not in dagr.json("kv", echo)["state"]


def test_delete_specialist_is_refused_while_instances_wait_unless_forced(
    dagr: Dagr, built: dict[str, Path]
) -> None:
    code, _, err = dagr("register", "specialist", "--name", "deletable", "--module", str(built["sleeper"]))
    assert code == 0, err
    waiting = dagr("spawn", "deletable", "--context", "3600 nap")[1].strip()
    wait_for_state(dagr, waiting, {"suspended"})

    code, out, err = dagr("delete", "specialist", "deletable", "--json")
    assert code == 2
    assert "not ended" in err and "--force" in err
    assert "deletable" in dagr("list", "specialists")[1]  # nothing changed

    deleted = dagr.json("delete", "specialist", "deletable", "--force")
    assert deleted["cancelled"] == [waiting]
    assert dagr.json("status", waiting)["state"] == "cancelled"
    assert "deletable" not in dagr("list", "specialists")[1]
    code, _, err = dagr("spawn", "deletable")
    assert code == 2
    assert "no specialist named 'deletable'" in err
    # It can come back, with versions that continue its history.
    code, out, err = dagr(
        "register", "specialist", "--name", "deletable", "--module", str(built["sleeper"]), "--json"
    )
    assert code == 0, err
    assert json.loads(out)["version"] == 2


def test_a_deploy_that_widens_grants_needs_approval(
    dagr: Dagr, built: dict[str, Path], tmp_path: Path
) -> None:
    """Issue 9: a new version asking for more than the current one is shown and refused until
    --approve-grants; nothing is stored meanwhile; narrowing needs no approval."""
    name = f"grants-{int(time.time() * 1000) % 10**8}"
    manifest = tmp_path / "dagr.toml"
    manifest.write_text(f'name = "{name}"\n[grants]\npublish = ["agents.main.results"]\n')
    module = str(built["echo"])
    assert dagr("deploy", module, "--manifest", str(manifest))[0] == 0
    manifest.write_text(
        f'name = "{name}"\n[grants]\npublish = ["agents.main.>"]\nspawn = ["echo"]\nkv_scope = "specialist"\n'
    )
    code, out, err = dagr("deploy", module, "--manifest", str(manifest), "--json")
    assert code == 2
    assert "+ publish agents.main.>" in err and "+ spawn echo" in err and "+ kv_scope specialist" in err
    assert json.loads(out)["error"]["type"] == "GrantEscalation"
    [entry] = [s for s in dagr.json("list", "specialists")["specialists"] if s["name"] == name]
    assert entry["version"] == 1 and entry["grants"]["publish"] == ["agents.main.results"]
    code, _, err = dagr("deploy", module, "--manifest", str(manifest), "--approve-grants")
    assert code == 0, err
    manifest.write_text(f'name = "{name}"\n[grants]\npublish = ["agents.main.results"]\n')
    assert dagr("deploy", module, "--manifest", str(manifest))[0] == 0  # narrower: no approval needed
    [entry] = [s for s in dagr.json("list", "specialists")["specialists"] if s["name"] == name]
    assert entry["version"] == 3


def test_deploy_sign_stores_the_publishers_signature(
    dagr: Dagr, built: dict[str, Path], tmp_path: Path
) -> None:
    import secrets

    import nkeys

    key = tmp_path / "publisher.nk"
    key.write_bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))
    name = f"signed-{secrets.token_hex(3)}"
    manifest = tmp_path / "dagr.toml"
    manifest.write_text(f'name = "{name}"\n')
    version = dagr.json("deploy", str(built["echo"]), "--manifest", str(manifest), "--sign", str(key))
    assert version["signer"] == nkeys.from_seed(bytearray(key.read_bytes())).public_key.decode()
    assert version["signature"]
    not_a_key = tmp_path / "not-a-key.nk"
    not_a_key.write_text("hello")
    code, _, err = dagr("deploy", str(built["echo"]), "--manifest", str(manifest), "--sign", str(not_a_key))
    assert code == 2 and "not an nkey seed" in err
