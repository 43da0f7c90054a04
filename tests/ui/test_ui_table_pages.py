"""The runs table in pages: sorted, filtered and grouped on the server (httpx, both
engines)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import sqltrack
from sqltrack.read import queries
from sqltrack.ui import summaries

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


#: Values of the arg ``v`` (how many runs hold each): numbers and booleans that sort as
#: one (1, 1.0, true; 0, false), text, a list and the text of a list, an object, null and
#: no value; runs of one value are not one after another by id.
SPANNED = [(1, 3), (True, 2), (1.0, 1), (0, 2), (False, 1), (0.5, 4), ("a", 3), ("b", 1),
           ([1, 2], 1), ("[1, 2]", 1), ({"k": 1}, 2), (None, 2), ("missing", 3)]


async def spanned_runs(client) -> tuple[int, list[int]]:
    """An experiment of runs whose arg ``v`` holds SPANNED's values (interleaved), named
    out of id order; its id and the runs' ids."""
    values = [value for value, count in SPANNED for _ in range(count)]
    order = sorted(range(len(values)), key=lambda i: (i * 7) % len(values))
    ids = []
    async with client:
        exp = await sqltrack.AsyncExperiment.create(client, name="spanned")
        for position, index in enumerate(order):
            run = await exp.get_run()
            args = {"seed": position} if values[index] == "missing" else {
                "v": values[index], "seed": position}
            await run.set_args(args)
            await run.set_extras({"name": f"run-{(position * 5) % len(values):02d}"})
            await run.add_metrics({"loss": float(position % 4)}, step=0)
            ids.append(run.id)
    return exp.id, ids


async def pages_of(http, experiment: int, per_page: int, **params) -> tuple[list[int], Any]:
    """Every page's run ids in turn, and the groups."""
    got: list[int] = []
    page, data = 1, None
    while data is None or page <= data["pages"]:
        data = (await table(http, experiment, page=page, per_page=per_page, **params)).json()
        assert data["read"] <= per_page
        got += [r["id"] for r in data["runs"]]
        page += 1
    assert data is not None and len(got) == data["total"]
    return got, data["groups"]


@pytest.mark.parametrize("params", [
    {"sort": "args.v"}, {"sort": "args.v", "order": "desc"},
    {"group": "args.v"}, {"group": "args.v", "sort": "name", "order": "desc"},
    {"group": "args.v", "sort": "last.loss"}, {"group": "args.v", "sort": "args.seed"},
    {"sort": "args.v", "search": "run-1"}, {"sort": "args.v", "filter": "id % 2 = 0"},
])
async def test_pages_by_the_values_they_span_are_the_whole_sort_cut(client, http, params,
                                                                  monkeypatch):
    """A page sorted or grouped by a JSON value reads only the runs of the values it spans
    (their counts read first): every page size gives the pages that sorting every run
    gives (values read as one: 1, 1.0 and true; a list and its text), with the groups."""
    experiment, _ = await spanned_runs(client)
    by_values = {size: await pages_of(http, experiment, size, **params) for size in (1, 3, 4, 7)}
    monkeypatch.setattr(summaries, "MAX_SPANNED", 0)  # no page is read by its values
    whole, groups = await pages_of(http, experiment, 100, **params)
    assert len(whole) == sum(count for _, count in SPANNED) or "search" in params \
        or "filter" in params
    for size, (got, got_groups) in by_values.items():
        assert (got, got_groups) == (whole, groups), size


async def test_a_page_reads_the_runs_of_the_values_it_spans(client, engine, policy,
                                                             monkeypatch):
    """The values of the page's key are counted first; the page's query then reads the runs
    of those it spans alone, at its offset among them, and, of one value, without sorting
    by it. Grouped pages so on both engines, sorted ones on PostgreSQL (where an index finds
    a value's runs; SQLite sorts every run), unless the runs hold more values than
    MAX_CLASSES."""
    experiment, _ = await spanned_runs(client)
    async with client:
        quote = client.dialect.quote_ident
        metrics = await queries.metric_kinds(client)

        async def narrowed(page: int, per_page: int, **request: Any) -> Any:
            plan = summaries._plan(client.engine, quote, request.get("sort", "id"), [], (),
                                   request.get("group"), metrics, frozenset())
            assert plan is not None
            assert summaries._spans(plan, False) is (engine == "postgres" or "group" in request)
            return plan, await summaries._narrowed(
                client, plan, False, None, None, (per_page, (page - 1) * per_page),
                experiment, None, policy)

        # the values in order: 0 and false (3 runs), 0.5 (4), 1, true and 1.0 (6), ...:
        # the runs 8 to 11 are of the third value, the runs 4 to 7 of the second and third
        plan, (read, window, total, groups) = await narrowed(3, 4, group="args.v",
                                                             sort="name")
        assert (window, total, sum(g["count"] for g in groups)) == ((4, 1), 26, 26)
        assert read.single is plan.group and len(read.conditions) == 1
        plan, (read, window, _, _) = await narrowed(2, 4, group="args.v")
        assert window == (4, 1) and read.single is None and len(read.conditions) == 1
        if engine == "postgres":
            plan, (read, window, total, groups) = await narrowed(3, 4, sort="args.v")
            assert (window, total, groups, read.single) == ((4, 1), 26, None, plan.sort)
            monkeypatch.setattr(summaries, "MAX_CLASSES", 3)  # more values: not counted,
            plan, (read, window, total, groups) = await narrowed(3, 4, sort="args.v")
            assert (read, window, total, groups) == (plan, (4, 8), None, None)  # all sorted
