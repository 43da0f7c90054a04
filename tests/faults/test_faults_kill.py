"""``kill -9`` in the middle of a run (write-through), on both engines.

Each trial is a child process logging metrics (blocking API after ``run.start()``,
or async API inside ``async with run.track()``); it is killed with SIGKILL right
after a random acknowledged step (plus up to 3 ms, so the kill lands anywhere in
the next write). Trials run two at a time against one database. Then:

* every acknowledged row is stored, and each stored row holds what was logged;
* the SQLite file passes ``PRAGMA integrity_check``;
* the run is still RUNNING, its ``time_updated`` between the last acknowledged
  call (less ``TOUCH_INTERVAL``: a write-through call sets it once a second) and the
  kill;
* ``sqltrack.mark_stale_runs`` (half of the runs) and ``sqltrack mark-stale``
  (the other half) mark them NODE_FAIL, and nothing before they are stale.

``--fault-trials=N`` trials per engine (default 20).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest
from support.faults import (
    ROOT,
    as_timestamp,
    check_rows,
    clean_environ,
    metric_rows,
    outcome,
    prepare_database,
    read,
    run_jobs,
    run_row,
)

import sqltrack
from sqltrack.metrics.writer import TOUCH_INTERVAL

pytestmark = pytest.mark.faults

STALE_AFTER = 0.5  # seconds without an update that make a killed run stale here


def cli_connection(kw: dict) -> list[str]:
    if kw["engine"] == "sqlite":
        return ["--engine", "sqlite", "--dbpath", kw["dbpath"]]
    args = ["--engine", "postgres", "--schema", kw["schema"]]
    for key, value in kw.items():
        if key not in ("engine", "schema"):
            args += ["-o", f"{key}={value}"]
    return args


def test_kill_9_loses_nothing_acknowledged_and_runs_get_marked_stale(
    engine, client_kwargs, fault_trials, record_property
):
    by_api = {"sync": prepare_database(client_kwargs, "killed-sync"),
              "async": prepare_database(client_kwargs, "killed-async")}
    rng = random.Random(f"kill-{engine}")
    jobs = []
    for trial in range(fault_trials):
        api = ("sync", "async")[trial % 2]
        jobs.append({
            "program": api,
            "client": dict(client_kwargs),
            "experiment_id": by_api[api],
            "start": api == "sync",
            "steps": 5000,
            "pause": 0.002,
            "signal": "SIGKILL",
            "at": rng.randint(0, 30),
            "delay": rng.uniform(0, 0.003),
            "timeout": 60.0,
        })
    results = run_jobs(jobs)
    failures, rows_checked, killed = [], 0, {"sync": [], "async": []}
    for trial, (job, result) in enumerate(zip(jobs, results, strict=True)):
        child = outcome(result["children"][0])
        where = f"trial {trial} (kill after {job['at']} steps): "
        if result["hung"] or child.run_id is None or child.signalled_at is None:
            failures.append(where + "was not killed mid-run: " + child.describe())
            continue
        killed[job["program"]].append(child.run_id)
        if child.returncode != -signal.SIGKILL:
            failures.append(where + f"exit status {child.returncode}: " + child.describe())
        status, time_updated = run_row(client_kwargs, child.run_id)
        if status != "RUNNING":
            failures.append(where + f"status {status}, expected RUNNING")
        rows = metric_rows(client_kwargs, child.run_id)
        missing = sorted(set(child.acked) - set(rows))
        if missing:
            failures.append(where + f"acknowledged steps missing: {missing}")
        extra = sorted(set(rows) - set(child.acked))
        if len(extra) > 1 or extra and extra[0] != len(child.acked):
            failures.append(where + f"unexpected rows for steps {extra}")
        failures += [where + p for p in check_rows(rows, job["steps"])]
        rows_checked += len(rows)
        # time_updated: set by a write that committed (at most TOUCH_INTERVAL before
        # the last acknowledged one, or the one in flight), never after the kill.
        updated = None if time_updated is None else as_timestamp(time_updated)
        low = (child.ack_times[child.acked[-1]] - TOUCH_INTERVAL.total_seconds()
               if child.acked else child.signalled_at - 30)
        if updated is None or not low - 0.001 <= updated <= child.signalled_at + 0.001:
            failures.append(where + f"time_updated {updated} not between the last "
                            f"acknowledged call ({low}) and the kill ({child.signalled_at})")
    if engine == "sqlite":
        check = read(client_kwargs, "PRAGMA integrity_check")
        if check != [("ok",)]:
            failures.append(f"integrity_check: {check}")
    record_property("faults.trials", len(jobs))
    record_property("faults.rows_checked", rows_checked)
    assert not failures, f"{len(failures)} failures in {len(jobs)} trials:\n" + "\n".join(
        failures[:10]
    )

    # Stale runs: not before STALE_AFTER without an update, NODE_FAIL after.
    client = sqltrack.Client(**client_kwargs)
    try:
        assert sqltrack.mark_stale_runs(client, older_than=3600) == []
        last = max(as_timestamp(run_row(client_kwargs, r)[1]) for v in killed.values() for r in v)
        time.sleep(max(0.0, last + STALE_AFTER + 0.1 - time.time()))
        marked = sqltrack.mark_stale_runs(client, older_than=STALE_AFTER,
                                          experiment_id=by_api["sync"])
    finally:
        client.close()
    assert marked == sorted(killed["sync"])
    command = [sys.executable, "-m", "sqltrack", *cli_connection(client_kwargs), "mark-stale",
               "--older-than", str(STALE_AFTER), "--experiment", "killed-async", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=clean_environ(),
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_ids"] == sorted(killed["async"])
    statuses = {run_row(client_kwargs, r)[0] for v in killed.values() for r in v}
    assert statuses == {"NODE_FAIL"}
