"""sqltrack on Citus (distributed PostgreSQL): the base-schema set-up distributes the
tables by itself. Runs when ``SQLTRACK_TEST_CITUS_DSN`` names a Citus coordinator with
at least two workers (``../shared/vendor/citus/cluster.sh start DIR PORT`` prints one;
``.ci/run`` starts one); fails, never skips, when it names anything else. Without the
variable these tests are deselected (marker ``citus``; see tests/conftest.py), not
skipped. Citus is a test server only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from support.helpers import pg_params

import sqltrack

CITUS_DSN_ENV = "SQLTRACK_TEST_CITUS_DSN"
CITUS_DSN = os.environ.get(CITUS_DSN_ENV)

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


@pytest.fixture(scope="module")
def citus_dsn() -> str:
    """The coordinator's DSN; a loud failure when it is no Citus coordinator with 2+ workers."""
    assert CITUS_DSN
    try:
        with psycopg.connect(CITUS_DSN, autocommit=True, connect_timeout=10) as conn:
            if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchall():
                pytest.fail(f"{CITUS_DSN_ENV}={CITUS_DSN!r}: no citus extension in this "
                            "database (not a Citus coordinator)", pytrace=False)
            ((coordinator,),) = conn.execute("SELECT citus_is_coordinator()").fetchall()
            ((workers,),) = conn.execute("SELECT count(*) FROM citus_get_active_worker_nodes()"
                                         ).fetchall()
    except psycopg.Error as error:
        pytest.fail(f"{CITUS_DSN_ENV}={CITUS_DSN!r}: cannot use it: {error}", pytrace=False)
    if not coordinator or workers < 2:
        pytest.fail(f"{CITUS_DSN_ENV}={CITUS_DSN!r}: coordinator={coordinator}, "
                    f"{workers} active workers (want a coordinator with 2+)", pytrace=False)
    return CITUS_DSN


@pytest.fixture
def citus_kwargs(citus_dsn: str) -> Iterator[dict[str, Any]]:
    """A fresh schema on the coordinator (dropped after, its shards too)."""
    name = "c_" + uuid.uuid4().hex[:12]
    yield {"engine": "postgres", **pg_params(citus_dsn), "schema": name}
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def raw(kw: dict[str, Any], sql: str, params: Any = ()) -> list[tuple]:
    conninfo = {k: v for k, v in kw.items() if k not in ("engine", "schema")}
    with psycopg.connect(**conninfo, autocommit=True,
                         options=f"-c search_path={kw['schema']},public") as conn:
        return conn.execute(sql, params).fetchall()


def citus_tables(kw: dict[str, Any]) -> dict[str, tuple[str, str, int]]:
    rows = raw(kw, "SELECT c.relname, t.citus_table_type, t.distribution_column, "
               "t.colocation_id FROM citus_tables t JOIN pg_class c ON c.oid = t.table_name "
               "WHERE c.relnamespace = %s::regnamespace", [kw["schema"]])
    return {name: (kind, column, colocation) for name, kind, column, colocation in rows}


def rows_per_worker(kw: dict[str, Any], table: str) -> dict[int, int]:
    """How many of ``table``'s rows each worker's shards hold (by worker port)."""
    found = raw(kw, "SELECT s.nodeport, r.result::bigint FROM run_command_on_shards("
                "%s, 'SELECT count(*) FROM %%s') AS r JOIN citus_shards s "
                "ON s.shardid = r.shardid WHERE r.success", [f"{kw['schema']}.{table}"])
    counts: dict[int, int] = {}
    for port, count in found:
        counts[port] = counts.get(port, 0) + count
    return counts


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
