"""The Toxiproxy 2.x JSON model: proxies and toxics, validated as Toxiproxy does (sans-IO).

# Rules (Toxiproxy 2.x, see docs/proxy.md):
# - A toxic has name (default "<type>_<stream>"), type, stream ("upstream" | "downstream",
#   case-insensitive, default "downstream"), toxicity (0..1, default 1) and attributes;
#   every attribute of the type is present in the output, 0 when not given. Unknown
#   attributes are ignored, as Go's JSON decoder ignores unknown fields.
# - Attribute values are integers (Go int64); anything else is a "bad request body".
# - Error messages and status codes are Toxiproxy's own, so clients that match on them work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sockwork import address as _address
from sockwork.errors import SockworkError

__all__ = [
    "EXTRA_TOXIC_TYPES",
    "TOXIC_TYPES",
    "ApiError",
    "ProxySpec",
    "ToxicSpec",
    "format_address",
    "parse_address",
    "parse_proxy",
    "parse_proxy_patch",
    "parse_toxic",
    "patch_toxic",
    "proxy_json",
    "toxic_json",
]

#: Toxiproxy's toxic types, with each attribute's default (units: see docs/proxy.md).
TOXIC_TYPES: Mapping[str, Mapping[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
    "noop": {},
}

#: sockwork's own toxic types, served under their own names.
EXTRA_TOXIC_TYPES: Mapping[str, Mapping[str, int]] = {
    "stall": {},
    "blackhole": {},
    "reset_after": {"bytes": 0},
    "shared_bandwidth": {"rate": 0},
    "accept_delay": {"delay": 0},
    "connect_timeout": {},
    "half_close": {"bytes": 0},
}

_ALL_TYPES = {**TOXIC_TYPES, **EXTRA_TOXIC_TYPES}
_STREAMS = ("upstream", "downstream")
_INT64 = range(-(2**63), 2**63)  # Go decodes attributes into int64


class ApiError(SockworkError, ValueError):
    """A request the Toxiproxy API rejects: ``status`` and Toxiproxy's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ToxicSpec:
    """A toxic as the API sees it."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProxySpec:
    """A proxy as requested: ``listen`` and ``upstream`` are ``host:port`` strings."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True


def _bad_body(detail: str) -> ApiError:
    return ApiError(400, f"bad request body: {detail}")


