"""A small pure-Python CBOR codec (RFC 8949 subset) for agents running inside WebAssembly.

cbor2 6.x is a native Rust extension and cannot load in a componentize-py guest, so the SDK carries
its own codec. It covers what dagr payloads use:

* integers in the 64-bit range (-2**64 .. 2**64-1, major types 0 and 1; no bignum tags),
* byte strings and text strings, arrays and maps,
* ``false``, ``true``, ``null``,
* floats: always encoded as float64; float16, float32 and float64 are decoded.

Encoding always writes definite lengths. Decoding also accepts indefinite-length strings, arrays
and maps, and skips the self-describe tag 55799; every other tag, ``undefined``, other simple values
and reserved encodings are rejected. Every failure is a ``ValueError`` that says what is wrong and
where. Nesting is capped at ``MAX_DEPTH`` both ways, so a cyclic structure or a hostile payload
cannot exhaust the stack.

Only the standard library is imported: the host imports this module too, without the bindings.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["MAX_DEPTH", "dumps", "loads"]

#: Deepest nesting of arrays and maps accepted by ``dumps`` and ``loads``.
MAX_DEPTH = 256

_UINT64_MAX = 2**64 - 1
_BREAK = 0xFF
_SELF_DESCRIBE_TAG = 55799

_MAJOR_UINT = 0
_MAJOR_NEGINT = 1
_MAJOR_BYTES = 2
_MAJOR_TEXT = 3
_MAJOR_ARRAY = 4
_MAJOR_MAP = 5
_MAJOR_TAG = 6
_MAJOR_SIMPLE = 7

_FALSE = b"\xf4"
_TRUE = b"\xf5"
_NULL = b"\xf6"

_pack_f64 = struct.Struct(">d").pack
_unpack_f16 = struct.Struct(">e").unpack_from
_unpack_f32 = struct.Struct(">f").unpack_from
_unpack_f64 = struct.Struct(">d").unpack_from


def dumps(value: object) -> bytes:
    """Encode ``value`` as CBOR.

    Accepted: ``None``, ``bool``, ``int`` (64-bit range), ``float``, ``str``, ``bytes``,
    ``bytearray``, ``memoryview``, ``list``, ``tuple`` and ``dict`` whose keys are themselves
    encodable. Raises ``ValueError`` for anything else, for integers outside the 64-bit range and
    for structures nested deeper than ``MAX_DEPTH`` (which includes cycles).
    """
    if isinstance(value, bytes):
        # The common "return raw bytes" case: one copy instead of two (matters for big payloads).
        head = bytearray()
        _head(_MAJOR_BYTES, len(value), head)
        return bytes(head) + value
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Decode exactly one CBOR data item from ``data``.

    Arrays become ``list``, maps become ``dict`` (array keys become tuples so they can be
    hashed), byte strings ``bytes``, text strings ``str``. Raises ``ValueError`` on truncated or
    malformed input, unsupported items (tags, ``undefined``, other simple values), invalid UTF-8,
    unhashable map keys, nesting deeper than ``MAX_DEPTH`` and bytes left over after the item.
    """
    decoder = _Decoder(bytes(data))
    value = decoder.item(0)
    if decoder.pos != len(decoder.data):
        extra = len(decoder.data) - decoder.pos
        raise ValueError(f"CBOR: {extra} unexpected byte(s) after the data item at offset {decoder.pos}")
    return value


def _head(major: int, n: int, out: bytearray) -> None:
    """Append the initial byte and argument for ``major`` with the shortest encoding of ``n``."""
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out += n.to_bytes(2, "big")
    elif n < 0x100000000:
        out.append(mt | 26)
        out += n.to_bytes(4, "big")
    else:
        out.append(mt | 27)
        out += n.to_bytes(8, "big")


def _encode(value: object, out: bytearray, depth: int) -> None:
    # bool before int: bool is a subclass of int.
    if value is None:
        out += _NULL
    elif value is True:
        out += _TRUE
    elif value is False:
        out += _FALSE
    elif isinstance(value, int):
        if 0 <= value <= _UINT64_MAX:
            _head(_MAJOR_UINT, value, out)
        elif -(2**64) <= value < 0:
            _head(_MAJOR_NEGINT, -1 - value, out)
        else:
            raise ValueError(
                f"CBOR: integer {value} is outside the 64-bit range this codec supports "
                "(-2**64 .. 2**64-1); encode it as a string instead"
            )
    elif isinstance(value, float):
        out.append(0xFB)
        out += _pack_f64(value)
    elif isinstance(value, str):
        try:
            raw = value.encode()
        except UnicodeEncodeError:
            raise ValueError(
                "CBOR: text strings must be valid Unicode; this one holds a lone surrogate"
            ) from None
        _head(_MAJOR_TEXT, len(raw), out)
        out += raw
    elif isinstance(value, bytes | bytearray | memoryview):
        raw_bytes = value.tobytes() if isinstance(value, memoryview) else value
        _head(_MAJOR_BYTES, len(raw_bytes), out)
        out += raw_bytes
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"CBOR: nesting deeper than {MAX_DEPTH} levels (or a cycle) cannot be encoded")
        _head(_MAJOR_ARRAY, len(value), out)
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise ValueError(f"CBOR: nesting deeper than {MAX_DEPTH} levels (or a cycle) cannot be encoded")
        _head(_MAJOR_MAP, len(value), out)
        for key, item in value.items():
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    else:
        raise ValueError(
            f"CBOR: cannot encode a value of type {type(value).__qualname__}; use None, bool, int, "
            "float, str, bytes, list, tuple or dict (convert other objects first)"
        )


