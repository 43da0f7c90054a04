"""A run's summary (wandb's ``run.summary``) on the run page, as runs-table columns and in
``sqltrack show``; metrics stored past the column budget (the long table) as runs-table
columns. Both engines, through the app's JSON API (httpx) and the command.
"""

from __future__ import annotations

import asyncio

import httpx

import sqltrack
import sqltrack.wandb as wandb
from sqltrack.cli import main as cli_main
from sqltrack.read.summary import flat_summary
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER


def test_flat_summary_flattens_one_level():
    extras = {"summary": {"loss": 0.5, "val/acc": {"max": 0.9, "min": 0.1}, "empty": {},
                          "note": "ok", "tags": [1, 2]}, "other": 1}
    assert flat_summary(extras) == {"loss": 0.5, "val/acc.max": 0.9, "val/acc.min": 0.1,
                                    "note": "ok", "tags": [1, 2]}
    assert flat_summary({}) == {} == flat_summary({"summary": [1]}) == flat_summary(None)


def wandb_script(client_kwargs) -> int:
    """A wandb-style script: two logged metrics, one with ``summary="max"``, one item set."""
    sync_client = sqltrack.Client(**client_kwargs)
    try:
        run = wandb.init(project="sweep", name="a", client=sync_client, quiet=True)
        wandb.define_metric("val/acc", summary="max,min")
        for step, (loss, acc) in enumerate([(0.9, 0.2), (0.5, 0.8), (0.7, 0.6)]):
            wandb.log({"loss": loss, "val/acc": acc}, step=step)
        run.summary["best_epoch"] = 1
        wandb.finish()
        return int(run.id)
    finally:
        sync_client.close()


async def test_wandb_summary_on_run_page_table_and_show(client, client_kwargs, http, capsys):
    run_id = await asyncio.to_thread(wandb_script, client_kwargs)
    expected = {"loss": 0.7, "val/acc.max": 0.8, "val/acc.min": 0.2, "best_epoch": 1}

    run = (await http.get(f"/api/runs/{run_id}")).json()
    assert run["summary"] == expected

    experiment_id = run["experiment_id"]
    url = f"/api/experiments/{experiment_id}/table"
    table = (await http.get(url)).json()
    assert table["available"]["summary"] == sorted(expected)
    summary_columns = [c for c in table["columns"] if c["group"] == "summary"]
    assert [c["key"] for c in summary_columns] == [f"summary.{k}" for k in sorted(expected)]
    assert all(c["numeric"] for c in summary_columns)
    (row,) = table["runs"]
    shown = dict(zip([c["key"] for c in table["columns"]], row["values"], strict=True))
    assert {k: shown[f"summary.{k}"] for k in expected} == expected

    chosen = (await http.get(url, params={"col": ["summary.val/acc.max", "summary.nope"]})).json()
    assert [c["label"] for c in chosen["columns"]] == ["summary.val/acc.max", "summary.nope"]
    assert chosen["runs"][0]["values"] == [0.8, None]

    capsys.readouterr()
    show = ["show", str(run_id), *_connection(client_kwargs)]
    assert await asyncio.to_thread(cli_main, show) == 0
    out = capsys.readouterr().out
    summary_part = out[out.index("\nsummary"):]
    assert "val/acc.max  0.8" in summary_part and "best_epoch   1" in summary_part


def _connection(client_kwargs) -> list[str]:
    if client_kwargs["engine"] == "sqlite":
        return ["--dbpath", client_kwargs["dbpath"]]
    options = ["--engine", "postgres", "--schema", client_kwargs["schema"]]
    for key in ("host", "port", "user", "dbname"):
        if key in client_kwargs:
            options += [f"--{key}", str(client_kwargs[key])]
    return options


async def test_long_stored_metrics_are_table_columns(client_kwargs, policy):
    """With a budget of one metric column, ``acc`` is a column and the rest live in the
    long table; last, min and max of each are the same in the table either way."""
    client = sqltrack.AsyncClient(**client_kwargs, metric_columns=1)
    try:
        async with client:
            exp = await sqltrack.AsyncExperiment.create(client, name="wide")
            ids = []
            for index in range(2):
                run = await exp.get_run()
                for step in range(3):
                    await run.add_metrics({"acc": step + index, "loss": 10 - step - index,
                                           "ok": step != 1, "epochs": step * 2},
                                          step=step)
                ids.append(run.id)
        long_names = await client.query("SELECT name FROM metric_names ORDER BY name")
        assert [n for (n,) in long_names] == ["epochs", "loss", "ok"]
        app = create_app(client, reader=policy.reader, allow_superuser=policy.allow_superuser)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     headers={TOKEN_HEADER: app.state.token}) as http:
            url = f"/api/experiments/{exp.id}/table"
            default = (await http.get(url)).json()
            assert "available" in default, default
            assert default["available"]["metrics"] == ["acc", "epochs", "loss", "ok"]
            assert [c["key"] for c in default["columns"]] == [
                "tags", "last.acc", "last.epochs", "last.loss", "last.ok"]
            assert [r["values"][1:] for r in default["runs"]] == [[2, 4, 8, True],
                                                                 [3, 4, 7, True]]
            cols = ["min.loss", "max.loss", "last.loss", "min.ok", "max.epochs", "min.acc"]
            data = (await http.get(url, params={"col": cols})).json()
            assert [r["values"] for r in data["runs"]] == [[8, 10, 8, 0, 4, 0],
                                                          [7, 9, 7, 0, 4, 1]]
            assert [c["numeric"] for c in data["columns"]] == [True] * 6
            filtered = (await http.get(url, params={"col": cols, "filter": f"id = {ids[1]}"})
                        ).json()
            assert [r["id"] for r in filtered["runs"]] == [ids[1]]
            # The SQL page (the reader role on PostgreSQL) reads every storage place.
            for query, expected in [
                ("SELECT count(*) FROM metric_values", [[18]]),
                ("SELECT count(*) FROM metric_names", [[3]]),
                ("SELECT count(*) FROM metric_values_all WHERE name = 'loss'", [[6]]),
                ("SELECT count(*) FROM system_metrics", [[0]]),
            ]:
                answer = (await http.get("/api/sql", params={"q": query})).json()
                assert answer.get("rows") == expected, (query, answer)
    finally:
        await client.close()
