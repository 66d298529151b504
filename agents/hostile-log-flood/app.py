"""hostile-log-flood: writes log lines, stdout and stderr in a tight loop, forever.

Attacks: the host's log pipeline and memory (every line is a host call or a WASI write).
The host must: count and drop output beyond ``max_log_bytes`` without buffering it, and end the
invocation by its deadline or fuel with nothing committed; the log keeps only the capped prefix.
"""

import sys

import dagr_agent as dagr

LINE = "flood " + "x" * 1000


def start(ctx: dagr.Context, context: str) -> object:
    n = 0
    while True:
        n += 1
        ctx.log.info(f"{n} {LINE}")
        print(f"stdout {n} {LINE}", flush=True)
        print(f"stderr {n} {LINE}", file=sys.stderr, flush=True)
    return {"escaped": n}  # unreachable unless the host failed to stop it


Handler = dagr.handler(start=start)
