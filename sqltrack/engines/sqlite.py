"""SQLite: a small pool of connections, each with its worker thread (``sqlite_worker``).

Connections run in WAL mode with ``synchronous=NORMAL``, a busy timeout and
foreign keys on. Writes open ``BEGIN IMMEDIATE`` transactions, so concurrent
writers wait for the lock (up to the busy timeout) instead of failing with
"database is locked" half-way through a transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from itertools import chain, repeat
from pathlib import Path
from typing import Any, TypeVar

from ..config import Settings
from ..errors import (
    ConnectionLost,
    DatabaseBusy,
    DatabaseError,
    ForeignKeyViolation,
    IntegrityError,
    PoolTimeout,
    QueryRefused,
    RunNotFound,
    UniqueViolation,
)
from ..metrics import layout
from ..metrics.layout import LONG_SLOTS, MetricRow, Placement, Touch
from .base import (
    Cut,
    Engine,
    Limits,
    ReadRows,
    ThreadWriter,
    capped,
    quote_ident,
    stopped_after,
    value_size,
)
from .dialects import SQLITE_TYPES as _KIND_TYPES
from .dialects import SqliteDialect
from .sqlite_worker import SqliteConnection, SqliteCursor, connect_private

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


#: SQLite's result codes for "another connection holds the lock" (SQLITE_BUSY, SQLITE_LOCKED).
_BUSY_CODES = (5, 6)


def is_busy(error: sqlite3.Error) -> bool:
    """Whether another connection held the lock (no wait, or the busy timeout passed)."""
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    text = str(error)
    return isinstance(error, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def translate(error: sqlite3.Error) -> DatabaseError:
    """sqltrack's error for a sqlite3 error (raise it ``from error``): every driver
    message that means something to sqltrack is read here, and only here."""
    text = str(error)
    kind: type[DatabaseError] = DatabaseError
    if is_busy(error):
        kind = DatabaseBusy
    elif isinstance(error, sqlite3.IntegrityError):
        if text.startswith("UNIQUE constraint failed"):
            kind = UniqueViolation
        elif text.startswith("FOREIGN KEY constraint failed"):
            kind = ForeignKeyViolation
        else:
            kind = IntegrityError
    return kind(text)


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


#: Rows per statement of a batch write: one multi-row upsert takes this many rows (fewer
#: when that would pass SQLite's limit on parameters); the rest go by smaller statements.
BATCH_STATEMENT_ROWS = 100
#: SQLite's limit on the parameters of one statement when the driver cannot tell it
#: (Python 3.10: no ``Connection.getlimit``): the default of SQLite before 3.32.
DEFAULT_VARIABLE_LIMIT = 999
_VARIABLE_LIMIT = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", 9)
#: Rows of more parameters than this go by ``executemany`` of the one-row upsert, not by
#: multi-row statements (measured, SQLite 3.40, process CPU per row of a buffered client's
#: batch of 100 to 1,000 rows): 1,003 parameters 10-20% less one row a statement; 303
#: about even; 103 about 10% more (a row's GIL hand-over between the batch's worker
#: thread and the producer costs more than a narrow row's multi-row binding saves).
WIDE_ROW_PARAMETERS = 200
_TOUCH = "UPDATE runs SET time_updated = ? WHERE id = ?"


def _adapted(params: tuple[Any, ...], adapt: Callable[[Any], Any]) -> tuple[Any, ...]:
    """A row's ``(run_id, step, progress, *values)`` as SQLite takes them: only a row
    holding a NaN, a datetime, text or None goes through ``adapt`` (one ``sum()`` tells)."""
    try:
        total = sum(params)
        if total == total:  # False for a NaN (and inf - inf: adapted, harmless)
            return params
    except TypeError:  # a str, None or datetime value
        pass
    return params[:3] + tuple(map(adapt, params[3:]))


def _row_params(rows: Sequence[MetricRow], adapt: Callable[[Any], Any]) -> list[tuple[Any, ...]]:
    """Each row's ``(run_id, step, progress, *values)`` as SQLite takes them (see
    ``_flat_params``: one ``sum()`` tells whether any row needs adapting)."""
    params = list(map(layout.params, rows))
    try:
        total = sum(chain.from_iterable(params))
        if total == total:
            return params
    except TypeError:
        pass
    return [_adapted(p, adapt) for p in params]


def _flat_params(rows: Sequence[MetricRow], adapt: Callable[[Any], Any]) -> list[Any]:
    """The parameters of rows, flat: ``run_id, step, progress, *values`` per row.

    Built by C-level loops (``map``, ``chain``); one ``sum()`` over every row tells
    whether they hold a value SQLite cannot take as it is (NaN, datetime, text,
    None); only then is each row looked at, and only such a row adapted.
    """
    return list(chain.from_iterable(_row_params(rows, adapt)))


def _write_rows(
    c: sqlite3.Connection,
    names: tuple[str, ...],
    rows: Sequence[MetricRow],
    adapt: Callable[[Any], Any],
    touches: Sequence[tuple[str, int]],
    autocommit: bool,
    placement: Placement | None = None,
) -> None:
    """Rows in one transaction, as multi-row upserts of ``BATCH_STATEMENT_ROWS`` rows
    (then of a tenth of that, then of one row for the rest), the touches, the commit:
    one call, made in one thread (a worker's, or the caller's own).

    A multi-row statement binds all its parameters at once and runs without the GIL
    (about half the time of one ``executemany`` row by row); each statement size is
    one text, so sqlite3's statement cache prepares it once per connection. Rows
    wider than ``WIDE_ROW_PARAMETERS`` go by one ``executemany`` of the one-row upsert
    instead (faster for them, see there). A key repeated in the rows is upserted
    twice, in order: the later values win, as with one upsert per row.

    Long-stored metrics (``placement``): their values are upserted into
    ``metric_values`` in the same transaction; a row whose names are all long adds no
    ``metrics`` row.
    """
    column_rows = rows
    if placement is not None:
        names = placement.columns
        column_rows = [layout.column_row(row, placement) for row in rows] if names else []
    try:
        if column_rows:
            _write_columns(c, names, column_rows, adapt)
        if placement is not None:
            _write_long(c, rows, placement, adapt)
        if len(touches) == 1:
            c.execute(_TOUCH, touches[0])
        elif touches:
            c.executemany(_TOUCH, touches)
        if autocommit:
            c.commit()
    except BaseException as error:
        if autocommit and c.in_transaction:
            c.rollback()
        if isinstance(error, sqlite3.IntegrityError) and "FOREIGN KEY" in str(error):
            run = layout.single_run(rows)
            if run is not None:
                raise RunNotFound(run) from None
        raise


def _write_columns(
    c: sqlite3.Connection, names: tuple[str, ...], rows: Sequence[MetricRow],
    adapt: Callable[[Any], Any],
) -> None:
    """The ``metrics`` part of ``_write_rows`` (no commit)."""
    if len(rows) == 1:
        c.execute(_one_row_upsert_sql(names), _adapted(layout.params(rows[0]), adapt))
        return
    width = 3 + len(names)
    if width > WIDE_ROW_PARAMETERS:
        c.executemany(_upsert_sql(names), _row_params(rows, adapt))
        return
    getlimit = getattr(c, "getlimit", None)  # Python 3.11+
    limit = int(getlimit(_VARIABLE_LIMIT)) if getlimit is not None else DEFAULT_VARIABLE_LIMIT
    size = max(1, min(BATCH_STATEMENT_ROWS, limit // width))
    params = _flat_params(rows, adapt)
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


#: The value column of ``metric_values`` of each slot (``LONG_SLOTS``).
_LONG_COLUMNS = ("value", "value_int", "value_bool", "value_text", "value_time")
#: Long values per multi-row upsert (5 parameters each: within SQLite's oldest limit, 999).
LONG_STATEMENT_ROWS = 100


@lru_cache(maxsize=64)
def _long_upsert_sql(column: str, rows: int) -> str:
    """The upsert of ``rows`` long values of one kind into its value column (the other
    value columns set to NULL: a row holds one value)."""
    marks = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _LONG_COLUMNS)
    return (f"INSERT INTO metric_values (run_id, step, progress, name, {column}) "
            f"VALUES {marks} ON CONFLICT (run_id, name, step, progress) DO UPDATE SET {updates}")


def _write_long(
    c: sqlite3.Connection, rows: Sequence[MetricRow], where: Placement,
    adapt: Callable[[Any], Any],
) -> None:
    """The long-stored values of rows: multi-row upserts of ``LONG_STATEMENT_ROWS``
    values per kind, in row order (SQLite applies a statement's rows one by one: a key
    repeated keeps its later value). About twice as fast as one upsert per value.

    Each row's parameters of one kind are built by C-level loops (``zip`` with the
    row's key repeated, flattened by ``chain``); only values that SQLite cannot take
    as they are (one ``sum()`` tells) go through ``adapt``."""
    per_kind: dict[str, list[Any]] = {}
    for kind, names, pick in where.long_groups:
        flat = per_kind[kind] = []
        for row in rows:
            run, step, progress = layout.key(row)
            values: Any = pick(row)
            try:
                total = sum(values)
                if total != total:  # a NaN
                    values = map(adapt, values)
            except TypeError:  # text, None or datetime values
                values = map(adapt, values)
            flat += chain.from_iterable(
                zip(repeat(run), repeat(step), repeat(progress), names, values))
    width = 5 * LONG_STATEMENT_ROWS
    for kind, flat in per_kind.items():
        column = _LONG_COLUMNS[LONG_SLOTS[kind]]
        full = len(flat) // width * width
        if full:
            c.executemany(_long_upsert_sql(column, LONG_STATEMENT_ROWS),
                          [flat[i:i + width] for i in range(0, full, width)])
        if full < len(flat):
            c.execute(_long_upsert_sql(column, (len(flat) - full) // 5), flat[full:])


def _add_columns(
    c: sqlite3.Connection, columns: Sequence[tuple[str, str]], autocommit: bool,
    view: Callable[[dict[str, str | None]], str | None],
) -> bool:
    """The missing ones of ``columns`` in one transaction with the view made again
    (False: the table cannot take that many columns; nothing added)."""
    try:
        if autocommit and not c.in_transaction:
            c.execute("BEGIN IMMEDIATE")
        present = {str(r[1]).lower() for r in c.execute("PRAGMA table_info(metrics)")}
        for name, kind in columns:
            if name.lower() not in present:
                present.add(name.lower())
                c.execute(f"ALTER TABLE metrics ADD COLUMN {quote_ident(name)} {_KIND_TYPES[kind]}")
        _make_view(c, view)
        if autocommit:
            c.commit()
        return True
    except sqlite3.OperationalError as error:
        if autocommit and c.in_transaction:
            c.rollback()
        if "too many columns" in str(error):
            return False
        raise
    except BaseException:
        if autocommit and c.in_transaction:
            c.rollback()
        raise


def _make_view(c: sqlite3.Connection, view: Callable[[dict[str, str | None]], str | None]) -> None:
    """The view ``metric_values_all`` made again for the columns of ``metrics`` (no commit)."""
    columns = {
        str(name): _TYPE_KINDS.get(str(declared).upper())
        for _, name, declared, *_ in c.execute("PRAGMA table_info(metrics)")
        if name not in ("run_id", "step", "progress")
    }
    script = view(columns)
    if script:
        for statement in _split_script(script):
            c.execute(statement)


def _refresh_view(
    c: sqlite3.Connection, autocommit: bool,
    view: Callable[[dict[str, str | None]], str | None],
) -> None:
    try:
        if autocommit and not c.in_transaction:
            c.execute("BEGIN IMMEDIATE")
        _make_view(c, view)
        if autocommit:
            c.commit()
    except BaseException:
        if autocommit and c.in_transaction:
            c.rollback()
        raise


#: After this many commits, or this many rows, on the event loop's own connection, a
#: write goes through the pool instead, whose commit checkpoints the WAL (see
#: ``SqliteThreadWriter``).
LOOP_CHECKPOINT_COMMITS = 500
LOOP_CHECKPOINT_ROWS = 4000


def _open_inline(c: sqlite3.Connection, path: str) -> sqlite3.Connection:
    """The loop's inline connection (made in a worker thread: WAL set-up may wait)."""
    conn = connect_private(path, timeout=0, isolation_level="IMMEDIATE",
                           check_same_thread=False)
    try:
        _connect_worker(conn)
        conn.execute("PRAGMA wal_autocheckpoint=0")
    except BaseException:
        conn.close()
        raise
    return conn


