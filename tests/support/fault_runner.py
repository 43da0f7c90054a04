"""Child processes for the fault-injection tests (tests/faults/test_faults_*.py).

Run as ``python tests/support/fault_runner.py``: reads one JSON job per line on stdin and
answers each with one JSON result line on stdout. A job starts ``n`` child processes (default 1)
running one ``program`` (the functions ``program_*`` below) and, when it names a
``signal``, sends it to each child once that child has acknowledged ``at`` steps
(plus ``delay`` seconds), so the signal lands in the middle of its logging.

Why one runner forking its children: a fresh interpreter importing sqltrack
costs about half a second, and the tests run hundreds of trials. The runner
imports everything once, freezes it (``gc.freeze()``) and forks each child
before any client, event loop or thread exists. The child then returns to the
top level of this script and runs its program there, so it ends exactly as a
script does: an uncaught exception reaches ``sys.excepthook`` and exits with
status 1, ``Terminated`` with 143, an uncaught KeyboardInterrupt by SIGINT, and
``atexit`` handlers run.

What a child prints on its stdout (a pipe to the runner), one line each, flushed:

* ``run <id>``: the run it logs to;
* ``in``: it entered ``track()`` (or ``start()``);
* ``<step> <time>``: ``add_metrics`` for ``step`` returned (the step is
  acknowledged); ``time`` is ``time.time()`` just before the call;
* ``error <repr>``: a call raised (programs that carry on after errors).
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import json
import multiprocessing
import os
import random
import selectors
import signal
import sys
import tempfile
import time
from typing import Any

import psycopg  # noqa: F401
import psycopg_pool  # noqa: F401

import sqltrack
import sqltrack.engines.sqlite  # noqa: F401 - imported once here, before the forks
import sqltrack_sync  # noqa: F401

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}


def metrics_of(step: int) -> dict[str, Any]:
    """The metrics a program logs at ``step`` (the tests check each stored row against it)."""
    return {"loss": 1.0 / (step + 1), "seen": step * 32, "phase": f"p{step % 3}"}


def emit(line: str) -> None:
    print(line, flush=True)


# -- programs (run in a child) ------------------------------------------------
def _pause(job: dict) -> None:
    pause = job.get("pause", 0.0)
    if pause:
        time.sleep(random.uniform(0, pause))


def _log_steps(run, job: dict) -> None:
    raise_at = job.get("raise_at")
    for step in range(job["steps"]):
        if step == raise_at:
            raise ValueError(f"boom at step {step}")
        before = time.time()
        run.add_metrics(metrics_of(step), step=step)
        emit(f"{step} {before!r}")
        _pause(job)


def program_sync(job: dict) -> None:
    """Blocking API: ``with run.track()`` (or ``run.start()``), logging steps."""
    client = sqltrack.Client(**job["client"])
    run = sqltrack.Run(client, job["experiment_id"])
    emit(f"run {run.id}")
    if job.get("start"):
        run.start()
        emit("in")
        _log_steps(run, job)
        return
    with run.track(**job.get("statuses", {})):
        emit("in")
        _log_steps(run, job)


async def _async_main(job: dict) -> None:
    client = sqltrack.AsyncClient(**job["client"])
    try:
        run = await sqltrack.AsyncRun.create(client, job["experiment_id"])
        emit(f"run {run.id}")
        if job.get("buffered"):
            await run.set_buffered(flush_rows=8, flush_interval=0.05)
        if job.get("start"):
            await run.start()
            emit("in")
            await _alog_steps(run, job)
            return
        async with run.track(**job.get("statuses", {})):
            emit("in")
            await _alog_steps(run, job)
    finally:
        await client.close()


async def _alog_steps(run, job: dict) -> None:
    raise_at = job.get("raise_at")
    pause = job.get("pause", 0.0)
    for step in range(job["steps"]):
        if step == raise_at:
            raise ValueError(f"boom at step {step}")
        before = time.time()
        await run.add_metrics(metrics_of(step), step=step)
        emit(f"{step} {before!r}")
        await asyncio.sleep(random.uniform(0, pause) if pause else 0)


def program_async(job: dict) -> None:
    """Async API: ``async with run.track()`` (or ``await run.start()``), logging steps."""
    asyncio.run(_async_main(job))


def program_writer(job: dict, barrier) -> None:
    """One of several concurrent writers: its own run, ``steps`` rows, errors counted.

    All writers open the database at the same moment (a new SQLite file is created
    by all of them at once), then log at the same moment.
    """
    barrier.wait(60)
    client = sqltrack.Client(**job["client"])
    try:
        run = sqltrack.Experiment(client, name=job["experiment"]).get_run()
    except Exception as error:  # noqa: BLE001 - counted by the test
        emit(f"error {error!r}")
        barrier.abort()
        raise
    emit(f"run {run.id}")
    barrier.wait(60)
    with run.track():
        emit("in")
        for step in range(job["steps"]):
            before = time.time()
            try:
                run.add_metrics(metrics_of(step), step=step)
            except Exception as error:  # noqa: BLE001 - counted by the test
                emit(f"error {error!r}")
                continue
            emit(f"{step} {before!r}")
    client.close()


def program_new_column(job: dict, barrier) -> None:
    """Round after round, all writers add the same new metric column at one moment."""
    client = sqltrack.Client(**job["client"])
    run = sqltrack.Run(client, job["experiment_id"])
    run.add_metrics({"warm": 1.0}, step=-1)  # connected and warm before the race
    emit(f"run {run.id}")
    emit("in")
    for step in range(job["rounds"]):
        name = f"{job['prefix']}_{step}"
        barrier.wait(60)
        before = time.time()
        try:
            run.add_metrics({name: step * 1000 + run.id % 1000}, step=step)
        except Exception as error:  # noqa: BLE001 - counted by the test
            emit(f"error {error!r}")
            continue
        emit(f"{step} {before!r}")
    client.close()


PROGRAMS = {
    "sync": program_sync,
    "async": program_async,
    "writer": program_writer,
    "new_column": program_new_column,
}


# -- the runner ------------------------------------------------------------------
class ChildTask:
    """What a forked child runs once it is back at the top level of the script."""

    def __init__(self, job: dict, index: int, barrier) -> None:
        self.job = job
        self.index = index
        self.barrier = barrier

    def run(self) -> None:
        # As a script started from a terminal, whatever the test run inherited (a shell
        # starts background jobs with SIGINT ignored): Ctrl-C raises KeyboardInterrupt,
        # SIGTERM has its default action.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # A child that hangs gets SIGUSR1 first: its threads' stacks go to stderr.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        random.seed(self.job.get("seed", 0) * 1000 + self.index)
        program = PROGRAMS[self.job["program"]]
        if self.barrier is None:
            program(self.job)
        else:
            program(self.job, self.barrier)


class Child:
    def __init__(self, pid: int, fd: int, err, index: int) -> None:
        self.pid = pid
        self.fd = fd
        self.err = err
        self.index = index
        self.buffer = b""
        self.lines: list[str] = []
        self.acks = 0
        self.entered = False
        self.signalled_at: float | None = None
        self.open = True


def _start_children(job: dict) -> list[Child] | ChildTask:
    n = job.get("n", 1)
    barrier = multiprocessing.get_context("fork").Barrier(n) if n > 1 else None
    children: list[Child] = []
    for index in range(n):
        read_fd, write_fd = os.pipe()
        err = tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:  # the child: stdout is the pipe, stderr the file
            os.close(read_fd)
            for sibling in children:
                os.close(sibling.fd)
            os.dup2(write_fd, 1)
            os.dup2(err.fileno(), 2)
            os.close(write_fd)
            return ChildTask(job, index, barrier)
        os.close(write_fd)
        children.append(Child(pid, read_fd, err, index))
    return children


def _ready_for_signal(child: Child, at: int) -> bool:
    return child.entered and child.acks >= at


def run_job(job: dict) -> dict | ChildTask:
    started = time.monotonic()
    children = _start_children(job)
    if isinstance(children, ChildTask):
        return children
    sig = SIGNALS.get(job.get("signal") or "")
    at = job.get("at", 0)
    deadline = started + job.get("timeout", 60.0)
    hung = False
    selector = selectors.DefaultSelector()
    for child in children:
        selector.register(child.fd, selectors.EVENT_READ, child)
    pending = len(children)
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            hung = True
            for child in children:
                if child.open:
                    _kill(child.pid, signal.SIGUSR1)  # stacks to stderr, then the end
            time.sleep(1.0)
            for child in children:
                if child.open:
                    _kill(child.pid, signal.SIGKILL)
            break
        for key, _ in selector.select(min(remaining, 1.0)):
            child = key.data
            chunk = os.read(child.fd, 65536)
            if not chunk:
                selector.unregister(child.fd)
                os.close(child.fd)
                child.open = False
                pending -= 1
                continue
            child.buffer += chunk
            *complete, child.buffer = child.buffer.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                child.lines.append(line)
                if line == "in":
                    child.entered = True
                elif line[:1].isdigit() or line[:1] == "-":
                    child.acks += 1
            if sig is not None and child.signalled_at is None and _ready_for_signal(child, at):
                if job.get("delay"):
                    time.sleep(job["delay"])
                child.signalled_at = time.time()
                _kill(child.pid, sig)
    selector.close()
    results = []
    for child in children:
        if child.open:
            os.close(child.fd)
        _, status = os.waitpid(child.pid, 0)
        child.err.seek(0)
        stderr = child.err.read().decode(errors="replace")
        child.err.close()
        results.append(
            {
                "lines": child.lines,
                "partial": child.buffer.decode(errors="replace"),
                "returncode": os.waitstatus_to_exitcode(status),
                "signalled_at": child.signalled_at,
                "stderr": stderr[-4000:],
            }
        )
    return {"job": job, "children": results, "hung": hung,
            "seconds": time.monotonic() - started}


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main() -> ChildTask | None:
    # Everything imported so far is shared with the children, copy-on-write: frozen,
    # the garbage collector never touches (copies) it, which makes a child's start
    # and exit about 4x cheaper.
    gc.freeze()
    for line in sys.stdin:
        outcome = run_job(json.loads(line))
        if isinstance(outcome, ChildTask):
            return outcome
        sys.stdout.write(json.dumps(outcome) + "\n")
        sys.stdout.flush()
    return None


if __name__ == "__main__":
    task = main()
    if task is not None:
        task.run()  # in a forked child, at the top level: it ends as a script would
