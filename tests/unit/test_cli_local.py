"""``dagr build`` and ``dagr run``: the happy path with --json, and bad input (message + exit code 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import watkit
from wasmtime import wat2wasm

from dagr_wasm.cli import main

ROOT = Path(__file__).resolve().parents[2]


def dagr(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_build_reports_the_component_as_json(
    capsys: pytest.CaptureFixture[str], built: dict[str, Path]
) -> None:
    code, out, _ = dagr(capsys, "build", str(ROOT / "agents" / "echo"), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["cached"] is True  # the session fixture built it already
    assert Path(doc["wasm"]).read_bytes()[:8] == b"\x00asm\x0d\x00\x01\x00"
    assert len(doc["digest"]) == 64


def test_counter_state_carries_over_between_runs(
    capsys: pytest.CaptureFixture[str], built: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "counter.json"
    counts = []
    for _ in range(3):
        code, out, _ = dagr(capsys, "run", str(built["counter"]), "--manifest",
                            str(ROOT / "agents" / "counter" / "dagr.toml"), "--state", str(state), "--json")  # fmt: skip
        assert code == 0
        doc = json.loads(out)
        assert doc["status"] == "ok"
        assert doc["peak_memory_bytes"] > 10_000_000  # a Python agent's heap, measured
        counts.append(doc["result"]["cbor"]["count"])
    assert counts == [1, 2, 3]
    saved = json.loads(state.read_text())
    assert saved["instance"]["count"] == {"revision": 3, "cbor": 3}


def test_run_human_output_shows_result_effects_and_logs(
    capsys: pytest.CaptureFixture[str], built: dict[str, Path], tmp_path: Path
) -> None:
    code, out, _ = dagr(capsys, "run", str(ROOT / "agents" / "counter"), "--state", str(tmp_path / "s.json"))
    assert code == 0
    assert '{"count": 1}' in out
    assert "state instance count = 1" in out
    assert "count is now 1" in out
    assert "fuel" in out


def test_run_of_a_failing_agent_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str], built: dict[str, Path]
) -> None:
    code, out, _ = dagr(capsys, "run", str(ROOT / "agents" / "hostile-denied-publish"), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["status"] == "error"
    assert doc["error"]["kind"] == "denied"
    assert doc["committed"] is False


# --- bad input: a message that says what to do, exit code 2, nothing changed ----------------------


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = dagr(capsys, "run", str(tmp_path / "nope.wasm"))
    assert code == 2
    assert "does not exist" in err


def test_not_a_component(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fake = tmp_path / "fake.wasm"
    fake.write_text("definitely not wasm")
    code, _, err = dagr(capsys, "run", str(fake))
    assert code == 2
    assert "is not a dagr agent component: it is not WebAssembly" in err


def test_a_core_module(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    core = tmp_path / "core.wasm"
    core.write_bytes(wat2wasm("(module)"))
    code, _, err = dagr(capsys, "run", str(core))
    assert code == 2
    assert "core wasm module, not a component" in err
    assert "dagr build" in err


def test_a_component_of_another_world(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    wit = tmp_path / "other.wit"
    wit.write_text(
        "package acme:thing@1.0.0;\ninterface run { go: func() -> u32; }\nworld thing { export run; }\n"
    )
    other = tmp_path / "other.wasm"
    other.write_bytes(
        watkit.component_from_core_wat(
            '(module (memory (export "memory") 1) (func (export "acme:thing/run@1.0.0#go") (result i32) i32.const 7))',
            world="thing",
            wit=wit,
        )
    )
    code, _, err = dagr(capsys, "run", str(other))
    assert code == 2
    assert "does not export exactly one of dagr:agent/handler@0.1.0" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "x.wasm", "--event", "bogus"], "bogus"),
        (["run", "x.wasm", "--no-such-flag"], "--no-such-flag"),
        (["run"], "Missing argument"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    code, out, err = dagr(capsys, *args)
    assert code == 2
    assert expected in out + err


def test_message_event_needs_a_subject(capsys: pytest.CaptureFixture[str], built: dict[str, Path]) -> None:
    code, _, err = dagr(capsys, "run", str(built["echo"]), "--event", "message")
    assert code == 2
    assert "--subject" in err


def test_a_bad_state_file_is_refused_and_left_alone(
    capsys: pytest.CaptureFixture[str], built: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"not": "a state file"}')
    code, _, err = dagr(capsys, "run", str(built["counter"]), "--state", str(state))
    assert code == 2
    assert "not a dagr state file" in err
    assert state.read_text() == '{"not": "a state file"}'


def test_a_failed_run_leaves_the_state_file_alone(
    capsys: pytest.CaptureFixture[str], built: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    dagr(capsys, "run", str(built["counter"]), "--state", str(state))
    before = state.read_text()
    code, _, _ = dagr(capsys, "run", str(built["hostile-denied-publish"]), "--state", str(state))
    assert code == 1
    assert state.read_text() == before


def test_an_invalid_manifest_names_each_problem(
    capsys: pytest.CaptureFixture[str], built: dict[str, Path], tmp_path: Path
) -> None:
    manifest = tmp_path / "dagr.toml"
    manifest.write_text('name = "Bad Name"\n[grants]\npublish = ["a.>.b"]\nsurprise = 1\n')
    code, _, err = dagr(capsys, "run", str(built["echo"]), "--manifest", str(manifest))
    assert code == 2
    assert "name: 'Bad Name' is not a valid specialist name" in err
    assert "grants.publish" in err
    assert "grants.surprise: unknown field" in err


def test_build_of_a_directory_without_app_py(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = dagr(capsys, "build", str(tmp_path))
    assert code == 2
    assert "there is no app.py" in err


def test_build_of_a_syntax_error_points_at_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text("import dagr_agent\n\ndef broken(:\n    pass\nHandler = None\n")
    code, _, err = dagr(capsys, "build", str(tmp_path))
    assert code == 2
    assert "app.py:3" in err


def test_build_without_a_handler(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import dagr_agent\n")
    code, _, err = dagr(capsys, "build", str(tmp_path))
    assert code == 2
    assert "does not define `Handler`" in err


def test_build_of_an_agent_importing_an_unavailable_module(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text(
        "import numpy_is_not_here\nimport dagr_agent as dagr\n"
        "Handler = dagr.handler(start=lambda ctx, c: c)\n"
    )
    code, _, err = dagr(capsys, "build", str(tmp_path), "--no-cache")
    assert code == 2
    assert "numpy_is_not_here" in err
    assert "not available inside an agent" in err


def test_the_console_script_propagates_exit_codes(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "dagr"
    done = subprocess.run(
        [str(script), "run", str(tmp_path / "missing.wasm")], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "does not exist" in done.stderr


# --- build errors say what the agent's author needs to know (issue 8) -------------------------------


def test_build_of_an_agent_that_raises_at_import_shows_the_python_error_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text(
        "import dagr_agent as dagr\nHandler = dagr.handler(start=lambda ctx, c: c)\n"
        "raise ValueError('boom at import')\n"
    )
    code, _, err = dagr(capsys, "build", str(tmp_path), "--no-cache")
    assert code == 2
    first = err.splitlines()[0]
    assert "importing app.py raised ValueError: boom at import" in first
    assert f'File "{tmp_path.resolve()}/app.py", line 3' in err
    assert "Caused by" not in err
    assert "top-level code" in err


def test_a_standard_library_module_imported_lazily_works_at_run_time(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text(
        "import collections\nimport datetime\nimport dagr_agent as dagr\n\n"
        "def start(ctx, context):\n"
        "    top = collections.Counter(context.split()).most_common(1)  # imports heapq lazily\n"
        "    when = datetime.datetime.strptime('2026-12-03', '%Y-%m-%d')  # imports _strptime lazily\n"
        "    return {'top': top[0][0], 'year': when.year}\n\n"
        "Handler = dagr.handler(start=start)\n"
    )
    (tmp_path / "dagr.toml").write_text('name = "lazy"\n')
    code, out, err = dagr(capsys, "run", str(tmp_path), "--context", "a b a", "--json")
    assert code == 0, err
    assert json.loads(out)["result"]["cbor"] == {"top": "a", "year": 2026}


def test_a_module_missing_at_run_time_is_explained(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text(
        "import dagr_agent as dagr\n\n"
        "def start(ctx, context):\n"
        "    import zipapp  # never imported while building\n"
        "    return 1\n\n"
        "Handler = dagr.handler(start=start)\n"
    )
    (tmp_path / "dagr.toml").write_text('name = "lazy-missing"\n')
    code, out, _ = dagr(capsys, "run", str(tmp_path), "--json")
    assert code == 1
    error = json.loads(out)["error"]
    assert "No module named 'zipapp'" in error["message"]
    assert "add `import zipapp` at the top of app.py" in error["message"]


def test_build_validates_the_manifest_before_building(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text(
        "import dagr_agent as dagr\nHandler = dagr.handler(start=lambda c, x: x)\n"
    )
    (tmp_path / "dagr.toml").write_text('name = "Bad Name"\n[limits]\nsurprise = 1\n')
    code, _, err = dagr(capsys, "build", str(tmp_path))
    assert code == 2
    assert "name: 'Bad Name' is not a valid specialist name" in err
    assert "limits.surprise: unknown field" in err
    assert not (tmp_path / "build").exists()


def test_deploy_of_a_path_that_does_not_exist_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = dagr(
        capsys, "deploy", str(tmp_path / "nowhere"), "--nats", "nats://127.0.0.1:1", "--json"
    )
    assert code == 2
    assert "nowhere: it does not exist" in err
    assert json.loads(out)["error"]["code"] == "usage"


# --- awaits resolved locally ---------------------------------------------------------------------


def test_run_resolves_a_signal_await_and_resumes(
    capsys: pytest.CaptureFixture[str], built: dict[str, Path]
) -> None:
    args = ["run", str(built["approver"]), "--manifest", str(ROOT / "agents" / "approver" / "dagr.toml")]
    code, out, _ = dagr(
        capsys, *args, "--context", "ship it", "--signal", 'approve={"ok": true, "by": "ana"}', "--json"
    )
    assert code == 0
    doc = json.loads(out)
    assert [r["event"] for r in doc["rounds"]] == ["start", "resumed"]
    assert doc["rounds"][1]["resolved"] == [{"handle": "signal-approve", "kind": "signal", "ok": True}]
    assert doc["result"]["cbor"] == {"request": "ship it", "approved": True, "by": "ana"}

    # Without the signal nothing answers: the resume comes as at the deadline, the timeout path runs.
    code, out, _ = dagr(capsys, *args, "--context", "ship it", "--json")
    doc = json.loads(out)
    assert doc["rounds"][1]["pending"] == ["signal-approve"] and doc["rounds"][1]["timed_out"] is True
    assert doc["result"]["cbor"]["approved"] is False


def test_run_answers_children_from_a_reply_file(
    capsys: pytest.CaptureFixture[str], built: dict[str, Path], tmp_path: Path
) -> None:
    row = {
        "last_close": 1.0,
        "return_30d_pct": 5.0,
        "mentions": 2,
        "sentiment_mean": 0.5,
        "signal": "bullish",
    }
    replies = tmp_path / "replies.json"
    replies.write_text(
        json.dumps({"stock-analyst": [{"ok": {**row, "ticker": "GME"}}, {"error": "no data for AMC"}]})
    )
    code, out, _ = dagr(
        capsys, "run", str(built["orchestrator"]), "--manifest", str(ROOT / "agents" / "orchestrator" / "dagr.toml"),
        "--context", "GME AMC", "--reply", str(replies), "--json",
    )  # fmt: skip
    assert code == 0, out
    report = json.loads(out)["result"]["cbor"]
    assert [r["ticker"] for r in report["rows"]] == ["GME"]
    assert report["failed"][0]["ticker"] == "AMC" and report["failed"][0]["error"] == "no data for AMC"
    assert report["timed_out"] is False


def test_run_makes_http_calls_under_the_manifest_grants(
    capsys: pytest.CaptureFixture[str], built: dict[str, Path], tmp_path: Path
) -> None:
    from httpkit import local_http

    with local_http() as server:
        manifest = tmp_path / "dagr.toml"
        manifest.write_text(f'name = "fetcher"\n\n[[grants.http]]\nurl = "{server.url}/echo"\n')
        base = ["run", str(built["fetcher"]), "--manifest", str(manifest), "--json"]
        code, out, _ = dagr(
            capsys, *base, "--http-allow-private", "--context", json.dumps({"url": f"{server.url}/echo"})
        )
        assert code == 0, out
        report = json.loads(out)["result"]["cbor"]
        assert report["ok"] is True and report["status"] == 200
        assert len(server.requests) == 1

        # The same checks as on a host: an address not allowed, a URL not granted.
        code, out, _ = dagr(capsys, *base, "--context", json.dumps({"url": f"{server.url}/echo"}))
        assert json.loads(out)["result"]["cbor"]["kind"] == "denied"
        # Refused at the call, as on a host: the fetcher does not catch it, so its run fails.
        code, out, _ = dagr(
            capsys, *base, "--http-allow-private", "--context", json.dumps({"url": f"{server.url}/big?n=1"})
        )
        assert code == 1
        assert json.loads(out)["error"]["kind"] == "denied"
        assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("content", "flag", "expected"),
    [
        ("[1]", "--reply", "must be a JSON object"),
        ('{"stock-analyst": {"value": 1}}', "--reply", "is not an answer"),
        ("not json", "--reply", "not valid JSON"),
        (None, "--signal", "expected NAME=DATA"),
    ],
)
def test_bad_answers_for_awaits_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, flag: str, expected: str
) -> None:
    value = "Not A Name=1"
    if content is not None:
        value = str(tmp_path / "replies.json")
        Path(value).write_text(content)
    code, out, _ = dagr(capsys, "run", str(tmp_path / "x.wasm"), flag, value, "--json")
    assert code == 2
    assert expected in json.loads(out)["error"]["message"]
