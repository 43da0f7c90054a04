"""Concurrent writer processes: one SQLite file, and the same new metric column at once.

* 8 processes open one new SQLite file at the same moment (creating the schema
  and the experiment together), then each logs 300 steps to its own run at the
  same time: no error reaches any of them ("database is locked" included), and
  every row is stored. ``--fault-trials=N``: N / 10 rounds (at least 2).
* 8 processes add the same new metric column at the same moment (a barrier),
  round after round, on both engines: no failure, the column exists once, every
  row is stored. ``--fault-trials=N`` rounds (new columns).
"""

from __future__ import annotations

import pytest
from support.faults import check_rows, metric_rows, outcome, prepare_database, read, run_jobs

pytestmark = pytest.mark.faults

WRITERS = 8
STEPS = 300


def test_writers_share_one_sqlite_file(tmp_path, fault_trials, record_property):
    rounds = max(2, fault_trials // 10)
    jobs = [
        {
            "program": "writer",
            "n": WRITERS,
            "client": {"engine": "sqlite", "dbpath": str(tmp_path / f"shared-{number}.db")},
            "experiment": "shared",
            "steps": STEPS,
            "timeout": 300.0,
        }
        for number in range(rounds)
    ]
    results = run_jobs(jobs)
    failures, rows_checked = [], 0
    for number, (job, result) in enumerate(zip(jobs, results, strict=True)):
        kw = job["client"]
        if result["hung"]:
            failures.append(f"round {number}: writers did not finish")
        run_ids = []
        for index, child in enumerate(map(outcome, result["children"])):
            where = f"round {number} writer {index}: "
            if child.errors or child.returncode != 0:
                failures.append(where + child.describe())
            if child.run_id is None:
                continue
            run_ids.append(child.run_id)
            rows = metric_rows(kw, child.run_id)
            if sorted(rows) != list(range(STEPS)) or child.acked != list(range(STEPS)):
                failures.append(where + f"{len(rows)} rows stored, {len(child.acked)} acked")
            failures += [where + p for p in check_rows(rows, STEPS)]
            rows_checked += len(rows)
        if len(set(run_ids)) != WRITERS:
            failures.append(f"round {number}: runs {run_ids}")
        if read(kw, "SELECT count(*) FROM experiments") != [(1,)]:
            failures.append(f"round {number}: experiments {read(kw, 'SELECT * FROM experiments')}")
        if read(kw, "PRAGMA integrity_check") != [("ok",)]:
            failures.append(f"round {number}: integrity_check failed")
    record_property("faults.concurrent_writer_processes", WRITERS * rounds)
    record_property("faults.rows_checked", rows_checked)
    assert not failures, "\n".join(failures[:10])


def metric_columns(kw: dict) -> list[str]:
    if kw["engine"] == "sqlite":
        return [row[1] for row in read(kw, "PRAGMA table_info(metrics)")]
    return [name for (name,) in read(
        kw,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'metrics'",
        [kw["schema"]],
    )]


def test_writers_add_the_same_new_column_at_once(
    engine, client_kwargs, fault_trials, record_property
):
    experiment_id = prepare_database(client_kwargs)
    job = {
        "program": "new_column",
        "n": WRITERS,
        "client": dict(client_kwargs),
        "experiment_id": experiment_id,
        "rounds": fault_trials,
        "prefix": "raced",
        "timeout": 300.0,
    }
    (result,) = run_jobs([job])
    failures = [] if not result["hung"] else ["writers did not finish"]
    children = [outcome(child) for child in result["children"]]
    for index, child in enumerate(children):
        if child.errors or child.returncode != 0 or child.acked != list(range(fault_trials)):
            failures.append(f"writer {index}: " + child.describe())
    columns = metric_columns(client_kwargs)
    for step in range(fault_trials):
        name = f"raced_{step}"
        same = [c for c in columns if c.lower() == name]
        if same != [name]:
            failures.append(f"column {name}: {same}")
    rows_checked = 0
    names = ", ".join(f"raced_{step}" for step in range(fault_trials))
    for child in children:
        if child.run_id is None:
            continue
        stored = read(client_kwargs, f"SELECT step, {names} FROM metrics "
                      "WHERE run_id = %s AND step >= 0 ORDER BY step", [child.run_id])
        expected = [
            (step, *[step * 1000 + child.run_id % 1000 if s == step else None
                     for s in range(fault_trials)])
            for step in range(fault_trials)
        ]
        if stored != expected:
            failures.append(f"run {child.run_id}: rows {stored[:3]}..., expected {expected[:3]}...")
        rows_checked += len(stored)
    record_property("faults.column_races", fault_trials)
    record_property("faults.rows_checked", rows_checked)
    assert not failures, "\n".join(failures[:10])
