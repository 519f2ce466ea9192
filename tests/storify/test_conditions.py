from __future__ import annotations

import pytest

from sockwork.faults import Bandwidth, Latency, ResetPeer
from storify.conditions import DEFAULT_CONDITIONS, NetworkConditions


def test_conditions_parse_default() -> None:
    conditions = NetworkConditions.parse(DEFAULT_CONDITIONS)
    assert conditions == NetworkConditions(latency=0.2, bandwidth=2000.0)
    assert conditions.faults() == [(Latency(0.2), "downstream"), (Bandwidth(2000.0), "both")]
    assert conditions.describe() == "latency 200ms, bandwidth 2000 B/s"


def test_conditions_parse_jitter_and_spaces() -> None:
    conditions = NetworkConditions.parse(" Latency = 1s , jitter=100ms ,")
    assert conditions == NetworkConditions(latency=1.0, jitter=0.1)
    assert conditions.faults() == [(Latency(1.0, jitter=0.1), "downstream")]
    assert "latency 1s +/- 100ms" in conditions.describe()


def test_conditions_parse_reset() -> None:
    assert NetworkConditions.parse("reset=5%").reset == pytest.approx(0.05)
    conditions = NetworkConditions.parse("reset=0.25")
    assert conditions.faults() == [
        (ResetPeer(probability=0.25), "upstream"),
        (ResetPeer(probability=0.25), "downstream"),
    ]
    assert conditions.describe() == "25% of connections reset"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "latency",
        "loss=5%",
        "latency=1s,latency=2s",
        "jitter=5ms",
        "latency=fast",
        "bandwidth=0",
        "reset=lots",
        "reset=150%",
        "reset=٥%",
        "reset=nan",
        "reset=inf%",
    ],
)
def test_conditions_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        NetworkConditions.parse(text)
