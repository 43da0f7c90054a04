"""Write combining: concurrent write-through ``add_metrics`` calls share one statement.

While as many calls are writing as the pool has connections (``pool_max_size``),
a further call does not queue for a connection of its own: its row waits here,
and the next call that finishes its own write takes the waiting rows and writes
them, per set of metric names, in one multi-row upsert that also sets each run's
``time_updated`` (one round trip and one commit for all: a group commit). Every
call still returns only when its own row is committed, so write-through keeps its
promise. Whatever stops a combined statement (a run deleted meanwhile, a lost
connection, a cancelled writer) hands each of its rows back to its own call,
which then writes alone and raises its own error, as it would have without
combining; a writer that loses the server hands back every waiting row, so during
an outage each call retries within its own ``retry_window``, all at once.
The combined statement is the engine's one metric write (``Engine.write_rows``)
with rows of several runs; the writer (``sqltrack.metrics.writer``) decides when.
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

    def full(self) -> bool:
        """Whether a new call should wait here instead of writing on its own."""
        return self.writing >= self.limit

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
                self.done()  # our turn to write came with the cancellation: pass it on
            raise
        return outcome is not WRITE_ALONE

    def begin(self) -> None:
        """A call starts writing on its own."""
        self.writing += 1

    def done(self) -> None:
        """A call stopped writing on its own: the oldest waiting rows get its turn."""
        self.writing -= 1
        while self.waiting and self.writing < self.limit:
            self.write_alone(self.waiting.pop(0))

    def write_alone(self, entry: Waiting) -> None:
        """Hand a row back to its call, to write alone."""
        if not entry.future.done():
            self.writing += 1
            entry.future.set_result(WRITE_ALONE)

    def write_all_alone(self) -> None:
        """Hand every waiting row back to its call (the server went away: each call
        then retries on its own, as it would have without combining)."""
        waiting, self.waiting = self.waiting, []
        for entry in waiting:
            self.write_alone(entry)

    def take(self) -> list[list[Waiting]]:
        """Every waiting row, grouped by metric names in order of arrival, each group
        cut to ``COMBINED_ROWS`` rows and holding one row per (run, step, progress);
        rows left over stay queued for the next writer."""
        groups: dict[tuple[str, ...], list[Waiting]] = {}
        keys: set[tuple[Any, ...]] = set()
        left: list[Waiting] = []
        for entry in self.waiting:
            if entry.future.done():
                continue  # cancelled meanwhile
            group = groups.setdefault(layout.names(entry.row), [])
            key = layout.key(entry.row)
            if key in keys or len(group) >= COMBINED_ROWS:
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

