"""Experiments: AsyncExperiment.create get-or-create rules, setters, tags, links."""

from __future__ import annotations

import pytest
from support.helpers import json_value

import sqltrack
from sqltrack import AsyncExperiment


async def experiment_rows(client) -> list[tuple]:
    return await client.query("SELECT id, name, comment FROM experiments ORDER BY id")


async def tags_of(client, experiment_id: int):
    rows = await client.query("SELECT tags FROM experiments WHERE id = %s", [experiment_id])
    assert len(rows) == 1
    return json_value(rows[0][0])


async def links(client) -> list[tuple]:
    rows = await client.query(
        "SELECT from_id, kind, to_id FROM experiment_links ORDER BY from_id, kind, to_id"
    )
    return [tuple(r) for r in rows]


# -- create ---------------------------------------------------------------------------------
async def test_create_by_name_is_get_or_create(client):
    a = await AsyncExperiment.create(client, name="alpha")
    assert isinstance(a.id, int) and a.name == "alpha"
    again = await AsyncExperiment.create(client, name="alpha")
    assert again.id == a.id
    b = await AsyncExperiment.create(client, name="beta")
    assert b.id != a.id
    assert await experiment_rows(client) == [(a.id, "alpha", None), (b.id, "beta", None)]


async def test_create_by_name_keeps_existing_values(client):
    a = await AsyncExperiment.create(client, name="keep")
    await a.set_comment("hello")
    await a.add_tags("t")
    await AsyncExperiment.create(client, name="keep")
    assert await experiment_rows(client) == [(a.id, "keep", "hello")]
    assert await tags_of(client, a.id) == {"t": True}


async def test_create_by_id(client):
    a = await AsyncExperiment.create(client, name="by-id")
    loaded = await AsyncExperiment.create(client, a.id)
    assert (loaded.id, loaded.name) == (a.id, "by-id")
    loaded_kw = await AsyncExperiment.create(client, experiment_id=a.id)
    assert loaded_kw.name == "by-id"


async def test_create_by_missing_id_raises(client):
    with pytest.raises(sqltrack.ExperimentNotFound) as info:
        await AsyncExperiment.create(client, 424242)
    assert "424242" in str(info.value)
    assert isinstance(info.value, LookupError)
    assert await experiment_rows(client) == []


async def test_create_with_neither_raises(client):
    with pytest.raises(ValueError):
        await AsyncExperiment.create(client)
    assert await experiment_rows(client) == []


async def test_create_with_id_and_name_new(client):
    exp = await AsyncExperiment.create(client, 77, "seventy-seven")
    assert (exp.id, exp.name) == (77, "seventy-seven")
    assert await experiment_rows(client) == [(77, "seventy-seven", None)]
    again = await AsyncExperiment.create(client, 77, "seventy-seven")
    assert again.id == 77
    assert await experiment_rows(client) == [(77, "seventy-seven", None)]
    # a generated id never collides with the explicit one
    other = await AsyncExperiment.create(client, name="generated")
    assert other.id != 77
    assert len(await experiment_rows(client)) == 2


async def test_create_id_with_other_name_raises_and_writes_nothing(client):
    a = await AsyncExperiment.create(client, 5, "five")
    with pytest.raises(ValueError, match="five"):
        await AsyncExperiment.create(client, a.id, "not-five")
    assert await experiment_rows(client) == [(5, "five", None)]


async def test_create_name_of_other_id_raises_and_writes_nothing(client):
    await AsyncExperiment.create(client, 5, "five")
    with pytest.raises(ValueError):
        await AsyncExperiment.create(client, 6, "five")
    assert await experiment_rows(client) == [(5, "five", None)]


async def test_create_id_and_name_of_two_experiments_raises(client):
    await AsyncExperiment.create(client, 1, "one")
    await AsyncExperiment.create(client, 2, "two")
    with pytest.raises(ValueError):
        await AsyncExperiment.create(client, 1, "two")
    assert await experiment_rows(client) == [(1, "one", None), (2, "two", None)]


async def test_create_bad_types(client):
    with pytest.raises(TypeError):
        await AsyncExperiment.create(client, name=123)
    with pytest.raises(TypeError):
        await AsyncExperiment.create(client, "1")
    with pytest.raises(ValueError):
        await AsyncExperiment.create(client, name="nul\x00byte")
    assert await experiment_rows(client) == []


