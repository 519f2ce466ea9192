"""Tests of the sans-IO framing core: every case whole, byte by byte, at every split."""

from __future__ import annotations

import array
import itertools
import random
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockwork.errors import ConnectionClosed, IncompleteMessage, MessageTooLarge, ProtocolError
from sockwork.frames import (
    MAX_HEADER_SIZE,
    NEED_DATA,
    Format,
    FrameDecoder,
    FrameEncoder,
    Message,
    Payload,
)

FORMATS = list(Format)


def splits(data: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Every way h11 would feed a decoder: whole, byte by byte, and at every split."""
    yield "whole", [data]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield f"split@{i}", [data[:i], data[i:]]


def decode(
    chunks: list[bytes],
    format: Format = Format.U32,
    *,
    eof: bool = True,
    max_size: int = 1000,
    via_buffer: bool = False,
) -> tuple[list[Message], Exception | None]:
    """Feed the chunks (then EOF), collecting messages and the first exception."""
    decoder = FrameDecoder(format, max_size=max_size)
    messages: list[Message] = []
    try:
        for chunk in chunks:
            if via_buffer:
                view = decoder.get_buffer(len(chunk))
                view[: len(chunk)] = chunk
                decoder.buffer_updated(len(chunk))
            else:
                decoder.receive_data(chunk)
            messages.extend(decoder)
        if eof:
            decoder.receive_eof()
            messages.extend(decoder)
            decoder.next_message()
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return messages, exc
    return messages, None


# -- encoding: exact bytes on the wire --------------------------------------------------


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        # From the Stockings reference, section 1.2 (captured on the wire).
        ("a", "81 61"),
        (b"a", "c1 61"),
        ("é", "82 c3 a9"),
        ("x" * 63, "bf" + " 78" * 63),
        ("x" * 64, "00 81" + " 78" * 64),
        (b"y" * 300, "6c 84" + " 79" * 300),
        ("", "80"),
        (b"", "c0"),
    ],
)
def test_encoder_stockings_matches_reference_wire_bytes(message: Message, wire: str) -> None:
    assert FrameEncoder(Format.STOCKINGS).send(message) == bytes.fromhex(wire)


@pytest.mark.parametrize(
    ("size", "text", "header"),
    [
        (8191, True, "3f ff"),
        (8192, True, "00 00 81"),
        (2**20, False, "40 00 00 81"),
        (2**24, False, "40 00 00 90"),
        (2**63, False, "40 00 00 00 00 00 00 00 00 82"),
    ],
)
def test_encoder_stockings_header_sizes(size: int, text: bool, header: str) -> None:
    encoder = FrameEncoder(Format.STOCKINGS, max_size=2**64)
    assert encoder.header(size, text=text) == bytes.fromhex(header)


@pytest.mark.parametrize(
    ("size", "header"),
    [(0, "00"), (1, "01"), (127, "7f"), (128, "80 01"), (300, "ac 02"), (2**21, "80 80 80 01")],
)
def test_encoder_varint_is_leb128(size: int, header: str) -> None:
    assert FrameEncoder(Format.VARINT, max_size=2**30).header(size) == bytes.fromhex(header)


def test_encoder_u32_is_big_endian() -> None:
    encoder = FrameEncoder()
    assert encoder.send(b"abc") == b"\x00\x00\x00\x03abc"
    assert encoder.send(b"") == b"\x00\x00\x00\x00"
    assert FrameEncoder(max_size=2**32 - 1).header(0x01020304, text=True) == b"\x01\x02\x03\x04"


def test_encoder_str_is_utf8_and_text_only_in_stockings() -> None:
    assert FrameEncoder(Format.U32).send("é") == b"\x00\x00\x00\x02\xc3\xa9"
    assert FrameEncoder(Format.VARINT).send("é") == b"\x02\xc3\xa9"


def test_encoder_accepts_any_buffer_without_copying() -> None:
    encoder = FrameEncoder(Format.VARINT)
    payload = bytearray(b"hello")
    header, body = encoder.send_parts(payload)
    assert header == b"\x05" and body is payload
    numbers = array.array("H", [1, 2])
    header, body = encoder.send_parts(numbers)
    assert header == b"\x04" and bytes(body) == numbers.tobytes()
    assert encoder.send(memoryview(b"xyz")) == b"\x03xyz"


def test_encoder_rejects_non_buffer() -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        FrameEncoder().send(42)  # type: ignore[arg-type]


def test_encoder_rejects_message_over_max_size() -> None:
    encoder = FrameEncoder(max_size=4)
    assert encoder.send(b"1234") == b"\x00\x00\x00\x041234"
    with pytest.raises(MessageTooLarge) as info:
        encoder.send(b"12345")
    assert (info.value.size, info.value.limit) == (5, 4)
    with pytest.raises(MessageTooLarge):
        encoder.send_many([b"1", b"12345"])


def test_encoder_send_many_concatenates_frames() -> None:
    for format in FORMATS:
        encoder = FrameEncoder(format)
        messages: list[bytes] = [b"", b"a", b"bc" * 100]
        assert encoder.send_many(messages) == b"".join(encoder.send(m) for m in messages)
    assert FrameEncoder().send_many(["é", bytearray(b"x")]) == (
        b"\x00\x00\x00\x02\xc3\xa9\x00\x00\x00\x01x"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"format": "nope"}, ValueError, "format must be one of U32, VARINT, STOCKINGS"),
        ({"max_size": -1}, ValueError, "max_size must be >= 0"),
        ({"max_size": 1.5}, TypeError, "max_size must be an int"),
        ({"format": Format.U32, "max_size": 2**32}, ValueError, "2\\*\\*32-1"),
    ],
)
def test_constructors_validate_arguments(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    for cls in (FrameEncoder, FrameDecoder):
        with pytest.raises(error, match=match):
            cls(**kwargs)  # type: ignore[arg-type]


def test_format_accepts_names() -> None:
    assert FrameDecoder("VARINT").format is Format.VARINT
    assert FrameEncoder("stockings").format is Format.STOCKINGS


# -- decoding: valid streams --------------------------------------------------------------

VALID_CASES: list[tuple[Format, list[Message]]] = [
    (Format.U32, [b"hello", b"", b"world" * 30]),
    (Format.VARINT, [b"a", b"", b"z" * 200]),
    (Format.STOCKINGS, ["a", b"a", "é", "", b"", "x" * 64, b"y" * 300]),
]


@pytest.mark.parametrize(("format", "messages"), VALID_CASES, ids=lambda v: str(v)[:20])
def test_decoder_valid_stream_at_every_split(format: Format, messages: list[Message]) -> None:
    wire = FrameEncoder(format).send_many(messages)
    for how, chunks in splits(wire):
        for via_buffer in (False, True):
            got, error = decode(chunks, format, via_buffer=via_buffer)
            assert got == messages, how
            assert type(error) is ConnectionClosed, how
            assert [type(m) for m in got] == [type(m) for m in messages]


@pytest.mark.parametrize(("format", "messages"), VALID_CASES, ids=lambda v: str(v)[:20])
def test_decoder_valid_stream_with_trailing_data(format: Format, messages: list[Message]) -> None:
    encoder = FrameEncoder(format)
    trailing = encoder.send(b"next message")[:-1]
    wire = encoder.send_many(messages) + trailing
    for how, chunks in splits(wire):
        decoder = FrameDecoder(format)
        got: list[Message] = []
        for chunk in chunks:
            decoder.receive_data(chunk)
            got.extend(decoder)
        assert got == messages, how
        assert decoder.next_message() is NEED_DATA
        assert decoder.buffered == len(trailing)


def test_decoder_stockings_reads_two_frames_from_one_read() -> None:
    decoder = FrameDecoder(Format.STOCKINGS)
    decoder.receive_data(bytes.fromhex("81 61 81 62"))
    assert decoder.next_message() == "a"
    assert decoder.next_message() == "b"
    assert decoder.next_message() is NEED_DATA


def test_decoder_accepts_buffers_of_any_format() -> None:
    decoder = FrameDecoder(Format.VARINT)
    decoder.receive_data(memoryview(b"\x02hi"))
    decoder.receive_data(bytearray(b"\x00"))
    assert list(decoder) == [b"hi", b""]


def fill(decoder: FrameDecoder, data: bytes) -> int:
    """Receive ``data`` through get_buffer/buffer_updated as a socket would; return the reads."""
    reads = 0
    data = memoryview(data)  # type: ignore[assignment]  # slices without copying
    while data:
        view = decoder.get_buffer()
        n = min(len(view), len(data))
        view[:n] = data[:n]
        view.release()  # as the contract asks: the view is not kept
        decoder.buffer_updated(n)
        data = data[n:]
        reads += 1
    return reads


def test_decoder_large_message_arrives_whole_through_views() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    wire = FrameEncoder().send(payload)
    decoder = FrameDecoder()
    fill(decoder, wire[:100])
    assert decoder.next_message() is NEED_DATA
    reads = fill(decoder, wire[100:])
    assert reads <= 3  # 64 KiB into the shared buffer, then one buffer of the frame's size
    assert decoder.next_message() == payload
    assert decoder.buffered == 0
    assert decoder.capacity <= 64 * 1024  # the pieces were released with the message


def test_decoder_large_frame_takes_its_whole_size_once_enough_arrived() -> None:
    # Fast path (issue 12): a 1 MiB frame is allocated once, when 64 KiB are in, so it
    # is not grown (reallocated) five times; the bytes land where they were received.
    payload = bytes(range(256)) * 4096
    wire = FrameEncoder().send(payload)
    decoder = FrameDecoder()
    fill(decoder, wire[: 64 * 1024])  # what one read into the shared buffer brings
    view = decoder.get_buffer()
    assert len(view) == len(wire) - 64 * 1024  # the rest of the frame, in one view
    assert decoder.capacity == 64 * 1024 + len(payload)
    view[: len(view)] = wire[64 * 1024 :]
    view.release()
    decoder.buffer_updated(len(wire) - 64 * 1024)
    assert decoder.next_message() == payload


def test_decoder_large_frame_grows_in_few_steps_bounded_by_what_arrived() -> None:
    size = 16 * 1024 * 1024 - 1
    wire = FrameEncoder().send(bytes(range(251)) * (size // 251) + b"e" * (size % 251))
    decoder = FrameDecoder()
    capacities = []
    pos = 0
    while pos < len(wire):
        view = decoder.get_buffer()
        n = min(len(view), len(wire) - pos)
        view[:n] = wire[pos : pos + n]
        view.release()
        decoder.buffer_updated(n)
        pos += n
        received = max(pos - 4, 0)
        # The bound that keeps hostile headers cheap: 16 times what arrived plus 64 KiB,
        # besides the shared 64 KiB buffer.
        assert decoder.capacity <= 16 * received + 2 * 64 * 1024
        if decoder.capacity not in capacities:
            capacities.append(decoder.capacity)
    assert len(capacities) <= 6  # 64 KiB, then the frame's buffer in four sizes
    assert decoder.next_message() == wire[4:]


def test_decoder_header_alone_commits_no_memory() -> None:
    # Issue 9: `00 ff ff ff` + one byte used to allocate the 16 MiB the header announces.
    decoder = FrameDecoder()
    fill(decoder, b"\x00\xff\xff\xff" + b"x")
    assert decoder.missing == 0xFFFFFF - 1
    view = decoder.get_buffer()
    assert len(view) <= 64 * 1024
    assert decoder.capacity <= 2 * 64 * 1024
    assert decoder.commitment == decoder.capacity + 0xFFFFFF - 1 - len(view)


def test_decoder_large_frame_memory_follows_what_arrived() -> None:
    size = 8 * 1024 * 1024
    wire = FrameEncoder().send(b"z" * size)
    decoder = FrameDecoder()
    commitment = None
    for sent in range(0, len(wire), 300_001):
        fill(decoder, wire[sent : sent + 300_001])
        received = min(sent + 300_001, len(wire))
        # At most 16 times what arrived plus 64 KiB, plus one 64 KiB buffer.
        assert decoder.capacity <= 16 * received + 2 * 64 * 1024
        if decoder.missing:
            if commitment is None:
                commitment = decoder.commitment
            assert decoder.commitment == commitment  # reserved once, stable until done
    assert decoder.next_message() == b"z" * size
    assert decoder.capacity <= 64 * 1024


def test_decoder_large_frames_mixed_with_receive_data_and_small_frames() -> None:
    rng = random.Random(7)
    for format in Format:
        encoder = FrameEncoder(format)
        messages: list[Message] = []
        for i in range(12):
            size = rng.choice([0, 5, 70_000, 300_000])
            text = format is Format.STOCKINGS and i % 2
            messages.append("é" * (size // 2) if text else bytes([i]) * size)
        wire = encoder.send_many(messages)
        decoder = FrameDecoder(format)
        got: list[Message] = []
        pos = 0
        while pos < len(wire):
            step = rng.choice([1, 3, 1000, 70_000, 200_000])
            chunk = wire[pos : pos + step]
            if rng.random() < 0.5:
                decoder.receive_data(chunk)
            else:
                fill(decoder, chunk)
            pos += len(chunk)
            got.extend(decoder)
        assert got == messages, format


def test_decoder_eof_inside_a_large_frame_reports_what_arrived() -> None:
    decoder = FrameDecoder()
    fill(decoder, b"\x00\x02\x00\x00" + b"a" * 100_000)
    decoder.receive_eof()
    with pytest.raises(IncompleteMessage) as caught:
        decoder.next_message()
    assert (caught.value.received, caught.value.expected) == (100_000, 0x20000)


def test_decoder_burst_buffer_is_given_back() -> None:
    decoder = FrameDecoder()
    wire = FrameEncoder().send_many([b"m" * 100] * 20_000)  # 2 MiB of small frames
    decoder.receive_data(wire)
    assert decoder.capacity >= len(wire)
    assert len(list(decoder)) == 20_000
    assert decoder.capacity <= 64 * 1024


def test_decoder_missing_counts_the_rest_of_a_pending_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.missing == 0
    decoder.receive_data(b"\x00\x00\x00\x0aabc")
    assert decoder.missing == 7  # headers are parsed as data arrives
    assert decoder.next_message() is NEED_DATA
    assert decoder.missing == 7
    decoder.receive_data(b"defghij" + b"\x00")
    assert decoder.missing == 0
    assert decoder.next_message() == b"abcdefghij"
    assert decoder.missing == 0


def test_decoder_many_small_messages_stay_linear() -> None:
    # 200k messages through a 64 KiB buffer: compaction must keep this fast and exact.
    encoder = FrameEncoder()
    messages = [str(i).encode() for i in range(200_000)]
    wire = encoder.send_many(messages)
    decoder = FrameDecoder()
    got: list[Message] = []
    for i in range(0, len(wire), 4093):
        decoder.receive_data(wire[i : i + 4093])
        got.extend(decoder)
    assert got == messages


# -- decoding: bad input and faults ---------------------------------------------------------


def check_fault(
    format: Format,
    good: list[Message],
    bad: bytes,
    error: type[Exception],
    *,
    eof: bool = False,
    max_size: int = 1000,
) -> list[Exception]:
    """Messages before the fault are delivered, then ``error``, at every split point."""
    wire = FrameEncoder(format).send_many(good) + bad
    errors = []
    for how, chunks in splits(wire):
        got, exc = decode(chunks, format, eof=eof, max_size=max_size)
        assert got == good, how
        assert type(exc) is error, (how, exc)
        errors.append(exc)
    return errors


@pytest.mark.parametrize(
    ("format", "header", "declared"),
    [
        (Format.U32, b"\x00\x00\x03\xe9", 1001),
        (Format.U32, b"\xff\xff\xff\xff", 2**32 - 1),
        (Format.VARINT, b"\xe9\x07", 1001),
        (Format.STOCKINGS, bytes.fromhex("69 8f"), 1001),
        (Format.STOCKINGS, bytes.fromhex("40 00 00 00 00 00 00 00 00 82"), 2**63),
    ],
)
def test_decoder_oversized_header_raises_before_payload(
    format: Format, header: bytes, declared: int
) -> None:
    for exc in check_fault(format, [b"ok"], header, MessageTooLarge):
        assert isinstance(exc, MessageTooLarge)
        assert (exc.size, exc.limit) == (declared, 1000)


def test_decoder_max_size_is_inclusive() -> None:
    wire = FrameEncoder().send(b"x" * 1000)
    assert decode([wire], max_size=1000)[0] == [b"x" * 1000]
    assert type(decode([wire], max_size=999)[1]) is MessageTooLarge


@pytest.mark.parametrize(
    ("format", "runaway"),
    [
        (Format.VARINT, b"\x80" * MAX_HEADER_SIZE),
        (Format.STOCKINGS, b"\x00" * MAX_HEADER_SIZE),
        (Format.STOCKINGS, b"\x00" * 5000),
    ],
)
def test_decoder_runaway_header_is_bounded(format: Format, runaway: bytes) -> None:
    for exc in check_fault(format, [b"ok"], runaway, ProtocolError):
        assert "header longer than 10 bytes" in str(exc)


def test_decoder_header_just_under_bound_is_fine() -> None:
    # A non-minimal but bounded LEB128 header (9 bytes) is accepted.
    wire = b"\x83" + b"\x80" * 7 + b"\x00" + b"abc"
    assert decode([wire], Format.VARINT)[0] == [b"abc"]


@pytest.mark.parametrize("format", FORMATS)
def test_decoder_eof_inside_payload_is_incomplete(format: Format) -> None:
    frame = FrameEncoder(format).send(b"0123456789")
    header_len = len(frame) - 10
    for exc in check_fault(format, [b"ok"], frame[:-3], IncompleteMessage, eof=True):
        assert isinstance(exc, IncompleteMessage)
        assert (exc.received, exc.expected) == (7, 10)
        assert exc.by_peer
    assert header_len >= 1


@pytest.mark.parametrize(
    ("format", "partial"),
    [(Format.U32, b"\x00\x00"), (Format.VARINT, b"\x80\x80"), (Format.STOCKINGS, b"\x00")],
)
def test_decoder_eof_inside_header_is_incomplete(format: Format, partial: bytes) -> None:
    for exc in check_fault(format, [b"ok"], partial, IncompleteMessage, eof=True):
        assert isinstance(exc, IncompleteMessage)
        assert (exc.received, exc.expected) == (len(partial), None)
        assert "inside a message header" in str(exc)


def test_decoder_clean_eof_ends_iteration_and_raises_connection_closed() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(FrameEncoder().send(b"last"))
    decoder.receive_eof()
    assert list(decoder) == [b"last"]
    assert list(decoder) == []
    with pytest.raises(ConnectionClosed) as info:
        decoder.next_message()
    assert type(info.value) is ConnectionClosed and info.value.by_peer
    assert decoder.eof


def test_decoder_rejects_data_after_eof() -> None:
    decoder = FrameDecoder()
    decoder.receive_eof()
    with pytest.raises(RuntimeError, match="after receive_eof"):
        decoder.receive_data(b"x")
    with pytest.raises(RuntimeError, match="after receive_eof"):
        decoder.get_buffer()


def test_decoder_invalid_utf8_in_stockings_text_frame() -> None:
    bad = bytes.fromhex("82 c3 28")  # text frame, 2 bytes, invalid continuation byte
    for exc in check_fault(Format.STOCKINGS, ["ok", b"\xff"], bad, ProtocolError):
        assert "not valid UTF-8" in str(exc)
        assert isinstance(exc.__cause__, UnicodeDecodeError)


def test_decoder_invalid_utf8_in_stockings_bytes_frame_is_fine() -> None:
    assert decode([bytes.fromhex("c2 c3 28")], Format.STOCKINGS)[0] == [b"\xc3\x28"]


def test_decoder_errors_are_sticky() -> None:
    decoder = FrameDecoder(max_size=10)
    decoder.receive_data(b"\x00\x00\x00\x0b")
    with pytest.raises(MessageTooLarge) as first:
        decoder.next_message()
    decoder.receive_data(FrameEncoder().send(b"fine"))
    with pytest.raises(MessageTooLarge) as second:
        decoder.next_message()
    assert second.value is first.value
    with pytest.raises(MessageTooLarge):
        list(decoder)


def test_buffer_updated_rejects_impossible_counts() -> None:
    decoder = FrameDecoder()
    view = decoder.get_buffer(10)
    with pytest.raises(ValueError, match="nbytes"):
        decoder.buffer_updated(len(view) + 1)
    with pytest.raises(ValueError, match="nbytes"):
        decoder.buffer_updated(-1)


# -- Hypothesis: the split never matters -----------------------------------------------------

message_strategy = st.one_of(st.binary(max_size=300), st.text(max_size=100))


@settings(max_examples=300, deadline=None)
@given(
    format=st.sampled_from(FORMATS),
    messages=st.lists(message_strategy, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
    via_buffer=st.booleans(),
    trailing=st.binary(max_size=12),
)
def test_decoder_any_split_gives_identical_result(
    format: Format,
    messages: list[Message],
    cuts: list[int],
    via_buffer: bool,
    trailing: bytes,
) -> None:
    wire = FrameEncoder(format).send_many(messages) + trailing
    reference = decode([wire], format, via_buffer=False, max_size=500)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    got = decode(chunks, format, via_buffer=via_buffer, max_size=500)
    assert got[0] == reference[0]
    assert type(got[1]) is type(reference[1])
    assert str(got[1]) == str(reference[1])
    if not trailing:
        expected = [
            m.encode() if isinstance(m, str) and format is not Format.STOCKINGS else m
            for m in messages
        ]
        assert reference[0] == expected
        assert type(reference[1]) is ConnectionClosed


@pytest.mark.parametrize("format", list(Format))
def test_encoder_send_batch_is_send_many_in_buffers(format: Format) -> None:
    encoder = FrameEncoder(format)
    big = bytearray(b"m" * 20_000)
    messages: list[Payload | str] = [b"a", "é", big, b"", memoryview(b"xyz"), b"b" * 16_384]
    buffers, ends = encoder.send_batch(messages)
    assert b"".join(buffers) == encoder.send_many(messages)
    assert ends == list(itertools.accumulate(len(encoder.send(m)) for m in messages))
    # Small frames (and the headers of large ones) are joined; payloads of 16 KiB or
    # more are buffers of their own.
    assert len(buffers) == 4
    assert buffers[1] == bytes(big) and type(buffers[1]) is bytes
    big[0] = 0  # the caller may change it afterwards: the batch keeps its copy
    assert buffers[1][0] == ord("m")
    assert buffers[3] is messages[5]  # bytes: not copied


@pytest.mark.parametrize("make", [list, iter], ids=["list", "iterator"])
def test_encoder_send_batch_of_small_bytes_is_one_buffer(make: type) -> None:
    encoder = FrameEncoder(max_size=100)
    messages = distinct([0, 1, 64, 100, 3])
    buffers, ends = encoder.send_batch(make(messages), join_below=101)
    assert buffers == [encoder.send_many(messages)]
    assert ends == list(itertools.accumulate(len(m) + 4 for m in messages))
    # At the join_below and max_size bounds the general path takes over, same bytes.
    buffers, ends = encoder.send_batch(make(messages), join_below=100)
    assert b"".join(buffers) == encoder.send_many(messages) and len(buffers) == 3
    with pytest.raises(MessageTooLarge):
        FrameEncoder(max_size=99).send_batch(make(messages))


def test_encoder_send_batch_refuses_the_whole_batch() -> None:
    encoder = FrameEncoder(max_size=10)
    with pytest.raises(MessageTooLarge):
        encoder.send_batch([b"ok", b"x" * 11])
    with pytest.raises(TypeError):
        encoder.send_batch([b"ok", 42])  # type: ignore[list-item]
    assert encoder.send_batch([]) == ([], [])


def test_decoder_hands_out_a_large_message_without_copying_it() -> None:
    size = 8 * 1024 * 1024
    wire = FrameEncoder().send(b"q" * size)
    decoder = FrameDecoder()
    tracemalloc.start()
    try:
        fill(decoder, wire)
        message = decoder.next_message()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message == b"q" * size and type(message) is bytes
    # One buffer of the message's size (plus the 64 KiB one): no second copy.
    assert peak < size + 512 * 1024, peak


def test_decoder_large_message_is_copied_when_a_view_is_still_held() -> None:
    wire = FrameEncoder().send(bytes(range(256)) * 1024)  # 256 KiB
    decoder = FrameDecoder()
    fill(decoder, wire[:100_000])
    held = decoder.get_buffer()  # the caller keeps this view: growing must not fail
    held[:10] = wire[100_000:100_010]
    decoder.buffer_updated(10)
    fill(decoder, wire[100_010:])
    assert decoder.next_message() == bytes(range(256)) * 1024
    del held


# -- batches: small U32 frames decoded together (FrameDecoder._take_batch) ---------------


def take(decoder: FrameDecoder, *, batch: bool, got: list[Message] | None = None) -> list[Message]:
    """Every complete message, one ``next_message`` at a time or by ``next_messages``.

    Appends to ``got`` (if given) as they come, so a caller catching an error keeps them.
    """
    got = [] if got is None else got
    if batch:
        while messages := decoder.next_messages():
            got += messages
    else:
        while (message := decoder.next_message()) is not NEED_DATA:
            assert isinstance(message, bytes)
            got.append(message)
    return got


def distinct(sizes: list[int], seed: int = 7) -> list[bytes]:
    """Messages of these sizes, each with different bytes (a swap or a shift shows)."""
    rng = random.Random(seed)
    return [rng.randbytes(size) for size in sizes]


def test_decoder_batch_gives_the_same_bytes_at_every_split() -> None:
    # Sizes around the batch threshold (1 KiB payloads), with empty and tiny frames.
    messages = distinct([3, 0, 64, 1, 1023, 1024, 0, 2])
    wire = FrameEncoder().send_many(messages)
    for number, (how, chunks) in enumerate(splits(wire)):
        via_buffer = number % 2 == 1
        for batch in (True, False) if number < 2 else (True,):
            decoder = FrameDecoder()
            got: list[Message] = []
            for chunk in chunks:
                if via_buffer:
                    fill(decoder, chunk)
                else:
                    decoder.receive_data(chunk)
                take(decoder, batch=batch, got=got)
            assert got == messages, (how, batch, via_buffer)
            assert decoder.buffered == 0
            decoder.receive_eof()
            with pytest.raises(ConnectionClosed):
                decoder.next_messages()


def test_decoder_batch_boundary_every_byte_of_a_straddling_message() -> None:
    # 64 B messages then odd sizes, more than two batches (16 KiB each) of data; the
    # stream is cut at every byte around the end of the first batch, whichever message
    # straddles it, and messages must come out identical and in order.
    rng = random.Random(12)
    messages = distinct([64] * 200 + [rng.randrange(0, 900) for _ in range(60)])
    wire = FrameEncoder().send_many(messages)
    assert len(wire) > 2 * 16 * 1024
    ends = list(itertools.accumulate(len(m) + 4 for m in messages))
    first, last = next((a, b) for a, b in itertools.pairwise([0, *ends]) if b > 16 * 1024)
    assert last - first > 64  # an odd-sized message straddles the first batch's end
    for cut in [*range(first, last + 1), *range(1, len(wire), 997)]:
        decoder = FrameDecoder()
        decoder.receive_data(wire[:cut])
        got = take(decoder, batch=cut % 2 == 0)
        decoder.receive_data(wire[cut:])
        got += take(decoder, batch=cut % 3 == 0)
        assert got == messages, cut


def test_decoder_batch_accounts_for_what_it_holds() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(FrameEncoder().send_many([b"m" * 64] * 100) + b"\x00\x00")
    assert decoder.next_message() == b"m" * 64
    # The other 99 are decoded but not returned: counted as payload bytes held.
    assert decoder.buffered == 99 * 64 + 2
    assert decoder.capacity >= 99 * 64
    batch = decoder.next_messages()
    assert batch == [b"m" * 64] * 99
    assert decoder.buffered == 2
    assert decoder.next_messages() == []


def test_decoder_batch_returns_messages_before_an_oversized_header() -> None:
    encoder = FrameEncoder()
    good = [b"12345", b"67890", b""]
    wire = encoder.send_many(good) + encoder.header(11) + b"x" * 11 + encoder.send(b"after")
    for how, chunks in splits(wire):
        decoder = FrameDecoder(max_size=10)
        got: list[Message] = []
        with pytest.raises(MessageTooLarge) as caught:
            for chunk in chunks:
                decoder.receive_data(chunk)
                take(decoder, batch=True, got=got)
        assert got == good, how
        assert (caught.value.size, caught.value.limit) == (11, 10)
        with pytest.raises(MessageTooLarge):  # sticky
            decoder.next_messages()


def test_decoder_batch_then_eof_inside_a_frame_is_incomplete() -> None:
    wire = FrameEncoder().send_many([b"a" * 10, b"b" * 10, b"c" * 10])[:-4]
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    decoder.receive_eof()
    assert decoder.next_messages() == [b"a" * 10, b"b" * 10]
    with pytest.raises(IncompleteMessage) as caught:
        decoder.next_messages()
    assert (caught.value.received, caught.value.expected) == (6, 10)


def test_decoder_batch_copies_a_bounded_region() -> None:
    # A burst of 1 MiB of 64 B frames: each batch takes at most 16 KiB of it, so the
    # messages decoded ahead of the caller stay bounded whatever arrived.
    decoder = FrameDecoder()
    decoder.receive_data(FrameEncoder().send_many([b"s" * 64] * 16_000))
    held = []
    while batch := decoder.next_messages():
        held.append(len(batch))
    assert sum(held) == 16_000
    assert max(held) <= 16 * 1024 // 68 + 1
