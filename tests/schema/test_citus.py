"""sqltrack on Citus (distributed PostgreSQL): the base-schema set-up distributes the
tables by itself. Runs when ``SQLTRACK_TEST_CITUS_DSN`` names a Citus coordinator with
at least two workers (``../shared/vendor/citus/cluster.sh start DIR PORT`` prints one;
``.ci/run`` starts one); fails, never skips, when it names anything else. Without the
variable these tests are deselected (marker ``citus``; see tests/conftest.py), not
skipped. Citus is a test server only.
"""

from __future__ import annotations

import pytest
from support.citus import citus_tables, raw, rows_per_worker

import sqltrack

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
