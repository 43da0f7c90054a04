"""Users' migration scripts: ``setup`` applies each once (the dual-mode ``sqltrack.setup``).

Each script runs in one transaction holding the schema lock, and is recorded in
``applied_migrations`` by its file name, as sqltrack 0.1.x does, so a script that
either version applied is never applied again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..schema import is_applied

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient
    from ..engines.base import Engine

log = logging.getLogger("sqltrack")


async def setup(client: AsyncClient, scripts: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Apply migration scripts in order, each exactly once; return the names applied now.

    A script is identified by its file name; one that was applied before is skipped.
    A failing script is rolled back and raises, leaving the scripts before it applied.
    """
    await client.open()
    applied: list[str] = []

    for script in scripts:
        path = Path(script)
        name = path.name
        text = path.read_text(encoding="utf-8")

        async def apply(engine: Engine, conn: Any, name: str = name, text: str = text) -> bool:
            if await is_applied(engine, conn, name):
                return False
            await engine.executescript(conn, text)
            await engine.refresh_metric_view(conn)  # SQLite: the view names every column
            insert = engine.dialect.sql("INSERT INTO applied_migrations (name) VALUES (%s)")
            await engine.fetch(conn, insert, [name])
            return True

        done = await client.connections.with_schema_lock(apply)
        if done:
            client.metrics.forget_columns()
            log.info("applied %s", name)
            applied.append(name)
        else:
            log.info("skipped %s (applied before)", name)
    return applied


#: sqltrack's tables, which the page's reader role may SELECT.
READER_TABLES = ("experiments", "experiment_links", "runs", "run_links", "metrics",
                 "applied_migrations")


async def setup_reader(client: AsyncClient, role: str = "sqltrack_reader") -> list[str]:
    """Create (or update) the NOLOGIN role the web page runs users' SQL as: it may only
    SELECT sqltrack's tables (``sqltrack setup --ui-role``). Returns the tables granted.

    Needs a login that may create roles and owns the schema. ValueError for an engine
    without roles (SQLite: the page reads through a read-only connection instead).
    """
    await client.open()

    async def grant(engine: Engine, conn: Any) -> list[str]:
        query, params = engine.dialect.tables_query(READER_TABLES)
        tables = [row[0] for row in await engine.fetch(conn, engine.dialect.sql(query), params)]
        steps = engine.dialect.reader_setup(role, engine.settings.schema, tables)
        for statement, values in steps:
            await engine.fetch(conn, statement, values)
        return tables

    if not client.dialect.has_server:
        raise ValueError(f"{client.engine} has no roles: the page reads {client.engine} "
                         "through a read-only connection, no reader role is needed")
    return await client.connections.with_schema_lock(grant)
