"""hostile-spender: tries to spend more on models than its tree was given.

Attacks: a model budget, three ways at once. It forks (three copies of itself, two levels deep:
thirteen instances, each with the manifest's whole budget as its own); every instance asks for the
most calls an invocation may queue, with a large max_output_tokens; and every time its calls come
back it asks again, round after round, until the host refuses at the call.
The host must: admit no call that does not fit the budget of the instance *and of every ancestor*,
so the whole tree makes no more calls and writes no more output tokens than its root's budget.
Result: {"rounds", "answered", "refused": [kinds seen]}.
"""

import json

import dagr_agent as dagr

COPIES = 3
DEPTH = 2
ROUNDS = 30


class Spender(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        depth = int(json.loads(context or "{}").get("depth", 0))
        children = []
        if depth < DEPTH:
            for _ in range(COPIES):
                children.append(ctx.spawn("hostile-spender", json.dumps({"depth": depth + 1})))
        ctx.state.put("tally", {"rounds": 0, "answered": 0, "refused": []})
        return self._spend(ctx, children)

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        tally = ctx.state.get("tally")
        for result in resumed:
            if result.kind != "model":
                continue
            if result.ok:
                tally["answered"] += 1
            elif result.error_kind not in tally["refused"]:
                tally["refused"].append(result.error_kind)
        tally["rounds"] += 1
        ctx.state.put("tally", tally)
        if tally["rounds"] >= ROUNDS:
            return tally
        return self._spend(ctx, [])

    def _spend(self, ctx: dagr.Context, children: list) -> object:
        calls = []
        for i in range(8):  # limits.max_model_calls
            try:
                calls.append(
                    ctx.model.chat(
                        [{"role": "user", "content": f"{ctx.id} {i}"}], model="fast", max_output_tokens=10
                    )
                )
            except dagr.HostError as refused:
                tally = ctx.state.get("tally")
                if refused.kind not in tally["refused"]:
                    tally["refused"].append(refused.kind)
                ctx.state.put("tally", tally)
                break
        if not calls and not children:
            return ctx.state.get("tally")
        ctx.await_all(calls + children, timeout_s=120)


Handler = dagr.handler(Spender)
