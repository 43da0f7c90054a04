"""sqltrack benchmarks, side by side with the raw drivers in the same process run.

    python benchmarks/run.py [--runs 3] [--isolated] [--quick] [--pg-dsn DSN]
                             [--citus-dsn DSN] [--only W1,W2,W3,W4,W5,W6,WC]
                             [--allow-dirty] [--output PATH]

Workloads (see each module's docstring):

- W1 training loop (``w1_training.py``): per-step metric writes, async and sync,
  SQLite and PostgreSQL, against sqlite3 / aiosqlite / psycopg doing it by hand;
- W2 many writers (``w2_writers.py``): 64 concurrent runs through one pooled
  AsyncClient against a raw psycopg_pool, with the peak number of server connections;
- W3 read back (``w3_readback.py``): 100 runs x 1,000 steps into Python rows and a
  pandas DataFrame, against the raw drivers' SELECT;
- W4 start-up (``w4_startup.py``): whole-process times of imports and a one-step run;
- W5 many processes (``w5_processes.py``): 32 processes x 1 run on one SQLite file
  against 32 raw sqlite3 processes, rows/s and "database is locked" errors;
- W6 wide rows (``w6_wide.py``): K = 100, 1,000 and 10,000 float metrics per step
  (names past the column budget in the long table), write-through and buffered, both
  APIs, against the raw per-step and batch floors writing the same layout; values/s;
- WC one server against a Citus cluster (``wc_citus.py``): W2's writers and a per-run
  read against the PostgreSQL server and a Citus coordinator (``--citus-dsn``; a full
  run needs one), ratio cluster / server.

W1 also times every buffered ``add_metrics`` call alone (``w1_latency.py``: max and
p99.99) and logs for long past what the database keeps up with. A "Targets" table
at the top lists every target with met / not met.

Each case runs in interleaved rounds with its baseline and the medians are reported,
with ratio = case / baseline. The whole set runs ``--runs`` times (default 3); a
target counts as met only when it is met in every run, and each figure is shown per
run (the Targets table gives the range). ``--isolated`` also times every case and
baseline of the in-process workloads (W1, its latency cases, W2, W3) alone in a fresh
process (``run.py --isolated-child``), in tables of their own that do not count
towards the targets (W4, W5 and ``peers.py`` start a fresh process per case anyway).

The tables are printed and written to ``benchmarks/RESULTS.md`` with the commit
measured. That file is written only from a clean tree and by a full run (every
workload, ``--runs`` of at least 3, not ``--quick``, with ``--isolated``); anything
else is refused, or with ``--allow-dirty`` written to ``RESULTS.local.md`` (git
ignores it). Every run uses a temporary SQLite file and a fresh PostgreSQL schema,
both removed at the end. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from common import DEFAULT_PG_DSN, Env
from harness import Section, combine, render, run_once, summary, table_rows
from provenance import commit, git_state, output_for

import sqltrack

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "WC")
#: Runs a committed RESULTS.md needs (a target is met only when met in each).
FULL_RUNS = 3
#: The in-process workloads' modules, timed case by case in fresh processes by --isolated.
ISOLATED = {"W1": ("w1_training", "w1_latency"), "W2": ("w2_writers",), "W3": ("w3_readback",)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 3 rounds: a smoke run, not for RESULTS.md")
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN,
                        help=f"libpq DSN of a PostgreSQL server (default: {DEFAULT_PG_DSN!r})")
    parser.add_argument("--citus-dsn", default=None,
                        help="libpq DSN of a Citus coordinator for WC (one server against the "
                        "cluster; ../shared/vendor/citus/cluster.sh start DIR PORT 2 prints one)")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help="comma-separated workloads to run (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help="where to write the markdown results (default: benchmarks/RESULTS.md)")
    parser.add_argument("--runs", type=int, default=FULL_RUNS,
                        help="full runs of the set; a target is met only when met in each "
                        "(default %(default)s)")
    parser.add_argument("--isolated", action="store_true",
                        help="also time each case and baseline of W1-W3 alone in a fresh process")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="from a dirty tree or a partial run, write RESULTS.local.md "
                        "instead of refusing")
    parser.add_argument("--isolated-child", nargs=2, metavar=("SPEC", "CASE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def partial_reason(args: argparse.Namespace, only: set[str]) -> str | None:
    """Why this run is not a full one (None when it is)."""
    reasons = []
    if args.quick:
        reasons.append("--quick")
    if args.runs < FULL_RUNS:
        reasons.append(f"--runs {args.runs} (a full run has {FULL_RUNS})")
    if set(WORKLOADS) - only:
        reasons.append(f"--only {','.join(sorted(only))}")
    if not args.isolated:
        reasons.append("no --isolated")
    if "WC" in only and not args.citus_dsn:
        reasons.append("WC without --citus-dsn")
    return f"not a full run ({', '.join(reasons)})" if reasons else None


def run_workloads(env: Env, only: set[str], citus_dsn: str | None = None) -> list[Section]:
    """Run the selected workloads, in order, and return their tables (each workload's
    module imported only when it runs: W6 alone needs no W1 baseline driver)."""

    def module(name: str) -> Any:
        return importlib.import_module(name)

    rounds = 3 if env.quick else 7
    plan = (
        ("W1", lambda: [module("w1_training").run(env, rounds),
                        module("w1_latency").run(env, 2 if env.quick else 3)]),
        ("W2", lambda: module("w2_writers").run(env, 3 if env.quick else 5)),
        ("W3", lambda: module("w3_readback").run(env, 3 if env.quick else 7)),
        ("W4", lambda: module("w4_startup").run(env, 5 if env.quick else 10)),
        ("W5", lambda: module("w5_processes").run(env, 1 if env.quick else 7)),
        ("W6", lambda: module("w6_wide").run(env, 2 if env.quick else 5)),
        ("WC", lambda: module("wc_citus").run(env, citus_dsn, 3 if env.quick else 5)),
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


# -- each case alone in a fresh process ----------------------------------------------
def isolated_sections(env: Env, only: set[str], rounds: int) -> list[Section]:
    """Each case and baseline of the in-process workloads timed alone in fresh processes."""
    sections = []
    for workload, modules in ISOLATED.items():
        if workload not in only:
            continue
        for name in modules:
            module = importlib.import_module(name)
            state = module.prepare(env) if hasattr(module, "prepare") else {}
            spec = env.directory / f"isolated-{name}.json"
            spec.write_text(json.dumps({"module": name, "state": state, "env": {
                "quick": env.quick, "pg_dsn": env.pg_dsn, "directory": str(env.directory),
                "pg_schema": env.pg_schema, "pg_error": env.pg_error,
                "experiment_ids": env.experiment_ids}}))
            iso = module.isolated(env, state)
            print(f"running {name} case by case in fresh processes ...", file=sys.stderr,
                  flush=True)
            samples: dict[str, list] = {}
            for case in iso.cases:
                if case.skip is not None or case.run is None:
                    continue
                try:
                    samples[case.name] = [run_child(spec, case.name) for _ in range(rounds)]
                except RuntimeError as error:
                    case.skip = f"failed: {error}"
            values = {n: iso.value(v) for n, v in samples.items()}
            section = Section(
                f"{name}: each case alone in a fresh process",
                f"Every case and baseline of `{name}.py` run alone, each round in a new "
                f"`python benchmarks/run.py --isolated-child` process (nothing else in it), "
                f"{rounds} rounds; {iso.unit}. For comparison with the interleaved table: "
                "these rows do not count towards the targets.",
                counted=False,
            )
            section.rows = table_rows(iso.cases, values, iso.fmt)
            sections.append(section)
    return sections


def run_child(spec: Path, case: str) -> object:
    """One sample of ``case``, measured in a fresh interpreter."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--isolated-child",
                          str(spec), case], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        last = out.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(last[0])
    return json.loads(out.stdout.strip().splitlines()[-1])


