"""System metrics per rank and host downsampled by the database (issue 21), on both engines.

A run whose ranks sampled many more readings than ``max_points``: ``/api/runs/{id}/system``
(view ``ranks``) gives each (name, rank, host) line the same points as the min/max bucket
downsampler (``ui.downsample``) gives from all of its finite readings, with or without
``after``, while its statements return about ``max_points`` rows a line, not every row.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

import sqltrack
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER
from sqltrack.ui.downsample import downsample

START = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
RANKS, SAMPLES, MAX_POINTS = 2, 3000, 100
NAMES = ("cpu_percent", "gpu0_memory_used_bytes")
SHORT = 30  # readings of a short line beside them (rank 1's ``disk_percent``): all drawn


@pytest.fixture
async def http(client) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={TOKEN_HEADER: app.state.token}) as http:
        yield http


class Rows:
    """Counts the rows each statement of the client returns."""

    def __init__(self, client: sqltrack.AsyncClient, monkeypatch) -> None:
        self.counts: list[int] = []
        original = client.query

        async def query(sql, *args, **kwargs):
            rows = await original(sql, *args, **kwargs)
            self.counts.append(len(rows))
            return rows

        monkeypatch.setattr(client, "query", query)


def reading(name: str, rank: int, i: int) -> float:
    """The seeded value: pseudo-random CPU with a dip (rank 1) and a spike (rank 0), one
    NaN and one infinity (rank 0); a constant memory per rank (ties in every bucket)."""
    if name != "cpu_percent":
        return 1e9 * (rank + 1)
    special = {(1, 1234): -3.5, (0, 2222): 1e6, (0, 500): math.nan, (0, 501): math.inf}
    return special.get((rank, i), ((i * 7919 + rank * 13) % 10007) / 1000)


def moment(rank: int, i: int) -> datetime:
    return START + timedelta(seconds=i + 0.25 * rank)


async def seed(client) -> int:
    """The run: RANKS ranks on one host, NAMES readings each, SAMPLES samples a second
    apart, and rank 1 SHORT readings of ``disk_percent``, 10 s apart; after them a last
    reading of ``odd`` (NaN only: in ``last``, never drawn)."""
    exp = await sqltrack.AsyncExperiment.create(client, name="many-samples")
    run = await exp.get_run()
    rows = [(run.id, client.dialect.timestamp(moment(rank, i)), name, reading(name, rank, i),
             rank, "node0")
            for rank in range(RANKS) for name in NAMES for i in range(SAMPLES)]
    rows.append((run.id, client.dialect.timestamp(moment(0, SAMPLES + 5)), "odd", math.nan,
                 0, "node0"))
    rows += [(run.id, client.dialect.timestamp(moment(1, 10 * i)), "disk_percent", 1.0 * i,
              1, "node0") for i in range(SHORT)]
    await client.executemany(client.dialect.sql(
        "INSERT INTO system_metrics (run_id, time, name, value, rank, host) "
        "VALUES (%s, %s, %s, %s, %s, %s)"), rows)
    return run.id


def expected(name: str, rank: int, first: int = 0) -> tuple[list[str], list[float], int]:
    """The line the min/max bucket downsampler draws from the finite readings from sample
    ``first`` on, and their number."""
    xs, ys = [], []
    for i in range(first, SAMPLES):
        value = reading(name, rank, i)
        if math.isfinite(value):
            xs.append(moment(rank, i).replace(tzinfo=None).isoformat(sep=" "))
            ys.append(value)
    kept_x, kept_y = downsample(xs, ys, MAX_POINTS)
    return kept_x, kept_y, len(ys)


async def test_ranks_view_is_downsampled_by_the_database(client, http, monkeypatch):
    run_id = await seed(client)
    rows = Rows(client, monkeypatch)
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
            xs, ys, total = expected(name, line["rank"])
            assert (line["time"], line["y"]) == (xs, ys)
            assert line["points"] == len(ys) <= MAX_POINTS and line["total"] == total
    cpu = {c["rank"]: c for c in data["metrics"]["cpu_percent"]}
    assert min(cpu[1]["y"]) == -3.5 and max(cpu[0]["y"]) == 1e6
    assert cpu[0]["total"] == SAMPLES - 2  # NaN and infinity left out

    rows.counts.clear()  # the readings after a time in the middle, downsampled the same
    half = (START + timedelta(seconds=SAMPLES // 2)).isoformat()
    later = (await http.get(url, params={"max_points": MAX_POINTS, "after": half})).json()
    assert sum(rows.counts) <= lines * MAX_POINTS + SHORT + 10
    assert later["last"] == data["last"]
    for name in NAMES:
        for line in later["metrics"][name]:
            first = SAMPLES // 2 + (1 if line["rank"] == 0 else 0)
            xs, ys, total = expected(name, line["rank"], first)
            assert (line["time"], line["y"], line["total"]) == (xs, ys, total)


def curves_time(text: str) -> datetime:
    """``last`` as a moment (SQLite gives the stored text, PostgreSQL its ISO form)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
