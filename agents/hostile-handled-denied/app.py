"""hostile-handled-denied: tries an ungranted publish and an ungranted spawn, catches both denials.

Attacks: the capability check, from an agent that handles refusals (its manifest grants nothing).
The host must: refuse both calls with ``error.denied`` (a value, not a crash) and then let the
invocation finish normally: the result is ``{"denied": ["denied", "denied"], "ok": true}`` and
neither the publish nor the spawn happens.
"""

import dagr_agent as dagr


def start(ctx: dagr.Context, context: str) -> object:
    denied: list[str] = []
    try:
        ctx.publish("forbidden.subject", {"leak": context})
    except dagr.Denied as exc:
        ctx.log.warn(f"publish refused as expected: {exc}")
        denied.append(exc.kind)
    try:
        ctx.spawn("forbidden-specialist", "should not run")
    except dagr.Denied as exc:
        ctx.log.warn(f"spawn refused as expected: {exc}")
        denied.append(exc.kind)
    return {"denied": denied, "ok": True}


Handler = dagr.handler(start=start)
