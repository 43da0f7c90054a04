"""A sync's target transaction cancelled by the server's deadlock check runs again
(``sqltrack.copy.conflicts``), a bounded number of times, and never inside a caller's block.

The deadlocks are real: the test's transaction takes row 1, a raw connection holding row 2
waits for row 1, then the test's transaction asks for row 2. Only the test's session checks
for deadlocks soon (``deadlock_timeout`` 100 ms there, a minute in the other), so it is
always the one cancelled (SQLSTATE 40P01), as a sync was by Citus's distributed check.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from support.helpers import _CLIENT_ONLY, read_raw, write_raw
from support.waiting import until

from sqltrack.copy import conflicts
from sqltrack.copy.conflicts import ConflictError, in_transaction
from sqltrack.errors import DatabaseError, UniqueViolation

postgres_only = pytest.mark.parametrize("engine", ["postgres"], indirect=True)


def _connect(kw: dict[str, Any]) -> psycopg.Connection:
    conninfo = {k: v for k, v in kw.items()
                if k not in _CLIENT_ONLY and not k.startswith(("pool_", "flush_"))}
    return psycopg.connect(**conninfo, options=f"-c search_path={kw['schema']}")


class _Other:
    """A raw session that holds row 2 of ``pair`` and, when told, waits for row 1."""

    def __init__(self, kw: dict[str, Any]) -> None:
        self.conn = _connect(kw)
        self.conn.execute("SET deadlock_timeout = '60s'")
        self.conn.execute("UPDATE pair SET v = v + 10 WHERE id = 2")
        self.pid = self.conn.info.backend_pid
        self.thread: threading.Thread | None = None
        self.watch = _connect(kw)
        self.watch.autocommit = True

    def want_row_1(self) -> None:
        def update() -> None:
            self.conn.execute("UPDATE pair SET v = v + 10 WHERE id = 1")
            self.conn.commit()

        self.thread = threading.Thread(target=update)
        self.thread.start()

    def waiting(self) -> bool:
        row = self.watch.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                 [self.pid]).fetchone()
        return row is not None and row[0] == "Lock"

    def settle(self) -> None:
        """Wait (bounded) until its update of row 1 is committed."""
        if self.thread is not None:
            self.thread.join(60)
            assert not self.thread.is_alive(), "the other session did not commit"

    def close(self) -> None:
        self.settle()
        self.conn.close()
        self.watch.close()


class _Pair:
    """Makes the raw sessions of a test (``pair()``); ``pair.settle()``: all committed."""

    def __init__(self, kw: dict[str, Any]) -> None:
        self.kw = kw
        self.others: list[_Other] = []

    def __call__(self) -> _Other:
        self.others.append(_Other(self.kw))
        return self.others[-1]

    def settle(self) -> None:
        for other in self.others:
            other.settle()


@pytest.fixture
async def pair(client, client_kwargs):
    """The table ``pair`` (rows 1 and 2, ``v`` 0) and a raw session to deadlock with."""
    await client.open()  # makes the schema
    write_raw(client_kwargs, "CREATE TABLE pair (id integer PRIMARY KEY, v integer NOT NULL)",
              "INSERT INTO pair VALUES (1, 0), (2, 0)")
    made = _Pair(client_kwargs)
    yield made
    for other in made.others:
        other.close()


def _deadlocking(client, pair, attempts: list[int], times: int):
    """Work that adds 1 to both rows, and meets a deadlock on its first ``times`` runs."""
    async def work() -> int:
        attempts.append(1)
        await client.query("SET LOCAL deadlock_timeout = '100ms'")
        await client.query("UPDATE pair SET v = v + 1 WHERE id = 1")
        if len(attempts) <= times:
            other = pair()
            other.want_row_1()
            await until(other.waiting, "the other session waits for row 1")
        await client.query("UPDATE pair SET v = v + 1 WHERE id = 2")
        return len(attempts)

    return work


@postgres_only
async def test_a_transaction_cancelled_by_a_deadlock_runs_again(client, client_kwargs, pair):
    attempts: list[int] = []
    assert await in_transaction(client, _deadlocking(client, pair, attempts, 1)) == 2
    # The cancelled run left nothing; the other session and the second run each added once.
    pair.settle()
    assert read_raw(client_kwargs, "SELECT id, v FROM pair ORDER BY id") == [(1, 11), (2, 11)]


@postgres_only
async def test_cancelled_every_time_it_stops_with_a_conflict_error(
    client, client_kwargs, pair, monkeypatch
):
    monkeypatch.setattr(conflicts, "ATTEMPTS", 2)
    attempts: list[int] = []
    with pytest.raises(ConflictError, match="cancelled this sync's transaction 2 times") as error:
        await in_transaction(client, _deadlocking(client, pair, attempts, 2))
    assert error.value.sqlstate == "40P01" and error.value.transient
    assert len(attempts) == 2
    pair.settle()
    assert read_raw(client_kwargs, "SELECT id, v FROM pair ORDER BY id") == [(1, 20), (2, 20)]


@postgres_only
async def test_inside_a_callers_block_it_runs_once(client, client_kwargs, pair):
    attempts: list[int] = []
    with pytest.raises(DatabaseError) as error:
        async with client:
            await in_transaction(client, _deadlocking(client, pair, attempts, 1))
    assert error.value.sqlstate == "40P01" and not isinstance(error.value, ConflictError)
    assert len(attempts) == 1
    pair.settle()
    assert read_raw(client_kwargs, "SELECT id, v FROM pair ORDER BY id") == [(1, 10), (2, 10)]


async def test_other_errors_are_raised_at_once(client, client_kwargs):
    await client.open()
    write_raw(client_kwargs, "CREATE TABLE pair (id integer PRIMARY KEY, v integer NOT NULL)",
              "INSERT INTO pair VALUES (1, 0)")
    attempts: list[int] = []

    async def work() -> None:
        attempts.append(1)
        await client.query("UPDATE pair SET v = v + 1 WHERE id = 1")
        await client.query("INSERT INTO pair VALUES (1, 0)")

    with pytest.raises(UniqueViolation):
        await in_transaction(client, work)
    assert len(attempts) == 1
    assert read_raw(client_kwargs, "SELECT id, v FROM pair") == [(1, 0)]

    async def nothing() -> str:
        return "done"

    assert await in_transaction(client, nothing) == "done"
