"""Buffered (write-behind) metrics: the batch write and the hand-over to the flusher.

A buffered run must end up with exactly the rows write-through gives, whatever
the batch holds (repeated steps, steps already stored, several name sets, NaN,
datetimes, text, None), and an async producer that awaits nothing but
``add_metrics`` must not starve the flusher.
"""

from __future__ import annotations

import asyncio
import math
import re
from datetime import datetime, timedelta, timezone

import pytest
from support.helpers import read_raw, write_raw

import sqltrack
from sqltrack.metrics.buffer import MetricWriteError

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def stored(client_kwargs, run_id: int, columns: str) -> list[tuple]:
    return read_raw(client_kwargs,
                    f"SELECT step, progress, {columns} FROM metrics WHERE run_id = %s "
                    "ORDER BY step, progress", (run_id,))


def same(a: list[tuple], b: list[tuple]) -> bool:
    """Rows equal, NaN equal to NaN."""
    def norm(value):
        return "NaN" if isinstance(value, float) and math.isnan(value) else value
    return [tuple(map(norm, r)) for r in a] == [tuple(map(norm, r)) for r in b]


#: (metrics, step, progress) in logging order: new steps, a repeated step, a step
#: that gets a second name set, odd values.
CALLS = [
    ({"loss": 1.0, "acc": 0.5}, 0, 0.0),
    ({"loss": 0.9, "acc": 0.6}, 1, 0.0),
    ({"loss": 0.8, "acc": 0.7}, 1, 0.0),  # the same step again: the later wins
    ({"lr": 0.1}, 1, 0.0),  # another name set for that step: columns merge
    ({"loss": float("nan"), "acc": float("inf")}, 2, 0.0),
    ({"loss": -float("inf"), "acc": None}, 3, 0.5),
    ({"note": "text", "when": T0, "flag": True, "count": 7}, 4, 0.0),
    ({"loss": 0.1, "acc": 0.9}, 5, 0.0),
]
COLUMNS = "loss, acc, lr, note, flag, count"


async def log_all(run: sqltrack.AsyncRun, calls) -> None:
    for metrics, step, progress in calls:
        await run.add_metrics(metrics, step=step, progress=progress)


async def test_buffered_rows_equal_write_through(client, client_kwargs) -> None:
    experiment = await sqltrack.AsyncExperiment.create(client, name="buffered")
    direct = await experiment.get_run()
    await log_all(direct, CALLS)
    buffered = await experiment.get_run()
    await buffered.set_buffered(flush_rows=3, flush_interval=60)
    await log_all(buffered, CALLS)
    await buffered.flush()
    assert same(stored(client_kwargs, buffered.id, COLUMNS),
                stored(client_kwargs, direct.id, COLUMNS))
    assert len(stored(client_kwargs, buffered.id, COLUMNS)) == 6


async def test_batch_over_stored_steps_upserts(client, client_kwargs) -> None:
    """A batch whose steps are already stored (and repeat inside it) updates them."""
    run = await (await sqltrack.AsyncExperiment.create(client, name="b")).get_run()
    await run.set_buffered(flush_rows=1000, flush_interval=60)
    for step in range(5):
        await run.add_metrics({"loss": float(step), "acc": 1.0}, step=step)
    await run.flush()
    for step in range(3, 8):
        await run.add_metrics({"loss": 10.0 + step}, step=step)
    await run.add_metrics({"loss": 99.0}, step=7)
    await run.flush()
    assert stored(client_kwargs, run.id, "loss, acc") == [
        (0, 0.0, 0.0, 1.0), (1, 0.0, 1.0, 1.0), (2, 0.0, 2.0, 1.0),
        (3, 0.0, 13.0, 1.0), (4, 0.0, 14.0, 1.0), (5, 0.0, 15.0, None),
        (6, 0.0, 16.0, None), (7, 0.0, 99.0, None),
    ]


async def test_batch_touches_run_once_with_latest_time(client, client_kwargs) -> None:
    run = await (await sqltrack.AsyncExperiment.create(client, name="t")).get_run()
    await run.set_buffered(flush_rows=1000, flush_interval=60)
    for step in range(4):
        await run.add_metrics({"loss": 1.0}, step=step, updated=T0 + timedelta(seconds=step))
    await run.flush()
    (updated,), = read_raw(client_kwargs, "SELECT time_updated FROM runs WHERE id = %s",
                           (run.id,))
    if isinstance(updated, str):
        updated = datetime.fromisoformat(updated)
    assert updated == T0 + timedelta(seconds=3)


