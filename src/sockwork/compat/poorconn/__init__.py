"""poorconn 0.2.1's API, command line and pytest fixture, behaving as poorconn does.

Replace ``import poorconn`` with ``import sockwork.compat.poorconn as poorconn``
(and ``poorconn.pytest_plugin`` / ``poorconn._cli`` with the same names under
``sockwork.compat.poorconn``); nothing else changes. The native API,
:mod:`sockwork.faults`, does the same things better; ``docs/compat-poorconn.md``
maps each function to it.
"""

from __future__ import annotations

from sockwork.compat.poorconn._version import version as __version__
from sockwork.compat.poorconn.server import Server
from sockwork.compat.poorconn.simulation import (
    DelayBeforeSendingController,
    DelayBeforeSendingOnceController,
    DelayBeforeSendingUponAcceptanceController,
    DelayBeforeSendingUponAcceptanceOnceController,
    PatchableSocket,
    close_upon_acceptance,
    delay_before_sending,
    delay_before_sending_once,
    delay_before_sending_upon_acceptance,
    delay_before_sending_upon_acceptance_once,
    make_socket_patchable,
)

__all__ = [
    "DelayBeforeSendingController",
    "DelayBeforeSendingOnceController",
    "DelayBeforeSendingUponAcceptanceController",
    "DelayBeforeSendingUponAcceptanceOnceController",
    "PatchableSocket",
    "Server",
    "close_upon_acceptance",
    "delay_before_sending",
    "delay_before_sending_once",
    "delay_before_sending_upon_acceptance",
    "delay_before_sending_upon_acceptance_once",
    "__version__",
    "make_socket_patchable",
]
