"""Shared by the fault-injection tests: run trials in child processes, read the database back.

Trials run in ``tests/support/fault_runner.py`` processes (one per CPU, each forking one
child per trial); the database is read back with the raw drivers (sqlite3,
psycopg), never through sqltrack.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

import sqltrack

from .fault_runner import metrics_of

#: tests/support/, the folder of this module and of the runner script.
SUPPORT = Path(__file__).resolve().parent
RUNNER = SUPPORT / "fault_runner.py"
ROOT = SUPPORT.parent.parent

#: Runner processes working at once (the machine's cores, at least 2).
WORKERS = max(2, min(4, os.cpu_count() or 2))


def clean_environ() -> dict[str, str]:
    """The environment for child processes: no connection settings from outside."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SQLTRACK_DSN_") and k != "SQLTRACK_CONFIG_PATH"
    }
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


class _Runners:
    """Runner processes kept for the whole test session (each costs an interpreter start)."""

    def __init__(self, workers: int) -> None:
        self.processes = [
            subprocess.Popen(
                [sys.executable, str(RUNNER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=clean_environ(),
                text=True,
                bufsize=1,
                start_new_session=True,  # its own process group: killed with its children
            )
            for _ in range(workers)
        ]
        atexit.register(self.close)

    def run(self, jobs: list[dict], timeout: float) -> list[dict]:
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for index, job in enumerate(jobs):
            todo.put((index, job))
        results: list[Any] = [None] * len(jobs)
        broken: list[str] = []

        def work(process: subprocess.Popen) -> None:
            while not broken:
                try:
                    index, job = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    process.stdin.write(json.dumps(job) + "\n")
                    process.stdin.flush()
                    line = process.stdout.readline()
                except (OSError, ValueError):  # killed, see below
                    line = ""
                if not line:
                    broken.append(f"fault runner died ({process.poll()}): "
                                  f"{process.stderr.read()[-4000:]}")
                    return
                results[index] = json.loads(line)

        threads = [threading.Thread(target=work, args=(p,), daemon=True)
                   for p in self.processes]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        finished = False
        try:
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            finished = not any(thread.is_alive() for thread in threads)
        finally:
            if not finished or broken:  # also on a test timeout: no stale job may linger
                broken.append("stopped")
                self.kill()
        if not finished:
            raise AssertionError(f"fault runners did not finish {len(jobs)} jobs in {timeout} s")
        if broken and broken[0] != "stopped":
            raise AssertionError(broken[0])
        return results

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def kill(self) -> None:
        """End the runners and their children now (they are started afresh when needed)."""
        for process in self.processes:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            process.kill()
        for process in self.processes:
            process.wait()

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(OSError):
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


_runners: _Runners | None = None


def run_jobs(jobs: list[dict], timeout: float | None = None) -> list[dict]:
    """Run ``jobs`` in the session's runner processes, WORKERS at once; results in order.

    Each job runs its own child process(es), see tests/support/fault_runner.py.
    """
    global _runners
    if _runners is None or not _runners.alive():
        _runners = _Runners(WORKERS)
    for number, job in enumerate(jobs):
        job.setdefault("seed", number)
    if timeout is None:  # every job bounds itself; all of them, in turns, bound the whole
        timeout = sum(job.get("timeout", 60.0) for job in jobs) / WORKERS + 60.0
    return _runners.run(jobs, timeout)


@dataclass
class Outcome:
    """What one child process reported."""

    run_id: int | None
    entered: bool
    acked: list[int]
    ack_times: dict[int, float]
    errors: list[str]
    returncode: int
    signalled_at: float | None
    stderr: str
    lines: list[str] = field(repr=False)

    def describe(self) -> str:
        return (
            f"run {self.run_id}, exit {self.returncode}, acked {len(self.acked)} "
            f"steps (last {self.acked[-1] if self.acked else None}), errors {self.errors[:3]}\n"
            f"stderr: {self.stderr[-1500:]}"
        )


def outcome(child: dict) -> Outcome:
    run_id, entered, acked, times, errors = None, False, [], {}, []
    for line in child["lines"]:
        if line.startswith("run "):
            run_id = int(line.split()[1])
        elif line == "in":
            entered = True
        elif line.startswith("error "):
            errors.append(line[6:])
        else:
            step, before = line.split()
            acked.append(int(step))
            times[int(step)] = float(before)
    return Outcome(run_id, entered, acked, times, errors, child["returncode"],
                   child["signalled_at"], child["stderr"], child["lines"])


# -- reading the database with the raw drivers ------------------------------------------
def read(kw: dict[str, Any], sql: str, params: Any = ()) -> list[tuple]:
    """Rows of ``sql`` (``%s`` placeholders), read with the raw driver outside sqltrack."""
    if kw["engine"] == "sqlite":
        with contextlib.closing(sqlite3.connect(kw["dbpath"], timeout=60)) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
    conninfo = {k: v for k, v in kw.items()
                if k not in ("engine", "schema") and not k.startswith(("pool_", "flush_"))
                and k not in ("buffered", "buffer_max_rows")}
    with psycopg.connect(**conninfo, options=f"-c search_path={kw['schema']}") as conn:
        return conn.execute(sql, params).fetchall()


def metric_rows(kw: dict[str, Any], run_id: int) -> dict[int, tuple]:
    """``step -> (loss, seen, phase)`` of a run's rows."""
    rows = read(kw, "SELECT step, loss, seen, phase FROM metrics WHERE run_id = %s", [run_id])
    return {step: (loss, seen, phase) for step, loss, seen, phase in rows}


def check_rows(rows: dict[int, tuple], steps_tried: int | None = None) -> list[str]:
    """Problems with stored rows: values that are not what was logged (a half-written row)."""
    problems = []
    for step, values in rows.items():
        expected = metrics_of(step)
        want = (expected["loss"], expected["seen"], expected["phase"])
        loss_ok = values[0] is not None and math.isclose(float(values[0]), want[0])
        if not loss_ok or values[1:] != want[1:]:
            problems.append(f"step {step}: stored {values}, logged {want}")
        if steps_tried is not None and not 0 <= step < steps_tried:
            problems.append(f"step {step} was never logged")
    return problems


def run_row(kw: dict[str, Any], run_id: int) -> tuple[str, Any]:
    """``(status, time_updated)`` of a run."""
    rows = read(kw, "SELECT status, time_updated FROM runs WHERE id = %s", [run_id])
    assert rows, f"run {run_id} is not in the database"
    return rows[0]


def as_timestamp(value: Any) -> float:
    """A stored timestamp (datetime on PostgreSQL, ISO text on SQLite) as epoch seconds."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


def prepare_database(kw: dict[str, Any], name: str = "faults") -> int:
    """Create the base schema and one experiment; return its id."""

    async def go() -> int:
        client = sqltrack.AsyncClient(**kw)
        try:
            experiment = await sqltrack.AsyncExperiment.create(client, name=name)
            return experiment.id
        finally:
            await client.close()

    return asyncio.run(go())
