"""System metrics per rank and host downsampled by the database (issue 21), on both engines.

A run whose ranks sampled many more readings than ``max_points``: ``/api/runs/{id}/system``
(view ``ranks``) gives each (name, rank, host) line at most ``max_points`` points (the
lowest and highest of each bucket of time, and the first and last readings), keeps the
spike and the dip, leaves NaN and infinity out, sends short lines whole, honours
``after``, and gives the same answer on SQLite and PostgreSQL, while its statements
return about ``max_points`` rows a line, not every row.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from support.helpers import RowCounts, pg_params

import sqltrack
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER

START = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
RANKS, SAMPLES, MAX_POINTS = 2, 3000, 100
NAMES = ("cpu_percent", "gpu0_memory_used_bytes")
SHORT = 30  # readings of a short line beside them (rank 1's ``disk_percent``): all drawn


@pytest.fixture
async def http(client) -> AsyncIterator[httpx.AsyncClient]:
    async with _http(client) as http:
        yield http


def _http(client: sqltrack.AsyncClient) -> httpx.AsyncClient:
    app = create_app(client)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://127.0.0.1",
                             headers={TOKEN_HEADER: app.state.token})


def reading(name: str, rank: int, i: int) -> float:
    """The seeded value: pseudo-random CPU with a dip (rank 1) and a spike (rank 0), one
    NaN and one infinity (rank 0); a constant memory per rank (ties in every bucket)."""
    if name != "cpu_percent":
        return 1e9 * (rank + 1)
    special = {(1, 1234): -3.5, (0, 2222): 1e6, (0, 500): math.nan, (0, 501): math.inf}
    return special.get((rank, i), ((i * 7919 + rank * 13) % 10007) / 1000)


def moment(rank: int, i: int, micros: bool = False) -> datetime:
    """Sample ``i``'s time on ``rank`` (with some microseconds: kept exactly)."""
    return START + timedelta(seconds=i + 0.25 * rank,
                             microseconds=(i * 37) % 1000 if micros else 0)


async def seed(client) -> int:
    """The run: RANKS ranks on one host, NAMES readings each, SAMPLES samples a second
    apart, and rank 1 SHORT readings of ``disk_percent``, 10 s apart; after them a last
    reading of ``odd`` (NaN only: in ``last``, never drawn)."""
    exp = await sqltrack.AsyncExperiment.create(client, name="many-samples")
    run = await exp.get_run()
    rows = [(run.id, client.dialect.timestamp(moment(rank, i, True)), name,
             reading(name, rank, i), rank, "node0")
            for rank in range(RANKS) for name in NAMES for i in range(SAMPLES)]
    rows.append((run.id, client.dialect.timestamp(moment(0, SAMPLES + 5)), "odd", math.nan,
                 0, "node0"))
    rows += [(run.id, client.dialect.timestamp(moment(1, 10 * i)), "disk_percent", 1.0 * i,
              1, "node0") for i in range(SHORT)]
    await client.executemany(client.dialect.sql(
        "INSERT INTO system_metrics (run_id, time, name, value, rank, host) "
        "VALUES (%s, %s, %s, %s, %s, %s)"), rows)
    return run.id


