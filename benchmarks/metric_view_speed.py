"""Speed of the view ``metric_values_all`` (docs/metric-storage.md): one run's curve of
one metric, the column budget full (800 columns on PostgreSQL, 1,500 on SQLite) plus 50
long-stored metrics, 3 runs of 1,000 steps; a column metric and a long metric, through
the view, straight from their table, through ``sqltrack.read.queries.metric_series``
(which finds where the name lives, then reads it straight; its look-ups included) and,
on PostgreSQL, through the SQL function ``metric_series(run, name)`` (the same in SQL).
A fresh database each time (the schema or file is made again).

    PYTHONPATH=. python benchmarks/metric_view_speed.py postgres|sqlite
"""

import asyncio
import os
import sys
import time

import psycopg

import sqltrack
from sqltrack.read import queries

SQLITE = {"engine": "sqlite", "dbpath": "/tmp/metric_view_speed.db"}
POSTGRES = {"engine": "postgres", "host": "127.0.0.1", "user": "postgres", "dbname": "test",
            "schema": "metric_view_speed"}
#: Reads timed per figure (the view's: 5, it is slow), the mean reported.
REPS = 20
QUERIES = [
    ("column via view", "SELECT step, value FROM metric_values_all "
                        "WHERE run_id = %s AND name = 'c400' ORDER BY step"),
    ("long via view", "SELECT step, value FROM metric_values_all "
                      "WHERE run_id = %s AND name = 'l10' ORDER BY step"),
    ("column direct", "SELECT step, c400 FROM metrics WHERE run_id = %s ORDER BY step"),
    ("long direct", "SELECT step, value FROM metric_values "
                    "WHERE run_id = %s AND name = 'l10' ORDER BY step"),
]
#: PostgreSQL only: the SQL function (schema mark 7) that finds where the name lives.
PG_QUERIES = [
    ("column via SQL metric_series", "SELECT step, value FROM metric_series(%s, 'c400')"),
    ("long via SQL metric_series", "SELECT step, value FROM metric_series(%s, 'l10')"),
]


async def main(engine: str) -> None:
    kw = SQLITE if engine == "sqlite" else POSTGRES
    if engine == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(SQLITE["dbpath"] + suffix):
                os.remove(SQLITE["dbpath"] + suffix)
    else:
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test",
                             autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS metric_view_speed CASCADE")
    width = 800 if engine == "postgres" else 1500
    client = sqltrack.AsyncClient(**kw)
    experiment = await sqltrack.AsyncExperiment.create(client, name="view-speed")
    runs = []
    for _ in range(3):
        run = await experiment.get_run()
        runs.append(run)
        await run.set_buffered(flush_rows=200)
        for step in range(1000):
            await run.add_metrics({**{f"c{i}": step + i * 0.001 for i in range(width)},
                                   **{f"l{i}": step * 1.0 for i in range(50)}}, step=step)
        await run.flush()
    run_id = runs[1].id
    for label, sql in QUERIES + (PG_QUERIES if engine == "postgres" else []):
        await client.query(sql, [run_id])
        reps = 5 if "view" in label else REPS
        started = time.perf_counter()
        for _ in range(reps):
            rows = await client.query(sql, [run_id])
        took = (time.perf_counter() - started) / reps * 1000
        print(f"{engine} {label}: {len(rows)} rows, {took:.1f} ms")
    for label, name in (("column via metric_series", "c400"), ("long via metric_series", "l10")):
        await queries.metric_series(client, run_id, name)
        started = time.perf_counter()
        for _ in range(REPS):
            series = await queries.metric_series(client, run_id, name)
        took = (time.perf_counter() - started) / REPS * 1000
        print(f"{engine} {label}: {len(series)} rows, {took:.1f} ms")
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
