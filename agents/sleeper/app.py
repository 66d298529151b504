"""sleeper: suspends itself and wakes later with its state intact; the mesh's time-travel test agent.

The start context is ``"<seconds> <note> [key=value ...]"``: it stores the note, suspends for that
many seconds and, on each wake, counts the wake in state and returns what it remembered. Options,
for the fault-injection tests:

- ``times=N``: suspend again after each wake until it has woken N times (default 1);
- ``then=S``: later suspends last S seconds (default: the first one's);
- ``busy=S``: on start, wait S seconds before suspending (a long invocation to freeze a host in).
"""

import time

import dagr_agent as dagr


def _options(words: list[str]) -> dict[str, float]:
    return {k: float(v) for k, _, v in (w.partition("=") for w in words if "=" in w)}


class Sleeper(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        seconds, _, rest = context.partition(" ")
        words = rest.split()
        note = " ".join(w for w in words if "=" not in w)
        options = _options(words)
        ctx.state.put("note", note)
        ctx.state.put("wakes", 0)
        ctx.state.put("times", int(options.get("times", 1)))
        ctx.state.put("then", options.get("then", float(seconds or 1)))
        if options.get("busy"):
            time.sleep(options["busy"])
        ctx.log.info(f"sleeping {seconds} s")
        ctx.suspend(after=float(seconds or 1), resume_context=f"slept {seconds} s")

    def on_wake(self, ctx: dagr.Context, resume_context: str) -> object:
        wakes: int = ctx.state.get("wakes", 0) + 1
        ctx.state.put("wakes", wakes)
        if wakes < ctx.state.get("times", 1):
            then = ctx.state.get("then", 1.0)
            ctx.suspend(after=then, resume_context=f"slept {then:g} s")
        return {"note": ctx.state.get("note"), "resume": resume_context, "wakes": wakes}


Handler = dagr.handler(Sleeper)
