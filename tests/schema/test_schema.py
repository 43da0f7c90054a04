"""Migration scripts: ``await sqltrack.setup(client, paths)`` applies each script once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import sqltrack


def script(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


async def table_names(client) -> set[str]:
    if client.engine == "sqlite":
        rows = await client.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await client.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()"
        )
    return {r[0] for r in rows}


async def applied(client) -> list[str]:
    rows = await client.query(
        "SELECT name FROM applied_migrations WHERE name NOT IN (%s, %s, %s) ORDER BY name",
        ["sqltrack:base", "sqltrack:schema:7", "base.sql"],
    )
    return [r[0] for r in rows]


async def metric_column_types(client) -> dict[str, str]:
    if client.engine == "sqlite":
        rows = await client.execute("PRAGMA table_info(metrics)")
        return {r[1]: r[2].upper() for r in rows}
    rows = await client.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'metrics'"
    )
    return dict(rows)


async def test_setup_applies_in_order_once(client, tmp_path):
    # Each script depends on the one before it, so order matters.
    s1 = script(tmp_path, "001_table.sql", "CREATE TABLE user_log (n INTEGER, note TEXT);\n")
    s2 = script(tmp_path, "002_rows.sql",
                "INSERT INTO user_log VALUES (1, 'first');\nINSERT INTO user_log VALUES (2, 'x');")
    s3 = script(tmp_path, "003_more.sql", "UPDATE user_log SET note = 'second' WHERE n = 2;")
    result = await sqltrack.setup(client, [s1, str(s2), s3])
    assert result == ["001_table.sql", "002_rows.sql", "003_more.sql"]
    assert await client.execute("SELECT n, note FROM user_log ORDER BY n") == [
        (1, "first"),
        (2, "second"),
    ]
    assert await applied(client) == ["001_table.sql", "002_rows.sql", "003_more.sql"]

    # Second call: nothing applied, nothing run twice (the INSERTs would duplicate rows).
    assert await sqltrack.setup(client, [s1, s2, s3]) == []
    assert await client.execute("SELECT count(*) FROM user_log") == [(2,)]
    assert await applied(client) == ["001_table.sql", "002_rows.sql", "003_more.sql"]


async def test_setup_new_script_after_earlier_ones(client, tmp_path):
    s1 = script(tmp_path, "a.sql", "CREATE TABLE user_a (x INTEGER);")
    assert await sqltrack.setup(client, [s1]) == ["a.sql"]
    s2 = script(tmp_path, "b.sql", "INSERT INTO user_a VALUES (7);")
    assert await sqltrack.setup(client, [s1, s2]) == ["b.sql"]
    assert await client.execute("SELECT x FROM user_a") == [(7,)]


async def test_setup_recorded_by_file_name(client, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = script(tmp_path / "one", "010.sql", "CREATE TABLE user_n (x INTEGER);")
    same_name = script(tmp_path / "two", "010.sql", "CREATE TABLE user_other (x INTEGER);")
    assert await sqltrack.setup(client, [first]) == ["010.sql"]
    assert await sqltrack.setup(client, [same_name]) == []
    tables = await table_names(client)
    assert "user_n" in tables and "user_other" not in tables


async def test_setup_empty_list(client):
    assert await sqltrack.setup(client, []) == []
    assert await applied(client) == []


async def test_failing_script_rolled_back_earlier_kept(client, tmp_path):
    good = script(tmp_path, "001_good.sql", "CREATE TABLE user_good (x INTEGER);")
    bad = script(
        tmp_path,
        "002_bad.sql",
        "CREATE TABLE user_partial (x INTEGER);\n"
        "INSERT INTO user_good VALUES (1);\n"
        "INSERT INTO no_such_table VALUES (1);\n",
    )
    later = script(tmp_path, "003_later.sql", "CREATE TABLE user_later (x INTEGER);")
    with pytest.raises(sqltrack.errors.DatabaseError) as info:
        await sqltrack.setup(client, [good, bad, later])
    assert "no_such_table" in str(info.value)
    tables = await table_names(client)
    assert "user_good" in tables
    assert "user_partial" not in tables  # the failing script's partial effects are gone
    assert "user_later" not in tables  # scripts after the failure are not run
    assert await client.execute("SELECT count(*) FROM user_good") == [(0,)]
    assert await applied(client) == ["001_good.sql"]

    # Fix the script: it is applied on the next call, the good one is skipped.
    script(tmp_path, "002_bad.sql", "CREATE TABLE user_partial (x INTEGER);")
    assert await sqltrack.setup(client, [good, bad, later]) == ["002_bad.sql", "003_later.sql"]
    assert {"user_partial", "user_later"} <= await table_names(client)


async def test_missing_script_file_raises(client, tmp_path):
    with pytest.raises(FileNotFoundError):
        await sqltrack.setup(client, [tmp_path / "absent.sql"])
    assert await applied(client) == []


async def test_concurrent_setup_applies_each_once(client_kwargs, tmp_path):
    scripts = [
        script(tmp_path, "001.sql", "CREATE TABLE user_c (x INTEGER);"),
        script(tmp_path, "002.sql", "INSERT INTO user_c VALUES (1);"),
        script(tmp_path, "003.sql", "INSERT INTO user_c VALUES (2);"),
    ]
    clients = [sqltrack.AsyncClient(**client_kwargs) for _ in range(3)]
    try:
        results = await asyncio.gather(*(sqltrack.setup(c, scripts) for c in clients))
        done = sorted(name for result in results for name in result)
        assert done == ["001.sql", "002.sql", "003.sql"]  # each applied by exactly one
        assert await clients[0].execute("SELECT x FROM user_c ORDER BY x") == [(1,), (2,)]
        assert await applied(clients[1]) == ["001.sql", "002.sql", "003.sql"]
    finally:
        for c in clients:
            await c.close()


async def test_user_declared_metric_column_used_by_add_metrics(client, run, tmp_path):
    column_type = "REAL" if client.engine == "sqlite" else "DOUBLE PRECISION"
    migration = script(
        tmp_path, "100_lr.sql", f"ALTER TABLE metrics ADD COLUMN lr_custom {column_type};"
    )
    await run.add_metrics({"loss": 1.0}, step=1)  # fills the client's column cache first
    assert await sqltrack.setup(client, [migration]) == ["100_lr.sql"]
    await run.add_metrics({"lr_custom": 0.25}, step=2)
    await run.add_metrics({"lr_custom": 3}, step=3)  # an int fits a float column
    rows = await client.query(
        "SELECT step, lr_custom, loss FROM metrics WHERE run_id = %s ORDER BY step", [run.id]
    )
    assert rows == [(1, None, 1.0), (2, 0.25, None), (3, 3.0, None)]
    types = await metric_column_types(client)
    expected = "REAL" if client.engine == "sqlite" else "double precision"
    assert types["lr_custom"] == expected
    with pytest.raises(sqltrack.MetricTypeError):
        await run.add_metrics({"lr_custom": "high"}, step=4)
    assert await client.query(
        "SELECT count(*) FROM metrics WHERE run_id = %s AND step = 4", [run.id]
    ) == [(0,)]


async def test_user_declared_int_column_rejects_float(client, run, tmp_path):
    await run.add_metrics({"loss": 1.0}, step=1)
    migration = script(tmp_path, "101_epochs.sql",
                       "ALTER TABLE metrics ADD COLUMN epoch_custom BIGINT;")
    await sqltrack.setup(client, [migration])
    await run.add_metrics({"epoch_custom": 5}, step=2)
    with pytest.raises(sqltrack.MetricTypeError):
        await run.add_metrics({"epoch_custom": 5.5}, step=3)
    rows = await client.query(
        "SELECT step, epoch_custom FROM metrics WHERE run_id = %s ORDER BY step", [run.id]
    )
    assert rows == [(1, None), (2, 5)]


async def test_other_client_sees_declared_column(client_kwargs, tmp_path):
    """A client whose column cache predates another client's migration still writes."""
    a = sqltrack.AsyncClient(**client_kwargs)
    b = sqltrack.AsyncClient(**client_kwargs)
    try:
        exp = await sqltrack.AsyncExperiment.create(a, name="e")
        run_b = await sqltrack.AsyncRun.create(b, exp.id)
        await run_b.add_metrics({"loss": 0.5}, step=1)  # b caches the columns now
        column_type = "REAL" if a.engine == "sqlite" else "DOUBLE PRECISION"
        migration = script(tmp_path, "200.sql",
                           f"ALTER TABLE metrics ADD COLUMN declared_x {column_type};")
        assert await sqltrack.setup(a, [migration]) == ["200.sql"]
        await run_b.add_metrics({"declared_x": 1.5}, step=2)
        rows = await a.query(
            "SELECT step, declared_x FROM metrics WHERE run_id = %s ORDER BY step", [run_b.id]
        )
        assert rows == [(1, None), (2, 1.5)]
        types = await metric_column_types(a)
        assert types["declared_x"] in ("REAL", "double precision")
    finally:
        await a.close()
        await b.close()


