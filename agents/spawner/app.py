"""spawner: fans out to `echo` children, sleeps, and collects their replies on wake.

Start context: the number of children (default 3). Child i gets the context "child i". The child
ids go to instance state; the instance suspends for 2 s and, woken with "collect", returns the ids
and the decoded replies that arrived meanwhile.
"""

import dagr_agent as dagr

DEFAULT_CHILDREN = 3


class Spawner(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        text = context.strip()
        try:
            n = int(text) if text else DEFAULT_CHILDREN
        except ValueError:
            raise dagr.Fail(f"start context must be a number of children, got {context!r}") from None
        if n < 0:
            raise dagr.Fail(f"cannot spawn {n} children")
        children = [ctx.spawn("echo", f"child {i}") for i in range(n)]
        ctx.state.put("children", children)
        ctx.log.info(f"spawned {n} echo children: {', '.join(children)}")
        ctx.suspend(after=2, resume_context="collect")

    def on_wake(self, ctx: dagr.Context, resume_context: str) -> object:
        if resume_context != "collect":
            raise dagr.Fail(f"unexpected resume context {resume_context!r}")
        children: list[str] = ctx.state.get("children", [])
        order = {child_id: i for i, child_id in enumerate(children)}
        replies = sorted(ctx.replies(), key=lambda r: order.get(r.child_id, len(order)))
        for reply in replies:
            if not reply.ok:
                ctx.log.warn(f"child {reply.child_id} failed: {reply.error}")
        ctx.log.info(f"collected {len(replies)} of {len(children)} replies")
        return {"children": children, "replies": [r.value for r in replies]}


Handler = dagr.handler(Spawner)
