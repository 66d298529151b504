"""Where dagr keeps things on this machine: data (the embedded server's store) and caches.

``DAGR_DATA_DIR`` and ``DAGR_CACHE_DIR`` override the platform defaults (``platformdirs``).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["build_cache_dir", "cache_dir", "compiled_cache_dir", "data_dir", "source_root"]


def data_dir() -> Path:
    override = os.environ.get("DAGR_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir("dagr"))


def credentials_dir(data: Path | None = None) -> Path:
    """Where `dagr up` keeps each role's nkey (``<role>.nk``) and where the CLI looks for them."""
    return (data if data is not None else data_dir()).expanduser() / "credentials"


def cache_dir() -> Path:
    override = os.environ.get("DAGR_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("dagr"))


def compiled_cache_dir() -> Path:
    """Compiled components, sealed by this host (see sandbox/_cache.py)."""
    return cache_dir() / "compiled"


def build_cache_dir() -> Path:
    """Components built from agent sources, keyed by the hash of everything that went in."""
    return cache_dir() / "builds"


def source_root() -> Path:
    """The checkout this package runs from: where wit/ and guest-sdk/ live."""
    return Path(__file__).resolve().parents[1]
