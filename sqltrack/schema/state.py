"""What kind of database this is, and the creation of the base schema in an empty one.

The recorded marks and the detection are all that opening a database needs when
its schema is current or absent; ``schema/upgrade.py`` (the steps that bring an
older database up to date) is imported only when one is met.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engines.base import Engine

#: Recorded when a database has the schema of this version (the fast check on open):
#: 3 gave ``system_metrics`` ``rank`` and ``host`` in its key; 4 added ``metric_values``,
#: ``metric_names`` and the view ``metric_values_all``; 5 has no triggers (PostgreSQL:
#: ``sqltrack_advance_id`` dropped, sqltrack's statements advance the id sequence: Citus);
#: 6 added the index ``runs (experiment_id, status, id)`` (the page's status sort/filter);
#: 7 (PostgreSQL) the function ``metric_series(run, name)`` (any metric by name, fast)
#: and the index of the runs' names by experiment (the page's name sort).
SCHEMA_MARK = "sqltrack:schema:7"
#: The marks of the builds before, newest first: upgraded in place.
PREVIOUS_MARKS = ("sqltrack:schema:6", "sqltrack:schema:5", "sqltrack:schema:4",
                  "sqltrack:schema:2")
#: The oldest of them (no ``metric_values`` nor ranks yet).
PREVIOUS_MARK = PREVIOUS_MARKS[-1]
#: Recorded when the base schema was created or adopted (also by earlier builds).
BASE_MARK = "sqltrack:base"
#: sqltrack 0.1.x runs its ``base.sql`` unless this name is recorded.
V01_BASE = "base.sql"
MIGRATIONS = "applied_migrations"
EARLY_MIGRATIONS = "sqltrack_migrations"

#: sqltrack's tables made on demand that name runs (``sqltrack sync``'s, on the target).
SIDE_TABLES = ("sync_experiments", "sync_runs")

EMPTY, CURRENT, V01, EARLY, PARTIAL = "empty", "current", "0.1.x", "early", "partial"
PREVIOUS = "schema:2"
PREVIOUS4 = "schema:4"
PREVIOUS5 = "schema:5"
PREVIOUS6 = "schema:6"


async def rows(engine: Engine, conn: Any, sql: str, params: Any = ()) -> list[Any]:
    return await engine.fetch(conn, engine.dialect.sql(sql), list(params))


async def tables(engine: Engine, conn: Any) -> set[str]:
    """Which of sqltrack's migrations tables (ours, an earlier build's) and ``runs`` exist."""
    sql, params = engine.dialect.tables_query((MIGRATIONS, EARLY_MIGRATIONS, "runs"))
    return {r[0] for r in await rows(engine, conn, sql, params)}


async def detect(engine: Engine, conn: Any) -> str:
    """Which kind of database this is: empty, current, 0.1.x, early (a build before) or partial."""
    present = await tables(engine, conn)
    if EARLY_MIGRATIONS in present:
        return EARLY
    if MIGRATIONS not in present:
        return PARTIAL if "runs" in present else EMPTY
    names = [SCHEMA_MARK, *PREVIOUS_MARKS, BASE_MARK]
    marks = {r[0] for r in await rows(
        engine, conn, "SELECT name FROM applied_migrations WHERE name IN ("
        + ", ".join(["%s"] * len(names)) + ")", names)}
    if SCHEMA_MARK in marks:
        return CURRENT
    if PREVIOUS_MARKS[0] in marks:
        return PREVIOUS6
    if PREVIOUS_MARKS[1] in marks:
        return PREVIOUS5
    if PREVIOUS_MARKS[2] in marks:
        return PREVIOUS4
    if PREVIOUS_MARK in marks:
        return PREVIOUS
    return PARTIAL if BASE_MARK in marks else V01


async def record_marks(engine: Engine, conn: Any) -> None:
    """Record that the database has the current base schema (and, on an engine sqltrack
    0.1.x used, that 0.1.x must not run its own ``base.sql``)."""
    marks = [BASE_MARK, SCHEMA_MARK] + ([V01_BASE] if engine.dialect.shared_with_v01 else [])
    values = ", ".join(["(%s)"] * len(marks))
    await rows(engine, conn, f"INSERT INTO applied_migrations (name) VALUES {values} "
               "ON CONFLICT DO NOTHING", marks)


async def run_steps(engine: Engine, conn: Any, steps: Any) -> Any:
    """Run a dialect's sans-I/O steps: each statement it yields, its rows sent back; what
    the steps return."""
    try:
        sql, params = next(steps)
        while True:
            sql, params = steps.send(await rows(engine, conn, sql, params))
    except StopIteration as stop:
        return stop.value


async def distribute(engine: Engine, conn: Any, force: bool = False) -> str | None:
    """Spread the base tables (and the ``SIDE_TABLES`` there are) over a distributed
    engine's nodes (the dialect's ``distribute_steps``: Citus) unless the setting
    ``distribute`` is off (``force``: even then, ``sqltrack setup --distribute``).
    What was done; ``""``: a distributed engine with nothing left to do; None: no
    distributed engine (or the setting is off)."""
    if not force and not getattr(engine.settings, "distribute", True):
        return None
    done: str | None = await run_steps(engine, conn, engine.dialect.distribute_steps(SIDE_TABLES))
    return done


async def partition(engine: Engine, conn: Any, count: int, base_sql: str) -> str | None:
    """Make ``metrics`` and ``metric_values`` partitioned by run id into ``count``
    partitions, rows kept (the dialect's ``partition_steps``; the caller holds the schema
    lock), and the view ``metric_values_all`` again (the base script). What was done;
    ``""``: partitioned so before; None: the engine has no partitioned tables."""
    done: str | None = await run_steps(engine, conn, engine.dialect.partition_steps(count))
    if done:
        await engine.executescript(conn, base_sql)
    return done


async def create(engine: Engine, conn: Any, base_sql: str) -> str:
    """The base schema in an empty database (the caller holds the schema lock),
    partitioned when the setting ``partitions`` asks."""
    await engine.executescript(conn, base_sql)
    count = getattr(engine.settings, "partitions", 0)
    parted = await partition(engine, conn, count, base_sql) if count else None
    await engine.refresh_metric_view(conn)
    await record_marks(engine, conn)
    return "created the sqltrack tables" + (f"; {parted}" if parted else "")
