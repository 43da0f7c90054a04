"""psycopg_pool's async pool, with maintenance tasks that end when cancelled.

psycopg_pool runs its maintenance (opening a connection, returning one) in
worker tasks that catch ``CancelledError`` around each job, to keep the pool
consistent, and then wait on their queue again. A program that ends
``asyncio.run`` without closing its client has every task cancelled and waited
for; a worker cancelled while it opened a connection never ended, and the
program hung at exit (psycopg_pool 3.3.3, seen in CI under load). Here a worker
cancelled once stops before it takes its next job. ``pool.close()`` is
unchanged: it still stops the workers with its own sentinel. (Python 3.10 has
no ``Task.cancelling``: there the workers behave as psycopg_pool's.)
"""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

import psycopg
import psycopg_pool

T = TypeVar("T")


class _EndsWhenCancelled(Generic[T]):
    """The worker's queue, seen by one worker: ``get`` raises ``CancelledError`` when
    the worker's task was cancelled (and the cancellation swallowed) before."""

    def __init__(self, queue: asyncio.Queue[T]) -> None:
        self._queue = queue

    async def get(self) -> T:
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)  # Python 3.11 and later
        if cancelling is not None and cancelling():
            raise asyncio.CancelledError
        return await self._queue.get()


class AsyncPool(psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]):
    """An ``AsyncConnectionPool`` whose maintenance workers end when cancelled."""

    @classmethod
    async def worker(cls, q: Any) -> None:
        queue: Any = _EndsWhenCancelled(q)  # the worker only calls ``get``
        await super().worker(queue)
