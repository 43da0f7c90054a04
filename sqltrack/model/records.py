"""Row operations that experiments.py and runs.py share: links, the experiment lookup.

Both modules import this one, so neither borrows the other's private helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..checks import MAX_INDEXED_BYTES, check_int, check_text
from ..errors import ExperimentNotFound, ForeignKeyViolation

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient


async def experiment_row(
    client: AsyncClient, experiment_id: int | None, name: str | None
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
    client: AsyncClient,
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


async def remove_link(client: AsyncClient, table: str, from_id: int, kind: str, to_id: int) -> None:
    """Delete a link row from ``table``."""
    await client.query(
        f"DELETE FROM {table} WHERE from_id = %s AND kind = %s AND to_id = %s",
        [check_int(from_id, "from_id"), check_text(kind, "link kind"), check_int(to_id, "to_id")],
    )
