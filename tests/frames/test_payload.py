"""Tests of the payload codecs (message object <-> frame payload)."""

from __future__ import annotations

import asyncio
import json
import pickle
import socket

import pytest

from sockwork.frames import (
    BYTES,
    BYTES_OR_TEXT,
    JSON,
    MSGPACK,
    TEXT,
    Codec,
    Format,
    FrameDecoder,
    FrameEncoder,
    MessageSocket,
    open_connection,
    start_server,
)
from sockwork.frames.endpoint import Endpoint
from sockwork.frames.payload import _check_codec, _encode_all


def through_wire(codec: Codec[object], obj: object, format: Format) -> object:
    """Encode with the codec, frame, decode the frame, decode with the codec."""
    decoder = FrameDecoder(format)
    decoder.receive_data(FrameEncoder(format).send(codec.encode(obj)))
    message = decoder.next_message()
    assert isinstance(message, (bytes, str))
    return codec.decode(message)


@pytest.mark.parametrize("format", list(Format))
@pytest.mark.parametrize(
    ("codec", "obj"),
    [
        (BYTES, b"\x00\xff raw"),
        (TEXT, "héllo ✓"),
        (JSON, {"list": [1, 2.5, None, True], "text": "é", "nested": {"k": []}}),
        (MSGPACK, {"bin": b"\x00\x01", "text": "é", "n": [1, -2, 3.5]}),
        (BYTES_OR_TEXT, b"bytes stay bytes"),
    ],
)
def test_codec_round_trip(codec: Codec[object], obj: object, format: Format) -> None:
    assert through_wire(codec, obj, format) == obj


def test_codec_bytes_or_text_keeps_the_wire_type_in_stockings() -> None:
    assert through_wire(BYTES_OR_TEXT, "text", Format.STOCKINGS) == "text"  # type: ignore[arg-type]
    # U32 has no type bit: the str arrives as its UTF-8 bytes.
    assert through_wire(BYTES_OR_TEXT, "text", Format.U32) == b"text"  # type: ignore[arg-type]


def test_codec_bytes_receives_stockings_text_as_utf8() -> None:
    assert BYTES.decode("é") == b"\xc3\xa9"


def test_codec_json_is_compact_text() -> None:
    assert JSON.encode({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    wire = FrameEncoder(Format.STOCKINGS).send(JSON.encode([1]))
    assert wire == b"\x83[1]"  # a STOCKINGS text frame


def test_codec_bytes_accepts_buffers_and_rejects_str() -> None:
    assert BYTES.encode(bytearray(b"x")) == bytearray(b"x")
    assert bytes(BYTES.encode(memoryview(b"y"))) == b"y"
    with pytest.raises(TypeError, match="codec=TEXT"):
        BYTES.encode("no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes-like"):
        BYTES.encode(3)  # type: ignore[arg-type]


def test_codec_text_rejects_bytes_and_bad_utf8() -> None:
    with pytest.raises(TypeError, match="codec TEXT sends str"):
        TEXT.encode(b"no")  # type: ignore[arg-type]
    with pytest.raises(UnicodeDecodeError):
        TEXT.decode(b"\xff")


def test_codec_json_bad_input_raises_value_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        JSON.decode(b"{not json")


def test_codec_user_supplied_pair() -> None:
    pickled: Codec[object] = Codec(encode=pickle.dumps, decode=pickle.loads, name="pickle")
    assert repr(pickled) == "<Codec pickle>"
    assert through_wire(pickled, {1, 2, 3}, Format.VARINT) == {1, 2, 3}


def test_codec_names() -> None:
    names = [repr(c) for c in (BYTES, BYTES_OR_TEXT, TEXT, JSON, MSGPACK)]
    assert names == [
        "<Codec bytes>",
        "<Codec bytes_or_text>",
        "<Codec text>",
        "<Codec json>",
        "<Codec msgpack>",
    ]


def test_payload_old_module_name_codecs_is_an_alias() -> None:
    # Issue 11 item 6: frames/codecs.py became frames/payload.py (codec.py's near-homonym);
    # the old import path keeps working and gives the very same objects.
    import sockwork.frames.codecs as old
    import sockwork.frames.payload as new

    assert old.__all__ == new.__all__
    for name in new.__all__:
        assert getattr(old, name) is getattr(new, name), name
    assert old.JSON.decode(old.JSON.encode({"a": [1]})) == {"a": [1]}


def test_check_codec_rejects_what_is_not_a_codec() -> None:
    _check_codec(JSON)
    with pytest.raises(TypeError, match="codec must be a sockwork.frames.Codec, not 'json'"):
        _check_codec("json")


def test_encode_all_passes_bytes_through_bytes_and_encodes_the_rest() -> None:
    payload = b"raw"
    encoded = _encode_all(BYTES, [payload, bytearray(b"ba")])
    assert encoded == [b"raw", bytearray(b"ba")]
    assert encoded[0] is payload  # not copied, not re-encoded
    assert _encode_all(JSON, [{"a": 1}, [2]]) == ['{"a":1}', "[2]"]
    with pytest.raises(TypeError):
        _encode_all(BYTES, [b"ok", "text"])


def test_every_front_end_rejects_a_codec_that_is_not_a_codec() -> None:
    async def handler(stream: object) -> None:
        raise AssertionError("never served")

    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(TypeError, match="sockwork.frames.Codec"):
            MessageSocket(a, codec="json")  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="sockwork.frames.Codec"):
            Endpoint(b, codec=json)  # type: ignore[call-overload]
        assert a.fileno() >= 0 and b.fileno() >= 0  # not taken over
    with pytest.raises(TypeError, match="sockwork.frames.Codec"):
        asyncio.run(open_connection("127.0.0.1", 9, codec=pickle))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="sockwork.frames.Codec"):
        asyncio.run(start_server(handler, codec="json"))  # type: ignore[call-overload]
