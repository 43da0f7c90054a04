"""Upgrade step ``system_metrics_ranks``: a database of the schema before issue 21
(``system_metrics`` keyed ``(run_id, name, time)``, mark ``sqltrack:schema:2``) gets
``rank`` and ``host`` in its key, in place, with every row kept, on both engines."""

from __future__ import annotations

from support.helpers import assert_nothing_to_upgrade, read_raw

import sqltrack
from sqltrack.model import system_metrics as system

#: The table as the schema before made it (sqltrack/schema/*.sql at schema:2).
OLD_TABLE = {
    "sqlite": "CREATE TABLE system_metrics (run_id INTEGER NOT NULL REFERENCES runs (id) "
              "ON DELETE CASCADE, time TEXT NOT NULL, name TEXT NOT NULL, value REAL, "
              "PRIMARY KEY (run_id, name, time)) WITHOUT ROWID",
    "postgres": "CREATE TABLE system_metrics (run_id BIGINT NOT NULL REFERENCES runs (id) "
                "ON DELETE CASCADE, time TIMESTAMPTZ NOT NULL, name TEXT NOT NULL, "
                "value DOUBLE PRECISION, PRIMARY KEY (run_id, name, time))",
}
OLD_ROWS = [("2025-01-01T00:00:00+00:00", "cpu_percent", 1.0),
            ("2025-01-01T00:00:10+00:00", "cpu_percent", 2.0),
            ("2025-01-01T00:00:00+00:00", "process_rss_bytes", 3e8)]


async def _old_database(kw) -> int:
    """A database at the schema before (made now, then turned back), with samples."""
    client = sqltrack.AsyncClient(**kw)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="before")
        run = await exp.get_run()
        async with client:
            await client.query("DROP TABLE system_metrics")
            await client.query(OLD_TABLE[kw["engine"]])
            for stamp, name, value in OLD_ROWS:
                await client.query("INSERT INTO system_metrics (run_id, time, name, value) "
                                   "VALUES (%s, %s, %s, %s)", [run.id, stamp, name, value])
            await client.query("UPDATE applied_migrations SET name = 'sqltrack:schema:2' "
                               "WHERE name = 'sqltrack:schema:7'")
        return run.id
    finally:
        await client.close()


def _columns(kw) -> list[str]:
    if kw["engine"] == "sqlite":
        return [r[1] for r in read_raw(kw, "PRAGMA table_info(system_metrics)")]
    return [r[0] for r in read_raw(
        kw, "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'system_metrics' ORDER BY ordinal_position", [kw["schema"]])]


def _key(kw) -> list[str]:
    if kw["engine"] == "sqlite":
        return [r[1] for r in sorted((r[5], r[1]) for r in read_raw(
            kw, "PRAGMA table_info(system_metrics)") if r[5])]
    return [r[0] for r in read_raw(
        kw, "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
        [f'"{kw["schema"]}".system_metrics'])]


async def test_system_metrics_upgraded_in_place(client_kwargs):
    kw = client_kwargs
    run_id = await _old_database(kw)
    assert "rank" not in _columns(kw)

    client = sqltrack.AsyncClient(**kw)
    try:
        await client.execute("SELECT 1")
        assert client.schema_outcome is not None
        assert _columns(kw) == ["run_id", "time", "name", "value", "rank", "host"]
        assert _key(kw) == ["run_id", "rank", "host", "name", "time"]
        rows = read_raw(kw, "SELECT name, value, rank, host FROM system_metrics "
                        "WHERE run_id = %s ORDER BY name, time", [run_id])
        assert [tuple(r) for r in rows] == [("cpu_percent", 1.0, 0, ""),
                                            ("cpu_percent", 2.0, 0, ""),
                                            ("process_rss_bytes", 3e8, 0, "")]
        await system.write_sample(client, run_id, {"cpu_percent": 7.0}, rank=1, host="n")
        assert read_raw(kw, "SELECT COUNT(*) FROM system_metrics WHERE rank = 1") == [(1,)]
        marks = {r[0] for r in read_raw(kw, "SELECT name FROM applied_migrations")}
        assert "sqltrack:schema:7" in marks
        # Deleting the run still deletes its samples (the rebuilt table's foreign key).
        await client.query("DELETE FROM runs WHERE id = %s", [run_id])
        assert read_raw(kw, "SELECT COUNT(*) FROM system_metrics") == [(0,)]
    finally:
        await client.close()
    await assert_nothing_to_upgrade(kw)
