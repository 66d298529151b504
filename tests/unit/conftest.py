"""Fixtures for sandbox unit tests: one Sandbox per session (one Engine per process, as in a host)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dagr_wasm.paths import compiled_cache_dir
from dagr_wasm.sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The session's sandbox, with the user's compiled cache: Python agents compile once, ever.

    Safe to share: entries are content-addressed and sealed by this host (tests of the cache
    itself use fresh directories).
    """
    with Sandbox(cache_dir=compiled_cache_dir()) as sb:
        yield sb


@pytest.fixture
def fresh_cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def built() -> dict[str, Path]:
    """Every agent in agents/, built once (cached by source hash across runs), by name."""
    from concurrent.futures import ThreadPoolExecutor

    from dagr_wasm.build import build_agent

    dirs = sorted(p for p in (ROOT / "agents").iterdir() if (p / "app.py").is_file())
    # Two at a time: componentize-py is mostly single-threaded and this machine kind has 2 cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(build_agent, dirs))
    return {d.name: r.wasm for d, r in zip(dirs, results, strict=True)}
