"""Runs: AsyncRun.create, run_from_env, every run_* function, atomic JSON merges, links."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta, timezone

import pytest
from support.helpers import json_value

import sqltrack
from sqltrack import AsyncExperiment, AsyncRun
from sqltrack.environment import captured_environment

TZ_PLUS_2 = timezone(timedelta(hours=2))


def as_dt(value):
    """A timestamp column as an aware datetime (SQLite stores ISO text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value


async def column(client, run_id: int, name: str):
    rows = await client.query(f"SELECT {name} FROM runs WHERE id = %s", [run_id])
    assert len(rows) == 1
    return rows[0][0]


async def json_column(client, run_id: int, name: str):
    return json_value(await column(client, run_id, name))


async def run_ids(client) -> list[tuple]:
    return [tuple(r) for r in await client.query("SELECT id, experiment_id FROM runs ORDER BY id")]


# -- AsyncRun.create -----------------------------------------------------------------------------
async def test_create_new_runs(client, experiment):
    a = await AsyncRun.create(client, experiment.id)
    b = await AsyncRun.create(client, experiment.id)
    c = await experiment.get_run()
    assert len({a.id, b.id, c.id}) == 3
    assert all(r.experiment_id == experiment.id for r in (a, b, c))
    assert await run_ids(client) == sorted((r.id, experiment.id) for r in (a, b, c))


async def test_create_new_run_needs_experiment(client):
    with pytest.raises(ValueError):
        await AsyncRun.create(client)
    with pytest.raises(sqltrack.ExperimentNotFound):
        await AsyncRun.create(client, 5555)
    with pytest.raises(sqltrack.ExperimentNotFound):
        await AsyncRun.create(client, 5555, 10)
    assert await run_ids(client) == []


async def test_create_explicit_id_get_or_create(client, experiment):
    run = await AsyncRun.create(client, experiment.id, 500)
    assert (run.id, run.experiment_id) == (500, experiment.id)
    await run.set_comment("keep me")
    again = await AsyncRun.create(client, experiment.id, 500)
    assert again.id == 500
    loaded = await AsyncRun.create(client, run_id=500)
    assert (loaded.id, loaded.experiment_id) == (500, experiment.id)
    assert await run_ids(client) == [(500, experiment.id)]
    assert await column(client, 500, "comment") == "keep me"


async def test_load_missing_run_without_experiment_raises(client):
    with pytest.raises(sqltrack.RunNotFound) as info:
        await AsyncRun.create(client, run_id=404)
    assert info.value.run_id == 404
    assert await run_ids(client) == []


async def test_create_experiment_mismatch_raises(client, experiment):
    other = await AsyncExperiment.create(client, name="other")
    await AsyncRun.create(client, experiment.id, 42)
    with pytest.raises(ValueError, match="42"):
        await AsyncRun.create(client, other.id, 42)
    assert await run_ids(client) == [(42, experiment.id)]


async def test_create_run_id_from_env_var(client, experiment, monkeypatch):
    monkeypatch.setenv("MY_JOB_ID", "321")
    run = await AsyncRun.create(client, experiment.id, "MY_JOB_ID")
    assert run.id == 321
    again = await experiment.get_run("MY_JOB_ID")
    assert again.id == 321
    monkeypatch.setenv("MY_JOB_ID", " 322 \n")
    assert (await experiment.get_run("MY_JOB_ID")).id == 322
    assert await run_ids(client) == [(321, experiment.id), (322, experiment.id)]
    # unset or empty: a new run
    monkeypatch.delenv("UNSET_JOB_ID", raising=False)
    a = await AsyncRun.create(client, experiment.id, "UNSET_JOB_ID")
    monkeypatch.setenv("EMPTY_JOB_ID", "")
    b = await AsyncRun.create(client, experiment.id, "EMPTY_JOB_ID")
    assert len({a.id, b.id, 321, 322}) == 4
    # not an integer: ValueError naming the variable, nothing written
    monkeypatch.setenv("BAD_JOB_ID", "abc")
    with pytest.raises(ValueError, match="BAD_JOB_ID"):
        await AsyncRun.create(client, experiment.id, "BAD_JOB_ID")
    assert len(await run_ids(client)) == 4


async def test_explicit_then_generated_ids_never_collide(client, experiment):
    first = await experiment.get_run()
    explicit = [first.id + 1, first.id + 5, first.id + 3]
    for run_id in explicit:
        await experiment.get_run(run_id)
    generated = [(await experiment.get_run()).id for _ in range(8)]
    assert not set(generated) & set(explicit)
    assert len(set(generated)) == 8
    assert all(g > max(explicit) for g in generated)
    big = 10**12
    await experiment.get_run(big)
    after = await experiment.get_run()
    assert after.id > big
    assert len(await run_ids(client)) == 1 + 3 + 8 + 2
    # the same for experiments
    await AsyncExperiment.create(client, experiment.id + 100, "explicit")
    assert (await AsyncExperiment.create(client, name="generated")).id > experiment.id + 100


# -- run_from_env ------------------------------------------------------------------------------
@pytest.fixture
def clean_run_env(monkeypatch):
    for name in ("SQLTRACK_EXPERIMENT_NAME", "SQLTRACK_EXPERIMENT_ID", "SQLTRACK_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def test_run_from_env_name_only(client, clean_run_env):
    clean_run_env.setenv("SQLTRACK_EXPERIMENT_NAME", "from-env")
    run = await sqltrack.run_from_env(client)
    exp_rows = await client.query("SELECT id FROM experiments WHERE name = %s", ["from-env"])
    assert exp_rows == [(run.experiment_id,)]
    assert await run_ids(client) == [(run.id, run.experiment_id)]
    second = await sqltrack.run_from_env(client)
    assert second.id != run.id and second.experiment_id == run.experiment_id


async def test_run_from_env_with_run_id(client, clean_run_env):
    clean_run_env.setenv("SQLTRACK_EXPERIMENT_NAME", "from-env")
    clean_run_env.setenv("SQLTRACK_RUN_ID", "777")
    run = await sqltrack.run_from_env(client)
    assert run.id == 777
    assert (await sqltrack.run_from_env(client)).id == 777
    assert await run_ids(client) == [(777, run.experiment_id)]


async def test_run_from_env_experiment_id(client, experiment, clean_run_env):
    clean_run_env.setenv("SQLTRACK_EXPERIMENT_ID", str(experiment.id))
    run = await sqltrack.run_from_env(client)
    assert run.experiment_id == experiment.id
    clean_run_env.setenv("SQLTRACK_EXPERIMENT_NAME", "test-experiment")
    assert (await sqltrack.run_from_env(client)).experiment_id == experiment.id
    clean_run_env.setenv("SQLTRACK_EXPERIMENT_NAME", "some-other-name")
    with pytest.raises(ValueError):
        await sqltrack.run_from_env(client)
    assert len(await run_ids(client)) == 2


async def test_run_from_env_missing_experiment(client, clean_run_env):
    with pytest.raises(ValueError, match="SQLTRACK_EXPERIMENT"):
        await sqltrack.run_from_env(client)
    clean_run_env.setenv("SQLTRACK_EXPERIMENT_ID", "not-a-number")
    with pytest.raises(ValueError, match="SQLTRACK_EXPERIMENT_ID"):
        await sqltrack.run_from_env(client)
    clean_run_env.setenv("SQLTRACK_EXPERIMENT_ID", "9999")
    with pytest.raises(sqltrack.ExperimentNotFound):
        await sqltrack.run_from_env(client)
    assert await run_ids(client) == []
    assert await client.query("SELECT id FROM experiments") == []


# -- args ----------------------------------------------------------------------------------
async def test_args_add_remove_set(client, run):
    assert await json_column(client, run.id, "args") is None
    await sqltrack.run_add_args(client, run.id, {"lr": 0.1, "layers": [1, 2], "name": "x"})
    await sqltrack.run_add_args(client, run.id, {"lr": 0.2, "bs": 32, "nested": {"a": None}})
    assert await json_column(client, run.id, "args") == {
        "lr": 0.2,
        "layers": [1, 2],
        "name": "x",
        "bs": 32,
        "nested": {"a": None},
    }
    await sqltrack.run_remove_args(client, run.id, "layers", "name", "absent")
    assert await json_column(client, run.id, "args") == {"lr": 0.2, "bs": 32,
                                                         "nested": {"a": None}}
    await sqltrack.run_set_args(client, run.id, {"only": True})
    assert await json_column(client, run.id, "args") == {"only": True}
    await sqltrack.run_set_args(client, run.id, None)
    assert await column(client, run.id, "args") is None


async def test_add_args_none_and_empty_do_nothing(client, run):
    await run.add_args({"a": 1})
    await sqltrack.run_add_args(client, run.id, None)
    await sqltrack.run_add_args(client, run.id, {})
    assert await json_column(client, run.id, "args") == {"a": 1}


async def test_args_auto(client, run, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "--lr=0.01", "--epochs", "3", "data"])
    await sqltrack.run_add_args(client, run.id)  # 'auto' is the default
    assert await json_column(client, run.id, "args") == {"lr": 0.01, "epochs": 3, "_": ["data"]}
    monkeypatch.setattr(sys, "argv", ["train.py", "--fast"])
    await sqltrack.run_set_args(client, run.id, "auto")
    assert await json_column(client, run.id, "args") == {"fast": True}


async def test_set_args_auto_without_args_does_nothing(client, run, monkeypatch):
    await run.set_args({"keep": 1})
    monkeypatch.setattr(sys, "argv", ["train.py"])
    await sqltrack.run_set_args(client, run.id, "auto")
    assert await json_column(client, run.id, "args") == {"keep": 1}
    await sqltrack.run_add_args(client, run.id, "auto")
    assert await json_column(client, run.id, "args") == {"keep": 1}


async def test_run_object_args_methods(client, run, monkeypatch):
    assert await run.add_args({"a": 1, "b": 2, "c": 3}) is run
    assert await run.remove_args({"a": None, "b": None}) is run
    assert await json_column(client, run.id, "args") == {"c": 3}
    monkeypatch.setattr(sys, "argv", ["x.py", "--c", "9", "--d", "4"])
    assert await run.add_args() is run
    assert await json_column(client, run.id, "args") == {"c": 9, "d": 4}
    assert await run.remove_args() is run  # 'auto': remove the detected names
    assert await json_column(client, run.id, "args") == {}
    assert await run.set_args({"z": "zz"}) is run
    assert await json_column(client, run.id, "args") == {"z": "zz"}
    assert await run.set_args(None) is run
    assert await column(client, run.id, "args") is None


async def test_args_not_json_raise_and_change_nothing(client, run):
    await run.add_args({"ok": 1})
    with pytest.raises(ValueError):
        await run.add_args({"bad": float("nan")})
    with pytest.raises(ValueError):
        await run.set_args({"bad": object()})
    with pytest.raises(TypeError):
        await sqltrack.run_add_args(client, run.id, ["not", "a", "dict"])
    assert await json_column(client, run.id, "args") == {"ok": 1}


# -- env -------------------------------------------------------------------------------------
async def test_env_add_remove_set(client, run):
    await sqltrack.run_add_env(client, run.id, {"A": "1", "B": "2"})
    await sqltrack.run_add_env(client, run.id, {"B": "3", "C": "4"})
    await sqltrack.run_add_env(client, run.id, None)
    assert await json_column(client, run.id, "env") == {"A": "1", "B": "3", "C": "4"}
    await sqltrack.run_remove_env(client, run.id, "A", "C")
    assert await json_column(client, run.id, "env") == {"B": "3"}
    await sqltrack.run_set_env(client, run.id, {"X": "y"})
    assert await json_column(client, run.id, "env") == {"X": "y"}
    await sqltrack.run_set_env(client, run.id, None)
    assert await column(client, run.id, "env") is None


async def test_env_auto(client, run, monkeypatch):
    monkeypatch.setenv("SQLTRACK_TEST_MARKER", "marker-value")
    await sqltrack.run_add_env(client, run.id)  # 'auto' is the default
    env = await json_column(client, run.id, "env")
    assert env == captured_environment()  # os.environ, credentials masked
    assert env["SQLTRACK_TEST_MARKER"] == "marker-value"
    await sqltrack.run_set_env(client, run.id, {"only": "this"})
    await sqltrack.run_set_env(client, run.id, "auto")
    assert await json_column(client, run.id, "env") == captured_environment()


async def test_run_object_env_methods(client, run, monkeypatch):
    monkeypatch.setenv("SQLTRACK_TEST_MARKER", "m")
    assert await run.add_env({"MINE": "1"}) is run
    assert await run.add_env() is run
    assert (await json_column(client, run.id, "env"))["SQLTRACK_TEST_MARKER"] == "m"
    assert await run.remove_env() is run  # 'auto': remove os.environ's names
    assert await json_column(client, run.id, "env") == {"MINE": "1"}
    assert await run.remove_env({"MINE": None}) is run
    assert await json_column(client, run.id, "env") == {}
    assert await run.set_env({"E": "e"}) is run
    assert await json_column(client, run.id, "env") == {"E": "e"}
    assert await run.set_env(None) is run
    assert await column(client, run.id, "env") is None


# -- extras ------------------------------------------------------------------------------------
async def test_extras_add_remove_set(client, run):
    await sqltrack.run_add_extras(client, run.id)  # default None: nothing
    assert await column(client, run.id, "extras") is None
    await sqltrack.run_add_extras(client, run.id, {"gpu": "A100", "conf": {"a": 1, "b": 2}})
    await sqltrack.run_add_extras(client, run.id, {"conf": {"c": 3}, "seed": 7})
    # merge at the top level only: "conf" is replaced, not deep-merged
    assert await json_column(client, run.id, "extras") == {"gpu": "A100", "conf": {"c": 3},
                                                           "seed": 7}
    await sqltrack.run_remove_extras(client, run.id, "gpu")
    assert await json_column(client, run.id, "extras") == {"conf": {"c": 3}, "seed": 7}
    await sqltrack.run_set_extras(client, run.id, {"new": [1, "two", None, 3.5]})
    assert await json_column(client, run.id, "extras") == {"new": [1, "two", None, 3.5]}
    await sqltrack.run_set_extras(client, run.id)  # default None: set NULL
    assert await column(client, run.id, "extras") is None


async def test_run_object_extras_methods(client, run):
    assert await run.add_extras({"a": 1, "b": 2}) is run
    assert await run.add_extras(None) is run
    assert await run.remove_extras("a") is run
    assert await json_column(client, run.id, "extras") == {"b": 2}
    assert await run.set_extras({"c": "ü🚀"}) is run
    assert await json_column(client, run.id, "extras") == {"c": "ü🚀"}
    assert await run.set_extras(None) is run
    assert await column(client, run.id, "extras") is None


async def test_remove_from_null_json_stays_null(client, run):
    await sqltrack.run_remove_extras(client, run.id, "x")
    await sqltrack.run_remove_args(client, run.id, "x")
    await sqltrack.run_remove_env(client, run.id, "x")
    await sqltrack.run_remove_tags(client, run.id, "x")
    for name in ("extras", "args", "env", "tags"):
        assert await json_column(client, run.id, name) in (None, {})


# -- tags, comment ------------------------------------------------------------------------------
async def test_tags(client, run):
    await sqltrack.run_add_tags(client, run.id, "a", "b")
    await sqltrack.run_add_tags(client, run.id, "b", "c")
    assert await json_column(client, run.id, "tags") == {"a": True, "b": True, "c": True}
    await sqltrack.run_remove_tags(client, run.id, "a", "zzz")
    assert await json_column(client, run.id, "tags") == {"b": True, "c": True}
    await sqltrack.run_set_tags(client, run.id, "only")
    assert await json_column(client, run.id, "tags") == {"only": True}
    await sqltrack.run_set_tags(client, run.id)
    assert await json_column(client, run.id, "tags") == {}
    assert await run.add_tags("x", "y") is run
    assert await run.remove_tags("x") is run
    assert await json_column(client, run.id, "tags") == {"y": True}
    assert await run.set_tags("p", "q") is run
    assert await json_column(client, run.id, "tags") == {"p": True, "q": True}


async def test_bad_tag_changes_nothing(client, run):
    await run.add_tags("ok")
    with pytest.raises(ValueError):
        await run.add_tags("good", "nul\x00")
    with pytest.raises(TypeError):
        await run.set_tags(1)
    assert await json_column(client, run.id, "tags") == {"ok": True}


async def test_comment(client, run):
    await sqltrack.run_set_comment(client, run.id, "first")
    assert await column(client, run.id, "comment") == "first"
    assert await run.set_comment("second 'quoted'; --") is run
    assert await column(client, run.id, "comment") == "second 'quoted'; --"
    await sqltrack.run_set_comment(client, run.id, None)
    assert await column(client, run.id, "comment") is None


# -- status --------------------------------------------------------------------------------------
async def test_every_status(client, run):
    assert await column(client, run.id, "status") == "PENDING"
    for status in sqltrack.STATUSES:
        await sqltrack.run_set_status(client, run.id, status)
        assert await column(client, run.id, "status") == status
    assert await run.set_status("RUNNING") is run
    assert await column(client, run.id, "status") == "RUNNING"


async def test_unknown_status_raises_and_changes_nothing(client, run):
    await run.set_status("RUNNING")
    for status in ["DONE", "completed", "", None, 3, "RUNNING "]:
        with pytest.raises(ValueError, match="status"):
            await sqltrack.run_set_status(client, run.id, status)
        with pytest.raises(ValueError):
            await run.set_status(status)
    assert await column(client, run.id, "status") == "RUNNING"


# -- times ----------------------------------------------------------------------------------------
TIME_FUNCTIONS = [
    ("time_created", sqltrack.run_set_created, "set_created"),
    ("time_started", sqltrack.run_set_started, "set_started"),
    ("time_updated", sqltrack.run_set_updated, "set_updated"),
]


async def test_set_time_auto(client, run):
    for col, function, method in TIME_FUNCTIONS:
        before = datetime.now(timezone.utc)
        await function(client, run.id)  # 'auto' is the default
        after = datetime.now(timezone.utc)
        stored = as_dt(await column(client, run.id, col))
        assert stored.tzinfo is not None, col
        assert before <= stored <= after, col
        assert await getattr(run, method)("auto") is run
        assert before <= as_dt(await column(client, run.id, col)), col


async def test_set_time_aware_datetime(client, run):
    for col, function, method in TIME_FUNCTIONS:
        dt = datetime(2021, 3, 4, 5, 6, 7, 891011, tzinfo=TZ_PLUS_2)
        await function(client, run.id, dt)
        assert as_dt(await column(client, run.id, col)) == dt, col
        dt2 = datetime(2020, 1, 1, 0, 0, 0, tzinfo=timezone.utc)
        assert await getattr(run, method)(dt2) is run
        assert as_dt(await column(client, run.id, col)) == dt2, col


async def test_set_time_none_changes_nothing(client, run):
    for col, function, method in TIME_FUNCTIONS:
        dt = datetime(2022, 2, 2, 2, 2, 2, tzinfo=timezone.utc)
        await function(client, run.id, dt)
        await function(client, run.id, None)
        assert await getattr(run, method)(None) is run
        assert as_dt(await column(client, run.id, col)) == dt, col


async def test_set_time_naive_raises_and_changes_nothing(client, run):
    for col, function, method in TIME_FUNCTIONS:
        before = await column(client, run.id, col)
        with pytest.raises(ValueError, match="timezone"):
            await function(client, run.id, datetime(2022, 2, 2, 2, 2, 2))
        with pytest.raises(ValueError):
            await getattr(run, method)(datetime.now())
        with pytest.raises(TypeError):
            await function(client, run.id, "yesterday")
        assert await column(client, run.id, col) == before, col


async def test_time_columns_are_independent(client, run):
    created = as_dt(await column(client, run.id, "time_created"))
    assert created is not None
    dt = datetime(2023, 5, 5, tzinfo=timezone.utc)
    await run.set_started(dt)
    assert as_dt(await column(client, run.id, "time_created")) == created
    assert await column(client, run.id, "time_updated") is None


# -- missing runs ---------------------------------------------------------------------------------
MISSING = 9_876_543


MISSING_RUN_CALLS = [
    lambda c: sqltrack.run_add_args(c, MISSING, {"a": 1}),
    lambda c: sqltrack.run_remove_args(c, MISSING, "a"),
    lambda c: sqltrack.run_set_args(c, MISSING, {"a": 1}),
    lambda c: sqltrack.run_add_env(c, MISSING, {"a": "1"}),
    lambda c: sqltrack.run_remove_env(c, MISSING, "a"),
    lambda c: sqltrack.run_set_env(c, MISSING, {"a": "1"}),
    lambda c: sqltrack.run_add_extras(c, MISSING, {"a": 1}),
    lambda c: sqltrack.run_remove_extras(c, MISSING, "a"),
    lambda c: sqltrack.run_set_extras(c, MISSING, {"a": 1}),
    lambda c: sqltrack.run_add_tags(c, MISSING, "a"),
    lambda c: sqltrack.run_remove_tags(c, MISSING, "a"),
    lambda c: sqltrack.run_set_tags(c, MISSING, "a"),
    lambda c: sqltrack.run_set_comment(c, MISSING, "a"),
    lambda c: sqltrack.run_set_status(c, MISSING, "RUNNING"),
    lambda c: sqltrack.run_set_created(c, MISSING),
    lambda c: sqltrack.run_set_started(c, MISSING),
    lambda c: sqltrack.run_set_updated(c, MISSING),
    lambda c: sqltrack.run_add_metrics(c, MISSING, {"m": 1.0}, step=1),
]


async def test_run_functions_on_missing_run(client, run):
    for index, call in enumerate(MISSING_RUN_CALLS):
        try:
            await call(client)
        except sqltrack.RunNotFound:
            continue
        pytest.fail(f"MISSING_RUN_CALLS[{index}] did not raise RunNotFound")
    assert await run_ids(client) == [(run.id, run.experiment_id)]
    assert await client.query("SELECT count(*) FROM metrics") == [(0,)]


# -- atomic JSON merges -------------------------------------------------------------------------
async def test_concurrent_add_tags_from_tasks(client, run):
    tags = [f"tag{i}" for i in range(20)]
    await asyncio.gather(*(sqltrack.run_add_tags(client, run.id, t) for t in tags))
    assert await json_column(client, run.id, "tags") == dict.fromkeys(tags, True)


async def test_concurrent_add_args_env_extras_from_tasks(client, run):
    await asyncio.gather(
        *(sqltrack.run_add_args(client, run.id, {f"a{i}": i}) for i in range(10)),
        *(sqltrack.run_add_env(client, run.id, {f"E{i}": str(i)}) for i in range(10)),
        *(sqltrack.run_add_extras(client, run.id, {f"x{i}": [i]}) for i in range(10)),
    )
    assert await json_column(client, run.id, "args") == {f"a{i}": i for i in range(10)}
    assert await json_column(client, run.id, "env") == {f"E{i}": str(i) for i in range(10)}
    assert await json_column(client, run.id, "extras") == {f"x{i}": [i] for i in range(10)}


async def test_concurrent_add_tags_from_separate_clients(client_kwargs, client, run):
    clients = [sqltrack.AsyncClient(**client_kwargs) for _ in range(5)]
    try:
        tags = [f"t{i}" for i in range(20)]
        await asyncio.gather(
            *(sqltrack.run_add_tags(clients[i % 5], run.id, t) for i, t in enumerate(tags))
        )
        assert await json_column(client, run.id, "tags") == dict.fromkeys(tags, True)
    finally:
        for c in clients:
            await c.close()


async def test_concurrent_add_and_remove_keep_unrelated_keys(client, run):
    await run.add_tags(*(f"old{i}" for i in range(10)))
    await asyncio.gather(
        *(sqltrack.run_remove_tags(client, run.id, f"old{i}") for i in range(10)),
        *(sqltrack.run_add_tags(client, run.id, f"new{i}") for i in range(10)),
    )
    assert await json_column(client, run.id, "tags") == {f"new{i}": True for i in range(10)}


# -- links -------------------------------------------------------------------------------------
async def run_links(client) -> list[tuple]:
    rows = await client.query("SELECT from_id, kind, to_id FROM run_links ORDER BY 1, 2, 3")
    return [tuple(r) for r in rows]


async def test_links(client, experiment, run):
    other = await experiment.get_run()
    third = await experiment.get_run()
    assert await run.add_link("parent", other.id) is run
    await run.add_link("parent", other.id)
    await sqltrack.run_add_link(client, run.id, "resumed_from", third.id)
    await sqltrack.run_add_link(client, other.id, "child", run.id)
    assert await run_links(client) == sorted(
        [(run.id, "parent", other.id), (run.id, "resumed_from", third.id),
         (other.id, "child", run.id)]
    )
    assert await run.remove_link("parent", other.id) is run
    await sqltrack.run_remove_link(client, other.id, "child", run.id)
    await sqltrack.run_remove_link(client, other.id, "never", run.id)
    assert await run_links(client) == [(run.id, "resumed_from", third.id)]


async def test_link_to_missing_run_raises(client, run):
    with pytest.raises(sqltrack.RunNotFound):
        await run.add_link("parent", MISSING)
    with pytest.raises(sqltrack.RunNotFound):
        await sqltrack.run_add_link(client, MISSING, "parent", run.id)
    assert await run_links(client) == []


async def test_links_across_experiments(client, run):
    exp2 = await AsyncExperiment.create(client, name="second")
    run2 = await exp2.get_run()
    await run2.add_link("baseline", run.id)
    assert await run_links(client) == [(run2.id, "baseline", run.id)]


# -- chaining ----------------------------------------------------------------------------------
async def test_chaining(client, run):
    r = await (await (await run.set_comment("c")).add_tags("t")).add_extras({"e": 1})
    assert r is run
    r = await (await (await run.set_status("RUNNING")).add_env({"A": "b"})).add_args({"x": 1})
    assert r is run
    r = await (await run.add_metrics({"loss": 1.0}, step=1)).set_updated(None)
    assert r is run
    rows = await client.query(
        "SELECT comment, status FROM runs WHERE id = %s", [run.id]
    )
    assert rows == [("c", "RUNNING")]
    assert await json_column(client, run.id, "extras") == {"e": 1}
