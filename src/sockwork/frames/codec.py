"""The sans-IO framing core: bytes in, complete messages out, and back.

:class:`FrameDecoder` is fed bytes (``receive_data``, or ``get_buffer`` +
``buffer_updated`` to receive straight into its buffer) and hands back complete
messages (``next_message``, iteration). :class:`FrameEncoder` turns messages into
bytes to send. Neither touches a socket, a clock or a thread: the blocking,
background and asyncio front ends drive them.

Wire formats (:class:`Format`):

- ``U32`` (default): 4-byte big-endian unsigned length, then the payload.
- ``VARINT``: protobuf-style LEB128 length (low 7-bit groups first, high bit set
  means "more follows"), then the payload.
- ``STOCKINGS``: the wire format of the Stockings package 1.2.3. The length is a
  variable-length integer, low groups first, where the high bit means "this is the
  **last** header byte"; the first byte carries 6 length bits and a type bit
  (0x40 set: bytes, clear: UTF-8 text).

Messages: :data:`Message` is ``bytes | str``. U32 and VARINT carry no type, so they
always decode to ``bytes`` (a ``str`` given to the encoder is sent as its UTF-8
bytes). STOCKINGS decodes a text frame to ``str`` and a bytes frame to ``bytes``, and
encodes a ``str`` as a text frame and any bytes-like object as a bytes frame.

Empty messages: every format sends them. STOCKINGS sends an empty message as a
one-byte header (``0x80`` for text, ``0xC0`` for bytes) and the decoder delivers it
as ``""`` or ``b""``. The real Stockings package cannot send one (its ``write("")`` is
a no-op) but, receiving one, returns ``""`` or ``b""`` from ``read()`` (tested).
"""

# Rules:
# - Bytes live in one bytearray, ``_buf``, with the unparsed region ``_buf[_start:_end]``
#   (except a large payload: see below).
#   It is never resized in place (a memoryview handed out by ``get_buffer`` may still be
#   alive, and resizing an exported bytearray raises BufferError): growing allocates a new
#   bytearray, compacting moves the live region to the front with a same-size assignment.
# - A frame's header is parsed once; its result is remembered in ``_hlen``/``_plen``/``_text``
#   until the payload is complete, so every byte is examined O(1) times (h11's ReceiveBuffer).
# - ``max_size`` is checked as soon as a header is complete, before any allocation for the
#   payload. Variable-length headers are bounded to MAX_HEADER_SIZE bytes.
# - Memory grows only with bytes that arrived (issue 9): a payload over _LARGE goes into
#   its own io.BytesIO, grown to at most _JUMP times what arrived plus 64 KiB, in few
#   steps (see _grow), and never past the frame's end; when complete, getvalue() hands
#   out the BytesIO's own bytes object, so the message costs one copy (kernel -> its
#   final buffer). Views of that buffer are released before it grows or is handed out
#   (a live view makes BytesIO copy instead).
# - Errors are sticky: once the stream is broken (ProtocolError, MessageTooLarge) every
#   later call raises the same exception. Complete messages before the bad header are
#   still returned first, because parsing is lazy.

from __future__ import annotations

import enum
import io
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Final, TypeAlias

from sockwork.errors import ConnectionClosed, IncompleteMessage, MessageTooLarge, ProtocolError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "MAX_HEADER_SIZE",
    "NEED_DATA",
    "Format",
    "FrameDecoder",
    "FrameEncoder",
    "Message",
    "NeedData",
    "Payload",
]

DEFAULT_MAX_SIZE: Final = 16 * 1024 * 1024
"""Default limit on one message's payload, in bytes (16 MiB)."""

MAX_HEADER_SIZE: Final = 10
"""Longest variable-length header accepted (VARINT, STOCKINGS): enough for 2**63 bytes."""

