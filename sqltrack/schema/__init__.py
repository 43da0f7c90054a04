"""Base schema per engine and the runner for users' migration scripts.

What differs by engine (the script, statements around the set-up, catalog queries,
upgrade steps) comes from the engine's dialect; this package runs it through the Engine.

Each script is applied once, in the order given, in its own transaction, and
recorded by file name in ``applied_migrations`` (the table sqltrack 0.1.x uses,
so neither version applies a script the other applied). Processes that set up the same
database at the same moment take turns (an advisory lock on PostgreSQL, the
write lock on SQLite), so each script still runs exactly once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import DatabaseError, SchemaMissing

if TYPE_CHECKING:
    from ..engines.base import Engine

log = logging.getLogger("sqltrack.schema")
T = TypeVar("T")


def base_schema_sql(script: str) -> str:
    """A base schema script of this package (the one a dialect's ``schema_script`` names)."""
    # The package's loader reads the file next to this module (importlib.resources, with
    # tempfile, shutil and zipfile behind it, would cost more than the schema's creation).
    path = os.path.join(os.path.dirname(__file__), script)
    loader: Any = __spec__.loader  # a file or zip loader: both have get_data
    return str(loader.get_data(path).decode("utf-8"))


async def with_schema_lock(
    engine: Engine, conn: Any, work: Callable[[Engine, Any], Awaitable[T]]
) -> T:
    """``await work(engine, conn)`` in one block of ``conn`` holding the schema lock."""
    await engine.begin_block(conn)
    done = False
    try:
        await engine.lock_schema(conn)
        result = await work(engine, conn)
        done = True
        return result
    finally:
        await engine.end_block(conn, commit=done)


async def is_applied(engine: Engine, conn: Any, name: str) -> bool:
    sql = engine.dialect.sql("SELECT 1 FROM applied_migrations WHERE name = %s")
    return bool(await engine.fetch(conn, sql, [name]))


async def ensure_base_schema(engine: Engine, conn: Any) -> str | None:
    """Create or upgrade the base tables when needed (one quick check when they are current).

    A database made by sqltrack 0.1.x or by an earlier build is upgraded in place
    (see ``schema/upgrade.py``, imported only then; ``schema/state.py`` tells the kind
    of database and creates the tables in an empty one). Returns what was done
    (None: nothing), also kept as ``engine.schema_outcome`` for ``sqltrack setup`` to print.
    """
    from . import state

    try:
        if await is_applied(engine, conn, state.SCHEMA_MARK):
            return None
    except DatabaseError:  # no migrations table yet: look closer below
        pass
    found = await state.detect(engine, conn)
    if found in (state.EMPTY, state.PARTIAL) and not engine.create_schema:
        raise SchemaMissing("no sqltrack tables in this database (and none were created)")

    async def work(engine: Engine, conn: Any) -> str | None:
        # Again under the lock: another process may have done it meanwhile.
        found = await state.detect(engine, conn)
        base_sql = base_schema_sql(engine.dialect.schema_script)
        if found == state.EMPTY:  # a new database: nothing to upgrade
            done: str | None = await state.create(engine, conn, base_sql)
        else:
            from . import upgrade

            done = await upgrade.upgrade(engine, conn, found, base_sql)
        if done is None:
            return None
        spread = await state.distribute(engine, conn)  # "" or None: nothing done
        return f"{done}; {spread}" if spread else done

    dialect = engine.dialect
    for statement in dialect.before_schema_setup:  # outside a transaction
        await engine.fetch(conn, statement)
    try:
        outcome = await with_schema_lock(engine, conn, work)
    finally:
        if dialect.after_schema_setup:
            await engine.rollback(conn)
            for statement in dialect.after_schema_setup:
                await engine.fetch(conn, statement)
    engine.schema_outcome = outcome
    if outcome:
        log.info("%s", outcome)
    return outcome
