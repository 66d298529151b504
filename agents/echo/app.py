"""echo: answers a start event with its context and a wake event with its resume context.

The smallest useful agent; the spawner's children, and the host's first end-to-end test.
"""

import dagr_agent as dagr


class Echo(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        return {"echo": context}

    def on_wake(self, ctx: dagr.Context, resume_context: str) -> object:
        return {"woke": resume_context}


Handler = dagr.handler(Echo)
