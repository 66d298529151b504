"""Agents' outbound HTTP calls, made by the host on its event loop, never from the sandbox.

An agent's ``http.fetch`` only queues a request (``HttpCall``); once its invocation commits, a host
of its specialist makes the call here and stores the response in the instance's inbox. What this
module guarantees, whoever wrote the request:

- every hop, the first and each redirect, is checked against the agent's grants (its own and
  every ancestor's) before anything is sent; a redirect off the grant ends the call ``denied``;
- the host name is resolved here and every address checked: private, loopback, link-local,
  multicast and reserved addresses are refused unless the operator allows them (SSRF), and the
  connection goes to the address that was checked (SNI and ``Host`` keep the name), so a DNS
  answer that changes between check and connect cannot redirect it;
- secrets are host-held: a ``{{secret:NAME}}`` placeholder in a header becomes the value only on
  a hop whose URL the manifest grants that secret for; every secret value that comes back (in
  headers or body) is replaced by its placeholder before the agent can see it;
- the response body is read up to the invocation's cap; past it the call fails ``invalid``;
- no proxy from the environment, no cookies kept between calls.

Each call sends ``Idempotency-Key: <handle>``: a host killed mid-call leaves the task to another
host, which calls again (at least once towards the server; exactly once towards the agent).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx

from .invocation import HttpRequest, HttpResponse, Resolution
from .policy import Capabilities, grant_form

__all__ = ["HttpPolicy", "OutboundHttp", "placeholder"]

_PLACEHOLDER = re.compile(r"\{\{secret:([A-Z][A-Z0-9_]{0,63})\}\}")
_REDIRECTS = (301, 302, 303, 307, 308)
# They describe the bytes on the wire, not the body the agent gets (decoded, redacted): dropped.
_WIRE_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})


def placeholder(name: str) -> str:
    return f"{{{{secret:{name}}}}}"


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """What a host operator decides about agents' outbound calls."""

    #: Named secrets (``dagr host --secrets FILE``, ``DAGR_SECRET_<NAME>``); never sent to a guest.
    secrets: Mapping[str, str] = field(default_factory=dict)
    #: Allow private, loopback and link-local addresses (a lab, a test; never an edge gateway).
    allow_private: bool = False
    default_timeout_s: float = 10.0
    max_timeout_s: float = 30.0
    max_redirects: int = 5


class OutboundHttp:
    """The host's HTTP client for agents' calls. One per host; ``aclose`` when the host stops."""

    def __init__(self, policy: HttpPolicy) -> None:
        self.policy = policy
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, cookies=None)
        # Longest first: a secret that contains another is redacted whole.
        self._redactions = sorted(
            ((v.encode(), placeholder(k).encode()) for k, v in policy.secrets.items() if v),
            key=lambda pair: -len(pair[0]),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(
        self, handle: str, request: HttpRequest, capabilities: Capabilities, *, max_body_bytes: int
    ) -> Resolution:
        """Make the call; its outcome as the resolution of ``handle`` (never raises for the
        remote side's faults, which are the agent's to handle)."""
        try:
            return await self._call(handle, request, capabilities, max_body_bytes)
        except _Refused as refused:
            return self._failed(handle, refused.kind, refused.reason)
        except httpx.TimeoutException:
            return self._failed(handle, "unavailable", "the server did not answer in time")
        except (httpx.HTTPError, OSError) as exc:
            return self._failed(handle, "unavailable", f"the call failed: {type(exc).__name__}: {exc}")

    async def _call(
        self, handle: str, request: HttpRequest, capabilities: Capabilities, max_body: int
    ) -> Resolution:
        url, method, body = request.url, request.method, request.body
        timeout = min(
            request.timeout_ms / 1000 if request.timeout_ms else self.policy.default_timeout_s,
            self.policy.max_timeout_s,
        )
        for hop in range(self.policy.max_redirects + 1):
            form = grant_form(url)
            if form is None:
                raise _Refused("invalid", f"hop {hop}: {url[:200]!r} is not an http(s) URL dagr calls")
            if not capabilities.allows_http(form):
                raise _Refused("denied", f"hop {hop}: {form[:200]} is not granted (grants.http)")
            target = httpx.URL(url)
            address = await self._checked_address(target.host, target.port or _default_port(target))
            headers = self._headers(request.headers, capabilities.http_secrets(form), handle, target)
            outgoing = self._client.build_request(
                method,
                target.copy_with(host=address),
                headers=headers,
                content=body,
                timeout=timeout,
                extensions={"sni_hostname": target.host},
            )
            response = await self._client.send(outgoing, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    url = urljoin(url, location)
                    if response.status_code == 303 or (response.status_code < 303 and method == "POST"):
                        method, body = "GET", b""  # what browsers do, and what servers expect
                    continue
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > max_body:
                        raise _Refused("invalid", f"the response is over max_http_response_bytes={max_body}")
                return Resolution(
                    handle=handle,
                    kind="http",
                    response=HttpResponse(
                        status=response.status_code,
                        headers=tuple(
                            (name, self._redact(value.encode()).decode("utf-8", "replace"))
                            for name, value in response.headers.multi_items()
                            if name.lower() not in _WIRE_HEADERS
                        ),
                        body=self._redact(bytes(data)),
                    ),
                    source=form,
                )
            finally:
                await response.aclose()
        raise _Refused("invalid", f"more than {self.policy.max_redirects} redirects")

    def _headers(
        self, given: tuple[tuple[str, str], ...], granted: frozenset[str], handle: str, target: httpx.URL
    ) -> list[tuple[str, str]]:
        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            # Not granted for this URL, or unknown here: the placeholder goes out as it is.
            return self.policy.secrets.get(name, match[0]) if name in granted else match[0]

        headers = [
            (name, _PLACEHOLDER.sub(substitute, value))
            for name, value in given
            if name.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        ]
        if not any(name.lower() == "idempotency-key" for name, _ in headers):
            headers.append(("Idempotency-Key", handle))
        return [("Host", target.netloc.decode("ascii")), *headers]

    async def _checked_address(self, host: str, port: int) -> str:
        """The address to connect to: every address ``host`` resolves to must be allowed."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _Refused("unavailable", f"{host!r} does not resolve: {exc.strerror}") from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise _Refused("unavailable", f"{host!r} does not resolve")
        if not self.policy.allow_private:
            for address in addresses:
                if not _public(address):
                    raise _Refused(
                        "denied",
                        f"{host!r} resolves to {address}, a private or reserved address; hosts "
                        "call only public addresses unless the operator allows others",
                    )
        return addresses[0]

    def _redact(self, data: bytes) -> bytes:
        for value, mark in self._redactions:
            data = data.replace(value, mark)
        return data

    def _failed(self, handle: str, kind: str, reason: str) -> Resolution:
        text = self._redact(reason.encode()).decode("utf-8", "replace")
        return Resolution(handle=handle, kind="http", error=text, error_kind=kind)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED)
    )


#: Carrier-grade NAT space: not "private" to ipaddress, but never a public server.
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


class _Refused(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
