"""Buffered (write-behind) metrics: ``add_metrics`` returns at once, rows go out in batches.

Opt in per client (``AsyncClient(..., buffered=True)``) or per run
(``await run.set_buffered()``). Each ``add_metrics`` call is checked at once
(bad names and values raise right there, nothing is buffered) and appended to
the run's buffer; a batch is written when ``flush_rows`` rows are waiting, every
``flush_interval`` seconds, and on ``flush()``, ``stop()``, the end of
``track()`` (normal, exception, Ctrl-C, SIGTERM), ``client.close()`` and at
interpreter exit (the blocking API's clients, and an AsyncClient never closed:
see ``sqltrack.exits``). In a forked child, runs inherited from the parent write
through (see ``AsyncClient._reset_after_fork``).

Guarantees:
* rows are written in the order they were logged; logging the same
  ``(step, progress)`` twice gives the same result as write-through (the later
  values win, other columns are kept);
* ``add_metrics`` does not wait for the database: when ``flush_rows`` rows are
  waiting, the flusher swaps them out under the buffer's lock and writes them
  while the producer fills a new batch (an async producer lets the event loop
  run once per call while a batch waits to be taken, so a loop that awaits
  nothing but ``add_metrics`` does not starve the flusher);
* the buffer is bounded (``max_rows``, default 100 x ``flush_rows``): only a
  producer that outruns the database for that long finds it full, and that call
  waits until one batch is written instead of growing memory (back-pressure);
* a failed batch write is never swallowed: it raises :class:`MetricWriteError`
  from the next ``add_metrics``, ``flush()`` or ``stop()`` of the run.

The buffer is thread-safe: the blocking API hands rows over from the calling
thread without waiting for the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import MetricWriteError
from .metrics import PreparedRow
from .values import Auto

if TYPE_CHECKING:
    from .runs import AsyncRun

DEFAULT_FLUSH_ROWS = 1000
DEFAULT_FLUSH_INTERVAL = 1.0
#: The default bound of a buffer, in batches: ``max_rows = 100 x flush_rows``.
DEFAULT_MAX_ROWS_FACTOR = 100
#: A batch write takes at most max(flush_rows, this many) rows.
MAX_BATCH_ROWS = 1000


__all__ = ["MetricBuffer", "MetricWriteError"]  # MetricWriteError: from sqltrack.errors


class MetricBuffer:
    """The write-behind buffer of one run's metric rows."""

    def __init__(
        self,
        run: AsyncRun,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_rows: int | None = None,
    ) -> None:
        if flush_rows < 1 or flush_interval <= 0:
            raise ValueError("flush_rows must be >= 1 and flush_interval > 0")
        self.run = run
        self.flush_rows = int(flush_rows)
        self.flush_interval = float(flush_interval)
        self.max_rows = int(max_rows) if max_rows else DEFAULT_MAX_ROWS_FACTOR * self.flush_rows
        if self.max_rows < self.flush_rows:
            raise ValueError("max_rows must be >= flush_rows")
        self._table = run.client.metrics
        self._rows: list[PreparedRow] = []
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._flushing = asyncio.Lock()
        self._error: MetricWriteError | None = None
        #: A flush was asked for and has not taken the rows yet (one request at a time).
        self._flush_requested = False
        self._timer = self._loop.create_task(self._flush_periodically())
        run.client.on_close(self)

    def __len__(self) -> int:
        return len(self._rows)

    # -- producers ----------------------------------------------------------------
    def put(
        self,
        metrics: dict[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> bool:
        """Buffer one row, from any thread, without I/O; False when the buffer is full."""
        self._raise_pending_error()
        row = self._table.prepare(metrics, step, progress, updated)
        with self._lock:
            if len(self._rows) >= self.max_rows:
                return False
            self._rows.append(row)
            waiting = len(self._rows)
        if waiting >= self.flush_rows and not self._flush_requested:
            self._flush_requested = True
            self._request_flush()
        return True

    async def add(
        self,
        metrics: dict[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> None:
        """Buffer one row; when the buffer is full, wait for a flush first.

        While a batch waits to be taken, let the loop run once (``sleep(0)``): the
        flusher takes the batch and drives its write between this task's calls.
        """
        while not self.put(metrics, step, progress, updated):
            await self._flush_quietly(until_room=True)  # back-pressure: one batch, not all
            self._raise_pending_error()
        if len(self._rows) >= self.flush_rows:
            await asyncio.sleep(0)

    def _request_flush(self) -> None:
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._loop.create_task(self._flush_quietly())
        else:
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._flush_quietly()))

    # -- writing ------------------------------------------------------------------
    async def flush(self) -> None:
        """Write every row buffered so far; raise a write error not yet reported."""
        await self._flush_quietly()
        self._raise_pending_error()

    async def _flush_quietly(self, until_room: bool = False) -> None:
        """Write the buffered rows, a batch at a time (``until_room``: until one row fits).

        A batch is at most ``max(flush_rows, 1000)`` rows and the flush lock is held
        per batch (taken and written under it, so batches go out in order), so a
        producer that found the buffer full waits for about one batch, not for the
        whole backlog.
        """
        while True:
            async with self._flushing:
                with self._lock:
                    if until_room and len(self._rows) < self.max_rows:
                        return
                    size = max(self.flush_rows, MAX_BATCH_ROWS)
                    if len(self._rows) <= size:
                        rows, self._rows = self._rows, []  # the batch handover: O(1)
                    else:
                        rows = self._rows[:size]
                        del self._rows[:size]
                    self._flush_requested = False
                if not rows:
                    return
                try:
                    await self._table.write_batch(self.run.id, rows)
                except Exception as error:  # noqa: BLE001 - kept and raised to the user
                    failure = MetricWriteError(
                        f"{len(rows)} buffered metric rows of run {self.run.id} "
                        f"(steps {rows[0].step}..{rows[-1].step}) were not written: {error}"
                    )
                    failure.__cause__ = error
                    self._error = self._error or failure

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._rows:
                await self._flush_quietly()

    def _raise_pending_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def rebind(self) -> None:
        """Move to the running loop (at exit, when the loop the buffer was made on is gone)."""
        self._loop = asyncio.get_running_loop()
        self._flushing = asyncio.Lock()
        self._flush_requested = False

    async def close(self) -> None:
        """Flush, stop the periodic flush and detach from the client; raise a pending error."""
        if not self._timer.done() and not self._timer.get_loop().is_closed():
            self._timer.cancel()
        self.run.client.hooks.discard(self)
        await self.flush()

