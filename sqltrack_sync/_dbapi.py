"""Blocking DB-API ``Connection`` and ``Cursor`` over the driver's async objects.

``with client as conn`` gives a :class:`Connection`; its cursors are
:class:`Cursor`. Each method is one call on the loop thread (``_portal``).
The driver's own objects (psycopg or aiosqlite) stay reachable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqltrack.client.async_client import AsyncClient
from sqltrack_sync import _portal


class Cursor:
    """A blocking DB-API cursor over the driver's async cursor."""

    def __init__(self, async_cursor: Any) -> None:
        self._async = async_cursor

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        """Execute one statement with the driver's placeholders (%s or ?)."""
        _portal.call(self._async.execute, sql, parameters or None)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Cursor:
        """Execute one statement for every parameter row."""
        _portal.call(self._async.executemany, sql, list(seq_of_parameters))
        return self

    def __iter__(self) -> Iterator[Any]:
        while True:
            rows = self.fetchmany(500)
            if not rows:
                return
            yield from rows

    def fetchone(self) -> Any:
        """The next row, or None."""
        return _portal.call(self._async.fetchone)

    def fetchmany(self, size: int = 1) -> list[Any]:
        """Up to ``size`` next rows."""
        rows: list[Any] = _portal.call(self._async.fetchmany, size)
        return rows

    def fetchall(self) -> list[Any]:
        """Every remaining row."""
        rows: list[Any] = _portal.call(self._async.fetchall)
        return rows

    def close(self) -> None:
        """Close the cursor (the connection stays)."""
        _portal.call(self._async.close)

    @property
    def description(self) -> Any:
        """The driver's column description of the last statement."""
        return self._async.description

    @property
    def rowcount(self) -> int:
        """Rows the last statement produced or changed (-1: unknown)."""
        count: int = self._async.rowcount
        return count


class Connection:
    """The connection a ``with client as conn`` block holds (blocking)."""

    def __init__(self, client: AsyncClient, async_connection: Any) -> None:
        self._client = client
        self._async = async_connection

    @property
    def async_connection(self) -> Any:
        """The driver's own async connection (psycopg or aiosqlite)."""
        return self._async

    @contextmanager
    def cursor(self) -> Iterator[Cursor]:
        """``with conn.cursor() as cursor:`` a cursor of this connection."""
        cursor = Cursor(_portal.call(self._client.driver_cursor, self._async))
        try:
            yield cursor
        finally:
            cursor.close()

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        """Execute one statement; return a cursor for its rows."""
        return Cursor(_portal.call(self._async.execute, sql, parameters or None))

    def commit(self) -> None:
        """Commit the block's transaction so far."""
        _portal.call(self._async.commit)

    def rollback(self) -> None:
        """Roll back the block's transaction so far."""
        _portal.call(self._async.rollback)
