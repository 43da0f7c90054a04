"""WC, one server against a Citus cluster: W2's many writers and a per-run read.

The same sqltrack cases run against this run's PostgreSQL server and against a Citus
coordinator with its workers (``run.py --citus-dsn DSN``; ``../shared/vendor/citus/
cluster.sh start DIR PORT 2`` prints one), interleaved in rounds so both see the same
machine noise. Each side gets a schema of its own; on the coordinator sqltrack's set-up
distributes the tables by itself (runs by id, metrics co-located by run id).

- Writers: W2's sqltrack case (``AsyncClient(pool_max_size=10)``, concurrent async
  runs, each ``add_metrics`` committed before it returns), smaller: 16 runs x 200 steps.
- Per-run read: one run's 10,000 metric rows (10 floats each, loaded untimed) read in
  step order through ``AsyncClient.query``, and through a raw psycopg connection.

On one 2-core machine the cluster cannot be faster (its coordinator and two workers
share the same cores, and every statement takes an extra hop): the ratio cluster /
server is recorded, with no target.
"""

from __future__ import annotations

import dataclasses
import functools
from time import perf_counter

import psycopg
from common import COLUMNS, NAMES, Env, metric_rows
from harness import Case, Section, measure, median, table_rows
from w2_writers import POOL_MAX, sqltrack_writers

import sqltrack

READ_STEPS = 10_000
SIDES = {"server": "one PostgreSQL server", "citus": "Citus coordinator + 2 workers"}


def sizes(env: Env) -> tuple[int, int]:
    """(runs, steps) of the writers case."""
    return (8, 50) if env.quick else (16, 200)


def read_sql() -> str:
    return f"SELECT {', '.join(COLUMNS)} FROM metrics WHERE run_id = %s ORDER BY step, progress"


async def load_run(env: Env, steps: int) -> int:
    """A run made by sqltrack, filled by hand with ``steps`` rows (untimed)."""
    client = sqltrack.AsyncClient(**env.client_kwargs("postgres"))
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="bench-wc-read")
        run = await experiment.get_run()
        await run.add_metrics(dict.fromkeys(NAMES, 0.0), step=-1)  # the columns exist
        run_id = run.id
    finally:
        await client.close()
    with env.pg_connect() as conn, conn.cursor() as cursor:
        with cursor.copy(f"COPY metrics ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for step, row in enumerate(metric_rows(steps, seed=5)):
                copy.write_row((run_id, step, 0.0, *row))
    return run_id


async def sqltrack_read(env: Env, run_id: int) -> float:
    client = sqltrack.AsyncClient(**env.client_kwargs("postgres"))
    try:
        await client.query("SELECT 1")
        start = perf_counter()
        rows = await client.query(read_sql(), [run_id])
        seconds = perf_counter() - start
    finally:
        await client.close()
    assert len(rows) == READ_STEPS + 1, len(rows)
    return seconds


def raw_read(env: Env, run_id: int) -> float:
    with env.pg_connect() as conn:
        conn.execute("SELECT 1")
        start = perf_counter()
        rows = conn.execute(read_sql(), [run_id]).fetchall()
        seconds = perf_counter() - start
    assert len(rows) == READ_STEPS + 1, len(rows)
    return seconds


def writer_name(side: str) -> str:
    return f"writers: sqltrack AsyncClient, pool_max_size={POOL_MAX}, {SIDES[side]}"


def read_name(side: str, how: str) -> str:
    return f"per-run read: {how}, {SIDES[side]}"


def durability(dsn: str | None) -> str:
    """The server's fsync / synchronous_commit, which decide what a commit costs."""
    if not dsn:
        return "n/a"
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            fsync = conn.execute("SHOW fsync").fetchone()[0]
            commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
    except psycopg.Error:
        return "n/a"
    return f"fsync={fsync}, synchronous_commit={commit}"


def run(env: Env, citus_dsn: str | None, rounds: int) -> Section:
    """Measure WC (every case n/a without ``citus_dsn``) and return its table."""
    runs, steps = sizes(env)
    section = Section(
        "WC one server against a Citus cluster (PostgreSQL)",
        f"Writers: {runs} concurrent async runs x {steps} steps (10 float metrics each), "
        f"median rows/s. Per-run read: one run of {READ_STEPS:,} rows in step order, median "
        f"ms. {rounds} interleaved rounds; ratio = cluster / server (no target: on one "
        "2-core machine the cluster shares the cores and adds a hop). Durability: server "
        f"{durability(env.pg_dsn)}; coordinator {durability(citus_dsn)} (cluster.sh's "
        "nodes run with fsync off, so a commit costs them less than the server's).",
    )
    skip = env.skip_reason("postgres") or (
        None if citus_dsn else "no Citus coordinator: run.py --citus-dsn DSN")
    cluster = dataclasses.replace(env, pg_dsn=citus_dsn or env.pg_dsn,
                                  pg_schema=env.pg_schema + "_citus", experiment_ids={})
    try:
        if skip is None:
            cluster.setup()
            skip = cluster.skip_reason("postgres")
        envs = {"server": env, "citus": cluster}
        rows = metric_rows(steps, seed=2)
        writers = [
            Case(writer_name(side), functools.partial(sqltrack_writers, envs[side], runs, rows),
                 skip, baseline=None if side == "server" else writer_name("server"))
            for side in SIDES
        ]
        samples = measure(writers, rounds, env.loop)
        rates = {name: median([runs * steps / seconds for seconds, _ in s])
                 for name, s in samples.items()}
        section.rows = table_rows(writers, rates, lambda rate: f"{rate:,.0f} rows/s")
        run_ids = ({side: env.loop.run_until_complete(load_run(envs[side], READ_STEPS))
                    for side in SIDES} if skip is None else {})
        reads = []
        for side in SIDES:
            for how, reader in (("sqltrack AsyncClient.query", sqltrack_read),
                                ("raw psycopg", raw_read)):
                work = (functools.partial(reader, envs[side], run_ids[side])
                        if skip is None else None)
                reads.append(Case(read_name(side, how), work, skip,
                                  baseline=None if side == "server" else read_name("server", how)))
        times = {name: median(s) * 1000 for name, s in measure(reads, rounds, env.loop).items()}
        section.rows += table_rows(reads, times, lambda ms: f"{ms:.1f} ms")
    finally:
        if cluster.experiment_ids:
            with psycopg.connect(cluster.pg_dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{cluster.pg_schema}" CASCADE')
    return section
