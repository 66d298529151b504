"""fetcher: makes one HTTP call and reports the response everywhere it can (its result, its
state, its log, a publish): what an agent sees of a response is what it could leak.

Start context (JSON): {"method": "GET", "url": "...", "headers": {...}, "body": "...",
"publish": "agents.main.fetched", "timeout_s": 10}.
"""

import json

import dagr_agent as dagr


class Fetcher(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        spec = json.loads(context)
        ctx.state.put("spec", spec)
        handle = ctx.http.fetch(
            spec.get("method", "GET"),
            spec["url"],
            headers=spec.get("headers") or {},
            body=spec.get("body", "").encode(),
        )
        ctx.await_all([handle], timeout_s=float(spec.get("timeout_s", 20)))

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        spec = ctx.state.get("spec", {})
        (result,) = resumed.results
        if result.response is None:
            report = {"ok": False, "kind": result.error_kind, "error": result.error}
        else:
            r = result.response
            report = {"ok": True, "status": r.status, "headers": [list(h) for h in r.headers], "body": r.text}
        ctx.state.put("report", report)
        ctx.log.info(json.dumps(report))
        if spec.get("publish"):
            ctx.publish(spec["publish"], report)
        return report


Handler = dagr.handler(Fetcher)
