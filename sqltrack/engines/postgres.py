"""PostgreSQL through psycopg 3 and psycopg_pool.

Pooled connections sit in autocommit mode, so a lone statement (the common
``add_metrics``) costs exactly one round trip. A user block (``async with
client``) switches its connection to a transaction for the block's duration.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from functools import lru_cache

import psycopg
import psycopg_pool
from psycopg import errors, sql

from ..errors import PoolTimeout, RunNotFound
from .base import Engine

_KIND_TYPES = {
    "bool": "boolean",
    "int": "bigint",
    "float": "double precision",
    "str": "text",
    "datetime": "timestamp with time zone",
}
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


class PostgresEngine(Engine):
    name = "postgres"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self._pool: psycopg_pool.AsyncConnectionPool | None = None

    async def _configure(self, conn: psycopg.AsyncConnection) -> None:
        schema = self.settings.schema
        if schema:
            await conn.execute(
                "SELECT set_config('search_path', quote_ident(%s), false)", [schema]
            )

    async def open(self) -> None:
        # One direct connection first: a wrong host, database or password fails now
        # with the server's reason (a pool would retry quietly until its timeout).
        s = self.settings
        from ..schema import ensure_base_schema

        timeout = str(int(max(1, s.pool_timeout)))
        conn = await psycopg.AsyncConnection.connect(
            **{"connect_timeout": timeout, **s.params}, autocommit=True
        )
        try:
            await self._configure(conn)
            await ensure_base_schema(self, conn)
        finally:
            await conn.close()
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

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def acquire(self) -> psycopg.AsyncConnection:
        try:
            return await self._pool.getconn()
        except psycopg_pool.PoolTimeout as error:
            raise PoolTimeout(
                f"no PostgreSQL connection became free within {self.settings.pool_timeout} s "
                f"(raise pool_max_size or pool_timeout): {error}"
            ) from None

    async def release(self, conn: psycopg.AsyncConnection) -> None:
        await self._pool.putconn(conn)

    def lost_connection(self, error: BaseException, conn: psycopg.AsyncConnection) -> bool:
        return isinstance(error, psycopg.OperationalError) and (conn.closed or conn.broken)

    async def recover(self) -> None:
        # Idle connections died with the server too: check them all (dropping the
        # dead) instead of failing on each of them in turn.
        await self._pool.check()

    async def begin_block(self, conn: psycopg.AsyncConnection) -> None:
        await conn.set_autocommit(False)

    async def end_block(self, conn: psycopg.AsyncConnection, commit: bool) -> None:
        try:
            if commit:
                await conn.commit()
            else:
                await conn.rollback()
        finally:
            if not conn.closed:
                await conn.set_autocommit(True)

    async def commit(self, conn: psycopg.AsyncConnection) -> None:
        await conn.commit()

    async def rollback(self, conn: psycopg.AsyncConnection) -> None:
        await conn.rollback()

    async def cursor(self, conn: psycopg.AsyncConnection) -> psycopg.AsyncCursor:
        return conn.cursor()

    async def fetch(self, conn, query: str, params: Sequence = (), *, oneshot: bool) -> list:
        cursor = await conn.execute(query, params or None)
        return await cursor.fetchall() if cursor.description else []

    async def executemany(self, conn, query: str, rows, *, oneshot: bool) -> None:
        async with conn.cursor() as cursor:
            await cursor.executemany(query, rows)

    async def executescript(self, conn, script: str, *, oneshot: bool) -> None:
        # Without parameters psycopg sends the simple query protocol: many statements at once.
        await conn.execute(script)

    async def lock_schema(self, conn) -> None:
        """Serialize schema creation and migrations between processes (until commit)."""
        # Lock first: CREATE SCHEMA IF NOT EXISTS is not safe against a concurrent twin.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sqltrack.schema'))")
        schema = self.settings.schema
        if schema:
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )

    def quote_ident(self, name: str) -> str:
        return sql.Identifier(name).as_string()

    def json_param(self) -> str:
        return "%s::jsonb"

    def json_merge(self, column: str) -> str:
        return f"COALESCE({column}, '{{}}'::jsonb) || %s::jsonb"

    def json_remove(self, column: str) -> str:
        return f"{column} - %s::text[]"

    def key_list_param(self, keys: Sequence[str]) -> list[str]:
        return list(keys)

    async def write_metrics_batch(
        self, conn, names, run_id, rows, updated, *, oneshot: bool
    ) -> None:
        per_statement = max(1, MAX_PARAMETERS // (3 + len(names)) - 1)
        chunks = [rows[i : i + per_statement] for i in range(0, len(rows), per_statement)]
        async with nullcontext() if (not oneshot or len(chunks) == 1) else conn.transaction():
            for index, chunk in enumerate(chunks):
                touch = updated is not None and index == len(chunks) - 1
                params = [value for row in chunk for value in row]
                if touch:
                    params = [updated, run_id, *params]
                # $n placeholders and a raw cursor: psycopg need not parse a long query.
                cursor = psycopg.AsyncRawCursor(conn)
                try:
                    await cursor.execute(_upsert_rows_sql(names, touch, len(chunk)), params)
                except errors.ForeignKeyViolation:
                    raise RunNotFound(run_id) from None
                finally:
                    await cursor.close()

    def is_foreign_key_error(self, error: BaseException) -> bool:
        return isinstance(error, errors.ForeignKeyViolation)

    def metric_column_type(self, kind: str) -> str:
        return _KIND_TYPES[kind]

    async def metric_columns(self, conn, *, oneshot: bool) -> dict[str, str | None]:
        rows = await self.fetch(
            conn,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'metrics'",
            oneshot=oneshot,
        )
        return {
            name: _TYPE_KINDS.get(data_type)
            for name, data_type in rows
            if name not in ("run_id", "step", "progress")
        }

    async def add_metric_column(self, conn, name: str, kind: str, *, oneshot: bool) -> None:
        statement = sql.SQL("ALTER TABLE metrics ADD COLUMN IF NOT EXISTS {} {}").format(
            sql.Identifier(name), sql.SQL(_KIND_TYPES[kind])
        )
        for _ in range(5):
            try:
                # A savepoint when inside a user block, so a lost race does not abort it.
                async with nullcontext() if oneshot else conn.transaction():
                    await conn.execute(statement)
                return
            except (errors.DuplicateColumn, errors.UniqueViolation):
                return
            except errors.DeadlockDetected:
                continue

    async def write_metrics(
        self, conn, names, run_id, step, progress, values, updated, *, oneshot: bool
    ) -> None:
        if updated is None:
            params = (run_id, step, progress, *values)
        else:
            params = (updated, run_id, run_id, step, progress, *values)
        try:
            await conn.execute(_upsert_sql(names, updated is not None), params)
        except errors.ForeignKeyViolation:
            raise RunNotFound(run_id) from None


#: PostgreSQL takes at most 65535 parameters per statement.
MAX_PARAMETERS = 65535


@lru_cache(maxsize=4096)
def _upsert_sql(names: tuple[str, ...], touch_run: bool) -> bytes:
    """The one-row upsert, with psycopg's ``%s`` placeholders (cached, then prepared)."""
    return _upsert_text(names, touch_run, 1, lambda number: "%s")


def _upsert_rows_sql(names: tuple[str, ...], touch_run: bool, nrows: int) -> bytes:
    """The upsert of ``nrows`` rows, with PostgreSQL's own ``$n`` placeholders."""
    return _upsert_text(names, touch_run, nrows, lambda number: f"${number}")


def _upsert_text(names, touch_run: bool, nrows: int, placeholder) -> bytes:
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
