"""The ``dagr`` command: thin; it parses, calls the library, prints (human or ``--json``).

Exit codes: 0 success, 1 runtime failure (including an agent that failed), 2 usage or bad input.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from .. import CONTRACT, __version__
from ..errors import DagrError
from ._accounts import accounts_command
from ._admin import (
    cancel_command,
    dead_letters_command,
    delete_specialist_command,
    kv_command,
    list_specialists_command,
    logs_command,
    register_specialist_command,
    result_command,
    signal_command,
    start_command,
    status_command,
    suspend_command,
    watch_command,
)
from ._demo import demo_command
from ._dev import dev_command
from ._local import build_command, run_command
from ._mesh import deploy_command, host_command, spawn_command, up_command
from ._render import err_console, error_json, inert, print_json

__all__ = ["app", "entrypoint", "main"]

app = typer.Typer(
    name="dagr",
    help="dagr-wasm: run autonomous agents as WebAssembly components on NATS JetStream.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"dagr-wasm {__version__} (contract {CONTRACT})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """dagr-wasm: run autonomous agents as WebAssembly components on NATS JetStream."""


app.command("demo")(demo_command)
app.command("dev")(dev_command)
app.command("build")(build_command)
app.command("run")(run_command)
app.command("up")(up_command)
app.command("accounts")(accounts_command)
app.command("host")(host_command)
app.command("deploy")(deploy_command)
app.command("spawn")(spawn_command)
app.command("start")(start_command)
app.command("suspend")(suspend_command)
app.command("status")(status_command)
app.command("logs")(logs_command)
app.command("result")(result_command)
app.command("kv")(kv_command)
app.command("cancel")(cancel_command)
app.command("signal")(signal_command)
app.command("dead-letters")(dead_letters_command)
app.command("watch")(watch_command)

register_app = typer.Typer(help="Register things with the deployment.", no_args_is_help=True)
register_app.command("specialist")(register_specialist_command)
app.add_typer(register_app, name="register")

delete_app = typer.Typer(help="Delete things from the deployment.", no_args_is_help=True)
delete_app.command("specialist")(delete_specialist_command)
app.add_typer(delete_app, name="delete")

list_app = typer.Typer(help="List things in the deployment.", no_args_is_help=True)
list_app.command("specialists")(list_specialists_command)
app.add_typer(list_app, name="list")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting, so tests can call it in process.

    Every error is printed on stderr for people; with ``--json`` one JSON error document is also
    printed on stdout (``{"error": {"code", "type", "message", "hint"}}``), so a program driving the
    CLI reads the same stream whatever happens.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in args
    try:
        # Standalone mode: typer reports flags that do not parse itself (exit code 2, on stderr)
        # and raises SystemExit; commands raise DagrError, which is reported below.
        app(args=args, prog_name="dagr")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 2 and json_mode:
            print_json(
                error_json(
                    "usage",
                    "UsageError",
                    "the command line does not parse; the usage message on stderr says why",
                    "`dagr COMMAND --help` lists the flags, with an example.",
                )
            )
        return code
    except DagrError as exc:
        err_console.print(Text("error: ", style="bold red").append(inert(exc.message)))
        if json_mode:
            code_name = "usage" if exc.exit_code == 2 else "runtime"
            print_json(error_json(code_name, type(exc).__name__, exc.message, getattr(exc, "hint", "") or ""))
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


def entrypoint() -> None:
    """The console script: exit with ``main``'s code."""
    sys.exit(main())
