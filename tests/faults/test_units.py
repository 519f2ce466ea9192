"""Parsing durations, sizes, rates and ranges."""

from __future__ import annotations

import pytest

from sockwork.faults.units import (
    format_duration,
    format_size,
    parse_duration,
    parse_int_range,
    parse_range,
    parse_rate,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("200ms", 0.2),
        ("0.2", 0.2),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        (" 3 s ", 3.0),
        ("1min", 60.0),
        ("5MS", 0.005),
    ],
)
def test_units_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "-1s", "1 parsec", "1M", "nan", "1..2"])
def test_units_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64", 64),
        ("10KB", 10_000),
        ("10kb", 10_000),
        ("10K", 10_000),
        ("1MiB", 1_048_576),
        ("2MB", 2_000_000),
        ("1GiB", 1024**3),
        ("1.5KiB", 1536),
        ("7B", 7),
    ],
)
def test_units_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "KB", "1.5", "10 parsecs", "-5"])
def test_units_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("1MiB/s", 1_048_576.0),
        ("100KB/s", 100_000.0),
        ("8Mbit/s", 1_000_000.0),
        ("1000", 1000.0),
        ("64KiB", 65536.0),
        ("800bps", 100.0),
    ],
)
def test_units_parse_rate(text: str, rate: float) -> None:
    assert parse_rate(text) == pytest.approx(rate)


@pytest.mark.parametrize("text", ["", "fast", "0KB/s", "1 parsec/s"])
def test_units_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_units_parse_ranges() -> None:
    assert parse_int_range("1..64") == (1, 64)
    assert parse_int_range("64") == (64, 64)
    assert parse_int_range("1KB..2KiB") == (1000, 2048)
    assert parse_range("10ms..20ms", parse_duration) == pytest.approx((0.01, 0.02))
    with pytest.raises(ValueError, match="low end"):
        parse_int_range("64..1")
    with pytest.raises(ValueError, match="size"):
        parse_int_range("1..x")


def test_units_reject_non_text() -> None:
    with pytest.raises(TypeError):
        parse_size(5)  # type: ignore[arg-type]


def test_units_format() -> None:
    assert format_duration(0.2) == "200ms"
    assert format_duration(2) == "2s"
    assert format_duration(5e-5) == "50us"
    assert format_size(1_048_576) == "1MiB"
    assert format_size(10) == "10B"
    assert parse_duration(format_duration(0.25)) == pytest.approx(0.25)
