"""``sqltrack sync`` killed (SIGKILL) mid-way and run again, and syncs at the same moment.

A SQLite source (runs with every kind of attribute, metrics and links) is synced by
``sqltrack sync`` processes into a fresh target per trial (SQLite file or PostgreSQL schema):

* killed: the child is sent SIGKILL when the target holds a random share of the rows
  (or at a random moment after its start, a quarter of the trials), plus up to 5 ms;
  then a second sync runs to the end. The target must equal the source exactly
  (row by row after id remapping), a SQLite target pass ``PRAGMA integrity_check``, and
  a third sync copy nothing.
* at once: two syncs of the same source and one of a second source, started together
  into one target; then both sources must be equal to the target, no run copied twice.

``--fault-trials=N`` killed trials per target engine (default 20); a quarter as many
(at least 2) concurrent ones.
"""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from support.faults import ROOT, WORKERS, clean_environ
from support.helpers import pg_params, read_raw
from support.transfer_helpers import differences, metric_row_count, populate

import sqltrack

pytestmark = pytest.mark.faults

PAGE_ROWS = 100  # small pages: many transactions for a kill to land in


def _settings(kw: dict[str, Any]) -> str:
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in kw.items())


def sync_command(source_kw: dict[str, Any], target_kw: dict[str, Any]) -> list[str]:
    """``sqltrack sync`` as a user runs it, printing its summary as JSON."""
    return [sys.executable, "-m", "sqltrack", "sync", "--from", _settings(source_kw),
            "--to", _settings(target_kw), "--page-rows", str(PAGE_ROWS), "--json",
            "--no-progress"]


def start_sync(source_kw: dict[str, Any], target_kw: dict[str, Any]) -> subprocess.Popen:
    return subprocess.Popen(sync_command(source_kw, target_kw), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_environ(), cwd=ROOT)


def finish(process: subprocess.Popen) -> dict[str, Any]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, f"sync exited {process.returncode}: {err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def make_source(path: str, runs: int, steps: int, prefix: str = "") -> dict[str, Any]:
    kw = {"engine": "sqlite", "dbpath": path}

    async def fill() -> None:
        client = sqltrack.AsyncClient(**kw)
        try:
            await populate(client, runs=runs, steps=steps, prefix=prefix)
        finally:
            await client.close()

    asyncio.run(fill())
    return kw


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = tmp_path_factory.mktemp("sources")
    return (make_source(str(folder / "node1.db"), runs=4, steps=600),
            make_source(str(folder / "node2.db"), runs=3, steps=300, prefix="n2-"))


@pytest.fixture
def targets(tmp_path, request):
    """``targets(engine)``: a fresh target database; PostgreSQL schemas dropped at the end."""
    schemas: list[str] = []

    def make(engine: str) -> dict[str, Any]:
        if engine == "sqlite":
            return {"engine": "sqlite", "dbpath": str(tmp_path / f"{uuid.uuid4().hex[:8]}.db")}
        schemas.append("t_" + uuid.uuid4().hex[:12])
        kw = {"engine": "postgres", **pg_params(request.getfixturevalue("pg_dsn")),
              "schema": schemas[-1]}
        with psycopg.connect(request.getfixturevalue("pg_dsn"), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schemas[-1]}"')
        return kw

    yield make
    if schemas:
        with psycopg.connect(request.getfixturevalue("pg_dsn"), autocommit=True) as conn:
            for name in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _target_rows(kw: dict[str, Any]) -> int:
    try:
        return metric_row_count(kw)
    except (psycopg.Error, Exception):  # noqa: BLE001 - tables not made yet
        return 0


def killed_trial(source_kw: dict, target_kw: dict, total: int, rng: random.Random) -> dict:
    """One sync killed mid-way, then one run to the end; what happened."""
    by_time = rng.random() < 0.25
    threshold = rng.randint(1, total - 1)
    moment = rng.uniform(0.0, 1.0)
    process = start_sync(source_kw, target_kw)
    started = time.monotonic()
    rows = 0
    while process.poll() is None:
        if by_time:
            if time.monotonic() - started >= moment:
                break
            time.sleep(0.005)
            continue
        rows = _target_rows(target_kw)
        if rows >= threshold:
            break
        time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 0.005))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    killed = process.returncode == -signal.SIGKILL
    at_kill = _target_rows(target_kw)
    summary = finish(start_sync(source_kw, target_kw))
    return {"killed": killed, "rows_at_kill": at_kill, "second": summary}


@pytest.mark.parametrize("target_engine", ["sqlite", "postgres"])
def test_sync_killed_mid_way_then_run_again_gives_an_exact_copy(
    sources, targets, target_engine, fault_trials, record_property
):
    source_kw = sources[0]
    total = metric_row_count(source_kw)
    rng = random.Random(f"sync-kill-{target_engine}")
    trials = [(targets(target_engine), random.Random(rng.random())) for _ in range(fault_trials)]
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda t: killed_trial(source_kw, t[0], total, t[1]), trials))
    problems = []
    for (target_kw, _), result in zip(trials, results, strict=True):
        found = differences(source_kw, target_kw)
        if found:
            problems.append(f"{result}: {found[:5]}")
        if target_engine == "sqlite":
            assert read_raw(target_kw, "PRAGMA integrity_check") == [("ok",)]
    third = finish(start_sync(source_kw, trials[0][0]))
    killed = [r for r in results if r["killed"]]
    record_property("faults.sync_kills", len(killed))
    record_property("faults.sync_rows_compared", total * len(trials))
    record_property("faults.sync_mismatches", len(problems))
    assert not problems, "\n".join(problems[:5])
    assert third["metric_rows"] == 0 and third["runs_created"] == 0
    assert third["runs_unchanged"] == 4
    # Most kills land in the middle: some rows were there, not all.
    middle = [r for r in killed if 0 < r["rows_at_kill"] < total]
    assert len(middle) >= len(trials) // 4, results


@pytest.mark.parametrize("target_engine", ["sqlite", "postgres"])
def test_syncs_at_the_same_moment_give_exact_copies(
    sources, targets, target_engine, fault_trials, record_property
):
    first_kw, second_kw = sources
    runs = [read_raw(kw, "SELECT COUNT(*) FROM runs")[0][0] for kw in sources]
    trials = max(2, fault_trials // 4)
    problems = []
    for _ in range(trials):
        target_kw = targets(target_engine)
        processes = [start_sync(first_kw, target_kw), start_sync(first_kw, target_kw),
                     start_sync(second_kw, target_kw)]
        summaries = [finish(p) for p in processes]
        for source_kw in sources:
            problems += differences(source_kw, target_kw)
        assert read_raw(target_kw, "SELECT COUNT(*) FROM runs") == [(sum(runs),)]
        # The two syncs of one source made its runs once between them.
        assert summaries[0]["runs_created"] + summaries[1]["runs_created"] == runs[0]
        again = finish(start_sync(first_kw, target_kw))
        assert (again["metric_rows"], again["runs_created"]) == (0, 0)
    record_property("faults.sync_concurrent_trials", trials)
    record_property("faults.sync_mismatches", len(problems))
    assert not problems, "\n".join(problems[:5])
