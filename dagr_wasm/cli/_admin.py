"""The DAgR commands (start, register, list, suspend) and the ones for looking around (status, logs,
result, kv, cancel, dead-letters). Thin: parse, call ``Mesh``, print (human or ``--json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from ..build import build_agent
from ..deploy import check_module
from ..errors import PayloadError, UsageError
from ..manifest import MANIFEST_FILE, Manifest, load_manifest, validate_manifest
from ..mesh import InstanceResult, JournalRecord, Mesh, ModelCallRecord, TreeNode
from ..payload import encode_cbor, json_or_text, to_tagged
from ._connect import Connection, with_connection
from ._render import (
    ApproveGrants,
    JsonFlag,
    dead_letter_row,
    err_console,
    inert,
    iso_ms,
    log_record_view,
    model_call_view,
    payload_text,
    print_json,
    record_json,
    safe,
    status_table,
    stdout_console,
    tree_view,
    warn_broad_grants,
)

__all__ = [
    "cancel_command",
    "dead_letters_command",
    "delete_specialist_command",
    "kv_command",
    "list_specialists_command",
    "logs_command",
    "register_specialist_command",
    "result_command",
    "signal_command",
    "start_command",
    "status_command",
    "suspend_command",
    "watch_command",
]

T = TypeVar("T")


def _with_mesh(connection: Connection, action: Callable[[Mesh], Awaitable[T]]) -> T:
    async def main() -> T:
        async with await Mesh.connect(connection.options()) as mesh:
            return await action(mesh)

    return asyncio.run(main())


# --- start, register, list, suspend: the original DAgR commands -------------------------------------


@with_connection
def start_command(
    agent: Annotated[str, typer.Option("--agent", help="The specialist to start as the main agent.")],
    context: Annotated[str, typer.Option("--context", help="Its start context.")] = "",
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Start a main agent instance; prints its id.

    Example: dagr start --agent orchestrator
    """
    instance = _with_mesh(connection, lambda mesh: mesh.spawn(agent, context))
    if json_out:
        print_json({"id": instance, "specialist": agent})
    else:
        stdout_console.print(instance)


