"""WASI 0.2 as dagr provides it: what a guest's runtime needs, and nothing that reaches the machine.

wasmtime's own WASI (``linker.add_wasip2()``) is not used. It blocks the calling thread in sleeps
and polls, out of reach of the epoch deadline (an agent's ``time.sleep(4)`` ran 4 s against a 1 s
deadline), and it puts real filesystem and socket code within reach of every guest. Instead the
host implements the interfaces a componentize-py agent imports, in Python, over a per-invocation
table of resources:

- **clocks and polling**: a pollable is a moment (or always ready). ``poll`` sleeps until the
  earliest one, but never past the invocation's deadline: a wait that would end after it stops the
  guest at once with a ``deadline`` error, so no guest outlives its deadline whatever it waits on;
- **stdio**: stdin is empty and closed; stdout and stderr go to the invocation's capped log;
- **environment**: no variables, no arguments, no working directory; ``exit`` ends the invocation;
- **random**: the host's CSPRNG, at most ``MAX_RANDOM_BYTES`` per call;
- **filesystem and sockets**: no preopened directory, no socket can be created, no name resolves.
  The methods on descriptors and sockets exist only so that components importing them link: no
  guest can hold such a handle, so they are unreachable, and trap if ever called.

Every function is declared with its exact signature (the text ``_types.render_func`` produces): a
component whose imports differ in any type is refused at load (``_validate.py``), so the values
reaching these functions have the shapes written here. Each call counts against
``Limits.max_host_calls`` like a dagr call: each one costs host CPU under the GIL.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wasmtime import WasmtimeError
from wasmtime.component import Record, ResourceAny, ResourceHost, Variant

__all__ = [
    "MAX_RANDOM_BYTES",
    "RESOURCE_IDS",
    "WASI_INTERFACES",
    "WASI_VERSION",
    "Interface",
    "WasiCall",
    "WasiTable",
    "expand",
    "wasi_impl",
]

#: The version the host implements; imports of older 0.2.x versions link to it (semver).
WASI_VERSION = "0.2.9"

#: The largest random buffer one call may ask for: more would make the host allocate for the guest.
MAX_RANDOM_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Interface:
    """What one interface declares: its resources, and each function's exact signature."""

    resources: tuple[str, ...]
    functions: dict[str, str]


def expand(signature: str) -> str:
    """A table signature with its ``$ALIAS`` types written out."""
    for name, text in _ALIASES.items():
        signature = signature.replace(f"${name}", text)
    return signature


# Types that many signatures share, substituted for ``$NAME`` in the table below.
_ALIASES = {
    "FS_ERROR": "enum{access, would-block, already, bad-descriptor, busy, deadlock, quota, exist, file-too-large, illegal-byte-sequence, in-progress, interrupted, invalid, io, is-directory, loop, too-many-links, message-size, name-too-long, no-device, no-entry, no-lock, insufficient-memory, insufficient-space, not-directory, not-empty, not-recoverable, unsupported, no-tty, no-such-device, overflow, not-permitted, pipe, read-only, invalid-seek, text-file-busy, cross-device}",
    "NET_ERROR": "enum{unknown, access-denied, not-supported, invalid-argument, out-of-memory, timeout, concurrency-conflict, not-in-progress, would-block, invalid-state, new-socket-limit, address-not-bindable, address-in-use, remote-unreachable, connection-refused, connection-reset, connection-aborted, datagram-too-large, name-unresolvable, temporary-resolver-failure, permanent-resolver-failure}",
    "STREAM_ERROR": "variant{last-operation-failed(own<error>), closed}",
    "DESCRIPTOR_TYPE": "enum{unknown, block-device, character-device, directory, fifo, symbolic-link, regular-file, socket}",
    "NEW_TIMESTAMP": "variant{no-change, now, timestamp(record{seconds: u64, nanoseconds: u32})}",
    "IP_SOCKET_ADDRESS": "variant{ipv4(record{port: u16, address: tuple<u8, u8, u8, u8>}), ipv6(record{port: u16, flow-info: u32, address: tuple<u16, u16, u16, u16, u16, u16, u16, u16>, scope-id: u32})}",
    "IP_ADDRESS": "variant{ipv4(tuple<u8, u8, u8, u8>), ipv6(tuple<u16, u16, u16, u16, u16, u16, u16, u16>)}",
    "DATETIME": "record{seconds: u64, nanoseconds: u32}",
}


