"""W6, wide rows: one run logs K float metrics per step, K = 100, 1,000 and 10,000.

Both engines, both APIs, write-through and buffered, against the raw drivers writing
the same rows into the same layout in the same process run. The layout is sqltrack's
own: the first names of the column budget (``metric_columns``: 800 on PostgreSQL, 1,500
on SQLite, the ten W1 columns included) are columns of ``metrics``, every further name
is rows of the long table ``metric_values`` (docs/metric-storage.md). One untimed
sqltrack call logs all 10,000 names once before the cases run, so every case (and
every baseline) finds the same places. Every case writes about ``VALUES_PER_CASE``
values (K = 100: 1,000 steps; 1,000: 100; 10,000: 10) into a run of its own, which is
deleted, untimed, after it.
Before the clock, each write-through case and per-step floor writes step 0 untimed (the
sqltrack cases call twice, ``common.WARM_UP``: the second call is the first on the path
the timed ones take), so a connection's first statement at that width is not timed.

Baselines per engine (raw driver, the same rows split the same way):

- per-step floor (write-through's): one transaction per step. SQLite: the ``metrics``
  row, the step's long values in multi-row INSERTs, COMMIT. PostgreSQL: one statement
  in autocommit, the long values ``INSERT ... SELECT FROM unnest(names, values)`` as a
  CTE of the ``metrics`` INSERT.
- batch floor (buffered's): every row in one transaction. SQLite: multi-row INSERTs
  (100 rows a statement, fewer for rows wider than SQLite's 32,766 parameters allow),
  but ``metrics`` rows of more than ``WIDE_ROW_PARAMETERS`` by one ``executemany`` of
  the one-row INSERT (the faster way for them: 1,003 parameters about 45 µs of CPU a
  row against 63 µs multi-row); PostgreSQL: binary COPY with the columns' types set,
  into ``metrics`` and into ``metric_values``.

Targets: buffered <= 1.3x of the batch floor and never slower than write-through
(ratio buffered / write-through <= 1.0); write-through <= 1.3x of the per-step floor.
Figures: median µs per step and values per second.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from operator import itemgetter
from time import perf_counter
from typing import Any

from common import (
    Env,
    pg_new_run,
    sqlite_connect,
    sqlite_timed_run,
    sync_facade,
    timed_steps_async,
    timed_steps_blocking,
)
from harness import Case, Section, Target, compare, measure, median, table_rows

import sqltrack
from sqltrack.read import queries

LABEL = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
#: Metrics per step of the three tables.
WIDTHS = (100, 1_000, 10_000)
#: Every name W6 logs (a width's names are the first ``k`` of them).
NAMES = tuple(f"w{i}" for i in range(max(WIDTHS)))
#: Values each case writes (quick: a tenth).
VALUES_PER_CASE = 100_000
#: Rows per multi-row INSERT of the SQLite floors (sqltrack's statement size).
BATCH_ROWS = 100
#: SQLite's default limit of parameters per statement.
SQLITE_PARAMETERS = 32_766
#: ``metrics`` rows of more parameters than this go by executemany of the one-row
#: INSERT in the SQLite batch floor (faster than multi-row statements for them).
WIDE_ROW_PARAMETERS = 200
WRITE_THROUGH_TARGET = Target(1.3)
BUFFERED_TARGET = Target(1.3)
#: Buffered against write-through of the same engine and API: never slower.
NOT_SLOWER = Target(1.0)

#: The metric columns of each database after the layout step: (schema or file, engine).
_LAYOUT: dict[tuple[str, str], frozenset[str]] = {}


# -- the layout ---------------------------------------------------------------------
def columns_of(env: Env, engine: str) -> frozenset[str]:
    """The W6 names that are columns of ``metrics`` (the rest are long-stored), fixed by
    one untimed sqltrack call that logs every name once (the first call places them)."""
    key = (env.pg_schema if engine == "postgres" else env.sqlite_path, engine)
    if key not in _LAYOUT:
        _LAYOUT[key] = env.loop.run_until_complete(_place_names(env, engine))
    return _LAYOUT[key]


async def _place_names(env: Env, engine: str) -> frozenset[str]:
    client = sqltrack.AsyncClient(**env.client_kwargs(engine))
    try:
        run = await (await sqltrack.AsyncExperiment.create(client, name="bench-w6")).get_run()
        await run.add_metrics(dict.fromkeys(NAMES, 0.0), step=0)
        await client.query("DELETE FROM runs WHERE id = %s", [run.id])
        return frozenset(n for n in await queries.metric_columns(client) if n in NAMES)
    finally:
        await client.close()


class Split:
    """A width's names split by place: ``columns`` and ``long`` (in row order), and the
    pickers that take each part's values from a row."""

    def __init__(self, names: Sequence[str], columns: frozenset[str]) -> None:
        self.columns = [n for n in names if n in columns]
        self.long = [n for n in names if n not in columns]
        at = {name: index for index, name in enumerate(names)}
        self.pick_columns = _picker([at[n] for n in self.columns])
        self.pick_long = _picker([at[n] for n in self.long])


