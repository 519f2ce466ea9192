"""The former name of :mod:`sockwork.frames.payload`, kept so existing imports keep working.

The payload codecs moved to ``sockwork.frames.payload`` because ``codecs`` was one
letter away from :mod:`sockwork.frames.codec` (the sans-IO framing core). This module
re-exports the very same objects (``codecs.JSON is payload.JSON``); new code imports
them from :mod:`sockwork.frames.payload` or from :mod:`sockwork.frames`.
"""

from __future__ import annotations

from sockwork.frames.payload import BYTES, BYTES_OR_TEXT, JSON, MSGPACK, TEXT, Codec

__all__ = ["BYTES", "BYTES_OR_TEXT", "JSON", "MSGPACK", "TEXT", "Codec"]
