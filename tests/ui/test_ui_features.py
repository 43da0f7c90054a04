"""The web page's runs table, SQL filter, SQL page, live curves and system metrics (httpx).

Driven in-process through the app's JSON API, on both engines. The read-only
guarantees are tested twice: through the API (the text checks answer first) and
straight at ``readonly.fetch`` with SQL that the text checks never see, so the
database itself is shown refusing writes, DDL, several statements and long queries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import httpx
import pytest

import sqltrack
from sqltrack.ui import create_app, readonly
from sqltrack.ui.app import TOKEN_HEADER
from sqltrack.ui.readonly import QueryRefused, User

HOSTILE = "<script>alert(1)</script>"
TIMEOUT = 0.5
#: The time limit of the page that reads 10,005 rows: a bound, not a measure (through a
#: Citus coordinator on a loaded machine that took more than ``TIMEOUT``).
ROOMY = 60.0
COUNT_TO_10005 = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c "
                  "WHERE n < 10005)")
ENDLESS = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c"


@asynccontextmanager
async def app_client(client, policy, timeout: float) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app with the SQL time limit ``timeout`` (s)."""
    app = create_app(client, sql_timeout=timeout, reader=policy.reader,
                     allow_superuser=policy.allow_superuser)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={TOKEN_HEADER: app.state.token}) as http:
        yield http


@pytest.fixture
async def http(client, policy) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app (a short SQL time limit, so long queries stop soon)."""
    async with app_client(client, policy, TIMEOUT) as http:
        yield http


@pytest.fixture
async def roomy_http(client, policy) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app with a generous SQL time limit (``ROOMY``)."""
    async with app_client(client, policy, ROOMY) as http:
        yield http


START = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)


async def seed(client) -> dict[str, int]:
    """One experiment of three runs with args, names, tags and metrics; a hostile key."""
    async with client:
        exp = await sqltrack.AsyncExperiment.create(client, name="sweep")
        ids = {"experiment": exp.id}
        for index, (lr, status) in enumerate([(0.1, "COMPLETED"), (0.01, "FAILED"),
                                              (0.001, "RUNNING")]):
            run = await exp.get_run()
            await run.set_args({"lr": lr, "depth": 10 + index, "opt": "sgd" if index else "adam",
                                HOSTILE: "x"})
            await run.set_extras({"name": f"run-{index}",
                                  "metric_names": {"train__loss": "train/loss"}})
            await run.set_tags("even" if index % 2 == 0 else "odd")
            await run.set_status(status)
            for step in range(4):
                await run.add_metrics({"train__loss": (index + 1) * (4 - step),
                                       "acc": step / 4 + index, "ok": step % 2 == 0,
                                       "time": START + timedelta(seconds=10 * step)},
                                      step=step)
            ids[f"run{index}"] = run.id
    return ids


async def table(http, experiment_id: int, **params) -> httpx.Response:
    return await http.get(f"/api/experiments/{experiment_id}/table", params=params)


# -- runs table ---------------------------------------------------------------
async def test_table_default_and_chosen_columns(client, http):
    ids = await seed(client)
    data = (await table(http, ids["experiment"])).json()
    assert [c["key"] for c in data["columns"]] == [
        "tags", "last.acc", "last.ok", "last.train__loss"]
    assert data["columns"][-1]["label"] == "train/loss"  # the name as logged
    assert data["available"]["args"] == sorted([HOSTILE, "depth", "lr", "opt"])
    assert data["available"]["extras"] == ["metric_names", "name"]
    assert data["plottable"] == ["acc", "ok", "train__loss"]
    assert [r["id"] for r in data["runs"]] == [ids["run0"], ids["run1"], ids["run2"]]
    assert [r["name"] for r in data["runs"]] == ["run-0", "run-1", "run-2"]

    cols = ["args.lr", "args.opt", f"args.{HOSTILE}", "extras.name", "last.train__loss",
            "min.train__loss", "max.acc", "min.ok", "tags"]
    data = (await table(http, ids["experiment"], col=cols)).json()
    assert [c["label"] for c in data["columns"]] == [
        "args.lr", "args.opt", f"args.{HOSTILE}", "extras.name", "train/loss",
        "min train/loss", "max acc", "min ok", "tags"]
    assert [r["values"] for r in data["runs"]] == [
        [0.1, "adam", "x", "run-0", 1, 1, 0.75, 0, "even"],
        [0.01, "sgd", "x", "run-1", 2, 2, 1.75, 0, "odd"],
        [0.001, "sgd", "x", "run-2", 3, 3, 2.75, 0, "even"],
    ]
    filtered = (await table(http, ids["experiment"], col="args.lr", status="failed",
                            tag="odd")).json()
    assert [r["id"] for r in filtered["runs"]] == [ids["run1"]]
    for bad, message in [("last.nope", "unknown metric 'nope'"),
                         ("bogus", "unknown column 'bogus'"), ("args.", "unknown column")]:
        response = await table(http, ids["experiment"], col=bad)
        assert response.status_code == 400 and message in response.json()["error"]
    assert (await table(http, 987654)).status_code == 404


