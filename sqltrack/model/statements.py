"""SQL the model's modules share: links, the experiment lookup, the run updates.

``experiments``, ``runs`` and the spool's replay (``sqltrack.outage.replay``) use
these, so none borrows another's private helpers. Each takes any ``Database`` (an
``AsyncClient`` is one): this module imports no client, so the replay, which sits
below the client, can reuse the run SQL of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

from ..checks import MAX_INDEXED_BYTES, check_int, check_text
from ..engines.base import Dialect
from ..errors import ExperimentNotFound, ForeignKeyViolation, RunNotFound


class Database(Protocol):
    """What these statements need of a client: its own SQL, its dialect, a block."""

    @property
    def dialect(self) -> Dialect: ...

    async def query(
        self, sql: str, parameters: Sequence[Any] = (), *, idempotent: bool = True
    ) -> list[tuple[Any, ...]]: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


#: The tables ``update_row`` updates: (the id's name in messages, the error when missing).
_UPDATED: dict[str, tuple[str, Callable[[int], Exception]]] = {
    "runs": ("run_id", RunNotFound),
    "experiments": ("experiment_id", ExperimentNotFound),
}


async def update_row(
    client: Database, table: str, row_id: int, assignment: str, params: list[Any]
) -> None:
    """``UPDATE <table> SET <assignment> WHERE id = row_id`` for ``runs`` or ``experiments``
    (``assignment``: our own SQL with ``%s`` for ``params``); RunNotFound or
    ExperimentNotFound when there is no such row."""
    what, missing = _UPDATED[table]
    row_id = check_int(row_id, what)
    rows = await client.query(
        f"UPDATE {table} SET {assignment} WHERE id = %s RETURNING id", [*params, row_id]
    )
    if not rows:
        raise missing(row_id)


async def update_run(client: Database, run_id: int, assignment: str, params: list[Any]) -> None:
    """``UPDATE runs SET <assignment> WHERE id = run_id``; RunNotFound when it has no row."""
    await update_row(client, "runs", run_id, assignment, params)


async def create_run_with_id(client: Database, run_id: int, experiment_id: int) -> int:
    """Make run ``run_id`` in ``experiment_id`` unless it exists (idempotent); return the
    experiment the run belongs to (the caller compares)."""
    async with client:
        rows = await client.query(
            "INSERT INTO runs (id, experiment_id) VALUES (%s, %s) "
            "ON CONFLICT (id) DO UPDATE SET id = excluded.id RETURNING experiment_id",
            [run_id, experiment_id],
        )
        await advance_id(client, "runs", run_id)
    return int(rows[0][0])


async def advance_id(client: Database, table: str, new_id: int) -> None:
    """Move ``table``'s id generator past the explicit id ``new_id`` just inserted (call
    inside the inserting block: the same transaction). The statements are the dialect's
    (``advance_id_steps``; none on SQLite, whose ``AUTOINCREMENT`` does it): no trigger,
    so the tables can be distributed by Citus."""
    await run_steps(client, client.dialect.advance_id_steps(table, new_id))


async def run_steps(client: Database, steps: Any) -> Any:
    """Run a dialect's sans-I/O steps through ``client``: each statement it yields, its
    rows sent back; what the steps return."""
    try:
        sql, params = next(steps)
        while True:
            sql, params = steps.send(await client.query(sql, params))
    except StopIteration as stop:
        return stop.value


async def experiment_row(
    client: Database, experiment_id: int | None, name: str | None
) -> tuple[int, str]:
    """The ``(id, name)`` of the experiment given by id and/or name (see AsyncExperiment.create).

    A name only: made when missing. An id only: ExperimentNotFound when missing.
    Both: made when neither exists; a ValueError when they name different experiments.
    """
    if experiment_id is None and name is None:
        raise ValueError("give an experiment_id, a name, or both")
    if experiment_id is not None:
        experiment_id = check_int(experiment_id, "experiment_id")
    if name is not None:
        name = check_text(name, "experiment name", max_bytes=MAX_INDEXED_BYTES)
    if experiment_id is None:
        rows = await client.query(
            "INSERT INTO experiments (name) VALUES (%s) "
            "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
            [name],
        )
        return int(rows[0][0]), str(name)
    if name is None:
        rows = await client.query("SELECT name FROM experiments WHERE id = %s", [experiment_id])
        if not rows:
            raise ExperimentNotFound(experiment_id)
        return experiment_id, rows[0][0]
    async with client:
        await client.query(
            "INSERT INTO experiments (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [experiment_id, name],
        )
        await advance_id(client, "experiments", experiment_id)
        rows = await client.query(
            "SELECT id, name FROM experiments WHERE id = %s OR name = %s",
            [experiment_id, name],
        )
    if [tuple(r) for r in rows] != [(experiment_id, name)]:
        found = ", ".join(f"id {i} is named {n!r}" for i, n in rows)
        raise ValueError(
            f"experiment id {experiment_id} and name {name!r} do not match: {found}"
        )
    return experiment_id, name


async def add_link(
    client: Database,
    table: str,
    from_id: int,
    kind: str,
    to_id: int,
    not_found: Callable[[Any], Exception],
) -> None:
    """Insert a link row into ``table`` (``run_links`` / ``experiment_links``), once."""
    from_id = check_int(from_id, "from_id")
    to_id = check_int(to_id, "to_id")
    kind = check_text(kind, "link kind", max_bytes=MAX_INDEXED_BYTES)
    try:
        await client.query(
            f"INSERT INTO {table} (from_id, kind, to_id) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [from_id, kind, to_id],
        )
    except ForeignKeyViolation:
        raise not_found(f"{from_id} or {to_id}") from None


async def remove_link(client: Database, table: str, from_id: int, kind: str, to_id: int) -> None:
    """Delete a link row from ``table``."""
    await client.query(
        f"DELETE FROM {table} WHERE from_id = %s AND kind = %s AND to_id = %s",
        [check_int(from_id, "from_id"), check_text(kind, "link kind"), check_int(to_id, "to_id")],
    )


# -- history: rewind and fork (sqltrack.model.runs) ---------------------------
#: Run attributes a run made by a rewind or a fork takes from its run.
HISTORY_RUN_COLUMNS = "experiment_id, args"


async def lock_run(client: Database, run_id: int) -> tuple[int, Any]:
    """Lock run ``run_id``'s row for the rest of the block (a no-op update, allowed on
    every engine and on Citus); its ``(experiment_id, extras)``. RunNotFound when missing."""
    rows = await client.query(
        "UPDATE runs SET status = status WHERE id = %s RETURNING experiment_id, extras",
        [check_int(run_id, "run_id")],
    )
    if not rows:
        raise RunNotFound(run_id)
    return int(rows[0][0]), rows[0][1]


async def derived_run(client: Database, run_id: int) -> int:
    """A new run in ``run_id``'s experiment with its args (inside the caller's block)."""
    rows = await client.query(
        f"INSERT INTO runs ({HISTORY_RUN_COLUMNS}) SELECT {HISTORY_RUN_COLUMNS} FROM runs "
        "WHERE id = %s RETURNING id",
        [run_id], idempotent=False,
    )
    if not rows:
        raise RunNotFound(run_id)
    return int(rows[0][0])


async def count_metric_rows(
    client: Database, run_id: int, where: str, params: Sequence[Any]
) -> int:
    """How many of run ``run_id``'s metric rows (keys ``(step, progress)``, in ``metrics``
    or ``metric_values``) match ``where`` (over step and progress)."""
    ((count,),) = await client.query(
        f"SELECT COUNT(*) FROM (SELECT step, progress FROM metrics WHERE run_id = %s AND "
        f"{where} UNION SELECT step, progress FROM metric_values WHERE run_id = %s AND "
        f"{where}) AS k", [run_id, *params, run_id, *params]
    )
    return int(count)


async def copy_metric_rows(
    client: Database, columns: Sequence[str], from_id: int, to_id: int, where: str,
    params: Sequence[Any],
) -> None:
    """Copy run ``from_id``'s metric rows that match ``where`` (over ``step`` and
    ``progress``) to run ``to_id``, every column (``columns``: the metric columns) and
    every long-stored value. Plain ``INSERT ... SELECT``: a run id is never updated in
    place (it is the distribution column on Citus)."""
    names = "".join(", " + client.dialect.quote_ident(name) for name in columns)
    await client.query(
        f"INSERT INTO metrics (run_id, step, progress{names}) "
        f"SELECT %s, step, progress{names} FROM metrics WHERE run_id = %s AND {where}",
        [to_id, from_id, *params], idempotent=False,
    )
    await client.query(
        f"INSERT INTO metric_values (run_id, step, progress, name, {LONG_VALUES}) "
        f"SELECT %s, step, progress, name, {LONG_VALUES} FROM metric_values "
        f"WHERE run_id = %s AND {where}",
        [to_id, from_id, *params], idempotent=False,
    )


#: The value columns of ``metric_values`` (one per kind).
LONG_VALUES = "value, value_int, value_bool, value_text, value_time"


async def delete_metric_rows(client: Database, run_id: int, where: str,
                             params: Sequence[Any]) -> None:
    """Delete run ``run_id``'s metric rows that match ``where``, from both places."""
    for table in ("metrics", "metric_values"):  # fixed table names
        await client.query(f"DELETE FROM {table} WHERE run_id = %s AND {where}",
                           [run_id, *params], idempotent=False)


async def last_step(client: Database, run_id: int) -> int | None:
    """The largest step of run ``run_id``'s metric rows, in either place (None: none)."""
    ((last,),) = await client.query(
        "SELECT MAX(step) FROM (SELECT step FROM metrics WHERE run_id = %s "
        "UNION ALL SELECT step FROM metric_values WHERE run_id = %s) AS s", [run_id, run_id]
    )
    return None if last is None else int(last)