async def test_unicode_and_quotes_in_name(client):
    name = "ünïcode 🚀 'quoted' \"double\"; DROP TABLE runs; --"
    exp = await AsyncExperiment.create(client, name=name)
    assert await experiment_rows(client) == [(exp.id, name, None)]
    assert (await AsyncExperiment.create(client, exp.id)).name == name


# -- setters --------------------------------------------------------------------------------
async def test_set_name(client, experiment):
    assert await experiment.set_name("renamed") is experiment
    assert experiment.name == "renamed"
    assert await experiment_rows(client) == [(experiment.id, "renamed", None)]
    assert (await AsyncExperiment.create(client, name="renamed")).id == experiment.id


async def test_set_name_to_taken_name_raises_and_changes_nothing(client, experiment):
    other = await AsyncExperiment.create(client, name="taken")
    with pytest.raises(sqltrack.errors.UniqueViolation):
        await experiment.set_name("taken")
    assert await experiment_rows(client) == [
        (experiment.id, "test-experiment", None),
        (other.id, "taken", None),
    ]


async def test_set_comment(client, experiment):
    assert await experiment.set_comment("nice") is experiment
    assert await experiment_rows(client) == [(experiment.id, "test-experiment", "nice")]
    await experiment.set_comment("newer")
    assert await experiment_rows(client) == [(experiment.id, "test-experiment", "newer")]
    await experiment.set_comment(None)
    assert await experiment_rows(client) == [(experiment.id, "test-experiment", None)]


async def test_tags(client, experiment):
    assert await tags_of(client, experiment.id) is None
    assert await experiment.add_tags("a", "b") is experiment
    assert await tags_of(client, experiment.id) == {"a": True, "b": True}
    await experiment.add_tags("b", "c")
    assert await tags_of(client, experiment.id) == {"a": True, "b": True, "c": True}
    assert await experiment.remove_tags("a", "not-there") is experiment
    assert await tags_of(client, experiment.id) == {"b": True, "c": True}
    assert await experiment.set_tags("x", "y ü") is experiment
    assert await tags_of(client, experiment.id) == {"x": True, "y ü": True}
    await experiment.set_tags()
    assert await tags_of(client, experiment.id) == {}
    await experiment.add_tags()
    assert await tags_of(client, experiment.id) == {}


async def test_remove_tags_when_none_set(client, experiment):
    await experiment.remove_tags("a")
    assert await tags_of(client, experiment.id) in (None, {})


async def test_tags_are_queryable_as_json(client, experiment):
    await experiment.add_tags("gpu", "big")
    await AsyncExperiment.create(client, name="untagged")
    if client.engine == "sqlite":
        rows = await client.execute(
            "SELECT id FROM experiments WHERE json_extract(tags, '$.gpu') = 1"
        )
    else:
        rows = await client.execute(
            "SELECT id FROM experiments WHERE tags @> %s::jsonb", ['{"gpu": true}']
        )
    assert rows == [(experiment.id,)]


async def test_bad_tag_changes_nothing(client, experiment):
    await experiment.add_tags("ok")
    with pytest.raises(ValueError):
        await experiment.add_tags("fine", "bad\x00tag")
    with pytest.raises(TypeError):
        await experiment.add_tags(3)
    with pytest.raises(TypeError):
        await experiment.set_tags("x", None)
    assert await tags_of(client, experiment.id) == {"ok": True}


async def test_chaining(client):
    exp = await AsyncExperiment.create(client, name="chain")
    other = await AsyncExperiment.create(client, name="chain-2")
    result = await (await (await exp.set_comment("c")).add_tags("t")).add_link("k", other.id)
    assert result is exp
    assert await (await exp.remove_link("k", other.id)).set_tags("u") is exp
    assert await (await exp.remove_tags("u")).set_name("chain-renamed") is exp
    assert await experiment_rows(client) == [(exp.id, "chain-renamed", "c"),
                                             (other.id, "chain-2", None)]
    assert await tags_of(client, exp.id) == {}
    assert await links(client) == []


