"""A session's line discipline, sans-IO: output buffering and the prompt kept in view.

What a telnet user sees besides the program's own output follows a few rules, pure
string work kept apart from sockets and locks (:class:`~sockwork.console.session.Session`
moves the text):

- program output is buffered until a newline, an explicit flush, or ``flush_at``
  characters, so ``print()`` goes out in one piece rather than one send per write;
- a message from elsewhere (``Session.send``, a broadcast, a disconnection notice)
  starts on its own line and, when asked, redraws the unfinished line (the prompt)
  below it;
- Ctrl-C and an over-long line are answered with a new line and the prompt again.
"""

from __future__ import annotations

__all__ = ["FLUSH_AT", "LineDiscipline"]

FLUSH_AT = 8192
"""Characters of output buffered before a write goes out without a newline."""


class LineDiscipline:
    """Buffer a session's output by line and word its out-of-band messages.

    Args:
        flush_at: characters buffered before a write goes out without a newline.
        echo_interrupt: show ``^C`` for Ctrl-C, as a terminal does; for a server-side
            line editor (SSH), where the client shows nothing itself.

    Raises:
        ValueError: ``flush_at`` is below 0.
    """

    def __init__(self, flush_at: int = FLUSH_AT, *, echo_interrupt: bool = False) -> None:
        if flush_at < 0:
            raise ValueError(f"flush_at must be >= 0 characters, got {flush_at!r}")
        self.flush_at = flush_at
        self.echo_interrupt = echo_interrupt
        self._pending: list[str] = []
        self._size = 0

    @property
    def buffered(self) -> int:
        """Characters written and not yet handed out."""
        return self._size

    def write(self, text: str) -> str | None:
        """Buffer ``text``; return what must go out now (None while it may wait)."""
        self._pending.append(text)
        self._size += len(text)
        if "\n" in text or self._size > self.flush_at:
            return self.flush()
        return None

    def flush(self) -> str | None:
        """Return everything buffered (None when nothing was written since the last flush)."""
        if not self._pending:
            return None
        text = "".join(self._pending)
        self._pending.clear()
        self._size = 0
        return text

    @staticmethod
    def notice(text: str, shown: str, *, redraw: bool) -> str:
        """Word a message shown between the program's output on its own line(s).

        ``shown`` is the unfinished line on the user's screen (a prompt, a progress
        line): the message starts below it and, with ``redraw``, it is shown again
        after the message.
        """
        message = text if text.endswith("\n") else text + "\n"
        if shown:
            message = "\n" + message
        if redraw:
            message += shown
        return message

    def interrupted(self, prompt: str) -> str:
        """The answer to Ctrl-C while the program reads: a new line and the prompt again."""
        return ("^C\n" if self.echo_interrupt else "\n") + prompt

    @staticmethod
    def line_too_long(size: int, limit: int, prompt: str) -> str:
        """The answer to a line over the limit (it was dropped), then the prompt again."""
        return f"*** line too long ({size} bytes; the limit is {limit}); it was ignored\n{prompt}"
