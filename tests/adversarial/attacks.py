"""WAT bodies shared by the attack tests. The start context (``$p1``, ``$p2``) is the attack's input:
a key, a subject, a reply-to. After a host call, a refusal is returned as the agent's ``err`` (so
the outcome names it); success returns ``ok``.
"""

from __future__ import annotations

import watkit

RETURN_IF_REFUSED = """
    (if (i32.load8_u (global.get $retarea))
      (then (return (call $err (i32.load offset=8 (global.get $retarea))
                               (i32.load offset=12 (global.get $retarea))))))
"""

STRINGS = watkit.data(1024, "v") + watkit.data(1040, "agents.main.ok") + watkit.data(1072, "benign")

PUT_CONTEXT_KEY = (
    """
    (call $state_put (i32.const 0) (local.get $p1) (local.get $p2) (i32.const 1024) (i32.const 1)
                     (global.get $retarea))"""
    + RETURN_IF_REFUSED
    + "(call $ok (i32.const 0) (i32.const 0))"
)

PUBLISH_TO_CONTEXT = (
    """
    (call $publish (local.get $p1) (local.get $p2) (i32.const 1024) (i32.const 1) (global.get $retarea))"""
    + RETURN_IF_REFUSED
    + "(call $ok (i32.const 0) (i32.const 0))"
)

SPAWN_REPLY_TO_CONTEXT = (
    """
    (call $spawn (i32.const 1072) (i32.const 6) (i32.const 1024) (i32.const 1)
                 (i32.const 1) (local.get $p1) (local.get $p2) (global.get $retarea))"""
    + RETURN_IF_REFUSED
    + "(call $ok (i32.const 0) (i32.const 0))"
)

# Puts N distinct keys k<i> (N = the context's length), stopping at the first refusal.
PUT_MANY = (
    """
    (local.set $i (i32.const 0))
    (block $done
      (loop $again
        (br_if $done (i32.ge_u (local.get $i) (local.get $p2)))
        ;; key "k" + 4 hex-ish bytes of $i at 2048
        (i32.store8 (i32.const 2048) (i32.const 107))
        (i32.store8 (i32.const 2049) (i32.add (i32.const 97) (i32.and (local.get $i) (i32.const 15))))
        (i32.store8 (i32.const 2050) (i32.add (i32.const 97) (i32.and (i32.shr_u (local.get $i) (i32.const 4)) (i32.const 15))))
        (i32.store8 (i32.const 2051) (i32.add (i32.const 97) (i32.and (i32.shr_u (local.get $i) (i32.const 8)) (i32.const 15))))
        (call $state_put (i32.const 0) (i32.const 2048) (i32.const 4) (i32.const 1024) (i32.const 1)
                         (global.get $retarea))"""
    + RETURN_IF_REFUSED
    + """
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $again)))
    (call $ok (i32.const 0) (i32.const 0))
"""
)


def agent(body: str, **kwargs: object) -> bytes:
    extra = str(kwargs.pop("extra", "")) + STRINGS
    return watkit.component(body, extra=extra, locals_="(local $i i32)", **kwargs)  # type: ignore[arg-type]
