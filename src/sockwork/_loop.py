"""LoopThread: an asyncio loop in a daemon thread, for servers that also work without one.

The fault proxy, the Toxiproxy server and storify's API server each run their asyncio
code on a loop of their own when used from blocking code (``with Server(...):``). This
is that loop: start it with the coroutine that binds (its failure is raised by
``start()``), hand it coroutines from other threads, and stop it so nothing outlives it.
"""

# Rules:
# - start() returns only once ``begin`` has finished on the loop: an address in use is
#   raised in the caller's thread, and a server that started is listening.
# - stop() runs ``end`` (the server's own orderly close) to completion first, then stops
#   the loop, cancels every task still scheduled and waits for it, shuts down async
#   generators and the default executor (name look-ups run there), joins the thread and
#   closes the loop. Nothing the loop ran survives stop(); stop() is idempotent.
# - Calling run() or stop() from the loop's own thread would wait for itself: refused.

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

_T = TypeVar("_T")


class LoopThread:
    """An asyncio event loop running in a daemon thread, started and stopped explicitly.

    Args:
        name: the thread's name (shown by debuggers and ``threading.enumerate()``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._used = False

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped" if self._used else "new"
        return f"<LoopThread {self.name!r} {state}>"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop.

        Raises:
            RuntimeError: not started, or stopped.
        """
        if self._loop is None:
            raise RuntimeError(f"{self.name}: the loop is not running")
        return self._loop

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._thread is not None

    def in_loop_thread(self) -> bool:
        """Return True when called from the loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def start(self, begin: Coroutine[Any, Any, _T]) -> _T:
        """Start the loop in a daemon thread, run ``begin`` on it and return its result.

        If ``begin`` raises, the loop is torn down and the exception is raised here.

        Raises:
            RuntimeError: already started once (a LoopThread runs one time).
        """
        if self._used:
            begin.close()
            raise RuntimeError(f"{self.name}: already started; make a new LoopThread")
        self._used = True
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                try:
                    result = loop.run_until_complete(begin)
                except BaseException as exc:  # e.g. address in use: raised by start()
                    ready.set_exception(exc)
                    return
                ready.set_result(result)
                loop.run_forever()
            finally:
                _finish(loop)

        thread = threading.Thread(target=run, name=self.name, daemon=True)
        thread.start()
        try:
            result = ready.result()
        except BaseException:
            thread.join()
            loop.close()
            raise
        self._loop, self._thread = loop, thread
        return result

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coro`` on the loop from another thread and return its result.

        Raises:
            RuntimeError: the loop is not running, or this is the loop's thread.
            TimeoutError: ``timeout`` seconds passed (``coro`` goes on running).
        """
        if self._loop is None or self.in_loop_thread():
            coro.close()
            raise RuntimeError(f"{self.name}: run() needs a running loop and another thread")
        return _wait(asyncio.run_coroutine_threadsafe(coro, self._loop), timeout)

    def stop(
        self, end: Coroutine[Any, Any, object] | None = None, *, timeout: float | None = None
    ) -> None:
        """Run ``end`` on the loop (waiting at most ``timeout``), then stop the loop and thread.

        Idempotent: a second call returns at once (``end`` is then not run).

        Raises:
            RuntimeError: called from the loop's own thread.
            TimeoutError: ``end`` took longer than ``timeout``; the loop is stopped anyway.
            Exception: whatever ``end`` raised; the loop is stopped anyway.
        """
        if self.in_loop_thread():
            if end is not None:
                end.close()
            raise RuntimeError(f"{self.name}: stop() from the loop's own thread")
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            if end is not None:
                end.close()
            return
        try:
            if end is not None:
                _wait(asyncio.run_coroutine_threadsafe(end, loop), timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


def _wait(future: concurrent.futures.Future[_T], timeout: float | None) -> _T:
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:  # not the built-in TimeoutError before 3.11
        raise TimeoutError(f"no result within {timeout} s") from None


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and await what is still scheduled, then shut the loop's helpers down."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
