from __future__ import annotations

import builtins
import getpass
import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO, cast

import pytest

from sockwork.console import routing
from sockwork.console.routing import Streams


def make_streams(typed: str = "") -> tuple[Streams, io.StringIO]:
    out = io.StringIO()
    return Streams(stdin=io.StringIO(typed), stdout=out, stderr=out), out


@contextmanager
def console() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Fake console streams, installed the way pytest's capture installs its own."""
    saved = sys.stdin, sys.stdout, sys.stderr
    out, err = io.StringIO(), io.StringIO()
    sys.stdin, sys.stdout, sys.stderr = io.StringIO("console line\n"), out, err
    try:
        yield out, err
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


def test_routing_print_input_and_write_follow_the_thread() -> None:
    with console() as (console_out, _), routing.installed():
        streams, session_out = make_streams("typed by the user\n")
        with routing.bind(streams):
            print("to the session")
            sys.stdout.write("also\n")
            assert input("ask: ") == "typed by the user"
            with pytest.raises(EOFError):
                input()
            print("err", file=sys.stderr)
        print("to the console")
        assert input() == "console line"
    assert session_out.getvalue() == "to the session\nalso\nask: err\n"
    assert console_out.getvalue() == "to the console\n"


def test_routing_install_restores_exactly_what_was_there() -> None:
    with console():
        before = sys.stdin, sys.stdout, sys.stderr
        routing.install()
        routing.install()  # nested
        assert sys.stdout is not before[1]
        routing.uninstall()
        assert sys.stdout is not before[1] and routing.is_installed()
        routing.uninstall()
        assert (sys.stdin, sys.stdout, sys.stderr) == before
        assert getpass.getpass is routing._real_getpass
        assert not routing.is_installed()
    with pytest.raises(RuntimeError):
        routing.uninstall()


def test_routing_nested_install_puts_a_displaced_proxy_back() -> None:
    # A second server starting while the first is still installed must route its
    # sessions even if someone (pytest's capture, say) replaced sys.stdout meanwhile.
    with console() as (out, _):
        routing.install()
        later = io.StringIO()
        sys.stdout = later
        routing.install()  # nested
        streams, session_out = make_streams()
        with routing.bind(streams):
            print("to the session")
        print("to the console")
        assert session_out.getvalue() == "to the session\n"
        assert later.getvalue() == "to the console\n"
        assert out.getvalue() == ""
        routing.uninstall()
        routing.uninstall()
        assert sys.stdout is later
        sys.stdout = out


def test_routing_uninstall_leaves_a_stream_installed_after_it() -> None:
    with console() as (out, _):
        routing.install()
        later = io.StringIO()
        sys.stdout = later
        routing.uninstall()
        assert sys.stdout is later
        sys.stdout = out


def test_routing_threads_are_unbound_unless_wrapped() -> None:
    with console() as (console_out, _), routing.installed():
        streams, session_out = make_streams()
        with routing.bind(streams):
            loose = threading.Thread(target=print, args=("loose",))
            bound = threading.Thread(target=routing.wrap(print), args=("bound",))
            for t in (loose, bound):
                t.start()
                t.join()
        assert routing.current_streams() is None
    assert session_out.getvalue() == "bound\n"
    assert console_out.getvalue() == "loose\n"


def test_routing_isatty_fileno_encoding_follow_the_target() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

        def fileno(self) -> int:
            return 1

        @property
        def encoding(self) -> str:
            return "latin-1"

    saved = sys.stdout
    sys.stdout = Tty()
    try:
        with routing.installed():
            assert sys.stdout.isatty() and sys.stdout.fileno() == 1
            assert sys.stdout.encoding == "latin-1"
            streams, _ = make_streams()
            with routing.bind(streams):
                assert not sys.stdout.isatty()
                with pytest.raises(io.UnsupportedOperation):
                    sys.stdout.fileno()
    finally:
        sys.stdout = saved


def test_routing_getpass_asks_the_session() -> None:
    asked: list[str] = []

    def secret(prompt: str) -> str:
        asked.append(prompt)
        return "hunter2"

    out = io.StringIO()
    streams = Streams(stdin=io.StringIO(), stdout=out, stderr=out, getpass=secret)
    with routing.installed(), routing.bind(streams):
        assert getpass.getpass("pin? ") == "hunter2"
    assert asked == ["pin? "]
    plain, plain_out = make_streams("visible\n")
    with routing.installed(), routing.bind(plain):
        assert getpass.getpass() == "visible"
    assert plain_out.getvalue() == "Password: "


def test_routing_builtins_mode_patches_print_and_input_only() -> None:
    real_print, real_input, real_stdout = builtins.print, builtins.input, sys.stdout
    with console() as (console_out, _):
        routing.install("builtins")
        try:
            assert sys.stdout is console_out  # streams untouched in this mode
            streams, session_out = make_streams("yes\n")
            with routing.bind(streams):
                print("a", "b", sep="-")
                assert input("ok? ") == "yes"
                sys.stdout.write("missed\n")  # the known limit of this mode
            print("console")
        finally:
            routing.uninstall("builtins")
    assert (builtins.print, builtins.input, sys.stdout) == (real_print, real_input, real_stdout)
    assert session_out.getvalue() == "a-b\nok? "
    assert console_out.getvalue() == "missed\nconsole\n"


def test_routing_rejects_unknown_modes() -> None:
    with pytest.raises(ValueError, match="mode"):
        routing.install(cast(routing.Mode, "magic"))


def test_routing_without_a_console_drops_output() -> None:
    saved = sys.stdout
    sys.stdout = cast(TextIO, None)
    try:
        with routing.installed():
            print("nowhere")
    finally:
        sys.stdout = saved


def test_console_exports_match_the_docs() -> None:
    import re
    from pathlib import Path

    import sockwork.console

    doc = (Path(__file__).resolve().parents[2] / "docs" / "console.md").read_text()
    line = re.search(r"Exports of `sockwork.console`: (.*?)\.\n\n", doc, re.S)
    assert line is not None
    documented = set(re.findall(r"`(\w+)`", line.group(1)))
    assert documented == set(sockwork.console.__all__)


def test_routing_help_pages_plain_text_to_sessions_and_leaves_the_console_pager() -> None:
    import pydoc

    paged: list[str] = []
    before = pydoc.pager

    def console_pager(text: str, title: str = "") -> None:  # as if pydoc chose `less`
        paged.append(text)

    pydoc.pager = console_pager
    try:
        with routing.installed():
            streams, session_out = make_streams()
            with routing.bind(streams):
                help(len)
            help(abs)
        assert pydoc.pager is console_pager
    finally:
        pydoc.pager = before
    assert "len(obj, /)" in session_out.getvalue()
    assert len(paged) == 1 and "abs(x, /)" in pydoc.plain(paged[0])


def test_routing_pager_keeps_the_choice_pydoc_makes_on_first_use() -> None:
    import pydoc

    before = pydoc.pager
    chosen: list[str] = []

    def first_use(text: str, title: str = "") -> None:  # pydoc's lazy pager
        def real(text: str, title: str = "") -> None:
            chosen.append(text)

        pydoc.pager = real
        real(text)

    pydoc.pager = first_use
    try:
        with routing.installed():
            pydoc.pager("one")
            pydoc.pager("two")
            assert chosen == ["one", "two"]
            streams, out = make_streams()
            with routing.bind(streams):
                pydoc.pager("three")
        assert chosen == ["one", "two"] and out.getvalue() == "three\n"
        assert pydoc.pager.__name__ == "real"
    finally:
        pydoc.pager = before
