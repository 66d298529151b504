"""The registry: specialists, their versions, and their modules.

Keys of the ``dagr-registry`` bucket::

    spec.<name>           the current version of a specialist (JSON ``SpecialistVersion``)
    ver.<name>.<n>        version n, immutable once written
    layout.version        see _layout.py

Module bytes live in the ``dagr-modules`` object store under their sha256, uploaded once per digest.
Every deploy makes a new version, even with the same module (the config, grants or limits may have
changed). **Which version runs:** an instance is pinned to the version that was current when it
was spawned, for its whole life: its wakes and replies run that version, and a re-deploy only
affects instances spawned after it. Nothing is written until the manifest has validated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError, ObjectNotFoundError

from ..errors import GrantEscalation, ModuleError, RuntimeFailure
from ..errors import NotFoundError as DagrNotFound
from ..manifest import Manifest
from ..policy import Grants, Limits
from ._auth import Signature
from ._layout import MODULES_BUCKET, REGISTRY_BUCKET, Layout, ensure_specialist
from ._nats_errors import nats_seam, nats_seam_iter

__all__ = ["Registry", "SpecialistVersion"]

_log = logging.getLogger(__name__)

_WASM_COMPONENT = b"\x00asm\x0d\x00\x01\x00"
#: The largest module stored (hosts refuse to compile more: sandbox MAX_MODULE_BYTES, same value).
MAX_MODULE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SpecialistVersion:
    """One version of a specialist: its manifest, and the module it runs (None until deployed)."""

    name: str
    version: int
    description: str
    topic: str
    config_text: str
    grants: Grants
    limits: Limits
    digest: str | None
    size_bytes: int
    deployed_ms: int
    #: An ed25519 signature (base64) by ``signer`` (an nkey public key) over the name and digest
    #: (``_auth.module_statement``); hosts with trusted publishers run only modules they signed.
    signature: str | None = None
    signer: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["grants"] = self.grants.model_dump(mode="json")
        doc["limits"] = self.limits.model_dump(mode="json")
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SpecialistVersion:
        return cls(
            name=doc["name"],
            version=int(doc["version"]),
            description=doc.get("description", ""),
            topic=doc["topic"],
            config_text=doc.get("config_text", ""),
            grants=Grants.model_validate(doc.get("grants", {})),
            limits=Limits.model_validate(doc.get("limits", {})),
            digest=doc.get("digest"),
            size_bytes=int(doc.get("size_bytes", 0)),
            deployed_ms=int(doc.get("deployed_ms", 0)),
            signature=doc.get("signature"),
            signer=doc.get("signer"),
        )


class Registry:
    """Read and write specialists. Cheap to create; holds no state beyond the JetStream handles."""

    def __init__(self, js: JetStreamContext, *, layout: Layout) -> None:
        self._js = js
        self._layout = layout
        self._kv: Any = None
        self._store: Any = None

    async def _bucket(self) -> Any:
        if self._kv is None:
            self._kv = await self._js.key_value(REGISTRY_BUCKET)
        return self._kv

    async def _objects(self) -> Any:
        if self._store is None:
            self._store = await self._js.object_store(MODULES_BUCKET)
        return self._store

    # -- writing ---------------------------------------------------------------------------------

    @nats_seam
    async def deploy(
        self,
        manifest: Manifest,
        wasm: bytes | None,
        *,
        approve_grants: bool = False,
        signed: Signature | None = None,
    ) -> SpecialistVersion:
        """Register ``manifest`` as the next version, with ``wasm`` as its module (if given).

        The caller validates the module as a component first (the mesh does not load wasm); here it
        is only checked to be component bytes. Raises ``ModuleError`` before anything is stored,
        and ``GrantEscalation`` if the new grants allow more than the current version's, unless
        ``approve_grants``: widening what a specialist may do is a decision, not a side effect.
        """
        if not approve_grants:
            current = await self.current(manifest.name)
            more = manifest.grants.escalations_over(current.grants) if current is not None else []
            if more:
                raise GrantEscalation(manifest.name, more)
        digest = None
        if wasm is not None:
            if wasm[:8] != _WASM_COMPONENT:
                raise ModuleError("it is not a wasm component", source=f"module for {manifest.name}")
            if len(wasm) > MAX_MODULE_BYTES:
                raise ModuleError(
                    f"it is {len(wasm)} bytes, more than the {MAX_MODULE_BYTES} a deployment stores",
                    source=f"module for {manifest.name}",
                )
            digest = hashlib.sha256(wasm).hexdigest()
            await self._upload(digest, wasm)
        await ensure_specialist(self._js, self._layout, manifest.name)
        kv = await self._bucket()
        for _ in range(20):  # concurrent deploys of one specialist: retry on a lost race
            current = await self._entry(f"spec.{manifest.name}")
            previous = _decode(current)
            if current is not None and previous is None:
                raise RuntimeFailure(
                    f"the registry entry of {manifest.name} is not valid (written by something other "
                    f"than dagr?); inspect and delete spec.{manifest.name} in {REGISTRY_BUCKET}"
                )
            if wasm is None and previous is not None:
                digest = previous.digest  # re-registering keeps the deployed module
            last = previous.version if previous else await self._last_version(manifest.name)
            version = SpecialistVersion(
                name=manifest.name,
                version=last + 1,
                description=manifest.description,
                topic=manifest.topic,
                config_text=manifest.config_text,
                grants=manifest.grants,
                limits=manifest.limits,
                digest=digest,
                size_bytes=len(wasm) if wasm is not None else (previous.size_bytes if previous else 0),
                deployed_ms=int(time.time() * 1000),
                signature=signed.signature if signed is not None else None,
                signer=signed.signer if signed is not None else None,
            )
            body = json.dumps(version.to_json()).encode()
            try:
                await kv.create(f"ver.{manifest.name}.{version.version}", body)
            except KeyWrongLastSequenceError:
                continue
            try:
                if current is None:
                    await kv.create(f"spec.{manifest.name}", body)
                else:
                    await kv.update(f"spec.{manifest.name}", body, last=current.revision)
            except KeyWrongLastSequenceError:
                continue
            return version
        raise RuntimeFailure(f"could not register {manifest.name}: too many concurrent deploys")

    async def _last_version(self, name: str) -> int:
        """The highest version ever registered for ``name`` (0: none): versions outlive a delete."""
        prefix = f"$KV.{REGISTRY_BUCKET}.ver.{name}."
        info = await self._js.stream_info(f"KV_{REGISTRY_BUCKET}", subjects_filter=f"{prefix}*")
        numbers = [int(s[len(prefix) :]) for s in info.state.subjects or {} if s[len(prefix) :].isdigit()]
        return max(numbers, default=0)

    @nats_seam
    async def delete(self, name: str) -> None:
        """Remove ``name``'s current entry: it can no longer be started. Versions stay."""
        kv = await self._bucket()
        await kv.delete(f"spec.{name}")

    async def _upload(self, digest: str, wasm: bytes) -> None:
        store = await self._objects()
        try:
            info = await store.get_info(digest)
            if not getattr(info, "deleted", False):
                return  # uploaded once per digest
        except ObjectNotFoundError:
            pass
        await store.put(digest, wasm)

    # -- reading ---------------------------------------------------------------------------------

    async def _entry(self, key: str) -> Any:
        kv = await self._bucket()
        try:
            return await kv.get(key)
        except KeyNotFoundError:
            return None

    @nats_seam
    async def current(self, name: str) -> SpecialistVersion | None:
        return _decode(await self._entry(f"spec.{name}"))

    @nats_seam
    async def require(self, name: str) -> SpecialistVersion:
        found = await self.current(name)
        if found is None:
            names = ", ".join(s.name for s in await self.list()) or "none yet"
            raise DagrNotFound("specialist", name, hint=f"Registered: {names}. Deploy it with `dagr deploy`.")
        return found

    @nats_seam
    async def version(self, name: str, version: int) -> SpecialistVersion | None:
        return _decode(await self._entry(f"ver.{name}.{version}"))

    @nats_seam
    async def list(self) -> list[SpecialistVersion]:
        prefix = f"$KV.{REGISTRY_BUCKET}."
        try:
            info = await self._js.stream_info(f"KV_{REGISTRY_BUCKET}", subjects_filter=f"{prefix}spec.>")
        except NotFoundError:
            return []
        found = []
        for subject in sorted(info.state.subjects or {}):
            spec = _decode(await self._entry(subject[len(prefix) :]))
            if spec is not None:
                found.append(spec)
        return found

    @nats_seam
    async def module(self, digest: str) -> bytes:
        store = await self._objects()
        try:
            result = await store.get(digest)
        except ObjectNotFoundError:
            raise RuntimeFailure(
                f"module {digest[:12]} is registered but missing from {MODULES_BUCKET}"
            ) from None
        data: bytes = result.data
        if hashlib.sha256(data).hexdigest() != digest:
            raise RuntimeFailure(f"module {digest[:12]} in {MODULES_BUCKET} does not match its digest")
        return data

    @nats_seam_iter
    async def watch(self) -> AsyncIterator[SpecialistVersion]:
        """Every current specialist, then every new version as it is deployed, until cancelled."""
        kv = await self._bucket()
        watcher = await kv.watch("spec.>", include_history=False)
        try:
            async for entry in watcher:
                if entry is None or entry.value is None or entry.operation is not None:
                    continue  # the end-of-initial-values marker, or a delete
                spec = _decode(entry)
                if spec is not None:
                    yield spec
        finally:
            await watcher.stop()


def _decode(entry: Any) -> SpecialistVersion | None:
    """The specialist in a registry entry; None (logged) for one that does not validate.

    Entries are validated when they are written, so one that does not validate now was written by
    something else (a tampered registry, a grant this version refuses): it is never run, and it
    must not stop a host from following the rest of the registry.
    """
    if entry is None or not entry.value:
        return None
    try:
        return SpecialistVersion.from_json(json.loads(entry.value))
    except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        _log.error("registry entry %s is not valid and is ignored: %s", entry.key, str(exc)[:500])
        return None
