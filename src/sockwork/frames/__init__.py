"""Complete messages over a TCP byte stream: a sans-IO codec and its front ends.

- :mod:`sockwork.frames.codec`: ``FrameEncoder``/``FrameDecoder`` (sans-IO) and ``Format``.
- :mod:`sockwork.frames.payload`: payload codecs ``BYTES``, ``TEXT``, ``JSON``, ``MSGPACK``...
- :mod:`sockwork.frames.blocking`: ``MessageSocket`` and ``connect``.
- :mod:`sockwork.frames.aio`: ``open_connection``, ``start_server``, ``MessageStream``,
  ``MessageServer``.
- :mod:`sockwork.frames.endpoint`: ``Endpoint``, moved by one shared background thread.
"""

from __future__ import annotations

from sockwork.frames.aio import (
    DEFAULT_MAX_BUFFERED,
    MessageServer,
    MessageStream,
    open_connection,
    start_server,
)
from sockwork.frames.blocking import MessageSocket, connect
from sockwork.frames.codec import (
    DEFAULT_MAX_SIZE,
    MAX_HEADER_SIZE,
    NEED_DATA,
    Format,
    FrameDecoder,
    FrameEncoder,
    Message,
    NeedData,
    Payload,
)
from sockwork.frames.endpoint import DEFAULT_MAX_QUEUE, Endpoint
from sockwork.frames.payload import BYTES, BYTES_OR_TEXT, JSON, MSGPACK, TEXT, Codec

__all__ = [
    "BYTES",
    "BYTES_OR_TEXT",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_SIZE",
    "JSON",
    "MAX_HEADER_SIZE",
    "MSGPACK",
    "NEED_DATA",
    "TEXT",
    "Codec",
    "Endpoint",
    "Format",
    "FrameDecoder",
    "FrameEncoder",
    "Message",
    "MessageServer",
    "MessageSocket",
    "MessageStream",
    "NeedData",
    "Payload",
    "connect",
    "open_connection",
    "start_server",
]