class _Pool:
    """At most ``max_size`` worker connections, made on demand, reused idle-first."""

    def __init__(
        self,
        factory: Callable[[], Awaitable[SqliteConnection]],
        max_size: int,
        timeout: float,
    ) -> None:
        self._factory = factory
        self._idle: list[SqliteConnection] = []
        self._all: list[SqliteConnection] = []
        self._slots = asyncio.Semaphore(max_size)
        self._timeout = timeout

    async def acquire(self) -> SqliteConnection:
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

    def release(self, conn: SqliteConnection) -> None:
        self._idle.append(conn)
        self._slots.release()

    async def close(self) -> None:
        conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            await conn.close()


#: Seconds ``close`` waits for a checkpoint that is running.
CHECKPOINT_CLOSE_WAIT = 10.0


def _settle_checkpoint(conn: sqlite3.Connection) -> None:
    """On a writer's connection, after a background checkpoint: checkpoint the few frames
    written meanwhile (no fsync wait of the whole WAL's copy), so that the WAL is wholly
    copied and the next write starts it over from its beginning. (SQLite reuses a WAL
    only when a write begins on a wholly checkpointed one: a writer that goes on while
    the background checkpoint runs would otherwise grow it for ever.)"""
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error:
        pass  # the next background checkpoint tries again


