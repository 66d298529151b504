"""spawner: fans out to children, sleeps, and collects their replies on wake.

Start context: ``"N [key=value ...]"``, N the number of children (default 3). By default child i is
an ``echo`` with the context "child i"; the child ids go to instance state; the instance suspends
for 2 s and, woken with "collect", returns the ids and the decoded replies that arrived meanwhile.

Options, for the fault-injection tests of replies that arrive as events:

- ``child=sleeper:S``: the children are sleepers that reply S seconds after they start;
- ``busy=S``: the wake waits S seconds before collecting, and suspends again for 60 s if not every
  child has replied (so a reply comes as an event while it runs);
- ``wait=all``: the wake suspends again (1 s) until every child has replied, however late (the
  swarm test under host kills: a child's task held by a killed host comes back seconds later);
- a reply that comes as an event is stored; once every child has replied the instance returns.
"""

import time

import dagr_agent as dagr

DEFAULT_CHILDREN = 3


def _parse(context: str) -> tuple[int, dict[str, str]]:
    words = context.split()
    options = dict(w.split("=", 1) for w in words if "=" in w)
    counts = [w for w in words if "=" not in w]
    try:
        n = int(counts[0]) if counts else DEFAULT_CHILDREN
    except ValueError:
        raise dagr.Fail(f"start context must be a number of children, got {context!r}") from None
    if n < 0:
        raise dagr.Fail(f"cannot spawn {n} children")
    return n, options


class Spawner(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        n, options = _parse(context)
        kind, _, seconds = options.get("child", "echo").partition(":")
        if kind == "sleeper":
            children = [ctx.spawn("sleeper", f"{seconds or 1} kid-{i}") for i in range(n)]
        else:
            children = [ctx.spawn("echo", f"child {i}") for i in range(n)]
        ctx.state.put("children", children)
        ctx.state.put("busy", float(options.get("busy", 0)))
        ctx.state.put("wait_all", options.get("wait") == "all")
        ctx.log.info(f"spawned {n} {kind} children: {', '.join(children)}")
        ctx.suspend(after=2 if not options.get("busy") else 0.5, resume_context="collect")

    def on_wake(self, ctx: dagr.Context, resume_context: str) -> object:
        if resume_context != "collect":
            raise dagr.Fail(f"unexpected resume context {resume_context!r}")
        busy = ctx.state.get("busy", 0.0)
        if busy:
            time.sleep(busy)
        children: list[str] = ctx.state.get("children", [])
        order = {child_id: i for i, child_id in enumerate(children)}
        replies = sorted(ctx.replies(), key=lambda r: order.get(r.child_id, len(order)))
        for reply in replies:
            if not reply.ok:
                ctx.log.warn(f"child {reply.child_id} failed: {reply.error}")
        ctx.log.info(f"collected {len(replies)} of {len(children)} replies")
        if ctx.state.get("wait_all", False):
            collected = ctx.state.get("collected", {}) | {r.child_id: r.value for r in replies}
            ctx.state.put("collected", collected)
            if len(collected) < len(children):
                ctx.suspend(after=1, resume_context="collect")
            return {"children": children, "replies": [collected[c] for c in children]}
        if busy and len(replies) < len(children):
            ctx.state.put("collected", {r.child_id: r.value for r in replies})
            ctx.suspend(after=60, resume_context="collect")
        return {"children": children, "replies": [r.value for r in replies]}

    def on_reply(self, ctx: dagr.Context, reply: dagr.Reply) -> object:
        collected = ctx.state.get("collected", {})
        collected[reply.child_id] = reply.value
        ctx.state.put("collected", collected)
        children: list[str] = ctx.state.get("children", [])
        if len(collected) < len(children):
            ctx.suspend(after=1 if ctx.state.get("wait_all", False) else 60, resume_context="collect")
        return {"children": children, "replies": [collected[c] for c in children], "as_events": True}


Handler = dagr.handler(Spawner)
