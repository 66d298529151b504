"""Fixtures for sandbox unit tests: one Sandbox per session (one Engine per process, as in a host)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dagr_wasm.sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(cache_dir=tmp_path_factory.mktemp("compiled")) as sb:
        yield sb


@pytest.fixture
def fresh_cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
