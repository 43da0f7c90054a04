"""The web page (``sqltrack.ui.create_app``, driven with httpx in-process as tests/ui does)
over a Citus coordinator (marker ``citus``; see tests/schema/test_citus.py): the runs
table (columns, users' SQL filter run as the page's reader role), a run's curves, its
system metrics and the SQL page answer as on one server, with half of the metrics stored
long (``metric_values``) and the rows spread over both workers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import httpx
import pytest
from support.citus import citus_tables, rows_per_worker
from support.helpers import drop_role
from test_ui_features import HOSTILE, seed, table

import sqltrack
from sqltrack.model.system_metrics import write_sample
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER

pytestmark = pytest.mark.citus


@pytest.fixture
async def citus_client(citus_kwargs) -> AsyncIterator[sqltrack.AsyncClient]:
    client = sqltrack.AsyncClient(**citus_kwargs, metric_columns=2)
    yield client
    await client.close()


@pytest.fixture
async def http(citus_client, citus_dsn) -> AsyncIterator[httpx.AsyncClient]:
    """The page over the coordinator, users' SQL run as a reader role of its own."""
    await citus_client.open()
    role = "t_reader_" + uuid.uuid4().hex[:10]
    try:
        await sqltrack.setup_reader(citus_client, role)
        app = create_app(citus_client, reader=role, allow_superuser=True)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     headers={TOKEN_HEADER: app.state.token}) as http:
            yield http
    finally:
        drop_role(citus_dsn, role)


async def test_the_page_over_the_coordinator(citus_client, citus_kwargs, http):
    ids = await seed(citus_client)
    extra = await (await sqltrack.AsyncExperiment.create(citus_client, name="spread")).get_run()
    for step in range(3):  # more runs: rows on both workers
        await extra.add_metrics({"acc": step}, step=step)
    more = [await (await sqltrack.AsyncExperiment.create(citus_client, name=f"e{i}")).get_run()
            for i in range(8)]
    for run in more:
        await run.add_metrics({"acc": 1.0}, step=0)
    assert citus_tables(citus_kwargs)["metrics"][:2] == ("distributed", "run_id")
    assert len([c for c in rows_per_worker(citus_kwargs, "runs").values() if c]) >= 2
    long_names = {r[0] for r in await citus_client.query("SELECT DISTINCT name FROM metric_values")}
    assert long_names  # past the budget of 2 columns: stored long

    page = await http.get(f"/experiments/{ids['experiment']}")
    assert page.status_code == 200 and "<html" in page.text.lower()
    data = (await table(http, ids["experiment"], col=["args.lr", "last.train__loss",
                                                      "min.train__loss", "max.acc", "tags"])
            ).json()
    assert [r["id"] for r in data.get("runs", [])] == [ids["run0"], ids["run1"], ids["run2"]], data
    assert [r["values"] for r in data["runs"]] == [
        [0.1, 1, 1, 0.75, "even"], [0.01, 2, 2, 1.75, "odd"], [0.001, 3, 3, 2.75, "even"]]
    assert data["available"]["args"] == sorted([HOSTILE, "depth", "lr", "opt"])
    where = "args->>'lr' = '0.1' AND status = 'COMPLETED'"
    assert [r["id"] for r in (await table(http, ids["experiment"], filter=where)).json()[
        "runs"]] == [ids["run0"]]
    # A subquery of a table co-located with runs (the reader role may read sqltrack's
    # READER_TABLES: metrics, not metric_values).
    by_metric = "id IN (SELECT run_id FROM metrics WHERE step = 3) AND status <> 'FAILED'"
    found = (await table(http, ids["experiment"], filter=by_metric)).json()
    assert [r["id"] for r in found.get("runs", [])] == [ids["run0"], ids["run2"]], found

    curves = (await http.get(f"/api/runs/{ids['run2']}/curves")).json()
    assert sorted(curves["metrics"]) == ["acc", "ok", "train__loss"]
    loss = curves["metrics"]["train__loss"]
    assert (loss["step"], loss["y"]) == ([0, 1, 2, 3], [12, 9, 6, 3])
    assert curves["metrics"]["acc"]["y"] == [2.0, 2.25, 2.5, 2.75]
    assert curves["last"] == {"step": 3, "progress": 0.0}
    assert (await http.get("/api/runs/987654/curves")).status_code == 404

    when = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
    await write_sample(citus_client, ids["run1"], {"cpu_percent": 12.5}, time=when)
    system = (await http.get(f"/api/runs/{ids['run1']}/system")).json()
    assert list(system["metrics"]) == ["cpu_percent"]

    sql = (await http.get("/api/sql", params={
        "q": "SELECT e.name, count(*) FROM runs r JOIN experiments e ON e.id = r.experiment_id "
             "GROUP BY e.name ORDER BY e.name"})).json()
    assert sql["rows"][-2:] == [["spread", 1], ["sweep", 3]]
    # Known: the page runs users' SQL as a subquery (SELECT * FROM (q) AS q), whose ORDER
    # BY Citus does not keep when the query spans shards (README "Many machines").
    every = (await http.get("/api/sql", params={"q": "SELECT id FROM runs ORDER BY id"})).json()
    assert sorted(r[0] for r in every["rows"]) == sorted(r[0] for r in await citus_client.query(
        "SELECT id FROM runs"))
    refused = await http.get("/api/sql", params={"q": "DELETE FROM runs"})
    assert refused.status_code == 400
