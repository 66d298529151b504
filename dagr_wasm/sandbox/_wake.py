"""When a suspend may wake: one rule for the ``lifecycle.suspend`` host call and ``dagr suspend``."""

from __future__ import annotations

__all__ = ["WakeRefused", "resolve_wake"]


class WakeRefused(Exception):
    """A wake time that is not acceptable; ``kind`` is the WIT error case to report."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def resolve_wake(
    *,
    at_unix_ms: int | None,
    after_ms: int | None,
    now_unix_ms: int,
    max_suspend_s: int,
) -> int:
    """The absolute wake time in Unix milliseconds, or ``WakeRefused``.

    A time in the past is refused as invalid (it is almost always a bug, such as a local time read
    as UTC) rather than silently firing at once; a time beyond the grant's horizon is denied.
    """
    if (at_unix_ms is None) == (after_ms is None):
        raise WakeRefused("invalid", "give exactly one of an absolute time and a delay")
    if after_ms is not None:
        wake_at = now_unix_ms + after_ms
    else:
        assert at_unix_ms is not None
        if at_unix_ms < now_unix_ms:
            late_s = (now_unix_ms - at_unix_ms) / 1000
            raise WakeRefused(
                "invalid", f"the wake time is {late_s:.3f} s in the past; give a future time or a delay"
            )
        wake_at = at_unix_ms
    horizon_ms = max_suspend_s * 1000
    if wake_at - now_unix_ms > horizon_ms:
        raise WakeRefused(
            "denied",
            f"the wake time is {(wake_at - now_unix_ms) / 1000:.0f} s ahead, beyond the granted horizon "
            f"of {max_suspend_s} s (grants.max_suspend_s)",
        )
    return wake_at
