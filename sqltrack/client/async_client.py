"""AsyncClient: one database's connections, metric writer, spool and hooks, with explicit state.

``async with client as conn`` gives the current task a connection for the whole
block; nested blocks in the same task reuse it, other tasks get their own from
the pool. The outermost block commits, or rolls back when an exception leaves it.
Outside any block, each operation borrows a connection for one statement and
commits it at once (``sqltrack.client.connections``).

Raw SQL goes to the driver as written, with the driver's own placeholders:
``%s`` (and ``%(name)s``) on PostgreSQL (psycopg), ``?`` (and ``:name``) on SQLite.

The client's life is a ``ClientState``; its transitions are named methods: ``open``,
``close``, ``reset_after_fork`` (a forked child connects afresh) and
``restart_for_exit`` (at interpreter exit, on a new loop). The process policy
(``sqltrack.process``, the blocking facade) calls these and reads ``state``; no
module outside this package touches the client's private attributes.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import config as _config
from ..engines.base import Connection, Dialect, Engine, Limits, ReadRows
from ..metrics.writer import MetricWriter
from ..process.exits import install as install_exit_handling
from ..process.exits import silence_pending_tasks, unclosed
from .connections import Connections, fetch
from .hooks import ClientHooks, CloseHook
from .state import ClientState

if TYPE_CHECKING:
    import asyncio

    from ..outage.spool import Spool

#: Guards the first use of a client's spool (AsyncClient.spool).
_spool_lock = threading.Lock()
#: Clients of this process, reset in a forked child (see AsyncClient.reset_after_fork).
_clients: weakref.WeakSet[AsyncClient] = weakref.WeakSet()
#: Engines abandoned in a forked child or at exit: kept alive so that no finalizer
#: touches the parent's connections (their sockets and files are shared with the parent).
_abandoned: list[Any] = []


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
        #: The engine, its state and the connections tasks hold or borrow.
        self.connections = Connections(self.settings, create_schema, self._after_open)
        #: Every metric write: the checks, the column cache and the write strategy.
        self.metrics = MetricWriter(self.connections)
        #: Close hooks (write-behind buffers, closed by close()) and open runs
        #: (stopped with their exit status at interpreter exit).
        self.hooks = ClientHooks()
        #: The ``spool`` property's Spool, made on first use (sqltrack.outage is for
        #: buffered runs and replays: a write-through client never imports it).
        self._spool: Spool | None = None
        #: Driven by a blocking ``sqltrack.Client``, whose exit handling is the portal's.
        self.blocking = False
        _clients.add(self)

    def __repr__(self) -> str:
        return f"<AsyncClient {self.state.value} {self.settings!r}>"

    # -- what the client is -----------------------------------------------------
    @property
    def state(self) -> ClientState:
        """``UNOPENED``, ``OPEN`` or ``CLOSED`` (see ``sqltrack.client.state``)."""
        return self.connections.state

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the client was opened on (None: not open)."""
        return self.connections.loop

    @property
    def engine(self) -> str:
        """Name of the engine: ``"postgres"`` or ``"sqlite"``."""
        return self.connections.engine.name

    @property
    def pooled(self) -> bool:
        """Whether a transaction pooler (PgBouncer) sits between client and server
        (configured with ``pooler=...`` or detected on opening)."""
        return bool(getattr(self.connections.engine, "pooled", False))

    @property
    def dialect(self) -> Dialect:
        """The engine's SQL dialect: quoting, JSON pieces, parameter values (no I/O)."""
        return self.connections.engine.dialect

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
        return self.connections.engine.schema_outcome

    def on_close(self, hook: CloseHook) -> None:
        """``await hook.close()`` when this client closes (a run's metric buffer)."""
        self.hooks.on_close(hook)

    # -- lifecycle ------------------------------------------------------------
    async def open(self) -> None:
        """Connect now and set the base schema up (otherwise done on first use).

        A wrong setting, or ``SchemaMissing`` with ``create_schema=False``, raises here.
        """
        await self.connections.opened_engine()

    async def _after_open(self) -> None:
        """Once open: exit handling, then what an earlier client left in the spool."""
        unclosed.add(self)
        install_exit_handling()
        await self.replay_spool()

    async def replay_spool(self, wait: float = 0.0) -> None:
        """Replay this client's spool, if a file with entries exists; an outage leaves
        the entries for later (a buffered run retries them), anything else raises."""
        path = _config.spool_file(self.settings)
        if path is None or not os.path.exists(path):  # the usual case: no spool file
            return
        from ..outage.replay import replay_pending

        await replay_pending(self, self.spool, wait)

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
        unclosed.discard(self)
        await self.connections.close()
        if errors:
            raise errors[0]

    def set_blocking(self) -> None:
        """Mark the client as driven by a blocking ``sqltrack.Client``: its exit
        handling is the blocking API's (``sqltrack_sync``), not ``sqltrack.process.exits``."""
        self.blocking = True

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's pool and connections, connect afresh."""
        loop = self.connections.loop
        _abandoned.append(self.connections.abandon())
        self.metrics.reset()  # the parent's waiting calls are not ours
        silence_pending_tasks(loop)
        unclosed.discard(self)
        # Runs inherited from the parent write through in the child: a child often
        # ends with no hook Python runs (multiprocessing workers end with os._exit or
        # SIGTERM), so a row buffered there could be lost. The parent's buffered rows
        # are the parent's to write; the child drops its copy of them.
        buffers = self.hooks.clear_hooks()
        for buffer in buffers:
            buffer.abandon()
        _abandoned.append(buffers)
        if self.settings.buffered:
            self.settings = replace(self.settings, buffered=False)

    def restart_for_exit(self) -> None:
        """At interpreter exit, the client's own loop gone: forget the old engine (it
        belongs to that loop) and connect afresh, on the running loop, on first use."""
        _abandoned.append(self.connections.abandon())
        self.metrics.reset()
        for hook in self.hooks.close_hooks():
            hook.rebind()

    # -- connections ----------------------------------------------------------
    async def __aenter__(self) -> Any:
        return await self.connections.hold()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        committed = None
        try:
            committed = await self.connections.unhold(commit=exc_type is None)
        finally:
            if committed is False:
                # Metric columns added in the block were rolled back with it.
                self.metrics.forget_columns()

    def held_connection(self) -> Any | None:
        """The connection the current task holds in an ``async with`` block, if any."""
        return self.connections.held()

    def cursor(self) -> _CursorContext:
        """``async with client.cursor() as cursor``: a driver cursor inside a client block."""
        return _CursorContext(self)

    async def driver_cursor(self, conn: Connection) -> Any:
        """A driver cursor of ``conn`` (the connection of an ``async with client`` block)."""
        return await self.connections.engine.cursor(conn)

    async def query(
        self, sql: str, parameters: Sequence[Any] = (), *, idempotent: bool = True
    ) -> list[tuple[Any, ...]]:
        """Run one of sqltrack's own statements (``%s`` placeholders on every engine).

        ``idempotent`` statements are retried once if the server connection was lost.
        """
        return await self.connections.query(sql, parameters, idempotent=idempotent)

    async def execute(
        self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Execute one statement (driver placeholders) and return its rows, if any.

        Outside a block the statement is committed at once. Errors are sqltrack's
        (``sqltrack.errors``: UniqueViolation, ForeignKeyViolation, DatabaseError, ...).
        """
        return await self.connections.run(fetch, sql, parameters)

    async def executemany(self, sql: str, seq_of_parameters: Sequence[Any]) -> None:
        """Execute one statement for every parameter row."""
        await self.connections.run(_executemany, sql, list(seq_of_parameters))

    async def executescript(self, sql_script: str) -> None:
        """Execute several ``;``-separated statements without parameters."""
        await self.connections.run(_executescript, sql_script)

    async def read_only(
        self, sql: str, params: Sequence[Any] = (), timeout: float = 5.0,
        limits: Limits | None = None, *, reader: str = "sqltrack_reader",
        allow_superuser: bool = False,
    ) -> ReadRows:
        """Users' SQL as the web page runs it: column names and rows of one statement
        (driver placeholders), read only, everything stopped after ``timeout`` s, rows
        and bytes bounded while they are fetched (``limits``, default ``Limits()``: see
        ``sqltrack.engines.base``); ``sqltrack.errors.QueryRefused`` says why not. On
        PostgreSQL it runs as the role ``reader`` (``sqltrack setup --ui-role``), and a
        superuser login is refused unless ``allow_superuser``."""
        engine = await self.connections.opened_engine()
        return await engine.read_only(sql, params, timeout, limits or Limits(), reader=reader,
                                      allow_superuser=allow_superuser)

    async def commit(self) -> None:
        """Commit the held connection; RuntimeError when the task holds none."""
        await self.connections.engine.commit(self.connections.require_held())

    async def rollback(self) -> None:
        """Roll back the held connection; RuntimeError when the task holds none."""
        await self.connections.engine.rollback(self.connections.require_held())
        self.metrics.forget_columns()  # metric columns added since the last commit are gone


class _CursorContext:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._cursor: Any = None

    async def __aenter__(self) -> Any:
        conn = await self._client.__aenter__()
        try:
            self._cursor = await self._client.driver_cursor(conn)
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


async def _executemany(engine: Engine, conn: Connection, sql: str, rows: Any) -> None:
    await engine.executemany(conn, sql, rows)


async def _executescript(engine: Engine, conn: Connection, script: str) -> None:
    await engine.executescript(conn, script)


def _reset_clients_after_fork() -> None:
    for client in list(_clients):
        client.reset_after_fork()


os.register_at_fork(after_in_child=_reset_clients_after_fork)
