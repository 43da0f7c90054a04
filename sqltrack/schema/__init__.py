"""Base schema per engine and the runner for users' migration scripts.

Each script is applied once, in the order given, in its own transaction, and
recorded by file name in ``applied_migrations`` (the table sqltrack 0.1.x uses,
so neither version applies a script the other applied). Processes that set up the same
database at the same moment take turns (an advisory lock on PostgreSQL, the
write lock on SQLite), so each script still runs exactly once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..client import AsyncClient
    from ..engines.base import Engine

log = logging.getLogger("sqltrack.schema")
T = TypeVar("T")


def base_schema_sql(engine_name: str) -> str:
    """The base schema script of an engine (``postgres`` or ``sqlite``)."""
    from importlib import resources  # only when a schema is created: keeps import light

    return resources.files(__name__).joinpath(f"{engine_name}.sql").read_text(encoding="utf-8")


async def _with_schema_lock(engine: Engine, conn: Any, work: Callable[[Any], Awaitable[T]]) -> T:
    await engine.begin_block(conn)
    done = False
    try:
        await engine.lock_schema(conn)
        result = await work(conn)
        done = True
        return result
    finally:
        await engine.end_block(conn, commit=done)


async def _is_applied(engine: Engine, conn: Any, name: str) -> bool:
    rows = await engine.fetch(
        conn, engine.sql("SELECT 1 FROM applied_migrations WHERE name = %s"), [name], oneshot=False
    )
    return bool(rows)


async def ensure_base_schema(engine: Engine, conn: Any) -> str | None:
    """Create or upgrade the base tables when needed (one quick check when they are current).

    A database made by sqltrack 0.1.x or by an earlier build is upgraded in place
    (see ``schema/upgrade.py``). Returns what was done (None: nothing), also kept
    as ``engine.schema_outcome`` for ``sqltrack setup`` to print.
    """
    from . import upgrade

    try:
        if await _is_applied(engine, conn, upgrade.SCHEMA_MARK):
            return None
    except Exception:  # no migrations table yet: look closer below
        await engine.rollback(conn)
    state = await upgrade.detect(engine, conn)
    await engine.rollback(conn)
    if state in (upgrade.EMPTY, upgrade.PARTIAL) and not engine.create_schema:
        from ..errors import SchemaMissing

        raise SchemaMissing("no sqltrack tables in this database (and none were created)")

    async def work(conn: Any) -> str | None:
        # Again under the lock: another process may have done it meanwhile.
        state = await upgrade.detect(engine, conn)
        return await upgrade.upgrade(engine, conn, state, base_schema_sql(engine.name))

    if engine.name == "sqlite":  # the runs rebuild needs foreign keys off (not in a transaction)
        await engine.fetch(conn, "PRAGMA foreign_keys = OFF", oneshot=False)
    try:
        outcome = await _with_schema_lock(engine, conn, work)
    finally:
        if engine.name == "sqlite":
            await engine.rollback(conn)
            await engine.fetch(conn, "PRAGMA foreign_keys = ON", oneshot=False)
    engine.schema_outcome = outcome
    if outcome:
        log.info("%s", outcome)
    return outcome


async def setup(client: AsyncClient, scripts: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Apply migration scripts in order, each exactly once; return the names applied now.

    A script is identified by its file name; one that was applied before is skipped.
    A failing script is rolled back and raises, leaving the scripts before it applied.
    """
    engine = await client._opened_engine()
    applied: list[str] = []
    for script in scripts:
        path = Path(script)
        name = path.name
        text = path.read_text(encoding="utf-8")

        async def apply(conn: Any, name: str = name, text: str = text) -> bool:
            if await _is_applied(engine, conn, name):
                return False
            await engine.executescript(conn, text, oneshot=False)
            await engine.fetch(
                conn,
                engine.sql("INSERT INTO applied_migrations (name) VALUES (%s)"),
                [name],
                oneshot=False,
            )
            return True

        conn = await engine.acquire()
        try:
            done = await _with_schema_lock(engine, conn, apply)
        finally:
            await engine.release(conn)
        if done:
            client.metrics.forget_columns()
            log.info("applied %s", name)
            applied.append(name)
        else:
            log.info("skipped %s (applied before)", name)
    return applied
