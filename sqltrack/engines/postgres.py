"""PostgreSQL through psycopg 3 and psycopg_pool.

Pooled connections sit in autocommit mode, so a lone statement (the common
``add_metrics``) costs exactly one round trip. A user block (``async with
client``) switches its connection to a transaction for the block's duration.

Behind a transaction pooler (PgBouncer in ``pool_mode = transaction``), each
transaction may run on another server connection, so nothing may rest on the
session: with ``pooler=transaction`` (or detected on opening, see
``_detect_pooler``) no statement is prepared on the server
(``prepare_threshold=None``), the ``schema`` is not set once per connection but
inside every transaction (the one-row upsert names it; every other statement
outside a block runs in a transaction of its own that starts with ``SET LOCAL
search_path``; a block, and the COPY of a batch, set it after ``BEGIN``), and
the only advisory lock (schema set-up) is transaction-scoped.

The connection released last is taken first (``_warm``): psycopg_pool hands out
its idle connections oldest first, so one writer alternating between two server
backends finds each of them cold (measured: ~20 % of a write-through step).
Only one connection rests outside the pool that way, never while a task waits for
the pool, and it goes back through the pool at least every ``WARM_SECONDS`` so
the pool's lifetime rules still apply to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext, suppress
from functools import lru_cache
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors, generators, sql
from psycopg.types.json import set_json_loads

from ..config import Settings
from ..errors import (
    ConnectionLost,
    DatabaseError,
    ForeignKeyViolation,
    IntegrityError,
    PoolTimeout,
    QueryRefused,
    RunNotFound,
    ServerUnreachable,
    UniqueViolation,
)
from ..metrics import layout
from ..metrics.layout import LONG_SLOTS, MetricRow, Placement, Touch
from .base import Cut, Engine, Limits, ReadRows, stopped_after, value_size
from .dialects import DEFAULT_READER, READER_FUNCTION, PostgresDialect, check_role_name
from .dialects import POSTGRES_TYPES as _KIND_TYPES
from .postgres_pool import AsyncPool

Conn = psycopg.AsyncConnection[Any]

#: Column types a buffered batch may COPY in binary: psycopg's binary dumpers take the
#: Python values sqltrack accepts for them exactly, or raise (an int past 64 bits).
#: Not ``integer``, ``smallint`` or ``real``: their binary dumpers narrow a value that
#: does not fit without a word (2**40 into ``integer`` is stored as 0), where the
#: server refuses it; those columns (a 0.1.x user's migrations) get the text COPY.
_BINARY_TYPES = frozenset(
    {"bigint", "double precision", "boolean", "text", "timestamp with time zone"}
)
#: The warm connection goes back through the pool at least this often (seconds).
WARM_SECONDS = 30.0
_IDLE = psycopg.pq.TransactionStatus.IDLE

# The pool logs every failed connection attempt; during an outage that is a line per
# attempt on the stderr of a script with no logging set up. sqltrack reports an
# outage itself (ServerUnreachable, the spool's one line at exit); a program that
# sets logging up still gets the pool's records (they propagate as before).
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

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


def _raise_for(result: Any, encoding: str) -> None:
    """Raise the server's error of a low-level result (parse or describe)."""
    if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
        raise psycopg.errors.error_from_result(result, encoding=encoding)


#: SQLSTATEs (and the class ``08``) a server reports on a connection that still works
#: when a node behind it is away: ``08006`` connection failure (Citus: "connection to
#: the remote node ... failed"), ``57P01`` / ``57P02`` a worker shutting down or
#: crashing mid-statement, ``57P03`` a worker starting up.
NODE_AWAY = frozenset({"08", "57P01", "57P02", "57P03"})


