"""One error tree: the same operation raises the same sqltrack exception on both engines.

Driver errors are translated where the engine runs a statement, for raw SQL given
to the client too; the driver's exception is kept as ``__cause__``.
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

import sqltrack
from sqltrack import errors
from sqltrack.errors import (
    ConnectionLost,
    DatabaseError,
    ForeignKeyViolation,
    IntegrityError,
    SqltrackError,
    UniqueViolation,
)
from sqltrack.metrics import buffer as buffering

DRIVER_ERRORS = (sqlite3.Error, psycopg.Error)


def ph(client: sqltrack.AsyncClient) -> str:
    return "%s" if client.engine == "postgres" else "?"


def test_the_tree():
    assert issubclass(UniqueViolation, IntegrityError)
    assert issubclass(ForeignKeyViolation, IntegrityError)
    assert issubclass(IntegrityError, DatabaseError)
    assert issubclass(ConnectionLost, DatabaseError)
    assert issubclass(DatabaseError, SqltrackError)
    assert issubclass(errors.PoolTimeout, TimeoutError)
    assert issubclass(errors.MetricWriteError, SqltrackError)
    # moved from buffering.py; the old name stays importable
    assert buffering.MetricWriteError is errors.MetricWriteError


async def test_duplicate_experiment_name_by_raw_sql(client):
    await sqltrack.AsyncExperiment.create(client, name="taken")
    with pytest.raises(UniqueViolation) as caught:
        await client.execute(f"INSERT INTO experiments (name) VALUES ({ph(client)})", ["taken"])
    assert isinstance(caught.value.__cause__, DRIVER_ERRORS)
    assert "experiments" in str(caught.value) or "name" in str(caught.value)
    assert await client.query("SELECT count(*) FROM experiments") == [(1,)]


async def test_duplicate_in_a_block_rolls_the_block_back(client):
    with pytest.raises(UniqueViolation):
        async with client:
            await client.query("INSERT INTO experiments (name) VALUES (%s)", ["a"])
            await client.query("INSERT INTO experiments (name) VALUES (%s)", ["a"])
    assert await client.query("SELECT count(*) FROM experiments") == [(0,)]


async def test_executemany_duplicates(client):
    with pytest.raises(UniqueViolation):
        await client.executemany(
            f"INSERT INTO experiments (name) VALUES ({ph(client)})", [["x"], ["x"]]
        )


async def test_missing_referenced_row(client):
    with pytest.raises(ForeignKeyViolation) as caught:
        await client.execute(f"INSERT INTO runs (experiment_id) VALUES ({ph(client)})", [987654])
    assert isinstance(caught.value.__cause__, DRIVER_ERRORS)


async def test_sql_error_is_a_database_error(client):
    with pytest.raises(DatabaseError) as caught:
        await client.execute("SELECT * FROM no_such_table")
    assert not isinstance(caught.value, IntegrityError)
    assert "no_such_table" in str(caught.value)
    assert isinstance(caught.value.__cause__, DRIVER_ERRORS)
    with pytest.raises(DatabaseError):
        await client.executescript("CREATE TABLE t (x INTEGER); INSERT INTO nowhere VALUES (1);")


async def test_sqlstate_kept_on_postgres(client):
    await sqltrack.AsyncExperiment.create(client, name="taken")
    with pytest.raises(UniqueViolation) as caught:
        await client.query("INSERT INTO experiments (name) VALUES (%s)", ["taken"])
    assert caught.value.sqlstate == ("23505" if client.engine == "postgres" else None)


async def test_rename_to_a_taken_name(client, experiment):
    await sqltrack.AsyncExperiment.create(client, name="other")
    with pytest.raises(UniqueViolation):
        await experiment.set_name("other")


async def test_unreachable_database_is_connection_lost(engine, tmp_path):
    if engine == "sqlite":
        (tmp_path / "a-directory.db").mkdir()  # a directory cannot be opened as a database
        kwargs = {"engine": "sqlite", "dbpath": str(tmp_path / "a-directory.db")}
    else:  # nothing listens on port 1
        kwargs = {"engine": "postgres", "host": "127.0.0.1", "port": "1", "user": "x",
                  "pool_timeout": 2}
    client = sqltrack.AsyncClient(**kwargs)
    try:
        with pytest.raises(ConnectionLost) as caught:
            await client.execute("SELECT 1")
        assert isinstance(caught.value.__cause__, DRIVER_ERRORS)
    finally:
        await client.close()
