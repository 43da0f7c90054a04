"""A SQLite connection for asyncio: one ``sqlite3`` connection and one daemon thread.

Every call on the connection runs in its thread, in order, and the event loop awaits
its result. sqltrack's own operations are one call each (``call(fn, *args)``: the
statements and the commit together, one hop), and the connection a user's
``async with client as conn`` block holds offers the usual async driver methods
(``execute``, ``executemany``, ``executescript``, ``cursor``, ``commit``, ``rollback``;
cursors with ``fetchone`` / ``fetchmany`` / ``fetchall``), as aiosqlite's do.

Why our own and not aiosqlite's: its public surface has no way to run one function
in the connection's thread (one hop for a whole operation), and its thread is not a
daemon, so a client never closed would keep the interpreter from exiting (the
non-daemon threads are joined before ``atexit`` runs the clean-up that would close
it). This module is the small bridge and nothing more.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")
_Call = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def create_private(path: str | os.PathLike[str], uri: bool = False) -> None:
    """Create the database file ``path`` readable and writable by its owner only (0600),
    unless it exists (an existing file's mode is kept) or is not a file (``:memory:``,
    ``""``, a ``file:`` URI). SQLite gives its ``-wal``, ``-shm`` and ``-journal`` files
    the database file's mode, so they are 0600 too. Errors are left to sqlite3."""
    name = os.fspath(path)
    if uri or name in ("", ":memory:") or name.startswith("file:") or os.path.exists(name):
        return
    # Only a file that does not exist yet is opened (O_EXCL), never one SQLite may have
    # open: closing any descriptor of a file drops every POSIX lock this process holds
    # on it, SQLite's own included (two connections would then write at once and
    # corrupt the file: "database disk image is malformed").
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, 0o600)
    except OSError:  # made meanwhile by another process, or not creatable: sqlite3 says
        return
    os.close(fd)


def connect_private(path: str | os.PathLike[str], **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(path, **kwargs)`` after :func:`create_private`."""
    create_private(path, bool(kwargs.get("uri")))
    return sqlite3.connect(path, **kwargs)


class SqliteConnection:
    """One ``sqlite3`` connection served by its own daemon thread (see the module docstring).

    Made with ``await SqliteConnection.open(path, **sqlite3_connect_kwargs)``.
    """

    def __init__(self) -> None:
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._serve, name="sqltrack-sqlite", daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, path: str, **kwargs: Any) -> SqliteConnection:
        """Connect in the connection's own thread (opening a file may wait for a lock).

        A new database file is created 0600 first (:func:`create_private`)."""
        worker = cls()
        try:
            worker._conn = await worker._submit(connect_private, (path,), kwargs)
        except BaseException:
            worker._stop()
            raise
        return worker

    def _serve(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            future, fn, args = item
            try:
                result, error = fn(*args), None
            except BaseException as caught:  # noqa: BLE001 - handed to the awaiting task
                result, error = None, caught
            loop = future.get_loop()
            try:
                loop.call_soon_threadsafe(_resolve, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for this result
                pass

    def _submit(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if kwargs:
            self._calls.put((future, lambda *a: fn(*a, **kwargs), args))
        else:
            self._calls.put((future, fn, args))
        return future

    @property
    def raw(self) -> sqlite3.Connection:
        """The ``sqlite3`` connection (only to be used through ``call``)."""
        if self._conn is None:
            raise sqlite3.ProgrammingError("the connection is closed")
        return self._conn

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(sqlite3_connection, *args)`` in the connection's thread: one hop."""
        return await self._submit(fn, (self.raw, *args))

    def _stop(self) -> None:
        self._calls.put(None)

    async def close(self) -> None:
        """Close the connection and end its thread."""
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            await self._submit(conn.close, ())
        finally:
            self._stop()

    # -- the driver-like methods of a user's block ------------------------------------
    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection."""
        return self._conn is not None and self._conn.in_transaction

    @property
    def total_changes(self) -> int:
        """Rows changed since the connection was opened."""
        return self.raw.total_changes

    async def cursor(self) -> SqliteCursor:
        """A new cursor of this connection."""
        return SqliteCursor(self, await self.call(sqlite3.Connection.cursor))

    async def execute(self, sql: str, parameters: Any = ()) -> SqliteCursor:
        """Execute one statement; its cursor holds the rows."""
        cursor = await self.cursor()
        return await cursor.execute(sql, parameters)

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> SqliteCursor:
        """Execute one statement for every parameter row."""
        cursor = await self.cursor()
        return await cursor.executemany(sql, seq_of_parameters)

    async def executescript(self, sql_script: str) -> SqliteCursor:
        """Execute several ``;``-separated statements (sqlite3 commits a pending
        transaction first)."""
        cursor = await self.cursor()
        return await cursor.executescript(sql_script)

    async def commit(self) -> None:
        """Commit the open transaction."""
        await self.call(sqlite3.Connection.commit)

    async def rollback(self) -> None:
        """Roll back the open transaction."""
        await self.call(sqlite3.Connection.rollback)


class SqliteCursor:
    """An async cursor over a ``sqlite3`` cursor; each call runs in the connection's thread."""

    def __init__(self, connection: SqliteConnection, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor

    async def __aenter__(self) -> SqliteCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[Any]:
        while True:
            rows = await self.fetchmany(256)
            if not rows:
                return
            for row in rows:
                yield row

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._connection._submit(fn, (self._cursor, *args))

    async def execute(self, sql: str, parameters: Any = ()) -> SqliteCursor:
        """Execute one statement."""
        await self._run(sqlite3.Cursor.execute, sql, parameters if parameters is not None else ())
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> SqliteCursor:
        """Execute one statement for every parameter row."""
        await self._run(sqlite3.Cursor.executemany, sql, list(seq_of_parameters))
        return self

    async def executescript(self, sql_script: str) -> SqliteCursor:
        """Execute several statements."""
        await self._run(sqlite3.Cursor.executescript, sql_script)
        return self

    async def fetchone(self) -> Any:
        """The next row, or None."""
        return await self._run(sqlite3.Cursor.fetchone)

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` next rows (default: the cursor's ``arraysize``)."""
        if size is None:
            size = self._cursor.arraysize
        return await self._run(sqlite3.Cursor.fetchmany, size)

    async def fetchall(self) -> list[Any]:
        """Every remaining row."""
        return await self._run(sqlite3.Cursor.fetchall)

    async def close(self) -> None:
        """Close the cursor."""
        await self._run(sqlite3.Cursor.close)

    @property
    def description(self) -> Sequence[Any] | None:
        """Column descriptions of the last query (None for a statement without rows)."""
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed (-1 when unknown)."""
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        """The rowid of the last inserted row."""
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        """Rows ``fetchmany`` returns by default."""
        return self._cursor.arraysize