def translate(error: psycopg.Error, conn: Conn | None = None) -> DatabaseError:
    """sqltrack's error for a psycopg error (raise it ``from error``).

    An OperationalError is a lost connection when there is no connection yet
    (connecting failed) or the connection is closed or broken, or when the server
    reports that a node behind it went away (``NODE_AWAY``: a Citus coordinator whose
    worker is stopped or restarting; the statement was not done, or not known to be,
    as with a connection lost).
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
        or (error.sqlstate or "")[:2] in NODE_AWAY or error.sqlstate in NODE_AWAY
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
        self._pool: AsyncPool | None = None
        self._first: Conn | None = None
        #: A transaction pooler sits between us and the server (set, or found on opening).
        self.pooled = settings.pooler not in ("auto", "none")
        #: Behind a pooler with a schema: the start of every transaction of ours.
        self._set_local: bytes | None = None
        self._local = b""
        #: Behind a pooler with a schema: ``"schema".`` before the tables of the upserts.
        self._prefix = ""
        #: The idle connection released last, reused first (see the module docstring),
        #: and until when it may stay out of the pool.
        self._warm: Conn | None = None
        self._warm_conn: Conn | None = None
        self._warm_until = 0.0
        #: Tasks waiting in the pool's getconn (the warm connection is theirs first).
        self._waiting = 0
        #: The metrics table's column types, as last read by ``metric_columns``.
        self._column_types: dict[str, str] = {}

    async def _configure(self, conn: Conn) -> None:
        set_json_loads(_load_json, conn)
        schema = self.settings.schema
        if schema and not self.pooled:  # behind a pooler: per transaction (_scoped)
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
            if self.pooled:
                conn.prepare_threshold = None
        except psycopg.Error as error:
            raise translate(error) from error
        try:
            if s.pooler == "auto" and await self._detect_pooler(conn):
                self.pooled = True
                conn.prepare_threshold = None
            if self.pooled and s.schema:
                local = sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(s.schema))
                self._local = local.as_bytes()
                self._set_local = b"BEGIN; " + self._local
                self._prefix = sql.Identifier(s.schema).as_string() + "."
            await self._configure(conn)
        except psycopg.Error as error:
            await conn.close()
            raise translate(error, conn) from error
        self._first = conn
        extra: dict[str, Any] = {"prepare_threshold": None} if self.pooled else {}
        self._pool = AsyncPool(
            kwargs={**s.params, "autocommit": True, **extra},
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            timeout=s.pool_timeout,
            # A server back after an outage is found within seconds: the pool's
            # reconnection (backoff 1, 2, 4 ... s) gives up soon, and the next request
            # starts a fresh one.
            reconnect_timeout=max(1.0, min(s.pool_timeout, 3.0)),
            configure=self._configure,
            open=False,
            name="sqltrack",
        )
        await self._pool.open(wait=False)

    @staticmethod
    async def _detect_pooler(conn: Conn) -> bool:
        """Whether a pooler answers for the server: it hands the client a backend key of
        its own (PgBouncer, pgcat, Odyssey, Supavisor do), so the process id announced
        on connecting is not the server's ``pg_backend_pid()``. Any port, any name."""
        cursor = await conn.execute("SELECT pg_backend_pid()")
        row = await cursor.fetchone()
        return row is not None and row[0] != conn.info.backend_pid

    @asynccontextmanager
    async def _scoped(self, conn: Conn) -> AsyncIterator[None]:
        """Behind a pooler with a schema, outside a block: the statement(s) in a
        transaction of their own that sets the schema first (one round trip more
        each way); otherwise nothing."""
        if self._set_local is None or not conn.autocommit:
            yield
            return
        await conn.execute(self._set_local)
        try:
            yield
        except BaseException:
            if not conn.closed and not conn.broken:
                with suppress(psycopg.Error):
                    await conn.execute(b"ROLLBACK")
            raise
        await conn.execute(b"COMMIT")

    async def _local_schema(self, conn: Conn) -> None:
        """In a block behind a pooler: the schema for the transaction just begun."""
        if self._set_local is not None:
            await conn.execute(self._local)

    def server_name(self) -> str:
        p = self.settings.params
        host = p.get("host") or p.get("hostaddr") or "localhost"
        return (f"the PostgreSQL server {host}:{p.get('port', '5432')} "
                f"(database {p.get('dbname')!r}, user {p.get('user')!r})")

    async def _unreachable(self) -> str | None:
        """Why no connection to the server can be made now (None: it can)."""
        timeout = str(int(max(1, min(5, self.settings.pool_timeout))))
        try:
            conn = await psycopg.AsyncConnection.connect(
                **{**self.settings.params, "connect_timeout": timeout}, autocommit=True
            )
        except psycopg.Error as error:
            return str(error).strip() or type(error).__name__
        await conn.close()
        return None

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
            await self._return_warm()
            await self._pool.close()

    async def _return_warm(self) -> None:
        """Hand the warm connection back to the pool."""
        conn, self._warm = self._warm, None
        if conn is not None and self._pool is not None:
            await self._pool.putconn(conn)

    def _opened_pool(self) -> AsyncPool:
        if self._pool is None:
            raise RuntimeError("the engine is not open")
        return self._pool

    async def acquire(self, timeout: float | None = None) -> Conn:
        conn = self._warm
        if conn is not None:
            self._warm = None
            if time.monotonic() < self._warm_until:
                return conn
            self._warm_conn = None  # its turn through the pool; a new time out after
            await self._opened_pool().putconn(conn)
        self._waiting += 1
        try:
            return await self._opened_pool().getconn(timeout)
        except psycopg_pool.PoolTimeout as error:
            # A pool waits as long for a free connection as for a server that does
            # not answer: say which it was.
            reason = await self._unreachable()
            if reason is not None:
                raise ServerUnreachable(
                    f"{self.server_name()} is unreachable (no connection could be made "
                    f"within {timeout or self.settings.pool_timeout:g} s): {reason}"
                ) from None
            raise PoolTimeout(
                f"no PostgreSQL connection became free within {self.settings.pool_timeout} s "
                f"(raise pool_max_size or pool_timeout): {error}"
            ) from None
        except psycopg.Error as error:
            raise translate(error) from error
        finally:
            self._waiting -= 1

    async def release(self, conn: Conn) -> None:
        if (
            self._warm is None
            and not self._waiting
            and conn.pgconn.transaction_status == _IDLE
            and not conn.closed
            and conn.autocommit
        ):
            if conn is not self._warm_conn:  # new from the pool: its time out starts now
                self._warm_conn = conn
                self._warm_until = time.monotonic() + WARM_SECONDS
            self._warm = conn
            return
        await self._opened_pool().putconn(conn)

    async def recover(self) -> None:
        # Idle connections died with the server too: check them all (dropping the
        # dead) instead of failing on each of them in turn.
        await self._return_warm()
        await self._opened_pool().check()

    async def begin_block(self, conn: Conn) -> None:
        try:
            await conn.set_autocommit(False)
            await self._local_schema(conn)
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
            await self._local_schema(conn)  # the block goes on in a new transaction
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def rollback(self, conn: Conn) -> None:
        try:
            await conn.rollback()
            await self._local_schema(conn)
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def cursor(self, conn: Conn) -> psycopg.AsyncCursor[Any]:
        return conn.cursor()

    async def fetch(self, conn: Conn, query: str, params: Any = ()) -> list[Any]:
        try:
            async with self._scoped(conn):
                cursor = await conn.execute(query, params or None)
                return await cursor.fetchall() if cursor.description else []
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def executemany(self, conn: Conn, query: str, rows: Sequence[Any]) -> None:
        try:
            async with self._scoped(conn), conn.cursor() as cursor:
                await cursor.executemany(query, rows)
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def executescript(self, conn: Conn, script: str) -> None:
        # Without parameters psycopg sends the simple query protocol: many statements at once.
        try:
            async with self._scoped(conn):
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

    async def read_only(
        self, sql: str, params: Sequence[Any], timeout: float, limits: Limits,
        *, reader: str = DEFAULT_READER, allow_superuser: bool = False,
    ) -> ReadRows:
        """Users' SQL with the least privilege: in a read-only transaction with a statement
        timeout (and ``jit`` off: its compile time outweighs a page's bounded query), as
        the NOLOGIN role ``reader`` (``SET LOCAL ROLE``; it may only SELECT
        sqltrack's tables, see ``sqltrack setup --ui-role``), inside that role's SECURITY
        DEFINER function (where the server refuses ``set_config('role', ...)``), refusing
        functions every role may call that write, signal or outlive the request
        (``refused_function``). Always rolled back; session advisory locks are released
        before the connection goes back. A superuser login is refused unless
        ``allow_superuser``.

        Bounded cost (``Limits``): the server cuts values over ``limits.value_cap``
        (``_capped_query``), the reader's function stops at ``limits.max_bytes`` of rows,
        and the rows come through a server-side cursor ``FETCH_ROWS`` at a time, each
        batch counted before the next is asked for. Every statement's timeout is what is
        left of ``timeout`` for the whole call (waiting for a connection included)."""
        deadline = time.monotonic() + timeout
        denied = self.dialect.refused_function(sql)
        if denied is not None:
            raise QueryRefused(
                f"{denied!r} is not allowed on the page: users' SQL may not call functions "
                "that write, signal other sessions, reach other servers, run SQL text or "
                "change settings and locks")
        check_role_name(reader)
        try:
            conn = await self.acquire(timeout)
        except PoolTimeout:
            raise QueryRefused(stopped_after(timeout) + " (no connection became free)") from None
        try:
            await self.begin_block(conn)
            try:
                result = await self._read_as(conn, sql, params, deadline, limits, reader,
                                             allow_superuser)
            finally:
                await self.end_block(conn, commit=False)
                if not conn.closed and not conn.broken:
                    await conn.execute("SELECT pg_advisory_unlock_all()")
        except errors.QueryCanceled:
            raise QueryRefused(stopped_after(timeout)) from None
        except psycopg.Error as error:
            diag = getattr(error, "diag", None)
            message = (diag.message_primary if diag is not None else None) or str(error)
            raise QueryRefused(" ".join(message.split())) from None
        finally:
            await self.release(conn)
        if time.monotonic() > deadline:
            raise QueryRefused(stopped_after(timeout))
        return result

    async def _read_as(
        self, conn: Conn, query: str, params: Sequence[Any], deadline: float,
        limits: Limits, reader: str, allow_superuser: bool,
    ) -> ReadRows:
        async with conn.cursor() as cursor:
            await cursor.execute("SET TRANSACTION READ ONLY")
            await cursor.execute(
                # jit off: compiling a costly-looking page query (a sort of many runs)
                # takes longer than the bounded query it would speed up
                "SELECT set_config('statement_timeout', %s, true), "
                "set_config('jit', 'off', true), "
                "current_setting('is_superuser'), session_user, "
                "to_regrole(%s) IS NOT NULL, "
                "to_regprocedure(%s) IS NOT NULL",
                [_left_ms(deadline), reader, f"{READER_FUNCTION}(text, bigint)"],
            )
            row = await cursor.fetchone()
            assert row is not None
            _, _, superuser, login, has_role, has_function = row
            if superuser == "on" and not allow_superuser:
                raise QueryRefused(
                    f"the page's database user {login!r} is a superuser, whose SQL could "
                    "write files, run programs and end other sessions: connect the page as an "
                    "ordinary role, or start it with --allow-superuser (users' SQL still runs "
                    f"as the reader role {reader!r})")
            if not (has_role and has_function):
                raise QueryRefused(
                    f"users' SQL runs as the reader role {reader!r}, which is not set up in "
                    "this database or schema (or was set up by an older sqltrack): run "
                    "'sqltrack setup --ui-role' (or --ui-role NAME) as the schema's owner")
            await cursor.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(reader)))
            text = psycopg.AsyncClientCursor(conn).mogrify(query, list(params) or None)
            columns, types = await self._describe(conn, text)
            if any(t is None for t, _ in types):
                raise QueryRefused("a column of the query has no plain type (a record or "
                                   "pseudo-type): cast it, e.g. to text")
            if not types:
                raise QueryRefused("the query has no columns: select at least one")
            capped, definition, kinds = _capped_query(text, types, limits.value_cap)
            await cursor.execute("SELECT set_config('statement_timeout', %s, true)",
                                 [_left_ms(deadline)])
        result = ReadRows(columns)
        async with conn.cursor(name="sqltrack_page") as rows:
            await rows.execute(
                f"SELECT * FROM {READER_FUNCTION}(%s, %s) AS q({definition})",
                [capped, limits.max_bytes])
            full = False
            while not full and (batch := await rows.fetchmany(FETCH_ROWS)):
                for raw in batch:
                    values, size = _uncapped(raw, kinds)
                    if not result.keep(values, size, limits):
                        full = True
                        break
                if time.monotonic() > deadline:
                    raise errors.QueryCanceled("the page's time limit")
        if result.stopped is None:
            cursor = await conn.execute("SELECT current_setting('sqltrack.stopped', true)")
            flag = await cursor.fetchone()
            result.stopped = flag[0] if flag and flag[0] else None
        return result

    @staticmethod
    async def _describe(
        conn: Conn, text: str
    ) -> tuple[list[str], list[tuple[str | None, int]]]:
        """Column names and (type name, ``typlen``) of one statement, parsed by the
        server but not run (an unnamed prepared statement: more than one statement is
        refused). The type name is None for a pseudo-type; ``typlen`` -1 for a
        variable-length type, -2 for a C string, 0 for ``bytea``'s mark (see
        ``_capped_query``), else the fixed size."""
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        pgconn.send_prepare(b"", text.encode(encoding))
        (prepared,) = await conn.wait(generators.execute(pgconn))
        _raise_for(prepared, encoding)
        pgconn.send_describe_prepared(b"")
        (described,) = await conn.wait(generators.execute(pgconn))
        _raise_for(described, encoding)
        names = [(described.fname(i) or b"").decode(encoding) for i in range(described.nfields)]
        oids = [described.ftype(i) for i in range(described.nfields)]
        mods = [described.fmod(i) for i in range(described.nfields)]
        if not oids:
            return names, []
        cursor = await conn.execute(
            "SELECT CASE WHEN t.typtype = 'p' THEN NULL ELSE format_type(o, NULLIF(m, -1)) END, "
            "CASE WHEN t.oid = 'bytea'::regtype THEN 0 ELSE t.typlen END "
            "FROM unnest(%s::oid[], %s::int[]) WITH ORDINALITY AS d(o, m, n) "
            "JOIN pg_type t ON t.oid = d.o ORDER BY n", [oids, mods])
        return names, [(r[0], r[1]) for r in await cursor.fetchall()]

    async def write_rows(
        self,
        conn: Conn,
        names: tuple[str, ...],
        rows: Sequence[MetricRow],
        touches: Sequence[Touch],
        placement: Placement | None = None,
    ) -> None:
        """One row: one prepared upsert (the touch in the same statement), one round
        trip. Up to ``COPY_MIN_ROWS`` rows, or rows of several runs: multi-row upserts
        that also set the touches. More rows of one run: COPY (see ``_copy``).

        Long-stored metrics (``placement``): one row is still one statement (the long
        values are ``INSERT ... SELECT FROM unnest(arrays)`` CTEs of the upsert); more
        rows: the columns as above, then the long values, in one transaction."""
        try:
            if placement is not None:
                await self._write_placed(conn, rows, touches, placement)
                return
            if len(rows) == 1:
                row = rows[0]
                if touches:
                    (run, when), = touches
                    params: Sequence[Any] = (when, run, *layout.params(row))
                else:
                    params = layout.params(row)
                await conn.execute(_upsert_sql(names, bool(touches), self._prefix), params)
                return
            await self._write_columns(conn, names, rows, touches)
        except errors.ForeignKeyViolation as error:
            missing = layout.single_run(rows)
            if missing is not None:
                raise RunNotFound(missing) from None
            raise translate(error, conn) from error
        except psycopg.Error as error:
            raise translate(error, conn) from error

    async def _write_columns(
        self,
        conn: Conn,
        names: tuple[str, ...],
        rows: Sequence[MetricRow],
        touches: Sequence[Touch],
    ) -> None:
        run = layout.single_run(rows)
        if run is not None and len(rows) >= COPY_MIN_ROWS and await self._copy(
            conn, names, run, rows, touches
        ):
            return
        await self._upsert_rows(conn, names, rows, touches)

    async def _write_placed(
        self, conn: Conn, rows: Sequence[MetricRow], touches: Sequence[Touch], where: Placement
    ) -> None:
        """Rows with long-stored metrics: see ``write_rows``."""
        columns = where.columns
        if len(rows) == 1:
            (row,) = rows
            params: list[Any] = [value for pair in touches for value in pair]
            kinds = tuple(kind for kind, _, _ in where.long_groups)
            for kind, names, pick in where.long_groups:
                params += (*layout.key(row), list(names), _long_list(kind, pick(row)))
            if columns:
                params += layout.params(layout.column_row(row, where))
            if conn.autocommit and await self._insert_new(conn, columns, kinds, touches, params):
                return
            query = _placed_sql(columns, kinds, len(touches), self._prefix, True)
            await _execute_raw(conn, query, params)
            return
        arrays = _long_arrays(rows, where)
        kinds = tuple(arrays)
        async with conn.transaction():
            await self._local_schema(conn)
            if columns:
                column_rows = [layout.column_row(row, where) for row in rows]
                await self._write_columns(conn, columns, column_rows, touches)
            elif touches:
                async with conn.cursor() as cursor:
                    await cursor.executemany(_TOUCH, [(when, r) for r, when in touches])
            values = sum(len(arrays[kind][0]) for kind in kinds)
            if values >= COPY_MIN_ROWS and await self._copy_long(conn, arrays):
                return
            for kind in kinds:
                await _execute_raw(conn, _placed_sql((), (kind,), 0, self._prefix), arrays[kind])

    async def _insert_new(
        self, conn: Conn, columns: tuple[str, ...], kinds: tuple[str, ...],
        touches: Sequence[Touch], params: list[Any],
    ) -> bool:
        """One row's long values by plain INSERT (its columns still upserted), on an
        autocommit connection; False when one of its keys is already stored (the
        statement failed whole, nothing of it was written: the caller upserts).

        A logged step is usually new, and ``ON CONFLICT`` costs an index probe per value
        before each insert: measured with 9,210 long values a step, the upsert took
        1.46x the plain INSERT's time (113 ms against 78 ms)."""
        query = _placed_sql(columns, kinds, len(touches), self._prefix, True, new_keys=True)
        try:
            await _execute_raw(conn, query, params)
        except errors.UniqueViolation:
            return False
        except psycopg.InternalError as error:
            if _copy_duplicate(error):  # Citus: a shard's key violation
                return False
            raise
        return True

    async def _copy_long(self, conn: Conn, arrays: dict[str, list[list[Any]]]) -> bool:
        """The long values of a batch by binary COPY into ``metric_values`` (one COPY per
        kind, its value column's type set), in a savepoint of the batch's transaction;
        False when a key is already stored or a value does not fit its binary type
        (nothing of it written: the caller upserts, which says what is wrong).

        The batch floor for wide rows: about twice as fast as the ``unnest`` upsert."""
        try:
            async with conn.transaction(), conn.cursor() as cursor:
                number = 0
                for kind, (runs, steps, progresses, names, values) in arrays.items():
                    slot = _LONG_COLUMNS[LONG_SLOTS[kind]]
                    async with cursor.copy(_copy_long_sql(slot)) as copy:
                        copy.set_types(_LONG_COPY_TYPES[kind])
                        for row in zip(runs, steps, progresses, names, values, strict=True):
                            await copy.write_row(row)
                            number += 1
                            if not number % (COPY_YIELD_ROWS * 16):
                                await asyncio.sleep(0)  # a producer on this loop goes on
            return True
        except errors.UniqueViolation:
            return False
        except psycopg.InternalError as error:
            if _copy_duplicate(error):  # Citus
                return False
            raise
        except (psycopg.DataError, psycopg.ProgrammingError, OverflowError):
            return False

    async def _copy(
        self,
        conn: Conn,
        names: tuple[str, ...],
        run: int,
        rows: Sequence[MetricRow],
        touches: Sequence[Touch],
    ) -> bool:
        """COPY the rows of one run in, in one transaction with the touches; False when
        a key is already stored or repeated (nothing written: the caller upserts).

        New steps (the usual buffered batch) go in by COPY, the fastest way into a
        table. A ``(step, progress)`` already stored, or repeated in the batch, makes
        the COPY fail on the primary key; that transaction (a savepoint inside a user
        block) is rolled back. COPY uses no prepared statement, so this is safe behind
        a transaction pooler.
        """
        types = self._copy_types(names)
        try:
            async with conn.transaction():
                await self._local_schema(conn)  # behind a pooler: the schema, here too
                async with conn.cursor() as cursor:
                    async with cursor.copy(_copy_sql(names, types is not None)) as copy:
                        if types is not None:
                            copy.set_types(types)
                        for number, row in enumerate(rows, 1):
                            await copy.write_row(layout.params(row))
                            if not number % COPY_YIELD_ROWS:
                                await asyncio.sleep(0)  # a producer on this loop goes on
                    if touches:
                        await cursor.executemany(_TOUCH, [(when, r) for r, when in touches])
            return True
        except errors.UniqueViolation:
            return False
        except errors.ForeignKeyViolation:
            raise RunNotFound(run) from None
        except psycopg.InternalError as error:
            if _copy_duplicate(error):  # Citus
                return False
            if COPY_FOREIGN in (error.diag.message_primary or ""):
                raise RunNotFound(run) from None
            raise
        except (psycopg.DataError, psycopg.ProgrammingError, OverflowError) as error:
            if types is None:
                if isinstance(error, OverflowError):
                    raise
                raise translate(error, conn) from error
            # A value the binary form cannot take as its column's type (or a column
            # changed meanwhile): the types are read again, the upsert says what is wrong.
            self._column_types = {}
            return False

    async def _upsert_rows(
        self,
        conn: Conn,
        names: tuple[str, ...],
        rows: Sequence[MetricRow],
        touches: Sequence[Touch],
    ) -> None:
        """Multi-row upserts (``$n`` placeholders, as many rows per statement as the
        parameter limit takes) with the touches in the first statement; a repeated key
        keeps its later row (one statement cannot upsert a row twice). Outside a block,
        several statements go in one transaction of their own."""
        unique = {layout.key(row): layout.params(row) for row in rows}
        params_rows = list(unique.values())
        per_statement = max(1, MAX_PARAMETERS // (3 + len(names)) - len(touches) - 1)
        chunks = [params_rows[i : i + per_statement]
                  for i in range(0, len(params_rows), per_statement)]
        one = len(chunks) == 1 or not conn.autocommit
        async with nullcontext() if one else conn.transaction():
            for index, chunk in enumerate(chunks):
                chunk_touches = touches if index == 0 else ()
                params = [value for pair in chunk_touches for value in pair]
                params += [value for row in chunk for value in row]
                await _execute_raw(
                    conn, _combined_sql(names, len(chunk_touches), len(chunk), self._prefix),
                    params,
                )

    def _copy_types(self, names: tuple[str, ...]) -> list[str] | None:
        """The column types of a binary COPY of these metrics (None: use text COPY, a
        column's type is not known or has no safe binary form here)."""
        known = self._column_types
        try:
            types = [known["run_id"], known["step"], known["progress"]]
            types += [known[name] for name in names]
        except KeyError:
            return None
        return types if all(t in _BINARY_TYPES for t in types) else None

    async def metric_columns(self, conn: Conn) -> dict[str, str | None]:
        rows = await self.fetch(
            conn,
            "SELECT a.attname, format_type(a.atttypid, NULL), a.attisdropped "
            "FROM pg_attribute a WHERE a.attrelid = 'metrics'::regclass AND a.attnum > 0",
        )
        self.dropped_columns = sum(1 for row in rows if row[2])
        live = [(name, data_type) for name, data_type, dropped in rows if not dropped]
        # Also the exact types for the binary COPY of buffered batches.
        self._column_types = dict(live)
        return {
            name: _TYPE_KINDS.get(data_type)
            for name, data_type in live
            if name not in ("run_id", "step", "progress")
        }

    async def add_metric_columns(
        self, conn: Conn, columns: Sequence[tuple[str, str]], lock_timeout: float | None
    ) -> bool:
        """One ``ALTER TABLE metrics ADD COLUMN IF NOT EXISTS a ..., ADD COLUMN IF NOT
        EXISTS b ...`` in a transaction of its own (a savepoint in a user block) whose
        ``lock_timeout`` bounds the wait for the table's lock: behind an open reader,
        the ALTER would wait, and every writer of ``metrics`` would queue behind it."""
        statement = sql.SQL("ALTER TABLE metrics ") + sql.SQL(", ").join(
            sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(
                sql.Identifier(name), sql.SQL(_KIND_TYPES[kind]))
            for name, kind in columns
        )
        timeout = "0" if lock_timeout is None else str(max(1, int(lock_timeout * 1000)))
        for _ in range(5):
            try:
                async with conn.transaction():
                    await self._local_schema(conn)
                    cursor = await conn.execute(
                        "SELECT current_setting('lock_timeout'), "
                        "set_config('lock_timeout', %s, true)", [timeout])
                    row = await cursor.fetchone()
                    try:
                        await conn.execute(statement)
                    finally:
                        if not conn.autocommit and row is not None:  # a block goes on
                            with suppress(psycopg.Error):
                                await conn.execute(
                                    "SELECT set_config('lock_timeout', %s, true)", [row[0]])
                return True
            except (errors.DuplicateColumn, errors.UniqueViolation):
                return True
            except (errors.LockNotAvailable, errors.TooManyColumns):
                return False
            except errors.DeadlockDetected:
                continue
            except psycopg.Error as error:
                raise translate(error, conn) from error
        return False


async def _execute_raw(conn: Conn, query: bytes, params: Sequence[Any]) -> None:
    """One statement with PostgreSQL's own ``$n`` placeholders, on a raw cursor: psycopg
    need not parse a long multi-row query for ``%s``."""
    cursor = psycopg.AsyncRawCursor(conn)
    try:
        await cursor.execute(query, params)
    finally:
        await cursor.close()


def _combined_sql(names: tuple[str, ...], nruns: int, nrows: int, prefix: str = "") -> bytes:
    """The upsert of ``nrows`` rows of several runs that also sets ``time_updated`` of
    ``nruns`` runs (``$n`` placeholders: the ``(id, time)`` pairs, then the rows)."""
    offset = 2 * nruns
    upsert = _upsert_text(names, False, nrows, lambda number: f"${number + offset}", prefix)
    if not nruns:
        return upsert
    pairs = ", ".join(f"(${2 * i + 1}::bigint, ${2 * i + 2}::timestamptz)" for i in range(nruns))
    touch = (
        f"WITH touched AS (UPDATE {prefix}runs AS r SET time_updated = u.t "
        f"FROM (VALUES {pairs}) AS u (id, t) WHERE r.id = u.id) "
    )
    return touch.encode() + upsert


#: PostgreSQL takes at most 65535 parameters per statement.
MAX_PARAMETERS = 65535
#: Rows of one run from this many on are written by COPY (fewer: one multi-row upsert,
#: which costs one round trip where COPY costs a transaction and its start and end).
COPY_MIN_ROWS = 50
#: How a key violation of a COPY starts, and what a foreign key's says, in the message of
#: the internal error (XX000) Citus reports instead of 23505 / 23503.
COPY_DUPLICATE = "duplicate key value violates unique constraint"
COPY_FOREIGN = "violates foreign key constraint"


def _copy_duplicate(error: psycopg.InternalError) -> bool:
    """Citus: a shard's key violation during a COPY comes back as an internal error
    (XX000) with the shard's message, not as 23505; told by that message."""
    return (error.diag.message_primary or "").startswith(COPY_DUPLICATE)

#: A batch COPY lets the event loop run after this many rows, so an async producer
#: on the same loop does not wait for a whole batch to be formatted.
COPY_YIELD_ROWS = 256
_TOUCH = "UPDATE runs SET time_updated = %s WHERE id = %s"


@lru_cache(maxsize=4096)
def _copy_sql(names: tuple[str, ...], binary: bool = False) -> bytes:
    """``COPY metrics (run_id, step, progress, <names>) FROM STDIN`` (text, or binary:
    about a quarter of the client's CPU per row, no float formatting)."""
    quoted = [sql.Identifier(n).as_string() for n in names]
    columns = ", ".join(["run_id", "step", "progress", *quoted])
    binary_format = " (FORMAT BINARY)" if binary else ""
    return f"COPY metrics ({columns}) FROM STDIN{binary_format}".encode()


@lru_cache(maxsize=4096)
def _upsert_sql(names: tuple[str, ...], touch_run: bool, prefix: str = "") -> bytes:
    """The one-row upsert, with psycopg's ``%s`` placeholders (cached, then prepared).

    ``prefix`` (``"schema".``) names the schema of the tables (behind a pooler).
    """
    return _upsert_text(names, touch_run, 1, lambda number: "%s", prefix)


def _upsert_text(
    names: tuple[str, ...],
    touch_run: bool,
    nrows: int,
    placeholder: Callable[[int], str],
    prefix: str = "",
) -> bytes:
    quoted = [sql.Identifier(n).as_string() for n in names]
    columns = ", ".join(["run_id", "step", "progress", *quoted])
    width = 3 + len(names)
    first = 3 if touch_run else 1
    marks = [placeholder(number) for number in range(first, first + nrows * width)]
    values = ", ".join(
        "(" + ", ".join(marks[start : start + width]) + ")" for start in range(0, len(marks), width)
    )
    query = f"INSERT INTO {prefix}metrics ({columns}) VALUES {values} "
    if names:
        updates = ", ".join(f"{q} = EXCLUDED.{q}" for q in quoted)
        query += f"ON CONFLICT (run_id, step, progress) DO UPDATE SET {updates}"
    else:
        query += "ON CONFLICT DO NOTHING"
    if touch_run:
        query = (
            f"WITH touched AS (UPDATE {prefix}runs SET time_updated = {placeholder(1)} "
            f"WHERE id = {placeholder(2)}) " + query
        )
    return query.encode()


#: The array type of each kind's value slot in ``metric_values``.
_LONG_ARRAYS = {"float": "float8[]", "int": "int8[]", "bool": "bool[]", "str": "text[]",
                "datetime": "timestamptz[]"}
#: The value slot (column of ``metric_values``) of each kind.
_LONG_COLUMNS = ("value", "value_int", "value_bool", "value_text", "value_time")
#: The column types of a binary COPY of one kind's long values.
_LONG_COPY_TYPES = {
    kind: ["bigint", "bigint", "double precision", "text", value_type]
    for kind, value_type in (("float", "double precision"), ("int", "bigint"),
                             ("bool", "boolean"), ("str", "text"),
                             ("datetime", "timestamp with time zone"))
}


@lru_cache(maxsize=8)
def _copy_long_sql(slot: str) -> bytes:
    """``COPY metric_values (run_id, step, progress, name, <slot>) FROM STDIN (binary)``."""
    return (f"COPY metric_values (run_id, step, progress, name, {slot}) "
            "FROM STDIN (FORMAT BINARY)").encode()


def _long_arrays(rows: Sequence[MetricRow], where: Placement) -> dict[str, list[list[Any]]]:
    """The long-stored values of rows as arrays per kind: ``[run_ids, steps,
    progresses, names, values]``; a key repeated in the rows keeps its later value
    (one statement cannot upsert a row twice)."""
    per_kind: dict[str, dict[tuple[Any, ...], Any]] = {}
    for row in rows:
        run, step, progress = layout.key(row)
        for (name, kind), value in zip(where.long, layout.long_values(row, where), strict=True):
            if kind == "float" and type(value) is int:
                value = float(value)
            per_kind.setdefault(kind, {})[(run, step, progress, name)] = value
    arrays: dict[str, list[list[Any]]] = {}
    for kind, entries in per_kind.items():
        keys = list(entries)
        arrays[kind] = [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                        [k[3] for k in keys], list(entries.values())]
    return arrays


def _long_list(kind: str, values: tuple[Any, ...]) -> list[Any]:
    """One row's values of one kind as the array parameter (ints of a float metric as
    floats: an array has one element type)."""
    if kind == "float" and int in map(type, values):
        return [float(v) if type(v) is int else v for v in values]
    return list(values)


@lru_cache(maxsize=1024)
def _placed_sql(
    columns: tuple[str, ...], kinds: tuple[str, ...], nruns: int, prefix: str = "",
    one_row: bool = False, new_keys: bool = False,
) -> bytes:
    """One statement (``$n`` placeholders): set ``time_updated`` of ``nruns`` runs (the
    ``(id, time)`` pairs first), upsert the long values of each kind (five arrays
    each), then, with ``columns``, the ``metrics`` row (its parameters last).
    ``new_keys``: the long values by plain INSERT (a stored key fails the statement).

    ``one_row``: the values of one row, whose key is the same for all: each kind's five
    parameters are the key's three values and two arrays (names, values), so only
    those two are built, sent and unnested (10,000 names: a third of the array
    elements)."""
    parts: list[str] = []
    number = 0

    def mark(cast: str = "") -> str:
        nonlocal number
        number += 1
        return f"${number}{cast}"

    if nruns:
        pairs = ", ".join(f"({mark('::bigint')}, {mark('::timestamptz')})" for _ in range(nruns))
        parts.append(f"UPDATE {prefix}runs AS r SET time_updated = u.t "
                     f"FROM (VALUES {pairs}) AS u (id, t) WHERE r.id = u.id")
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _LONG_COLUMNS)
    for kind in kinds:
        slot = _LONG_COLUMNS[LONG_SLOTS[kind]]
        if one_row:
            key = ", ".join([mark("::int8"), mark("::int8"), mark("::float8")])
            arrays = ", ".join([mark("::text[]"), mark("::" + _LONG_ARRAYS[kind])])
            source = f"SELECT {key}, u.n, u.v FROM unnest({arrays}) AS u (n, v)"
        else:
            arrays = ", ".join([mark("::int8[]"), mark("::int8[]"), mark("::float8[]"),
                                mark("::text[]"), mark("::" + _LONG_ARRAYS[kind])])
            source = f"SELECT * FROM unnest({arrays})"
        conflict = "" if new_keys else (
            f" ON CONFLICT (run_id, name, step, progress) DO UPDATE SET {updates}")
        parts.append(
            f"INSERT INTO {prefix}metric_values (run_id, step, progress, name, {slot}) "
            f"{source}{conflict}"
        )
    if columns:
        first = number
        parts.append(_upsert_text(columns, False, 1, lambda n: f"${n + first}", prefix).decode())
    *ctes, main = parts
    if not ctes:
        return main.encode()
    heads = ", ".join(f"s{i} AS ({text})" for i, text in enumerate(ctes))
    return f"WITH {heads} {main}".encode()


