"""W2, many writers: concurrent async runs through one pooled AsyncClient (PostgreSQL).

64 tasks (``--quick``: 16), each its own run, write 500 steps (100) of 10 float
metrics through one ``AsyncClient(pool_max_size=10)``: each ``add_metrics`` returns
once its row is committed, and rows that wait for a connection are combined into one
statement (``sqltrack.metrics.combining``). The baseline does the same by hand through
a raw ``psycopg_pool.AsyncConnectionPool(max_size=10)``: each writer task queues its
row and waits for it to be committed; ten writer tasks, each holding a pooled
connection, take every row waiting in the queue and write them in one multi-row INSERT
(autocommit), then release their writers. One INSERT per row through the pool is shown
for information. The pools start with one connection, and every case creates its runs
concurrently before the clock starts (which grows the pool).

A thread polls ``pg_stat_activity`` every 20 ms from its own connection, counting
the server connections with the case's application_name: the peak is reported.
sqltrack's peak has a target (at most ``pool_max_size``: the client may open no
connection beside its pool); a raw pool's peak is shown without one (psycopg_pool
cannot exceed its own ``max_size``, so such a target could not miss).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from time import perf_counter

import psycopg
import psycopg_pool
from common import COLUMNS, NAMES, Env, insert_sql, metric_rows, pg_new_run_async
from harness import DASH, Case, Isolated, Row, Section, Target, measure, median, table_rows

import sqltrack

POOL_MAX = 10
APP_SQLTRACK = "sqltrack-bench-w2-sqltrack"
APP_RAW = "sqltrack-bench-w2-raw"
SQLTRACK_CASE = "sqltrack AsyncClient, pool_max_size=10"
RAW_CASE = ("psycopg_pool AsyncConnectionPool(max_size=10), waiting rows combined into "
            "one multi-row INSERT")
RAW_PER_ROW_CASE = "psycopg_pool AsyncConnectionPool(max_size=10), INSERT per row"
APP_RAW_PER_ROW = "sqltrack-bench-w2-raw-per-row"


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


def multirow_sql(rows: int) -> str:
    """One INSERT of ``rows`` metrics rows (psycopg placeholders)."""
    one = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    return f"INSERT INTO metrics ({', '.join(COLUMNS)}) VALUES {', '.join([one] * rows)}"


async def raw_combined_writers(env: Env, runs: int, rows: list[tuple]) -> tuple[float, int]:
    """The same rows through a raw psycopg pool, waiting rows combined (the baseline)."""
    with PeakConnections(env, APP_RAW) as peak:
        pool = psycopg_pool.AsyncConnectionPool(
            env.pg_dsn, kwargs=env.pg_kwargs(application_name=APP_RAW),
            min_size=1, max_size=POOL_MAX, open=False,
        )
        await pool.open()
        queue: asyncio.Queue[tuple[tuple, asyncio.Future]] = asyncio.Queue()

        async def writer() -> None:
            while True:
                first = await queue.get()
                batch = [first]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                try:
                    async with pool.connection() as conn:
                        await conn.execute(multirow_sql(len(batch)),
                                           [value for row, _ in batch for value in row])
                except Exception as error:  # noqa: BLE001 - handed to the waiting callers
                    for _, done in batch:
                        done.set_exception(error)
                else:
                    for _, done in batch:
                        done.set_result(None)

        writers = [asyncio.create_task(writer()) for _ in range(POOL_MAX)]
        try:
            async def new_run() -> int:
                async with pool.connection() as conn:
                    return await pg_new_run_async(conn, env.experiment_ids["postgres"])

            run_ids = await asyncio.gather(*(new_run() for _ in range(runs)))
            loop = asyncio.get_running_loop()

            async def write(run_id: int) -> None:
                for step, row in enumerate(rows):
                    done = loop.create_future()
                    queue.put_nowait(((run_id, step, 0.0, *row), done))
                    await done

            start = perf_counter()
            await asyncio.gather(*(write(run_id) for run_id in run_ids))
            seconds = perf_counter() - start
        finally:
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)
            await pool.close()
    return seconds, peak.value


async def raw_pool_writers(env: Env, runs: int, rows: list[tuple]) -> tuple[float, int]:
    """The same rows through a raw psycopg pool, one INSERT per row; (seconds, peak)."""
    sql = insert_sql("%s")
    with PeakConnections(env, APP_RAW_PER_ROW) as peak:
        pool = psycopg_pool.AsyncConnectionPool(
            env.pg_dsn, kwargs=env.pg_kwargs(application_name=APP_RAW_PER_ROW),
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


def sizes(env: Env) -> tuple[int, int]:
    """(runs, steps) of this run."""
    return (16, 100) if env.quick else (64, 500)


def build_cases(env: Env) -> list[Case]:
    runs, steps = sizes(env)
    rows = metric_rows(steps, seed=2)
    skip = env.skip_reason("postgres")
    return [
        Case(RAW_CASE, functools.partial(raw_combined_writers, env, runs, rows), skip),
        Case(RAW_PER_ROW_CASE, functools.partial(raw_pool_writers, env, runs, rows), skip,
             baseline=RAW_CASE),
        Case(SQLTRACK_CASE, functools.partial(sqltrack_writers, env, runs, rows), skip,
             baseline=RAW_CASE, target=Target(0.9, at_most=False), also=(RAW_PER_ROW_CASE,)),
    ]


def rate_of(env: Env) -> Callable[[list], float]:
    """Median rows/s of a case's samples ((seconds, peak) per round)."""
    runs, steps = sizes(env)
    return lambda samples: median([runs * steps / seconds for seconds, _ in samples])


def isolated(env: Env, state: dict) -> Isolated:
    """W2's cases for timing each alone in a fresh process (``run.py --isolated``)."""
    return Isolated(build_cases(env), rate_of(env), lambda rate: f"{rate:,.0f} rows/s",
                    "rows/s (higher is better)")


def run(env: Env, rounds: int) -> Section:
    """Measure W2 and return its table."""
    runs, steps = sizes(env)
    cases = build_cases(env)
    samples = measure(cases, rounds, env.loop)
    rates = {name: rate_of(env)(s) for name, s in samples.items()}
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
        if case.name != SQLTRACK_CASE:  # a raw pool cannot exceed its max_size: no target
            rows.append(Row(f"peak server connections: {case.name}", str(peak)))
            continue
        met = "yes" if peak <= POOL_MAX else "**NO**"
        rows.append(Row(f"peak server connections: {case.name}", str(peak),
                        f"pool bound ({POOL_MAX})", DASH, f"≤ {POOL_MAX}", met))
    return rows
