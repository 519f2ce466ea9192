"""Shop through the store's API from a program: a blocking client over ``sockwork.frames``.

::

    from storify.client import StoreClient

    with StoreClient.connect(("127.0.0.1", 65433)) as shop:
        shop.request("add", product="mug", quantity=2)
        order = shop.request("checkout", request_id="my-unique-id")["order"]

A reply with ``ok: false`` raises :class:`ApiError` carrying the server's ``code``
and facts. See :mod:`storify.api` for the operations.
"""

from __future__ import annotations

import itertools
from types import TracebackType
from typing import TYPE_CHECKING

from sockwork.errors import ProtocolError
from sockwork.frames import JSON, Format, MessageSocket, connect
from sockwork.frames.aio import MessageStream, open_connection
from storify.errors import ApiError, api_error

if TYPE_CHECKING:
    from typing import Self

__all__ = ["MAX_MESSAGE", "ApiError", "AsyncStoreClient", "StoreClient", "result_of"]

MAX_MESSAGE = 1024 * 1024  # bytes: the largest API message either side accepts


def result_of(reply: object) -> dict[str, object]:
    """Return the ``result`` of an API reply, or raise :class:`ApiError` for an error reply.

    Raises:
        ApiError: the reply says ``ok: false``; the subclass names its code
            (``OutOfStockReply``, ``StoreBusy``...: see :mod:`storify.errors`).
        ProtocolError: the reply is not an API reply at all.
    """
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ProtocolError(f"not a storify API reply: {reply!r:.200}")
    if reply["ok"]:
        result = reply.get("result")
        if not isinstance(result, dict):
            raise ProtocolError(f"storify API reply without a result: {reply!r:.200}")
        return result
    error = reply.get("error")
    if not isinstance(error, dict):
        raise ProtocolError(f"storify API error reply without an error: {reply!r:.200}")
    facts = {k: v for k, v in error.items() if k not in ("code", "message")}
    raise api_error(str(error.get("code")), str(error.get("message")), facts)


def _refusal(reply: dict[str, object]) -> None:
    """Raise the error of a reply to no request (``id: null``): the store refused the
    connection (``busy``) or could not read the request (``bad_frame``, a bad id)."""
    if reply.get("id") is None and reply.get("ok") is False:
        result_of(reply)


class StoreClient:
    """A blocking connection to the store's API; one request at a time.

    Args:
        connection: a connected ``MessageSocket`` using the JSON codec and U32 format.
    """

    def __init__(self, connection: MessageSocket[object]) -> None:
        self.connection = connection
        self._ids = itertools.count(1)

    @classmethod
    def connect(cls, address: tuple[str, int], *, timeout: float | None = 10.0) -> StoreClient:
        """Connect to the API at ``(host, port)``; ``timeout`` applies to every request."""
        return cls(
            connect(address, timeout=timeout, format=Format.U32, codec=JSON, max_size=MAX_MESSAGE)
        )

    def request(self, op: str, **fields: object) -> dict[str, object]:
        """Send one request and return its result.

        Raises:
            ApiError: the store refused (``out_of_stock``, ``unknown_product``...).
            ConnectionClosed, TimedOut: the connection failed; for a checkout, retry
                with the same ``request_id`` (or ask ``order_status``).
        """
        request_id = next(self._ids)
        self.connection.send({"id": request_id, "op": op, **fields})
        reply = self.connection.recv()
        if isinstance(reply, dict) and reply.get("id") != request_id:
            _refusal(reply)
            raise ProtocolError(f"reply to request {reply.get('id')!r}, expected {request_id}")
        return result_of(reply)

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncStoreClient:
    """An asyncio connection to the store's API; one request at a time.

    Args:
        stream: a ``MessageStream`` using the JSON codec and U32 format.
    """

    def __init__(self, stream: MessageStream[object]) -> None:
        self.stream = stream
        self._ids = itertools.count(1)

    @classmethod
    async def connect(cls, host: str, port: int) -> AsyncStoreClient:
        """Connect to the API at ``host:port`` (wrap in ``asyncio.wait_for`` for a timeout)."""
        stream = await open_connection(
            host, port, format=Format.U32, codec=JSON, max_size=MAX_MESSAGE
        )
        return cls(stream)

    async def send_request(self, op: str, **fields: object) -> dict[str, object]:
        """Send one request and return the whole reply (``ok`` true or false) unchecked."""
        request_id = next(self._ids)
        await self.stream.send({"id": request_id, "op": op, **fields})
        reply = await self.stream.recv()
        if isinstance(reply, dict) and reply.get("id") != request_id:
            _refusal(reply)
        if not isinstance(reply, dict) or reply.get("id") != request_id:
            raise ProtocolError(f"expected the reply to request {request_id}, got {reply!r:.200}")
        return reply

    async def request(self, op: str, **fields: object) -> dict[str, object]:
        """Send one request and return its result; an error reply raises :class:`ApiError`."""
        return result_of(await self.send_request(op, **fields))

    async def aclose(self) -> None:
        """Close the connection and wait until it is closed."""
        self.stream.close()
        await self.stream.wait_closed()

    def abort(self) -> None:
        """Drop the connection at once (after a timeout or a broken reply)."""
        self.stream.abort()
