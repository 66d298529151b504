"""Commands that talk to a deployment: ``up``, ``host``, ``deploy``, ``spawn``.

This is also where the two halves meet: a host is the mesh's ``Host`` driving the sandbox's
``Sandbox`` as its executor. Neither package imports the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..deploy import prepare
from ..errors import UsageError
from ..mesh import (
    EmbeddedServer,
    Host,
    HostConfig,
    HttpPolicy,
    Layout,
    Mesh,
    Role,
    ServerConfig,
    default_store_dir,
)
from ..mesh._auth import sign_module, verify_module
from ..models import ModelsConfig, default_models, load_models
from ..paths import compiled_cache_dir, credentials_dir
from ..sandbox import Sandbox
from ._connect import Connection, with_connection
from ._render import ApproveGrants, JsonFlag, err_console, print_json, stdout_console, warn_broad_grants
from ._secrets import AllowPrivateFlag, ModelsFlag, RecordModelTextFlag, SecretsFlag, http_policy

__all__ = ["deploy_command", "host_command", "spawn_command", "up_command"]

T = TypeVar("T")


ConcurrencyFlag = Annotated[
    int,
    typer.Option(
        "--concurrency",
        "-c",
        min=1,
        help="Agents running at once (wasm slots; each instance up to its memory limit).",
    ),
]
InFlightFlag = Annotated[
    int | None,
    typer.Option(
        "--in-flight",
        min=1,
        help="Tasks fetched and not yet acked at most: waiting for a slot, running or committing "
        "(default: 4 per slot).",
    ),
]


def check_slots(concurrency: int, in_flight: int | None) -> None:
    """A pipeline shallower than the wasm slots would leave slots nobody can fill."""
    if in_flight is not None and in_flight < concurrency:
        raise UsageError(
            f"--in-flight {in_flight} is less than --concurrency {concurrency}: tasks in flight "
            f"include the running ones; give at least {concurrency}, or leave it out (4 per slot)"
        )


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    async def runner() -> T:
        return await main()

    return asyncio.run(runner())


async def serve_host(
    mesh: Mesh,
    *,
    concurrency: int,
    stop: asyncio.Event,
    in_flight: int | None = None,
    quiet: bool = False,
    workers: int | None = None,
    specialist_concurrency: int | None = None,
    trusted_publishers: frozenset[str] = frozenset(),
    http: HttpPolicy | None = None,
    models: ModelsConfig | None = None,
    record_model_text: bool = False,
) -> Host:
    """Run a host on ``mesh`` until ``stop`` is set, then stop it gracefully."""
    sandbox = Sandbox(cache_dir=compiled_cache_dir())
    host_id = f"{socket.gethostname()}:{os.getpid()}"
    config = HostConfig(
        layout=mesh.layout,
        concurrency=concurrency,
        in_flight=in_flight,
        host_id=host_id,
        workers=workers,
        specialist_concurrency=specialist_concurrency,
        trusted_publishers=trusted_publishers,
        http=http or HttpPolicy(),
        models=models if models is not None else default_models(),
        record_model_text=record_model_text,
    )
    host = Host(mesh.nc, mesh.js, sandbox, config)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(host.run())
            await stop.wait()
            await host.stop()
    finally:
        sandbox.close()
    stats = host.stats
    if quiet:
        return host
    # One parseable line, for operators and for the tests that count work across host processes.
    err_console.print(
        "host stopped: "
        + json.dumps(
            {
                "host": host_id,
                "invocations": stats.invocations,
                "committed": stats.committed,
                "replayed": stats.replayed,
                "retried": stats.retried,
                "dead": stats.dead,
                "conflicts": stats.conflicts,
                "dropped": stats.dropped,
                "per_specialist": stats.per_specialist,
            }
        ),
        markup=False,
    )
    return host


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def up_command(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where the server keeps its data (default: user data dir)."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Client port of the embedded nats-server.")] = 4222,
    monitor_port: Annotated[int, typer.Option("--monitor-port", help="Its HTTP monitoring port.")] = 8222,
    concurrency: ConcurrencyFlag = 8,
    in_flight: InFlightFlag = None,
    no_sync: Annotated[
        bool,
        typer.Option(
            "--no-sync", help="Do not fsync before acking (faster; an acked write can be lost on power loss)."
        ),
    ] = False,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Run the server without authorization: anyone who reaches the port can read every "
            "agent's state, forge tasks, cancel instances and rewrite the registry. Experiments only.",
        ),
    ] = False,
    secrets: SecretsFlag = None,
    http_allow_private: AllowPrivateFlag = False,
    models: ModelsFlag = None,
    record_model_text: RecordModelTextFlag = False,
) -> None:
    """Start an embedded nats-server (JetStream) and a host, in the foreground. Ctrl-C stops both; data stays.

    The server only accepts the roles' credentials (nkeys it makes in the data dir's credentials/:
    admin, host, submitter); the CLI and hosts on this machine find them.

    Example: dagr up
    """
    check_slots(concurrency, in_flight)
    store = default_store_dir(data_dir)
    credentials = None if insecure_no_auth else credentials_dir(data_dir)
    policy = http_policy(secrets, allow_private=http_allow_private)
    model_config = load_models(models) if models is not None else None
    server = EmbeddedServer(
        config=ServerConfig(
            store_dir=store,
            port=port,
            monitor_port=monitor_port,
            sync_always=not no_sync,
            credentials_dir=credentials,
        )
    )
    server.start()
    try:
        err_console.print(
            f"[green]nats-server[/green] {server.url} (JetStream in {store}"
            f"{', fsync off' if no_sync else ''}); monitoring {server.monitor_url}"
        )
        if credentials is None:
            err_console.print(
                "[bold red]no authorization[/bold red]: anyone who reaches the port can read every "
                "agent's state, forge tasks, cancel instances and rewrite the registry"
            )
        else:
            hint = "" if data_dir is None else f" (set DAGR_DATA_DIR={data_dir} for the CLI to find them)"
            err_console.print(f"[green]credentials[/green] admin, host, submitter in {credentials}{hint}")

        async def main() -> None:
            stop = asyncio.Event()
            _stop_on_signals(stop)
            async with await Mesh.connect(server.options(Role.ADMIN)) as admin:
                await admin.ensure_layout()
            mesh = await Mesh.connect(
                replace(
                    server.options(Role.HOST),
                    max_reconnect_attempts=-1,
                    name=f"dagr-host@{socket.gethostname()}",
                )
            )
            try:
                err_console.print(f"[green]host[/green] running {concurrency} slots. Ctrl-C to stop.")
                await serve_host(
                    mesh,
                    concurrency=concurrency,
                    in_flight=in_flight,
                    stop=stop,
                    http=policy,
                    models=model_config,
                    record_model_text=record_model_text,
                )
            finally:
                await mesh.close()

        run_async(main)
        err_console.print("stopped; data kept in " + str(store))
    finally:
        server.stop()


@with_connection
def host_command(
    concurrency: ConcurrencyFlag = 8,
    in_flight: InFlightFlag = None,
    replicas: Annotated[
        int,
        typer.Option(
            "--replicas", min=1, max=5, help="Stream replicas if this host lays out a new deployment."
        ),
    ] = 1,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Threads running wasm at most (default: one per slot)."),
    ] = None,
    specialist_concurrency: Annotated[
        int | None,
        typer.Option(
            "--specialist-concurrency",
            min=1,
            help="Slots one specialist may hold (default: half, at least 1).",
        ),
    ] = None,
    trusted_publishers: Annotated[
        str | None,
        typer.Option(
            "--trusted-publishers",
            envvar="DAGR_TRUSTED_PUBLISHERS",
            help="Comma-separated nkey public keys: run only modules signed by one of them "
            "(others end dead, with the reason).",
        ),
    ] = None,
    secrets: SecretsFlag = None,
    http_allow_private: AllowPrivateFlag = False,
    models: ModelsFlag = None,
    record_model_text: RecordModelTextFlag = False,
    *,
    connection: Connection,
) -> None:
    """Run a host for an existing NATS server or cluster, in the foreground. Ctrl-C stops it gracefully.

    Example: dagr host --nats nats://10.0.0.5:4222,nats://10.0.0.6:4222 --concurrency 16 --replicas 3
    """
    check_slots(concurrency, in_flight)
    options = connection.options(for_host=True)
    trusted = frozenset(key.strip() for key in (trusted_publishers or "").split(",") if key.strip())
    policy = http_policy(secrets, allow_private=http_allow_private)
    model_config = load_models(models) if models is not None else None

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        mesh = await Mesh.connect(options, layout=Layout(replicas=replicas))
        try:
            err_console.print(f"[green]host[/green] on {', '.join(options.servers)}, {concurrency} slots")
            await serve_host(
                mesh,
                concurrency=concurrency,
                in_flight=in_flight,
                stop=stop,
                workers=workers,
                specialist_concurrency=specialist_concurrency,
                trusted_publishers=trusted,
                http=policy,
                models=model_config,
                record_model_text=record_model_text,
            )
        finally:
            await mesh.close()

    run_async(main)


@with_connection
def deploy_command(
    agent: Annotated[Path, typer.Argument(help="An agent directory (built on the fly) or a built .wasm.")],
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Its dagr.toml (default: AGENT/dagr.toml).")
    ] = None,
    approve_grants: ApproveGrants = False,
    sign: Annotated[
        Path | None,
        typer.Option(
            "--sign",
            help="Sign the module with this nkey seed: hosts started with --trusted-publishers run "
            "only modules signed by one of their keys.",
        ),
    ] = None,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Deploy an agent as a specialist: validate it, upload its module, register a new version.

    A version that asks for more grants than the current one (a new publish subject or spawnable
    specialist, shared state, a longer suspend) is refused until --approve-grants, with the difference.

    Example: dagr deploy agents/stock-analyst
    """
    ready = prepare(agent, manifest_path=manifest)
    warn_broad_grants(ready.manifest.grants)
    signed = sign_module(sign, ready.manifest.name, ready.digest) if sign is not None else None

    async def main() -> tuple[Any, dict[str, str]]:
        async with await Mesh.connect(connection.options()) as mesh:
            version = await mesh.deploy(
                ready.manifest, ready.wasm, approve_grants=approve_grants, signed=signed
            )
            # Hosts that run only trusted publishers' modules will refuse this one: say so now.
            refused = {
                host: reason
                for host, trusted in (await mesh.host_policies()).items()
                if (reason := verify_module(version.name, ready.digest, signed, trusted)) is not None
            }
            return version, refused

    version, refused = run_async(main)
    for host, reason in refused.items():
        err_console.print(f"[yellow]warning:[/yellow] host {host} will not run this version: {reason}")
    if json_out:
        print_json({**version.to_json(), "refused_by": refused})
    else:
        stdout_console.print(
            f"deployed [bold]{version.name}[/bold] version {version.version} "
            f"(module {ready.digest[:12]}, {len(ready.wasm) / 1e6:.1f} MB) on topic {version.topic}"
            + (f", signed by {version.signer}" if version.signer else ", unsigned")
        )


@with_connection
def spawn_command(
    name: Annotated[str, typer.Argument(help="The specialist to spawn.")],
    context: Annotated[
        str, typer.Option("--context", help="The start context (e.g. a task description).")
    ] = "",
    reply_to: Annotated[
        str | None, typer.Option("--reply-to", help="Subject the result goes to (e.g. agents.main.results).")
    ] = None,
    json_out: JsonFlag = False,
    *,
    connection: Connection,
) -> None:
    """Spawn a new instance of a specialist; prints its id.

    Example: dagr spawn stock-analyst --context "Check GME sentiment on Reddit" --reply-to agents.main.results
    """

    async def main() -> str:
        async with await Mesh.connect(connection.options()) as mesh:
            return await mesh.spawn(name, context, reply_to=reply_to)

    instance = run_async(main)
    if json_out:
        print_json({"id": instance, "specialist": name, "reply_to": reply_to})
    else:
        stdout_console.print(instance)