async def test_filter_in_sql(client, http, engine):
    ids = await seed(client)
    where = {
        "postgres": "args->>'lr' = '0.1' AND status = 'COMPLETED'",
        "sqlite": "json_extract(args, '$.lr') = 0.1 AND status = 'COMPLETED'",
    }[engine]
    data = (await table(http, ids["experiment"], filter=where)).json()
    assert [r["id"] for r in data["runs"]] == [ids["run0"]]
    assert data["filters"]["filter"] == where
    by_metric = "id IN (SELECT run_id FROM metrics WHERE acc > 2.5) -- a comment"
    data = (await table(http, ids["experiment"], filter=by_metric)).json()
    assert [r["id"] for r in data["runs"]] == [ids["run2"]]
    percent = "CAST(status AS TEXT) LIKE 'RUN%'"  # a '%' reaches the database as typed
    assert [r["id"] for r in (await table(http, ids["experiment"], filter=percent)).json()[
        "runs"]] == [ids["run2"]]

    response = await table(http, ids["experiment"], filter="no_such_column = 1")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "no_such_column" in error and "\n" not in error


async def runs_count(client) -> int:
    return (await client.query("SELECT COUNT(*) FROM runs"))[0][0]


@pytest.mark.parametrize("where", [
    "1 = 1); DELETE FROM runs; --",
    "1 = 1; DELETE FROM runs",
    "1 = 1) OR (1 = 1",  # balanced, but it closes our parenthesis first
    "'unclosed",
    "1 = 1 /* unclosed",
])
async def test_filter_refuses_anything_but_one_expression(client, http, where):
    ids = await seed(client)
    response = await table(http, ids["experiment"], filter=where)
    assert response.status_code == 400
    assert "\n" not in response.json()["error"]
    assert await runs_count(client) == 3


async def test_filter_long_query_stopped(client, http):
    ids = await seed(client)
    response = await table(http, ids["experiment"], filter=f"({ENDLESS}) > 0")
    assert response.status_code == 400
    assert response.json()["error"] == (
        f"the query was stopped after {TIMEOUT:g} s (the time limit of the page)")


# -- SQL page -----------------------------------------------------------------
async def sql(http, query: str, **params) -> httpx.Response:
    return await http.get("/api/sql", params={"q": query, **params})


