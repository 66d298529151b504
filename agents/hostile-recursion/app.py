"""hostile-recursion: recurses without bound after lifting Python's recursion limit.

Attacks: the wasm call stack. With ``sys.setrecursionlimit(10**9)`` the interpreter never raises
RecursionError, so the recursion runs until the native (wasm) stack overflows.
The host must: turn the stack overflow into a trap (wasmtime's ``max_wasm_stack``), commit nothing,
and stay up; the host process's own stack must be untouched.
"""

import sys

import dagr_agent as dagr


def dive(depth: int) -> int:
    # Through a C-level call (sorted's key) as well as Python frames, so each level consumes
    # native stack: pure Python-to-Python calls alone barely grow the wasm stack on 3.12+.
    return sorted([depth], key=lambda d: dive(d + 1))[0] + 1


def start(ctx: dagr.Context, context: str) -> object:
    sys.setrecursionlimit(10**9)
    return {"escaped": dive(0)}  # unreachable unless the host failed to stop it


Handler = dagr.handler(start=start)