def _object(body: object, what: str) -> Mapping[str, object]:
    if not isinstance(body, dict):
        raise _bad_body(f"json: cannot unmarshal {_json_kind(body)} into Go value of type {what}")
    return body


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def _string(obj: Mapping[str, object], key: str, struct: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad_body(
            f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
            f"{struct}.{key} of type string"
        )
    return value


def _attributes(kind: str, given: object, base: Mapping[str, int] | None = None) -> dict[str, int]:
    defaults = _ALL_TYPES[kind]
    attrs = dict(base if base is not None else defaults)
    if given is None:
        return attrs
    if not isinstance(given, dict):
        raise _bad_body(
            f"json: cannot unmarshal {_json_kind(given)} into Go value of type {kind} attributes"
        )
    for key, value in given.items():
        if key not in defaults:
            continue  # ignored, as Go's decoder does
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad_body(
                f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                f"{kind}.{key} of type int64"
            )
        if (isinstance(value, float) and not value.is_integer()) or int(value) not in _INT64:
            raise _bad_body(
                f"json: cannot unmarshal number {value} into Go struct field "
                f"{kind}.{key} of type int64"
            )
        if value < 0:
            raise ApiError(400, f"attribute {key} of a {kind} toxic must be >= 0, got {value}")
        attrs[key] = int(value)
    return attrs


def _toxicity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad_body(
            f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
            "Toxic.toxicity of type float32"
        )
    if not 0.0 <= value <= 1.0:
        raise ApiError(400, f"toxicity must be between 0 and 1, got {value}")
    return float(value)


def parse_toxic(body: object) -> ToxicSpec:
    """Validate a ``POST /proxies/{proxy}/toxics`` body into a :class:`ToxicSpec`.

    Raises:
        ApiError: with Toxiproxy's status and message.
    """
    obj = _object(body, "toxics.Toxic")
    stream = (_string(obj, "stream", "Toxic") or "downstream").lower()
    if stream not in _STREAMS:
        raise ApiError(400, "stream was invalid, can be either upstream or downstream")
    kind = _string(obj, "type", "Toxic") or ""
    if kind not in _ALL_TYPES:
        raise ApiError(400, "invalid toxic type")
    name = _string(obj, "name", "Toxic") or f"{kind}_{stream}"
    toxicity = _toxicity(obj["toxicity"]) if obj.get("toxicity") is not None else 1.0
    return ToxicSpec(name, kind, stream, toxicity, _attributes(kind, obj.get("attributes")))


def patch_toxic(spec: ToxicSpec, body: object) -> ToxicSpec:
    """Apply a ``PATCH`` body: only ``attributes`` and ``toxicity`` change; others keep values.

    Raises:
        ApiError: with Toxiproxy's status and message.
    """
    obj = _object(body, "toxics.Toxic")
    toxicity = _toxicity(obj["toxicity"]) if obj.get("toxicity") is not None else spec.toxicity
    attributes = _attributes(spec.type, obj.get("attributes"), base=spec.attributes)
    return ToxicSpec(spec.name, spec.type, spec.stream, toxicity, attributes)


def toxic_json(spec: ToxicSpec) -> dict[str, object]:
    """The toxic object as Toxiproxy writes it."""
    toxicity: float | int = spec.toxicity
    if spec.toxicity.is_integer():
        toxicity = int(spec.toxicity)
    return {
        "attributes": dict(spec.attributes),
        "name": spec.name,
        "type": spec.type,
        "stream": spec.stream,
        "toxicity": toxicity,
    }


def parse_proxy(body: object, *, index: int | None = None) -> ProxySpec:
    """Validate a proxy object (``POST /proxies``, one entry of ``/populate``).

    ``index`` (0-based) adds Toxiproxy's `` at proxy N`` (1-based) to a missing-field error.

    Raises:
        ApiError: with Toxiproxy's status and message.
    """
    obj = _object(body, "proxy.Proxy")
    where = "" if index is None else f" at proxy {index + 1}"
    name = _string(obj, "name", "Proxy")
    if not name:
        raise ApiError(400, f"missing required field: name{where}")
    upstream = _string(obj, "upstream", "Proxy")
    if not upstream:
        raise ApiError(400, f"missing required field: upstream{where}")
    listen = _string(obj, "listen", "Proxy") or "127.0.0.1:0"
    return _checked_spec(name, listen, upstream, obj.get("enabled", True))


def parse_proxy_patch(spec: ProxySpec, body: object) -> ProxySpec:
    """Apply a ``PATCH /proxies/{proxy}`` body: missing fields keep their values.

    Raises:
        ApiError: with Toxiproxy's status and message.
    """
    obj = _object(body, "proxy.Proxy")
    listen = _string(obj, "listen", "Proxy") or spec.listen
    upstream = _string(obj, "upstream", "Proxy") or spec.upstream
    return _checked_spec(spec.name, listen, upstream, obj.get("enabled", spec.enabled))


def _checked_spec(name: str, listen: str, upstream: str, enabled: object) -> ProxySpec:
    """The spec of a create or a patch, once its addresses and ``enabled`` are valid."""
    if not isinstance(enabled, bool):
        raise _bad_body(
            f"json: cannot unmarshal {_json_kind(enabled)} into Go struct field "
            "Proxy.enabled of type bool"
        )
    _check_upstream(upstream)
    parse_address(listen, "listen")
    return ProxySpec(name, listen, upstream, enabled)


def _check_upstream(text: str) -> None:
    if parse_address(text, "upstream")[1] == 0:
        raise ApiError(400, f"upstream must be host:port with a port in 1..65535, got {text!r}")


def parse_address(text: str, what: str = "address") -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too) into ``(host, port)``; no host is 127.0.0.1.

    Raises:
        ApiError: 400 when there is no valid port.
    """
    try:
        return _address.parse_address(text, what, default_host="127.0.0.1")
    except ValueError:
        raise ApiError(
            400, f"{what} must be host:port with a port in 0..65535, got {text!r}"
        ) from None


#: ``(host, port)`` as ``host:port`` (``[v6]:port`` for IPv6).
format_address = _address.format_address


def proxy_json(spec: ProxySpec, listen: str, toxics: list[ToxicSpec]) -> dict[str, object]:
    """The proxy object as Toxiproxy writes it; ``listen`` is the actual address."""
    return {
        "name": spec.name,
        "listen": listen,
        "upstream": spec.upstream,
        "enabled": spec.enabled,
        "toxics": [toxic_json(t) for t in toxics],
    }
