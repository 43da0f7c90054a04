"""The connection bound: many tasks on one AsyncClient, and a bounded wait for a connection.

* 200 concurrent tasks share one AsyncClient with ``pool_max_size=5`` on
  PostgreSQL, each creating a run and logging a few steps: all complete, and
  the server never sees more than 5 connections from the client (polled in
  ``pg_stat_activity`` by its own ``application_name``). ``--fault-trials=N``:
  N / 10 bursts (at least 2).
* With all 5 connections held in ``async with client:`` blocks and
  ``pool_timeout=0.5``, another task's call raises ``sqltrack.PoolTimeout``
  within the timeout (and a margin) instead of waiting forever; once the blocks
  end, calls go through again. On both engines.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest
from support.faults import check_rows, metric_rows, metrics_of
from support.helpers import pg_params
from support.waiting import WAIT

import sqltrack

pytestmark = pytest.mark.faults

TASKS = 200
POOL = 5


async def test_many_tasks_never_exceed_the_pool(pg_dsn, pg_schema, fault_trials,
                                                record_property):
    name = f"sqltrack-bound-{uuid.uuid4().hex[:8]}"
    kw = {"engine": "postgres", **pg_params(pg_dsn), "schema": pg_schema,
          "pool_max_size": POOL, "application_name": name}
    client = sqltrack.AsyncClient(**kw)
    peak, samples, done = 0, 0, asyncio.Event()
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as watcher:

        async def count() -> int:
            cursor = await watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]
            )
            return (await cursor.fetchone())[0]

        async def poll() -> None:
            nonlocal peak, samples
            while not done.is_set():
                peak = max(peak, await count())
                samples += 1
                await asyncio.sleep(0.002)

        async def task(experiment: sqltrack.AsyncExperiment) -> int:
            run = await experiment.get_run()
            for step in range(3):
                await run.add_metrics(metrics_of(step), step=step)
            return run.id

        try:
            experiment = await sqltrack.AsyncExperiment.create(client, name="bound")
            # The check connection made on opening is closed: wait until the server sees it gone.
            deadline = time.monotonic() + WAIT
            while (seen := await count()) > POOL:
                assert time.monotonic() < deadline, (
                    f"not within {WAIT:g} s: the server still sees {seen} connections of "
                    f"the client after it opened, more than pool_max_size={POOL}")
                await asyncio.sleep(0.01)
            poller = asyncio.create_task(poll())
            run_ids = []
            bursts = max(2, fault_trials // 10)
            for _ in range(bursts):
                run_ids += await asyncio.wait_for(
                    asyncio.gather(*(task(experiment) for _ in range(TASKS))), 120
                )
            done.set()
            await poller
        finally:
            await client.close()
    assert len(set(run_ids)) == TASKS * bursts
    rows_checked = 0
    for run_id in run_ids:
        rows = metric_rows(kw, run_id)
        assert sorted(rows) == [0, 1, 2] and not check_rows(rows), (run_id, rows)
        rows_checked += len(rows)
    record_property("faults.concurrent_tasks", TASKS * bursts)
    record_property("faults.rows_checked", rows_checked)
    record_property("faults.pg_stat_activity_samples", samples)
    print(f"peak {peak} connections over {samples} samples")
    assert samples > 10
    assert 1 <= peak <= POOL, f"{peak} connections from one client with pool_max_size={POOL}"


async def test_waiting_too_long_for_a_connection_raises_pool_timeout(client_kwargs):
    client = sqltrack.AsyncClient(**client_kwargs, pool_max_size=POOL, pool_timeout=0.5)
    try:
        run = await (await sqltrack.AsyncExperiment.create(client, name="timeout")).get_run()
        release = asyncio.Event()
        holding = 0

        async def hold() -> None:
            nonlocal holding
            async with client:
                holding += 1
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(POOL)]
        while holding < POOL:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(sqltrack.PoolTimeout, match="pool_max_size or pool_timeout"):
            await asyncio.wait_for(run.add_metrics({"loss": 1.0}, step=0), 10)
        waited = time.monotonic() - started
        assert 0.4 <= waited < 5, waited
        release.set()
        await asyncio.gather(*holders)
        await run.add_metrics({"loss": 2.0}, step=1)  # free again
        assert await client.query("SELECT step, loss FROM metrics WHERE run_id = %s",
                                  [run.id]) == [(1, 2.0)]
    finally:
        await client.close()
