"""``dagr dev``: the local swarm loop. Build the agents, run them on a private embedded server and
host, start one, show its tree, logs and result live, and do it again whenever a source changes.

``dagr run`` stays the tool for one invocation; ``dagr dev`` is for a swarm: spawns, waits, replies
and wakes on a real mesh, with nothing left behind (the server's store is a temporary directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.text import Text

from ..build import source_digest
from ..deploy import Deployable, prepare
from ..errors import DagrError, PayloadError
from ..mesh import EmbeddedServer, InstanceState, JournalRecord, Mesh, Role, ServerConfig, TreeNode
from ._mesh import serve_host
from ._render import err_console, inert, log_record_view, payload_text, record_json, stdout_console, tree_view

__all__ = ["dev_command"]

#: How often sources are looked at for changes (a hash of each agent's files: cheap for agents).
_POLL_S = 1.0


@dataclass(slots=True)
class _Agent:
    path: Path
    digest: str
    name: str = ""


def dev_command(
    agent_dirs: Annotated[
        list[Path], typer.Argument(help="Agent directories (app.py + dagr.toml), one or more.")
    ],
    start: Annotated[
        str | None,
        typer.Option("--start", help="Which specialist to start (default: the first directory's)."),
    ] = None,
    context: Annotated[str, typer.Option("--context", help="The started instance's context.")] = "",
    once: Annotated[
        bool, typer.Option("--once", help="Stop when the started instance ends (exit 1 unless finished).")
    ] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Host slots.")] = 8,
    json_out: Annotated[
        bool, typer.Option("--json", help="JSON lines (deployed, log, result, error) instead of a live view.")
    ] = False,
) -> None:
    """Build AGENT_DIRS, run them on a private server and host, start one, show it live; rebuild on change.

    Example: dagr dev agents/spawner agents/echo --context "3"
    """
    agents = [_Agent(path, "") for path in agent_dirs]
    for agent in agents:
        if not (agent.path / "app.py").is_file():
            raise PayloadError(str(agent.path), "not an agent directory (no app.py)",
                               hint="Pass directories made by the SDK (app.py, dagr.toml).")  # fmt: skip
    # SIGTERM stops the loop like Ctrl-C does, so the server below is stopped and its store removed.
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="dagr-dev-") as store:
        server = EmbeddedServer(
            config=ServerConfig(
                store_dir=Path(store) / "nats",
                port=0,
                monitor_port=0,
                credentials_dir=Path(store) / "credentials",
            )
        )
        server.start()
        ended: InstanceState | None = None
        try:
            with contextlib.suppress(KeyboardInterrupt):
                ended = asyncio.run(
                    _loop(server, agents, start=start, context=context, once=once,
                          concurrency=concurrency, json_out=json_out)
                )  # fmt: skip
        finally:
            server.stop()
    if once and ended is not InstanceState.FINISHED:
        raise typer.Exit(1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _loop(
    server: EmbeddedServer,
    agents: list[_Agent],
    *,
    start: str | None,
    context: str,
    once: bool,
    concurrency: int,
    json_out: bool,
) -> InstanceState | None:
    view = _View(json_out)
    async with (
        await Mesh.connect(server.options(Role.ADMIN)) as mesh,
        await Mesh.connect(server.options(Role.HOST)) as host,
    ):
        await mesh.ensure_layout()
        # The first build must work: there is nothing to run otherwise (exit 2, with the reason).
        for agent in agents:
            await _deploy(mesh, agent, view)
        root_name = start or agents[0].name
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(serve_host(host, concurrency=concurrency, stop=stop, quiet=True))
            follower = group.create_task(_follow(mesh, view))
            try:
                while True:
                    ended = await _run_once(mesh, root_name, context, view)
                    if once:
                        return ended
                    view.say(f"watching {len(agents)} agent dir(s) for changes; Ctrl-C stops")
                    await _until_changed(mesh, agents, view)
            finally:
                follower.cancel()
                stop.set()


async def _deploy(mesh: Mesh, agent: _Agent, view: _View) -> None:
    agent.digest = await asyncio.to_thread(source_digest, agent.path)
    view.say(f"building {agent.path}")
    ready: Deployable = await asyncio.to_thread(prepare, agent.path)
    # The author's own loop on a private server: a grant they add is theirs to make.
    version = await mesh.deploy(ready.manifest, ready.wasm, approve_grants=True)
    agent.name = ready.manifest.name
    view.event("deployed", f"deployed {agent.name} version {version.version}",
               specialist=agent.name, version=version.version, digest=ready.digest)  # fmt: skip


async def _until_changed(mesh: Mesh, agents: list[_Agent], view: _View) -> None:
    """Wait until some agent's sources change, then rebuild and redeploy those. A build that fails
    is shown and waited out: the next change tries again."""
    while True:
        await asyncio.sleep(_POLL_S)
        changed = [a for a in agents if await asyncio.to_thread(source_digest, a.path) != a.digest]
        if not changed:
            continue
        try:
            for agent in changed:
                await _deploy(mesh, agent, view)
        except DagrError as exc:
            view.error(exc)
            continue
        return


async def _run_once(mesh: Mesh, name: str, context: str, view: _View) -> InstanceState:
    root = await mesh.spawn(name, context)
    view.event("started", f"started {name} as {root}", instance=root, specialist=name)
    with view.live() as live:
        while True:
            tree = await mesh.tree(root)
            live(tree)
            if tree.record is not None and tree.record.ended:
                break
            await asyncio.sleep(0.25)
    if not view.json_out:
        stdout_console.print()
    result = await mesh.result(root)
    assert result is not None  # it has ended
    if view.json_out:
        view.line({"event": "result", **record_json(result)})
    elif result.error is not None:
        stdout_console.print(Text(f"{result.state.value}: ", style="red").append(inert(result.error)))
    else:
        stdout_console.print(Text("result: ", style="green").append(inert(payload_text(result.ok or b""))))
    return result.state


async def _follow(mesh: Mesh, view: _View) -> None:
    """Every invocation of every instance, as it is recorded (the server is this session's alone)."""
    async for record in mesh.follow_logs():
        view.log(record)


class _View:
    """Where the loop's output goes: a live tree on a terminal, or JSON lines."""

    def __init__(self, json_out: bool) -> None:
        self.json_out = json_out

    def line(self, document: dict[str, Any]) -> None:
        print(json.dumps(document, ensure_ascii=False), flush=True)

    def say(self, text: str) -> None:
        if not self.json_out:
            err_console.print(Text(text, style="dim"))

    def event(self, kind: str, text: str, **fields: Any) -> None:
        if self.json_out:
            self.line({"event": kind, **fields})
        else:
            err_console.print(Text(text, style="green"))

    def error(self, exc: DagrError) -> None:
        if self.json_out:
            self.line({"event": "error", "type": type(exc).__name__, "message": exc.message})
        else:
            err_console.print(Text("error: ", style="bold red").append(inert(exc.message)))

    def log(self, record: JournalRecord) -> None:
        if self.json_out:
            self.line({"event": "log", **record_json(record)})
        else:
            stdout_console.print(log_record_view(record))

    @contextlib.contextmanager
    def live(self) -> Any:
        if self.json_out:
            yield lambda tree: None
            return
        with Live(console=stdout_console, refresh_per_second=8, transient=False) as live:

            def show(tree: TreeNode) -> None:
                live.update(Group(Text("spawn tree", style="dim"), tree_view(tree)))

            yield show
