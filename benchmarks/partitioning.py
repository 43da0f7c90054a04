"""One big server, partitioned or not (issue 20, Required 5): the same data in a plain
database and in one whose ``metrics`` and ``metric_values`` are hash-partitioned by run id
(the setting ``partitions``), timed for what a team does on a big server:

- one run's curve: ``sqltrack.read.queries.metric_series`` of a column metric (median of 20
  runs picked at random, warm);
- the runs table of an experiment: ``queries.list_runs`` with the latest value of two
  column metrics and one long metric (median of 10 experiments' tables);
- deleting an experiment (one tenth of the rows, cascading from ``experiments``);
- ``VACUUM`` of ``metrics`` and ``metric_values`` after that delete.

``--rows`` rows of ``metrics`` (default 10^6; the issue's figure: ``--rows 10000000``) over
1,000 runs in 10 experiments, two metric columns per row and one long metric every tenth
step (``metric_values``: a tenth as many rows). The rows are made by the server (INSERT ...
SELECT generate_series), then ``VACUUM ANALYZE``; each variant gets a fresh schema
(dropped after unless ``--keep``). Figures in seconds.

    PYTHONPATH=. python benchmarks/partitioning.py [--rows N] [--partitions 16]
        [--dsn "host=127.0.0.1 user=postgres dbname=test"]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

import sqltrack
from sqltrack.read import queries

RUNS = 1000
EXPERIMENTS = 10


def raw(dsn: str, schema: str, sql: str, params: Any = ()) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def timed(dsn: str, schema: str, sql: str) -> float:
    start = time.perf_counter()
    raw(dsn, schema, sql)
    return time.perf_counter() - start


async def variant(dsn: str, rows: int, partitions: int, keep: bool) -> dict[str, Any]:
    """Load the data into a fresh schema (``partitions``: 0 = plain) and time the four things."""
    schema = f"bench_partitioning_{partitions}"
    raw(dsn, "public", f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    kw = {"engine": "postgres", **conninfo_to_dict(dsn), "schema": schema,
          "partitions": partitions}
    steps = rows // RUNS
    client = sqltrack.AsyncClient(**kw)
    try:
        experiments = []
        for e in range(EXPERIMENTS):
            experiments.append(await sqltrack.AsyncExperiment.create(client, name=f"e{e}"))
        first = await experiments[0].get_run()  # the metric columns and the long name
        await first.add_metrics({"loss": 0.5, "acc": 0.5}, step=0)
        await client.execute("INSERT INTO metric_names (name, kind) VALUES ('lr', 'float')")
        start = time.perf_counter()
        await client.execute(
            "INSERT INTO runs (experiment_id, status) SELECT e.id, 'COMPLETED' "
            "FROM experiments e, generate_series(1, %s) WHERE true ORDER BY 1",
            [RUNS // EXPERIMENTS])
        await client.execute(
            "INSERT INTO metrics (run_id, step, progress, loss, acc) SELECT r.id, s, 0, "
            "1.0 / (s + 1), random() FROM runs r, generate_series(0, %s) AS s "
            "ON CONFLICT DO NOTHING", [steps - 1])
        await client.execute(
            "INSERT INTO metric_values (run_id, step, progress, name, value) SELECT r.id, s, "
            "0, 'lr', 0.001 FROM runs r, generate_series(0, %s, 10) AS s", [steps - 1])
        load = time.perf_counter() - start
        raw(dsn, schema, "VACUUM ANALYZE")
        run_ids = [r[0] for r in await client.query("SELECT id FROM runs ORDER BY id")]
        count = (await client.query("SELECT count(*) FROM metrics"))[0][0]
        pick = random.Random(7)
        curve = []
        for run_id in [run_ids[0], *pick.sample(run_ids, 20)]:  # the first: warm-up
            begin = time.perf_counter()
            series = await queries.metric_series(client, run_id, "loss")
            curve.append(time.perf_counter() - begin)
            assert len(series) == steps
        table = []
        wanted = {"loss": "float", "acc": "float", "lr": "float"}
        for exp in [experiments[0], *experiments]:
            begin = time.perf_counter()
            listed = await queries.list_runs(client, experiment_id=exp.id, metrics=wanted)
            table.append(time.perf_counter() - begin)
            assert len(listed) in (RUNS // EXPERIMENTS, RUNS // EXPERIMENTS + 1)
        begin = time.perf_counter()
        await client.execute("DELETE FROM experiments WHERE id = %s", [experiments[-1].id])
        delete = time.perf_counter() - begin
    finally:
        await client.close()
    vacuum = timed(dsn, schema, "VACUUM metrics, metric_values")
    size = raw(dsn, schema, "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
               "WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 't')",
               [schema])[0][0]
    if not keep:
        raw(dsn, "public", f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return {"rows": count, "load": load, "curve": statistics.median(curve[1:]),
            "runs_table": statistics.median(table[1:]), "delete": delete, "vacuum": vacuum,
            "size_mb": int(size) / 2**20}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10**6)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=test")
    parser.add_argument("--keep", action="store_true", help="keep the schemas")
    args = parser.parse_args()
    print(f"rows={args.rows:,} runs={RUNS} experiments={EXPERIMENTS} "
          f"(seconds; curve and runs table: medians)")
    print(f"{'variant':<14}{'rows':>10}{'load':>8}{'curve':>9}{'runs tbl':>10}"
          f"{'delete exp':>12}{'VACUUM':>9}{'MB':>8}")
    for partitions in (0, args.partitions):
        r = await variant(args.dsn, args.rows, partitions, args.keep)
        name = "plain" if not partitions else f"hash x{partitions}"
        print(f"{name:<14}{r['rows']:>10,}{r['load']:>8.1f}{r['curve']:>9.4f}"
              f"{r['runs_table']:>10.4f}{r['delete']:>12.2f}{r['vacuum']:>9.2f}"
              f"{r['size_mb']:>8.0f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
