"""sleeper: suspends itself and wakes later with its state intact; the mesh's time-travel test agent.

The start context is ``"<seconds> <note>"``: it stores the note, suspends for that many seconds and,
on each wake, counts the wake in state and returns what it remembered.
"""

import dagr_agent as dagr


class Sleeper(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        seconds, _, note = context.partition(" ")
        ctx.state.put("note", note)
        ctx.state.put("wakes", 0)
        ctx.log.info(f"sleeping {seconds} s")
        ctx.suspend(after=float(seconds or 1), resume_context=f"slept {seconds} s")

    def on_wake(self, ctx: dagr.Context, resume_context: str) -> object:
        wakes: int = ctx.state.get("wakes", 0) + 1
        ctx.state.put("wakes", wakes)
        return {"note": ctx.state.get("note"), "resume": resume_context, "wakes": wakes}


Handler = dagr.handler(Sleeper)
