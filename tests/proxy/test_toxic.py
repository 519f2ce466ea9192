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
    assert spec == ToxicSpec(
        "latency_downstream", "latency", "downstream", 1.0, {"latency": 0, "jitter": 0}
    )
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
        (
            {"type": "latency", "stream": "up"},
            400,
            "stream was invalid, can be either upstream or downstream",
        ),
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
    patched = patch_toxic(
        spec, {"attributes": {"jitter": 2}, "toxicity": 0.5, "stream": "upstream", "name": "other"}
    )
    assert patched == ToxicSpec(
        "latency_downstream", "latency", "downstream", 0.5, {"latency": 5, "jitter": 2}
    )


def test_toxic_to_fault_units_and_directions() -> None:
    latency = fault_for(
        parse_toxic(
            {
                "type": "latency",
                "stream": "upstream",
                "attributes": {"latency": 250, "jitter": 10},
                "toxicity": 0.25,
            }
        )
    )
    assert latency == Latency(0.25, jitter=0.01, direction="send", probability=0.25)
    bandwidth = fault_for(parse_toxic({"type": "bandwidth", "attributes": {"rate": 20}}))
    assert bandwidth == Bandwidth(20_000, direction="recv")
    assert fault_for(parse_toxic({"type": "bandwidth"})) == Stall(direction="recv")
    assert fault_for(parse_toxic({"type": "limit_data", "attributes": {"bytes": 9}})) == (
        CloseAfter(9, direction="recv")
    )
    slicer = fault_for(
        parse_toxic(
            {
                "type": "slicer",
                "attributes": {"average_size": 10, "size_variation": 4, "delay": 500},
            }
        )
    )
    assert slicer == Slice(14, min_bytes=6, delay=0.0005, direction="recv")
    assert fault_for(parse_toxic({"type": "noop"})) is None
    shared = fault_for(
        parse_toxic({"type": "shared_bandwidth", "name": "cap", "attributes": {"rate": 5}})
    )
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


@pytest.mark.parametrize("text", ["127.0.0.1:²", "127.0.0.1:٣", "127.0.0.1:+1", "127.0.0.1: 80"])
def test_address_port_must_be_ascii_digits(text: str) -> None:
    # str.isdigit() accepts "²", which int() then rejects: a 400, never a crash.
    with pytest.raises(ApiError) as info:
        parse_address(text, "upstream")
    assert info.value.status == 400 and "upstream" in info.value.message


def test_proxy_upstream_port_zero_is_a_bad_request() -> None:
    with pytest.raises(ApiError, match="upstream") as info:
        parse_proxy({"name": "x", "upstream": "127.0.0.1:0"})
    assert info.value.status == 400
    spec = parse_proxy({"name": "x", "upstream": "127.0.0.1:1"})
    with pytest.raises(ApiError, match="upstream"):
        parse_proxy_patch(spec, {"upstream": "127.0.0.1:0"})


@pytest.mark.parametrize(
    "value", [10**400, 2**63, -(2**63) - 1, 1e300], ids=["400 digits", "2**63", "-2**63-1", "1e300"]
)
def test_toxic_attribute_outside_int64_is_a_bad_body(value: float) -> None:
    # Go decodes attributes into int64: a larger number is a JSON error, so a 400.
    with pytest.raises(ApiError) as info:
        parse_toxic({"type": "latency", "attributes": {"latency": value}})
    assert info.value.status == 400
    assert info.value.message.startswith("bad request body: json: cannot unmarshal number")
    assert "latency.latency of type int64" in info.value.message


@pytest.mark.parametrize("kind", sorted(TOXIC_TYPES))
def test_toxic_largest_int64_attributes_make_a_fault_or_a_400(kind: str) -> None:
    biggest = {key: 2**63 - 1 for key in TOXIC_TYPES[kind]}
    spec = parse_toxic({"type": kind, "attributes": biggest})
    try:
        fault_for(spec)
    except ValueError:
        pass  # the server answers 400 for a ValueError
