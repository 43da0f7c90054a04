#!/usr/bin/env python3
"""What the blocking facade costs: one thread round trip per call, and no more.

    python benchmarks/facade.py [--pg-dsn DSN] [--rounds N] [--no-pg]

All cases run in one process, in interleaved rounds (each round starts with a
different case, so none always runs first); within a round the no-op round trips
(a, b, anyio) alternate in blocks of 50 calls, so they share the machine's load.
Each sample is the mean time of one call within a round; the tables show the
median sample over rounds, in microseconds.

(a) ``_portal.call(noop)``: a no-op coroutine through the facade's portal.
(b) the least a thread round trip to that running loop can cost:
    ``loop.call_soon_threadsafe(future.set_result, None)`` then ``future.result()``
    with a ``concurrent.futures.Future``, on the same loop thread.
    anyio's ``BlockingPortal.call(noop)`` is shown for comparison.
(c) ``run.add_metrics`` of 10 float metrics per step, through the blocking facade
    and with the async API awaited in an event loop of the calling thread, on a
    temporary SQLite file and on PostgreSQL (a fresh schema, dropped afterwards).

Target: a/b <= 1.2. The results are printed and appended to benchmarks/FACADE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path

import anyio
import anyio.from_thread
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqltrack  # noqa: E402 - the repository's own package, not an installed one
import sqltrack_sync  # noqa: E402
from sqltrack_sync import _portal  # noqa: E402

DEFAULT_PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
NAMES = tuple(f"m{i}" for i in range(10))
REPORT = Path(__file__).resolve().parent / "FACADE.md"
TARGET = 1.2
HEADER = """# Blocking facade overhead

Written by `python benchmarks/facade.py` (one section per run, newest last).

- **a**: a no-op coroutine through `sqltrack_sync._portal.call` (what every blocking
  call pays on top of its work);
- **b**: the least a thread round trip to the running loop can cost:
  `loop.call_soon_threadsafe(future.set_result, None)` and `future.result()` on the
  same loop thread (`_portal._get_loop()`); target a / b <= 1.2;
- **anyio**: `BlockingPortal.call` of the same no-op, for comparison;
- **c**: `run.add_metrics` with 10 float metrics per step through the blocking facade
  (`c_sync`) and awaited with the async API in an event loop of the calling thread
  (`c_async`); the difference is the facade's cost per call. Each facade call adds
  two thread wake-ups (to the loop thread and back), so on a loaded machine the
  difference grows with the scheduler's wake-up latency: read the load average.

