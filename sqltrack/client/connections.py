"""The connection manager: one client's engine, its state, and the connections its tasks use.

A connection taken by ``async with client`` belongs to the task (in the blocking
API: the thread) that took it; nested blocks of that owner reuse it, and every
statement of that owner runs on it. Outside a block, a statement borrows a pooled
connection and commits at once. An idempotent statement whose connection was lost
is tried again on a fresh one, with a growing pause, until ``retry_window`` is over
(then one ``ServerUnreachable``, never a hang).

Opening is lazy (first use) and happens once: the engine's pool, then the base
schema on one connection, then the ``after_open`` work the client gives (the spool
replay). This is the layer the metric writer and the schema work over; the client
composes it and nothing else reaches into it.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..config import Settings
from ..engines import make_engine
from ..engines.base import Connection, Dialect, Engine
from ..errors import CannotConnect, ClientClosed, ConnectionLost, PoolTimeout, ServerUnreachable
from ..schema import ensure_base_schema, with_schema_lock
from .state import ClientState

T = TypeVar("T")

#: Who owns a held connection; the blocking facade sets this to its calling thread,
#: otherwise the current asyncio task is the owner.
connection_owner: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "sqltrack_connection_owner", default=None
)


def current_owner() -> Any:
    """The owner of the connection a block takes now: the facade's thread, else the task."""
    owner = connection_owner.get()
    return owner if owner is not None else asyncio.current_task()


@dataclass
class _Held:
    conn: Any
    depth: int = 1


#: What a first connection that failed with no settings at all says to do.
NO_SETTINGS_HINT = (
    "no settings were found (no keywords, SQLTRACK_DSN_* variables or sqltrack.conf), so "
    "the default engine ({engine}) was tried; for a local file give engine='sqlite' "
    "(SQLTRACK_DSN_ENGINE=sqlite, or 'engine=sqlite' in ./sqltrack.conf), or name your "
    "server in SQLTRACK_DSN_HOST/SQLTRACK_DSN_DBNAME or a sqltrack.conf file"
)


def cannot_connect(engine: Engine, error: ConnectionLost) -> CannotConnect:
    """One line for a first connection that failed: what was tried, why, what to do."""
    from dataclasses import replace

    from ..config import SECRET_KEYS
    from ..environment import mask_passwords

    settings = engine.settings
    masked = replace(settings, params={k: "***" if k in SECRET_KEYS else v
                                       for k, v in settings.params.items()})
    tried = mask_passwords(engine.dialect.describe_spelled_out(masked))
    reason = mask_passwords(" ".join(str(error).split()))
    hint = "" if settings.configured else "; " + NO_SETTINGS_HINT.format(engine=settings.engine)
    return CannotConnect(f"cannot connect to {tried}: {reason}{hint}", reason=error)