async def test_sql_page_query_table_and_csv(client, http, roomy_http):
    ids = await seed(client)
    query = "SELECT id, status, 'a,b' AS text FROM runs WHERE status <> 'FAILED' ORDER BY id;"
    data = (await sql(http, query)).json()
    assert data["columns"] == ["id", "status", "text"]
    assert data["rows"] == [[ids["run0"], "COMPLETED", "a,b"], [ids["run2"], "RUNNING", "a,b"]]
    assert data["truncated"] is False
    response = await sql(http, query, format="csv")
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert response.text.splitlines() == [
        "id,status,text", f"{ids['run0']},COMPLETED,\"a,b\"", f"{ids['run2']},RUNNING,\"a,b\""]
    many = (await sql(roomy_http, f"{COUNT_TO_10005} SELECT n FROM c")).json()
    assert "rows" in many, many
    assert len(many["rows"]) == readonly.MAX_ROWS and many["truncated"] is True
    page = await http.get("/sql", params={"q": f"SELECT '{HOSTILE}'"})
    assert page.status_code == 200 and HOSTILE not in page.text
    assert "&lt;script&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert (await http.post("/api/sql", params={"q": "SELECT 1"})).status_code == 405
    for path in ("/api/sql?q=SELECT+1", f"/api/experiments/{ids['experiment']}/table",
                 f"/api/runs/{ids['run0']}/curves", "/sql", f"/compare?runs={ids['run0']}"):
        assert (await http.get(path, headers={"host": "evil.example"})).status_code == 400, path
        response = await http.get(path)
        assert response.status_code == 200, path
        assert response.headers["x-frame-options"] == "DENY", path
        assert "script-src 'self'" in response.headers["content-security-policy"], path


async def test_sql_page_keeps_the_order_of_the_query(client, http, roomy_http):
    """The page reads users' SQL through a subquery, whose ORDER BY Citus keeps only with a
    LIMIT or OFFSET: an ordered query without one gets the page's LIMIT inside."""
    ids = await seed(client)
    runs = [ids["run0"], ids["run1"], ids["run2"]]

    async def rows(query: str) -> list[int]:
        data = (await sql(http, query)).json()
        assert "rows" in data, (query, data)
        return [row[0] for row in data["rows"]]

    assert await rows("SELECT id FROM runs ORDER BY id") == runs
    assert await rows("SELECT id FROM runs ORDER BY id DESC -- newest first") == runs[::-1]
    assert await rows("SELECT id, 'order by' AS t FROM runs ORDER BY id DESC;") == runs[::-1]
    assert await rows("SELECT id FROM runs ORDER BY id DESC LIMIT 2") == runs[:0:-1]
    assert await rows("SELECT id FROM runs ORDER BY id DESC LIMIT 2 OFFSET 1") == runs[1::-1]
    assert await rows("SELECT id FROM (SELECT id FROM runs ORDER BY id) AS s "
                      "ORDER BY id DESC") == runs[::-1]
    assert await rows("SELECT r.id FROM runs AS r JOIN experiments AS e ON "
                      "e.id = r.experiment_id ORDER BY r.id DESC") == runs[::-1]
    many = (await sql(roomy_http, f"{COUNT_TO_10005} SELECT n FROM c ORDER BY n DESC")).json()
    assert "rows" in many, many
    assert [row[0] for row in many["rows"]] == list(range(10005, 5, -1))
    assert many["truncated"] is True


@pytest.mark.parametrize(("query", "expected"), [
    ("SELECT id FROM runs ORDER BY id", True),
    ("select id from runs order\n  by id desc -- newest", True),
    ("SELECT id FROM runs UNION SELECT 1 ORDER BY 1", True),
    ("WITH a AS (SELECT id FROM runs ORDER BY id LIMIT 3) SELECT id FROM a ORDER BY id", True),
    ("SELECT id FROM runs ORDER BY id LIMIT 3", False),
    ("SELECT id FROM runs ORDER BY id OFFSET 1", False),
    ("SELECT id FROM runs ORDER BY id FETCH FIRST 3 ROWS ONLY", False),
    ("SELECT id FROM runs", False),
    ("SELECT row_number() OVER (ORDER BY id) FROM runs", False),
    ("SELECT id FROM (SELECT id FROM runs ORDER BY id) AS s", False),
    ("SELECT 'order by' AS t, \"order by\" FROM runs", False),
    ("SELECT id FROM runs /* ORDER BY id */", False),
    ("SELECT id FROM runs -- ORDER BY id", False),
    ("SELECT $$ORDER BY$$ AS t FROM runs", False),
    ("SELECT id, 'limit' AS t FROM runs ORDER BY id", True),
])
def test_which_queries_get_the_page_limit_inside(query, expected):
    assert readonly.ordered_without_limit(readonly.check_query(query)) is expected