@with_connection
def register_specialist_command(
    name: Annotated[str, typer.Option("--name", help="The specialist's name.")],
    description: Annotated[str, typer.Option("--description", help="What it does (shown by list).")] = "",
    topic: Annotated[
        str | None,
        typer.Option(
            "--topic",
            help="Its task subject: always agents.specialist.NAME (as in DAgR; any other is refused).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="File whose text the agent reads (config.get).")
    ] = None,
    module: Annotated[
        Path | None,
        typer.Option(
            "--module", help="Its .wasm, or an agent directory to build. Default: ./agents/NAME if present."
        ),
    ] = None,
    approve_grants: ApproveGrants = False,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Register (or update) a specialist: name, description, topic, config text, and optionally its module.

    Grants, limits and config text come from the agent directory's dagr.toml when there is one
    (--config replaces the config text). Without --module,
    a specialist that already has a module keeps it, and ./agents/NAME is built and used if it exists.

    Example: dagr register specialist --name stock-analyst --description "Analyzes stock market data"
    --topic agents.specialist.stock-analyst --config ./agents/stock-analyst/config.md
    """
    agent_dir = module if module is not None and module.is_dir() else Path("agents") / name
    base: dict[str, Any] = {}
    if (agent_dir / MANIFEST_FILE).is_file():
        found = load_manifest(agent_dir / MANIFEST_FILE)
        # The directory's config file too (a system prompt, say), unless --config gives another.
        base = {
            "grants": found.grants,
            "limits": found.limits,
            "description": found.description,
            "config_text": found.config_text,
        }
    if config is not None:
        try:
            base["config_text"] = config.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PayloadError(f"--config {config}", f"cannot be read ({exc.__class__.__name__})") from None
    fields: dict[str, Any] = {**base, "name": name}
    if description:
        fields["description"] = description
    if topic:
        fields["topic"] = topic
    manifest: Manifest = validate_manifest(fields, source="the specialist's flags")
    warn_broad_grants(manifest.grants)
    wasm_path: Path | None = None
    if module is not None and not module.is_dir():
        wasm_path = module
    elif (agent_dir / "app.py").is_file():
        err_console.print(f"[dim]building {agent_dir} ...[/dim]")
        wasm_path = build_agent(agent_dir).wasm
    # Refuse what no host could run, before storing anything.
    wasm = check_module(wasm_path, limits=manifest.limits)[0] if wasm_path is not None else None

    async def register(mesh: Mesh) -> Any:
        await mesh.ensure_layout()
        return await mesh.registry.deploy(manifest, wasm, approve_grants=approve_grants)

    version = _with_mesh(connection, register)
    if json_out:
        print_json(version.to_json())
        return
    module_note = f"module {version.digest[:12]}" if version.digest else "no module yet: deploy one to run it"
    stdout_console.print(f"registered [bold]{version.name}[/bold] version {version.version} ({module_note})")


@with_connection
def list_specialists_command(
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """List the registered specialists.

    Example: dagr list specialists
    """
    specialists = _with_mesh(connection, lambda mesh: mesh.registry.list())
    if json_out:
        print_json({"specialists": [s.to_json() for s in specialists]})
        return
    if not specialists:
        err_console.print("no specialists registered yet: `dagr deploy agents/NAME` registers one")
    for spec in specialists:
        stdout_console.print(inert(f"- {spec.name}: {json.dumps(spec.description, ensure_ascii=False)}"))


def parse_until(text: str) -> int:
    """An ISO 8601 time as Unix milliseconds; a time without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(
            f"--until {text!r}", "not an ISO 8601 time", hint="Write it like 2026-01-22T18:00:00Z (UTC)."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@with_connection
def suspend_command(
    until: Annotated[str, typer.Option("--until", help="When to wake, ISO 8601; no offset means UTC.")],
    resume_context: Annotated[
        str, typer.Option("--resume-context", help="What the wake event carries.")
    ] = "",
    agent_id: Annotated[
        str | None,
        typer.Option("--agent-id", envvar="DAGR_AGENT_ID", help="The instance (default: $DAGR_AGENT_ID)."),
    ] = None,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Reschedule an instance's wake (the same rules as the agent's own suspend).

    Example: dagr suspend --until "2026-01-22T18:00:00" --resume-context "Check for stock analyst results"
    """
    if not agent_id:
        raise UsageError("which instance? Give --agent-id ID or set DAGR_AGENT_ID")
    wake_at = parse_until(until)
    status = _with_mesh(
        connection, lambda mesh: mesh.reschedule(agent_id, wake_at_ms=wake_at, resume_context=resume_context)
    )
    if json_out:
        print_json(record_json(status))
    else:
        assert status.wake_at_ms is not None
        stdout_console.print(f"{agent_id} wakes at {iso_ms(status.wake_at_ms)} with {resume_context!r}")


# --- looking around ------------------------------------------------------------------------------


@with_connection
def status_command(
    instance: Annotated[
        str | None, typer.Argument(help="An instance id: show it and its spawn tree.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many instances to list.")] = 50,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Show instances and their state (running, suspended until when, finished, failed), or one spawn tree.

    Example: dagr status 4c855474525b71512227
    """
    if instance is not None:

        async def one(mesh: Mesh) -> TreeNode:
            await mesh.require_status(instance)
            return await mesh.tree(instance)

        node = _with_mesh(connection, one)
        if json_out:
            print_json(record_json(node))
        else:
            stdout_console.print(tree_view(node))
        return
    statuses = _with_mesh(connection, lambda mesh: mesh.statuses(limit=limit))
    if json_out:
        print_json({"instances": [record_json(s) for s in statuses]})
        return
    stdout_console.print(status_table(statuses))


@with_connection
def logs_command(
    instance: Annotated[str | None, typer.Argument(help="An instance id (default: every instance).")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new records as they come.")
    ] = False,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Show agent logs: a record per invocation (lines, status, error). -f follows (JSON lines with --json)
    until the instance ends (or, without an instance, until Ctrl-C).

    Example: dagr logs 4c855474525b71512227 -f
    """

    async def show(mesh: Mesh) -> None:
        past = await mesh.logs(instance) if instance else await mesh.all_logs()
        calls = await mesh.model_calls(instance) if instance else []
        if json_out and not follow:
            print_json(
                {
                    "instance": instance,
                    "records": [record_json(r) for r in past],
                    "model_calls": [record_json(c) for c in calls],
                }
            )
            return
        # One timeline: each invocation's record and the model calls between them.
        timeline: list[tuple[int, int, JournalRecord | ModelCallRecord]] = [
            (r.updated_ms, 1, r) for r in past
        ] + [(c.at_ms, 0, c) for c in calls]
        for _, _, entry in sorted(timeline, key=lambda t: (t[0], t[1])):
            if isinstance(entry, ModelCallRecord):
                if json_out:
                    print(json.dumps(record_json(entry), ensure_ascii=False), flush=True)
                else:
                    stdout_console.print(model_call_view(entry))
            else:
                _emit(entry)
        if follow:  # for one instance: until it ends
            async for record in mesh.follow_logs(instance, until_ended=instance is not None):
                _emit(record)

    def _emit(record: JournalRecord) -> None:
        if json_out:
            print(json.dumps(record_json(record), ensure_ascii=False), flush=True)
        else:
            stdout_console.print(log_record_view(record))

    with contextlib.suppress(KeyboardInterrupt):
        _with_mesh(connection, show)


@with_connection
def result_command(
    instance: Annotated[str, typer.Argument(help="An instance id.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result if there is none yet.")] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0, help="With --wait: give up after this many seconds.")
    ] = None,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Print an instance's latest result (exit 1 if it failed, or if there is none by the timeout).

    Example: dagr result 4c855474525b71512227 --wait --timeout 30
    """
    if timeout is not None and not wait:
        raise UsageError("--timeout goes with --wait")

    async def fetch(mesh: Mesh) -> InstanceResult | None:
        await mesh.require_status(instance)
        return await mesh.result(instance, wait=wait, timeout_s=timeout)

    result = _with_mesh(connection, fetch)
    if result is None:
        err_console.print(f"no result from {instance} {'within the timeout' if wait else 'yet'}")
        raise typer.Exit(1)
    if json_out:
        print_json(record_json(result))
    elif result.error is not None:
        err_console.print(Text("failed: ", style="red").append(inert(result.error)))
    else:
        stdout_console.print(inert(payload_text(result.ok or b"", indent=2)), highlight=False)
    if result.error is not None:
        raise typer.Exit(1)


@with_connection
def kv_command(
    instance: Annotated[str, typer.Argument(help="An instance id.")],
    key: Annotated[str | None, typer.Argument(help="One key (default: all of them).")] = None,
    shared: Annotated[
        bool, typer.Option("--shared", help="Its specialist's shared state (kv_scope = specialist) instead.")
    ] = False,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Show an instance's state (read-only): keys, values, revisions. --shared: its specialist's.

    Example: dagr kv 4c855474525b71512227 count
    """

    async def read(mesh: Mesh) -> dict[str, tuple[bytes, int]]:
        await mesh.require_status(instance)
        return await mesh.state_of(instance, shared=shared)

    state = _with_mesh(connection, read)
    if key is not None:
        if key not in state:
            raise PayloadError(
                f"key {key!r}",
                f"instance {instance} has no such key",
                hint=f"It has: {', '.join(state) or 'none'}.",
            )
        state = {key: state[key]}
    if json_out:
        print_json(
            {
                "id": instance,
                "shared": shared,
                "state": {k: {"revision": r, **to_tagged(v)} for k, (v, r) in state.items()},
            }
        )
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("key", "value", "revision"):
        table.add_column(column)
    for name, (value, revision) in sorted(state.items()):
        tagged = to_tagged(value)
        shown = (
            json.dumps(tagged["cbor"], ensure_ascii=False) if "cbor" in tagged else f"<{len(value)} bytes>"
        )
        table.add_row(inert(name), inert(shown), str(revision))
    stdout_console.print(table)


@with_connection
def cancel_command(
    instance: Annotated[str, typer.Argument(help="An instance id.")],
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Cancel an instance: its pending wake is removed and its queued tasks are dropped by the hosts.

    Example: dagr cancel 4c855474525b71512227
    """
    status = _with_mesh(connection, lambda mesh: mesh.cancel(instance))
    if json_out:
        print_json(record_json(status))
    else:
        stdout_console.print(f"cancelled {instance}")


@with_connection
def signal_command(
    instance: Annotated[str, typer.Argument(help="The instance to signal.")],
    name: Annotated[str, typer.Argument(help="The signal's name (what the agent expects).")],
    data: Annotated[
        str | None,
        typer.Option("--data", help="Its data: JSON (sent as that value), or else the text itself."),
    ] = None,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Send a named signal to an instance (an approval, a webhook's news); it wakes an await on it.

    The data reaches the agent CBOR-encoded: `--data '{"ok": true}'` as that map, `--data yes`
    as the text "yes". An instance that has ended or does not exist is refused; nothing is stored.

    Example: dagr signal 4c855474525b71512227 approve --data '{"ok": true, "by": "ana"}'
    """
    payload = encode_cbor(json_or_text(data) if data is not None else None)
    signal_id = _with_mesh(connection, lambda mesh: mesh.signal(instance, name, payload))
    if json_out:
        print_json({"instance": instance, "name": name, "id": signal_id, "data": to_tagged(payload)})
    else:
        stdout_console.print(f"signalled {name} to {instance}")


@with_connection
def dead_letters_command(
    retry: Annotated[
        str | None, typer.Option("--retry", help="Re-queue this dead-lettered task (by task id).")
    ] = None,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """List tasks that failed every attempt, with their errors; --retry TASK re-queues one.

    Example: dagr dead-letters --retry 7da10d38d389e2f9a620
    """
    if retry is not None:
        new_task = _with_mesh(connection, lambda mesh: mesh.retry_dead(retry))
        if json_out:
            print_json({"retried": retry, "task": new_task})
        else:
            stdout_console.print(f"re-queued {retry} as task {new_task}")
        return
    records = _with_mesh(connection, lambda mesh: mesh.dead_letters())
    rows = [dead_letter_row(r) for r in records]
    if json_out:
        print_json({"dead_letters": rows})
        return
    if not rows:
        stdout_console.print("no dead letters")
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("task", "specialist", "instance", "attempts", "when", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            inert(row["task"]),
            inert(row["specialist"]),
            inert(row["instance"] or ""),
            inert(row["attempts"] or ""),
            row["at"] or "",
            inert(row["error"]),
        )
    stdout_console.print(table)


@with_connection
def watch_command(
    subject: Annotated[
        str, typer.Argument(help="A subject pattern (* one token, > the rest).")
    ] = "agents.main.>",
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Stop after this many messages.")
    ] = None,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Print what agents publish on SUBJECT (default agents.main.>), as it comes; Ctrl-C stops.

    With --json, one JSON document per line: subject, payload ({"cbor": value} or {"base64": ...}).

    Example: dagr watch agents.main.results --count 5
    """

    async def watch(mesh: Mesh) -> None:
        seen = 0
        async for got, payload in mesh.watch(subject):
            if json_out:
                print(
                    json.dumps({"subject": got, "payload": to_tagged(payload)}, ensure_ascii=False),
                    flush=True,
                )
            else:
                shown = inert(payload_text(payload))
                stdout_console.print(Text(safe(got), style="bold").append(" ").append(shown))
            seen += 1
            if count is not None and seen >= count:
                return

    with contextlib.suppress(KeyboardInterrupt):
        _with_mesh(connection, watch)


@with_connection
def delete_specialist_command(
    name: Annotated[str, typer.Argument(help="The specialist to delete.")],
    force: Annotated[
        bool, typer.Option("--force", help="Also cancel its instances that have not ended.")
    ] = False,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Delete a specialist from the registry: nothing new can start it. Refused while instances of it
    have not ended, unless --force (which cancels them). Its past versions stay, for their journals.

    Example: dagr delete specialist stock-analyst
    """
    cancelled = _with_mesh(connection, lambda mesh: mesh.delete_specialist(name, force=force))
    if json_out:
        print_json({"deleted": name, "cancelled": cancelled})
    else:
        tail = f" (cancelled {len(cancelled)} instance(s))" if cancelled else ""
        stdout_console.print(f"deleted {inert(name)}{tail}")
