"""signal-waiter: awaits the signal `go` and, resumed, reports when it ran; the benchmark's idle
instance (benchmarks/bench_mesh.py: host memory with thousands waiting, resolve-to-wake latency).

Start context: the await's deadline in seconds (default 3600). Its result says when the resumed
invocation ran, by the instance's own wall clock (Unix ms), so a benchmark can subtract the send.
"""

import time

import dagr_agent as dagr


class SignalWaiter(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        ctx.await_all([ctx.signals.expect("go")], timeout_s=float(context or 3600))

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        ran_ms = time.time() * 1000
        signal = resumed.get("signal-go")
        return {"ran_ms": ran_ms, "timed_out": resumed.timed_out, "value": signal.value if signal else None}


Handler = dagr.handler(SignalWaiter)
