"""Hypothesis strategies for fault schedules and chunkings."""

from __future__ import annotations

import random
import socket
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockwork.faults import (
    Bandwidth,
    Coalesce,
    Fault,
    Latency,
    Plan,
    Slice,
    StreamFault,
    inject,
)
from sockwork.testing.strategies import (
    HANGING_KINDS,
    TERMINATING_KINDS,
    chunk_sizes,
    chunkings,
    fault_schedules,
    faults,
    seeds,
)

PAYLOAD = bytes(range(256)) * 2


@given(st.data())
def test_chunkings_split_the_payload_into_non_empty_chunks(data: st.DataObject) -> None:
    payload = data.draw(st.binary(max_size=300))
    chunks = data.draw(chunkings(payload))
    assert b"".join(chunks) == payload
    assert all(chunks)


@given(chunkings(PAYLOAD, max_chunks=3))
def test_chunkings_respects_max_chunks(chunks: list[bytes]) -> None:
    assert b"".join(chunks) == PAYLOAD
    assert 1 <= len(chunks) <= 3


@given(chunkings(b""), chunkings(b"x"), chunkings(b"xyz", max_chunks=1))
def test_chunkings_of_edge_payloads(
    empty: list[bytes], one: list[bytes], whole: list[bytes]
) -> None:
    assert (empty, one, whole) == ([], [b"x"], [b"xyz"])


def test_chunkings_rejects_bad_max_chunks() -> None:
    with pytest.raises(ValueError, match="max_chunks"):
        chunkings(b"abc", max_chunks=0)


@given(chunk_sizes(min_size=3, max_size=7))
def test_chunk_sizes_stay_in_bounds(size: int) -> None:
    assert 3 <= size <= 7


def test_chunk_sizes_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="min_size"):
        chunk_sizes(min_size=0)


@given(seeds())
def test_seeds_are_32_bit(seed: int) -> None:
    assert 0 <= seed < 2**32


@given(faults())
def test_faults_default_to_terminating_kinds_with_default_triggers(fault: Fault) -> None:
    assert isinstance(fault, TERMINATING_KINDS)
    assert not isinstance(fault, HANGING_KINDS)
    assert fault.probability == 1.0
    assert fault.connections is None
    assert fault.after_seconds == 0.0


@settings(max_examples=200)
@given(faults(max_seconds=0.01, max_bytes=64))
def test_faults_respect_the_bounds(fault: Fault) -> None:
    for name in ("seconds", "jitter", "delay", "window"):
        value = getattr(fault, name, 0.0)
        if isinstance(value, float):
            assert 0.0 <= value <= 0.01
    for name in ("max_bytes", "min_bytes", "bytes"):
        value = getattr(fault, name, 0)
        assert 0 <= value <= 64


@given(faults(kinds=HANGING_KINDS, directions=("recv",)))
def test_faults_draw_hanging_kinds_only_when_asked(fault: Fault) -> None:
    assert isinstance(fault, HANGING_KINDS)
    if isinstance(fault, StreamFault):
        assert fault.direction == "recv"


def test_faults_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kinds"):
        faults(kinds=())
    with pytest.raises(ValueError, match="no strategy for Fault"):
        faults(kinds=(Fault,))
    with pytest.raises(ValueError, match="max_bytes"):
        faults(max_bytes=0)
    with pytest.raises(ValueError, match="max_faults"):
        fault_schedules(max_faults=-1)


@settings(max_examples=200)
@given(fault_schedules(max_faults=4, kinds=TERMINATING_KINDS + HANGING_KINDS), seeds())
def test_fault_schedules_are_accepted_by_a_plan(schedule: tuple[Fault, ...], seed: int) -> None:
    assert len(schedule) <= 4
    plan = Plan(schedule, rng=random.Random(seed), now=0.0, seed=seed)
    assert plan.faults == schedule
    plan.connect(now=0.0)
    plan.accept(now=0.0)
    plan.resolve(now=0.0)
    connection = plan.open(now=0.0)
    stream = connection.stream("send")
    stream.feed(100, 0.0)
    stream.next(0.0)


@given(fault_schedules())
def test_fault_schedules_draw_triggers(schedule: tuple[Fault, ...]) -> None:
    for fault in schedule:
        assert 0.0 <= fault.probability <= 1.0
        assert fault.after_seconds <= 0.05


def test_importing_the_plugin_does_not_import_hypothesis() -> None:
    code = (
        "import sys, sockwork.testing, sockwork.testing.plugin; print('hypothesis' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_every_fault_of_the_vocabulary_has_a_strategy() -> None:
    import sockwork.faults

    abstract = {Fault, StreamFault}
    concrete = {
        obj
        for name in sockwork.faults.__all__
        if isinstance(obj := getattr(sockwork.faults, name), type)
        and issubclass(obj, Fault)
        and obj not in abstract
    }
    assert set(TERMINATING_KINDS) | set(HANGING_KINDS) == concrete
    assert not set(TERMINATING_KINDS) & set(HANGING_KINDS)


PASSING_KINDS = (Latency, Bandwidth, Slice, Coalesce)


@settings(max_examples=20, deadline=None)
@given(
    st.data(),
    fault_schedules(kinds=PASSING_KINDS, max_seconds=0.01, max_bytes=64),
    seeds(),
)
def test_strategies_drive_the_engine_and_bytes_arrive_intact(
    data: st.DataObject, schedule: tuple[Fault, ...], seed: int
) -> None:
    payload = data.draw(st.binary(min_size=1, max_size=512))
    chunks = data.draw(chunkings(payload, max_chunks=8))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with inject(*schedule, seed=seed):
            with socket.create_connection(listener.getsockname()[:2], timeout=5) as client:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(5)
                    for chunk in chunks:
                        client.sendall(chunk)
                    client.shutdown(socket.SHUT_WR)
                    received = b""
                    while piece := conn.recv(4096):
                        received += piece
    assert received == payload
