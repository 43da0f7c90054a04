"""AsyncClient: a pool of database connections and the per-task reentrant connection.

``async with client as conn`` gives the current task a connection for the whole
block; nested blocks in the same task reuse it, other tasks get their own from
the pool. The outermost block commits, or rolls back when an exception leaves it.
Outside any block, each operation borrows a connection for one statement and
commits it at once.

Raw SQL goes to the driver as written, with the driver's own placeholders:
``%s`` (and ``%(name)s``) on PostgreSQL (psycopg), ``?`` (and ``:name``) on SQLite.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import config as _config
from .engines import make_engine
from .engines.base import Engine
from .errors import ClientClosed
from .exits import install as install_exit_handling
from .exits import silence_pending_tasks
from .hooks import ClientHooks, CloseHook

#: Who owns a held connection; the sync facade sets this to its calling thread,
#: otherwise the current asyncio task is the owner.
connection_owner: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "sqltrack_connection_owner", default=None
)


def _current_owner() -> Any:
    owner = connection_owner.get()
    return owner if owner is not None else asyncio.current_task()


#: Clients of this process, reset in a forked child (see AsyncClient._reset_after_fork).
_clients: weakref.WeakSet[AsyncClient] = weakref.WeakSet()
#: Engines abandoned in a forked child: kept alive so that no finalizer touches the
#: parent's connections (their sockets and files are shared with the parent).
_abandoned: list[Any] = []
#: Clients opened and not closed yet: held so that one never closed is still
#: finished at interpreter exit (``sqltrack.exits``), and for no other reason.
_unclosed: set[AsyncClient] = set()


@dataclass
class _Held:
    conn: Any
    depth: int = 1


class AsyncClient:
    """Creates and manages database connections for one engine (async).

    Parameters are those of the spec's ``Client``: ``config`` is a dict or the
    path of a ``key=value`` file (default: ``$SQLTRACK_CONFIG_PATH``, then
    ``./sqltrack.conf``); keyword arguments override ``SQLTRACK_DSN_<PARAM>``
    environment variables, which override the file. ``engine`` is ``"postgres"``
    (default) or ``"sqlite"`` (with ``dbpath``, default ``sqltrack.db``). For
    PostgreSQL, every libpq keyword is accepted; ``user`` defaults to ``$USER``,
    ``dbname`` to the user, and ``schema`` sets the ``search_path``. Pool bounds:
    ``pool_min_size`` (1), ``pool_max_size`` (4), ``pool_timeout`` seconds (30).
    ``buffered=True`` makes every run's ``add_metrics`` write-behind (see
    ``sqltrack.buffering``; ``flush_rows``, ``flush_interval``, ``buffer_max_rows``).

    Nothing connects until first use; the base schema is created then if missing.
    ``create_schema=False`` (read-only tools such as the ``sqltrack`` listings)
    never creates tables: a database without them raises ``sqltrack.SchemaMissing``.
    Close the client with ``await client.close()`` when done.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        create_schema: bool = True,
        **kwargs: Any,
    ) -> None:
        self.settings = _config.resolve(config, **kwargs)
        self.create_schema = create_schema
        self._engine: Engine = make_engine(self.settings)
        self._engine.create_schema = create_schema
        self._held: dict[Any, _Held] = {}
        self._state = "unopened"
        self._open_lock: asyncio.Lock | None = None
        #: Close hooks (write-behind buffers, closed by close()) and open runs
        #: (stopped with their exit status at interpreter exit).
        self.hooks = ClientHooks()
        from .metrics import MetricTable

        self.metrics = MetricTable(self)
        #: The loop this client was opened on (at exit: is it still there?).
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Driven by a blocking ``sqltrack.Client``, whose exit handling is the portal's.
        self.blocking = False
        _clients.add(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: forget the parent's pool and connections, connect afresh."""
        _abandoned.append((self._engine, self._held))
        self._engine = make_engine(self.settings)
        self._engine.create_schema = self.create_schema
        self._held = {}
        self._open_lock = None
        if self._state == "open":
            self._state = "unopened"
        silence_pending_tasks(self._loop)
        self._loop = None
        _unclosed.discard(self)
        # Runs inherited from the parent write through in the child: a child often
        # ends with no hook Python runs (multiprocessing workers end with os._exit or
        # SIGTERM), so a row buffered there could be lost. The parent's buffered rows
        # are the parent's to write; the child drops its copy of them.
        buffers = self.hooks.clear_hooks()
        for buffer in buffers:
            buffer.run._buffer = None  # type: ignore[attr-defined]
        _abandoned.append(buffers)
        if self.settings.buffered:
            self.settings = replace(self.settings, buffered=False)

    def _restart_engine(self) -> None:
        """On a new loop (at exit, the client's own loop gone): forget the old engine
        (it belongs to that loop) and connect afresh on first use."""
        _abandoned.append(self._engine)
        self._engine = make_engine(self.settings)
        self._engine.create_schema = self.create_schema
        self._held = {}
        self._open_lock = None
        self._state = "unopened"
        for hook in self.hooks.close_hooks():
            hook.rebind()

    def __repr__(self) -> str:
        return f"<AsyncClient {self._state} {self.settings!r}>"

    def on_close(self, hook: CloseHook) -> None:
        """``await hook.close()`` when this client closes (a run's metric buffer)."""
        self.hooks.on_close(hook)

    @property
    def engine(self) -> str:
        """Name of the engine: ``"postgres"`` or ``"sqlite"``."""
        return self._engine.name

    # -- lifecycle ------------------------------------------------------------
    async def _opened_engine(self) -> Engine:
        if self._state == "open":
            return self._engine
        if self._state == "closed":
            raise ClientClosed("this client was closed; create a new AsyncClient")
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._state == "unopened":
                await self._engine.open()
                self._state = "open"
                self._loop = asyncio.get_running_loop()
                _unclosed.add(self)
                install_exit_handling()
        return await self._opened_engine()

    async def close(self) -> None:
        """Flush buffered metrics, close every pooled connection; the client is done then.

        A buffered write that failed is raised here (after the pool is closed).
        """
        errors = []
        for hook in self.hooks.close_hooks():
            try:
                await hook.close()
            except Exception as error:  # noqa: BLE001 - raised below, after closing
                errors.append(error)
        _unclosed.discard(self)
        if self._state == "open":
            self._state = "closed"
            await self._engine.close()
        self._state = "closed"
        if errors:
            raise errors[0]

    # -- connections ----------------------------------------------------------
    async def __aenter__(self) -> Any:
        owner = _current_owner()
        held = self._held.get(owner)
        if held is not None:
            held.depth += 1
            return held.conn
        engine = await self._opened_engine()
        conn = await engine.acquire()
        try:
            await engine.begin_block(conn)
        except BaseException:
            await engine.release(conn)
            raise
        self._held[owner] = _Held(conn)
        return conn

    async def __aexit__(self, exc_type, exc, tb) -> None:
        owner = _current_owner()
        held = self._held[owner]
        held.depth -= 1
        if held.depth:
            return
        del self._held[owner]
        committed = False
        try:
            await self._engine.end_block(held.conn, commit=exc_type is None)
            committed = exc_type is None
        finally:
            if not committed:
                # Metric columns added in the block were rolled back with it.
                self.metrics.forget_columns()
            await self._engine.release(held.conn)

    def held_connection(self) -> Any | None:
        """The connection the current task holds in an ``async with`` block, if any."""
        held = self._held.get(_current_owner())
        return None if held is None else held.conn

    def cursor(self) -> _CursorContext:
        """``async with client.cursor() as cursor``: a driver cursor inside a client block."""
        return _CursorContext(self)

    async def _run(self, method: str, *args: Any, retry: bool = False) -> Any:
        """Run one engine statement on the held connection, or on a borrowed one.

        ``retry``: the statement is idempotent, so when the server connection was
        lost (a restart, a failover), it runs once more on a fresh connection; the
        wait for one is bounded by ``pool_timeout``. Inside a block it never retries:
        the block's transaction is gone with its connection.
        """
        # Hot path (every add_metrics): no extra coroutine once open, no owner lookup
        # while no task holds a connection.
        engine = self._engine if self._state == "open" else await self._opened_engine()
        if self._held:
            held = self._held.get(_current_owner())
            if held is not None:
                return await getattr(engine, method)(held.conn, *args, oneshot=False)
        conn = await engine.acquire()
        try:
            return await getattr(engine, method)(conn, *args, oneshot=True)
        except Exception as error:
            if not (retry and engine.lost_connection(error, conn)):
                raise
        finally:
            await engine.release(conn)
        await engine.recover()
        conn = await engine.acquire()
        try:
            return await getattr(engine, method)(conn, *args, oneshot=True)
        finally:
            await engine.release(conn)

    async def query(
        self, sql: str, parameters: Sequence = (), *, idempotent: bool = True
    ) -> list[tuple]:
        """Run one of sqltrack's own statements (``%s`` placeholders on every engine).

        ``idempotent`` statements are retried once if the server connection was lost.
        """
        return await self._run("fetch", self._engine.sql(sql), parameters, retry=idempotent)

    async def execute(self, sql: str, parameters: Sequence | Mapping = ()) -> list[tuple]:
        """Execute one statement (driver placeholders) and return its rows, if any.

        Outside a block the statement is committed at once.
        """
        return await self._run("fetch", sql, parameters)

    async def executemany(self, sql: str, seq_of_parameters: Sequence) -> None:
        """Execute one statement for every parameter row."""
        await self._run("executemany", sql, list(seq_of_parameters))

    async def executescript(self, sql_script: str) -> None:
        """Execute several ``;``-separated statements without parameters."""
        await self._run("executescript", sql_script)

    async def commit(self) -> None:
        """Commit the held connection; RuntimeError when the task holds none."""
        await self._engine.commit(self._require_held())

    async def rollback(self) -> None:
        """Roll back the held connection; RuntimeError when the task holds none."""
        await self._engine.rollback(self._require_held())
        self.metrics.forget_columns()  # metric columns added since the last commit are gone

    def _require_held(self) -> Any:
        conn = self.held_connection()
        if conn is None:
            raise RuntimeError("not connected: call this inside 'async with client:'")
        return conn


class _CursorContext:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._cursor: Any = None

    async def __aenter__(self) -> Any:
        conn = await self._client.__aenter__()
        try:
            self._cursor = await self._client._engine.cursor(conn)
        except BaseException as error:
            await self._client.__aexit__(type(error), error, None)
            raise
        return self._cursor

    async def __aexit__(self, exc_type, exc, tb) -> None:
        try:
            await self._cursor.close()
        finally:
            await self._client.__aexit__(exc_type, exc, tb)



def _reset_clients_after_fork() -> None:
    for client in list(_clients):
        client._reset_after_fork()


os.register_at_fork(after_in_child=_reset_clients_after_fork)
