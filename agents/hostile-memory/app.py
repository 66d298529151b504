"""hostile-memory: allocates 1 MiB buffers forever and keeps them all alive.

Attacks: memory. Nothing is freed, so the instance's linear memory grows until something stops it.
The host must: cap linear memory (``[limits] memory_bytes``), so growth fails inside the guest
rather than in the host process. Python then raises MemoryError, which escapes ``handle`` and
traps (the traceback on stderr names it); the invocation fails with nothing committed and the
host's own memory use stays bounded.
"""

import dagr_agent as dagr

MIB = 1024 * 1024


def start(ctx: dagr.Context, context: str) -> object:
    hoard: list[bytearray] = []
    while True:
        # bytearray(n) zero-fills, so every page is really touched and committed.
        hoard.append(bytearray(MIB))
    return {"escaped": len(hoard)}  # unreachable unless the host failed to stop it


Handler = dagr.handler(start=start)
