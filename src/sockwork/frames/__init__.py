"""Complete messages over a TCP byte stream: a sans-IO codec and its front ends."""

from __future__ import annotations

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
