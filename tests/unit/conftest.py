"""Fixtures for the unit tests (the shared ``sandbox`` and ``built`` live in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def fresh_cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
