"""The ``sqltrack ui`` ASGI app driven in-process with httpx, on both engines."""

from __future__ import annotations

import asyncio
import math
import random
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

import sqltrack
from sqltrack import cli
from sqltrack.ui import allowed_hosts, create_app
from sqltrack.ui.app import TOKEN_HEADER
from sqltrack.ui.downsample import downsample

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
LONG_STEPS = 100_000


@pytest.fixture
async def http(client) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app over the test's AsyncClient."""
    app = create_app(client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={TOKEN_HEADER: app.state.token}) as http:
        yield http


async def seed(client) -> dict[str, int]:
    async with client:
        resnet = await sqltrack.AsyncExperiment.create(client, name="resnet")
        hostile = await sqltrack.AsyncExperiment.create(client, name=HOSTILE)
        best = await resnet.get_run()
        await best.set_tags("best", "fast")
        await best.set_env({"SECRET_TOKEN": "s3cr3t-value"})
        await best.set_args({"lr": 0.1})
        await best.set_status("COMPLETED")
        for step in range(5):
            await best.add_metrics({"loss": 1 / (step + 1), "acc": step / 5, "ok": step % 2 == 0,
                                    "phase": "train"}, step=step)
        failed = await resnet.get_run()
        await failed.set_tags("fast")
        await failed.set_status("FAILED")
        await failed.add_metrics({"loss": 2.0}, step=0)
        await failed.add_metrics({"loss": float("nan")}, step=1)
        await failed.add_metrics({"loss": 1.5}, step=2)
        evil = await hostile.get_run()
        await evil.set_comment("<img src=x onerror=alert(2)>")
    return {"resnet": resnet.id, "hostile": hostile.id, "best": best.id, "failed": failed.id,
            "evil": evil.id}


# -- JSON API -----------------------------------------------------------------
async def test_experiments(client, http):
    ids = await seed(client)
    response = await http.get("/api/experiments")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    experiments = response.json()["experiments"]
    assert [(e["id"], e["name"], e["runs"]) for e in experiments] == [
        (ids["resnet"], "resnet", 2), (ids["hostile"], HOSTILE, 1),
    ]


async def test_experiment_runs_and_filters(client, http):
    ids = await seed(client)
    data = (await http.get(f"/api/experiments/{ids['resnet']}/runs")).json()
    assert data["experiment"]["name"] == "resnet"
    assert [r["id"] for r in data["runs"]] == [ids["best"], ids["failed"]]
    assert data["metrics"] == ["acc", "loss", "ok", "phase"]
    assert data["plottable"] == ["acc", "loss", "ok"]
    best = data["runs"][0]
    assert best["status"] == "COMPLETED" and best["tags"] == ["best", "fast"]
    assert best["metrics"] == {"acc": 0.8, "loss": 0.2, "ok": True, "phase": "train"}
    assert data["runs"][1]["metrics"]["loss"] == 1.5

    failed = (await http.get(f"/api/experiments/{ids['resnet']}/runs?status=failed")).json()
    assert [r["id"] for r in failed["runs"]] == [ids["failed"]]
    tagged = await http.get(f"/api/experiments/{ids['resnet']}/runs?tag=fast&tag=best")
    assert [r["id"] for r in tagged.json()["runs"]] == [ids["best"]]

    bad = await http.get(f"/api/experiments/{ids['resnet']}/runs?status=DONE")
    assert bad.status_code == 400 and "unknown status 'DONE'" in bad.json()["error"]
    missing = await http.get("/api/experiments/987654/runs")
    assert missing.status_code == 404
    assert missing.json() == {"error": "experiment 987654 does not exist"}


async def test_run_detail_hides_env_values(client, http):
    ids = await seed(client)
    response = await http.get(f"/api/runs/{ids['best']}")
    run = response.json()
    assert run["experiment"] == "resnet" and run["args"] == {"lr": 0.1}
    assert run["env_keys"] == ["SECRET_TOKEN"]
    assert "s3cr3t-value" not in response.text
    assert run["plottable"] == ["acc", "loss", "ok"]
    assert {m["metric"]: m["last"] for m in run["metrics"]}["phase"] == "train"
    assert (await http.get("/api/runs/424242")).status_code == 404
    assert (await http.get("/api/runs/abc")).status_code == 404


