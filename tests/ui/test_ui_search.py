"""Search without SQL on the runs table (issue 22, Required 3) and a run's idle time
(Required 5: "not responding"), through the app's JSON API (httpx), both engines.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqltrack
from sqltrack.ui.summaries import parse_search

HOSTILE = "'; DROP TABLE runs; --"
SWEEP = [  # name, tags, status, args
    ("adam-lr0.1", ["best", "sweep"], "COMPLETED", {"lr": 0.1, "optimizer": "adam", "depth": 18}),
    ("sgd-lr0.1", ["sweep"], "FAILED", {"lr": 0.1, "optimizer": "SGD", "depth": 34}),
    ("adam-lr0.01", ["sweep"], "RUNNING", {"lr": 0.01, "optimizer": "adam", "warmup": True}),
    ("my run", [], "COMPLETED", {"lr": 1e-3, "optimizer": HOSTILE, "layers": [1, 2]}),
]


async def sweep(client) -> tuple[int, dict[str, int]]:
    async with client:
        exp = await sqltrack.AsyncExperiment.create(client, name="search-sweep")
        ids = {}
        for name, tags, status, args in SWEEP:
            run = await exp.get_run()
            await run.set_extras({"name": name})
            await run.set_args(args)
            if tags:
                await run.set_tags(*tags)
            await run.set_status(status)
            ids[name] = run.id
    return exp.id, ids


def test_parse_search_terms():
    assert parse_search('adam lr=0.1 "my run" tag=best') == [
        (None, "adam"), ("lr", "0.1"), (None, "my run"), ("tag", "best")]
    assert parse_search("  ") == [] == parse_search(None)


async def test_search_by_name_tag_status_and_args(client, http):
    experiment_id, ids = await sweep(client)
    url = f"/api/experiments/{experiment_id}/table"

    async def found(search: str, **params: str) -> list[int]:
        answer = await http.get(url, params={"search": search, **params})
        assert answer.status_code == 200, answer.text
        assert answer.json()["filters"]["search"] == search
        return [run["id"] for run in answer.json()["runs"]]

    every = sorted(ids.values())
    assert await found("") == every
    assert await found("adam") == [ids["adam-lr0.1"], ids["adam-lr0.01"]]  # part of the name
    assert await found("BEST") == [ids["adam-lr0.1"]]  # a tag, any case
    assert await found("running") == [ids["adam-lr0.01"]]  # the status
    assert await found("status=completed") == [ids["adam-lr0.1"], ids["my run"]]
    assert await found("lr=0.1") == [ids["adam-lr0.1"], ids["sgd-lr0.1"]]  # numbers by value
    assert await found("lr=1e-3") == [ids["my run"]]
    assert await found("depth=18.0") == [ids["adam-lr0.1"]]
    assert await found("optimizer=sgd") == [ids["sgd-lr0.1"]]  # text, any case
    assert await found("warmup=true") == [ids["adam-lr0.01"]]
    assert await found("layers=[1, 2]") == []  # one term per space:
    assert await found('"layers=[1, 2]"') == [ids["my run"]]
    assert await found("lr=0.1 sweep status=FAILED") == [ids["sgd-lr0.1"]]  # every term
    assert await found('"my run"') == [ids["my run"]]
    assert await found(f'"optimizer={HOSTILE}"') == [ids["my run"]]  # never SQL
    assert await found("tag=sweep", status="FAILED") == [ids["sgd-lr0.1"]]  # with the others
    assert await found("nothing-like-this") == []
    assert await found("adam", filter="status = 'RUNNING'") == [ids["adam-lr0.01"]]
    # with chosen args columns the values still line up
    answer = (await http.get(url, params={"search": "lr=0.1", "col": ["args.optimizer"]})).json()
    assert [run["values"] for run in answer["runs"]] == [["adam"], ["SGD"]]

    refused = await http.get(url, params={"search": 'unfinished "quote'})
    assert refused.status_code == 400 and "quote" in refused.json()["error"]
    async with client:
        assert len(await client.query("SELECT id FROM runs")) == len(SWEEP)


async def test_idle_seconds_of_a_run(client, http):
    _, ids = await sweep(client)
    run_id = ids["adam-lr0.01"]
    async with client:
        run = await sqltrack.AsyncRun.create(client, None, run_id=run_id)
        await run.set_updated(datetime.now(timezone.utc) - timedelta(hours=2))
    idle = (await http.get(f"/api/runs/{run_id}")).json()["idle_seconds"]
    assert 2 * 3600 - 5 < idle < 2 * 3600 + 600
    table = (await http.get(f"/api/experiments/{run.experiment_id}/table")).json()
    (row,) = [r for r in table["runs"] if r["id"] == run_id]
    assert 2 * 3600 - 5 < row["idle_seconds"] < 2 * 3600 + 600
    async with client:
        await run.set_updated()  # now
    assert 0 <= (await http.get(f"/api/runs/{run_id}")).json()["idle_seconds"] < 600
    async with client:
        (status,) = await client.query("SELECT status FROM runs WHERE id = %s", [run_id])
    assert status[0] == "RUNNING"  # only shown, never stored


#: Names whose JSON text is not the name itself (escaped) around a plain part.
ESCAPED = ["été Run", 'say "hi" Run', "back\\slash", "Plain"]


async def test_search_names_whose_json_is_escaped(client, http):
    """A search finds a name by its text, not by its JSON's (SQLite first tests the
    extras' JSON text for a plain search text: never missing a name for it)."""
    async with client:
        exp = await sqltrack.AsyncExperiment.create(client, name="escaped")
        ids = {}
        for name in ESCAPED:
            run = await exp.get_run()
            await run.set_extras({"name": name, "note": "u00e9"})
            ids[name] = run.id
    url = f"/api/experiments/{exp.id}/table"

    async def found(search: str) -> list[int]:
        answer = await http.get(url, params={"search": search})
        assert answer.status_code == 200, answer.text
        return [run["id"] for run in answer.json()["runs"]]

    assert await found("run") == [ids["été Run"], ids['say "hi" Run']]
    assert await found("HI") == [ids['say "hi" Run']]
    assert await found("té run") == [ids["été Run"]]
    assert await found("slash") == [ids["back\\slash"]]
    assert await found("u00e9") == []  # the JSON's escape, not the name
    assert await found('"name=été run"') == [ids["été Run"]]
    assert await found("name=PLAIN") == [ids["Plain"]]
    assert await found("name=plai") == []


#: Values of the arg ``v`` (None: no such arg) and the searches that find each.
VALUES = [[0.5], "0.5", 0.5, "X", True, None, 1, "missing"]


async def test_search_arg_values_by_kind(client, http):
    """``key=value`` finds numbers by value, text in any case, booleans and null by
    name; never a list holding the value, nor a boolean for 1."""
    async with client:
        exp = await sqltrack.AsyncExperiment.create(client, name="arg-kinds")
        ids = []
        for value in VALUES:
            run = await exp.get_run()
            await run.set_args({} if value == "missing" else {"v": value, "w": 0.5})
            ids.append(run.id)
    url = f"/api/experiments/{exp.id}/table"

    async def found(search: str) -> list[int]:
        answer = await http.get(url, params={"search": search})
        assert answer.status_code == 200, answer.text
        return [ids.index(run["id"]) for run in answer.json()["runs"]]

    assert await found("v=0.5") == [1, 2]
    assert await found("v=0.50") == [2]  # text as it is written
    assert await found("v=5e-1") == [2]
    assert await found("v=x") == [3]
    assert await found("v=true") == [4]
    assert await found("v=null") == [5]
    assert await found("v=1") == [6]
    assert await found("v=2") == []
