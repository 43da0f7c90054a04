"""Bring an existing database up to the current base schema, in place.

Four kinds of database are met on first use: an empty one (the base schema is
created), one made by sqltrack 0.1.x (PostgreSQL: ``applied_migrations``, enum
``runstatus``, no ``runs.extras``), one made by an earlier build of this library
(``sqltrack_migrations``, enum ``run_status`` or a SQLite CHECK with 15 statuses),
and one of the build before (mark ``sqltrack:schema:2``: no ``metric_values`` /
``metric_names`` yet, added by the base script, and ``system_metrics`` without ``rank``
and ``host``, the dialect's step ``system_metrics_ranks``), and one of mark
``sqltrack:schema:4`` (PostgreSQL: the triggers ``sqltrack_advance_id``, dropped by the
dialect's step ``drop_advance_id_triggers``; every older PostgreSQL database has them
too and loses them the same way), one of mark ``sqltrack:schema:5`` (no index
``runs (experiment_id, status, id)`` yet: the base script's ``CREATE INDEX IF NOT
EXISTS`` adds it, on Citus too), and one of mark ``sqltrack:schema:6`` (PostgreSQL: no
function ``metric_series`` nor index ``runs_experiment_name_idx`` yet: the base script's
``CREATE OR REPLACE`` and ``CREATE INDEX IF NOT EXISTS`` add them). Every step is
idempotent and runs under the schema lock; nothing is dropped or rewritten except a
SQLite ``runs`` table, which is rebuilt row for row (same ids) because SQLite cannot
alter a CHECK constraint. The steps that differ by engine are its dialect's
``upgrade_steps`` (statements only: they run here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..checks import STATUSES
from .state import (
    CURRENT,
    EARLY,
    EARLY_MIGRATIONS,
    EMPTY,
    MIGRATIONS,
    PARTIAL,
    PREVIOUS,
    PREVIOUS4,
    PREVIOUS5,
    PREVIOUS6,
    V01,
    record_marks,
    run_steps,
)
from .state import rows as _rows
from .state import tables as _tables

if TYPE_CHECKING:
    from ..engines.base import Engine
    from ..engines.dialects import Steps


async def upgrade(engine: Engine, conn: Any, state: str, base_sql: str) -> str | None:
    """Create or upgrade the schema (the caller holds the schema lock); say what was done."""
    if state == CURRENT:
        return None
    tables = await _tables(engine, conn)
    await _adopt_early_migrations(engine, conn, tables)
    await _run_steps(engine, conn, engine.dialect.upgrade_steps(tables, STATUSES))
    for statement in engine.dialect.script_statements(base_sql):  # tables may be distributed
        await engine.executescript(conn, statement)
    await engine.refresh_metric_view(conn)
    await record_marks(engine, conn)
    return {
        EMPTY: "created the sqltrack tables",
        V01: "upgraded a sqltrack 0.1.x database (added runs.extras, system_metrics, "
             "indexes, applied_migrations.time_applied)",
        EARLY: "upgraded a database of an earlier sqltrack build (sqltrack_migrations -> "
               "applied_migrations, 24 run statuses, system_metrics)",
        PARTIAL: "completed the sqltrack tables",
        PREVIOUS: "upgraded the sqltrack tables (added metric_values, metric_names and the "
                  "view metric_values_all: metrics past the column budget; system_metrics "
                  "per rank and host; no triggers)",
        PREVIOUS4: "upgraded the sqltrack tables (no triggers: sqltrack's own statements "
                   "advance the id sequence past an explicit id, as Citus needs)",
        PREVIOUS5: "upgraded the sqltrack tables (added the index runs (experiment_id, "
                   "status, id): the runs table of an experiment by status)",
        PREVIOUS6: "upgraded the sqltrack tables (PostgreSQL: added the function "
                   "metric_series(run, name), any metric of a run by name, and the index "
                   "of the runs' name by experiment, the runs table by name)",
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


async def _run_steps(engine: Engine, conn: Any, steps: Steps) -> None:
    """Run a dialect's sans-I/O steps: each statement it yields, its rows sent back."""
    await run_steps(engine, conn, steps)
