"""Citus under the faults a team meets (marker ``citus``; see tests/schema/test_citus.py):

* PgBouncer (transaction pooling, ``tests/support/pgbouncer.py``) in front of the
  coordinator: a client through it sets the schema up (distributed) and logs buffered and
  write-through runs; every row is stored, on both workers.
* A worker restarted (``pg_ctl`` on its data directory: the cluster's directory comes from
  ``SQLTRACK_TEST_CITUS_DIR``, as ``cluster.sh start DIR`` made it) in the middle of a
  buffered and a write-through run whose shards it holds: as for one server
  (tests/faults/test_faults_restart.py), nothing acknowledged is lost, no row is half
  written, a failed call raises a clear error, and logging goes on with the same client.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.citus import CITUS_DIR_ENV, raw, rows_per_worker
from support.faults import check_rows, metric_rows, metrics_of
from support.pgbouncer import running_pgbouncer
from support.restarts import CALL_BOUND, POOL_TIMEOUT, Logger, log_through_restarts

import sqltrack
from sqltrack.metrics.buffer import MetricWriteError

pytestmark = [pytest.mark.citus, pytest.mark.faults]

PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"


async def test_logging_through_pgbouncer_in_front_of_the_coordinator(citus_kwargs):
    server = {k: v for k, v in citus_kwargs.items() if k not in ("engine", "schema")}
    with running_pgbouncer(server, pool_size=2) as bouncer:
        kw = {**citus_kwargs, **bouncer.params}
        client = sqltrack.AsyncClient(**kw)
        buffered_client = sqltrack.AsyncClient(**kw, buffered=True)
        try:
            experiment = await sqltrack.AsyncExperiment.create(client, name="pooled")
            assert "distributed the tables on Citus" in (client.schema_outcome or "")
            assert client.pooled, "PgBouncer in transaction mode was not detected"
            direct = [await experiment.get_run() for _ in range(8)]
            other = await sqltrack.AsyncExperiment.create(buffered_client, name="pooled")
            buffered = [await other.get_run() for _ in range(8)]

            async def log(run: sqltrack.AsyncRun) -> None:
                for step in range(40):
                    await run.add_metrics(metrics_of(step), step=step)
                    if step % 10 == 0:
                        await run.add_tags(f"t{step}")

            await asyncio.gather(*(log(run) for run in direct + buffered))
            for run in buffered:
                await run.flush()
            ids = [run.id for run in direct + buffered]
        finally:
            await client.close()
            await buffered_client.close()
        assert "DuplicatePreparedStatement" not in bouncer.log
    for run_id in ids:
        rows = metric_rows(citus_kwargs, run_id)
        assert sorted(rows) == list(range(40)), (run_id, sorted(rows))
        assert check_rows(rows) == []
    counts = rows_per_worker(citus_kwargs, "metrics")
    assert sum(counts.values()) == 16 * 40
    assert len([c for c in counts.values() if c]) >= 2, counts
    assert raw(citus_kwargs, "SELECT count(*) FROM runs WHERE tags ? 't30'") == [(16,)]


def _worker_dir(kw: dict[str, Any], port: int) -> Path:
    """The data directory of the worker on ``port`` (``cluster.sh``: ``DIR/nodeI`` listens
    on the coordinator's port + I)."""
    base = os.environ.get(CITUS_DIR_ENV)
    assert base, (f"{CITUS_DIR_ENV} is not set: the worker restart test needs the "
                  "directory of the cluster (cluster.sh start DIR ...)")
    path = Path(base) / f"node{port - int(kw['port'])}"
    assert (path / "postgresql.conf").is_file(), f"no worker data directory at {path}"
    return path


def _pg_ctl(data: Path, *args: str) -> None:
    command = [PG_CTL, "-D", str(data), "-w", "-t", "120", *args]
    if os.geteuid() == 0:  # PostgreSQL refuses root; cluster.sh runs it as postgres
        command = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(command)]
    subprocess.run(command, check=True, capture_output=True, timeout=180)


def _restart_worker(data: Path, how: str, pause: float) -> None:
    if how == "restart":
        _pg_ctl(data, "-m", "fast", "-l", str(data / "log"), "restart")
        return
    _pg_ctl(data, "-m", "fast", "stop")
    time.sleep(pause)
    _pg_ctl(data, "-l", str(data / "log"), "start")


def _worker_of(kw: dict[str, Any], run_id: int) -> int:
    ((port,),) = raw(kw, "SELECT s.nodeport FROM citus_shards s WHERE s.shardid = "
                     "get_shard_id_for_distribution_column('runs', %s)", [run_id])
    return int(port)


async def test_a_worker_restart_loses_nothing_acknowledged(citus_kwargs, fault_trials,
                                                           record_property):
    kw = {**citus_kwargs, "pool_timeout": POOL_TIMEOUT}
    restarts = max(2, fault_trials // 5)
    client = sqltrack.AsyncClient(**kw)
    try:
        experiment = await sqltrack.AsyncExperiment.create(client, name="worker-restarts")
        # Two runs whose shards are on the same worker (the one restarted).
        first = await experiment.get_run()
        port = _worker_of(citus_kwargs, first.id)
        second = await experiment.get_run()
        while _worker_of(citus_kwargs, second.id) != port:
            second = await experiment.get_run()
        data = _worker_dir(citus_kwargs, port)
        direct, buffered = Logger(first), Logger(second)
        await buffered.run.set_buffered(flush_rows=10, flush_interval=0.05)
        windows = await log_through_restarts(
            (direct, buffered), restarts, lambda how: _restart_worker(data, how, 0.3))
        try:
            await buffered.run.flush()
        except MetricWriteError as error:
            raise AssertionError(f"the last flush, after the restarts, failed: {error}") from None
        # The same client goes on, on the restarted worker.
        await direct.run.add_metrics({"loss": 0.0, "seen": 0, "phase": "after"}, step=10**6)
    finally:
        await client.close()

    failures = []
    for logger, kind in ((direct, "write-through"), (buffered, "buffered")):
        hung = [c for c in logger.calls if isinstance(c[3], asyncio.TimeoutError)]
        if hung:
            failures.append(f"{kind}: {len(hung)} calls without an answer in {CALL_BOUND} s")
        if logger.successes_since(windows[-1][1]) < 20:
            failures.append(f"{kind}: fewer than 20 calls through after the last restart")
        rows = metric_rows(citus_kwargs, logger.run.id)
        rows.pop(10**6, None)
        missing = sorted(set(logger.acked) - logger.lost_steps - set(rows))
        if missing:
            failures.append(f"{kind}: acknowledged steps missing: {missing[:20]}")
        failures += check_rows(rows, len(logger.calls))
    errors = [c[3] for logger in (direct, buffered) for c in logger.calls if c[3] is not None]
    record_property("faults.citus_worker_restarts", restarts)
    print(f"{restarts} worker restarts, {len(direct.calls) + len(buffered.calls)} calls, "
          f"{len(errors)} failed during restarts: {sorted({type(e).__name__ for e in errors})}"
          f"; buffered rows reported lost: {len(buffered.lost_steps)}")
    if failures:
        for logger in (direct, buffered):
            for step, _, _, error in logger.calls:
                if error is not None:
                    print(f"{logger.run.id} step {step}: {error!r}")
    assert not failures, "\n".join(failures[:10])
