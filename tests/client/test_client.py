"""AsyncClient: reentrant per-task connections, transactions, raw SQL, closing, base schema."""

from __future__ import annotations

import asyncio
import threading

import pytest
from support.helpers import read_raw

import sqltrack

BASE_TABLES = {
    "experiments",
    "experiment_links",
    "runs",
    "run_links",
    "metrics",
    "applied_migrations",
    "system_metrics",
    "metric_values",
    "metric_names",
}


def own_marks(client: sqltrack.AsyncClient) -> list[tuple[str]]:
    """sqltrack's own rows in applied_migrations of a fresh database (PostgreSQL: plus
    0.1.x's ``base.sql``, so a 0.1.x ``setup`` skips its base script)."""
    marks = ["sqltrack:base", "sqltrack:schema:7"]
    return [(m,) for m in sorted(marks + (["base.sql"] if client.engine == "postgres" else []))]


def ph(client: sqltrack.AsyncClient) -> str:
    """The driver's own placeholder, for raw SQL through ``client.execute``."""
    return "?" if client.engine == "sqlite" else "%s"


async def names(client: sqltrack.AsyncClient) -> list[str]:
    rows = await client.query("SELECT name FROM experiments ORDER BY name")
    return [r[0] for r in rows]


async def table_names(client: sqltrack.AsyncClient) -> set[str]:
    if client.engine == "sqlite":
        rows = await client.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await client.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()"
        )
    return {r[0] for r in rows}


# -- reentrancy -------------------------------------------------------------------------
async def test_engine_name(client, engine):
    assert client.engine == engine


async def test_nested_blocks_share_one_connection(client):
    async with client as outer:
        assert client.held_connection() is outer
        async with client as inner:
            assert inner is outer
            async with client as innermost:
                assert innermost is outer
            assert client.held_connection() is outer
        assert client.held_connection() is outer
    assert client.held_connection() is None


async def test_cursor_inside_block_uses_held_connection(client):
    async with client as conn:
        async with client.cursor() as cursor:
            assert client.held_connection() is conn
            assert cursor is not None
        assert client.held_connection() is conn


async def test_tasks_get_different_connections(client):
    conns = {}
    first_in, second_in = asyncio.Event(), asyncio.Event()

    async def hold(name, mine, other):
        async with client as conn:
            conns[name] = conn
            mine.set()
            await other.wait()  # both tasks hold their connection at the same time
            async with client as again:
                assert again is conn
            assert client.held_connection() is conn

    await asyncio.gather(hold("a", first_in, second_in), hold("b", second_in, first_in))
    assert conns["a"] is not conns["b"]


async def test_child_task_does_not_inherit_held_connection(client):
    async with client as conn:
        assert client.held_connection() is conn

        async def child():
            return client.held_connection()

        assert await asyncio.create_task(child()) is None


async def test_many_tasks_concurrently_on_fresh_client(client):
    """The first use opens the pool and creates the schema once, whoever comes first."""
    results = await asyncio.gather(*(client.execute("SELECT 1") for _ in range(10)))
    assert all(r == [(1,)] for r in results)
    rows = await client.query("SELECT name FROM applied_migrations ORDER BY name")
    assert rows == own_marks(client)


async def test_two_clients_open_fresh_database_concurrently(client_kwargs):
    clients = [sqltrack.AsyncClient(**client_kwargs) for _ in range(3)]
    try:
        results = await asyncio.gather(*(c.execute("SELECT 1") for c in clients))
        assert results == [[(1,)]] * 3
        assert BASE_TABLES <= await table_names(clients[0])
        rows = await clients[1].query("SELECT name FROM applied_migrations ORDER BY name")
        assert rows == own_marks(clients[1])
    finally:
        for c in clients:
            await c.close()


async def test_concurrent_blocks_in_tasks_all_commit(client):
    async def writer(i):
        async with client:
            await client.query("INSERT INTO experiments (name) VALUES (%s)", [f"w{i}a"])
            await asyncio.sleep(0)
            async with client:
                await client.query("INSERT INTO experiments (name) VALUES (%s)", [f"w{i}b"])

    await asyncio.gather(*(writer(i) for i in range(6)))
    assert await names(client) == sorted(f"w{i}{x}" for i in range(6) for x in "ab")