class _Checkpointer:
    """``PRAGMA wal_checkpoint(PASSIVE)`` in a short-lived thread of its own, on a
    connection of its own: the writing threads go on meanwhile (WAL mode lets a
    checkpoint run beside a writer) and never wait for its fsync. At most one runs at a
    time; a request while one runs is dropped (the next one, or a pooled commit's own
    automatic checkpoint, does it). A checkpoint that fails (the file went away, a
    busy lock) is left to those too: nothing depends on it but the WAL's length."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._running = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        #: A checkpoint completed and no writer has settled it yet (``_settle_checkpoint``).
        self.done = False

    def request(self) -> None:
        """Start a checkpoint unless one runs (never waits)."""
        if self._closed or not self._running.acquire(blocking=False):
            return
        try:
            threading.Thread(target=self._run, name="sqltrack-checkpoint", daemon=True).start()
        except BaseException:
            self._running.release()
            raise

    def _run(self) -> None:
        try:
            if self._closed:
                return
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.done = not busy
        except sqlite3.Error:
            pass  # see the class docstring
        finally:
            self._running.release()

    def close(self) -> None:
        """Wait (a bounded time) for a running checkpoint, then close the connection."""
        self._closed = True
        if not self._running.acquire(timeout=CHECKPOINT_CLOSE_WAIT):
            return  # still running (a huge WAL): its connection is left to the collector
        try:
            conn, self._conn = self._conn, None
        finally:
            self._running.release()
        if conn is not None:
            conn.close()


class SqliteThreadWriter(ThreadWriter):
    """Metric rows written on the calling thread's own connection (no worker-thread hop).

    The event loop's thread (``wait=False``) writes on one connection with no busy
    timeout: when another connection holds the write lock, ``BEGIN IMMEDIATE`` fails
    at once, nothing is written and the caller takes the pool (whose worker waits for
    the lock). It never checkpoints the WAL (that fsyncs): after
    ``LOOP_CHECKPOINT_COMMITS`` commits or ``LOOP_CHECKPOINT_ROWS`` rows, a write goes
    through the pool instead, whose commit checkpoints in its worker thread when the
    WAL is long. That connection is made by the engine after a first pooled write (in a
    worker: WAL set-up may wait), so until then every write takes the pool.

    Any other thread (``wait=True``: the blocking API's ``add_metrics``, from a thread
    that runs no event loop) writes on a connection of its own, set up like the pool's
    (WAL, busy timeout, ``BEGIN IMMEDIATE``): concurrent writers wait for the lock as
    the pool's do. Each write commits. Nor do these connections checkpoint: after as
    many commits or rows as the loop's, a ``_Checkpointer`` does it in a thread of its
    own (a training loop on the blocking API never waits for a checkpoint's fsync;
    measured at 1,000 metrics a step: about 15 % of each write's time).
    """

    def __init__(self, path: str, dialect: SqliteDialect) -> None:
        self.path = path
        self._adapt = dialect.metric_value
        self._timestamp = dialect.timestamp
        #: The event loop thread's own connection (None until the engine opened it).
        self.loop_conn: sqlite3.Connection | None = None
        self._loop_commits = 0
        self._loop_rows = 0
        #: Each other calling thread's own sqlite3 connection.
        self._direct = threading.local()
        self._direct_conns: list[sqlite3.Connection] = []
        #: Commits and rows on those connections since the last checkpoint request.
        self._direct_commits = 0
        self._direct_rows = 0
        self._checkpointer = _Checkpointer(path)

    def stamps(self, touches: Sequence[Touch]) -> list[tuple[str, int]]:
        """The ``UPDATE runs`` parameters of touches."""
        return [(self._timestamp(when), run) for run, when in touches]

    def write(
        self,
        names: tuple[str, ...],
        rows: Sequence[MetricRow],
        touches: Sequence[Touch],
        wait: bool,
        placement: Placement | None = None,
    ) -> bool:
        if not wait:
            conn = self.loop_conn
            if conn is None or (self._loop_commits >= LOOP_CHECKPOINT_COMMITS
                                or self._loop_rows >= LOOP_CHECKPOINT_ROWS):
                return False
            try:
                _write_rows(conn, names, rows, self._adapt, self.stamps(touches), True,
                            placement)
            except sqlite3.Error as error:
                if is_busy(error):
                    return False
                raise translate(error) from error
            self._loop_commits += 1
            self._loop_rows += len(rows)
            return True
        try:
            conn = getattr(self._direct, "conn", None)
            if conn is None:
                conn = connect_private(self.path, timeout=BUSY_TIMEOUT_SECONDS,
                                       isolation_level="IMMEDIATE", check_same_thread=False)
                _connect_worker(conn)
                conn.execute("PRAGMA wal_autocheckpoint=0")
                self._direct.conn = conn
                self._direct_conns.append(conn)
            _write_rows(conn, names, rows, self._adapt, self.stamps(touches), True, placement)
        except sqlite3.Error as error:
            raise translate(error) from error
        # Counted without a lock: two threads racing here only move a request a little.
        self._direct_commits += 1
        self._direct_rows += len(rows)
        checkpointer = self._checkpointer
        if checkpointer.done:
            checkpointer.done = False
            _settle_checkpoint(conn)
        elif (self._direct_commits >= LOOP_CHECKPOINT_COMMITS
                or self._direct_rows >= LOOP_CHECKPOINT_ROWS):
            self._direct_commits = self._direct_rows = 0
            checkpointer.request()
        return True

    def pooled_write_done(self) -> None:
        """A write went through the pool (and checkpointed if due): the loop's turn again."""
        self._loop_commits = 0
        self._loop_rows = 0

    def close(self) -> None:
        """Close every connection of the writer."""
        self._checkpointer.close()
        conns, self._direct_conns = self._direct_conns, []
        self._direct = threading.local()
        for direct in conns:
            direct.close()
        loop_conn, self.loop_conn = self.loop_conn, None
        if loop_conn is not None:
            loop_conn.close()


class SqliteEngine(Engine):
    name = "sqlite"
    dialect = SqliteDialect()

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.path: str = settings.params["dbpath"]
        self._pool: _Pool | None = None
        #: Connections in a user block (their statements wait for end_block's commit).
        self._blocks: set[SqliteConnection] = set()
        #: Metric rows written on the calling thread (see SqliteThreadWriter).
        self.thread_writer: SqliteThreadWriter = SqliteThreadWriter(self.path, self.dialect)

    async def _new_connection(self) -> SqliteConnection:
        try:
            conn = await SqliteConnection.open(
                self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level="IMMEDIATE",
                check_same_thread=False,
            )
        except sqlite3.Error as error:
            text = f"cannot open the SQLite database {self.path!r}: {error}"
            raise ConnectionLost(text) from error
        try:
            await conn.call(_connect_worker)
        except sqlite3.Error as error:
            # The file cannot be opened: the one way a SQLite "connection" fails.
            await conn.close()
            text = f"cannot open the SQLite database {self.path!r}: {error}"
            raise ConnectionLost(text) from error
        return conn

    async def open(self) -> None:
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        s = self.settings
        self._pool = _Pool(self._new_connection, s.pool_max_size, s.pool_timeout)

    async def close(self) -> None:
        self.thread_writer.close()
        if self._pool is not None:
            await self._pool.close()

    def _opened_pool(self) -> _Pool:
        if self._pool is None:
            raise RuntimeError("the engine is not open")
        return self._pool

    async def acquire(self, timeout: float | None = None) -> SqliteConnection:
        # A local file: a wait is for a free connection only (pool_timeout).
        return await self._opened_pool().acquire()

    def server_name(self) -> str:
        return f"the SQLite database {self.settings.params['dbpath']!r}"

    async def release(self, conn: SqliteConnection) -> None:
        self._blocks.discard(conn)
        try:
            if conn.in_transaction:
                await conn.rollback()
        finally:
            self._opened_pool().release(conn)

    async def begin_block(self, conn: SqliteConnection) -> None:
        self._blocks.add(conn)

    async def end_block(self, conn: SqliteConnection, commit: bool) -> None:
        self._blocks.discard(conn)
        try:
            if commit:
                await conn.commit()
            else:
                await conn.rollback()
        except sqlite3.Error as error:
            raise translate(error) from error

    def in_block(self, conn: SqliteConnection) -> bool:
        return conn in self._blocks

    async def commit(self, conn: SqliteConnection) -> None:
        try:
            await conn.commit()
        except sqlite3.Error as error:
            raise translate(error) from error

    async def rollback(self, conn: SqliteConnection) -> None:
        await conn.rollback()

    async def cursor(self, conn: SqliteConnection) -> SqliteCursor:
        return await conn.cursor()

    async def fetch(self, conn: SqliteConnection, sql: str, params: Any = ()) -> list[Any]:
        try:
            return await conn.call(_fetch, sql, params, conn not in self._blocks)
        except sqlite3.Error as error:
            raise translate(error) from error

    async def executemany(
        self, conn: SqliteConnection, sql: str, rows: Sequence[Any]
    ) -> None:
        try:
            await conn.call(_executemany, sql, rows, conn not in self._blocks)
        except sqlite3.Error as error:
            raise translate(error) from error

    async def executescript(self, conn: SqliteConnection, script: str) -> None:
        try:
            await conn.call(_executescript, script, conn not in self._blocks)
        except sqlite3.Error as error:
            raise translate(error) from error

    async def lock_schema(self, conn: SqliteConnection) -> None:
        """Take the write lock, so one process at a time creates or migrates the schema."""
        try:
            await conn.call(lambda c: c.execute("BEGIN IMMEDIATE"))
        except sqlite3.Error as error:
            raise translate(error) from error

    async def metric_columns(self, conn: SqliteConnection) -> dict[str, str | None]:
        rows = await self.fetch(conn, "PRAGMA table_info(metrics)")
        return {
            name: _TYPE_KINDS.get(str(declared).upper())
            for _, name, declared, *_ in rows
            if name not in ("run_id", "step", "progress")
        }

    async def add_metric_columns(
        self, conn: SqliteConnection, columns: Sequence[tuple[str, str]],
        lock_timeout: float | None,
    ) -> bool:
        """The columns in one transaction, with the view made again. SQLite readers (WAL)
        never block it: the wait is for the write lock, as every write's."""
        try:
            return bool(await conn.call(_add_columns, list(columns), conn not in self._blocks,
                                        self.dialect.metric_view_script))
        except sqlite3.Error as error:
            raise translate(error) from error

    async def refresh_metric_view(self, conn: SqliteConnection) -> None:
        try:
            await conn.call(_refresh_view, conn not in self._blocks,
                            self.dialect.metric_view_script)
        except sqlite3.Error as error:
            raise translate(error) from error

    async def read_only(
        self, sql: str, params: Sequence[Any], timeout: float, limits: Limits,
        *, reader: str = "sqltrack_reader", allow_superuser: bool = False,
    ) -> ReadRows:
        # SQLite has no roles: the read-only connection and the authorizer are the reader.
        uri = self.dialect.read_only_uri(self.settings)
        if uri is None:
            raise QueryRefused("an in-memory SQLite database cannot be read by a second connection")
        setup = self.dialect.read_only_setup(timeout)
        return await asyncio.to_thread(_read_only, uri, setup, sql, list(params), timeout, limits)

    async def write_rows(
        self,
        conn: SqliteConnection,
        names: tuple[str, ...],
        rows: Sequence[MetricRow],
        touches: Sequence[Touch],
        placement: Placement | None = None,
    ) -> None:
        """The rows in one transaction (see ``_write_rows``), in the connection's worker
        thread: one hop. After a committed write, the thread writer's loop connection is
        opened (first time) and it may write on the loop again (see SqliteThreadWriter)."""
        writer = self.thread_writer
        autocommit = conn not in self._blocks
        try:
            await conn.call(_write_rows, names, rows, self.dialect.metric_value,
                             writer.stamps(touches), autocommit, placement)
            if autocommit:
                writer.pooled_write_done()
                if writer.loop_conn is None:
                    writer.loop_conn = await conn.call(_open_inline, self.path)
        except sqlite3.Error as error:
            raise translate(error) from error


#: What the authorizer lets a statement do: read tables, call functions, recurse.
_ALLOWED = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                      sqlite3.SQLITE_RECURSIVE})
_DENIED_FUNCTIONS = frozenset({"load_extension"})


