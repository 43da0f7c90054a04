"""sqltrack on Citus (distributed PostgreSQL): the base-schema set-up distributes the
tables by itself. Runs when ``SQLTRACK_TEST_CITUS_DSN`` names a Citus coordinator with
at least two workers (``../shared/vendor/citus/cluster.sh start DIR PORT`` prints one;
``.ci/run`` starts one); fails, never skips, when it names anything else. Without the
variable these tests are deselected (marker ``citus``; see tests/conftest.py), not
skipped. Citus is a test server only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.citus import citus_tables, keys_to_runs, local_bytes, raw, rows_per_worker
from support.transfer_helpers import populate

import sqltrack
from sqltrack.cli import main
from sqltrack.copy.transfer import sync
from sqltrack.errors import MetricWriteError
from sqltrack.model.system_metrics import write_sample

pytestmark = pytest.mark.citus

#: Every distributed or reference table of a fresh sqltrack database on Citus:
#: (type, distribution column), and the tables co-located with ``runs``.
EXPECTED = {
    "experiments": ("reference", "<none>"),
    "experiment_links": ("reference", "<none>"),
    "metric_names": ("reference", "<none>"),
    "runs": ("distributed", "id"),
    "metrics": ("distributed", "run_id"),
    "metric_values": ("distributed", "run_id"),
    "system_metrics": ("distributed", "run_id"),
    "run_links": ("distributed", "from_id"),
}



async def test_setup_distributes_and_rows_land_on_both_workers(citus_kwargs):
    kw = citus_kwargs
    client = sqltrack.AsyncClient(**kw)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="spread")
        assert "distributed the tables on Citus" in (client.schema_outcome or "")
        runs = [await exp.get_run() for _ in range(24)]
        for run in runs:
            await run.add_metrics({"loss": 0.5, "acc": 0.25}, step=0)
            await run.add_metrics({"loss": 0.25}, step=1)
        await runs[1].add_link("retry-of", runs[0].id)
        found = await client.query(
            "SELECT r.id, e.name, m.loss FROM runs r JOIN experiments e ON e.id = "
            "r.experiment_id JOIN metrics m ON m.run_id = r.id WHERE m.step = 1 ORDER BY r.id")
        assert [(i, n) for i, n, _ in found] == [(r.id, "spread") for r in runs]
    finally:
        await client.close()
    tables = citus_tables(kw)
    assert {t: v[:2] for t, v in tables.items()} == EXPECTED
    colocated = {v[2] for t, v in tables.items() if v[0] == "distributed"}
    assert len(colocated) == 1, tables  # one co-location group: runs and its tables
    for table in ("runs", "metrics"):
        counts = rows_per_worker(kw, table)
        assert len([c for c in counts.values() if c]) >= 2, (table, counts)
        assert sum(counts.values()) == 24 * (1 if table == "runs" else 2)


async def test_explicit_ids_advance_the_sequence_on_citus(citus_kwargs):
    client = sqltrack.AsyncClient(**citus_kwargs)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="ids")
        first = await exp.get_run()
        await exp.get_run(first.id + 10**6)
        assert (await exp.get_run()).id == first.id + 10**6 + 1
        await sqltrack.AsyncExperiment.create(client, 5000, "explicit")
        assert (await sqltrack.AsyncExperiment.create(client, name="next")).id == 5001
        assert raw(citus_kwargs, "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON "
                   "c.oid = t.tgrelid WHERE c.relnamespace = %s::regnamespace AND NOT "
                   "t.tgisinternal", [citus_kwargs["schema"]]) == [(0,)]
    finally:
        await client.close()


async def test_new_metric_columns_and_deletes_work_distributed(citus_kwargs):
    client = sqltrack.AsyncClient(**citus_kwargs, metric_columns=2)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="wide")
        run = await exp.get_run()
        # two new columns (ALTER TABLE on a distributed table), then the long table
        await run.add_metrics({"a": 1.0, "b": 2, "c": "text", "d": True}, step=0)
        await run.add_metrics({"a": 1.5, "b": 3, "c": "more", "d": False}, step=0)
        assert await client.query("SELECT a, b FROM metrics WHERE run_id = %s",
                                  [run.id]) == [(1.5, 3)]
        assert sorted(await client.query(
            "SELECT name, value_text, value_bool FROM metric_values WHERE run_id = %s",
            [run.id])) == [("c", "more", None), ("d", None, False)]
        await client.query("DELETE FROM experiments WHERE id = %s", [exp.id])
        for table in ("runs", "metrics", "metric_values"):
            assert await client.query(f"SELECT count(*) FROM {table}") == [(0,)]
    finally:
        await client.close()


async def test_distribute_off_keeps_tables_local(citus_kwargs):
    client = sqltrack.AsyncClient(**citus_kwargs, distribute=False)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="local")
        await exp.get_run()
        assert "Citus" not in (client.schema_outcome or "")
    finally:
        await client.close()
    assert citus_tables(citus_kwargs) == {}


#: Every table of an existing database and the key its rows are compared by.
TABLES = {"experiments": "id", "experiment_links": "from_id, kind, to_id", "runs": "id",
          "run_links": "from_id, kind, to_id", "metrics": "run_id, step, progress",
          "metric_values": "run_id, name, step, progress", "metric_names": "name",
          "system_metrics": "run_id, rank, host, name, time",
          "sync_experiments": "source_key, source_experiment_id",
          "sync_runs": "source_key, source_run_id"}


def snapshot(kw: dict[str, Any]) -> dict[str, list[tuple]]:
    """Every row of every table, each value as its repr (a NaN equals itself there)."""
    return {t: [tuple(map(repr, r)) for r in raw(kw, f"SELECT * FROM {t} ORDER BY {key}")]
            for t, key in TABLES.items()}


async def _existing_database(kw: dict[str, Any], node: dict[str, Any]) -> None:
    """A sqltrack database on the coordinator made with ``distribute=false``: experiments,
    runs, metrics (columns and long rows: a budget of 3), links, system metrics and sync's
    tables (a node's file synced into it)."""
    client = sqltrack.AsyncClient(**kw, distribute=False, metric_columns=3)
    try:
        ids = await populate(client, runs=6, steps=20)
        for number, run_id in enumerate(ids):
            await write_sample(client, run_id, {"cpu_percent": 10.0 + number, "gpu0_util": 0.5},
                               rank=number % 2, host=f"node{number}")
        source = sqltrack.AsyncClient(**node)
        try:
            await populate(source, runs=2, steps=5, prefix="node-")
            await sync(source, client)
        finally:
            await source.close()
    finally:
        await client.close()


async def test_setup_distribute_moves_an_existing_database(citus_kwargs, tmp_path, capsys,
                                                           clean_env):
    kw, node = citus_kwargs, {"engine": "sqlite", "dbpath": str(tmp_path / "node.db")}
    await _existing_database(kw, node)
    assert citus_tables(kw) == {}
    before = snapshot(kw)
    assert all(before[t] for t in TABLES), {t: len(r) for t, r in before.items()}
    assert raw(kw, "SELECT count(*) FROM metric_values")[0][0] > 0  # long-stored metrics
    argv = ["--engine", "postgres", *(f"--{k}={v}" for k, v in kw.items() if k != "engine"),
            "setup", "--distribute"]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert "base schema up to date" in out
    assert "distributed the tables on Citus (runs by id" in out
    assert "dropped the foreign key of sync_runs to runs" in out
    tables = citus_tables(kw)
    assert {t: v[:2] for t, v in tables.items() if t in EXPECTED} == EXPECTED
    assert "sync_runs" not in tables and keys_to_runs(kw, "sync_runs") == []
    assert len({v[2] for v in tables.values() if v[0] == "distributed"}) == 1
    assert snapshot(kw) == before  # every row kept, now read from the shards
    for table in ("runs", "metrics", "metric_values", "system_metrics"):
        counts = rows_per_worker(kw, table)
        assert sum(counts.values()) == len(before[table])
        assert len([c for c in counts.values() if c]) >= 2, (table, counts)
        assert local_bytes(kw, table) == 0  # the coordinator's local copy was emptied

    # Idempotent: a second run has nothing to do.
    assert await asyncio.to_thread(main, argv) == 0
    assert "tables distributed on Citus already: nothing to do" in capsys.readouterr().out
    # The database works on: a new run, its metrics, a re-sync, a delete.
    client = sqltrack.AsyncClient(**kw, metric_columns=3)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="after")
        run = await exp.get_run()
        assert run.id > max(int(r[0]) for r in before["runs"])
        await run.add_metrics({"loss": 0.1, "new_long": 2}, step=0)
        source = sqltrack.AsyncClient(**node)
        try:
            assert (await sync(source, client)).runs_unchanged == 2
        finally:
            await source.close()
        await client.query("DELETE FROM experiments WHERE name = 'mnist'")
        assert await client.query(
            "SELECT count(*) FROM runs r JOIN experiments e ON e.id = r.experiment_id "
            "WHERE e.name = 'mnist'") == [(0,)]
    finally:
        await client.close()