WRITES = {
    "common": [
        "INSERT INTO experiments (name) VALUES ('x')",
        "UPDATE runs SET status = 'FAILED'",
        "DELETE FROM runs",
        "DROP TABLE runs",
        "CREATE TABLE evil (x INTEGER)",
        "ALTER TABLE runs ADD COLUMN evil INTEGER",
        "SELECT 1; DELETE FROM runs",
        "SELECT 1; DROP TABLE runs;",
        "SELECT 1 FROM runs) AS q; DELETE FROM runs; SELECT * FROM (SELECT 1",
    ],
    "postgres": [
        "WITH gone AS (DELETE FROM runs RETURNING id) SELECT * FROM gone",
        "SELECT nextval(pg_get_serial_sequence('experiments', 'id'))",
        "SELECT set_config('transaction_read_only', 'off', true)",
        "COMMIT",
    ],
    "sqlite": [
        "PRAGMA query_only = OFF",
        "ATTACH DATABASE 'evil.db' AS evil",
        "VACUUM",
        "REPLACE INTO experiments (name) VALUES ('x')",
    ],
}


async def test_sql_page_refuses_writes_ddl_several_statements(client, http, engine):
    await seed(client)
    for query in WRITES["common"] + WRITES[engine]:
        response = await sql(http, query)
        assert response.status_code == 400, query
        assert "\n" not in response.json()["error"], query
    assert await runs_count(client) == 3
    assert not await client.query("SELECT 1 FROM experiments WHERE name = 'x'")
    statuses = await client.query("SELECT status FROM runs ORDER BY id")
    assert [s for (s,) in statuses] == ["COMPLETED", "FAILED", "RUNNING"]


async def test_sql_page_stops_long_queries(client, http):
    await seed(client)
    response = await sql(http, ENDLESS)
    assert response.status_code == 400
    assert "stopped after 0.5 s" in response.json()["error"]
    assert (await sql(http, "SELECT 1 AS one")).json()["rows"] == [[1]]  # the next one runs


@pytest.mark.parametrize("statement", [
    "DELETE FROM runs",
    "UPDATE runs SET status = 'FAILED'",
    "INSERT INTO experiments (name) VALUES ('x')",
    "CREATE TABLE evil (x INTEGER)",
    "DROP TABLE metrics",
    "SELECT 1; DELETE FROM runs",
    "DELETE FROM runs; SELECT 1",
    "SELECT 1; COMMIT; DELETE FROM runs",
    "COMMIT; BEGIN; DELETE FROM runs",
    "SELECT 1; SET TRANSACTION READ WRITE; DELETE FROM runs",
])
async def test_the_database_refuses_what_the_text_checks_would(client, policy, statement):
    """Past the text checks (straight to ``readonly.fetch``), the database refuses."""
    await seed(client)
    with pytest.raises(QueryRefused) as refused:
        await readonly.fetch(client, [User(statement)], policy=policy)
    assert "\n" not in str(refused.value)
    assert await runs_count(client) == 3
    assert not await client.query("SELECT 1 FROM experiments WHERE name = 'x'")
    assert len(await client.query("SELECT 1 FROM metrics")) == 12


async def test_the_database_stops_a_long_query(client, policy):
    await seed(client)
    with pytest.raises(QueryRefused, match="stopped after 0.3 s"):
        await readonly.fetch(client, [User(ENDLESS)], timeout=0.3, policy=policy)


