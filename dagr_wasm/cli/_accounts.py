"""``dagr accounts``: the accounts file of a NATS deployment shared by several tenants.

Each tenant gets a NATS account of its own (a separate namespace: its streams, buckets, hosts)
with dagr's three roles and its JetStream limits as quota. The seeds stay on this machine, one
directory per tenant; the file (public keys and permissions only) goes to every server node.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..mesh import AccountQuota, Credentials, Tenant, render_accounts
from ..mesh._auth import check_tenant_name
from ..paths import data_dir
from ._render import JsonFlag, err_console, print_json

__all__ = ["accounts_command", "parse_size"]

_SIZE = re.compile(r"(\d+)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str, *, flag: str) -> int:
    """``10GiB``, ``512M``, ``4096`` (bytes): binary units, as nats-server reads them."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or int(match.group(1)) < 1:
        raise UsageError(
            f"{flag} {text!r} is not a size: give bytes or a number with K, M, G or T (e.g. 10GiB)"
        )
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _UNITS[unit]


def accounts_command(
    tenants: Annotated[
        list[str], typer.Argument(help="Tenant names (one account each).", show_default=False)
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the accounts file here (default: stdout).")
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where each tenant's seeds go: DIR/TENANT/<role>.nk (default: <data dir>/tenants)."
        ),
    ] = None,
    max_file_store: Annotated[
        str, typer.Option("--max-file-store", help="Each tenant's file storage quota.")
    ] = "10GiB",
    max_memory_store: Annotated[
        str, typer.Option("--max-memory-store", help="Each tenant's memory storage quota.")
    ] = "1GiB",
    max_streams: Annotated[
        int, typer.Option("--max-streams", min=9, help="Each tenant's streams (8 + one per specialist).")
    ] = 128,
    max_consumers: Annotated[
        int, typer.Option("--max-consumers", min=1, help="Each tenant's consumers.")
    ] = 4096,
    json_output: JsonFlag = False,
) -> None:
    """Write a NATS accounts file: one account per tenant, with dagr's roles and a JetStream quota.

    Makes each tenant's seeds (host.nk, admin.nk, submitter.nk; 0600) if missing and writes only
    public keys into the file. Include it from every node's config (host/nats-cluster-n1.conf
    shows how), then give each tenant's hosts and operators their own seeds (`--creds`).

    Example: dagr accounts acme globex --max-file-store 20GiB -o host/nats-accounts.conf
    """
    quota = AccountQuota(
        max_file_bytes=parse_size(max_file_store, flag="--max-file-store"),
        max_memory_bytes=parse_size(max_memory_store, flag="--max-memory-store"),
        max_streams=max_streams,
        max_consumers=max_consumers,
    )
    root = directory if directory is not None else data_dir().expanduser() / "tenants"
    # Every name is checked before any seed is made: a typo in the third tenant leaves nothing behind.
    for name in tenants:
        check_tenant_name(name)
    if len(set(tenants)) != len(tenants):
        raise UsageError(f"each tenant is named once: {' '.join(tenants)}")
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"--out {out}: the directory {out.parent} does not exist")
    text = render_accounts(
        [Tenant.from_credentials(name, Credentials.ensure(root / name), quota) for name in tenants]
    )
    if out is not None:
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    seeds = {name: str(root / name) for name in tenants}
    if json_output:
        print_json({"accounts_file": str(out) if out else None, "accounts": text, "seeds": seeds})
        return
    if out is None:
        print(text, end="")
    else:
        err_console.print(f"[green]accounts[/green] {', '.join(tenants)} written to {out}")
    for name, where in seeds.items():
        err_console.print(f"[green]{name}[/green] seeds (host, admin, submitter) in {where}")