def _picker(positions: list[int]) -> Any:
    if len(positions) > 1:
        return itemgetter(*positions)
    if positions:
        only = positions[0]
        return lambda row: (row[only],)
    return lambda row: ()


def wide_rows(width: int, steps: int, seed: int = 6) -> list[tuple[float, ...]]:
    """``steps`` rows of ``width`` random floats."""
    rand = random.Random(seed)
    return [tuple(rand.random() for _ in range(width)) for _ in range(steps)]


# -- sqltrack cases -----------------------------------------------------------------
async def sqltrack_async(env: Env, engine: str, names: Sequence[str], rows: list[tuple],
                         buffered: bool = False) -> float:
    """``await run.add_metrics({...K names...}, step=i)`` per step; buffered: the client
    has ``buffered=True`` and the final ``run.flush()`` is timed."""
    steps = [dict(zip(names, row, strict=True)) for row in rows]
    took, run_id = await timed_steps_async(env, engine, "bench-w6", steps, buffered)
    delete_run(env, engine, run_id)
    return took


def sqltrack_blocking(env: Env, engine: str, names: Sequence[str], rows: list[tuple],
                      buffered: bool = False) -> float:
    """``run.add_metrics({...}, step=i)`` per step through the sync facade (as above)."""
    steps = [dict(zip(names, row, strict=True)) for row in rows]
    took, run_id = timed_steps_blocking(env, engine, "bench-w6", steps, buffered)
    delete_run(env, engine, run_id)
    return took


def delete_run(env: Env, engine: str, run_id: int) -> None:
    """Delete a case's run and its rows (untimed, raw driver): the tables stay small."""
    if engine == "sqlite":
        conn = sqlite_connect(env.sqlite_path)
        try:
            conn.execute("DELETE FROM runs WHERE id = ?", [run_id])
            conn.commit()
        finally:
            conn.close()
    else:
        with env.pg_connect() as conn:
            conn.execute("DELETE FROM runs WHERE id = %s", [run_id])


# -- SQLite floors ------------------------------------------------------------------
def _sqlite_insert(table: str, columns: Sequence[str], rows: int) -> str:
    one = "(" + ", ".join(["?"] * len(columns)) + ")"
    quoted = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO {table} ({quoted}) VALUES {', '.join([one] * rows)}"