# -- transactions -----------------------------------------------------------------------
async def test_outermost_block_commits(client, client_kwargs):
    other = sqltrack.AsyncClient(**client_kwargs)
    try:
        async with client:
            async with client:
                await client.query("INSERT INTO experiments (name) VALUES (%s)", ["a"])
            # inner block ended: nothing committed yet, another connection sees nothing
            assert await names(other) == []
            await client.query("INSERT INTO experiments (name) VALUES (%s)", ["b"])
            assert await names(client) == ["a", "b"]  # own writes visible inside
            assert await names(other) == []
        assert await names(other) == ["a", "b"]
    finally:
        await other.close()


async def test_exception_rolls_back_block(client):
    await client.query("INSERT INTO experiments (name) VALUES (%s)", ["kept"])
    with pytest.raises(RuntimeError, match="boom"):
        async with client:
            await client.query("INSERT INTO experiments (name) VALUES (%s)", ["gone"])
            async with client:
                await client.query("INSERT INTO experiments (name) VALUES (%s)", ["gone2"])
                raise RuntimeError("boom")
    assert await names(client) == ["kept"]
    assert client.held_connection() is None


async def test_sql_error_in_block_rolls_back_and_client_recovers(client):
    with pytest.raises(sqltrack.errors.DatabaseError):
        async with client:
            await client.query("INSERT INTO experiments (name) VALUES (%s)", ["gone"])
            await client.execute("SELECT * FROM no_such_table")
    assert await names(client) == []
    # the connection went back to the pool in a usable state
    await client.query("INSERT INTO experiments (name) VALUES (%s)", ["after"])
    async with client:
        await client.query("INSERT INTO experiments (name) VALUES (%s)", ["after2"])
    assert await names(client) == ["after", "after2"]


async def test_failed_oneshot_statement_leaves_nothing_and_client_recovers(client):
    await client.query("INSERT INTO experiments (name) VALUES (%s)", ["unique"])
    with pytest.raises(sqltrack.errors.UniqueViolation):
        await client.query("INSERT INTO experiments (name) VALUES (%s)", ["unique"])
    for _ in range(5):  # every pooled connection still works
        assert await client.execute("SELECT 1") == [(1,)]
    await client.query("INSERT INTO experiments (name) VALUES (%s)", ["next"])
    assert await names(client) == ["next", "unique"]


async def test_statement_outside_block_commits_at_once(client, client_kwargs):
    await client.query("INSERT INTO experiments (name) VALUES (%s)", ["now"])
    other = sqltrack.AsyncClient(**client_kwargs)
    try:
        assert await names(other) == ["now"]
    finally:
        await other.close()


# -- commit / rollback --------------------------------------------------------------------
async def test_commit_and_rollback_need_a_block(client):
    with pytest.raises(RuntimeError, match="not connected"):
        await client.commit()
    with pytest.raises(RuntimeError, match="not connected"):
        await client.rollback()


async def test_commit_inside_block_survives_later_exception(client, client_kwargs):
    other = sqltrack.AsyncClient(**client_kwargs)
    try:
        with pytest.raises(KeyError):
            async with client:
                await client.query("INSERT INTO experiments (name) VALUES (%s)", ["committed"])
                await client.commit()
                assert await names(other) == ["committed"]
                await client.query("INSERT INTO experiments (name) VALUES (%s)", ["lost"])
                raise KeyError("x")
        assert await names(client) == ["committed"]
    finally:
        await other.close()


async def test_rollback_inside_block(client):
    async with client:
        await client.query("INSERT INTO experiments (name) VALUES (%s)", ["discarded"])
        await client.rollback()
        assert await names(client) == []
        await client.query("INSERT INTO experiments (name) VALUES (%s)", ["kept"])
    assert await names(client) == ["kept"]


# -- cursor -------------------------------------------------------------------------------
async def test_cursor_outside_block_commits(client, client_kwargs):
    p = ph(client)
    async with client.cursor() as cursor:
        await cursor.execute(f"INSERT INTO experiments (name) VALUES ({p})", ["via-cursor"])
        await cursor.execute(f"SELECT name FROM experiments WHERE name = {p}", ["via-cursor"])
        rows = await cursor.fetchall()
        assert [tuple(r) for r in rows] == [("via-cursor",)]
    assert client.held_connection() is None
    other = sqltrack.AsyncClient(**client_kwargs)
    try:
        assert await names(other) == ["via-cursor"]
    finally:
        await other.close()


