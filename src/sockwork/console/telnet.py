"""Sans-IO telnet layer: bytes from a telnet client in, lines and control events out.

Feed it what the socket delivered with :meth:`TelnetConnection.receive_data` (and
:meth:`~TelnetConnection.receive_eof` when the peer closed), then call
:meth:`~TelnetConnection.next_event` until it returns :data:`NEED_DATA`. After each
event, send :meth:`~TelnetConnection.data_to_send` (negotiation replies) to the
peer. Text for the peer goes through :meth:`~TelnetConnection.send`, which returns
the bytes to write. Nothing here touches a socket or a clock.
"""

# Rules (RFC 854 unless said otherwise):
# - Input is parsed lazily, one event per next_event() call, so what is buffered is at
#   most one received chunk plus one line of at most max_line bytes. SB...SE payloads
#   are skipped, never stored.
# - Every IAC sequence is removed from the data: IAC IAC is a literal 0xFF; DO/DONT/
#   WILL/WONT take one option byte; SB runs to IAC SE; the rest are two-byte commands.
# - An SB longer than 1024 bytes (IAC IAC pairs count as 2) lost its IAC SE: parsing
#   goes back to data there, so no peer can hide every later line inside an SB.
# - The server never starts a negotiation at connect (nc and scripts must see no
#   garbage and no delay) and refuses every option: WILL x -> DONT x, DO x -> WONT x,
#   except DO TIMING-MARK -> WONT TIMING-MARK (RFC 860): BSD/netkit telnet sends
#   IAC IP IAC DO TM on Ctrl-C and hides all output until it gets an answer.
# - ECHO is the one option the server offers, only around password prompts
#   (echo_off/echo_on), tracked with RFC 1143's four states so that no request is ever
#   acknowledged twice and negotiation cannot loop. A peer that never spoke telnet
#   is not sent WONT ECHO afterwards nor offered ECHO again: one 3-byte offer is all a
#   raw client ever sees.
# - Requests to disable (WONT/DONT) are always honoured; requests for a state already
#   in effect get no reply.
# - Line ends: CR LF, CR NUL, bare CR and bare LF each end one line; the byte after a
#   CR is swallowed if it is LF or NUL, even when it arrives in a later chunk, so a
#   split CR LF never makes an empty line.
# - IAC IP and Ctrl-C (0x03) cancel the partial line; Ctrl-D (0x04) on an empty line is
#   end of input, elsewhere it is dropped; NUL is dropped; BS/DEL and IAC EC erase one
#   character, IAC EL the whole partial line.
# - Lines are decoded as a whole with errors="replace": bad bytes never raise.
# - Output: "\n" becomes CR LF, a bare "\r" becomes CR NUL, 0xFF is doubled.

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "NEED_DATA",
    "EndOfInput",
    "Event",
    "Interrupt",
    "Line",
    "LineTooLong",
    "NeedData",
    "TelnetConnection",
]

# Command bytes (RFC 854).
IAC: Final = 255
DONT: Final = 254
DO: Final = 253
WONT: Final = 252
WILL: Final = 251
SB: Final = 250
EL: Final = 248
EC: Final = 247
AYT: Final = 246
IP: Final = 244
SE: Final = 240
# Options.
ECHO: Final = 1
TIMING_MARK: Final = 6

_CR: Final = 0x0D
_LF: Final = 0x0A
_NUL: Final = 0x00
_CTRL_C: Final = 0x03
_CTRL_D: Final = 0x04
_BS: Final = 0x08
_DEL: Final = 0x7F

# Bytes that need a decision in the data state; everything else is plain text.
_SPECIAL = re.compile(rb"[\x00\x03\x04\x08\x0a\x0d\x7f\xff]")

# Parser states.
_DATA: Final = 0
_GOT_IAC: Final = 1
_GOT_VERB: Final = 2  # after IAC DO/DONT/WILL/WONT, waiting for the option byte
_IN_SB: Final = 3
_SB_GOT_IAC: Final = 4

# ECHO option states on our side (RFC 1143 "us" queue, without the opposite bit).
_NO: Final = 0
_YES: Final = 1
_WANT_YES: Final = 2
_WANT_NO: Final = 3

_MAX_SUBNEGOTIATION: Final = 1024  # bytes after IAC SB skipped before an SB is deemed broken
_TAIL_KEEP: Final = 256  # characters of the last unterminated output line kept for redraw


