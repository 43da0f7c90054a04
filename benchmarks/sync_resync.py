"""Re-sync with nothing new: 20 runs x 10,000 rows of 4 metrics (SQLite file -> target).

Prints the median of 20 re-syncs (each a fresh pair of clients, as `sqltrack sync` does).
usage: PYTHONPATH=. python benchmarks/sync_resync.py sqlite|postgres
(postgres: the target is 127.0.0.1:5432, user postgres, database test)
"""
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid

import psycopg

import sqltrack
from sqltrack.copy.transfer import sync


async def main(target_engine):
    d = tempfile.mkdtemp()
    src_kw = dict(engine="sqlite", dbpath=os.path.join(d, "src.db"))
    if target_engine == "sqlite":
        dst_kw = dict(engine="sqlite", dbpath=os.path.join(d, "dst.db"))
    else:
        dst_kw = dict(engine="postgres", host="127.0.0.1", port=5432, user="postgres",
                      dbname="test", schema="bench_" + uuid.uuid4().hex[:8])
    src = sqltrack.AsyncClient(**src_kw)
    exp = await sqltrack.AsyncExperiment.create(src, name="bench")
    ids = []
    for _ in range(20):
        run = await exp.get_run()
        await run.add_metrics({"loss": 0.5, "seen": 1, "best": True, "phase": "train"}, step=0)
        ids.append(run.id)
    await src.close()
    with sqlite3.connect(src_kw["dbpath"]) as conn:
        for rid in ids:
            conn.executemany(
                "INSERT INTO metrics (run_id, step, progress, loss, seen, best, phase) "
                "VALUES (?, ?, 0.0, ?, ?, ?, ?)",
                [(rid, s, 1.0 / (s + 1), s * 32, s % 7 == 0, "train") for s in range(1, 10_000)])
    async def once():
        a, b = sqltrack.AsyncClient(**src_kw), sqltrack.AsyncClient(**dst_kw)
        try:
            t = time.perf_counter()
            s = await sync(a, b)
            return time.perf_counter() - t, s
        finally:
            await a.close()
            await b.close()
    first, s = await once()
    print("first sync", round(first, 2), s)
    times = []
    for _ in range(20):
        t, s = await once()
        assert s.metric_rows == 0, s
        times.append(t)
    print(f"{target_engine}: re-sync with nothing new: median {statistics.median(times):.3f} s "
          f"min {min(times):.3f} max {max(times):.3f} (20 re-syncs)")
    if target_engine == "postgres":
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as c:
            c.execute(f'DROP SCHEMA "{dst_kw["schema"]}" CASCADE')

asyncio.run(main(sys.argv[1]))