async def test_batch_without_times_leaves_time_updated(client, client_kwargs) -> None:
    """``updated=None`` rows set no time: a batch of only such rows (even one row) leaves
    ``time_updated`` as it was; mixed with timed rows, the latest time wins."""
    run = await (await sqltrack.AsyncExperiment.create(client, name="n")).get_run()
    await run.set_updated(T0)
    await run.set_buffered(flush_rows=1000, flush_interval=60)

    def time_updated():
        (value,), = read_raw(client_kwargs, "SELECT time_updated FROM runs WHERE id = %s",
                             (run.id,))
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    await run.add_metrics({"loss": 1.0}, step=0, updated=None)
    await run.flush()
    assert time_updated() == T0
    for step in range(1, 4):
        await run.add_metrics({"loss": 1.0}, step=step, updated=None)
    await run.flush()
    assert time_updated() == T0
    await run.add_metrics({"loss": 1.0}, step=4, updated=T0 + timedelta(seconds=9))
    await run.add_metrics({"loss": 1.0}, step=5, updated=None)
    await run.add_metrics({"loss": 1.0}, step=6, updated=T0 + timedelta(seconds=5))
    await run.flush()
    assert time_updated() == T0 + timedelta(seconds=9)


async def test_batch_of_deleted_run_raises_on_flush(client) -> None:
    run = await (await sqltrack.AsyncExperiment.create(client, name="d")).get_run()
    await run.add_metrics({"loss": 1.0}, step=0)  # the column exists
    await run.set_buffered(flush_rows=1000, flush_interval=60)
    await client.execute(
        "DELETE FROM runs WHERE id = " + ("?" if client.engine == "sqlite" else "%s"), (run.id,)
    )
    await run.add_metrics({"loss": 2.0}, step=1)
    with pytest.raises(MetricWriteError):
        await run.flush()


async def test_every_refused_batch_is_reported(client) -> None:
    """Batches of a deleted run are refused: the errors raised (by later calls and the
    flush) name every refused row, each step once; a batch refused while an earlier
    refusal waited to be raised was dropped without a word."""
    run = await (await sqltrack.AsyncExperiment.create(client, name="d3")).get_run()
    await run.add_metrics({"loss": 1.0}, step=0)  # the column exists
    await run.set_buffered(flush_rows=1000, flush_interval=60, max_rows=10_000)
    await client.execute(
        "DELETE FROM runs WHERE id = " + ("?" if client.engine == "sqlite" else "%s"), (run.id,)
    )
    messages = []
    for step in range(1, 2501):
        try:
            await run.add_metrics({"loss": 2.0}, step=step)
        except MetricWriteError as error:
            messages.append(str(error))
    try:
        await run.flush()
    except MetricWriteError as error:
        messages.append(str(error))
    named = [range(int(first), int(last) + 1) for count, first, last in re.findall(
        r"(\d+) buffered metric rows of run \d+ \(steps (\d+)\.\.(\d+)\)", " ".join(messages))]
    steps = sorted(step for part in named for step in part)
    assert steps == list(range(1, 2501)), messages


@pytest.mark.parametrize("rows", [1, 2000])
async def test_large_and_single_row_batches(client, client_kwargs, rows: int) -> None:
    run = await (await sqltrack.AsyncExperiment.create(client, name="l")).get_run()
    await run.set_buffered(flush_rows=5000, flush_interval=60)
    for step in range(rows):
        await run.add_metrics({"loss": step / 2, "acc": 1.0}, step=step)
    await run.flush()
    got = stored(client_kwargs, run.id, "loss")
    assert got == [(step, 0.0, step / 2) for step in range(rows)]


async def test_async_producer_does_not_starve_the_flusher(client, client_kwargs) -> None:
    """A loop awaiting only add_metrics: batches reach the database before the buffer fills.

    (Before the hand-over, nothing was written until ``max_rows`` rows waited, and
    then that call waited for all of them to be written.)
    """
    run = await (await sqltrack.AsyncExperiment.create(client, name="p")).get_run()
    await run.add_metrics({"loss": 0.0}, step=0)
    max_rows = 20_000
    await run.set_buffered(flush_rows=10, flush_interval=60, max_rows=max_rows)
    written = 0
    step = 0
    while not written and step < max_rows - 1:
        step += 1
        await run.add_metrics({"loss": float(step)}, step=step)
        if step % 10 == 5:  # check from outside sqltrack, without awaiting anything
            (written,), = read_raw(client_kwargs,
                                   "SELECT count(*) FROM metrics WHERE run_id = %s AND step > 0",
                                   (run.id,))
    assert written > 0
    await run.flush()
    (total,), = read_raw(client_kwargs, "SELECT count(*) FROM metrics WHERE run_id = %s",
                         (run.id,))
    assert total == step + 1


