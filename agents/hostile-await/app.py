"""hostile-await: awaits handles it was never given, to read results that are not its own or to
wait on nothing at all.

Attacks: the await's handle check. Start context (JSON): {"handles": [...], "mode": "all",
"timeout_s": 5, "spawn": false}. With "spawn" it first spawns one echo child and adds the
child's handle to the list (a handle it does hold). A handle in the list it never held (another
instance's child, a made-up HTTP call, one whose result it has read) must be refused.
The host must: answer ``error.invalid`` (the SDK raises ``dagr.Invalid``), which this agent
returns as its result so the test can read the reason; it must never suspend on such a handle.
On a resume it awaits the handles it just read once more (refused too), then returns both.
"""

import json

import dagr_agent as dagr


class HostileAwait(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        spec = json.loads(context or "{}")
        handles = [str(h) for h in spec.get("handles", [])]
        if spec.get("spawn"):
            handles.append(ctx.spawn("echo", "held"))
        wait = ctx.await_any if spec.get("mode") == "any" else ctx.await_all
        try:
            wait(handles, timeout_s=float(spec.get("timeout_s", 5)), resume_context="resumed")
        except dagr.HostError as refused:
            return {"refused": refused.kind, "error": refused.message}

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        seen = {r.handle: r.value for r in resumed}
        if resumed.resume_context == "resumed" and seen:
            # Awaiting again what it has read: there is nothing left to come for those handles.
            try:
                ctx.await_all(list(seen), timeout_s=5, resume_context="again")
            except dagr.HostError as refused:
                return {"resumed": seen, "again": {"refused": refused.kind, "error": refused.message}}
        return {"resumed": seen, "pending": list(resumed.pending), "timed_out": resumed.timed_out}


Handler = dagr.handler(HostileAwait)
