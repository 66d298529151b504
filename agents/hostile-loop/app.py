"""hostile-loop: spins forever without a single host call.

Attacks: CPU time. Nothing in the guest yields, so only the host can stop it.
The host must: interrupt it from outside (epoch deadline at ``[limits] timeout_ms`` = 2000, or
fuel), report a timeout, commit nothing, and keep serving other invocations.
"""

import dagr_agent as dagr


def start(ctx: dagr.Context, context: str) -> object:
    n = 0
    while True:
        n += 1
    return {"escaped": n}  # unreachable unless the host failed to stop it


Handler = dagr.handler(start=start)
