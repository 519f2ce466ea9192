"""Fault-schedule exploration: find the network faults that break a test, and shrink them."""

from __future__ import annotations

from sockwork.faults.exploration.candidates import EXPLORED_KINDS, candidates
from sockwork.faults.exploration.explorer import explore
from sockwork.faults.exploration.outcome import (
    BaselineFailed,
    ExploreError,
    ExploreResult,
    NoNetworkActivity,
    Outcome,
    Reproduction,
)
from sockwork.faults.exploration.process import CommandNotFound, ProcessSubject
from sockwork.faults.exploration.recorder import Recorder
from sockwork.faults.exploration.schedule import Schedule
from sockwork.faults.exploration.shrink import shrink
from sockwork.faults.exploration.subject import FunctionSubject, Subject
from sockwork.faults.exploration.trace import ConnectionTrace, Trace, TraceEvent

__all__ = [
    "EXPLORED_KINDS",
    "BaselineFailed",
    "CommandNotFound",
    "ConnectionTrace",
    "ExploreError",
    "ExploreResult",
    "FunctionSubject",
    "NoNetworkActivity",
    "Outcome",
    "ProcessSubject",
    "Recorder",
    "Reproduction",
    "Schedule",
    "Subject",
    "Trace",
    "TraceEvent",
    "candidates",
    "explore",
    "shrink",
]