_TABLE: dict[str, Interface] = {
    "wasi:io/poll": Interface(
        resources=("pollable",),
        functions={
            "[method]pollable.block": "func(self: borrow<pollable>)",
            "poll": "func(in: list<borrow<pollable>>) -> list<u32>",
            "[method]pollable.ready": "func(self: borrow<pollable>) -> bool",
        },
    ),
    "wasi:clocks/monotonic-clock": Interface(
        resources=("pollable",),
        functions={
            "now": "func() -> u64",
            "resolution": "func() -> u64",
            "subscribe-instant": "func(when: u64) -> own<pollable>",
            "subscribe-duration": "func(when: u64) -> own<pollable>",
        },
    ),
    "wasi:clocks/wall-clock": Interface(
        resources=(),
        functions={
            "now": "func() -> $DATETIME",
            "resolution": "func() -> $DATETIME",
        },
    ),
    "wasi:random/random": Interface(
        resources=(),
        functions={
            "get-random-bytes": "func(len: u64) -> list<u8>",
            "get-random-u64": "func() -> u64",
        },
    ),
    "wasi:random/insecure": Interface(
        resources=(),
        functions={
            "get-insecure-random-bytes": "func(len: u64) -> list<u8>",
            "get-insecure-random-u64": "func() -> u64",
        },
    ),
    "wasi:random/insecure-seed": Interface(
        resources=(),
        functions={
            "insecure-seed": "func() -> tuple<u64, u64>",
        },
    ),
    "wasi:io/error": Interface(
        resources=("error",),
        functions={
            "[method]error.to-debug-string": "func(self: borrow<error>) -> string",
        },
    ),
    "wasi:io/streams": Interface(
        resources=("error", "input-stream", "output-stream", "pollable"),
        functions={
            "[method]input-stream.read": "func(self: borrow<input-stream>, len: u64) -> result<list<u8>, $STREAM_ERROR>",
            "[method]input-stream.subscribe": "func(self: borrow<input-stream>) -> own<pollable>",
            "[method]output-stream.check-write": "func(self: borrow<output-stream>) -> result<u64, $STREAM_ERROR>",
            "[method]output-stream.write": "func(self: borrow<output-stream>, contents: list<u8>) -> result<_, $STREAM_ERROR>",
            "[method]output-stream.blocking-write-and-flush": "func(self: borrow<output-stream>, contents: list<u8>) -> result<_, $STREAM_ERROR>",
            "[method]output-stream.blocking-flush": "func(self: borrow<output-stream>) -> result<_, $STREAM_ERROR>",
            "[method]output-stream.subscribe": "func(self: borrow<output-stream>) -> own<pollable>",
            "[method]input-stream.blocking-read": "func(self: borrow<input-stream>, len: u64) -> result<list<u8>, $STREAM_ERROR>",
            "[method]input-stream.skip": "func(self: borrow<input-stream>, len: u64) -> result<u64, $STREAM_ERROR>",
            "[method]input-stream.blocking-skip": "func(self: borrow<input-stream>, len: u64) -> result<u64, $STREAM_ERROR>",
            "[method]output-stream.flush": "func(self: borrow<output-stream>) -> result<_, $STREAM_ERROR>",
            "[method]output-stream.write-zeroes": "func(self: borrow<output-stream>, len: u64) -> result<_, $STREAM_ERROR>",
            "[method]output-stream.blocking-write-zeroes-and-flush": "func(self: borrow<output-stream>, len: u64) -> result<_, $STREAM_ERROR>",
            "[method]output-stream.splice": "func(self: borrow<output-stream>, src: borrow<input-stream>, len: u64) -> result<u64, $STREAM_ERROR>",
            "[method]output-stream.blocking-splice": "func(self: borrow<output-stream>, src: borrow<input-stream>, len: u64) -> result<u64, $STREAM_ERROR>",
        },
    ),
    "wasi:cli/stdout": Interface(
        resources=("output-stream",),
        functions={
            "get-stdout": "func() -> own<output-stream>",
        },
    ),
    "wasi:cli/stderr": Interface(
        resources=("output-stream",),
        functions={
            "get-stderr": "func() -> own<output-stream>",
        },
    ),
    "wasi:cli/stdin": Interface(
        resources=("input-stream",),
        functions={
            "get-stdin": "func() -> own<input-stream>",
        },
    ),
    "wasi:cli/environment": Interface(
        resources=(),
        functions={
            "get-environment": "func() -> list<tuple<string, string>>",
            "get-arguments": "func() -> list<string>",
            "initial-cwd": "func() -> option<string>",
        },
    ),
    "wasi:cli/exit": Interface(
        resources=(),
        functions={
            "exit": "func(status: result)",
        },
    ),
    "wasi:cli/terminal-input": Interface(
        resources=("terminal-input",),
        functions={},
    ),
    "wasi:cli/terminal-output": Interface(
        resources=("terminal-output",),
        functions={},
    ),
    "wasi:cli/terminal-stdin": Interface(
        resources=("terminal-input",),
        functions={
            "get-terminal-stdin": "func() -> option<own<terminal-input>>",
        },
    ),
    "wasi:cli/terminal-stdout": Interface(
        resources=("terminal-output",),
        functions={
            "get-terminal-stdout": "func() -> option<own<terminal-output>>",
        },
    ),
    "wasi:cli/terminal-stderr": Interface(
        resources=("terminal-output",),
        functions={
            "get-terminal-stderr": "func() -> option<own<terminal-output>>",
        },
    ),
    "wasi:filesystem/types": Interface(
        resources=("descriptor", "directory-entry-stream", "input-stream", "output-stream"),
        functions={
            "[method]descriptor.read-via-stream": "func(self: borrow<descriptor>, offset: u64) -> result<own<input-stream>, $FS_ERROR>",
            "[method]descriptor.write-via-stream": "func(self: borrow<descriptor>, offset: u64) -> result<own<output-stream>, $FS_ERROR>",
            "[method]descriptor.append-via-stream": "func(self: borrow<descriptor>) -> result<own<output-stream>, $FS_ERROR>",
            "[method]descriptor.advise": "func(self: borrow<descriptor>, offset: u64, length: u64, advice: enum{normal, sequential, random, will-need, dont-need, no-reuse}) -> result<_, $FS_ERROR>",
            "[method]descriptor.sync-data": "func(self: borrow<descriptor>) -> result<_, $FS_ERROR>",
            "[method]descriptor.get-flags": "func(self: borrow<descriptor>) -> result<flags{read, write, file-integrity-sync, data-integrity-sync, requested-write-sync, mutate-directory}, $FS_ERROR>",
            "[method]descriptor.set-size": "func(self: borrow<descriptor>, size: u64) -> result<_, $FS_ERROR>",
            "[method]descriptor.set-times": "func(self: borrow<descriptor>, data-access-timestamp: $NEW_TIMESTAMP, data-modification-timestamp: $NEW_TIMESTAMP) -> result<_, $FS_ERROR>",
            "[method]descriptor.read": "func(self: borrow<descriptor>, length: u64, offset: u64) -> result<tuple<list<u8>, bool>, $FS_ERROR>",
            "[method]descriptor.write": "func(self: borrow<descriptor>, buffer: list<u8>, offset: u64) -> result<u64, $FS_ERROR>",
            "[method]descriptor.read-directory": "func(self: borrow<descriptor>) -> result<own<directory-entry-stream>, $FS_ERROR>",
            "[method]descriptor.sync": "func(self: borrow<descriptor>) -> result<_, $FS_ERROR>",
            "[method]descriptor.create-directory-at": "func(self: borrow<descriptor>, path: string) -> result<_, $FS_ERROR>",
            "[method]descriptor.stat": "func(self: borrow<descriptor>) -> result<record{type: $DESCRIPTOR_TYPE, link-count: u64, size: u64, data-access-timestamp: option<$DATETIME>, data-modification-timestamp: option<$DATETIME>, status-change-timestamp: option<$DATETIME>}, $FS_ERROR>",
            "[method]descriptor.stat-at": "func(self: borrow<descriptor>, path-flags: flags{symlink-follow}, path: string) -> result<record{type: $DESCRIPTOR_TYPE, link-count: u64, size: u64, data-access-timestamp: option<$DATETIME>, data-modification-timestamp: option<$DATETIME>, status-change-timestamp: option<$DATETIME>}, $FS_ERROR>",
            "[method]descriptor.set-times-at": "func(self: borrow<descriptor>, path-flags: flags{symlink-follow}, path: string, data-access-timestamp: $NEW_TIMESTAMP, data-modification-timestamp: $NEW_TIMESTAMP) -> result<_, $FS_ERROR>",
            "[method]descriptor.link-at": "func(self: borrow<descriptor>, old-path-flags: flags{symlink-follow}, old-path: string, new-descriptor: borrow<descriptor>, new-path: string) -> result<_, $FS_ERROR>",
            "[method]descriptor.open-at": "func(self: borrow<descriptor>, path-flags: flags{symlink-follow}, path: string, open-flags: flags{create, directory, exclusive, truncate}, flags: flags{read, write, file-integrity-sync, data-integrity-sync, requested-write-sync, mutate-directory}) -> result<own<descriptor>, $FS_ERROR>",
            "[method]descriptor.readlink-at": "func(self: borrow<descriptor>, path: string) -> result<string, $FS_ERROR>",
            "[method]descriptor.remove-directory-at": "func(self: borrow<descriptor>, path: string) -> result<_, $FS_ERROR>",
            "[method]descriptor.rename-at": "func(self: borrow<descriptor>, old-path: string, new-descriptor: borrow<descriptor>, new-path: string) -> result<_, $FS_ERROR>",
            "[method]descriptor.symlink-at": "func(self: borrow<descriptor>, old-path: string, new-path: string) -> result<_, $FS_ERROR>",
            "[method]descriptor.unlink-file-at": "func(self: borrow<descriptor>, path: string) -> result<_, $FS_ERROR>",
            "[method]descriptor.metadata-hash": "func(self: borrow<descriptor>) -> result<record{lower: u64, upper: u64}, $FS_ERROR>",
            "[method]descriptor.metadata-hash-at": "func(self: borrow<descriptor>, path-flags: flags{symlink-follow}, path: string) -> result<record{lower: u64, upper: u64}, $FS_ERROR>",
            "[method]directory-entry-stream.read-directory-entry": "func(self: borrow<directory-entry-stream>) -> result<option<record{type: $DESCRIPTOR_TYPE, name: string}>, $FS_ERROR>",
        },
    ),
    "wasi:filesystem/preopens": Interface(
        resources=("descriptor",),
        functions={
            "get-directories": "func() -> list<tuple<own<descriptor>, string>>",
        },
    ),
    "wasi:sockets/network": Interface(
        resources=("network",),
        functions={},
    ),
    "wasi:sockets/instance-network": Interface(
        resources=("network",),
        functions={
            "instance-network": "func() -> own<network>",
        },
    ),
    "wasi:sockets/udp": Interface(
        resources=(
            "incoming-datagram-stream",
            "network",
            "outgoing-datagram-stream",
            "pollable",
            "udp-socket",
        ),
        functions={
            "[method]udp-socket.start-bind": "func(self: borrow<udp-socket>, network: borrow<network>, local-address: $IP_SOCKET_ADDRESS) -> result<_, $NET_ERROR>",
            "[method]udp-socket.finish-bind": "func(self: borrow<udp-socket>) -> result<_, $NET_ERROR>",
            "[method]udp-socket.stream": "func(self: borrow<udp-socket>, remote-address: option<$IP_SOCKET_ADDRESS>) -> result<tuple<own<incoming-datagram-stream>, own<outgoing-datagram-stream>>, $NET_ERROR>",
            "[method]udp-socket.local-address": "func(self: borrow<udp-socket>) -> result<$IP_SOCKET_ADDRESS, $NET_ERROR>",
            "[method]udp-socket.remote-address": "func(self: borrow<udp-socket>) -> result<$IP_SOCKET_ADDRESS, $NET_ERROR>",
            "[method]udp-socket.unicast-hop-limit": "func(self: borrow<udp-socket>) -> result<u8, $NET_ERROR>",
            "[method]udp-socket.set-unicast-hop-limit": "func(self: borrow<udp-socket>, value: u8) -> result<_, $NET_ERROR>",
            "[method]udp-socket.receive-buffer-size": "func(self: borrow<udp-socket>) -> result<u64, $NET_ERROR>",
            "[method]udp-socket.set-receive-buffer-size": "func(self: borrow<udp-socket>, value: u64) -> result<_, $NET_ERROR>",
            "[method]udp-socket.send-buffer-size": "func(self: borrow<udp-socket>) -> result<u64, $NET_ERROR>",
            "[method]udp-socket.set-send-buffer-size": "func(self: borrow<udp-socket>, value: u64) -> result<_, $NET_ERROR>",
            "[method]udp-socket.subscribe": "func(self: borrow<udp-socket>) -> own<pollable>",
            "[method]incoming-datagram-stream.receive": "func(self: borrow<incoming-datagram-stream>, max-results: u64) -> result<list<record{data: list<u8>, remote-address: $IP_SOCKET_ADDRESS}>, $NET_ERROR>",
            "[method]incoming-datagram-stream.subscribe": "func(self: borrow<incoming-datagram-stream>) -> own<pollable>",
            "[method]outgoing-datagram-stream.check-send": "func(self: borrow<outgoing-datagram-stream>) -> result<u64, $NET_ERROR>",
            "[method]outgoing-datagram-stream.send": "func(self: borrow<outgoing-datagram-stream>, datagrams: list<record{data: list<u8>, remote-address: option<$IP_SOCKET_ADDRESS>}>) -> result<u64, $NET_ERROR>",
            "[method]outgoing-datagram-stream.subscribe": "func(self: borrow<outgoing-datagram-stream>) -> own<pollable>",
        },
    ),
    "wasi:sockets/udp-create-socket": Interface(
        resources=("udp-socket",),
        functions={
            "create-udp-socket": "func(address-family: enum{ipv4, ipv6}) -> result<own<udp-socket>, $NET_ERROR>",
        },
    ),
    "wasi:sockets/tcp": Interface(
        resources=("input-stream", "network", "output-stream", "pollable", "tcp-socket"),
        functions={
            "[method]tcp-socket.start-bind": "func(self: borrow<tcp-socket>, network: borrow<network>, local-address: $IP_SOCKET_ADDRESS) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.finish-bind": "func(self: borrow<tcp-socket>) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.start-connect": "func(self: borrow<tcp-socket>, network: borrow<network>, remote-address: $IP_SOCKET_ADDRESS) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.finish-connect": "func(self: borrow<tcp-socket>) -> result<tuple<own<input-stream>, own<output-stream>>, $NET_ERROR>",
            "[method]tcp-socket.start-listen": "func(self: borrow<tcp-socket>) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.finish-listen": "func(self: borrow<tcp-socket>) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.accept": "func(self: borrow<tcp-socket>) -> result<tuple<own<tcp-socket>, own<input-stream>, own<output-stream>>, $NET_ERROR>",
            "[method]tcp-socket.local-address": "func(self: borrow<tcp-socket>) -> result<$IP_SOCKET_ADDRESS, $NET_ERROR>",
            "[method]tcp-socket.remote-address": "func(self: borrow<tcp-socket>) -> result<$IP_SOCKET_ADDRESS, $NET_ERROR>",
            "[method]tcp-socket.is-listening": "func(self: borrow<tcp-socket>) -> bool",
            "[method]tcp-socket.set-listen-backlog-size": "func(self: borrow<tcp-socket>, value: u64) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.keep-alive-enabled": "func(self: borrow<tcp-socket>) -> result<bool, $NET_ERROR>",
            "[method]tcp-socket.set-keep-alive-enabled": "func(self: borrow<tcp-socket>, value: bool) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.keep-alive-idle-time": "func(self: borrow<tcp-socket>) -> result<u64, $NET_ERROR>",
            "[method]tcp-socket.set-keep-alive-idle-time": "func(self: borrow<tcp-socket>, value: u64) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.keep-alive-interval": "func(self: borrow<tcp-socket>) -> result<u64, $NET_ERROR>",
            "[method]tcp-socket.set-keep-alive-interval": "func(self: borrow<tcp-socket>, value: u64) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.keep-alive-count": "func(self: borrow<tcp-socket>) -> result<u32, $NET_ERROR>",
            "[method]tcp-socket.set-keep-alive-count": "func(self: borrow<tcp-socket>, value: u32) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.hop-limit": "func(self: borrow<tcp-socket>) -> result<u8, $NET_ERROR>",
            "[method]tcp-socket.set-hop-limit": "func(self: borrow<tcp-socket>, value: u8) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.receive-buffer-size": "func(self: borrow<tcp-socket>) -> result<u64, $NET_ERROR>",
            "[method]tcp-socket.set-receive-buffer-size": "func(self: borrow<tcp-socket>, value: u64) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.send-buffer-size": "func(self: borrow<tcp-socket>) -> result<u64, $NET_ERROR>",
            "[method]tcp-socket.set-send-buffer-size": "func(self: borrow<tcp-socket>, value: u64) -> result<_, $NET_ERROR>",
            "[method]tcp-socket.subscribe": "func(self: borrow<tcp-socket>) -> own<pollable>",
            "[method]tcp-socket.shutdown": "func(self: borrow<tcp-socket>, shutdown-type: enum{receive, send, both}) -> result<_, $NET_ERROR>",
        },
    ),
    "wasi:sockets/tcp-create-socket": Interface(
        resources=("tcp-socket",),
        functions={
            "create-tcp-socket": "func(address-family: enum{ipv4, ipv6}) -> result<own<tcp-socket>, $NET_ERROR>",
        },
    ),
    "wasi:sockets/ip-name-lookup": Interface(
        resources=("network", "pollable", "resolve-address-stream"),
        functions={
            "[method]resolve-address-stream.resolve-next-address": "func(self: borrow<resolve-address-stream>) -> result<option<$IP_ADDRESS>, $NET_ERROR>",
            "[method]resolve-address-stream.subscribe": "func(self: borrow<resolve-address-stream>) -> own<pollable>",
            "resolve-addresses": "func(network: borrow<network>, name: string) -> result<own<resolve-address-stream>, $NET_ERROR>",
        },
    ),
}