async def test_cursor_exception_rolls_back(client):
    p = ph(client)
    with pytest.raises(ZeroDivisionError):
        async with client.cursor() as cursor:
            await cursor.execute(f"INSERT INTO experiments (name) VALUES ({p})", ["nope"])
            1 / 0  # noqa: B018
    assert await names(client) == []
    assert client.held_connection() is None


# -- execute / executemany / executescript ------------------------------------------------
async def test_execute_returns_rows(client):
    p = ph(client)
    assert await client.execute(f"SELECT {p} + 1", [41]) == [(42,)]
    assert await client.execute(f"INSERT INTO experiments (name) VALUES ({p})", ["x"]) == []
    rows = await client.execute(f"SELECT id, name FROM experiments WHERE name = {p}", ["x"])
    assert len(rows) == 1 and rows[0][1] == "x" and isinstance(rows[0][0], int)
    rows = await client.execute(
        f"INSERT INTO experiments (name) VALUES ({p}) RETURNING name", ["y"]
    )
    assert rows == [("y",)]


async def test_execute_named_parameters(client):
    if client.engine == "sqlite":
        sql = "SELECT :a || :b"
    else:
        sql = "SELECT %(a)s || %(b)s"
    assert await client.execute(sql, {"a": "foo", "b": "bar"}) == [("foobar",)]


async def test_query_uses_percent_s_on_every_engine(client):
    assert await client.query("SELECT %s || %s", ["a", "b"]) == [("ab",)]


async def test_executemany(client):
    p = ph(client)
    await client.executemany(
        f"INSERT INTO experiments (name, comment) VALUES ({p}, {p})",
        [("e1", "c1"), ("e2", "c2"), ("e3", None)],
    )
    rows = await client.query("SELECT name, comment FROM experiments ORDER BY name")
    assert rows == [("e1", "c1"), ("e2", "c2"), ("e3", None)]


async def test_executemany_generator_in_block_rolled_back(client):
    p = ph(client)
    with pytest.raises(ValueError):
        async with client:
            await client.executemany(
                f"INSERT INTO experiments (name) VALUES ({p})", ((f"g{i}",) for i in range(4))
            )
            assert len(await names(client)) == 4
            raise ValueError
    assert await names(client) == []


async def test_executescript_outside_block(client):
    await client.executescript(
        "CREATE TABLE user_notes (id INTEGER PRIMARY KEY, body TEXT);\n"
        "INSERT INTO user_notes (id, body) VALUES (1, 'one');\n"
        "INSERT INTO user_notes (id, body) VALUES (2, 'two; with a semicolon');\n"
    )
    rows = await client.execute("SELECT id, body FROM user_notes ORDER BY id")
    assert rows == [(1, "one"), (2, "two; with a semicolon")]


async def test_executescript_inside_block_commits_with_block(client):
    async with client:
        await client.executescript(
            "CREATE TABLE user_a (x INTEGER);\nINSERT INTO user_a VALUES (1);\n"
            "INSERT INTO user_a VALUES (2);"
        )
        await client.query("INSERT INTO experiments (name) VALUES (%s)", ["with-script"])
    assert await client.execute("SELECT x FROM user_a ORDER BY x") == [(1,), (2,)]
    assert await names(client) == ["with-script"]


async def test_executescript_one_line_inside_block(client):
    async with client:
        await client.executescript(
            "CREATE TABLE user_c (x TEXT); INSERT INTO user_c VALUES ('1;2'); "
            "INSERT INTO user_c VALUES ('3');"
        )
    assert await client.execute("SELECT x FROM user_c ORDER BY x") == [("1;2",), ("3",)]


async def test_executescript_inside_block_rolled_back(client):
    with pytest.raises(RuntimeError):
        async with client:
            await client.query("INSERT INTO experiments (name) VALUES (%s)", ["before"])
            await client.executescript(
                "CREATE TABLE user_b (x INTEGER);\nINSERT INTO user_b VALUES (1);"
            )
            raise RuntimeError
    assert "user_b" not in await table_names(client)
    assert await names(client) == []