async def test_script_statements_sharing_lines_and_semicolons_in_bodies(client, tmp_path):
    """Statements on one line, semicolons in strings, comments and trigger/function bodies."""
    if client.engine == "sqlite":
        body = (
            "CREATE TRIGGER user_audit AFTER INSERT ON user_s BEGIN "
            "INSERT INTO user_audit_log VALUES (new.x || ';'); "
            "INSERT INTO user_audit_log VALUES ('second; stmt'); END;\n"
        )
    else:
        body = (
            "CREATE FUNCTION user_audit_fn() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN INSERT INTO user_audit_log VALUES (NEW.x || ';'); "
            "INSERT INTO user_audit_log VALUES ('second; stmt'); RETURN NEW; END $$;\n"
            "CREATE TRIGGER user_audit AFTER INSERT ON user_s "
            "FOR EACH ROW EXECUTE FUNCTION user_audit_fn();\n"
        )
    migration = script(
        tmp_path,
        "300_mixed.sql",
        "CREATE TABLE user_s (x TEXT); CREATE TABLE user_audit_log (y TEXT);\n"
        "-- a comment; with a semicolon\n"
        "/* a block comment; also */ INSERT INTO user_s VALUES ('a;b');\n"
        + body
        + "INSERT INTO user_s VALUES ('c'); -- trailing comment",
    )
    assert await sqltrack.setup(client, [migration]) == ["300_mixed.sql"]
    assert await client.execute("SELECT x FROM user_s ORDER BY x") == [("a;b",), ("c",)]
    assert sorted(await client.execute("SELECT y FROM user_audit_log")) == [
        ("c;",),
        ("second; stmt",),
    ]
