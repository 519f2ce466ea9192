"""The Toxiproxy JSON model (sans-IO): validation, defaults, patching, addresses."""

from __future__ import annotations

import pytest

from sockwork.faults import AcceptDelay, Bandwidth, CloseAfter, Latency, Slice, Stall
from sockwork.proxy.fault import fault_for
from sockwork.proxy.toxic import (
    TOXIC_TYPES,
    ApiError,
    ToxicSpec,
    format_address,
    parse_address,
    parse_proxy,
    parse_proxy_patch,
    parse_toxic,
    patch_toxic,
    toxic_json,
)


def test_toxic_defaults_follow_toxiproxy() -> None:
    spec = parse_toxic({"type": "latency"})
    assert spec == ToxicSpec("latency_downstream", "latency", "downstream", 1.0,
                             {"latency": 0, "jitter": 0})
    assert toxic_json(spec)["toxicity"] == 1
    assert parse_toxic({"type": "noop", "stream": "UpStream"}).name == "noop_upstream"


@pytest.mark.parametrize("kind", sorted(TOXIC_TYPES))
def test_toxic_every_type_lists_all_its_attributes(kind: str) -> None:
    assert parse_toxic({"type": kind}).attributes == TOXIC_TYPES[kind]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"type": "nope"}, 400, "invalid toxic type"),
        ({}, 400, "invalid toxic type"),
        ({"type": "latency", "stream": "up"}, 400,
         "stream was invalid, can be either upstream or downstream"),
        ({"type": "latency", "attributes": {"latency": 1.5}}, 400, "bad request body: "),
        ({"type": "latency", "attributes": {"latency": True}}, 400, "bad request body: "),
        ({"type": "latency", "attributes": {"latency": -1}}, 400, "latency"),
        ({"type": "latency", "toxicity": 2}, 400, "toxicity"),
        ({"type": "latency", "toxicity": "1"}, 400, "bad request body: "),
        ([], 400, "bad request body: "),
    ],
)
def test_toxic_rejections(body: object, status: int, message: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_toxic(body)
    assert info.value.status == status
    assert info.value.message.startswith(message) or message in info.value.message


def test_toxic_unknown_attributes_are_ignored_and_patch_merges() -> None:
    spec = parse_toxic({"type": "latency", "attributes": {"latency": 5, "colour": "red"}})
    assert spec.attributes == {"latency": 5, "jitter": 0}
    patched = patch_toxic(spec, {"attributes": {"jitter": 2}, "toxicity": 0.5,
                                 "stream": "upstream", "name": "other"})
    assert patched == ToxicSpec("latency_downstream", "latency", "downstream", 0.5,
                                {"latency": 5, "jitter": 2})


def test_toxic_to_fault_units_and_directions() -> None:
    latency = fault_for(parse_toxic({"type": "latency", "stream": "upstream",
                                     "attributes": {"latency": 250, "jitter": 10},
                                     "toxicity": 0.25}))
    assert latency == Latency(0.25, jitter=0.01, direction="send", probability=0.25)
    bandwidth = fault_for(parse_toxic({"type": "bandwidth", "attributes": {"rate": 20}}))
    assert bandwidth == Bandwidth(20_000, direction="recv")
    assert fault_for(parse_toxic({"type": "bandwidth"})) == Stall(direction="recv")
    assert fault_for(parse_toxic({"type": "limit_data", "attributes": {"bytes": 9}})) == (
        CloseAfter(9, direction="recv"))
    slicer = fault_for(parse_toxic({"type": "slicer", "attributes": {
        "average_size": 10, "size_variation": 4, "delay": 500}}))
    assert slicer == Slice(14, min_bytes=6, delay=0.0005, direction="recv")
    assert fault_for(parse_toxic({"type": "noop"})) is None
    shared = fault_for(parse_toxic({"type": "shared_bandwidth", "name": "cap",
                                    "attributes": {"rate": 5}}))
    assert shared == Bandwidth(5000, group="toxic:cap", direction="recv")
    delay = fault_for(parse_toxic({"type": "accept_delay", "attributes": {"delay": 300}}))
    assert delay == AcceptDelay(0.3)


def test_proxy_spec_validation_and_patch() -> None:
    spec = parse_proxy({"name": "db", "upstream": "localhost:5432"})
    assert (spec.listen, spec.enabled) == ("127.0.0.1:0", True)
    with pytest.raises(ApiError, match="missing required field: name at proxy 3"):
        parse_proxy({"upstream": "a:1"}, index=2)
    with pytest.raises(ApiError, match="host:port"):
        parse_proxy({"name": "x", "upstream": "a"})
    with pytest.raises(ApiError, match="bad request body"):
        parse_proxy({"name": "x", "upstream": "a:1", "enabled": "yes"})
    moved = parse_proxy_patch(spec, {"enabled": False})
    assert (moved.upstream, moved.enabled) == ("localhost:5432", False)


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:8474", ("::1", 8474)), (":9", ("127.0.0.1", 9))],
)
def test_address_round_trip(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address
    if not text.startswith(":"):
        assert format_address(address) == text
    with pytest.raises(ApiError):
        parse_address("127.0.0.1:99999")
