"""An edge gateway that embeds a dagr host in its own process.

PLANNED API: ``dagr_wasm.mesh`` does not export ``Host`` and ``connect`` yet; this script shows the
shape they are being built to (see host/README.md) and does not run today.

The gateway owns the device side (here a stub that yields sensor readings); dagr owns the agents.
Each reading becomes a task for the ``sensor-triage`` specialist. The Host in this process runs such
tasks, and so does any other host on the mesh: the gateway works alone when it is offline from the
rest, and shares the load when it is not.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

from dagr_wasm.mesh import Host, Mesh, connect  # planned


async def readings() -> AsyncIterator[dict[str, float]]:
    """Stand-in for the gateway's real input (Modbus, MQTT, a serial port, ...)."""
    while True:
        await asyncio.sleep(1.0)
        yield {"temperature_c": 21.5}


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def feed(mesh: Mesh) -> None:
        async for reading in readings():
            await mesh.spawn("sensor-triage", context=reading)

    # An edge box is small: at most two agent instances at once, on worker threads. Leaving `Host`
    # finishes or returns its in-flight invocations before the connection closes.
    async with (
        connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222")) as mesh,
        Host(mesh, concurrency=2),
        asyncio.TaskGroup() as tasks,
    ):
        feeder = tasks.create_task(feed(mesh))
        await stop.wait()
        feeder.cancel()


if __name__ == "__main__":
    asyncio.run(main())
