"""``dagr build`` and ``dagr run``: the agent author's inner loop, no server needed."""

from __future__ import annotations

import enum
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer

from ..build import BuildResult, build_agent
from ..errors import PayloadError, UsageError
from ..invocation import Event, Invocation, Message, Start, Wake
from ..local import LocalState
from ..manifest import MANIFEST_FILE, Manifest, load_manifest
from ..paths import compiled_cache_dir
from ..policy import Capabilities, Limits
from ..sandbox import EngineSettings, Sandbox
from ._render import JsonFlag, err_console, outcome_json, print_json, render_outcome

__all__ = ["build_command", "run_command"]


class EventKind(enum.StrEnum):
    start = "start"
    wake = "wake"
    message = "message"


def _build_with_progress(agent_dir: Path, *, out: Path | None, use_cache: bool, quiet: bool) -> BuildResult:
    if quiet:
        return build_agent(agent_dir, out=out, use_cache=use_cache)
    started = time.perf_counter()
    with err_console.status(f"building {agent_dir}") as status:

        def progress(message: str) -> None:
            status.update(
                f"building {agent_dir}: {message} [dim]({time.perf_counter() - started:.0f} s)[/dim]"
            )

        result = build_agent(agent_dir, out=out, use_cache=use_cache, progress=progress)
    return result


def build_command(
    agent_dir: Annotated[Path, typer.Argument(help="The agent directory (holds app.py and dagr.toml).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the component.")] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Rebuild even if the sources are unchanged.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Build a Python agent into a WebAssembly component (componentize-py; about 15 s, cached by content).

    Example: dagr build agents/counter
    """
    result = _build_with_progress(agent_dir, out=out, use_cache=not no_cache, quiet=json_out)
    if json_out:
        print_json(
            {
                "wasm": str(result.wasm),
                "digest": result.digest,
                "size_bytes": result.size_bytes,
                "cached": result.cached,
                "seconds": round(result.seconds, 3),
            }
        )
        return
    how = "from the build cache" if result.cached else f"in {result.seconds:.1f} s"
    err_console.print(f"[green]built[/green] {result.wasm} ({result.size_bytes / 1e6:.1f} MB, {how})")
    err_console.print(f"[dim]sha256 {result.digest}[/dim]")


def _event(kind: EventKind, context: str, subject: str | None) -> Event:
    if kind is EventKind.start:
        return Start(context)
    if kind is EventKind.wake:
        return Wake(context)
    if subject is None:
        raise UsageError("--event message needs --subject (the subject the message arrived on)")
    return Message(subject, context.encode())


def _manifest_for(agent: Path, manifest_path: Path | None) -> Manifest | None:
    if manifest_path is not None:
        return load_manifest(manifest_path)
    candidate = agent / MANIFEST_FILE if agent.is_dir() else None
    if candidate is not None and candidate.is_file():
        return load_manifest(candidate)
    return None


def run_command(
    agent: Annotated[
        Path, typer.Argument(help="A built .wasm component, or an agent directory (built on the fly).")
    ],
    event: Annotated[EventKind, typer.Option("--event", help="The event to deliver.")] = EventKind.start,
    context: Annotated[
        str, typer.Option("--context", help="Start context, resume context, or message payload.")
    ] = "",
    subject: Annotated[
        str | None, typer.Option("--subject", help="For --event message: its subject.")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="JSON state file: read before the run, updated if the run commits."),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="dagr.toml with grants and limits (default: AGENT/dagr.toml)."),
    ] = None,
    instance_id: Annotated[str, typer.Option("--instance-id", help="The id the agent sees.")] = "local",
    json_out: JsonFlag = False,
) -> None:
    """Run one invocation of an agent, in process, and print its outcome: result, effects, costs, logs.

    Example: dagr run agents/counter --state counter.json
    """
    chosen_event = _event(event, context, subject)
    spec = _manifest_for(agent, manifest)
    if agent.is_dir():
        wasm_path = _build_with_progress(agent, out=None, use_cache=True, quiet=json_out).wasm
    elif agent.suffix != ".wasm" and not agent.exists():
        raise PayloadError(
            str(agent), "no such file or directory", hint="Pass a .wasm component or an agent directory."
        )
    else:
        wasm_path = agent
    local_state = LocalState(state)
    # The inner loop measures memory (hosts do not: it costs copy-on-write instantiation).
    with Sandbox(cache_dir=compiled_cache_dir(), settings=EngineSettings(measure_memory=True)) as sandbox:
        component = sandbox.load_file(wasm_path, limits=spec.limits if spec else None)
        invocation = Invocation(
            task_id=uuid.uuid4().hex,
            instance_id=instance_id,
            specialist=spec.name if spec else wasm_path.stem,
            event=chosen_event,
            config_text=spec.config_text if spec else "",
            capabilities=Capabilities(own=spec.grants) if spec else Capabilities(),
            limits=spec.limits if spec else Limits(),
            state=local_state,
            now_unix_ms=int(time.time() * 1000),
        )
        outcome = sandbox.run(component, invocation)
    local_state.apply(outcome)
    if json_out:
        document = outcome_json(outcome)
        document["agent"] = {"source": str(wasm_path), "digest": component.digest}
        document["manifest"] = spec.name if spec else None
        if state is not None:
            document["state"] = local_state.to_json()
        print_json(document)
    else:
        if spec is None:
            err_console.print("[dim]no manifest: deny-all grants and default limits[/dim]")
        render_outcome(outcome)
        if state is not None and outcome.committable:
            err_console.print(f"[dim]state saved to {state}[/dim]")
    if not outcome.committable:
        raise typer.Exit(1)