async def test_a_copied_batch_over_stored_steps_upserts_on_citus(citus_kwargs):
    """A buffered batch big enough for COPY whose steps are stored already: Citus reports
    the shard's unique violation of the COPY as an internal error (XX000); the batch is
    upserted all the same, and a batch of a deleted run is refused with RunNotFound."""
    client = sqltrack.AsyncClient(**citus_kwargs)
    try:
        run = await (await sqltrack.AsyncExperiment.create(client, name="copy")).get_run()
        await run.set_buffered(flush_rows=1000, flush_interval=60)
        for step in range(200):
            await run.add_metrics({"loss": float(step)}, step=step)
        await run.flush()
        for step in range(100, 300):  # 100 stored, 100 new: one COPY-sized batch
            await run.add_metrics({"loss": -float(step)}, step=step)
        await run.flush()
        stored = await client.query("SELECT step, loss FROM metrics WHERE run_id = %s "
                                    "ORDER BY step", [run.id])
        assert stored == [(s, float(s) if s < 100 else -float(s)) for s in range(300)]

        gone = await (await sqltrack.AsyncExperiment.create(client, name="gone")).get_run()
        await gone.set_buffered(flush_rows=1000, flush_interval=60)
        await gone.add_metrics({"loss": 0.0}, step=0)
        await gone.flush()
        await client.query("DELETE FROM runs WHERE id = %s", [gone.id])
        for step in range(1, 100):
            await gone.add_metrics({"loss": 1.0}, step=step)
        with pytest.raises(MetricWriteError, match="run"):
            await gone.flush()
    finally:
        await client.close()


