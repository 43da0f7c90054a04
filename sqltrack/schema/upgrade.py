"""Bring an existing database up to the current base schema, in place.

Three kinds of database are met on first use: an empty one (the base schema is
created), one made by sqltrack 0.1.x (PostgreSQL: ``applied_migrations``, enum
``runstatus``, no ``runs.extras``), and one made by an earlier build of this
library (``sqltrack_migrations``, enum ``run_status`` or a SQLite CHECK with 15
statuses). Every step is idempotent and runs under the schema lock; nothing is
dropped or rewritten except a SQLite ``runs`` table, which is rebuilt row for row
(same ids) because SQLite cannot alter a CHECK constraint.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..checks import STATUSES
from .state import (
    CURRENT,
    EARLY,
    EARLY_MIGRATIONS,
    EMPTY,
    MIGRATIONS,
    PARTIAL,
    V01,
    record_marks,
)
from .state import rows as _rows
from .state import tables as _tables

if TYPE_CHECKING:
    from ..engines.base import Engine


async def upgrade(engine: Engine, conn: Any, state: str, base_sql: str) -> str | None:
    """Create or upgrade the schema (the caller holds the schema lock); say what was done."""
    if state == CURRENT:
        return None
    if engine.name == "sqlite":
        await _sqlite_steps(engine, conn)
    else:
        await _postgres_steps(engine, conn)
    await engine.executescript(conn, base_sql)
    await record_marks(engine, conn)
    return {
        EMPTY: "created the sqltrack tables",
        V01: "upgraded a sqltrack 0.1.x database (added runs.extras, system_metrics, "
             "indexes, applied_migrations.time_applied)",
        EARLY: "upgraded a database of an earlier sqltrack build (sqltrack_migrations -> "
               "applied_migrations, 24 run statuses, system_metrics)",
        PARTIAL: "completed the sqltrack tables",
    }[state]


async def _adopt_early_migrations(engine: Engine, conn: Any, tables: set[str]) -> None:
    """Move an earlier build's ``sqltrack_migrations`` rows into ``applied_migrations``."""
    if EARLY_MIGRATIONS not in tables:
        return
    if MIGRATIONS not in tables:
        await _rows(engine, conn, "ALTER TABLE sqltrack_migrations RENAME TO applied_migrations")
        return
    await _rows(engine, conn, "INSERT INTO applied_migrations (name) SELECT name "
                "FROM sqltrack_migrations WHERE true ON CONFLICT DO NOTHING")


async def _postgres_steps(engine: Engine, conn: Any) -> None:
    tables = await _tables(engine, conn)
    await _adopt_early_migrations(engine, conn, tables)
    if tables & {MIGRATIONS, EARLY_MIGRATIONS}:
        # 0.1.x's table has only the name (its rows get no time); 0.1.x inserts the name only.
        await _rows(engine, conn, "ALTER TABLE applied_migrations "
                    "ADD COLUMN IF NOT EXISTS time_applied TIMESTAMPTZ")
        await _rows(engine, conn, "ALTER TABLE applied_migrations "
                    "ALTER COLUMN time_applied SET DEFAULT now()")
        await _rows(engine, conn, "ALTER TABLE applied_migrations "
                    "ALTER COLUMN time_applied DROP NOT NULL")
    types = {r[0] for r in await _rows(
        engine, conn, "SELECT typname FROM pg_type WHERE typnamespace = "
        "(SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
        "AND typname IN ('runstatus', 'run_status')")}
    if "run_status" in types and "runstatus" not in types:
        await _rows(engine, conn, "ALTER TYPE run_status RENAME TO runstatus")
        types.add("runstatus")
    if "runstatus" in types:
        present = {r[0] for r in await _rows(
            engine, conn, "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
            "JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = current_schema() AND t.typname = 'runstatus'")}
        # Allowed in a transaction since PostgreSQL 12; the new values are usable
        # after commit (nothing here uses them before).
        for status in STATUSES:
            if status not in present:
                await _rows(engine, conn,
                            f"ALTER TYPE runstatus ADD VALUE IF NOT EXISTS '{status}'")


_CHECK = re.compile(r"CHECK\s*\(\s*status\s+IN\s*\([^)]*\)\s*\)", re.IGNORECASE)
_CREATE_RUNS = re.compile(r'^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"?runs"?', re.IGNORECASE)


async def _sqlite_steps(engine: Engine, conn: Any) -> None:
    tables = await _tables(engine, conn)
    await _adopt_early_migrations(engine, conn, tables)
    if "runs" in tables:
        await _sqlite_widen_status_check(engine, conn)


async def _sqlite_widen_status_check(engine: Engine, conn: Any) -> None:
    """Rebuild ``runs`` with the 24-status CHECK: same columns, rows, ids, indexes, triggers.

    The caller turned foreign keys off (outside the transaction, as SQLite requires),
    so dropping the old table neither cascades nor fails; the check at the end proves
    every reference still resolves.
    """
    (old_sql,), = await _rows(engine, conn, "SELECT sql FROM sqlite_master "
                              "WHERE type = 'table' AND name = 'runs'")
    if all(f"'{s}'" in old_sql for s in STATUSES):
        return
    values = ", ".join(f"'{s}'" for s in STATUSES)
    new_sql, checks = _CHECK.subn(f"CHECK (status IN ({values}))", old_sql, count=1)
    new_sql, creates = _CREATE_RUNS.subn("CREATE TABLE sqltrack_runs_rebuild", new_sql, count=1)
    if not (checks and creates):
        raise RuntimeError(f"cannot upgrade the runs table: unexpected definition {old_sql!r}")
    extras = [r[0] for r in await _rows(
        engine, conn, "SELECT sql FROM sqlite_master WHERE tbl_name = 'runs' "
        "AND type IN ('index', 'trigger') AND sql IS NOT NULL")]
    seq = await _rows(engine, conn, "SELECT seq FROM sqlite_sequence WHERE name = 'runs'")
    await _rows(engine, conn, new_sql)
    await _rows(engine, conn, "INSERT INTO sqltrack_runs_rebuild SELECT * FROM runs")
    await _rows(engine, conn, "DROP TABLE runs")
    # Legacy rename: views naming "runs" are not re-checked while it is briefly missing.
    await _rows(engine, conn, "PRAGMA legacy_alter_table = ON")
    await _rows(engine, conn, "ALTER TABLE sqltrack_runs_rebuild RENAME TO runs")
    await _rows(engine, conn, "PRAGMA legacy_alter_table = OFF")
    for statement in extras:
        await _rows(engine, conn, statement)
    # AUTOINCREMENT: generated ids stay above every id used before, deleted ones too.
    (top,), = await _rows(engine, conn, "SELECT coalesce(max(id), 0) FROM runs")
    await _rows(engine, conn, "DELETE FROM sqlite_sequence WHERE name = 'runs'")
    await _rows(engine, conn, "INSERT INTO sqlite_sequence (name, seq) VALUES ('runs', %s)",
                [max(top, seq[0][0] if seq else 0)])
    broken = await _rows(engine, conn, "PRAGMA foreign_key_check")
    if broken:
        raise RuntimeError(f"runs rebuild left broken references: {broken[:5]}")
