"""Class 2: building an agent runs its top-level code. It must touch nothing of the builder's.

Before: componentize-py ran ``app.py`` with the agent dir, the guest SDK and the active virtual
environment's site-packages mapped writable; a hostile agent planted a ``.pth`` file that then ran
on every Python start, and could read the builder's site-packages.
"""

from __future__ import annotations

import os
import shutil
import site
import sys
from pathlib import Path

import pytest

from dagr_wasm.build import build_agent, contract_dirs
from dagr_wasm.errors import AgentSourceError
from dagr_wasm.invocation import Invocation, Start, Status
from dagr_wasm.payload import decode_cbor
from dagr_wasm.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
PLANTED = "dagr_hostile_build.pth"


def _places_a_build_could_reach() -> list[Path]:
    wit, sdk = contract_dirs()
    places = {Path(p) for p in site.getsitepackages()} | {
        Path(sys.prefix),
        sdk,
        wit,
        ROOT / "agents" / "hostile-build",
    }
    places |= {Path(p) for p in sys.path if p and Path(p).is_dir()}
    return sorted(places)


def test_a_build_sees_only_throw_away_copies(built: dict[str, Path], sandbox: Sandbox) -> None:
    # Built by the session (from the build cache or afresh): run it and read what its top-level
    # code saw while it was being built.
    agent = sandbox.load_file(built["hostile-build"])
    out = sandbox.run(agent, Invocation(task_id="t", instance_id="i", specialist="s", event=Start("")))
    assert out.status is Status.OK, out.error
    seen = decode_cbor(out.result or b"")
    listings = seen["listings"]
    # componentize-py maps each directory of its Python path as /0, /1, ...: only the two copies.
    mapped = [p for p in seen["path"] if p.strip("/").isdigit()]
    assert mapped == ["/0", "/1"], seen["path"]
    assert set(listings["/0"]) <= {"app.py", "dagr.toml", "__pycache__"}, listings["/0"]
    assert set(listings["/1"]) <= {"README.md", "dagr_agent", "__pycache__"}, listings["/1"]
    everything = repr(listings) + repr(seen["path"]) + repr(seen["environ"])
    for marker in (
        "dist-packages",
        ".venv",
        "VIRTUAL_ENV",
        "componentize_py-",
        "dagr_wasm",
        "pydantic",
        "nats",
    ):
        assert marker not in everything, f"the build could see {marker}: {everything[:500]}"
    assert set(seen["environ"]) <= {"PYTHONHOME", "PYTHONPATH", "PYTHONUNBUFFERED"}, seen["environ"]


def test_nothing_a_build_plants_survives_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh build (no cache), so the top-level code really runs here, now.
    agent = tmp_path / "hostile-build"
    shutil.copytree(ROOT / "agents" / "hostile-build", agent, ignore=shutil.ignore_patterns("build"))
    monkeypatch.setenv("DAGR_CACHE_DIR", str(tmp_path / "cache"))
    reachable = [*_places_a_build_could_reach(), agent]
    build_agent(agent, use_cache=False)
    planted = [str(place / PLANTED) for place in reachable if (place / PLANTED).exists()]
    assert planted == [], f"a build left files behind: {planted}"
    assert "DAGR_PWNED" not in os.environ


def test_a_symlink_out_of_the_agent_dir_is_refused(tmp_path: Path) -> None:
    agent = tmp_path / "leaky"
    shutil.copytree(ROOT / "agents" / "echo", agent, ignore=shutil.ignore_patterns("build"))
    (agent / "secrets.txt").symlink_to("/etc/passwd")
    with pytest.raises(AgentSourceError, match="outside the directory"):
        build_agent(agent, use_cache=False)


def test_a_build_that_never_ends_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = tmp_path / "forever"
    agent.mkdir()
    (agent / "app.py").write_text(
        "import dagr_agent as dagr\nwhile True:\n    pass\nHandler = dagr.handler(start=lambda ctx, c: c)\n"
    )
    monkeypatch.setenv("DAGR_BUILD_TIMEOUT_S", "5")
    monkeypatch.setenv("DAGR_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(AgentSourceError, match="ran longer than 5 s"):
        build_agent(agent, use_cache=False)
