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
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .. import config as _config
from ..engines import make_engine
from ..engines.base import BatchRow, Connection, Dialect, Engine
from ..errors import ClientClosed, ConnectionLost, PoolTimeout, ServerUnreachable
from ..metrics.combining import WriteCombiner, touches
from ..process.exits import install as install_exit_handling
from ..process.exits import silence_pending_tasks, unclosed
from .hooks import ClientHooks, CloseHook

if TYPE_CHECKING:
    from ..outage.spool import Spool

#: Who owns a held connection; the sync facade sets this to its calling thread,
#: otherwise the current asyncio task is the owner.
connection_owner: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "sqltrack_connection_owner", default=None
)


def _current_owner() -> Any:
    owner = connection_owner.get()
    return owner if owner is not None else asyncio.current_task()


#: Guards the first use of a client's spool (AsyncClient.spool).
_spool_lock = threading.Lock()
#: Clients of this process, reset in a forked child (see AsyncClient._reset_after_fork).
_clients: weakref.WeakSet[AsyncClient] = weakref.WeakSet()
#: Engines abandoned in a forked child: kept alive so that no finalizer touches the
#: parent's connections (their sockets and files are shared with the parent).
_abandoned: list[Any] = []
#: Clients opened and not closed yet (see ``sqltrack.process.exits``).
_unclosed = unclosed


