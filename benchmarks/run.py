"""sqltrack benchmarks, side by side with the raw drivers in the same process run.

    python benchmarks/run.py [--quick] [--pg-dsn DSN] [--only W1,W2,W3,W4,W5]

Workloads (see each module's docstring):

- W1 training loop (``w1_training.py``): per-step metric writes, async and sync,
  SQLite and PostgreSQL, against sqlite3 / aiosqlite / psycopg doing it by hand;
- W2 many writers (``w2_writers.py``): 64 concurrent runs through one pooled
  AsyncClient against a raw psycopg_pool, with the peak number of server connections;
- W3 read back (``w3_readback.py``): 100 runs x 1,000 steps into Python rows and a
  pandas DataFrame, against the raw drivers' SELECT;
- W4 start-up (``w4_startup.py``): whole-process times of imports and a one-step run;
- W5 many processes (``w5_processes.py``): 32 processes x 1 run on one SQLite file
  against 32 raw sqlite3 processes, rows/s and "database is locked" errors.

W1 also times every buffered ``add_metrics`` call alone (``w1_latency.py``: max and
p99.99) and logs for long past what the database keeps up with. A "Targets" table
at the top lists every target with met / not met.

Each case runs in interleaved rounds with its baseline and the medians are reported,
with ratio = case / baseline. The tables are printed and written to
``benchmarks/RESULTS.md``. Every run uses a temporary SQLite file and a fresh
PostgreSQL schema, both removed at the end. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from common import DEFAULT_PG_DSN, Env
from harness import Section, render, summary

import sqltrack

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
WORKLOADS = ("W1", "W2", "W3", "W4", "W5")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 3 rounds: a smoke run, not for RESULTS.md")
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN,
                        help=f"libpq DSN of a PostgreSQL server (default: {DEFAULT_PG_DSN!r})")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help="comma-separated workloads to run (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help="where to write the markdown results (default: benchmarks/RESULTS.md)")
    return parser.parse_args(argv)


def run_workloads(env: Env, only: set[str]) -> list[Section]:
    """Run the selected workloads, in order, and return their tables."""
    import w1_latency
    import w1_training
    import w2_writers
    import w3_readback
    import w4_startup
    import w5_processes

    rounds = 3 if env.quick else 7
    plan = (
        ("W1", lambda: [w1_training.run(env, rounds), w1_latency.run(env, 2 if env.quick else 3)]),
        ("W2", lambda: w2_writers.run(env, 3 if env.quick else 5)),
        ("W3", lambda: w3_readback.run(env, 3 if env.quick else 7)),
        ("W4", lambda: w4_startup.run(env, 5 if env.quick else 10)),
        ("W5", lambda: w5_processes.run(env, 1 if env.quick else 7)),
    )
    sections = []
    for name, workload in plan:
        if name in only:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            began = time.perf_counter()
            result = workload()
            print(f"{name}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
            sections.extend(result if isinstance(result, list) else [result])
    return sections


def header(env: Env, started_at: float, seconds: float) -> str:
    """Where and how the results were measured."""
    pg = "unavailable: " + env.pg_error if env.pg_error else server_version(env)
    return "\n".join([
        "# sqltrack benchmark results",
        "",
        f"Command: `python benchmarks/run.py{command_options()}`"
        f" ({time.strftime('%Y-%m-%d %H:%M', time.localtime(started_at))}, {seconds:.0f} s,"
        f" tree {git_state()}).",
        f"Python {platform.python_version()}, sqltrack {sqltrack.__version__},"
        f" psycopg {psycopg.__version__}, SQLite {sqlite3.sqlite_version}, PostgreSQL {pg};"
        f" {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
        f" (shared machine, load average {env.load_at_start:.1f} at start,"
        f" {os.getloadavg()[0]:.1f} at end: read ratios, not absolute times).",
        "",
        "Every case runs in the same process as its raw-driver baseline, interleaved"
        " in rounds; values are medians over the rounds, ratio = case / baseline.",
        "",
    ])


def command_options() -> str:
    """The options this run was started with, as typed."""
    return "".join(" " + arg for arg in sys.argv[1:])


def git_state() -> str:
    """The measured tree's commit (``-dirty`` when it had uncommitted changes)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE,
                             capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def server_version(env: Env) -> str:
    with psycopg.connect(env.pg_dsn) as conn:
        return conn.execute("SHOW server_version").fetchone()[0].split()[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    started_at, started = time.time(), time.perf_counter()
    loop = asyncio.new_event_loop()
    env = Env(loop=loop, quick=args.quick, pg_dsn=args.pg_dsn)
    try:
        env.setup()
        if env.pg_error:
            print(f"warning: PostgreSQL cases are n/a: {env.pg_error}", file=sys.stderr)
        sections = run_workloads(env, only)
        elapsed = time.perf_counter() - started
        text = header(env, started_at, elapsed) + "\n" + summary(sections) + "\n" + render(sections)
    finally:
        env.cleanup()
        loop.close()
    print(text)
    args.output.write_text(text, encoding="utf-8")
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
