"""Speed of the view ``metric_values_all`` (docs/metric-storage.md): one run's curve of
one metric, the column budget full (800 columns on PostgreSQL, 1,500 on SQLite) plus 50
long-stored metrics, 3 runs of 1,000 steps; a column metric and a long metric, through
the view and straight from their table.

    PYTHONPATH=. python benchmarks/metric_view_speed.py postgres|sqlite
"""

import asyncio
import sys
import time

import sqltrack

SQLITE = {"engine": "sqlite", "dbpath": "/tmp/metric_view_speed.db"}
POSTGRES = {"engine": "postgres", "host": "127.0.0.1", "user": "postgres", "dbname": "test",
            "schema": "metric_view_speed"}
QUERIES = [
    ("column via view", "SELECT step, value FROM metric_values_all "
                        "WHERE run_id = %s AND name = 'c400' ORDER BY step"),
    ("long via view", "SELECT step, value FROM metric_values_all "
                      "WHERE run_id = %s AND name = 'l10' ORDER BY step"),
    ("column direct", "SELECT step, c400 FROM metrics WHERE run_id = %s ORDER BY step"),
    ("long direct", "SELECT step, value FROM metric_values "
                    "WHERE run_id = %s AND name = 'l10' ORDER BY step"),
]


async def main(engine: str) -> None:
    kw = SQLITE if engine == "sqlite" else POSTGRES
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
    for label, sql in QUERIES:
        await client.query(sql, [run_id])
        started = time.perf_counter()
        for _ in range(5):
            rows = await client.query(sql, [run_id])
        took = (time.perf_counter() - started) / 5 * 1000
        print(f"{engine} {label}: {len(rows)} rows, {took:.1f} ms")
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
