"""Tests of the payload codecs (message object <-> frame payload)."""

from __future__ import annotations

import json
import pickle

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
)


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
