"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str) -> str:
    """Return the path of a peer program; skip without it locally, fail in CI.

    ``make test`` installs every peer, so in CI a missing one is a broken set-up,
    not a reason to skip.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name!r} is not installed (make test installs it with apt-get)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