async def test_get_run(client, experiment):
    run = await experiment.get_run()
    assert isinstance(run, sqltrack.AsyncRun)
    assert run.experiment_id == experiment.id
    assert await client.query("SELECT id, experiment_id FROM runs") == [(run.id, experiment.id)]
    same = await experiment.get_run(run.id)
    assert same.id == run.id
    explicit = await experiment.get_run(1000)
    assert explicit.id == 1000
    assert await client.query("SELECT id FROM runs ORDER BY id") == [(run.id,), (1000,)]


# -- links ------------------------------------------------------------------------------------
async def test_links(client, experiment):
    b = await AsyncExperiment.create(client, name="b")
    c = await AsyncExperiment.create(client, name="c")
    assert await experiment.add_link("parent", b.id) is experiment
    await experiment.add_link("parent", b.id)  # twice: still one link
    await experiment.add_link("parent", c.id)
    await experiment.add_link("sibling", b.id)
    await b.add_link("child", experiment.id)
    assert await links(client) == sorted(
        [
            (experiment.id, "parent", b.id),
            (experiment.id, "parent", c.id),
            (experiment.id, "sibling", b.id),
            (b.id, "child", experiment.id),
        ]
    )
    assert await experiment.remove_link("parent", b.id) is experiment
    await experiment.remove_link("parent", 999999)  # absent: no error
    assert await links(client) == sorted(
        [
            (experiment.id, "parent", c.id),
            (experiment.id, "sibling", b.id),
            (b.id, "child", experiment.id),
        ]
    )


async def test_link_to_missing_experiment_raises(client, experiment):
    with pytest.raises(sqltrack.ExperimentNotFound):
        await experiment.add_link("parent", 999999)
    with pytest.raises(sqltrack.ExperimentNotFound):
        await sqltrack.experiment_add_link(client, 999998, "parent", experiment.id)
    assert await links(client) == []


# -- the experiment_* functions ----------------------------------------------------------------
async def test_experiment_functions(client, experiment):
    eid = experiment.id
    other = await AsyncExperiment.create(client, name="other")
    assert await sqltrack.experiment_set_name(client, eid, "fn-name") is None
    assert await sqltrack.experiment_set_comment(client, eid, "fn-comment") is None
    await sqltrack.experiment_add_tags(client, eid, "a", "b", "c")
    await sqltrack.experiment_remove_tags(client, eid, "b")
    assert await tags_of(client, eid) == {"a": True, "c": True}
    await sqltrack.experiment_set_tags(client, eid, "z")
    assert await tags_of(client, eid) == {"z": True}
    await sqltrack.experiment_add_link(client, eid, "uses", other.id)
    assert await links(client) == [(eid, "uses", other.id)]
    await sqltrack.experiment_remove_link(client, eid, "uses", other.id)
    assert await links(client) == []
    assert await experiment_rows(client) == [(eid, "fn-name", "fn-comment"),
                                             (other.id, "other", None)]
    await sqltrack.experiment_set_comment(client, eid, None)
    assert (await experiment_rows(client))[0] == (eid, "fn-name", None)
    # other experiment untouched
    assert await tags_of(client, other.id) is None


async def test_experiment_functions_on_missing_experiment(client):
    calls = [
        lambda c: sqltrack.experiment_set_name(c, 31337, "x"),
        lambda c: sqltrack.experiment_set_comment(c, 31337, "x"),
        lambda c: sqltrack.experiment_add_tags(c, 31337, "x"),
        lambda c: sqltrack.experiment_remove_tags(c, 31337, "x"),
        lambda c: sqltrack.experiment_set_tags(c, 31337, "x"),
    ]
    for index, call in enumerate(calls):
        try:
            await call(client)
        except sqltrack.ExperimentNotFound:
            continue
        pytest.fail(f"call {index} did not raise ExperimentNotFound")
    assert await experiment_rows(client) == []


async def test_functions_inside_block_are_one_transaction(client, experiment):
    with pytest.raises(RuntimeError):
        async with client:
            await sqltrack.experiment_set_comment(client, experiment.id, "tmp")
            await sqltrack.experiment_add_tags(client, experiment.id, "tmp")
            raise RuntimeError
    assert await experiment_rows(client) == [(experiment.id, "test-experiment", None)]
    assert await tags_of(client, experiment.id) is None
