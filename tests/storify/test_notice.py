from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import pytest

from storify.notice import Notices
from storify.repl import StoreREPL
from storify.service import StoreService
from storify.store import Store

TIMEOUT = 10.0


class Terminal(io.StringIO):
    """A StringIO that says it is a terminal and lets a test wait for text."""

    def __init__(self, *, tty: bool = True) -> None:
        super().__init__()
        self.tty = tty
        self.changed = threading.Condition()

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        with self.changed:
            written = super().write(text)
            self.changed.notify_all()
        return written

    def wait_for(self, text: str) -> str:
        with self.changed:
            assert self.changed.wait_for(lambda: text in self.getvalue(), TIMEOUT), (
                f"{text!r} never came; got {self.getvalue()!r}"
            )
            return self.getvalue()


class StuckTerminal(Terminal):
    """A terminal whose writes block until released (Ctrl-S, a full pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait(TIMEOUT)
        return super().write(text)


@pytest.fixture
def store() -> Iterator[Store]:
    with Store() as store:
        store.seed_demo()
        yield store


def test_notices_plain_lines_when_not_a_terminal() -> None:
    out = Terminal(tty=False)
    notices = Notices(out)
    notices.attach(lambda: "Manager> typed")
    assert notices.post("Customer connected ('127.0.0.1', 5) [t1]")
    notices.close()
    assert out.getvalue() == "Customer connected ('127.0.0.1', 5) [t1]\n"


def test_notices_redraw_the_prompt_and_typed_text_on_a_terminal() -> None:
    out = Terminal()
    notices = Notices(out)
    line: list[str | None] = ["Manager> add mu"]
    notices.attach(lambda: line[0])
    notices.post("Customer connected ('127.0.0.1', 5) [t1]")
    out.wait_for("[t1]")
    line[0] = None  # the manager is running a command: no prompt to redraw
    notices.post("Customer disconnected ('127.0.0.1', 5) [t1]")
    notices.close()
    assert out.getvalue() == (
        "\r\x1b[KCustomer connected ('127.0.0.1', 5) [t1]\nManager> add mu"
        "Customer disconnected ('127.0.0.1', 5) [t1]\n"
    )


def test_notices_post_never_blocks_on_a_stuck_terminal() -> None:
    out = StuckTerminal()
    notices = Notices(out, limit=4)
    assert notices.post("first")
    assert out.entered.wait(TIMEOUT)  # the writer thread is stuck writing "first"
    results: list[bool] = []

    def flood() -> None:
        results.extend(notices.post(f"line {n}") for n in range(1000))

    poster = threading.Thread(target=flood)
    poster.start()
    poster.join(TIMEOUT)
    assert not poster.is_alive(), "post() blocked behind the stuck terminal"
    # Four lines wait in the queue; the rest were dropped and counted.
    assert results == [True] * 4 + [False] * 996
    assert notices.dropped == 996
    out.release.set()
    out.wait_for("line 3\n")
    assert notices.post("after")
    notices.close()
    # The first line written after the drops says how many were lost, once.
    assert out.getvalue().splitlines() == [
        "first",
        "line 0",
        "(996 more notice(s) dropped: the console was not keeping up)",
        "line 1",
        "line 2",
        "line 3",
        "after",
    ]
    assert notices.dropped == 0


def test_notices_quiet_and_closed_drop_silently() -> None:
    out = Terminal(tty=False)
    notices = Notices(out, quiet=True)
    assert not notices.post("hidden")
    notices.quiet = False
    assert notices.post("shown")
    notices.close()
    assert not notices.post("too late")
    assert out.getvalue() == "shown\n"
    assert notices.dropped == 0
    with pytest.raises(ValueError, match="limit"):
        Notices(out, limit=0)


def test_store_repl_quiet_command(store: Store) -> None:
    out = Terminal(tty=False)
    notices = Notices(out)
    console = io.StringIO()
    script = "quiet\nquiet off\nquiet loudly\nQUIET ON\n"
    StoreREPL(store, notices=notices, stdin=io.StringIO(script), stdout=console).cmdloop()
    text = console.getvalue()
    assert text.count("Quiet: customers coming and going are no longer shown") == 2
    assert "Customers coming and going are shown again.\n" in text
    assert "Usage: quiet [on|off]" in text
    assert notices.quiet
    notices.close()
    bare = io.StringIO()
    StoreREPL(store, stdin=io.StringIO("quiet\n"), stdout=bare).cmdloop()
    assert "There are no connection notices here" in bare.getvalue()


def test_store_repl_pending_line_only_at_the_prompt(store: Store) -> None:
    seen: list[str | None] = []
    console = io.StringIO()
    repl = StoreREPL(store, stdin=io.StringIO("audit\n"), stdout=console)
    assert repl.pending_line() is None  # not started
    repl.do_audit = lambda arg: seen.append(repl.pending_line())  # type: ignore[method-assign]
    original_postcmd = repl.postcmd

    def postcmd(stop: bool, line: str) -> bool:
        result = original_postcmd(stop, line)
        seen.append(repl.pending_line())
        return result

    repl.postcmd = postcmd  # type: ignore[method-assign]
    repl.cmdloop()
    # Busy during the command; at the prompt after it; the EOF that closes it stops.
    assert seen == [None, "Manager> ", None]
    assert repl.pending_line() is None


def test_service_announces_telnet_customers_coming_and_going(store: Store) -> None:
    out = Terminal(tty=False)
    notices = Notices(out)
    with StoreService(store, port=0, api_port=0, notices=notices) as service:
        with socket.create_connection(service.telnet_address, timeout=TIMEOUT) as customer:
            port = customer.getsockname()[1]
            out.wait_for(f"Customer connected ('127.0.0.1', {port}) [t1]\n")
            customer.sendall(b"exit\r\n")
            out.wait_for(f"Customer disconnected ('127.0.0.1', {port}) [t1]\n")
        with socket.create_connection(service.telnet_address, timeout=TIMEOUT) as kicked:
            port = kicked.getsockname()[1]
            out.wait_for(f"Customer connected ('127.0.0.1', {port}) [t2]\n")
            assert service.kick("t2")
            out.wait_for(f"Customer disconnected ('127.0.0.1', {port}) [t2]\n")
        with socket.create_connection(service.telnet_address, timeout=TIMEOUT) as gone:
            port = gone.getsockname()[1]
            out.wait_for("[t3]\n")
        out.wait_for(f"Customer disconnected ('127.0.0.1', {port}) [t3]\n")  # just hung up
    notices.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 6, lines
