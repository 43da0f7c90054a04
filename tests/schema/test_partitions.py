"""One big server, partitioned (issue 20, Required 5): the setting ``partitions`` makes
``metrics`` and ``metric_values`` hash-partitioned by run id on PostgreSQL at creation, and
``sqltrack setup --partitions N`` converts an existing database in place, rows kept.
Everything else works on the partitioned tables: new metric columns (on the parent), the
column budget, COPY (buffered runs) and upserts, cascading deletes, the view
``metric_values_all``. SQLite has no partitioned tables: the setting and the option are
refused there with a clear message."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.helpers import read_raw
from test_upgrade import conn_args

import sqltrack
from sqltrack.cli import main


def partitions_of(kw: dict[str, Any]) -> dict[str, list[str]]:
    """Each partitioned sqltrack table of the test schema: its partitions, sorted."""
    rows = read_raw(
        kw, "SELECT p.relname::text, c.relname::text FROM pg_inherits i "
        "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = %s AND p.relkind = 'p' ORDER BY 1, 2", [kw["schema"]])
    found: dict[str, list[str]] = {}
    for parent, child in rows:
        found.setdefault(parent, []).append(child)
    return found


def spread(kw: dict[str, Any], table: str) -> dict[str, int]:
    """Rows per partition of ``table`` (partitions holding none left out)."""
    return dict(read_raw(kw, f"SELECT tableoid::regclass::text, count(*) FROM {table} "
                         "GROUP BY 1 ORDER BY 1"))


def all_values(kw: dict[str, Any]) -> list[tuple]:
    return read_raw(kw, "SELECT run_id, step, name, value, value_text FROM metric_values_all "
                    "ORDER BY 1, 2, 3")


async def fill(client: sqltrack.AsyncClient, runs: int = 6) -> list[int]:
    """Runs with metrics in columns (a budget of 2: a third name goes long) of one experiment."""
    exp = await sqltrack.AsyncExperiment.create(client, name="big")
    ids = []
    for i in range(runs):
        run = await exp.get_run()
        ids.append(run.id)
        for step in range(3):
            await run.add_metrics({"loss": 1.0 / (step + 1), "acc": i, "note": f"r{i}"},
                                  step=step)
    return ids


@pytest.mark.parametrize("engine", ["postgres"])
async def test_setting_creates_partitioned_tables_that_work(client_kwargs):
    kw = {**client_kwargs, "partitions": 4, "metric_columns": 2}
    client = sqltrack.AsyncClient(**kw)
    try:
        ids = await fill(client)
        assert "partitioned metrics and metric_values by run id (hash, 4 partitions" in (
            client.schema_outcome or "")
        # An upsert of a row that exists (same run, step, progress) and a buffered run (COPY).
        first = await sqltrack.AsyncExperiment.create(client, name="big")
        run = await first.get_run(ids[0])
        await run.add_metrics({"loss": 9.0}, step=0)
        buffered = await first.get_run()
        await buffered.set_buffered(True)
        for step in range(50):
            await buffered.add_metrics({"loss": float(step), "acc": step}, step=step)
        await buffered.flush()
    finally:
        await client.close()
    assert partitions_of(kw) == {
        "metrics": [f"metrics_p{i}" for i in range(4)],
        "metric_values": [f"metric_values_p{i}" for i in range(4)]}
    # Two metric columns on the parent (the budget counts its attributes), in every partition.
    for table in ("metrics", *(f"metrics_p{i}" for i in range(4))):
        columns = read_raw(kw, "SELECT attname::text FROM pg_attribute WHERE attrelid = "
                           "%s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                           [table])
        assert [c for (c,) in columns] == ["run_id", "step", "progress", "loss", "acc"]
    assert len(spread(kw, "metrics")) >= 2  # 7 runs over 4 partitions
    assert sum(spread(kw, "metric_values").values()) == 6 * 3
    assert read_raw(kw, "SELECT loss FROM metrics WHERE run_id = %s AND step = 0",
                    [ids[0]]) == [(9.0,)]
    assert read_raw(kw, "SELECT count(*), sum(acc) FROM metrics WHERE run_id = %s",
                    [buffered.id]) == [(50, sum(range(50)))]
    values = all_values(kw)
    assert (ids[1], 2, "loss", 1.0 / 3, None) in values
    assert (ids[1], 2, "note", None, "r1") in values
    assert len(values) == 6 * 3 * 3 + 50 * 2
    # Deleting the experiment cascades through runs into every partition.
    deleted = read_raw(kw, "DELETE FROM experiments WHERE name = 'big' RETURNING id")
    assert len(deleted) == 1
    assert read_raw(kw, "SELECT (SELECT count(*) FROM metrics), "
                    "(SELECT count(*) FROM metric_values)") == [(0, 0)]


@pytest.mark.parametrize("engine", ["postgres"])
async def test_setup_partitions_converts_an_existing_database_with_data(client_kwargs, capsys):
    kw = {**client_kwargs, "metric_columns": 2}
    client = sqltrack.AsyncClient(**kw)
    try:
        ids = await fill(client)
    finally:
        await client.close()
    assert partitions_of(kw) == {}
    before = all_values(kw)
    metrics_before = read_raw(kw, "SELECT * FROM metrics ORDER BY 1, 2, 3")
    assert len(before) == 6 * 3 * 3
    capsys.readouterr()

    assert await asyncio.to_thread(main, [*conn_args(kw), "setup", "--partitions", "3"]) == 0
    out = capsys.readouterr().out
    assert ("partitioned metrics and metric_values by run id (hash, 3 partitions each; "
            f"{6 * 3 + 6 * 3} rows moved)") in out
    assert partitions_of(kw) == {
        "metrics": ["metrics_p0", "metrics_p1", "metrics_p2"],
        "metric_values": ["metric_values_p0", "metric_values_p1", "metric_values_p2"]}
    assert read_raw(kw, "SELECT * FROM metrics ORDER BY 1, 2, 3") == metrics_before
    assert all_values(kw) == before
    assert read_raw(kw, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON "
                    "n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname LIKE "
                    "'%%unpartitioned'", [kw["schema"]]) == [(0,)]
    keys = read_raw(kw, "SELECT conrelid::regclass::text, conname::text, "
                    "pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid IN "
                    "('metrics'::regclass, 'metric_values'::regclass) AND contype IN ('p', 'f') "
                    "ORDER BY 1, 2")
    assert keys == [
        ("metric_values", "metric_values_pkey", "PRIMARY KEY (run_id, name, step, progress)"),
        ("metric_values", "metric_values_run_id_fkey",
         "FOREIGN KEY (run_id) REFERENCES runs(id) ON DELETE CASCADE"),
        ("metrics", "metrics_pkey", "PRIMARY KEY (run_id, step, progress)"),
        ("metrics", "metrics_run_id_fkey",
         "FOREIGN KEY (run_id) REFERENCES runs(id) ON DELETE CASCADE")]

    # Again: nothing to do; another count: refused, nothing changed.
    assert await asyncio.to_thread(main, [*conn_args(kw), "setup", "--partitions", "3"]) == 0
    assert "partitioned already (3 partitions): nothing to do" in capsys.readouterr().out
    assert await asyncio.to_thread(main, [*conn_args(kw), "setup", "--partitions", "5"]) == 1
    err = capsys.readouterr().err
    assert "metrics is partitioned already into 3 partitions" in err, err
    assert len(partitions_of(kw)["metrics"]) == 3

    # Writing goes on: a new metric column (the budget is 3 now), the long table, a delete.
    client = sqltrack.AsyncClient(**{**kw, "metric_columns": 3})
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="big")
        run = await exp.get_run(ids[2])
        await run.add_metrics({"lr": 0.5, "note": "again", "extra": 1}, step=7)
    finally:
        await client.close()
    assert read_raw(kw, "SELECT lr FROM metrics_p0 LIMIT 0") == []  # on every partition
    assert (ids[2], 7, "lr", 0.5, None) in all_values(kw)
    assert (ids[2], 7, "extra", 1.0, None) in all_values(kw)
    assert read_raw(kw, "DELETE FROM runs WHERE id = %s RETURNING id", [ids[2]]) == [(ids[2],)]
    assert read_raw(kw, "SELECT count(*) FROM metric_values_all WHERE run_id = %s",
                    [ids[2]]) == [(0,)]
    assert len(all_values(kw)) == len(before) - 9


def test_partitions_are_refused_on_sqlite(tmp_path, capsys):
    path = str(tmp_path / "db.sqlite")
    with pytest.raises(ValueError, match="partitions=4: partitioned tables are PostgreSQL "
                       "only"):
        sqltrack.Client(engine="sqlite", dbpath=path, partitions=4)
    args = ["--engine", "sqlite", "--dbpath", path]
    assert main([*args, "setup", "--partitions", "2"]) == 1
    err = capsys.readouterr().err
    assert "--partitions: " in err and "has no partitioned tables (PostgreSQL only)" in err, err


@pytest.mark.parametrize("raw", ["-1", "two", "1025", 2.5])
def test_partitions_setting_is_checked(raw):
    with pytest.raises(ValueError, match="config value partitions="):
        sqltrack.Client(engine="postgres", partitions=raw)