class NeedData:
    """Type of :data:`NEED_DATA`: the connection needs more bytes before the next event."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True)
class Line:
    """A complete input line, decoded, without its terminator."""

    text: str


@dataclass(frozen=True)
class Interrupt:
    """The user pressed Ctrl-C (IAC IP or 0x03): the partial line was discarded."""


@dataclass(frozen=True)
class EndOfInput:
    """No more input: Ctrl-D on an empty line (``closed`` False) or the peer closed."""

    closed: bool


@dataclass(frozen=True)
class LineTooLong:
    """A line of ``size`` bytes exceeded ``limit`` and was discarded."""

    size: int
    limit: int


Event = Line | Interrupt | EndOfInput | LineTooLong


class TelnetConnection:
    """The server side of one telnet conversation, without I/O.

    Args:
        max_line: the longest input line in bytes; longer lines are discarded and
            reported as :class:`LineTooLong`. Memory stays bounded by this.
        encoding: the text encoding of both directions (UTF-8 unless told otherwise).
    """

    def __init__(self, *, max_line: int = 4096, encoding: str = "utf-8") -> None:
        if not isinstance(max_line, int) or max_line < 1:
            raise ValueError(f"max_line must be a positive int, got {max_line!r}")
        "".encode(encoding)  # LookupError now rather than at the first line
        self.max_line = max_line
        self.encoding = encoding
        self._buf = bytearray()
        self._pos = 0
        self._state = _DATA
        self._verb = 0
        self._sb_left = 0
        self._after_cr = False
        self._line = bytearray()
        self._overflow = 0  # bytes of the current line seen beyond what is kept; 0 = none
        self._eof = False
        self._out = bytearray()
        self._echo = _NO
        self._spoke_telnet = False
        self._offer_ignored = False
        self._tail = ""

    # -- input ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the peer; parse them with :meth:`next_event`."""
        if self._eof:
            raise RuntimeError("receive_data() after receive_eof()")
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def receive_eof(self) -> None:
        """Record that the peer closed its side; a partial line is still delivered."""
        self._eof = True

    @property
    def peer_speaks_telnet(self) -> bool:
        """True once the peer has sent any IAC sequence (a raw client such as nc never does)."""
        return self._spoke_telnet

    def next_event(self) -> Event | NeedData:
        """Return the next input event, or :data:`NEED_DATA` when the buffer is used up."""
        event = self._parse()
        if event is not None:
            self._answer_following_negotiation()
            return event
        if not self._eof:
            return NEED_DATA
        if self._line or self._overflow:
            return self._end_line()
        return EndOfInput(closed=True)

    def data_to_send(self) -> bytes:
        """Return (and forget) the protocol replies waiting to be sent to the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _parse(self) -> Event | None:
        buf = self._buf
        end = len(buf)
        pos = self._pos
        try:
            while pos < end:
                state = self._state
                if state == _DATA:
                    if self._after_cr:
                        self._after_cr = False
                        if buf[pos] in (_LF, _NUL):
                            pos += 1
                            continue
                    match = _SPECIAL.search(buf, pos)
                    stop = match.start() if match else end
                    if stop > pos:
                        self._append(buf, pos, stop)
                        pos = stop
                        continue
                    byte = buf[pos]
                    pos += 1
                    if byte == IAC:
                        self._state = _GOT_IAC
                        self._spoke_telnet = True
                    elif byte == _CR or byte == _LF:
                        self._after_cr = byte == _CR
                        return self._end_line()
                    elif byte == _CTRL_C:
                        return self._interrupt()
                    elif byte == _CTRL_D:
                        if not self._line and not self._overflow:
                            return EndOfInput(closed=False)
                    elif byte == _BS or byte == _DEL:
                        self._erase_char()
                    # NUL and a Ctrl-D inside a line are dropped.
                elif state == _GOT_IAC:
                    byte = buf[pos]
                    pos += 1
                    self._state = _DATA
                    if byte == IAC:
                        self._append(b"\xff", 0, 1)
                    elif DONT >= byte >= WILL:
                        self._verb = byte
                        self._state = _GOT_VERB
                    elif byte == SB:
                        self._state = _IN_SB
                        self._sb_left = _MAX_SUBNEGOTIATION
                    elif byte == IP:
                        return self._interrupt()
                    elif byte == EC:
                        self._erase_char()
                    elif byte == EL:
                        self._line.clear()
                        self._overflow = 0
                    elif byte == AYT:
                        self._out += b"\r\n[yes]\r\n"
                    # GA, AO, BRK, DM, NOP, a stray SE or a non-command byte: nothing to do.
                elif state == _GOT_VERB:
                    option = buf[pos]
                    pos += 1
                    self._state = _DATA
                    self._negotiate(self._verb, option)
                elif state == _IN_SB:
                    found = buf.find(b"\xff", pos)
                    stop = end if found < 0 else found
                    self._sb_left -= stop - pos
                    if self._sb_left < 0:
                        # No real subnegotiation is this long (NAWS is 4 bytes, a
                        # terminal name a few dozen): the SE was lost; back to data.
                        pos = stop + self._sb_left
                        self._state = _DATA
                    elif found < 0:
                        pos = end
                    else:
                        pos = found + 1
                        self._state = _SB_GOT_IAC
                else:  # _SB_GOT_IAC
                    byte = buf[pos]
                    pos += 1
                    # IAC SE ends the subnegotiation; IAC IAC is payload. Any other
                    # command inside SB is a broken peer: end the SB there (RFC 855
                    # leaves it undefined) and read that command as a command.
                    if byte == IAC:
                        # Both bytes count towards the bound: a peer sending IAC IAC
                        # forever must not keep the SB (and every later line) open.
                        self._sb_left -= 2
                        self._state = _IN_SB if self._sb_left >= 0 else _DATA
                    elif byte == SE:
                        self._state = _DATA
                    else:
                        self._state = _GOT_IAC
                        pos -= 1
            return None
        finally:
            self._pos = pos
            if pos == end:
                buf.clear()
                self._pos = 0

    def _answer_following_negotiation(self) -> None:
        # Ctrl-C arrives as IAC IP IAC DO TM and the client hides output until the TM
        # answer: answer negotiations already buffered behind an event now, so that the
        # reply goes out before whatever the program writes in response to the event.
        buf = self._buf
        pos = self._pos
        while (
            self._state == _DATA
            and pos + 2 < len(buf)
            and buf[pos] == IAC
            and WILL <= buf[pos + 1] <= DONT
        ):
            self._negotiate(buf[pos + 1], buf[pos + 2])
            pos += 3
        self._pos = pos
        if pos == len(buf):
            buf.clear()
            self._pos = 0

    def _append(self, data: bytes | bytearray, start: int, stop: int) -> None:
        if self._overflow:
            self._overflow += stop - start
            return
        room = self.max_line - len(self._line)
        if stop - start <= room:
            self._line += data[start:stop]
        else:
            self._overflow = len(self._line) + stop - start
            self._line.clear()

    def _end_line(self) -> Event:
        self._tail = ""  # the user's Enter moved the client's cursor to a new line
        if self._overflow:
            size = self._overflow
            self._overflow = 0
            return LineTooLong(size=size, limit=self.max_line)
        text = self._line.decode(self.encoding, "replace")
        self._line.clear()
        return Line(text)

    def _interrupt(self) -> Event:
        self._line.clear()
        self._overflow = 0
        self._after_cr = False
        return Interrupt()

    def _erase_char(self) -> None:
        line = self._line
        if self._overflow or not line:
            return
        # Remove one whole UTF-8 character: continuation bytes, then their lead byte.
        while line and 0x80 <= line[-1] < 0xC0:
            line.pop()
        if line:
            line.pop()

    def _negotiate(self, verb: int, option: int) -> None:
        if verb == WILL:
            # The peer offers an option; refuse (we never agree to any).
            self._out += bytes((IAC, DONT, option))
        elif verb == WONT:
            pass  # already off on the peer's side: never acknowledge.
        elif verb == DO:
            if option == TIMING_MARK:
                self._out += bytes((IAC, WONT, TIMING_MARK))
            elif option == ECHO:
                if self._echo == _NO:
                    self._out += bytes((IAC, WONT, ECHO))
                elif self._echo == _WANT_YES:
                    self._echo = _YES
                elif self._echo == _WANT_NO:
                    # RFC 1143: DONT answered by DO; the peer thinks we echo, but we asked
                    # to stop and it will see our WONT; settle on NO.
                    self._echo = _NO
            else:
                self._out += bytes((IAC, WONT, option))
        else:  # DONT
            if option == ECHO:
                if self._echo == _YES:
                    self._out += bytes((IAC, WONT, ECHO))
                self._echo = _NO

    # -- output --------------------------------------------------------------------

    def send(self, text: str) -> bytes:
        """Return the wire bytes for ``text``: CR LF line ends, CR NUL for bare CR, 0xFF doubled."""
        if not text:
            return b""
        newline = text.rfind("\n")
        if newline >= 0:
            self._tail = text[newline + 1 :][-_TAIL_KEEP:]
        else:
            self._tail = (self._tail + text)[-_TAIL_KEEP:]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\r\0")
        data = text.replace("\n", "\r\n").encode(self.encoding, "replace")
        if b"\xff" in data:
            data = data.replace(b"\xff", b"\xff\xff")
        return data

    @property
    def pending_output_line(self) -> str:
        """The text shown on the client's current line (the prompt), at most 256 characters.

        It is what was sent since the last newline, and empty once the user ended a line.
        """
        return self._tail

    def echo_off(self) -> bytes:
        """Return the bytes asking the client to stop echoing the user's typing (IAC WILL ECHO)."""
        if self._echo in (_YES, _WANT_YES):
            return b""
        if self._offer_ignored and not self._spoke_telnet:
            return b""  # a raw client ignored the last offer: do not show it garbage again
        self._echo = _WANT_YES
        return bytes((IAC, WILL, ECHO))

    def echo_on(self) -> bytes:
        """Return the bytes that give local echo back to the client (``IAC WONT ECHO``).

        Nothing is sent to a peer that never spoke telnet and never answered the
        offer: a raw client did not change its echo and would only see garbage.
        """
        if self._echo in (_NO, _WANT_NO):
            return b""
        if self._echo == _WANT_YES and not self._spoke_telnet:
            self._echo = _NO
            self._offer_ignored = True
            return b""
        self._echo = _WANT_NO
        return bytes((IAC, WONT, ECHO))

    @property
    def echo_is_off(self) -> bool:
        """True while the server has offered (or agreed) to echo, so the client does not."""
        return self._echo in (_YES, _WANT_YES)
