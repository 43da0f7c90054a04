"""W1, training loop: one run logs 10 float metrics per step, N steps, one row per step.

Every case opens its own connection or client and writes an untimed warm-up step 0
before the clock starts (sqltrack's cases call twice, ``common.WARM_UP``); the median
time per step over the rounds is reported.
Raw-driver baselines insert the same rows into the same ``metrics`` table with a
plain INSERT. sqltrack does more per call: it upserts the row and sets
``runs.time_updated`` (at most once a second of the rows' times, see
``sqltrack.metrics.writer.TOUCH_INTERVAL``); the "sqltrack's SQL by hand" baselines
upsert and set it at every step with the raw driver (what sqltrack did before that
interval); the ``updated=None`` case shows what the remaining touch costs inside
sqltrack.

The buffered cases are compared with the fastest raw way to write a batch with the
same driver, the way sqltrack writes it: for SQLite, multi-row INSERTs of 100 rows a
statement (sqltrack's ``BATCH_STATEMENT_ROWS``) in one transaction; for PostgreSQL, a
binary COPY with the columns' types set (``copy.set_types``). The slower ways
(``executemany`` of one-row INSERTs, a text COPY) are shown beside them for
information only.

The buffered cases and the batch floors write ``BATCH_FACTOR`` times the steps of the
per-step cases (20,000): at 2,000 steps a buffered case's whole timed region is about
30 ms, and the final flush's round trip (timed, as the library defers it) and the
machine's scheduling moved its figure by 1.5x between runs. Every figure is per step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from time import perf_counter
from typing import Any

import aiosqlite
import psycopg
from common import (
    COLUMNS,
    NAMES,
    Env,
    has_buffered_option,
    insert_sql,
    metric_rows,
    pg_new_run,
    pg_new_run_async,
    sqlite_connect,
    sqlite_new_run,
    sync_facade,
    timed_steps_async,
    timed_steps_blocking,
    upsert_sql,
)
from harness import Case, Isolated, Section, Target, measure, median, table_rows

LABEL = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


# -- sqltrack cases ---------------------------------------------------------------
async def sqltrack_async(
    env: Env, engine: str, rows: list[tuple], buffered: bool = False, updated: str | None = "auto"
) -> float:
    """``await run.add_metrics({...}, step=i)`` per step through AsyncClient.

    Buffered: the client has ``buffered=True`` and the final ``run.flush()`` is timed.
    ``updated=None`` leaves ``runs.time_updated`` alone (no touch of the run per step).
    """
    steps = [dict(zip(NAMES, row, strict=True)) for row in rows]
    took, _ = await timed_steps_async(env, engine, "bench-w1", steps, buffered, updated=updated)
    return took


def sqltrack_blocking(env: Env, engine: str, rows: list[tuple], buffered: bool = False) -> float:
    """``run.add_metrics({...}, step=i)`` per step through the sync facade (buffered: as above)."""
    steps = [dict(zip(NAMES, row, strict=True)) for row in rows]
    return timed_steps_blocking(env, engine, "bench-w1", steps, buffered)[0]


# -- SQLite baselines -------------------------------------------------------------
def sqlite3_per_step(env: Env, rows: list[tuple]) -> float:
    """sqlite3: one INSERT and one COMMIT per step."""
    conn = sqlite_connect(env.sqlite_path)
    try:
        run_id = sqlite_new_run(conn, env.experiment_ids["sqlite"])
        sql = insert_sql("?")
        conn.execute(sql, (run_id, 0, 0.0, *rows[0]))
        conn.commit()
        start = perf_counter()
        for step, row in enumerate(rows, 1):
            conn.execute(sql, (run_id, step, 0.0, *row))
            conn.commit()
        return perf_counter() - start
    finally:
        conn.close()


def sqlite3_executemany(env: Env, rows: list[tuple]) -> float:
    """sqlite3: executemany of one-row INSERTs, one transaction (slower than multi-row)."""
    conn = sqlite_connect(env.sqlite_path)
    try:
        run_id = sqlite_new_run(conn, env.experiment_ids["sqlite"])
        start = perf_counter()
        conn.executemany(
            insert_sql("?"), [(run_id, step, 0.0, *row) for step, row in enumerate(rows, 1)]
        )
        conn.commit()
        return perf_counter() - start
    finally:
        conn.close()


#: Rows per multi-row INSERT of the SQLite batch floor (sqltrack's own statement size).
BATCH_ROWS = 100


def multirow_insert_sql(rows: int) -> str:
    """One INSERT of ``rows`` metrics rows (``VALUES (...), (...), ...``)."""
    one = "(" + ", ".join(["?"] * len(COLUMNS)) + ")"
    return f"INSERT INTO metrics ({', '.join(COLUMNS)}) VALUES {', '.join([one] * rows)}"


def sqlite3_multirow(env: Env, rows: list[tuple]) -> float:
    """sqlite3: multi-row INSERTs of ``BATCH_ROWS`` rows each, one transaction (the floor)."""
    conn = sqlite_connect(env.sqlite_path)
    try:
        run_id = sqlite_new_run(conn, env.experiment_ids["sqlite"])
        full = multirow_insert_sql(BATCH_ROWS)
        start = perf_counter()
        for first in range(0, len(rows), BATCH_ROWS):
            chunk = rows[first:first + BATCH_ROWS]
            params = [value for step, row in enumerate(chunk, first + 1)
                      for value in (run_id, step, 0.0, *row)]
            sql = full if len(chunk) == BATCH_ROWS else multirow_insert_sql(len(chunk))
            conn.execute(sql, params)
        conn.commit()
        return perf_counter() - start
    finally:
        conn.close()


def sqlite3_same_sql(env: Env, rows: list[tuple]) -> float:
    """sqlite3 doing sqltrack's work by hand: upsert, set runs.time_updated, COMMIT per step."""
    conn = sqlite_connect(env.sqlite_path)
    try:
        run_id = sqlite_new_run(conn, env.experiment_ids["sqlite"])
        sql, touch = upsert_sql("?"), "UPDATE runs SET time_updated = ? WHERE id = ?"
        start = perf_counter()
        for step, row in enumerate(rows, 1):
            conn.execute(sql, (run_id, step, 0.0, *row))
            conn.execute(touch, (datetime.now(timezone.utc).isoformat(), run_id))
            conn.commit()
        return perf_counter() - start
    finally:
        conn.close()


