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
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import lru_cache
from itertools import chain, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

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
from .base import BATCH_KEY, BatchRow, Engine
from .dialects import SQLITE_TYPES as _KIND_TYPES
from .dialects import SqliteDialect

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 60.0
_PRAGMAS = (
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
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


def translate(error: sqlite3.Error) -> DatabaseError:
    """sqltrack's error for a sqlite3 error (raise it ``from error``)."""
    text = str(error)
    kind: type[DatabaseError] = DatabaseError
    if isinstance(error, sqlite3.IntegrityError):
        if text.startswith("UNIQUE constraint failed"):
            kind = UniqueViolation
        elif text.startswith("FOREIGN KEY constraint failed"):
            kind = ForeignKeyViolation
        else:
            kind = IntegrityError
    return kind(text)


def _in_worker(
    conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any
) -> Awaitable[T]:
    """Run ``fn(sqlite3_connection, *args)`` in the connection's thread: one hop.

    aiosqlite queues every call to its worker thread; a whole operation (statements
    plus commit) as one queued function costs one hop instead of one per statement.
    """
    return conn._execute(fn, conn._conn, *args)  # type: ignore[no-untyped-call]


def _fetch(c: sqlite3.Connection, sql: str, params: Any, autocommit: bool) -> list[Any]:
    try:
        cursor = c.execute(sql, params)
        rows = cursor.fetchall() if cursor.description else []
        if autocommit and c.in_transaction:
            c.commit()
        return rows
    except BaseException:
        if autocommit and c.in_transaction:
            c.rollback()
        raise


def _executemany(c: sqlite3.Connection, sql: str, rows: Sequence[Any], autocommit: bool) -> None:
    try:
        c.executemany(sql, rows)
        if autocommit and c.in_transaction:
            c.commit()
    except BaseException:
        if autocommit and c.in_transaction:
            c.rollback()
        raise


def _executescript(c: sqlite3.Connection, script: str, autocommit: bool) -> None:
    # sqlite3's executescript commits a pending transaction first; inside a user
    # block we run the statements one by one so they stay in the block's transaction.
    if autocommit:
        c.executescript(script)
        return
    for statement in _split_script(script):
        c.execute(statement)


def _split_script(script: str) -> list[str]:
    # Split at each ';' that ends a complete statement (not one in a string, a
    # comment or a trigger body), so statements sharing a line are split too.
    statements: list[str] = []
    start = 0
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
    rows: Sequence[Sequence[Any]],
    touch: Sequence[Any] | None,
    autocommit: bool,
) -> None:
    """Upsert metric rows (one or many), touch the run, commit unless in a block: one hop."""
    try:
        if len(rows) == 1:
            c.execute(upsert, rows[0])
        else:
            c.executemany(upsert, rows)
        if touch is not None:
            c.execute("UPDATE runs SET time_updated = ? WHERE id = ?", touch)
        if autocommit:
            c.commit()
    except BaseException as error:
        if autocommit and c.in_transaction:
            c.rollback()
        if isinstance(error, sqlite3.IntegrityError) and "FOREIGN KEY" in str(error):
            raise RunNotFound(rows[0][0]) from None
        raise


#: Rows per statement of a batch write: one multi-row upsert takes this many rows (fewer
#: when that would pass SQLite's limit on parameters); the rest go by smaller statements.
BATCH_STATEMENT_ROWS = 100
#: SQLite's limit on the parameters of one statement when the driver cannot tell it
#: (Python 3.10: no ``Connection.getlimit``): the default of SQLite before 3.32.
DEFAULT_VARIABLE_LIMIT = 999
_VARIABLE_LIMIT = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", 9)
_KEY_AND_VALUES = itemgetter(slice(BATCH_KEY, None))


def _adapted(params: tuple[Any, ...], adapt: Callable[[Any], Any]) -> tuple[Any, ...]:
    """A row's ``(step, progress, *values)`` as SQLite takes them: only a row holding a
    NaN, a datetime, text or None goes through ``adapt`` (one ``sum()`` tells)."""
    try:
        total = sum(params)
        if total == total:  # False for a NaN (and inf - inf: adapted, harmless)
            return params
    except TypeError:  # a str, None or datetime value
        pass
    return params[:2] + tuple(map(adapt, params[2:]))


def _batch_params(
    run_id: int, rows: Sequence[BatchRow], adapt: Callable[[Any], Any]
) -> list[Any]:
    """The parameters of a batch, flat: ``run_id, step, progress, *values`` per row.

    Built by C-level loops (``map``, ``chain``); one ``sum()`` over every row tells
    whether the batch holds a value SQLite cannot take as it is (NaN, datetime, text,
    None); only then is each row looked at, and only such a row adapted.
    """
    tails: Sequence[tuple[Any, ...]] = list(map(_KEY_AND_VALUES, rows))
    try:
        total = sum(chain.from_iterable(tails))
        plain = total == total
    except TypeError:
        plain = False
    if not plain:
        tails = [_adapted(t, adapt) for t in tails]
    return list(chain.from_iterable(map(tuple.__add__, repeat((run_id,)), tails)))


