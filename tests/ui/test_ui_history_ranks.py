"""The run page's history (rewinds, forks) and system metrics per rank and host (issue 21,
Required 2 and 7), through the JSON API (httpx), on both engines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from statistics import mean

import httpx
import pytest

import sqltrack
from sqltrack.model.system_metrics import write_sample
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER

HOSTILE = "<img src=x onerror=alert(7)>"
START = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
async def http(client) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={TOKEN_HEADER: app.state.token}) as http:
        yield http


async def history_of(http, run_id: int) -> dict:
    response = await http.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()["history"]


async def test_history_of_rewinds_and_forks(client, http):
    exp = await sqltrack.AsyncExperiment.create(client, name="preempted")
    run = await exp.get_run()
    for step in range(10):
        await run.add_metrics({"loss": 1.0 / (step + 1)}, step=step)
    first = await sqltrack.run_rewind(client, run.id, 6)  # rows 7..9 move
    for step in range(7, 9):
        await run.add_metrics({"loss": 0.5}, step=step)
    second = await sqltrack.run_rewind(client, run.id, 7)  # row 8 moves
    empty = await sqltrack.run_rewind(client, run.id, 50)  # nothing past 50: no run
    child = await run.fork(5)
    grandchild = await child.fork()
    assert first and second and empty is None

    seen = await history_of(http, run.id)
    extras_rewinds = (await http.get(f"/api/runs/{run.id}")).json()["extras"]["rewinds"]
    assert [(r["step"], r["rows"], r["run"]) for r in seen["rewinds"]] == [
        (6, 3, first), (7, 1, second), (50, 0, None)]
    assert [r["time"] for r in seen["rewinds"]] == [r["time"] for r in extras_rewinds]
    assert [f["run"] for f in seen["forks"]] == [child.id]
    assert seen["forks"][0]["step"] == 5
    assert seen["forked_from"] is None and seen["rewound_from"] is None
    assert seen["more"] is False

    held = await history_of(http, first)  # the run holding the rewound rows
    assert held["rewound_from"]["run"] == run.id and held["rewound_from"]["step"] == 6
    assert held["rewinds"] == [] and held["forks"] == []

    forked = await history_of(http, child.id)
    assert forked["forked_from"]["run"] == run.id and forked["forked_from"]["step"] == 5
    assert [f["run"] for f in forked["forks"]] == [grandchild.id]
    assert forked["forks"][0]["step"] == 5  # all of the child's rows: its last step
    assert (await history_of(http, grandchild.id))["forked_from"]["run"] == child.id

    plain = await exp.get_run()
    assert await history_of(http, plain.id) == {
        "rewinds": [], "rewound_from": None, "forked_from": None, "forks": [], "more": False}


async def test_history_keeps_hostile_or_odd_extras_as_data(client, http):
    exp = await sqltrack.AsyncExperiment.create(client, name="odd")
    run = await exp.get_run()
    await run.set_extras({"rewinds": [{"step": HOSTILE, "time": HOSTILE, "rows": "x"}, 7,
                                      {"step": 3}],
                          "forked_from": HOSTILE})
    seen = await history_of(http, run.id)
    assert seen["rewinds"] == [
        {"step": HOSTILE, "time": HOSTILE, "rows": "x", "run": None},
        {"step": None, "time": None, "rows": None, "run": None},
        {"step": 3, "time": None, "rows": None, "run": None}]
    await run.set_extras({"rewinds": HOSTILE})
    assert (await history_of(http, run.id))["rewinds"] == []


async def seed_ranks(client, ranks: int, samples: int, every: float = 5.0) -> int:
    """A run whose ``ranks`` processes (two per host) sampled ``cpu_percent`` (rank r:
    10 * r + i) and ``gpu0_memory_used_bytes`` every ``every`` seconds; rank 1 a little
    late each time (its readings fall in the same buckets)."""
    exp = await sqltrack.AsyncExperiment.create(client, name=f"ranks-{ranks}")
    run = await exp.get_run()
    for rank in range(ranks):
        for i in range(samples):
            late = 0.25 if rank == 1 else 0.0
            await write_sample(client, run.id,
                               {"cpu_percent": 10.0 * rank + i,
                                "gpu0_memory_used_bytes": 1e9 * (rank + 1)},
                               time=START + timedelta(seconds=every * i + late),
                               rank=rank, host=f"node{rank // 2}")
    return run.id


async def test_system_metrics_per_rank_and_host(client, http):
    run_id = await seed_ranks(client, ranks=4, samples=6)
    url = f"/api/runs/{run_id}/system"
    data = (await http.get(url)).json()
    assert data["view"] == "ranks"
    assert data["ranks"] == [{"rank": r, "host": f"node{r // 2}"} for r in range(4)]
    cpu = data["metrics"]["cpu_percent"]
    assert [(c["rank"], c["host"]) for c in cpu] == [(r, f"node{r // 2}") for r in range(4)]
    assert [c["y"] for c in cpu] == [[10.0 * r + i for i in range(6)] for r in range(4)]
    assert cpu[0]["time"][:2] == ["2024-05-01 09:00:00", "2024-05-01 09:00:05"]
    assert cpu[1]["time"][0] == "2024-05-01 09:00:00.250000"
    later = (await http.get(url, params={"after": data["last"]})).json()
    assert later["metrics"] == {} and len(later["ranks"]) == 4

    stats = (await http.get(url, params={"view": "stats"})).json()
    assert stats["view"] == "stats" and stats["bucket_seconds"] == 5.0
    line = stats["metrics"]["cpu_percent"]
    assert line["min"] == [float(i) for i in range(6)]
    assert line["max"] == [30.0 + i for i in range(6)]
    assert line["mean"] == pytest.approx([mean(10.0 * r + i for r in range(4)) for i in range(6)])
    assert line["ranks"] == [4] * 6 and line["total"] == 24 and line["points"] == 6
    assert line["time"][0] == "2024-05-01 09:00:00.062500"  # the mean time of the readings
    memory = stats["metrics"]["gpu0_memory_used_bytes"]
    assert (memory["min"][0], memory["mean"][0], memory["max"][0]) == (1e9, 2.5e9, 4e9)

    few = (await http.get(url, params={"view": "stats", "max_points": 10})).json()
    assert few["bucket_seconds"] == 5.0  # 25 s over 10 buckets: still the interval
    for params, status in [({"view": "nope"}, 400), ({"view": "stats", "after": "x"}, 400)]:
        assert (await http.get(url, params=params)).status_code == status
    assert (await http.get("/api/runs/987654/system", params={"view": "stats"})).status_code == 404


async def test_system_metrics_of_one_process_and_of_none(client, http):
    exp = await sqltrack.AsyncExperiment.create(client, name="single")
    run = await exp.get_run()
    for i in range(3):  # as sqltrack 0.1.x and a single process write them: rank 0, no host
        await client.query(
            "INSERT INTO system_metrics (run_id, time, name, value) VALUES (%s, %s, %s, %s)",
            [run.id, client.dialect.timestamp(START + timedelta(seconds=10 * i)),
             "cpu_percent", 5.0 * i])
    data = (await http.get(f"/api/runs/{run.id}/system")).json()
    assert data["ranks"] == [{"rank": 0, "host": ""}]
    (cpu,) = data["metrics"]["cpu_percent"]
    assert (cpu["rank"], cpu["y"]) == (0, [0.0, 5.0, 10.0])
    stats = (await http.get(f"/api/runs/{run.id}/system", params={"view": "stats"})).json()
    line = stats["metrics"]["cpu_percent"]
    assert line["min"] == line["mean"] == line["max"] == [0.0, 5.0, 10.0]
    assert stats["bucket_seconds"] == 10.0
    none = await exp.get_run()
    for view in ("ranks", "stats"):
        empty = (await http.get(f"/api/runs/{none.id}/system", params={"view": view})).json()
        assert (empty["metrics"], empty["ranks"]) == ({}, [])


async def test_system_stats_buckets_long_runs(client, http):
    run_id = await seed_ranks(client, ranks=2, samples=40, every=1.0)
    stats = (await http.get(f"/api/runs/{run_id}/system",
                            params={"view": "stats", "max_points": 10})).json()
    line = stats["metrics"]["cpu_percent"]
    width = 3925  # ms: 39.25 s from the first reading to the last, in 10 buckets at most
    assert stats["bucket_seconds"] == width / 1000
    # the same from the seeded values: per bucket since 1970, each rank's mean first
    per_rank: dict[int, dict[int, list[float]]] = {}
    for rank in range(2):
        for i in range(40):
            ms = int((START + timedelta(seconds=i + (0.25 if rank == 1 else 0))).timestamp() * 1000)
            per_rank.setdefault(ms // width, {}).setdefault(rank, []).append(10.0 * rank + i)
    buckets = [[mean(v) for v in per_rank[b].values()] for b in sorted(per_rank)]
    assert line["min"] == pytest.approx([min(b) for b in buckets])
    assert line["mean"] == pytest.approx([mean(b) for b in buckets])
    assert line["max"] == pytest.approx([max(b) for b in buckets])
    assert line["ranks"] == [len(b) for b in buckets]
    assert line["points"] == len(buckets) <= 11 and line["total"] == 80