#: Interface (without version) -> what it declares, aliases expanded.
WASI_INTERFACES: dict[str, Interface] = {
    name: Interface(iface.resources, {f: expand(s) for f, s in iface.functions.items()})
    for name, iface in _TABLE.items()
}

#: Every resource type the host defines, by name, with the id wasmtime knows it by. One type per
#: name across interfaces: ``pollable`` in streams is the same type as in poll.
RESOURCE_IDS: dict[str, int] = {
    name: 0x6461_0000 + index
    for index, name in enumerate(sorted({r for iface in _TABLE.values() for r in iface.resources}))
}


# ---------------------------------------------------------------------------------------------
# The resources of one invocation.


@dataclass(slots=True)
class _Pollable:
    #: time.monotonic_ns() at which it becomes ready; None: ready now.
    ready_at_ns: int | None = None


@dataclass(slots=True)
class _Stream:
    name: str  # "stdin", "stdout" or "stderr"


@dataclass(slots=True)
class _Network:
    pass


@dataclass(slots=True)
class WasiTable:
    """The WASI resources one invocation holds, by representation number."""

    deadline_ns: int
    entries: dict[int, object] = field(default_factory=dict)
    next_rep: int = 1

    def add(self, resource: str, value: object) -> ResourceHost:
        rep = self.next_rep
        self.next_rep += 1
        self.entries[rep] = value
        return ResourceHost.own(rep, RESOURCE_IDS[resource])

    def drop(self, rep: int) -> None:
        self.entries.pop(rep, None)


