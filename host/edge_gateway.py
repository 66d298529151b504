"""An edge gateway that embeds a dagr host in its own process.

The gateway owns the device side (here a stand-in that yields sensor readings); dagr owns the
agents. Each reading becomes a task for a specialist (``echo`` by default, so this runs against any
deployment that has `dagr deploy agents/echo` done; point SPECIALIST at your own). The host in this
process runs such tasks, and so does any other host on the mesh: the gateway works alone when it is
cut off from the rest, and shares the load when it is not.

    NATS_URL=nats://127.0.0.1:4222 python host/edge_gateway.py

It connects twice, with the least each side needs: as a ``host`` to run tasks and as a
``submitter`` to start them. The keys are `dagr up`'s (``<data dir>/credentials/host.nk`` and
``submitter.nk``) unless HOST_CREDS / SUBMITTER_CREDS name others.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator

import cbor2

from dagr_wasm.mesh import ConnectOptions, Host, HostConfig, Mesh, Role
from dagr_wasm.paths import compiled_cache_dir, credentials_dir
from dagr_wasm.sandbox import Sandbox

SPECIALIST = os.environ.get("SPECIALIST", "echo")


async def readings() -> AsyncIterator[dict[str, float]]:
    """Stand-in for the gateway's real input (Modbus, MQTT, a serial port, ...)."""
    n = 0
    while True:
        await asyncio.sleep(1.0)
        n += 1
        yield {"sample": n, "temperature_c": 21.5 + (n % 5) / 10}


async def feed(mesh: Mesh) -> None:
    async for reading in readings():
        instance = await mesh.spawn(SPECIALIST, json.dumps(reading))
        result = await mesh.result(instance, wait=True, timeout_s=30)
        answer = cbor2.loads(result.ok) if result is not None and result.ok else result
        print(f"{reading} -> {answer}", flush=True)


def _options(role: Role) -> ConnectOptions:
    seed = os.environ.get(f"{role.value.upper()}_CREDS") or str(credentials_dir() / f"{role.value}.nk")
    return ConnectOptions(
        servers=(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),),
        nkey_seed_file=seed if os.path.isfile(seed) else None,
        role=role,
    )


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    # An edge box is small: at most two agent instances at once, on worker threads. The sandbox
    # compiles each module once and keeps it in this machine's cache.
    with Sandbox(cache_dir=compiled_cache_dir()) as sandbox:
        async with (
            await Mesh.connect(_options(Role.HOST)) as hosting,
            await Mesh.connect(_options(Role.SUBMITTER)) as submitting,
            asyncio.TaskGroup() as tasks,
        ):
            host = Host(hosting.nc, hosting.js, sandbox, HostConfig(concurrency=2, host_id="edge-gateway"))
            serving = tasks.create_task(host.run())
            await host.ready.wait()
            feeder = tasks.create_task(feed(submitting))
            await stop.wait()
            feeder.cancel()
            # Finishes or hands back its in-flight invocations before the connection closes.
            await host.stop()
            await serving


if __name__ == "__main__":
    asyncio.run(main())