class _Decoder:
    """Cursor over one input buffer; every read checks bounds and reports the offset."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ValueError(
                f"CBOR: truncated input: needed {n} byte(s) at offset {self.pos}, "
                f"only {len(self.data) - self.pos} left"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def _byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError(f"CBOR: truncated input: expected a data item at offset {self.pos}")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def _argument(self, info: int, start: int) -> int:
        """The argument encoded by additional information ``info`` (0..27)."""
        if info < 24:
            return info
        if info == 24:
            return self._byte()
        if info == 25:
            return int.from_bytes(self._take(2), "big")
        if info == 26:
            return int.from_bytes(self._take(4), "big")
        if info == 27:
            return int.from_bytes(self._take(8), "big")
        if info == 31:
            raise ValueError(f"CBOR: indefinite length is not valid for the item at offset {start}")
        raise ValueError(f"CBOR: reserved additional information {info} at offset {start}")

    def _count(self, info: int, start: int, min_item_bytes: int) -> int:
        """A definite length, checked against what is left so a bogus length fails fast."""
        n = self._argument(info, start)
        if n * min_item_bytes > len(self.data) - self.pos:
            raise ValueError(
                f"CBOR: truncated input: the item at offset {start} declares length {n}, "
                f"but only {len(self.data) - self.pos} byte(s) are left"
            )
        return n

    def item(self, depth: int) -> Any:
        start = self.pos
        initial = self._byte()
        major, info = initial >> 5, initial & 0x1F

        if major == _MAJOR_UINT:
            return self._argument(info, start)
        if major == _MAJOR_NEGINT:
            return -1 - self._argument(info, start)
        if major == _MAJOR_BYTES:
            if info == 31:
                return self._chunks(_MAJOR_BYTES, start)
            return self._take(self._count(info, start, 1))
        if major == _MAJOR_TEXT:
            if info == 31:
                return self._utf8(self._chunks(_MAJOR_TEXT, start), start)
            return self._utf8(self._take(self._count(info, start, 1)), start)
        if major == _MAJOR_ARRAY:
            self._check_depth(depth, start)
            if info == 31:
                items: list[Any] = []
                while not self._at_break():
                    items.append(self.item(depth + 1))
                return items
            return [self.item(depth + 1) for _ in range(self._count(info, start, 1))]
        if major == _MAJOR_MAP:
            self._check_depth(depth, start)
            result: dict[Any, Any] = {}
            if info == 31:
                while not self._at_break():
                    self._map_entry(result, depth, start)
            else:
                for _ in range(self._count(info, start, 2)):
                    self._map_entry(result, depth, start)
            return result
        if major == _MAJOR_TAG:
            tag = self._argument(info, start)
            if tag == _SELF_DESCRIBE_TAG:
                # Counted as a level: 5,000 nested tags must not recurse 5,000 frames deep.
                self._check_depth(depth, start)
                return self.item(depth + 1)
            raise ValueError(f"CBOR: tag {tag} at offset {start} is not supported (no tags, no bignums)")
        return self._simple(info, start)

    def _simple(self, info: int, start: int) -> Any:
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 25:
            return float(_unpack_f16(self._take(2))[0])
        if info == 26:
            return float(_unpack_f32(self._take(4))[0])
        if info == 27:
            return float(_unpack_f64(self._take(8))[0])
        if info == 31:
            raise ValueError(f"CBOR: unexpected break (0xff) at offset {start}")
        if info == 23:
            raise ValueError(f"CBOR: 'undefined' at offset {start} is not supported")
        if info in (28, 29, 30):
            raise ValueError(f"CBOR: reserved additional information {info} at offset {start}")
        raise ValueError(f"CBOR: simple value at offset {start} is not supported (only false, true, null)")

    def _map_entry(self, result: dict[Any, Any], depth: int, start: int) -> None:
        key = self.item(depth + 1)
        if isinstance(key, list):
            key = _freeze(key)
        try:
            hash(key)
        except TypeError:
            raise ValueError(
                f"CBOR: map at offset {start} has a key of type {type(key).__name__}, which cannot be "
                "a Python dict key"
            ) from None
        result[key] = self.item(depth + 1)

    def _at_break(self) -> bool:
        if self.pos >= len(self.data):
            raise ValueError(f"CBOR: truncated input: indefinite-length item not closed by offset {self.pos}")
        if self.data[self.pos] == _BREAK:
            self.pos += 1
            return True
        return False

    def _chunks(self, major: int, start: int) -> bytes:
        """The concatenated chunks of an indefinite-length byte or text string."""
        parts: list[bytes] = []
        while not self._at_break():
            chunk_start = self.pos
            initial = self._byte()
            if initial >> 5 != major or initial & 0x1F == 31:
                raise ValueError(
                    f"CBOR: indefinite-length string at offset {start} holds an invalid chunk at "
                    f"offset {chunk_start} (chunks must be definite strings of the same type)"
                )
            chunk = self._take(self._count(initial & 0x1F, chunk_start, 1))
            # Text chunks must each be valid UTF-8 on their own (RFC 8949 3.2.3).
            if major == _MAJOR_TEXT:
                self._utf8(chunk, chunk_start)
            parts.append(chunk)
        return b"".join(parts)

    @staticmethod
    def _utf8(raw: bytes, start: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"CBOR: text string at offset {start} is not valid UTF-8: {exc.reason}"
            ) from None

    @staticmethod
    def _check_depth(depth: int, start: int) -> None:
        if depth >= MAX_DEPTH:
            raise ValueError(f"CBOR: nesting deeper than {MAX_DEPTH} levels at offset {start}")


def _freeze(value: Any) -> Any:
    """Arrays used as map keys become tuples (recursively) so they can be hashed."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value