@dataclass(frozen=True, slots=True)
class WasiCall:
    """One call's context: the invocation's table, its output sink, and the store for handles."""

    table: WasiTable
    store: Any
    output: Callable[[str, bytes], None]
    #: Records why the guest must stop (kind, message) on the invocation's Recorder.
    on_stop: Callable[[str, str], None]
    #: Handles already given back to wasmtime by reading them (``to_host`` releases a borrow).
    released: set[int] = field(default_factory=set)

    def get(self, handle: ResourceAny, kind: type[Any]) -> Any:
        self.released.add(id(handle))
        value = self.table.entries.get(handle.to_host(self.store).rep)
        if not isinstance(value, kind):
            raise WasmtimeError("dagr: a WASI handle of the wrong kind")
        return value

    def release(self, values: Any) -> None:
        """Give back every handle lent to this call that ``get`` did not read.

        wasmtime traps with "borrow handles still remain" if a host function returns holding one,
        and with "unknown handle" if one is released twice: each exactly once.
        """
        for value in values:
            if isinstance(value, ResourceAny) and id(value) not in self.released:
                self.released.add(id(value))
                value.drop(self.store)
            elif isinstance(value, list):
                self.release(value)

    def stop(self, kind: str, message: str) -> WasmtimeError:
        """Record why the guest must stop now; raise the returned error to stop it."""
        self.on_stop(kind, message)
        return WasmtimeError(f"dagr: {message}")


