"""``dagr accounts`` and the accounts file host/ ships: one NATS account per tenant, with the same
role permissions as a single-tenant server (they cannot drift: the shipped file is compared with
what the runtime renders)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dagr_wasm.cli import main
from dagr_wasm.mesh import AccountQuota, Role, ServerConfig, Tenant, render_accounts

HOST_DIR = Path(__file__).resolve().parents[2] / "host"
_USER = re.compile(r'\{ nkey: "(U[A-Z0-9]{55})"  # (\w+)')


def test_the_shipped_accounts_are_what_the_runtime_renders() -> None:
    shipped = (HOST_DIR / "nats-accounts.conf").read_text()
    tenants = re.findall(r'^  "([\w-]+)": \{', shipped, flags=re.MULTILINE)
    assert tenants, "no account in host/nats-accounts.conf"
    keys = _USER.findall(shipped)
    assert [role for _, role in keys] == [r.value for r in Role] * len(tenants)
    rebuilt = [
        Tenant(name, {Role(role): key for key, role in keys[i * 3 : i * 3 + 3]}, AccountQuota())
        for i, name in enumerate(tenants)
    ]
    assert shipped.endswith(render_accounts(rebuilt)), "regenerate it with `dagr accounts` (see its header)"
    for conf in ("nats-single.conf", "nats-cluster-n1.conf", "nats-cluster-n2.conf", "nats-cluster-n3.conf"):
        assert 'include "nats-accounts.conf"' in (HOST_DIR / conf).read_text(), conf


def test_accounts_writes_seeds_and_public_keys_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "accounts.conf"
    assert main(["accounts", "acme", "globex", "--dir", str(tmp_path / "t"), "-o", str(out), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["accounts_file"] == str(out)
    text = out.read_text()
    for tenant in ("acme", "globex"):
        for role in Role:
            seed_file = tmp_path / "t" / tenant / f"{role.value}.nk"
            assert seed_file.stat().st_mode & 0o777 == 0o600
            assert seed_file.read_text().strip() not in text  # seeds never leave the machine
    assert len(_USER.findall(text)) == 6
    # A second run keeps the seeds (the keys in the file stay valid for hosts already given them).
    again = tmp_path / "again.conf"
    assert main(["accounts", "acme", "globex", "--dir", str(tmp_path / "t"), "-o", str(again)]) == 0
    assert again.read_text() == text


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["bad name"], "tenant name 'bad name' is not valid"),
        (["$SYS"], "is not valid"),
        (["acme", "acme"], "each tenant is named once"),
        (["acme", "--max-file-store", "10XB"], "is not a size"),
        (["acme", "--max-file-store", "0"], "is not a size"),
        (["acme", "-o", "/nonexistent/dir/a.conf"], "does not exist"),
    ],
)
def test_bad_input_says_why_and_makes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    seeds = tmp_path / "t"
    assert main(["accounts", *argv, "--dir", str(seeds), "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert says in error["message"]
    assert not seeds.exists()


def test_a_server_authorizes_one_way(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give one"):
        ServerConfig(store_dir=tmp_path, credentials_dir=tmp_path / "c", accounts_file=tmp_path / "a.conf")