T = TypeVar("T")


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
    ``sqltrack.metrics.buffer``; ``flush_rows``, ``flush_interval``, ``buffer_max_rows``).
    Outages: ``spool`` (a file path, default ``spool-<host>.db`` in
    ``~/.cache/sqltrack``; ``off``: none) and ``spool_after`` (5 s) for buffered
    rows, see ``sqltrack.outage.spool``; ``retry_window`` (30 s) bounds how long a
    write-through call tries a server that does not answer. ``pooler``: ``auto``
    (detect PgBouncer and the like), ``transaction``, or ``none``.

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
        from ..metrics.table import MetricTable

        #: Typed engine statements for sqltrack's own modules (metrics, schema, facade).
        self.statements = Statements(self)
        self.metrics = MetricTable(self.statements)
        #: The ``spool`` property's Spool, made on first use (sqltrack.outage.spool is for
        #: buffered runs and replays: a write-through client never imports it).
        self._spool: Spool | None = None
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
        self.statements.reset_combiner()  # the parent's waiting calls are not ours
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

    @property
    def pooled(self) -> bool:
        """Whether a transaction pooler (PgBouncer) sits between client and server
        (configured with ``pooler=...`` or detected on opening)."""
        return bool(getattr(self._engine, "pooled", False))

    @property
    def dialect(self) -> Dialect:
        """The engine's SQL dialect: quoting, JSON pieces, parameter values (no I/O)."""
        return self._engine.dialect

    @property
    def spool(self) -> Spool | None:
        """Where buffered rows wait while the server is away (None: ``spool=off``)."""
        if self._spool is None and self.settings.spool is not None:
            with _spool_lock:  # one Spool per client, whichever thread asks first
                if self._spool is None:
                    from ..outage.spool import Spool

                    self._spool = Spool.for_settings(self.settings, self.settings.spool or None)
        return self._spool

    @property
    def schema_outcome(self) -> str | None:
        """What opening did to the schema ("created the sqltrack tables", ...); None: nothing."""
        return self._engine.schema_outcome

    # -- lifecycle ------------------------------------------------------------
    async def open(self) -> None:
        """Connect now and set the base schema up (otherwise done on first use).

        A wrong setting, or ``SchemaMissing`` with ``create_schema=False``, raises here.
        """
        await self._opened_engine()

    async def _open_engine(self, engine: Engine) -> None:
        """Open the engine's pool, then create or upgrade the base schema on one connection."""
        from ..schema import ensure_base_schema

        await engine.open()
        try:
            async with engine.setup_connection() as conn:
                await ensure_base_schema(engine, conn)
        except BaseException:
            await engine.close()
            raise

    async def _opened_engine(self) -> Engine:
        if self._state == "open":
            return self._engine
        if self._state == "closed":
            raise ClientClosed("this client was closed; create a new AsyncClient")
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._state == "unopened":
                await self._open_engine(self._engine)
                self._state = "open"
                self._loop = asyncio.get_running_loop()
                _unclosed.add(self)
                install_exit_handling()
                await self._replay_spool()
        return await self._opened_engine()

    async def _replay_spool(self) -> None:
        """What an earlier client of this server left in the spool goes first."""
        path = _config.spool_file(self.settings)
        if path is None or not os.path.exists(path):  # the usual case: no spool file
            return
        spool = self.spool
        assert spool is not None
        from ..outage.spool import is_outage, offload

        if not await offload(spool.pending):
            return
        try:
            await spool.replay(self)
        except Exception as error:
            if not is_outage(error):
                raise  # the entries stay; a buffered run retries them

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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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

    async def _run(
        self, op: Callable[..., Awaitable[T]], *args: Any, retry: bool = False
    ) -> T:
        """``await op(engine, conn, *args)`` on the held connection, or on a borrowed one.

        ``retry``: the statement is idempotent, so when the server connection was
        lost (a restart, a failover), it runs once more on a fresh connection; the
        wait for one is bounded by ``pool_timeout``. Inside a block it never retries:
        the block's transaction is gone with its connection.
        """
        engine = self._engine if self._state == "open" else await self._opened_engine()
        if self._held:
            held = self._held.get(_current_owner())
            if held is not None:
                return await op(engine, held.conn, *args)
        try:
            conn = await engine.acquire()
        except ConnectionLost as error:
            if not retry:
                raise
            return await self._retry(engine, op, args, error)
        try:
            return await op(engine, conn, *args)
        except ConnectionLost as error:
            if not retry:
                raise
            lost = error
        finally:
            await engine.release(conn)
        return await self._retry(engine, op, args, lost)

    async def _retry(
        self, engine: Engine, op: Callable[..., Awaitable[T]], args: tuple[Any, ...],
        error: ConnectionLost,
    ) -> T:
        """An idempotent statement whose connection was lost: again, on a fresh
        connection, with a growing pause, until ``retry_window`` seconds are over;
        then one ServerUnreachable naming the server (never a hang)."""
        window = self.settings.retry_window
        deadline = time.monotonic() + window
        pause = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerUnreachable(
                    f"{engine.server_name()} did not answer for {window:g} s (retry_window); "
                    f"the statement was not committed: {error}"
                ) from error
            try:
                await engine.recover()
                conn = await engine.acquire(timeout=remaining)
                try:
                    return await op(engine, conn, *args)
                finally:
                    await engine.release(conn)
            except ConnectionLost as again:
                error = again
            except PoolTimeout:
                # The pool has not reconnected yet (the server answers again): once
                # more while the window lasts; a pool simply full is raised as such.
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(2 * pause, 1.0)

    async def query(
        self, sql: str, parameters: Sequence[Any] = (), *, idempotent: bool = True
    ) -> list[tuple[Any, ...]]:
        """Run one of sqltrack's own statements (``%s`` placeholders on every engine).

        ``idempotent`` statements are retried once if the server connection was lost.
        """
        return await self._run(_fetch, self._engine.dialect.sql(sql), parameters, retry=idempotent)

    async def execute(
        self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Execute one statement (driver placeholders) and return its rows, if any.

        Outside a block the statement is committed at once. Errors are sqltrack's
        (``sqltrack.errors``: UniqueViolation, ForeignKeyViolation, DatabaseError, ...).
        """
        return await self._run(_fetch, sql, parameters)

    async def executemany(self, sql: str, seq_of_parameters: Sequence[Any]) -> None:
        """Execute one statement for every parameter row."""
        await self._run(_executemany, sql, list(seq_of_parameters))

    async def executescript(self, sql_script: str) -> None:
        """Execute several ``;``-separated statements without parameters."""
        await self._run(_executescript, sql_script)

    async def commit(self) -> None:
        """Commit the held connection; RuntimeError when the task holds none."""
        await self._engine.commit(self._require_held())

    async def rollback(self) -> None:
        """Roll back the held connection; RuntimeError when the task holds none."""
        await self._engine.rollback(self._require_held())
        self.metrics.forget_columns()  # metric columns added since the last commit are gone

    def _require_held(self) -> Connection:
        conn = self.held_connection()
        if conn is None:
            raise RuntimeError("not connected: call this inside 'async with client:'")
        return conn


class Statements:
    """Typed engine statements for the modules below and beside the client.

    ``MetricTable`` (metric columns, the metric write), ``schema.setup`` (the schema
    lock) and the blocking facade (driver cursors) call these instead of reaching
    into the client's engine. Each runs on the connection the current task holds
    in an ``async with client`` block, else on a pooled one.
    """

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._combiner: WriteCombiner | None = None
        self.reset_combiner()

    def reset_combiner(self) -> None:
        """A new write combiner (see ``sqltrack.metrics.combining``) for the client's engine."""
        client = self._client
        self._combiner = (
            WriteCombiner(client.settings.pool_max_size)
            if client._engine.combines_writes else None
        )

    async def metric_columns(self) -> dict[str, str | None]:
        """The metrics table's metric columns: name -> kind (None: a type not checked)."""
        return await self._client._run(_metric_columns, retry=True)

    async def add_metric_column(self, name: str, kind: str) -> None:
        """Add a metric column of a kind (``bool``, ``int``, ``float``, ``str``, ``datetime``)."""
        await self._client._run(_add_metric_column, name, kind, retry=True)  # IF NOT EXISTS

    async def write_metrics(
        self,
        names: tuple[str, ...],
        run_id: int,
        step: int,
        progress: float,
        values: Sequence[Any],
        updated: datetime | None,
    ) -> None:
        """Upsert one checked metrics row (the hot path; on a lost connection, retried
        within ``retry_window``)."""
        # Inlined _run: every add_metrics comes here, so no extra coroutine once open
        # and no owner lookup while no task holds a connection.
        client = self._client
        engine = client._engine if client._state == "open" else await client._opened_engine()
        if client._held:
            held = client._held.get(_current_owner())
            if held is not None:
                return await engine.write_metrics(
                    held.conn, names, run_id, step, progress, values, updated
                )
        elif engine.inline_writes and engine.write_metrics_inline(
            names, run_id, step, progress, values, updated
        ):
            return None  # SQLite, lock free: written on this thread, no hop
        args = (names, run_id, step, progress, values, updated)
        combiner = self._combiner
        if combiner is None:
            return await self._write_row(engine, args, None)
        if not combiner.full():
            combiner.begin()
        elif await combiner.wait(names, (run_id, step, progress, *values), updated):
            return None  # written, with other calls' rows, by another call
        try:
            await self._write_row(engine, args, combiner)
        finally:
            combiner.done()

    async def _write_row(
        self, engine: Engine, args: tuple[Any, ...], combiner: WriteCombiner | None
    ) -> None:
        """One row on a pooled connection; then, on the same connection, the rows that
        queued in the combiner meanwhile."""
        try:
            conn = await engine.acquire()
        except ConnectionLost as error:
            lost = error
        else:
            try:
                await engine.write_metrics(conn, *args)
                if combiner is not None and combiner.waiting:
                    await self._write_waiting(engine, conn, combiner)
                return None
            except ConnectionLost as error:
                lost = error
            finally:
                await engine.release(conn)
        if combiner is not None:
            # The server went away: every waiting call retries on its own, within its
            # own retry_window, instead of queueing behind this call's retries.
            combiner.write_all_alone()
        await self._client._retry(engine, _write_metrics, args, lost)

    @staticmethod
    async def _write_waiting(engine: Engine, conn: Connection, combiner: WriteCombiner) -> None:
        """The combiner's waiting rows, one statement per set of names; a statement that
        fails hands its rows (and those not tried yet) back to their own calls."""
        groups = combiner.take(engine.combined_rows_limit)
        for index, group in enumerate(groups):
            try:
                await engine.write_metrics_combined(
                    conn, group[0].names, [entry.row for entry in group], touches(group)
                )
            except BaseException as error:
                for entry in (e for g in groups[index:] for e in g):
                    combiner.write_alone(entry)
                if isinstance(error, Exception):
                    return  # each call writes alone and meets its own error
                raise
            combiner.resolve(group)

    def write_metrics_blocking(
        self,
        names: tuple[str, ...],
        run_id: int,
        step: int,
        progress: float,
        values: Sequence[Any],
        updated: datetime | None,
    ) -> bool:
        """``write_metrics`` in the calling thread when it can be done there; False if not.

        It can when the engine has blocking writes (SQLite), the client is open, no
        thread holds a ``with client`` block (its statements belong to that block)
        and the calling thread runs no event loop (which must never block).
        """
        client = self._client
        engine = client._engine
        if not engine.blocking_writes or client._state != "open" or client._held:
            return False
        if asyncio._get_running_loop() is not None:
            return False
        engine.write_metrics_blocking(names, run_id, step, progress, values, updated)
        return True

    async def write_metrics_batch(
        self,
        names: tuple[str, ...],
        run_id: int,
        rows: Sequence[BatchRow],
        updated: datetime | None,
    ) -> None:
        """Upsert many checked rows of one name set (retried once when lost)."""
        await self._client._run(_write_metrics_batch, names, run_id, rows, updated, retry=True)

    async def with_schema_lock(self, work: Callable[[Engine, Connection], Awaitable[T]]) -> T:
        """``await work(engine, conn)`` on a connection of its own, in one transaction
        holding the schema lock (one process at a time: migrations, schema changes)."""
        from ..schema import with_schema_lock

        engine = await self._client._opened_engine()
        conn = await engine.acquire()
        try:
            return await with_schema_lock(engine, conn, work)
        finally:
            await engine.release(conn)

    async def driver_cursor(self, conn: Connection) -> Any:
        """A driver cursor of ``conn`` (the connection of an ``async with client`` block)."""
        return await self._client._engine.cursor(conn)


class _CursorContext:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._cursor: Any = None

    async def __aenter__(self) -> Any:
        conn = await self._client.__aenter__()
        try:
            self._cursor = await self._client.statements.driver_cursor(conn)
        except BaseException as error:
            await self._client.__aexit__(type(error), error, None)
            raise
        return self._cursor

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._cursor.close()
        finally:
            await self._client.__aexit__(exc_type, exc, tb)



def _fetch(engine: Engine, conn: Connection, sql: str, params: Any) -> Awaitable[list[Any]]:
    return engine.fetch(conn, sql, params)


def _executemany(engine: Engine, conn: Connection, sql: str, rows: Any) -> Awaitable[None]:
    return engine.executemany(conn, sql, rows)


def _executescript(engine: Engine, conn: Connection, script: str) -> Awaitable[None]:
    return engine.executescript(conn, script)


def _metric_columns(engine: Engine, conn: Connection) -> Awaitable[dict[str, str | None]]:
    return engine.metric_columns(conn)


def _add_metric_column(engine: Engine, conn: Connection, name: str, kind: str) -> Awaitable[None]:
    return engine.add_metric_column(conn, name, kind)


def _write_metrics(engine: Engine, conn: Connection, *args: Any) -> Awaitable[None]:
    return engine.write_metrics(conn, *args)


def _write_metrics_batch(engine: Engine, conn: Connection, *args: Any) -> Awaitable[None]:
    return engine.write_metrics_batch(conn, *args)


def _reset_clients_after_fork() -> None:
    for client in list(_clients):
        client._reset_after_fork()


os.register_at_fork(after_in_child=_reset_clients_after_fork)
