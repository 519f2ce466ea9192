"""The seed option: how every command reads the seed that makes its random choices replayable.

``sockwork run``, ``sockwork proxy``, ``sockwork toxiproxy-server``, ``sockwork explore``
and pytest's ``--sockwork-seed`` take a seed; they all read it with :func:`seed_argument`,
so they accept the same values and word a bad one the same way.
"""

from __future__ import annotations

from functools import partial

from sockwork.address import parse_int
from sockwork.cli import argument_type

__all__ = ["seed_argument"]

_parse_seed = argument_type(partial(parse_int, what="seed"))


def seed_argument(text: str) -> int:
    """Read a seed option's value: any whole number in ASCII digits (``"7"``, ``"-3"``).

    An argparse ``type=``: a bad value is a usage error (exit status 2) saying
    "seed must be a whole number, not 'x'".
    """
    return _parse_seed(text)
