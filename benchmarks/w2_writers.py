"""W2, many writers: concurrent async runs through one pooled AsyncClient (PostgreSQL).

64 tasks (``--quick``: 16), each its own run, write 500 steps (100) of 10 float
metrics through one ``AsyncClient(pool_max_size=10)``. The baseline writes the same
rows from as many tasks through a raw ``psycopg_pool.AsyncConnectionPool(max_size=10)``,
one INSERT per row in autocommit. Both pools start with one connection, and both
create their runs concurrently before the clock starts (which grows the pool).

A thread polls ``pg_stat_activity`` every 20 ms from its own connection, counting
the server connections with the case's application_name: the peak is reported.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from time import perf_counter

import psycopg
import psycopg_pool
from common import NAMES, Env, insert_sql, metric_rows, pg_new_run_async
from harness import DASH, Case, Row, Section, Target, measure, median, table_rows

import sqltrack

POOL_MAX = 10
APP_SQLTRACK = "sqltrack-bench-w2-sqltrack"
APP_RAW = "sqltrack-bench-w2-raw"
SQLTRACK_CASE = "sqltrack AsyncClient, pool_max_size=10"
RAW_CASE = "psycopg_pool AsyncConnectionPool(max_size=10), INSERT per row"


class PeakConnections:
    """``with PeakConnections(env, app) as peak:`` ... ``peak.value`` (polled every 20 ms)."""

    QUERY = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = %s"
    )

    def __init__(self, env: Env, application_name: str, interval: float = 0.02) -> None:
        self._dsn = env.pg_dsn
        self._app = application_name
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self.value = 0

    def __enter__(self) -> PeakConnections:
        self._conn = psycopg.connect(self._dsn, autocommit=True, application_name="sqltrack-bench")
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()

    def _poll(self) -> None:
        while True:
            count = self._conn.execute(self.QUERY, (self._app,)).fetchone()[0]
            self.value = max(self.value, count)
            if self._stop.wait(self._interval):
                return


async def sqltrack_writers(env: Env, runs: int, rows: list[tuple]) -> tuple[float, int]:
    """Each of ``runs`` tasks logs every row to its own run; (seconds, peak connections)."""
    steps = [dict(zip(NAMES, row, strict=True)) for row in rows]
    kwargs = env.client_kwargs("postgres", pool_max_size=POOL_MAX, application_name=APP_SQLTRACK)
    with PeakConnections(env, APP_SQLTRACK) as peak:
        client = sqltrack.AsyncClient(**kwargs)
        try:
            experiment = await sqltrack.AsyncExperiment.create(client, name="bench-w2")
            writers = await asyncio.gather(*(experiment.get_run() for _ in range(runs)))

            async def write(run: sqltrack.AsyncRun) -> None:
                for step, metrics in enumerate(steps):
                    await run.add_metrics(metrics, step=step)

            start = perf_counter()
            await asyncio.gather(*(write(run) for run in writers))
            seconds = perf_counter() - start
        finally:
            await client.close()
    return seconds, peak.value


async def raw_pool_writers(env: Env, runs: int, rows: list[tuple]) -> tuple[float, int]:
    """The same rows through a raw psycopg pool; (seconds, peak connections)."""
    sql = insert_sql("%s")
    with PeakConnections(env, APP_RAW) as peak:
        pool = psycopg_pool.AsyncConnectionPool(
            env.pg_dsn, kwargs=env.pg_kwargs(application_name=APP_RAW),
            min_size=1, max_size=POOL_MAX, open=False,
        )
        await pool.open()
        try:
            async def new_run() -> int:
                async with pool.connection() as conn:
                    return await pg_new_run_async(conn, env.experiment_ids["postgres"])

            run_ids = await asyncio.gather(*(new_run() for _ in range(runs)))

            async def write(run_id: int) -> None:
                for step, row in enumerate(rows):
                    async with pool.connection() as conn:
                        await conn.execute(sql, (run_id, step, 0.0, *row))

            start = perf_counter()
            await asyncio.gather(*(write(run_id) for run_id in run_ids))
            seconds = perf_counter() - start
        finally:
            await pool.close()
    return seconds, peak.value


def run(env: Env, rounds: int) -> Section:
    """Measure W2 and return its table."""
    runs, steps = (16, 100) if env.quick else (64, 500)
    rows = metric_rows(steps, seed=2)
    skip = env.skip_reason("postgres")
    cases = [
        Case(RAW_CASE, functools.partial(raw_pool_writers, env, runs, rows), skip),
        Case(SQLTRACK_CASE, functools.partial(sqltrack_writers, env, runs, rows), skip,
             baseline=RAW_CASE, target=Target(0.9, at_most=False)),
    ]
    samples = measure(cases, rounds, env.loop)
    total = runs * steps
    rates = {name: median([total / seconds for seconds, _ in s]) for name, s in samples.items()}
    section = Section(
        "W2 many writers (PostgreSQL)",
        f"{runs} concurrent async runs x {steps} steps (10 float metrics each), "
        f"{rounds} interleaved rounds. Median rows/s; ratio = case / baseline "
        "(higher is better). Peak = most server connections seen at once (polled every 20 ms).",
    )
    section.rows = table_rows(cases, rates, lambda rate: f"{rate:,.0f} rows/s")
    section.rows += peak_rows(cases, samples)
    return section


def peak_rows(cases: list[Case], samples: dict[str, list[tuple[float, int]]]) -> list[Row]:
    """The highest connection count of each case over all rounds, against the pool bound."""
    rows = []
    for case in cases:
        if case.name not in samples:
            continue
        peak = max(count for _, count in samples[case.name])
        met = "yes" if peak <= POOL_MAX else "**NO**"
        rows.append(Row(f"peak server connections: {case.name}", str(peak),
                        f"pool bound ({POOL_MAX})", DASH, f"≤ {POOL_MAX}", met))
    return rows
