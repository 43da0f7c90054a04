"""SQLite through aiosqlite: a small pool of connections, each with its worker thread.

Connections run in WAL mode with ``synchronous=NORMAL``, a busy timeout and
foreign keys on. Writes open ``BEGIN IMMEDIATE`` transactions, so concurrent
writers wait for the lock (up to the busy timeout) instead of failing with
"database is locked" half-way through a transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import PoolTimeout, RunNotFound
from . import base
from .base import Engine

BUSY_TIMEOUT_SECONDS = 60.0
_PRAGMAS = (
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
_KIND_TYPES = {
    "bool": "BOOLEAN",
    "int": "INTEGER",
    "float": "REAL",
    "str": "TEXT",
    "datetime": "TIMESTAMP",
}
_TYPE_KINDS = {
    "BOOLEAN": "bool",
    "BOOL": "bool",
    "INTEGER": "int",
    "INT": "int",
    "BIGINT": "int",
    "REAL": "float",
    "DOUBLE": "float",
    "DOUBLE PRECISION": "float",
    "FLOAT": "float",
    "TEXT": "str",
    "TIMESTAMP": "datetime",
    "DATETIME": "datetime",
}


def _json_merge(old: str | None, patch: str) -> str:
    merged = json.loads(old) if old else {}
    if not isinstance(merged, dict):
        merged = {}
    merged.update(json.loads(patch))
    return json.dumps(merged)


def _json_remove(old: str | None, keys: str) -> str | None:
    if old is None:
        return None
    value = json.loads(old)
    if isinstance(value, dict):
        for key in json.loads(keys):
            value.pop(key, None)
    return json.dumps(value)


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (persistent); retry while another process holds a lock.

    Changing the journal mode does not wait on the busy timeout, so two processes
    opening a new database at once would otherwise see "database is locked".
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    delay = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() in ("wal", "memory"):
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _connect_worker(conn: sqlite3.Connection) -> None:
    _use_wal(conn)
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    conn.create_function("sqltrack_json_merge", 2, _json_merge, deterministic=True)
    conn.create_function("sqltrack_json_remove", 2, _json_remove, deterministic=True)


def _in_worker(conn: aiosqlite.Connection, fn: Callable, *args: Any):
    """Run ``fn(sqlite3_connection, *args)`` in the connection's thread: one hop.

    aiosqlite queues every call to its worker thread; a whole operation (statements
    plus commit) as one queued function costs one hop instead of one per statement.
    """
    return conn._execute(fn, conn._conn, *args)


def _fetch(c: sqlite3.Connection, sql: str, params: Sequence, oneshot: bool) -> list:
    try:
        cursor = c.execute(sql, params)
        rows = cursor.fetchall() if cursor.description else []
        if oneshot and c.in_transaction:
            c.commit()
        return rows
    except BaseException:
        if oneshot and c.in_transaction:
            c.rollback()
        raise


def _executemany(c: sqlite3.Connection, sql: str, rows: Sequence, oneshot: bool) -> None:
    try:
        c.executemany(sql, rows)
        if oneshot and c.in_transaction:
            c.commit()
    except BaseException:
        if oneshot and c.in_transaction:
            c.rollback()
        raise


def _executescript(c: sqlite3.Connection, script: str, oneshot: bool) -> None:
    # sqlite3's executescript commits a pending transaction first; inside a user
    # block we run the statements one by one so they stay in the block's transaction.
    if oneshot:
        c.executescript(script)
        return
    for statement in _split_script(script):
        c.execute(statement)


def _split_script(script: str) -> list[str]:
    # Split at each ';' that ends a complete statement (not one in a string, a
    # comment or a trigger body), so statements sharing a line are split too.
    statements, start = [], 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            statements.append(script[start : index + 1])
            start = index + 1
    if script[start:].strip():
        statements.append(script[start:])
    return statements


def _write_metrics(
    c: sqlite3.Connection,
    upsert: str,
    rows: Sequence[Sequence],
    touch: Sequence | None,
    oneshot: bool,
) -> None:
    """Upsert metric rows (one or many), touch the run, commit when oneshot: one hop."""
    try:
        if len(rows) == 1:
            c.execute(upsert, rows[0])
        else:
            c.executemany(upsert, rows)
        if touch is not None:
            c.execute("UPDATE runs SET time_updated = ? WHERE id = ?", touch)
        if oneshot:
            c.commit()
    except BaseException as error:
        if oneshot and c.in_transaction:
            c.rollback()
        if isinstance(error, sqlite3.IntegrityError) and "FOREIGN KEY" in str(error):
            raise RunNotFound(rows[0][0]) from None
        raise


class _Pool:
    """At most ``max_size`` aiosqlite connections, made on demand, reused idle-first."""

    def __init__(self, factory: Callable, max_size: int, timeout: float) -> None:
        self._factory = factory
        self._idle: list[aiosqlite.Connection] = []
        self._all: list[aiosqlite.Connection] = []
        self._slots = asyncio.Semaphore(max_size)
        self._timeout = timeout

    async def acquire(self) -> aiosqlite.Connection:
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self._timeout)
            except asyncio.TimeoutError:
                raise PoolTimeout(
                    f"no SQLite connection became free within {self._timeout} s "
                    "(raise pool_max_size or pool_timeout)"
                ) from None
        else:
            await self._slots.acquire()
        if self._idle:
            return self._idle.pop()
        try:
            conn = await self._factory()
        except BaseException:
            self._slots.release()
            raise
        self._all.append(conn)
        return conn

    def release(self, conn: aiosqlite.Connection) -> None:
        self._idle.append(conn)
        self._slots.release()

    async def close(self) -> None:
        conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            await conn.close()


class SqliteEngine(Engine):
    name = "sqlite"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.path = settings.params["dbpath"]
        self._pool: _Pool | None = None

    async def _new_connection(self) -> aiosqlite.Connection:
        conn = aiosqlite.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level="IMMEDIATE",
            check_same_thread=False,
        )
        # A forgotten connection must not keep the interpreter from exiting.
        conn._thread.daemon = True
        await conn
        await _in_worker(conn, _connect_worker)
        return conn

    async def open(self) -> None:
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        s = self.settings
        self._pool = _Pool(self._new_connection, s.pool_max_size, s.pool_timeout)
        from ..schema import ensure_base_schema

        conn = await self.acquire()
        try:
            await ensure_base_schema(self, conn)
        except BaseException:
            await self.release(conn)
            await self._pool.close()
            raise
        await self.release(conn)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def acquire(self) -> aiosqlite.Connection:
        return await self._pool.acquire()

    async def release(self, conn: aiosqlite.Connection) -> None:
        if conn.in_transaction:
            await conn.rollback()
        self._pool.release(conn)

    async def begin_block(self, conn: aiosqlite.Connection) -> None:
        return None

    async def end_block(self, conn: aiosqlite.Connection, commit: bool) -> None:
        if commit:
            await conn.commit()
        else:
            await conn.rollback()

    async def commit(self, conn: aiosqlite.Connection) -> None:
        await conn.commit()

    async def rollback(self, conn: aiosqlite.Connection) -> None:
        await conn.rollback()

    async def cursor(self, conn: aiosqlite.Connection) -> aiosqlite.Cursor:
        return await conn.cursor()

    async def fetch(self, conn, sql: str, params: Sequence = (), *, oneshot: bool) -> list:
        return await _in_worker(conn, _fetch, sql, params, oneshot)

    async def executemany(self, conn, sql: str, rows, *, oneshot: bool) -> None:
        await _in_worker(conn, _executemany, sql, rows, oneshot)

    async def executescript(self, conn, script: str, *, oneshot: bool) -> None:
        await _in_worker(conn, _executescript, script, oneshot)

    async def lock_schema(self, conn) -> None:
        """Take the write lock, so one process at a time creates or migrates the schema."""
        await _in_worker(conn, lambda c: c.execute("BEGIN IMMEDIATE"))

    def sql(self, query: str) -> str:
        return _to_qmark(query)

    def quote_ident(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def json_param(self) -> str:
        return "%s"

    def json_merge(self, column: str) -> str:
        return f"sqltrack_json_merge({column}, %s)"

    def json_remove(self, column: str) -> str:
        return f"sqltrack_json_remove({column}, %s)"

    def key_list_param(self, keys: Sequence[str]) -> str:
        return json.dumps(list(keys))

    def timestamp(self, value: datetime) -> str:
        return value.astimezone(timezone.utc).isoformat()

    def metric_value(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return self.timestamp(value)
        # SQLite stores a NaN REAL as NULL; the text 'NaN' keeps it (float('NaN') reads it back).
        if base.is_nan(value):
            return "NaN"
        return value

    def is_foreign_key_error(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.IntegrityError) and "FOREIGN KEY" in str(error)

    def metric_column_type(self, kind: str) -> str:
        return _KIND_TYPES[kind]

    async def metric_columns(self, conn, *, oneshot: bool) -> dict[str, str | None]:
        rows = await self.fetch(conn, "PRAGMA table_info(metrics)", oneshot=oneshot)
        return {
            name: _TYPE_KINDS.get(str(declared).upper())
            for _, name, declared, *_ in rows
            if name not in ("run_id", "step", "progress")
        }

    async def add_metric_column(self, conn, name: str, kind: str, *, oneshot: bool) -> None:
        sql = f"ALTER TABLE metrics ADD COLUMN {self.quote_ident(name)} {_KIND_TYPES[kind]}"
        try:
            await self.fetch(conn, sql, oneshot=oneshot)
        except sqlite3.OperationalError as error:
            if "duplicate column name" not in str(error):
                raise

    async def write_metrics(
        self, conn, names, run_id, step, progress, values, updated, *, oneshot: bool
    ) -> None:
        # A plain non-NaN float (the usual metric) needs no adaptation: skip the call.
        value = self.metric_value
        row = (run_id, step, progress,
               *[v if type(v) is float and v == v else value(v) for v in values])
        touch = None if updated is None else (self.timestamp(updated), run_id)
        await _in_worker(conn, _write_metrics, _upsert_sql(names), (row,), touch, oneshot)


    async def write_metrics_batch(
        self, conn, names, run_id, rows, updated, *, oneshot: bool
    ) -> None:
        value = self.metric_value
        adapted = [(*row[:3], *map(value, row[3:])) for row in rows]
        touch = None if updated is None else (self.timestamp(updated), run_id)
        await _in_worker(conn, _write_metrics, _upsert_sql(names), adapted, touch, oneshot)


@lru_cache(maxsize=1024)
def _to_qmark(query: str) -> str:
    return query.replace("%s", "?")


@lru_cache(maxsize=4096)
def _upsert_sql(names: tuple[str, ...]) -> str:
    quoted = ['"' + n.replace('"', '""') + '"' for n in names]
    columns = ", ".join(["run_id", "step", "progress", *quoted])
    marks = ", ".join("?" * (3 + len(names)))
    if not names:
        return f"INSERT INTO metrics ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    updates = ", ".join(f"{q} = excluded.{q}" for q in quoted)
    return (
        f"INSERT INTO metrics ({columns}) VALUES ({marks}) "
        f"ON CONFLICT (run_id, step, progress) DO UPDATE SET {updates}"
    )
