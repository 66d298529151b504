"""Payloads on the host: CBOR in, JSON-friendly values out.

Agents exchange structured data as CBOR bytes. People and ``--json`` consumers want JSON. A payload
is shown as its decoded value when it is exactly one well-formed CBOR item whose value JSON can
carry, and as base64 otherwise, tagged so the two can never be confused: ``{"cbor": value}`` or
``{"base64": "..."}``. ``from_tagged`` turns either back into the exact original bytes.

Payloads come from guests, so decoding them must never fail in a way that hurts the reader:
``decode_cbor`` refuses every CBOR tag (no shared references, hence no cycles; no bignums, hence
no 5,000-digit integers; no dates or regexes conjured from bytes) and nests at most ``MAX_DEPTH``
deep. What it refuses is shown as base64, never as an error.
"""

from __future__ import annotations

import base64
import io
import json
import math
from typing import Any

import cbor2

__all__ = [
    "MAX_DEPTH",
    "decode_cbor",
    "decode_map",
    "encode_cbor",
    "from_tagged",
    "json_or_text",
    "jsonable",
    "to_tagged",
]

#: Deepest nesting of arrays and maps a decoded payload may have.
MAX_DEPTH = 64

# Every tag cbor2 6.3 gives a meaning to (derived by tests/unit/test_payload.py): each is refused
# rather than interpreted. Tags it does not know arrive as CBORTag objects, refused below.
_SEMANTIC_TAGS = (
    0,
    1,
    2,
    3,
    4,
    5,
    25,
    28,
    29,
    30,
    35,
    36,
    37,
    52,
    54,
    100,
    256,
    258,
    260,
    261,
    1004,
    43000,
    55799,
)


def json_or_text(text: str) -> Any:
    """What a command-line value means as data: its JSON value if it is JSON, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def encode_cbor(value: Any) -> bytes:
    return cbor2.dumps(value)


class _Refused(Exception):
    pass


def _refuse_tag(*_args: Any) -> Any:
    raise _Refused("CBOR tags are not accepted in payloads")


_NO_TAGS = dict.fromkeys(_SEMANTIC_TAGS, _refuse_tag)


def decode_cbor(data: bytes) -> Any:
    """Decode exactly one tag-free CBOR item (``ValueError`` otherwise, or for trailing bytes)."""
    stream = io.BytesIO(data)
    try:
        value = cbor2.load(
            stream,
            semantic_decoders=_NO_TAGS,
            tag_hook=_refuse_tag,
            max_depth=MAX_DEPTH,
            str_errors="strict",
        )
    except (cbor2.CBORError, _Refused, RecursionError, ValueError, TypeError) as exc:
        raise ValueError(f"not CBOR dagr accepts: {exc}") from None
    if stream.tell() != len(data):
        raise ValueError(f"not CBOR: {len(data) - stream.tell()} bytes after the first item")
    return value


def decode_map(data: bytes | None) -> dict[str, Any] | None:
    """A CBOR map with text keys (a record, an envelope), or None if ``data`` is anything else."""
    try:
        value = decode_cbor(data or b"")
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None
    return value


def jsonable(value: Any) -> bool:
    """Whether ``value`` survives a trip through JSON unchanged."""
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -(2**64) <= value < 2**64  # what CBOR carries without tags; JSON prints it
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