async def aiosqlite_per_step(env: Env, rows: list[tuple]) -> float:
    """aiosqlite: ``await execute`` and ``await commit`` per step."""
    async with aiosqlite.connect(env.sqlite_path, timeout=60) as conn:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            await conn.execute(f"PRAGMA {pragma}")
        cursor = await conn.execute(
            "INSERT INTO runs (experiment_id) VALUES (?)", (env.experiment_ids["sqlite"],)
        )
        run_id = cursor.lastrowid
        sql = insert_sql("?")
        await conn.execute(sql, (run_id, 0, 0.0, *rows[0]))
        await conn.commit()
        start = perf_counter()
        for step, row in enumerate(rows, 1):
            await conn.execute(sql, (run_id, step, 0.0, *row))
            await conn.commit()
        return perf_counter() - start


# -- PostgreSQL baselines ---------------------------------------------------------
def psycopg_per_step(env: Env, rows: list[tuple]) -> float:
    """psycopg (blocking): one INSERT per step in autocommit."""
    with env.pg_connect() as conn:
        run_id = pg_new_run(conn, env.experiment_ids["postgres"])
        sql = insert_sql("%s")
        conn.execute(sql, (run_id, 0, 0.0, *rows[0]))
        start = perf_counter()
        for step, row in enumerate(rows, 1):
            conn.execute(sql, (run_id, step, 0.0, *row))
        return perf_counter() - start