# ---------------------------------------------------------------------------------------------
# Implementations. Results follow wasmtime-py's conventions: a result whose cases cannot be told
# apart by Python type (``result<_, stream-error>``) takes a ``Variant``; others take the value.

_OK = Variant("ok")


def _unreachable(call: WasiCall, *_args: Any) -> Any:
    raise call.stop("trap", "called a WASI function on a handle that cannot exist")


def _poll(call: WasiCall, handles: list[ResourceAny]) -> list[int]:
    if not handles:
        raise call.stop("trap", "wasi:io/poll.poll called with nothing to wait for")
    pollables = [call.get(h, _Pollable) for h in handles]
    due = min((p.ready_at_ns or 0) for p in pollables)
    now = time.monotonic_ns()
    if due > now:
        if due > call.table.deadline_ns:
            wait_s = (due - now) / 1e9
            left_s = max(call.table.deadline_ns - now, 0) / 1e9
            raise call.stop(
                "deadline", f"waited for {wait_s:.3f} s with {left_s:.3f} s left before its deadline"
            )
        time.sleep((due - now) / 1e9)
        now = time.monotonic_ns()
    return [i for i, p in enumerate(pollables) if (p.ready_at_ns or 0) <= now]


def _block(call: WasiCall, handle: ResourceAny) -> None:
    _poll(call, [handle])


