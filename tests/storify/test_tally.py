from __future__ import annotations

import pytest

from storify.tally import Tally, check_invariant, percentile, render_progress, summary


def test_percentile_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    with pytest.raises(ValueError):
        percentile(values, 1.5)


def _product(pid: int, stock: int, stocked: int, sold: int) -> dict[str, object]:
    return {"id": pid, "name": f"p{pid}", "stock": stock, "stocked": stocked, "sold": sold}


def test_check_invariant_ok() -> None:
    before = [_product(1, 10, 10, 0), _product(2, 5, 5, 0)]
    after = [_product(1, 7, 10, 3), _product(2, 5, 5, 0)]
    check = check_invariant(before, after, {1: 3})
    assert check.ok
    assert check.lines == ("ok: initial stock 15 = stock 12 + sold 3 (2 products)",)


def test_check_invariant_finds_lost_sale_broken_books_and_missing_product() -> None:
    before = [_product(1, 10, 10, 0), _product(2, 5, 5, 0), _product(3, 1, 1, 0)]
    after = [_product(1, 7, 10, 2), _product(2, 5, 5, 0)]
    check = check_invariant(before, after, {1: 2, 2: 1})
    assert not check.ok
    assert check.lines[0].startswith("BROKEN")
    assert "#1 p1: stock 10 before != 7 now + 2 bought" in check.lines
    assert "#1 p1: store books broken: stocked 10 != 7 in stock + 2 sold" in check.lines
    assert "#2 p2: stock 5 before != 5 now + 1 bought" in check.lines
    assert "#3 p3: no longer on sale, cannot check" in check.lines


def test_check_invariant_rejects_malformed_catalog() -> None:
    with pytest.raises(ValueError, match="stock"):
        check_invariant([{"id": 1}], [{"id": 1}], {})


def test_tally_and_summary() -> None:
    tally = Tally()
    tally.record_purchase({1: 2}, 0.010)
    tally.record_purchase({1: 1, 2: 1}, 0.030)
    tally.record_recovered({2: 4})
    tally.retried, tally.replayed, tally.failed, tally.rejected = 3, 1, 1, 2
    assert (tally.purchases, tally.units, tally.bought) == (2, 8, {1: 3, 2: 5})
    text = summary(tally, customers=2, seconds=2.0, target="x:1", seed=7, invariant=None)
    assert "2 customers for 2.0 s against x:1 (seed 7)" in text
    assert "purchases   2 (1.0/s), 8 units" in text
    assert "p50 10.0 ms, p99 30.0 ms, max 30.0 ms" in text
    assert "retried     3 resent after a network error (1 had already committed" in text
    assert "failed      1 (1 found committed afterwards)" in text
    tally.unresolved.append(("r", {1: 1}))
    text = summary(tally, customers=2, seconds=2.0, target="x:1", seed=7, invariant=None)
    assert "failed      1 (1 found committed afterwards, 1 UNRESOLVED" in text
    assert "rejected    2" in text
    assert "invariant   not checked" in text


def test_render_progress() -> None:
    line = render_progress(2.5, 5.0, 1000, width=10)
    assert line == "[#####.....]  50%   2.5/5.0 s  1000 purchases  400/s"
    assert render_progress(9.0, 5.0, 0, width=4).startswith("[####] 100%")
    assert render_progress(0.0, 0.0, 0, width=2).startswith("[##] 100%")
