"""The process-wide wasmtime Engine and the epoch ticker that enforces wall-clock deadlines.

One Engine per process: compiled components belong to an engine, and the settings chosen here are
baked into every compiled artifact (a component compiled without fuel will not load into an engine
with fuel), so ``EngineSettings.fingerprint`` is part of every compiled-cache key.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import threading
from dataclasses import asdict, dataclass

from wasmtime import Config, Engine

from ._memory import MemoryMeter

__all__ = ["EngineSettings", "EpochTicker", "build_engine"]

WASMTIME_VERSION = importlib.metadata.version("wasmtime")


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    """Settings of the one Engine. Changing any of them invalidates the compiled cache."""

    #: How often the epoch advances. Deadlines fire between ``timeout_ms`` and one tick later.
    epoch_tick_ms: int = 5
    #: The wasm call stack a guest may use before it traps with a stack overflow.
    max_wasm_stack_bytes: int = 1024 * 1024
    cranelift_opt_level: str = "speed"
    #: Own the linear memories to report ``peak_memory_bytes`` (slower instantiation; see _memory.py).
    measure_memory: bool = False

    def fingerprint(self) -> str:
        """A stable digest of everything that changes what the compiler emits."""
        material = {
            "settings": {k: v for k, v in asdict(self).items() if k != "epoch_tick_ms"},
            "wasmtime": WASMTIME_VERSION,
            "machine": platform.machine(),
            "system": platform.system(),
            # Fixed features of build_engine below; bump when they change.
            "features": ["component-model", "fuel", "epoch", "cow", "no-memory64", "no-threads", 2],
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def build_engine(settings: EngineSettings, *, meter: MemoryMeter | None = None) -> Engine:
    config = Config()
    config.wasm_component_model = True
    # Fuel bounds the instructions an invocation may execute, deterministically.
    config.consume_fuel = True
    # Epochs bound its wall-clock time, including time spent blocked in host calls.
    config.epoch_interruption = True
    # Copy-on-write memory images: instantiating an 18 MB Python agent costs ~0.7 ms instead of ~7.
    config.memory_init_cow = True
    config.max_wasm_stack = settings.max_wasm_stack_bytes
    # Proposals a guest could use to reach past the limits: 64-bit memories (their reservations are
    # not the 4 GiB + guard that bounds 32-bit ones), shared memories and threads.
    config.wasm_memory64 = False
    config.wasm_threads = False
    config.shared_memory = False
    config.cranelift_opt_level = settings.cranelift_opt_level
    config.parallel_compilation = True
    if meter is not None:
        meter.install(config)
    # wasmtime's own compilation cache stays off (its default): compiled artifacts are cached by
    # dagr itself (sandbox/_cache.py), sealed under a host-local key.
    return Engine(config)


class EpochTicker:
    """A daemon thread that advances the engine's epoch every tick, until stopped."""

    def __init__(self, engine: Engine, *, tick_ms: int) -> None:
        self._engine = engine
        self._tick_s = tick_ms / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dagr-epoch-ticker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            self._engine.increment_epoch()

    def stop(self) -> None:
        """Stop ticking; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
