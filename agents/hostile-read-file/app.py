"""hostile-read-file: tries to read, list and write the host's filesystem.

Attacks: WASI filesystem access (``/etc/passwd``, ``/``, ``/tmp``).
The host must: give the instance no preopened directories, so every attempt fails inside the
guest. The result reports each attempt as ``"ExceptionClass: message"`` (or what it got, if it
got anything), so a test can assert that no host data leaked and nothing was written.
"""

import os

import dagr_agent as dagr


def _attempt(action: str) -> str:
    try:
        if action == "read":
            with open("/etc/passwd") as f:
                return "READ: " + f.read(200)
        if action == "listdir":
            return "LISTED: " + ", ".join(sorted(os.listdir("/")))
        if action == "write":
            with open("/tmp/x", "w") as f:
                f.write("dagr hostile-read-file was here")
            return "WROTE /tmp/x"
        if action == "read_relative":
            with open("../../../../etc/hostname") as f:
                return "READ: " + f.read(200)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(action)


def start(ctx: dagr.Context, context: str) -> object:
    return {action: _attempt(action) for action in ("read", "listdir", "write", "read_relative")}


Handler = dagr.handler(start=start)
