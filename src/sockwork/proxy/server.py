"""A Toxiproxy 2.x compatible HTTP server that runs FaultProxy instances.

# Strategy:
# - One asyncio loop runs the HTTP API and every proxy it creates, so a request that
#   adds a toxic changes the proxy in one loop step: atomic for open connections.
# - HTTP/1.1 is handled by hand on asyncio streams (stdlib only): request line,
#   headers, a Content-Length body (bounded), persistent connections unless the
#   client says "Connection: close". No chunked request bodies (411), no pipelining
#   beyond reading requests in order.
# - Paths, JSON shapes, status codes and error bodies are Toxiproxy's (toxic.py holds
#   the model). Any unexpected exception in a handler answers 500 and the server runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import unquote

from sockwork import __version__
from sockwork._loop import LoopThread
from sockwork.faults.vocabulary import Fault
from sockwork.proxy.fault import fault_for
from sockwork.proxy.proxy import FaultProxy
from sockwork.proxy.toxic import (
    ApiError,
    ProxySpec,
    ToxicSpec,
    format_address,
    parse_address,
    parse_proxy,
    parse_proxy_patch,
    parse_toxic,
    patch_toxic,
    proxy_json,
    toxic_json,
)

if TYPE_CHECKING:
    from typing import Self

__all__ = ["TOXIPROXY_VERSION", "ToxiproxyServer"]

#: The Toxiproxy API version served, with sockwork's version as semver build metadata.
TOXIPROXY_VERSION = f"2.12.0+sockwork.{__version__}"

_MAX_BODY = 1 << 20
_MAX_HEADERS = 100
_IDLE_TIMEOUT = 60.0
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    extra: list[tuple[str, str]] = field(default_factory=list)


def _json(status: int, value: object) -> _Response:
    return _Response(status, json.dumps(value).encode())


def _error(status: int, message: str, **more: object) -> _Response:
    # Toxiproxy writes errors with Go's http.Error: JSON text, served as text/plain.
    body = json.dumps({"error": message, "status": status, **more}) + "\n"
    return _Response(
        status,
        body.encode(),
        "text/plain; charset=utf-8",
        [("X-Content-Type-Options", "nosniff")],
    )


@dataclass
class _Managed:
    """A proxy the API created: what was asked for, the running proxy, its toxics."""

    spec: ProxySpec
    proxy: FaultProxy
    toxics: dict[str, ToxicSpec] = field(default_factory=dict)

    @property
    def listen(self) -> str:
        return format_address(self.proxy.address)

    def json(self) -> dict[str, object]:
        return proxy_json(self.spec, self.listen, list(self.toxics.values()))


class ToxiproxyServer:
    """Toxiproxy's HTTP API (2.x paths, JSON, status codes) over sockwork proxies.

    ``with ToxiproxyServer(port=0) as server:`` runs it in a background thread;
    ``await server.serve_forever()`` runs it on the current loop (the CLI does that).

    Args:
        host: the address the API listens on (loopback by default).
        port: the API port (Toxiproxy's 8474 by default; 0 picks a free one).
        seed: seeds every proxy's random choices (per proxy name), so runs replay.
        proxies: proxy objects to create at start (the ``--config`` file's content).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8474,
        seed: int | None = None,
        proxies: Sequence[object] = (),
    ) -> None:
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"port must be an int in 0..65535, got {port!r}")
        self.host = host
        self.port = port
        self.seed = seed
        self._initial = [parse_proxy(p, index=i) for i, p in enumerate(proxies)]
        self._proxies: dict[str, _Managed] = {}
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._address: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: LoopThread | None = None
        self._closer: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the API listens on (known once started)."""
        if self._address is None:
            raise RuntimeError("the server is not started")
        return self._address

    @property
    def url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:8474``."""
        return f"http://{format_address(self.address)}"

    # --- life cycle -------------------------------------------------------------------

    async def astart(self) -> None:
        """Listen on the running loop and create the configured proxies."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        sockname = self._server.sockets[0].getsockname()
        self._address = (str(sockname[0]), int(sockname[1]))
        try:
            for spec in self._initial:
                await self._create(spec)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop the API and close every proxy and client connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._clients):
            writer.close()
        for managed in list(self._proxies.values()):
            await managed.proxy.aclose()
        self._proxies.clear()
        await asyncio.sleep(0)

    async def serve_forever(
        self, *, ready: Callable[[ToxiproxyServer], None] | None = None
    ) -> None:
        """Start, call ``ready(server)``, and serve until cancelled or ``stop()`` is called."""
        await self.astart()
        try:
            if ready is not None:
                ready(self)
            assert self._stop is not None
            await self._stop.wait()
        finally:
            await self.aclose()

    def start(self) -> None:
        """Run the server on its own loop in a daemon thread."""
        runner = LoopThread("sockwork-toxiproxy")
        runner.start(self._start_in_thread())
        self._runner = runner

    async def _start_in_thread(self) -> None:
        await self.astart()
        # As serve_forever() does: stop() (from any thread) closes the server.
        self._closer = asyncio.get_running_loop().create_task(self._close_when_stopped())

    async def _close_when_stopped(self) -> None:
        assert self._stop is not None
        await self._stop.wait()
        await self.aclose()

    async def _closed(self) -> None:
        if self._closer is not None:
            await self._closer

    def stop(self) -> None:
        """Ask a running server to stop (thread-safe); ``close()`` also waits for it."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be gone already
                self._loop.call_soon_threadsafe(self._stop.set)

    def close(self) -> None:
        """Stop the server started with ``start()`` and wait for its thread."""
        self.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.stop(self._closed())

    def __enter__(self) -> Self:
        """Start in a background thread (see :meth:`start`)."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- HTTP/1.1 ---------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                keep_alive = await self._one_request(reader, writer)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except (asyncio.LimitOverrunError, ValueError):
            # StreamReader.readline raises ValueError when a line overruns its limit.
            with contextlib.suppress(ConnectionError):
                await self._write(writer, _error(400, "request header too long"), False)
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        line = await asyncio.wait_for(reader.readline(), _IDLE_TIMEOUT)
        if not line:
            return False
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._write(writer, _error(400, "malformed request line"), False)
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            raw = await asyncio.wait_for(reader.readline(), _IDLE_TIMEOUT)
            if raw in (b"\r\n", b"\n", b""):
                break
            key, _, value = raw.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        else:
            await self._write(writer, _error(400, "too many request headers"), False)
            return False
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            refusal = _error(411, "chunked request bodies are not supported")
            await self._write(writer, refusal, False)
            return False
        length_text = headers.get("content-length", "0") or "0"
        if not (length_text.isascii() and length_text.isdigit()):
            await self._write(writer, _error(400, "bad Content-Length"), False)
            return False
        length = int(length_text)
        if length > _MAX_BODY:
            await self._write(writer, _error(413, f"request body over {_MAX_BODY} bytes"), False)
            return False
        if length and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await asyncio.wait_for(reader.readexactly(length), _IDLE_TIMEOUT) if length else b""
        if headers.get("user-agent", "").startswith("Mozilla/"):
            response = _Response(403, b"User agent not allowed\n", "text/plain; charset=utf-8")
        else:
            try:
                response = await self._dispatch(method, target, body)
            except ApiError as exc:
                response = _error(exc.status, exc.message)
            except Exception as exc:  # a bug must not take the API down: answer 500 and go on
                response = _error(500, f"{type(exc).__name__}: {exc}")
        await self._write(writer, response, keep_alive, head=method == "HEAD")
        return keep_alive

    async def _write(
        self,
        writer: asyncio.StreamWriter,
        response: _Response,
        keep_alive: bool,
        *,
        head: bool = False,
    ) -> None:
        lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}"]
        if response.status != 204:
            lines.append(f"Content-Type: {response.content_type}")
            lines.append(f"Content-Length: {len(response.body)}")
        lines.extend(f"{k}: {v}" for k, v in response.extra)
        if not keep_alive:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        payload = b"" if head or response.status == 204 else response.body
        writer.write(head_bytes + payload)
        await writer.drain()

    # --- routing ----------------------------------------------------------------------

    async def _dispatch(self, method: str, target: str, body: bytes) -> _Response:
        path = target.split("?", 1)[0]
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        routes: dict[str, Callable[[], Awaitable[_Response]]]
        if parts == ["proxies"]:
            routes = {"GET": self._list, "POST": lambda: self._create_json(body)}
        elif parts == ["populate"]:
            routes = {"POST": lambda: self._populate(body)}
        elif parts == ["reset"]:
            routes = {"POST": self._reset}
        elif parts == ["version"]:
            routes = {"GET": self._version}
        elif parts == ["metrics"]:
            routes = {"GET": self._metrics}
        elif len(parts) == 2 and parts[0] == "proxies":
            name = parts[1]
            routes = {
                "GET": lambda: self._show(name),
                "POST": lambda: self._patch(name, body),  # deprecated alias of PATCH
                "PATCH": lambda: self._patch(name, body),
                "DELETE": lambda: self._delete(name),
            }
        elif len(parts) == 3 and parts[0] == "proxies" and parts[2] == "toxics":
            name = parts[1]
            routes = {
                "GET": lambda: self._toxics(name),
                "POST": lambda: self._add_toxic(name, body),
            }
        elif len(parts) == 4 and parts[0] == "proxies" and parts[2] == "toxics":
            name, toxic = parts[1], parts[3]
            routes = {
                "GET": lambda: self._show_toxic(name, toxic),
                "POST": lambda: self._patch_toxic(name, toxic, body),  # deprecated alias
                "PATCH": lambda: self._patch_toxic(name, toxic, body),
                "DELETE": lambda: self._delete_toxic(name, toxic),
            }
        else:
            return _Response(404, b"404 page not found\n", "text/plain; charset=utf-8")
        if method == "HEAD" and "GET" in routes:
            method = "GET"
        handler = routes.get(method)
        if handler is None:
            return _Response(405, b"", "text/plain; charset=utf-8")
        return await handler()

    def _managed(self, name: str) -> _Managed:
        managed = self._proxies.get(name)
        if managed is None:
            raise ApiError(404, "proxy not found")
        return managed

    @staticmethod
    def _parse_body(body: bytes) -> object:
        try:
            return json.loads(body.decode("utf-8")) if body.strip() else None
        except (ValueError, RecursionError) as exc:
            # ValueError covers bad UTF-8, bad JSON and integers over Python's digit
            # limit; RecursionError, arrays nested too deep. All are the client's fault.
            raise ApiError(400, f"bad request body: {exc}") from exc

    async def _list(self) -> _Response:
        return _json(200, {name: m.json() for name, m in self._proxies.items()})

    async def _version(self) -> _Response:
        return _json(200, {"version": TOXIPROXY_VERSION})

    async def _create_json(self, body: bytes) -> _Response:
        spec = parse_proxy(self._parse_body(body) or {})
        if spec.name in self._proxies:
            raise ApiError(409, "proxy already exists")
        managed = await self._create(spec)
        return _json(201, managed.json())

    def _proxy_seed(self, name: str) -> int | None:
        if self.seed is None:
            return None
        return random.Random(f"{self.seed}:{name}").getrandbits(32)

    async def _create(self, spec: ProxySpec) -> _Managed:
        if spec.name in self._proxies:
            raise ApiError(409, "proxy already exists")
        listen = parse_address(spec.listen, "listen")
        proxy = FaultProxy(
            parse_address(spec.upstream, "upstream"),
            listen=listen,
            seed=self._proxy_seed(spec.name),
            enabled=spec.enabled,
        )
        try:
            await proxy.astart()
        except OSError as exc:
            raise _bind_error(spec.listen, exc) from exc
        managed = _Managed(spec, proxy)
        self._proxies[spec.name] = managed
        return managed

    async def _populate(self, body: bytes) -> _Response:
        items = self._parse_body(body)
        if not isinstance(items, list):
            raise ApiError(
                400,
                "bad request body: json: cannot unmarshal object into Go value of type "
                "[]proxy.Proxy",
            )
        specs = [parse_proxy(item, index=i) for i, item in enumerate(items)]
        done: list[dict[str, object]] = []
        for spec in specs:
            existing = self._proxies.get(spec.name)
            if existing is not None:
                same_listen = spec.listen in (existing.spec.listen, existing.listen)
                if same_listen and spec.upstream == existing.spec.upstream:
                    done.append(existing.json())
                    continue
                await self._drop(spec.name)
            try:
                managed = await self._create(spec)
            except ApiError as exc:
                return _error(exc.status, exc.message, proxies=done)
            done.append(managed.json())
        return _json(201, {"proxies": done})

    async def _show(self, name: str) -> _Response:
        return _json(200, self._managed(name).json())

    async def _patch(self, name: str, body: bytes) -> _Response:
        managed = self._managed(name)
        new = parse_proxy_patch(managed.spec, self._parse_body(body) or {})
        old = managed.spec
        if new.listen != old.listen or new.upstream != old.upstream:
            listen = parse_address(new.listen, "listen")
            if new.listen == old.listen:
                listen = managed.proxy.address  # keep the port that was picked for :0
            try:
                # Binds the new address before closing the old one: a failure changes nothing.
                await managed.proxy.restart(listen=listen, upstream=parse_address(new.upstream))
            except OSError as exc:
                raise _bind_error(new.listen, exc) from exc
            managed.spec = replace(old, listen=new.listen, upstream=new.upstream)
        if new.enabled != managed.proxy.enabled:
            if new.enabled:
                try:
                    managed.proxy.enable()
                except OSError as exc:  # the port was taken while disabled; still disabled
                    raise _bind_error(managed.listen, exc) from exc
            else:
                managed.proxy.disable()
        managed.spec = new
        return _json(200, managed.json())

    async def _drop(self, name: str) -> None:
        managed = self._proxies.pop(name)
        await managed.proxy.aclose()

    async def _delete(self, name: str) -> _Response:
        self._managed(name)
        await self._drop(name)
        return _Response(204)

    async def _reset(self) -> _Response:
        for managed in self._proxies.values():
            managed.proxy.clear()
            managed.toxics.clear()
            if not managed.proxy.enabled:
                managed.proxy.enable()
            managed.spec = replace(managed.spec, enabled=True)
        return _Response(204)

    async def _toxics(self, name: str) -> _Response:
        return _json(200, [toxic_json(t) for t in self._managed(name).toxics.values()])

    async def _add_toxic(self, name: str, body: bytes) -> _Response:
        managed = self._managed(name)
        spec = parse_toxic(self._parse_body(body) or {})
        if spec.name in managed.toxics:
            raise ApiError(409, "toxic already exists")
        fault = _fault(spec)
        if fault is not None:
            with _rejected_as_400():
                managed.proxy.add(fault, direction=_direction(spec), name=spec.name)
        managed.toxics[spec.name] = spec
        return _json(200, toxic_json(spec))

    def _toxic(self, name: str, toxic: str) -> tuple[_Managed, ToxicSpec]:
        managed = self._managed(name)
        spec = managed.toxics.get(toxic)
        if spec is None:
            raise ApiError(404, "toxic not found")
        return managed, spec

    async def _show_toxic(self, name: str, toxic: str) -> _Response:
        return _json(200, toxic_json(self._toxic(name, toxic)[1]))

    async def _patch_toxic(self, name: str, toxic: str, body: bytes) -> _Response:
        managed, old = self._toxic(name, toxic)
        spec = patch_toxic(old, self._parse_body(body) or {})
        fault = _fault(spec)
        installed = any(f.name == toxic for f in managed.proxy.faults)
        with _rejected_as_400():
            if fault is None:
                if installed:
                    managed.proxy.remove(toxic)
            elif installed:
                managed.proxy.update(toxic, fault)
            else:
                managed.proxy.add(fault, direction=_direction(spec), name=toxic)
        managed.toxics[toxic] = spec
        return _json(200, toxic_json(spec))

    async def _delete_toxic(self, name: str, toxic: str) -> _Response:
        managed, _ = self._toxic(name, toxic)
        if any(f.name == toxic for f in managed.proxy.faults):
            managed.proxy.remove(toxic)
        del managed.toxics[toxic]
        return _Response(204)

    async def _metrics(self) -> _Response:
        lines: list[str] = []
        series: list[tuple[str, str, str, list[tuple[str, str, int]]]] = [
            (
                "toxiproxy_proxy_received_bytes_total",
                "counter",
                "The total bytes received from the source of a proxy link.",
                [],
            ),
            (
                "toxiproxy_proxy_sent_bytes_total",
                "counter",
                "The total bytes sent to the destination of a proxy link.",
                [],
            ),
            ("sockwork_proxy_connections_total", "counter", "Connections accepted by a proxy.", []),
            ("sockwork_proxy_connections_open", "gauge", "Connections open through a proxy.", []),
            ("sockwork_proxy_faults_fired_total", "counter", "Times a toxic fired on a proxy.", []),
        ]
        for name, managed in sorted(self._proxies.items()):
            c = managed.proxy.counters
            base = (
                f'listener="{_label(managed.listen)}",proxy="{_label(name)}",'
                f'upstream="{_label(managed.spec.upstream)}"'
            )
            for direction, received, sent in (
                ("downstream", c.received_downstream, c.bytes_downstream),
                ("upstream", c.received_upstream, c.bytes_upstream),
            ):
                series[0][3].append((f'direction="{direction}",', base, received))
                series[1][3].append((f'direction="{direction}",', base, sent))
            series[2][3].append(("", base, c.connections_total))
            series[3][3].append(("", base, c.connections_open))
            for toxic, count in sorted(c.faults_fired.items()):
                series[4][3].append(("", f'{base},toxic="{_label(toxic)}"', count))
        for metric, kind, text, samples in series:
            lines.append(f"# HELP {metric} {text}")
            lines.append(f"# TYPE {metric} {kind}")
            lines.extend(f"{metric}{{{pre}{labels}}} {value}" for pre, labels, value in samples)
        body = ("\n".join(lines) + "\n").encode()
        return _Response(200, body, "text/plain; version=0.0.4; charset=utf-8")


def _bind_error(listen: str, exc: OSError) -> ApiError:
    """Toxiproxy's 500 for an address that cannot be listened on (Go's wording, lower case)."""
    reason = exc.strerror or str(exc)
    return ApiError(500, f"listen tcp {listen}: bind: {reason[:1].lower()}{reason[1:]}")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _direction(spec: ToxicSpec) -> str:
    return spec.stream


def _fault(spec: ToxicSpec) -> Fault | None:
    with _rejected_as_400():
        return fault_for(spec)


@contextlib.contextmanager
def _rejected_as_400() -> Iterator[None]:
    """A toxic the fault vocabulary or the proxy rejects is a bad request, not a crash."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ApiError):
            raise
        raise ApiError(400, str(exc)) from exc
