"""Behind a real PgBouncer 1.18 in transaction mode (item 3 of issue 11).

A transaction pooler hands each transaction whatever server connection is
free, so nothing tied to a session holds: server-side prepared statements
(psycopg prepares a statement run 5 times: ``DuplicatePreparedStatement``
once two clients share a server connection), a ``search_path`` set once per
connection for ``schema`` (writes land in another client's schema), session
advisory locks. Checked here, each against a throwaway server of our own with
PgBouncer in front of it (``tests/support/pgbouncer.py``; a missing ``pgbouncer`` fails):

* several clients, each with its own ``schema``, sharing one server connection:
  no error, every row in its own client's schema, nothing prepared on the server;
* a pooler is detected without being configured (and ``pooler=transaction``
  forces it);
* 100 writer processes, each its own run, ``schema`` set, server pool of 8:
  0 failures, every row in the schema, at most 8 server connections at any
  sample of ``pg_stat_activity``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import warnings

import psycopg
import pytest
from support.faults import check_rows, metrics_of, outcome, run_jobs
from support.helpers import pg_params, start_embedded_postgres
from support.pgbouncer import running_pgbouncer

import sqltrack

pytestmark = pytest.mark.faults

SERVER_POOL = 8
WRITERS = 100
STEPS = 5


@pytest.fixture(scope="module")
def server():
    """libpq keywords of a throwaway PostgreSQL server (embedded-postgres)."""
    uri, handle = start_embedded_postgres()
    yield pg_params(uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle.cleanup()


def direct(server: dict[str, str], schema: str | None = None) -> psycopg.Connection:
    """A raw connection straight to the server (not through PgBouncer)."""
    options = {"options": f"-c search_path={schema}"} if schema else {}
    return psycopg.connect(**server, **options, autocommit=True)


def drop_schemas(server: dict[str, str], *schemas: str) -> None:
    with direct(server) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_clients_sharing_a_server_connection_keep_their_schemas(server):
    """The "Seen" of issue 11: DuplicatePreparedStatement, and rows in another schema."""
    schemas = [f"pgb_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    with running_pgbouncer(server, pool_size=1) as bouncer:
        clients = [
            sqltrack.AsyncClient(engine="postgres", **bouncer.params, schema=schema)
            for schema in schemas
        ]
        try:
            runs = []
            for client, schema in zip(clients, schemas, strict=True):
                experiment = await sqltrack.AsyncExperiment.create(client, name=schema)
                runs.append(await experiment.get_run())

            async def log(run: sqltrack.AsyncRun) -> None:
                for step in range(30):  # well past psycopg's prepare threshold (5)
                    await run.add_metrics(metrics_of(step), step=step)
                    await run.add_tags(f"t{step % 3}")
                    await asyncio.sleep(0)

            await asyncio.gather(*(log(run) for run in runs))
            for run in runs:
                await run.client.query("SELECT count(*) FROM metrics WHERE run_id = %s", [run.id])
        finally:
            for client in clients:
                await client.close()
        with direct(server) as conn:
            prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        try:
            for run, schema in zip(runs, schemas, strict=True):
                with direct(server, schema) as conn:
                    rows = conn.execute(
                        "SELECT step, loss, seen, phase FROM metrics WHERE run_id = %s",
                        [run.id],
                    ).fetchall()
                    stored = {step: (loss, seen, phase) for step, loss, seen, phase in rows}
                    owners = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
                assert sorted(stored) == list(range(30)), (schema, sorted(stored))
                assert not check_rows(stored)
                assert owners == 1, f"schema {schema} holds {owners} runs (another's writes)"
            assert prepared == (0,), "a statement prepared on this session's server connection"
        finally:
            drop_schemas(server, *schemas)


async def test_combined_writes_keep_their_schemas(server):
    """Concurrent runs of one client, more than its pool (``sqltrack.metrics.combining``): the
    combined statements name the client's schema, prepare nothing on the server, and
    every row lands in its own schema."""
    schemas = [f"pgb_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with running_pgbouncer(server, pool_size=2) as bouncer:
        clients = [
            sqltrack.AsyncClient(engine="postgres", **bouncer.params, schema=schema,
                                 pool_max_size=2)
            for schema in schemas
        ]
        try:
            runs = []
            for client, schema in zip(clients, schemas, strict=True):
                experiment = await sqltrack.AsyncExperiment.create(client, name=schema)
                for _ in range(12):
                    run = await experiment.get_run()
                    await run.add_metrics(metrics_of(0), step=0)
                    runs.append(run)

            async def log(run: sqltrack.AsyncRun) -> None:
                for step in range(1, 11):
                    await run.add_metrics(metrics_of(step), step=step)

            await asyncio.wait_for(asyncio.gather(*(log(run) for run in runs)), 120)
        finally:
            for client in clients:
                await client.close()
        with direct(server) as conn:
            prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        try:
            for schema in schemas:
                with direct(server, schema) as conn:
                    rows, transactions = conn.execute(
                        "SELECT count(*), count(DISTINCT xmin::text) FROM metrics WHERE step > 0"
                    ).fetchone()
                    owners = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
                assert rows == 12 * 10 and owners == 12, (schema, rows, owners)
                assert transactions < rows, (schema, transactions)  # rows were combined
            assert prepared == (0,), "a statement prepared on this session's server connection"
        finally:
            drop_schemas(server, *schemas)


async def test_a_pooler_is_detected_and_can_be_configured(server):
    schema = f"pgb_{uuid.uuid4().hex[:8]}"
    with running_pgbouncer(server, pool_size=2) as bouncer:
        try:
            for extra in ({}, {"pooler": "transaction"}):
                client = sqltrack.AsyncClient(
                    engine="postgres", **bouncer.params, schema=schema, **extra
                )
                try:
                    experiment = await sqltrack.AsyncExperiment.create(client, name=str(extra))
                    run = await experiment.get_run()
                    for step in range(12):
                        await run.add_metrics({"loss": float(step)}, step=step)
                    assert client.pooled, "PgBouncer in transaction mode was not detected"
                finally:
                    await client.close()
            plain = sqltrack.AsyncClient(engine="postgres", **server, schema=schema)
            try:
                await plain.query("SELECT 1")
                assert not plain.pooled, "a direct connection taken for a pooler"
            finally:
                await plain.close()
        finally:
            drop_schemas(server, schema)


def test_100_writer_processes_through_pgbouncer(server, record_property):
    schema = f"pgb_{uuid.uuid4().hex[:8]}"
    with running_pgbouncer(server, pool_size=SERVER_POOL, max_clients=4 * WRITERS) as bouncer:
        kw = {"engine": "postgres", **bouncer.params, "schema": schema, "pool_min_size": 1,
              "pool_max_size": 2, "pool_timeout": 60}
        peak, samples = 0, 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, samples
            with direct(server) as conn:
                while not done.is_set():
                    count = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                        "'client backend' AND pid <> pg_backend_pid()"
                    ).fetchone()[0]
                    peak, samples = max(peak, count), samples + 1
                    time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            job = {"program": "writer", "n": WRITERS, "client": kw, "experiment": "pgbouncer",
                   "steps": STEPS, "timeout": 240.0}
            started = time.monotonic()
            [result] = run_jobs([job], timeout=300)
            seconds = time.monotonic() - started
        finally:
            done.set()
            sampler.join(10)
        log = bouncer.log
    try:
        outcomes = [outcome(child) for child in result["children"]]
        failures = [o.describe() for o in outcomes if o.errors or o.returncode != 0]
        with direct(server, schema) as conn:
            runs = conn.execute("SELECT id, status FROM runs").fetchall()
            rows = conn.execute("SELECT run_id, step, loss, seen, phase FROM metrics").fetchall()
        with direct(server) as conn:
            elsewhere = conn.execute(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = "
                "'metrics' AND table_schema <> %s", [schema]
            ).fetchall()
    finally:
        drop_schemas(server, schema)
    by_run: dict[int, dict[int, tuple]] = {}
    for run_id, step, *values in rows:
        by_run.setdefault(run_id, {})[step] = tuple(values)
    run_ids = {o.run_id for o in outcomes}
    record_property("faults.pgbouncer_writers", WRITERS)
    record_property("faults.pgbouncer_failures", len(failures))
    record_property("faults.pgbouncer_peak_server_connections", peak)
    print(f"{WRITERS} writers through PgBouncer (pool {SERVER_POOL}) in {seconds:.1f} s: "
          f"{len(failures)} failed, {len(rows)} rows, peak {peak} server connections "
          f"over {samples} samples")
    assert not failures, "\n".join(failures[:5]) + "\n" + log[-3000:]
    assert len(run_ids) == WRITERS and None not in run_ids
    assert sorted(status for _, status in runs) == ["COMPLETED"] * WRITERS
    for run_id in run_ids:
        assert sorted(by_run.get(run_id, {})) == list(range(STEPS)), run_id
        assert not check_rows(by_run[run_id])
    assert not elsewhere, f"metrics tables outside {schema}: {elsewhere}"
    assert samples > 10
    assert 1 <= peak <= SERVER_POOL, f"{peak} server connections with a pool of {SERVER_POOL}"