async def test_run_metrics(client, http):
    ids = await seed(client)
    data = (await http.get(f"/api/runs/{ids['best']}/metrics")).json()
    assert data["x"] == "step"
    assert sorted(data["metrics"]) == ["acc", "loss", "ok"]  # numbers only
    loss = data["metrics"]["loss"]
    assert loss["x"] == [0, 1, 2, 3, 4]
    assert loss["y"] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert loss["downsampled"] is False and loss["total"] == 5
    assert data["metrics"]["ok"]["y"] == [1, 0, 1, 0, 1]

    only = (await http.get(f"/api/runs/{ids['failed']}/metrics?names=loss")).json()
    curve = only["metrics"]["loss"]
    assert (curve["x"], curve["y"]) == ([0, 2], [2.0, 1.5])  # NaN: no point
    assert (curve["total"], curve["non_finite"]) == (3, 1)

    for query, message in [
        ("names=phase", "no numeric metric 'phase'"),
        ("names=nope", "no numeric metric 'nope'"),
        ("max_points=3", "between 10 and 20000"),
        ("max_points=many", "must be an integer"),
    ]:
        response = await http.get(f"/api/runs/{ids['best']}/metrics?{query}")
        assert response.status_code == 400, query
        assert message in response.json()["error"]
    assert (await http.get("/api/runs/424242/metrics")).status_code == 404


async def test_long_run_is_downsampled_keeping_extremes(client, http):
    exp = await sqltrack.AsyncExperiment.create(client, name="long")
    run = await exp.get_run()
    await run.add_metrics({"loss": 5.0}, step=0)
    # 100,000 steps made by the database itself: pseudo-random values in [0, 10)
    await client.query(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < %s) "
        "INSERT INTO metrics (run_id, step, progress, loss) "
        "SELECT %s, n, 0.0, (n * 7919 - n * 7919 / 10007 * 10007) * 0.001 FROM s",
        [LONG_STEPS - 1, run.id],
    )
    await client.query("UPDATE metrics SET loss = -3.5 WHERE run_id = %s AND step = 41234",
                       [run.id])
    await client.query("UPDATE metrics SET loss = 1e6 WHERE run_id = %s AND step = 77777",
                       [run.id])
    for max_points in (2000, 11):
        response = await http.get(f"/api/runs/{run.id}/metrics?names=loss"
                                  f"&max_points={max_points}")
        curve = response.json()["metrics"]["loss"]
        assert curve["total"] == LONG_STEPS and curve["downsampled"] is True
        assert len(curve["x"]) == len(curve["y"]) == curve["points"] <= max_points
        assert curve["points"] >= max_points - 1
        assert min(curve["y"]) == -3.5 and max(curve["y"]) == 1e6
        assert 41234 in curve["x"] and 77777 in curve["x"]
        assert curve["x"][0] == 0 and curve["x"][-1] == LONG_STEPS - 1
        assert curve["x"] == sorted(set(curve["x"]))


async def test_compare(client, http):
    ids = await seed(client)
    runs = f"{ids['failed']},{ids['best']}"
    data = (await http.get(f"/api/compare?runs={runs}&metric=loss")).json()
    assert data["metric"] == "loss" and data["x"] == "step"
    assert [(r["id"], r["experiment"], r["status"]) for r in data["runs"]] == [
        (ids["failed"], "resnet", "FAILED"), (ids["best"], "resnet", "COMPLETED"),
    ]
    assert data["runs"][0]["y"] == [2.0, 1.5] and data["runs"][1]["x"] == [0, 1, 2, 3, 4]
    evil = (await http.get(f"/api/compare?runs={ids['evil']}&metric=loss")).json()
    assert evil["runs"][0]["experiment"] == HOSTILE and evil["runs"][0]["points"] == 0

    for query, status in [
        (f"runs={runs}&metric=phase", 400),
        (f"runs={runs}&metric=nope", 400),
        (f"runs={runs}", 400),
        ("metric=loss", 400),
        ("runs=1,x&metric=loss", 400),
        ("runs=" + ",".join(map(str, range(1, 60))) + "&metric=loss", 400),
        (f"runs={ids['best']},424242&metric=loss", 404),
    ]:
        response = await http.get(f"/api/compare?{query}")
        assert response.status_code == status, query
        assert response.json()["error"]


