"""Where the time of ``await run.add_metrics(...)`` goes, layer by layer, per engine.

    python benchmarks/profile_hot_path.py [--steps N] [--rounds R] [--calls C]
                                          [--pg-dsn DSN] [--engine sqlite|postgres]
                                          [--profiler]

The write-through path is peeled one layer at a time, each layer timed alone on
the same 10-float rows (interleaved rounds, medians in µs per step):

0. the blocking API's ``run.add_metrics(...)`` (on SQLite it writes in the calling
   thread, on its own connection: no event loop, no worker thread);
1. ``run.add_metrics(...)``: the whole call;
2. ``client.metrics.write_row(row)``, the row made by ``sqltrack.metrics.layout.make``
   (its timestamp taken) each step: without argument checks and type inference, with
   the write strategy (``sqltrack.metrics.writer``). On SQLite that strategy writes
   most rows on the event loop's own connection (the engine's thread writer: no
   hop), one in ``LOOP_CHECKPOINT_COMMITS`` through the pool, as layer 1 does;
3. ``engine.write_rows(conn, names, (row,), touches)`` on a held connection: without
   the pool and the strategy. On SQLite every write here hops to the connection's
   worker thread (``SqliteConnection.call``), so this layer may cost more than 2;
4. the driver alone running the SQL the engine runs (SQLite:
   ``sqlite_engine._write_rows`` on a ``sqlite3`` connection in the calling thread,
   so without the worker-thread hop; PostgreSQL: ``_upsert_sql`` with the touch,
   through ``AsyncConnection.execute``); on SQLite, next to it, the bare hop to
   sqltrack's worker thread and, for comparison, aiosqlite's (a no-op function);
5. the raw baselines (a plain INSERT; per-step COMMIT on SQLite).

Differences between consecutive layers are the cost of each layer. A second
table gives the Python cost alone: each layer with the driver calls replaced by
no-ops, as main-thread CPU time (steady even on a noisy machine). On SQLite those
are ``SqliteConnection.call`` (the hop to a worker thread and its ``sqlite3`` work)
and ``sqlite_engine._write_rows`` (the thread writer's ``sqlite3`` work on the
calling thread); on PostgreSQL ``AsyncConnection.execute``. With ``--profiler`` the
whole call is also profiled with pyinstrument (or cProfile when pyinstrument is
missing) and the top of the profile printed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from time import perf_counter, thread_time

import psycopg
from common import (
    DEFAULT_PG_DSN,
    NAMES,
    Env,
    insert_sql,
    metric_rows,
    pg_new_run,
    pg_new_run_async,
    sqlite_connect,
    sqlite_new_run,
)
from harness import Case, measure, median

import sqltrack
from sqltrack.engines import dialect_for
from sqltrack.engines import postgres as pg_engine
from sqltrack.engines import sqlite as sqlite_engine
from sqltrack.engines.sqlite_worker import SqliteConnection
from sqltrack.metrics import layout

#: The value kinds of the benchmark's rows (ten floats), as the checks give them.
KINDS = ("float",) * len(NAMES)


class Clock:
    """``with Clock() as clock:`` ... ``clock.times``: (wall seconds, this thread's CPU seconds)."""

    def __enter__(self) -> Clock:
        self._start = (perf_counter(), thread_time())
        return self

    def __exit__(self, *exc_info) -> None:
        self.times = (perf_counter() - self._start[0], thread_time() - self._start[1])


# -- sqltrack layers --------------------------------------------------------------
async def open_run(env: Env, engine: str) -> tuple[sqltrack.AsyncClient, sqltrack.AsyncRun]:
    client = sqltrack.AsyncClient(**env.client_kwargs(engine))
    experiment = await sqltrack.AsyncExperiment.create(client, name="bench-profile")
    run = await experiment.get_run()
    await run.add_metrics(dict.fromkeys(NAMES, 0.0), step=0)
    return client, run


async def layer_add_metrics(env: Env, engine: str, rows: list[tuple]) -> tuple[float, float]:
    """1. the whole ``run.add_metrics`` call."""
    steps = [dict(zip(NAMES, row, strict=True)) for row in rows]
    client, run = await open_run(env, engine)
    try:
        with Clock() as clock:
            for step, metrics in enumerate(steps, 1):
                await run.add_metrics(metrics, step=step)
        return clock.times
    finally:
        await client.close()


async def layer_write_row(env: Env, engine: str, rows: list[tuple]) -> tuple[float, float]:
    """2. ``client.metrics.write_row(row)``: no checks, no type inference; the strategy kept."""
    client, run = await open_run(env, engine)
    writer = client.metrics
    try:
        with Clock() as clock:
            for step, values in enumerate(rows, 1):
                now = datetime.now(timezone.utc)
                await writer.write_row(layout.make(NAMES, KINDS, now, run.id, step, 0.0, values))
        return clock.times
    finally:
        await client.close()


async def layer_engine(env: Env, engine: str, rows: list[tuple]) -> tuple[float, float]:
    """3. ``engine.write_rows`` on one held connection: no pool, no owner lookup, no
    strategy (on SQLite: always the hop to the connection's worker thread)."""
    client, run = await open_run(env, engine)
    core = client.connections.engine
    conn = await core.acquire()
    try:
        with Clock() as clock:
            for step, values in enumerate(rows, 1):
                now = datetime.now(timezone.utc)
                row = layout.make(NAMES, KINDS, now, run.id, step, 0.0, values)
                await core.write_rows(conn, NAMES, (row,), ((run.id, now),))
        return clock.times
    finally:
        await core.release(conn)
        await client.close()


# -- SQLite driver layers ---------------------------------------------------------
def sqlite_same_sql_inline(env: Env, rows: list[tuple]) -> tuple[float, float]:
    """4. the engine's ``_write_rows`` (upsert + runs touch + COMMIT) by sqlite3 in the
    calling thread: the work of one ``write_rows`` without its hop."""
    dialect = dialect_for("sqlite")
    adapt, timestamp = dialect.metric_value, dialect.timestamp
    conn = sqlite_connect(env.sqlite_path)
    try:
        run_id = sqlite_new_run(conn, env.experiment_ids["sqlite"])
        with Clock() as clock:
            for step, values in enumerate(rows, 1):
                now = datetime.now(timezone.utc)
                row = layout.make(NAMES, KINDS, now, run_id, step, 0.0, values)
                sqlite_engine._write_rows(conn, NAMES, (row,), adapt, [(timestamp(now), run_id)],
                                          True)
        return clock.times
    finally:
        conn.close()


def _nothing(conn: object) -> None:
    return None


async def worker_hop(env: Env, rows: list[tuple]) -> tuple[float, float]:
    """The bare hop to sqltrack's SQLite worker thread (``SqliteConnection.call`` of a
    no-op function), once per step."""
    conn = await SqliteConnection.open(env.sqlite_path)
    try:
        with Clock() as clock:
            for _ in rows:
                await conn.call(_nothing)
        return clock.times
    finally:
        await conn.close()


async def aiosqlite_hop(env: Env, rows: list[tuple]) -> tuple[float, float]:
    """The bare worker-thread hop of aiosqlite (a no-op function), once per step: the raw
    driver's hop, for comparison (aiosqlite is in the ``bench`` extra only)."""
    import aiosqlite

    async with aiosqlite.connect(env.sqlite_path) as conn:
        with Clock() as clock:
            for _ in rows:
                await conn._execute(lambda: None)
        return clock.times


def sqlite_plain_insert(env: Env, rows: list[tuple]) -> tuple[float, float]:
    """5. baseline: plain INSERT + COMMIT with sqlite3."""
    conn = sqlite_connect(env.sqlite_path)
    try:
        run_id = sqlite_new_run(conn, env.experiment_ids["sqlite"])
        sql = insert_sql("?")
        with Clock() as clock:
            for step, row in enumerate(rows, 1):
                conn.execute(sql, (run_id, step, 0.0, *row))
                conn.commit()
        return clock.times
    finally:
        conn.close()


# -- PostgreSQL driver layers -----------------------------------------------------
async def pg_same_sql_async(env: Env, rows: list[tuple]) -> tuple[float, float]:
    """4. the engine's one-row upsert-with-touch (``_upsert_sql``, its parameters built
    as ``write_rows`` builds them) through ``AsyncConnection.execute``."""
    conn = await psycopg.AsyncConnection.connect(env.pg_dsn, **env.pg_kwargs())
    async with conn:
        run_id = await pg_new_run_async(conn, env.experiment_ids["postgres"])
        sql = pg_engine._upsert_sql(NAMES, True)
        with Clock() as clock:
            for step, values in enumerate(rows, 1):
                now = datetime.now(timezone.utc)
                row = layout.make(NAMES, KINDS, now, run_id, step, 0.0, values)
                await conn.execute(sql, (now, run_id, *layout.params(row)))
        return clock.times


async def pg_plain_async(env: Env, rows: list[tuple]) -> tuple[float, float]:
    """5a. a plain INSERT through ``AsyncConnection.execute``."""
    conn = await psycopg.AsyncConnection.connect(env.pg_dsn, **env.pg_kwargs())
    async with conn:
        run_id = await pg_new_run_async(conn, env.experiment_ids["postgres"])
        sql = insert_sql("%s")
        with Clock() as clock:
            for step, row in enumerate(rows, 1):
                await conn.execute(sql, (run_id, step, 0.0, *row))
        return clock.times


def pg_same_sql_sync(env: Env, rows: list[tuple]) -> tuple[float, float]:
    """5b. sqltrack's statement through blocking psycopg."""
    with env.pg_connect() as conn:
        run_id = pg_new_run(conn, env.experiment_ids["postgres"])
        sql = pg_engine._upsert_sql(NAMES, True)
        with Clock() as clock:
            for step, values in enumerate(rows, 1):
                now = datetime.now(timezone.utc)
                row = layout.make(NAMES, KINDS, now, run_id, step, 0.0, values)
                conn.execute(sql, (now, run_id, *layout.params(row)))
        return clock.times


def pg_plain_sync(env: Env, rows: list[tuple]) -> tuple[float, float]:
    """5c. baseline: a plain INSERT through blocking psycopg."""
    with env.pg_connect() as conn:
        run_id = pg_new_run(conn, env.experiment_ids["postgres"])
        sql = insert_sql("%s")
        with Clock() as clock:
            for step, row in enumerate(rows, 1):
                conn.execute(sql, (run_id, step, 0.0, *row))
        return clock.times


def layer_blocking(env: Env, engine: str, rows: list[tuple]) -> tuple[float, float]:
    """0. the blocking API's ``run.add_metrics`` (write-through), from this thread."""
    import sqltrack_sync

    steps = [dict(zip(NAMES, row, strict=True)) for row in rows]
    client = sqltrack_sync.Client(**env.client_kwargs(engine))
    try:
        run = sqltrack_sync.Experiment(client, name="bench-profile").get_run()
        run.add_metrics(steps[0], step=0)
        with Clock() as clock:
            for step, metrics in enumerate(steps, 1):
                run.add_metrics(metrics, step=step)
        return clock.times
    finally:
        client.close()


LAYERS = {
    "sqlite": [
        ("0 blocking API run.add_metrics", functools.partial(layer_blocking, engine="sqlite")),
        ("1 run.add_metrics", functools.partial(layer_add_metrics, engine="sqlite")),
        ("2 metrics.write_row", functools.partial(layer_write_row, engine="sqlite")),
        ("3 engine.write_rows, held conn", functools.partial(layer_engine, engine="sqlite")),
        ("4 same SQL by sqlite3, no thread hop", sqlite_same_sql_inline),
        ("  sqltrack worker bare hop (no-op)", worker_hop),
        ("  aiosqlite bare hop (no-op)", aiosqlite_hop),
        ("5 sqlite3 plain INSERT+COMMIT", sqlite_plain_insert),
    ],
    "postgres": [
        ("0 blocking API run.add_metrics",
         functools.partial(layer_blocking, engine="postgres")),
        ("1 run.add_metrics", functools.partial(layer_add_metrics, engine="postgres")),
        ("2 metrics.write_row", functools.partial(layer_write_row, engine="postgres")),
        ("3 engine.write_rows, held conn", functools.partial(layer_engine, engine="postgres")),
        ("4 same SQL, psycopg async", pg_same_sql_async),
        ("5a plain INSERT, psycopg async", pg_plain_async),
        ("5b same SQL, psycopg sync", pg_same_sql_sync),
        ("5c plain INSERT, psycopg sync", pg_plain_sync),
    ],
}


def layer_table(env: Env, engine: str, steps: int, rounds: int) -> str:
    """Time every layer of ``engine``; a markdown table of µs per step (wall and CPU)."""
    rows = metric_rows(steps, seed=5)
    cases = [
        Case(f"{engine}: {name}", functools.partial(function, env=env, rows=rows))
        for name, function in LAYERS[engine]
    ]
    samples = measure(cases, rounds, env.loop)
    cases = [c for c in cases if samples.get(c.name)]  # a failed layer is left out
    per_step = [
        [median([s[kind] for s in samples[c.name]]) / steps * 1e6 for kind in (0, 1)]
        for c in cases
    ]
    lines = [
        "| layer | wall µs/step | minus next | main-thread CPU µs/step | minus next |",
        "|---|---|---|---|---|",
    ]
    for index, (case, (wall, cpu)) in enumerate(zip(cases, per_step, strict=True)):
        deltas = ["", ""]
        if index + 1 < len(per_step):
            deltas = [f"{now - then:+.1f}" for now, then in zip(
                (wall, cpu), per_step[index + 1], strict=True)]
        lines.append(f"| {case.name} | {wall:.1f} | {deltas[0]} | {cpu:.1f} | {deltas[1]} |")
    return "\n".join(lines)


# -- Python cost alone (driver stubbed) -------------------------------------------
async def _no_io(*args, **kwargs) -> None:
    return None


def _no_work(*args, **kwargs) -> None:
    return None


@contextmanager
def driver_stubbed(engine: str) -> Iterator[None]:
    """Replace the driver calls of a metric write by no-ops, until the block ends.

    SQLite: ``SqliteConnection.call`` (the hop to a worker thread, with the
    ``sqlite3`` work it runs there) by a no-op coroutine, and ``_write_rows`` (the
    ``sqlite3`` work the thread writer does on the calling thread; looked up in the
    module at each call) by a no-op function. PostgreSQL: ``AsyncConnection.execute``.
    """
    if engine == "sqlite":
        stubs = [(SqliteConnection, "call", _no_io), (sqlite_engine, "_write_rows", _no_work)]
    else:
        stubs = [(psycopg.AsyncConnection, "execute", _no_io)]
    originals = [(target, name, getattr(target, name)) for target, name, _ in stubs]
    for target, name, stub in stubs:
        setattr(target, name, stub)
    try:
        yield
    finally:
        for target, name, original in originals:
            setattr(target, name, original)


async def python_costs(env: Env, engine: str, calls: int, rounds: int) -> list[tuple[str, float]]:
    """Main-thread CPU µs per call of each layer with no driver I/O (median of rounds)."""
    client, run = await open_run(env, engine)
    core = client.connections.engine
    writer = client.metrics
    metrics = dict(zip(NAMES, metric_rows(1)[0], strict=True))
    values, now = tuple(metrics.values()), datetime.now(timezone.utc)
    touches = ((run.id, now),)
    conn = await core.acquire()

    async def prepare(step: int) -> None:
        writer.table.prepare(run.id, metrics, step)

    def write_row(step: int) -> Awaitable[None]:
        return writer.write_row(layout.make(NAMES, KINDS, now, run.id, step, 0.0, values))

    def write_rows(step: int) -> Awaitable[None]:
        row = layout.make(NAMES, KINDS, now, run.id, step, 0.0, values)
        return core.write_rows(conn, NAMES, (row,), touches)

    async def acquire_release(step: int) -> None:
        await core.release(await core.acquire())

    parts = {
        "run.add_metrics (whole call)": lambda i: run.add_metrics(metrics, step=i),
        "metrics.table.prepare (checks)": prepare,
        "metrics.write_row (made row)": write_row,
        "engine.write_rows, held conn": write_rows,
        "engine.acquire + release (pool)": acquire_release,
    }
    samples: dict[str, list[float]] = {name: [] for name in parts}
    try:
        with driver_stubbed(engine):
            for _ in range(rounds):
                for name, call in parts.items():
                    start = thread_time()
                    for step in range(calls):
                        await call(step)
                    samples[name].append(thread_time() - start)
    finally:
        await core.release(conn)
        await client.close()
    return [(name, median(times) / calls * 1e6) for name, times in samples.items()]


def python_table(env: Env, engine: str, calls: int, rounds: int) -> str:
    """Markdown table of ``python_costs``."""
    costs = env.loop.run_until_complete(python_costs(env, engine, calls, rounds))
    lines = ["| layer, driver I/O stubbed | main-thread CPU µs/call |", "|---|---|"]
    lines += [f"| {engine}: {name} | {cost:.2f} |" for name, cost in costs]
    return "\n".join(lines)


def profile_whole_call(env: Env, engine: str, steps: int) -> str:
    """Profile the whole ``add_metrics`` loop; the profiler's text report."""
    rows = metric_rows(steps, seed=6)
    try:
        from pyinstrument import Profiler
    except ImportError:
        return cprofile_whole_call(env, engine, rows)
    profiler = Profiler(interval=0.0001, async_mode="enabled")
    profiler.start()
    env.loop.run_until_complete(layer_add_metrics(env, engine, rows))
    profiler.stop()
    return profiler.output_text(unicode=True, color=False, show_all=False)


def cprofile_whole_call(env: Env, engine: str, rows: list[tuple]) -> str:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    env.loop.run_until_complete(layer_add_metrics(env, engine, rows))
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20_000,
                        help="calls per round of each layer in the Python-cost table")
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN)
    parser.add_argument("--engine", choices=("sqlite", "postgres"), action="append")
    parser.add_argument("--profiler", action="store_true",
                        help="also profile the whole call (pyinstrument, else cProfile)")
    args = parser.parse_args(argv)
    loop = asyncio.new_event_loop()
    env = Env(loop=loop, quick=False, pg_dsn=args.pg_dsn)
    try:
        env.setup()
        for engine in args.engine or ("sqlite", "postgres"):
            if env.skip_reason(engine):
                print(f"{engine}: skipped, {env.skip_reason(engine)}", file=sys.stderr)
                continue
            print(f"\n### {engine}\n\n{layer_table(env, engine, args.steps, args.rounds)}\n")
            print(f"{python_table(env, engine, args.calls, args.rounds)}\n")
            if args.profiler:
                print(profile_whole_call(env, engine, args.steps))
    finally:
        env.cleanup()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
