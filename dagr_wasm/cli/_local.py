"""``dagr build`` and ``dagr run``: the agent author's inner loop, no server needed."""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ..build import BuildResult, build_agent
from ..errors import PayloadError, UsageError
from ..invocation import Event, Invocation, Message, Start, Wake
from ..local import LocalAnswers, LocalState, LocalWorld, Round
from ..manifest import MANIFEST_FILE, Manifest, load_manifest
from ..models import load_models
from ..paths import compiled_cache_dir
from ..policy import Capabilities, Limits
from ..sandbox import EngineSettings, Sandbox
from ._render import JsonFlag, err_console, outcome_json, print_json, render_outcome
from ._secrets import AllowPrivateFlag, ModelsFlag, SecretsFlag, http_policy

__all__ = ["build_command", "run_command"]

#: Invocations one `dagr run` makes at most (a start, then a resume per await): room for a
#: ToolAgent's whole loop (two invocations a model turn when tools are awaited, 8 turns by default).
MAX_ROUNDS = 32


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
    reply: Annotated[
        list[Path] | None,
        typer.Option(
            "--reply",
            help='JSON file of children\'s answers for awaits: {"<specialist or child id>": '
            '{"ok": VALUE} | {"error": "why"} | [answers in order]}.',
        ),
    ] = None,
    signal: Annotated[
        list[str] | None,
        typer.Option("--signal", help="NAME=DATA: a signal for an await (DATA: JSON, or text); repeatable."),
    ] = None,
    secrets: SecretsFlag = None,
    http_allow_private: AllowPrivateFlag = False,
    models: ModelsFlag = None,
    json_out: JsonFlag = False,
) -> None:
    """Run an agent in process and print each invocation's outcome: result, effects, costs, logs.

    An await is resolved here, as a host would: its HTTP calls are made (same grants, secrets and
    checks), model calls go to --models' providers, children answer from --reply and signals come
    from --signal; what nothing answers
    stays pending and the agent resumes as at its deadline.

    Example: dagr run agents/counter --state counter.json
    Example: dagr run agents/approver --signal approve='{"ok": true, "by": "ana"}'
    """
    chosen_event = _event(event, context, subject)
    answers = LocalAnswers.parse(reply or [], signal or [])
    world = LocalWorld(
        answers,
        http_policy(secrets, allow_private=http_allow_private),
        load_models(models) if models is not None else None,
    )
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
    rounds: list[Round] = []
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
            inbox=world.inbox,
            handles=world,
            now_unix_ms=int(time.time() * 1000),
        )
        outcome = sandbox.run(component, invocation)
        rounds.append(Round(event.value, outcome))
        while outcome.committable:
            local_state.apply(outcome)
            awaiting = outcome.awaiting
            if awaiting is None or len(rounds) >= MAX_ROUNDS:
                break
            resumed = world.resolve(invocation, outcome, awaiting)
            invocation = replace(
                invocation,
                task_id=uuid.uuid4().hex,
                event=resumed,
                inbox=(),
                now_unix_ms=int(time.time() * 1000),
            )
            outcome = sandbox.run(component, invocation)
            rounds.append(Round("resumed", outcome, resumed.resolved, resumed.pending, resumed.timed_out))
    still_awaiting = outcome.committable and outcome.awaiting is not None
    if json_out:
        document = outcome_json(outcome)
        document["agent"] = {"source": str(wasm_path), "digest": component.digest}
        document["manifest"] = spec.name if spec else None
        document["rounds"] = [_round_json(r) for r in rounds]
        if state is not None:
            document["state"] = local_state.to_json()
        print_json(document)
    else:
        if spec is None:
            err_console.print("[dim]no manifest: deny-all grants and default limits[/dim]")
        for i, done in enumerate(rounds):
            if len(rounds) > 1:
                err_console.print(f"[bold]invocation {i + 1}[/bold] [dim]{_round_line(done)}[/dim]")
            render_outcome(done.outcome)
        if still_awaiting:
            err_console.print(f"[yellow]stopped after {MAX_ROUNDS} invocations, still awaiting[/yellow]")
        if state is not None and outcome.committable:
            err_console.print(f"[dim]state saved to {state}[/dim]")
    if not outcome.committable:
        raise typer.Exit(1)


def _round_line(done: Round) -> str:
    if done.event != "resumed":
        return done.event
    got = ", ".join(f"{r.handle} ({'ok' if r.error is None else 'failed'})" for r in done.resolved)
    line = f"resumed with {got or 'nothing'}"
    if done.pending:
        line += f"; pending {', '.join(done.pending)} (no --reply/--signal for them, or no answer)"
    return line + ("; as at the deadline" if done.timed_out else "")


def _round_json(done: Round) -> dict[str, object]:
    return {
        "event": done.event,
        "resolved": [{"handle": r.handle, "kind": r.kind, "ok": r.error is None} for r in done.resolved],
        "pending": list(done.pending),
        "timed_out": done.timed_out,
        "outcome": outcome_json(done.outcome),
    }
