"""Group commit on an asyncio loop: the API connections' checkouts, one transaction per batch.

# Rules:
# - ``submit()`` queues a checkout and waits for its outcome. The first checkout
#   queued while no flush is pending schedules one with ``call_soon``, so the
#   checkouts of every connection whose request arrived in the same loop iteration
#   commit together.
# - With an executor (what storify's API server gives), the loop never waits for the
#   database. A batch that can commit without waiting (Store.try_checkout_batch:
#   SQLite, the write lock free, no fsync per commit) commits on the loop: a hop to
#   a thread costs more than that commit (GIL hand-offs, measured 10-20 us of CPU per
#   checkout). Any other batch (the lock held by another process or thread, a
#   durable commit, PostgreSQL) commits in a store thread, one batch at a time per
#   queue (batches take the same lock or rows, so two would only wait on each
#   other); the loop goes on meanwhile, and the checkouts arriving form the next
#   batch. Without an executor, every batch commits inline (the loop waits for it).
# - ``submit()`` returns only after the batch's transaction committed (or failed):
#   a reply is never sent for an order that is not durable.
# - A batch holds at most ``max_batch`` checkouts; the rest wait for the next flush.
# - A checkout received whole is committed even if its connection is lost (its
#   handler cancelled) meanwhile, as it was before batching: the client learns the
#   outcome with ``order_status`` or by retrying with the same request id.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque

from storify.errors import StoreError
from storify.records import CheckoutRequest, Receipt
from storify.store import Store

__all__ = ["CheckoutQueue"]

Outcome = Receipt | StoreError


class CheckoutQueue:
    """Commits the checkouts submitted on one asyncio loop in batches (group commit).

    Args:
        store: the store committing them (:meth:`Store.checkout_batch`).
        executor: where a batch is committed (None: inline on the loop).
        max_batch: checkouts in one transaction at most (1: each checkout alone).
    """

    def __init__(
        self,
        store: Store,
        *,
        executor: concurrent.futures.Executor | None = None,
        max_batch: int | None = None,
    ) -> None:
        max_batch = store.max_batch if max_batch is None else max_batch
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.store = store
        self.max_batch = max_batch
        self._executor = executor
        self._pending: deque[tuple[CheckoutRequest, asyncio.Future[Outcome]]] = deque()
        self._scheduled = False
        self._running = False  # a batch is being committed in the executor

    async def submit(self, request: CheckoutRequest) -> Outcome:
        """Commit ``request`` with the others submitted meanwhile; return its outcome.

        Raises:
            Whatever the batch's commit raised that is not a StoreError (a bug).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((request, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and not self._running and self._pending:
            self._scheduled = True
            loop.call_soon(self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        batch: list[tuple[CheckoutRequest, asyncio.Future[Outcome]]] = []
        while self._pending and len(batch) < self.max_batch:
            batch.append(self._pending.popleft())
        if not batch:
            return
        requests = [request for request, _ in batch]
        outcomes: list[Outcome] | BaseException | None
        try:
            if self._executor is None:
                outcomes = self.store.checkout_batch(requests)
            else:
                outcomes = self.store.try_checkout_batch(requests)  # None: it would wait
        except Exception as error:  # noqa: BLE001 - handed to every member of the batch
            outcomes = error
        if outcomes is not None:  # committed (or failed) on the loop
            _settle(batch, outcomes)
            self._schedule(loop)
            return
        self._running = True
        done = loop.run_in_executor(self._executor, self.store.checkout_batch, requests)

        def finished(done: asyncio.Future[list[Outcome]]) -> None:
            self._running = False
            if done.cancelled():  # the executor shut down: the server is stopping
                for _, future in batch:
                    future.cancel()
            else:
                error = done.exception()
                _settle(batch, done.result() if error is None else error)
            self._schedule(loop)

        done.add_done_callback(finished)


def _settle(
    batch: list[tuple[CheckoutRequest, asyncio.Future[Outcome]]],
    outcomes: list[Outcome] | BaseException,
) -> None:
    """Hand each waiting checkout its outcome (the same exception to all on failure)."""
    for index, (_, future) in enumerate(batch):
        if future.done():
            continue  # cancelled while its batch committed: nobody waits for the reply
        if isinstance(outcomes, BaseException):
            if isinstance(outcomes, StoreError):
                future.set_result(outcomes)  # StoreUnavailable: every member's answer
            else:
                future.set_exception(outcomes)
        else:
            future.set_result(outcomes[index])
