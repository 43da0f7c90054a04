"""Schema 7: PostgreSQL's index of the runs' names, ``runs (experiment_id, <name's number>,
<name's text>, id)`` (the expressions of the runs table's name key, ``table_sql``), so a
page of the table sorted by name reads it in order instead of sorting every run; made on
a new database and added in place to one of schema 6 (both engines take the new mark;
SQLite's schema has no such index: its name sort is fast enough without)."""

from __future__ import annotations

import psycopg
import pytest
from support.helpers import assert_nothing_to_upgrade, read_raw, runs_then_downgrade

import sqltrack
from sqltrack.schema import state

INDEX = "runs_experiment_name_idx"


def _has_index(kw) -> bool:
    if kw["engine"] == "sqlite":
        return bool(read_raw(kw, "SELECT name FROM sqlite_master WHERE name = ?", [INDEX]))
    return bool(read_raw(kw, "SELECT 1 FROM pg_class WHERE relname = %s "
                         "AND relnamespace = %s::regnamespace", [INDEX, kw["schema"]]))


async def test_new_database_has_the_name_index(client_kwargs):
    client = sqltrack.AsyncClient(**client_kwargs)
    try:
        await client.execute("SELECT 1")
    finally:
        await client.close()
    assert state.SCHEMA_MARK == "sqltrack:schema:7"
    assert _has_index(client_kwargs) == (client_kwargs["engine"] == "postgres")
    marks = {r[0] for r in read_raw(client_kwargs, "SELECT name FROM applied_migrations")}
    assert "sqltrack:schema:7" in marks


async def test_schema_6_gets_the_name_index_in_place(client_kwargs):
    kw = client_kwargs
    ids = await runs_then_downgrade(kw, INDEX, "sqltrack:schema:6")
    assert not _has_index(kw)
    client = sqltrack.AsyncClient(**kw)
    try:
        await client.execute("SELECT 1")
        assert client.schema_outcome is not None and "name" in client.schema_outcome
        assert _has_index(kw) == (kw["engine"] == "postgres")
        marks = {r[0] for r in read_raw(kw, "SELECT name FROM applied_migrations")}
        assert {"sqltrack:schema:7", "sqltrack:schema:6"} <= marks
        assert [r[0] for r in read_raw(kw, "SELECT id FROM runs ORDER BY id")] == ids
    finally:
        await client.close()
    await assert_nothing_to_upgrade(kw)


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
async def test_a_name_page_of_the_table_is_read_through_the_index(client_kwargs):
    """The runs table's sort of every run for a page by name (ascending: the index's
    order, NULLs last) reads the index in order, no sort (with sequential and bitmap
    scans off, as a large table would plan it); descending still sorts (a backward read
    would put the runs without a name first)."""
    from sqltrack.ui import summaries, table_sql

    kw = client_kwargs
    client = sqltrack.AsyncClient(**kw)
    try:
        await client.execute("SELECT 1")
        dialect = client.dialect
    finally:
        await client.close()
    plan = summaries.Plan(sort=table_sql.fixed_key("postgres", "name"))
    runs, params = summaries._runs_sql(None, None)
    conninfo = {k: kw[k] for k in ("host", "port", "user", "dbname", "password") if k in kw}
    for descending in (False, True):
        parts, all_params, order = summaries._sorted_runs(plan, descending, runs, params)
        query = ("SELECT r.id FROM " + "".join(str(p) for p in parts)
                 + f" ORDER BY {order} LIMIT 100 OFFSET 100")
        values = [1 if p is summaries.EXPERIMENT else p for p in all_params]
        with psycopg.connect(**conninfo, options=f"-c search_path={kw['schema']}") as conn:
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET enable_bitmapscan = off")
            text = psycopg.ClientCursor(conn).mogrify(dialect.sql(query), values)
            shown = " ".join(r[0] for r in conn.execute("EXPLAIN " + text).fetchall())
        if descending:
            assert "Sort" in shown, shown
        else:
            assert INDEX in shown and "Sort" not in shown, shown
