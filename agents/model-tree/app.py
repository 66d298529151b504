"""model-tree: a spawn tree of model callers, for the budget tests.

Start context (JSON): {"levels": 3, "children": 2, "calls": 2, "model": "fast"}. It asks the
model ``calls`` times, spawns ``children`` model-trees one level down (while ``levels`` > 1),
awaits everything, and returns what each call came to and its children's results:
{"id", "answered", "refused": [kinds], "reasons": [...], "children": [...]}.
"""

import json

import dagr_agent as dagr


class ModelTree(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        spec = json.loads(context or "{}")
        handles, refused, reasons = [], [], []
        for i in range(int(spec.get("calls", 1))):
            prompt = [{"role": "user", "content": f"call {i} of {ctx.id}"}]
            try:
                handles.append(ctx.model.chat(prompt, model=spec.get("model", "fast"), max_output_tokens=16))
            except dagr.HostError as e:  # refused at the call: the budget is spent already
                refused.append(e.kind)
                reasons.append(e.message)
        levels = int(spec.get("levels", 1))
        if levels > 1:
            for _ in range(int(spec.get("children", 2))):
                handles.append(ctx.spawn("model-tree", json.dumps({**spec, "levels": levels - 1})))
        ctx.state.put("refused", [refused, reasons])
        if not handles:
            return {
                "id": ctx.id,
                "answered": 0,
                "refused": refused,
                "reasons": reasons,
                "children": [],
                "timed_out": False,
            }
        ctx.await_all(handles, timeout_s=float(spec.get("timeout_s", 120)))

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        refused, reasons = ctx.state.get("refused", [[], []])
        models = [r for r in resumed if r.kind == "model"]
        return {
            "id": ctx.id,
            "answered": sum(1 for r in models if r.ok),
            "refused": refused + [r.error_kind for r in models if not r.ok],
            "reasons": reasons + [r.error for r in models if not r.ok],
            "children": [r.value if r.ok else {"error": r.error} for r in resumed if r.kind == "child"],
            "timed_out": resumed.timed_out,
        }


Handler = dagr.handler(ModelTree)
