"""What can run on this host: the specialists it knows and their compiled components, bounded.

The host learns specialists from the registry (``learn``) and asks the catalog for a version
(``version``) and its loaded component (``agent_for``). Everything kept per version or per module
is bounded: a deployment that has seen ten thousand deploys does not make every host hold ten
thousand compiled components. What falls out is fetched or compiled again when next needed (from
the sealed disk cache, usually: milliseconds, not the 6-12 s of a first compile).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from ..policy import Limits
from ._registry import Registry, SpecialistVersion

__all__ = ["Catalog", "Lru", "ModuleLoader"]

K = TypeVar("K")
V = TypeVar("V")

#: Loaded components kept per host (each holds its compiled code: ~20-40 MB for a Python agent).
MAX_AGENTS = 32
#: Pinned specialist versions kept (small records; instances pin the version they were born with).
MAX_VERSIONS = 4096


class Lru(Generic[K, V]):
    """A dict of at most ``size`` entries; the least recently used goes first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


class ModuleLoader(Protocol):
    """What turns module bytes into something runnable (``Executor`` in ``_host.py``)."""

    def load_cached(
        self, digest: str, *, source: str | None = ..., limits: Limits | None = ...
    ) -> Any | None: ...

    def load(
        self,
        wasm: bytes,
        *,
        source: str = ...,
        expected_digest: str | None = ...,
        limits: Limits | None = ...,
    ) -> Any: ...


class Catalog:
    """The specialists a host knows, their pinned versions, and their loaded components."""

    def __init__(self, registry: Registry, loader: ModuleLoader, *, max_agents: int = MAX_AGENTS) -> None:
        self._registry = registry
        self._loader = loader
        self._current: dict[str, SpecialistVersion] = {}
        self._versions: Lru[tuple[str, int], SpecialistVersion] = Lru(MAX_VERSIONS)
        self._agents: Lru[str, Any] = Lru(max_agents)
        #: One load per module at a time; removed when the load is done.
        self._loading: dict[str, asyncio.Future[Any]] = {}
        #: Derived when a specialist is learnt, not on every invocation (the hot path).
        self.spawnable: frozenset[str] = frozenset()
        self.current_versions: dict[str, int] = {}

    def learn(self, spec: SpecialistVersion) -> bool:
        """Take a registry entry in; True if the specialist is new to this host."""
        new = spec.name not in self._current
        self._current[spec.name] = spec
        self._versions.put((spec.name, spec.version), spec)
        self.spawnable = frozenset(n for n, s in self._current.items() if s.digest is not None)
        self.current_versions = {n: s.version for n, s in self._current.items()}
        return new

    def loaded(self, digest: str) -> bool:
        return digest in self._agents

    @property
    def loaded_count(self) -> int:
        """Components held in memory now (at most ``max_agents``)."""
        return len(self._agents)

    async def version(self, name: str, version: int | None) -> SpecialistVersion | None:
        """A specialist's pinned ``version`` (its current one for None), from memory or the registry."""
        if version is None:
            return self._current.get(name) or await self._registry.current(name)
        found = self._versions.get((name, version))
        if found is None:
            found = await self._registry.version(name, version)
            if found is not None:
                self._versions.put((name, version), found)
        return found

    async def agent_for(self, spec: SpecialistVersion) -> Any:
        """The loaded component of ``spec``: from memory, the disk cache, or the registry's module."""
        digest = spec.digest
        assert digest is not None
        agent = self._agents.get(digest)
        if agent is not None:
            return agent
        pending = self._loading.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[digest] = future
        try:
            agent = await self._load(spec, digest)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else has to
            raise
        finally:
            self._loading.pop(digest, None)
        self._agents.put(digest, agent)
        future.set_result(agent)
        return agent

    async def _load(self, spec: SpecialistVersion, digest: str) -> Any:
        # The manifest's limits bound the load's trial instantiation (the sandbox caps them).
        def cached() -> Any | None:
            return self._loader.load_cached(digest, source=spec.name, limits=spec.limits)

        agent = await _in_thread(cached)
        if agent is None:
            wasm = await self._registry.module(digest)
            agent = await _in_thread(
                lambda: self._loader.load(wasm, source=spec.name, expected_digest=digest, limits=spec.limits)
            )
        return agent


async def _in_thread(fn: Callable[[], V]) -> V:
    return await asyncio.get_running_loop().run_in_executor(None, fn)
