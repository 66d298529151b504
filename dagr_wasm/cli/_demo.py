"""``dagr demo``: the whole runtime in one command, on a fresh machine.

It starts the embedded nats-server (or uses the one ``dagr up`` runs), builds and deploys the
``orchestrator`` and ``stock-analyst`` agents from agents/, runs a host, starts the orchestrator,
and shows the spawn tree live until the orchestrator publishes its report to
``agents.main.results``; then the report. The data stays, so ``dagr up`` followed by ``dagr status``
and ``dagr logs`` can explore what happened.

``dagr demo --assistant`` runs the model-driven main agent instead (``agents/assistant``) on the
host's default models: the local SmolLM2 (``dagr-wasm[local-model]``), no internet, no account.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..deploy import Deployable, prepare
from ..errors import ConnectionFailure, RuntimeFailure
from ..mesh import ConnectOptions, EmbeddedServer, InstanceState, Mesh, Role, ServerConfig, default_store_dir
from ..paths import credentials_dir, source_root
from ..payload import decode_map
from ._connect import Connection
from ._mesh import serve_host
from ._render import err_console, inert, print_json, record_json, stdout_console, tree_view

__all__ = ["demo_command"]

AGENTS = ("stock-analyst", "orchestrator")
ASSISTANT_AGENTS = ("stock-analyst", "assistant")
REPORT_SUBJECT = "agents.main.results"
ASSISTANT_CONTEXT = "Check GME sentiment on Reddit"


def demo_command(
    tickers: Annotated[
        str, typer.Option("--tickers", help="Tickers for the orchestrator (default: all it knows).")
    ] = "",
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where the embedded server keeps its data.")
    ] = None,
    port: Annotated[
        int, typer.Option("--port", help="Client port of the embedded server (0: any free one).")
    ] = 4222,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Give up after this many seconds.")
    ] = 180.0,
    json_out: Annotated[
        bool, typer.Option("--json", help="No live view; print one JSON document at the end.")
    ] = False,
    assistant: Annotated[
        bool,
        typer.Option(
            "--assistant",
            help="Run the model-driven main agent (agents/assistant) on the local model instead: "
            "the model decides whom to spawn, then reports.",
        ),
    ] = False,
    context: Annotated[
        str, typer.Option("--context", help="With --assistant: what to ask it.")
    ] = ASSISTANT_CONTEXT,
) -> None:
    """Run the demo: an orchestrator fans out to stock analysts, awaits them, aggregates, reports.

    Example: dagr demo (or: dagr demo --assistant, the same on a local language model)
    """
    agents = ASSISTANT_AGENTS if assistant else AGENTS
    agents_dir = source_root() / "agents"
    missing = [name for name in agents if not (agents_dir / name / "app.py").is_file()]
    if missing:
        raise RuntimeFailure(
            f"the demo agents are not in {agents_dir} ({', '.join(missing)}); run from a checkout"
        )
    server: EmbeddedServer | None = None
    url = _running_default(port)
    if url is None:
        server = EmbeddedServer(
            config=ServerConfig(
                store_dir=default_store_dir(data_dir),
                port=port,
                monitor_port=0,
                credentials_dir=credentials_dir(data_dir),
            )
        )
        server.start()
        admin, host = server.options(Role.ADMIN), server.options(Role.HOST)
        _say(json_out, f"[green]nats-server[/green] {server.url} (JetStream in {server.store_dir})")
    else:
        admin, host = Connection(url).options(), Connection(url).options(for_host=True)
        _say(json_out, f"[green]using the running nats-server[/green] {url}")
    try:
        wasm = _build_and_check(agents_dir, agents, quiet=json_out)
        root, start = ("assistant", context) if assistant else ("orchestrator", tickers)
        outcome = asyncio.run(
            _run(admin, host, wasm, root=root, context=start, timeout_s=timeout, json_out=json_out)
        )
    finally:
        if server is not None:
            server.stop()
    if json_out:
        print_json(outcome)
        return
    stdout_console.print()
    if assistant:
        _show_assistant_report(outcome["report"])
    else:
        _show_report(outcome["report"])
    stdout_console.print(
        f"\n[dim]instance {outcome['instance']}. Explore: `dagr up` (same data), then "
        f"`dagr status {outcome['instance']}` and `dagr logs {outcome['instance']}`.[/dim]"
    )


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        err_console.print(message)


def _running_default(port: int) -> str | None:
    """The URL of a server already listening on ``port`` (e.g. `dagr up`), if there is one."""
    if port == 0:
        return None

    async def probe() -> bool:
        try:
            mesh = await Mesh.connect(Connection(f"nats://127.0.0.1:{port}").options())
        except ConnectionFailure:
            return False
        await mesh.close()
        return True

    return f"nats://127.0.0.1:{port}" if asyncio.run(probe()) else None


def _build_and_check(agents_dir: Path, agents: tuple[str, ...], *, quiet: bool) -> dict[str, Deployable]:
    """Build each agent (cached by source hash) and compile it once (cached on disk)."""
    built: dict[str, Deployable] = {}
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=err_console, disable=quiet, transient=False,
    ) as progress:  # fmt: skip
        for name in agents:
            task = progress.add_task(f"building {name} (componentize-py, ~15 s the first time)", total=None)
            ready = prepare(agents_dir / name)  # built, then compiled (~10 s the first time)
            progress.update(
                task, description=f"{name}: ready ({len(ready.wasm) / 1e6:.1f} MB)", total=1, completed=1
            )
            built[name] = ready
    return built


async def _run(
    admin: ConnectOptions,
    host_options: ConnectOptions,
    wasm: dict[str, Deployable],
    *,
    root: str,
    context: str,
    timeout_s: float,
    json_out: bool,
) -> dict[str, Any]:
    async with await Mesh.connect(admin) as mesh, await Mesh.connect(host_options) as host_mesh:
        await mesh.ensure_layout()
        for name in wasm:
            version = await mesh.deploy(wasm[name].manifest, wasm[name].wasm)
            _say(json_out, f"[green]deployed[/green] {name} version {version.version}")
        reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        # The assistant's reports have an answer, the orchestrator's rows: others are not this demo's.
        mark = "answer" if root == "assistant" else "rows"

        async def on_report(msg: Any) -> None:
            report = decode_map(msg.data)
            if report is not None and mark in report:  # anything else on the subject is not a report
                await reports.put(report)

        subscription = await mesh.nc.subscribe(REPORT_SUBJECT, cb=on_report)
        stop = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                host = group.create_task(serve_host(host_mesh, concurrency=8, stop=stop, quiet=True))
                try:
                    instance = await mesh.spawn(root, context)
                    report = await _watch(mesh, instance, reports, timeout_s=timeout_s, live=not json_out)
                    tree = await mesh.tree(instance)
                finally:
                    stop.set()
                await host
        finally:
            await subscription.unsubscribe()
        return {"instance": instance, "report": report, "tree": record_json(tree)}


async def _watch(
    mesh: Mesh, root: str, reports: asyncio.Queue[dict[str, Any]], *, timeout_s: float, live: bool
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    report: dict[str, Any] | None = None
    settle_until = 0.0
    with contextlib.ExitStack() as stack:
        view = stack.enter_context(Live(console=stdout_console, refresh_per_second=8)) if live else None
        while True:
            tree = await mesh.tree(root)
            if view is not None:
                view.update(Group(Text("spawn tree", style="dim"), tree_view(tree)))
            record = tree.record
            ended = record is not None and record.ended
            if report is not None and (ended or time.monotonic() > settle_until):
                return report  # the final tree is on screen
            if record is not None and ended and record.state is not InstanceState.FINISHED:
                raise RuntimeFailure(f"the {record.specialist} ended {record.state}: {record.error}")
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"no report within {timeout_s:.0f} s; see `dagr logs {root}`")
            if report is None:
                try:
                    report = await asyncio.wait_for(reports.get(), timeout=0.25)
                    # The report and the final status travel in one commit: give the status a moment.
                    settle_until = time.monotonic() + 2.0
                except TimeoutError:
                    continue
            else:
                await asyncio.sleep(0.1)


_COLUMNS = (
    ("ticker", "ticker"),
    ("last_close", "last close"),
    ("sma_20", "SMA 20"),
    ("volatility_20d", "volatility"),
    ("return_30d_pct", "30-day %"),
    ("mentions", "posts"),
    ("sentiment_mean", "sentiment"),
    ("signal", "signal"),
)


def _show_report(report: dict[str, Any]) -> None:
    rows = report.get("rows") or []
    table = Table(title=f"report on {REPORT_SUBJECT} (data as of {report.get('as_of')})")
    for _, title in _COLUMNS:
        table.add_column(title, justify="left" if title in ("ticker", "signal") else "right")
    for row in rows:
        table.add_row(*(inert(row.get(key, "")) for key, _ in _COLUMNS))
    stdout_console.print(table)
    for failure in report.get("failed") or []:
        stdout_console.print(inert(f"{failure.get('ticker')}: {failure.get('error')}", "red"))
    if report.get("summary"):
        stdout_console.print(inert(report["summary"]))


def _show_assistant_report(report: dict[str, Any]) -> None:
    """What the model-driven assistant reported: whom it asked, what they found, what it wrote."""
    table = Table(title=f"the assistant's analysts (report on {REPORT_SUBJECT})")
    for title in ("task it gave", "ticker", "signal", "30-day %", "Reddit mood"):
        table.add_column(title)
    for spawned in report.get("spawned") or []:
        found = spawned.get("result") if isinstance(spawned.get("result"), dict) else {}
        table.add_row(
            inert(spawned.get("task", "")),
            inert(found.get("ticker", "")),
            inert(found.get("signal", spawned.get("error", ""))),
            inert(found.get("return_30d_pct", "")),
            inert(found.get("mood", "")),
        )
    stdout_console.print(table)
    usage = report.get("usage") or [0, 0]
    stdout_console.print(
        inert(
            f"stopped: {report.get('stopped')} after {report.get('turns')} model turns "
            f"({usage[0]:,} input / {usage[1]:,} output tokens)"
            + (f": {report['reason']}" if report.get("reason") else ""),
            "dim",
        )
    )
    stdout_console.print(Text("answer:", style="bold"))
    stdout_console.print(inert(str(report.get("answer") or "")))