def _ready(call: WasiCall, handle: ResourceAny) -> bool:
    pollable = call.get(handle, _Pollable)
    return (pollable.ready_at_ns or 0) <= time.monotonic_ns()


def _subscribe_instant(call: WasiCall, when_ns: int) -> ResourceHost:
    return call.table.add("pollable", _Pollable(when_ns))


def _subscribe_duration(call: WasiCall, duration_ns: int) -> ResourceHost:
    return call.table.add("pollable", _Pollable(time.monotonic_ns() + duration_ns))


def _ready_pollable(call: WasiCall, _handle: ResourceAny) -> ResourceHost:
    return call.table.add("pollable", _Pollable(None))


def _datetime(ns: int) -> Record:
    record = Record()
    seconds, nanoseconds = divmod(ns, 1_000_000_000)
    setattr(record, "seconds", seconds)  # noqa: B010 - Record is a bag of WIT fields
    setattr(record, "nanoseconds", nanoseconds)  # noqa: B010
    return record


def _random_bytes(call: WasiCall, length: int) -> bytes:
    if length > MAX_RANDOM_BYTES:
        raise call.stop("quota", f"asked for {length} random bytes, more than {MAX_RANDOM_BYTES} per call")
    return os.urandom(length)


def _stream_closed(call: WasiCall, handle: ResourceAny, _length: int = 0) -> None:
    call.get(handle, _Stream)
    return None  # err(closed): stdin is empty, and nothing else is readable


