"""A length-prefixed request/answer over TCP: the client reads the answer with one recv.

Usage: python framed.py [--correct] [--port PORT | --spawn-server]
Without an option the script starts its own server (a thread) and talks to it; with
--port it talks to a server already running on 127.0.0.1:PORT (see serve()); with
--spawn-server it starts the server as a second Python process (``--serve``, which
prints its port and answers one connection). The buggy client
takes one recv() as one message; --correct reads until the whole message is there.
Its contract: exit status 0 with the right answer, or with a clean network error
(an OSError: refused, reset, timed out, cut short); a wrong answer, or any other
exception, is a bug.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading

ANSWER = b"the answer is forty-two, " * 8


def serve(listener: socket.socket, *, once: bool = False) -> None:
    """Answer each connection: read a length-prefixed request, send a length-prefixed answer."""
    while True:
        if once and serve.answered:  # type: ignore[attr-defined]
            return
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        serve.answered = True  # type: ignore[attr-defined]
        with conn:
            try:
                conn.settimeout(5)
                header = _exactly(conn, 4)
                _exactly(conn, struct.unpack("!I", header)[0])
                conn.sendall(struct.pack("!I", len(ANSWER)) + ANSWER)
            except OSError:
                pass


class CutShort(ConnectionError):
    """The peer closed the connection in the middle of a message."""


serve.answered = False  # type: ignore[attr-defined]


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise CutShort(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def ask(port: int, *, correct: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        request = b"question"
        sock.sendall(struct.pack("!I", len(request)) + request)
        if correct:
            size = struct.unpack("!I", _exactly(sock, 4))[0]
            return _exactly(sock, size)
        data = sock.recv(65536)  # the bug: one recv taken as one message
        size = struct.unpack("!I", data[:4])[0]
        return data[4 : 4 + size]


def spawn_and_ask(*, correct: bool) -> bytes:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        answer = ask(port, correct=correct)
        server.wait(10)  # it answers one connection, then exits
        return answer
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main(argv: list[str]) -> int:
    correct = "--correct" in argv
    if "--serve" in argv:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            print(listener.getsockname()[1], flush=True)
            serve(listener, once=True)
        return 0
    try:
        if "--port" in argv:
            answer = ask(int(argv[argv.index("--port") + 1]), correct=correct)
        elif "--spawn-server" in argv:
            answer = spawn_and_ask(correct=correct)
        else:
            with socket.create_server(("127.0.0.1", 0)) as listener:
                thread = threading.Thread(
                    target=serve, args=(listener,), kwargs={"once": True}, daemon=True
                )
                thread.start()
                try:
                    answer = ask(listener.getsockname()[1], correct=correct)
                finally:
                    # The server's side ends before the program does (shutdown wakes
                    # an accept() still waiting for a client that never came).
                    listener.shutdown(socket.SHUT_RDWR)
                    thread.join(5)
    except OSError as exc:  # a clean network error keeps the contract
        print(f"network error: {exc!r}")
        return 0
    assert answer == ANSWER, f"wrong answer: {answer[:40]!r}..."
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
