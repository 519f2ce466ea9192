"""Payload codecs: how a message object becomes a frame's payload and back.

A :class:`Codec` is just a pair of functions. ``encode(obj)`` returns a bytes-like
object or a ``str`` (a ``str`` is sent as UTF-8, and as a text frame in the
STOCKINGS format); ``decode(message)`` receives what the frame decoder produced:
``bytes``, or ``str`` for a STOCKINGS text frame. Write your own::

    import pickle  # only between programs that trust each other
    PICKLE = Codec(encode=pickle.dumps, decode=pickle.loads, name="pickle")

An exception raised by ``decode`` propagates from ``recv()`` unchanged; the frame
was consumed and the connection stays usable.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from sockwork.frames.codec import Format, Message, Payload, _as_byte_view

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["BYTES", "BYTES_OR_TEXT", "JSON", "MSGPACK", "TEXT", "Codec"]

T = TypeVar("T")


@dataclass(frozen=True)
class Codec(Generic[T]):
    """A pair of functions turning message objects into payloads and back.

    Attributes:
        encode: object -> bytes-like or ``str`` (a ``str`` travels as UTF-8).
        decode: ``bytes`` (or ``str``, for a STOCKINGS text frame) -> object.
        name: shown in ``repr``.
    """

    encode: Callable[[T], Payload | str]
    decode: Callable[[Message], T]
    name: str = "custom"

    def __repr__(self) -> str:
        return f"<Codec {self.name}>"


def _bytes_encode(message: object) -> Payload:
    if isinstance(message, (bytes, bytearray, memoryview)):
        return message
    if isinstance(message, str):
        raise TypeError(
            "codec BYTES sends bytes-like objects, not str: encode it, or pass codec=TEXT "
            "(or BYTES_OR_TEXT with format=STOCKINGS)"
        )
    return _as_byte_view(message)  # any other buffer-protocol object, or TypeError


def _bytes_decode(message: Message) -> bytes:
    return message if isinstance(message, bytes) else message.encode("utf-8")


def _identity_encode(message: object) -> Payload | str:
    if isinstance(message, (bytes, bytearray, memoryview, str)):
        return message
    return _as_byte_view(message)


def _identity_decode(message: Message) -> bytes | str:
    return message


def _text_encode(message: object) -> str:
    if not isinstance(message, str):
        raise TypeError(f"codec TEXT sends str, not {type(message).__name__}")
    return message


def _text_decode(message: Message) -> str:
    # Strict UTF-8: invalid bytes raise UnicodeDecodeError (a ValueError).
    return message if isinstance(message, str) else message.decode("utf-8")


def _json_encode(message: object) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _json_decode(message: Message) -> object:
    result: object = json.loads(message)
    return result


def _msgpack() -> ModuleType:
    try:
        return importlib.import_module("msgpack")
    except ImportError:
        raise ImportError(
            "codec MSGPACK needs the msgpack package: pip install 'sockwork[msgpack]'"
        ) from None


def _msgpack_encode(message: object) -> bytes:
    data: bytes = _msgpack().packb(message, use_bin_type=True)
    return data


def _msgpack_decode(message: Message) -> object:
    if isinstance(message, str):
        message = message.encode("utf-8")
    result: object = _msgpack().unpackb(message, raw=False)
    return result


BYTES: Codec[bytes] = Codec(_bytes_encode, _bytes_decode, "bytes")
"""The default: send bytes-like objects, receive ``bytes`` (STOCKINGS text arrives as UTF-8)."""

BYTES_OR_TEXT: Codec[bytes | str] = Codec(_identity_encode, _identity_decode, "bytes_or_text")
"""Messages as the wire types them: ``str`` <-> STOCKINGS text frame, bytes <-> bytes frame.

With U32 or VARINT, a ``str`` is sent as UTF-8 and arrives as ``bytes``.
"""

TEXT: Codec[str] = Codec(_text_encode, _text_decode, "text")
"""Send and receive ``str`` as UTF-8; a payload that is not UTF-8 raises ``UnicodeDecodeError``."""

JSON: Codec[object] = Codec(_json_encode, _json_decode, "json")
"""Compact JSON as UTF-8 text (STOCKINGS text frames); bad JSON raises ``json.JSONDecodeError``."""

MSGPACK: Codec[object] = Codec(_msgpack_encode, _msgpack_decode, "msgpack")
"""msgpack (``pip install 'sockwork[msgpack]'``), bin type for bytes, str decoded as str."""


def _check_codec(codec: object) -> None:
    """Raise TypeError unless ``codec`` is a :class:`Codec` (every front end's constructor)."""
    if not isinstance(codec, Codec):
        raise TypeError(f"codec must be a sockwork.frames.Codec, not {codec!r}")


def _encode_all(codec: Codec[T], messages: Iterable[T]) -> list[Payload | str]:
    """Encode the messages of one ``send_many`` call, in order.

    With BYTES, ``bytes`` go to the frame encoder as they are (BYTES would return them
    unchanged): one call saved per message. Front ends keep the same test inline in
    ``send()``, whose per-message cost this function call would raise.
    """
    encode = codec.encode
    if codec is BYTES:
        # mypy does not narrow ``type(m) is bytes``; m is then a Payload.
        return [m if type(m) is bytes else encode(m) for m in messages]  # type: ignore[misc]
    return [encode(m) for m in messages]


def _maybe_decode(codec: Codec[T], format: Format) -> Callable[[Message], T] | None:
    """Return the function a front end applies to each received message, or None if none is needed.

    The decoder already yields ``bytes``, which is what BYTES returns, except for the
    text frames of the STOCKINGS format (``str``): skipping the call saves time per message.
    """
    if codec is BYTES and format is not Format.STOCKINGS:
        return None
    return codec.decode
