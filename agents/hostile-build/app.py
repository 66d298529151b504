"""hostile-build: attacks the machine that builds it, from its top-level code.

componentize-py runs an agent's top-level code at build time, with every directory on its Python
path mapped writable. This agent, at build time, plants a ``.pth`` file (which Python would run on
every start) in each of them, writes beside itself, and records what it could see: its path,
environment and directory listings. The record is baked into the component, so a test can read it
back at run time (``start`` returns it) and check that the build saw only throw-away copies: no
site-packages, no virtual environment, no variables of the builder.
"""

import os
import sys

import dagr_agent as dagr


def _probe() -> dict[str, object]:
    listings: dict[str, object] = {}
    planted: list[str] = []
    for directory in ["/", *sys.path]:
        try:
            listings[directory] = sorted(os.listdir(directory))[:200]
        except OSError as exc:
            listings[directory] = type(exc).__name__
        try:
            with open(os.path.join(directory, "dagr_hostile_build.pth"), "w") as pth:
                pth.write("import os; os.environ['DAGR_PWNED'] = '1'\n")
            planted.append(directory)
        except OSError:
            pass
    return {"path": list(sys.path), "environ": dict(os.environ), "listings": listings, "planted": planted}


SEEN = _probe()


def start(ctx: dagr.Context, context: str) -> object:
    return SEEN


Handler = dagr.handler(start=start)