def _check_write(call: WasiCall, handle: ResourceAny) -> int:
    call.get(handle, _Stream)
    return 65536


def _write(call: WasiCall, handle: ResourceAny, contents: bytes) -> Variant:
    stream = call.get(handle, _Stream)
    if stream.name == "stdin":
        raise call.stop("trap", "wrote to stdin")
    call.output(stream.name, contents)
    return _OK


def _flush(call: WasiCall, handle: ResourceAny) -> Variant:
    call.get(handle, _Stream)
    return _OK


def _write_zeroes(call: WasiCall, handle: ResourceAny, length: int) -> Variant:
    return _write(call, handle, b"\0" * min(length, 65536))


def _splice(call: WasiCall, handle: ResourceAny, source: ResourceAny, _length: int) -> None:
    call.get(handle, _Stream)
    call.get(source, _Stream)
    return None  # err(closed): the only readable stream, stdin, is empty


def _exit(call: WasiCall, *_status: Any) -> None:
    raise call.stop("exit", "called exit: an agent ends by returning from handle")


def _denied(call: WasiCall, *_args: Any) -> str:
    return "access-denied"


_IMPLEMENTATIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("wasi:io/poll", "poll"): _poll,
    ("wasi:io/poll", "[method]pollable.block"): _block,
    ("wasi:io/poll", "[method]pollable.ready"): _ready,
    ("wasi:clocks/monotonic-clock", "now"): lambda call: time.monotonic_ns(),
    ("wasi:clocks/monotonic-clock", "resolution"): lambda call: 1,
    ("wasi:clocks/monotonic-clock", "subscribe-instant"): _subscribe_instant,
    ("wasi:clocks/monotonic-clock", "subscribe-duration"): _subscribe_duration,
    ("wasi:clocks/wall-clock", "now"): lambda call: _datetime(time.time_ns()),
    ("wasi:clocks/wall-clock", "resolution"): lambda call: _datetime(1),
    ("wasi:random/random", "get-random-bytes"): _random_bytes,
    ("wasi:random/random", "get-random-u64"): lambda call: int.from_bytes(os.urandom(8), "little"),
    ("wasi:random/insecure", "get-insecure-random-bytes"): _random_bytes,
    ("wasi:random/insecure", "get-insecure-random-u64"): lambda call: random.getrandbits(64),
    ("wasi:random/insecure-seed", "insecure-seed"): lambda call: (
        random.getrandbits(64),
        random.getrandbits(64),
    ),
    ("wasi:io/streams", "[method]input-stream.read"): _stream_closed,
    ("wasi:io/streams", "[method]input-stream.blocking-read"): _stream_closed,
    ("wasi:io/streams", "[method]input-stream.skip"): _stream_closed,
    ("wasi:io/streams", "[method]input-stream.blocking-skip"): _stream_closed,
    ("wasi:io/streams", "[method]input-stream.subscribe"): _ready_pollable,
    ("wasi:io/streams", "[method]output-stream.check-write"): _check_write,
    ("wasi:io/streams", "[method]output-stream.write"): _write,
    ("wasi:io/streams", "[method]output-stream.blocking-write-and-flush"): _write,
    ("wasi:io/streams", "[method]output-stream.flush"): _flush,
    ("wasi:io/streams", "[method]output-stream.blocking-flush"): _flush,
    ("wasi:io/streams", "[method]output-stream.write-zeroes"): _write_zeroes,
    ("wasi:io/streams", "[method]output-stream.blocking-write-zeroes-and-flush"): _write_zeroes,
    ("wasi:io/streams", "[method]output-stream.splice"): _splice,
    ("wasi:io/streams", "[method]output-stream.blocking-splice"): _splice,
    ("wasi:io/streams", "[method]output-stream.subscribe"): _ready_pollable,
    ("wasi:cli/stdout", "get-stdout"): lambda call: call.table.add("output-stream", _Stream("stdout")),
    ("wasi:cli/stderr", "get-stderr"): lambda call: call.table.add("output-stream", _Stream("stderr")),
    ("wasi:cli/stdin", "get-stdin"): lambda call: call.table.add("input-stream", _Stream("stdin")),
    ("wasi:cli/environment", "get-environment"): lambda call: [],
    ("wasi:cli/environment", "get-arguments"): lambda call: [],
    ("wasi:cli/environment", "initial-cwd"): lambda call: None,
    ("wasi:cli/exit", "exit"): _exit,
    ("wasi:cli/terminal-stdin", "get-terminal-stdin"): lambda call: None,
    ("wasi:cli/terminal-stdout", "get-terminal-stdout"): lambda call: None,
    ("wasi:cli/terminal-stderr", "get-terminal-stderr"): lambda call: None,
    ("wasi:filesystem/preopens", "get-directories"): lambda call: [],
    ("wasi:sockets/instance-network", "instance-network"): lambda call: call.table.add("network", _Network()),
    ("wasi:sockets/tcp-create-socket", "create-tcp-socket"): _denied,
    ("wasi:sockets/udp-create-socket", "create-udp-socket"): _denied,
    ("wasi:sockets/ip-name-lookup", "resolve-addresses"): _denied,
}


def wasi_impl(interface: str, function: str) -> Callable[..., Any]:
    """The implementation of ``function`` of ``interface``; unreachable methods trap."""
    return _IMPLEMENTATIONS.get((interface, function), _unreachable)
