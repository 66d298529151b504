"""gatherer: the fan-out pattern. Spawns one child per context, awaits them all (or the first)
with a deadline, and aggregates what came back. Nothing runs while it waits.

Start context (JSON): {"contexts": ["a", "b"], "specialist": "echo", "mode": "all", "timeout_s": 10}.
"""

import json

import dagr_agent as dagr


class Gatherer(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        spec = json.loads(context or "{}")
        children = [ctx.spawn(spec.get("specialist", "echo"), c) for c in spec.get("contexts", ["hi"])]
        ctx.state.put("children", children)
        wait = ctx.await_any if spec.get("mode") == "any" else ctx.await_all
        wait(children, timeout_s=float(spec.get("timeout_s", 10)), resume_context="gathered")

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        children: list[str] = ctx.state.get("children", [])
        ctx.log.info(f"resumed with {len(resumed)} results, {len(resumed.pending)} pending")
        return {
            "answers": {r.handle: r.value for r in resumed if r.ok},
            "errors": {r.handle: r.error for r in resumed if not r.ok},
            "pending": sorted(resumed.pending),
            "timed_out": resumed.timed_out,
            "order": [c for c in children if resumed.get(c) is not None],
        }

    def on_message(self, ctx: dagr.Context, subject: str, payload: bytes) -> object:
        # Results that came after an await timed out wait in the inbox, read once, here.
        return {"late": {r.handle: r.value for r in ctx.results()}}


Handler = dagr.handler(Gatherer)
