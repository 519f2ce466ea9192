"""The session module's error translator (_ClientGone), without sockets."""

from __future__ import annotations

import errno
from typing import Any, cast

import pytest

import sockwork.console
from sockwork.console import server, session, ssh_session, telnet_session
from sockwork.console.session import Session, _ClientGone
from sockwork.errors import ConnectionClosed


class _Marks:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def _mark_closed(self, reason: str) -> None:
        self.reasons.append(reason)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(errno.ECONNRESET, "reset"),
        BrokenPipeError(errno.EPIPE, "broken pipe"),
        ConnectionClosed("gone", address=("127.0.0.1", 1)),
        OSError(errno.EBADF, "bad fd"),
    ],
)
def test_a_client_that_is_gone_is_swallowed_and_marks_the_session(error: OSError) -> None:
    marks = _Marks()
    with _ClientGone(cast(Any, marks), "receive failed"):
        raise error
    assert marks.reasons == ["receive failed"]


def test_without_a_session_nothing_is_marked_and_no_error_is_seen() -> None:
    reached = False
    with _ClientGone():
        reached = True
    assert reached


def test_eof_is_swallowed_only_when_asked() -> None:
    with _ClientGone(eof=True):
        raise EOFError
    with pytest.raises(EOFError), _ClientGone():
        raise EOFError


def test_other_errors_propagate_and_leave_the_session_open() -> None:
    marks = _Marks()
    with pytest.raises(ValueError, match="program bug"), _ClientGone(cast(Any, marks), "x"):
        raise ValueError("program bug")
    assert marks.reasons == []


def test_moved_names_stay_importable_from_the_server_module() -> None:
    assert server.Session is Session is session.Session
    assert server.current_session is session.current_session
    assert server._SessionInput is session._SessionInput
    assert server._SessionOutput is session._SessionOutput


def test_both_transports_are_sessions_and_ssh_has_nothing_of_telnet() -> None:
    telnet, ssh = telnet_session.TelnetSession, ssh_session.SshSession
    assert issubclass(telnet, Session) and issubclass(ssh, Session)
    assert sockwork.console.Session is Session
    assert sockwork.console.TelnetSession is telnet and sockwork.console.SshSession is ssh
    for telnet_only in ("_handshake", "_wait", "_shutdown_socket", "_send_now", "_abort"):
        assert hasattr(telnet, telnet_only)
        assert not hasattr(ssh, telnet_only), telnet_only
