"""What the run page's system metrics of a many-rank job cost the server: one request of
``/api/runs/{id}/system`` per view (a line per rank and host, or min/mean/max across ranks
computed by the database per bucket of time), in process through the app (httpx).

The run: RANKS ranks on RANKS/4 hosts, NAMES readings each, one sample every 10 s for
SAMPLES samples (RANKS * NAMES * SAMPLES rows). Printed per engine and view: the median
and max wall time of 3 requests, the answer's size and its points.

usage: PYTHONPATH=. python benchmarks/ui_system_ranks.py [--samples N] [sqlite|postgres ...]
(postgres: 127.0.0.1:5432, user postgres, database test; a throwaway schema). With the
default 1,000 samples every line fits in ``max_points`` (2,000) and is sent whole; with
``--samples 8000`` each line is downsampled (by the database: at most 2,000 rows a line
leave it).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import psycopg

import sqltrack
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER

PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres", "dbname": "test"}
RANKS, NAMES, SAMPLES = 16, 8, 1000
START = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)


async def measure(engine: str, kwargs: dict, samples: int) -> None:
    client = sqltrack.AsyncClient(**kwargs)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="ranks")
        run = await exp.get_run()
        rows = [(run.id, client.dialect.timestamp(START + timedelta(seconds=10 * i + rank / 10)),
                 f"reading_{n}", float(rank * i + n), rank, f"node{rank // 4}")
                for rank in range(RANKS) for n in range(NAMES) for i in range(samples)]
        async with client:
            await client.executemany(client.dialect.sql(
                "INSERT INTO system_metrics (run_id, time, name, value, rank, host) "
                "VALUES (%s, %s, %s, %s, %s, %s)"), rows)
        app = create_app(client)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1",
                                     headers={TOKEN_HEADER: app.state.token}) as http:
            for view in ("ranks", "stats"):
                times, size, points = [], 0, 0
                for _ in range(3):
                    began = time.perf_counter()
                    answer = await http.get(f"/api/runs/{run.id}/system",
                                            params={"view": view, "max_points": 2000})
                    times.append(time.perf_counter() - began)
                    assert answer.status_code == 200, answer.text
                    size = len(answer.content)
                    metrics = answer.json()["metrics"]
                    points = sum(c["points"] for lines in metrics.values() for c in (
                        lines if view == "ranks" else [lines]))
                print(f"{engine:8} view={view:5} rows={len(rows):,} "
                      f"median {statistics.median(times):.3f} s max {max(times):.3f} s "
                      f"answer {size / 1e6:.2f} MB points {points:,}")
    finally:
        await client.close()


def main(engines: list[str], samples: int = SAMPLES) -> None:
    for engine in engines:
        if engine == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                asyncio.run(measure(engine, {"engine": "sqlite", "dbpath": f"{tmp}/b.db"},
                                    samples))
        else:
            schema = "bench_" + uuid.uuid4().hex[:8]
            dsn = " ".join(f"{k}={v}" for k, v in PG.items())
            try:
                asyncio.run(measure(engine, {"engine": "postgres", **PG, "schema": schema},
                                    samples))
            finally:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    args = sys.argv[1:]
    count = SAMPLES
    if args[:1] == ["--samples"]:
        count, args = int(args[1]), args[2:]
    main(args or ["sqlite", "postgres"], count)
