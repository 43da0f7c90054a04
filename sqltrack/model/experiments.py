"""Experiments: the ``experiment_*`` coroutines and AsyncExperiment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..checks import (
    MAX_INDEXED_BYTES,
    Names,
    check_text,
    dump_json_object,
    key_names,
    tags_object,
)
from ..errors import ExperimentNotFound
from .statements import add_link, experiment_row, remove_link, update_row

if TYPE_CHECKING:
    from ..client.async_client import AsyncClient
    from .runs import AsyncRun


async def _update_experiment(
    client: AsyncClient, experiment_id: int, assignment: str, params: list[Any]
) -> None:
    await update_row(client, "experiments", experiment_id, assignment, params)


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
    await add_link(client, "experiment_links", from_id, kind, to_id, ExperimentNotFound)


async def experiment_remove_link(
    client: AsyncClient, from_id: int, kind: str, to_id: int
) -> None:
    """Remove a link between two experiments."""
    await remove_link(client, "experiment_links", from_id, kind, to_id)


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
        experiment_id, name = await experiment_row(client, experiment_id, name)
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

