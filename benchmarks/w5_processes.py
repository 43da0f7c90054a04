"""W5, many processes: 32 processes x 1 run each, writing to one SQLite file at once.

Each process (``python w5_processes.py --worker MODE PATH EXPERIMENT STEPS``)
sets itself up untimed (imports, connection or client, its run, one warm-up row),
says ``ready`` and waits; when all are ready the parent says ``go`` to all, and
each writes ``STEPS`` rows of 10 float metrics, one commit per row, and reports
when it started and ended (``time.time()``) and how many writes failed with
"database is locked". Rows/s = all rows / (last end - first start). A worker
closes its connection or client and exits only once all have reported, so no
process's shutdown competes for the cores with the others' timed writes.

- ``sqltrack``: the blocking API, ``run.add_metrics({...}, step=i)`` write-through;
- ``raw``: sqlite3 set up as sqltrack's connection is (WAL, ``synchronous=NORMAL``,
  sqltrack's busy timeout, ``isolation_level="IMMEDIATE"``: each write transaction
  starts with ``BEGIN IMMEDIATE``, as sqltrack's do, so a writer waits for the lock at
  its start rather than failing to upgrade a read lock), ``INSERT`` + ``COMMIT`` per row.

Targets: sqltrack's rows/s at least 0.8x the raw processes', and no "database is
locked" at all. A locked write is counted and skipped, not retried.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROCESSES = 32
NAMES = tuple(f"m{i}" for i in range(10))
RAW_CASE = f"{PROCESSES} raw sqlite3 processes, BEGIN IMMEDIATE + INSERT + COMMIT per row"
SQLTRACK_CASE = f"{PROCESSES} sqltrack processes (blocking API, write-through)"


# -- the worker processes -----------------------------------------------------------
def _locked(error: BaseException) -> bool:
    return "locked" in str(error).lower()


def _raw_worker(path: str, experiment_id: int, steps: int) -> dict:
    import sqlite3

    from sqltrack.engines.sqlite import BUSY_TIMEOUT_SECONDS

    # the same transaction mode and busy timeout as sqltrack's own connection
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level="IMMEDIATE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    run_id = conn.execute("INSERT INTO runs (experiment_id) VALUES (?)", (experiment_id,)).lastrowid
    conn.commit()
    columns = ", ".join(("run_id", "step", "progress", *NAMES))
    sql = f"INSERT INTO metrics ({columns}) VALUES ({', '.join('?' * (3 + len(NAMES)))})"
    conn.execute(sql, (run_id, 0, 0.0, *[0.5] * len(NAMES)))
    conn.commit()
    locked = 0

    def write(step: int) -> None:
        nonlocal locked
        try:
            conn.execute(sql, (run_id, step, 0.0, *[step / steps] * len(NAMES)))
            conn.commit()
        except sqlite3.OperationalError as error:
            if not _locked(error):
                raise
            locked += 1
            conn.rollback()

    return _timed(write, steps, lambda: locked, conn.close)


def _sqltrack_worker(path: str, experiment_id: int, steps: int) -> dict:
    import sqltrack_sync

    client = sqltrack_sync.Client(engine="sqlite", dbpath=path)
    run = sqltrack_sync.Experiment(client, experiment_id=experiment_id).get_run()
    run.add_metrics(dict.fromkeys(NAMES, 0.5), step=0)
    locked = 0

    def write(step: int) -> None:
        nonlocal locked
        try:
            run.add_metrics(dict.fromkeys(NAMES, step / steps), step=step)
        except Exception as error:
            if not _locked(error):
                raise
            locked += 1

    return _timed(write, steps, lambda: locked, client.close)


def _timed(write, steps: int, locked, close) -> dict:
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    for step in range(1, steps + 1):
        write(step)
    end = time.time()
    # Report, then wait until every worker has reported before closing and exiting:
    # one worker's shutdown (interpreter clean-up, ~14 ms of CPU for sqltrack, ~5 ms
    # for sqlite3) must not take the cores from the others' timed writes.
    print(json.dumps({"start": start, "end": end, "locked": locked()}), flush=True)
    sys.stdin.readline()
    close()
    return {}


def worker_main(argv: list[str]) -> int:
    mode, path, experiment_id, steps = argv[0], argv[1], int(argv[2]), int(argv[3])
    work = _raw_worker if mode == "raw" else _sqltrack_worker
    work(path, experiment_id, steps)
    return 0


# -- the parent ---------------------------------------------------------------------
def one_round(mode: str, path: str, experiment_id: int, steps: int) -> tuple[float, int]:
    """Start the processes, wait until all are ready, let them go: (rows/s, locked)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQLTRACK_")}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, path,
               str(experiment_id), str(steps)]
    workers = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=environ) for _ in range(PROCESSES)]
    try:
        for worker in workers:
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a {mode} worker failed to start")
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = [json.loads(worker.stdout.readline()) for worker in workers]
        for worker in workers:  # all have reported: now they close and exit
            worker.stdin.write("exit\n")
            worker.stdin.flush()
        for worker in workers:
            if worker.wait(120) != 0:
                raise RuntimeError(f"a {mode} worker exited with {worker.returncode}")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return PROCESSES * steps / seconds, sum(r["locked"] for r in reports)


def run(env, rounds: int):
    """Measure W5 and return its table."""
    from harness import DASH, Case, Row, Section, Target, measure, median, table_rows

    steps = 50 if env.quick else 200
    path = str(env.directory / "w5.db")
    experiment_id = env.loop.run_until_complete(_prepare_async(path))
    cases = [
        Case(RAW_CASE, functools.partial(one_round, "raw", path, experiment_id, steps)),
        Case(SQLTRACK_CASE, functools.partial(one_round, "sqltrack", path, experiment_id, steps),
             baseline=RAW_CASE, target=Target(0.8, at_most=False)),
    ]
    samples = measure(cases, rounds, env.loop)
    rates = {name: median([rate for rate, _ in s]) for name, s in samples.items()}
    section = Section(
        "W5 many processes (SQLite, one file)",
        f"{PROCESSES} processes x 1 run x {steps} steps (10 float metrics, one commit per "
        f"row), started together; {rounds} interleaved rounds. Median rows/s; ratio = case / "
        "baseline (higher is better). Locked = writes that failed with \"database is locked\""
        " (all rounds).",
    )
    section.rows = table_rows(cases, rates, lambda rate: f"{rate:,.0f} rows/s")
    zero = Target(0, unit="errors")
    for case in cases:
        if case.name in samples:
            locked = sum(count for _, count in samples[case.name])
            met = DASH if case.baseline is None else ("yes" if zero.met(locked) else "**NO**")
            target = DASH if case.baseline is None else str(zero)
            section.rows.append(Row(f"\"database is locked\": {case.name}", str(locked),
                                    DASH, DASH, target, met))
    return section


async def _prepare_async(path: str) -> int:
    import sqltrack

    client = sqltrack.AsyncClient(engine="sqlite", dbpath=path)
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="bench-w5")
        run = await experiment.get_run()
        await run.add_metrics(dict.fromkeys(NAMES, 0.0))
        return experiment.id
    finally:
        await client.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit("run through benchmarks/run.py --only W5")
