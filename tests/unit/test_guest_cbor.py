"""The guest SDK's pure-Python CBOR codec against the host's cbor2, both ways.

Guests cannot load cbor2 (a native extension), hosts use it: payloads must mean the same thing
on both sides. Also pins the SDK's public names and that it imports without the wasm bindings.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "guest-sdk" / "python"))

import dagr_agent
from dagr_agent import _cbor

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    23,
    24,
    255,
    256,
    65535,
    65536,
    2**32 - 1,
    2**32,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -1,
    -24,
    -25,
    -256,
    -257,
    -(2**32),
    -(2**63),
    -(2**64),
    0.0,
    -0.0,
    1.5,
    0.1,
    -4.1,
    1e300,
    5e-324,
    math.inf,
    -math.inf,
    "",
    "a",
    "IETF",
    '"\\',
    "\u00fc\u6c34\U00010151",
    "x" * 23,
    "y" * 24,
    "z" * 70_000,
    b"",
    b"\x00\x01\x02",
    bytes(range(256)) * 300,
    [],
    [1, [2, 3], [4, 5]],
    list(range(25)),
    {},
    {"a": 1, "b": [2, 3]},
    {1: 2, 3: 4},
    {b"k": "v", -5: None, 2.5: True},
    {"nested": {"deeper": {"deepest": [b"x", {"n": -(2**40)}]}}},
    [None, True, False, 0.25, "mixed", b"\xff", {"k": []}],
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_host_encodes_guest_decodes(value: Any) -> None:
    assert _cbor.loads(cbor2.dumps(value)) == value


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_host_canonical_encoding_guest_decodes(value: Any) -> None:
    # canonical=True shrinks floats to float16/float32 where exact, exercising those decoders.
    assert _cbor.loads(cbor2.dumps(value, canonical=True)) == value


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_guest_encodes_host_decodes(value: Any) -> None:
    assert cbor2.loads(_cbor.dumps(value)) == value


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_guest_round_trip(value: Any) -> None:
    assert _cbor.loads(_cbor.dumps(value)) == value


def _contains_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list | tuple):
        return any(_contains_float(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_float(k) or _contains_float(v) for k, v in value.items())
    return False


@pytest.mark.parametrize("value", [v for v in VALUES if not _contains_float(v)], ids=lambda v: repr(v)[:40])
def test_guest_encoding_is_byte_identical_to_host(value: Any) -> None:
    # Without floats (cbor2 may shrink them), both encoders write the shortest heads.
    assert _cbor.dumps(value) == cbor2.dumps(value)


def test_floats_are_always_float64() -> None:
    assert _cbor.dumps(1.5) == bytes.fromhex("fb3ff8000000000000")


def test_nan_round_trips_both_ways() -> None:
    assert math.isnan(cbor2.loads(_cbor.dumps(math.nan)))
    assert math.isnan(_cbor.loads(cbor2.dumps(math.nan)))
    assert math.isnan(_cbor.loads(bytes.fromhex("f97e00")))


def test_tuples_encode_as_arrays() -> None:
    assert _cbor.dumps((1, (2, "x"))) == cbor2.dumps([1, [2, "x"]])
    assert cbor2.loads(_cbor.dumps((1, 2))) == [1, 2]


def test_bytearray_and_memoryview_encode_as_byte_strings() -> None:
    assert _cbor.dumps(bytearray(b"ab")) == _cbor.dumps(b"ab") == _cbor.dumps(memoryview(b"ab"))


def test_array_map_keys_decode_as_tuples() -> None:
    assert _cbor.loads(cbor2.dumps({(1, (2, 3)): "v"})) == {(1, (2, 3)): "v"}


def test_accepts_bytearray_and_memoryview_input() -> None:
    data = cbor2.dumps({"a": [1, 2]})
    assert _cbor.loads(bytearray(data)) == _cbor.loads(memoryview(data)) == {"a": [1, 2]}


def test_self_describe_tag_is_skipped() -> None:
    assert _cbor.loads(bytes.fromhex("d9d9f7") + cbor2.dumps([1, "a"])) == [1, "a"]


# Decoding examples from RFC 8949 Appendix A, limited to what the codec supports; the
# indefinite-length ones are the only way to test that path (cbor2 never writes them).
RFC_VECTORS: list[tuple[str, Any]] = [
    ("00", 0),
    ("17", 23),
    ("1818", 24),
    ("1903e8", 1000),
    ("1a000f4240", 1000000),
    ("1b000000e8d4a51000", 1000000000000),
    ("1bffffffffffffffff", 18446744073709551615),
    ("3bffffffffffffffff", -18446744073709551616),
    ("20", -1),
    ("3903e7", -1000),
    ("f90000", 0.0),
    ("f93c00", 1.0),
    ("fb3ff199999999999a", 1.1),
    ("f93e00", 1.5),
    ("f97bff", 65504.0),
    ("fa47c35000", 100000.0),
    ("fa7f7fffff", 3.4028234663852886e38),
    ("fb7e37e43c8800759c", 1.0e300),
    ("f90001", 5.960464477539063e-8),
    ("f90400", 0.00006103515625),
    ("f9c400", -4.0),
    ("fbc010666666666666", -4.1),
    ("f97c00", math.inf),
    ("f9fc00", -math.inf),
    ("fa7f800000", math.inf),
    ("fb7ff0000000000000", math.inf),
    ("f4", False),
    ("f5", True),
    ("f6", None),
    ("40", b""),
    ("4401020304", b"\x01\x02\x03\x04"),
    ("60", ""),
    ("6161", "a"),
    ("6449455446", "IETF"),
    ("62225c", '"\\'),
    ("62c3bc", "\u00fc"),
    ("63e6b0b4", "\u6c34"),
    ("64f0908591", "\U00010151"),
    ("80", []),
    ("83010203", [1, 2, 3]),
    ("8301820203820405", [1, [2, 3], [4, 5]]),
    ("98190102030405060708090a0b0c0d0e0f101112131415161718181819", list(range(1, 26))),
    ("a0", {}),
    ("a201020304", {1: 2, 3: 4}),
    ("a26161016162820203", {"a": 1, "b": [2, 3]}),
    ("826161a161626163", ["a", {"b": "c"}]),
    ("a56161614161626142616361436164614461656145", {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}),
    ("5f42010243030405ff", b"\x01\x02\x03\x04\x05"),
    ("7f657374726561646d696e67ff", "streaming"),
    ("9fff", []),
    ("9f018202039f0405ffff", [1, [2, 3], [4, 5]]),
    ("9f01820203820405ff", [1, [2, 3], [4, 5]]),
    ("83018202039f0405ff", [1, [2, 3], [4, 5]]),
    ("83019f0203ff820405", [1, [2, 3], [4, 5]]),
    ("9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff", list(range(1, 26))),
    ("bf61610161629f0203ffff", {"a": 1, "b": [2, 3]}),
    ("826161bf61626163ff", ["a", {"b": "c"}]),
    ("bf6346756ef563416d7421ff", {"Fun": True, "Amt": -2}),
]


@pytest.mark.parametrize(("hex_data", "expected"), RFC_VECTORS, ids=[h[:24] for h, _ in RFC_VECTORS])
def test_rfc8949_appendix_a(hex_data: str, expected: Any) -> None:
    decoded = _cbor.loads(bytes.fromhex(hex_data))
    assert decoded == expected
    assert type(decoded) is type(expected)


def test_decoded_float16_subnormal_and_nan() -> None:
    assert _cbor.loads(bytes.fromhex("f90001")) == 2.0**-24
    assert math.isnan(_cbor.loads(bytes.fromhex("fa7fc00000")))


MALFORMED: list[tuple[str, str]] = [
    ("", "truncated"),
    ("18", "truncated"),
    ("19 01", "truncated"),
    ("1b 00 00 00", "truncated"),
    ("42 01", "truncated"),
    ("63 61 62", "truncated"),
    ("82 01", "truncated"),
    ("a1 01", "truncated"),
    ("9f 01", "not closed"),
    ("5f 41 01", "not closed"),
    ("fb 00 00", "truncated"),
    ("5b ff ff ff ff ff ff ff ff", "truncated"),
    ("9b 00 00 00 01 00 00 00 00", "truncated"),
    ("1c", "reserved"),
    ("3d", "reserved"),
    ("5e", "reserved"),
    ("fc", "reserved"),
    ("1f", "indefinite"),
    ("3f", "indefinite"),
    ("ff", "unexpected break"),
    ("81 ff", "unexpected break"),
    ("5f 61 61 ff", "invalid chunk"),
    ("5f 5f 41 01 ff ff", "invalid chunk"),
    ("7f 41 61 ff", "invalid chunk"),
    ("7f 61 c3 61 bc ff", "UTF-8"),
    ("62 c3 28", "UTF-8"),
    ("61 ff", "UTF-8"),
    ("c1 1a 51 4b 67 b0", "tag 1"),
    ("c2 41 01", "tag 2"),
    ("d8 20 60", "tag 32"),
    ("f7", "undefined"),
    ("f0", "simple value"),
    ("f8 20", "simple value"),
    ("a1 a0 01", "key of type dict"),
    ("a1 40", "truncated"),
    ("01 02", "unexpected byte"),
    ("f6 f6", "unexpected byte"),
]


@pytest.mark.parametrize(("hex_data", "message"), MALFORMED, ids=[h for h, _ in MALFORMED])
def test_malformed_input_raises_value_error(hex_data: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _cbor.loads(bytes.fromhex(hex_data))


def test_host_bignum_is_rejected_not_misread() -> None:
    with pytest.raises(ValueError, match="tag 2"):
        _cbor.loads(cbor2.dumps(2**64))


def test_decode_depth_is_capped() -> None:
    depth = _cbor.MAX_DEPTH
    assert _cbor.loads(b"\x81" * (depth - 1) + b"\x80") is not None
    with pytest.raises(ValueError, match="nesting deeper"):
        _cbor.loads(b"\x81" * depth + b"\x80")
    with pytest.raises(ValueError, match="nesting deeper"):
        _cbor.loads(b"\x9f" * 100_000)
    with pytest.raises(ValueError, match="nesting deeper"):
        _cbor.loads(b"\xa1\x00" * 100_000)


def test_encode_depth_is_capped_and_catches_cycles() -> None:
    nested: list[Any] = []
    for _ in range(_cbor.MAX_DEPTH):
        nested = [nested]
    with pytest.raises(ValueError, match="nesting deeper"):
        _cbor.dumps(nested)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="cycle"):
        _cbor.dumps(cyclic)
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="cycle"):
        _cbor.dumps(loop)


@pytest.mark.parametrize("value", [2**64, -(2**64) - 1, 10**30])
def test_encode_rejects_integers_outside_64_bits(value: int) -> None:
    with pytest.raises(ValueError, match="64-bit range"):
        _cbor.dumps(value)


@pytest.mark.parametrize("value", [object(), {1, 2}, frozenset(), 1j, [1, object()], {"k": set()}])
def test_encode_rejects_unsupported_types(value: Any) -> None:
    with pytest.raises(ValueError, match="cannot encode a value of type"):
        _cbor.dumps(value)


def test_encode_rejects_lone_surrogates() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        _cbor.dumps("\ud800")


def test_huge_declared_length_fails_fast() -> None:
    with pytest.raises(ValueError, match="declares length"):
        _cbor.loads(bytes.fromhex("9bffffffffffffffff"))
    with pytest.raises(ValueError, match="declares length"):
        _cbor.loads(bytes.fromhex("bb7fffffffffffffff00"))


def test_public_names_are_pinned() -> None:
    # Importing the package must not need the wasm bindings (wit_world): the host imports it too.
    assert "wit_world" not in sys.modules
    assert sorted(dagr_agent.__all__) == [
        "Agent",
        "ChatResponse",
        "Conflict",
        "Context",
        "Denied",
        "Fail",
        "Handle",
        "HostError",
        "Http",
        "HttpResponse",
        "Invalid",
        "Log",
        "Model",
        "NotFound",
        "QuotaExceeded",
        "Reply",
        "Result",
        "Resumed",
        "Signals",
        "State",
        "ToolAgent",
        "ToolCall",
        "Unavailable",
        "handler",
        "tool_definition",
    ]
    assert _cbor.__all__ == ["MAX_DEPTH", "dumps", "loads"]
