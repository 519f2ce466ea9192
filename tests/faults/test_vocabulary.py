"""The fault vocabulary: construction, defaults and validation."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from sockwork.faults.vocabulary import (
    AcceptDelay,
    Bandwidth,
    Blackhole,
    CloseAfter,
    CloseOnAccept,
    Coalesce,
    ConnectDelay,
    ConnectTimeout,
    DnsFailure,
    Latency,
    Refuse,
    ResetPeer,
    Slice,
    SlowClose,
    Stall,
    Timeout,
    fault_from_dict,
    fault_to_dict,
)


def test_vocabulary_faults_are_frozen_and_hashable() -> None:
    fault = Latency(0.2, jitter=0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fault.seconds = 1  # type: ignore[misc]
    assert hash(fault) == hash(Latency(0.2, jitter=0.01))
    assert fault == Latency(seconds=0.2, jitter=0.01)


def test_vocabulary_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Latency(0.2, 0.01)  # type: ignore[misc]
    with pytest.raises(TypeError):
        CloseAfter(10, True)  # type: ignore[misc]


def test_vocabulary_defaults() -> None:
    assert Latency(1).direction == "recv"
    assert Bandwidth(1000).direction == "both"
    assert Stall().direction == "recv"
    assert Coalesce().direction == "recv"
    assert Slice(10).min_bytes == 1
    assert CloseAfter(5).reset is False
    assert CloseOnAccept().reset is False
    assert DnsFailure().kind == "noname"
    assert ConnectTimeout().kernel_timeout == 127.0
    assert Refuse().probability == 1.0


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: Latency(-1), "seconds"),
        (lambda: Latency(1, jitter=-0.5), "jitter"),
        (lambda: Latency(float("nan")), "seconds"),
        (lambda: Bandwidth(0), "bytes_per_second"),
        (lambda: Slice(0), "max_bytes"),
        (lambda: Slice(4, min_bytes=5), "min_bytes"),
        (lambda: Slice(4, delay=-1), "delay"),
        (lambda: CloseAfter(-1), "bytes"),
        (lambda: ConnectDelay(-0.1), "seconds"),
        (lambda: AcceptDelay(-0.1), "seconds"),
        (lambda: DnsFailure("nxdomain"), "kind"),  # type: ignore[arg-type]
        (lambda: DnsFailure(delay=-1), "delay"),
        (lambda: Timeout(-1), "seconds"),
        (lambda: ResetPeer(-1), "seconds"),
        (lambda: SlowClose(-1), "seconds"),
        (lambda: Coalesce(window=-1), "window"),
        (lambda: Stall(probability=1.5), "probability"),
        (lambda: Blackhole(probability=-0.1), "probability"),
        (lambda: Refuse(connections=0), "connections"),
        (lambda: Refuse(connections=[0, 1]), "connections"),
        (lambda: Refuse(connections=range(0)), "connections"),
        (lambda: Stall(direction="up"), "direction"),  # type: ignore[arg-type]
        (lambda: Stall(after_bytes=-1), "after_bytes"),
        (lambda: Stall(after_seconds=-1), "after_seconds"),
    ],
)
def test_vocabulary_rejects_bad_values_naming_the_argument(make: object, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        make()  # type: ignore[operator]


def test_vocabulary_rejects_wrong_types() -> None:
    with pytest.raises(TypeError, match="seconds"):
        Latency("200ms")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_bytes"):
        Slice(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="probability"):
        Refuse(probability=True)


def test_vocabulary_connections_trigger() -> None:
    first_two = Refuse(connections=2)
    assert [first_two.applies_to(i) for i in (1, 2, 3)] == [True, True, False]
    third = Refuse(connections=[3])
    assert third.connections == frozenset({3})
    assert [third.applies_to(i) for i in (1, 2, 3, 4)] == [False, False, True, False]
    window = Refuse(connections=range(2, 4))
    assert [window.applies_to(i) for i in (1, 2, 3, 4)] == [False, True, True, False]
    assert all(Refuse().applies_to(i) for i in (1, 100))
    hash(third)  # a collection is normalised to a hashable frozenset


def test_vocabulary_connections_from_the_nth_on() -> None:
    # Open-ended ranges are checked without walking them (len() of this one overflows).
    from_third = Refuse(connections=range(3, 2**70))
    assert [from_third.applies_to(i) for i in (1, 2, 3, 10**12)] == [False, False, True, True]
    usual = Refuse(connections=range(3, sys.maxsize))
    assert usual.applies_to(3) and usual.applies_to(sys.maxsize - 1)
    assert Refuse(connections=range(2**70, 0, -2)).applies_to(2)
    with pytest.raises(ValueError, match="connections"):
        Refuse(connections=range(0, 2**70))
    with pytest.raises(ValueError, match="connections"):
        Refuse(connections=range(2**70, -1, -1))
    data = fault_to_dict(usual)
    assert data["connections"] == {"start": 3, "stop": sys.maxsize, "step": 1}
    assert fault_from_dict(json.loads(json.dumps(data))) == usual
    assert fault_to_dict(Refuse(connections=range(1, 3)))["connections"] == [1, 2]
    with pytest.raises(ValueError, match="start, stop"):
        fault_from_dict({"type": "Refuse", "connections": {"stop": 3}})


def test_vocabulary_directions() -> None:
    both = CloseAfter(1)
    assert both.acts_on("send") and both.acts_on("recv")
    recv = Latency(1)
    assert recv.acts_on("recv") and not recv.acts_on("send")


@pytest.mark.parametrize(
    "fault",
    [
        Latency(0.2, jitter=0.01),
        Bandwidth(1000, group="g"),
        Slice(64, min_bytes=2),
        CloseAfter(10, reset=True, connections=[2, 3]),
        Refuse(connections=range(1, 3)),
        DnsFailure("again", delay=0.5),
        Stall(after_bytes=5),
        Timeout(1.0),
    ],
)
def test_vocabulary_round_trips_through_plain_data(fault: object) -> None:
    data = fault_to_dict(fault)  # type: ignore[arg-type]
    assert json.loads(json.dumps(data)) == data
    assert fault_from_dict(data) == fault or fault_from_dict(data).connections == frozenset(
        fault.connections
    )  # type: ignore[attr-defined]


def test_vocabulary_plain_data_omits_defaults_and_rejects_unknowns() -> None:
    assert fault_to_dict(Latency(0.2)) == {"type": "Latency", "seconds": 0.2}
    with pytest.raises(ValueError, match="unknown fault type"):
        fault_from_dict({"type": "Gremlins"})
    with pytest.raises(ValueError, match="unknown argument"):
        fault_from_dict({"type": "Latency", "seconds": 1, "colour": "red"})
    with pytest.raises(ValueError, match="seconds"):
        fault_from_dict({"type": "Latency", "seconds": -1})
