"""Buffered (write-behind) metrics: ``add_metrics`` returns at once, rows go out in batches.

Opt in per client (``AsyncClient(..., buffered=True)``) or per run
(``await run.set_buffered()``). Each ``add_metrics`` call is checked at once
(bad names and values raise right there, nothing is buffered) and appended to
the run's buffer; a batch is written when ``flush_rows`` rows are waiting, every
``flush_interval`` seconds, and on ``flush()``, ``stop()``, the end of
``track()`` (normal, exception, Ctrl-C, SIGTERM), ``client.close()`` and at
interpreter exit (the blocking API's clients, and an AsyncClient never closed:
see ``sqltrack.process.exits``). In a forked child, runs inherited from the parent write
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
  waits until one batch is written instead of growing memory (back-pressure;
  during an outage the rows go to the spool instead);
* a server that does not answer loses nothing: a failed batch goes back to the
  head of the buffer, in order, and is tried again with a growing pause (0.1 s
  up to 2 s); newer rows queue behind it. With a spool (``sqltrack.outage.spool``; on
  unless ``spool=off``), once the server has not answered for ``spool_after``
  seconds the rows move to the spool file at full speed instead of waiting in
  memory; the spool is replayed, in order, before newer rows as soon as the
  server answers. ``flush()``, ``stop()`` and ``close()`` during an outage move
  what is buffered to the spool (the final status too, see ``AsyncRun.stop``);
  ``close()`` says where in one line on stderr. Without a spool, ``flush()``
  tries for ``retry_window`` seconds, then raises :class:`MetricWriteError`
  naming the server (the rows stay buffered for a later flush);
* a batch the database refuses (a run deleted meanwhile, a value that no longer
  fits its column) is never swallowed: it raises :class:`MetricWriteError` from
  the next ``add_metrics``, ``flush()`` or ``stop()`` of the run.

The buffer is thread-safe: the blocking API hands rows over from the calling
thread without waiting for the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..checks import Auto
from ..config import DEFAULT_FLUSH_INTERVAL as DEFAULT_FLUSH_INTERVAL
from ..config import DEFAULT_FLUSH_ROWS as DEFAULT_FLUSH_ROWS
from ..errors import MetricWriteError, is_transient
from ..outage.io import offload, warn
from . import layout
from .layout import MetricRow

if TYPE_CHECKING:
    from ..client.hooks import ClientHooks
    from ..config import Settings
    from ..outage.spool import ReplayResult, Spool
    from .writer import MetricWriter

#: Replays the client's spool into its database (``sqltrack.outage.replay``), waiting up
#: to the given seconds for another process replaying the same file.
Replay = Callable[[float], Awaitable["ReplayResult"]]

#: The default bound of a buffer, in batches: ``max_rows = 100 x flush_rows``.
DEFAULT_MAX_ROWS_FACTOR = 100
#: A batch write takes at most max(flush_rows, this many) rows.
MAX_BATCH_ROWS = 1000
#: ... and at most this many values (rows x metrics per row, at least one row): a batch
#: of wide rows (10,000 metrics a step) stays a write of a fraction of a second, well
#: inside the time bound of one try (``attempt_timeout``), past which a write counts as
#: an outage and its rows go to the spool.
MAX_BATCH_VALUES = 100_000
#: First and longest pause between two tries of a server that did not answer (seconds).
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0


__all__ = ["MetricBuffer", "MetricWriteError"]  # MetricWriteError: from sqltrack.errors


class _SpoolBusy(Exception):
    """Another process is replaying the spool that holds this run's older rows."""


