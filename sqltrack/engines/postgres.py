"""PostgreSQL through psycopg 3 and psycopg_pool.

Pooled connections sit in autocommit mode, so a lone statement (the common
``add_metrics``) costs exactly one round trip. A user block (``async with
client``) switches its connection to a transaction for the block's duration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors, sql

from ..config import Settings
from ..errors import (
    ConnectionLost,
    DatabaseError,
    ForeignKeyViolation,
    IntegrityError,
    PoolTimeout,
    RunNotFound,
    UniqueViolation,
)
from .base import BatchRow, Engine
from .dialects import POSTGRES_TYPES as _KIND_TYPES
from .dialects import PostgresDialect

Conn = psycopg.AsyncConnection[Any]

_TYPE_KINDS = {
    "boolean": "bool",
    "bigint": "int",
    "integer": "int",
    "smallint": "int",
    "double precision": "float",
    "real": "float",
    "text": "str",
    "character varying": "str",
    "timestamp with time zone": "datetime",
}


def translate(error: psycopg.Error, conn: Conn | None = None) -> DatabaseError:
    """sqltrack's error for a psycopg error (raise it ``from error``).

    An OperationalError is a lost connection when there is no connection yet
    (connecting failed) or the connection is closed or broken.
    """
    kind: type[DatabaseError] = DatabaseError
    if isinstance(error, errors.UniqueViolation):
        kind = UniqueViolation
    elif isinstance(error, errors.ForeignKeyViolation):
        kind = ForeignKeyViolation
    elif isinstance(error, psycopg.IntegrityError):
        kind = IntegrityError
    elif isinstance(error, psycopg.OperationalError) and (
        conn is None or conn.closed or conn.broken
    ):
        kind = ConnectionLost
    translated = kind(str(error))
    translated.sqlstate = error.sqlstate
    return translated


class PostgresEngine(Engine):
    name = "postgres"
    dialect = PostgresDialect()

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._pool: psycopg_pool.AsyncConnectionPool[Conn] | None = None
        self._first: Conn | None = None

    async def _configure(self, conn: Conn) -> None:
        schema = self.settings.schema
        if schema:
            await conn.execute(
                "SELECT set_config('search_path', quote_ident(%s), false)", [schema]
            )

    async def open(self) -> None:
        # One direct connection first: a wrong host, database or password fails now
        # with the server's reason (a pool would retry quietly until its timeout).
        # It is kept for the schema set-up (setup_connection), then closed.
        s = self.settings
        timeout = str(int(max(1, s.pool_timeout)))
        try:
            conn = await psycopg.AsyncConnection.connect(
                **{"connect_timeout": timeout, **s.params}, autocommit=True
            )
        except psycopg.Error as error:
            raise translate(error) from error
        try:
            await self._configure(conn)
        except psycopg.Error as error:
            await conn.close()
            raise translate(error, conn) from error
        self._first = conn
        self._pool = psycopg_pool.AsyncConnectionPool(
            kwargs={**s.params, "autocommit": True},
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            timeout=s.pool_timeout,
            configure=self._configure,
            open=False,
            name="sqltrack",
        )
        await self._pool.open(wait=False)

    @asynccontextmanager
    async def setup_connection(self) -> AsyncIterator[Conn]:
        """The direct connection ``open`` made (then closed), else one from the pool."""
        conn, self._first = self._first, None
        if conn is None:
            async with super().setup_connection() as pooled:
                yield pooled
            return
        try:
            yield conn
        finally:
            await conn.close()

    async def close(self) -> None:
        if self._first is not None:
            await self._first.close()
            self._first = None
        if self._pool is not None:
            await self._pool.close()

    def _opened_pool(self) -> psycopg_pool.AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise RuntimeError("the engine is not open")
        return self._pool

    async def acquire(self) -> Conn:
        try:
            return await self._opened_pool().getconn()
        except psycopg_pool.PoolTimeout as error:
            raise PoolTimeout(
                f"no PostgreSQL connection became free within {self.settings.pool_timeout} s "
                f"(raise pool_max_size or pool_timeout): {error}"
            ) from None
        except psycopg.Error as error:
            raise translate(error) from error

    async def release(self, conn: Conn) -> None:
        await self._opened_pool().putconn(conn)

    async def recover(self) -> None:
        # Idle connections died with the server too: check them all (dropping the
        # dead) instead of failing on each of them in turn.
        await self._opened_pool().check()

    async def begin_block(self, conn: Conn) -> None:
        try:
            await conn.set_autocommit(False)
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def end_block(self, conn: Conn, commit: bool) -> None:
        try:
            if commit:
                await conn.commit()
            else:
                await conn.rollback()
        except psycopg.Error as error:
            raise translate(error, conn) from error
        finally:
            if not conn.closed:
                await conn.set_autocommit(True)

    def in_block(self, conn: Conn) -> bool:
        # Pooled connections sit in autocommit mode; a block turns it off.
        return not conn.autocommit

    async def commit(self, conn: Conn) -> None:
        try:
            await conn.commit()
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def rollback(self, conn: Conn) -> None:
        try:
            await conn.rollback()
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def cursor(self, conn: Conn) -> psycopg.AsyncCursor[Any]:
        return conn.cursor()

    async def fetch(self, conn: Conn, query: str, params: Any = ()) -> list[Any]:
        try:
            cursor = await conn.execute(query, params or None)
            return await cursor.fetchall() if cursor.description else []
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def executemany(self, conn: Conn, query: str, rows: Sequence[Any]) -> None:
        try:
            async with conn.cursor() as cursor:
                await cursor.executemany(query, rows)
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def executescript(self, conn: Conn, script: str) -> None:
        # Without parameters psycopg sends the simple query protocol: many statements at once.
        try:
            await conn.execute(script)
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def lock_schema(self, conn: Conn) -> None:
        """Serialize schema creation and migrations between processes (until commit)."""
        try:
            # Lock first: CREATE SCHEMA IF NOT EXISTS is not safe against a concurrent twin.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sqltrack.schema'))")
            schema = self.settings.schema
            if schema:
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def write_metrics_batch(
        self,
        conn: Conn,
        names: tuple[str, ...],
        run_id: int,
        rows: Sequence[BatchRow],
        updated: datetime | None,
    ) -> None:
        """COPY the rows in, in one transaction with the run's touch; upsert on a conflict.

        New steps (the usual batch) go in by COPY, the fastest way into a table. A
        ``(step, progress)`` already stored, or repeated in the batch, makes the
        COPY fail on the primary key; then that transaction (a savepoint inside a
        user block) is rolled back and the rows are upserted by multi-row
        statements instead (the later row of a repeated key wins). COPY uses no
        prepared statement, so this is safe behind a transaction pooler.
        """
        try:
            async with conn.transaction():
                async with conn.cursor() as cursor:
                    async with cursor.copy(_copy_sql(names)) as copy:
                        for number, row in enumerate(rows, 1):
                            await copy.write_row((run_id, row.step, row.progress, *row.values))
                            if not number % COPY_YIELD_ROWS:
                                await asyncio.sleep(0)  # a producer on this loop goes on
                    if updated is not None:
                        await cursor.execute(_TOUCH, (updated, run_id))
            return
        except errors.UniqueViolation:
            pass
        except errors.ForeignKeyViolation:
            raise RunNotFound(run_id) from None
        except psycopg.Error as error:
            raise translate(error, conn) from error
        by_key = {(r.step, r.progress): (run_id, r.step, r.progress, *r.values) for r in rows}
        await self._upsert_batch(conn, names, run_id, list(by_key.values()), updated)

    async def _upsert_batch(
        self,
        conn: Conn,
        names: tuple[str, ...],
        run_id: int,
        rows: list[tuple[Any, ...]],
        updated: datetime | None,
    ) -> None:
        """Multi-row upserts of parameter rows with unique keys (the COPY's fallback)."""
        per_statement = max(1, MAX_PARAMETERS // (3 + len(names)) - 1)
        chunks = [rows[i : i + per_statement] for i in range(0, len(rows), per_statement)]
        # Outside a block, several statements go in one transaction of their own.
        one = len(chunks) == 1 or not conn.autocommit
        try:
            async with nullcontext() if one else conn.transaction():
                for index, chunk in enumerate(chunks):
                    touch = updated is not None and index == len(chunks) - 1
                    params = [value for row in chunk for value in row]
                    if touch:
                        params = [updated, run_id, *params]
                    # $n placeholders and a raw cursor: psycopg need not parse a long query.
                    cursor = psycopg.AsyncRawCursor(conn)
                    try:
                        await cursor.execute(_upsert_rows_sql(names, touch, len(chunk)), params)
                    finally:
                        await cursor.close()
        except errors.ForeignKeyViolation:
            raise RunNotFound(run_id) from None
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def metric_columns(self, conn: Conn) -> dict[str, str | None]:
        rows = await self.fetch(
            conn,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'metrics'",
        )
        return {
            name: _TYPE_KINDS.get(data_type)
            for name, data_type in rows
            if name not in ("run_id", "step", "progress")
        }

    async def add_metric_column(self, conn: Conn, name: str, kind: str) -> None:
        statement = sql.SQL("ALTER TABLE metrics ADD COLUMN IF NOT EXISTS {} {}").format(
            sql.Identifier(name), sql.SQL(_KIND_TYPES[kind])
        )
        for _ in range(5):
            try:
                # A savepoint when inside a user block, so a lost race does not abort it.
                async with nullcontext() if conn.autocommit else conn.transaction():
                    await conn.execute(statement)
                return
            except (errors.DuplicateColumn, errors.UniqueViolation):
                return
            except errors.DeadlockDetected:
                continue
            except psycopg.Error as error:
                raise translate(error, conn) from error

    async def write_metrics(
        self,
        conn: Conn,
        names: tuple[str, ...],
        run_id: int,
        step: int,
        progress: float,
        values: Sequence[Any],
        updated: datetime | None,
    ) -> None:
        if updated is None:
            params: tuple[Any, ...] = (run_id, step, progress, *values)
        else:
            params = (updated, run_id, run_id, step, progress, *values)
        try:
            await conn.execute(_upsert_sql(names, updated is not None), params)
        except errors.ForeignKeyViolation:
            raise RunNotFound(run_id) from None
        except psycopg.Error as error:
            raise translate(error, conn) from error


#: PostgreSQL takes at most 65535 parameters per statement.
MAX_PARAMETERS = 65535
#: A batch COPY lets the event loop run after this many rows, so an async producer
#: on the same loop does not wait for a whole batch to be formatted.
COPY_YIELD_ROWS = 256
_TOUCH = "UPDATE runs SET time_updated = %s WHERE id = %s"


@lru_cache(maxsize=4096)
def _copy_sql(names: tuple[str, ...]) -> bytes:
    """``COPY metrics (run_id, step, progress, <names>) FROM STDIN`` (text format)."""
    quoted = [sql.Identifier(n).as_string() for n in names]
    columns = ", ".join(["run_id", "step", "progress", *quoted])
    return f"COPY metrics ({columns}) FROM STDIN".encode()


@lru_cache(maxsize=4096)
def _upsert_sql(names: tuple[str, ...], touch_run: bool) -> bytes:
    """The one-row upsert, with psycopg's ``%s`` placeholders (cached, then prepared)."""
    return _upsert_text(names, touch_run, 1, lambda number: "%s")


def _upsert_rows_sql(names: tuple[str, ...], touch_run: bool, nrows: int) -> bytes:
    """The upsert of ``nrows`` rows, with PostgreSQL's own ``$n`` placeholders."""
    return _upsert_text(names, touch_run, nrows, lambda number: f"${number}")


def _upsert_text(
    names: tuple[str, ...], touch_run: bool, nrows: int, placeholder: Callable[[int], str]
) -> bytes:
    quoted = [sql.Identifier(n).as_string() for n in names]
    columns = ", ".join(["run_id", "step", "progress", *quoted])
    width = 3 + len(names)
    first = 3 if touch_run else 1
    marks = [placeholder(number) for number in range(first, first + nrows * width)]
    values = ", ".join(
        "(" + ", ".join(marks[start : start + width]) + ")" for start in range(0, len(marks), width)
    )
    query = f"INSERT INTO metrics ({columns}) VALUES {values} "
    if names:
        updates = ", ".join(f"{q} = EXCLUDED.{q}" for q in quoted)
        query += f"ON CONFLICT (run_id, step, progress) DO UPDATE SET {updates}"
    else:
        query += "ON CONFLICT DO NOTHING"
    if touch_run:
        query = (
            f"WITH touched AS (UPDATE runs SET time_updated = {placeholder(1)} "
            f"WHERE id = {placeholder(2)}) " + query
        )
    return query.encode()
