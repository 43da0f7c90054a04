"""Where the time of ``await run.add_metrics(...)`` goes, layer by layer, per engine.

    python benchmarks/profile_hot_path.py [--steps N] [--rounds R] [--pg-dsn DSN]
                                          [--engine sqlite|postgres] [--profiler]

The write-through path is peeled one layer at a time, each layer timed alone on
the same 10-float rows (interleaved rounds, medians in µs per step):

0. the blocking API's ``run.add_metrics(...)`` (on SQLite it writes in the calling
   thread, on its own connection: no event loop, no worker thread);
1. ``run.add_metrics(...)``: the whole call;
2. ``client.statements.write_metrics(...)``: without argument checks and type inference;
3. ``engine.write_metrics(conn, ...)`` on a held connection: without the pool;
4. the driver alone running sqltrack's statements (SQLite: in the calling thread,
   so without the worker-thread hop; PostgreSQL: ``AsyncConnection.execute``);
5. the raw baselines (a plain INSERT; per-step COMMIT on SQLite).

Differences between consecutive layers are the cost of each layer. A second
table gives the Python cost alone: each layer with the driver call replaced by a
no-op coroutine, as main-thread CPU time (steady even on a noisy machine). With
``--profiler`` the whole call is also profiled with pyinstrument (or cProfile when
pyinstrument is missing) and the top of the profile printed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from time import perf_counter, thread_time

import aiosqlite
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
from sqltrack.engines import postgres as pg_engine
from sqltrack.engines import sqlite as sqlite_engine


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


async def layer_client_run(env: Env, engine: str, rows: list[tuple]) -> tuple[float, float]:
    """2. ``client.statements.write_metrics(...)``: no checks, no type inference."""
    client, run = await open_run(env, engine)
    try:
        with Clock() as clock:
            for step, row in enumerate(rows, 1):
                now = datetime.now(timezone.utc)
                await client.statements.write_metrics(NAMES, run.id, step, 0.0, row, now)
        return clock.times
    finally:
        await client.close()


async def layer_engine(env: Env, engine: str, rows: list[tuple]) -> tuple[float, float]:
    """3. ``engine.write_metrics`` on one held connection: no pool, no owner lookup."""
    client, run = await open_run(env, engine)
    core = client._engine
    conn = await core.acquire()
    try:
        with Clock() as clock:
            for step, row in enumerate(rows, 1):
                now = datetime.now(timezone.utc)
                await core.write_metrics(conn, NAMES, run.id, step, 0.0, row, now)
        return clock.times
    finally:
        await core.release(conn)
        await client.close()


# -- SQLite driver layers ---------------------------------------------------------
def sqlite_same_sql_inline(env: Env, rows: list[tuple]) -> tuple[float, float]:
    """4. sqltrack's upsert + runs touch + COMMIT, by sqlite3 in the calling thread."""
    conn = sqlite_connect(env.sqlite_path)
    try:
        run_id = sqlite_new_run(conn, env.experiment_ids["sqlite"])
        upsert = sqlite_engine._upsert_sql(NAMES)
        with Clock() as clock:
            for step, row in enumerate(rows, 1):
                touch = (datetime.now(timezone.utc).isoformat(), run_id)
                sqlite_engine._write_metrics(conn, upsert, ((run_id, step, 0.0, *row),), touch,
                                             True)
        return clock.times
    finally:
        conn.close()


async def aiosqlite_hop(env: Env, rows: list[tuple]) -> tuple[float, float]:
    """The bare worker-thread hop of aiosqlite (a no-op function), once per step."""
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
    """4. sqltrack's upsert-with-touch statement through ``AsyncConnection.execute``."""
    conn = await psycopg.AsyncConnection.connect(env.pg_dsn, **env.pg_kwargs())
    async with conn:
        run_id = await pg_new_run_async(conn, env.experiment_ids["postgres"])
        sql = pg_engine._upsert_sql(NAMES, True)
        with Clock() as clock:
            for step, row in enumerate(rows, 1):
                now = datetime.now(timezone.utc)
                await conn.execute(sql, (now, run_id, run_id, step, 0.0, *row))
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
            for step, row in enumerate(rows, 1):
                now = datetime.now(timezone.utc)
                conn.execute(sql, (now, run_id, run_id, step, 0.0, *row))
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
        ("2 statements.write_metrics", functools.partial(layer_client_run, engine="sqlite")),
        ("3 engine.write_metrics, held conn", functools.partial(layer_engine, engine="sqlite")),
        ("4 same SQL by sqlite3, no thread hop", sqlite_same_sql_inline),
        ("  aiosqlite bare hop (no-op)", aiosqlite_hop),
        ("5 sqlite3 plain INSERT+COMMIT", sqlite_plain_insert),
    ],
    "postgres": [
        ("0 blocking API run.add_metrics",
         functools.partial(layer_blocking, engine="postgres")),
        ("1 run.add_metrics", functools.partial(layer_add_metrics, engine="postgres")),
        ("2 statements.write_metrics", functools.partial(layer_client_run, engine="postgres")),
        ("3 engine.write_metrics, held conn", functools.partial(layer_engine, engine="postgres")),
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


@contextmanager
def driver_stubbed(engine: str) -> Iterator[None]:
    """Replace the driver call of a metric write by a no-op coroutine, until the block ends."""
    if engine == "sqlite":
        target, name, stub = sqlite_engine, "_in_worker", lambda *args: _no_io()
    else:
        target, name, stub = psycopg.AsyncConnection, "execute", _no_io
    original = getattr(target, name)
    setattr(target, name, stub)
    try:
        yield
    finally:
        setattr(target, name, original)


async def python_costs(env: Env, engine: str, calls: int, rounds: int) -> list[tuple[str, float]]:
    """Main-thread CPU µs per call of each layer with no driver I/O (median of rounds)."""
    client, run = await open_run(env, engine)
    core = client._engine
    metrics = dict(zip(NAMES, metric_rows(1)[0], strict=True))
    values, now = tuple(metrics.values()), datetime.now(timezone.utc)
    conn = await core.acquire()

    async def prepare(step: int) -> None:
        client.metrics.prepare(metrics, step)

    async def acquire_release(step: int) -> None:
        await core.release(await core.acquire())

    parts = {
        "run.add_metrics (whole call)": lambda i: run.add_metrics(metrics, step=i),
        "metrics.prepare (checks)": prepare,
        "client.statements.write_metrics": lambda i: client.statements.write_metrics(
            NAMES, run.id, i, 0.0, values, now),
        "engine.write_metrics, held conn": lambda i: core.write_metrics(
            conn, NAMES, run.id, i, 0.0, values, now),
        "engine.acquire + release (pool)": acquire_release,
    }
    if not hasattr(client.metrics, "prepare"):
        del parts["metrics.prepare (checks)"]
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
            print(f"{python_table(env, engine, 20_000, args.rounds)}\n")
            if args.profiler:
                print(profile_whole_call(env, engine, args.steps))
    finally:
        env.cleanup()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