def isolated_child(spec_path: str, case_name: str) -> int:
    """In a fresh process: build the workload's cases, run ``case_name`` once, print it."""
    spec = json.loads(Path(spec_path).read_text())
    loop = asyncio.new_event_loop()
    env = Env(loop=loop, **{k: v for k, v in spec["env"].items() if k != "directory"},
              directory=Path(spec["env"]["directory"]))
    iso = importlib.import_module(spec["module"]).isolated(env, spec["state"])
    case = next(c for c in iso.cases if c.name == case_name)
    samples: dict[str, list] = {case.name: []}
    run_once(case, loop, samples)
    loop.close()
    if case.skip is not None:
        print(case.skip, file=sys.stderr)
        return 1
    print(json.dumps(samples[case.name][0]))
    return 0


def header(env: Env, started_at: float, seconds: float, runs: int, tree: str) -> str:
    """Where and how the results were measured (``tree``: the work tree's state when the
    run started, which is what was measured; files edited during the run do not count)."""
    pg = "unavailable: " + env.pg_error if env.pg_error else server_version(env)
    return "\n".join([
        "# sqltrack benchmark results",
        "",
        f"Command: `python benchmarks/run.py{command_options()}`"
        f" ({time.strftime('%Y-%m-%d %H:%M', time.localtime(started_at))}, {seconds:.0f} s,"
        f" {runs} full run{'s' if runs != 1 else ''}).",
        f"Commit: {commit() or 'unknown'} (tree {tree} at the start).",
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


def server_version(env: Env) -> str:
    with psycopg.connect(env.pg_dsn) as conn:
        return conn.execute("SHOW server_version").fetchone()[0].split()[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.isolated_child:
        return isolated_child(*args.isolated_child)
    only = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    # Before any work: may this run write where it was asked to?
    output = output_for(args.output, RESULTS, args.allow_dirty, partial_reason(args, only))
    measured_commit, measured_tree = commit(), git_state()
    started_at, started = time.time(), time.perf_counter()
    loop = asyncio.new_event_loop()
    env = Env(loop=loop, quick=args.quick, pg_dsn=args.pg_dsn)
    try:
        env.setup()
        if env.pg_error:
            print(f"warning: PostgreSQL cases are n/a: {env.pg_error}", file=sys.stderr)
        runs = []
        for number in range(args.runs):
            print(f"full run {number + 1} of {args.runs}", file=sys.stderr, flush=True)
            runs.append(run_workloads(env, only, args.citus_dsn))
        sections = combine(runs)
        if args.isolated:
            sections += isolated_sections(env, only, 3 if env.quick else 7)
        elapsed = time.perf_counter() - started
        text = (header(env, started_at, elapsed, args.runs, measured_tree) + "\n"
                + summary(sections) + "\n" + render(sections))
    finally:
        env.cleanup()
        loop.close()
    if commit() != measured_commit:
        if output.resolve() == RESULTS.resolve():
            raise SystemExit("HEAD moved during the run: the results name no single commit")
        text = text.replace("\nCommit: ", "\nCommit (HEAD moved during the run!): ", 1)
    print(text)
    output.write_text(text, encoding="utf-8")
    print(f"written to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
