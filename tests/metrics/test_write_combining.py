"""Concurrent write-through calls, more of them than the pool has connections.

On PostgreSQL the rows of calls that would wait for a connection are written
together by the next free writer (``sqltrack.metrics.combining``): one statement, one
transaction, seen here as rows sharing their ``xmin``. Each call still returns
only once its row is committed and raises its own error. SQLite takes one writer
at a time and does not combine; the same behaviour is checked on both engines.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from support.helpers import read_raw

import sqltrack

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _small_pool(client_kwargs) -> dict:
    return {**client_kwargs, "pool_max_size": 2}


async def _runs(client: sqltrack.AsyncClient, count: int) -> list[sqltrack.AsyncRun]:
    experiment = await sqltrack.AsyncExperiment.create(client, name="combined")
    runs = [await experiment.get_run() for _ in range(count)]
    for run in runs:  # the columns exist: every later call is a plain upsert
        await run.add_metrics({"loss": 0.0, "acc": 0.0}, step=0, updated=T0)
    return runs


async def _log(kwargs: dict, run: sqltrack.AsyncRun, steps: int) -> None:
    for step in range(1, steps + 1):
        updated = T0 + timedelta(seconds=step)
        await run.add_metrics({"loss": run.id + step / 100, "acc": step / 10}, step=step,
                              updated=updated)
        if step % 4 == 0:  # committed when the call returns, whoever wrote it
            assert read_raw(kwargs, "SELECT loss, acc FROM metrics WHERE run_id = %s AND "
                            "step = %s", (run.id, step)) == [(run.id + step / 100, step / 10)]


def _assert_only_the_deleted_run_failed(kw, runs, doomed, results, rows: int) -> None:
    """The deleted run's calls raised RunNotFound, every other call returned, and the
    other runs' ``rows`` rows (past step 0) are stored."""
    for run, result in zip(runs, results, strict=True):
        if run is doomed:
            assert isinstance(result, sqltrack.RunNotFound), result
        else:
            assert result is None, result
    (count,), = read_raw(kw, "SELECT count(*) FROM metrics WHERE step > 0")
    assert count == rows


async def test_many_concurrent_writers_every_row_and_touch(client_kwargs) -> None:
    client = sqltrack.AsyncClient(**_small_pool(client_kwargs))
    try:
        runs = await _runs(client, 24)
        await asyncio.wait_for(asyncio.gather(*(_log(client_kwargs, run, 12) for run in runs)), 120)
    finally:
        await client.close()
    rows = read_raw(client_kwargs, "SELECT run_id, step, loss, acc FROM metrics WHERE step > 0 "
                    "ORDER BY run_id, step")
    assert rows == [(run.id, step, run.id + step / 100, step / 10)
                    for run in sorted(runs, key=lambda r: r.id) for step in range(1, 13)]
    touched = read_raw(client_kwargs, "SELECT id, time_updated FROM runs ORDER BY id")
    for run_id, time_updated in touched:
        assert _as_utc(time_updated) == T0 + timedelta(seconds=12), run_id


def _as_utc(value) -> datetime:
    if isinstance(value, str):  # SQLite stores ISO text
        value = datetime.fromisoformat(value)
    return value.astimezone(timezone.utc)


async def test_postgres_combines_waiting_rows(pg_dsn, pg_schema) -> None:
    """The rows of waiting calls go in shared transactions (fewer xmin than rows)."""
    from support.helpers import pg_params

    kwargs = {"engine": "postgres", **pg_params(pg_dsn), "schema": pg_schema}
    client = sqltrack.AsyncClient(**_small_pool(kwargs))
    try:
        runs = await _runs(client, 24)
        await asyncio.wait_for(asyncio.gather(*(_log(kwargs, run, 10) for run in runs)), 120)
    finally:
        await client.close()
    (rows, transactions), = read_raw(
        kwargs, "SELECT count(*), count(DISTINCT xmin::text) FROM metrics WHERE step > 0")
    assert rows == 240
    assert transactions < rows / 2, transactions


async def test_deleted_run_fails_alone(client_kwargs) -> None:
    """A run deleted meanwhile: its calls raise RunNotFound, every other row is written."""
    client = sqltrack.AsyncClient(**_small_pool(client_kwargs))
    try:
        runs = await _runs(client, 16)
        doomed = runs[5]
        await client.execute("DELETE FROM runs WHERE id = " + str(int(doomed.id)))
        logs = (_log(client_kwargs, run, 6) for run in runs)
        results = await asyncio.wait_for(asyncio.gather(*logs, return_exceptions=True), 120)
    finally:
        await client.close()
    _assert_only_the_deleted_run_failed(client_kwargs, runs, doomed, results, 15 * 6)


