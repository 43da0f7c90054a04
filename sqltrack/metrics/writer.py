"""The metric write: where each checked row goes, decided in this one place.

Every metric write of a client comes here: write-through ``add_metrics`` (one row),
the blocking API's calls from its own thread, buffered batches and spool replays
(many rows). In order of preference:

1. the connection the caller holds in an ``async with client`` block (its
   statements belong to that block's transaction);
2. for one row (write-through), the engine's thread writer, when it has one
   (SQLite): written on the calling thread with no hop to a worker (see
   ``Engine.thread_writer``); batches (buffered, replays, copies) never take it, so
   the event loop never waits for a batch's write;
3. one row while as many calls write as the pool has connections (or while a round
   of concurrent calls gathers): it waits for the next writer, which writes every
   waiting row with its own in one statement (``sqltrack.metrics.combining``);
4. a pooled connection (with the rows waiting then), retried on a fresh one within
   ``retry_window`` when the server connection was lost (every metric write is an
   idempotent upsert).

Each path ends in the engine's one entry point for metric rows, ``write_rows``.
This module works over the connection manager (``sqltrack.client.connections``),
not over the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..checks import Auto
from ..client.connections import Connections
from ..client.state import ClientState
from ..engines.base import Connection, Engine, ThreadWriter
from ..errors import ConnectionLost
from . import layout
from .combining import Waiting, WriteCombiner
from .layout import MetricRow, Placement, Touch
from .table import MetricTable

_OPEN = ClientState.OPEN
#: A one-row write leaves its run's ``time_updated`` as it is while the last time this
#: client wrote there for the run is less than this much older than the row's (and not
#: newer): ``time_updated`` is the run's heartbeat (``mark-stale``, the page's "not
#: responding"), and setting it at every step of a fast loop rewrote the ``runs`` row
#: each time (a page of WAL a commit on SQLite, a dead row version on PostgreSQL) for
#: a value nobody reads to the millisecond. So it trails the last write by < 1 s;
#: ``stop()``, ``set_updated()`` and every batch (buffered, combined) write theirs.
TOUCH_INTERVAL = timedelta(seconds=1)
#: At most this many runs' last touches are kept (a web service's client writes to
#: many runs over its life); past it they are forgotten, and each run's next write
#: touches again.
_TOUCHED_RUNS = 4096


class MetricWriter:
    """Every metric write of one client: the checks (``table``) and the write strategy."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self.table = MetricTable(connections)
        #: Per run, the ``time_updated`` this client's one-row writes set last.
        self._touched: dict[int, datetime] = {}
        self._combiner = WriteCombiner(connections.settings.pool_max_size)

    @property
    def combiner(self) -> WriteCombiner:
        """The write combiner (its ``writing`` and ``waiting`` tell what is in flight)."""
        return self._combiner

    def reset(self) -> None:
        """Forget the waiting calls and the column cache (a forked child: not ours)."""
        self._combiner = WriteCombiner(self.connections.settings.pool_max_size)
        self.table.forget_columns()

    def forget_columns(self) -> None:
        """Drop the column cache (migrations changed the table, or a block rolled back)."""
        self.table.forget_columns()
        self._touched.clear()  # a rolled-back block's touches are gone too

    def forget_touch(self, run_id: int) -> None:
        """The run's ``time_updated`` was set another way: the next write sets its own."""
        self._touched.pop(run_id, None)

    def _touch_of(self, row: MetricRow) -> tuple[Touch, ...]:
        """The touch of a one-row write: its run's ``time_updated``, unless None or
        within ``TOUCH_INTERVAL`` after the one this client set last."""
        when = layout.updated(row)
        if when is None:
            return ()
        run = layout.run_id(row)
        touched = self._touched
        last = touched.get(run)
        if last is not None and last <= when < last + TOUCH_INTERVAL:
            return ()
        if last is None and len(touched) >= _TOUCHED_RUNS:
            touched.clear()  # a long-lived client of many runs: forgetting costs one touch each
        touched[run] = when
        return ((run, when),)

    # -- one add_metrics call -------------------------------------------------
    async def write(
        self,
        run_id: int,
        metrics: Mapping[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> None:
        """Check one ``add_metrics`` call, create its missing columns and upsert its row."""
        row = self.table.prepare(run_id, metrics, step, progress, updated)
        await self.table.ensure_columns(row)
        await self.write_row(row)

    def write_nowait(
        self,
        run_id: int,
        metrics: Mapping[str, Any],
        step: int = 0,
        progress: float = 0.0,
        updated: Auto | datetime | None = "auto",
    ) -> bool:
        """``write`` in the calling thread, without the event loop, when it can be done there.

        It can when the engine has a thread writer (SQLite), the client is open, no
        owner holds a ``with client`` block (its statements belong to that block),
        the calling thread runs no event loop (which must never block) and every
        name has its place. False, having written nothing, otherwise: then call
        ``write`` (a call with a new name is checked twice; every other call once).
        Bad names or values raise here.
        """
        writer = self._caller_thread_writer()
        if writer is None:
            return False
        row = self.table.prepare(run_id, metrics, step, progress, updated)
        names = layout.names(row)
        if not self.table.knows(names):
            return False
        touches = self._touch_of(row)
        written = False
        try:
            written = writer.write(names, (row,), touches, wait=True,
                                   placement=self.table.placement(names))
        finally:
            if touches and not written:  # raised, or left to ``write``: it touches then
                self.forget_touch(layout.run_id(row))
        return written

    def _caller_thread_writer(self) -> ThreadWriter | None:
        connections = self.connections
        writer = connections.engine.thread_writer
        if writer is None or connections.state is not _OPEN or connections.any_held():
            return None
        if asyncio._get_running_loop() is not None:
            return None
        return writer

    async def write_row(self, row: MetricRow) -> None:
        """Upsert one checked row (the hot path of write-through logging)."""
        connections = self.connections
        engine = connections.engine if connections.state is _OPEN else (
            await connections.opened_engine())
        touches = self._touch_of(row)
        try:
            await self._write_one(engine, row, touches)
        except BaseException:
            if touches:
                self.forget_touch(layout.run_id(row))
            raise

    async def _write_one(self, engine: Engine, row: MetricRow, touches: tuple[Touch, ...]
                         ) -> None:
        """``write_row``'s paths (see the module's docstring)."""
        connections = self.connections
        names = layout.names(row)
        rows = (row,)
        placement = self.table.placement(names)
        held = connections.held()
        if held is not None:
            return await engine.write_rows(held, names, rows, touches, placement)
        writer = engine.thread_writer
        if writer is not None and writer.write(names, rows, touches, wait=False,
                                               placement=placement):
            return None  # SQLite, lock free: written on this thread, no hop
        combiner = self._combiner
        combiner.calls += 1
        try:
            if combiner.full():
                if await combiner.wait(row):
                    return None  # written, with other calls' rows, by another call
            else:
                combiner.begin()
                if combiner.others_coming() and not await combiner.gather(row):
                    return None  # written with the next round of concurrent calls
            try:
                await self._write_alone(engine, row, touches, placement)
            finally:
                combiner.done()
        finally:
            combiner.calls -= 1

    async def _write_alone(
        self, engine: Engine, row: MetricRow, touches: Sequence[Touch],
        placement: Placement | None,
    ) -> None:
        """The row on a pooled connection, in one statement with the rows waiting in the
        combiner (``_write_with_waiting``); retried within ``retry_window`` when the
        server connection was lost."""
        combiner = self._combiner
        conn: Connection | None = None
        try:
            conn = await engine.acquire()
        except ConnectionLost as error:
            lost = error
        finally:
            combiner.led()  # the waiting rows are taken next, with no await between
        if conn is not None:
            try:
                await self._write_with_waiting(engine, conn, row, touches, placement)
                return None
            except ConnectionLost as error:
                lost = error
            finally:
                await engine.release(conn)
        # The server went away: every waiting call retries on its own, within its
        # own retry_window, instead of queueing behind this call's retries.
        combiner.write_all_alone()
        names = layout.names(row)
        await self.connections.retry(engine, _write_rows, (names, (row,), touches, placement),
                                     lost)

    async def _write_with_waiting(
        self, engine: Engine, conn: Connection, row: MetricRow, touches: Sequence[Touch],
        placement: Placement | None,
    ) -> None:
        """The call's own row with the waiting rows of its names in one statement (alone
        when none wait), then the other waiting rows, one statement per set of names.
        When the shared statement fails, its other rows go back to their own calls and
        this row is written alone: each call meets its own error. Whatever stops this
        call hands the rows it took and did not write back to their calls."""
        combiner = self._combiner
        names = layout.names(row)
        groups = combiner.take(row) if combiner.waiting else []
        mine = next((g for g in groups if layout.names(g[0].row) == names), None)
        if mine is not None:
            groups.remove(mine)
        try:
            if mine is None:
                await engine.write_rows(conn, names, (row,), touches, placement)
            else:
                rows = [row, *(entry.row for entry in mine)]
                try:
                    await engine.write_rows(conn, names, rows, layout.touches(rows),
                                            placement)
                except Exception as error:
                    for entry in mine:
                        combiner.write_alone(entry)
                    if isinstance(error, ConnectionLost):
                        raise
                    await engine.write_rows(conn, names, (row,), touches, placement)
                else:
                    combiner.resolve(mine)
        except BaseException:
            for entry in (e for g in (mine or (), *groups) for e in g):
                combiner.write_alone(entry)  # a call resolved already is left alone
            raise
        if groups:
            await self._write_groups(engine, conn, groups)

    async def _write_groups(
        self, engine: Engine, conn: Connection, groups: list[list[Waiting]]
    ) -> None:
        """Taken rows, one statement per set of names; a statement that fails hands its
        rows (and those not tried yet) back to their own calls."""
        combiner = self._combiner
        for index, group in enumerate(groups):
            rows = [entry.row for entry in group]
            names = layout.names(rows[0])
            try:
                await engine.write_rows(conn, names, rows, layout.touches(rows),
                                        self.table.placement(names))
            except BaseException as error:
                for entry in (e for g in groups[index:] for e in g):
                    combiner.write_alone(entry)
                if isinstance(error, Exception):
                    return  # each call writes alone and meets its own error
                raise
            combiner.resolve(group)

    # -- many rows ------------------------------------------------------------
    async def write_rows(self, rows: Sequence[MetricRow]) -> None:
        """Write checked rows in order (buffered batches, spool replays, copies): one
        statement (or hop) per run of equal names, after creating missing columns.

        Within such a group the last row of a key wins, as it would with one upsert
        per row; across groups, upserts merge columns. Each run's ``time_updated`` is
        set once, with the last group. Each group is one idempotent write, retried
        after a lost connection; applied in order, they give the same end state.
        """
        if not rows:
            return
        first = layout.names(rows[0])
        groups: list[Sequence[MetricRow]]
        if list(map(layout.names, rows)).count(first) == len(rows):
            # The usual batch (one name set; the fast path of ``prepare`` even shares
            # the names tuple, so ``count`` compares by identity): no loop per row.
            await self.table.ensure_columns(rows[0])
            groups = [rows]
        else:
            groups = await self._groups(rows)
        touches = layout.touches(rows)
        connections = self.connections
        for index, group in enumerate(groups):
            last = index == len(groups) - 1
            names = layout.names(group[0])
            placement = self.table.placement(names)
            group_touches = touches if last else ()
            # Never on the loop's own thread (SQLite's thread writer): a batch's write
            # would stall every coroutine of the loop for as long as it takes (measured:
            # 14-18 ms a batch of 1,000 rows x 100 names, the producer's add_metrics
            # waiting for it), where buffered mode promises no wait for the database.
            await connections.run(_write_rows, names, group, group_touches, placement,
                                  retry=True)

    async def _groups(self, rows: Sequence[MetricRow]) -> list[Sequence[MetricRow]]:
        """Consecutive rows of equal names, each name set's columns created once."""
        checked: set[tuple[str, ...]] = set()
        groups: list[Sequence[MetricRow]] = []
        group: list[MetricRow] = []
        names: tuple[str, ...] | None = None
        for row in rows:
            if layout.names(row) != names:
                names = layout.names(row)
                group = []
                groups.append(group)
                if names not in checked:
                    checked.add(names)
                    await self.table.ensure_columns(row)
            group.append(row)
        return groups


async def _write_rows(
    engine: Engine, conn: Connection, names: tuple[str, ...], rows: Sequence[MetricRow],
    touches: Sequence[Touch], placement: Placement | None = None,
) -> None:
    await engine.write_rows(conn, names, rows, touches, placement)
