"""`dagr demo` end to end, as the README runs it: its report checked against the shipped data."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def reference_module() -> ModuleType:
    """The independent computation of the analyst's figures, shared with the unit tests."""
    spec = importlib.util.spec_from_file_location(
        "demo_reference", ROOT / "tests" / "unit" / "test_demo_agents.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_runs_end_to_end_and_reports_figures_from_the_data(
    tmp_path: Path, built: dict[str, Path]
) -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagr"),
            "demo",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout)
    report = outcome["report"]
    reference = reference_module().reference

    rows = {row["ticker"]: row for row in report["rows"]}
    assert set(rows) == {"GME", "AMC", "TSLA", "AAPL", "NVDA"}
    for ticker, row in rows.items():
        expected = reference(ticker)
        for field in ("last_close", "sma_20", "volatility_20d", "return_30d_pct", "sentiment_mean"):
            assert math.isclose(row[field], expected[field], abs_tol=1e-3), (ticker, field)
        assert row["mentions"] == expected["mentions"]
        assert row["signal"] == expected["signal"]

    by_return = sorted(rows, key=lambda t: reference(t)["return_30d_pct"], reverse=True)
    assert [entry["ticker"] for entry in report["ranking"]] == by_return
    assert report["failed"] == []

    tree = outcome["tree"]
    assert tree["specialist"] == "orchestrator"
    assert tree["state"] == "finished"
    assert sorted(child["specialist"] for child in tree["children"]) == ["stock-analyst"] * 5
    assert all(child["state"] == "finished" for child in tree["children"])
    # The data stays behind for `dagr up` + `dagr status` to explore.
    assert (tmp_path / "nats" / "jetstream").is_dir()