async def test_same_row_from_many_calls_at_once(client_kwargs) -> None:
    """Calls for one (run, step) at once: no error, the stored row is one of theirs."""
    client = sqltrack.AsyncClient(**_small_pool(client_kwargs))
    try:
        run, other = await _runs(client, 2)
        calls = [run.add_metrics({"loss": float(i), "acc": 1.0}, step=7) for i in range(20)]
        calls += [other.add_metrics({"loss": float(i), "acc": 2.0}, step=i) for i in range(20)]
        await asyncio.wait_for(asyncio.gather(*calls), 60)
    finally:
        await client.close()
    (loss, acc), = read_raw(client_kwargs, "SELECT loss, acc FROM metrics WHERE run_id = %s "
                            "AND step = 7", (run.id,))
    assert loss in {float(i) for i in range(20)} and acc == 1.0
    assert read_raw(client_kwargs, "SELECT step, loss FROM metrics WHERE run_id = %s ORDER BY "
                    "step", (other.id,)) == [(i, float(i)) for i in range(20)]


@pytest.mark.parametrize("cancel_every", [3, 7])
async def test_cancelled_waiters_leave_the_rest_written(client_kwargs, cancel_every) -> None:
    """Cancelling some calls while they wait: the others are written, nothing hangs, and
    the client goes on writing afterwards."""
    client = sqltrack.AsyncClient(**_small_pool(client_kwargs))
    try:
        runs = await _runs(client, 20)
        tasks = [asyncio.ensure_future(run.add_metrics({"loss": 1.0, "acc": 1.0}, step=1))
                 for run in runs]
        await asyncio.sleep(0)
        cancelled = {index for index in range(len(tasks)) if index % cancel_every == 0}
        for index in cancelled:
            tasks[index].cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        for run in runs:  # the combiner's count of writers is back where it was
            await asyncio.wait_for(run.add_metrics({"loss": 2.0, "acc": 2.0}, step=2), 30)
    finally:
        await client.close()
    written = {run_id for run_id, in read_raw(
        client_kwargs, "SELECT run_id FROM metrics WHERE step = 1")}
    for index, run in enumerate(runs):
        if index not in cancelled:
            assert run.id in written
    (count,), = read_raw(client_kwargs, "SELECT count(*) FROM metrics WHERE step = 2")
    assert count == 20


async def _rounds(runs: list[sqltrack.AsyncRun], steps: int) -> None:
    """Every run logs ``steps`` steps at once, with no pause between calls."""
    async def log(run: sqltrack.AsyncRun) -> None:
        for step in range(1, steps + 1):
            await run.add_metrics({"loss": run.id + step / 100, "acc": step / 10}, step=step)

    await asyncio.wait_for(asyncio.gather(*(log(run) for run in runs)), 120)


async def test_postgres_rounds_of_calls_merge_into_one_statement(pg_dsn, pg_schema) -> None:
    """Many runs logging at once: after the first round, each round of calls is one
    statement (one transaction), not one statement per pooled connection."""
    from support.helpers import pg_params

    kwargs = {"engine": "postgres", **pg_params(pg_dsn), "schema": pg_schema,
              "pool_max_size": 4}
    client = sqltrack.AsyncClient(**kwargs)
    steps = 12
    try:
        runs = await _runs(client, 32)
        await _rounds(runs, steps)
    finally:
        await client.close()
    (rows, transactions), = read_raw(
        kwargs, "SELECT count(*), count(DISTINCT xmin::text) FROM metrics WHERE step > 0")
    assert rows == 32 * steps
    assert transactions <= steps + 4, transactions


async def test_failing_leader_hands_back_rows_of_other_names(client_kwargs) -> None:
    """A call whose run was deleted takes waiting rows of other metric names with its
    own: it raises RunNotFound, and every other call's row is written."""
    client = sqltrack.AsyncClient(**_small_pool(client_kwargs))
    try:
        runs = await _runs(client, 16)
        for run in runs:
            await run.add_metrics({"lr": 0.0}, step=0)
        doomed = runs[3]
        await client.execute("DELETE FROM runs WHERE id = " + str(int(doomed.id)))

        async def log(index: int, run: sqltrack.AsyncRun) -> None:
            for step in range(1, 6):
                metrics = {"loss": 1.0, "acc": 1.0} if (index + step) % 2 else {"lr": 0.1}
                await run.add_metrics(metrics, step=step)

        logs = (log(index, run) for index, run in enumerate(runs))
        results = await asyncio.wait_for(asyncio.gather(*logs, return_exceptions=True), 120)
    finally:
        await client.close()
    _assert_only_the_deleted_run_failed(client_kwargs, runs, doomed, results, 15 * 5)
