"""hostile-fork: a fork bomb and an endless chain, from an agent whose only grant is itself.

Context ``"fork N"``: spawn N copies of itself, each with the same context (N ** depth instances
if nothing stops it). Context ``"chain"``: spawn one copy, which does the same (a chain as deep as
nothing stops it). Every refused spawn is caught and counted, so the invocation itself finishes:
what must stop the growth is the runtime (``limits.max_tree_instances`` per spawn tree, and the
spawn depth), not the agent's good will.
"""

import dagr_agent as dagr


def start(ctx: dagr.Context, context: str) -> object:
    words = context.split()
    copies = int(words[1]) if words and words[0] == "fork" else 1
    spawned, refused = 0, []
    for _ in range(copies):
        try:
            ctx.spawn("hostile-fork", context)
            spawned += 1
        except dagr.QuotaExceeded as exc:
            refused.append(str(exc))
    if refused:
        ctx.log.warn(f"spawn refused: {refused[0]}")
    return {"spawned": spawned, "refused": len(refused)}


def reply(ctx: dagr.Context, reply: dagr.Reply) -> object:
    return None  # the children's results are not what this attack is about


Handler = dagr.handler(start=start, reply=reply)
