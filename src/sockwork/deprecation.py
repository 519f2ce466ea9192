"""The house's deprecations, said the same way by sockwork and storify."""

from __future__ import annotations

import warnings

__all__ = ["warn_stop_alias"]


def warn_stop_alias(owner: object) -> None:
    """Warn that ``owner.stop()`` is the deprecated alias of ``owner.close()``.

    Servers ``start()`` and ``close()`` (docs/index.md); ``stop()`` stays for older
    callers. Called from inside ``stop()``, so the warning points at its caller.
    """
    warnings.warn(
        f"{type(owner).__name__}.stop() is deprecated: call close() (same arguments)",
        DeprecationWarning,
        stacklevel=3,
    )
