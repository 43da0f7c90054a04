"""Write combining: concurrent write-through ``add_metrics`` calls share one statement.

While as many calls are writing as the pool has connections (``pool_max_size``),
or while a writer is about to take the waiting rows, a further call does not queue
for a connection of its own: its row waits here, and the next writer takes the
waiting rows into its own statement, per set of metric names one multi-row upsert
that also sets each run's ``time_updated`` (one round trip and one commit for all:
a group commit). A writer that finishes hands its turn to the oldest waiting call,
which then takes every waiting row with its own.

Rounds of concurrent calls (many runs logging at once: every call of a round
returns when the round's statement commits, and calls again at once) are kept
together: a call that starts writing while the calls of its round are about to
resume lets the event loop run once, so they wait here and join its statement
(``gather``); and when another statement is still in flight then, it steps back
and its round waits for that statement's end, to go in one statement with the
next round of that statement's calls. So many concurrent runs settle into one
statement per round (measured, 64 runs and 10 connections: about 64 rows per
statement instead of about 3, the touches and plans of 20 times fewer statements).
A lone writer never waits here (no yield to the loop, no queueing).

Every call still returns only when its own row is committed, so write-through
keeps its promise. Whatever stops a combined statement (a run deleted meanwhile,
a lost connection, a cancelled writer) hands each of its rows back to its own
call, which then writes (leading a statement of its own) and raises its own error,
as it would have without combining; a writer that loses the server hands back
every waiting row, so during an outage each call retries within its own
``retry_window``, all at once. The combined statement is the engine's one metric
write (``Engine.write_rows``) with rows of several runs; the writer
(``sqltrack.metrics.writer``) decides when.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import layout
from .layout import MetricRow

#: What a waiting call's future is set to when it must write its row itself.
WRITE_ALONE = object()
#: A combined statement takes at most this many waiting rows.
COMBINED_ROWS = 500


class Waiting:
    """One call's row, waiting to be written by another call."""

    __slots__ = ("row", "future")

    def __init__(self, row: MetricRow, future: asyncio.Future[object]) -> None:
        self.row = row
        self.future = future


class WriteCombiner:
    """The count of calls writing on their own, and the rows waiting for one of them."""

    def __init__(self, limit: int) -> None:
        #: Calls that write on their own at once, at most (the pool's connections).
        self.limit = limit
        self.writing = 0
        self.waiting: list[Waiting] = []
        #: Calls between entering the combiner and returning (writing, waiting, or
        #: written by another call and not yet resumed).
        self.calls = 0
        #: Writers that have not taken the waiting rows yet (``led`` not called).
        self.leading = 0

    def full(self) -> bool:
        """Whether a new call should wait here instead of writing on its own: every
        connection has its writer, or a writer is about to take the waiting rows."""
        return self.writing >= self.limit or self.leading > 0

    def others_coming(self) -> bool:
        """Whether some call is neither writing nor waiting yet still in flight: one
        whose row another call just committed, about to resume (and, in a loop over
        runs or steps, to call again within this turn of the event loop)."""
        return self.calls > self.writing + len(self.waiting)

    def led(self) -> None:
        """A writer is about to take the waiting rows (or gave up): new calls may start
        writing on their own again."""
        self.leading -= 1

    async def wait(self, row: MetricRow) -> bool:
        """Queue the row until a writer takes it: True when it was written (committed),
        False when this call must write it itself (it then counts as writing: call
        ``done`` after)."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        entry = Waiting(row, future)
        self.waiting.append(entry)
        try:
            outcome = await future
        except BaseException:
            if entry in self.waiting:
                self.waiting.remove(entry)
            elif future.done() and not future.cancelled() and future.result() is WRITE_ALONE:
                self.led()  # our turn to write came with the cancellation: pass it on
                self.done()
            raise
        return outcome is not WRITE_ALONE

    def begin(self) -> None:
        """A call starts writing on its own (it leads until ``led``; then ``done``)."""
        self.writing += 1
        self.leading += 1

    async def gather(self, row: MetricRow) -> bool:
        """After ``begin``, when ``others_coming``: let the loop run once, so those calls
        wait here and go in this call's statement. True: this call writes (as after
        ``begin``); False: its row was written with others (committed).

        If another statement is still in flight then, this call steps back: its row
        and theirs wait for that statement to end and go in one statement with the
        rows of that statement's calls. So rounds of concurrent calls (many runs
        logging at once) merge into one statement, instead of each round keeping
        its own statement on its own connection."""
        try:
            await asyncio.sleep(0)
        except BaseException:
            self.led()
            self.done()
            raise
        if self.writing == 1:
            return True
        self.writing -= 1  # the writer in flight hands the turn on when it ends (``done``)
        self.leading -= 1
        return not await self.wait(row)

    def done(self) -> None:
        """A call stopped writing on its own: the oldest waiting row gets its turn (its
        call takes every waiting row into its statement), unless a writer is about to
        take them anyway."""
        self.writing -= 1
        while self.waiting and self.writing < self.limit and not self.leading:
            self.write_alone(self.waiting.pop(0))

    def write_alone(self, entry: Waiting) -> None:
        """Hand a row back to its call, to write it (it leads until ``led``)."""
        if not entry.future.done():
            self.writing += 1
            self.leading += 1
            entry.future.set_result(WRITE_ALONE)

    def write_all_alone(self) -> None:
        """Hand every waiting row back to its call (the server went away: each call
        then retries on its own, as it would have without combining)."""
        waiting, self.waiting = self.waiting, []
        for entry in waiting:
            self.write_alone(entry)

    def take(self, own: MetricRow | None = None) -> list[list[Waiting]]:
        """Every waiting row, grouped by metric names in order of arrival, each group
        cut to ``COMBINED_ROWS`` rows and holding one row per (run, step, progress);
        rows left over stay queued for the next writer. ``own``: the taking call's row,
        written with its names' group (its key and its place in that group reserved)."""
        groups: dict[tuple[str, ...], list[Waiting]] = {}
        keys: set[tuple[Any, ...]] = set()
        left: list[Waiting] = []
        reserved: tuple[str, ...] | None = None
        if own is not None:
            reserved = layout.names(own)
            keys.add(layout.key(own))
        for entry in self.waiting:
            if entry.future.done():
                continue  # cancelled meanwhile
            names = layout.names(entry.row)
            group = groups.setdefault(names, [])
            key = layout.key(entry.row)
            if key in keys or len(group) + (names == reserved) >= COMBINED_ROWS:
                left.append(entry)  # a repeated key waits for the next statement
                continue
            keys.add(key)
            group.append(entry)
        self.waiting = left
        return [group for group in groups.values() if group]

    @staticmethod
    def resolve(group: list[Waiting]) -> None:
        """The group's statement committed: its calls return."""
        for entry in group:
            if not entry.future.done():
                entry.future.set_result(None)