def plotted(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(sep=" ")


def finite(name: str, rank: int, first: int = 0) -> tuple[list[str], list[float]]:
    """A line's finite readings from sample ``first`` on: times as drawn, values."""
    kept = [(plotted(moment(rank, i, True)), reading(name, rank, i))
            for i in range(first, SAMPLES) if math.isfinite(reading(name, rank, i))]
    return [t for t, _ in kept], [v for _, v in kept]


def check_line(line: dict[str, Any], name: str, first: int = 0) -> None:
    """A long line as the page promises it: at most ``max_points`` of its finite
    readings, in time order, its first and last among them, no gap wider than two
    buckets of time (``max_points`` / 4 of them)."""
    xs, ys = finite(name, line["rank"], first)
    readings = dict(zip(xs, ys, strict=True))
    assert line["total"] == len(xs) and len(xs) > MAX_POINTS
    assert MAX_POINTS // 4 <= line["points"] == len(line["y"]) <= MAX_POINTS
    assert all(readings[t] == y for t, y in zip(line["time"], line["y"], strict=True))
    assert line["time"] == sorted(set(line["time"]))
    assert (line["time"][0], line["time"][-1]) == (xs[0], xs[-1])
    stamps = [datetime.fromisoformat(t).timestamp() for t in line["time"]]
    width = (stamps[-1] - stamps[0]) / (MAX_POINTS // 4)
    assert max(b - a for a, b in zip(stamps, stamps[1:], strict=False)) <= 2 * width


async def test_ranks_view_is_downsampled_by_the_database(client, http, monkeypatch):
    run_id = await seed(client)
    rows = RowCounts(client, monkeypatch)
    url = f"/api/runs/{run_id}/system"
    data = (await http.get(url, params={"max_points": MAX_POINTS})).json()
    lines = RANKS * len(NAMES)
    assert sum(rows.counts) <= lines * MAX_POINTS + SHORT + 10  # not the 12,031 rows stored
    assert data["ranks"] == [{"rank": r, "host": "node0"} for r in range(RANKS)]
    assert sorted(data["metrics"]) == sorted([*NAMES, "disk_percent"])  # ``odd``: no finite
    (disk,) = data["metrics"]["disk_percent"]
    assert (disk["rank"], disk["y"], disk["total"]) == (1, [1.0 * i for i in range(SHORT)], SHORT)
    assert disk["time"][:2] == ["2024-05-01 09:00:00.250000", "2024-05-01 09:00:10.250000"]
    assert data["last"].startswith("2024-05-01")
    assert curves_time(data["last"]) == moment(0, SAMPLES + 5)
    for name in NAMES:
        assert [(c["rank"], c["host"]) for c in data["metrics"][name]] == [
            (r, "node0") for r in range(RANKS)]
        for line in data["metrics"][name]:
            check_line(line, name)
    cpu = {c["rank"]: c for c in data["metrics"]["cpu_percent"]}
    assert min(cpu[1]["y"]) == -3.5 and max(cpu[0]["y"]) == 1e6  # the dip and the spike
    assert plotted(moment(1, 1234, True)) in cpu[1]["time"]
    assert plotted(moment(0, 2222, True)) in cpu[0]["time"]
    assert cpu[0]["total"] == SAMPLES - 2  # NaN and infinity left out

    rows.counts.clear()  # the readings after a time in the middle, downsampled the same
    half = (START + timedelta(seconds=SAMPLES // 2)).isoformat()
    later = (await http.get(url, params={"max_points": MAX_POINTS, "after": half})).json()
    assert sum(rows.counts) <= lines * MAX_POINTS + SHORT + 10
    assert later["last"] == data["last"]
    assert sorted(later["metrics"]) == sorted(NAMES)  # disk_percent: all before ``half``
    for name in NAMES:
        for line in later["metrics"][name]:
            check_line(line, name, SAMPLES // 2)  # sample 1500 of rank 0: 500 µs after


async def test_ranks_view_is_the_same_on_both_engines(tmp_path, pg_dsn, pg_schema):
    """The same readings give the same points on SQLite and PostgreSQL (ties included:
    the memory lines are constant), with and without ``after``."""
    answers = []
    for kwargs in ({"engine": "sqlite", "dbpath": str(tmp_path / "s.db")},
                   {"engine": "postgres", **pg_params(pg_dsn), "schema": pg_schema}):
        client = sqltrack.AsyncClient(**kwargs)
        try:
            run_id = await seed(client)
            async with _http(client) as http:
                url = f"/api/runs/{run_id}/system"
                answers.append([(await http.get(url, params={"max_points": points, **extra})
                                 ).json()["metrics"]
                                for points in (MAX_POINTS, 2 * MAX_POINTS, 20_000)
                                for extra in ({}, {"after": "2024-05-01T09:20:00+00:00"})])
        finally:
            await client.close()
    sqlite, postgres = answers
    assert sqlite == postgres
    assert all(len(line["y"]) <= MAX_POINTS for line in sqlite[0]["cpu_percent"])


def curves_time(text: str) -> datetime:
    """``last`` as a moment (SQLite gives the stored text, PostgreSQL its ISO form)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