def psycopg_copy(env: Env, rows: list[tuple]) -> float:
    """psycopg: text COPY of every row in one statement (slower than binary; information)."""
    with env.pg_connect() as conn:
        run_id = pg_new_run(conn, env.experiment_ids["postgres"])
        start = perf_counter()
        with conn.cursor() as cursor:
            with cursor.copy(f"COPY metrics ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for step, row in enumerate(rows, 1):
                    copy.write_row((run_id, step, 0.0, *row))
        return perf_counter() - start


def pg_column_types(conn: psycopg.Connection) -> list[str]:
    """The metrics columns' types, as the server names them (untimed set-up of a COPY)."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'metrics'::regclass AND attnum > 0 AND NOT attisdropped"
    ).fetchall()
    types = dict(rows)
    return [types[column] for column in COLUMNS]


def psycopg_binary_copy(env: Env, rows: list[tuple]) -> float:
    """psycopg: binary COPY of every row in one statement, column types set (the floor)."""
    with env.pg_connect() as conn:
        run_id = pg_new_run(conn, env.experiment_ids["postgres"])
        types = pg_column_types(conn)
        sql = f"COPY metrics ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        start = perf_counter()
        with conn.cursor() as cursor:
            with cursor.copy(sql) as copy:
                copy.set_types(types)
                for step, row in enumerate(rows, 1):
                    copy.write_row((run_id, step, 0.0, *row))
        return perf_counter() - start


def psycopg_same_sql(env: Env, rows: list[tuple]) -> float:
    """psycopg doing sqltrack's work by hand: one upsert that also sets runs.time_updated."""
    touch = "WITH touched AS (UPDATE runs SET time_updated = %s WHERE id = %s) "
    sql = touch + upsert_sql("%s")
    with env.pg_connect() as conn:
        run_id = pg_new_run(conn, env.experiment_ids["postgres"])
        start = perf_counter()
        for step, row in enumerate(rows, 1):
            conn.execute(sql, (datetime.now(timezone.utc), run_id, run_id, step, 0.0, *row))
        return perf_counter() - start


async def psycopg_async_per_step(env: Env, rows: list[tuple]) -> float:
    """psycopg (async): ``await conn.execute`` of one INSERT per step in autocommit."""
    conn = await psycopg.AsyncConnection.connect(env.pg_dsn, **env.pg_kwargs())
    async with conn:
        run_id = await pg_new_run_async(conn, env.experiment_ids["postgres"])
        sql = insert_sql("%s")
        await conn.execute(sql, (run_id, 0, 0.0, *rows[0]))
        start = perf_counter()
        for step, row in enumerate(rows, 1):
            await conn.execute(sql, (run_id, step, 0.0, *row))
        return perf_counter() - start


# -- case lists -------------------------------------------------------------------
@dataclass(frozen=True)
class Baselines:
    """One engine's raw-driver baselines, by role: (case name, function)."""

    per_step: tuple[str, Callable]
    #: The batch floor of the buffered cases: the fastest raw way to write all rows.
    bulk: tuple[str, Callable]
    async_driver: tuple[str, Callable]
    same_sql: tuple[str, Callable]
    #: A slower batch way people also write, shown for information.
    slow_bulk: tuple[str, Callable]


BASELINES = {
    "sqlite": Baselines(
        ("sqlite3 INSERT+COMMIT per step", sqlite3_per_step),
        (f"sqlite3 {BATCH_ROWS}-row INSERTs, one transaction", sqlite3_multirow),
        ("aiosqlite execute+commit per step", aiosqlite_per_step),
        ("sqlite3 sqltrack's SQL by hand (upsert + runs.time_updated + COMMIT) per step",
         sqlite3_same_sql),
        ("sqlite3 executemany of one-row INSERTs, one transaction", sqlite3_executemany),
    ),
    "postgres": Baselines(
        ("psycopg INSERT per step (autocommit)", psycopg_per_step),
        ("psycopg binary COPY of all rows (set_types)", psycopg_binary_copy),
        ("psycopg async INSERT per step (autocommit)", psycopg_async_per_step),
        ("psycopg sqltrack's SQL by hand (upsert + runs.time_updated) per step",
         psycopg_same_sql),
        ("psycopg text COPY of all rows", psycopg_copy),
    ),
}
#: The ratio goals of the write-through cases, against the engine's per-step baseline.
TARGETS = {
    ("sqlite", "async"): Target(4.0),
    ("sqlite", "sync"): Target(6.0),
    ("postgres", "async"): Target(1.3),
    ("postgres", "sync"): Target(1.6),
}
#: Buffered mode, against the engine's batch floor (100-row INSERTs / binary COPY).
BUFFERED_TARGET = Target(2.0)


#: The buffered cases and batch floors write this many times the per-step cases' steps.
BATCH_FACTOR = 10


def per_step_case(function: Callable[..., Any], rows: list[tuple], *args: Any, **kwargs: Any
             ) -> Callable[[], Any]:
    """A case that runs ``function(*args, rows, **kwargs)`` and gives its seconds per step
    (a coroutine's when ``function`` is async)."""
    if asyncio.iscoroutinefunction(function):
        async def timed_async() -> float:
            return await function(*args, rows, **kwargs) / len(rows)
        return timed_async

    def timed() -> float:
        return function(*args, rows, **kwargs) / len(rows)
    return timed


def build_cases(env: Env, rows: list[tuple]) -> list[Case]:
    """Every W1 case of both engines, runnable or marked with why not: the per-step
    cases write ``rows``; the buffered ones and the batch floors ``BATCH_FACTOR`` times
    as many. Each case gives seconds per step."""
    batch_rows = metric_rows(len(rows) * BATCH_FACTOR)
    cases: list[Case] = []
    for engine in ("sqlite", "postgres"):
        cases.extend(engine_cases(env, engine, rows, batch_rows))
    return cases


def engine_cases(env: Env, engine: str, rows: list[tuple], batch_rows: list[tuple]
                 ) -> list[Case]:
    """One engine's baselines, then sqltrack's cases compared with the per-step baseline
    (and, for information, with the async driver and with sqltrack's SQL by hand)."""
    skip = env.skip_reason(engine)
    base = BASELINES[engine]
    first = base.per_step[0]
    cases = [Case(first, per_step_case(base.per_step[1], rows, env), skip)]
    for (name, function), written in ((base.bulk, batch_rows), (base.async_driver, rows),
                                      (base.same_sql, rows), (base.slow_bulk, batch_rows)):
        cases.append(Case(name, per_step_case(function, written, env), skip, baseline=first))
    facade_missing = None if sync_facade() else "sqltrack_sync.Client not available"
    cases.append(Case(
        f"sqltrack async write-through, {LABEL[engine]}",
        per_step_case(sqltrack_async, rows, env, engine), skip,
        baseline=first, target=TARGETS[engine, "async"],
        also=(base.async_driver[0], base.same_sql[0]),
    ))
    cases.append(Case(
        f"sqltrack async write-through, updated=None (no runs touch), {LABEL[engine]}",
        per_step_case(sqltrack_async, rows, env, engine, updated=None), skip,
        baseline=first, also=(base.async_driver[0],),
    ))
    cases.append(Case(
        f"sqltrack sync write-through, {LABEL[engine]}",
        per_step_case(sqltrack_blocking, rows, env, engine), skip or facade_missing,
        baseline=first, target=TARGETS[engine, "sync"], also=(base.same_sql[0],),
    ))
    return cases + buffered_cases(env, engine, batch_rows)


def buffered_cases(env: Env, engine: str, rows: list[tuple]) -> list[Case]:
    """The buffered-mode cases: run when sqltrack has the option, else "not implemented yet"."""
    skip = env.skip_reason(engine)
    if not has_buffered_option():
        skip = skip or "not implemented yet"
    per_step, bulk = BASELINES[engine].per_step[0], BASELINES[engine].bulk[0]
    slow_bulk = BASELINES[engine].slow_bulk[0]
    facade_missing = None if sync_facade() else "sqltrack_sync.Client not available"
    return [
        Case(f"sqltrack async buffered, {LABEL[engine]}",
             per_step_case(sqltrack_async, rows, env, engine, buffered=True), skip,
             baseline=bulk, target=BUFFERED_TARGET, also=(slow_bulk, per_step)),
        Case(f"sqltrack sync buffered, {LABEL[engine]}",
             per_step_case(sqltrack_blocking, rows, env, engine, buffered=True),
             skip or facade_missing, baseline=bulk, target=BUFFERED_TARGET,
             also=(slow_bulk, per_step)),
    ]


# -- report -----------------------------------------------------------------------
def steps_of(env: Env) -> int:
    return 300 if env.quick else 2000


def isolated(env: Env, state: dict) -> Isolated:
    """W1's cases for timing each alone in a fresh process (``run.py --isolated``)."""
    steps = steps_of(env)
    return Isolated(build_cases(env, metric_rows(steps)),
                    lambda values: median(values) * 1e6,
                    lambda us: f"{us:.1f} µs/step", "µs per step (lower is better)")


def run(env: Env, rounds: int) -> Section:
    """Measure W1 and return its table."""
    steps = steps_of(env)
    rows = metric_rows(steps)
    cases = build_cases(env, rows)
    samples = measure(cases, rounds, env.loop)
    micros = {name: median(values) * 1e6 for name, values in samples.items()}
    section = Section(
        "W1 training loop",
        f"One run, 10 float metrics per step, {steps} steps ({steps * BATCH_FACTOR} for the "
        f"buffered cases and the batch floors), {rounds} interleaved rounds. "
        "Median µs per step; ratio = case / baseline (lower is better).",
    )
    section.rows = table_rows(cases, micros, lambda us: f"{us:.1f} µs/step")
    return section
