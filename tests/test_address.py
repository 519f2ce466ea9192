"""sockwork.address: host:port, ports and numbers as users type them; the one listener binder."""

from __future__ import annotations

import errno
import socket

import pytest

from sockwork.address import (
    bind_listener,
    format_address,
    parse_address,
    parse_float,
    parse_int,
    parse_port,
)

# Text that int() or float() read as a number, but no user means as one.
NOT_ASCII = ["٣", "６５４３２", "²", "①", "1_000", "١"]


@pytest.mark.parametrize(("text", "value"), [("10", 10), ("-3", -3), ("+7", 7), (" 8 ", 8)])
def test_parse_int_reads_ascii_whole_numbers(text: str, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize("text", [*NOT_ASCII, "", "1.5", "0x10", "1e3", "--1"])
def test_parse_int_refuses_what_int_would_misread(text: str) -> None:
    with pytest.raises(ValueError, match=r"^seed must be a whole number, not "):
        parse_int(text, "seed")


def test_parse_int_checks_the_range_and_names_it() -> None:
    assert parse_int("0", "N", low=0) == 0
    with pytest.raises(ValueError, match=r"^N must be a whole number of at least 0, not -1$"):
        parse_int("-1", "N", low=0)
    with pytest.raises(ValueError, match=r"in 1\.\.5, not 6$"):
        parse_int("6", low=1, high=5)
    with pytest.raises(ValueError, match=r"of at most 5, not 6$"):
        parse_int("6", high=5)


def test_parse_int_refuses_more_digits_than_int_converts() -> None:
    with pytest.raises(ValueError, match="too many digits: 5000"):
        parse_int("9" * 5000, "seed")


@pytest.mark.parametrize(
    ("text", "value"), [("1.5", 1.5), (".5", 0.5), ("2.", 2.0), ("2e3", 2000.0), ("-1", -1.0)]
)
def test_parse_float_reads_ascii_numbers(text: str, value: float) -> None:
    assert parse_float(text) == value


@pytest.mark.parametrize("text", [*NOT_ASCII, "inf", "-inf", "nan", "NaN", "1e999", "", "."])
def test_parse_float_refuses_unicode_digits_and_non_finite_values(text: str) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be a finite number, not "):
        parse_float(text, "timeout")


def test_parse_float_checks_the_range() -> None:
    assert parse_float("1", "p", low=0.0, high=1.0) == 1.0
    with pytest.raises(ValueError, match=r"^p must be a number in 0\.0\.\.1\.0, not 1\.5$"):
        parse_float("1.5", "p", low=0.0, high=1.0)


def test_parse_port_reads_digits_only() -> None:
    assert parse_port("0") == 0
    assert parse_port("65535") == 65535
    for text in ["65536", "-1", "+80", " 80", "٣", "８０", ""]:
        with pytest.raises(ValueError, match=r"^port must be a whole number in 0\.\.65535"):
            parse_port(text)
    with pytest.raises(ValueError, match=r"in 1\.\.65535, not 0$"):
        parse_port("0", zero=False)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8080", ("::1", 8080)),
        ("::1:8080", ("::1", 8080)),  # the last colon separates the port
    ],
)
def test_parse_address_splits_host_and_port(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


def test_parse_address_default_host_and_errors() -> None:
    assert parse_address(":80", default_host="127.0.0.1") == ("127.0.0.1", 80)
    assert parse_address("[]:80", default_host="127.0.0.1") == ("127.0.0.1", 80)
    with pytest.raises(ValueError, match=r"^--listen must be HOST:PORT .*not ':80'$"):
        parse_address(":80", "--listen")
    with pytest.raises(ValueError, match=r"^address must be HOST:PORT"):
        parse_address("localhost")
    with pytest.raises(ValueError, match=r"^--upstream port must be a whole number in 1\.\.65535"):
        parse_address("h:0", "--upstream", zero=False)
    with pytest.raises(ValueError, match=r"^address port must be .*not '٣'$"):
        parse_address("h:٣")


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (("127.0.0.1", 80), "127.0.0.1:80"),
        (("::1", 80, 0, 0), "[::1]:80"),
        ("/tmp/sock", "/tmp/sock"),
        (None, "None"),
    ],
)
def test_format_address_writes_what_parse_address_reads(address: object, text: str) -> None:
    assert format_address(address) == text
    if isinstance(address, tuple):
        assert parse_address(text) == address[:2]


def test_bind_listener_prefers_ipv4_and_does_not_block() -> None:
    with bind_listener("localhost", 0) as sock:
        assert sock.family == socket.AF_INET
        assert sock.getblocking() is False
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        with socket.create_connection((host, port), timeout=5):
            pass  # the kernel completes the handshake: the socket listens


def test_bind_listener_uses_the_given_lookup_and_reports_a_taken_port() -> None:
    infos = socket.getaddrinfo("127.0.0.1", 0, type=socket.SOCK_STREAM)
    with bind_listener("ignored", 0, infos=infos) as first:
        port = first.getsockname()[1]
        with pytest.raises(OSError) as info:
            bind_listener("127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(socket.gaierror):
        bind_listener("x", 0, infos=[])
