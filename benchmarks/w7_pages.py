"""W7: the web page at scale: a page of a 100,000-run table, the curves of a 1,000,000-step run.

Per engine (a temporary SQLite file; a throwaway PostgreSQL schema and reader role):

- **pages**: an experiment of 100,000 runs (args, a name, one metric row each);
  ``GET /api/experiments/{id}/table`` for one page of 100 runs (default columns:
  tags and the metric's last value): page 1, page 500, page 500 sorted by status
  descending, page 1 filtered by SQL; page 500 sorted by an arg, by the metric's last
  (descending) and lowest value, by name; page 1 of a search by arg value and by a
  part of the name, of a tag sorted by name; page 300 grouped by an arg. Odd runs have
  the tag ``odd``. Floor: < 200 ms a page.
- **curves**: a run of 1,000,000 steps with 2 metrics; ``/api/runs/{id}/curves`` and
  ``/api/compare/curves`` at ``max_points=1000`` against reading the whole curve with
  the raw driver (sqlite3 / psycopg: ``SELECT step, progress, loss, acc ... ORDER BY``,
  every row fetched). Floor: < 0.5x of the read by hand. The three are timed in
  interleaved rounds (hand, curves, compare; 5 after one warm-up), so the ratio sees
  the same load; the range over the rounds is printed too.

Requests go through the app in-process (httpx's ASGI transport: routing, the queries,
JSON encoding); each figure is the median of 5 after one warm-up.

With ``--table-rows N`` (PostgreSQL), ``metrics`` is filled up to N rows (steps 1, 2, ...
of the 100,000 runs) before the curves are timed, for the issue's other curve target: the
1,000,000-step run's curves in < 150 ms on a 10^7-row table (``--table-rows 10000000``).

With ``--sweep`` (PostgreSQL), the reading of the issue's "What was seen": a third
experiment of 1,000 runs x 10,000 steps (2 metrics), filled after the figures above, so
``metrics`` then holds 10^7 rows of it (plus the rows above); one of its runs'
``/api/runs/{id}/curves`` and a
``/api/compare/curves`` of 20 of its runs, at ``max_points=1000``. Floor: < 150 ms
each.

usage: PYTHONPATH=. python benchmarks/w7_pages.py [--table-rows N] [--sweep]
[sqlite|postgres ...]
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg

import sqltrack
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
RUNS = 100_000
STEPS = 1_000_000
REPEATS = 5
PAGE_FLOOR_MS = 200.0
CURVE_FLOOR = 0.5
BIG_TABLE_FLOOR_MS = 150.0
#: ``--sweep``: runs x steps of the 10^7-row experiment, and the runs compared.
SWEEP_RUNS = 1_000
SWEEP_STEPS = 10_000
SWEEP_COMPARED = 20


async def interleaved(calls: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, list[float]]:
    """Each call's times (ms) over REPEATS rounds, each round calling each once in turn,
    after one warm-up round: figures compared as ratios see the same load."""
    times: dict[str, list[float]] = {label: [] for label in calls}
    for round_ in range(REPEATS + 1):
        for label, call in calls.items():
            start = time.perf_counter()
            await call()
            if round_:
                times[label].append((time.perf_counter() - start) * 1000)
    return times


async def median_ms(call: Callable[[], Awaitable[Any]]) -> float:
    await call()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def start(client: sqltrack.AsyncClient) -> tuple[Any, Any, Any, Any]:
    """The two experiments, the first run (it makes the metric columns) and the long run."""
    async with client:
        big = await sqltrack.AsyncExperiment.create(client, name="w7-runs")
        other = await sqltrack.AsyncExperiment.create(client, name="w7-curve")
        first = await big.get_run()
        await first.add_metrics({"loss": 1.0, "acc": 0.0}, step=0)
        long = await other.get_run()
    return big, other, first, long


def fill(engine: str, raw: Any, big: Any, first: Any, long: Any) -> None:
    """The 100,000-run experiment and the 1,000,000-step run, by the raw driver."""
    if engine == "sqlite":
        raw.execute(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?) "
            "INSERT INTO runs (experiment_id, status, args, extras) SELECT ?, "
            "CASE n % 3 WHEN 0 THEN 'COMPLETED' WHEN 1 THEN 'FAILED' ELSE 'RUNNING' END, "
            "json_object('lr', (n % 5) * 0.01, 'seed', n), json_object('name', 'run-' || n) "
            "FROM g", (RUNS - 1, big.id))
        raw.execute("UPDATE runs SET tags = json_object('odd', NULL) WHERE id % 2 = 1")
        raw.execute("INSERT INTO metrics (run_id, step, progress, loss) "
                    "SELECT id, 0, 0, abs(random() % 1000) / 1000.0 FROM runs "
                    "WHERE experiment_id = ? AND id <> ?", (big.id, first.id))
        raw.execute(
            "WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < ?) "
            "INSERT INTO metrics (run_id, step, progress, loss, acc) "
            "SELECT ?, n, n * 1.0 / ?, 1.0 / (n + 1) + abs(random() % 100) / 1e4, "
            "n * 1.0 / ? FROM g", (STEPS - 1, long.id, STEPS, STEPS))
        raw.commit()
    else:
        raw.execute(
            "INSERT INTO runs (experiment_id, status, args, extras) SELECT %s, "
            "(ARRAY['COMPLETED', 'FAILED', 'RUNNING'])[n %% 3 + 1]::runstatus, "
            "jsonb_build_object('lr', (n %% 5) * 0.01, 'seed', n), "
            "jsonb_build_object('name', 'run-' || n) FROM generate_series(1, %s) n",
            (big.id, RUNS - 1))
        raw.execute("UPDATE runs SET tags = jsonb_build_object('odd', NULL) WHERE id % 2 = 1")
        raw.execute("INSERT INTO metrics (run_id, step, progress, loss) "
                    "SELECT id, 0, 0, random() FROM runs WHERE experiment_id = %s AND id <> %s",
                    (big.id, first.id))
        raw.execute(
            "INSERT INTO metrics (run_id, step, progress, loss, acc) "
            "SELECT %s, n, n::float8 / %s, 1.0 / (n + 1) + random() / 100, n::float8 / %s "
            "FROM generate_series(0, %s) n", (long.id, STEPS, STEPS, STEPS - 1))
        raw.execute("ANALYZE")


def fill_table(raw: Any, big: Any, first: Any, table_rows: int) -> int:
    """PostgreSQL: ``metrics`` filled up to about ``table_rows`` rows with steps 1, 2, ...
    of the 100,000 runs (the long run untouched); the rows it now holds."""
    (rows,), = raw.execute("SELECT count(*) FROM metrics").fetchall()
    steps = max(0, -(-(table_rows - rows) // (RUNS - 1)))
    if steps:
        raw.execute(
            "INSERT INTO metrics (run_id, step, progress, loss) "
            "SELECT r.id, s, 0, random() FROM runs r CROSS JOIN generate_series(1, %s) s "
            "WHERE r.experiment_id = %s AND r.id <> %s", (steps, big.id, first.id))
        raw.execute("VACUUM ANALYZE metrics")
    (rows,), = raw.execute("SELECT count(*) FROM metrics").fetchall()
    return int(rows)


def fill_sweep(raw: Any, experiment_id: int) -> list[int]:
    """PostgreSQL: SWEEP_RUNS runs of SWEEP_STEPS steps each (loss, acc) in the experiment
    ``experiment_id``; their ids."""
    ids = [row[0] for row in raw.execute(
        "INSERT INTO runs (experiment_id, status, args) SELECT %s, 'COMPLETED', "
        "jsonb_build_object('seed', n) FROM generate_series(1, %s) n RETURNING id",
        (experiment_id, SWEEP_RUNS)).fetchall()]
    raw.execute(
        "INSERT INTO metrics (run_id, step, progress, loss, acc) "
        "SELECT r, s, s::float8 / %s, 1.0 / (s + 1) + random() / 100, s::float8 / %s "
        "FROM unnest(%s::bigint[]) r CROSS JOIN generate_series(0, %s) s",
        (SWEEP_STEPS, SWEEP_STEPS, ids, SWEEP_STEPS - 1))
    raw.execute("VACUUM ANALYZE metrics")
    return sorted(ids)


async def measure_sweep(get: Callable[..., Awaitable[Any]], ids: list[int], rows: int) -> None:
    """``--sweep``: one run's curves and a compare of SWEEP_COMPARED runs (every
    SWEEP_RUNS // SWEEP_COMPARED-th run) against BIG_TABLE_FLOOR_MS."""
    chosen = ids[::len(ids) // SWEEP_COMPARED][:SWEEP_COMPARED]
    one = ids[len(ids) // 2]
    curves = await get(f"/api/runs/{one}/curves", max_points=1000)
    assert curves["metrics"]["loss"]["total"] == SWEEP_STEPS
    compared = await get("/api/compare/curves", runs=",".join(map(str, chosen)),
                         max_points=1000)
    assert len(compared["runs"]) == SWEEP_COMPARED
    for label, call in (
        ("sweep run curves", lambda: get(f"/api/runs/{one}/curves", max_points=1000)),
        (f"sweep compare of {SWEEP_COMPARED}",
         lambda: get("/api/compare/curves", runs=",".join(map(str, chosen)),
                     max_points=1000)),
    ):
        ms = await median_ms(call)
        verdict = "ok" if ms < BIG_TABLE_FLOOR_MS else "OVER"
        print(f"  {label:22s} ({SWEEP_STEPS:,} steps a run; metrics holds {rows:,} rows) "
              f"{ms:8.1f} ms (floor {BIG_TABLE_FLOOR_MS:.0f} ms: {verdict})")


async def measure(engine: str, table_rows: int = 0, sweep: bool = False) -> None:
    directory = tempfile.mkdtemp(prefix="sqltrack-w7-")
    schema = "sqltrack_w7_" + uuid.uuid4().hex[:8]
    role = "sqltrack_w7_" + uuid.uuid4().hex[:8]
    raw: Any
    if engine == "sqlite":
        path = os.path.join(directory, "w7.db")
        client = sqltrack.AsyncClient(engine="sqlite", dbpath=path)
    else:
        client = sqltrack.AsyncClient(engine="postgres", host="127.0.0.1", port="5432",
                                      user="postgres", dbname="test", schema=schema)
    try:
        big, _, first, long = await start(client)
        swept = None
        if sweep and engine == "postgres":
            async with client:
                swept = await sqltrack.AsyncExperiment.create(client, name="w7-sweep")
        if engine == "sqlite":
            raw = sqlite3.connect(path)
        else:
            raw = psycopg.connect(PG_DSN, autocommit=True, options=f"-c search_path={schema}")
        made = time.perf_counter()
        fill(engine, raw, big, first, long)
        experiment, run = big.id, long.id
        rows = fill_table(raw, big, first, table_rows) if table_rows and engine == "postgres" \
            else 0
        async with client:
            print(f"{engine}: filled in {time.perf_counter() - made:.1f} s "
                  f"({RUNS:,} runs; a run of {STEPS:,} steps"
                  + (f"; metrics holds {rows:,} rows)" if rows else ")"))
            reader = None
            if engine == "postgres":
                await sqltrack.setup_reader(client, role)
                reader = role
            app = create_app(client, reader=reader, allow_superuser=reader is not None)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                         headers={TOKEN_HEADER: app.state.token},
                                         timeout=120) as http:
                async def get(url: str, **params: Any) -> Any:
                    response = await http.get(url, params=params)
                    response.raise_for_status()
                    return response.json()

                table = f"/api/experiments/{experiment}/table"
                check = await get(table, page=500, per_page=100)
                assert check["total"] == RUNS and len(check["runs"]) == 100, check["total"]
                for params in ({"sort": "args.lr"}, {"sort": "name", "tag": "odd"},
                               {"group": "args.lr"}):  # the database reads one page
                    assert (await get(table, page=2, per_page=100, **params))["read"] == 100
                cases = {
                    "page 1 of 1,000": {"page": 1, "per_page": 100},
                    "page 500": {"page": 500, "per_page": 100},
                    "page 500 by status desc": {"page": 500, "per_page": 100,
                                                "sort": "status", "order": "desc"},
                    "page 1 of an SQL filter": {"page": 1, "per_page": 100,
                                                "filter": "status = 'FAILED'"},
                    "page 500 by args.lr": {"page": 500, "per_page": 100, "sort": "args.lr"},
                    "page 500 by last.loss desc": {"page": 500, "per_page": 100,
                                                   "sort": "last.loss", "order": "desc"},
                    "page 500 by min.loss": {"page": 500, "per_page": 100, "sort": "min.loss"},
                    "page 500 by name": {"page": 500, "per_page": 100, "sort": "name"},
                    "page 1 search lr=0.02": {"page": 1, "per_page": 100,
                                              "search": "lr=0.02", "sort": "args.seed"},
                    "page 1 search run-9999": {"page": 1, "per_page": 100,
                                               "search": "run-9999"},
                    "page 1 tag by name": {"page": 1, "per_page": 100, "tag": "odd",
                                           "sort": "name"},
                    "page 300 grouped by args.lr": {"page": 300, "per_page": 100,
                                                    "group": "args.lr", "sort": "name"},
                }
                for label, params in cases.items():
                    ms = await median_ms(lambda p=params: get(table, **p))
                    verdict = "ok" if ms < PAGE_FLOOR_MS else "OVER"
                    print(f"  table {label:26s} {ms:8.1f} ms  (floor {PAGE_FLOOR_MS:.0f} ms: "
                          f"{verdict})")

                def by_hand() -> int:
                    sql = ("SELECT step, progress, loss, acc FROM metrics WHERE run_id = "
                           + ("?" if engine == "sqlite" else "%s") + " ORDER BY step, progress")
                    return len(raw.execute(sql, (run,)).fetchall())

                async def hand() -> int:
                    return by_hand()

                assert by_hand() == STEPS
                curves = await get(f"/api/runs/{run}/curves", max_points=1000)
                assert curves["metrics"]["loss"]["total"] == STEPS
                times = await interleaved({
                    "by hand": hand,
                    "run curves": lambda: get(f"/api/runs/{run}/curves", max_points=1000),
                    "compare curves": lambda: get("/api/compare/curves", runs=str(run),
                                                  max_points=1000),
                })
                hand_ms = statistics.median(times.pop("by hand"))
                print(f"  whole curve read by hand ({STEPS:,} rows, 2 metrics) {hand_ms:8.1f} ms")
                for label, rounds in times.items():
                    ms = statistics.median(rounds)
                    ratio = ms / hand_ms
                    verdict = "ok" if ratio < CURVE_FLOOR else "OVER"
                    print(f"  {label:16s} max_points=1000 {ms:8.1f} ms = {ratio:.2f}x by hand "
                          f"(floor {CURVE_FLOOR}x: {verdict}; rounds {min(rounds):.0f}-"
                          f"{max(rounds):.0f} ms)")
                    if rows:
                        verdict = "ok" if ms < BIG_TABLE_FLOOR_MS else "OVER"
                        print(f"  {label:16s} in a table of {rows:,} rows: {ms:.1f} ms "
                              f"(floor {BIG_TABLE_FLOOR_MS:.0f} ms: {verdict})")
                if swept is not None:  # filled now: the figures above are of the table
                    # without it, as before
                    sweep_ids = fill_sweep(raw, swept.id)
                    (total,), = raw.execute("SELECT count(*) FROM metrics").fetchall()
                    await measure_sweep(get, sweep_ids, int(total))
            raw.close()
    finally:
        await client.close()
        if engine == "postgres":
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                [role]).fetchone():
                    conn.execute(f'DROP OWNED BY "{role}"')
                    conn.execute(f'DROP ROLE "{role}"')
        else:
            for name in os.listdir(directory):
                os.remove(os.path.join(directory, name))
            os.rmdir(directory)


def main(args: list[str]) -> None:
    table_rows = 0
    if "--table-rows" in args:
        at = args.index("--table-rows")
        table_rows = int(args[at + 1])
        del args[at:at + 2]
    sweep = "--sweep" in args
    args = [a for a in args if a != "--sweep"]
    for engine in args or ["sqlite", "postgres"]:
        asyncio.run(measure(engine, table_rows, sweep))


if __name__ == "__main__":
    main(sys.argv[1:])
