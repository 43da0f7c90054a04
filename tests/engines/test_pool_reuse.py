"""Which pooled connection a call gets: the one released last (a warm server backend).

psycopg_pool hands out its idle connections oldest first, so a lone writer with two
connections in the pool alternates between two server backends and finds each of
them cold. The PostgreSQL engine reuses the connection released last instead
(``PostgresEngine._warm``), never while another task waits for the pool, and sends
it back through the pool every ``WARM_SECONDS``. The backend-identity tests are
PostgreSQL's alone: a SQLite file has no server backends to alternate between. The
hand-over to a waiting task is tested on both engines.
"""

from __future__ import annotations

import asyncio

import pytest
from support.helpers import read_raw
from support.waiting import until

import sqltrack
from sqltrack.engines import postgres


async def _backend_pids(client: sqltrack.AsyncClient, calls: int) -> list[int]:
    """The server process of each of ``calls`` sequential statements, after the pool
    was made to hold two connections (two statements at once)."""
    await asyncio.gather(*(client.execute("SELECT pg_sleep(0.05)") for _ in range(2)))
    pids = []
    for _ in range(calls):
        (pid,), = await client.execute("SELECT pg_backend_pid()")
        pids.append(pid)
    return pids


@pytest.fixture
def pg_kwargs(pg_dsn, pg_schema):
    from support.helpers import pg_params

    return {"engine": "postgres", **pg_params(pg_dsn), "schema": pg_schema,
            "pool_min_size": 2, "pool_max_size": 4}


async def test_one_writer_stays_on_one_server_backend(pg_kwargs) -> None:
    client = sqltrack.AsyncClient(**pg_kwargs)
    try:
        pids = await _backend_pids(client, 20)
        run = await (await sqltrack.AsyncExperiment.create(client, name="warm")).get_run()
        for step in range(20):
            await run.add_metrics({"loss": step / 2}, step=step)
        (after,), = await client.execute("SELECT pg_backend_pid()")
    finally:
        await client.close()
    assert len(set(pids)) == 1 and after == pids[0], (pids, after)
    assert read_raw(pg_kwargs, "SELECT count(*) FROM metrics WHERE run_id = %s",
                    (run.id,)) == [(20,)]


async def test_warm_connection_goes_back_through_the_pool(pg_kwargs, monkeypatch) -> None:
    """With no time out left, every call goes through the pool again: psycopg_pool's
    oldest-first order shows (two backends take turns), so its rules apply again."""
    monkeypatch.setattr(postgres, "WARM_SECONDS", 0.0)
    client = sqltrack.AsyncClient(**pg_kwargs)
    try:
        pids = await _backend_pids(client, 10)
    finally:
        await client.close()
    assert len(set(pids)) == 2, pids


def waiting_for_a_connection(client: sqltrack.AsyncClient) -> bool:
    """Whether a task of ``client`` waits in its engine's pool for a connection."""
    engine = client.connections.engine
    if engine.name == "postgres":
        return engine._waiting > 0  # what keeps a released connection from being kept warm
    return bool(engine._pool._slots._waiters)  # SQLite: tasks queued on the pool's slots


async def test_waiting_task_gets_the_released_connection(client_kwargs) -> None:
    """One connection, held by a block while another task asks for one: when the block
    ends the waiting task gets it at once (it is not kept aside as the warm one)."""
    kwargs = {**client_kwargs, "pool_max_size": 1, "pool_timeout": 20}
    client = sqltrack.AsyncClient(**kwargs)
    try:
        run = await (await sqltrack.AsyncExperiment.create(client, name="wait")).get_run()
        await run.add_metrics({"loss": 0.0}, step=0)
        order: list[str] = []
        block_open = asyncio.Event()

        async def block() -> None:
            async with client:
                await client.execute("SELECT 1")
                block_open.set()
                await until(lambda: waiting_for_a_connection(client),
                            "the writer waiting for the one connection")
                order.append("block")

        async def writer() -> None:
            await block_open.wait()
            await client.execute("SELECT 1")  # waits for the one connection
            order.append("writer")
            for step in range(1, 4):
                await run.add_metrics({"loss": step / 4}, step=step)

        await asyncio.wait_for(asyncio.gather(block(), writer()), 15)
    finally:
        await client.close()
    assert order == ["block", "writer"]
    assert read_raw(client_kwargs, "SELECT count(*) FROM metrics WHERE run_id = %s",
                    (run.id,)) == [(4,)]
