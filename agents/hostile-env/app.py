"""hostile-env: reports the environment variables, arguments and working directory it can see.

Attacks: leaks through the WASI environment (secrets in the host's env, its command line, its
working directory).
The host must: give the instance an empty WASI environment, so the result is
``{"environ": {}, "argv": [...no host arguments...], "cwd": <no host path>}``.
"""

import os
import sys

import dagr_agent as dagr


def _cwd() -> str:
    try:
        return os.getcwd()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def start(ctx: dagr.Context, context: str) -> object:
    return {"environ": dict(os.environ), "argv": list(sys.argv), "cwd": _cwd()}


Handler = dagr.handler(start=start)
