"""dagr-wasm: a distributed runtime for autonomous agents, each a WebAssembly component.

``dagr_wasm.sandbox`` runs one invocation of a component (wasmtime only); ``dagr_wasm.mesh`` makes
invocations durable and distributed on NATS JetStream; ``dagr_wasm.cli`` is the ``dagr`` command.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: The WIT package every agent targets; hosts refuse components built against another one.
CONTRACT = "dagr:agent@0.3.0"
#: Every contract version this host runs, oldest first: components built against any keep working.
CONTRACTS = ("dagr:agent@0.1.0", "dagr:agent@0.2.0", "dagr:agent@0.3.0")

__all__ = ["CONTRACT", "CONTRACTS", "__version__"]