# -- curves -------------------------------------------------------------------
async def test_run_curves_every_axis_and_new_points_only(client, http):
    ids = await seed(client)
    url = f"/api/runs/{ids['run2']}/curves"
    data = (await http.get(url)).json()
    assert data["status"] == "RUNNING" and data["live"] is True
    assert data["axes"] == ["step", "progress", "time"] and data["time_metric"] == "time"
    assert data["labels"] == {"train__loss": "train/loss"}
    assert sorted(data["metrics"]) == ["acc", "ok", "train__loss"]
    loss = data["metrics"]["train__loss"]
    assert (loss["step"], loss["y"]) == ([0, 1, 2, 3], [12, 9, 6, 3])
    assert loss["progress"] == [0.0] * 4
    assert loss["time"][0] == "2024-05-01 09:00:00" and loss["time"][3] == "2024-05-01 09:00:30"
    assert data["last"] == {"step": 3, "progress": 0.0}

    same = (await http.get(url, params={"after_step": 3, "after_progress": 0})).json()
    assert same["metrics"]["train__loss"]["y"] == [] and same["last"] == data["last"]
    run = await sqltrack.AsyncRun.create(client, ids["experiment"], run_id=ids["run2"])
    await run.add_metrics({"train__loss": 2}, step=4)
    await run.add_metrics({"train__loss": 1}, step=4, progress=0.5)
    new = (await http.get(url, params={"after_step": 3, "after_progress": 0,
                                       "names": "train__loss"})).json()
    assert new["metrics"]["train__loss"]["step"] == [4, 4]
    assert new["metrics"]["train__loss"]["progress"] == [0.0, 0.5]
    assert new["last"] == {"step": 4, "progress": 0.5}
    await run.set_status("COMPLETED")
    assert (await http.get(url, params={"after_step": 4, "after_progress": 0.5})).json()[
        "live"] is False

    assert (await http.get(url, params={"after_step": "x"})).status_code == 400
    assert (await http.get(url, params={"names": "nope"})).status_code == 400
    assert (await http.get("/api/runs/987654/curves")).status_code == 404


async def test_compare_curves_many_metrics_and_runs(client, http):
    ids = await seed(client)
    runs = f"{ids['run0']},{ids['run2']}"
    data = (await http.get("/api/compare/curves", params={"runs": runs})).json()
    assert [(r["id"], r["name"], r["status"], r["live"]) for r in data["runs"]] == [
        (ids["run0"], "run-0", "COMPLETED", False), (ids["run2"], "run-2", "RUNNING", True)]
    assert sorted(data["metrics"]) == ["acc", "ok", "train__loss"]
    assert data["labels"]["train__loss"] == "train/loss"
    loss = data["metrics"]["train__loss"]
    assert loss[str(ids["run0"])]["y"] == [4, 3, 2, 1]
    assert loss[str(ids["run2"])]["y"] == [12, 9, 6, 3]
    after = f"{ids['run0']}:3:0,{ids['run2']}:1"
    new = (await http.get("/api/compare/curves", params={
        "runs": runs, "metrics": "train__loss", "after": after})).json()
    assert new["metrics"]["train__loss"][str(ids["run0"])]["y"] == []
    assert new["metrics"]["train__loss"][str(ids["run2"])]["y"] == [6, 3]
    too_many = ",".join(str(ids["run0"] + i) for i in range(21))
    for params, status in [({"runs": too_many}, 400), ({"runs": runs, "metrics": "nope"}, 400),
                           ({"runs": runs, "after": "1:x"}, 400), ({"runs": "987654"}, 404)]:
        assert (await http.get("/api/compare/curves", params=params)).status_code == status


async def test_system_metrics(client, http):
    ids = await seed(client)
    stamps = [START + timedelta(seconds=5 * i) for i in range(3)]
    for index, stamp in enumerate(stamps):
        for name, value in (("cpu_percent", 10.0 * index), ("process_rss_bytes", 1e6 + index)):
            await client.query(
                "INSERT INTO system_metrics (run_id, time, name, value) VALUES (%s, %s, %s, %s)",
                [ids["run2"], stamp.isoformat() if client.engine == "sqlite" else stamp,
                 name, value])
    url = f"/api/runs/{ids['run2']}/system"
    data = (await http.get(url)).json()
    assert sorted(data["metrics"]) == ["cpu_percent", "process_rss_bytes"]
    (cpu,) = data["metrics"]["cpu_percent"]  # one process: one line, rank 0
    assert (cpu["rank"], cpu["y"]) == (0, [0.0, 10.0, 20.0])
    assert cpu["time"] == ["2024-05-01 09:00:00", "2024-05-01 09:00:05", "2024-05-01 09:00:10"]
    later = (await http.get(url, params={"after": data["last"]})).json()
    assert later["metrics"] == {}
    assert (await http.get(f"/api/runs/{ids['run0']}/system")).json()["metrics"] == {}
    assert (await http.get("/api/runs/987654/system")).status_code == 404
