"""approver: a human-in-the-loop step. Asks for approval, waits (with no instance alive) for the
signal `approve` (`dagr signal ID approve --data '{"ok": true, "by": "ana"}'`), and acts on it.

Start context: what needs approving. The wait is bounded by the manifest's max_suspend_s.
"""

import dagr_agent as dagr

WAIT_S = 3600


class Approver(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        ctx.state.put("request", context)
        ctx.log.info(f"waiting for approval of {context!r}: dagr signal {ctx.id} approve --data ...")
        ctx.await_all([ctx.signals.expect("approve")], timeout_s=WAIT_S, resume_context="decided")

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        request = ctx.state.get("request")
        if resumed.timed_out:
            return {"request": request, "approved": False, "reason": "nobody answered in time"}
        answer = resumed["signal-approve"].value or {}
        approved = bool(answer.get("ok")) if isinstance(answer, dict) else bool(answer)
        by = answer.get("by") if isinstance(answer, dict) else None
        return {"request": request, "approved": approved, "by": by}


Handler = dagr.handler(Approver)
