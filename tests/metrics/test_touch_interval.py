"""A write-through ``add_metrics`` sets its run's ``time_updated`` at most once per
``TOUCH_INTERVAL`` (1 s) of the rows' times: a heartbeat, not a rewrite of the ``runs``
row at every step. Times are given explicitly (``updated=``), so nothing here depends on
how fast the machine is. Both engines, both APIs (the blocking API on SQLite writes on
the calling thread, another path)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from support.helpers import read_raw

import sqltrack
import sqltrack_sync
from sqltrack.metrics import writer as writer_module
from sqltrack.metrics.writer import TOUCH_INTERVAL

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TICK = timedelta(milliseconds=100)


def _time_updated(kw, run_id: int) -> datetime | None:
    (value,), = read_raw(kw, "SELECT time_updated FROM runs WHERE id = %s", [run_id])
    if isinstance(value, str):  # SQLite keeps ISO text
        value = datetime.fromisoformat(value)
    return None if value is None else value.astimezone(timezone.utc)


def test_the_interval_is_one_second():
    assert TOUCH_INTERVAL == timedelta(seconds=1)


@pytest.mark.parametrize("api", ["async", "blocking"])
async def test_a_fast_loop_sets_time_updated_once_a_second(client_kwargs, api):
    """Steps 100 ms apart: the run's time_updated moves at the first step and then at
    each step a second or more after the last one written; every row is stored; an
    earlier time than the last written one is written (a clock set back), and a time
    set another way (``set_updated``) makes the next step's time written again."""
    kw = client_kwargs
    seen: list[datetime | None] = []
    if api == "async":
        client = sqltrack.AsyncClient(**kw)
        run = await (await sqltrack.AsyncExperiment.create(client, name="t")).get_run()

        async def log(step: int, when: datetime) -> None:
            await run.add_metrics({"loss": float(step)}, step=step, updated=when)

        async def set_updated(when: datetime) -> None:
            await run.set_updated(when)
    else:
        client = sqltrack_sync.Client(**kw)
        run = sqltrack_sync.Experiment(client, name="t").get_run()

        async def log(step: int, when: datetime) -> None:
            run.add_metrics({"loss": float(step)}, step=step, updated=when)

        async def set_updated(when: datetime) -> None:
            run.set_updated(when)
    try:
        for step in range(25):  # 0.0 s ... 2.4 s
            await log(step, T0 + step * TICK)
            seen.append(_time_updated(kw, run.id))
        assert seen == [T0 + (step // 10) * timedelta(seconds=1) for step in range(25)]
        await log(25, T0 + 3 * TICK)  # set back: written
        assert _time_updated(kw, run.id) == T0 + 3 * TICK
        await set_updated(T0 - timedelta(days=1))
        await log(26, T0 + 4 * TICK)  # 100 ms after the last step's, but set since: written
        assert _time_updated(kw, run.id) == T0 + 4 * TICK
        await log(27, T0 + 5 * TICK)
        assert _time_updated(kw, run.id) == T0 + 4 * TICK
    finally:
        result = client.close()
        if result is not None:
            await result
    steps = read_raw(kw, "SELECT step, loss FROM metrics WHERE run_id = %s ORDER BY step",
                     [run.id])
    assert steps == [(step, float(step)) for step in range(28)]


async def test_stop_writes_its_own_time(client_kwargs):
    """The last steps' touches left out, ``stop()`` still sets the run's end time."""
    client = sqltrack.AsyncClient(**client_kwargs)
    try:
        run = await (await sqltrack.AsyncExperiment.create(client, name="t")).get_run()
        await run.start(updated=T0)
        for step in range(5):
            await run.add_metrics({"loss": 1.0}, step=step, updated=T0 + step * TICK)
        assert _time_updated(client_kwargs, run.id) == T0
        await run.stop(updated=T0 + 5 * TICK)
        assert _time_updated(client_kwargs, run.id) == T0 + 5 * TICK
        await run.add_metrics({"loss": 1.0}, step=6, updated=T0 + 6 * TICK)  # after stop
        assert _time_updated(client_kwargs, run.id) == T0 + 6 * TICK
    finally:
        await client.close()


async def test_a_rolled_back_touch_is_written_again(client_kwargs):
    """A touch rolled back with its ``with client`` block does not count as written."""
    client = sqltrack.AsyncClient(**client_kwargs)
    try:
        run = await (await sqltrack.AsyncExperiment.create(client, name="t")).get_run()
        with pytest.raises(RuntimeError):
            async with client:
                await run.add_metrics({"loss": 1.0}, step=1, updated=T0)
                raise RuntimeError("rolled back")
        await run.add_metrics({"loss": 2.0}, step=2, updated=T0 + TICK)
        assert _time_updated(client_kwargs, run.id) == T0 + TICK
    finally:
        await client.close()


async def test_the_remembered_touches_are_bounded(client_kwargs, monkeypatch):
    """A client writing to more runs than it remembers touches forgets them all: the
    memory stays bounded, and a forgotten run's next write touches again (never lost)."""
    monkeypatch.setattr(writer_module, "_TOUCHED_RUNS", 2)
    client = sqltrack.AsyncClient(**client_kwargs)
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="t")
        runs = [await experiment.get_run() for _ in range(3)]
        for run in runs:
            await run.add_metrics({"loss": 1.0}, step=0, updated=T0)
        # the third run's touch found two remembered: they were forgotten, it is kept
        await runs[2].add_metrics({"loss": 1.0}, step=1, updated=T0 + TICK)  # remembered
        await runs[0].add_metrics({"loss": 1.0}, step=1, updated=T0 + TICK)  # forgotten
        assert [_time_updated(client_kwargs, run.id) for run in runs] == [T0 + TICK, T0, T0]
    finally:
        await client.close()