class MetricBuffer:
    """The write-behind buffer of one run's metric rows."""

    def __init__(
        self,
        run_id: int,
        writer: MetricWriter,
        settings: Settings,
        hooks: ClientHooks,
        spool: Spool | None = None,
        replay: Replay | None = None,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_rows: int | None = None,
    ) -> None:
        if flush_rows < 1 or flush_interval <= 0:
            raise ValueError("flush_rows must be >= 1 and flush_interval > 0")
        self.run_id = run_id
        self.flush_rows = int(flush_rows)
        self.flush_interval = float(flush_interval)
        self.max_rows = int(max_rows) if max_rows else DEFAULT_MAX_ROWS_FACTOR * self.flush_rows
        if self.max_rows < self.flush_rows:
            raise ValueError("max_rows must be >= flush_rows")
        #: Where rows go while the server is away (None: nowhere, they wait in memory),
        #: and how its entries go back to the database.
        self.spool = spool if replay is not None else None
        self._replay = replay
        self.spool_after = float(settings.spool_after)
        self.retry_window = float(settings.retry_window)
        #: One try of the server (a replay included) waits at most this long.
        self.attempt_timeout = min(settings.pool_timeout, max(2.0, self.spool_after))
        #: Outage state: since when the server has not answered, when to try next.
        self._down_since: float | None = None
        self._next_try = 0.0
        self._backoff = BACKOFF_FIRST
        #: Entries of this run sit in the spool (older than every row in memory).
        self.spooled = False
        self.spooled_rows = 0
        self._writer = writer
        self._table = writer.table
        self._hooks = hooks
        #: Set in a forked child: the parent's rows are the parent's; the run writes through.
        self.abandoned = False
        #: Waiting rows, oldest first (``sqltrack.metrics.layout``).
        self._rows: list[MetricRow] = []
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._flushing = asyncio.Lock()
        self._error: MetricWriteError | None = None
        #: A flush was asked for and has not taken the rows yet (one request at a time).
        self._flush_requested = False
        #: Flush tasks in flight: asyncio holds tasks weakly, these keep them to the end.
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer = self._loop.create_task(self._flush_periodically())
        hooks.on_close(self)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def down(self) -> bool:
        """The server did not answer the last try."""
        return self._down_since is not None

    # -- producers ----------------------------------------------------------------
    def put(
        self,
        metrics: dict[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> bool:
        """Buffer one row, from any thread, without I/O; False when the buffer is full.

        The hot path of buffered mode: the checks (``MetricTable.prepare``) and one
        append under the lock; the row's parameters are built by the batch write.
        """
        if self._error is not None:
            self._raise_pending_error()
        if len(self._rows) >= self.max_rows:  # full: checked (once) by the caller's next try
            return False
        row = self._table.prepare(self.run_id, metrics, step, progress, updated)
        # ``with``, not acquire() then try: a signal handler (Ctrl-C's KeyboardInterrupt)
        # runs after a call returns, so between acquire() and the try it would leave the
        # lock held and the flusher (the loop thread) waiting on it for ever.
        with self._lock:
            rows = self._rows
            waiting = len(rows)
            rows.append(row)  # (a race past the check above may pass max_rows by a row)
        if waiting >= self.flush_rows - 1 and not self._flush_requested:
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
            await self._write("room")  # back-pressure: one batch, not all
            self._raise_pending_error()
        if self.batch_waiting():
            await asyncio.sleep(0)

    def batch_waiting(self) -> bool:
        """``flush_rows`` rows or more wait (an async producer then lets the loop run once)."""
        return len(self._rows) >= self.flush_rows

    def _request_flush(self) -> None:
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._start_tick()
        else:
            self._loop.call_soon_threadsafe(self._start_tick)

    def _start_tick(self) -> None:
        """A ``tick`` write as a task referenced until done (never collected mid-flight)."""
        task = self._loop.create_task(self._write("tick"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- writing ------------------------------------------------------------------
    async def flush(self) -> None:
        """Write every row buffered so far (to the spool when the server is away);
        raise a write error not yet reported."""
        await self._write("flush")
        self._raise_pending_error()

    async def _write(self, mode: str) -> None:
        """``tick``: one try when one is due; ``flush``: until written or spooled (or,
        without a spool, the retry window is over); ``room`` the same until one row
        fits; ``close`` as ``flush``, with one try even during a known outage.

        The flush lock is held per step (a replay of the spool, one batch, a spill),
        so batches go out in order and a producer that found the buffer full waits
        for about one batch, not for the whole backlog.
        """
        started = time.monotonic()
        wait = self.attempt_timeout / 2 if mode != "tick" else 0.0
        while True:
            async with self._flushing:
                if mode != "close" and self.down and time.monotonic() < self._next_try:
                    if self.spool is not None and (mode != "tick" or self._past_bound()):
                        await self._spill()  # a known outage: no wait for it
                        return
                    if mode == "tick":
                        return
                try:
                    more = await self._write_step(wait, until_room=mode == "room")
                except Exception as error:
                    if not isinstance(error, _SpoolBusy) and not is_transient(error):
                        raise
                    self.note_down(error)
                    if self.spool is not None and (mode != "tick" or self._past_bound()
                                                   or len(self._rows) >= self.max_rows):
                        await self._spill()
                        return
                    if mode == "tick":
                        return
                    if time.monotonic() - started >= self.retry_window:
                        raise self._unreachable(error) from error
                else:
                    self._down_since = None
                    self._backoff = BACKOFF_FIRST
                    if not more:
                        return
                    continue
            await asyncio.sleep(self._backoff)  # outside the lock: others may spill

    async def _write_step(self, wait: float, until_room: bool = False) -> bool:
        """One step, oldest first: the spool's entries while it holds some of this run
        (waiting up to ``wait`` s for another process replaying it), else one batch of
        at most ``max(flush_rows, 1000)`` buffered rows and ``MAX_BATCH_VALUES`` values.
        False: nothing left to do (``until_room``: a row fits again)."""
        if self.spooled:
            assert self.spool is not None and self._replay is not None
            # Each try is bounded: a server out of the network may not answer at all.
            # Cut short, a write is simply done again (replay and upserts are idempotent).
            result = await asyncio.wait_for(self._replay(wait), self.attempt_timeout + wait)
            if result.errors:
                self._refused(MetricWriteError(
                    f"{result.refused} spooled entries of {self.spool.path} were refused "
                    f"and kept there: {'; '.join(result.errors[:3])}"))
            if await offload(self.spool.pending, self.run_id):
                raise _SpoolBusy()
            self.spooled = False
            return True
        with self._lock:
            if until_room and len(self._rows) < self.max_rows:
                return False
            size = max(self.flush_rows, MAX_BATCH_ROWS)
            if self._rows:
                width = len(layout.names(self._rows[0]))
                size = min(size, max(1, MAX_BATCH_VALUES // max(1, width)))
            if len(self._rows) <= size:
                taken, self._rows = self._rows, []  # the batch handover: O(1)
            else:
                taken = self._rows[:size]
                del self._rows[:size]
            self._flush_requested = False
        if not taken:
            return False
        try:  # the rows were taken above, in this task: no wait before the handover
            await asyncio.wait_for(self._writer.write_rows(taken), self.attempt_timeout)
        except BaseException as error:
            if isinstance(error, Exception) and not is_transient(error):
                failure = MetricWriteError(
                    f"{len(taken)} buffered metric rows of run {self.run_id} "
                    f"(steps {layout.step_range(taken)}) were not written: {error}"
                )
                failure.__cause__ = error
                self._refused(failure)
                return True
            with self._lock:  # not written (or not known to be): back at the head
                self._rows[:0] = taken
            raise
        return True

    async def _spill(self) -> None:
        """Move every buffered row to the spool, in order (fast: a local file)."""
        assert self.spool is not None
        with self._lock:
            taken, self._rows = self._rows, []
            self._flush_requested = False
        if not taken:
            return
        rows = taken
        try:
            await offload(self.spool.append_rows, self.run_id, rows)
        except Exception as error:  # noqa: BLE001 - the rows go back, the error is reported
            with self._lock:
                self._rows[:0] = taken
            failure = MetricWriteError(
                f"the spool {self.spool.path} does not take the {len(rows)} buffered "
                f"rows of run {self.run_id} (they stay buffered): {error}"
            )
            failure.__cause__ = error
            self._refused(failure)
            return
        self.spooled = True
        self.spooled_rows += len(rows)

    async def spool_run_update(self, status: str | None = None, started: datetime | None = None,
                               updated: datetime | None = None,
                               experiment_id: int | None = None) -> None:
        """Keep a run update (creation, start or stop) in the spool, after the run's rows."""
        assert self.spool is not None
        await offload(self.spool.append_run_update, self.run_id, status, started,
                                updated, experiment_id)
        self.spooled = True

    def takes_run_update(self, error: BaseException | None = None) -> bool:
        """Whether a run update goes to the spool: this run's rows wait there, the
        server is known to be away, or ``error`` says it is."""
        if self.spool is None:
            return False
        if error is not None:
            return is_transient(error)
        return self.spooled or self.down

    def note_down(self, error: BaseException) -> None:
        """The server did not answer (here or in a run update): wait before trying again."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._backoff = BACKOFF_FIRST
        else:
            self._backoff = min(2 * self._backoff, BACKOFF_MAX)
        self._next_try = now + self._backoff

    def _past_bound(self) -> bool:
        return self._down_since is not None and (
            time.monotonic() - self._down_since >= self.spool_after
        )

    def _unreachable(self, error: BaseException) -> MetricWriteError:
        with self._lock:
            rows = list(self._rows)
        steps = f" (steps {layout.step_range(rows)})" if rows else ""
        return MetricWriteError(
            f"{len(rows)} buffered metric rows of run {self.run_id}{steps} are not written "
            f"yet: the server did not answer for {self.retry_window:g} s ({error}); they stay "
            "buffered, flush() again later (or configure a spool)"
        )

    def _refused(self, failure: MetricWriteError) -> None:
        """Keep ``failure`` for the next call to raise; several before it are raised as
        one error naming each (rows of a later refused batch are never dropped silently)."""
        if self._error is None:
            self._error = failure
            return
        combined = MetricWriteError(f"{self._error}; and {failure}")
        combined.__cause__ = self._error.__cause__ or failure.__cause__
        self._error = combined

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._rows or self.spooled:
                await self._write("tick")

    def _raise_pending_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def rebind(self) -> None:
        """Move to the running loop (at exit, when the loop the buffer was made on is gone)."""
        self._loop = asyncio.get_running_loop()
        self._flushing = asyncio.Lock()
        self._flush_requested = False
        if self.spool is not None:
            self.spool.rebind()

    def abandon(self) -> None:
        """In a forked child: leave the parent's rows to the parent; the run writes through."""
        self.abandoned = True

    async def close(self) -> None:
        """Flush, stop the periodic flush and detach from the client; raise a pending error.

        Rows left in the spool (the server still away) are named in one line on stderr.
        """
        if not self._timer.done() and not self._timer.get_loop().is_closed():
            self._timer.cancel()
        self._hooks.discard(self)
        try:
            await self._write("close")
            self._raise_pending_error()
        finally:
            if self.spooled and self.spool is not None:
                warn(f"the server did not answer: {self.spooled_rows} metric rows of run "
                     f"{self.run_id} (and its status) wait in the spool {self.spool.path}; "
                     "the next client of this server replays them, or run: sqltrack sync "
                     f"--spool {self.spool.path}")
