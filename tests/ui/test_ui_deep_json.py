"""The page shows the deepest JSON sqltrack stores (issue 24: args nested ~978 levels deep
were accepted, then the run page and the experiment's runs table answered 500)."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import psycopg

from sqltrack.checks import MAX_JSON_DEPTH
from sqltrack.read.queries import SHOWN_JSON_DEPTH


def nested(depth: int) -> dict[str, Any]:
    """A dict whose containers nest ``depth`` deep (the dict itself is level 1)."""
    value: Any = "leaf"
    for level in range(depth - 1):
        value = [value] if level % 2 else {"k": value}
    return {"deep": value}


def PAGES(run: Any) -> list[str]:  # noqa: N802 - a table of paths
    """The pages and API routes that show a run's JSON columns."""
    return [f"/api/runs/{run.id}", f"/api/experiments/{run.experiment_id}/runs",
            f"/api/experiments/{run.experiment_id}/table", f"/runs/{run.id}",
            f"/experiments/{run.experiment_id}"]


async def test_deepest_json_is_shown_by_the_page(client, run, http):
    deepest = nested(MAX_JSON_DEPTH)
    await run.set_args(deepest)
    await run.set_extras(deepest)
    await run.set_env({"HOME": "/root"})
    await run.add_metrics({"loss": 1.0}, step=1)
    for path in PAGES(run):
        response = await http.get(path)
        assert response.status_code == 200, (path, response.text[:300])
    detail = (await http.get(f"/api/runs/{run.id}")).json()
    assert detail["args"] == deepest


async def test_deeper_json_written_by_others_is_shown_cut(client, run, client_kwargs, http):
    """JSON that sqltrack would refuse, written by another writer (a 0.1.x client, SQL):
    the pages answer 200 and show the parts past the depth they show as a note."""
    depth = 978  # issue 24's value; SQLite's JSON functions take at most 1000 levels
    text = '{"d": ' + "[" * depth + "]" * depth + "}"
    await run.add_metrics({"loss": 1.0}, step=1)
    write_raw(client_kwargs, "UPDATE runs SET args = %s, extras = %s WHERE id = %s",
              [text, text, run.id])
    for path in PAGES(run):
        response = await http.get(path)
        assert response.status_code == 200, (path, response.text[:300])
    shown = (await http.get(f"/api/runs/{run.id}")).json()["args"]
    levels = 0
    while isinstance(shown, (dict, list)):
        (shown,) = shown.values() if isinstance(shown, dict) else shown
        levels += 1
    # cut where the page's stack had room: while loading (PostgreSQL's rows, SQLite's text)
    # or while making the response
    assert shown in (f"(nested deeper than {MAX_JSON_DEPTH} levels: not shown)",
                     f"JSON nested too deeply to load ({len(text)} characters)"), shown
    assert levels < SHOWN_JSON_DEPTH, levels


def write_raw(kwargs: dict[str, Any], sql: str, params: list[Any]) -> None:
    """Run ``sql`` (``%s`` placeholders) with the raw driver, outside sqltrack."""
    if kwargs["engine"] == "sqlite":
        with contextlib.closing(sqlite3.connect(kwargs["dbpath"])) as conn, conn:
            conn.execute(sql.replace("%s", "?"), params)
        return
    params_pg = {k: v for k, v in kwargs.items() if k not in ("engine", "schema")}
    with psycopg.connect(**params_pg, options=f"-c search_path={kwargs['schema']}") as conn:
        conn.execute(sql.replace("%s", "%s::jsonb", 2), params)