# -- closing ------------------------------------------------------------------------------
async def test_close_then_use_raises(client):
    await client.execute("SELECT 1")
    await client.close()
    with pytest.raises(sqltrack.ClientClosed):
        await client.execute("SELECT 1")
    with pytest.raises(sqltrack.ClientClosed):
        await client.query("SELECT 1")
    with pytest.raises(sqltrack.ClientClosed):
        async with client:
            pass
    with pytest.raises(sqltrack.ClientClosed):
        await sqltrack.AsyncExperiment.create(client, name="late")
    await client.close()  # closing twice is fine


async def test_close_unopened_client_then_use_raises(client_kwargs):
    c = sqltrack.AsyncClient(**client_kwargs)
    await c.close()
    with pytest.raises(sqltrack.ClientClosed):
        await c.execute("SELECT 1")
    assert isinstance(sqltrack.ClientClosed("x"), RuntimeError)


async def test_data_survives_close_and_new_client(client, client_kwargs):
    exp = await sqltrack.AsyncExperiment.create(client, name="durable")
    await client.close()
    again = sqltrack.AsyncClient(**client_kwargs)
    try:
        assert await again.query("SELECT id FROM experiments WHERE name = %s", ["durable"]) == [
            (exp.id,)
        ]
    finally:
        await again.close()


# -- base schema --------------------------------------------------------------------------
async def test_base_schema_created_on_first_use(client):
    assert BASE_TABLES <= await table_names(client)
    rows = await client.query("SELECT name FROM applied_migrations ORDER BY name")
    assert rows == own_marks(client)


async def metrics_primary_key(client) -> list[str]:
    if client.engine == "sqlite":
        rows = await client.execute("PRAGMA table_info(metrics)")
        return [r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]
    rows = await client.execute(
        "SELECT k.column_name FROM information_schema.table_constraints c "
        "JOIN information_schema.key_column_usage k "
        "ON k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema "
        "WHERE c.table_schema = current_schema() AND c.table_name = 'metrics' "
        "AND c.constraint_type = 'PRIMARY KEY' ORDER BY k.ordinal_position"
    )
    return [r[0] for r in rows]


async def test_metrics_primary_key(client):
    assert await metrics_primary_key(client) == ["run_id", "step", "progress"]
    run = await (await sqltrack.AsyncExperiment.create(client, name="pk")).get_run()
    p = ph(client)
    await client.execute(f"INSERT INTO metrics (run_id, step, progress) VALUES ({p}, 1, 0.5)",
                         [run.id])
    with pytest.raises(sqltrack.errors.UniqueViolation):
        await client.execute(
            f"INSERT INTO metrics (run_id, step, progress) VALUES ({p}, 1, 0.5)", [run.id]
        )
    # defaults: step 0, progress 0.0
    await client.execute(f"INSERT INTO metrics (run_id) VALUES ({p})", [run.id])
    rows = await client.query(
        "SELECT step, progress FROM metrics WHERE run_id = %s ORDER BY step", [run.id]
    )
    assert rows == [(0, 0.0), (1, 0.5)]


async def test_run_defaults(client):
    exp = await sqltrack.AsyncExperiment.create(client, name="defaults")
    run = await exp.get_run()
    rows = await client.query(
        "SELECT status, time_created IS NOT NULL, time_started, time_updated, comment, tags, "
        "args, env, extras FROM runs WHERE id = %s",
        [run.id],
    )
    assert rows == [("PENDING", True, None, None, None, None, None, None, None)]


