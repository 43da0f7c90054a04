"""The async write-through ``add_metrics`` under a held lock and over many steps.

On SQLite the write runs on the event loop's thread when the database's write
lock is free (no hop into a worker thread); when another connection holds the
lock it must neither fail ("database is locked") nor block the loop: it waits
in the worker thread, as a PostgreSQL write waits for a row lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time

import psycopg
from support.helpers import read_raw
from support.waiting import until

import sqltrack

#: Wake-ups of the ticker watched while a write waits for the lock, and the largest
#: gap between two of them that still counts as "the loop kept running" (generous:
#: a loaded machine; a write blocking the loop thread stalls it until the lock goes).
TICKS = 50
MAX_GAP = 0.5


@contextlib.contextmanager
def lock_held(client_kwargs, run_id: int):
    """Another connection holds what the run's write needs, until the block ends."""
    if client_kwargs["engine"] == "sqlite":
        conn = sqlite3.connect(client_kwargs["dbpath"], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # the database's write lock
    else:
        params = {k: v for k, v in client_kwargs.items()
                  if k not in ("engine", "schema", "partitions")}
        conn = psycopg.connect(**params, options=f"-c search_path={client_kwargs['schema']}")
        conn.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (run_id,))  # the run's row
    try:
        yield
    finally:
        conn.rollback() if client_kwargs["engine"] == "postgres" else conn.execute("ROLLBACK")
        conn.close()


async def test_write_waits_for_a_held_lock_without_blocking_the_loop(
    run, client_kwargs, record_property
) -> None:
    await run.add_metrics({"loss": 1.0}, step=0)
    gaps: list[float] = []  # between the ticker's wake-ups, each asking for 10 ms

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.ensure_future(ticker())
    try:
        with lock_held(client_kwargs, run.id):
            task = asyncio.ensure_future(run.add_metrics({"loss": 2.0}, step=1))
            await until(lambda: len(gaps) >= TICKS or task.done(),
                        f"{TICKS} wake-ups of a ticker while the write waits")
            assert not task.done(), task  # it waits for the lock (no "database is locked")
    finally:
        ticking.cancel()
    record_property("loop_max_gap_ms", round(max(gaps) * 1000, 1))
    assert max(gaps) < MAX_GAP, f"the loop stalled {max(gaps):.3f} s while the write waited"
    await asyncio.wait_for(task, 60)
    assert read_raw(client_kwargs, "SELECT step, loss FROM metrics WHERE run_id = %s "
                    "ORDER BY step", (run.id,)) == [(0, 1.0), (1, 2.0)]


async def test_many_steps_all_written(client, client_kwargs) -> None:
    run = await (await sqltrack.AsyncExperiment.create(client, name="many")).get_run()
    for step in range(1200):
        await run.add_metrics({"loss": step / 8, "acc": 1.0}, step=step)
        if step in (0, 499, 500, 1199):  # each call is committed when it returns
            assert read_raw(client_kwargs, "SELECT loss FROM metrics WHERE run_id = %s AND "
                            "step = %s", (run.id, step)) == [(step / 8,)]
    (count,), = read_raw(client_kwargs, "SELECT count(*) FROM metrics WHERE run_id = %s",
                         (run.id,))
    assert count == 1200
