"""The corpus programs themselves: ordinary tests pass, a known fault tells the twins apart.

These tests hold without the explorer: each program's ordinary test passes on
both variants (in-process and as a command line), and one hand-written fault
schedule breaks the buggy variant's contract while the correct twin keeps it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sockwork.errors import ContractBroken
from sockwork.faults import (
    CloseAfter,
    CloseOnAccept,
    DnsFailure,
    Fault,
    HalfClose,
    Latency,
    Match,
    Refuse,
    Slice,
    Stall,
    inject,
)
from tests.faults.exploration.corpus import PROGRAMS, Program, program

VARIANTS = ("buggy", "correct")
SOCKWORK = Path(sys.executable).with_name("sockwork")

# One schedule per program that exposes its bug, with the role it targets. The
# hanging bugs are run as commands (a hung thread cannot be stopped in-process).
KNOWN: dict[str, tuple[tuple[Fault, ...], Match | None]] = {
    "length_prefix": ((Slice(100, direction="recv"),), Match(role="client")),
    "short_write": ((Slice(1000, direction="send"),), Match(role="client")),
    "content_length": ((CloseAfter(500, direction="recv"),), Match(role="client")),
    "dns_failure": ((DnsFailure(),), None),
    "accept_loop": ((CloseAfter(2, reset=True, direction="recv"),), Match(role="server")),
    "double_charge": ((CloseAfter(0, direction="recv", connections={1}),), Match(role="client")),
    "refused_retry": ((Refuse(connections=1),), None),
    "line_split": ((Slice(7, direction="recv"),), Match(role="client")),
    "reset_shutdown": ((CloseAfter(0, reset=True, direction="send"),), Match(role="server")),
    "stale_reply": ((Latency(0.7, direction="recv"),), Match(role="client")),
    "partial_header": ((Slice(2, direction="recv"),), Match(role="client")),
    "greeting_eof": ((CloseOnAccept(),), None),
    "async_reader": ((Slice(100, direction="recv"),), Match(role="client")),
    "server_one_recv": ((Slice(50, direction="recv"),), Match(role="server")),
    "half_close": ((HalfClose(5, connections={1}),), Match(role="client")),
    "slow_client": ((Stall(connections={1}),), Match(role="server")),
}
HANGING = {
    "eof_spin": ["--close-after", "100", "--direction", "recv", "--match-role", "client"],
    "read_timeout": ["--stall-after", "0", "--direction", "recv", "--match-role", "client"],
    "connect_timeout": ["--connect-timeout"],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SOCKWORK_FAULTS", None)
    return env


def test_corpus_has_a_program_per_bug_class() -> None:
    assert len(PROGRAMS) >= 14
    assert len({p.bug for p in PROGRAMS}) == len(PROGRAMS)
    assert set(KNOWN) | set(HANGING) == {p.name for p in PROGRAMS}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prog", PROGRAMS, ids=lambda p: p.name)
def test_ordinary_test_passes_in_process(prog: Program, variant: str) -> None:
    prog.test(variant)()


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prog", PROGRAMS, ids=lambda p: p.name)
def test_ordinary_test_passes_as_a_command(prog: Program, variant: str) -> None:
    done = subprocess.run(
        prog.argv(variant), capture_output=True, text=True, timeout=30, env=_env()
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["length_prefix", "refused_retry"])
def test_client_against_a_server_already_running(name: str) -> None:
    prog = program(name)
    with prog.running_server() as address:
        prog.test("correct", address)()
        done = subprocess.run(prog.argv("buggy", address), capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr


def test_command_line_failure_exits_1() -> None:
    prog = program("length_prefix")
    done = subprocess.run(
        [str(SOCKWORK), "run", "--slice", "100", "--seed", "1", "--", *prog.argv("buggy")],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert done.returncode == 1
    assert "ContractBroken: contract broken: wrong answer" in done.stderr


def _under(prog: Program, variant: str) -> BaseException | None:
    faults, match = KNOWN[prog.name]
    with inject(*faults, match=match, seed=1):
        try:
            prog.test(variant)()
        except (AssertionError, Exception) as error:
            return error
    return None


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_fault_breaks_the_buggy_variant(name: str) -> None:
    error = _under(program(name), "buggy")
    assert isinstance(error, AssertionError), f"the bug went unnoticed: {error!r}"


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_fault_keeps_the_correct_contract(name: str) -> None:
    assert _under(program(name), "correct") is None


def _run_with_faults(prog: Program, variant: str, options: list[str], timeout: float) -> int | None:
    """The exit status, or None when it still ran after ``timeout`` (then it is killed).

    ``sockwork run`` starts the program as its child: killing ``sockwork run`` alone
    would leave a hung program spinning, so the whole process group goes.
    """
    argv = [str(SOCKWORK), "run", *options, "--", *prog.argv(variant)]
    with subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        start_new_session=True,
    ) as child:
        try:
            return child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HANGING))
def test_known_fault_hangs_the_buggy_variant(name: str) -> None:
    # Its contract says 3 s; 5 s later it still runs (the kernel's own limit is minutes).
    prog = program(name)
    assert _run_with_faults(prog, "correct", HANGING[name], 20) == 0
    assert _run_with_faults(prog, "buggy", HANGING[name], 5) is None


def test_a_known_fault_breaks_the_program_every_time() -> None:
    # The bug shows deterministically, not by luck of thread timing.
    outcomes = {type(_under(program("length_prefix"), "buggy")) for _ in range(5)}
    assert outcomes == {ContractBroken}


def test_no_thread_is_left_behind() -> None:
    before = threading.active_count()
    for prog in PROGRAMS:
        for variant in VARIANTS:
            prog.test(variant)()
    assert threading.active_count() == before
