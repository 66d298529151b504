"""Host-held secrets for agents' HTTP calls: ``dagr host --secrets FILE`` and ``DAGR_SECRET_<NAME>``.

The file is TOML, one ``NAME = "value"`` per secret (or under a ``[secrets]`` table). Like a
credentials file it must be private (mode 0600, owned by the user): anyone who reads it has every
key the host holds. Values never go to a guest; agents write ``{{secret:NAME}}`` placeholders.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..mesh import HttpPolicy

__all__ = ["AllowPrivateFlag", "ModelsFlag", "RecordModelTextFlag", "SecretsFlag", "http_policy"]

SecretsFlag = Annotated[
    Path | None,
    typer.Option(
        "--secrets",
        help='TOML file of NAME = "value" secrets for agents\' HTTP calls (mode 0600); '
        "DAGR_SECRET_<NAME> variables add more.",
    ),
]
AllowPrivateFlag = Annotated[
    bool,
    typer.Option(
        "--http-allow-private",
        help="Let agents' HTTP calls reach private and loopback addresses (labs and tests only).",
    ),
]

ModelsFlag = Annotated[
    Path | None,
    typer.Option(
        "--models",
        help="TOML file mapping model aliases to providers, models, key variables and prices "
        "(docs/models.md); agents name aliases, never keys. Default: the local model "
        "(dagr-wasm[local-model]) as fast, smart and local.",
    ),
]

RecordModelTextFlag = Annotated[
    bool,
    typer.Option(
        "--record-model-text",
        help="Keep each model call's conversation and answer in its record (dagr logs); off by "
        "default, when records hold the alias, model, tokens, cost, latency and finish reason only.",
    ),
]

_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_ENV_PREFIX = "DAGR_SECRET_"


def http_policy(secrets_file: Path | None, *, allow_private: bool) -> HttpPolicy:
    secrets = {
        key[len(_ENV_PREFIX) :]: value
        for key, value in os.environ.items()
        if key.startswith(_ENV_PREFIX) and _NAME.fullmatch(key[len(_ENV_PREFIX) :]) and value
    }
    if secrets_file is not None:
        secrets.update(_read(secrets_file))
    return HttpPolicy(secrets=secrets, allow_private=allow_private)


def _read(path: Path) -> dict[str, str]:
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--secrets {path}: cannot read it ({exc.strerror})") from None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise UsageError(
            f"--secrets {path} is readable by others or not yours (mode {info.st_mode & 0o777:o}); "
            f"anyone who reads it has every secret in it. Run `chmod 600 {path}`."
        )
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--secrets {path} is not TOML: {exc}") from None
    table = doc.get("secrets", doc)
    if not isinstance(table, dict):
        raise UsageError(f'--secrets {path}: [secrets] must be a table of NAME = "value"')
    bad = [k for k, v in table.items() if not _NAME.fullmatch(k) or not isinstance(v, str) or not v]
    if bad:
        raise UsageError(
            f'--secrets {path}: {", ".join(map(repr, bad))} are not NAME = "value" '
            "(names: A-Z, 0-9, _, a letter first; values: non-empty strings)"
        )
    return dict(table)
