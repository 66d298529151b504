"""The agent manifest (``dagr.toml``): what a specialist is called, what it may do, what it may use.

Read by ``dagr run`` (grants and limits of a local run) and by registration in the mesh. It is
validated completely before anything is stored: a bad manifest changes nothing.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ManifestError
from .policy import Grants, Limits

__all__ = ["MANIFEST_FILE", "Manifest", "load_manifest", "specialist_name_problem"]

MANIFEST_FILE = "dagr.toml"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_MAX_CONFIG_BYTES = 256 * 1024


def specialist_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a specialist name, or None."""
    if _NAME.fullmatch(name):
        return None
    return f"{name!r} is not a valid specialist name: use 1-63 lowercase letters, digits and '-'"


class Manifest(BaseModel):
    """A specialist's manifest. ``config_text`` is what the agent reads through ``config.get``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = Field(default="", max_length=2000)
    topic: str = ""
    config_text: str = Field(default="", max_length=_MAX_CONFIG_BYTES)
    grants: Grants = Grants()
    limits: Limits = Limits()

    @field_validator("name")
    @classmethod
    def _name_is_valid(cls, value: str) -> str:
        problem = specialist_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _topic_is_the_fixed_one(self) -> Manifest:
        fixed = f"agents.specialist.{self.name}"
        if not self.topic:
            object.__setattr__(self, "topic", fixed)
        if self.topic != fixed:
            # Hosts and the task streams bind this one subject (issue 8: a topic that is stored but
            # not bound would silently receive nothing), so it is checked rather than configurable.
            raise ValueError(
                f"topic {self.topic!r}: a specialist's topic is always {fixed!r} (its task stream binds "
                "that subject); omit it"
            )
        return self


def load_manifest(path: Path, *, overrides: dict[str, Any] | None = None) -> Manifest:
    """Read and validate a ``dagr.toml``. ``config = "file"`` is resolved relative to it."""
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError([f"{path} does not exist"], source=source) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError([f"not valid TOML: {exc}"], source=source) from None
    config_file = raw.pop("config", None)
    if config_file is not None:
        if not isinstance(config_file, str):
            raise ManifestError(["config: must be a file name (string)"], source=source)
        config_path = path.parent / config_file
        try:
            raw["config_text"] = config_path.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            raise ManifestError([f"config: {config_path} does not exist"], source=source) from None
    raw.update(overrides or {})
    return validate_manifest(raw, source=source)


def validate_manifest(raw: dict[str, Any], *, source: str = "manifest") -> Manifest:
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(_problems(exc), source=source) from None


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "manifest"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see docs/manifest.md)"
        problems.append(f"{where}: {message}")
    return problems