async def test_delete_experiment_cascades(client):
    exp = await sqltrack.AsyncExperiment.create(client, name="doomed")
    other = await sqltrack.AsyncExperiment.create(client, name="survivor")
    run1 = await exp.get_run()
    run2 = await exp.get_run()
    kept = await other.get_run()
    await run1.add_metrics({"loss": 1.0}, step=1)
    await run2.add_metrics({"loss": 2.0}, step=1)
    await kept.add_metrics({"loss": 3.0}, step=1)
    await run1.add_link("parent", run2.id)
    await kept.add_link("sibling", run1.id)
    await exp.add_link("derived", other.id)
    await other.add_link("source", exp.id)
    await other.add_link("self", other.id)

    await client.query("DELETE FROM experiments WHERE id = %s", [exp.id])

    assert await client.query("SELECT id FROM runs ORDER BY id") == [(kept.id,)]
    assert await client.query("SELECT run_id, loss FROM metrics") == [(kept.id, 3.0)]
    assert await client.query("SELECT from_id, kind, to_id FROM run_links") == []
    assert await client.query("SELECT from_id, kind, to_id FROM experiment_links") == [
        (other.id, "self", other.id)
    ]


async def test_delete_run_cascades(client):
    exp = await sqltrack.AsyncExperiment.create(client, name="e")
    a, b = await exp.get_run(), await exp.get_run()
    await a.add_metrics({"m": 1}, step=1)
    await b.add_metrics({"m": 2}, step=1)
    await a.add_link("next", b.id)
    await b.add_link("prev", a.id)
    await client.query("DELETE FROM runs WHERE id = %s", [a.id])
    assert await client.query("SELECT run_id FROM metrics") == [(b.id,)]
    assert await client.query("SELECT * FROM run_links") == []
    assert await client.query("SELECT id FROM experiments") == [(exp.id,)]


async def test_run_needs_existing_experiment_fk(client):
    p = ph(client)
    with pytest.raises(sqltrack.errors.ForeignKeyViolation):
        await client.execute(f"INSERT INTO runs (experiment_id) VALUES ({p})", [987654])
    assert await client.query("SELECT id FROM runs") == []


async def test_status_is_checked_by_database(client):
    exp = await sqltrack.AsyncExperiment.create(client, name="st")
    run = await exp.get_run()
    # PostgreSQL: not a value of the enum; SQLite: the CHECK constraint.
    with pytest.raises(sqltrack.errors.DatabaseError):
        await client.query("UPDATE runs SET status = %s WHERE id = %s", ["BOGUS", run.id])
    assert await client.query("SELECT status FROM runs WHERE id = %s", [run.id]) == [
        ("PENDING",)
    ]


def _awaiting(task: asyncio.Task) -> list[str]:
    """The function names along a task's chain of awaits, outermost first."""
    names: list[str] = []
    step = task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
        if frame is not None:
            names.append(frame.f_code.co_name)
        step = getattr(step, "cr_await", None) or getattr(step, "gi_yieldfrom", None)
    return names


def test_asyncio_run_ends_while_a_connection_is_being_opened(client_kwargs):
    """``asyncio.run`` ending without the client closed cancels every other task and
    waits for them: that ends even when the client is opening a connection at that
    moment. (psycopg_pool's maintenance tasks caught such a cancellation and went back
    to their queue: the program hung at its end, seen in CI as a child of
    ``test_never_closed_async_client`` that never exited.)"""
    client = sqltrack.AsyncClient(**client_kwargs, buffered=True)
    seen: dict[str, object] = {}

    async def main() -> None:
        run = await (await sqltrack.AsyncExperiment.create(client, name="end")).get_run()
        for step in range(100):  # a flush task of its own
            await run.add_metrics({"loss": 1.0}, step=step)
        me = asyncio.current_task()
        grow = asyncio.gather(*(client.execute("SELECT 1") for _ in range(4)))
        for _ in range(100_000):  # PostgreSQL: until a pool task is inside its connecting
            others = [t for t in asyncio.all_tasks() if t is not me]
            if any("_add_connection" in _awaiting(t) for t in others) or grow.done():
                break
            await asyncio.sleep(0)
        seen["opening"] = not grow.done()
        seen["tasks"] = len(others)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "asyncio.run did not end within 60 s"
    assert seen["opening"] or client.engine == "sqlite", "the pool opened no connection"
    assert seen["tasks"]  # at least the buffer's timer was cancelled and ended

    async def finish() -> None:  # what the exit handler does with a client never closed
        client.restart_for_exit()
        await client.close()

    asyncio.run(finish())
    assert read_raw(client_kwargs, "SELECT count(*) FROM metrics") == [(100,)]