#: Rows of users' SQL fetched at a time (each batch counted before the next is asked for).
FETCH_ROWS = 100


def _left_ms(deadline: float) -> str:
    """What is left until ``deadline``, as a ``statement_timeout`` (ms, at least 1)."""
    return str(max(1, int((deadline - time.monotonic()) * 1000)))


def _capped_query(
    text: str, types: Sequence[tuple[str | None, int]], cap: int
) -> tuple[str, str, list[str]]:
    """Users' statement ``text`` wrapped so that no value over ``cap`` bytes leaves the
    server whole: the query the reader's function runs, the column definitions of its
    rows, and per column of ``text`` its kind (see ``_uncapped``).

    - fixed size (``typlen`` > 0): as it is (``fixed``);
    - ``bytea``: its first ``cap`` bytes and its length (``binary``);
    - any other type: the value when its text form has at most ``cap`` bytes, else the
      first ``cap`` characters of that text form; and the length (``text``). The value
      is cast back to its type with its modifier (``varchar(3)``), which a ``CASE``
      drops and the function's rows must keep.

    The length is computed once a value (a LATERAL subquery) and counted by the client.
    """
    inner = ", ".join(f"c{i:d}" for i in range(len(types)))
    lengths: list[str] = []
    outs: list[str] = []
    definition: list[str] = []
    kinds: list[str] = []
    for i, (kind, typlen) in enumerate(types):
        if typlen > 0:
            outs.append(f"u.c{i:d}")
            definition.append(f"c{i:d} {kind}")
            kinds.append("fixed")
        elif typlen == 0:
            lengths.append(f"octet_length(u.c{i:d}) AS n{i:d}")
            outs.append(f"CASE WHEN s.n{i:d} > {cap:d} THEN substring(u.c{i:d} FROM 1 FOR "
                        f"{cap:d}) ELSE u.c{i:d} END, s.n{i:d}")
            definition.append(f"v{i:d} bytea, n{i:d} integer")
            kinds.append("binary")
        else:
            lengths.append(f"octet_length(CAST(u.c{i:d} AS text)) AS n{i:d}")
            outs.append(f"CAST(CASE WHEN s.n{i:d} > {cap:d} THEN NULL ELSE u.c{i:d} END AS "
                        f"{kind}), "
                        f"CASE WHEN s.n{i:d} > {cap:d} THEN left(CAST(u.c{i:d} AS text), "
                        f"{cap:d}) END, s.n{i:d}")
            definition.append(f"v{i:d} {kind}, h{i:d} text, n{i:d} integer")
            kinds.append("text")
    lateral = (", LATERAL (SELECT " + ", ".join(lengths) + ") AS s") if lengths else ""
    query = f"SELECT {', '.join(outs)} FROM (\n{text}\n) AS u({inner}){lateral}"
    return query, ", ".join(definition), kinds


