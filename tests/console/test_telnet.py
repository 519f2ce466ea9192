from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockwork.console.telnet import (
    NEED_DATA,
    EndOfInput,
    Event,
    Interrupt,
    Line,
    LineTooLong,
    TelnetConnection,
)

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
IP, EC, EL, AYT, NOP, GA = 244, 247, 248, 246, 241, 249
ECHO, SGA, TM, TTYPE, NAWS = 1, 3, 6, 24, 31


def drain(conn: TelnetConnection) -> tuple[list[Event], bytes]:
    events: list[Event] = []
    replies = b""
    while True:
        event = conn.next_event()
        replies += conn.data_to_send()
        if event is NEED_DATA:
            return events, replies
        events.append(event)
        if isinstance(event, EndOfInput) and event.closed:
            return events, replies


def run(chunks: list[bytes], *, eof: bool = False, **kwargs: int) -> tuple[list[Event], bytes]:
    conn = TelnetConnection(**kwargs)
    events: list[Event] = []
    replies = b""
    for chunk in chunks:
        conn.receive_data(chunk)
        more, answer = drain(conn)
        events += more
        replies += answer
    if eof:
        conn.receive_eof()
        more, answer = drain(conn)
        events += more
        replies += answer
    return events, replies


def splits(data: bytes) -> Iterator[list[bytes]]:
    """The whole input, one byte at a time, and cut at every point (h11's habit)."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]


# (input bytes, expected events, expected replies); every case ends with a line so the
# events after the sequence prove it was consumed exactly.
CASES = [
    pytest.param(b"hello\r\n", [Line("hello")], b"", id="crlf"),
    pytest.param(b"hello\n", [Line("hello")], b"", id="lf"),
    pytest.param(b"a\rb\r", [Line("a"), Line("b")], b"", id="bare-cr"),
    pytest.param(b"a\r\0b\r\n", [Line("a"), Line("b")], b"", id="cr-nul"),
    pytest.param(b"\r\n\r\n", [Line(""), Line("")], b"", id="empty-lines"),
    pytest.param(b"a\xff\xffb\n", [Line("a\ufffdb")], b"", id="iac-iac-literal"),
    pytest.param(bytes([IAC, DO, ECHO]) + b"x\n", [Line("x")], bytes([IAC, WONT, ECHO]), id="do"),
    pytest.param(bytes([IAC, DONT, ECHO]) + b"x\n", [Line("x")], b"", id="dont"),
    pytest.param(
        bytes([IAC, WILL, TTYPE]) + b"x\n", [Line("x")], bytes([IAC, DONT, TTYPE]), id="will"
    ),
    pytest.param(bytes([IAC, WONT, NAWS]) + b"x\n", [Line("x")], b"", id="wont"),
    pytest.param(
        bytes([IAC, DO, TM]) + b"x\n", [Line("x")], bytes([IAC, WONT, TM]), id="do-timing-mark"
    ),
    pytest.param(
        b"x" + bytes([IAC, SB, NAWS, 0, 80, IAC, IAC, 24, IAC, SE]) + b"y\n",
        [Line("xy")],
        b"",
        id="subnegotiation",
    ),
    pytest.param(
        b"ab" + bytes([IAC, IP, IAC, DO, TM]) + b"c\n",
        [Interrupt(), Line("c")],
        bytes([IAC, WONT, TM]),
        id="ctrl-c-bsd",
    ),
    pytest.param(b"ab\x03c\n", [Interrupt(), Line("c")], b"", id="ctrl-c-raw"),
    pytest.param(b"\x04", [EndOfInput(closed=False)], b"", id="ctrl-d-empty-line"),
    pytest.param(b"a\x04b\n", [Line("ab")], b"", id="ctrl-d-inside-line"),
    pytest.param(b"ab\x7fc\x08d\n", [Line("ad")], b"", id="backspace-delete"),
    pytest.param("é\x7f!\n".encode(), [Line("!")], b"", id="erase-whole-utf8-char"),
    pytest.param(b"ab" + bytes([IAC, EC]) + b"\n", [Line("a")], b"", id="iac-ec"),
    pytest.param(b"ab" + bytes([IAC, EL]) + b"c\n", [Line("c")], b"", id="iac-el"),
    pytest.param(bytes([IAC, AYT]) + b"x\n", [Line("x")], b"\r\n[yes]\r\n", id="iac-ayt"),
    pytest.param(
        b"a" + bytes([IAC, NOP, IAC, GA, IAC, 242, IAC, 243, IAC, 245, IAC, SE]) + b"b\n",
        [Line("ab")],
        b"",
        id="simple-commands",
    ),
    pytest.param(b"a\0b\n", [Line("ab")], b"", id="nul-dropped"),
    pytest.param(b"\xc3\x28\xff\xff\n", [Line("\ufffd(\ufffd")], b"", id="bad-utf8"),
    pytest.param("grüße\r\n".encode(), [Line("grüße")], b"", id="utf8"),
]


@pytest.mark.parametrize(("data", "events", "replies"), CASES)
def test_telnet_input_at_every_split(data: bytes, events: list[Event], replies: bytes) -> None:
    for chunks in splits(data):
        got_events, got_replies = run(chunks)
        assert (got_events, got_replies) == (events, replies), chunks


@pytest.mark.parametrize(("data", "events", "replies"), CASES)
def test_telnet_input_with_trailing_data(data: bytes, events: list[Event], replies: bytes) -> None:
    got_events, got_replies = run([data + b"tail\n"])
    assert got_events[: len(events)] == events
    assert got_events[len(events) :] == [Line("tail")]
    assert got_replies == replies


def test_telnet_crlf_split_makes_no_empty_line() -> None:
    assert run([b"buy\r", b"\n", b"list\r", b"\n"])[0] == [Line("buy"), Line("list")]


def test_telnet_partial_line_is_delivered_at_eof() -> None:
    assert run([b"last words"], eof=True)[0] == [Line("last words"), EndOfInput(closed=True)]


def test_telnet_eof_repeats() -> None:
    conn = TelnetConnection()
    conn.receive_eof()
    assert conn.next_event() == EndOfInput(closed=True)
    assert conn.next_event() == EndOfInput(closed=True)
    with pytest.raises(RuntimeError):
        conn.receive_data(b"late")


def test_telnet_long_line_is_reported_and_discarded() -> None:
    data = b"x" * 50 + b"\r\nok\r\n"
    for chunks in splits(data):
        events, _ = run(chunks, max_line=10)
        assert events == [LineTooLong(size=50, limit=10), Line("ok")], chunks


def test_telnet_line_of_exactly_max_line_is_accepted() -> None:
    assert run([b"x" * 10 + b"\n"], max_line=10)[0] == [Line("x" * 10)]


def test_telnet_memory_stays_bounded_on_an_endless_line() -> None:
    conn = TelnetConnection(max_line=100)
    for _ in range(1000):
        conn.receive_data(b"y" * 4096)
        assert conn.next_event() is NEED_DATA
        assert len(conn._line) <= 100 and len(conn._buf) == 0
    conn.receive_data(b"\n")
    assert conn.next_event() == LineTooLong(size=4096 * 1000, limit=100)


def test_telnet_long_subnegotiation_is_skipped_without_storing_it() -> None:
    for chunks in splits(bytes([IAC, SB, TTYPE]) + b"z" * 1000 + bytes([IAC, SE]) + b"ok\n"):
        assert run(chunks)[0] == [Line("ok")]
    conn = TelnetConnection()
    conn.receive_data(bytes([IAC, SB, TTYPE]) + b"z" * 1000)
    assert conn.next_event() is NEED_DATA
    assert len(conn._buf) == 0


def test_telnet_subnegotiation_without_end_does_not_swallow_the_session() -> None:
    data = bytes([IAC, SB, TTYPE]) + b"z" * 1023 + b"lost se\n"  # 1 KiB of payload
    for chunks in [[data], [data[:500], data[500:]], [data[:1030], data[1030:]]]:
        assert run(chunks)[0] == [Line("lost se")], chunks
    cut = bytes([IAC, SB, NAWS, 0]) + bytes([IAC, DO, ECHO]) + b"x\n"
    assert run([cut])[0] == [Line("x")]


def test_telnet_subnegotiation_of_escaped_iacs_hits_the_bound() -> None:
    # Issue 9.8: IAC IAC pairs inside an SB were not counted, so IAC SB 24 followed by
    # any number of them never reached the 1,024-byte bound and swallowed every line.
    pairs = 600  # 1 + 1,200 bytes after SB: past the bound; 88 pairs left over as data
    data = bytes([IAC, SB, TTYPE]) + bytes([IAC, IAC]) * pairs + b"\r\nhello\r\n"
    for chunks in splits(data):
        events = run(chunks)[0]
        assert events[-1] == Line("hello"), chunks if len(chunks) < 3 else len(chunks)
    conn = TelnetConnection()
    conn.receive_data(bytes([IAC, SB, TTYPE]))
    for _ in range(99):  # 198,000 pairs: still bounded, and the line after gets through
        conn.receive_data(bytes([IAC, IAC]) * 2000)
        while (event := conn.next_event()) is not NEED_DATA:
            assert isinstance(event, LineTooLong)
        assert len(conn._buf) == 0 and len(conn._line) <= conn.max_line
    conn.receive_data(b"\r\nhello\r\n")
    assert [conn.next_event(), conn.next_event()] == [
        LineTooLong(size=2000 * 99 - 512, limit=4096),  # the pairs after the bound: 0xFF data
        Line("hello"),
    ]


def test_telnet_interrupt_answers_timing_mark_before_the_program_reacts() -> None:
    conn = TelnetConnection()
    conn.receive_data(b"abc" + bytes([IAC, IP, IAC, DO, TM]))
    assert conn.next_event() == Interrupt()
    # The WONT TM must be sendable before the program redraws its prompt.
    assert conn.data_to_send() == bytes([IAC, WONT, TM])


def test_telnet_output_line_ends_and_iac_doubling() -> None:
    conn = TelnetConnection()
    assert conn.send("a\nb\r\nc\rd") == b"a\r\nb\r\nc\r\0d"
    latin = TelnetConnection(encoding="latin-1")
    assert latin.send("\xff\n") == b"\xff\xff\r\n"
    assert conn.send("") == b""


def test_telnet_pending_output_line_tracks_the_prompt() -> None:
    conn = TelnetConnection()
    conn.send("hello\nshop")
    conn.send("> ")
    assert conn.pending_output_line == "shop> "
    conn.send("done\n")
    assert conn.pending_output_line == ""


def test_telnet_echo_negotiation_with_a_telnet_client() -> None:
    conn = TelnetConnection()
    assert conn.echo_off() == bytes([IAC, WILL, ECHO])
    assert conn.echo_off() == b""  # never ask twice
    conn.receive_data(bytes([IAC, DO, ECHO]) + b"secret\r\n")
    assert conn.next_event() == Line("secret")
    assert conn.data_to_send() == b""  # an answer is not acknowledged
    assert conn.echo_is_off
    assert conn.echo_on() == bytes([IAC, WONT, ECHO])
    conn.receive_data(bytes([IAC, DONT, ECHO]))
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""
    assert not conn.echo_is_off


def test_telnet_echo_refused_by_client() -> None:
    conn = TelnetConnection()
    conn.echo_off()
    conn.receive_data(bytes([IAC, DONT, ECHO]))
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""
    assert conn.echo_on() == b""


def test_telnet_echo_with_a_raw_client_sends_nothing_back() -> None:
    conn = TelnetConnection()
    assert conn.echo_off() == bytes([IAC, WILL, ECHO])
    conn.receive_data(b"secret\n")
    assert conn.next_event() == Line("secret")
    assert not conn.peer_speaks_telnet
    assert conn.echo_on() == b""


def test_telnet_client_disabling_echo_we_agreed_is_honoured() -> None:
    conn = TelnetConnection()
    conn.echo_off()
    conn.receive_data(bytes([IAC, DO, ECHO, IAC, DONT, ECHO, IAC, DONT, ECHO]))
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == bytes([IAC, WONT, ECHO])  # once, not per request
    assert not conn.echo_is_off


def test_telnet_constructor_checks_arguments() -> None:
    with pytest.raises(ValueError, match="max_line"):
        TelnetConnection(max_line=0)
    with pytest.raises(LookupError):
        TelnetConnection(encoding="no-such-codec")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_telnet_random_bytes_never_crash(chunks: list[bytes]) -> None:
    events, replies = run(chunks, eof=True, max_line=32)
    assert events[-1] == EndOfInput(closed=True)
    for event in events:
        if isinstance(event, Line):
            assert len(event.text.encode()) <= 32 * 3  # replacement chars may grow it
            assert "\r" not in event.text and "\n" not in event.text
    # Replies are only refusals, timing marks and AYT answers: well-formed commands,
    # IAC WILL/WONT/DO/DONT <option>, where the option may itself be 255 (EXOPL,
    # RFC 861), so counting IAC bytes does not count commands.
    commands = replies.replace(b"\r\n[yes]\r\n", b"")
    assert len(commands) % 3 == 0
    for i in range(0, len(commands), 3):
        assert commands[i] == 0xFF and 251 <= commands[i + 1] <= 254, commands


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40))
def test_telnet_text_round_trips_through_output_and_input(text: str) -> None:
    line = text.replace("\r", "").replace("\n", "")
    line = "".join(c for c in line if c not in "\x00\x03\x04\x08\x7f")
    wire = TelnetConnection().send(line + "\n")
    events, _ = run([wire])
    assert events == [Line(line)]


def test_telnet_pending_output_line_is_cleared_by_the_users_enter() -> None:
    conn = TelnetConnection()
    conn.send("shop> ")
    conn.receive_data(b"abc" + bytes([IAC, IP]))
    assert conn.next_event() == Interrupt()
    assert conn.pending_output_line == "shop> "  # Ctrl-C: the cursor is still on that line
    conn.receive_data(b"buy\r\n")
    assert conn.next_event() == Line("buy")
    assert conn.pending_output_line == ""


def test_telnet_refuses_option_255_with_one_command() -> None:
    # IAC WILL EXOPL (option 255): the refusal is IAC DONT 255, three bytes, not doubled.
    events, replies = run([b"\xff", b"\xfb", b"\xff"], eof=True, max_line=32)
    assert events == [EndOfInput(closed=True)]
    assert replies == b"\xff\xfe\xff"