async def test_partitions_are_refused_on_citus(citus_kwargs, capsys, clean_env):
    """Issue 20, Required 5: partitioning is for one plain server; on a Citus coordinator
    the tables are distributed instead, and asking for partitions says so (nothing made)."""
    kw = citus_kwargs
    client = sqltrack.AsyncClient(**kw, partitions=4)
    try:
        with pytest.raises(ValueError, match="this database is a Citus coordinator, where "
                           "sqltrack's tables are distributed by run id"):
            await client.open()
    finally:
        await client.close()
    assert raw(kw, "SELECT to_regclass('runs') IS NULL") == [(True,)]  # rolled back
    client = sqltrack.AsyncClient(**kw)
    try:
        await sqltrack.AsyncExperiment.create(client, name="spread")
    finally:
        await client.close()
    argv = ["--engine", "postgres", *(f"--{k}={v}" for k, v in kw.items() if k != "engine"),
            "setup", "--partitions", "4"]
    capsys.readouterr()
    assert await asyncio.to_thread(main, argv) == 1
    err = capsys.readouterr().err
    assert "error: partitions: this database is a Citus coordinator" in err, err
    assert raw(kw, "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = "
               "p.partrelid WHERE c.relnamespace = %s::regnamespace", [kw["schema"]]) == [(0,)]
    assert citus_tables(kw)["metrics"][:2] == ("distributed", "run_id")