def _write_batch(
    c: sqlite3.Connection,
    names: tuple[str, ...],
    run_id: int,
    rows: Sequence[BatchRow],
    adapt: Callable[[Any], Any],
    touch: Sequence[Any] | None,
    autocommit: bool,
) -> None:
    """A batch in one transaction, as multi-row upserts of ``BATCH_STATEMENT_ROWS`` rows
    (then of a tenth of that, then of one row for the rest): one hop.

    The parameters are built here, in the worker thread, not on the event loop. A
    multi-row statement binds all its parameters at once and runs without the GIL
    (about half the time of one ``executemany`` row by row); each statement size is
    one text, so sqlite3's statement cache prepares it once per connection. A
    ``(step, progress)`` repeated in the batch is upserted twice, in order: the later
    values win, as with one upsert per row.
    """
    width = 3 + len(names)
    getlimit = getattr(c, "getlimit", None)  # Python 3.11+
    limit = int(getlimit(_VARIABLE_LIMIT)) if getlimit is not None else DEFAULT_VARIABLE_LIMIT
    size = max(1, min(BATCH_STATEMENT_ROWS, limit // width))
    params = _batch_params(run_id, rows, adapt)
    try:
        start = 0
        left = len(rows)
        while left:
            count = left // size
            if count:
                step = size * width
                end = start + count * step
                c.executemany(_upsert_sql(names, size),
                              [params[i:i + step] for i in range(start, end, step)])
                start = end
                left -= count * size
            size = max(1, size // 10)
        if touch is not None:
            c.execute("UPDATE runs SET time_updated = ? WHERE id = ?", touch)
        if autocommit:
            c.commit()
    except BaseException as error:
        if autocommit and c.in_transaction:
            c.rollback()
        if isinstance(error, sqlite3.IntegrityError) and "FOREIGN KEY" in str(error):
            raise RunNotFound(run_id) from None
        raise


#: One inline metric write in this many goes through the pool (see write_metrics_inline).
INLINE_CHECKPOINT_EVERY = 500
#: After this many buffered rows written inline, a batch goes through the pool
#: (see ``SqliteEngine.write_metrics_batch``).
INLINE_BATCH_CHECKPOINT_ROWS = 4000


def _open_inline(c: sqlite3.Connection, path: str) -> sqlite3.Connection:
    """The loop's inline connection (made in a worker thread: WAL set-up may wait)."""
    conn = sqlite3.connect(path, timeout=0, isolation_level="IMMEDIATE",
                           check_same_thread=False)
    try:
        _connect_worker(conn)
        conn.execute("PRAGMA wal_autocheckpoint=0")
    except BaseException:
        conn.close()
        raise
    return conn


class _Pool:
    """At most ``max_size`` aiosqlite connections, made on demand, reused idle-first."""

    def __init__(
        self,
        factory: Callable[[], Awaitable[aiosqlite.Connection]],
        max_size: int,
        timeout: float,
    ) -> None:
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
    dialect = SqliteDialect()

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.path: str = settings.params["dbpath"]
        self._pool: _Pool | None = None
        #: Connections in a user block (their statements wait for end_block's commit).
        self._blocks: set[aiosqlite.Connection] = set()
        #: The event loop thread's own connection (``write_metrics_inline``).
        self._inline: sqlite3.Connection | None = None
        self._inline_count = 0
        self._inline_rows = 0
        #: Each calling thread's own sqlite3 connection (``write_metrics_blocking``).
        self._direct = threading.local()
        self._direct_conns: list[sqlite3.Connection] = []

    async def _new_connection(self) -> aiosqlite.Connection:
        conn = aiosqlite.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level="IMMEDIATE",
            check_same_thread=False,
        )
        # A forgotten connection must not keep the interpreter from exiting.
        conn._thread.daemon = True
        try:
            await conn
            await _in_worker(conn, _connect_worker)
        except sqlite3.Error as error:
            # The file cannot be opened: the one way a SQLite "connection" fails.
            text = f"cannot open the SQLite database {self.path!r}: {error}"
            raise ConnectionLost(text) from error
        return conn

    async def open(self) -> None:
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        s = self.settings
        self._pool = _Pool(self._new_connection, s.pool_max_size, s.pool_timeout)

    async def close(self) -> None:
        conns, self._direct_conns = self._direct_conns, []
        self._direct = threading.local()
        for direct in conns:
            direct.close()
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        if self._pool is not None:
            await self._pool.close()

    def _row_and_touch(
        self,
        run_id: int,
        step: int,
        progress: float,
        values: Sequence[Any],
        updated: datetime | None,
    ) -> tuple[tuple[Any, ...], tuple[Any, int] | None]:
        """The metrics row's parameters and the ``runs.time_updated`` touch (None: none).

        A plain non-NaN float (the usual metric) needs no adaptation: the call is skipped.
        """
        value = self.dialect.metric_value
        row = (run_id, step, progress,
               *[v if type(v) is float and v == v else value(v) for v in values])
        touch = None if updated is None else (self.dialect.timestamp(updated), run_id)
        return row, touch

    blocking_writes = True

    def write_metrics_blocking(
        self,
        names: tuple[str, ...],
        run_id: int,
        step: int,
        progress: float,
        values: Sequence[Any],
        updated: datetime | None,
    ) -> None:
        """``write_metrics`` in the calling thread, on that thread's own connection.

        No event loop and no worker thread on the way: the blocking API's
        write-through ``add_metrics`` costs the SQL and little else. The connection
        is set up like the pool's (WAL, busy timeout, ``BEGIN IMMEDIATE``) and each
        call commits, so concurrent writers wait for the lock as the pool's do.
        """
        conn = getattr(self._direct, "conn", None)
        try:
            if conn is None:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS,
                                       isolation_level="IMMEDIATE", check_same_thread=False)
                _connect_worker(conn)
                self._direct.conn = conn
                self._direct_conns.append(conn)
            row, touch = self._row_and_touch(run_id, step, progress, values, updated)
            _write_metrics(conn, _upsert_sql(names), (row,), touch, True)
        except sqlite3.Error as error:
            raise translate(error) from error

    def _opened_pool(self) -> _Pool:
        if self._pool is None:
            raise RuntimeError("the engine is not open")
        return self._pool

    async def acquire(self, timeout: float | None = None) -> aiosqlite.Connection:
        # A local file: a wait is for a free connection only (pool_timeout).
        return await self._opened_pool().acquire()

    def server_name(self) -> str:
        return f"the SQLite database {self.settings.params['dbpath']!r}"

    async def release(self, conn: aiosqlite.Connection) -> None:
        self._blocks.discard(conn)
        try:
            if conn.in_transaction:
                await conn.rollback()
        finally:
            self._opened_pool().release(conn)

    async def begin_block(self, conn: aiosqlite.Connection) -> None:
        self._blocks.add(conn)

    async def end_block(self, conn: aiosqlite.Connection, commit: bool) -> None:
        self._blocks.discard(conn)
        try:
            if commit:
                await conn.commit()
            else:
                await conn.rollback()
        except sqlite3.Error as error:
            raise translate(error) from error

    def in_block(self, conn: aiosqlite.Connection) -> bool:
        return conn in self._blocks

    async def commit(self, conn: aiosqlite.Connection) -> None:
        try:
            await conn.commit()
        except sqlite3.Error as error:
            raise translate(error) from error

    async def rollback(self, conn: aiosqlite.Connection) -> None:
        await conn.rollback()

    async def cursor(self, conn: aiosqlite.Connection) -> aiosqlite.Cursor:
        return await conn.cursor()

    async def fetch(self, conn: aiosqlite.Connection, sql: str, params: Any = ()) -> list[Any]:
        try:
            return await _in_worker(conn, _fetch, sql, params, conn not in self._blocks)
        except sqlite3.Error as error:
            raise translate(error) from error

    async def executemany(
        self, conn: aiosqlite.Connection, sql: str, rows: Sequence[Any]
    ) -> None:
        try:
            await _in_worker(conn, _executemany, sql, rows, conn not in self._blocks)
        except sqlite3.Error as error:
            raise translate(error) from error

    async def executescript(self, conn: aiosqlite.Connection, script: str) -> None:
        try:
            await _in_worker(conn, _executescript, script, conn not in self._blocks)
        except sqlite3.Error as error:
            raise translate(error) from error

    async def lock_schema(self, conn: aiosqlite.Connection) -> None:
        """Take the write lock, so one process at a time creates or migrates the schema."""
        try:
            await _in_worker(conn, lambda c: c.execute("BEGIN IMMEDIATE"))
        except sqlite3.Error as error:
            raise translate(error) from error

    async def metric_columns(self, conn: aiosqlite.Connection) -> dict[str, str | None]:
        rows = await self.fetch(conn, "PRAGMA table_info(metrics)")
        return {
            name: _TYPE_KINDS.get(str(declared).upper())
            for _, name, declared, *_ in rows
            if name not in ("run_id", "step", "progress")
        }

    async def add_metric_column(self, conn: aiosqlite.Connection, name: str, kind: str) -> None:
        sql = f"ALTER TABLE metrics ADD COLUMN {self.dialect.quote_ident(name)} {_KIND_TYPES[kind]}"
        try:
            await _in_worker(conn, _fetch, sql, (), conn not in self._blocks)
        except sqlite3.OperationalError as error:
            if "duplicate column name" not in str(error):
                raise translate(error) from error
        except sqlite3.Error as error:
            raise translate(error) from error

    async def write_metrics(
        self,
        conn: aiosqlite.Connection,
        names: tuple[str, ...],
        run_id: int,
        step: int,
        progress: float,
        values: Sequence[Any],
        updated: datetime | None,
    ) -> None:
        row, touch = self._row_and_touch(run_id, step, progress, values, updated)
        autocommit = conn not in self._blocks
        try:
            await _in_worker(conn, _write_metrics, _upsert_sql(names), (row,), touch, autocommit)
            if autocommit and self._inline is None:
                self._inline = await _in_worker(conn, _open_inline, self.path)
        except sqlite3.Error as error:
            raise translate(error) from error

    # -- the async hot path without the worker-thread hop ---------------------------
    inline_writes = True

    def write_metrics_inline(
        self,
        names: tuple[str, ...],
        run_id: int,
        step: int,
        progress: float,
        values: Sequence[Any],
        updated: datetime | None,
    ) -> bool:
        """``write_metrics`` on the event loop's thread, when that cannot block it; False if not.

        The inline connection has no busy timeout: when another connection holds
        the write lock, BEGIN IMMEDIATE fails at once, nothing is written and the
        caller takes the worker-thread path (which waits for the lock). It never
        checkpoints the WAL (that fsyncs): every ``INLINE_CHECKPOINT_EVERY``-th
        call goes through a pooled connection instead, whose commit checkpoints
        in its worker thread when the WAL is long. Not open until a first pooled
        write made it (False until then).
        """
        conn = self._inline
        if conn is None:
            return False
        self._inline_count += 1
        if not self._inline_count % INLINE_CHECKPOINT_EVERY:
            return False
        row, touch = self._row_and_touch(run_id, step, progress, values, updated)
        try:
            _write_metrics(conn, _upsert_sql(names), (row,), touch, True)
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return False
            raise translate(error) from error
        except sqlite3.Error as error:
            raise translate(error) from error
        return True

    async def write_metrics_batch(
        self,
        conn: aiosqlite.Connection,
        names: tuple[str, ...],
        run_id: int,
        rows: Sequence[BatchRow],
        updated: datetime | None,
    ) -> None:
        """A batch in one transaction (see ``_write_batch``), on the event loop's inline
        connection when that cannot wait (as ``write_metrics_inline``), else in the
        connection's worker thread.

        Inline saves the two thread wake-ups of the worker path (what a loaded
        machine delays most) for the statements' own time on the loop (about 1 ms per
        1000 rows, without the GIL while a statement runs). A held write lock fails
        ``BEGIN IMMEDIATE`` at once, nothing is written, and the batch takes the worker
        path, which waits for the lock. After ``INLINE_BATCH_CHECKPOINT_ROWS`` rows
        inline, a batch goes through the pool, whose commit checkpoints the WAL.
        """
        touch = None if updated is None else (self.dialect.timestamp(updated), run_id)
        autocommit = conn not in self._blocks
        adapt = self.dialect.metric_value
        inline = self._inline
        if autocommit and inline is not None and self._inline_rows < INLINE_BATCH_CHECKPOINT_ROWS:
            try:
                _write_batch(inline, names, run_id, rows, adapt, touch, True)
                self._inline_rows += len(rows)
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise translate(error) from error
            except sqlite3.Error as error:
                raise translate(error) from error
        try:
            await _in_worker(conn, _write_batch, names, run_id, rows, adapt, touch, autocommit)
            if autocommit:
                self._inline_rows = 0
                if self._inline is None:
                    self._inline = await _in_worker(conn, _open_inline, self.path)
        except sqlite3.Error as error:
            raise translate(error) from error


@lru_cache(maxsize=4096)
def _upsert_sql(names: tuple[str, ...], rows: int = 1) -> str:
    """The upsert of ``rows`` metrics rows with these metric columns (one text per size)."""
    quoted = ['"' + n.replace('"', '""') + '"' for n in names]
    columns = ", ".join(["run_id", "step", "progress", *quoted])
    marks = ", ".join(["(" + ", ".join("?" * (3 + len(names))) + ")"] * rows)
    if not names:
        return f"INSERT INTO metrics ({columns}) VALUES {marks} ON CONFLICT DO NOTHING"
    updates = ", ".join(f"{q} = excluded.{q}" for q in quoted)
    return (
        f"INSERT INTO metrics ({columns}) VALUES {marks} "
        f"ON CONFLICT (run_id, step, progress) DO UPDATE SET {updates}"
    )
