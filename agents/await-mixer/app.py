"""await-mixer: one HTTP call and one child in flight together, awaited together.

The fault test of awaits (tests/integration/test_await_faults.py) kills a host while both are in
flight: each resume publishes one message on ``agents.main.await-mixer.resumed``, so the number
of resumes can be counted from the stream, and the result holds what the call and the child gave.

Start context (JSON): {"url": "...", "child": "echo", "context": "...", "timeout_s": 120,
"call_timeout_s": 20}: the child is any specialist granted (echo, sleeper), started with context.
"""

import json

import dagr_agent as dagr

RESUMED = "agents.main.await-mixer.resumed"


class AwaitMixer(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        spec = json.loads(context)
        call = ctx.http.get(spec["url"], timeout_s=float(spec.get("call_timeout_s", 20)))
        child = ctx.spawn(spec.get("child", "echo"), spec.get("context", ctx.id))
        ctx.state.put("handles", {"call": call, "child": child})
        ctx.await_all([call, child], timeout_s=float(spec.get("timeout_s", 120)))

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        handles = ctx.state.get("handles", {})
        call, child = resumed.get(handles["call"]), resumed.get(handles["child"])
        response = call.response if call is not None else None
        ctx.publish(RESUMED, {"instance": ctx.id})
        return {
            "call": handles["call"],
            "child": handles["child"],
            "status": response.status if response is not None else None,
            "body": response.text if response is not None else None,
            "call_error": call.error if call is not None else None,
            "reply": child.value if child is not None and child.ok else None,
            "child_error": child.error if child is not None else None,
            "pending": sorted(resumed.pending),
            "timed_out": resumed.timed_out,
        }


Handler = dagr.handler(AwaitMixer)
