"""No triggers (schema:5, Citus-clean): an explicit run or experiment id moves the id
sequence past it from sqltrack's own statements, in the same transaction and race-free;
databases made with the triggers ``sqltrack_advance_id`` (schema:4 and earlier builds)
lose them in place."""

from __future__ import annotations

import asyncio
import threading

import psycopg
from support.helpers import assert_nothing_to_upgrade, read_raw

import sqltrack

#: The trigger function and triggers as schema:4 (and the early builds) made them.
OLD_TRIGGERS = """
CREATE OR REPLACE FUNCTION sqltrack_advance_id() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    seq regclass := pg_get_serial_sequence(
        quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME), 'id')::regclass;
BEGIN
    IF NEW.id > COALESCE(pg_sequence_last_value(seq), 0) THEN
        PERFORM setval(seq, NEW.id);
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER experiments_advance_id BEFORE INSERT ON experiments
    FOR EACH ROW EXECUTE FUNCTION sqltrack_advance_id();
CREATE OR REPLACE TRIGGER runs_advance_id BEFORE INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION sqltrack_advance_id();
"""


def triggers(kw) -> list[tuple]:
    """Every user trigger of the database's schema (none is the goal)."""
    if kw["engine"] == "sqlite":
        return read_raw(kw, "SELECT name FROM sqlite_master WHERE type = 'trigger'")
    return read_raw(kw, "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = "
                    "t.tgrelid WHERE c.relnamespace = %s::regnamespace AND NOT t.tgisinternal",
                    [kw["schema"]])


async def test_fresh_database_has_no_triggers(client, client_kwargs):
    await client.execute("SELECT 1")
    assert triggers(client_kwargs) == []
    if client.engine == "postgres":
        assert read_raw(client_kwargs, "SELECT to_regprocedure('sqltrack_advance_id()')") == [
            (None,)]


async def test_explicit_id_into_a_never_used_sequence(client):
    """``is_called`` false: the next value would be the start value, 1, itself."""
    exp = await sqltrack.AsyncExperiment.create(client, 1, "one")
    assert (await sqltrack.AsyncExperiment.create(client, name="two")).id == 2
    run = await exp.get_run(1)
    assert run.id == 1
    assert (await exp.get_run()).id == 2


async def test_explicit_id_below_the_sequence_leaves_it(client):
    exp = await sqltrack.AsyncExperiment.create(client, name="e")
    generated = [(await exp.get_run()).id for _ in range(5)]
    await client.execute(f"DELETE FROM runs WHERE id = {generated[1]}")
    await exp.get_run(generated[1])  # a hole below the sequence: it stays where it is
    assert (await exp.get_run()).id == generated[-1] + 1


async def test_explicit_id_inside_a_rolled_back_block_is_harmless(client):
    exp = await sqltrack.AsyncExperiment.create(client, name="e")
    try:
        async with client:
            await exp.get_run(500)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert await client.query("SELECT id FROM runs") == []
    assert (await exp.get_run()).id > 0  # the sequence may have moved: never backwards


async def test_concurrent_explicit_inserters_never_move_the_sequence_back(client_kwargs):
    """Many clients insert explicit ids at once (ascending and descending interleaved);
    afterwards every generated id is above all of them."""
    setup = sqltrack.AsyncClient(**client_kwargs)
    try:
        exp = await sqltrack.AsyncExperiment.create(setup, name="race")
        base = (await exp.get_run()).id
    finally:
        await setup.close()
    ids = [base + 10 * (i + 1) for i in range(40)]
    order = [ids[i // 2] if i % 2 else ids[-1 - i // 2] for i in range(len(ids))]

    async def insert(chunk: list[int]) -> None:
        client = sqltrack.AsyncClient(**client_kwargs)
        try:
            for run_id in chunk:
                await sqltrack.AsyncRun.create(client, exp.id, run_id)
        finally:
            await client.close()

    await asyncio.gather(*(insert(order[k::4]) for k in range(4)))
    client = sqltrack.AsyncClient(**client_kwargs)
    try:
        generated = [(await sqltrack.AsyncRun.create(client, exp.id)).id for _ in range(5)]
        assert min(generated) > max(ids)
    finally:
        await client.close()


async def test_explicit_inserters_serialize_on_the_sequence(pg_dsn, pg_schema):
    """PostgreSQL: while one transaction advances the sequence (its lock held), a second
    explicit insert that must advance it waits; a stale value is never written over a
    newer one. Row writers and generated ids do not wait."""
    from support.helpers import pg_params

    kw = {"engine": "postgres", **pg_params(pg_dsn), "schema": pg_schema}
    client = sqltrack.AsyncClient(**kw)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="lock")
        first = await exp.get_run()
        conninfo = {k: v for k, v in kw.items() if k not in ("engine", "schema")}
        with psycopg.connect(**conninfo, options=f"-c search_path={pg_schema}") as holder:
            holder.execute("LOCK TABLE runs IN SHARE UPDATE EXCLUSIVE MODE")
            # Writers of rows and generated ids go on.
            other = await exp.get_run()
            await other.add_metrics({"loss": 1.0}, step=0)
            await first.set_status("RUNNING")
            done = threading.Event()
            task = asyncio.ensure_future(exp.get_run(first.id + 1000))
            task.add_done_callback(lambda _: done.set())
            await asyncio.sleep(0.5)
            assert not done.is_set()  # waits for the holder
            holder.rollback()
        run = await asyncio.wait_for(task, 30)
        assert run.id == first.id + 1000
        assert (await exp.get_run()).id == first.id + 1001
    finally:
        await client.close()


async def test_schema4_database_loses_its_triggers(pg_dsn, pg_schema):
    """A database of schema:4 (with the triggers): upgraded on open, triggers and function
    dropped, mark schema:7 (the current), explicit ids still advance the sequence."""
    from support.helpers import pg_params

    kw = {"engine": "postgres", **pg_params(pg_dsn), "schema": pg_schema}
    client = sqltrack.AsyncClient(**kw)
    try:
        exp = await sqltrack.AsyncExperiment.create(client, name="old")
        await exp.get_run()
        async with client:
            for statement in OLD_TRIGGERS.split("\nCREATE OR REPLACE TRIGGER"):
                await client.execute(statement if statement.lstrip().startswith("CREATE")
                                     else "CREATE OR REPLACE TRIGGER" + statement)
            await client.query("UPDATE applied_migrations SET name = 'sqltrack:schema:4' "
                               "WHERE name = 'sqltrack:schema:7'")
    finally:
        await client.close()
    assert sorted(triggers(kw)) == [("experiments_advance_id",), ("runs_advance_id",)]
    client = sqltrack.AsyncClient(**kw)
    try:
        await client.execute("SELECT 1")
        assert "no triggers" in (client.schema_outcome or "")
        assert triggers(kw) == []
        assert read_raw(kw, "SELECT to_regprocedure('sqltrack_advance_id()')") == [(None,)]
        marks = {r[0] for r in read_raw(kw, "SELECT name FROM applied_migrations")}
        assert "sqltrack:schema:7" in marks and "sqltrack:schema:4" in marks
        await sqltrack.AsyncRun.create(client, exp.id, 10**9)
        assert (await sqltrack.AsyncRun.create(client, exp.id)).id == 10**9 + 1
        await sqltrack.AsyncExperiment.create(client, 10**6, "explicit")
        assert (await sqltrack.AsyncExperiment.create(client, name="next")).id == 10**6 + 1
    finally:
        await client.close()
    await assert_nothing_to_upgrade(kw)
