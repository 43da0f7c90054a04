"""The runs table in pages: sorted, filtered and grouped on the server (httpx, both
engines)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

import sqltrack

START = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
STATUSES = ("COMPLETED", "FAILED", "RUNNING")


async def runs(client, count: int = 12) -> tuple[int, list[dict]]:
    """``count`` runs: lr cycles over 3 values, status over 3, started in reverse order,
    the run 3 never started; a loss of 100 - index."""
    made = []
    async with client:
        exp = await sqltrack.AsyncExperiment.create(client, name="pages")
        for index in range(count):
            run = await exp.get_run()
            lr = (0.1, 0.01, 0.001)[index % 3]
            await run.set_args({"lr": lr, "seed": index})
            await run.set_extras({"group": f"seed{index % 2}"})
            if index != 3:
                await run.set_started(START - timedelta(hours=index))
            await run.set_status(STATUSES[index % 3])
            await run.add_metrics({"loss": 100.0 - index}, step=0)
            made.append({"id": run.id, "lr": lr, "status": STATUSES[index % 3],
                         "started": index != 3, "index": index})
    return exp.id, made


def table(http, experiment: int, **params):
    return http.get(f"/api/experiments/{experiment}/table", params=params)


async def test_pages_in_id_order_with_total(client, http):
    experiment, made = await runs(client)
    ids = [r["id"] for r in made]
    seen = []
    for page in (1, 2, 3):
        data = (await table(http, experiment, page=page, per_page=5)).json()
        assert (data["total"], data["pages"], data["page"], data["per_page"]) == (12, 3, page, 5)
        seen += [r["id"] for r in data["runs"]]
    assert seen == ids
    empty = (await table(http, experiment, page=4, per_page=5)).json()
    assert empty["runs"] == [] and empty["total"] == 12


@pytest.mark.parametrize("sort", ["status", "started", "last.loss", "args.lr", "duration"])
async def test_sorted_on_the_server_across_pages(client, http, sort):
    experiment, made = await runs(client)
    columns = ["last.loss", "args.lr"]
    both = []
    for order in ("asc", "desc"):
        got = []
        for page in (1, 2, 3):
            data = (await table(http, experiment, page=page, per_page=4, sort=sort, order=order,
                                col=columns)).json()
            assert data["sort"] == sort and data["total"] == 12
            got += [r["id"] for r in data["runs"]]
        both.append(got)
    by_index = {r["id"]: r for r in made}

    def expected(descending: bool) -> list[int]:
        if sort == "status":
            value = lambda r: r["status"]  # noqa: E731
        elif sort == "started":  # later index: started earlier; run 3 has none
            value = lambda r: -r["index"] if r["started"] else None  # noqa: E731
        elif sort == "last.loss":
            value = lambda r: 100.0 - r["index"]  # noqa: E731
        elif sort == "args.lr":
            value = lambda r: r["lr"]  # noqa: E731
        else:  # duration: no run has an end, every one is missing
            value = lambda r: None  # noqa: E731
        present = [r for r in made if value(r) is not None]
        present = sorted(sorted(present, key=lambda r: r["id"], reverse=descending),
                         key=value, reverse=descending)
        missing = sorted((r for r in made if value(r) is None), key=lambda r: r["id"],
                         reverse=descending)
        return [r["id"] for r in present + missing]

    if sort == "duration":  # duration: updated - started; every run has both or none
        durations = {}
        for page in (1, 2, 3):
            data = (await table(http, experiment, page=page, per_page=4)).json()
            durations.update({r["id"]: r["duration_seconds"] for r in data["runs"]})

        def expected(descending: bool) -> list[int]:  # noqa: F811 - by the values served
            present = [i for i in durations if durations[i] is not None]
            present = sorted(sorted(present, reverse=descending),
                             key=lambda i: durations[i], reverse=descending)
            return present + sorted((i for i in durations if durations[i] is None),
                                    reverse=descending)

    assert both == [expected(False), expected(True)]
    assert len(by_index) == 12


async def test_filtered_then_paged_and_grouped(client, http):
    experiment, made = await runs(client)
    failed = [r["id"] for r in made if r["status"] == "FAILED"]
    data = (await table(http, experiment, status="FAILED", per_page=3, page=2)).json()
    assert data["total"] == len(failed) and [r["id"] for r in data["runs"]] == failed[3:6]
    searched = (await table(http, experiment, search="lr=0.1", per_page=2, page=2)).json()
    with_lr = [r["id"] for r in made if r["lr"] == 0.1]
    assert searched["total"] == len(with_lr) and [r["id"] for r in searched["runs"]] == with_lr[2:4]
    grouped = (await table(http, experiment, group="args.lr", per_page=100)).json()
    assert grouped["groups"] == [{"key": "0.001", "count": 4}, {"key": "0.01", "count": 4},
                                 {"key": "0.1", "count": 4}]
    assert [r["group"] for r in grouped["runs"]] == ["0.001"] * 4 + ["0.01"] * 4 + ["0.1"] * 4
    assert [r["id"] for r in grouped["runs"][:4]] == [r["id"] for r in made if r["lr"] == 0.001]
    by_wandb = (await table(http, experiment, group="group")).json()
    assert by_wandb["groups"] == [{"key": "seed0", "count": 6}, {"key": "seed1", "count": 6}]
    for params in ({"page": "0"}, {"per_page": "5000"}, {"page": "x"}, {"order": "up"},
                   {"sort": "nope", "tag": "x"}, {"group": "bad"}):
        assert (await table(http, experiment, **params)).status_code == 400


#: Values of the arg ``mix``: numbers, booleans, text, null, a list, an object, none.
MIX = [2, "b", True, None, 0.5, [1, 2], "missing", {"k": 1}, "a", False, 10, "missing"]


@pytest.mark.parametrize("params", [
    {"sort": "args.lr"}, {"sort": "args.lr", "order": "desc"}, {"sort": "last.loss"},
    {"sort": "min.loss", "order": "desc"}, {"sort": "name"}, {"sort": "args.seed"},
    {"sort": "duration"}, {"sort": "status", "order": "desc"},
    {"sort": "args.lr", "search": "sweep"}, {"sort": "name", "tag": "sweep"},
    {"sort": "args.lr", "search": "lr=0.01 status=failed"},
    {"sort": "last.loss", "group": "args.lr"}, {"group": "group", "order": "desc"},
    {"sort": "args.seed", "group": "status"}, {"group": "args.mix", "sort": "name"},
    {"sort": "args.mix", "order": "desc"},
])
async def test_one_page_reads_one_page_of_rows(client, http, params):
    """Any sort, tags, search or group: the database sorts and pages (it returns the page's
    rows alone, ``read``), in the order the whole table sorted here has."""
    experiment, made = await runs(client)
    async with client:
        for index, run in enumerate(made):  # names out of id order, tags on half the runs
            live = await sqltrack.AsyncRun.create(client, None, run_id=run["id"])
            await live.set_extras({"name": f"run-{(index * 5) % 12:02d}"})
            if index % 2:
                await live.add_tags("sweep")
            if MIX[index % len(MIX)] != "missing":  # an arg of every JSON kind
                await live.add_args({"mix": MIX[index % len(MIX)]})
    every = []
    for page in (1, 2, 3, 4):
        data = (await table(http, experiment, page=page, per_page=4, col=["last.loss", "args.lr"],
                            **params)).json()
        assert data["read"] <= 4, (params, data["read"])
        every += data["runs"]
    whole = (await table(http, experiment, per_page=100, col=["last.loss", "args.lr"],
                         **params)).json()
    assert [r["id"] for r in every] == [r["id"] for r in whole["runs"]]
    assert len(every) == whole["total"] == data["total"]
    assert whole["groups"] == data["groups"]
    # the order is the one the rules say: group first, then the key (missing last), then id
    way = params.get("order") == "desc"
    sort = params.get("sort", "id")
    name_of = {r["id"]: f"run-{(r['index'] * 5) % 12:02d}" for r in made}

    def value(run):
        if sort == "args.lr":
            return run["values"][1]
        if sort == "args.seed":
            return next(m["index"] for m in made if m["id"] == run["id"])
        if sort in ("last.loss", "min.loss"):
            return run["values"][0]
        if sort == "name":
            return name_of[run["id"]]
        if sort == "status":
            return run["status"]
        if sort == "duration":
            return run["duration_seconds"]
        return run["id"]

    if sort == "args.mix":  # the database's order of JSON values: checked below
        return
    groups = [g["key"] for g in whole["groups"]] if whole["groups"] else [None]
    expected = []
    for key in groups:
        members = [r for r in whole["runs"] if key is None or r["group"] == key]
        present = [r for r in members if value(r) is not None]
        present = sorted(sorted(present, key=lambda r: r["id"], reverse=way), key=value,
                         reverse=way)
        missing = sorted((r for r in members if value(r) is None), key=lambda r: r["id"],
                         reverse=way)
        expected += present + missing
    assert [r["id"] for r in whole["runs"]] == [r["id"] for r in expected]
    if params.get("group") == "args.mix":  # the runs come in the groups' order
        seen = list(dict.fromkeys(r["group"] for r in whole["runs"]))
        assert seen == groups and groups[-1] == "(none)"
        assert sorted(g["count"] for g in whole["groups"]) == [1] * 9 + [3]
    if "search" in params or "tag" in params:
        assert 0 < whole["total"] < 12


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
async def test_page_queries_run_without_jit(client, http, engine):
    """PostgreSQL's JIT compiles a query whose estimated cost is high (a sort of 100,000
    runs by a metric: a correlated subquery a run) for hundreds of milliseconds that a
    page's short, bounded query never wins back: the page's queries run with ``jit`` off."""
    answer = (await http.get("/api/sql", params={"q": "SELECT current_setting('jit')"})).json()
    assert answer["rows"] == [["off"]]


#: Tags a run may have: plain, with a quote, a backslash, a dot, non-ASCII, a prefix of
#: another, and a list of names (no tags object) on one run.
TAGS = ["odd", 'say "hi"', "back\\slash", "a.b", "été", "od", "odd-ish"]


async def test_tag_filter_matches_the_tags_keys_exactly(client, http):
    """The tag filter: runs whose tags object has the tag as a key (whatever the key's
    text), never a run whose tags are a list holding it, nor one with a longer tag."""
    experiment, made = await runs(client, count=len(TAGS) + 2)
    async with client:
        for run, tag in zip(made, TAGS, strict=False):
            await (await sqltrack.AsyncRun.create(client, None, run_id=run["id"])).add_tags(tag)
        listed = made[len(TAGS)]["id"]  # tags as a JSON list of names: not a tags object
        await client.execute(client.dialect.sql(
            f"UPDATE runs SET tags = {client.dialect.json_param()} WHERE id = %s"),
            [json.dumps(TAGS), listed])
    for run, tag in zip(made, TAGS, strict=False):
        data = (await table(http, experiment, tag=tag, sort="name")).json()
        assert [r["id"] for r in data["runs"]] == [run["id"]], tag
        assert data["total"] == 1 and data["read"] == 1
    both = (await table(http, experiment, tag=["odd", "od"])).json()
    assert both["total"] == 0
    none = (await table(http, experiment, tag="missing")).json()
    assert none["total"] == 0 and none["runs"] == []
