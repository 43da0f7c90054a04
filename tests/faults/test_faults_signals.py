"""SIGTERM, SIGINT or an exception at a random step of a tracked run, on both engines.

Each trial is a child process logging metrics inside ``with run.track()``
(blocking API) or ``async with run.track()`` (async API), written through or
buffered. It prints each step once ``add_metrics`` has returned (acknowledged);
the test sends SIGTERM or SIGINT right after a random acknowledged step (plus
up to 3 ms, so the signal lands anywhere in the next call), or the child raises
at a random step. Then, read back with the raw driver:

* the run has the documented status: ``terminated`` for SIGTERM (default
  CANCELLED; the process exits with 143), ``interrupt`` for SIGINT (default
  CANCELLED; KeyboardInterrupt ends the process), ``exception`` for an
  exception (default FAILED); odd trials pass their own statuses;
* every acknowledged step is stored (buffered rows are flushed when ``track()``
  ends), every stored row holds exactly what was logged, nothing else is stored.

``--fault-trials=N`` trials per case (default 20).
"""

from __future__ import annotations

import random
import signal

import pytest
from support.faults import check_rows, metric_rows, outcome, prepare_database, run_jobs, run_row

pytestmark = pytest.mark.faults

CUSTOM = {"terminated": "PREEMPTED", "interrupt": "SUSPENDED", "exception": "OUT_OF_MEMORY"}
DEFAULT = {"terminated": "CANCELLED", "interrupt": "CANCELLED", "exception": "FAILED"}
KEY = {"SIGTERM": "terminated", "SIGINT": "interrupt", "raise": "exception"}
MAX_AT = 25  # the signal or exception comes after 0..MAX_AT acknowledged steps


def expected_exit(ending: str, returncode: int) -> bool:
    if ending == "SIGTERM":
        return returncode == 143
    if ending == "SIGINT":  # an uncaught KeyboardInterrupt ends Python by SIGINT
        return returncode in (-signal.SIGINT, 128 + signal.SIGINT)
    return returncode == 1


def jobs_for(api, mode, ending, kw, experiment_id, trials, rng) -> list[dict]:
    jobs = []
    for trial in range(trials):
        client = dict(kw)
        if mode == "buffered" and api == "sync":
            client.update(buffered=True, flush_rows=8, flush_interval=0.05)
        at = rng.randint(0, MAX_AT)
        job = {
            "program": api,
            "client": client,
            "experiment_id": experiment_id,
            "statuses": CUSTOM if trial % 2 else {},
            "buffered": mode == "buffered" and api == "async",
            "steps": 5000,
            "pause": 0.002,
            "timeout": 60.0,
        }
        if ending == "raise":
            job["raise_at"] = at
        else:
            job.update(signal=ending, at=at, delay=rng.uniform(0, 0.003))
        jobs.append(job)
    return jobs


@pytest.mark.parametrize("ending", ["SIGTERM", "SIGINT", "raise"])
@pytest.mark.parametrize("mode", ["write", "buffered"])
@pytest.mark.parametrize("api", ["sync", "async"])
def test_tracked_run_ends_with_its_status_and_all_acknowledged_rows(
    engine, client_kwargs, fault_trials, api, mode, ending, record_property
):
    experiment_id = prepare_database(client_kwargs)
    rng = random.Random(f"{engine}-{api}-{mode}-{ending}")
    jobs = jobs_for(api, mode, ending, client_kwargs, experiment_id, fault_trials, rng)
    results = run_jobs(jobs)
    failures, rows_checked = [], 0
    for trial, (job, result) in enumerate(zip(jobs, results, strict=True)):
        child = outcome(result["children"][0])
        where = f"trial {trial} ({ending} at step {job.get('at', job.get('raise_at'))}): "
        if result["hung"] or child.run_id is None or not child.entered:
            failures.append(where + "did not run to its end: " + child.describe())
            continue
        if not expected_exit(ending, child.returncode):
            failures.append(where + "unexpected exit status: " + child.describe())
        statuses = job["statuses"] or DEFAULT
        status, time_updated = run_row(client_kwargs, child.run_id)
        if status != statuses[KEY[ending]]:
            failures.append(where + f"status {status}, expected {statuses[KEY[ending]]}: "
                            + child.describe())
        if time_updated is None:
            failures.append(where + "time_updated not set")
        if child.acked != list(range(len(child.acked))):
            failures.append(where + f"acknowledged steps out of order: {child.acked}")
        if ending == "raise" and child.acked != list(range(job["raise_at"])):
            failures.append(where + f"acknowledged {child.acked}, expected up to the raise")
        rows = metric_rows(client_kwargs, child.run_id)
        missing = sorted(set(child.acked) - set(rows))
        if missing:
            failures.append(where + f"acknowledged steps missing: {missing}: " + child.describe())
        # Stored beyond the acknowledged: at most the step in flight when the signal came.
        extra = sorted(set(rows) - set(child.acked))
        if len(extra) > 1 or extra and extra[0] != len(child.acked):
            failures.append(where + f"unexpected rows for steps {extra}")
        failures += [where + p for p in check_rows(rows, job["steps"])]
        rows_checked += len(rows)
    record_property("faults.trials", len(jobs))
    record_property("faults.rows_checked", rows_checked)
    assert not failures, f"{len(failures)} failures in {len(jobs)} trials:\n" + "\n".join(
        failures[:10]
    )
