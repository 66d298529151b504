"""``Sandbox``: load components by digest, and run one invocation in a fresh, limited Store.

``run`` is synchronous and thread-safe: the mesh calls it from worker threads (wasm runs with the
GIL released) while its event loop serves NATS. Each call gets a new Store with the invocation's
limits, an empty WASI context, and a ``Recorder`` for the host calls; the Store is closed before
``run`` returns, so nothing of the guest outlives its invocation.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from wasmtime import Store, WasmtimeError
from wasmtime.component import Component, ExportIndex, Func, Variant

from ..errors import ModuleError
from ..invocation import (
    ErrorKind,
    Event,
    GuestError,
    Invocation,
    Message,
    Outcome,
    RepliesConsumed,
    Reply,
    Resumed,
    Start,
    Status,
    Wake,
)
from ..policy import HOST_CEILING, LOAD_CEILING, Limits
from . import _bytes, _calls
from ._cache import ComponentCache, digest_of
from ._calls import HandlerCall
from ._engine import EngineSettings, EpochTicker, build_engine
from ._host import (
    HANDLERS,
    HOST_FAULT_TRAP,
    SUSPEND_TRAP,
    Recorder,
    build_linker,
    current_recorder,
    reply_record,
    resolution_record,
    wit_record,
)
from ._memory import MemoryMeter, MeteredMemories
from ._validate import check_component, contract_version

__all__ = ["AgentComponent", "Sandbox"]

_bytes.install()
_calls.install()

#: Handler calls with resolved types kept at most (one per loaded component).
_MAX_HANDLER_CALLS = 256

_WASM_MAGIC = b"\x00asm"
#: The largest module a host compiles (a Python agent is ~18 MB): more is refused before compiling.
MAX_MODULE_BYTES = 64 * 1024 * 1024
_COMPONENT_LAYER = b"\x0d\x00\x01\x00"
_CORE_VERSION = b"\x01\x00\x00\x00"


@dataclass(frozen=True, slots=True, eq=False)
class AgentComponent:
    """A compiled, validated agent, ready to run. Obtain one from ``Sandbox.load``."""

    digest: str
    source: str
    size_bytes: int
    component: Component
    handle_index: ExportIndex
    #: The contract version it was built against ("0.1.0", "0.2.0"): what its handler speaks.
    contract: str = "0.2.0"


class Sandbox:
    """The wasmtime half of dagr: one Engine, one Linker, many short-lived Stores."""

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        settings: EngineSettings | None = None,
        ceiling: Limits = HOST_CEILING,
    ) -> None:
        self.settings = settings or EngineSettings()
        #: What this host allows any invocation at most, whatever its manifest asks for.
        self.ceiling = ceiling
        self._meter = MemoryMeter(_current_memories) if self.settings.measure_memory else None
        self._engine = build_engine(self.settings, meter=self._meter)
        self._ticker = EpochTicker(self._engine, tick_ms=self.settings.epoch_tick_ms)
        self._linker = build_linker(self._engine)
        self.cache = ComponentCache(
            self._engine, fingerprint=self.settings.fingerprint(), directory=cache_dir
        )
        self._handler_calls: dict[str, HandlerCall] = {}
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the epoch ticker. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._ticker.stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- loading ----------------------------------------------------------------------------

    def load(
        self,
        wasm: bytes,
        *,
        source: str = "module",
        expected_digest: str | None = None,
        limits: Limits | None = None,
    ) -> AgentComponent:
        """Compile (or fetch from cache) and validate a component. Raises ``ModuleError``.

        ``limits`` (the manifest's) bound the trial instantiation, further capped by the host's
        ceiling and ``LOAD_CEILING``: every host loads every deployed module, so a load must not
        let a module's start function spend more than a moment of any of them.
        """
        _check_header(wasm, source)
        digest = digest_of(wasm)
        if expected_digest is not None and digest != expected_digest:
            raise ModuleError(
                f"its sha256 is {digest}, not the expected {expected_digest}",
                source=source,
                hint="The module changed or was corrupted in transit; deploy it again.",
            )
        try:
            component = self.cache.get(digest, lambda: wasm)
        except WasmtimeError as exc:
            raise ModuleError(f"it does not compile ({_first_line(str(exc))})", source=source) from exc
        return self._validated(component, digest=digest, source=source, size=len(wasm), limits=limits)

    def load_file(self, path: Path, *, limits: Limits | None = None) -> AgentComponent:
        try:
            wasm = path.read_bytes()
        except FileNotFoundError:
            raise ModuleError("the file does not exist", source=str(path), hint="Check the path.") from None
        except IsADirectoryError:
            raise ModuleError(
                "it is a directory", source=str(path), hint="Build it first: `dagr build DIR`."
            ) from None
        return self.load(wasm, source=str(path), limits=limits)

    def load_cached(
        self, digest: str, *, source: str | None = None, limits: Limits | None = None
    ) -> AgentComponent | None:
        """The agent for ``digest`` if this host compiled it before; never compiles."""
        component = self.cache.cached(digest)
        if component is None:
            return None
        return self._validated(component, digest=digest, source=source or digest[:12], size=0, limits=limits)

    def _validated(
        self, component: Component, *, digest: str, source: str, size: int, limits: Limits | None
    ) -> AgentComponent:
        problems = check_component(component, self._engine)
        contract = contract_version(component, self._engine)
        interface = HANDLERS[contract][0] if contract is not None else ""
        handler = component.get_export_index(interface) if contract is not None else None
        handle = component.get_export_index("handle", handler) if handler is not None else None
        if not problems and handle is None:
            problems.append(f"{interface} has no `handle` function")
        if problems:
            self.cache.forget(digest)
            raise ModuleError("; ".join(problems), source=source)
        assert handle is not None and contract is not None
        # A trial instantiation catches what types alone cannot (a start function that traps, an
        # initial memory over the limit), under the strict limits of a load.
        trial = (limits or Limits()).capped_by(self.ceiling).capped_by(LOAD_CEILING)
        store = Store(self._engine)
        try:
            _limit_store(store, trial, tick_ms=self.settings.epoch_tick_ms)
            self._linker.instantiate(store, component)
        except WasmtimeError as exc:
            self.cache.forget(digest)
            raise ModuleError(
                f"it could not be instantiated within the limits of a load ({_trap_reason(str(exc))})",
                source=source,
                hint="A component's start functions must be quick and call no host functions; "
                "its initial memory must fit its memory_bytes.",
            ) from exc
        finally:
            store.close()
        return AgentComponent(
            digest=digest,
            source=source,
            size_bytes=size,
            component=component,
            handle_index=handle,
            contract=contract,
        )

    # -- running ----------------------------------------------------------------------------

    def _handler_call(self, agent: AgentComponent, handle: Func, store: Store) -> HandlerCall:
        """The handler's call with its types resolved, once per component (see _calls.py)."""
        call = self._handler_calls.get(agent.digest)
        if call is None:
            if len(self._handler_calls) >= _MAX_HANDLER_CALLS:
                self._handler_calls.clear()  # components come and go; a few re-resolves are cheap
            call = self._handler_calls.setdefault(agent.digest, HandlerCall(handle, store))
        return call

    def run(self, agent: AgentComponent, invocation: Invocation) -> Outcome:
        """Run one invocation in a fresh Store and report what happened. Never raises for guest faults."""
        limits = invocation.limits.capped_by(self.ceiling)
        if limits != invocation.limits:
            invocation = replace(invocation, limits=limits)
        rec = Recorder(invocation)
        if isinstance(invocation.event, Resumed) and invocation.event.resolved:
            # The event delivers these results: read, like a call to lifecycle.results.
            rec.effects.append(RepliesConsumed(tuple(r.seq for r in invocation.event.resolved)))
        store = Store(self._engine)
        if self._meter is not None:
            rec.memory = MeteredMemories(limits.memory_bytes)
        # Measuring: the meter enforces the memory limit itself, so it can see a refusal.
        _limit_store(store, limits, tick_ms=self.settings.epoch_tick_ms, memory=rec.memory is None)
        slot = current_recorder()
        token = slot.set(rec)
        stage = "instantiate"
        value: bytes | str | None = None
        error: GuestError | None = None
        started = time.perf_counter()
        try:
            instance = self._linker.instantiate(store, agent.component)
            stage = "call"
            handle = instance.get_func(store, agent.handle_index)
            if handle is None:
                raise WasmtimeError("handle export vanished")
            value = self._handler_call(agent, handle, store)(
                handle, store, _to_wit(invocation.event, agent.contract)
            )
            handle.post_return(store)
        except WasmtimeError as exc:
            error = _classify(str(exc), rec, stage)
        except Exception as exc:  # a fault of ours (conversion, bookkeeping): contain it, name it
            error = GuestError(ErrorKind.HOST, f"host fault while running the agent: {exc!r}")
        finally:
            wall = time.perf_counter() - started
            slot.reset(token)
            fuel_used = limits.fuel - store.get_fuel()
            store.close()
            rec.flush_output()

        common = {
            "effects": tuple(rec.effects),
            "reads": tuple((scope, key, rev) for (scope, key), rev in rec.reads.items()),
            "fuel_used": fuel_used,
            "wall_time_s": wall,
            "host_calls": rec.host_calls,
            "peak_memory_bytes": rec.memory.peak_bytes if rec.memory is not None else None,
            "logs": tuple(rec.logs),
            "log_bytes_dropped": rec.log_bytes_dropped,
        }
        if rec.suspended is not None and (error is None or error.kind is ErrorKind.TRAP):
            return Outcome(status=Status.SUSPENDED, **common)  # type: ignore[arg-type]
        if error is not None:
            return Outcome(status=Status.ERROR, error=error, **common)  # type: ignore[arg-type]
        # An err message travels like a result (reply, journal record, commit marker): same cap.
        size = len(value.encode("utf-8", "replace")) if isinstance(value, str) else len(value or b"")
        if size > limits.max_result_bytes:
            what = "failure message" if isinstance(value, str) else "result"
            over = f"the {what} is {size} bytes, over max_result_bytes={limits.max_result_bytes}"
            quota = GuestError(ErrorKind.QUOTA, over)
            return Outcome(status=Status.ERROR, error=quota, **common)  # type: ignore[arg-type]
        if isinstance(value, str):
            return Outcome(status=Status.FAILED, failure=value, **common)  # type: ignore[arg-type]
        assert isinstance(value, bytes)
        return Outcome(status=Status.OK, result=value, **common)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------


def _current_memories() -> MeteredMemories | None:
    rec = current_recorder().get()
    return rec.memory if rec is not None else None


def _limit_store(store: Store, limits: Limits, *, tick_ms: int, memory: bool = True) -> None:
    store.set_limits(
        memory_size=limits.memory_bytes if memory else -1,
        table_elements=limits.max_table_elements,
        instances=limits.max_instances,
        tables=limits.max_tables,
        memories=limits.max_memories,
    )
    store.set_fuel(limits.fuel)
    store.set_epoch_deadline(_ticks(limits.timeout_ms, tick_ms))


def _ticks(timeout_ms: int, tick_ms: int) -> int:
    # +1: the current tick is already partly over, so a deadline never fires early.
    return math.ceil(timeout_ms / tick_ms) + 1


def _check_header(wasm: bytes, source: str) -> None:
    if len(wasm) > MAX_MODULE_BYTES:
        raise ModuleError(
            f"it is {len(wasm)} bytes, more than the {MAX_MODULE_BYTES} a host compiles",
            source=source,
            hint="Keep data out of the module; an agent reads what it needs through its grants.",
        )
    if len(wasm) < 8 or wasm[:4] != _WASM_MAGIC:
        raise ModuleError(
            "it is not WebAssembly (no \\0asm header)", source=source, hint="Pass a .wasm component."
        )
    if wasm[4:8] == _CORE_VERSION:
        raise ModuleError(
            "it is a core wasm module, not a component",
            source=source,
            hint="dagr runs components of the dagr:agent world: build agents with `dagr build AGENT_DIR`, "
            "or wrap a core module with `wasm-tools component new`.",
        )
    if wasm[4:8] != _COMPONENT_LAYER:
        raise ModuleError(f"unknown wasm version/layer {wasm[4:8].hex()}", source=source)


def _to_wit(event: Event, contract: str) -> Variant:
    if isinstance(event, Resumed):
        if contract == "0.1.0":  # it cannot await, so it is never resumed; a driver bug if it is
            raise TypeError("a 0.1.0 agent cannot receive a resumed event")
        info = wit_record(
            resolved=[resolution_record(r) for r in event.resolved],
            pending=list(event.pending),
            timed_out=event.timed_out,
            resume_context=event.resume_context,
        )
        return Variant("resumed", info)
    if isinstance(event, Start):
        return Variant("start", event.context)
    if isinstance(event, Wake):
        return Variant("wake", event.resume_context)
    if isinstance(event, Reply):
        return Variant("reply", reply_record(event.reply))
    if isinstance(event, Message):
        return Variant("message", wit_record(subject=event.subject, payload=event.payload))
    raise TypeError(f"not an event: {event!r}")


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "no message"


def _trap_reason(message: str) -> str:
    """The informative part of a wasmtime error: the 'Caused by' chain, without the backtrace."""
    if "Caused by:" in message:
        causes = [line.strip() for line in message.split("Caused by:", 1)[1].splitlines() if line.strip()]
        return "; ".join(c.split(": ", 1)[1] if c[:2].rstrip(":").isdigit() else c for c in causes)
    return _first_line(message)


def _classify(message: str, rec: Recorder, stage: str) -> GuestError:
    """Decide why the guest stopped, from what the Recorder saw first and the trap text second."""
    if rec.host_fault is not None or HOST_FAULT_TRAP in message:
        return GuestError(ErrorKind.HOST, f"host fault in a host call:\n{rec.host_fault or message}")
    if rec.suspended is not None or SUSPEND_TRAP in message:
        return GuestError(ErrorKind.TRAP, SUSPEND_TRAP)
    if rec.stopped is not None:
        kind, why = rec.stopped
        if kind == "deadline":
            return GuestError(ErrorKind.DEADLINE, f"{why} of {rec.limits.timeout_ms} ms")
        if kind == "quota":
            return GuestError(ErrorKind.QUOTA, why)
        return GuestError(ErrorKind.TRAP, why)
    reason = _trap_reason(message)
    if rec.memory is not None and rec.memory.refused is not None:
        return GuestError(
            ErrorKind.MEMORY_LIMIT,
            f"asked for {rec.memory.refused} bytes of linear memory, "
            f"over memory_bytes={rec.limits.memory_bytes}",
        )
    if "all fuel consumed" in message:
        return GuestError(ErrorKind.OUT_OF_FUEL, f"ran out of fuel (limit {rec.limits.fuel})")
    if "wasm trap: interrupt" in message:
        return GuestError(ErrorKind.DEADLINE, f"passed its deadline of {rec.limits.timeout_ms} ms")
    if "call stack exhausted" in message:
        return GuestError(ErrorKind.STACK_OVERFLOW, "exhausted the wasm call stack (runaway recursion?)")
    if "too much data is being copied" in message:
        return GuestError(ErrorKind.QUOTA, f"passed too much data across the host boundary: {reason}")
    if stage == "instantiate":
        if "memory" in message and "exceeds memory limits" in message:
            return GuestError(
                ErrorKind.MEMORY_LIMIT,
                f"needs more memory than memory_bytes={rec.limits.memory_bytes} to start: {reason}",
            )
        if "resource limit exceeded" in message or "exceeds table limits" in message:
            return GuestError(ErrorKind.QUOTA, f"exceeds an instance/table/memory limit: {reason}")
        return GuestError(ErrorKind.INSTANTIATION, f"could not be instantiated: {reason}")
    if rec.last_refusal is not None:
        kind, why = rec.last_refusal
        error_kind = _REFUSAL_KINDS.get(kind)
        if error_kind is not None:
            return GuestError(error_kind, f"unhandled refused host call ({kind}): {why}")
    stderr = rec.stderr_tail(lines=200)
    exception = _guest_exception(stderr)
    # Near the cap CPython may not manage a traceback, only a fatal dump naming MemoryError.
    if any("MemoryError" in line for line in stderr[-40:]):
        return GuestError(
            ErrorKind.MEMORY_LIMIT, f"ran out of memory (memory_bytes={rec.limits.memory_bytes})"
        )
    detail = f" — {exception}" if exception else ""
    missing = re.search(r"ModuleNotFoundError: No module named '([^']+)'", exception or "")
    if missing:
        detail += (
            f" (an instance has no filesystem: every module must be imported while the agent is built; "
            f"add `import {missing.group(1)}` at the top of app.py)"
        )
    return GuestError(ErrorKind.TRAP, f"{reason}{detail}")


#: How an unhandled refusal ends the invocation. ``conflict`` and ``unavailable`` are not here: they
#: may pass, so they stay traps and are retried.
_REFUSAL_KINDS = {
    "denied": ErrorKind.DENIED,
    "quota-exceeded": ErrorKind.QUOTA,
    "not-found": ErrorKind.REFUSED,
    "invalid": ErrorKind.REFUSED,
}


def _guest_exception(stderr: list[str]) -> str | None:
    """The exception line of the last Python traceback on stderr (componentize-py prints one, then
    a Rust panic message, when an exception escapes ``handle``)."""
    end = next((i for i in range(len(stderr) - 1, -1, -1) if "panicked at" in stderr[i]), len(stderr))
    for line in reversed(stderr[:end]):
        if line.strip() and not line.startswith((" ", "\t")) and not line.startswith("Traceback"):
            return line.strip()
    return None
