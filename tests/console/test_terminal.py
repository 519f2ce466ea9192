"""The line discipline (console/terminal.py), sans-IO: no sockets, no threads."""

from __future__ import annotations

import pytest

from sockwork.console.terminal import FLUSH_AT, LineDiscipline


def test_output_waits_for_a_newline_then_goes_out_in_one_piece() -> None:
    term = LineDiscipline()
    assert term.write("total: ") is None
    assert term.write("3") is None
    assert term.buffered == 8
    assert term.write(" items\nmore") == "total: 3 items\nmore"
    assert term.buffered == 0


def test_a_long_line_goes_out_past_the_threshold_without_a_newline() -> None:
    term = LineDiscipline(flush_at=10)
    assert term.write("x" * 10) is None
    assert term.write("y") == "x" * 10 + "y"
    assert LineDiscipline().flush_at == FLUSH_AT == 8192


def test_flush_hands_out_the_rest_and_tells_nothing_apart_from_empty_writes() -> None:
    term = LineDiscipline()
    assert term.flush() is None
    assert term.write("") is None
    assert term.flush() == ""  # a write happened: the session still sends (and may fail)
    assert term.flush() is None
    term.write("(Cmd) ")
    assert term.flush() == "(Cmd) "


def test_flush_at_below_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="flush_at must be >= 0"):
        LineDiscipline(flush_at=-1)


@pytest.mark.parametrize(
    ("text", "shown", "redraw", "expected"),
    [
        ("hello", "", True, "hello\n"),
        ("hello\n", "", False, "hello\n"),
        ("hello", "(Cmd) ", True, "\nhello\n(Cmd) "),
        ("bye", "(Cmd) ", False, "\nbye\n"),
        ("two\nlines", "> ", True, "\ntwo\nlines\n> "),
    ],
)
def test_a_notice_gets_its_own_line_and_redraws_the_prompt(
    text: str, shown: str, redraw: bool, expected: str
) -> None:
    assert LineDiscipline.notice(text, shown, redraw=redraw) == expected


def test_interrupt_and_line_too_long_answers_show_the_prompt_again() -> None:
    term = LineDiscipline()
    assert term.interrupted("(Cmd) ") == "\n(Cmd) "
    assert LineDiscipline(echo_interrupt=True).interrupted("> ") == "^C\n> "  # an SSH editor
    assert term.line_too_long(5000, 4096, "(Cmd) ") == (
        "*** line too long (5000 bytes; the limit is 4096); it was ignored\n(Cmd) "
    )