def test_blocking_api_buffered_rows(client_kwargs, clean_env) -> None:
    import sqltrack_sync

    client = sqltrack_sync.Client(**client_kwargs, buffered=True, flush_rows=7)
    try:
        run = sqltrack_sync.Experiment(client, name="s").get_run()
        for step in range(100):
            run.add_metrics({"loss": step * 1.5}, step=step)
        run.flush()
        assert stored(client_kwargs, run.id, "loss") == [
            (step, 0.0, step * 1.5) for step in range(100)
        ]
    finally:
        client.close()


async def test_full_buffer_waits_and_loses_nothing(client, client_kwargs) -> None:
    """The database is locked while the producer fills the buffer: the call that finds
    it full waits (back-pressure) and, once the lock is gone, every row is written."""
    from test_write_through_async import lock_held

    run = await (await sqltrack.AsyncExperiment.create(client, name="full")).get_run()
    await run.add_metrics({"loss": 0.0}, step=0)
    await run.set_buffered(flush_rows=5, flush_interval=60, max_rows=20)
    with lock_held(client_kwargs, run.id):
        for step in range(1, 26):  # the first batch (5 rows) waits for the lock, 20 wait here
            await run.add_metrics({"loss": float(step)}, step=step)
        waiting = asyncio.ensure_future(run.add_metrics({"loss": 26.0}, step=26))
        for _ in range(10):
            await asyncio.sleep(0.01)
        assert not waiting.done()  # the buffer is full: this call waits
    await asyncio.wait_for(waiting, 60)
    for step in range(27, 60):
        await run.add_metrics({"loss": float(step)}, step=step)
    await run.flush()
    assert stored(client_kwargs, run.id, "loss") == [(s, 0.0, float(s)) for s in range(60)]


def _slow_write_of_step(client_kwargs, step: int) -> None:
    """A trigger that makes the database's write of ``step`` take about a second (or more
    on a loaded machine): ``pg_sleep`` on PostgreSQL, a 16-million-row join on SQLite."""
    if client_kwargs["engine"] == "sqlite":
        write_raw(client_kwargs,
                  "CREATE TABLE slow_rows (x INTEGER)",
                  "INSERT INTO slow_rows WITH RECURSIVE n(x) AS "
                  "(SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x < 3999) SELECT x FROM n",
                  f"CREATE TRIGGER slow_write AFTER INSERT ON metrics WHEN NEW.step = {step} "
                  "BEGIN SELECT count(*) FROM slow_rows a, slow_rows b WHERE a.x + b.x < 0; END")
    else:
        write_raw(client_kwargs,
                  "CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS "
                  "$$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$",
                  "CREATE TRIGGER slow_write AFTER INSERT ON metrics FOR EACH ROW "
                  f"WHEN (NEW.step = {step}) EXECUTE FUNCTION slow_write()")


async def test_a_slow_batch_write_does_not_stop_the_event_loop(client, client_kwargs) -> None:
    """Buffered mode promises that ``add_metrics`` does not wait for the database: a
    batch is written off the event loop's thread (SQLite: the engine's worker thread;
    PostgreSQL: asynchronous I/O), so the loop's other coroutines run while it lasts.
    (SQLite's batches were written on the loop's own thread: the loop stood still for
    the whole write, and an async producer's ``add_metrics`` waited for it.)"""
    run = await (await sqltrack.AsyncExperiment.create(client, name="p")).get_run()
    await run.add_metrics({"loss": 0.0}, step=0)  # the column exists before the trigger
    _slow_write_of_step(client_kwargs, 50)
    await run.set_buffered(flush_rows=10_000, flush_interval=3600)
    for step in range(1, 101):
        await run.add_metrics({"loss": float(step)}, step=step)
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    before = ticks
    await run.flush()
    during = ticks - before
    beat.cancel()
    assert during >= 10, f"the event loop ran {during} times during a write of a second or more"
    assert read_raw(client_kwargs, "SELECT count(*) FROM metrics WHERE run_id = %s",
                    (run.id,)) == [(101,)]
