"""asyncio front end: whole messages over a stream transport.

``open_connection`` and ``start_server`` give a :class:`MessageStream` with the same
method names and errors as the blocking ``MessageSocket`` (``send``, ``send_many``,
``recv``, iteration, ``close``), plus ``abort`` and ``wait_closed``. ``start_server``
returns a :class:`MessageServer`, whose ``close()`` also closes the connections it
accepted.

The package's modules, each one thing:

- ``_protocol.py``: the ``asyncio.BufferedProtocol`` that receives straight into the
  decoder's buffer and paces reading (read high water mark, a server's memory budget);
- ``_direct.py``: large frames written straight to the socket on Python 3.11;
- ``_stream.py``: ``MessageStream`` (sending, coalescing, receiving, closing) and
  ``open_connection``;
- ``_server.py``: ``start_server`` and ``MessageServer`` (connection limit, idle
  timeout, closing what it accepted).
"""

from __future__ import annotations

from sockwork.frames.aio._server import DEFAULT_MAX_BUFFERED, MessageServer, start_server
from sockwork.frames.aio._stream import MessageStream, open_connection

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "MessageServer",
    "MessageStream",
    "open_connection",
    "start_server",
]
