"""Console programs (``cmd.Cmd``, ``print``/``input`` code) served to telnet and SSH users.

The SSH server needs the ``sockwork[ssh]`` extra (asyncssh) only when one is created.
"""

from __future__ import annotations

from sockwork.console.policy import Admission, SessionPolicy
from sockwork.console.routing import Streams, bind, current_streams, wrap
from sockwork.console.server import App, ConsoleServer, adapt_cmd
from sockwork.console.session import Session, current_session
from sockwork.console.ssh import SshConsoleServer, SshSession
from sockwork.console.telnet import TelnetConnection
from sockwork.console.telnet_session import TelnetSession

__all__ = [
    "Admission",
    "App",
    "ConsoleServer",
    "Session",
    "SessionPolicy",
    "SshConsoleServer",
    "SshSession",
    "Streams",
    "TelnetConnection",
    "TelnetSession",
    "adapt_cmd",
    "bind",
    "current_session",
    "current_streams",
    "wrap",
]
