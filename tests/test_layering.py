"""The sans-IO cores never import I/O, clocks or threads (see STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

# Modules that must stay pure: fed bytes and time, handing back bytes, messages or actions.
CORE_MODULES = [
    "sockwork/errors.py",
    "sockwork/frames/codec.py",
    "sockwork/frames/_ending.py",
    "sockwork/frames/_queue.py",
    "sockwork/faults/vocabulary.py",
    "sockwork/faults/plan.py",
    "sockwork/faults/action.py",
    "sockwork/faults/report.py",
    "sockwork/faults/effect.py",
    "sockwork/faults/units.py",
    "sockwork/faults/exploration/trace.py",
    "sockwork/faults/exploration/schedule.py",
    "sockwork/faults/exploration/candidates.py",
    "sockwork/faults/exploration/shrink.py",
    "sockwork/faults/exploration/outcome.py",
    "sockwork/proxy/toxic.py",
    "sockwork/proxy/fault.py",
    "sockwork/proxy/table.py",
    "sockwork/console/telnet.py",
    "sockwork/console/policy.py",
    "sockwork/console/terminal.py",
    "storify/api.py",
    "storify/cart.py",
    "storify/conditions.py",
    "storify/errors.py",
    "storify/money.py",
    "storify/tally.py",
]

FORBIDDEN = {"socket", "selectors", "ssl", "asyncio", "threading", "time", "select"}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_io(module: str) -> None:
    path = SRC / module
    assert path.is_file(), f"core module {module} is missing"
    assert _imported_roots(path) & FORBIDDEN == set()


# Shared plumbing has one home (issue 11 item 4); a module that needs it imports it.
PLUMBING = {
    "asyncio.new_event_loop": ("sockwork/_loop.py", "sockwork._loop.LoopThread"),
    "SO_REUSEADDR": ("sockwork/address.py", "sockwork.address.bind_listener"),
    '.rpartition(":")': ("sockwork/address.py", "sockwork.address.parse_address"),
}


@pytest.mark.parametrize(("text", "home", "use"), [(k, *v) for k, v in PLUMBING.items()])
def test_shared_plumbing_lives_in_one_module(text: str, home: str, use: str) -> None:
    users = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if text in path.read_text(encoding="utf-8")
    )
    assert users == [home], f"{text} outside {home}: use {use} instead"
