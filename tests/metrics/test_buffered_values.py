"""Buffered batches store exactly what write-through stores, value kind by value kind.

PostgreSQL batches go in by binary COPY when every column's type is one it can take
(the types read with the metric columns), else by text COPY; SQLite batches by
multi-row upserts. Either way a buffered run and a write-through run given the same
calls must read back the same rows. Columns a user typed by hand (``integer``,
``real``, as a 0.1.x migration may have) take the binary form of their own type on
PostgreSQL; a value that does not fit one is refused as a MetricWriteError, as in
write-through, with the earlier rows kept.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from support.helpers import read_raw

import sqltrack

T0 = datetime(2021, 3, 4, 5, 6, 7, 890123, tzinfo=timezone.utc)


def _calls() -> list[tuple[dict, int]]:
    calls = [({"f": 0.5, "i": 1, "b": True, "s": "first", "t": T0}, 0)]
    for step in range(1, 40):
        calls.append(({
            "f": [float("nan"), float("inf"), -float("inf"), step, step / 3][step % 5],
            "i": 2**40 + step if step % 2 else -step,
            "b": step % 3 == 0,
            "s": None if step % 4 == 0 else f"é'\\\t\n{step}",
            "t": T0 + timedelta(days=step, microseconds=step),
        }, step))
    return calls


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


async def test_buffered_rows_equal_write_through_rows(client, client_kwargs) -> None:
    experiment = await sqltrack.AsyncExperiment.create(client, name="values")
    direct = await experiment.get_run()
    buffered = await experiment.get_run()
    await buffered.set_buffered(flush_rows=16)
    for metrics, step in _calls():
        await direct.add_metrics(metrics, step=step)
        await buffered.add_metrics(metrics, step=step)
    await buffered.flush()
    query = "SELECT step, f, i, b, s, t FROM metrics WHERE run_id = %s ORDER BY step"
    one = await client.query(query, [direct.id])
    two = await client.query(query, [buffered.id])
    assert len(one) == len(two) == 40
    for row_one, row_two in zip(one, two, strict=True):
        assert all(_same(a, b) for a, b in zip(row_one, row_two, strict=True)), (row_one, row_two)


async def test_hand_typed_columns_take_their_own_binary_form(pg_dsn, pg_schema) -> None:
    """PostgreSQL only: SQLite columns have no fixed storage type to encode for."""
    from support.helpers import pg_params

    kwargs = {"engine": "postgres", **pg_params(pg_dsn), "schema": pg_schema}
    client = sqltrack.AsyncClient(**kwargs, buffered=True, flush_rows=8)
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="typed")
        await client.execute("ALTER TABLE metrics ADD COLUMN small integer, "
                             "ADD COLUMN single real")
        run = await experiment.get_run()
        for step in range(20):
            await run.add_metrics({"small": step * 1000, "single": step / 4}, step=step)
        await run.flush()
        assert await client.query(
            "SELECT step, small, single FROM metrics WHERE run_id = %s ORDER BY step", [run.id]
        ) == [(step, step * 1000, step / 4) for step in range(20)]
        await run.add_metrics({"small": 2**40, "single": 1.0}, step=20)  # too big for integer
        with pytest.raises(sqltrack.MetricWriteError):
            await run.flush()
    finally:
        await client.close()
    (count,), = read_raw(kwargs, "SELECT count(*) FROM metrics WHERE run_id = %s", (run.id,))
    assert count == 20


async def test_int_past_64_bits_refused_and_earlier_rows_kept(client, client_kwargs) -> None:
    """An int no 64-bit column holds: refused by ``add_metrics`` itself, buffered or not
    (a ValueError naming the metric and the value, before anything is queued or
    written), and the rows logged before it are stored."""
    experiment = await sqltrack.AsyncExperiment.create(client, name="big")
    direct = await experiment.get_run()
    await direct.add_metrics({"i": 1}, step=0)
    with pytest.raises(ValueError, match=f"'i'.*{2**70}"):
        await direct.add_metrics({"i": 2**70}, step=1)
    buffered = await experiment.get_run()
    await buffered.set_buffered(flush_rows=1000)
    for step in range(5):
        await buffered.add_metrics({"i": step}, step=step)
    await buffered.flush()
    with pytest.raises(ValueError, match=f"'i'.*{2**70}"):
        await buffered.add_metrics({"i": 2**70}, step=5)
    await buffered.flush()
    assert await client.query("SELECT step, i FROM metrics WHERE run_id = %s ORDER BY step",
                              [buffered.id]) == [(step, step) for step in range(5)]
