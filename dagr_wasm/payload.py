"""Payloads on the host: CBOR in, JSON-friendly values out.

Agents exchange structured data as CBOR bytes. People and ``--json`` consumers want JSON. A payload
is shown as its decoded value when it is exactly one well-formed CBOR item whose value JSON can
carry, and as base64 otherwise, tagged so the two can never be confused: ``{"cbor": value}`` or
``{"base64": "..."}``. ``from_tagged`` turns either back into the exact original bytes.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import cbor2

__all__ = ["decode_cbor", "encode_cbor", "from_tagged", "jsonable", "to_tagged"]


def encode_cbor(value: Any) -> bytes:
    return cbor2.dumps(value)


def decode_cbor(data: bytes) -> Any:
    """Decode exactly one CBOR item; trailing bytes are an error (``ValueError``)."""
    stream = io.BytesIO(data)
    try:
        value = cbor2.load(stream)
    except cbor2.CBORError as exc:
        raise ValueError(f"not CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise ValueError(f"not CBOR: {len(data) - stream.tell()} bytes after the first item")
    return value


def jsonable(value: Any) -> bool:
    """Whether ``value`` survives a trip through JSON unchanged."""
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and jsonable(v) for k, v in value.items())
    return False


def to_tagged(data: bytes) -> dict[str, Any]:
    try:
        value = decode_cbor(data)
    except ValueError:
        value = None
    else:
        if jsonable(value) and cbor2.dumps(value) == data:
            return {"cbor": value}
    return {"base64": base64.b64encode(data).decode()}


def from_tagged(tagged: Any) -> bytes:
    """The bytes a ``to_tagged`` value stands for; ``ValueError`` if it is not one."""
    if isinstance(tagged, dict) and tagged.keys() == {"cbor"}:
        return cbor2.dumps(tagged["cbor"])
    if isinstance(tagged, dict) and tagged.keys() == {"base64"} and isinstance(tagged["base64"], str):
        try:
            return base64.b64decode(tagged["base64"], validate=True)
        except ValueError:
            raise ValueError("base64 value is not valid base64") from None
    raise ValueError('a value must be {"cbor": <json>} or {"base64": "<text>"}')