def _authorize(action: int, arg1: Any, arg2: Any, database: Any, trigger: Any) -> int:
    if action not in _ALLOWED:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _read_only(
    uri: str, setup: list[tuple[str, list[Any]]], sql: str, params: list[Any],
    timeout: float, limits: Limits,
) -> ReadRows:
    """Users' SQL on a read-only connection of its own (read-only is a connection
    setting here, and the pool's connections write): the ``mode=ro`` URI, ``query_only``,
    an authorizer that allows reads only, a progress handler for the deadline (it runs
    while rows are fetched too), and a length limit: no string or blob of the statement,
    intermediate ones included, may pass ``limits.max_bytes`` (SQLite refuses it), so
    one value never costs more than the whole answer may. Python 3.10's sqlite3 cannot
    set that limit (no ``Connection.setlimit``): there SQLite's own (a billion bytes by
    default) holds for intermediate values, and the answer's values are still counted.

    Rows are read one at a time (step-wise) and counted (``ReadRows.keep``). When
    values are to be cut (``limits.value_cap`` below ``max_bytes``: the SQL page), the
    statement is wrapped so that SQLite itself hands over only the first
    ``value_cap`` bytes or characters of a longer value, with its length
    (``_capped_query``)."""
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    except sqlite3.Error as error:
        raise QueryRefused(_one_line(f"cannot open the database read-only: {error}")) from None
    deadline = time.monotonic() + timeout
    cap = limits.value_cap
    try:
        for statement, values in setup:
            conn.execute(statement, values)
        if sys.version_info >= (3, 11):  # Connection.setlimit is new in Python 3.11
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_bytes)
        conn.set_authorizer(_authorize)
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
        wrap = cap < limits.max_bytes
        if wrap:
            probe = conn.execute(f"SELECT * FROM (\n{sql}\n) LIMIT 0", params)
            columns = [d[0] for d in probe.description or []]
            probe.close()
            cursor = conn.execute(_capped_query(sql, len(columns), cap), params)
        else:
            cursor = conn.execute(sql, params)
            columns = [d[0] for d in cursor.description or []]
        result = ReadRows(columns)
        for raw in cursor:
            kept = _uncapped(raw) if wrap else [capped(value, cap) for value in raw]
            if not result.keep(tuple(v for v, _ in kept), sum(n for _, n in kept), limits):
                break
            if time.monotonic() > deadline:
                raise QueryRefused(stopped_after(timeout))
    except sqlite3.OperationalError as error:
        if str(error) == "interrupted":
            raise QueryRefused(stopped_after(timeout)) from None
        raise QueryRefused(_one_line(_sqlite_message(error, limits))) from None
    except (sqlite3.Error, sqlite3.Warning) as error:
        raise QueryRefused(_one_line(_sqlite_message(error, limits))) from None
    finally:
        conn.close()
    return result


