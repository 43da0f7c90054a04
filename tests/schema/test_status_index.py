"""Schema 6: the index ``runs (experiment_id, status, id)`` (the runs table of an
experiment filtered or sorted by status reads it in order), made on a new database and
added in place to one of schema 5, with its rows kept, on both engines."""

from __future__ import annotations

import psycopg
import pytest
from support.helpers import assert_nothing_to_upgrade, read_raw, runs_then_downgrade

import sqltrack

INDEX = "runs_experiment_status_idx"


def _index_columns(kw) -> list[str]:
    if kw["engine"] == "sqlite":
        return [r[2] for r in read_raw(kw, f"PRAGMA index_info({INDEX})")]
    return [r[0] for r in read_raw(
        kw, "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE c.relname = %s AND c.relnamespace = %s::regnamespace "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)", [INDEX, kw["schema"]])]


async def test_new_database_has_the_status_index(client_kwargs):
    client = sqltrack.AsyncClient(**client_kwargs)
    try:
        await client.execute("SELECT 1")
    finally:
        await client.close()
    assert _index_columns(client_kwargs) == ["experiment_id", "status", "id"]
    marks = {r[0] for r in read_raw(client_kwargs, "SELECT name FROM applied_migrations")}
    assert "sqltrack:schema:7" in marks


async def test_schema_5_gets_the_index_in_place(client_kwargs):
    kw = client_kwargs
    ids = await runs_then_downgrade(kw, INDEX, "sqltrack:schema:5")
    assert _index_columns(kw) == []
    client = sqltrack.AsyncClient(**kw)
    try:
        await client.execute("SELECT 1")
        assert client.schema_outcome is not None and "status" in client.schema_outcome
        assert _index_columns(kw) == ["experiment_id", "status", "id"]
        marks = {r[0] for r in read_raw(kw, "SELECT name FROM applied_migrations")}
        assert {"sqltrack:schema:7", "sqltrack:schema:5"} <= marks
        assert [r[0] for r in read_raw(kw, "SELECT id FROM runs ORDER BY id")] == ids
    finally:
        await client.close()
    await assert_nothing_to_upgrade(kw)


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
async def test_sqlite_reads_a_status_page_through_the_index(client_kwargs):
    """SQLite's plan for a status page (PostgreSQL's depends on the table's statistics:
    the next test's)."""
    client = sqltrack.AsyncClient(**client_kwargs)
    try:
        await client.execute("SELECT 1")
    finally:
        await client.close()
    plan = read_raw(client_kwargs, "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE "
                    "experiment_id = 1 ORDER BY status, id LIMIT 100 OFFSET 100")
    text = " ".join(str(r[-1]) for r in plan)
    assert INDEX in text and "TEMP B-TREE" not in text, text


async def test_a_status_page_of_the_table_is_read_through_the_index(client_kwargs):
    """The runs table's own ORDER BY for a status sort, either way, reads the index in
    order: no sort (SQLite's plan; PostgreSQL's with sequential and bitmap scans off, as a large
    table would plan it). ``NULLS LAST`` on the never-NULL status would stop PostgreSQL
    from reading the index backwards."""
    from sqltrack.ui import summaries, table_sql

    kw = client_kwargs
    client = sqltrack.AsyncClient(**kw)
    try:
        await client.execute("SELECT 1")
    finally:
        await client.close()
    plan = summaries.Plan(sort=table_sql.status_key(kw["engine"]))
    for descending in (False, True):
        order, params = summaries._order(plan, descending)
        query = ("SELECT r.id FROM (SELECT * FROM runs WHERE experiment_id = 1) r "
                 f"ORDER BY {order} LIMIT 100 OFFSET 100")
        if kw["engine"] == "sqlite":
            text = " ".join(str(r[-1]) for r in read_raw(kw, "EXPLAIN QUERY PLAN " + query))
            assert INDEX in text and "TEMP B-TREE" not in text, (descending, text)
            continue
        conninfo = {k: kw[k] for k in ("host", "port", "user", "dbname", "password") if k in kw}
        with psycopg.connect(**conninfo, options=f"-c search_path={kw['schema']}") as conn:
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET enable_bitmapscan = off")
            text = " ".join(r[0] for r in conn.execute("EXPLAIN " + query).fetchall())
        assert INDEX in text and "Sort" not in text, (descending, text)


def test_postgres_base_script_splits_into_whole_statements():
    """An upgrade runs the PostgreSQL base script statement by statement (Citus refuses a
    new index on a distributed table sent in a multi-statement query): the pieces are the
    whole script, each one statement ending in ``;`` (a ``DO $$ ... $$`` body kept whole)."""
    from sqltrack.engines.dialects import PostgresDialect
    from sqltrack.schema import base_schema_sql

    dialect = PostgresDialect()
    script = base_schema_sql(dialect.schema_script)
    pieces = dialect.script_statements(script)
    assert "\n".join(pieces).split() == script.split()
    bodies = [p for p in pieces if "$$" in p]
    assert bodies and all(p.count("$$") % 2 == 0 for p in bodies)
    assert all(p.rstrip().endswith(";") for p in pieces)
    assert any("CREATE INDEX IF NOT EXISTS runs_experiment_status_idx" in p for p in pieces)
