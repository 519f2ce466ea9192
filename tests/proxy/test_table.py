"""FaultTable (sans-IO): named faults in, the plan's faults out; no socket, no loop."""

from __future__ import annotations

import sys

import pytest

from sockwork.faults import (
    AcceptDelay,
    CloseAfter,
    CloseOnAccept,
    ConnectDelay,
    ConnectTimeout,
    DnsFailure,
    Latency,
    Refuse,
    Slice,
)
from sockwork.faults.plan import Plan
from sockwork.proxy.table import FaultTable, InstalledFault


def test_table_add_sets_the_vocabulary_direction_and_a_default_name() -> None:
    table = FaultTable()
    assert table.add(Latency(0.1), direction="upstream") == "latency_upstream"
    assert table.add(Latency(0.2)) == "latency_downstream"  # Latency's own "recv"
    assert table.add(Slice(9), direction="both") == "slice_both"
    assert table.add(CloseOnAccept()) == "closeonaccept"
    assert table.planned == (
        Latency(0.1, direction="send"),
        Latency(0.2, direction="recv"),
        Slice(9, direction="both"),
        CloseOnAccept(),
    )
    assert table.installed == (
        InstalledFault("latency_upstream", Latency(0.1), "upstream"),
        InstalledFault("latency_downstream", Latency(0.2), "downstream"),
        InstalledFault("slice_both", Slice(9), "both"),
        InstalledFault("closeonaccept", CloseOnAccept(), ""),
    )
    assert "latency_upstream" in table and "nope" not in table


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fault": Latency(0.1), "direction": "sideways"}, ValueError, "direction"),
        ({"fault": Latency(0.1), "scope": "old"}, ValueError, "scope"),
        ({"fault": ConnectDelay(1.0)}, ValueError, "cannot produce ConnectDelay"),
        ({"fault": DnsFailure()}, ValueError, "cannot produce DnsFailure"),
        ({"fault": Refuse(probability=0.5)}, ValueError, "no probability"),
        ({"fault": ConnectTimeout(connections=2)}, ValueError, "no probability"),
        ({"fault": "latency"}, TypeError, "not a fault"),
    ],
)
def test_table_add_rejections_leave_it_unchanged(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    table = FaultTable()
    table.add(Latency(0.1), name="kept")
    fault = kwargs.pop("fault")
    with pytest.raises(error, match=match):
        table.add(fault, **kwargs)  # type: ignore[arg-type]
    assert [f.name for f in table.installed] == ["kept"]


def test_table_names_are_unique_and_changes_need_a_known_name() -> None:
    table = FaultTable()
    table.add(Latency(0.1), name="lag")
    with pytest.raises(ValueError, match="'lag' exists"):
        table.add(Slice(10), name="lag")
    with pytest.raises(KeyError, match="no fault named 'gone'"):
        table.update("gone", Latency(0.2))
    with pytest.raises(KeyError, match="no fault named 'gone'"):
        table.remove("gone")


def test_table_update_keeps_the_direction_remove_and_clear() -> None:
    table = FaultTable()
    table.add(Latency(0.1), direction="downstream", name="lag")
    table.update("lag", Latency(0.3))
    assert table.planned == (Latency(0.3, direction="recv"),)
    assert table.installed == (InstalledFault("lag", Latency(0.3), "downstream"),)
    table.add(Slice(5), name="cut")
    table.remove("lag")
    assert [f.name for f in table.installed] == ["cut"]
    table.clear()
    assert table.planned == () and table.installed == ()


def test_table_scope_new_on_add_selects_connections_still_to_come() -> None:
    table = FaultTable()
    for _ in range(3):
        table.opened()
    table.accepted()
    table.add(Latency(0.1), direction="upstream", name="lag", scope="new")
    table.add(AcceptDelay(0.1), name="slow", scope="new")
    table.add(CloseAfter(0, connections=2), direction="downstream", name="gone", scope="new")
    table.add(CloseAfter(0, connections={2, 5}), direction="downstream", name="five", scope="new")
    table.add(Refuse(), name="refuse", scope="new")  # the listener: nothing to narrow
    assert table.planned == (
        Latency(0.1, direction="send", connections=range(4, sys.maxsize)),
        AcceptDelay(0.1, connections=range(2, sys.maxsize)),
        # "gone" could only pick connections 1 and 2, both given: nothing is planned
        CloseAfter(0, direction="recv", connections=frozenset({5})),
        Refuse(),
    )
    assert [f.name for f in table.installed] == ["lag", "slow", "gone", "five", "refuse"]


def test_table_scope_new_on_update_keeps_open_connections_on_the_old_values() -> None:
    table = FaultTable()
    table.add(Latency(0.1), direction="downstream", name="lag")
    table.opened()
    table.opened()
    table.update("lag", Latency(0.5), scope="new")
    old, new = table.planned
    assert old == Latency(0.1, direction="recv", connections=2)  # the first two
    assert new == Latency(0.5, direction="recv", connections=range(3, sys.maxsize))
    assert table.name_of(old) == table.name_of(new) == "lag"
    # Once more: each version keeps the connections it had.
    table.opened()
    table.update("lag", Latency(0.9), scope="new")
    assert table.planned == (
        Latency(0.1, direction="recv", connections=2),
        Latency(0.5, direction="recv", connections=range(3, 4)),
        Latency(0.9, direction="recv", connections=range(4, sys.maxsize)),
    )
    # scope="all" replaces every version.
    table.update("lag", Latency(0.2))
    assert table.planned == (Latency(0.2, direction="recv"),)


def test_table_scope_new_update_before_any_connection_drops_the_old_values() -> None:
    table = FaultTable()
    table.add(Latency(0.1), name="lag")
    table.update("lag", Latency(0.5), scope="new")
    assert table.planned == (Latency(0.5, direction="recv", connections=range(1, sys.maxsize)),)


def test_table_name_of_outlives_replacement() -> None:
    table = FaultTable()
    table.add(Latency(0.1), name="lag")
    (first,) = table.planned
    table.update("lag", Latency(0.2))
    table.remove("lag")
    assert table.name_of(first) == "lag"  # a report event may still name it
    assert table.name_of(Latency(0.1)) == "Latency"  # a fault the table never planned


def test_table_listener_faults() -> None:
    table = FaultTable()
    assert not table.refuses and not table.tarpits
    table.add(Refuse(), name="r")
    table.add(ConnectTimeout(), name="t")
    assert table.refuses and table.tarpits
    table.remove("r")
    assert not table.refuses and table.tarpits


def test_table_planned_faults_drive_a_plan_as_documented() -> None:
    # The table's output is what a Plan takes: scope="new" spares connection 1.
    import random

    table = FaultTable()
    plan = Plan(table.planned, rng=random.Random(1), now=0.0)
    table.opened()
    first = plan.open(now=0.0)
    table.add(CloseAfter(0), direction="downstream", name="cut", scope="new")
    plan.update(table.planned, now=0.0)
    table.opened()
    second = plan.open(now=0.0)
    assert first.recv.idle and not second.recv.idle
