"""poorconn 0.2.1's API, command line and pytest fixture, on sockwork's fault engine.

Replace ``import poorconn`` with ``import sockwork.compat.poorconn as poorconn``;
the differences (all fixes) are listed in ``docs/compat-poorconn.md``.
"""

from __future__ import annotations

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
    "make_socket_patchable",
]
