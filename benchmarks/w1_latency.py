"""W1 latency: how long single buffered ``add_metrics`` calls take (the stalls, not the mean).

Buffered mode promises that ``add_metrics`` does not wait for the database. Each
case logs W1's rows (10 float metrics per step) through a buffered client in a
tight loop and times every call on its own; the samples of all rounds are pooled
and their maximum, 99.99th percentile and median reported. Target: no call over
5 ms (max and p99.99), at a rate the database sustains.

The overload cases then log for much longer than a flush takes (``OVERLOAD_STEPS``
rows in a tight loop, one round), to show what happens when the producer outruns
the database for long: the producer's and the database's rows/s, how many calls
waited longer than 5 ms, and the longest wait.
"""

from __future__ import annotations

import functools
from time import perf_counter

from common import NAMES, Env, close_quietly, has_buffered_option, metric_rows, sync_facade
from harness import DASH, Case, Isolated, Row, Section, Target, measure

import sqltrack

LABEL = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
LIMIT_MS = 5.0


async def async_latencies(
    env: Env, engine: str, rows: list[tuple], count: int
) -> tuple[list[float], float]:
    """Per-call seconds of ``await run.add_metrics`` (buffered), and the whole time with flush.

    Steps 1 .. ``count`` log the values of ``rows`` in turn.
    """
    steps = [dict(zip(NAMES, row, strict=True)) for row in rows]
    client = sqltrack.AsyncClient(**env.client_kwargs(engine, buffered=True))
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="bench-w1-latency")
        run = await experiment.get_run()
        await run.add_metrics(steps[0], step=0)
        await run.flush()
        times = []
        start = perf_counter()
        for step in range(1, count + 1):
            metrics = steps[step % len(steps)]
            before = perf_counter()
            await run.add_metrics(metrics, step=step)
            times.append(perf_counter() - before)
        await run.flush()
        return times, perf_counter() - start
    finally:
        await client.close()


def sync_latencies(
    env: Env, engine: str, rows: list[tuple], count: int
) -> tuple[list[float], float]:
    """Per-call seconds of the blocking ``run.add_metrics`` (buffered), and the whole time."""
    facade = sync_facade()
    steps = [dict(zip(NAMES, row, strict=True)) for row in rows]
    client = facade.Client(**env.client_kwargs(engine, buffered=True))
    try:
        run = facade.Experiment(client, name="bench-w1-latency").get_run()
        run.add_metrics(steps[0], step=0)
        run.flush()
        times = []
        start = perf_counter()
        for step in range(1, count + 1):
            metrics = steps[step % len(steps)]
            before = perf_counter()
            run.add_metrics(metrics, step=step)
            times.append(perf_counter() - before)
        run.flush()
        return times, perf_counter() - start
    finally:
        close_quietly(client)


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of the sorted values lie (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered))) - 1))
    return ordered[index]


def build_cases(env: Env, count: int) -> list[Case]:
    rows = metric_rows(1000, seed=4)
    missing = None if has_buffered_option() else "not implemented yet"
    facade_missing = None if sync_facade() else "sqltrack_sync.Client not available"
    cases = []
    for engine in ("sqlite", "postgres"):
        skip = env.skip_reason(engine) or missing
        cases.append(Case(f"async buffered, {LABEL[engine]}",
                          functools.partial(async_latencies, env, engine, rows, count), skip))
        cases.append(Case(f"sync buffered, {LABEL[engine]}",
                          functools.partial(sync_latencies, env, engine, rows, count),
                          skip or facade_missing))
    return cases


def latency_rows(cases: list[Case], samples: dict[str, list]) -> list[Row]:
    target = Target(LIMIT_MS, unit="ms")
    rows = []
    for case in cases:
        if case.name not in samples:
            rows.append(Row(f"{case.name}: max", f"n/a ({case.skip})", DASH, DASH, str(target),
                            "n/a"))
            continue
        times = [t for one_round, _ in samples[case.name] for t in one_round]
        worst, tail, middle = max(times), percentile(times, 0.9999), percentile(times, 0.5)
        for label, value in (("max", worst), ("p99.99", tail)):
            met = "yes" if target.met(value * 1e3) else "**NO**"
            rows.append(Row(f"{case.name}: {label} of {len(times):,} calls",
                            f"{value * 1e3:.2f} ms", DASH, DASH, str(target), met))
        rows.append(Row(f"{case.name}: median", f"{middle * 1e6:.1f} µs"))
    return rows


def overload_rows(env: Env, steps: int) -> list[Row]:
    """One long tight loop per engine and API: what a producer faster than the database sees."""
    cases = build_cases(env, steps)
    samples = measure(cases, 1, env.loop)
    out = []
    for case in cases:
        if case.name not in samples:
            out.append(Row(f"overload, {case.name}", f"n/a ({case.skip})"))
            continue
        times, total = samples[case.name][0]
        produced = sum(times)
        slow = sum(1 for t in times if t * 1e3 > LIMIT_MS)
        out.append(Row(
            f"overload, {case.name}: {steps:,} steps",
            f"producer {steps / produced:,.0f} rows/s, database {steps / total:,.0f} rows/s "
            f"(with the final flush); {slow:,} calls > {LIMIT_MS:g} ms, "
            f"longest {max(times) * 1e3:.1f} ms",
        ))
    return out


def isolated(env: Env, state: dict) -> Isolated:
    """The latency cases for timing each alone in a fresh process: the longest call."""
    return Isolated(build_cases(env, 20_000),
                    lambda samples: max(t for one_round, _ in samples for t in one_round) * 1e3,
                    lambda ms: f"{ms:.2f} ms", "the longest add_metrics call, ms")


def run(env: Env, rounds: int) -> Section:
    """Measure the buffered latencies (and the overload cases) and return their table."""
    steps = 20_000
    overload = 30_000 if env.quick else 200_000
    cases = build_cases(env, steps)
    samples = measure(cases, rounds, env.loop)
    section = Section(
        "W1 buffered add_metrics latency",
        f"Every call of a tight loop timed alone: {steps:,} steps x {rounds} interleaved "
        f"rounds per case, pooled. Then one round of {overload:,} steps per case "
        "(the producer outruns the database for long).",
    )
    section.rows = latency_rows(cases, samples) + overload_rows(env, overload)
    return section