# -- pages --------------------------------------------------------------------
async def test_pages_escape_hostile_values(client, http):
    ids = await seed(client)
    page = await http.get(f"/experiments/{ids['hostile']}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert HOSTILE not in page.text
    assert f"<title>{ESCAPED} · sqltrack</title>" in page.text
    assert f"<h1>{ESCAPED}</h1>" in page.text
    run_page = await http.get(f"/runs/{ids['evil']}")
    assert HOSTILE not in run_page.text and ESCAPED in run_page.text  # the breadcrumb
    assert "<img" not in run_page.text  # the comment is only rendered by the script, as text
    filtered = await http.get(f"/experiments/{ids['resnet']}",
                              params={"tag": '"><script>x</script>'})
    assert "<script>x" not in filtered.text
    assert 'value="&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in filtered.text
    compare = await http.get("/compare", params={"runs": str(ids["best"]), "metric": HOSTILE})
    assert compare.status_code == 200 and HOSTILE not in compare.text
    headers = page.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"


async def test_pages_and_errors(client, http):
    ids = await seed(client)
    home = await http.get("/")
    assert home.status_code == 200 and 'data-page="experiments"' in home.text
    run_page = await http.get(f"/runs/{ids['best']}")
    assert 'src="/static/plotly.min.js"' in run_page.text
    assert f'data-api="/api/runs/{ids["best"]}"' in run_page.text
    experiment = await http.get(f"/experiments/{ids['resnet']}?status=COMPLETED&tag=best")
    assert "<option selected>COMPLETED</option>" in experiment.text
    assert f"/api/experiments/{ids['resnet']}/runs?status=COMPLETED&amp;tag=best" in (
        experiment.text)
    for path, status in [
        ("/experiments/987654", 404), ("/runs/987654", 404), ("/nowhere", 404),
        (f"/experiments/{ids['resnet']}?status=bogus", 400), ("/compare?metric=loss", 400),
    ]:
        response = await http.get(path)
        assert response.status_code == status, path
        assert response.headers["content-type"].startswith("text/html")
        assert '<p class="error">' in response.text
    assert (await http.get("/api/nowhere")).json() == {"error": "Not Found"}


async def test_read_only_and_local_hosts_only(client, http):
    await seed(client)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = await http.request(method, "/api/experiments")
        assert response.status_code == 405, method
    assert (await http.head("/api/experiments")).status_code == 200
    rebound = await http.get("/api/experiments", headers={"host": "evil.example"})
    assert rebound.status_code == 400
    assert (await http.get("/", headers={"host": "localhost:8080"})).status_code == 200
    assert all("*" not in allowed_hosts(h) for h in ("127.0.0.1", "::1", "localhost"))
    assert allowed_hosts("0.0.0.0") == ["*"]


async def test_static_files(client, http):
    plotly = await http.get("/static/plotly.min.js")
    assert plotly.status_code == 200
    assert plotly.headers["content-type"].startswith("text/javascript")
    assert len(plotly.content) > 1_000_000 and b"plotly" in plotly.content[:2000].lower()
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = await http.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert (await http.get("/static/../app.py")).status_code == 404
    assert (await http.get("/static/nothing.js")).status_code == 404


# -- the command -------------------------------------------------------------
async def test_cli_ui_reports_a_taken_port(client, client_kwargs, capsys):
    await seed(client)  # the database exists
    kwargs = dict(client_kwargs)
    args = ["--engine", kwargs.pop("engine")]
    args += ["--dbpath", kwargs.pop("dbpath")] if "dbpath" in kwargs else [
        "--schema", kwargs.pop("schema"), *(f"-o{k}={v}" for k, v in kwargs.items())]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = await asyncio.to_thread(cli.main, [*args, "ui", "--port", str(port)])
    target, _, err = capsys.readouterr().err.partition("\n")
    assert code == 1
    assert target.startswith("sqltrack: database: ")  # every command names its database first
    assert err.startswith(f"sqltrack: error: cannot listen on 127.0.0.1:{port}: ")
    assert len(err.strip().splitlines()) == 1


def test_cli_ui_options_leave_the_connection_alone():
    args = cli.build_parser().parse_args(
        ["--engine", "postgres", "--host", "db.example", "--port", "5433", "ui", "--port", "9000"]
    )
    assert cli.client_kwargs(args) == {"engine": "postgres", "host": "db.example", "port": "5433"}
    assert (args.listen_host, args.listen_port) == ("127.0.0.1", 9000)


# -- downsampling (no database) -----------------------------------------------
def test_downsample_bounds_and_extremes():
    rng = random.Random(7)
    for count in (5, 2000, 2001, 12_345, 100_000):
        ys = [rng.gauss(0, 1) for _ in range(count)]
        xs = list(range(count))
        for max_points in (4, 10, 2000):
            out_x, out_y = downsample(xs, ys, max_points)
            assert len(out_x) == len(out_y)
            if count <= max_points:
                assert (out_x, out_y) == (xs, ys)
                continue
            assert len(out_y) <= max_points
            assert min(out_y) == min(ys) and max(out_y) == max(ys)
            assert out_x[0] == 0 and out_x[-1] == count - 1
            assert out_x == sorted(set(out_x))
            assert all(ys[x] == y for x, y in zip(out_x, out_y, strict=True))
    with pytest.raises(ValueError):
        downsample([1, 2, 3], [1.0, 2.0, 3.0], 3)
    assert downsample([], [], 10) == ([], [])
    flat = downsample(list(range(1000)), [1.0] * 1000, 10)
    assert len(flat[0]) <= 10 and set(flat[1]) == {1.0}
    assert not any(math.isnan(y) for y in flat[1])