def _uncapped(raw: Sequence[Any], kinds: Sequence[str]) -> tuple[tuple[Any, ...], int]:
    """A row of ``_capped_query`` back as the user's columns (a cut value as ``Cut``),
    and what it counts towards the byte limit."""
    values: list[Any] = []
    size = 0
    at = 0
    for kind in kinds:
        if kind == "fixed":
            value = raw[at]
            size += value_size(value)
            at += 1
        elif kind == "binary":
            value, length = raw[at], raw[at + 1]
            if length is not None and length > len(value):
                value = Cut(bytes(value), length)
            size += value_size(value)
            at += 2
        else:
            value, head, length = raw[at], raw[at + 1], raw[at + 2]
            if head is not None:
                shown = value_size(head)  # ``cap`` characters may be the whole text
                value = head if shown >= length else Cut(head, length)
                size += shown
            else:
                size += 1 if length is None else length
            at += 3
        values.append(value)
    return tuple(values), size


def _load_json(data: str | bytes) -> Any:
    """A json / jsonb value as Python; one nested too deeply for Python's parser (sqltrack
    never writes one: ``checks.MAX_JSON_DEPTH``; other writers may) is a dict with a note
    saying so, so that reading a row never fails on it."""
    try:
        return json.loads(data)
    except RecursionError:
        return {"(not shown)": f"JSON nested too deeply to load ({len(data)} characters)"}
