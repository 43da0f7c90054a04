"""``sqltrack sync`` of metrics wherever they are stored: columns of ``metrics`` and rows
of the long table ``metric_values`` (names past the column budget), between databases
whose storage differs (a name that is a column in one and long-stored in the other),
and re-syncs that see a changed long value. Both engines as source and as target;
``differences`` compares the metric values of both databases wherever each keeps them.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from support.helpers import read_raw
from support.transfer_helpers import differences, populate, run_map, sync_databases

import sqltrack
from sqltrack.copy.transfer import SyncProgress

PAIRS = [("sqlite", "sqlite"), ("sqlite", "postgres"), ("postgres", "sqlite"),
         ("postgres", "postgres")]


async def _fill(kw: dict, runs: int = 2, steps: int = 30) -> list[int]:
    """``populate``'s data, plus metrics logged only every few steps and rows whose
    metrics are all new names (long-stored past a small budget: no ``metrics`` row)."""
    client = sqltrack.AsyncClient(**kw)
    try:
        ids = await populate(client, runs=runs, steps=steps)
        for run_id in ids:
            for step in range(steps):
                values: dict[str, Any] = {"grad_norm": step * 0.5, "layer_count": step}
                if step % 3 == 0:
                    values["sparse"] = -step * 1.5
                await sqltrack.run_add_metrics(client, run_id, values, step=step, updated=None)
            await sqltrack.run_add_metrics(client, run_id, {"only_long": 7.25, "eval_ok": True},
                                           step=steps + 5, progress=0.25, updated=None)
        return ids
    finally:
        await client.close()


def _logical_rows(kw: dict) -> int:
    """Metric rows of a database: keys of either place."""
    return read_raw(kw, "SELECT COUNT(*) FROM (SELECT run_id, step, progress FROM metrics UNION "
                        "SELECT run_id, step, progress FROM metric_values) AS k")[0][0]


def _long_names(kw: dict) -> set[str]:
    return {r[0] for r in read_raw(kw, "SELECT DISTINCT name FROM metric_values")}


@pytest.mark.parametrize(("source_engine", "target_engine"), PAIRS)
async def test_long_stored_metrics_are_copied_as_columns(database, source_engine,
                                                         target_engine):
    """Past the source's budget, on the target (room for columns) every name a column."""
    source_kw = database(source_engine, metric_columns=2)
    target_kw = database(target_engine)
    await _fill(source_kw)
    assert len(_long_names(source_kw)) >= 8  # the test stores most names long
    seen: list[SyncProgress] = []
    summary = await sync_databases(source_kw, target_kw, progress=seen.append)
    assert differences(source_kw, target_kw) == []
    assert _long_names(target_kw) == set()
    assert summary.metric_rows == _logical_rows(source_kw) == _logical_rows(target_kw)
    assert seen[-1].rows_done == seen[-1].rows_total == summary.metric_rows
    again = await sync_databases(source_kw, target_kw)
    assert (again.metric_rows, again.runs_updated, again.runs_unchanged) == (0, 0, 2)


@pytest.mark.parametrize(("source_engine", "target_engine"), PAIRS)
async def test_columns_are_copied_into_a_target_whose_budget_is_full(
        database, source_engine, target_engine):
    """Columns on the source; on the target (budget 1, already used) the names go long,
    and a sparse metric stores no empty rows there."""
    source_kw = database(source_engine)
    target_kw = database(target_engine, metric_columns=1)
    await _fill(source_kw)
    target = sqltrack.AsyncClient(**target_kw)
    try:
        mine = await (await sqltrack.AsyncExperiment.create(target, name="own")).get_run()
        await mine.add_metrics({"own_metric": 1.0}, step=0)
    finally:
        await target.close()
    summary = await sync_databases(source_kw, target_kw)
    assert differences(source_kw, target_kw) == []
    assert "loss" in _long_names(target_kw) and "sparse" in _long_names(target_kw)
    assert summary.metric_rows == _logical_rows(source_kw)
    ids = run_map(source_kw, target_kw)
    (sparse,) = read_raw(target_kw, "SELECT COUNT(*) FROM metric_values WHERE run_id = %s AND "
                         "name = 'sparse'", [ids[min(ids)]])
    assert sparse == (10,)  # steps 0, 3, ..., 27: no rows for the steps without a value
    assert (await sync_databases(source_kw, target_kw)).metric_rows == 0


@pytest.mark.parametrize(("source_engine", "target_engine"), PAIRS)
async def test_a_resync_copies_changed_long_values(database, source_engine, target_engine):
    """Long values changed in old rows (the sum kept), new long-only rows, a name the
    run starts using in an old row: each copied, nothing else; then nothing."""
    source_kw = database(source_engine, metric_columns=1)
    target_kw = database(target_engine, metric_columns=3)
    ids = await _fill(source_kw, runs=1)
    await sync_databases(source_kw, target_kw)
    assert differences(source_kw, target_kw) == []
    client = sqltrack.AsyncClient(**source_kw)
    try:
        run_id = ids[0]
        await sqltrack.run_add_metrics(client, run_id, {"grad_norm": 3.0 * 0.5}, step=2,
                                       updated=None)  # swapped with step 3's value
        await sqltrack.run_add_metrics(client, run_id, {"grad_norm": 2.0 * 0.5}, step=3,
                                       updated=None)
        await sqltrack.run_add_metrics(
            client, run_id, {"sparse": math.nextafter(-9 * 1.5, 0.0)}, step=9, updated=None)
        await sqltrack.run_add_metrics(client, run_id, {"eval_ok": False, "only_long": 1.0},
                                       step=100, updated=None)
        await sqltrack.run_add_metrics(client, run_id, {"late_name": 5}, step=4, updated=None)
    finally:
        await client.close()
    assert differences(source_kw, target_kw) != []
    changed = await sync_databases(source_kw, target_kw)
    assert differences(source_kw, target_kw) == []
    assert changed.metric_rows == 5  # steps 2, 3, 9, 4 and 100
    assert (await sync_databases(source_kw, target_kw)).metric_rows == 0


@pytest.mark.parametrize("target_engine", ["sqlite", "postgres"])
async def test_a_type_conflict_with_a_long_name_of_the_target(database, target_engine):
    """A name the target stores long as str, a float on the source: MetricTypeError."""
    source_kw = database("sqlite")
    target_kw = database(target_engine, metric_columns=0)
    await _fill(source_kw, runs=1)
    target = sqltrack.AsyncClient(**target_kw)
    try:
        run = await (await sqltrack.AsyncExperiment.create(target, name="own")).get_run()
        await run.add_metrics({"grad_norm": "high"}, step=0)
    finally:
        await target.close()
    with pytest.raises(sqltrack.MetricTypeError, match="grad_norm"):
        await sync_databases(source_kw, target_kw)