class Connections:
    """The engine of one client and the connections its tasks hold or borrow."""

    def __init__(
        self,
        settings: Settings,
        create_schema: bool = True,
        after_open: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.create_schema = create_schema
        self.after_open = after_open
        self.state = ClientState.UNOPENED
        self.engine: Engine = self._new_engine()
        #: The loop the engine was opened on (at exit: is it still there?).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._held: dict[Any, _Held] = {}
        self._open_lock: asyncio.Lock | None = None

    def _new_engine(self) -> Engine:
        engine = make_engine(self.settings)
        engine.create_schema = self.create_schema
        return engine

    @property
    def dialect(self) -> Dialect:
        """The engine's SQL dialect (no I/O)."""
        return self.engine.dialect

    # -- lifecycle ------------------------------------------------------------
    async def opened_engine(self) -> Engine:
        """The engine, opened (pool, base schema, ``after_open``) on first use."""
        if self.state is ClientState.OPEN:
            return self.engine
        if self.state is ClientState.CLOSED:
            raise ClientClosed("this client was closed; create a new AsyncClient")
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self.state is ClientState.UNOPENED:
                try:
                    await self._open(self.engine)
                except ConnectionLost as error:
                    if self.loop is not None:  # it was connected before (a fork, an exit)
                        raise
                    # the driver's error stays the cause (errors.py), without the
                    # ConnectionLost in between: the traceback is as short as it can be
                    raise cannot_connect(self.engine, error) from error.__cause__ or error
                self.state = ClientState.OPEN
                self.loop = asyncio.get_running_loop()
                if self.after_open is not None:
                    await self.after_open()
        return await self.opened_engine()

    @staticmethod
    async def _open(engine: Engine) -> None:
        """Open the engine's pool, then create or upgrade the base schema on one connection."""
        await engine.open()
        try:
            async with engine.setup_connection() as conn:
                await ensure_base_schema(engine, conn)
        except BaseException:
            await engine.close()
            raise

    async def close(self) -> None:
        """Close the pool; the manager is done (``CLOSED``) whatever it was."""
        was_open = self.state is ClientState.OPEN
        self.state = ClientState.CLOSED
        if was_open:
            await self.engine.close()

    def abandon(self) -> tuple[Engine, dict[Any, _Held]]:
        """Forget the engine and held connections (a forked child, or a loop gone at
        exit) and start ``UNOPENED`` with a fresh engine; returns what was dropped,
        for the caller to keep alive (its sockets and files may be the parent's)."""
        dropped = (self.engine, self._held)
        self.engine = self._new_engine()
        self._held = {}
        self._open_lock = None
        self.loop = None
        if self.state is ClientState.OPEN:
            self.state = ClientState.UNOPENED
        return dropped

    # -- held connections -----------------------------------------------------
    async def hold(self) -> Any:
        """Enter a block: the owner's connection (taken from the pool on the outermost)."""
        owner = current_owner()
        held = self._held.get(owner)
        if held is not None:
            held.depth += 1
            return held.conn
        engine = await self.opened_engine()
        conn = await engine.acquire()
        try:
            await engine.begin_block(conn)
        except BaseException:
            await engine.release(conn)
            raise
        self._held[owner] = _Held(conn)
        return conn

    async def unhold(self, commit: bool) -> bool | None:
        """Leave a block; the outermost commits (or rolls back) and releases the
        connection. Returns None for an inner block, else whether it committed."""
        owner = current_owner()
        held = self._held[owner]
        held.depth -= 1
        if held.depth:
            return None
        del self._held[owner]
        committed = False
        try:
            await self.engine.end_block(held.conn, commit=commit)
            committed = commit
        finally:
            await self.engine.release(held.conn)
        return committed

    def held(self) -> Connection | None:
        """The connection the current owner holds in a block, if any (cheap when none)."""
        if not self._held:
            return None
        held = self._held.get(current_owner())
        return None if held is None else held.conn

    def any_held(self) -> bool:
        """Whether any owner holds a block now."""
        return bool(self._held)

    def require_held(self) -> Connection:
        """The current owner's block connection; RuntimeError when it holds none."""
        conn = self.held()
        if conn is None:
            raise RuntimeError("not connected: call this inside 'async with client:'")
        return conn

    # -- statements -----------------------------------------------------------
    async def run(
        self, op: Callable[..., Awaitable[T]], *args: Any, retry: bool = False
    ) -> T:
        """``await op(engine, conn, *args)`` on the held connection, or on a borrowed one.

        ``retry``: the statement is idempotent, so when the server connection was
        lost it runs again on a fresh connection within ``retry_window``. Inside a
        block it never retries: the block's transaction is gone with its connection.
        """
        engine = self.engine if self.state is ClientState.OPEN else await self.opened_engine()
        conn = self.held()
        if conn is not None:
            return await op(engine, conn, *args)
        try:
            conn = await engine.acquire()
        except ConnectionLost as error:
            if not retry:
                raise
            return await self.retry(engine, op, args, error)
        try:
            return await op(engine, conn, *args)
        except ConnectionLost as error:
            if not retry:
                raise
            lost = error
        finally:
            await engine.release(conn)
        return await self.retry(engine, op, args, lost)

    async def retry(
        self, engine: Engine, op: Callable[..., Awaitable[T]], args: Sequence[Any],
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
        """One of sqltrack's own statements (``%s`` placeholders on every engine);
        ``idempotent`` ones are retried when the connection was lost."""
        return await self.run(fetch, self.engine.dialect.sql(sql), parameters, retry=idempotent)

    async def with_schema_lock(self, work: Callable[[Engine, Connection], Awaitable[T]]) -> T:
        """``await work(engine, conn)`` on a connection of its own, in one transaction
        holding the schema lock (one process at a time: migrations, schema changes)."""
        engine = await self.opened_engine()
        conn = await engine.acquire()
        try:
            return await with_schema_lock(engine, conn, work)
        finally:
            await engine.release(conn)


def fetch(engine: Engine, conn: Connection, sql: str, params: Any) -> Awaitable[list[Any]]:
    """``engine.fetch`` as an operation for ``Connections.run``."""
    return engine.fetch(conn, sql, params)
