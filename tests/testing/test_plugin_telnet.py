"""The telnet_client fixture: TelnetClient objects closed after the test."""

from __future__ import annotations

import socket

import pytest

from sockwork.testing.plugin import TelnetFactory

SERVER = '''
import socket
import threading

import pytest


@pytest.fixture
def greeter():
    """A server that greets each connection with a prompt and echoes one line."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            conn.sendall(b"hello> ")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[:2], conns
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)
    for conn in conns:
        conn.close()
'''


def test_telnet_client_fixture_connects_and_closes_after_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(SERVER)
    pytester.makepyfile(
        """
        import pytest

        made = []

        def test_uses(telnet_client, greeter):
            address, conns = greeter
            client = telnet_client(address, timeout=5, negotiate=False)
            made.append(client)
            assert client.read_until("hello> ") == b"hello> "
            made.append(telnet_client(address))

        def test_they_were_closed():
            assert len(made) == 2
            assert all(client.socket.fileno() == -1 for client in made)

        def test_failing_test_still_closes(telnet_client, greeter):
            made.append(telnet_client(greeter[0]))
            raise AssertionError("boom")

        def test_closed_after_failure():
            assert made[-1].socket.fileno() == -1
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, failed=1)


def test_telnet_client_fixture_raises_what_connecting_raises(
    telnet_client: TelnetFactory,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
    with pytest.raises(ConnectionRefusedError):
        telnet_client(address)