def _capped_query(sql: str, count: int, cap: int) -> str:
    """``sql`` (of ``count`` columns) giving per column its value, or its first ``cap``
    characters (text) or bytes (blob) when longer than ``cap`` bytes, and its length in
    bytes: the columns named ``c<i>`` by a CTE (one evaluation of each value a row)."""
    aliases = ", ".join(f"c{i:d}" for i in range(count))
    outs = ", ".join(
        f"CASE WHEN length(CAST(c{i:d} AS BLOB)) > {cap:d} THEN substr(c{i:d}, 1, {cap:d}) "
        f"ELSE c{i:d} END, length(CAST(c{i:d} AS BLOB))" for i in range(count))
    return f"WITH u({aliases}) AS (\n{sql}\n) SELECT {outs} FROM u"


def _uncapped(raw: Sequence[Any]) -> list[tuple[Any, int]]:
    """A row of ``_capped_query`` as (value or ``Cut``, bytes counted) per user column."""
    kept: list[tuple[Any, int]] = []
    for at in range(0, len(raw), 2):
        value, length = raw[at], raw[at + 1]
        size = value_size(value)
        held = len(value) if isinstance(value, bytes) else size  # bytes SQLite handed over
        if isinstance(value, (str, bytes)) and length is not None and length > held:
            kept.append((Cut(value, length), size))
        else:
            kept.append((value, size))
    return kept


def _sqlite_message(error: BaseException, limits: Limits | None = None) -> str:
    text = str(error)
    if text == "not authorized":
        return "not authorized: the page only reads (no writes, schema changes or pragmas)"
    if limits is not None and text == "string or blob too big":
        return (f"a value of the query is longer than {limits.max_bytes:,} bytes, all the page "
                "may show: select a part of it (substr(x, 1, 1000))")
    return text


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


#: The names tuple of the last one-row upsert and its text (see ``_one_row_upsert_sql``).
_last_one_row: tuple[tuple[str, ...], str] = ((), "")


def _one_row_upsert_sql(names: tuple[str, ...]) -> str:
    """``_upsert_sql(names)``, found by the names tuple's identity first: the checks hand
    a training loop's every call the same tuple, and the cache's key would hash all of
    its names each call (about 7 µs at 1,000 names, 5 % of a write-through step)."""
    global _last_one_row
    last, text = _last_one_row
    if names is last:
        return text
    text = _upsert_sql(names)
    _last_one_row = (names, text)
    return text


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