All cases run interleaved in one process (the no-op round trips alternate in
blocks of 50 calls); each sample is the mean of one round, the tables show
medians over rounds, in microseconds.
"""


async def noop() -> None:
    return None


def calls_case(one: Callable[[], object]) -> Callable[[int], float]:
    """``n`` calls of ``one``: the seconds they took."""

    def timed(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            one()
        return time.perf_counter() - start

    return timed


def round_trips(cases: dict[str, Callable[[int], float]], calls: int, block: int):
    """One sample (seconds per call) of every round-trip case, finely interleaved:
    blocks of ``block`` calls of each case in turn (rotated), ``calls`` calls in all,
    so that each case sees the same machine load as the others."""

    def sample() -> dict[str, float]:
        names = list(cases)
        totals = dict.fromkeys(names, 0.0)
        for index in range(calls // block):
            for name in names[index % len(names):] + names[:index % len(names)]:
                totals[name] += cases[name](block)
        return {name: total / (calls // block * block) for name, total in totals.items()}

    return sample


def bare_round_trip(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    def once() -> None:
        future: Future = Future()
        loop.call_soon_threadsafe(future.set_result, None)
        future.result()

    return once


class Metrics:
    """The add_metrics cases of one engine: the blocking facade and the async API."""

    def __init__(self, engine: str, kwargs: dict, steps: int) -> None:
        self.engine = engine
        self.steps = steps
        self.sync_client = sqltrack_sync.Client(**kwargs)
        self.sync_exp = sqltrack_sync.Experiment(self.sync_client, name="facade-sync")
        self.loop = asyncio.new_event_loop()
        self.async_client = sqltrack.AsyncClient(**kwargs)
        self.async_exp = self.loop.run_until_complete(
            sqltrack.AsyncExperiment.create(self.async_client, name="facade-async")
        )
        # columns made and caches warm before anything is timed
        self.sync_case()
        self.async_case()

    def values(self, step: int) -> dict[str, float]:
        return {name: step + i / 10 for i, name in enumerate(NAMES)}

    def sync_case(self) -> float:
        run = self.sync_exp.get_run()
        rows = [self.values(step) for step in range(self.steps)]
        start = time.perf_counter()
        for step, values in enumerate(rows):
            run.add_metrics(values, step=step)
        return (time.perf_counter() - start) / self.steps

    def async_case(self) -> float:
        async def go() -> float:
            run = await self.async_exp.get_run()
            rows = [self.values(step) for step in range(self.steps)]
            start = time.perf_counter()
            for step, values in enumerate(rows):
                await run.add_metrics(values, step=step)
            return (time.perf_counter() - start) / self.steps

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.sync_client.close()
        self.loop.run_until_complete(self.async_client.close())
        self.loop.close()


def measure(cases: dict[str, Callable[[], float | dict[str, float]]],
            rounds: int) -> dict[str, float]:
    """Median sample of every case over interleaved rounds (rotated start). A case may
    return several named samples (a dict) at once."""
    names = list(cases)
    samples: dict[str, list[float]] = {}
    for round_ in range(rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            gc.collect()
            result = cases[name]()
            for key, value in (result if isinstance(result, dict) else {name: result}).items():
                samples.setdefault(key, []).append(value)
    return {name: statistics.median(values) for name, values in samples.items()}


def pg_kwargs(dsn: str, schema: str) -> dict:
    from psycopg.conninfo import conninfo_to_dict

    return {"engine": "postgres", **{k: str(v) for k, v in conninfo_to_dict(dsn).items()},
            "schema": schema}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN, help="PostgreSQL libpq DSN")
    parser.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL cases")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=3000, help="no-op calls per round")
    parser.add_argument("--block", type=int, default=50,
                        help="no-op calls in a row before switching to the next case")
    parser.add_argument("--steps", type=int, default=200, help="add_metrics steps per round")
    parser.add_argument("--no-report", action="store_true", help=f"do not append to {REPORT}")
    args = parser.parse_args(argv)

    loop = _portal._get_loop()
    trips: dict[str, Callable[[int], float]] = {
        "a: _portal.call(noop)": calls_case(lambda: _portal.call(noop)),
        "b: bare round trip": calls_case(bare_round_trip(loop)),
    }
    cases: dict[str, Callable[[], float | dict[str, float]]] = {
        "round trips": round_trips(trips, args.calls, args.block),
    }
    tmp = tempfile.TemporaryDirectory(prefix="sqltrack-facade-")
    schema = "bench_facade_" + uuid.uuid4().hex[:10]
    engines = {"sqlite": {"engine": "sqlite", "dbpath": os.path.join(tmp.name, "bench.db")}}
    if not args.no_pg:
        engines["postgres"] = pg_kwargs(args.pg_dsn, schema)
    metric_cases: list[Metrics] = []
    pg_error = None
    try:
        with anyio.from_thread.start_blocking_portal() as portal:
            trips["anyio: BlockingPortal.call(noop)"] = calls_case(lambda: portal.call(noop))
            for engine, kwargs in engines.items():
                try:
                    metrics = Metrics(engine, kwargs, args.steps)
                except psycopg.OperationalError as error:
                    pg_error = f"PostgreSQL cases skipped: {error}".strip()
                    continue
                metric_cases.append(metrics)
                cases[f"c_sync: add_metrics, facade ({engine})"] = metrics.sync_case
                cases[f"c_async: add_metrics, async API ({engine})"] = metrics.async_case
            medians = measure(cases, args.rounds)
    finally:
        for metrics in metric_cases:
            metrics.close()
        if "postgres" in engines and pg_error is None:
            with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        tmp.cleanup()

    text = report(medians, args, pg_error)
    print(text)
    if not args.no_report:
        with REPORT.open("a", encoding="utf-8") as out:
            if REPORT.stat().st_size == 0:
                out.write(HEADER)
            out.write("\n" + text)
    return 0


def report(medians: dict[str, float], args, pg_error: str | None) -> str:
    us = {name: value * 1e6 for name, value in medians.items()}
    a = us["a: _portal.call(noop)"]
    b = us["b: bare round trip"]
    anyio_call = us["anyio: BlockingPortal.call(noop)"]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {now}",
        "",
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"{args.rounds} interleaved rounds, medians of per-call means "
        f"({args.calls} no-op calls per case, interleaved in blocks of {args.block}, "
        f"and {args.steps} add_metrics steps per case and round).",
        "",
        "| case | µs per call |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {value:.1f} |" for name, value in us.items()]
    lines += [
        "",
        "| ratio | value | target |",
        "|---|---:|---|",
        f"| a / b (portal call vs bare round trip) | {a / b:.2f} | ≤ {TARGET:g} "
        f"{'met' if a / b <= TARGET else 'NOT met'} |",
        f"| anyio / b | {anyio_call / b:.2f} | for comparison |",
        f"| anyio / a | {anyio_call / a:.2f} | for comparison |",
    ]
    for engine in ("sqlite", "postgres"):
        sync_key = f"c_sync: add_metrics, facade ({engine})"
        async_key = f"c_async: add_metrics, async API ({engine})"
        if sync_key in us:
            lines.append(f"| c_sync / c_async ({engine}) | {us[sync_key] / us[async_key]:.2f} "
                         f"| (extra: {us[sync_key] - us[async_key]:.1f} µs per call) |")
    if pg_error:
        lines += ["", pg_error]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
