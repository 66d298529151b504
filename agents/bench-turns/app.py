"""bench-turns: N model turns in a row, one per invocation, for benchmarks/bench_models.py.

Start context (JSON): {"turns": 5, "timeout_s": 600}. Each turn asks alias ``fast`` one short
question whose text names the instance and the turn ("bench-turns <id> turn <k>"), so a scripted
provider can link the turns of one agent; the turn count travels in the resume context. The
result: the turns done, or the first error a call ended with.
"""

import json

import dagr_agent as dagr


class BenchTurns(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        spec = json.loads(context or "{}")
        return _ask(ctx, 1, int(spec.get("turns", 5)), float(spec.get("timeout_s", 600)))

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        turn, turns, timeout_s = json.loads(resumed.resume_context)
        if not resumed.results:
            return {"turns": turn - 1, "error": "the model did not answer in time", "kind": "timeout"}
        (result,) = resumed.results
        if result.chat is None:
            return {"turns": turn - 1, "error": result.error, "kind": result.error_kind}
        if turn >= turns:
            return {"turns": turn}
        return _ask(ctx, turn + 1, turns, timeout_s)


def _ask(ctx: dagr.Context, turn: int, turns: int, timeout_s: float) -> object:
    question = {"role": "user", "content": f"bench-turns {ctx.id} turn {turn}"}
    try:
        call = ctx.model.chat([question], model="fast", max_output_tokens=16)
    except dagr.HostError as refused:
        return {"turns": turn - 1, "refused": refused.kind, "error": refused.message}
    ctx.await_all([call], timeout_s=timeout_s, resume_context=json.dumps([turn, turns, timeout_s]))


Handler = dagr.handler(BenchTurns)
