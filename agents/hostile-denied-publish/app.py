"""hostile-denied-publish: publishes to a subject its manifest does not grant, and does not catch
the refusal.

Attacks: the capability check (its manifest grants no publish at all). Before publishing it
writes state, so a host that commits partial effects is caught too.
The host must: refuse the publish (``error.denied``); the SDK raises ``dagr.Denied``, which
escapes ``handle`` and traps. The invocation fails: the state write and the publish are not
committed, and the event is retried or dead-lettered.
"""

import dagr_agent as dagr


def start(ctx: dagr.Context, context: str) -> object:
    ctx.state.put("before-denied-publish", True)
    ctx.publish("forbidden.subject", {"leak": context})
    return {"escaped": True}  # unreachable unless the host let the publish through


Handler = dagr.handler(start=start)
