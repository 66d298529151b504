"""The ``dagr`` command: thin; it parses, calls the library, prints (human or ``--json``).

Exit codes: 0 success, 1 runtime failure (including an agent that failed), 2 usage or bad input.
"""

from __future__ import annotations

import sys

import typer

from ..errors import DagrError
from ._local import build_command, run_command
from ._mesh import deploy_command, host_command, spawn_command, up_command
from ._render import err_console

__all__ = ["app", "entrypoint", "main"]

app = typer.Typer(
    name="dagr",
    help="dagr-wasm: run autonomous agents as WebAssembly components on NATS JetStream.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
app.command("build")(build_command)
app.command("run")(run_command)
app.command("up")(up_command)
app.command("host")(host_command)
app.command("deploy")(deploy_command)
app.command("spawn")(spawn_command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting, so tests can call it in process."""
    try:
        # Standalone mode: typer reports usage errors itself (exit code 2) and raises SystemExit.
        app(args=argv, prog_name="dagr")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except DagrError as exc:
        err_console.print(f"[bold red]error:[/bold red] {_escape(exc.message)}")
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def entrypoint() -> None:
    """The console script: exit with ``main``'s code."""
    sys.exit(main())
