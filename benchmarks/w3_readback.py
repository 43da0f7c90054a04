"""W3, read back: every metric of 100 runs x 1,000 steps into Python, both engines.

The rows are loaded once (untimed) by the raw drivers into runs made by sqltrack.
Then one SELECT of all of them (``run_id = ANY(%s)`` on PostgreSQL, ``run_id IN
(?, ...)`` on SQLite, ordered by run and step) is timed: into a list of rows and
into a pandas DataFrame, through ``AsyncClient.execute`` and through the raw driver
(sqlite3 / blocking psycopg). Clients and connections are opened before the clock.
"""

from __future__ import annotations

import functools
from time import perf_counter

from common import COLUMNS, NAMES, Env, insert_sql, metric_rows, sqlite_connect
from harness import Case, Isolated, Section, measure, median, table_rows

import sqltrack

LABEL = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def pandas_missing() -> str | None:
    """Why the DataFrame cases cannot run, or None."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        return "pandas not installed: pip install -e '.[bench]'"
    return None


def to_frame(rows: list) -> object:
    import pandas

    return pandas.DataFrame(rows, columns=COLUMNS)


def select_sql(engine: str, run_count: int) -> str:
    """The read-back query of one engine (parameters: see ``select_params``)."""
    if engine == "postgres":
        where = "run_id = ANY(%s)"
    else:
        where = f"run_id IN ({', '.join('?' * run_count)})"
    return f"SELECT {', '.join(COLUMNS)} FROM metrics WHERE {where} ORDER BY run_id, step"


def select_params(engine: str, run_ids: list[int]) -> list:
    return [run_ids] if engine == "postgres" else list(run_ids)


# -- loading ----------------------------------------------------------------------
async def load(env: Env, engine: str, runs: int, steps: int) -> list[int]:
    """Make ``runs`` runs with sqltrack and fill each with ``steps`` rows by hand."""
    client = sqltrack.AsyncClient(**env.client_kwargs(engine))
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="bench-w3")
        run_ids = [(await experiment.get_run()).id for _ in range(runs)]
    finally:
        await client.close()
    values = metric_rows(steps, seed=3)
    rows = [(run_id, step, 0.0, *row) for run_id in run_ids for step, row in enumerate(values)]
    if engine == "sqlite":
        conn = sqlite_connect(env.sqlite_path)
        with conn:
            conn.executemany(insert_sql("?"), rows)
        conn.close()
    else:
        with env.pg_connect() as conn, conn.cursor() as cursor:
            with cursor.copy(f"COPY metrics ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
    return run_ids


# -- cases ------------------------------------------------------------------------
async def sqltrack_read(env: Env, engine: str, run_ids: list[int], frame: bool) -> float:
    """``await client.execute(SELECT ...)``, optionally into a DataFrame."""
    client = sqltrack.AsyncClient(**env.client_kwargs(engine))
    try:
        await client.execute("SELECT 1")
        start = perf_counter()
        rows = await client.execute(select_sql(engine, len(run_ids)),
                                    select_params(engine, run_ids))
        if frame:
            to_frame(rows)
        seconds = perf_counter() - start
    finally:
        await client.close()
    check_count(rows, run_ids)
    return seconds


def raw_read(env: Env, engine: str, run_ids: list[int], frame: bool) -> float:
    """The raw driver's ``execute(SELECT ...).fetchall()``, optionally into a DataFrame."""
    conn = sqlite_connect(env.sqlite_path) if engine == "sqlite" else env.pg_connect()
    try:
        conn.execute("SELECT 1").fetchall()
        start = perf_counter()
        rows = conn.execute(select_sql(engine, len(run_ids)),
                            select_params(engine, run_ids)).fetchall()
        if frame:
            to_frame(rows)
        seconds = perf_counter() - start
    finally:
        conn.close()
    check_count(rows, run_ids)
    return seconds


def check_count(rows: list, run_ids: list[int]) -> None:
    if not rows or len(rows) % len(run_ids) or len(rows[0]) != 3 + len(NAMES):
        raise RuntimeError(f"read back {len(rows)} rows of {len(run_ids)} runs: wrong shape")


def engine_cases(env: Env, engine: str, run_ids: list[int]) -> list[Case]:
    """Raw rows, raw DataFrame, then sqltrack's two cases compared with them."""
    skip = env.skip_reason(engine)
    frame_skip = skip or pandas_missing()
    label = LABEL[engine]
    raw = "sqlite3" if engine == "sqlite" else "psycopg"
    raw_rows, raw_frame = f"{raw} SELECT -> rows", f"{raw} SELECT -> DataFrame"
    return [
        Case(raw_rows, functools.partial(raw_read, env, engine, run_ids, False), skip),
        Case(raw_frame, functools.partial(raw_read, env, engine, run_ids, True), frame_skip),
        Case(f"sqltrack execute -> rows, {label}",
             functools.partial(sqltrack_read, env, engine, run_ids, False), skip,
             baseline=raw_rows),
        Case(f"sqltrack execute -> DataFrame, {label}",
             functools.partial(sqltrack_read, env, engine, run_ids, True), frame_skip,
             baseline=raw_frame),
    ]


RUNS, STEPS = 100, 1000


def prepare(env: Env) -> dict:
    """Load the runs to read back (untimed); their ids per engine."""
    return {engine: [] if env.skip_reason(engine) else env.loop.run_until_complete(
        load(env, engine, RUNS, STEPS)) for engine in ("sqlite", "postgres")}


def isolated(env: Env, state: dict) -> Isolated:
    """W3's cases for timing each alone in a fresh process (``run.py --isolated``)."""
    cases = [case for engine in ("sqlite", "postgres")
             for case in engine_cases(env, engine, state[engine])]
    return Isolated(cases, lambda values: median(values) * 1e3, lambda ms: f"{ms:.0f} ms",
                    "ms per read-back (lower is better)")


def run(env: Env, rounds: int) -> Section:
    """Measure W3 and return its table."""
    runs, steps = RUNS, STEPS
    state = prepare(env)
    cases: list[Case] = []
    for engine in ("sqlite", "postgres"):
        cases += engine_cases(env, engine, state[engine])
    samples = measure(cases, rounds, env.loop)
    millis = {name: median(values) * 1e3 for name, values in samples.items()}
    total = runs * steps
    section = Section(
        "W3 read back",
        f"All metrics of {runs} runs x {steps:,} steps ({total:,} rows of 13 columns) in one "
        f"SELECT, {rounds} interleaved rounds. Median ms per read-back; ratio = case / baseline "
        "(lower is better).",
    )
    section.rows = table_rows(
        cases, millis, lambda ms: f"{ms:.0f} ms ({total / ms:,.0f}k rows/s)"
    )
    return section
