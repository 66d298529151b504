"""Who may do what on a dagr deployment: three roles, their NATS permissions, their nkeys.

A deployment's embedded server runs with authorization on: every client proves a role by signing
the server's challenge with that role's nkey (ed25519; the server holds only public keys). The
seeds live in the data dir's ``credentials/`` (one file per role, mode 0600, created exclusively),
where the CLI and hosts on the same machine find them; remote hosts and clients are given a file
(``--creds``).

The roles, each with the least its job needs:

- ``host``: consume tasks, commit state, publish outboxes (wherever an agent's grants allow), write
  journals, schedules, inboxes and dead letters; read the registry and modules. It cannot write the
  registry or the modules, change or delete streams, or cancel instances.
- ``admin`` (the operator's CLI): everything, including deploy, register, cancel and lay out.
- ``submitter`` (an application, an outside agent driving the CLI): start instances by a start
  request on a specialist's topic, read their journals and results, list specialists, watch what
  agents report on ``agents.main.>``. It cannot read state, write journals, publish task envelopes
  that hosts trust (``dagr.task.>``), cancel, or touch the registry.

Task envelopes with authority (an instance id, a parent, ceilings, limits, an attempt) travel only on
``dagr.task.<specialist>``, which only hosts and admins may publish to; anything on a topic is a
new start with the specialist's own grants as its only ceiling (``_tasks.py``).
"""

from __future__ import annotations

import enum
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = [
    "AccountQuota",
    "Credentials",
    "Role",
    "Signature",
    "Tenant",
    "module_statement",
    "role_permissions",
    "sign_module",
    "verify_module",
]


class Role(enum.StrEnum):
    HOST = "host"
    ADMIN = "admin"
    SUBMITTER = "submitter"


@dataclass(frozen=True, slots=True)
class Permissions:
    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = (">",)
    subscribe_deny: tuple[str, ...] = ()


#: What only an admin may do, whoever else may publish broadly (hosts publish agents' outboxes).
_ADMIN_ONLY = (
    "$KV.dagr-registry.>",  # registry entries and versions
    "$O.dagr-modules.>",  # module objects
    "$JS.API.STREAM.CREATE.>",
    "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.CONSUMER.DURABLE.CREATE.>",
    "dagr.cancel.>",
    "$SYS.>",
)

_PERMISSIONS = {
    Role.ADMIN: Permissions(publish_allow=(">",)),
    Role.HOST: Permissions(publish_allow=(">",), publish_deny=_ADMIN_ONLY),
    Role.SUBMITTER: Permissions(
        publish_allow=(
            "agents.specialist.*",  # start requests (the host decides everything else)
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.DAGR_INSTANCES",
            "$JS.API.DIRECT.GET.DAGR_INSTANCES",  # journals and results
            "$JS.API.DIRECT.GET.DAGR_INSTANCES.>",
            "$JS.API.DIRECT.GET.KV_dagr-state.$KV.dagr-state.b.>",  # model accounts (`dagr status`)
            "$JS.API.STREAM.INFO.KV_dagr-registry",  # `dagr list specialists`, spawn's checks
            "$JS.API.DIRECT.GET.KV_dagr-registry",
            "$JS.API.DIRECT.GET.KV_dagr-registry.>",
            "$JS.API.CONSUMER.CREATE.KV_dagr-registry.>",  # listing keys (an ordered consumer)
            "$JS.API.CONSUMER.CREATE.DAGR_INSTANCES.>",  # following a journal (`dagr logs -f`)
            "$JS.FC.>",  # flow control replies of those consumers
        ),
        subscribe_allow=("_INBOX.>", "dagr.inst.*", "agents.main.>"),
    ),
}


def role_permissions(role: Role) -> Permissions:
    return _PERMISSIONS[role]


@dataclass(frozen=True, slots=True)
class Credentials:
    """The nkeys of one deployment's roles, in ``directory`` (``<role>.nk``, a seed each)."""

    directory: Path

    @classmethod
    def ensure(cls, directory: Path) -> Credentials:
        """The credentials in ``directory``, creating any role's seed that is missing (0600)."""
        import nkeys

        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for role in Role:
            path = directory / f"{role.value}.nk"
            if path.exists():
                _check_private(path)
                continue
            seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(seed + b"\n")
        return cls(directory)

    def seed_file(self, role: Role) -> Path:
        return self.directory / f"{role.value}.nk"

    def public_key(self, role: Role) -> str:
        import nkeys

        seed = self.seed_file(role).read_bytes().strip()
        return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