_U32_LIMIT: Final = 2**32 - 1
_CHUNK: Final = 64 * 1024  # default size of a get_buffer() view and of the buffer
_LARGE: Final = _CHUNK  # payloads larger than this get a buffer of their own
_MAX_VIEW: Final = 256 * 1024  # largest view get_buffer() offers beyond what was asked
_GROWTH: Final = 4  # a large frame's buffer grows to this times what arrived (or +64 KiB)
_JUMP: Final = 16  # ... and to the whole frame once that is at most this times what arrived
_BATCH_BELOW: Final = 1024  # a U32 frame with a smaller payload starts a batch (see _take_batch)
_BATCH_BYTES: Final = 16 * 1024  # bytes of the buffer one batch decodes, at most
_U32 = struct.Struct(">I")
_pack_u32 = _U32.pack
_unpack_u32 = _U32.unpack_from

Payload: TypeAlias = bytes | bytearray | memoryview
"""A message to send as raw bytes: any bytes-like object (buffer protocol)."""

Message: TypeAlias = bytes | str
"""A decoded message: bytes, or str for a STOCKINGS text frame."""


class Format(enum.Enum):
    """The wire format: how a message's length (and, for STOCKINGS, type) is written."""

    U32 = "u32"
    """4-byte big-endian unsigned length (Twisted Int32StringReceiver, Java DataInputStream)."""
    VARINT = "varint"
    """Protobuf-style LEB128 length (``writeDelimitedTo`` / ``parseDelimitedFrom``)."""
    STOCKINGS = "stockings"
    """The Stockings 1.2.3 format: inverted-flag varint length with a text/bytes type bit."""


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by :meth:`FrameDecoder.next_message` when no complete message is buffered."""


def _check_format(format: Format | str) -> Format:
    if isinstance(format, Format):
        return format
    if isinstance(format, str):
        try:
            return Format(format.lower())
        except ValueError:
            pass
    accepted = ", ".join(f.name for f in Format)
    raise ValueError(f"format must be one of {accepted} (sockwork.frames.Format), not {format!r}")


def _check_max_size(max_size: int, format: Format) -> int:
    if not isinstance(max_size, int) or isinstance(max_size, bool):
        raise TypeError(f"max_size must be an int, not {type(max_size).__name__}")
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0 bytes, not {max_size}")
    if format is Format.U32 and max_size > _U32_LIMIT:
        raise ValueError(f"max_size must be <= 2**32-1 with Format.U32, not {max_size}")
    return max_size


class FrameEncoder:
    """Turns messages into framed bytes for one direction of a connection.

    Args:
        format: the wire format (default ``Format.U32``); a name like ``"varint"`` works too.
        max_size: largest payload accepted, in bytes (default 16 MiB); larger messages
            raise :class:`MessageTooLarge` before anything is produced.

    A message is any bytes-like object or a ``str`` (sent as UTF-8; a text frame in
    STOCKINGS format). The encoder keeps no state between messages.
    """

    def __init__(
        self, format: Format | str = Format.U32, *, max_size: int = DEFAULT_MAX_SIZE
    ) -> None:
        self.format: Final = _check_format(format)
        self.max_size: Final = _check_max_size(max_size, self.format)
        self._u32 = self.format is Format.U32

    def __repr__(self) -> str:
        return f"FrameEncoder({self.format.name}, max_size={self.max_size})"

    def header(self, size: int, *, text: bool = False) -> bytes:
        """Return the header for a payload of ``size`` bytes.

        Args:
            size: payload length in bytes (after UTF-8 encoding for text).
            text: mark the frame as UTF-8 text; only STOCKINGS carries this bit, the
                other formats ignore it.

        Raises:
            MessageTooLarge: ``size`` exceeds ``max_size``.
        """
        if size > self.max_size:
            raise MessageTooLarge(size, self.max_size)
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        fmt = self.format
        if fmt is Format.U32:
            return _pack_u32(size)
        if fmt is Format.VARINT:
            out = bytearray()
            while size > 0x7F:
                out.append((size & 0x7F) | 0x80)
                size >>= 7
            out.append(size)
            return bytes(out)
        # STOCKINGS: first byte = last-flag | type bit (set for bytes) | 6 length bits.
        first = (size & 0x3F) | (0 if text else 0x40)
        size >>= 6
        if not size:
            return bytes((first | 0x80,))
        out = bytearray((first,))
        while size > 0x7F:
            out.append(size & 0x7F)
            size >>= 7
        out.append(size | 0x80)
        return bytes(out)

    def send_parts(self, message: Payload | str) -> tuple[bytes, Payload]:
        """Return ``(header, payload)`` for ``message`` without copying the payload.

        Front ends pass both to ``socket.sendmsg`` so a large payload is never
        copied. ``payload`` is ``message`` itself for a bytes-like message, or its
        UTF-8 encoding for a ``str``.

        Raises:
            MessageTooLarge: the payload exceeds ``max_size``.
            TypeError: ``message`` is neither a str nor a bytes-like object.
        """
        if self._u32 and type(message) is bytes:  # hot path for the default format
            size = len(message)
            if size > self.max_size:
                raise MessageTooLarge(size, self.max_size)
            return _pack_u32(size), message
        if isinstance(message, str):
            data: Payload = message.encode("utf-8")
            return self.header(len(data), text=True), data
        if isinstance(message, (bytes, bytearray)):
            return self.header(len(message)), message
        view = _as_byte_view(message)
        return self.header(view.nbytes), view

    def send(self, message: Payload | str) -> bytes:
        """Return the framed bytes (header + payload) of one message.

        Raises:
            MessageTooLarge: the payload exceeds ``max_size``.
            TypeError: ``message`` is neither a str nor a bytes-like object.
        """
        header, payload = self.send_parts(message)
        return header + payload if isinstance(payload, bytes) else b"".join((header, payload))

    def send_many(self, messages: Iterable[Payload | str]) -> bytes:
        """Return the framed bytes of several messages, concatenated (one send for all).

        Raises:
            MessageTooLarge: a payload exceeds ``max_size``; nothing is returned.
            TypeError: a message is neither a str nor a bytes-like object.
        """
        parts: list[Payload] = []
        append = parts.append
        if self.format is Format.U32:
            # Hot path for many small messages: no per-message method call.
            limit = self.max_size
            for message in messages:
                if isinstance(message, bytes):
                    size = len(message)
                    if size > limit:
                        raise MessageTooLarge(size, limit)
                    append(_pack_u32(size))
                    append(message)
                else:
                    header, payload = self.send_parts(message)
                    append(header)
                    append(payload)
        else:
            for message in messages:
                header, payload = self.send_parts(message)
                append(header)
                append(payload)
        return b"".join(parts)

    def send_batch(
        self, messages: Iterable[Payload | str], *, join_below: int = 16 * 1024
    ) -> tuple[list[bytes], list[int]]:
        """Return several framed messages as buffers for one scatter/gather send.

        Consecutive frames whose payload is smaller than ``join_below`` bytes are
        joined into one buffer; a larger payload is a buffer of its own (not copied
        when it is ``bytes``; a mutable one is copied, as the caller may change it
        after this returns). A queue counts whole messages with the second list.

        Returns:
            ``(buffers, ends)``: the bytes to send, in order, and for each message the
            offset just past its last byte.

        Raises:
            MessageTooLarge: a payload exceeds ``max_size``; nothing is returned.
            TypeError: a message is neither a str nor a bytes-like object.
        """
        limit = self.max_size
        if self._u32:
            # Hot path: a batch of small bytes messages in the default format, framed in a
            # loop without method calls; anything else starts over on the general path.
            messages = messages if isinstance(messages, list) else list(messages)
            below = min(join_below, limit + 1)
            parts: list[bytes] = []
            add = parts.append
            ends: list[int] = []
            end_at = ends.append
            total = 0
            for message in messages:
                if type(message) is not bytes:
                    break
                size = len(message)
                if size >= below:
                    break
                add(_pack_u32(size))
                add(message)
                total += size + 4
                end_at(total)
            else:
                return ([b"".join(parts)] if parts else []), ends
        buffers: list[bytes] = []
        small: list[bytes] = []
        ends = []
        end_at = ends.append
        total = 0
        u32 = self._u32
        for message in messages:
            if u32 and type(message) is bytes:
                # Hot path for the default format: no per-message method call.
                size = len(message)
                if size > limit:
                    raise MessageTooLarge(size, limit)
                header = _pack_u32(size)
                payload: bytes = message
            else:
                header, view = self.send_parts(message)
                payload = view if type(view) is bytes else bytes(view)
                size = len(payload)
            total += len(header) + size
            end_at(total)
            small.append(header)
            if size < join_below:
                small.append(payload)
            else:
                buffers.append(b"".join(small))
                small = []
                buffers.append(payload)
        if small:
            buffers.append(b"".join(small))
        return buffers, ends


def _as_byte_view(message: object) -> memoryview:
    try:
        view = memoryview(message)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"a message must be str or a bytes-like object, not {type(message).__name__}"
        ) from None
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class FrameDecoder:
    """Turns received bytes into complete messages for one direction of a connection.

    Args:
        format: the wire format (default ``Format.U32``); a name like ``"varint"`` works too.
        max_size: largest payload accepted, in bytes (default 16 MiB). A header declaring
            more raises :class:`MessageTooLarge` as soon as it is complete, before the
            payload is buffered.

    Feed it with :meth:`receive_data` (or :meth:`get_buffer` + :meth:`buffer_updated`)
    and :meth:`receive_eof`; take messages with :meth:`next_message` or by iterating.
    Decoded messages are ``bytes``, or ``str`` for a STOCKINGS text frame.

    Memory follows the bytes that arrive, not the sizes that headers announce: a frame
    larger than 64 KiB is received into a buffer of its own that grows with what
    arrived (at most 16 times that plus 64 KiB, never past the frame's end; it takes
    the frame's whole size once that is within this bound, so a frame up to 1 MiB
    is allocated once). That buffer is
    the returned ``bytes`` object itself (not a copy), so its memory goes with the
    message. :attr:`capacity` tells what is allocated, :attr:`commitment` what the
    pending frame may still add.
    """

    def __init__(
        self, format: Format | str = Format.U32, *, max_size: int = DEFAULT_MAX_SIZE
    ) -> None:
        self.format: Final = _check_format(format)
        self.max_size: Final = _check_max_size(max_size, self.format)
        self._buf = bytearray()  # allocated on first use: an idle connection costs nothing
        self._view = memoryview(self._buf)
        self._start = 0  # first byte of the current frame (header included)
        self._end = 0  # end of received data
        self._hlen = 0  # header length of the current frame; 0 while not parsed
        self._plen = 0  # payload length of the current frame, once the header is parsed
        self._text = False  # current frame is STOCKINGS text
        self._eof = False
        self._error: Exception | None = None
        self._u32 = self.format is Format.U32
        self._parse_header = {
            Format.U32: self._parse_u32,
            Format.VARINT: self._parse_varint,
            Format.STOCKINGS: self._parse_stockings,
        }[self.format]
        # A large frame's payload, received into its own growing buffer (see _enter_large).
        self._large = False  # the current frame's payload goes to _final, not _buf
        self._final: io.BytesIO | None = None  # the message's bytes, grown as they arrive
        self._final_view = memoryview(b"")  # getbuffer() of _final, released before growing
        self._final_size = 0  # bytes allocated in _final
        self._got = 0  # payload bytes of the large frame received so far
        self._into_final = False  # the last get_buffer() view was into _final
        # Small U32 messages decoded together by _take_batch, not yet returned, and the
        # sum of their lengths.
        self._ready: deque[bytes] = deque()
        self._ready_size = 0

    def __repr__(self) -> str:
        return (
            f"FrameDecoder({self.format.name}, max_size={self.max_size}, "
            f"buffered={self.buffered}, eof={self._eof})"
        )

    @property
    def buffered(self) -> int:
        """Number of received bytes not yet returned as messages."""
        return self._end - self._start + self._got + self._ready_size

    @property
    def missing(self) -> int:
        """Bytes still to receive to complete the frame whose header was parsed, else 0.

        A front end can skip waking its reader while this is positive: no message can
        be complete yet. Headers are parsed as data arrives, so this is up to date
        after every :meth:`receive_data` or :meth:`buffer_updated`.
        """
        if not self._hlen:
            return 0
        if self._large:
            return self._plen - self._got
        missing = self._start + self._hlen + self._plen - self._end
        return missing if missing > 0 else 0

    @property
    def capacity(self) -> int:
        """Bytes allocated for received data now (the buffer, a large frame's own, and
        decoded messages not yet returned)."""
        return len(self._buf) + self._final_size + self._ready_size

    @property
    def commitment(self) -> int:
        """:attr:`capacity` plus what the large frame being received will still allocate.

        A server bounding the memory of all its connections reserves this much before
        reading on (see ``start_server(max_buffered=...)``); it stays constant while a
        large frame arrives and drops when the message is returned.
        """
        capacity = self.capacity
        if not self._hlen or self._plen <= _LARGE:
            return capacity
        if self._large:
            return capacity + self._plen - self._final_size
        missing = self._start + self._hlen + self._plen - self._end
        return capacity + missing if missing > 0 else capacity

    @property
    def eof(self) -> bool:
        """True once :meth:`receive_eof` was called."""
        return self._eof

    # -- feeding ---------------------------------------------------------------------

    def receive_data(self, data: Payload) -> None:
        """Append received bytes to the buffer (copied once; ``data`` may be reused).

        Raises:
            RuntimeError: called after :meth:`receive_eof`.
        """
        if self._eof:
            raise RuntimeError("receive_data() called after receive_eof()")
        if not isinstance(data, (bytes, bytearray)):
            data = _as_byte_view(data)
        size = len(data)
        if not size:
            return
        if self._large and self._got < self._plen:
            take = min(size, self._plen - self._got)
            self._grow(self._got + take, self._got + take)
            self._final_view[self._got : self._got + take] = data[:take]
            self._got += take
            if take == size:
                return
            data = data[take:]
            size -= take
        self._reserve(size)
        end = self._end
        self._view[end : end + size] = data
        self._end = end + size
        if not self._hlen:
            self._parse_head()

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Return a writable view to receive into directly (``socket.recv_into``).

        Same contract as ``asyncio.BufferedProtocol.get_buffer``: write up to
        ``len(view)`` bytes into it, then call :meth:`buffer_updated` with the count,
        before any other call. The view is at least ``min(sizehint, 64 KiB)`` bytes
        (64 KiB when ``sizehint`` <= 0), or the rest of a pending frame if that is
        less; it offers at most 256 KiB beyond that. Memory grows only with the bytes
        that arrive: a large frame's buffer grows to at most 16 times what it received
        plus 64 KiB.

        Raises:
            RuntimeError: called after :meth:`receive_eof`.
        """
        if self._eof:
            raise RuntimeError("get_buffer() called after receive_eof()")
        want = sizehint if 0 < sizehint < _CHUNK else _CHUNK
        if self._large:
            if self._got < self._plen:
                return self._final_buffer()
        elif self._hlen:
            missing = self._start + self._hlen + self._plen - self._end
            if missing > 0:
                if self._plen > _LARGE:
                    self._enter_large()
                    return self._final_buffer()
                # Room for the whole rest of the current (small) frame: it then finishes
                # in place instead of being moved to the front first.
                want = max(want, missing)
        self._into_final = False
        self._reserve(want)
        end = self._end
        # Offer spare room too (fewer, larger reads) but bounded, so a caller pausing at a
        # buffered-bytes limit overshoots it by at most _MAX_VIEW.
        return self._view[end : end + max(want, min(len(self._buf) - end, _MAX_VIEW))]

    def buffer_updated(self, nbytes: int) -> None:
        """Record that ``nbytes`` bytes were written into the last :meth:`get_buffer` view."""
        if self._into_final:
            if nbytes < 0 or self._got + nbytes > self._final_size:
                raise ValueError(f"nbytes must be between 0 and the view's length, not {nbytes}")
            self._got += nbytes
            return
        if nbytes < 0 or self._end + nbytes > len(self._buf):
            raise ValueError(f"nbytes must be between 0 and the view's length, not {nbytes}")
        self._end += nbytes
        if not self._hlen:
            self._parse_head()

    def receive_eof(self) -> None:
        """Record that the peer closed its side: no more data will come."""
        self._eof = True

    def _parse_head(self) -> None:
        """Parse the first frame's header if it is complete, so ``missing`` is known.

        An error is kept (sticky) and raised by :meth:`next_message`.
        """
        if self._error is not None or self._end == self._start:
            return
        try:
            self._parse_header()
        except (ProtocolError, MessageTooLarge) as exc:
            self._error = exc

    def _reserve(self, size: int) -> None:
        """Make room for ``size`` more bytes after ``_end``."""
        buf_len = len(self._buf)
        if buf_len - self._end >= size:
            return
        start, end = self._start, self._end
        live = end - start
        if start and buf_len - live >= size and live <= buf_len // 2:
            # Compact in place (same-size assignment; memoryview copies with memmove).
            self._view[0:live] = self._view[start:end]
        else:
            new = bytearray(max(buf_len * 2, live + size, _CHUNK))
            new[0:live] = self._view[start:end]
            self._buf = new
            self._view = memoryview(new)
        self._start = 0
        self._end = live

    def _shrink(self) -> None:
        """Give back a buffer grown by a burst once little of it is in use."""
        live = self._end - self._start
        if live > _CHUNK // 2:
            return
        new = bytearray(_CHUNK if live else 0)
        new[0:live] = self._view[self._start : self._end]
        self._buf = new
        self._view = memoryview(new)
        self._start = 0
        self._end = live

    # -- large frames: the payload in its own buffer, grown as it arrives ---------------

    def _enter_large(self) -> None:
        """Receive the pending frame's payload into a buffer of its own."""
        payload = self._start + self._hlen
        have = self._end - payload
        self._large = True
        self._final = io.BytesIO()
        self._final_size = 0
        self._got = 0
        if have:
            self._grow(have, have)
            self._final_view[0:have] = self._view[payload : self._end]
            self._got = have
        self._start = self._end = 0

    def _grow(self, need: int, arrived: int) -> None:
        """Make the final buffer hold at least ``need`` bytes (at most the frame's size).

        ``arrived`` is how many of the frame's payload bytes have arrived (or are being
        stored now): the size allowed follows it.
        """
        if need <= self._final_size:
            return
        # Follow what arrived: 64 KiB while little has come, then four times what arrived,
        # and the whole frame at once when it is at most _JUMP times what arrived. Each
        # growth is a realloc that may copy and leaves freed blocks behind (measured: a
        # 1 MiB frame grown in five steps cost ~130 page faults per message in a
        # background Endpoint, ~30 when allocated in one step), so few steps matter more
        # than a tight fit. A hostile header still costs at most _JUMP times what its
        # sender sent, plus 64 KiB.
        if _JUMP * arrived + _CHUNK >= self._plen:
            size = self._plen
        else:
            size = max(need, _CHUNK, _GROWTH * arrived)
        final = self._final
        assert final is not None
        self._final_view.release()
        try:
            # Writing the last byte resizes the BytesIO's own bytes object (a realloc,
            # which moves no data for large blocks); getvalue() hands it out uncopied.
            final.seek(size - 1)
            final.write(b"\0")
        except BufferError:  # a caller still holds an old view: move to a new buffer
            old = final.getbuffer()
            final = self._final = io.BytesIO()
            final.seek(size - 1)
            final.write(b"\0")
            with final.getbuffer() as view:
                view[: self._got] = old[: self._got]
            old.release()
        self._final_view = final.getbuffer()
        self._final_size = size

    def _final_buffer(self) -> memoryview:
        if self._got == self._final_size:
            self._grow(self._got + 1, self._got)
        self._into_final = True
        return self._final_view[self._got : self._final_size]

    def _take_large(self) -> Message:
        """Return the completed large frame's message and release its buffer."""
        final = self._final
        assert final is not None
        self._final_view.release()
        # The BytesIO's own bytes object, not a copy, unless a caller still holds a view.
        data = final.getvalue()
        self._final = None
        self._final_size = 0
        self._final_view = memoryview(b"")
        self._got = 0
        self._large = False
        self._hlen = 0
        text = self._text
        self._parse_head()  # bytes after the frame may already hold the next header
        return self._decode_text(data) if text else data

    # -- header parsers: return True when the header of the frame at _start is complete --

    def _parse_u32(self) -> bool:
        if self._end - self._start < 4:
            return False
        self._set_header(4, _unpack_u32(self._buf, self._start)[0], False)
        return True

    def _parse_varint(self) -> bool:
        buf, pos, end = self._buf, self._start, self._end
        limit = min(end, pos + MAX_HEADER_SIZE)
        length = shift = 0
        while pos < limit:
            byte = buf[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self._set_header(pos - self._start, length, False)
                return True
            shift += 7
        self._check_runaway(pos)
        return False

    def _parse_stockings(self) -> bool:
        buf, pos, end = self._buf, self._start, self._end
        if pos >= end:
            return False
        first = buf[pos]
        pos += 1
        length = first & 0x3F
        text = not first & 0x40
        if first & 0x80:
            self._set_header(1, length, text)
            return True
        limit = min(end, self._start + MAX_HEADER_SIZE)
        shift = 6
        while pos < limit:
            byte = buf[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if byte & 0x80:
                self._set_header(pos - self._start, length, text)
                return True
            shift += 7
        self._check_runaway(pos)
        return False

    def _check_runaway(self, pos: int) -> None:
        if pos - self._start >= MAX_HEADER_SIZE:
            raise ProtocolError(
                f"{self.format.name} header longer than {MAX_HEADER_SIZE} bytes: "
                "the peer does not speak this format (check format= on both ends)"
            )

    def _set_header(self, hlen: int, plen: int, text: bool) -> None:
        if plen > self.max_size:
            raise MessageTooLarge(plen, self.max_size)
        self._hlen = hlen
        self._plen = plen
        self._text = text

    # -- taking messages ---------------------------------------------------------------

    def next_message(self) -> Message | NeedData:
        """Return the next complete message, or :data:`NEED_DATA` if none is buffered.

        Returns:
            ``bytes``, or ``str`` for a STOCKINGS text frame; ``NEED_DATA`` when more
            data is needed.

        Raises:
            ConnectionClosed: EOF was received and every message has been returned.
            IncompleteMessage: EOF was received in the middle of a frame.
            MessageTooLarge: a header declares more than ``max_size`` bytes.
            ProtocolError: a header is longer than MAX_HEADER_SIZE, or a STOCKINGS text
                frame is not valid UTF-8.

        The last three are sticky: the stream cannot be resynchronised, so every
        later call raises the same exception.
        """
        ready = self._ready
        if ready:
            taken = ready.popleft()
            self._ready_size -= len(taken)
            return taken
        if self._error is not None:
            raise self._error
        if self._large:
            return self._take_large() if self._got == self._plen else self._need_data()
        hlen = self._hlen
        if hlen:
            plen = self._plen
        elif self._u32:
            # Hot path for the default format: the header parsed inline.
            start = self._start
            if self._end - start < 4:
                return self._need_data() if len(self._buf) <= _CHUNK else self._shrink_need()
            plen = _unpack_u32(self._buf, start)[0]
            if plen > self.max_size:
                self._error = MessageTooLarge(plen, self.max_size)
                raise self._error
            hlen = 4
        else:
            try:
                if not self._parse_header():
                    return self._need_data()
            except (ProtocolError, MessageTooLarge) as exc:
                self._error = exc
                raise
            hlen = self._hlen
            plen = self._plen
        start = self._start + hlen
        end = start + plen
        if end > self._end:
            self._hlen = hlen
            self._plen = plen
            return self._need_data() if len(self._buf) <= _CHUNK else self._shrink_need()
        self._hlen = 0
        if plen < _BATCH_BELOW and self._u32 and self._end - end >= 4:
            # Another header follows: take every small frame buffered in one loop.
            return self._take_batch()
        if self._end == end:
            # Buffer drained: restart at offset 0 so it never needs compacting.
            self._start = self._end = 0
            if len(self._buf) > _CHUNK:
                message = (
                    self._decode_text(self._view[start:end])
                    if self._text
                    else bytes(self._view[start:end])
                )
                self._shrink()  # a burst is over: give its memory back
                return message
        else:
            self._start = end
        if self._text:
            return self._decode_text(self._view[start:end])
        return bytes(self._view[start:end])

    def next_messages(self) -> list[Message]:
        """Return the next complete messages, oldest first; ``[]`` when none is buffered.

        One call hands out a batch (the small frames of up to 16 KiB of buffered data,
        decoded in one loop, or one larger message): call it again until it returns
        ``[]``. A front end that queues messages for its callers takes them this way
        without a method call per message.

        Raises:
            what :meth:`next_message` raises, and only when no message precedes the
            error: messages decoded before it are returned first, and the error (sticky,
            or the clean end) is raised by the next call.
        """
        message = self.next_message()
        if message is NEED_DATA:
            return []
        ready = self._ready
        if not ready:
            return [message]
        messages = [message, *ready]
        ready.clear()
        self._ready_size = 0
        return messages

    def _take_batch(self) -> bytes:
        """Decode the complete U32 frames at ``_start`` in one loop; return the first.

        The caller checked that the first frame is complete and small. Per message this
        costs a header unpack and a ``bytes`` slice, with no method call and no
        attribute access: a burst of small messages is taken ~3x faster than by
        ``next_message`` one at a time. The region is copied once into a ``bytes``
        object (slicing ``bytes`` is about twice as fast as ``bytes(memoryview[...])``),
        at most _BATCH_BYTES of it, so the extra memory is bounded; the messages wait
        in ``_ready``. Anything else (a partial frame, a header over ``max_size``)
        stops the loop and is left to ``next_message``, which raises errors in order.
        """
        start = self._start
        stop = self._end
        if stop - start > _BATCH_BYTES:
            stop = start + _BATCH_BYTES
        chunk = bytes(self._view[start:stop])
        size = len(chunk)
        limit = self.max_size
        unpack = _unpack_u32
        ready = self._ready
        append = ready.append
        pos = 4  # just past the header of the frame being decoded
        if limit >= _BATCH_BYTES:
            # A payload over max_size cannot fit in the chunk: `end > size` catches it.
            while pos <= size:
                end = pos + unpack(chunk, pos - 4)[0]
                if end > size:
                    break
                append(chunk[pos:end])
                pos = end + 4
        else:
            while pos <= size:
                end = pos + unpack(chunk, pos - 4)[0]
                if end > size or end - pos > limit:
                    break
                append(chunk[pos:end])
                pos = end + 4
        consumed = pos - 4
        count = len(ready)
        self._ready_size += consumed - 4 * count
        start += consumed
        if start == self._end:
            self._start = self._end = 0
            if len(self._buf) > _CHUNK:
                self._shrink()  # a burst is over: give its memory back
        else:
            self._start = start
        message = ready.popleft()
        self._ready_size -= len(message)
        return message

    def _decode_text(self, data: bytes | memoryview) -> str:
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError as exc:
            error = ProtocolError(
                f"a STOCKINGS text frame of {len(data)} bytes is not valid UTF-8 "
                f"({exc.reason} at byte {exc.start})"
            )
            error.__cause__ = exc
            self._error = error
            raise error from exc

    def _shrink_need(self) -> NeedData:
        """NEED_DATA after giving back most of a buffer that a burst grew."""
        self._shrink()
        return self._need_data()

    def _need_data(self) -> NeedData:
        if not self._eof:
            return NEED_DATA
        if self._hlen:
            received = self._got if self._large else self._end - self._start - self._hlen
            self._error = IncompleteMessage(received, self._plen)
        elif self._end > self._start:
            self._error = IncompleteMessage(self._end - self._start, None)
        else:
            raise ConnectionClosed("the peer closed the connection", by_peer=True)
        raise self._error

    def __iter__(self) -> Iterator[Message]:
        """Yield every complete buffered message; stop at NEED_DATA or at a clean EOF.

        Raises what :meth:`next_message` raises, except :class:`ConnectionClosed` on a
        clean EOF, which ends the iteration.
        """
        next_message = self.next_message
        while True:
            try:
                message = next_message()
            except IncompleteMessage:
                raise
            except ConnectionClosed:
                return
            if message is NEED_DATA:
                return
            yield message
