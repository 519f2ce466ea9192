"""Notices on the manager's console: lines that other threads post (customers come and go).

# Rules:
# - ``post()`` never blocks: it runs in a customer's session thread, which must not
#   wait for the manager's terminal. Lines go into a bounded queue; when it is full
#   the line is dropped and counted, and the count is printed with the next line.
# - One daemon thread writes the lines. If the terminal stops reading (Ctrl-S, a
#   full pipe), only that thread waits.
# - On a terminal, a notice that arrives while the manager is typing clears the
#   line (``CR``, ``ESC [K``), prints the notice, and redraws the prompt and what
#   was typed so far (``readline.get_line_buffer()``), as an asynchronous message
#   in a shell does. The cursor ends at the end of the line; readline's own idea of
#   the cursor is unchanged, so typing goes on. Elsewhere (a pipe, a log) a notice
#   is one plain line.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import IO

__all__ = ["Notices"]

_CLEAR_LINE = "\r\x1b[K"  # carriage return, then erase to the end of the line (ECMA-48 EL)


class Notices:
    """Lines for the manager's console, posted from any thread, written by one thread.

    Args:
        stream: where the lines go (the manager's terminal).
        limit: lines waiting at most; more are dropped (and counted) until there is room.
        quiet: start silenced (see :attr:`quiet`).
    """

    def __init__(self, stream: IO[str], *, limit: int = 256, quiet: bool = False) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.stream = stream
        self.limit = limit
        self.quiet = quiet
        self.dropped = 0  # lines dropped because the queue was full, since the last report
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=limit)
        self._lock = threading.Lock()
        self._pending_line: Callable[[], str | None] = _no_line
        self._closed = False
        self._thread = threading.Thread(target=self._write_all, name="storify-notices", daemon=True)
        self._thread.start()

    def attach(self, pending_line: Callable[[], str | None]) -> None:
        """Redraw with ``pending_line()``: the prompt and typed text, or None when not typing."""
        self._pending_line = pending_line

    def post(self, text: str) -> bool:
        """Queue one line for the console; returns False when quiet, closed or full.

        Never blocks, whatever the console is doing.
        """
        if self.quiet or self._closed:
            return False
        try:
            self._queue.put_nowait(text)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (waiting at most ``timeout`` s), then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return  # the stream is stuck: the daemon thread is left to the exit
        self._thread.join(timeout)

    def _write_all(self) -> None:
        while True:
            text = self._queue.get()
            if text is None:
                return
            with self._lock:
                dropped, self.dropped = self.dropped, 0
            if dropped:
                text += f"\n({dropped} more notice(s) dropped: the console was not keeping up)"
            try:
                self._write(text)
            except (OSError, ValueError):
                return  # the terminal is gone or closed: nothing more can be shown

    def _write(self, text: str) -> None:
        line = self._pending_line() if self.stream.isatty() else None
        if line is None:
            self.stream.write(text + "\n")
        else:
            self.stream.write(f"{_CLEAR_LINE}{text}\n{line}")
        self.stream.flush()


def _no_line() -> str | None:
    return None
