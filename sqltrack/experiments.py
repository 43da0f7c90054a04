"""Experiments: the ``experiment_*`` coroutines and AsyncExperiment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ExperimentNotFound, ForeignKeyViolation
from .values import (
    MAX_INDEXED_BYTES,
    Names,
    check_int,
    check_text,
    dump_json_object,
    key_names,
    tags_object,
)

if TYPE_CHECKING:
    from .client import AsyncClient
    from .runs import AsyncRun


async def _update_experiment(
    client: AsyncClient, experiment_id: int, assignment: str, params: list
) -> None:
    experiment_id = check_int(experiment_id, "experiment_id")
    rows = await client.query(
        f"UPDATE experiments SET {assignment} WHERE id = %s RETURNING id", [*params, experiment_id]
    )
    if not rows:
        raise ExperimentNotFound(experiment_id)


async def experiment_set_name(client: AsyncClient, experiment_id: int, name: str) -> None:
    """Set an experiment name (names are unique)."""
    name = check_text(name, "name", max_bytes=MAX_INDEXED_BYTES)
    await _update_experiment(client, experiment_id, "name = %s", [name])


async def experiment_set_comment(
    client: AsyncClient, experiment_id: int, comment: str | None
) -> None:
    """Set an experiment comment (None clears it)."""
    comment = check_text(comment, "comment", allow_none=True)
    await _update_experiment(client, experiment_id, "comment = %s", [comment])


async def experiment_add_tags(client: AsyncClient, experiment_id: int, *tags: str) -> None:
    """Add tags to an experiment."""
    patch = dump_json_object(tags_object(tags), "tags")
    await _update_experiment(
        client, experiment_id, f"tags = {client.dialect.json_merge('tags')}", [patch]
    )


async def experiment_remove_tags(client: AsyncClient, experiment_id: int, *tags: Names) -> None:
    """Remove tags from an experiment: tags, iterables of tags or dicts (their keys)."""
    keys = client.dialect.key_list_param(key_names(tags, "tag"))
    await _update_experiment(
        client, experiment_id, f"tags = {client.dialect.json_remove('tags')}", [keys]
    )


async def experiment_set_tags(client: AsyncClient, experiment_id: int, *tags: str) -> None:
    """Set tags of an experiment (replacing all of them)."""
    value = dump_json_object(tags_object(tags), "tags")
    await _update_experiment(
        client, experiment_id, f"tags = {client.dialect.json_param()}", [value]
    )


async def experiment_add_link(client: AsyncClient, from_id: int, kind: str, to_id: int) -> None:
    """Add a link ``from_id --kind--> to_id`` between two experiments."""
    await _add_link(client, "experiment_links", from_id, kind, to_id, ExperimentNotFound)


async def experiment_remove_link(
    client: AsyncClient, from_id: int, kind: str, to_id: int
) -> None:
    """Remove a link between two experiments."""
    await _remove_link(client, "experiment_links", from_id, kind, to_id)


async def _add_link(client, table: str, from_id, kind, to_id, not_found: type) -> None:
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


async def _remove_link(client, table: str, from_id, kind, to_id) -> None:
    await client.query(
        f"DELETE FROM {table} WHERE from_id = %s AND kind = %s AND to_id = %s",
        [check_int(from_id, "from_id"), check_text(kind, "link kind"), check_int(to_id, "to_id")],
    )


class AsyncExperiment:
    """An experiment (async). Make one with ``await AsyncExperiment.create(client, ...)``.

    All methods except ``get_run`` return the experiment itself, for chaining:
    ``exp = await (await AsyncExperiment.create(client, name="x")).set_comment("nice")``.
    """

    def __init__(self, client: AsyncClient, experiment_id: int, name: str) -> None:
        self.client = client
        self.id = experiment_id
        self.name = name

    def __repr__(self) -> str:
        return f"<AsyncExperiment id={self.id} name={self.name!r}>"

    @classmethod
    async def create(
        cls, client: AsyncClient, experiment_id: int | None = None, name: str | None = None
    ) -> AsyncExperiment:
        """Get the experiment with this id and/or name, creating it when missing.

        With a name only, the experiment of that name (new or existing). With an id
        only, the existing experiment (ExperimentNotFound otherwise). With both,
        they must agree: an id that has another name, or a name used by another
        id, is a ValueError.
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
            return cls(client, rows[0][0], name)
        if name is None:
            rows = await client.query("SELECT name FROM experiments WHERE id = %s", [experiment_id])
            if not rows:
                raise ExperimentNotFound(experiment_id)
            return cls(client, experiment_id, rows[0][0])
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
        return cls(client, experiment_id, name)

    async def get_run(self, run_id: int | str | None = None) -> AsyncRun:
        """An AsyncRun of this experiment (see ``AsyncRun.create``)."""
        from .runs import AsyncRun

        return await AsyncRun.create(self.client, self.id, run_id)

    async def set_name(self, name: str) -> AsyncExperiment:
        """Set the experiment name."""
        await experiment_set_name(self.client, self.id, name)
        self.name = name
        return self

    async def set_comment(self, comment: str | None) -> AsyncExperiment:
        """Set the experiment comment."""
        await experiment_set_comment(self.client, self.id, comment)
        return self

    async def add_tags(self, *tags: str) -> AsyncExperiment:
        """Add tags to the experiment."""
        await experiment_add_tags(self.client, self.id, *tags)
        return self

    async def remove_tags(self, *tags: Names) -> AsyncExperiment:
        """Remove tags from the experiment. See experiment_remove_tags()."""
        await experiment_remove_tags(self.client, self.id, *tags)
        return self

    async def set_tags(self, *tags: str) -> AsyncExperiment:
        """Set tags of the experiment."""
        await experiment_set_tags(self.client, self.id, *tags)
        return self

    async def add_link(self, kind: str, to_id: int) -> AsyncExperiment:
        """Add a link to another experiment."""
        await experiment_add_link(self.client, self.id, kind, to_id)
        return self

    async def remove_link(self, kind: str, to_id: int) -> AsyncExperiment:
        """Remove a link to another experiment."""
        await experiment_remove_link(self.client, self.id, kind, to_id)
        return self

