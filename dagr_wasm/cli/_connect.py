"""Where the CLI finds NATS: flags, then the environment, then the nats CLI's context, then `dagr up`'s.

``--nats URL`` / ``NATS_URL`` (comma-separated URLs of one cluster), ``--creds`` / ``NATS_CREDS``,
``--tls-ca`` / ``--tls-cert`` / ``--tls-key``. With none of them, the context selected with
``nats context select`` (``~/.config/nats/context.txt`` names a JSON file in
``~/.config/nats/context/``) supplies the URL, credentials and TLS files, so a host or the CLI joins
a secured cluster or a hosted NATS service the way the nats CLI already does. Without a context,
the embedded default ``nats://127.0.0.1:4222`` that ``dagr up`` serves.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast, get_type_hints
from urllib.parse import urlsplit

import typer

from ..errors import UsageError
from ..mesh import ConnectOptions, Role
from ..paths import credentials_dir

__all__ = ["EMBEDDED_URL", "Connection", "nats_context", "with_connection"]

EMBEDDED_URL = "nats://127.0.0.1:4222"

NatsUrl = Annotated[
    str | None,
    typer.Option(
        "--nats",
        envvar="NATS_URL",
        help="NATS URL(s), comma-separated. Default: nats context, else dagr up's.",
    ),
]
NatsCreds = Annotated[
    Path | None,
    typer.Option(
        "--creds",
        envvar="NATS_CREDS",
        help="Credentials: a role's nkey seed from `dagr up` (<role>.nk) or a NATS .creds file. "
        "Default on this machine: dagr up's own (admin for commands, host for hosts).",
    ),
]
TlsCa = Annotated[
    Path | None, typer.Option("--tls-ca", envvar="NATS_CA", help="CA certificate to verify the server.")
]
TlsCert = Annotated[
    Path | None, typer.Option("--tls-cert", envvar="NATS_CERT", help="Client certificate (mutual TLS).")
]
TlsKey = Annotated[Path | None, typer.Option("--tls-key", envvar="NATS_KEY", help="Client key (mutual TLS).")]


def nats_context() -> dict[str, str] | None:
    """The nats CLI's selected context, if there is one."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "nats"
    selected = base / "context.txt"
    try:
        name = selected.read_text().strip()
    except OSError:
        return None
    if not name:
        return None
    try:
        doc = json.loads((base / "context" / f"{name}.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise UsageError(
            f"the selected nats context {name!r} cannot be read from {base / 'context'}; "
            "fix it with `nats context edit`, or pass --nats"
        ) from None
    return {k: str(v) for k, v in doc.items() if isinstance(v, str) and v}


@dataclass(frozen=True, slots=True)
class Connection:
    """The connection flags of one command invocation."""

    url: str | None = None
    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def options(self, *, for_host: bool = False) -> ConnectOptions:
        url, creds, ca, cert, key = self.url, self.creds, self.tls_ca, self.tls_cert, self.tls_key
        context = nats_context() if url is None else None
        if context is not None:
            url = context.get("url")
            creds = creds or _path(context.get("creds"))
            ca = ca or _path(context.get("ca"))
            cert = cert or _path(context.get("cert"))
            key = key or _path(context.get("key"))
        for flag, path in (("--creds", creds), ("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)):
            if path is not None and not path.is_file():
                raise UsageError(f"{flag} {path}: no such file")
        if (cert is None) != (key is None):
            raise UsageError("--tls-cert and --tls-key go together: give both for mutual TLS, or neither")
        servers = tuple(u.strip() for u in (url or EMBEDDED_URL).split(",") if u.strip())
        role = Role.HOST if for_host else Role.ADMIN
        if creds is None and all(_is_local(server) for server in servers):
            # `dagr up` on this machine: its credentials are in the data dir.
            found = credentials_dir() / f"{role.value}.nk"
            creds = found if found.is_file() else None
        seed = creds is not None and _is_nkey_seed(creds)
        if creds is not None and creds.stem in Role.__members__.values():
            role = Role(creds.stem)  # `dagr up`'s files are named for their role
        return ConnectOptions(
            servers=servers,
            name=f"dagr-{'host' if for_host else 'cli'}@{socket.gethostname()}",
            creds_file=str(creds) if creds and not seed else None,
            nkey_seed_file=str(creds) if creds and seed else None,
            role=role,
            tls_ca=str(ca) if ca else None,
            tls_cert=str(cert) if cert else None,
            tls_key=str(key) if key else None,
            # A command should fail fast and say so; a host should ride out a server restart.
            max_reconnect_attempts=-1 if for_host else 2,
            connect_timeout_s=3.0,
        )


def _is_local(url: str) -> bool:
    host = urlsplit(url if "://" in url else f"nats://{url}").hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def _is_nkey_seed(path: Path) -> bool:
    """A user nkey seed (``SU...``, one line) rather than a .creds file (JWT + seed)."""
    try:
        content = path.read_bytes().strip()
    except OSError:
        return False
    return content.startswith(b"SU") and b"\n" not in content


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


_OPTIONS: dict[str, Any] = {
    "nats_url": NatsUrl,
    "creds": NatsCreds,
    "tls_ca": TlsCa,
    "tls_cert": TlsCert,
    "tls_key": TlsKey,
}

Command = TypeVar("Command", bound=Callable[..., Any])


def with_connection(command: Command) -> Command:
    """Give a command the connection options (``--nats``, ``--creds``, TLS) as one ``connection``.

    The command declares a keyword-only ``connection: Connection``; typer sees the five options in
    its place, and the wrapper folds them back into a ``Connection``.
    """
    hints = get_type_hints(command, include_extras=True)
    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "connection"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation in _OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        connection = Connection(*(kwargs.pop(name) for name in _OPTIONS))
        return command(*args, connection=connection, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{k: v for k, v in hints.items() if k != "connection"}, **_OPTIONS}
    del wrapper.__wrapped__
    return cast(Command, wrapper)
