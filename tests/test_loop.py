"""sockwork._loop.LoopThread: the one asyncio-loop-in-a-thread of the servers."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading

import pytest

from sockwork._loop import LoopThread


def _threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_loop_thread_start_returns_what_begin_returns_on_its_thread() -> None:
    runner = LoopThread("test-loop-a")

    async def begin() -> str:
        return threading.current_thread().name

    assert runner.start(begin()) == "test-loop-a"
    assert runner.running and runner.loop.is_running()
    assert _threads_named("test-loop-a")[0].daemon
    runner.stop()
    assert not runner.running and _threads_named("test-loop-a") == []


def test_loop_thread_start_raises_what_begin_raised_and_leaves_nothing() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    runner = LoopThread("test-loop-b")

    async def begin() -> None:
        await asyncio.start_server(lambda r, w: None, *taken.getsockname())

    with taken, pytest.raises(OSError) as info:
        runner.start(begin())
    assert info.value.errno == errno.EADDRINUSE
    assert not runner.running and _threads_named("test-loop-b") == []
    with pytest.raises(RuntimeError, match="already started"):
        runner.start(begin())


def test_loop_thread_run_hands_coroutines_over_and_stop_runs_end_first() -> None:
    runner = LoopThread("test-loop-c")
    runner.start(asyncio.sleep(0))
    ended: list[str] = []
    stray: list[BaseException] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            stray.append(exc)
            raise

    # asyncio keeps only weak references to tasks: without this one, the garbage collector
    # may take the waiting task (and its Event) before stop() could cancel it.
    kept: list[asyncio.Task[None]] = []

    async def spawn() -> int:
        kept.append(asyncio.get_running_loop().create_task(forever()))
        await asyncio.sleep(0)
        return 7

    async def end() -> None:
        ended.append(threading.current_thread().name)

    assert runner.run(spawn()) == 7
    runner.stop(end())
    assert ended == ["test-loop-c"]
    assert len(stray) == 1  # the task left running was cancelled and awaited
    runner.stop(end())  # idempotent: nothing more runs
    assert ended == ["test-loop-c"]
    with pytest.raises(RuntimeError, match="not running"):
        runner.loop  # noqa: B018


def test_loop_thread_refuses_to_wait_for_itself() -> None:
    runner = LoopThread("test-loop-d")
    runner.start(asyncio.sleep(0))
    errors: list[str] = []

    async def inside() -> None:
        for attempt in (lambda: runner.run(asyncio.sleep(0)), lambda: runner.stop()):
            try:
                attempt()
            except RuntimeError as exc:
                errors.append(str(exc))

    runner.run(inside())
    runner.stop()
    assert len(errors) == 2 and "another thread" in errors[0] and "own thread" in errors[1]
    with pytest.raises(RuntimeError, match="needs a running loop"):
        runner.run(asyncio.sleep(0))


def test_loop_thread_stop_times_out_a_slow_end_and_still_stops() -> None:
    runner = LoopThread("test-loop-e")
    runner.start(asyncio.sleep(0))
    with pytest.raises(TimeoutError):
        runner.stop(asyncio.sleep(60), timeout=0.05)
    assert not runner.running and _threads_named("test-loop-e") == []