class _SqliteStatements:
    """Multi-row INSERTs of ``metrics`` rows and ``metric_values`` rows of one split."""

    def __init__(self, split: Split) -> None:
        self.metric_columns = ["run_id", "step", "progress", *split.columns]
        self.metric_rows = max(1, min(BATCH_ROWS, SQLITE_PARAMETERS // len(self.metric_columns)))
        self.long_columns = ["run_id", "step", "progress", "name", "value"]
        self.cache: dict[tuple[str, int], str] = {}

    def write(self, conn: Any, table: str, rows: list[tuple]) -> None:
        """``rows`` (parameter tuples) into ``table`` in statements of up to the batch size."""
        if table == "metrics":
            columns, per = self.metric_columns, self.metric_rows
            if len(columns) > WIDE_ROW_PARAMETERS and len(rows) > 1:
                conn.executemany(self._one(table, columns), rows)
                return
        else:
            columns, per = self.long_columns, BATCH_ROWS
        for first in range(0, len(rows), per):
            chunk = rows[first:first + per]
            sql = self.cache.get((table, len(chunk)))
            if sql is None:
                sql = self.cache[(table, len(chunk))] = _sqlite_insert(table, columns, len(chunk))
            conn.execute(sql, [value for row in chunk for value in row])

    def _one(self, table: str, columns: Sequence[str]) -> str:
        """The one-row INSERT into ``table`` (cached)."""
        sql = self.cache.get((table, 1))
        if sql is None:
            sql = self.cache[(table, 1)] = _sqlite_insert(table, columns, 1)
        return sql


def sqlite_per_step(env: Env, split: Split, rows: list[tuple]) -> float:
    """sqlite3: per step the ``metrics`` row, the long values (multi-row INSERTs), COMMIT."""
    statements = _SqliteStatements(split)
    long_names = split.long

    def step(conn: Any, run_id: int, number: int, row: tuple) -> None:
        statements.write(conn, "metrics", [(run_id, number, 0.0, *split.pick_columns(row))])
        if long_names:
            statements.write(conn, "metric_values", [
                (run_id, number, 0.0, name, value)
                for name, value in zip(long_names, split.pick_long(row), strict=True)])
        conn.commit()

    def write(conn: Any, run_id: int) -> None:
        for number, row in enumerate(rows, 1):
            step(conn, run_id, number, row)

    return sqlite_timed_run(env, write, warm_up=lambda conn, run_id: step(conn, run_id, 0,
                                                                           rows[0]))


def sqlite_batch(env: Env, split: Split, rows: list[tuple]) -> float:
    """sqlite3: every row in one transaction, multi-row INSERTs (the batch floor)."""
    statements = _SqliteStatements(split)
    long_names = split.long

    def write(conn: Any, run_id: int) -> None:
        statements.write(conn, "metrics", [(run_id, step, 0.0, *split.pick_columns(row))
                                           for step, row in enumerate(rows, 1)])
        if long_names:
            statements.write(conn, "metric_values", [
                (run_id, step, 0.0, name, value) for step, row in enumerate(rows, 1)
                for name, value in zip(long_names, split.pick_long(row), strict=True)])
        conn.commit()

    return sqlite_timed_run(env, write)


# -- PostgreSQL floors --------------------------------------------------------------
def _pg_quoted(columns: Sequence[str]) -> str:
    return ", ".join(["run_id", "step", "progress", *(f'"{c}"' for c in columns)])


def pg_per_step(env: Env, split: Split, rows: list[tuple]) -> float:
    """psycopg: one statement per step in autocommit, the long values an unnest CTE."""
    with env.pg_connect() as conn:
        run_id = pg_new_run(conn, env.experiment_ids["postgres"])
        marks = ", ".join(["%s"] * (3 + len(split.columns)))
        insert = f"INSERT INTO metrics ({_pg_quoted(split.columns)}) VALUES ({marks})"
        if split.long:
            insert = ("WITH l AS (INSERT INTO metric_values (run_id, step, progress, name, value) "
                      "SELECT %s, %s, 0.0, n, v FROM unnest(%s::text[], %s::float8[]) AS u (n, v)) "
                      + insert)
        long_names = list(split.long)

        def params_of(step: int, row: tuple) -> tuple:
            params: tuple = (run_id, step, 0.0, *split.pick_columns(row))
            if long_names:
                params = (run_id, step, long_names, list(split.pick_long(row)), *params)
            return params

        conn.execute(insert, params_of(0, rows[0]))  # the untimed warm-up step (WARM_UP)
        start = perf_counter()
        for step, row in enumerate(rows, 1):
            conn.execute(insert, params_of(step, row))
        took = perf_counter() - start
        conn.execute("DELETE FROM runs WHERE id = %s", [run_id])
        return took


def pg_batch(env: Env, split: Split, rows: list[tuple]) -> float:
    """psycopg: binary COPY with types set into ``metrics`` and ``metric_values``, one
    transaction (the batch floor)."""
    with env.pg_connect() as conn:
        run_id = pg_new_run(conn, env.experiment_ids["postgres"])
        metric_types = ["bigint", "bigint", "double precision",
                        *(["double precision"] * len(split.columns))]
        long_types = ["bigint", "bigint", "double precision", "text", "double precision"]
        long_names = split.long
        start = perf_counter()
        with conn.transaction(), conn.cursor() as cursor:
            with cursor.copy(f"COPY metrics ({_pg_quoted(split.columns)}) FROM STDIN "
                             "(FORMAT BINARY)") as copy:
                copy.set_types(metric_types)
                for step, row in enumerate(rows, 1):
                    copy.write_row((run_id, step, 0.0, *split.pick_columns(row)))
            if long_names:
                with cursor.copy("COPY metric_values (run_id, step, progress, name, value) "
                                 "FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(long_types)
                    for step, row in enumerate(rows, 1):
                        for name, value in zip(long_names, split.pick_long(row), strict=True):
                            copy.write_row((run_id, step, 0.0, name, value))
        took = perf_counter() - start
        conn.execute("DELETE FROM runs WHERE id = %s", [run_id])
        return took


FLOORS = {
    "sqlite": (("sqlite3 per step: metrics row + long rows (multi-row INSERTs) + COMMIT",
                sqlite_per_step),
               ("sqlite3 all rows in one transaction, multi-row INSERTs", sqlite_batch)),
    "postgres": (("psycopg per step: one INSERT, long values an unnest CTE (autocommit)",
                  pg_per_step),
                 ("psycopg binary COPY (set_types) into metrics and metric_values",
                  pg_batch)),
}


# -- cases and report ---------------------------------------------------------------
def steps_for(env: Env, width: int) -> int:
    return max(10, (VALUES_PER_CASE // (10 if env.quick else 1)) // width)


def width_cases(env: Env, engine: str, width: int) -> tuple[list[Case], list[tuple[str, str]]]:
    """One engine's cases at one width, and (buffered case, write-through case) pairs."""
    skip = env.skip_reason(engine)
    names = NAMES[:width]
    rows = wide_rows(width, steps_for(env, width))
    (per_step, per_step_fn), (batch, batch_fn) = FLOORS[engine]
    label = LABEL[engine]
    facade_missing = None if sync_facade() else "sqltrack_sync.Client not available"
    cases: list[Case] = []
    split = None if skip else Split(names, columns_of(env, engine))
    if split is not None:
        layout = f"{len(split.columns)} columns + {len(split.long)} long"
    else:
        layout = "layout unknown"
    per_step_name = f"{per_step} [{label}, {layout}]"
    batch_name = f"{batch} [{label}]"
    cases.append(Case(per_step_name, split and functools.partial(per_step_fn, env, split, rows),
                      skip))
    cases.append(Case(batch_name, split and functools.partial(batch_fn, env, split, rows), skip,
                      baseline=per_step_name))
    pairs = []
    for api, function, missing in (("async", sqltrack_async, None),
                                   ("sync", sqltrack_blocking, facade_missing)):
        through = f"sqltrack {api} write-through, {label}"
        buffered = f"sqltrack {api} buffered, {label}"
        cases.append(Case(through, functools.partial(function, env, engine, names, rows),
                          skip or missing, baseline=per_step_name, target=WRITE_THROUGH_TARGET))
        cases.append(Case(buffered, functools.partial(function, env, engine, names, rows,
                                                      buffered=True),
                          skip or missing, baseline=batch_name, target=BUFFERED_TARGET))
        pairs.append((buffered, through))
    return cases, pairs


def run(env: Env, rounds: int) -> list[Section]:
    """Measure W6 in databases of its own (a new SQLite file and PostgreSQL schema,
    dropped after it) and return one table per width.

    Its own: W6 gives ``metrics`` some 1,500 columns, and every later write into that
    table carries them (a SQLite row's header holds a byte per column, NULL or not).
    In the shared database, the next full run's W1 and W2 then measured rows of 1,500
    columns: runs 2 and 3 of 89cdcd9's RESULTS.md had SQLite's 100-row floor at 27-29
    µs a step against 1.5 in run 1, which hid sqltrack's own cost."""
    wide = Env(loop=env.loop, quick=env.quick, pg_dsn=env.pg_dsn)
    try:
        wide.setup()
        return _run(wide, rounds)
    finally:
        wide.cleanup()


def _run(env: Env, rounds: int) -> list[Section]:
    sections = []
    for width in WIDTHS:
        steps = steps_for(env, width)
        cases: list[Case] = []
        pairs: list[tuple[str, str]] = []
        for engine in ("sqlite", "postgres"):
            more, more_pairs = width_cases(env, engine, width)
            cases += more
            pairs += more_pairs
        samples = measure(cases, rounds, env.loop)
        per_step = {name: median(values) / steps * 1e6 for name, values in samples.items()}

        def fmt(us: float, width: int = width) -> str:
            return f"{us:,.1f} µs/step ({width / us:.2f} M values/s)"

        section = Section(
            f"W6 wide rows, K = {width:,}",
            f"One run, {width:,} float metrics per step, {steps} steps ({width * steps:,} "
            f"values) per case, {rounds} interleaved rounds; the names past the column "
            "budget are rows of metric_values (layout in the per-step floor's name). "
            "Median µs per step and values/s; ratio = case / baseline (lower is better); "
            "'vs write-through': buffered / write-through of the same API (≤ 1x: never "
            "slower).",
        )
        section.rows = table_rows(cases, per_step, fmt)
        for buffered, through in pairs:
            if buffered in per_step:
                section.rows.append(compare(f"{buffered} vs write-through", per_step[buffered],
                                            fmt, through, per_step, NOT_SLOWER))
        sections.append(section)
    return sections
