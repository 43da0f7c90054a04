"""Users' SQL on PostgreSQL runs with the least privilege, and nothing a request does stays.

The page is started as the tests' login (``postgres``, a superuser) and, in one test,
as an ordinary login role; every attack of issue 24 goes through the SQL page and the
runs filter, and its effect is checked from a separate driver connection.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg
import pytest
from support.helpers import drop_role, pg_params
from support.waiting import wait_until

import sqltrack
from sqltrack.ui import create_app
from sqltrack.ui.app import TOKEN_HEADER

ON_POSTGRES = pytest.mark.parametrize("engine", ["postgres"])


async def seed(client) -> int:
    async with client:
        experiment = await sqltrack.AsyncExperiment.create(client, name="e")
        run = await experiment.get_run()
        await run.add_metrics({"loss": 1 / 3}, step=0)
    return experiment.id


async def sql(http, query: str) -> httpx.Response:
    return await http.get("/api/sql", params={"q": query})


def refused(response: httpx.Response, *words: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "\n" not in error
    for word in words:
        assert word in error, error
    return error


@ON_POSTGRES
async def test_as_postgres_the_page_cannot_write_read_files_or_signal(
    client, http, policy, pg_dsn, tmp_path
):
    experiment = await seed(client)
    target = tmp_path / f"written-{uuid.uuid4().hex}"
    with psycopg.connect(pg_dsn, autocommit=True) as victim:
        pid = victim.info.backend_pid
        objects = victim.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
        lsn = victim.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        attacks = [
            f"SELECT lo_export(lo_from_bytea(0, 'x'), '{target}')",
            "SELECT pg_catalog.lo_export(lo_from_bytea(0, 'x'), '/tmp/x')",
            "SELECT lo_from_bytea(0, 'x')",
            "SELECT pg_read_file('/etc/hostname')",
            "SELECT PG_READ_BINARY_FILE('/etc/hostname')",
            "SELECT pg_logical_emit_message(false, 'sqltrack', repeat('x', 20000000))",
            f"SELECT pg_terminate_backend({pid})",
            f"SELECT pg_cancel_backend({pid})",
            "SELECT query_to_xml('SELECT pg_read_file(''/etc/hostname'')', true, false, '')",
            "SELECT set_config('role', 'postgres', true)",
            'SELECT U&"\\006c\\006f_export"(1, \'/tmp/x\')',
        ]
        for attack in attacks:
            refused(await sql(http, attack), "not allowed on the page")
        filtered = await http.get(f"/api/experiments/{experiment}/table",
                                  params={"filter": "pg_read_file('/etc/hostname') <> ''"})
        refused(filtered, "pg_read_file")
        # Past the list of refused functions, the role itself: a reader, not a superuser.
        who = (await sql(http, "SELECT current_user, current_setting('is_superuser')")).json()
        assert who["rows"] == [[policy.reader, "off"]]
        refused(await sql(http, "SELECT rolpassword FROM pg_authid"), "permission denied")
        refused(await sql(http, "SELECT count(*) FROM pg_stat_file('/etc/hostname')"))
        assert victim.execute("SELECT pg_backend_pid()").fetchone()[0] == pid  # alive
        assert victim.execute(
            "SELECT count(*) FROM pg_largeobject_metadata").fetchone() == objects
        grown = victim.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", [lsn]).fetchone()[0]
        # the server's WAL, which others write too (autovacuum, other tests' sessions): a
        # 20 MB message let through would show over that background
        assert grown < 10_000_000
    assert not target.exists()
    # The page's own reading is unchanged.
    assert (await sql(http, "SELECT count(*) FROM runs")).json()["rows"] == [[1]]


@ON_POSTGRES
async def test_a_superuser_login_is_refused_unless_allowed(client, policy):
    await seed(client)
    app = create_app(client, reader=policy.reader)  # allow_superuser=False
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={TOKEN_HEADER: app.state.token}) as http:
        refused(await sql(http, "SELECT 1"), "'postgres' is a superuser", "--allow-superuser")
        assert (await http.get("/api/experiments")).status_code == 200  # the rest works
    app = create_app(client, reader="t_no_such_reader", allow_superuser=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={TOKEN_HEADER: app.state.token}) as http:
        refused(await sql(http, "SELECT 1"), "'t_no_such_reader'", "sqltrack setup --ui-role")


@ON_POSTGRES
async def test_nothing_a_request_does_reaches_the_next(client, http, policy, pg_dsn):
    """Issue 24, item 4: settings, time limits and advisory locks of one request."""
    experiment = await seed(client)
    table = f"/api/experiments/{experiment}/table"
    attacks = [
        "SELECT set_config('extra_float_digits', '-15', false)",
        "SELECT set_config('statement_timeout', '1', false)",
        "SELECT pg_advisory_lock(hashtext('sqltrack.schema'))",
    ]
    for attack in attacks:
        await sql(http, attack)
        await http.get(table, params={"filter": attack[7:] + " IS NOT NULL"})
    # A lock the list does not know (a function of the test's): released all the same.
    schema = client.settings.schema
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(
            f'CREATE FUNCTION "{schema}".t_lock() RETURNS int LANGUAGE plpgsql AS '
            "$$ BEGIN PERFORM pg_advisory_lock(hashtext('sqltrack.schema')); RETURN 1; END $$")
        admin.execute(f'GRANT EXECUTE ON FUNCTION "{schema}".t_lock() TO "{policy.reader}"')
    assert (await sql(http, "SELECT t_lock()")).json()["rows"] == [[1]]
    for _ in range(3):  # whichever pooled connection answers
        value = (await sql(http, "SELECT 1 / 3::float8 AS third")).json()
        assert value["rows"][0][0] == pytest.approx(1 / 3, rel=1e-15), value
        assert value["rows"][0][0] != 0.3
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        # Advisory locks are the server's: another client's schema set-up holds sqltrack's
        # for a moment (on a shared server); a lock the page leaked is held for good.
        def free() -> bool:
            held = other.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
            return held == 0 and other.execute(
                "SELECT pg_try_advisory_lock(hashtext('sqltrack.schema'))").fetchone()[0]

        wait_until(free, "no advisory lock held and sqltrack's schema lock free")
    # sqltrack's own schema lock is free: a new client of another schema sets up.
    fresh = sqltrack.AsyncClient(**{**client_params(client), "schema": schema + "_b"},
                                 pool_timeout=10)
    try:
        await asyncio.wait_for(fresh.open(), 60)  # hung for good when the lock is held
    finally:
        await fresh.close()
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}_b" CASCADE')


def client_params(client) -> dict[str, object]:
    params = dict(client.settings.params)
    params.pop("options", None)
    return {"engine": "postgres", **params}


async def test_an_ordinary_role_cannot_signal_its_own_sessions(pg_dsn, tmp_path):
    """Issue 24, item 2: as an ordinary login (CREATEROLE, owner of the schema)."""
    login = "t_login_" + uuid.uuid4().hex[:10]
    reader = "t_reader_" + uuid.uuid4().hex[:10]
    schema = "t_" + uuid.uuid4().hex[:12]
    dbname = pg_params(pg_dsn)["dbname"]
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{login}" LOGIN CREATEROLE')
        admin.execute(f'GRANT CREATE ON DATABASE "{dbname}" TO "{login}"')
    kwargs = {**pg_params(pg_dsn), "user": login}
    client = sqltrack.AsyncClient(engine="postgres", schema=schema, **kwargs)
    try:
        await seed(client)
        await sqltrack.setup_reader(client, reader)
        app = create_app(client, reader=reader)  # not a superuser: no flag needed
        transport = httpx.ASGITransport(app=app)
        dsn = psycopg.conninfo.make_conninfo(pg_dsn, user=login)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     headers={TOKEN_HEADER: app.state.token}) as http:
            with psycopg.connect(dsn, autocommit=True) as colleague:
                pid = colleague.info.backend_pid
                for attack in (f"SELECT pg_terminate_backend({pid})",
                               f"SELECT pg_cancel_backend({pid})",
                               "SELECT lo_from_bytea(0, 'x')",
                               "SELECT pg_logical_emit_message(true, 'x', 'y')"):
                    refused(await sql(http, attack), "not allowed on the page")
                assert colleague.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
            rows = (await sql(http, "SELECT current_user, count(*) FROM runs GROUP BY 1")).json()
            assert rows["rows"] == [[reader, 1]]
    finally:
        await client.close()
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        drop_role(pg_dsn, reader)
        drop_role(pg_dsn, login)