# --- tenants: one NATS account each ----------------------------------------------------------------

#: An account's name in nats-server's config; ``$``-names are the server's own (``$SYS``, ``$G``).
_TENANT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True, slots=True)
class AccountQuota:
    """One tenant's JetStream limits: the server refuses a write or a stream past any of them.

    Every replica counts: in an R3 cluster, 1 GiB of state uses 3 GiB of ``max_file_bytes``.
    A deployment needs 8 streams plus one per specialist, and a consumer per specialist plus one
    per CLI or host reading a journal or listing keys at that moment.
    """

    max_file_bytes: int = 10 * 2**30
    max_memory_bytes: int = 2**30
    max_streams: int = 128
    max_consumers: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_memory_bytes", "max_streams", "max_consumers"):
            if getattr(self, name) < 1:
                raise UsageError(f"a tenant's {name} must be at least 1, not {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant of a shared NATS deployment: an account of its own (its own streams, buckets,
    hosts and roles; nothing of another account is visible to it) with a quota.

    ``keys`` are the roles' public nkeys (``Credentials.public_key``), never seeds: the server's
    config holds only what verifies a client, not what impersonates one.
    """

    name: str
    keys: Mapping[Role, str]
    quota: AccountQuota = field(default_factory=AccountQuota)

    def __post_init__(self) -> None:
        check_tenant_name(self.name)
        missing = [role.value for role in Role if role not in self.keys]
        if missing:
            raise UsageError(f"tenant {self.name!r} has no key for the role(s) {', '.join(missing)}")

    @classmethod
    def from_credentials(cls, name: str, credentials: Credentials, quota: AccountQuota) -> Tenant:
        return cls(name, {role: credentials.public_key(role) for role in Role}, quota)


def check_tenant_name(name: str) -> None:
    if not _TENANT_NAME.fullmatch(name):
        raise UsageError(
            f"tenant name {name!r} is not valid: use a letter, then up to 63 letters, digits, '-' or '_'"
        )


def _check_private(path: Path) -> None:
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise UsageError(
            f"the credentials file {path} is readable by others or not yours (mode "
            f"{info.st_mode & 0o777:o}); anyone who can read it acts with its role. "
            f"Run `chmod 600 {path}`, or delete it to have a new one made."
        )


# --- signed modules --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    """A publisher's ed25519 signature over a specialist's module: ``signer`` is its nkey public key."""

    signer: str
    signature: str  # base64


def module_statement(name: str, digest: str) -> bytes:
    """What a publisher signs: this module, as this specialist (a signature cannot be moved to
    another specialist's name, nor to other bytes)."""
    return f"dagr-module\n{name}\n{digest}".encode()


def sign_module(seed_file: Path, name: str, digest: str) -> Signature:
    """Sign ``digest`` as ``name``'s module with the nkey seed in ``seed_file``."""
    import base64

    import nkeys

    try:
        key = nkeys.from_seed(bytearray(seed_file.read_bytes().strip()))
    except (OSError, nkeys.NkeysError, ValueError) as exc:
        raise UsageError(
            f"--sign {seed_file}: not an nkey seed ({type(exc).__name__}); make one with "
            "`nk -gen user` or use a role's key from `dagr up`'s credentials/"
        ) from None
    signature = base64.b64encode(key.sign(module_statement(name, digest))).decode()
    return Signature(signer=key.public_key.decode(), signature=signature)


def verify_module(name: str, digest: str, signed: Signature | None, trusted: frozenset[str]) -> str | None:
    """Why a host that trusts ``trusted`` publishers must not run this module (None: it may)."""
    import base64

    if not trusted:
        return None
    if signed is None:
        return "the module is not signed, and this host runs only modules of trusted publishers"
    if signed.signer not in trusted:
        return f"the module is signed by {signed.signer[:12]}..., not a publisher this host trusts"
    try:
        _verify_key(signed.signer).verify(
            module_statement(name, digest), base64.b64decode(signed.signature, validate=True)
        )
    except Exception:  # a bad key, bad base64 or a signature that does not verify: all the same
        return "the module's signature does not verify (tampered, or signed for other bytes or another name)"
    return None


def _verify_key(public: str) -> Any:
    """The ed25519 key of an nkey public key (base32 of prefix, 32 key bytes, crc16)."""
    import base64

    import nacl.signing
    import nkeys

    raw = base64.b32decode(public + "=" * (-len(public) % 8))
    if len(raw) != 35 or nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:
        raise ValueError("not an nkey public key")
    return nacl.signing.VerifyKey(raw[1:33])
