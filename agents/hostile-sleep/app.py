"""hostile-sleep: blocks in WASI instead of computing, to outlive its deadline.

Attacks: the wall-clock deadline (an epoch deadline cannot interrupt a thread blocked in a host
call) and the host's workers (a blocked invocation holds one). The context picks the way:

- ``sleep``: ``time.sleep(N)`` (N from ``sleep:N``, default 30 s);
- ``select``: ``select.select([], [], [], N)``, a blocking poll with a timeout;
- ``naps``: ``time.sleep(0.2)`` again and again, each nap within the deadline, together past it.

The host must stop it at its deadline (``[limits] timeout_ms``) whatever it waits on, commit
nothing, and keep serving other agents meanwhile.
"""

import select
import time

import dagr_agent as dagr


def start(ctx: dagr.Context, context: str) -> object:
    how, _, amount = context.partition(":")
    seconds = float(amount or 30)
    began = time.monotonic()
    if how == "select":
        select.select([], [], [], seconds)
    elif how == "naps":
        while time.monotonic() - began < seconds:
            time.sleep(0.2)
    else:
        time.sleep(seconds)
    return {"slept_s": time.monotonic() - began}


Handler = dagr.handler(start=start)
