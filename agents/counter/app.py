"""counter: counts its invocations (start events and messages) in instance state."""

import dagr_agent as dagr


class Counter(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        return self._count(ctx)

    def on_message(self, ctx: dagr.Context, subject: str, payload: bytes) -> object:
        return self._count(ctx)

    @staticmethod
    def _count(ctx: dagr.Context) -> dict[str, int]:
        n: int = ctx.state.get("count", 0) + 1
        ctx.state.put("count", n)
        ctx.log.info(f"count is now {n}")
        return {"count": n}


Handler = dagr.handler(Counter)
